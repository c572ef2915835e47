//! What a process finds at startup: listening sockets passed by systemd socket activation
//! (`LISTEN_PID`, `LISTEN_FDS`) or by a quiesce that restarted into this one (`QUIESCE_LISTEN_FDS`,
//! with the readiness pipe of [`restart`](super::restart)), read from the environment once and
//! taken over after checking each descriptor.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::TcpListener;
use std::ops::Range;
use std::os::fd::RawFd;

use super::restart::{READY_FD, RESTART_FDS, ReadyPipe};
use super::systemd::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID};
use crate::listen::{FIRST_INHERITED_FD, invalid, listener_from_fd};

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
                && (fd < FIRST_INHERITED_FD || fds.contains(&fd))
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
        .and_then(|n| FIRST_INHERITED_FD.checked_add(n))
        .map(|end| FIRST_INHERITED_FD..end)
        .ok_or_else(|| invalid(format!("{var}={n} is too large")))
}

/// Parses a number from an environment variable, naming it in the error.
fn parse<T: std::str::FromStr>(var: &str, value: &OsStr) -> io::Result<T> {
    value.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| invalid(format!("{var}={value:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::bind;
    use crate::listen::tests::{fd_flags, localhost};
    use crate::process::restart::tests::wait_ready;
    use crate::process::restart::{ReadyState, spawn_with_listeners};
    use std::io::Read;
    use std::net::TcpStream;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    use std::process::Command;
    use std::time::{Duration, Instant};

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
            .args(["--exact", "process::inherit::tests::restart_handoff_child", "--test-threads=1", "--nocapture"])
            .env(CHILD_MODE, "1")
            .env("PORTS", ports.join(","))
            .env(LISTEN_FDS, "7")
            .stdout(std::process::Stdio::piped());
        let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(AsFd::as_fd).collect();
        let mut successor = spawn_with_listeners(command, &fds, FIRST_INHERITED_FD).unwrap();
        let state = wait_ready(&mut successor);
        let mut output = String::new();
        successor.child().stdout.take().unwrap().read_to_string(&mut output).unwrap();
        let status = successor.child().wait().unwrap();
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
            .args(["--exact", "process::inherit::tests::systemd_activation_child", "--test-threads=1", "--nocapture"])
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
}
