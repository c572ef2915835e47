//! Blocking work as a closure: a handler hands a closure to a bounded pool of threads that the
//! library owns, and the closure's [`Response`] is the answer.
//!
//! ```no_run
//! use quiesce::{Reply, Request, Response, Server, ServerConfig};
//!
//! let handler = |req: &Request<'_>, res: &mut Response| -> Reply {
//!     // On a pool thread, with a copy of the request: block as long as you like.
//!     res.blocking(req, |req| {
//!         let mut answer = Response::new();
//!         answer.set_body(format!("looked up {}\n", req.path()));
//!         answer
//!     })
//! };
//! let server = Server::bind(ServerConfig::default(), handler).expect("bind");
//! std::process::exit(server.run().expect("poll").exit_code());
//! ```
//!
//! [`Response::blocking`] runs on the pool of the server whose loop calls the handler (sized
//! by [`ServerConfig::blocking_threads`](crate::ServerConfig::blocking_threads) and
//! [`blocking_queue`](crate::ServerConfig::blocking_queue); the workers of
//! [`process::run`](crate::process::run) share one). A [`BlockingPool`] can also be built and
//! used directly ([`BlockingPool::run`], [`BlockingPool::spawn`]), or given to a server with
//! [`Server::set_blocking_pool`](crate::Server::set_blocking_pool).
//!
//! What the pool promises:
//!
//! - **Bounded.** At most `threads` closures run at once, and at most `queue` wait for a
//!   thread. One more is refused on the loop, at once: `503` with `Retry-After: 1`, rather
//!   than a wait behind everyone else.
//! - **No thread it does not use.** Threads start as jobs need them, up to `threads`, the
//!   first with the first job: a process with a second thread pays for it on every system call
//!   (glibc then wraps each in cancellation-point handling), so a server that never blocks must
//!   not have one.
//! - **A client that left costs no work.** A job whose client closed before its turn came is
//!   dropped unrun; long work can ask [`client_gone`] as it goes and stop early.
//! - **A panic is a 500, not a lost thread.** The closure runs under `catch_unwind`: the client
//!   gets `500` (and the connection closes, as after a handler's panic), the panic is logged
//!   and counted, and the thread takes the next job.
//! - **The drain waits for it.** A job's connection stays Active until its answer, so a drain
//!   waits for the work queued and running (up to the shutdown timeout, which closes the
//!   connection: a job still queued then is skipped). A job that can never run (the pool could
//!   start no thread at all) is answered `503` at once, never left waiting.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;

use crate::errors::{ErrorInfo, INTERNAL_ERROR, Renderer, current_renderer};
use crate::handler::Reply;
use crate::http::request::{OwnedRequest, Request};
use crate::http::response::Response;
use crate::responder::Responder;
use crate::sync::lock;

/// A bounded pool of threads for blocking work. Cheap to clone: clones share the threads and
/// the queue. When the last clone is dropped, the threads finish the jobs already queued and
/// exit; nothing waits for them.
#[derive(Clone)]
pub struct BlockingPool {
    handle: Arc<Handle>,
}

/// The pool as its users hold it: dropping the last one lets the threads go.
struct Handle {
    shared: Arc<Shared>,
}

/// What the threads and the users share.
struct Shared {
    /// Most threads.
    threads: usize,
    /// Most jobs waiting for a thread.
    queue: usize,
    state: Mutex<State>,
    /// Signalled when a job is queued (and when the pool closes).
    ready: Condvar,
    counts: Counters,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads started and not exited.
    alive: usize,
    /// Threads not running a job (waiting, or about to look at the queue).
    idle: usize,
    /// Idle threads asleep on `ready`.
    sleeping: usize,
    /// Of those, the ones woken that have not looked at the queue yet.
    woken: usize,
    /// Every handle is gone: exit once the queue is empty.
    closed: bool,
    /// Thread names count up.
    started: usize,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    done: AtomicU64,
    skipped: AtomicU64,
    panicked: AtomicU64,
}

/// A pool's figures at one moment (see [`BlockingPool::stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockingStats {
    /// Threads started (at most the pool's `threads`; they start as jobs need them).
    pub threads: usize,
    /// Jobs running now.
    pub running: usize,
    /// Jobs queued, not taken by a thread yet.
    pub queued: usize,
    /// Jobs accepted since the pool was made.
    pub accepted: u64,
    /// Jobs refused with 503: the queue was full.
    pub rejected: u64,
    /// Jobs that ran and returned a response.
    pub done: u64,
    /// Jobs not run: their client had left before their turn came.
    pub skipped: u64,
    /// Jobs whose closure panicked (answered 500).
    pub panicked: u64,
}

/// One request's work: the closure, and where its answer goes.
struct Job {
    /// Taken when the job runs; still here when a job is dropped unrun, which answers 503.
    responder: Option<Responder>,
    work: Box<dyn FnOnce() -> Response + Send>,
    /// The error renderer of the loop that handed the job over: a panic's 500 and an unrun
    /// job's 503 look like the server's other errors.
    errors: Renderer,
}

impl BlockingPool {
    /// A pool of up to `threads` threads (at least one) with room for `queue` jobs waiting for
    /// one. No thread starts before the first job.
    pub fn new(threads: usize, queue: usize) -> BlockingPool {
        let state =
            State { jobs: VecDeque::new(), alive: 0, idle: 0, sleeping: 0, woken: 0, closed: false, started: 0 };
        let shared = Shared {
            threads: threads.max(1),
            queue,
            state: Mutex::new(state),
            ready: Condvar::new(),
            counts: Counters::default(),
        };
        BlockingPool { handle: Arc::new(Handle { shared: Arc::new(shared) }) }
    }

    /// Runs `work` on a pool thread with a copy of `req` ([`Request::owned`]), and answers with
    /// the [`Response`] it returns. Returns what the handler should return: [`Reply::Later`],
    /// or, when the queue is full, [`Reply::Now`] with `res` made a `503` with `Retry-After`.
    pub fn run<F>(&self, req: &Request<'_>, res: &mut Response, work: F) -> Reply
    where
        F: FnOnce(OwnedRequest) -> Response + Send + 'static,
    {
        self.submit(res, || {
            let req = req.owned();
            Box::new(move || work(req))
        })
    }

    /// [`BlockingPool::run`] without the request: `work` takes what it needs with it (no copy
    /// of the request is made).
    pub fn spawn<F>(&self, res: &mut Response, work: F) -> Reply
    where
        F: FnOnce() -> Response + Send + 'static,
    {
        self.submit(res, || Box::new(work))
    }

    /// The most threads and the most queued jobs, as made.
    pub fn limits(&self) -> (usize, usize) {
        (self.handle.shared.threads, self.handle.shared.queue)
    }

    /// The pool's figures now.
    pub fn stats(&self) -> BlockingStats {
        self.handle.shared.stats()
    }

    /// A view of the figures that does not keep the pool's threads alive (for `/metrics`).
    pub(crate) fn monitor(&self) -> Monitor {
        Monitor(Arc::clone(&self.handle.shared))
    }

    /// Queues the job `make` builds, or fills `res` with a 503 when there is no room.
    fn submit(&self, res: &mut Response, make: impl FnOnce() -> Box<dyn FnOnce() -> Response + Send>) -> Reply {
        let shared = &self.handle.shared;
        let mut state = lock(&shared.state);
        // Free or startable threads take a job at once; `queue` more may wait.
        let startable = shared.threads - state.alive;
        if state.jobs.len() >= shared.queue + state.idle + startable {
            drop(state);
            shared.counts.rejected.fetch_add(1, Relaxed);
            busy(res);
            return Reply::Now;
        }
        state.jobs.push_back(Job { responder: Some(res.defer()), work: make(), errors: current_renderer() });
        shared.counts.accepted.fetch_add(1, Relaxed);
        let stranded = find_taker(shared, &mut state);
        drop(state);
        // Answered 503 as they drop, outside the lock.
        drop(stranded);
        Reply::Later
    }
}

impl Shared {
    fn stats(&self) -> BlockingStats {
        let (threads, running, queued) = {
            let state = lock(&self.state);
            (state.alive, state.alive - state.idle, state.jobs.len())
        };
        BlockingStats {
            threads,
            running,
            queued,
            accepted: self.counts.accepted.load(Relaxed),
            rejected: self.counts.rejected.load(Relaxed),
            done: self.counts.done.load(Relaxed),
            skipped: self.counts.skipped.load(Relaxed),
            panicked: self.counts.panicked.load(Relaxed),
        }
    }
}

/// Makes sure a thread will look at the queue, if jobs wait: unless one already will (awake
/// and idle, or woken and on its way), wakes one that sleeps, or starts one more. So one thread
/// at a time looks for work: a burst of short jobs wakes one thread, which runs them one after
/// the other, rather than one thread per job; each thread that takes a job while more wait
/// hands the search on, so long jobs still spread over every thread.
///
/// Returns the queued jobs if no thread could start and none is left to run them; the caller
/// drops them (each answers 503) once the lock is let go.
fn find_taker(shared: &Arc<Shared>, state: &mut State) -> Vec<Job> {
    let looking = state.idle - state.sleeping + state.woken;
    if state.jobs.is_empty() || looking > 0 {
        return Vec::new();
    }
    if state.sleeping > state.woken {
        state.woken += 1;
        shared.ready.notify_one();
        return Vec::new();
    }
    if state.alive < shared.threads {
        return start_thread(shared, state);
    }
    // Every thread is busy: the first to finish takes the next job.
    Vec::new()
}

/// Starts one more thread, idle until it takes a job (the lock held: the count and the thread
/// agree). Returns the queued jobs if the system refuses and no thread is left to run them.
fn start_thread(shared: &Arc<Shared>, state: &mut State) -> Vec<Job> {
    state.alive += 1;
    state.idle += 1;
    let name = format!("quiesce-blocking-{}", state.started);
    let for_thread = Arc::clone(shared);
    match thread::Builder::new().name(name).spawn(move || work(&for_thread)) {
        Ok(_) => {
            state.started += 1;
            Vec::new()
        }
        Err(e) => {
            state.alive -= 1;
            state.idle -= 1;
            let stranded: Vec<Job> = if state.alive == 0 { state.jobs.drain(..).collect() } else { Vec::new() };
            log::error!("cannot start a thread for blocking work: {e}; {} queued job(s) answered 503", stranded.len());
            stranded
        }
    }
}

/// A pool thread: runs jobs until the pool is closed and its queue empty.
fn work(shared: &Arc<Shared>) {
    let mut state = lock(&shared.state);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            state.idle -= 1;
            // More wait: another thread looks for them meanwhile (none is stranded: this one
            // lives).
            let _none = find_taker(shared, &mut state);
            drop(state);
            job.run(&shared.counts);
            state = lock(&shared.state);
            state.idle += 1;
            continue;
        }
        if state.closed {
            state.alive -= 1;
            state.idle -= 1;
            return;
        }
        state.sleeping += 1;
        state = shared.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        state.sleeping -= 1;
        // A spurious wake-up may take another's place: at worst one more wake-up later.
        state.woken = state.woken.saturating_sub(1).min(state.sleeping);
    }
}

thread_local! {
    /// The responder of the job this pool thread runs, for [`client_gone`].
    static CURRENT_JOB: RefCell<Option<Responder>> = const { RefCell::new(None) };
    /// The pool of the server whose loop runs on this thread, for [`Response::blocking`].
    static SERVER_POOL: RefCell<Option<BlockingPool>> = const { RefCell::new(None) };
}

/// Inside a closure running on a [`BlockingPool`]: whether its client is gone (it closed, a
/// timeout or the shutdown closed the connection), so long work can stop early; its answer
/// would reach nobody. One atomic load. False anywhere else.
pub fn client_gone() -> bool {
    CURRENT_JOB.with_borrow(|responder| responder.as_ref().is_some_and(Responder::is_closed))
}

impl Job {
    /// Runs the closure and sends its answer, unless the client already left.
    fn run(mut self, counts: &Counters) {
        let Some(responder) = self.responder.take() else { return };
        if responder.is_closed() {
            counts.skipped.fetch_add(1, Relaxed);
            return;
        }
        let work = std::mem::replace(&mut self.work, Box::new(Response::new));
        CURRENT_JOB.set(Some(responder));
        let outcome = catch_unwind(AssertUnwindSafe(work));
        let Some(responder) = CURRENT_JOB.take() else { return };
        let response = match outcome {
            Ok(response) => {
                counts.done.fetch_add(1, Relaxed);
                response
            }
            Err(panic) => {
                counts.panicked.fetch_add(1, Relaxed);
                let what = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic");
                log::error!("blocking work panicked ({what}); answering 500");
                let mut response = Response::new();
                self.errors.internal_error(&ErrorInfo::new(500, INTERNAL_ERROR), &mut response);
                response
            }
        };
        // A client that left meanwhile gets nothing; the responder says so, and that is all.
        let _ = responder.send(response);
    }
}

impl Drop for Job {
    /// A job dropped unrun (the pool could start no thread) answers 503 at once: the client
    /// may retry, and its connection, and a drain, do not wait for an answer that never comes.
    fn drop(&mut self) {
        if let Some(responder) = self.responder.take() {
            let mut response = Response::new();
            let info = ErrorInfo::new(503, "unavailable: the blocking work could not be started");
            self.errors.render(&info, &mut response);
            let _ = response.add_header("Retry-After", "1");
            let _ = responder.send(response);
        }
    }
}

/// Makes `res` the answer to work refused because the queue is full: rendered by the server's
/// error hook (this runs on the loop), with `Retry-After`.
fn busy(res: &mut Response) {
    res.render_error(&crate::errors::ErrorInfo::new(503, "busy: too much blocking work queued"));
    let _ = res.add_header("Retry-After", "1");
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.ready.notify_all();
    }
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (threads, queue) = self.limits();
        f.debug_struct("BlockingPool").field("threads", &threads).field("queue", &queue).finish_non_exhaustive()
    }
}

/// A pool's figures, without keeping its threads alive.
#[derive(Clone)]
pub(crate) struct Monitor(Arc<Shared>);

impl Monitor {
    pub(crate) fn stats(&self) -> BlockingStats {
        self.0.stats()
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Monitor").field(&self.0.threads).finish()
    }
}

/// The pool [`Response::blocking`] uses on a thread that runs no server's loop (a test that
/// calls a handler directly, say): the default size, started with its first job.
fn fallback_pool() -> &'static BlockingPool {
    static POOL: OnceLock<BlockingPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let defaults = crate::config::ServerConfig::DEFAULT;
        BlockingPool::new(defaults.blocking_threads, defaults.blocking_queue)
    })
}

/// While it lives, [`Response::blocking`] on this thread uses the pool it was made with: set by
/// [`Server::run`](crate::Server::run) for its loop.
pub(crate) struct ServerPool {
    previous: Option<BlockingPool>,
}

impl ServerPool {
    pub(crate) fn enter(pool: &BlockingPool) -> ServerPool {
        ServerPool { previous: SERVER_POOL.replace(Some(pool.clone())) }
    }
}

impl Drop for ServerPool {
    fn drop(&mut self) {
        SERVER_POOL.set(self.previous.take());
    }
}

impl Response {
    /// Runs `work` with a copy of `req` on the server's [`BlockingPool`] and answers with the
    /// response it returns; the handler returns what this returns: [`Reply::Later`], or
    /// [`Reply::Now`] when the pool's queue is full (this response is then a `503` with
    /// `Retry-After`). See [the module](crate::blocking) for what the pool promises.
    ///
    /// ```no_run
    /// # use quiesce::{Reply, Request, Response};
    /// fn handle(req: &Request<'_>, res: &mut Response) -> Reply {
    ///     res.blocking(req, |req| {
    ///         let mut answer = Response::new();
    ///         // A file under /srv, by a name the client gives: one path segment, checked (a
    ///         // request path is the client's and is not normalised: `/../etc/passwd` arrives
    ///         // as it is).
    ///         let name = req.path().trim_start_matches('/');
    ///         let safe = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
    ///         let file = safe.then(|| std::fs::read(std::path::Path::new("/srv").join(name)).ok());
    ///         match file.flatten() {
    ///             Some(bytes) => answer.set_body(bytes),
    ///             None => answer.set_status(404),
    ///         };
    ///         answer
    ///     })
    /// }
    /// ```
    ///
    /// The pool is that of the server whose loop calls the handler; on a thread that runs no
    /// server, a pool of the default size shared by the process.
    pub fn blocking<F>(&mut self, req: &Request<'_>, work: F) -> Reply
    where
        F: FnOnce(OwnedRequest) -> Response + Send + 'static,
    {
        SERVER_POOL.with_borrow(|pool| pool.as_ref().unwrap_or_else(|| fallback_pool()).run(req, self, work))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A job that holds the pool's one thread until `release` is dropped.
    fn hold(pool: &BlockingPool) -> mpsc::Sender<()> {
        let (started, running) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        let mut res = Response::new();
        let reply = pool.spawn(&mut res, move || {
            let _ = started.send(());
            let _ = gate.recv();
            Response::new()
        });
        assert_eq!(reply, Reply::Later);
        running.recv_timeout(Duration::from_secs(10)).expect("the holding job runs");
        release
    }

    #[test]
    fn a_job_whose_client_left_costs_no_work() {
        let pool = BlockingPool::new(1, 4);
        let release = hold(&pool);
        let (ran, told) = mpsc::channel();
        let mut res = Response::new();
        let reply = pool.spawn(&mut res, move || {
            let _ = ran.send(());
            Response::new()
        });
        assert_eq!(reply, Reply::Later);
        // Dropped with the response no server took, its responder is closed, as one whose
        // client left is; then its turn comes.
        drop(res);
        drop(release);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.stats().skipped == 0 {
            assert!(std::time::Instant::now() < deadline, "the job was never skipped");
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(told.try_recv(), Err(mpsc::TryRecvError::Disconnected), "it ran for its gone client");
        assert_eq!(pool.stats().done, 1, "only the holding job ran");
    }

    #[test]
    fn no_thread_before_the_first_job_and_a_full_queue_refuses() {
        let pool = BlockingPool::new(1, 1);
        assert_eq!(pool.stats(), BlockingStats::default());
        let release = hold(&pool);
        assert_eq!((pool.stats().threads, pool.stats().running), (1, 1));
        // One may wait; the next is refused, on the caller's thread, without deferring.
        let mut second = Response::new();
        assert_eq!(pool.spawn(&mut second, Response::new), Reply::Later);
        let mut third = Response::new();
        assert_eq!(pool.spawn(&mut third, Response::new), Reply::Now);
        assert!(third.take_deferred().is_none());
        let mut head = Vec::new();
        third.encode(&mut head, b"Thu, 01 Jan 1970 00:00:00 GMT", false, None);
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 503 ") && head.contains("\r\nRetry-After: 1\r\n"), "{head}");
        let stats = pool.stats();
        assert_eq!((stats.queued, stats.accepted, stats.rejected), (1, 2, 1));
        drop(release);
    }

    #[test]
    fn a_burst_of_long_jobs_spreads_over_every_thread() {
        let pool = BlockingPool::new(3, 8);
        let (started, running) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        // Their responses kept, so their responders stay open.
        let mut responses: Vec<Response> = (0..4).map(|_| Response::new()).collect();
        {
            // The whole burst is queued before any thread looks: only the hand-on from thread
            // to thread can spread it.
            let shared = &pool.handle.shared;
            let mut state = lock(&shared.state);
            for res in &mut responses {
                let (started, gate) = (started.clone(), Arc::clone(&gate));
                let work = Box::new(move || {
                    let _ = started.send(());
                    let _ = lock(&gate).recv();
                    Response::new()
                });
                state.jobs.push_back(Job { responder: Some(res.defer()), work, errors: current_renderer() });
            }
            assert!(find_taker(shared, &mut state).is_empty());
        }
        // A job holding the gate's lock waits for the release; the others wait for the lock.
        for _ in 0..3 {
            running.recv_timeout(Duration::from_secs(10)).expect("three jobs side by side");
        }
        let stats = pool.stats();
        assert_eq!((stats.threads, stats.running, stats.queued), (3, 3, 1));
        drop(release);
        running.recv_timeout(Duration::from_secs(10)).expect("the fourth job");
    }

    #[test]
    fn client_gone_is_false_outside_a_job() {
        assert!(!client_gone());
    }
}
