//! Lines on their way to a destination that may stall for ever (a pipe nobody reads, a socket,
//! a terminal): written at once while the destination takes them without waiting, and
//! otherwise handed to a bounded queue and one writer thread per destination, started the first
//! time it is needed, so the loops never wait. Used for stderr (every log line) and for an access
//! log that is not a regular file.
//!
//! The thread is not started before a write would wait: a process with more than one thread
//! pays for it in every system call (glibc's cancellation points), about 40 instructions each,
//! which is 5 to 10 % of a keep-alive request.
//!
//! Nothing here stops the server or changes its exit: past the queue's cap, new lines are
//! dropped; a write that fails (a reader that left, a full disk) loses what it held. Both are
//! counted in [`LogHealth`] (`/metrics`, the exit summary), and a failure is reported once per
//! episode (when it starts for the access log; when writing works again for stderr, which
//! cannot report its own failure while it lasts).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

use log::{info, warn};
use quiesce::metrics::{LogHealth, LogStream};

/// A queued buffer this large takes no more lines: the next go into a new one, so the writer
/// thread writes at most this much in one `write`.
const APPEND_UP_TO: usize = 64 * 1024;

/// Buffers on their way to the writer thread.
#[derive(Debug)]
pub struct Handoff {
    queue: Mutex<Queue>,
    /// A buffer came, or the end.
    more: Condvar,
    /// The thread wrote everything and stopped.
    finished: Condvar,
    /// Which log this is, for the counts and the reports.
    stream: LogStream,
    /// Most bytes queued; past it, lines are dropped.
    cap: usize,
    /// The destination.
    file: Arc<File>,
    /// The writer thread's name.
    name: String,
}

#[derive(Debug, Default)]
struct Queue {
    buffers: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Written-out buffers, for reuse (no allocation per turn or per line).
    spare: Vec<Vec<u8>>,
    /// The writer thread runs: from then on everything goes through the queue, in order.
    started: bool,
    closing: bool,
    done: bool,
}

impl Handoff {
    /// A handoff to `file`, which holds at most `cap` bytes queued; its writer thread is named
    /// `name` if it has to start.
    pub fn open(file: File, stream: LogStream, cap: usize, name: &str) -> Arc<Handoff> {
        Arc::new(Handoff {
            queue: Mutex::default(),
            more: Condvar::new(),
            finished: Condvar::new(),
            stream,
            cap,
            file: Arc::new(file),
            name: name.into(),
        })
    }

    /// Writes what of `bytes` the destination takes now, while nothing waits in the queue and
    /// the thread has not started (`queue` held, so lines keep their order); queues the rest
    /// and starts the thread. False when the rest could not be queued (counted as lost).
    fn write_or_queue(self: &Arc<Self>, queue: &mut Queue, bytes: &[u8]) -> Result<usize, ()> {
        let written = if queue.started { 0 } else { write_now(&self.file, bytes) };
        if written == bytes.len() {
            return Ok(written);
        }
        if !queue.started {
            let theirs = Arc::clone(self);
            let spawned = thread::Builder::new().name(self.name.clone()).spawn(move || theirs.write_all_to());
            if spawned.is_err() {
                LogHealth::global().lost(self.stream, lines_in(&bytes[written..]).max(1));
                return Err(());
            }
            queue.started = true;
        }
        Ok(written)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `buf` over (leaving a spare buffer in its place), unless that would hold more
    /// than the cap: then `Err` with the number of lines dropped (counted as lost), and `buf`
    /// is emptied.
    pub fn give(self: &Arc<Self>, buf: &mut Vec<u8>) -> Result<(), u64> {
        let mut queue = self.lock();
        if queue.bytes + buf.len() > self.cap || queue.done {
            drop(queue);
            let lines = lines_in(buf);
            LogHealth::global().lost(self.stream, lines);
            buf.clear();
            return Err(lines);
        }
        match self.write_or_queue(&mut queue, buf) {
            Ok(written) if written == buf.len() => {
                buf.clear();
                return Ok(());
            }
            Ok(written) => {
                buf.drain(..written);
            }
            Err(()) => {
                let lines = lines_in(buf);
                buf.clear();
                return Err(lines);
            }
        }
        let spare = queue.spare.pop().unwrap_or_default();
        queue.bytes += buf.len();
        queue.buffers.push_back(std::mem::replace(buf, spare));
        drop(queue);
        self.more.notify_one();
        Ok(())
    }

    /// Queues a copy of `bytes` (whole lines), added to the last buffer waiting when it has
    /// room. Past the cap they are dropped and counted: returns whether they were queued.
    pub fn push(self: &Arc<Self>, bytes: &[u8]) -> bool {
        let mut queue = self.lock();
        if queue.bytes + bytes.len() > self.cap || queue.done || queue.closing {
            drop(queue);
            LogHealth::global().lost(self.stream, lines_in(bytes).max(1));
            return false;
        }
        let bytes = match self.write_or_queue(&mut queue, bytes) {
            Ok(written) if written == bytes.len() => return true,
            Ok(written) => &bytes[written..],
            Err(()) => return false,
        };
        queue.bytes += bytes.len();
        match queue.buffers.back_mut() {
            // The back buffer is not being written: the thread takes buffers from the front.
            Some(last) if last.len() + bytes.len() <= APPEND_UP_TO => last.extend_from_slice(bytes),
            _ => {
                let mut buf = queue.spare.pop().unwrap_or_default();
                buf.extend_from_slice(bytes);
                queue.buffers.push_back(buf);
            }
        }
        drop(queue);
        self.more.notify_one();
        true
    }

    /// The writer thread: writes each buffer whole, waiting as long as the destination takes.
    /// What a failed write leaves of its buffer is lost and counted.
    fn write_all_to(&self) {
        let file = &*self.file;
        let health = LogHealth::global();
        // The current failure, if writes fail: the first error, and lines lost since.
        let mut failing: Option<(io::Error, u64)> = None;
        loop {
            let mut queue = self.lock();
            while queue.buffers.is_empty() && !queue.closing {
                queue = self.more.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
            let Some(mut buf) = queue.buffers.pop_front() else {
                queue.done = true;
                drop(queue);
                self.finished.notify_all();
                return;
            };
            drop(queue);
            match write_out(file, &buf) {
                Ok(()) => {
                    if let Some((e, lost)) = failing.take() {
                        self.recovered(&e, lost);
                    }
                }
                Err((e, written)) => {
                    let lost = lines_in(&buf[written..]);
                    health.failed(self.stream);
                    health.lost(self.stream, lost);
                    match failing.as_mut() {
                        Some((_, total)) => *total += lost,
                        None => {
                            if self.stream == LogStream::Access {
                                warn!(
                                    "access log: {e}; lines are lost until writing works again (counted in /metrics)"
                                );
                            }
                            failing = Some((e, lost));
                        }
                    }
                }
            }
            let taken = buf.len();
            buf.clear();
            let mut queue = self.lock();
            queue.bytes -= taken;
            if queue.spare.len() < 8 {
                queue.spare.push(buf);
            }
        }
    }

    /// Writing works again after `e` lost `lost` lines: said once, now that it can be read.
    fn recovered(&self, e: &io::Error, lost: u64) {
        match self.stream {
            LogStream::Access => info!("access log: writing again; {lost} lines were lost ({e})"),
            LogStream::Stderr => warn!("stderr: {e}: {lost} log lines were lost (counted in /metrics)"),
        }
    }

    /// Asks the thread to stop once it wrote everything; waits until `deadline` at most.
    /// Returns the bytes still not written (their lines are counted as lost).
    pub fn finish(&self, deadline: Instant) -> usize {
        let mut queue = self.lock();
        queue.closing = true;
        if !queue.started {
            // Everything went out as it came.
            queue.done = true;
            return 0;
        }
        self.more.notify_all();
        while !queue.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let lines = queue.buffers.iter().map(|b| lines_in(b)).sum();
                LogHealth::global().lost(self.stream, lines);
                return queue.bytes;
            }
            queue = self.finished.wait_timeout(queue, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        0
    }
}

/// Writes what of `bytes` `file` takes without waiting: while `poll` says it is writable, at
/// most a page at a time (a pipe with room takes that much whole). Stops at an error, which the
/// writer thread then meets and reports.
fn write_now(file: &File, bytes: &[u8]) -> usize {
    const AT_ONCE: usize = 4096;
    let mut done = 0;
    while done < bytes.len() {
        let mut ready = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        let polled = unsafe { libc::poll(&mut ready, 1, 0) };
        if polled != 1 || ready.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != libc::POLLOUT {
            break;
        }
        let end = bytes.len().min(done + AT_ONCE);
        match (&*file).write(&bytes[done..end]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    done
}

/// Writes `buf` whole, retrying short writes; on an error, how much was written before it.
fn write_out(mut file: &File, buf: &[u8]) -> Result<(), (io::Error, usize)> {
    let mut done = 0;
    while done < buf.len() {
        match file.write(&buf[done..]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, done)),
        }
    }
    Ok(())
}

/// Lines (newlines) in `bytes`.
pub fn lines_in(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn pushed_lines_arrive_in_order_and_finish_waits_for_them() {
        let (mut reader, pipe) = std::io::pipe().unwrap();
        let handoff = Handoff::open(File::from(std::os::fd::OwnedFd::from(pipe)), LogStream::Stderr, 1 << 20, "t");
        for i in 0..1000 {
            assert!(handoff.push(format!("line {i}\n").as_bytes()));
        }
        assert_eq!(handoff.finish(Instant::now() + Duration::from_secs(10)), 0);
        drop(handoff);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
    }

    #[test]
    fn a_reader_that_left_costs_counted_lines_not_the_caller() {
        let (reader, pipe) = std::io::pipe().unwrap();
        drop(reader);
        let before = LogHealth::global().counts();
        let handoff = Handoff::open(File::from(std::os::fd::OwnedFd::from(pipe)), LogStream::Access, 1 << 20, "t");
        for _ in 0..10 {
            assert!(handoff.push(b"a line\n"));
        }
        assert_eq!(handoff.finish(Instant::now() + Duration::from_secs(10)), 0);
        let after = LogHealth::global().counts();
        assert!(after.errors(LogStream::Access) > before.errors(LogStream::Access));
        assert!(after.lost(LogStream::Access) >= before.lost(LogStream::Access) + 10);
    }

    #[test]
    fn past_the_cap_lines_are_dropped_and_counted() {
        // A pipe nobody reads: the thread blocks once it is full, the queue fills, and pushes
        // past the cap are refused at once.
        let (reader, pipe) = std::io::pipe().unwrap();
        let handoff = Handoff::open(File::from(std::os::fd::OwnedFd::from(pipe)), LogStream::Stderr, 4096, "t");
        let line = [b'x'; 99].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        let mut refused = 0;
        for _ in 0..10_000 {
            if !handoff.push(&line) {
                refused += 1;
            }
        }
        assert!(refused > 0, "the queue never filled");
        assert!(handoff.finish(Instant::now() + Duration::from_millis(50)) > 0);
        drop(reader);
    }
}
