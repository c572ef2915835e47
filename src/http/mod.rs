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

/// Whether `bytes`, the start of a request, name the method HEAD: past the empty lines a
/// request line may follow, `HEAD ` (the method is case-sensitive). For an answer made before
/// the head was parsed, or without parsing it: it has no body either (RFC 9110 §9.3.2).
pub(crate) fn names_head(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(bytes.len());
    bytes[start..].starts_with(b"HEAD ")
}

/// Index of the first `needle` in `haystack`, eight bytes per step: targets are short, and a
/// search a byte at a time costs several instructions a byte on every request. Inlined, it
/// beats `memchr::memchr`, whose call and set-up cost more than a short target's search
/// (measured: benches/results/hand-written.md).
pub(crate) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut start = 0;
    while let Some((chunk, _)) = haystack[start..].split_first_chunk::<8>() {
        // A byte equal to the needle is zero in `x`; this test sees whether any byte of `x`
        // is zero (exactly: it only errs about which, and the scan below finds that).
        let x = u64::from_ne_bytes(*chunk) ^ pattern;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            break;
        }
        start += 8;
    }
    haystack[start..].iter().position(|&b| b == needle).map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_agrees_with_position() {
        // Every length up to 20, the needle at every place (or absent), among bytes on either
        // side of it (a borrow in the word test must not hide or invent a match).
        for len in 0..20 {
            for at in 0..=len {
                for (fill, needle) in [(b'a', b'?'), (b'?' + 1, b'?'), (b'?' - 1, b'?'), (0xff, 0x00), (0x00, 0x01)] {
                    let mut haystack = vec![fill; len];
                    if at < len {
                        haystack[at] = needle;
                    }
                    let expected = haystack.iter().position(|&b| b == needle);
                    assert_eq!(find_byte(&haystack, needle), expected, "{haystack:?} {needle}");
                }
            }
        }
        assert_eq!(find_byte(b"/a?b?c", b'?'), Some(2));
    }
}
