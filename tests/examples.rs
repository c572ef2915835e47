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

#[test]
fn sse_streams_end_with_a_shutdown_event_when_the_server_drains() {
    let mut server = Quiesce::spawn(example("sse"));
    let mut stream = connect(server.addr());
    stream.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.send(&get("/events")).unwrap();
    let head = stream.read_head_response().expect("the head");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.read_chunk().expect("a tick"), Some(b"data: 1\n\n".to_vec()));
    server.signal(SIGINT);
    let mut last = Vec::new();
    while let Some(chunk) = stream.read_chunk().expect("the stream ends cleanly") {
        last = chunk;
    }
    assert_eq!(last, b"event: shutdown\ndata: bye\n\n");
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
