//! Server CPU per full TLS 1.3 handshake with rustls' two crypto providers, in memory (no
//! sockets): why quiesce's `tls` feature uses aws-lc-rs. `cargo run --release` here.
use std::sync::Arc;
use std::time::{Duration, Instant};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::crypto::CryptoProvider;

fn cpu() -> Duration {
    let mut ts = libc_ts();
    unsafe { clock_gettime(2, &mut ts) };
    Duration::new(ts.0 as u64, ts.1 as u32)
}
#[repr(C)] struct Ts(i64, i64);
fn libc_ts() -> Ts { Ts(0, 0) }
extern "C" { fn clock_gettime(clk: i32, ts: *mut Ts) -> i32; }


fn main() {
    // The test certificate of tests/tls (ECDSA P-256), from the repository's root or from here.
    let dir = ["tests/tls", "../../tests/tls"].into_iter().find(|d| std::path::Path::new(d).join("a.pem").exists()).expect("run from the repository or benches/tls_provider");
    let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(format!("{dir}/a.pem")).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/a.key")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(format!("{dir}/ca.pem")).unwrap() { roots.add(c.unwrap()).unwrap(); }
    let x25519_aws = CryptoProvider { kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519], ..rustls::crypto::aws_lc_rs::default_provider() };
    let x25519_ring = CryptoProvider { kx_groups: vec![rustls::crypto::ring::kx_group::X25519], ..rustls::crypto::ring::default_provider() };
    for (name, provider) in [
        ("aws-lc-rs (default groups)", rustls::crypto::aws_lc_rs::default_provider()),
        ("aws-lc-rs, X25519", x25519_aws),
        ("ring (default groups)", rustls::crypto::ring::default_provider()),
        ("ring, X25519", x25519_ring),
    ] {
        let provider: Arc<CryptoProvider> = Arc::new(provider);
        let mut sc = rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[&rustls::version::TLS13]).unwrap()
            .with_no_client_auth().with_single_cert(chain.clone(), key.clone_key()).unwrap();
        sc.send_tls13_tickets = 0;
        sc.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let sc = Arc::new(sc);
        let cc = Arc::new(rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[&rustls::version::TLS13]).unwrap()
            .with_root_certificates(roots.clone()).with_no_client_auth());
        let n = 2000;
        let mut server_cpu = Duration::ZERO;
        let mut group = String::new();
        let wall = Instant::now();
        for _ in 0..n {
            let mut c = rustls::ClientConnection::new(cc.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
            let t = cpu();
            let mut s = rustls::ServerConnection::new(sc.clone()).unwrap();
            server_cpu += cpu() - t;
            let mut buf = Vec::new();
            loop {
                buf.clear();
                while c.wants_write() { c.write_tls(&mut buf).unwrap(); }
                if !buf.is_empty() {
                    let t = cpu();
                    let mut rd = &buf[..];
                    while !rd.is_empty() { s.read_tls(&mut rd).unwrap(); s.process_new_packets().unwrap(); }
                    server_cpu += cpu() - t;
                }
                buf.clear();
                let t = cpu();
                while s.wants_write() { s.write_tls(&mut buf).unwrap(); }
                server_cpu += cpu() - t;
                if !buf.is_empty() {
                    let mut rd = &buf[..];
                    while !rd.is_empty() { c.read_tls(&mut rd).unwrap(); c.process_new_packets().unwrap(); }
                }
                if !s.is_handshaking() && !c.is_handshaking() && !c.wants_write() && !s.wants_write() {
                    group = format!("{:?}", s.negotiated_key_exchange_group().map(|g| g.name()));
                    break;
                }
            }
        }
        println!("{name}: server CPU per full TLS 1.3 handshake (ECDSA P-256 certificate, key exchange {group}): {:.1} µs (client and server, wall: {:.1} µs)", server_cpu.as_secs_f64() * 1e6 / n as f64, wall.elapsed().as_secs_f64()*1e6/n as f64);
    }
}
