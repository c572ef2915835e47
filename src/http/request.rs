//! The borrowed [`Request`] a handler sees, and its [`Version`]. Heads are read in `head.rs`.

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

/// One request, borrowed from the connection's read buffer: nothing is copied.
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
        Request { method, target, version, headers, body, draining: false }
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
        let target = self.target;
        // A plain loop: targets are short, and this runs for every request.
        let end = target.bytes().position(|b| b == b'?').unwrap_or(target.len());
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

    /// The query string after `?`, still percent-encoded, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The raw (still percent-encoded) value of the first query parameter called `name`;
    /// `Some("")` for `?name` without `=`.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
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
}
