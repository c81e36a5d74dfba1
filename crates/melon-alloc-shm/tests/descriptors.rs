//! The descriptors a process's use of shared pools keeps open: one per pool, its own. The
//! descriptions its identities and owner slots lock through are kept by a page of the pool's
//! file mapped through each, and their descriptors closed, so however many pools it locks and
//! lends chunks from, it holds no more; and making an identity takes no memory of the process's
//! heap.
//! One test alone in its binary, so that no other test's pools share what it counts.

mod common;
mod pins;

use common::{without_memory, Failing};
use melon_alloc_shm::ShmPool;
use pins::pinned_pages;

#[global_allocator]
static GLOBAL: Failing = Failing;

/// The descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn pools_in_use_keep_one_descriptor_each_and_lock_without_heap_memory() {
    let before = open_descriptors();
    let pools: Vec<ShmPool> = (0..128).map(|_| ShmPool::new(256 << 10).unwrap()).collect();
    assert_eq!(open_descriptors(), before + pools.len(), "the pools' own");
    for pool in &pools {
        drop(pool.lock().unwrap());
        let child = pool.child();
        assert!(child.alloc(64).is_some(), "a chunk for a child pool");
    }
    assert_eq!(pinned_pages(), 2 * pools.len(), "an identity and a slot in each pool");
    assert_eq!(open_descriptors(), before + pools.len(), "identities and slots keep none");
    // A pool whose identity is made where the heap has no memory to give: made all the same.
    let pool = ShmPool::new(256 << 10).unwrap();
    let locked = without_memory(|| pool.lock().map(drop));
    assert!(locked.is_ok(), "{locked:?}");
    assert_eq!(pinned_pages(), 2 * pools.len() + 1, "its identity");
    assert_eq!(open_descriptors(), before + pools.len() + 1);
    for pool in pools.iter().chain([&pool]) {
        pool.check().unwrap();
    }
}
