# Shared by deploy/tls-test/clients.sh, restarts.sh and handshake_drain.sh (sourced, not run):
# the tools they need, certificates, ports, starting and stopping quiesce, waiting for a server
# and for processes. Everything listens on 127.0.0.1 only. Expects ROOT (the repository) and OUT
# (where results go) to be set.

# Installs what is missing (Debian's packages); builds quiesce and the Go clients.
setup() {
    local need=()
    command -v openssl >/dev/null || need+=(openssl)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    command -v go >/dev/null || need+=(golang-go)
    local pkg
    for pkg in "$@"; do
        case $pkg in testssl.sh) command -v testssl >/dev/null || need+=(testssl.sh) ;; esac
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    mkdir -p "$OUT"
    (cd "$ROOT" && cargo build --release --quiet)
    QUIESCE=$ROOT/target/release/quiesce
    GOCACHE=${GOCACHE:-$ROOT/target/tls-test/gocache} GOFLAGS=-mod=mod \
        go build -o "$ROOT/target/tls-test/tlscheck" "$ROOT/deploy/tls-test/tlscheck.go" "$ROOT/deploy/tls-test/tlsend.go"
    TLSCHECK=$ROOT/target/tls-test/tlscheck
    PYCLIENT=$ROOT/deploy/tls-test/pyclient.py
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/quiesce-tls.XXXXXX")
    PIDS=()
    trap cleanup EXIT
}

# Stops every quiesce this script started or learned of (by pid, after checking that the pid
# is still one of ours: its command line names our work directory), and the clients.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK/"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}

# A free port on 127.0.0.1, never one of the benchmarks' (18080-18089, 18443).
free_port() {
    python3 - <<'EOF'
import socket
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if not (18080 <= port <= 18089 or port == 18443):
        print(port)
        break
EOF
}

# make_cert NAME ec|rsa CN: a self-signed certificate for localhost and 127.0.0.1, valid a
# year, in $WORK/NAME.pem, its key as PKCS#8 in $WORK/NAME.key, and the same key in the
# other format rustls reads: SEC1 (EC) in $WORK/NAME-sec1.key, PKCS#1 (RSA) in
# $WORK/NAME-pkcs1.key. Each certificate gets a fresh random serial.
make_cert() {
    local name=$1 kind=$2 cn=$3
    case $kind in
        ec)
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$name.key" 2>/dev/null
            openssl ec -in "$WORK/$name.key" -out "$WORK/$name-sec1.key" 2>/dev/null ;;
        rsa)
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/$name.key" 2>/dev/null
            openssl rsa -in "$WORK/$name.key" -traditional -out "$WORK/$name-pkcs1.key" 2>/dev/null ;;
    esac
    openssl req -x509 -new -key "$WORK/$name.key" -out "$WORK/$name.pem" -days 365 -subj "/CN=$cn" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
}

# The serial of a certificate file, lowercase hex without leading zeros (as Go prints it).
cert_serial() {
    openssl x509 -in "$1" -noout -serial | sed -e 's/^serial=//' -e 's/^0*//' | tr 'A-F' 'a-f'
}

# start_quiesce LOG PLAIN_PORT TLS_PORT CERT KEY [ARGS...]: starts quiesce serving plain HTTP
# and HTTPS, JSON logs to LOG; returns once /healthz answers. Its pid is in $STARTED.
start_quiesce() {
    local log=$1 plain=$2 tls=$3 cert=$4 key=$5
    shift 5
    "$QUIESCE" --addr "127.0.0.1:$plain" --tls-addr "127.0.0.1:$tls" --tls-cert "$cert" --tls-key "$key" \
        --log-format json "$@" 2>>"$log" &
    STARTED=$!
    PIDS+=("$STARTED")
    wait_answer "http://127.0.0.1:$plain/healthz"
}

# wait_answer URL [CURL ARGS...]: until a GET of URL gets an answer (10 s at most).
wait_answer() {
    local url=$1 _
    shift
    for _ in $(seq 1 200); do
        curl -s --max-time 1 -o /dev/null "$@" "$url" && return 0
        sleep 0.05
    done
    echo "nothing answers on $url" >&2
    return 1
}

# The pid of the quiesce that accepts new connections on plain port $1 now.
serving_pid() {
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | sed -n 's/^quiesce_info{.*pid="\([0-9]*\)".*/\1/p'
}

# wait_gone SECONDS PID...: until each PID has exited, waiting SECONDS at most for each.
wait_gone() {
    local limit=$(($1 * 20)) pid _
    shift
    for pid in "$@"; do
        for _ in $(seq 1 "$limit"); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    done
}

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }

# Verdicts: check NAME OK|FAIL DETAIL. The table is printed by verdicts; FAILED counts.
FAILED=0
VERDICTS=()
check() {
    local name=$1 result=$2 detail=$3
    [ "$result" = PASS ] || FAILED=$((FAILED + 1))
    VERDICTS+=("$result|$name|$detail")
    printf '%-4s  %s: %s\n' "$result" "$name" "$detail"
}

verdicts() {
    local passed=$(( ${#VERDICTS[@]} - FAILED ))
    echo
    echo "$passed passed, $FAILED failed"
    printf '%s\n' "${VERDICTS[@]}" >"$OUT/verdicts.txt"
}
