//! Benchmark floor: what a mio + httparse + slab server costs when it does nothing else. One
//! thread, one `mio::Poll`, connections in a `Slab`; per readable event: read, parse every
//! complete request with httparse, append a fixed response for each (pipelined requests are
//! answered in order), then one write for the batch. Keep-alive; `Connection: close` is honoured
//! (so a close-per-request load opens a connection per request, as with quiesce). No limits, no
//! timers, no drain, no signal handling (SIGINT's default action kills it), no request bodies
//! (a GET server: a body would be read as the next request). `GET /plaintext` and `GET /json`
//! answer as quiesce's do (same fields, a fixed `Date`), anything else is 404. httparse gets 16
//! uninitialised header slots, as in may_minihttp and quiesce (a 17th field: 400 and close).
//!
//! It is the "what if the server did nothing else" reference of benches/compare.sh and
//! benches/concurrent_instructions.sh, not a server to use.
//!
//! Usage: peer-bare [--addr 127.0.0.1:PORT]

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

/// quiesce's /plaintext head field for field ("Server: quiesce" is three bytes longer); the Date
/// is fixed (no clock is read).
const PLAINTEXT: &[u8] = b"HTTP/1.1 200 OK\r\nServer: bare\r\nDate: Mon, 07 Dec 2026 12:00:00 GMT\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\nHello, World!";
const JSON: &[u8] = b"HTTP/1.1 200 OK\r\nServer: bare\r\nDate: Mon, 07 Dec 2026 12:00:00 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"message\":\"Hello, World!\"}";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nServer: bare\r\nDate: Mon, 07 Dec 2026 12:00:00 GMT\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\r\nnot found\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nServer: bare\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed: `input[..filled]`.
    input: Vec<u8>,
    filled: usize,
    /// Responses not yet written: `output[written..]`.
    output: Vec<u8>,
    written: usize,
    /// Close once `output` is written (the client asked, or sent something unparsable).
    close_after: bool,
}

fn main() -> io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:8083".parse().expect("a socket address");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value.parse().expect("--addr HOST:PORT"),
            _ => panic!("unknown argument {arg:?} (usage: peer-bare [--addr HOST:PORT])"),
        }
    }
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("peer-bare listening on http://{addr}");
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                accept(&poll, &listener, &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else { continue };
            if event.is_readable() {
                on_readable(conn);
            }
            if !flush(conn) {
                // Closing the socket takes it out of the epoll set. A key reused within this
                // batch may get the old socket's event: a read that would block, harmless.
                conns.remove(key);
            }
        }
    }
}

fn accept(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll.registry().register(&mut stream, Token(entry.key()), interest).is_ok() {
                    entry.insert(Conn {
                        stream,
                        input: vec![0; 4096],
                        filled: 0,
                        output: Vec::with_capacity(4096),
                        written: 0,
                        close_after: false,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("peer-bare: accept: {e}");
                return;
            }
        }
    }
}

/// Reads what there is and answers every complete request in it (into `output`); an end of
/// input or a read error leaves `close_after` set.
fn on_readable(conn: &mut Conn) {
    let mut eof = false;
    loop {
        if conn.filled == conn.input.len() {
            conn.input.resize(conn.input.len() * 2, 0); // no limits
        }
        match conn.stream.read(&mut conn.input[conn.filled..]) {
            Ok(0) => {
                eof = true; // answer what came before it, then close
                break;
            }
            Ok(n) => {
                conn.filled += n;
                // A short read took all the socket had: the next byte brings a new edge.
                if conn.filled < conn.input.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    let mut start = 0;
    while start < conn.filled && !conn.close_after {
        // Uninitialised, as may_minihttp's: nothing is written before httparse fills it.
        let mut headers = [MaybeUninit::uninit(); 16];
        let mut request = httparse::Request::new(&mut []);
        match request.parse_with_uninit_headers(&conn.input[start..conn.filled], &mut headers) {
            Ok(httparse::Status::Complete(length)) => {
                start += length;
                let close = request
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
                let response = match request.path {
                    Some("/plaintext") => PLAINTEXT,
                    Some("/json") => JSON,
                    _ => NOT_FOUND,
                };
                if close {
                    // The same response with "Connection: close" before the blank line.
                    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 2;
                    conn.output.extend_from_slice(&response[..head_end]);
                    conn.output.extend_from_slice(b"Connection: close\r\n");
                    conn.output.extend_from_slice(&response[head_end..]);
                    conn.close_after = true;
                } else {
                    conn.output.extend_from_slice(response);
                }
            }
            Ok(httparse::Status::Partial) => break,
            Err(_) => {
                conn.output.extend_from_slice(BAD_REQUEST);
                conn.close_after = true;
            }
        }
    }
    conn.input.copy_within(start..conn.filled, 0);
    conn.filled -= start;
    conn.close_after |= eof;
}

/// Writes what is pending, until done or the socket is full. false: close the connection.
fn flush(conn: &mut Conn) -> bool {
    while conn.written < conn.output.len() {
        match conn.stream.write(&conn.output[conn.written..]) {
            Ok(0) => return false,
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    conn.output.clear();
    conn.written = 0;
    !conn.close_after
}
