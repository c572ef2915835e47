//! [`ServerConfig`]: every limit and timeout of the server in one place, with documented defaults.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// How a [`Server`](crate::Server) listens, what it accepts and how long it waits.
///
/// Build it with struct update syntax over [`ServerConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port
    /// (see [`Server::local_addr`](crate::Server::local_addr)).
    pub addr: SocketAddr,
    /// Whether the server takes SIGINT and SIGTERM itself: the first starts a graceful drain, a
    /// second one stops at once. It takes no other signal, except SIGHUP in a process run with
    /// [`Options::restart_on_sighup`](crate::process::Options::restart_on_sighup) (then only
    /// worker 0 takes them). A second signal that finds a loop of the process stuck in one turn
    /// for 50 ms (a handler that spins: it would not read the signal until it returns) ends the
    /// process at once, from the signal handler, with `_exit(128 + n)` and a line on stderr.
    /// Default `true`. Embedders that manage signals themselves set it to `false` and use a
    /// [`ShutdownHandle`](crate::ShutdownHandle).
    pub handle_signals: bool,
    /// After the first SIGINT/SIGTERM (or [`ShutdownHandle::graceful`](crate::ShutdownHandle::graceful)),
    /// keep accepting and serving this long, with [`Request::server_draining`](crate::Request::server_draining)
    /// true (the built-in `/healthz` answers 503), so a load balancer can take the instance out
    /// of rotation before the drain starts. Default 0.
    pub drain_delay: Duration,
    /// Longest a graceful drain may take before the remaining connections are closed. After a
    /// SIGHUP restart's handover, idle connections are kept until used or this long at most, and
    /// closed cleanly then, without counting as closed by force. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Last call at drain start for a connection that has not sent its first request yet.
    /// Default 1 s.
    pub drain_new_grace: Duration,
    /// A keep-alive connection whose last response went out less than this long before the
    /// drain started gets this long again for its next request (a client in a tight request
    /// loop). So does a connection that goes idle during the drain without having been told it
    /// would close: its last response began before the drain (a stream, a large body), so a
    /// client or a proxy may already be sending the next request, which is then answered with
    /// `Connection: close`. Default 100 ms.
    pub drain_idle_grace: Duration,
    /// Time allowed for a whole request head, counted from its first byte; also the longest
    /// wait for the next byte of a request body. Default 10 s.
    pub header_timeout: Duration,
    /// HTTPS only: time allowed for a TLS handshake, counted from the accept; a client still
    /// in its handshake then is closed (counted as a `timeout` failure). Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request. Default 60 s.
    pub idle_timeout: Duration,
    /// How long queued output may make no progress before the connection is cut, when the
    /// client took none of it either: where the system counts what the client takes (Linux: the
    /// bytes it acknowledged and, for a client on this host, read), a client that still reads,
    /// however slowly, is kept; elsewhere, no successful write for this long is enough. The
    /// count is looked at after three quarters of the timeout and again at its end. Default 30 s.
    pub write_timeout: Duration,
    /// The same, during a drain: a response the client does not take holds the drain up for at
    /// most this long (at most the write timeout), and is then cut, counted and logged. Default
    /// 5 s.
    pub drain_write_timeout: Duration,
    /// After the last response on a connection, how long to read and discard what the client
    /// still sends, so that unread input does not turn into a reset. Default 500 ms.
    pub linger_timeout: Duration,
    /// Longest request target (the URI in the request line); longer ones get 414. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// Largest request head (request line and header fields); larger ones get 431. This also
    /// caps the read buffer while a head arrives. Default 16 KiB.
    pub max_head_bytes: usize,
    /// Most header fields in one request. Default 100.
    pub max_headers: usize,
    /// Largest request body (decoded). Default 1 MiB.
    pub max_body_bytes: u64,
    /// Most open connections; at the cap the server stops accepting (new clients wait in the
    /// kernel's backlog) until the count is below 90% of it. Default 10,000.
    pub max_connections: usize,
    /// Length of the listen backlog asked of the kernel (which may cap it, e.g. at
    /// `net.core.somaxconn`). Default 1024.
    pub backlog: i32,
    /// Bind with `SO_REUSEPORT`, so several servers (workers) can listen on the same address and
    /// the kernel spreads connections between them (on Linux; macOS allows the bind but does not
    /// balance). Default false.
    pub reuse_port: bool,
    /// Most connections accepted in one loop turn, so a flood of connects can't starve the
    /// clients already connected. Default 128.
    pub accept_batch: usize,
    /// How long to pause accepting after the process ran out of file descriptors or memory.
    /// Default 100 ms.
    pub accept_backoff: Duration,
    /// A loop turn longer than this (a handler that spins or blocks holds every connection of
    /// the loop up meanwhile) is counted (`quiesce_slow_turns_total`) and logged at WARN,
    /// naming the request whose handler was running when the turn went past it; at most one
    /// line a second. Noticed by the loop itself, which compares the processor's cycle counter
    /// with the turn's deadline after each handler call (no clock read, no thread). Zero turns
    /// it off. Default 100 ms.
    pub slow_turn: Duration,
    /// Most threads of the server's pool for blocking work ([`Response::blocking`](crate::Response::blocking)).
    /// They start as jobs need them, none before the first. Default 8.
    pub blocking_threads: usize,
    /// Most jobs waiting for one of those threads; one more is answered `503` with
    /// `Retry-After` at once. Default 1024 (128 per default thread).
    pub blocking_queue: usize,
}

impl ServerConfig {
    /// The defaults, as a constant.
    pub const DEFAULT: ServerConfig = ServerConfig {
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
        handle_signals: true,
        drain_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(30),
        drain_new_grace: Duration::from_secs(1),
        drain_idle_grace: Duration::from_millis(100),
        header_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(30),
        drain_write_timeout: Duration::from_secs(5),
        linger_timeout: Duration::from_millis(500),
        max_uri_bytes: 8 * 1024,
        max_head_bytes: 16 * 1024,
        max_headers: 100,
        max_body_bytes: 1024 * 1024,
        max_connections: 10_000,
        backlog: 1024,
        reuse_port: false,
        accept_batch: 128,
        accept_backoff: Duration::from_millis(100),
        slow_turn: Duration::from_millis(100),
        blocking_threads: 8,
        blocking_queue: 8 * 128,
    };
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::DEFAULT
    }
}
