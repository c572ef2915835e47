//! [`Server`]: the reactor. One thread, one `mio::Poll`; registered in it are the listener, every
//! connection (in a `Slab`, key = token - [`FIRST_CONNECTION`]), the shutdown waker and the
//! signal source. This is the only module that talks to mio.
//!
//! One loop turn:
//! 1. poll, with the time to the earliest deadline as timeout (zero when work is queued);
//! 2. `dispatch` each event: record readiness and queue the connection, nothing else;
//! 3. `drive_ready`: let each queued connection read, answer and write, within a budget;
//! 4. `accept_pending`: take new connections, up to a batch and the connection cap;
//! 5. `expire_deadlines`: timeouts, delayed responses, drain last calls; drive those;
//! 6. `check_shutdown`: act on signals and the shutdown handle;
//! 7. `reap_closed`: the only place a connection leaves the slab;
//! 8. stop once a drain has nothing left, or its timeout passed.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::ServerConfig;
use crate::connection::buffer::BufPool;
use crate::connection::state::{ConnState, Counts, StateChange};
use crate::connection::{Connection, DrainRole, Env, after};
use crate::error::Error;
use crate::handler::Handler;
use crate::http::date::DateCache;
use crate::http::response::Response;
use crate::shutdown::{self, ShutdownHandle};
use crate::timer::Deadlines;

/// Token of the listening socket.
const LISTENER: Token = Token(0);
/// Token of the shutdown waker.
const WAKER: Token = Token(1);
/// Token of the signal source.
const SIGNALS: Token = Token(2);
/// Connection tokens are slab keys plus this.
const FIRST_CONNECTION: usize = 3;

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
}

impl Cause {
    fn describe(self) -> String {
        match self {
            Cause::Signal(SIGINT) => "received SIGINT".to_string(),
            Cause::Signal(SIGTERM) => "received SIGTERM".to_string(),
            Cause::Signal(other) => format!("received signal {other}"),
            Cause::Handle => "shutdown requested".to_string(),
        }
    }

    fn signal(self) -> Option<i32> {
        match self {
            Cause::Signal(signal) => Some(signal),
            Cause::Handle => None,
        }
    }
}

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    started: Instant,
    deadline: Instant,
}

type Hook = Box<dyn FnMut(&StateChange) + Send>;

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
    connections: Slab<Connection<TcpStream>>,
    deadlines: Deadlines,
    ready: VecDeque<usize>,
    closed: Vec<usize>,
    /// Scratch list of due deadlines, reused every turn.
    due: Vec<(Instant, usize)>,
    config: ServerConfig,
    handler: Box<dyn Handler + Send>,
    hook: Option<Hook>,
    counts: Counts,
    date: DateCache,
    pool: BufPool,
    response: Response,
    next_id: u64,
    listener_ready: bool,
    signals_ready: bool,
    accept_paused_until: Option<Instant>,
    last_accept_warning: Option<Instant>,
    drain: Option<Drain>,
    stop: Option<Outcome>,
}

impl Server {
    /// Binds the listening socket and sets up the poll, the shutdown waker and (if
    /// `config.handle_signals`) the SIGINT/SIGTERM source. Serving starts with [`Server::run`];
    /// connections that arrive before that wait in the listen backlog.
    pub fn bind(config: ServerConfig, handler: impl Handler + Send + 'static) -> Result<Server, Error> {
        let poll = Poll::new().map_err(Error::Setup)?;
        let mut listener =
            TcpListener::bind(config.addr).map_err(|source| Error::Bind { addr: config.addr, source })?;
        let local_addr = listener.local_addr().map_err(Error::Setup)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(Error::Setup)?;
        let waker = mio::Waker::new(poll.registry(), WAKER).map_err(Error::Setup)?;
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(Error::Setup)?;
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
            config,
            handler: Box::new(handler),
            hook: None,
            counts: Counts::default(),
            date: DateCache::new(),
            pool: BufPool::default(),
            response: Response::new(),
            next_id: 0,
            listener_ready: true,
            signals_ready: false,
            accept_paused_until: None,
            last_accept_warning: None,
            drain: None,
            stop: None,
        })
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
            self.date.refresh(SystemTime::now());
            for event in events.iter() {
                self.dispatch(event);
            }
            self.drive_ready(now);
            self.accept_pending(now);
            self.expire_deadlines(now);
            self.check_shutdown(now);
            self.reap_closed(now);
            if let Some(outcome) = self.finished(now) {
                return Ok(outcome);
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.stop.is_some() || (self.listener_ready && self.may_accept(now)) {
            return Some(Duration::ZERO);
        }
        let candidates = [
            self.deadlines.next(),
            self.drain.map(|d| d.deadline),
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
            WAKER => {}
            Token(token) => {
                let key = token - FIRST_CONNECTION;
                let Some(conn) = self.connections.get_mut(key) else { return };
                let failed = event.is_error();
                if event.is_readable() || event.is_read_closed() || failed {
                    conn.readable = true;
                }
                if event.is_read_closed() || failed {
                    conn.read_closed_hint = true;
                }
                if event.is_writable() || event.is_write_closed() || failed {
                    conn.writable = true;
                }
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
            }
        }
    }

    fn env(&mut self, now: Instant) -> (Env<'_>, &mut Slab<Connection<TcpStream>>) {
        let env = Env {
            now,
            config: &self.config,
            handler: &mut *self.handler,
            date: self.date.get(),
            draining: self.drain.is_some(),
            pool: &mut self.pool,
            response: &mut self.response,
        };
        (env, &mut self.connections)
    }

    /// Drives each queued connection once; those that used up their budget go to the back.
    fn drive_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else { break };
            let (mut env, connections) = self.env(now);
            let Some(conn) = connections.get_mut(key) else { continue };
            conn.queued = false;
            let more = conn.drive(&mut env);
            if more {
                conn.queued = true;
                self.ready.push_back(key);
            }
            self.sync(key);
        }
    }

    /// Brings the counts, the hook and the deadline heap in line with the connection.
    fn sync(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else { return };
        let state = conn.state();
        if conn.reported != Some(state) {
            let from = conn.reported.replace(state);
            let (id, peer) = (conn.id, conn.peer);
            if state == ConnState::Closed {
                self.closed.push(key);
            }
            self.transition(id, peer, from, state);
        }
        let Some(conn) = self.connections.get_mut(key) else { return };
        if let Some(deadline) = conn.deadline(&self.config)
            && conn.scheduled.is_none_or(|scheduled| deadline < scheduled)
        {
            conn.scheduled = Some(deadline);
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
            info!("active connections: {}", self.counts.active);
        }
    }

    fn may_accept(&self, now: Instant) -> bool {
        self.listener.is_some()
            && self.connections.len() < self.config.max_connections
            && self.accept_paused_until.is_none_or(|until| until <= now)
    }

    /// Accepts up to a batch of connections while under the cap.
    fn accept_pending(&mut self, now: Instant) {
        if !self.listener_ready {
            return;
        }
        for _ in 0..self.config.accept_batch.max(1) {
            if !self.may_accept(now) {
                return;
            }
            self.accept_paused_until = None;
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => self.add_connection(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory (or worse): pause, never spin.
                    self.accept_paused_until = Some(after(now, self.config.accept_backoff));
                    let quiet = self.last_accept_warning.is_some_and(|t| now < after(t, Duration::from_secs(1)));
                    if !quiet {
                        warn!("accept failed: {e}; pausing accepts for {:?}", self.config.accept_backoff);
                        self.last_accept_warning = Some(now);
                    }
                    return;
                }
            }
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        if let Err(e) = stream.set_nodelay(true) {
            debug!("TCP_NODELAY on {peer}: {e}");
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let token = Token(key + FIRST_CONNECTION);
        if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            warn!("cannot register connection from {peer}: {e}");
            return;
        }
        self.next_id += 1;
        entry.insert(Connection::new(stream, self.next_id, peer, now));
        self.sync(key);
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
            let (mut env, connections) = self.env(now);
            let Some(conn) = connections.get_mut(key) else { continue };
            if conn.scheduled != Some(at) {
                continue; // stale entry
            }
            conn.scheduled = None;
            if conn.deadline(env.config).is_some_and(|deadline| deadline <= now) {
                conn.expire(&mut env);
                if !conn.queued {
                    conn.queued = true;
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
            self.deadlines.retain(|at, key| connections.get(key).is_some_and(|c| c.scheduled == Some(at)));
        }
    }

    /// Acts on pending signals and shutdown-handle requests.
    fn check_shutdown(&mut self, now: Instant) {
        if self.signals_ready {
            self.signals_ready = false;
            let mut received = Vec::new();
            if let Some(signals) = self.signals.as_mut() {
                received.extend(signals.pending());
            }
            for signal in received {
                self.shutdown_requested(Cause::Signal(signal), now);
            }
        }
        let requested = self.shutdown.requested();
        if requested > self.shutdown_seen {
            self.shutdown_seen = requested;
            if requested == shutdown::IMMEDIATE {
                self.stop_now(Cause::Handle);
            } else {
                self.shutdown_requested(Cause::Handle, now);
            }
        }
    }

    /// A first request drains, a second signal stops at once.
    fn shutdown_requested(&mut self, cause: Cause, now: Instant) {
        if self.stop.is_some() {
            return;
        }
        if self.drain.is_none() {
            self.begin_drain(cause, now);
        } else if matches!(cause, Cause::Signal(_)) {
            self.stop_now(cause);
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
        self.drain = Some(Drain { started: now, deadline: after(now, self.config.shutdown_timeout) });
        let (mut closing, mut last_call) = (0, 0);
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.connections.get_mut(key) {
                match conn.begin_drain(now, &self.config) {
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
        info!("{message}");
    }

    fn stop_now(&mut self, cause: Cause) {
        let closed = self.close_all();
        info!("{}: stopping now, closed {closed} connections", cause.describe());
        self.stop = Some(Outcome::Stopped { signal: cause.signal(), closed });
    }

    /// Closes every connection (reported as Closed) and returns how many there were.
    fn close_all(&mut self) -> usize {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let count = keys.len();
        for key in keys {
            if let Some(conn) = self.connections.get_mut(key) {
                conn.abort();
            }
            self.sync(key);
        }
        self.closed.clear();
        for key in 0..self.connections.capacity() {
            if let Some(mut conn) = self.connections.try_remove(key) {
                let _ = self.poll.registry().deregister(conn.stream_mut());
            }
        }
        count
    }

    /// Removes closed connections: the only place the slab shrinks.
    fn reap_closed(&mut self, now: Instant) {
        if self.closed.is_empty() {
            return;
        }
        for key in self.closed.drain(..) {
            if let Some(mut conn) = self.connections.try_remove(key) {
                log::trace!("connection {} ({}) removed: {:?}", conn.id, conn.peer, conn.close_reason());
                if let Err(e) = self.poll.registry().deregister(conn.stream_mut()) {
                    debug!("deregistering connection {}: {e}", conn.id);
                }
            }
        }
        // A closed connection frees a descriptor: retry a paused accept now.
        if self.accept_paused_until.is_some_and(|until| until > now) {
            self.accept_paused_until = Some(now);
        }
    }

    /// The outcome, once the server should stop.
    fn finished(&mut self, now: Instant) -> Option<Outcome> {
        if let Some(outcome) = self.stop {
            return Some(outcome);
        }
        let drain = self.drain?;
        if self.connections.is_empty() {
            let elapsed = now.saturating_duration_since(drain.started);
            info!("drained in {:.2}s", elapsed.as_secs_f64());
            return Some(Outcome::Drained { elapsed });
        }
        if drain.deadline <= now {
            let closed = self.close_all();
            info!("shutdown timeout: closed {closed} connections");
            return Some(Outcome::TimedOut { closed });
        }
        None
    }
}

/// Accept errors that concern one connection only: try the next one. Anything else pauses
/// accepting for `accept_backoff`, so an unknown error can slow accepts but never spin the loop.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}
