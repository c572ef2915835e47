//! Streams that declare their length (`Responder::stream_sized`), over real sockets: sent with
//! `Content-Length` and no chunks on HTTP/1.1 and HTTP/1.0; a piece past the length is refused
//! (nothing of it on the wire, which stays usable); a finish short of it is an error to the
//! producer and a cut the client can see (fewer bytes than it was told, then the close),
//! marked in the access log; the drain waits for a sized stream as for any other.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Client, IO_TIMEOUT, connect, get};
use quiesce::{
    AccessRecord, Ending, Error, Outcome, Reply, Request, Responder, Response, Server, ServerConfig, ShutdownHandle,
    StreamError, TrySendError,
};

/// An access record as kept: target, status, body bytes, ending.
type Record = (String, u16, u64, Ending);

/// A server that defers every request but `/now` and hands the test each responder; it keeps
/// each access record's (target, status, body bytes, ending).
struct Deferring {
    addr: SocketAddr,
    handle: ShutdownHandle,
    responders: Receiver<Responder>,
    records: Arc<Mutex<Vec<Record>>>,
    thread: Option<JoinHandle<Result<Outcome, Error>>>,
}

impl Deferring {
    fn start() -> Deferring {
        let (tx, responders) = mpsc::channel();
        let handler = move |req: &Request<'_>, res: &mut Response| {
            if req.path() == "/now" {
                res.set_body("now");
                return Reply::Now;
            }
            let _ = tx.send(res.defer());
            Reply::Later
        };
        let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), handle_signals: false, ..Default::default() };
        let mut server = Server::bind(config, handler).expect("bind");
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&records);
        server.set_access_log(move |r: &AccessRecord<'_>| {
            sink.lock().unwrap().push((r.target.to_owned(), r.status, r.body_bytes, r.ending));
        });
        let (addr, handle) = (server.local_addr(), server.shutdown_handle());
        let thread = Some(thread::spawn(move || server.run()));
        Deferring { addr, handle, responders, records, thread }
    }

    fn next(&self) -> Responder {
        self.responders.recv_timeout(IO_TIMEOUT).expect("a deferred request")
    }

    /// The access record of `target`, once there (bounded wait).
    fn record(&self, target: &str) -> Record {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(record) = self.records.lock().unwrap().iter().find(|r| r.0 == target) {
                return record.clone();
            }
            assert!(Instant::now() < deadline, "no access record for {target}");
            thread::sleep(Duration::from_millis(2));
        }
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

fn head_with(first: &str) -> Response {
    let mut head = Response::new();
    head.set_content_type("application/octet-stream").unwrap();
    head.set_body(first);
    head
}

#[test]
fn an_exact_length_goes_out_without_chunks_on_http_1_1_and_the_connection_goes_on() {
    let server = Deferring::start();
    let mut client = connect(server.addr);
    client.send(&get("/download")).unwrap();
    let mut stream = server.next().stream_sized(head_with("0123"), 10).expect("a stream");
    stream.send(b"456").unwrap();
    stream.send(b"789").unwrap();
    stream.finish().unwrap();
    let response = client.read_response().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("10"), "{response:?}");
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.header("content-type"), Some("application/octet-stream"));
    assert_eq!(response.text(), "0123456789");
    assert!(!response.is_close());
    client.send(&get("/now")).unwrap();
    assert_eq!(client.read_response().unwrap().text(), "now", "the next request on the same connection");
    assert_eq!(server.record("/download"), ("/download".into(), 200, 10, Ending::Complete));
}

#[test]
fn an_exact_length_goes_out_on_http_1_0_with_a_clean_close_or_keep_alive() {
    let server = Deferring::start();
    // Without keep-alive: the length frames the body, the close after it is a FIN.
    let mut client = connect(server.addr);
    client.send(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    let mut stream = server.next().stream_sized(Response::new(), 5).expect("a stream");
    stream.send(b"hello").unwrap();
    stream.finish().unwrap();
    let response = client.read_response().unwrap();
    assert_eq!((response.header("content-length"), response.text().as_str()), (Some("5"), "hello"));
    assert!(response.is_close(), "{response:?}");
    assert_eq!(client.read_to_eof().expect("a FIN, not a reset"), b"");
    // With keep-alive: an HTTP/1.0 client may reuse the connection, unlike after a stream
    // that only the close ends.
    let mut client = connect(server.addr);
    client.send(b"GET /old-kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let stream = server.next().stream_sized(head_with("abc"), 3).expect("a stream");
    // All of it was in the head: dropping the stream ends it cleanly.
    drop(stream);
    let response = client.read_response().unwrap();
    assert_eq!(response.text(), "abc");
    assert!(response.connection_has("keep-alive"), "{response:?}");
    client.send(b"GET /now HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(client.read_response().unwrap().text(), "now");
    assert_eq!(server.record("/old-kept").3, Ending::Complete);
}

#[test]
fn a_piece_past_the_length_is_refused_and_the_wire_stays_right() {
    let server = Deferring::start();
    let mut client = connect(server.addr);
    client.send(&get("/over")).unwrap();
    let mut stream = server.next().stream_sized(Response::new(), 10).expect("a stream");
    stream.send(b"012345").unwrap();
    assert_eq!(stream.send(b"6789X"), Err(StreamError::TooLong { declared: 10, sent: 6 }));
    assert_eq!(stream.try_send(b"6789X"), Err(TrySendError::TooLong { declared: 10, sent: 6 }));
    // The stream is still open: the rest fits.
    stream.try_send(b"6789").unwrap();
    assert_eq!(stream.send(b"!"), Err(StreamError::TooLong { declared: 10, sent: 10 }));
    stream.send(b"").unwrap();
    stream.finish().unwrap();
    let response = client.read_response().unwrap();
    assert_eq!(response.text(), "0123456789");
    client.send(&get("/now")).unwrap();
    let next = client.read_response().unwrap();
    assert_eq!(next.text(), "now", "no stray byte before the next response");
    assert!(client.buffered().is_empty());
    // A first piece (the head's body) past the length: refused, and the client gets a 500.
    client.send(&get("/first-too-long")).unwrap();
    let refused = server.next().stream_sized(head_with("too long"), 3).map(|_| ());
    assert_eq!(refused, Err(StreamError::TooLong { declared: 3, sent: 0 }));
    let response = client.read_response().unwrap();
    assert_eq!(response.status, 500);
}

/// Reads a sized response that is cut: its head says `length`, the client gets `got` bytes,
/// then the close (a FIN: nothing else is wrong with the connection).
fn assert_cut_short(client: &mut Client, length: usize, got: &[u8]) {
    let head = client.read_head_response().expect("the head");
    assert_eq!(head.header("content-length"), Some(length.to_string().as_str()), "{head:?}");
    let rest = client.read_to_eof().expect("the close");
    assert_eq!(rest, got, "fewer bytes than Content-Length, then the close");
}

#[test]
fn a_finish_short_of_the_length_is_an_error_and_a_cut_the_client_sees() {
    let server = Deferring::start();
    let mut client = connect(server.addr);
    client.send(&get("/short")).unwrap();
    let mut stream = server.next().stream_sized(head_with("abcd"), 10).expect("a stream");
    stream.send(b"ef").unwrap();
    assert_eq!(stream.finish(), Err(StreamError::Short { declared: 10, sent: 6 }));
    assert_cut_short(&mut client, 10, b"abcdef");
    assert_eq!(server.record("/short"), ("/short".into(), 200, 6, Ending::Abandoned));

    // On HTTP/1.0 too, and a stream dropped short is the same cut.
    let mut client = connect(server.addr);
    client.send(b"GET /dropped HTTP/1.0\r\n\r\n").unwrap();
    let mut stream = server.next().stream_sized(Response::new(), 4).expect("a stream");
    stream.send(b"ab").unwrap();
    drop(stream);
    assert_cut_short(&mut client, 4, b"ab");
    assert_eq!(server.record("/dropped").3, Ending::Abandoned);
}

#[test]
fn a_head_request_gets_the_length_and_no_body() {
    let server = Deferring::start();
    let mut client = connect(server.addr);
    client.send(b"HEAD /download HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let stream = server.next().stream_sized(Response::new(), 1234).expect("a stream");
    let response = client.read_head_response().unwrap();
    assert_eq!(response.header("content-length"), Some("1234"));
    assert_eq!(response.header("transfer-encoding"), None);
    assert!(stream.is_closed(), "nothing of the body goes out");
    stream.finish().unwrap();
    client.send(&get("/now")).unwrap();
    assert_eq!(client.read_response().unwrap().text(), "now");
}

#[test]
fn the_drain_waits_for_a_sized_stream_to_finish() {
    let mut server = Deferring::start();
    let mut client = connect(server.addr);
    client.send(&get("/download")).unwrap();
    let mut stream = server.next().stream_sized(head_with("first "), 12).expect("a stream");
    let head = client.read_head_response().unwrap();
    assert_eq!(head.header("content-length"), Some("12"));
    server.handle.graceful();
    let deadline = Instant::now() + IO_TIMEOUT;
    while !stream.is_draining() {
        assert!(Instant::now() < deadline, "the producer never heard of the drain");
        thread::sleep(Duration::from_millis(2));
    }
    assert!(!server.thread.as_ref().unwrap().is_finished(), "the drain did not wait for the stream");
    stream.send(b"second").unwrap();
    stream.finish().unwrap();
    let body = client.read_to_eof().expect("the whole body, then a close");
    assert_eq!(body, b"first second");
    let outcome = server.thread.take().unwrap().join().unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Drained { .. }), "{outcome:?}");
    assert_eq!(server.record("/download").3, Ending::Complete);
}
