//! [`Router`]: dispatch by path pattern and method, above [`Handler`]. The path lookup is the
//! `matchit` crate's radix tree (what axum routes with); what this module adds is HTTP's rules
//! around it: HEAD served by the GET route, `OPTIONS` and `405` with the `Allow` they need, `404`
//! for a path no route has, `501` for a method no route serves.
//!
//! Static patterns (no parameter) are kept apart from the tree, in a table sorted by length and
//! bytes: the common request (`GET /plaintext`) costs a binary search of a few comparisons, most
//! of them of lengths alone, and a scan of its route's few methods. A static route can only
//! match its own path, and matchit prefers it there, so taking it out of the tree changes no
//! answer; it also spares the tree the backtracking that a static sibling of a parameter
//! causes, which is where matchit allocates (a `Vec` of the wildcards it skipped). Path
//! parameters are copied to the stack (up to [`INLINE_PARAMS`]). So nothing is allocated on the
//! way to a handler, except by matchit when a path runs into a static prefix in the tree before
//! it matches a parameter (`/users/{id}/edit` beside `/users/{id}/e{x}`, say: rare).
//!
//! Answers the router makes itself go through [`Router::answer`] alone.

use std::borrow::Cow;
use std::fmt;

use crate::handler::{Handler, Reply};
use crate::http::request::Request;
use crate::http::response::Response;

/// A route's handler: any closure of the handler's shape, `Send` because a server's handler
/// moves to the server's thread.
type Endpoint = Box<dyn FnMut(&Request<'_>, &mut Response) -> Reply + Send>;

/// Path parameters a route may have before their copy for the handler moves to the heap.
const INLINE_PARAMS: usize = 8;

/// The methods of RFC 9110 §9 and PATCH (RFC 5789), in the order `Allow` lists them (OPTIONS
/// last, and always: the router answers it).
const STANDARD: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS"];

/// Routes requests to handlers by path pattern and method. A [`Handler`] itself, so it is what
/// [`Server::bind`](crate::Server::bind) takes.
///
/// Patterns are `matchit`'s: a static path (`/healthz`), a parameter that takes one segment
/// (`/users/{id}`, also inside a segment: `/files/{name}.txt`), a catch-all at the end that
/// takes the rest, slashes included (`/static/{*path}`; it needs at least one byte, so
/// `/static/` is not matched: add that route too if you serve it). `{{` and `}}` are literal
/// braces. Static segments win over parameters, and parameters over catch-alls, whatever the
/// order of registration. The handler reads parameters with [`Request::param`] (decoded) or
/// [`Request::param_raw`].
///
/// What the router answers itself (each through one function, [`Router::answer`]):
///
/// - `HEAD` on a path with a GET route and no HEAD route: the GET route's handler, whose
///   response goes out without its body (the server drops it; the handler sees `HEAD`);
/// - `OPTIONS` on a path with no OPTIONS route: `204` with `Allow`; `OPTIONS *`: `204` with
///   every method some route serves;
/// - a path that matches but a method that does not: `405` with `Allow` (the path's methods,
///   HEAD with GET, and OPTIONS);
/// - no route for the path: `404`;
/// - a method that is neither one of RFC 9110's (or PATCH) nor served by any route: `501`
///   (RFC 9110 §9.1).
///
/// ```
/// use quiesce::{Reply, Router, Server, ServerConfig};
///
/// let router = Router::new()
///     .get("/", |_, res| {
///         res.set_body("home\n");
///         Reply::Now
///     })
///     .get("/users/{id}", |req, res| {
///         match req.param("id").and_then(|id| id.parse::<u64>().ok()) {
///             Some(id) => res.set_body(format!("user {id}\n")),
///             None => res.set_status(400).set_body("bad id\n"),
///         };
///         Reply::Now
///     })
///     .delete("/users/{id}", |_, res| {
///         res.set_status(204);
///         Reply::Now
///     })
///     .get("/files/{*path}", |req, res| {
///         res.set_body(format!("file {}\n", req.param("path").unwrap_or_default()));
///         Reply::Now
///     });
/// let config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
/// let server = Server::bind(config, router).expect("bind");
/// # drop(server);
/// ```
///
/// Route handlers are `FnMut` and `Send` (a server takes its handler to its own thread): state
/// a handler keeps for itself (a scratch buffer) lives in its closure; state routes share goes
/// in an `Arc`.
///
/// # Panics
///
/// Registering panics on a pattern `matchit` refuses (not starting with `/`, a parameter with
/// no name, a catch-all not at the end, two patterns that overlap such as `/{a}` and `/{b}`), on
/// a method that is not a token, and on the same method and pattern twice: routes are the
/// program's own, so a mistake in them stops it at start-up rather than serve a wrong table.
pub struct Router {
    /// Each static pattern (no parameter) and its index in `routes`, sorted by
    /// [`static_order`].
    statics: Vec<(Box<str>, usize)>,
    /// Each pattern with parameters to its index in `routes`.
    paths: matchit::Router<usize>,
    routes: Vec<Route>,
    /// Methods other than the standard ones that some route serves (so they are not 501).
    extra_methods: Vec<Box<str>>,
    /// `Allow` for `OPTIONS *`.
    allow_all: String,
}

/// One pattern's handlers.
struct Route {
    pattern: Box<str>,
    /// Registration order; a route has a few.
    endpoints: Vec<(Cow<'static, str>, Endpoint)>,
    /// The `Allow` value for this path.
    allow: String,
}

impl Route {
    /// The endpoint for `method`: its own, or for HEAD the GET one's.
    #[inline]
    fn endpoint(&mut self, method: &str) -> Option<&mut Endpoint> {
        let mut i = self.endpoints.iter().position(|(m, _)| m == method);
        if i.is_none() && method == "HEAD" {
            i = self.endpoints.iter().position(|(m, _)| m == "GET");
        }
        Some(&mut self.endpoints[i?].1)
    }

    fn serves(&self, method: &str) -> bool {
        self.endpoints.iter().any(|(m, _)| m == method)
    }
}

impl Router {
    /// A router with no routes: every request gets 404 (or 501).
    pub fn new() -> Self {
        Router {
            statics: Vec::new(),
            paths: matchit::Router::new(),
            routes: Vec::new(),
            extra_methods: Vec::new(),
            allow_all: String::from("OPTIONS"),
        }
    }

    /// Routes `GET` (and so `HEAD`) requests for `pattern` to `handler`.
    pub fn get<F>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        self.on("GET", pattern, handler)
    }

    /// Routes `POST` requests for `pattern` to `handler`.
    pub fn post<F>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        self.on("POST", pattern, handler)
    }

    /// Routes `PUT` requests for `pattern` to `handler`.
    pub fn put<F>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        self.on("PUT", pattern, handler)
    }

    /// Routes `PATCH` requests for `pattern` to `handler`.
    pub fn patch<F>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        self.on("PATCH", pattern, handler)
    }

    /// Routes `DELETE` requests for `pattern` to `handler`.
    pub fn delete<F>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        self.on("DELETE", pattern, handler)
    }

    /// Routes requests with `method` (case-sensitive, as HTTP methods are) for `pattern` to
    /// `handler`: any method, `HEAD` or `OPTIONS` to answer them otherwise than the router
    /// does, or one of your own (which then is not a 501).
    pub fn on<F>(mut self, method: &str, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static,
    {
        assert!(
            !method.is_empty() && method.bytes().all(crate::http::is_tchar),
            "route {method:?} {pattern}: the method is not a token"
        );
        assert!(pattern.starts_with('/'), "route {method} {pattern}: a pattern starts with /");
        let method: Cow<'static, str> = match STANDARD.iter().find(|m| **m == method) {
            Some(standard) => Cow::Borrowed(standard),
            None => Cow::Owned(method.to_owned()),
        };
        let index = match self.routes.iter().position(|r| *r.pattern == *pattern) {
            Some(index) => index,
            None => {
                let index = self.routes.len();
                if pattern.contains(['{', '}']) {
                    if let Err(e) = self.paths.insert(pattern, index) {
                        panic!("route {method} {pattern}: {e}");
                    }
                } else {
                    let at = self.statics.binary_search_by(|(p, _)| static_order(p, pattern)).unwrap_or_else(|at| at);
                    self.statics.insert(at, (pattern.into(), index));
                }
                self.routes.push(Route { pattern: pattern.into(), endpoints: Vec::new(), allow: String::new() });
                index
            }
        };
        let route = &mut self.routes[index];
        assert!(!route.serves(&method), "route {method} {pattern} is registered twice");
        if !STANDARD.contains(&&*method) && !self.extra_methods.iter().any(|m| **m == *method) {
            self.extra_methods.push(method.as_ref().into());
        }
        route.endpoints.push((method, Box::new(handler)));
        route.allow = allow(&self.extra_methods, |m| route.serves(m));
        let routes = &self.routes;
        self.allow_all = allow(&self.extra_methods, |m| routes.iter().any(|r| r.serves(m)));
        self
    }

    /// Every answer the router makes itself: `status` (404, 405, 501, or 204 for OPTIONS) with a
    /// short plain-text body, and `Allow` when given. One function, so that one place decides
    /// how they look.
    fn answer(res: &mut Response, status: u16, allow: Option<&str>) -> Reply {
        res.set_status(status);
        let body: &str = match status {
            404 => "not found\n",
            405 => "method not allowed\n",
            501 => "method not implemented\n",
            _ => "",
        };
        res.set_body(body);
        if let Some(allow) = allow {
            res.set_header("Allow", allow.to_owned());
        }
        Reply::Now
    }

    /// No route has the path: 404, 501 for a method nobody serves, and `OPTIONS *`.
    #[cold]
    fn unmatched(&self, req: &Request<'_>, res: &mut Response) -> Reply {
        let method = req.method();
        if !is_known(&self.extra_methods, method) {
            Self::answer(res, 501, None)
        } else if method == "OPTIONS" && req.path() == "*" {
            Self::answer(res, 204, Some(&self.allow_all))
        } else {
            Self::answer(res, 404, None)
        }
    }
}

impl Handler for Router {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply {
        let path = req.path();
        if let Ok(i) = self.statics.binary_search_by(|(p, _)| static_order(p, path)) {
            let index = self.statics[i].1;
            return dispatch(&mut self.routes[index], &self.extra_methods, req, res);
        }
        let Ok(matched) = self.paths.at(path) else {
            return self.unmatched(req, res);
        };
        // The parameters, (name, raw value), for `Request::param`: on the stack unless there
        // are many.
        let mut inline = [("", ""); INLINE_PARAMS];
        let spilled: Vec<(&str, &str)>;
        let params = if matched.params.len() <= INLINE_PARAMS {
            for (slot, param) in inline.iter_mut().zip(matched.params.iter()) {
                *slot = param;
            }
            &inline[..matched.params.len()]
        } else {
            spilled = matched.params.iter().collect();
            &spilled[..]
        };
        dispatch(&mut self.routes[*matched.value], &self.extra_methods, &req.with_params(params), res)
    }
}

/// Runs `route`'s endpoint for the request's method, or answers 204 (OPTIONS), 405 or 501.
#[inline]
fn dispatch(route: &mut Route, extra_methods: &[Box<str>], req: &Request<'_>, res: &mut Response) -> Reply {
    let method = req.method();
    match route.endpoint(method) {
        Some(endpoint) => endpoint(req, res),
        None if method == "OPTIONS" => Router::answer(res, 204, Some(&route.allow)),
        None if !is_known(extra_methods, method) => Router::answer(res, 501, None),
        None => Router::answer(res, 405, Some(&route.allow)),
    }
}

/// The order of the static table: by length, then by bytes, so that most comparisons of a
/// lookup are of lengths alone.
#[inline]
fn static_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes =
            self.routes.iter().flat_map(|r| r.endpoints.iter().map(move |(m, _)| format!("{m} {}", r.pattern)));
        f.debug_struct("Router").field("routes", &routes.collect::<Vec<_>>()).finish()
    }
}

/// Whether some route could serve `method`: a standard method, or one a route was given.
fn is_known(extra: &[Box<str>], method: &str) -> bool {
    STANDARD.contains(&method) || extra.iter().any(|m| **m == *method)
}

/// The `Allow` value for the methods `serves` says yes to: the standard ones in `STANDARD`'s
/// order (HEAD with GET), then the others in registration order, then OPTIONS.
fn allow(extra: &[Box<str>], serves: impl Fn(&str) -> bool) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for m in &STANDARD[..STANDARD.len() - 1] {
        if serves(m) || (*m == "HEAD" && serves("GET")) {
            methods.push(m);
        }
    }
    methods.extend(extra.iter().map(|m| &**m).filter(|m| serves(m)));
    methods.push("OPTIONS");
    methods.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    /// A handler that answers `name` and the request's parameters, `name:k=v,k=v`.
    fn echo(
        name: impl fmt::Display + Send + 'static,
    ) -> impl FnMut(&Request<'_>, &mut Response) -> Reply + Send + 'static {
        move |req, res| {
            let params: Vec<String> = req.params().map(|(k, v)| format!("{k}={v}")).collect();
            res.set_body(format!("{name}:{}", params.join(",")));
            Reply::Now
        }
    }

    fn call(router: &mut Router, method: &str, target: &str) -> Response {
        let req = Request::new(method, target, Version::Http11, &[], b"");
        let mut res = Response::new();
        assert_eq!(router.handle(&req, &mut res), Reply::Now, "{method} {target}");
        res
    }

    #[track_caller]
    fn check(router: &mut Router, method: &str, target: &str, status: u16, body: &str) {
        let res = call(router, method, target);
        assert_eq!((res.status(), String::from_utf8_lossy(res.body()).as_ref()), (status, body), "{method} {target}");
    }

    fn table() -> Router {
        Router::new()
            .get("/", echo("root"))
            .get("/users", echo("users"))
            .get("/users/{id}", echo("user"))
            .delete("/users/{id}", echo("delete user"))
            .get("/users/{id}/posts/{post}", echo("post"))
            .get("/users/me", echo("me"))
            .get("/files/{*rest}", echo("files"))
            .get("/img/{name}.png", echo("png"))
            .post("/echo", echo("echo"))
            .get("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}", echo("ten"))
    }

    #[test]
    fn static_parameters_and_catch_all() {
        let mut r = table();
        check(&mut r, "GET", "/", 200, "root:");
        check(&mut r, "GET", "/users", 200, "users:");
        check(&mut r, "GET", "/users/42", 200, "user:id=42");
        check(&mut r, "GET", "/users/42?x=1", 200, "user:id=42");
        check(&mut r, "GET", "/users/me", 200, "me:");
        check(&mut r, "GET", "/users/7/posts/9", 200, "post:id=7,post=9");
        check(&mut r, "GET", "/files/a/b/c.txt", 200, "files:rest=a/b/c.txt");
        check(&mut r, "GET", "/img/cat.png", 200, "png:name=cat");
        check(&mut r, "DELETE", "/users/42", 200, "delete user:id=42");
        check(&mut r, "GET", "http://example.com/users/5", 200, "user:id=5");
        // More parameters than fit on the stack.
        check(&mut r, "GET", "/1/2/3/4/5/6/7/8/9/10", 200, "ten:a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10");
    }

    #[test]
    fn many_static_routes_and_escaped_braces() {
        let mut r = Router::new().get("/{{a}}", echo("braces")).get("/{x}/y", echo("param"));
        let names: Vec<String> =
            (0..60).map(|i| format!("/{}{}", ["a", "b", "ab", "ba", "abc"][i % 5], "x".repeat(i / 5))).collect();
        for name in &names {
            r = r.post(name, echo(name.clone()));
        }
        for name in &names {
            check(&mut r, "POST", name, 200, &format!("{name}:"));
            check(&mut r, "POST", &format!("{name}z"), 404, "not found\n");
        }
        check(&mut r, "GET", "/{a}", 200, "braces:");
        check(&mut r, "GET", "/a/y", 200, "param:x=a");
    }

    #[test]
    fn not_found() {
        let mut r = table();
        for target in ["/nope", "/users/", "/users/1/posts", "/files/", "/img/cat.jpg", "/echo/x", "*"] {
            check(&mut r, "GET", target, 404, "not found\n");
        }
        let res = call(&mut r, "GET", "/nope");
        assert_eq!(res.header("allow"), None);
    }

    #[test]
    fn method_not_allowed_lists_the_path_s_methods() {
        let mut r = table();
        let res = call(&mut r, "POST", "/users/1");
        assert_eq!((res.status(), res.body()), (405, &b"method not allowed\n"[..]));
        assert_eq!(res.header("allow"), Some("GET, HEAD, DELETE, OPTIONS"));
        let res = call(&mut r, "GET", "/echo");
        assert_eq!((res.status(), res.header("allow")), (405, Some("POST, OPTIONS")));
        // HEAD is GET's: a path without GET has no HEAD either.
        assert_eq!(call(&mut r, "HEAD", "/echo").status(), 405);
    }

    #[test]
    fn head_runs_the_get_handler_unless_it_has_its_own() {
        let mut r = table().on("HEAD", "/users", echo("head users"));
        check(&mut r, "HEAD", "/users/3", 200, "user:id=3");
        check(&mut r, "HEAD", "/users", 200, "head users:");
    }

    #[test]
    fn options() {
        let mut r = table();
        let res = call(&mut r, "OPTIONS", "/users/1");
        assert_eq!((res.status(), res.body()), (204, &b""[..]));
        assert_eq!(res.header("allow"), Some("GET, HEAD, DELETE, OPTIONS"));
        let res = call(&mut r, "OPTIONS", "*");
        assert_eq!((res.status(), res.header("allow")), (204, Some("GET, HEAD, POST, DELETE, OPTIONS")));
        assert_eq!(call(&mut r, "OPTIONS", "/nope").status(), 404);
        // An OPTIONS route of its own wins.
        let mut r = table().on("OPTIONS", "/echo", echo("options"));
        check(&mut r, "OPTIONS", "/echo", 200, "options:");
        assert_eq!(call(&mut r, "GET", "/echo").header("allow"), Some("POST, OPTIONS"));
    }

    #[test]
    fn unknown_methods_are_501_unless_routed() {
        let mut r = table();
        for (method, target) in [("FOO", "/users/1"), ("FOO", "/nope"), ("get", "/users/1"), ("PROPFIND", "/")] {
            check(&mut r, method, target, 501, "method not implemented\n");
        }
        // A standard method nobody routes is 405 where the path exists.
        assert_eq!(call(&mut r, "PUT", "/users/1").status(), 405);
        let mut r = table().on("PROPFIND", "/files/{*rest}", echo("dav"));
        check(&mut r, "PROPFIND", "/files/x", 200, "dav:rest=x");
        // Now known: 405 elsewhere, listed in Allow.
        assert_eq!(call(&mut r, "PROPFIND", "/users/1").status(), 405);
        assert_eq!(call(&mut r, "GET", "/files/").status(), 404);
        let res = call(&mut r, "POST", "/files/x");
        assert_eq!(res.header("allow"), Some("GET, HEAD, PROPFIND, OPTIONS"));
        assert_eq!(call(&mut r, "OPTIONS", "*").header("allow"), Some("GET, HEAD, POST, DELETE, PROPFIND, OPTIONS"));
    }

    #[test]
    fn parameters_are_decoded_on_request() {
        let mut r = Router::new().get("/p/{name}", |req, res| {
            let decoded = req.param("name").unwrap_or_default();
            res.set_body(format!("{decoded}|{}", req.param_raw("name").unwrap_or_default()));
            Reply::Now
        });
        check(&mut r, "GET", "/p/a%20b+c", 200, "a b+c|a%20b+c");
        check(&mut r, "GET", "/p/caf%C3%A9", 200, "café|caf%C3%A9");
        check(&mut r, "GET", "/p/%FF%zz", 200, "\u{FFFD}%zz|%FF%zz");
    }

    #[test]
    fn registration_mistakes_panic() {
        let twice = std::panic::catch_unwind(|| Router::new().get("/a", echo("a")).get("/a", echo("b")));
        assert!(twice.is_err());
        let overlap = std::panic::catch_unwind(|| Router::new().get("/{a}", echo("a")).post("/{b}", echo("b")));
        assert!(overlap.is_err());
        let catch_all_inside = std::panic::catch_unwind(|| Router::new().get("/{a}/x/{*b}/c", echo("a")));
        assert!(catch_all_inside.is_err());
        let no_slash = std::panic::catch_unwind(|| Router::new().get("a", echo("a")));
        assert!(no_slash.is_err());
        let bad_method = std::panic::catch_unwind(|| Router::new().on("G T", "/a", echo("a")));
        assert!(bad_method.is_err());
        // The same pattern with another method is one route, not a conflict.
        let mut r = Router::new().get("/{a}", echo("get")).post("/{a}", echo("post"));
        check(&mut r, "POST", "/x", 200, "post:a=x");
    }

    #[test]
    fn an_empty_router_answers_404() {
        let mut r = Router::new();
        check(&mut r, "GET", "/", 404, "not found\n");
        assert_eq!(call(&mut r, "OPTIONS", "*").header("allow"), Some("OPTIONS"));
    }

    #[test]
    fn debug_lists_the_routes() {
        let r = Router::new().get("/a", echo("a")).post("/a", echo("b"));
        assert_eq!(format!("{r:?}"), r#"Router { routes: ["GET /a", "POST /a"] }"#);
    }
}
