#!/usr/bin/env bash
# Handshakes in progress across a graceful shutdown: quiesce (SIGTERM), Go net/http
# (ListenAndServeTLS, SIGTERM -> srv.Shutdown with a 30 s context) and nginx (SIGQUIT, what
# `nginx -s quit` sends), each on the same ECDSA P-256 certificate, default timeouts.
#
#   bash deploy/tls-test/handshake_drain.sh [quiesce] [go] [nginx]
#
# Before the signal (deploy/tls-test/hsdrain.go's `run`): STALLED connections that send
# nothing, PARTIAL ones that send half a ClientHello and never the rest, FINISH ones that send
# half a ClientHello and the rest 50 ms after the signal, then one GET /plaintext, LATE ones
# that do the same 1.5 s after the signal (after quiesce's 1 s last call for connections that
# have sent no request: the price of not waiting for them), and one request in flight for 1 s
# (quiesce `/x?delay=1s`; Go `/slow`, a 1 s sleep in the handler; nginx `/slow` proxied to that
# Go handler over plain HTTP). All of it at two ages of the handshaking connections at the
# signal (AGES): just made (300 ms), and older than Go's 5 s rule for connections that have not
# sent a request (7 s). Measured, per run: signal to exit, when and how each stalled connection
# was closed (FIN, reset, an alert first), what each finishing connection got, what the
# in-flight request got. Judged, for quiesce only (the others' misses are printed as NOTE): it
# exited within WAIT, every finishing connection and the in-flight request got a 200 (the late
# ones are measured, not judged). The table of medians over RUNS goes to $OUT/table.md.
#
# Environment: RUNS (3), AGES ("300ms 7s"), INFLIGHT (1; 0 leaves the in-flight request out, so
# the exit time is the handshakes' alone), STALLED (5), PARTIAL (5), FINISH (5), LATE (3),
# PORT_BASE (28710: five ports from it), WAIT (75 s: longest wait for anything), OUT
# (target/tls-test/handshake-drain). Installs openssl, curl, python3, golang-go and nginx when
# missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/tls-test/handshake-drain}
RUNS=${RUNS:-3}
AGES=${AGES:-300ms 7s}
STALLED=${STALLED:-5}
PARTIAL=${PARTIAL:-5}
FINISH=${FINISH:-5}
LATE=${LATE:-3}
INFLIGHT=${INFLIGHT:-1}
PORT_BASE=${PORT_BASE:-28710}
WAIT=${WAIT:-75}
SERVERS=("$@")
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=(quiesce go nginx)
. deploy/tls-test/common.sh
if ! command -v nginx >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
setup
rm -rf "$OUT" && mkdir -p "$OUT"

# The Go program runs from the work directory, so cleanup (which kills by a command line naming
# it) stops its servers too; nginx's workers rename themselves, so their pids are kept apart.
GOCACHE=${GOCACHE:-$ROOT/target/tls-test/gocache} GOFLAGS=-mod=mod \
    go build -o "$ROOT/target/tls-test/hsdrain" "$ROOT/deploy/tls-test/hsdrain.go" "$ROOT/deploy/tls-test/tlsend.go"
cp "$ROOT/target/tls-test/hsdrain" "$WORK/hsdrain"
HSDRAIN=$WORK/hsdrain
NGINX_WORKERS=()
stop_all() {
    local pid
    for pid in "${NGINX_WORKERS[@]}"; do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ] && kill -KILL "$pid" 2>/dev/null || true
    done
    cleanup
}
trap stop_all EXIT

make_cert hs ec localhost
CERT=$WORK/hs.pem
KEY=$WORK/hs.key
PLAIN=$PORT_BASE
TLS_Q=$((PORT_BASE + 1))
TLS_GO=$((PORT_BASE + 2))
TLS_NGINX=$((PORT_BASE + 3))
UPSTREAM=$((PORT_BASE + 4))
for port in $PLAIN $TLS_Q $TLS_GO $TLS_NGINX $UPSTREAM; do
    if ss -Htln "sport = :$port" | grep -q .; then
        echo "port $port is in use (set PORT_BASE)" >&2
        exit 1
    fi
done

nginx_conf() { # dir
    mkdir -p "$1/logs"
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log $1/logs/access.log;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    server {
        listen 127.0.0.1:$TLS_NGINX ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        location = /slow { proxy_pass http://127.0.0.1:$UPSTREAM; }
        location / { default_type text/plain; return 200 "Hello, World!"; }
    }
}
EOF
}

# run_one SERVER AGE N: starts the server, runs the clients (they send the signal), waits for
# the server's exit; the clients' JSON in $OUT/SERVER-AGE-N.json, the server's log beside it.
run_one() {
    local server=$1 age=$2 n=$3 log=$OUT/$1-$2-$3.log pid addr signal inflight upstream=""
    : >"$log"
    case $server in
        quiesce)
            start_quiesce "$log" "$PLAIN" "$TLS_Q" "$CERT" "$KEY"
            pid=$STARTED addr=127.0.0.1:$TLS_Q signal=TERM inflight='/x?delay=1s' ;;
        go)
            "$HSDRAIN" serve -addr "127.0.0.1:$TLS_GO" -cert "$CERT" -key "$KEY" -timeout 30s 2>>"$log" &
            pid=$!
            PIDS+=("$pid")
            wait_answer "https://127.0.0.1:$TLS_GO/" --cacert "$CERT"
            addr=127.0.0.1:$TLS_GO signal=TERM inflight=/slow ;;
        nginx)
            "$HSDRAIN" serve -addr "127.0.0.1:$UPSTREAM" 2>>"$OUT/upstream.log" &
            upstream=$!
            PIDS+=("$upstream")
            local dir=$WORK/nginx-$age-$n
            nginx_conf "$dir"
            nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" 2>>"$log" &
            pid=$!
            PIDS+=("$pid")
            wait_answer "http://127.0.0.1:$UPSTREAM/"
            wait_answer "https://127.0.0.1:$TLS_NGINX/" --cacert "$CERT"
            local worker
            for worker in $(pgrep -P "$pid"); do NGINX_WORKERS+=("$worker"); done
            addr=127.0.0.1:$TLS_NGINX signal=QUIT inflight=/slow ;;
    esac
    [ "$INFLIGHT" = 1 ] || inflight=
    "$HSDRAIN" run -addr "$addr" -roots "$CERT" -pid "$pid" -signal "$signal" -stalled "$STALLED" \
        -partial "$PARTIAL" -finish "$FINISH" -finish-after 50ms -late "$LATE" -late-after 1500ms -inflight "$inflight" -age "$age" \
        -wait "${WAIT}s" >"$OUT/$server-$age-$n.json" 2>>"$log"
    local status=0
    wait "$pid" || status=$?
    echo "exit status $status" >>"$log"
    if [ "$server" = nginx ]; then
        cp "$dir/logs/error.log" "$OUT/nginx-$age-$n.error.log"
        kill -TERM "$upstream" 2>/dev/null || true
        wait "$upstream" 2>/dev/null || true
    fi
}

for n in $(seq 1 "$RUNS"); do
    for age in $AGES; do
        for server in "${SERVERS[@]}"; do
            echo "run $n: $server, handshakes $age old at the signal"
            run_one "$server" "$age" "$n"
        done
    done
done

python3 - "$OUT" "$RUNS" "$WAIT" "$AGES" "${SERVERS[@]}" <<'EOF'
import json, statistics, sys
from collections import Counter
out, runs, wait, ages, servers = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]
failed = 0

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def ms(x):
    return "—" if x is None else f"{x:,.0f}"

def kinds(conns, field):
    return ", ".join(f"{k} ×{v}" for k, v in sorted(Counter(c.get(field) or "—" for c in conns).items()))

rows = []
for server, age in [(s, a) for a in ages for s in servers]:
    per = []
    for n in range(1, runs + 1):
        r = json.load(open(f"{out}/{server}-{age}-{n}.json"))
        conns = r["connections"]
        by = {k: [c for c in conns if c["kind"] == k] for k in ("stalled", "partial", "finish", "late", "inflight")}
        per.append((r, by))
        print(f"{server}, {age} run {n}: exit {ms(r['exit_ms'])} ms after the signal")
        for kind, cs in by.items():
            for c in sorted(cs, key=lambda c: c["end_ms"]):
                print(f"  {kind:8} connect {c['connect_ms']:8.1f}  handshake {c.get('handshake', '-'):10} "
                      f"status {c.get('status', '-')!s:4} connection {c.get('connection_header') or '-':6} "
                      f"response {c.get('response_ms', '-')!s:8} first {c.get('first_bytes') or '-':28} "
                      f"end {c['end']:14} at {c['end_ms']:9.1f} {c.get('error', '')}")
        problems = []
        if r["exit_ms"] < 0:
            problems.append(f"still running {wait:.0f} s after the signal")
        for c in by["finish"] + by["inflight"]:
            if c.get("status") != 200 or (c["kind"] == "finish" and c.get("body") != "Hello, World!"):
                problems.append(f"{c['kind']}: status {c.get('status')}, handshake {c.get('handshake')}, "
                                f"end {c['end']} {c.get('error', '')}")
        if problems and server != "quiesce":
            print(f"NOTE  {server}, {age} run {n}: " + "; ".join(problems))
        elif problems:
            failed += 1
            print(f"FAIL  {server}, {age} run {n}: " + "; ".join(problems))
        else:
            print(f"PASS  {server}, {age} run {n}")
    def stall_end(by, kind):
        return med([med([c["end_ms"] for c in by[kind]]) for _, by in [(None, b) for _, b in per]])
    exit_med = med([r["exit_ms"] if r["exit_ms"] >= 0 else None for r, _ in per])
    allc = lambda kind: [c for _, by in per for c in by[kind]]
    fin = allc("finish")
    inf = allc("inflight")
    late = allc("late")
    rows.append({
        "server": server,
        "age": age,
        "exit": exit_med,
        "exits": [r["exit_ms"] for r, _ in per],
        "stalled": f"{kinds(allc('stalled'), 'end')} at {ms(stall_end(per, 'stalled'))} ms",
        "partial": f"{kinds(allc('partial'), 'end')}" + (f" (first: {kinds(allc('partial'), 'first_bytes')})"
                   if any(c.get('first_bytes') for c in allc('partial')) else "") + f" at {ms(stall_end(per, 'partial'))} ms",
        "finish": f"{sum(c.get('status') == 200 for c in fin)}/{len(fin)} 200, Connection: {kinds(fin, 'connection_header')}; "
                  f"response at {ms(med([c.get('response_ms') for c in fin]))} ms; end {kinds(fin, 'end')}",
        "late": f"{sum(c.get('status') == 200 for c in late)}/{len(late)} 200; handshake {kinds(late, 'handshake')}; "
                f"end {kinds(late, 'end')} at {ms(med([c['end_ms'] for c in late]))} ms" if late else "—",
        "inflight": f"{sum(c.get('status') == 200 for c in inf)}/{len(inf)} 200, Connection: {kinds(inf, 'connection_header')}; "
                    f"response at {ms(med([c.get('response_ms') for c in inf]))} ms; end {kinds(inf, 'end')}"
                    if inf else "—",
    })

lines = ["| server | age of the handshakes at the signal | signal → exit, median ms (runs) | stalled, sent nothing: end, median ms after the signal | "
         "stalled, half a ClientHello | finishing (rest of the ClientHello +50 ms, then GET) | "
         "late (rest of the ClientHello +1.5 s) | in flight (1 s request) |",
         "|---|--:|--:|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['server']} | {r['age']} | **{ms(r['exit'])}** ({', '.join(ms(x) if x >= 0 else 'no exit' for x in r['exits'])}) | "
                 f"{r['stalled']} | {r['partial']} | {r['finish']} | {r['late']} | {r['inflight']} |")
table = "\n".join(lines)
open(f"{out}/table.md", "w").write(table + "\n")
print()
print(table)
print()
judged = runs * len(ages) * ("quiesce" in servers)
print(f"{judged - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
