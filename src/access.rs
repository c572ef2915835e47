//! One record per answered request: what an access log writes, or what an embedder counts.
//! Set an [`AccessLog`] with [`Server::set_access_log`](crate::Server::set_access_log) (or
//! [`Worker::set_access_log`](crate::process::Worker::set_access_log) under `process::run`);
//! without one, the request path pays one branch per request and nothing else.
//!
//! A record is made once the answer is out: a response once its last byte is written (for a
//! client slow to take it, taken), a stream once it ends, a protocol error once its 4xx/5xx is
//! written; or when the connection closes first, with the body bytes that went out and how it
//! ended ([`Ending`]). Every request whose head was read gets exactly one: one that never got
//! an answer (its client left, or the shutdown timeout cut it while its answer was still being
//! made) is recorded with status 0 when its connection closes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http::request::{TlsInfo, Version};
use crate::timer::Tick;

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The client.
    pub peer: SocketAddr,
    /// The connection's id (as [`Request::connection_id`](crate::Request::connection_id)).
    pub connection_id: u64,
    /// The method, or `-` when the request could not be read (a 400, a 408).
    pub method: &'a str,
    /// The request target as sent, or `-`.
    pub target: &'a str,
    /// The request's version, when it was read.
    pub version: Option<Version>,
    /// The status sent, or 0 when no answer went out: the connection closed (the client left,
    /// the shutdown timeout cut it) while the request was still read or answered.
    pub status: u16,
    /// Body bytes of the response that went out: all of them for a response written whole
    /// (none for HEAD, 204 or 304), and for one cut short ([`AccessRecord::ending`]) only what
    /// was written before the connection closed; where the system counts what the client took
    /// (Linux), what it took. A stream's are the body bytes it sent.
    pub body_bytes: u64,
    /// From the first byte of the request to the answer being queued (for a stream, its end;
    /// for a request without an answer, the connection's close).
    pub duration: Duration,
    /// Answered once the server was shutting down (from the first signal on, the drain delay
    /// included: when [`Request::server_draining`](crate::Request::server_draining) says so).
    pub during_drain: bool,
    /// How the response ended on the wire: whole, or cut short and why.
    pub ending: Ending,
    /// The TLS session the request came over (its SNI, version, cipher), `None` over plain
    /// HTTP.
    pub tls: Option<&'a TlsInfo>,
}

/// How a response ended on the wire (see [`AccessRecord::ending`]): the log never claims a
/// delivery that did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Written whole (for a connection whose client was slow to take it, taken whole).
    Complete,
    /// The client closed or reset the connection before all of it went out (or before any
    /// answer: status 0).
    ClientGone,
    /// Cut by the write timeout: the client took nothing of it for that long.
    WriteTimeout,
    /// Cut by the drain write timeout.
    DrainWriteTimeout,
    /// Cut by the shutdown timeout or an immediate stop.
    Shutdown,
    /// A stream whose producer dropped it unfinished: it ended without its last chunk.
    Abandoned,
}

impl Ending {
    /// The name logs use: `complete`, `client_gone`, `write_timeout`, `drain_write_timeout`,
    /// `shutdown`, `abandoned`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::ClientGone => "client_gone",
            Ending::WriteTimeout => "write_timeout",
            Ending::DrainWriteTimeout => "drain_write_timeout",
            Ending::Shutdown => "shutdown",
            Ending::Abandoned => "abandoned",
        }
    }
}

/// Takes each [`AccessRecord`] on the server's thread. `record` must be quick: it runs inside
/// the loop (format into a buffer there, and write the buffer out in `end_of_turn`).
pub trait AccessLog: Send {
    /// One answered request.
    fn record(&mut self, record: &AccessRecord<'_>);

    /// The loop's turn ends (after a turn that recorded something, and once more when the
    /// server stops): the time to write out what was buffered, in one write.
    fn end_of_turn(&mut self) {}
}

impl<F: FnMut(&AccessRecord<'_>) + Send> AccessLog for F {
    fn record(&mut self, record: &AccessRecord<'_>) {
        self(record);
    }
}

/// What a connection keeps for the access log, while one is on: the request being answered
/// (its line outlives the read buffer the handler saw: a deferred answer or a stream comes much
/// later), and the answers queued but not out yet, in order. One per connection, reused: no
/// allocation per request once warm.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Method, then target.
    line: String,
    method_len: usize,
    version: Option<Version>,
    started: Option<Tick>,
    /// A request's head was read and it has no record yet.
    live: bool,
    /// A stream's status, once its head went out.
    stream_status: Option<u16>,
    /// A stream's body bytes so far.
    pub(crate) streamed: u64,
    /// Bytes of output written on the connection so far.
    pub(crate) written: u64,
    /// A write found the socket full since the client last took everything written: what is
    /// written is not yet what the client has, so a record waits for the system's count.
    pub(crate) backlogged: bool,
    /// What the client was last seen to have taken, while it was backlogged.
    pub(crate) seen: u64,
    /// When to ask again whether the client took the answers held (all written).
    pub(crate) recheck: Option<Tick>,
    /// Answers queued whose last byte is not out yet, oldest first.
    held: VecDeque<Held>,
    /// Lines of records made, for the next answers.
    spare: Vec<String>,
}

/// An answer queued, waiting for its last byte to go out.
#[derive(Debug)]
struct Held {
    /// Method then target (empty for a request whose head was not read).
    line: String,
    method_len: usize,
    version: Option<Version>,
    answer: Answer,
    /// Where its last byte is in the connection's output.
    end: u64,
    /// From the request's first byte to the answer being queued.
    duration: Duration,
    /// A stream dropped unfinished.
    abandoned: bool,
}

impl Pending {
    /// A request's head was read.
    pub(crate) fn begin(&mut self, method: &str, target: &str, version: Version, started: Tick) {
        self.line.clear();
        self.line.push_str(method);
        self.line.push_str(target);
        self.method_len = method.len();
        self.version = Some(version);
        self.started = Some(started);
        self.live = true;
        self.stream_status = None;
        self.streamed = 0;
    }

    /// The request being answered is streamed, with `status`.
    pub(crate) fn stream_started(&mut self, status: u16) {
        self.stream_status = Some(status);
    }

    /// A request that could not be read (its head is invalid, or never came whole) is answered
    /// with an error; it began at `started`.
    pub(crate) fn unreadable(&mut self, started: Tick) {
        if !self.live {
            self.started = Some(started);
        }
    }

    /// A stream ended (`abandoned`: dropped unfinished): its answer, with the body it sent, is
    /// queued up to `end`.
    pub(crate) fn stream_ended(
        &mut self,
        answer: impl FnOnce(u16, u64) -> Answer,
        end: u64,
        now: Tick,
        abandoned: bool,
    ) {
        if let (true, Some(status)) = (self.live, self.stream_status) {
            let answer = answer(status, self.streamed);
            self.hold(answer, end, now, abandoned);
        }
    }

    /// The answer to the request being answered is queued, its last byte at `end` in the
    /// output; the request is done with.
    pub(crate) fn hold(&mut self, answer: Answer, end: u64, now: Tick, abandoned: bool) {
        let live = std::mem::replace(&mut self.live, false);
        let started = self.started.take().unwrap_or(now);
        let line =
            if live { std::mem::replace(&mut self.line, self.spare.pop().unwrap_or_default()) } else { String::new() };
        self.held.push_back(Held {
            line,
            method_len: if live { self.method_len } else { 0 },
            version: if live { self.version } else { None },
            answer,
            end,
            duration: started.until(Tick::now()),
            abandoned,
        });
    }

    /// Records every held answer whose last byte the client has (`had`: output bytes out, or
    /// taken), oldest first.
    pub(crate) fn release(&mut self, had: u64, log: &mut dyn AccessLog) -> bool {
        let mut any = false;
        while self.held.front().is_some_and(|held| held.end <= had) {
            if let Some(held) = self.held.pop_front() {
                let ending = if held.abandoned { Ending::Abandoned } else { Ending::Complete };
                self.record(held, ending, had, log);
                any = true;
            }
        }
        any
    }

    /// The connection closed (`ending` says why, for what did not get out) with `had` bytes of
    /// its output out (or taken) of `queued`: every held answer is recorded with what of it
    /// went out, then a request still without an answer (status 0, or a stream's status and
    /// what of its body went out).
    pub(crate) fn close(
        &mut self,
        (had, queued): (u64, u64),
        ending: Ending,
        unanswered: Answer,
        now: Tick,
        log: &mut dyn AccessLog,
    ) {
        while let Some(held) = self.held.pop_front() {
            let ending = match held.abandoned {
                true => Ending::Abandoned,
                false if held.end <= had => Ending::Complete,
                false => ending,
            };
            self.record(held, ending, had, log);
        }
        if self.live {
            let (status, bytes) = (self.stream_status.unwrap_or(0), self.streamed);
            let answer = Answer { status, body_bytes: bytes, ..unanswered };
            // What the stream queued and did not get out (with its chunk framing: a count that
            // errs low) is not counted.
            self.hold(answer, queued.max(had), now, false);
            if let Some(held) = self.held.pop_front() {
                self.record(held, ending, had, log);
            }
        }
    }

    /// Hands one record to the log, its body bytes cut to what went out by `had`.
    fn record(&mut self, held: Held, ending: Ending, had: u64, log: &mut dyn AccessLog) {
        let missing = held.end.saturating_sub(had);
        let (method, target) = if held.method_len > 0 { held.line.split_at(held.method_len) } else { ("-", "-") };
        log.record(&AccessRecord {
            peer: held.answer.peer,
            connection_id: held.answer.connection_id,
            method,
            target,
            version: held.version,
            status: held.answer.status,
            body_bytes: held.answer.body_bytes.saturating_sub(missing),
            duration: held.duration,
            during_drain: held.answer.during_drain,
            ending,
            tls: held.answer.tls.as_deref(),
        });
        let mut line = held.line;
        if self.spare.len() < 4 && line.capacity() > 0 {
            line.clear();
            self.spare.push(line);
        }
    }

    /// Whether answers wait for their last byte.
    pub(crate) fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether a request whose head was read has no answer queued yet.
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }
}

/// What the connection knows of an answer when it is recorded.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub peer: SocketAddr,
    pub connection_id: u64,
    pub status: u16,
    pub body_bytes: u64,
    pub during_drain: bool,
    pub tls: Option<Arc<TlsInfo>>,
}
