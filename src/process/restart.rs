//! The SIGHUP restart, both ends of the handoff, in one place.
//!
//! The protocol mirrors systemd's: the successor finds its `n` listening sockets at fds
//! 3..3+n (`QUIESCE_LISTEN_FDS=n`) and a pipe at fd 3+n (`QUIESCE_READY_FD`) on which it writes
//! one byte once it serves ([`ReadyPipe`]). The parent ([`Restart`]) keeps its own descriptors of
//! the listening sockets for this (never the servers'), starts the successor
//! ([`spawn_successor`]) and waits for that byte on a thread of its own; once it comes, the
//! parent hands over (systemd's `MAINPID=`, then the leader server's
//! [`ShutdownHandle`]) and drains. A successor that dies first closes the pipe without a byte,
//! and one not ready within 30 s is stopped: the parent serves on either way. The parent drops
//! its descriptors when its drain begins, so a closed listener is really closed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::systemd::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, Notifier};
use crate::listen::{FIRST_INHERITED_FD, context, invalid, set_cloexec, set_nonblocking, take_fd};
use crate::server::stage::{Observer, Stage};
use crate::shutdown::ShutdownHandle;
use crate::sync::lock;

/// How many listening sockets start at fd 3.
pub(crate) const RESTART_FDS: &str = "QUIESCE_LISTEN_FDS";
/// The fd of the readiness pipe's write end.
pub(crate) const READY_FD: &str = "QUIESCE_READY_FD";
/// How long a restarted successor may take to report that it serves.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The restart's own descriptors of every worker's listening socket, one slot per worker. A
/// slot is emptied when its worker stops (drains, stops at once, or dies), so a socket nobody
/// serves is really closed; the leader's drain empties them all.
#[derive(Debug, Clone)]
pub(crate) struct Copies(Arc<Mutex<Vec<Option<TcpListener>>>>);

impl Copies {
    /// Keeps `listeners`, worker i's at index i.
    pub(crate) fn new(listeners: Vec<TcpListener>) -> Copies {
        Copies(Arc::new(Mutex::new(listeners.into_iter().map(Some).collect())))
    }

    /// Drops worker `index`'s copy.
    fn release(&self, index: usize) {
        if let Some(slot) = lock(&self.0).get_mut(index) {
            *slot = None;
        }
    }

    /// Drops every copy.
    fn release_all(&self) {
        lock(&self.0).iter_mut().for_each(|slot| *slot = None);
    }

    /// An observer for worker `index`'s server that drops its copy when that server stops
    /// serving, and when it goes (a worker that fails).
    pub(crate) fn keeper(&self, index: usize) -> Keeper {
        Keeper { copies: self.clone(), index }
    }
}

/// See [`Copies::keeper`].
#[derive(Debug)]
pub(crate) struct Keeper {
    copies: Copies,
    index: usize,
}

impl Observer for Keeper {
    fn stage_changed(&mut self, stage: &Stage) {
        if matches!(stage, Stage::Draining(_) | Stage::Done { .. }) {
            self.copies.release(self.index);
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.copies.release(self.index);
    }
}

/// The parent's side: the process's copies of the listening sockets, and the successor being
/// started, if any.
pub(crate) struct Restart {
    copies: Copies,
    /// The server that hands over when the successor is ready (the process's leader).
    handle: ShutdownHandle,
    notifier: Option<Arc<Notifier>>,
    /// The thread waiting for a successor.
    watcher: Option<Watcher>,
    /// A successor took over: no more restarts from this process.
    handed_over: Arc<AtomicBool>,
}

/// A thread waiting for a successor to be ready, and the way to stop it waiting.
struct Watcher {
    thread: thread::JoinHandle<()>,
    cancel: Waker,
}

/// Tokens of a watcher's poll.
const READY: Token = Token(0);
const CANCEL: Token = Token(1);

impl Restart {
    /// Restarts on `copies`: a ready successor is announced to systemd through `notifier`, and
    /// `handle`'s server drains.
    pub(crate) fn new(copies: Copies, handle: ShutdownHandle, notifier: Option<Arc<Notifier>>) -> Restart {
        Restart { copies, handle, notifier, watcher: None, handed_over: Arc::new(AtomicBool::new(false)) }
    }

    /// SIGHUP: starts a copy of this program on the same listening sockets, unless the server
    /// is past serving, a successor is already starting, or one already took over.
    pub(crate) fn start(&mut self, stage: &Stage) {
        if self.watcher.as_ref().is_some_and(|w| w.thread.is_finished()) {
            self.stop_watching();
        }
        if !self.may_start(stage) {
            warn!("received SIGHUP: already shutting down or restarting; ignored");
            return;
        }
        if let Some(notifier) = &self.notifier {
            notifier.reloading();
        }
        // The watcher first: a successor must never run unwatched.
        let (watcher, successors) = match self.watcher() {
            Ok(watcher) => watcher,
            Err(e) => {
                error!("received SIGHUP: cannot watch a new process: {e}; serving on");
                self.failed();
                return;
            }
        };
        let spawned = {
            // Held while the child is made, so no worker's copy closes under the fork.
            let copies = lock(&self.copies.0);
            let fds: Vec<BorrowedFd<'_>> = copies.iter().flatten().map(AsFd::as_fd).collect();
            spawn_successor(&fds)
        };
        match spawned {
            Ok(successor) => {
                info!(
                    event = "restart", pid = successor.id();
                    "received SIGHUP: started new process {}; serving until it is ready", successor.id()
                );
                // The watcher is waiting for it: the send cannot fail.
                let _ = successors.send(successor);
                self.watcher = Some(watcher);
            }
            Err(e) => {
                error!("received SIGHUP: cannot start a new process: {e}; serving on");
                drop(successors);
                let _ = watcher.thread.join();
                self.failed();
            }
        }
    }

    /// Whether a SIGHUP may start a successor: only while serving, with none starting, and
    /// none that took over already (its handover may not have reached the loop yet).
    fn may_start(&self, stage: &Stage) -> bool {
        matches!(stage, Stage::Serving) && self.watcher.is_none() && !self.handed_over.load(Ordering::SeqCst)
    }

    /// A thread that waits for the successor sent to it, with a waker to cancel the wait.
    fn watcher(&self) -> io::Result<(Watcher, mpsc::Sender<Successor>)> {
        let poll = Poll::new()?;
        let cancel = Waker::new(poll.registry(), CANCEL)?;
        let (successors, successor) = mpsc::channel::<Successor>();
        let (handle, notifier, handed_over) =
            (self.handle.clone(), self.notifier.clone(), Arc::clone(&self.handed_over));
        let thread = thread::Builder::new().name("quiesce-restart".into()).spawn(move || {
            if let Ok(successor) = successor.recv() {
                wait_ready(successor, poll, &handle, notifier.as_deref(), &handed_over);
            }
        })?;
        Ok((Watcher { thread, cancel }, successors))
    }

    /// The drain began: the successor, if there is one, holds its own copies; ours must go, or
    /// the kernel would go on queueing connections on a listener nobody accepts from.
    pub(crate) fn release(&mut self) {
        self.copies.release_all();
    }

    /// Ends systemd's "reloading" state after a restart that did not happen.
    fn failed(&self) {
        if let Some(notifier) = &self.notifier {
            restart_failed(notifier);
        }
    }

    /// Stops the watcher thread (a successor still starting is left to start) and joins it.
    fn stop_watching(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.cancel.wake();
            let _ = watcher.thread.join();
        }
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

/// The watcher thread: waits (at most [`READY_TIMEOUT`]) for the successor's byte. Ready: tell
/// systemd the successor is the main process now, and hand over. Dead, or too slow (then
/// stopped): log it, and serve on.
/// How long a successor that gave up (closed its readiness pipe) gets to exit by itself.
const FAILED_EXIT_GRACE: Duration = Duration::from_secs(2);

fn wait_ready(
    mut successor: Successor,
    mut poll: Poll,
    handle: &ShutdownHandle,
    notifier: Option<&Notifier>,
    handed_over: &AtomicBool,
) {
    let pid = successor.id();
    if let Err(e) = poll.registry().register(&mut SourceFd(&successor.ready_fd()), READY, Interest::READABLE) {
        error!("cannot watch new process {pid}: {e}; stopping it, serving on");
        let _ = successor.kill();
        if let Some(notifier) = notifier {
            restart_failed(notifier);
        }
        return;
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut events = Events::with_capacity(4);
    loop {
        match successor.poll_ready() {
            Ok(ReadyState::Pending) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let status = successor.kill();
                    error!(
                        "new process {pid} was not ready within {}s; stopped it ({status:?}); serving on",
                        READY_TIMEOUT.as_secs()
                    );
                    break;
                }
                if let Err(e) = poll.poll(&mut events, Some(left))
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    error!("waiting for new process {pid}: {e}; serving on");
                    let _ = successor.kill();
                    break;
                }
                if events.iter().any(|event| event.token() == CANCEL) {
                    return;
                }
            }
            Ok(ReadyState::Ready) => {
                handed_over.store(true, Ordering::SeqCst);
                if let Some(notifier) = notifier {
                    notifier.handoff(pid);
                }
                handle.hand_over(pid);
                return;
            }
            Ok(ReadyState::Failed) | Err(_) => {
                // Reaped either way; killed if it is still running a moment later without
                // being ready.
                match successor.reap(FAILED_EXIT_GRACE) {
                    Ok(status) => error!("new process {pid} failed before it was ready ({status}); serving on"),
                    Err(_) => error!("new process {pid} closed its readiness pipe without being ready; serving on"),
                }
                break;
            }
        }
    }
    if let Some(notifier) = notifier {
        restart_failed(notifier);
    }
}

/// systemd: the reload is over, and the old process serves on.
fn restart_failed(notifier: &Notifier) {
    notifier.ready();
    notifier.status("restart failed; the old process serves on");
}

/// The write end of a restarting parent's readiness pipe.
#[derive(Debug)]
pub(crate) struct ReadyPipe {
    file: File,
}

impl ReadyPipe {
    /// Tells the parent we serve: writes one byte and closes the pipe. An error means the parent
    /// is gone (it will not stop serving on our account); log it and go on.
    pub(crate) fn signal(self) -> io::Result<()> {
        (&self.file).write_all(b"1").map_err(|e| context(e, "signalling readiness to the parent"))
    }

    /// Takes ownership of `fd` after checking it is an open pipe; makes it close-on-exec.
    pub(crate) fn from_fd(fd: RawFd) -> io::Result<ReadyPipe> {
        let owned = take_fd(fd)?;
        set_cloexec(owned.as_fd()).map_err(|e| context(e, format_args!("readiness fd {fd}")))?;
        let file = File::from(owned);
        let is_fifo = file.metadata().map_err(|e| context(e, format_args!("readiness fd {fd}")))?.file_type().is_fifo();
        if !is_fifo {
            return Err(invalid(format!("readiness fd {fd} is not a pipe")));
        }
        Ok(ReadyPipe { file })
    }
}

/// What a successor has said so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadyState {
    /// Nothing yet.
    Pending,
    /// It wrote its byte: it serves on the sockets.
    Ready,
    /// The pipe closed without a byte: it exited (or closed the pipe) before serving.
    Failed,
}

/// A successor started by [`spawn_successor`], not yet known to be serving.
#[derive(Debug)]
pub(crate) struct Successor {
    child: Child,
    ready: File,
    state: ReadyState,
}

impl Successor {
    /// The non-blocking read end of the readiness pipe, to register (READABLE) with
    /// `mio::unix::SourceFd`; deregister it once [`Successor::poll_ready`] is no longer Pending.
    pub(crate) fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// Reads the readiness pipe without blocking. Once Ready or Failed it stays so.
    pub(crate) fn poll_ready(&mut self) -> io::Result<ReadyState> {
        if self.state != ReadyState::Pending {
            return Ok(self.state);
        }
        let mut byte = [0u8; 1];
        loop {
            match (&self.ready).read(&mut byte) {
                Ok(0) => self.state = ReadyState::Failed,
                Ok(_) => self.state = ReadyState::Ready,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(context(e, "reading the successor's readiness pipe")),
            }
            return Ok(self.state);
        }
    }

    /// The successor's pid (for `MAINPID=` and logs).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child process, for tests that read its output.
    #[cfg(test)]
    pub(crate) fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    #[cfg(test)]
    /// Reaps the successor if it has exited (`Child::try_wait`).
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Kills (SIGKILL) and reaps a successor that will not become ready.
    pub(crate) fn kill(&mut self) -> io::Result<ExitStatus> {
        // An already exited child makes `kill` fail with InvalidInput; `wait` still reaps it.
        let _ = self.child.kill();
        self.child.wait()
    }

    /// Reaps a successor that closed its readiness pipe without being ready: it is on its way
    /// out (a configuration it could not load), so it gets `grace` to exit by itself, and the
    /// status told is its own; only one still running after that is killed.
    pub(crate) fn reap(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill()
    }
}

/// Starts a successor: this executable again, with the same arguments and environment, given
/// `listeners` at fds 3.. and a readiness pipe after them, stdio inherited. systemd's
/// `LISTEN_*` variables are removed; `NOTIFY_SOCKET` is kept.
///
/// On Linux an executable replaced since we started (`/proc/self/exe` then ends in
/// ` (deleted)`) is taken from its original path, so an upgrade installs the new binary and a
/// SIGHUP runs it.
pub(crate) fn spawn_successor(listeners: &[BorrowedFd<'_>]) -> io::Result<Successor> {
    let exe = std::env::current_exe().map_err(|e| context(e, "finding our own executable"))?;
    let mut command = Command::new(strip_deleted(exe));
    command.args(std::env::args_os().skip(1));
    spawn_with_listeners(command, listeners, FIRST_INHERITED_FD)
}

/// Runs `command` with `listeners` at fds `first..first+n` and the readiness pipe's write end
/// at `first+n` (`first` is 3 but for tests).
pub(crate) fn spawn_with_listeners(
    mut command: Command,
    listeners: &[BorrowedFd<'_>],
    first: RawFd,
) -> io::Result<Successor> {
    if listeners.is_empty() {
        return Err(invalid("a successor needs at least one listening socket".to_owned()));
    }
    let (reader, writer) = io::pipe().map_err(|e| context(e, "creating the readiness pipe"))?;
    let ready = File::from(OwnedFd::from(reader));
    set_nonblocking(ready.as_fd()).map_err(|e| context(e, "readiness pipe"))?;

    let mut sources: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    sources.push(writer.as_raw_fd());
    let end = RawFd::try_from(sources.len())
        .ok()
        .and_then(|n| first.checked_add(n))
        .ok_or_else(|| invalid("too many listening sockets".to_owned()))?;
    command
        .env(RESTART_FDS, listeners.len().to_string())
        .env(READY_FD, (end - 1).to_string())
        .env_remove(LISTEN_PID)
        .env_remove(LISTEN_FDS)
        .env_remove(LISTEN_FDNAMES);
    let mut scratch = vec![-1; sources.len()];
    // SAFETY: `place_fds` makes only async-signal-safe calls (fcntl, dup2), allocates nothing and
    // touches no locks: the buffers it uses were allocated here, before the fork.
    unsafe { command.pre_exec(move || place_fds(&sources, &mut scratch, first, end)) };

    let program = command.get_program().to_owned();
    // Keep std's own exec-error channel (created just before the fork, at the lowest free fd)
    // out of first..end, where `place_fds` overwrites whatever the child has.
    let placeholders = occupy_free_fds(first..end, ready.as_fd()).map_err(|e| context(e, "reserving fds"))?;
    let spawned = command.spawn();
    drop(placeholders);
    // Our copy of the write end must go, or the pipe never reports EOF when the child dies.
    drop(writer);
    let child = spawned.map_err(|e| context(e, format_args!("starting {}", program.to_string_lossy())))?;
    Ok(Successor { child, ready, state: ReadyState::Pending })
}

/// In the forked child: puts `sources[i]` at fd `first + i`, without `FD_CLOEXEC`.
///
/// A source may already sit inside `first..end` (so a plain `dup2` in order could overwrite a
/// source not yet placed): every source is first copied to a close-on-exec fd at or above `end`,
/// and only then are those copies moved down (`dup2` clears `FD_CLOEXEC` on the new fd; the
/// temporaries close at exec). Only async-signal-safe calls, no allocation.
fn place_fds(sources: &[RawFd], scratch: &mut [RawFd], first: RawFd, end: RawFd) -> io::Result<()> {
    for (&source, slot) in sources.iter().zip(scratch.iter_mut()) {
        // SAFETY: fcntl on an fd number; a bad one gives EBADF.
        let copy = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, end) };
        if copy == -1 {
            return Err(io::Error::last_os_error());
        }
        *slot = copy;
    }
    for (&copy, target) in scratch.iter().zip(first..) {
        // SAFETY: dup2 on fd numbers; it replaces whatever the child had at `target`.
        while unsafe { libc::dup2(copy, target) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Fills every free fd number in `range` with a close-on-exec copy of `any`, so nothing opened
/// meanwhile lands there; dropping the result frees them again.
fn occupy_free_fds(range: Range<RawFd>, any: BorrowedFd<'_>) -> io::Result<Vec<OwnedFd>> {
    let mut held = Vec::new();
    loop {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd (the lowest free one >= range.start) or -1.
        let fd = unsafe { libc::fcntl(any.as_raw_fd(), libc::F_DUPFD_CLOEXEC, range.start) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created for us and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if !range.contains(&fd) {
            return Ok(held);
        }
        held.push(owned);
    }
}

/// `/proc/self/exe` names a replaced executable `<path> (deleted)`; the successor should run
/// whatever is at `<path>` now.
fn strip_deleted(exe: PathBuf) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        if let Some(original) = exe.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
            return PathBuf::from(std::ffi::OsStr::from_bytes(original));
        }
    }
    exe
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::listen::tests::{fd_flags, localhost};
    use crate::listen::{bind, dup_listener};
    use std::os::fd::IntoRawFd;

    #[test]
    fn ready_pipe_writes_one_byte_and_closes() {
        let (mut reader, writer) = io::pipe().unwrap();
        let pipe = ReadyPipe::from_fd(OwnedFd::from(writer).into_raw_fd()).unwrap();
        pipe.signal().unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"1");

        let udp = std::net::UdpSocket::bind(localhost()).unwrap();
        let err = ReadyPipe::from_fd(udp.into_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a pipe"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn strip_deleted_recovers_the_installed_path() {
        assert_eq!(strip_deleted("/usr/bin/q (deleted)".into()), PathBuf::from("/usr/bin/q"));
        assert_eq!(strip_deleted("/usr/bin/q".into()), PathBuf::from("/usr/bin/q"));
    }

    /// Waits (bounded) until the successor is no longer Pending.
    pub(crate) fn wait_ready(successor: &mut Successor) -> ReadyState {
        let mut pfd = libc::pollfd { fd: successor.ready_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(n, 1, "successor said nothing within 10 s");
        successor.poll_ready().unwrap()
    }

    /// A python3 child that checks what it inherited: `QUIESCE_LISTEN_FDS` listening sockets at
    /// `FIRST` (passed in the environment), with the expected ports, the readiness pipe after
    /// them, none of them close-on-exec, and (on Linux) no other descriptors above stderr but those
    /// the test process itself inherited without close-on-exec (`INHERITED`).
    const CHECK_CHILD: &str = r#"
import fcntl, os, socket, sys
first = int(os.environ["FIRST"])
n = int(os.environ["QUIESCE_LISTEN_FDS"])
ready = int(os.environ["QUIESCE_READY_FD"])
assert ready == first + n, (ready, first, n)
assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ
ports = [int(p) for p in os.environ["PORTS"].split(",")]
for i, port in enumerate(ports):
    fd = first + i
    s = socket.socket(fileno=fd)
    assert s.getsockname()[1] == port, (fd, s.getsockname(), port)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1, fd
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC == 0, fd
    s.detach()
assert fcntl.fcntl(ready, fcntl.F_GETFD) & fcntl.FD_CLOEXEC == 0
if sys.platform.startswith("linux"):
    inherited = set(int(f) for f in os.environ["INHERITED"].split(",") if f)
    extra = set(int(f) for f in os.listdir("/proc/self/fd")) - {0, 1, 2, ready} - set(range(first, first + n))
    extra -= inherited
    assert len(extra) <= 1, extra  # the one listdir itself opened
os.write(ready, b"1")
"#;

    /// The fds above stderr this test process got without close-on-exec from whoever ran it
    /// (a spawned child inherits them too; ours are all close-on-exec).
    fn inherited_fds() -> Vec<String> {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
        dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
            .filter(|&fd| fd > 2 && fd_flags(fd) != -1 && fd_flags(fd) & libc::FD_CLOEXEC == 0)
            .map(|fd| fd.to_string())
            .collect()
    }

    fn python(script: &str) -> Command {
        let mut command = Command::new("python3");
        command.args(["-c", script]);
        command
    }

    fn run_check_child(first: Option<RawFd>, listeners: &[TcpListener]) {
        let ports: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().port().to_string()).collect();
        let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(AsFd::as_fd).collect();
        let first = first.unwrap_or(FIRST_INHERITED_FD);
        let mut command = python(CHECK_CHILD);
        command
            .env("FIRST", first.to_string())
            .env("PORTS", ports.join(","))
            .env("INHERITED", inherited_fds().join(","))
            .env("LISTEN_PID", "1");
        let mut successor = spawn_with_listeners(command, &fds, first).unwrap();
        assert_eq!(successor.poll_ready().unwrap(), ReadyState::Pending);
        assert_eq!(wait_ready(&mut successor), ReadyState::Ready);
        assert_eq!(successor.poll_ready().unwrap(), ReadyState::Ready, "stays ready");
        let status = successor.child.wait().unwrap();
        assert!(status.success(), "child checks failed: {status}");
    }

    #[test]
    fn successor_gets_the_listeners_at_3_and_the_pipe_after_them() {
        let listeners = [bind(localhost(), 16, false).unwrap(), bind(localhost(), 16, false).unwrap()];
        run_check_child(None, &listeners);
    }

    #[test]
    fn successor_fd_placement_survives_sources_inside_the_target_range() {
        // Target range starts at the second listener's fd: a naive in-order dup2 would overwrite
        // it with the first listener before moving it.
        let listeners = [bind(localhost(), 16, false).unwrap(), bind(localhost(), 16, false).unwrap()];
        let first = listeners[1].as_raw_fd();
        run_check_child(Some(first), &listeners);
        let reversed = [dup_listener(&listeners[1]).unwrap(), dup_listener(&listeners[0]).unwrap()];
        let first = reversed[0].as_raw_fd().min(reversed[1].as_raw_fd());
        run_check_child(Some(first), &reversed);
    }

    #[test]
    fn no_second_restart_once_a_successor_took_over() {
        let listener = bind(localhost(), 16, false).unwrap();
        let poll = Poll::new().unwrap();
        let handle = ShutdownHandle::new(Arc::new(Waker::new(poll.registry(), Token(0)).unwrap()));
        let restart = Restart::new(Copies::new(vec![dup_listener(&listener).unwrap()]), handle.clone(), None);
        assert!(restart.may_start(&Stage::Serving));
        // A successor that reports ready at once, watched as a SIGHUP's would be.
        let ready = "import os; os.write(int(os.environ['QUIESCE_READY_FD']), b'1')";
        let successor = spawn_with_listeners(python(ready), &[listener.as_fd()], FIRST_INHERITED_FD).unwrap();
        let pid = successor.id();
        super::wait_ready(successor, Poll::new().unwrap(), &handle, None, &restart.handed_over);
        // The handover is posted, but the loop has not acted on it: the stage is still Serving.
        assert!(!restart.may_start(&Stage::Serving), "a second SIGHUP would start a second successor");
        assert_eq!(handle.take_handover(), Some(pid));
    }

    #[test]
    fn a_workers_copy_goes_when_its_server_stops_or_goes() {
        let listeners = [bind(localhost(), 16, false).unwrap(), bind(localhost(), 16, false).unwrap()];
        let copies = Copies::new(listeners.iter().map(|l| dup_listener(l).unwrap()).collect());
        let open = |copies: &Copies| lock(&copies.0).iter().filter(|slot| slot.is_some()).count();
        let mut first = copies.keeper(0);
        first.stage_changed(&Stage::Serving);
        assert_eq!(open(&copies), 2);
        first.stage_changed(&Stage::Done {
            outcome: crate::server::Outcome::Stopped { signal: None, closed: 0 },
            drain: None,
        });
        assert_eq!(open(&copies), 1);
        drop(copies.keeper(1));
        assert_eq!(open(&copies), 0, "a worker that fails lets go of its copy too");
    }

    #[test]
    fn successor_that_exits_without_a_byte_failed() {
        let listener = bind(localhost(), 16, false).unwrap();
        let mut successor =
            spawn_with_listeners(python("raise SystemExit(3)"), &[listener.as_fd()], FIRST_INHERITED_FD).unwrap();
        assert_eq!(wait_ready(&mut successor), ReadyState::Failed);
        assert_eq!(successor.child.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn slow_successor_is_pending_until_killed() {
        let listener = bind(localhost(), 16, false).unwrap();
        let mut successor =
            spawn_with_listeners(python("import time; time.sleep(30)"), &[listener.as_fd()], FIRST_INHERITED_FD)
                .unwrap();
        assert_eq!(successor.poll_ready().unwrap(), ReadyState::Pending);
        assert!(successor.try_wait().unwrap().is_none());
        assert!(!successor.kill().unwrap().success());
        assert_eq!(wait_ready(&mut successor), ReadyState::Failed);
    }

    #[test]
    fn exec_failure_is_reported_when_the_target_range_was_free() {
        // With the target range at the lowest free fds, std's exec-error channel would be created
        // there and overwritten in the child, and a failed exec would pass for a started child.
        let listener = bind(localhost(), 16, false).unwrap();
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own (closed right away) or -1.
        let lowest_free = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_INHERITED_FD) };
        assert_ne!(lowest_free, -1);
        // SAFETY: we just created it.
        drop(unsafe { OwnedFd::from_raw_fd(lowest_free) });
        // The readiness pipe takes the two lowest free fds; std's channel would come next.
        let first = lowest_free + 2;
        let err = spawn_with_listeners(Command::new("/nonexistent/quiesce"), &[listener.as_fd()], first).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn successor_that_cannot_start_is_an_error() {
        let listener = bind(localhost(), 16, false).unwrap();
        let err = spawn_with_listeners(Command::new("/nonexistent/quiesce"), &[listener.as_fd()], FIRST_INHERITED_FD)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/quiesce"), "{err}");
        let err = spawn_with_listeners(Command::new("true"), &[], FIRST_INHERITED_FD).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
