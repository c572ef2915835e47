//! The shutdown stage of one server ([`Stage`]: serving, announced, draining, done), what can
//! ask it to move ([`Ask`]), how a run ends ([`Outcome`]), and the [`Observer`] interface
//! through which the process around a server hears of each change (sibling workers that
//! follow it, systemd, the SIGHUP restart) without the reactor knowing any of them.

use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::connection::Draining;
use crate::shutdown::ShutdownHandle;
use crate::timer::Tick;

/// How a [`Server::run`](crate::Server::run) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The drain finished: every connection was served and closed.
    Drained {
        /// From the drain's start (the shutdown request, or the end of a
        /// [`drain_delay`](crate::ServerConfig::drain_delay) after it) to the last connection
        /// closing.
        elapsed: Duration,
    },
    /// The drain finished, but not cleanly: responses were cut short because their clients
    /// took nothing of them for the (drain) write timeout.
    Cut {
        /// From the drain's start (as for [`Outcome::Drained`]) to the last connection closing.
        elapsed: Duration,
        /// Responses cut during the drain.
        cut: u64,
    },
    /// The shutdown timeout passed; the remaining connections were closed.
    TimedOut {
        /// Connections closed by force.
        closed: usize,
    },
    /// An immediate stop (a second signal, or [`ShutdownHandle::immediate`]).
    Stopped {
        /// The signal that asked for it, if one did.
        signal: Option<i32>,
        /// Connections closed by force.
        closed: usize,
    },
}

impl Outcome {
    /// The conventional process exit code: 0 drained (every accepted request answered in
    /// full), 1 cut, timed out or stopped by the handle (the drain did not deliver
    /// everything), 128 + the signal number when stopped by a signal (130 SIGINT, 143 SIGTERM).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Drained { .. } => 0,
            Outcome::Cut { .. } | Outcome::TimedOut { .. } | Outcome::Stopped { signal: None, .. } => 1,
            Outcome::Stopped { signal: Some(signal), .. } => 128 + signal,
        }
    }
}

/// What asked for a drain or a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// The [`ShutdownHandle`].
    Handle,
    /// A restarted copy of the server took over the listening sockets (this process id).
    Restart(u32),
}

impl Cause {
    /// For log lines: `received SIGINT`, `new process 42 is serving`, ...
    pub(crate) fn describe(self) -> String {
        match self {
            Cause::Signal(SIGINT) => "received SIGINT".to_string(),
            Cause::Signal(SIGTERM) => "received SIGTERM".to_string(),
            Cause::Signal(other) => format!("received signal {other}"),
            Cause::Handle => "shutdown requested".to_string(),
            Cause::Restart(pid) => format!("new process {pid} is serving"),
        }
    }

    fn signal(self) -> Option<i32> {
        match self {
            Cause::Signal(signal) => Some(signal),
            Cause::Handle | Cause::Restart(_) => None,
        }
    }
}

/// A request to move the stage on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Drain, after the drain delay; asked again by a signal, stop at once.
    Graceful(Cause),
    /// Drain now, skipping (or cutting short) the drain delay.
    DrainNow(Cause),
    /// Stop now: close everything.
    Immediate(Cause),
}

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drain {
    /// When it began.
    pub started: Tick,
    /// When what is left is closed (the shutdown timeout).
    pub deadline: Tick,
    /// What started it (a signal after a restart's drain began replaces the restart).
    pub cause: Cause,
    /// Requests served before it began (`Stats::served`).
    pub served_before: u64,
    /// Responses cut before it began, by kind (`Stats::cuts`).
    pub cuts_before: [u64; 3],
}

/// Where a server is in its shutdown. It only ever moves forward, and only in
/// `Server::set_stage`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    /// Accepting and serving.
    Serving,
    /// A shutdown was asked for: serving on (with `/healthz` answering 503) until `until`,
    /// the end of the drain delay.
    Announced { until: Tick, cause: Cause },
    /// Not accepting; in-flight requests finish, idle connections close.
    Draining(Drain),
    /// Finished: `run` returns the outcome. `drain` is the drain that came before, if one did.
    Done { outcome: Outcome, drain: Option<Drain> },
}

impl Stage {
    /// What connections are told of it.
    pub(crate) fn draining(&self) -> Draining {
        match self {
            Stage::Serving => Draining::No,
            Stage::Announced { .. } => Draining::Soon,
            Stage::Draining(Drain { cause: Cause::Restart(_), .. }) => Draining::HandingOver,
            Stage::Draining(_) | Stage::Done { .. } => Draining::Now,
        }
    }

    /// When the stage moves on by itself: the end of the drain delay, or the shutdown timeout.
    pub(crate) fn deadline(&self) -> Option<Tick> {
        match self {
            Stage::Announced { until, .. } => Some(*until),
            Stage::Draining(drain) => Some(drain.deadline),
            Stage::Serving | Stage::Done { .. } => None,
        }
    }

    /// The outcome of an immediate stop asked for by `cause`.
    pub(crate) fn stopped(&self, cause: Cause, closed: usize) -> Stage {
        let drain = match self {
            Stage::Draining(drain) => Some(*drain),
            Stage::Done { drain, .. } => *drain,
            Stage::Serving | Stage::Announced { .. } => None,
        };
        Stage::Done { outcome: Outcome::Stopped { signal: cause.signal(), closed }, drain }
    }
}

/// What the process around a server hears of it. Called on the server's thread, at each stage
/// change and at the end of each turn of a drain; keep it quick.
pub(crate) trait Observer: Send {
    /// The stage is now `stage`.
    fn stage_changed(&mut self, stage: &Stage);
    /// A loop turn ended while draining; the counters were just published.
    fn drain_progress(&mut self) {}
    /// SIGHUP arrived while the server is at `stage`. Returns whether this observer restarts
    /// the server (it then asks for the handover itself, through the server's handle).
    fn restart(&mut self, _stage: &Stage) -> bool {
        false
    }
    /// A drain that a successor's handover began became an ordinary one (a signal, or the
    /// handle, asked for the shutdown meanwhile): idle connections are no longer kept. Not a
    /// change of stage.
    fn handover_ended(&mut self) {}
}

/// A follower: another server (a sibling worker) that drains and stops with this one. Each
/// request this server acts on is passed on: the announce as `graceful`, the drain as
/// `drain_now` (a restart's as the same handover, which a later `drain_now` ends), a stop as
/// `immediate`. A drain that ends or times out is not passed on; each server finishes its own.
impl Observer for ShutdownHandle {
    fn handover_ended(&mut self) {
        self.drain_now();
    }

    fn stage_changed(&mut self, stage: &Stage) {
        match stage {
            Stage::Announced { .. } => self.graceful(),
            Stage::Draining(Drain { cause: Cause::Restart(pid), .. }) => self.hand_over(*pid),
            Stage::Draining(_) => self.drain_now(),
            Stage::Done { outcome: Outcome::Stopped { .. }, .. } => self.immediate(),
            Stage::Serving | Stage::Done { .. } => {}
        }
    }
}
