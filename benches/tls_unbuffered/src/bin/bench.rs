//! The loop under the system allocator (for callgrind).
#[path = "../harness.rs"]
mod harness;

fn main() {
    harness::main_with(false);
}
