//! `GET /work?ms=N`: blocking work off the loop, on the library's [`BlockingPool`]: the handler
//! hands [`run`] to the pool, which sleeps (or, with `&spin=1`, burns CPU) for the time asked
//! and answers `worked N ms`. The pool's queue is bounded: when it is full the request gets 503
//! with `Retry-After` at once instead of waiting behind everyone else.
//!
//! [`BlockingPool`]: crate::BlockingPool

use std::thread;
use std::time::{Duration, Instant};

use crate::Response;
use crate::blocking::client_gone;

/// Jobs waiting for a thread, per thread, at most, before new ones are refused: the binary's
/// `--blocking-threads N` makes a queue of `N *` this.
pub const QUEUE_PER_THREAD: usize = 128;

/// One request's work, on a pool thread: `duration` of sleep, or of CPU when `spin`. The sleep
/// stands for a blocking call, which cannot be stopped half-way; the spin stops once its client
/// left (a job whose client left before its turn is not run at all).
pub fn run(duration: Duration, spin: bool) -> Response {
    if spin {
        let until = Instant::now() + duration;
        while Instant::now() < until && !client_gone() {
            std::hint::spin_loop();
        }
    } else {
        thread::sleep(duration);
    }
    let mut response = Response::new();
    response.set_body(format!("worked {} ms\n", duration.as_millis()));
    response
}
