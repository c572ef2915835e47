//! The library API in-process: state hook, counts and ShutdownHandle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiesce::{ConnState, Outcome, Reply, Request, Response, Server, ServerConfig};

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
