//! The hot paths allocate nothing once a connection is warm: keep-alive `GET /plaintext`, the
//! hello route, 16 pipelined requests per read, and a router's route with path parameters,
//! driven through the real connection state machine in memory (`quiesce::harness`).
//!
//! A counting global allocator wraps `System`. Counting is switched on per thread (a
//! thread-local flag, with a thread-local count), so the test harness's other threads and
//! tests running in parallel never disturb a measurement. The first few allocations counted
//! record a backtrace (captured with counting switched off) for the failure message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};

use quiesce::app::App;
use quiesce::harness::MemoryConnection;
use quiesce::{Handler, Reply, Router, ServerConfig};

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Backtraces kept per measurement.
const MAX_TRACES: usize = 3;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static TRACES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

impl Counting {
    fn note(&self, what: &str, layout: Layout) {
        // try_with: the allocator also runs while thread-locals are being torn down.
        if !ENABLED.try_with(Cell::get).unwrap_or(false) {
            return;
        }
        ENABLED.set(false); // no recursion while we record
        let n = COUNT.get() + 1;
        COUNT.set(n);
        if n as usize <= MAX_TRACES {
            let trace = format!("{what} of {} bytes (align {}):\n{}", layout.size(), layout.align(), {
                Backtrace::force_capture()
            });
            TRACES.with_borrow_mut(|traces| traces.push(trace));
        }
        ENABLED.set(true);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; `note` only touches thread-locals and
// allocates with counting switched off.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note("alloc", layout);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note("alloc_zeroed", layout);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note("realloc", Layout::from_size_align(new_size, layout.align()).unwrap_or(layout));
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` with counting on; returns the allocations (and reallocations) it made, with the
/// backtraces of the first few.
fn count_allocations(f: impl FnOnce()) -> (u64, Vec<String>) {
    COUNT.set(0);
    TRACES.with_borrow_mut(Vec::clear);
    ENABLED.set(true);
    f();
    ENABLED.set(false);
    (COUNT.get(), TRACES.take())
}

const PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";
const HELLO: &[u8] = b"GET /world HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Warms a connection up with `request` (a few times, so buffers and caches reach their
/// steady-state size), then counts the allocations of `rounds` more, clearing the output of
/// each as a client that reads everything would.
fn steady_state_allocations(request: &[u8], responses_per_send: usize, expect: &str, rounds: usize) {
    steady_state_allocations_of(App::default(), request, responses_per_send, expect, rounds);
}

/// [`steady_state_allocations`] with `handler` serving.
fn steady_state_allocations_of(
    handler: impl Handler + Send + 'static,
    request: &[u8],
    responses_per_send: usize,
    expect: &str,
    rounds: usize,
) {
    let mut conn = MemoryConnection::new(ServerConfig::default(), handler);
    for _ in 0..8 {
        conn.send(request);
    }
    let out = String::from_utf8(conn.take_output()).expect("utf-8 responses");
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 8 * responses_per_send, "{out}");
    assert!(out.ends_with(expect), "{out}");
    // Give the output buffer the capacity a round needs, as a real socket would have.
    conn.send(request);
    let round_len = conn.output().len();
    conn.clear_output();

    let mut lens = 0usize;
    let (count, traces) = count_allocations(|| {
        for _ in 0..rounds {
            conn.send(request);
            lens += conn.output().len();
            conn.clear_output();
        }
    });
    assert_eq!(lens, round_len * rounds, "every round should be answered in full");
    assert!(!conn.is_closed());
    assert!(
        count == 0,
        "{count} allocations over {rounds} rounds of {:?}; the first {}:\n\n{}",
        String::from_utf8_lossy(request).lines().next().unwrap_or(""),
        traces.len(),
        traces.join("\n\n")
    );
}

#[test]
fn keep_alive_plaintext_allocates_nothing() {
    steady_state_allocations(PLAINTEXT, 1, "Hello, World!", 1000);
}

#[test]
fn hello_route_allocates_nothing() {
    steady_state_allocations(HELLO, 1, "Hello, \"/world\"", 1000);
}

#[test]
fn sixteen_pipelined_plaintext_allocate_nothing() {
    steady_state_allocations(&PLAINTEXT.repeat(16), 16, "Hello, World!", 1000);
}

/// A route with parameters beside static routes and a catch-all: the lookup, the parameters'
/// copy and `Request::param` allocate nothing.
#[test]
fn router_parameters_allocate_nothing() {
    let router = Router::new()
        .get("/users/{id}/posts/{post}", |req, res| {
            let id = req.param("id").and_then(|id| id.parse::<u64>().ok()).unwrap_or(0);
            let post = req.param("post").unwrap_or_default();
            res.body_mut().extend_from_slice(if id == 42 && post == "7" { b"found" } else { b"other" });
            Reply::Now
        })
        .get("/users/me", |_, res| {
            res.set_body("me");
            Reply::Now
        })
        .get("/plaintext", |_, res| {
            res.set_body("Hello, World!");
            Reply::Now
        })
        .get("/{*rest}", |_, res| {
            res.set_body("rest");
            Reply::Now
        });
    let request = b"GET /users/42/posts/7 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    steady_state_allocations_of(router, request, 1, "found", 1000);
}

#[test]
fn the_counter_counts() {
    let (count, traces) = count_allocations(|| {
        std::hint::black_box(vec![1u8; 100]);
    });
    assert_eq!(count, 1);
    assert_eq!(traces.len(), 1);
    assert!(traces[0].starts_with("alloc"), "{}", traces[0]);
}

#[cfg(feature = "tls")]
#[path = "common/retry.rs"]
mod retry;

/// HTTPS: what one keep-alive request costs on the loop's thread over a real TLS session:
/// rustls (its buffered API) allocates the plaintext of each record it receives and each record
/// it encrypts, so two for a request in one record. Counted on the loop thread itself, from a
/// handler: `/count` reports the count so far and turns counting on.
#[cfg(feature = "tls")]
#[test]
fn keep_alive_over_tls_allocates_a_bounded_few() {
    use quiesce::tls::{TlsConfig, rustls};
    use quiesce::{Request, Response, Server};
    use retry::read_some;
    use std::io::Write;
    use std::sync::Arc;

    let handler = |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/count" {
            ENABLED.set(true);
            res.set_body(COUNT.get().to_string());
        } else if req.path() == "/traces" {
            ENABLED.set(false);
            res.set_body(TRACES.take().join("\n\n"));
        } else {
            res.set_body("Hello, World!");
        }
        Reply::Now
    };
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let server = Server::bind(config, handler).unwrap().with_tls(TlsConfig::new(quiesce::tls::test_config()));
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let thread = std::thread::spawn(move || server.run());

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(include_bytes!("tls/ca.pem")) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut get = |path: &str| -> String {
        // One write, one record (as a client that buffers its request sends it).
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                if data.len() >= end + 4 + length {
                    return text[end + 4..].to_owned();
                }
            }
            let n = read_some(&mut tls, &mut buf).unwrap();
            assert!(n > 0);
            data.extend_from_slice(&buf[..n]);
        }
    };
    for _ in 0..16 {
        assert_eq!(get("/plaintext"), "Hello, World!");
    }
    let before: u64 = get("/count").parse().unwrap();
    let rounds = 1000;
    for _ in 0..rounds {
        assert_eq!(get("/plaintext"), "Hello, World!");
    }
    let after: u64 = get("/count").parse().unwrap();
    if std::env::var_os("TRACES").is_some() {
        println!("{}", get("/traces"));
    }
    // The first /count's own body (its number as a String) is counted too.
    let per_request = (after - before).saturating_sub(1) as f64 / rounds as f64;
    println!("allocations per HTTPS keep-alive request (TLS 1.3, loop thread): {per_request:.2}");
    assert!(per_request <= 2.05, "{per_request} allocations per HTTPS request");
    handle.immediate();
    let _ = thread.join();
}

/// A deferred request, answered from the handler at once through its responder: what the
/// answer-later machinery itself costs. Per request, exactly three allocations: the exchange
/// between responder and connection (one `Arc`), the connection's record of the wait (one
/// box), and the body of the response the responder sends (the handler's own `set_body`).
/// The response's deferral slot holds the exchange itself: no box of its own.
#[test]
fn a_deferred_request_allocates_its_exchange_its_wait_and_its_answer() {
    use quiesce::Response;
    let handler = |_: &quiesce::Request<'_>, res: &mut Response| {
        let responder = res.defer();
        let mut answer = Response::new();
        answer.set_body("later");
        let _ = responder.send(answer);
        Reply::Later
    };
    let mut conn = MemoryConnection::new(ServerConfig::default(), handler);
    for _ in 0..8 {
        conn.send(PLAINTEXT);
    }
    let out = String::from_utf8(conn.take_output()).expect("utf-8 responses");
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 8, "{out}");
    conn.send(PLAINTEXT);
    conn.clear_output();
    let rounds = 100;
    let mut answered = 0;
    let (count, traces) = count_allocations(|| {
        for _ in 0..rounds {
            conn.send(PLAINTEXT);
            answered += conn.output().windows(5).filter(|w| w == b"later").count();
            conn.clear_output();
        }
    });
    assert_eq!(answered, rounds, "every deferred request should be answered");
    assert!(!conn.is_closed());
    assert_eq!(count, 3 * rounds as u64, "the first {}:\n\n{}", traces.len(), traces.join("\n\n"));
}
