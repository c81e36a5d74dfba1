//! A firmware-style program: no standard library, no `main`, a static arena, and the spin-locked
//! core pool as the global allocator behind `alloc::vec::Vec`. `cargo xtask no-std` builds it for
//! `thumbv7em-none-eabihf` to prove the core crate runs where there is no operating system.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::panic::PanicInfo;

use melon_alloc_core::{LockedPool, RegionSource};

const ARENA_BYTES: usize = 64 * 1024;

static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

#[global_allocator]
// SAFETY: nothing but the pool ever touches `ARENA`.
static POOL: LockedPool<RegionSource> =
    LockedPool::new(unsafe { RegionSource::new(&raw mut ARENA as *mut u8, ARENA_BYTES) }, None);

/// The reset entry point: builds a vector in the pool and checks the pool afterwards.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let mut samples: Vec<u32> = Vec::new();
    for reading in 0..1000 {
        samples.push(reading * 3);
    }
    let sum: u32 = samples.iter().sum();
    drop(samples);
    let healthy = POOL.check().is_ok() && sum == 1_498_500;
    loop {
        core::hint::black_box(healthy);
    }
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}
