//! The workloads whose instructions and system calls `cargo xtask bench --check` counts, under
//! callgrind and under `strace -f -c`: each runs `N` operations of one workload and exits, and
//! the count at `2N` less the count at `N`, over `N`, is the cost of one operation without the
//! start-up. Instruction counts are the same from run to run of one build, whatever else the
//! machine is doing, and system-call counts nearly so (glibc's heap can take a `brk` more or
//! less), so a change that makes a pool slower, or makes it call the kernel, shows as a larger
//! count.
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin instructions -- WORKLOAD N
//! cargo run --release -p melon-alloc-bench --bin instructions -- --list
//! ```
//!
//! An operation is one alloc+free pair (of `alloc_zeroed` in `heap_alloc_zeroed`; through
//! `GlobalAlloc` on a `LockedHeapPool` in `locked_global_pair`; in `heap_ping_pong_at_chunk_end`
//! and `shm_ping_pong_at_slab_end`, of the last free block of a chunk or slab whose other blocks
//! are in use, where a pool's lists change hands), except in `heap_child_lifecycle` and
//! `sync_child_lifecycle`, where it is a child pool made (of a `HeapPool`, or of a `static`
//! `SyncPool` with a limit, as a request's), one block allocated and freed in it, and the child
//! dropped; in `heap_root_lifecycle`, a root `HeapPool` made, a block of each of
//! [`ROOT_SIZES`] allocated in it, each class taking a fresh chunk of a fresh slab, and the root
//! dropped with them in use: the costs a pool pays once, which the other workloads' operations
//! leave out; in `heap_first_fill`, one of the 1024 allocations of a new root pool, dropped with
//! them in use, so that its chunks are carved afresh in each round; in `heap_realloc_grow`, one
//! `realloc` of a block doubled from 16 bytes to 64 KiB and then freed; in `heap_realloc_small`
//! and `locked_global_realloc` (through `GlobalAlloc`), a block allocated, resized three times
//! within small classes and freed; in `heap_allocator_pair`, the pair through `allocator_api2`'s
//! `Allocator`; in `heap_empty_child_lifecycle`, a child pool made and dropped with nothing in
//! it; in `shm_lock_pair`, the shared pool's lock taken and let go; in `shm_handoff_ring`,
//! a child pool's block allocated and handed off and the oldest of 256 in flight freed through
//! the shared pool, as between a producer and its consumer; in `shm_find`, a lookup of a named
//! value; and in `shm_mutex_pair`, a lock and an unlock of a `ShmMutex`. `heap_fill_drain`,
//! `heap_first_fill` and `heap_realloc_grow` run whole rounds, `N` rounded down.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::process::ExitCode;
use std::ptr::NonNull;

use melon_alloc::heap::GlobalSource;
use melon_alloc::{HeapPool, LockedHeapPool, OsSource, SyncPool};
use melon_alloc_bench::{
    exit_with, large_sizes, mixed_sizes, BLOCK, LARGE_LIMIT, LARGE_RING, MIXED_RING, MIXED_SEED,
    RING_SIZES,
};
use melon_alloc_shm::ShmPool;

/// A workload: runs its operation `N` times.
type Workload = fn(u64) -> Result<(), String>;

/// The workloads, by the name the baseline file gives them.
const WORKLOADS: [(&str, Workload); 24] = [
    ("heap_ping_pong", heap_ping_pong),
    ("heap_ping_pong_at_chunk_end", heap_ping_pong_at_chunk_end),
    ("heap_fill_drain", heap_fill_drain),
    ("heap_first_fill", heap_first_fill),
    ("heap_realloc_grow", heap_realloc_grow),
    ("heap_realloc_small", heap_realloc_small),
    ("heap_alloc_zeroed", heap_alloc_zeroed),
    ("heap_allocator_pair", heap_allocator_pair),
    ("locked_global_pair", locked_global_pair),
    ("locked_global_realloc", locked_global_realloc),
    ("heap_mixed", heap_mixed),
    ("heap_large_ring", heap_large_ring),
    ("heap_limited_large_ring", heap_limited_large_ring),
    ("heap_child_lifecycle", heap_child_lifecycle),
    ("heap_empty_child_lifecycle", heap_empty_child_lifecycle),
    ("heap_root_lifecycle", heap_root_lifecycle),
    ("sync_child_lifecycle", sync_child_lifecycle),
    ("shm_lock_pair", shm_lock_pair),
    ("shm_ping_pong", shm_ping_pong),
    ("shm_ping_pong_at_slab_end", shm_ping_pong_at_slab_end),
    ("shm_child_ping_pong", shm_child_ping_pong),
    ("shm_handoff_ring", shm_handoff_ring),
    ("shm_find", shm_find),
    ("shm_mutex_pair", shm_mutex_pair),
];

/// Blocks allocated and then freed per round of the fill-and-drain workload.
const FILL: usize = 1024;

/// Capacity of the shared pool of the shm workloads.
const SHM_BYTES: usize = 64 << 20;

fn alloc(pool: &melon_alloc::Pool, size: usize) -> Result<NonNull<u8>, String> {
    pool.alloc(size).ok_or_else(|| format!("no block of {size} bytes"))
}

fn heap_ping_pong(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    for _ in 0..n {
        let block = alloc(&pool, black_box(BLOCK))?;
        // SAFETY: the block came from `pool` and is not used again.
        unsafe { pool.free(black_box(block)) };
    }
    Ok(())
}

fn heap_ping_pong_at_chunk_end(n: u64) -> Result<(), String> {
    // The blocks a chunk holds: those a pool hands out before the allocation that takes its
    // second chunk.
    let per_chunk = {
        let scratch = HeapPool::new();
        let mut held = 0;
        while scratch.stats().chunks < 2 {
            alloc(&scratch, BLOCK)?;
            held += 1;
        }
        held - 1
    };
    // All of the first chunk's blocks in use but one, which the pairs take and give back.
    let pool = HeapPool::new();
    let held = (1..per_chunk).map(|_| alloc(&pool, BLOCK)).collect::<Result<Vec<_>, _>>()?;
    for _ in 0..n {
        let block = alloc(&pool, black_box(BLOCK))?;
        // SAFETY: the block came from `pool` and is not used again.
        unsafe { pool.free(black_box(block)) };
    }
    black_box(held);
    Ok(())
}

fn heap_fill_drain(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    let mut blocks = Vec::with_capacity(FILL);
    for _ in 0..n / FILL as u64 {
        for _ in 0..FILL {
            blocks.push(alloc(&pool, black_box(BLOCK))?);
        }
        for block in blocks.drain(..) {
            // SAFETY: each block came from `pool` and is freed once.
            unsafe { pool.free(block) };
        }
    }
    Ok(())
}

/// A new root pool per round of [`FILL`] allocations of [`BLOCK`] bytes, dropped with them in
/// use: what carving new chunks, taking them from the global source and giving them back costs,
/// which the other heap workloads, whose chunks stay, leave out. An operation is one
/// allocation; the workload runs `n` rounded down to whole rounds.
fn heap_first_fill(n: u64) -> Result<(), String> {
    for _ in 0..n / FILL as u64 {
        let pool = HeapPool::new();
        for _ in 0..FILL {
            black_box(alloc(&pool, black_box(BLOCK))?);
        }
        // Dropped with every block in use: the drop gives back its chunks at once.
        drop(black_box(pool));
    }
    Ok(())
}

/// The size a block of the growing workload starts at.
const GROW_FROM: usize = 16;

/// The size a block of the growing workload is doubled up to: past half a chunk, so that the
/// last steps move it to blocks of chunks of their own.
const GROW_TO: usize = 64 << 10;

/// Reallocations per round of the growing workload: from [`GROW_FROM`] to [`GROW_TO`] by
/// doubling.
const GROWS: u64 = (GROW_TO / GROW_FROM).ilog2() as u64;

/// A block grown by `realloc` from [`GROW_FROM`] bytes, doubling, up to [`GROW_TO`], then
/// freed: a block moved to a larger class at each step, and then to large blocks. An
/// operation is one `realloc` (the round's allocation and free are spread over them); the
/// workload runs `n` rounded down to whole rounds of [`GROWS`].
fn heap_realloc_grow(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    for _ in 0..n / GROWS {
        let mut block = alloc(&pool, black_box(GROW_FROM))?;
        let mut size = GROW_FROM;
        while size < GROW_TO {
            size *= 2;
            // SAFETY: the block is in use in `pool`, and its old pointer is replaced here and
            // not used again.
            let grown = unsafe { pool.realloc(block, black_box(size)) };
            block = grown.ok_or_else(|| format!("no block of {size} bytes"))?;
        }
        // SAFETY: the block came from `pool` and is not used again.
        unsafe { pool.free(black_box(block)) };
    }
    Ok(())
}

/// The sizes a block of the small `realloc` workload takes in turn, from its allocation: one
/// that fits its block, one that moves it to a larger class, and one that shrinks it back, which
/// keeps it where it is.
const REALLOC_STEPS: [usize; 3] = [BLOCK - 16, 2 * BLOCK, BLOCK];

/// A block of [`BLOCK`] bytes taken through [`REALLOC_STEPS`] by `realloc`, then freed: the
/// resizes a growing string or vector makes in small classes, where the copy is short and the
/// pool's own work is most of the cost. An operation is the whole sequence.
fn heap_realloc_small(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    for _ in 0..n {
        let mut block = alloc(&pool, black_box(BLOCK))?;
        for size in REALLOC_STEPS {
            // SAFETY: the block is in use in `pool`, and its old pointer is replaced here and
            // not used again.
            let resized = unsafe { pool.realloc(block, black_box(size)) };
            block = resized.ok_or_else(|| format!("no block of {size} bytes"))?;
        }
        // SAFETY: the block came from `pool` and is not used again.
        unsafe { pool.free(black_box(block)) };
    }
    Ok(())
}

/// An allocation and a deallocation of a [`BLOCK`]-byte layout through `allocator_api2`'s
/// `Allocator` for `&HeapPool`: the way a collection (hashbrown's maps, allocator-api2's `Vec`)
/// reaches a pool.
fn heap_allocator_pair(n: u64) -> Result<(), String> {
    use allocator_api2::alloc::Allocator;

    let pool = HeapPool::new();
    let layout =
        Layout::from_size_align(BLOCK, align_of::<usize>()).map_err(|error| error.to_string())?;
    for _ in 0..n {
        let block = (&pool).allocate(black_box(layout)).map_err(|_| "no block")?;
        // SAFETY: the block came from `&pool` with `layout` and is not used again.
        unsafe { (&pool).deallocate(black_box(block.cast()), layout) };
    }
    Ok(())
}

/// An `alloc_zeroed` of [`BLOCK`] bytes and its free: the pair with the zeroing of the block.
fn heap_alloc_zeroed(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    for _ in 0..n {
        let block = pool.alloc_zeroed(black_box(BLOCK)).ok_or("no zeroed block")?;
        // SAFETY: the block came from `pool` and is not used again.
        unsafe { pool.free(black_box(block)) };
    }
    Ok(())
}

/// An alloc and a dealloc of a [`BLOCK`]-byte layout through `GlobalAlloc`, of a
/// [`LockedHeapPool`] over [`OsSource`], the pool a program installs as its
/// `#[global_allocator]`: its lock, and the layout's way to the engine, which the other heap
/// workloads, on unlocked pools, leave out. It is not this binary's global allocator, so that
/// the other workloads run as before.
fn locked_global_pair(n: u64) -> Result<(), String> {
    let pool = LockedHeapPool::new(OsSource::new(), None);
    let layout =
        Layout::from_size_align(BLOCK, align_of::<usize>()).map_err(|error| error.to_string())?;
    for _ in 0..n {
        // SAFETY: the layout's size is not zero.
        let block = unsafe { GlobalAlloc::alloc(&pool, black_box(layout)) };
        if block.is_null() {
            return Err("no block from the locked pool".into());
        }
        // SAFETY: the block came from `pool`'s `alloc` with this layout, and is not used again.
        unsafe { GlobalAlloc::dealloc(&pool, black_box(block), layout) };
    }
    Ok(())
}

/// A [`BLOCK`]-byte layout allocated through `GlobalAlloc` of a [`LockedHeapPool`], taken
/// through [`REALLOC_STEPS`] by `GlobalAlloc::realloc`, then deallocated: the resizes of the
/// collections of a program whose global allocator the pool is.
fn locked_global_realloc(n: u64) -> Result<(), String> {
    let pool = LockedHeapPool::new(OsSource::new(), None);
    let align = align_of::<usize>();
    let layout = Layout::from_size_align(BLOCK, align).map_err(|error| error.to_string())?;
    let served = |block: *mut u8| NonNull::new(block).ok_or("no block from the locked pool");
    for _ in 0..n {
        // SAFETY: the layout's size is not zero.
        let mut block = served(unsafe { GlobalAlloc::alloc(&pool, black_box(layout)) })?;
        let mut current = layout;
        for size in REALLOC_STEPS {
            // SAFETY: `block` came from `pool` with `current`, and its old pointer is replaced
            // here and not used again; `size` is not zero and fits an `isize` once rounded.
            let resized =
                unsafe { GlobalAlloc::realloc(&pool, block.as_ptr(), current, black_box(size)) };
            block = served(resized)?;
            current = Layout::from_size_align(size, align).map_err(|error| error.to_string())?;
        }
        // SAFETY: the block came from `pool` with `current`, and is not used again.
        unsafe { GlobalAlloc::dealloc(&pool, black_box(block.as_ptr()), current) };
    }
    Ok(())
}

/// Walks `n` steps of a ring of `slots` blocks over `pool`, freeing each slot's block and
/// allocating the next size of `sizes` into it.
fn ring(pool: &melon_alloc::Pool, sizes: &[usize], slots: usize, n: u64) -> Result<(), String> {
    let mut next = 0;
    let mut take = || {
        let size = sizes[next % sizes.len()];
        next += 1;
        size
    };
    let mut ring: Vec<NonNull<u8>> =
        (0..slots).map(|_| alloc(pool, take())).collect::<Result<_, _>>()?;
    for step in 0..n {
        let slot = &mut ring[step as usize % slots];
        // SAFETY: the slot's block came from `pool` and is replaced here.
        unsafe { pool.free(*slot) };
        *slot = alloc(pool, black_box(take()))?;
    }
    for block in ring {
        // SAFETY: every block left in the ring came from `pool`.
        unsafe { pool.free(block) };
    }
    Ok(())
}

fn heap_mixed(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    ring(&pool, &mixed_sizes(RING_SIZES, MIXED_SEED), MIXED_RING, n)
}

fn heap_large_ring(n: u64) -> Result<(), String> {
    let pool = HeapPool::new();
    ring(&pool, &large_sizes(RING_SIZES), LARGE_RING, n)
}

fn heap_limited_large_ring(n: u64) -> Result<(), String> {
    let pool = HeapPool::with_limit(LARGE_LIMIT);
    ring(&pool, &large_sizes(RING_SIZES), LARGE_RING, n)
}

fn heap_child_lifecycle(n: u64) -> Result<(), String> {
    let root = HeapPool::new();
    for _ in 0..n {
        let child = root.child();
        let block = alloc(&child, black_box(BLOCK))?;
        // SAFETY: the block came from `child` and is not used again.
        unsafe { child.free(block) };
    }
    Ok(())
}

/// The sizes of the blocks of each root of `heap_root_lifecycle`: four classes, four chunks.
const ROOT_SIZES: [usize; 4] = [64, 256, 1024, 4096];

/// A child pool made and dropped with nothing allocated in it: what a child costs of itself,
/// which the lifecycle with a block shares with the block's chunk.
fn heap_empty_child_lifecycle(n: u64) -> Result<(), String> {
    let root = HeapPool::new();
    for _ in 0..n {
        drop(black_box(root.child()));
    }
    Ok(())
}

fn heap_root_lifecycle(n: u64) -> Result<(), String> {
    for _ in 0..n {
        let root = HeapPool::new();
        for size in ROOT_SIZES {
            alloc(&root, black_box(size))?;
        }
        // Dropped with every block in use: the drop frees them all at once.
        drop(black_box(root));
    }
    Ok(())
}

fn sync_child_lifecycle(n: u64) -> Result<(), String> {
    static ROOT: SyncPool = SyncPool::new(GlobalSource::new(), None);
    for _ in 0..n {
        let child = ROOT.child_with_limit(1 << 20);
        let block = child.alloc(black_box(BLOCK)).ok_or("no block in the child")?;
        // SAFETY: the block came from `child` and is not used again.
        unsafe { child.free(block) };
    }
    Ok(())
}

fn shm() -> Result<ShmPool, String> {
    ShmPool::new(SHM_BYTES).map_err(|error| format!("no shared pool: {error}"))
}

/// The shared pool's lock taken and let go, with nothing done under it: the part of every
/// locked operation that is the lock's.
fn shm_lock_pair(n: u64) -> Result<(), String> {
    let shm = shm()?;
    for _ in 0..n {
        drop(black_box(shm.lock().map_err(|error| error.to_string())?));
    }
    Ok(())
}

fn shm_ping_pong(n: u64) -> Result<(), String> {
    let shm = shm()?;
    for _ in 0..n {
        let block = shm.alloc(black_box(BLOCK)).ok_or("no shared block")?;
        // SAFETY: the block came from `shm` and is not used again.
        unsafe { shm.free(black_box(block)) };
    }
    Ok(())
}

fn shm_ping_pong_at_slab_end(n: u64) -> Result<(), String> {
    let shm = shm()?;
    let first = shm.alloc(BLOCK).ok_or("no shared block")?;
    let stats = shm.stats().map_err(|e| e.to_string())?;
    let class = stats.classes().iter().find(|class| class.blocks_in_use == 1).ok_or("no class")?;
    // All of the slab's blocks in use but one, which the pairs take and give back.
    let mut held = vec![first];
    for _ in 2..class.blocks {
        held.push(shm.alloc(BLOCK).ok_or("no shared block")?);
    }
    for _ in 0..n {
        let block = shm.alloc(black_box(BLOCK)).ok_or("no shared block")?;
        // SAFETY: the block came from `shm` and is not used again.
        unsafe { shm.free(black_box(block)) };
    }
    black_box(held);
    Ok(())
}

fn shm_child_ping_pong(n: u64) -> Result<(), String> {
    let shm = shm()?;
    let child = shm.child();
    for _ in 0..n {
        let block = alloc(&child, black_box(BLOCK))?;
        // SAFETY: the block came from `child` and is not used again.
        unsafe { child.free(black_box(block)) };
    }
    Ok(())
}

/// Blocks in flight in the hand-off workload, as in the hammer's ring between a producer and
/// its consumer.
const HANDOFF_RING: usize = 256;

/// The producer/consumer round trip in one process: a child pool's block of 16 to 4096 bytes
/// allocated and handed off, and the oldest of the blocks in flight freed through the shared
/// pool; the child collects them as it runs out.
fn shm_handoff_ring(n: u64) -> Result<(), String> {
    let shm = shm()?;
    let child = shm.child();
    let sizes: Vec<usize> =
        mixed_sizes(RING_SIZES, MIXED_SEED).into_iter().map(|size| size.clamp(16, 4096)).collect();
    let mut ring = std::collections::VecDeque::with_capacity(HANDOFF_RING + 1);
    for step in 0..n + HANDOFF_RING as u64 {
        let size = sizes[step as usize % sizes.len()];
        let block = alloc(&child, black_box(size))?;
        // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
        let offset = unsafe { shm.hand_off(block) }.map_err(|error| error.to_string())?;
        ring.push_back(offset);
        if ring.len() > HANDOFF_RING {
            let oldest = ring.pop_front().ok_or("an empty ring")?;
            let block = shm.ptr_at(oldest).ok_or("a handed-off offset outside the pool")?;
            // SAFETY: the block was handed off above and is freed once, here.
            unsafe { shm.try_free(block) }.map_err(|error| error.to_string())?;
        }
    }
    for offset in ring {
        let block = shm.ptr_at(offset).ok_or("a handed-off offset outside the pool")?;
        // SAFETY: the block was handed off above and is freed once, here.
        unsafe { shm.try_free(block) }.map_err(|error| error.to_string())?;
    }
    drop(child);
    Ok(())
}

/// Names in the directory of the lookup workload.
const NAMES: u64 = 200;

fn shm_find(n: u64) -> Result<(), String> {
    let shm = shm()?;
    let names: Vec<String> = (0..NAMES).map(|i| format!("session-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        shm.insert_named(name, i as u64).map_err(|error| format!("insert {name}: {error}"))?;
    }
    for i in 0..n {
        let name = &names[(i % NAMES) as usize];
        let found = shm.find::<u64>(black_box(name)).map_err(|error| error.to_string())?;
        black_box(found.ok_or("a name inserted above is missing")?);
    }
    Ok(())
}

fn shm_mutex_pair(n: u64) -> Result<(), String> {
    let shm = shm()?;
    let mutex = melon_alloc_shm::ShmMutex::new_in(0u64, &shm).map_err(|error| error.to_string())?;
    for _ in 0..n {
        let mut guard = mutex.lock().map_err(|error| error.to_string())?;
        *guard = black_box(*guard + 1);
    }
    Ok(())
}

fn main() -> ExitCode {
    exit_with("instructions", || {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.as_slice() {
            [list] if list == "--list" => {
                for (name, _) in WORKLOADS {
                    println!("{name}");
                }
                Ok(())
            }
            [name, n] => {
                let (_, workload) = WORKLOADS
                    .iter()
                    .find(|(known, _)| known == name)
                    .ok_or_else(|| format!("unknown workload `{name}`; `--list` names them"))?;
                let n = n.parse().map_err(|_| format!("`{n}` is not a count"))?;
                workload(n)
            }
            _ => Err("usage: instructions WORKLOAD N, or instructions --list".into()),
        }
    })
}
