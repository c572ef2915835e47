//! One record per answered request: what an access log writes, or what an embedder counts.
//! Set an [`AccessLog`] with [`Server::set_access_log`](crate::Server::set_access_log) (or
//! [`Worker::set_access_log`](crate::process::Worker::set_access_log) under `process::run`);
//! without one, the request path pays one branch per request and nothing else.
//!
//! A record is made when the server has the whole answer: a response when it is queued, a
//! stream when it ends (finished, dropped, or cut by a timeout or the shutdown), a protocol
//! error when its 4xx/5xx is queued. Every request whose head was read gets exactly one: one
//! that never got an answer (its client left, or the shutdown timeout cut it while its answer
//! was still being made) is recorded with status 0 when its connection closes.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::request::Version;
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
    /// Body bytes of the response, as queued for the client (none for HEAD, 204 or 304; for a
    /// stream, what it queued before it ended). A client that leaves early may get fewer.
    pub body_bytes: u64,
    /// From the first byte of the request to the answer being queued (for a stream, its end;
    /// for a request without an answer, the connection's close).
    pub duration: Duration,
    /// Answered once the server was shutting down (from the first signal on, the drain delay
    /// included: when [`Request::server_draining`](crate::Request::server_draining) says so).
    pub during_drain: bool,
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

/// What a connection keeps of the request it is answering, while an access log is on: the
/// request line outlives the read buffer the handler saw (a deferred answer or a stream comes
/// much later). One per connection, reused: no allocation per request once warm.
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

    /// A request without a record yet (its connection closed in the middle of it): the status
    /// and body bytes it went out with, `(0, 0)` when nothing did, or a stream's status and
    /// what it sent.
    pub(crate) fn unanswered(&self) -> Option<(u16, u64)> {
        self.live.then(|| (self.stream_status.unwrap_or(0), self.streamed))
    }

    /// A request that could not be read (its head is invalid, or never came whole) is answered
    /// with an error; it began at `started`.
    pub(crate) fn unreadable(&mut self, started: Tick) {
        if !self.live {
            self.started = Some(started);
        }
    }

    /// The record of the answer (`-` for a request whose head was not read), and the request
    /// is done with. `now` (the loop turn's time) stands in for a start nobody noted.
    pub(crate) fn finish<'a>(&'a mut self, answer: Answer, now: Tick) -> AccessRecord<'a> {
        let live = std::mem::replace(&mut self.live, false);
        let (method, target) = if live { self.line.split_at(self.method_len) } else { ("-", "-") };
        let started = self.started.take().unwrap_or(now);
        AccessRecord {
            peer: answer.peer,
            connection_id: answer.connection_id,
            method,
            target,
            version: if live { self.version } else { None },
            status: answer.status,
            body_bytes: answer.body_bytes,
            duration: started.until(Tick::now()),
            during_drain: answer.during_drain,
        }
    }
}

/// What the connection knows of an answer when it is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub peer: SocketAddr,
    pub connection_id: u64,
    pub status: u16,
    pub body_bytes: u64,
    pub during_drain: bool,
}
