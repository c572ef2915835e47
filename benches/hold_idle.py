#!/usr/bin/env python3
"""Open N keep-alive connections to a local HTTP server, send one GET on each, read each
response, then hold them all idle.

Prints "ready N" on stdout (flushed) once every connection has been answered, then holds them
until SIGTERM/SIGINT or --hold seconds (bounded), whichever comes first. Exits 1 (after a message
on stderr) if any connection fails, gets a non-200 answer, or everything is not ready within
--timeout seconds. Only loopback addresses are accepted.

Usage: hold_idle.py --port PORT --count N [--host 127.0.0.1] [--path /plaintext]
                    [--concurrency 256] [--timeout 60] [--hold 900]
"""

import argparse
import errno
import ipaddress
import resource
import selectors
import signal
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--path", default="/plaintext")
    ap.add_argument("--concurrency", type=int, default=256, help="most connections in progress at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds allowed to get every connection ready")
    ap.add_argument("--hold", type=float, default=900.0, help="longest hold in seconds, then exit")
    args = ap.parse_args()

    if not ipaddress.ip_address(args.host).is_loopback:
        print(f"hold_idle: refusing non-loopback host {args.host}", file=sys.stderr)
        return 2

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 64 and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < args.count + 64:
        print(f"hold_idle: RLIMIT_NOFILE {soft} too low for {args.count} connections", file=sys.stderr)
        return 1

    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    held = []  # answered sockets, kept open
    received = {}  # fd -> bytes read so far
    started = 0
    in_progress = 0
    deadline = time.monotonic() + args.timeout

    def fail(msg: str) -> int:
        print(f"hold_idle: {msg} (ready {len(held)}/{args.count})", file=sys.stderr)
        return 1

    def response_complete(data: bytes) -> bool:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        length = 0
        for line in data[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return len(data) >= end + 4 + length

    while len(held) < args.count:
        if time.monotonic() > deadline:
            return fail(f"timed out after {args.timeout}s")
        while in_progress < args.concurrency and started < args.count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((args.host, args.port))
            if err not in (0, errno.EINPROGRESS):
                return fail(f"connect: {errno.errorcode.get(err, err)}")
            sel.register(sock, selectors.EVENT_WRITE, "connect")
            started += 1
            in_progress += 1
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            if key.data == "connect":
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    return fail(f"connect: {errno.errorcode.get(err, err)}")
                sock.sendall(request)  # tiny: fits in an empty send buffer
                received[sock.fileno()] = b""
                sel.modify(sock, selectors.EVENT_READ, "read")
                continue
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                return fail(f"recv: {e}")
            if not chunk:
                return fail("server closed a connection before answering")
            data = received[sock.fileno()] + chunk
            received[sock.fileno()] = data
            if response_complete(data):
                if not data.startswith(b"HTTP/1.1 200"):
                    return fail(f"unexpected answer {data[:40]!r}")
                sel.unregister(sock)
                del received[sock.fileno()]
                held.append(sock)
                in_progress -= 1

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"ready {len(held)}", flush=True)
    end = time.monotonic() + args.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.2)
    for sock in held:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
