//! The table of the descriptions a process holds its identities and owner slots in pools through,
//! which the fork handler closes in a child: it grows as the process uses more pools, and a
//! description it has no room for, when there is no memory for more of it, is closed rather than
//! kept, and the lock refused for want of memory until there is some. One test alone in its
//! binary, so that no other test's pools share the table or the descriptors it counts.

mod common;

use common::{without_memory, Failing};
use melon_alloc_shm::{ShmError, ShmPool};

#[global_allocator]
static GLOBAL: Failing = Failing;

/// The descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A pool this process has locked, and lent a chunk to a child pool of: two descriptions listed.
fn pool_in_use() -> ShmPool {
    let pool = ShmPool::new(256 << 10).unwrap();
    drop(pool.lock().unwrap());
    let child = pool.child();
    assert!(child.alloc(64).is_some(), "a chunk for a child pool");
    drop(child);
    pool
}

#[test]
fn a_full_table_grows_and_without_memory_refuses_and_closes_the_description() {
    // 256 descriptions fill the table's first block.
    let mut pools: Vec<ShmPool> = (0..128).map(|_| pool_in_use()).collect();
    // A pool whose identity finds the table full and no memory for more: its description is
    // closed, and the lock refused, rather than taken under the anonymous identity for good.
    let pool = ShmPool::new(256 << 10).unwrap();
    let before = open_descriptors();
    let locked = without_memory(|| pool.lock().map(drop));
    let no_memory = matches!(
        &locked,
        Err(ShmError::Os { errno, .. }) if errno.raw_os_error() == libc::ENOMEM
    );
    assert!(no_memory, "{locked:?}");
    assert_eq!(open_descriptors(), before, "the description no table lists is closed");
    // With memory, the table grows, and the same pool's description is made and kept.
    drop(pool.lock().unwrap());
    assert_eq!(open_descriptors(), before + 1, "the description is listed and kept");
    pools.push(pool);
    for pool in &pools {
        pool.check().unwrap();
    }
}
