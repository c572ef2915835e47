//! Benchmark peer: may_minihttp with ONE may worker thread (plus may's timer thread, which only
//! fires timeouts), `GET /plaintext` -> `Hello, World!`, `GET /json` -> a JSON object, keep-alive. may_minihttp ignores
//! `Connection: close` and has no graceful shutdown: SIGINT kills it (default disposition).
//!
//! Usage: peer-may [--addr 127.0.0.1:PORT]

use std::io;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Plaintext;

impl HttpService for Plaintext {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if req.path() == "/plaintext" {
            rsp.header("Content-Type: text/plain");
            rsp.body("Hello, World!");
        } else if req.path() == "/json" {
            rsp.header("Content-Type: application/json");
            rsp.body(r#"{"message":"Hello, World!"}"#);
        } else {
            rsp.status_code(404, "Not Found");
            rsp.header("Content-Type: text/plain");
            rsp.body("not found\n");
        }
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = String::from("127.0.0.1:8082");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().expect("--addr needs a value"),
            other => panic!("unknown argument {other:?} (usage: peer-may [--addr HOST:PORT])"),
        }
    }
    // One scheduler worker: every coroutine (the accept loop and each connection) and the
    // epoll loop run on that single thread. Pinning is left to `taskset` by the caller.
    may::config().set_workers(1).set_pool_capacity(1000).set_stack_size(0x1000);
    may::config().set_worker_pin(false);
    let server = HttpServer(Plaintext).start(addr.as_str()).expect("bind");
    eprintln!("peer-may listening on http://{addr}");
    server.join().expect("server coroutine panicked");
}
