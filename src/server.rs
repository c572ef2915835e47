//! [`Server`]: the reactor. One thread, one `mio::Poll`; registered in it are the listener, every
//! connection (in a `Slab`, key = token - [`FIRST_CONNECTION`]), the shutdown waker and the
//! signal source. This is the only module that talks to mio.
//!
//! One loop turn:
//! 1. poll, with the time to the earliest deadline as timeout (zero when work is queued);
//! 2. `dispatch` each event: record readiness and queue the connection, nothing else;
//! 3. `drive_ready`: let each queued connection read, answer and write, within a budget;
//! 4. `accept_pending`: take new connections while a zero-timeout `poll` of the listener says
//!    more are queued (an `accept` that finds none is expensive), up to a batch and the cap;
//! 5. `expire_deadlines`: timeouts, delayed responses, drain last calls; drive those;
//! 6. `check_shutdown`: act on signals, the shutdown handle, the end of a drain delay and a
//!    restarted successor's readiness;
//! 7. `reap_closed`: the only place a connection leaves the slab;
//! 8. stop once a drain has nothing left, or its timeout passed.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::ServerConfig;
use crate::connection::{Connection, DrainRole, Draining, Env};
use crate::counters::DrainReport;
use crate::counters::{ConnState, Counts, StateChange};
use crate::error::Error;
use crate::handler::Handler;
use crate::listen::{self, ReadyState, Successor};
use crate::metrics::{Metrics, Registry};
use crate::shutdown::{self, ShutdownHandle};
use crate::systemd::Notifier;
use crate::timer::Deadlines;
use crate::timer::after;

/// Token of the listening socket.
const LISTENER: Token = Token(0);
/// Token of the shutdown waker.
const WAKER: Token = Token(1);
/// Token of the signal source.
const SIGNALS: Token = Token(2);
/// Token of a restarted successor's readiness pipe.
const SUCCESSOR: Token = Token(3);
/// How long a restarted successor may take to report that it serves.
const SUCCESSOR_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection tokens are slab keys plus this.
const FIRST_CONNECTION: usize = 4;

/// How a [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The drain finished: every connection was served and closed.
    Drained {
        /// From the shutdown request to the last connection closing.
        elapsed: Duration,
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
    /// The conventional process exit code: 0 drained, 1 timed out or stopped by the handle,
    /// 128 + the signal number when stopped by a signal (130 SIGINT, 143 SIGTERM).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Drained { .. } => 0,
            Outcome::TimedOut { .. } | Outcome::Stopped { signal: None, .. } => 1,
            Outcome::Stopped { signal: Some(signal), .. } => 128 + signal,
        }
    }
}

/// What started a drain or a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Signal(i32),
    Handle,
    /// A restarted copy of the server took over the listening sockets.
    Restart(u32),
}

impl Cause {
    fn describe(self) -> String {
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

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    started: Instant,
    deadline: Instant,
    /// Requests answered before it began.
    answered_before: u64,
}

/// systemd's notification socket, and every worker's metrics for its status lines.
struct Systemd {
    notifier: Arc<Notifier>,
    registry: Registry,
    last_active: Option<u64>,
}

type Hook = Box<dyn FnMut(&StateChange) + Send>;

/// A connection and the server's bookkeeping for it.
struct Slot {
    conn: Connection<TcpStream>,
    /// The state last reported to the counts and the hook.
    reported: Option<ConnState>,
    /// The deadline the heap holds for it.
    scheduled: Option<Instant>,
    /// Whether its key is in the ready queue.
    queued: bool,
}

/// A single-threaded HTTP/1.1 server. [`Server::bind`] it, then [`Server::run`] it on the thread
/// that should serve.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Option<Signals>,
    shutdown: ShutdownHandle,
    /// The strongest shutdown request already acted on.
    shutdown_seen: u8,
    connections: Slab<Slot>,
    deadlines: Deadlines,
    ready: VecDeque<usize>,
    closed: Vec<usize>,
    /// Scratch list of due deadlines, reused every turn.
    due: Vec<(Instant, usize)>,
    env: Env,
    hook: Option<Hook>,
    counts: Counts,
    next_id: u64,
    listener_ready: bool,
    signals_ready: bool,
    /// The successor's readiness pipe had an event since it was last read.
    successor_ready: bool,
    accept_paused_until: Option<Instant>,
    last_accept_warning: Option<Instant>,
    /// Shutdown requested; serving on until this instant (the drain delay), then draining.
    announced: Option<(Instant, Cause)>,
    drain: Option<Drain>,
    /// What started the drain.
    drain_cause: Option<Cause>,
    /// Prefix for log lines: empty, or `worker N: ` when the process has several.
    label: String,
    drain_report: DrainReport,
    stop: Option<Outcome>,
    /// At the connection cap: accepting resumes below 90% of it.
    at_cap: bool,
    metrics: Arc<Metrics>,
    /// Other servers (workers) that drain and stop with this one.
    followers: Vec<ShutdownHandle>,
    /// The listening sockets a restarted copy inherits on SIGHUP (empty: SIGHUP is ignored).
    handoff: Vec<RawFd>,
    successor: Option<Successor>,
    /// A successor not ready by then is stopped, and this server serves on.
    successor_deadline: Option<Instant>,
    systemd: Option<Systemd>,
}

impl Server {
    /// Binds the listening socket (with `config.backlog`, and `SO_REUSEPORT` if
    /// `config.reuse_port`) and sets up the poll, the shutdown waker and (if
    /// `config.handle_signals`) the signal source. Serving starts with [`Server::run`];
    /// connections that arrive before that wait in the listen backlog.
    pub fn bind(config: ServerConfig, handler: impl Handler + Send + 'static) -> Result<Server, Error> {
        let listener = listen::bind(config.addr, config.backlog, config.reuse_port)
            .map_err(|source| Error::Bind { addr: config.addr, source })?;
        Server::from_listener(listener, config, handler)
    }

    /// Serves on a socket that is already listening (inherited from systemd or a previous
    /// process, or bound by the caller); `config.addr` is ignored. The socket is made
    /// non-blocking.
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: ServerConfig,
        handler: impl Handler + Send + 'static,
    ) -> Result<Server, Error> {
        listener.set_nonblocking(true).map_err(Error::Setup)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new().map_err(Error::Setup)?;
        let local_addr = listener.local_addr().map_err(Error::Setup)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(Error::Setup)?;
        let waker = mio::Waker::new(poll.registry(), WAKER).map_err(Error::Setup)?;
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(Error::Setup)?;
            poll.registry().register(&mut signals, SIGNALS, Interest::READABLE).map_err(Error::Setup)?;
            Some(signals)
        } else {
            None
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            shutdown: ShutdownHandle::new(waker),
            shutdown_seen: shutdown::NONE,
            connections: Slab::new(),
            deadlines: Deadlines::default(),
            ready: VecDeque::new(),
            closed: Vec::new(),
            due: Vec::new(),
            env: Env::new(config, Box::new(handler), Instant::now()),
            hook: None,
            counts: Counts::default(),
            next_id: 0,
            listener_ready: true,
            signals_ready: false,
            successor_ready: false,
            accept_paused_until: None,
            last_accept_warning: None,
            announced: None,
            drain: None,
            drain_cause: None,
            label: String::new(),
            drain_report: DrainReport::default(),
            stop: None,
            at_cap: false,
            metrics: Arc::default(),
            followers: Vec::new(),
            handoff: Vec::new(),
            successor: None,
            successor_deadline: None,
            systemd: None,
        })
    }

    /// The counters this server publishes (for `/metrics`; see [`Registry`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Names this server in its log lines (`worker N: ...`).
    pub(crate) fn set_label(&mut self, label: String) {
        self.label = label;
    }

    /// Publishes into `metrics` instead of this server's own (a process shares a registry).
    pub(crate) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    /// Makes `other` drain and stop with this server: each shutdown request this server acts
    /// on (from a signal or its handle) is passed on. This is how one signal stops all workers.
    pub fn add_follower(&mut self, other: ShutdownHandle) {
        self.followers.push(other);
    }

    /// Enables zero-downtime restart on SIGHUP: a new copy of this executable, with the same
    /// arguments, inherits `listeners` (the raw descriptors of every listening socket of the
    /// process); once it reports that it serves, this server (and its followers) drain. If it
    /// fails to start, this one keeps serving.
    ///
    /// # Safety
    ///
    /// Every descriptor in `listeners` must stay open for as long as this server may act on a
    /// SIGHUP, that is until it (and so each follower) has begun to drain.
    pub unsafe fn enable_restart(&mut self, listeners: Vec<RawFd>) {
        self.handoff = listeners;
    }

    /// Sends systemd's service manager `STOPPING=1` when the shutdown begins and `STATUS=`
    /// lines with the live count of active connections (over every worker in `registry`)
    /// while draining.
    pub(crate) fn notify_systemd(&mut self, notifier: Arc<Notifier>, registry: Registry) {
        self.systemd = Some(Systemd { notifier, registry, last_active: None });
    }

    /// The raw descriptor of the listening socket, while it listens.
    pub fn listener_fd(&self) -> Option<RawFd> {
        self.listener.as_ref().map(|l| l.as_raw_fd())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop this server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Calls `hook` on every connection state change (New, Active, Idle, Closed), with the live
    /// counts after it. It runs on the loop thread: keep it quick.
    pub fn on_state_change(&mut self, hook: impl FnMut(&StateChange) + Send + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Serves until a shutdown completes. Errors only when the poll itself fails.
    pub fn run(mut self) -> Result<Outcome, Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            let now = Instant::now();
            self.env.now = now;
            self.env.draining = self.draining();
            self.env.date.refresh(SystemTime::now());
            for event in events.iter() {
                self.dispatch(event);
            }
            self.drive_ready(now);
            self.accept_pending(now);
            self.expire_deadlines(now);
            self.check_shutdown(now);
            self.env.draining = self.draining();
            self.reap_closed(now);
            let outcome = self.finished(now);
            self.publish(now);
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    /// Publishes the counters for `/metrics`, and the drain's progress to systemd.
    fn publish(&mut self, now: Instant) {
        self.metrics.publish(&self.env.stats, &self.counts);
        if self.announced.is_none() && self.drain.is_none() && self.stop.is_none() {
            return;
        }
        if let Some(drain) = self.drain {
            self.drain_report.served = self.env.stats.answered() - drain.answered_before;
            if self.stop.is_none() {
                self.drain_report.micros = duration_micros(now.saturating_duration_since(drain.started));
            }
            self.notify_drain_status();
        }
        self.metrics.publish_drain(&self.drain_report);
    }

    /// Tells systemd how many connections (over every worker) are still active, when it changed.
    fn notify_drain_status(&mut self) {
        let Some(systemd) = self.systemd.as_mut() else { return };
        let active: u64 = systemd.registry.workers().iter().map(|m| m.active()).sum();
        if systemd.last_active != Some(active) {
            systemd.last_active = Some(active);
            systemd.notifier.status(&format!("draining: {active} active"));
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.stop.is_some() || (self.listener_ready && self.may_accept(now)) {
            return Some(Duration::ZERO);
        }
        let candidates = [
            self.deadlines.next(),
            self.drain.map(|d| d.deadline),
            self.announced.map(|(until, _)| until),
            self.successor_deadline,
            self.accept_paused_until.filter(|_| self.listener.is_some()),
        ];
        let next = candidates.into_iter().flatten().min()?;
        Some(next.saturating_duration_since(now))
    }

    /// Records readiness; never touches the slab's membership.
    fn dispatch(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.listener_ready = true,
            SIGNALS => self.signals_ready = true,
            SUCCESSOR => self.successor_ready = true,
            WAKER => {}
            Token(token) => {
                let key = token - FIRST_CONNECTION;
                let Some(slot) = self.connections.get_mut(key) else { return };
                let failed = event.is_error();
                slot.conn.on_ready(
                    event.is_readable(),
                    event.is_writable() || event.is_write_closed() || failed,
                    event.is_read_closed() || failed,
                );
                if !slot.queued {
                    slot.queued = true;
                    self.ready.push_back(key);
                }
            }
        }
    }

    /// What connections are told of the shutdown.
    fn draining(&self) -> Draining {
        if self.drain.is_some() {
            Draining::Now
        } else if self.announced.is_some() {
            Draining::Soon
        } else {
            Draining::No
        }
    }

    /// Drives each queued connection once; those that used up their budget go to the back.
    fn drive_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else { break };
            let _ = now;
            let Some(slot) = self.connections.get_mut(key) else { continue };
            slot.queued = false;
            let more = slot.conn.drive(&mut self.env);
            if more {
                slot.queued = true;
                self.ready.push_back(key);
            }
            self.sync(key);
        }
    }

    /// Brings the counts, the hook and the deadline heap in line with the connection.
    fn sync(&mut self, key: usize) {
        let Some(slot) = self.connections.get_mut(key) else { return };
        let state = slot.conn.state();
        // A request that began and ended within one turn still made the connection Active.
        if slot.conn.take_activity() && state != ConnState::Active && slot.reported != Some(ConnState::Active) {
            let from = slot.reported.replace(ConnState::Active);
            let (id, peer) = (slot.conn.id, slot.conn.peer);
            self.transition(id, peer, from, ConnState::Active);
        }
        let Some(slot) = self.connections.get_mut(key) else { return };
        if slot.reported != Some(state) {
            let from = slot.reported.replace(state);
            let (id, peer) = (slot.conn.id, slot.conn.peer);
            if state == ConnState::Closed {
                self.closed.push(key);
            }
            self.transition(id, peer, from, state);
        }
        let Some(slot) = self.connections.get_mut(key) else { return };
        if let Some(deadline) = slot.conn.deadline(&self.env.config)
            && slot.scheduled.is_none_or(|scheduled| deadline < scheduled)
        {
            slot.scheduled = Some(deadline);
            self.deadlines.push(deadline, key);
        }
    }

    /// The one place the counts change.
    fn transition(&mut self, id: u64, peer: SocketAddr, from: Option<ConnState>, to: ConnState) {
        let active_before = self.counts.active;
        self.counts.apply(from, to);
        if let Some(hook) = self.hook.as_mut() {
            hook(&StateChange { id, peer, from, to, counts: self.counts });
        }
        if self.drain.is_some() && self.counts.active != active_before && self.stop.is_none() {
            info!("{}active connections: {}", self.label, self.counts.active);
        }
    }

    fn may_accept(&self, now: Instant) -> bool {
        self.listener.is_some() && !self.at_cap && self.accept_paused_until.is_none_or(|until| until <= now)
    }

    /// Stops accepting at the connection cap; resumes below 90% of it, so accepting does not
    /// flap on every close at the edge.
    fn update_cap(&mut self) {
        let open = self.connections.len();
        let cap = self.env.config.max_connections.max(1);
        if !self.at_cap && open >= cap {
            self.at_cap = true;
            warn!("{}{open} connections open: at the connection cap, new ones wait in the backlog", self.label);
        } else if self.at_cap && open < cap - cap / 10 {
            self.at_cap = false;
            info!("{}{open} connections open: accepting again", self.label);
        }
    }

    /// Accepts up to a batch of connections while under the cap.
    fn accept_pending(&mut self, now: Instant) {
        if !self.listener_ready {
            return;
        }
        for _ in 0..self.env.config.accept_batch.max(1) {
            if !self.may_accept(now) {
                return;
            }
            self.accept_paused_until = None;
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let more = accept_queue_nonempty(listener);
                    self.add_connection(stream, peer, now);
                    if !more {
                        // As after WouldBlock: the listener is edge-triggered, so a connection
                        // queued after this look brings a new event.
                        self.listener_ready = false;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory (or worse): pause, never spin.
                    self.accept_paused_until = Some(after(now, self.env.config.accept_backoff));
                    let quiet = self.last_accept_warning.is_some_and(|t| now < after(t, Duration::from_secs(1)));
                    if !quiet {
                        warn!("accept failed: {e}; pausing accepts for {:?}", self.env.config.accept_backoff);
                        self.last_accept_warning = Some(now);
                    }
                    return;
                }
            }
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let token = Token(key + FIRST_CONNECTION);
        if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            warn!("cannot register connection from {peer}: {e}");
            return;
        }
        self.next_id += 1;
        self.env.stats.accepted += 1;
        entry.insert(Slot {
            conn: Connection::new(stream, self.next_id, peer, now),
            reported: None,
            scheduled: None,
            queued: false,
        });
        self.sync(key);
        self.update_cap();
    }

    /// Pops due deadlines; acts on the ones still current, re-arms the ones that moved later.
    /// Everything due is popped first, so an entry re-armed at a past instant waits for the next
    /// turn instead of being popped again in this one.
    fn expire_deadlines(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(entry) = self.deadlines.pop_due(now) {
            due.push(entry);
        }
        for &(at, key) in &due {
            let Some(slot) = self.connections.get_mut(key) else { continue };
            if slot.scheduled != Some(at) {
                continue; // stale entry
            }
            slot.scheduled = None;
            if slot.conn.deadline(&self.env.config).is_some_and(|deadline| deadline <= now) {
                slot.conn.expire(&mut self.env);
                if !slot.queued {
                    slot.queued = true;
                    self.ready.push_back(key);
                }
            } else {
                self.sync(key);
            }
        }
        if !due.is_empty() {
            // Send delayed responses and timeout answers in this turn; syncs the driven ones.
            self.drive_ready(now);
        }
        due.clear();
        self.due = due;
        // Stale entries pile up when deadlines move earlier; sweep them now and then.
        if self.deadlines.len() > 2 * self.connections.len() + 1024 {
            let connections = &self.connections;
            self.deadlines.retain(|at, key| connections.get(key).is_some_and(|s| s.scheduled == Some(at)));
        }
    }

    /// Acts on pending signals, shutdown-handle requests, the end of the drain delay and a
    /// restarted successor.
    fn check_shutdown(&mut self, now: Instant) {
        if self.signals_ready {
            self.signals_ready = false;
            let mut received = Vec::new();
            if let Some(signals) = self.signals.as_mut() {
                received.extend(signals.pending());
            }
            for signal in received {
                if signal == SIGHUP {
                    self.restart(now);
                } else {
                    self.shutdown_requested(Cause::Signal(signal), now);
                }
            }
        }
        let requested = self.shutdown.requested();
        if requested > self.shutdown_seen {
            self.shutdown_seen = requested;
            match requested {
                shutdown::IMMEDIATE => self.stop_now(Cause::Handle),
                shutdown::DRAIN_NOW => self.drain_now(Cause::Handle, now),
                _ => self.shutdown_requested(Cause::Handle, now),
            }
        }
        if let Some((until, cause)) = self.announced
            && until <= now
        {
            self.drain_now(cause, now);
        }
        // The pipe is read when it has news (its event) or the successor ran out of time.
        if std::mem::take(&mut self.successor_ready) || self.successor_deadline.is_some_and(|d| d <= now) {
            self.check_successor(now);
        }
    }

    /// A first request drains (after the drain delay), a second signal stops at once.
    fn shutdown_requested(&mut self, cause: Cause, now: Instant) {
        if self.stop.is_some() {
            return;
        }
        if self.drain.is_none() && self.announced.is_none() {
            if self.env.config.drain_delay.is_zero() {
                self.drain_now(cause, now);
                return;
            }
            for follower in &self.followers {
                follower.graceful();
            }
            if let Some(systemd) = &self.systemd {
                systemd.notifier.stopping();
            }
            let delay = self.env.config.drain_delay;
            info!(
                "{}{}: draining in {}, serving until then (/healthz answers 503)",
                self.label,
                cause.describe(),
                humantime::format_duration(delay)
            );
            self.announced = Some((after(now, delay), cause));
        } else if let Cause::Signal(_) = cause {
            if self.drain_cause.is_some_and(|c| matches!(c, Cause::Restart(_))) {
                // Handing over to a successor: this is the first signal, not a second one.
                info!("{}{}: already draining after a restart", self.label, cause.describe());
                self.drain_cause = Some(cause);
            } else {
                self.stop_now(cause);
            }
        }
    }

    /// Starts the drain now, with no (or no more) drain delay.
    fn drain_now(&mut self, cause: Cause, now: Instant) {
        if self.stop.is_some() || self.drain.is_some() {
            return;
        }
        // A restart hands the service over rather than stopping it.
        if self.announced.is_none()
            && !matches!(cause, Cause::Restart(_))
            && let Some(systemd) = &self.systemd
        {
            systemd.notifier.stopping();
        }
        for follower in &self.followers {
            follower.drain_now();
        }
        self.begin_drain(cause, now);
    }

    /// SIGHUP: start a copy of this program on the same listening sockets.
    fn restart(&mut self, now: Instant) {
        if self.handoff.is_empty() {
            warn!("received SIGHUP: restart is not enabled here; ignored");
            return;
        }
        if self.drain.is_some() || self.announced.is_some() || self.successor.is_some() {
            warn!("received SIGHUP: already shutting down or restarting; ignored");
            return;
        }
        if let Some(systemd) = &self.systemd {
            systemd.notifier.reloading();
        }
        // SAFETY: `enable_restart`'s contract: the descriptors are open until the drain begins,
        // and this runs only before it.
        let fds: Vec<BorrowedFd<'_>> = self.handoff.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }).collect();
        let spawned = listen::spawn_successor(&fds);
        drop(fds);
        match spawned {
            Ok(mut successor) => {
                let fd = successor.ready_fd();
                match self.poll.registry().register(&mut SourceFd(&fd), SUCCESSOR, Interest::READABLE) {
                    Ok(()) => {
                        info!("received SIGHUP: started new process {}; serving until it is ready", successor.id());
                        self.successor = Some(successor);
                        self.successor_deadline = Some(after(now, SUCCESSOR_READY_TIMEOUT));
                        self.check_successor(now);
                    }
                    Err(e) => {
                        error!("received SIGHUP: cannot watch the new process: {e}; stopping it, serving on");
                        let _ = successor.kill();
                        self.restart_failed();
                    }
                }
            }
            Err(e) => {
                error!("received SIGHUP: cannot start a new process: {e}; serving on");
                self.restart_failed();
            }
        }
    }

    /// Ends systemd's "reloading" state after a failed restart.
    fn restart_failed(&self) {
        if let Some(systemd) = &self.systemd {
            systemd.notifier.ready();
            systemd.notifier.status("restart failed; the old process serves on");
        }
    }

    /// A successor that reports it serves takes over: drain. One that died first: serve on.
    fn check_successor(&mut self, now: Instant) {
        let Some(successor) = self.successor.as_mut() else { return };
        let state = successor.poll_ready();
        let pid = successor.id();
        match state {
            Ok(ReadyState::Pending) => {
                if self.successor_deadline.is_some_and(|deadline| deadline <= now) {
                    let status = self.successor.as_mut().map(Successor::kill);
                    error!(
                        "new process {pid} was not ready within {}s; stopped it ({status:?}); serving on",
                        SUCCESSOR_READY_TIMEOUT.as_secs()
                    );
                    self.forget_successor();
                    self.restart_failed();
                }
            }
            Ok(ReadyState::Ready) => {
                self.forget_successor();
                if let Some(systemd) = &self.systemd {
                    systemd.notifier.handoff(pid);
                }
                self.drain_now(Cause::Restart(pid), now);
            }
            Ok(ReadyState::Failed) | Err(_) => {
                // Reaped either way; killed first if it is still running without being ready.
                match self.successor.as_mut().map(Successor::kill) {
                    Some(Ok(status)) => error!("new process {pid} failed before it was ready ({status}); serving on"),
                    _ => error!("new process {pid} closed its readiness pipe without being ready; serving on"),
                }
                self.forget_successor();
                self.restart_failed();
            }
        }
    }

    fn forget_successor(&mut self) {
        self.successor_deadline = None;
        if let Some(successor) = self.successor.take() {
            let fd = successor.ready_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// Stops listening (after accepting the backlog), applies the drain policy to every
    /// connection and logs what it found.
    fn begin_drain(&mut self, cause: Cause, now: Instant) {
        if let Some(mut listener) = self.listener.take() {
            // Clients that completed the handshake are served, not reset.
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => self.add_connection(stream, peer, now),
                    Err(e) if is_transient_accept_error(&e) => {}
                    Err(_) => break,
                }
            }
            if let Err(e) = self.poll.registry().deregister(&mut listener) {
                debug!("deregistering the listener: {e}");
            }
        }
        self.announced = None;
        self.drain_cause = Some(cause);
        self.drain = Some(Drain {
            started: now,
            deadline: after(now, self.env.config.shutdown_timeout),
            answered_before: self.env.stats.answered(),
        });
        self.drain_report.at_start = self.counts;
        let (mut closing, mut last_call) = (0, 0);
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.connections.get_mut(key) {
                match conn.conn.drain(now, &self.env.config, true) {
                    DrainRole::CloseIdle => closing += 1,
                    DrainRole::LastCall => last_call += 1,
                    DrainRole::Finish | DrainRole::Gone => {}
                }
            }
            self.sync(key);
        }
        let mut message =
            format!("{}: draining {} active, closing {closing} idle", cause.describe(), self.counts.active);
        if last_call > 0 {
            message.push_str(&format!(", last call for {last_call} new or just-used"));
        }
        info!("{}{message}", self.label);
    }

    fn stop_now(&mut self, cause: Cause) {
        for follower in &self.followers {
            follower.immediate();
        }
        let closed = self.close_all();
        info!("{}{}: stopping now, closed {closed} connections", self.label, cause.describe());
        self.stop = Some(Outcome::Stopped { signal: cause.signal(), closed });
    }

    /// Closes every connection (reported as Closed, counted as closed by force) and returns how
    /// many there were.
    fn close_all(&mut self) -> usize {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let count = keys.len();
        for key in keys {
            if let Some(slot) = self.connections.get_mut(key) {
                slot.conn.abort();
            }
            self.sync(key);
        }
        self.closed.clear();
        // Dropping a stream closes its socket, which also takes it out of the poll.
        self.connections.clear();
        self.drain_report.forced += count as u64;
        count
    }

    /// Removes closed connections: the only place the slab shrinks.
    fn reap_closed(&mut self, now: Instant) {
        if self.closed.is_empty() {
            return;
        }
        for key in self.closed.drain(..) {
            // Closing the socket (by dropping it) also removes it from the poll: no
            // `epoll_ctl(DEL)` per connection. Its descriptor is not shared with anything.
            if let Some(Slot { conn, .. }) = self.connections.try_remove(key) {
                log::trace!("connection {} ({}) removed: {:?}", conn.id, conn.peer, conn.close_reason());
            }
        }
        // A closed connection frees a descriptor: retry a paused accept now.
        if self.accept_paused_until.is_some_and(|until| until > now) {
            self.accept_paused_until = Some(now);
        }
        self.update_cap();
    }

    /// The outcome, once the server should stop.
    fn finished(&mut self, now: Instant) -> Option<Outcome> {
        if let Some(outcome) = self.stop {
            return Some(outcome);
        }
        let drain = self.drain?;
        if self.connections.is_empty() {
            let elapsed = now.saturating_duration_since(drain.started);
            info!("{}drained in {:.2}s", self.label, elapsed.as_secs_f64());
            return Some(Outcome::Drained { elapsed });
        }
        if drain.deadline <= now {
            let closed = self.close_all();
            info!("{}shutdown timeout: closed {closed} connections", self.label);
            return Some(Outcome::TimedOut { closed });
        }
        None
    }
}

/// Whether a connection is waiting in `listener`'s accept queue (a zero-timeout `poll`). Asking
/// is far cheaper than an `accept` that finds the queue empty: Linux sets up the new socket and
/// its file before it looks at the queue, and tears them down again on `EAGAIN` (3.4 µs of CPU
/// against 0.3 µs for the `poll`, measured on the benchmark machine). On an error, answers yes
/// and lets `accept` find out.
fn accept_queue_nonempty(listener: &TcpListener) -> bool {
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `pfd` is one valid, initialised pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, 0) != 0 }
}

/// Microseconds, saturating.
fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Accept errors that concern one connection only: try the next one. Anything else pauses
/// accepting for `accept_backoff`, so an unknown error can slow accepts but never spin the loop.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}
