//! `/events` streams that resume and spread out, against the real binary on 127.0.0.1: an `id:`
//! on every event, `Last-Event-ID` continuing the count, a `retry:` at the start, and at the
//! drain a `retry:` from the configured window, the last id and `event: shutdown` before a clean
//! end; across a SIGHUP restart a client continues from its last id, nothing lost or repeated.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Quiesce, SIGTERM, connect, get};

/// One event as a client parses it (WHATWG "server-sent events": fields until a blank line).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Event {
    retry: Option<u64>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl Event {
    fn id(&self) -> u64 {
        self.id.as_deref().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("no numeric id: {self:?}"))
    }

    fn is_tick(&self) -> bool {
        self.event.is_none() && self.data.len() == 1 && self.data[0] == format!("tick {}", self.id())
    }

    fn is_shutdown(&self) -> bool {
        self.event.as_deref() == Some("shutdown") && self.data == ["draining"]
    }
}

/// An open `/events` stream, read event by event.
struct EventStream {
    client: Client,
    text: String,
}

impl EventStream {
    /// `GET /events?QUERY`, with `Last-Event-ID` when given; checks the head.
    fn open(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> EventStream {
        let mut client = connect(addr);
        let header = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        client.send(format!("GET /events?{query} HTTP/1.1\r\nHost: a\r\n{header}\r\n").as_bytes()).unwrap();
        let head = client.read_head_response().expect("the stream's head");
        assert_eq!(head.status, 200, "{head:?}");
        assert!(head.is_chunked(), "{head:?}");
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(head.header("cache-control"), Some("no-cache"));
        assert_eq!(head.header("x-accel-buffering"), Some("no"));
        EventStream { client, text: String::new() }
    }

    /// The next event, or `None` once the stream ended cleanly (its last chunk came, with no
    /// half event before it). Panics on a cut stream.
    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse(&block[..end]));
            }
            match self.client.read_chunk() {
                Ok(Some(chunk)) => self.text.push_str(&String::from_utf8(chunk).expect("UTF-8 events")),
                Ok(None) => {
                    assert_eq!(self.text, "", "a half event before the end");
                    return None;
                }
                Err(e) => panic!("the stream was cut: {e} (after {:?})", self.text),
            }
        }
    }

    /// Every event until the clean end.
    fn rest(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event::default();
    for line in block.split('\n') {
        let (name, value) = line.split_once(": ").unwrap_or_else(|| panic!("not a field: {line:?} in {block:?}"));
        match name {
            "retry" => event.retry = Some(value.parse().expect("retry in ms")),
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => event.data.push(value.to_owned()),
            _ => panic!("unknown field {line:?}"),
        }
    }
    event
}

/// The block each stream starts with: the retry alone.
fn retry_only(ms: u64) -> Event {
    Event { retry: Some(ms), ..Event::default() }
}

/// The tick with id `id`.
fn tick(id: u64) -> Event {
    Event { id: Some(id.to_string()), data: vec![format!("tick {id}")], ..Event::default() }
}

#[test]
fn every_event_has_an_id_and_the_stream_starts_with_its_retry() {
    let server = Quiesce::start(&["--sse-retry", "1500ms"]);
    let mut stream = EventStream::open(server.addr(), "every=5ms&n=4", None);
    assert_eq!(stream.rest(), [retry_only(1500), tick(1), tick(2), tick(3), tick(4)]);
    // The connection goes on after a finished stream.
    assert_eq!(stream.client.request(&get("/plaintext")).unwrap().text(), "Hello, World!");
}

#[test]
fn last_event_id_continues_the_count() {
    let server = Quiesce::start(&[]);
    // n counts the events still to send: two after 5 are 6 and 7.
    for id in ["5", " 5\t"] {
        let mut stream = EventStream::open(server.addr(), "every=5ms&n=2", Some(id));
        assert_eq!(stream.rest(), [retry_only(3000), tick(6), tick(7)], "Last-Event-ID {id:?}");
    }
    // Anything but a plain number starts over.
    for garbage in ["abc", "5x", "-1", "+5", "18446744073709551615", "0x10"] {
        let mut stream = EventStream::open(server.addr(), "every=5ms&n=1", Some(garbage));
        assert_eq!(stream.rest(), [retry_only(3000), tick(1)], "Last-Event-ID {garbage:?}");
    }
    let mut invalid_utf8 = connect(server.addr());
    invalid_utf8.send(b"GET /events?every=5ms&n=1 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: \xff9\r\n\r\n").unwrap();
    let response = invalid_utf8.read_response().expect("an answer");
    assert_eq!(response.text(), "retry: 3000\n\nid: 1\ndata: tick 1\n\n");
}

/// Reads `stream` to its end after the drain began: its ticks continue the ids in `ids`, then
/// one shutdown event with a retry and the last id. Returns the retry.
fn drain_end(stream: &mut EventStream, ids: &mut Vec<u64>) -> u64 {
    let mut events = stream.rest();
    let last = events.pop().expect("a last event");
    for event in events {
        assert!(event.is_tick(), "{event:?}");
        ids.push(event.id());
    }
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(*ids, expected, "ticks lost or repeated");
    assert!(last.is_shutdown(), "{last:?}");
    assert_eq!(last.id(), ids.len() as u64, "the shutdown event names the last tick");
    last.retry.expect("a retry in the last event")
}

#[test]
fn the_drain_sends_a_spread_retry_and_the_last_id_then_ends_each_stream_cleanly() {
    let mut server = Quiesce::start(&["--sse-drain-retry", "200ms..900ms"]);
    let mut streams: Vec<(EventStream, Vec<u64>)> = (0..24)
        .map(|_| {
            let mut stream = EventStream::open(server.addr(), "every=20ms", None);
            assert_eq!(stream.next(), Some(retry_only(3000)));
            let first = stream.next().expect("a tick");
            assert_eq!(first, tick(1));
            (stream, vec![1])
        })
        .collect();
    server.signal(SIGTERM);
    let mut retries = Vec::new();
    for (stream, ids) in &mut streams {
        let retry = drain_end(stream, ids);
        assert!((200..=900).contains(&retry), "retry {retry} outside 200ms..900ms");
        retries.push(retry);
        assert!(stream.client.is_closed_within(Duration::from_secs(5)), "closed after the drain's last chunk");
    }
    let distinct: BTreeSet<u64> = retries.iter().copied().collect();
    assert!(distinct.len() > 1, "every stream got the same retry: {retries:?}");
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
}

#[test]
fn a_stream_opened_during_the_drain_ends_at_once_with_the_shortest_retry() {
    let mut server = Quiesce::start(&["--sse-drain-retry", "300ms..3s"]);
    let mut open = EventStream::open(server.addr(), "every=1h", None);
    assert_eq!(open.next(), Some(retry_only(3000)));
    // A browser's preconnected socket, or a proxy's pooled connection: made before the drain,
    // used after it began (within the last call a connection without a request gets).
    let mut preconnected = connect(server.addr());
    common::sync_point(server.addr());
    server.signal(SIGTERM);
    let last = open.next().expect("the drain's last event");
    assert!(last.is_shutdown(), "{last:?}");
    assert_eq!(open.next(), None);
    preconnected.send(b"GET /events HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 12\r\n\r\n").unwrap();
    let response = preconnected.read_response().expect("served during the drain");
    assert!(response.is_close(), "{response:?}");
    assert_eq!(response.text(), "retry: 3000\n\nretry: 300\nid: 12\nevent: shutdown\ndata: draining\n\n");
    let status = server.wait_exit(Duration::from_secs(10));
    server.assert_exit_code(status, 0);
}

/// Sends `sig` to `pid` (not our child).
fn kill(pid: u32, sig: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: plain kill(2); no memory is passed.
    unsafe { libc::kill(pid, sig) };
}

/// Whether `pid` is a live (not zombie) process.
fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Stops the new process of a restart when dropped (it is not our child).
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        kill(self.0, SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_live(self.0) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if is_live(self.0) {
            kill(self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn a_client_resumes_from_its_last_id_across_a_sighup_restart() {
    let mut server = Quiesce::start(&["--sse-drain-retry", "100ms..300ms"]);
    let addr = server.addr();
    let mut stream = EventStream::open(addr, "every=20ms", None);
    assert_eq!(stream.next(), Some(retry_only(3000)));
    let mut ids = Vec::new();
    while ids.len() < 5 {
        let event = stream.next().expect("a tick");
        assert!(event.is_tick(), "{event:?}");
        ids.push(event.id());
    }
    let new_pid = server.sighup_restart(Duration::from_secs(10));
    let _successor = Successor(new_pid);

    // The old process drains: the stream gets its last event and ends.
    let retry = drain_end(&mut stream, &mut ids);
    assert!((100..=300).contains(&retry), "retry {retry}");
    let last = ids.len().to_string();
    drop(stream);
    // Not `wait_exit`: the successor keeps the stderr pipe open.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old process did not exit; logs:\n{}", server.logs_text());
        thread::sleep(Duration::from_millis(10));
    };
    server.assert_exit_code(status, 0);

    // As a browser does: wait the retry, reconnect with the last id.
    thread::sleep(Duration::from_millis(retry));
    let mut resumed = EventStream::open(addr, "every=20ms&n=3", Some(&last));
    let after = ids.len() as u64;
    assert_eq!(resumed.rest(), [retry_only(3000), tick(after + 1), tick(after + 2), tick(after + 3)]);
    // It was the new process that answered.
    let metrics = connect(addr).request(&get("/metrics")).expect("metrics").text();
    assert!(metrics.contains(&format!("pid=\"{new_pid}\"")), "{metrics}");
}
