//! Runs each example in `examples/` (built by `cargo test`) the way its doc comment says, on a
//! loopback port, and checks it does what it claims.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Quiesce, SIGINT, connect, get, parse_listening};

/// The example binary `name`, next to this test's own binary (`target/<profile>/examples/`).
fn example(name: &str) -> Command {
    let me = std::env::current_exe().expect("the test binary");
    let profile_dir = me.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/..");
    let path: PathBuf = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built (cargo test builds the examples)", path.display());
    let mut command = Command::new(path);
    command.arg("127.0.0.1:0");
    command
}

#[test]
fn worker_pool_answers_from_its_threads_and_drains_the_work_in_flight() {
    let mut server = Quiesce::spawn(example("worker_pool"));
    let mut slow = connect(server.addr());
    // Long enough that the signal surely comes while it runs: the answer must close.
    slow.send(&get("/report?ms=2000")).unwrap();
    // Four threads: other requests are answered meanwhile.
    let quick = connect(server.addr()).request(&get("/quick?ms=0")).expect("an answer");
    assert!(quick.text().starts_with("GET /quick took 0 ms for 127.0.0.1:"), "{}", quick.text());
    server.signal(SIGINT);
    let answer = slow.read_response().expect("the work in flight is answered");
    assert!(answer.text().starts_with("GET /report took 2000 ms"), "{}", answer.text());
    assert!(answer.is_close(), "{answer:?}");
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
}

/// The id and the data of the one event in `chunk` (`id: K\ndata: D\n\n`).
fn event_of(chunk: &[u8]) -> (u64, String) {
    let text = std::str::from_utf8(chunk).expect("UTF-8");
    let (id, data) = text
        .strip_prefix("id: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|rest| rest.split_once("\ndata: "))
        .unwrap_or_else(|| panic!("not one event: {text:?}"));
    (id.parse().expect("a numeric id"), data.to_owned())
}

/// Reads `stream` to its clean end: the ids of the events, and the last event.
fn rest_of_stream(stream: &mut common::Client) -> (Vec<u64>, String) {
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.read_chunk().expect("the stream ends cleanly") {
        chunks.push(chunk);
    }
    let last = String::from_utf8(chunks.pop().expect("a last event")).unwrap();
    (chunks.iter().map(|c| event_of(c).0).collect(), last)
}

#[test]
fn sse_streams_resume_and_end_with_a_spread_retry_when_the_server_drains() {
    let mut server = Quiesce::spawn(example("sse"));
    let mut stream = connect(server.addr());
    stream.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.send(&get("/events")).unwrap();
    let head = stream.read_head_response().expect("the head");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.read_chunk().expect("the retry"), Some(b"retry: 3000\n\n".to_vec()));
    let (first, data) = event_of(&stream.read_chunk().expect("an event").expect("a chunk"));
    assert_eq!(data, first.to_string());
    let (second, _) = event_of(&stream.read_chunk().expect("an event").expect("a chunk"));
    assert_eq!(second, first + 1);

    // A client that got `first` and reconnects is sent what it missed first.
    let mut resumed = connect(server.addr());
    resumed.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    resumed.send(format!("GET /events HTTP/1.1\r\nHost: a\r\nLast-Event-ID: {first}\r\n\r\n").as_bytes()).unwrap();
    let _ = resumed.read_head_response().expect("the head");
    let replay = String::from_utf8(resumed.read_chunk().unwrap().expect("the first piece")).unwrap();
    let expected = format!("retry: 3000\n\nid: {second}\ndata: {second}\n\n");
    assert!(replay.starts_with(&expected), "{replay:?}");
    let replayed = replay.matches("id: ").count() as u64;

    server.signal(SIGINT);
    for (client, mut last_id) in [(&mut stream, second), (&mut resumed, first + replayed)] {
        let (ids, last) = rest_of_stream(client);
        for id in ids {
            assert_eq!(id, last_id + 1, "an event lost or repeated");
            last_id = id;
        }
        let retry: u64 = last
            .strip_prefix("retry: ")
            .and_then(|rest| rest.strip_suffix(&format!("\nid: {last_id}\nevent: shutdown\ndata: bye\n\n")))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("not the last event after {last_id}: {last:?}"));
        assert!((500..=3000).contains(&retry), "{retry}");
    }
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
}

#[test]
fn embedded_server_is_stopped_by_its_host() {
    let mut child = example("embedded")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the example");
    // Its stderr says where it listens; its stdout answers the host's commands.
    let (lines, stderr_lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    thread::spawn(move || stderr.lines().map_while(Result::ok).for_each(|l| drop(lines.send(l))));
    let addr: SocketAddr = loop {
        let line = stderr_lines.recv_timeout(Duration::from_secs(10)).expect("a listening line");
        if let Some(addr) = parse_listening(&line) {
            break addr;
        }
    };
    let (out, stdout_lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|l| drop(out.send(l))));

    let mut client = connect(addr);
    assert_eq!(client.request(&get("/one")).unwrap().text(), "request 1: /one\n");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "status").unwrap();
    let status = stdout_lines.recv_timeout(Duration::from_secs(10)).expect("a status line");
    assert_eq!(status, "serving, 1 requests so far");
    writeln!(stdin, "stop").unwrap();
    let stopped = stdout_lines.recv_timeout(Duration::from_secs(10)).expect("a last line");
    assert!(stopped.starts_with("stopped: Drained") && stopped.ends_with("; 1 requests served"), "{stopped}");
    assert!(child.wait().expect("exit").success());
    let heartbeat = stderr_lines.recv_timeout(Duration::from_secs(5)).expect("the heartbeat's line");
    assert_eq!(heartbeat, "heartbeat: done after 1 requests");
}
