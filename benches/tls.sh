#!/usr/bin/env bash
# Issue 20's HTTPS comparison: quiesce against nginx and hyper with tokio-rustls
# (benches/peers/hyper-tls), side by side in one run, on one ECDSA P-256 certificate and one
# cipher (TLS 1.3, TLS_AES_128_GCM_SHA256, X25519). Everything listens on and talks to 127.0.0.1
# only. See benches/README.md.
#
#   bash benches/tls.sh                        # full run: REPS=5 DURATION=10s
#   REPS=1 DURATION=2s IDLE=2000 bash benches/tls.sh   # smoke run
#
# Per repetition, for each server (the order rotates from one repetition to the next):
#   K  HTTPS keep-alive GET /plaintext, wrk -t1 -c64: server CPU µs per request, req/s
#   H  a full handshake per request: wrk -t1 -c32 -H 'Connection: close' over TLS, every server
#      with session resumption off (wrk resumes a session whenever a server lets it): server CPU
#      µs per connection
#   then RSS per idle TLS connection: (RSS with IDLE handshaken, answered, idle connections
#      - RSS before) / IDLE, the connections held by benches/hold_idle_tls.go.
# Server CPU is utime + stime of every process of the server (all threads) from /proc/PID/stat,
# over the wrk run; ratios are medians of the paired repetitions (same repetition).
#
# The cipher is forced on the client side, the same for every server: wrk, curl's probes and
# the resumption check use OpenSSL, which reads OPENSSL_CONF: a file here with MinProtocol
# TLSv1.3, Ciphersuites TLS_AES_128_GCM_SHA256, Groups X25519 (given to the clients only, never
# to nginx). The servers keep their default suites; each one's negotiated suite is checked with
# `openssl s_client` before measuring. The idle holder (Go crypto/tls, TLS 1.3) offers
# AES-128-GCM first on AES-NI hardware and X25519 first, which all three servers honour.
#
# Environment: REPS (5), DURATION (10s), WARMUP (2s), IDLE (10000), SERVERS ("quiesce nginx
# hyper-tls"; quiesce is skipped, with a note, when its binary has no --tls-addr), SERVER_CPU (0),
# CLIENT_CPU (1), BASE_PORT (18180: uses BASE_PORT..BASE_PORT+3), PROVIDER (aws-lc-rs or ring: the
# hyper-tls peer's rustls crypto provider, to match quiesce's), QUIESCE_TLS_ARGS (extra quiesce
# arguments; by default `--tls-resumption off` when quiesce has that flag), BAND (0.10, as in
# compare.sh), RESULT (tls: the file under benches/results/), KEEP_WORK (keep the scratch dir).
# Installs wrk, nginx, curl, openssl and golang-go with apt-get when missing (Debian/Ubuntu, root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPS=${REPS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
IDLE=${IDLE:-10000}
SERVERS=${SERVERS:-"quiesce nginx hyper-tls"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18180}
PROVIDER=${PROVIDER:-aws-lc-rs}
BAND=${BAND:-0.10}
C_KEEPALIVE=64 # K connections
C_CLOSE=32     # H connections

COMMAND="REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP IDLE=$IDLE SERVERS=\"$SERVERS\" PROVIDER=$PROVIDER"
COMMAND+=" bash benches/tls.sh"

LOG_TAG=tls
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/benches/lib.sh"
# shellcheck source-path=SCRIPTDIR source=nginx.sh
. "$ROOT/benches/nginx.sh"

# --- tools ---------------------------------------------------------------------------------------
need_tools wrk nginx curl openssl go=golang-go
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
have python3 || die "python3 is needed (the resumption check and the report)"
have taskset || die "taskset (util-linux) is needed"
CLK_TCK=$(getconf CLK_TCK)
(($(nproc) >= 2)) || log "warning: only $(nproc) CPU: server and client will share it"

open_files "$IDLE"
scratch quiesce-tls

# --- build ---------------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PEER_TARGET=$TARGET_DIR/peers
QUIESCE=$TARGET_DIR/release/quiesce
servers=()
for s in $SERVERS; do
    case $s in quiesce | nginx | hyper-tls) ;; *) die "unknown server '$s'" ;; esac
    if [[ $s == quiesce ]]; then
        # The binary's TLS is behind the `tls` feature when Cargo.toml has one.
        features=()
        if sed -n '/^\[features\]/,/^\[/p' Cargo.toml | grep -q '^tls *='; then features=(--features tls); fi
        log "building quiesce (release${features[*]:+, ${features[*]}})"
        cargo build --release --quiet "${features[@]}"
        if ! "$QUIESCE" --help 2>&1 | grep -q -- '--tls-addr'; then
            log "note: $QUIESCE has no --tls-addr (HTTPS not there yet): quiesce skipped"
            continue
        fi
    fi
    servers+=("$s")
done
((${#servers[@]})) || die "no server to measure"
SERVERS="${servers[*]}"
if [[ " $SERVERS " == *" hyper-tls "* ]]; then
    case $PROVIDER in
        aws-lc-rs) pfeatures=() ;;
        ring) pfeatures=(--no-default-features --features ring) ;;
        *) die "PROVIDER is aws-lc-rs or ring, not '$PROVIDER'" ;;
    esac
    log "building peer hyper-tls (release, --locked, $PROVIDER)"
    cargo build --release --quiet --locked "${pfeatures[@]}" --manifest-path benches/peers/hyper-tls/Cargo.toml \
        --target-dir "$PEER_TARGET"
fi
log "building benches/hold_idle_tls.go"
HOLDER_BIN=$WORK/hold_idle_tls
GOCACHE=${GOCACHE:-$WORK/gocache} GO111MODULE=off go build -o "$HOLDER_BIN" benches/hold_idle_tls.go

# --- certificate and client TLS settings ---------------------------------------------------------
CERT=$WORK/cert.pem KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' -keyout "$KEY" -out "$CERT" 2>"$WORK/openssl.log" ||
    die "openssl req: $(cat "$WORK/openssl.log")"
CLIENT_CONF=$WORK/client-openssl.cnf
cat >"$CLIENT_CONF" <<'EOF'
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
Groups = X25519
EOF
client() { OPENSSL_CONF=$CLIENT_CONF "$@"; } # an OpenSSL client with the forced settings
probe() { client curl -s --max-time 1 --cacert "$CERT" "$1"; } # launch's readiness check

# --- servers -------------------------------------------------------------------------------------
declare -A PORT PID RESUMES
i=0
for s in $SERVERS; do
    PORT[$s]=$((BASE_PORT + i))
    i=$((i + 1))
done
QUIESCE_PLAIN_PORT=$((BASE_PORT + 3))
if [[ -z ${QUIESCE_TLS_ARGS+set} ]]; then
    QUIESCE_TLS_ARGS=""
    if [[ " $SERVERS " == *" quiesce "* ]] && "$QUIESCE" --help 2>&1 | grep -q -- '--tls-resumption'; then
        QUIESCE_TLS_ARGS="--tls-resumption off"
    fi
fi
read -r -a quiesce_tls_args <<<"$QUIESCE_TLS_ARGS"

start_server() { # $1 = name; sets PID[$1]
    local s=$1 port=${PORT[$1]} cmd
    case $s in
        quiesce)
            # -qq: errors only. wrk sends the address 127.0.0.1 as SNI, which rustls answers with a
            # warning per handshake (RFC 6066 allows no IP literal there); at -q or the default level
            # H would measure a log line per connection.
            cmd=("$QUIESCE" -qq --addr "127.0.0.1:$QUIESCE_PLAIN_PORT" --tls-addr "127.0.0.1:$port" --tls-cert "$CERT"
                --tls-key "$KEY" "${quiesce_tls_args[@]}")
            if "$QUIESCE" --help | grep -q -- '--max-connections'; then cmd+=(--max-connections $((IDLE + 1024))); fi
            ;;
        nginx)
            nginx_conf "$WORK/nginx" "$port" on $((IDLE + 1024)) "$NOFILE" "$CERT" "$KEY"
            cmd=("$NGINX" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf")
            ;;
        hyper-tls) cmd=("$PEER_TARGET/release/peer-hyper-tls" --addr "127.0.0.1:$port" --cert "$CERT" --key "$KEY") ;;
    esac
    launch "$s" "https://127.0.0.1:$port/plaintext" "${cmd[@]}"
}

# check_tls NAME: what the server negotiates with the forced client settings (protocol, suite,
# group, ALPN) -> tls.tsv; whether it answers `Connection: close` with `Connection: close` (wrk
# opens a new connection after a response only when the response says so: H measures a handshake
# per request only then); and whether it lets a client resume (RESUMES[NAME]: yes/no). The
# resumption check reads a whole response before taking the session, so TLS 1.3 tickets sent
# after the handshake are in it; then it connects again offering that session.
check_tls() {
    local s=$1 port=${PORT[$1]} out="$WORK/s_client.$1.txt" proto suite group alpn closes resumes
    client openssl s_client -connect "127.0.0.1:$port" -servername localhost -alpn http/1.1 -CAfile "$CERT" \
        </dev/null >"$out" 2>&1 || true
    suite=$(awk '/^New, / {print $NF; exit}' "$out")
    proto=$(awk '/^New, / {sub(/,$/, "", $2); print $2; exit}' "$out")
    group=$(awk -F': ' '/^Server Temp Key/ {print $2; exit}' "$out")
    alpn=$(awk -F': ' '/^ALPN protocol/ {print $2; exit}' "$out")
    [[ $suite == TLS_AES_128_GCM_SHA256 ]] || die "$s negotiated '${suite:-nothing}', not TLS_AES_128_GCM_SHA256 ($out)"
    closes=no
    client curl -s -D - -o /dev/null --cacert "$CERT" -H 'Connection: close' "https://127.0.0.1:$port/plaintext" |
        grep -qi '^connection: *close' && closes=yes
    [[ $closes == yes ]] || die "$s does not answer 'Connection: close' with 'Connection: close': H would not measure handshakes"
    resumes=$(client python3 - "$port" "$CERT" <<'PYEOF'
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
def once(session=None):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1",
                        session=session)
    s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    while s.recv(4096):
        pass
    reused, session = s.session_reused, s.session
    s.close()
    return reused, session
_, session = once()
print("yes" if once(session)[0] else "no")
PYEOF
    ) || die "resumption check failed for $s"
    RESUMES[$s]=$resumes
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$proto" "$suite" "$group" "$alpn" "$closes" "$resumes" >>"$WORK/tls.tsv"
    log "  $s: $proto $suite, $group, ALPN ${alpn:-none}, closes on Connection: close: $closes, resumes a session: $resumes"
    [[ $resumes == no ]] || log "  warning: $s lets clients resume: its H figures are resumptions, not full handshakes"
}

# run_wrk NAME SCENARIO DURATION OUTFILE: wrk pinned to CLIENT_CPU, with the forced client settings.
run_wrk() {
    local s=$1 sc=$2 d=$3 out=$4 url="https://127.0.0.1:${PORT[$1]}/plaintext" args
    case $sc in
        K | warm) args=(-c "$C_KEEPALIVE" "$url") ;;
        H) args=(-c "$C_CLOSE" -H 'Connection: close' "$url") ;;
    esac
    client taskset -c "$CLIENT_CPU" wrk -t1 -d "$d" --timeout 2s "${args[@]}" >"$out" 2>&1 ||
        die "wrk failed for $s $sc: $(tail -3 "$out")"
}

# measure NAME SCENARIO REP: one wrk run with CPU and accepted-connection deltas -> runs.tsv
measure() {
    local s=$1 sc=$2 rep=$3 out="$WORK/wrk.$1.$2.$3.txt" t0 t1 u0 u1 requests rps errors
    read -r t0 u0 < <(cpu_ticks "$s")
    run_wrk "$s" "$sc" "$DURATION" "$out"
    read -r t1 u1 < <(cpu_ticks "$s")
    requests=$(wrk_requests "$out")
    rps=$(wrk_rps "$out")
    errors=$(wrk_errors "$out")
    [[ -n $requests && $requests -gt 0 ]] || die "no requests completed: $s $sc ($(tail -3 "$out"))"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$s" "$sc" "$rps" "$requests" "$((t1 - t0))" "$((u1 - u0))" \
        "$errors" >>"$WORK/runs.tsv"
    log "  $s $sc: $rps req/s, cpu $((t1 - t0)) ticks, $errors errors"
}

# idle_rss NAME REP: RSS before and with IDLE idle TLS connections -> rss.tsv
idle_rss() {
    local s=$1 rep=$2 out="$WORK/hold.$1.$2.txt" rss0 rss1 holder
    sleep 0.5 # let the load's connections close
    rss0=$(rss_kb "$s")
    taskset -c "$CLIENT_CPU" "$HOLDER_BIN" -port "${PORT[$s]}" -count "$IDLE" -cacert "$CERT" -timeout 120s \
        -hold 900s >"$out" 2>&1 &
    holder=$!
    STARTED+=("$holder")
    await_ready "$s" "$holder" "$out"
    sleep 0.3
    rss1=$(rss_kb "$s")
    printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$s" "$rss0" "$rss1" "$IDLE" >>"$WORK/rss.tsv"
    log "  $s RSS: $rss0 kB before, $rss1 kB with $IDLE idle TLS connections"
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    forget "$holder"
}

# --- run -----------------------------------------------------------------------------------------
printf 'server\tprotocol\tsuite\tgroup\talpn\tcloses\tresumes\n' >"$WORK/tls.tsv"
printf 'rep\tserver\tscenario\trps\trequests\tcpu_ticks\tuser_ticks\terrors\n' >"$WORK/runs.tsv"
printf 'rep\tserver\trss0_kb\trss1_kb\tn\n' >"$WORK/rss.tsv"

DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
log "what each server negotiates with the clients' settings"
for s in $SERVERS; do
    start_server "$s"
    check_tls "$s"
    stop_server "$s"
done
for rep in $(seq 1 "$REPS"); do
    start_rep "$rep"
    for sc in K H; do
        for s in "${ORDER[@]}"; do measure "$s" "$sc" "$rep"; done
    done
    for s in "${ORDER[@]}"; do
        idle_rss "$s" "$rep"
        stop_server "$s"
    done
done

# --- report --------------------------------------------------------------------------------------
mkdir -p "$ROOT/benches/results"
versions=$(
    printf 'quiesce %s, ' "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
    printf '%s (%s), ' "$("$NGINX" -v 2>&1 | sed 's/.*version: //')" "$("$NGINX" -V 2>&1 |
        sed -n 's/^built with \(OpenSSL [^ ]*\).*/\1/p')"
    printf 'hyper-tls peer: %s, ' "$(awk '/^name = "(hyper|rustls|tokio-rustls)"$/ {n = $3; getline; printf "%s %s ", n, $3}' \
        benches/peers/hyper-tls/Cargo.lock | tr -d '"')"
    printf 'provider %s, ' "$PROVIDER"
    printf '%s, ' "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    printf '%s, %s' "$(openssl version | awk '{print $1, $2}')" "$(rustc --version | awk '{print $1, $2}')"
)
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
python3 - "$WORK" "$CLK_TCK" "$SERVERS" "$BAND" >"$WORK/report.md" <<'PYEOF'
import csv, statistics, sys
work, clk, servers, band = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), float(sys.argv[4])
us_per_tick = 1e6 / clk

def rows(name):
    with open(f"{work}/{name}") as f:
        return list(csv.DictReader(f, delimiter="\t"))

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, nd=0):
    return "n/a" if x is None else f"{x:,.{nd}f}"

runs, rss, tls = rows("runs.tsv"), rows("rss.tsv"), {r["server"]: r for r in rows("tls.tsv")}
scen = {"K": "HTTPS keep-alive, 64 conns", "H": "full handshake per request (Connection: close), 32 conns"}
peers = [s for s in servers if s != "quiesce"]

def value(r, k):
    if k == "cpu":
        return int(r["cpu_ticks"]) * us_per_tick / int(r["requests"])
    if k == "user":
        return int(r["user_ticks"]) * us_per_tick / int(r["requests"])
    return float(r["rps"])

def speed(s, sc):
    """Each run's req/s relative to its server's median in the scenario (compare.sh's BAND test)."""
    rs = {r["rep"]: float(r["rps"]) for r in runs if r["server"] == s and r["scenario"] == sc}
    m = statistics.median(rs.values()) if rs else 0
    return {rep: v / m for rep, v in rs.items()} if m else {}

def pairs(peer, sc, k):
    by = {(r["server"], r["rep"]): value(r, k) for r in runs if r["scenario"] == sc}
    sq, sp = speed("quiesce", sc), speed(peer, sc)
    out = []
    for rep in sorted({rep for (_, rep) in by}, key=int):
        if ("quiesce", rep) in by and (peer, rep) in by and by[peer, rep]:
            same = rep in sq and rep in sp and abs(sq[rep] / sp[rep] - 1) <= band
            out.append((by["quiesce", rep] / by[peer, rep], same))
    return out

def paired(peer, sc, k):
    ps = pairs(peer, sc, k)
    return med([x for x, ok in ps if ok] or [x for x, _ in ps])

def shown(peer, sc, k):
    return ", ".join(f"{x:.2f}" + ("" if ok else "*") for x, ok in pairs(peer, sc, k)) or "(none)"

print("What each server negotiated with the clients' settings (openssl s_client), whether it answered")
print("`Connection: close` with `Connection: close` (then wrk reconnects after each response), and")
print("whether it let a client resume a session (Python ssl, the session taken after a whole response):")
print()
print("| server | protocol | suite | group | ALPN | closes | resumes |")
print("|---|---|---|---|---|---|---|")
for s in servers:
    t = tls.get(s, {})
    print(f"| {s} | {t.get('protocol', '?')} | {t.get('suite', '?')} | {t.get('group', '?')} | {t.get('alpn') or '—'} "
          f"| {t.get('closes', '?')} | {t.get('resumes', '?')} |")
print()
head = "| server | scenario | req/s | CPU µs/req | of it user | errors |"
head += "".join(f" quiesce/{p} CPU | quiesce/{p} req/s |" for p in peers) if "quiesce" in servers else ""
print(head)
print("|---|---|--:|--:|--:|--:|" + ("--:|--:|" * len(peers) if "quiesce" in servers else ""))
for sc in scen:
    for s in servers:
        rs = [r for r in runs if r["server"] == s and r["scenario"] == sc]
        if not rs:
            continue
        line = (f"| {s} | {sc} {scen[sc]} | {fmt(med([value(r, 'rps') for r in rs]))} | "
                f"{fmt(med([value(r, 'cpu') for r in rs]), 2)} | {fmt(med([value(r, 'user') for r in rs]), 2)} | "
                f"{sum(int(r['errors']) for r in rs)} |")
        if "quiesce" in servers:
            for p in peers:
                line += (" — | — |" if s != "quiesce" else
                         f" {fmt(paired(p, sc, 'cpu'), 2)} | {fmt(paired(p, sc, 'rps'), 2)} |")
        print(line)
print()
print("CPU µs/req: server utime+stime (every process and thread) over the wrk run / requests wrk completed; "
      "in H every request is a connection, so it is CPU µs per full handshake + request + close. 'of it "
      "user': the utime part. Medians over the repetitions; quiesce/peer columns are medians "
      "of the per-repetition ratios, leaving out a pair whose two runs' req/s, each relative to its "
      f"server's median, differ by more than {band:.0%} (marked * in the targets' table).")
print()
print("| server | RSS before (KiB) | RSS with idle TLS conns (KiB) | idle conns | bytes per idle TLS conn |"
      + (" quiesce/server |" if "quiesce" in servers else ""))
print("|---|--:|--:|--:|--:|" + ("--:|" if "quiesce" in servers else ""))
per_conn = {}
for s in servers:
    per_conn[s] = {r["rep"]: (int(r["rss1_kb"]) - int(r["rss0_kb"])) * 1024 / int(r["n"]) for r in rss
                   if r["server"] == s}

def rss_pairs(peer):
    q, p = per_conn.get("quiesce", {}), per_conn.get(peer, {})
    return [q[rep] / p[rep] for rep in sorted(q, key=int) if rep in p and p[rep] > 0]

for s in servers:
    rs = [r for r in rss if r["server"] == s]
    if not rs:
        continue
    line = (f"| {s} | {fmt(med([int(r['rss0_kb']) for r in rs]))} | {fmt(med([int(r['rss1_kb']) for r in rs]))} | "
            f"{int(rs[0]['n']):,} | {fmt(med(list(per_conn[s].values())))} |")
    if "quiesce" in servers:
        line += " — |" if s == "quiesce" else f" {fmt(med(rss_pairs(s)), 2)} |"
    print(line)
print()
print("Bytes per idle TLS connection: (RSS with the idle connections − RSS before) / connections, "
      "RSS summed over the server's processes (nginx: master + worker); each connection handshaken "
      "(TLS 1.3), answered once, then idle (benches/hold_idle_tls.go).")
print()
if "quiesce" in servers:
    checks = []
    if "nginx" in peers:
        checks.append(("K CPU/req ≤ 1.0× nginx", paired("nginx", "K", "cpu"), shown("nginx", "K", "cpu"), 1.0))
    if "hyper-tls" in peers:
        checks.append(("K CPU/req ≤ 0.8× hyper-tls", paired("hyper-tls", "K", "cpu"), shown("hyper-tls", "K", "cpu"), 0.8))
    if "nginx" in peers:
        checks.append(("H CPU/conn ≤ 1.0× nginx", paired("nginx", "H", "cpu"), shown("nginx", "H", "cpu"), 1.0))
        rp = rss_pairs("nginx")
        checks.append(("RSS per idle TLS conn ≤ nginx's", med(rp), ", ".join(f"{x:.2f}" for x in rp), 1.0))
    if "hyper-tls" in peers:
        checks.append(("(information) H CPU/conn vs hyper-tls", paired("hyper-tls", "H", "cpu"),
                       shown("hyper-tls", "H", "cpu"), None))
        rp = rss_pairs("hyper-tls")
        checks.append(("(information) RSS per idle TLS conn vs hyper-tls", med(rp), ", ".join(f"{x:.2f}" for x in rp), None))
    print("| target (issue 20) | median quiesce/peer | per repetition | met |")
    print("|---|--:|---|---|")
    for name, v, each, lim in checks:
        ok = "—" if lim is None or v is None else ("yes" if v <= lim else "NO")
        if name.startswith("H") and tls.get("quiesce", {}).get("resumes") == "yes":
            ok = "n/a: quiesce let clients resume"
        print(f"| {name} | {fmt(v, 2)} | {each or '(none)'} | {ok} |")
else:
    print("quiesce was not measured (no HTTPS in its binary): no ratios.")
PYEOF

{
    echo "# HTTPS: quiesce vs nginx / hyper + tokio-rustls"
    echo
    echo "- date: $DATE"
    echo "- nproc: $(nproc); kernel: $(uname -r); CPU: $cpu_model"
    echo "- load average at start: $LOADAVG"
    echo "- versions: $versions"
    echo "- command: \`$COMMAND\`${QUIESCE_TLS_ARGS:+ (quiesce with \`$QUIESCE_TLS_ARGS\`)}"
    echo "- certificate: ECDSA P-256, self-signed; clients forced to TLS 1.3, TLS_AES_128_GCM_SHA256, X25519"
    echo "- servers pinned to CPU $SERVER_CPU, wrk -t1 pinned to CPU $CLIENT_CPU; reps: $REPS, duration: $DURATION"
    echo
    cat "$WORK/report.md"
} >"$WORK/summary.md"
cat "$WORK/summary.md"
{
    cat "$WORK/summary.md"
    raw_numbers tls runs rss
} >"$ROOT/benches/results/${RESULT:-tls}.md"
log "raw numbers: benches/results/${RESULT:-tls}.md"
