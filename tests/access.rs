//! The access log: the binary's `--access-log` (Common Log Format plus duration, connection and
//! drain; JSON with `--log-format json`) and the library's `Server::set_access_log`, which sees
//! the same records: whole answers, protocol errors, deferred answers, streams (finished, or cut
//! by the shutdown), answers given during the drain.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Quiesce, Reaped, SIGTERM, connect, get, head, parse_listening, quiesce_command};
use quiesce::{AccessRecord, Ending, Outcome, Reply, Request, Response, Server, ServerConfig, Version};

/// A fresh path for this test's log file (removed when dropped).
struct LogFile(std::path::PathBuf);

impl LogFile {
    fn new(name: &str) -> LogFile {
        LogFile(std::env::temp_dir().join(format!("quiesce-{name}-{}.log", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn every_answered_request_gets_a_line_in_common_log_format() {
    let log = LogFile::new("access-text");
    let mut server = Quiesce::start(&["--access-log", log.path(), "--drain-delay", "1s"]);
    let mut client = connect(server.addr());
    assert_eq!(client.request(&get("/plaintext")).unwrap().status, 200);
    client.send(&head("/json")).unwrap();
    assert_eq!(client.read_head_response().unwrap().status, 200);
    let echo = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(client.request(echo).unwrap().status, 200);
    assert_eq!(client.request(&get("/work?ms=1")).unwrap().status, 200);
    let mut events = connect(server.addr());
    events.send(&get("/events?every=1ms&n=2")).unwrap();
    let _ = events.read_head_response().unwrap();
    while events.read_chunk().unwrap().is_some() {}
    assert_eq!(connect(server.addr()).request(b"GET / HTTP/1.1\r\n\r\n").unwrap().status, 400);
    // During the drain delay: still served, marked.
    server.signal(SIGTERM);
    server.expect_log("draining in 1s", Duration::from_secs(5));
    assert_eq!(client.request(&get("/healthz")).unwrap().status, 503);
    drop(client);
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);

    let lines = log.lines();
    let expected = [
        ("\"GET /plaintext HTTP/1.1\" 200 13 ", "drain=no"),
        ("\"HEAD /json HTTP/1.1\" 200 0 ", "drain=no"),
        ("\"POST /echo HTTP/1.1\" 200 5 ", "drain=no"),
        ("\"GET /work?ms=1 HTTP/1.1\" 200 12 ", "drain=no"),
        ("\"GET /events?every=1ms&n=2 HTTP/1.1\" 200 ", "drain=no"),
        ("\"-\" 400 ", "drain=no"),
        ("\"GET /healthz HTTP/1.1\" 503 8 ", "drain=yes"),
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, (request, drain)) in lines.iter().zip(expected) {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains("/2026:") || line.contains(" +0000] "), "{line}");
        assert!(line.contains(request), "{line} lacks {request}");
        // Every answer here went out whole.
        assert!(line.ends_with(&format!("{drain} end=complete")), "{line}");
        let us = line.split(" us=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
        assert!(us.is_some(), "no duration: {line}");
        assert!(line.contains(" conn="), "{line}");
    }
    // "retry: 3000\n\n", then two events of "id: K\ndata: tick K\n\n": 53 body bytes.
    assert!(lines[4].contains(" 200 53 "), "{}", lines[4]);
    // A connection's requests share its id.
    let conn = |line: &str| line.split(" conn=").nth(1).and_then(|r| r.split(' ').next()).unwrap().to_owned();
    assert_eq!(conn(&lines[0]), conn(&lines[3]));
    assert_ne!(conn(&lines[0]), conn(&lines[4]));
}

#[test]
fn json_access_lines_with_log_format_json() {
    let log = LogFile::new("access-json");
    let mut server = Quiesce::start(&["--access-log", log.path(), "--log-format", "json", "--workers", "2"]);
    for _ in 0..4 {
        assert_eq!(connect(server.addr()).request(&get("/plaintext")).unwrap().status, 200);
    }
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
    let lines = log.lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for line in &lines {
        assert!(line.starts_with("{\"ts\":\"") && line.ends_with("\"draining\":false,\"end\":\"complete\"}"), "{line}");
        for field in [
            "\"client\":\"127.0.0.1:",
            "\"method\":\"GET\"",
            "\"target\":\"/plaintext\"",
            "\"version\":\"HTTP/1.1\"",
            "\"status\":200",
            "\"bytes\":13",
            "\"duration_us\":",
            "\"conn\":",
        ] {
            assert!(line.contains(field), "{line} lacks {field}");
        }
    }
}

#[test]
fn a_library_hook_sees_deferred_answers_and_streams_cut_by_the_shutdown() {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        shutdown_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (responders, deferred) = mpsc::channel();
    let mut server = Server::bind(config, move |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/now" {
            res.set_body("now");
            return Reply::Now;
        }
        let _ = responders.send(res.defer());
        Reply::Later
    })
    .unwrap();
    #[derive(Debug, PartialEq)]
    struct Seen {
        method: String,
        target: String,
        version: Option<Version>,
        status: u16,
        bytes: u64,
        draining: bool,
        ending: Ending,
    }
    let (records, seen) = mpsc::channel();
    server.set_access_log(move |r: &AccessRecord<'_>| {
        let _ = records.send(Seen {
            method: r.method.to_owned(),
            target: r.target.to_owned(),
            version: r.version,
            status: r.status,
            bytes: r.body_bytes,
            draining: r.during_drain,
            ending: r.ending,
        });
    });
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let thread = thread::spawn(move || server.run());

    let mut client = connect(addr);
    client.send(&get("/later")).unwrap();
    let responder = deferred.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut answer = Response::new();
    answer.set_status(201).set_body("made");
    responder.send(answer).unwrap();
    assert_eq!(client.read_response().unwrap().status, 201);
    assert_eq!(client.request(&get("/now")).unwrap().text(), "now");
    let mut streaming = connect(addr);
    streaming.send(b"GET /stream HTTP/1.0\r\n\r\n").unwrap();
    let mut stream = deferred.recv_timeout(Duration::from_secs(5)).unwrap().stream(Response::new()).unwrap();
    stream.send(b"twelve bytes").unwrap();
    let _ = streaming.read_head_response().unwrap();
    // A request whose answer is still being made (its responder held, never used).
    let mut waiting = connect(addr);
    waiting.send(&get("/never")).unwrap();
    let _held = deferred.recv_timeout(Duration::from_secs(5)).unwrap();
    // The producers ignore the drain: the shutdown timeout cuts the stream and the request.
    handle.graceful();
    assert!(matches!(thread.join().unwrap().unwrap(), Outcome::TimedOut { closed: 2 }));

    let seen: Vec<Seen> = seen.try_iter().collect();
    let record = |method: &str, target: &str, version, status, bytes, draining, ending| Seen {
        method: method.into(),
        target: target.into(),
        version: Some(version),
        status,
        bytes,
        draining,
        ending,
    };
    assert_eq!(
        seen,
        [
            record("GET", "/later", Version::Http11, 201, 4, false, Ending::Complete),
            record("GET", "/now", Version::Http11, 200, 3, false, Ending::Complete),
            // The cut stream, with what it sent; the request that never had an answer, 0.
            record("GET", "/stream", Version::Http10, 200, 12, true, Ending::Shutdown),
            record("GET", "/never", Version::Http11, 0, 0, true, Ending::Shutdown),
        ]
    );
}

#[test]
fn a_response_the_client_never_takes_is_logged_cut_with_what_went_out() {
    // Larger than what loopback's socket buffers hold, so most of it never leaves the server.
    const SIZE: usize = 32 << 20;
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        write_timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let body = vec![b'x'; SIZE];
    let mut server = Server::bind(config, move |_: &Request<'_>, res: &mut Response| {
        res.set_body(body.clone());
        Reply::Now
    })
    .unwrap();
    let (records, seen) = mpsc::channel();
    server.set_access_log(move |r: &AccessRecord<'_>| {
        let _ = records.send((r.target.to_owned(), r.status, r.body_bytes, r.ending));
    });
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let thread = thread::spawn(move || server.run());

    // A client that reads its whole response: logged whole.
    let mut reader = connect(addr);
    assert_eq!(reader.request(&get("/whole")).unwrap().body.len(), SIZE);
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10)).unwrap(),
        ("/whole".into(), 200, SIZE as u64, Ending::Complete)
    );
    // One that reads none of it: cut by the write timeout, logged with the status sent, the
    // body bytes that went out (far fewer than the body), and how it ended.
    let mut stuck = connect(addr);
    stuck.send(&get("/stuck")).unwrap();
    let (target, status, bytes, ending) = seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((target.as_str(), status, ending), ("/stuck", 200, Ending::WriteTimeout));
    assert!(bytes < SIZE as u64 / 2, "{bytes} of {SIZE} logged for a client that read nothing");
    drop(stuck);

    handle.graceful();
    thread.join().unwrap().unwrap();
}

#[test]
fn protocol_errors_are_timed_from_the_first_byte_and_named_when_the_head_was_read() {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        header_timeout: Duration::from_millis(200),
        max_body_bytes: 1000,
        ..Default::default()
    };
    let mut server = Server::bind(config, |_: &Request<'_>, _: &mut Response| Reply::Now).unwrap();
    let (records, seen) = mpsc::channel();
    server.set_access_log(move |r: &AccessRecord<'_>| {
        let _ = records.send((r.method.to_owned(), r.target.to_owned(), r.status, r.duration));
    });
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let thread = thread::spawn(move || server.run());

    // Half a head, then nothing: 408 once the header timeout is over, so the record's time,
    // which runs from the first byte, cannot be shorter than that timeout.
    let mut slow = connect(addr);
    slow.send(b"GET /slow HTTP/1.1\r\n").unwrap();
    assert_eq!(slow.read_response().unwrap().status, 408);
    let (method, target, status, took) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((method.as_str(), target.as_str(), status), ("-", "-", 408));
    assert!(took >= Duration::from_millis(200), "a 408 after a 200 ms header timeout recorded as {took:?}");

    // A body over the limit: the head was read, so the 413's record names the request.
    let big = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(connect(addr).request(big).unwrap().status, 413);
    let (method, target, status, _) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((method.as_str(), target.as_str(), status), ("POST", "/upload", 413));

    handle.graceful();
    thread.join().unwrap().unwrap();
}

#[test]
fn a_stdout_nobody_reads_holds_up_neither_serving_nor_the_drain() {
    // stdout is a pipe this test never reads: 64 KiB of lines fill it, and from then on a
    // server that wrote them itself would stop serving (and never drain).
    let mut command = quiesce_command(&["--access-log", "-"]);
    command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Reaped(command.spawn().expect("spawn"));
    let _unread_stdout = child.0.stdout.take();
    let (tx, lines) = mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("a first line");
    let addr = parse_listening(&first).expect("an address");
    let mut client = connect(addr);
    // About 100 bytes of log each: 300 KB, several times what the pipe holds.
    for i in 0..3000 {
        let answer = client.request(&get("/plaintext")).unwrap_or_else(|e| panic!("request {i} not answered: {e}"));
        assert_eq!(answer.status, 200);
    }
    drop(client);
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.0.id() as libc::pid_t, SIGTERM) };
    let mut logs = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        logs.push(line);
    }
    let status = child.0.wait().expect("exit");
    assert_eq!(status.code(), Some(0), "{logs:#?}");
    assert!(logs.iter().any(|l| l.contains("lines dropped") || l.contains("not written")), "{logs:#?}");
}
