// The connection-script interpreter: drives one real connection
// (`quiesce::harness::MemoryConnection`, served by `App`) with a script of client actions and
// checks what the server wrote.
//
// Input layout (see README.md):
//
// ```text
// byte 0        config flags
// byte 1        n: number of ops
// 2n bytes      ops, two bytes each: opcode, argument
// rest          the client's byte stream; "send" ops take their next piece from it
// ```
//
// Keeping the HTTP bytes contiguous at the end lets libFuzzer's dictionary and the seeds work on
// plain HTTP, while the op section decides where the stream is split and what happens between
// the pieces (clock, end of stream, a client that stops reading, a drain).
//
// Requests whose path starts with `/later` are deferred: the handler keeps their responders,
// and ops answer them later (a whole response, a drop that must give 500, a stream whose
// pieces go with `try_send`, then a finish or an abandon), as another thread would.

// Shared by the fuzz target (fuzz_targets/connection_script.rs, which checks the invariants
// below and nothing else) and the differential driver (tools/differential/, which compiles this
// file twice, once against the crate at a base revision and once against the working tree, and
// compares what `run` reports through its `seen` hook). Hence plain `//` comments here (an
// `include!`d file takes no inner doc comments) and only the `quiesce` API both sides have.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiesce::app::App;
use quiesce::harness::MemoryConnection;
use quiesce::{ConnState, Handler, Reply, Request, Responder, Response, ServerConfig, Stream, Version};

/// What the interpreter shows its caller as it goes (the fuzz target ignores it; the
/// differential driver writes it down and compares the two sides').
pub enum Seen<'a> {
    /// After every step (each op, and each step of the epilogue): the connection.
    Step(&'a MemoryConnection),
    /// What a responder or stream call returned (`"send ok"`, `"try_send full"`, ...).
    Call(&'static str),
    /// The end of the script: what the handler answered and the access records (when the log
    /// was on).
    End { answers: &'a [Answer], records: Option<&'a [Record]> },
}

/// One access record: its fields that do not depend on the real clock (not `duration`, which
/// is measured on it, not on the harness's; nor `tls`, always `None` here).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub connection_id: u64,
    pub method: String,
    pub target: String,
    pub version: Option<Version>,
    pub status: u16,
    pub body_bytes: u64,
    pub during_drain: bool,
    pub ending: &'static str,
}

/// What the handler answered to one request, in call order.
#[derive(Debug, Clone)]
pub struct Answer {
    head: bool,
    http10: bool,
    status: u16,
    body: Body,
}

/// The body an answer has (or will have).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A whole response with this body.
    Fixed(Vec<u8>),
    /// Deferred, not answered yet: nothing of it may have gone out.
    Pending,
    /// A streamed response: the pieces accepted so far, and how it ended.
    Streamed(Vec<u8>, End),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Open,
    Finished,
    /// Dropped unfinished: cut without its last chunk.
    Cut,
}

/// A deferred request: its answer's index, and its responder or stream.
#[derive(Debug)]
struct Deferred {
    index: usize,
    responder: Option<Responder>,
    stream: Option<Stream>,
}

type Log = Arc<Mutex<Vec<Answer>>>;
type Later = Arc<Mutex<VecDeque<Deferred>>>;

/// `App`, recording every answer so the output can be checked against it, and deferring the
/// requests to `/later...`.
struct Recording {
    app: App,
    log: Log,
    later: Later,
}

impl Handler for Recording {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply {
        let (head, http10) = (req.method() == "HEAD", req.version() == Version::Http10);
        if req.path().starts_with("/later") {
            let mut log = self.log.lock().unwrap();
            let index = log.len();
            log.push(Answer { head, http10, status: 0, body: Body::Pending });
            let responder = Some(res.defer());
            self.later.lock().unwrap().push_back(Deferred { index, responder, stream: None });
            return Reply::Later;
        }
        let reply = self.app.handle(req, res);
        self.log.lock().unwrap().push(Answer { head, http10, status: res.status(), body: Body::Fixed(res.body().to_vec()) });
        reply
    }
}

/// Durations around every default timeout and grace period (drain grace 100 ms / 1 s, linger
/// 500 ms, header 10 s, write 30 s, idle 60 s, max delay 60 s).
const DURATIONS_MS: [u64; 26] = [
    0, 1, 50, 99, 100, 101, 250, 499, 500, 501, 999, 1_000, 1_001, 2_000, 9_999, 10_000, 10_001, 15_000, 29_999,
    30_000, 30_001, 45_000, 59_999, 60_000, 60_001, 70_000,
];

fn duration(arg: u8) -> Duration {
    let arg = usize::from(arg);
    match DURATIONS_MS.get(arg) {
        Some(&ms) => Duration::from_millis(ms),
        // 0 .. ~69 s in 300 ms steps.
        None => Duration::from_millis((arg - DURATIONS_MS.len()) as u64 * 300),
    }
}

fn config(flags: u8) -> ServerConfig {
    let mut config = ServerConfig { handle_signals: false, ..ServerConfig::default() };
    if flags & 1 != 0 {
        config.max_head_bytes = 1024;
    }
    if flags & 2 != 0 {
        config.max_body_bytes = 4096;
    }
    if flags & 4 != 0 {
        config.max_headers = 8;
    }
    if flags & 8 != 0 {
        config.max_head_bytes = 64;
        config.max_body_bytes = 16;
    }
    config
}

/// A parsed response head.
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Finds the end of the response head starting at `at` (`\r\n\r\n` included), if complete.
fn head_end(out: &[u8], at: usize) -> Option<usize> {
    out[at..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| at + i + 4)
}

fn parse_head(head: &[u8]) -> Head {
    let text = std::str::from_utf8(head).unwrap_or_else(|_| panic!("response head is not UTF-8: {head:?}"));
    let mut lines = text.strip_suffix("\r\n\r\n").expect("head ends in a blank line").split("\r\n");
    let status_line = lines.next().unwrap();
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .unwrap_or_else(|| panic!("status line does not start with 'HTTP/1.1 ': {status_line:?}"));
    let code = rest.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
    let code = code.unwrap_or_else(|| panic!("no 3-digit status: {status_line:?}"));
    assert!(rest.len() == 3 || rest.as_bytes()[3] == b' ', "bad status line {status_line:?}");
    let status: u16 = code.parse().unwrap();
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    for line in lines {
        let (name, value) = line.split_once(": ").unwrap_or_else(|| panic!("bad header line {line:?}"));
        assert!(!name.is_empty() && !name.contains([' ', '\t', ':']), "bad header name {line:?}");
        assert!(!value.contains(['\r', '\n', '\0']), "bad header value {line:?}");
        if name.eq_ignore_ascii_case("content-length") {
            assert!(content_length.is_none(), "two Content-Length fields: {text:?}");
            assert!(!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()), "bad Content-Length {line:?}");
            content_length = Some(value.parse().unwrap());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            assert!(value == "chunked" && !chunked, "bad Transfer-Encoding: {text:?}");
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    assert!(!(chunked && content_length.is_some()), "both Content-Length and chunked: {text:?}");
    Head { status, content_length, chunked, close }
}

/// How a chunked body at `out[at..]` went: its data and where it ends, or `None` (with the data
/// so far) when the output stops before its last chunk.
fn read_chunks(out: &[u8], mut at: usize) -> (Vec<u8>, Option<usize>) {
    let mut data = Vec::new();
    loop {
        let Some(line) = out[at..].windows(2).position(|w| w == b"\r\n") else { return (data, None) };
        let size_text = std::str::from_utf8(&out[at..at + line]).expect("chunk size is ASCII");
        let size = usize::from_str_radix(size_text, 16).unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        assert!(!size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit()), "bad chunk size line");
        let start = at + line + 2;
        if size == 0 {
            if out.len() < start + 2 {
                return (data, None);
            }
            assert_eq!(&out[start..start + 2], b"\r\n", "no empty trailer after the last chunk");
            return (data, Some(start + 2));
        }
        if out.len() < start + size + 2 {
            data.extend_from_slice(&out[start..out.len().min(start + size)]);
            return (data, None);
        }
        data.extend_from_slice(&out[start..start + size]);
        assert_eq!(&out[start + size..start + size + 2], b"\r\n", "no CRLF after chunk data");
        at = start + size + 2;
    }
}

/// Checks that `out` is a sequence of well-formed HTTP/1.1 responses answering `answers` in
/// order, optionally followed by one error response (a protocol error or timeout, which always
/// closes), with `100 Continue` interim responses anywhere; nothing after a `Connection: close`
/// response, and nothing for (or after) an answer still pending. A streamed answer is chunked
/// on HTTP/1.1 (its data a prefix of the pieces sent, complete with its last chunk once
/// finished), ends with the connection on HTTP/1.0, and is the head alone for HEAD; an open or
/// cut stream may end the output. With `allow_truncated`, the last response may be cut short
/// (the connection was dropped while the client was not reading). `ended`: the server wrote
/// its last byte (closed, or shut its write side), so a finished HTTP/1.0 stream is complete.
/// `sent_head`: the client sent a HEAD request, so the closing error may be its head alone.
/// Returns the statuses of the final responses.
fn check_output(out: &[u8], answers: &[Answer], allow_truncated: bool, ended: bool, sent_head: bool) -> Vec<u16> {
    let mut pos = 0;
    let mut finals = 0;
    let mut statuses = Vec::new();
    let mut closed = false;
    while pos < out.len() {
        assert!(!closed, "bytes after a 'Connection: close' response: {:?}", String::from_utf8_lossy(&out[pos..]));
        let Some(end) = head_end(out, pos) else {
            assert!(allow_truncated, "incomplete response head at {pos}: {:?}", String::from_utf8_lossy(&out[pos..]));
            let rest = &out[pos..];
            let n = rest.len().min(9);
            assert_eq!(&rest[..n], &b"HTTP/1.1 "[..n], "truncated response does not start like one");
            return statuses;
        };
        let head = parse_head(&out[pos..end]);
        if head.status < 200 {
            assert_eq!(head.status, 100, "unexpected interim response");
            assert!(head.content_length.is_none(), "100 Continue with a Content-Length");
            pos = end;
            continue;
        }
        let expected = answers.get(finals);
        finals += 1;
        statuses.push(head.status);
        closed = head.close;
        let Some(answer) = expected else {
            assert_eq!(finals - 1, answers.len(), "more than one response the handler did not produce");
            assert!(head.status >= 400, "a response the handler did not produce that is not an error");
            assert!(head.close, "an error response that does not close");
            assert!(!head.chunked, "an error response that is chunked");
            // An error answering HEAD is its head alone (RFC 9110 §9.3.2), with the framing a
            // GET's would have; it closes, so the output ends with it.
            if sent_head && end == out.len() && head.content_length.is_some() {
                return statuses;
            }
            match fixed_body(out, end, &head, false, None, allow_truncated) {
                Some(length) => pos = end + length,
                None => return statuses,
            }
            continue;
        };
        assert_ne!(answer.body, Body::Pending, "a response for an answer still pending");
        assert_eq!(head.status, answer.status, "response {} status differs from the handler's", finals - 1);
        match &answer.body {
            Body::Pending => {}
            Body::Fixed(body) => {
                assert!(!head.chunked, "a whole response that is chunked");
                match fixed_body(out, end, &head, answer.head, Some(body), allow_truncated) {
                    Some(length) => pos = end + length,
                    None => return statuses,
                }
            }
            Body::Streamed(_, _) if answer.head => {
                // The head alone, with the framing GET would have had.
                assert_eq!(head.chunked, !answer.http10, "a HEAD stream's framing");
                assert!(head.content_length.is_none(), "a stream with a Content-Length");
                pos = end;
            }
            Body::Streamed(sent, stream_end) if answer.http10 => {
                assert!(!head.chunked && head.content_length.is_none() && head.close, "HTTP/1.0 stream framing");
                let body = &out[end..];
                assert!(sent.starts_with(body), "an HTTP/1.0 stream's body is not what was sent");
                if *stream_end == End::Finished && ended && !allow_truncated {
                    // Complete once the output is (the end is the connection's).
                    assert_eq!(body, &sent[..], "a finished HTTP/1.0 stream's body is not all that was sent");
                }
                return statuses;
            }
            Body::Streamed(sent, stream_end) => {
                assert!(head.chunked && head.content_length.is_none(), "HTTP/1.1 stream framing");
                let (data, done) = read_chunks(out, end);
                assert!(sent.starts_with(&data), "a stream's chunks are not what was sent");
                match done {
                    Some(next) => {
                        assert_eq!(*stream_end, End::Finished, "a last chunk for a stream that was not finished");
                        assert_eq!(&data, sent, "a finished stream's body is not what was sent");
                        pos = next;
                    }
                    None => {
                        assert!(
                            *stream_end != End::Finished || allow_truncated,
                            "a finished stream without its last chunk"
                        );
                        return statuses;
                    }
                }
            }
        }
    }
    statuses
}

/// The length of a Content-Length body at `out[end..]` (none for HEAD or a 204/304), checked
/// against `expected`; `None` when the output stops inside it (allowed with `allow_truncated`).
fn fixed_body(
    out: &[u8],
    end: usize,
    head: &Head,
    head_only: bool,
    expected: Option<&Vec<u8>>,
    allow_truncated: bool,
) -> Option<usize> {
    if head.status == 204 || head.status == 304 {
        assert!(head.content_length.is_none(), "{} response with a Content-Length", head.status);
        return Some(0);
    }
    let length = head.content_length.unwrap_or_else(|| panic!("no Content-Length in {}", head.status));
    if let Some(body) = expected {
        assert_eq!(length, body.len(), "Content-Length is not the handler's body length");
    }
    if head_only {
        return Some(0);
    }
    if end + length > out.len() {
        assert!(allow_truncated, "response body cut short");
        return None;
    }
    if let Some(body) = expected {
        assert_eq!(&out[end..end + length], &body[..], "body differs from the handler's");
    }
    Some(length)
}

struct Run<'s> {
    conn: MemoryConnection,
    /// Told after every step and call.
    seen: &'s mut dyn FnMut(Seen<'_>),
    log: Log,
    later: Later,
    write_limit: Option<usize>,
    /// The connection was closed while the client was not reading: a response may be cut short.
    dropped_unread: bool,
    /// Output length when the write side was first seen shut.
    shut_at: Option<usize>,
    /// The harness clock: every advance so far.
    clock: Duration,
    /// Every byte the client sent.
    input: Vec<u8>,
    /// The drain began, and what the connection was then.
    drain: Option<ConnState>,
    /// When the connection was first seen idle during the drain, having been busy when it began.
    idle_in_drain: Option<Duration>,
}

impl Run<'_> {
    /// Sends `bytes` as the client's next piece.
    fn send(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.step(|c| c.send(bytes));
    }

    /// Whether the client sent a HEAD request (or what starts like one).
    fn sent_head(&self) -> bool {
        self.input.windows(5).any(|w| w == b"HEAD ")
    }

    /// Runs one client action, then checks the invariants that hold between actions.
    fn step(&mut self, action: impl FnOnce(&mut MemoryConnection)) {
        self.step_over(Duration::ZERO, action);
    }

    /// [`Run::step`] for an action that moves the clock on by `span`, firing the deadlines on
    /// the way: the connection may go idle and have its last call end inside it, unseen.
    fn step_over(&mut self, span: Duration, action: impl FnOnce(&mut MemoryConnection)) {
        let was_closed = self.conn.is_closed();
        let limit_before = self.write_limit;
        action(&mut self.conn);
        let closed = self.conn.is_closed();
        // The client was told, or had its last call: a connection that goes idle during the
        // drain (its last response began before it, so it carried no `Connection: close`) is
        // closed unread only after the drain's idle grace.
        if self.drain.is_some_and(|at_start| !matches!(at_start, ConnState::New | ConnState::Idle)) {
            match self.conn.state() {
                ConnState::Idle if self.idle_in_drain.is_none() => self.idle_in_drain = Some(self.clock),
                ConnState::Active => self.idle_in_drain = None,
                _ => {}
            }
            if closed && !was_closed && self.conn.closed_by_drain() {
                let grace = ServerConfig::DEFAULT.drain_idle_grace;
                match self.idle_in_drain {
                    Some(idle_at) => assert!(
                        self.clock >= idle_at + grace,
                        "closed unread {:?} after going idle in the drain",
                        self.clock - idle_at
                    ),
                    // It went idle inside this step: only a step that moved the clock on by the
                    // grace at least can have seen its last call end.
                    None => assert!(span >= grace, "closed by the drain without having been idle in it for the grace"),
                }
            }
        }
        if was_closed {
            assert!(closed, "a closed connection came back");
        }
        if closed {
            assert_eq!(self.conn.state(), ConnState::Closed);
        }
        if closed && !was_closed && (limit_before == Some(0) || self.write_limit == Some(0)) {
            self.dropped_unread = true;
        }
        let len = self.conn.output().len();
        match self.shut_at {
            Some(at) => assert_eq!(len, at, "the server wrote after shutting its write side"),
            None if self.conn.write_shut() => {
                self.shut_at = Some(len);
                if !closed {
                    // The write side is shut only once everything queued went out.
                    let answers = self.log.lock().unwrap().clone();
                    check_output(self.conn.output(), &answers, false, true, self.sent_head());
                }
            }
            None => {}
        }
        (self.seen)(Seen::Step(&self.conn));
    }

    fn call(&mut self, result: &'static str) {
        (self.seen)(Seen::Call(result));
    }
}

impl Run<'_> {
    /// Moves the clock on.
    fn advance(&mut self, by: Duration) {
        self.clock += by;
        self.step_over(by, |c| c.advance(by));
    }

    /// Starts a drain (again: only the first counts).
    fn begin_drain(&mut self) {
        if self.drain.is_none() {
            self.drain = Some(self.conn.state());
        }
        self.step(MemoryConnection::begin_drain);
    }

    /// The first deferred request whose responder is still unused.
    fn waiting(&self) -> Option<usize> {
        self.later.lock().unwrap().iter().position(|d| d.responder.is_some())
    }

    /// The first deferred request with an open stream.
    fn streaming(&self) -> Option<usize> {
        self.later.lock().unwrap().iter().position(|d| d.stream.is_some())
    }

    fn record(&self, index: usize, status: u16, body: Body) {
        let mut log = self.log.lock().unwrap();
        log[index].status = status;
        log[index].body = body;
    }

    /// Op 8: the oldest waiting responder sends a whole response, as another thread would.
    fn answer(&mut self, arg: u8) {
        let Some(at) = self.waiting() else { return };
        let (index, responder) = {
            let mut later = self.later.lock().unwrap();
            let deferred = later.remove(at).unwrap();
            (deferred.index, deferred.responder.unwrap())
        };
        let status = [200, 201, 404, 503, 204][usize::from(arg) % 5];
        let body = if status == 204 { Vec::new() } else { format!("later {index}").into_bytes() };
        let mut response = Response::new();
        response.set_status(status).set_body(&body);
        let gone = self.conn.is_closed();
        assert_eq!(responder.is_closed(), gone, "is_closed() disagrees with the connection");
        let sent = responder.send(response);
        self.call(if sent.is_ok() { "send ok" } else { "send refused" });
        assert_eq!(sent.is_err(), gone, "a send was refused by a live connection, or taken by a closed one");
        if sent.is_ok() {
            self.record(index, status, Body::Fixed(body));
        }
        self.step(MemoryConnection::deliver);
    }

    /// Op 9: the oldest waiting responder is dropped unsent: the client gets a 500.
    fn drop_responder(&mut self) {
        let Some(at) = self.waiting() else { return };
        let deferred = self.later.lock().unwrap().remove(at).unwrap();
        if !self.conn.is_closed() {
            self.record(deferred.index, 500, Body::Fixed(b"internal server error\n".to_vec()));
        }
        drop(deferred);
        self.step(MemoryConnection::deliver);
    }

    /// Op 10: a piece for the oldest open stream (odd arg), or a new stream from the oldest
    /// waiting responder.
    fn stream(&mut self, arg: u8) {
        if arg % 2 == 1
            && let Some(at) = self.streaming()
        {
            let piece = vec![b'a' + arg % 26; usize::from(arg) * 4];
            let mut later = self.later.lock().unwrap();
            let index = later[at].index;
            let stream = later[at].stream.as_mut().unwrap();
            let sent = stream.try_send(&piece);
            (self.seen)(Seen::Call(match &sent {
                Ok(()) => "try_send ok",
                Err(quiesce::TrySendError::Full) => "try_send full",
                Err(quiesce::TrySendError::Gone) => "try_send gone",
                Err(_) => "try_send error",
            }));
            match sent {
                Ok(()) => {
                    drop(later);
                    let mut log = self.log.lock().unwrap();
                    if let Body::Streamed(sent, _) = &mut log[index].body {
                        sent.extend_from_slice(&piece);
                    }
                }
                Err(quiesce::TrySendError::Full) => {}
                Err(quiesce::TrySendError::Gone) => assert!(stream.is_closed(), "Gone, but is_closed() says no"),
                Err(e) => panic!("{e}, from a stream without a declared length"),
            }
        } else if let Some(at) = self.waiting() {
            let (index, responder) = {
                let mut later = self.later.lock().unwrap();
                (later[at].index, later[at].responder.take().unwrap())
            };
            let gone = self.conn.is_closed();
            let stream = responder.stream(Response::new());
            self.call(if stream.is_ok() { "stream ok" } else { "stream refused" });
            match stream {
                Ok(stream) => {
                    assert!(!gone, "a stream started on a closed connection");
                    self.record(index, 200, Body::Streamed(Vec::new(), End::Open));
                    self.later.lock().unwrap()[at].stream = Some(stream);
                }
                Err(_) => {
                    assert!(gone, "a stream refused by a live connection");
                    self.later.lock().unwrap().remove(at);
                }
            }
        }
        self.step(MemoryConnection::deliver);
    }

    /// Op 11: the oldest open stream is finished (even arg) or dropped unfinished (odd).
    fn end_stream(&mut self, arg: u8) {
        let Some(at) = self.streaming() else { return };
        let deferred = self.later.lock().unwrap().remove(at).unwrap();
        let stream = deferred.stream.unwrap();
        let end = if arg.is_multiple_of(2) {
            let finished = stream.finish();
            self.call(if finished.is_ok() { "finish ok" } else { "finish refused" });
            match finished {
                Ok(()) => End::Finished,
                Err(_) => End::Open,
            }
        } else {
            drop(stream);
            End::Cut
        };
        if let Body::Streamed(_, recorded) = &mut self.log.lock().unwrap()[deferred.index].body {
            *recorded = end;
        }
        self.step(MemoryConnection::deliver);
    }

    /// Before the quiet epilogue: every responder and stream still out is dropped (a worker
    /// that gives up), so nothing waits for ever.
    fn give_up(&mut self) {
        while self.waiting().is_some() {
            self.drop_responder();
        }
        while self.streaming().is_some() {
            self.end_stream(1);
        }
    }
}

/// Runs the script `data` (the layout above), checking the invariants (a failed check panics),
/// and tells `seen` what happens.
pub fn run(data: &[u8], seen: &mut dyn FnMut(Seen<'_>)) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((&n_ops, rest)) = rest.split_first() else { return };
    let op_bytes = (usize::from(n_ops) * 2).min(rest.len() & !1);
    let (ops, mut stream) = rest.split_at(op_bytes);

    let (log, later): (Log, Later) = Default::default();
    let handler = Recording { app: App::default(), log: Arc::clone(&log), later: Arc::clone(&later) };
    let mut conn = MemoryConnection::new(config(flags), handler);
    // The access log is on unless flag 32 says no: its records are checked against the output.
    let records: Option<Arc<Mutex<Vec<Record>>>> = (flags & 32 == 0).then(Default::default);
    if let Some(records) = &records {
        let records = Arc::clone(records);
        conn.set_access_log(move |r: &quiesce::AccessRecord<'_>| {
            records.lock().unwrap().push(Record {
                connection_id: r.connection_id,
                method: r.method.to_owned(),
                target: r.target.to_owned(),
                version: r.version,
                status: r.status,
                body_bytes: r.body_bytes,
                during_drain: r.during_drain,
                ending: r.ending.as_str(),
            })
        });
    }
    let mut run = Run {
        conn,
        seen,
        log,
        later,
        write_limit: None,
        dropped_unread: false,
        shut_at: None,
        clock: Duration::ZERO,
        input: Vec::new(),
        drain: None,
        idle_in_drain: None,
    };

    for op in ops.chunks_exact(2) {
        let (code, arg) = (op[0], op[1]);
        match code % 12 {
            0..=2 => {
                let k = if arg == 255 { stream.len() } else { (usize::from(arg) + 1).min(stream.len()) };
                let (piece, tail) = stream.split_at(k);
                stream = tail;
                run.send(piece);
            }
            3 => run.step(|c| c.send_eof()),
            4 => run.advance(duration(arg)),
            5 => {
                let limit = match arg {
                    0 => Some(0),
                    255 => None,
                    n => Some(usize::from(n)),
                };
                run.write_limit = limit;
                run.step(|c| c.set_write_limit(limit));
            }
            6 => run.begin_drain(),
            7 => run.advance(Duration::from_millis(u64::from(arg))),
            8 => run.answer(arg),
            9 => run.drop_responder(),
            10 => run.stream(arg),
            _ => run.end_stream(arg),
        }
    }
    if !stream.is_empty() {
        run.send(stream);
    }

    // The client reads everything from now on: what the server queued must come out whole.
    run.write_limit = None;
    run.step(|c| c.set_write_limit(None));
    let answers = run.log.lock().unwrap().clone();
    check_output(run.conn.output(), &answers, run.dropped_unread, run.conn.write_shut(), run.sent_head());

    // Epilogue: whatever is deferred is given up on (also what a pipelined request defers
    // later in the epilogue), and the client goes quiet (optionally the server drains). Every
    // timeout and delay is at most 60 s, and each quiet 121 s step fires at least one deadline,
    // so the connection must end up closed within about one step per request it holds
    // (pipelined delayed requests each take a step).
    run.give_up();
    if flags & 16 != 0 {
        run.begin_drain();
    }
    let max_steps = data.len() + 8;
    for _ in 0..max_steps {
        if run.conn.is_closed() {
            break;
        }
        run.advance(Duration::from_secs(121));
        run.give_up();
    }
    assert!(run.conn.is_closed(), "still {:?} after {max_steps} quiet periods of 121 s", run.conn.state());
    let answers = run.log.lock().unwrap().clone();
    let statuses = check_output(run.conn.output(), &answers, run.dropped_unread, true, run.sent_head());
    let finals = statuses.len();
    // The access log has a record for every response the client got, in order, with its
    // status; more only for answers queued and then lost with the connection (the client
    // stopped reading), and never more than the handler's answers plus one protocol error.
    // A request the close left without an answer has a record with status 0: at most one (a
    // connection answers one request at a time), and it is the last.
    let all_records = records.as_ref().map(|records| records.lock().unwrap().clone());
    (run.seen)(Seen::End { answers: &answers, records: all_records.as_deref() });
    if let Some(records) = &all_records {
        let mut records: Vec<u16> = records.iter().map(|r| r.status).collect();
        let unanswered = records.iter().filter(|&&status| status == 0).count();
        assert!(unanswered <= 1, "{unanswered} records of requests without an answer: {records:?}");
        if unanswered == 1 {
            assert_eq!(records.pop(), Some(0), "a record of a request without an answer is not the last: {records:?}");
        }
        assert!(records.len() >= finals, "{} access records for {finals} responses: {records:?} vs {statuses:?}", records.len());
        assert!(records.len() <= answers.len() + 1, "more access records than answers: {records:?} vs {answers:?}");
        assert_eq!(&records[..finals], &statuses[..], "the access log's statuses are not the responses'");
    }
    // An HTTP/1.0 stream ends the output if it started: finished (and read), the connection
    // ends with a FIN; otherwise with a reset, since a FIN would make the body look complete.
    if let Some(last) = finals.checked_sub(1).and_then(|i| answers.get(i))
        && let Body::Streamed(_, end) = &last.body
        && last.http10
        && !last.head
    {
        if *end != End::Finished {
            assert!(run.conn.was_reset(), "an unfinished HTTP/1.0 stream ended with a FIN");
        } else if !run.dropped_unread {
            assert!(!run.conn.was_reset(), "a finished HTTP/1.0 stream ended with a reset");
        }
    }
}
