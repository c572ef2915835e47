#!/usr/bin/env bash
# Instructions per request of the real server (the whole loop: poll, accept, read, parse, route,
# encode, write, bookkeeping), counted by callgrind while a client on loopback drives it. The
# client works in lock step on one connection at a time, so every run takes the same path
# through the loop and gives the same count, whatever else the machine is doing.
#
#   bash benches/live_instructions.sh                   # this tree
#   AGAINST=<git rev> bash benches/live_instructions.sh # REV and this tree side by side
#   DETAIL=1 RUNS=1 bash benches/live_instructions.sh   # plus the costliest functions (inclusive)
#   SERVER_ARGS="--access-log /tmp/a.log" bash benches/live_instructions.sh  # the server with these flags
#
# After the totals, a second table splits each scenario's count by function group (loop,
# connection, parse, route, encode, kernel calls, memory): benches/cg_groups.py gives each
# instruction to the source file it was compiled from, so code inlined elsewhere still counts
# where it was written. For that the binaries are built with line tables (and not stripped),
# which leaves the generated code, and the counts, as they are.
#
# Scenarios (REQUESTS each, after a warm-up that callgrind's counters are zeroed after):
#   keepalive   one keep-alive connection, one GET /plaintext at a time
#   pipelined   one connection, 16 GET /plaintext per write
#   close       a new connection per request (Connection: close): accept to close
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-4000}
# Runs per scenario; the median is reported. keepalive and pipelined give the same count every
# run; close moves by a percent or two with how the client's packets and the new connection's
# events interleave.
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"keepalive pipelined close"}
PORT=${PORT:-18180}
work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
    drop_against
    [ -n "${KEEP:-}" ] && cp "$work"/cg.* "$KEEP"/ 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/callgrind.sh
. "$(dirname "$0")/callgrind.sh"

if ! command -v valgrind >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

# The load: SCENARIO, REQUESTS, then "go" on stdin to start counting; prints nothing useful.
cat >"$work/client.py" <<'EOF'
import socket, sys
scenario, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
REQ = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"
CLOSE = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def read_exact(s, size):
    got = 0
    while got < size:
        chunk = s.recv(size - got)
        if not chunk:
            raise SystemExit("server closed early")
        got += len(chunk)

def one_response_len():
    s = connect()
    s.sendall(CLOSE)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return len(data) - len(b"Connection: close\r\n")

size = one_response_len()
def run(count):
    if scenario == "close":
        for _ in range(count):
            s = connect()
            s.sendall(CLOSE)
            while s.recv(4096):
                pass
            s.close()
        return
    s = connect()
    batch = 16 if scenario == "pipelined" else 1
    for _ in range(count // batch):
        s.sendall(REQ * batch)
        read_exact(s, size * batch)
    s.close()

run(400)                      # warm-up: buffers, pools, caches
sys.stdout.write("warm\n"); sys.stdout.flush()
sys.stdin.readline()          # the counters are zeroed now
run(n)
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.readline()
EOF

build() { # tree target-dir -> path of the release binary, with line tables
    (cd "$1" && CARGO_TARGET_DIR="$2" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
        cargo build --release --quiet 2>/dev/null) && echo "$2/release/quiesce"
}

# The median of RUNS counts of SCENARIO against BINARY.
count() {
    local runs=()
    for _ in $(seq "$RUNS"); do
        runs+=("$(count_once "$1" "$2")")
    done
    printf '%s\n' "${runs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# Runs SCENARIO against BINARY under callgrind once; prints instructions per request.
count_once() {
    local binary=$1 scenario=$2 out="$work/cg.$2.$RANDOM"
    # shellcheck disable=SC2086 # SERVER_ARGS is a list
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" --addr "127.0.0.1:$PORT" -qqq ${SERVER_ARGS:-} \
        >/dev/null 2>"$out.log" &
    server_pid=$!
    for _ in $(seq 600); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), timeout=1).close()" 2>/dev/null && break
        sleep 0.1
    done
    coproc CLIENT { python3 "$work/client.py" "$scenario" "$REQUESTS" "$PORT"; }
    read -r _ <&"${CLIENT[0]}"                       # warm
    callgrind_control --zero "$server_pid" >/dev/null 2>&1
    echo go >&"${CLIENT[1]}"
    read -r _ <&"${CLIENT[0]}"                       # done
    callgrind_control --dump "$server_pid" >/dev/null 2>&1
    echo bye >&"${CLIENT[1]}"
    wait "$CLIENT_PID" 2>/dev/null || true
    kill -INT "$server_pid"; wait "$server_pid" 2>/dev/null || true
    server_pid=""
    local dump
    dump=$(ls "$out".* 2>/dev/null | grep -v '\.log$' | sort | tail -1)
    local total
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    if [ -n "${DETAIL:-}" ]; then
        echo "## $scenario, $binary" >&2
        detail "$dump" 'PROGRAM TOTALS|below main|libc_start|lang_start|rust_begin_short|quiesce::main|thread_start|start_thread|clone3'
    fi
    # The last run's output stays for the group table (keepalive and pipelined count the same
    # every run).
    cp "$dump" "$work/groups.$scenario.$(basename "$(dirname "$(dirname "$binary")")")"
    python3 -c "print(f'{$total / $REQUESTS:.0f}')"
}

[ -z "${AGAINST:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$PWD/target/instructions-this
binary=$(this)
base=$(against)
# shellcheck disable=SC2086 # SCENARIOS is a list
table "live server: instructions per request" "$binary" "$base" $SCENARIOS

echo
echo "# by function group (instructions per request; benches/cg_groups.py)"
columns=()
for scenario in $SCENARIOS; do
    if [ -n "$base" ]; then
        columns+=("$scenario $(git rev-parse --short "$AGAINST")=$work/groups.$scenario.instructions-base")
        columns+=("$scenario this=$work/groups.$scenario.$(basename "$(dirname "$(dirname "$binary")")")")
    else
        columns+=("$scenario=$work/groups.$scenario.$(basename "$(dirname "$(dirname "$binary")")")")
    fi
done
python3 benches/cg_groups.py "$REQUESTS" "${columns[@]}"
