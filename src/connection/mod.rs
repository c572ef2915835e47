//! One client connection: its buffers, what it is waiting for ([`Phase`]), and the lifecycle
//! state derived from that ([`ConnState`]). It reads, parses, calls the handler and writes; it
//! never sees the `Poll`. The server tells it when it may read or write (readiness flags), hands
//! it an [`Env`] for each turn, and asks it for its next deadline and its state afterwards.

pub(crate) mod buffer;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use log::{debug, error};

use crate::config::ServerConfig;
use crate::counters::{ConnState, Stats};
use crate::handler::{Handler, Reply};
use crate::http::chunked::{ChunkedDecoder, ChunkedError, ChunkedLimits};
use crate::http::error::{HTTPARSE_VERSION_ERROR, HttpError};
use crate::http::request::{
    BodyKind, HeadInfo, HeadLimits, REQUEST_LINE_OVERHEAD, Request, Version, find_head_end, header_slots,
    leading_empty_lines, normalize_version, parse_head, parse_head_prefix,
};
use crate::http::response::Response;
use buffer::{BufPool, ReadBuf, WriteBuf};

/// Stop parsing pipelined requests while this much output waits to be written.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Rounds of read / process / write per turn before yielding to other connections.
const ROUNDS_PER_TURN: usize = 4;
/// Room for chunked framing on top of the body limit in the read buffer.
const CHUNK_SLACK_BYTES: usize = 8 * 1024;
/// Chunk-size line limit (size and extensions).
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Trailer section limit.
const MAX_TRAILER_BYTES: usize = 8 * 1024;
/// Stand-in for "never" when a configured duration does not fit in an `Instant`.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `t + d`, saturating far in the future instead of panicking.
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(|| t + FAR)
}

/// The byte stream a connection runs over: a TCP stream, or an in-memory one in tests.
pub(crate) trait Transport: Read + Write {
    /// Shuts down the write side (sends FIN) so the client sees the end of the last response.
    fn shutdown_write(&self) -> io::Result<()>;
    /// Turns off Nagle's algorithm, so a response written while an earlier one is not yet
    /// acknowledged goes out at once.
    fn set_nodelay(&self) -> io::Result<()>;
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn set_nodelay(&self) -> io::Result<()> {
        mio::net::TcpStream::set_nodelay(self, true)
    }
}

/// What a connection needs from the server for one turn.
pub(crate) struct Env<'a> {
    /// The time this loop turn started.
    pub now: Instant,
    /// Limits and timeouts.
    pub config: &'a ServerConfig,
    /// The application.
    pub handler: &'a mut (dyn Handler + Send),
    /// The current `Date` value.
    pub date: &'a [u8; 29],
    /// True once a graceful drain has begun: each connection's last request is answered with
    /// `Connection: close`.
    pub draining: bool,
    /// True from the first shutdown request on, including the drain delay (what
    /// `Request::server_draining` tells the handler).
    pub shutting_down: bool,
    /// Counters of the loop.
    pub stats: &'a mut Stats,
    /// Free buffers.
    pub pool: &'a mut BufPool,
    /// The response the handler fills in, reused across requests.
    pub response: &'a mut Response,
}

/// Why a connection was closed (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its side and nothing was left to answer.
    PeerClosed,
    /// The last response went out and the client closed (or the linger time ran out).
    Done,
    /// A read or write failed (reset, broken pipe).
    Io(io::ErrorKind),
    /// Keep-alive connection unused for the idle timeout.
    IdleTimeout,
    /// The client stopped reading its response for the write timeout.
    WriteTimeout,
    /// Idle when the server drained.
    Drain,
    /// The server stopped (shutdown timeout or immediate stop).
    Shutdown,
}

/// What the connection is waiting for.
#[derive(Debug)]
enum Phase {
    /// Waiting for, or reading, a request head.
    Head,
    /// Head parsed; reading its body.
    Body(BodyProgress),
    /// The handler asked for a delay: the response waits in `Connection::delayed`.
    Waiting { until: Instant },
    /// The last response is queued: flush it, then shut down the write side.
    Closing,
    /// Write side shut: read and discard until the client closes or `until`.
    Linger { until: Instant },
    /// Done; the server removes it.
    Closed,
}

#[derive(Debug)]
struct BodyProgress {
    head: HeadInfo,
    framing: Framing,
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    /// Decoded bytes so far sit right after the head; framing is squeezed out as it is read.
    Chunked {
        decoder: ChunkedDecoder,
        decoded: usize,
    },
}

/// A response the handler asked to send later, with what it needs to be encoded then.
#[derive(Debug)]
struct Delayed {
    response: Response,
    head: HeadInfo,
}

/// One client connection.
pub(crate) struct Connection<S> {
    stream: S,
    /// Unique id for the hook and logs.
    pub(crate) id: u64,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Set by readiness events, cleared by `WouldBlock`.
    pub(crate) readable: bool,
    /// Set by readiness events, cleared by `WouldBlock`.
    pub(crate) writable: bool,
    /// The client has closed (or reset) its side: a short read is not proof the socket is drained.
    pub(crate) read_closed_hint: bool,
    /// Bookkeeping of the server: the state last reported to the counts and hook.
    pub(crate) reported: Option<ConnState>,
    /// Bookkeeping of the server: the deadline it has in its heap for this connection.
    pub(crate) scheduled: Option<Instant>,
    /// Bookkeeping of the server: whether the token is in the ready queue.
    pub(crate) queued: bool,
    /// A request began since the server last looked: it reports the connection Active even if
    /// the request was also answered within the same turn.
    pub(crate) activity: bool,
    phase: Phase,
    read_buf: ReadBuf,
    write_buf: WriteBuf,
    /// How far the search for the end of the current head got.
    scanned: usize,
    head_started: Option<Instant>,
    accepted_at: Instant,
    last_read: Instant,
    write_since: Instant,
    last_response_at: Option<Instant>,
    served: u64,
    peer_eof: bool,
    /// TCP_NODELAY is set: done once, when the connection first stays open after a response
    /// (a connection that serves one request and closes never needs it).
    nodelay: bool,
    /// After the last response, shut down the write side and read what the client still sends
    /// before closing (so unread input does not turn into a reset that destroys the response).
    /// Not needed when the client itself asked to close and sent nothing more.
    linger: bool,
    /// The last read found the socket empty (a short read, `WouldBlock` or end of stream), so
    /// no input waits unread in the kernel. A read capped by the buffer proves nothing.
    input_drained: bool,
    delayed: Option<Delayed>,
    drain_grace: Option<Instant>,
    close_reason: Option<CloseReason>,
}

/// How a connection is treated when a drain begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainRole {
    /// A request is in progress: it finishes.
    Finish,
    /// Idle for a while: closed at once (unless a request turns up before the next turn).
    CloseIdle,
    /// New, or idle since just now: a brief last call for a request on its way.
    LastCall,
    /// Already closed.
    Gone,
}

impl<S: Transport> Connection<S> {
    /// A connection just accepted.
    pub(crate) fn new(stream: S, id: u64, peer: SocketAddr, now: Instant) -> Self {
        Connection {
            stream,
            id,
            peer,
            readable: false,
            writable: false,
            read_closed_hint: false,
            reported: None,
            scheduled: None,
            queued: false,
            activity: false,
            phase: Phase::Head,
            read_buf: ReadBuf::default(),
            write_buf: WriteBuf::default(),
            scanned: 0,
            head_started: None,
            accepted_at: now,
            last_read: now,
            write_since: now,
            last_response_at: None,
            served: 0,
            peer_eof: false,
            nodelay: false,
            linger: true,
            input_drained: false,
            delayed: None,
            drain_grace: None,
            close_reason: None,
        }
    }

    /// The stream.
    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream (for registering and deregistering).
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The lifecycle state, derived from the phase and buffers.
    pub(crate) fn state(&self) -> ConnState {
        match self.phase {
            Phase::Closed => ConnState::Closed,
            Phase::Head if self.read_buf.is_empty() && self.write_buf.is_empty() => {
                if self.served == 0 {
                    ConnState::New
                } else {
                    ConnState::Idle
                }
            }
            _ => ConnState::Active,
        }
    }

    /// Why it closed, once closed.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// The next moment something must happen if no I/O arrives first.
    pub(crate) fn deadline(&self, config: &ServerConfig) -> Option<Instant> {
        let write = (!self.write_buf.is_empty()).then(|| after(self.write_since, config.write_timeout));
        let phase = match self.phase {
            Phase::Closed => return None,
            Phase::Linger { until } | Phase::Waiting { until } => Some(until),
            Phase::Body(_) => Some(after(self.last_read, config.header_timeout)),
            Phase::Closing => None,
            Phase::Head => match self.head_started {
                Some(started) => Some(after(started, config.header_timeout)),
                None if self.write_buf.is_empty() => {
                    let idle_since = self.last_response_at.unwrap_or(self.accepted_at);
                    let idle = after(idle_since, config.idle_timeout);
                    Some(self.drain_grace.map_or(idle, |grace| grace.min(idle)))
                }
                None => None,
            },
        };
        match (write, phase) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on a deadline that has passed: times out a slow head or body (408), a stuck write,
    /// an idle connection, a drain last call, or the end of lingering. Delayed responses are sent
    /// by the next [`Connection::drive`].
    pub(crate) fn expire(&mut self, env: &mut Env<'_>) {
        let (now, config) = (env.now, env.config);
        if !self.write_buf.is_empty() && after(self.write_since, config.write_timeout) <= now {
            self.close(CloseReason::WriteTimeout);
            return;
        }
        match self.phase {
            Phase::Linger { until } if until <= now => self.close(CloseReason::Done),
            Phase::Body(_) if after(self.last_read, config.header_timeout) <= now => {
                self.fail(HttpError::Timeout, env);
            }
            Phase::Head => match self.head_started {
                Some(started) if after(started, config.header_timeout) <= now => {
                    self.fail(HttpError::Timeout, env);
                }
                Some(_) => {}
                None if self.write_buf.is_empty() => {
                    let idle_since = self.last_response_at.unwrap_or(self.accepted_at);
                    if after(idle_since, config.idle_timeout) <= now {
                        self.close(CloseReason::IdleTimeout);
                    } else if self.drain_grace.is_some_and(|grace| grace <= now) && !self.readable {
                        self.close(CloseReason::Drain);
                    }
                }
                None => {}
            },
            _ => {}
        }
    }

    /// Applies the drain policy to this connection (see [`DrainRole`]).
    pub(crate) fn begin_drain(&mut self, now: Instant, config: &ServerConfig) -> DrainRole {
        match self.state() {
            ConnState::Closed => DrainRole::Gone,
            ConnState::Active => DrainRole::Finish,
            ConnState::New => {
                self.drain_grace = Some(after(now, config.drain_new_grace));
                DrainRole::LastCall
            }
            ConnState::Idle => {
                let recent = self.last_response_at.is_some_and(|at| now < after(at, config.drain_idle_grace));
                if recent {
                    self.drain_grace = Some(after(now, config.drain_idle_grace));
                    DrainRole::LastCall
                } else {
                    // Closed by the next turn's deadline pass, after one more look at the socket.
                    self.drain_grace = Some(now);
                    DrainRole::CloseIdle
                }
            }
        }
    }

    /// Closes the connection at once (shutdown timeout, immediate stop).
    pub(crate) fn abort(&mut self) {
        self.close(CloseReason::Shutdown);
    }

    /// Does all the work the connection can do now: read what is there, answer complete
    /// requests, write what is queued. Returns true when it stopped only because of the per-turn
    /// budget, so the server should come back to it in the next turn.
    pub(crate) fn drive(&mut self, env: &mut Env<'_>) -> bool {
        for _ in 0..ROUNDS_PER_TURN {
            let mut progress = false;
            if self.readable && !matches!(self.phase, Phase::Closed) {
                progress |= self.read(env);
            }
            progress |= self.process(env);
            if self.writable && !self.write_buf.is_empty() {
                progress |= self.flush(env);
            }
            progress |= self.after_flush(env);
            if env.draining && self.state() == ConnState::Idle && self.drain_grace.is_none_or(|g| g <= env.now) {
                // Went idle during a drain: nothing more will be served here.
                self.close(CloseReason::Drain);
            }
            if matches!(self.phase, Phase::Closed) || !progress {
                self.release_buffers(env.pool);
                return false;
            }
        }
        true
    }

    fn release_buffers(&mut self, pool: &mut BufPool) {
        self.read_buf.release(pool);
        self.write_buf.release(pool);
    }

    /// Largest amount of unconsumed input to hold in the current phase.
    fn read_cap(&self, config: &ServerConfig) -> usize {
        match &self.phase {
            Phase::Body(body) => match body.framing {
                Framing::Length(n) => body.head.len + n,
                Framing::Chunked { .. } => {
                    let max_body = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
                    body.head.len.saturating_add(max_body).saturating_add(CHUNK_SLACK_BYTES)
                }
            },
            _ => config.max_head_bytes,
        }
    }

    /// Reads until `WouldBlock`, end of stream, or the buffer is at its cap (then `readable`
    /// stays set, and reading resumes once requests are consumed).
    fn read(&mut self, env: &mut Env<'_>) -> bool {
        let cap = self.read_cap(env.config);
        let discard = matches!(self.phase, Phase::Closing | Phase::Linger { .. });
        let mut progress = false;
        loop {
            let spare = self.read_buf.spare(cap, env.pool);
            if spare.is_empty() {
                return progress;
            }
            let want = spare.len();
            match self.stream.read(spare) {
                Ok(0) => {
                    self.peer_eof = true;
                    self.input_drained = true;
                    self.readable = false;
                    return true;
                }
                Ok(n) => {
                    progress = true;
                    self.input_drained = n < want;
                    env.stats.bytes_in += n as u64;
                    self.last_read = env.now;
                    if discard {
                        self.read_buf.clear();
                    } else {
                        self.read_buf.filled(n);
                    }
                    // A short read drained the socket; new data brings a new event. Unless the
                    // client closed: then only reading on shows the end of stream.
                    if n < want && !self.read_closed_hint {
                        self.readable = false;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.input_drained = true;
                    self.readable = false;
                    return progress;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(CloseReason::Io(e.kind()));
                    return true;
                }
            }
        }
    }

    /// Writes until the buffer is empty or `WouldBlock`.
    fn flush(&mut self, env: &mut Env<'_>) -> bool {
        let mut progress = false;
        while !self.write_buf.is_empty() {
            match self.stream.write(self.write_buf.pending()) {
                Ok(0) => {
                    self.close(CloseReason::Io(io::ErrorKind::WriteZero));
                    return true;
                }
                Ok(n) => {
                    env.stats.bytes_out += n as u64;
                    self.write_buf.written(n);
                    self.write_since = env.now;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(CloseReason::Io(e.kind()));
                    return true;
                }
            }
        }
        if progress && self.write_buf.is_empty() {
            self.last_response_at = Some(env.now);
        }
        progress
    }

    /// Moves on once the output is flushed: after the last response, shut down the write side
    /// and linger; after the client's end of stream, close.
    fn after_flush(&mut self, env: &mut Env<'_>) -> bool {
        match self.phase {
            Phase::Closing if self.write_buf.is_empty() => {
                if !self.linger {
                    // Closing the socket sends the FIN.
                    self.close(CloseReason::Done);
                    return true;
                }
                // The client may already be gone; its FIN or RST ends the connection either way.
                let _ = self.stream.shutdown_write();
                if self.peer_eof {
                    self.close(CloseReason::Done);
                } else {
                    self.phase = Phase::Linger { until: after(env.now, env.config.linger_timeout) };
                    self.read_buf.clear();
                }
                true
            }
            Phase::Linger { .. } if self.peer_eof => {
                self.close(CloseReason::Done);
                true
            }
            _ => false,
        }
    }

    /// Answers every complete request in the buffer, in order.
    fn process(&mut self, env: &mut Env<'_>) -> bool {
        let mut progress = false;
        loop {
            let advanced = match self.phase {
                Phase::Head => self.process_head(env),
                Phase::Body(_) => self.process_body(env),
                Phase::Waiting { until } if until <= env.now => {
                    self.send_delayed(env);
                    true
                }
                _ => false,
            };
            if !advanced {
                return progress;
            }
            progress = true;
        }
    }

    fn head_limits(config: &ServerConfig) -> HeadLimits {
        HeadLimits { max_headers: config.max_headers, max_uri_bytes: config.max_uri_bytes }
    }

    /// In `Head`: parses the next head if it is complete, and answers it if it has no body.
    fn process_head(&mut self, env: &mut Env<'_>) -> bool {
        if self.write_buf.pending().len() >= WRITE_HIGH_WATER {
            return false;
        }
        let blank = leading_empty_lines(self.read_buf.data());
        if blank > 0 {
            self.read_buf.consume(blank);
            self.scanned = 0;
        }
        if self.read_buf.is_empty() {
            if self.peer_eof {
                self.end_of_input();
                return !matches!(self.phase, Phase::Head);
            }
            return false;
        }
        if self.head_started.is_none() {
            self.head_started = Some(env.now);
            self.activity = true;
        }
        let max_head = env.config.max_head_bytes;
        let limits = Self::head_limits(env.config);
        let data = self.read_buf.data();
        let (mut slots, mut retry_slots) = (header_slots(), header_slots());
        // Most heads arrive whole: parse them at once. A head still incomplete (or one that
        // fails) takes the careful path, which scans a growing head only once and judges errors
        // on the whole head.
        let whole = match self.scanned {
            0 => parse_head_prefix(&data[..data.len().min(max_head)], &mut slots, limits).ok().flatten(),
            _ => None,
        };
        let parsed = match whole {
            Some(parsed) => parsed,
            None => {
                let len = match find_head_end(data, self.scanned) {
                    Ok(len) if len <= max_head => len,
                    Ok(_) => return self.fail(HttpError::HeadTooLarge, env),
                    Err(scanned) => return self.head_incomplete(scanned, env),
                };
                self.scanned = 0;
                match parse_head(&data[..len], &mut retry_slots, limits) {
                    Ok(parsed) => parsed,
                    // Only a version httparse rejects needs a closer look (HTTP/1.2 is served as
                    // HTTP/1.1, HTTP/2.0 gets 505): valid requests never pay for it.
                    Err(HTTPARSE_VERSION_ERROR) => return self.retry_with_normalized_version(len, env),
                    Err(e) => return self.fail(e, env),
                }
            }
        };
        let head = parsed.info;
        let len = head.len;
        let framing = match head.body {
            BodyKind::None => {
                let req = request_from(&parsed.req, head.version, &[], env.shutting_down);
                let reply = call_handler(env, &req);
                self.read_buf.consume(len);
                self.complete(head, reply, env);
                return true;
            }
            BodyKind::Length(n) if n > env.config.max_body_bytes => {
                return self.fail(HttpError::BodyTooLarge, env);
            }
            // n <= max_body_bytes, which fits in memory, hence in usize.
            BodyKind::Length(n) => Framing::Length(usize::try_from(n).unwrap_or(usize::MAX)),
            BodyKind::Chunked => Framing::Chunked {
                decoder: ChunkedDecoder::new(ChunkedLimits {
                    max_body_bytes: env.config.max_body_bytes,
                    max_line_bytes: MAX_CHUNK_LINE_BYTES,
                    max_trailer_bytes: MAX_TRAILER_BYTES,
                }),
                decoded: 0,
            },
        };
        let body_present = self.read_buf.len() > len;
        if head.expect_continue && !body_present {
            if self.write_buf.is_empty() {
                self.write_since = env.now;
            }
            env.stats.response(100);
            self.write_buf.out(env.pool).extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        self.last_read = env.now;
        self.phase = Phase::Body(BodyProgress { head, framing });
        true
    }

    /// No complete head yet; `scanned` is how far the search for its end got. Answers a head
    /// that can no longer become valid, and returns whether anything changed.
    fn head_incomplete(&mut self, scanned: usize, env: &mut Env<'_>) -> bool {
        self.scanned = scanned;
        let (data, config) = (self.read_buf.data(), env.config);
        // Without its end, a request line longer than any valid one means a long target.
        let line_cap = config.max_uri_bytes.saturating_add(REQUEST_LINE_OVERHEAD).min(config.max_head_bytes);
        if data.len() >= line_cap && !data[..line_cap].contains(&b'\n') {
            return self.fail(HttpError::UriTooLong, env);
        }
        if data.len() >= config.max_head_bytes {
            return self.fail(HttpError::HeadTooLarge, env);
        }
        if self.peer_eof {
            // The client closed in the middle of a head: nothing to answer.
            self.end_of_input();
            return true;
        }
        false
    }

    /// The head of `len` bytes has a version httparse rejects: rewrite a later HTTP/1 minor
    /// version to 1.1 in place and parse again, or answer the error.
    fn retry_with_normalized_version(&mut self, len: usize, env: &mut Env<'_>) -> bool {
        match normalize_version(&mut self.read_buf.data_mut()[..len]) {
            Ok(true) => self.process_head(env),
            Ok(false) => self.fail(HTTPARSE_VERSION_ERROR, env),
            Err(e) => self.fail(e, env),
        }
    }

    /// In `Body`: advances the body; answers the request once it is complete.
    fn process_body(&mut self, env: &mut Env<'_>) -> bool {
        let Phase::Body(body) = &mut self.phase else { return false };
        let head = body.head;
        let body_len = match &mut body.framing {
            Framing::Length(n) => {
                if self.read_buf.len() - head.len < *n {
                    return self.body_incomplete();
                }
                *n
            }
            Framing::Chunked { decoder, decoded } => {
                let data = self.read_buf.data_mut();
                let (mut out, mut inp) = (*decoded, *decoded);
                let result = decoder.decode(&mut data[head.len..], &mut out, &mut inp);
                *decoded = out;
                if inp > out {
                    self.read_buf.remove(head.len + out, head.len + inp);
                }
                match result {
                    Ok(true) => out,
                    Ok(false) => return self.body_incomplete(),
                    Err(ChunkedError::TooLarge) => return self.fail(HttpError::BodyTooLarge, env),
                    Err(ChunkedError::Malformed(what)) => return self.fail(HttpError::BadRequest(what), env),
                }
            }
        };
        let reply = {
            let data = self.read_buf.data();
            let mut slots = header_slots();
            match parse_head(&data[..head.len], &mut slots, Self::head_limits(env.config)) {
                Ok(parsed) => {
                    let body = &data[head.len..head.len + body_len];
                    let req = request_from(&parsed.req, head.version, body, env.shutting_down);
                    call_handler(env, &req)
                }
                // The same bytes parsed a moment ago; keep going rather than trust that blindly.
                Err(e) => return self.fail(e, env),
            }
        };
        self.read_buf.consume(head.len + body_len);
        self.complete(head, reply, env);
        true
    }

    fn body_incomplete(&mut self) -> bool {
        if self.peer_eof {
            // The client closed before sending the whole body: nothing to answer.
            self.end_of_input();
            return true;
        }
        false
    }

    /// The client sent its last byte: finish what is queued, then close.
    fn end_of_input(&mut self) {
        self.read_buf.clear();
        self.head_started = None;
        if self.write_buf.is_empty() {
            self.close(CloseReason::PeerClosed);
        } else {
            self.phase = Phase::Closing;
        }
    }

    /// The handler has answered: send now, or hold the response until its delay is over.
    fn complete(&mut self, head: HeadInfo, reply: Reply, env: &mut Env<'_>) {
        self.served += 1;
        self.head_started = None;
        match reply {
            Reply::Now => self.send(head, env),
            Reply::After(delay) => {
                let response = std::mem::take(env.response);
                self.delayed = Some(Delayed { response, head });
                self.phase = Phase::Waiting { until: after(env.now, delay) };
            }
        }
    }

    fn send_delayed(&mut self, env: &mut Env<'_>) {
        if let Some(delayed) = self.delayed.take() {
            *env.response = delayed.response;
            self.send(delayed.head, env);
        } else {
            self.phase = Phase::Head;
        }
    }

    /// Encodes the response in `env.response` into the write buffer and decides whether the
    /// connection stays open.
    fn send(&mut self, head: HeadInfo, env: &mut Env<'_>) {
        let response = &*env.response;
        // While draining, or once the client has closed its side, the response to the last
        // request received is the last one.
        let last = (env.draining || self.peer_eof) && self.read_buf.is_empty();
        let close = !head.keep_alive || response.close_requested() || last;
        let connection = if close {
            Some("close")
        } else if head.version == Version::Http10 {
            Some("keep-alive")
        } else {
            None
        };
        if self.write_buf.is_empty() {
            self.write_since = env.now;
        }
        env.stats.response(response.status());
        response.encode(self.write_buf.out(env.pool), env.date, head.is_head, connection);
        if close {
            // The client said this was its last request, and nothing follows it (the socket was
            // found empty): a plain close is clean. Anything else (our decision, more input, or
            // input possibly left in the kernel by a capped read) gets a lingering close.
            self.linger = head.keep_alive || !self.read_buf.is_empty() || !self.input_drained;
            self.phase = Phase::Closing;
            self.read_buf.clear();
        } else {
            if !self.nodelay {
                self.nodelay = true;
                if let Err(e) = self.stream.set_nodelay() {
                    debug!("connection {}: TCP_NODELAY: {e}", self.id);
                }
            }
            self.phase = Phase::Head;
        }
    }

    /// Answers a protocol error with its status and closes after it. Returns true (progress).
    fn fail(&mut self, error: HttpError, env: &mut Env<'_>) -> bool {
        debug!("connection {} ({}): {error}", self.id, self.peer);
        self.head_started = None;
        let response = &mut *env.response;
        response.reset();
        response.set_status(error.status()).set_close();
        let body = response.body_mut();
        body.extend_from_slice(error.detail().as_bytes());
        body.push(b'\n');
        // The response asks to close. The client did not, so `send` makes it a lingering close:
        // whatever the client sends next must not reset the answer.
        let head = HeadInfo {
            len: 0,
            version: Version::Http11,
            keep_alive: true,
            body: BodyKind::None,
            expect_continue: false,
            is_head: false,
        };
        self.send(head, env);
        true
    }

    fn close(&mut self, reason: CloseReason) {
        if !matches!(self.phase, Phase::Closed) {
            debug!("connection {} ({}) closed: {reason:?}", self.id, self.peer);
            self.phase = Phase::Closed;
            self.close_reason = Some(reason);
            self.read_buf.clear();
            // Kept (empty) so the next drive gives it back to the pool.
            self.write_buf.discard();
            self.delayed = None;
        }
    }
}

/// Builds the handler's view of a parsed request.
fn request_from<'a>(
    req: &'a httparse::Request<'_, 'a>,
    version: Version,
    body: &'a [u8],
    draining: bool,
) -> Request<'a> {
    Request::new(req.method.unwrap_or(""), req.path.unwrap_or(""), version, req.headers, body).with_draining(draining)
}

/// Runs the handler on a reset response; a panic becomes a 500 that closes the connection.
fn call_handler(env: &mut Env<'_>, req: &Request<'_>) -> Reply {
    env.response.reset();
    let handler = &mut *env.handler;
    let response = &mut *env.response;
    match catch_unwind(AssertUnwindSafe(|| handler.handle(req, response))) {
        Ok(reply) => reply,
        Err(_) => {
            error!("handler panicked on {} {}; answering 500", req.method(), req.target());
            response.reset();
            response.set_status(500).set_close();
            response.body_mut().extend_from_slice(b"internal server error\n");
            Reply::Now
        }
    }
}
