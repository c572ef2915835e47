//! `GET /work?ms=N`: blocking work off the loop. The handler defers the answer and queues the
//! job on a [`BlockingPool`], a few threads that sleep (or, with `&spin=1`, burn CPU) for the
//! time asked and answer through the responder. The queue is bounded: when it is full the
//! request gets 503 at once instead of waiting behind everyone else.
//!
//! The threads start with the first job. A process with more than one thread pays for it on
//! every system call (glibc then wraps each in cancellation-point handling: about 140
//! instructions per keep-alive request here, 5% of the whole), so a server that never serves
//! `/work` must not have them.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Responder, Response};

/// Jobs waiting for a thread, at most, before new ones are refused.
pub const QUEUE_PER_THREAD: usize = 128;

/// One request's work: how long, sleeping or spinning, and where to answer.
#[derive(Debug)]
pub struct Job {
    /// Where the answer goes.
    pub responder: Responder,
    /// How long the work takes.
    pub duration: Duration,
    /// Burn CPU for `duration` instead of sleeping.
    pub spin: bool,
}

impl Job {
    /// Does the work and answers `worked N ms`; a client gone meanwhile is not answered, and
    /// one gone before the job's turn came costs no work at all (a queue of jobs whose clients
    /// gave up must not keep the pool busy and turn new clients away). The sleep stands for a
    /// blocking call, which cannot be stopped half-way; the spin checks as it goes.
    fn run(self) {
        if self.responder.is_closed() {
            return;
        }
        if self.spin {
            let until = Instant::now() + self.duration;
            while Instant::now() < until && !self.responder.is_closed() {
                std::hint::spin_loop();
            }
        } else {
            thread::sleep(self.duration);
        }
        let mut response = Response::new();
        response.set_body(format!("worked {} ms\n", self.duration.as_millis()));
        // A client that left gets nothing; the responder says so, and that is all.
        let _ = self.responder.send(response);
    }

    /// Answers 503: the pool is full.
    fn refuse(self) {
        let mut response = Response::new();
        response.set_status(503).set_body("busy: too much blocking work queued\n");
        let _ = response.add_header("Retry-After", "1");
        let _ = self.responder.send(response);
    }
}

/// A few threads doing blocking work, fed through a bounded queue; they start with the first
/// job. Cheap to clone. Dropping the last handle lets the threads finish the queued jobs and
/// exit; nothing waits for them.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    threads: usize,
    /// The queue, once the threads started (`None` if they could not).
    jobs: Arc<OnceLock<Option<SyncSender<Job>>>>,
}

impl BlockingPool {
    /// A pool of `threads` threads (at least one), with room for `threads *`
    /// [`QUEUE_PER_THREAD`] jobs waiting. No thread starts before the first job.
    pub fn new(threads: usize) -> BlockingPool {
        BlockingPool { threads: threads.max(1), jobs: Arc::default() }
    }

    /// Queues `job`, or answers it with 503 at once when the queue is full (or the threads
    /// could not start).
    pub fn submit(&self, job: Job) {
        let Some(jobs) = self.jobs.get_or_init(|| start(self.threads)) else { return job.refuse() };
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job.refuse(),
        }
    }
}

/// Starts the threads; `None` (and a log line) if the system refuses.
fn start(threads: usize) -> Option<SyncSender<Job>> {
    let (jobs, queue) = mpsc::sync_channel(threads * QUEUE_PER_THREAD);
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..threads {
        let queue = Arc::clone(&queue);
        if let Err(e) = thread::Builder::new().name(format!("quiesce-blocking-{i}")).spawn(move || work(&queue)) {
            log::error!("cannot start the threads for blocking work: {e}");
            // The threads already started serve on with the queue; none at all means refusing.
            if i == 0 {
                return None;
            }
            break;
        }
    }
    Some(jobs)
}

/// A pool thread: runs jobs until every handle to the pool is gone.
fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while doing it.
        let next = crate::sync::lock(queue).recv();
        match next {
            Ok(job) => job.run(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_whose_client_left_costs_no_work() {
        // Connected to nothing: closed, as a responder whose client left is.
        let responder = Response::new().defer();
        assert!(responder.is_closed());
        let job = Job { responder, duration: Duration::from_secs(3600), spin: false };
        let (done, finished) = mpsc::channel();
        thread::spawn(move || {
            job.run();
            let _ = done.send(());
        });
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(()), "it slept for its gone client");
    }
}
