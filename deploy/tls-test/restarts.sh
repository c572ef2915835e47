#!/usr/bin/env bash
# The drain and certificate rotation over HTTPS, under load (deploy/tls-test/tlscheck.go's
# `load`: Go crypto/tls clients that trust every certificate used here).
#
#   bash deploy/tls-test/restarts.sh [SCENARIO...]
#
# Scenarios (default: all):
#   drain    the clients run; SIGTERM after WARMUP seconds. Judged: no request lost (written
#            whole, then no whole response), no wrong answer, quiesce drained and exited 0.
#            Counted: how idle connections and those told Connection: close ended (close_notify
#            or a ragged EOF), connections refused once the listener closed, failed handshakes.
#   rotate   the clients run while the certificate and key files are replaced by a new pair (a
#            new key, serial and CN) and SIGHUP is sent, RESTARTS times GAP seconds apart.
#            Judged: 0 lost, 0 failed handshakes, 0 refused, every new certificate seen, in
#            order, and only after its SIGHUP; every process drained. Measured: when each new
#            certificate was first presented, after the SIGHUP and after the new process's
#            "listening" line, and when the old one was last presented.
#   broken   the same clients; a reload with a key that does not match the certificate, then
#            one with the key file missing, then a good one. Judged: 0 lost, 0 failed
#            handshakes; after each broken reload the same process serves, and the new one
#            said why in exactly one tls_load_failed line; the good reload takes over and its
#            certificate is presented.
#
# Environment: LOOPS (32 keep-alive clients), FRESH (4 clients with a new connection per
# request), IDLE (8 clients holding an idle connection), WARMUP (5 s), RESTARTS (5), GAP (5 s),
# OUT (target/tls-test/restarts). Installs openssl, curl, python3 and golang-go when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/tls-test/restarts}
LOOPS=${LOOPS:-32}
FRESH=${FRESH:-4}
IDLE=${IDLE:-8}
WARMUP=${WARMUP:-5}
RESTARTS=${RESTARTS:-5}
GAP=${GAP:-5}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(drain rotate broken)
. deploy/tls-test/common.sh
setup
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Certificates r0 (the first) to rN, each its own key, serial and CN; the clients trust all.
mkdir -p "$WORK/live"
ROOTS=()
for i in $(seq 0 "$((RESTARTS > 1 ? RESTARTS : 1))"); do
    make_cert "r$i" ec "localhost r$i"
    ROOTS+=("$WORK/r$i.pem")
done
ROOTS_LIST=$(IFS=,; echo "${ROOTS[*]}")

# install_pair CERT KEY: replaces the live files as a renewal would (write aside, rename).
install_pair() {
    cp "$1" "$WORK/live/cert.pem.new" && mv "$WORK/live/cert.pem.new" "$WORK/live/cert.pem"
    if [ -n "$2" ]; then
        cp "$2" "$WORK/live/key.pem.new" && mv "$WORK/live/key.pem.new" "$WORK/live/key.pem"
    else
        rm -f "$WORK/live/key.pem"
    fi
}

# hup_and_wait PLAIN_PORT: SIGHUP the serving process; prints "old new sent_ms" once /metrics
# names a new pid, or "old old sent_ms" when none took over within 10 s.
hup_and_wait() {
    local port=$1 old new="" at _
    old=$(serving_pid "$port")
    at=$(now_ms)
    kill -HUP "$old"
    for _ in $(seq 1 200); do
        new=$(serving_pid "$port")
        [ -n "$new" ] && [ "$new" != "$old" ] && break
        sleep 0.05
    done
    [ -n "$new" ] || new=$old
    echo "$old $new $at"
}

# wait_log FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN (10 s at most).
wait_log() {
    local _
    for _ in $(seq 1 200); do
        [ "$(grep -c -- "$2" "$1" || true)" -ge "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

run_scenario() {
    local name=$1 dir=$OUT/$1
    rm -rf "$dir" && mkdir -p "$dir"
    local plain tls log=$dir/quiesce.log events=$dir/events.txt
    plain=$(free_port)
    tls=$(free_port)
    : >"$events"
    install_pair "$WORK/r0.pem" "$WORK/r0.key"
    start_quiesce "$log" "$plain" "$tls" "$WORK/live/cert.pem" "$WORK/live/key.pem" --shutdown-timeout 30s
    local first=$STARTED duration
    case $name in
        drain) duration=$((WARMUP + 4)) ;;
        rotate) duration=$(((RESTARTS + 1) * GAP + 1)) ;;
        broken) duration=$((4 * GAP + 1)) ;;
    esac
    "$TLSCHECK" load -addr "127.0.0.1:$tls" -roots "$ROOTS_LIST" -loops "$LOOPS" -fresh "$FRESH" -idle "$IDLE" \
        -duration "${duration}s" >"$dir/result.json" 2>"$dir/load.log" &
    local client=$!
    case $name in
        drain)
            sleep "$WARMUP"
            echo "sigterm $(now_ms) $first" >>"$events"
            kill -TERM "$first"
            local status
            wait "$first" && status=0 || status=$?
            echo "exit $(now_ms) $status" >>"$events" ;;
        rotate)
            local i old new at
            for i in $(seq 1 "$RESTARTS"); do
                sleep "$GAP"
                install_pair "$WORK/r$i.pem" "$WORK/r$i.key"
                read -r old new at <<<"$(hup_and_wait "$plain")"
                PIDS+=("$new")
                echo "hup $at $i $(cert_serial "$WORK/r$i.pem")" >>"$events"
                echo "serving $(now_ms) $i $old $new" >>"$events"
            done ;;
        broken)
            local step old new at before fails=0
            for step in mismatch missing good; do
                sleep "$GAP"
                case $step in
                    mismatch) install_pair "$WORK/r1.pem" "$WORK/r0.key" ;;
                    missing) install_pair "$WORK/r1.pem" "" ;;
                    good) install_pair "$WORK/r1.pem" "$WORK/r1.key" ;;
                esac
                before=$(wc -l <"$log")
                if [ $step = good ]; then
                    read -r old new at <<<"$(hup_and_wait "$plain")"
                    PIDS+=("$new")
                else
                    # The old process says when its successor failed; then ask who serves.
                    old=$(serving_pid "$plain")
                    at=$(now_ms)
                    kill -HUP "$old"
                    fails=$((fails + 1))
                    wait_log "$log" 'failed before it was ready\|closed its readiness pipe' "$fails" || true
                    new=$(serving_pid "$plain")
                fi
                echo "hup $at $step $(cert_serial "$WORK/r1.pem") $before" >>"$events"
                echo "serving $(now_ms) $step $old $new $(wc -l <"$log")" >>"$events"
            done ;;
    esac
    wait "$client" || true
    if [ "$name" != drain ]; then
        local last
        last=$(serving_pid "$plain")
        [ -n "$last" ] && kill -TERM "$last"
        wait_gone 60 "$first" ${last:+"$last"}
        wait "$first" 2>/dev/null || true
    fi
    python3 - "$name" "$dir" "$RESTARTS" <<'EOF' || FAILED=$((FAILED + 1))
import json, sys
from datetime import datetime
name, d, restarts = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.load(open(f"{d}/result.json"))
events = [line.split() for line in open(f"{d}/events.txt")]
log_lines = open(f"{d}/quiesce.log").read().splitlines()
log = []
for line in log_lines:
    try:
        log.append(json.loads(line))
    except ValueError:
        log.append({"message": line})

def ms(entry):
    ts = entry.get("ts")
    return int(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=__import__("datetime").timezone.utc).timestamp() * 1000) if ts else None

summaries = [e for e in log if e.get("event") == "shutdown"]
not_drained = [s for s in summaries if s.get("outcome") != "drained"]
problems = []
if r["lost"]:
    problems.append(f"{r['lost']} lost: {r['lost_by_kind']} {json.dumps(r['lost_examples'])[:300]}")
if r["wrong_answers"]:
    problems.append(f"{r['wrong_answers']} wrong answers: {r['wrong_by_kind']}")
if not_drained:
    problems.append(f"{len(not_drained)} exits not drained: {not_drained}")
ends = r["connection_ends"]
ragged = {k: v for k, v in ends.items() if "close_notify" not in k}
if ragged:
    problems.append(f"connections ended without close_notify: {ragged}")
print(f"{name}: {r['requests']} requests ({r['ok']} ok), lost {r['lost']}, wrong {r['wrong_answers']}, "
      f"handshakes {r['handshakes']} ({r['versions']}), failed handshakes {r['handshakes_failed']} {r['handshake_failures'] or ''}, "
      f"refused connections {r['refused_connections']}")
print(f"  connection ends: {json.dumps(ends, sort_keys=True)}")
print(f"  exit summaries: {len(summaries)}, drained {len(summaries) - len(not_drained)}; "
      + "; ".join(json.dumps(s.get("tls")) + f" close_notify, drain {s.get('drain_ms')} ms" for s in summaries))

if name == "drain":
    sig = next(int(e[1]) for e in events if e[0] == "sigterm")
    ex = next(e for e in events if e[0] == "exit")
    print(f"  SIGTERM to exit: {int(ex[1]) - sig} ms, exit status {ex[2]}")
    if ex[2] != "0":
        problems.append(f"exit status {ex[2]}")
    idle_ends = {k: v for k, v in ends.items() if k.startswith("idle")}
    if not idle_ends.get("idle: while idle: close_notify"):
        problems.append(f"no idle connection saw close_notify: {idle_ends}")
else:
    if r["handshakes_failed"]:
        problems.append(f"{r['handshakes_failed']} failed handshakes: {r['handshake_failure_examples']}")
    if r["refused_connections"]:
        problems.append(f"{r['refused_connections']} connections refused")
    certs = r["certificates"]
    listening = [ms(e) for e in log if e.get("event") == "listening" and e.get("tls")]
    print("  certificates presented: " + ", ".join(f"{c['cn']} x{c['handshakes']}" for c in certs))

if name == "rotate":
    hups = [e for e in events if e[0] == "hup"]
    serving = [e for e in events if e[0] == "serving"]
    order = [c["serial"] for c in certs]
    wanted = [h[3] for h in hups]
    if len(certs) != restarts + 1 or order[1:] != wanted:
        problems.append(f"certificates seen {[(c['cn'], c['serial']) for c in certs]}, wanted r0 then {wanted}")
    if len(listening) != restarts + 1:
        problems.append(f"{len(listening)} https listening lines, wanted {restarts + 1}")
    by_serial = {c["serial"]: c for c in certs}
    timeline = []
    for i, h in enumerate(hups, start=1):
        hup = int(h[1])
        new = by_serial.get(h[3])
        old = certs[i - 1] if i - 1 < len(certs) else None
        took_over = serving[i - 1]
        if new is None or len(listening) <= i:
            continue
        listen = listening[i]
        handover = next((ms(e) for e in log if e.get("event") == "draining"
                         and str(e.get("cause", "")).startswith(f"new process {took_over[4]} ")), None)
        if new["first_ms"] < hup:
            problems.append(f"r{i} presented {hup - new['first_ms']} ms before its SIGHUP")
        rel = lambda t, base: "?" if base is None else f"{t - base:+d}"
        print(f"  r{i}: SIGHUP -> new process listening {listen - hup} ms -> old one hands over "
              f"{rel(handover, listen)} ms; new certificate first presented {new['first_ms'] - hup} ms after SIGHUP, "
              f"{rel(new['first_ms'], listen)} ms after listening, {rel(new['first_ms'], handover)} ms after the handover "
              f"(that handshake's connect began {rel(new['first_dial_ms'], handover)} ms after it); "
              f"old certificate last presented {rel(old['last_ms'], handover)} ms after the handover; "
              f"pids {took_over[3]} -> {took_over[4]}")
        timeline.append({"rotation": i, "listening_after_hup_ms": listen - hup,
                         "handover_after_listening_ms": None if handover is None else handover - listen,
                         "new_first_after_hup_ms": new["first_ms"] - hup,
                         "new_first_after_listening_ms": new["first_ms"] - listen,
                         "new_first_after_handover_ms": None if handover is None else new["first_ms"] - handover,
                         "old_last_after_handover_ms": None if handover is None else old["last_ms"] - handover})
    json.dump(timeline, open(f"{d}/timeline.json", "w"))

if name == "broken":
    hups = {e[2]: e for e in events if e[0] == "hup"}
    serving = {e[2]: e for e in events if e[0] == "serving"}
    r1 = hups["good"][3]
    for step in ("mismatch", "missing"):
        s = serving[step]
        old, now = s[3], s[4]
        lines = log_lines[int(hups[step][4]):int(s[5])]
        failed = [l for l in lines if '"tls_load_failed"' in l]
        if old != now:
            problems.append(f"{step}: pid {old} was replaced by {now}")
        if len(failed) != 1:
            problems.append(f"{step}: {len(failed)} tls_load_failed lines")
        print(f"  {step}: pid {old} before, {now} after; lines logged:")
        for l in lines:
            e = json.loads(l)
            print(f"    {e.get('level')}: {e.get('message')}")
    good = serving["good"]
    seen = {c["serial"]: c for c in certs}
    if good[3] == good[4]:
        problems.append("the good reload after the broken ones did not take over")
    if r1 not in seen:
        problems.append("the good reload's certificate was never presented")
    elif seen[r1]["first_ms"] < int(hups["good"][1]):
        problems.append("the new certificate was presented before the good reload")
    else:
        print(f"  good: pid {good[3]} -> {good[4]}; r1 first presented {seen[r1]['first_ms'] - int(hups['good'][1])} ms after its SIGHUP")

verdict = "PASS" if not problems else "FAIL"
print(f"{verdict}  {name}" + ("" if not problems else ": " + "; ".join(problems)))
sys.exit(0 if not problems else 1)
EOF
}

for scenario in "${SCENARIOS[@]}"; do
    run_scenario "$scenario"
done
echo
echo "$(( ${#SCENARIOS[@]} - FAILED )) passed, $FAILED failed"
exit $((FAILED > 0))
