//! The router and the request/response helpers in a real server, over sockets on 127.0.0.1:
//! parameters and catch-all, 404, 405 with `Allow`, automatic HEAD, OPTIONS, 501, decoded
//! query and path parameters, a header that cannot be sent, and (feature `json`) JSON in and out.

mod common;

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Client, CloseState, Response, connect};
use quiesce::{Reply, Router, Server, ServerConfig, ShutdownHandle};

/// A server running `router` on its own thread; stopped (graceful) and joined on drop.
struct Serving {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl Serving {
    fn start(router: Router) -> Serving {
        let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
        let server = Server::bind(config, router).expect("bind");
        let (addr, handle) = (server.local_addr(), server.shutdown_handle());
        let thread = std::thread::spawn(move || {
            server.run().expect("run");
        });
        Serving { addr, handle, thread: Some(thread) }
    }

    fn client(&self) -> Client {
        connect(self.addr)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.handle.graceful();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn request(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn post(target: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let content_type = content_type.map(|ct| format!("Content-Type: {ct}\r\n")).unwrap_or_default();
    let mut bytes =
        format!("POST {target} HTTP/1.1\r\nHost: test\r\n{content_type}Content-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[track_caller]
fn send(client: &mut Client, method: &str, target: &str) -> Response {
    client.request(&request(method, target)).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Sends a HEAD request and reads its response, which has no body whatever its Content-Length.
#[track_caller]
fn send_head(client: &mut Client, target: &str) -> Response {
    client
        .send(&request("HEAD", target))
        .and_then(|()| client.read_head_response())
        .unwrap_or_else(|e| panic!("HEAD {target}: {e}"))
}

/// The routes most tests use: users with an id, files under a catch-all, a search.
fn users() -> Router {
    Router::new()
        .get("/", |_, res| {
            res.set_body("home");
            Reply::Now
        })
        .get("/users/{id}", |req, res| {
            match req.param("id").and_then(|id| id.parse::<u64>().ok()) {
                Some(id) => res.set_body(format!("user {id}")),
                None => res.set_status(400).set_body("bad id"),
            };
            Reply::Now
        })
        .delete("/users/{id}", |_, res| {
            res.set_status(204);
            Reply::Now
        })
        .get("/users/{id}/posts/{post}", |req, res| {
            let (id, post) = (req.param("id").unwrap_or_default(), req.param("post").unwrap_or_default());
            res.set_body(format!("post {post} of {id}"));
            Reply::Now
        })
        .get("/files/{*path}", |req, res| {
            res.set_body(format!(
                "file [{}] raw [{}]",
                req.param("path").unwrap_or_default(),
                req.param_raw("path").unwrap_or_default()
            ));
            Reply::Now
        })
        .get("/search", |req, res| {
            let q = req.query_param("q").unwrap_or_default();
            let page = req.query_param("page").and_then(|p| p.parse::<u32>().ok()).unwrap_or(1);
            res.set_body(format!("[{q}] page {page}"))
                .set_header("X-Raw-Q", req.query_param_raw("q").unwrap_or("").to_owned());
            Reply::Now
        })
        .post("/shout", |req, res| {
            let text = match req.body_text() {
                Ok(text) => text,
                Err(e) => return e.reply(res),
            };
            res.set_body(text.to_uppercase());
            Reply::Now
        })
        .get("/bad-header", |req, res| {
            // A value from the client that carries a line break must not reach the wire.
            let value = req.query_param("v").unwrap_or_default().into_owned();
            res.set_body("secret").set_header("X-Echo", value).set_header("X-Other", "kept?");
            Reply::Now
        })
}

#[test]
fn parameters_and_catch_all() {
    let server = Serving::start(users());
    let mut c = server.client();
    for (target, body) in [
        ("/", "home"),
        ("/users/42", "user 42"),
        ("/users/7/posts/2", "post 2 of 7"),
        ("/files/a/b/c.txt", "file [a/b/c.txt] raw [a/b/c.txt]"),
        ("/files/caf%C3%A9%20menu.pdf", "file [café menu.pdf] raw [caf%C3%A9%20menu.pdf]"),
        ("/files/%FF%zz", "file [\u{FFFD}%zz] raw [%FF%zz]"),
        ("/users/x", "bad id"),
    ] {
        let resp = send(&mut c, "GET", target);
        assert_eq!(resp.text(), body, "GET {target}: {resp:?}");
    }
    // All on one keep-alive connection.
    assert_eq!(c.close_state(Duration::from_millis(50)), CloseState::Open);
}

#[test]
fn not_found_and_not_implemented() {
    let server = Serving::start(users());
    let mut c = server.client();
    for target in ["/nope", "/users", "/users/", "/files/", "/users/1/posts"] {
        let resp = send(&mut c, "GET", target);
        assert_eq!((resp.status, resp.text().as_str()), (404, "not found\n"), "GET {target}");
        assert_eq!(resp.header("allow"), None);
    }
    let resp = send(&mut c, "BREW", "/users/1");
    assert_eq!((resp.status, resp.text().as_str()), (501, "method not implemented\n"));
    // Neither closes the connection.
    assert_eq!(send(&mut c, "GET", "/").text(), "home");
}

#[test]
fn method_not_allowed_says_what_is() {
    let server = Serving::start(users());
    let mut c = server.client();
    let resp = c.request(&post("/users/1", None, b"x")).expect("POST /users/1");
    assert_eq!((resp.status, resp.text().as_str()), (405, "method not allowed\n"));
    assert_eq!(resp.header("allow"), Some("GET, HEAD, DELETE, OPTIONS"));
    let resp = send(&mut c, "PUT", "/files/x");
    assert_eq!((resp.status, resp.header("allow")), (405, Some("GET, HEAD, OPTIONS")));
    let resp = send(&mut c, "GET", "/shout");
    assert_eq!((resp.status, resp.header("allow")), (405, Some("POST, OPTIONS")));
    assert_eq!(send(&mut c, "DELETE", "/users/1").status, 204);
}

#[test]
fn head_is_get_without_the_body() {
    let server = Serving::start(users());
    let mut c = server.client();
    let get = send(&mut c, "GET", "/users/12345");
    // HEAD then GET in one write: a body after the HEAD response would break the next one.
    let mut both = request("HEAD", "/users/12345");
    both.extend_from_slice(&request("GET", "/users/1"));
    c.send(&both).expect("HEAD + GET");
    let head = c.read_head_response().expect("HEAD");
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), get.content_length());
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert_eq!(c.read_response().expect("GET after HEAD").text(), "user 1");
    // A path with no GET has no HEAD either.
    assert_eq!(send_head(&mut c, "/shout").status, 405);
    assert_eq!(c.close_state(Duration::from_millis(50)), CloseState::Open, "no body after a HEAD response");
}

#[test]
fn options_lists_the_methods() {
    let server = Serving::start(users());
    let mut c = server.client();
    let resp = c.request(&request("OPTIONS", "/users/3")).expect("OPTIONS");
    assert_eq!((resp.status, resp.header("allow")), (204, Some("GET, HEAD, DELETE, OPTIONS")));
    let resp = c.request(&request("OPTIONS", "*")).expect("OPTIONS *");
    assert_eq!((resp.status, resp.header("allow")), (204, Some("GET, HEAD, POST, DELETE, OPTIONS")));
    assert_eq!(c.close_state(Duration::from_millis(50)), CloseState::Open, "a 204 has no body");
}

#[test]
fn query_parameters_are_decoded() {
    let server = Serving::start(users());
    let mut c = server.client();
    for (target, body, raw) in [
        ("/search?q=caf%C3%A9+au+lait&page=2", "[café au lait] page 2", "caf%C3%A9+au+lait"),
        ("/search?page=x&q=a%2Bb", "[a+b] page 1", "a%2Bb"),
        // Invalid sequences: a bad escape stays as it is, bytes that are not UTF-8 become U+FFFD.
        ("/search?q=100%25%zz%4", "[100%%zz%4] page 1", "100%25%zz%4"),
        ("/search?q=%FF%C3", "[\u{FFFD}\u{FFFD}] page 1", "%FF%C3"),
        ("/search", "[] page 1", ""),
    ] {
        let resp = send(&mut c, "GET", target);
        assert_eq!((resp.status, resp.text().as_str()), (200, body), "GET {target}");
        assert_eq!(resp.header("x-raw-q"), Some(raw), "GET {target}");
    }
}

#[test]
fn body_text_that_is_not_utf8_is_400() {
    let server = Serving::start(users());
    let mut c = server.client();
    let resp = c.request(&post("/shout", Some("text/plain"), "héllo".as_bytes())).expect("POST /shout");
    assert_eq!((resp.status, resp.text().as_str()), (200, "HÉLLO"));
    let resp = c.request(&post("/shout", Some("text/plain"), b"h\xe9llo")).expect("POST /shout latin-1");
    assert_eq!(resp.status, 400);
    assert!(resp.text().starts_with("request body is not UTF-8: invalid utf-8 sequence"), "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"));
}

/// A header the response cannot carry makes it a plain 500, without that header, the ones set
/// before it or the body; the connection goes on.
#[test]
fn a_header_that_cannot_be_sent_makes_a_500() {
    let server = Serving::start(users());
    let mut c = server.client();
    let resp = send(&mut c, "GET", "/bad-header?v=fine");
    assert_eq!((resp.status, resp.header("x-echo"), resp.header("x-other")), (200, Some("fine"), Some("kept?")));
    let resp = send(&mut c, "GET", "/bad-header?v=a%0D%0ASet-Cookie:%20session=stolen");
    assert_eq!((resp.status, resp.text().as_str()), (500, "internal server error\n"));
    for name in ["x-echo", "set-cookie", "x-other"] {
        assert_eq!(resp.header(name), None, "{name}: {resp:?}");
    }
    assert_eq!(send(&mut c, "GET", "/").text(), "home");
}

/// Route handlers keep state of their own (`FnMut`) and share it through an `Arc`.
#[test]
fn handlers_keep_and_share_state() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let hits = Arc::new(AtomicU64::new(0));
    let (a, b) = (Arc::clone(&hits), Arc::clone(&hits));
    let mut mine = 0;
    let router = Router::new()
        .get("/count", move |_, res| {
            mine += 1;
            a.fetch_add(1, Ordering::Relaxed);
            res.set_body(format!("{mine}"));
            Reply::Now
        })
        .get("/total", move |_, res| {
            res.set_body(b.load(Ordering::Relaxed).to_string());
            Reply::Now
        });
    let server = Serving::start(router);
    let mut c = server.client();
    for n in 1..=3 {
        assert_eq!(send(&mut c, "GET", "/count").text(), n.to_string());
    }
    assert_eq!(send_head(&mut c, "/count").status, 200);
    assert_eq!(send(&mut c, "GET", "/total").text(), "4");
}

#[cfg(feature = "json")]
mod json {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct User {
        name: String,
        age: u32,
    }

    /// A small JSON service: users in a map behind a mutex.
    fn service() -> Router {
        let store = Arc::new(Mutex::new(BTreeMap::<u64, User>::new()));
        let (create, read) = (Arc::clone(&store), store);
        Router::new()
            .post("/users/{id}", move |req, res| {
                let Some(id) = req.param("id").and_then(|id| id.parse::<u64>().ok()) else {
                    res.set_status(404);
                    return Reply::Now;
                };
                let user: User = match req.json() {
                    Ok(user) => user,
                    Err(e) => return e.reply(res),
                };
                create.lock().unwrap().insert(id, user.clone());
                res.set_status(201).set_header("Location", format!("/users/{id}")).json(&user);
                Reply::Now
            })
            .get("/users/{id}", move |req, res| {
                let found = req
                    .param("id")
                    .and_then(|id| id.parse::<u64>().ok())
                    .and_then(|id| read.lock().unwrap().get(&id).cloned());
                match found {
                    Some(user) => res.json(&user),
                    None => res.set_status(404).json(&BTreeMap::from([("error", "no such user")])),
                };
                Reply::Now
            })
    }

    #[test]
    fn json_in_and_out() {
        let server = Serving::start(service());
        let mut c = server.client();
        let body = br#"{"name": "Ada", "age": 36}"#;
        let resp = c.request(&post("/users/1", Some("application/json; charset=utf-8"), body)).expect("create");
        assert_eq!(resp.status, 201, "{resp:?}");
        assert_eq!(
            (resp.header("location"), resp.header("content-type")),
            (Some("/users/1"), Some("application/json"))
        );
        assert_eq!(resp.text(), r#"{"name":"Ada","age":36}"#);
        let resp = send(&mut c, "GET", "/users/1");
        assert_eq!((resp.status, resp.text().as_str()), (200, r#"{"name":"Ada","age":36}"#));
        let resp = send(&mut c, "GET", "/users/2");
        assert_eq!((resp.status, resp.text().as_str()), (404, r#"{"error":"no such user"}"#));
        assert_eq!(resp.header("content-type"), Some("application/json"));
    }

    #[test]
    fn json_rejected_says_why() {
        let server = Serving::start(service());
        let mut c = server.client();
        let cases: [(Option<&str>, &[u8], u16, &str); 5] = [
            (
                Some("application/json"),
                b"{\"name\": \"Ada\",\n \"age\": }",
                400,
                "malformed JSON: expected value at line 2 column 9",
            ),
            (
                Some("application/json"),
                br#"{"name": "Ada"}"#,
                400,
                "JSON of the wrong shape: missing field `age` at line 1 column 15",
            ),
            (
                Some("application/json"),
                br#"{"name": "Ada", "age": -1}"#,
                400,
                "JSON of the wrong shape: invalid value: integer `-1`, expected u32 at line 1 column 25",
            ),
            (
                Some("text/plain"),
                br#"{"name": "Ada", "age": 36}"#,
                415,
                "unsupported Content-Type: expected application/json",
            ),
            (None, br#"{"name": "Ada", "age": 36}"#, 415, "missing Content-Type: expected application/json"),
        ];
        for (content_type, body, status, message) in cases {
            let resp = c.request(&post("/users/1", content_type, body)).expect("POST");
            assert_eq!(
                (resp.status, resp.text()),
                (status, format!("{message}\n")),
                "{content_type:?} {}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"));
        }
        // Nothing was stored.
        assert_eq!(send(&mut c, "GET", "/users/1").status, 404);
    }
}
