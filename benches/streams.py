#!/usr/bin/env python3
"""Work off the loop, measured on a live quiesce: the drain with work and streams in flight,
and the memory an idle event stream costs.

  streams.py drain --server BIN --port P [--streams 1000] [--work 32] [--work-ms 1000]
      Starts BIN (quiesce) on 127.0.0.1:P, opens --streams GET /events?every=1s streams and
      reads each one's head, starts --work GET /work?ms=... requests, then sends SIGTERM.
      Reports (JSON) whether every work request was answered 200 with Connection: close, whether
      every stream got `event: shutdown` and its last chunk, the exit status, and the times from
      SIGTERM to the last work response and to the exit.

  streams.py rss --server BIN --port P [--streams 10000]
      Starts BIN, reads its RSS, opens --streams idle streams (GET /events?every=1h, head read),
      reads the RSS again; reports the difference per stream (JSON), then stops it.

The server is started by this script (pinned with --cpu), so its exit is seen by waitpid, not
guessed. Loopback only; everything is bounded by --timeout.
"""

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

# The end of the drain's last event (before it: a retry: and the stream's last id).
SHUTDOWN = b"\nevent: shutdown\ndata: draining\n\n"


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        sys.exit(f"streams.py: RLIMIT_NOFILE {soft} is below the {need} needed")


def start_server(args, extra):
    cmd = ["taskset", "-c", str(args.cpu), args.server, "--addr", f"127.0.0.1:{args.port}", "-q", *extra]
    # The server inherits our raised descriptor limit.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("streams.py: the server did not start listening")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Conn:
    """One client socket and what it received."""

    def __init__(self, kind, request, port):
        self.kind, self.data, self.eof, self.done_at = kind, b"", False, None
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))
        self.request, self.sent = request, 0

    def head(self):
        end = self.data.find(b"\r\n\r\n")
        return None if end < 0 else self.data[: end + 4]


def pump(sel, conns, until, stop):
    """Sends the requests and reads, until `stop()` or the deadline."""
    while not stop():
        if time.monotonic() > until:
            return False
        for key, mask in sel.select(timeout=0.05):
            c = key.data
            if mask & selectors.EVENT_WRITE and c.sent < len(c.request):
                try:
                    c.sent += c.sock.send(c.request[c.sent :])
                except (BlockingIOError, InterruptedError):
                    pass
                if c.sent == len(c.request):
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if mask & selectors.EVENT_READ:
                try:
                    chunk = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionError:
                    chunk = b""
                if chunk:
                    c.data += chunk
                else:
                    # As a client does: the server's end of the response is ours too (a server
                    # that closed after its last response lingers until the client closes).
                    c.eof, c.done_at = True, time.monotonic()
                    sel.unregister(c.sock)
                    c.sock.close()
    return True


def open_streams(sel, port, n, path, until):
    conns = []
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for i in range(n):
        c = Conn("stream", request, port)
        sel.register(c.sock, selectors.EVENT_WRITE, c)
        conns.append(c)
        if i % 200 == 199:  # the listen backlog is finite: let the server catch up
            pump(sel, conns, until, lambda: all(x.head() for x in conns))
    if not pump(sel, conns, until, lambda: all(c.head() for c in conns)):
        sys.exit(f"streams.py: only {sum(1 for c in conns if c.head())} of {n} streams opened")
    return conns


def drain(args):
    raise_nofile(args.streams + args.work + 256)
    proc = start_server(args, [])
    sel = selectors.DefaultSelector()
    until = time.monotonic() + args.timeout
    streams = open_streams(sel, args.port, args.streams, "/events?every=1s", until)
    work_request = f"GET /work?ms={args.work_ms} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    work = [Conn("work", work_request, args.port) for _ in range(args.work)]
    for c in work:
        sel.register(c.sock, selectors.EVENT_WRITE, c)
    # Until every work request is in (sent, and the server has had a moment to defer them all).
    pump(sel, work, until, lambda: all(c.sent == len(c.request) for c in work))
    pump(sel, work, time.monotonic() + 0.1, lambda: False)
    sigterm_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)

    def everything_ended():
        return all(c.eof for c in work) and all(c.eof for c in streams)

    ended = pump(sel, work + streams, until, everything_ended)
    try:
        status = proc.wait(timeout=max(1, until - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        status = None
    exit_at = time.monotonic()

    def work_ok(c):
        head = c.head() or b""
        return head.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in head and c.data.endswith(
            f"worked {args.work_ms} ms\n".encode()
        )

    def stream_ok(c):
        return c.data.endswith(SHUTDOWN + b"\r\n0\r\n\r\n")

    last_work = max((c.done_at for c in work if c.done_at), default=None)
    report = {
        "streams": args.streams,
        "work": args.work,
        "work_ms": args.work_ms,
        "everything_ended": ended,
        "work_answered_with_close": sum(1 for c in work if work_ok(c)),
        "streams_ended_cleanly": sum(1 for c in streams if stream_ok(c)),
        "exit_status": status,
        "sigterm_to_last_work_ms": round((last_work - sigterm_at) * 1000, 1) if last_work else None,
        "sigterm_to_exit_ms": round((exit_at - sigterm_at) * 1000, 1),
        "last_work_to_exit_ms": round((exit_at - last_work) * 1000, 1) if last_work else None,
        "summary": next((l.decode().strip() for l in proc.stderr.read().splitlines() if b'"event":"shutdown"' in l), None),
    }
    print(json.dumps(report))


def rss(args):
    raise_nofile(args.streams + 256)
    proc = start_server(args, [])
    try:
        before = rss_kib(proc.pid)
        sel = selectors.DefaultSelector()
        until = time.monotonic() + args.timeout
        streams = open_streams(sel, args.port, args.streams, "/events?every=1h", until)
        time.sleep(1)  # let the server settle (the ticker thread, buffers back in the pools)
        after = rss_kib(proc.pid)
        print(json.dumps({
            "streams": len(streams),
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_stream": round((after - before) * 1024 / len(streams), 1),
        }))
        for c in streams:
            c.sock.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["drain", "rss"])
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--streams", type=int)
    ap.add_argument("--work", type=int, default=32)
    ap.add_argument("--work-ms", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    if args.mode == "drain":
        args.streams = args.streams or 1000
        drain(args)
    else:
        args.streams = args.streams or 10000
        rss(args)


if __name__ == "__main__":
    main()
