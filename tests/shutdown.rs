//! Graceful shutdown of the `quiesce` binary on SIGINT/SIGTERM.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const LOG_WAIT: Duration = Duration::from_secs(3);
const DRAIN_LOG: &str = "received SIGINT: draining";

/// Sends `req` on a new connection and makes sure the server has read it before returning.
fn in_flight(addr: SocketAddr, req: &[u8]) -> Client {
    let mut c = connect(addr);
    send(&mut c, req);
    sync_point(addr);
    c
}

// Rule 1: the listener is closed once the signal is processed.
#[test]
fn new_connections_refused_after_signal() {
    let mut server = Quiesce::start(&["--delay", "1s"]);
    let addr = server.addr();
    let mut busy = in_flight(addr, &get("/busy"));
    server.signal(SIGINT);
    server.expect_log(DRAIN_LOG, LOG_WAIT);
    assert!(server.try_status().is_none(), "server exited although a request was in flight");
    match Client::connect(addr) {
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "connect after the signal must be refused, got {e}")
        }
        Ok(mut c) => {
            // Accepted by the kernel: the listener is still open. Show what the server does.
            let got = c.request(&get("/late"));
            panic!("connect after the drain started succeeded (listener still open); request gave {got:?}");
        }
    }
    let resp = busy.read_response().expect("in-flight response");
    assert_ok_body(&resp, &hello(r#""/busy""#));
    assert!(resp.is_close(), "{resp:?}");
    let status = server.wait_exit(Duration::from_secs(3));
    server.assert_exit_code(status, 0);
}

// Rule 2: an idle keep-alive connection whose last response is old is closed at once.
#[test]
fn idle_connection_closed_at_signal() {
    let mut server = Quiesce::start(&[]);
    let addr = server.addr();
    let mut c = connect(addr);
    let resp = c.request(&get("/plaintext")).expect("request");
    assert_ok_body(&resp, "Hello, World!");
    assert!(!resp.is_close());
    // The yardstick for "at once": a request in flight across the signal, due 2 s later.
    let mut busy = in_flight(addr, &get("/busy?delay=2s"));
    // Time matters: the last response must be more than 100 ms old.
    thread::sleep(Duration::from_millis(300));
    server.signal(SIGINT);
    let state = c.close_state(Duration::from_secs(3));
    assert_eq!(state, CloseState::Eof, "idle connection must be closed cleanly");
    assert_eq!(
        busy.close_state(Duration::from_millis(1)),
        CloseState::Open,
        "the idle connection must be closed at once, not after the in-flight request finished"
    );
    let resp = busy.read_response().expect("in-flight response");
    let answered = Instant::now();
    assert_ok_body(&resp, &hello(r#""/busy""#));
    assert!(resp.is_close(), "{resp:?}");
    let status = server.wait_exit(Duration::from_secs(3));
    let took = answered.elapsed();
    server.assert_exit_code(status, 0);
    assert!(took < Duration::from_secs(1), "exit took {took:?} after the last response");
}

// Rule 2: a New connection gets up to 1 s to send its first request; it is served with
// Connection: close.
#[test]
fn late_first_request_served_with_close() {
    let mut server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    server.signal(SIGINT);
    server.expect_log(DRAIN_LOG, LOG_WAIT);
    // Time matters: the request comes in a little after the drain started.
    thread::sleep(Duration::from_millis(200));
    let resp = c.request(&get("/late")).expect("late first request");
    assert_ok_body(&resp, &hello(r#""/late""#));
    assert!(resp.is_close(), "late request must get Connection: close: {resp:?}");
    assert_eq!(c.close_state(Duration::from_secs(2)), CloseState::Eof);
    let status = server.wait_exit(Duration::from_secs(2));
    server.assert_exit_code(status, 0);
}

// /healthz during the drain (asked on a New connection in its grace period).
#[test]
fn healthz_while_draining_is_503() {
    let mut server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    server.signal(SIGINT);
    server.expect_log(DRAIN_LOG, LOG_WAIT);
    let resp = c.request(&get("/healthz")).expect("healthz while draining");
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.text(), "draining");
    assert!(resp.is_close(), "{resp:?}");
    assert_common_headers(&resp, false);
    assert_eq!(c.close_state(Duration::from_secs(2)), CloseState::Eof);
    let status = server.wait_exit(Duration::from_secs(2));
    server.assert_exit_code(status, 0);
}

// Rule 2: an Idle connection whose response went out less than 100 ms ago may still send one
// more request, served with Connection: close.
#[test]
fn recently_idle_connection_gets_last_call() {
    // The signal goes out right after the response. Whether the server saw the response as
    // recent is its own decision, which the drain-start line reports: with a last call the
    // connection must be served. On a machine so slow that the drain started more than 100 ms
    // after the response, the connection is closed as idle instead; that attempt proves nothing
    // about this rule and is retried on a new server.
    const ATTEMPTS: usize = 5;
    let mut too_late = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut server = Quiesce::start(&[]);
        let mut c = connect(server.addr());
        let resp = c.request(&get("/first")).expect("first request");
        assert_ok_body(&resp, &hello(r#""/first""#));
        server.signal(SIGINT);
        let line = server.expect_log(DRAIN_LOG, LOG_WAIT);
        if !line.contains("last call for 1") {
            assert!(line.contains("closing 1 idle"), "drain-start line: {line:?}; logs:\n{}", server.logs_text());
            assert_eq!(c.close_state(Duration::from_secs(2)), CloseState::Eof, "idle connection closed at the signal");
            let status = server.wait_exit(Duration::from_secs(2));
            server.assert_exit_code(status, 0);
            too_late.push(line);
            continue;
        }
        let resp = c.request(&get("/second")).expect("last-call request");
        assert_ok_body(&resp, &hello(r#""/second""#));
        assert!(resp.is_close(), "last-call request must get Connection: close: {resp:?}");
        assert_eq!(c.close_state(Duration::from_secs(2)), CloseState::Eof);
        let status = server.wait_exit(Duration::from_secs(2));
        server.assert_exit_code(status, 0);
        return;
    }
    panic!("in {ATTEMPTS} attempts the server never gave the just-used connection a last call: {too_late:?}");
}

// Rule 2: a New connection that never sends anything is closed about 1 s after the signal.
#[test]
fn silent_new_connection_closed_after_grace() {
    let mut server = Quiesce::start(&[]);
    let mut c = connect(server.addr());
    let t = Instant::now();
    server.signal(SIGINT);
    let state = c.close_state(Duration::from_secs(3));
    let took = t.elapsed();
    assert!(
        matches!(state, CloseState::Eof),
        "silent connection: expected a clean close, got {state:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(700),
        "silent new connection closed after only {took:?} (expected ~1 s grace)"
    );
    assert!(took <= Duration::from_secs(2), "silent new connection closed after {took:?} (expected ~1 s)");
    let status = server.wait_exit(Duration::from_secs(1));
    server.assert_exit_code(status, 0);
}

// Rule 3: a delayed request in flight completes with its body and Connection: close; exit 0
// right after.
#[test]
fn in_flight_delayed_request_completes() {
    let mut server = Quiesce::start(&["--delay", "1s"]);
    let started = Instant::now();
    let mut c = in_flight(server.addr(), &get("/inflight"));
    server.signal(SIGINT);
    server.expect_log(DRAIN_LOG, LOG_WAIT);
    let resp = c.read_response().expect("in-flight response");
    let answered = Instant::now();
    assert_ok_body(&resp, &hello(r#""/inflight""#));
    assert!(resp.is_close(), "must carry Connection: close: {resp:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "delay not honoured during the drain");
    assert_eq!(
        c.close_state(Duration::from_secs(2)),
        CloseState::Eof,
        "server must close cleanly after the in-flight response"
    );
    let status = server.wait_exit(Duration::from_secs(2));
    server.assert_exit_code(status, 0);
    assert!(
        answered.elapsed() < Duration::from_millis(1000),
        "exit took {:?} after the last response",
        answered.elapsed()
    );
}

// Rule 3: pipelined requests already received are all answered, the last with Connection: close.
#[test]
fn pipelined_requests_all_answered_during_drain() {
    let mut server = Quiesce::start(&[]);
    let paths = ["/p1", "/p2", "/p3"];
    let all: Vec<u8> = paths.iter().flat_map(|p| get(&format!("{p}?delay=300ms"))).collect();
    let mut c = in_flight(server.addr(), &all);
    server.signal(SIGINT);
    server.expect_log(DRAIN_LOG, LOG_WAIT);
    for (i, p) in paths.iter().enumerate() {
        let resp =
            c.read_response().unwrap_or_else(|e| panic!("response {i} ({p}): {e}; logs:\n{}", server.logs_text()));
        assert_ok_body(&resp, &hello(&format!("\"{p}\"")));
        let last = i == paths.len() - 1;
        assert_eq!(resp.is_close(), last, "Connection: close must be on the last response only ({p}): {resp:?}");
    }
    assert_eq!(c.close_state(Duration::from_secs(2)), CloseState::Eof);
    let status = server.wait_exit(Duration::from_secs(2));
    server.assert_exit_code(status, 0);
}

// A request that itself says Connection: close, in flight at the signal.
#[test]
fn connection_close_request_in_flight_completes() {
    let mut server = Quiesce::start(&[]);
    let mut c = in_flight(server.addr(), &get_close("/cc?delay=500ms"));
    server.signal(SIGINT);
    server.expect_log(DRAIN_LOG, LOG_WAIT);
    let resp = c.read_response().expect("in-flight Connection: close response");
    assert_ok_body(&resp, &hello(r#""/cc""#));
    assert!(resp.is_close(), "{resp:?}");
    assert_eq!(c.close_state(Duration::from_secs(2)), CloseState::Eof);
    let status = server.wait_exit(Duration::from_secs(2));
    server.assert_exit_code(status, 0);
}

// Rule 4: with nothing in flight, exit 0 at once.
#[test]
fn exits_zero_at_once_when_idle() {
    let mut server = Quiesce::start(&[]);
    let t = Instant::now();
    server.signal(SIGINT);
    let status = server.wait_exit(Duration::from_secs(3));
    let took = t.elapsed();
    server.assert_exit_code(status, 0);
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
}

#[test]
fn sigterm_exits_zero_at_once_when_idle() {
    let mut server = Quiesce::start(&[]);
    let t = Instant::now();
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    let took = t.elapsed();
    server.assert_exit_code(status, 0);
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
}

/// Rule 5: a second signal during the drain exits at once with 128 + signal.
fn second_signal_exits_at_once(sig: i32, name: &str, code: i32) {
    let mut server = Quiesce::start(&["--delay", "10s"]);
    let mut c = in_flight(server.addr(), &get("/long"));
    server.signal(sig);
    server.expect_log(&format!("received {name}"), LOG_WAIT);
    assert!(server.try_status().is_none(), "exited after the first signal");
    let t = Instant::now();
    server.signal(sig);
    let status = server.wait_exit(Duration::from_secs(2));
    let took = t.elapsed();
    server.assert_exit_code(status, code);
    assert!(took < Duration::from_secs(1), "second {name}: exit took {took:?}");
    // The in-flight request never got its answer.
    match c.read_response() {
        Ok(resp) => panic!("unexpected response after forced exit: {resp:?}"),
        Err(e) => assert!(
            matches!(classify(&e), Failure::EofBeforeResponse | Failure::Reset),
            "expected the connection to be closed, got {e}"
        ),
    }
}

#[test]
fn second_sigint_exits_130() {
    second_signal_exits_at_once(SIGINT, "SIGINT", 130);
}

#[test]
fn second_sigterm_exits_143() {
    second_signal_exits_at_once(SIGTERM, "SIGTERM", 143);
}

// Rule 5: the shutdown timeout closes what is left and exits 1.
#[test]
fn shutdown_timeout_exits_one() {
    let mut server = Quiesce::start(&["--delay", "10s", "--shutdown-timeout", "300ms"]);
    let mut c = in_flight(server.addr(), &get("/stuck"));
    let t = Instant::now();
    server.signal(SIGINT);
    let status = server.wait_exit(Duration::from_secs(3));
    let took = t.elapsed();
    server.assert_exit_code(status, 1);
    assert!(took >= Duration::from_millis(250), "exited after {took:?}, before the 300ms shutdown timeout");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let line = server.expect_log("shutdown timeout: closed", Duration::from_secs(1));
    assert!(line.contains("shutdown timeout: closed 1 connection"), "expected 1 connection closed, got {line:?}");
    match c.read_response() {
        Ok(resp) => panic!("unexpected response after the shutdown timeout: {resp:?}"),
        Err(e) => assert!(
            matches!(classify(&e), Failure::EofBeforeResponse | Failure::Reset),
            "expected the connection to be closed, got {e}"
        ),
    }
}

// Rule 6: the log lines.
#[test]
fn drain_log_lines() {
    let mut server = Quiesce::start(&[]);
    let addr = server.addr();
    let mut idle = connect(addr);
    let resp = idle.request(&get("/plaintext")).expect("idle request");
    assert_ok_body(&resp, "Hello, World!");
    let mut a = connect(addr);
    send(&mut a, &get("/a?delay=600ms"));
    let mut b = connect(addr);
    send(&mut b, &get("/b?delay=1200ms"));
    sync_point(addr);
    // Time matters: the idle connection's last response must be more than 100 ms old (and the
    // sync-point connection gone).
    thread::sleep(Duration::from_millis(250));
    server.signal(SIGINT);
    let line = server.expect_log("received SIGINT", LOG_WAIT);
    assert!(
        line.contains("received SIGINT: draining 2 active, closing 1 idle"),
        "drain-start line: {line:?}; logs:\n{}",
        server.logs_text()
    );
    assert!(idle.is_closed_within(Duration::from_secs(1)), "idle not closed");
    let ra = a.read_response().expect("response a");
    assert_ok_body(&ra, &hello(r#""/a""#));
    let rb = b.read_response().expect("response b");
    assert_ok_body(&rb, &hello(r#""/b""#));
    let status = server.wait_exit(Duration::from_secs(3));
    server.assert_exit_code(status, 0);

    // Progress at human scale: at most a line a second (this drain lasts about 1.2 s), not one
    // per connection, with figures that only go down, below the three connections of the start.
    let logs = server.logs();
    let start = logs.iter().position(|l| l.contains("received SIGINT")).expect("drain-start line");
    let values: Vec<u32> = logs[start..]
        .iter()
        .filter_map(|l| l.split_once("draining: ").map(|(_, rest)| rest))
        .map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().unwrap_or_else(|_| panic!("bad count in {rest:?}"))
        })
        .collect();
    assert!(values.len() <= 2, "progress lines: {values:?}; logs:\n{}", logs.join("\n"));
    assert!(values.windows(2).all(|w| w[1] < w[0]) && values.iter().all(|&v| v < 3), "{values:?}");
    assert!(logs.iter().all(|l| !l.contains("active connections: ")), "a line per change; logs:\n{}", logs.join("\n"));
    let drained = logs
        .iter()
        .find(|l| l.contains("drained in "))
        .unwrap_or_else(|| panic!("no `drained in` line; logs:\n{}", logs.join("\n")));
    let rest = &drained[drained.find("drained in ").unwrap() + "drained in ".len()..];
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let secs: f64 = number.parse().unwrap_or_else(|_| panic!("bad duration in {drained:?}"));
    assert!(rest[number.len()..].starts_with('s'), "duration unit in {drained:?}");
    assert!((0.5..3.0).contains(&secs), "drain took ~0.9 s, log says {drained:?}");
}

// The load test: many keep-alive clients while SIGINT arrives; the only permitted failure is a
// refused connect.
#[test]
fn load_during_shutdown() {
    const CLIENTS: usize = 32;
    const TEST_BUDGET: Duration = Duration::from_secs(15);
    let mut server = Quiesce::start(&[]);
    let addr = server.addr();
    let deadline = Instant::now() + TEST_BUDGET;
    let signalled = Arc::new(AtomicBool::new(false));

    #[derive(Default, Debug)]
    struct Stats {
        requests: u64,
        connections: u64,
        close_responses: u64,
        refused: bool,
        failures: Vec<(Failure, String)>,
        stopped_by_deadline: bool,
    }

    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let signalled = Arc::clone(&signalled);
            thread::spawn(move || {
                let mut stats = Stats::default();
                let path = format!("/load/{id}");
                let expected = hello(&format!("\"{path}\""));
                let req = get(&path);
                'outer: while Instant::now() < deadline {
                    let mut c = match Client::connect(addr) {
                        Ok(c) => c,
                        Err(e) => {
                            let kind = classify(&e);
                            if kind == Failure::ConnectRefused {
                                stats.refused = true;
                            } else {
                                stats.failures.push((kind, format!("connect: {e}")));
                            }
                            break;
                        }
                    };
                    stats.connections += 1;
                    loop {
                        if Instant::now() >= deadline {
                            stats.stopped_by_deadline = true;
                            break 'outer;
                        }
                        if let Err(e) = c.send(&req) {
                            stats.failures.push((classify(&e), format!("send: {e}")));
                            break 'outer;
                        }
                        match c.read_response() {
                            Ok(resp) => {
                                if resp.status != 200 || resp.body != expected.as_bytes() {
                                    stats.failures.push((Failure::Malformed, format!("unexpected response {resp:?}")));
                                    break 'outer;
                                }
                                stats.requests += 1;
                                if resp.is_close() {
                                    stats.close_responses += 1;
                                    if !signalled.load(Ordering::SeqCst) {
                                        stats
                                            .failures
                                            .push((Failure::Other, "Connection: close before the signal".into()));
                                        break 'outer;
                                    }
                                    continue 'outer;
                                }
                            }
                            Err(e) => {
                                stats.failures.push((
                                    classify(&e),
                                    format!("read (signalled: {}): {e}", signalled.load(Ordering::SeqCst)),
                                ));
                                break 'outer;
                            }
                        }
                    }
                }
                if Instant::now() >= deadline {
                    stats.stopped_by_deadline = true;
                }
                stats
            })
        })
        .collect();

    // Time matters: let the load run before the signal.
    thread::sleep(Duration::from_millis(400));
    signalled.store(true, Ordering::SeqCst);
    let t = Instant::now();
    server.signal(SIGINT);
    let status = server.wait_exit(Duration::from_secs(5));
    let exit_took = t.elapsed();

    let stats: Vec<Stats> = workers.into_iter().map(|w| w.join().expect("client thread panicked")).collect();
    let total: u64 = stats.iter().map(|s| s.requests).sum();
    let per_client: Vec<u64> = stats.iter().map(|s| s.requests).collect();
    let closes: u64 = stats.iter().map(|s| s.close_responses).sum();
    let conns: u64 = stats.iter().map(|s| s.connections).sum();
    let mut failure_counts: BTreeMap<Failure, usize> = BTreeMap::new();
    for s in &stats {
        for (kind, _) in &s.failures {
            *failure_counts.entry(*kind).or_default() += 1;
        }
    }
    println!(
        "load: {total} requests on {conns} connections by {CLIENTS} clients; \
         {closes} Connection: close responses; exit after {exit_took:?}; \
         requests per client: {per_client:?}; failures: {failure_counts:?}"
    );

    server.assert_exit_code(status, 0);
    assert!(exit_took < Duration::from_secs(3), "exit took {exit_took:?} after SIGINT");
    let failures: Vec<String> = stats
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.failures.iter().map(move |(k, m)| format!("client {i}: {k:?}: {m}")))
        .collect();
    assert!(failures.is_empty(), "{} failures other than a refused connect:\n{}", failures.len(), failures.join("\n"));
    assert!(stats.iter().all(|s| !s.stopped_by_deadline), "some clients only stopped at the test deadline");
    assert!(stats.iter().all(|s| s.refused), "every client must end on a refused connect");
    assert!(per_client.iter().all(|&n| n > 0), "every client must have been served: {per_client:?}");
}
