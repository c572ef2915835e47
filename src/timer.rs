//! Time in the loop: [`Deadlines`], one min-heap of (instant, connection key) for every
//! connection timer, and [`after`], the one way deadlines are computed.
//!
//! Entries are invalidated lazily: the server's slot remembers which instant it has in the heap
//! (`scheduled`); a popped entry that does not match is stale and dropped. A deadline that moves
//! later keeps its earlier entry, which is re-pushed when it pops, so a keep-alive connection
//! costs no heap operation per request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Stand-in for "never" when a configured duration does not fit in an `Instant`.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `t + d`, saturating far in the future instead of panicking.
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(|| t + FAR)
}

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Scratch list for [`Deadlines::take_due`], kept between turns.
    due: Vec<(Instant, usize)>,
}

impl Deadlines {
    /// Adds a deadline for `key`.
    pub(crate) fn push(&mut self, at: Instant, key: usize) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, stale or not.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    /// Every entry due at `now`, earliest first, in a list to hand back with
    /// [`Deadlines::give_back`] (so the allocation is reused).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(Instant, usize)> {
        let mut due = std::mem::take(&mut self.due);
        while let Some(entry) = self.pop_due(now) {
            due.push(entry);
        }
        due
    }

    /// Returns the list [`Deadlines::take_due`] gave out.
    pub(crate) fn give_back(&mut self, mut due: Vec<(Instant, usize)>) {
        due.clear();
        self.due = due;
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry `live` rejects (used when stale entries pile up).
    pub(crate) fn retain(&mut self, mut live: impl FnMut(Instant, usize) -> bool) {
        self.heap.retain(|Reverse((at, key))| live(*at, *key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_only_when_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.push(t0 + Duration::from_millis(30), 3);
        d.push(t0 + Duration::from_millis(10), 1);
        d.push(t0 + Duration::from_millis(20), 2);
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(d.pop_due(t0), None);
        let now = t0 + Duration::from_millis(25);
        assert_eq!(d.pop_due(now).map(|e| e.1), Some(1));
        assert_eq!(d.pop_due(now).map(|e| e.1), Some(2));
        assert_eq!(d.pop_due(now), None);
        d.retain(|_, key| key != 3);
        assert_eq!(d.len(), 0);
    }
}
