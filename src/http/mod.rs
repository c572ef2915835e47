//! HTTP/1.1 on bytes: parsing request heads with `httparse`, decoding chunked bodies, encoding
//! responses. Nothing here sees a socket or a clock other than through its arguments.

pub(crate) mod chunked;
pub(crate) mod date;
pub(crate) mod error;
pub(crate) mod request;
pub(crate) mod response;
