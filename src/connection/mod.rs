//! One client connection: its buffers, what it is waiting for ([`Phase`]), and the lifecycle
//! state derived from that ([`ConnState`]). It reads, parses, calls the handler and writes; it
//! never sees the `Poll`. The server tells it when it may read or write
//! ([`Connection::on_ready`]), lends it the loop's [`Env`] while it works, and asks it for its
//! next deadline and its state afterwards.
//!
//! Data that only means something in one phase lives in that phase's variant: where the search
//! for a head's end got, when the head began, how far a body has come, a delayed response, how
//! to close after the last response. What every phase shares stays on the connection: the
//! buffers, the readiness flags, and when the output and the idle wait started.

mod answers;
pub(crate) mod buffer;
mod delivery;
mod env;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use log::{debug, error, warn};

use crate::access::{Answer, Ending, Pending};
use crate::config::ServerConfig;
use crate::counters::{ConnState, Cut, Stats};
use crate::errors::{ErrorInfo, INTERNAL_ERROR};
use crate::handler::Reply;
use crate::http::body::BodyDecoder;
use crate::http::error::HttpError;
use crate::http::head::{BodyKind, HeadInfo, HeadLimits, HeadScan, HeadStep, ParsedHead};
use crate::http::request::{Client, Request, Version};
use crate::http::response::Response;
use crate::responder::Exchange;
use crate::timer::Tick;
use buffer::{BufPool, ReadBuf, WriteBuf};
use env::SPARE_BODIES;
pub(crate) use env::{Env, Logs, Service, Stores, Turn};
use std::sync::Arc;

/// Stop parsing pipelined requests while this much output waits to be written.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Rounds of read / process / write per turn before yielding to other connections.
const ROUNDS_PER_TURN: usize = 4;
/// With an access log on, how often to ask whether a client has taken answers written whole but
/// still in the system's buffers (they are recorded once it has, or when the connection closes).
const RECHECK_TAKEN: Duration = Duration::from_secs(1);
/// A stream's next body bytes are taken only while less than this waits to be written, so a
/// slow reader holds the producer back instead of growing the write buffer.
const STREAM_LOW_WATER: usize = 16 * 1024;

/// The byte stream a connection runs over: a TCP stream, or an in-memory one in tests.
pub(crate) trait Transport: Read + Write {
    /// Whether this kind of stream is TLS: the checks only a TLS stream needs (a handshake
    /// under way, records held back) are compiled out of a plain connection.
    const TLS: bool = false;
    /// Shuts down the write side (sends FIN, after a TLS `close_notify`) so the client sees the
    /// end of the last response.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Turns off Nagle's algorithm, so a response written while an earlier one is not yet
    /// acknowledged goes out at once.
    fn set_nodelay(&self) -> io::Result<()>;
    /// Makes the close that follows a reset (`SO_LINGER` 0) instead of a FIN, for a response
    /// whose end the client must not take for complete.
    fn reset_on_close(&self) -> io::Result<()>;
    /// How many bytes of the output the client has taken so far, as the system counts them
    /// (see `delivery`), and whether that is what the client has (false: a client that reset
    /// the connection, or one on this host that closed, whose count is only what it
    /// acknowledged); `None` where the system does not say. Before a connection whose writes
    /// made no progress is cut, this tells a client that reads slowly from one that stopped.
    fn counted(&self) -> Option<(u64, bool)> {
        None
    }
    /// Whether a read that returned less than asked proves that nothing more waits in the
    /// socket (true for a plain stream; a TLS one knows whether its last socket read was short).
    fn drained_by_short_read(&self) -> bool {
        true
    }
    /// A TLS handshake is under way (no request can arrive before it ends).
    fn handshaking(&self) -> bool {
        false
    }
    /// The stream itself holds output the socket has not taken (TLS records): flushed with
    /// `Write::flush` when writable.
    fn holds_output(&self) -> bool {
        false
    }
    /// The TLS session's parameters, once its handshake is done.
    fn tls_info(&self) -> Option<&Arc<crate::http::request::TlsInfo>> {
        None
    }
    /// The connection closes for `reason`: a TLS stream ends a clean close with `close_notify`
    /// (never a cut one) and counts a handshake that did not finish.
    fn on_close(&mut self, _reason: CloseReason) {}
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn reset_on_close(&self) -> io::Result<()> {
        socket2::SockRef::from(self).set_linger(Some(std::time::Duration::ZERO))
    }

    fn set_nodelay(&self) -> io::Result<()> {
        mio::net::TcpStream::set_nodelay(self, true)
    }

    fn counted(&self) -> Option<(u64, bool)> {
        delivery::counted(self)
    }
}

/// What a connection knows of the server's shutdown: one value, from the server's shutdown stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Draining {
    /// Serving as usual.
    No,
    /// A shutdown was asked for and the drain begins after the drain delay: requests are served
    /// as usual, and told so ([`Request::server_draining`]).
    Soon,
    /// Draining: each connection's last response closes it.
    Now,
    /// Draining after a successor took over the listening sockets (a restart): each
    /// connection's last response closes it, as with `Now`, but an idle connection is kept
    /// until its client uses it (that response closes it), closes it, or its idle timeout
    /// passes, and at the latest until the drain's deadline (`Turn::drain_until`). The drain's
    /// last call would close it while a client or a proxy may be picking it from its pool for
    /// a request that it does not retry (a POST); the client is told instead, by its next
    /// response. Nothing waits for this process's exit, so the wait costs nobody.
    HandingOver,
}

impl Draining {
    /// Whether the drain has begun: each connection's last response closes it.
    #[inline(always)]
    pub(crate) fn now(self) -> bool {
        // One comparison: the two drains come last.
        self as u8 >= Draining::Now as u8
    }
}

/// Why a connection was closed (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its side and nothing was left to answer (or it closed while its answer
    /// was coming from a responder, which is told it is gone).
    PeerClosed,
    /// The last response went out and the client closed (or the linger time ran out).
    Done,
    /// A read or write failed (reset, broken pipe).
    Io(io::ErrorKind),
    /// Keep-alive connection unused for the idle timeout.
    IdleTimeout,
    /// A TLS handshake not done within the handshake timeout.
    HandshakeTimeout,
    /// The client stopped reading its response for the write timeout.
    WriteTimeout,
    /// During the drain, the client took none of its response for the drain write timeout.
    DrainWriteTimeout,
    /// Idle when the server drained.
    Drain,
    /// The server stopped (shutdown timeout or immediate stop).
    Shutdown,
    /// A stream was dropped unfinished: the response ends without its last chunk (or, on
    /// HTTP/1.0, with a reset).
    Cut,
}

/// What the connection is waiting for, with what only that wait needs.
#[derive(Debug)]
enum Phase {
    /// Waiting for, or reading, a request head.
    Head(HeadProgress),
    /// Head parsed; reading its body. Boxed (from [`Stores::bodies`]): the other phases are a
    /// few words, and every connection, idle ones too, is as big as its largest phase.
    Body(Box<BodyProgress>),
    /// The handler asked for a delay: its response is sent at `until`.
    Waiting { until: Tick, delayed: Box<Delayed> },
    /// The handler deferred the answer: a responder on another thread gives it.
    Deferred(Box<Deferred>),
    /// A streamed response: the head went out, the body comes from the producer.
    Streaming(Box<Streaming>),
    /// The last response is queued: flush it, then close as said.
    Closing(AfterFlush),
    /// Write side shut: read and discard until the client closes or `until`.
    Linger { until: Tick },
    /// Done; the server removes it.
    Closed(CloseReason),
}

/// A head on its way.
#[derive(Debug, Default)]
struct HeadProgress {
    /// Where the search for its end got.
    scan: HeadScan,
    /// When its first byte arrived (the header timeout counts from here); `None` while no
    /// request has begun.
    started: Option<Tick>,
}

/// A body on its way.
#[derive(Debug)]
struct BodyProgress {
    head: HeadInfo,
    decoder: BodyDecoder,
    /// When the request's first byte arrived.
    started: Tick,
    /// The last read: a body may not pause for longer than the header timeout.
    last_read: Tick,
}

/// A response the handler asked to send later, with what it needs to be encoded then.
#[derive(Debug)]
struct Delayed {
    response: Response,
    head: HeadInfo,
}

/// An answer a responder gives.
#[derive(Debug)]
struct Deferred {
    head: HeadInfo,
    exchange: Arc<Exchange>,
}

/// A streamed response under way.
#[derive(Debug)]
struct Streaming {
    exchange: Arc<Exchange>,
    /// HTTP/1.1: the body goes in chunks. HTTP/1.0: it ends when the connection closes. Never
    /// for a stream that declared its length.
    chunked: bool,
    /// The body bytes still due, for a stream that declared its length (sent as its
    /// `Content-Length`): the producer's side refuses more, and a finish short of it is a cut.
    remaining: Option<u64>,
    /// Close once the body is complete (HTTP/1.0, the client or the handler asked, the drain).
    close: bool,
}

/// How a connection ends once its last response is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFlush {
    /// Close at once: the client asked to close and sent nothing more.
    Close,
    /// Shut down the write side and read what the client still sends before closing, so unread
    /// input does not turn into a reset that destroys the response.
    Linger,
    /// Close at once: a stream was dropped unfinished (see [`CloseReason::Cut`]).
    Cut,
}

/// The timer of a phase, one description for both [`Connection::deadline`] and
/// [`Connection::expire`].
#[derive(Debug, Clone, Copy)]
enum PhaseTimer {
    /// A head or a body that takes too long: 408.
    Request(Tick),
    /// Waiting for the next request: closed silently at `idle`, or during a drain at
    /// `last_call` if nothing is readable by then.
    Next { idle: Tick, last_call: Option<Tick> },
    /// A delayed response is due; the next drive sends it.
    Delay(Tick),
    /// The linger time is over.
    Linger(Tick),
    /// A TLS handshake: closed at `until` (the handshake timeout), or during a drain at
    /// `last_call` if nothing is readable by then.
    Handshake { until: Tick, last_call: Option<Tick> },
}

/// The write timer of queued output that makes no progress: first a look at what the client
/// has taken (at three quarters of the timeout), then, at the timeout, the decision: a client
/// that took more since the look reads (slowly: the system's count moves in steps) and keeps
/// its connection; one that did not is cut.
#[derive(Debug, Clone, Copy)]
enum WriteTimer {
    Look(Tick),
    Decide(Tick),
}

impl WriteTimer {
    fn at(self) -> Tick {
        match self {
            WriteTimer::Look(at) | WriteTimer::Decide(at) => at,
        }
    }
}

/// How long output may make no progress: the write timeout, or during a drain the drain write
/// timeout (when shorter).
fn write_timeout(config: &ServerConfig, draining: bool) -> Duration {
    if draining { config.write_timeout.min(config.drain_write_timeout) } else { config.write_timeout }
}

/// The low 32 bits of a count of bytes taken: enough to tell that it moved within one timeout.
fn low_bits(taken: u64) -> u32 {
    (taken & u64::from(u32::MAX)) as u32
}

impl PhaseTimer {
    fn at(self) -> Tick {
        match self {
            PhaseTimer::Request(at) | PhaseTimer::Delay(at) | PhaseTimer::Linger(at) => at,
            PhaseTimer::Next { idle, last_call } | PhaseTimer::Handshake { until: idle, last_call } => {
                last_call.map_or(idle, |g| g.min(idle))
            }
        }
    }
}

/// One client connection.
pub(crate) struct Connection<S> {
    stream: S,
    /// Its slot in the server's slab: the address of the letters its responders post.
    key: u32,
    /// Its id (unique for the server's lifetime) and the client's address.
    pub(crate) client: Client,
    phase: Phase,
    read_buf: ReadBuf,
    write_buf: WriteBuf,
    /// When the output last made progress (or was queued into an empty buffer): the write
    /// timeout counts from here.
    write_since: Tick,
    /// What the client had taken when the write timer looked (see [`WriteTimer`]): the low 32
    /// bits of [`Transport::taken`] (any change means it read something; meaningless where the
    /// system keeps no count).
    write_mark: u32,
    /// When the connection last had nothing to do: accepted, or its last response went out.
    /// The idle timeout counts from here.
    idle_since: Tick,
    /// During a drain: until when a new or just-used connection may still send a request.
    last_call: Option<Tick>,
    /// A request was answered on it (or its answer is under way): with nothing to do, it is
    /// Idle, not New.
    served: bool,
    /// The write timer looked at what the client has taken since the output last moved.
    write_looked: bool,
    /// Set by readiness events, cleared by `WouldBlock`.
    readable: bool,
    /// Set by readiness events, cleared by `WouldBlock`.
    writable: bool,
    /// What is known of the client's input: see [`Input`].
    input: Input,
    /// TCP_NODELAY is set: done once, when the connection first stays open after a response
    /// (a connection that serves one request and closes never needs it).
    nodelay: bool,
    /// A request began since [`Connection::take_activity`] was last called.
    activity: bool,
    /// A responder posted news that the connection has not taken yet.
    mail: bool,
    /// A response whose body ends with the connection (an HTTP/1.0 stream) went out: closed
    /// for any reason but [`CloseReason::Done`] (a timeout, the shutdown, a cut stream), the
    /// connection resets, or its FIN would make the body look complete.
    close_delimited: bool,
    /// The request being answered, for the access log (made at the first request once one is
    /// on).
    access: Option<Box<Pending>>,
}

/// What is known of the client's input, in one place, changed only by its own methods (three
/// flags: as an enum the same facts cost more on the request path, measured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Input {
    /// The last read found the socket empty (a short read, `WouldBlock` or the end), so no
    /// input waits unread in the kernel. A read capped by the buffer proves nothing.
    drained: bool,
    /// The poll said the client closed (or reset) its side: a short read is not proof the
    /// socket is drained, and reading on shows the end.
    closing: bool,
    /// The end of the client's stream was read: nothing more comes.
    ended: bool,
}

impl Input {
    /// The end of the client's stream was read.
    #[inline]
    fn ended(self) -> bool {
        self.ended
    }

    /// No input waits unread in the kernel.
    #[inline]
    fn drained(self) -> bool {
        self.drained
    }

    /// The poll said the client closed its side.
    #[inline]
    fn closing(self) -> bool {
        self.closing
    }

    /// What the poll said: `closed`, the client closed its side.
    #[inline]
    fn polled(&mut self, closed: bool) {
        self.closing |= closed;
    }

    /// A read returned data (or would block): whether it found the socket empty.
    #[inline]
    fn read(&mut self, empty: bool) {
        self.drained = empty;
    }

    /// A read returned the end of the stream.
    #[inline]
    fn end(&mut self) {
        self.ended = true;
        self.drained = true;
    }
}

/// How a connection is treated by a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainRole {
    /// A request is in progress: it finishes.
    Finish,
    /// Idle for a while: closed at once (unless a request turns up before the next turn).
    CloseIdle,
    /// New, or idle since just now: a brief last call for a request on its way.
    LastCall,
    /// New or idle while handing over to a successor: kept until its client uses it or closes
    /// it, its idle timeout, or the drain's deadline (see [`Draining::HandingOver`]).
    Keep,
    /// Closed.
    Gone,
}

impl<S: Transport> Connection<S> {
    /// A connection just accepted into slot `key`.
    pub(crate) fn new(stream: S, key: u32, id: u64, peer: SocketAddr, now: Tick) -> Self {
        Connection {
            stream,
            key,
            client: Client { id, addr: peer },
            phase: Phase::Head(HeadProgress::default()),
            read_buf: ReadBuf::default(),
            write_buf: WriteBuf::default(),
            write_since: now,
            write_mark: 0,
            write_looked: false,
            idle_since: now,
            last_call: None,
            served: false,
            readable: false,
            writable: false,
            input: Input::default(),
            nodelay: false,
            activity: false,
            mail: false,
            close_delimited: false,
            access: None,
        }
    }

    /// A responder of this connection posted news (a letter with its id reached its slot).
    pub(crate) fn on_mail(&mut self) {
        self.mail = true;
    }

    /// The stream.
    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream (for registering, and for the harness's in-memory pipe).
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Records readiness the poll reported: the socket may be read or written, or the client
    /// closed (or reset) its side.
    pub(crate) fn on_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.readable |= readable || read_closed;
        self.writable |= writable;
        self.input.polled(read_closed);
    }

    /// The server cannot watch the socket (it failed to register it): closed at once.
    pub(crate) fn lost(&mut self, kind: io::ErrorKind) {
        self.close(CloseReason::Io(kind));
    }

    /// Whether a request began since the last call: the server reports the connection Active
    /// even when that request was also answered within the same turn.
    pub(crate) fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }

    /// Output waits to be written: in the write buffer, or (TLS records) in the stream.
    #[inline]
    fn output_waits(&self) -> bool {
        !self.write_buf.is_empty() || (S::TLS && self.stream.holds_output())
    }

    /// The lifecycle state, derived from the phase and buffers.
    pub(crate) fn state(&self) -> ConnState {
        match self.phase {
            Phase::Closed(_) => ConnState::Closed,
            Phase::Head(_) if self.read_buf.is_empty() && !self.output_waits() => {
                if !self.served {
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
        match self.phase {
            Phase::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// The write timer, while output waits: when it looks at what the client has taken, or
    /// when it decides. `draining`: the shorter drain write timeout applies.
    fn write_timer(&self, config: &ServerConfig, draining: bool) -> Option<WriteTimer> {
        if !self.output_waits() {
            return None;
        }
        let timeout = write_timeout(config, draining);
        Some(match self.write_looked {
            false => WriteTimer::Look(self.write_since.after(timeout - timeout / 4)),
            true => WriteTimer::Decide(self.write_since.after(timeout)),
        })
    }

    /// The timer of the current phase, if it has one.
    fn phase_timer(&self, config: &ServerConfig) -> Option<PhaseTimer> {
        match &self.phase {
            Phase::Closed(_) | Phase::Closing(_) | Phase::Deferred(_) | Phase::Streaming(_) => None,
            Phase::Linger { until } => Some(PhaseTimer::Linger(*until)),
            Phase::Waiting { until, .. } => Some(PhaseTimer::Delay(*until)),
            Phase::Body(body) => Some(PhaseTimer::Request(body.last_read.after(config.header_timeout))),
            Phase::Head(head) => match head.started {
                Some(started) => Some(PhaseTimer::Request(started.after(config.header_timeout))),
                None if S::TLS && self.stream.handshaking() => Some(PhaseTimer::Handshake {
                    until: self.idle_since.after(config.handshake_timeout),
                    last_call: self.last_call,
                }),
                None if self.write_buf.is_empty() => Some(PhaseTimer::Next {
                    idle: self.idle_since.after(config.idle_timeout),
                    last_call: self.last_call,
                }),
                None => None,
            },
        }
    }

    /// The next moment something must happen if no I/O arrives first.
    pub(crate) fn deadline(&self, config: &ServerConfig, draining: Draining) -> Option<Tick> {
        let write = self.write_timer(config, draining.now()).map(WriteTimer::at);
        let at = match (write, self.phase_timer(config).map(PhaseTimer::at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.access.as_ref().and_then(|pending| pending.recheck) {
            Some(recheck) => Some(at.map_or(recheck, |at| at.min(recheck))),
            None => at,
        }
    }

    /// Acts on a deadline that has passed: looks at a stuck write or cuts it, times out a slow
    /// head or body (408), an idle connection, a drain last call, or the end of lingering.
    /// Delayed responses are sent by the next [`Connection::drive`].
    pub(crate) fn expire(&mut self, env: &mut Env) {
        let now = env.turn.now;
        if self.access.as_ref().and_then(|pending| pending.recheck).is_some_and(|at| at <= now) {
            self.release_records(env.turn.now, &mut env.logs);
        }
        let draining = env.turn.draining.now();
        match self.write_timer(&env.config, draining) {
            Some(WriteTimer::Look(at)) if at <= now => self.look_at_client(now, write_timeout(&env.config, draining)),
            Some(WriteTimer::Decide(at)) if at <= now => {
                let reads = self.client_took_more(now);
                if !reads {
                    let shorter = draining && env.config.drain_write_timeout < env.config.write_timeout;
                    self.cut(if shorter { CloseReason::DrainWriteTimeout } else { CloseReason::WriteTimeout }, env);
                    return;
                }
            }
            _ => {}
        }
        match self.phase_timer(&env.config) {
            Some(PhaseTimer::Request(at)) if at <= now => {
                self.fail(HttpError::Timeout, env);
            }
            Some(PhaseTimer::Next { idle, last_call }) => {
                if idle <= now {
                    self.close(CloseReason::IdleTimeout);
                } else if last_call.is_some_and(|at| at <= now) && self.nothing_came() {
                    self.close(CloseReason::Drain);
                }
            }
            Some(PhaseTimer::Linger(at)) if at <= now => self.close(CloseReason::Done),
            Some(PhaseTimer::Handshake { until, last_call }) => {
                if until <= now {
                    self.close(CloseReason::HandshakeTimeout);
                } else if last_call.is_some_and(|at| at <= now) && self.nothing_came() {
                    self.close(CloseReason::Drain);
                }
            }
            _ => {}
        }
    }

    /// The drain's rule for this connection: it is closed without reading what the client sent
    /// only after the client was told (its last response carried `Connection: close`: such a
    /// connection is never idle again) or after a grace. When the drain begins (`starting`): a
    /// request in progress finishes (its response is the last, see `ending`); a new connection,
    /// or one used just now, gets a last call for a request on its way; any other idle one is
    /// closed at once unless the server's look at the poll just before found input on it (then
    /// that request is read and answered first: with `Connection: close`). While the
    /// drain lasts, a connection that goes idle was not told: its last response began before the
    /// drain (a stream, a large body whose head had gone out), so the client, or a proxy reusing
    /// the connection, may already be sending its next request. It gets the same last call as a
    /// connection just used at the signal; that request is answered with `Connection: close`.
    /// Once its last call is over, it is closed. When handing over to a successor
    /// ([`Draining::HandingOver`]), a new or idle connection is kept instead, until it is used,
    /// closed by its client, or timed out; a signal that comes meanwhile applies the rule above
    /// (`starting` again).
    pub(crate) fn drain(&mut self, turn: Turn, config: &ServerConfig, starting: bool) -> DrainRole {
        let now = turn.now;
        let state = self.state();
        if turn.draining == Draining::HandingOver
            && matches!(state, ConnState::New | ConnState::Idle)
            && (starting || self.last_call.is_none())
        {
            self.last_call = Some(turn.drain_until);
            return DrainRole::Keep;
        }
        match state {
            ConnState::Closed => DrainRole::Gone,
            ConnState::Active => DrainRole::Finish,
            ConnState::New if starting => {
                self.last_call = Some(now.after(config.drain_new_grace));
                DrainRole::LastCall
            }
            ConnState::Idle if starting => {
                if now < self.idle_since.after(config.drain_idle_grace) {
                    self.last_call = Some(now.after(config.drain_idle_grace));
                    DrainRole::LastCall
                } else {
                    self.last_call = Some(now);
                    if self.nothing_came() {
                        self.close(CloseReason::Drain);
                    }
                    DrainRole::CloseIdle
                }
            }
            ConnState::Idle if self.last_call.is_none() => {
                // Went idle during the drain without `Connection: close`: a last call.
                self.last_call = Some(now.after(config.drain_idle_grace));
                DrainRole::LastCall
            }
            ConnState::Idle if self.last_call.is_some_and(|at| at <= now) && self.nothing_came() => {
                // Its last call is over and nothing came.
                self.close(CloseReason::Drain);
                DrainRole::Gone
            }
            ConnState::New | ConnState::Idle => DrainRole::LastCall,
        }
    }

    /// Before a drain closes this idle connection: nothing came. The server looked at the poll
    /// once more just before (`look_again`), so a request that reached the socket since the
    /// turn's poll has made it readable: it is answered, with `Connection: close`, where a close
    /// would have reset it.
    fn nothing_came(&self) -> bool {
        !self.readable
    }

    /// No write made progress for most of the write timeout: notes what the client has taken
    /// so far, for the decision at the timeout. A look made late (the drain shortened the
    /// timeout) still leaves the client a quarter of it to show that it reads: the timeout is
    /// then counted as if the output had stopped three quarters of it ago.
    #[cold]
    fn look_at_client(&mut self, now: Tick, timeout: Duration) {
        self.write_looked = true;
        let taken = self.taken_noted();
        self.write_mark = taken.map_or(0, low_bits);
        self.write_since = self.write_since.max(now.before(timeout - timeout / 4));
    }

    /// What the system says the client has taken; with an access log on, noted for its records
    /// while it is known to be what the client has (see `output_had`).
    fn taken_noted(&mut self) -> Option<u64> {
        let (taken, known) = self.stream.counted()?;
        if let (true, Some(pending)) = (known, self.access.as_mut()) {
            pending.seen = pending.seen.max(taken);
        }
        Some(taken)
    }

    /// At the write timeout: whether the client took more since the look (it reads, however
    /// slowly; the timeout starts again). Without a count from the system, it did not.
    #[cold]
    fn client_took_more(&mut self, now: Tick) -> bool {
        let Some(taken) = self.taken_noted().map(low_bits) else { return false };
        if taken == self.write_mark {
            return false;
        }
        debug!("connection {}: no write for a while, but the client reads: keeping it", self.client.id);
        // The next decision, a whole timeout on, compares with what it has taken now.
        self.write_since = now;
        self.write_mark = taken;
        true
    }

    /// Cuts a response the client stopped taking (a write timeout): counted, and logged at
    /// WARN with the client's address (at most a few lines a second; the rest are counted in
    /// the next line).
    #[cold]
    #[inline(never)]
    fn cut(&mut self, reason: CloseReason, env: &mut Env) {
        let queued = self.write_buf.pending().len();
        env.stores.stats.cut(if reason == CloseReason::DrainWriteTimeout {
            Cut::DrainWriteTimeout
        } else {
            Cut::WriteTimeout
        });
        if env.logs.cut_log.allow(env.turn.now) {
            let (what, timeout) = match reason {
                CloseReason::DrainWriteTimeout => ("drain write timeout", env.config.drain_write_timeout),
                _ => ("write timeout", env.config.write_timeout),
            };
            let more = env.logs.cut_log.take_unlogged();
            let more = if more > 0 { format!(" ({more} more cut since the last such line)") } else { String::new() };
            warn!(
                event = "cut", reason = what, client:% = self.client.addr, conn = self.client.id, unsent = queued;
                "connection {} ({}): cut: the client took nothing of its response for {} ({what}), {queued} bytes not sent{more}",
                self.client.id,
                self.client.addr,
                humantime::format_duration(timeout)
            );
        }
        self.close(reason);
    }

    /// Closes the connection at once (shutdown timeout, immediate stop). Returns whether that
    /// cut a response short (a request in progress, output not written, a stream), and whether
    /// that was a streamed response.
    pub(crate) fn abort(&mut self) -> (bool, bool) {
        let stream = matches!(self.phase, Phase::Streaming(_));
        let cut = self.state() == ConnState::Active;
        self.close(CloseReason::Shutdown);
        (cut, stream)
    }

    /// Does all the work the connection can do now: read what is there, answer complete
    /// requests, write what is queued. Returns true when it stopped only because of the per-turn
    /// budget, so the server should come back to it in the next turn.
    pub(crate) fn drive(&mut self, env: &mut Env) -> bool {
        for _ in 0..ROUNDS_PER_TURN {
            let mut progress = false;
            if self.readable && !matches!(self.phase, Phase::Closed(_)) {
                progress |= self.read(env.turn.now, &env.config, &mut env.stores);
            }
            progress |= self.process(env);
            if self.writable && self.output_waits() {
                progress |= self.flush(env.turn.now, &mut env.stores.stats);
                if self.access.as_ref().is_some_and(|pending| pending.holds()) {
                    self.release_records(env.turn.now, &mut env.logs);
                }
            }
            let moved_on = self.after_flush(env.turn.now, &env.config);
            progress |= moved_on;
            let draining = env.turn.draining.now();
            if draining {
                self.drain(env.turn, &env.config, false);
            }
            // Another round can only take up what this one left: input still in the socket (a
            // read stopped at its cap), input not yet answered (waiting for room to write),
            // news from a responder, or a phase the flush or the drain just changed. Most
            // requests leave none of these, and skip a round that would find nothing.
            let more = self.readable || self.mail || !self.read_buf.is_empty() || moved_on || draining;
            if matches!(self.phase, Phase::Closed(_)) || !progress || !more {
                self.release_buffers(&mut env.stores.pool);
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
            Phase::Body(body) => body.decoder.read_cap(body.head.len, config.max_body_bytes),
            _ => config.max_head_bytes,
        }
    }

    /// Reads until `WouldBlock`, end of stream, or the buffer is at its cap (then `readable`
    /// stays set, and reading resumes once requests are consumed).
    fn read(&mut self, now: Tick, config: &ServerConfig, stores: &mut Stores) -> bool {
        let cap = self.read_cap(config);
        let discard = matches!(self.phase, Phase::Closing(_) | Phase::Linger { .. });
        let mut progress = false;
        loop {
            let spare = self.read_buf.spare(cap, &mut stores.pool);
            if spare.is_empty() {
                return progress;
            }
            let want = spare.len();
            match self.stream.read(spare) {
                Ok(0) => {
                    self.input.end();
                    self.readable = false;
                    return true;
                }
                Ok(n) => {
                    progress = true;
                    let drained = n < want && self.stream.drained_by_short_read();
                    self.input.read(drained);
                    stores.stats.bytes_in += n as u64;
                    if let Phase::Body(body) = &mut self.phase {
                        body.last_read = now;
                    }
                    if discard {
                        self.read_buf.clear();
                    } else {
                        self.read_buf.filled(n);
                    }
                    // A short read drained the socket; new data brings a new event. Unless the
                    // client closed: then only reading on shows the end of stream.
                    if drained && !self.input.closing() {
                        self.readable = false;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.input.read(true);
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
    fn flush(&mut self, now: Tick, stats: &mut Stats) -> bool {
        let mut sent = 0;
        let mut failed = None;
        while !self.write_buf.is_empty() {
            match self.stream.write(self.write_buf.pending()) {
                Ok(0) => {
                    failed = Some(io::ErrorKind::WriteZero);
                    break;
                }
                Ok(n) => {
                    sent += n;
                    self.write_buf.written(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e.kind());
                    break;
                }
            }
        }
        if S::TLS && failed.is_none() && self.writable && self.stream.holds_output() {
            match self.stream.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) => failed = Some(e.kind()),
            }
        }
        stats.bytes_out += sent as u64;
        if let Some(pending) = self.access.as_mut() {
            pending.written += sent as u64;
            pending.backlogged |= !self.writable;
        }
        if let Some(kind) = failed {
            self.close(CloseReason::Io(kind));
            return true;
        }
        let progress = sent > 0;
        if progress {
            self.write_since = now;
            if self.write_buf.is_empty() {
                self.idle_since = now;
            }
            // The output moves again: a stall, if one comes, is looked at afresh.
            self.write_looked = false;
        }
        progress
    }

    /// Moves on once the output is flushed: after the last response, close or shut down the
    /// write side and linger; after the client's end of stream, close.
    fn after_flush(&mut self, now: Tick, config: &ServerConfig) -> bool {
        match self.phase {
            Phase::Closing(after_flush) if !self.output_waits() => {
                if after_flush == AfterFlush::Cut {
                    self.close(CloseReason::Cut);
                    return true;
                }
                if after_flush == AfterFlush::Close {
                    // Closing the socket sends the FIN.
                    self.close(CloseReason::Done);
                    return true;
                }
                // The client may already be gone; its FIN or RST ends the connection either way.
                let _ = self.stream.shutdown_write();
                if self.input.ended() {
                    self.close(CloseReason::Done);
                } else {
                    self.phase = Phase::Linger { until: now.after(config.linger_timeout) };
                    self.read_buf.clear();
                }
                true
            }
            Phase::Linger { .. } if self.input.ended() => {
                self.close(CloseReason::Done);
                true
            }
            _ => false,
        }
    }

    /// Answers every complete request in the buffer, in order.
    fn process(&mut self, env: &mut Env) -> bool {
        let mut progress = false;
        loop {
            let advanced = match self.phase {
                Phase::Head(_) => self.process_head(env),
                Phase::Body(_) => self.process_body(env),
                Phase::Waiting { until, .. } if until <= env.turn.now => self.send_delayed(env),
                Phase::Deferred(_) | Phase::Streaming(_) if self.input.ended() => {
                    // Taken as gone (as Go and nginx do): the responder hears of it. A whole
                    // answer already given (in the same turn as the EOF) still goes out.
                    let answered = self.mail && matches!(self.phase, Phase::Deferred(_)) && self.take_answer(env);
                    if !answered || matches!(self.phase, Phase::Streaming(_)) {
                        self.close(CloseReason::PeerClosed);
                    }
                    true
                }
                Phase::Deferred(_) if self.mail => self.take_answer(env),
                Phase::Streaming(_) if self.mail && self.write_buf.pending().len() < STREAM_LOW_WATER => self.pump(env),
                _ => false,
            };
            if !advanced {
                return progress;
            }
            progress = true;
        }
    }

    /// In `Head`: reads the next head if it is complete, and answers it if it has no body.
    fn process_head(&mut self, env: &mut Env) -> bool {
        if self.write_buf.pending().len() >= WRITE_HIGH_WATER {
            return false;
        }
        let Phase::Head(head) = &mut self.phase else { return false };
        let limits = head_limits(&env.config);
        // The handler answers a request without a body while its head is still borrowed.
        let (skip, step) = head.scan.next(self.read_buf.data_mut(), limits, |parsed, _| {
            if env.logs.access.is_some() {
                note_request(&mut self.access, parsed, head.started.unwrap_or(env.turn.now));
            }
            (parsed.info.body == BodyKind::None)
                .then(|| call_handler(env, parsed, &[], &self.client, self.stream.tls_info()))
        });
        self.read_buf.consume(skip);
        if !matches!(step, HeadStep::Empty) && head.started.is_none() {
            head.started = Some(env.turn.now);
            self.activity = true;
        }
        match step {
            HeadStep::Empty | HeadStep::Partial if self.input.ended() => {
                // The client closed between requests or in the middle of a head: nothing to answer.
                let began = matches!(step, HeadStep::Partial);
                self.end_of_input();
                began || !matches!(self.phase, Phase::Head(_))
            }
            HeadStep::Empty | HeadStep::Partial => false,
            HeadStep::Failed(e) => self.fail(e, env),
            HeadStep::Complete(head, Some(reply)) => {
                self.read_buf.consume(head.len);
                self.complete(head, reply, env);
                true
            }
            HeadStep::Complete(info, None) => {
                let started = head.started.unwrap_or(env.turn.now);
                self.begin_body(info, started, env)
            }
        }
    }

    /// A head with a body is complete: 413 for a declared length over the limit, `100 Continue`
    /// when the client waits for it, then read the body.
    fn begin_body(&mut self, head: HeadInfo, started: Tick, env: &mut Env) -> bool {
        let decoder = match BodyDecoder::for_head(head.body, env.config.max_body_bytes) {
            Ok(decoder) => decoder,
            Err(e) => return self.fail_after(e, Some(head.len), env),
        };
        let body_present = self.read_buf.len() > head.len;
        if head.expect_continue && !body_present {
            if self.write_buf.is_empty() {
                self.write_since = env.turn.now;
            }
            env.stores.stats.response(100);
            self.write_buf.out(&mut env.stores.pool).extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = BodyProgress { head, decoder, started, last_read: env.turn.now };
        self.phase = Phase::Body(match env.stores.bodies.pop() {
            Some(mut spare) => {
                *spare = body;
                spare
            }
            None => Box::new(body),
        });
        true
    }

    /// In `Body`: advances the body; answers the request once it is complete.
    fn process_body(&mut self, env: &mut Env) -> bool {
        let Phase::Body(body) = &mut self.phase else { return false };
        let head = body.head;
        let body_len = match body.decoder.advance(&mut self.read_buf, head.len) {
            Ok(Some(len)) => len,
            Ok(None) if self.input.ended() => {
                // The client closed before sending the whole body: nothing to answer.
                self.end_of_input();
                return true;
            }
            Ok(None) => return false,
            Err(e) => return self.fail(e, env),
        };
        // The head parsed a moment ago sits before the body: read it again for the borrowed
        // view the handler gets.
        let request = &mut self.read_buf.data_mut()[..head.len + body_len];
        // (The access log noted the request when its head came.)
        let (_, step) = HeadScan::default().next(request, head_limits(&env.config), |parsed, body| {
            call_handler(env, parsed, body, &self.client, self.stream.tls_info())
        });
        let reply = match step {
            HeadStep::Complete(_, reply) => reply,
            // The same bytes parsed a moment ago; keep going rather than trust that blindly.
            HeadStep::Failed(e) => return self.fail(e, env),
            HeadStep::Empty | HeadStep::Partial => {
                return self.fail(HttpError::BadRequest("incomplete request head"), env);
            }
        };
        self.read_buf.consume(head.len + body_len);
        // The body is read: its box goes back for the next one (the answer sets the phase).
        if let Phase::Body(spare) = std::mem::replace(&mut self.phase, Phase::Head(HeadProgress::default()))
            && env.stores.bodies.len() < SPARE_BODIES
        {
            env.stores.bodies.push(spare);
        }
        self.complete(head, reply, env);
        true
    }

    /// The client sent its last byte: finish what is queued, then close.
    fn end_of_input(&mut self) {
        self.read_buf.clear();
        if self.write_buf.is_empty() {
            self.close(CloseReason::PeerClosed);
        } else {
            self.phase = Phase::Closing(AfterFlush::Linger);
        }
    }

    /// The handler has answered: send now, or hold the response until its delay is over.
    fn complete(&mut self, head: HeadInfo, reply: Reply, env: &mut Env) {
        self.served = true;
        if let Some(exchange) = env.service.response.take_deferred() {
            return self.defer(head, reply, exchange, env);
        }
        match reply {
            Reply::Now => self.send(head, env),
            Reply::After(delay) => {
                let response = std::mem::take(&mut env.service.response);
                let delayed = Box::new(Delayed { response, head });
                self.phase = Phase::Waiting { until: env.turn.now.after(delay), delayed };
            }
            Reply::Later => self.no_responder(head, env),
        }
    }

    /// In `Waiting`, once due: sends the delayed response.
    fn send_delayed(&mut self, env: &mut Env) -> bool {
        let waiting = std::mem::replace(&mut self.phase, Phase::Head(HeadProgress::default()));
        if let Phase::Waiting { delayed, .. } = waiting {
            let Delayed { response, head } = *delayed;
            env.service.response = response;
            self.send(head, env);
        }
        true
    }

    /// Encodes the response in `env.service.response` into the write buffer and decides whether the
    /// connection stays open.
    fn send(&mut self, head: HeadInfo, env: &mut Env) {
        let (close, connection) = self.ending(&head, env.turn.draining, env.service.response.close_requested());
        self.queue_response(head.is_head, connection, env);
        self.after_response(close, head.keep_alive);
    }

    /// Whether the response to `head` is the connection's last (the client or the handler asked,
    /// `must_close`, or, while draining or once the client has closed its side, nothing more
    /// was received), and the `Connection` field it carries.
    #[inline(always)]
    fn ending(&self, head: &HeadInfo, draining: Draining, must_close: bool) -> (bool, Option<&'static str>) {
        let last = (draining.now() || self.input.ended()) && self.read_buf.is_empty();
        let close = must_close || !head.keep_alive || last;
        let connection = if close {
            Some("close")
        } else if head.version == Version::Http10 {
            Some("keep-alive")
        } else {
            None
        };
        (close, connection)
    }

    /// A response is complete: wait for the next request, or close. The client said this was
    /// its last request (`!keep_alive`), and nothing follows it (the socket was found empty): a
    /// plain close is clean. Anything else (our decision, more input, or input possibly left in
    /// the kernel by a capped read) gets a lingering close.
    #[inline(always)]
    fn after_response(&mut self, close: bool, keep_alive: bool) {
        if close {
            let lingering = keep_alive || !self.read_buf.is_empty() || !self.input.drained();
            self.closing(if lingering { AfterFlush::Linger } else { AfterFlush::Close });
        } else {
            if !self.nodelay {
                self.nodelay = true;
                if let Err(e) = self.stream.set_nodelay() {
                    debug!("connection {}: TCP_NODELAY: {e}", self.client.id);
                }
            }
            self.phase = Phase::Head(HeadProgress::default());
        }
    }

    /// Encodes `env.service.response` at the end of the write buffer.
    fn queue_response(&mut self, head_only: bool, connection: Option<&str>, env: &mut Env) {
        if self.write_buf.is_empty() {
            self.write_since = env.turn.now;
        }
        let response = &env.service.response;
        env.stores.stats.response(response.status());
        response.encode(self.write_buf.out(&mut env.stores.pool), env.stores.date.get(), head_only, connection);
        if env.logs.access.is_some() {
            self.record_response(head_only, &env.service.response, env.turn);
        }
    }

    /// Records the response just queued from `env.service.response` in the access log.
    #[cold]
    #[inline(never)]
    fn record_response(&mut self, head_only: bool, response: &Response, turn: Turn) {
        let bytes = if head_only || response.is_bodiless() || response.status() == 205 {
            0
        } else {
            response.body().len() as u64
        };
        self.record_answer(response.status(), bytes, turn);
    }

    /// The answer to the request being answered, with `status` and `body_bytes`, was just
    /// queued: the access log records it once its last byte is out.
    #[cold]
    #[inline(never)]
    fn record_answer(&mut self, status: u16, body_bytes: u64, turn: Turn) {
        let answer = self.answer(status, body_bytes, turn);
        let queued = self.write_buf.pending().len() as u64;
        let pending = self.access.get_or_insert_with(Box::default);
        pending.hold(answer, pending.written + queued, turn.now, false);
    }

    /// A stream ended (`abandoned`: dropped unfinished), its last bytes just queued: recorded
    /// with the body it sent, once they are out.
    #[cold]
    #[inline(never)]
    fn record_stream_end(&mut self, abandoned: bool, turn: Turn) {
        let template = self.answer(0, 0, turn);
        let queued = self.write_buf.pending().len() as u64;
        if let Some(pending) = self.access.as_mut() {
            let end = pending.written + queued;
            pending.stream_ended(
                |status, body_bytes| Answer { status, body_bytes, ..template },
                end,
                turn.now,
                abandoned,
            );
        }
    }

    /// What the access log says of an answer from this connection.
    fn answer(&self, status: u16, body_bytes: u64, turn: Turn) -> Answer {
        Answer {
            peer: self.client.addr,
            connection_id: self.client.id,
            status,
            body_bytes,
            during_drain: turn.draining != Draining::No,
            tls: self.stream.tls_info().cloned(),
        }
    }

    /// How much of the output the client has, for the access log: what was written, or, once a
    /// write found the socket full, what the system says the client took.
    fn output_had(&mut self) -> u64 {
        let Some(pending) = self.access.as_mut() else { return 0 };
        if !pending.backlogged {
            return pending.written;
        }
        match self.stream.counted() {
            Some((taken, true)) if taken >= pending.written => {
                pending.backlogged = false;
                pending.written
            }
            Some((taken, true)) => {
                pending.seen = taken;
                taken
            }
            // A client that reset the connection, or one on this host that closed: it read at
            // least what it had when last looked at, and the rest of what it acknowledged may
            // have died unread in its socket.
            Some((_, false)) => pending.seen,
            None => pending.written,
        }
    }

    /// Records the answers whose last byte is out (after a flush).
    #[cold]
    #[inline(never)]
    fn release_records(&mut self, now: Tick, logs: &mut Logs) {
        let had = self.output_had();
        let all_written = self.write_buf.is_empty();
        if let (Some(log), Some(pending)) = (logs.access.as_mut(), self.access.as_mut()) {
            if pending.release(had, log.as_mut()) {
                logs.access_used = true;
            }
            // Written whole, not all taken yet: no event will say when the client has it, so
            // the count is asked again a little later. (While output is queued, every write
            // asks.)
            pending.recheck = (all_written && pending.holds()).then(|| now.after(RECHECK_TAKEN));
        }
    }

    /// The connection closed: every answer not recorded yet is, with what of it went out and
    /// why the rest did not, and so is a request the close left without an answer (status 0):
    /// the server calls this as it lets go of a closed connection.
    pub(crate) fn record_close(&mut self, turn: Turn, logs: &mut Logs) {
        let Some(pending) = self.access.as_ref() else { return };
        if !pending.holds() && !pending.is_live() {
            return;
        }
        let queued = pending.written + self.write_buf.pending().len() as u64;
        let had = self.output_had();
        let ending = match self.close_reason() {
            Some(CloseReason::WriteTimeout) => Ending::WriteTimeout,
            Some(CloseReason::DrainWriteTimeout) => Ending::DrainWriteTimeout,
            Some(CloseReason::Shutdown) => Ending::Shutdown,
            Some(CloseReason::Cut) => Ending::Abandoned,
            _ => Ending::ClientGone,
        };
        let template = self.answer(0, 0, turn);
        if let (Some(log), Some(pending)) = (logs.access.as_mut(), self.access.as_mut()) {
            pending.close((had, queued), ending, template, turn.now, log.as_mut());
            logs.access_used = true;
        }
    }

    /// The response just queued is the last: nothing more is read as requests.
    fn closing(&mut self, after_flush: AfterFlush) {
        self.phase = Phase::Closing(after_flush);
        self.read_buf.clear();
    }

    /// Answers a protocol error with its status and closes after it. Returns true (progress).
    fn fail(&mut self, error: HttpError, env: &mut Env) -> bool {
        let head_len = match &self.phase {
            Phase::Body(body) => Some(body.head.len),
            _ => None,
        };
        self.fail_after(error, head_len, env)
    }

    /// [`Connection::fail`], rendered by the error hook; `head_len`: the request's head was
    /// read and is still at the start of the read buffer, so the hook is told its method and
    /// target.
    #[cold]
    #[inline(never)]
    fn fail_after(&mut self, error: HttpError, head_len: Option<usize>, env: &mut Env) -> bool {
        debug!("connection {} ({}): {error}", self.client.id, self.client.addr);
        let info = ErrorInfo::new(error.status(), error.detail());
        let mut rendered = false;
        if let Some(len) = head_len.filter(|&len| len <= self.read_buf.len()) {
            // Parsed again (errors are rare): the head's fields are not kept while a body comes.
            let (errors, response) = (&env.service.errors, &mut env.service.response);
            let request = &mut self.read_buf.data_mut()[..len];
            let (_, step) = HeadScan::default().next(request, head_limits(&env.config), |parsed, _| {
                let (method, target) = (parsed.req.method.unwrap_or(""), parsed.req.path.unwrap_or(""));
                errors.render(&info.with_request(method, target), response);
            });
            rendered = matches!(step, HeadStep::Complete(..));
        }
        if !rendered {
            env.service.errors.render(&info, &mut env.service.response);
        }
        env.service.response.set_close();
        if env.logs.access.is_some() {
            self.note_unreadable(env.turn.now);
        }
        let head_only = self.answers_head();
        self.queue_response(head_only, Some("close"), env);
        // The client did not ask to close: whatever it sends next must not reset the answer.
        self.closing(AfterFlush::Linger);
        true
    }

    /// Whether the request an error answers is a HEAD, whose answer has no body (RFC 9110
    /// §9.3.2), errors included: known from its head once that was read; before, from the
    /// request line's first bytes (the start of the read buffer, past the empty lines a request
    /// may follow), which name the method even in a head cut short or refused.
    fn answers_head(&self) -> bool {
        match &self.phase {
            Phase::Body(body) => body.head.is_head,
            _ => crate::http::names_head(self.read_buf.data()),
        }
    }

    /// For the access log: when the request an error answers began (its first byte), for one
    /// whose head was not read.
    #[cold]
    fn note_unreadable(&mut self, now: Tick) {
        let started = match &self.phase {
            Phase::Head(head) => head.started.unwrap_or(now),
            Phase::Body(body) => body.started,
            _ => now,
        };
        self.access.get_or_insert_with(Box::default).unreadable(started);
    }

    fn close(&mut self, reason: CloseReason) {
        if !matches!(self.phase, Phase::Closed(_)) {
            debug!("connection {} ({}) closed: {reason:?}", self.client.id, self.client.addr);
            if self.close_delimited
                && reason != CloseReason::Done
                && let Err(e) = self.stream.reset_on_close()
            {
                debug!("connection {}: SO_LINGER: {e}", self.client.id);
            }
            if S::TLS {
                self.stream.on_close(reason);
            }
            let_go(&self.phase);
            self.phase = Phase::Closed(reason);
            self.read_buf.clear();
            // Kept (empty) so the next drive gives it back to the pool.
            self.write_buf.discard();
        }
    }
}

/// A responder or producer still at work hears that its client is gone.
fn let_go(phase: &Phase) {
    match phase {
        Phase::Deferred(deferred) => deferred.exchange.close(),
        Phase::Streaming(streaming) => streaming.exchange.close(),
        _ => {}
    }
}

/// However a connection ends (closed, or dropped with its server: an error, a panic on the
/// loop's thread, an embedder dropping it), a producer never waits for it for ever.
impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        let_go(&self.phase);
    }
}

/// The limits a head is read with.
fn head_limits(config: &ServerConfig) -> HeadLimits {
    HeadLimits {
        max_head_bytes: config.max_head_bytes,
        max_uri_bytes: config.max_uri_bytes,
        max_headers: config.max_headers,
    }
}

/// Runs the handler on a reset response for the request `parsed` with `body` from `client`; a
/// panic becomes a 500 that closes the connection.
fn call_handler(
    env: &mut Env,
    parsed: &ParsedHead<'_, '_>,
    body: &[u8],
    client: &Client,
    tls: Option<&Arc<crate::http::request::TlsInfo>>,
) -> Reply {
    let request =
        Request::received(&parsed.req, parsed.info.version, body, env.turn.draining != Draining::No, client, tls);
    env.service.response.reset();
    env.service.response.head_request = parsed.info.is_head;
    let (handler, response) = (&mut *env.service.handler, &mut env.service.response);
    let reply = match catch_unwind(AssertUnwindSafe(|| handler.handle(&request, response))) {
        Ok(reply) => reply,
        Err(_) => {
            error!("handler panicked on {} {}; answering 500", request.method(), request.target());
            // A responder it made is connected to nothing now: tell it.
            if let Some(exchange) = response.take_deferred() {
                exchange.close();
            }
            let info = ErrorInfo::new(500, INTERNAL_ERROR).for_request(&request);
            env.service.errors.internal_error(&info, &mut env.service.response);
            Reply::Now
        }
    };
    // This turn ran past the slow-turn threshold while a handler ran: this one, the first to
    // return since. (The reply passes through the cold call, so the plain path keeps it where
    // the handler left it.)
    if env.service.beat.flagged() {
        return note_slow_route(&mut env.service, env.turn.now, &request, reply);
    }
    reply
}

/// Names `request` as the one that held up this turn, if the turn flagged is this one and no
/// request was named yet; returns `reply`.
#[cold]
#[inline(never)]
fn note_slow_route(service: &mut Service, now: Tick, request: &Request<'_>, reply: Reply) -> Reply {
    if service.beat.mark_slow(now) && service.slow_route.is_none() {
        service.slow_route = Some(format!("{} {}", request.method(), request.path()));
    }
    reply
}

/// Keeps what the access log needs of `request` until its answer.
#[cold]
#[inline(never)]
fn note_request(access: &mut Option<Box<Pending>>, parsed: &ParsedHead<'_, '_>, started: Tick) {
    let (method, target) = (parsed.req.method.unwrap_or(""), parsed.req.path.unwrap_or(""));
    access.get_or_insert_with(Box::default).begin(method, target, parsed.info.version, started);
}
