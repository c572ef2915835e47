#!/usr/bin/env bash
# Instructions per request of the real server under a CONCURRENT client: 32 keep-alive
# connections with requests in flight at once, as wrk loads a server (a lock-step client, as in
# live_instructions.sh, makes every server pay a whole loop turn per request, which hides the
# per-request cost). Callgrind counts the whole server process, every thread and libc included,
# for quiesce and for the peers, under the same client (benches/concurrent_load.go).
#
#   bash benches/concurrent_instructions.sh                    # quiesce, may_minihttp, the bare server
#   AGAINST=<git rev> bash benches/concurrent_instructions.sh  # plus REV's quiesce, and the change
#   PEERS="may bare hyper" bash benches/concurrent_instructions.sh
#   DETAIL=1 RUNS=1 bash benches/concurrent_instructions.sh    # plus the costliest functions (inclusive)
#
# Scenarios (CONNS connections, all in flight; each repeats "write DEPTH requests, read DEPTH
# responses"):
#   keepalive   DEPTH 1: one GET /plaintext in flight per connection
#   pipelined   DEPTH 16: 16 GET /plaintext per write per connection
#
# The client counts the requests: after a warm-up it waits, the server's counters are zeroed
# (callgrind_control --zero), it runs about REQUESTS requests (a whole number of rounds on every
# connection) and reports how many, each answered, before the counters are dumped; the count of
# that window / those requests is the figure. Unlike the lock-step count, it moves a little from
# run to run (how many connections each epoll_wait finds ready depends on timing), so each server
# and scenario runs RUNS times and the median is printed, with the spread.
#
# Peers (PEERS, default "may bare"): may_minihttp (benches/peers/may) and the bare mio + httparse
# + slab server (benches/peers/bare: read, parse, one write; the design's limit), hyper on request;
# built as compare.sh builds them (--locked, into target/peers). quiesce is built with line tables
# as live_instructions.sh builds it, and its count is split by function group (cg_groups.py).
set -euo pipefail
cd "$(dirname "$0")/.."

# A multiple of 32 x 16: both scenarios then send the same number (cg_groups.py divides by one).
REQUESTS=${REQUESTS:-16384}
RUNS=${RUNS:-3}
CONNS=${CONNS:-32}
SCENARIOS=${SCENARIOS:-"keepalive pipelined"}
PEERS=${PEERS-"may bare"}
PORT=${PORT:-28680}
work=$(mktemp -d)
# shellcheck source-path=SCRIPTDIR source=callgrind.sh disable=SC1091 # followed with shellcheck -x
. "$(dirname "$0")/callgrind.sh"
trap cg_cleanup EXIT
need_valgrind
if ! command -v go >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
fi
GOCACHE=${GOCACHE:-$work/gocache} GOFLAGS=-mod=mod go build -o "$work/load" benches/concurrent_load.go

depth() { if [ "$1" = pipelined ]; then echo 16; else echo 1; fi; }

# count EXECUTABLE SCENARIO [PEER]: the median of RUNS counts, "median (min-max)" when they differ.
count() {
    local runs=() sorted
    for _ in $(seq "$RUNS"); do
        runs+=("$(count_once "$1" "$2" "${3:-}")")
    done
    sorted=$(printf '%s\n' "${runs[@]}" | sort -n)
    awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; if (a[1]==a[NR]) print m; else printf "%s (%s-%s)\n", m, a[1], a[NR]}' <<<"$sorted"
}

# count_once EXECUTABLE SCENARIO [PEER]: one run under callgrind -> instructions per request.
count_once() {
    local binary=$1 scenario=$2 peer=${3:-} out="$work/cg.$2${3:+.$3}.$RANDOM" server d rounds
    # shellcheck disable=SC2206 # SERVER_ARGS is a list
    case $peer in
        "") server=("$binary" --addr "127.0.0.1:$PORT" -qqq ${SERVER_ARGS:-}) ;;
        *) server=("$binary" --addr "127.0.0.1:$PORT") ;;
    esac
    start_counted "$out" "${server[@]}" || { fail_run "${peer:-quiesce} did not answer on 127.0.0.1:$PORT within 60 s under callgrind: $(tail -3 "$out.log")"; return 1; }
    d=$(depth "$scenario")
    rounds=$((REQUESTS / (CONNS * d)))
    ((rounds > 0)) || rounds=1
    coproc CLIENT { "$work/load" -port "$PORT" -conns "$CONNS" -depth "$d" -rounds "$rounds"; }
    count_window || { fail_run "the client failed against ${peer:-quiesce}"; return 1; }
    local dump
    finish_counted "$out" "$peer" "$scenario, ${peer:-$binary}"
    # The last run's output and request count stay for the group table.
    if [ -z "$peer" ]; then
        cp "$dump" "$work/groups.$scenario.$(target_of "$binary")"
        echo "$window_requests" >"$work/requests.$scenario"
    fi
    per_request "$dump" "$window_requests"
}

# The peers, built before anything is counted (compare.sh's target directory).
peer_target=${CARGO_TARGET_DIR:-$PWD/target}/peers
for peer in $PEERS; do
    case $peer in
        hyper | may | bare)
            cargo build --release --quiet --locked --manifest-path "benches/peers/$peer/Cargo.toml" --target-dir "$peer_target"
            ;;
        *) echo "unknown peer '$peer' (PEERS: may bare hyper)" >&2; exit 1 ;;
    esac
done

[ -z "${AGAINST:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$PWD/target/instructions-this
binary=$(this)
base=$(against)

# One table: a row per scenario; quiesce (and REV's), each peer, and quiesce/peer.
echo "# concurrent client: instructions per request ($CONNS connections in flight, callgrind, whole process;" \
    "$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'); median of $RUNS runs, (min-max) when they differ)"
line="| scenario |"
rule="|---|"
if [ -n "$base" ]; then
    line+=" quiesce $(git rev-parse --short "$AGAINST") | change |"
    rule+="--:|--:|"
fi
line+=" quiesce${base:+ this} |"
rule+="--:|"
for peer in $PEERS; do
    line+=" $peer | quiesce/$peer |"
    rule+="--:|--:|"
done
printf '%s\n%s\n' "$line" "$rule"
first() { echo "${1%% *}"; } # the median of "median (min-max)"
for scenario in $SCENARIOS; do
    mine=$(count "$binary" "$scenario")
    line="| $scenario"
    if [ -n "$base" ]; then
        before=$(count "$base" "$scenario")
        line+=" | $before | $(python3 -c "print(f'{($(first "$mine") - $(first "$before")) / $(first "$before") * 100:+.1f}%')")"
    fi
    line+=" | $mine"
    for peer in $PEERS; do
        theirs=$(count "$peer_target/release/peer-$peer" "$scenario" "$peer") || theirs=n/a
        if [[ $(first "$theirs") =~ ^[0-9]+$ ]]; then
            line+=" | $theirs | $(python3 -c "print(f'{$(first "$mine") / $(first "$theirs"):.2f}')")"
        else
            line+=" | n/a | n/a"
        fi
    done
    echo "$line |"
done
echo
echo "Requests per run: $(for s in $SCENARIOS; do printf '%s %s; ' "$s" "$(cat "$work/requests.$s")"; done)client: benches/concurrent_load.go."

echo
echo "# quiesce by function group (instructions per request, the last run; benches/cg_groups.py)"
# cg_groups.py divides by one request count: the runs of a scenario all send the same number.
# shellcheck disable=SC2086 # SCENARIOS is a list
group_columns "$binary" "$base" $SCENARIOS
n=$(cat "$work/requests.$(first "$SCENARIOS")")
for scenario in $SCENARIOS; do
    [ "$(cat "$work/requests.$scenario")" = "$n" ] || n=""
done
if [ -n "$n" ]; then
    python3 benches/cg_groups.py "$n" "${columns[@]}"
else
    for scenario in $SCENARIOS; do
        cols=()
        for c in "${columns[@]}"; do [[ $c == "$scenario"[\ =]* ]] && cols+=("$c"); done
        python3 benches/cg_groups.py "$(cat "$work/requests.$scenario")" "${cols[@]}"
        echo
    done
fi
