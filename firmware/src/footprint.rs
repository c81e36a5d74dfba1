//! The code size of a firmware's global allocator: a program that only builds and drops the
//! collections of [`collections`] through its global allocator, built once per allocator of the
//! comparison (see `compare/peer.rs`). `cargo xtask bench --only firmware` takes each build's
//! `.text` less that of the build with a bump allocator that never frees: the flash that a
//! firmware which allocates through `alloc`'s collections pays for its allocator, with nothing
//! of the measurements of `compare`, whose extra call sites would make the allocators' code
//! inlined more or less often.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "collections.rs"]
mod collections;
// The fresh heaps of the measurements, and the report of a failed check, are not used here.
#[allow(dead_code, unused_imports)]
#[path = "compare/peer.rs"]
mod peer;
#[allow(dead_code)]
#[path = "report.rs"]
mod report;

use cortex_m_rt::entry;

#[entry]
fn main() -> ! {
    peer::init_global();
    let intact = collections::Collections::build().intact();
    report::say(format_args!("footprint {}", peer::NAME));
    report::exit(intact)
}
