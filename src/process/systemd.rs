//! systemd without libsystemd: the names of socket activation's environment variables, and
//! `sd_notify`: one datagram per state change to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for Linux's abstract namespace). Failures are logged once
//! and otherwise ignored: a server must not stop because its supervisor cannot hear it.
//!
//! The SIGHUP restart changes the service's main process. systemd (default
//! `NotifyAccess=main` for `Type=notify`) only listens to the main process, so the old process
//! announces its successor ([`Notifier::handoff`]: `MAINPID=<new>` and `READY=1`) once the
//! successor has signalled readiness over the pipe, and says nothing afterwards; the successor
//! stays silent until then. After the handoff the draining old process no longer speaks for the
//! service (under `NotifyAccess=all` its `STOPPING=1` would stop the successor's service too).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::warn;

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Socket activation: the pid the sockets are meant for.
pub(crate) const LISTEN_PID: &str = "LISTEN_PID";
/// Socket activation: how many sockets start at fd 3.
pub(crate) const LISTEN_FDS: &str = "LISTEN_FDS";
/// Socket activation: colon-separated names of those sockets (`FileDescriptorName=`).
pub(crate) const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// Longest a notification may block when systemd's queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends state changes to systemd.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// A send failed and was logged; later failures are not.
    warned: AtomicBool,
    /// We handed the main-process role to a successor: systemd no longer listens to us.
    handed_off: AtomicBool,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or None when it is unset or empty (not run by systemd,
    /// or not `Type=notify`). An unusable value is logged and gives None. The variable is left
    /// set, so a restarted successor inherits it.
    pub(crate) fn from_env() -> Option<Notifier> {
        let value = std::env::var_os(NOTIFY_SOCKET).filter(|v| !v.is_empty())?;
        match Notifier::new(&value) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                warn!("ignoring {NOTIFY_SOCKET}={value:?}: {e}");
                None
            }
        }
    }

    /// A notifier for a `NOTIFY_SOCKET` value: an absolute path, or `@name` (Linux only).
    pub(crate) fn new(value: &OsStr) -> io::Result<Notifier> {
        let addr = parse_addr(value)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier { socket, addr, warned: AtomicBool::new(false), handed_off: AtomicBool::new(false) })
    }

    /// Startup is complete: `READY=1`. A successor started by a restart does not send it (the
    /// old process does, in [`Notifier::handoff`]).
    pub(crate) fn ready(&self) {
        self.send("READY=1");
    }

    /// A graceful drain started: `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// A restart started: `RELOADING=1` with the `MONOTONIC_USEC=` systemd 253+ wants beside it.
    /// systemd shows the service as reloading until the next `READY=1` ([`Notifier::handoff`]
    /// on success, [`Notifier::ready`] when the successor failed).
    pub(crate) fn reloading(&self) {
        match crate::timer::monotonic_nanos() {
            Ok(nanos) => {
                let usec = nanos / 1_000;
                self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
            }
            Err(_) => self.send("RELOADING=1"),
        }
    }

    /// A free-form status line (`systemctl status` shows it); newlines become spaces.
    pub(crate) fn status(&self, line: &str) {
        let line: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        self.send(&format!("STATUS={line}"));
    }

    /// The successor `pid` serves now: `MAINPID=<pid>` and `READY=1` (ending a reload). systemd
    /// accepts it because it comes from the current main process and `pid` is in the service's
    /// cgroup. Every later call on this notifier is a no-op: systemd would ignore (and log) what
    /// a non-main process says, or worse, act on it.
    pub(crate) fn handoff(&self, pid: u32) {
        self.send(&format!("MAINPID={pid}\nREADY=1"));
        self.handed_off.store(true, Ordering::Relaxed);
    }

    /// Sends one datagram; logs the first failure only.
    fn send(&self, message: &str) {
        if self.handed_off.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            let first = message.lines().next().unwrap_or_default();
            warn!("cannot notify systemd ({first}): {e}; further failures are not logged");
        }
    }
}

/// `NOTIFY_SOCKET`'s value as an address.
fn parse_addr(value: &OsStr) -> io::Result<SocketAddr> {
    match value.as_bytes() {
        [b'/', ..] => SocketAddr::from_pathname(Path::new(value)),
        [b'@', name @ ..] => abstract_addr(name),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "neither an absolute path nor an @abstract name")),
    }
}

/// An address in Linux's abstract namespace.
#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

/// Abstract socket names exist only on Linux.
#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix socket names exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// A datagram socket bound in a fresh temp directory, removed on drop.
    struct Listener {
        dir: PathBuf,
        socket: UnixDatagram,
    }

    impl Listener {
        fn new() -> Listener {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("quiesce-notify-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Listener { dir, socket }
        }

        fn path(&self) -> PathBuf {
            self.dir.join("notify")
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 512];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn nothing_pending(&self) -> bool {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let empty = self.socket.recv(&mut buf).unwrap_err().kind() == io::ErrorKind::WouldBlock;
            self.socket.set_nonblocking(false).unwrap();
            empty
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn sends_one_datagram_per_state() {
        let listener = Listener::new();
        let notifier = Notifier::new(listener.path().as_os_str()).unwrap();
        notifier.ready();
        assert_eq!(listener.recv(), "READY=1");
        notifier.status("draining 3\nREADY=1");
        assert_eq!(listener.recv(), "STATUS=draining 3 READY=1");
        notifier.stopping();
        assert_eq!(listener.recv(), "STOPPING=1");
        notifier.reloading();
        let reloading = listener.recv();
        let usec = reloading.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap();
        assert!(usec.parse::<u64>().unwrap() > 0, "{reloading}");
        assert!(listener.nothing_pending());
    }

    #[test]
    fn handoff_names_the_successor_then_goes_quiet() {
        let listener = Listener::new();
        let notifier = Notifier::new(listener.path().as_os_str()).unwrap();
        notifier.handoff(4242);
        assert_eq!(listener.recv(), "MAINPID=4242\nREADY=1");
        notifier.stopping();
        notifier.status("gone");
        assert!(listener.nothing_pending());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_work_on_linux() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("quiesce-notify-test-{}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.ready();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_missing_socket_is_logged_not_fatal() {
        let listener = Listener::new();
        let notifier = Notifier::new(listener.dir.join("absent").as_os_str()).unwrap();
        notifier.ready();
        notifier.stopping();
        assert!(notifier.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn relative_paths_are_refused() {
        for bad in ["notify", "", "vsock:2:1234"] {
            assert_eq!(Notifier::new(OsStr::new(bad)).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
