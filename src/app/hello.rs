//! The body of the server's default route, byte for byte what the Go program
//! `fmt.Fprintf(w, "Hello, %q", html.EscapeString(r.URL.Path))` writes: the request path is
//! percent-decoded (as Go's URL parser does for `URL.Path`), HTML-escaped (as
//! `html.EscapeString`) and then quoted as a Go string literal (as `strconv.Quote`, which is what
//! `%q` does with a string). Everything works on bytes, so a path that decodes to invalid UTF-8
//! is quoted with `\x` escapes, never rejected. The only failure is a malformed `%` escape.
//!
//! The HTML escaping is folded into the quoting pass: every byte `html.EscapeString` replaces is
//! ASCII and every replacement is printable ASCII without `"` or `\`, so escaping a byte and
//! quoting the replacement gives the same output as quoting it after a separate escaping pass,
//! and ASCII bytes never change how the UTF-8 around them decodes. That saves a second buffer.

use crate::http::hex_value;

/// The path could not be percent-decoded (a `%` not followed by two hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadPath;

/// Appends `Hello, ` + the Go-quoted, HTML-escaped, percent-decoded `raw_path` to `out`.
///
/// `raw_path` is the path part of a request target as received (before any `?`), still
/// percent-encoded. `scratch` is a caller-owned buffer reused between calls (it is cleared
/// first); apart from growing `scratch` and `out`, the function does not allocate.
/// On `Err`, `out` is left as it was on entry; on success the body is appended to what `out`
/// already holds.
pub(crate) fn write_hello(raw_path: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), BadPath> {
    scratch.clear();
    let entry_len = out.len();
    if let Err(e) = percent_decode_into(raw_path, scratch) {
        out.truncate(entry_len);
        return Err(e);
    }
    // The body is at least as long as the decoded path plus `Hello, ""`.
    out.reserve(scratch.len() + 9);
    out.extend_from_slice(b"Hello, ");
    go_quote_into(scratch, true, out);
    Ok(())
}

/// Appends the percent-decoding of `src` to `dst`, as Go's `url.PathUnescape` does.
///
/// `%XX` with two hex digits of either case becomes the byte `0xXX` (so `%2F` becomes `/`),
/// every other byte is copied unchanged (`+` stays `+`), and the result may be invalid UTF-8.
/// A `%` not followed by two hex digits is [`BadPath`]; `dst` then holds a partial decoding.
pub(crate) fn percent_decode_into(src: &[u8], dst: &mut Vec<u8>) -> Result<(), BadPath> {
    dst.reserve(src.len());
    let mut rest = src;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let (hi, lo, after) = match tail {
                [hi, lo, after @ ..] => (hex_value(*hi), hex_value(*lo), after),
                _ => return Err(BadPath),
            };
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(BadPath);
            };
            dst.push((hi << 4) | lo);
            rest = after;
        } else {
            dst.push(b);
            rest = tail;
        }
    }
    Ok(())
}

/// What Go's `html.EscapeString` replaces `b` with, or `None` if it leaves `b` alone.
///
/// Exactly five bytes are escaped; everything else, including invalid UTF-8, passes through.
fn html_entity(b: u8) -> Option<&'static [u8]> {
    match b {
        b'&' => Some(b"&amp;"),
        b'\'' => Some(b"&#39;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'"' => Some(b"&#34;"),
        _ => None,
    }
}

/// Appends `src` quoted as Go's `strconv.Quote` does to `dst`; with `escape_html`, each byte is
/// first replaced as Go's `html.EscapeString` would (see the module docs for why that is the
/// same as quoting the escaped bytes).
///
/// The output is `"` + the escaped content + `"`. Bytes are decoded as UTF-8; each byte of an
/// invalid sequence (including overlongs, surrogates and truncated sequences) becomes `\xhh`.
/// `"` and `\` are backslash-escaped, printable characters (see [`is_print`]) are copied,
/// `\a \b \f \n \r \t \v` use those escapes, other controls below U+0020 and U+007F become
/// `\xhh`, and every other non-printable character becomes `\uhhhh` or `\Uhhhhhhhh`.
pub(crate) fn go_quote_into(src: &[u8], escape_html: bool, dst: &mut Vec<u8>) {
    dst.reserve(src.len() + 2);
    dst.push(b'"');
    for chunk in src.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() {
                // `c` is ASCII, so the cast is exact.
                let b = c as u8;
                match html_entity(b) {
                    Some(entity) if escape_html => dst.extend_from_slice(entity),
                    _ => quote_ascii(b, dst),
                }
            } else if is_print(c) {
                let mut buf = [0; 4];
                dst.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            } else {
                let code = u32::from(c);
                if code < 0x1_0000 {
                    dst.extend_from_slice(b"\\u");
                    push_hex(code, 4, dst);
                } else {
                    dst.extend_from_slice(b"\\U");
                    push_hex(code, 8, dst);
                }
            }
        }
        for &b in chunk.invalid() {
            dst.extend_from_slice(b"\\x");
            push_hex(u32::from(b), 2, dst);
        }
    }
    dst.push(b'"');
}

/// Appends the `strconv.Quote` form of the ASCII byte `b` (without surrounding quotes).
fn quote_ascii(b: u8, dst: &mut Vec<u8>) {
    let escape: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x07 => b"\\a",
        0x08 => b"\\b",
        0x0C => b"\\f",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x0B => b"\\v",
        b' '..=b'~' => {
            dst.push(b);
            return;
        }
        _ => {
            dst.extend_from_slice(b"\\x");
            push_hex(u32::from(b), 2, dst);
            return;
        }
    };
    dst.extend_from_slice(escape);
}

/// Appends the lowest `digits` hex digits of `value` to `dst`, lowercase, zero-padded.
fn push_hex(value: u32, digits: u32, dst: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        let nibble = (value >> (i * 4)) & 0xF;
        // `nibble` is below 16, so the index is in bounds and `get` never yields `None`.
        if let Some(&d) = HEX.get(nibble as usize) {
            dst.push(d);
        }
    }
}

/// Whether Go's `strconv.IsPrint` (the same set as `unicode.IsPrint`) holds for the non-ASCII
/// character `c`: letters, marks, numbers, punctuation and symbols are printable; categories
/// Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs (only ASCII space is printable, and it is ASCII) are not.
///
/// Rust's `str::escape_debug` escapes exactly the characters of those same categories, with two
/// additions: the quote, backslash and named control escapes (all ASCII, never passed here), and
/// grapheme-extending characters (combining marks, which Go prints) when they start the string.
/// So `c` is judged behind a leading `a`: it is printable exactly when `"a{c}"` debug-escapes to
/// two characters. No table of our own, no allocation.
///
/// Residual difference: the Unicode version. Rust 1.95 uses Unicode 17.0.0, Go up to 1.26 uses
/// Unicode 15.0.0 (Go 1.27 moves to 17.0.0). Characters assigned in Unicode 15.1 to 17.0 (new
/// CJK extension ideographs, new scripts and symbols) are printable here but unassigned (Cn) for
/// an older Go, which writes them as `\u`/`\U` escapes. Category changes of already assigned
/// characters between those versions would differ the same way; none affect the examples tested.
fn is_print(c: char) -> bool {
    let mut buf = [0; 8];
    buf[0] = b'a';
    let len = 1 + c.len_utf8();
    if let Some(slot) = buf.get_mut(1..len) {
        c.encode_utf8(slot);
    }
    match buf.get(..len).map(std::str::from_utf8) {
        Some(Ok(s)) => s.escape_debug().nth(2).is_none(),
        _ => false,
    }
}

/// Unit tests: the issue's examples and Go's quoting rules.
#[cfg(test)]
mod tests {
    use super::*;

    /// The full body for `raw`, or the error.
    fn hello(raw: &str) -> Result<Vec<u8>, BadPath> {
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        write_hello(raw.as_bytes(), &mut scratch, &mut out).map(|()| out)
    }

    /// Asserts that the body for `raw` is `Hello, "` + `quoted` + `"`.
    #[track_caller]
    fn check(raw: &str, quoted: &str) {
        let want = format!("Hello, \"{quoted}\"");
        match hello(raw) {
            Ok(body) => assert_eq!(String::from_utf8_lossy(&body), want, "raw path {raw:?}: bytes {body:?}"),
            Err(e) => panic!("raw path {raw:?}: {e:?}"),
        }
    }

    /// Go's `strconv.Quote` without HTML escaping, as a `String` (the output is always ASCII or
    /// valid UTF-8).
    fn quote(src: &[u8]) -> String {
        let mut out = Vec::new();
        go_quote_into(src, false, &mut out);
        String::from_utf8(out).expect("quoted output is UTF-8")
    }

    /// The examples from the issue, raw path to body.
    #[test]
    fn issue_examples() {
        check("/", "/");
        check("/a<b>", "/a&lt;b&gt;");
        check("/x%22y", "/x&#34;y");
        check("/it's", "/it&#39;s");
        check("/caf%C3%A9", "/café");
        check("/%0A", "/\\n");
        check("/%FF", "/\\xff");
        check("/a%5Cb", "/a\\\\b");
    }

    /// ASCII controls use Go's named escapes or `\x`; space and `~` are printable.
    #[test]
    fn ascii_controls() {
        check("/%07", "/\\a");
        check("/%08%0C%0D%09%0B", "/\\b\\f\\r\\t\\v");
        check("/%01", "/\\x01");
        check("/%00", "/\\x00");
        check("/%1F", "/\\x1f");
        check("/%7F", "/\\x7f");
        check("/%20", "/ ");
        check("/%7E", "/~");
    }

    /// Non-printable non-ASCII characters become `\u` or `\U` escapes.
    #[test]
    fn non_printable_unicode() {
        check("/%C2%85", "/\\u0085");
        check("/%C2%A0", "/\\u00a0");
        check("/%C2%AD", "/\\u00ad");
        check("/%E2%80%8B", "/\\u200b");
        check("/%E2%80%A8", "/\\u2028");
        check("/%E2%80%A9", "/\\u2029");
        check("/%E3%80%80", "/\\u3000");
        check("/%EF%BB%BF", "/\\ufeff");
        check("/%EE%80%80", "/\\ue000");
        check("/%F3%B0%80%80", "/\\U000f0000");
        check("/%F4%8F%BF%BF", "/\\U0010ffff");
        check("/%F3%A0%80%81", "/\\U000e0001");
        // Noncharacters are unassigned (Cn) in both.
        check("/%EF%BF%BE", "/\\ufffe");
    }

    /// Printable non-ASCII characters, combining marks included, are copied.
    #[test]
    fn printable_unicode() {
        check("/e%CC%81", "/e\u{301}");
        // A combining mark right after the `/` and at the very start of the content.
        check("/%CC%81", "/\u{301}");
        check("/%F0%9F%98%80", "/\u{1F600}");
        check("/%EF%BF%BD", "/\u{FFFD}");
        check("/%E4%B8%AD", "/中");
        check("/%D8%A7", "/\u{627}");
    }

    /// Every byte of an invalid UTF-8 sequence becomes its own `\x` escape.
    #[test]
    fn invalid_utf8() {
        check("/%ED%A0%80", "/\\xed\\xa0\\x80");
        check("/%C3", "/\\xc3");
        check("/%C3%28", "/\\xc3(");
        check("/%C0%AF", "/\\xc0\\xaf");
        check("/%80", "/\\x80");
        check("/%F0%9F%98", "/\\xf0\\x9f\\x98");
        check("/%F0%9F%98a", "/\\xf0\\x9f\\x98a");
        check("/%F4%90%80%80", "/\\xf4\\x90\\x80\\x80");
        check("/%F8%88%80%80%80", "/\\xf8\\x88\\x80\\x80\\x80");
        // An invalid lead byte next to an HTML-escaped byte.
        check("/%C3<", "/\\xc3&lt;");
    }

    /// Percent-decoding: either hex case, `+` kept, `%2F` decoded, HTML escaping applied.
    #[test]
    fn decoding() {
        check("/a+b", "/a+b");
        check("%2f", "/");
        check("/%2f", "//");
        check("/a%2F%2fb", "/a//b");
        check("/%41%6a%4A", "/AjJ");
        check("/&", "/&amp;");
        check("/%26%27%3C%3E%22", "/&amp;&#39;&lt;&gt;&#34;");
        check("", "");
        check("/%25", "/%");
    }

    /// A `%` without two hex digits is `BadPath`.
    #[test]
    fn bad_escapes() {
        for raw in ["%", "%4", "%zz", "%G0", "/a%", "/a%4", "/%0G", "/%%41", "/%-1"] {
            assert_eq!(hello(raw), Err(BadPath), "raw path {raw:?}");
        }
    }

    /// `out` is untouched on error and appended to on success; `scratch` is cleared.
    #[test]
    fn out_is_kept_on_error_and_appended_to_on_success() {
        let mut scratch = b"stale".to_vec();
        let mut out = b"HTTP head\r\n\r\n".to_vec();
        assert_eq!(write_hello(b"/ok%4", &mut scratch, &mut out), Err(BadPath));
        assert_eq!(out, b"HTTP head\r\n\r\n");
        assert_eq!(write_hello(b"/ok", &mut scratch, &mut out), Ok(()));
        assert_eq!(out, b"HTTP head\r\n\r\nHello, \"/ok\"");
        // The scratch buffer is cleared, not appended to.
        let mut fresh = Vec::new();
        assert_eq!(write_hello(b"/a<", &mut scratch, &mut fresh), Ok(()));
        assert_eq!(fresh, b"Hello, \"/a&lt;\"");
    }

    /// With enough capacity, reused buffers are not reallocated.
    #[test]
    fn no_growth_beyond_reserved_capacity_on_reuse() {
        let mut scratch = Vec::with_capacity(64);
        let mut out = Vec::with_capacity(256);
        let (scratch_ptr, out_ptr) = (scratch.as_ptr(), out.as_ptr());
        for raw in ["/caf%C3%A9", "/%FF%00<", "/x"] {
            out.clear();
            assert_eq!(write_hello(raw.as_bytes(), &mut scratch, &mut out), Ok(()));
        }
        assert_eq!(scratch.as_ptr(), scratch_ptr);
        assert_eq!(out.as_ptr(), out_ptr);
    }

    /// The decoder on its own appends and reports bad escapes.
    #[test]
    fn percent_decode_alone() {
        let mut dst = b"x".to_vec();
        assert_eq!(percent_decode_into(b"%C3%a9+%2F", &mut dst), Ok(()));
        assert_eq!(dst, b"x\xc3\xa9+/");
        assert_eq!(percent_decode_into(b"%", &mut dst), Err(BadPath));
    }

    /// Quoting without HTML escaping leaves `<>'&` alone and escapes `"` and `\`.
    #[test]
    fn go_quote_without_html() {
        assert_eq!(quote(b""), "\"\"");
        assert_eq!(quote(b"<a href=\"x\">'&'"), "\"<a href=\\\"x\\\">'&'\"");
        assert_eq!(quote(b"\\"), "\"\\\\\"");
        assert_eq!(quote("\u{7}\u{85}\u{10FFFF}".as_bytes()), "\"\\a\\u0085\\U0010ffff\"");
    }

    /// `html.EscapeString` as a separate pass, to check that folding it into the quoting pass
    /// gives the same bytes.
    fn html_escape(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in src {
            match html_entity(b) {
                Some(entity) => out.extend_from_slice(entity),
                None => out.push(b),
            }
        }
        out
    }

    /// Folding the HTML escaping into the quoting pass changes nothing.
    #[test]
    fn folded_html_escape_equals_separate_pass() {
        let samples: [&[u8]; 8] = [
            b"",
            b"&'<>\"",
            b"\xc3<\xe2\x80>\xff&",
            b"a\\\"b",
            "caf\u{e9} <\u{301}> \u{a0}\u{1F600}\u{f0000}".as_bytes(),
            b"\x00\x07\x7f\x80\xbf\xc0",
            b"\xf0\x9f\x98'",
            b"\xed\xa0\x80\"",
        ];
        for src in samples {
            let mut folded = Vec::new();
            go_quote_into(src, true, &mut folded);
            let mut separate = Vec::new();
            go_quote_into(&html_escape(src), false, &mut separate);
            assert_eq!(folded, separate, "source {src:?}");
        }
    }

    /// Each single byte is quoted by Go's rules (bytes >= 0x80 alone are invalid UTF-8).
    #[test]
    fn every_single_byte_matches_go_rules() {
        for b in 0..=u8::MAX {
            let q = quote(&[b]);
            let inner = q.get(1..q.len() - 1).unwrap_or_default();
            let want = match b {
                b'"' => "\\\"".to_owned(),
                b'\\' => "\\\\".to_owned(),
                7 => "\\a".to_owned(),
                8 => "\\b".to_owned(),
                0xC => "\\f".to_owned(),
                b'\n' => "\\n".to_owned(),
                b'\r' => "\\r".to_owned(),
                b'\t' => "\\t".to_owned(),
                0xB => "\\v".to_owned(),
                0x20..=0x7E => char::from(b).to_string(),
                _ => format!("\\x{b:02x}"),
            };
            assert_eq!(inner, want, "byte {b:#04x}");
        }
    }

    /// `is_print` against characters of each general category.
    #[test]
    fn is_print_categories() {
        // Printable: letters, marks (also spacing and enclosing), numbers, punctuation, symbols.
        for c in [
            'é',
            '中',
            'ß',
            '\u{301}',
            '\u{903}',
            '\u{20DD}',
            '\u{663}',
            '½',
            '«',
            '€',
            '\u{FFFD}',
            '\u{1F600}',
            '\u{E0100}',
            '\u{2F800}',
        ] {
            assert!(is_print(c), "{c:?} should be printable");
        }
        // Not printable: Cc, Cf, Cs (not a char), Co, Cn, Zl, Zp, Zs other than space.
        for c in [
            '\u{80}',
            '\u{9F}',
            '\u{AD}',
            '\u{600}',
            '\u{200D}',
            '\u{2060}',
            '\u{E000}',
            '\u{F8FF}',
            '\u{F0000}',
            '\u{10FFFD}',
            '\u{378}',
            '\u{FFFF}',
            '\u{2028}',
            '\u{2029}',
            '\u{A0}',
            '\u{1680}',
            '\u{2000}',
            '\u{202F}',
            '\u{205F}',
            '\u{3000}',
            '\u{E0001}',
            '\u{E007F}',
        ] {
            assert!(!is_print(c), "{c:?} should not be printable");
        }
    }
}
