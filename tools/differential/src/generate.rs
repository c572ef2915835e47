//! Scripts from a seed: the fuzz target's input layout (fuzz/README.md, `connection_script`),
//! filled with real HTTP. Script `index` of seed `seed` is the same bytes on every run and
//! every machine (a hand-written xorshift, no platform-dependent randomness).

/// xorshift64*, seeded through splitmix64 so neighbouring indices start far apart.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, index: u64) -> Rng {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_add(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0 ..= n - 1 (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// One of `items`, each as likely as its weight.
    pub fn weighted<'a, T>(&mut self, items: &'a [(usize, T)]) -> &'a T {
        let total: usize = items.iter().map(|(w, _)| w).sum();
        let mut at = self.below(total);
        for (weight, item) in items {
            if at < *weight {
                return item;
            }
            at -= weight;
        }
        &items[items.len() - 1].1
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

const METHODS: &[(usize, &str)] = &[
    (40, "GET"),
    (10, "HEAD"),
    (20, "POST"),
    (4, "OPTIONS"),
    (3, "PUT"),
    (3, "DELETE"),
    (2, "PATCH"),
    (1, "TRACE"),
    (1, "CONNECT"),
    (2, "FOO"),
    (1, "get"),
];

/// The demo's routes (`/metrics`, `/events` and `/work` are the hello route there: they need a
/// registry, a ticker thread or a pool, none of them deterministic), deferred ones (`/later...`,
/// answered by the script's ops), delays, and what the router and the parser refuse.
const TARGETS: &[(usize, &str)] = &[
    (24, "/plaintext"),
    (10, "/json"),
    (20, "/echo"),
    (10, "/healthz"),
    (2, "/metrics"),
    (2, "/events?every=1s&n=2"),
    (2, "/work?ms=5"),
    (14, "/later"),
    (4, "/later/a?b=c"),
    (4, "/"),
    (3, "/nothing/here"),
    (3, "/?delay=1s"),
    (2, "/x?delay=50ms"),
    (2, "/?delay=2m"),
    (1, "/?delay=abc"),
    (1, "/%zz"),
    (1, "/a%20b/%C3%A9"),
    (1, "/a<b>&\"q\""),
    (1, "*"),
    (1, "http://a/plaintext"),
    (1, "plaintext"),
    (1, "/a b"),
    (1, ""),
];

const VERSIONS: &[(usize, &str)] = &[
    (150, "HTTP/1.1"),
    (40, "HTTP/1.0"),
    (1, "HTTP/1.2"),
    (1, "HTTP/2.0"),
    (1, "HTTP/0.9"),
    (1, "http/1.1"),
    (1, "HTTP/1.1 x"),
];

const CONNECTION: &[(usize, &str)] = &[
    (60, ""),
    (10, "close"),
    (15, "keep-alive"),
    (3, "Keep-Alive, foo"),
    (3, "upgrade"),
    (2, "close, keep-alive"),
    (2, "CLOSE"),
    (1, "te"),
];

/// Some extra header lines, each with its line end to come: valid ones,
const EXTRA: &[&str] = &[
    "User-Agent: differential",
    "Accept: */*",
    "Content-Type: application/json",
    "Last-Event-ID: 7",
    "Upgrade: websocket",
    "X-Empty:",
    "X-Spaces:    padded   ",
    "Accept-Encoding: gzip, br",
    "Cookie: a=b; c=d",
    "X-Forwarded-For: 10.0.0.1",
];

/// and ones a server must refuse (or at least think about).
const BAD_EXTRA: &[&str] = &[
    " folded",
    "NoColon",
    "Bad Name: x",
    "X-Nul: a\0b",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: identity",
    "Content-Length: +5",
    "Content-Length: 3, 3",
    "Content-Length: 99999999999999999999",
    "Host: second",
    "Expect: something-else",
];

const BODY_KINDS: &[(usize, Framing)] = &[
    (30, Framing::None),
    (35, Framing::Length),
    (25, Framing::Chunked),
    (5, Framing::LengthShort),
    (5, Framing::LengthLong),
];

#[derive(Clone, Copy)]
enum Framing {
    None,
    Length,
    Chunked,
    /// A Content-Length larger than what follows: the server waits for the rest.
    LengthShort,
    /// A Content-Length smaller than what follows: the rest is read as the next request.
    LengthLong,
}

fn body(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| *rng.pick(b"abcdefghijklmnopqrstuvwxyz0123456789 {}\":,\r\n")).collect()
}

fn body_len(rng: &mut Rng) -> usize {
    {
        let choices = [
            (40, rng.below(40)),
            (30, rng.below(300)),
            (10, 15 + rng.below(4)),
            (10, 4090 + rng.below(12)),
            (10, rng.below(9000)),
        ];
        *rng.weighted(&choices)
    }
}

/// One request, more or less valid.
fn request(rng: &mut Rng, out: &mut Vec<u8>) {
    let eol: &str = if rng.chance(92) { "\r\n" } else { "\n" };
    let method = *rng.weighted(METHODS);
    let mut target = if method == "POST" && rng.chance(60) { "/echo" } else { *rng.weighted(TARGETS) }.to_string();
    if rng.chance(3) {
        // Past 8 KiB (the URI limit) or past the small head limits.
        let len = *rng.pick(&[50, 900, 8_200, 17_000]);
        target = format!("/long/{}", "t".repeat(len));
    } else if rng.chance(5) {
        target.push_str(if target.contains('?') { "&q=" } else { "?q=" });
        target.push_str(&"v".repeat(rng.below(64)));
    }
    let version = *rng.weighted(VERSIONS);
    out.extend_from_slice(format!("{method} {target} {version}{eol}").as_bytes());
    if rng.chance(97) {
        out.extend_from_slice(format!("Host: a{eol}").as_bytes());
    }
    let connection = *rng.weighted(CONNECTION);
    if !connection.is_empty() {
        out.extend_from_slice(format!("Connection: {connection}{eol}").as_bytes());
    }
    let expect = rng.chance(10);
    if expect {
        out.extend_from_slice(format!("Expect: 100-continue{eol}").as_bytes());
    }
    for _ in 0..*rng.weighted(&[(60, 0), (25, 1), (12, 3), (3, 70)]) {
        out.extend_from_slice(rng.pick(EXTRA).as_bytes());
        out.extend_from_slice(eol.as_bytes());
    }
    if rng.chance(4) {
        out.extend_from_slice(rng.pick(BAD_EXTRA).as_bytes());
        out.extend_from_slice(eol.as_bytes());
    }
    if rng.chance(3) {
        // A head past the small (64 B, 1 KiB) or the default (16 KiB) limit.
        let len = *rng.pick(&[60, 1_000, 16_400]);
        out.extend_from_slice(format!("X-Pad: {}{eol}", "p".repeat(len)).as_bytes());
    }
    let framing =
        if method == "POST" || method == "PUT" || rng.chance(10) { *rng.weighted(BODY_KINDS) } else { Framing::None };
    let len = body_len(rng);
    let data = body(rng, len);
    match framing {
        Framing::None => out.extend_from_slice(eol.as_bytes()),
        Framing::Length => {
            out.extend_from_slice(format!("Content-Length: {len}{eol}{eol}").as_bytes());
            out.extend_from_slice(&data);
        }
        Framing::LengthShort => {
            out.extend_from_slice(format!("Content-Length: {}{eol}{eol}", len + 1 + rng.below(100)).as_bytes());
            out.extend_from_slice(&data);
        }
        Framing::LengthLong => {
            let declared = rng.below(len + 1);
            out.extend_from_slice(format!("Content-Length: {declared}{eol}{eol}").as_bytes());
            out.extend_from_slice(&data);
        }
        Framing::Chunked => {
            out.extend_from_slice(format!("Transfer-Encoding: chunked{eol}{eol}").as_bytes());
            chunked(rng, &data, out);
        }
    }
}

/// `data` chunk-encoded, with random chunk sizes, hex case, extensions and trailers; now and
/// then malformed.
fn chunked(rng: &mut Rng, data: &[u8], out: &mut Vec<u8>) {
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.below(rest.len().min(600))).min(rest.len());
        let size = if rng.chance(50) { format!("{n:x}") } else { format!("{n:X}") };
        let zeros = if rng.chance(5) { "00" } else { "" };
        let ext = *rng.weighted(&[(85, ""), (8, ";a=b"), (4, " ; q=\"x\\\"y\""), (3, ";")]);
        out.extend_from_slice(format!("{zeros}{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(match rng.below(20) {
        0 => b"0\r\nTrailer: v\r\n\r\n".as_slice(),
        1 => b"0\r\n".as_slice(),
        2 => b"zz\r\n\r\n".as_slice(),
        3 => b"1\r\nab\r\n0\r\n\r\n".as_slice(),
        _ => b"0\r\n\r\n".as_slice(),
    });
}

/// The client's byte stream: a few requests back to back (pipelined, as far as the ops send
/// them before the answers), now and then garbage, then a few bytes mutated.
fn client_bytes(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let n = *rng.weighted(&[(30, 1), (30, 2), (20, 3), (15, 5), (5, 12)]);
    for _ in 0..n {
        if rng.chance(4) {
            let len = rng.below(40);
            out.extend((0..len).map(|_| rng.byte()));
        }
        if rng.chance(3) {
            out.extend_from_slice(b"\r\n");
        }
        request(rng, &mut out);
    }
    mutate(rng, &mut out, 15);
    out
}

/// In `percent` of the calls, flips, replaces, inserts or removes a few bytes.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, percent: usize) {
    if data.is_empty() || !rng.chance(percent) {
        return;
    }
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(data.len());
        match rng.below(5) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = rng.byte(),
            2 => data[at] = *rng.pick(b"\r\n :;\0\x7f0"),
            3 => data.insert(at, *rng.pick(b"\r\n :;\0a")),
            _ => {
                data.remove(at);
            }
        }
        if data.is_empty() {
            return;
        }
    }
}

/// The ops: sends split the stream at random points (small pieces, bigger ones, the rest),
/// and between them the clock moves, the client stops and resumes reading, ends its side, a
/// drain begins, deferred requests are answered, dropped, streamed, finished or abandoned.
fn ops(rng: &mut Rng, out: &mut Vec<u8>) {
    let n = {
        let choices = [(20, rng.below(4)), (50, rng.below(24)), (25, rng.below(60)), (5, rng.below(256))];
        *rng.weighted(&choices)
    };
    out.push(n as u8);
    for _ in 0..n {
        let op: u8 =
            *rng.weighted(&[(40, 0), (3, 3), (12, 4), (6, 5), (3, 6), (6, 7), (8, 8), (4, 9), (10, 10), (5, 11)]);
        let arg = match op {
            0 => {
                let choices = [(50, rng.below(16) as u8), (30, rng.byte().min(254)), (20, 255)];
                *rng.weighted(&choices)
            }
            4 => {
                let choices = [(70, rng.below(26) as u8), (30, rng.byte())];
                *rng.weighted(&choices)
            }
            5 => {
                let choices = [(40, 0), (30, 255), (30, 1 + rng.below(16) as u8)];
                *rng.weighted(&choices)
            }
            _ => rng.byte(),
        };
        // The opcode is taken mod 12: vary the byte too.
        out.push(op + 12 * rng.below(20) as u8);
        out.push(arg);
    }
}

/// Script `index` of `seed`: usually generated whole; now and then one of `seeds` (the fuzz
/// seeds and corpus) mutated in its ops and its bytes.
pub fn script(seed: u64, index: u64, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng::new(seed, index);
    if !seeds.is_empty() && rng.chance(5) {
        let mut data = rng.pick(seeds).clone();
        mutate(&mut rng, &mut data, 100);
        return data;
    }
    // Mostly the default config; the small limits (8: a 64-byte head) and no access log (32)
    // now and then.
    let flags: u8 = {
        let choices = [(65, 0), (28, rng.byte() & 0x17), (7, rng.byte() & 0x3f)];
        *rng.weighted(&choices)
    };
    let mut out = vec![flags];
    ops(&mut rng, &mut out);
    out.extend_from_slice(&client_bytes(&mut rng));
    out
}
