//! Listening sockets: binding them ([`bind`]), taking them over from systemd socket activation or
//! from a restarting parent ([`inherited`]), and handing them to a successor process for a
//! zero-downtime restart ([`spawn_successor`]).
//!
//! The restart handoff mirrors systemd's protocol: the successor finds its `n` listening sockets
//! at fds 3..3+n (`QUIESCE_LISTEN_FDS=n`) and a pipe at fd 3+n (`QUIESCE_READY_FD`) on which it
//! writes one byte once it serves. The parent waits for that byte ([`Successor::poll_ready`])
//! before it stops accepting; a successor that dies first closes the pipe without a byte, and the
//! parent keeps serving. Unix only; the Linux-only checks are behind `cfg`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};

use socket2::{Domain, Protocol, Socket, Type};

/// The first inherited fd, in both protocols (`SD_LISTEN_FDS_START` in sd-daemon.h).
const FIRST_FD: RawFd = 3;

/// systemd: the pid the sockets are meant for.
const LISTEN_PID: &str = "LISTEN_PID";
/// systemd: how many sockets start at fd 3.
const LISTEN_FDS: &str = "LISTEN_FDS";
/// systemd: colon-separated names of those sockets (`FileDescriptorName=`).
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// Restart handoff: how many listening sockets start at fd 3.
const RESTART_FDS: &str = "QUIESCE_LISTEN_FDS";
/// Restart handoff: the fd of the readiness pipe's write end.
const READY_FD: &str = "QUIESCE_READY_FD";

/// Binds a non-blocking, close-on-exec TCP listener with `SO_REUSEADDR`, and `SO_REUSEPORT` when
/// `reuse_port` is set (so several workers can each bind their own socket to the same address;
/// Linux spreads connections over them, macOS does not).
pub(crate) fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let fail = |e: io::Error, step: &str| context(e, format_args!("{step} for {addr}"));
    // socket2 opens with SOCK_CLOEXEC (or sets FD_CLOEXEC where that flag does not exist).
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|e| fail(e, "socket"))?;
    socket.set_reuse_address(true).map_err(|e| fail(e, "SO_REUSEADDR"))?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(|e| fail(e, "SO_REUSEPORT"))?;
    }
    socket.bind(&addr.into()).map_err(|e| fail(e, "bind"))?;
    socket.listen(backlog).map_err(|e| fail(e, "listen"))?;
    socket.set_nonblocking(true).map_err(|e| fail(e, "O_NONBLOCK"))?;
    Ok(socket.into())
}

/// A second fd for the same listening socket (close-on-exec, sharing the accept queue and the
/// non-blocking flag), e.g. one per worker.
pub(crate) fn dup_listener(listener: &TcpListener) -> io::Result<TcpListener> {
    listener.try_clone().map_err(|e| context(e, "duplicating a listening socket"))
}

/// Where inherited sockets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// systemd socket activation (`LISTEN_PID`, `LISTEN_FDS`).
    Systemd,
    /// A parent quiesce restarting on SIGHUP (`QUIESCE_LISTEN_FDS`, `QUIESCE_READY_FD`).
    Restart,
}

/// Listening sockets received at startup.
#[derive(Debug)]
pub(crate) struct Inherited {
    /// The sockets, in fd order: non-blocking, close-on-exec, verified listening TCP sockets.
    pub(crate) listeners: Vec<TcpListener>,
    /// For a restart: the pipe to signal once serving.
    pub(crate) ready: Option<ReadyPipe>,
    /// Who passed them.
    pub(crate) source: Source,
    /// systemd's `LISTEN_FDNAMES`, one per listener when present and well-formed (for logging).
    pub(crate) names: Vec<String>,
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
    fn from_fd(fd: RawFd) -> io::Result<ReadyPipe> {
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

/// Takes over the listening sockets passed by systemd or by a restarting parent, if any, and
/// removes the protocol's environment variables (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`,
/// `QUIESCE_LISTEN_FDS`, `QUIESCE_READY_FD`) in every case, so no child inherits them.
///
/// Call it first thing in `main`: it changes the environment, which is only sound while the
/// process has a single thread, and it assumes ownership of fds 3.. that nothing else may have
/// touched. Nothing is logged here (the logger may not be up yet): log [`Inherited::source`] and
/// [`Inherited::names`] yourself.
pub(crate) fn inherited() -> io::Result<Option<Inherited>> {
    let env = EnvVars::read();
    for name in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, RESTART_FDS, READY_FD] {
        // SAFETY: the caller runs this first thing in `main`, before any thread is spawned, so no
        // other thread can be reading or writing the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    let Some(plan) = plan(&env, std::process::id())? else { return Ok(None) };
    let listeners = plan.fds.clone().map(listener_from_fd).collect::<io::Result<Vec<_>>>()?;
    let ready = plan.ready.map(ReadyPipe::from_fd).transpose()?;
    Ok(Some(Inherited { listeners, ready, source: plan.source, names: plan.names }))
}

/// The protocol's environment variables, read once.
#[derive(Debug, Default)]
struct EnvVars {
    listen_pid: Option<OsString>,
    listen_fds: Option<OsString>,
    listen_fdnames: Option<OsString>,
    restart_fds: Option<OsString>,
    ready_fd: Option<OsString>,
}

impl EnvVars {
    fn read() -> EnvVars {
        EnvVars {
            listen_pid: std::env::var_os(LISTEN_PID),
            listen_fds: std::env::var_os(LISTEN_FDS),
            listen_fdnames: std::env::var_os(LISTEN_FDNAMES),
            restart_fds: std::env::var_os(RESTART_FDS),
            ready_fd: std::env::var_os(READY_FD),
        }
    }
}

/// Which fds to take over, decided from the environment alone.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    fds: Range<RawFd>,
    ready: Option<RawFd>,
    source: Source,
    names: Vec<String>,
}

/// Reads the two protocols. systemd's applies only when `LISTEN_PID` is our pid (as
/// `sd_listen_fds` does); ours has no pid check (the parent cannot know the child's pid before
/// exec). Both at once, or a malformed value, is an error rather than a guess.
fn plan(env: &EnvVars, pid: u32) -> io::Result<Option<Plan>> {
    let systemd = match (&env.listen_pid, &env.listen_fds) {
        (Some(for_pid), Some(count)) if parse::<u32>(LISTEN_PID, for_pid)? == pid => {
            Some(parse::<usize>(LISTEN_FDS, count)?).filter(|&n| n > 0)
        }
        _ => None,
    };
    let restart = env.restart_fds.as_deref().map(|n| parse::<usize>(RESTART_FDS, n)).transpose()?;
    match (systemd, restart) {
        (Some(_), Some(_)) => Err(invalid(format!("both {LISTEN_FDS} (systemd) and {RESTART_FDS} are set"))),
        (None, None) if env.ready_fd.is_some() => Err(invalid(format!("{READY_FD} is set without {RESTART_FDS}"))),
        (None, None) => Ok(None),
        (Some(n), None) => {
            let fds = fd_range(n, LISTEN_FDS)?;
            let names = env
                .listen_fdnames
                .as_deref()
                .map(|s| s.to_string_lossy().split(':').map(str::to_owned).collect::<Vec<_>>())
                .filter(|names| names.len() == n)
                .unwrap_or_default();
            Ok(Some(Plan { fds, ready: None, source: Source::Systemd, names }))
        }
        (None, Some(0)) => Err(invalid(format!("{RESTART_FDS}=0: a restart passes at least one socket"))),
        (None, Some(n)) => {
            let fds = fd_range(n, RESTART_FDS)?;
            let ready = env.ready_fd.as_deref().map(|v| parse::<RawFd>(READY_FD, v)).transpose()?;
            if let Some(fd) = ready
                && (fd < FIRST_FD || fds.contains(&fd))
            {
                return Err(invalid(format!("{READY_FD}={fd} is not a free fd above the {n} listening sockets")));
            }
            Ok(Some(Plan { fds, ready, source: Source::Restart, names: Vec::new() }))
        }
    }
}

/// fds 3..3+n, if those are valid fd numbers.
fn fd_range(n: usize, var: &str) -> io::Result<Range<RawFd>> {
    RawFd::try_from(n)
        .ok()
        .and_then(|n| FIRST_FD.checked_add(n))
        .map(|end| FIRST_FD..end)
        .ok_or_else(|| invalid(format!("{var}={n} is too large")))
}

/// Parses a number from an environment variable, naming it in the error.
fn parse<T: std::str::FromStr>(var: &str, value: &OsStr) -> io::Result<T> {
    value.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| invalid(format!("{var}={value:?} is not a number")))
}

/// Takes ownership of an inherited fd after checking it is an open, listening, IPv4/IPv6 stream
/// socket; makes it close-on-exec and non-blocking.
fn listener_from_fd(fd: RawFd) -> io::Result<TcpListener> {
    let socket = Socket::from(take_fd(fd)?);
    let ctx = |e: io::Error| context(e, format_args!("inherited fd {fd}"));
    let kind = socket.r#type().map_err(|e| context(e, format_args!("inherited fd {fd} is not a socket")))?;
    if kind != Type::STREAM {
        return Err(invalid(format!("inherited fd {fd} is not a stream socket")));
    }
    if !is_listening(&socket).map_err(ctx)? {
        return Err(invalid(format!("inherited fd {fd} is not listening")));
    }
    let addr = socket.local_addr().map_err(ctx)?;
    if addr.as_socket().is_none() {
        return Err(invalid(format!("inherited fd {fd} is not a TCP socket (a unix socket?)")));
    }
    socket.set_cloexec(true).map_err(ctx)?;
    socket.set_nonblocking(true).map_err(ctx)?;
    Ok(socket.into())
}

/// `SO_ACCEPTCONN`: whether `listen` was called on the socket (Linux and macOS both have it).
fn is_listening(socket: &Socket) -> io::Result<bool> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` is the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut value).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(value != 0) }
}

/// Checks that `fd` is open and takes ownership of it.
fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < FIRST_FD {
        return Err(invalid(format!("inherited fd {fd} is stdin, stdout or stderr")));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(context(io::Error::last_os_error(), format_args!("inherited fd {fd}")));
    }
    // SAFETY: the fd is open, and the handoff protocol gives it to us: `inherited` runs first
    // thing in `main`, so nothing else in this process has claimed it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets `FD_CLOEXEC`, keeping the other descriptor flags.
fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we borrow; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags == -1 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets `O_NONBLOCK`, keeping the other file status flags.
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we borrow; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags == -1 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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
    spawn_with_listeners(command, listeners, FIRST_FD)
}

/// Runs `command` with `listeners` at fds `first..first+n` and the readiness pipe's write end
/// at `first+n` (`first` is 3 but for tests).
fn spawn_with_listeners(mut command: Command, listeners: &[BorrowedFd<'_>], first: RawFd) -> io::Result<Successor> {
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
            return PathBuf::from(OsStr::from_bytes(original));
        }
    }
    exe
}

/// An `InvalidInput` error with a message.
fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// `e` with what we were doing in front, keeping its kind.
fn context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::os::fd::IntoRawFd;
    use std::time::{Duration, Instant};

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn fd_flags(fd: RawFd) -> i32 {
        // SAFETY: test helper; F_GETFD reads flags only.
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    }

    fn status_flags(fd: RawFd) -> i32 {
        // SAFETY: test helper; F_GETFL reads flags only.
        unsafe { libc::fcntl(fd, libc::F_GETFL) }
    }

    #[test]
    fn bind_gives_a_nonblocking_cloexec_listener() {
        let listener = bind(localhost(), 16, false).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(fd_flags(listener.as_raw_fd()) & libc::FD_CLOEXEC != 0);
        assert!(status_flags(listener.as_raw_fd()) & libc::O_NONBLOCK != 0);
        assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let _client = TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match listener.accept() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn bind_error_names_the_address() {
        let first = bind(localhost(), 16, false).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, 16, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reuse_port_binds_the_same_port_twice() {
        let first = bind(localhost(), 16, true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, 16, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }

    #[test]
    fn dup_listener_shares_the_socket() {
        let listener = bind(localhost(), 16, false).unwrap();
        let copy = dup_listener(&listener).unwrap();
        assert_ne!(copy.as_raw_fd(), listener.as_raw_fd());
        assert_eq!(copy.local_addr().unwrap(), listener.local_addr().unwrap());
        assert!(fd_flags(copy.as_raw_fd()) & libc::FD_CLOEXEC != 0);
    }

    fn env(pairs: &[(&str, &str)]) -> EnvVars {
        let mut env = EnvVars::default();
        for &(name, value) in pairs {
            let slot = match name {
                LISTEN_PID => &mut env.listen_pid,
                LISTEN_FDS => &mut env.listen_fds,
                LISTEN_FDNAMES => &mut env.listen_fdnames,
                RESTART_FDS => &mut env.restart_fds,
                READY_FD => &mut env.ready_fd,
                _ => unreachable!("{name}"),
            };
            *slot = Some(value.into());
        }
        env
    }

    #[test]
    fn plan_reads_systemd_activation_for_our_pid_only() {
        let ours = env(&[(LISTEN_PID, "42"), (LISTEN_FDS, "2"), (LISTEN_FDNAMES, "http:https")]);
        let plan = plan(&ours, 42).unwrap().unwrap();
        assert_eq!(
            plan,
            Plan { fds: 3..5, ready: None, source: Source::Systemd, names: vec!["http".into(), "https".into()] }
        );
        assert_eq!(super::plan(&ours, 43).unwrap(), None);
        assert_eq!(super::plan(&env(&[(LISTEN_FDS, "2")]), 42).unwrap(), None, "no LISTEN_PID");
        assert_eq!(super::plan(&env(&[(LISTEN_PID, "42"), (LISTEN_FDS, "0")]), 42).unwrap(), None);
        let odd_names = env(&[(LISTEN_PID, "42"), (LISTEN_FDS, "2"), (LISTEN_FDNAMES, "one")]);
        assert!(super::plan(&odd_names, 42).unwrap().unwrap().names.is_empty());
    }

    #[test]
    fn plan_reads_the_restart_handoff() {
        let plan = plan(&env(&[(RESTART_FDS, "2"), (READY_FD, "5")]), 1).unwrap().unwrap();
        assert_eq!(plan, Plan { fds: 3..5, ready: Some(5), source: Source::Restart, names: vec![] });
        let no_pipe = super::plan(&env(&[(RESTART_FDS, "1")]), 1).unwrap().unwrap();
        assert_eq!(no_pipe.ready, None);
        assert_eq!(no_pipe.fds, 3..4);
    }

    #[test]
    fn plan_rejects_nonsense() {
        for bad in [
            env(&[(LISTEN_PID, "x"), (LISTEN_FDS, "1")]),
            env(&[(LISTEN_PID, "42"), (LISTEN_FDS, "-1")]),
            env(&[(LISTEN_PID, "42"), (LISTEN_FDS, "99999999999")]),
            env(&[(LISTEN_PID, "42"), (LISTEN_FDS, "1"), (RESTART_FDS, "1")]),
            env(&[(READY_FD, "4")]),
            env(&[(RESTART_FDS, "0")]),
            env(&[(RESTART_FDS, "two")]),
            env(&[(RESTART_FDS, "2"), (READY_FD, "4")]),
            env(&[(RESTART_FDS, "2"), (READY_FD, "1")]),
        ] {
            let err = plan(&bad, 42).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {err}");
        }
    }

    #[test]
    fn listener_from_fd_accepts_a_listening_tcp_socket() {
        let blocking = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        blocking.bind(&localhost().into()).unwrap();
        blocking.listen(4).unwrap();
        let addr = blocking.local_addr().unwrap().as_socket().unwrap();
        let fd = blocking.into_raw_fd();
        assert_eq!(status_flags(fd) & libc::O_NONBLOCK, 0);
        let taken = listener_from_fd(fd).unwrap();
        assert_eq!(taken.as_raw_fd(), fd);
        assert_eq!(taken.local_addr().unwrap(), addr);
        // (Clearing FD_CLOEXEC first would prove it gets set, but would leak the fd into the
        // children other tests spawn meanwhile.)
        assert!(fd_flags(fd) & libc::FD_CLOEXEC != 0);
        assert!(status_flags(fd) & libc::O_NONBLOCK != 0);
    }

    #[test]
    fn listener_from_fd_rejects_other_descriptors() {
        let bound_only = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        bound_only.bind(&localhost().into()).unwrap();
        let err = listener_from_fd(bound_only.into_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not listening"), "{err}");

        let udp = std::net::UdpSocket::bind(localhost()).unwrap();
        let err = listener_from_fd(udp.into_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a stream socket"), "{err}");

        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = listener_from_fd(unix.into_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not listening"), "{err}");

        let dir = std::env::temp_dir().join(format!("quiesce-listen-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix_listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let err = listener_from_fd(unix_listener.into_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a TCP socket"), "{err}");
        let _ = std::fs::remove_file(&dir);

        let (reader, _writer) = io::pipe().unwrap();
        let err = listener_from_fd(OwnedFd::from(reader).into_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }

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
    fn wait_ready(successor: &mut Successor) -> ReadyState {
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
        let first = first.unwrap_or(FIRST_FD);
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

    /// What a child test prints (run with `--nocapture`) once its checks passed, so the parent
    /// can tell them from a child that skipped them.
    const CHILD_CHECKED: &str = "child checks passed";

    /// Set for the copy of this test binary that `restart_handoff_end_to_end` starts.
    const CHILD_MODE: &str = "QUIESCE_LISTEN_TEST_CHILD";

    /// The child half of `restart_handoff_end_to_end`; passes trivially in a normal run.
    #[test]
    fn restart_handoff_child() {
        if std::env::var_os(CHILD_MODE).is_none() {
            return;
        }
        // In the child the harness runs only this test, its main thread blocked until it ends,
        // so nothing else reads the environment `inherited` changes.
        let inherited = inherited().unwrap().expect("sockets from the parent");
        assert_eq!(inherited.source, Source::Restart);
        for name in [RESTART_FDS, READY_FD, LISTEN_PID] {
            assert!(std::env::var_os(name).is_none(), "{name} still set");
        }
        let ports: Vec<String> =
            inherited.listeners.iter().map(|l| l.local_addr().unwrap().port().to_string()).collect();
        assert_eq!(ports.join(","), std::env::var("PORTS").unwrap());
        for listener in &inherited.listeners {
            assert!(fd_flags(listener.as_raw_fd()) & libc::FD_CLOEXEC != 0);
            assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        }
        inherited.ready.expect("a readiness pipe").signal().unwrap();
        println!("{CHILD_CHECKED}");
    }

    #[test]
    fn restart_handoff_end_to_end() {
        let listeners = [bind(localhost(), 16, false).unwrap(), bind(localhost(), 16, false).unwrap()];
        let ports: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().port().to_string()).collect();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "listen::tests::restart_handoff_child", "--test-threads=1", "--nocapture"])
            .env(CHILD_MODE, "1")
            .env("PORTS", ports.join(","))
            .env(LISTEN_FDS, "7")
            .stdout(std::process::Stdio::piped());
        let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(AsFd::as_fd).collect();
        let mut successor = spawn_with_listeners(command, &fds, FIRST_FD).unwrap();
        let state = wait_ready(&mut successor);
        let mut output = String::new();
        successor.child.stdout.take().unwrap().read_to_string(&mut output).unwrap();
        let status = successor.child.wait().unwrap();
        assert_eq!(state, ReadyState::Ready, "{output}");
        assert!(status.success() && output.contains(CHILD_CHECKED), "{status}: {output}");
    }

    /// Set for the copy of this test binary that `systemd_activation_end_to_end` starts.
    const SYSTEMD_CHILD_MODE: &str = "QUIESCE_LISTEN_TEST_SYSTEMD_CHILD";

    /// The child half of `systemd_activation_end_to_end`; passes trivially in a normal run.
    #[test]
    fn systemd_activation_child() {
        if std::env::var_os(SYSTEMD_CHILD_MODE).is_none() {
            return;
        }
        // As in `restart_handoff_child`: the only test running in this process.
        let inherited = inherited().unwrap().expect("sockets from systemd-socket-activate");
        assert_eq!(inherited.source, Source::Systemd);
        assert!(inherited.ready.is_none());
        assert_eq!(inherited.names, ["web"]);
        assert!(std::env::var_os(LISTEN_FDS).is_none() && std::env::var_os(LISTEN_PID).is_none());
        let [listener] = &inherited.listeners[..] else { panic!("{:?}", inherited.listeners) };
        assert_eq!(listener.local_addr().unwrap().port().to_string(), std::env::var("PORT").unwrap());
        // The connection that triggered the activation waits in the backlog.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = listener.accept() {
            assert!(e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline, "accept: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("{CHILD_CHECKED}");
    }

    /// Real socket activation, when systemd's `systemd-socket-activate` is installed.
    #[test]
    fn systemd_activation_end_to_end() {
        let Ok(status) = Command::new("systemd-socket-activate").arg("--version").output() else {
            eprintln!("skipped: systemd-socket-activate is not installed (.ci/run installs it when it can)");
            return;
        };
        assert!(status.status.success());
        let port = bind(localhost(), 1, false).unwrap().local_addr().unwrap().port();
        let mut activator = Command::new("systemd-socket-activate")
            // It passes on only the environment given with -E.
            .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=web", "-E", &format!("{SYSTEMD_CHILD_MODE}=1")])
            .args(["-E", &format!("PORT={port}")])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "listen::tests::systemd_activation_child", "--test-threads=1", "--nocapture"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // systemd-socket-activate listens, then execs the child on the first connection.
        let _client = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("connect: {e}"),
            }
        };
        let status = loop {
            if let Some(status) = activator.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                activator.kill().unwrap();
                panic!("activated child did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut output = String::new();
        activator.stdout.take().unwrap().read_to_string(&mut output).unwrap();
        assert!(status.success() && output.contains(CHILD_CHECKED), "{status}: {output}");
    }

    #[test]
    fn successor_that_exits_without_a_byte_failed() {
        let listener = bind(localhost(), 16, false).unwrap();
        let mut successor = spawn_with_listeners(python("raise SystemExit(3)"), &[listener.as_fd()], FIRST_FD).unwrap();
        assert_eq!(wait_ready(&mut successor), ReadyState::Failed);
        assert_eq!(successor.child.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn slow_successor_is_pending_until_killed() {
        let listener = bind(localhost(), 16, false).unwrap();
        let mut successor =
            spawn_with_listeners(python("import time; time.sleep(30)"), &[listener.as_fd()], FIRST_FD).unwrap();
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
        let lowest_free = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_FD) };
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
        let err =
            spawn_with_listeners(Command::new("/nonexistent/quiesce"), &[listener.as_fd()], FIRST_FD).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/quiesce"), "{err}");
        let err = spawn_with_listeners(Command::new("true"), &[], FIRST_FD).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
