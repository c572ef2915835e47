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
//!                deadlines, and one shutdown Stage (serving, announced, draining, done)
//!   connection/  one client: buffers, what it waits for (Phase), its drain rule; never sees
//!                the Poll
//!     http/      one head reader (httparse), one body decoder, response encoding; never sees
//!                a socket
//! counters, config, timer, shutdown, listen: leaves the layers above share
//! watch          the process's watch over its loops: slow turns, a second signal while stuck
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
//! # Features
//!
//! `cli` (on by default) builds the `quiesce` binary and compiles what only it needs (command
//! line, log output). As a library, depend on it with `default-features = false`: then only the
//! core crates are compiled (mio, signal-hook, httparse, slab and a few small helpers).
#![deny(missing_docs)]

mod access;
pub mod app;
mod config;
mod connection;
mod counters;
mod error;
mod handler;
#[doc(hidden)]
pub mod harness;
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
mod timer;
mod watch;

pub use access::{AccessLog, AccessRecord, Ending};
pub use config::ServerConfig;
pub use counters::{ConnState, Counts, StateChange};
pub use error::Error;
pub use handler::{Handler, Reply};
pub use http::request::{BodyError, HEADER_SLOTS as MAX_HEADER_SLOTS, OwnedRequest, Request, Version};
pub use http::response::{InvalidHeader, Response};
pub use responder::{Gone, Responder, STREAM_BUFFER_BYTES, Stream, TrySendError};
pub use router::Router;
pub use server::{Outcome, Server};
pub use shutdown::{DrainNotice, Handles, ShutdownHandle};
