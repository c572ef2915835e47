//! Operating the `quiesce` binary in production: workers, `/metrics`, systemd socket activation
//! and notification, the drain delay, the SIGHUP zero-downtime restart, the connection cap and
//! running out of file descriptors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const LOG_WAIT: Duration = Duration::from_secs(5);
const EXIT_WAIT: Duration = Duration::from_secs(10);
const SIGHUP: i32 = libc::SIGHUP;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `pid` (a process that is not necessarily our child).
fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: plain kill(2); no memory is passed.
    if unsafe { libc::kill(pid, sig) } == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `/proc/<pid>/stat` after the command name: field 3 (state) onwards.
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` is a live (not zombie) quiesce process.
fn is_live_quiesce(pid: u32) -> bool {
    let alive = proc_stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z" && state != "X"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    alive && String::from_utf8_lossy(&cmdline).contains("quiesce")
}

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`).
fn parent_pid(pid: u32) -> Option<u32> {
    proc_stat_fields(pid)?.get(1)?.parse().ok()
}

/// CPU time (user + system) used by `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let fields = proc_stat_fields(pid).expect("read /proc/<pid>/stat");
    // Fields 14 (utime) and 15 (stime); `fields[0]` is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "sysconf(_SC_CLK_TCK) = {per_second}");
    ticks as f64 / per_second as f64
}

/// Open descriptors of `pid` numbered below `limit` (those count against an RLIMIT_NOFILE of
/// `limit`; inherited high-numbered ones do not).
fn open_fds_below(pid: u32, limit: u64) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok()).filter(|&fd| fd < limit).count()
}

/// Kills (SIGKILL) a quiesce process that is not our child when dropped, if it still runs: the
/// successor of a SIGHUP restart must not outlive a failed test.
struct Orphan(Option<u32>);

impl Orphan {
    /// Stops the successor with SIGTERM and expects it to exit.
    fn stop(mut self) {
        let Some(pid) = self.0.take() else { return };
        kill(pid, libc::SIGTERM).expect("SIGTERM the new process");
        assert!(wait_until(EXIT_WAIT, || !is_live_quiesce(pid)), "new process {pid} did not exit");
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && is_live_quiesce(pid)
        {
            let _ = kill(pid, libc::SIGKILL);
        }
    }
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("quiesce-ops-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One GET with `Connection: close` on a fresh connection.
fn fetch(addr: SocketAddr, path: &str) -> Response {
    let mut c = connect(addr);
    c.request(&get_close(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The `/metrics` text.
fn scrape(addr: SocketAddr) -> String {
    let resp = fetch(addr, "/metrics");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"), "{resp:?}");
    resp.text()
}

/// The value of the sample `key` (`name` or `name{labels}`, exactly as rendered).
fn sample(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.rsplit_once(' ')?;
        if k == key { v.parse().ok() } else { None }
    })
}

/// The value of the sample `key`; panics with the text if absent.
fn value(text: &str, key: &str) -> u64 {
    sample(text, key).unwrap_or_else(|| panic!("no sample {key} in:\n{text}"))
}

/// The label `name` of the `quiesce_info` sample.
fn info_label(text: &str, name: &str) -> String {
    let line =
        text.lines().find(|l| l.starts_with("quiesce_info{")).unwrap_or_else(|| panic!("no quiesce_info:\n{text}"));
    let marker = format!("{name}=\"");
    let start = line.find(&marker).unwrap_or_else(|| panic!("no {name} label in {line}")) + marker.len();
    let len = line[start..].find('"').unwrap_or_else(|| panic!("unterminated label in {line}"));
    line[start..start + len].to_string()
}

fn info_pid(text: &str) -> u32 {
    info_label(text, "pid").parse().expect("numeric pid label")
}

/// Whether bytes (or EOF, or an error) are waiting on `c`, without consuming them.
fn has_data(c: &Client) -> bool {
    if !c.buffered().is_empty() {
        return true;
    }
    c.stream.set_nonblocking(true).expect("set_nonblocking");
    let peeked = c.stream.peek(&mut [0u8; 1]);
    c.stream.set_nonblocking(false).expect("set_nonblocking");
    !matches!(peeked, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Connects and sends one keep-alive `GET /plaintext`.
fn waiting_client(addr: SocketAddr) -> Client {
    let mut c = connect(addr);
    send(&mut c, &get("/plaintext"));
    c
}

/// Reads the (already arriving) answer to [`waiting_client`]'s request and checks it.
fn expect_plaintext(c: &mut Client, what: &str) {
    let resp = c.read_response().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_ok_body(&resp, "Hello, World!");
}

/// The number of a key in a one-line JSON object (minimal: the first `"key":` anywhere).
fn json_number(json: &str, key: &str) -> f64 {
    let marker = format!("\"{key}\":");
    let start = json.find(&marker).unwrap_or_else(|| panic!("no {key} in {json}")) + marker.len();
    let len = json[start..].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(0);
    json[start..start + len].parse().unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// The object under `key` in a one-line JSON object (no nesting inside it).
fn json_object<'a>(json: &'a str, key: &str) -> &'a str {
    let marker = format!("\"{key}\":{{");
    let start = json.find(&marker).unwrap_or_else(|| panic!("no object {key} in {json}")) + marker.len() - 1;
    let len = json[start..].find('}').unwrap_or_else(|| panic!("unterminated {key} in {json}")) + 1;
    &json[start..start + len]
}

/// The exit summary line: one line of JSON with the expected keys; returns it.
fn check_summary(line: &str, outcome: &str, exit_code: i32, workers: usize) -> String {
    assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON object: {line}");
    assert_eq!(line.matches('{').count(), line.matches('}').count(), "unbalanced braces: {line}");
    assert!(line.contains("\"event\":\"shutdown\""), "{line}");
    assert!(line.contains(&format!("\"outcome\":\"{outcome}\"")), "{line}");
    assert_eq!(json_number(line, "exit_code"), f64::from(exit_code), "{line}");
    assert_eq!(json_number(line, "workers"), workers as f64, "{line}");
    let at_start = json_object(line, "at_drain_start");
    for key in ["new", "active", "idle"] {
        assert!(json_number(at_start, key) >= 0.0, "{line}");
    }
    assert!(json_number(line, "served_during_drain") >= 0.0, "{line}");
    assert!(json_number(line, "closed_by_force") >= 0.0, "{line}");
    assert!(json_number(line, "drain_ms") >= 0.0, "{line}");
    line.to_string()
}

/// Waits (bounded) for a log line satisfying `pred`.
fn wait_log_where(server: &Quiesce, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let mut found = None;
    wait_until(timeout, || {
        found = server.logs().into_iter().find(|l| pred(l));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no matching log line within {timeout:?}; logs:\n{}", server.logs_text()))
}

/// Waits (bounded) for our child to exit, without waiting for stderr's end (a restarted
/// successor keeps the pipe open).
fn wait_status(server: &mut Quiesce, timeout: Duration) -> ExitStatus {
    let mut status = None;
    wait_until(timeout, || {
        status = server.try_status();
        status.is_some()
    });
    status.unwrap_or_else(|| panic!("quiesce did not exit within {timeout:?}; logs:\n{}", server.logs_text()))
}

// ---------------------------------------------------------------------------------------------
// 1. Workers
// ---------------------------------------------------------------------------------------------

/// A request whose head the server has provably read (it answered `100 Continue`), delayed 1 s.
/// Works whichever worker took the connection.
fn delayed_request_in_flight(addr: SocketAddr, path: &str) -> Client {
    let mut c = connect(addr);
    let head =
        format!("GET {path}?delay=1s HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
    send(&mut c, head.as_bytes());
    let expected = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; expected.len()];
    c.stream.read_exact(&mut got).unwrap_or_else(|e| panic!("reading 100 Continue: {e}"));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    send(&mut c, b"x");
    c
}

#[test]
fn workers_serve_and_drain_together() {
    let mut server = Quiesce::start(&["--workers", "3"]);
    let addr = server.addr();
    server.expect_log("with 3 workers", LOG_WAIT);
    for i in 0..60 {
        let resp = fetch(addr, "/plaintext");
        assert_ok_body(&resp, "Hello, World!");
        assert!(resp.is_close(), "request {i}: {resp:?}");
    }

    // Every worker took some of the 60 connections (SO_REUSEPORT spreads them by hash; the chance
    // one of three gets none is about 1e-10), and the sum is the per-worker total.
    let mut text = String::new();
    let spread = wait_until(Duration::from_secs(5), || {
        text = scrape(addr);
        let per_worker: Vec<u64> = (0..3)
            .map(|w| value(&text, &format!("quiesce_worker_accepted_connections_total{{worker=\"{w}\"}}")))
            .collect();
        per_worker.iter().all(|&n| n > 0)
            && per_worker.iter().sum::<u64>() >= 60
            && per_worker.iter().sum::<u64>() == value(&text, "quiesce_accepted_connections_total")
    });
    assert!(spread, "connections not spread over the 3 workers, or sums disagree:\n{text}");
    assert_eq!(info_label(&text, "workers"), "3", "{text}");
    assert_eq!(info_pid(&text), server.pid(), "{text}");
    let families = [
        "connections",
        "accepted_connections_total",
        "responses_total",
        "received_bytes_total",
        "sent_bytes_total",
        "draining",
        "drain_duration_microseconds",
        "forced_closes_total",
    ];
    for family in families {
        for w in 0..3 {
            let prefix = format!("quiesce_worker_{family}{{worker=\"{w}\"");
            assert!(text.lines().any(|l| l.starts_with(&prefix)), "no {prefix}...}} series:\n{text}");
        }
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("quiesce_worker_{family}{{worker=\"3\""))),
            "a fourth worker in:\n{text}"
        );
    }
    assert_eq!(value(&text, "quiesce_draining"), 0);

    // One delayed request in flight on whichever worker took it, then one SIGINT.
    let mut slow = delayed_request_in_flight(addr, "/slow");
    server.signal(SIGINT);
    let resp =
        slow.read_response().unwrap_or_else(|e| panic!("in-flight response: {e}; logs:\n{}", server.logs_text()));
    assert_ok_body(&resp, &hello(r#""/slow""#));
    assert!(resp.is_close(), "{resp:?}");
    drop(slow);
    let status = server.wait_exit(EXIT_WAIT);
    let logs = server.logs();
    server.assert_exit_code(status, 0);
    assert!(logs.iter().any(|l| l.contains("worker 0: received SIGINT: draining")), "{}", server.logs_text());
    for w in 0..3 {
        let drained = format!("worker {w}: drained in");
        assert_eq!(logs.iter().filter(|l| l.contains(&drained)).count(), 1, "{drained}:\n{}", server.logs_text());
    }
    let last = logs.last().expect("some logs");
    let summary = check_summary(last, "drained", 0, 3);
    let at_start = json_object(&summary, "at_drain_start");
    assert!(json_number(at_start, "active") >= 1.0, "{summary}");
    assert!(json_number(&summary, "served_during_drain") >= 1.0, "{summary}");
    assert_eq!(json_number(&summary, "closed_by_force"), 0.0, "{summary}");
    assert_eq!(logs.iter().filter(|l| l.contains("\"event\":\"shutdown\"")).count(), 1, "{}", server.logs_text());
}

// ---------------------------------------------------------------------------------------------
// 2. /metrics
// ---------------------------------------------------------------------------------------------

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `k="v",k="v"` (the inside of the braces); panics on malformed labels.
fn parse_labels(inner: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label without =\" in {line:?}"));
        assert!(is_label_name(name), "bad label name {name:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((_, '\n')) | None => panic!("unterminated label value in {line:?}"),
                Some((_, c)) => value.push(c),
            }
        };
        assert!(!labels.iter().any(|(n, _)| n == name), "label {name} twice in {line:?}");
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            assert!(!more.is_empty(), "trailing comma in {line:?}");
            rest = more;
        } else {
            assert!(rest.is_empty(), "junk after label value in {line:?}");
        }
    }
    labels
}

/// Checks `text` against the Prometheus text format (0.0.4) as quiesce uses it and returns the
/// samples by their rendered key (`name` or `name{labels}`).
fn parse_exposition(text: &str) -> BTreeMap<String, u64> {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut helped = BTreeSet::new();
    let mut typed = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut finished = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        assert!(!line.is_empty() && line.trim() == line, "blank or padded line {line:?}");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line:?}"));
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            assert!(!help.is_empty(), "{line:?}");
            assert!(helped.insert(name.to_string()), "second HELP for {name}");
            assert!(!typed.contains_key(name), "HELP after TYPE for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without type: {line:?}"));
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            assert!(matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped"), "{line:?}");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(typed.insert(name.to_string(), kind.to_string()).is_none(), "second TYPE for {name}");
            if let Some(previous) = current.replace(name.to_string()) {
                finished.insert(previous);
            }
        } else if line.starts_with('#') {
            // A plain comment.
        } else {
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line:?}"));
            let value: u64 = value.parse().unwrap_or_else(|_| panic!("value is not an integer: {line:?}"));
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed braces: {line:?}"));
                    (name, parse_labels(inner, line))
                }
                None => (key, Vec::new()),
            };
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            assert!(!labels.is_empty() || !key.contains('{'), "empty braces in {line:?}");
            assert_eq!(current.as_deref(), Some(name), "sample {line:?} outside its family's HELP/TYPE block");
            assert!(!finished.contains(name), "family {name} split in two blocks");
            assert!(samples.insert(key.to_string(), value).is_none(), "sample {key} twice");
        }
    }
    for name in &helped {
        assert!(typed.contains_key(name), "HELP without TYPE for {name}");
        assert!(samples.keys().any(|k| k == name || k.starts_with(&format!("{name}{{"))), "no samples for {name}");
    }
    samples
}

#[test]
fn metrics_are_prometheus_text_and_count() {
    let server = Quiesce::start(&[]);
    let addr = server.addr();
    let before = parse_exposition(&scrape(addr));
    for family in [
        "quiesce_accepted_connections_total",
        "quiesce_received_bytes_total",
        "quiesce_sent_bytes_total",
        "quiesce_draining",
        "quiesce_drain_duration_microseconds",
        "quiesce_forced_closes_total",
        "quiesce_connections{state=\"idle\"}",
        "quiesce_responses_total{class=\"2xx\"}",
        "quiesce_worker_responses_total{worker=\"0\",class=\"4xx\"}",
    ] {
        assert!(before.contains_key(family), "no {family} in {before:?}");
    }
    let at = |samples: &BTreeMap<String, u64>, key: &str| samples[key];

    // 5 successful requests and 2 without Host (400) on fresh connections.
    let mut sent = 0;
    let mut body_bytes = 0;
    for _ in 0..5 {
        let req = get_close("/plaintext");
        sent += req.len();
        let mut c = connect(addr);
        let resp = c.request(&req).expect("plaintext");
        assert_ok_body(&resp, "Hello, World!");
        body_bytes += resp.body.len();
    }
    for _ in 0..2 {
        let req = b"GET /plaintext HTTP/1.1\r\nConnection: close\r\n\r\n";
        sent += req.len();
        let mut c = connect(addr);
        let resp = c.request(req).expect("request without Host");
        assert_eq!(resp.status, 400, "{resp:?}");
        body_bytes += resp.body.len();
    }

    let mut after = BTreeMap::new();
    let grew = wait_until(Duration::from_secs(5), || {
        after = parse_exposition(&scrape(addr));
        let k = |key: &str| (at(&before, key), at(&after, key));
        let (a0, a1) = k("quiesce_accepted_connections_total");
        let (ok0, ok1) = k("quiesce_responses_total{class=\"2xx\"}");
        let (bad0, bad1) = k("quiesce_responses_total{class=\"4xx\"}");
        let (in0, in1) = k("quiesce_received_bytes_total");
        let (out0, out1) = k("quiesce_sent_bytes_total");
        // The scrape that gave `before` is counted after it, so at least one more of each.
        a1 > a0 + 7 && ok1 > ok0 + 5 && bad1 >= bad0 + 2 && in1 >= in0 + sent as u64 && out1 > out0 + body_bytes as u64
    });
    assert!(grew, "counters did not grow as expected:\nbefore {before:?}\nafter {after:?}");
    assert_eq!(at(&after, "quiesce_responses_total{class=\"5xx\"}"), 0);
    assert_eq!(at(&after, "quiesce_draining"), 0);
    // The process's blocking pool: no job yet, so no thread.
    assert_eq!(at(&after, "quiesce_blocking_threads"), 0);
    assert_eq!(at(&after, "quiesce_blocking_jobs_total{outcome=\"rejected\"}"), 0);
    // One worker: each sum equals worker 0's series (the log output's counts and the blocking
    // pool's figures are the process's, not a worker's).
    for (key, value) in &after {
        let Some(rest) = key.strip_prefix("quiesce_") else { panic!("{key}") };
        if ["worker_", "info", "log_", "blocking_"].iter().any(|p| rest.starts_with(p)) {
            continue;
        }
        let worker_key = match rest.split_once('{') {
            Some((name, labels)) => format!("quiesce_worker_{name}{{worker=\"0\",{labels}"),
            None => format!("quiesce_worker_{rest}{{worker=\"0\"}}"),
        };
        assert_eq!(after.get(&worker_key), Some(value), "{key} vs {worker_key}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. systemd socket activation
// ---------------------------------------------------------------------------------------------

/// quiesce started the way systemd does it: `listener` at fd 3, `LISTEN_FDS=1` and
/// `LISTEN_PID` = the server's own pid (a shell exports its pid and execs the binary).
fn socket_activated(listener: &TcpListener, args: &[&str]) -> Quiesce {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_quiesce"))
        // Port 1 must not be what it serves on.
        .args(["--addr", "127.0.0.1:1"])
        .args(args)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET");
    let fd = listener.as_raw_fd();
    // SAFETY: the closure makes only async-signal-safe calls (dup2, fcntl, reading errno) and
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) == -1 || libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Quiesce::spawn(command)
}

#[test]
fn systemd_socket_activation() {
    for workers in [1, 2] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let workers_arg = workers.to_string();
        let mut server = socket_activated(&listener, &["--workers", &workers_arg]);
        // Only the server's copies keep the socket open now.
        drop(listener);
        assert_eq!(server.addr().port(), port, "serves on the wrong port; logs:\n{}", server.logs_text());
        server.expect_log("using 1 listening socket(s) from systemd socket activation", LOG_WAIT);
        if workers > 1 {
            server.expect_log(&format!("with {workers} workers"), LOG_WAIT);
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..10 {
            assert_ok_body(&fetch(addr, "/plaintext"), "Hello, World!");
        }
        // Each worker publishes its counts at the end of its turn: a scrape answered by one
        // worker may come before the other's turn that served the last request has ended.
        let mut text = scrape(addr);
        for _ in 0..100 {
            if value(&text, "quiesce_accepted_connections_total") >= 10 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            text = scrape(addr);
        }
        assert_eq!(info_label(&text, "workers"), workers_arg, "{text}");
        assert_eq!(info_pid(&text), server.pid(), "LISTEN_PID trick: the shell must have exec'd quiesce");
        assert!(value(&text, "quiesce_accepted_connections_total") >= 10, "{text}");
        server.signal(SIGTERM);
        let status = server.wait_exit(EXIT_WAIT);
        server.assert_exit_code(status, 0);
        check_summary(server.logs().last().expect("logs"), "drained", 0, workers);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. sd_notify
// ---------------------------------------------------------------------------------------------

#[test]
fn systemd_notify_ready_stopping_and_drain_status() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let recv = || -> String {
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no notification: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let mut command = quiesce_command(&[]);
    command.env("NOTIFY_SOCKET", &path);
    let mut server = Quiesce::spawn(command);
    assert_eq!(recv(), "READY=1");

    let mut slow = connect(server.addr());
    send(&mut slow, &get("/slow?delay=1s"));
    sync_point(server.addr());
    socket.set_nonblocking(true).unwrap();
    let pending = socket.recv(&mut [0u8; 64]);
    assert!(
        matches!(pending, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock),
        "unexpected notification before the signal: {pending:?}"
    );
    socket.set_nonblocking(false).unwrap();

    server.signal(SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while statuses.last().is_none_or(|s: &String| s != "STATUS=draining: 0 active") {
        assert!(Instant::now() < deadline, "no `draining: 0 active`; got {statuses:?}");
        let message = recv();
        if statuses.is_empty() {
            // The first status comes from the turn the drain began: our request is in flight.
            let resp = slow.read_response();
            let resp = resp.unwrap_or_else(|e| panic!("in-flight response: {e}; logs:\n{}", server.logs_text()));
            assert_ok_body(&resp, &hello(r#""/slow""#));
            slow.stream.shutdown(std::net::Shutdown::Both).ok();
        }
        statuses.push(message);
    }
    let counts: Vec<u64> = statuses
        .iter()
        .map(|s| {
            let n = s.strip_prefix("STATUS=draining: ").and_then(|r| r.strip_suffix(" active"));
            n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected notification {s:?} in {statuses:?}"))
        })
        .collect();
    assert!(counts[0] >= 1, "the drain began with our request active: {statuses:?}");
    assert!(counts.windows(2).all(|w| w[0] > w[1]), "active counts must fall: {statuses:?}");
    let status = server.wait_exit(EXIT_WAIT);
    server.assert_exit_code(status, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Drain delay
// ---------------------------------------------------------------------------------------------

#[test]
fn drain_delay_serves_with_healthz_503_then_drains() {
    let mut server = Quiesce::start(&["--drain-delay", "2s"]);
    let addr = server.addr();
    let healthy = fetch(addr, "/healthz");
    assert_ok_body(&healthy, "ok");

    let signalled = Instant::now();
    server.signal(SIGTERM);
    server.expect_log("draining in 2s", LOG_WAIT);
    for _ in 0..3 {
        let health = fetch(addr, "/healthz");
        assert_eq!((health.status, health.text().as_str()), (503, "draining"), "{health:?}");
        assert_common_headers(&health, false);
        assert_ok_body(&fetch(addr, "/plaintext"), "Hello, World!");
        thread::sleep(Duration::from_millis(100));
    }
    // Accepted during the delay, still in flight when the drain starts.
    let mut slow = connect(addr);
    send(&mut slow, &get("/slow?delay=2s"));
    sync_point(addr);
    assert!(server.try_status().is_none(), "exited during the drain delay; logs:\n{}", server.logs_text());

    wait_log_where(&server, LOG_WAIT, |l| l.contains("received SIGTERM: draining") && l.contains("closing"));
    assert!(signalled.elapsed() >= Duration::from_secs(2), "the drain began before the 2 s delay was over");
    match Client::connect(addr) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut c) => panic!("connect after the drain began succeeded: {:?}", c.request(&get_close("/late"))),
    }
    let resp =
        slow.read_response().unwrap_or_else(|e| panic!("in-flight response: {e}; logs:\n{}", server.logs_text()));
    assert_ok_body(&resp, &hello(r#""/slow""#));
    drop(slow);
    let status = server.wait_exit(EXIT_WAIT);
    server.assert_exit_code(status, 0);
    check_summary(server.logs().last().expect("logs"), "drained", 0, 1);
}

#[test]
fn second_signal_during_drain_delay_exits_at_once() {
    let (server, summary) = stop_during_drain_delay();
    assert!(summary.contains("\"outcome\":\"stopped\""), "{summary}; logs:\n{}", server.logs_text());
}

/// An idle keep-alive connection, SIGTERM with a 30 s drain delay, a second SIGTERM: exit 143
/// long before the delay is over, the connection closed. Returns the server and its summary.
fn stop_during_drain_delay() -> (Quiesce, String) {
    let mut server = Quiesce::start(&["--drain-delay", "30s"]);
    let mut idle = connect(server.addr());
    assert_ok_body(&idle.request(&get("/plaintext")).expect("request"), "Hello, World!");
    server.signal(SIGTERM);
    server.expect_log("draining in 30s", LOG_WAIT);
    server.signal(SIGTERM);
    // Far less than the 30 s delay: the second signal did not wait for it.
    let status = server.wait_exit(EXIT_WAIT);
    server.assert_exit_code(status, 143);
    server.expect_log("received SIGTERM: stopping now, closed 1 connections", LOG_WAIT);
    assert!(idle.is_closed_within(Duration::from_secs(2)));
    let summary = check_summary(server.logs().last().expect("logs"), "stopped", 143, 1);
    (server, summary)
}

/// The summary (and `quiesce_forced_closes_total`) must count the connection the stop closed.
#[test]
fn stop_during_drain_delay_counts_forced_closes() {
    let (server, summary) = stop_during_drain_delay();
    assert_eq!(json_number(&summary, "closed_by_force"), 1.0, "{summary}; logs:\n{}", server.logs_text());
}

// ---------------------------------------------------------------------------------------------
// 6. SIGHUP restart
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct LoadStats {
    ok: usize,
    /// Successes that began after the old process had exited.
    ok_after_handover: usize,
    failures: Vec<String>,
}

/// Requests `/plaintext` on fresh connections until `stop`.
fn hammer(addr: SocketAddr, stop: Arc<AtomicBool>, old_gone: Arc<AtomicBool>) -> LoadStats {
    let mut stats = LoadStats::default();
    while !stop.load(Ordering::Relaxed) {
        let after_handover = old_gone.load(Ordering::Relaxed);
        let result =
            Client::connect(addr).map_err(|e| format!("connect: {e} ({:?})", classify(&e))).and_then(|mut c| {
                c.request(&get_close("/plaintext")).map_err(|e| format!("request: {e} ({:?})", classify(&e)))
            });
        match result {
            Ok(resp) if resp.status == 200 && resp.body == b"Hello, World!" => {
                stats.ok += 1;
                if after_handover {
                    stats.ok_after_handover += 1;
                }
            }
            Ok(resp) => stats.failures.push(format!("bad response {resp:?}")),
            Err(e) => stats.failures.push(e),
        }
    }
    stats
}

/// Sends SIGHUP and returns the new process's pid (killed on drop if a test fails).
fn restart(server: &mut Quiesce) -> (u32, Orphan) {
    let new_pid = server.sighup_restart(LOG_WAIT);
    (new_pid, Orphan(Some(new_pid)))
}

#[test]
fn sighup_restart_without_downtime() {
    let mut server = Quiesce::start(&[]);
    let addr = server.addr();
    let old_pid = server.pid();
    assert_eq!(info_pid(&scrape(addr)), old_pid);

    let mut slow = connect(addr);
    send(&mut slow, &get("/slow?delay=1s"));
    sync_point(addr);

    let stop = Arc::new(AtomicBool::new(false));
    let old_gone = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, old_gone) = (Arc::clone(&stop), Arc::clone(&old_gone));
        thread::spawn(move || hammer(addr, stop, old_gone))
    };
    // Stop the load thread whatever happens below.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stopper = StopOnDrop(Arc::clone(&stop));
    thread::sleep(Duration::from_millis(200));

    let hup = Instant::now();
    let (new_pid, mut orphan) = restart(&mut server);
    assert_ne!(new_pid, old_pid);
    if let Some(parent) = parent_pid(new_pid)
        && server.try_status().is_none()
    {
        assert_eq!(parent, old_pid, "the new process must be the old one's child");
    }

    server.expect_log(&format!("new process {new_pid} is serving: draining"), LOG_WAIT);
    let resp =
        slow.read_response().unwrap_or_else(|e| panic!("in-flight response: {e}; logs:\n{}", server.logs_text()));
    assert_ok_body(&resp, &hello(r#""/slow""#));
    drop(slow);
    let status = wait_status(&mut server, EXIT_WAIT);
    server.assert_exit_code(status, 0);
    old_gone.store(true, Ordering::Relaxed);
    let exited = Instant::now();
    while hup.elapsed() < Duration::from_millis(1500) || exited.elapsed() < Duration::from_millis(300) {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let stats = load.join().expect("load thread");
    assert!(
        stats.failures.is_empty(),
        "{} failures, e.g. {:?}; logs:\n{}",
        stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)],
        server.logs_text()
    );
    eprintln!(
        "restart: {} requests on fresh connections, {} after the handover, {} failures",
        stats.ok,
        stats.ok_after_handover,
        stats.failures.len()
    );
    assert!(
        stats.ok > 0 && stats.ok_after_handover > 0,
        "ok {}, after the handover {}",
        stats.ok,
        stats.ok_after_handover
    );

    // The new process serves on the same port; it is not our child.
    let text = scrape(addr);
    assert_eq!(info_pid(&text), new_pid, "{text}");
    assert!(value(&text, "quiesce_accepted_connections_total") >= 1, "{text}");
    assert_ne!(parent_pid(new_pid), Some(std::process::id()));
    let listening: Vec<SocketAddr> = server.logs().iter().filter_map(|l| parse_listening(l)).collect();
    assert_eq!(listening, [addr, addr], "both processes on the same address; logs:\n{}", server.logs_text());
    server.expect_log("using 1 listening socket(s) from the previous quiesce process", LOG_WAIT);

    kill(new_pid, SIGTERM).expect("SIGTERM the new process");
    let gone = wait_until(EXIT_WAIT, || !is_live_quiesce(new_pid));
    assert!(gone, "new process {new_pid} did not exit after SIGTERM; logs:\n{}", server.logs_text());
    orphan.0 = None;
    assert!(server.wait_stderr_eof(Duration::from_secs(5)), "stderr still open; logs:\n{}", server.logs_text());
    let logs = server.logs();
    let summaries: Vec<&String> = logs.iter().filter(|l| l.contains("\"event\":\"shutdown\"")).collect();
    assert_eq!(summaries.len(), 2, "one summary per process; logs:\n{}", server.logs_text());
    check_summary(summaries[0], "drained", 0, 1);
    check_summary(summaries[1], "drained", 0, 1);
    assert_eq!(logs.last(), Some(summaries[1]));
}

/// After a SIGHUP handover, the old process keeps its idle keep-alive connections (and a new
/// one that has sent nothing yet) past every last call a signal's drain would give them: a
/// client, or a proxy's pool, may pick one for a request it does not retry (a POST) at the
/// moment a close would reach it. Each is answered once more, with `Connection: close`, or
/// closed by its client; a SIGTERM then applies the signal's rule to what is left.
#[test]
fn sighup_keeps_idle_connections_until_used() {
    let mut server = Quiesce::start(&[]);
    let addr = server.addr();
    let mut idle: Vec<Client> = (0..3).map(|_| waiting_client(addr)).collect();
    for c in &mut idle {
        expect_plaintext(c, "before the restart");
    }
    let mut fresh = connect(addr);
    sync_point(addr);

    let (new_pid, orphan) = restart(&mut server);
    let draining = server.expect_log(&format!("new process {new_pid} is serving: draining"), LOG_WAIT);
    assert!(draining.contains("closing 0 idle") && draining.contains("keeping 4 new or idle"), "{draining}");
    // Longer than the signal's last calls (100 ms for idle, 1 s for new connections).
    thread::sleep(Duration::from_millis(1300));
    for c in idle.iter().chain([&fresh]) {
        assert!(!has_data(c), "closed or answered unasked; logs:\n{}", server.logs_text());
    }
    assert!(server.try_status().is_none(), "the old process exited with connections open");

    // A POST on a kept connection: answered in full, told that the connection closes.
    let resp = idle[0].request(&post_echo("text/plain", b"after the handover")).expect("POST on a kept connection");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"after the handover"[..]), "{resp:?}");
    assert!(resp.is_close(), "{resp:?}");
    assert!(idle[0].is_closed_within(Duration::from_secs(5)));
    // The connection that had sent nothing: its first request is its last. An event stream
    // opened on it ends at once, telling its client to reconnect at once: to the new process.
    let resp = fresh.request(&get("/events")).expect("first request after the handover");
    assert!(resp.status == 200 && resp.is_close() && resp.is_chunked(), "{resp:?}");
    let text = resp.text();
    assert!(text.ends_with("retry: 0\nid: 0\nevent: shutdown\ndata: draining\n\n"), "{text:?}");
    // One the client closes itself.
    drop(idle.remove(1));
    thread::sleep(Duration::from_millis(100));
    assert!(server.try_status().is_none(), "the old process exited with a connection open");

    // A signal now: the last idle connection gets the signal's rule and the process exits.
    server.signal(libc::SIGTERM);
    server.expect_log("received SIGTERM: already draining after a restart", LOG_WAIT);
    assert!(idle[1].is_closed_within(Duration::from_secs(5)), "logs:\n{}", server.logs_text());
    let status = wait_status(&mut server, EXIT_WAIT);
    server.assert_exit_code(status, 0);
    let summary = server.expect_log("\"event\":\"shutdown\"", LOG_WAIT);
    check_summary(&summary, "drained", 0, 1);

    orphan.stop();
}

/// With workers, every worker hands over as worker 0 does (each keeps its idle connections),
/// and a SIGTERM to the old process reaches every worker's kept connections.
#[test]
fn sighup_with_workers_keeps_idle_connections_in_every_worker() {
    let mut server = Quiesce::start(&["--workers", "2"]);
    let addr = server.addr();
    let mut idle: Vec<Client> = (0..8).map(|_| waiting_client(addr)).collect();
    for c in &mut idle {
        expect_plaintext(c, "before the restart");
    }
    let (new_pid, orphan) = restart(&mut server);
    let serving = format!("new process {new_pid} is serving: draining");
    for worker in 0..2 {
        server.expect_log(&format!("worker {worker}: {serving}"), LOG_WAIT);
    }
    assert_eq!(server.logs().iter().filter(|l| l.contains(&serving) && l.contains("last call")).count(), 0);
    thread::sleep(Duration::from_millis(1300));
    for c in &idle {
        assert!(!has_data(c), "closed or answered unasked; logs:\n{}", server.logs_text());
    }
    server.signal(libc::SIGTERM);
    for c in &mut idle {
        assert!(c.is_closed_within(Duration::from_secs(5)), "logs:\n{}", server.logs_text());
    }
    let status = wait_status(&mut server, EXIT_WAIT);
    server.assert_exit_code(status, 0);

    orphan.stop();
}

/// The idle connections of each worker, from `/metrics`, once they add up to `total`.
fn idle_per_worker(addr: SocketAddr, total: u64) -> [u64; 2] {
    let mut idle = [0; 2];
    let counted = wait_until(LOG_WAIT, || {
        let text = scrape(addr);
        for (worker, count) in idle.iter_mut().enumerate() {
            *count = value(&text, &format!("quiesce_worker_connections{{worker=\"{worker}\",state=\"idle\"}}"));
        }
        idle.iter().sum::<u64>() == total
    });
    assert!(counted, "idle connections per worker {idle:?}, expected {total} in all");
    idle
}

/// Worker 0 finished its handover drain (its kept connections were used or closed) while
/// worker 1 still keeps one: a SIGTERM now is a first signal for worker 1, whose connection
/// closes as in a signal's drain, and the process exits 0, drained, rather than stopping at
/// once as after a second signal.
#[test]
fn a_signal_after_worker_0_finished_its_handover_drains_the_others() {
    let mut server = Quiesce::start(&["--workers", "2", "--reuse-port"]);
    let addr = server.addr();
    // Connections until each worker has one, knowing whose each is.
    let (mut on_0, mut on_1) = (Vec::new(), Vec::new());
    for n in 1..=64u64 {
        if !on_0.is_empty() && !on_1.is_empty() {
            break;
        }
        let before = idle_per_worker(addr, n - 1);
        let mut c = waiting_client(addr);
        expect_plaintext(&mut c, "before the restart");
        let after = idle_per_worker(addr, n);
        if after[0] > before[0] { on_0.push(c) } else { on_1.push(c) }
    }
    assert!(!on_0.is_empty() && !on_1.is_empty(), "every connection went to one worker");

    let (new_pid, orphan) = restart(&mut server);
    let serving = format!("new process {new_pid} is serving: draining");
    for worker in 0..2 {
        server.expect_log(&format!("worker {worker}: {serving}"), LOG_WAIT);
    }
    on_0.clear();
    server.expect_log("worker 0: drained in", LOG_WAIT);
    assert!(!has_data(&on_1[0]), "worker 1 closed its kept connection early; logs:\n{}", server.logs_text());
    // The process watches signals again once worker 0 has returned.
    server.expect_log("a signal now closes the idle connections the other workers keep", LOG_WAIT);

    server.signal(libc::SIGTERM);
    for c in &mut on_1 {
        assert_eq!(c.close_state(Duration::from_secs(5)), CloseState::Eof, "logs:\n{}", server.logs_text());
    }
    let status = wait_status(&mut server, EXIT_WAIT);
    server.assert_exit_code(status, 0);
    let summary = server.expect_log("\"event\":\"shutdown\"", LOG_WAIT);
    check_summary(&summary, "drained", 0, 2);

    orphan.stop();
}

/// An idle connection nobody uses after a SIGHUP handover is closed at the shutdown timeout
/// (before its idle timeout), cleanly: the old process's drain counts it as drained, not as a
/// connection closed by force.
#[test]
fn sighup_closes_unused_idle_connections_at_the_shutdown_timeout() {
    let mut server = Quiesce::start(&["--shutdown-timeout", "1s"]);
    let addr = server.addr();
    let mut idle = waiting_client(addr);
    expect_plaintext(&mut idle, "before the restart");

    let (new_pid, orphan) = restart(&mut server);
    server.expect_log(&format!("new process {new_pid} is serving: draining"), LOG_WAIT);
    let closed = idle.close_state(Duration::from_secs(10));
    assert_eq!(closed, CloseState::Eof, "logs:\n{}", server.logs_text());
    let status = wait_status(&mut server, EXIT_WAIT);
    server.assert_exit_code(status, 0);
    let summary = server.expect_log("\"event\":\"shutdown\"", LOG_WAIT);
    check_summary(&summary, "drained", 0, 1);
    assert_eq!(json_number(&summary, "closed_by_force"), 0.0, "{summary}");

    orphan.stop();
}

// ---------------------------------------------------------------------------------------------
// 7. Failed restart
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_restart_keeps_serving() {
    let dir = TempDir::new("restart");
    let exe = dir.path().join("quiesce");
    std::fs::copy(env!("CARGO_BIN_EXE_quiesce"), &exe).expect("copy the binary");
    let mut command = Command::new(&exe);
    command.args(["--addr", "127.0.0.1:0"]).env_remove("NOTIFY_SOCKET");
    let mut server = Quiesce::spawn(command);
    let addr = server.addr();
    assert_ok_body(&fetch(addr, "/plaintext"), "Hello, World!");

    // An "upgrade" that cannot start.
    std::fs::remove_file(&exe).expect("remove the copy");
    std::fs::write(&exe, "#!/bin/sh\nexit 1\n").expect("write the failing successor");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    server.signal(SIGHUP);
    let line = server.expect_log("serving on", LOG_WAIT);
    assert!(line.contains("error"), "{line}");
    assert!(server.try_status().is_none(), "old process exited; logs:\n{}", server.logs_text());
    for _ in 0..5 {
        assert_ok_body(&fetch(addr, "/plaintext"), "Hello, World!");
    }
    assert_eq!(info_pid(&scrape(addr)), server.pid());
    server.signal(SIGTERM);
    let status = server.wait_exit(EXIT_WAIT);
    server.assert_exit_code(status, 0);
    check_summary(server.logs().last().expect("logs"), "drained", 0, 1);
}

/// A certificate renewal gone wrong: the key on disk no longer matches the certificate. The new
/// process says why, in one line, and exits; the old one goes on serving (plain HTTP here, the
/// same process serves HTTPS), and its pid answers.
#[cfg(feature = "tls")]
#[test]
fn a_certificate_that_does_not_load_on_sighup_keeps_the_old_process_serving() {
    let dir = TempDir::new("tls-reload");
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(tls.join("a.pem"), &cert).unwrap();
    std::fs::copy(tls.join("a.key"), &key).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiesce"));
    command.args(["--addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0"]).env_remove("NOTIFY_SOCKET");
    command.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
    let mut server = Quiesce::spawn(command);
    let addr = server.addr();
    assert_ok_body(&fetch(addr, "/plaintext"), "Hello, World!");

    // The renewal wrote the new key but not the new certificate.
    std::fs::copy(tls.join("b.key"), &key).unwrap();
    server.signal(SIGHUP);
    let line = server.expect_log("cannot serve HTTPS", LOG_WAIT);
    assert!(line.contains("the private key does not match the certificate"), "{line}");
    let line = server.expect_log("serving on", LOG_WAIT);
    assert!(line.contains("failed before it was ready (exit status: 1)"), "{line}");
    assert!(server.try_status().is_none(), "old process exited; logs:\n{}", server.logs_text());
    for _ in 0..5 {
        assert_ok_body(&fetch(addr, "/plaintext"), "Hello, World!");
    }
    assert_eq!(info_pid(&scrape(addr)), server.pid());
    let failures = server.logs().iter().filter(|l| l.contains("cannot serve HTTPS")).count();
    assert_eq!(failures, 1, "one line says why; logs:\n{}", server.logs_text());
    server.signal(SIGTERM);
    let status = server.wait_exit(EXIT_WAIT);
    server.assert_exit_code(status, 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Connection cap
// ---------------------------------------------------------------------------------------------

/// How many of `clients` were answered or have bytes waiting.
fn answered_count(clients: &[Option<Client>], answered: &[bool]) -> usize {
    clients.iter().zip(answered).filter(|(c, done)| **done || c.as_ref().is_some_and(has_data)).count()
}

/// Reads the answers that arrived; marks them.
fn collect_answers(clients: &mut [Option<Client>], answered: &mut [bool]) {
    for (i, (slot, done)) in clients.iter_mut().zip(answered.iter_mut()).enumerate() {
        if let Some(c) = slot
            && !*done
            && has_data(c)
        {
            expect_plaintext(c, &format!("client {i}"));
            *done = true;
        }
    }
}

/// Closes `n` answered, still open connections.
fn close_answered(clients: &mut [Option<Client>], answered: &[bool], n: usize) {
    let mut closed = 0;
    for (slot, done) in clients.iter_mut().zip(answered) {
        if closed < n && *done && slot.is_some() {
            *slot = None;
            closed += 1;
        }
    }
    assert_eq!(closed, n);
}

/// The cap at work: `cap` connections answered, the rest waiting; closing `close_first` answered
/// ones gives `then_more` more answers; closing all answered ones serves everyone.
fn cap_scenario(cap: usize, total: usize, close_first: usize, then_more: usize) {
    let cap_arg = cap.to_string();
    let server = Quiesce::start(&["--max-connections", &cap_arg]);
    let addr = server.addr();
    let mut clients: Vec<Option<Client>> = (0..total).map(|_| Some(waiting_client(addr))).collect();
    let mut answered = vec![false; total];

    let reached = wait_until(LOG_WAIT, || answered_count(&clients, &answered) >= cap);
    assert!(reached, "fewer than {cap} answers; logs:\n{}", server.logs_text());
    server.expect_log("at the connection cap", LOG_WAIT);
    // The others wait in the backlog: no byte for them.
    thread::sleep(Duration::from_millis(300));
    collect_answers(&mut clients, &mut answered);
    assert_eq!(answered.iter().filter(|&&a| a).count(), cap, "answered beyond the cap; logs:\n{}", server.logs_text());

    // Closing `close_first - 1` leaves the count at or above 90% of the cap: no new answers.
    if close_first > 1 {
        close_answered(&mut clients, &answered, close_first - 1);
        thread::sleep(Duration::from_millis(400));
        collect_answers(&mut clients, &mut answered);
        assert_eq!(
            answered.iter().filter(|&&a| a).count(),
            cap,
            "accepting resumed before the count fell below 90% of the cap; logs:\n{}",
            server.logs_text()
        );
        assert!(!server.logs_text().contains("accepting again"), "{}", server.logs_text());
    }
    close_answered(&mut clients, &answered, 1);
    let resumed = wait_until(LOG_WAIT, || answered_count(&clients, &answered) >= cap + then_more);
    assert!(resumed, "no new answers after closing; logs:\n{}", server.logs_text());
    thread::sleep(Duration::from_millis(300));
    collect_answers(&mut clients, &mut answered);
    assert_eq!(
        answered.iter().filter(|&&a| a).count(),
        cap + then_more,
        "accepted beyond the cap again; logs:\n{}",
        server.logs_text()
    );
    server.expect_log("accepting again", LOG_WAIT);

    // Closing every answered connection lets everyone in, eventually.
    let all = wait_until(Duration::from_secs(10), || {
        for (slot, done) in clients.iter_mut().zip(&answered) {
            if *done {
                *slot = None;
            }
        }
        collect_answers(&mut clients, &mut answered);
        answered.iter().all(|&a| a)
    });
    assert!(all, "{answered:?}; logs:\n{}", server.logs_text());
}

#[test]
fn connection_cap_holds_new_connections_in_the_backlog() {
    // Cap 4: resuming needs fewer than 4 - 4/10 = 4 open, so one close lets exactly one in.
    cap_scenario(4, 8, 1, 1);
}

#[test]
fn connection_cap_resumes_below_ninety_percent() {
    // Cap 10: resuming needs fewer than 10 - 1 = 9 open: one close is not enough, a second one
    // is, and then two get in (back to 10).
    cap_scenario(10, 14, 2, 2);
}

// ---------------------------------------------------------------------------------------------
// 9. Out of file descriptors
// ---------------------------------------------------------------------------------------------

#[test]
fn out_of_descriptors_pauses_accepts_without_spinning() {
    const LIMIT: u64 = 40;
    let mut command = quiesce_command(&[]);
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: LIMIT as libc::rlim_t, rlim_max: LIMIT as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Quiesce::spawn(command);
    let addr = server.addr();
    let pid = server.pid();
    let own_fds = open_fds_below(pid, LIMIT);
    assert!(own_fds > 3 && (own_fds as u64) < LIMIT - 5, "the server uses {own_fds} descriptors itself");

    let total = 80;
    let mut clients: Vec<Option<Client>> = (0..total).map(|_| Some(waiting_client(addr))).collect();
    let mut answered = vec![false; total];
    server.expect_log("accept failed", LOG_WAIT);
    let room = LIMIT as usize - own_fds;
    let filled = wait_until(LOG_WAIT, || answered_count(&clients, &answered) >= room);
    assert!(filled, "expected {room} answers; logs:\n{}", server.logs_text());

    // Out of descriptors for a while: the loop sleeps between tries and logs rarely.
    let (warned_before, cpu_before, t0) = (server.count_logs("accept failed"), cpu_seconds(pid), Instant::now());
    thread::sleep(Duration::from_millis(1500));
    let (warned, cpu, elapsed) =
        (server.count_logs("accept failed") - warned_before, cpu_seconds(pid) - cpu_before, t0.elapsed().as_secs_f64());
    eprintln!("out of descriptors: {cpu:.3}s of server CPU in {elapsed:.2}s, {warned} warning(s)");
    assert!(cpu < 0.25 * elapsed, "server used {cpu:.2}s of CPU in {elapsed:.2}s while out of descriptors");
    assert!(
        warned as f64 <= elapsed.ceil() + 1.0,
        "{warned} `accept failed` warnings in {elapsed:.2}s; logs:\n{}",
        server.logs_text()
    );
    collect_answers(&mut clients, &mut answered);
    let served = answered.iter().filter(|&&a| a).count();
    assert_eq!(served, room, "answered with {own_fds} descriptors of {LIMIT} in use by the server itself");

    // Closing the served connections frees descriptors: everyone is answered in the end.
    let all = wait_until(Duration::from_secs(15), || {
        for (slot, done) in clients.iter_mut().zip(&answered) {
            if *done {
                *slot = None;
            }
        }
        collect_answers(&mut clients, &mut answered);
        answered.iter().all(|&a| a)
    });
    let missing = answered.iter().filter(|&&a| !a).count();
    assert!(all, "{missing} of {total} never answered; logs:\n{}", server.logs_text());
}
