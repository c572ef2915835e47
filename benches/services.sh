#!/usr/bin/env bash
# Issue 19's comparison: the same two services written with quiesce (examples/crud.rs,
# examples/chat.rs) and with axum 0.8 (benches/peers/axum), side by side in one run.
#
#   bash benches/services.sh                 # REPS=5 DURATION=5s
#   REPS=3 DURATION=3s bash benches/services.sh
#
# 1. Lines of each program (non-blank, non-comment lines of Rust).
# 2. Server CPU per request (utime + stime of the whole process, every thread, from
#    /proc/PID/stat, over the requests wrk counted), REPS pairs, each pair run back to back
#    (quiesce, then axum), the ratio's median reported, and every pair's ratio beside it:
#      json      GET /hello/{name}: the router and a JSON response, no blocking work
#      blocking  GET /users/1: the router, the store behind a blocking call (quiesce's pool,
#                axum's spawn_blocking), a JSON response
#    wrk: 1 thread, 32 connections (keep-alive). Servers run on CPU 0, wrk on CPU 1 where there
#    are two.
# Before each measured run the route is fetched once: quiesce's answer and axum's (status and
# body) must be the same, or the script stops (a route missing on one side would compare a 404).
# Installs wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
DURATION=${DURATION:-5s}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --features json --example crud --example chat
cargo build --release --quiet --manifest-path benches/peers/axum/Cargo.toml
Q=target/release/examples
A=benches/peers/axum/target/release

echo "## lines (non-blank, non-comment)"
count() { grep -v '^\s*$' "$1" | grep -cv '^\s*//'; }
printf '| program | quiesce | axum |\n|---|--:|--:|\n'
printf '| JSON CRUD | %s | %s |\n' "$(count examples/crud.rs)" "$(count benches/peers/axum/src/bin/crud.rs)"
printf '| SSE chat | %s | %s |\n' "$(count examples/chat.rs)" "$(count benches/peers/axum/src/bin/chat.rs)"

pin_server=() pin_client=()
if [ "$(nproc)" -ge 2 ]; then pin_server=(taskset -c 0) pin_client=(taskset -c 1); fi
port=18391
answers=$(mktemp -d)
trap 'rm -rf "$answers"' EXIT

# Runs BINARY, creates user 1, keeps its answer on PATH in $answers/SIDE, drives PATH with wrk;
# prints CPU µs per request.
measure() {
    local binary=$1 path=$2 side=$3 pid ticks0 ticks1 out reqs hz
    hz=$(getconf CLK_TCK)
    "${pin_server[@]}" "$binary" "127.0.0.1:$port" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/hello/x" && break; sleep 0.05; done
    curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"name":"ada","email":"ada@example.com"}' \
        "http://127.0.0.1:$port/users"
    curl -s -w ' %{http_code}' "http://127.0.0.1:$port$path" >"$answers/$side"
    ticks0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$("${pin_client[@]}" wrk -t1 -c32 -d"$DURATION" "http://127.0.0.1:$port$path")
    ticks1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q 'Non-2xx' <<<"$out"; then echo "$binary $path: $(grep 'Non-2xx' <<<"$out")" >&2; return 1; fi
    python3 -c "print(f'{($ticks1 - $ticks0) / $hz * 1e6 / max($reqs, 1):.2f}')"
}

echo
echo "## server CPU µs per request (wrk -t1 -c32, $DURATION, $REPS pairs)"
printf '| route | quiesce (median) | axum (median) | quiesce/axum (median of pairs) | pairs |\n|---|--:|--:|--:|---|\n'
for scenario in json blocking; do
    path=/hello/world
    [ "$scenario" = blocking ] && path=/users/1
    qs=() as=() rs=()
    for _ in $(seq "$REPS"); do
        q=$(measure "$Q/crud" "$path" quiesce)
        a=$(measure "$A/crud" "$path" axum)
        if ! cmp -s "$answers/quiesce" "$answers/axum"; then
            echo "$path: quiesce answers '$(cat "$answers/quiesce")', axum '$(cat "$answers/axum")': not the same work" >&2
            exit 1
        fi
        qs+=("$q") as+=("$a") rs+=("$(python3 -c "print(f'{$q / $a:.3f}')")")
    done
    med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '| %s (`%s`) | %s | %s | %s | %s |\n' "$scenario" "$path" "$(med "${qs[@]}")" "$(med "${as[@]}")" "$(med "${rs[@]}")" "${rs[*]}"
done
