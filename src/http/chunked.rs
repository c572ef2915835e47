//! Incremental, in-place decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! The connection hands over request-body bytes as they arrive; [`ChunkedDecoder::decode`] strips
//! the framing, moves the data bytes down in the same buffer and reports when the last chunk, the
//! trailer section and the final CRLF have been consumed, leaving any pipelined request after them
//! untouched. Framing is parsed by a byte-level state machine that keeps no buffer positions
//! between calls, so input split at any byte boundary decodes identically; data is copied in bulk.
//! The grammar is enforced strictly (exact CRLFs, hex sizes that cannot overflow, bounded size
//! lines and trailers, no obs-fold), because a lenient chunked parser behind or in front of another
//! one is how requests get smuggled. Trailer fields are validated and then discarded.

use super::{hex_value, is_tchar};

/// Largest chunk size accepted: `i64::MAX`, the range of a signed 64-bit offset.
const MAX_CHUNK_SIZE: u64 = i64::MAX as u64;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkedLimits {
    /// Largest total of decoded data bytes allowed (exceeding it is `ChunkedError::TooLarge`).
    pub max_body_bytes: u64,
    /// Largest length of one chunk-size line, extensions included, excluding CRLF (e.g. 4096).
    pub max_line_bytes: usize,
    /// Largest total size of the trailer section, including its CRLFs (e.g. 8192).
    pub max_trailer_bytes: usize,
}

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkedError {
    /// Framing is malformed (the caller answers 400); the str says what, for logs.
    Malformed(&'static str),
    /// Decoded body would exceed `max_body_bytes` (the caller answers 413).
    TooLarge,
}

/// Where the decoder stands in the framing; each variant says what the next byte may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk-size line: a hex digit must come first.
    SizeStart,
    /// Inside the hex digits of the chunk size.
    SizeDigits,
    /// Whitespace after the size or an extension value: more whitespace or `;` must follow.
    SizeWs,
    /// Just after `;`: optional whitespace, then an extension name.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after an extension name: more whitespace, `=` or `;` must follow.
    ExtNameWs,
    /// Just after `=`: optional whitespace, then a token or a quoted string.
    ExtValueStart,
    /// Inside a token extension value.
    ExtToken,
    /// Inside a quoted-string extension value.
    ExtQuoted,
    /// Just after a backslash inside a quoted string.
    ExtQuotedPair,
    /// Just after the closing quote of a quoted string.
    ExtQuotedEnd,
    /// The CR ending a chunk-size line was seen: LF must follow.
    SizeLf,
    /// Inside chunk data; `ChunkedDecoder::size` data bytes remain.
    Data,
    /// Chunk data is complete: CR must follow.
    DataCr,
    /// The CR after chunk data was seen: LF must follow.
    DataLf,
    /// Start of a trailer field line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value (after the colon).
    TrailerValue,
    /// The CR ending a trailer field line was seen: LF must follow.
    TrailerLf,
    /// The CR of the final empty line was seen: LF must follow.
    FinalLf,
    /// The whole chunked body has been consumed.
    Done,
    /// An error was reported; the decoder must not be used again.
    Failed,
}

impl State {
    /// Whether this state is inside a chunk-size line (before its CRLF).
    fn in_size_line(self) -> bool {
        matches!(
            self,
            State::SizeStart
                | State::SizeDigits
                | State::SizeWs
                | State::ExtNameStart
                | State::ExtName
                | State::ExtNameWs
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtQuotedEnd
        )
    }

    /// Whether this state is inside a trailer field line (CRLF included).
    fn in_trailer_line(self) -> bool {
        matches!(self, State::TrailerStart | State::TrailerName | State::TrailerValue | State::TrailerLf)
    }
}

/// Incremental decoder of one chunked message body.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    /// The limits in force.
    limits: ChunkedLimits,
    /// Where the decoder stands in the framing.
    state: State,
    /// The chunk size parsed so far while in a size line; the data bytes still to come in `Data`.
    size: u64,
    /// Bytes of the current chunk-size line so far, CRLF excluded.
    line_bytes: usize,
    /// Bytes of the trailer section so far, field lines and their CRLFs included.
    trailer_bytes: usize,
    /// Data bytes decoded so far.
    decoded: u64,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub(crate) fn new(limits: ChunkedLimits) -> Self {
        ChunkedDecoder { limits, state: State::SizeStart, size: 0, line_bytes: 0, trailer_bytes: 0, decoded: 0 }
    }

    /// Decodes as much as the input allows, in place.
    ///
    /// `buf[..*out]` is body data already decoded; `buf[*inp..]` is encoded input not yet consumed;
    /// always `*out <= *inp <= buf.len()`. Data bytes are moved down to `*out` and both cursors
    /// advance; framing bytes are consumed (only `*inp` advances). Returns `Ok(true)` once the
    /// last chunk, the trailer section and its final CRLF have been consumed: `*inp` then points
    /// just past the chunked body, and nothing after it has been read or written. Returns
    /// `Ok(false)` when all input was consumed and more is needed. Between calls the caller may
    /// move the unconsumed input anywhere (typically down to `*out`): no position is remembered.
    /// After an error the decoder must not be used again (it keeps answering `Malformed`).
    pub(crate) fn decode(&mut self, buf: &mut [u8], out: &mut usize, inp: &mut usize) -> Result<bool, ChunkedError> {
        match self.state {
            State::Done => return Ok(true),
            State::Failed => {
                return Err(malformed("chunked decoder used after an error"));
            }
            _ => {}
        }
        if *out > *inp || *inp > buf.len() {
            self.state = State::Failed;
            return Err(malformed("chunked decoder cursors out of order"));
        }
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Data => {
                    let available = buf.len() - *inp;
                    let n = usize::try_from(self.size).map_or(available, |size| size.min(available));
                    if n == 0 {
                        return Ok(false);
                    }
                    if *out != *inp {
                        buf.copy_within(*inp..*inp + n, *out);
                    }
                    *inp += n;
                    *out += n;
                    self.size -= n as u64;
                    self.decoded += n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let Some(&byte) = buf.get(*inp) else {
                        return Ok(false);
                    };
                    *inp += 1;
                    if let Err(e) = self.on_framing_byte(byte) {
                        self.state = State::Failed;
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Total decoded data bytes so far.
    #[cfg(test)]
    pub(crate) fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Consumes one framing byte: enforces the line limits, then moves to the next state.
    fn on_framing_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        if self.state.in_size_line() && byte != b'\r' {
            self.line_bytes = self.line_bytes.saturating_add(1);
            if self.line_bytes > self.limits.max_line_bytes {
                return Err(malformed("chunk-size line too long"));
            }
        }
        if self.state.in_trailer_line() && !(self.state == State::TrailerStart && byte == b'\r') {
            self.trailer_bytes = self.trailer_bytes.saturating_add(1);
            if self.trailer_bytes > self.limits.max_trailer_bytes {
                return Err(malformed("trailer section too large"));
            }
        }
        self.state = match self.state {
            State::SizeStart => match hex_value(byte) {
                Some(digit) => {
                    self.size = u64::from(digit);
                    State::SizeDigits
                }
                None if byte == b'\r' => return Err(malformed("empty chunk-size line")),
                None => return Err(reject(byte, "chunk size does not start with a hex digit")),
            },
            State::SizeDigits => match byte {
                b'\r' => State::SizeLf,
                b';' => State::ExtNameStart,
                b' ' | b'\t' => State::SizeWs,
                _ => match hex_value(byte) {
                    Some(digit) => {
                        // Sizes are bounded like a signed 64-bit offset (as nginx's off_t):
                        // 16 f's is an overflow, not u64::MAX.
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|size| size.checked_add(u64::from(digit)))
                            .filter(|&size| size <= MAX_CHUNK_SIZE)
                            .ok_or(malformed("chunk size overflows"))?;
                        State::SizeDigits
                    }
                    None => return Err(reject(byte, "invalid byte after chunk size")),
                },
            },
            State::SizeWs => match byte {
                b' ' | b'\t' => State::SizeWs,
                b';' => State::ExtNameStart,
                b'\r' => return Err(malformed("whitespace at end of chunk-size line")),
                _ => return Err(reject(byte, "invalid byte in chunk-size line")),
            },
            State::ExtNameStart => match byte {
                b' ' | b'\t' => State::ExtNameStart,
                _ if is_tchar(byte) => State::ExtName,
                _ => return Err(reject(byte, "missing chunk extension name")),
            },
            State::ExtName => match byte {
                b'\r' => State::SizeLf,
                b';' => State::ExtNameStart,
                b'=' => State::ExtValueStart,
                b' ' | b'\t' => State::ExtNameWs,
                _ if is_tchar(byte) => State::ExtName,
                _ => return Err(reject(byte, "invalid byte in chunk extension name")),
            },
            State::ExtNameWs => match byte {
                b' ' | b'\t' => State::ExtNameWs,
                b';' => State::ExtNameStart,
                b'=' => State::ExtValueStart,
                b'\r' => return Err(malformed("whitespace at end of chunk-size line")),
                _ => return Err(reject(byte, "invalid byte after chunk extension name")),
            },
            State::ExtValueStart => match byte {
                b' ' | b'\t' => State::ExtValueStart,
                b'"' => State::ExtQuoted,
                _ if is_tchar(byte) => State::ExtToken,
                _ => return Err(reject(byte, "missing chunk extension value")),
            },
            State::ExtToken => match byte {
                b'\r' => State::SizeLf,
                b';' => State::ExtNameStart,
                b' ' | b'\t' => State::SizeWs,
                _ if is_tchar(byte) => State::ExtToken,
                _ => return Err(reject(byte, "invalid byte in chunk extension value")),
            },
            State::ExtQuoted => match byte {
                b'"' => State::ExtQuotedEnd,
                b'\\' => State::ExtQuotedPair,
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => State::ExtQuoted,
                _ => return Err(reject(byte, "invalid byte in quoted chunk extension")),
            },
            State::ExtQuotedPair => match byte {
                b'\t' | b' '..=0x7e | 0x80..=0xff => State::ExtQuoted,
                _ => return Err(reject(byte, "invalid escape in quoted chunk extension")),
            },
            State::ExtQuotedEnd => match byte {
                b'\r' => State::SizeLf,
                b';' => State::ExtNameStart,
                b' ' | b'\t' => State::SizeWs,
                _ => return Err(reject(byte, "invalid byte after quoted chunk extension")),
            },
            State::SizeLf => match byte {
                b'\n' => self.end_size_line()?,
                _ => return Err(malformed("CR not followed by LF after chunk size")),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                b'\n' => return Err(malformed("bare LF after chunk data")),
                _ => return Err(malformed("chunk data not followed by CRLF")),
            },
            State::DataLf => match byte {
                b'\n' => {
                    self.line_bytes = 0;
                    State::SizeStart
                }
                _ => return Err(malformed("CR not followed by LF after chunk data")),
            },
            State::TrailerStart => match byte {
                b'\r' => State::FinalLf,
                b' ' | b'\t' => return Err(malformed("whitespace at start of trailer line")),
                b':' => return Err(malformed("empty trailer field name")),
                _ if is_tchar(byte) => State::TrailerName,
                _ => return Err(reject(byte, "invalid byte in trailer field name")),
            },
            State::TrailerName => match byte {
                b':' => State::TrailerValue,
                b' ' | b'\t' => return Err(malformed("whitespace before colon in trailer field")),
                b'\r' => return Err(malformed("trailer field without colon")),
                _ if is_tchar(byte) => State::TrailerName,
                _ => return Err(reject(byte, "invalid byte in trailer field name")),
            },
            State::TrailerValue => match byte {
                b'\r' => State::TrailerLf,
                b'\t' | b' '..=0x7e | 0x80..=0xff => State::TrailerValue,
                _ => return Err(reject(byte, "invalid byte in trailer field value")),
            },
            State::TrailerLf => match byte {
                b'\n' => State::TrailerStart,
                _ => return Err(malformed("CR not followed by LF in trailer section")),
            },
            State::FinalLf => match byte {
                b'\n' => State::Done,
                _ => return Err(malformed("CR not followed by LF at end of chunked body")),
            },
            // `decode` handles these itself and never passes their bytes here.
            State::Data | State::Done | State::Failed => {
                return Err(malformed("chunked decoder in an unexpected state"));
            }
        };
        Ok(())
    }

    /// The size line's LF arrived: checks the body limit and picks the data or the trailers.
    fn end_size_line(&mut self) -> Result<State, ChunkedError> {
        // `decoded <= max_body_bytes` always holds, so the subtraction cannot saturate early.
        if self.size > self.limits.max_body_bytes.saturating_sub(self.decoded) {
            return Err(ChunkedError::TooLarge);
        }
        if self.size == 0 {
            self.trailer_bytes = 0;
            Ok(State::TrailerStart)
        } else {
            Ok(State::Data)
        }
    }
}

/// Shorthand for a `Malformed` error.
fn malformed(what: &'static str) -> ChunkedError {
    ChunkedError::Malformed(what)
}

/// The error for an unexpected `byte`: bare LFs and control bytes get their own message.
fn reject(byte: u8, what: &'static str) -> ChunkedError {
    match byte {
        b'\n' => malformed("bare LF in chunked framing"),
        0x00..=0x0c | 0x0e..=0x1f | 0x7f => malformed("control byte in chunked framing"),
        _ => malformed(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roomy limits for most cases.
    const LIMITS: ChunkedLimits = limits(1 << 20, 64, 64);

    /// Limits from their three values.
    const fn limits(max_body_bytes: u64, max_line_bytes: usize, max_trailer_bytes: usize) -> ChunkedLimits {
        ChunkedLimits { max_body_bytes, max_line_bytes, max_trailer_bytes }
    }

    /// What one way of feeding an input gave.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The body ended after `end` bytes of input.
        Complete { body: Vec<u8>, end: usize },
        /// All input was consumed and more is needed.
        Incomplete { body: Vec<u8> },
        /// Decoding failed.
        Failed(ChunkedError),
    }

    /// What a table row expects.
    #[derive(Debug)]
    enum Expect {
        /// The body, ending exactly at the end of the input.
        Body(&'static [u8]),
        /// The body, followed by this many bytes (a pipelined request) left untouched.
        BodyThen(&'static [u8], usize),
        /// Not finished: this much data so far, all input consumed.
        Partial(&'static [u8]),
        /// Any `Malformed`.
        Malformed,
        /// `TooLarge`.
        TooLarge,
    }

    use Expect::{Body, BodyThen, Malformed, Partial, TooLarge};

    /// One table row.
    struct Case {
        /// What the row checks.
        name: &'static str,
        /// The encoded body, possibly followed by more bytes.
        input: &'static [u8],
        /// The limits in force.
        limits: ChunkedLimits,
        /// The outcome every way of feeding the input must give.
        expect: Expect,
    }

    /// Builds the table from rows `name [(limits)], input => expectation;` (`LIMITS` when the
    /// limits are left out), httparse `req!` style, so each row stays on a line or two.
    macro_rules! cases {
        (@limits) => { LIMITS };
        (@limits $limits:expr) => { $limits };
        ($($name:literal $(($limits:expr))?, $input:literal => $expect:expr;)*) => {
            &[$(Case {
                name: $name,
                input: $input,
                limits: cases!(@limits $($limits)?),
                expect: $expect,
            }),*]
        };
    }

    const CASES: &[Case] = cases! {
        // Accepted.
        "simple", b"5\r\nhello\r\n0\r\n\r\n" => Body(b"hello");
        "several chunks", b"3\r\nabc\r\n1\r\nd\r\na\r\n0123456789\r\n0\r\n\r\n"
            => Body(b"abcd0123456789");
        "extensions", b"5;a=b;c=\"d e\"\r\nhello\r\n0;last\r\n\r\n" => Body(b"hello");
        "extensions with BWS", b"5 ;\ta = b ; c\t=\t\"x\" ;d\r\nhello\r\n0 ; e\r\n\r\n"
            => Body(b"hello");
        "quoted extension with escapes and obs-text",
            b"5;q=\"a\\\"b\\\\c;d=\xe9\"\r\nhello\r\n0\r\n\r\n" => Body(b"hello");
        "uppercase hex", b"B\r\nhello world\r\n0\r\n\r\n" => Body(b"hello world");
        "lowercase hex", b"b\r\nhello world\r\n0\r\n\r\n" => Body(b"hello world");
        "mixed case hex", b"1F\r\n0123456789abcdefghijklmnopqrstu\r\n0\r\n\r\n"
            => Body(b"0123456789abcdefghijklmnopqrstu");
        "leading zeros", b"0005\r\nhello\r\n000\r\n\r\n" => Body(b"hello");
        "many leading zeros", b"00001\r\nx\r\n0000000000000000000000\r\n\r\n" => Body(b"x");
        "zero-length body", b"0\r\n\r\n" => Body(b"");
        "trailers", b"5\r\nhello\r\n0\r\nExpires: never\r\nX-A:b\r\nX-Empty:\r\n\r\n"
            => Body(b"hello");
        "trailer value with tab and obs-text", b"0\r\nX-T: a\tb \xff\r\n\r\n" => Body(b"");
        "framing look-alikes inside data", b"7\r\n0\r\n\r\nab\r\n0\r\n\r\n"
            => Body(b"0\r\n\r\nab");
        "pipelined request after body", b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"
            => BodyThen(b"hello", 18);
        "pipelined request after trailers", b"2\r\nhi\r\n0\r\nA: b\r\n\r\n0\r\n\r\n"
            => BodyThen(b"hi", 5);
        "body exactly at the limit" (limits(10, 64, 64)),
            b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n" => Body(b"helloworld");
        "empty body with zero limits" (limits(0, 1, 0)), b"0\r\n\r\n" => Body(b"");
        "size line exactly at the limit" (limits(100, 8, 64)),
            b"5;abc=de\r\nhello\r\n0\r\n\r\n" => Body(b"hello");
        "trailers exactly at the limit" (limits(100, 64, 8)), b"0\r\nA: bcd\r\n\r\n" => Body(b"");
        "largest size under an unlimited body" (limits(u64::MAX, 64, 64)),
            b"7fffffffffffffff\r\nab" => Partial(b"ab");
        "16 f's under an unlimited body" (limits(u64::MAX, 64, 64)), b"ffffffffffffffff\r\nab" => Malformed;
        "truncated in data", b"5\r\nhel" => Partial(b"hel");
        "truncated in size line", b"5\r\nhello\r\n1" => Partial(b"hello");
        "truncated after last chunk", b"5\r\nhello\r\n0\r\n" => Partial(b"hello");
        "truncated in trailer", b"0\r\nA: b\r" => Partial(b"");
        "truncated before final LF", b"0\r\n\r" => Partial(b"");
        "nothing yet", b"" => Partial(b"");
        // Size line.
        "empty size line", b"\r\nhello\r\n0\r\n\r\n" => Malformed;
        "extension without size", b";a=b\r\nhello\r\n0\r\n\r\n" => Malformed;
        "space before size", b" 5\r\nhello\r\n0\r\n\r\n" => Malformed;
        "non-hex size", b"g\r\nhello\r\n0\r\n\r\n" => Malformed;
        "non-hex after size", b"5g\r\nhello\r\n0\r\n\r\n" => Malformed;
        "0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n" => Malformed;
        "sign before size", b"+5\r\nhello\r\n0\r\n\r\n" => Malformed;
        "17 hex digits overflow" (limits(u64::MAX, 64, 64)),
            b"10000000000000000\r\nx\r\n0\r\n\r\n" => Malformed;
        "16 f's then more overflow" (limits(u64::MAX, 64, 64)), b"ffffffffffffffff0\r\n"
            => Malformed;
        "16 f's", b"ffffffffffffffff\r\n" => Malformed;
        "16 f's after zeros", b"0000FFFFFFFFFFFFFFFF\r\n" => Malformed;
        "largest size", b"7fffffffffffffff\r\n" => TooLarge;
        "largest size after zeros", b"00007FFFFFFFFFFFFFFF\r\n" => TooLarge;
        "body over the limit by one" (limits(10, 64, 64)),
            b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n" => TooLarge;
        "single chunk over the limit" (limits(10, 64, 64)), b"b\r\nhello world\r\n" => TooLarge;
        "whitespace before CRLF", b"5 \r\nhello\r\n0\r\n\r\n" => Malformed;
        "whitespace after ext name", b"5;a \r\nhello\r\n0\r\n\r\n" => Malformed;
        "whitespace after ext value", b"5;a=b\t\r\nhello\r\n0\r\n\r\n" => Malformed;
        "empty ext name", b"5;\r\nhello\r\n0\r\n\r\n" => Malformed;
        "ext value without name", b"5;=b\r\nhello\r\n0\r\n\r\n" => Malformed;
        "empty ext value", b"5;a=\r\nhello\r\n0\r\n\r\n" => Malformed;
        "unterminated quoted ext", b"5;a=\"b\r\nhello\r\n0\r\n\r\n" => Malformed;
        "junk after quoted ext", b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n" => Malformed;
        "separator in ext name", b"5;a/b\r\nhello\r\n0\r\n\r\n" => Malformed;
        "NUL in size line", b"5\0\r\nhello\r\n0\r\n\r\n" => Malformed;
        "NUL in extension", b"5;a\0\r\nhello\r\n0\r\n\r\n" => Malformed;
        "control byte in quoted ext", b"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n" => Malformed;
        "DEL in quoted ext", b"5;a=\"\x7f\"\r\nhello\r\n0\r\n\r\n" => Malformed;
        "over-long extension line" (limits(100, 8, 64)), b"5;abc=def\r\nhello\r\n0\r\n\r\n"
            => Malformed;
        "over-long last-chunk line" (limits(100, 8, 64)), b"0;abcdefgh\r\n\r\n" => Malformed;
        // Line endings.
        "bare LF in size line", b"5\nhello\r\n0\r\n\r\n" => Malformed;
        "bare LF after extension", b"5;a=b\nhello\r\n0\r\n\r\n" => Malformed;
        "bare LF after data", b"5\r\nhello\n0\r\n\r\n" => Malformed;
        "bare LF after last chunk", b"5\r\nhello\r\n0\n\r\n" => Malformed;
        "bare LF as final line", b"5\r\nhello\r\n0\r\n\n" => Malformed;
        "bare LF in trailer", b"0\r\nA: b\n\r\n" => Malformed;
        "bare LF as empty size line", b"\n" => Malformed;
        "CR without LF in size line", b"5\rhello\r\n0\r\n\r\n" => Malformed;
        "CR without LF after data", b"5\r\nhello\r0\r\n\r\n" => Malformed;
        "CR without LF in trailer", b"0\r\nA: b\rC: d\r\n\r\n" => Malformed;
        "CR without LF at the end", b"0\r\n\rX" => Malformed;
        "CR CR LF after size", b"5\r\r\nhello\r\n0\r\n\r\n" => Malformed;
        // Data.
        "missing CRLF after data", b"5\r\nhello0\r\n\r\n" => Malformed;
        "data longer than declared", b"3\r\nabcd\r\n0\r\n\r\n" => Malformed;
        "data shorter than declared", b"5\r\nabc\r\n0\r\n\r\n0\r\n\r\n" => Malformed;
        // Trailers.
        "over-long trailers" (limits(100, 64, 8)), b"0\r\nA: bcde\r\n\r\n" => Malformed;
        "over-long trailers over several lines" (limits(100, 64, 11)),
            b"0\r\nA: b\r\nC: d\r\n\r\n" => Malformed;
        "trailer with space before colon", b"0\r\nA : b\r\n\r\n" => Malformed;
        "trailer with tab before colon", b"0\r\nA\t: b\r\n\r\n" => Malformed;
        "obs-fold trailer", b"0\r\nA: b\r\n c\r\n\r\n" => Malformed;
        "trailer starting with tab", b"0\r\n\tA: b\r\n\r\n" => Malformed;
        "trailer without colon", b"0\r\nAbc\r\n\r\n" => Malformed;
        "trailer with empty name", b"0\r\n: b\r\n\r\n" => Malformed;
        "separator in trailer name", b"0\r\nA(b): c\r\n\r\n" => Malformed;
        "NUL in trailer value", b"0\r\nA: b\0\r\n\r\n" => Malformed;
        "DEL in trailer value", b"0\r\nA: b\x7f\r\n\r\n" => Malformed;
    };

    /// Decodes `input` in one call, as it sits in the buffer.
    fn decode_whole(input: &[u8], limits: ChunkedLimits) -> Outcome {
        let mut buf = input.to_vec();
        let (mut out, mut inp) = (0, 0);
        let mut decoder = ChunkedDecoder::new(limits);
        match decoder.decode(&mut buf, &mut out, &mut inp) {
            Ok(true) => {
                assert_eq!(&buf[inp..], &input[inp..], "bytes after the body were touched");
                assert_eq!(decoder.decoded_len(), out as u64);
                Outcome::Complete { body: buf[..out].to_vec(), end: inp }
            }
            Ok(false) => {
                assert_eq!(inp, input.len(), "Ok(false) left input unconsumed");
                assert_eq!(decoder.decoded_len(), out as u64);
                Outcome::Incomplete { body: buf[..out].to_vec() }
            }
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Feeds `input` like a connection would: in pieces ending at each of `cuts` (ascending) and
    /// then at the end, each piece appended after the unconsumed input. With `compact`, after every
    /// call the unconsumed input is moved down to `out`; without, the gap is left as it is.
    fn decode_pieces(input: &[u8], cuts: &[usize], compact: bool, limits: ChunkedLimits) -> Outcome {
        let mut buf = vec![0u8; input.len()];
        let mut decoder = ChunkedDecoder::new(limits);
        let (mut out, mut inp, mut end, mut fed) = (0, 0, 0, 0);
        for &cut in cuts.iter().chain([input.len()].iter()) {
            let piece = &input[fed..cut];
            buf[end..end + piece.len()].copy_from_slice(piece);
            end += piece.len();
            fed = cut;
            match decoder.decode(&mut buf[..end], &mut out, &mut inp) {
                Ok(true) => {
                    let consumed = fed - (end - inp);
                    assert_eq!(&buf[inp..end], &input[consumed..fed], "unconsumed bytes changed");
                    assert_eq!(decoder.decoded_len(), out as u64);
                    return Outcome::Complete { body: buf[..out].to_vec(), end: consumed };
                }
                Ok(false) => assert_eq!(inp, end, "Ok(false) left input unconsumed"),
                Err(e) => return Outcome::Failed(e),
            }
            if compact {
                buf.copy_within(inp..end, out);
                end = out + (end - inp);
                inp = out;
            }
        }
        Outcome::Incomplete { body: buf[..out].to_vec() }
    }

    /// Whether `outcome` is what `expect` asks for, given the input length.
    fn meets(expect: &Expect, input_len: usize, outcome: &Outcome) -> bool {
        match (expect, outcome) {
            (Body(want), Outcome::Complete { body, end }) => body == want && *end == input_len,
            (BodyThen(want, rest), Outcome::Complete { body, end }) => body == want && *end == input_len - rest,
            (Partial(want), Outcome::Incomplete { body }) => body == want,
            (Malformed, Outcome::Failed(ChunkedError::Malformed(_))) => true,
            (TooLarge, Outcome::Failed(ChunkedError::TooLarge)) => true,
            _ => false,
        }
    }

    /// Checks one row: whole, one byte at a time, split at every point (and at every pair of
    /// points for short inputs), with and without compaction; all must agree exactly.
    fn check(name: &str, input: &[u8], limits: ChunkedLimits, expect: &Expect) {
        let whole = decode_whole(input, limits);
        assert!(meets(expect, input.len(), &whole), "{name}: expected {expect:?}, got {whole:?}");
        let n = input.len();
        let bytewise: Vec<usize> = (1..n).collect();
        for compact in [true, false] {
            let got = decode_pieces(input, &bytewise, compact, limits);
            assert_eq!(got, whole, "{name}: one byte at a time (compact: {compact})");
            for k in 0..=n {
                let got = decode_pieces(input, &[k], compact, limits);
                assert_eq!(got, whole, "{name}: split at {k} (compact: {compact})");
            }
            if n <= 64 {
                for i in 0..=n {
                    for j in i..=n {
                        let got = decode_pieces(input, &[i, j], compact, limits);
                        assert_eq!(got, whole, "{name}: split at {i}, {j} (compact: {compact})");
                    }
                }
            }
        }
    }

    #[test]
    fn table() {
        for case in CASES {
            check(case.name, case.input, case.limits, &case.expect);
        }
    }

    #[test]
    fn large_chunks_round_trip_in_random_pieces() {
        // Deterministic pseudo-random numbers (an LCG); no external crates.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % bound
        };
        for round in 0..20 {
            let mut body = Vec::new();
            let mut encoded = Vec::new();
            for i in 0..(1 + next(8)) {
                let len = 1 + next(5000);
                let chunk: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7 + round) as u8).collect();
                let size = if round % 2 == 0 { format!("{len:x}") } else { format!("{len:X}") };
                encoded.extend_from_slice(size.as_bytes());
                encoded.extend_from_slice(b";n=\"v\"\r\n");
                encoded.extend_from_slice(&chunk);
                encoded.extend_from_slice(b"\r\n");
                body.extend_from_slice(&chunk);
            }
            encoded.extend_from_slice(b"0\r\nT: x\r\n\r\n");
            let end = encoded.len();
            encoded.extend_from_slice(b"POST / HTTP/1.1\r\n");
            let want = Outcome::Complete { body, end };
            assert_eq!(decode_whole(&encoded, LIMITS), want);
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < encoded.len() {
                at += 1 + next(700);
                if at < encoded.len() {
                    cuts.push(at);
                }
            }
            for compact in [true, false] {
                assert_eq!(decode_pieces(&encoded, &cuts, compact, LIMITS), want);
            }
        }
    }

    #[test]
    fn random_framing_never_panics_and_agrees_when_split() {
        let alphabet: &[u8] = b"0123456789abcdefABCDEF;= \t\"\\\r\n:xX\0\x7f\xff";
        let mut seed = 7u64;
        let mut next = move |bound: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % bound
        };
        for _ in 0..2000 {
            let len = next(40);
            let input: Vec<u8> = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let limits = limits(64, 16, 16);
            let whole = decode_whole(&input, limits);
            let bytewise: Vec<usize> = (1..len).collect();
            assert_eq!(decode_pieces(&input, &bytewise, true, limits), whole, "{input:?}");
            let k = next(len + 1);
            assert_eq!(decode_pieces(&input, &[k], false, limits), whole, "{input:?}");
        }
    }

    #[test]
    fn every_hex_digit_in_either_case() {
        for size in [0x1usize, 0x9, 0xa, 0xf, 0x10, 0xab, 0xcd, 0xef, 0x1234] {
            for upper in [false, true] {
                let line = if upper { format!("{size:X}") } else { format!("{size:x}") };
                let data = vec![b'z'; size];
                let mut input = line.into_bytes();
                input.extend_from_slice(b"\r\n");
                input.extend_from_slice(&data);
                input.extend_from_slice(b"\r\n0\r\n\r\n");
                let end = input.len();
                assert_eq!(decode_whole(&input, LIMITS), Outcome::Complete { body: data, end });
            }
        }
    }

    #[test]
    fn done_is_sticky_and_touches_nothing_after_the_body() {
        let mut buf = *b"1\r\na\r\n0\r\n\r\nNEXT";
        let mut decoder = ChunkedDecoder::new(LIMITS);
        let (mut out, mut inp) = (0, 0);
        assert_eq!(decoder.decode(&mut buf, &mut out, &mut inp), Ok(true));
        assert_eq!((out, inp), (1, 11));
        assert_eq!(decoder.decode(&mut buf, &mut out, &mut inp), Ok(true));
        assert_eq!((out, inp), (1, 11));
        assert_eq!(&buf[..1], b"a");
        assert_eq!(&buf[11..], b"NEXT");
        assert_eq!(decoder.decoded_len(), 1);
    }

    #[test]
    fn decoder_stays_failed_after_an_error() {
        let mut buf = *b"5\nhello\r\n0\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(LIMITS);
        let (mut out, mut inp) = (0, 0);
        assert!(matches!(decoder.decode(&mut buf, &mut out, &mut inp), Err(ChunkedError::Malformed(_))));
        let (mut out, mut inp) = (0, 0);
        let mut good = *b"0\r\n\r\n";
        assert!(matches!(decoder.decode(&mut good, &mut out, &mut inp), Err(ChunkedError::Malformed(_))));
        assert_eq!((out, inp), (0, 0));
    }

    #[test]
    fn too_large_is_reported_before_any_data_arrives() {
        let mut buf = *b"5\r\nhello\r\n6\r\n";
        let mut decoder = ChunkedDecoder::new(limits(10, 64, 64));
        let (mut out, mut inp) = (0, 0);
        assert_eq!(decoder.decode(&mut buf, &mut out, &mut inp), Err(ChunkedError::TooLarge));
        assert_eq!(decoder.decoded_len(), 5);
    }

    #[test]
    fn decoded_len_counts_data_only() {
        let mut buf = *b"3;x=y\r\nabc\r\n2\r\nde";
        let mut decoder = ChunkedDecoder::new(LIMITS);
        let (mut out, mut inp) = (0, 0);
        assert_eq!(decoder.decode(&mut buf, &mut out, &mut inp), Ok(false));
        assert_eq!(decoder.decoded_len(), 5);
        assert_eq!((out, inp), (5, buf.len()));
        assert_eq!(&buf[..out], b"abcde");
    }

    #[test]
    fn cursors_out_of_order_are_an_error_not_a_panic() {
        let mut buf = *b"0\r\n\r\n";
        let (mut out, mut inp) = (3, 2);
        let mut decoder = ChunkedDecoder::new(LIMITS);
        assert!(decoder.decode(&mut buf, &mut out, &mut inp).is_err());
        let (mut out, mut inp) = (0, 9);
        let mut decoder = ChunkedDecoder::new(LIMITS);
        assert!(decoder.decode(&mut buf, &mut out, &mut inp).is_err());
    }
}
