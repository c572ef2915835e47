//! The binary's log lines: a UTC time with milliseconds on each (text), one JSON object per line
//! (`--log-format json`), syslog priorities instead of times when stderr is the journal's, and
//! the exit summary as one JSON object in every case.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Quiesce, Reaped, SIGTERM, connect, get, parse_listening, quiesce_command};

/// Serves one request, then drains on SIGTERM; returns every line of stderr.
fn run_and_drain(args: &[&str]) -> Vec<String> {
    let mut server = Quiesce::start(args);
    assert_eq!(connect(server.addr()).request(&get("/plaintext")).expect("served").status, 200);
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
    server.logs()
}

/// `2026-11-30T10:28:27.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Checks each line with Python's JSON parser (python3 is one of the tests' needs): every line
/// must be one JSON object with `keys`; returns the objects as Python printed them back, for
/// field checks.
fn json_objects(lines: &[String], keys: &[&str]) -> Vec<String> {
    let script = format!(
        "import json, sys\nfor line in sys.stdin:\n    o = json.loads(line)\n    assert isinstance(o, dict), line\n    \
         missing = [k for k in {keys:?} if k not in o]\n    assert not missing, (missing, line)\n    \
         print(json.dumps(o, sort_keys=True))\n"
    );
    let mut python = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    python.stdin.take().unwrap().write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "not JSON lines: {}\n{}", String::from_utf8_lossy(&out.stderr), lines.join("\n"));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn every_text_line_starts_with_its_utc_time_and_the_summary_stays_json() {
    let lines = run_and_drain(&[]);
    let (summary, messages): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.starts_with('{'));
    assert!(messages.len() >= 3, "{lines:?}");
    for line in &messages {
        let (time, rest) = line.split_once(' ').unwrap_or_default();
        assert!(is_rfc3339_millis_utc(time), "no time: {line}");
        assert!(rest.starts_with("quiesce: "), "{line}");
    }
    assert_eq!(summary.len(), 1, "{lines:?}");
    let objects = json_objects(&summary.into_iter().cloned().collect::<Vec<_>>(), &["ts", "event", "exit_code"]);
    assert!(objects[0].contains("\"event\": \"shutdown\""), "{objects:?}");
}

#[test]
fn json_lines_are_objects_with_time_level_message_worker_and_fields() {
    let lines = run_and_drain(&["--log-format", "json", "--workers", "2"]);
    let objects = json_objects(&lines, &["ts"]);
    let messages: Vec<&String> = objects.iter().filter(|o| o.contains("\"message\": ")).collect();
    assert!(messages.len() >= 4, "{objects:?}");
    for object in &messages {
        assert!(object.contains("\"level\": \"info\""), "{object}");
        assert!(object.contains("\"worker\": "), "an event loop's line without its worker: {object}");
    }
    let listening = messages.iter().find(|o| o.contains("\"event\": \"listening\"")).expect("listening");
    assert!(listening.contains("\"workers\": 2") && listening.contains("\"addr\": \"127.0.0.1:"), "{listening}");
    // Both workers drained, each saying so under its own number.
    let drained: Vec<&&String> = messages.iter().filter(|o| o.contains("\"event\": \"drained\"")).collect();
    assert_eq!(drained.len(), 2, "{objects:?}");
    assert!(drained.iter().any(|o| o.contains("\"worker\": 0")) && drained.iter().any(|o| o.contains("\"worker\": 1")));
    assert!(drained.iter().all(|o| o.contains("\"drain_ms\": ")), "{drained:?}");
    assert_eq!(objects.iter().filter(|o| o.contains("\"event\": \"shutdown\"")).count(), 1, "{objects:?}");
    for object in &objects {
        let ts = object.split("\"ts\": \"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
        assert!(is_rfc3339_millis_utc(ts), "{object}");
    }
}

#[test]
fn under_the_journal_lines_carry_a_syslog_priority_instead_of_a_time() {
    // stderr is a pipe this test reads; JOURNAL_STREAM names it, as systemd names the stream it
    // connects to the journal.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let meta = std::fs::File::from(reader.as_fd().try_clone_to_owned().unwrap()).metadata().unwrap();
    let mut command = quiesce_command(&[]);
    command
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer);
    let mut child = Reaped(command.spawn().expect("spawn"));
    drop(command);
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("a first line");
    assert!(first.starts_with("<6>quiesce: info: listening on http://"), "{first}");
    let addr = parse_listening(&first).expect("an address");
    assert_eq!(connect(addr).request(&get("/healthz")).expect("served").status, 200);
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.0.id() as libc::pid_t, SIGTERM) };
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert!(child.0.wait().expect("exit").success());
    assert!(rest.len() >= 2, "{rest:?}");
    assert!(rest.iter().all(|l| l.starts_with("<6>")), "{rest:?}");
    assert!(rest.last().unwrap().starts_with("<6>{\"event\":\"shutdown\""), "{rest:?}");
}
