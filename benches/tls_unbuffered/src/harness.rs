//! In-memory TLS 1.3 request/response loop: a buffered rustls `ClientConnection` against a server
//! side driven either through the buffered `ServerConnection` API or through the unbuffered
//! `UnbufferedServerConnection` API. No sockets: records move through `Vec<u8>` "wires".
//!
//! Each server variant's per-round work is one `#[no_mangle] #[inline(never)]` function
//! (`srv_round_buffered`, `srv_round_unbuffered`) so that callgrind can `--toggle-collect` on it.
//! Both include the copy that stands for the socket: `read_tls` copying the wire into rustls'
//! buffer vs. the caller copying the wire into its own incoming buffer (recv), and `write_tls`
//! copying into the wire vs. the caller copying its outgoing buffer into the wire (send).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs as provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, Error, ServerConfig, ServerConnection,
    SignatureScheme,
};

pub const REQUEST: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
pub const RESPONSE_LEN: usize = 150;
/// TLS 1.3 record: 5 header + payload + 1 inner content type + 16 tag.
pub const REQUEST_RECORD: usize = 5 + REQUEST.len() + 1 + 16;
pub const RESPONSE_RECORD: usize = 5 + RESPONSE_LEN + 1 + 16;

pub fn response() -> Vec<u8> {
    let head = b"HTTP/1.1 200 OK\r\nServer: q\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nX-Pad: ";
    let tail = b"\r\n\r\nHello, World!";
    let mut r = head.to_vec();
    r.resize(RESPONSE_LEN - tail.len(), b'a');
    r.extend_from_slice(tail);
    assert_eq!(r.len(), RESPONSE_LEN);
    r
}

// ---------------------------------------------------------------- allocation counting

pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
pub static FREES: AtomicU64 = AtomicU64::new(0);
pub static REALLOCS: AtomicU64 = AtomicU64::new(0);
pub static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts every allocation (only installed as the global allocator by the `bench_count` binary).
pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(l.size() as u64, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(l.size() as u64, Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        FREES.fetch_add(1, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(new as u64, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct AllocSnap {
    pub allocs: u64,
    pub frees: u64,
    pub reallocs: u64,
    pub bytes: u64,
}

pub fn snap() -> AllocSnap {
    AllocSnap {
        allocs: ALLOCS.load(Relaxed),
        frees: FREES.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        bytes: ALLOC_BYTES.load(Relaxed),
    }
}

impl std::ops::Sub for AllocSnap {
    type Output = AllocSnap;
    fn sub(self, o: AllocSnap) -> AllocSnap {
        AllocSnap {
            allocs: self.allocs - o.allocs,
            frees: self.frees - o.frees,
            reallocs: self.reallocs - o.reallocs,
            bytes: self.bytes - o.bytes,
        }
    }
}

// ---------------------------------------------------------------- configuration

fn provider() -> CryptoProvider {
    let mut p = provider::default_provider();
    p.cipher_suites = vec![provider::cipher_suite::TLS13_AES_128_GCM_SHA256];
    p
}

pub fn server_config() -> Arc<ServerConfig> {
    let certs = CertificateDer::pem_file_iter("cert.pem")
        .expect("cert.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert.pem");
    let key = PrivateKeyDer::from_pem_file("key.pem").expect("key.pem");
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

/// The client is not under test: it trusts any certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn client() -> ClientConnection {
    let p = Arc::new(provider());
    let mut cfg = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap()
}

// ---------------------------------------------------------------- the server's read buffer

/// The server-owned buffer the plaintext request is copied into (what the HTTP parser reads).
pub struct AppBuf {
    pub buf: Vec<u8>,
    pub len: usize,
}

impl AppBuf {
    pub fn new() -> AppBuf {
        AppBuf { buf: vec![0; 16 * 1024], len: 0 }
    }
    #[inline]
    fn push(&mut self, data: &[u8]) {
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }
    /// The "application": a whole request is in: consume it, and answer.
    #[inline]
    fn take_request(&mut self) -> bool {
        let whole = self.buf[..self.len].ends_with(b"\r\n\r\n");
        if whole {
            self.len = 0;
        }
        whole
    }
}

// ---------------------------------------------------------------- client side (not measured)

fn drain_client_out(client: &mut ClientConnection, wire: &mut Vec<u8>) {
    while client.wants_write() {
        client.write_tls(wire).unwrap();
    }
}

fn feed_client(client: &mut ClientConnection, mut wire: &[u8]) {
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
    }
}

/// One round's client half before the server: the request as one record on `c2s`.
pub fn client_send(client: &mut ClientConnection, c2s: &mut Vec<u8>) {
    c2s.clear();
    client.writer().write_all(REQUEST).unwrap();
    drain_client_out(client, c2s);
    assert_eq!(c2s.len(), REQUEST_RECORD, "request is not one record");
}

/// One round's client half after the server: reads and checks the answer.
pub fn client_recv(client: &mut ClientConnection, s2c: &mut Vec<u8>, expect: &[u8], scratch: &mut [u8]) {
    assert_eq!(s2c.len(), RESPONSE_RECORD, "response is not one record");
    feed_client(client, s2c);
    s2c.clear();
    let mut got = 0;
    loop {
        match client.reader().read(&mut scratch[got..]) {
            Ok(0) => panic!("client: EOF"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("client read: {e}"),
        }
    }
    assert_eq!(&scratch[..got], expect);
}

// ---------------------------------------------------------------- (a) buffered server

pub fn handshake_buffered(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut wire = Vec::new();
    for _ in 0..10 {
        wire.clear();
        drain_client_out(client, &mut wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        feed_client(client, &wire);
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() && !server.wants_write() {
            return;
        }
    }
    panic!("buffered handshake did not finish");
}

/// The server's half of one exchange through the buffered API: the TLS bytes of the request are
/// in `wire_in` (as a socket would hold them); the response's TLS bytes are appended to
/// `wire_out` (as a socket write would take them).
#[unsafe(no_mangle)]
#[inline(never)]
pub fn srv_round_buffered(
    conn: &mut ServerConnection,
    wire_in: &[u8],
    wire_out: &mut Vec<u8>,
    app: &mut AppBuf,
    response: &[u8],
) -> io::Result<()> {
    // recv: read_tls copies into rustls' deframer buffer.
    let mut rd = wire_in;
    while !rd.is_empty() {
        conn.read_tls(&mut rd)?;
        conn.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    // The plaintext into the server's own read buffer.
    let n = conn.reader().read(&mut app.buf[app.len..])?;
    app.len += n;
    if app.take_request() {
        conn.writer().write_all(response)?;
    }
    // send: write_tls copies rustls' queued records into the "socket".
    while conn.wants_write() {
        conn.write_tls(wire_out)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- (b) unbuffered server

/// The unbuffered server: the connection plus the two caller-owned TLS buffers.
pub struct UServer {
    pub conn: UnbufferedServerConnection,
    /// Received TLS bytes, `incoming[..in_len]`; records are processed (decrypted) in place here.
    pub incoming: Vec<u8>,
    pub in_len: usize,
    /// TLS bytes to send, `outgoing[..out_len]`; `encrypt`/`encode` write here.
    pub outgoing: Vec<u8>,
    pub out_len: usize,
    pub peer_closed: bool,
}

/// Big enough for one full record (16 KiB + 5 header + 256 expansion) and then some.
pub const UBUF: usize = 32 * 1024;

impl UServer {
    pub fn new(cfg: Arc<ServerConfig>) -> UServer {
        UServer {
            conn: UnbufferedServerConnection::new(cfg).unwrap(),
            incoming: vec![0; UBUF],
            in_len: 0,
            outgoing: vec![0; UBUF],
            out_len: 0,
            peer_closed: false,
        }
    }

    /// recv: the "socket" into the caller's incoming buffer.
    #[inline]
    fn recv(&mut self, wire_in: &[u8]) {
        let end = self.in_len + wire_in.len();
        assert!(end <= self.incoming.len(), "incoming buffer full");
        self.incoming[self.in_len..end].copy_from_slice(wire_in);
        self.in_len = end;
    }
}

/// Drives the unbuffered state machine until it needs more input (or, after the handshake,
/// offers `WriteTraffic` with nothing more to say). Handles every state a server can meet.
/// Decrypted application data is copied into `app`; when `app` holds a whole request and
/// `WriteTraffic` is offered, `response` is encrypted into `s.outgoing`. Whatever was put into
/// `s.outgoing` is "sent" (appended to `wire_out`) on `TransmitTlsData` and at the end.
#[inline]
fn pump(
    s: &mut UServer,
    wire_out: &mut Vec<u8>,
    app: &mut AppBuf,
    response: Option<&[u8]>,
) -> Result<(), Error> {
    loop {
        let UnbufferedStatus { mut discard, state } =
            s.conn.process_tls_records(&mut s.incoming[..s.in_len]);
        let mut stop = false;
        match state? {
            ConnectionState::ReadTraffic(mut rt) => {
                while let Some(rec) = rt.next_record() {
                    let rec = rec?;
                    discard += rec.discard;
                    app.push(rec.payload);
                }
            }
            ConnectionState::EncodeTlsData(mut enc) => match enc.encode(&mut s.outgoing[s.out_len..]) {
                Ok(n) => s.out_len += n,
                // A real server would send what `outgoing` holds (or grow it) and call
                // `encode` again; with a 32 KiB buffer and a ~1 KiB flight it does not happen.
                Err(EncodeError::InsufficientSize(e)) => panic!("outgoing too small: {e:?}"),
                Err(EncodeError::AlreadyEncoded) => unreachable!(),
            },
            ConnectionState::TransmitTlsData(t) => {
                wire_out.extend_from_slice(&s.outgoing[..s.out_len]);
                s.out_len = 0;
                t.done();
            }
            ConnectionState::WriteTraffic(mut w) => {
                if let Some(response) = response.filter(|_| app.take_request()) {
                    match w.encrypt(response, &mut s.outgoing[s.out_len..]) {
                        Ok(n) => s.out_len += n,
                        Err(EncryptError::InsufficientSize(e)) => panic!("outgoing too small: {e:?}"),
                        Err(EncryptError::EncryptExhausted) => panic!("keys exhausted"),
                    }
                }
                // Wait for the peer: more input is needed before anything else can happen.
                stop = true;
            }
            ConnectionState::BlockedHandshake => stop = true,
            ConnectionState::PeerClosed => s.peer_closed = true,
            ConnectionState::Closed => stop = true,
            ConnectionState::ReadEarlyData(_) => unreachable!("early data is not enabled"),
            _ => unreachable!("ConnectionState is non_exhaustive"),
        }
        if discard > 0 {
            s.incoming.copy_within(discard..s.in_len, 0);
            s.in_len -= discard;
        }
        if stop {
            break;
        }
    }
    // send: the caller's outgoing buffer into the "socket".
    if s.out_len > 0 {
        wire_out.extend_from_slice(&s.outgoing[..s.out_len]);
        s.out_len = 0;
    }
    Ok(())
}

pub fn handshake_unbuffered(client: &mut ClientConnection, server: &mut UServer) {
    let mut wire = Vec::new();
    let mut app = AppBuf::new();
    for _ in 0..10 {
        wire.clear();
        drain_client_out(client, &mut wire);
        server.recv(&wire);
        wire.clear();
        pump(server, &mut wire, &mut app, None).unwrap();
        feed_client(client, &wire);
        if !client.is_handshaking() && !server.conn.is_handshaking() && !client.wants_write() && server.in_len == 0 {
            assert_eq!(app.len, 0);
            return;
        }
    }
    panic!("unbuffered handshake did not finish");
}

/// The server's half of one exchange through the unbuffered API (same contract as
/// [`srv_round_buffered`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub fn srv_round_unbuffered(
    s: &mut UServer,
    wire_in: &[u8],
    wire_out: &mut Vec<u8>,
    app: &mut AppBuf,
    response: &[u8],
) -> Result<(), Error> {
    s.recv(wire_in);
    pump(s, wire_out, app, Some(response))
}

/// Sensitivity variant of (b): reading and answering as two separate steps, as an event loop
/// whose application answers after the read returns would do: a first `process_tls_records`
/// pass that only reads (it ends at `WriteTraffic` with nothing to send), then a second pass
/// to get a `WriteTraffic` again and encrypt the answer (3 `process_tls_records` calls instead
/// of 2).
#[unsafe(no_mangle)]
#[inline(never)]
pub fn srv_round_unbuffered_split(
    s: &mut UServer,
    wire_in: &[u8],
    wire_out: &mut Vec<u8>,
    app: &mut AppBuf,
    response: &[u8],
) -> Result<(), Error> {
    s.recv(wire_in);
    pump(s, wire_out, app, None)?;
    pump(s, wire_out, app, Some(response))
}

/// Sensitivity variant of (a): the call sequence of the server's own `TlsStream`
/// (the server's src/tls.rs): `reader().read` first (WouldBlock), `read_tls`,
/// `process_new_packets`, `is_handshaking`, a `push` (`wants_write` loop), `reader().read`
/// again; then `push`, `writer().write`, `push`.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn srv_round_buffered_q(
    conn: &mut ServerConnection,
    wire_in: &[u8],
    wire_out: &mut Vec<u8>,
    app: &mut AppBuf,
    response: &[u8],
) -> io::Result<()> {
    fn push(conn: &mut ServerConnection, wire_out: &mut Vec<u8>) -> io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(wire_out)?;
        }
        Ok(())
    }
    let mut rd = wire_in;
    loop {
        match conn.reader().read(&mut app.buf[app.len..]) {
            Ok(n) => {
                app.len += n;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if conn.read_tls(&mut rd)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        conn.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if conn.is_handshaking() {
            unreachable!();
        }
        push(conn, wire_out)?;
    }
    if app.take_request() {
        push(conn, wire_out)?;
        let n = conn.writer().write(response)?;
        assert_eq!(n, response.len());
        push(conn, wire_out)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- the loop

pub struct Report {
    pub rounds: u64,
    /// Server-side allocation counts summed over the rounds (zero unless the counting
    /// allocator is installed).
    pub alloc: AllocSnap,
    pub alloc_first: AllocSnap,
    pub alloc_last: AllocSnap,
    pub alloc_max_allocs: u64,
    pub alloc_min_allocs: u64,
}

pub fn run(variant: &str, n: u64) -> Report {
    let cfg = server_config();
    let mut client = client();
    let expect = response();
    let mut c2s = Vec::with_capacity(64 * 1024);
    let mut s2c = Vec::with_capacity(64 * 1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut app = AppBuf::new();
    let mut rep = Report {
        rounds: n,
        alloc: AllocSnap::default(),
        alloc_first: AllocSnap::default(),
        alloc_last: AllocSnap::default(),
        alloc_max_allocs: 0,
        alloc_min_allocs: u64::MAX,
    };
    let mut account = |i: u64, d: AllocSnap| {
        rep.alloc.allocs += d.allocs;
        rep.alloc.frees += d.frees;
        rep.alloc.reallocs += d.reallocs;
        rep.alloc.bytes += d.bytes;
        if i == 0 {
            rep.alloc_first = d;
        }
        rep.alloc_last = d;
        rep.alloc_max_allocs = rep.alloc_max_allocs.max(d.allocs);
        rep.alloc_min_allocs = rep.alloc_min_allocs.min(d.allocs);
    };
    // One round: the client's request, the server's side (measured), the client's read.
    let mut rounds = |client: &mut ClientConnection, server_round: &mut dyn FnMut(&[u8], &mut Vec<u8>)| {
        for i in 0..n {
            client_send(client, &mut c2s);
            let before = snap();
            server_round(&c2s, &mut s2c);
            account(i, snap() - before);
            client_recv(client, &mut s2c, &expect, &mut scratch);
        }
    };
    match variant {
        "buffered" | "buffered_q" => {
            let queued = variant == "buffered_q";
            let mut server = ServerConnection::new(cfg).unwrap();
            handshake_buffered(&mut client, &mut server);
            rounds(&mut client, &mut |c2s, s2c| {
                if queued {
                    srv_round_buffered_q(&mut server, c2s, s2c, &mut app, &expect).unwrap();
                } else {
                    srv_round_buffered(&mut server, c2s, s2c, &mut app, &expect).unwrap();
                }
            });
        }
        "unbuffered" | "unbuffered_split" => {
            let split = variant == "unbuffered_split";
            let mut server = UServer::new(cfg);
            handshake_unbuffered(&mut client, &mut server);
            rounds(&mut client, &mut |c2s, s2c| {
                if split {
                    srv_round_unbuffered_split(&mut server, c2s, s2c, &mut app, &expect).unwrap();
                } else {
                    srv_round_unbuffered(&mut server, c2s, s2c, &mut app, &expect).unwrap();
                }
            });
            assert_eq!(server.in_len, 0);
        }
        other => panic!("unknown variant {other}: buffered | unbuffered | buffered_q | unbuffered_split"),
    }
    rep
}

pub fn main_with(counting: bool) {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "buffered".into());
    if variant == "probes" {
        probes();
        return;
    }
    let n: u64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(20_000);
    let rep = run(&variant, n);
    println!("variant={variant} rounds={}", rep.rounds);
    if counting {
        let a = rep.alloc;
        let per = |x: u64| x as f64 / rep.rounds as f64;
        println!(
            "server side per round: allocs={:.3} frees={:.3} reallocs={:.3} bytes_allocated={:.1}",
            per(a.allocs),
            per(a.frees),
            per(a.reallocs),
            per(a.bytes)
        );
        println!(
            "first round: {:?}; last round: {:?}; allocs per round min={} max={}",
            rep.alloc_first, rep.alloc_last, rep.alloc_min_allocs, rep.alloc_max_allocs
        );
    }
}

// ---------------------------------------------------------------- behaviour probes (not measured)

/// One `process_tls_records` pass over `s.incoming`, logging each state; `close` queues a
/// close_notify at the first `WriteTraffic`. Stops at `WriteTraffic`/`BlockedHandshake`/
/// `Closed`/an error (returns the log).
fn trace_pump(s: &mut UServer, wire_out: &mut Vec<u8>, close: bool, max_calls: usize) -> Vec<String> {
    let mut log = Vec::new();
    let mut close = close;
    for _ in 0..max_calls {
        let UnbufferedStatus { mut discard, state } = s.conn.process_tls_records(&mut s.incoming[..s.in_len]);
        let mut stop = false;
        let name = match state {
            Err(e) => {
                log.push(format!("Err({e}) discard={discard}"));
                stop = true;
                String::new()
            }
            Ok(ConnectionState::ReadTraffic(mut rt)) => {
                let mut got = Vec::new();
                while let Some(rec) = rt.next_record() {
                    let rec = rec.unwrap();
                    discard += rec.discard;
                    got.push(rec.payload.len());
                }
                format!("ReadTraffic(records of {got:?} bytes)")
            }
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                let small = e.encode(&mut [0u8; 1]);
                let n = e.encode(&mut s.outgoing[s.out_len..]).unwrap();
                s.out_len += n;
                format!("EncodeTlsData({n} bytes; into a 1-byte buffer: {small:?})")
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                wire_out.extend_from_slice(&s.outgoing[..s.out_len]);
                let n = s.out_len;
                s.out_len = 0;
                t.done();
                format!("TransmitTlsData({n} bytes sent)")
            }
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                stop = true;
                let small = w.encrypt(b"hello", &mut [0u8; 8]);
                if close {
                    close = false;
                    stop = false;
                    let n = w.queue_close_notify(&mut s.outgoing[s.out_len..]).unwrap();
                    s.out_len += n;
                    wire_out.extend_from_slice(&s.outgoing[..s.out_len]);
                    s.out_len = 0;
                    format!("WriteTraffic(queue_close_notify: {n} bytes; encrypt 5 bytes into 8: {small:?})")
                } else {
                    format!("WriteTraffic(encrypt 5 bytes into 8: {small:?})")
                }
            }
            Ok(ConnectionState::BlockedHandshake) => {
                stop = true;
                "BlockedHandshake".into()
            }
            Ok(ConnectionState::PeerClosed) => "PeerClosed".into(),
            Ok(ConnectionState::Closed) => {
                stop = true;
                "Closed".into()
            }
            Ok(other) => format!("{other:?}"),
        };
        if !name.is_empty() {
            log.push(format!("{name} discard={discard}"));
        }
        if discard > 0 {
            s.incoming.copy_within(discard..s.in_len, 0);
            s.in_len -= discard;
        }
        if stop {
            break;
        }
    }
    log
}

pub fn probes() {
    let cfg = server_config();
    let mut wire = Vec::new();
    let mut back = Vec::new();

    println!("-- 1. a request record delivered in two halves");
    let mut client = self::client();
    let mut s = UServer::new(cfg.clone());
    handshake_unbuffered(&mut client, &mut s);
    client_send(&mut client, &mut wire);
    let half = wire.len() / 2;
    s.recv(&wire[..half]);
    println!("   first {half} bytes: {:?} (in_len={})", trace_pump(&mut s, &mut back, false, 8), s.in_len);
    s.recv(&wire[half..]);
    println!("   the rest: {:?} (in_len={})", trace_pump(&mut s, &mut back, false, 8), s.in_len);

    println!("-- 2. client asks for a key update (refresh_traffic_keys), then sends a request");
    client.refresh_traffic_keys().unwrap();
    wire.clear();
    client.writer().write_all(REQUEST).unwrap();
    drain_client_out(&mut client, &mut wire);
    s.recv(&wire);
    back.clear();
    println!("   {:?}", trace_pump(&mut s, &mut back, false, 8));
    println!("   server sent {} bytes back (the server's own key_update)", back.len());
    feed_client(&mut client, &back);

    println!("-- 3. client sends close_notify; server answers with queue_close_notify");
    client.send_close_notify();
    wire.clear();
    drain_client_out(&mut client, &mut wire);
    s.recv(&wire);
    back.clear();
    println!("   {:?}", trace_pump(&mut s, &mut back, true, 8));
    println!("   server sent {} bytes back; one more call: {:?}", back.len(), trace_pump(&mut s, &mut back, false, 8));

    println!("-- 4. a corrupted record (one ciphertext byte flipped)");
    let mut client = self::client();
    let mut s = UServer::new(cfg.clone());
    handshake_unbuffered(&mut client, &mut s);
    client_send(&mut client, &mut wire);
    wire[10] ^= 1;
    s.recv(&wire);
    back.clear();
    println!("   {:?}", trace_pump(&mut s, &mut back, false, 1));
    println!("   calling again after the error: {:?}", trace_pump(&mut s, &mut back, false, 4));
    println!("   server sent {} bytes back", back.len());

    println!("-- 5. buffered API, same corruption: process_new_packets error, then write_tls");
    let mut client2 = self::client();
    let mut server = ServerConnection::new(cfg).unwrap();
    handshake_buffered(&mut client2, &mut server);
    client_send(&mut client2, &mut wire);
    wire[10] ^= 1;
    server.read_tls(&mut &wire[..]).unwrap();
    let e = server.process_new_packets();
    back.clear();
    while server.wants_write() {
        server.write_tls(&mut back).unwrap();
    }
    println!("   process_new_packets: {:?}; write_tls then gives {} bytes (the alert)", e.err(), back.len());
}
