#!/usr/bin/env python3
"""The kernel's floor for "exit with N idle connections": a trivial server that accepts N
connections on 127.0.0.1:PORT, answers one request on each with `Hello, World!` and then just
holds them. compare.sh opens the same idle connections to it (hold_idle.py) and times SIGKILL to
exit: no user-space work at all, only the kernel closing N loopback TCP sockets, which any server
pays at exit too.

Usage: close_floor.py --port PORT --count N [--hold 900]
"""

import argparse
import resource
import socket
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--hold", type=float, default=900.0, help="longest hold in seconds, then exit")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(4096)
    listener.settimeout(args.hold)
    held = []
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            break
        conn.settimeout(10)
        try:
            if conn.recv(4096):  # the holders' and readiness probes' requests are tiny
                conn.sendall(RESPONSE)
        except OSError:
            conn.close()
            continue
        held.append(conn)
        if len(held) > args.count + 100:  # probes and strays: never hold more than asked for
            held.pop(0).close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
