//! The firmware workload of the allocator comparison: one build per allocator (see [`peer`]),
//! run on QEMU's `mps2-an386` board by `cargo xtask bench --only firmware`, which also takes the
//! code size of each build. It prints one `name value` line per figure:
//! - `blocks SIZE COUNT`: how many blocks of SIZE bytes (aligned to 8) a fresh heap over 64 KiB
//!   serves before it refuses one; 64 KiB over COUNT is the RAM each live block costs;
//! - `largest_fresh BYTES`: the largest block a fresh heap over 64 KiB serves;
//! - `largest_fragmented BYTES`: the largest block it serves after being filled with 64-byte
//!   blocks of which every other one was freed;
//!
//! after a run of `Vec`, `BTreeMap` and `String` through the global allocator, so that every
//! build holds the code a program's collections call. A failed check exits 1.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../collections.rs"]
mod collections;
#[path = "../report.rs"]
mod report;

mod peer;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

use cortex_m_rt::entry;

use collections::Collections;
use report::{fail, say};

/// Bytes of the region each measurement's fresh heap gets.
const MEASURE_BYTES: usize = 64 * 1024;

static mut MEASURE: peer::Region<MEASURE_BYTES> = peer::Region([0; MEASURE_BYTES]);

/// The request sizes whose RAM per live block is measured.
const SIZES: [usize; 3] = [16, 64, 200];

#[entry]
fn main() -> ! {
    peer::init_global();
    say(format_args!("peer {}", peer::NAME));
    collections();
    for size in SIZES {
        let count = with_fresh_heap(|heap| fill(heap, size).len());
        say(format_args!("blocks {size} {count}"));
    }
    let fresh = with_fresh_heap(largest);
    say(format_args!("largest_fresh {fresh}"));
    let fragmented = with_fresh_heap(|heap| {
        let blocks = fill(heap, 64);
        for &block in blocks.iter().step_by(2) {
            // SAFETY: a live block of `heap` with this layout, freed once.
            unsafe { GlobalAlloc::dealloc(heap, block, layout(64)) };
        }
        largest(heap)
    });
    say(format_args!("largest_fragmented {fragmented}"));
    say(format_args!("done"));
    report::exit(true)
}

/// The same collections as the test firmware's, through the global allocator.
fn collections() {
    if !Collections::build().intact() {
        fail("collections", format_args!("wrong contents"));
    }
}

fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, 8) {
        Ok(layout) => layout,
        Err(_) => fail("layout", format_args!("{size} bytes at 8")),
    }
}

/// Runs `measure` on a fresh heap over [`MEASURE`], which is the heap's alone meanwhile.
fn with_fresh_heap<R>(measure: impl FnOnce(&peer::Heap) -> R) -> R {
    // SAFETY: measurements run one at a time, and each heap is gone before the next is made.
    let heap = unsafe { peer::over(&raw mut MEASURE as *mut u8, MEASURE_BYTES) };
    measure(&heap)
}

/// Allocates blocks of `size` bytes until `heap` refuses one; returns them, live.
fn fill(heap: &peer::Heap, size: usize) -> Vec<*mut u8> {
    let mut blocks = Vec::new();
    loop {
        // SAFETY: the layout is not zero-sized.
        let block = unsafe { GlobalAlloc::alloc(heap, layout(size)) };
        if block.is_null() {
            return blocks;
        }
        if blocks.len() >= MEASURE_BYTES / 8 {
            fail("fill", format_args!("more blocks of {size} bytes than 64 KiB can hold"));
        }
        blocks.push(block);
    }
}

/// The largest block `heap` serves now, to 8 bytes, by bisection; each block is freed again.
fn largest(heap: &peer::Heap) -> usize {
    let serves = |size: usize| {
        // SAFETY: the layout is not zero-sized.
        let block = unsafe { GlobalAlloc::alloc(heap, layout(size)) };
        if block.is_null() {
            return false;
        }
        // SAFETY: a live block of `heap` with this layout, freed once.
        unsafe { GlobalAlloc::dealloc(heap, block, layout(size)) };
        true
    };
    let (mut low, mut high) = (0, MEASURE_BYTES + 8);
    while high - low > 8 {
        let mid = (low + high) / 2 / 8 * 8;
        if mid > low && serves(mid) {
            low = mid;
        } else {
            high = mid.max(low + 8);
        }
    }
    low
}
