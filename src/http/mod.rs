//! HTTP/1.1 on bytes: parsing request heads with `httparse`, decoding chunked bodies, encoding
//! responses. Nothing here sees a socket or a clock other than through its arguments.

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod date;
pub(crate) mod error;
pub(crate) mod head;
pub(crate) mod request;
pub(crate) mod response;

/// The value of one hex digit, either case.
pub(crate) fn hex_value(byte: u8) -> Option<u8> {
    // A digit's value is below 16, so it fits.
    char::from(byte).to_digit(16).map(|d| d as u8)
}

/// Whether `byte` is a token character (RFC 9110 §5.6.2 `tchar`): field names, methods,
/// transfer codings, chunk extensions.
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}
