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
#   PEERS="nginx hyper may" bash benches/live_instructions.sh  # plus the same count for the peers
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
#
# With PEERS (any of nginx, hyper, may; default none), one more table: the same count for each
# peer of benches/compare.sh, under the same client and scenarios, beside quiesce's from the same
# run and the ratio quiesce/peer. nginx is the one from apt (installed when missing), with
# compare.sh's server block, but master_process off, so the one process under callgrind is the
# one serving; hyper and may_minihttp are benches/peers, built as compare.sh builds them. Each
# peer's count is its whole process, every thread (may's timer thread too) and libc included,
# which is what quiesce's count covers: callgrind counts everything the process runs. The client
# reads the peers' responses by their Content-Length (their heads differ from quiesce's and from
# each other); may_minihttp ignores Connection: close, so in close the client closes first.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-4000}
# Runs per scenario; the median is reported. keepalive and pipelined give the same count every
# run; close moves by a percent or two with how the client's packets and the new connection's
# events interleave.
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"keepalive pipelined close"}
PEERS=${PEERS:-}
PORT=${PORT:-18180}
work=$(mktemp -d)
# shellcheck source-path=SCRIPTDIR source=callgrind.sh disable=SC1091 # followed with shellcheck -x
. "$(dirname "$0")/callgrind.sh"
trap cg_cleanup EXIT
# shellcheck source-path=SCRIPTDIR source=nginx.sh disable=SC1091 # followed with shellcheck -x
. "$(dirname "$0")/nginx.sh"
need_valgrind

# The load: SCENARIO, REQUESTS, then "go" on stdin to start counting; prints nothing useful.
cat >"$work/client.py" <<'EOF'
import socket, sys
scenario, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
framed = sys.argv[4:] == ["framed"]  # a peer: read each response by its framing
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

def recv(s):
    chunk = s.recv(65536)
    if not chunk:
        raise SystemExit("server closed early")
    return chunk

def read_framed(s, buf):
    """One response, head to the blank line, then Content-Length bytes of body; BUF holds what
    was read past the previous one. -> (what was read past this one, Connection: close?)"""
    while b"\r\n\r\n" not in buf:
        buf += recv(s)
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"unexpected status line {lines[0]!r}")
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    while len(buf) < length:
        buf += recv(s)
    if buf[:length] != b"Hello, World!":
        raise SystemExit(f"unexpected body {buf[:length]!r}")
    return buf[length:], close

def run_framed(count):
    if scenario == "close":
        for _ in range(count):
            s = connect()
            s.sendall(CLOSE)
            _, close = read_framed(s, b"")
            if close:             # the server closes first (nginx, hyper), as quiesce does
                while s.recv(4096):
                    pass
            s.close()             # else the client does (may_minihttp keeps the connection)
        return
    s = connect()
    batch = 16 if scenario == "pipelined" else 1
    buf = b""
    for _ in range(count // batch):
        s.sendall(REQ * batch)
        for _ in range(batch):
            buf, _ = read_framed(s, buf)
    s.close()

size = None if framed else one_response_len()
def run(count):
    if framed:
        return run_framed(count)
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

# The median of RUNS counts of SCENARIO against BINARY (PEER: that peer's executable). This
# tree's quiesce count is kept in $work/median.SCENARIO for the peers' table.
count() {
    local runs=() median
    for _ in $(seq "$RUNS"); do
        runs+=("$(count_once "$1" "$2" "${3:-}")")
    done
    median=$(printf '%s\n' "${runs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    if [ -z "${3:-}" ] && [ "$1" = "$binary" ]; then echo "$median" >"$work/median.$2"; fi
    echo "$median"
}

# Runs SCENARIO against BINARY (quiesce, or the executable of PEER) under callgrind once; prints
# instructions per request.
count_once() {
    local binary=$1 scenario=$2 peer=${3:-} out="$work/cg.$2${3:+.$3}.$RANDOM" server up=1
    # shellcheck disable=SC2206 # SERVER_ARGS is a list
    case $peer in
        "") server=("$binary" --addr "127.0.0.1:$PORT" -qqq ${SERVER_ARGS:-}) ;;
        nginx) server=("$binary" -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf") ;;
        *) server=("$binary" --addr "127.0.0.1:$PORT") ;;
    esac
    start_counted "$out" "${server[@]}" || up=""
    if [ -n "$peer" ] && [ -z "$up" ]; then
        fail_run "$peer did not answer on 127.0.0.1:$PORT within 60 s under callgrind: $(tail -3 "$out.log")"
        return 1
    fi
    coproc CLIENT { python3 "$work/client.py" "$scenario" "$REQUESTS" "$PORT" ${peer:+framed}; }
    count_window || { fail_run "the client failed against ${peer:-quiesce}"; return 1; }
    local dump
    finish_counted "$out" "$peer" "$scenario, $binary"
    # The last run's output stays for the group table (keepalive and pipelined count the same
    # every run).
    [ -n "$peer" ] || cp "$dump" "$work/groups.$scenario.$(target_of "$binary")"
    per_request "$dump" "$REQUESTS"
}

# The peers, built and configured before anything is counted (compare.sh's target directory).
peer_target=${CARGO_TARGET_DIR:-$PWD/target}/peers
NGINX=""
for peer in $PEERS; do
    case $peer in
        nginx)
            NGINX=$(command -v nginx || echo /usr/sbin/nginx)
            if [ ! -x "$NGINX" ]; then
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
            fi
            # compare.sh's server, in one process (no master, no fork) that callgrind follows.
            nginx_conf "$work/nginx" "$PORT" off 1024
            ;;
        hyper | may)
            cargo build --release --quiet --locked --manifest-path "benches/peers/$peer/Cargo.toml" --target-dir "$peer_target"
            ;;
        *) echo "unknown peer '$peer' (PEERS: nginx hyper may)" >&2; exit 1 ;;
    esac
done
peer_exe() { if [ "$1" = nginx ]; then echo "$NGINX"; else echo "$peer_target/release/peer-$1"; fi; }

# shellcheck disable=SC2086 # SCENARIOS is a list
count_trees "live server: instructions per request" $SCENARIOS

[ -n "$PEERS" ] || exit 0
echo
echo "# peers: instructions per request, same client (callgrind, $REQUESTS requests per scenario)"
line=$(printf '| %-24s | %10s |' scenario quiesce)
rule="|---|---|"
for peer in $PEERS; do
    line+=$(printf ' %10s | %13s |' "$peer" "quiesce/$peer")
    rule+="---|---|"
done
printf '%s\n%s\n' "$line" "$rule"
for scenario in $SCENARIOS; do
    mine=$(cat "$work/median.$scenario")
    line=$(printf '| %-24s | %10s |' "$scenario" "$mine")
    for peer in $PEERS; do
        theirs=$(count "$(peer_exe "$peer")" "$scenario" "$peer")
        if [[ $theirs =~ ^[0-9]+$ ]] && [ "$theirs" -gt 0 ]; then
            line+=$(printf ' %10s | %13s |' "$theirs" "$(python3 -c "print(f'{$mine / $theirs:.2f}')")")
        else
            line+=$(printf ' %10s | %13s |' n/a n/a)
        fi
    done
    echo "$line"
done
note="Whole process for every server: all threads, libc included."
[ -z "$NGINX" ] || note+=" $("$NGINX" -v 2>&1 | sed 's/.*version: //') with master_process off."
[[ " $PEERS " != *" may "* ]] || note+=" may_minihttp ignores Connection: close: in close the client closes first."
echo
echo "$note"
