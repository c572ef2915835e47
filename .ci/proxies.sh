#!/usr/bin/env bash
# The proxy configurations that ship (deploy/haproxy.cfg, deploy/nginx.conf) and the restart
# patterns of the README, under load: deploy/proxy-test/run.sh at a smaller scale than the
# figures in deploy/README.md (which used the defaults: 32 loops, 1,000 streams, 5 restarts 10 s
# apart). It installs HAProxy, nginx and Go from Debian's packages. Fails when any judged
# scenario lost a request or a stream end.
set -euo pipefail
cd "$(dirname "$0")/.."
LOOPS=${LOOPS:-16} STREAMS=${STREAMS:-200} RESTARTS=${RESTARTS:-2} GAP=${GAP:-5} \
    bash deploy/proxy-test/run.sh direct haproxy-safe haproxy-always nginx activation overlap
