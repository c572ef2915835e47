//! One `read` that a stop signal cannot fail.
//!
//! On Linux a blocking socket read with a timeout (`SO_RCVTIMEO`, which every test client sets)
//! fails with `EINTR` when the process is stopped and continued (SIGSTOP/SIGCONT, a frozen
//! cgroup), even with no signal handler installed: signal(7), "Interruption of system calls and
//! library functions by stop signals". `read_exact` and `read_to_end` already retry it; a bare
//! `read` does not, so the tests read through this.

use std::io::{self, Read};

/// `r.read(buf)`, retried while it fails with `Interrupted`. A retry starts the socket's read
/// timeout afresh: where a short wait's length matters, count what is left of it instead
/// (`Client::close_state`).
pub fn read_some<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
