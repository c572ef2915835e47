#!/usr/bin/env python3
"""SSE clients that resume, through SIGHUP restarts of a live quiesce.

  sse_resume.py --server BIN --port P [--clients 1000] [--every 200ms] [--restarts 5]
                [--interval 10] [--drain-retry 500ms..3s] [--cpu 0]

Starts BIN (quiesce) on 127.0.0.1:P with `--sse-drain-retry DRAIN_RETRY`, opens --clients
`GET /events?every=EVERY` streams, and behaves as EventSource does: it keeps each stream's
last `id:` and `retry:`; when a stream ends (or breaks) it waits `retry` ms and reconnects with
`Last-Event-ID`. It sends SIGHUP to the serving process --restarts times, --interval seconds
apart (the process that serves is read from /metrics), then SIGTERM, and reports:

- per restart, how many streams ended cleanly with `event: shutdown` (its id the last tick's)
  and how many clients reconnected;
- the histogram of reconnection delays (from a stream's last chunk to the head of the next
  stream, so the retry wait plus connect and accept), in 100 ms buckets, over every restart;
- whether every client continued from its last id: ticks lost (an id skipped) or repeated
  (an id at or below the last one), over all clients and restarts; a missed tick is not
  counted by the server (its ids stay consecutive), so any gap is a real loss.

Loopback only; everything is bounded by --timeout. The server inherits a raised descriptor
limit; its stderr goes to a temporary file.
"""

import argparse
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        sys.exit(f"sse_resume.py: RLIMIT_NOFILE {soft} is below the {need} needed")


def serving_pid(port):
    """The pid in /metrics' quiesce_info, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    m = re.search(rb'quiesce_info\{[^}]*pid="(\d+)"', data)
    return int(m.group(1)) if m else None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


class Client:
    """One EventSource-like client."""

    def __init__(self, index, port, query):
        self.index, self.port, self.query = index, port, query
        self.sock = None
        self.last = 0  # the last event id seen (0: none)
        self.retry = 3000  # ms, what browsers use when told nothing
        self.reconnect_at = None  # when to reconnect (None: connected, or opened by the run)
        self.ended_at = None  # when the previous stream ended (for the delay)
        self.streams = 0
        self.lost = self.repeated = self.bad_shutdown_ids = 0
        self.ticks = 0
        self.reset_stream()

    def reset_stream(self):
        self.buf = b""
        self.text = ""
        self.head_done = False
        self.shutdown_seen = False
        self.sent = False

    def request(self):
        header = f"Last-Event-ID: {self.last}\r\n" if self.last else ""
        return f"GET /events?{self.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n".encode()


class Run:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.clients = [Client(i, args.port, f"every={args.every}") for i in range(args.clients)]
        self.stopping = False
        self.delays = []  # (restart index, seconds) of every reconnection
        self.restart = 0  # restarts so far (delays are filed under the one that caused them)
        self.clean_ends = {}  # restart -> streams that ended with a shutdown event and a last chunk
        self.cut_ends = {}  # restart -> streams that ended any other way
        self.reconnects = {}
        self.errors = []

    # -- one client's life -------------------------------------------------------------------

    def connect(self, c, now):
        assert c.sock is None, "a client with two sockets"
        c.reset_stream()
        c.sock = socket.socket()
        c.sock.setblocking(False)
        c.sock.connect_ex(("127.0.0.1", self.args.port))
        c.reconnect_at = None
        self.sel.register(c.sock, selectors.EVENT_WRITE, c)

    def end(self, c, now, clean):
        self.sel.unregister(c.sock)
        c.sock.close()
        c.sock = None
        bucket = self.clean_ends if clean else self.cut_ends
        bucket[self.restart] = bucket.get(self.restart, 0) + 1
        if not clean and len(self.errors) < 20:
            self.errors.append(f"client {c.index}: stream ended without its shutdown event and last chunk")
        c.ended_at = now
        if not self.stopping:
            c.reconnect_at = now + c.retry / 1000

    def on_event(self, c, block):
        fields = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields.setdefault(name, value[1:] if value.startswith(" ") else value)
        if "retry" in fields and fields["retry"].isdigit():
            c.retry = int(fields["retry"])
        if fields.get("event") == "shutdown":
            c.shutdown_seen = True
            if fields.get("id") != str(c.last):
                c.bad_shutdown_ids += 1
            return
        if "id" not in fields:
            return  # the retry block each stream starts with
        n = int(fields["id"])
        if n <= c.last:
            c.repeated += 1
        elif n > c.last + 1:
            c.lost += n - c.last - 1
        c.last = n
        c.ticks += 1

    def on_readable(self, c, now):
        try:
            data = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:
            data = b""
        if not data:
            return self.end(c, now, clean=False)
        c.buf += data
        if not c.head_done:
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, c.buf = c.buf[:end], c.buf[end + 4 :]
            if not head.startswith(b"HTTP/1.1 200"):
                self.errors.append(f"client {c.index}: {head[:60]!r}")
                return self.end(c, now, clean=False)
            c.head_done = True
            c.streams += 1
            if c.ended_at is not None:
                self.delays.append((self.restart, now - c.ended_at))
                self.reconnects[self.restart] = self.reconnects.get(self.restart, 0) + 1
        while True:
            line_end = c.buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(c.buf[:line_end], 16)
            if len(c.buf) < line_end + 2 + size + 2:
                return
            chunk = c.buf[line_end + 2 : line_end + 2 + size]
            c.buf = c.buf[line_end + 4 + size :]
            if size == 0:
                return self.end(c, now, clean=c.shutdown_seen and c.text == "")
            c.text += chunk.decode()
            while (at := c.text.find("\n\n")) >= 0:
                block, c.text = c.text[:at], c.text[at + 2 :]
                self.on_event(c, block)

    # -- the loop ------------------------------------------------------------------------------

    def pump(self, until, stop=lambda: False):
        while not stop():
            now = time.monotonic()
            if now > until:
                return False
            for c in self.clients:
                if c.reconnect_at is not None and c.reconnect_at <= now:
                    self.connect(c, now)
            due = [c.reconnect_at for c in self.clients if c.reconnect_at is not None]
            wait = max(0.0, min(0.05, min(due) - now)) if due else 0.05
            for key, mask in self.sel.select(timeout=wait):
                c, now = key.data, time.monotonic()
                if mask & selectors.EVENT_WRITE and not c.sent:
                    try:
                        c.sock.send(c.request())  # small: goes out whole into an empty buffer
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionError:
                        self.end(c, now, clean=False)
                        continue
                    c.sent = True
                    self.sel.modify(c.sock, selectors.EVENT_READ, c)
                elif mask & selectors.EVENT_READ:
                    self.on_readable(c, now)
        return True


def histogram(delays, bucket_ms=100):
    counts = {}
    for d in delays:
        b = int(d * 1000 // bucket_ms)
        counts[b] = counts.get(b, 0) + 1
    return [(b * bucket_ms, counts[b]) for b in sorted(counts)]


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--every", default="200ms")
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--drain-retry", default="500ms..3s")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = ap.parse_args()

    raise_nofile(2 * args.clients + 256)
    log = tempfile.NamedTemporaryFile(prefix="sse_resume-", suffix=".log", delete=False)
    cmd = [args.server, "--addr", f"127.0.0.1:{args.port}", "--sse-drain-retry", args.drain_retry]
    if args.cpu is not None:
        cmd = ["taskset", "-c", str(args.cpu), *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + args.timeout
    pids = []
    try:
        pid = None
        while pid is None and time.monotonic() < deadline:
            time.sleep(0.05)
            pid = serving_pid(args.port)
        if pid is None:
            sys.exit("sse_resume.py: the server did not start")
        pids.append(pid)
        run = Run(args)
        # Open every stream (in waves: the listen backlog is finite), then let them tick.
        for i, c in enumerate(run.clients):
            run.connect(c, time.monotonic())
            if i % 200 == 199:
                run.pump(deadline, lambda: all(x.head_done or x.sock is None for x in run.clients[: i + 1]))
        run.pump(deadline, lambda: all(c.head_done for c in run.clients))
        run.pump(time.monotonic() + 2)
        for r in range(1, args.restarts + 1):
            old = pids[-1]
            run.restart = r
            os.kill(old, signal.SIGHUP)
            # Until the new process serves and the old one is gone, then the interval.
            t0 = time.monotonic()
            new = None

            def handed_over():
                nonlocal new
                if new is None:
                    p = serving_pid(args.port)
                    new = p if p is not None and p != old else None
                return new is not None and not alive(old)

            if not run.pump(min(deadline, t0 + 60), handed_over):
                sys.exit(f"sse_resume.py: restart {r} did not hand over; see {log.name}")
            if old == proc.pid:
                proc.wait(timeout=10)
            pids.append(new)
            run.pump(min(deadline, t0 + args.interval))
        run.stopping = True
        run.restart = args.restarts + 1
        os.kill(pids[-1], signal.SIGTERM)
        run.pump(deadline, lambda: all(c.sock is None for c in run.clients))
        end_wait = time.monotonic() + 30
        while alive(pids[-1]) and time.monotonic() < end_wait:
            time.sleep(0.05)
    finally:
        # A successor not yet recorded (a run that failed mid-restart) serves the port.
        current = serving_pid(args.port)
        if current is not None and current not in pids:
            pids.append(current)
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()

    delays = sorted(d for r, d in run.delays if 1 <= r <= args.restarts)
    clients = run.clients
    restarts = range(1, args.restarts + 1)
    report = {
        "clients": args.clients,
        "every": args.every,
        "drain_retry": args.drain_retry,
        "restarts": args.restarts,
        "pids": pids,
        "clean_ends_per_restart": [run.clean_ends.get(r, 0) for r in restarts],
        "clean_ends_at_the_final_sigterm": run.clean_ends.get(args.restarts + 1, 0),
        "cut_ends": sum(run.cut_ends.values()),
        "reconnects_per_restart": [run.reconnects.get(r, 0) for r in restarts],
        "ticks_received": sum(c.ticks for c in clients),
        "ticks_lost": sum(c.lost for c in clients),
        "ticks_repeated": sum(c.repeated for c in clients),
        "shutdown_ids_not_the_last_tick": sum(c.bad_shutdown_ids for c in clients),
        "streams_per_client": sorted({c.streams for c in clients}),
        "delay_ms": {
            "min": round(delays[0] * 1000, 1) if delays else None,
            "p50": round(percentile(delays, 50) * 1000, 1) if delays else None,
            "p99": round(percentile(delays, 99) * 1000, 1) if delays else None,
            "max": round(delays[-1] * 1000, 1) if delays else None,
        },
        "histogram_100ms": histogram(delays),
        "errors": run.errors,
        "server_log": log.name,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(json.dumps({k: v for k, v in report.items() if k != "histogram_100ms"}, indent=1))
    peak = max((n for _, n in report["histogram_100ms"]), default=1)
    print(f"reconnection delays over {args.restarts} restarts ({len(delays)} reconnections), 100 ms buckets:")
    for start, n in report["histogram_100ms"]:
        print(f"  {start:5d}-{start + 99:5d} ms {n:6d} {'#' * max(1, round(60 * n / peak))}")


if __name__ == "__main__":
    main()
