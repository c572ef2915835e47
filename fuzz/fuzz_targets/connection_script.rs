//! Drives one real connection (`quiesce::harness::MemoryConnection`, served by `App`) with a
//! script of client actions and checks what the server wrote.
//!
//! Input layout (see README.md):
//!
//! ```text
//! byte 0        config flags
//! byte 1        n: number of ops
//! 2n bytes      ops, two bytes each: opcode, argument
//! rest          the client's byte stream; "send" ops take their next piece from it
//! ```
//!
//! Keeping the HTTP bytes contiguous at the end lets libFuzzer's dictionary and the seeds work on
//! plain HTTP, while the op section decides where the stream is split and what happens between
//! the pieces (clock, end of stream, a client that stops reading, a drain).

#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use quiesce::app::App;
use quiesce::harness::MemoryConnection;
use quiesce::{ConnState, Handler, Reply, Request, Response, ServerConfig};

/// What the handler answered to one request, in call order.
#[derive(Debug, Clone)]
struct Answer {
    head: bool,
    status: u16,
    body: Vec<u8>,
}

/// `App`, recording every answer so the output can be checked against it.
struct Recording {
    app: App,
    log: Arc<Mutex<Vec<Answer>>>,
}

impl Handler for Recording {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply {
        let reply = self.app.handle(req, res);
        self.log.lock().unwrap().push(Answer {
            head: req.method() == "HEAD",
            status: res.status(),
            body: res.body().to_vec(),
        });
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
            panic!("responses are never chunked here: {text:?}");
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    Head { status, content_length, close }
}

/// Checks that `out` is a sequence of well-formed HTTP/1.1 responses answering `answers` in
/// order, optionally followed by one error response (a protocol error or timeout, which always
/// closes), with `100 Continue` interim responses anywhere; nothing after a `Connection: close`
/// response. With `allow_truncated`, the last response may be cut short (the connection was
/// dropped while the client was not reading). Returns the number of final responses.
fn check_output(out: &[u8], answers: &[Answer], allow_truncated: bool) -> usize {
    let mut pos = 0;
    let mut finals = 0;
    let mut closed = false;
    while pos < out.len() {
        assert!(!closed, "bytes after a 'Connection: close' response: {:?}", String::from_utf8_lossy(&out[pos..]));
        let Some(end) = head_end(out, pos) else {
            assert!(allow_truncated, "incomplete response head at {pos}: {:?}", String::from_utf8_lossy(&out[pos..]));
            let rest = &out[pos..];
            let n = rest.len().min(9);
            assert_eq!(&rest[..n], &b"HTTP/1.1 "[..n], "truncated response does not start like one");
            return finals;
        };
        let head = parse_head(&out[pos..end]);
        if head.status < 200 {
            assert_eq!(head.status, 100, "unexpected interim response");
            assert!(head.content_length.is_none(), "100 Continue with a Content-Length");
            pos = end;
            continue;
        }
        let (head_only, expected): (bool, Option<&Answer>) = match answers.get(finals) {
            Some(answer) => {
                assert_eq!(head.status, answer.status, "response {finals} status differs from the handler's");
                (answer.head, Some(answer))
            }
            None => {
                assert_eq!(finals, answers.len(), "more than one response the handler did not produce");
                assert!(head.status >= 400, "a response the handler did not produce that is not an error");
                assert!(head.close, "an error response that does not close");
                (false, None)
            }
        };
        finals += 1;
        let bodiless = head.status == 204 || head.status == 304;
        let body_len = if bodiless {
            assert!(head.content_length.is_none(), "{} response with a Content-Length", head.status);
            0
        } else {
            let length = head.content_length.unwrap_or_else(|| panic!("no Content-Length in {}", head.status));
            if let Some(answer) = expected {
                assert_eq!(length, answer.body.len(), "Content-Length is not the handler's body length");
            }
            if head_only { 0 } else { length }
        };
        if end + body_len > out.len() {
            assert!(allow_truncated, "response body cut short");
            return finals;
        }
        if let Some(answer) = expected
            && !head_only
            && !bodiless
        {
            assert_eq!(&out[end..end + body_len], &answer.body[..], "body differs from the handler's");
        }
        pos = end + body_len;
        closed = head.close;
    }
    finals
}

struct Run {
    conn: MemoryConnection,
    log: Arc<Mutex<Vec<Answer>>>,
    write_limit: Option<usize>,
    /// The connection was closed while the client was not reading: a response may be cut short.
    dropped_unread: bool,
    /// Output length when the write side was first seen shut.
    shut_at: Option<usize>,
}

impl Run {
    /// Runs one client action, then checks the invariants that hold between actions.
    fn step(&mut self, action: impl FnOnce(&mut MemoryConnection)) {
        let was_closed = self.conn.is_closed();
        let limit_before = self.write_limit;
        action(&mut self.conn);
        let closed = self.conn.is_closed();
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
                    check_output(self.conn.output(), &answers, false);
                }
            }
            None => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((&n_ops, rest)) = rest.split_first() else { return };
    let op_bytes = (usize::from(n_ops) * 2).min(rest.len() & !1);
    let (ops, mut stream) = rest.split_at(op_bytes);

    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = Recording { app: App::default(), log: Arc::clone(&log) };
    let conn = MemoryConnection::new(config(flags), handler);
    let mut run = Run { conn, log, write_limit: None, dropped_unread: false, shut_at: None };

    for op in ops.chunks_exact(2) {
        let (code, arg) = (op[0], op[1]);
        match code % 8 {
            0..=2 => {
                let k = if arg == 255 { stream.len() } else { (usize::from(arg) + 1).min(stream.len()) };
                let (piece, tail) = stream.split_at(k);
                stream = tail;
                run.step(|c| c.send(piece));
            }
            3 => run.step(|c| c.send_eof()),
            4 => run.step(|c| c.advance(duration(arg))),
            5 => {
                let limit = match arg {
                    0 => Some(0),
                    255 => None,
                    n => Some(usize::from(n)),
                };
                run.write_limit = limit;
                run.step(|c| c.set_write_limit(limit));
            }
            6 => run.step(|c| c.begin_drain()),
            _ => run.step(|c| c.advance(Duration::from_millis(u64::from(arg)))),
        }
    }
    if !stream.is_empty() {
        run.step(|c| c.send(stream));
    }

    // The client reads everything from now on: what the server queued must come out whole.
    run.write_limit = None;
    run.step(|c| c.set_write_limit(None));
    let answers = run.log.lock().unwrap().clone();
    check_output(run.conn.output(), &answers, run.dropped_unread);

    // Epilogue: the client goes quiet (optionally the server drains). Every timeout and delay is
    // at most 60 s, and each quiet 121 s step fires at least one deadline, so the connection must
    // end up closed within about one step per request it holds (pipelined delayed requests each
    // take a step).
    if flags & 16 != 0 {
        run.step(|c| c.begin_drain());
    }
    let max_steps = data.len() + 8;
    for _ in 0..max_steps {
        if run.conn.is_closed() {
            break;
        }
        run.step(|c| c.advance(Duration::from_secs(121)));
    }
    assert!(run.conn.is_closed(), "still {:?} after {max_steps} quiet periods of 121 s", run.conn.state());
    let answers = run.log.lock().unwrap().clone();
    check_output(run.conn.output(), &answers, run.dropped_unread);
});
