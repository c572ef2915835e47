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
