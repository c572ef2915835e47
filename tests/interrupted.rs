//! A loop whose wait is interrupted again and again (a signal with a handler, as a profiler's
//! timer sends; a stop and continue) still reaches its deadlines: the time spent waiting counts.
//! In a file of its own: the handler it installs is the test process's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use quiesce::{Outcome, Reply, Request, Response, Server, ServerConfig};

/// Longer than any run of this test on a slow machine; the idle timeout is much shorter.
const BOUND: Duration = Duration::from_secs(20);

#[test]
fn an_idle_timeout_fires_while_signals_keep_interrupting_the_wait() {
    // The handler only counts: each delivery ends the loop's epoll_wait with EINTR.
    let delivered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&delivered);
    // SAFETY: the action is one atomic add, which is async-signal-safe.
    let id = unsafe {
        signal_hook::low_level::register(libc::SIGUSR1, move || {
            count.fetch_add(1, Ordering::Relaxed);
        })
    }
    .expect("a SIGUSR1 handler");

    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = Server::bind(config, |_: &Request<'_>, res: &mut Response| {
        res.set_body("ok");
        Reply::Now
    })
    .expect("bind");
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let loop_thread = thread::spawn(move || server.run());
    let target = loop_thread.as_pthread_t();

    // Interrupts the loop's thread every 20 ms, far more often than its 300 ms deadline.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupter = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the loop's thread is alive until `stop` is set (joined after).
                unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer, then (the connection idle) the close the idle timeout makes.
    let closed = loop {
        match client.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    let during = delivered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    interrupter.join().unwrap();
    handle.graceful();
    let outcome = loop_thread.join().unwrap().expect("run");
    signal_hook::low_level::unregister(id);

    assert!(String::from_utf8_lossy(&got).ends_with("\r\n\r\nok"), "{:?}", String::from_utf8_lossy(&got));
    assert!(closed, "the idle connection was never closed while its wait kept being interrupted");
    // The interruptions did happen while the connection waited (more than one per deadline).
    assert!(during > 2, "only {during} signals were delivered");
    assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
}
