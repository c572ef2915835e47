//! The `Date` header value, rendered at most once a second, and the wall clock read only then.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::timer::Tick;

/// Cached IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, always 29 bytes).
pub(crate) struct DateCache {
    second: u64,
    text: [u8; 29],
    /// When (on the loop's clock) the second shown ends: the wall clock is read again then.
    due: Tick,
}

impl DateCache {
    /// A cache holding the current time.
    pub(crate) fn new() -> Self {
        DateCache::starting(Tick::now())
    }

    /// A cache holding the current time, its second due to end after `now`.
    fn starting(now: Tick) -> Self {
        let mut cache = DateCache { second: u64::MAX, text: [b' '; 29], due: now };
        cache.tick(now);
        cache
    }

    /// The loop's turn starts at `now`: once the second shown is over, reads the wall clock and
    /// renders the new date. A turn within the same second costs one comparison, not a clock
    /// read (a change of the wall clock shows at the end of the second).
    pub(crate) fn tick(&mut self, now: Tick) {
        if now < self.due {
            return;
        }
        let wall = SystemTime::now();
        self.refresh(wall);
        let into = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        self.due = now.after(Duration::from_nanos(u64::from(1_000_000_000 - into.min(999_999_999))));
    }

    /// Re-renders the date if `now` is in a different second than the cached one.
    pub(crate) fn refresh(&mut self, now: SystemTime) {
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second == self.second {
            return;
        }
        // Rendered straight into the array (a full slice refuses more): no allocation, even
        // once a second.
        let mut text = [b' '; 29];
        let mut rest = &mut text[..];
        if write!(rest, "{}", httpdate::HttpDate::from(now)).is_ok() && rest.is_empty() {
            self.text = text;
            self.second = second;
        }
    }

    /// The header value.
    pub(crate) fn get(&self) -> &[u8; 29] {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_imf_fixdate_and_refreshes_once_a_second() {
        let mut cache = DateCache::new();
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        cache.refresh(t);
        assert_eq!(cache.get(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        cache.refresh(t + Duration::from_millis(999));
        assert_eq!(cache.get(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        cache.refresh(t + Duration::from_secs(1));
        assert_eq!(cache.get(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }

    #[test]
    fn reads_the_wall_clock_again_only_once_its_second_is_over() {
        let t0 = Tick::now();
        let mut cache = DateCache::starting(t0);
        let due = cache.due;
        assert!(t0 < due && t0.until(due) <= Duration::from_secs(1), "due within the second");
        // A date made stale by hand: a turn before the second is over does not read the clock.
        cache.second = 0;
        cache.text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        cache.tick(t0);
        assert_eq!(cache.get(), b"Thu, 01 Jan 1970 00:00:00 GMT");
        // Once due, it does: the date is today's again, and the next second is due later.
        cache.tick(due);
        assert_ne!(cache.get(), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert!(cache.due > due);
    }
}
