//! What the loop lends a connection while it works, in the parts the steps use: the turn (its
//! clock and the shutdown as connections see it), the limits, what answers requests, the loop's
//! stores and its logs. A step is handed the parts it reads (reading the socket: the clock, the
//! limits and the stores); only the steps that may answer a request (run the handler, or answer
//! an error themselves) see them all.

use std::sync::Arc;
use std::time::Duration;

use super::buffer::BufPool;
use super::{BodyProgress, Draining};
use crate::access::AccessLog;
use crate::config::ServerConfig;
use crate::counters::Stats;
use crate::errors::Renderer;
use crate::handler::Handler;
use crate::http::date::DateCache;
use crate::http::response::Response;
use crate::responder::Mailbox;
use crate::shutdown::DrainNotice;
use crate::timer::Tick;
use crate::watch::Beat;

/// Most boxes of finished body phases a loop keeps for the next bodies.
pub(super) const SPARE_BODIES: usize = 64;

/// Everything the loop lends a connection, by part.
pub(crate) struct Env {
    /// This turn's clock and the shutdown's stage.
    pub turn: Turn,
    /// Limits and timeouts.
    pub config: ServerConfig,
    /// What answers requests.
    pub service: Service,
    /// The loop's stores: buffers, body boxes, the `Date`, the counters.
    pub stores: Stores,
    /// Where connections log: the access log, the lines about cut connections.
    pub logs: Logs,
}

/// The moment and the shutdown, as this turn sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turn {
    /// The time this loop turn started.
    pub now: Tick,
    /// How far the server's shutdown is.
    pub draining: Draining,
    /// When the stage moves on by itself (while draining: the shutdown timeout's end, which a
    /// handover keeps idle connections until at most).
    pub drain_until: Tick,
}

/// What answering a request needs: the application and the response it fills in, the errors
/// the server renders itself, where responders post, and the watch over a handler that runs long.
pub(crate) struct Service {
    /// The application.
    pub handler: Box<dyn Handler + Send>,
    /// The response the handler fills in, reused across requests.
    pub response: Response,
    /// Renders the error responses the server makes itself.
    pub errors: Renderer,
    /// Where responders post their news.
    pub mailbox: Arc<Mailbox>,
    /// The server's drain notice, for responders and streams.
    pub drain: DrainNotice,
    /// The loop's beat: when its turn began and when it becomes slow (see `crate::watch`).
    pub beat: &'static Beat,
    /// The request whose handler was running when this turn was found slow (`METHOD path`).
    pub slow_route: Option<String>,
}

/// The loop's shared stores.
pub(crate) struct Stores {
    /// Free buffers.
    pub pool: BufPool,
    /// Boxes of finished [`super::Phase::Body`] phases, for the next body (no allocation per
    /// request).
    #[expect(clippy::vec_box, reason = "the boxes themselves are what is kept for reuse")]
    pub(super) bodies: Vec<Box<BodyProgress>>,
    /// The `Date` value.
    pub date: DateCache,
    /// Counters of the loop.
    pub stats: Stats,
}

/// Where connections log.
#[derive(Default)]
pub(crate) struct Logs {
    /// Where each answered request is recorded, if anywhere.
    pub access: Option<Box<dyn AccessLog>>,
    /// Something was recorded this turn: the log's `end_of_turn` is due.
    pub access_used: bool,
    /// How many cut connections were named in WARN lines lately.
    pub cut_log: CutLog,
}

impl Env {
    /// An environment for connections served by `handler` under `config`, whose responders
    /// post to `mailbox`.
    pub(crate) fn new(
        config: ServerConfig,
        handler: Box<dyn Handler + Send>,
        now: Tick,
        mailbox: Arc<Mailbox>,
        drain: DrainNotice,
    ) -> Self {
        Env {
            turn: Turn { now, draining: Draining::No, drain_until: now },
            config,
            service: Service {
                handler,
                response: Response::new(),
                errors: Renderer::default(),
                mailbox,
                drain,
                beat: Beat::idle(),
                slow_route: None,
            },
            stores: Stores {
                pool: BufPool::default(),
                bodies: Vec::new(),
                date: DateCache::new(),
                stats: Stats::default(),
            },
            logs: Logs::default(),
        }
    }
}

impl Logs {
    /// The access log's turn ends, if it recorded something.
    pub(crate) fn end_access_turn(&mut self) {
        if std::mem::take(&mut self.access_used)
            && let Some(log) = self.access.as_mut()
        {
            log.end_of_turn();
        }
    }
}

/// Keeps the WARN lines that name cut connections to a few a second: a thousand stuck
/// readers cut at once must not drown the log. The ones not named are counted, and said in the
/// next line (or by the server at the end).
#[derive(Debug, Default)]
pub(crate) struct CutLog {
    /// When the current one-second window began.
    window: Option<Tick>,
    /// Lines in it.
    lines: u32,
    /// Cuts not named since the last line.
    unlogged: u64,
}

impl CutLog {
    /// Lines per second that name a cut connection.
    const LINES_PER_SECOND: u32 = 5;

    /// Whether a cut at `now` may have its own line (if not, it is counted).
    pub(crate) fn allow(&mut self, now: Tick) -> bool {
        if self.window.is_none_or(|start| start.after(Duration::from_secs(1)) <= now) {
            self.window = Some(now);
            self.lines = 0;
        }
        if self.lines < Self::LINES_PER_SECOND {
            self.lines += 1;
            true
        } else {
            self.unlogged += 1;
            false
        }
    }

    /// The cuts not named since the last line (and forgets them).
    pub(crate) fn take_unlogged(&mut self) -> u64 {
        std::mem::take(&mut self.unlogged)
    }
}
