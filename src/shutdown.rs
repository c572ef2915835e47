//! [`ShutdownHandle`]: start a graceful or immediate stop from any thread. It sets an atomic
//! and wakes the loop through its one `mio::Waker`; the loop acts on it in its next turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use log::warn;

/// Nothing requested.
pub(crate) const NONE: u8 = 0;
/// Graceful drain requested (after the drain delay, if one is configured).
pub(crate) const GRACEFUL: u8 = 1;
/// Graceful drain requested, starting now (no drain delay).
pub(crate) const DRAIN_NOW: u8 = 2;
/// Immediate stop requested.
pub(crate) const IMMEDIATE: u8 = 3;

/// Asks a running [`Server`](crate::Server) to stop. Cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requested: AtomicU8,
    /// A restarted successor's pid once it serves (0: none).
    handover: AtomicU32,
    waker: mio::Waker,
}

impl ShutdownHandle {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        let inner = Inner { requested: AtomicU8::new(NONE), handover: AtomicU32::new(0), waker };
        ShutdownHandle { inner: Arc::new(inner) }
    }

    /// Starts a graceful shutdown, as a first SIGINT/SIGTERM does: after the configured
    /// [drain delay](crate::ServerConfig::drain_delay), stop listening, let in-flight requests
    /// finish, close the rest, return from [`Server::run`](crate::Server::run). Calling it
    /// again, or after a stronger request, changes nothing.
    pub fn graceful(&self) {
        self.request(GRACEFUL);
    }

    /// Starts the drain at once, skipping (or cutting short) the drain delay.
    pub fn drain_now(&self) {
        self.request(DRAIN_NOW);
    }

    /// Stops at once, as a second signal does: every connection is closed and
    /// [`Server::run`](crate::Server::run) returns.
    pub fn immediate(&self) {
        self.request(IMMEDIATE);
    }

    /// A restarted copy of the server, process `pid`, serves on the listening sockets now: drain
    /// at once, as after a signal but without telling systemd that the service stops. A signal
    /// during that drain counts as the first one, not the second.
    pub(crate) fn hand_over(&self, pid: u32) {
        self.inner.handover.store(pid, Ordering::SeqCst);
        self.wake();
    }

    /// The successor that took over, once (see [`ShutdownHandle::hand_over`]).
    pub(crate) fn take_handover(&self) -> Option<u32> {
        // A plain load each turn; the swap only when there is news.
        if self.inner.handover.load(Ordering::SeqCst) == 0 {
            return None;
        }
        Some(self.inner.handover.swap(0, Ordering::SeqCst)).filter(|&pid| pid != 0)
    }

    fn request(&self, level: u8) {
        self.inner.requested.fetch_max(level, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Err(e) = self.inner.waker.wake() {
            warn!("could not wake the event loop: {e}");
        }
    }

    /// The strongest stop requested so far.
    pub(crate) fn requested(&self) -> u8 {
        self.inner.requested.load(Ordering::SeqCst)
    }
}
