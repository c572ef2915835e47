//! HTTPS in the loop, over real loopback sockets with a rustls client: the session's
//! parameters in the request (ALPN, SNI), plain HTTP and garbage on the TLS port, the handshake
//! timeout, the drain of idle, in-flight, streaming and still-handshaking TLS connections
//! (`close_notify` seen by the client, or not for a cut), and a certificate swapped while
//! connections are open.
//!
//! The certificates in tests/tls/ are made by a test CA (ca.pem) for `localhost` and 127.0.0.1,
//! valid for a century: a.pem and b.pem, each with its key.
#![cfg(feature = "tls")]

#[path = "common/retry.rs"]
mod retry;
use retry::read_some;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use quiesce::tls::{TlsConfig, load_pem, rustls};
use quiesce::{Error, Outcome, Reply, Request, Responder, Response, Server, ServerConfig, ShutdownHandle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn tls_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls"))
}

/// The server side configuration for certificate `name` ("a" or "b").
fn server_config(name: &str) -> Arc<rustls::ServerConfig> {
    let dir = tls_dir();
    load_pem(&dir.join(format!("{name}.pem")), &dir.join(format!("{name}.key")), true).expect("load").config
}

/// A client that trusts the test CA and offers ALPN http/1.1.
fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_dir().join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client connection to `addr` for `localhost` (handshake done on first use).
fn connect(addr: SocketAddr) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    tls
}

/// The subject CN of the certificate the server presented.
fn presented(tls: &Tls) -> String {
    let certs = tls.conn.peer_certificates().expect("a certificate");
    let der = certs[0].as_ref();
    // The CN is the only "localhost a|b" in the DER.
    let text = String::from_utf8_lossy(der);
    ["localhost a", "localhost b"].into_iter().find(|cn| text.contains(cn)).unwrap_or("?").to_owned()
}

/// Reads one response (head and its Content-Length body, or a chunked body to its end).
fn read_response(tls: &mut Tls) -> io::Result<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            if head.contains("Transfer-Encoding: chunked") {
                if text[end..].contains("\r\n0\r\n\r\n") {
                    return Ok(text);
                }
            } else {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return Ok(text);
                }
            }
        }
        let n = read_some(tls, &mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// How the server ended the session, as the client sees it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `close_notify`, then the end of the TCP stream.
    CloseNotify,
    /// The TCP stream ended (or was reset) without `close_notify`.
    Ragged,
    /// More data came.
    Data(String),
}

fn end_of(tls: &mut Tls) -> End {
    let mut buf = [0u8; 1024];
    match read_some(tls, &mut buf) {
        Ok(0) => End::CloseNotify,
        Ok(n) => End::Data(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => End::Ragged,
        Err(e) => panic!("reading the end: {e}"),
    }
}

/// A running HTTPS server whose requests to `/later` are handed to the test.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    drain: quiesce::DrainNotice,
    tls: TlsConfig,
    later: Receiver<Responder>,
    thread: Option<JoinHandle<Result<Outcome, Error>>>,
}

impl Running {
    fn start(config: ServerConfig) -> Running {
        let (tx, later) = mpsc::channel();
        let handler = move |req: &Request<'_>, res: &mut Response| {
            match req.path() {
                "/later" => {
                    let _ = tx.send(res.defer());
                    return Reply::Later;
                }
                "/session" => {
                    let body = match req.tls() {
                        Some(t) => format!(
                            "{} {} alpn={} sni={}",
                            t.version,
                            t.cipher,
                            t.alpn.as_deref().unwrap_or("-"),
                            t.sni.as_deref().unwrap_or("-")
                        ),
                        None => "plain".to_owned(),
                    };
                    res.set_body(body);
                }
                _ => {
                    res.set_body("hello");
                }
            }
            Reply::Now
        };
        let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..config };
        let tls = TlsConfig::new(server_config("a"));
        let server = Server::bind(config, handler).expect("bind").with_tls(tls.clone());
        let (addr, handle, drain) = (server.local_addr(), server.shutdown_handle(), server.drain_notice());
        let thread = Some(thread::spawn(move || server.run()));
        Running { addr, handle, drain, tls, later, thread }
    }

    fn outcome(&mut self) -> Outcome {
        let thread = self.thread.take().expect("running");
        for _ in 0..1000 {
            if thread.is_finished() {
                return thread.join().expect("no panic").expect("run");
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.handle.immediate();
        panic!("the server did not stop: {:?}", thread.join());
    }

    fn failed(&self, reason: &str) -> u64 {
        self.tls.counts().failed.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.immediate();
            let _ = thread.join();
        }
    }
}

fn get(tls: &mut Tls, path: &str) -> String {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    tls.flush().unwrap();
    read_response(tls).expect("a response")
}

#[test]
fn a_request_knows_its_session_alpn_and_sni() {
    let server = Running::start(ServerConfig::default());
    let mut tls = connect(server.addr);
    let reply = get(&mut tls, "/session");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with(" alpn=http/1.1 sni=localhost"), "{reply}");
    assert!(reply.contains("\r\n\r\nTLSv1.3 TLS13_"), "{reply}");
    // Keep-alive inside the session: a second request on it.
    assert!(get(&mut tls, "/session").ends_with("sni=localhost"));
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(server.tls.counts().handshakes, 1);
}

#[test]
fn plain_http_to_the_tls_port_is_told_to_use_https() {
    let server = Running::start(ServerConfig::default());
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    sock.read_to_string(&mut reply).expect("an answer, then the end");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
    assert!(reply.ends_with("use https:// to it.\n"), "{reply}");
    assert_eq!(server.failed("plain_http"), 1);
}

/// The same to a HEAD request: the head alone (RFC 9110 §9.3.2), framed as for GET.
#[test]
fn plain_http_head_to_the_tls_port_gets_the_head_alone() {
    let server = Running::start(ServerConfig::default());
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.write_all(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    sock.read_to_string(&mut reply).expect("an answer, then the end");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("\r\nContent-Length: 44\r\n"), "{reply}");
    assert!(reply.ends_with("Connection: close\r\n\r\n"), "{reply:?}");
    assert_eq!(server.failed("plain_http"), 1);
}

#[test]
fn garbage_gets_an_alert_and_the_end() {
    let server = Running::start(ServerConfig::default());
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // A handshake record header announcing a message that is not a ClientHello.
    sock.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x63, 0x00, 0x00, 0x00]).unwrap();
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    // An alert record (type 21), then the end.
    assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
    assert_eq!(server.failed("bad_message"), 1);
}

#[test]
fn a_handshake_that_stalls_is_closed_by_the_handshake_timeout() {
    let config = ServerConfig { handshake_timeout: Duration::from_millis(200), ..ServerConfig::default() };
    let server = Running::start(config);
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The first bytes of a ClientHello, and nothing more (a slowloris on the handshake).
    sock.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut rest = Vec::new();
    let closed = sock.read_to_end(&mut rest);
    assert!(closed.is_ok() || closed.unwrap_err().kind() == io::ErrorKind::ConnectionReset);
    assert_eq!(server.failed("timeout"), 1);
    // The server still serves.
    assert!(get(&mut connect(server.addr), "/").ends_with("hello"));
}

#[test]
fn the_drain_ends_idle_sessions_with_close_notify_and_in_flight_ones_after_their_answer() {
    let mut server = Running::start(ServerConfig { drain_idle_grace: Duration::ZERO, ..ServerConfig::default() });
    let mut idle = connect(server.addr);
    assert!(get(&mut idle, "/").ends_with("hello"));
    let mut busy = connect(server.addr);
    write!(busy, "GET /later HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    busy.flush().unwrap();
    let responder = server.later.recv_timeout(IO_TIMEOUT).expect("the request");

    server.handle.graceful();
    // The idle one: close_notify, then the FIN.
    assert_eq!(end_of(&mut idle), End::CloseNotify);
    // The one in flight: its answer, with Connection: close, then close_notify.
    let mut answer = Response::new();
    answer.set_body("late");
    responder.send(answer).expect("the connection waits");
    let reply = read_response(&mut busy).expect("the answer");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
    assert!(reply.ends_with("late"), "{reply}");
    assert_eq!(end_of(&mut busy), End::CloseNotify);
    assert!(matches!(server.outcome(), Outcome::Drained { .. }));
    assert_eq!(server.tls.counts().close_notify, 2);
}

#[test]
fn a_stream_ends_with_its_last_chunk_then_close_notify_and_a_cut_one_without() {
    let mut server = Running::start(ServerConfig::default());
    let mut whole = connect(server.addr);
    write!(whole, "GET /later HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    whole.flush().unwrap();
    let mut stream = server.later.recv_timeout(IO_TIMEOUT).unwrap().stream(Response::new()).expect("a stream");
    let mut cut = connect(server.addr);
    write!(cut, "GET /later HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    cut.flush().unwrap();
    let mut dropped = server.later.recv_timeout(IO_TIMEOUT).unwrap().stream(Response::new()).expect("a stream");
    stream.send(b"first").unwrap();
    dropped.send(b"partial").unwrap();

    server.handle.graceful();
    stream.send(b"last").unwrap();
    stream.finish().unwrap();
    let reply = read_response(&mut whole).expect("the whole stream");
    assert!(reply.contains("first") && reply.contains("last"), "{reply}");
    assert_eq!(end_of(&mut whole), End::CloseNotify);
    // Dropped unfinished: the client must not take the end for a clean one.
    drop(dropped);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        match read_some(&mut cut, &mut buf) {
            Ok(0) => break End::CloseNotify,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
                break End::Ragged;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(end, End::Ragged, "{}", String::from_utf8_lossy(&seen));
    assert!(!String::from_utf8_lossy(&seen).contains("\r\n0\r\n\r\n"));
    server.outcome();
}

#[test]
fn a_handshake_under_way_at_the_drain_is_closed_within_the_new_connections_grace() {
    let config = ServerConfig { drain_new_grace: Duration::from_millis(100), ..ServerConfig::default() };
    let mut server = Running::start(config);
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.write_all(&[0x16, 0x03, 0x01]).unwrap();
    // Make sure the server has taken it in before the drain.
    let mut probe = connect(server.addr);
    assert!(get(&mut probe, "/").ends_with("hello"));
    drop(probe);

    server.handle.graceful();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert!(matches!(server.outcome(), Outcome::Drained { .. }));
    assert_eq!(server.failed("shutdown"), 1);
}

#[test]
fn a_handshake_that_completes_during_the_drain_is_served_like_a_new_client() {
    let config = ServerConfig { drain_new_grace: Duration::from_secs(5), ..ServerConfig::default() };
    let mut server = Running::start(config);
    let sock = TcpStream::connect(server.addr).unwrap();
    // Connected (accepted) before the drain; the handshake and request come after it.
    let mut probe = connect(server.addr);
    assert!(get(&mut probe, "/").ends_with("hello"));
    drop(probe);
    server.handle.graceful();
    assert!(server.drain.wait_timeout(IO_TIMEOUT), "the drain began");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(client_config(), name).unwrap(), sock);
    let reply = get(&mut tls, "/");
    assert!(reply.contains("Connection: close\r\n") && reply.ends_with("hello"), "{reply}");
    assert_eq!(end_of(&mut tls), End::CloseNotify);
    assert!(matches!(server.outcome(), Outcome::Drained { .. }));
}

#[test]
fn a_swapped_certificate_is_used_by_new_handshakes_while_open_sessions_go_on() {
    let server = Running::start(ServerConfig::default());
    let mut before = connect(server.addr);
    assert_eq!(presented(&before), "localhost a");
    assert!(get(&mut before, "/").ends_with("hello"));

    server.tls.swap(server_config("b"));
    let mut after = connect(server.addr);
    assert_eq!(presented(&after), "localhost b");
    assert!(get(&mut after, "/").ends_with("hello"));
    // The session begun before the swap keeps serving.
    assert!(get(&mut before, "/").ends_with("hello"));
    assert_eq!(server.tls.counts().handshakes, 2);
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let dir = tls_dir();
    let error = load_pem(&dir.join("a.pem"), &dir.join("b.key"), true).expect_err("a mismatch");
    assert!(error.to_string().contains("refused"), "{error}");
    let missing = load_pem(&dir.join("missing.pem"), &dir.join("a.key"), true).expect_err("no file");
    assert!(missing.to_string().contains("missing.pem"), "{missing}");
    let loaded = load_pem(&dir.join("a.pem"), &dir.join("a.key"), true).unwrap();
    assert!(!loaded.expired(std::time::SystemTime::now()));
    assert_eq!(loaded.chain, 1);
}

/// A socket that sends one byte per write, so the server sees TLS records split at every
/// boundary the network allows.
struct Trickle(TcpStream);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.0.write(&buf[..1])?;
        // Give the server a chance to read this byte alone now and then.
        if buf.len().is_multiple_of(97) {
            thread::sleep(Duration::from_millis(1));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn records_split_byte_by_byte_are_read_the_same() {
    let server = Running::start(ServerConfig::default());
    let sock = TcpStream::connect(server.addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, Trickle(sock));
    for _ in 0..3 {
        write!(tls, "GET /session HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        tls.flush().unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&data).ends_with("sni=localhost") {
            let n = read_some(&mut tls, &mut buf).expect("a response");
            assert!(n > 0, "{}", String::from_utf8_lossy(&data));
            data.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(server.tls.counts().handshakes, 1);
}

#[test]
fn a_client_that_stops_reading_a_large_response_is_cut_by_the_write_timeout() {
    let config = ServerConfig {
        write_timeout: Duration::from_millis(300),
        drain_write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut server = Running::start(config);
    let mut tls = connect(server.addr);
    write!(tls, "GET /later HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let mut big = Response::new();
    big.set_body(vec![b'x'; 32 << 20]);
    server.later.recv_timeout(IO_TIMEOUT).unwrap().send(big).unwrap();
    // The client reads nothing; the server gives up on it and drains with nothing left.
    server.handle.graceful();
    let outcome = server.outcome();
    assert!(matches!(outcome, Outcome::Cut { .. }), "{outcome:?}");
    // What it did get is not taken for a clean end.
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    let end = loop {
        match read_some(&mut tls, &mut buf) {
            Ok(0) => break End::CloseNotify,
            Ok(n) => total += n,
            Err(_) => break End::Ragged,
        }
    };
    assert_eq!(end, End::Ragged, "after {total} bytes");
    assert!(total < 32 << 20);
}

#[test]
fn a_flood_of_stalled_handshakes_at_the_cap_starves_no_established_client() {
    let config =
        ServerConfig { max_connections: 16, handshake_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let server = Running::start(config);
    let mut established = connect(server.addr);
    assert!(get(&mut established, "/").ends_with("hello"));
    // Three times the cap in stalled handshakes: the first ones fill every other slot, the
    // rest wait in the backlog.
    let mut stalled = Vec::new();
    for _ in 0..48 {
        let mut sock = TcpStream::connect(server.addr).unwrap();
        sock.write_all(&[0x16, 0x03, 0x01]).unwrap();
        stalled.push(sock);
    }
    // The client already in is served throughout.
    for _ in 0..20 {
        assert!(get(&mut established, "/").ends_with("hello"));
    }
    // The stalled ones are cut by the handshake timeout, slots free up, and a new client gets
    // its turn behind them.
    let mut late = connect(server.addr);
    assert!(get(&mut late, "/session").ends_with("sni=localhost"));
    assert!(server.failed("timeout") >= 15, "{:?}", server.tls.counts());
    assert!(get(&mut established, "/").ends_with("hello"));
}
