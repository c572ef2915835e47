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
//!   causes, is followed by the rest at once; when that fails, the half line already written
//!   is cut off again: the file holds whole lines only, and what was not written is counted as
//!   lost);
//! - to anything else (stdout as a pipe, a socket, a terminal: a reader that may stall for
//!   ever), through one writer thread ([`Handoff`]): the loop only hands its buffer over, and
//!   never waits.
//!
//! Either way, past 1 MiB waiting (4 MiB for the writer thread), new lines are dropped (a
//! destination that takes nothing must not take the server's memory, nor stop it serving or
//! draining). Every line lost and every failed write is counted (`LogHealth`: `/metrics` and
//! the exit summary); an episode of losses is logged once when it begins and once when writing
//! works again.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use quiesce::metrics::{LogHealth, LogStream};
use quiesce::{AccessLog, AccessRecord, Version};

use crate::handoff::{Handoff, lines_in};
use crate::logging::{LogFormat, push_json_str};

/// A buffer this full goes out at once, without waiting for the end of the turn.
const WRITE_AT: usize = 64 * 1024;
/// Most bytes held back when writes take less than is logged; further lines are dropped.
const MAX_HELD: usize = 1024 * 1024;
/// Most bytes waiting for the writer thread, from every worker.
const MAX_QUEUED: usize = 4 * 1024 * 1024;

/// Where the lines go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A regular file: each worker writes its buffer itself, once per turn.
    File(Arc<File>),
    /// A pipe, a socket, a terminal: one thread writes, the loops hand it their buffers.
    Thread(Arc<Handoff>),
}

/// Opens the access log's destination: `-` is stdout, anything else a file opened for
/// appending (created with mode 0640). A destination that is not a regular file gets the
/// writer thread.
pub fn open(path: &str) -> io::Result<Destination> {
    let file = if path == "-" {
        use std::os::fd::AsFd;
        File::from(io::stdout().as_fd().try_clone_to_owned()?)
    } else {
        OpenOptions::new().append(true).create(true).mode(0o640).open(path)?
    };
    if file.metadata()?.file_type().is_file() {
        Ok(Destination::File(Arc::new(file)))
    } else {
        Ok(Destination::Thread(Handoff::open(file, LogStream::Access, MAX_QUEUED, "quiesce-access-log")))
    }
}

impl Destination {
    /// The server stopped: waits (until `deadline` at most) for the writer thread to write
    /// what it holds, and says what it could not. A regular file has nothing left by then.
    pub fn finish(&self, deadline: Instant) {
        if let Destination::Thread(handoff) = self {
            let left = handoff.finish(deadline);
            if left > 0 {
                warn!("access log: {left} bytes not written: the destination stopped taking them");
            }
        }
    }
}

/// One worker's access log.
#[derive(Debug)]
pub struct Writer {
    out: Destination,
    format: LogFormat,
    /// Lines not written yet.
    buf: Vec<u8>,
    clock: Clock,
    /// The last client address, formatted (one keep-alive client sends many requests).
    ip: Option<(IpAddr, String)>,
    /// Lines this writer lost (dropped, or lost to a write error).
    lost: u64,
}

impl Writer {
    /// A writer to `out` (shared by the workers) in `format`.
    pub fn new(out: Destination, format: LogFormat) -> Writer {
        Writer { out, format, buf: Vec::with_capacity(WRITE_AT), clock: Clock::default(), ip: None, lost: 0 }
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
                if let Some(tls) = record.tls {
                    out.extend_from_slice(b" tls=");
                    out.extend_from_slice(tls.version.as_bytes());
                    out.extend_from_slice(b" sni=");
                    push_clf(out, tls.sni.as_deref().unwrap_or("-"));
                }
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
                out.push(b'"');
                if let Some(tls) = record.tls {
                    text.clear();
                    text.push_str(",\"tls\":\"");
                    text.push_str(tls.version);
                    text.push_str("\",\"sni\":");
                    match tls.sni.as_deref() {
                        Some(sni) => push_json_str(&mut text, sni),
                        None => text.push_str("null"),
                    }
                    out.extend_from_slice(text.as_bytes());
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }

    /// Writes out the buffer in one `write`, or hands it to the writer thread. What cannot go
    /// is counted as lost; serving goes on whatever happens to the log.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let health = LogHealth::global();
        match &self.out {
            Destination::File(file) => match write_whole(file, &mut self.buf) {
                Ok(()) => wrote(),
                Err(e) => {
                    let lines = lines_in(&self.buf);
                    self.buf.clear();
                    self.lost += lines;
                    health.failed(LogStream::Access);
                    health.lost(LogStream::Access, lines);
                    losing(|| format!("{e}; lines are lost until writing works again"));
                }
            },
            Destination::Thread(handoff) => match handoff.give(&mut self.buf) {
                Ok(()) => wrote(),
                // (Counted by the hand-over.)
                Err(lines) => {
                    self.lost += lines;
                    losing(|| "the destination takes too little; lines dropped until it catches up".into());
                }
            },
        }
    }
}

/// Whether the access log is losing lines (a write failed, or lines were dropped, and none was
/// written since), shared by the workers: an episode is reported once, when it begins, and
/// once more when writing works again (the count is in `/metrics` and the exit summary).
static LOSING: AtomicBool = AtomicBool::new(false);

/// Lines were lost: `why` is logged if this begins an episode.
#[cold]
fn losing(why: impl FnOnce() -> String) {
    if !LOSING.swap(true, Ordering::Relaxed) {
        warn!("access log: {} (counted in /metrics)", why());
    }
}

/// Lines went out: ends an episode of losses, if one was on.
#[inline]
fn wrote() {
    if LOSING.load(Ordering::Relaxed) && LOSING.swap(false, Ordering::Relaxed) {
        info!("access log: writing again");
    }
}

/// One file write at a time from this process's workers: a write that fails half-way through
/// a line takes that half back out before another worker appends after it.
static APPENDING: Mutex<()> = Mutex::new(());

/// Writes `buf` to the file and empties it. One `write` takes it all unless something is wrong
/// (a full disk, a size limit): a short write is followed by the rest at once, so that another
/// worker's lines cannot land inside one of ours. On an error, the file is left with whole
/// lines only (the start of a line whose rest could not be written is taken back out), and
/// `buf` keeps the lines not written.
fn write_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    write_whole_to(&mut &*file, file, buf)
}

/// [`write_whole`], writing through `out` (`file` itself, or a stand-in in tests).
fn write_whole_to(out: &mut impl io::Write, file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    let _alone = APPENDING.lock().unwrap_or_else(PoisonError::into_inner);
    let mut done = 0;
    let result = loop {
        match out.write(&buf[done..]) {
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
            let whole = buf[..done].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if done > whole {
                take_back(file, (done - whole) as u64);
            }
            buf.drain(..whole);
        }
    }
    result
}

/// Cuts the last `partial` bytes, half a line, off the end of the file, if nothing was
/// appended after them (by another process: this one's workers wait for `APPENDING`). A file
/// opened for appending is, after a write, positioned where that write ended.
fn take_back(mut file: &File, partial: u64) {
    let (Ok(end), Ok(meta)) = (file.stream_position(), file.metadata()) else { return };
    if meta.len() == end
        && let Err(e) = file.set_len(end.saturating_sub(partial))
    {
        log::debug!("access log: cannot take back half a line: {e}");
    }
}

impl Drop for Writer {
    /// The server is done with it: what is still buffered goes out.
    fn drop(&mut self) {
        self.write_out();
    }
}

impl AccessLog for Writer {
    fn record(&mut self, record: &AccessRecord<'_>) {
        if self.buf.len() >= MAX_HELD {
            self.lost += 1;
            LogHealth::global().lost(LogStream::Access, 1);
            losing(|| "the destination takes too little; lines dropped until it catches up".into());
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
    let mut digits = itoa::Buffer::new();
    for (label, n) in labels.into_iter().zip(numbers) {
        out.extend_from_slice(label);
        out.extend_from_slice(digits.format(n).as_bytes());
    }
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
            let t = Utc::from_unix(second);
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let month = MONTHS[(t.month - 1) as usize];
            let (y, mo, d, h, mi, s) = (t.year, t.month, t.day, t.hour, t.minute, t.second);
            self.clf.clear();
            let _ = write!(self.clf, "{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000");
            self.rfc3339.clear();
            let _ = write!(self.rfc3339, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        }
        self.millis = since.subsec_millis();
        Stamp { clf: &self.clf, rfc3339: &self.rfc3339, millis: self.millis }
    }
}

/// A second since the Unix epoch as a date and time of day in UTC (the proleptic Gregorian
/// calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Utc {
    year: u64,
    /// 1 to 12.
    month: u32,
    /// 1 to 31.
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Utc {
    /// Howard Hinnant's `civil_from_days` (chrono-compatible low-level date algorithms), for days
    /// on or after 1970-01-01: counted in 400-year eras from 0000-03-01, so that the leap day
    /// ends each year.
    fn from_unix(secs: u64) -> Utc {
        let (days, of_day) = (secs / 86_400, secs % 86_400);
        let from_march_0000 = days + 719_468;
        let era = from_march_0000 / 146_097;
        let day_of_era = from_march_0000 % 146_097;
        let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = era * 400 + year_of_era + u64::from(month <= 2);
        Utc {
            year,
            month: month as u32,
            day: day as u32,
            hour: (of_day / 3_600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
        }
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
            tls: None,
            ending: Ending::Complete,
        }
    }

    /// 2026-11-30T10:28:27.123Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_034_507_123)
    }

    fn line(format: LogFormat, record: &AccessRecord<'_>) -> String {
        let file = Arc::new(tempfile());
        let mut writer = Writer::new(Destination::File(file), format);
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
        let session = quiesce::TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            alpn: Some("http/1.1".into()),
            sni: Some("example.com".into()),
        };
        let https = AccessRecord { tls: Some(&session), ..record("GET", "/", Some(Version::Http11)) };
        assert!(line(LogFormat::Text, &https).ends_with(" end=complete tls=TLSv1.3 sni=example.com\n"));
        assert!(
            line(LogFormat::Json, &https)
                .ends_with(",\"end\":\"complete\",\"tls\":\"TLSv1.3\",\"sni\":\"example.com\"}\n")
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
            push_numbers(&mut out, [b" ", b" ", b" ", b" "], [n, 0, 1, n]);
            assert_eq!(out, format!(" {n} 0 1 {n}").into_bytes());
        }
        for (ms, text) in [(0, "000"), (7, "007"), (45, "045"), (999, "999")] {
            let mut out = Vec::new();
            push_millis(&mut out, ms);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn dates_agree_with_the_calendar() {
        // Each against humantime's RFC 3339 rendering: the epoch, leap days (2000 is a leap
        // year, 2100 is not), year ends, and a day in every month for two centuries.
        let mut seconds = vec![0, 59, 86_399, 86_400, 951_782_400, 951_868_799, 978_307_199, 4_107_542_400];
        seconds.extend((0..2_500).map(|i| i * 2_629_743 + i % 86_400));
        for second in seconds {
            let humantime = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second)).to_string();
            let mut clock = Clock::default();
            let stamp = clock.at(UNIX_EPOCH + Duration::from_secs(second));
            assert_eq!(format!("{}Z", stamp.rfc3339), humantime, "{second}");
            let t = Utc::from_unix(second);
            let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                [t.month as usize - 1];
            let clf = format!("{:02}/{month}/{}:{} +0000", t.day, t.year, &humantime[11..19]);
            assert_eq!(stamp.clf, clf, "{second}");
        }
        assert_eq!(
            Utc::from_unix(951_782_400),
            Utc { year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0 },
            "2000-02-29"
        );
        assert_eq!(Utc::from_unix(4_107_542_400).month, 3, "2100 has no 29 February");
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
        let mut writer = Writer::new(Destination::File(Arc::clone(&file)), LogFormat::Text);
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
        let mut writer = Writer::new(Destination::File(Arc::clone(&file)), LogFormat::Text);
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
        let file = File::from(std::os::fd::OwnedFd::from(pipe));
        let handoff = Handoff::open(file, LogStream::Access, MAX_QUEUED, "test");
        let mut writer = Writer::new(Destination::Thread(Arc::clone(&handoff)), LogFormat::Text);
        let record = record("GET", "/plaintext", Some(Version::Http11));
        let mut turns = 0;
        while writer.lost == 0 {
            for _ in 0..1000 {
                writer.record(&record);
            }
            writer.end_of_turn();
            turns += 1;
            assert!(turns < 1000, "never full");
        }
        assert!(writer.buf.is_empty(), "the buffer given up on is not kept");
        // The end: whatever is still queued cannot be written, and finishing gives up on it.
        assert!(handoff.finish(Instant::now() + Duration::from_millis(50)) > 0);
        drop(reader);
    }

    #[test]
    fn a_file_that_fails_half_way_through_a_line_keeps_whole_lines_only() {
        // What a full disk or a size limit does: the first write takes part of the buffer,
        // the next fails. A write that takes 40 bytes then fails, on a real file.
        let path = std::env::temp_dir().join(format!("quiesce-access-half-{}", std::process::id()));
        let file = OpenOptions::new().create(true).append(true).read(true).open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut buf = b"first line\nsecond line\nthird line, never whole\n".to_vec();
        let mut limited = Limited { file: &file, room: 40 };
        let result = write_whole_to(&mut limited, &file, &mut buf);
        assert!(result.is_err());
        let mut text = String::new();
        use std::io::Read;
        (&file).seek(io::SeekFrom::Start(0)).unwrap();
        (&file).read_to_string(&mut text).unwrap();
        assert_eq!(text, "first line\nsecond line\n", "half a line was left in the file");
        assert_eq!(buf, b"third line, never whole\n", "what was not written stays to be counted");
    }

    /// A file that takes `room` more bytes, then fails as a full disk does.
    struct Limited<'a> {
        file: &'a File,
        room: usize,
    }

    impl io::Write for Limited<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.file.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
