//! [`Response`]: what a handler fills in, and how the server encodes it onto the wire.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::exchange::Exchange;

/// A response under construction. The server owns one and hands it to the handler already
/// reset, so the buffers it holds are reused from request to request.
///
/// The server writes `Date`, `Server`, `Content-Length` and `Connection` itself; handlers may
/// not set them (nor `Transfer-Encoding`).
///
/// # Header fields
///
/// [`set_header`](Response::set_header) and [`append_header`](Response::append_header) chain
/// without a `Result`. A field they cannot send (a reserved or malformed name, a value with CR,
/// LF or NUL) turns the whole response into a plain `500 Internal Server Error`, and the first
/// such error of the process is logged at error level (later ones at debug): a response that
/// silently lost a field (a cookie, a `Content-Security-Policy`, a `Location`) could be wrong
/// or unsafe in ways the server cannot judge, so it fails closed. Nothing set afterwards
/// changes that. [`add_header`](Response::add_header) and
/// [`set_content_type`](Response::set_content_type) return the error instead, for a handler
/// that wants to decide itself.
///
/// ```
/// # use quiesce::Response;
/// let mut res = Response::new();
/// res.set_status(201).set_header("Location", "/users/7").set_header("Cache-Control", "no-store");
/// assert_eq!(res.header("location"), Some("/users/7"));
///
/// res.set_header("X-Echo", "a\r\nSet-Cookie: evil=1");
/// assert_eq!((res.status(), res.header("x-echo"), res.header("location")), (500, None, None));
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    content_type: Option<Cow<'static, str>>,
    headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    body: Vec<u8>,
    close: bool,
    /// A builder setter was given a field it cannot send: this is a plain 500 now (see
    /// [`Response::fail`]).
    failed: bool,
    pub(crate) deferred: Deferral,
    /// The request it answers is a HEAD (set by the connection before each handler call; kept
    /// by `reset`, so an error rendered in the handler keeps it): a responder made from it
    /// knows its stream has no body.
    pub(crate) head_request: bool,
}

/// The body of a response that [failed](Response::fail).
const FAILED_BODY: &[u8] = b"internal server error\n";

/// Whether a failed response was logged at error level yet (later ones go to debug).
static FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

/// Where [`Response::defer`] (see `responder.rs`) leaves the exchange of the responder it made,
/// for the connection to take after the handler returns: the one record that the answer comes
/// later. Dropped untaken (with its response, or replaced by a second `defer`), the exchange is
/// closed, so that responder says Gone. A clone of the response leaves it empty.
#[derive(Default)]
pub(crate) struct Deferral(Option<Arc<Exchange<Response>>>);

impl Deferral {
    /// Holds `exchange`, closing the one it replaces.
    pub(crate) fn put(&mut self, exchange: Arc<Exchange<Response>>) {
        if let Some(earlier) = self.0.replace(exchange) {
            earlier.close();
        }
    }

    /// The exchange, if there is one: a load and a branch when there is none.
    #[inline]
    pub(crate) fn take(&mut self) -> Option<Arc<Exchange<Response>>> {
        self.0.take()
    }
}

impl Drop for Deferral {
    fn drop(&mut self) {
        if let Some(exchange) = self.0.take() {
            exchange.close();
        }
    }
}

impl Clone for Deferral {
    fn clone(&self) -> Self {
        Deferral(None)
    }
}

impl fmt::Debug for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Deferral(deferred)" } else { "Deferral(none)" })
    }
}

/// A header field a handler may not set: a reserved or malformed name, or a value with CR, LF or
/// NUL (which would let one response smuggle another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader(pub String);

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid response header: {}", self.0)
    }
}

impl std::error::Error for InvalidHeader {}

impl Default for Response {
    fn default() -> Self {
        Response::new()
    }
}

const RESERVED: [&str; 5] = ["date", "server", "content-length", "connection", "transfer-encoding"];

impl Response {
    /// Moves the response out, leaving an empty `200 OK`: the end of a chain of setters where an
    /// owned response is wanted, e.g. what a [`Response::blocking`](crate::Response::blocking)
    /// closure returns: `Response::new().set_status(201).json(&user).take()`.
    pub fn take(&mut self) -> Response {
        std::mem::take(self)
    }

    /// An empty `200 OK`.
    pub fn new() -> Self {
        Response {
            status: 200,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            failed: false,
            deferred: Deferral(None),
            head_request: false,
        }
    }

    /// Back to an empty `200 OK`, keeping the allocated buffers.
    #[inline]
    pub(crate) fn reset(&mut self) {
        self.status = 200;
        self.content_type = None;
        self.headers.clear();
        self.body.clear();
        self.close = false;
        self.failed = false;
        // Not the deferral, nor `head_request`: the connection takes it after every handler call.
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Sets the status code (200..=999; anything else becomes 500). No effect once the
    /// response [failed](Response#header-fields). A handler's answer is the final response: a
    /// 1xx sent as one would leave its client waiting for the final one (RFC 9110 §15.2), so
    /// it is a 500 too.
    ///
    /// ```
    /// # use quiesce::Response;
    /// assert_eq!(Response::new().set_status(404).status(), 404);
    /// assert_eq!(Response::new().set_status(103).status(), 500);
    /// ```
    pub fn set_status(&mut self, status: u16) -> &mut Self {
        if !self.failed {
            self.status = if (200..=999).contains(&status) { status } else { 500 };
        }
        self
    }

    /// Sets `Content-Type`. Sent whenever the response has a body, `text/plain; charset=utf-8`
    /// when none was set.
    pub fn set_content_type(&mut self, value: impl Into<Cow<'static, str>>) -> Result<&mut Self, InvalidHeader> {
        let value = value.into();
        check_value(&value)?;
        if !self.failed {
            self.content_type = Some(value);
        }
        Ok(self)
    }

    /// Appends a header field. Rejects names that are not tokens, the fields the server writes
    /// itself, and values containing CR, LF or NUL.
    pub fn add_header(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Result<&mut Self, InvalidHeader> {
        self.put_header(name.into(), value.into(), false)
    }

    /// Sets a header field, replacing any of the same name (`Content-Type` included); chains
    /// without a `Result`. A field that cannot be sent turns the response into a 500 (see
    /// [Header fields](Response#header-fields)).
    pub fn set_header(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) -> &mut Self {
        if let Err(e) = self.put_header(name.into(), value.into(), true) {
            self.fail(&e);
        }
        self
    }

    /// Appends a header field, keeping any of the same name (for fields that may repeat, such
    /// as `Set-Cookie`); chains without a `Result`. A field that cannot be sent turns the
    /// response into a 500 (see [Header fields](Response#header-fields)).
    pub fn append_header(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> &mut Self {
        if let Err(e) = self.put_header(name.into(), value.into(), false) {
            self.fail(&e);
        }
        self
    }

    /// Checks a field and adds it, or with `replace` puts it in place of those of its name.
    fn put_header(
        &mut self,
        name: Cow<'static, str>,
        value: Cow<'static, str>,
        replace: bool,
    ) -> Result<&mut Self, InvalidHeader> {
        if name.is_empty() || !name.bytes().all(super::is_tchar) {
            return Err(InvalidHeader(format!("bad field name {name:?}")));
        }
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(InvalidHeader(format!("{name} is set by the server")));
        }
        if name.eq_ignore_ascii_case("content-type") {
            return self.set_content_type(value);
        }
        check_value(&value)?;
        if self.failed {
            return Ok(self);
        }
        if replace {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        }
        self.headers.push((name, value));
        Ok(self)
    }

    /// Serializes `value` as the body, with `Content-Type: application/json` (feature `json`).
    /// A value that cannot be serialized (a map with keys that are not strings, a `Serialize`
    /// that fails) turns the response into a 500, as an invalid header does.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> &mut Self {
        self.body.clear();
        match serde_json::to_writer(&mut self.body, value) {
            Ok(()) if !self.failed => self.content_type = Some(Cow::Borrowed("application/json")),
            Ok(()) => {}
            Err(e) => self.fail(&format_args!("cannot serialize the JSON body: {e}")),
        }
        self
    }

    /// Makes this a plain `500 Internal Server Error`, for good: `why` could not be sent. The
    /// first failure of the process is logged at error level, the later ones at debug (a client
    /// that can provoke one must not flood the log).
    fn fail(&mut self, why: &dyn fmt::Display) {
        if FAILURE_LOGGED.swap(true, Ordering::Relaxed) {
            log::debug!("answering 500: {why}");
        } else {
            log::error!("answering 500: {why} (later ones are logged at debug level)");
        }
        self.status = 500;
        self.content_type = None;
        self.headers.clear();
        self.body.clear();
        self.body.extend_from_slice(FAILED_BODY);
        self.failed = true;
    }

    /// Whether a builder setter was given something it cannot send, which made this a 500
    /// (see [Header fields](Response#header-fields)).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The value of the first header field called `name` (case-insensitive) set so far,
    /// `Content-Type` included; the fields the server writes itself (`Date`, `Content-Length`,
    /// …) are not here.
    pub fn header(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("content-type") {
            return self.content_type();
        }
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }

    /// The header fields set so far, in order, without `Content-Type` (see
    /// [`Response::content_type`]).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The `Content-Type` set, if any. Without one, a response with a body is sent as
    /// `text/plain; charset=utf-8`.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// Replaces the body with a copy of `body`.
    pub fn set_body(&mut self, body: impl AsRef<[u8]>) -> &mut Self {
        self.body.clear();
        self.body.extend_from_slice(body.as_ref());
        self
    }

    /// The body, to write into directly (it keeps its capacity between requests).
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }

    /// The body (what will be sent: a [failed](Response#header-fields) response's is its
    /// 500's).
    pub fn body(&self) -> &[u8] {
        if self.failed { FAILED_BODY } else { &self.body }
    }

    /// Asks the server to close the connection after this response.
    pub fn set_close(&mut self) -> &mut Self {
        self.close = true;
        self
    }

    /// Whether the handler asked to close the connection after this response.
    pub fn close_requested(&self) -> bool {
        self.close
    }

    /// Appends the encoded response to `out`. `date` is the `Date` value; `head_only` leaves the
    /// body out (HEAD) but keeps its `Content-Length`; `connection` is the `Connection` field to
    /// send, if any.
    ///
    /// Every response pays for this, so the common fields go out as fixed-size copies, which
    /// compile to a few moves rather than calls to `memcpy`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, date: &[u8; 29], head_only: bool, connection: Option<&str>) {
        self.encode_as::<false>(out, date, head_only, None, connection);
    }

    /// Appends the head of a streamed response: `Content-Length` when the stream declared its
    /// `length`, else `Transfer-Encoding: chunked` when `chunked` (else the body ends with the
    /// connection, or there is none).
    pub(crate) fn encode_stream_head(
        &self,
        out: &mut Vec<u8>,
        date: &[u8; 29],
        chunked: bool,
        length: Option<u64>,
        connection: Option<&str>,
    ) {
        self.encode_as::<true>(out, date, !chunked, length, connection);
    }

    /// No body, and no framing fields, on 1xx, 204 and 304 (RFC 9110 §8.6, §15.3.5, §15.4.5).
    pub(crate) fn is_bodiless(&self) -> bool {
        self.status < 200 || self.status == 204 || self.status == 304
    }

    /// [`Response::encode`], or with `STREAM` the head of a streamed response, whose framing
    /// field is `Content-Length: stream_length` when given, else `Transfer-Encoding: chunked`
    /// unless `no_chunks`. One body of code, compiled twice: the plain response's copy is
    /// exactly the hand-tuned path.
    #[inline(always)]
    fn encode_as<const STREAM: bool>(
        &self,
        out: &mut Vec<u8>,
        date: &[u8; 29],
        head_only_or_no_chunks: bool,
        stream_length: Option<u64>,
        connection: Option<&str>,
    ) {
        let status = self.status;
        if status == 200 {
            // The common case, as one copy.
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: quiesce\r\nDate: ");
        } else if !STREAM && self.failed {
            // A failed response is a 500 (never a 200): checked only off the common path.
            return self.encode_failed(out, date, head_only_or_no_chunks, connection);
        } else if !STREAM && status == 205 && !self.body.is_empty() {
            // A 205 has no content, whatever the handler set (RFC 9110 §15.3.6).
            return self.encode_without_body(out, date, connection);
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            push_decimal(out, u64::from(status));
            out.push(b' ');
            out.extend_from_slice(reason(status).as_bytes());
            out.extend_from_slice(b"\r\nServer: quiesce\r\nDate: ");
        }
        out.extend_from_slice(date);
        // No body and no framing on 1xx, 204 and 304 (RFC 9110 §8.6, §15.3.5, §15.4.5).
        let bodiless = status < 200 || status == 204 || status == 304;
        if STREAM && !bodiless {
            out.extend_from_slice(b"\r\nContent-Type: ");
            let content_type = self.content_type.as_deref().unwrap_or("text/plain; charset=utf-8");
            out.extend_from_slice(content_type.as_bytes());
            if let Some(length) = stream_length {
                out.extend_from_slice(b"\r\nContent-Length: ");
                push_decimal(out, length);
            } else if !head_only_or_no_chunks {
                out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
            }
        } else if !bodiless {
            match &self.content_type {
                Some(ct) => {
                    out.extend_from_slice(b"\r\nContent-Type: ");
                    out.extend_from_slice(ct.as_bytes());
                    out.extend_from_slice(b"\r\nContent-Length: ");
                }
                None if self.body.is_empty() => out.extend_from_slice(b"\r\nContent-Length: "),
                None => out.extend_from_slice(b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "),
            }
            push_decimal(out, self.body.len() as u64);
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(connection) = connection {
            out.extend_from_slice(b"Connection: ");
            out.extend_from_slice(connection.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !STREAM && !head_only_or_no_chunks && !bodiless {
            out.extend_from_slice(&self.body);
        }
    }
}

impl Response {
    /// [`Response::encode`] of this response with an empty body (`Content-Length: 0`): a 205
    /// a handler gave a body. Rare, so a copy.
    #[cold]
    #[inline(never)]
    fn encode_without_body(&self, out: &mut Vec<u8>, date: &[u8; 29], connection: Option<&str>) {
        let empty = Response { body: Vec::new(), ..self.clone() };
        empty.encode(out, date, false, connection);
    }

    /// [`Response::encode`] of a failed response: its 500 and nothing the handler set but
    /// `close`. (Its fields were cleared when it failed; the body may have been written to
    /// since, through [`Response::body_mut`].)
    #[cold]
    fn encode_failed(&self, out: &mut Vec<u8>, date: &[u8; 29], head_only: bool, connection: Option<&str>) {
        let mut plain = Response::new();
        plain.set_status(500).set_body(FAILED_BODY);
        plain.encode(out, date, head_only, connection);
    }
}

fn check_value(value: &str) -> Result<(), InvalidHeader> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(InvalidHeader(format!("bad field value {value:?}")));
    }
    Ok(())
}

/// Appends `n` in decimal without going through `fmt`: for the common sizes, fixed-size copies
/// the compiler keeps inline, which `itoa`'s variable-length copy is not
/// (benches/results/hand-written.md).
#[inline(always)]
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    // Nearly every Content-Length has at most four digits: fixed-size copies, no loop.
    let digit = |n: u64| b'0' + (n % 10) as u8;
    match n {
        0..=9 => out.push(digit(n)),
        10..=99 => out.extend_from_slice(&[digit(n / 10), digit(n)]),
        100..=999 => out.extend_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]),
        1000..=9999 => out.extend_from_slice(&[digit(n / 1000), digit(n / 100), digit(n / 10), digit(n)]),
        _ => push_decimal_long(out, n),
    }
}

fn push_decimal_long(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The reason phrase for a status code (RFC 9110 §15), empty for unknown codes.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; 29] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn encoded(res: &Response, head_only: bool, connection: Option<&str>) -> String {
        let mut out = Vec::new();
        res.encode(&mut out, DATE, head_only, connection);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_text_response() {
        let mut res = Response::new();
        res.set_body("hi");
        assert_eq!(
            encoded(&res, false, None),
            "HTTP/1.1 200 OK\r\nServer: quiesce\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn head_keeps_length_drops_body_and_connection_is_written() {
        let mut res = Response::new();
        res.set_status(405).set_body("no");
        res.add_header("Allow", "GET, HEAD").unwrap();
        let text = encoded(&res, true, Some("close"));
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Content-Length: 2\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    /// A 205 has no content (RFC 9110 §15.3.6), whatever the handler set: `Content-Length: 0`,
    /// and the next response follows its head.
    #[test]
    fn reset_content_sends_no_content() {
        let mut res = Response::new();
        res.set_status(205).set_body("ignored");
        let text = encoded(&res, false, None);
        assert!(text.starts_with("HTTP/1.1 205 Reset Content\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 0\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    }

    #[test]
    fn empty_body_has_length_zero_and_no_type() {
        let text = encoded(&Response::new(), false, None);
        assert!(text.contains("Content-Length: 0\r\n"));
        assert!(!text.contains("Content-Type"));
        let mut res = Response::new();
        res.set_status(204);
        assert!(!encoded(&res, false, None).contains("Content-Length"));
    }

    #[test]
    fn rejects_reserved_and_smuggling_headers() {
        let mut res = Response::new();
        assert!(res.add_header("Content-Length", "5").is_err());
        assert!(res.add_header("X-A", "a\r\nX-B: b").is_err());
        assert!(res.add_header("Bad Name", "v").is_err());
        assert!(res.set_content_type("text/html\n").is_err());
        res.add_header("content-type", "application/json").unwrap();
        assert!(encoded(&res, false, None).contains("Content-Type: application/json\r\n"));
    }

    #[test]
    fn builder_setters_and_getters() {
        let mut res = Response::new();
        res.set_header("X-A", "1")
            .append_header("Set-Cookie", "a=1")
            .append_header("set-cookie", "b=2")
            .set_header("x-a", "2")
            .set_header("Content-Type", "text/html");
        assert_eq!(res.header("X-A"), Some("2"));
        assert_eq!(res.header("content-type"), Some("text/html"));
        assert_eq!(res.content_type(), Some("text/html"));
        assert_eq!(res.headers().collect::<Vec<_>>(), [("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("x-a", "2")]);
        assert!(!res.failed());
        assert!(encoded(&res, false, None).contains(
            "Content-Type: text/html\r\nContent-Length: 0\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nx-a: 2\r\n\r\n"
        ));
        assert_eq!(Response::new().content_type(), None);
    }

    /// An invalid field through a builder setter makes a plain 500 that nothing set later
    /// changes, on the wire too; `reset` starts over.
    #[test]
    fn an_invalid_header_makes_a_500_that_stays() {
        for bad in [("X-A", "a\r\nX-Smuggled: 1"), ("Content-Length", "5"), ("Bad Name", "v"), ("X-Nul", "a\0b")] {
            let mut res = Response::new();
            res.set_status(201).set_header("Location", "/x").set_body("created");
            res.set_header(bad.0, bad.1);
            res.set_status(200).set_body("after").append_header("X-Later", "1").set_header("Content-Type", "text/html");
            assert!(res.add_header("X-Also", "1").is_ok());
            assert!(res.set_content_type("text/css").is_ok());
            assert!(res.failed(), "{bad:?}");
            assert_eq!((res.status(), res.body()), (500, FAILED_BODY), "{bad:?}");
            assert_eq!((res.header("location"), res.content_type(), res.headers().count()), (None, None, 0));
            let wire = encoded(&res, false, Some("close"));
            assert_eq!(
                wire,
                "HTTP/1.1 500 Internal Server Error\r\nServer: quiesce\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\nConnection: close\r\n\r\n\
                 internal server error\n",
                "{bad:?}"
            );
            // Writing into the body directly does not reach the wire either.
            res.body_mut().extend_from_slice(b"more");
            assert!(encoded(&res, true, None).ends_with("Content-Length: 22\r\n\r\n"));
            assert_eq!(res.body(), FAILED_BODY);
            res.reset();
            assert!(!res.failed());
            assert_eq!((res.status(), res.body()), (200, &b""[..]));
        }
        // append_header fails the same way; add_header only reports.
        let mut res = Response::new();
        assert!(res.add_header("X-A", "a\nb").is_err());
        assert!(!res.failed());
        res.append_header("X-A", "a\nb");
        assert!(res.failed());
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_bodies() {
        use std::collections::BTreeMap;
        let mut res = Response::new();
        res.set_status(201).json(&BTreeMap::from([("id", 7)]));
        assert_eq!(
            (res.status(), res.body(), res.content_type()),
            (201, &br#"{"id":7}"#[..], Some("application/json"))
        );
        assert!(
            encoded(&res, false, None)
                .ends_with("Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"id\":7}")
        );
        // Keys that are not strings cannot be JSON: a 500.
        let mut res = Response::new();
        res.json(&BTreeMap::from([((1, 2), 3)]));
        assert!(res.failed());
        assert_eq!((res.status(), res.body(), res.content_type()), (500, FAILED_BODY, None));
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 9, 10, 99, 100, 999, 1000, 4096, 9999, 10_000, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
