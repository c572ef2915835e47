#!/usr/bin/env bash
# Restarts quiesce under load, the way it is deployed, and checks that nothing is lost.
#
#   bash deploy/proxy-test/run.sh [SCENARIO...]
#
# Scenarios (default: all):
#   direct           clients talk to quiesce; SIGHUP restarts
#   haproxy-safe     through HAProxy with deploy/haproxy.cfg (http-reuse safe); SIGHUP restarts
#   haproxy-always   the same with http-reuse always
#   haproxy-noretry  haproxy-safe without the config's L7 retries (HAProxy's defaults): what the
#                    server's drain alone gives a proxy; for information, not judged
#   nginx            through nginx with deploy/nginx.conf; SIGHUP restarts
#   activation       clients talk to quiesce; a socket held by a supervisor (systemd socket
#                    activation's protocol): SIGTERM, wait for the exit, start the next one
#   overlap          two processes with --reuse-port: start the next one, then SIGTERM the old
#   stop-start       the pattern that loses: SIGTERM, then bind again (expected to fail: reported,
#                    not judged)
#
# The clients (deploy/proxy-test/loadcheck.go, Go's net/http): LOOPS keep-alive loops of GET
# /plaintext, POST /echo and GET /json, and STREAMS EventSource-like clients of /events (they
# honour retry: and resume with Last-Event-ID). RESTARTS restarts GAP seconds apart. Each
# scenario prints a verdict line and its figures; results go to OUT (default
# target/proxy-test/). Exit status 1 when a judged scenario lost anything.
#
# Environment: LOOPS (32), STREAMS (1000), RESTARTS (5), GAP (10), EVERY (200ms), OUT.
# Installs haproxy, nginx, golang-go, curl and python3 with apt-get when missing (Debian).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LOOPS=${LOOPS:-32}
STREAMS=${STREAMS:-1000}
RESTARTS=${RESTARTS:-5}
GAP=${GAP:-10}
EVERY=${EVERY:-200ms}
OUT=${OUT:-$ROOT/target/proxy-test}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(direct haproxy-safe haproxy-always nginx activation overlap)

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
command -v go >/dev/null || need+=(golang-go)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# 1,000 streams and the loops need more descriptors than the usual 1,024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$OUT"
cargo build --release --quiet
QUIESCE=$ROOT/target/release/quiesce
GOCACHE=${GOCACHE:-$OUT/gocache} GOFLAGS=-mod=mod go build -o "$OUT/loadcheck" deploy/proxy-test/loadcheck.go
# The overlap pattern: connections a closing listener had queued move to the other one.
sysctl -qw net.ipv4.tcp_migrate_req=1 2>/dev/null || echo "note: net.ipv4.tcp_migrate_req not set" >&2

# Whatever a scenario started is stopped when the script ends, however it ends.
PORTS=()
cleanup() {
    jobs -p | xargs -r kill 2>/dev/null || true
    for port in "${PORTS[@]}"; do pkill -f -- "--addr 127.0.0.1:$port" 2>/dev/null || true; done
    pkill -f "$OUT/" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The pid of the quiesce that accepts new connections on $1 now.
serving_pid() {
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | sed -n 's/^quiesce_info{.*pid="\([0-9]*\)".*/\1/p'
}

wait_listening() { # port
    for _ in $(seq 1 200); do
        curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$1/healthz" && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

wait_gone() { # pid...
    for pid in "$@"; do
        for _ in $(seq 1 1200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    done
}

FAILED=0
run_scenario() {
    local name=$1 dir=$OUT/$1
    rm -rf "$dir" && mkdir -p "$dir"
    local qport pport target proxy_pid="" pids=()
    qport=$(free_port)
    PORTS+=("$qport")
    target=$qport
    local qargs=(--addr "127.0.0.1:$qport" --shutdown-timeout 30s)
    case $name in
        haproxy-*)
            pport=$(free_port)
            sed -e "s/127.0.0.1:8080/127.0.0.1:$qport/" -e "s/0.0.0.0:80\$/127.0.0.1:$pport/" deploy/haproxy.cfg >"$dir/haproxy.cfg"
            # HAProxy wants two descriptors per connection: keep maxconn within this shell's limit.
            sed -i "s/^    maxconn .*/    maxconn $(( ($(ulimit -n) - 200) / 2 ))/" "$dir/haproxy.cfg"
            if [ "$name" = haproxy-noretry ]; then sed -i '/retry-on\|disable-l7-retry/d' "$dir/haproxy.cfg"; fi
            if [ "$name" = haproxy-always ]; then sed -i 's/http-reuse safe/http-reuse always/' "$dir/haproxy.cfg"; fi
            target=$pport ;;
        nginx)
            pport=$(free_port)
            mkdir -p "$dir/nginx/logs"
            sed -e "s/127.0.0.1:8080/127.0.0.1:$qport/" -e "s/0.0.0.0:80;/127.0.0.1:$pport;/" deploy/nginx.conf >"$dir/nginx/quiesce.conf"
            cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile 65536;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log $dir/nginx/access.log;
    client_body_temp_path $dir/nginx;
    proxy_temp_path $dir/nginx;
    include $dir/nginx/quiesce.conf;
}
EOF
            target=$pport ;;
        overlap) qargs+=(--reuse-port) ;;
    esac

    # quiesce (for activation, a supervisor holding the socket).
    if [ "$name" = activation ]; then
        python3 deploy/proxy-test/activate.py "$qport" "$RESTARTS" "$GAP" "$QUIESCE" "${qargs[@]:2}" \
            >"$dir/activation.txt" 2>"$dir/quiesce.log" &
        pids+=($!)
    else
        "$QUIESCE" "${qargs[@]}" 2>>"$dir/quiesce.log" &
        pids+=($!)
    fi
    wait_listening "$qport"
    case $name in
        haproxy-*) haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 & proxy_pid=$! ;;
        nginx) nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' >"$dir/nginx.log" 2>&1 & proxy_pid=$! ;;
    esac
    [ "$target" = "$qport" ] || wait_listening "$target"

    local duration=$(( (RESTARTS + 1) * GAP ))
    "$OUT/loadcheck" -target "http://127.0.0.1:$target" -loops "$LOOPS" -streams "$STREAMS" -every "$EVERY" \
        -duration "${duration}s" >"$dir/result.json" 2>"$dir/loadcheck.log" &
    local client=$!
    local restarts=0
    for i in $(seq 1 "$RESTARTS"); do
        sleep "$GAP"
        case $name in
            direct | haproxy-* | nginx)
                local old new=""
                old=$(serving_pid "$qport")
                kill -HUP "$old"
                for _ in $(seq 1 200); do
                    new=$(serving_pid "$qport")
                    [ -n "$new" ] && [ "$new" != "$old" ] && break
                    sleep 0.05
                done
                pids+=("$new")
                restarts=$((restarts + 1)) ;;
            overlap)
                local old=${pids[-1]}
                "$QUIESCE" "${qargs[@]}" 2>>"$dir/quiesce.log" &
                local next=$!
                pids+=("$next")
                # The new one serves (its /metrics says so), then the old one drains.
                for _ in $(seq 1 200); do [ "$(serving_pid "$qport")" = "$next" ] && break; sleep 0.02; done
                kill -TERM "$old"
                restarts=$((restarts + 1)) ;;
            activation) restarts=$((restarts + 1)) ;; # activate.py restarts on its own clock
            stop-start)
                local old=${pids[-1]}
                kill -TERM "$old"
                wait_gone "$old"
                "$QUIESCE" "${qargs[@]}" 2>>"$dir/quiesce.log" &
                pids+=($!)
                restarts=$((restarts + 1)) ;;
        esac
    done
    wait "$client" || true
    # Stop everything: the last quiesce, then the proxy.
    if [ "$name" = activation ]; then
        wait "${pids[0]}" || true
    else
        local last
        last=$(serving_pid "$qport")
        [ -n "$last" ] && kill -TERM "$last"
        wait_gone "${pids[@]}" ${last:+"$last"}
    fi
    [ -z "$proxy_pid" ] || { kill -TERM "$proxy_pid" 2>/dev/null; wait "$proxy_pid" 2>/dev/null || true; }

    # Every quiesce that drained says how in its exit summary.
    local drained not_drained
    drained=$(grep -c '"outcome":"drained"' "$dir/quiesce.log" || true)
    not_drained=$(grep '"event":"shutdown"' "$dir/quiesce.log" | grep -vc '"outcome":"drained"' || true)
    python3 - "$name" "$dir/result.json" "$restarts" "$STREAMS" "$drained" "$not_drained" "$dir/haproxy.log" <<'EOF' || FAILED=1
import json, sys
name, path, restarts, streams, drained, not_drained, hlog = sys.argv[1:]
restarts, streams, drained, not_drained = int(restarts), int(streams), int(drained), int(not_drained)
r = json.load(open(path))
expected_ends = restarts * streams
proxy_5xx = sum(v for k, v in r["failures"].items() if " status 50" in k)
judged = name not in ("stop-start", "haproxy-noretry")
# Every stream open at a restart ends cleanly once. A stream request that reaches an old process
# during its drain (on a connection it kept for a pooled client or proxy: see the SIGHUP row of
# the README) is answered with the last event at once, and the client resumes on the next
# process: an extra clean end, nothing lost. Fewer ends than restarts x streams is a loss.
extra_ends = r["clean_stream_ends"] - expected_ends
ok = (r["failed"] == 0 and r["unclean_stream_ends"] == 0 and extra_ends >= 0
      and r["events_lost"] == 0 and r["events_repeated"] == 0 and not_drained == 0)
verdict = "ok" if ok else ("LOST" if judged else "lost (not judged)")
print(f"{name}: {verdict}: {r['requests']} requests, {r['failed']} failed ({proxy_5xx} x 5xx), "
      f"clean stream ends {r['clean_stream_ends']}/{expected_ends}"
      f"{f' ({extra_ends} begun during a drain)' if extra_ends > 0 else ''}, unclean {r['unclean_stream_ends']}, "
      f"events {r['events']} (lost {r['events_lost']}, repeated {r['events_repeated']}, resumed {r['resumed_with_last_event_id']}), "
      f"exits drained {drained}, not drained {not_drained}")
if r["failures"]:
    print("  request failures:", json.dumps(r["failures"]), json.dumps(r["failure_examples"])[:600])
if r["stream_failures"]:
    print("  stream failures:", json.dumps(r["stream_failures"]), json.dumps(r["stream_failure_examples"])[:600])
hist = r["reconnect_delay_ms_histogram"]
if hist:
    print("  reconnection delay after a stream end (100 ms buckets):",
          ", ".join(f"{int(k)}ms:{v}" for k, v in sorted(hist.items())))
sys.exit(0 if ok or not judged else 1)
EOF
}

for scenario in "${SCENARIOS[@]}"; do
    run_scenario "$scenario"
done
exit $FAILED
