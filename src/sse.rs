//! Server-Sent Events (the `text/event-stream` format of the WHATWG HTML standard, "Server-sent
//! events") for handlers that answer with a [`Stream`](crate::Stream): the response head, events
//! with `id`, `event`, `retry` and `data` fields, comments as keep-alives, the client's
//! `Last-Event-ID`, and a random spread of reconnection times for the drain.
//!
//! Everything writes into a caller's `Vec<u8>`: a producer that reuses one buffer allocates
//! nothing per event.
//!
//! A stream that can resume after a restart needs three things, all here:
//!
//! - an `id:` on every event ([`Event::id`], [`Event::id_number`]): the browser keeps the last
//!   one and sends it back as `Last-Event-ID` when it reconnects;
//! - the server reading it ([`last_event_id`]) and continuing after that event;
//! - a `retry:` ([`write_retry`], [`Event::retry`]): how long the client waits before it
//!   reconnects (browsers wait about 3 s when told nothing). At a drain, a last event with a
//!   different `retry` for each client ([`RetrySpread`]) spreads their return to the next
//!   process over a window instead of one wave.
//!
//! ```
//! use std::time::Duration;
//! use quiesce::sse::{self, Event};
//!
//! let mut out = Vec::new();
//! sse::write_retry(&mut out, Duration::from_secs(3));
//! Event::new().id_number(7).data("first line\nsecond").write_to(&mut out).unwrap();
//! out.extend_from_slice(sse::KEEP_ALIVE);
//! assert_eq!(
//!     out,
//!     b"retry: 3000\n\nid: 7\ndata: first line\ndata: second\n\n: keep-alive\n\n"
//! );
//! ```
//!
//! **Line breaks in `id` and `event` are refused**, not cleaned: an event is a block of
//! `field: value` lines, so a line break inside a value would start another field (a client
//! could be sent a `retry:` or an event of its choosing through an id it supplied). Quietly
//! replacing it would change the id, and a client would then resume from an id the server never
//! gave; [`Event::write_to`] says [`InvalidEvent`] and writes nothing. An id may not contain NUL
//! either (browsers ignore such an id). Data may hold any text: each of its lines (split at
//! `\n`, `\r\n` or `\r`, as the client splits them) goes out as its own `data:` line, and the
//! client joins them back with `\n`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::response::push_decimal;
use crate::{Request, Response};

/// A comment line, which clients ignore: sent every 15 to 30 s on a quiet stream, it keeps
/// proxies and load balancers from closing the connection as idle, and finds a client that
/// left (the write fails).
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Why an [`Event`] cannot be written: a field that would break the stream's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidEvent {
    /// The id holds a line break (`\r` or `\n`).
    LineBreakInId,
    /// The id holds NUL, which makes clients ignore it.
    NulInId,
    /// The event type holds a line break.
    LineBreakInEventType,
}

impl fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidEvent::LineBreakInId => "an event id may not contain a line break",
            InvalidEvent::NulInId => "an event id may not contain NUL",
            InvalidEvent::LineBreakInEventType => "an event type may not contain a line break",
        })
    }
}

impl std::error::Error for InvalidEvent {}

/// An event's id: text, or a number written in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id<'a> {
    Text(&'a str),
    Number(u64),
}

/// One event, built field by field and written with [`Event::write_to`]. It borrows its text:
/// building one allocates nothing.
///
/// ```
/// use quiesce::sse::Event;
///
/// let mut out = Vec::new();
/// Event::new().event("price").id("a-17").data("42").write_to(&mut out).unwrap();
/// assert_eq!(out, b"id: a-17\nevent: price\ndata: 42\n\n");
///
/// // A line break in an id would start a field of its own: refused, nothing written.
/// let before = out.len();
/// let sneaky = Event::new().id("1\nretry: 1").data("x").write_to(&mut out);
/// assert!(sneaky.is_err());
/// assert_eq!(out.len(), before);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event<'a> {
    id: Option<Id<'a>>,
    event: Option<&'a str>,
    retry: Option<Duration>,
    data: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// An event with no fields yet.
    pub fn new() -> Self {
        Event::default()
    }

    /// Sets the id (`id:`), which the client sends back as `Last-Event-ID` when it reconnects.
    /// An empty id makes the client forget the last one.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(Id::Text(id));
        self
    }

    /// Sets a numeric id, written in decimal.
    pub fn id_number(mut self, id: u64) -> Self {
        self.id = Some(Id::Number(id));
        self
    }

    /// Sets the event type (`event:`); without one the client fires a `message` event.
    pub fn event(mut self, event: &'a str) -> Self {
        self.event = Some(event);
        self
    }

    /// Sets the reconnection time (`retry:`, whole milliseconds): how long the client waits
    /// before it reconnects once the stream ends or breaks.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the data: any text, each line of which becomes a `data:` line. An event without
    /// data updates the client's last id and retry time but fires nothing.
    pub fn data(mut self, data: &'a str) -> Self {
        self.data = Some(data);
        self
    }

    /// Checks the fields that could break the framing.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        if let Some(Id::Text(id)) = self.id {
            if has_line_break(id) {
                return Err(InvalidEvent::LineBreakInId);
            }
            if id.contains('\0') {
                return Err(InvalidEvent::NulInId);
            }
        }
        if self.event.is_some_and(has_line_break) {
            return Err(InvalidEvent::LineBreakInEventType);
        }
        Ok(())
    }

    /// Appends the event to `out`: `retry`, `id`, `event`, then one `data:` line per line of
    /// data, and the blank line that ends it. On error nothing is written.
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), InvalidEvent> {
        self.validate()?;
        if let Some(retry) = self.retry {
            push_retry_field(out, retry);
        }
        match self.id {
            Some(Id::Text(id)) => push_field(out, b"id: ", id),
            Some(Id::Number(id)) => {
                out.extend_from_slice(b"id: ");
                push_decimal(out, id);
                out.push(b'\n');
            }
            None => {}
        }
        if let Some(event) = self.event {
            push_field(out, b"event: ", event);
        }
        if let Some(data) = self.data {
            for line in lines(data) {
                push_field(out, b"data: ", line);
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

/// Appends `retry: <milliseconds>` and a blank line: a block that sets the client's
/// reconnection time and fires no event (send it first, e.g. as the body of the stream's head).
pub fn write_retry(out: &mut Vec<u8>, retry: Duration) {
    push_retry_field(out, retry);
    out.push(b'\n');
}

/// Appends `text` as a comment (`: text`, one comment line per line of text) and a blank line.
/// Clients ignore comments; [`KEEP_ALIVE`] is the usual one.
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    for line in lines(text) {
        push_field(out, b": ", line);
    }
    out.push(b'\n');
}

/// The id of the last event the client received, as it sent it back in `Last-Event-ID` when it
/// reconnected; `None` when it sent none, an empty one, or one that is not UTF-8. Surrounding
/// spaces and tabs are trimmed. It comes from the client: check it (a number, a known token)
/// before trusting it.
pub fn last_event_id<'a>(req: &Request<'a>) -> Option<&'a str> {
    last_event_id_of(req.header("last-event-id")?)
}

/// [`last_event_id`] from the header's raw value, for a request kept as an
/// [`OwnedRequest`](crate::OwnedRequest): `last_event_id_of(owned.header("last-event-id")?)`.
pub fn last_event_id_of(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    (!value.is_empty()).then_some(value)
}

/// A response head for an event stream, to pass to
/// [`Responder::stream`](crate::Responder::stream): `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache` (no cache may answer with an old stream) and `X-Accel-Buffering:
/// no` (nginx passes each event on at once instead of buffering the response). Its body, if
/// one is written (a [`write_retry`], a first event), is the stream's first piece.
pub fn head() -> Response {
    let mut head = Response::new();
    // Constants that pass the checks: the results can be ignored.
    let _ = head.set_content_type("text/event-stream");
    let _ = head.add_header("Cache-Control", "no-cache");
    let _ = head.add_header("X-Accel-Buffering", "no");
    head
}

/// Random reconnection times in a window, one per client, for the last event of a drain: the
/// clients of a stopping server then come back to the next one spread over the window instead
/// of all at the same moment (browsers wait about 3 s when told nothing).
///
/// A stream opened once the drain began (on a connection made before it: a browser's
/// preconnected socket, a proxy's pooled connection) usually belongs to a client that has just
/// waited out its draw: give it the window's start rather than a second draw, and the clients
/// keep the spread their first wait gave them.
///
/// Each [`RetrySpread::draw`] is uniform over whole milliseconds from the window's start to its
/// end. The generator is xorshift64*, seeded from the clock, the process id and a counter, so
/// two spreads made at the same moment (two threads, two processes) differ. It is cheap and
/// good enough to spread load; it is not for secrets.
///
/// ```
/// use std::time::Duration;
/// use quiesce::sse::{Event, RetrySpread};
///
/// let mut spread = RetrySpread::new(Duration::from_millis(500), Duration::from_secs(3));
/// let retry = spread.draw();
/// assert!((Duration::from_millis(500)..=Duration::from_secs(3)).contains(&retry));
/// let mut out = Vec::new();
/// Event::new().retry(retry).event("shutdown").id_number(41).data("draining").write_to(&mut out).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RetrySpread {
    min_ms: u64,
    /// Milliseconds from `min_ms` to the window's end.
    span_ms: u64,
    state: u64,
}

impl RetrySpread {
    /// A spread over `min..=max` (swapped if `max` is the smaller), freshly seeded.
    pub fn new(min: Duration, max: Duration) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        RetrySpread::with_seed(min, max, seed)
    }

    /// A spread over `min..=max` with a fixed seed: the same seed draws the same times.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        let min_ms = millis(min);
        RetrySpread { min_ms, span_ms: millis(max) - min_ms, state: splitmix64(seed).max(1) }
    }

    /// The window's start: the reconnection time for a stream opened once the drain began.
    pub fn start(&self) -> Duration {
        Duration::from_millis(self.min_ms)
    }

    /// The next reconnection time, in whole milliseconds.
    pub fn draw(&mut self) -> Duration {
        // xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators").
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let random = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // The high bits are the better ones; the modulo's bias is below 2^-32 for any window
        // shorter than 49 days.
        let offset = match self.span_ms.checked_add(1) {
            Some(range) => random.rotate_left(32) % range,
            None => random,
        };
        Duration::from_millis(self.min_ms + offset)
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One step of splitmix64: spreads a seed's bits (a clock reading differs from the next in its
/// low bits only).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn has_line_break(s: &str) -> bool {
    s.bytes().any(|b| b == b'\n' || b == b'\r')
}

/// `name` (with its colon and space), `value`, a line feed.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &str) {
    out.extend_from_slice(name);
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

fn push_retry_field(out: &mut Vec<u8>, retry: Duration) {
    out.extend_from_slice(b"retry: ");
    push_decimal(out, millis(retry));
    out.push(b'\n');
}

/// The lines of `text` as an event stream's client splits them: at `\r\n`, `\n` or `\r`. Text
/// that ends with a line break has an empty last line (the client then gets that break back);
/// empty text is one empty line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\n', '\r']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    /// What a subscriber that comes after `begin` started the drain is answered, and the id
    /// the hub gave before.
    fn late_subscriber(begin: impl FnOnce(&crate::DrainNotice, &Hub)) -> (u64, crate::testing::TestResponse) {
        let drain = crate::DrainNotice::new();
        let hub = Hub::new(&drain);
        let id = hub.next_id();
        begin(&drain, &hub);
        let late = hub.clone();
        let mut client =
            crate::testing::TestClient::new(move |_: &Request<'_>, res: &mut Response| late.subscribe(res));
        (id, client.get("/events"))
    }

    #[test]
    fn a_hub_closed_by_the_drain_answers_a_late_subscriber_with_its_last_event_at_once() {
        let (id, answer) = late_subscriber(|drain, hub| {
            drain.begin();
            assert!(hub.is_empty());
        });
        assert_eq!(answer.header("content-type"), Some("text/event-stream"));
        let text = answer.text();
        // The window's start, not a second draw: the client keeps the spread of its first wait.
        assert_eq!(text, format!("retry: 3000\n\nretry: 500\nid: {id}\nevent: shutdown\ndata: draining\n\n"));
    }

    #[test]
    fn after_a_handover_a_late_subscriber_is_told_to_reconnect_at_once() {
        let (id, answer) = late_subscriber(|drain, _| {
            drain.begin_handover();
            assert!(drain.successor_serving());
        });
        assert_eq!(answer.text(), format!("retry: 3000\n\nretry: 0\nid: {id}\nevent: shutdown\ndata: draining\n\n"));
    }

    fn written(event: Event<'_>) -> String {
        let mut out = Vec::new();
        event.write_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// What a client makes of `stream`, as the WHATWG parser does: each dispatched event's
    /// (type, data, last id), and the last retry time.
    fn parse(stream: &str) -> (Vec<(String, String, String)>, Option<u64>) {
        let (mut events, mut retry) = (Vec::new(), None);
        let (mut kind, mut data, mut id) = (String::new(), String::new(), String::new());
        for line in lines(stream) {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    let kind = if kind.is_empty() { "message".to_owned() } else { std::mem::take(&mut kind) };
                    events.push((kind, std::mem::take(&mut data), id.clone()));
                }
                kind.clear();
                data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "event" => kind = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => id = value.to_owned(),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    retry = value.parse().ok();
                }
                _ => {}
            }
        }
        (events, retry)
    }

    #[test]
    fn fields_in_order_and_numeric_ids() {
        assert_eq!(written(Event::new().data("tick 6").id_number(6)), "id: 6\ndata: tick 6\n\n");
        assert_eq!(
            written(Event::new().data("x").event("shutdown").id("41").retry(Duration::from_millis(1234))),
            "retry: 1234\nid: 41\nevent: shutdown\ndata: x\n\n"
        );
        assert_eq!(written(Event::new().id_number(u64::MAX)), format!("id: {}\n\n", u64::MAX));
        assert_eq!(written(Event::new()), "\n");
    }

    #[test]
    fn data_lines_split_the_way_clients_split_them() {
        let cases = [
            ("", "data: \n\n", ""),
            ("one", "data: one\n\n", "one"),
            ("a\nb", "data: a\ndata: b\n\n", "a\nb"),
            ("a\r\nb", "data: a\ndata: b\n\n", "a\nb"),
            ("a\rb", "data: a\ndata: b\n\n", "a\nb"),
            ("a\n", "data: a\ndata: \n\n", "a\n"),
            ("\r\n\r\n", "data: \ndata: \ndata: \n\n", "\n\n"),
            ("a\n\rb", "data: a\ndata: \ndata: b\n\n", "a\n\nb"),
            (" lead: colon", "data:  lead: colon\n\n", " lead: colon"),
            ("id: 9\n\nretry: 1", "data: id: 9\ndata: \ndata: retry: 1\n\n", "id: 9\n\nretry: 1"),
        ];
        for (data, wire, received) in cases {
            let text = written(Event::new().data(data));
            assert_eq!(text, wire, "{data:?}");
            let (events, retry) = parse(&text);
            assert_eq!(events, [("message".to_owned(), received.to_owned(), String::new())], "{data:?}");
            assert_eq!(retry, None, "data set a retry: {data:?}");
        }
    }

    #[test]
    fn line_breaks_and_nul_in_id_or_event_are_refused_and_nothing_is_written() {
        let mut out = b"kept".to_vec();
        for (event, why) in [
            (Event::new().id("1\nretry: 1").data("x"), InvalidEvent::LineBreakInId),
            (Event::new().id("1\r").data("x"), InvalidEvent::LineBreakInId),
            (Event::new().id("a\0b").data("x"), InvalidEvent::NulInId),
            (Event::new().event("a\r\nb").data("x"), InvalidEvent::LineBreakInEventType),
        ] {
            assert_eq!(event.write_to(&mut out), Err(why));
            assert!(!why.to_string().is_empty());
        }
        assert_eq!(out, b"kept");
        // NUL in the data or the event type frames nothing: allowed.
        assert!(Event::new().event("a\0").data("\0").write_to(&mut out).is_ok());
    }

    #[test]
    fn a_client_reads_back_ids_types_and_retry() {
        let mut out = Vec::new();
        write_retry(&mut out, Duration::from_secs(3));
        Event::new().id_number(1).data("tick 1").write_to(&mut out).unwrap();
        write_comment(&mut out, "keep-alive\nstill here");
        out.extend_from_slice(KEEP_ALIVE);
        let last = Event::new().retry(Duration::from_millis(750)).id_number(1).event("shutdown").data("draining");
        last.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(": keep-alive\n: still here\n\n"), "{text}");
        let (events, retry) = parse(&text);
        let owned = |k: &str, d: &str, i: &str| (k.to_owned(), d.to_owned(), i.to_owned());
        assert_eq!(events, [owned("message", "tick 1", "1"), owned("shutdown", "draining", "1")]);
        assert_eq!(retry, Some(750));
    }

    #[test]
    fn last_event_id_is_trimmed_text() {
        let id = |value: &'static [u8]| {
            let headers = [httparse::Header { name: "Last-Event-ID", value }];
            last_event_id(&Request::new("GET", "/", Version::Http11, &headers, b"")).map(str::to_owned)
        };
        assert_eq!(id(b"5").as_deref(), Some("5"));
        assert_eq!(id(b" \t 5 x\t ").as_deref(), Some("5 x"));
        assert_eq!(id(b"   "), None);
        assert_eq!(id(b""), None);
        assert_eq!(id(b"\xff5"), None);
        assert_eq!(last_event_id(&Request::new("GET", "/", Version::Http11, &[], b"")), None);
        assert_eq!(last_event_id_of("é1".as_bytes()), Some("é1"));
    }

    #[test]
    fn the_head_names_the_stream_and_turns_caches_and_buffering_off() {
        let head = head();
        let mut out = Vec::new();
        head.encode_stream_head(&mut out, b"Thu, 01 Jan 2026 00:00:00 GMT", true, None, None);
        let text = String::from_utf8(out).unwrap();
        for field in ["Content-Type: text/event-stream\r\n", "Cache-Control: no-cache\r\n", "X-Accel-Buffering: no\r\n"]
        {
            assert!(text.contains(field), "{text}");
        }
    }

    #[test]
    fn a_spread_stays_in_its_window_and_covers_it() {
        let (min, max) = (Duration::from_millis(500), Duration::from_millis(3000));
        let mut spread = RetrySpread::with_seed(min, max, 1);
        let mut buckets = [0u32; 25];
        for _ in 0..25_000 {
            let retry = spread.draw();
            assert!((min..=max).contains(&retry), "{retry:?}");
            buckets[((retry.as_millis() - 500) / 100).min(24) as usize] += 1;
        }
        // Uniform: about 1,000 a bucket.
        assert!(buckets.iter().all(|&n| (800..1200).contains(&n)), "{buckets:?}");
        // The same seed, the same times; fresh spreads differ.
        let mut again = RetrySpread::with_seed(min, max, 1);
        let mut first = RetrySpread::with_seed(min, max, 1);
        assert!((0..10).all(|_| again.draw() == first.draw()));
        let fresh: Vec<Duration> = (0..8).map(|_| RetrySpread::new(min, max).draw()).collect();
        assert!(fresh.iter().any(|&d| d != fresh[0]), "{fresh:?}");
        // A window of one value, a reversed one, the widest one.
        assert_eq!(RetrySpread::with_seed(max, max, 7).draw(), max);
        assert!((min..=max).contains(&RetrySpread::with_seed(max, min, 7).draw()));
        let _ = RetrySpread::with_seed(Duration::ZERO, Duration::MAX, 7).draw();
    }
}

/// Every open stream of one feed, for a producer that sends each event to all of them (a chat,
/// a live dashboard), and their end at the drain. Cheap to clone: the clones share the streams.
///
/// - [`Hub::subscribe`] answers a request with a stream of the feed (the head from [`head`], a
///   `retry:` of 3 s first), from a handler;
/// - [`Hub::send`] writes an event to every stream with [`Stream::try_send`](crate::Stream::try_send)
///   (never waiting on a slow client: one whose buffer is full misses the event) and forgets the
///   streams whose client left; [`Hub::next_id`] numbers events so clients can resume;
/// - when the drain begins ([`Hub::new`] takes the server's [`DrainNotice`](crate::DrainNotice)),
///   every stream gets a last event, `event: shutdown` with the last id and a `retry:` drawn
///   from 0.5–3 s ([`RetrySpread`]), and ends cleanly, so the drain does not wait for them; a
///   request to subscribe after that gets that last event at once, with `retry: 500` (its
///   client has most likely just waited out its draw), or `retry: 0` when a successor serves
///   ([`DrainNotice::successor_serving`](crate::DrainNotice::successor_serving)).
///
/// ```no_run
/// use quiesce::sse::{Event, Hub};
/// use quiesce::{Router, Server, ServerConfig};
///
/// let server = Server::bind_with(ServerConfig::default(), |handles| {
///     let hub = Hub::new(&handles.drain);
///     let feed = hub.clone();
///     Router::new()
///         .get("/events", move |_, res| hub.subscribe(res))
///         .post("/send", move |req, res| {
///             let _ = feed.send(&Event::new().id_number(feed.next_id()).data(req.body_text()?));
///             res.set_status(204);
///             Ok(())
///         })
/// });
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: std::sync::Arc<std::sync::Mutex<HubState>>,
}

struct HubState {
    streams: Vec<crate::Stream>,
    /// The last id [`Hub::next_id`] gave.
    last_id: u64,
    /// Once closed (the streams were ended, new ones end at once): the retry a new stream is
    /// told. The window's start, as its client has most likely just waited out its draw (see
    /// `RetrySpread`); none when a successor serves (it came on a connection a restart kept).
    closed: Option<Duration>,
    spread: RetrySpread,
    /// Reused for each event written.
    buffer: Vec<u8>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Hub").field("streams", &state.streams.len()).field("closed", &state.closed.is_some()).finish()
    }
}

impl Hub {
    /// A hub whose streams end when `drain` begins.
    pub fn new(drain: &crate::DrainNotice) -> Hub {
        let hub = Hub {
            inner: std::sync::Arc::new(std::sync::Mutex::new(HubState {
                streams: Vec::new(),
                last_id: 0,
                closed: None,
                spread: RetrySpread::new(Duration::from_millis(500), Duration::from_secs(3)),
                buffer: Vec::new(),
            })),
        };
        let (closing, notice) = (hub.clone(), drain.clone());
        drain.on_drain(move || {
            closing.close_with(notice.successor_serving().then_some(Duration::ZERO));
        });
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers the request with a stream of this feed (a handler's last call: it returns what
    /// the handler returns). After the drain began, the last event at once instead.
    pub fn subscribe(&self, res: &mut Response) -> crate::Reply {
        let mut state = self.lock();
        let mut head = head();
        write_retry(head.body_mut(), Duration::from_secs(3));
        if let Some(retry) = state.closed {
            write_shutdown(head.body_mut(), retry, state.last_id);
            *res = head;
            return crate::Reply::Now;
        }
        if let Ok(stream) = res.defer().stream(head) {
            state.streams.push(stream);
        }
        crate::Reply::Later
    }

    /// The next event id: 1, 2, …
    pub fn next_id(&self) -> u64 {
        let mut state = self.lock();
        state.last_id += 1;
        state.last_id
    }

    /// Writes `event` to every open stream; returns how many took it. A stream whose client
    /// left is forgotten; one whose buffer is full misses this event.
    pub fn send(&self, event: &Event<'_>) -> Result<usize, InvalidEvent> {
        let mut state = self.lock();
        let HubState { streams, buffer, .. } = &mut *state;
        buffer.clear();
        event.write_to(buffer)?;
        let mut took = 0;
        streams.retain_mut(|stream| match stream.try_send(buffer) {
            Ok(()) => {
                took += 1;
                true
            }
            Err(crate::TrySendError::Gone) => false,
            Err(_) => true,
        });
        Ok(took)
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.lock().streams.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every stream with the last event; later subscribers get it at once.
    pub fn close(&self) {
        self.close_with(None);
    }

    /// [`Hub::close`], telling later subscribers `late` (when `None`: what they were told
    /// already, or the window's start).
    fn close_with(&self, late: Option<Duration>) {
        let mut state = self.lock();
        let start = state.spread.start();
        state.closed = Some(late.or(state.closed).unwrap_or(start));
        let HubState { streams, buffer, spread, last_id, .. } = &mut *state;
        for mut stream in std::mem::take(streams) {
            buffer.clear();
            write_shutdown(buffer, spread.draw(), *last_id);
            let _ = stream.try_send(buffer);
            let _ = stream.finish();
        }
    }
}

/// Writes the last event of a stream at the drain, as [`Hub`] and the binary's `/events` send
/// it: `retry: R` (come back after `retry`), `id: L` (resume after `last`), `event: shutdown`,
/// `data: draining`.
pub fn write_shutdown(out: &mut Vec<u8>, retry: Duration, last: u64) {
    // A numeric id and a fixed type are always valid.
    let _ = Event::new().retry(retry).id_number(last).event("shutdown").data("draining").write_to(out);
}
