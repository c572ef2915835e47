//! Micro-benchmarks of the request path, through the real connection state machine in memory
//! (`quiesce::harness`, no socket, no `Poll`). No benchmark framework: a calibrated timing loop
//! with `std::hint::black_box`, reporting the median over several batches.
//!
//! `cargo bench` runs them all (a few seconds); `cargo bench -- parse` runs the ones whose name
//! contains `parse`.
//!
//! `--count NAME N` times nothing: it sends N requests of one connection scenario through
//! [`count`], for `benches/instructions.sh` to run under callgrind, which counts the
//! instructions executed inside that one function (repeatable, unlike time on a shared machine).

use std::hint::black_box;
use std::time::{Duration, Instant};

use quiesce::ServerConfig;
use quiesce::app::App;
use quiesce::harness::{MemoryConnection, parse_request_head};

/// A browser-like request head: 10 header fields, about 500 bytes.
const BROWSER_HEAD: &[u8] = b"GET /plaintext?lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/index.html\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f2b9c1e7a3d48e6b5c0f1a2d3e4f5a6; theme=dark; consent=1\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Mode: navigate\r\n\r\n";

const PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";
const HELLO: &[u8] = b"GET /world HTTP/1.1\r\nHost: localhost\r\n\r\n";
/// A chunked upload to the echo route: three chunks (one with an extension) and a trailer.
const CHUNKED_ECHO: &[u8] = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\n";

/// Time per batch the calibration aims for.
const BATCH: Duration = Duration::from_millis(20);
/// Batches measured per benchmark (the median is reported).
const BATCHES: usize = 15;

/// Runs `f` in calibrated batches and prints the median time per call.
fn bench(filter: &[String], name: &str, per_call: u64, mut f: impl FnMut()) {
    if !filter.is_empty() && !filter.iter().any(|pattern| name.contains(pattern.as_str())) {
        return;
    }
    // Calibrate: double the batch size until one batch takes at least BATCH.
    let mut iters: u64 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        if start.elapsed() >= BATCH || iters >= 1 << 30 {
            break;
        }
        iters *= 2;
    }
    let mut per_iter: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per_iter.sort_by(f64::total_cmp);
    let median = per_iter[BATCHES / 2];
    let (min, max) = (per_iter[0], per_iter[BATCHES - 1]);
    let unit = if per_call > 1 { format!("  = {:>8.1} ns/request", median / per_call as f64) } else { String::new() };
    println!("{name:<32} {median:>10.1} ns/iter (min {min:.1}, max {max:.1}; {iters} iters x {BATCHES}){unit}");
}

/// A connection served by the built-in routes, checked to answer `request` with `expect`.
fn connection(request: &[u8], expect: &str) -> MemoryConnection {
    let mut conn = MemoryConnection::new(ServerConfig::default(), App::default());
    for _ in 0..2 {
        conn.send(request);
    }
    check(&mut conn, request, expect);
    conn
}

/// Sends `request` once more and checks the answer ends in `expect` and the connection stays
/// open: before a benchmark, so it measures real work, and after, so it still did.
fn check(conn: &mut MemoryConnection, request: &[u8], expect: &str) {
    conn.clear_output();
    conn.send(request);
    let out = String::from_utf8(conn.take_output()).expect("utf-8 responses");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with(expect), "unexpected response: {out}");
    assert!(!conn.is_closed(), "connection closed after a keep-alive request");
}

/// The connection scenarios: (name, requests per send, what is sent, how the answer ends).
fn scenarios() -> [(&'static str, u64, Vec<u8>, &'static str); 5] {
    [
        ("keepalive_plaintext", 1, PLAINTEXT.to_vec(), "Hello, World!"),
        ("pipelined_16_plaintext", 16, PLAINTEXT.repeat(16), "Hello, World!"),
        ("keepalive_hello_world", 1, HELLO.to_vec(), "Hello, \"/world\""),
        ("keepalive_browser_head", 1, BROWSER_HEAD.to_vec(), "Hello, World!"),
        ("keepalive_chunked_echo", 1, CHUNKED_ECHO.to_vec(), "hello world"),
    ]
}

/// Sends `request` `sends` times and drops the answers: the only function `--count` measures
/// (callgrind's `--toggle-collect` names it), so setup and checks are not counted.
#[inline(never)]
fn count(conn: &mut MemoryConnection, request: &[u8], sends: u64) {
    for _ in 0..sends {
        conn.send(black_box(request));
        black_box(conn.output().len());
        conn.clear_output();
    }
}

/// `--count NAME N`: N requests of scenario NAME through [`count`], checked before and after.
fn count_mode(name: &str, requests: &str) {
    let requests: u64 = requests.parse().expect("--count NAME N: N is a number of requests");
    let Some((_, per_call, request, expect)) = scenarios().into_iter().find(|case| case.0 == name) else {
        let names: Vec<&str> = scenarios().iter().map(|case| case.0).collect();
        panic!("no scenario {name:?}; one of {names:?}");
    };
    assert_eq!(requests % per_call, 0, "{name} sends {per_call} requests at a time");
    let mut conn = connection(&request, expect);
    count(&mut conn, &request, requests / per_call);
    check(&mut conn, &request, expect);
    println!("{name}: {requests} requests");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name, requests, ..] = &args[..]
        && flag == "--count"
    {
        return count_mode(name, requests);
    }
    let filter: Vec<String> = args.into_iter().filter(|arg| !arg.starts_with('-')).collect();
    assert_eq!(BROWSER_HEAD.iter().filter(|&&b| b == b'\n').count(), 12, "request line, 10 fields, blank line");

    let len = parse_request_head(BROWSER_HEAD, 100).expect("valid head");
    assert_eq!(len, BROWSER_HEAD.len());
    println!("# quiesce request path (in memory, no sockets); browser-like head: {} bytes", BROWSER_HEAD.len());
    bench(&filter, "parse_browser_head", 1, || {
        black_box(parse_request_head(black_box(BROWSER_HEAD), 100)).ok();
    });

    for (name, per_call, request, expect) in scenarios() {
        let mut conn = connection(&request, expect);
        bench(&filter, name, per_call, || count(&mut conn, &request, 1));
        check(&mut conn, &request, expect);
    }
}
