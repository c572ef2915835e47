//! [`Router`]: dispatch by path pattern and method, above [`Handler`]. The path lookup is the
//! `matchit` crate's radix tree (what axum routes with); what this module adds is HTTP's rules
//! around it: HEAD served by the GET route, `OPTIONS` and `405` with the `Allow` they need, `404`
//! for a path no route has, `501` for a method no route serves.
//!
//! Every pattern goes into one matchit router that only checks it (syntax, conflicts); the
//! lookup uses three tables that together answer as that router would:
//!
//! - static patterns (no parameter), grouped by length: the common request (`GET /plaintext`)
//!   costs an index by its path's length, a comparison of the few patterns of that length (eight
//!   bytes at a time, without a call to `memcmp`), and an index by method into its route's
//!   handlers. A static route can only match its own path, and matchit prefers it there;
//! - the tree, with the patterns that have parameters;
//! - a catch-all at the root (`/{*path}`), tried last: matchit refuses a parameter beside it,
//!   so it is what matchit falls back to when nothing else matches.
//!
//! Keeping the static routes and the root catch-all out of the tree also spares it the
//! backtracking that a static or catch-all sibling of a parameter causes, which is where
//! matchit allocates (a `Vec` of the wildcards it skipped). Path parameters are copied to the
//! stack (up to [`INLINE_PARAMS`]). So nothing is allocated on the way to a handler, except by
//! matchit when a path runs into a static part of the tree before it matches a parameter or a
//! catch-all below the root (`/files/{*path}` beside `/files/x/{id}`, say).
//!
//! Answers the router makes itself go through [`Router::answer`] alone.

use std::fmt;

use crate::handler::{Handler, IntoReply, Reply};
use crate::http::request::Request;
use crate::http::response::Response;

/// A route's handler: any closure of the handler's shape, `Send` because a server's handler
/// moves to the server's thread.
type Endpoint = Box<dyn FnMut(&Request<'_>, &mut Response) -> Reply + Send>;

/// Path parameters a route may have before their copy for the handler moves to the heap.
const INLINE_PARAMS: usize = 8;

/// The methods of RFC 9110 §9 and PATCH (RFC 5789), in the order `Allow` lists them (OPTIONS
/// last, and always: the router answers it). [`standard_index`] gives the index of each.
const STANDARD: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS"];
const GET: usize = 0;
const HEAD: usize = 1;

/// The index of a standard method in [`STANDARD`]: one comparison with a constant per method
/// tried, GET first.
#[inline(always)]
fn standard_index(method: &str) -> Option<usize> {
    Some(match method {
        "GET" => GET,
        "HEAD" => HEAD,
        "POST" => 2,
        "PUT" => 3,
        "PATCH" => 4,
        "DELETE" => 5,
        "CONNECT" => 6,
        "TRACE" => 7,
        "OPTIONS" => 8,
        _ => return None,
    })
}

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
/// What the router answers itself (each made in one function, so one place decides how they
/// look):
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
    /// Each static pattern (no parameter) and its index in `routes`, sorted by length.
    statics: Vec<(Box<str>, usize)>,
    /// For each length up to the longest static pattern's, where the patterns of that length
    /// are in `statics`.
    statics_by_length: Vec<(usize, usize)>,
    /// Each pattern with parameters (but the root catch-all): its route, its parameters' names.
    paths: matchit::Router<Parameterized>,
    /// The catch-all at the root, `/{*name}`, if any: its route and the parameter's name.
    root_catch_all: Option<(usize, Box<str>)>,
    /// Every pattern, for matchit to check each new one against.
    patterns: matchit::Router<()>,
    routes: Vec<Route>,
    /// Methods other than the standard ones that some route serves (so they are not 501).
    extra_methods: Vec<Box<str>>,
    /// `Allow` for `OPTIONS *`.
    allow_all: String,
}

/// A pattern with parameters, as the tree holds it.
struct Parameterized {
    /// Its index in `Router::routes`.
    route: usize,
    names: Names,
}

/// The names of a pattern's parameters, learnt from its first match: matchit gives a pattern's
/// parameters the same names in the same order at every match (the pattern's own, in order),
/// so from then on each value can be asked for by its name. matchit's iterator checks that each
/// name is UTF-8 again, as it checks each value: a call to `str::from_utf8` for each, which
/// was the costliest part of a lookup with one parameter.
enum Names {
    /// Not matched yet.
    Unknown,
    /// Each name once.
    Known(Box<[Box<str>]>),
    /// A name twice (matchit allows `/{a}/{a}`): asking by name would find the first twice, so
    /// the iterator it is.
    Repeated,
}

impl Names {
    fn learn(params: &matchit::Params<'_, '_>) -> Names {
        let names: Vec<&str> = params.iter().map(|(name, _)| name).collect();
        if names.iter().enumerate().all(|(i, n)| !names[..i].contains(n)) {
            Names::Known(names.into_iter().map(Box::from).collect())
        } else {
            Names::Repeated
        }
    }
}

/// One pattern's handlers.
struct Route {
    pattern: Box<str>,
    /// The standard methods' handlers, by [`standard_index`].
    standard: [Option<Endpoint>; STANDARD.len()],
    /// The other methods' handlers, in registration order.
    extra: Vec<(Box<str>, Endpoint)>,
    /// The `Allow` value for this path.
    allow: String,
}

impl Route {
    fn new(pattern: &str) -> Route {
        Route { pattern: pattern.into(), standard: Default::default(), extra: Vec::new(), allow: String::new() }
    }

    /// The endpoint for `method`: its own, or for HEAD the GET one's.
    #[inline]
    fn endpoint(&mut self, method: &str) -> Option<&mut Endpoint> {
        match standard_index(method) {
            Some(HEAD) if self.standard[HEAD].is_none() => self.standard[GET].as_mut(),
            Some(i) => self.standard[i].as_mut(),
            None => self.extra.iter_mut().find(|(m, _)| **m == *method).map(|(_, endpoint)| endpoint),
        }
    }

    fn serves(&self, method: &str) -> bool {
        match standard_index(method) {
            Some(i) => self.standard[i].is_some(),
            None => self.extra.iter().any(|(m, _)| **m == *method),
        }
    }

    /// The methods routed here, standard ones first.
    fn methods(&self) -> impl Iterator<Item = &str> {
        let standard = STANDARD.iter().zip(&self.standard).filter(|(_, e)| e.is_some()).map(|(m, _)| *m);
        standard.chain(self.extra.iter().map(|(m, _)| &**m))
    }
}

impl Router {
    /// A router with no routes: every request gets 404 (or 501).
    pub fn new() -> Self {
        Router {
            statics: Vec::new(),
            statics_by_length: Vec::new(),
            paths: matchit::Router::new(),
            root_catch_all: None,
            patterns: matchit::Router::new(),
            routes: Vec::new(),
            extra_methods: Vec::new(),
            allow_all: String::from("OPTIONS"),
        }
    }

    /// Routes `GET` (and so `HEAD`) requests for `pattern` to `handler`.
    pub fn get<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> R + Send + 'static,
        R: IntoReply,
    {
        self.on("GET", pattern, handler)
    }

    /// Routes `POST` requests for `pattern` to `handler`.
    pub fn post<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> R + Send + 'static,
        R: IntoReply,
    {
        self.on("POST", pattern, handler)
    }

    /// Routes `PUT` requests for `pattern` to `handler`.
    pub fn put<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> R + Send + 'static,
        R: IntoReply,
    {
        self.on("PUT", pattern, handler)
    }

    /// Routes `PATCH` requests for `pattern` to `handler`.
    pub fn patch<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> R + Send + 'static,
        R: IntoReply,
    {
        self.on("PATCH", pattern, handler)
    }

    /// Routes `DELETE` requests for `pattern` to `handler`.
    pub fn delete<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> R + Send + 'static,
        R: IntoReply,
    {
        self.on("DELETE", pattern, handler)
    }

    /// Routes requests with `method` (case-sensitive, as HTTP methods are) for `pattern` to
    /// `handler`: any method, `HEAD` or `OPTIONS` to answer them otherwise than the router
    /// does, or one of your own (which then is not a 501).
    pub fn on<F, R>(mut self, method: &str, pattern: &str, mut handler: F) -> Self
    where
        F: FnMut(&Request<'_>, &mut Response) -> R + Send + 'static,
        R: IntoReply,
    {
        let handler = move |req: &Request<'_>, res: &mut Response| handler(req, res).into_reply(res);
        assert!(
            !method.is_empty() && method.bytes().all(crate::http::is_tchar),
            "route {method:?} {pattern}: the method is not a token"
        );
        assert!(pattern.starts_with('/'), "route {method} {pattern}: a pattern starts with /");
        let index = match self.routes.iter().position(|r| *r.pattern == *pattern) {
            Some(index) => index,
            None => {
                let index = self.routes.len();
                if let Err(e) = self.patterns.insert(pattern, ()) {
                    panic!("route {method} {pattern}: {e}");
                }
                if let Some(name) = root_catch_all(pattern) {
                    self.root_catch_all = Some((index, name.into()));
                } else if pattern.contains(['{', '}']) {
                    if let Err(e) = self.paths.insert(pattern, Parameterized { route: index, names: Names::Unknown }) {
                        panic!("route {method} {pattern}: {e}");
                    }
                } else {
                    self.add_static(pattern, index);
                }
                self.routes.push(Route::new(pattern));
                index
            }
        };
        let route = &mut self.routes[index];
        assert!(!route.serves(method), "route {method} {pattern} is registered twice");
        match standard_index(method) {
            Some(i) => route.standard[i] = Some(Box::new(handler)),
            None => {
                route.extra.push((method.into(), Box::new(handler)));
                if !self.extra_methods.iter().any(|m| **m == *method) {
                    self.extra_methods.push(method.into());
                }
            }
        }
        route.allow = allow(&self.extra_methods, |m| route.serves(m));
        let routes = &self.routes;
        self.allow_all = allow(&self.extra_methods, |m| routes.iter().any(|r| r.serves(m)));
        self
    }

    /// Puts a static pattern in the table, with the patterns of its length.
    fn add_static(&mut self, pattern: &str, index: usize) {
        let at = self.statics.partition_point(|(p, _)| p.len() <= pattern.len());
        self.statics.insert(at, (pattern.into(), index));
        let longest = self.statics.last().map_or(0, |(p, _)| p.len());
        self.statics_by_length = (0..=longest)
            .map(|len| {
                let start = self.statics.partition_point(|(p, _)| p.len() < len);
                (start, self.statics.partition_point(|(p, _)| p.len() <= len))
            })
            .collect();
    }

    /// The route of the static pattern that is `path`, if any.
    #[inline]
    fn find_static(&self, path: &str) -> Option<usize> {
        let &(start, end) = self.statics_by_length.get(path.len())?;
        let same_length = self.statics.get(start..end)?;
        same_length.iter().find(|(p, _)| same_bytes(p.as_bytes(), path.as_bytes())).map(|&(_, index)| index)
    }

    /// Every answer the router makes itself: `status` (404, 405, 501, or 204 for OPTIONS), the
    /// errors rendered by the server's error hook ([`Response::set_error`]: plain text by
    /// default), and `Allow` when given. One function, so that one place decides how they look.
    fn answer(req: &Request<'_>, res: &mut Response, status: u16, allow: Option<&str>) -> Reply {
        let detail = match status {
            404 => "not found",
            405 => "method not allowed",
            501 => "method not implemented",
            _ => "",
        };
        if detail.is_empty() {
            res.set_status(status);
        } else {
            res.set_error(req, status, detail);
        }
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
            Self::answer(req, res, 501, None)
        } else if method == "OPTIONS" && req.path() == "*" {
            Self::answer(req, res, 204, Some(&self.allow_all))
        } else {
            Self::answer(req, res, 404, None)
        }
    }
}

impl Handler for Router {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) -> Reply {
        let path = req.path();
        match self.find_static(path) {
            Some(index) => dispatch(&mut self.routes[index], &self.extra_methods, req, res),
            None => self.handle_with_parameters(path, req, res),
        }
    }
}

impl Router {
    /// [`Router::handle`] for a path that is no static route's: the tree. Apart, so that the
    /// static path's code stays small (no frame for the parameters, fewer saved registers).
    #[inline(never)]
    fn handle_with_parameters(&mut self, path: &str, req: &Request<'_>, res: &mut Response) -> Reply {
        let Ok(matched) = self.paths.at_mut(path) else {
            return match &self.root_catch_all {
                // At least one byte, as matchit's catch-all.
                Some((index, name)) if path.len() > 1 && path.starts_with('/') => {
                    let params = [(&**name, &path[1..])];
                    dispatch(&mut self.routes[*index], &self.extra_methods, &req.with_params(&params), res)
                }
                _ => self.unmatched(req, res),
            };
        };
        let (tree, found) = (matched.value, &matched.params);
        if let Names::Unknown = tree.names {
            tree.names = Names::learn(found);
        }
        // The parameters, (name, raw value), for `Request::param`: on the stack unless there
        // are many; each value asked for by its name (see `Names`) when the names are known.
        let mut inline = [("", ""); INLINE_PARAMS];
        let spilled: Vec<(&str, &str)>;
        let params = if found.len() <= INLINE_PARAMS {
            let by_name = match &tree.names {
                Names::Known(names) if names.len() == found.len() => by_name(&mut inline, names, found),
                _ => false,
            };
            if !by_name {
                for (slot, param) in inline.iter_mut().zip(found.iter()) {
                    *slot = param;
                }
            }
            &inline[..found.len()]
        } else {
            spilled = found.iter().collect();
            &spilled[..]
        };
        dispatch(&mut self.routes[tree.route], &self.extra_methods, &req.with_params(params), res)
    }
}

/// Fills `slots` with each of `names` and its value in `found`; false if one is not there
/// (matchit gave other names than at the first match, which it does not do).
#[inline]
fn by_name<'n, 'v>(slots: &mut [(&'n str, &'v str)], names: &'n [Box<str>], found: &matchit::Params<'_, 'v>) -> bool {
    for (slot, name) in slots.iter_mut().zip(names) {
        match found.get(name) {
            Some(value) => *slot = (name, value),
            None => return false,
        }
    }
    true
}

/// Runs `route`'s endpoint for the request's method, or answers 204 (OPTIONS), 405 or 501.
#[inline(always)]
fn dispatch(route: &mut Route, extra_methods: &[Box<str>], req: &Request<'_>, res: &mut Response) -> Reply {
    match route.endpoint(req.method()) {
        Some(endpoint) => endpoint(req, res),
        None => no_endpoint(route, extra_methods, req, res),
    }
}

/// The route has no endpoint for `method`: 204 (OPTIONS), 501 (a method nobody serves) or 405.
#[cold]
fn no_endpoint(route: &Route, extra_methods: &[Box<str>], req: &Request<'_>, res: &mut Response) -> Reply {
    let method = req.method();
    if method == "OPTIONS" {
        Router::answer(req, res, 204, Some(&route.allow))
    } else if !is_known(extra_methods, method) {
        Router::answer(req, res, 501, None)
    } else {
        Router::answer(req, res, 405, Some(&route.allow))
    }
}

/// Whether `a` and `b` are the same bytes: eight at a time (the last eight overlapping), or
/// four, with no call to `memcmp`, which costs more than the comparison of a short path.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
        s.get(at..at + N).and_then(|w| w.try_into().ok())
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n <= 8 {
        return word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4);
    }
    let mut at = 0;
    while at + 8 < n {
        if word::<8>(a, at) != word::<8>(b, at) {
            return false;
        }
        at += 8;
    }
    word::<8>(a, n - 8) == word::<8>(b, n - 8)
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.routes.iter().flat_map(|r| r.methods().map(move |m| format!("{m} {}", r.pattern)));
        f.debug_struct("Router").field("routes", &routes.collect::<Vec<_>>()).finish()
    }
}

/// The parameter's name if `pattern` is a catch-all at the root, `/{*name}`.
fn root_catch_all(pattern: &str) -> Option<&str> {
    let name = pattern.strip_prefix("/{*")?.strip_suffix('}')?;
    (!name.contains(['{', '}'])).then_some(name)
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
    use crate::http::request::Version;

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
    fn a_root_catch_all_is_the_last_resort() {
        let mut r = Router::new()
            .get("/{*rest}", echo("any"))
            .get("/users/{id}", echo("user"))
            .get("/users/me", echo("me"))
            .get("/x{a}", echo("x"))
            .post("/files/{*path}", echo("files"));
        check(&mut r, "GET", "/users/1", 200, "user:id=1");
        check(&mut r, "GET", "/users/me", 200, "me:");
        check(&mut r, "GET", "/users/1/2", 200, "any:rest=users/1/2");
        check(&mut r, "GET", "/users/", 200, "any:rest=users/");
        check(&mut r, "GET", "/xy", 200, "x:a=y");
        check(&mut r, "GET", "/x", 200, "any:rest=x");
        check(&mut r, "GET", "//", 200, "any:rest=/");
        check(&mut r, "GET", "/files/a", 405, "method not allowed\n");
        check(&mut r, "GET", "/", 404, "not found\n");
        check(&mut r, "GET", "*", 404, "not found\n");
        assert_eq!(call(&mut r, "DELETE", "/anything").header("allow"), Some("GET, HEAD, OPTIONS"));
        // matchit's rules still hold: a parameter beside the root catch-all is a conflict.
        assert!(
            std::panic::catch_unwind(|| Router::new().get("/{*rest}", echo("a")).get("/{b}/x", echo("b"))).is_err()
        );
        assert!(std::panic::catch_unwind(|| Router::new().get("/{b}", echo("b")).get("/{*rest}", echo("a"))).is_err());
        assert_eq!(root_catch_all("/{*a}"), Some("a"));
        for not in ["/{a}", "/x/{*a}", "/{*a}/b", "/{*a}{b}", "/{{*a}}"] {
            assert_eq!(root_catch_all(not), None, "{not}");
        }
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
    fn parameters_by_name_after_the_first_match() {
        // Twice each: the first match learns the names, the second asks by them.
        let mut r = table().get("/{{x}}/{id}/{{{y}}}", echo("braces")).get("/twice/{a}/{a}", echo("twice"));
        for _ in 0..2 {
            check(&mut r, "GET", "/users/7/posts/9", 200, "post:id=7,post=9");
            check(&mut r, "GET", "/img/cat.png", 200, "png:name=cat");
            check(&mut r, "GET", "/1/2/3/4/5/6/7/8/9/10", 200, "ten:a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10");
            // matchit's names, whatever they are: `{y}}}` is one called `y}`.
            check(&mut r, "GET", "/{x}/1/{2}", 200, "braces:id=1,y}=2}");
            // A name twice (matchit allows it): each value, in order.
            check(&mut r, "GET", "/twice/1/2", 200, "twice:a=1,a=2");
        }
    }

    #[test]
    fn same_bytes_agrees_with_eq() {
        let samples: Vec<Vec<u8>> = (0..40).map(|n| (0..n).map(|i| b'a' + (i % 26) as u8).collect()).collect();
        for a in &samples {
            for b in &samples {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
            // One byte changed, anywhere.
            for i in 0..a.len() {
                let mut c = a.clone();
                c[i] ^= 0x20;
                assert!(!same_bytes(a, &c), "{a:?} {c:?}");
            }
        }
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
