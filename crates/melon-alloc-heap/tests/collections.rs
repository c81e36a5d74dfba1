//! Collections living in pools through `allocator_api2`: a `hashbrown::HashMap` and an
//! `allocator_api2` `Vec` growing in root and child pools, and in a locked pool shared by
//! threads.

use std::sync::Arc;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as PoolVec;
use hashbrown::HashMap;
use melon_alloc_core::CHUNK_SIZE;
#[cfg(miri)]
use melon_alloc_heap::GlobalSource;
use melon_alloc_heap::{HeapPool, LockedPool, Pool};
#[cfg(not(miri))]
use melon_alloc_heap::{LockedHeapPool, OsSource};

/// Divides the entry counts below under Miri, which interprets every hash and copy; the
/// collections still grow through many tables and buffers.
const SCALE: u32 = if cfg!(miri) { 100 } else { 1 };

/// A locked pool with an optional limit: a `LockedHeapPool`, over memory mapped from the system.
#[cfg(not(miri))]
fn locked_pool(limit: Option<usize>) -> LockedHeapPool {
    LockedPool::new(OsSource::new(), limit)
}

/// Under Miri, which takes unmapping part of a mapping (how `OsSource` aligns its regions) for a
/// partial deallocation, the same lock over the global allocator.
#[cfg(miri)]
fn locked_pool(limit: Option<usize>) -> LockedPool<GlobalSource> {
    LockedPool::new(GlobalSource::new(), limit)
}

/// Fills a map in `alloc` far past its first table and checks every entry.
fn grow_a_map<A: Allocator + Clone>(alloc: A, count: u64) {
    let mut map = HashMap::new_in(alloc.clone());
    for key in 0..count {
        let mut value = PoolVec::new_in(alloc.clone());
        value.extend_from_slice(&[key, key * 3]);
        assert!(map.insert(key, value).is_none());
    }
    assert_eq!(map.len() as u64, count);
    for key in 0..count {
        assert_eq!(map[&key][..], [key, key * 3], "key {key}");
    }
    for key in (0..count).step_by(2) {
        assert!(map.remove(&key).is_some());
    }
    map.shrink_to_fit();
    assert_eq!(map.len() as u64, count / 2);
    assert!(map.iter().all(|(key, value)| key % 2 == 1 && value[1] == key * 3));
}

/// Pushes far past a vector's first buffer, so it grows (and moves) many times.
fn grow_a_vec<A: Allocator>(alloc: A, count: u32) -> PoolVec<u32, A> {
    let mut vec = PoolVec::new_in(alloc);
    for value in 0..count {
        vec.push(value.wrapping_mul(2_654_435_761));
    }
    assert!(vec.iter().enumerate().all(|(i, &v)| v == (i as u32).wrapping_mul(2_654_435_761)));
    vec
}

#[test]
fn a_map_and_a_vec_grow_in_a_root_pool() {
    let pool = HeapPool::new();
    grow_a_map(&pool, 20_000 / u64::from(SCALE));
    assert_eq!(pool.stats().live_blocks, 0);
    let len = 100_000 / SCALE;
    let mut vec = grow_a_vec(&pool, len);
    assert_eq!(pool.stats().live_blocks, 1);
    assert!(pool.stats().bytes_in_use >= len as usize * 4);
    vec.truncate(10);
    vec.shrink_to_fit();
    assert_eq!(vec.len(), 10);
    assert_eq!(vec[9], 9u32.wrapping_mul(2_654_435_761));
    drop(vec);
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn a_map_and_a_vec_grow_in_child_pools() {
    let root = HeapPool::with_limit(64 << 20);
    let child = root.child();
    grow_a_map(&child, 20_000 / u64::from(SCALE));
    let vec = grow_a_vec(&child, 50_000 / SCALE);
    let grandchild = child.child_with_limit(16 << 20);
    let inner = grow_a_vec(&grandchild, 50_000 / SCALE);
    grow_a_map(&grandchild, 5_000 / u64::from(SCALE));
    assert_eq!(grandchild.stats().live_blocks, 1);
    assert!(root.stats().bytes_lent >= child.stats().bytes_held);
    drop(inner);
    drop(grandchild);
    drop(vec);
    assert_eq!(child.stats().live_blocks, 0);
    // Through a plain `&Pool` as well.
    let pool: &Pool = &child;
    grow_a_map(pool, 1_000 / u64::from(SCALE));
    child.check().unwrap();
    drop(child);
    assert_eq!(root.available(), Some(64 << 20));
}

#[test]
fn a_collection_over_the_limit_gets_an_error_not_a_panic() {
    let root = HeapPool::new();
    let child = root.child_with_limit(4 * CHUNK_SIZE);
    let mut vec: PoolVec<u8, _> = PoolVec::new_in(&child);
    assert!(vec.try_reserve(2 * CHUNK_SIZE).is_ok());
    assert!(vec.try_reserve(5 * CHUNK_SIZE).is_err());
    vec.extend_from_slice(&[7; 100]);
    // What is left holds one more chunk, for the map's small table.
    assert!(child.available().unwrap() >= CHUNK_SIZE);
    let mut map: HashMap<u64, u64, _, _> = HashMap::new_in(&child);
    assert!(map.try_reserve(1 << 20).is_err());
    assert!(map.try_reserve(100).is_ok());
    map.insert(1, 2);
    assert_eq!((vec.len(), map[&1]), (100, 2));
    child.check().unwrap();
}

#[test]
fn a_locked_pool_is_shared_by_scoped_threads() {
    let pool = locked_pool(None);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2u32)
            .map(|worker| {
                let pool = &pool;
                scope.spawn(move || {
                    let mut vecs = Vec::new();
                    for round in 0..20 {
                        vecs.push(grow_a_vec(pool, 2_000 / SCALE + worker * 100 + round));
                    }
                    grow_a_map(pool, 3_000 / u64::from(SCALE));
                    vecs.iter().map(|vec| vec.len()).sum::<usize>()
                })
            })
            .collect();
        let lens: Vec<_> = workers.into_iter().map(|worker| worker.join().unwrap()).collect();
        let expected = if cfg!(miri) { [590, 2_590] } else { [40_190, 42_190] };
        assert_eq!(lens, expected);
    });
    let stats = pool.stats();
    assert_eq!((stats.live_blocks, stats.bytes_in_use), (0, 0));
    pool.check().unwrap();
}

#[test]
fn a_locked_pool_in_an_arc_outlives_the_threads_that_fill_it() {
    let pool = Arc::new(locked_pool(Some(64 << 20)));
    let handles: Vec<_> = (0..2)
        .map(|worker| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let vec = grow_a_vec(&*pool, 30_000 / SCALE);
                let sum: u64 = vec.iter().map(|&v| u64::from(v)).sum();
                (worker, sum)
            })
        })
        .collect();
    let expected: u64 = (0..30_000 / SCALE).map(|i| u64::from(i.wrapping_mul(2_654_435_761))).sum();
    for handle in handles {
        let (_, sum) = handle.join().unwrap();
        assert_eq!(sum, expected);
    }
    // A vector made on one thread is dropped on another.
    let vec = grow_a_vec(&*pool, 1_000);
    assert_eq!(pool.stats().live_blocks, 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let vec = vec;
            assert_eq!(vec.len(), 1_000);
            drop(vec);
            assert_eq!(pool.stats().live_blocks, 0);
        });
    });
    assert_eq!(pool.stats().live_blocks, 0);
    assert!(pool.available().unwrap() <= 64 << 20);
    pool.check().unwrap();
}

/// Empties a vector of 8,000 bytes in `alloc` with `shrink_to_fit`, as a collection that shrinks
/// to nothing does, and drops it: allocator-api2's `Vec` keeps whatever pointer the shrink gives
/// and never deallocates a vector of no capacity, so the shrink must free the block.
fn shrink_a_vec_to_nothing<A: Allocator>(alloc: A) {
    let mut vec: PoolVec<u8, A> = PoolVec::with_capacity_in(8000, alloc);
    vec.push(1);
    vec.clear();
    vec.shrink_to_fit();
    assert_eq!(vec.capacity(), 0);
    drop(vec);
}

#[test]
fn a_vector_shrunk_to_nothing_gives_its_block_back_in_every_pool() {
    let root = HeapPool::new();
    let child = root.child_with_limit(64 << 10);
    let locked = locked_pool(Some(64 << 10));
    for _ in 0..100 {
        shrink_a_vec_to_nothing(&*root);
        shrink_a_vec_to_nothing(&child);
        shrink_a_vec_to_nothing(&locked);
    }
    assert_eq!(root.stats().live_blocks, 0);
    assert_eq!(child.stats().live_blocks, 0);
    assert_eq!(locked.stats().live_blocks, 0);
    // A layout of no bytes takes no block, as allocator-api2's `Global` gives none.
    let none = core::alloc::Layout::from_size_align(0, 32).unwrap();
    let block = Allocator::allocate(&&*root, none).unwrap();
    assert_eq!(block.len(), 0);
    assert_eq!(root.stats().live_blocks, 0);
    // SAFETY: the block came from this allocator with this layout.
    unsafe { Allocator::deallocate(&&*root, block.cast(), none) };
    for pool in [&*root, &*child] {
        pool.check().unwrap();
    }
}
