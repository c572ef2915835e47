#!/usr/bin/env bash
# HTTPS with real clients, and its drain and certificate rotation under load:
# deploy/tls-test/clients.sh (curl, openssl s_client, Python's ssl, Go's crypto/tls), then
# deploy/tls-test/restarts.sh at a smaller scale than the figures in
# benches/results/tls-clients.md (which used the defaults: 32 keep-alive clients, 4 with a new
# connection per request, 8 idle, 5 rotations 5 s apart). Installs openssl, curl, python3 and
# Go from Debian's packages when missing; builds the release binary. About a minute once built.
# Fails when any check fails: a request lost, a handshake failed during a rotation, an idle
# connection ended without close_notify, a broken certificate that took over.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/tls-test/clients.sh
LOOPS=${LOOPS:-16} FRESH=${FRESH:-2} IDLE=${IDLE:-4} WARMUP=${WARMUP:-2} RESTARTS=${RESTARTS:-2} GAP=${GAP:-3} \
    bash deploy/tls-test/restarts.sh drain rotate broken
