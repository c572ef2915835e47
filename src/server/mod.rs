//! [`Server`]: the reactor. One thread, one `mio::Poll`; registered in it are the listener, every
//! connection (in a `Slab` of [`Slot`]s, key = token - `FIRST_CONNECTION`), the shutdown waker
//! and the signal source. This is the only module that talks to mio. What happens around a
//! server (sibling workers, systemd, the SIGHUP restart) is told through
//! [`Observer`](stage::Observer)s at each stage change; the reactor knows none of it.
//!
//! One loop turn, each step one call:
//! 1. `wait`: poll, with the time to the earliest deadline as timeout (zero when work is queued);
//!    the turn's clock, read as the poll returns, is also its start in the loop's beat, which
//!    the signal handlers look at (`crate::watch`: a second signal while stuck), with the cycle
//!    count past which the turn is slow;
//! 2. `dispatch` each event: record readiness and queue the connection, nothing else;
//!    then `deliver_letters`: what responders on other threads posted reaches its connection
//!    (checked against the connection's id, so a reused slot never gets another's letter);
//! 3. `drive_ready`: each queued connection reads, answers and writes, within a budget;
//! 4. `accept_pending`: take new connections while a look at the queue says more are there,
//!    up to a batch and the cap; each is registered at once, or, while such looks find
//!    requests (`FirstLook`), queued for a first look in this turn and registered after it (one
//!    answered and closed in that look never enters the poll);
//! 5. `expire_deadlines`: timeouts, delayed responses, drain last calls act, and queue their
//!    connections, which `drive_ready` runs again in this turn, with the new ones (readiness
//!    came first, so a request that arrived just in time beats its own timeout);
//! 6. `reap_closed`: the only place a connection leaves the slab;
//! 7. `advance_stage`: act on signals, the shutdown handle, a successor's handover and the
//!    clock, and finish the drain once nothing is left: the one place the stage moves;
//! 8. `publish` the counters; return once the stage is done; otherwise close the sockets the
//!    drain let go of in this turn (`Parting`) and end the access log's turn.

mod accept;
pub(crate) mod stage;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::access::AccessLog;
use crate::blocking::{BlockingPool, ServerPool};
use crate::config::ServerConfig;
use crate::connection::{Connection, DrainRole, Draining, Env, Transport};
use crate::counters::{ConnState, Counts, Cut, CutCounts, DrainReport, StateChange};
use crate::error::Error;
use crate::errors::{ErrorInfo, Renderer};
use crate::handler::Handler;
use crate::http::request::Client;
use crate::http::response::Response;
use crate::listen;
use crate::metrics::Metrics;
use crate::responder::{Letter, LoopThread, Mailbox};
use crate::shutdown::{self, DrainNotice, Handles, ShutdownHandle};
use crate::timer::{Deadlines, Tick};
use crate::watch::{SignalGuard, Watched};
use accept::Acceptor;
pub use stage::Outcome;
use stage::{Ask, Cause, Drain, Observer, Stage};

/// What a server's connections run over, chosen once per server: plain TCP, or (with the `tls`
/// feature, for a server given a [`TlsConfig`](crate::tls::TlsConfig)) TLS over TCP. A plain
/// server's connections are `Connection<TcpStream>`, compiled as if TLS did not exist.
pub(crate) trait Accepted: Transport + Sized + Send + 'static {
    /// What wraps a socket just accepted.
    type Acceptor: Send;
    /// The stream a socket just accepted is served over (`None`: it is closed).
    fn accept(sock: TcpStream, acceptor: &Self::Acceptor) -> Option<Self>;
    /// The TCP socket beneath (to register it with the poll).
    fn tcp_mut(&mut self) -> &mut TcpStream;
}

impl Accepted for TcpStream {
    type Acceptor = ();

    #[inline]
    fn accept(sock: TcpStream, _: &()) -> Option<Self> {
        Some(sock)
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        self
    }
}

#[cfg(feature = "tls")]
impl Accepted for crate::tls::TlsStream {
    type Acceptor = crate::tls::TlsConfig;

    fn accept(sock: TcpStream, tls: &crate::tls::TlsConfig) -> Option<Self> {
        tls.accept(sock).ok()
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        crate::tls::TlsStream::tcp_mut(self)
    }
}

/// Token of the listening socket.
const LISTENER: Token = Token(0);
/// Token of the shutdown waker.
const WAKER: Token = Token(1);
/// Token of the signal source.
const SIGNALS: Token = Token(2);
/// Connection tokens are slab keys plus this.
const FIRST_CONNECTION: usize = 3;
/// Events taken per poll by the drain's last look before it closes idle connections.
const LATE_EVENTS: usize = 256;

type Hook = Box<dyn FnMut(&StateChange) + Send>;

/// A connection and the server's bookkeeping for it.
struct Slot<S> {
    conn: Connection<S>,
    /// The state last reported to the counts and the hook.
    reported: Option<ConnState>,
    /// The deadline the heap holds for it.
    scheduled: Option<Tick>,
    /// Whether its key is in a queue.
    queued: bool,
    /// Whether its socket is in the poll (from the end of its first drive on).
    registered: bool,
}

/// Connections with work to do, and those to remove.
#[derive(Default)]
struct Queues {
    /// To drive in this turn.
    ready: VecDeque<usize>,
    /// Used up their budget in this turn: driven in the next.
    later: Vec<usize>,
    /// Closed: removed at the end of the turn.
    closed: Vec<usize>,
}

/// The live counts per state, the one place they change, and who hears of it.
struct Ledger {
    counts: Counts,
    hook: Option<Hook>,
    /// The id of the last connection accepted.
    last_id: u64,
    /// The drain's figures, for `/metrics` and the exit summary.
    report: DrainReport,
    /// Prefix of log lines: empty, or `worker N: ` when the process has several.
    label: String,
}

impl Ledger {
    /// Moves one connection from `from` to `to`, and tells the hook.
    #[inline]
    fn record(&mut self, id: u64, peer: SocketAddr, from: Option<ConnState>, to: ConnState) {
        self.counts.apply(from, to);
        if self.hook.is_some() {
            self.tell(id, peer, from, to);
        }
    }

    /// The hook: off the plain path, out of line.
    #[cold]
    fn tell(&mut self, id: u64, peer: SocketAddr, from: Option<ConnState>, to: ConnState) {
        if let Some(hook) = self.hook.as_mut() {
            hook(&StateChange { id, peer, from, to, counts: self.counts });
        }
    }
}

/// The drain's progress line: at most once a second, and only when the number of connections
/// left (which only goes down while draining) changed.
#[derive(Default)]
struct Progress {
    /// When it was last logged, and how many connections were left then.
    last: Option<(Tick, usize)>,
}

impl Progress {
    /// How often at most.
    const EVERY: Duration = Duration::from_secs(1);

    /// Logs the connections left, if a line is due.
    fn tell(&mut self, now: Tick, counts: &Counts, label: &str) {
        let left = counts.total();
        match self.last {
            None => self.last = Some((now, left)),
            Some((at, before)) if left != before && at.after(Self::EVERY) <= now => {
                self.last = Some((now, left));
                let noun = if left == 1 { "connection" } else { "connections" };
                info!(
                    event = "drain_progress", left, active = counts.active, idle = counts.idle + counts.new;
                    "{label}draining: {left} {noun} left ({} active)", counts.active
                );
            }
            Some(_) => {}
        }
    }
}

/// Where shutdown requests come from outside the loop: signals and the handle.
struct Inbox {
    signals: Option<Signals>,
    /// Counts the signals in a handler of its own, so that a second one ends the process even
    /// while this loop is stuck in a turn (see `crate::watch`); with `signals`.
    _guard: Option<SignalGuard>,
    /// The signal source had an event since it was last read.
    signals_ready: bool,
    handle: ShutdownHandle,
    /// The strongest handle request already acted on.
    seen: u8,
    /// The waker fired since the mailbox was last read.
    woken: bool,
    /// Scratch list the mailbox's letters are swapped into.
    letters: Vec<Letter>,
}

impl Inbox {
    /// The signals received since the last call (none without an event: no read).
    fn signals(&mut self) -> Vec<i32> {
        match self.signals.as_mut() {
            Some(signals) if std::mem::take(&mut self.signals_ready) => signals.pending().collect(),
            _ => Vec::new(),
        }
    }

    /// The handle's request, when it asks for more than it did before.
    fn handle_request(&mut self) -> Option<Ask> {
        let requested = self.handle.requested();
        if requested <= self.seen {
            return None;
        }
        self.seen = requested;
        Some(match requested {
            shutdown::IMMEDIATE => Ask::Immediate(Cause::Handle),
            shutdown::DRAIN_NOW => Ask::DrainNow(Cause::Handle),
            _ => Ask::Graceful(Cause::Handle),
        })
    }
}

/// A single-threaded HTTP/1.1 server. [`Server::bind`] it, then [`Server::run`] it on the thread
/// that should serve.
pub struct Server {
    core: Cores,
}

/// A server's loop, over plain TCP or over TLS.
enum Cores {
    Plain(Core<TcpStream>),
    #[cfg(feature = "tls")]
    Tls(Core<crate::tls::TlsStream>),
}

/// Runs `$body` with `$core` bound to the server's loop, whichever kind it is.
macro_rules! with_core {
    ($cores:expr, $core:ident => $body:expr) => {
        match $cores {
            Cores::Plain($core) => $body,
            #[cfg(feature = "tls")]
            Cores::Tls($core) => $body,
        }
    };
}

/// The loop itself, for connections over `S`.
struct Core<S: Accepted> {
    poll: Poll,
    accept: Acceptor,
    slots: Slab<Slot<S>>,
    queues: Queues,
    deadlines: Deadlines,
    ledger: Ledger,
    stage: Stage,
    inbox: Inbox,
    /// What connections share: configuration, handler, clock, buffers, counters.
    env: Env,
    metrics: Arc<Metrics>,
    observers: Vec<Box<dyn Observer>>,
    /// Fires when the drain begins (shared by every worker of a process).
    drain: DrainNotice,
    /// Connections the drain closed in this turn, their sockets not closed yet.
    parting: Parting<S>,
    /// The drain's progress line.
    progress: Progress,
    /// Slow turns logged lately.
    slow_log: SlowLog,
    /// Where [`Response::blocking`](crate::Response::blocking) sends work from this loop.
    blocking: BlockingPool,
    /// Wraps each socket accepted (TLS: the configuration new handshakes use).
    acceptor: S::Acceptor,
    /// Readiness taken by the drain's last look before it closes idle connections (made at
    /// the first such look).
    late: Option<Events>,
}

/// The WARN lines about slow turns: at most one a second; the turns not named in one are
/// counted and told in the next.
#[derive(Default)]
struct SlowLog {
    /// When the last line was logged.
    last: Option<Tick>,
    /// Slow turns since then without a line of their own.
    unlogged: u64,
}

impl SlowLog {
    /// How often at most.
    const EVERY: Duration = Duration::from_secs(1);

    /// Whether a slow turn ending at `now` may have a line; if so, how many others had none.
    fn allow(&mut self, now: Tick) -> Option<u64> {
        if self.last.is_some_and(|last| now < last.after(Self::EVERY)) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// Connections a drain closed in the current turn. Their sockets are closed at the end of the
/// turn, or, when that turn ends the server and the process exits next (`exit`, set by
/// `process::run` for a process that exits when it returns), left to the exit: the kernel
/// then closes them all at once, which costs less than one `close` call each (with 10,000
/// idle connections, 10,000 system calls fewer between the signal and the exit). Only the last
/// server of the process to finish does that; the others close theirs, so no client of a
/// server that finished early waits for another's drain.
struct Parting<S> {
    conns: Vec<Connection<S>>,
    /// The servers of this process still running, when the process exits after the last.
    exit: Option<Arc<AtomicUsize>>,
}

impl<S> Default for Parting<S> {
    fn default() -> Self {
        Parting { conns: Vec::new(), exit: None }
    }
}

impl<S> Parting<S> {
    /// The turn is over: closes what it holds.
    #[inline]
    fn close(&mut self) {
        if !self.conns.is_empty() {
            self.conns.clear();
        }
    }

    /// The server is done. The last of the process's servers leaves its sockets open for the
    /// process's exit to close; any other closes them. Returns whether it left them.
    fn leave(&mut self) -> bool {
        let last = self.exit.as_ref().is_some_and(|running| running.fetch_sub(1, Ordering::AcqRel) == 1);
        if last {
            // Closed connections (no exchange left to let go, buffers back in the pool): only
            // their descriptors are left, for the exit.
            for conn in self.conns.drain(..) {
                std::mem::forget(conn);
            }
        } else {
            self.conns.clear();
        }
        last
    }
}

impl Server {
    /// Binds the listening socket (with `config.backlog`, and `SO_REUSEPORT` if
    /// `config.reuse_port`) and sets up the poll, the shutdown waker and (if
    /// `config.handle_signals`) the signal source. Serving starts with [`Server::run`];
    /// connections that arrive before that wait in the listen backlog.
    pub fn bind(config: ServerConfig, handler: impl Handler + Send + 'static) -> Result<Server, Error> {
        Server::bind_with(config, |_| handler)
    }

    /// [`Server::bind`], with the handler built by `make` from the server's [`Handles`]: its
    /// shutdown handle and drain notice, for a handler that stops the server or finishes long
    /// work when the drain begins.
    pub fn bind_with<H: Handler + Send + 'static>(
        config: ServerConfig,
        make: impl FnOnce(&Handles) -> H,
    ) -> Result<Server, Error> {
        let listener = listen::bind(config.addr, config.backlog, config.reuse_port)
            .map_err(|source| Error::Bind { addr: config.addr, source })?;
        Server::from_listener_with(listener, config, make)
    }

    /// Serves on a socket that is already listening (inherited from systemd or a previous
    /// process, or bound by the caller); `config.addr` is ignored. The socket is made
    /// non-blocking.
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: ServerConfig,
        handler: impl Handler + Send + 'static,
    ) -> Result<Server, Error> {
        Server::from_listener_with(listener, config, |_| handler)
    }

    /// [`Server::from_listener`], with the handler built by `make` from the server's
    /// [`Handles`] (see [`Server::bind_with`]).
    pub fn from_listener_with<H: Handler + Send + 'static>(
        listener: std::net::TcpListener,
        config: ServerConfig,
        make: impl FnOnce(&Handles) -> H,
    ) -> Result<Server, Error> {
        let drain = DrainNotice::new();
        Server::assemble(listener, config, drain.clone(), |shutdown| {
            make(&Handles { shutdown: shutdown.clone(), drain })
        })
    }

    /// A server on `listener` that fires `drain` when its drain begins, with the handler `make`
    /// builds once the server's own shutdown handle exists.
    pub(crate) fn assemble<H: Handler + Send + 'static>(
        listener: std::net::TcpListener,
        config: ServerConfig,
        drain: DrainNotice,
        make: impl FnOnce(&ShutdownHandle) -> H,
    ) -> Result<Server, Error> {
        Ok(Server { core: Cores::Plain(Core::assemble(listener, config, drain, make)?) })
    }

    /// This server, serving HTTPS: every connection accepted makes a TLS handshake with the
    /// configuration `tls` holds at that moment (swap it to rotate a certificate), then speaks
    /// HTTP/1.1 inside the session. Idle and finished connections are ended with `close_notify`;
    /// a handshake gets [`ServerConfig::handshake_timeout`]. A process serving plain HTTP and
    /// HTTPS side by side runs one server of each. Call it before [`Server::run`].
    #[cfg(feature = "tls")]
    pub fn with_tls(self, tls: crate::tls::TlsConfig) -> Server {
        let core = match self.core {
            Cores::Plain(core) => core.retype(tls),
            Cores::Tls(mut core) => {
                core.acceptor = tls;
                core
            }
        };
        Server { core: Cores::Tls(core) }
    }

    /// The process exits once `running` (shared by its servers) counts down to 0: the last
    /// server to finish leaves the sockets its drain closed in its last turn to that exit.
    pub(crate) fn leave_to_exit(&mut self, running: Arc<AtomicUsize>) {
        with_core!(&mut self.core, core => core.leave_to_exit(running))
    }

    /// Takes SIGHUP as well (when it takes signals at all): the restart of `process::run`.
    pub(crate) fn take_sighup(&mut self) -> Result<(), Error> {
        with_core!(&mut self.core, core => core.take_sighup())
    }

    /// Fires when the drain begins (or the server stops at once).
    pub fn drain_notice(&self) -> DrainNotice {
        with_core!(&self.core, core => core.drain_notice())
    }

    /// The counters this server publishes (for `/metrics`; see
    /// [`Registry`](crate::metrics::Registry)).
    pub fn metrics(&self) -> Arc<Metrics> {
        with_core!(&self.core, core => core.metrics())
    }

    /// Names this server in its log lines (`worker N: ...`).
    pub(crate) fn set_label(&mut self, label: String) {
        with_core!(&mut self.core, core => core.set_label(label))
    }

    /// Publishes into `metrics` instead of this server's own (a process shares a registry).
    pub(crate) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        with_core!(&mut self.core, core => core.set_metrics(metrics))
    }

    /// Tells `observer` of every stage change (and asks it about SIGHUP).
    pub(crate) fn observe(&mut self, observer: Box<dyn Observer>) {
        with_core!(&mut self.core, core => core.observe(observer))
    }

    /// Makes `other` drain and stop with this server: each shutdown request this server acts
    /// on (from a signal or its handle) is passed on. This is how one signal stops all workers.
    pub fn add_follower(&mut self, other: ShutdownHandle) {
        with_core!(&mut self.core, core => core.add_follower(other))
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        with_core!(&self.core, core => core.local_addr())
    }

    /// A handle to stop this server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        with_core!(&self.core, core => core.shutdown_handle())
    }

    /// Records every answered request in `log` (see [`AccessRecord`](crate::AccessRecord)): a
    /// closure `|record: &AccessRecord<'_>| …` will do, or a writer that buffers within a turn
    /// and writes in [`AccessLog::end_of_turn`](crate::AccessLog::end_of_turn). It runs on the
    /// loop thread: keep it quick.
    pub fn set_access_log(&mut self, log: impl AccessLog + 'static) {
        with_core!(&mut self.core, core => core.set_access_log(log))
    }

    pub(crate) fn set_boxed_access_log(&mut self, log: Box<dyn AccessLog>) {
        with_core!(&mut self.core, core => core.set_boxed_access_log(log))
    }

    pub(crate) fn set_renderer(&mut self, renderer: Renderer) {
        with_core!(&mut self.core, core => core.set_renderer(renderer))
    }

    /// Sends the blocking work of this server's handler ([`Response::blocking`](crate::Response::blocking))
    /// to `pool` instead of a pool of its own (made from the configuration's `blocking_threads`
    /// and `blocking_queue`): servers that share one pool share its threads and its bound.
    pub fn set_blocking_pool(&mut self, pool: BlockingPool) {
        with_core!(&mut self.core, core => core.set_blocking_pool(pool))
    }

    /// The pool this server's handler sends blocking work to (for its
    /// [`stats`](BlockingPool::stats), or to use it from elsewhere).
    pub fn blocking_pool(&self) -> &BlockingPool {
        with_core!(&self.core, core => core.blocking_pool())
    }

    /// Renders every error response: the server's own (400, 408, 413, 414, 431, 417, 501,
    /// 505; a 500 for a panicking handler, a dropped responder or `Reply::Later` without a
    /// responder) and those handlers make with [`Response::set_error`](crate::Response::set_error)
    /// (a router's 404 and 405, a pool's 503). `render` gets the error (status, detail, and
    /// the request's method and target when known) and a response reset to that status; it
    /// may set the body, the content type and headers. The server keeps the status and the
    /// framing (`Content-Length`, `Connection`, the close after a protocol error). It runs on
    /// the loop thread, only for errors. Plain text (the detail and a line feed) without one;
    /// [`errors::problem_json`](crate::errors::problem_json) gives RFC 9457 problem details.
    pub fn set_error_renderer(&mut self, render: impl Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync + 'static) {
        with_core!(&mut self.core, core => core.set_error_renderer(render))
    }

    /// Calls `hook` on every connection state change (New, Active, Idle, Closed), with the live
    /// counts after it. It runs on the loop thread: keep it quick.
    pub fn on_state_change(&mut self, hook: impl FnMut(&StateChange) + Send + 'static) {
        with_core!(&mut self.core, core => core.on_state_change(hook))
    }

    /// Serves until a shutdown completes. Errors only when the poll itself fails.
    pub fn run(self) -> Result<Outcome, Error> {
        with_core!(self.core, core => core.run())
    }
}

impl Core<TcpStream> {
    /// The same loop, before it ran, for TLS connections.
    #[cfg(feature = "tls")]
    fn retype(self, tls: crate::tls::TlsConfig) -> Core<crate::tls::TlsStream> {
        // Nothing is connected yet: connections are accepted only by `run`, which consumes
        // the server.
        Core {
            poll: self.poll,
            accept: self.accept,
            slots: Slab::new(),
            queues: self.queues,
            deadlines: self.deadlines,
            ledger: self.ledger,
            stage: self.stage,
            inbox: self.inbox,
            env: self.env,
            metrics: self.metrics,
            observers: self.observers,
            drain: self.drain,
            parting: Parting { conns: Vec::new(), exit: self.parting.exit },
            progress: self.progress,
            slow_log: self.slow_log,
            blocking: self.blocking,
            acceptor: tls,
            late: None,
        }
    }

    /// A server on `listener` that fires `drain` when its drain begins, with the handler `make`
    /// builds once the server's own shutdown handle exists.
    fn assemble<H: Handler + Send + 'static>(
        listener: std::net::TcpListener,
        config: ServerConfig,
        drain: DrainNotice,
        make: impl FnOnce(&ShutdownHandle) -> H,
    ) -> Result<Core<TcpStream>, Error> {
        listener.set_nonblocking(true).map_err(Error::Setup)?;
        listen::limit_unsent(&listener);
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new().map_err(Error::Setup)?;
        let local_addr = listener.local_addr().map_err(Error::Setup)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(Error::Setup)?;
        // The one waker of this poll: shutdown requests and responders' letters share it.
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(Error::Setup)?);
        let (signals, guard) = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(Error::Setup)?;
            poll.registry().register(&mut signals, SIGNALS, Interest::READABLE).map_err(Error::Setup)?;
            (Some(signals), Some(SignalGuard::install(0).map_err(Error::Setup)?))
        } else {
            (None, None)
        };
        let mailbox = Arc::new(Mailbox::new(Arc::clone(&waker)));
        let blocking = BlockingPool::new(config.blocking_threads, config.blocking_queue);
        let handle = ShutdownHandle::new(waker);
        let handler = make(&handle);
        Ok(Core {
            poll,
            accept: Acceptor::new(listener, local_addr),
            slots: Slab::new(),
            queues: Queues::default(),
            deadlines: Deadlines::default(),
            ledger: Ledger {
                counts: Counts::default(),
                hook: None,
                last_id: 0,
                report: DrainReport::default(),
                label: String::new(),
            },
            stage: Stage::Serving,
            inbox: Inbox {
                signals,
                _guard: guard,
                signals_ready: false,
                handle,
                seen: shutdown::NONE,
                woken: false,
                letters: Vec::new(),
            },
            env: Env::new(config, Box::new(handler), Tick::now(), mailbox, drain.clone()),
            metrics: Arc::default(),
            observers: Vec::new(),
            drain,
            parting: Parting::default(),
            progress: Progress::default(),
            slow_log: SlowLog::default(),
            blocking,
            acceptor: (),
            late: None,
        })
    }
}

impl<S: Accepted> Core<S> {
    /// The process exits once `running` (shared by its servers) counts down to 0: the last
    /// server to finish leaves the sockets its drain closed in its last turn to that exit.
    fn leave_to_exit(&mut self, running: Arc<AtomicUsize>) {
        self.parting.exit = Some(running);
    }

    /// Takes SIGHUP as well (when it takes signals at all): the restart of `process::run`.
    fn take_sighup(&mut self) -> Result<(), Error> {
        match self.inbox.signals.as_ref() {
            Some(signals) => signals.add_signal(SIGHUP).map_err(Error::Setup),
            None => Ok(()),
        }
    }

    /// Fires when the drain begins (or the server stops at once).
    fn drain_notice(&self) -> DrainNotice {
        self.drain.clone()
    }

    /// The counters this server publishes (for `/metrics`; see
    /// [`Registry`](crate::metrics::Registry)).
    fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Names this server in its log lines (`worker N: ...`).
    fn set_label(&mut self, label: String) {
        self.ledger.label = label;
    }

    /// Publishes into `metrics` instead of this server's own (a process shares a registry).
    fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    /// Tells `observer` of every stage change (and asks it about SIGHUP).
    fn observe(&mut self, observer: Box<dyn Observer>) {
        self.observers.push(observer);
    }

    /// Makes `other` drain and stop with this server: each shutdown request this server acts
    /// on (from a signal or its handle) is passed on. This is how one signal stops all workers.
    fn add_follower(&mut self, other: ShutdownHandle) {
        self.observe(Box::new(other));
    }

    /// The address actually bound (useful with port 0).
    fn local_addr(&self) -> SocketAddr {
        self.accept.local_addr()
    }

    /// A handle to stop this server from any thread.
    fn shutdown_handle(&self) -> ShutdownHandle {
        self.inbox.handle.clone()
    }

    /// Records every answered request in `log` (see [`AccessRecord`](crate::AccessRecord)): a
    /// closure `|record: &AccessRecord<'_>| …` will do, or a writer that buffers within a turn
    /// and writes in [`AccessLog::end_of_turn`](crate::AccessLog::end_of_turn). It runs on the
    /// loop thread: keep it quick.
    fn set_access_log(&mut self, log: impl AccessLog + 'static) {
        self.set_boxed_access_log(Box::new(log));
    }

    fn set_boxed_access_log(&mut self, log: Box<dyn AccessLog>) {
        self.env.logs.access = Some(log);
    }

    /// Renders every error response: the server's own (400, 408, 413, 414, 431, 417, 501,
    /// 505; a 500 for a panicking handler, a dropped responder or `Reply::Later` without a
    /// responder) and those handlers make with [`Response::set_error`](crate::Response::set_error)
    /// (a router's 404 and 405, a pool's 503). `render` gets the error (status, detail, and
    /// the request's method and target when known) and a response reset to that status; it
    /// may set the body, the content type and headers. The server keeps the status and the
    /// framing (`Content-Length`, `Connection`, the close after a protocol error). It runs on
    /// the loop thread, only for errors. Plain text (the detail and a line feed) without one;
    /// [`errors::problem_json`](crate::errors::problem_json) gives RFC 9457 problem details.
    fn set_error_renderer(&mut self, render: impl Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync + 'static) {
        self.env.service.errors = Renderer::new(render);
    }

    fn set_renderer(&mut self, renderer: Renderer) {
        self.env.service.errors = renderer;
    }

    /// Sends the blocking work of this server's handler ([`Response::blocking`](crate::Response::blocking))
    /// to `pool` instead of a pool of its own (made from the configuration's `blocking_threads`
    /// and `blocking_queue`): servers that share one pool share its threads and its bound.
    fn set_blocking_pool(&mut self, pool: BlockingPool) {
        self.blocking = pool;
    }

    /// The pool this server's handler sends blocking work to (for its
    /// [`stats`](BlockingPool::stats), or to use it from elsewhere).
    fn blocking_pool(&self) -> &BlockingPool {
        &self.blocking
    }

    /// Calls `hook` on every connection state change (New, Active, Idle, Closed), with the live
    /// counts after it. It runs on the loop thread: keep it quick.
    fn on_state_change(&mut self, hook: impl FnMut(&StateChange) + Send + 'static) {
        self.ledger.hook = Some(Box::new(hook));
    }

    /// Serves until a shutdown completes. Errors only when the poll itself fails.
    fn run(mut self) -> Result<Outcome, Error> {
        let _loop_thread = LoopThread::enter();
        // A handler's `Response::set_error` renders with this server's hook, and its
        // `Response::blocking` goes to this server's pool.
        let _renderer = self.env.service.errors.enter();
        let _blocking = ServerPool::enter(&self.blocking);
        // Watched while it runs: slow turns, and a second signal while stuck.
        let watched = Watched::claim(self.env.config.slow_turn);
        self.env.service.beat = watched.beat();
        let mut events = Events::with_capacity(1024);
        loop {
            let now = match self.wait(&mut events) {
                Ok(now) => now,
                Err(e) => {
                    // The loop cannot go on: the connections close with it, and the access log
                    // gets what it holds, as at any other end.
                    self.close_all();
                    self.last_access_records();
                    return Err(e);
                }
            };
            for event in events.iter() {
                self.dispatch(event);
            }
            self.deliver_letters();
            self.drive_ready();
            self.accept_pending(now);
            self.expire_deadlines();
            self.drive_ready();
            self.reap_closed(now);
            self.advance_stage(now);
            self.publish(now);
            if let Stage::Done { outcome, .. } = self.stage {
                self.last_access_records();
                self.parting.leave();
                return Ok(outcome);
            }
            self.parting.close();
            self.env.logs.end_access_turn();
        }
    }

    /// Polls until something happens or the next deadline; starts the turn's clock. The
    /// timeout counts from the clock of the turn before (read as it began), not a fresh read:
    /// a deadline then fires up to one turn's length late, and a turn saves a clock read.
    fn wait(&mut self, events: &mut Events) -> Result<Tick, Error> {
        self.end_turn();
        let mut from = self.env.turn.now;
        loop {
            let timeout = self.poll_timeout(from);
            match self.poll.poll(events, timeout) {
                Ok(()) => break,
                // Interrupted (a signal with a handler, a stop and continue): the time spent
                // waiting counts. A wait restarted whole from the turn's clock would never reach
                // a deadline under signals that come more often than it (a profiler's timer).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => from = Tick::now(),
                Err(e) => return Err(Error::Poll(e)),
            }
        }
        let now = Tick::now();
        self.env.turn.now = now;
        self.env.service.beat.begin_turn(now);
        self.env.stores.date.tick(now);
        // Connections that used up their budget last turn go first (rarely any: the check saves
        // the extend's setup in every turn).
        if !self.queues.later.is_empty() {
            self.queues.ready.extend(self.queues.later.drain(..));
        }
        Ok(now)
    }

    /// The turn is over: the loop is about to wait. A turn found slow is counted
    /// and logged.
    #[inline]
    fn end_turn(&mut self) {
        let slow = self.env.service.beat.end_turn();
        if slow != 0 {
            self.slow_turn(slow);
        }
    }

    /// A turn that began at `began` (a raw tick) ran past the slow-turn threshold: counted, and
    /// logged (at most once a second) with how long it took and the request whose handler was
    /// running when it went past the threshold.
    #[cold]
    #[inline(never)]
    fn slow_turn(&mut self, began: u64) {
        self.env.stores.stats.slow_turns += 1;
        // Published now (the turn's own publish came before its end): a scrape after the line
        // below counts the turn.
        self.metrics.publish(&self.env.stores.stats, &self.ledger.counts);
        let route = self.env.service.slow_route.take();
        let now = Tick::now();
        // This turn's (a turn is only ever found slow by the loop itself, while in it).
        let held = (began == self.env.turn.now.raw()).then(|| self.env.turn.now.until(now));
        let Some(unlogged) = self.slow_log.allow(now) else { return };
        let threshold = humantime::format_duration(self.env.config.slow_turn);
        let took = match held {
            Some(held) => format!("{:.3}s", held.as_secs_f64()),
            None => format!("over {threshold}"),
        };
        let during = match &route {
            Some(route) => format!("in the handler for {route}"),
            None => "with no handler running when it was noticed".to_string(),
        };
        let more = match unlogged {
            0 => String::new(),
            n => format!(" ({n} more slow turn(s) since the last line)"),
        };
        warn!(
            event = "slow_turn", turn_ms = held.map_or(0, |d| d.as_millis() as u64), route = route.as_deref().unwrap_or("-"), more = unlogged;
            "{}slow loop turn: {took} {during} (the threshold is {threshold}); every connection of this loop waited{more}",
            self.ledger.label
        );
    }

    fn poll_timeout(&self, now: Tick) -> Option<Duration> {
        // Connections queued since the turn's drives (clients the drain took from the listen
        // queue, not yet in the poll) are driven without waiting.
        if !self.queues.later.is_empty() || !self.queues.ready.is_empty() || self.accept.has_work(now) {
            return Some(Duration::ZERO);
        }
        let candidates = [self.deadlines.next(), self.stage.deadline(), self.accept.deadline()];
        let next = candidates.into_iter().flatten().min()?;
        Some(now.until(next))
    }

    /// Records readiness; never touches the slab's membership.
    fn dispatch(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.accept.on_event(),
            SIGNALS => self.inbox.signals_ready = true,
            WAKER => self.inbox.woken = true,
            Token(token) => {
                let key = token - FIRST_CONNECTION;
                let Some(slot) = self.slots.get_mut(key) else { return };
                let failed = event.is_error();
                slot.conn.on_ready(
                    event.is_readable(),
                    event.is_writable() || event.is_write_closed() || failed,
                    event.is_read_closed() || failed,
                );
                if !slot.queued {
                    slot.queued = true;
                    self.queues.ready.push_back(key);
                }
            }
        }
    }

    /// Hands each responder's letter to its connection, if that connection is still the one in
    /// the slot (its id matches), and queues it; a stale letter is dropped. Inlined into the
    /// turn even now that the drain's `look_again` calls it too: a call of its own made every
    /// turn dearer.
    #[inline(always)]
    fn deliver_letters(&mut self) {
        if !std::mem::take(&mut self.inbox.woken) {
            return;
        }
        let mut letters = std::mem::take(&mut self.inbox.letters);
        self.env.service.mailbox.take(&mut letters);
        for letter in letters.drain(..) {
            let Some(slot) = self.slots.get_mut(letter.key) else { continue };
            if slot.conn.client.id != letter.id {
                continue;
            }
            slot.conn.on_mail();
            if !slot.queued {
                slot.queued = true;
                self.queues.ready.push_back(letter.key);
            }
        }
        self.inbox.letters = letters;
    }

    /// Drives each queued connection once; those that used up their budget wait for the next
    /// turn.
    #[inline(always)]
    fn drive_ready(&mut self) {
        while let Some(key) = self.queues.ready.pop_front() {
            let Some(slot) = self.slots.get_mut(key) else { continue };
            slot.queued = false;
            if slot.conn.drive(&mut self.env) {
                slot.queued = true;
                self.queues.later.push(key);
            }
            if !slot.registered {
                // After its first look.
                self.accept.looked(slot.conn.state() != ConnState::New);
                register(&self.poll, key, slot);
            }
            self.sync(key);
        }
    }

    /// Accepts up to a batch of connections while under the cap.
    fn accept_pending(&mut self, now: Tick) {
        for _ in 0..self.env.config.accept_batch.max(1) {
            let Some((stream, peer)) = self.accept.next(now, &self.env.config) else { return };
            let look = self.accept.look_first();
            self.admit(stream, peer, look);
        }
    }

    /// Gives a new connection a slot. With `look`, it is queued to be driven in this turn before
    /// it is registered: if its request is there already, that first look answers it without
    /// waiting for an event, and a connection answered and closed at once (`Connection: close`)
    /// never enters the poll. Without, it is registered now and waits for its event.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, look: bool) {
        let Some(stream) = S::accept(stream, &self.acceptor) else { return };
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        self.ledger.last_id += 1;
        self.env.stores.stats.accepted += 1;
        // (A slab of four billion connections is out of reach: the descriptors run out first.)
        let Ok(slot_key) = u32::try_from(key) else { return };
        let mut conn = Connection::new(stream, slot_key, self.ledger.last_id, peer, self.env.turn.now);
        if look {
            conn.on_ready(true, true, false);
        }
        let reported = Some(ConnState::New);
        let slot = entry.insert(Slot { conn, reported, scheduled: None, queued: look, registered: false });
        self.ledger.record(self.ledger.last_id, peer, None, ConnState::New);
        if look {
            // Its deadline is set after the look (in this turn), which often closes it.
            self.queues.ready.push_back(key);
        } else {
            register(&self.poll, key, slot);
            self.sync(key);
        }
        self.accept.update_cap(self.slots.len(), &self.env.config, &self.ledger.label);
    }

    /// Pops due deadlines; acts on the ones still current and queues their connections,
    /// re-arms the ones that moved later. Everything due is popped first, so an entry re-armed
    /// at a past instant waits for the next turn instead of being popped again in this one.
    fn expire_deadlines(&mut self) {
        // Stale entries pile up when deadlines move earlier; sweep them now and then.
        if self.deadlines.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.deadlines.retain(|at, key| slots.get(key).is_some_and(|slot| slot.scheduled == Some(at)));
        }
        let now = self.env.turn.now;
        if self.deadlines.next().is_none_or(|at| at > now) {
            return; // most turns
        }
        let due = self.deadlines.take_due(now);
        if self.env.turn.draining.now() {
            self.look_again();
        }
        for &(at, key) in &due {
            let Some(slot) = self.slots.get_mut(key) else { continue };
            if slot.scheduled != Some(at) {
                continue; // stale entry
            }
            slot.scheduled = None;
            if slot.conn.deadline(&self.env.config, self.env.turn.draining).is_some_and(|deadline| deadline <= now) {
                slot.conn.expire(&mut self.env);
                if !slot.queued {
                    slot.queued = true;
                    self.queues.ready.push_back(key);
                }
            } else {
                self.sync(key);
            }
        }
        self.deadlines.give_back(due);
    }

    /// Before the drain closes idle connections whose last call is over: one more look at the
    /// poll, without waiting. A request that reached a socket since this turn's poll (a proxy
    /// reusing a pooled connection at that moment) makes its connection readable, so it is read
    /// and answered with `Connection: close`; closed with that input unread, it would have been
    /// reset. One system call for all the connections due, not one per socket.
    #[cold]
    #[inline(never)]
    fn look_again(&mut self) {
        let mut late = self.late.take().unwrap_or_else(|| Events::with_capacity(LATE_EVENTS));
        // Bounded: enough full polls to take every connection's readiness once (and the
        // listener's, the waker's, the signals'), so readiness that keeps coming cannot hold the
        // turn here; what is left waits for the next turn's poll.
        let mut rounds = self.slots.len() / LATE_EVENTS + 2;
        while rounds > 0 {
            rounds -= 1;
            match self.poll.poll(&mut late, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The next turn's poll sees the same readiness, but these connections may be
                // closed by then: the same race as with no look at all.
                Err(e) => {
                    warn!("the drain's last look at its idle connections failed: {e}");
                    break;
                }
            }
            let mut taken = 0;
            for event in late.iter() {
                self.dispatch(event);
                taken += 1;
            }
            if taken < LATE_EVENTS {
                break;
            }
        }
        self.late = Some(late);
        // A responder's news taken from the poll here would otherwise wait for another event.
        self.deliver_letters();
    }

    /// Brings the counts, the hook and the deadline heap in line with the connection.
    fn sync(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        let Client { id, addr: peer } = slot.conn.client;
        let state = slot.conn.state();
        // A request that began and ended within one turn still made the connection Active: told
        // to whoever watches each change. Unwatched, the two changes cancel out in the counts.
        if slot.conn.take_activity()
            && state != ConnState::Active
            && slot.reported != Some(ConnState::Active)
            && self.ledger.hook.is_some()
        {
            let from = slot.reported.replace(ConnState::Active);
            self.ledger.record(id, peer, from, ConnState::Active);
        }
        if slot.reported != Some(state) {
            let from = slot.reported.replace(state);
            if state == ConnState::Closed {
                self.queues.closed.push(key);
            }
            self.ledger.record(id, peer, from, state);
        }
        if let Some(deadline) = slot.conn.deadline(&self.env.config, self.env.turn.draining)
            && slot.scheduled.is_none_or(|scheduled| deadline < scheduled)
        {
            slot.scheduled = Some(deadline);
            self.deadlines.push(deadline, key, self.env.turn.now);
        }
    }

    /// Removes closed connections: the only place the slab shrinks. Most turns close nothing:
    /// inlined, that is one check.
    #[inline(always)]
    fn reap_closed(&mut self, now: Tick) {
        if !self.queues.closed.is_empty() {
            self.reap(now);
        }
    }

    #[inline(never)]
    fn reap(&mut self, now: Tick) {
        for key in self.queues.closed.drain(..) {
            // Closing the socket (by dropping it) also removes it from the poll: no
            // `epoll_ctl(DEL)` per connection. Its descriptor is not shared with anything.
            if let Some(Slot { mut conn, .. }) = self.slots.try_remove(key) {
                log::trace!("connection {} ({}) removed: {:?}", conn.client.id, conn.client.addr, conn.close_reason());
                if self.env.logs.access.is_some() {
                    conn.record_close(self.env.turn, &mut self.env.logs);
                }
                if self.parting.exit.is_some() && matches!(self.stage, Stage::Draining(_)) {
                    self.parting.conns.push(conn);
                }
            }
        }
        self.accept.on_close(now);
        self.accept.update_cap(self.slots.len(), &self.env.config, &self.ledger.label);
    }

    /// The server stops (its connections are gone: drained, or closed and recorded by
    /// `close_all`): the access log writes out what it holds.
    fn last_access_records(&mut self) {
        if self.env.logs.access.is_some() {
            self.env.logs.access_used = true;
            self.env.logs.end_access_turn();
        }
    }

    /// Acts on what asks the stage to move (signals, the handle, the end of the drain delay, a
    /// successor's handover) and ends the drain once nothing is left or its time is up.
    fn advance_stage(&mut self, now: Tick) {
        for signal in self.inbox.signals() {
            match signal {
                SIGHUP => self.restart(),
                signal => self.ask(Ask::Graceful(Cause::Signal(signal)), now),
            }
        }
        if let Some(ask) = self.inbox.handle_request() {
            self.ask(ask, now);
        }
        if let Stage::Announced { until, cause } = self.stage
            && until <= now
        {
            self.begin_drain(cause, now);
        }
        if let Some(pid) = self.inbox.handle.take_handover() {
            self.ask(Ask::DrainNow(Cause::Restart(pid)), now);
        }
        self.finish_drain(now);
    }

    /// The stage's answer to `ask`. A first request drains (after the drain delay), a second
    /// signal stops at once, an immediate request stops whatever the stage.
    fn ask(&mut self, ask: Ask, now: Tick) {
        match (ask, self.stage) {
            (_, Stage::Done { .. }) => {}
            (Ask::Immediate(cause), _) => self.stop(cause),
            (Ask::Graceful(cause), Stage::Serving) if !self.env.config.drain_delay.is_zero() => {
                self.announce(cause, now)
            }
            (Ask::Graceful(cause) | Ask::DrainNow(cause), Stage::Serving) => self.begin_drain(cause, now),
            // A successor that becomes ready during the drain delay ends the delay, but the
            // drain stays the signal's (or the handle's): the service was asked to stop, so idle
            // connections are not kept for it.
            (Ask::DrainNow(cause), Stage::Announced { cause: announced, .. }) => {
                let cause = if matches!(cause, Cause::Restart(_)) { announced } else { cause };
                self.begin_drain(cause, now)
            }
            (Ask::Graceful(cause) | Ask::DrainNow(cause @ Cause::Handle), Stage::Draining(mut drain))
                if matches!(drain.cause, Cause::Restart(_)) =>
            {
                // Handing over to a successor: this is the first signal (or the handle's first
                // request), not a second one. Not a change of stage: the cause changes, so that
                // the next signal is the second one, and so does the rule for idle connections,
                // which followers hear of.
                info!(event = "signal", cause:% = cause.describe(); "{}{}: already draining after a restart", self.ledger.label, cause.describe());
                drain.cause = cause;
                self.stage = Stage::Draining(drain);
                // The signal's drain rule, as if the drain began now: idle connections kept for
                // the successor's sake get a last call, or close.
                self.env.turn.draining = self.stage.draining();
                self.apply_drain_rule(cause, now);
                for observer in &mut self.observers {
                    observer.handover_ended();
                }
            }
            (Ask::Graceful(cause @ Cause::Signal(_)), Stage::Announced { .. } | Stage::Draining(_)) => self.stop(cause),
            // Asked again: nothing changes.
            (Ask::Graceful(_) | Ask::DrainNow(_), _) => {}
        }
    }

    /// SIGHUP (taken only where restarts are enabled): a restart.
    fn restart(&mut self) {
        let stage = self.stage;
        if !self.observers.iter_mut().any(|observer| observer.restart(&stage)) {
            warn!("received SIGHUP: restart is not enabled here; ignored");
        }
    }

    /// Serves on through the drain delay, with `/healthz` answering 503.
    fn announce(&mut self, cause: Cause, now: Tick) {
        let delay = self.env.config.drain_delay;
        info!(
            event = "announced", cause:% = cause.describe(), delay_ms = delay.as_millis() as u64;
            "{}{}: draining in {}, serving until then (/healthz answers 503)",
            self.ledger.label,
            cause.describe(),
            humantime::format_duration(delay)
        );
        self.set_stage(Stage::Announced { until: now.after(delay), cause });
    }

    /// Stops listening (after accepting the backlog), applies the drain rule to every
    /// connection and logs what it found.
    fn begin_drain(&mut self, cause: Cause, now: Tick) {
        let drain = Drain {
            started: now,
            deadline: now.after(self.env.config.shutdown_timeout),
            cause,
            served_before: self.env.stores.stats.served(),
            cuts_before: self.env.stores.stats.cuts,
        };
        // Observers hear of it first: other descriptors of the listening socket (a restart's)
        // close before this server's, so the socket stops listening with it, and a client that
        // comes now is refused rather than queued where nobody accepts.
        self.set_stage(Stage::Draining(drain));
        // Clients that completed the handshake are served, not reset.
        // (They waited in the listen queue: their requests are there, worth a first look.)
        for (stream, peer) in self.accept.close(self.poll.registry()) {
            self.admit(stream, peer, true);
        }
        self.ledger.report.at_start = self.ledger.counts;
        self.apply_drain_rule(cause, now);
    }

    /// Applies the drain's rule to every connection, as it begins (see `Connection::drain`), and
    /// logs what it found.
    fn apply_drain_rule(&mut self, cause: Cause, now: Tick) {
        // Idle connections close at once, but not one with a request on its way: a look at the
        // poll first (see `look_again`). A handover keeps them instead: no look needed.
        if self.env.turn.draining == Draining::Now && self.slots.len() > self.ledger.counts.active {
            self.look_again();
        }
        let (mut closing, mut last_call, mut kept) = (0, 0, 0);
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(slot) = self.slots.get_mut(key) {
                match slot.conn.drain(self.env.turn, &self.env.config, true) {
                    DrainRole::CloseIdle => closing += 1,
                    DrainRole::LastCall => last_call += 1,
                    DrainRole::Keep => kept += 1,
                    DrainRole::Finish | DrainRole::Gone => {}
                }
            }
            self.sync(key);
        }
        // The idle connections closed above leave now, in this turn: their clients see them
        // close before any response of the drain tells a busy connection's client that it
        // closes, which is when a client pool reaches for another connection.
        self.reap_closed(now);
        let active = self.ledger.counts.active;
        let mut message = format!("{}: draining {active} active, closing {closing} idle", cause.describe());
        if last_call > 0 {
            message.push_str(&format!(", last call for {last_call} new or just-used"));
        }
        if kept > 0 {
            message.push_str(&format!(
                ", keeping {kept} new or idle until used (then closed with Connection: close), closed by their clients, or timed out (at most {})",
                humantime::format_duration(self.env.config.shutdown_timeout)
            ));
        }
        info!(
            event = "draining", cause:% = cause.describe(), active, closing_idle = closing, last_call, kept_idle = kept;
            "{}{message}", self.ledger.label
        );
    }

    /// Closes everything now.
    fn stop(&mut self, cause: Cause) {
        let closed = self.close_all();
        info!(
            event = "stopped", cause:% = cause.describe(), closed;
            "{}{}: stopping now, closed {closed} connections", self.ledger.label, cause.describe()
        );
        self.set_stage(self.stage.stopped(cause, closed));
    }

    /// Ends a drain that has nothing left, or whose shutdown timeout passed.
    fn finish_drain(&mut self, now: Tick) {
        let Stage::Draining(drain) = self.stage else { return };
        if self.slots.is_empty() {
            let elapsed = drain.started.until(now);
            let cut = CutCounts::since(&self.env.stores.stats.cuts, &drain.cuts_before).total();
            self.tell_unlogged_cuts();
            let outcome = if cut == 0 {
                info!(
                    event = "drained", drain_ms = elapsed.as_millis() as u64;
                    "{}drained in {:.2}s", self.ledger.label, elapsed.as_secs_f64()
                );
                Outcome::Drained { elapsed }
            } else {
                warn!(
                    event = "drained", drain_ms = elapsed.as_millis() as u64, cut;
                    "{}drained in {:.2}s, but {cut} response(s) cut: their clients took nothing of them",
                    self.ledger.label, elapsed.as_secs_f64()
                );
                Outcome::Cut { elapsed, cut }
            };
            self.set_stage(Stage::Done { outcome, drain: Some(drain) });
        } else if drain.deadline <= now {
            let closed = self.close_all();
            self.tell_unlogged_cuts();
            info!(event = "shutdown_timeout", closed; "{}shutdown timeout: closed {closed} connections", self.ledger.label);
            self.set_stage(Stage::Done { outcome: Outcome::TimedOut { closed }, drain: Some(drain) });
        }
    }

    /// The one place the stage changes: connections, observers and long-lived work hear of it.
    fn set_stage(&mut self, stage: Stage) {
        self.stage = stage;
        self.env.turn.draining = stage.draining();
        if let Some(at) = stage.deadline() {
            self.env.turn.drain_until = at;
        }
        for observer in &mut self.observers {
            observer.stage_changed(&stage);
        }
        match stage.draining() {
            Draining::HandingOver => self.drain.begin_handover(),
            Draining::Now => self.drain.begin(),
            Draining::No | Draining::Soon => {}
        }
    }

    /// Cut connections that were not named in a WARN line of their own (too many at once): one
    /// line says how many.
    fn tell_unlogged_cuts(&mut self) {
        let more = self.env.logs.cut_log.take_unlogged();
        if more > 0 {
            warn!(event = "cut", more; "{}{more} more connection(s) cut (not named above)", self.ledger.label);
        }
    }

    /// Closes every connection (reported as Closed, counted as closed by force) and returns how
    /// many there were.
    fn close_all(&mut self) -> usize {
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        let count = keys.len();
        for key in keys {
            if let Some(slot) = self.slots.get_mut(key) {
                let (cut, stream) = slot.conn.abort();
                if stream {
                    self.ledger.report.streams_cut += 1;
                }
                if cut {
                    self.env.stores.stats.cut(Cut::Shutdown);
                    if self.env.logs.cut_log.allow(self.env.turn.now) {
                        let Client { id, addr } = slot.conn.client;
                        warn!(
                            event = "cut", reason = "shutdown", client:% = addr, conn = id;
                            "{}connection {id} ({addr}): cut: closed in the middle of its response by the shutdown",
                            self.ledger.label
                        );
                    }
                }
                if self.env.logs.access.is_some() {
                    slot.conn.record_close(self.env.turn, &mut self.env.logs);
                }
            }
            self.sync(key);
        }
        self.queues.closed.clear();
        // Dropping a stream closes its socket, which also takes it out of the poll.
        self.slots.clear();
        self.ledger.report.forced += count as u64;
        count
    }

    /// Publishes the counters for `/metrics`, and from the first shutdown request on the
    /// drain's figures (observers hear of its progress).
    fn publish(&mut self, now: Tick) {
        self.metrics.publish(&self.env.stores.stats, &self.ledger.counts);
        let drain = match self.stage {
            Stage::Serving => return,
            Stage::Announced { .. } => None,
            Stage::Draining(drain) => Some((drain, true)),
            Stage::Done { outcome, drain } => drain.map(|d| (d, !matches!(outcome, Outcome::Stopped { .. }))),
        };
        if let Some((drain, running)) = drain {
            let report = &mut self.ledger.report;
            report.served = self.env.stores.stats.served().saturating_sub(drain.served_before);
            report.cut = CutCounts::since(&self.env.stores.stats.cuts, &drain.cuts_before);
            if running {
                report.micros = duration_micros(drain.started.until(now));
                self.progress.tell(now, &self.ledger.counts, &self.ledger.label);
            }
            for observer in &mut self.observers {
                observer.drain_progress();
            }
        }
        self.metrics.publish_drain(&self.ledger.report);
    }
}

/// Puts a connection's socket in the poll after its first drive (unless that closed it). Edge
/// triggered: whatever is ready at registration (unread input, room to write, the client's end)
/// shows in the next wait, so nothing that arrived after the first look is missed. A socket
/// that cannot be registered is closed.
#[inline(never)]
fn register<S: Accepted>(poll: &Poll, key: usize, slot: &mut Slot<S>) {
    slot.registered = true;
    if slot.conn.state() == ConnState::Closed {
        return;
    }
    let token = Token(key + FIRST_CONNECTION);
    let stream = slot.conn.stream_mut().tcp_mut();
    if let Err(e) = poll.registry().register(stream, token, Interest::READABLE | Interest::WRITABLE) {
        warn!("cannot register connection {} from {}: {e}", slot.conn.client.id, slot.conn.client.addr);
        slot.conn.lost(e.kind());
    }
}

/// Microseconds, saturating.
fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A connection on a real loopback socket, and its client's end.
    fn connection() -> (Connection<TcpStream>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (Connection::new(TcpStream::from_std(server), 0, 1, peer, Tick::now()), client)
    }

    /// A successor that becomes ready during a shutdown's drain delay ends the delay, but the
    /// drain stays the one the shutdown asked for: an idle connection is closed, not kept for
    /// the successor's sake until the shutdown timeout.
    #[test]
    fn a_handover_during_the_drain_delay_drains_as_the_shutdown_asked() {
        use std::io::Write;
        let listener = crate::listen::bind("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = listener.local_addr().unwrap();
        let config =
            ServerConfig { handle_signals: false, drain_delay: Duration::from_secs(30), ..ServerConfig::DEFAULT };
        let server = Server::from_listener(listener, config, |_: &crate::Request<'_>, _: &mut crate::Response| {
            crate::Reply::Now
        })
        .unwrap();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            assert_eq!(client.read(&mut byte).unwrap(), 1, "the answer ended early: {head:?}");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
        handle.graceful();
        handle.hand_over(4242);
        // Closed by the drain (at once, or after its last call), long before the timeout.
        assert_eq!(client.read(&mut [0; 8]).expect("closed, not kept"), 0);
        let outcome = thread.join().unwrap().unwrap();
        assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
    }

    #[test]
    fn slow_turns_get_a_line_a_second_and_the_next_line_counts_the_rest() {
        let mut log = SlowLog::default();
        let t0 = Tick::now();
        assert_eq!(log.allow(t0), Some(0));
        assert_eq!(log.allow(t0.after(Duration::from_millis(300))), None);
        assert_eq!(log.allow(t0.after(Duration::from_millis(900))), None);
        assert_eq!(log.allow(t0.after(Duration::from_millis(1000))), Some(2));
        assert_eq!(log.allow(t0.after(Duration::from_millis(2500))), Some(0));
    }

    #[test]
    fn only_the_last_server_of_the_process_leaves_its_sockets_to_the_exit() {
        let running = Arc::new(AtomicUsize::new(2));
        let ((first_conn, mut first_client), (last_conn, mut last_client)) = (connection(), connection());
        let last_fd = last_conn.stream().as_raw_fd();
        let mut first = Parting { conns: vec![first_conn], exit: Some(Arc::clone(&running)) };
        let mut last = Parting { conns: vec![last_conn], exit: Some(Arc::clone(&running)) };

        // Another server still runs: this one closes its sockets, its client sees the end now.
        assert!(!first.leave());
        assert_eq!(first_client.read(&mut [0; 8]).unwrap(), 0);
        // The last one leaves them open for the exit: its client sees nothing yet.
        assert!(last.leave());
        assert!(last.conns.is_empty());
        last_client.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(last_client.read(&mut [0; 8]).is_err(), "closed before the exit");
        // (What the exit would do.) SAFETY: the forgotten connection owned this descriptor.
        drop(unsafe { OwnedFd::from_raw_fd(last_fd) });
        last_client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(last_client.read(&mut [0; 8]).unwrap(), 0);
    }

    #[test]
    fn without_an_exit_to_leave_them_to_a_server_closes_its_sockets() {
        let (conn, mut client) = connection();
        let mut parting = Parting { conns: vec![conn], exit: None };
        assert!(!parting.leave());
        assert_eq!(client.read(&mut [0; 8]).unwrap(), 0);
    }

    /// An idle connection costs its slot and a deadline entry, nothing else (its buffers go
    /// back to the pool, a body phase is boxed): the slot is what RSS per idle connection is
    /// made of (`benches/compare.sh` measures it; the aim is 256 bytes at 10,000). A field
    /// that makes it grow should be worth it.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_slot_stays_small() {
        assert!(std::mem::size_of::<Slot<TcpStream>>() <= 224, "{} bytes", std::mem::size_of::<Slot<TcpStream>>());
        assert_eq!(std::mem::size_of::<(crate::timer::Tick, usize)>(), 16, "a deadline entry");
    }
}
