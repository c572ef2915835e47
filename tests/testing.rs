//! The public test client (`quiesce::testing::TestClient`) itself: requests of every kind
//! against handlers that answer at once, after a delay, from another thread, in a stream (cut
//! or whole), with errors through the hook; keep-alive and a new connection after a close; a
//! bounded wait for an answer that never comes. No socket anywhere.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use quiesce::errors::problem_json;
use quiesce::testing::TestClient;
use quiesce::{Header, Reply, Request, Response, ServerConfig, Version};

/// Echoes what it got: `METHOD target|x-test header|body`, connection id in a header.
fn echo(req: &Request<'_>, res: &mut Response) -> Reply {
    let header = req.header("x-test").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    let body = String::from_utf8_lossy(req.body()).into_owned();
    res.set_body(format!("{} {}|{header}|{body}", req.method(), req.target()));
    res.add_header("X-Connection", req.connection_id().to_string()).unwrap();
    if req.path() == "/close" {
        res.set_close();
    }
    Reply::Now
}

#[test]
fn each_method_is_one_line() {
    let mut client = TestClient::new(echo);
    let r = client.get("/a?b=c");
    assert_eq!((r.status(), r.text()), (200, "GET /a?b=c||"));
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("12"));
    assert!(r.headers().any(|(name, _)| name == "Date"));
    assert!(r.is_complete());
    assert_eq!(client.post("/p", "hello").text(), "POST /p||hello");
    assert_eq!(client.put("/p", b"bytes").text(), "PUT /p||bytes");
    assert_eq!(client.delete("/p").text(), "DELETE /p||");
    let head = client.head("/h");
    assert_eq!((head.status(), head.body()), (200, &b""[..]));
    assert_eq!(head.header("content-length"), Some("9"), "HEAD shows the length GET would get");
    let built = client.build("PATCH", "/x").header("X-Test", "yes").body("b").send();
    assert_eq!(built.text(), "PATCH /x|yes|b");
    let old = client.build("GET", "/old").http_1_0().send();
    assert_eq!(old.text(), "GET /old||");
    assert_eq!(old.header("connection"), Some("close"));
}

#[test]
fn one_connection_serves_in_turn_and_a_new_one_follows_a_close() {
    let mut client = TestClient::new(echo);
    let first = client.get("/1");
    let second = client.get("/2");
    assert_eq!(first.header("x-connection"), second.header("x-connection"), "keep-alive");
    let closing = client.get("/close");
    assert_eq!(closing.header("connection"), Some("close"));
    let after = client.get("/3");
    assert_eq!(after.status(), 200);
    assert_ne!(after.header("x-connection"), closing.header("x-connection"), "a new connection");
}

#[test]
fn raw_bytes_get_what_the_server_makes_of_them() {
    let mut client = TestClient::with_config(ServerConfig { max_body_bytes: 4, ..ServerConfig::default() }, echo);
    let bad = client.request("GET / HTTP/1.1\r\n\r\n");
    assert_eq!((bad.status(), bad.text()), (400, "missing Host\n"));
    assert_eq!(bad.header("connection"), Some("close"));
    let big = client.post("/p", "too long");
    assert_eq!(big.status(), 413);
    // An incomplete head: the server's clock jumps to its header timeout.
    assert_eq!(client.request("GET / HTTP/1.1\r\nHost:").status(), 408);
    assert_eq!(client.request("GET /raw HTTP/1.1\r\nHost: a\r\n\r\n").text(), "GET /raw||");
}

#[test]
fn a_delay_is_skipped_over_and_an_answer_from_another_thread_is_waited_for() {
    let handler = |req: &Request<'_>, res: &mut Response| match req.path() {
        "/later" => Reply::After(Duration::from_secs(3600)),
        "/thread" => {
            let responder = res.defer();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                let mut answer = Response::new();
                answer.set_status(201).set_body("made elsewhere");
                responder.send(answer).unwrap();
            });
            Reply::Later
        }
        "/dropped" => {
            let responder = res.defer();
            thread::spawn(move || drop(responder));
            Reply::Later
        }
        _ => Reply::Now,
    };
    let mut client = TestClient::new(handler);
    // An hour's delay in a test bounded to a second: the clock jumps.
    client.set_timeout(Duration::from_secs(1));
    assert_eq!(client.get("/later").status(), 200);
    client.set_timeout(Duration::from_secs(5));
    let r = client.get("/thread");
    assert_eq!((r.status(), r.text()), (201, "made elsewhere"));
    assert_eq!(client.get("/dropped").status(), 500);
}

#[test]
fn streams_whole_and_cut() {
    let piece = vec![b'x'; 10_000];
    let total = 40 * piece.len();
    let handler = move |req: &Request<'_>, res: &mut Response| {
        let responder = res.defer();
        let (path, piece) = (req.path().to_owned(), piece.clone());
        thread::spawn(move || match path.as_str() {
            "/chunked" => {
                let mut stream = responder.stream(Response::new()).unwrap();
                // More than the stream's buffer holds: the producer waits for the client.
                for _ in 0..40 {
                    stream.send(&piece).unwrap();
                }
                stream.finish().unwrap();
            }
            "/sized" => {
                let mut stream = responder.stream_sized(Response::new(), total as u64).unwrap();
                for _ in 0..40 {
                    stream.send(&piece).unwrap();
                }
                stream.finish().unwrap();
            }
            _ => {
                let mut stream = responder.stream_sized(Response::new(), 10).unwrap();
                stream.send(b"abc").unwrap();
                let _ = stream.finish();
            }
        });
        Reply::Later
    };
    let mut client = TestClient::new(handler);
    let chunked = client.get("/chunked");
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!((chunked.body().len(), chunked.is_complete()), (total, true));
    let sized = client.get("/sized");
    assert_eq!(sized.header("content-length"), Some(total.to_string().as_str()));
    assert_eq!((sized.body().len(), sized.is_complete()), (total, true));
    let short = client.get("/short");
    assert_eq!((short.body(), short.is_complete()), (&b"abc"[..], false));
    // The cut closed that connection; the client goes on with a new one.
    assert!(client.get("/sized").is_complete());
}

#[test]
fn errors_go_through_the_hook() {
    let handler = |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/panic" {
            panic!("a handler bug");
        }
        res.set_error(req, 404, "no such thing");
        Reply::Now
    };
    let mut client = TestClient::new(handler);
    assert_eq!(client.get("/x").text(), "no such thing\n", "plain text by default");
    client.set_error_renderer(problem_json);
    let r = client.get("/x?secret=1");
    assert_eq!(r.status(), 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.text(),
        r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no such thing","instance":"/x"}"#
    );
    assert_eq!(client.get("/panic").header("content-type"), Some("application/problem+json"));
    assert_eq!(client.request("GET / HTTP/1.1\r\n\r\n").header("content-type"), Some("application/problem+json"));
}

/// Blocking work that panics answers a 500 rendered by the same hook as the server's own
/// errors (it was plain text, made on the pool's thread), and closes.
#[test]
fn a_panic_in_blocking_work_goes_through_the_hook() {
    let handler = |req: &Request<'_>, res: &mut Response| res.blocking(req, |_| panic!("a bug in blocking work"));
    let mut client = TestClient::new(handler);
    let plain = client.get("/work");
    assert_eq!((plain.status(), plain.text()), (500, "internal server error\n"), "plain text by default");
    client.set_error_renderer(problem_json);
    let r = client.get("/work");
    assert_eq!(r.status(), 500);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
#[should_panic(expected = "no whole answer within")]
fn an_answer_that_never_comes_fails_the_test_in_bounded_time() {
    let (keep, kept) = mpsc::channel();
    let handler = move |_: &Request<'_>, res: &mut Response| {
        keep.send(res.defer()).unwrap();
        Reply::Later
    };
    let mut client = TestClient::new(handler);
    client.set_timeout(Duration::from_millis(50));
    let _never = client.get("/forgotten");
    drop(kept);
}

#[test]
fn a_handler_can_be_called_directly_without_httparse_of_its_own() {
    let headers = [Header { name: "X-Test", value: b"direct" }];
    let request = Request::new("GET", "/d", Version::Http11, &headers, b"");
    let mut response = Response::new();
    assert_eq!(echo(&request, &mut response), Reply::Now);
    assert_eq!(response.body(), b"GET /d|direct|");
}

#[cfg(feature = "json")]
#[test]
fn json_in_and_out() {
    let handler = |req: &Request<'_>, res: &mut Response| {
        let value: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        res.set_content_type("application/json").unwrap();
        res.set_body(
            serde_json::json!({ "got": value, "type": String::from_utf8_lossy(req.header("content-type").unwrap()) })
                .to_string(),
        );
        Reply::Now
    };
    let mut client = TestClient::new(handler);
    let r = client.build("POST", "/j").json(&serde_json::json!({"id": 7})).send();
    let value: serde_json::Value = r.json();
    assert_eq!(value, serde_json::json!({"got": {"id": 7}, "type": "application/json"}));
}
