#!/usr/bin/env python3
"""The drain of issue 19's two services (examples/crud.rs, examples/chat.rs, or their axum peers).

    python3 benches/services_drain.py crud BINARY [--loops 32] [--seconds 3]
    python3 benches/services_drain.py chat BINARY [--streams 200]

crud: LOOPS keep-alive clients POST a user and GET it back, over and over; SIGTERM after SECONDS.
A request is lost when it was sent whole and its connection ended without a response (reset or
end of file); a connection refused after the listener closed is not a request the server
accepted, and is counted apart. chat: STREAMS subscribers, one message, SIGTERM: a stream ends
cleanly when it got `event: shutdown` and the chunked body's end. Prints one JSON object; the
server's exit status and the time from SIGTERM to its exit are in it.
"""
import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("service", choices=["crud", "chat"])
parser.add_argument("binary")
parser.add_argument("--loops", type=int, default=32)
parser.add_argument("--streams", type=int, default=200)
parser.add_argument("--seconds", type=float, default=3)
args = parser.parse_args()

server = subprocess.Popen([args.binary, "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
port = None
for line in server.stderr:
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()


def read_response(sock, buf):
    """One response (Content-Length bodies); returns (status, headers, body, rest) or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return None
        rest += data
    return status, headers, rest[:length], rest[length:]


stop = threading.Event()
counts = {"ok": 0, "lost": 0, "refused": 0, "bad_status": 0}
lock = threading.Lock()


def note(kind):
    with lock:
        counts[kind] += 1


def crud_loop(i):
    sock, buf = None, b""
    while not stop.is_set():
        if sock is None:
            try:
                sock, buf = socket.create_connection(("127.0.0.1", port), timeout=10), b""
            except OSError:
                note("refused")
                time.sleep(0.05)
                continue
        body = json.dumps({"name": f"u{i}", "email": f"u{i}@example.com"}).encode()
        request = (b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
        try:
            sock.sendall(request)
            answer = read_response(sock, buf)
        except OSError:
            answer = None
        if answer is None:
            # Sent whole, no response: lost (unless the send itself failed on a closed socket,
            # which a client retries; counted as lost too, to be strict).
            note("lost")
            sock = None
            continue
        status, headers, body, buf = answer
        note("ok" if status == 201 else "bad_status")
        if headers.get("connection", "").lower() == "close":
            sock.close()
            sock = None


def chat():
    subscribers = []
    for _ in range(args.streams):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        subscribers.append(s)
    time.sleep(0.5)
    poster = socket.create_connection(("127.0.0.1", port), timeout=10)
    poster.sendall(b"POST /send HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    read_response(poster, b"")
    time.sleep(0.5)
    return subscribers


def stream_end(sock, result):
    got = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
    clean = b"event: shutdown" in got and got.endswith(b"0\r\n\r\n") and b"data: hello" in got
    result.append(clean)


if args.service == "crud":
    threads = [threading.Thread(target=crud_loop, args=(i,)) for i in range(args.loops)]
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    t0 = time.monotonic()
    server.send_signal(15)
    status = server.wait(timeout=60)
    exit_ms = (time.monotonic() - t0) * 1000
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    print(json.dumps({"service": "crud", **counts, "exit_status": status, "sigterm_to_exit_ms": round(exit_ms, 1)}))
    sys.exit(0 if counts["lost"] == 0 and counts["bad_status"] == 0 and status == 0 else 1)
else:
    subscribers = chat()
    results = []
    readers = [threading.Thread(target=stream_end, args=(s, results)) for s in subscribers]
    for t in readers:
        t.start()
    t0 = time.monotonic()
    server.send_signal(15)
    try:
        status = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        status = "hung (killed after 60 s)"
    exit_ms = (time.monotonic() - t0) * 1000
    for t in readers:
        t.join(timeout=10)
    clean = sum(results)
    print(json.dumps({"service": "chat", "streams": args.streams, "clean_ends": clean,
                      "exit_status": status, "sigterm_to_exit_ms": round(exit_ms, 1)}))
    sys.exit(0 if clean == args.streams and status == 0 else 1)
