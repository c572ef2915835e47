//! An SSE chat in axum 0.8: the peer of quiesce's examples/chat.rs. `GET /events` subscribes,
//! `POST /send` (the body is the message) goes to every subscriber; on SIGTERM every stream
//! gets `event: shutdown` and ends, then the server exits. Usage: chat [ADDR]
use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

#[derive(Clone)]
struct Chat {
    messages: broadcast::Sender<(u64, String)>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stopping: watch::Receiver<bool>,
}

async fn send(State(chat): State<Chat>, text: String) -> StatusCode {
    let id = chat.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let _ = chat.messages.send((id, text));
    StatusCode::NO_CONTENT
}

async fn events(State(chat): State<Chat>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let messages = BroadcastStream::new(chat.messages.subscribe())
        .filter_map(|m| async move { m.ok() })
        .map(|(id, text)| Ok(Event::default().id(id.to_string()).data(text)));
    // Ends the stream with a last event once the server is stopping.
    let stop = WatchStream::new(chat.stopping.clone()).filter(|s| std::future::ready(*s)).take(1);
    let last = stop.map(|_| Ok(Event::default().event("shutdown").data("bye")));
    let stream = messages.take_until(WatchStream::new(chat.stopping).filter(|s| std::future::ready(*s)).into_future());
    Sse::new(stream.chain(last))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let (stop, stopping) = watch::channel(false);
    let chat = Chat { messages: broadcast::channel(1024).0, next_id: Default::default(), stopping };
    let app = Router::new().route("/events", get(events)).route("/send", post(send)).with_state(chat);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            let _ = stop.send(true);
        })
        .await
        .unwrap();
}
