#!/usr/bin/env python3
"""The kernel's floor for "exit with N idle connections": a trivial server that accepts N
connections on 127.0.0.1:PORT, answers one request on each with `Hello, World!` and then just
holds them. compare.sh opens the same idle connections to it (hold_idle.py) and times SIGKILL to
exit: no user-space work at all, only the kernel closing N loopback TCP sockets, which any server
pays at exit too.

With --epoll, every connection it holds is also registered in an epoll set (edge triggered,
in/out/read-hangup, as mio registers a server's connections), so the floor includes what the
kernel does at exit to take N sockets out of an epoll set, which every epoll server pays.

Usage: close_floor.py --port PORT --count N [--hold 900] [--epoll]
"""

import argparse
import resource
import select
import socket
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--hold", type=float, default=900.0, help="longest hold in seconds, then exit")
    ap.add_argument("--epoll", action="store_true", help="also register each held socket in an epoll set")
    args = ap.parse_args()
    watch = select.epoll() if args.epoll else None
    mask = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
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
        if watch is not None:
            watch.register(conn.fileno(), mask)
        if len(held) > args.count + 100:  # probes and strays: never hold more than asked for
            held.pop(0).close()  # (closing also takes it out of the epoll set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
