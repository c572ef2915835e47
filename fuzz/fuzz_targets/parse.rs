//! Fuzzes the request-head parser and the incremental chunked decoder through
//! `quiesce::harness::{parse_request_head, decode_chunked}`.
//!
//! Input layout (see README.md): byte 0 picks the mode, then
//!
//! - mode 0 (`% 3 == 0`), head: byte 1 is `max_headers`, the rest is the head.
//! - mode 1, chunked: byte 1 picks the body limit, byte 2 = n, then n split lengths (one byte
//!   each), the rest is the encoded body.
//! - mode 2, chunked round trip: a body and a chunking plan are derived from the input, encoded
//!   validly, and must decode back to the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quiesce::harness::{
    Limits, decode_chunked, parse_request_head, parse_request_head_within, parse_request_prefix,
    parse_request_prefix_within,
};

fn head(data: &[u8]) {
    let Some((&max, head)) = data.split_first() else { return };
    // 0..=255, and past the 256 slots the server clamps to.
    let max_headers = if max == 255 { 1000 } else { usize::from(max) };
    let result = parse_request_head(head, max_headers);
    match result {
        Ok(len) => {
            assert!(len > 0 && len <= head.len(), "head length {len} out of 0..={}", head.len());
            assert_eq!(head[len - 1], b'\n', "a head ends with its blank line");
            // The head is everything up to the first blank line: the bytes after it (a body, the
            // next request) do not matter.
            assert_eq!(parse_request_head(&head[..len], max_headers), Ok(len));
            let mut longer = head.to_vec();
            longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\x00\xff");
            assert_eq!(parse_request_head(&longer, max_headers), Ok(len));
        }
        Err(status) => {
            assert!((400..600).contains(&status), "parse error mapped to {status}");
        }
    }
    // The connection parses a head that arrived whole at once, skipping the search for its end:
    // whatever that fast path accepts, the careful path accepts with the same length.
    if let Some(len) = parse_request_prefix(head, max_headers) {
        assert_eq!(result, Ok(len), "the fast path accepted {len} bytes");
    }
    // More header slots can only turn a "too many fields" answer into something else.
    if max_headers < 256 && result != Err(431) {
        assert_eq!(parse_request_head(head, 256), result, "more slots changed the outcome");
    }
}

/// Mode 3: a head under small limits (chosen by the input), so the 414 and 431 rules, which
/// the defaults put beyond the fuzzer's input size, are reached.
fn head_small(data: &[u8]) -> Option<()> {
    let (&max, rest) = data.split_first()?;
    let (&size, head) = rest.split_first()?;
    let max_head_bytes = 16 + usize::from(size) * 8;
    let limits = Limits { max_headers: usize::from(max % 32), max_uri_bytes: usize::from(size % 64) * 4, max_head_bytes };
    let result = parse_request_head_within(head, limits);
    match result {
        Ok(len) => {
            assert!(len > 0 && len <= head.len(), "head length {len} out of 0..={}", head.len());
            assert_eq!(head[len - 1], b'\n', "a head ends with its blank line");
            assert_eq!(parse_request_head_within(&head[..len], limits), Ok(len));
            let mut longer = head.to_vec();
            longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\x00\xff");
            assert_eq!(parse_request_head_within(&longer, limits), Ok(len));
        }
        Err(status) => assert!((400..600).contains(&status), "parse error mapped to {status}"),
    }
    if let Some(len) = parse_request_prefix_within(head, limits) {
        assert_eq!(result, Ok(len), "the fast path accepted {len} bytes");
    }
    // A larger head limit can only turn a 431 (or a 414 decided without the line's end) into
    // something else.
    if !matches!(result, Err(414 | 431)) {
        let roomier = Limits { max_head_bytes: max_head_bytes * 2, ..limits };
        assert_eq!(parse_request_head_within(head, roomier), result, "a larger head limit changed the outcome");
    }
    Some(())
}

fn body_limit(byte: u8) -> u64 {
    match byte % 4 {
        0 => u64::MAX,
        1 => 1024 * 1024,
        2 => u64::from(byte),
        _ => 16,
    }
}

fn chunked(data: &[u8]) {
    let [limit, n, rest @ ..] = data else { return };
    let n = usize::from(*n).min(rest.len());
    let (splits, encoded) = rest.split_at(n);
    let splits: Vec<usize> = splits.iter().map(|&b| usize::from(b)).collect();
    let max = body_limit(*limit);

    let whole = decode_chunked(encoded, &[], max);
    // An incremental decoder must not care where its input is split.
    assert_eq!(decode_chunked(encoded, &splits, max), whole, "splits {splits:?} changed the result");
    let bytewise = vec![1; encoded.len()];
    assert_eq!(decode_chunked(encoded, &bytewise, max), whole, "byte-by-byte feeding changed the result");

    match &whole {
        Ok(Some(body)) => {
            assert!(body.len() as u64 <= max, "decoded {} bytes over the limit {max}", body.len());
            assert!(body.len() < encoded.len(), "decoded body not shorter than its encoding");
        }
        Ok(None) => {}
        Err(status) => assert!(*status == 400 || *status == 413, "chunked error {status}"),
    }
    // The decoder stops at the end of the body (or at the error): what follows cannot change the
    // outcome of what came before.
    if whole != Ok(None) {
        let mut longer = encoded.to_vec();
        longer.extend_from_slice(b"0\r\n\r\nPOST / HTTP/1.1\r\n\r\n\xff");
        assert_eq!(decode_chunked(&longer, &splits, max), whole, "bytes after the body changed the result");
    }
}

/// A valid chunked encoding of a body taken from the input, with chunk sizes, hex case, leading
/// zeros, extensions and trailers chosen by the input: it must decode to the body, whole, split
/// anywhere, and each proper prefix of it must be incomplete.
fn round_trip(data: &[u8]) {
    let [plan_len, rest @ ..] = data else { return };
    let plan_len = usize::from(*plan_len).min(rest.len());
    let (plan, body) = rest.split_at(plan_len);
    let mut plan = plan.iter().copied();
    let mut encoded = Vec::new();
    let mut left = body;
    while !left.is_empty() {
        let p = plan.next().unwrap_or(0);
        let size = (usize::from(p & 0x3f) + 1).min(left.len());
        let hex = if p & 0x40 != 0 { format!("{size:X}") } else { format!("{size:x}") };
        if p & 0x80 != 0 {
            encoded.extend_from_slice(b"00");
        }
        encoded.extend_from_slice(hex.as_bytes());
        match plan.next().unwrap_or(0) % 4 {
            0 => {}
            1 => encoded.extend_from_slice(b";ext"),
            2 => encoded.extend_from_slice(b";a=b;c=\"q \\\" d\""),
            _ => encoded.extend_from_slice(b" ; x = y"),
        }
        encoded.extend_from_slice(b"\r\n");
        encoded.extend_from_slice(&left[..size]);
        encoded.extend_from_slice(b"\r\n");
        left = &left[size..];
    }
    encoded.extend_from_slice(b"0\r\n");
    for _ in 0..plan.next().unwrap_or(0) % 3 {
        encoded.extend_from_slice(b"X-Trailer: value\r\n");
    }
    encoded.extend_from_slice(b"\r\n");

    let expected = Ok(Some(body.to_vec()));
    assert_eq!(decode_chunked(&encoded, &[], u64::MAX), expected, "{:?}", String::from_utf8_lossy(&encoded));
    let splits: Vec<usize> = plan.map(usize::from).collect();
    assert_eq!(decode_chunked(&encoded, &splits, u64::MAX), expected);
    assert_eq!(decode_chunked(&encoded, &splits, body.len() as u64), expected, "exactly at the limit");
    if !body.is_empty() {
        assert_eq!(decode_chunked(&encoded, &splits, body.len() as u64 - 1), Err(413), "one over the limit");
    }
    let cut = splits.first().copied().unwrap_or(0) * 7 % encoded.len();
    assert_eq!(decode_chunked(&encoded[..cut], &splits, u64::MAX), Ok(None), "prefix of {cut} bytes");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => head(rest),
        1 => chunked(rest),
        2 => round_trip(rest),
        _ => {
            head_small(rest);
        }
    }
});
