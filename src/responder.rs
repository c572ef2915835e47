//! Answers finished off the loop. A handler calls [`Response::defer`](crate::Response::defer),
//! returns [`Reply::Later`](crate::Reply::Later), and hands the [`Responder`] to any thread: a
//! worker pool, a channel, another event loop. The responder either sends a whole
//! [`Response`], or starts a [`Stream`]: a head now, body pieces over time, then a finish.
//!
//! Between a responder (or its stream) and its connection sits one `Exchange`: the answer under
//! a mutex, and a flag the loop sets when the connection is gone. Each change a producer makes
//! posts one letter, `(slab key, connection id)`, to the server's `Mailbox`, and only the first
//! letter of a burst wakes the loop, which takes the whole list in one turn. A letter whose id
//! does not match the connection now in that slot is stale and dropped: a responder can never
//! reach a connection that reused its slab key. A responder dropped unsent answers 500; a stream
//! dropped unfinished is cut (no terminal chunk on HTTP/1.1, a reset on HTTP/1.0, so the client
//! can tell). However the connection ends, even with its server dropped, producers hear of it.
//!
//! Back-pressure: a stream holds at most [`STREAM_BUFFER_BYTES`] the loop has not taken yet, and
//! the loop takes them only while the connection's own output is small, so a client that reads
//! slowly slows the producer down: [`Stream::send`] waits for room, [`Stream::try_send`] says
//! [`TrySendError::Full`]. A client that reads nothing is dropped by the write timeout, and the
//! producer's next send says [`Gone`].

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

pub use crate::exchange::STREAM_BUFFER_BYTES;
pub(crate) use crate::exchange::{End, Letter, Mailbox};
use crate::exchange::{Produced, Sized, tell};
use crate::http::response::Response;

/// The exchange between a responder (or its stream) and its connection, carrying a response.
pub(crate) type Exchange = crate::exchange::Exchange<Response>;

/// What the loop found when it looked at an exchange.
pub(crate) type Taken = crate::exchange::Taken<Response>;

/// The connection is gone (the client left, a timeout or the shutdown closed it), or the answer
/// was already given: nothing sent now reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection is gone")
    }
}

impl std::error::Error for Gone {}

/// Why [`Stream::try_send`] did not take a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError {
    /// The stream's buffer is full: the client reads slower than the stream is written. Try
    /// again later, skip the piece, or end the stream.
    Full,
    /// The connection is gone.
    Gone,
    /// The piece would take the body past the length the stream declared
    /// ([`Responder::stream_sized`]): nothing of it was queued, and the stream is still open.
    TooLong {
        /// The declared length.
        declared: u64,
        /// Body bytes queued so far.
        sent: u64,
    },
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TrySendError::Full => f.write_str("the stream's buffer is full"),
            TrySendError::Gone => Gone.fmt(f),
            TrySendError::TooLong { declared, sent } => StreamError::TooLong { declared, sent }.fmt(f),
        }
    }
}

impl std::error::Error for TrySendError {}

/// Why [`Stream::send`] or [`Stream::finish`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection is gone (see [`Gone`]): nothing sent now reaches the client.
    Gone,
    /// [`Stream::send`]: the piece would take the body past the length the stream declared
    /// ([`Responder::stream_sized`]). Nothing of it was queued and the stream is still open:
    /// send what is left of the declared length and finish, or drop the stream to cut it.
    TooLong {
        /// The declared length.
        declared: u64,
        /// Body bytes queued so far.
        sent: u64,
    },
    /// [`Stream::finish`] came before the body reached the declared length: the response was
    /// cut (the connection closes after the bytes sent, so the client sees fewer than its
    /// `Content-Length` and can tell).
    Short {
        /// The declared length.
        declared: u64,
        /// Body bytes sent.
        sent: u64,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StreamError::Gone => Gone.fmt(f),
            StreamError::TooLong { declared, sent } => {
                write!(f, "the piece would pass the stream's declared length ({sent} of {declared} bytes sent)")
            }
            StreamError::Short { declared, sent } => {
                write!(f, "the stream finished short of its declared length ({sent} of {declared} bytes): cut")
            }
        }
    }
}

impl std::error::Error for StreamError {}

impl From<Gone> for StreamError {
    fn from(Gone: Gone) -> StreamError {
        StreamError::Gone
    }
}

thread_local! {
    /// This thread runs an event loop: a [`Stream::send`] here must never wait for room, since
    /// only this thread makes room.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as an event loop's while it lives.
pub(crate) struct LoopThread {
    was: bool,
}

impl LoopThread {
    pub(crate) fn enter() -> LoopThread {
        LoopThread { was: ON_LOOP.replace(true) }
    }

    /// Marks the current thread for good (the harness, whose steps run on its caller's thread).
    pub(crate) fn mark() {
        ON_LOOP.set(true);
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        ON_LOOP.set(self.was);
    }
}

impl Response {
    /// The answer will come later, from the returned [`Responder`], which can go to any thread
    /// (return [`Reply::Later`](crate::Reply::Later) from the handler). Whatever this response
    /// holds is not sent. The connection stays Active until the responder answers; requests
    /// pipelined behind this one wait their turn.
    ///
    /// On a response the server did not hand to a handler, the responder is connected to
    /// nothing: [`Responder::send`] says [`Gone`]. So is the responder of an earlier call, when
    /// `defer` is called again: the last one answers.
    pub fn defer(&mut self) -> Responder {
        let (responder, exchange) = Responder::new(self.head_request);
        // An earlier responder's exchange, replaced, is closed.
        self.deferred.put(exchange);
        responder
    }

    /// The exchange of the responder [`Response::defer`] made, if it was called. After every
    /// handler call: inlined, it is a load and a branch when nothing was deferred.
    #[inline]
    pub(crate) fn take_deferred(&mut self) -> Option<Arc<Exchange>> {
        self.deferred.take()
    }
}

/// Finishes the answer to one request, from any thread: [`Responder::send`] a whole response,
/// or [`Responder::stream`] one. Dropping it unsent answers the client with a 500 (and logs it),
/// so a forgotten responder can never leave its connection, and a drain, waiting forever.
///
/// Made by [`Response::defer`](crate::Response::defer); `Send + 'static`.
#[derive(Debug)]
#[must_use = "a responder dropped without an answer answers its client with a 500"]
pub struct Responder {
    exchange: Arc<Exchange>,
    answered: bool,
    /// It answers a HEAD request: a stream it starts has no body.
    head_only: bool,
}

impl Responder {
    /// A responder and the exchange its connection takes; `head_only` for a HEAD request.
    pub(crate) fn new(head_only: bool) -> (Responder, Arc<Exchange>) {
        let exchange = Arc::new(Exchange::new());
        (Responder { exchange: Arc::clone(&exchange), answered: false, head_only }, exchange)
    }

    /// Sends the whole response, as if the handler had filled it in: the server writes `Date`,
    /// `Content-Length` and `Connection`, leaves the body out for HEAD, and closes after it when
    /// draining. `Err(Gone)` when the client is gone.
    pub fn send(mut self, mut response: Response) -> Result<(), Gone> {
        self.answered = true;
        disconnect(&mut response);
        self.exchange.update(|answer| *answer = Produced::Whole(response)).ok_or(Gone)
    }

    /// Starts a streamed response: `head` (its status, headers and content type; its body, if
    /// any, is the first piece) goes out now, with `Transfer-Encoding: chunked` on HTTP/1.1; on
    /// HTTP/1.0 the body ends when the connection closes. For HEAD (or a 204 or 304) the head
    /// is the whole response, and the stream is closed at once. `Err(Gone)` when the client is
    /// gone.
    pub fn stream(self, head: Response) -> Result<Stream, Gone> {
        self.start_stream(head, None)
    }

    /// Starts a streamed response whose body is `length` bytes: sent with `Content-Length:
    /// length` rather than in chunks (on HTTP/1.1 and HTTP/1.0 alike, and the connection may
    /// stay open after it), so a client shows progress. `head`'s body, if any, is the first
    /// piece. The stream checks what the producer sends: a piece that would pass `length`
    /// is refused ([`StreamError::TooLong`], nothing of it sent), and a
    /// [`finish`](Stream::finish) before `length` is reached cuts the response
    /// ([`StreamError::Short`]: the connection closes, the client gets fewer bytes than it was
    /// told and can tell). Once `length` bytes are sent the body is complete: finishing, or
    /// dropping the stream, ends it cleanly.
    ///
    /// `Err(StreamError::TooLong)` if `head`'s body alone is longer than `length`: then nothing
    /// is sent and the responder is dropped unanswered (the client gets a 500).
    pub fn stream_sized(self, head: Response, length: u64) -> Result<Stream, StreamError> {
        let first = head.body().len() as u64;
        if first > length {
            // Dropped unanswered: a 500, as for any responder that gives no answer.
            return Err(StreamError::TooLong { declared: length, sent: 0 });
        }
        Ok(self.start_stream(head, Some(Sized { declared: length, sent: first }))?)
    }

    fn start_stream(mut self, mut head: Response, sized: Option<Sized>) -> Result<Stream, Gone> {
        self.answered = true;
        disconnect(&mut head);
        let bodiless = self.head_only || head.is_bodiless();
        let first = std::mem::take(head.body_mut());
        self.exchange
            .update(|answer| *answer = Produced::Stream { head: Some(head), body: first, end: End::Open, sized })
            .ok_or(Gone)?;
        Ok(Stream { exchange: Arc::clone(&self.exchange), done: false, bodiless })
    }

    /// Whether the client is gone (it closed, a timeout or the shutdown closed the connection):
    /// one atomic load, cheap enough to check often in long work and stop early.
    pub fn is_closed(&self) -> bool {
        self.exchange.is_closed()
    }

    /// Whether the server's drain began (see [`DrainNotice`](crate::DrainNotice)).
    pub fn is_draining(&self) -> bool {
        self.exchange.is_draining()
    }
}

/// A responder made from a response that is itself an answer (`defer` called on it) is
/// connected to nothing: its deferral must not travel with the answer to the connection, where
/// the next request's handler would seem to have deferred.
fn disconnect(response: &mut Response) {
    if let Some(exchange) = response.take_deferred() {
        exchange.close();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.exchange.update(|answer| {
                if matches!(answer, Produced::Pending) {
                    *answer = Produced::Dropped;
                }
            });
        }
    }
}

/// The body of a streamed response, written piece by piece from any thread, then
/// [`Stream::finish`]ed. Dropping it unfinished cuts the response: the connection closes
/// without the last chunk (on HTTP/1.0, with a reset), so the client can tell it is incomplete.
///
/// Made by [`Responder::stream`]; `Send + 'static`.
#[derive(Debug)]
#[must_use = "a stream dropped unfinished cuts its response; send the body, then finish it"]
pub struct Stream {
    exchange: Arc<Exchange>,
    done: bool,
    /// Its response has no body (HEAD, 1xx, 204, 304): finishing it succeeds whatever it
    /// declared, even before the loop took its head.
    bodiless: bool,
}

impl Stream {
    /// Queues `piece`, waiting while the stream's buffer is full (the client reads slower than
    /// the stream is written). `Err(Gone)` once the connection is gone; a client that reads
    /// nothing is dropped by the server's write timeout, which ends the wait.
    ///
    /// On the server's own thread (in a handler, or a [`DrainNotice`](crate::DrainNotice) callback) it never
    /// waits, since only that thread makes room: the piece is queued past the buffer's limit.
    /// Send a few pieces there at most; a long stream belongs on another thread.
    ///
    /// On a stream that declared its length, a piece that would pass it is refused:
    /// [`StreamError::TooLong`], nothing of it queued.
    pub fn send(&mut self, piece: &[u8]) -> Result<(), StreamError> {
        let mut state = self.exchange.lock();
        loop {
            if self.exchange.is_closed() {
                return Err(StreamError::Gone);
            }
            match push_piece(&mut state.answer, piece, ON_LOOP.get()) {
                Push::Queued => break,
                Push::Wait => {}
                Push::TooLong { declared, sent } => return Err(StreamError::TooLong { declared, sent }),
            }
            state = self.exchange.wait_for_room(state);
        }
        tell(state);
        Ok(())
    }

    /// Queues `piece` if there is room now: [`TrySendError::Full`] if not (for a producer that
    /// serves many streams and must not wait on one), [`TrySendError::Gone`] once the
    /// connection is gone, [`TrySendError::TooLong`] for a piece that would pass the length
    /// the stream declared.
    pub fn try_send(&mut self, piece: &[u8]) -> Result<(), TrySendError> {
        let mut state = self.exchange.lock();
        if self.exchange.is_closed() {
            return Err(TrySendError::Gone);
        }
        match push_piece(&mut state.answer, piece, false) {
            Push::Queued => {
                tell(state);
                Ok(())
            }
            Push::Wait => Err(TrySendError::Full),
            Push::TooLong { declared, sent } => Err(TrySendError::TooLong { declared, sent }),
        }
    }

    /// Ends the body (with the last chunk, on HTTP/1.1). `Err(StreamError::Gone)` when the
    /// connection is gone: the client did not get the whole body. For a response without a
    /// body (HEAD, 204, 304) it succeeds once the head is on its way. On a stream that
    /// declared its length and sent less, the response is cut: `Err(StreamError::Short)`.
    pub fn finish(mut self) -> Result<(), StreamError> {
        self.done = true;
        let mut state = self.exchange.lock();
        let result = match &mut state.answer {
            Produced::Complete => return Ok(()),
            _ if self.exchange.is_closed() => return Err(StreamError::Gone),
            Produced::Stream { end, sized: Some(sized), .. } if !sized.is_complete() && !self.bodiless => {
                let Sized { declared, sent } = *sized;
                *end = End::Short { declared, sent };
                Err(StreamError::Short { declared, sent })
            }
            Produced::Stream { end, .. } => {
                *end = End::Finished;
                Ok(())
            }
            _ => Ok(()),
        };
        tell(state);
        result
    }

    /// Whether the client is gone (see [`Responder::is_closed`]). A streamed HEAD response is
    /// closed from the start.
    pub fn is_closed(&self) -> bool {
        self.exchange.is_closed()
    }

    /// Whether the server's drain began: time to send a last piece and finish.
    pub fn is_draining(&self) -> bool {
        self.exchange.is_draining()
    }
}

/// What [`push_piece`] did.
enum Push {
    Queued,
    /// No room: wait, or say `Full`.
    Wait,
    /// Past the declared length: refused.
    TooLong {
        declared: u64,
        sent: u64,
    },
}

/// Appends `piece` to the stream's body if it fits (a piece larger than the buffer goes alone,
/// into an empty one), or in any case when `anyway`; never past a declared length.
fn push_piece(answer: &mut Produced<Response>, piece: &[u8], anyway: bool) -> Push {
    match answer {
        Produced::Stream { sized: Some(Sized { declared, sent }), .. }
            if piece.len() as u64 > declared.saturating_sub(*sent) =>
        {
            Push::TooLong { declared: *declared, sent: *sent }
        }
        Produced::Stream { body, .. }
            if !anyway && body.len() + piece.len() > STREAM_BUFFER_BYTES && !body.is_empty() =>
        {
            Push::Wait
        }
        Produced::Stream { body, sized, .. } => {
            body.extend_from_slice(piece);
            if let Some(sized) = sized {
                sized.sent += piece.len() as u64;
            }
            Push::Queued
        }
        // Nothing to append to: the loop let go of the answer (and closed the exchange, which
        // the caller sees next).
        _ => Push::Queued,
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.exchange.update(|answer| {
                if let Produced::Stream { end: end @ End::Open, sized, .. } = answer {
                    // A declared length all sent is a complete body: nothing to cut.
                    *end = if sized.is_some_and(|sized| sized.is_complete()) { End::Finished } else { End::Abandoned };
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responder_connected_to_nothing_says_gone() {
        let mut response = Response::new();
        let first = response.defer();
        let second = response.defer();
        assert!(first.is_closed(), "a second defer leaves the first responder connected to nothing");
        assert_eq!(first.send(Response::new()), Err(Gone));
        assert!(!second.is_closed());
        drop(response);
        assert!(second.is_closed(), "dropped with a response the server never took");
        assert!(!second.is_draining());
        assert_eq!(second.stream(Response::new()).map(|_| ()), Err(Gone));
    }
}
