//! Blocking work as a closure (`Response::blocking`, `BlockingPool`), over real sockets: answers
//! from the pool's threads, a full queue, a client that left before its job ran, a panicking
//! closure, and the drain with work running and queued.
//!
//! The closures here report to the test through channels and wait at a gate the test opens, so
//! every assertion is about the order of events, never about how long anything took.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, connect, get};
use quiesce::blocking::client_gone;
use quiesce::{
    BlockingPool, ConnState, DrainNotice, Error, Outcome, Reply, Request, Response, Server, ServerConfig,
    ShutdownHandle,
};

/// Held closed until opened, once, for everyone.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    /// Waits until open (at most a few seconds: a test that forgets to open it fails, not hangs).
    fn wait(&self) {
        let open = self.0.0.lock().unwrap();
        let (open, _) = self.0.1.wait_timeout_while(open, Duration::from_secs(20), |open| !*open).unwrap();
        assert!(*open, "the gate was never opened");
    }
}

/// What the server and its closures tell the test.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// The handler handed `/path` to the pool and returned this.
    Submitted(String, Reply),
    /// The closure for `/path` started (on this thread).
    Started(String, String),
    /// A connection closed.
    Closed,
}

/// A server whose every request goes to the pool through `res.blocking`, with closures by path:
/// `/hold` waits at the gate; `/panic` panics; `/until-gone` waits until its client left;
/// anything else answers `<path> on <thread>` at once.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    drain: DrainNotice,
    pool: BlockingPool,
    gate: Gate,
    events: Receiver<Event>,
    thread: Option<JoinHandle<Result<Outcome, Error>>>,
}

fn start(config: ServerConfig, pool: Option<BlockingPool>) -> Running {
    let (tx, events) = mpsc::channel();
    let gate = Gate::default();
    let handler = {
        let (tx, gate) = (tx.clone(), gate.clone());
        move |req: &Request<'_>, res: &mut Response| {
            let (tx_job, gate) = (tx.clone(), gate.clone());
            let reply = res.blocking(req, move |req| {
                let path = req.path().to_owned();
                let name = thread::current().name().unwrap_or("unnamed").to_owned();
                let _ = tx_job.send(Event::Started(path.clone(), name.clone()));
                match path.as_str() {
                    "/hold" => gate.wait(),
                    "/panic" => panic!("a closure that panics"),
                    "/until-gone" => {
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while !client_gone() && Instant::now() < deadline {
                            thread::sleep(Duration::from_millis(1));
                        }
                        let _ = tx_job.send(Event::Started("gone".into(), client_gone().to_string()));
                    }
                    _ => {}
                }
                let mut answer = Response::new();
                answer.set_body(format!("{path} on {name}"));
                answer
            });
            let _ = tx.send(Event::Submitted(req.path().to_owned(), reply));
            reply
        }
    };
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..config };
    let mut server = Server::bind(config, handler).expect("bind");
    if let Some(pool) = pool {
        server.set_blocking_pool(pool);
    }
    server.on_state_change(move |change| {
        if change.to == ConnState::Closed {
            let _ = tx.send(Event::Closed);
        }
    });
    let (addr, handle, drain, pool) =
        (server.local_addr(), server.shutdown_handle(), server.drain_notice(), server.blocking_pool().clone());
    let thread = Some(thread::spawn(move || server.run()));
    Running { addr, handle, drain, pool, gate, events, thread }
}

impl Running {
    /// The next event (waiting a few seconds at most).
    fn next(&self) -> Event {
        self.events.recv_timeout(IO_TIMEOUT).expect("an event")
    }

    /// Waits for `event`, passing over others; returns those passed over.
    fn expect(&self, event: Event) -> Vec<Event> {
        let mut passed = Vec::new();
        loop {
            let next = self.next();
            if next == event {
                return passed;
            }
            passed.push(next);
        }
    }

    fn outcome(&mut self) -> Outcome {
        let thread = self.thread.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the server did not stop");
            thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("server thread").expect("run")
    }

    fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gate.open();
        self.handle.immediate();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn one_thread(queue: usize) -> ServerConfig {
    ServerConfig { blocking_threads: 1, blocking_queue: queue, ..ServerConfig::default() }
}

fn started(path: &str) -> Event {
    Event::Started(path.into(), "quiesce-blocking-0".into())
}

#[test]
fn answers_come_from_the_pool_threads() {
    let server = start(ServerConfig::default(), None);
    assert_eq!(server.pool.stats().threads, 0, "no thread before the first job");
    let mut client = connect(server.addr);
    let first = client.request(&get("/a")).expect("an answer");
    assert_eq!((first.status, first.text()), (200, "/a on quiesce-blocking-0".to_owned()));
    assert!(!first.is_close(), "{first:?}");
    // Keep-alive goes on; a HEAD gets the head of the closure's answer.
    let second = client.request(&get("/b")).expect("an answer");
    assert!(second.text().starts_with("/b on quiesce-blocking-"), "{}", second.text());
    client.send(b"HEAD /c HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let head = client.read_head_response().expect("the head");
    assert_eq!((head.status, head.content_length()), (200, Some("/c on quiesce-blocking-0".len())));
    let stats = server.pool.stats();
    assert_eq!((stats.accepted, stats.done, stats.rejected, stats.skipped), (3, 3, 0, 0));
    assert!(stats.threads >= 1, "{stats:?}");
}

#[test]
fn long_jobs_run_side_by_side_up_to_the_thread_count() {
    let server = start(ServerConfig { blocking_threads: 3, blocking_queue: 8, ..ServerConfig::default() }, None);
    let mut clients: Vec<_> = (0..4).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        client.send(&get("/hold")).unwrap();
    }
    // Three threads start, each with a job, while the gate is still shut; the fourth job waits.
    let (mut threads, mut submitted) = (Vec::new(), 0);
    while threads.len() < 3 || submitted < 4 {
        match server.next() {
            Event::Started(path, thread) if path == "/hold" => threads.push(thread),
            Event::Submitted(_, reply) => {
                assert_eq!(reply, Reply::Later);
                submitted += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    threads.sort();
    assert_eq!(threads, ["quiesce-blocking-0", "quiesce-blocking-1", "quiesce-blocking-2"]);
    let stats = server.pool.stats();
    assert_eq!((stats.threads, stats.running, stats.queued), (3, 3, 1));
    server.gate.open();
    for client in &mut clients {
        assert_eq!(client.read_response().expect("an answer").status, 200);
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after_at_once() {
    let server = start(one_thread(1), None);
    let mut held = connect(server.addr);
    held.send(&get("/hold")).unwrap();
    server.expect(started("/hold"));
    // One job may wait for the thread...
    let mut queued = connect(server.addr);
    queued.send(&get("/queued")).unwrap();
    server.expect(Event::Submitted("/queued".into(), Reply::Later));
    // ...the next is refused at once, while the thread is still held.
    let refused = connect(server.addr).request(&get("/refused")).expect("an answer");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.text(), "busy: too much blocking work queued\n");
    assert_eq!(server.pool.stats().rejected, 1);
    assert_eq!(server.pool.stats().done, 0, "the 503 came before any work finished");
    server.gate.open();
    assert_eq!(held.read_response().expect("the held job's answer").text(), "/hold on quiesce-blocking-0");
    assert_eq!(queued.read_response().expect("the queued job's answer").text(), "/queued on quiesce-blocking-0");
    let stats = server.pool.stats();
    assert_eq!((stats.accepted, stats.done, stats.rejected), (2, 2, 1));
}

#[test]
fn a_job_whose_client_left_before_its_turn_is_not_run() {
    let server = start(one_thread(4), None);
    let mut held = connect(server.addr);
    held.send(&get("/hold")).unwrap();
    server.expect(started("/hold"));
    let mut leaving = connect(server.addr);
    leaving.send(&get("/left")).unwrap();
    server.expect(Event::Submitted("/left".into(), Reply::Later));
    drop(leaving);
    // The server saw it go while its job waited.
    server.expect(Event::Closed);
    server.gate.open();
    assert_eq!(held.read_response().expect("the held job's answer").status, 200);
    // One thread, first in first out: once a later job ran, the one that was left had its turn.
    let later = connect(server.addr).request(&get("/later")).expect("an answer");
    assert_eq!(later.text(), "/later on quiesce-blocking-0");
    let mut ran = Vec::new();
    while let Ok(event) = server.events.try_recv() {
        if let Event::Started(path, _) = event {
            ran.push(path);
        }
    }
    assert_eq!(ran, ["/later"], "the job of the client that left ran");
    let stats = server.pool.stats();
    assert_eq!((stats.skipped, stats.done), (1, 2));
}

#[test]
fn long_work_hears_that_its_client_left() {
    let server = start(ServerConfig::default(), None);
    let mut client = connect(server.addr);
    client.send(&get("/until-gone")).unwrap();
    server.expect(started("/until-gone"));
    drop(client);
    let passed = server.expect(Event::Started("gone".into(), "true".into()));
    assert!(passed.iter().all(|e| !matches!(e, Event::Started(..))), "{passed:?}");
}

#[test]
fn a_panicking_closure_gets_500_and_the_pool_carries_on() {
    let server = start(one_thread(4), None);
    let mut client = connect(server.addr);
    let failed = client.request(&get("/panic")).expect("an answer");
    assert_eq!((failed.status, failed.text()), (500, "internal server error\n".to_owned()));
    assert!(failed.is_close(), "{failed:?}");
    // The same one thread serves the next job.
    let next = connect(server.addr).request(&get("/next")).expect("an answer");
    assert_eq!((next.status, next.text()), (200, "/next on quiesce-blocking-0".to_owned()));
    let stats = server.pool.stats();
    assert_eq!((stats.panicked, stats.done, stats.threads), (1, 1, 1));
}

#[test]
fn the_drain_waits_for_running_and_queued_work_and_closes_after_it() {
    // A pool of the caller's, handed to the server.
    let pool = BlockingPool::new(1, 8);
    let mut server = start(ServerConfig::default(), Some(pool.clone()));
    let mut running = connect(server.addr);
    running.send(&get("/hold")).unwrap();
    server.expect(started("/hold"));
    let mut queued = connect(server.addr);
    queued.send(&get("/queued")).unwrap();
    server.expect(Event::Submitted("/queued".into(), Reply::Later));
    assert_eq!(pool.stats().queued, 1);

    server.handle.graceful();
    assert!(server.drain.wait_timeout(IO_TIMEOUT), "the drain began");
    // The work holds the drain: the server is still there.
    assert!(server.is_running(), "the server stopped with work running and queued");
    server.gate.open();
    for (client, path) in [(&mut running, "/hold"), (&mut queued, "/queued")] {
        let answer = client.read_response().expect("the work is answered");
        assert_eq!(answer.text(), format!("{path} on quiesce-blocking-0"));
        assert!(answer.is_close(), "{answer:?}");
    }
    assert!(matches!(server.outcome(), Outcome::Drained { .. }));
    assert_eq!(pool.stats().done, 2);
}

#[test]
fn a_graceful_stop_during_a_long_job_sends_its_answer_then_exits() {
    let mut server = start(ServerConfig::default(), None);
    let mut client = connect(server.addr);
    client.send(&get("/hold")).unwrap();
    server.expect(started("/hold"));
    server.handle.graceful();
    assert!(server.drain.wait_timeout(IO_TIMEOUT), "the drain began");
    assert!(server.is_running(), "the server stopped with a job running");
    server.gate.open();
    let answer = client.read_response().expect("the job's answer");
    assert_eq!((answer.status, answer.is_close()), (200, true));
    let outcome = server.outcome();
    assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
    assert_eq!(outcome.exit_code(), 0);
}
