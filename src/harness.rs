//! An in-memory driver for one `Connection`: the fuzz targets, the benchmarks and the
//! allocation test push bytes through the real state machine with no socket and no `Poll`, and
//! with a clock they control. Not a stable API: hidden from the docs, and public only with the
//! `harness` feature. Without it, only what [`TestClient`](crate::testing::TestClient) runs on
//! is compiled (the connection, its pipe and the steps the client takes).

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::config::ServerConfig;
#[cfg(feature = "harness")]
use crate::connection::Draining;
use crate::connection::{Connection, Env, Transport};
use crate::counters::ConnState;
use crate::handler::Handler;
#[cfg(feature = "harness")]
use crate::http::{
    body::BodyDecoder,
    head::{BodyKind, HeadLimits, HeadScan, HeadStep, whole_head_len},
};
use crate::responder::{Letter, LoopThread, Mailbox};
use crate::shutdown::DrainNotice;
use crate::timer::Tick;
use std::sync::Arc;

/// The client side of an in-memory connection: bytes waiting to be read by the server, bytes it
/// wrote, whether the client closed its side, and how much the server may write per call.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    pub(crate) input: Vec<u8>,
    read_pos: usize,
    pub(crate) eof: bool,
    pub(crate) output: Vec<u8>,
    /// Most bytes one `write` accepts; `Some(0)` means the client stopped reading.
    write_limit: Option<usize>,
    shut_write: Cell<bool>,
    /// The server asked for its close to be a reset.
    reset: Cell<bool>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.read_pos..];
        if rest.is_empty() {
            return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read_pos += n;
        if self.read_pos == self.input.len() {
            self.input.clear();
            self.read_pos = 0;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.shut_write.get() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = self.write_limit.map_or(buf.len(), |limit| limit.min(buf.len()));
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Pipe {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut_write.set(true);
        Ok(())
    }

    fn set_nodelay(&self) -> io::Result<()> {
        Ok(())
    }

    fn reset_on_close(&self) -> io::Result<()> {
        self.reset.set(true);
        Ok(())
    }

    /// What the client took: everything the server wrote (it reads all it is given).
    fn counted(&self) -> Option<(u64, bool)> {
        Some((self.output.len() as u64, true))
    }
}

/// One connection of the real state machine over an in-memory pipe, with a manual clock.
pub struct MemoryConnection {
    conn: Connection<Pipe>,
    /// The connection's id (a new one for each [`MemoryConnection::reconnect`]).
    id: u64,
    env: Env,
    /// Owns the waker responders wake: the mailbox is read after every step, and
    /// [`MemoryConnection::wait_for_letters`] polls it.
    poll: mio::Poll,
    events: mio::Events,
    letters: Vec<Letter>,
}

/// The address the in-memory client has.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1);

impl MemoryConnection {
    /// A freshly accepted connection served by `handler`.
    pub fn new(config: ServerConfig, handler: impl Handler + Send + 'static) -> Self {
        let now = Tick::now();
        let poll = mio::Poll::new().expect("a poll for the harness's waker");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("a waker for the harness");
        let mailbox = Arc::new(Mailbox::new(Arc::new(waker)));
        // The handler runs on the caller's thread, as it would on the server's.
        LoopThread::mark();
        MemoryConnection {
            conn: Connection::new(Pipe::default(), 0, 1, PEER, now),
            id: 1,
            env: Env::new(config, Box::new(handler), now, mailbox, DrainNotice::new()),
            poll,
            events: mio::Events::with_capacity(4),
            letters: Vec::new(),
        }
    }

    /// The client connects again: a new connection (the next id) in place of this one, which
    /// is let go of as the server lets go of a closed one (its producers hear it is gone).
    pub fn reconnect(&mut self) {
        if !self.is_closed() {
            // The client left: as the server sees a reset.
            self.conn.lost(io::ErrorKind::ConnectionReset);
        }
        if self.env.logs.access.is_some() {
            self.conn.record_close(self.env.turn, &mut self.env.logs);
            self.env.logs.end_access_turn();
        }
        self.id += 1;
        self.conn = Connection::new(Pipe::default(), 0, self.id, PEER, self.env.turn.now);
    }

    /// Waits at most `timeout` for a responder (on another thread) to post news, then delivers
    /// it. Returns whether news came.
    pub fn wait_for_letters(&mut self, timeout: Duration) -> bool {
        if !self.env.service.mailbox.has_letters() {
            match self.poll.poll(&mut self.events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("the harness's poll failed: {e}"),
            }
        }
        let news = self.env.service.mailbox.has_letters();
        self.drive();
        news
    }

    /// How long until the connection's next deadline on its clock (zero if it passed), if it
    /// has one.
    pub fn until_deadline(&self) -> Option<Duration> {
        let at = self.conn.deadline(&self.env.config, self.env.turn.draining)?;
        Some(self.env.turn.now.until(at))
    }

    /// Renders error responses with `render` (see [`Server::set_error_renderer`](crate::Server::set_error_renderer)).
    pub fn set_error_renderer(
        &mut self,
        render: impl Fn(&crate::ErrorInfo<'_>, &mut crate::Response) + Send + Sync + 'static,
    ) {
        self.env.service.errors = crate::errors::Renderer::new(render);
    }

    /// Makes this connection's error renderer the one a handler's `Response::set_error` uses
    /// on this thread, until the guard drops.
    pub(crate) fn enter_renderer(&self) -> crate::errors::CurrentRenderer {
        self.env.service.errors.enter()
    }

    /// The client sends `bytes`; the server reads and answers what it can.
    pub fn send(&mut self, bytes: &[u8]) {
        let pipe = self.conn.stream_mut();
        if !pipe.eof {
            pipe.input.extend_from_slice(bytes);
        }
        self.conn.on_ready(true, false, false);
        self.drive();
    }

    /// The client shuts down its write side.
    #[cfg(feature = "harness")]
    pub fn send_eof(&mut self) {
        self.conn.stream_mut().eof = true;
        self.conn.on_ready(true, false, true);
        self.drive();
    }

    /// How many bytes each server `write` may take (`None`: all; `Some(0)`: the client stopped
    /// reading). Raising it lets the server write again.
    #[cfg(feature = "harness")]
    pub fn set_write_limit(&mut self, limit: Option<usize>) {
        self.conn.stream_mut().write_limit = limit;
        self.conn.on_ready(false, true, false);
        self.drive();
    }

    /// Moves the clock on by `by`, firing each deadline on the way at its time (as the server's
    /// heap does), and drives the connection.
    pub fn advance(&mut self, by: Duration) {
        let target = self.env.turn.now.after(by);
        // A bounded number of steps: a deadline that does not move on (a last call while input
        // waits) is fired once more at the target.
        for _ in 0..8 {
            match self.conn.deadline(&self.env.config, self.env.turn.draining) {
                Some(at) if at < target => {
                    self.env.turn.now = self.env.turn.now.max(at);
                    self.conn.expire(&mut self.env);
                    self.drive();
                }
                _ => break,
            }
        }
        self.env.turn.now = target;
        if self.conn.deadline(&self.env.config, self.env.turn.draining).is_some_and(|d| d <= self.env.turn.now) {
            self.conn.expire(&mut self.env);
        }
        self.drive();
    }

    /// Delivers what responders (on any thread) posted since the last step, and drives the
    /// connection: what the server does when its waker fires.
    #[cfg(feature = "harness")]
    pub fn deliver(&mut self) {
        self.drive();
    }

    /// Starts a graceful drain, as the server does for each connection.
    #[cfg(feature = "harness")]
    pub fn begin_drain(&mut self) {
        self.env.turn.draining = Draining::Now;
        self.env.service.drain.begin();
        self.conn.drain(self.env.turn, &self.env.config, true);
        self.drive();
    }

    /// Records every answered request in `log`, as [`Server::set_access_log`](crate::Server::set_access_log).
    #[cfg(feature = "harness")]
    pub fn set_access_log(&mut self, log: impl crate::AccessLog + 'static) {
        self.env.logs.access = Some(Box::new(log));
    }

    /// Everything the server has written so far.
    pub fn output(&self) -> &[u8] {
        &self.conn.stream().output
    }

    /// Takes what the server has written so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.conn.stream_mut().output)
    }

    /// Clears what the server has written, keeping the allocation (for allocation counting).
    #[cfg(feature = "harness")]
    pub fn clear_output(&mut self) {
        self.conn.stream_mut().output.clear();
    }

    /// The lifecycle state.
    #[cfg(feature = "harness")]
    pub fn state(&self) -> ConnState {
        self.conn.state()
    }

    /// True once the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.conn.state() == ConnState::Closed
    }

    /// True once the drain closed the connection while it was idle (without reading more).
    #[cfg(feature = "harness")]
    pub fn closed_by_drain(&self) -> bool {
        self.conn.close_reason() == Some(crate::connection::CloseReason::Drain)
    }

    /// True once the server has shut down its write side or closed.
    pub fn write_shut(&self) -> bool {
        self.conn.stream().shut_write.get() || self.is_closed()
    }

    /// True once the server has closed with a reset (the client's read fails: what it got is
    /// incomplete), not a FIN.
    pub fn was_reset(&self) -> bool {
        self.conn.stream().reset.get() && self.is_closed()
    }

    fn drive(&mut self) {
        self.conn.on_ready(false, true, false);
        while self.conn.drive(&mut self.env) {}
        if self.env.service.mailbox.has_letters() {
            self.deliver_letters();
        }
        if self.env.logs.access.is_some() {
            self.end_access_turn();
        }
    }

    /// What the server does for the access log after a turn, and as it lets go of a closed
    /// connection.
    #[cold]
    fn end_access_turn(&mut self) {
        if self.is_closed() {
            self.conn.record_close(self.env.turn, &mut self.env.logs);
        }
        self.env.logs.end_access_turn();
    }

    /// Letters for this connection (key 0, its id), delivered as the loop delivers them, until
    /// none come.
    #[cold]
    fn deliver_letters(&mut self) {
        while self.env.service.mailbox.has_letters() {
            self.env.service.mailbox.take(&mut self.letters);
            let this = Letter { key: 0, id: self.id };
            if !self.letters.drain(..).any(|letter| letter == this) {
                return;
            }
            self.conn.on_mail();
            while self.conn.drive(&mut self.env) {}
        }
    }
}

#[cfg(feature = "harness")]
/// The limits the harness reads heads with: the server's defaults, with `max_headers`.
#[cfg(feature = "harness")]
fn limits(max_headers: usize) -> HeadLimits {
    let config = ServerConfig::DEFAULT;
    HeadLimits { max_head_bytes: config.max_head_bytes, max_uri_bytes: config.max_uri_bytes, max_headers }
}

/// Limits a head is read with, for the `_within` functions (the server takes them from
/// [`ServerConfig`]).
#[cfg(feature = "harness")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most header fields (431 above).
    pub max_headers: usize,
    /// Longest request target (414 above).
    pub max_uri_bytes: usize,
    /// Largest head (431 above).
    pub max_head_bytes: usize,
}

#[cfg(feature = "harness")]
impl From<Limits> for HeadLimits {
    fn from(l: Limits) -> HeadLimits {
        HeadLimits { max_head_bytes: l.max_head_bytes, max_uri_bytes: l.max_uri_bytes, max_headers: l.max_headers }
    }
}

/// Reads `data` as a request head the careful way (the server's `HeadScan`, without its
/// attempt to parse a head that arrived whole), with at most `max_headers` fields and the
/// server's default limits, after the empty lines the connection skips before a request. Returns
/// the length of both together, or the status the server answers; a head that is not complete
/// in `data` is a 400, as at the end of a connection.
#[cfg(feature = "harness")]
pub fn parse_request_head(data: &[u8], max_headers: usize) -> Result<usize, u16> {
    careful(data, limits(max_headers))
}

/// [`parse_request_head`] under `limits`.
#[cfg(feature = "harness")]
pub fn parse_request_head_within(data: &[u8], limits: Limits) -> Result<usize, u16> {
    careful(data, limits.into())
}

#[cfg(feature = "harness")]
fn careful(data: &[u8], limits: HeadLimits) -> Result<usize, u16> {
    let mut data = data.to_vec();
    match HeadScan::default().next_careful(&mut data, limits, |_, _| ()) {
        (skip, HeadStep::Complete(info, ())) => Ok(skip + info.len),
        (_, HeadStep::Failed(e)) => Err(e.status()),
        (_, HeadStep::Empty | HeadStep::Partial) => Err(400),
    }
}

/// The connection's fast path: `data` (a head, maybe followed by more) parsed at once, without
/// first searching for the head's end. The head's length when that parse is complete and valid;
/// `None` when the head is incomplete or invalid, and the connection takes the careful path
/// ([`parse_request_head`]) instead. Whenever this says `Some(len)`, the careful path must say
/// `Ok(len)`.
#[cfg(feature = "harness")]
pub fn parse_request_prefix(data: &[u8], max_headers: usize) -> Option<usize> {
    whole_head_len(data, limits(max_headers))
}

/// [`parse_request_prefix`] under `limits`.
#[cfg(feature = "harness")]
pub fn parse_request_prefix_within(data: &[u8], limits: Limits) -> Option<usize> {
    whole_head_len(data, limits.into())
}

/// Decodes the chunked body at the start of `data` in place, as the connection does, feeding it
/// in the pieces `splits` gives (each a length; the rest goes last). Returns the decoded body,
/// `Ok(None)` when it is incomplete, or the status the server would answer.
#[cfg(feature = "harness")]
pub fn decode_chunked(data: &[u8], splits: &[usize], max_body_bytes: u64) -> Result<Option<Vec<u8>>, u16> {
    let mut decoder = BodyDecoder::for_head(BodyKind::Chunked, max_body_bytes).map_err(|e| e.status())?;
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut pieces = splits.iter().copied();
    loop {
        let take = pieces.next().unwrap_or(usize::MAX).min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + take]);
        fed += take;
        match decoder.advance(&mut buf, 0) {
            Ok(Some(len)) => return Ok(Some(buf[..len].to_vec())),
            Ok(None) if fed == data.len() => return Ok(None),
            Ok(None) => {}
            Err(e) => return Err(e.status()),
        }
    }
}

/// The TLS read side, for fuzzing: `data` is split into chunks (each chunk's length is its
/// first byte, then that many bytes), handed one by one to a server's TLS session as what its
/// client sent, and read after each as the connection reads. Whatever the bytes, this ends (a
/// protocol error, or all of them taken) and never panics; a client's plaintext comes out only
/// after a handshake completed.
#[cfg(all(feature = "harness", feature = "tls"))]
pub fn tls_read(data: &[u8]) {
    use std::sync::OnceLock;
    static CONFIG: OnceLock<crate::tls::TlsConfig> = OnceLock::new();
    let tls = CONFIG.get_or_init(|| crate::tls::TlsConfig::new(crate::tls::test_config()));
    let Ok(mut stream) = tls.accept(Pipe::default()) else { return };
    let mut rest = data;
    let mut buf = [0u8; 4096];
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        stream.inner_mut().input.extend_from_slice(chunk);
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => assert!(!stream.handshaking(), "plaintext before the handshake ended"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        // What the server answered is taken by the client (a client that reads).
        stream.inner_mut().output.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Response;
    use crate::app::App;
    use crate::counters::ConnState;

    #[test]
    fn serves_split_and_pipelined_requests_then_closes() {
        let mut conn = MemoryConnection::new(ServerConfig::default(), App::default());
        let two = b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        for byte in two.chunks(1) {
            conn.send(byte);
        }
        let out = String::from_utf8(conn.take_output()).unwrap();
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{out}");
        assert!(out.ends_with("Hello, World!"), "{out}");
        assert!(conn.write_shut());
        conn.send_eof();
        assert!(conn.is_closed());
    }

    /// A head of exactly `len` bytes, then a pipelined request.
    fn head_of(len: usize) -> Vec<u8> {
        let start = "GET /plaintext HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let mut head = format!("{start}{}\r\n\r\n", "p".repeat(len - start.len() - 4)).into_bytes();
        assert_eq!(head.len(), len);
        head.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n");
        head
    }

    #[test]
    fn head_limit_is_exact_whole_or_in_pieces() {
        let config = ServerConfig { max_head_bytes: 256, ..ServerConfig::default() };
        // Whole (one read, with the next request behind it), and in two or many pieces.
        for pieces in [1, 2, 100, usize::MAX] {
            for (len, served) in [(256, 2), (257, 0)] {
                let mut conn = MemoryConnection::new(config.clone(), App::default());
                let data = head_of(len);
                for piece in data.chunks(data.len().div_ceil(pieces.min(data.len()))) {
                    conn.send(piece);
                }
                let out = String::from_utf8(conn.take_output()).unwrap();
                assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), served, "{len} bytes in {pieces}: {out}");
                assert_eq!(out.starts_with("HTTP/1.1 431 "), served == 0, "{len} bytes in {pieces}: {out}");
            }
        }
    }

    /// A 408 answering a HEAD has no body (RFC 9110 §9.3.2), whether the head itself stalled
    /// (the method known from the request line's first bytes) or the body did (known from the
    /// head); the framing fields are those a GET's 408 gets.
    #[test]
    fn a_timeout_answering_head_sends_the_head_alone() {
        let config = ServerConfig::default();
        for (stalled, what) in [
            (&b"HEAD /plaintext HTTP/1.1\r\nHost: a\r\n"[..], "a head cut short"),
            (&b"HEAD /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe"[..], "a body cut short"),
        ] {
            let mut conn = MemoryConnection::new(config.clone(), App::default());
            conn.send(stalled);
            conn.advance(config.header_timeout + Duration::from_secs(1));
            let out = String::from_utf8(conn.take_output()).unwrap();
            assert!(out.starts_with("HTTP/1.1 408 "), "{what}: {out}");
            assert!(out.contains("\r\nContent-Length: "), "{what}: {out}");
            assert!(out.ends_with("\r\n\r\n"), "{what}: the 408 to a HEAD must end with its head: {out:?}");
            let get = [b"GET".as_slice(), &stalled[4..]].concat();
            let mut conn = MemoryConnection::new(config.clone(), App::default());
            conn.send(&get);
            conn.advance(config.header_timeout + Duration::from_secs(1));
            let out = String::from_utf8(conn.take_output()).unwrap();
            assert!(out.starts_with("HTTP/1.1 408 ") && !out.ends_with("\r\n\r\n"), "{what}, GET: {out:?}");
        }
    }

    /// A stream that declared a length and answers a HEAD (or has a status without a body)
    /// finishes cleanly with nothing sent, even inside the handler, before the loop took its
    /// head: its response has no body to fall short of. The same stream for GET is short.
    #[test]
    fn a_sized_stream_without_a_body_finishes_cleanly() {
        use crate::{Reply, Request, StreamError};
        for (request, status, short) in [
            (&b"HEAD /d HTTP/1.1\r\nHost: a\r\n\r\n"[..], 200, false),
            (&b"GET /d HTTP/1.1\r\nHost: a\r\n\r\n"[..], 204, false),
            (&b"GET /d HTTP/1.1\r\nHost: a\r\n\r\n"[..], 200, true),
        ] {
            let (tx, rx) = std::sync::mpsc::channel();
            let handler = move |_: &Request<'_>, res: &mut Response| {
                let responder = res.defer();
                let mut head = Response::new();
                head.set_status(status);
                let finished = responder.stream_sized(head, 10).map(|stream| stream.finish());
                tx.send(finished).unwrap();
                Reply::Later
            };
            let mut conn = MemoryConnection::new(ServerConfig::default(), handler);
            conn.send(request);
            let finished = rx.recv().unwrap().expect("the stream started");
            let out = String::from_utf8(conn.take_output()).unwrap();
            if short {
                assert_eq!(finished, Err(StreamError::Short { declared: 10, sent: 0 }), "{out}");
            } else {
                assert_eq!(finished, Ok(()), "status {status}: {out}");
                assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
                assert!(out.ends_with("\r\n\r\n"), "the head alone: {out:?}");
                assert!(!conn.is_closed(), "a complete answer keeps the connection: {out}");
            }
        }
    }

    /// A handler that defers every request and hands the responders to the test.
    fn deferring() -> (MemoryConnection, std::sync::mpsc::Receiver<crate::Responder>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let handler = move |_: &crate::Request<'_>, res: &mut Response| {
            tx.send(res.defer()).unwrap();
            crate::Reply::Later
        };
        (MemoryConnection::new(ServerConfig::default(), handler), rx)
    }

    #[test]
    fn the_write_timeout_drops_a_stream_whose_client_reads_nothing() {
        let (mut conn, responders) = deferring();
        conn.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut stream = responders.recv().unwrap().stream(Response::new()).unwrap();
        conn.deliver();
        assert!(conn.output().starts_with(b"HTTP/1.1 200 OK\r\n"));
        // The client stops reading; the producer fills what the server may hold.
        conn.set_write_limit(Some(0));
        let piece = [b'x'; 4096];
        let mut taken = 0;
        while stream.try_send(&piece).is_ok() {
            taken += piece.len();
            conn.deliver();
            assert!(taken < 1 << 20, "the stream never filled up: no back-pressure");
        }
        assert!(!conn.is_closed());
        conn.advance(Duration::from_secs(29));
        assert!(!conn.is_closed(), "dropped before the write timeout");
        conn.advance(Duration::from_secs(2));
        assert!(conn.is_closed(), "a client that reads nothing holds the stream open");
        assert!(stream.is_closed());
        assert_eq!(stream.try_send(b"more"), Err(crate::TrySendError::Gone));
    }

    /// A stream whose head went out before the drain ends during it: the connection was not
    /// told it would close, so a request on its way (a proxy reusing the connection) is read
    /// and answered, with `Connection: close`, during a last call.
    #[test]
    fn a_connection_that_goes_idle_during_the_drain_gets_a_last_call() {
        for late in [false, true] {
            let (mut conn, responders) = deferring();
            conn.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
            let stream = responders.recv().unwrap().stream(Response::new()).unwrap();
            conn.deliver();
            conn.begin_drain();
            assert_eq!(conn.state(), ConnState::Active, "a stream is in flight");
            stream.finish().unwrap();
            conn.deliver();
            assert!(conn.take_output().ends_with(b"0\r\n\r\n"), "the stream ends cleanly");
            assert_eq!(conn.state(), ConnState::Idle, "idle, and not told to close");
            assert!(!conn.write_shut());
            if late {
                // Nothing came within the last call: closed, nothing read.
                conn.advance(ServerConfig::DEFAULT.drain_idle_grace);
                assert!(conn.is_closed(), "still open after its last call");
                continue;
            }
            conn.advance(ServerConfig::DEFAULT.drain_idle_grace / 2);
            assert!(!conn.is_closed(), "closed within its last call");
            conn.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
            let answer = responders.recv().unwrap();
            answer.send(Response::new()).unwrap();
            conn.deliver();
            let out = String::from_utf8(conn.take_output()).unwrap();
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.contains("\r\nConnection: close\r\n"), "the answer tells the client: {out}");
            assert!(conn.write_shut(), "closing after the told answer");
        }
    }

    #[test]
    fn header_timeout_answers_408() {
        let mut conn = MemoryConnection::new(ServerConfig::default(), App::default());
        conn.send(b"GET / HTTP/1.1\r\n");
        conn.advance(Duration::from_secs(11));
        assert!(conn.output().starts_with(b"HTTP/1.1 408 "));
    }

    #[test]
    fn chunked_in_pieces() {
        let body = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(decode_chunked(body, &[1, 1, 5, 2], 100), Ok(Some(b"abcde".to_vec())));
        assert_eq!(decode_chunked(b"3\r\nab", &[], 100), Ok(None));
        assert_eq!(decode_chunked(b"\r\n", &[], 100), Err(400));
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 100), Ok(27));
    }

    #[test]
    fn fast_path_agrees_with_the_careful_path() {
        let cases: [&[u8]; 7] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n",
            // Like the parse fuzzer's find (`\n\r\nS / HTTP/1.0\n\n`): empty lines before a request
            // are skipped by both paths.
            b"\r\n\r\nS / HTTP/1.0\n\n",
            b"GET / HTTP/1.1\nHost: a\n\nrest",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ];
        let fast: Vec<Option<usize>> = cases.iter().map(|c| parse_request_prefix(c, 100)).collect();
        // Whole and valid; whole with bare LFs; incomplete; HTTP/1.2 and the missing Host and the
        // obs-fold go the careful way (which serves the first and rejects the others).
        assert_eq!(fast, [Some(27), Some(18), Some(24), None, None, None, None]);
        for (case, fast) in cases.iter().zip(fast) {
            if let Some(len) = fast {
                assert_eq!(parse_request_head(case, 100), Ok(len));
            }
        }
    }
}
