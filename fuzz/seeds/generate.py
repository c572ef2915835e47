#!/usr/bin/env python3
"""Writes the seed inputs in seeds/connection_script/ and seeds/parse/ (run from anywhere).

connection_script input: [flags][n ops][n x (opcode, arg)][client byte stream]
  opcodes (mod 12): 0-2 send next arg+1 bytes (arg 255: all the rest), 3 EOF,
  4 advance DURATIONS_MS[arg] (arg >= 26: (arg-26)*300 ms), 5 write limit (0: stopped
  reading, 255: unlimited, else that many bytes per write), 6 begin drain, 7 advance arg ms,
  8 answer the oldest deferred (/later...) request (status by arg), 9 drop its responder,
  10 odd arg: a piece of arg*4 bytes for the oldest open stream; even: start a stream,
  11 even arg: finish the oldest open stream; odd: drop it unfinished.
  flags: 1 max_head_bytes 1024, 2 max_body_bytes 4096, 4 max_headers 8,
  8 max_head_bytes 64 + max_body_bytes 16, 16 drain before the quiet epilogue.
parse input: [mode][...] (mode mod 4): 0 head [max_headers][bytes]; 1 chunked [limit][n][n splits]
  [bytes]; 2 round trip [plan_len][plan][body]; 3 head under small limits [max][size][bytes]
  (max_headers max % 32, max_uri_bytes (size % 64) * 4, max_head_bytes 16 + size * 8).
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

SEND_ALL = (0, 255)
EOF = (3, 0)
DRAIN = (6, 0)


def send(k):
    return (0, k - 1)


def adv(index):  # index into DURATIONS_MS
    return (4, index)


def limit(n):
    return (5, n)


def ms(n):
    return (7, n)


ANSWER, DROP, START, PIECE, FINISH, CUT = (8, 0), (9, 0), (10, 0), (10, 5), (11, 0), (11, 1)


# DURATIONS_MS indexes
D100MS, D500MS, D1S, D2S, D10S, D30S, D60S, D70S = 4, 8, 11, 13, 15, 19, 23, 25


def script(flags, ops, stream):
    out = bytes([flags, len(ops)])
    for code, arg in ops:
        out += bytes([code, arg])
    return out + stream


GET = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"
HEAD = b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
CHUNKED = (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nX-T: v\r\n\r\n")
EXPECT_HEAD = (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")

LATER = b"GET /later HTTP/1.1\r\nHost: localhost\r\n\r\n"

CONNECTION = {
    "later_answer": script(0, [SEND_ALL, ANSWER, EOF], LATER + GET),
    "later_drop": script(0, [SEND_ALL, DROP], LATER),
    "later_stream": script(0, [SEND_ALL, START, PIECE, PIECE, FINISH, EOF], LATER + GET),
    "later_stream_cut": script(0, [SEND_ALL, START, PIECE, CUT], LATER),
    "later_stream_http10": script(0, [SEND_ALL, START, PIECE, FINISH], b"GET /later HTTP/1.0\r\n\r\n"),
    "later_stream_head": script(0, [SEND_ALL, START, PIECE, FINISH, EOF], b"HEAD /later HTTP/1.1\r\nHost: a\r\n\r\n" + GET),
    "later_slow_reader": script(0, [limit(0), SEND_ALL, START] + [PIECE] * 20 + [adv(D30S), FINISH], LATER),
    "later_drain": script(16, [SEND_ALL, START, DRAIN, PIECE, FINISH], LATER),
    "later_client_gone": script(0, [SEND_ALL, EOF, ANSWER], LATER),
    "get": script(0, [SEND_ALL, EOF], GET),
    "get_close": script(0, [SEND_ALL], b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    "pipelined": script(0, [send(10), send(40), SEND_ALL, ms(5), EOF],
                        GET + HEAD + b"GET /hello%20world?x=1 HTTP/1.1\r\nHost: a\r\n\r\n" + GET),
    "chunked_echo": script(2, [send(30), send(60), send(7), ms(1), SEND_ALL], CHUNKED),
    "expect_continue": script(2, [send(len(EXPECT_HEAD)), adv(D1S), SEND_ALL], EXPECT_HEAD + b"hello"),
    "expect_continue_413": script(3, [SEND_ALL],
                                  b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n"
                                  b"Expect: 100-continue\r\n\r\n"),
    "head": script(0, [SEND_ALL, DRAIN, adv(D1S)], HEAD + b"HEAD /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"),
    "delay": script(0, [SEND_ALL, adv(D1S), adv(D2S), EOF],
                    b"GET /slow?delay=2s HTTP/1.1\r\nHost: a\r\n\r\n"),
    "delay_drain": script(16, [SEND_ALL, DRAIN, adv(D2S)],
                          b"GET /slow?delay=1500ms HTTP/1.1\r\nHost: a\r\n\r\n" + GET),
    "slow_reader": script(0, [limit(0), send(len(GET)), adv(D10S), limit(7), limit(0), SEND_ALL, adv(D30S)],
                          GET * 3),
    "header_timeout": script(1, [SEND_ALL, adv(D10S), ms(200), adv(D500MS)],
                             b"GET / HTTP/1.1\r\nHost: a\r\n"),
    "body_timeout": script(2, [SEND_ALL, adv(D10S)],
                           b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"),
    "idle_timeout": script(0, [SEND_ALL, adv(D60S), EOF], GET),
    "http10": script(0, [SEND_ALL, EOF],
                     b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.0\r\n\r\n"),
    "drain_new": script(16, [DRAIN, adv(D1S)], b""),
    "drain_idle": script(0, [SEND_ALL, ms(50), DRAIN, ms(60), SEND_ALL], GET + GET),
    "head_too_large": script(1, [SEND_ALL], b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\n\r\n"),
    "too_many_headers": script(4, [SEND_ALL], b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 10 + b"\r\n"),
    "options_errors": script(0, [send(40), SEND_ALL],
                             b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nDELETE /echo HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/2.0\r\n\r\n"),
    "eof_mid_body": script(0, [SEND_ALL, EOF],
                           b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"),
}

PARSE = {
    "head_get": bytes([0, 100]) + GET,
    "head_post": bytes([0, 8]) + CHUNKED,
    "head_expect": bytes([0, 100]) + EXPECT_HEAD,
    "head_http10": bytes([0, 3]) + b"GET http://example.com/x?y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "head_conflict": bytes([0, 100]) + b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "chunked_simple": bytes([1, 1, 3, 1, 2, 5]) + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
    "chunked_quoted": bytes([1, 0, 0]) + b"A ; n = \"q\\\"x\" ; m\r\n0123456789\r\n0\r\n\r\nGET",
    "chunked_limit": bytes([1, 3, 2, 4, 4]) + b"11\r\n" + b"x" * 17 + b"\r\n0\r\n\r\n",
    "round_trip": bytes([2, 4, 0x45, 1, 0x83, 2]) + b"hello, chunked world" * 5,
    # Small limits: a target over max_uri_bytes (414), a head over max_head_bytes (431).
    "small_uri": bytes([3, 10, 6]) + b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "small_head": bytes([3, 2, 12]) + GET + b"X-Pad: " + b"p" * 120 + b"\r\n\r\n",
}


def write(target, seeds):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("connection_script", CONNECTION)
write("parse", PARSE)
