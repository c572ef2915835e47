//! The borrowed [`Request`] a handler sees, its [`Version`], and [`OwnedRequest`], a copy to
//! take to another thread. Heads are read in `head.rs`.
//!
//! Both have the same helpers for what a handler reads: decoded query and path parameters, a
//! header as text, the body as text or (feature `json`) as JSON, failing with a [`BodyError`]
//! that says which status to answer and why.
//!
//! Decoding, the same rule everywhere: `%XX` escapes are decoded; a `%` that is not followed by
//! two hex digits stays as it is; bytes that are not UTF-8 once decoded become U+FFFD. In a
//! query string `+` is a space too. This is what browsers do with `URLSearchParams` (the WHATWG
//! `application/x-www-form-urlencoded` parser, from the `form_urlencoded` crate), so a handler
//! never has an error to handle for a parameter; the raw text stays available (`*_raw`) for one
//! that must tell `%FF` from `%EF%BF%BD`.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

/// Header slots on the stack for one parse: the most header fields a request can have
/// (`ServerConfig::max_headers` is clamped to this).
pub const HEADER_SLOTS: usize = 256;

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless the client asks for keep-alive.
    Http10,
    /// HTTP/1.1: the connection stays open unless either side says `Connection: close`.
    Http11,
}

/// The accessors [`Request`] and [`OwnedRequest`] share, written once: each is derived from the
/// few every request has (`target`, `header`, `body`, `param_raw`, and the fields `draining`
/// and `client`). `$lt` is what the results borrow from: the connection's buffer (`'a`) or the
/// owned request (`'_`).
macro_rules! shared_accessors {
    ($lt:lifetime) => {
    /// The path of the target, still percent-encoded: the part before `?`. For an absolute-form
    /// target (`http://host/x`) the part after the authority (`/x`, or `/` when empty).
    #[inline]
    pub fn path(&self) -> &$lt str {
        path_of(self.target())
    }

    /// The query string after `?`, still percent-encoded, if any.
    pub fn query(&self) -> Option<&$lt str> {
        query_of(self.target())
    }

    /// The value of the first query parameter called `name`, decoded; `Some("")` for `?name`
    /// without `=`. Borrowed from the request unless there was something to decode.
    ///
    /// The rule is the one browsers apply to `URLSearchParams` (WHATWG
    /// `application/x-www-form-urlencoded`): `+` is a space, `%XX` a byte, a `%` not followed by
    /// two hex digits stays as it is, and bytes that are not UTF-8 once decoded become U+FFFD.
    /// So there is no error to handle; [`Request::query_param_raw`] has the text as sent, to
    /// tell `%FF` from `%EF%BF%BD`. Names are decoded too.
    ///
    /// ```
    /// # use quiesce::{Request, Version};
    /// let req = Request::new("GET", "/search?q=caf%C3%A9+au+lait&page=2", Version::Http11, &[], b"");
    /// assert_eq!(req.query_param("q").as_deref(), Some("café au lait"));
    /// assert_eq!(req.query_param("page").and_then(|p| p.parse::<u32>().ok()), Some(2));
    /// assert_eq!(req.query_param("sort"), None);
    /// ```
    pub fn query_param(&self, name: &str) -> Option<Cow<$lt, str>> {
        query_param_of(self.target(), name)
    }

    /// The raw (still percent-encoded) value of the first query parameter called `name`, matched
    /// by its raw name; `Some("")` for `?name` without `=`.
    pub fn query_param_raw(&self, name: &str) -> Option<&$lt str> {
        query_param_raw_of(self.target(), name)
    }

    /// Every query parameter in order, decoded as by [`Request::query_param`]; empty pairs
    /// (`&&`) are skipped.
    pub fn query_params(&self) -> impl Iterator<Item = (Cow<$lt, str>, Cow<$lt, str>)> + use<$lt> {
        form_urlencoded::parse(self.query().unwrap_or("").as_bytes())
    }

    /// The value of the path parameter `name` of the route that matched (`{name}` or
    /// `{*name}` in its pattern, see [`Router`](crate::Router)), percent-decoded as
    /// [`Request::query_param`] is, but `+` stays a `+`; `None` outside a router or for a name
    /// the pattern does not have.
    pub fn param(&self, name: &str) -> Option<Cow<$lt, str>> {
        self.param_raw(name).map(decode_path)
    }

    /// The value of the first header field called `name` (case-insensitive) as text; `None`
    /// when there is none or when it is not UTF-8 (field values may carry other bytes: read
    /// those with [`Request::header`]).
    pub fn header_str(&self, name: &str) -> Option<&$lt str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The body as text: a [`BodyError`] (400) when it is not UTF-8.
    pub fn body_text(&self) -> Result<&$lt str, BodyError> {
        text_of(self.body())
    }

    /// True when the server is draining: this request will be answered, and it is the last
    /// one on its connection unless more were already pipelined behind it.
    pub fn server_draining(&self) -> bool {
        self.draining
    }

    /// The client's address (`0.0.0.0:0` for a request built with [`Request::new`]).
    pub fn peer_addr(&self) -> SocketAddr {
        self.client.addr
    }

    /// The id of the connection the request came on: unique for the server's lifetime, the
    /// same as in its state changes (`StateChange::id`); 0 for a request built by hand.
    pub fn connection_id(&self) -> u64 {
        self.client.id
    }
    };
}

/// Who sent a request: its connection's id and the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// Unique for the server's lifetime (slab keys, unlike these, are reused).
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
}

/// The TLS session a request came over ([`Request::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The cipher suite, by its IANA name (`TLS13_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// The protocol the client and server agreed on with ALPN (`http/1.1`), if they did.
    pub alpn: Option<String>,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: Option<String>,
}

/// The client of a request built by hand ([`Request::new`]): id 0, address `0.0.0.0:0`.
static UNKNOWN_CLIENT: Client = Client { id: 0, addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) };

/// One request, borrowed from the connection's read buffer: nothing is copied. To keep it
/// beyond the handler (to finish the answer on another thread), copy it with
/// [`Request::owned`].
///
/// The body is complete: a handler runs only once the whole body (`Content-Length` or chunked,
/// de-chunked) has arrived.
#[derive(Debug)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    version: Version,
    headers: &'a [httparse::Header<'a>],
    body: &'a [u8],
    draining: bool,
    client: &'a Client,
    /// The TLS session it came over (`None` over plain TCP).
    tls: Option<&'a Arc<TlsInfo>>,
    /// The path parameters the router matched, (name, raw value); empty outside a router.
    params: &'a [(&'a str, &'a str)],
}

impl<'a> Request<'a> {
    /// Builds a request from its parts (for handler tests; the server builds its own).
    pub fn new(
        method: &'a str,
        target: &'a str,
        version: Version,
        headers: &'a [httparse::Header<'a>],
        body: &'a [u8],
    ) -> Self {
        Request {
            method,
            target,
            version,
            headers,
            body,
            draining: false,
            client: &UNKNOWN_CLIENT,
            tls: None,
            params: &[],
        }
    }

    /// The request the server hands a handler: from `client`, `draining` or not.
    pub(crate) fn received<'b: 'a>(
        req: &'a httparse::Request<'_, 'b>,
        version: Version,
        body: &'a [u8],
        draining: bool,
        client: &'a Client,
        tls: Option<&'a Arc<TlsInfo>>,
    ) -> Self {
        let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
        Request { method, target, version, headers: req.headers, body, draining, client, tls, params: &[] }
    }

    /// The same request with path parameters, (name, raw value), as a [`Router`](crate::Router)
    /// hands it to a route's handler (see [`Request::param`]): to test such a handler alone.
    pub fn with_params<'p>(&self, params: &'p [(&'p str, &'p str)]) -> Request<'p>
    where
        'a: 'p,
    {
        Request { params, ..*self }
    }

    /// The request came from `client`.
    #[cfg(test)]
    pub(crate) fn with_client(mut self, client: &'a Client) -> Self {
        self.client = client;
        self
    }

    /// Marks the request as received while the server drains (see [`Request::server_draining`]).
    pub fn with_draining(mut self, draining: bool) -> Self {
        self.draining = draining;
        self
    }

    /// The method, e.g. `GET` (case-sensitive, as sent).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target as sent: `/path?query`, an absolute URI, or `*`.
    pub fn target(&self) -> &'a str {
        self.target
    }

    shared_accessors!('a);

    /// The path parameter `name` as it was in the path, still percent-encoded.
    pub fn param_raw(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(n, _)| *n == name).map(|&(_, value)| value)
    }

    /// Every path parameter of the route that matched, (name, raw value), in pattern order.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.params.iter().copied()
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The value of the first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// Every header field in order, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The complete request body (empty when there is none).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The body parsed as JSON into `T` (feature `json`), which may borrow from the body.
    ///
    /// Fails with a [`BodyError`] that is a 415 when `Content-Type` is not JSON
    /// (`application/json`, or `application/<anything>+json`, parameters allowed) and a 400
    /// when the body is not JSON or not the shape of `T`, saying what and where (serde_json's
    /// message, with line and column). [`BodyError::reply`] answers it:
    ///
    /// ```
    /// use quiesce::{Reply, Router};
    ///
    /// let router = Router::new().post("/sum", |req, res| {
    ///     let numbers: Vec<i64> = match req.json() {
    ///         Ok(numbers) => numbers,
    ///         Err(e) => return e.reply(res),
    ///     };
    ///     res.json(&numbers.iter().sum::<i64>());
    ///     Reply::Now
    /// });
    /// # let _ = router;
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, BodyError> {
        json_of(self.header("content-type"), self.body)
    }

    /// The TLS session the request came over (version, cipher suite, ALPN, SNI); `None` over
    /// plain HTTP.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.map(|tls| &**tls)
    }

    /// A copy that owns its bytes, to take to another thread: two allocations, one for the
    /// text (method, target, field names), one for the field values and the body.
    pub fn owned(&self) -> OwnedRequest {
        let mut text = String::with_capacity(
            self.method.len()
                + self.target.len()
                + self.headers.iter().map(|h| h.name.len()).sum::<usize>()
                + self.params.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>(),
        );
        let mut data = Vec::with_capacity(self.body.len() + self.headers.iter().map(|h| h.value.len()).sum::<usize>());
        text.push_str(self.method);
        text.push_str(self.target);
        let mut fields = Vec::with_capacity(self.headers.len());
        for header in self.headers {
            let name = text.len()..text.len() + header.name.len();
            text.push_str(header.name);
            let value = data.len()..data.len() + header.value.len();
            data.extend_from_slice(header.value);
            fields.push((name, value));
        }
        let body = data.len();
        data.extend_from_slice(self.body);
        let mut params = Vec::with_capacity(self.params.len());
        for (name, value) in self.params {
            let name_at = text.len()..text.len() + name.len();
            text.push_str(name);
            let value_at = text.len()..text.len() + value.len();
            text.push_str(value);
            params.push((name_at, value_at));
        }
        OwnedRequest {
            text,
            method: self.method.len(),
            target: self.method.len() + self.target.len(),
            data,
            fields: fields.into_boxed_slice(),
            params: params.into_boxed_slice(),
            body,
            version: self.version,
            draining: self.draining,
            client: *self.client,
            tls: self.tls.cloned(),
        }
    }
}

/// A request copied out of the connection ([`Request::owned`]), with the same accessors as
/// [`Request`]: `Send + 'static`, to finish the answer on another thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    /// The method, the target, the field names, then each path parameter's name and value,
    /// back to back.
    text: String,
    /// Where the method ends and the target begins.
    method: usize,
    /// Where the target ends.
    target: usize,
    /// The field values, then the body.
    data: Vec<u8>,
    /// Each field: its name in `text`, its value in `data`.
    fields: Box<[(std::ops::Range<usize>, std::ops::Range<usize>)]>,
    /// Each path parameter: its name and its raw value in `text`.
    params: Box<[(std::ops::Range<usize>, std::ops::Range<usize>)]>,
    /// Where the body begins in `data`.
    body: usize,
    version: Version,
    draining: bool,
    client: Client,
    tls: Option<Arc<TlsInfo>>,
}

impl OwnedRequest {
    shared_accessors!('_);

    /// See [`Request::method`].
    pub fn method(&self) -> &str {
        &self.text[..self.method]
    }

    /// See [`Request::target`].
    pub fn target(&self) -> &str {
        &self.text[self.method..self.target]
    }

    /// See [`Request::param_raw`].
    pub fn param_raw(&self, name: &str) -> Option<&str> {
        self.params().find(|(n, _)| *n == name).map(|(_, value)| value)
    }

    /// See [`Request::params`].
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.params.iter().map(|(name, value)| (&self.text[name.clone()], &self.text[value.clone()]))
    }

    /// See [`Request::version`].
    pub fn version(&self) -> Version {
        self.version
    }

    /// See [`Request::header`].
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }

    /// See [`Request::headers`].
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(|(name, value)| (&self.text[name.clone()], &self.data[value.clone()]))
    }

    /// See [`Request::body`].
    pub fn body(&self) -> &[u8] {
        &self.data[self.body..]
    }

    /// See [`Request::json`] (feature `json`).
    #[cfg(feature = "json")]
    pub fn json<'de, T: serde::Deserialize<'de>>(&'de self) -> Result<T, BodyError> {
        json_of(self.header("content-type"), self.body())
    }

    /// See [`Request::tls`].
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_deref()
    }
}

/// The path of a target, still percent-encoded: the part before `?`. For an absolute-form
/// target (`http://host/x`) the part after the authority (`/x`, or `/` when empty).
#[inline(always)]
fn path_of(target: &str) -> &str {
    // Runs for every request (the router's lookup): `find_byte` is the word-at-a-time search.
    let end = super::find_byte(target.as_bytes(), b'?').unwrap_or(target.len());
    let without_query = &target[..end];
    if without_query.starts_with('/') || without_query == "*" {
        return without_query;
    }
    // absolute-form: scheme "://" authority path
    match without_query.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => without_query,
    }
}

/// The query string of a target, after `?`.
fn query_of(target: &str) -> Option<&str> {
    target.split_once('?').map(|(_, q)| q)
}

/// The decoded value of the first query parameter whose decoded name is `name`.
fn query_param_of<'t>(target: &'t str, name: &str) -> Option<Cow<'t, str>> {
    form_urlencoded::parse(query_of(target)?.as_bytes()).find_map(|(key, value)| (key == name).then_some(value))
}

/// The raw value of the first query parameter whose raw name is `name`.
fn query_param_raw_of<'t>(target: &'t str, name: &str) -> Option<&'t str> {
    query_of(target)?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// A path segment percent-decoded (`+` is not a space in a path); see the module docs.
fn decode_path(raw: &str) -> Cow<'_, str> {
    // Most parameters have nothing to decode: borrowed as they are, without the decoder's walk
    // and its UTF-8 check (`raw` is text already).
    if !raw.as_bytes().contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// Why a request body could not be read as the handler asked ([`Request::body_text`],
/// [`Request::json`]): the status to answer with (400, or 415 for a `Content-Type` that is not
/// the one expected) and a message for the client saying what was wrong.
/// [`BodyError::reply`] answers with both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    status: u16,
    message: String,
}

impl BodyError {
    /// An error that answers `status` with `message` (for a handler's own checks of a body).
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        BodyError { status, message: message.into() }
    }

    /// The status to answer with: 400 or 415.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// What was wrong, for the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BodyError {}

fn text_of(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|e| BodyError::new(400, format!("request body is not UTF-8: {e}")))
}

/// Whether a `Content-Type` value names JSON: `application/json` or `application/<x>+json`
/// (RFC 6839), any case, parameters (`; charset=utf-8`) allowed.
#[cfg_attr(not(feature = "json"), allow(dead_code))]
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let Some(subtype) = essence.get(..12).filter(|t| t.eq_ignore_ascii_case(b"application/")).map(|_| &essence[12..])
    else {
        return false;
    };
    subtype.eq_ignore_ascii_case(b"json")
        || (subtype.len() > 5
            && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json")
            && subtype.iter().all(|&b| super::is_tchar(b)))
}

#[cfg(feature = "json")]
fn json_of<'b, T: serde::Deserialize<'b>>(content_type: Option<&[u8]>, body: &'b [u8]) -> Result<T, BodyError> {
    if !content_type.is_some_and(is_json) {
        let why = match content_type {
            None => "missing Content-Type: expected application/json",
            Some(_) => "unsupported Content-Type: expected application/json",
        };
        return Err(BodyError::new(415, why));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "JSON of the wrong shape",
            _ => "malformed JSON",
        };
        BodyError::new(400, format!("{what}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        let r = |t| Request::new("GET", t, Version::Http11, &[], b"");
        assert_eq!(r("/a/b?x=1").path(), "/a/b");
        assert_eq!(r("/a/b?x=1&delay=2s").query_param("delay").as_deref(), Some("2s"));
        assert_eq!(r("/?flag").query_param("flag").as_deref(), Some(""));
        assert_eq!(r("/").query_param("x"), None);
        assert_eq!(r("http://example.com/x?y").path(), "/x");
        assert_eq!(r("http://example.com").path(), "/");
        assert_eq!(r("*").path(), "*");
    }

    #[test]
    fn an_owned_copy_answers_like_the_request() {
        let headers = [
            httparse::Header { name: "Host", value: b"a" },
            httparse::Header { name: "X-Long", value: b"\xff\x00 value" },
        ];
        let client = Client { id: 7, addr: "192.0.2.1:4321".parse().unwrap() };
        let req = Request::new("POST", "/p/q?x=1&y", Version::Http10, &headers, b"body")
            .with_draining(true)
            .with_client(&client);
        let owned = req.owned();
        assert_eq!((owned.method(), owned.target(), owned.path()), ("POST", "/p/q?x=1&y", "/p/q"));
        assert_eq!(
            (owned.query(), owned.query_param("x").as_deref(), owned.query_param("y").as_deref()),
            (Some("x=1&y"), Some("1"), Some(""))
        );
        assert_eq!(owned.headers().collect::<Vec<_>>(), req.headers().collect::<Vec<_>>());
        assert_eq!(owned.header("x-long"), Some(&b"\xff\x00 value"[..]));
        assert_eq!((owned.body(), owned.version(), owned.server_draining()), (&b"body"[..], Version::Http10, true));
        assert_eq!((owned.peer_addr(), owned.connection_id()), (client.addr, 7));
        assert_eq!((req.peer_addr(), req.connection_id()), (client.addr, 7));
        let plain = Request::new("GET", "/", Version::Http11, &[], b"");
        assert_eq!((plain.connection_id(), plain.peer_addr().port()), (0, 0));
    }

    /// Decoded, borrowed when there is nothing to decode, `+` a space, bad escapes kept,
    /// invalid UTF-8 replaced; the raw value as it came.
    #[test]
    fn query_parameters_are_decoded() {
        let target = "/s?q=caf%C3%A9+au%20lait&plain=abc&plus=a%2Bb&bad=%zz%4&bin=%FF%FEx&empty=&flag\
                      &a%20b=spaced&dup=1&dup=2&&=nameless&utf=%E2%82%AC";
        let req = Request::new("GET", target, Version::Http11, &[], b"");
        let cases = [
            ("q", Some("café au lait")),
            ("plain", Some("abc")),
            ("plus", Some("a+b")),
            ("bad", Some("%zz%4")),
            ("bin", Some("\u{FFFD}\u{FFFD}x")),
            ("empty", Some("")),
            ("flag", Some("")),
            ("a b", Some("spaced")),
            ("dup", Some("1")),
            ("", Some("nameless")),
            ("utf", Some("€")),
            ("missing", None),
        ];
        for (name, want) in cases {
            assert_eq!(req.query_param(name).as_deref(), want, "{name:?}");
            assert_eq!(req.owned().query_param(name).as_deref(), want, "owned {name:?}");
        }
        assert!(matches!(req.query_param("plain"), Some(Cow::Borrowed(_))));
        assert!(matches!(req.query_param("q"), Some(Cow::Owned(_))));
        assert_eq!(req.query_param_raw("q"), Some("caf%C3%A9+au%20lait"));
        assert_eq!(req.query_param_raw("a%20b"), Some("spaced"));
        assert_eq!(req.query_param_raw("a b"), None);
        assert_eq!(req.owned().query_param_raw("bin"), Some("%FF%FEx"));
        let all: Vec<(String, String)> = req.query_params().map(|(k, v)| (k.into(), v.into())).take(3).collect();
        assert_eq!(
            all,
            [("q".into(), "café au lait".into()), ("plain".into(), "abc".into()), ("plus".into(), "a+b".into())]
        );
        assert_eq!(Request::new("GET", "/", Version::Http11, &[], b"").query_params().count(), 0);
    }

    /// Path parameters: decoded without `+` as space, raw on request, kept by `owned`.
    #[test]
    fn path_parameters() {
        let params = [("id", "a%20b+c"), ("rest", "x/%FF/y")];
        let base = Request::new("GET", "/u/a%20b+c/x/%FF/y", Version::Http11, &[], b"");
        assert_eq!(base.param("id"), None);
        let req = base.with_params(&params);
        assert_eq!(req.param("id").as_deref(), Some("a b+c"));
        assert_eq!(req.param_raw("id"), Some("a%20b+c"));
        assert_eq!(req.param("rest").as_deref(), Some("x/\u{FFFD}/y"));
        assert_eq!(req.param("other"), None);
        assert_eq!(req.params().collect::<Vec<_>>(), params);
        let owned = req.owned();
        assert_eq!(owned.params().collect::<Vec<_>>(), params);
        assert_eq!((owned.param("id").as_deref(), owned.param_raw("rest")), (Some("a b+c"), Some("x/%FF/y")));
        assert_eq!((owned.target(), owned.method()), (req.target(), "GET"));
    }

    #[test]
    fn header_str_and_body_text() {
        let headers = [
            httparse::Header { name: "X-Text", value: b"caf\xc3\xa9" },
            httparse::Header { name: "X-Latin1", value: b"caf\xe9" },
        ];
        let req = Request::new("POST", "/", Version::Http11, &headers, b"hello \xe2\x82\xac");
        assert_eq!(req.header_str("x-text"), Some("café"));
        assert_eq!(req.header_str("x-latin1"), None);
        assert_eq!(req.header("x-latin1"), Some(&b"caf\xe9"[..]));
        assert_eq!(req.header_str("x-missing"), None);
        assert_eq!(req.body_text(), Ok("hello €"));
        let owned = req.owned();
        assert_eq!((owned.header_str("X-TEXT"), owned.header_str("x-latin1")), (Some("café"), None));
        assert_eq!(owned.body_text(), Ok("hello €"));

        let bad = Request::new("POST", "/", Version::Http11, &[], b"ok \xff");
        let e = bad.body_text().unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message().starts_with("request body is not UTF-8"), "{e}");
        assert!(e.message().contains("index 3"), "{e}");
        assert_eq!(bad.owned().body_text(), Err(e));
    }

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/problem+json",
            "application/vnd.api+json; ext=x",
        ] {
            assert!(is_json(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "",
            "text/json",
            "application/jsonx",
            "application/+json",
            "application/x json+json",
            "text/plain",
            "json",
            "application/",
        ] {
            assert!(!is_json(no.as_bytes()), "{no:?}");
        }
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_bodies() {
        use std::collections::BTreeMap;
        let json = [httparse::Header { name: "Content-Type", value: b"application/json; charset=utf-8" }];
        let req = |headers, body| Request::new("POST", "/", Version::Http11, headers, body);

        let ok = req(&json, br#"{"a": 1, "b": 2}"#);
        let map: BTreeMap<String, u32> = ok.json().unwrap();
        assert_eq!(map, BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]));
        // Borrowing from the body.
        let text = req(&json, br#"["x", "y"]"#);
        let words: Vec<&str> = text.json().unwrap();
        assert_eq!(words, ["x", "y"]);
        assert_eq!(text.owned().json::<Vec<&str>>().unwrap(), ["x", "y"]);

        let malformed = req(&json, b"{\"a\": 1,\n \"b\" 2}").json::<BTreeMap<String, u32>>().unwrap_err();
        assert_eq!(malformed.status(), 400);
        assert!(malformed.message().starts_with("malformed JSON: "), "{malformed}");
        assert!(malformed.message().contains("line 2 column"), "{malformed}");
        let truncated = req(&json, b"{\"a\": ").json::<BTreeMap<String, u32>>().unwrap_err();
        assert!(truncated.message().starts_with("malformed JSON: EOF"), "{truncated}");
        let shape = req(&json, br#"{"a": "one"}"#).json::<BTreeMap<String, u32>>().unwrap_err();
        assert_eq!(shape.status(), 400);
        assert!(shape.message().starts_with("JSON of the wrong shape: invalid type: string"), "{shape}");

        let none = req(&[], b"{}").json::<BTreeMap<String, u32>>().unwrap_err();
        assert_eq!((none.status(), none.message()), (415, "missing Content-Type: expected application/json"));
        let text_plain = [httparse::Header { name: "content-type", value: b"text/plain" }];
        let wrong = req(&text_plain, b"{}").json::<BTreeMap<String, u32>>().unwrap_err();
        assert_eq!((wrong.status(), wrong.message()), (415, "unsupported Content-Type: expected application/json"));
        assert_eq!(req(&text_plain, b"{}").owned().json::<BTreeMap<String, u32>>().unwrap_err(), wrong);
    }
}
