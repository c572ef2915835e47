//! Stopping from outside the loop, and hearing that it stops: [`ShutdownHandle`] starts a
//! graceful or immediate stop from any thread (it sets an atomic and wakes the loop through its
//! one `mio::Waker`; the loop acts on it in its next turn), and [`DrainNotice`] tells long-lived
//! work that the drain began.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::sync::lock;
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
    waker: Arc<mio::Waker>,
}

impl ShutdownHandle {
    /// A handle that wakes the loop with `waker` (shared with the loop's mailbox).
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Self {
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
    /// at once, without telling systemd that the service stops, and keep idle connections until
    /// their clients use or close them (see `Draining::HandingOver`). A signal during that drain
    /// counts as the first one, not the second. During a drain delay, it only ends the delay.
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

/// Tells long-lived work that the drain began, so it can finish on its own terms before the
/// shutdown timeout cuts it (Go's `Server.RegisterOnShutdown`, for threads): a flag to read,
/// a way to wait for it, and callbacks. It fires once, when the server stops accepting (after
/// the drain delay, if there is one), or when it stops at once. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct DrainNotice {
    inner: Arc<DrainInner>,
}

struct DrainInner {
    draining: AtomicBool,
    /// Set before `draining` when a successor serves in this process's place.
    successor: AtomicBool,
    /// Callbacks not yet run; `None` once the drain began.
    waiting: Mutex<Option<Vec<Callback>>>,
    began: Condvar,
}

type Callback = Box<dyn FnOnce() + Send>;

impl Default for DrainNotice {
    fn default() -> Self {
        DrainNotice::new()
    }
}

impl fmt::Debug for DrainNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainNotice").field("draining", &self.is_draining()).finish()
    }
}

impl DrainNotice {
    /// A notice that has not fired. A server makes its own; [`process::run`](crate::process::run)
    /// gives all its workers one.
    pub fn new() -> Self {
        let inner = DrainInner {
            draining: AtomicBool::new(false),
            successor: AtomicBool::new(false),
            waiting: Mutex::new(Some(Vec::new())),
            began: Condvar::new(),
        };
        DrainNotice { inner: Arc::new(inner) }
    }

    /// Whether the drain began: one atomic load.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Whether the drain began because another process serves in this one's place (a SIGHUP
    /// restart handed it the listening sockets): a client told to reconnect now reaches it at
    /// once. Set before the drain's callbacks run, so they can read it.
    pub fn successor_serving(&self) -> bool {
        self.inner.successor.load(Ordering::Acquire)
    }

    /// Waits until the drain begins.
    pub fn wait(&self) {
        let mut waiting = lock(&self.inner.waiting);
        while waiting.is_some() {
            waiting = self.inner.began.wait(waiting).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until the drain begins or `timeout` passes; returns whether it began.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let waiting = lock(&self.inner.waiting);
        let (waiting, _) = self
            .inner
            .began
            .wait_timeout_while(waiting, timeout, |waiting| waiting.is_some())
            .unwrap_or_else(PoisonError::into_inner);
        waiting.is_none()
    }

    /// Runs `callback` when the drain begins, on the server's thread (keep it quick: wake
    /// something up, set a flag), or at once on this thread if it already began.
    ///
    /// A callback is kept until the drain, with all it captured: register one per producer
    /// (a pool, a thread serving many streams), not one per request or stream, which would
    /// grow without bound on a long-running server. A producer of many streams keeps them
    /// together and ends them all from its one callback, as the binary's `/events` ticker does.
    pub fn on_drain(&self, callback: impl FnOnce() + Send + 'static) {
        let mut waiting = lock(&self.inner.waiting);
        match waiting.as_mut() {
            Some(callbacks) => callbacks.push(Box::new(callback)),
            None => {
                drop(waiting);
                callback();
            }
        }
    }

    /// The drain began because a successor serves: [`DrainNotice::successor_serving`], then
    /// [`DrainNotice::begin`]'s work.
    pub(crate) fn begin_handover(&self) {
        self.inner.successor.store(true, Ordering::Release);
        self.begin();
    }

    /// The drain began: sets the flag, wakes the waiters, runs the callbacks. Later calls do
    /// nothing.
    pub(crate) fn begin(&self) {
        let callbacks = {
            let mut waiting = lock(&self.inner.waiting);
            self.inner.draining.store(true, Ordering::Release);
            waiting.take()
        };
        self.inner.began.notify_all();
        for callback in callbacks.into_iter().flatten() {
            callback();
        }
    }
}

/// What a handler may need of the server it runs in, handed to the code that builds it
/// ([`Server::bind_with`](crate::Server::bind_with), [`process::run`](crate::process::run)),
/// so it can keep copies before the server takes it.
#[derive(Clone, Debug)]
pub struct Handles {
    /// Stops the server (in a process with several workers: all of them).
    pub shutdown: ShutdownHandle,
    /// Fires when the drain begins.
    pub drain: DrainNotice,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn drain_notice_fires_once_for_flag_waiters_and_callbacks() {
        let notice = DrainNotice::new();
        assert!(!notice.is_draining());
        assert!(!notice.wait_timeout(Duration::from_millis(1)));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        notice.on_drain(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let waiter = {
            let notice = notice.clone();
            std::thread::spawn(move || {
                notice.wait();
                notice.is_draining()
            })
        };
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a callback ran before the drain");
        notice.begin();
        notice.begin();
        assert!(waiter.join().unwrap(), "the waiter woke before the flag was set");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "callbacks run once");
        assert!(notice.wait_timeout(Duration::ZERO));
        // Once it has fired, a new callback runs at once, here.
        let late = Arc::clone(&calls);
        notice.on_drain(move || {
            late.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }
}
