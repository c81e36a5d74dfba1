//! The firmware workload of the allocator comparison: one build per allocator (see [`peer`]),
//! run on QEMU's `mps2-an386` board by `cargo xtask bench --only firmware` (which takes the code
//! size from `footprint.rs` instead). It prints one `name value` line per figure:
//! - `blocks SIZE COUNT`: how many blocks of SIZE bytes (aligned to 8) a fresh heap over 64 KiB
//!   serves before it refuses one; 64 KiB over COUNT is the RAM each live block costs;
//! - `largest_fresh BYTES`: the largest block a fresh heap over 64 KiB serves;
//! - `largest_fragmented BYTES`: the largest block it serves after being filled with 64-byte
//!   blocks of which every other one was freed;
//! - `spread_held COUNT` and `largest_after_spread BYTES`: how many of one block each of
//!   [`SPREAD`]'s eight sizes a fresh heap over 64 KiB holds at once, and the largest block it
//!   serves besides them: what a program with a few objects of many sizes can count on;
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

/// Eight request sizes, each in a size class of its own whatever melon's chunk size.
const SPREAD: [usize; 8] = [16, 48, 112, 200, 400, 800, 1500, 3000];

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
            // SAFETY: a live block of `heap` of 64 bytes, freed once.
            unsafe { give(heap, block, 64) };
        }
        largest(heap)
    });
    say(format_args!("largest_fragmented {fragmented}"));
    let (held, after) = with_fresh_heap(|heap| {
        let blocks: Vec<(*mut u8, usize)> = SPREAD
            .iter()
            .map(|&size| (take(heap, size), size))
            .filter(|(block, _)| !block.is_null())
            .collect();
        let after = largest(heap);
        for &(block, size) in &blocks {
            // SAFETY: a live block of `heap` of `size` bytes, freed once.
            unsafe { give(heap, block, size) };
        }
        (blocks.len(), after)
    });
    say(format_args!("spread_held {held}"));
    say(format_args!("largest_after_spread {after}"));
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

/// A block of `size` bytes (aligned to 8) from `heap`, or null: how every measurement
/// allocates, and frees through [`give`].
fn take(heap: &peer::Heap, size: usize) -> *mut u8 {
    // SAFETY: every size measured is above zero, so the layout is not zero-sized.
    unsafe { GlobalAlloc::alloc(heap, layout(size)) }
}

/// Frees a block [`take`] returned.
///
/// # Safety
/// `block` is a live block of `heap` of `size` bytes, freed once.
unsafe fn give(heap: &peer::Heap, block: *mut u8, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { GlobalAlloc::dealloc(heap, block, layout(size)) }
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
        let block = take(heap, size);
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
        let block = take(heap, size);
        if block.is_null() {
            return false;
        }
        // SAFETY: a live block of `heap` of `size` bytes, freed once.
        unsafe { give(heap, block, size) };
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
