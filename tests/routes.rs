//! Routes, HTTP/1.1 framing and the command line of the `quiesce` binary.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SHORT: Duration = Duration::from_millis(300);

/// Starts a default server, GETs `path` and checks the hello body for it.
fn check_hello(path: &str, quoted: &str) {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(&get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_ok_body(&resp, &hello(quoted));
    assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"), "Content-Type for GET {path}");
}

// --- the hello route's Go-style quoting ------------------------------------------------------

#[test]
fn hello_root() {
    check_hello("/", r#""/""#);
}

#[test]
fn hello_html_escapes_angle_brackets() {
    check_hello("/a<b>", r#""/a&lt;b&gt;""#);
}

#[test]
fn hello_escapes_percent_encoded_double_quote() {
    check_hello("/x%22y", r#""/x&#34;y""#);
}

#[test]
fn hello_escapes_single_quote() {
    check_hello("/it's", r#""/it&#39;s""#);
}

#[test]
fn hello_decodes_utf8() {
    check_hello("/caf%C3%A9", "\"/café\"");
}

#[test]
fn hello_quotes_newline() {
    check_hello("/%0A", r#""/\n""#);
}

#[test]
fn hello_quotes_invalid_utf8_byte() {
    check_hello("/%FF", r#""/\xff""#);
}

#[test]
fn hello_doubles_backslash() {
    check_hello("/a%5Cb", r#""/a\\b""#);
}

#[test]
fn hello_ignores_query_in_body() {
    check_hello("/q?x=1", r#""/q""#);
}

// --- fixed routes ------------------------------------------------------------------------------

#[test]
fn healthz_get_and_head() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(&get("/healthz")).expect("GET /healthz");
    assert_ok_body(&resp, "ok");
    assert!(!resp.is_close(), "keep-alive expected: {resp:?}");

    c.send(&head("/healthz")).expect("send HEAD");
    let resp = c.read_head_response().expect("HEAD /healthz");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.content_length(), Some(2), "HEAD Content-Length: {resp:?}");
    assert_common_headers(&resp, true);
    assert_eq!(
        c.close_state(Duration::from_millis(200)),
        CloseState::Open,
        "HEAD /healthz must send no body and keep the connection open"
    );
}

#[test]
fn plaintext() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(&get("/plaintext")).expect("GET /plaintext");
    assert_ok_body(&resp, "Hello, World!");
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "Content-Type of /plaintext: {ct:?}");
}

#[test]
fn json() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(&get("/json")).expect("GET /json");
    assert_ok_body(&resp, r#"{"message":"Hello, World!"}"#);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(c.request(b"POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap().status, 405);
}

#[test]
fn health_and_metrics_are_never_cached() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    for path in ["/healthz", "/metrics"] {
        let resp = c.request(&get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{path}");
    }
}

// --- connection handling -----------------------------------------------------------------------

#[test]
fn keep_alive_three_requests_on_one_connection() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    for (path, body) in
        [("/one", hello(r#""/one""#)), ("/plaintext", "Hello, World!".to_string()), ("/three", hello(r#""/three""#))]
    {
        let resp = c.request(&get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_ok_body(&resp, &body);
        assert!(!resp.is_close(), "unexpected Connection: close: {resp:?}");
    }
    assert_eq!(c.close_state(SHORT), CloseState::Open, "connection must stay open after keep-alive requests");
}

#[test]
fn pipelined_requests_answered_in_order() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let paths = ["/p1", "/p2", "/p3", "/p4", "/p5"];
    let all: Vec<u8> = paths.iter().flat_map(|p| get(p)).collect();
    c.send(&all).expect("send 5 pipelined requests");
    for p in paths {
        let resp = c.read_response().unwrap_or_else(|e| panic!("response for {p}: {e}"));
        assert_ok_body(&resp, &hello(&format!("\"{p}\"")));
    }
    assert_eq!(c.close_state(SHORT), CloseState::Open, "no extra bytes and still open after 5 pipelined responses");
}

#[test]
fn head_has_get_headers_and_no_body() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let get_resp = c.request(&get("/some/path")).expect("GET /some/path");
    assert_ok_body(&get_resp, &hello(r#""/some/path""#));

    // HEAD then GET in one write: if HEAD carried a body, the GET response would not parse.
    let mut both = head("/some/path");
    both.extend_from_slice(&get("/after-head"));
    c.send(&both).expect("send HEAD + GET");
    let head_resp = c.read_head_response().expect("HEAD response");
    assert_eq!(head_resp.status, 200, "{head_resp:?}");
    assert_common_headers(&head_resp, true);
    assert_eq!(head_resp.content_length(), get_resp.content_length(), "HEAD Content-Length must equal GET's");
    assert_eq!(head_resp.header("content-type"), get_resp.header("content-type"), "HEAD Content-Type must equal GET's");
    let next = c.read_response().expect("GET after HEAD");
    assert_ok_body(&next, &hello(r#""/after-head""#));

    c.send(&head("/plaintext")).expect("send HEAD /plaintext");
    let resp = c.read_head_response().expect("HEAD /plaintext");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.content_length(), Some("Hello, World!".len()));
    assert_eq!(c.close_state(Duration::from_millis(200)), CloseState::Open, "HEAD /plaintext must send no body");
}

#[test]
fn http10_closes_by_default() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(b"GET /plaintext HTTP/1.0\r\n\r\n").expect("HTTP/1.0 request");
    assert_ok_body(&resp, "Hello, World!");
    assert!(
        !resp.connection_has("keep-alive"),
        "HTTP/1.0 response without keep-alive must not say keep-alive: {resp:?}"
    );
    assert_eq!(
        c.close_state(Duration::from_secs(2)),
        CloseState::Eof,
        "HTTP/1.0 connection must be closed (cleanly) after the response"
    );
}

#[test]
fn http10_keep_alive_stays_open() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let req = b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let resp = c.request(req).expect("first HTTP/1.0 keep-alive request");
    assert_ok_body(&resp, "Hello, World!");
    assert!(resp.connection_has("keep-alive"), "response must carry Connection: keep-alive: {resp:?}");
    assert_eq!(c.close_state(SHORT), CloseState::Open, "must stay open");
    let resp = c.request(req).expect("second HTTP/1.0 keep-alive request");
    assert_ok_body(&resp, "Hello, World!");
    assert!(resp.connection_has("keep-alive"), "{resp:?}");
}

#[test]
fn connection_close_is_honoured() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(&get_close("/bye")).expect("Connection: close request");
    assert_ok_body(&resp, &hello(r#""/bye""#));
    assert!(resp.is_close(), "response must carry Connection: close: {resp:?}");
    assert_eq!(
        c.close_state(Duration::from_secs(2)),
        CloseState::Eof,
        "server must close cleanly after Connection: close"
    );
}

#[test]
fn head_sent_one_byte_at_a_time() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    c.stream.set_nodelay(true).expect("TCP_NODELAY");
    let req = get("/slowly");
    for byte in &req {
        c.stream.write_all(&[*byte]).expect("write one byte");
        c.stream.flush().expect("flush");
        // Time matters here: a pause makes each byte its own segment.
        thread::sleep(Duration::from_millis(2));
    }
    let resp = c.read_response().expect("response to byte-wise request");
    assert_ok_body(&resp, &hello(r#""/slowly""#));
}

// --- /echo -------------------------------------------------------------------------------------

#[test]
fn echo_content_length() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let body = b"some body\r\nwith two lines and bytes \x00\xff";
    let resp = c.request(&post_echo("application/octet-stream", body)).expect("POST /echo");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, body, "echoed body");
    assert_common_headers(&resp, false);
    assert_eq!(resp.header("content-type"), Some("application/octet-stream"));
    // The connection is still usable afterwards.
    let resp = c.request(&get("/plaintext")).expect("GET after echo");
    assert_ok_body(&resp, "Hello, World!");
}

#[test]
fn echo_chunked_with_extension_and_trailer() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let req = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n\
        Transfer-Encoding: chunked\r\n\r\n\
        5\r\nHello\r\n\
        2;name=value\r\n, \r\n\
        A\r\nchunked wo\r\n\
        3\r\nrld\r\n\
        0\r\nX-Trailer: yes\r\n\r\n";
    let resp = c.request(req).expect("chunked POST /echo");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "Hello, chunked world");
    assert_common_headers(&resp, false);
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    // The trailer was consumed: the next request on the connection is parsed correctly.
    let resp = c.request(&get("/plaintext")).expect("GET after chunked echo");
    assert_ok_body(&resp, "Hello, World!");
}

#[test]
fn echo_empty_body() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").expect("empty POST /echo");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.is_empty(), "{resp:?}");
    assert_eq!(resp.content_length(), Some(0), "{resp:?}");
    assert_common_headers(&resp, false);

    // Also an empty chunked body.
    let resp = c
        .request(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .expect("empty chunked POST /echo");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.content_length(), Some(0), "{resp:?}");
}

#[test]
fn echo_keeps_content_type() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let body = br#"{"k": [1, 2, 3]}"#;
    let resp = c.request(&post_echo("application/json; charset=utf-8", body)).expect("POST /echo json");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, body);
    assert_eq!(resp.header("content-type"), Some("application/json; charset=utf-8"));
    assert_common_headers(&resp, false);
}

// --- errors ------------------------------------------------------------------------------------

#[test]
fn delete_is_405_with_allow() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(b"DELETE /x HTTP/1.1\r\nHost: test\r\n\r\n").expect("DELETE /x");
    assert_eq!(resp.status, 405, "{resp:?}");
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"), "{resp:?}");
    assert_common_headers(&resp, false);
}

#[test]
fn unreadable_delay_is_400() {
    let server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let resp = c.request(&get("/x?delay=abc")).expect("GET ?delay=abc");
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_common_headers(&resp, false);
}

// --- delays ------------------------------------------------------------------------------------

#[test]
fn delay_is_a_timer_not_a_sleep() {
    let server = Quiesce::start(&[]);
    let mut slow = connect(server.addr());
    let started = Instant::now();
    slow.send(&get("/slow?delay=2s")).expect("send delayed");
    // Once this is answered, the single-threaded server has read the delayed request.
    sync_point(server.addr());

    let mut fast = connect(server.addr());
    for path in ["/plaintext", "/fast"] {
        let resp = fast.request(&get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status, 200, "{resp:?}");
        // Ordering, not speed: the delayed response is still pending.
        assert_eq!(
            slow.close_state(Duration::from_millis(1)),
            CloseState::Open,
            "GET {path} was answered only after the delayed request"
        );
    }

    let resp = slow.read_response().expect("delayed response");
    let took = started.elapsed();
    assert_ok_body(&resp, &hello(r#""/slow""#));
    assert!(took >= Duration::from_secs(2), "?delay=2s answered after only {took:?}");
    assert!(took < Duration::from_secs(4), "?delay=2s took {took:?}");
}

#[test]
fn delay_flag_applies_to_hello_route() {
    let server = Quiesce::start(&["--delay", "2s"]);
    let mut delayed = connect(server.addr());
    let t = Instant::now();
    delayed.send(&get("/d")).expect("send GET /d");
    // /plaintext is not delayed: it is answered while /d is still pending.
    let mut c = connect(server.addr());
    let resp = c.request(&get("/plaintext")).expect("GET /plaintext");
    assert_ok_body(&resp, "Hello, World!");
    assert_eq!(
        delayed.close_state(Duration::from_millis(1)),
        CloseState::Open,
        "/plaintext was answered only after the delayed /d"
    );
    let resp = delayed.read_response().expect("GET /d");
    let took = t.elapsed();
    assert_ok_body(&resp, &hello(r#""/d""#));
    assert!(took >= Duration::from_secs(2), "--delay 2s took {took:?}");
    assert!(took < Duration::from_secs(4), "--delay 2s took {took:?}");
}

#[test]
fn max_delay_caps_query_delay() {
    let server = Quiesce::start(&["--max-delay", "100ms"]);
    let mut c = connect(server.addr());
    let t = Instant::now();
    let resp = c.request(&get("/capped?delay=10s")).expect("GET ?delay=10s");
    let took = t.elapsed();
    assert_ok_body(&resp, &hello(r#""/capped""#));
    assert!(took >= Duration::from_millis(90), "capped delay answered after only {took:?}");
    assert!(took < Duration::from_secs(2), "?delay=10s with --max-delay 100ms took {took:?}");
}

// --- command line ------------------------------------------------------------------------------

const CLI_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn help_exits_zero_with_usage() {
    let out = run_cli(&["--help"], CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "--help exit; stderr: {}", out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.to_lowercase().contains("usage"), "--help must print usage text, got:\n{text}");
    for flag in ["--addr", "--delay", "--max-delay", "--shutdown-timeout"] {
        assert!(text.contains(flag), "--help does not mention {flag}:\n{text}");
    }
}

#[test]
fn version_exits_zero() {
    let out = run_cli(&["--version"], CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "--version exit; stderr: {}", out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "--version must print {}, got:\n{text}",
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn bogus_flag_exits_two() {
    let out = run_cli(&["--bogus"], CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "--bogus exit; stdout: {}; stderr: {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("bogus"), "stderr must name the bad flag, got:\n{}", out.stderr);
}

#[test]
fn bad_duration_exits_two() {
    let out = run_cli(&["--delay", "soon"], CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "--delay soon exit; stderr: {}", out.stderr);
    assert!(!out.stderr.trim().is_empty(), "no message on stderr");
}

/// A client that asked to close and sent a stray CRLF after a large body (old clients do) gets
/// the whole response and a clean end of stream: the server must not close with that input
/// still unread in the kernel, which would reset the connection and discard the response.
#[test]
fn close_request_with_bytes_after_the_body_gets_the_whole_response() {
    let server = Quiesce::start(&[]);
    for (version, extra) in [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")] {
        let body = vec![b'x'; 200_000];
        let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let head = format!("POST /echo {version}\r\nHost: test\r\n{extra}Content-Length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).expect("head");
        stream.write_all(&body[..100_000]).expect("first half");
        thread::sleep(Duration::from_millis(50));
        stream.write_all(&body[100_000..]).expect("second half");
        stream.write_all(b"\r\n").expect("stray CRLF");
        // Let the server answer and close before reading anything.
        thread::sleep(Duration::from_millis(300));
        let mut response = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut response)
            .unwrap_or_else(|e| panic!("{version}: {e} after {} bytes", response.len()));
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "{version}");
        assert!(response.ends_with(&body), "{version}: {} bytes", response.len());
    }
}
