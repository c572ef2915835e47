//! A Server-Sent Events broadcaster whose streams end on drain. `GET /events` opens a stream
//! (`Responder::stream`); one broadcaster thread sends every open stream a counter each second
//! with `Stream::try_send` (never waiting on a slow client). When the drain begins (Ctrl+C) the
//! server's `DrainNotice` wakes it: every stream gets `event: shutdown` and a clean end, so the
//! drain finishes at once instead of waiting out the shutdown timeout (where Go's and hyper's
//! graceful shutdown wait forever on an open stream).
//!
//!     cargo run --example sse [-- ADDR]              # default 127.0.0.1:8080
//!     curl -N http://127.0.0.1:8080/events           # then Ctrl+C the server

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use quiesce::{DrainNotice, Handles, Reply, Request, Response, Server, ServerConfig, Stream, TrySendError};

/// The open streams; `None` once the drain ended them all.
type Streams = Arc<Mutex<Option<Vec<Stream>>>>;

const SHUTDOWN: &[u8] = b"event: shutdown\ndata: bye\n\n";

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config =
        ServerConfig { addr: addr.parse().expect("an address like 127.0.0.1:8080"), ..ServerConfig::default() };
    // bind_with: the handler is built with the server's drain notice in hand.
    let server = Server::bind_with(config, |handles: &Handles| {
        let streams: Streams = Arc::new(Mutex::new(Some(Vec::new())));
        start_broadcaster(Arc::clone(&streams), handles.drain.clone());
        move |req: &Request<'_>, res: &mut Response| {
            if req.path() != "/events" {
                res.set_body("try GET /events\n");
                return Reply::Now;
            }
            let responder = res.defer();
            let mut head = Response::new();
            let _ = head.set_content_type("text/event-stream");
            if let Ok(mut stream) = responder.stream(head) {
                match streams.lock().unwrap().as_mut() {
                    Some(open) => open.push(stream),
                    // Opened after the drain began: end it at once, like the others.
                    None => {
                        let _ = stream.try_send(SHUTDOWN);
                        let _ = stream.finish();
                    }
                }
            }
            Reply::Later
        }
    })
    .expect("bind");
    eprintln!("listening on http://{}", server.local_addr());
    let outcome = server.run().expect("event loop");
    eprintln!("stopped: {outcome:?}");
    std::process::exit(outcome.exit_code());
}

/// One thread for every stream: a tick a second, until the drain.
fn start_broadcaster(streams: Streams, drain: DrainNotice) {
    thread::spawn(move || {
        let mut tick = 0u64;
        // wait_timeout returns early, true, when the drain begins.
        while !drain.wait_timeout(Duration::from_secs(1)) {
            tick += 1;
            let event = format!("data: {tick}\n\n");
            if let Some(open) = streams.lock().unwrap().as_mut() {
                // A slow client misses this tick; one that left is dropped.
                open.retain_mut(|stream| !matches!(stream.try_send(event.as_bytes()), Err(TrySendError::Gone)));
            }
        }
        let open = streams.lock().unwrap().take().unwrap_or_default();
        for mut stream in open {
            let _ = stream.try_send(SHUTDOWN);
            let _ = stream.finish();
        }
    });
}
