#!/usr/bin/env bash
# Work off the loop, measured: what blocking work on the pool costs the other requests, what a
# deferred reply costs next to hyper's spawn_blocking, the drain with work and streams in
# flight, and the memory of an idle event stream.
#
#   bash benches/offloop.sh                      # REPS=5 DURATION=10s
#   REPS=2 DURATION=3s bash benches/offloop.sh   # a quick look
#
# Needs Debian/Ubuntu as root for apt-get (wrk, python3, taskset), a Rust toolchain, 2 cores.
# The servers run on CPU 0 (SERVER_CPU), wrk and the clients on CPU 1 (CLIENT_CPU), on ports
# BASE_PORT.. of 127.0.0.1 only. Prints one report (markdown) and writes it to
# benches/results/offloop.md.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-10s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18400}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need python3 || ! need taskset; then
    apt-get update -qq && apt-get install -y -qq wrk python3 util-linux >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

echo "building quiesce and the hyper peer..." >&2
cargo build --release --quiet
(cd benches/peers/hyper && CARGO_TARGET_DIR="$PWD/../../../target/peers" cargo build --release --locked --quiet)
QUIESCE=target/release/quiesce
HYPER=target/peers/release/peer-hyper

# shellcheck source=benches/servers.sh
. benches/servers.sh

# wrk URL CONNS -> "req_per_s p99_us" (wrk -t1, pinned to CLIENT_CPU)
run_wrk() {
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$2" -d"$DURATION" --latency "$1" >"$work/wrk.out" 2>&1
    python3 - "$work/wrk.out" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", text, re.M)
scale = {"us": 1, "ms": 1000, "s": 1_000_000}
p99 = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors", text)
print(f"{rps:.0f} {p99:.0f}", "errors" if errors else "")
EOF
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

report="$work/report.md"
{
    echo "# Work off the loop ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), quiesce $(git rev-parse --short HEAD))"
    echo
    echo "- nproc $(nproc); kernel $(uname -r); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2); reps $REPS; duration $DURATION"
    echo "- command: \`REPS=$REPS DURATION=$DURATION bash benches/offloop.sh\`"
    echo
} >"$report"

# 1. /plaintext while 64 /work?ms=300 requests keep the 8 blocking threads busy.
port=$BASE_PORT
start "$port" "$QUIESCE" --addr "127.0.0.1:$port" -q --blocking-threads 8
run_wrk "http://127.0.0.1:$port/plaintext" 16 >/dev/null # warm-up
: >"$work/latency.tsv"
for rep in $(seq "$REPS"); do
    read -r idle_rps idle_p99 _ < <(run_wrk "http://127.0.0.1:$port/plaintext" 16)
    secs=${DURATION%s}
    taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"$((secs + 4))s" "http://127.0.0.1:$port/work?ms=300" >"$work/load.out" 2>&1 &
    loader=$!
    sleep 1
    read -r busy_rps busy_p99 _ < <(run_wrk "http://127.0.0.1:$port/plaintext" 16)
    wait "$loader"
    work_rps=$(awk '/Requests\/sec/ {print $2}' "$work/load.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$idle_rps" "$idle_p99" "$busy_rps" "$busy_p99" "$work_rps" >>"$work/latency.tsv"
done
stop
{
    echo "## /plaintext while 64 \`/work?ms=300\` run on 8 blocking threads (wrk -c16; the load: wrk -c64)"
    echo
    echo "| rep | unloaded req/s | unloaded p99 µs | loaded req/s | loaded p99 µs | loaded/unloaded req/s | /work req/s |"
    echo "|---|--:|--:|--:|--:|--:|--:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %.3f | %s |\n", $1, $2, $3, $4, $5, $4/$2, $6}' "$work/latency.tsv"
    echo
    echo "Medians: loaded/unloaded req/s $(awk -F'\t' '{print $4/$2}' "$work/latency.tsv" | median), loaded p99 $(cut -f5 "$work/latency.tsv" | median) µs (target: within 10 %, p99 under 10,000 µs)."
    echo
} >>"$report"

# 2. A deferred reply through the pool, /work?ms=0, against hyper's spawn_blocking.
: >"$work/cost.tsv"
for rep in $(seq "$REPS"); do
    for server in quiesce hyper; do
        port=$((BASE_PORT + 1))
        case $server in
            quiesce) start "$port" "$QUIESCE" --addr "127.0.0.1:$port" -q --blocking-threads 8 ;;
            hyper) start "$port" "$HYPER" --addr "127.0.0.1:$port" ;;
        esac
        run_wrk "http://127.0.0.1:$port/work?ms=0" 64 >/dev/null # warm-up (starts the pools)
        before=$(ticks)
        read -r rps p99 _ < <(run_wrk "http://127.0.0.1:$port/work?ms=0" 64)
        after=$(ticks)
        requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
        us=$(python3 -c "print(f'{($after - $before) * 1e6 / $hz / $requests:.2f}')")
        printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$server" "$rps" "$p99" "$us" >>"$work/cost.tsv"
        stop
    done
done
{
    echo "## A deferred reply: \`GET /work?ms=0\` answered from the blocking pool (wrk -c64)"
    echo
    echo "quiesce: \`Response::defer\` + its 8-thread pool; hyper: \`tokio::task::spawn_blocking\` on a current_thread runtime. CPU µs/req = the server's utime + stime (all threads) / requests."
    echo
    echo "| rep | quiesce req/s | quiesce CPU µs/req | hyper req/s | hyper CPU µs/req | quiesce/hyper CPU |"
    echo "|---|--:|--:|--:|--:|--:|"
    python3 - "$work/cost.tsv" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
by = {}
for rep, server, rps, p99, us in rows:
    by.setdefault(rep, {})[server] = (float(rps), float(us))
ratios = []
for rep, s in sorted(by.items(), key=lambda kv: int(kv[0])):
    ratio = s["quiesce"][1] / s["hyper"][1]
    ratios.append(ratio)
    print(f"| {rep} | {s['quiesce'][0]:,.0f} | {s['quiesce'][1]:.2f} | {s['hyper'][0]:,.0f} | {s['hyper'][1]:.2f} | {ratio:.2f} |")
print()
print(f"Median of the paired ratios: {statistics.median(ratios):.2f} (aim: 0.8 or less).")
print()
EOF
} >>"$report"

# 3. SIGTERM with 32 /work requests and 1,000 event streams in flight; 4. RSS per idle stream.
drain=$(taskset -c "$CLIENT_CPU" python3 benches/streams.py drain --server "$QUIESCE" --port $((BASE_PORT + 2)) --cpu "$SERVER_CPU" --streams 1000 --work 32 --work-ms 1000)
rss=$(taskset -c "$CLIENT_CPU" python3 benches/streams.py rss --server "$QUIESCE" --port $((BASE_PORT + 3)) --cpu "$SERVER_CPU" --streams 10000)
{
    echo "## SIGTERM with 32 \`/work?ms=1000\` in flight and 1,000 open \`/events\` streams"
    echo
    echo '```json'
    echo "$drain"
    echo '```'
    echo
    echo "## RSS per idle \`/events\` stream at 10,000"
    echo
    echo '```json'
    echo "$rss"
    echo '```'
} >>"$report"

mkdir -p benches/results
cp "$report" benches/results/offloop.md
cat "$report"
