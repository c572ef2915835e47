#!/usr/bin/env bash
# Blocking work through the library's pool (`Response::blocking` / `BlockingPool`), measured:
# server CPU per request for trivial blocking jobs (`GET /work?ms=0`: the job sleeps 0 ms and
# answers through the pool) against a plain route on the loop (`GET /plaintext`), and against
# the hand-made pool the binary had before (AGAINST=<commit>), in paired runs.
#
#   bash benches/blocking.sh                               # REPS=5 DURATION=10s, no AGAINST
#   AGAINST=55b81c3 bash benches/blocking.sh               # also the code at that commit
#   PEERS=hyper AGAINST=55b81c3 bash benches/blocking.sh   # also hyper's spawn_blocking
#
# CPU µs/req = the server's utime + stime (every thread, from /proc/<pid>/stat) over the
# requests wrk completed, for one wrk run per server per repetition; each server is a fresh
# process, warmed up first (the pool's threads start with the first job). The servers run on
# CPU 0 (SERVER_CPU), wrk on CPU 1 (CLIENT_CPU), on ports BASE_PORT.. of 127.0.0.1 only.
# Needs Linux, wrk and taskset (apt-get install wrk util-linux), python3, a Rust toolchain.
# Prints one report (markdown) and writes it to benches/results/blocking.md.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18500}
AGAINST=${AGAINST:-}
PEERS=${PEERS:-}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need taskset; then
    apt-get update -qq && apt-get install -y -qq wrk util-linux >/dev/null
fi

echo "building quiesce..." >&2
cargo build --release --quiet
QUIESCE=target/release/quiesce
if [[ -n $AGAINST ]]; then
    echo "building quiesce at $AGAINST..." >&2
    mkdir -p "$work/against"
    git archive "$AGAINST" | tar -x -C "$work/against"
    # Its own target directory, kept between runs (the sources are the commit's).
    target_dir="$PWD/target/against-$AGAINST"
    (cd "$work/against" && CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet)
    BEFORE="$target_dir/release/quiesce"
fi
if [[ $PEERS == *hyper* ]]; then
    (cd benches/peers/hyper && CARGO_TARGET_DIR="$PWD/../../../target/peers" cargo build --release --locked --quiet)
    HYPER=target/peers/release/peer-hyper
fi

# shellcheck source=benches/servers.sh
. benches/servers.sh
threads() { awk '/^Threads:/ {print $2}' "/proc/${pids[-1]}/status"; }

# measure NAME URL: one wrk run against the last started server -> a line of cost.tsv
measure() {
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" "$2" >/dev/null 2>&1
    local before after
    before=$(ticks)
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$2" >"$work/wrk.out" 2>&1
    after=$(ticks)
    if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then
        echo "$1: wrk saw errors:" >&2
        cat "$work/wrk.out" >&2
    fi
    python3 - "$work/wrk.out" "$1" "$rep" "$before" "$after" "$hz" "$(threads)" <<'EOF' >>"$work/cost.tsv"
import re, sys
text, name, rep, before, after, hz, threads = open(sys.argv[1]).read(), *sys.argv[2:]
requests = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", text, re.M)
p99 = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1_000_000}[m.group(2)] if m else float("nan")
us = (int(after) - int(before)) * 1e6 / int(hz) / requests
print(f"{rep}\t{name}\t{rps:.0f}\t{p99:.0f}\t{us:.3f}\t{threads}")
EOF
}

: >"$work/cost.tsv"
port=$BASE_PORT
for rep in $(seq "$REPS"); do
    echo "rep $rep/$REPS" >&2
    start "$port" "$QUIESCE" --addr "127.0.0.1:$port" -q --blocking-threads 8
    measure plain "http://127.0.0.1:$port/plaintext"
    stop
    start "$port" "$QUIESCE" --addr "127.0.0.1:$port" -q --blocking-threads 8
    measure pool "http://127.0.0.1:$port/work?ms=0"
    stop
    if [[ -n $AGAINST ]]; then
        start "$port" "$BEFORE" --addr "127.0.0.1:$port" -q --blocking-threads 8
        measure before "http://127.0.0.1:$port/work?ms=0"
        stop
    fi
    if [[ -n ${HYPER:-} ]]; then
        start "$port" "$HYPER" --addr "127.0.0.1:$port"
        measure hyper "http://127.0.0.1:$port/work?ms=0"
        stop
    fi
done

report="$work/report.md"
{
    echo "# Blocking work through the library's pool ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), quiesce $(git rev-parse --short HEAD))"
    echo
    echo "- nproc $(nproc); kernel $(uname -r); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2); reps $REPS; duration $DURATION (warm-up $WARMUP); wrk -t1 -c$CONNS"
    command="REPS=$REPS DURATION=$DURATION"
    if [[ -n $AGAINST ]]; then command+=" AGAINST=$AGAINST"; fi
    if [[ -n $PEERS ]]; then command+=" PEERS=$PEERS"; fi
    echo "- command: \`$command bash benches/blocking.sh\`"
    echo "- plain: \`GET /plaintext\` answered on the loop; pool: \`GET /work?ms=0\` through the library's pool (8 threads at most)"
    if [[ -n $AGAINST ]]; then echo "- before: \`GET /work?ms=0\` through the binary's hand-made pool at $AGAINST"; fi
    if [[ -n ${HYPER:-} ]]; then echo "- hyper: \`GET /work?ms=0\` through \`tokio::task::spawn_blocking\` on a current_thread runtime"; fi
    echo "- CPU µs/req: the server's utime + stime, every thread, over the requests completed"
    echo
    python3 - "$work/cost.tsv" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
by, names = {}, []
for rep, name, rps, p99, us, threads in rows:
    by.setdefault(int(rep), {})[name] = (float(rps), float(p99), float(us), int(threads))
    if name not in names:
        names.append(name)
print("| rep | " + " | ".join(f"{n} req/s | {n} CPU µs/req" for n in names) + " | pool/plain CPU |" + "".join(f" pool/{n} CPU |" for n in names if n not in ("plain", "pool")))
print("|---|" + "--:|--:|" * len(names) + "--:|" + "--:|" * len([n for n in names if n not in ("plain", "pool")]))
ratios = {}
for rep, s in sorted(by.items()):
    cells = [f"{s[n][0]:,.0f} | {s[n][2]:.2f}" for n in names]
    row = [s["pool"][2] / s["plain"][2]] + [s["pool"][2] / s[n][2] for n in names if n not in ("plain", "pool")]
    for key, r in zip(["plain"] + [n for n in names if n not in ("plain", "pool")], row):
        ratios.setdefault(key, []).append(r)
    print(f"| {rep} | " + " | ".join(cells) + " | " + " | ".join(f"{r:.2f}" for r in row) + " |")
print()
for n in names:
    print(f"- {n}: median {statistics.median(s[n][2] for s in by.values()):.2f} CPU µs/req, "
          f"{statistics.median(s[n][0] for s in by.values()):,.0f} req/s, p99 {statistics.median(s[n][1] for s in by.values()):,.0f} µs, "
          f"{max(s[n][3] for s in by.values())} threads")
for key, rs in ratios.items():
    print(f"- pool/{key} CPU per request, median of the paired ratios: {statistics.median(rs):.2f} ({', '.join(f'{r:.2f}' for r in rs)})")
EOF
} >"$report"

mkdir -p benches/results
cp "$report" benches/results/blocking.md
cat "$report"
