//! The advanced way: a worker pool of your own. For most services `res.blocking(req, |req| ...)`
//! does all of this in one line on the library's pool (see the `blocking` example); write your
//! own when you need what it does not do: threads that keep state (a database connection
//! each), priorities, batching, a stream answered piece by piece from the pool.
//!
//! The handler copies the request out (`Request::owned`), defers the answer
//! (`Response::defer`) and hands both to a pool of threads; a thread does the blocking part
//! (here a sleep standing in for a database or a file) and answers through the `Responder`.
//! The loop never waits, and a drain (Ctrl+C) waits for the work in flight. The queue is
//! bounded: when it is full, the request is answered 503 at once rather than queued without
//! limit.
//!
//!     cargo run --example worker_pool [-- ADDR]      # default 127.0.0.1:8080
//!     curl 'http://127.0.0.1:8080/report?ms=500'

use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use quiesce::{OwnedRequest, Reply, Request, Responder, Response, Server, ServerConfig};

const THREADS: usize = 4;
/// Jobs waiting for a thread, at most.
const QUEUE: usize = 256;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config =
        ServerConfig { addr: addr.parse().expect("an address like 127.0.0.1:8080"), ..ServerConfig::default() };

    // The pool: threads taking (request, responder) pairs from one queue.
    let (jobs, queue) = mpsc::sync_channel::<(OwnedRequest, Responder)>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..THREADS {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            loop {
                let next = queue.lock().unwrap().recv();
                let Ok((request, responder)) = next else { return };
                // Its client left while it waited: no work for nobody.
                if responder.is_closed() {
                    continue;
                }
                let answer = blocking_work(&request, &responder);
                // Err means the client left meanwhile; nobody to tell.
                let _ = responder.send(answer);
            }
        });
    }

    let handler = move |req: &Request<'_>, res: &mut Response| {
        let responder = res.defer();
        // A dropped responder answers 500, so a lost job never hangs its client or the drain.
        if let Err(TrySendError::Full((_, responder)) | TrySendError::Disconnected((_, responder))) =
            jobs.try_send((req.owned(), responder))
        {
            let mut busy = Response::new();
            busy.set_status(503).set_body("busy, try again\n");
            let _ = responder.send(busy);
        }
        Reply::Later
    };
    let server = Server::bind(config, handler).expect("bind");
    eprintln!("listening on http://{}", server.local_addr());
    let outcome = server.run().expect("event loop");
    eprintln!("stopped: {outcome:?}");
    std::process::exit(outcome.exit_code());
}

/// The slow part: it may block, it runs on a pool thread.
fn blocking_work(request: &OwnedRequest, responder: &Responder) -> Response {
    let ms: u64 = request.query_param("ms").and_then(|ms| ms.parse().ok()).unwrap_or(100).min(10_000);
    // Long work checks now and then whether anyone still waits for it.
    for _ in 0..ms / 10 {
        if responder.is_closed() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let mut response = Response::new();
    response.set_body(format!(
        "{} {} took {ms} ms for {} (connection {})\n",
        request.method(),
        request.path(),
        request.peer_addr(),
        request.connection_id()
    ));
    response
}
