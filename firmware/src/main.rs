//! A test firmware for a Cortex-M4: no standard library, a static arena, and the spin-locked core
//! pool as the global allocator behind `alloc`'s collections. `cargo xtask no-std` builds it for
//! `thumbv7em-none-eabihf` and runs it on QEMU's `mps2-an386` board, where it reports through
//! semihosting and exits 0 only if every check held.
//!
//! The phases: collections (`Vec`, `BTreeMap`, `String`), a block of every size class written and
//! read back, frees in shuffled order, a large block shrunk and grown through `realloc`, with the
//! `chunk-aligned` feature blocks aligned to a chunk shrunk by a `Vec` and given back whole, a
//! second pool over a region of its own, a refusal at the limit, and last the global pool run
//! dry: the allocation error handler is reached, and the panic handler takes its message as the
//! end of a good run. `check()` runs after each phase.
#![no_std]
#![no_main]

extern crate alloc;

mod collections;
mod report;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use cortex_m_rt::entry;
use melon_alloc_core::{LockedPool, RegionSource, CLASS_SIZES};

use collections::Collections;
use report::{fail, pass, EXHAUSTING};

/// Bytes of the global allocator's arena.
const ARENA_BYTES: usize = 1024 * 1024;

/// Bytes of the second pool's region.
const SECOND_BYTES: usize = 64 * 1024;

static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

static mut SECOND: [u8; SECOND_BYTES] = [0; SECOND_BYTES];

#[global_allocator]
// SAFETY: nothing but the pool ever touches `ARENA`.
static POOL: LockedPool<RegionSource> =
    LockedPool::new(unsafe { RegionSource::new(&raw mut ARENA as *mut u8, ARENA_BYTES) }, None);

#[entry]
fn main() -> ! {
    collections();
    every_class();
    shuffled_frees();
    realloc_shrink_and_grow();
    #[cfg(feature = "chunk-aligned")]
    chunk_aligned_shrinks();
    second_pool();
    exhaust()
}

/// Fails the run unless the global pool's invariants hold and it holds no block.
fn check_empty(phase: &str) {
    if let Err(error) = POOL.check() {
        fail(phase, format_args!("check() failed: {error}"));
    }
    let live = POOL.stats().live_blocks;
    if live != 0 {
        fail(phase, format_args!("{live} blocks still live"));
    }
    pass(phase);
}

fn collections() {
    let built = Collections::build();
    if !built.intact() {
        fail("collections", format_args!("wrong contents"));
    }
    if let Err(error) = POOL.check() {
        fail("collections", format_args!("check() with live collections: {error}"));
    }
    drop(built);
    check_empty("collections");
}

/// One block of every size class, each filled with a pattern of its own and read back after all
/// of them are allocated: blocks that overlapped would overwrite each other's pattern.
fn every_class() {
    let mut blocks: Vec<(NonNull<u8>, usize)> = Vec::with_capacity(CLASS_SIZES.len());
    for (class, &size) in CLASS_SIZES.iter().enumerate() {
        let Some(block) = POOL.alloc(size) else {
            fail("every class", format_args!("no block of {size} bytes"));
        };
        // SAFETY: the block holds `size` bytes.
        unsafe { block.as_ptr().write_bytes(class as u8, size) };
        blocks.push((block, size));
    }
    for (class, &(block, size)) in blocks.iter().enumerate() {
        // SAFETY: the block holds `size` bytes, written above.
        let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), size) };
        if bytes.iter().any(|&byte| byte != class as u8) {
            fail("every class", format_args!("the block of {size} bytes was overwritten"));
        }
    }
    for (block, _) in blocks {
        // SAFETY: a live block of `POOL`, freed once.
        if let Err(error) = unsafe { POOL.try_free(block) } {
            fail("every class", format_args!("free refused: {error}"));
        }
    }
    check_empty("every class");
}

/// A small linear congruential generator: enough to shuffle, and the same on every run.
struct Lcg(u32);

impl Lcg {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (self.0 >> 8) as usize % bound
    }
}

/// 400 blocks of sizes from 8 bytes to 3 KiB, freed in a shuffled order.
fn shuffled_frees() {
    let mut rng = Lcg(0x6d65_6c6f);
    let mut blocks: Vec<NonNull<u8>> = Vec::with_capacity(400);
    for _ in 0..400 {
        let size = 8 + rng.below(3 * 1024);
        let Some(block) = POOL.alloc(size) else {
            fail("shuffled frees", format_args!("no block of {size} bytes"));
        };
        blocks.push(block);
    }
    for left in (1..=blocks.len()).rev() {
        let block = blocks.swap_remove(rng.below(left));
        // SAFETY: a live block of `POOL`, freed once.
        if let Err(error) = unsafe { POOL.try_free(block) } {
            fail("shuffled frees", format_args!("free refused: {error}"));
        }
    }
    drop(blocks);
    check_empty("shuffled frees");
}

/// A large block shrunk through `GlobalAlloc::realloc` stays where it is, on bare metal whole, and
/// grown moves with what it held.
fn realloc_shrink_and_grow() {
    const LARGE: usize = 40_000;
    const SHRUNK: usize = 1_000;
    const GROWN: usize = 60_000;
    let layout = Layout::from_size_align(LARGE, 8)
        .unwrap_or_else(|_| fail("realloc", format_args!("no layout")));
    // SAFETY: the layout has a size above zero.
    let block = unsafe { GlobalAlloc::alloc(&POOL, layout) };
    if block.is_null() {
        fail("realloc", format_args!("no block of {LARGE} bytes"));
    }
    // SAFETY: the block holds `LARGE` bytes.
    unsafe { block.write_bytes(0x5a, LARGE) };
    // SAFETY: the block came from `POOL` with `layout`, and `SHRUNK` is above zero.
    let shrunk = unsafe { GlobalAlloc::realloc(&POOL, block, layout, SHRUNK) };
    if shrunk != block {
        fail("realloc", format_args!("a shrink moved the block"));
    }
    let layout = Layout::from_size_align(SHRUNK, 8)
        .unwrap_or_else(|_| fail("realloc", format_args!("no layout")));
    // SAFETY: the block came from `POOL` with `layout` after the shrink.
    let grown = unsafe { GlobalAlloc::realloc(&POOL, shrunk, layout, GROWN) };
    if grown.is_null() {
        fail("realloc", format_args!("no block of {GROWN} bytes"));
    }
    // SAFETY: the grown block holds `GROWN` bytes, the first `SHRUNK` copied from the old one.
    let kept = unsafe { core::slice::from_raw_parts(grown, SHRUNK) };
    if kept.iter().any(|&byte| byte != 0x5a) {
        fail("realloc", format_args!("the grown block lost what it held"));
    }
    let layout = Layout::from_size_align(GROWN, 8)
        .unwrap_or_else(|_| fail("realloc", format_args!("no layout")));
    // SAFETY: the block came from `POOL` with `layout`, and is not used again.
    unsafe { GlobalAlloc::dealloc(&POOL, grown, layout) };
    check_empty("realloc");
}

/// Blocks aligned to a whole chunk, each with a chunk of its own, shrunk through
/// `GlobalAlloc::realloc` by a `Vec`: each goes back whole, so that after a trim the region has
/// every byte it had.
#[cfg(feature = "chunk-aligned")]
fn chunk_aligned_shrinks() {
    use melon_alloc_core::CHUNK_SIZE;

    /// A value as long as a chunk and aligned to one.
    #[cfg_attr(not(feature = "small-chunks"), repr(C, align(16384)))]
    #[cfg_attr(feature = "small-chunks", repr(C, align(4096)))]
    struct Aligned([u8; CHUNK_SIZE]);

    POOL.trim();
    let free_at_start = POOL.with(|engine| engine.source().free_bytes());
    for round in 0..4u8 {
        let mut values: Vec<Aligned> = Vec::with_capacity(4);
        values.push(Aligned([round; CHUNK_SIZE]));
        values.shrink_to_fit();
        if values.first().map(|value| value.0[CHUNK_SIZE - 1]) != Some(round) {
            fail("chunk-aligned shrinks", format_args!("a shrink lost what the block held"));
        }
    }
    POOL.trim();
    let free = POOL.with(|engine| engine.source().free_bytes());
    if free != free_at_start || POOL.stats().bytes_lent != 0 {
        fail(
            "chunk-aligned shrinks",
            format_args!("the region has {free} bytes free, {free_at_start} before"),
        );
    }
    check_empty("chunk-aligned shrinks");
}

/// A pool over a region of its own, with a limit: it serves, refuses past its limit without a
/// charge, tells a foreign block from its own, and leaves the global pool alone.
fn second_pool() {
    // SAFETY: nothing but this pool ever touches `SECOND`, and the pool lives only here.
    let source = unsafe { RegionSource::new(&raw mut SECOND as *mut u8, SECOND_BYTES) };
    let pool = LockedPool::new(source, Some(32 * 1024));
    let Some(block) = pool.alloc(100) else {
        fail("second pool", format_args!("no block of 100 bytes"));
    };
    let held = pool.stats().bytes_held;
    if pool.alloc(40 * 1024).is_some() || pool.stats().bytes_held != held {
        fail("second pool", format_args!("a block past the limit was served or charged"));
    }
    let Some(global) = POOL.alloc(100) else {
        fail("second pool", format_args!("no global block"));
    };
    // SAFETY: `try_free` only inspects a block it does not own; `global` stays live.
    if unsafe { pool.try_free(global) }.is_ok() {
        fail("second pool", format_args!("took a block of the global pool for its own"));
    }
    // SAFETY: live blocks of their own pools, freed once.
    let freed = unsafe { (pool.try_free(block), POOL.try_free(global)) };
    if freed.0.is_err() || freed.1.is_err() || pool.check().is_err() {
        fail("second pool", format_args!("frees refused or check failed"));
    }
    if pool.stats().live_blocks != 0 {
        fail("second pool", format_args!("blocks left in the second pool"));
    }
    check_empty("second pool");
}

/// Allocates 4 KiB blocks until the global pool refuses one, checks that the pool is sound when
/// full, frees them, and then asks for more than the arena holds through a `Vec`: the
/// allocation error handler ends the run (see `report`).
fn exhaust() -> ! {
    let mut blocks = Vec::with_capacity(ARENA_BYTES / 4096);
    while let Some(block) = POOL.alloc(4096) {
        blocks.push(block);
        if blocks.len() == blocks.capacity() {
            fail("exhaustion", format_args!("the arena never ran out"));
        }
    }
    if POOL.check().is_err() {
        fail("exhaustion", format_args!("check() failed in a full pool"));
    }
    for block in blocks.drain(..) {
        // SAFETY: a live block of `POOL`, freed once.
        if unsafe { POOL.try_free(block) }.is_err() {
            fail("exhaustion", format_args!("free refused"));
        }
    }
    drop(blocks);
    check_empty("exhaustion");
    EXHAUSTING.store(true, Ordering::SeqCst);
    let too_big: Vec<u8> = Vec::with_capacity(2 * ARENA_BYTES);
    fail("exhaustion", format_args!("{} bytes served from a smaller arena", too_big.capacity()))
}
