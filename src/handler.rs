//! The handler API: synchronous, so a handler can never block the loop. It fills in the
//! response and says when to send it: now, after a delay (a timer in the loop, not a sleep), or
//! later, from a [`Responder`](crate::Responder) that another thread finishes (blocking work,
//! streamed responses).

use std::time::Duration;

use crate::http::request::{BodyError, Request};
use crate::http::response::Response;

/// When to send the response the handler filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a handler says when to answer by returning its Reply"]
pub enum Reply {
    /// Send it as soon as the connection can write.
    Now,
    /// Send it after this long. Meanwhile the connection is Active and every other connection
    /// is served as usual; requests pipelined behind this one wait their turn.
    After(Duration),
    /// The handler called [`Response::defer`]: the [`Responder`](crate::Responder) it got
    /// answers, from any thread, whenever it is ready. Meanwhile the connection is Active; a
    /// drain waits for it (up to the shutdown timeout).
    ///
    /// A handler that deferred the response is answered by its responder whatever it returns;
    /// one that returns `Later` without deferring gets a 500 (and a log line).
    Later,
}

/// Answers requests. Runs on the loop thread, one request at a time.
///
/// `res` arrives reset to an empty `200 OK` whose buffers are reused from earlier requests, so a
/// handler that writes into [`Response::body_mut`] allocates nothing in steady state.
///
/// A panic in a handler is caught: the client gets a 500 and its connection is closed; the
/// server and its other connections carry on.
pub trait Handler {
    /// Fills in `res` for `req` and says when to send it.
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply;
}

impl<F> Handler for F
where
    F: FnMut(&Request<'_>, &mut Response) -> Reply,
{
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply {
        self(req, res)
    }
}

/// What a [`Router`](crate::Router) route's handler may return: a [`Reply`]; `()`, for
/// [`Reply::Now`]; or a `Result` whose error answers the request, so that `?` works on
/// [`Request::json`](crate::Request::json) and [`Request::body_text`](crate::Request::body_text):
///
/// ```
/// # use quiesce::{Reply, Router};
/// let router = Router::new().post("/shout", |req, res| {
///     let text = req.body_text()?; // not UTF-8: 400, saying where
///     res.set_body(text.to_uppercase());
///     Ok(Reply::Now)
/// });
/// ```
pub trait IntoReply {
    /// The reply, after answering `res` with an error if this is one.
    fn into_reply(self, res: &mut Response) -> Reply;
}

impl IntoReply for Reply {
    #[inline(always)]
    fn into_reply(self, _: &mut Response) -> Reply {
        self
    }
}

impl IntoReply for () {
    #[inline(always)]
    fn into_reply(self, _: &mut Response) -> Reply {
        Reply::Now
    }
}

impl<T: IntoReply> IntoReply for Result<T, BodyError> {
    #[inline]
    fn into_reply(self, res: &mut Response) -> Reply {
        match self {
            Ok(reply) => reply.into_reply(res),
            Err(e) => e.reply(res),
        }
    }
}

impl BodyError {
    /// Answers the request with this error: its status, and its message, rendered by the
    /// server's error renderer (plain text unless one is set: see
    /// [`Server::set_error_renderer`](crate::Server::set_error_renderer)).
    /// One line in a handler:
    ///
    /// ```
    /// # use quiesce::{Reply, Request, Response};
    /// fn shout(req: &Request<'_>, res: &mut Response) -> Reply {
    ///     let text = match req.body_text() {
    ///         Ok(text) => text,
    ///         Err(e) => return e.reply(res),
    ///     };
    ///     res.set_body(text.to_uppercase());
    ///     Reply::Now
    /// }
    /// # let mut res = Response::new();
    /// # let req = Request::new("POST", "/", quiesce::Version::Http11, &[], b"\xff");
    /// # shout(&req, &mut res);
    /// # assert_eq!(res.status(), 400);
    /// ```
    pub fn reply(&self, res: &mut Response) -> Reply {
        // Rendered by the server's error hook, as its own errors are (plain text by default).
        res.render_error(&crate::errors::ErrorInfo::new(self.status(), self.message()));
        Reply::Now
    }
}
