#!/usr/bin/env bash
# Real HTTPS clients against target/release/quiesce: curl, openssl s_client, Python's ssl and
# Go's crypto/tls, each judged PASS or FAIL with the reason. Exit 1 on any FAIL.
#
#   bash deploy/tls-test/clients.sh
#
# What it checks (deploy/tls-test/README.md says why each matters):
#   - the three private key formats rustls reads load and serve: PKCS#8 and SEC1 (EC P-256),
#     PKCS#1 (RSA 2048);
#   - curl over TLS 1.3 and TLS 1.2 (ECDSA and RSA), ALPN http/1.1 (also when curl offers h2);
#   - openssl s_client over TLS 1.2 and 1.3: the chain verifies, ALPN http/1.1, SNI acknowledged;
#   - Python's http.client and Go's crypto/tls over both versions;
#   - the drain: s_client, Python and Go idle connections (TLS 1.2 and 1.3) at SIGTERM each read
#     close_notify before the end; and the control that proves they can tell: a server killed
#     with SIGKILL is seen as a ragged EOF by each;
#   - plain HTTP to the HTTPS port gets a 400 saying so; garbage gets an alert and the end;
#   - a ClientHello sent a byte a second, and a connection that says nothing, are cut by
#     --handshake-timeout (HANDSHAKE_TIMEOUT, default 2s; the time it took is printed);
#   - a certificate and key that do not match, or a missing key, stop quiesce at startup with
#     one clear log line.
#
# Environment: HANDSHAKE_TIMEOUT (2s), OUT (target/tls-test/clients). Installs openssl, curl,
# python3 and golang-go with apt-get when missing (Debian).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/tls-test/clients}
HANDSHAKE_TIMEOUT=${HANDSHAKE_TIMEOUT:-2s}
. deploy/tls-test/common.sh
setup
rm -f "$OUT"/*.txt "$OUT"/*.log

# Certificates: ECDSA P-256 and RSA 2048, each key also in its format of old (SEC1, PKCS#1).
make_cert ec ec localhost
make_cert rsa rsa localhost
make_cert other ec localhost
for pair in "ec.key:BEGIN PRIVATE KEY:PKCS#8 (EC)" "ec-sec1.key:BEGIN EC PRIVATE KEY:SEC1 (EC)" \
    "rsa-pkcs1.key:BEGIN RSA PRIVATE KEY:PKCS#1 (RSA)"; do
    IFS=: read -r file header what <<<"$pair"
    if head -1 "$WORK/$file" | grep -q -- "-----$header-----"; then
        check "key file $what" PASS "$file starts with '$header'"
    else
        check "key file $what" FAIL "$file starts with '$(head -1 "$WORK/$file")'"
    fi
done

# Three servers: EC with a PKCS#8 key, EC with a SEC1 key, RSA with a PKCS#1 key.
declare -A PLAIN TLS PID
for name in ec sec1 rsa; do
    PLAIN[$name]=$(free_port)
    TLS[$name]=$(free_port)
    case $name in
        ec) cert=$WORK/ec.pem key=$WORK/ec.key ;;
        sec1) cert=$WORK/ec.pem key=$WORK/ec-sec1.key ;;
        rsa) cert=$WORK/rsa.pem key=$WORK/rsa-pkcs1.key ;;
    esac
    start_quiesce "$OUT/$name.log" "${PLAIN[$name]}" "${TLS[$name]}" "$cert" "$key" \
        --handshake-timeout "$HANDSHAKE_TIMEOUT" --access-log "$OUT/$name.access.log"
    PID[$name]=$STARTED
done

# curl_https NAME SERVER CA EXPECT_VERSION [CURL ARGS...]: GET /plaintext, checks the body,
# the protocol version, ALPN http/1.1 and that curl verified the chain.
curl_https() {
    local name=$1 server=$2 ca=$3 version=$4
    shift 4
    local port=${TLS[$server]} body trace
    trace=$OUT/curl-${name//[^A-Za-z0-9.]/_}.txt
    if ! body=$(curl -sS -v --max-time 10 --cacert "$ca" --resolve "localhost:$port:127.0.0.1" "$@" \
        "https://localhost:$port/plaintext" 2>"$trace"); then
        check "$name" FAIL "curl failed: $(grep -m1 'curl:' "$trace")"
        return
    fi
    local got_version alpn
    got_version=$(sed -n 's/^\* SSL connection using \([^ ]*\) \/ \(.*\)$/\1 \2/p' "$trace")
    alpn=$(sed -n 's/^\* ALPN: server accepted \(.*\)$/\1/p' "$trace")
    if [ "$body" = "Hello, World!" ] && [[ $got_version == "$version "* ]] && [ "$alpn" = http/1.1 ]; then
        check "$name" PASS "$got_version, ALPN $alpn, chain verified, 200 '$body'"
    else
        check "$name" FAIL "body '$body', '$got_version' (wanted $version), ALPN '$alpn'"
    fi
}
curl_https "curl, PKCS#8 EC key, TLS 1.3" ec "$WORK/ec.pem" TLSv1.3 --http1.1
curl_https "curl, SEC1 EC key, TLS 1.3" sec1 "$WORK/ec.pem" TLSv1.3 --http1.1
curl_https "curl, PKCS#1 RSA key, TLS 1.3" rsa "$WORK/rsa.pem" TLSv1.3 --http1.1
curl_https "curl, EC, TLS 1.2" ec "$WORK/ec.pem" TLSv1.2 --http1.1 --tlsv1.2 --tls-max 1.2
curl_https "curl, RSA, TLS 1.2" rsa "$WORK/rsa.pem" TLSv1.2 --http1.1 --tlsv1.2 --tls-max 1.2
curl_https "curl offering h2 and http/1.1" ec "$WORK/ec.pem" TLSv1.3
# A certificate the client does not trust is refused by the client (the server is not at fault,
# but the check proves --cacert is what made the others pass).
if curl -sS --max-time 10 --cacert "$WORK/other.pem" --resolve "localhost:${TLS[ec]}:127.0.0.1" \
    "https://localhost:${TLS[ec]}/plaintext" >/dev/null 2>"$OUT/curl-untrusted.txt"; then
    check "curl refuses a certificate it does not trust" FAIL "it accepted it"
else
    check "curl refuses a certificate it does not trust" PASS "$(head -1 "$OUT/curl-untrusted.txt")"
fi

# Plain HTTP to the HTTPS port.
status=$(curl -sS --max-time 10 -o "$OUT/plain-http.txt" -w '%{http_code}' "http://127.0.0.1:${TLS[ec]}/plaintext" || true)
if [ "$status" = 400 ] && grep -q HTTPS "$OUT/plain-http.txt"; then
    check "plain HTTP to the HTTPS port" PASS "400, body '$(tr -d '\n' <"$OUT/plain-http.txt")'"
else
    check "plain HTTP to the HTTPS port" FAIL "status '$status', body '$(head -c 100 "$OUT/plain-http.txt")'"
fi

# One-shot clients: Python's http.client and Go.
py_get() {
    local name=$1 server=$2 ca=$3 line
    if line=$(python3 "$PYCLIENT" get "${TLS[$server]}" "$ca" 2>&1); then
        check "$name" PASS "$line"
    else
        check "$name" FAIL "$line"
    fi
}
py_get "Python http.client, EC" ec "$WORK/ec.pem"
py_get "Python http.client, RSA" rsa "$WORK/rsa.pem"
go_probe() {
    local name=$1 server=$2 ca=$3 want=$4
    shift 4
    local line
    if line=$("$TLSCHECK" probe -addr "127.0.0.1:${TLS[$server]}" -roots "$ca" "$@" 2>&1) &&
        [[ $line == "version=$want "*"alpn=http/1.1 "* ]]; then
        check "$name" PASS "$line"
    else
        check "$name" FAIL "$line"
    fi
}
go_probe "Go crypto/tls, EC, TLS 1.3" ec "$WORK/ec.pem" TLSv1.3 -tls 1.3
go_probe "Go crypto/tls, EC, TLS 1.2" ec "$WORK/ec.pem" TLSv1.2 -tls 1.2
go_probe "Go crypto/tls, RSA, TLS 1.3" rsa "$WORK/rsa.pem" TLSv1.3 -tls 1.3
go_probe "Go crypto/tls, RSA, TLS 1.2" rsa "$WORK/rsa.pem" TLSv1.2 -tls 1.2

# Idle connections of every client, opened on SERVER; returns once each has had its answer.
# s_client reads a request from a file and, with -ign_eof, keeps reading after it: it prints
# "closed" when SSL_read ends with close_notify (SSL_ERROR_ZERO_RETURN), an "unexpected eof"
# error after a ragged end; -msg shows the alert itself.
printf 'GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n' >"$WORK/request"
IDLE=()
IDLE_PIDS=()
open_idle() { # TAG SERVER CA
    local tag=$1 port=${TLS[$2]} ca=$3 v
    for v in 1.2 1.3; do
        openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$ca" -verify_return_error \
            -alpn http/1.1 "-tls1_${v#1.}" -tlsextdebug -msg -ign_eof <"$WORK/request" >"$OUT/$tag-s_client-$v.txt" 2>&1 &
        IDLE_PIDS+=($!)
        IDLE+=("$tag-s_client-$v")
        python3 "$PYCLIENT" idle "$port" "$ca" "$v" >"$OUT/$tag-python-$v.txt" 2>&1 &
        IDLE_PIDS+=($!)
        IDLE+=("$tag-python-$v")
        "$TLSCHECK" idle -addr "127.0.0.1:$port" -roots "$ca" -tls "$v" >"$OUT/$tag-go-$v.txt" 2>&1 &
        IDLE_PIDS+=($!)
        IDLE+=("$tag-go-$v")
    done
    local f _
    for _ in $(seq 1 200); do
        local ready=0 total=0
        for f in "${IDLE[@]}"; do
            [[ $f == "$tag-"* ]] || continue
            total=$((total + 1))
            if grep -q -e '^ready' -e 'Hello, World!' "$OUT/$f.txt" 2>/dev/null; then ready=$((ready + 1)); fi
        done
        [ "$ready" = "$total" ] && return 0
        sleep 0.05
    done
    echo "not every idle client got its answer" >&2
}
# judge_idle TAG WANT: each idle client of TAG must have ended with WANT (close_notify or
# ragged_eof); s_client's verdict comes from its output, the others print theirs.
judge_idle() {
    local tag=$1 want=$2 f file got
    for f in "${IDLE[@]}"; do
        [[ $f == "$tag-"* ]] || continue
        file=$OUT/$f.txt
        case $f in
            *s_client*)
                if grep -q '^closed$' "$file" && grep -q '<<< TLS 1.[23], Alert \[length 0002\], warning close_notify' "$file"; then
                    got=close_notify
                elif grep -q 'unexpected eof while reading' "$file"; then
                    got=ragged_eof
                else
                    got="unknown: $(tail -c 200 "$file" | tr '\n' ' ')"
                fi ;;
            *) got=$(tail -1 "$file") ;;
        esac
        local what=${f#"$tag-"}
        if [[ $got == "$want"* ]]; then
            check "$tag: ${what//-/ }" PASS "$got"
        else
            check "$tag: ${what//-/ }" FAIL "wanted $want, got $got"
        fi
    done
}

# SNI: s_client sent it; the server's acknowledgement (an empty server_name extension) proves
# it was read. ALPN and verification as s_client reports them.
open_idle drain ec "$WORK/ec.pem"
for v in 1.2 1.3; do
    file=$OUT/drain-s_client-$v.txt
    sni=$(grep -c 'TLS server extension "server name" (id=0), len=0' "$file" || true)
    alpn=$(sed -n 's/^ALPN protocol: //p' "$file" | head -1)
    proto=$(sed -n 's/^ *Protocol *: //p' "$file" | head -1)
    verify=$(sed -n 's/^ *Verify return code: //p' "$file" | head -1)
    if [ "$sni" -ge 1 ] && [ "$alpn" = http/1.1 ] && [ "$proto" = "TLSv$v" ] && [ "$verify" = "0 (ok)" ]; then
        check "s_client TLS $v handshake" PASS "$proto, ALPN $alpn, SNI acknowledged, verify $verify"
    else
        check "s_client TLS $v handshake" FAIL "protocol '$proto', ALPN '$alpn', SNI acks $sni, verify '$verify'"
    fi
done

# The drain: SIGTERM with every idle client waiting.
kill -TERM "${PID[ec]}"
wait "${PID[ec]}" && ec_status=0 || ec_status=$?
# Waits (at most 30 s each: each client gives up after 20 s) for the idle clients to end.
wait_idle() {
    wait_gone 30 "${IDLE_PIDS[@]}"
    IDLE_PIDS=()
}
wait_idle
judge_idle drain close_notify
summary=$(grep '"event":"shutdown"' "$OUT/ec.log" | tail -1)
if [ "$ec_status" = 0 ] && [[ $summary == *'"outcome":"drained"'* ]]; then
    check "drain of the idle TLS connections" PASS "exit 0; $(grep -o '"tls":{[^}]*}' <<<"$summary")"
else
    check "drain of the idle TLS connections" FAIL "exit $ec_status; $summary"
fi

# The control: the same clients see a server killed without close_notify as a ragged end.
open_idle control rsa "$WORK/rsa.pem"
kill -KILL "${PID[rsa]}"
wait "${PID[rsa]}" 2>/dev/null || true
wait_idle
judge_idle control ragged_eof

# Hostile input, on the SEC1 server.
if line=$(python3 "$PYCLIENT" garbage "${TLS[sec1]}" 2>&1); then
    check "garbage to the HTTPS port" PASS "$line"
else
    check "garbage to the HTTPS port" FAIL "$line"
fi
limit=$(python3 -c "import re,sys; m=re.fullmatch(r'(\d+)(ms|s)', sys.argv[1]); print(int(m[1])/(1000 if m[2]=='ms' else 1))" "$HANDSHAKE_TIMEOUT")
for what in slowhello silent; do
    case $what in
        slowhello) name="ClientHello at a byte a second" args=("$WORK/ec.pem" 1) ;;
        silent) name="connection that says nothing" args=() ;;
    esac
    line=$(python3 "$PYCLIENT" "$what" "${TLS[sec1]}" "${args[@]}" 2>&1) || true
    took=$(sed -n 's/^closed_after=\([0-9.]*\)s.*/\1/p' <<<"$line")
    # Judged loosely (the machine is noisy): closed, and within three times the timeout.
    if [ -n "$took" ] && [[ $line != *"end=open"* ]] && python3 -c "import sys; sys.exit(not float(sys.argv[1]) <= 3 * float(sys.argv[2]))" "$took" "$limit"; then
        check "$name, --handshake-timeout $HANDSHAKE_TIMEOUT" PASS "$line"
    else
        check "$name, --handshake-timeout $HANDSHAKE_TIMEOUT" FAIL "$line"
    fi
done
failed_metrics=$(curl -s "http://127.0.0.1:${PLAIN[sec1]}/metrics" | grep '^quiesce_tls_handshakes_failed_total' | grep -v ' 0$' | tr '\n' ' ')
echo "      handshake failures counted by the SEC1 server: $failed_metrics"

# A certificate and key that do not match, and a missing key: quiesce refuses to start.
startup_refused() { # NAME CERT KEY
    local name=$1 log=$OUT/refused-${1//[^A-Za-z0-9.]/_}.log status lines
    timeout 10 "$QUIESCE" --addr "127.0.0.1:$(free_port)" --tls-addr "127.0.0.1:$(free_port)" --tls-cert "$2" \
        --tls-key "$3" --log-format json 2>"$log" && status=0 || status=$?
    lines=$(grep -c '"event":"tls_load_failed"' "$log" || true)
    if [ "$status" = 1 ] && [ "$lines" = 1 ]; then
        check "startup with $name" PASS "exit 1: $(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["message"])' <"$log")"
    else
        check "startup with $name" FAIL "exit $status, $lines tls_load_failed lines: $(head -c 300 "$log")"
    fi
}
startup_refused "a key that does not match the certificate" "$WORK/ec.pem" "$WORK/other.key"
startup_refused "a missing key file" "$WORK/ec.pem" "$WORK/missing.key"
startup_refused "an RSA key for an EC certificate" "$WORK/ec.pem" "$WORK/rsa.key"

# The access log: does it name the SNI? (Issue 20 asks for it; reported, not judged here.)
if grep -q '"sni"' "$OUT/ec.access.log"; then
    echo "      access log names the SNI: $(grep -m1 -o '"sni":"[^"]*"' "$OUT/ec.access.log")"
else
    echo "      note: the access log has no SNI field: $(tail -1 "$OUT/ec.access.log")"
fi

kill -TERM "${PID[sec1]}"
wait "${PID[sec1]}" || true
verdicts
exit $((FAILED > 0))
