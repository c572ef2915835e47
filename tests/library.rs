//! The library API in-process: state hook, counts and ShutdownHandle.

#[path = "common/retry.rs"]
mod retry;
use retry::read_some;

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
        let n = read_some(stream, &mut buf).expect("read");
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

/// A new connection may be looked at once before it enters the poll (the first one is). Whether
/// its request came after that look (the poll must then report it) or was there before the
/// connection was accepted (answered in a look, or after an event if the server has stopped
/// looking because looks found nothing), it is served; and a `Connection: close` request
/// answered at once still shows the connection New, then Active, then Closed.
#[test]
fn a_request_is_served_whether_it_came_before_or_after_the_first_look() {
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    // `/hold` keeps the loop in the handler until the test lets it go: connections made
    // meanwhile wait in the listen queue with their requests.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    let handler = move |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/hold" {
            let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(10));
        }
        res.set_body("hi");
        Reply::Now
    };
    let mut server = Server::bind(config, handler).expect("bind");
    let addr = server.local_addr();
    let seen = Arc::new((Mutex::new(Vec::new()), std::sync::Condvar::new()));
    let sink = Arc::clone(&seen);
    server.on_state_change(move |change| {
        sink.0.lock().unwrap().push((change.peer, change.from, change.to));
        sink.1.notify_all();
    });
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());
    let wait_for = |peer: std::net::SocketAddr, to: ConnState| {
        let (lock, changed) = &*seen;
        let mut changes = lock.lock().unwrap();
        while !changes.iter().any(|&(p, _, t)| p == peer && t == to) {
            let (next, timeout) = changed.wait_timeout(changes, Duration::from_secs(10)).unwrap();
            assert!(!timeout.timed_out(), "no {to:?} for {peer}");
            changes = next;
        }
    };
    let connect = || {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    };

    // After: the first look finds nothing. The connection is accepted (New), then a request on
    // a second connection is answered, which the loop does only after looking at the first
    // (a look comes in the turn that accepted the connection).
    let mut late = connect();
    wait_for(late.local_addr().unwrap(), ConnState::New);
    let mut other = connect();
    other.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(read_response(&mut other).ends_with("\r\n\r\nhi"));
    for _ in 0..2 {
        late.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert!(read_response(&mut late).ends_with("\r\n\r\nhi"));
    }

    // Before: while the loop is held, a connection is made and its request and FIN sent.
    other.write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut early = connect();
    early.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    early.shutdown(std::net::Shutdown::Write).unwrap();
    release.send(()).unwrap();
    assert!(read_response(&mut other).ends_with("\r\n\r\nhi"));
    let mut reply = Vec::new();
    early.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).ends_with("Connection: close\r\n\r\nhi"));
    let early_peer = early.local_addr().unwrap();
    wait_for(early_peer, ConnState::Closed);

    drop((late, other));
    handle.graceful();
    thread.join().unwrap().expect("run");
    let changes = seen.0.lock().unwrap();
    let early_states: Vec<_> = changes.iter().filter(|c| c.0 == early_peer).map(|c| (c.1, c.2)).collect();
    assert_eq!(
        early_states,
        [
            (None, ConnState::New),
            (Some(ConnState::New), ConnState::Active),
            (Some(ConnState::Active), ConnState::Closed)
        ]
    );
}

/// A client that completed its handshake but was not yet accepted when the drain began is
/// accepted by the drain and served at once: not at the end of its last call (here a minute,
/// longer than the test waits), although it is not in the poll yet and nothing else is left to
/// wake the loop.
#[test]
fn a_client_the_drain_accepts_is_served_at_once() {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        handle_signals: true,
        drain_new_grace: Duration::from_secs(60),
        drain_idle_grace: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    // `/hold` keeps the loop in the handler until the test lets it go, and says it is there
    // (with the loop thread's id).
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (entered, in_handler) = std::sync::mpsc::channel::<libc::pthread_t>();
    let held = Mutex::new((held, entered));
    let handler = move |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/hold" {
            let (held, entered) = &*held.lock().unwrap();
            // SAFETY: pthread_self has no preconditions.
            let _ = entered.send(unsafe { libc::pthread_self() });
            let _ = held.recv_timeout(Duration::from_secs(10));
        }
        res.set_body("hi");
        Reply::Now
    };
    let server = Server::bind(config, handler).expect("bind");
    let addr = server.local_addr();
    let thread = std::thread::spawn(move || server.run());
    let connect = || {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    };
    let in_the_handler = || in_handler.recv_timeout(Duration::from_secs(10)).expect("the loop is in the handler");
    const HOLD: &[u8] = b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n";

    // First hold: the next request and SIGTERM wait, so that the next turn sees both at once.
    let mut holder = connect();
    holder.write_all(HOLD).unwrap();
    let loop_thread = in_the_handler();
    holder.write_all(HOLD).unwrap();
    // To the loop's thread, so that it takes the signal (its handler writes the signal pipe)
    // before it leaves the handler it waits in.
    // SAFETY: the thread is alive (it waits for `release`); the server's handler takes SIGTERM.
    assert_eq!(unsafe { libc::pthread_kill(loop_thread, libc::SIGTERM) }, 0);
    release.send(()).unwrap();
    // Second hold, in the turn that took the signal: a client queues (handshake done, request
    // sent). The drain begins at the end of this turn and accepts it; nothing else is pending.
    in_the_handler();
    let mut queued = connect();
    queued.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    release.send(()).unwrap();
    let mut reply = Vec::new();
    queued.read_to_end(&mut reply).expect("an answer before the last call's minute is over");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("Connection: close\r\n\r\nhi"), "{reply}");
    drop((holder, queued));
    let outcome = thread.join().unwrap().expect("run");
    assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
}
