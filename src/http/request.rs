//! The borrowed [`Request`] a handler sees, its [`Version`], and [`OwnedRequest`], a copy to
//! take to another thread. Heads are read in `head.rs`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

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

/// Who sent a request: its connection's id and the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// Unique for the server's lifetime (slab keys, unlike these, are reused).
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
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
        Request { method, target, version, headers, body, draining: false, client: &UNKNOWN_CLIENT }
    }

    /// The request the server hands a handler: from `client`, `draining` or not.
    pub(crate) fn received<'b: 'a>(
        req: &'a httparse::Request<'_, 'b>,
        version: Version,
        body: &'a [u8],
        draining: bool,
        client: &'a Client,
    ) -> Self {
        let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
        Request { method, target, version, headers: req.headers, body, draining, client }
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

    /// The path of the target, still percent-encoded: the part before `?`. For an absolute-form
    /// target (`http://host/x`) the part after the authority (`/x`, or `/` when empty).
    pub fn path(&self) -> &'a str {
        path_of(self.target)
    }

    /// The query string after `?`, still percent-encoded, if any.
    pub fn query(&self) -> Option<&'a str> {
        query_of(self.target)
    }

    /// The raw (still percent-encoded) value of the first query parameter called `name`;
    /// `Some("")` for `?name` without `=`.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        query_param_of(self.target, name)
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

    /// A copy that owns its bytes, to take to another thread: two allocations, one for the
    /// text (method, target, field names), one for the field values and the body.
    pub fn owned(&self) -> OwnedRequest {
        let mut text = String::with_capacity(
            self.method.len() + self.target.len() + self.headers.iter().map(|h| h.name.len()).sum::<usize>(),
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
        OwnedRequest {
            text,
            method: self.method.len(),
            target: self.method.len() + self.target.len(),
            data,
            fields: fields.into_boxed_slice(),
            body,
            version: self.version,
            draining: self.draining,
            client: *self.client,
        }
    }
}

/// A request copied out of the connection ([`Request::owned`]), with the same accessors as
/// [`Request`]: `Send + 'static`, to finish the answer on another thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    /// The method, the target and the field names, back to back.
    text: String,
    /// Where the method ends and the target begins.
    method: usize,
    /// Where the target ends.
    target: usize,
    /// The field values, then the body.
    data: Vec<u8>,
    /// Each field: its name in `text`, its value in `data`.
    fields: Box<[(std::ops::Range<usize>, std::ops::Range<usize>)]>,
    /// Where the body begins in `data`.
    body: usize,
    version: Version,
    draining: bool,
    client: Client,
}

impl OwnedRequest {
    /// See [`Request::method`].
    pub fn method(&self) -> &str {
        &self.text[..self.method]
    }

    /// See [`Request::target`].
    pub fn target(&self) -> &str {
        &self.text[self.method..self.target]
    }

    /// See [`Request::path`].
    pub fn path(&self) -> &str {
        path_of(self.target())
    }

    /// See [`Request::query`].
    pub fn query(&self) -> Option<&str> {
        query_of(self.target())
    }

    /// See [`Request::query_param`].
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param_of(self.target(), name)
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

    /// Whether the server was draining when the request arrived (see
    /// [`Request::server_draining`]).
    pub fn server_draining(&self) -> bool {
        self.draining
    }

    /// See [`Request::peer_addr`].
    pub fn peer_addr(&self) -> SocketAddr {
        self.client.addr
    }

    /// See [`Request::connection_id`].
    pub fn connection_id(&self) -> u64 {
        self.client.id
    }
}

/// The path of a target, still percent-encoded: the part before `?`. For an absolute-form
/// target (`http://host/x`) the part after the authority (`/x`, or `/` when empty).
#[inline(always)]
fn path_of(target: &str) -> &str {
    // A plain loop: targets are short, and this runs for every request.
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

/// The raw value of the first query parameter called `name` in a target.
fn query_param_of<'t>(target: &'t str, name: &str) -> Option<&'t str> {
    query_of(target)?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        let r = |t| Request::new("GET", t, Version::Http11, &[], b"");
        assert_eq!(r("/a/b?x=1").path(), "/a/b");
        assert_eq!(r("/a/b?x=1&delay=2s").query_param("delay"), Some("2s"));
        assert_eq!(r("/?flag").query_param("flag"), Some(""));
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
            (owned.query(), owned.query_param("x"), owned.query_param("y")),
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
}
