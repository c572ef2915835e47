//! quiesce: a single-threaded HTTP/1.1 server that stops correctly.
//!
//! # Architecture
//!
//! One thread runs one [`mio::Poll`] loop ([`Server::run`]). Registered in it: the listening
//! socket, every client connection (kept in a [`slab::Slab`]; the slab key is the mio token) and
//! a signal source for SIGINT and SIGTERM (and SIGHUP where restarts are on). The layers point
//! down; nothing imports upward:
//!
//! [`mio::Poll`]: https://docs.rs/mio/1/mio/struct.Poll.html
//! [`slab::Slab`]: https://docs.rs/slab/0.4/slab/struct.Slab.html
//!
//! ```text
//! process/       the process around the loops: workers, sockets inherited at startup, the
//!                SIGHUP restart (both ends), systemd; hears the leader's stage changes
//! server/        the reactor: Poll, accept, a Slab of slots (connection + bookkeeping),
//!                deadlines, and one shutdown Stage (serving, announced, draining, done);
//!                one loop type per stream (plain TCP, or TLS: Server::with_tls)
//!   connection/  one client: buffers, what it waits for (Phase), its drain rule; never sees
//!                the Poll; reads and writes plaintext through a Transport
//!     tls        (feature tls) the Transport that is a rustls session over TCP: records in
//!                and out as readiness allows, the handshake as a phase, close_notify
//!     http/      one head reader (httparse), one body decoder, response encoding; never sees
//!                a socket
//!
//! What a handler meets: built on http/'s Request and Response, called by connection/ and server/
//! (never the other way):
//! handler        Handler and Reply: answer now, after a delay, or later
//! router         Router: routes by method and path pattern (matchit), HEAD and 405 done right
//! responder      Responder and Stream: an answer finished on another thread
//! blocking       a bounded pool of threads for blocking closures (Response::blocking)
//! sse            server-sent events: the head, events, a Hub of streams, a Ticker
//! errors         error bodies: one renderer hook for every error response, problem+json
//! access         one record per answered request (the writer is the binary's)
//! metrics        /metrics and the exit summary, from the loop's plain counters
//!
//! testing        TestClient: a handler on the real connection code, without sockets (beside
//!                server/, driving a connection in memory through harness)
//!
//! Leaves the layers above share: counters, config, timer, shutdown, listen, sync, error, and
//! exchange       what a responder shares with its connection: the answer under a mutex, the
//!                letters that wake the loop (generic over the answer, so that a Response's
//!                deferral slot, in http/, can hold the exchange its defer made)
//! watch          the process's watch over its loops: slow turns, a second signal while stuck
//!
//! Beside the library, not in it:
//! src/bin/quiesce/  the binary (feature cli): command line, log output, the access-log writer
//! app/              the binary's demo routes (feature demo)
//! harness           the in-memory connection for fuzzing and benches (feature harness)
//! ```
//!
//! Each connection's lifecycle ([`ConnState`]: New, Active, Idle, Closed) is derived from its
//! protocol phase and reported in exactly one function of the server, which keeps the live
//! counts, so they cannot drift.
//!
//! Graceful shutdown ([`ShutdownHandle::graceful`], or the first SIGINT/SIGTERM) stops listening
//! at once, gives connections with a request probably on its way a brief last call, closes the
//! other idle ones, lets every in-flight request finish and returns the moment nothing is left.
//!
//! ```no_run
//! use quiesce::{Reply, Request, Response, Server, ServerConfig};
//!
//! let config = ServerConfig { addr: "127.0.0.1:8080".parse().unwrap(), ..ServerConfig::default() };
//! let handler = |_req: &Request<'_>, res: &mut Response| {
//!     res.set_body("hi\n");
//!     Reply::Now
//! };
//! let server = Server::bind(config, handler).expect("bind");
//! let outcome = server.run().expect("poll failed");
//! std::process::exit(outcome.exit_code());
//! ```
//!
//! # Logging
//!
//! The server reports through the [`log`](https://docs.rs/log) facade and installs no logger
//! itself: without one in your program, every message is dropped, and a handler that panicked
//! or a responder dropped unsent answers a 500 that nothing explains. Install one at the start
//! of `main` (`env_logger::init()`, for instance). Nothing is logged per request at `info`.
//!
//! # Errors, streams with a length, tests
//!
//! [`Server::set_error_renderer`] renders every error response (the server's own and those a
//! handler makes with [`Response::set_error`]), e.g. as [`errors::problem_json`];
//! [`Responder::stream_sized`] streams a body of known length with `Content-Length`;
//! [`testing::TestClient`] runs a handler without sockets, one line per request.
//!
//! # Features
//!
//! `cli` (on by default) builds the `quiesce` binary (its code lives apart, in
//! `src/bin/quiesce/`: command line, log output, the access-log writer) and turns on `demo`,
//! the routes it serves (`quiesce::app`). As a library, depend on it with
//! `default-features = false`: then only the library and the core crates are compiled (mio,
//! signal-hook, httparse, slab and a few small helpers). `json` (off by default) adds `serde`
//! and `serde_json` for JSON bodies (in [`testing`]: `TestResponse::json`, `TestRequest::json`).
//! `harness` exposes the in-memory connection and the parser to the fuzz targets and benches
//! (hidden, not a stable API); `tls` (on by default) is HTTPS.
#![deny(missing_docs)]

mod access;
#[cfg(feature = "demo")]
pub mod app;
pub mod blocking;
mod config;
mod connection;
mod counters;
mod error;
pub mod errors;
mod exchange;
mod handler;
// The in-memory connection is `testing::TestClient`'s engine, so it is always compiled; what
// only the fuzz targets and benches use, and the module's being public, come with `harness`.
#[cfg(feature = "harness")]
#[doc(hidden)]
pub mod harness;
#[cfg(not(feature = "harness"))]
mod harness;
mod http;
mod listen;
pub mod metrics;
pub mod process;
mod responder;
mod router;
mod server;
mod shutdown;
pub mod sse;
mod sync;
pub mod testing;
mod timer;
#[cfg(feature = "tls")]
pub mod tls;
mod watch;

pub use access::{AccessLog, AccessRecord, Ending};
pub use blocking::{BlockingPool, BlockingStats};
pub use config::ServerConfig;
pub use counters::{ConnState, Counts, StateChange};
pub use error::Error;
pub use errors::ErrorInfo;
pub use handler::{Handler, IntoReply, Reply};
pub use http::request::{BodyError, HEADER_SLOTS as MAX_HEADER_SLOTS, OwnedRequest, Request, TlsInfo, Version};
pub use http::response::{InvalidHeader, Response};
/// A header field of a request built by hand with [`Request::new`] (`httparse`'s type,
/// re-exported so a test needs no dependency of its own): `Header { name: "Host", value: b"a" }`.
pub use httparse::Header;
pub use responder::{Gone, Responder, STREAM_BUFFER_BYTES, Stream, StreamError, TrySendError};
pub use router::Router;
pub use server::{Outcome, Server};
pub use shutdown::{DrainNotice, Handles, ShutdownHandle};
