//! The built-in routes of the `quiesce` binary, as a library [`Handler`] so they can be embedded
//! and tested like any other:
//!
//! - `GET|HEAD /healthz`: `200 ok`, or `503 draining` from the first shutdown signal on
//!   (through the drain delay, so load balancers stop sending traffic).
//! - `POST /echo`: the request body back, with the request's `Content-Type`.
//! - `GET|HEAD /plaintext`: `Hello, World!` (the body benchmark suites expect).
//! - `GET|HEAD /metrics`: the server's counters in the Prometheus text format (when the app was
//!   given a [`Registry`] with [`App::with_metrics`]; otherwise the hello route).
//! - `GET|HEAD /work?ms=N` (with [`App::with_pool`]): N ms of blocking work (`&spin=1`: CPU work)
//!   on a [`BlockingPool`] (the library's: [`BlockingPool::spawn`]): `worked N ms`; 503 with
//!   `Retry-After` when the pool's queue is full.
//! - `GET|HEAD /events?every=1s&n=N` (with [`App::with_events`]): Server-Sent Events
//!   (`text/event-stream`), a `retry:` first, then one `id: K` / `data: tick K` event per
//!   interval from one [`events::Ticker`] for every stream; `n` events, or until the drain,
//!   which sends a spread `retry:`, the last id and `event: shutdown`, and ends the stream
//!   cleanly. `Last-Event-ID: K` resumes: the next event is tick K + 1 (see [`events`]).
//! - `GET|HEAD` anything else: `Hello, "<path>"` exactly as the Go program quiesce descends from
//!   writes it (`fmt.Fprintf(w, "Hello, %q", html.EscapeString(r.URL.Path))`), after the
//!   configured delay; `?delay=DURATION` overrides it, capped by the maximum.
//! - `OPTIONS` on any of them: `204` with `Allow`; `OPTIONS *`: `204` with every method served.
//!
//! Every body is `text/plain; charset=utf-8` (the [`Response`] default) unless said otherwise.
//!
//! The routes are a [`Router`]'s, which answers what none of them does: a standard method a
//! route does not serve gets `405` with `Allow`; a method that is not one of RFC 9110's (or
//! PATCH) gets `501` (RFC 9110 §9.1); HEAD runs the GET route.

pub mod events;
mod hello;
pub mod work;

use std::time::Duration;

use crate::metrics::Registry;
use crate::{BlockingPool, Handler, Reply, Request, Response, Router, sse};
use events::Ticker;

/// Settings of the built-in routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppConfig {
    /// How long the hello route waits before answering. Default 0.
    pub delay: Duration,
    /// Cap on the delay a request may ask for with `?delay=`. Default 60 s.
    pub max_delay: Duration,
}

impl AppConfig {
    /// The defaults, as a constant.
    pub const DEFAULT: AppConfig = AppConfig { delay: Duration::ZERO, max_delay: Duration::from_secs(60) };
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig::DEFAULT
    }
}

/// The built-in routes, on a [`Router`].
#[derive(Debug)]
pub struct App {
    config: AppConfig,
    router: Router,
}

impl Default for App {
    fn default() -> Self {
        App::new(AppConfig::DEFAULT)
    }
}

impl App {
    /// The routes with these settings.
    pub fn new(config: AppConfig) -> Self {
        let hello = hello_route(config);
        let router = Router::new()
            .get("/healthz", healthz)
            .post("/echo", echo)
            .get("/plaintext", |_, res| {
                res.set_body("Hello, World!");
                Reply::Now
            })
            .get("/json", |_, res| {
                // The shape the common HTTP benchmark suites use: a fixed object, served as JSON.
                res.set_body(r#"{"message":"Hello, World!"}"#).set_header("Content-Type", "application/json");
                Reply::Now
            })
            // Anything else (a catch-all needs at least one byte, so "/" is a route of its own).
            .get("/", hello.clone())
            .get("/{*path}", hello);
        App { config, router }
    }

    /// Serves `registry` at `/metrics`.
    pub fn with_metrics(self, registry: Registry) -> Self {
        self.route("/metrics", move |req, res| serve_metrics(&registry, req, res))
    }

    /// Serves `/work` on `pool` (without one, `/work` is the hello route).
    pub fn with_pool(self, pool: BlockingPool) -> Self {
        let config = self.config;
        self.route("/work", move |req, res| work(&config, &pool, req, res))
    }

    /// Serves `/events` from `ticker` (without one, `/events` is the hello route).
    pub fn with_events(self, ticker: Ticker) -> Self {
        let config = self.config;
        self.route("/events", move |req, res| events(&config, &ticker, req, res))
    }

    /// Adds a GET route (which takes the path from the hello route).
    fn route<F>(mut self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        self.router = std::mem::take(&mut self.router).get(pattern, handler);
        self
    }
}

fn work(config: &AppConfig, pool: &BlockingPool, req: &Request<'_>, res: &mut Response) -> Reply {
    let ms = match req.query_param("ms").as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(_)) => return bad_request(res, "invalid ms: expected a number of milliseconds\n"),
    };
    let duration = Duration::from_millis(ms).min(config.max_delay);
    let spin = req.query_param("spin").is_some_and(|v| v == "1");
    pool.spawn(res, move || work::run(duration, spin))
}

fn events(config: &AppConfig, ticker: &Ticker, req: &Request<'_>, res: &mut Response) -> Reply {
    let every = match req.query_param("every").as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(1),
        Some(Ok(every)) if !every.is_zero() => every.min(config.max_delay.max(Duration::from_millis(1))),
        Some(_) => return bad_request(res, "invalid every: expected a duration like 250ms, 1s or 2m\n"),
    };
    let n = match req.query_param("n").as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => return bad_request(res, "invalid n: expected a number of events, at least 1\n"),
    };
    // A client that reconnects resumes after the last id it got; any other id starts over.
    let after = sse::last_event_id(req).and_then(resume_after).unwrap_or(0);
    let responder = res.defer();
    let mut head = sse::head();
    sse::write_retry(head.body_mut(), ticker.config().retry);
    // A client already gone needs no stream.
    if let Ok(stream) = responder.stream(head) {
        ticker.add(stream, every, n, after);
    }
    Reply::Later
}

fn serve_metrics(registry: &Registry, _req: &Request<'_>, res: &mut Response) -> Reply {
    let mut text = String::with_capacity(4096);
    registry.render(&mut text);
    res.set_body(text).set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    no_store(res);
    Reply::Now
}

fn healthz(req: &Request<'_>, res: &mut Response) -> Reply {
    if req.server_draining() {
        res.set_status(503).set_body("draining");
    } else {
        res.set_body("ok");
    }
    // A cache between a balancer and this server must never answer "ok" for it during a
    // drain: the answer changes without notice.
    no_store(res);
    Reply::Now
}

fn echo(req: &Request<'_>, res: &mut Response) -> Reply {
    let content_type = req.header_str("content-type").unwrap_or("application/octet-stream");
    // An unusable Content-Type falls back to the default (text/plain).
    let _ = res.set_content_type(content_type.to_owned());
    res.set_body(req.body());
    Reply::Now
}

/// The hello route, with a scratch buffer of its own for percent-decoding paths.
fn hello_route(config: AppConfig) -> impl FnMut(&Request<'_>, &mut Response) -> Reply + Clone + Send + 'static {
    let mut scratch = Vec::new();
    move |req, res| hello(&config, &mut scratch, req, res)
}

fn hello(config: &AppConfig, scratch: &mut Vec<u8>, req: &Request<'_>, res: &mut Response) -> Reply {
    let delay = match req.query_param("delay") {
        None => config.delay,
        Some(value) => match humantime::parse_duration(&value) {
            Ok(delay) => delay,
            Err(_) => return bad_request(res, "invalid delay: expected a duration like 250ms, 10s or 2m\n"),
        },
    };
    if hello::write_hello(req.path().as_bytes(), scratch, res.body_mut()).is_err() {
        return bad_request(res, "invalid percent-encoding in the path\n");
    }
    match delay.min(config.max_delay) {
        Duration::ZERO => Reply::Now,
        delay => Reply::After(delay),
    }
}

impl Handler for App {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply {
        self.router.handle(req, res)
    }
}

/// The tick a `Last-Event-ID` names: a decimal number below `u64::MAX` (so the next one has a
/// number too), without sign or spaces.
fn resume_after(id: &str) -> Option<u64> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|&n| n < u64::MAX)
}

/// `Cache-Control: no-store`: the answer is about this moment (health, counters).
fn no_store(res: &mut Response) {
    res.set_header("Cache-Control", "no-store");
}

fn bad_request(res: &mut Response, why: &'static str) -> Reply {
    res.set_status(400).set_body(why);
    Reply::Now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    fn call(app: &mut App, method: &str, target: &str, body: &[u8], draining: bool) -> (Reply, Response) {
        let headers = [httparse::Header { name: "Content-Type", value: b"application/json" }];
        let req = Request::new(method, target, Version::Http11, &headers, body).with_draining(draining);
        let mut res = Response::new();
        let reply = app.handle(&req, &mut res);
        (reply, res)
    }

    #[test]
    fn hello_uses_delay_and_its_cap() {
        let mut app = App::new(AppConfig { delay: Duration::from_millis(250), max_delay: Duration::from_secs(1) });
        let (reply, res) = call(&mut app, "GET", "/a<b>", b"", false);
        assert_eq!(reply, Reply::After(Duration::from_millis(250)));
        assert_eq!(res.body(), br#"Hello, "/a&lt;b&gt;""#);
        let (reply, _) = call(&mut app, "GET", "/?delay=10s", b"", false);
        assert_eq!(reply, Reply::After(Duration::from_secs(1)));
        let (reply, _) = call(&mut app, "GET", "/?delay=0s", b"", false);
        assert_eq!(reply, Reply::Now);
        let (_, res) = call(&mut app, "GET", "/?delay=abc", b"", false);
        assert_eq!(res.status(), 400);
        let (_, res) = call(&mut app, "GET", "/%zz", b"", false);
        assert_eq!(res.status(), 400);
        let (_, res) = call(&mut app, "DELETE", "/x", b"", false);
        assert_eq!(res.status(), 405);
    }

    #[test]
    fn healthz_and_echo() {
        let mut app = App::default();
        assert_eq!(call(&mut app, "GET", "/healthz", b"", false).1.body(), b"ok");
        let (_, res) = call(&mut app, "HEAD", "/healthz", b"", true);
        assert_eq!((res.status(), res.body()), (503, &b"draining"[..]));
        let (_, res) = call(&mut app, "POST", "/echo", b"{}", false);
        assert_eq!((res.status(), res.body()), (200, &b"{}"[..]));
        assert_eq!(call(&mut app, "GET", "/echo", b"", false).1.status(), 405);
        assert_eq!(call(&mut app, "GET", "/plaintext", b"", false).1.body(), b"Hello, World!");
    }

    #[test]
    fn last_event_ids_that_resume() {
        for (id, after) in
            [("5", Some(5)), ("0", Some(0)), ("007", Some(7)), ("18446744073709551614", Some(u64::MAX - 1))]
        {
            assert_eq!(resume_after(id), after, "{id:?}");
        }
        for garbage in ["", "+5", "-1", "5 ", "0x10", "abc", "1.5", "18446744073709551615", "99999999999999999999"] {
            assert_eq!(resume_after(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn options_and_unknown_methods() {
        let mut app = App::default();
        let (_, res) = call(&mut app, "OPTIONS", "*", b"", false);
        assert_eq!(res.status(), 204);
        let (_, res) = call(&mut app, "OPTIONS", "/echo", b"", false);
        assert_eq!(res.status(), 204);
        let (_, res) = call(&mut app, "PUT", "/echo", b"", false);
        assert_eq!(res.status(), 405);
        let (_, res) = call(&mut app, "FOO", "/plaintext", b"", false);
        assert_eq!(res.status(), 501);
        let (_, res) = call(&mut app, "get", "/plaintext", b"", false);
        assert_eq!(res.status(), 501);
    }
}
