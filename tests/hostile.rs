//! Hostile and edge-case requests against the `quiesce` binary, as raw bytes (RFC 9112/9110).
//!
//! Every case of every table is run three ways on its own connection:
//!
//! 1. [`Mode::Whole`]: the bytes in one write;
//! 2. [`Mode::Bytewise`]: one write per byte with `TCP_NODELAY`;
//! 3. [`Mode::Pipelined`]: behind a valid request in the same write, whose `200` must come first.
//!
//! A case says which status it gets and how the connection ends: it stays open (proved by one more
//! valid request answered with `200`), it is an error answered with `Connection: close` and then a
//! clean close (the client reads EOF, not a reset), or the server closes without announcing it
//! (HTTP/1.0, or the client half-closed). All cases of a table share one server process and run
//! concurrently, one thread per case. Every socket operation is bounded by a timeout.

mod common;

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Quiesce, read_some};

/// Read/write/connect timeout of every client socket.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// After an error response (or when the server must close), EOF must come within this.
const EOF_WAIT: Duration = Duration::from_secs(3);

/// The valid request used before pipelined cases and to prove a connection is still usable.
const VALID: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
const HELLO_WORLD: &[u8] = b"Hello, World!";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// How the connection must end after the case's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// No `Connection: close`; another valid request on the connection gets `200`.
    Open,
    /// An error answer: `Connection: close`, a short body, then EOF (a clean close).
    Close,
    /// The server closes without having to say so (HTTP/1.0 without keep-alive, or the client
    /// half-closed): EOF after the response.
    Eof,
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    end: End,
    /// The exact body expected, if it matters.
    body: Option<Vec<u8>>,
    /// The response to a HEAD request: no body is read.
    head_only: bool,
    /// `Allow` must list these methods and must not list the second one.
    allow: Option<(&'static [&'static str], Option<&'static str>)>,
    /// `Expect: 100-continue`: the head is sent, then `HTTP/1.1 100 Continue` must arrive before
    /// this body is sent.
    continue_body: Option<Vec<u8>>,
    /// The client shuts down its write side right after the request.
    half_close: bool,
}

/// A `200` with exactly `body`; the connection stays open.
fn ok(name: &'static str, raw: impl AsRef<[u8]>, body: impl AsRef<[u8]>) -> Case {
    Case { body: Some(body.as_ref().to_vec()), ..answer(name, raw, 200) }
}

/// A normal (non-error) answer with `status`; the connection stays open.
fn answer(name: &'static str, raw: impl AsRef<[u8]>, status: u16) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        status,
        end: End::Open,
        body: None,
        head_only: false,
        allow: None,
        continue_body: None,
        half_close: false,
    }
}

/// An error answer: `status`, `Connection: close`, a short body, then a clean close.
fn reject(name: &'static str, raw: impl AsRef<[u8]>, status: u16) -> Case {
    Case { end: End::Close, ..answer(name, raw, status) }
}

impl Case {
    fn closes(mut self) -> Self {
        self.end = End::Eof;
        self
    }

    fn head_only(mut self) -> Self {
        self.head_only = true;
        self
    }

    fn allow(mut self, must: &'static [&'static str], must_not: Option<&'static str>) -> Self {
        self.allow = Some((must, must_not));
        self
    }

    fn after_continue(mut self, body: &[u8]) -> Self {
        self.continue_body = Some(body.to_vec());
        self
    }

    fn half_close(mut self) -> Self {
        self.half_close = true;
        self.end = End::Eof;
        self
    }
}

/// `POST /echo HTTP/1.1` with `Host: x`, the extra header lines `fields` (each ending in CRLF)
/// and `body` after the blank line.
fn post(fields: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST /echo HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A chunked `POST /echo` with the raw chunked `body`.
fn chunked(body: impl AsRef<[u8]>) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body.as_ref())
}

/// `GET /plaintext HTTP/1.1` with `Host: x` and the extra header lines `fields` (each ending in
/// CRLF).
fn get_with(fields: &str) -> Vec<u8> {
    format!("GET /plaintext HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes()
}

/// `GET /plaintext HTTP/1.1` with `Host: x` and one header line of `bytes` (raw, no CRLF).
fn get_with_line(bytes: &[u8]) -> Vec<u8> {
    let mut raw = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n".to_vec();
    raw.extend_from_slice(bytes);
    raw.extend_from_slice(b"\r\n\r\n");
    raw
}

fn request_line_cases() -> Vec<Case> {
    vec![
        ok("baseline", VALID, HELLO_WORLD),
        reject("no_version", b"GET /\r\n\r\n", 400),
        reject("no_version_with_host", b"GET /plaintext\r\nHost: x\r\n\r\n", 400),
        reject("space_after_version", b"GET /plaintext HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
        reject("lowercase_version", b"GET /plaintext http/1.1\r\nHost: x\r\n\r\n", 400),
        reject("version_1_10", b"GET /plaintext HTTP/1.10\r\nHost: x\r\n\r\n", 400),
        reject("version_without_minor", b"GET /plaintext HTTP/1\r\nHost: x\r\n\r\n", 400),
        reject("tls_client_hello", b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03\r\n\r\n", 400),
        reject("garbage_words", b"hello there, server\r\n\r\n", 400),
        ok("version_1_2_as_1_1", b"GET /plaintext HTTP/1.2\r\nHost: x\r\n\r\n", HELLO_WORLD),
        reject("version_2_0", b"GET /plaintext HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        reject("version_3_0", b"GET /plaintext HTTP/3.0\r\nHost: x\r\n\r\n", 505),
        reject("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        ok("leading_crlf_lines", b"\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", HELLO_WORLD),
        ok("leading_lf_lines", b"\n\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", HELLO_WORLD),
        reject("method_over_32_bytes", format!("{} /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(40)), 501),
        reject("uri_over_default_8k", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)), 414),
        reject("nul_in_target", b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        reject("space_in_target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        reject("head_over_default_16k", get_with(&format!("X-Big: {}\r\n", "a".repeat(17_000))), 431),
        ok("fields_at_default_100", get_with(&fields(99)), HELLO_WORLD),
        reject("fields_over_default_100", get_with(&fields(100)), 431),
        reject("cl_over_default_1mib", post("Content-Length: 1048577\r\n", b""), 413),
    ]
}

fn host_and_target_cases() -> Vec<Case> {
    vec![
        reject("no_host", b"GET /plaintext HTTP/1.1\r\n\r\n", 400),
        reject("two_equal_hosts", b"GET /plaintext HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400),
        reject("two_different_hosts", b"GET /plaintext HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        reject("host_with_space", b"GET /plaintext HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        reject("host_with_slash", b"GET /plaintext HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        reject("host_with_at", b"GET /plaintext HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
        reject("host_unclosed_bracket", b"GET /plaintext HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        ok("host_empty", b"GET /plaintext HTTP/1.1\r\nHost:\r\n\r\n", HELLO_WORLD),
        ok("host_name_and_port", b"GET /plaintext HTTP/1.1\r\nHost: example.com:80\r\n\r\n", HELLO_WORLD),
        ok("host_ipv6_and_port", b"GET /plaintext HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", HELLO_WORLD),
        ok("http10_without_host", b"GET /plaintext HTTP/1.0\r\n\r\n", HELLO_WORLD).closes(),
        ok("http10_keep_alive_without_host", b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", HELLO_WORLD),
        ok("absolute_form", b"GET http://a/plaintext HTTP/1.1\r\nHost: a\r\n\r\n", HELLO_WORLD),
        answer("options_asterisk", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 204).allow(&["GET", "HEAD", "POST"], None),
        reject("get_asterisk", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        reject("authority_form_get", b"GET example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n", 400),
        reject("relative_target", b"GET plaintext HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        reject("query_only_target", b"GET ?a=b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        // Errors answering HEAD: the head alone (RFC 9110 §9.3.2), framing fields as for GET.
        reject("head_no_host", b"HEAD /plaintext HTTP/1.1\r\n\r\n", 400).head_only(),
        reject("head_asterisk", b"HEAD * HTTP/1.1\r\nHost: x\r\n\r\n", 400).head_only(),
        reject("head_after_empty_lines_no_host", b"\r\n\nHEAD /plaintext HTTP/1.1\r\n\r\n", 400).head_only(),
    ]
}

fn field_syntax_cases() -> Vec<Case> {
    vec![
        ok("tab_around_host_value", b"GET /plaintext HTTP/1.1\r\nHost:\tx\t\r\n\r\n", HELLO_WORLD),
        reject("space_before_colon_host", b"GET /plaintext HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        reject("space_before_colon_content_length", post("Content-Length : 5\r\n", b"hello"), 400),
        reject("paren_in_name", get_with("Ho(st: x\r\n"), 400),
        reject("at_in_name", get_with("X@Y: z\r\n"), 400),
        reject("empty_name", get_with(": z\r\n"), 400),
        reject("line_without_colon", get_with("X-A\r\n"), 400),
        reject("obs_fold_space", get_with("X-A: b\r\n c\r\n"), 400),
        reject("obs_fold_tab", get_with("X-A: b\r\n\tc\r\n"), 400),
        reject("whitespace_line_before_first_field", b"GET /plaintext HTTP/1.1\r\n Host: x\r\n\r\n", 400),
        reject("nul_in_value", get_with_line(b"X-A: a\0b"), 400),
        reject("bare_cr_in_value", get_with_line(b"X-A: a\rb"), 400),
        reject("ctl_0x01_in_value", get_with_line(b"X-A: a\x01b"), 400),
        reject("del_0x7f_in_value", get_with_line(b"X-A: a\x7fb"), 400),
    ]
}

fn content_length_cases() -> Vec<Case> {
    // The server runs with --max-body-bytes 1024.
    let hidden = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut get_with_body =
        format!("GET /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", hidden.len()).into_bytes();
    get_with_body.extend_from_slice(hidden);
    let kib = vec![b'k'; 1024];
    vec![
        ok("cl_echo", post("Content-Length: 5\r\n", b"hello"), b"hello"),
        reject("cl_differing_duplicates", post("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400),
        reject("cl_differing_list", post("Content-Length: 5, 6\r\n", b"hello!"), 400),
        reject("cl_negative", post("Content-Length: -1\r\n", b"hello"), 400),
        reject("cl_plus_sign", post("Content-Length: +5\r\n", b"hello"), 400),
        reject("cl_hex", post("Content-Length: 0x5\r\n", b"hello"), 400),
        reject("cl_trailing_letter", post("Content-Length: 5a\r\n", b"hello"), 400),
        reject("cl_inner_space", post("Content-Length: 1 0\r\n", b"hello12345"), 400),
        reject("cl_empty", post("Content-Length:\r\n", b"hello"), 400),
        reject("cl_blank", post("Content-Length:  \r\n", b"hello"), 400),
        reject("cl_20_digit_overflow", post("Content-Length: 99999999999999999999\r\n", b"hello"), 400),
        ok("cl_identical_duplicates", post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), b"hello"),
        ok("cl_identical_list", post("Content-Length: 5, 5\r\n", b"hello"), b"hello"),
        ok("get_with_body_is_consumed", get_with_body, HELLO_WORLD),
        ok("cl_at_limit", post(&format!("Content-Length: {}\r\n", kib.len()), &kib), &kib),
        reject("cl_over_limit_no_body_sent", post("Content-Length: 1025\r\n", b""), 413),
        reject("head_cl_over_limit", b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413)
            .head_only(),
    ]
}

fn transfer_coding_cases() -> Vec<Case> {
    // The server runs with --max-body-bytes 1KiB.
    let over = format!("400\r\n{}\r\n1\r\nz\r\n0\r\n\r\n", "y".repeat(1024));
    let at = format!("400\r\n{}\r\n0\r\n\r\n", "y".repeat(1024));
    vec![
        ok(
            "chunked_extensions_and_trailers",
            chunked("5;a=b\r\nhello\r\n6;x=\"y z\";q\r\n world\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"),
            b"hello world",
        ),
        ok(
            "chunked_uppercase_hex",
            chunked("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"),
            b"0123456789abcdefghij",
        ),
        ok("chunked_at_limit", chunked(&at), "y".repeat(1024)),
        reject(
            "cl_and_te",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        reject(
            "te_and_cl",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        reject(
            "te_chunked_identity",
            post("Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        reject("te_gzip_chunked", post("Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), 501),
        reject("te_xchunked", post("Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), 501),
        reject(
            "te_on_http10",
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".as_slice(),
            400,
        ),
        reject("chunked_empty_size_line", chunked("\r\nhello\r\n0\r\n\r\n"), 400),
        reject("chunked_size_16_f", chunked("ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400),
        reject("chunked_size_17_digits", chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
        reject("chunked_no_crlf_after_size", chunked("5hello\r\n0\r\n\r\n"), 400),
        reject("chunked_no_crlf_after_data", chunked("5\r\nhello0\r\n\r\n"), 400),
        reject("chunked_bare_lf_after_size", chunked("5\nhello\r\n0\r\n\r\n"), 400),
        reject("chunked_bare_lf_after_data", chunked("5\r\nhello\n0\r\n\r\n"), 400),
        reject("chunked_bare_lf_after_last_chunk", chunked("5\r\nhello\r\n0\n\r\n"), 400),
        reject("chunked_extension_over_4k", chunked(format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000))), 400),
        reject(
            "chunked_trailers_over_8k",
            chunked(format!("5\r\nhello\r\n0\r\nX-T: {}\r\n\r\n", "t".repeat(9000))),
            400,
        ),
        reject("chunked_decoded_over_limit", chunked(&over), 413),
        // Errors answering HEAD: the head alone (RFC 9110 §9.3.2), found while reading the head
        // or, for the body's errors, the body.
        reject(
            "head_te_and_cl",
            b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            400,
        )
        .head_only(),
        reject(
            "head_chunked_bad_size",
            b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
            400,
        )
        .head_only(),
        reject(
            "head_chunked_decoded_over_limit",
            [b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(), over.as_bytes()]
                .concat(),
            413,
        )
        .head_only(),
    ]
}

/// `n` distinct header lines.
fn fields(n: usize) -> String {
    (0..n).map(|i| format!("X-F{i}: v\r\n")).collect()
}

fn size_limit_cases() -> Vec<Case> {
    // The server runs with --max-uri-bytes 512 --max-header-bytes 2KiB --max-headers 10.
    vec![
        ok(
            "uri_at_limit",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(511)),
            format!("Hello, \"/{}\"", "u".repeat(511)),
        ),
        reject("uri_over_limit", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(512)), 414),
        reject("head_uri_over_limit", format!("HEAD /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(512)), 414)
            .head_only(),
        reject("uri_far_over_limit", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(3000)), 414),
        ok("fields_at_limit", get_with(&fields(9)), HELLO_WORLD),
        reject("fields_over_limit", get_with(&fields(10)), 431),
        reject("head_fields_over_limit", format!("HEAD /plaintext HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(10)), 431)
            .head_only(),
        reject("many_tiny_fields", get_with(&"a: b\r\n".repeat(200)), 431),
        ok("head_under_limit", get_with(&format!("X-Big: {}\r\n", "b".repeat(1500))), HELLO_WORLD),
        reject("head_over_limit", get_with(&format!("X-Big: {}\r\n", "b".repeat(2100))), 431),
    ]
}

fn head_limit_cases() -> Vec<Case> {
    // The server runs with --max-uri-bytes 8KiB --max-header-bytes 2KiB: a request line can be
    // over the head limit while its target is within the URI limit.
    vec![
        ok("head_limit_baseline", VALID, HELLO_WORLD),
        reject("request_line_over_head_limit", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(3000)), 414),
        reject(
            "fields_push_long_line_over_head_limit",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "u".repeat(1500), "b".repeat(1000)),
            431,
        ),
    ]
}

fn method_and_route_cases() -> Vec<Case> {
    vec![
        ok("healthz", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"ok"),
        ok("hello_page", b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, \"/anything\""),
        ok("head_plaintext", b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", b"").head_only(),
        ok("echo_empty", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b""),
        answer("delete_plaintext", b"DELETE /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", 405)
            .allow(&["GET", "HEAD"], Some("DELETE")),
        answer("post_plaintext", b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405)
            .allow(&["GET", "HEAD"], Some("POST")),
        answer(
            "post_plaintext_with_body",
            b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            405,
        )
        .allow(&["GET", "HEAD"], Some("POST")),
        answer("get_echo", b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 405).allow(&["POST"], Some("GET")),
        answer("put_healthz", b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405)
            .allow(&["GET", "HEAD"], Some("PUT")),
        answer("unknown_method", b"FOO /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        answer("lowercase_method", b"get /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ]
}

fn expect_and_half_close_cases() -> Vec<Case> {
    // The server runs with --max-body-bytes 1KiB.
    vec![
        ok("expect_100_continue", post("Content-Length: 5\r\nExpect: 100-continue\r\n", b""), b"hello")
            .after_continue(b"hello"),
        ok("expect_100_continue_any_case", post("Content-Length: 5\r\nExpect: 100-Continue\r\n", b""), b"hello")
            .after_continue(b"hello"),
        ok(
            "expect_100_continue_chunked",
            post("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n", b""),
            b"hello",
        )
        .after_continue(b"5\r\nhello\r\n0\r\n\r\n"),
        reject("expect_100_continue_too_large", post("Content-Length: 2000\r\nExpect: 100-continue\r\n", b""), 413),
        reject("expect_teapot", get_with("Expect: teapot\r\n"), 417),
        reject("head_expect_teapot", b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417).head_only(),
        ok(
            "expect_on_http10_ignored",
            b"POST /echo HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello".as_slice(),
            b"hello",
        )
        .closes(),
        ok(
            "connection_close_then_another_request",
            b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            HELLO_WORLD,
        )
        .closes(),
        ok("half_close_after_get", VALID, HELLO_WORLD).half_close(),
        ok("half_close_after_post", post("Content-Length: 5\r\n", b"hello"), b"hello").half_close(),
    ]
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Whole,
    Bytewise,
    Pipelined,
}

/// One response as received.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Every byte of the response (head and body).
    raw: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        common::header_in(&self.headers, name)
    }

    fn connection_has(&self, token: &str) -> bool {
        common::connection_lists(&self.headers, token)
    }

    /// The response for messages: status line, fields and (the start of) the body.
    fn show(&self) -> String {
        show_bytes(&self.raw)
    }
}

fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 400;
    let text = format!("{:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]));
    if bytes.len() > MAX { format!("{text}… ({} bytes)", bytes.len()) } else { text }
}

/// Errors that a write may see once the server has answered with an error and closed.
fn is_cut(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted)
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("socket options: {e}"))?;
        Ok(Conn { stream, buf: Vec::new() })
    }

    /// Writes `bytes` whole or one byte per write. When `may_be_cut`, a broken pipe or reset
    /// (the server answered an error and closed) ends the writing without failing.
    fn send(&mut self, bytes: &[u8], bytewise: bool, may_be_cut: bool) -> Result<(), String> {
        let result = if bytewise {
            bytes.iter().try_for_each(|b| self.stream.write_all(std::slice::from_ref(b)))
        } else {
            self.stream.write_all(bytes)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if may_be_cut && is_cut(&e) => Ok(()),
            Err(e) => Err(format!("write failed: {e}")),
        }
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match read_some(&mut self.stream, &mut chunk) {
            Ok(0) => Err(format!("EOF while reading a response; received so far: {}", show_bytes(&self.buf))),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read failed ({e}); received so far: {}", show_bytes(&self.buf))),
        }
    }

    /// Reads one response, interim (1xx) ones included. The body is framed by Content-Length,
    /// except for 1xx, 204, 304 and `head_only`.
    fn read_reply(&mut self, head_only: bool) -> Result<Reply, String> {
        loop {
            let parsed = common::parse_response_head(&self.buf)
                .map_err(|e| format!("malformed response ({e}): {}", show_bytes(&self.buf)))?;
            let Some(common::ResponseHead { len: head_len, status, headers, .. }) = parsed else {
                self.fill()?;
                continue;
            };
            let bodiless = head_only || status < 200 || status == 204 || status == 304;
            let body_len = if bodiless {
                0
            } else {
                let lengths: Vec<&str> = headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.as_str())
                    .collect();
                match lengths.as_slice() {
                    [one] => one.trim().parse::<usize>().map_err(|_| {
                        format!("bad Content-Length {one:?} in response {}", show_bytes(&self.buf[..head_len]))
                    })?,
                    _ => {
                        return Err(format!(
                            "response without exactly one Content-Length: {}",
                            show_bytes(&self.buf[..head_len])
                        ));
                    }
                }
            };
            while self.buf.len() < head_len + body_len {
                self.fill()?;
            }
            let raw: Vec<u8> = self.buf.drain(..head_len + body_len).collect();
            let body = raw[head_len..].to_vec();
            return Ok(Reply { status, headers, body, raw });
        }
    }

    /// The server must close cleanly: no more bytes, then EOF (not a reset) within `within`.
    fn expect_eof(&mut self, within: Duration) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("unexpected bytes after the response: {}", show_bytes(&self.buf)));
        }
        self.stream.set_read_timeout(Some(within)).map_err(|e| format!("set_read_timeout: {e}"))?;
        let started = Instant::now();
        let mut chunk = [0u8; 4096];
        let result = match read_some(&mut self.stream, &mut chunk) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("unexpected bytes instead of EOF: {}", show_bytes(&chunk[..n]))),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(format!("no EOF within {within:?}: the connection stayed open"))
            }
            Err(e) => Err(format!("not a clean close after {:?}: {e}", started.elapsed())),
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        result
    }
}

/// Checks the answer to [`VALID`].
fn check_valid(reply: &Reply, what: &str) -> Result<(), String> {
    if reply.status != 200 || reply.body != HELLO_WORLD || reply.connection_has("close") {
        return Err(format!("{what}: expected 200 {HELLO_WORLD:?} without Connection: close, got {}", reply.show()));
    }
    Ok(())
}

/// Checks the case's final response.
fn check_reply(case: &Case, reply: &Reply) -> Result<(), String> {
    let got = reply.show();
    if !reply.raw.starts_with(b"HTTP/1.1 ") {
        return Err(format!("the status line must start with `HTTP/1.1 `, got {got}"));
    }
    if reply.status != case.status {
        return Err(format!("expected status {}, got {got}", case.status));
    }
    let close = reply.connection_has("close");
    match case.end {
        End::Open if close => return Err(format!("must stay open, but says Connection: close: {got}")),
        End::Close if !close => return Err(format!("an error answer must carry Connection: close: {got}")),
        // (An error answering HEAD has no body: RFC 9110 §9.3.2; `read_reply` read none, and
        // `expect_eof` below fails on any byte of one.)
        End::Close if reply.body.is_empty() && !case.head_only => {
            return Err(format!("an error answer must have a short body: {got}"));
        }
        End::Eof if !case.half_close && reply.connection_has("keep-alive") => {
            return Err(format!("must not announce keep-alive on a connection that closes: {got}"));
        }
        _ => {}
    }
    if let Some(body) = &case.body
        && &reply.body != body
    {
        return Err(format!("expected body {}, got {got}", show_bytes(body)));
    }
    if case.head_only && reply.header("content-length").is_none() {
        return Err(format!("HEAD response without Content-Length: {got}"));
    }
    if let Some((must, must_not)) = case.allow {
        let Some(allow) = reply.header("allow") else { return Err(format!("no Allow header: {got}")) };
        let listed: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
        if let Some(missing) = must.iter().find(|m| !listed.contains(*m)) {
            return Err(format!("Allow must list {missing}: {got}"));
        }
        if let Some(no) = must_not
            && listed.contains(no)
        {
            return Err(format!("Allow must not list {no}: {got}"));
        }
    }
    Ok(())
}

/// Runs one case one way on a fresh connection.
fn run_case(addr: SocketAddr, case: &Case, mode: Mode) -> Result<(), String> {
    let mut conn = Conn::open(addr)?;
    let bytewise = mode == Mode::Bytewise;
    // Once the server may close (an error, or a request that ends the connection), a write of the
    // remaining bytes may fail; the response must still be readable.
    let may_be_cut = case.end != End::Open;
    let mut bytes = Vec::new();
    if mode == Mode::Pipelined {
        bytes.extend_from_slice(VALID);
    }
    bytes.extend_from_slice(&case.raw);
    conn.send(&bytes, bytewise, may_be_cut)?;
    if case.half_close {
        conn.stream.shutdown(Shutdown::Write).map_err(|e| format!("shutdown(Write): {e}"))?;
    }
    if mode == Mode::Pipelined {
        let first = conn.read_reply(false).map_err(|e| format!("the valid request before the case: {e}"))?;
        check_valid(&first, "the valid request before the case")?;
    }
    let mut reply = conn.read_reply(case.head_only)?;
    if let Some(body) = &case.continue_body {
        if reply.raw != CONTINUE {
            return Err(format!(
                "expected exactly {} before sending the body, got {}",
                show_bytes(CONTINUE),
                reply.show()
            ));
        }
        conn.send(body, bytewise, false)?;
        reply = conn.read_reply(case.head_only)?;
    }
    if reply.status < 200 {
        return Err(format!("unexpected interim response {}", reply.show()));
    }
    check_reply(case, &reply)?;
    match case.end {
        End::Open => {
            conn.send(VALID, false, false).map_err(|e| format!("the request after the case: {e}"))?;
            let next = conn.read_reply(false).map_err(|e| format!("the request after the case: {e}"))?;
            check_valid(&next, "the request after the case (connection must stay usable)")
        }
        End::Close | End::Eof => conn.expect_eof(EOF_WAIT),
    }
}

/// Runs every case of `cases` three ways, one thread per case, and fails with the list of every
/// run that went wrong.
fn run_table(table: &str, args: &[&str], cases: Vec<Case>) {
    let server = Quiesce::start(args);
    let addr = server.addr();
    let started = Instant::now();
    let failures: Vec<String> = thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|case| {
                scope.spawn(move || {
                    [Mode::Whole, Mode::Bytewise, Mode::Pipelined]
                        .into_iter()
                        .filter_map(|mode| {
                            run_case(addr, case, mode).err().map(|e| format!("{} [{mode:?}]: {e}", case.name))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|run| run.join().expect("case thread panicked")).collect()
    });
    println!("{table}: {} cases × 3 ways in {:?}", cases.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{table}: {} of {} runs failed:\n{}",
        failures.len(),
        cases.len() * 3,
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------------

#[test]
fn tables_have_enough_distinct_cases() {
    let tables = [
        request_line_cases(),
        host_and_target_cases(),
        field_syntax_cases(),
        content_length_cases(),
        transfer_coding_cases(),
        size_limit_cases(),
        head_limit_cases(),
        method_and_route_cases(),
        expect_and_half_close_cases(),
    ];
    let names: Vec<&str> = tables.iter().flatten().map(|c| c.name).collect();
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(distinct.len(), names.len(), "case names must be unique");
    assert!(names.len() >= 60, "only {} cases", names.len());
}

#[test]
fn request_line() {
    run_table("request_line", &[], request_line_cases());
}

#[test]
fn host_and_target() {
    run_table("host_and_target", &[], host_and_target_cases());
}

#[test]
fn field_syntax() {
    run_table("field_syntax", &[], field_syntax_cases());
}

#[test]
fn content_length() {
    run_table("content_length", &["--max-body-bytes", "1024"], content_length_cases());
}

#[test]
fn transfer_coding() {
    run_table("transfer_coding", &["--max-body-bytes", "1KiB"], transfer_coding_cases());
}

#[test]
fn size_limits() {
    run_table(
        "size_limits",
        &["--max-uri-bytes", "512", "--max-header-bytes", "2KiB", "--max-headers", "10"],
        size_limit_cases(),
    );
}

#[test]
fn head_limit() {
    run_table("head_limit", &["--max-uri-bytes", "8KiB", "--max-header-bytes", "2KiB"], head_limit_cases());
}

#[test]
fn methods_and_routes() {
    run_table("methods_and_routes", &[], method_and_route_cases());
}

#[test]
fn expect_and_half_close() {
    run_table("expect_and_half_close", &["--max-body-bytes", "1KiB"], expect_and_half_close_cases());
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn idle_keep_alive_connection_closed_silently() {
    let server = Quiesce::start(&["--idle-timeout", "1s"]);
    let mut conn = Conn::open(server.addr()).expect("connect");
    conn.send(VALID, false, false).expect("send");
    let reply = conn.read_reply(false).expect("response");
    check_valid(&reply, "the request before idling").unwrap();
    let answered = Instant::now();
    // The connection is idle from here; the server must close it without a byte.
    let result = conn.expect_eof(Duration::from_secs(5));
    let idle_for = answered.elapsed();
    assert_eq!(result, Ok(()), "idle connection after {idle_for:?}");
    assert!(
        idle_for >= Duration::from_millis(900),
        "idle connection closed after only {idle_for:?} (--idle-timeout 1s)"
    );
}

#[test]
fn stalled_reader_dropped_after_write_timeout() {
    const BODY: usize = 8 << 20;
    let server = Quiesce::start(&["--write-timeout", "1s", "--max-body-bytes", "16MiB"]);
    let addr = server.addr();
    let mut conn = Conn::open(addr).expect("connect");
    // A small receive buffer, so the response cannot all sit in the client's kernel.
    set_receive_buffer(&conn.stream, 16 * 1024);
    conn.stream.set_write_timeout(Some(Duration::from_secs(20))).expect("set_write_timeout");
    let mut req = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    req.resize(req.len() + BODY, b'e');
    conn.send(&req, false, false).expect("send the 8 MiB request");

    // Time matters: stop reading for longer than the write timeout.
    thread::sleep(Duration::from_secs(3));
    // The stalled write does not hold up anybody else.
    let mut other = Conn::open(addr).expect("connect a second client");
    other.send(VALID, false, false).expect("send on the second client");
    check_valid(&other.read_reply(false).expect("second client's response"), "second client").unwrap();

    // Now read what is there: it must end (EOF or reset) before the whole response.
    conn.stream.set_read_timeout(Some(Duration::from_secs(3))).expect("set_read_timeout");
    let mut total = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    let end = loop {
        match read_some(&mut conn.stream, &mut chunk) {
            Ok(0) => break "EOF".to_owned(),
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!("the connection was not dropped: still open after {total} bytes of the response")
            }
            Err(e) => break format!("{e}"),
        }
    };
    assert!(total > 0, "not a byte of the response arrived before the drop ({end})");
    assert!(total < BODY, "the whole response arrived ({total} bytes, then {end}): the stalled client was not dropped");
}

#[test]
fn slow_reader_within_write_timeout_gets_everything() {
    const BODY: usize = 8 << 20;
    let server = Quiesce::start(&["--write-timeout", "3s", "--max-body-bytes", "16MiB"]);
    let mut conn = Conn::open(server.addr()).expect("connect");
    set_receive_buffer(&conn.stream, 16 * 1024);
    conn.stream.set_write_timeout(Some(Duration::from_secs(20))).expect("set_write_timeout");
    let mut req = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    req.resize(req.len() + BODY, b'e');
    conn.send(&req, false, false).expect("send the 8 MiB request");
    // Time matters: a stall well within the 3 s write timeout.
    thread::sleep(Duration::from_secs(1));
    let reply = conn.read_reply(false).expect("the whole response after a short stall");
    assert_eq!(reply.status, 200, "{}", show_bytes(&reply.raw[..reply.raw.len() - reply.body.len()]));
    assert!(reply.body.len() == BODY && reply.body.iter().all(|&b| b == b'e'), "the echoed body differs");
    assert_still_open(&mut conn);
}

/// One more valid request on `conn` gets 200.
fn assert_still_open(conn: &mut Conn) {
    conn.send(VALID, false, false).expect("send after the large response");
    let next = conn.read_reply(false).expect("response after the large response");
    check_valid(&next, "the request after the large response").unwrap();
}

/// Sets SO_RCVBUF on a connected socket.
fn set_receive_buffer(stream: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF): {}", io::Error::last_os_error());
}
