//! What watches the event loops from outside, for what a loop cannot see while it is stuck in
//! one turn (a handler that spins or blocks):
//!
//! - a **slow turn**: one watchdog thread per process looks at every running loop every 25 ms
//!   (more often for a threshold under 100 ms) and flags a turn that has run longer than its
//!   loop's [`ServerConfig::slow_turn`](crate::ServerConfig::slow_turn). When its handler
//!   returns, the loop sees the flag and notes the request it was handling; when the turn ends,
//!   it counts the turn and logs it (`Server::slow_turn`).
//! - a **second signal while stuck**: a server that takes SIGINT and SIGTERM also counts them in
//!   a signal handler of its own ([`SignalGuard`]). The first is the loop's, read from its signal
//!   source as always. A second one that finds a loop in a turn that began 50 ms ago or more
//!   ([`STUCK`]) will not be read soon: the handler ends the process at once, `_exit(128 + n)`,
//!   after a fixed line on stderr. One that finds every loop moving is left to them (they stop,
//!   the exit summary is written), and the watchdog ends the process the same way if a loop is
//!   still in that same turn 50 ms later.
//!
//! Each running loop holds a [`Beat`]: when its current turn began (0 while it waits in its
//! poll), stored at each end of the poll from the clock the turn reads anyway. The beats are
//! in a list that only grows (a loop that stops leaves its beat to the next one), so the signal
//! handler walks it without a lock or an allocation. The loop's cost: two relaxed stores a turn,
//! and one relaxed load after each handler call.

use std::io;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::sync::lock;
use crate::timer::Tick;

/// A loop in the same turn this long after a second signal is stuck: the process ends without
/// waiting for it.
pub(crate) const STUCK: Duration = Duration::from_millis(50);
/// Longest pause between two looks of the watchdog.
const LOOK_EVERY: Duration = Duration::from_millis(25);
/// Shortest one (for a tiny threshold).
const LOOK_AT_MOST_EVERY: Duration = Duration::from_millis(5);

/// One running loop, as the watchdog and the signal handler see it. Aligned to a cache line:
/// each worker writes its own twice a turn.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct Beat {
    /// When the current turn began (a raw [`Tick`]); 0 while the loop waits in its poll.
    turn: AtomicU64,
    /// The start of the turn the watchdog found slow, until the loop ends it; 0 for none.
    slow: AtomicU64,
    /// The loop's slow-turn threshold, in nanoseconds; 0: not watched for slow turns.
    threshold: AtomicU64,
    /// A running loop holds it.
    claimed: AtomicBool,
    /// The next beat in the list.
    next: AtomicPtr<Beat>,
}

/// The beat of no loop: never flagged. What a connection environment has outside `Server::run`.
static IDLE: Beat = Beat::new();
/// The list of beats, newest first; never shrinks (its beats are leaked, and reused).
static BEATS: AtomicPtr<Beat> = AtomicPtr::new(ptr::null_mut());

impl Beat {
    const fn new() -> Beat {
        Beat {
            turn: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            threshold: AtomicU64::new(0),
            claimed: AtomicBool::new(false),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The beat of no loop.
    pub(crate) fn idle() -> &'static Beat {
        &IDLE
    }

    /// The loop's turn began at `now` (its poll returned).
    #[inline]
    pub(crate) fn begin_turn(&self, now: Tick) {
        self.turn.store(now.raw(), Relaxed);
    }

    /// The loop's turn is over (it is about to wait). Returns the start of a turn the watchdog
    /// found slow since the last call (this one, or, when the flag came just as the turn
    /// ended, the one before), or 0.
    #[inline]
    pub(crate) fn end_turn(&self) -> u64 {
        self.turn.store(0, Relaxed);
        if self.slow.load(Relaxed) == 0 { 0 } else { self.slow.swap(0, Relaxed) }
    }

    /// Whether the watchdog flagged a turn: one relaxed load, after each handler call.
    #[inline(always)]
    pub(crate) fn flagged(&self) -> bool {
        self.slow.load(Relaxed) != 0
    }

    /// Whether the turn flagged is the one that began at `began`.
    pub(crate) fn flagged_turn(&self, began: Tick) -> bool {
        self.slow.load(Relaxed) == began.raw()
    }

    /// When the turn began, if the loop is in one and holds this beat.
    fn running_turn(&self) -> Option<u64> {
        if !self.claimed.load(Acquire) {
            return None;
        }
        Some(self.turn.load(Relaxed)).filter(|&turn| turn != 0)
    }
}

/// Every beat in the list. Lock-free: the signal handler calls it.
fn beats() -> impl Iterator<Item = &'static Beat> {
    let mut next = BEATS.load(Acquire);
    std::iter::from_fn(move || {
        // SAFETY: every pointer in the list comes from `Box::leak` and is never freed.
        let beat = unsafe { next.as_ref() }?;
        next = beat.next.load(Acquire);
        Some(beat)
    })
}

/// A running loop's hold on a beat, given back when dropped.
#[derive(Debug)]
pub(crate) struct Watched {
    beat: &'static Beat,
}

impl Watched {
    /// Takes a free beat (or adds one to the list) for a loop whose slow-turn threshold is
    /// `slow_turn` (zero: not watched for slow turns), and makes sure the watchdog runs.
    pub(crate) fn claim(slow_turn: Duration) -> Watched {
        let beat = beats().find(|beat| beat.claimed.compare_exchange(false, true, AcqRel, Relaxed).is_ok());
        let beat = beat.unwrap_or_else(|| {
            let beat: &'static Beat = Box::leak(Box::new(Beat::new()));
            beat.claimed.store(true, Relaxed);
            let mut head = BEATS.load(Acquire);
            loop {
                beat.next.store(head, Relaxed);
                match BEATS.compare_exchange(head, ptr::from_ref(beat).cast_mut(), AcqRel, Acquire) {
                    Ok(_) => break beat,
                    Err(now) => head = now,
                }
            }
        });
        beat.threshold.store(nanos(slow_turn), Relaxed);
        watchdog_running(1);
        Watched { beat }
    }

    /// The beat held.
    pub(crate) fn beat(&self) -> &'static Beat {
        self.beat
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.beat.turn.store(0, Relaxed);
        self.beat.slow.store(0, Relaxed);
        self.beat.threshold.store(0, Relaxed);
        self.beat.claimed.store(false, Release);
        watchdog_running(-1);
    }
}

/// Whether the watchdog runs, and for how many loops.
struct Watchdog {
    loops: usize,
    started: bool,
}

static WATCHDOG: Mutex<Watchdog> = Mutex::new(Watchdog { loops: 0, started: false });
/// A loop began to run.
static LOOPS_CHANGED: Condvar = Condvar::new();

/// `delta` more loops run; the watchdog thread starts with the first (and waits, without
/// waking, while none runs).
fn watchdog_running(delta: isize) {
    let mut watchdog = lock(&WATCHDOG);
    watchdog.loops = watchdog.loops.saturating_add_signed(delta);
    if watchdog.loops > 0 && !watchdog.started {
        // Without it, slow turns go unnoticed and a second signal has only its handler.
        watchdog.started = thread::Builder::new().name("quiesce-watchdog".into()).spawn(watch).is_ok();
    }
    LOOPS_CHANGED.notify_all();
}

/// The watchdog thread: looks at every loop, flags slow turns, and ends the process when a
/// second signal has waited too long for a stuck loop.
fn watch() {
    loop {
        {
            let mut watchdog = lock(&WATCHDOG);
            while watchdog.loops == 0 {
                watchdog = LOOPS_CHANGED.wait(watchdog).unwrap_or_else(PoisonError::into_inner);
            }
        }
        let now = Tick::now().raw();
        let mut pause = LOOK_EVERY;
        for beat in beats() {
            let Some(turn) = beat.running_turn() else { continue };
            let threshold = beat.threshold.load(Relaxed);
            if threshold > 0 {
                pause = pause.min(Duration::from_nanos(threshold / 4));
            }
            if is_slow(turn, threshold, now) && beat.slow.load(Relaxed) != turn {
                beat.slow.store(turn, Relaxed);
            }
        }
        if let Some(signal) = second_signal_overdue(now) {
            exit_now(signal);
        }
        thread::sleep(pause.max(LOOK_AT_MOST_EVERY));
    }
}

/// Whether a turn that began at `turn` (raw tick) is slow at `now` for a threshold of
/// `threshold` ns (0: never).
fn is_slow(turn: u64, threshold: u64, now: u64) -> bool {
    threshold != 0 && now.saturating_sub(turn) >= threshold
}

/// Whether one of `turns` (the start of each running loop's turn) began at `since` or before.
fn any_since(mut turns: impl Iterator<Item = u64>, since: u64) -> bool {
    turns.any(|turn| turn <= since)
}

/// Whether a running loop is in a turn that began at `since` (raw tick) or before.
fn stuck_since(since: u64) -> bool {
    any_since(beats().filter_map(Beat::running_turn), since)
}

/// A second SIGINT/SIGTERM that found every loop moving: its number, and when it came (raw
/// tick; 0: none). The watchdog ends the process if a loop is still in the turn it was in
/// then, [`STUCK`] later.
static SECOND_SIGNAL: AtomicI32 = AtomicI32::new(0);
static SECOND_AT: AtomicU64 = AtomicU64::new(0);

/// The signal to exit for, if a second one came at least [`STUCK`] before `now` and a loop is
/// still in the turn it was in when it came.
fn second_signal_overdue(now: u64) -> Option<i32> {
    let at = SECOND_AT.load(SeqCst);
    if at == 0 || now.saturating_sub(at) < nanos(STUCK) {
        return None;
    }
    stuck_since(at).then(|| SECOND_SIGNAL.load(SeqCst))
}

/// SIGINT and SIGTERM counted in a signal handler, for as long as it lives (a server that takes
/// signals holds one): from the second on, a stuck loop does not keep the process alive.
#[derive(Debug)]
pub(crate) struct SignalGuard {
    ids: Vec<SigId>,
}

impl SignalGuard {
    /// Counts SIGINT and SIGTERM from now on, as if `already` had come (1: the next one is a
    /// second one, for the workers still draining after the one that took signals stopped).
    pub(crate) fn install(already: usize) -> io::Result<SignalGuard> {
        if already == 0 {
            // A new first signal to wait for: a second one an earlier server saw is forgotten.
            SECOND_AT.store(0, SeqCst);
            SECOND_SIGNAL.store(0, SeqCst);
        }
        let count = Arc::new(AtomicUsize::new(already));
        let mut guard = SignalGuard { ids: Vec::with_capacity(2) };
        for signal in [SIGINT, SIGTERM] {
            let count = Arc::clone(&count);
            // SAFETY: the action is async-signal-safe: atomics, a clock read, a walk of a list
            // of leaked beats, and at the end fstat, fcntl, poll, write or send, and _exit. It
            // allocates nothing and takes no lock.
            let id = unsafe { signal_hook::low_level::register(signal, move || on_signal(&count, signal)) }?;
            guard.ids.push(id);
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// In the signal handler: the first signal is left to the loop; a later one ends the process
/// now if a loop is stuck, and otherwise leaves the watchdog to check again shortly.
fn on_signal(count: &AtomicUsize, signal: i32) {
    if count.fetch_add(1, SeqCst) == 0 {
        return;
    }
    let Some(now) = Tick::now_if_started() else { return };
    let now = now.raw();
    if stuck_since(now.saturating_sub(nanos(STUCK))) {
        exit_now(signal);
    }
    if SECOND_AT.load(SeqCst) == 0 {
        SECOND_SIGNAL.store(signal, SeqCst);
        SECOND_AT.store(now, SeqCst);
    }
}

/// Ends the process at once with 128 + `signal`, after saying why on stderr. Async-signal-safe.
fn exit_now(signal: i32) -> ! {
    last_words(signal);
    // SAFETY: _exit ends the process without running anything else; async-signal-safe.
    unsafe { libc::_exit(128 + signal) }
}

/// Writes a fixed line to stderr, best effort, with async-signal-safe calls only and without
/// ever waiting: a stderr nobody reads must not hold up the exit the second signal asked for.
fn last_words(signal: i32) {
    let line: &[u8] = match signal {
        SIGINT => b"quiesce: second SIGINT while an event loop is stuck in a turn: exiting now (130)\n",
        SIGTERM => b"quiesce: second SIGTERM while an event loop is stuck in a turn: exiting now (143)\n",
        _ => b"quiesce: second signal while an event loop is stuck in a turn: exiting now\n",
    };
    const FD: libc::c_int = libc::STDERR_FILENO;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    const NO_SIGPIPE: libc::c_int = libc::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    const NO_SIGPIPE: libc::c_int = 0;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: system calls on fd 2 with valid pointers and lengths.
    unsafe {
        if libc::fstat(FD, stat.as_mut_ptr()) != 0 {
            return;
        }
        let write = || libc::write(FD, line.as_ptr().cast(), line.len());
        match stat.assume_init().st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let _ = write();
            }
            libc::S_IFSOCK => {
                let _ = libc::send(FD, line.as_ptr().cast(), line.len(), libc::MSG_DONTWAIT | NO_SIGPIPE);
            }
            libc::S_IFIFO => {
                // Non-blocking for the last write of the process (the flag is on the pipe's
                // shared description, but whatever else writes there is this process's too).
                let flags = libc::fcntl(FD, libc::F_GETFL);
                if flags >= 0 && libc::fcntl(FD, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0 {
                    let _ = write();
                }
            }
            _ => {
                // A terminal: only if it takes the line now.
                let mut ready = libc::pollfd { fd: FD, events: libc::POLLOUT, revents: 0 };
                if libc::poll(&mut ready, 1, 0) == 1 && ready.revents & libc::POLLOUT != 0 {
                    let _ = write();
                }
            }
        }
    }
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_turn_is_slow_once_it_runs_past_the_threshold() {
        assert!(!is_slow(1, 100 * MS, 1 + 99 * MS));
        assert!(is_slow(1, 100 * MS, 1 + 100 * MS));
        assert!(!is_slow(1, 0, u64::MAX), "a zero threshold watches nothing");
    }

    #[test]
    fn a_loop_is_stuck_when_its_turn_began_before_the_limit() {
        assert!(!any_since([50 * MS, 80 * MS].into_iter(), 40 * MS));
        assert!(any_since([50 * MS, 30 * MS].into_iter(), 40 * MS));
        assert!(!any_since(std::iter::empty(), u64::MAX));
    }

    #[test]
    fn a_beat_is_flagged_until_its_turn_ends_and_is_reused() {
        let first = Watched::claim(Duration::from_millis(100));
        let beat = first.beat();
        let now = Tick::now();
        beat.begin_turn(now);
        assert_eq!(beat.running_turn(), Some(now.raw()));
        assert!(!beat.flagged());
        // What the watchdog does for a slow turn.
        beat.slow.store(now.raw(), Relaxed);
        assert!(beat.flagged() && beat.flagged_turn(now));
        assert_eq!(beat.end_turn(), now.raw());
        assert!(!beat.flagged() && beat.running_turn().is_none());
        assert_eq!(beat.end_turn(), 0, "counted once");
        drop(first);
        // The list only grows: a beat let go stays in it, for the next claim (this test's or
        // another's, running meanwhile).
        assert!(beats().any(|b| ptr::eq(b, beat)));
    }
}
