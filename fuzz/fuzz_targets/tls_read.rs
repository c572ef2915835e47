//! Fuzzes the TLS read side through `quiesce::harness::tls_read`: arbitrary bytes, cut into
//! arbitrary pieces (each piece's length is its first byte), as what a client sent to an HTTPS
//! server. It must end and never panic; plaintext comes out only after a handshake.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| quiesce::harness::tls_read(data));
