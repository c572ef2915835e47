//! The crate's [`Error`]: only what stops the server (binding, the poll itself). A failure on one
//! connection is never an `Error`: it closes that connection and is logged.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum Error {
    /// The listening socket could not be bound.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// Creating or registering with the poll, the waker or the signal source failed.
    Setup(io::Error),
    /// Waiting on the poll failed.
    Poll(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Setup(e) => write!(f, "cannot set up the event loop: {e}"),
            Error::Poll(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } => Some(source),
            Error::Setup(e) | Error::Poll(e) => Some(e),
        }
    }
}
