//! A tour of melon-alloc: pools, cascades, limits, bulk release and statistics.
//!
//! Run it with `cargo run --release --example tour`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use melon_alloc::{HeapPool, Pool, Stats};

fn main() {
    println!("melon-alloc tour\n");

    // A root pool over the global allocator, with no limit.
    let root = HeapPool::new();
    let greeting = root.alloc(6).expect("an unlimited pool has memory");
    // SAFETY: the block holds at least 6 bytes.
    unsafe { greeting.as_ptr().copy_from_nonoverlapping(c"hello".as_ptr().cast(), 6) };
    // SAFETY: the block holds a NUL-terminated string written just above.
    let text = unsafe { std::ffi::CStr::from_ptr(greeting.as_ptr().cast()) };
    println!("1. a block from the root pool says {text:?}");
    // SAFETY: the block came from a heap pool and is not used again.
    unsafe { melon_alloc::free(greeting) };

    // A child with a hard limit takes its chunks from the root.
    let request = root.child_with_limit(64 << 10);
    let mut blocks = Vec::new();
    while let Some(block) = request.alloc(200) {
        blocks.push(block);
    }
    println!(
        "2. a child limited to 64 KiB took {} blocks of 200 bytes before refusing; {} bytes left",
        blocks.len(),
        request.available().unwrap_or(0)
    );
    show("   child", &request.stats());
    show("   root ", &root.stats());

    // Freeing gives the memory back: half the limit fits again in one block.
    for block in blocks.drain(..) {
        // SAFETY: every block came from `request` and is not used again.
        unsafe { request.free(block) };
    }
    let big = request.alloc(32 << 10);
    println!("3. after freeing them all, a 32 KiB block fits again: {}", big.is_some());
    if let Some(big) = big {
        // SAFETY: the block came from `request` and is not used again.
        unsafe { request.free(big) };
    }

    // A three-level cascade: each level's chunks count against every ancestor.
    let before = root.stats().bytes_held;
    {
        let session = request.child();
        let scratch = session.child_with_limit(16 << 10);
        let block = scratch.alloc_zeroed(1000).expect("within every limit");
        println!(
            "4. cascade: root holds {} bytes, child {}, grandchild {}, great-grandchild {}",
            root.stats().bytes_held,
            request.stats().bytes_held,
            session.stats().bytes_held,
            scratch.stats().bytes_held
        );
        // SAFETY: the block came from `scratch` and is not used again.
        unsafe { scratch.free(block) };
    }
    println!(
        "   after the inner pools are dropped the root holds {} bytes again (was {before})",
        root.stats().bytes_held
    );
    drop(request);

    // Bad input gets an error, not corruption.
    let block = root.alloc(64).expect("an unlimited pool has memory");
    // SAFETY: the block came from `root`; it is not used after the first free.
    let first = unsafe { root.try_free(block) };
    // SAFETY: as above; the second free is refused without touching anything.
    let second = unsafe { root.try_free(block) };
    println!("5. first free: {first:?}; second free: {}", second.unwrap_err());
    println!("   too large a request: {:?}", root.alloc(usize::MAX));
    root.check().expect("the pool is consistent");

    // Speed: a million alloc/free pairs against the system allocator.
    const PAIRS: u32 = 1_000_000;
    let layout = Layout::from_size_align(64, 16).expect("a valid layout");
    let start = Instant::now();
    for _ in 0..PAIRS {
        let block = root.alloc(black_box(64)).expect("an unlimited pool has memory");
        // SAFETY: the block came from `root` and is not used again.
        unsafe { root.free(black_box(block)) };
    }
    let pool_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(PAIRS);
    let start = Instant::now();
    for _ in 0..PAIRS {
        // SAFETY: the layout has a non-zero size.
        let block = unsafe { System.alloc(black_box(layout)) };
        // SAFETY: the block came from `System.alloc` with this layout.
        unsafe { System.dealloc(black_box(block), layout) };
    }
    let system_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(PAIRS);
    println!("6. alloc+free of 64 bytes: pool {pool_ns:.1} ns, system allocator {system_ns:.1} ns");

    // Dropping a pool releases everything at once, without visiting blocks.
    let pool = HeapPool::new();
    fill(&pool, 1_000_000);
    let start = Instant::now();
    drop(pool);
    println!(
        "7. dropping a pool of 1,000,000 live blocks took {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}

/// Allocates `count` blocks of 64 bytes and leaves them live.
fn fill(pool: &Pool, count: usize) {
    for _ in 0..count {
        let block = pool.alloc(64).expect("an unlimited pool has memory");
        // SAFETY: the block holds 64 bytes; one is touched so that the memory is really used.
        unsafe { block.as_ptr().write(1) };
    }
}

fn show(name: &str, stats: &Stats) {
    println!(
        "{name}: {} live blocks, {} bytes in use, {} bytes held (peak {}), {} chunks",
        stats.live_blocks,
        stats.bytes_in_use,
        stats.bytes_held,
        stats.peak_bytes_held,
        stats.chunks
    );
}
