//! Benchmark peer: hyper 1.x HTTP/1.1 over tokio-rustls on a tokio current_thread runtime (one
//! thread), the TLS counterpart of benches/peers/hyper: `GET /plaintext` -> `Hello, World!`,
//! keep-alive; hyper honours `Connection: close`.
//!
//! TLS 1.2 and 1.3 with rustls' default cipher suites and key exchange groups of the provider
//! chosen in Cargo.toml (the same provider as quiesce), ALPN `http/1.1`, and no session
//! resumption at all: no TLS 1.3 tickets (`send_tls13_tickets = 0`), no TLS 1.2 tickets (no
//! ticketer, rustls' default) and no TLS 1.2 session-id cache, so that every connection costs a
//! full handshake (benches/tls.sh measures exactly that).
//!
//! On SIGINT it stops accepting and shuts connections down gracefully
//! (`hyper_util::server::graceful`), then exits.
//!
//! Usage: peer-hyper-tls --addr 127.0.0.1:PORT --cert CERT.pem --key KEY.pem

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
#[cfg(not(feature = "ring"))]
use rustls::crypto::aws_lc_rs::default_provider;
#[cfg(feature = "ring")]
use rustls::crypto::ring::default_provider;
use rustls::server::NoServerSessionStorage;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = if req.uri().path() == "/plaintext" {
        Response::new(Full::new(Bytes::from_static(b"Hello, World!")))
    } else {
        let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    };
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

fn tls_config(cert: &Path, key: &Path) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).expect("open --cert").collect::<Result<_, _>>().expect("parse --cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("read --key");
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption: every connection is a full handshake.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Arc::new(config)
}

async fn serve(addr: SocketAddr, acceptor: TlsAcceptor) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    eprintln!("peer-hyper-tls listening on https://{addr}");
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
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                // The handshake runs in the connection's own task, so a slow one never holds up
                // the accept loop (what a tokio-rustls user writes).
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let conn = http1::Builder::new()
                        .pipeline_flush(true)
                        .serve_connection(TokioIo::new(tls), service_fn(handle));
                    let _ = watcher.watch(conn).await;
                });
            }
            _ = &mut ctrl_c => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

fn main() {
    let usage = "usage: peer-hyper-tls --addr HOST:PORT --cert CERT.pem --key KEY.pem";
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = ([127, 0, 0, 1], 8443).into();
    let (mut cert, mut key) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value ({usage})"));
        match arg.as_str() {
            "--addr" => addr = value().parse().expect("--addr HOST:PORT"),
            "--cert" => cert = Some(PathBuf::from(value())),
            "--key" => key = Some(PathBuf::from(value())),
            other => panic!("unknown argument {other:?} ({usage})"),
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else { panic!("{usage}") };
    let acceptor = TlsAcceptor::from(tls_config(&cert, &key));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    runtime.block_on(serve(addr, acceptor));
}
