//! What a handler that holds the event loop costs, and what quiesce does about it. `GET
//! /spin?ms=N` spins on the loop's own thread for N ms (the mistake: blocking work belongs on
//! a pool, see the `worker_pool` example), and every other client of the loop waits meanwhile.
//!
//! - A turn longer than `ServerConfig::slow_turn` (100 ms) is logged at WARN once it ends,
//!   naming the request whose handler held it, and counted in `/metrics` as
//!   `quiesce_slow_turns_total`.
//! - Ctrl+C twice (or two SIGTERMs) during a spin: the loop cannot read its signals until the
//!   handler returns, so the second signal ends the process at once (exit 130, or 143), from
//!   the signal handler, instead of after the spin.
//!
//! Try it:
//!
//! ```text
//! cargo run --example stuck [-- ADDR]            # default 127.0.0.1:8080
//! curl 'http://127.0.0.1:8080/spin?ms=2000'      # then look at the server's log
//! curl 'http://127.0.0.1:8080/metrics'
//! ```

use std::io::Write as _;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use quiesce::process::{self, Options, Worker};
use quiesce::{Reply, Request, Response, ServerConfig};

fn main() {
    log::set_logger(&StderrLogger).expect("the only logger");
    log::set_max_level(LevelFilter::Info);
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config =
        ServerConfig { addr: addr.parse().expect("an address like 127.0.0.1:8080"), ..ServerConfig::default() };
    let make_handler = |worker: &Worker| {
        let registry = worker.registry.clone();
        move |req: &Request<'_>, res: &mut Response| {
            match req.path() {
                "/spin" => {
                    let ms = req.query_param("ms").and_then(|ms| ms.parse().ok()).unwrap_or(1000u64);
                    log::info!("spinning for {ms} ms on the loop's thread");
                    let until = Instant::now() + Duration::from_millis(ms);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    res.set_body(format!("spun {ms} ms\n"));
                }
                "/metrics" => {
                    let mut text = String::new();
                    registry.render(&mut text);
                    res.set_body(text);
                }
                _ => {
                    res.set_body("try GET /spin?ms=2000\n");
                }
            }
            Reply::Now
        }
    };
    let summary = process::run(config, Options::default(), make_handler, |started| {
        log::info!("listening on http://{}", started.addr);
    })
    .expect("serve");
    log::info!("stopped: {:?}", summary.outcome);
    std::process::exit(summary.exit_code());
}

/// The smallest logger: `LEVEL: message` on stderr.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // Never a panic, whatever stderr is.
            let _ = writeln!(std::io::stderr(), "{}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}
