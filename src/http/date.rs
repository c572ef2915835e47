//! The `Date` header value, rendered at most once a second.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Cached IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, always 29 bytes).
pub(crate) struct DateCache {
    second: u64,
    text: [u8; 29],
}

impl DateCache {
    /// A cache holding the current time.
    pub(crate) fn new() -> Self {
        let mut cache = DateCache { second: u64::MAX, text: [b' '; 29] };
        cache.refresh(SystemTime::now());
        cache
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
}
