//! Drives one real connection (`quiesce::harness::MemoryConnection`, served by `App`) with a
//! script of client actions and checks what the server wrote. The interpreter and its checks
//! are in `script.rs`, which the differential driver (tools/differential/) shares; the input
//! layout is in README.md.

#![no_main]

use libfuzzer_sys::fuzz_target;

include!("script.rs");

fuzz_target!(|data: &[u8]| run(data, &mut |_| {}));
