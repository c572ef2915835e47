//! Listening sockets and the descriptors around them: binding a listener ([`bind`]), a second
//! descriptor of one ([`dup_listener`]), taking over an inherited one after checking what it is
//! ([`listener_from_fd`]), and the few descriptor flags quiesce sets. Unix only; the Linux-only
//! calls are behind `cfg`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// The first inherited fd, in systemd's protocol and quiesce's restart handoff alike
/// (`SD_LISTEN_FDS_START` in sd-daemon.h).
pub(crate) const FIRST_INHERITED_FD: RawFd = 3;

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

/// Most output a connection leaves unsent in the kernel (`TCP_NOTSENT_LOWAT`): past it a write
/// takes no more, so what a client does not take backs up into quiesce's own buffers, where a
/// stream's producer sees it (`try_send` answers `Full`) instead of the kernel soaking up
/// megabytes for a client that stopped reading. Bytes in flight are not counted (the client's
/// receive window bounds them), so a fast client's throughput does not depend on it: the
/// kernel wakes the loop to write more while this much is still queued.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
pub(crate) const UNSENT_LIMIT: u32 = 128 * 1024;

/// Sets [`UNSENT_LIMIT`] on a listener; the connections it accepts inherit it (Linux). Where
/// the option does not exist, or the kernel refuses it, output is bounded by the socket buffer
/// only, as before.
pub(crate) fn limit_unsent(listener: &TcpListener) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let value = UNSENT_LIMIT as libc::c_int;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!("TCP_NOTSENT_LOWAT not set: {}", io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = listener;
}

/// A second fd for the same listening socket (close-on-exec, sharing the accept queue and the
/// non-blocking flag), e.g. one per worker.
pub(crate) fn dup_listener(listener: &TcpListener) -> io::Result<TcpListener> {
    listener.try_clone().map_err(|e| context(e, "duplicating a listening socket"))
}

/// Takes ownership of an inherited fd after checking it is an open, listening, IPv4/IPv6 stream
/// socket; makes it close-on-exec and non-blocking.
pub(crate) fn listener_from_fd(fd: RawFd) -> io::Result<TcpListener> {
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
pub(crate) fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < FIRST_INHERITED_FD {
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
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
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
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we borrow; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags == -1 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An `InvalidInput` error with a message.
pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// `e` with what we were doing in front, keeping its kind.
pub(crate) fn context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::os::fd::IntoRawFd;
    use std::time::{Duration, Instant};

    pub(crate) fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    pub(crate) fn fd_flags(fd: RawFd) -> i32 {
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
}
