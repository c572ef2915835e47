//! [`Acceptor`]: the listening socket and when to take connections from it. Edge-triggered: the
//! listener's event says "something may be queued", and accepting goes on until a look at the
//! queue finds it empty. Out of descriptors or memory, it pauses (never spins); at the
//! connection cap it waits until the count is below 90% of it (never flaps at the edge).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use log::{debug, info, warn};
use mio::Registry;
use mio::net::{TcpListener, TcpStream};

use crate::config::ServerConfig;
use crate::timer::Tick;

/// The listener and its state.
#[derive(Debug)]
pub(crate) struct Acceptor {
    /// `None` once the drain closed it.
    listener: Option<TcpListener>,
    /// The address it is bound to.
    local_addr: SocketAddr,
    /// The listener had an event since a look last found its queue empty.
    ready: bool,
    /// Accepting is paused until then (after running out of descriptors or memory).
    paused_until: Option<Tick>,
    /// When the last accept failure was logged (at most one a second).
    last_warning: Option<Tick>,
    /// At the connection cap: accepting resumes below 90% of it.
    at_cap: bool,
    /// Whether new connections get a first look before they enter the poll.
    first_look: FirstLook,
}

/// Whether to look at a new connection before registering it, learned from how often that look
/// found a request. A look that finds one saves the registration and a turn of the loop (and a
/// `Connection: close` request answered then never enters the poll); one that finds nothing
/// costs a read. Clients that send their request only once their connect completes (load
/// generators, proxies) are seldom there yet when the listener's event is taken at once; on a
/// busy loop, or with clients that write at once, they usually are.
#[derive(Debug, Default, Clone, Copy)]
struct FirstLook {
    /// Hits (+2) and misses (-1) of recent looks, within ±`LOOK_MEMORY`: looks while not
    /// negative, that is while more than a third of them find a request (one hit pays for
    /// several misses).
    score: i8,
    /// New connections not looked at since the last look: every `LOOK_PROBE`-th is looked at
    /// anyway, to notice when looks would pay again.
    skipped: u8,
}

const LOOK_MEMORY: i8 = 16;
const LOOK_PROBE: u8 = 16;

impl FirstLook {
    fn wanted(&mut self) -> bool {
        if self.score >= 0 {
            return true;
        }
        self.skipped += 1;
        if self.skipped < LOOK_PROBE {
            return false;
        }
        self.skipped = 0;
        true
    }

    fn learn(&mut self, found: bool) {
        self.score =
            if found { self.score.saturating_add(2).min(LOOK_MEMORY) } else { (self.score - 1).max(-LOOK_MEMORY) };
    }
}

impl Acceptor {
    /// Accepts from `listener` (already registered with the poll), bound to `local_addr`.
    pub(crate) fn new(listener: TcpListener, local_addr: SocketAddr) -> Self {
        // Ready at first: connections may have queued before the listener was registered.
        Acceptor {
            listener: Some(listener),
            local_addr,
            ready: true,
            paused_until: None,
            last_warning: None,
            at_cap: false,
            first_look: FirstLook::default(),
        }
    }

    /// Whether the connection just accepted should get a first look before it is registered.
    pub(crate) fn look_first(&mut self) -> bool {
        self.first_look.wanted()
    }

    /// What a first look found: a request (or at least part of one), or nothing yet.
    pub(crate) fn looked(&mut self, found: bool) {
        self.first_look.learn(found);
    }

    /// The address the listener is (or was) bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's readiness event.
    pub(crate) fn on_event(&mut self) {
        self.ready = true;
    }

    /// Whether a connection can be taken now, so the loop should not sleep.
    pub(crate) fn has_work(&self, now: Tick) -> bool {
        self.ready && self.may_accept(now)
    }

    /// When a paused accept resumes.
    pub(crate) fn deadline(&self) -> Option<Tick> {
        self.paused_until.filter(|_| self.listener.is_some())
    }

    fn may_accept(&self, now: Tick) -> bool {
        self.listener.is_some() && !self.at_cap && self.paused_until.is_none_or(|until| until <= now)
    }

    /// The next connection from the queue, if one may be taken now and is there.
    #[inline]
    pub(crate) fn next(&mut self, now: Tick, config: &ServerConfig) -> Option<(TcpStream, SocketAddr)> {
        // Most turns have no listener event: that answer costs a load, not a call.
        if !self.ready {
            return None;
        }
        self.take(now, config)
    }

    fn take(&mut self, now: Tick, config: &ServerConfig) -> Option<(TcpStream, SocketAddr)> {
        loop {
            if !self.ready || !self.may_accept(now) {
                return None;
            }
            self.paused_until = None;
            let listener = self.listener.as_ref()?;
            match listener.accept() {
                Ok(accepted) => {
                    // As after WouldBlock: the listener is edge-triggered, so a connection
                    // queued after this look brings a new event.
                    self.ready = accept_queue_nonempty(listener);
                    return Some(accepted);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ready = false;
                    return None;
                }
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory (or worse): pause, never spin.
                    self.paused_until = Some(now.after(config.accept_backoff));
                    let quiet = self.last_warning.is_some_and(|t| now < t.after(Duration::from_secs(1)));
                    if !quiet {
                        warn!("accept failed: {e}; pausing accepts for {:?}", config.accept_backoff);
                        self.last_warning = Some(now);
                    }
                    return None;
                }
            }
        }
    }

    /// A connection closed, freeing a descriptor: a paused accept retries now.
    pub(crate) fn on_close(&mut self, now: Tick) {
        if self.paused_until.is_some_and(|until| until > now) {
            self.paused_until = Some(now);
        }
    }

    /// Stops accepting at the connection cap; resumes below 90% of it, so accepting does not
    /// flap on every close at the edge.
    #[inline]
    pub(crate) fn update_cap(&mut self, open: usize, config: &ServerConfig, label: &str) {
        let cap = config.max_connections.max(1);
        // Checked on every accept and close; the change itself is rare, and out of line.
        if (!self.at_cap && open >= cap) || (self.at_cap && open < cap - cap / 10) {
            self.flip_cap(open, cap, label);
        }
    }

    #[cold]
    #[inline(never)]
    fn flip_cap(&mut self, open: usize, cap: usize, label: &str) {
        if !self.at_cap && open >= cap {
            self.at_cap = true;
            warn!(event = "at_cap", open; "{label}{open} connections open: at the connection cap, new ones wait in the backlog");
        } else if self.at_cap && open < cap - cap / 10 {
            self.at_cap = false;
            info!(event = "accepting", open; "{label}{open} connections open: accepting again");
        }
    }

    /// Stops listening: takes every connection that completed its handshake (so it is served,
    /// not reset), then closes the listener.
    pub(crate) fn close(&mut self, registry: &Registry) -> Vec<(TcpStream, SocketAddr)> {
        let Some(mut listener) = self.listener.take() else { return Vec::new() };
        let mut backlog = Vec::new();
        loop {
            match listener.accept() {
                Ok(accepted) => backlog.push(accepted),
                Err(e) if is_transient_accept_error(&e) => {}
                Err(_) => break,
            }
        }
        if let Err(e) = registry.deregister(&mut listener) {
            debug!("deregistering the listener: {e}");
        }
        backlog
    }
}

/// Whether a connection is waiting in `listener`'s accept queue (a zero-timeout `poll`). Asking
/// is far cheaper than an `accept` that finds the queue empty: Linux sets up the new socket and
/// its file before it looks at the queue, and tears them down again on `EAGAIN` (3.4 µs of CPU
/// against 0.3 µs for the `poll`, measured on the benchmark machine). On an error, answers yes
/// and lets `accept` find out.
fn accept_queue_nonempty(listener: &TcpListener) -> bool {
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `pfd` is one valid, initialised pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, 0) != 0 }
}

/// Accept errors that concern one connection only: try the next one. Anything else pauses
/// accepting for `accept_backoff`, so an unknown error can slow accepts but never spin the loop.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks until misses outweigh hits two to one, then looks at one new connection in
    /// `LOOK_PROBE` only, and looks at every one again once those probes find requests.
    #[test]
    fn the_first_look_follows_what_it_finds() {
        let mut look = FirstLook::default();
        let mut looked = 0;
        for _ in 0..100 {
            if look.wanted() {
                looked += 1;
                look.learn(false);
            }
        }
        // One miss takes the score below zero; after that, one probe in LOOK_PROBE.
        assert_eq!(looked, 1 + 99 / usize::from(LOOK_PROBE));
        assert_eq!(look.score, -(looked as i8));

        // Requests there again: probes find them, and looking resumes for every connection.
        let mut accepted = 0;
        while look.score < 0 {
            accepted += 1;
            if look.wanted() {
                look.learn(true);
            }
            assert!(accepted < 1000, "never looks again");
        }
        assert!((0..50).all(|_| look.wanted()));

        // A third of looks finding a request keeps it looking; a quarter does not.
        for (hits_per_miss, keeps) in [((1, 2), true), ((1, 3), false)] {
            let mut look = FirstLook::default();
            let (hits, misses) = hits_per_miss;
            let mut looking = 0;
            for round in 0..60 {
                for found in std::iter::repeat_n(true, hits).chain(std::iter::repeat_n(false, misses)) {
                    if look.wanted() {
                        look.learn(found);
                        looking += usize::from(round >= 30);
                    }
                }
            }
            let all = 30 * (hits + misses);
            assert_eq!(looking == all, keeps, "{hits_per_miss:?}: looked at {looking} of the last {all}");
        }
    }
}
