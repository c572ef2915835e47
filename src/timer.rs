//! Time in the loop: [`Tick`], the loop's one kind of moment (connections, deadlines, the
//! drain, accept backoff), with [`Tick::after`] the one way deadlines are computed; and
//! [`Deadlines`], one min-heap of (tick, connection key) for every connection timer.
//!
//! Entries are invalidated lazily: the server's slot remembers which tick it has in the heap
//! (`scheduled`); a popped entry that does not match is stale and dropped. A deadline that moves
//! later keeps its earlier entry, which is re-pushed when it pops, so a keep-alive connection
//! costs no heap operation per request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::Duration;

/// A moment as the loop keeps it: nanoseconds of the monotonic clock since the process first
/// read it, plus one. Half the size of an `Instant`, and `Option<Tick>` is no bigger (never
/// zero): an idle connection holds three of them. Compared and added as one integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Tick(NonZeroU64);

/// What ticks count from: the monotonic clock's first reading.
static BASE: OnceLock<u64> = OnceLock::new();

/// The monotonic clock (`CLOCK_MONOTONIC`, which never jumps), in nanoseconds: the one reading
/// of it in the crate (systemd's `MONOTONIC_USEC=` refers to the same clock). Read directly
/// rather than through `Instant::now` and `duration_since`, which cost more (their checks and
/// conversions), once a turn.
pub(crate) fn monotonic_nanos() -> io::Result<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// A duration in nanoseconds, saturating (584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Tick {
    /// Now.
    pub(crate) fn now() -> Tick {
        // CLOCK_MONOTONIC exists on every target: the call cannot fail with these arguments
        // (if it did, the time would read as the base).
        let now = monotonic_nanos().unwrap_or(0);
        let base = *BASE.get_or_init(|| now);
        Tick::from_nanos(now.saturating_sub(base))
    }

    /// Now, if the clock was read before (its base is set): a load and a clock read, nothing
    /// that allocates, locks or initialises, so a signal handler may call it.
    pub(crate) fn now_if_started() -> Option<Tick> {
        let base = *BASE.get()?;
        Some(Tick::from_nanos(monotonic_nanos().ok()?.saturating_sub(base)))
    }

    /// As one integer, never 0 (for an atomic, where 0 says "none").
    pub(crate) fn raw(self) -> u64 {
        self.0.get()
    }

    fn from_nanos(n: u64) -> Tick {
        Tick(NonZeroU64::new(n.saturating_add(1)).unwrap_or(NonZeroU64::MAX))
    }

    /// `self + d`, saturating far in the future instead of overflowing.
    pub(crate) fn after(self, d: Duration) -> Tick {
        Tick(self.0.saturating_add(nanos(d)))
    }

    /// `self - d`, or the first tick when `d` reaches further back.
    pub(crate) fn before(self, d: Duration) -> Tick {
        Tick::from_nanos(self.0.get().saturating_sub(1).saturating_sub(nanos(d)))
    }

    /// How long from `self` to `later` (zero when `later` is not later).
    pub(crate) fn until(self, later: Tick) -> Duration {
        Duration::from_nanos(later.0.get().saturating_sub(self.0.get()))
    }
}

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Tick, usize)>>,
    /// Deadlines already due when they were set (a drain's "answer, then close" for the idle
    /// connections whose input its look at the poll found): a list, not the heap, since all of
    /// them go in the next turn.
    /// 10,000 idle connections drained cost 10,000 pushes and pops of a list instead of a heap
    /// twice that size.
    already_due: Vec<(Tick, usize)>,
    /// Scratch list for [`Deadlines::take_due`], kept between turns.
    due: Vec<(Tick, usize)>,
}

impl Deadlines {
    /// Adds a deadline `at` for `key`, the loop's clock being at `now`.
    pub(crate) fn push(&mut self, at: Tick, key: usize, now: Tick) {
        if at <= now {
            self.already_due.push((at, key));
        } else {
            self.heap.push(Reverse((at, key)));
        }
    }

    /// The earliest deadline, stale or not (one already due, if any is).
    pub(crate) fn next(&self) -> Option<Tick> {
        match self.already_due.first() {
            Some((at, _)) => Some(*at),
            None => self.heap.peek().map(|Reverse((at, _))| *at),
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Tick) -> Option<(Tick, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    /// Every entry due at `now` (those that were due when set, then the heap's, earliest
    /// first), in a list to hand back with [`Deadlines::give_back`] (so the allocation is
    /// reused).
    pub(crate) fn take_due(&mut self, now: Tick) -> Vec<(Tick, usize)> {
        let mut due = std::mem::take(&mut self.due);
        if !self.already_due.is_empty() {
            due.append(&mut self.already_due);
        }
        while let Some(entry) = self.pop_due(now) {
            due.push(entry);
        }
        due
    }

    /// Returns the list [`Deadlines::take_due`] gave out.
    pub(crate) fn give_back(&mut self, mut due: Vec<(Tick, usize)>) {
        due.clear();
        self.due = due;
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len() + self.already_due.len()
    }

    /// Drops every entry `live` rejects (used when stale entries pile up).
    pub(crate) fn retain(&mut self, mut live: impl FnMut(Tick, usize) -> bool) {
        self.heap.retain(|Reverse((at, key))| live(*at, *key));
        self.already_due.retain(|(at, key)| live(*at, *key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_only_when_due() {
        let t0 = Tick::now();
        let mut d = Deadlines::default();
        d.push(t0.after(Duration::from_millis(30)), 3, t0);
        d.push(t0.after(Duration::from_millis(10)), 1, t0);
        d.push(t0.after(Duration::from_millis(20)), 2, t0);
        assert_eq!(d.next(), Some(t0.after(Duration::from_millis(10))));
        assert_eq!(d.pop_due(t0), None);
        let now = t0.after(Duration::from_millis(25));
        assert_eq!(d.pop_due(now).map(|e| e.1), Some(1));
        assert_eq!(d.pop_due(now).map(|e| e.1), Some(2));
        assert_eq!(d.pop_due(now), None);
        d.retain(|_, key| key != 3);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_deadline_due_when_set_is_taken_first_in_the_next_turn() {
        let t0 = Tick::now();
        let later = t0.after(Duration::from_millis(10));
        let mut d = Deadlines::default();
        d.push(later, 1, t0);
        d.push(t0, 2, t0);
        d.push(t0, 3, t0);
        assert_eq!(d.len(), 3);
        assert_eq!(d.next(), Some(t0), "the next poll does not wait");
        let due = d.take_due(t0);
        assert_eq!(due.iter().map(|e| e.1).collect::<Vec<_>>(), [2, 3]);
        d.give_back(due);
        assert_eq!(d.next(), Some(later));
        let due = d.take_due(later);
        assert_eq!(due.iter().map(|e| e.1).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn ticks_follow_the_clock_and_add_up() {
        use std::time::Instant;
        let (t0, i0) = (Tick::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        let (i1, t1) = (Instant::now(), Tick::now());
        // The same clock as Instant: at least the time that passed between the two readings.
        assert!(t0 < t1 && t0.until(t1) >= i1 - i0);
        let t2 = t0.after(Duration::from_millis(1500));
        assert_eq!(t0.until(t2), Duration::from_millis(1500));
        assert_eq!(t2.until(t0), Duration::ZERO);
        // Saturating, never panicking.
        assert!(t0.after(Duration::MAX) > t2);
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
    }
}
