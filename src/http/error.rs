//! Protocol errors, and the one function that maps each to the status the client gets.

use std::fmt;

/// What was wrong with a request. Every variant is answered with its status and a short text
/// body, then the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// Malformed syntax or framing: 400. The text says what, for the client and for logs.
    BadRequest(&'static str),
    /// The head did not arrive within the header timeout (or the body stalled): 408.
    Timeout,
    /// The declared or decoded body is over the limit: 413.
    BodyTooLarge,
    /// The request line alone is over the head limit: 414.
    UriTooLong,
    /// The head is over the limit, or has too many fields: 431.
    HeadTooLarge,
    /// An `Expect` value other than `100-continue`: 417.
    ExpectationFailed,
    /// A transfer coding or method we do not implement: 501.
    NotImplemented(&'static str),
    /// An HTTP major version other than 1: 505.
    VersionNotSupported,
}

impl HttpError {
    /// The status code the client gets.
    pub(crate) fn status(self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Timeout => 408,
            HttpError::BodyTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::HeadTooLarge => 431,
            HttpError::ExpectationFailed => 417,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// A one-line explanation, sent as the body of the error response.
    pub(crate) fn detail(self) -> &'static str {
        match self {
            HttpError::BadRequest(what) | HttpError::NotImplemented(what) => what,
            HttpError::Timeout => "the request did not arrive in time",
            HttpError::BodyTooLarge => "the request body is larger than this server accepts",
            HttpError::UriTooLong => "the request line is longer than this server accepts",
            HttpError::HeadTooLarge => "the request header section is larger than this server accepts",
            HttpError::ExpectationFailed => "only 'Expect: 100-continue' is supported",
            HttpError::VersionNotSupported => "only HTTP/1.x is supported",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status(), self.detail())
    }
}

/// What `httparse` rejecting the version becomes (see `request::normalize_version`).
pub(crate) const HTTPARSE_VERSION_ERROR: HttpError = HttpError::BadRequest("invalid HTTP version");

/// Maps an `httparse` error to ours.
pub(crate) fn from_httparse(e: httparse::Error) -> HttpError {
    use httparse::Error as E;
    match e {
        E::HeaderName => HttpError::BadRequest("invalid header field name"),
        E::HeaderValue => HttpError::BadRequest("invalid header field value"),
        E::NewLine => HttpError::BadRequest("invalid line ending"),
        E::Status => HttpError::BadRequest("invalid request line"),
        E::Token => HttpError::BadRequest("invalid method or request line"),
        E::TooManyHeaders => HttpError::HeadTooLarge,
        E::Version => HTTPARSE_VERSION_ERROR,
    }
}
