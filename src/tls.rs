//! HTTPS: rustls as the transport beneath the connection. A TLS connection reads and writes
//! plaintext through a TLS stream, which moves records between the socket and rustls as
//! readiness allows (the pattern of rustls' `tlsserver-mio` example). The parser, the phases,
//! responders, streams, the access log and the drain see plaintext either way; the handshake is
//! a phase of its own with its own deadline
//! ([`ServerConfig::handshake_timeout`](crate::ServerConfig::handshake_timeout)).
//!
//! A server serves HTTPS once given a [`TlsConfig`] ([`Server::with_tls`](crate::Server::with_tls)):
//! a handle on the rustls configuration that new handshakes use, which any thread may swap
//! ([`TlsConfig::swap`]) while connections already up keep theirs. [`load_pem`] builds the
//! configuration the binary uses from PEM files. A plain server's connections never see this
//! module: their request path is the same with the feature or without it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use mio::net::TcpStream;
pub use rustls;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::connection::{CloseReason, Transport};
use crate::http::request::TlsInfo;

/// What a TLS server answers a client that sent plain HTTP (as nginx does, with a status that
/// says what went wrong instead of an alert the client cannot read).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 44\r\n\
Connection: close\r\n\r\nThis port speaks HTTPS: use https:// to it.\n";
/// Its head, the whole answer to a HEAD request (RFC 9110 §9.3.2).
const PLAIN_HTTP_HEAD_LENGTH: usize = PLAIN_HTTP_ANSWER.len() - 44;

/// The rustls configuration new handshakes of a server use, shared by every server given a
/// clone, with the handshake figures they count. Swap it ([`TlsConfig::swap`]) from any thread
/// to rotate a certificate: handshakes that begin after the swap use the new one; connections
/// already up keep the one they began with.
#[derive(Clone)]
pub struct TlsConfig {
    shared: Arc<Shared>,
}

struct Shared {
    current: RwLock<Arc<rustls::ServerConfig>>,
    stats: TlsStats,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("counts", &self.counts()).finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Serves with `config`. Its ALPN list should offer `http/1.1` (what [`load_pem`] sets).
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        warm(&config);
        TlsConfig { shared: Arc::new(Shared { current: RwLock::new(config), stats: TlsStats::default() }) }
    }

    /// New handshakes use `config` from now on.
    pub fn swap(&self, config: Arc<rustls::ServerConfig>) {
        warm(&config);
        match self.shared.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.shared.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The handshakes and closes counted so far by every server using this configuration.
    pub fn counts(&self) -> TlsCounts {
        self.shared.stats.counts()
    }

    /// A TLS session over a connection just accepted; `Err` (and a failure counted) when
    /// rustls refuses to start one (the socket is handed back, to be closed).
    pub(crate) fn accept<T: Transport>(&self, sock: T) -> Result<TlsStream<T>, T> {
        match ServerConnection::new(self.current()) {
            Ok(tls) => Ok(TlsStream {
                sock,
                tls,
                stats: Arc::clone(&self.shared),
                state: Handshake::Running,
                socket_short: false,
                first_byte: None,
                plain_head: false,
                notified: false,
                info: None,
            }),
            Err(e) => {
                log::warn!("cannot start a TLS session: {e}");
                self.shared.stats.failed(Failure::Other);
                Err(sock)
            }
        }
    }
}

/// Has the configuration's crypto provider seed its random generator now, on the caller's
/// thread: aws-lc does it on first use, from jitter entropy, tens of milliseconds of CPU that
/// would otherwise fall on the event loop inside the first handshake (after a restart: just
/// after the handover).
fn warm(config: &rustls::ServerConfig) {
    let _ = config.crypto_provider().secure_random.fill(&mut [0u8; 1]);
}

/// Why a handshake failed, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Not done within the handshake timeout (or the drain's last call).
    Timeout,
    /// The client sent plain HTTP (answered 400).
    PlainHttp,
    /// The client sent something that is not TLS, or broke the protocol.
    BadMessage,
    /// The client sent an alert (it refused our certificate, say).
    ClientAlert,
    /// Nothing in common: versions, cipher suites, ALPN.
    Incompatible,
    /// The client closed or reset before the handshake ended.
    Closed,
    /// The server stopped.
    Shutdown,
    /// Anything else.
    Other,
}

impl Failure {
    const ALL: [(Failure, &'static str); 8] = [
        (Failure::Timeout, "timeout"),
        (Failure::PlainHttp, "plain_http"),
        (Failure::BadMessage, "bad_message"),
        (Failure::ClientAlert, "client_alert"),
        (Failure::Incompatible, "incompatible"),
        (Failure::Closed, "client_closed"),
        (Failure::Shutdown, "shutdown"),
        (Failure::Other, "other"),
    ];

    fn of(error: &rustls::Error) -> Failure {
        use rustls::Error as E;
        match error {
            E::AlertReceived(_) => Failure::ClientAlert,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Failure::Incompatible,
            E::InvalidMessage(_) | E::PeerMisbehaved(_) | E::InappropriateHandshakeMessage { .. } => {
                Failure::BadMessage
            }
            E::InappropriateMessage { .. } | E::DecryptError => Failure::BadMessage,
            _ => Failure::Other,
        }
    }
}

/// The handshake figures, counted with relaxed atomics (a handful per handshake, none per
/// request).
#[derive(Default)]
struct TlsStats {
    done: AtomicU64,
    failed: [AtomicU64; 8],
    close_notify: AtomicU64,
    /// Sessions by (version, cipher suite).
    sessions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl TlsStats {
    fn failed(&self, why: Failure) {
        if let Some(i) = Failure::ALL.iter().position(|(f, _)| *f == why) {
            self.failed[i].fetch_add(1, Relaxed);
        }
    }

    fn done(&self, version: &'static str, cipher: &'static str) {
        self.done.fetch_add(1, Relaxed);
        let mut sessions = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *sessions.entry((version, cipher)).or_default() += 1;
    }

    fn counts(&self) -> TlsCounts {
        TlsCounts {
            handshakes: self.done.load(Relaxed),
            failed: Failure::ALL.iter().zip(&self.failed).map(|((_, name), n)| (*name, n.load(Relaxed))).collect(),
            close_notify: self.close_notify.load(Relaxed),
            sessions: self
                .sessions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .map(|(&(version, cipher), &n)| (version, cipher, n))
                .collect(),
        }
    }
}

/// The TLS figures of a [`TlsConfig`]'s servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCounts {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes failed, by reason: `timeout`, `plain_http`, `bad_message`, `client_alert`,
    /// `incompatible`, `client_closed`, `shutdown`, `other`.
    pub failed: Vec<(&'static str, u64)>,
    /// Connections ended with a `close_notify` from the server.
    pub close_notify: u64,
    /// Completed handshakes by protocol version and cipher suite.
    pub sessions: Vec<(&'static str, &'static str, u64)>,
}

impl TlsCounts {
    /// Appends the figures in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("# HELP quiesce_tls_handshakes_total TLS handshakes completed.\n");
        out.push_str("# TYPE quiesce_tls_handshakes_total counter\n");
        let _ = writeln!(out, "quiesce_tls_handshakes_total {}", self.handshakes);
        out.push_str(
            "# HELP quiesce_tls_handshakes_failed_total TLS handshakes that failed, by reason.\n\
             # TYPE quiesce_tls_handshakes_failed_total counter\n",
        );
        for (reason, n) in &self.failed {
            let _ = writeln!(out, "quiesce_tls_handshakes_failed_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str(
            "# HELP quiesce_tls_sessions_total TLS sessions by protocol version and cipher suite.\n\
             # TYPE quiesce_tls_sessions_total counter\n",
        );
        for (version, cipher, n) in &self.sessions {
            let _ = writeln!(out, "quiesce_tls_sessions_total{{version=\"{version}\",cipher=\"{cipher}\"}} {n}");
        }
        out.push_str(
            "# HELP quiesce_tls_close_notify_total TLS connections the server ended with close_notify.\n\
             # TYPE quiesce_tls_close_notify_total counter\n",
        );
        let _ = writeln!(out, "quiesce_tls_close_notify_total {}", self.close_notify);
    }
}

/// Where a session's handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    Running,
    Done,
    /// Failed, and counted.
    Failed,
}

/// A TLS session over a connection (a TCP stream; an in-memory one in tests and fuzzing):
/// plaintext in and out for the connection above it.
pub(crate) struct TlsStream<T = TcpStream> {
    sock: T,
    tls: ServerConnection,
    stats: Arc<Shared>,
    state: Handshake,
    /// The last read from the socket came back short (or would block): nothing waits in it.
    socket_short: bool,
    /// The connection's first byte, to tell plain HTTP from a ClientHello.
    first_byte: Option<u8>,
    /// The first read began with `HEAD `: a plain HTTP HEAD request, answered without a body.
    plain_head: bool,
    /// A `close_notify` was sent.
    notified: bool,
    /// The session's parameters, once the handshake is done.
    info: Option<Arc<TlsInfo>>,
}

/// The socket as rustls reads it: notes whether a read came back short.
struct Probe<'a, T> {
    sock: &'a mut T,
    short: &'a mut bool,
    first: &'a mut Option<u8>,
    head: &'a mut bool,
}

impl<T: Read> Read for Probe<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.sock.read(buf) {
            Ok(n) => {
                *self.short = n < buf.len();
                if self.first.is_none() && n > 0 {
                    *self.first = Some(buf[0]);
                    *self.head = crate::http::names_head(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) => {
                *self.short = e.kind() == io::ErrorKind::WouldBlock;
                Err(e)
            }
        }
    }
}

impl TlsStream<TcpStream> {
    /// The TCP stream (to register it).
    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }
}

impl<T: Transport> TlsStream<T> {
    /// The stream beneath (the harness's pipe, for its client side).
    #[cfg(any(test, feature = "harness"))]
    pub(crate) fn inner_mut(&mut self) -> &mut T {
        &mut self.sock
    }

    /// Writes the records rustls holds until it holds none, or the socket would block.
    fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes in what rustls read; a protocol error is answered (an alert, or a 400 to plain
    /// HTTP) and ends the session.
    fn process(&mut self) -> io::Result<()> {
        match self.tls.process_new_packets() {
            Ok(_) => {
                if self.state == Handshake::Running && !self.tls.is_handshaking() {
                    self.handshake_done();
                }
                // Handshake messages, key updates: out now if the socket takes them (the
                // rest when it is writable).
                match self.push() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(()),
                }
            }
            Err(error) => {
                let plain = self.state == Handshake::Running && self.first_byte.is_some_and(|b| b.is_ascii_uppercase());
                if plain {
                    // Nothing of TLS was said: answer in the client's language.
                    let answer =
                        if self.plain_head { &PLAIN_HTTP_ANSWER[..PLAIN_HTTP_HEAD_LENGTH] } else { PLAIN_HTTP_ANSWER };
                    let _ = self.sock.write(answer);
                } else {
                    // The alert rustls queued.
                    let _ = self.push();
                }
                if self.state == Handshake::Running {
                    self.state = Handshake::Failed;
                    self.stats.stats.failed(if plain { Failure::PlainHttp } else { Failure::of(&error) });
                }
                log::debug!("TLS: {error}");
                Err(io::Error::new(io::ErrorKind::InvalidData, error))
            }
        }
    }

    #[cold]
    fn handshake_done(&mut self) {
        self.state = Handshake::Done;
        let version = match self.tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "other",
        };
        let cipher = self.tls.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("other");
        self.stats.stats.done(version, cipher);
        self.info = Some(Arc::new(TlsInfo {
            version,
            cipher,
            alpn: self.tls.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            sni: self.tls.server_name().map(str::to_owned),
        }));
    }

    /// Sends `close_notify` (once), as far as the socket takes it now.
    fn notify(&mut self) {
        if self.notified || self.state != Handshake::Done {
            return;
        }
        self.notified = true;
        self.tls.send_close_notify();
        if self.push().is_ok() {
            self.stats.stats.close_notify.fetch_add(1, Relaxed);
        }
    }
}

impl<T: Transport> Read for TlsStream<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // Data, or the client's close_notify (0).
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The client closed without close_notify: an end of stream like any other
                // (HTTP's own framing says whether a request was whole).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.state == Handshake::Failed {
                return Err(io::ErrorKind::InvalidData.into());
            }
            let mut probe = Probe {
                sock: &mut self.sock,
                short: &mut self.socket_short,
                first: &mut self.first_byte,
                head: &mut self.plain_head,
            };
            match self.tls.read_tls(&mut probe) {
                Ok(0) => {
                    // The end of the TCP stream: whatever rustls holds is all there is.
                    self.process()?;
                    return match self.tls.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                        Err(e) => Err(e),
                    };
                }
                Ok(_) => self.process()?,
                Err(e) => return Err(e),
            }
        }
    }
}

impl<T: Transport> Write for TlsStream<T> {
    /// Takes plaintext only while rustls holds no records the socket refused: output waits in
    /// the connection's buffer, where the write timer and the high-water mark see it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.state == Handshake::Failed {
            return Err(io::ErrorKind::InvalidData.into());
        }
        self.push()?;
        let n = self.tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.state {
            Handshake::Failed => Ok(()),
            _ => self.push(),
        }
    }
}

impl<T: Transport> Transport for TlsStream<T> {
    const TLS: bool = true;

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.notify();
        self.sock.shutdown_write()
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.sock.set_nodelay()
    }

    fn reset_on_close(&self) -> io::Result<()> {
        self.sock.reset_on_close()
    }

    /// The TCP bytes the client took: records, not plaintext, so the access log is not
    /// credited with them (`false`); the write timer only asks whether the count moved.
    fn counted(&self) -> Option<(u64, bool)> {
        self.sock.counted().map(|(taken, _)| (taken, false))
    }

    fn drained_by_short_read(&self) -> bool {
        self.socket_short
    }

    fn handshaking(&self) -> bool {
        self.state == Handshake::Running
    }

    /// Never after a failed handshake: its alert went out at once, or (to a client that sent
    /// plain HTTP) never does.
    fn holds_output(&self) -> bool {
        self.state != Handshake::Failed && self.tls.wants_write()
    }

    fn tls_info(&self) -> Option<&Arc<TlsInfo>> {
        self.info.as_ref()
    }

    fn on_close(&mut self, reason: CloseReason) {
        match self.state {
            Handshake::Running => {
                self.state = Handshake::Failed;
                self.stats.stats.failed(match reason {
                    CloseReason::HandshakeTimeout | CloseReason::IdleTimeout => Failure::Timeout,
                    CloseReason::Drain | CloseReason::Shutdown => Failure::Shutdown,
                    CloseReason::PeerClosed | CloseReason::Done | CloseReason::Io(_) => Failure::Closed,
                    _ => Failure::Other,
                });
            }
            // A clean end: the client learns that nothing was cut. After a cut (a timeout, the
            // shutdown, a dropped stream) it must not be told so.
            Handshake::Done
                if matches!(
                    reason,
                    CloseReason::Done | CloseReason::Drain | CloseReason::IdleTimeout | CloseReason::PeerClosed
                ) =>
            {
                self.notify()
            }
            _ => {}
        }
    }
}

/// Why a certificate and key could not be loaded.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    Pem {
        /// The file.
        path: String,
        /// What was wrong with it.
        error: String,
    },
    /// The certificate file holds no certificate.
    NoCertificate(String),
    /// rustls refused the pair (the key does not match the certificate, an unsupported key).
    Refused(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, error } => write!(f, "{path}: {error}"),
            TlsError::NoCertificate(path) => write!(f, "{path}: no certificate in it"),
            TlsError::Refused(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                f.write_str("the certificate and key were refused: the private key does not match the certificate")
            }
            TlsError::Refused(e) => write!(f, "the certificate and key were refused: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A configuration loaded from PEM files, and what a caller may want to warn about.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration, for [`TlsConfig::new`] or [`TlsConfig::swap`].
    pub config: Arc<rustls::ServerConfig>,
    /// When the end-entity certificate expires, if its validity could be read.
    pub not_after: Option<SystemTime>,
    /// Certificates in the chain.
    pub chain: usize,
}

impl Loaded {
    /// Whether the certificate has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.not_after.is_some_and(|at| at < now)
    }
}

/// Loads a certificate chain (PEM, the server's certificate first) and its private key (PEM:
/// PKCS#8, RSA or SEC1 EC) into a configuration for TLS 1.3 and 1.2 with rustls' default
/// (safe) cipher suites, offering ALPN `http/1.1`. With `resumption` off, the server neither
/// sends tickets nor keeps sessions: every connection makes a full handshake.
pub fn load_pem(cert: &Path, key: &Path, resumption: bool) -> Result<Loaded, TlsError> {
    let pem_error = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.display().to_string(),
        error: match e {
            rustls::pki_types::pem::Error::Io(e) => e.to_string(),
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind in it".to_string(),
            other => format!("{other:?}"),
        },
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let not_after = not_after(&chain[0]);
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let count = chain.len();
    let config = server_config(chain, key, resumption).map_err(TlsError::Refused)?;
    Ok(Loaded { config: Arc::new(config), not_after, chain: count })
}

/// The configuration [`load_pem`] makes, from a chain and key already parsed.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    resumption: bool,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // AES-128-GCM before AES-256-GCM before ChaCha20-Poly1305, in each version.
    provider.cipher_suites.sort_by_key(|suite| {
        let name = suite.suite().as_str().unwrap_or("");
        (!name.contains("AES_128"), !name.contains("AES_256"))
    });
    let provider = Arc::new(provider);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's order decides (testssl.sh asks for it): rustls' suites are all AEAD with
    // forward secrecy, and of them AES-128-GCM first, the cheapest on hardware with AES
    // instructions (the order set above).
    config.ignore_client_order = true;
    if !resumption {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(config)
}

/// The end of a certificate's validity (its `notAfter`), read from the DER: TBSCertificate's
/// fifth or sixth element (after an optional version). rustls does not expose it, and it is
/// only needed to warn.
fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (certificate, _) = der(cert.as_ref(), 0x30)?;
    let (tbs, _) = der(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest, 0xa0)?.1; // version
    }
    rest = der(rest, 0x02)?.1; // serial
    rest = der(rest, 0x30)?.1; // signature algorithm
    rest = der(rest, 0x30)?.1; // issuer
    let (validity, _) = der(rest, 0x30)?;
    let (_, not_before_rest) = der_any(validity)?;
    let tag = *not_before_rest.first()?;
    let (time, _) = der(not_before_rest, tag)?;
    parse_time(time, tag)
}

/// The contents of a DER element of type `tag` at the start of `input`, and what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let (contents, rest) = der_any(input)?;
    Some((contents, rest))
}

/// The contents of the DER element at the start of `input` (any type), and what follows it.
fn der_any(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for &b in input.get(2..2 + n)? {
            len = (len << 8) | b as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// UTCTime (0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`).
fn parse_time(text: &[u8], tag: u8) -> Option<SystemTime> {
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
    };
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| rest.get(i..i + 2).and_then(digits));
    let (month, day) = (month?, day?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days since 1970-01-01 (the civil-from-days algorithm, run backwards).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let secs = days * 86_400 + hour? * 3600 + minute? * 60 + second?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A configuration with the test certificate of `tests/tls` (for `localhost`, made by a test
/// CA), built in: for the in-memory harness and the tests.
#[doc(hidden)]
pub fn test_config() -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(include_bytes!("../tests/tls/a.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../tests/tls/a.key"));
    match key.map_err(|e| rustls::Error::General(format!("{e:?}"))).and_then(|key| server_config(chain, key, true)) {
        Ok(config) => Arc::new(config),
        Err(e) => panic!("the built-in test certificate: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Pipe;
    use rustls::pki_types::ServerName;

    /// A client of the test CA, offering X25519 only (a short ClientHello).
    fn client() -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(include_bytes!("../tests/tls/ca.pem")) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
    }

    /// What the client has to send.
    fn flight(client: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Hands `bytes` to the server in pieces cut at `cuts`, reading after each as the
    /// connection does; returns the plaintext read.
    fn deliver(server: &mut TlsStream<Pipe>, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut plain = Vec::new();
        let mut from = 0;
        let mut buf = [0u8; 4096];
        for &to in cuts.iter().chain([&bytes.len()]) {
            let to = to.clamp(from, bytes.len());
            server.inner_mut().input.extend_from_slice(&bytes[from..to]);
            from = to;
            loop {
                match server.read(&mut buf) {
                    Ok(0) => panic!("an end of stream"),
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        plain
    }

    /// One handshake and request with the client's bytes cut at `cut` (both flights), or at
    /// every byte; returns the request as the server read it.
    fn session(cut: Option<usize>) -> Vec<u8> {
        let tls = TlsConfig::new(test_config());
        let Ok(mut server) = tls.accept(Pipe::default()) else { panic!("a session") };
        let mut client = client();
        let cuts = |len: usize| -> Vec<usize> {
            match cut {
                Some(at) => vec![at % (len + 1)],
                None => (1..len).collect(),
            }
        };
        let hello = flight(&mut client);
        assert!(deliver(&mut server, &hello, &cuts(hello.len())).is_empty());
        let answer = std::mem::take(&mut server.inner_mut().output);
        client.read_tls(&mut &answer[..]).unwrap();
        client.process_new_packets().unwrap();
        client.writer().write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let finished = flight(&mut client);
        let plain = deliver(&mut server, &finished, &cuts(finished.len()));
        assert!(!server.handshaking());
        plain
    }

    #[test]
    fn records_cut_anywhere_read_the_same() {
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        assert_eq!(session(None), request, "every byte alone");
        // Every cut of the ClientHello (and the same offset into the client's second flight).
        let hello = flight(&mut client()).len();
        for at in 0..=hello {
            assert_eq!(session(Some(at)), request, "cut at {at}");
        }
    }

    #[test]
    fn garbage_never_panics_and_ends() {
        let mut data = vec![5u8, 0x16, 0x03, 0x01, 0x00, 0xff];
        data.extend((0..200u8).flat_map(|i| [3, i, i.wrapping_mul(7), 0x17]));
        crate::harness::tls_read(&data);
        crate::harness::tls_read(&[]);
        crate::harness::tls_read(&[4, b'G', b'E', b'T', b' ']);
    }

    #[test]
    fn reads_both_time_forms() {
        let utc = parse_time(b"270101000000Z", 0x17).unwrap();
        assert_eq!(utc.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_798_761_600);
        let general = parse_time(b"20270101000000Z", 0x18).unwrap();
        assert_eq!(utc, general);
        assert_eq!(parse_time(b"700101000000Z", 0x17), Some(SystemTime::UNIX_EPOCH));
        assert!(parse_time(b"2713010000Z", 0x17).is_none());
    }

    #[test]
    fn der_lengths_are_bounded() {
        assert!(der_any(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(der_any(&[0x30, 0x05, 1]).is_none());
        assert_eq!(der_any(&[0x30, 0x01, 7, 9]), Some((&[7u8][..], &[9u8][..])));
    }
}
