//! Slowloris: 200 connections that send a partial head and then one byte every 200 ms must not
//! keep a normal client waiting, and each must get `408` + `Connection: close` + EOF once the
//! header timeout (3 s, counted from its first byte) has passed; dribbling does not extend it.
//!
//! All 200 slow connections are driven from one thread with non-blocking sockets.

mod common;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SLOW_CONNECTIONS: usize = 200;
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// The 408 may come this much before `HEADER_TIMEOUT` after our first byte (timer granularity).
const EARLY_TOLERANCE: Duration = Duration::from_millis(100);
/// Latest acceptable 408, after the first byte: `HEADER_TIMEOUT` plus a generous margin.
const LATEST: Duration = Duration::from_secs(6);
const DRIBBLE_EVERY: Duration = Duration::from_millis(200);
const SWEEP_EVERY: Duration = Duration::from_millis(5);
const NORMAL_REQUESTS: usize = 20;
/// The partial head each slow connection starts with; the dribbled bytes extend the last value.
const PARTIAL_HEAD: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Slow: ";

/// One slow connection, as seen by the client.
struct Slow {
    stream: TcpStream,
    /// Just before the first byte was written.
    first_byte: Instant,
    next_dribble: Instant,
    dribbled: usize,
    received: Vec<u8>,
    /// When the first byte of the answer was seen.
    answered: Option<Instant>,
    /// How the connection ended (`Ok` for EOF), and when.
    ended: Option<(Instant, Result<(), String>)>,
    /// A write that failed before any answer arrived.
    write_error: Option<String>,
}

impl Slow {
    fn open(addr: SocketAddr) -> Slow {
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("set_write_timeout");
        let first_byte = Instant::now();
        stream.write_all(PARTIAL_HEAD).expect("write the partial head");
        stream.set_nonblocking(true).expect("set_nonblocking");
        Slow {
            stream,
            first_byte,
            next_dribble: first_byte + DRIBBLE_EVERY,
            dribbled: 0,
            received: Vec::new(),
            answered: None,
            ended: None,
            write_error: None,
        }
    }

    /// Reads whatever is there without blocking.
    fn poll_read(&mut self, now: Instant) {
        let mut chunk = [0u8; 1024];
        while self.ended.is_none() {
            match read_some(&mut self.stream, &mut chunk) {
                Ok(0) => self.ended = Some((now, Ok(()))),
                Ok(n) => {
                    self.answered.get_or_insert(now);
                    self.received.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.ended = Some((now, Err(e.to_string()))),
            }
        }
    }

    /// Sends the next byte if it is due, until an answer arrives.
    fn dribble(&mut self, now: Instant) {
        if self.answered.is_some() || self.ended.is_some() || self.write_error.is_some() || now < self.next_dribble {
            return;
        }
        match self.stream.write(b"a") {
            Ok(1) => {
                self.dribbled += 1;
                self.next_dribble += DRIBBLE_EVERY;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => self.write_error = Some(e.to_string()),
        }
    }

    /// Any sign from the server: bytes, EOF or an error.
    fn heard_from_server(&self) -> bool {
        self.answered.is_some() || self.ended.is_some() || self.write_error.is_some()
    }

    /// Checks what this connection got; `Err` says what is wrong.
    fn verdict(&self) -> Result<(), String> {
        let got = format!("{:?}", String::from_utf8_lossy(&self.received));
        if let Some(e) = &self.write_error {
            return Err(format!("a dribbled byte could not be written before any answer: {e}; received {got}"));
        }
        let Some(answered) = self.answered else {
            return Err(format!(
                "no answer within {LATEST:?} (dribbled {} bytes); end: {:?}",
                self.dribbled, self.ended
            ));
        };
        let after = answered - self.first_byte;
        let head = match parse_response_head(&self.received) {
            Ok(Some(head)) => head,
            other => return Err(format!("not a complete response head ({:?}): {got}", other.map(|h| h.is_some()))),
        };
        if !self.received.starts_with(b"HTTP/1.1 408 ") {
            return Err(format!("expected `HTTP/1.1 408`, got {got}"));
        }
        if !connection_lists(&head.headers, "close") {
            return Err(format!("408 without Connection: close: {got}"));
        }
        let length = header_in(&head.headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
        if length.map(|n| head.len + n) != Some(self.received.len()) {
            return Err(format!("the 408 is not exactly one response framed by Content-Length: {got}"));
        }
        match &self.ended {
            Some((_, Ok(()))) => {}
            Some((_, Err(e))) => return Err(format!("not a clean close after the 408: {e}")),
            None => return Err(format!("no EOF after the 408 (answered {after:?} after the first byte)")),
        }
        if after + EARLY_TOLERANCE < HEADER_TIMEOUT {
            return Err(format!("408 after only {after:?}; the header timeout is {HEADER_TIMEOUT:?}"));
        }
        if after > LATEST {
            return Err(format!("408 only {after:?} after the first byte (dribbled {} bytes)", self.dribbled));
        }
        if self.dribbled < 5 {
            return Err(format!("only {} bytes were dribbled before the 408", self.dribbled));
        }
        Ok(())
    }
}

/// Raises the soft RLIMIT_NOFILE of this process (inherited by the server) to at least `want`
/// when the hard limit allows.
fn raise_nofile_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    let want = libc::rlim_t::try_from(want).expect("rlim_t");
    if limit.rlim_cur >= want {
        return;
    }
    assert!(limit.rlim_max >= want, "RLIMIT_NOFILE hard limit {} is below the {want} this test needs", limit.rlim_max);
    limit.rlim_cur = want;
    // SAFETY: setrlimit(2) reads the struct we pass.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

#[test]
fn slowloris_gets_408_and_does_not_block_others() {
    raise_nofile_limit(1024);
    let server = Quiesce::start(&["--header-timeout", "3s"]);
    let addr = server.addr();
    let started = Instant::now();

    let slows: Vec<Slow> = (0..SLOW_CONNECTIONS).map(|_| Slow::open(addr)).collect();
    let opened = started.elapsed();

    // One thread drives all slow connections; on request it reports which of them have heard
    // from the server so far.
    let (check_tx, check_rx) = mpsc::channel::<()>();
    let (report_tx, report_rx) = mpsc::channel::<Vec<usize>>();
    let driver = thread::spawn(move || {
        let mut slows = slows;
        let deadline = slows.iter().map(|s| s.first_byte).max().expect("slow connections") + LATEST;
        loop {
            let now = Instant::now();
            for slow in &mut slows {
                slow.poll_read(now);
                slow.dribble(now);
            }
            if check_rx.try_recv().is_ok() {
                let heard = slows.iter().enumerate().filter(|(_, s)| s.heard_from_server()).map(|(i, _)| i).collect();
                let _ = report_tx.send(heard);
            }
            if now > deadline || slows.iter().all(|s| s.ended.is_some() || s.write_error.is_some()) {
                break slows;
            }
            thread::sleep(SWEEP_EVERY);
        }
    });

    // A normal client on keep-alive, while all slow connections are open and dribbling.
    let mut normal = connect(addr);
    for i in 0..NORMAL_REQUESTS {
        let resp = normal.request(&get("/plaintext")).unwrap_or_else(|e| panic!("normal request {i}: {e}"));
        assert_ok_body(&resp, "Hello, World!");
        assert!(!resp.is_close(), "normal request {i} got Connection: close: {resp:?}");
        // Time matters only to spread the requests over the dribbling.
        thread::sleep(Duration::from_millis(25));
    }
    let normal_done = started.elapsed();
    // Every normal request was answered; now check that no slow connection has heard anything
    // yet: they were all still open (and unanswered) while the normal client was served.
    check_tx.send(()).expect("driver alive");
    let heard = report_rx.recv_timeout(Duration::from_secs(5)).expect("driver report");
    assert!(
        heard.is_empty(),
        "{} of {SLOW_CONNECTIONS} slow connections were already answered or closed when the {NORMAL_REQUESTS} \
         normal requests were done ({normal_done:?} after the start, the slow ones opened within {opened:?}): {heard:?}",
        heard.len()
    );

    let slows = driver.join().expect("driver thread panicked");
    let failures: Vec<String> =
        slows.iter().enumerate().filter_map(|(i, s)| s.verdict().err().map(|e| format!("slow {i}: {e}"))).collect();
    let answered: Vec<Duration> = slows.iter().filter_map(|s| Some(s.answered? - s.first_byte)).collect();
    println!(
        "slowloris: {SLOW_CONNECTIONS} opened in {opened:?}; {NORMAL_REQUESTS} normal requests done after \
         {normal_done:?}; 408s after {:?}..{:?}; total {:?}",
        answered.iter().min(),
        answered.iter().max(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {SLOW_CONNECTIONS} slow connections failed:\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );

    // The server is still fine.
    let resp = normal.request(&get("/plaintext")).expect("normal request after the slowloris");
    assert_ok_body(&resp, "Hello, World!");
}
