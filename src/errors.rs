//! Error bodies: one hook renders every response the server makes itself (a 400 for a
//! malformed head, 408, 413, 414, 431, a 500 for a panicking handler or a dropped responder)
//! and every error a handler or a helper above it (the router's 404 and 405, the blocking pool's
//! 503) makes through [`Response::set_error`] or [`Response::render_error`]. The default is one
//! line of plain text, as before; [`problem_json`] gives RFC 9457 `application/problem+json`.
//!
//! The hook is a dynamic call, made only for an error: the plain request path never reaches it.
//! It fills in the body, the content type and headers of a response that arrives reset, with
//! the error's status; the server keeps the framing (`Content-Length`, `Connection`, and the
//! close after a protocol error), and the status: a hook cannot turn an error into a success.
//! A hook that panics is logged and the plain text goes out instead.
//!
//! ```
//! use quiesce::errors::{ErrorInfo, problem_json};
//! use quiesce::Response;
//!
//! let mut res = Response::new();
//! problem_json(&ErrorInfo::new(404, "no such user").with_request("GET", "/users/7?x=1"), &mut res);
//! assert_eq!(
//!     std::str::from_utf8(res.body()).unwrap(),
//!     r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no such user","instance":"/users/7"}"#
//! );
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::http::request::Request;
use crate::http::response::{Response, push_decimal, reason};

/// What the error hook is told about one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo<'a> {
    status: u16,
    detail: &'a str,
    method: Option<&'a str>,
    target: Option<&'a str>,
}

impl<'a> ErrorInfo<'a> {
    /// An error with `status` (100..=999; anything else is taken as 500) and a short
    /// explanation, for a client to read (`"the request body is larger than this server
    /// accepts"`): never put secrets or internal details there.
    pub fn new(status: u16, detail: &'a str) -> Self {
        let status = if (100..=999).contains(&status) { status } else { 500 };
        ErrorInfo { status, detail, method: None, target: None }
    }

    /// The same error, about the request with `method` and `target`.
    pub fn with_request(mut self, method: &'a str, target: &'a str) -> Self {
        self.method = Some(method);
        self.target = Some(target);
        self
    }

    /// The same error, about `req`.
    pub fn for_request(self, req: &Request<'a>) -> Self {
        self.with_request(req.method(), req.target())
    }

    /// The status code the response carries.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The status's reason phrase (`Not Found`), empty for a code without one.
    pub fn reason(&self) -> &'static str {
        reason(self.status)
    }

    /// The short explanation.
    pub fn detail(&self) -> &'a str {
        self.detail
    }

    /// The request's method, when known: for an error found once its head was read (a body
    /// over the limit or too slow, a handler's panic, an error a handler renders), not for a
    /// head that could not be read, nor for a responder dropped on another thread.
    pub fn method(&self) -> Option<&'a str> {
        self.method
    }

    /// The request's target as sent (`/path?query`), when known (as [`ErrorInfo::method`]).
    pub fn target(&self) -> Option<&'a str> {
        self.target
    }

    /// The path of the target (before `?`), when known.
    pub fn path(&self) -> Option<&'a str> {
        self.target.map(|target| target.split_once('?').map_or(target, |(path, _)| path))
    }
}

impl fmt::Display for ErrorInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.reason(), self.detail)
    }
}

/// A renderer of error responses, as [`Server::set_error_renderer`](crate::Server::set_error_renderer)
/// takes it: any `Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync`, shared by every worker.
pub type ErrorRenderer = dyn Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync;

/// The default: the detail and a line feed, as `text/plain; charset=utf-8` (the body every
/// error had before hooks existed).
pub fn plain_text(err: &ErrorInfo<'_>, res: &mut Response) {
    let body = res.body_mut();
    body.clear();
    body.extend_from_slice(err.detail.as_bytes());
    body.push(b'\n');
}

/// RFC 9457 problem details: `application/problem+json` with `type` (`about:blank`: the
/// status says it all), `title` (the reason phrase), `status`, `detail` and, when the request
/// is known, `instance` (its path, without the query, which may hold what should not be echoed).
/// Written by hand (no JSON library needed), every string escaped.
pub fn problem_json(err: &ErrorInfo<'_>, res: &mut Response) {
    let _ = res.set_content_type("application/problem+json");
    let body = res.body_mut();
    body.clear();
    body.extend_from_slice(br#"{"type":"about:blank","title":"#);
    push_json_string(body, err.reason());
    body.extend_from_slice(br#","status":"#);
    push_decimal(body, u64::from(err.status));
    body.extend_from_slice(br#","detail":"#);
    push_json_string(body, err.detail);
    if let Some(path) = err.path() {
        body.extend_from_slice(br#","instance":"#);
        push_json_string(body, path);
    }
    body.push(b'}');
}

/// Appends `text` as a JSON string, quoted and escaped (RFC 8259 §7).
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x20 | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[usize::from(byte >> 4)]);
                out.push(b"0123456789abcdef"[usize::from(byte & 0xf)]);
            }
            // UTF-8 passes through as it is (the text is a `str`).
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// The hook a server was given, or none (plain text): what the loop keeps.
#[derive(Clone, Default)]
pub(crate) struct Renderer(Option<Arc<ErrorRenderer>>);

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Renderer(hook)" } else { "Renderer(plain text)" })
    }
}

impl Renderer {
    /// A renderer calling `hook`.
    pub(crate) fn new(hook: impl Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync + 'static) -> Self {
        Renderer(Some(Arc::new(hook)))
    }

    /// Makes `res` the error `err`, rendered by the hook (see [`Response::render_error`]).
    pub(crate) fn render(&self, err: &ErrorInfo<'_>, res: &mut Response) {
        render_with(self.0.as_deref(), err, res);
    }

    /// Makes `res` the 500 `info` (made with [`INTERNAL_ERROR`]), rendered by the hook, closing
    /// the connection after it: a handler that panicked, a responder dropped unanswered,
    /// blocking work that panicked.
    #[cold]
    #[inline(never)]
    pub(crate) fn internal_error(&self, info: &ErrorInfo<'_>, res: &mut Response) {
        self.render(info, res);
        res.set_close();
    }

    /// Makes this the renderer [`Response::set_error`] uses on the current thread (the loop's)
    /// until the guard drops.
    pub(crate) fn enter(&self) -> CurrentRenderer {
        CurrentRenderer { was: CURRENT.replace(self.0.clone()) }
    }
}

/// The detail of a 500 that says nothing about its cause (which goes to the log).
pub(crate) const INTERNAL_ERROR: &str = "internal server error";

thread_local! {
    /// The renderer of the server whose loop runs on this thread: what a handler's
    /// [`Response::set_error`] renders with. Set once when the loop starts, so a request pays
    /// nothing for it.
    static CURRENT: RefCell<Option<Arc<ErrorRenderer>>> = const { RefCell::new(None) };
    /// A hook is running on this thread: an error it renders itself is plain text (no
    /// recursion).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// The renderer of the loop on this thread, if any: for work that answers from another thread
/// (the blocking pool's), taken on the loop's thread when the work is handed over.
pub(crate) fn current_renderer() -> Renderer {
    Renderer(if IN_HOOK.get() { None } else { CURRENT.with_borrow(Clone::clone) })
}

/// The renderer of the loop on this thread, until dropped (then the one before it again).
pub(crate) struct CurrentRenderer {
    was: Option<Arc<ErrorRenderer>>,
}

impl Drop for CurrentRenderer {
    fn drop(&mut self) {
        CURRENT.set(self.was.take());
    }
}

/// Resets `res` to the error `err` rendered by `hook` (plain text without one). The status is
/// the error's, whatever the hook did; a hook that panics, or defers the response, gets the
/// plain text instead. A [`Response::set_close`] made before stays.
fn render_with(hook: Option<&ErrorRenderer>, err: &ErrorInfo<'_>, res: &mut Response) {
    // A deferral made before (by the handler) stays; one the hook makes is connected to nothing.
    let handler_deferral = std::mem::take(&mut res.deferred);
    let close = res.close_requested();
    res.reset();
    res.set_status(err.status);
    match hook {
        Some(hook) => {
            let was = IN_HOOK.replace(true);
            let outcome = catch_unwind(AssertUnwindSafe(|| hook(err, res)));
            IN_HOOK.set(was);
            if outcome.is_err() {
                log::error!("the error renderer panicked on {err}; sending plain text");
                res.reset();
                plain_text(err, res);
            }
            if let Some(exchange) = res.take_deferred() {
                log::error!("the error renderer deferred the response to {err}; sending plain text");
                exchange.close();
                res.reset();
                plain_text(err, res);
            }
        }
        None => plain_text(err, res),
    }
    res.set_status(err.status);
    if close {
        res.set_close();
    }
    res.deferred = handler_deferral;
}

impl Response {
    /// Makes this response the error `status` for `req`, with a short `detail` for the client,
    /// rendered the way the server renders its own errors (see
    /// [`Server::set_error_renderer`](crate::Server::set_error_renderer); plain text by
    /// default). What the response held is replaced; headers added afterwards (`Allow`,
    /// `Retry-After`) stay. The connection stays open, unless [`Response::set_close`] says not.
    ///
    /// On the server's thread (in a handler) it uses that server's renderer; elsewhere (a
    /// responder's thread, a unit test) the plain text, unless a [`TestClient`](crate::testing::TestClient)
    /// is driving the handler.
    pub fn set_error(&mut self, req: &Request<'_>, status: u16, detail: &str) -> &mut Self {
        self.render_error(&ErrorInfo::new(status, detail).for_request(req))
    }

    /// [`Response::set_error`] for an error described in full (without a request, or about an
    /// [`OwnedRequest`](crate::OwnedRequest)).
    pub fn render_error(&mut self, err: &ErrorInfo<'_>) -> &mut Self {
        // The current renderer is cloned out, so a hook that renders an error itself cannot
        // find the thread-local borrowed.
        let hook = if IN_HOOK.get() { None } else { CURRENT.with_borrow(Clone::clone) };
        render_with(hook.as_deref(), err, self);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(res: &Response) -> &str {
        std::str::from_utf8(res.body()).unwrap()
    }

    /// `set_error` replaces what the response held, but not a `set_close` made before it (its
    /// documentation says the connection stays open unless `set_close` says not).
    #[test]
    fn an_error_keeps_a_close_asked_for_before_it() {
        let mut res = Response::new();
        res.set_close().set_body("old");
        res.render_error(&ErrorInfo::new(403, "nope"));
        assert_eq!((res.status(), body(&res), res.close_requested()), (403, "nope\n", true));
        let mut open = Response::new();
        open.render_error(&ErrorInfo::new(403, "nope"));
        assert!(!open.close_requested());
    }

    #[test]
    fn plain_text_is_the_detail_and_a_line_feed() {
        let mut res = Response::new();
        res.set_body("old").add_header("X-Old", "1").unwrap();
        res.render_error(&ErrorInfo::new(413, "too big"));
        assert_eq!((res.status(), body(&res)), (413, "too big\n"));
        let mut out = Vec::new();
        res.encode(&mut out, b"Sun, 06 Nov 1994 08:49:37 GMT", false, None);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("X-Old"), "the response is reset first: {text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{text}");
    }

    #[test]
    fn problem_json_escapes_and_leaves_the_query_out() {
        let mut res = Response::new();
        let err = ErrorInfo::new(400, "bad \"x\"\n\u{1}é").with_request("GET", "/a\\b?token=secret");
        problem_json(&err, &mut res);
        assert_eq!(
            body(&res),
            r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"bad \"x\"\n\u0001é","instance":"/a\\b"}"#
        );
        let mut no_request = Response::new();
        problem_json(&ErrorInfo::new(799, "odd"), &mut no_request);
        assert_eq!(body(&no_request), r#"{"type":"about:blank","title":"","status":799,"detail":"odd"}"#);
        assert_eq!(ErrorInfo::new(42, "x").status(), 500);
    }

    #[test]
    fn a_hook_keeps_neither_the_status_nor_a_deferral_and_a_panic_falls_back() {
        let renderer = Renderer::new(|err, res| {
            res.set_status(200).set_body(format!("custom {}", err.status()));
            if err.status() == 418 {
                drop(res.defer());
            }
            if err.status() == 419 {
                panic!("a renderer bug");
            }
        });
        let _current = renderer.enter();
        let mut res = Response::new();
        res.render_error(&ErrorInfo::new(404, "none"));
        assert_eq!((res.status(), body(&res)), (404, "custom 404"));
        res.render_error(&ErrorInfo::new(418, "teapot"));
        assert_eq!((res.status(), body(&res)), (418, "teapot\n"));
        assert!(res.take_deferred().is_none(), "the hook's deferral must not reach the connection");
        res.render_error(&ErrorInfo::new(419, "odd"));
        assert_eq!((res.status(), body(&res)), (419, "odd\n"));
        // A deferral the handler made before stays.
        let responder = res.defer();
        res.render_error(&ErrorInfo::new(404, "none"));
        assert!(!responder.is_closed());
        assert!(res.take_deferred().is_some());
    }

    #[test]
    fn off_the_loop_thread_errors_are_plain_text() {
        let renderer = Renderer::new(|_, res| {
            res.set_body("hooked");
        });
        let _current = renderer.enter();
        let other = std::thread::spawn(|| {
            let mut res = Response::new();
            res.render_error(&ErrorInfo::new(503, "busy"));
            res.body().to_vec()
        });
        assert_eq!(other.join().unwrap(), b"busy\n");
        let mut res = Response::new();
        res.render_error(&ErrorInfo::new(503, "busy"));
        assert_eq!(body(&res), "hooked");
    }
}
