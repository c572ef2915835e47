#![allow(dead_code)]
//! Test harness shared by the integration tests: spawns the `quiesce` binary on an ephemeral
//! loopback port, collects its stderr, and speaks raw HTTP/1.1 over `std::net::TcpStream`.
//!
//! Everything here is bounded in time: sockets carry read/write timeouts, waits have deadlines
//! and the child process is killed and reaped when the guard is dropped.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

mod retry;
pub use retry::read_some;

/// Read/write timeout put on every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the binary gets to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Granularity of the deadline-bounded polling of the child's exit.
const POLL_STEP: Duration = Duration::from_millis(5);

pub const SIGINT: i32 = libc::SIGINT;
pub const SIGTERM: i32 = libc::SIGTERM;

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// Lines a child wrote to stderr, collected by a thread.
#[derive(Default)]
pub struct LogState {
    pub lines: Vec<String>,
    /// stderr reached end of file (the process closed it, normally by exiting).
    pub eof: bool,
}

pub type SharedLog = Arc<(Mutex<LogState>, Condvar)>;

pub fn lock(log: &SharedLog) -> MutexGuard<'_, LogState> {
    log.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running `quiesce` process; killed (SIGKILL) and reaped on drop if still running.
pub struct Quiesce {
    child: Child,
    addr: SocketAddr,
    log: SharedLog,
    status: Option<ExitStatus>,
}

impl Quiesce {
    /// Spawns the binary with `--addr 127.0.0.1:0` plus `extra_args` and waits (at most 10 s)
    /// for the `listening on http://IP:PORT` line on stderr.
    pub fn start(extra_args: &[&str]) -> Quiesce {
        Quiesce::spawn(quiesce_command(extra_args))
    }

    /// Spawns `command` (a quiesce the test built itself: environment, `pre_exec`, another
    /// path) with stderr collected, and waits (at most 10 s) for `listening on http://IP:PORT`.
    pub fn spawn(mut command: Command) -> Quiesce {
        command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // A binary copied just now can be briefly busy (ETXTBSY) while another test's fork still
        // holds the copy's write descriptor: retry a few times.
        let mut attempts = 0;
        let mut child = loop {
            match command.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("spawn {command:?}: {e}"),
            }
        };
        let stderr = child.stderr.take().expect("piped stderr");
        let log: SharedLog = Arc::default();
        spawn_log_collector(stderr, Arc::clone(&log));

        let mut server = Quiesce { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log, status: None };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = {
            let mut state = lock(&server.log);
            loop {
                if let Some(addr) = state.lines.iter().find_map(|l| parse_listening(l)) {
                    break Some(addr);
                }
                let now = Instant::now();
                if state.eof || now >= deadline {
                    break None;
                }
                state = server.log.1.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
        };
        match addr {
            Some(addr) => {
                assert!(addr.ip().is_loopback(), "server bound a non-loopback address: {addr}");
                assert_ne!(addr.port(), 0, "server reported port 0");
                server.addr = addr;
                server
            }
            None => {
                let status = server.child.try_wait().ok().flatten();
                panic!(
                    "{command:?} did not log `listening on http://IP:PORT` within \
                     {STARTUP_TIMEOUT:?} (exit status: {status:?}); stderr so far:\n{}",
                    server.logs().join("\n")
                );
            }
        }
    }

    /// The address the server reported it is listening on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. [`SIGINT`], [`SIGTERM`]) to the process. Panics if it has been reaped.
    pub fn signal(&mut self, sig: i32) {
        assert!(
            self.status.is_none() && matches!(self.child.try_wait(), Ok(None)),
            "cannot send signal {sig}: the process has already exited; logs:\n{}",
            self.logs().join("\n")
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: plain kill(2) on our own, not yet reaped, child process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", io::Error::last_os_error());
    }

    /// The exit status if the process has exited (reaps it), without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits at most `timeout` for the process to exit; panics with the collected logs if it
    /// doesn't. After the exit, waits briefly for stderr to reach EOF so [`Self::logs`] is
    /// complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_status() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!("quiesce did not exit within {timeout:?}; logs:\n{}", self.logs().join("\n"));
            }
            thread::sleep(POLL_STEP);
        };
        self.wait_stderr_eof(Duration::from_secs(2));
        status
    }

    /// Waits (bounded) until the stderr collector has seen EOF.
    pub fn wait_stderr_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.log);
        while !state.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.log.1.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// All stderr lines collected so far.
    pub fn logs(&self) -> Vec<String> {
        lock(&self.log).lines.clone()
    }

    /// The logs as one string, for assertion messages.
    pub fn logs_text(&self) -> String {
        self.logs().join("\n")
    }

    /// Asserts the exit code of `status` (from this server), with its logs in the message.
    pub fn assert_exit_code(&self, status: ExitStatus, code: i32) {
        assert_eq!(
            status.code(),
            Some(code),
            "exit status {status:?}, expected code {code}; logs:\n{}",
            self.logs_text()
        );
    }

    /// How many stderr lines so far contain `substr`.
    pub fn count_logs(&self, substr: &str) -> usize {
        lock(&self.log).lines.iter().filter(|l| l.contains(substr)).count()
    }

    /// Waits at most `timeout` for a stderr line containing `substr`.
    pub fn wait_for_log(&self, substr: &str, timeout: Duration) -> bool {
        self.wait_for_log_line(substr, timeout).is_some()
    }

    /// Waits at most `timeout` for a stderr line containing `substr` and returns it.
    pub fn wait_for_log_line(&self, substr: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.log);
        loop {
            if let Some(line) = state.lines.iter().find(|l| l.contains(substr)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.eof || now >= deadline {
                return None;
            }
            state = self.log.1.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Like [`Self::wait_for_log`], but panics with the logs when the line doesn't appear.
    pub fn expect_log(&self, substr: &str, timeout: Duration) -> String {
        match self.wait_for_log_line(substr, timeout) {
            Some(line) => line,
            None => panic!("no log line containing {substr:?} within {timeout:?}; logs:\n{}", self.logs_text()),
        }
    }

    /// Sends SIGHUP and returns the pid of the new process it started (waiting up to `timeout`
    /// for the line that names it).
    pub fn sighup_restart(&mut self, timeout: Duration) -> u32 {
        self.signal(libc::SIGHUP);
        let started = self.expect_log("received SIGHUP: started new process", timeout);
        started
            .split("started new process ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {started:?}"))
    }
}

impl Drop for Quiesce {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, whatever the test did.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The quiesce binary with `--addr 127.0.0.1:0` and `args` (and no systemd notification socket
/// inherited from the environment the tests run in).
pub fn quiesce_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiesce"));
    command.args(["--addr", "127.0.0.1:0"]).args(args).env_remove("NOTIFY_SOCKET");
    command
}

/// Collects `stderr` line by line into `log` until end of file, on its own thread.
pub fn spawn_log_collector(stderr: ChildStderr, log: SharedLog) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
                    lock(&log).lines.push(text);
                    log.1.notify_all();
                }
            }
        }
        lock(&log).eof = true;
        log.1.notify_all();
    });
}

/// Extracts the address from a line containing `listening on http://IP:PORT`.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let marker = "listening on http://";
    let rest = &line[line.find(marker)? + marker.len()..];
    // Ends at a space, a path, a list, a parenthesis or (in a JSON log line) a quote.
    let end = rest.find(|c: char| c.is_whitespace() || matches!(c, '/' | ',' | ')' | '"')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Result of running the binary to completion (for `--help`, `--version`, bad flags).
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `--addr 127.0.0.1:0` followed by `args` and waits at most `timeout`
/// for it to exit; panics (after killing it) if it doesn't.
pub fn run_cli(args: &[&str], timeout: Duration) -> CliOutput {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .arg("--addr")
        .arg("127.0.0.1:0")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the quiesce binary");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let err_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL_STEP);
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    match status {
        Some(status) => CliOutput { status, stdout, stderr },
        None => panic!("quiesce {args:?} did not exit within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP client
// ---------------------------------------------------------------------------------------------

/// A response head as parsed by httparse.
pub struct ResponseHead {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub status: u16,
    /// Minor version of the status line (`HTTP/1.x`).
    pub version: u8,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

/// Parses the response head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, httparse::Error> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    Ok(match parsed.parse(buf)? {
        httparse::Status::Complete(len) => Some(ResponseHead {
            len,
            status: parsed.code.unwrap_or(0),
            version: parsed.version.unwrap_or(0),
            reason: parsed.reason.unwrap_or("").to_string(),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
        }),
        httparse::Status::Partial => None,
    })
}

/// The first field called `name` (case-insensitive) among `headers`.
pub fn header_in<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Whether the `Connection` fields among `headers` list `token` (case-insensitive).
pub fn connection_lists(headers: &[(String, String)], token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Minor version of the status line (`HTTP/1.x`).
    pub version: u8,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every header named `name` (case-insensitive).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// True if a `Connection` header lists `token` (case-insensitive).
    pub fn connection_has(&self, token: &str) -> bool {
        connection_lists(&self.headers, token)
    }

    /// `Connection: close` present.
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    pub fn is_close(&self) -> bool {
        self.connection_has("close")
    }

    /// The `Content-Length` header as a number.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }
}

/// Why reading a response failed (carried inside the `io::Error` we return).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// The server closed the connection before any byte of a response.
    EofBeforeResponse,
    /// The server closed the connection in the middle of a response.
    Truncated,
    /// The bytes received are not a valid HTTP/1.x response.
    Malformed,
    /// A final response without `Content-Length`.
    NoContentLength,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ProtoError::EofBeforeResponse => "connection closed before any response byte",
            ProtoError::Truncated => "connection closed in the middle of a response",
            ProtoError::Malformed => "malformed response",
            ProtoError::NoContentLength => "response without Content-Length",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ProtoError {}

/// Classification of a client-side failure, for the load test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    ConnectRefused,
    Reset,
    EofBeforeResponse,
    Truncated,
    Malformed,
    Timeout,
    Other,
}

/// Classifies an error returned by [`Client::connect`], [`Client::send`] or
/// [`Client::read_response`].
pub fn classify(err: &io::Error) -> Failure {
    let proto = err.get_ref().and_then(|e| {
        e.downcast_ref::<ProtoError>().copied().or_else(|| e.downcast_ref::<ProtoErrorWithDetail>().map(|d| d.kind))
    });
    if let Some(proto) = proto {
        return match proto {
            ProtoError::EofBeforeResponse => Failure::EofBeforeResponse,
            ProtoError::Truncated => Failure::Truncated,
            ProtoError::Malformed | ProtoError::NoContentLength => Failure::Malformed,
        };
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Failure::ConnectRefused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Other,
    }
}

/// What a read on a connection showed, see [`Client::close_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseState {
    /// Orderly close: read returned 0.
    Eof,
    /// The connection was reset (ECONNRESET).
    Reset,
    /// Still open: nothing arrived within the timeout.
    Open,
    /// Still open and more bytes arrived (or were already buffered).
    Data(Vec<u8>),
}

/// A client connection with a small read buffer, so bytes past one response are kept for the
/// next.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects with [`IO_TIMEOUT`] as connect, read and write timeout.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Client { stream, buf: Vec::new() })
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends `bytes` and reads one response.
    pub fn request(&mut self, bytes: &[u8]) -> io::Result<Response> {
        self.send(bytes)?;
        self.read_response()
    }

    /// Reads exactly one final response (skipping `1xx` interim ones); the body is framed by
    /// `Content-Length`.
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_one(true)
    }

    /// Reads the response to a HEAD request: same head, no body read.
    pub fn read_head_response(&mut self) -> io::Result<Response> {
        self.read_one(false)
    }

    /// Bytes received but not yet consumed by a `read_*` call.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = read_some(&mut self.stream, &mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn read_one(&mut self, with_body: bool) -> io::Result<Response> {
        let mut seen_any = false;
        loop {
            let parsed = match parse_response_head(&self.buf) {
                Ok(parsed) => parsed,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ProtoErrorWithDetail::boxed(
                            ProtoError::Malformed,
                            format!("{e}: {:?}", String::from_utf8_lossy(&self.buf)),
                        ),
                    ));
                }
            };
            let Some(ResponseHead { len: head_len, status, version, reason, headers }) = parsed else {
                if !self.buf.is_empty() {
                    seen_any = true;
                }
                if self.fill()? == 0 {
                    let kind = if seen_any || !self.buf.is_empty() {
                        ProtoError::Truncated
                    } else {
                        ProtoError::EofBeforeResponse
                    };
                    return Err(eof_error(kind));
                }
                continue;
            };
            seen_any = true;
            self.buf.drain(..head_len);
            if (100..200).contains(&status) && status != 101 {
                continue; // interim response, e.g. 100 Continue
            }
            let mut response = Response { status, version, reason, headers, body: Vec::new() };
            let bodyless = !with_body || status == 204 || status == 304;
            if !bodyless && response.is_chunked() {
                while let Some(chunk) = self.read_chunk()? {
                    response.body.extend_from_slice(&chunk);
                }
            } else if !bodyless {
                let Some(len) = response.content_length() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ProtoErrorWithDetail::boxed(ProtoError::NoContentLength, format!("{response:?}")),
                    ));
                };
                while self.buf.len() < len {
                    if self.fill()? == 0 {
                        return Err(eof_error(ProtoError::Truncated));
                    }
                }
                response.body = self.buf.drain(..len).collect();
            }
            return Ok(response);
        }
    }

    /// Reads one chunk of a chunked body: its data, or `None` for the last chunk (whose empty
    /// trailer section is consumed too).
    pub fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let line_end = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(eof_error(ProtoError::Truncated));
            }
        };
        let size_text = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| malformed("chunk size"))?;
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed(size_text))?;
        while self.buf.len() < line_end + 2 + size + 2 {
            if self.fill()? == 0 {
                return Err(eof_error(ProtoError::Truncated));
            }
        }
        let data = self.buf[line_end + 2..line_end + 2 + size].to_vec();
        if &self.buf[line_end + 2 + size..line_end + 4 + size] != b"\r\n" {
            return Err(malformed("no CRLF after chunk data"));
        }
        self.buf.drain(..line_end + 4 + size);
        Ok((size > 0).then_some(data))
    }

    /// Reads until the server closes (a body that ends with the connection), or fails with the
    /// read error (a timeout, a reset).
    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Checks, waiting at most `timeout`, whether the peer closed the connection.
    pub fn close_state(&mut self, timeout: Duration) -> CloseState {
        if !self.buf.is_empty() {
            return CloseState::Data(std::mem::take(&mut self.buf));
        }
        // A read interrupted (a stop and continue) is retried for what is left of `timeout`:
        // retried whole, it could wait for ever under stops that come more often.
        let deadline = Instant::now() + timeout.max(Duration::from_millis(1));
        let mut chunk = [0u8; 4096];
        let state = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break CloseState::Open;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            break match self.stream.read(&mut chunk) {
                Ok(0) => CloseState::Eof,
                Ok(n) => CloseState::Data(chunk[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => match classify(&e) {
                    Failure::Reset => CloseState::Reset,
                    Failure::Timeout => CloseState::Open,
                    _ => panic!("unexpected error while checking for close: {e}"),
                },
            };
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        state
    }

    /// Waits at most `timeout` for the peer to close; a reset counts as closed.
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        matches!(self.close_state(timeout), CloseState::Eof | CloseState::Reset)
    }
}

/// A [`ProtoError`] plus free text, kept inside an `io::Error`.
#[derive(Debug)]
struct ProtoErrorWithDetail {
    kind: ProtoError,
    detail: String,
}

impl ProtoErrorWithDetail {
    fn boxed(kind: ProtoError, detail: String) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(ProtoErrorWithDetail { kind, detail })
    }
}

impl fmt::Display for ProtoErrorWithDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for ProtoErrorWithDetail {}

fn eof_error(kind: ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, kind)
}

// Free-function spellings of the client API.

/// Connects to `addr`; panics on failure (use [`Client::connect`] to handle errors).
pub fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

pub fn send(client: &mut Client, bytes: &[u8]) {
    client.send(bytes).unwrap_or_else(|e| panic!("send {:?}: {e}", String::from_utf8_lossy(bytes)));
}

pub fn read_response(client: &mut Client) -> io::Result<Response> {
    client.read_response()
}

/// Waits at most 2 s for the peer to close (EOF or reset).
pub fn is_closed(client: &mut Client) -> bool {
    client.is_closed_within(Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------------------
// Request builders and common assertions
// ---------------------------------------------------------------------------------------------

/// `GET {path} HTTP/1.1` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `HEAD {path} HTTP/1.1` with a Host header.
pub fn head(path: &str) -> Vec<u8> {
    format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `GET {path} HTTP/1.1` with `Connection: close`.
pub fn get_close(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `POST /echo` with a Content-Length body.
pub fn post_echo(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// The body the hello route answers for `quoted` (already Go-quoted path).
pub fn hello(quoted: &str) -> String {
    format!("Hello, {quoted}")
}

/// Asserts the headers every response must carry: `Date` (a valid HTTP date), `Server:
/// quiesce`, `Content-Length` (matching the body unless `head_only`) and `Content-Type` when
/// there is a body.
pub fn assert_common_headers(resp: &Response, head_only: bool) {
    let date = resp.header("date").unwrap_or_else(|| panic!("no Date header in {resp:?}"));
    assert!(httpdate::parse_http_date(date).is_ok(), "Date header {date:?} is not an HTTP date");
    assert_eq!(resp.header("server"), Some("quiesce"), "Server header in {resp:?}");
    let len = resp.content_length().unwrap_or_else(|| panic!("no valid Content-Length in {resp:?}"));
    if !head_only {
        assert_eq!(len, resp.body.len(), "Content-Length vs body in {resp:?}");
    }
    if len > 0 {
        assert!(resp.header("content-type").is_some(), "no Content-Type on a response with a body: {resp:?}");
    }
    assert_eq!(resp.headers_named("content-length").len(), 1, "exactly one Content-Length in {resp:?}");
}

/// Asserts a 200 with exactly `body`, plus the common headers.
pub fn assert_ok_body(resp: &Response, body: &str) {
    assert_eq!(resp.status, 200, "status of {resp:?}");
    assert_eq!(resp.text(), body, "body of {resp:?}");
    assert_common_headers(resp, false);
}

/// Makes one `/plaintext` request on a fresh connection and closes it. Used as a sync point:
/// once it has been answered, the single-threaded server has processed the bytes that earlier
/// connections sent before it.
pub fn sync_point(addr: SocketAddr) {
    let mut probe = connect(addr);
    let resp = probe.request(&get_close("/plaintext")).unwrap_or_else(|e| panic!("sync-point request failed: {e}"));
    assert_eq!(resp.status, 200, "sync-point response {resp:?}");
}
