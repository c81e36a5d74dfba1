//! Heap pools against glibc `malloc`, mimalloc and bumpalo, on 64-byte blocks.
//!
//! Each workload is one criterion group with every peer in it, so one run gives the ratios that
//! `docs/benchmarks.md` reports. The peers:
//! - `melon`: a root [`HeapPool`].
//! - `glibc`: [`System`], which is `malloc` and `free` for these layouts.
//! - `mimalloc_heap`: a mimalloc first-class heap (`mi_heap_malloc`, `mi_free`,
//!   `mi_heap_destroy`), the closest peer to a pool.
//! - `mimalloc`: mimalloc as a global allocator ([`MiMalloc`]), for reference.
//! - `bumpalo`: a [`Bump`] arena, which cannot free one block, so it resets instead.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::time::Duration;
use std::alloc::System;
use std::hint::black_box;

use bumpalo::Bump;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use melon_alloc::HeapPool;
use melon_alloc_bench::{permutation, MiHeap, BLOCK, SHUFFLE_SEED};
use mimalloc::MiMalloc;

/// Blocks allocated and then freed per iteration of the fill-and-drain workloads.
const FILL: usize = 1024;

/// Live blocks in the pool that `drop_full_pool` drops.
const LIVE: usize = 1_000_000;

/// The layout of every block: 16-byte alignment is what `malloc` and the pools give anyway, so
/// no peer pays for a stricter one.
const LAYOUT: Layout = match Layout::from_size_align(BLOCK, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("64 bytes at 16 is a valid layout"),
};

/// Allocates one block from a global allocator, stopping the bench if there is no memory.
fn global_alloc(allocator: &impl GlobalAlloc) -> NonNull<u8> {
    // SAFETY: `LAYOUT` has a non-zero size.
    let block = unsafe { allocator.alloc(black_box(LAYOUT)) };
    NonNull::new(block).expect("out of memory")
}

/// Gives a block back to the global allocator it came from.
///
/// # Safety
/// `block` came from [`global_alloc`] on `allocator` and is not used again.
unsafe fn global_free(allocator: &impl GlobalAlloc, block: NonNull<u8>) {
    // SAFETY: the caller returns a block of `allocator` allocated with `LAYOUT`.
    unsafe { allocator.dealloc(block.as_ptr(), LAYOUT) }
}

/// Writes the first byte of a fresh block, so that its page is resident as a live block's is.
///
/// # Safety
/// `block` is a block of at least one byte that has just been allocated.
unsafe fn touch(block: NonNull<u8>) -> NonNull<u8> {
    // SAFETY: the caller passes a block that is in use and holds at least one byte.
    unsafe { block.as_ptr().write(1) };
    block
}

/// One block allocated and freed straight away: the cost of the fast paths alone.
fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong");
    group.throughput(Throughput::Elements(1));

    group.bench_function("melon", |b| {
        let pool = HeapPool::new();
        b.iter(|| {
            let block = pool.alloc(black_box(BLOCK)).expect("out of memory");
            // SAFETY: the block came from `pool` and is not used again.
            unsafe { pool.free(black_box(block)) };
        });
    });
    group.bench_function("glibc", |b| {
        b.iter(|| {
            let block = global_alloc(&System);
            // SAFETY: the block came from `System` and is not used again.
            unsafe { global_free(&System, black_box(block)) };
        });
    });
    group.bench_function("mimalloc_heap", |b| {
        let heap = MiHeap::new().expect("mimalloc heap");
        b.iter(|| {
            let block = heap.alloc(black_box(BLOCK)).expect("out of memory");
            // SAFETY: the block came from `heap` and is not used again.
            unsafe { heap.free(black_box(block)) };
        });
    });
    group.bench_function("mimalloc", |b| {
        b.iter(|| {
            let block = global_alloc(&MiMalloc);
            // SAFETY: the block came from `MiMalloc` and is not used again.
            unsafe { global_free(&MiMalloc, black_box(block)) };
        });
    });
    group.bench_function("bumpalo", |b| {
        let mut bump = Bump::new();
        b.iter(|| {
            black_box(bump.alloc_layout(black_box(LAYOUT)));
            bump.reset();
        });
    });
    group.finish();
}

/// 1024 blocks allocated, then all freed in the order they came: a request's worth of
/// short-lived objects.
fn fill_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("fill_drain_1024");
    group.throughput(Throughput::Elements(FILL as u64));
    // The vector of pointers is the same for every peer, and allocated once, outside the loop.
    let mut blocks: Vec<NonNull<u8>> = Vec::with_capacity(FILL);

    group.bench_function("melon", |b| {
        let pool = HeapPool::new();
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| pool.alloc(black_box(BLOCK)).expect("out of memory")));
            for block in blocks.drain(..) {
                // SAFETY: every block came from `pool` and is freed once.
                unsafe { pool.free(block) };
            }
        });
    });
    group.bench_function("glibc", |b| {
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| global_alloc(&System)));
            for block in blocks.drain(..) {
                // SAFETY: every block came from `System` and is freed once.
                unsafe { global_free(&System, block) };
            }
        });
    });
    group.bench_function("mimalloc_heap", |b| {
        let heap = MiHeap::new().expect("mimalloc heap");
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| heap.alloc(black_box(BLOCK)).expect("out of memory")));
            for block in blocks.drain(..) {
                // SAFETY: every block came from `heap` and is freed once.
                unsafe { heap.free(block) };
            }
        });
    });
    group.bench_function("mimalloc", |b| {
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| global_alloc(&MiMalloc)));
            for block in blocks.drain(..) {
                // SAFETY: every block came from `MiMalloc` and is freed once.
                unsafe { global_free(&MiMalloc, block) };
            }
        });
    });
    group.bench_function("bumpalo", |b| {
        let mut bump = Bump::new();
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| bump.alloc_layout(black_box(LAYOUT))));
            black_box(&blocks);
            blocks.clear();
            bump.reset();
        });
    });
    group.finish();
}

/// 1024 blocks allocated, then freed in a fixed pseudo-random order, so that the free lists end
/// up scattered across pages as they do in a long-running program.
fn shuffled_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("shuffled_drain_1024");
    group.throughput(Throughput::Elements(FILL as u64));
    let order = permutation(FILL, SHUFFLE_SEED);
    let mut blocks: Vec<NonNull<u8>> = Vec::with_capacity(FILL);

    group.bench_function("melon", |b| {
        let pool = HeapPool::new();
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| pool.alloc(black_box(BLOCK)).expect("out of memory")));
            for &index in &order {
                // SAFETY: `order` is a permutation, so every block of `pool` is freed once.
                unsafe { pool.free(blocks[index]) };
            }
            blocks.clear();
        });
    });
    group.bench_function("glibc", |b| {
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| global_alloc(&System)));
            for &index in &order {
                // SAFETY: `order` is a permutation, so every block of `System` is freed once.
                unsafe { global_free(&System, blocks[index]) };
            }
            blocks.clear();
        });
    });
    group.bench_function("mimalloc_heap", |b| {
        let heap = MiHeap::new().expect("mimalloc heap");
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| heap.alloc(black_box(BLOCK)).expect("out of memory")));
            for &index in &order {
                // SAFETY: `order` is a permutation, so every block of `heap` is freed once.
                unsafe { heap.free(blocks[index]) };
            }
            blocks.clear();
        });
    });
    group.bench_function("mimalloc", |b| {
        b.iter(|| {
            blocks.extend((0..FILL).map(|_| global_alloc(&MiMalloc)));
            for &index in &order {
                // SAFETY: `order` is a permutation, so every block of `MiMalloc` is freed once.
                unsafe { global_free(&MiMalloc, blocks[index]) };
            }
            blocks.clear();
        });
    });
    group.finish();
}

/// A pool holding a million live blocks is dropped; only the drop is timed.
///
/// Each iteration builds its pool untimed, which is why the sample count is small and the
/// sampling flat: the setup costs far more than the drop.
fn drop_full_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("drop_full_pool");
    group
        .throughput(Throughput::Elements(LIVE as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.bench_function("melon", |b| {
        b.iter_batched(
            || {
                let pool = HeapPool::new();
                for _ in 0..LIVE {
                    let block = pool.alloc(BLOCK).expect("out of memory");
                    // SAFETY: the block was just allocated and holds `BLOCK` bytes.
                    unsafe { touch(block) };
                }
                pool
            },
            drop,
            BatchSize::PerIteration,
        );
    });
    // The same drop for a child pool whose root keeps its chunks: the root holds one block of
    // its own, so the chunks the child gives back stay with it instead of going back to glibc.
    // Set against `melon`, this splits the pool's own bookkeeping from the cost of returning
    // the memory to the system.
    group.bench_function("melon_child", |b| {
        let root = HeapPool::new();
        let anchor = root.alloc(BLOCK).expect("out of memory");
        b.iter_batched(
            || {
                let child = root.child();
                for _ in 0..LIVE {
                    let block = child.alloc(BLOCK).expect("out of memory");
                    // SAFETY: the block was just allocated and holds `BLOCK` bytes.
                    unsafe { touch(block) };
                }
                child
            },
            drop,
            BatchSize::PerIteration,
        );
        // SAFETY: `anchor` came from `root` and is not used again.
        unsafe { root.free(anchor) };
    });
    group.bench_function("glibc", |b| {
        b.iter_batched(
            || {
                (0..LIVE)
                    .map(|_| {
                        // SAFETY: the block was just allocated and holds `BLOCK` bytes.
                        unsafe { touch(global_alloc(&System)) }
                    })
                    .collect::<Vec<_>>()
            },
            |blocks| {
                for &block in &blocks {
                    // SAFETY: every block came from `System` and is freed once.
                    unsafe { global_free(&System, block) };
                }
                // Returned so that freeing the vector itself falls outside the timing.
                blocks
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("mimalloc_heap", |b| {
        b.iter_batched(
            || {
                let heap = MiHeap::new().expect("mimalloc heap");
                for _ in 0..LIVE {
                    let block = heap.alloc(BLOCK).expect("out of memory");
                    // SAFETY: the block was just allocated and holds `BLOCK` bytes.
                    unsafe { touch(block) };
                }
                heap
            },
            drop,
            BatchSize::PerIteration,
        );
    });
    group.bench_function("bumpalo", |b| {
        b.iter_batched(
            || {
                let bump = Bump::new();
                for _ in 0..LIVE {
                    // SAFETY: the block was just allocated and holds `BLOCK` bytes.
                    unsafe { touch(bump.alloc_layout(LAYOUT)) };
                }
                bump
            },
            drop,
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, written out because the macro's
// function is public and undocumented, which the workspace's `missing_docs` lint rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    ping_pong(&mut criterion);
    fill_drain(&mut criterion);
    shuffled_drain(&mut criterion);
    drop_full_pool(&mut criterion);
    criterion.final_summary();
}
