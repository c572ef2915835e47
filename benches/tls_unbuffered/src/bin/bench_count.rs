//! The same loop with a counting global allocator (allocations per round).
#[path = "../harness.rs"]
mod harness;

#[global_allocator]
static A: harness::CountingAlloc = harness::CountingAlloc;

fn main() {
    harness::main_with(true);
}
