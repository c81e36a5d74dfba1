//! Heap pools against glibc `malloc`, mimalloc, bumpalo, talc and rlsf.
//!
//! Each workload is one criterion group with every peer in it, so one run gives the ratios that
//! `docs/benchmarks.md` reports. The peers:
//! - `melon`: a root [`HeapPool`].
//! - `glibc`: [`System`], which is `malloc` and `free` for these layouts.
//! - `mimalloc_heap`: a mimalloc first-class heap (`mi_heap_malloc`, `mi_free`,
//!   `mi_heap_destroy`), the closest peer to a pool.
//! - `mimalloc`: mimalloc as a global allocator ([`MiMalloc`]), for reference.
//! - `bumpalo`: a [`Bump`] arena, which cannot free one block, so it resets instead.
//! - `talc`: talc over an arena of its own ([`TalcArena`]).
//! - `rlsf`: rlsf's TLSF over an arena of its own ([`TlsfArena`]).
//!
//! The blocks are 64 bytes, except in `mixed`, which draws sizes from 8 bytes to 64 KiB, and in
//! `large_ring`, 16 to 64 KiB, where `melon_limited` is a root with a limit.
//! `child_lifecycle` makes and drops a pool (a child of a root, for melon) around each block.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::time::Duration;
use std::alloc::System;
use std::hint::black_box;

use bumpalo::Bump;
use criterion::measurement::WallTime;
use criterion::{BatchSize, Bencher, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use melon_alloc::HeapPool;
use melon_alloc_bench::workloads::{
    ping_pong as ping_pong_pair, FillDrain, Global, Melon, Peer, Ring, ShuffledDrain, FILL,
};
use melon_alloc_bench::{
    large_sizes, mixed_sizes, MiHeap, TalcArena, TlsfArena, BLOCK, LARGE_LIMIT, LARGE_RING,
    MIXED_RING, MIXED_SEED, RING_SIZES,
};
use mimalloc::MiMalloc;

/// Live blocks in the pool that `drop_full_pool` drops.
const LIVE: usize = 1_000_000;

/// The bytes of the arena talc and rlsf get in `drop_full_pool`: room for [`LIVE`] blocks with
/// their per-block headers, and some to spare.
const DROP_ARENA: usize = 256 << 20;

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

/// The bytes of the arena talc and rlsf get in the timing workloads: far more than any of them
/// holds at once (the mixed workload's 256 blocks of at most 64 KiB), and mapped lazily, so the
/// size costs nothing.
const ARENA: usize = 64 << 20;

/// A workload that runs on any [`Peer`]: generic, so that every peer gets its own inlined copy
/// of the timed loop.
trait Workload {
    /// Times the workload on `peer`.
    fn time<P: Peer>(&mut self, b: &mut Bencher<'_>, peer: P);
}

/// Adds `workload` to `group` once for every peer that frees block by block, each made afresh
/// for every sample.
fn each_peer(group: &mut BenchmarkGroup<'_, WallTime>, workload: &mut impl Workload) {
    group.bench_function("melon", |b| workload.time(b, Melon(HeapPool::new())));
    group.bench_function("glibc", |b| workload.time(b, Global(System)));
    group.bench_function("mimalloc_heap", |b| {
        workload.time(b, MiHeap::new().expect("mimalloc heap"));
    });
    group.bench_function("mimalloc", |b| workload.time(b, Global(MiMalloc)));
    group.bench_function("talc", |b| workload.time(b, TalcArena::new(ARENA).expect("talc arena")));
    group.bench_function("rlsf", |b| workload.time(b, TlsfArena::new(ARENA).expect("rlsf arena")));
}

/// One block allocated and freed straight away ([`ping_pong_pair`]).
struct PingPong;

impl Workload for PingPong {
    fn time<P: Peer>(&mut self, b: &mut Bencher<'_>, mut peer: P) {
        b.iter(|| ping_pong_pair(&mut peer));
    }
}

fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong");
    group.throughput(Throughput::Elements(1));
    each_peer(&mut group, &mut PingPong);
    group.bench_function("bumpalo", |b| {
        let mut bump = Bump::new();
        b.iter(|| {
            black_box(bump.alloc_layout(black_box(LAYOUT)));
            bump.reset();
        });
    });
    group.finish();
}

/// 1024 blocks allocated, then all freed in the order they came ([`FillDrain`]).
impl Workload for FillDrain {
    fn time<P: Peer>(&mut self, b: &mut Bencher<'_>, mut peer: P) {
        b.iter(|| self.run(&mut peer));
    }
}

fn fill_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("fill_drain_1024");
    group.throughput(Throughput::Elements(FILL as u64));
    each_peer(&mut group, &mut FillDrain::new());
    let mut blocks = Vec::with_capacity(FILL);
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

/// 1024 blocks allocated, then freed in a fixed pseudo-random order ([`ShuffledDrain`]).
/// bumpalo, which cannot free one block, has no part in it.
impl Workload for ShuffledDrain {
    fn time<P: Peer>(&mut self, b: &mut Bencher<'_>, mut peer: P) {
        b.iter(|| self.run(&mut peer));
    }
}

fn shuffled_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("shuffled_drain_1024");
    group.throughput(Throughput::Elements(FILL as u64));
    each_peer(&mut group, &mut ShuffledDrain::new());
    group.finish();
}

/// The ring workloads ([`Ring`]), timed per turn of the ring. bumpalo, which cannot free one
/// block, has no part in them.
struct RingWorkload {
    /// The request sizes, the same for every peer; a power of two of them.
    sizes: Vec<usize>,
    /// Live blocks: the ring's slots.
    slots: usize,
}

impl RingWorkload {
    /// Sizes from 8 bytes to 64 KiB ([`mixed_sizes`]) in a ring of 256.
    fn mixed() -> Self {
        Self { sizes: mixed_sizes(RING_SIZES, MIXED_SEED), slots: MIXED_RING }
    }

    /// Sizes from 16 to 64 KiB, uniformly, in a ring of 32: blocks that every peer serves from
    /// its large-block path.
    fn large() -> Self {
        Self { sizes: large_sizes(RING_SIZES), slots: LARGE_RING }
    }
}

impl Workload for RingWorkload {
    fn time<P: Peer>(&mut self, b: &mut Bencher<'_>, mut peer: P) {
        let mut ring = Ring::fill(self.sizes.clone(), self.slots, &mut peer);
        // SAFETY: the ring was filled from `peer`.
        b.iter(|| unsafe { ring.turn(&mut peer) });
        // SAFETY: as above.
        unsafe { ring.drain(&mut peer) };
    }
}

fn mixed(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixed");
    group.throughput(Throughput::Elements(MIXED_RING as u64));
    each_peer(&mut group, &mut RingWorkload::mixed());
    group.finish();
}

fn large_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("large_ring");
    group.throughput(Throughput::Elements(LARGE_RING as u64));
    let mut workload = RingWorkload::large();
    each_peer(&mut group, &mut workload);
    group.bench_function("melon_limited", |b| {
        workload.time(b, Melon(HeapPool::with_limit(LARGE_LIMIT)));
    });
    group.finish();
}

/// The drop workload for an arena allocator: `LIVE` blocks, each touched, then the arena dropped.
fn drop_full_arena<P: Peer>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    make: impl Fn() -> P,
) {
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                let mut arena = make();
                for _ in 0..LIVE {
                    let block = arena.alloc(BLOCK);
                    // SAFETY: the block was just allocated and holds `BLOCK` bytes.
                    unsafe { touch(block) };
                }
                arena
            },
            drop,
            BatchSize::PerIteration,
        );
    });
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
    // The arena allocators give their whole arena back at once, as a pool does: dropping the
    // arena is their drop. The arena is sized for the million blocks (about 80 bytes each with
    // talc's and 96 with rlsf's per-block header) and mapped lazily, so only what the blocks
    // touched is returned.
    drop_full_arena(&mut group, "talc", || TalcArena::new(DROP_ARENA).expect("talc arena"));
    drop_full_arena(&mut group, "rlsf", || TlsfArena::new(DROP_ARENA).expect("rlsf arena"));
    group.finish();
}

/// A pool per request: a pool made, one 64-byte block allocated and freed in it, the pool
/// dropped. melon's pool is a child of a long-lived root, which holds nothing else (`melon`) or
/// one live block of its own (`melon_busy_root`); the peers make and drop what stands for a pool
/// in each (a `Bump`, a mimalloc heap), and glibc, which has no pools, only allocates and frees.
fn child_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("child_lifecycle");
    group.throughput(Throughput::Elements(1));
    let idle = HeapPool::new();
    group.bench_function("melon", |b| b.iter(|| request_in_a_child(&idle)));
    let busy = HeapPool::new();
    let kept = busy.alloc(BLOCK).expect("out of memory");
    group.bench_function("melon_busy_root", |b| b.iter(|| request_in_a_child(&busy)));
    // SAFETY: `kept` came from `busy` and is not used again.
    unsafe { busy.free(kept) };
    group.bench_function("glibc", |b| {
        b.iter(|| {
            let block = global_alloc(&System);
            // SAFETY: the block came from `System` and is not used again.
            unsafe { global_free(&System, black_box(block)) };
        });
    });
    group.bench_function("mimalloc_heap", |b| {
        b.iter(|| {
            let heap = MiHeap::new().expect("a mimalloc heap");
            let block = heap.alloc(BLOCK).expect("out of memory");
            // SAFETY: the block came from `heap` and is not used again.
            unsafe { heap.free(black_box(block)) };
        });
    });
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            let bump = Bump::new();
            black_box(bump.alloc_layout(LAYOUT));
        });
    });
    group.finish();
}

/// What one request does with its own child of `root`.
fn request_in_a_child(root: &HeapPool) {
    let child = root.child();
    let block = child.alloc(BLOCK).expect("out of memory");
    // SAFETY: the block came from `child` and is not used again.
    unsafe { child.free(black_box(block)) };
}

// What `criterion_group!` and `criterion_main!` expand to, written out because the macro's
// function is public and undocumented, which the workspace's `missing_docs` lint rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    ping_pong(&mut criterion);
    fill_drain(&mut criterion);
    shuffled_drain(&mut criterion);
    mixed(&mut criterion);
    large_ring(&mut criterion);
    drop_full_pool(&mut criterion);
    child_lifecycle(&mut criterion);
    criterion.final_summary();
}
