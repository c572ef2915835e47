//! `GET /events?every=1s&n=N`: Server-Sent Events that resume. Every open stream is served by
//! one [`Ticker`] thread, whatever their number: it keeps each stream's next tick in a heap,
//! sleeps until the earliest, and writes `id: K` / `data: tick K` events with
//! [`Stream::try_send`], so a slow client never holds the others up (it misses the ticks its
//! buffer has no room for; a missed tick is not counted, so ids stay consecutive). After `n`
//! events a stream finishes.
//!
//! A stream resumes: a client that reconnects with `Last-Event-ID: K` (a number) gets tick
//! K + 1 next, with id K + 1, and `n` counts the events still to send from there. Any other id
//! starts from 1. The stream's head carries a `retry:` ([`EventsConfig::retry`]). When the
//! drain begins, every stream gets one last event: a `retry:` drawn at random from
//! [`EventsConfig::drain_retry_min`]..=[`EventsConfig::drain_retry_max`] for each stream (a
//! [`RetrySpread`]), `id:` the last tick sent, `event: shutdown`, then a clean end; so clients
//! come back to the next process spread over that window, and each continues where it left
//! off.
//!
//! A stream opened once the drain began came on a connection made before it (a browser's
//! preconnected socket, a proxy's pooled connection; the listener is closed): its client has
//! usually just waited out its spread retry. It gets the same last event at once, with the
//! window's shortest retry rather than a second draw, so the clients keep the spread their
//! first retry gave them instead of waiting twice; when the drain is a restart's handover
//! ([`Ticker::hand_over`]: a proxy's pooled connection the old process kept), with `retry: 0`,
//! since the client then reaches the new process at once.
//!
//! The thread starts with the first stream (see `work.rs` on why a server should have no
//! thread it does not use).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::sse::{Event, RetrySpread};
use crate::sync::lock;
use crate::{Stream, TrySendError};

/// Settings of the `/events` streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// The `retry:` each stream starts with: how long a client waits before reconnecting when
    /// the stream breaks. Default 3 s (what browsers wait when told nothing).
    pub retry: Duration,
    /// The shortest `retry:` of the drain's last event. Default 500 ms.
    pub drain_retry_min: Duration,
    /// The longest `retry:` of the drain's last event. Default 3 s.
    pub drain_retry_max: Duration,
}

impl EventsConfig {
    /// The defaults, as a constant.
    pub const DEFAULT: EventsConfig = EventsConfig {
        retry: Duration::from_secs(3),
        drain_retry_min: Duration::from_millis(500),
        drain_retry_max: Duration::from_secs(3),
    };
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig::DEFAULT
    }
}

/// One stream and its schedule.
#[derive(Debug)]
struct Ticking {
    stream: Stream,
    every: Duration,
    /// Events still to send (`None`: until the drain or the client leaves).
    left: Option<u64>,
    /// The id (and number) of the last tick sent, or the one the client resumed from; 0 for
    /// none.
    last: u64,
    /// Added once the drain had begun: its last event goes out at once, with the late retry.
    late: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Streams added since the ticker last looked.
    added: Vec<Ticking>,
    draining: bool,
    /// The drain began because a successor serves (see [`Ticker::hand_over`]).
    successor: bool,
    /// Every handle is gone: the thread ends once its streams are done.
    stopped: bool,
}

#[derive(Debug, Default)]
struct Shared {
    config: EventsConfig,
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
    /// A ticker with the default settings; its thread starts with the first stream.
    pub fn new() -> Ticker {
        Ticker::with_config(EventsConfig::DEFAULT)
    }

    /// A ticker with these settings; its thread starts with the first stream.
    pub fn with_config(config: EventsConfig) -> Ticker {
        let shared = Arc::new(Shared { config, ..Shared::default() });
        Ticker { _owner: Arc::new(Owner(Arc::clone(&shared))), shared, started: Arc::default() }
    }

    /// Its settings.
    pub fn config(&self) -> &EventsConfig {
        &self.shared.config
    }

    /// Sends `stream` an event every `every`, `n` times (or until the drain), the first with
    /// id `after + 1` (`after`: the client's `Last-Event-ID`, 0 for a new client).
    pub fn add(&self, stream: Stream, every: Duration, n: Option<u64>, after: u64) {
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
            let ticking = Ticking { stream, every, left: None, last: after, late: false };
            return end(ticking, b"event: error\ndata: unavailable\n\n");
        }
        let mut state = lock(&self.shared.state);
        // Whether the drain began is decided here, not when the thread next looks: a stream
        // added just after the drain began (or the thread's very first) is still a late one.
        let late = state.draining;
        let ticking = Ticking { stream, every: every.max(Duration::from_millis(1)), left: n, last: after, late };
        state.added.push(ticking);
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The drain began: every stream gets its last event and ends. Quick: it only wakes the
    /// thread (it runs on the server's thread, from a [`DrainNotice`](crate::DrainNotice)
    /// callback).
    pub fn drain(&self) {
        self.begin_drain(false);
    }

    /// The drain began because a successor serves (a restart,
    /// [`DrainNotice::successor_serving`](crate::DrainNotice::successor_serving)): as
    /// [`Ticker::drain`], and a stream opened from now on is told to reconnect at once, since
    /// its client reaches the successor.
    pub fn hand_over(&self) {
        self.begin_drain(true);
    }

    fn begin_drain(&self, successor: bool) {
        let mut state = lock(&self.shared.state);
        state.successor |= successor;
        state.draining = true;
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// The ticker thread.
fn run(shared: &Shared) {
    let mut streams: Vec<Option<Ticking>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    // One event's bytes and text, reused: a tick allocates nothing.
    let (mut out, mut text) = (Vec::with_capacity(64), String::with_capacity(32));
    let mut spread = RetrySpread::new(shared.config.drain_retry_min, shared.config.drain_retry_max);
    // The drain was seen and every stream then open ended: from now on only new streams (ended
    // at once) or the stop wake the thread, which must not spin while the drain lasts.
    let mut drained = false;
    loop {
        let (added, draining, successor, stopped) = {
            let mut state = lock(&shared.state);
            if state.added.is_empty() && (drained || !state.draining) && !state.stopped {
                let wait = due.peek().map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
                state = match wait {
                    Some(wait) => shared.changed.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0,
                    None => shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                };
            }
            (std::mem::take(&mut state.added), state.draining, state.successor, state.stopped)
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
            // too, with the shortest retry, or none when a successor serves); the thread stays
            // for those yet to come, until it is stopped.
            let late = if successor { Duration::ZERO } else { shared.config.drain_retry_min };
            for ticking in streams.iter_mut().filter_map(Option::take) {
                let retry = if ticking.late { late } else { spread.draw() };
                out.clear();
                shutdown_event(&mut out, ticking.last, retry);
                end(ticking, &out);
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
            match tick(ticking, &mut out, &mut text) {
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

/// The drain's last event for a stream whose last tick was `last`: the client reconnects after
/// `retry` and resumes after `last`.
pub fn shutdown_event(out: &mut Vec<u8>, last: u64, retry: Duration) {
    crate::sse::write_shutdown(out, retry, last);
}

/// Sends one event, using `out` and `text` as scratch (a slow reader whose buffer is full
/// misses it).
fn tick(ticking: &mut Ticking, out: &mut Vec<u8>, text: &mut String) -> Next {
    if ticking.stream.is_closed() {
        return Next::Gone;
    }
    let id = ticking.last.saturating_add(1);
    text.clear();
    let _ = write!(text, "tick {id}");
    out.clear();
    let _ = Event::new().id_number(id).data(text).write_to(out);
    match ticking.stream.try_send(out) {
        Ok(()) => ticking.last = id,
        // Missed, and not counted: the client still gets its `n` events.
        Err(TrySendError::Full) => return Next::At(ticking.every),
        // (`TooLong` only comes from a stream that declared a length, which these do not.)
        Err(TrySendError::Gone | TrySendError::TooLong { .. }) => return Next::Gone,
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
        let (responder, exchange) = Responder::new(false);
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

    /// A ticker whose drain retries are drawn from `min_ms..=max_ms`.
    fn retry_between(min_ms: u64, max_ms: u64) -> Ticker {
        let (drain_retry_min, drain_retry_max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
        Ticker::with_config(EventsConfig { drain_retry_min, drain_retry_max, ..EventsConfig::DEFAULT })
    }

    /// A ticker whose drain retry is always `retry_ms`.
    fn fixed_retry(retry_ms: u64) -> Ticker {
        retry_between(retry_ms, retry_ms)
    }

    #[test]
    fn the_drain_ends_every_stream_then_the_thread_sleeps() {
        let ticker = fixed_retry(700);
        let (first, first_exchange) = stream();
        ticker.add(first, Duration::from_secs(3600), None, 0);
        ticker.drain();
        assert_eq!(until_finished(&first_exchange), b"retry: 700\nid: 0\nevent: shutdown\ndata: draining\n\n");

        // Nothing to do for the rest of the drain: the thread waits instead of spinning.
        let turns = ticker.shared.turns.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(200));
        let more = ticker.shared.turns.load(Ordering::Relaxed) - turns;
        assert!(more <= 1, "the ticker thread woke {more} times with nothing to do");

        // A stream opened during the drain ends at once, with the id it resumed from.
        let (late, late_exchange) = stream();
        ticker.add(late, Duration::from_secs(3600), None, 41);
        assert_eq!(until_finished(&late_exchange), b"retry: 700\nid: 41\nevent: shutdown\ndata: draining\n\n");
    }

    #[test]
    fn a_stream_opened_during_the_drain_gets_the_shortest_retry_not_a_second_draw() {
        let ticker = retry_between(500, 3000);
        let (open, open_exchange) = stream();
        ticker.add(open, Duration::from_secs(3600), None, 0);
        ticker.drain();
        let _ = until_finished(&open_exchange);
        for id in [3, 4, 5] {
            let (late, late_exchange) = stream();
            ticker.add(late, Duration::from_secs(3600), None, id);
            let expected = format!("retry: 500\nid: {id}\nevent: shutdown\ndata: draining\n\n");
            assert_eq!(String::from_utf8(until_finished(&late_exchange)).unwrap(), expected);
        }
    }

    #[test]
    fn a_first_stream_added_after_the_drain_began_is_a_late_one() {
        // The thread starts with this stream and sees the drain with it: the stream is still
        // one opened during the drain, not one the drain found open.
        for handover in [false, true] {
            let ticker = retry_between(500, 3000);
            if handover {
                ticker.hand_over()
            } else {
                ticker.drain()
            }
            let (late, late_exchange) = stream();
            ticker.add(late, Duration::from_secs(3600), None, 4);
            let retry = if handover { 0 } else { 500 };
            let expected = format!("retry: {retry}\nid: 4\nevent: shutdown\ndata: draining\n\n");
            assert_eq!(String::from_utf8(until_finished(&late_exchange)).unwrap(), expected);
        }
    }

    #[test]
    fn after_a_handover_a_stream_opened_during_the_drain_reconnects_at_once() {
        let ticker = fixed_retry(700);
        let (open, open_exchange) = stream();
        ticker.add(open, Duration::from_secs(3600), None, 0);
        ticker.hand_over();
        // A stream open at the handover: the drain's spread, as with any drain.
        assert_eq!(until_finished(&open_exchange), b"retry: 700\nid: 0\nevent: shutdown\ndata: draining\n\n");
        let (late, late_exchange) = stream();
        ticker.add(late, Duration::from_secs(3600), None, 9);
        assert_eq!(until_finished(&late_exchange), b"retry: 0\nid: 9\nevent: shutdown\ndata: draining\n\n");
    }

    #[test]
    fn a_resumed_stream_continues_the_count_and_its_last_event_names_the_last_tick() {
        let ticker = fixed_retry(1000);
        let (finite, finite_exchange) = stream();
        ticker.add(finite, Duration::from_millis(1), Some(2), 5);
        assert_eq!(until_finished(&finite_exchange), b"id: 6\ndata: tick 6\n\nid: 7\ndata: tick 7\n\n");

        let (open, open_exchange) = stream();
        ticker.add(open, Duration::from_millis(1), None, 5);
        let mut body = Vec::new();
        while !String::from_utf8_lossy(&body).contains("data: tick 8\n\n") {
            open_exchange.take_body(&mut body, false);
            thread::sleep(Duration::from_millis(1));
        }
        ticker.drain();
        body.extend(until_finished(&open_exchange));
        let text = String::from_utf8(body).unwrap();
        let (ticks, last) = text.split_once("retry: 1000\n").expect("a last event");
        let ids: Vec<u64> =
            ticks.split("\n\n").filter_map(|e| e.strip_prefix("id: ")?.split('\n').next()?.parse().ok()).collect();
        assert_eq!(ids, (6..6 + ids.len() as u64).collect::<Vec<_>>(), "{text}");
        assert_eq!(last, format!("id: {}\nevent: shutdown\ndata: draining\n\n", ids.last().unwrap()));
    }

    #[test]
    fn the_drain_spreads_the_retry_over_its_window() {
        let config = EventsConfig {
            drain_retry_min: Duration::from_millis(500),
            drain_retry_max: Duration::from_millis(3000),
            ..EventsConfig::DEFAULT
        };
        let ticker = Ticker::with_config(config);
        let exchanges: Vec<_> = (0..50)
            .map(|_| {
                let (stream, exchange) = stream();
                ticker.add(stream, Duration::from_secs(3600), None, 0);
                exchange
            })
            .collect();
        ticker.drain();
        let retries: Vec<u64> = exchanges
            .iter()
            .map(|exchange| {
                let last = String::from_utf8(until_finished(exchange)).unwrap();
                last.strip_prefix("retry: ").and_then(|r| r.split('\n').next()?.parse().ok()).expect("a retry")
            })
            .collect();
        assert!(retries.iter().all(|r| (500..=3000).contains(r)), "{retries:?}");
        let distinct: std::collections::BTreeSet<_> = retries.iter().collect();
        assert!(distinct.len() > 25, "hardly spread: {retries:?}");
    }

    #[test]
    fn a_tick_with_no_room_is_not_counted() {
        let (mut stream, exchange) = stream();
        stream.try_send(&vec![b'x'; crate::STREAM_BUFFER_BYTES]).unwrap();
        let mut ticking = Ticking { stream, every: Duration::from_secs(1), left: Some(1), last: 0, late: false };
        let (mut out, mut text) = (Vec::new(), String::new());
        assert!(matches!(tick(&mut ticking, &mut out, &mut text), Next::At(_)), "a full buffer skips the tick");
        assert_eq!((ticking.last, ticking.left), (0, Some(1)));
        exchange.take_body(&mut Vec::new(), false);
        let next = tick(&mut ticking, &mut out, &mut text);
        assert!(matches!(next, Next::Finish), "the one event is sent once there is room");
        assert_eq!(ticking.last, 1);
        let mut body = Vec::new();
        exchange.take_body(&mut body, false);
        assert_eq!(body, b"id: 1\ndata: tick 1\n\n");
    }
}
