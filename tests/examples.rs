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

use common::{Quiesce, SIGINT, SIGTERM, connect, get, parse_listening};

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
fn blocking_answers_from_the_library_pool_and_drains_the_work_in_flight() {
    let mut server = Quiesce::spawn(example("blocking"));
    let mut slow = connect(server.addr());
    slow.send(&get("/report?ms=2000")).unwrap();
    // Four threads: other requests are answered meanwhile.
    let quick = connect(server.addr()).request(&get("/quick?ms=0")).expect("an answer");
    assert_eq!(quick.text(), "GET /quick took 0 ms\n");
    server.signal(SIGINT);
    let answer = slow.read_response().expect("the work in flight is answered");
    assert_eq!(answer.text(), "GET /report took 2000 ms\n");
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

#[test]
fn a_turn_held_by_a_handler_is_logged_once_naming_its_route_and_counted() {
    let mut server = Quiesce::spawn(example("stuck"));
    let answer = connect(server.addr()).request(&get("/spin?ms=2000")).expect("the spin's answer");
    assert_eq!(answer.text(), "spun 2000 ms\n");
    let warning = server.expect_log("slow loop turn", Duration::from_secs(10));
    assert!(warning.starts_with("WARN: ") && warning.contains("in the handler for GET /spin"), "{warning}");
    let metrics = connect(server.addr()).request(&get("/metrics")).expect("/metrics").text();
    let slow_turns = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quiesce_slow_turns_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no quiesce_slow_turns_total in:\n{metrics}"));
    assert!(slow_turns >= 1, "{metrics}");
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
    // One turn, one line, however many times the watchdog looked at it meanwhile.
    assert_eq!(server.count_logs("GET /spin"), 1, "{}", server.logs_text());
}

/// A handler spins for 10 s on the loop; two signals meanwhile. The loop cannot read them
/// until the handler returns: the second ends the process from its signal handler, with
/// 128 + the signal, and the spin never answers.
fn second_signal_ends_a_process_stuck_in_a_handler(signal: i32, name: &str, code: i32) {
    let mut server = Quiesce::spawn(example("stuck"));
    let mut client = connect(server.addr());
    client.stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    client.send(&get("/spin?ms=10000")).unwrap();
    server.expect_log("spinning for 10000 ms", Duration::from_secs(10));
    server.signal(signal);
    // Two signals sent before the first is delivered are one to the kernel (a standard
    // signal is pending or not): the second goes once the first was taken.
    wait_delivered(server.pid(), signal);
    server.signal(signal);
    // Far less than the spin's 10 s: nothing else but the second signal ends it that soon.
    let status = server.wait_exit(Duration::from_secs(5));
    server.assert_exit_code(status, code);
    server.expect_log(&format!("quiesce: second {name} while an event loop is stuck"), Duration::from_secs(2));
    // The spin did not complete: its answer never came (the connection ended with the
    // process, by an end of file or a reset).
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client.stream, &mut rest);
    assert!(rest.is_empty() && client.buffered().is_empty(), "an answer came: {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(server.count_logs("stopped:"), 0, "the loop stopped on its own:\n{}", server.logs_text());
}

/// Waits until `signal` is no longer pending for process `pid` (Linux: `SigPnd` and `ShdPnd`
/// in /proc; elsewhere a pause).
fn wait_delivered(pid: u32, signal: i32) {
    let bit = 1u64 << (signal - 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            thread::sleep(Duration::from_millis(200));
            return;
        };
        let pending = status
            .lines()
            .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
            .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
            .any(|mask| mask & bit != 0);
        if !pending {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "signal {signal} still pending for process {pid}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_second_sigterm_ends_a_process_stuck_in_a_handler_with_143() {
    second_signal_ends_a_process_stuck_in_a_handler(SIGTERM, "SIGTERM", 143);
}

#[test]
fn a_second_sigint_ends_a_process_stuck_in_a_handler_with_130() {
    second_signal_ends_a_process_stuck_in_a_handler(SIGINT, "SIGINT", 130);
}

/// A request with a body.
fn with_body(method: &str, path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(feature = "json")]
#[test]
fn crud_creates_reads_and_deletes_users_and_says_what_was_wrong() {
    let mut server = Quiesce::spawn(example("crud"));
    let mut client = connect(server.addr());
    let created = client
        .request(&with_body("POST", "/users", "application/json", r#"{"name":"Ada","email":"ada@example.com"}"#))
        .unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert_eq!(created.text(), r#"{"id":1,"name":"Ada","email":"ada@example.com"}"#);
    let read = client.request(&get("/users/1")).unwrap();
    assert_eq!((read.status, read.text()), (200, created.text()));
    assert_eq!(client.request(&get("/users/2")).unwrap().status, 404);
    assert_eq!(client.request(&get("/users/x")).unwrap().status, 404);
    // What was wrong with a body: malformed (400, where), not JSON at all (415).
    let bad = client.request(&with_body("POST", "/users", "application/json", "{\"name\": }")).unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("line 1 column"), "{}", bad.text());
    assert_eq!(client.request(&with_body("POST", "/users", "text/plain", "Ada")).unwrap().status, 415);
    let hello = client.request(&get("/hello/world")).unwrap();
    assert_eq!(hello.text(), r#"{"hello":"world"}"#);
    // Another method on a path the router knows: 405 and what is allowed.
    let put = client.request(&with_body("PUT", "/users/1", "application/json", "{}")).unwrap();
    assert_eq!(put.status, 405);
    assert!(put.header("allow").is_some_and(|a| a.contains("DELETE")), "{put:?}");
    let deleted = client.request(b"DELETE /users/1 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(client.request(&get("/users/1")).unwrap().status, 404);
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
}

#[test]
fn chat_sends_each_message_to_every_subscriber_and_ends_the_streams_at_the_drain() {
    let mut server = Quiesce::spawn(example("chat"));
    let mut subscribers: Vec<common::Client> = (0..2).map(|_| connect(server.addr())).collect();
    for subscriber in &mut subscribers {
        subscriber.send(&get("/events")).unwrap();
        let head = subscriber.read_head_response().unwrap();
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
    }
    let mut sender = connect(server.addr());
    assert_eq!(sender.request(&with_body("POST", "/send", "text/plain", "hello")).unwrap().status, 204);
    assert_eq!(sender.request(&with_body("POST", "/send", "text/plain", "again")).unwrap().status, 204);
    for subscriber in &mut subscribers {
        let mut got = String::new();
        while !got.contains("data: again\n") {
            let chunk = subscriber.read_chunk().unwrap().expect("a message");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert_eq!(got, "retry: 3000\n\nid: 1\ndata: hello\n\nid: 2\ndata: again\n\n");
    }
    drop(sender);
    server.signal(SIGTERM);
    for subscriber in &mut subscribers {
        let mut rest = String::new();
        while let Some(chunk) = subscriber.read_chunk().unwrap() {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        // The last event (a spread retry, the last id), then the stream's clean end (read_chunk
        // gave None at the last chunk).
        let retry: u64 = rest
            .strip_prefix("retry: ")
            .and_then(|r| r.split_once('\n'))
            .and_then(|(ms, _)| ms.parse().ok())
            .unwrap_or_else(|| panic!("{rest:?}"));
        assert!((500..=3000).contains(&retry), "{rest:?}");
        assert!(rest.ends_with("\nid: 2\nevent: shutdown\ndata: draining\n\n"), "{rest:?}");
    }
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
}
