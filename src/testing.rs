//! Testing handlers without sockets: [`TestClient`] runs any [`Handler`] (a closure, a
//! function, a router) on the server's real connection code over an in-memory pipe, and
//! returns each answer as a [`TestResponse`]: status, headers, body. One line per request:
//!
//! ```
//! use quiesce::testing::TestClient;
//! use quiesce::{Reply, Request, Response};
//!
//! fn users(req: &Request<'_>, res: &mut Response) -> Reply {
//!     match req.path().strip_prefix("/users/") {
//!         Some(id) if req.method() == "GET" => {
//!             res.set_body(format!("user {id}"));
//!         }
//!         Some(_) => {
//!             res.set_error(req, 405, "read only").add_header("Allow", "GET, HEAD").unwrap();
//!         }
//!         None => {
//!             res.set_error(req, 404, "no such route");
//!         }
//!     }
//!     Reply::Now
//! }
//!
//! let mut client = TestClient::new(users);
//! let r = client.get("/users/1");
//! assert_eq!((r.status(), r.text()), (200, "user 1"));
//! assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
//! assert_eq!(client.post("/users/1", "{}").header("allow"), Some("GET, HEAD"));
//! assert_eq!(client.build("GET", "/nowhere").header("Accept", "text/plain").send().status(), 404);
//! assert_eq!(client.head("/users/1").body(), b"");
//! ```
//!
//! Everything a handler can do works as on a server: [`Reply::After`](crate::Reply::After)
//! (the client's clock jumps to the delay, so a test does not wait for it), answers from a
//! [`Responder`](crate::Responder) on another thread and [`Stream`](crate::Stream)s (the
//! client waits for them, at most [`TestClient::set_timeout`], 5 s by default, then panics
//! with what arrived), protocol errors (send raw bytes with [`TestClient::request`]), the
//! error hook ([`TestClient::set_error_renderer`]), keep-alive (one connection serves the
//! requests in turn, and a new one replaces it once the server closed it).
//!
//! Always compiled (no cargo feature to turn on): it adds no dependency, only a few functions
//! over the in-memory connection the crate keeps for its own fuzzing and benchmarks, and a
//! feature would be one more step for every user's tests. `TestResponse::json` and
//! `TestRequest::json` come with the `json` feature.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::ServerConfig;
use crate::errors::ErrorInfo;
use crate::handler::Handler;
use crate::harness::MemoryConnection;
use crate::http::response::Response;

/// How long a request waits for its answer by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a handler on an in-memory connection; see [the module](self).
///
/// The handler runs on the thread that calls the client (as it would on the server's loop
/// thread): [`Stream::send`](crate::Stream::send) there never waits for room, since only that
/// thread makes it.
pub struct TestClient {
    conn: MemoryConnection,
    timeout: Duration,
}

impl fmt::Debug for TestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl TestClient {
    /// A client of `handler`, under the default [`ServerConfig`].
    pub fn new(handler: impl Handler + Send + 'static) -> Self {
        TestClient::with_config(ServerConfig::default(), handler)
    }

    /// A client of `handler` under `config` (its limits and timeouts; the address is unused).
    pub fn with_config(config: ServerConfig, handler: impl Handler + Send + 'static) -> Self {
        TestClient { conn: MemoryConnection::new(config, handler), timeout: DEFAULT_TIMEOUT }
    }

    /// Renders errors with `render`, as [`Server::set_error_renderer`](crate::Server::set_error_renderer)
    /// does: the server's own and those the handler makes with [`Response::set_error`].
    pub fn set_error_renderer(
        &mut self,
        render: impl Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync + 'static,
    ) -> &mut Self {
        self.conn.set_error_renderer(render);
        self
    }

    /// How long a request waits for its whole answer (real time, for answers from other
    /// threads; delays and timeouts of the server are skipped over) before the client panics.
    pub fn set_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// `GET target`.
    pub fn get(&mut self, target: &str) -> TestResponse {
        self.build("GET", target).send()
    }

    /// `HEAD target`: the response has the head only.
    pub fn head(&mut self, target: &str) -> TestResponse {
        self.build("HEAD", target).send()
    }

    /// `DELETE target`.
    pub fn delete(&mut self, target: &str) -> TestResponse {
        self.build("DELETE", target).send()
    }

    /// `POST target` with `body` (and its `Content-Length`).
    pub fn post(&mut self, target: &str, body: impl AsRef<[u8]>) -> TestResponse {
        self.build("POST", target).body(body).send()
    }

    /// `PUT target` with `body`.
    pub fn put(&mut self, target: &str, body: impl AsRef<[u8]>) -> TestResponse {
        self.build("PUT", target).body(body).send()
    }

    /// A request to build up (headers, a body) and [`send`](TestRequest::send).
    pub fn build(&mut self, method: &str, target: &str) -> TestRequest<'_> {
        TestRequest {
            client: self,
            method: method.to_owned(),
            target: target.to_owned(),
            version: "HTTP/1.1",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Sends `raw` bytes as they are (one request, or the start of one: the server answers
    /// what it makes of it, e.g. a 400, or a 408 once its header timeout passes) and returns
    /// the first response.
    pub fn request(&mut self, raw: impl AsRef<[u8]>) -> TestResponse {
        let raw = raw.as_ref();
        let head_request = raw.starts_with(b"HEAD ");
        self.exchange(raw, head_request)
    }

    /// Sends `raw` on the connection (a new one if the server closed the last) and waits for
    /// one response.
    fn exchange(&mut self, raw: &[u8], head_request: bool) -> TestResponse {
        let _renderer = self.conn.enter_renderer();
        if self.conn.write_shut() {
            self.conn.reconnect();
        }
        // What an earlier request left (responses to requests pipelined in raw bytes).
        self.conn.take_output();
        self.conn.send(raw);
        let give_up = Instant::now() + self.timeout;
        loop {
            let ended = self.conn.write_shut();
            let end = ended.then(|| if self.conn.was_reset() { End::Reset } else { End::Closed });
            if let Some(response) = parse_response(self.conn.output(), head_request, end) {
                return response;
            }
            if ended {
                panic!("the server closed the connection without an answer to {:?}", String::from_utf8_lossy(raw));
            }
            let now = Instant::now();
            if now >= give_up {
                panic!(
                    "no whole answer within {:?} to {:?}; got {:?}",
                    self.timeout,
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(self.conn.output())
                );
            }
            match self.conn.until_deadline() {
                // A delay, a timeout: the server's clock jumps to it.
                Some(wait) => self.conn.advance(wait),
                // An answer from another thread: wait for it for real.
                None => {
                    self.conn.wait_for_letters(give_up - now);
                }
            }
        }
    }
}

/// A request under construction: [`TestClient::build`].
#[derive(Debug)]
pub struct TestRequest<'c> {
    client: &'c mut TestClient,
    method: String,
    target: String,
    version: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl TestRequest<'_> {
    /// Adds a header field. Without a `Host` field the request gets `Host: test`; without
    /// `Content-Length` or `Transfer-Encoding`, a body gets its length.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Sends it as HTTP/1.0 (no `Host` added).
    pub fn http_1_0(mut self) -> Self {
        self.version = "HTTP/1.0";
        self
    }

    /// Sets the body to `value` as JSON, with `Content-Type: application/json`.
    ///
    /// # Panics
    ///
    /// When `value` cannot be written as JSON (a map with keys that are not strings).
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|e| panic!("the request body as JSON: {e}"));
        self.header("Content-Type", "application/json").body(body)
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Sends the request and waits for its answer.
    pub fn send(self) -> TestResponse {
        let mut raw = format!("{} {} {}\r\n", self.method, self.target, self.version).into_bytes();
        if self.version == "HTTP/1.1" && !self.has("host") {
            raw.extend_from_slice(b"Host: test\r\n");
        }
        for (name, value) in &self.headers {
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let framed = self.has("content-length") || self.has("transfer-encoding");
        if !framed && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")) {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&self.body);
        let head_request = self.method == "HEAD";
        self.client.exchange(&raw, head_request)
    }
}

/// One answer: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
}

impl TestResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header field called `name` (case-insensitive), as text (lossy for bytes that
    /// are not UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header field in order, as (name, value), the server's own (`Date`, `Server`,
    /// `Content-Length`, `Connection`) included.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The body (de-chunked; empty for HEAD, 204 and 304).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text.
    ///
    /// # Panics
    ///
    /// When the body is not UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("the body is not UTF-8 ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body read as JSON into a `T`.
    ///
    /// # Panics
    ///
    /// When the body is not a `T` in JSON (the message shows the body).
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("the body is not the JSON expected ({e}): {:?}", String::from_utf8_lossy(&self.body))
        })
    }

    /// Whether the body arrived whole: false when the server closed the connection before its
    /// end (a stream cut short, dropped or finished short of its declared length).
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// How the server ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// With a FIN: a body that ends with the connection is complete.
    Closed,
    /// With a reset: no body is complete without its framing.
    Reset,
}

/// The first final response in `out` (1xx interim ones skipped): `None` while it is not all
/// there and more may come (`end`: nothing more comes, and a body cut short is what it is).
fn parse_response(mut out: &[u8], head_request: bool, end: Option<End>) -> Option<TestResponse> {
    loop {
        let mut slots = vec![httparse::EMPTY_HEADER; 256];
        let mut parsed = httparse::Response::new(&mut slots);
        let head_len = match parsed.parse(out) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            Err(e) => panic!("the server's answer does not parse ({e}): {:?}", String::from_utf8_lossy(out)),
        };
        let status = parsed.code.unwrap_or(0);
        if (100..200).contains(&status) {
            out = &out[head_len..];
            continue;
        }
        let headers: Vec<(String, String)> =
            parsed.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
        let find = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let rest = &out[head_len..];
        let (body, complete) = if head_request || status == 204 || status == 304 {
            (Vec::new(), true)
        } else if find("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)
        } else if let Some(length) = find("content-length").and_then(|n| n.parse::<usize>().ok()) {
            (rest[..rest.len().min(length)].to_vec(), rest.len() >= length)
        } else {
            // Ends with the connection, and only a FIN ends it whole.
            (rest.to_vec(), end == Some(End::Closed))
        };
        return (complete || end.is_some()).then_some(TestResponse { status, headers, body, complete });
    }
}

/// A chunked body: the data of its chunks so far, and whether the last chunk came.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { return (body, false) };
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else { return (body, false) };
        let start = line_end + 2;
        if size == 0 {
            // The server sends no trailers: the last chunk and the empty line.
            return (body, data[start..].starts_with(b"\r\n"));
        }
        let available = &data[start..];
        if available.len() < size + 2 {
            body.extend_from_slice(&available[..available.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&available[..size]);
        data = &available[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_and_a_cut_is_seen() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), (b"abcde".to_vec(), true));
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nd"), (b"abcd".to_vec(), false));
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n"), (b"abc".to_vec(), false));
    }

    #[test]
    fn responses_parse_by_their_framing() {
        let out = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        let response = parse_response(out, false, None).unwrap();
        assert_eq!((response.status(), response.text(), response.is_complete()), (200, "abc", true));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", false, None), None);
        let cut = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", false, Some(End::Closed)).unwrap();
        assert_eq!((cut.body(), cut.is_complete()), (&b"ab"[..], false));
        let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, None).unwrap();
        assert_eq!((head.header("CONTENT-LENGTH"), head.body()), (Some("3"), &b""[..]));
        let until_close = parse_response(b"HTTP/1.0 200 OK\r\n\r\nabc", false, Some(End::Closed)).unwrap();
        assert_eq!((until_close.text(), until_close.is_complete()), ("abc", true));
        let reset = parse_response(b"HTTP/1.0 200 OK\r\n\r\nabc", false, Some(End::Reset)).unwrap();
        assert!(!reset.is_complete());
    }
}
