#!/usr/bin/env bash
# Instructions per request of services.sh's two routes, counted by callgrind: the repeatable
# companion of its CPU figures (same binary + same requests = same count, however busy the
# machine is). examples/crud.rs runs under callgrind while a client on loopback sends one
# keep-alive request at a time and reads the whole answer before the next; the count covers the
# whole process (loop, parse, route, handler, JSON, write; every thread, libc included).
#
#   bash benches/services_instructions.sh                   # this tree, and axum's crud beside it
#   AGAINST=<git rev> bash benches/services_instructions.sh # REV and this tree side by side
#   DETAIL=1 bash benches/services_instructions.sh          # plus the costliest functions (inclusive)
#   PEER= bash benches/services_instructions.sh             # without axum
#
# Scenarios (REQUESTS each, after 400 of warm-up that callgrind's counters are zeroed after;
# user 1 is created first):
#   json      GET /hello/world: the router and a JSON response (serde_json::json!)
#   blocking  GET /users/1: the router, the store behind a blocking call, a JSON response
# The first table splits quiesce's count by function group (benches/cg_groups.py); the axum
# column is benches/peers/axum's crud under the same client (tokio's threads and all).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-4000}
SCENARIOS=${SCENARIOS:-"json blocking"}
PEER=${PEER-axum}
PORT=${PORT:-18395}
work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill -9 "$server_pid" 2>/dev/null || true; fi
    drop_against
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source-path=SCRIPTDIR source=callgrind.sh disable=SC1091 # followed with shellcheck -x
. "$(dirname "$0")/callgrind.sh"

if ! command -v valgrind >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

cat >"$work/client.py" <<'EOF'
import socket, sys
n, port, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def read_response(s, buf):
    """One response, by its Content-Length -> (status line, body, what was read past it)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("server closed early")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("server closed early")
        buf += chunk
    return lines[0], buf[:length], buf[length:]

s = socket.create_connection(("127.0.0.1", port), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
user = b'{"name":"ada","email":"ada@example.com"}'
s.sendall(b"POST /users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(user), user))
status, _, rest = read_response(s, b"")
if not status.startswith(b"HTTP/1.1 201 "):
    raise SystemExit(f"POST /users: {status!r}")
REQ = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()

def run(count):
    global rest
    for _ in range(count):
        s.sendall(REQ)
        status, body, rest = read_response(s, rest)
        if not status.startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"GET {path}: {status!r}")
    sys.stderr.write(f"GET {path}: {body.decode()}\n")

run(400)                      # warm-up: buffers, pools, caches
sys.stdout.write("warm\n"); sys.stdout.flush()
sys.stdin.readline()          # the counters are zeroed now
run(n)
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.readline()
EOF

build() { # tree target-dir -> path of examples/crud, with line tables
    (cd "$1" && CARGO_TARGET_DIR="$2" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
        cargo build --release --quiet --features json --example crud 2>/dev/null) && echo "$2/release/examples/crud"
}

path_of() { if [ "$1" = blocking ]; then echo /users/1; else echo /hello/world; fi; }

# Runs SCENARIO against EXECUTABLE under callgrind once; prints instructions per request. The
# output and the count stay in $work/{groups,count}.SCENARIO.LABEL (LABEL: the executable's
# target directory) for the tables below.
count() {
    local exe=$1 scenario=$2 out="$work/cg.$2.$RANDOM" up="" label
    valgrind --tool=callgrind --callgrind-out-file="$out" "$exe" "127.0.0.1:$PORT" >/dev/null 2>"$out.log" &
    server_pid=$!
    for _ in $(seq 600); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), timeout=1).close()" 2>/dev/null && up=1 && break
        sleep 0.1
    done
    [ -n "$up" ] || { echo "error: $exe did not answer on 127.0.0.1:$PORT: $(tail -3 "$out.log")" >&2; return 1; }
    coproc CLIENT { python3 "$work/client.py" "$REQUESTS" "$PORT" "$(path_of "$scenario")" 2>"$work/answer"; }
    read -r _ <&"${CLIENT[0]}" || { echo "error: the client failed: $(cat "$work/answer")" >&2; return 1; }
    callgrind_control --zero "$server_pid" >/dev/null 2>&1
    echo go >&"${CLIENT[1]}"
    read -r _ <&"${CLIENT[0]}"
    callgrind_control --dump "$server_pid" >/dev/null 2>&1
    echo bye >&"${CLIENT[1]}"
    wait "$CLIENT_PID" 2>/dev/null || true
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    local dump="" file total
    for file in "$out".*; do # the dump: $out.1 (the exit's own dump, if any, is $out)
        [ -e "$file" ] && [ "$file" != "$out.log" ] && dump=$file
    done
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    if [ -n "${DETAIL:-}" ]; then
        echo "## $scenario, $exe: $(tail -1 "$work/answer")" >&2
        detail "$dump" 'PROGRAM TOTALS|below main|libc_start|lang_start|rust_begin_short|crud::main|thread_start|start_thread|clone3'
    fi
    label=$(basename "$(dirname "$(dirname "$(dirname "$exe")")")")
    cp "$dump" "$work/groups.$scenario.$label"
    python3 -c "print(f'{$total / $REQUESTS:.0f}')" | tee "$work/count.$scenario.$label"
}

[ -z "${AGAINST:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$PWD/target/instructions-this
binary=$(this)
base=$(against)
# shellcheck disable=SC2086 # SCENARIOS is a list
table "examples/crud.rs: instructions per request" "$binary" "$base" $SCENARIOS

echo
echo "# by function group (instructions per request; benches/cg_groups.py)"
columns=()
for scenario in $SCENARIOS; do
    if [ -n "$base" ]; then
        columns+=("$scenario $(git rev-parse --short "$AGAINST")=$work/groups.$scenario.instructions-base")
    fi
    columns+=("$scenario=$work/groups.$scenario.$(basename "$(dirname "$(dirname "$(dirname "$binary")")")")")
done
python3 benches/cg_groups.py "$REQUESTS" "${columns[@]}"

[ -n "$PEER" ] || exit 0
cargo build --release --quiet --manifest-path benches/peers/axum/Cargo.toml
echo
echo "# axum 0.8 (benches/peers/axum crud), same client: instructions per request, whole process"
printf '| %-10s | %8s | %8s | %12s |\n|---|--:|--:|--:|\n' scenario quiesce axum quiesce/axum
for scenario in $SCENARIOS; do
    mine=$(cat "$work/count.$scenario.$(basename "$(dirname "$(dirname "$(dirname "$binary")")")")")
    theirs=$(count benches/peers/axum/target/release/crud "$scenario")
    printf '| %-10s | %8s | %8s | %12s |\n' "$scenario" "$mine" "$theirs" "$(python3 -c "print(f'{$mine / $theirs:.2f}')")"
done
