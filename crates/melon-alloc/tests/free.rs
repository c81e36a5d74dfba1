//! The pointer-only `free` on blocks of every kind of pool, whatever locks the caller holds.

use melon_alloc::{free, ShmPool};

/// A block of a shared pool's child needs no lock to be freed: `free` frees it while the thread
/// holds the shared pool's lock, which the pool's own blocks would wait for.
#[cfg(target_os = "linux")]
#[test]
fn a_child_block_of_a_shared_pool_is_freed_while_the_pool_is_locked() {
    let shm = ShmPool::new(1 << 20).unwrap();
    let child = shm.child();
    let kept = child.alloc(64).unwrap();
    let handed = child.alloc(64).unwrap();
    // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
    let offset = unsafe { shm.hand_off(handed) }.unwrap();
    let received = shm.ptr_at(offset).unwrap();
    let guard = shm.lock().unwrap();
    // SAFETY: each block is in use in a live pool and freed once; one thread uses the pools.
    unsafe {
        free(kept);
        free(received);
    }
    drop(guard);
    assert_eq!(child.stats().live_blocks, 1, "the handed-off block waits for its child");
    // The child collects the handed-off block when it runs out; dropping it takes everything.
    drop(child);
    let stats = shm.stats().unwrap();
    assert_eq!((stats.live_blocks, stats.lent_bytes), (0, 0));
    shm.check().unwrap();
}
