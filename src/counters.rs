//! What the loop counts, and nothing else: the public lifecycle of a connection ([`ConnState`]),
//! the live counts per state ([`Counts`]), what the state-change hook receives
//! ([`StateChange`]), the loop's running totals (`Stats`) and what a drain did ([`DrainReport`]).
//!
//! A leaf: it imports nothing from the crate, so the connection (which counts), the server (which
//! keeps the counts) and `metrics` (which publishes them) all depend on it and not on each other.

use std::net::SocketAddr;

/// Where a connection is in its life. This is what the state hook reports, what the counts
/// count and what a graceful drain waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Accepted; no byte of a request has arrived yet.
    New,
    /// A request is being read, handled, delayed or answered (or the connection is closing
    /// cleanly after its last response).
    Active,
    /// Keep-alive: between requests, nothing buffered, nothing to write.
    Idle,
    /// Closed and removed from the server.
    Closed,
}

/// Live connections per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections in [`ConnState::New`].
    pub new: usize,
    /// Connections in [`ConnState::Active`].
    pub active: usize,
    /// Connections in [`ConnState::Idle`].
    pub idle: usize,
}

impl Counts {
    /// All live connections.
    pub fn total(&self) -> usize {
        self.new + self.active + self.idle
    }

    /// Moves one connection from `from` (None: it did not exist) to `to`. The only code that
    /// changes the counts.
    pub(crate) fn apply(&mut self, from: Option<ConnState>, to: ConnState) {
        if let Some(slot) = from.and_then(|from| self.slot(from)) {
            *slot = slot.saturating_sub(1);
        }
        if let Some(slot) = self.slot(to) {
            *slot += 1;
        }
    }

    fn slot(&mut self, state: ConnState) -> Option<&mut usize> {
        match state {
            ConnState::New => Some(&mut self.new),
            ConnState::Active => Some(&mut self.active),
            ConnState::Idle => Some(&mut self.idle),
            ConnState::Closed => None,
        }
    }
}

/// One transition, as given to the hook set with
/// [`Server::on_state_change`](crate::Server::on_state_change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The connection: a number unique for the server's lifetime (not reused like tokens).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The state before (None for a connection just accepted).
    pub from: Option<ConnState>,
    /// The state now.
    pub to: ConnState,
    /// The live counts after this change.
    pub counts: Counts,
}

/// What the loop counts as it goes, owned by the loop (no atomics).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Responses sent by status class (index 0 is 1xx).
    pub responses: [u64; 5],
    /// Request bytes read.
    pub bytes_in: u64,
    /// Response bytes written.
    pub bytes_out: u64,
    /// Answers deferred to a responder.
    pub deferred: u64,
    /// Streamed responses started.
    pub streams: u64,
    /// Streamed responses that ended with their last chunk (or whose head was the whole response).
    pub streams_finished: u64,
    /// Responses cut short, by [`Cut`].
    pub cuts: [u64; 3],
    /// Loop turns longer than the slow-turn threshold.
    pub slow_turns: u64,
}

/// Why the server cut a response short: its client stopped taking it, or the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The write timeout: the client took nothing for that long.
    WriteTimeout = 0,
    /// The drain write timeout, the same during a drain.
    DrainWriteTimeout = 1,
    /// The shutdown timeout, or an immediate stop, closed it in the middle of a response.
    Shutdown = 2,
}

impl Cut {
    /// Every kind, in the order of [`Stats::cuts`], with the name `/metrics` and the exit
    /// summary give it.
    pub(crate) const ALL: [(Cut, &'static str); 3] = [
        (Cut::WriteTimeout, "write_timeout"),
        (Cut::DrainWriteTimeout, "drain_write_timeout"),
        (Cut::Shutdown, "shutdown"),
    ];
}

impl Stats {
    /// Counts one response with `status`.
    pub(crate) fn response(&mut self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class] += 1;
    }

    /// Final responses (2xx to 5xx): requests answered.
    pub(crate) fn answered(&self) -> u64 {
        self.responses[1..].iter().sum()
    }

    /// Requests served whole: final responses, with a stream counted when it ends rather than
    /// when its head goes out.
    pub(crate) fn served(&self) -> u64 {
        (self.answered() + self.streams_finished).saturating_sub(self.streams)
    }

    /// Counts a response cut short.
    pub(crate) fn cut(&mut self, cut: Cut) {
        self.cuts[cut as usize] += 1;
    }
}

/// Responses cut short, by why (see [`DrainReport::cut`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutCounts {
    /// The client took nothing for the write timeout.
    pub write_timeout: u64,
    /// The client took nothing for the drain write timeout.
    pub drain_write_timeout: u64,
    /// The shutdown timeout or an immediate stop closed the connection mid-response.
    pub shutdown: u64,
}

impl CutCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.write_timeout + self.drain_write_timeout + self.shutdown
    }

    /// From per-kind totals, less what they were at `before`.
    pub(crate) fn since(now: &[u64; 3], before: &[u64; 3]) -> CutCounts {
        let d = |i: usize| now[i].saturating_sub(before[i]);
        CutCounts { write_timeout: d(0), drain_write_timeout: d(1), shutdown: d(2) }
    }

    /// Added up (over workers).
    pub(crate) fn plus(self, o: CutCounts) -> CutCounts {
        CutCounts {
            write_timeout: self.write_timeout + o.write_timeout,
            drain_write_timeout: self.drain_write_timeout + o.drain_write_timeout,
            shutdown: self.shutdown + o.shutdown,
        }
    }
}

/// What happened during a drain, for the exit summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections per state when the drain began.
    pub at_start: Counts,
    /// Requests answered after the drain began.
    pub served: u64,
    /// Connections closed by force (shutdown timeout or immediate stop).
    pub forced: u64,
    /// Of those, how many were cut in the middle of a streamed response.
    pub streams_cut: u64,
    /// Responses cut short during the drain, by why: the client took nothing of its response
    /// for the write timeout or the drain write timeout, or the shutdown timeout (or a second
    /// signal) closed its connection in the middle of it. A drain that cut anything is not clean.
    pub cut: CutCounts,
    /// From the start of the drain to its end (or to now, while it runs), in microseconds.
    pub micros: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnState::*;

    #[test]
    fn counts_follow_transitions() {
        let mut c = Counts::default();
        c.apply(None, New);
        c.apply(None, New);
        c.apply(Some(New), Active);
        assert_eq!(c, Counts { new: 1, active: 1, idle: 0 });
        c.apply(Some(Active), Idle);
        c.apply(Some(Idle), Active);
        c.apply(Some(Active), Closed);
        c.apply(Some(New), Closed);
        assert_eq!(c, Counts::default());
        assert_eq!(c.total(), 0);
    }
}
