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
