//! The exchange between a deferred answer and its connection: the answer under a mutex, a
//! flag the loop sets when the connection is gone, and the letters that tell the loop of news.
//!
//! Generic over the answer (`A`, a [`Response`](crate::Response) in practice), so that the
//! response can hold the exchange its `defer` made without this module, or `http/`, knowing of
//! the responder above them: the responder's side (`responder.rs`) and the connection's side
//! (`connection/`) both meet here. How producers and the loop use it: see `responder.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::shutdown::DrainNotice;
use crate::sync::lock;

/// Most body bytes a stream holds that the loop has not taken yet; a piece that does not fit
/// waits (one larger than this goes alone, into an empty buffer).
pub const STREAM_BUFFER_BYTES: usize = 64 * 1024;

/// Posted to the loop: the answer of connection `id`, in slot `key`, has news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Letter {
    pub key: usize,
    pub id: u64,
}

/// The loop's mailbox: letters from other threads, in one list the loop takes whole.
#[derive(Debug)]
pub(crate) struct Mailbox {
    waker: Arc<mio::Waker>,
    letters: Mutex<Vec<Letter>>,
    /// Letters are waiting: what the waker says to the loop, for a reader without a poll.
    full: AtomicBool,
}

impl Mailbox {
    /// A mailbox that wakes the loop with `waker`.
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Self {
        Mailbox { waker, letters: Mutex::new(Vec::new()), full: AtomicBool::new(false) }
    }

    /// Posts `letter`; the first letter since the loop last looked wakes it.
    fn post(&self, letter: Letter) {
        let first = {
            let mut letters = lock(&self.letters);
            letters.push(letter);
            self.full.store(true, Ordering::Release);
            letters.len() == 1
        };
        if first && let Err(e) = self.waker.wake() {
            log::warn!("could not wake the event loop: {e}");
        }
    }

    /// Moves every letter posted so far into `into` (which should be empty; its allocation is
    /// swapped in, so neither side reallocates in steady state).
    pub(crate) fn take(&self, into: &mut Vec<Letter>) {
        let mut letters = lock(&self.letters);
        self.full.store(false, Ordering::Release);
        std::mem::swap(&mut *letters, into);
    }

    /// Whether letters wait (one atomic load), for the harness, which has no poll to wake.
    pub(crate) fn has_letters(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }
}

/// Where an exchange posts its news, once its connection has taken it.
#[derive(Debug)]
struct Binding {
    mailbox: Arc<Mailbox>,
    letter: Letter,
}

/// The answer as the producer left it.
#[derive(Debug)]
pub(crate) enum Produced<A> {
    /// Nothing yet.
    Pending,
    /// A whole response.
    Whole(A),
    /// The responder was dropped without an answer.
    Dropped,
    /// A streamed response: its head until the loop takes it, the body bytes the loop has not
    /// taken, whether the producer has finished, and the length it declared.
    Stream { head: Option<A>, body: Vec<u8>, end: End, sized: Option<Sized> },
    /// The loop took the whole answer (or the connection is gone).
    Taken,
    /// A streamed response with no body (HEAD, 204, 304): its head was the whole response, so
    /// the stream is closed, and finishing it succeeds.
    Complete,
}

/// How a stream's body ends, as far as the producer has said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// More may come.
    Open,
    /// [`Stream::finish`](crate::Stream::finish): the body is complete.
    Finished,
    /// The stream was dropped unfinished: cut it.
    Abandoned,
    /// [`Stream::finish`](crate::Stream::finish) before the declared length was sent: cut it.
    Short { declared: u64, sent: u64 },
}

/// A stream that declared its length
/// ([`Responder::stream_sized`](crate::Responder::stream_sized)): how much, and how much of it
/// the producer has queued so far (checked as it queues, so the wire never gets more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sized {
    pub(crate) declared: u64,
    pub(crate) sent: u64,
}

impl Sized {
    pub(crate) fn is_complete(&self) -> bool {
        self.sent == self.declared
    }
}

#[derive(Debug)]
pub(crate) struct State<A> {
    binding: Option<Binding>,
    /// A letter is on its way, or the loop has been told and has not looked yet.
    posted: bool,
    pub(crate) answer: Produced<A>,
    /// Producers waiting for room.
    pub(crate) waiting: usize,
}

/// What sits between one responder (or its stream) and its connection.
#[derive(Debug)]
pub(crate) struct Exchange<A> {
    state: Mutex<State<A>>,
    /// Signalled when the loop takes body bytes or the connection goes.
    room: Condvar,
    /// The connection is gone, or takes nothing more: one atomic load for `is_closed`.
    closed: AtomicBool,
    /// The server's drain notice, once bound.
    drain: OnceLock<DrainNotice>,
}

/// What the loop found when it looked at an exchange.
#[derive(Debug)]
pub(crate) enum Taken<A> {
    /// Nothing new.
    Nothing,
    /// A whole response.
    Whole(A),
    /// The responder was dropped without an answer.
    Dropped,
    /// The head of a streamed response, and the length it declared; the body follows through
    /// [`Exchange::take_body`].
    StreamHead(A, Option<u64>),
}

impl<A> Exchange<A> {
    pub(crate) fn new() -> Exchange<A> {
        let state = State { binding: None, posted: false, answer: Produced::Pending, waiting: 0 };
        Exchange {
            state: Mutex::new(state),
            room: Condvar::new(),
            closed: AtomicBool::new(false),
            drain: OnceLock::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.drain.get().is_some_and(DrainNotice::is_draining)
    }

    /// Changes the answer with `change` and tells the loop; `None`, changing nothing, once the
    /// connection is gone.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut Produced<A>) -> R) -> Option<R> {
        let mut state = lock(&self.state);
        if self.is_closed() {
            return None;
        }
        let result = change(&mut state.answer);
        tell(state);
        Some(result)
    }

    /// The connection takes the exchange: news goes to `mailbox` as `letter` from now on.
    /// Returns whether an answer is already there (given before the handler returned).
    pub(crate) fn bind(&self, mailbox: Arc<Mailbox>, letter: Letter, drain: DrainNotice) -> bool {
        let _ = self.drain.set(drain);
        let mut state = lock(&self.state);
        state.binding = Some(Binding { mailbox, letter });
        let news = !matches!(state.answer, Produced::Pending);
        state.posted = news;
        news
    }

    /// The loop looks at the answer: a whole response, a dropped responder, or a stream's head.
    pub(crate) fn take(&self) -> Taken<A> {
        let mut state = lock(&self.state);
        state.posted = false;
        match &mut state.answer {
            Produced::Pending | Produced::Taken | Produced::Complete => Taken::Nothing,
            Produced::Dropped => Taken::Dropped,
            Produced::Stream { head, sized, .. } => {
                let declared = sized.map(|sized| sized.declared);
                head.take().map_or(Taken::Nothing, |head| Taken::StreamHead(head, declared))
            }
            answer @ Produced::Whole(_) => match std::mem::replace(answer, Produced::Taken) {
                Produced::Whole(response) => Taken::Whole(response),
                _ => Taken::Nothing,
            },
        }
    }

    /// The loop takes a stream's body bytes into `out`, as one chunk when `chunked`, with the
    /// last chunk once the producer finished; wakes producers waiting for room. Returns how the
    /// body stands, and how many body bytes it took.
    pub(crate) fn take_body(&self, out: &mut Vec<u8>, chunked: bool) -> (End, usize) {
        let mut state = lock(&self.state);
        state.posted = false;
        let waiting = state.waiting > 0;
        let Produced::Stream { body, end, .. } = &mut state.answer else { return (End::Abandoned, 0) };
        let taken = body.len();
        if !body.is_empty() {
            if chunked {
                push_hex(out, body.len());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(body);
            }
            body.clear();
            // A burst must not keep its buffer for the rest of a long, quiet stream.
            if body.capacity() > STREAM_BUFFER_BYTES / 4 {
                *body = Vec::new();
            }
        }
        let end = *end;
        if end == End::Finished && chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        drop(state);
        if waiting {
            self.room.notify_all();
        }
        (end, taken)
    }

    /// The exchange's state, locked (for a producer that changes the answer itself, then
    /// [`tell`]s).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<A>> {
        lock(&self.state)
    }

    /// Waits for the loop to take body bytes (or the connection to go), counted in `waiting`.
    pub(crate) fn wait_for_room<'a>(&self, mut state: MutexGuard<'a, State<A>>) -> MutexGuard<'a, State<A>> {
        state.waiting += 1;
        state = self.room.wait(state).unwrap_or_else(PoisonError::into_inner);
        state.waiting -= 1;
        state
    }

    /// The connection is gone, or takes nothing more: producers are told, and what they left
    /// is dropped.
    pub(crate) fn close(&self) {
        self.end_as(Produced::Taken);
    }

    /// A stream's head was its whole response (no body for HEAD, 204, 304): closed, and
    /// [`Stream::finish`](crate::Stream::finish) succeeds.
    pub(crate) fn complete(&self) {
        self.end_as(Produced::Complete);
    }

    fn end_as(&self, last: Produced<A>) {
        let mut state = lock(&self.state);
        // Under the lock, with the answer: `finish` sees both or neither.
        self.closed.store(true, Ordering::Release);
        state.answer = last;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.room.notify_all();
        }
    }
}

/// After a change: posts a letter, outside the lock, unless the loop is already told (or the
/// exchange is not bound yet: `bind` looks).
pub(crate) fn tell<A>(mut state: MutexGuard<'_, State<A>>) {
    if state.posted {
        return;
    }
    let Some(binding) = state.binding.as_ref() else { return };
    let (mailbox, letter) = (Arc::clone(&binding.mailbox), binding.letter);
    state.posted = true;
    drop(state);
    mailbox.post(letter);
}

/// Appends `n` in lowercase hex.
fn push_hex(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (shift * 4)) & 0xf]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn a_burst_of_letters_wakes_the_loop_once_and_is_taken_whole() {
        let mut poll = Poll::new().unwrap();
        let mailbox = Mailbox::new(Arc::new(mio::Waker::new(poll.registry(), Token(7)).unwrap()));
        for id in 1..=3 {
            mailbox.post(Letter { key: 0, id });
        }
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(events.iter().filter(|e| e.token() == Token(7)).count(), 1);
        let mut letters = Vec::new();
        mailbox.take(&mut letters);
        assert_eq!(letters.iter().map(|l| l.id).collect::<Vec<_>>(), [1, 2, 3]);
        // Nothing new: no wake-up.
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
        assert!(!mailbox.has_letters());
        // The next letter wakes it again.
        mailbox.post(Letter { key: 1, id: 4 });
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(events.iter().count(), 1);
    }

    #[test]
    fn hex_lengths() {
        for n in [0usize, 1, 9, 10, 15, 16, 255, 256, 65535, 1 << 40] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:x}"));
        }
    }
}
