//! A server embedded in a host program that has threads of its own and decides when the
//! server stops. The host runs the server on a thread (with `handle_signals: false`: signals
//! are the host's business), keeps a heartbeat thread of its own, reads commands on stdin, and
//! stops the server with its `ShutdownHandle`: `stop` drains (in-flight requests finish),
//! `kill` stops at once; end of input is `stop` too.
//!
//!     cargo run --example embedded [-- ADDR]         # default 127.0.0.1:8080
//!     (type: status, stop)

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use quiesce::{Handles, Reply, Request, Response, Server, ServerConfig};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config = ServerConfig {
        addr: addr.parse().expect("an address like 127.0.0.1:8080"),
        handle_signals: false,
        ..ServerConfig::default()
    };
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let server = Server::bind_with(config, move |handles: &Handles| {
        let drain = handles.drain.clone();
        move |req: &Request<'_>, res: &mut Response| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            let note = if drain.is_draining() { " (the host is stopping)" } else { "" };
            res.set_body(format!("request {n}: {}{note}\n", req.path()));
            Reply::Now
        }
    })
    .expect("bind");
    let handle = server.shutdown_handle();
    eprintln!("listening on http://{}", server.local_addr());
    let serving = thread::spawn(move || server.run());

    // The host's own work, beside the server.
    let stopping = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (stopping, served) = (Arc::clone(&stopping), Arc::clone(&served));
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
            }
            eprintln!("heartbeat: done after {} requests", served.load(Ordering::Relaxed));
        })
    };

    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("status") => println!("serving, {} requests so far", served.load(Ordering::Relaxed)),
            Ok("kill") => {
                handle.immediate();
                break;
            }
            Ok("stop") | Err(_) => break,
            Ok(other) => println!("unknown command {other:?}: status, stop or kill"),
        }
    }
    // End of input, or stop: drain.
    handle.graceful();
    let outcome = serving.join().expect("server thread").expect("event loop");
    stopping.store(true, Ordering::Relaxed);
    heartbeat.join().expect("heartbeat thread");
    println!("stopped: {outcome:?}; {} requests served", served.load(Ordering::Relaxed));
}
