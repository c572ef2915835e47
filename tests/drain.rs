//! The drain's promise where it meets real clients, through the library on loopback sockets:
//! "the client was told" (a connection that goes idle during the drain gets a last call), and
//! clients that stop reading are cut, counted and never reported as a clean drain, while a
//! client that reads slowly is kept.

#[path = "common/retry.rs"]
mod retry;
use retry::read_some;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::Duration;

use quiesce::metrics::Registry;
use quiesce::{Outcome, Reply, Request, Responder, Response, Server, ServerConfig, Stream};

/// Upper bound for anything a test waits for: reached only when something is broken.
const BOUND: Duration = Duration::from_secs(20);

fn config() -> ServerConfig {
    ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..ServerConfig::default() }
}

/// A body large enough that a client that reads nothing stalls the server's writes (it does not
/// fit in the two sockets' buffers).
fn big_body() -> Vec<u8> {
    vec![b'x'; 32 << 20]
}

/// `GET /big` answers `big_body()`; `GET /stream` defers, and its responder goes to `streams`;
/// anything else answers `ok`.
fn handler(streams: mpsc::Sender<Responder>) -> impl FnMut(&Request<'_>, &mut Response) -> Reply + Send {
    let big = big_body();
    let streams = Mutex::new(streams);
    move |req, res| {
        match req.path() {
            "/big" => {
                res.set_body(&big);
            }
            "/stream" => {
                let _ = streams.lock().unwrap().send(res.defer());
                return Reply::Later;
            }
            _ => {
                res.set_body("ok");
            }
        }
        Reply::Now
    }
}

struct Running {
    addr: SocketAddr,
    handle: quiesce::ShutdownHandle,
    metrics: Registry,
    thread: thread::JoinHandle<Outcome>,
    streams: mpsc::Receiver<Responder>,
}

fn start(config: ServerConfig) -> Running {
    let (tx, streams) = mpsc::channel();
    let server = Server::bind(config, handler(tx)).expect("bind");
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let metrics = Registry::new(vec![server.metrics()]);
    let thread = thread::spawn(move || server.run().expect("run"));
    Running { addr, handle, metrics, thread, streams }
}

impl Running {
    /// Waits for the server to return (bounded).
    fn outcome(self) -> Outcome {
        for _ in 0..(BOUND.as_millis() / 10) {
            if self.thread.is_finished() {
                return self.thread.join().expect("server thread");
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the server did not return");
    }

    /// One line of `/metrics` (its value), e.g. `quiesce_cut_responses_total{reason="write_timeout"}`.
    fn metric(&self, name: &str) -> u64 {
        let mut out = String::new();
        self.metrics.render(&mut out);
        let line = out.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
        line.and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}:\n{out}"))
    }
}

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream
}

/// Reads until `needle` has arrived; returns everything read.
fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = read_some(stream, &mut buf).expect("read");
        assert!(n > 0, "closed before {:?}: {:?}", String::from_utf8_lossy(needle), String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Reads until the server closes (EOF or reset); returns what came.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match read_some(stream, &mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A stream whose head went out before the drain ends during it: its connection was not told it
/// would close, so the next request on it (sent the moment the stream ends, as a proxy reusing
/// the connection would) is answered, with `Connection: close`, instead of finding the
/// connection closed unread.
#[test]
fn a_request_right_after_a_stream_ended_by_the_drain_is_answered() {
    // A generous last call: the test must not depend on how fast this machine is.
    let running = start(ServerConfig { drain_idle_grace: Duration::from_secs(10), ..config() });
    let mut conn = client(running.addr);
    conn.write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let responder = running.streams.recv_timeout(BOUND).expect("the handler deferred");
    let mut stream: Stream = responder.stream(Response::new()).expect("stream");
    stream.send(b"first").unwrap();
    read_until(&mut conn, b"first");

    running.handle.graceful();
    while !stream.is_draining() {
        thread::sleep(Duration::from_millis(5));
    }
    stream.send(b"last").unwrap();
    stream.finish().unwrap();
    read_until(&mut conn, b"0\r\n\r\n");
    conn.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let answer = String::from_utf8(read_to_close(&mut conn)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
    assert!(matches!(running.outcome(), Outcome::Drained { .. }));
}

/// Without a request, the connection is closed once its last call is over, and the drain ends
/// clean.
#[test]
fn a_connection_idle_after_its_stream_is_closed_after_the_last_call() {
    let running = start(config());
    let mut conn = client(running.addr);
    conn.write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let stream = running.streams.recv_timeout(BOUND).unwrap().stream(Response::new()).unwrap();
    read_until(&mut conn, b"\r\n\r\n");
    running.handle.graceful();
    stream.finish().unwrap();
    let rest = read_to_close(&mut conn);
    assert!(rest.ends_with(b"0\r\n\r\n"), "{:?}", String::from_utf8_lossy(&rest));
    assert!(matches!(running.outcome(), Outcome::Drained { .. }));
}

/// A client that stopped reading holds the drain only for the drain write timeout: its response
/// is cut, counted, and the drain is not reported clean (exit code 1).
#[test]
fn a_client_that_reads_nothing_is_cut_by_the_drain_write_timeout_and_the_drain_is_not_clean() {
    let running = start(ServerConfig {
        drain_write_timeout: Duration::from_millis(500),
        shutdown_timeout: Duration::from_secs(60),
        ..config()
    });
    let mut stuck = client(running.addr);
    stuck.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    // And one that behaves, served during the drain.
    let mut fine = client(running.addr);
    fine.write_all(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_until(&mut fine, b"ok");
    // The stuck client's response has started and cannot finish.
    read_until(&mut stuck, b"\r\n\r\n");
    while running.metric("quiesce_connections{state=\"active\"}") == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    running.handle.graceful();
    let outcome = running.outcome();
    assert!(matches!(outcome, Outcome::Cut { cut: 1, .. }), "{outcome:?}");
    assert_eq!(outcome.exit_code(), 1);
    // The client gets less than the response says, then the end: it can tell.
    let rest = read_to_close(&mut stuck);
    assert!(rest.len() < big_body().len(), "the whole body arrived");
}

/// Outside the drain, a client that still reads, however slowly, is not cut by the write timeout
/// (writes make no progress for several timeouts: the kernel's buffers are full), while one
/// that stopped is, and is counted.
#[test]
fn the_write_timeout_keeps_a_slow_reader_and_cuts_a_stopped_one() {
    let timeout = Duration::from_millis(800);
    let running = start(ServerConfig { write_timeout: timeout, ..config() });
    let mut slow = client(running.addr);
    slow.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_until(&mut slow, b"\r\n\r\n");
    // Reads 512 bytes every 20 ms for five write timeouts: far slower than the server writes,
    // so its writes stall all along.
    let mut buf = [0u8; 512];
    for _ in 0..(5 * timeout.as_millis() / 20) {
        let n = read_some(&mut slow, &mut buf).expect("the slow reader was cut");
        assert!(n > 0, "the slow reader was cut");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(running.metric("quiesce_cut_responses_total{reason=\"write_timeout\"}"), 0);
    // Now it stops reading: cut, counted.
    while running.metric("quiesce_cut_responses_total{reason=\"write_timeout\"}") == 0 {
        thread::sleep(Duration::from_millis(20));
    }
    running.handle.graceful();
    assert!(matches!(running.outcome(), Outcome::Drained { .. }), "a cut before the drain does not make it unclean");
    let rest = read_to_close(&mut slow);
    assert!(rest.len() < big_body().len());
}

/// A producer can tell that its client stopped reading: `try_send` answers `Full` after a
/// bounded amount, not after the many megabytes an autotuned socket buffer would take in.
#[test]
fn a_stream_to_a_client_that_reads_nothing_soon_answers_full() {
    let server = start(config());
    let mut stuck = client(server.addr);
    stuck.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut stream = server.streams.recv_timeout(BOUND).unwrap().stream(Response::new()).unwrap();
    let piece = [b'e'; 1024];
    let mut accepted = 0usize;
    // Fill until Full; the loop moves what it can in between, so try for a while after the
    // first Full to be sure the server has taken all it will.
    let mut fulls = 0;
    while fulls < 200 && accepted < 256 << 20 {
        match stream.try_send(&piece) {
            Ok(()) => accepted += piece.len(),
            Err(quiesce::TrySendError::Full) => {
                fulls += 1;
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("accepted {} KiB before Full", accepted >> 10);
    assert!(accepted < 2 << 20, "{} KiB taken for a client that read nothing", accepted >> 10);
    drop(stream);
    drop(stuck);
    server.handle.graceful();
    let _ = server.outcome();
}
