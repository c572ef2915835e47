#!/usr/bin/env bash
# testssl.sh (Debian's package) against quiesce with its default TLS settings, every check
# testssl runs by default (protocols, cipher categories, forward secrecy, server preferences,
# server defaults and the certificate, HTTP headers, vulnerabilities, each cipher, client
# simulations), once per certificate kind. About 80 s per run, offline.
#
#   bash deploy/tls-test/testssl.sh            # ECDSA P-256
#   CERTS="ec rsa" bash deploy/tls-test/testssl.sh
#
# Output: target/tls-test/testssl/KIND.txt (as testssl prints it) and KIND.json. Every finding
# rated LOW, MEDIUM, HIGH or CRITICAL is listed, in one of three groups:
#   - expected of the self-signed test certificate (no chain of trust, no CRL or OCSP URI, no
#     DNS CAA record for 127.0.0.1): not the server's doing;
#   - about the demo application's HTTP headers (HSTS, security headers), not TLS;
#   - everything else: a finding about the server's TLS. Any of these fails the run (exit 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/tls-test/testssl}
CERTS=${CERTS:-ec}
. deploy/tls-test/common.sh
setup testssl.sh

for kind in $CERTS; do
    make_cert "$kind" "$kind" localhost
    plain=$(free_port)
    tls=$(free_port)
    start_quiesce "$OUT/$kind-quiesce.log" "$plain" "$tls" "$WORK/$kind.pem" "$WORK/$kind.key"
    pid=$STARTED
    rm -f "$OUT/$kind.json"
    # testssl's own exit status counts findings; the JSON is judged below.
    testssl --quiet --color 0 --warnings batch --jsonfile "$OUT/$kind.json" "127.0.0.1:$tls" >"$OUT/$kind.txt" 2>&1 || true
    kill -TERM "$pid"
    wait "$pid" || true
    python3 - "$kind" "$OUT/$kind.json" "$OUT/$kind.txt" <<'EOF' || FAILED=$((FAILED + 1))
import json, sys
kind, path, text = sys.argv[1:]
findings = json.load(open(path))
TEST_CERT = {"cert_chain_of_trust", "cert_revocation", "DNS_CAArecord"}
APP_HEADERS = {"HSTS", "security_headers", "HPKP", "banner_application", "cookie_count"}
RATED = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
groups = {"test certificate": [], "application headers": [], "server": []}
for f in findings:
    if f["severity"] not in RATED:
        continue
    group = "test certificate" if f["id"] in TEST_CERT else "application headers" if f["id"] in APP_HEADERS else "server"
    groups[group].append(f"{f['severity']} {f['id']}: {f['finding']}")
warnings = [f"{f['id']}: {f['finding']}" for f in findings if f["severity"] == "WARN"]
vulnerable = [l.strip() for l in open(text) if "VULNERABLE" in l]
ok = sum(1 for f in findings if f["severity"] == "OK")
print(f"testssl, {kind} certificate: {len(findings)} findings, {ok} rated OK")
for name, items in groups.items():
    for item in items:
        print(f"  {name}: {item}")
for w in warnings:
    print(f"  testssl warning: {w}")
failed = groups["server"] or vulnerable
detail = "; ".join(groups["server"] + vulnerable) if failed else "no finding about the server's TLS"
print(f"{'FAIL' if failed else 'PASS'}  testssl, {kind} certificate: {detail}")
sys.exit(1 if failed else 0)
EOF
done
echo
echo "$(( $(wc -w <<<"$CERTS") - FAILED )) passed, $FAILED failed"
exit $((FAILED > 0))
