//! A Server-Sent Events broadcaster whose streams resume and end on drain, built with
//! `quiesce::sse`. `GET /events` opens a stream (`Responder::stream` with `sse::head()`); one
//! broadcaster thread sends every open stream a numbered event each second with
//! `Stream::try_send` (never waiting on a slow client), and keeps the last 64 events.
//!
//! - Every event has an `id:`; a client that reconnects with `Last-Event-ID: K` first gets the
//!   events after K that it missed (as far as the history goes back), then the live ones.
//! - Every stream starts with `retry: 3000`.
//! - When the drain begins (Ctrl+C) the server's `DrainNotice` wakes the broadcaster: every
//!   stream gets a last event with a `retry:` drawn at random between 0.5 and 3 s
//!   (`sse::RetrySpread`, so clients do not all come back at once), the last id and `event:
//!   shutdown`, and a clean end; the drain is over at once instead of waiting out the shutdown
//!   timeout (where Go's and hyper's graceful shutdown wait forever on an open stream).
//!
//! ```text
//! cargo run --example sse [-- ADDR]              # default 127.0.0.1:8080
//! curl -N http://127.0.0.1:8080/events           # then Ctrl+C the server
//! curl -N -H 'Last-Event-ID: 3' http://127.0.0.1:8080/events   # replays 4, 5, ...
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use quiesce::sse::{self, Event, RetrySpread};
use quiesce::{DrainNotice, Handles, Reply, Request, Response, Server, ServerConfig, Stream, TrySendError};

/// How long a client waits before it reconnects when its stream breaks.
const RETRY: Duration = Duration::from_secs(3);
/// The window the drain's retries are drawn from.
const DRAIN_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(3));
/// Events kept for clients that reconnect.
const HISTORY: usize = 64;

/// What the broadcaster and the handler share.
#[derive(Default)]
struct Hub {
    open: Vec<Stream>,
    /// The last events, by id, as written on the wire.
    history: VecDeque<(u64, Vec<u8>)>,
    /// The id of the last event (0: none yet).
    last: u64,
    /// The drain began: streams end as they open.
    draining: bool,
}

type Shared = Arc<Mutex<Hub>>;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config =
        ServerConfig { addr: addr.parse().expect("an address like 127.0.0.1:8080"), ..ServerConfig::default() };
    // bind_with: the handler is built with the server's drain notice in hand.
    let server = Server::bind_with(config, |handles: &Handles| {
        let hub: Shared = Arc::default();
        start_broadcaster(Arc::clone(&hub), handles.drain.clone());
        move |req: &Request<'_>, res: &mut Response| {
            if req.path() != "/events" {
                res.set_body("try GET /events\n");
                return Reply::Now;
            }
            open_stream(&hub, req, res)
        }
    })
    .expect("bind");
    eprintln!("listening on http://{}", server.local_addr());
    let outcome = server.run().expect("event loop");
    eprintln!("stopped: {outcome:?}");
    std::process::exit(outcome.exit_code());
}

/// Answers `GET /events` with a stream: the retry, the events the client missed, then whatever
/// the broadcaster sends.
fn open_stream(hub: &Shared, req: &Request<'_>, res: &mut Response) -> Reply {
    // An id we never gave (not a number) is a client starting afresh.
    let after = sse::last_event_id(req).and_then(|id| id.parse::<u64>().ok());
    let responder = res.defer();
    let mut head = sse::head();
    // The head's body is the stream's first piece: written here, on the loop's thread, it
    // needs no `send` there.
    sse::write_retry(head.body_mut(), RETRY);
    let mut hub = hub.lock().unwrap();
    if let Some(after) = after {
        // Events older than the history are gone; a real feed would tell the client to reload.
        for (_, event) in hub.history.iter().filter(|(id, _)| *id > after) {
            head.body_mut().extend_from_slice(event);
        }
    }
    if hub.draining {
        // Opened after the drain began, on a connection made before it (the listener is
        // closed): its client has just waited out its spread retry. Its last event now, with
        // the shortest retry, not a second wait.
        last_event(head.body_mut(), DRAIN_RETRY.0, hub.last);
        if let Ok(stream) = responder.stream(head) {
            let _ = stream.finish();
        }
    } else if let Ok(stream) = responder.stream(head) {
        hub.open.push(stream);
    }
    Reply::Later
}

/// The drain's last event: come back after `retry`, resume after `last`.
fn last_event(out: &mut Vec<u8>, retry: Duration, last: u64) {
    let event = Event::new().retry(retry).id_number(last).event("shutdown").data("bye");
    event.write_to(out).expect("a numeric id and a fixed type are valid");
}

/// One thread for every stream: an event a second, until the drain.
fn start_broadcaster(hub: Shared, drain: DrainNotice) {
    thread::spawn(move || {
        let (mut event, mut text) = (Vec::new(), String::new());
        // wait_timeout returns early, true, when the drain begins.
        while !drain.wait_timeout(Duration::from_secs(1)) {
            let mut hub = hub.lock().unwrap();
            hub.last += 1;
            let id = hub.last;
            text.clear();
            let _ = write!(text, "{id}");
            event.clear();
            Event::new().id_number(id).data(&text).write_to(&mut event).expect("a numeric id is valid");
            if hub.history.len() == HISTORY {
                hub.history.pop_front();
            }
            hub.history.push_back((id, event.clone()));
            // A slow client misses this event; one that left is dropped.
            hub.open.retain_mut(|stream| !matches!(stream.try_send(&event), Err(TrySendError::Gone)));
        }
        let mut hub = hub.lock().unwrap();
        hub.draining = true;
        let mut spread = RetrySpread::new(DRAIN_RETRY.0, DRAIN_RETRY.1);
        for mut stream in std::mem::take(&mut hub.open) {
            event.clear();
            last_event(&mut event, spread.draw(), hub.last);
            let _ = stream.try_send(&event);
            let _ = stream.finish();
        }
    });
}
