//! The binary's access log (`--access-log PATH`): one line per answered request, appended to a
//! file (or stdout for `-`), in the Common Log Format followed by three fields of quiesce's own,
//! or as a JSON object with `--log-format json`:
//!
//! ```text
//! 127.0.0.1 - - [30/Nov/2026:10:28:27 +0000] "GET /plaintext HTTP/1.1" 200 13 us=412 conn=17 drain=no
//! {"ts":"2026-11-30T10:28:27.123Z","client":"127.0.0.1:50124","method":"GET","target":"/plaintext","version":"HTTP/1.1","status":200,"bytes":13,"duration_us":412,"conn":17,"draining":false}
//! ```
//!
//! Each worker has its own buffer: a record is formatted into it on the loop's thread, and the
//! buffer goes out at the end of the loop's turn (or as soon as it holds 64 KiB):
//!
//! - to a regular file, in one `write` by the loop itself, so a slow disk holds the loop up for
//!   one write per turn (per 64 KiB); the file is opened for appending, so the workers' writes
//!   never interleave inside a line (a short write, which only a full disk or a size limit
//!   causes, is followed by the rest at once; what an error leaves is counted as lost);
//! - to anything else (stdout as a pipe, a socket, a terminal: a reader that may stall for
//!   ever), through one writer thread: the loop only hands its buffer over, and never waits.
//!
//! Either way, past 1 MiB waiting (4 MiB for the writer thread), new lines are dropped and
//! counted (a destination that takes nothing must not take the server's memory, nor stop it
//! serving or draining), and the count is logged.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::warn;
use quiesce::{AccessLog, AccessRecord, Version};

use crate::logging::{LogFormat, push_json_str};

/// A buffer this full goes out at once, without waiting for the end of the turn.
const WRITE_AT: usize = 64 * 1024;
/// Most bytes held back when writes take less than is logged; further lines are dropped.
const MAX_HELD: usize = 1024 * 1024;
/// Most bytes waiting for the writer thread, from every worker.
const MAX_QUEUED: usize = 4 * 1024 * 1024;

/// Where the lines go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A regular file: each worker writes its buffer itself, once per turn.
    File(Arc<File>),
    /// A pipe, a socket, a terminal: one thread writes, the loops hand it their buffers.
    Thread(Arc<Handoff>),
}

/// Opens the access log's destination: `-` is stdout, anything else a file opened for
/// appending (created with mode 0640). A destination that is not a regular file gets the
/// writer thread.
pub fn open(path: &str) -> io::Result<Sink> {
    let file = if path == "-" {
        use std::os::fd::AsFd;
        File::from(io::stdout().as_fd().try_clone_to_owned()?)
    } else {
        OpenOptions::new().append(true).create(true).mode(0o640).open(path)?
    };
    if file.metadata()?.file_type().is_file() {
        Ok(Sink::File(Arc::new(file)))
    } else {
        Handoff::start(file).map(Sink::Thread)
    }
}

impl Sink {
    /// The server stopped: waits (at most `timeout`) for the writer thread to write what it
    /// holds, and says what it could not. A regular file has nothing left by then.
    pub fn finish(&self, timeout: Duration) {
        if let Sink::Thread(handoff) = self {
            let left = handoff.finish(timeout);
            if left > 0 {
                warn!("access log: {left} bytes not written: the destination stopped taking them");
            }
        }
    }
}

/// Buffers on their way from the loops to the writer thread.
#[derive(Debug)]
pub struct Handoff {
    queue: Mutex<Queue>,
    /// A buffer came, or the end.
    more: Condvar,
    /// The thread wrote everything and stopped.
    finished: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    buffers: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Written-out buffers, for the loops to reuse (no allocation per turn).
    spare: Vec<Vec<u8>>,
    closing: bool,
    done: bool,
}

impl Handoff {
    /// Starts the writer thread for `file`.
    fn start(file: File) -> io::Result<Arc<Handoff>> {
        let handoff = Arc::new(Handoff { queue: Mutex::default(), more: Condvar::new(), finished: Condvar::new() });
        let theirs = Arc::clone(&handoff);
        thread::Builder::new().name("quiesce-access-log".into()).spawn(move || theirs.write_all_to(file))?;
        Ok(handoff)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `buf` over (leaving a spare buffer in its place), unless that would hold more
    /// than [`MAX_QUEUED`]: then `Err` with the number of lines dropped, and `buf` is emptied.
    fn give(&self, buf: &mut Vec<u8>) -> Result<(), u64> {
        let mut queue = self.lock();
        if queue.bytes + buf.len() > MAX_QUEUED || queue.done {
            drop(queue);
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            buf.clear();
            return Err(lines);
        }
        let spare = queue.spare.pop().unwrap_or_default();
        queue.bytes += buf.len();
        queue.buffers.push_back(std::mem::replace(buf, spare));
        drop(queue);
        self.more.notify_one();
        Ok(())
    }

    /// The writer thread: writes each buffer whole, waiting as long as the destination takes.
    fn write_all_to(&self, mut file: File) {
        let mut failed = false;
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
            if let Err(e) = file.write_all(&buf)
                && !failed
            {
                warn!("access log: {e}; lines are lost until it works again");
                failed = true;
            }
            let written = buf.len();
            buf.clear();
            let mut queue = self.lock();
            queue.bytes -= written;
            if queue.spare.len() < 8 {
                queue.spare.push(buf);
            }
        }
    }

    /// Asks the thread to stop once it wrote everything; waits at most `timeout`. Returns the
    /// bytes still not written.
    fn finish(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut queue = self.lock();
        queue.closing = true;
        self.more.notify_all();
        while !queue.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return queue.bytes;
            }
            queue = self.finished.wait_timeout(queue, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        0
    }
}

/// One worker's access log.
#[derive(Debug)]
pub struct Writer {
    out: Sink,
    format: LogFormat,
    /// Lines not written yet.
    buf: Vec<u8>,
    clock: Clock,
    /// The last client address, formatted (one keep-alive client sends many requests).
    ip: Option<(IpAddr, String)>,
    /// Lines dropped since the last warning.
    dropped: u64,
    /// When the last warning about dropped lines was logged (one per 10 s at most).
    warned: Option<Instant>,
    /// Why the file took no more, since the last warning.
    failure: Option<io::Error>,
}

impl Writer {
    /// A writer to `out` (shared by the workers) in `format`.
    pub fn new(out: Sink, format: LogFormat) -> Writer {
        Writer {
            out,
            format,
            buf: Vec::with_capacity(WRITE_AT),
            clock: Clock::default(),
            ip: None,
            dropped: 0,
            warned: None,
            failure: None,
        }
    }

    /// Appends `record`'s line, at `now`. By hand rather than with `format!`: this runs for
    /// every request, and the formatting machinery costs several times more.
    fn push_line(&mut self, record: &AccessRecord<'_>, now: SystemTime) {
        let time = self.clock.at(now);
        let out = &mut self.buf;
        let version = match record.version {
            Some(Version::Http10) => "HTTP/1.0",
            Some(Version::Http11) => "HTTP/1.1",
            None => "-",
        };
        let micros = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
        match self.format {
            LogFormat::Text => {
                // Under a dual-stack socket (the systemd unit's `[::]`) an IPv4 client is
                // `::ffff:a.b.c.d`: logged as the IPv4 address it is.
                let ip = record.peer.ip().to_canonical();
                if self.ip.as_ref().is_none_or(|(last, _)| *last != ip) {
                    self.ip = Some((ip, ip.to_string()));
                }
                if let Some((_, text)) = &self.ip {
                    out.extend_from_slice(text.as_bytes());
                }
                out.extend_from_slice(b" - - [");
                out.extend_from_slice(time.clf.as_bytes());
                out.extend_from_slice(b"] \"");
                if record.version.is_some() {
                    push_clf(out, record.method);
                    out.push(b' ');
                    push_clf(out, record.target);
                    out.push(b' ');
                    out.extend_from_slice(version.as_bytes());
                } else {
                    out.push(b'-');
                }
                let numbers = [u64::from(record.status), record.body_bytes, micros, record.connection_id];
                push_numbers(out, [b"\" ", b" ", b" us=", b" conn="], numbers);
                out.extend_from_slice(if record.during_drain { b" drain=yes end=" } else { b" drain=no end=" });
                out.extend_from_slice(record.ending.as_str().as_bytes());
                out.push(b'\n');
            }
            LogFormat::Json => {
                let mut text = String::with_capacity(64);
                out.extend_from_slice(b"{\"ts\":\"");
                out.extend_from_slice(time.rfc3339.as_bytes());
                out.push(b'.');
                push_millis(out, time.millis);
                out.extend_from_slice(b"Z\",\"client\":\"");
                let _ =
                    write!(text, "{}", std::net::SocketAddr::new(record.peer.ip().to_canonical(), record.peer.port()));
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\",\"method\":");
                text.clear();
                push_json_str(&mut text, record.method);
                text.push_str(",\"target\":");
                push_json_str(&mut text, record.target);
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b",\"version\":\"");
                out.extend_from_slice(version.as_bytes());
                let numbers = [u64::from(record.status), record.body_bytes, micros, record.connection_id];
                push_numbers(out, [b"\",\"status\":", b",\"bytes\":", b",\"duration_us\":", b",\"conn\":"], numbers);
                out.extend_from_slice(if record.during_drain {
                    b",\"draining\":true,\"end\":\""
                } else {
                    b",\"draining\":false,\"end\":\""
                });
                out.extend_from_slice(record.ending.as_str().as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
        }
    }

    /// Writes out the buffer in one `write`, or hands it to the writer thread.
    fn write_out(&mut self) {
        if !self.buf.is_empty() {
            match &self.out {
                Sink::File(file) => {
                    if let Err(e) = write_whole(file, &mut self.buf) {
                        self.dropped += self.buf.iter().filter(|&&b| b == b'\n').count() as u64;
                        self.failure = Some(e);
                        self.buf.clear();
                    }
                }
                Sink::Thread(handoff) => {
                    if let Err(lines) = handoff.give(&mut self.buf) {
                        self.dropped += lines;
                    }
                }
            }
        }
        if self.dropped > 0 && self.warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            self.warn_dropped();
            self.warned = Some(Instant::now());
        }
    }

    /// Logs the lines dropped since the last warning, and why (one warning per 10 s at most:
    /// a full disk must not flood the log too).
    fn warn_dropped(&mut self) {
        match self.failure.take() {
            Some(e) => warn!("access log: {e}; {} lines lost", self.dropped),
            None => warn!("access log: the destination takes too little; {} lines dropped", self.dropped),
        }
        self.dropped = 0;
    }
}

/// Writes `buf` to the file and empties it. One `write` takes it all unless something is wrong
/// (a full disk, a size limit): a short write is followed by the rest at once, so that another
/// worker's lines cannot land inside one of ours. On an error, `buf` keeps what was not written.
fn write_whole(mut file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    let result = loop {
        match file.write(&buf[done..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if done + n == buf.len() => break Ok(()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    match result {
        Ok(()) => buf.clear(),
        Err(_) => {
            buf.drain(..done);
        }
    }
    result
}

impl Drop for Writer {
    /// The server is done with it: what is still buffered goes out, and lines dropped since
    /// the last warning are reported now rather than never.
    fn drop(&mut self) {
        self.warned = Some(Instant::now());
        self.write_out();
        if self.dropped > 0 {
            self.warn_dropped();
        }
    }
}

impl AccessLog for Writer {
    fn record(&mut self, record: &AccessRecord<'_>) {
        if self.buf.len() >= MAX_HELD {
            self.dropped += 1;
            return;
        }
        self.push_line(record, SystemTime::now());
        if self.buf.len() >= WRITE_AT {
            self.write_out();
        }
    }

    fn end_of_turn(&mut self) {
        self.write_out();
    }
}

/// Appends each label followed by its number.
fn push_numbers(out: &mut Vec<u8>, labels: [&[u8]; 4], numbers: [u64; 4]) {
    for (label, n) in labels.into_iter().zip(numbers) {
        out.extend_from_slice(label);
        push_u64(out, n);
    }
}

/// Appends `n` in decimal (the library's own formatter is private to it).
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends milliseconds as three digits.
fn push_millis(out: &mut Vec<u8>, millis: u32) {
    let m = millis.min(999);
    out.extend_from_slice(&[b'0' + (m / 100) as u8, b'0' + (m / 10 % 10) as u8, b'0' + (m % 10) as u8]);
}

/// A line's time, formatted once per second.
#[derive(Debug, Default)]
struct Clock {
    second: Option<u64>,
    /// `30/Nov/2026:10:28:27 +0000`
    clf: String,
    /// `2026-11-30T10:28:27`
    rfc3339: String,
    millis: u32,
}

/// A time as the formats want it.
struct Stamp<'a> {
    clf: &'a str,
    rfc3339: &'a str,
    millis: u32,
}

impl Clock {
    fn at(&mut self, now: SystemTime) -> Stamp<'_> {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            self.second = Some(second);
            // `2026-11-30T10:28:27Z`
            let text =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(second)).to_string();
            self.rfc3339 = text.trim_end_matches('Z').to_owned();
            let (date, time) = self.rfc3339.split_once('T').unwrap_or(("1970-01-01", "00:00:00"));
            let mut parts = date.split('-');
            let (year, month, day) =
                (parts.next().unwrap_or("1970"), parts.next().unwrap_or("01"), parts.next().unwrap_or("01"));
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let month = month.parse::<usize>().ok().and_then(|m| MONTHS.get(m.wrapping_sub(1))).unwrap_or(&"Jan");
            self.clf = format!("{day}/{month}/{year}:{time} +0000");
        }
        self.millis = since.subsec_millis();
        Stamp { clf: &self.clf, rfc3339: &self.rfc3339, millis: self.millis }
    }
}

/// Appends a request-line field for the Common Log Format, escaped as nginx does: `"`, `\`,
/// controls and every byte of a non-ASCII character as `\xHH`, so a line always splits the
/// same way, whatever reads it (U+2028 or U+0085 end a line for some readers, C1 codes steer
/// terminals).
fn push_clf(out: &mut Vec<u8>, s: &str) {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ';
    if s.bytes().all(plain) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiesce::Ending;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn record<'a>(method: &'a str, target: &'a str, version: Option<Version>) -> AccessRecord<'a> {
        AccessRecord {
            peer: "127.0.0.1:50124".parse::<SocketAddr>().unwrap(),
            connection_id: 17,
            method,
            target,
            version,
            status: 200,
            body_bytes: 13,
            duration: Duration::from_micros(412),
            during_drain: false,
            ending: Ending::Complete,
        }
    }

    /// 2026-11-30T10:28:27.123Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_034_507_123)
    }

    fn line(format: LogFormat, record: &AccessRecord<'_>) -> String {
        let file = Arc::new(tempfile());
        let mut writer = Writer::new(Sink::File(file), format);
        writer.push_line(record, at());
        String::from_utf8(writer.buf.clone()).unwrap()
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!("quiesce-access-test-{}", std::process::id()));
        let file = OpenOptions::new().create(true).append(true).read(true).open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }

    #[test]
    fn common_log_format_with_duration_connection_and_drain() {
        let r = record("GET", "/plaintext", Some(Version::Http11));
        assert_eq!(
            line(LogFormat::Text, &r),
            "127.0.0.1 - - [30/Nov/2026:10:28:27 +0000] \"GET /plaintext HTTP/1.1\" 200 13 us=412 conn=17 drain=no end=complete\n"
        );
        let unread = AccessRecord { status: 400, body_bytes: 24, during_drain: true, ..record("-", "-", None) };
        assert_eq!(
            line(LogFormat::Text, &unread),
            "127.0.0.1 - - [30/Nov/2026:10:28:27 +0000] \"-\" 400 24 us=412 conn=17 drain=yes end=complete\n"
        );
        let cut = AccessRecord { body_bytes: 5, ending: Ending::WriteTimeout, ..r };
        assert!(line(LogFormat::Text, &cut).ends_with("\" 200 5 us=412 conn=17 drain=no end=write_timeout\n"));
        assert!(
            line(LogFormat::Json, &cut).ends_with(
                ",\"bytes\":5,\"duration_us\":412,\"conn\":17,\"draining\":false,\"end\":\"write_timeout\"}\n"
            )
        );
        let quoted = record("GET", "/a\"b\\c", Some(Version::Http10));
        assert!(line(LogFormat::Text, &quoted).contains("\"GET /a\\x22b\\x5Cc HTTP/1.0\""));
    }

    #[test]
    fn whatever_a_target_holds_a_line_stays_one_line_of_ascii() {
        // httparse lets UTF-8 through in a target: U+2028 and U+0085 end a line for some
        // readers, U+009B is a terminal's CSI. Every non-ASCII byte is written as \xHH (JSON
        // escapes them as \u).
        let r = record("GET", "/caf\u{e9}\u{2028}\u{85}\u{9b}", Some(Version::Http11));
        let text = line(LogFormat::Text, &r);
        assert!(text.contains("\"GET /caf\\xC3\\xA9\\xE2\\x80\\xA8\\xC2\\x85\\xC2\\x9B HTTP/1.1\""), "{text}");
        let json = line(LogFormat::Json, &r);
        assert!(json.contains("\"target\":\"/caf\u{e9}\\u2028\\u0085\\u009b\""), "{json}");
        for text in [text, json] {
            assert_eq!(text.lines().count(), 1);
            assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        }
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_socket_is_logged_as_ipv4() {
        let mapped = AccessRecord {
            peer: "[::ffff:10.1.2.3]:50124".parse().unwrap(),
            ..record("GET", "/", Some(Version::Http11))
        };
        assert!(line(LogFormat::Text, &mapped).starts_with("10.1.2.3 - - ["));
        assert!(line(LogFormat::Json, &mapped).contains("\"client\":\"10.1.2.3:50124\""));
        let v6 =
            AccessRecord { peer: "[2001:db8::1]:443".parse().unwrap(), ..record("GET", "/", Some(Version::Http11)) };
        assert!(line(LogFormat::Text, &v6).starts_with("2001:db8::1 - - ["));
        assert!(line(LogFormat::Json, &v6).contains("\"client\":\"[2001:db8::1]:443\""));
    }

    #[test]
    fn numbers_by_hand() {
        for n in [0, 7, 10, 999, 1000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        for (ms, text) in [(0, "000"), (7, "007"), (45, "045"), (999, "999")] {
            let mut out = Vec::new();
            push_millis(&mut out, ms);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn json_lines() {
        let r = record("GET", "/a\"b", Some(Version::Http11));
        assert_eq!(
            line(LogFormat::Json, &r),
            "{\"ts\":\"2026-11-30T10:28:27.123Z\",\"client\":\"127.0.0.1:50124\",\"method\":\"GET\",\"target\":\"/a\\\"b\",\
             \"version\":\"HTTP/1.1\",\"status\":200,\"bytes\":13,\"duration_us\":412,\"conn\":17,\"draining\":false,\"end\":\"complete\"}\n"
        );
    }

    #[test]
    fn a_turn_ends_with_one_write_of_every_line() {
        let file = Arc::new(tempfile());
        let mut writer = Writer::new(Sink::File(Arc::clone(&file)), LogFormat::Text);
        for _ in 0..3 {
            writer.record(&record("GET", "/", Some(Version::Http11)));
        }
        assert_eq!(file.metadata().unwrap().len(), 0, "nothing written before the turn ends");
        writer.end_of_turn();
        let mut text = String::new();
        use std::io::{Read, Seek};
        (&*file).seek(io::SeekFrom::Start(0)).unwrap();
        (&*file).read_to_string(&mut text).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(writer.buf.is_empty());
    }

    #[test]
    fn what_is_buffered_when_the_server_lets_go_is_written() {
        let file = Arc::new(tempfile());
        let mut writer = Writer::new(Sink::File(Arc::clone(&file)), LogFormat::Text);
        writer.record(&record("GET", "/last", Some(Version::Http11)));
        drop(writer);
        let mut text = String::new();
        use std::io::{Read, Seek};
        (&*file).seek(io::SeekFrom::Start(0)).unwrap();
        (&*file).read_to_string(&mut text).unwrap();
        assert!(text.contains("/last"), "{text:?}");
    }

    #[test]
    fn a_reader_that_stalls_never_holds_the_loop_up() {
        // A pipe nobody reads: the writer thread blocks in write once the pipe is full, the
        // loop's hand-overs never wait, and past the cap lines are dropped and counted.
        let (reader, pipe) = std::io::pipe().unwrap();
        let handoff = Handoff::start(File::from(std::os::fd::OwnedFd::from(pipe))).unwrap();
        let mut writer = Writer::new(Sink::Thread(Arc::clone(&handoff)), LogFormat::Text);
        let record = record("GET", "/plaintext", Some(Version::Http11));
        let mut turns = 0;
        while writer.dropped == 0 {
            for _ in 0..1000 {
                writer.record(&record);
            }
            writer.end_of_turn();
            turns += 1;
            assert!(turns < 1000, "never full");
        }
        assert!(writer.buf.is_empty(), "the buffer given up on is not kept");
        // The end: whatever is still queued cannot be written, and finishing gives up on it.
        assert!(handoff.finish(Duration::from_millis(50)) > 0);
        drop(reader);
    }
}
