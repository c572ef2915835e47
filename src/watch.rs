//! What watches the event loops from outside, for what a loop cannot see while it is stuck in
//! one turn (a handler that spins or blocks):
//!
//! - a **slow turn**: a turn that has run longer than its loop's
//!   [`ServerConfig::slow_turn`](crate::ServerConfig::slow_turn). The loop sets a deadline on the
//!   processor's cycle counter as the turn begins, and compares the counter with it after each
//!   handler call: the first handler to return past it is named, and when the turn ends it is
//!   counted and logged (`Server::slow_turn`).
//! - a **second signal while stuck**: a server that takes SIGINT and SIGTERM also counts them in
//!   a signal handler of its own ([`SignalGuard`]). The first is the loop's, read from its signal
//!   source as always. A second one that finds a loop in a turn that began 50 ms ago or more
//!   ([`STUCK`]) will not be read soon: the handler ends the process at once, `_exit(128 + n)`,
//!   after a fixed line on stderr. One that finds every loop moving is left to them (they stop,
//!   the exit summary is written), and sets an alarm: if a loop is still in that same turn
//!   50 ms later, the `SIGALRM` handler ends the process the same way.
//!
//! No thread watches: a process with a second thread pays for it in every system call (glibc's
//! cancellation points, a few dozen instructions each, a noticeable share of a keep-alive
//! request).
//!
//! Each running loop holds a [`Beat`]: when its current turn began (0 while it waits in its
//! poll), stored at each end of the poll from the clock the turn reads anyway. The beats are
//! in a list that only grows (a loop that stops leaves its beat to the next one), so the signal
//! handler walks it without a lock or an allocation. The loop's cost: a cycle-counter read and
//! two relaxed stores at each end of a turn, and a cycle-counter read and a compare after each
//! handler call.

use std::io;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize};
use std::time::Duration;

use signal_hook::SigId;
use signal_hook::consts::{SIGALRM, SIGINT, SIGTERM};

use crate::timer::Tick;

/// A loop in the same turn this long after a second signal is stuck: the process ends without
/// waiting for it.
pub(crate) const STUCK: Duration = Duration::from_millis(50);
/// How long the cycle counter is watched against the clock to learn its rate, once per process,
/// as the first loop starts.
const CALIBRATE_OVER: Duration = Duration::from_millis(1);

/// The processor's cycle counter: cheap (no system call), and only ever compared with itself on
/// one thread. Where there is none, the monotonic clock.
#[inline(always)]
fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC exists on every x86_64 processor and has no preconditions.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let value: u64;
        // SAFETY: reads the virtual counter, readable from user space on Linux and macOS.
        unsafe { core::arch::asm!("mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack)) };
        value
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Tick::now().raw()
    }
}

/// Cycles per millisecond, once measured (0 before).
static CYCLES_PER_MS: AtomicU64 = AtomicU64::new(0);

/// The counter's rate: measured the first time, by watching it against the monotonic clock for
/// [`CALIBRATE_OVER`] (both count wall time, so a thread descheduled meanwhile measures the
/// same rate).
#[cold]
fn cycles_per_ms() -> u64 {
    let known = CYCLES_PER_MS.load(Relaxed);
    if known != 0 {
        return known;
    }
    let (start, counted_from) = (Tick::now(), cycles());
    let mut now = Tick::now();
    while start.until(now) < CALIBRATE_OVER {
        std::hint::spin_loop();
        now = Tick::now();
    }
    let counted = cycles().saturating_sub(counted_from);
    let elapsed = u128::from(nanos(start.until(now)).max(1));
    let per_ms = u64::try_from(u128::from(counted) * 1_000_000 / elapsed).unwrap_or(u64::MAX).max(1);
    CYCLES_PER_MS.store(per_ms, Relaxed);
    per_ms
}

/// One running loop, as the signal handlers see it. Aligned to a cache line:
/// each worker writes its own twice a turn.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct Beat {
    /// When the current turn began (a raw [`Tick`]); 0 while the loop waits in its poll.
    turn: AtomicU64,
    /// The start of the turn found slow, until the loop ends it; 0 for none.
    slow: AtomicU64,
    /// The loop's slow-turn threshold, in nanoseconds; 0: not watched for slow turns.
    threshold: AtomicU64,
    /// The threshold in cycles of [`cycles`], once their rate is known (0 before).
    threshold_cycles: AtomicU64,
    /// The cycle count past which this turn is slow (`u64::MAX`: never).
    deadline: AtomicU64,
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
            threshold_cycles: AtomicU64::new(0),
            deadline: AtomicU64::new(u64::MAX),
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
        let threshold = self.threshold_cycles.load(Relaxed);
        if threshold != 0 {
            self.deadline.store(cycles().saturating_add(threshold), Relaxed);
        }
    }

    /// The loop's turn is over (it is about to wait). Returns the start of the turn if it was
    /// slow, or 0.
    #[inline]
    pub(crate) fn end_turn(&self) -> u64 {
        let turn = self.turn.load(Relaxed);
        self.turn.store(0, Relaxed);
        // The deadline stays: the next turn sets its own before any handler runs.
        if self.slow.load(Relaxed) != 0 {
            self.deadline.store(u64::MAX, Relaxed);
            self.slow.swap(0, Relaxed)
        } else if self.flagged() {
            self.deadline.store(u64::MAX, Relaxed);
            turn
        } else {
            0
        }
    }

    /// Whether this turn has run past the threshold: after each handler call.
    #[inline(always)]
    pub(crate) fn flagged(&self) -> bool {
        cycles() >= self.deadline.load(Relaxed)
    }

    /// Notes that the turn that began at `began` was found slow when a handler returned;
    /// whether it was the first time.
    pub(crate) fn mark_slow(&self, began: Tick) -> bool {
        self.slow.swap(began.raw(), Relaxed) != began.raw()
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
    /// `slow_turn` (zero: not watched for slow turns).
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
        let threshold = match slow_turn.is_zero() {
            true => 0,
            false => u128::from(nanos(slow_turn)) * u128::from(cycles_per_ms()) / 1_000_000,
        };
        beat.threshold_cycles.store(u64::try_from(threshold).unwrap_or(u64::MAX), Relaxed);
        beat.deadline.store(u64::MAX, Relaxed);
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
        self.beat.threshold_cycles.store(0, Relaxed);
        self.beat.deadline.store(u64::MAX, Relaxed);
        self.beat.claimed.store(false, Release);
    }
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
/// tick; 0: none). The alarm it set ends the process if a loop is still in the turn it was in
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
            // of leaked beats, setitimer, and at the end fstat, fcntl, poll, write or send, and
            // _exit. It allocates nothing and takes no lock.
            let id = unsafe { signal_hook::low_level::register(signal, move || on_signal(&count, signal)) }?;
            guard.ids.push(id);
        }
        // SAFETY: as above: atomics, a clock read, the walk, and the same exit.
        let id = unsafe { signal_hook::low_level::register(SIGALRM, on_alarm) }?;
        guard.ids.push(id);
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
/// now if a loop is stuck, and otherwise sets an alarm to check again [`STUCK`] later.
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
        let later = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
            it_value: libc::timeval { tv_sec: 0, tv_usec: STUCK.as_micros() as libc::suseconds_t },
        };
        // SAFETY: a valid itimerval; setitimer is a plain system call.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &later, std::ptr::null_mut()) };
    }
}

/// The alarm a second signal set: if a loop is still in the turn it was in then, it is stuck.
fn on_alarm() {
    if let Some(now) = Tick::now_if_started()
        && let Some(signal) = second_signal_overdue(now.raw())
    {
        exit_now(signal);
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
        // As if the turn had run past its threshold.
        beat.deadline.store(0, Relaxed);
        assert!(beat.flagged());
        assert!(beat.mark_slow(now), "the first handler past it is named");
        assert!(!beat.mark_slow(now), "and only the first");
        assert_eq!(beat.end_turn(), now.raw());
        assert!(!beat.flagged() && beat.running_turn().is_none());
        assert_eq!(beat.end_turn(), 0, "counted once");
        drop(first);
        // The list only grows: a beat let go stays in it, for the next claim (this test's or
        // another's, running meanwhile).
        assert!(beats().any(|b| ptr::eq(b, beat)));
    }

    #[test]
    fn the_counter_learns_its_rate_then_a_turn_past_the_threshold_is_flagged() {
        let watched = Watched::claim(Duration::from_millis(1));
        let beat = watched.beat();
        assert_ne!(beat.threshold_cycles.load(Relaxed), 0, "no rate learned");
        // A turn that lasts 5 times the threshold is slow, whatever the machine's load (the
        // sleep lasts at least that long, and the rate compares cycles with the clock).
        let now = Tick::now();
        beat.begin_turn(now);
        std::thread::sleep(Duration::from_millis(5));
        assert!(beat.flagged());
        assert_eq!(beat.end_turn(), now.raw(), "slow even with no handler named");
        // A turn shorter than the threshold is not (the next begins at once).
        drop(watched);
        let watched = Watched::claim(Duration::from_secs(3600));
        let beat = watched.beat();
        beat.begin_turn(Tick::now());
        assert!(!beat.flagged());
        assert_eq!(beat.end_turn(), 0);
    }
}
