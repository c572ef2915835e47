//! The error hook over real sockets: every response the server makes itself (400, 408, 413,
//! 414, 431, and 500 for a panicking handler, a dropped responder, `Reply::Later` without a
//! responder) and the ones handlers make through `Response::set_error` (the router's 404 and
//! 405, the blocking pool's 503) go through one renderer, here RFC 9457 problem details; the
//! server keeps the status, `Content-Length` and `Connection: close`. Without a hook the bodies
//! stay one line of plain text.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use common::{Client, connect, get};
use quiesce::errors::{ErrorInfo, problem_json};
use quiesce::{Error, Outcome, Reply, Request, Response, Server, ServerConfig, ShutdownHandle};

/// What the hook saw: status, method, target.
type Seen = Arc<Mutex<Vec<(u16, Option<String>, Option<String>)>>>;

struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<Outcome, Error>>>,
    seen: Seen,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.immediate();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The handler: `/missing` 404, `/readonly` 405 with `Allow`, `/busy` 503 with `Retry-After`
/// (as the router and the pool make them), `/panic` panics, `/drop` drops its responder,
/// `/later` returns `Later` without one; anything else 200.
fn handler(req: &Request<'_>, res: &mut Response) -> Reply {
    match req.path() {
        "/missing" => {
            res.set_error(req, 404, "no route for this path");
        }
        "/readonly" => {
            res.set_error(req, 405, "this route serves GET and HEAD");
            res.add_header("Allow", "GET, HEAD").unwrap();
        }
        "/busy" => {
            res.set_error(req, 503, "too much blocking work queued");
            res.add_header("Retry-After", "1").unwrap();
        }
        "/panic" => panic!("a handler bug"),
        "/drop" => {
            let responder = res.defer();
            thread::spawn(move || drop(responder));
            return Reply::Later;
        }
        "/later" => return Reply::Later,
        _ => {
            res.set_body("ok");
        }
    }
    Reply::Now
}

fn config() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        max_body_bytes: 16,
        max_uri_bytes: 64,
        max_head_bytes: 512,
        header_timeout: std::time::Duration::from_millis(300),
        ..ServerConfig::default()
    }
}

fn start(hooked: bool) -> Running {
    let mut server = Server::bind(config(), handler).expect("bind");
    let seen = Seen::default();
    if hooked {
        let sink = Arc::clone(&seen);
        server.set_error_renderer(move |err: &ErrorInfo<'_>, res: &mut Response| {
            sink.lock().unwrap().push((err.status(), err.method().map(str::to_owned), err.target().map(str::to_owned)));
            problem_json(err, res);
            res.add_header("X-Rendered", "problem").unwrap();
            // What a hook may not do: the server keeps the status and the framing.
            res.set_status(200);
            assert!(res.add_header("Content-Length", "1").is_err());
        });
    }
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let thread = Some(thread::spawn(move || server.run()));
    Running { addr, handle, thread, seen }
}

/// Sends `request` on a new connection and reads one response.
fn ask(server: &Running, request: &[u8]) -> (Client, common::Response) {
    let mut client = connect(server.addr);
    let response = client.request(request).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(request)));
    (client, response)
}

/// The problem object the hook rendered for `status`, checked field by field.
fn assert_problem(response: &common::Response, status: u16, title: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/problem+json"), "{response:?}");
    assert_eq!(response.header("x-rendered"), Some("problem"));
    assert_eq!(response.content_length(), Some(response.body.len()), "the server frames the hook's body");
    let body = response.text();
    assert!(
        body.starts_with(&format!(r#"{{"type":"about:blank","title":"{title}","status":{status},"detail":""#)),
        "{body}"
    );
}

/// A protocol error: rendered, then `Connection: close` and a close.
fn assert_closing(client: &mut Client, response: &common::Response) {
    assert!(response.is_close(), "the server adds Connection: close: {response:?}");
    assert!(common::is_closed(client), "the connection closes after a protocol error");
}

#[test]
fn every_protocol_error_goes_through_the_hook() {
    let server = start(true);
    let long_target = format!("/{}", "a".repeat(100));
    let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n", "p".repeat(600));
    let cases: [(&[u8], u16, &str); 5] = [
        (b"GET / HTTP/1.1\r\n\r\n", 400, "Bad Request"),
        (format!("GET {long_target} HTTP/1.1\r\nHost: a\r\n\r\n").leak().as_bytes(), 414, "URI Too Long"),
        (big_head.as_bytes(), 431, "Request Header Fields Too Large"),
        (b"POST /upload?id=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n", 413, "Content Too Large"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: nothing\r\n\r\n", 417, "Expectation Failed"),
    ];
    for (request, status, title) in cases {
        let (mut client, response) = ask(&server, request);
        assert_problem(&response, status, title);
        assert_closing(&mut client, &response);
    }
    // A chunked body found over the limit as it arrives: the head was read, so the hook is
    // told the request.
    let (mut client, response) = ask(
        &server,
        b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n",
    );
    assert_problem(&response, 413, "Content Too Large");
    assert!(response.text().ends_with(r#","instance":"/chunks"}"#), "{}", response.text());
    assert_closing(&mut client, &response);
    // 408: a head that does not arrive within the header timeout.
    let (mut client, response) = ask(&server, b"GET / HTTP/1.1\r\nHost:");
    assert_problem(&response, 408, "Request Timeout");
    assert_closing(&mut client, &response);

    let seen = server.seen.lock().unwrap().clone();
    let statuses: Vec<u16> = seen.iter().map(|s| s.0).collect();
    assert_eq!(statuses, [400, 414, 431, 413, 417, 413, 408]);
    // Known only once the head was read: the declared 413 and the chunked one.
    assert_eq!(seen[3].1.as_deref(), Some("POST"));
    assert_eq!(seen[3].2.as_deref(), Some("/upload?id=1"));
    assert_eq!(seen[5].2.as_deref(), Some("/chunks"));
    assert_eq!((seen[0].1.as_deref(), seen[6].1.as_deref()), (None, None));
}

#[test]
fn every_500_goes_through_the_hook_and_closes() {
    let server = start(true);
    for path in ["/panic", "/drop", "/later"] {
        let (mut client, response) = ask(&server, &get(path));
        assert_problem(&response, 500, "Internal Server Error");
        assert!(response.text().contains(r#""detail":"internal server error""#), "{}", response.text());
        assert_closing(&mut client, &response);
    }
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    // A panic is caught while the request is at hand; a dropped responder's is long gone.
    assert_eq!((seen[0].1.as_deref(), seen[0].2.as_deref()), (Some("GET"), Some("/panic")));
    assert_eq!(seen[1].2, None);
    // The server carries on.
    let (_, fine) = ask(&server, &get("/fine"));
    assert_eq!((fine.status, fine.text().as_str()), (200, "ok"));
}

#[test]
fn errors_a_handler_makes_go_through_the_hook_and_keep_the_connection() {
    let server = start(true);
    let mut client = connect(server.addr);
    for (path, status, title, extra) in [
        ("/missing", 404, "Not Found", ("x-rendered", "problem")),
        ("/readonly?a=b", 405, "Method Not Allowed", ("allow", "GET, HEAD")),
        ("/busy", 503, "Service Unavailable", ("retry-after", "1")),
    ] {
        let response = client.request(&get(path)).unwrap();
        assert_problem(&response, status, title);
        assert_eq!(response.header(extra.0), Some(extra.1), "headers added after the error stay");
        assert!(!response.is_close(), "a handler's error keeps the connection: {response:?}");
    }
    let response = client.request(&get("/readonly?a=b")).unwrap();
    assert!(response.text().ends_with(r#""instance":"/readonly"}"#), "no query echoed: {}", response.text());
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen[0], (404, Some("GET".into()), Some("/missing".into())));
    assert_eq!(seen[1].2.as_deref(), Some("/readonly?a=b"));
}

#[test]
fn without_a_hook_every_error_is_one_line_of_plain_text() {
    let server = start(false);
    for (request, status, body) in [
        (get("/missing"), 404, "no route for this path\n"),
        (get("/busy"), 503, "too much blocking work queued\n"),
        (get("/panic"), 500, "internal server error\n"),
        (get("/drop"), 500, "internal server error\n"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400, "missing Host\n"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n".to_vec(),
            413,
            "the request body is larger than this server accepts\n",
        ),
    ] {
        let (_, response) = ask(&server, &request);
        assert_eq!((response.status, response.text().as_str()), (status, body));
        assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    assert!(server.seen.lock().unwrap().is_empty());
}
