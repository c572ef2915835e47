//! The library API in-process: state hook, counts and ShutdownHandle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiesce::{ConnState, Handles, Outcome, Reply, Request, Response, Server, ServerConfig};

#[test]
fn hook_reports_every_transition_and_handle_drains() {
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let handler = |_req: &Request<'_>, res: &mut Response| {
        res.set_body("hi");
        Reply::Now
    };
    let mut server = Server::bind(config, handler).expect("bind");
    let addr = server.local_addr();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    server.on_state_change(move |change| sink.lock().unwrap().push((change.from, change.to, change.counts)));
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8(reply).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.ends_with("Connection: close\r\n\r\nhi"), "{text}");
    drop(stream);

    handle.graceful();
    let outcome = thread.join().unwrap().expect("run");
    assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
    assert_eq!(outcome.exit_code(), 0);

    let seen = seen.lock().unwrap();
    let states: Vec<_> = seen.iter().map(|(from, to, _)| (*from, *to)).collect();
    assert_eq!(states.first(), Some(&(None, ConnState::New)));
    assert_eq!(states.last().map(|s| s.1), Some(ConnState::Closed));
    assert!(states.contains(&(Some(ConnState::New), ConnState::Active)), "{states:?}");
    let last_counts = seen.last().unwrap().2;
    assert_eq!(last_counts.total(), 0, "counts drift: {last_counts:?}");
}

#[test]
fn immediate_stop_returns_stopped() {
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let server =
        Server::bind(config, |_: &Request<'_>, _: &mut Response| Reply::After(Duration::from_secs(60))).unwrap();
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let thread = std::thread::spawn(move || server.run());
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    handle.graceful();
    handle.immediate();
    let outcome = thread.join().unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Stopped { signal: None, .. }), "{outcome:?}");
    assert_eq!(outcome.exit_code(), 1);
}

/// Reads one response (head and Content-Length body) from `stream`.
fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn handler_built_with_the_handles_can_stop_its_server_and_hears_the_drain() {
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let server = Server::bind_with(config, |handles: &Handles| {
        let (shutdown, drain) = (handles.shutdown.clone(), handles.drain.clone());
        move |req: &Request<'_>, res: &mut Response| {
            if req.path() == "/stop" {
                shutdown.graceful();
            }
            res.set_body(if drain.is_draining() { "draining" } else { "serving" });
            Reply::Now
        }
    })
    .expect("bind");
    let (addr, drain) = (server.local_addr(), server.drain_notice());
    let (tx, rx) = std::sync::mpsc::channel();
    drain.on_drain(move || tx.send("drain began").unwrap());
    let thread = std::thread::spawn(move || server.run());
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).ends_with("serving"));
    assert!(!drain.is_draining());
    // The handler stops its own server; that request is still answered, and the drain notice
    // fires before run returns.
    stream.write_all(b"GET /stop HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let stopping = read_response(&mut stream);
    assert!(stopping.ends_with("serving"), "{stopping}");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("drain began"));
    drop(stream);
    let outcome = thread.join().unwrap().expect("run");
    assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
    assert!(drain.is_draining());
}

#[test]
fn a_request_knows_its_client_and_connection() {
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let handler = |req: &Request<'_>, res: &mut Response| {
        let owned = req.owned();
        res.set_body(format!("{} {} {}", req.peer_addr(), req.connection_id(), owned.connection_id()));
        Reply::Now
    };
    let server = Server::bind(config, handler).expect("bind");
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let ids = Arc::new(Mutex::new(Vec::new()));
    let mut server = server;
    let seen = Arc::clone(&ids);
    server.on_state_change(move |change| seen.lock().unwrap().push((change.id, change.peer)));
    let thread = std::thread::spawn(move || server.run());
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        let response = read_response(&mut stream);
        let body = response.rsplit("\r\n\r\n").next().unwrap().to_owned();
        bodies.push((stream.local_addr().unwrap(), body));
    }
    handle.graceful();
    thread.join().unwrap().expect("run");
    let ids = ids.lock().unwrap();
    for (client, body) in &bodies {
        let (id, _) = ids.iter().find(|(_, peer)| peer == client).expect("a state change for the client");
        assert_eq!(body, &format!("{client} {id} {id}"));
    }
    assert_ne!(bodies[0].1, bodies[1].1);
}
