//! What safe code can do to a pool that other code holds blocks of: never make two live blocks
//! share memory, nor break the pool's counts. What it must not do at all is shown not to compile
//! in the rustdoc of `LockedEngine` and `Pool::abandon`.

use allocator_api2::vec::Vec;
use melon_alloc_core::RegionSource;
use melon_alloc_heap::{ChildPool, GlobalSource, HeapPool, LockedPool};

#[test]
fn work_under_a_locked_pools_lock_leaves_collection_buffers_alone() {
    let pool = LockedPool::new(GlobalSource::new(), None);
    let mut first = Vec::<u64, _>::with_capacity_in(8, &pool);
    first.extend(0..8);
    // Everything safe code can do with the lock held, between two collections' allocations.
    let trimmed = pool.with(|engine| {
        let block = engine.alloc(64).unwrap();
        // SAFETY: the block came from this pool and is not used again.
        unsafe { engine.free(block) };
        engine.check().unwrap();
        engine.trim()
    });
    assert_eq!(trimmed, 0, "the chunk of `first` is in use and must stay");
    let mut second = Vec::<u64, _>::with_capacity_in(8, &pool);
    second.extend(100..108);
    assert_ne!(first.as_ptr(), second.as_ptr());
    assert!(first.iter().copied().eq(0..8));
    assert!(second.iter().copied().eq(100..108));
    assert_eq!(pool.stats().live_blocks, 2);
    drop((first, second));
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn an_abandoned_pool_holds_nothing_and_serves_afresh() {
    // The abandoned chunks come from a region this test owns, so forgetting them leaks nothing.
    let mut region = std::vec![0u8; 1 << 20];
    // SAFETY: the region outlives the pool and nothing else touches it while the pool lives.
    let source = unsafe { RegionSource::new(region.as_mut_ptr(), region.len()) };
    let pool = ChildPool::with_source(Box::new(source), None);
    let mut buffer = Vec::<u8, _>::with_capacity_in(20_000, &*pool);
    buffer.push(1);
    let small = pool.alloc(64).unwrap();
    assert_eq!((pool.stats().live_blocks, pool.stats().large_blocks), (2, 1));
    // The contract of `abandon`: no block from before comes back to the pool.
    core::mem::forget(buffer);
    let _ = small;
    // SAFETY: neither `buffer`'s block nor `small` is freed or used through the pool again.
    unsafe { pool.abandon() };
    let stats = pool.stats();
    assert_eq!(
        (stats.live_blocks, stats.large_blocks, stats.chunks, stats.bytes_held),
        (0, 0, 0, 0)
    );
    pool.check().unwrap();
    let mut again = Vec::<u8, _>::with_capacity_in(20_000, &*pool);
    again.extend([7; 20_000]);
    assert_eq!(pool.stats().large_blocks, 1);
    drop(again);
    assert_eq!(pool.stats().large_blocks, 0);
    pool.check().unwrap();
    drop(pool);
    drop(region);
}

#[test]
fn a_reset_needs_the_pool_to_itself() {
    let mut pool = HeapPool::new();
    {
        let mut buffer = Vec::<u32, _>::with_capacity_in(100, &*pool);
        buffer.extend(0..100);
        assert_eq!(pool.stats().live_blocks, 1);
    }
    // `reset` takes `&mut`, so no collection of the pool can be alive here.
    pool.reset();
    assert_eq!(pool.stats().live_blocks, 0);
    let mut buffer = Vec::<u32, _>::with_capacity_in(100, &*pool);
    buffer.extend(0..100);
    assert!(buffer.iter().copied().eq(0..100));
    drop(buffer);
    pool.check().unwrap();
}

/// Safe code only: a collection's buffer, boxed, written through the box, and grown again as a
/// `Vec`, in a root pool, a child of it and a child of a `SyncPool`. The pool reads the old block
/// through its own provenance, which under Miri's Tree Borrows freezes what the box's pointer
/// descends from, so it frees the block through that provenance too.
#[test]
fn a_boxed_buffer_grown_again_as_a_vec_keeps_its_bytes() {
    fn grown_in<A: allocator_api2::alloc::Allocator>(alloc: A) {
        let mut buffer = Vec::with_capacity_in(100, alloc);
        buffer.extend_from_slice(&[7u8; 100]);
        let mut boxed = buffer.into_boxed_slice();
        boxed.fill(8);
        let mut buffer = Vec::from(boxed);
        buffer.reserve(1000);
        buffer.push(1);
        assert!(buffer[..100].iter().all(|&byte| byte == 8));
        assert_eq!(buffer[100], 1);
    }
    let root = HeapPool::new();
    grown_in(&*root);
    grown_in(&*root.child());
    let synced = LockedPool::new(GlobalSource::new(), None);
    grown_in(synced.child());
    assert_eq!(root.stats().live_blocks, 0);
    root.check().unwrap();
}

/// A `Box` of a small array moved into a larger one by `Allocator::grow`, as a collection's
/// buffer is: the pointer `grow` gets reaches the caller's bytes alone, and the pool reads the
/// block through its own provenance (Miri checks it), in a root pool and in a child.
#[test]
fn grow_reads_a_block_the_caller_reaches_only_in_part() {
    use allocator_api2::alloc::Allocator;
    use core::alloc::Layout;
    use core::ptr::NonNull;

    fn grown_in(pool: &melon_alloc_heap::Pool) {
        let (old, new) = (Layout::new::<[u8; 24]>(), Layout::new::<[u8; 1000]>());
        let block = pool.allocate(old).unwrap().cast::<[u8; 24]>();
        // SAFETY: the block holds 24 bytes, aligned, and nothing else uses it.
        let bytes: &mut [u8; 24] = unsafe { &mut *block.as_ptr() };
        bytes.fill(9);
        let handed_back = NonNull::from(bytes).cast::<u8>();
        // SAFETY: a block of this pool, allocated with `old`; only the result is used after.
        let grown = unsafe { pool.grow(handed_back, old, new) }.unwrap().cast::<u8>();
        // SAFETY: the first 24 bytes moved with the block.
        assert!((0..24).all(|index| unsafe { grown.as_ptr().add(index).read() } == 9));
        // SAFETY: the block is this pool's, with the new layout, and not used again.
        unsafe { pool.deallocate(grown, new) };
        assert_eq!(pool.stats().live_blocks, 0);
    }
    let root = HeapPool::new();
    grown_in(&root);
    grown_in(&root.child());
}
