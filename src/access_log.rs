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
//! buffer goes out in one `write` at the end of the loop's turn (or as soon as it holds 64 KiB),
//! so a slow disk holds the loop up for one write at most. The file is opened for appending,
//! so the workers' writes never interleave inside a line. What a write did not take waits for
//! the next turn; past 1 MiB waiting, new lines are dropped and counted (a disk that takes
//! nothing must not take the server's memory), and the count is logged.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;
use quiesce::{AccessLog, AccessRecord, Version};

use crate::logging::{LogFormat, push_json_str};

/// A buffer this full goes out at once, without waiting for the end of the turn.
const WRITE_AT: usize = 64 * 1024;
/// Most bytes held back when writes take less than is logged; further lines are dropped.
const MAX_HELD: usize = 1024 * 1024;

/// Opens the access log's destination: `-` is stdout, anything else a file opened for
/// appending (created with mode 0640).
pub fn open(path: &str) -> io::Result<Arc<File>> {
    if path == "-" {
        use std::os::fd::AsFd;
        return Ok(Arc::new(File::from(io::stdout().as_fd().try_clone_to_owned()?)));
    }
    OpenOptions::new().append(true).create(true).mode(0o640).open(path).map(Arc::new)
}

/// One worker's access log.
#[derive(Debug)]
pub struct Writer {
    out: Arc<File>,
    format: LogFormat,
    buf: Vec<u8>,
    clock: Clock,
    line: String,
    /// Lines dropped since the last warning.
    dropped: u64,
}

impl Writer {
    /// A writer to `out` (shared by the workers) in `format`.
    pub fn new(out: Arc<File>, format: LogFormat) -> Writer {
        Writer {
            out,
            format,
            buf: Vec::with_capacity(WRITE_AT),
            clock: Clock::default(),
            line: String::new(),
            dropped: 0,
        }
    }

    /// Formats `record`, at `now`, into `self.line`.
    fn format(&mut self, record: &AccessRecord<'_>, now: SystemTime) {
        let line = &mut self.line;
        line.clear();
        let time = self.clock.at(now);
        let version = match record.version {
            Some(Version::Http10) => "HTTP/1.0",
            Some(Version::Http11) => "HTTP/1.1",
            None => "-",
        };
        let us = record.duration.as_micros();
        match self.format {
            LogFormat::Text => {
                let _ = write!(line, "{} - - [{}] \"", record.peer.ip(), time.clf);
                if record.version.is_some() {
                    push_clf(line, record.method);
                    line.push(' ');
                    push_clf(line, record.target);
                    line.push(' ');
                    line.push_str(version);
                } else {
                    line.push('-');
                }
                let drain = if record.during_drain { "yes" } else { "no" };
                let _ = writeln!(
                    line,
                    "\" {} {} us={us} conn={} drain={drain}",
                    record.status, record.body_bytes, record.connection_id
                );
            }
            LogFormat::Json => {
                let _ = write!(
                    line,
                    "{{\"ts\":\"{}.{:03}Z\",\"client\":\"{}\",\"method\":",
                    time.rfc3339, time.millis, record.peer
                );
                push_json_str(line, record.method);
                line.push_str(",\"target\":");
                push_json_str(line, record.target);
                let _ = writeln!(
                    line,
                    ",\"version\":\"{version}\",\"status\":{},\"bytes\":{},\"duration_us\":{us},\"conn\":{},\"draining\":{}}}",
                    record.status, record.body_bytes, record.connection_id, record.during_drain
                );
            }
        }
    }

    /// Writes out the buffer in one `write`; what it did not take waits.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match (&*self.out).write(&self.buf) {
            Ok(n) => {
                self.buf.drain(..n);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => {}
            Err(e) => {
                warn!("access log: {e}; {} bytes of it lost", self.buf.len());
                self.buf.clear();
            }
        }
        if self.dropped > 0 && self.buf.len() < MAX_HELD / 2 {
            warn!("access log: the destination took too little; {} lines dropped", self.dropped);
            self.dropped = 0;
        }
    }
}

impl AccessLog for Writer {
    fn record(&mut self, record: &AccessRecord<'_>) {
        self.format(record, SystemTime::now());
        if self.buf.len() + self.line.len() > MAX_HELD {
            self.dropped += 1;
            return;
        }
        self.buf.extend_from_slice(self.line.as_bytes());
        if self.buf.len() >= WRITE_AT {
            self.write_out();
        }
    }

    fn end_of_turn(&mut self) {
        self.write_out();
    }
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

/// Appends a request-line field for the Common Log Format: `"` and `\` escaped as nginx does
/// (`\x22`, `\x5C`), so a line always splits the same way.
fn push_clf(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\x22"),
            '\\' => out.push_str("\\x5C"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        }
    }

    /// 2026-11-30T10:28:27.123Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_034_507_123)
    }

    fn line(format: LogFormat, record: &AccessRecord<'_>) -> String {
        let file = Arc::new(tempfile());
        let mut writer = Writer::new(file, format);
        writer.format(record, at());
        writer.line.clone()
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
            "127.0.0.1 - - [30/Nov/2026:10:28:27 +0000] \"GET /plaintext HTTP/1.1\" 200 13 us=412 conn=17 drain=no\n"
        );
        let unread = AccessRecord { status: 400, body_bytes: 24, during_drain: true, ..record("-", "-", None) };
        assert_eq!(
            line(LogFormat::Text, &unread),
            "127.0.0.1 - - [30/Nov/2026:10:28:27 +0000] \"-\" 400 24 us=412 conn=17 drain=yes\n"
        );
        let quoted = record("GET", "/a\"b\\c", Some(Version::Http10));
        assert!(line(LogFormat::Text, &quoted).contains("\"GET /a\\x22b\\x5Cc HTTP/1.0\""));
    }

    #[test]
    fn json_lines() {
        let r = record("GET", "/a\"b", Some(Version::Http11));
        assert_eq!(
            line(LogFormat::Json, &r),
            "{\"ts\":\"2026-11-30T10:28:27.123Z\",\"client\":\"127.0.0.1:50124\",\"method\":\"GET\",\"target\":\"/a\\\"b\",\
             \"version\":\"HTTP/1.1\",\"status\":200,\"bytes\":13,\"duration_us\":412,\"conn\":17,\"draining\":false}\n"
        );
    }

    #[test]
    fn a_turn_ends_with_one_write_of_every_line() {
        let file = Arc::new(tempfile());
        let mut writer = Writer::new(Arc::clone(&file), LogFormat::Text);
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
}
