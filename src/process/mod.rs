//! Running quiesce as a whole process: one [`Server`] per worker thread, each with its own
//! listening socket on the same address (`SO_REUSEPORT`) or its own descriptor of a socket
//! inherited from systemd or from a restarting parent; one signal source, in worker 0, whose
//! shutdown requests every other worker follows; readiness reported to systemd and to the
//! parent; and a [`Summary`] of the shutdown at the end.
//!
//! Everything process-wide lives here, outside the reactor: what the process inherits at
//! startup (`inherit`), the SIGHUP restart (`restart`), systemd (`systemd`), and the observer of
//! worker 0 that ties them to its shutdown stage (`supervisor`).
//!
//! No lock or shared state is on the request path: each worker owns its loop, its connections
//! and its counters; only the shutdown handles and the published [`Metrics`] cross threads.

mod inherit;
mod restart;
mod supervisor;
mod systemd;

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use log::{error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::access::AccessLog;
use crate::blocking::BlockingPool;
use crate::config::ServerConfig;
use crate::counters::DrainReport;
use crate::error::Error;
use crate::errors::{ErrorInfo, Renderer};
use crate::handler::Handler;
use crate::http::response::Response;
use crate::listen;
use crate::metrics::{LogCounts, LogHealth, Metrics, Registry};
use crate::server::{Outcome, Server};
use crate::shutdown::{DrainNotice, Handles, ShutdownHandle};
use crate::watch::SignalGuard;
use inherit::{Inherited, Source};
use restart::{Copies, ReadyPipe, Restart};
use supervisor::Supervisor;
use systemd::Notifier;

/// Listening sockets handed to this process: by systemd socket activation (`LISTEN_FDS`) or by
/// a quiesce that restarted into this one on SIGHUP.
#[derive(Debug)]
pub struct InheritedSockets(Inherited);

impl InheritedSockets {
    /// Takes the sockets named by the environment, if any, and removes those variables so that
    /// child processes do not see them.
    ///
    /// Call this first in `main`, before any thread is started: it changes the environment.
    pub fn take() -> io::Result<Option<InheritedSockets>> {
        Ok(inherit::inherited()?.map(InheritedSockets))
    }

    /// How many sockets.
    pub fn len(&self) -> usize {
        self.0.listeners.len()
    }

    /// Whether there are none (never true for a value returned by [`InheritedSockets::take`]).
    pub fn is_empty(&self) -> bool {
        self.0.listeners.is_empty()
    }

    /// Where they came from, for logs.
    pub fn origin(&self) -> &'static str {
        match self.0.source {
            Source::Systemd => "systemd socket activation",
            Source::Restart => "the previous quiesce process",
        }
    }
}

/// How a process run ended, over every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The combined outcome: a signal stop if any worker stopped on one, else a timeout if any
    /// timed out, else drained (in the longest worker's time).
    pub outcome: Outcome,
    /// The drain, summed over the workers.
    pub drain: DrainReport,
    /// Number of workers.
    pub workers: usize,
    /// What the log output could not write, when `run` returned (see [`LogHealth`]; a caller
    /// that writes more before the summary can read the counts again).
    pub log: LogCounts,
    /// With HTTPS served: its handshakes, and the connections ended with `close_notify`.
    pub tls: Option<TlsSummary>,
}

/// The HTTPS figures of a process run (see [`Summary::tls`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsSummary {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed (any reason; `/metrics` tells them apart).
    pub failed: u64,
    /// Connections the server ended with `close_notify`.
    pub close_notify: u64,
}

impl Summary {
    /// The process exit code (see [`Outcome::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }

    /// One line of JSON for the log: the outcome, the counts per state when the drain began,
    /// requests served during the drain, connections closed by force, the drain time, and the
    /// log lines lost and failed writes of each log (`"log":{"stderr":{"lost":0,"errors":0},…}`).
    pub fn to_json(&self) -> String {
        let outcome = match self.outcome {
            Outcome::Drained { .. } => "drained",
            Outcome::Cut { .. } => "cut",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::Stopped { .. } => "stopped",
        };
        let d = &self.drain;
        let mut json = String::new();
        let _ = write!(
            json,
            "{{\"event\":\"shutdown\",\"outcome\":\"{outcome}\",\"exit_code\":{},\"workers\":{},\
             \"at_drain_start\":{{\"new\":{},\"active\":{},\"idle\":{}}},\"served_during_drain\":{},\
             \"closed_by_force\":{},\"streams_cut\":{},\"cut\":{{\"total\":{},\"write_timeout\":{},\
             \"drain_write_timeout\":{},\"shutdown\":{}}},\"drain_ms\":{:.3},\"log\":{}{}}}",
            self.exit_code(),
            self.workers,
            d.at_start.new,
            d.at_start.active,
            d.at_start.idle,
            d.served,
            d.forced,
            d.streams_cut,
            d.cut.total(),
            d.cut.write_timeout,
            d.cut.drain_write_timeout,
            d.cut.shutdown,
            d.micros as f64 / 1000.0,
            self.log.to_json(),
            self.tls.map_or(String::new(), |t| format!(
                ",\"tls\":{{\"handshakes\":{},\"failed\":{},\"close_notify\":{}}}",
                t.handshakes, t.failed, t.close_notify
            )),
        );
        json
    }
}

/// How [`run`] runs the process.
#[derive(Debug)]
pub struct Options {
    /// Worker threads, each a server with its own loop (at least 1). Default 1.
    pub workers: usize,
    /// Listening sockets passed to the process ([`InheritedSockets::take`]), served instead of
    /// binding `config.addr`. Default none.
    pub inherited: Option<InheritedSockets>,
    /// Take SIGHUP (when `config.handle_signals` is on) and restart on it: start a new copy of
    /// the running executable with the same arguments on the same listening sockets, and drain
    /// once it serves. That drain keeps idle keep-alive connections open until their clients
    /// use them (the response closes them) or close them, or until the shutdown timeout, instead
    /// of closing them after a last call: a client or proxy that picks one from its pool just
    /// then would lose a request it does not retry. A SIGTERM meanwhile applies a signal's drain
    /// rule to them. Off by default: a program that embeds quiesce rarely wants to be
    /// re-executed; the `quiesce` binary turns it on.
    pub restart_on_sighup: bool,
    /// The process exits as soon as `run` returns (as the `quiesce` binary does): the last
    /// worker to finish leaves the sockets its drain closed in its last turn (idle
    /// connections) for the exit to close, all at once, instead of one `close` call each.
    /// Their clients see the end at the exit rather than a moment before it. Off by default:
    /// a program that embeds quiesce may go on after `run`, and must not keep those sockets.
    pub process_exits_after: bool,
    /// Serve HTTPS too: as many servers again as `workers`, on `TlsListen::addr` (or, with
    /// inherited sockets, on those whose port is its port), each making TLS handshakes with
    /// `TlsListen::config`. Default none.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsListen>,
}

/// Where and how [`run`] serves HTTPS (see [`Options::tls`]).
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// The configuration new handshakes use (swap it to rotate the certificate).
    pub config: crate::tls::TlsConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            inherited: None,
            restart_on_sighup: false,
            process_exits_after: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// What `make_handler` gets for each worker.
pub struct Worker {
    /// The worker's number, 0 first.
    pub index: usize,
    /// Every worker's metrics (for a `/metrics` route).
    pub registry: Registry,
    /// The process's shutdown handle (worker 0's, which every other worker follows) and the
    /// drain notice all workers share.
    pub handles: Handles,
    /// The process's pool for blocking work, shared by every worker (sized by the
    /// configuration's `blocking_threads` and `blocking_queue`): the one
    /// [`Response::blocking`](crate::Response::blocking) uses in their handlers, and in
    /// [`Registry`]'s figures.
    pub blocking: BlockingPool,
    access_log: RefCell<Option<Box<dyn AccessLog>>>,
    renderer: RefCell<Option<Renderer>>,
}

impl Worker {
    /// Gives this worker's server an access log (see
    /// [`Server::set_access_log`](crate::Server::set_access_log)); each worker has its own.
    pub fn set_access_log(&self, log: impl AccessLog + 'static) {
        *self.access_log.borrow_mut() = Some(Box::new(log));
    }

    /// Gives this worker's server an error renderer (see
    /// [`Server::set_error_renderer`](crate::Server::set_error_renderer)).
    pub fn set_error_renderer(&self, render: impl Fn(&ErrorInfo<'_>, &mut Response) + Send + Sync + 'static) {
        *self.renderer.borrow_mut() = Some(Renderer::new(render));
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("registry", &self.registry)
            .field("handles", &self.handles)
            .field("blocking", &self.blocking)
            .field("access_log", &self.access_log.borrow().is_some())
            .field("renderer", &self.renderer.borrow().is_some())
            .finish()
    }
}

/// What `on_started` gets, once every worker is set up and just before serving starts.
#[derive(Debug)]
pub struct Started {
    /// The address the workers listen on.
    pub addr: SocketAddr,
    /// The address the HTTPS servers listen on, if any.
    pub tls_addr: Option<SocketAddr>,
    /// Stops the whole process (from another thread, as a host program would).
    pub handles: Handles,
}

/// Runs `options.workers` servers until they have all shut down.
///
/// Sockets: `options.inherited` if given (worker i gets its own descriptor of socket i, or of
/// socket i mod n when there are fewer), otherwise each worker binds `config.addr` itself, with
/// `SO_REUSEPORT` when there is more than one. `make_handler` builds each worker's handler.
/// Worker 0 takes the signals (with `config.handle_signals`); every other worker follows it.
/// `on_started` is called once every worker is set up, just before serving starts.
pub fn run<H, F>(
    config: ServerConfig,
    options: Options,
    make_handler: F,
    on_started: impl FnOnce(&Started),
) -> Result<Summary, Error>
where
    H: Handler + Send + 'static,
    F: Fn(&Worker) -> H,
{
    let workers = options.workers.max(1);
    #[cfg(feature = "tls")]
    let tls = options.tls;
    #[cfg(not(feature = "tls"))]
    let tls: Option<Never> = None;
    let tls_addr = tls.as_ref().map(|tls| tls.addr());
    let (listeners, ready_pipe) = listeners(&config, workers, options.inherited, tls_addr)?;
    // The restart's own descriptors of every worker's socket, taken before the servers own them.
    let copies = match options.restart_on_sighup {
        true => Some(Copies::new(
            listeners.iter().map(TcpListener::try_clone).collect::<io::Result<Vec<_>>>().map_err(Error::Setup)?,
        )),
        false => None,
    };
    let metrics: Vec<Arc<Metrics>> = (0..listeners.len()).map(|_| Arc::default()).collect();
    let blocking = BlockingPool::new(config.blocking_threads, config.blocking_queue);
    let registry = Registry::new(metrics.clone()).with_blocking(&blocking);
    #[cfg(feature = "tls")]
    let registry = match &tls {
        Some(tls) => registry.with_tls(&tls.config),
        None => registry,
    };
    let drain = DrainNotice::new();

    let shared = Shared { metrics: &metrics, registry: &registry, drain: &drain, blocking: &blocking };
    let mut servers = servers(listeners, workers, &config, &make_handler, &shared)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &tls {
        let https = servers.split_off(workers);
        servers.extend(https.into_iter().map(|server| server.with_tls(tls.config.clone())));
    }
    let tls_addr = servers.get(workers).map(Server::local_addr);
    if options.process_exits_after {
        let running = Arc::new(AtomicUsize::new(servers.len()));
        for server in &mut servers {
            server.leave_to_exit(Arc::clone(&running));
        }
    }
    if let Some(copies) = &copies {
        // Each worker lets go of its socket's copy when it stops, whatever stops it.
        for (i, server) in servers.iter_mut().enumerate() {
            server.observe(Box::new(copies.keeper(i)));
        }
    }
    let mut followers = servers.split_off(1);
    let mut leader = servers.pop().ok_or_else(|| Error::Setup(io::Error::other("no worker")))?;
    // Whether a signal (or the handle) turned worker 0's handover drain into an ordinary one.
    let handover_ended = Arc::new(AtomicBool::new(false));
    leader.observe(Box::new(HandoverEnded(Arc::clone(&handover_ended))));
    let notice = drain.clone();
    let handles = Handles { shutdown: leader.shutdown_handle(), drain };
    let follower_handles: Vec<ShutdownHandle> = followers.iter().map(Server::shutdown_handle).collect();
    for handle in &follower_handles {
        leader.add_follower(handle.clone());
    }
    let notifier = Notifier::from_env().map(Arc::new);
    let restart = match copies {
        Some(copies) => {
            leader.take_sighup()?;
            Some(Restart::new(copies, handles.shutdown.clone(), notifier.clone()))
        }
        None => None,
    };
    leader.observe(Box::new(Supervisor::new(notifier.clone(), registry.clone(), restart)));

    let mut threads = Vec::with_capacity(followers.len());
    for (i, server) in followers.drain(..).enumerate() {
        let thread = thread::Builder::new()
            .name(format!("quiesce-worker-{}", i + 1))
            .spawn(move || server.run())
            .map_err(Error::Setup)?;
        threads.push(thread);
    }

    on_started(&Started { addr: leader.local_addr(), tls_addr, handles });
    report_ready(ready_pipe, notifier.as_deref());

    let leader_outcome = leader.run();
    if leader_outcome.is_err() {
        // Nobody else would tell the others to stop.
        for handle in &follower_handles {
            handle.immediate();
        }
    }
    // Worker 0 and its signal source are gone, but others may still be draining: a signal now
    // is the second one, and stops them at once. Unless worker 0's drain was a restart's
    // handover that no signal changed: the others may be keeping idle connections for their
    // clients, and a signal now is the first, which closes those (and a second stops them).
    let first_signal_to_come = notice.successor_serving() && !handover_ended.load(Ordering::SeqCst);
    let late_signal = (config.handle_signals && !threads.is_empty())
        .then(|| LateSignals::watch(follower_handles, first_signal_to_come))
        .transpose()
        .map_err(Error::Setup)?;
    let mut outcomes = vec![leader_outcome];
    for thread in threads {
        outcomes.push(thread.join().unwrap_or_else(|_| Err(Error::Poll(io::Error::other("worker thread panicked")))));
    }
    if let Some(signal) = late_signal.and_then(LateSignals::finish) {
        outcomes.push(Ok(Outcome::Stopped { signal: Some(signal), closed: 0 }));
    }
    let outcome = combine(outcomes).ok_or_else(|| Error::Setup(io::Error::other("no worker")))?;
    Ok(Summary {
        outcome,
        drain: registry.drain_report(),
        workers,
        log: LogHealth::global().counts(),
        tls: tls.map(|tls| tls.summary()),
    })
}

/// What the workers of a process share.
struct Shared<'a> {
    metrics: &'a [Arc<Metrics>],
    registry: &'a Registry,
    drain: &'a DrainNotice,
    blocking: &'a BlockingPool,
}

/// One server per listener: worker i gets its own handler, metrics and log label, they all
/// share `drain` and the blocking pool, and only worker 0 takes signals. Each handler is given
/// worker 0's shutdown handle: stopping it stops them all.
fn servers<H, F>(
    listeners: Vec<TcpListener>,
    plain: usize,
    config: &ServerConfig,
    make_handler: &F,
    shared: &Shared<'_>,
) -> Result<Vec<Server>, Error>
where
    H: Handler + Send + 'static,
    F: Fn(&Worker) -> H,
{
    let workers = listeners.len();
    let mut servers: Vec<Server> = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = ServerConfig { handle_signals: config.handle_signals && i == 0, ..config.clone() };
        let leader = servers.first().map(Server::shutdown_handle);
        let (mut access_log, mut renderer) = (None, None);
        let mut server = Server::assemble(listener, config, shared.drain.clone(), |own| {
            let shutdown = leader.unwrap_or_else(|| own.clone());
            let handles = Handles { shutdown, drain: shared.drain.clone() };
            let worker = Worker {
                index: i,
                registry: shared.registry.clone(),
                handles,
                blocking: shared.blocking.clone(),
                access_log: RefCell::new(None),
                renderer: RefCell::new(None),
            };
            let handler = make_handler(&worker);
            (access_log, renderer) = (worker.access_log.into_inner(), worker.renderer.into_inner());
            handler
        })?;
        if let Some(log) = access_log {
            server.set_boxed_access_log(log);
        }
        if let Some(renderer) = renderer {
            server.set_renderer(renderer);
        }
        server.set_metrics(Arc::clone(&shared.metrics[i]));
        server.set_blocking_pool(shared.blocking.clone());
        if workers > 1 {
            match i.checked_sub(plain) {
                None => server.set_label(format!("worker {i}: ")),
                Some(j) => server.set_label(format!("https worker {j}: ")),
            }
        }
        servers.push(server);
    }
    Ok(servers)
}

/// Tells whoever waits for this process that it serves: the previous process after a restart
/// (which tells systemd: it is still the main process), or else systemd.
fn report_ready(ready_pipe: Option<ReadyPipe>, notifier: Option<&Notifier>) {
    match ready_pipe {
        Some(pipe) => {
            if let Err(e) = pipe.signal() {
                warn!("cannot tell the previous process that this one is ready: {e}");
            }
        }
        None => {
            if let Some(notifier) = notifier {
                notifier.ready();
            }
        }
    }
}

/// The process's outcome: the worst of its workers'. A worker that failed counts as timed out
/// (it did not drain), and is logged.
fn combine(outcomes: Vec<Result<Outcome, Error>>) -> Option<Outcome> {
    let outcomes = outcomes.into_iter().map(|outcome| {
        outcome.unwrap_or_else(|e| {
            error!("a worker failed: {e}");
            Outcome::TimedOut { closed: 0 }
        })
    });
    outcomes.reduce(worse)
}

/// Hears that worker 0's handover drain became an ordinary one (see [`LateSignals`]).
struct HandoverEnded(Arc<AtomicBool>);

impl crate::server::stage::Observer for HandoverEnded {
    fn stage_changed(&mut self, _stage: &crate::server::stage::Stage) {}

    fn handover_ended(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// SIGINT/SIGTERM handling on a thread of its own, once worker 0 has returned: a signal stops
/// every other worker at once. It is a second one, so a worker stuck in a turn does not keep
/// the process alive either (`SignalGuard`). After a handover drain no signal changed
/// (`first_to_come`), the first signal is a first one: the other workers drain as after a
/// signal (their kept idle connections close), and a second one stops them.
struct LateSignals {
    handle: signal_hook::iterator::Handle,
    thread: thread::JoinHandle<Option<i32>>,
    _guard: SignalGuard,
}

impl LateSignals {
    fn watch(followers: Vec<ShutdownHandle>, first_to_come: bool) -> io::Result<LateSignals> {
        let guard = SignalGuard::install(if first_to_come { 0 } else { 1 })?;
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let name = |signal| if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
        let thread = thread::Builder::new().name("quiesce-signals".into()).spawn(move || {
            let mut signals = signals.forever();
            if first_to_come {
                let signal = signals.next()?;
                info!(
                    "received {}: the workers still draining after the restart close their idle connections",
                    name(signal)
                );
                for follower in &followers {
                    follower.drain_now();
                }
            }
            let signal = signals.next()?;
            let name = name(signal);
            info!("received {name}: stopping the workers still draining");
            for follower in &followers {
                follower.immediate();
            }
            Some(signal)
        })?;
        if first_to_come {
            // Said once the signals are watched: from here on a signal is not lost.
            info!("worker 0 finished its drain; a signal now closes the idle connections the other workers keep");
        }
        Ok(LateSignals { handle, thread, _guard: guard })
    }

    /// Stops watching; the signal that arrived, if one did.
    fn finish(self) -> Option<i32> {
        self.handle.close();
        self.thread.join().ok().flatten()
    }
}

/// The worse of two outcomes: a signal stop over a timeout over a drain that cut responses over
/// a clean drain.
fn worse(a: Outcome, b: Outcome) -> Outcome {
    fn rank(o: &Outcome) -> u8 {
        match o {
            Outcome::Drained { .. } => 0,
            Outcome::Cut { .. } => 1,
            Outcome::TimedOut { .. } => 2,
            Outcome::Stopped { signal: None, .. } => 3,
            Outcome::Stopped { signal: Some(_), .. } => 4,
        }
    }
    match (a, b) {
        (Outcome::Drained { elapsed: x }, Outcome::Drained { elapsed: y }) => Outcome::Drained { elapsed: x.max(y) },
        (Outcome::Cut { elapsed: x, cut: m }, Outcome::Cut { elapsed: y, cut: n }) => {
            Outcome::Cut { elapsed: x.max(y), cut: m + n }
        }
        (Outcome::TimedOut { closed: x }, Outcome::TimedOut { closed: y }) => Outcome::TimedOut { closed: x + y },
        _ if rank(&b) > rank(&a) => b,
        _ => a,
    }
}

/// One listening socket per worker, and the readiness pipe to a restarting parent.
/// One listening socket per worker, then (with `tls_addr`) one per HTTPS worker, and the
/// readiness pipe to a restarting parent. Inherited sockets whose port is `tls_addr`'s are the
/// HTTPS ones (a restart passes both kinds; so may systemd).
fn listeners(
    config: &ServerConfig,
    workers: usize,
    inherited: Option<InheritedSockets>,
    tls_addr: Option<SocketAddr>,
) -> Result<(Vec<TcpListener>, Option<ReadyPipe>), Error> {
    if let Some(InheritedSockets(inherited)) = inherited {
        let given = inherited.listeners;
        if !inherited.names.is_empty() {
            info!("inherited socket names: {}", inherited.names.join(", "));
        }
        let tls_port = tls_addr.map(|addr| addr.port());
        let is_tls = |l: &TcpListener| tls_port.is_some() && l.local_addr().ok().map(|a| a.port()) == tls_port;
        let (tls, plain): (Vec<&TcpListener>, Vec<&TcpListener>) = given.iter().partition(|l| is_tls(l));
        let mut own = share(&plain, workers, "")?;
        if tls_addr.is_some() {
            own.extend(share(&tls, workers, "HTTPS ")?);
        }
        return Ok((own, inherited.ready));
    }
    let mut all = bind_workers(config.addr, config, workers)?;
    if let Some(addr) = tls_addr {
        all.extend(bind_workers(addr, config, workers)?);
    }
    Ok((all, None))
}

/// A descriptor of one of `given` for each of `workers` (worker i gets socket i mod n).
fn share(given: &[&TcpListener], workers: usize, kind: &str) -> Result<Vec<TcpListener>, Error> {
    if given.is_empty() {
        return Err(Error::Setup(io::Error::other(format!("no inherited {kind}listening socket"))));
    }
    if given.len() > workers {
        warn!("{} {kind}sockets inherited for {workers} worker(s): the extra ones are not served", given.len());
    }
    (0..workers).map(|i| listen::dup_listener(given[i % given.len()]).map_err(Error::Setup)).collect()
}

/// `workers` sockets listening on `addr` (with `SO_REUSEPORT` when more than one).
fn bind_workers(addr: SocketAddr, config: &ServerConfig, workers: usize) -> Result<Vec<TcpListener>, Error> {
    let reuse_port = config.reuse_port || workers > 1;
    let first = listen::bind(addr, config.backlog, reuse_port).map_err(|source| Error::Bind { addr, source })?;
    // With port 0, the other workers bind the port the first one got.
    let addr = first.local_addr().map_err(Error::Setup)?;
    let mut all = vec![first];
    for _ in 1..workers {
        all.push(listen::bind(addr, config.backlog, true).map_err(|source| Error::Bind { addr, source })?);
    }
    Ok(all)
}

/// Stands for [`TlsListen`] in a build without TLS: there is none.
#[cfg(not(feature = "tls"))]
enum Never {}

#[cfg(not(feature = "tls"))]
impl Never {
    fn addr(&self) -> SocketAddr {
        match *self {}
    }
    fn summary(self) -> TlsSummary {
        match self {}
    }
}

#[cfg(feature = "tls")]
impl TlsListen {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn summary(self) -> TlsSummary {
        let counts = self.config.counts();
        TlsSummary {
            handshakes: counts.handshakes,
            failed: counts.failed.iter().map(|(_, n)| n).sum(),
            close_notify: counts.close_notify,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn combines_outcomes() {
        let drained = |ms| Outcome::Drained { elapsed: Duration::from_millis(ms) };
        assert_eq!(worse(drained(5), drained(9)), drained(9));
        assert_eq!(worse(drained(5), Outcome::TimedOut { closed: 2 }), Outcome::TimedOut { closed: 2 });
        let stopped = Outcome::Stopped { signal: Some(2), closed: 1 };
        assert_eq!(worse(stopped, Outcome::TimedOut { closed: 2 }), stopped);
    }

    #[test]
    fn summary_json_is_one_line() {
        let summary = Summary {
            outcome: Outcome::Drained { elapsed: Duration::ZERO },
            drain: DrainReport::default(),
            workers: 2,
            log: LogCounts::default(),
            tls: None,
        };
        let json = summary.to_json();
        assert!(!json.contains('\n'));
        assert!(
            json.starts_with("{\"event\":\"shutdown\",\"outcome\":\"drained\",\"exit_code\":0,\"workers\":2,"),
            "{json}"
        );
    }
}
