//! One request head at the start of a buffer, read the same way by the connection and by the
//! test harness ([`HeadScan::next`]): skip the empty lines before it, parse a head that arrived
//! whole at once, or else find where it ends (resuming where the last search stopped, so a head
//! arriving in pieces is scanned once), parse it with `httparse`, give a version `httparse`
//! rejects a second look, and answer a head that can no longer become valid (414, 431). What the
//! head means for framing and persistence ([`HeadInfo`]) is decided here too.

use std::mem::MaybeUninit;

use super::error::{HTTPARSE_VERSION_ERROR, HttpError, from_httparse};
use super::is_tchar;
use super::request::{HEADER_SLOTS, Version};

/// Where the search for the end of the current head got: all a connection keeps between reads
/// of a head that arrives in pieces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadScan {
    scanned: usize,
}

/// What [`HeadScan::next`] found after the empty lines it skipped.
#[derive(Debug)]
pub(crate) enum HeadStep<R> {
    /// Nothing but empty lines (or nothing at all): no request has begun.
    Empty,
    /// A head has begun and is not complete yet; wait for more.
    Partial,
    /// A complete, valid head, and what the caller's `answer` made of it.
    Complete(HeadInfo, R),
    /// A head that can never be valid: answer with this status and close.
    Failed(HttpError),
}

/// A parsed head: the request line and fields as `httparse` parsed them, and what they mean.
pub(crate) struct ParsedHead<'h, 'b> {
    /// The request as `httparse` parsed it.
    pub req: httparse::Request<'h, 'b>,
    /// Framing and persistence.
    pub info: HeadInfo,
}

/// Header slots for one parse, uninitialised (nothing to fill in before `httparse` does).
type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; HEADER_SLOTS];

impl HeadScan {
    /// Reads the head at the start of `data` (after the empty lines RFC 9112 §2.2 lets a client
    /// send first, whose length comes back as the first value, to be consumed). On a complete,
    /// valid head, calls `answer` with it and with the bytes after it (a body, pipelined
    /// requests), while both are still borrowed from `data`. `data` is mutable for one reason:
    /// a later HTTP/1 minor version (`HTTP/1.2`) is rewritten to `HTTP/1.1` in place.
    ///
    /// A head that arrived whole is parsed at once. Anything else takes the careful path: find
    /// the end first, resuming where the last call stopped; answer 414 once the request line
    /// is too long to ever end within the limit and 431 once the head is; then parse and judge
    /// errors on the whole head.
    pub(crate) fn next<R>(
        &mut self,
        data: &mut [u8],
        limits: HeadLimits,
        answer: impl FnOnce(&ParsedHead<'_, '_>, &[u8]) -> R,
    ) -> (usize, HeadStep<R>) {
        self.read(data, limits, true, answer)
    }

    /// [`HeadScan::next`] without ever parsing a head the fast way (as if it had arrived whole):
    /// for the harness, whose fuzz target checks that the two ways agree.
    #[cfg(feature = "harness")]
    pub(crate) fn next_careful<R>(
        &mut self,
        data: &mut [u8],
        limits: HeadLimits,
        answer: impl FnOnce(&ParsedHead<'_, '_>, &[u8]) -> R,
    ) -> (usize, HeadStep<R>) {
        self.read(data, limits, false, answer)
    }

    #[inline(always)]
    fn read<R>(
        &mut self,
        data: &mut [u8],
        limits: HeadLimits,
        may_be_fast: bool,
        answer: impl FnOnce(&ParsedHead<'_, '_>, &[u8]) -> R,
    ) -> (usize, HeadStep<R>) {
        let skip = leading_empty_lines(data);
        if skip > 0 {
            // The head begins after them: an earlier search (of a lone CR, say) is void.
            self.scanned = 0;
        }
        let data = &mut data[skip..];
        if data.is_empty() {
            return (skip, HeadStep::Empty);
        }
        // Fast only when no earlier search is pending: the head may have arrived whole.
        (skip, self.head(data, limits, may_be_fast && self.scanned == 0, may_be_fast, answer))
    }

    /// `data` starts with a head (no empty lines). Parsed the fast way first when `fast`, and
    /// again after a version rewrite when `may_be_fast`.
    #[inline(always)]
    fn head<R>(
        &mut self,
        data: &mut [u8],
        limits: HeadLimits,
        mut fast: bool,
        may_be_fast: bool,
        answer: impl FnOnce(&ParsedHead<'_, '_>, &[u8]) -> R,
    ) -> HeadStep<R> {
        // At most twice round: once more after a version was rewritten.
        loop {
            // Header fields borrow `data`, which the version rewrite changes: fresh slots for
            // each round (uninitialised, so they cost nothing).
            let mut slots: Slots<'_> = [const { MaybeUninit::uninit() }; HEADER_SLOTS];
            if fast && let Some(parsed) = parse_whole(data, &mut slots, &limits) {
                return HeadStep::Complete(parsed.info, answer(&parsed, &data[parsed.info.len..]));
            }
            let len = match find_head_end(data, self.scanned) {
                Ok(len) if len <= limits.max_head_bytes => len,
                Ok(_) => return HeadStep::Failed(HttpError::HeadTooLarge),
                Err(scanned) => {
                    self.scanned = scanned;
                    return incomplete(data, limits);
                }
            };
            self.scanned = 0;
            match parse_prefix(&data[..len], &mut slots, &limits) {
                Ok(Some(parsed)) => return HeadStep::Complete(parsed.info, answer(&parsed, &data[len..])),
                Ok(None) => return HeadStep::Failed(HttpError::BadRequest("incomplete request head")),
                // Only a version httparse rejects needs a closer look (HTTP/1.2 is served as
                // HTTP/1.1, HTTP/2.0 gets 505): valid requests never pay for it.
                Err(HTTPARSE_VERSION_ERROR) => match normalize_version(&mut data[..len]) {
                    Ok(true) => fast = may_be_fast,
                    Ok(false) => return HeadStep::Failed(HTTPARSE_VERSION_ERROR),
                    Err(e) => return HeadStep::Failed(e),
                },
                Err(e) => return HeadStep::Failed(e),
            }
        }
    }
}

/// The length of the complete, valid head at the start of `data`, parsed the fast way (as it
/// arrived whole), or `None` when it is incomplete or invalid and the careful path must judge.
#[cfg(feature = "harness")]
pub(crate) fn whole_head_len(data: &[u8], limits: HeadLimits) -> Option<usize> {
    let skip = leading_empty_lines(data);
    let mut slots: Slots<'_> = [const { MaybeUninit::uninit() }; HEADER_SLOTS];
    parse_whole(&data[skip..], &mut slots, &limits).map(|parsed| skip + parsed.info.len)
}

/// A head that arrived whole, parsed without first searching for its end: `Some` only when it
/// is complete within the head limit and valid.
fn parse_whole<'h, 'b>(data: &'b [u8], slots: &'h mut Slots<'b>, limits: &HeadLimits) -> Option<ParsedHead<'h, 'b>> {
    parse_prefix(&data[..data.len().min(limits.max_head_bytes)], slots, limits).ok().flatten()
}

/// No end of the head in `data` yet: 414 once the request line is longer than any valid one
/// can be, 431 once the head is at the limit; otherwise wait.
fn incomplete<R>(data: &[u8], limits: HeadLimits) -> HeadStep<R> {
    // Without its end, a request line longer than any valid one means a long target.
    let line_cap = limits.max_uri_bytes.saturating_add(REQUEST_LINE_OVERHEAD).min(limits.max_head_bytes);
    if data.len() >= line_cap && !data[..line_cap].contains(&b'\n') {
        return HeadStep::Failed(HttpError::UriTooLong);
    }
    if data.len() >= limits.max_head_bytes {
        return HeadStep::Failed(HttpError::HeadTooLarge);
    }
    HeadStep::Partial
}

/// Parses the head at the start of `data`, which may hold more after it (a body, pipelined
/// requests), or `None` when the head is not complete in `data`.
fn parse_prefix<'h, 'b>(
    data: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
    limits: &HeadLimits,
) -> Result<Option<ParsedHead<'h, 'b>>, HttpError> {
    let max_headers = limits.max_headers.min(slots.len());
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(data, &mut slots[..max_headers]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(from_httparse(e)),
    };
    let info = analyze(&req, len, limits)?;
    Ok(Some(ParsedHead { req, info }))
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body.
    None,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the connection needs to know about a parsed head, owning nothing from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadInfo {
    /// Length of the head in bytes, blank line included.
    pub len: usize,
    /// The HTTP version.
    pub version: Version,
    /// Whether the client allows the connection to stay open after this request.
    pub keep_alive: bool,
    /// How the body is framed.
    pub body: BodyKind,
    /// `Expect: 100-continue` was sent (and a body is expected).
    pub expect_continue: bool,
    /// The method is HEAD: the response goes without its body.
    pub is_head: bool,
}

/// Limits checked while reading a head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Largest head, request line and fields (431).
    pub max_head_bytes: usize,
    /// Longest request target (414).
    pub max_uri_bytes: usize,
    /// Most header fields (431); at most [`HEADER_SLOTS`].
    pub max_headers: usize,
}

/// Longest method accepted (longer ones get 501). The longest registered method,
/// `BASELINE-CONTROL`, has 16 bytes.
pub(crate) const MAX_METHOD_BYTES: usize = 32;

/// Bytes of a request line besides its target: the longest method, two spaces, `HTTP/1.1`, CRLF.
pub(crate) const REQUEST_LINE_OVERHEAD: usize = MAX_METHOD_BYTES + 2 + 8 + 2;

/// Length of the empty lines (CRLF or LF) at the start of `data`: they are ignored before a
/// request line (RFC 9112 §2.2). A lone CR is left for the parser to reject.
fn leading_empty_lines(data: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match &data[n..] {
            [b'\n', ..] => n += 1,
            [b'\r', b'\n', ..] => n += 2,
            _ => return n,
        }
    }
}

/// Looks at the version at the end of the request line of a head `httparse` rejected for its
/// version, and rewrites it in place where RFC 9110 §6.2 says how: a later HTTP/1 minor version
/// (`HTTP/1.2`) is handled as HTTP/1.1. Returns whether it rewrote anything. Another major
/// version (`HTTP/2.0`, including the HTTP/2 connection preface) is 505. Anything else that is not
/// exactly `HTTP/d.d` is left as it is, for the parser to reject with 400.
fn normalize_version(head: &mut [u8]) -> Result<bool, HttpError> {
    let Some(lf) = head.iter().position(|&b| b == b'\n') else { return Ok(false) };
    let line = &mut head[..lf];
    let line = match line {
        [rest @ .., b'\r'] => rest,
        _ => line,
    };
    let Some(space) = line.iter().rposition(|&b| b == b' ') else { return Ok(false) };
    match &mut line[space + 1..] {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            if *major != b'1' {
                return Err(HttpError::VersionNotSupported);
            }
            if *minor > b'1' {
                *minor = b'1';
                return Ok(true);
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Searches `data` for the blank line that ends a head, starting near `scanned` (how far an
/// earlier search got), so a head arriving in many pieces is scanned once. Line by line with an
/// inlined search: `memchr` per line costs more on heads of a few short lines
/// (benches/results/hand-written.md). Returns the head's
/// length, blank line included, or `None` and the new `scanned`.
fn find_head_end(data: &[u8], scanned: usize) -> Result<usize, usize> {
    // Resume a few bytes back: the terminator may straddle the previous end.
    let mut i = scanned.saturating_sub(3);
    while let Some(offset) = data[i..].iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        match data.get(lf + 1) {
            Some(b'\n') => return Ok(lf + 2),
            Some(b'\r') => match data.get(lf + 2) {
                Some(b'\n') => return Ok(lf + 3),
                Some(_) => {}
                None => return Err(lf),
            },
            Some(_) => {}
            None => return Err(lf),
        }
        i = lf + 1;
    }
    Err(data.len())
}

fn analyze(req: &httparse::Request<'_, '_>, len: usize, limits: &HeadLimits) -> Result<HeadInfo, HttpError> {
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::VersionNotSupported),
    };
    let method = req.method.unwrap_or("");
    if method.len() > MAX_METHOD_BYTES {
        return Err(HttpError::NotImplemented("method too long"));
    }
    check_target(method, req.path.unwrap_or(""), limits)?;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut hosts = 0;

    for header in req.headers.iter() {
        let name = header.name;
        // Only five names matter here; their lengths differ, so most fields are passed over
        // after one comparison.
        if !matches!(name.len(), 4 | 6 | 10 | 14 | 17) {
            continue;
        }
        if token_is(name, b"host") {
            hosts += 1;
            if !is_valid_host(header.value) {
                return Err(HttpError::BadRequest("invalid Host"));
            }
        } else if token_is(name, b"content-length") {
            let n = parse_content_length(header.value)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::BadRequest("conflicting Content-Length values"));
            }
            content_length = Some(n);
        } else if token_is(name, b"transfer-encoding") {
            transfer_encoding = true;
            chunked = parse_transfer_encoding(header.value, chunked)?;
        } else if token_is(name, b"connection") {
            // Nearly always a single option: looked at whole before splitting a list.
            let value = header.value;
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            } else {
                for token in list_items(value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        } else if token_is(name, b"expect") {
            if !header.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::ExpectationFailed);
            }
            expect_continue = version == Version::Http11;
        }
    }

    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never two.
    match (hosts, version) {
        (0, Version::Http11) => return Err(HttpError::BadRequest("missing Host")),
        (0 | 1, _) => {}
        _ => return Err(HttpError::BadRequest("more than one Host")),
    }

    let body = if transfer_encoding {
        if content_length.is_some() {
            return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        if version == Version::Http10 {
            return Err(HttpError::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !chunked {
            return Err(HttpError::BadRequest("Transfer-Encoding does not end in chunked"));
        }
        BodyKind::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    };
    Ok(HeadInfo {
        len,
        version,
        keep_alive,
        body,
        expect_continue: expect_continue && body != BodyKind::None,
        is_head: method == "HEAD",
    })
}

/// The request target's form must suit the method (RFC 9112 §3.2): origin-form `/path` for any,
/// absolute-form `scheme://…` for any, asterisk-form `*` only for OPTIONS, authority-form
/// `host:port` only for CONNECT.
fn check_target(method: &str, target: &str, limits: &HeadLimits) -> Result<(), HttpError> {
    if target.len() > limits.max_uri_bytes {
        return Err(HttpError::UriTooLong);
    }
    let valid = if target.starts_with('/') {
        true
    } else if target == "*" {
        method == "OPTIONS"
    } else if method == "CONNECT" {
        !target.is_empty() && !target.contains(['/', '?', '#', '@'])
    } else {
        is_absolute_uri(target)
    };
    if valid { Ok(()) } else { Err(HttpError::BadRequest("invalid request target")) }
}

/// `scheme "://" ...` with a valid scheme (RFC 3986 §3.1).
fn is_absolute_uri(target: &str) -> bool {
    let Some((scheme, _)) = target.split_once("://") else { return false };
    let mut chars = scheme.bytes();
    chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Whether the field name `name` is `lower` (lowercase letters and `-`), ignoring case, eight
/// (then four) bytes at a time. Setting bit 0x20 folds case; on other bytes it could make two different
/// bytes equal (`\r` would become `-`), but a field name is a token (httparse checks), and no
/// token byte other than an uppercase letter changes into a lowercase letter or `-` that way.
fn token_is(name: &str, lower: &[u8]) -> bool {
    const FOLD: u64 = u64::from_ne_bytes([0x20; 8]);
    let (mut name, mut lower) = (name.as_bytes(), lower);
    if name.len() != lower.len() {
        return false;
    }
    while let (Some((a, name_rest)), Some((b, lower_rest))) =
        (name.split_first_chunk::<8>(), lower.split_first_chunk::<8>())
    {
        if u64::from_ne_bytes(*a) | FOLD != u64::from_ne_bytes(*b) {
            return false;
        }
        (name, lower) = (name_rest, lower_rest);
    }
    if let (Some((a, name_rest)), Some((b, lower_rest))) =
        (name.split_first_chunk::<4>(), lower.split_first_chunk::<4>())
    {
        if u32::from_ne_bytes(*a) | FOLD as u32 != u32::from_ne_bytes(*b) {
            return false;
        }
        (name, lower) = (name_rest, lower_rest);
    }
    name.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b)
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2). Empty is allowed (a target without authority).
fn is_valid_host(value: &[u8]) -> bool {
    // Nearly every Host is a plain name or address, maybe with a port: one look per byte
    // settles those. Anything else (a bracketed literal, spaces, a bad byte) goes the long way,
    // which accepts everything this accepts.
    let mut name = 0;
    // Four bytes per step while they last (one table look per byte and one branch per four).
    while let Some(&[a, b, c, d]) = value.get(name..name + 4)
        && REG_NAME[usize::from(a)] & REG_NAME[usize::from(b)] & REG_NAME[usize::from(c)] & REG_NAME[usize::from(d)]
    {
        name += 4;
    }
    while name < value.len() && REG_NAME[usize::from(value[name])] {
        name += 1;
    }
    match &value[name..] {
        [] => return true,
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => return true,
        _ => {}
    }
    is_valid_host_slow(value)
}

#[cold]
#[inline(never)]
fn is_valid_host_slow(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        // IP-literal: bracketed IPv6 address or IPvFuture.
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let literal = &rest[..close];
        let ok = !literal.is_empty()
            && literal.iter().all(|&b| b.is_ascii_alphanumeric() || b":._~-!$&'()*+,;=".contains(&b));
        if !ok {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&b""[..], None),
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let reg_name = host.iter().all(|&b| REG_NAME[usize::from(b)]);
    reg_name && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

/// The bytes of a `reg-name` (RFC 3986 §3.2.2: unreserved, sub-delims, `%` of pct-encoded), as
/// a table: every request's Host is checked, and one lookup per byte is the cheapest test.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// Comma-separated list items, trimmed, empty ones skipped (RFC 9110 §5.6.1).
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|item| !item.is_empty())
}

/// `Content-Length`: 1*DIGIT, or a list of identical values; no sign, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let mut result: Option<u64> = None;
    for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::BadRequest("invalid Content-Length"));
        }
        let n = item.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')));
        let n = n.ok_or(HttpError::BadRequest("Content-Length too large"))?;
        if result.is_some_and(|prev| prev != n) {
            return Err(HttpError::BadRequest("conflicting Content-Length values"));
        }
        result = Some(n);
    }
    result.ok_or(HttpError::BadRequest("invalid Content-Length"))
}

/// One `Transfer-Encoding` field; `chunked_so_far` says whether an earlier field ended in
/// chunked. Returns whether the codings now end in chunked. Only `chunked` is implemented, and
/// it may appear once, last.
fn parse_transfer_encoding(value: &[u8], chunked_so_far: bool) -> Result<bool, HttpError> {
    let mut chunked = chunked_so_far;
    let mut any = false;
    for coding in list_items(value) {
        any = true;
        if chunked {
            // Something after chunked, or chunked twice.
            return Err(HttpError::BadRequest("Transfer-Encoding does not end in chunked"));
        }
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked = true;
        } else if coding.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::NotImplemented("unsupported transfer coding"));
        } else {
            return Err(HttpError::BadRequest("invalid Transfer-Encoding"));
        }
    }
    if !any {
        return Err(HttpError::BadRequest("empty Transfer-Encoding"));
    }
    Ok(chunked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_head_bytes: 16 * 1024, max_uri_bytes: 8192, max_headers: 100 };

    /// Parses `raw` as the connection does, adding `Host: t` to an HTTP/1.1 request without one.
    fn info(raw: &str) -> Result<HeadInfo, HttpError> {
        let mut raw = raw.to_owned();
        if raw.contains("HTTP/1.1\r\n") && !raw.to_ascii_lowercase().contains("\nhost:") {
            raw = raw.replacen("HTTP/1.1\r\n", "HTTP/1.1\r\nHost: t\r\n", 1);
        }
        exact(&raw)
    }

    /// Parses `raw` as it is, as the connection reads a head.
    fn exact(raw: &str) -> Result<HeadInfo, HttpError> {
        let mut raw = raw.as_bytes().to_vec();
        match HeadScan::default().next(&mut raw, LIMITS, |_, _| ()).1 {
            HeadStep::Complete(info, ()) => Ok(info),
            HeadStep::Failed(e) => Err(e),
            HeadStep::Empty | HeadStep::Partial => Err(HttpError::BadRequest("incomplete request head")),
        }
    }

    #[test]
    fn finds_head_end_incrementally() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        assert_eq!(find_head_end(full, 0), Ok(27));
        // Feed growing prefixes, carrying `scanned` forward as the connection does.
        let mut scanned = 0;
        for end in 1..=full.len() {
            match find_head_end(&full[..end], scanned) {
                Ok(n) => {
                    assert_eq!((n, end), (27, 27));
                    return;
                }
                Err(s) => scanned = s,
            }
        }
        panic!("never found");
    }

    #[test]
    fn finds_bare_lf_head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\nX", 0), Ok(24));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), Err(24));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(info("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().keep_alive);
        assert!(!info("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
        assert!(!info("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").unwrap().keep_alive);
        assert!(!info("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(info("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn framing() {
        let i = info("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(i.body, BodyKind::Length(5));
        let i = info("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(i.body, BodyKind::Length(5));
        let i = info("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(i.body, BodyKind::None);
        let i = info("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(i.body, BodyKind::Chunked);
        let i = info("HEAD / HTTP/1.1\r\n\r\n").unwrap();
        assert!(i.is_head);
        let i = info("PUT / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n").unwrap();
        assert!(i.expect_continue);
    }

    #[test]
    fn framing_errors() {
        let bad = |raw: &str| info(raw).unwrap_err().status();
        assert_eq!(bad("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"), 400);
        for v in ["-1", "+5", "0x5", "5a", "", "18446744073709551616"] {
            assert_eq!(bad(&format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n")), 400, "{v}");
        }
        let te = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(bad(te), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
        assert_eq!(bad("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"), 501);
        assert_eq!(bad("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(bad("GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), 417);
        assert_eq!(bad("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
    }

    #[test]
    fn versions() {
        let status = |raw: &str| exact(raw).map(|i| i.version).map_err(|e| e.status());
        assert_eq!(status("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), Ok(Version::Http11));
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), Ok(Version::Http10));
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), Err(505));
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\n"), Err(505));
        for bad in
            ["GET /\r\n\r\n", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "GET / http/1.1\r\n\r\n", "GET / HTTP/1.10\r\n\r\n"]
        {
            assert_eq!(status(bad), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn hosts_and_targets() {
        let status = |raw: &str| exact(raw).map(|_| 200).unwrap_or_else(|e| e.status());
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        for good in ["", "a", "a.example:8080", "[::1]", "[::1]:80", "xn--d1a.example", "127.0.0.1:1"] {
            assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n")), 200, "{good:?}");
        }
        for bad in ["a b", "a/b", "a@b", "[::1", "a:b", "[::1]x", "[]"] {
            assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")), 400, "{bad:?}");
        }
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8192));
        assert_eq!(status(&long), 414);
        let method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(33));
        assert_eq!(status(&method), 501);
    }

    #[test]
    fn the_quick_host_check_agrees_with_the_long_way() {
        // Every value of up to five bytes (the quick look takes four at a time) from an
        // alphabet of the bytes that matter.
        let alphabet = b"a1:[].- \t/@%\xff";
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            last = last.iter().flat_map(|v| alphabet.iter().map(move |&b| [v.as_slice(), &[b]].concat())).collect();
            values.extend(last.iter().cloned());
        }
        assert!(values.len() > 20_000);
        let mut accepted = 0;
        for value in &values {
            let quick = is_valid_host(value);
            assert_eq!(quick, is_valid_host_slow(value), "{:?}", String::from_utf8_lossy(value));
            accepted += usize::from(quick);
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn token_is_agrees_with_eq_ignore_ascii_case_on_tokens() {
        for target in ["host", "content-length", "transfer-encoding", "connection", "expect"] {
            assert!(token_is(&target.to_ascii_uppercase(), target.as_bytes()));
            assert!(!token_is(&target[1..], target.as_bytes()));
            // Each byte of the name replaced by each token byte.
            for i in 0..target.len() {
                for b in (0..=255u8).filter(|&b| crate::http::is_tchar(b)) {
                    let mut name = target.as_bytes().to_vec();
                    name[i] = b;
                    let name = String::from_utf8(name).unwrap();
                    assert_eq!(token_is(&name, target.as_bytes()), name.eq_ignore_ascii_case(target), "{name:?}");
                }
            }
        }
    }

    #[test]
    fn empty_lines() {
        assert_eq!(leading_empty_lines(b"\r\n\nGET"), 3);
        assert_eq!(leading_empty_lines(b"\r\r\nGET"), 0);
        assert_eq!(leading_empty_lines(b"\r"), 0);
    }
}
