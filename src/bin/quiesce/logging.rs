//! The binary's log output (the library only speaks through the `log` facade).
//!
//! Two formats, `--log-format text` (the default) and `json`, each in one of two shapes:
//!
//! - on a terminal or into a file, every line starts with its time, RFC 3339 in UTC with
//!   milliseconds: `2026-11-30T10:28:27.123Z quiesce: info: listening on http://…`;
//! - when stderr is the journal's (systemd sets `JOURNAL_STREAM` to the device and inode of the
//!   stream it connected), a line starts with its syslog priority instead, `<6>quiesce: info: …`,
//!   which journald strips and keeps as the entry's priority (so `journalctl -p warning` works),
//!   and the time is the journal's own.
//!
//! A JSON line is one object: `ts` (not under the journal), `level`, `message`, `worker` (the
//! event loop that logged it, when one did), `thread` (any other thread), and the fields the
//! event carries (`event`, `addr`, `closed`, …). The exit summary is one JSON object in both
//! formats, with `ts` first.
//!
//! No thread that logs ever waits for stderr: a line is written at once when stderr takes it
//! without waiting, and otherwise goes into a bounded queue that one writer thread ([`Handoff`],
//! started then) writes out. A reader that stalls (a pipe nobody reads, a busy
//! journal) costs lines, dropped past 1 MiB waiting, not a stalled event loop; one that left (a
//! restarted journald, `| head`) or a full disk costs the lines that fail. Both are counted
//! (`/metrics`, the exit summary), and nothing of it panics or changes the exit code.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Record};
use quiesce::metrics::LogStream;

use crate::handoff::Handoff;

/// Most bytes of log lines waiting for stderr; past it, new lines are dropped and counted.
const STDERR_QUEUE: usize = 1024 * 1024;

/// The queue to stderr, once the logger is installed.
static STDERR: OnceLock<Arc<Handoff>> = OnceLock::new();

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `TIME quiesce: LEVEL: MESSAGE`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Every format, as `--log-format` names them.
    pub const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// What stderr is: a plain stream (a terminal, a file, a pipe), or the journal's, which keeps
/// its own time and reads priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stderr {
    Plain,
    Journal,
}

/// The output settings, fixed at startup.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    format: LogFormat,
    stderr: Stderr,
}

impl Output {
    /// `format`, to wherever stderr is connected.
    pub fn new(format: LogFormat) -> Output {
        let stderr = if stderr_is_journal() { Stderr::Journal } else { Stderr::Plain };
        Output { format, stderr }
    }

    /// Installs the logger: `level` (or `RUST_LOG`, when set) chooses what is written.
    pub fn install(self, level: LevelFilter) {
        let mut builder = env_logger::Builder::new();
        builder.filter_level(level);
        // rustls speaks of what one client sent (an IP address as SNI, an alert): a warning per
        // connection, which any client can make. Handshake failures are counted in /metrics
        // instead; RUST_LOG can still ask for rustls' lines.
        builder.filter_module("rustls", level.min(LevelFilter::Error));
        if let Ok(spec) = std::env::var("RUST_LOG") {
            builder.parse_filters(&spec);
        }
        builder.format(move |buf, record| {
            let line = self.render(record, SystemTime::now(), &thread_role());
            buf.write_all(line.as_bytes())
        });
        // Without a descriptor of stderr (it is closed), env_logger's own output, into which
        // the standard library writes nothing, without error.
        if let Ok(handoff) = start_stderr() {
            builder.target(env_logger::Target::Pipe(Box::new(StderrLines(Arc::clone(&handoff)))));
            let _ = STDERR.set(handoff);
        }
        builder.init();
    }

    /// One log line, newline included.
    fn render(&self, record: &Record<'_>, now: SystemTime, role: &ThreadRole) -> String {
        let mut line = String::with_capacity(128);
        if self.stderr == Stderr::Journal {
            let _ = write!(line, "<{}>", priority(record.level()));
        }
        match self.format {
            LogFormat::Text => {
                if self.stderr == Stderr::Plain {
                    let _ = write!(line, "{} ", humantime::format_rfc3339_millis(now));
                }
                let _ = write!(line, "quiesce: {}: {}", level_name(record.level()), record.args());
            }
            LogFormat::Json => {
                line.push('{');
                if self.stderr == Stderr::Plain {
                    let _ = write!(line, "\"ts\":\"{}\",", humantime::format_rfc3339_millis(now));
                }
                let _ = write!(line, "\"level\":\"{}\",\"message\":", level_name(record.level()));
                push_json_str(&mut line, &record.args().to_string());
                match role {
                    ThreadRole::Worker(n) => {
                        let _ = write!(line, ",\"worker\":{n}");
                    }
                    ThreadRole::Other(name) => {
                        line.push_str(",\"thread\":");
                        push_json_str(&mut line, name);
                    }
                }
                let _ = record.key_values().visit(&mut JsonFields(&mut line));
                line.push('}');
            }
        }
        line.push('\n');
        line
    }

    /// The exit summary (a JSON object), as one line with the time first.
    pub fn summary(&self, json: &str, now: SystemTime) -> String {
        let mut line = String::with_capacity(json.len() + 40);
        if self.stderr == Stderr::Journal {
            line.push_str("<6>");
            line.push_str(json);
        } else {
            match json.strip_prefix('{') {
                Some(rest) => {
                    let _ = write!(line, "{{\"ts\":\"{}\",{rest}", humantime::format_rfc3339_millis(now));
                }
                None => line.push_str(json),
            }
        }
        line
    }
}

/// The handoff to stderr, on a descriptor of its own.
fn start_stderr() -> io::Result<Arc<Handoff>> {
    use std::os::fd::AsFd;
    let file = std::fs::File::from(io::stderr().as_fd().try_clone_to_owned()?);
    Ok(Handoff::open(file, LogStream::Stderr, STDERR_QUEUE, "quiesce-stderr"))
}

/// What env_logger writes each record to (one `write_all` per record, under its lock): the
/// queue to stderr. Never fails, never waits.
struct StderrLines(Arc<Handoff>);

impl io::Write for StderrLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `line` (without its newline) to stderr after the log lines before it: through the
/// queue once the logger is installed, else directly. Never panics, whatever stderr is.
pub fn emit(line: &str) {
    match STDERR.get() {
        Some(handoff) => {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            handoff.push(&bytes);
        }
        None => {
            let _ = writeln!(io::stderr(), "{line}");
        }
    }
}

/// The process is about to exit: gives the writer thread until `deadline` to write what is
/// queued (a reader that stalled must not hold the exit up longer).
pub fn finish(deadline: Instant) {
    if let Some(handoff) = STDERR.get() {
        handoff.finish(deadline);
    }
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` names its
/// device and inode (`systemd.exec(5)`), which a redirection of stderr would change.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    std::fs::File::from(fd).metadata().is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Which thread logged: an event loop (`main` runs worker 0; the others are named
/// `quiesce-worker-N` by `process::run`), or another one, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ThreadRole {
    Worker(usize),
    Other(String),
}

fn thread_role() -> ThreadRole {
    let thread = std::thread::current();
    match thread.name() {
        Some("main") => ThreadRole::Worker(0),
        Some(name) => match name.strip_prefix("quiesce-worker-").and_then(|n| n.parse().ok()) {
            Some(n) => ThreadRole::Worker(n),
            None => ThreadRole::Other(name.to_owned()),
        },
        None => ThreadRole::Other(format!("{:?}", thread.id())),
    }
}

/// syslog priorities (RFC 5424): err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Appends an event's fields to a JSON object under construction: numbers and booleans as
/// such, anything else as a string.
struct JsonFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push(',');
        push_json_str(self.0, key.as_str());
        self.0.push(':');
        if let Some(n) = value.to_u64() {
            let _ = write!(self.0, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(self.0, "{n}");
        } else if let Some(x) = value.to_f64().filter(|x| x.is_finite()) {
            let _ = write!(self.0, "{x}");
        } else if let Some(b) = value.to_bool() {
            let _ = write!(self.0, "{b}");
        } else {
            push_json_str(self.0, &value.to_string());
        }
        Ok(())
    }
}

/// Appends `s` as a JSON string (RFC 8259 §7).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Controls (C0, DEL, C1) and the Unicode line and paragraph separators: a reader
            // that splits lines on them (Python's splitlines) must see one object per line.
            c if u32::from(c) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-11-30T10:28:27.123Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_034_507_123)
    }

    fn render(format: LogFormat, stderr: Stderr, record: &Record<'_>, role: ThreadRole) -> String {
        Output { format, stderr }.render(record, at(), &role)
    }

    #[test]
    fn text_lines_start_with_the_time_or_with_a_priority_under_the_journal() {
        let args = format_args!("listening on http://127.0.0.1:8080");
        let record = Record::builder().args(args).level(Level::Info).build();
        assert_eq!(
            render(LogFormat::Text, Stderr::Plain, &record, ThreadRole::Worker(0)),
            "2026-11-30T10:28:27.123Z quiesce: info: listening on http://127.0.0.1:8080\n"
        );
        assert_eq!(
            render(LogFormat::Text, Stderr::Journal, &record, ThreadRole::Worker(0)),
            "<6>quiesce: info: listening on http://127.0.0.1:8080\n"
        );
        let warn = Record::builder().args(format_args!("w")).level(Level::Warn).build();
        assert!(render(LogFormat::Text, Stderr::Journal, &warn, ThreadRole::Worker(0)).starts_with("<4>"));
        let error = Record::builder().args(format_args!("e")).level(Level::Error).build();
        assert!(render(LogFormat::Text, Stderr::Journal, &error, ThreadRole::Worker(0)).starts_with("<3>"));
    }

    #[test]
    fn json_lines_carry_the_worker_and_the_events_fields() {
        let fields: [(&str, Value<'_>); 3] =
            [("event", Value::from("drained")), ("drain_ms", Value::from(812u64)), ("ok", Value::from(true))];
        let args = format_args!("worker 1: drained in \"0.81s\"\n");
        let record = Record::builder().args(args).level(Level::Info).key_values(&fields).build();
        let line = render(LogFormat::Json, Stderr::Plain, &record, ThreadRole::Worker(1));
        assert_eq!(
            line,
            "{\"ts\":\"2026-11-30T10:28:27.123Z\",\"level\":\"info\",\"message\":\"worker 1: drained in \\\"0.81s\\\"\\n\",\
             \"worker\":1,\"event\":\"drained\",\"drain_ms\":812,\"ok\":true}\n"
        );
        let other = render(LogFormat::Json, Stderr::Journal, &record, ThreadRole::Other("quiesce-signals".into()));
        assert!(other.starts_with("<6>{\"level\":\"info\","), "{other}");
        assert!(other.contains(",\"thread\":\"quiesce-signals\","), "{other}");
    }

    #[test]
    fn the_summary_stays_one_json_object_with_the_time_first() {
        let json = r#"{"event":"shutdown","exit_code":0}"#;
        let plain = Output { format: LogFormat::Text, stderr: Stderr::Plain }.summary(json, at());
        assert_eq!(plain, r#"{"ts":"2026-11-30T10:28:27.123Z","event":"shutdown","exit_code":0}"#);
        let journal = Output { format: LogFormat::Json, stderr: Stderr::Journal }.summary(json, at());
        assert_eq!(journal, format!("<6>{json}"));
    }

    #[test]
    fn json_strings_escape_what_they_must() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\u{1}\u{7f}é");
        assert_eq!(out, r#""a\"b\\c\u0001\u007fé""#);
    }
}
