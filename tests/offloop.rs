//! The binary's work off the loop: `/work` (blocking work on the pool, answered through a
//! responder) and `/events` (Server-Sent Events from one ticker), and a SIGTERM with both in
//! flight. Assertions are about order and content, not time.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::{Client, CloseState, Quiesce, SIGTERM, connect, get};

#[test]
fn blocking_work_does_not_hold_up_other_requests() {
    let server = Quiesce::start(&["--blocking-threads", "2"]);
    let mut worker = connect(server.addr());
    worker.send(&get("/work?ms=3000")).unwrap();
    // Meanwhile the loop answers others at once.
    let mut other = connect(server.addr());
    for _ in 0..5 {
        let answer = other.request(&get("/plaintext")).expect("plaintext while the work runs");
        assert_eq!(answer.text(), "Hello, World!");
    }
    // Neither answered nor closed yet: the work still sleeps.
    assert!(matches!(worker.close_state(Duration::from_millis(1)), CloseState::Open), "the work ended early");
    let answer = worker.read_response().expect("the work's answer");
    assert_eq!((answer.status, answer.text()), (200, "worked 3000 ms\n".to_owned()));
    let spin = worker.request(&get("/work?ms=20&spin=1")).expect("CPU work");
    assert_eq!(spin.text(), "worked 20 ms\n");
    let bad = worker.request(&get("/work?ms=x")).expect("an answer");
    assert_eq!(bad.status, 400);
}

#[test]
fn a_full_queue_answers_503_at_once() {
    // One thread, so 128 queued jobs behind the running one fill the queue.
    let server = Quiesce::start(&["--blocking-threads", "1"]);
    let mut busy = connect(server.addr());
    busy.send(&get("/work?ms=4000")).unwrap();
    let mut clients: Vec<Client> = (0..129).map(|_| connect(server.addr())).collect();
    for client in &mut clients {
        client.send(&get("/work?ms=0")).unwrap();
    }
    // The one refused is answered while the others still wait for the busy thread.
    let mut statuses = Vec::new();
    for client in &mut clients {
        client.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        statuses.push(client.read_response().expect("an answer").status);
    }
    // One refused, or two if the busy job was still queued when the rest arrived (the thread
    // starts with the first job); every other one is served, none lost.
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!((1..=2).contains(&refused), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 129 - refused, "{statuses:?}");
    assert_eq!(busy.read_response().unwrap().status, 200);
}

#[test]
fn event_streams_tick_n_times_and_end() {
    let server = Quiesce::start(&[]);
    let mut client = connect(server.addr());
    client.send(&get("/events?every=20ms&n=3")).unwrap();
    let head = client.read_head_response().expect("the head");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert!(head.is_chunked(), "{head:?}");
    let mut events = String::new();
    while let Some(chunk) = client.read_chunk().expect("a chunk") {
        events.push_str(&String::from_utf8(chunk).unwrap());
    }
    assert_eq!(events, "retry: 3000\n\nid: 1\ndata: tick 1\n\nid: 2\ndata: tick 2\n\nid: 3\ndata: tick 3\n\n");
    // The connection goes on; HEAD gets the head alone.
    assert_eq!(client.request(&get("/plaintext")).unwrap().text(), "Hello, World!");
    client.send(b"HEAD /events HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let head = client.read_head_response().expect("the head");
    assert!(head.is_chunked(), "{head:?}");
    assert_eq!(client.request(&get("/plaintext")).unwrap().text(), "Hello, World!", "a body followed the HEAD");
}

/// The server's count of deferred answers so far (each `/work` and `/events` request defers).
fn deferred(addr: std::net::SocketAddr) -> u64 {
    let metrics = connect(addr).request(&get("/metrics")).expect("metrics").text();
    let line = metrics.lines().find(|l| l.starts_with("quiesce_deferred_responses_total ")).expect("the counter");
    line.rsplit_once(' ').and_then(|(_, n)| n.parse().ok()).expect("a number")
}

#[test]
fn sigterm_answers_the_work_in_flight_and_ends_every_stream_cleanly() {
    let mut server = Quiesce::start(&[]);
    let mut streams: Vec<Client> = (0..8).map(|_| connect(server.addr())).collect();
    for stream in &mut streams {
        stream.send(&get("/events?every=50ms")).unwrap();
        let head = stream.read_head_response().expect("a stream head");
        assert!(head.is_chunked());
        // The stream is live: a tick arrives.
        assert!(stream.read_chunk().expect("a tick").is_some());
    }
    let mut workers: Vec<Client> = (0..4).map(|_| connect(server.addr())).collect();
    for worker in &mut workers {
        worker.send(&get("/work?ms=800")).unwrap();
    }
    // The signal comes once the server has every job (not before: a request still on its way
    // would meet the drain instead), and long before the work ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while deferred(server.addr()) < 12 {
        assert!(std::time::Instant::now() < deadline, "the work never reached the server");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal(SIGTERM);
    for worker in &mut workers {
        let answer = worker.read_response().expect("the work in flight is answered");
        assert_eq!(answer.text(), "worked 800 ms\n");
        assert!(answer.is_close(), "{answer:?}");
    }
    for stream in &mut streams {
        let mut last = Vec::new();
        loop {
            match stream.read_chunk() {
                Ok(Some(chunk)) => last = chunk,
                Ok(None) => break,
                Err(e) => panic!("a stream was cut: {e}"),
            }
        }
        let last = String::from_utf8(last).unwrap();
        assert!(last.starts_with("retry: ") && last.ends_with("\nevent: shutdown\ndata: draining\n\n"), "{last}");
        assert!(stream.is_closed_within(Duration::from_secs(5)));
    }
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
    let summary = server.logs().into_iter().find(|l| l.contains("\"event\":\"shutdown\"")).expect("a summary");
    assert!(summary.contains("\"streams_cut\":0"), "{summary}");
}

#[test]
fn a_stream_opened_during_the_drain_delay_ends_with_the_drain() {
    let mut server = Quiesce::start(&["--drain-delay", "2s"]);
    server.signal(SIGTERM);
    server.expect_log("draining in 2s", Duration::from_secs(5));
    let mut stream = connect(server.addr());
    stream.send(&get("/events?every=10s")).unwrap();
    let _ = stream.read_head_response().expect("still served during the delay");
    let mut body = Vec::new();
    while let Some(chunk) = stream.read_chunk().expect("the shutdown event, then the end") {
        body.extend(chunk);
    }
    let body = String::from_utf8(body).unwrap();
    // The retry of every stream's start, then the drain's last event, with a retry of its own.
    let (first, last) = body.split_once("\n\n").unwrap();
    assert_eq!(first, "retry: 3000");
    assert!(last.starts_with("retry: ") && last.ends_with("\nid: 0\nevent: shutdown\ndata: draining\n\n"), "{last}");
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
    // Nothing is left listening.
    let refused = std::net::TcpStream::connect(server.addr()).map(|_| ());
    assert_eq!(refused.map_err(|e| e.kind()), Err(ErrorKind::ConnectionRefused));
}
