//! Benchmark peer: hyper 1.x HTTP/1.1 on a tokio current_thread runtime (one thread),
//! `GET /plaintext` -> `Hello, World!`, `GET /json` -> `{"message":"Hello, World!"}`,
//! keep-alive; hyper honours `Connection: close`.
//! `GET /work?ms=N` sleeps N ms on tokio's blocking pool (`spawn_blocking`) and answers
//! `worked N ms`: the same work as quiesce's `/work`, done the way a hyper user would.
//! On SIGINT it stops accepting and shuts connections down gracefully
//! (`hyper_util::server::graceful`: idle ones are closed, in-flight ones finish), then exits.
//!
//! Usage: peer-hyper [--addr 127.0.0.1:PORT]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = if req.uri().path() == "/plaintext" {
        Response::new(Full::new(Bytes::from_static(b"Hello, World!")))
    } else if req.uri().path() == "/json" {
        let mut res = Response::new(Full::new(Bytes::from_static(br#"{"message":"Hello, World!"}"#)));
        res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(res);
    } else if req.uri().path() == "/work" {
        let ms: u64 = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("ms=")))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        let worked = tokio::task::spawn_blocking(move || {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            ms
        })
        .await
        .unwrap_or(0);
        Response::new(Full::new(Bytes::from(format!("worked {worked} ms\n"))))
    } else {
        let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    };
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

async fn serve(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    eprintln!("peer-hyper listening on http://{addr}");
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // pipeline_flush: aggregate the writes of pipelined responses (what hyper's own
                // TechEmpower entry enables).
                let conn = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut ctrl_c => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = ([127, 0, 0, 1], 8081).into();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().expect("--addr needs a value").parse().expect("--addr HOST:PORT"),
            other => panic!("unknown argument {other:?} (usage: peer-hyper [--addr HOST:PORT])"),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    runtime.block_on(serve(addr));
}
