//! An SSE chat: `GET /events` subscribes, `POST /send` (the body is the message) goes to every
//! subscriber as an event with an id, through a `quiesce::sse::Hub`. When the drain begins every
//! stream gets `event: shutdown` (with the last id and a spread `retry:`) and ends cleanly, so
//! the server exits at once. The same chat in axum 0.8 is `benches/peers/axum/src/bin/chat.rs`
//! (`bash benches/services.sh` compares them).
//!
//! ```text
//! cargo run --example chat [-- ADDR]                     # default 127.0.0.1:8080
//! curl -N localhost:8080/events                          # in one terminal
//! curl -d 'hello' localhost:8080/send                    # in another
//! ```
use quiesce::sse::{Event, Hub};
use quiesce::{Router, Server, ServerConfig};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config = ServerConfig { addr: addr.parse().expect("an address like 127.0.0.1:8080"), ..Default::default() };
    let server = Server::bind_with(config, |handles| {
        let hub = Hub::new(&handles.drain);
        let feed = hub.clone();
        Router::new().get("/events", move |_, res| hub.subscribe(res)).post("/send", move |req, res| {
            // A subscriber too slow to keep up misses the message; one that left is forgotten.
            let _ = feed.send(&Event::new().id_number(feed.next_id()).data(req.body_text()?));
            res.set_status(204);
            Ok(())
        })
    })
    .expect("bind");
    eprintln!("listening on http://{}", server.local_addr());
    std::process::exit(server.run().expect("event loop").exit_code());
}
