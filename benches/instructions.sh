#!/usr/bin/env bash
# Instructions per request on the request path, counted by callgrind: repeatable on a shared,
# noisy machine where wall time is not (same binary + same input = same count).
#
#   bash benches/instructions.sh                  # this tree
#   AGAINST=<git rev> bash benches/instructions.sh  # this tree and REV side by side, with the change
#   DETAIL=1 bash benches/instructions.sh         # plus the costliest functions per request (inclusive)
#
# Each scenario of benches/request_path.rs (a warm in-memory connection served by the built-in
# routes) sends REQUESTS requests; callgrind counts only inside `request_path::count`, so setup
# and checks are left out. REV must have the `--count` mode of request_path.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-16000}
SCENARIOS=${SCENARIOS:-"keepalive_plaintext pipelined_16_plaintext keepalive_browser_head keepalive_chunked_echo keepalive_hello_world"}
work=$(mktemp -d)
# shellcheck source=benches/callgrind.sh
. "$(dirname "$0")/callgrind.sh"
trap cg_cleanup EXIT
need_valgrind

# Builds the bench in the tree $1 (with target dir $2) and prints the executable's path.
build() {
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench request_path --no-run --message-format=json 2>/dev/null) |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "request_path" and m.get("executable"):
        print(m["executable"])'
}

# Runs scenario $2 of executable $1 under callgrind; prints instructions per request.
count() {
    local out="$work/cg.$RANDOM"
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='request_path::count' \
        --callgrind-out-file="$out" "$1" --count "$2" "$REQUESTS" >/dev/null 2>&1
    local total
    total=$(awk '/^totals:/ {print $2}' "$out")
    if [ -n "${DETAIL:-}" ]; then
        echo "## $2, $1" >&2
        detail "$out" 'request_path::(main|count)|std::rt::|std::sys::backtrace|below main|libc_start|ld-linux|PROGRAM TOTALS|\?\?\?:main '
    fi
    python3 -c "print(f'{$total / $REQUESTS:.0f}')"
}

exe=$(this)
[ -n "$exe" ] || { echo "build failed" >&2; exit 1; }
base_exe=$(against)
[ -z "${AGAINST:-}" ] || [ -n "$base_exe" ] || { echo "build of $AGAINST failed (does it have request_path's --count mode?)" >&2; exit 1; }
# shellcheck disable=SC2086 # SCENARIOS is a list
table "instructions per request" "$exe" "$base_exe" $SCENARIOS
