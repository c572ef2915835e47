//! Answers finished off the loop, over real sockets: a responder sent from another thread, one
//! dropped unsent, one whose client left, one outliving its connection while the slab key is
//! reused; streams with a slow reader, for HEAD and HTTP/1.0; and the drain and the shutdown
//! timeout with replies and streams in flight.
//!
//! The server under test defers every request but `/now` and hands the test the responder
//! (with the request's target) through a channel, so the test decides when and how each answer
//! comes. Everything is bounded: sockets have timeouts, waits have deadlines.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Client, IO_TIMEOUT, connect, get};
use quiesce::{
    Error, Gone, Handler, Outcome, Reply, Request, Responder, Response, Server, ServerConfig, ShutdownHandle,
    StreamError, TrySendError, metrics::Metrics,
};

/// A running server whose deferred requests come out of `requests`.
struct Deferring {
    addr: SocketAddr,
    handle: ShutdownHandle,
    requests: Receiver<(String, Responder)>,
    metrics: std::sync::Arc<Metrics>,
    thread: Option<JoinHandle<Result<Outcome, Error>>>,
}

impl Deferring {
    fn start(config: ServerConfig) -> Deferring {
        let (tx, requests) = mpsc::channel();
        let handler = move |req: &Request<'_>, res: &mut Response| {
            if req.path() == "/now" {
                res.set_body("now");
                return Reply::Now;
            }
            let responder = res.defer();
            let _ = tx.send((req.target().to_owned(), responder));
            Reply::Later
        };
        let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..config };
        let server = Server::bind(config, handler).expect("bind");
        let (addr, handle, metrics) = (server.local_addr(), server.shutdown_handle(), server.metrics());
        let thread = Some(thread::spawn(move || server.run()));
        Deferring { addr, handle, requests, metrics, thread }
    }

    /// The next deferred request (waiting at most a few seconds).
    fn next(&self) -> (String, Responder) {
        self.requests.recv_timeout(IO_TIMEOUT).expect("a deferred request")
    }

    fn outcome(&mut self) -> Outcome {
        let thread = self.thread.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the server did not stop");
            thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("server thread").expect("run")
    }
}

impl Drop for Deferring {
    fn drop(&mut self) {
        self.handle.immediate();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server running `handler` (one that answers by itself, unlike `Deferring`'s).
struct Serving {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: JoinHandle<Result<Outcome, Error>>,
}

fn serve(handler: impl Handler + Send + 'static) -> Serving {
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let server = Server::bind(config, handler).expect("bind");
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    Serving { addr, handle, thread: thread::spawn(move || server.run()) }
}

impl Serving {
    fn stop(self) {
        self.handle.immediate();
        self.thread.join().expect("server thread").expect("run");
    }
}

fn text(body: &str) -> Response {
    let mut response = Response::new();
    response.set_body(body);
    response
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_responder_answers_from_another_thread_and_pipelined_requests_wait_their_turn() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    let mut pipelined = get("/later");
    pipelined.extend_from_slice(&get("/now"));
    client.send(&pipelined).unwrap();
    let (target, responder) = server.next();
    assert_eq!(target, "/later");
    assert!(!responder.is_closed());
    thread::spawn(move || responder.send(text("from a thread"))).join().unwrap().expect("delivered");
    let first = client.read_response().expect("the deferred answer");
    assert_eq!((first.status, first.text()), (200, "from a thread".to_owned()));
    assert!(!first.is_close(), "{first:?}");
    let second = client.read_response().expect("the request behind it");
    assert_eq!(second.text(), "now");
    assert_eq!(server.metrics.drain_report().forced, 0);
}

#[test]
fn a_dropped_responder_answers_500_and_closes() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.send(&get("/forgotten")).unwrap();
    let (_, responder) = server.next();
    drop(responder);
    let response = client.read_response().expect("an answer");
    assert_eq!(response.status, 500);
    assert!(response.is_close());
    assert!(client.is_closed_within(IO_TIMEOUT));
}

#[test]
fn a_responder_hears_that_its_client_left_and_its_send_fails() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.send(&get("/slow")).unwrap();
    let (_, responder) = server.next();
    drop(client);
    eventually("the responder sees its client gone", || responder.is_closed());
    assert_eq!(responder.send(text("too late")), Err(Gone));
}

/// What guards this is one exchange per request: the old responder's exchange closed with its
/// connection, so its send fails before any letter is posted. (The id in each letter guards
/// the rarer case of a letter posted just before that close and delivered after the slot's
/// reuse, which no test here can time; at worst such a letter makes the new connection look at
/// its own exchange and find nothing new.)
#[test]
fn a_stale_responder_never_reaches_the_connection_that_reused_its_slot() {
    let server = Deferring::start(ServerConfig::default());
    let mut first = connect(server.addr);
    first.send(&get("/first")).unwrap();
    let (_, stale) = server.next();
    drop(first);
    eventually("the first connection is gone", || stale.is_closed());
    // The only connection now, so it gets the freed slot (slab key 0) again.
    let mut second = connect(server.addr);
    second.send(&get("/second")).unwrap();
    let (target, fresh) = server.next();
    assert_eq!(target, "/second");
    assert_eq!(stale.send(text("stale")), Err(Gone));
    fresh.send(text("fresh")).expect("delivered");
    let response = second.read_response().expect("its own answer");
    assert_eq!(response.text(), "fresh");
    second.send(&get("/now")).unwrap();
    assert_eq!(second.read_response().expect("the next one").text(), "now");
}

/// Reads the head of a streamed response on `client`.
fn stream_head(client: &mut Client) -> common::Response {
    let head = client.read_head_response().expect("a stream head");
    assert_eq!(head.status, 200, "{head:?}");
    head
}

#[test]
fn a_stream_goes_out_in_chunks_and_finishes_with_the_last_one() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.send(&get("/events")).unwrap();
    let (_, responder) = server.next();
    let mut head = Response::new();
    head.set_content_type("text/event-stream").unwrap();
    head.set_body("data: first\n\n");
    let mut stream = responder.stream(head).expect("a stream");
    let response = stream_head(&mut client);
    assert!(response.is_chunked(), "{response:?}");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("content-length"), None);
    assert_eq!(client.read_chunk().unwrap().as_deref(), Some(&b"data: first\n\n"[..]));
    // Pieces arrive as they are sent, not at the end.
    stream.send(b"data: second\n\n").unwrap();
    assert_eq!(client.read_chunk().unwrap().as_deref(), Some(&b"data: second\n\n"[..]));
    stream.finish().unwrap();
    assert_eq!(client.read_chunk().unwrap(), None, "the last chunk");
    // The connection goes on.
    client.send(&get("/now")).unwrap();
    assert_eq!(client.read_response().unwrap().text(), "now");
}

#[test]
fn a_slow_reader_holds_the_producer_back_and_loses_nothing() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    client.send(&get("/big")).unwrap();
    let (_, responder) = server.next();
    let mut stream = responder.stream(Response::new()).expect("a stream");
    let _ = stream_head(&mut client);
    // The client reads nothing: try_send fills the kernel's socket buffers and ours, then says
    // Full, and stays Full once the kernel takes no more.
    let piece: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mut accepted = 0usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_progress = Instant::now();
    loop {
        match stream.try_send(&piece) {
            Ok(()) => {
                accepted += 1;
                last_progress = Instant::now();
            }
            Err(TrySendError::Full) if last_progress.elapsed() > Duration::from_millis(300) => break,
            Err(TrySendError::Full) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{e} while the client was only slow"),
        }
        assert!(Instant::now() < deadline, "never full");
    }
    let bytes = accepted * piece.len();
    // Whatever the kernel's buffers hold, quiesce holds at most its own two bounds.
    assert!(bytes < 64 * 1024 * 1024, "{bytes} bytes taken from a client that reads nothing");
    // A blocking producer waits now (for 8 MiB more, far beyond what any kernel buffer still
    // takes); it finishes once the client reads.
    const MORE: usize = 2048;
    let producer = thread::spawn(move || {
        for _ in 0..MORE {
            stream.send(&piece).expect("send");
        }
        stream.finish().expect("finish");
    });
    thread::sleep(Duration::from_millis(50));
    assert!(!producer.is_finished(), "the producer was not held back");
    let mut received = Vec::new();
    while let Some(chunk) = client.read_chunk().expect("a chunk") {
        received.extend_from_slice(&chunk);
    }
    producer.join().unwrap();
    assert_eq!(received.len(), bytes + MORE * 4096, "bytes lost or added");
    assert!(received.chunks(4096).all(|c| c.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)));
}

#[test]
fn a_head_request_gets_the_head_only_and_the_stream_is_closed() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.send(b"HEAD /events HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (_, responder) = server.next();
    let mut stream = responder.stream(Response::new()).expect("a stream");
    let head = client.read_head_response().expect("the head");
    assert!(head.is_chunked(), "HEAD shows the framing GET would have: {head:?}");
    eventually("a HEAD stream is closed", || stream.is_closed());
    assert_eq!(stream.send(b"ignored"), Err(StreamError::Gone));
    // Its whole response (the head) went out: finishing succeeds, whenever it comes.
    assert_eq!(stream.finish(), Ok(()));
    // Nothing else came: the next response is the next request's.
    client.send(&get("/now")).unwrap();
    assert_eq!(client.read_response().unwrap().text(), "now");
}

/// An HTTP/1.0 client of `server`, and the stream that answers it.
fn http_1_0_stream(server: &Deferring) -> (Client, quiesce::Stream) {
    let mut client = connect(server.addr);
    client.send(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
    let (_, responder) = server.next();
    (client, responder.stream(Response::new()).expect("a stream"))
}

/// The client's read of the body fails with a reset: a FIN would end it as if whole.
fn assert_ends_with_reset(client: &mut Client) {
    match client.read_to_eof() {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(body) => panic!("a cut HTTP/1.0 stream looked complete: {:?}", String::from_utf8_lossy(&body)),
    }
}

#[test]
fn an_http_1_0_stream_ends_with_the_connection() {
    let server = Deferring::start(ServerConfig::default());
    let (mut client, mut stream) = http_1_0_stream(&server);
    stream.send(b"one ").unwrap();
    stream.send(b"two").unwrap();
    stream.finish().unwrap();
    let head = client.read_head_response().expect("the head");
    assert!(!head.is_chunked() && head.content_length().is_none(), "{head:?}");
    assert!(head.is_close(), "{head:?}");
    assert_eq!(client.read_to_eof().expect("the body, then the end"), b"one two");
}

#[test]
fn a_cut_http_1_0_stream_ends_with_a_reset_not_a_fin() {
    let server = Deferring::start(ServerConfig::default());
    let (mut client, mut stream) = http_1_0_stream(&server);
    stream.send(b"partial").unwrap();
    drop(stream);
    let _ = client.read_head_response().expect("the head");
    assert_ends_with_reset(&mut client);
}

#[test]
fn the_shutdown_timeout_resets_an_http_1_0_stream() {
    let config = ServerConfig { shutdown_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let mut server = Deferring::start(config);
    let (mut client, mut stream) = http_1_0_stream(&server);
    stream.send(b"tick").unwrap();
    let _ = client.read_head_response().expect("the head");
    server.handle.graceful();
    // The producer ignores the drain.
    assert!(matches!(server.outcome(), Outcome::TimedOut { closed: 1 }));
    assert_ends_with_reset(&mut client);
}

#[test]
fn the_drain_waits_for_replies_and_streams_and_tells_producers() {
    let mut server = Deferring::start(ServerConfig::default());
    let mut waiting = connect(server.addr);
    waiting.send(&get("/work")).unwrap();
    let (_, responder) = server.next();
    let mut streaming = connect(server.addr);
    streaming.send(&get("/events")).unwrap();
    let (_, stream_responder) = server.next();
    let mut stream = stream_responder.stream(Response::new()).expect("a stream");
    let _ = stream_head(&mut streaming);

    server.handle.graceful();
    eventually("producers hear the drain", || stream.is_draining() && responder.is_draining());
    // Both are still served: the drain waits for them.
    let producer = thread::spawn(move || {
        stream.send(b"event: shutdown\ndata: bye\n\n").unwrap();
        stream.finish().unwrap();
    });
    responder.send(text("done")).expect("delivered during the drain");
    let answer = waiting.read_response().expect("the deferred answer");
    assert_eq!(answer.text(), "done");
    assert!(answer.is_close(), "the last response of a drain closes: {answer:?}");
    assert_eq!(streaming.read_chunk().unwrap().as_deref(), Some(&b"event: shutdown\ndata: bye\n\n"[..]));
    assert_eq!(streaming.read_chunk().unwrap(), None, "the last chunk");
    producer.join().unwrap();
    assert!(streaming.is_closed_within(IO_TIMEOUT));
    assert!(matches!(server.outcome(), Outcome::Drained { .. }));
    assert_eq!(server.metrics.drain_report().streams_cut, 0);
}

#[test]
fn the_shutdown_timeout_cuts_a_stream_without_its_last_chunk() {
    let config = ServerConfig { shutdown_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let mut server = Deferring::start(config);
    let mut client = connect(server.addr);
    client.send(&get("/endless")).unwrap();
    let (_, responder) = server.next();
    let mut stream = responder.stream(Response::new()).expect("a stream");
    let _ = stream_head(&mut client);
    stream.send(b"tick").unwrap();
    assert_eq!(client.read_chunk().unwrap().as_deref(), Some(&b"tick"[..]));
    server.handle.graceful();
    // The producer ignores the drain.
    assert!(matches!(server.outcome(), Outcome::TimedOut { closed: 1 }));
    match client.read_chunk() {
        Err(e) => assert!(matches!(e.kind(), std::io::ErrorKind::UnexpectedEof), "{e}"),
        Ok(chunk) => panic!("the stream was not cut: {chunk:?}"),
    }
    assert_eq!(stream.send(b"more"), Err(StreamError::Gone));
    let report = server.metrics.drain_report();
    assert_eq!((report.forced, report.streams_cut), (1, 1));
    let mut text = String::new();
    quiesce::metrics::Registry::new(vec![server.metrics.clone()]).render(&mut text);
    assert!(text.contains("\nquiesce_cut_streams_total 1\n"), "{text}");
}

#[test]
fn a_stream_dropped_unfinished_is_cut() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.send(&get("/abandoned")).unwrap();
    let (_, responder) = server.next();
    let mut stream = responder.stream(Response::new()).expect("a stream");
    stream.send(b"partial").unwrap();
    drop(stream);
    let _ = stream_head(&mut client);
    assert_eq!(client.read_chunk().unwrap().as_deref(), Some(&b"partial"[..]));
    assert!(client.read_chunk().is_err(), "a cut stream has no last chunk");
}

#[test]
fn an_answer_given_inside_the_handler_goes_out_at_once() {
    let server = serve(|_: &Request<'_>, res: &mut Response| {
        let responder = res.defer();
        responder.send(text("right away")).expect("bound soon after");
        Reply::Later
    });
    let mut client = connect(server.addr);
    client.stream.write_all(&get("/")).unwrap();
    assert_eq!(client.read_response().unwrap().text(), "right away");
    server.stop();
}

#[test]
fn a_response_deferred_by_its_producer_does_not_travel_to_the_next_request() {
    let server = Deferring::start(ServerConfig::default());
    let mut client = connect(server.addr);
    client.send(&get("/later")).unwrap();
    let (_, responder) = server.next();
    let mut answer = text("first");
    // A responder made from an answer is connected to nothing, and stays so.
    let stray = answer.defer();
    responder.send(answer).expect("delivered");
    assert_eq!(client.read_response().unwrap().text(), "first");
    assert!(stray.is_closed());
    client.send(&get("/now")).unwrap();
    let next = client.read_response().expect("the next request's answer");
    assert_eq!((next.status, next.text()), (200, "now".to_owned()), "{next:?}");
}

#[test]
fn a_handler_may_stream_a_few_pieces_itself_without_waiting_for_itself() {
    // 120 KiB, more than a stream's buffer: on another thread `send` would wait for the loop,
    // which is this thread.
    let server = serve(|_: &Request<'_>, res: &mut Response| {
        let mut stream = res.defer().stream(Response::new()).expect("a stream");
        for piece in [b'a', b'b', b'c'] {
            stream.send(&[piece; 40 * 1024]).expect("queued");
        }
        stream.finish().expect("finished");
        Reply::Later
    });
    let mut client = connect(server.addr);
    client.send(&get("/")).unwrap();
    let _ = stream_head(&mut client);
    let mut body = Vec::new();
    while let Some(chunk) = client.read_chunk().expect("a chunk") {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body.len(), 120 * 1024);
    assert!(body[..40 * 1024].iter().all(|&b| b == b'a') && body[80 * 1024..].iter().all(|&b| b == b'c'));
    server.stop();
}

#[test]
fn an_answer_ready_when_the_client_half_closes_still_goes_out() {
    let server = serve(|_: &Request<'_>, res: &mut Response| {
        res.defer().send(text("ready")).expect("bound soon after");
        Reply::Later
    });
    // The request and the FIN mostly arrive in the same read: the answer, given before the
    // handler returned, must go out as a `Reply::Now` one would.
    for _ in 0..10 {
        let mut client = connect(server.addr);
        client.send(&get("/")).unwrap();
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let response = client.read_response().expect("the answer, though the client half-closed");
        assert_eq!(response.text(), "ready");
    }
    server.stop();
}

#[test]
fn a_producer_waiting_for_room_hears_when_the_server_dies() {
    let (tx, requests) = mpsc::channel();
    let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
    let mut server = Server::bind(config, move |_: &Request<'_>, res: &mut Response| {
        let _ = tx.send(res.defer());
        Reply::Later
    })
    .unwrap();
    let addr = server.local_addr();
    // A bug in the embedder's hook kills the loop at the second connection.
    let mut accepted = 0;
    server.on_state_change(move |change| {
        if change.to == quiesce::ConnState::New {
            accepted += 1;
            assert!(accepted < 2, "a hook that fails");
        }
    });
    let loop_thread = thread::spawn(move || server.run());
    let mut client = connect(addr);
    client.send(&get("/big")).unwrap();
    let responder = requests.recv_timeout(IO_TIMEOUT).expect("a deferred request");
    let (done, outcome) = mpsc::channel();
    // The client reads nothing: the producer ends up waiting for room.
    thread::spawn(move || {
        let mut stream = responder.stream(Response::new()).expect("a stream");
        let piece = vec![b'x'; 16 * 1024];
        let gone = loop {
            if let Err(gone) = stream.send(&piece) {
                break gone;
            }
        };
        let _ = done.send(gone);
    });
    let _second = connect(addr);
    assert!(loop_thread.join().is_err(), "the loop's thread died");
    assert_eq!(outcome.recv_timeout(IO_TIMEOUT), Ok(StreamError::Gone), "the producer still waits for a dead server");
}
