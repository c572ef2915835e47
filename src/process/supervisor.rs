//! [`Supervisor`]: what the process hears from its leading server (worker 0) and does about
//! it, outside the reactor: systemd is told when the service stops and how the drain goes
//! (`STOPPING=1`, `STATUS=draining: N active` over every worker), and SIGHUP starts a
//! [`Restart`]. The other workers follow the leader through their own observers (their
//! shutdown handles), not through this one.

use std::sync::Arc;

use super::restart::Restart;
use super::systemd::Notifier;
use crate::metrics::Registry;
use crate::server::stage::{Cause, Observer, Stage};

/// The process's observer of its leading server.
pub(crate) struct Supervisor {
    systemd: Option<Systemd>,
    restart: Option<Restart>,
}

/// systemd's notification socket, and every worker's metrics for its status lines.
struct Systemd {
    notifier: Arc<Notifier>,
    registry: Registry,
    /// `STOPPING=1` was sent.
    stopping: bool,
    /// The active count last sent in a status line.
    last_active: Option<u64>,
}

impl Supervisor {
    /// Tells systemd through `notifier` (with the counts of every worker in `registry`), and
    /// restarts on SIGHUP with `restart`; either may be absent.
    pub(crate) fn new(notifier: Option<Arc<Notifier>>, registry: Registry, restart: Option<Restart>) -> Self {
        let systemd = notifier.map(|notifier| Systemd { notifier, registry, stopping: false, last_active: None });
        Supervisor { systemd, restart }
    }
}

impl Observer for Supervisor {
    fn stage_changed(&mut self, stage: &Stage) {
        // A restart hands the service over rather than stopping it.
        let stops = match stage {
            Stage::Serving => false,
            Stage::Announced { .. } => true,
            Stage::Draining(drain) => !matches!(drain.cause, Cause::Restart(_)),
            Stage::Done { .. } => false,
        };
        if let Some(systemd) = self.systemd.as_mut()
            && stops
            && !systemd.stopping
        {
            systemd.stopping = true;
            systemd.notifier.stopping();
        }
        if matches!(stage, Stage::Draining(_) | Stage::Done { .. })
            && let Some(restart) = self.restart.as_mut()
        {
            restart.release();
        }
    }

    /// Tells systemd how many connections (over every worker) are still active, when it changed.
    fn drain_progress(&mut self) {
        let Some(systemd) = self.systemd.as_mut() else { return };
        let active: u64 = systemd.registry.workers().iter().map(|m| m.active()).sum();
        if systemd.last_active != Some(active) {
            systemd.last_active = Some(active);
            systemd.notifier.status(&format!("draining: {active} active"));
        }
    }

    fn restart(&mut self, stage: &Stage) -> bool {
        let Some(restart) = self.restart.as_mut() else { return false };
        restart.start(stage);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::restart::Copies;
    use crate::{ConnState, Reply, Request, Response, Server, ServerConfig};
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A client that connects once the drain began is refused, not queued on the socket that
    /// the restart's copy keeps listening (to be reset when the copy goes).
    #[test]
    fn a_client_that_comes_once_the_drain_began_is_refused() {
        let listener = crate::listen::bind("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = listener.local_addr().unwrap();
        let copies = Copies::new(vec![listener.try_clone().unwrap()]);
        let config = ServerConfig { handle_signals: false, max_connections: 1, ..ServerConfig::DEFAULT };
        let mut server =
            Server::from_listener(listener, config, |_: &Request<'_>, _: &mut Response| Reply::Now).unwrap();
        let handle = server.shutdown_handle();
        let restart = Restart::new(copies.clone(), handle.clone(), None);
        server.observe(Box::new(copies.keeper(0)));
        server.observe(Box::new(Supervisor::new(None, Registry::new(vec![]), Some(restart))));
        let (accepted, news) = mpsc::channel();
        let (late, late_result) = mpsc::channel();
        let mut new_ones = 0;
        server.on_state_change(move |change| {
            if change.to == ConnState::New {
                new_ones += 1;
                match new_ones {
                    1 => accepted.send(()).unwrap(),
                    // The one from the backlog, taken as the drain closes the listener.
                    _ => late.send(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| ())).unwrap(),
                }
            }
        });
        let thread = std::thread::spawn(move || server.run());
        let _first = TcpStream::connect(addr).unwrap();
        news.recv_timeout(Duration::from_secs(5)).expect("the first connection is accepted");
        // At the cap now: the second one waits in the backlog.
        let _second = TcpStream::connect(addr).unwrap();
        handle.drain_now();
        let result = late_result.recv_timeout(Duration::from_secs(5)).expect("the backlog is taken at the drain");
        let error = result.expect_err("a connect during the drain was accepted");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
        handle.immediate();
        thread.join().unwrap().unwrap();
    }
}
