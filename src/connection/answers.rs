//! The answers a responder gives, on the connection's side: the handler deferred (`defer`),
//! the responder's news is taken (`take_answer`: a whole response, a 500 for a responder
//! dropped unanswered, or a stream's head), and a stream's body is pumped from the producer's
//! buffer to the output (`pump`) until it ends, cleanly or cut. The producer's side, and the
//! exchange between the two, are `responder.rs` and `exchange.rs`.

use std::sync::Arc;

use log::{error, warn};

use super::{AfterFlush, Connection, Deferred, Env, HeadProgress, Logs, Phase, Streaming, Transport, Turn};
use crate::errors::{ErrorInfo, INTERNAL_ERROR};
use crate::handler::Reply;
use crate::http::head::HeadInfo;
use crate::http::request::Version;
use crate::responder::{End, Exchange, Letter, Taken};

impl<S: Transport> Connection<S> {
    /// The handler returned `Later` without deferring: nobody would ever answer.
    #[cold]
    #[inline(never)]
    pub(super) fn no_responder(&mut self, head: HeadInfo, env: &mut Env) {
        error!(
            "connection {}: the handler returned Reply::Later without Response::defer; answering 500",
            self.client.id
        );
        env.service.errors.internal_error(&ErrorInfo::new(500, INTERNAL_ERROR), &mut env.service.response);
        self.send(head, env);
    }

    /// The answer comes from a responder: wait for it, looking at once if it already came.
    #[cold]
    #[inline(never)]
    pub(super) fn defer(&mut self, head: HeadInfo, reply: Reply, exchange: Arc<Exchange>, env: &mut Env) {
        if reply != Reply::Later {
            warn!("connection {}: the handler deferred its response but returned {reply:?}", self.client.id);
        }
        let letter = Letter { key: self.key as usize, id: self.client.id };
        self.mail = exchange.bind(Arc::clone(&env.service.mailbox), letter, env.service.drain.clone());
        env.stores.stats.deferred += 1;
        self.phase = Phase::Deferred(Box::new(Deferred { head, exchange }));
    }

    /// In `Deferred`, with news: sends the whole response, answers 500 for a dropped
    /// responder, or starts a stream.
    #[inline(never)]
    pub(super) fn take_answer(&mut self, env: &mut Env) -> bool {
        self.mail = false;
        let Phase::Deferred(deferred) = &self.phase else { return false };
        let taken = deferred.exchange.take();
        if matches!(taken, Taken::Nothing) {
            return false;
        }
        let Phase::Deferred(deferred) = std::mem::replace(&mut self.phase, Phase::Head(HeadProgress::default())) else {
            return false;
        };
        let Deferred { head, exchange } = *deferred;
        match taken {
            Taken::Nothing => {}
            Taken::Whole(response) => {
                env.service.response = response;
                self.send(head, env);
            }
            Taken::Dropped => {
                error!(
                    "connection {} ({}): a responder was dropped without an answer; answering 500",
                    self.client.id, self.client.addr
                );
                env.service.errors.internal_error(&ErrorInfo::new(500, INTERNAL_ERROR), &mut env.service.response);
                self.send(head, env);
            }
            Taken::StreamHead(response, length) => {
                env.service.response = response;
                self.start_stream(head, exchange, length, env);
            }
        }
        true
    }

    /// Sends the head of a streamed response from `env.service.response`; for HEAD (and a status
    /// without a body) that is the whole response.
    #[inline(never)]
    fn start_stream(&mut self, head: HeadInfo, exchange: Arc<Exchange>, length: Option<u64>, env: &mut Env) {
        let bodiless = head.is_head || env.service.response.is_bodiless();
        // A declared length frames the body on either version; otherwise chunks on HTTP/1.1.
        let chunked = head.version == Version::Http11 && length.is_none();
        // Without chunks or a length, only the end of the connection ends the body.
        let must_close = env.service.response.close_requested() || (!chunked && length.is_none() && !bodiless);
        let (close, connection) = self.ending(&head, env.turn.draining, must_close);
        if self.write_buf.is_empty() {
            self.write_since = env.turn.now;
        }
        env.stores.stats.response(env.service.response.status());
        env.stores.stats.streams += 1;
        // HEAD shows the framing GET would get; a status without a body has none.
        env.service.response.encode_stream_head(
            self.write_buf.out(&mut env.stores.pool),
            env.stores.date.get(),
            chunked,
            length,
            connection,
        );
        if bodiless {
            // Nothing of the body goes out: the producer is told the stream is closed (and
            // complete: finishing it succeeds).
            exchange.complete();
            env.stores.stats.streams_finished += 1;
            if env.logs.access.is_some() {
                self.record_answer(env.service.response.status(), 0, env.turn);
            }
            self.after_response(close, head.keep_alive);
        } else {
            if let Some(pending) = self.access.as_mut() {
                pending.stream_started(env.service.response.status());
            }
            self.close_delimited = !chunked && length.is_none();
            self.phase = Phase::Streaming(Box::new(Streaming { exchange, chunked, remaining: length, close }));
            // Body bytes may have come with the head.
            self.mail = true;
        }
    }

    /// In `Streaming`, with news and room: takes the producer's bytes; once the body is
    /// complete, the connection goes on (or closes); a stream dropped unfinished, or finished
    /// short of the length it declared, is cut.
    #[inline(never)]
    pub(super) fn pump(&mut self, env: &mut Env) -> bool {
        self.mail = false;
        let Phase::Streaming(streaming) = &mut self.phase else { return false };
        let (was_empty, before) = (self.write_buf.is_empty(), self.write_buf.pending().len());
        let (end, taken) = streaming.exchange.take_body(self.write_buf.out(&mut env.stores.pool), streaming.chunked);
        if let Some(remaining) = &mut streaming.remaining {
            // The producer's side refuses a piece past the length, under the lock the bytes
            // are taken with: this cannot pass it.
            debug_assert!(taken as u64 <= *remaining, "a sized stream passed its declared length");
            *remaining = remaining.saturating_sub(taken as u64);
        }
        let close = streaming.close;
        if let Some(pending) = self.access.as_mut() {
            pending.streamed += taken as u64;
        }
        if was_empty && !self.write_buf.is_empty() {
            self.write_since = env.turn.now;
        }
        match end {
            End::Open => self.write_buf.pending().len() > before,
            End::Finished => {
                env.stores.stats.streams_finished += 1;
                if env.logs.access.is_some() {
                    self.record_stream_end(false, env.turn);
                }
                self.after_response(close, true);
                true
            }
            End::Abandoned => {
                warn!("connection {}: a stream was dropped unfinished; cutting the response", self.client.id);
                self.cut_stream(env.turn, &env.logs)
            }
            End::Short { declared, sent } => {
                warn!(
                    "connection {}: a stream finished after {sent} of the {declared} bytes it declared; cutting the response",
                    self.client.id
                );
                self.cut_stream(env.turn, &env.logs)
            }
        }
    }

    /// The producer ended a stream without completing its body: what was taken goes out, then
    /// the connection closes without the last chunk (a reset on HTTP/1.0 without a length;
    /// with a declared length, the client gets fewer bytes than it) and the access log says
    /// `abandoned`.
    #[cold]
    fn cut_stream(&mut self, turn: Turn, logs: &Logs) -> bool {
        if logs.access.is_some() {
            self.record_stream_end(true, turn);
        }
        self.closing(AfterFlush::Cut);
        true
    }
}
