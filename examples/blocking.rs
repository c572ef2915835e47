//! Blocking work in one line: the handler hands a closure to the server's pool with
//! `res.blocking(req, |req| ...)`; a pool thread runs it with a copy of the request (here a
//! sleep standing in for a database or a file) and its `Response` is the answer. The loop
//! never waits. The pool is bounded: 4 threads, 64 jobs waiting, and one more is answered 503
//! with `Retry-After` at once. A drain (Ctrl+C) waits for the work running and queued.
//!
//!     cargo run --example blocking [-- ADDR]      # default 127.0.0.1:8080
//!     curl 'http://127.0.0.1:8080/report?ms=500'
//!
//! For a pool of your own (threads with state, priorities, batching), see `worker_pool`.

use std::time::Duration;

use quiesce::{Request, Response, Server, ServerConfig};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config = ServerConfig {
        addr: addr.parse().expect("an address like 127.0.0.1:8080"),
        blocking_threads: 4,
        blocking_queue: 64,
        ..ServerConfig::default()
    };
    let handler = |req: &Request<'_>, res: &mut Response| {
        res.blocking(req, |req| {
            let ms: u64 = req.query_param("ms").and_then(|ms| ms.parse().ok()).unwrap_or(100).min(10_000);
            std::thread::sleep(Duration::from_millis(ms));
            let mut answer = Response::new();
            answer.set_body(format!("{} {} took {ms} ms\n", req.method(), req.path()));
            answer
        })
    };
    let server = Server::bind(config, handler).expect("bind");
    eprintln!("listening on http://{}", server.local_addr());
    let outcome = server.run().expect("event loop");
    eprintln!("stopped: {outcome:?}");
    std::process::exit(outcome.exit_code());
}
