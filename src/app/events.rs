//! `GET /events?every=1s&n=N`: Server-Sent Events. Every open stream is served by one
//! [`Ticker`] thread, whatever their number: it keeps each stream's next tick in a heap, sleeps
//! until the earliest, and writes `data: tick K` events with [`Stream::try_send`], so a slow
//! client never holds the others up (it misses the ticks its buffer has no room for). After `n`
//! events a stream finishes. When the drain begins, every stream gets `event: shutdown` and a
//! clean end, and so does a stream opened during the drain.
//!
//! The thread starts with the first stream (see `work.rs` on why a server should have no
//! thread it does not use).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::lock;
use crate::{Stream, TrySendError};

/// The last event a stream gets when the drain begins.
pub const SHUTDOWN_EVENT: &[u8] = b"event: shutdown\ndata: draining\n\n";

/// One stream and its schedule.
#[derive(Debug)]
struct Ticking {
    stream: Stream,
    every: Duration,
    /// Events still to send (`None`: until the drain or the client leaves).
    left: Option<u64>,
    sent: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Streams added since the ticker last looked.
    added: Vec<Ticking>,
    draining: bool,
    /// Every handle is gone: the thread ends once its streams are done.
    stopped: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Times the thread woke, for the test that it sleeps when it has nothing to do.
    #[cfg(test)]
    turns: std::sync::atomic::AtomicUsize,
}

/// The one thread that writes every `/events` stream; it starts with the first. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ticker {
    shared: Arc<Shared>,
    /// Stops the thread when the last handle goes.
    _owner: Arc<Owner>,
    /// The thread started (false: it could not).
    started: Arc<OnceLock<bool>>,
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker::new()
    }
}

/// Tells the thread to stop when dropped (when the last [`Ticker`] goes).
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&self.0.state).stopped = true;
        self.0.changed.notify_all();
    }
}

impl Ticker {
    /// A ticker; its thread starts with the first stream.
    pub fn new() -> Ticker {
        let shared = Arc::new(Shared::default());
        Ticker { _owner: Arc::new(Owner(Arc::clone(&shared))), shared, started: Arc::default() }
    }

    /// Sends `stream` an event every `every`, `n` times (or until the drain).
    pub fn add(&self, stream: Stream, every: Duration, n: Option<u64>) {
        let started = *self.started.get_or_init(|| {
            let shared = Arc::clone(&self.shared);
            match thread::Builder::new().name("quiesce-events".into()).spawn(move || run(&shared)) {
                Ok(_) => true,
                Err(e) => {
                    log::error!("cannot start the thread for event streams: {e}");
                    false
                }
            }
        });
        if !started {
            // Nobody would ever write it: end it now.
            return end(Ticking { stream, every, left: None, sent: 0 }, b"event: error\ndata: unavailable\n\n");
        }
        let ticking = Ticking { stream, every: every.max(Duration::from_millis(1)), left: n, sent: 0 };
        lock(&self.shared.state).added.push(ticking);
        self.shared.changed.notify_all();
    }

    /// The drain began: every stream gets its last event and ends. Quick: it only wakes the
    /// thread (it runs on the server's thread, from a [`DrainNotice`](crate::DrainNotice)
    /// callback).
    pub fn drain(&self) {
        lock(&self.shared.state).draining = true;
        self.shared.changed.notify_all();
    }
}

/// The ticker thread.
fn run(shared: &Shared) {
    let mut streams: Vec<Option<Ticking>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    // The drain was seen and every stream then open ended: from now on only new streams (ended
    // at once) or the stop wake the thread, which must not spin while the drain lasts.
    let mut drained = false;
    loop {
        let (added, draining, stopped) = {
            let mut state = lock(&shared.state);
            if state.added.is_empty() && (drained || !state.draining) && !state.stopped {
                let wait = due.peek().map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
                state = match wait {
                    Some(wait) => shared.changed.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0,
                    None => shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                };
            }
            (std::mem::take(&mut state.added), state.draining, state.stopped)
        };
        #[cfg(test)]
        shared.turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        for ticking in added {
            let index = free.pop().unwrap_or(streams.len());
            due.push(Reverse((now + ticking.every, index)));
            if index == streams.len() {
                streams.push(Some(ticking));
            } else {
                streams[index] = Some(ticking);
            }
        }
        if draining || stopped {
            // Every stream ends now, with the shutdown event (a stream opened during the drain
            // too); the thread stays for those yet to come, until it is stopped.
            for ticking in streams.iter_mut().filter_map(Option::take) {
                end(ticking, SHUTDOWN_EVENT);
            }
            due.clear();
            free.clear();
            streams.clear();
            drained = draining;
            if stopped {
                return;
            }
            continue;
        }
        while let Some(&Reverse((at, index))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            let Some(ticking) = streams[index].as_mut() else { continue };
            match tick(ticking) {
                Next::At(next) => {
                    // Ticks missed (a slow ticker) are skipped, not sent in a burst.
                    let next = if at + next > now { at + next } else { now + next };
                    due.push(Reverse((next, index)));
                }
                Next::Finish => {
                    if let Some(ticking) = streams[index].take() {
                        let _ = ticking.stream.finish();
                    }
                    free.push(index);
                }
                Next::Gone => {
                    streams[index] = None;
                    free.push(index);
                }
            }
        }
    }
}

/// What comes after a tick.
enum Next {
    /// The next tick, this long after this one.
    At(Duration),
    /// The stream sent its `n` events: finish it.
    Finish,
    /// The client left.
    Gone,
}

/// Sends one event (a slow reader whose buffer is full misses it).
fn tick(ticking: &mut Ticking) -> Next {
    if ticking.stream.is_closed() {
        return Next::Gone;
    }
    let event = format!("data: tick {}\n\n", ticking.sent + 1);
    match ticking.stream.try_send(event.as_bytes()) {
        Ok(()) => ticking.sent += 1,
        // Missed, and not counted: the client still gets its `n` events.
        Err(TrySendError::Full) => return Next::At(ticking.every),
        Err(TrySendError::Gone) => return Next::Gone,
    }
    if let Some(left) = &mut ticking.left {
        *left = left.saturating_sub(1);
        if *left == 0 {
            return Next::Finish;
        }
    }
    Next::At(ticking.every)
}

/// Sends `last` and finishes. Never waits: a client that reads nothing must not hold up the
/// others' shutdown events (it misses its own, and still gets the end of the stream).
fn end(mut ticking: Ticking, last: &[u8]) {
    let _ = ticking.stream.try_send(last);
    let _ = ticking.stream.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Response;
    use crate::responder::{End, Exchange, Responder};
    use std::sync::atomic::Ordering;

    /// A stream connected to no connection, and its exchange, to read what the ticker wrote.
    fn stream() -> (Stream, Arc<Exchange>) {
        let (responder, exchange) = Responder::new();
        (responder.stream(Response::new()).unwrap(), exchange)
    }

    /// Reads the stream's body until it ends (bounded: 10 s).
    fn until_finished(exchange: &Exchange) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..1000 {
            if exchange.take_body(&mut body, false).0 == End::Finished {
                return body;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the stream never finished: {:?}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn the_drain_ends_every_stream_then_the_thread_sleeps() {
        let ticker = Ticker::new();
        let (first, first_exchange) = stream();
        ticker.add(first, Duration::from_secs(3600), None);
        ticker.drain();
        assert_eq!(until_finished(&first_exchange), SHUTDOWN_EVENT);

        // Nothing to do for the rest of the drain: the thread waits instead of spinning.
        let turns = ticker.shared.turns.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(200));
        let more = ticker.shared.turns.load(Ordering::Relaxed) - turns;
        assert!(more <= 1, "the ticker thread woke {more} times with nothing to do");

        // A stream opened during the drain ends at once.
        let (late, late_exchange) = stream();
        ticker.add(late, Duration::from_secs(3600), None);
        assert_eq!(until_finished(&late_exchange), SHUTDOWN_EVENT);
    }

    #[test]
    fn a_tick_with_no_room_is_not_counted() {
        let (mut stream, exchange) = stream();
        stream.try_send(&vec![b'x'; crate::STREAM_BUFFER_BYTES]).unwrap();
        let mut ticking = Ticking { stream, every: Duration::from_secs(1), left: Some(1), sent: 0 };
        assert!(matches!(tick(&mut ticking), Next::At(_)), "a full buffer skips the tick");
        assert_eq!((ticking.sent, ticking.left), (0, Some(1)));
        exchange.take_body(&mut Vec::new(), false);
        assert!(matches!(tick(&mut ticking), Next::Finish), "the one event is sent once there is room");
        assert_eq!(ticking.sent, 1);
    }
}
