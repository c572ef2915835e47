#!/usr/bin/env python3
"""A client that reads slowly through pipelined responses, against the write timeout.

    python3 benches/slow_reader.py [--binary target/release/quiesce] [--rate 1024] [--seconds 100]
                                   [--requests 100] [--size 1048576] [--write-timeout 30s]

Starts quiesce with an access log, sends REQUESTS pipelined `POST /echo` of SIZE bytes each (100
x 1 MiB: 100 MiB of responses queued behind one another), and reads at RATE bytes/s for SECONDS.
A client that reads, however slowly, must not be cut outside the drain (the write timeout is
for clients that stopped reading). Then it closes, and the access log's lines must add up to no
more body bytes than the client received. Prints one JSON object; exit status 1 when the server
cut the client or the log claims more than was delivered.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default="target/release/quiesce")
parser.add_argument("--rate", type=int, default=1024, help="bytes per second read")
parser.add_argument("--seconds", type=float, default=100)
parser.add_argument("--requests", type=int, default=100)
parser.add_argument("--size", type=int, default=1 << 20)
parser.add_argument("--write-timeout", default="30s")
args = parser.parse_args()

log_path = tempfile.mktemp(prefix="quiesce-slow-reader-", suffix=".log")
server = subprocess.Popen(
    [args.binary, "--addr", "127.0.0.1:0", "--access-log", log_path, "--write-timeout", args.write_timeout,
     "--max-body-bytes", str(args.size)],
    stderr=subprocess.PIPE, text=True)
stderr_lines = []
port = None
for line in server.stderr:
    stderr_lines.append(line)
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
threading.Thread(target=lambda: stderr_lines.extend(server.stderr), daemon=True).start()

client = socket.create_connection(("127.0.0.1", port))
# A small receive buffer, as a slow client's would stay: the kernel does not autotune it up.
client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
body = b"x" * args.size
head = f"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {args.size}\r\n\r\n".encode()


def send_all():
    try:
        for _ in range(args.requests):
            client.sendall(head + body)
    except OSError:
        pass


threading.Thread(target=send_all, daemon=True).start()
received = 0
cut_at = None
start = time.monotonic()
client.settimeout(1.0)
while time.monotonic() - start < args.seconds:
    due = int((time.monotonic() - start) * args.rate)
    want = due - received
    if want <= 0:
        time.sleep(0.05)
        continue
    try:
        data = client.recv(min(want, 65536))
    except socket.timeout:
        continue
    except OSError as e:
        cut_at = time.monotonic() - start
        break
    if not data:
        cut_at = time.monotonic() - start
        break
    received += len(data)
# shutdown first: the sending thread may be blocked in sendall on this socket, and a close alone
# would leave the connection open until that call returned.
try:
    client.shutdown(socket.SHUT_RDWR)
except OSError:
    pass
client.close()
time.sleep(1.5)
server.send_signal(2)
server.wait(timeout=30)
time.sleep(0.2)

lines = open(log_path).read().splitlines() if os.path.exists(log_path) else []
os.unlink(log_path) if os.path.exists(log_path) else None
logged_bytes = 0
ends = {}
for line in lines:
    m = re.search(r'" (\d+) (\d+) us=\d+ conn=\d+ drain=\w+ end=(\w+)', line)
    if m:
        logged_bytes += int(m.group(2))
        ends[m.group(3)] = ends.get(m.group(3), 0) + 1
cuts = [l.strip() for l in stderr_lines if "WriteTimeout" in l or "write timeout" in l]
# What the client received includes each response's head (about 100 bytes each).
result = {
    "rate_bytes_per_s": args.rate, "seconds": args.seconds, "received": received,
    "cut_by_server_at_s": cut_at, "server_cut_lines": cuts[:3],
    "access_lines": len(lines), "logged_body_bytes": logged_bytes, "ends": ends,
    "log_claims_more_than_received": logged_bytes > received,
}
print(json.dumps(result))
sys.exit(1 if cut_at is not None or logged_bytes > received else 0)
