#!/usr/bin/env python3
"""Python's ssl (the standard library, OpenSSL underneath) as a client of quiesce's HTTPS port,
and raw sockets for what no well-behaved client sends. Used by deploy/tls-test/clients.sh.

    pyclient.py get     PORT CAFILE           http.client over HTTPS: GET /plaintext
    pyclient.py idle    PORT CAFILE [1.2|1.3] one request, prints "ready", then waits for the
                                              server to close the idle connection
    pyclient.py garbage PORT                  bytes that are not TLS: an alert back, then the end
    pyclient.py slowhello PORT CAFILE SECS    a real ClientHello, one byte every SECS seconds
    pyclient.py silent  PORT                  connect and say nothing

Each prints one line; `idle` exits 1 unless the server ended with close_notify, the others
print what they measured and let the caller judge.

How close_notify is told from a ragged EOF: the socket is wrapped with
suppress_ragged_eofs=False, so a TCP end without close_notify raises ssl.SSLEOFError, while
after the server's close_notify recv() returns b'' and unwrap() (our own close_notify back)
succeeds.
"""
import http.client
import select
import socket
import ssl
import sys
import time

REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"


def context(cafile, version=None):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def get(port, cafile):
    conn = http.client.HTTPSConnection("localhost", port, context=context(cafile), timeout=10)
    # Resolve nothing: connect to 127.0.0.1, verify the name "localhost".
    conn.sock = context(cafile).wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    conn.request("GET", "/plaintext")
    resp = conn.getresponse()
    body = resp.read()
    print(f"status={resp.status} body={body!r} version={conn.sock.version()} "
          f"alpn={conn.sock.selected_alpn_protocol()} cipher={conn.sock.cipher()[0]}")
    conn.close()
    return 0 if resp.status == 200 and body == b"Hello, World!" else 1


def idle(port, cafile, version=None, wait=20.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = context(cafile, version).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    s.sendall(REQUEST)
    got = b""
    while b"Hello, World!" not in got:
        chunk = s.recv(4096)
        if not chunk:
            print(f"request failed: {got!r}")
            return 1
        got += chunk
    print(f"ready {s.version()} alpn={s.selected_alpn_protocol()}", flush=True)
    s.settimeout(wait)
    try:
        data = s.recv(4096)
    except ssl.SSLEOFError as e:
        print(f"ragged_eof ({e})")
        return 1
    except ConnectionResetError:
        print("reset")
        return 1
    except socket.timeout:
        print("timeout")
        return 1
    if data:
        print(f"unexpected bytes {data!r}")
        return 1
    # The server's close_notify was read: answer with ours.
    try:
        s.unwrap().close()
        print("close_notify (unwrap ok)")
    except (OSError, ssl.SSLError) as e:
        print(f"close_notify (unwrap: {e})")
    return 0


def read_until_closed(sock, limit=5.0):
    """Everything the server sends until it closes, and how it closed."""
    sock.settimeout(limit)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return got, "fin"
            got += chunk
    except ConnectionResetError:
        return got, "reset"
    except socket.timeout:
        return got, "open"


GARBAGE = [
    ("zeros", b"\x00" * 64),
    # A handshake record whose ClientHello is cut short inside its own length.
    ("bad ClientHello", b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff"),
    ("application data before a handshake", b"\x17\x03\x03\x00\x10" + b"A" * 16),
]
ALERTS = {10: "unexpected_message", 40: "handshake_failure", 47: "illegal_parameter", 50: "decode_error",
          70: "protocol_version", 80: "internal_error"}


def garbage(port):
    """Each kind of garbage on its own connection: an alert record back, then the end."""
    failed = 0
    seen = []
    for name, data in GARBAGE:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(data)
        got, end = read_until_closed(s)
        s.close()
        alert = len(got) == 7 and got[0] == 0x15 and got[5] == 2
        if not (alert and end in ("fin", "reset")):
            failed += 1
        desc = ALERTS.get(got[6], got[6]) if alert else f"no alert: {got[:40].hex()}"
        seen.append(f"{name}: {desc}, {end}")
    print("; ".join(seen))
    return 1 if failed else 0


def client_hello(cafile):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context(cafile).wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def slowhello(port, cafile, every):
    hello = client_hello(cafile)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.monotonic()
    sent = 0
    end = "open"
    while sent < len(hello):
        try:
            s.send(hello[sent:sent + 1])
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            end = "reset on send"
            break
        readable, _, _ = select.select([s], [], [], every)
        if readable:
            try:
                end = "fin" if not s.recv(4096) else "data"
            except ConnectionResetError:
                end = "reset"
            break
    took = time.monotonic() - start
    print(f"closed_after={took:.2f}s sent={sent}/{len(hello)} end={end}")
    return 0 if end != "open" else 1


def silent(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.monotonic()
    got, end = read_until_closed(s, limit=30)
    print(f"closed_after={time.monotonic() - start:.2f}s end={end} reply={got.hex()}")
    return 0 if end != "open" else 1


def main(argv):
    mode, port = argv[1], int(argv[2])
    if mode == "get":
        return get(port, argv[3])
    if mode == "idle":
        return idle(port, argv[3], argv[4] if len(argv) > 4 else None)
    if mode == "garbage":
        return garbage(port)
    if mode == "slowhello":
        return slowhello(port, argv[3], float(argv[4]))
    if mode == "silent":
        return silent(port)
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
