//! Logging never breaks the server: stderr or the access log as a pipe whose reader left, a pipe
//! nobody reads, a full device or a file at its size limit costs log lines (counted in
//! `/metrics` and the exit summary), never a request, a stalled loop, a panic or the exit code.

mod common;

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Quiesce, Reaped, SIGTERM, connect, get, get_close, parse_listening, quiesce_command};

/// Generous bounds: they only stop a test that would otherwise hang.
const WAIT: Duration = Duration::from_secs(20);

/// The `/metrics` sample `key` (exactly as rendered, labels included).
fn metric(addr: SocketAddr, key: &str) -> u64 {
    let text = connect(addr).request(&get_close("/metrics")).expect("/metrics").text();
    text.lines()
        .find_map(|line| line.rsplit_once(' ').filter(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// Polls `cond` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Waits (at most `timeout`) for `child` to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "quiesce did not exit within {timeout:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, SIGTERM) }, 0);
}

/// Starts quiesce with `args` and stderr into a pipe; returns the child, the pipe's read end
/// (having read up to the `listening on` line) and the address from that line.
fn start_with_stderr_pipe(args: &[&str]) -> (Reaped, BufReader<io::PipeReader>, SocketAddr) {
    let (reader, writer) = io::pipe().expect("a pipe");
    let mut command = quiesce_command(args);
    command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::null()).stderr(writer);
    let child = Reaped(command.spawn().expect("spawn"));
    // Our copy of the write end goes with the command: only the child holds it now.
    drop(command);
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(reader.read_line(&mut line).expect("a line") > 0, "stderr ended before a listening line");
        if let Some(addr) = parse_listening(&line) {
            break addr;
        }
    };
    (child, reader, addr)
}

#[test]
fn a_stderr_whose_reader_left_costs_log_lines_not_the_exit_code() {
    // `quiesce 2>&1 | head -1`, or a journald that restarted: the first line was read, then
    // the reader went away. With -v every connection logs a line, each an EPIPE now.
    let (mut child, reader, addr) = start_with_stderr_pipe(&["-v"]);
    drop(reader);
    for i in 0..20 {
        let answer = connect(addr).request(&get_close("/plaintext")).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(answer.status, 200);
    }
    assert!(
        wait_until(WAIT, || metric(addr, "quiesce_log_write_errors_total{log=\"stderr\"}") > 0),
        "the failed writes to stderr were not counted"
    );
    assert!(metric(addr, "quiesce_log_lost_lines_total{log=\"stderr\"}") > 0);
    // A clean drain, its lines (and the exit summary) lost too: exit code 0, not a panic's 101.
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, WAIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_stderr_nobody_reads_holds_up_neither_serving_nor_the_drain() {
    // The pipe stays open and is never read again: once its 64 KiB are full, a server that
    // wrote its log lines from the loop would stop there. With -vv each connection logs a few
    // lines, so the queue behind the pipe fills too, and lines are dropped, counted.
    let (mut child, _unread, addr) = start_with_stderr_pipe(&["-vv"]);
    let mut served = 0;
    let mut dropped = false;
    while !dropped {
        for _ in 0..500 {
            let answer =
                connect(addr).request(&get_close("/plaintext")).unwrap_or_else(|e| panic!("request {served}: {e}"));
            assert_eq!(answer.status, 200);
            served += 1;
        }
        dropped = metric(addr, "quiesce_log_lost_lines_total{log=\"stderr\"}") > 0;
        assert!(served < 200_000, "no log line was ever dropped");
    }
    // A keep-alive client is answered too, and the drain ends.
    let mut client = connect(addr);
    assert_eq!(client.request(&get("/plaintext")).expect("keep-alive answer").status, 200);
    drop(client);
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, WAIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn an_access_log_on_a_full_device_is_counted_and_reported_once() {
    let mut server = Quiesce::start(&["--access-log", "/dev/full"]);
    let addr = server.addr();
    for i in 0..20 {
        let answer = connect(addr).request(&get_close("/plaintext")).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(answer.status, 200);
    }
    assert!(
        wait_until(WAIT, || metric(addr, "quiesce_log_lost_lines_total{log=\"access\"}") >= 20),
        "the lines lost were not counted"
    );
    assert!(metric(addr, "quiesce_log_write_errors_total{log=\"access\"}") > 0);
    server.signal(SIGTERM);
    let status = server.wait_exit(WAIT);
    server.assert_exit_code(status, 0);
    let logs = server.logs();
    let reports = logs.iter().filter(|l| l.contains("access log: No space left on device")).count();
    assert_eq!(reports, 1, "the failure is reported once: {logs:#?}");
    let summary = logs.last().expect("the summary");
    assert!(summary.contains("\"outcome\":\"drained\""), "{summary}");
    let access = summary.split("\"access\":{").nth(1).unwrap_or_default();
    assert!(!access.starts_with("\"lost\":0,"), "the summary does not count the lost lines: {summary}");
}

#[test]
fn an_access_log_whose_reader_left_is_counted_and_serving_goes_on() {
    // `--access-log -` into a pipe nobody holds the other end of: every write is an EPIPE.
    let (reader, writer) = io::pipe().expect("a pipe");
    drop(reader);
    let mut command = quiesce_command(&["--access-log", "-"]);
    command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped());
    let mut child = Reaped(command.spawn().expect("spawn"));
    drop(command);
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let first = lines.recv_timeout(WAIT).expect("a first line");
    let addr = parse_listening(&first).unwrap_or_else(|| panic!("not a listening line: {first}"));
    for i in 0..20 {
        let answer = connect(addr).request(&get_close("/plaintext")).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(answer.status, 200);
    }
    assert!(
        wait_until(WAIT, || metric(addr, "quiesce_log_write_errors_total{log=\"access\"}") > 0),
        "the failed writes were not counted"
    );
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, WAIT);
    let logs: Vec<String> = lines.iter().collect();
    assert_eq!(status.code(), Some(0), "{status:?}: {logs:#?}");
    assert_eq!(logs.iter().filter(|l| l.contains("access log: Broken pipe")).count(), 1, "{logs:#?}");
}

#[test]
fn an_access_log_at_its_size_limit_keeps_whole_lines_only() {
    // A full disk, as RLIMIT_FSIZE makes one: a write that crosses the limit is cut short at
    // it, and the next fails (EFBIG; SIGXFSZ is ignored rather than fatal).
    const LIMIT: u64 = 2000;
    let dir = std::env::temp_dir().join(format!("quiesce-fsize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let mut command = quiesce_command(&["--access-log", path.to_str().unwrap()]);
    // SAFETY: setrlimit is async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: LIMIT as libc::rlim_t, rlim_max: LIMIT as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Quiesce::spawn(command);
    let addr = server.addr();
    // One request a turn, so one write each: one of them crosses the limit.
    let mut client = connect(addr);
    for i in 0..60 {
        let answer = client.request(&get("/plaintext")).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(answer.status, 200);
    }
    assert!(
        wait_until(WAIT, || metric(addr, "quiesce_log_write_errors_total{log=\"access\"}") > 0),
        "the failed writes were not counted"
    );
    drop(client);
    server.signal(SIGTERM);
    let status = server.wait_exit(WAIT);
    server.assert_exit_code(status, 0);
    let text = std::fs::read_to_string(&path).expect("the access log");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!text.is_empty() && text.len() as u64 <= LIMIT, "{} bytes", text.len());
    assert!(text.ends_with('\n'), "the file ends in half a line: {:?}", &text[text.len().saturating_sub(80)..]);
    for line in text.lines() {
        assert!(line.starts_with("127.0.0.1 - - [") && line.contains("\"GET /plaintext HTTP/1.1\" 200 "), "{line:?}");
    }
    assert!(server.count_logs("access log: File too large") == 1, "{}", server.logs_text());
}
