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
# shellcheck source-path=SCRIPTDIR source=callgrind.sh disable=SC1091 # followed with shellcheck -x
. "$(dirname "$0")/callgrind.sh"
trap cg_cleanup EXIT
need_valgrind

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

build() { # tree target-dir -> path of examples/crud
    build_lines "$1" "$2" --features json --example crud && echo "$2/release/examples/crud"
}

path_of() { if [ "$1" = blocking ]; then echo /users/1; else echo /hello/world; fi; }

# Runs SCENARIO against EXECUTABLE under callgrind once; prints instructions per request. The
# output and the count stay in $work/{groups,count}.SCENARIO.LABEL (LABEL: the executable's
# target directory) for the tables below.
count() {
    local exe=$1 scenario=$2 out="$work/cg.$2.$RANDOM" label dump
    start_counted "$out" "$exe" "127.0.0.1:$PORT" ||
        { fail_run "$exe did not answer on 127.0.0.1:$PORT: $(tail -3 "$out.log")"; return 1; }
    coproc CLIENT { python3 "$work/client.py" "$REQUESTS" "$PORT" "$(path_of "$scenario")" 2>"$work/answer"; }
    count_window || { fail_run "the client failed: $(cat "$work/answer")"; return 1; }
    stop_counted TERM
    dump=$(dump_of "$out")
    if [ -n "${DETAIL:-}" ]; then
        echo "## $scenario, $exe: $(tail -1 "$work/answer")" >&2
        detail "$dump" "$(harness crud::main)"
    fi
    label=$(target_of "$exe")
    cp "$dump" "$work/groups.$scenario.$label"
    per_request "$dump" "$REQUESTS" | tee "$work/count.$scenario.$label"
}

# shellcheck disable=SC2086 # SCENARIOS is a list
count_trees "examples/crud.rs: instructions per request" $SCENARIOS

[ -n "$PEER" ] || exit 0
cargo build --release --quiet --manifest-path benches/peers/axum/Cargo.toml
echo
echo "# axum 0.8 (benches/peers/axum crud), same client: instructions per request, whole process"
printf '| %-10s | %8s | %8s | %12s |\n|---|--:|--:|--:|\n' scenario quiesce axum quiesce/axum
for scenario in $SCENARIOS; do
    mine=$(cat "$work/count.$scenario.$(target_of "$binary")")
    theirs=$(count benches/peers/axum/target/release/crud "$scenario")
    printf '| %-10s | %8s | %8s | %12s |\n' "$scenario" "$mine" "$theirs" "$(python3 -c "print(f'{$mine / $theirs:.2f}')")"
done
