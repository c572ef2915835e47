#!/usr/bin/env python3
"""Socket activation's restart, as systemd does it: hold the listening socket, start quiesce on
it (LISTEN_FDS=1, LISTEN_PID, fd 3), and RESTARTS times, GAP seconds apart, stop it with SIGTERM,
wait for it to exit, and start the next one on the same socket. Connections that arrive in
between wait in the socket's backlog. The last one is stopped GAP seconds after the last start.

    activate.py PORT RESTARTS GAP QUIESCE [ARGS...]

Prints each generation's pid and exit status; quiesce's stderr is this script's.
"""
import os
import signal
import socket
import subprocess
import sys
import time

port, restarts, gap, quiesce, args = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(1024)
# fd 3 in the child, as systemd passes it.
os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)


def start():
    # LISTEN_PID must be quiesce's own pid: the shell sets it to its pid, then becomes quiesce.
    command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', quiesce, *args]
    return subprocess.Popen(command, pass_fds=(3,))


child = start()
for generation in range(restarts + 1):
    time.sleep(gap)
    child.send_signal(signal.SIGTERM)
    status = child.wait()
    print(f"generation {generation}: pid {child.pid} exited {status}", flush=True)
    if generation < restarts:
        child = start()
