//! The pool's lock is not reentrant: a call into the pool from inside its own `with` that takes
//! the lock, as from an interrupt or signal handler that ran while the interrupted code held the
//! lock, waits for it forever. The waiting thread spins until this binary, which holds nothing
//! else, exits. The calls that take no lock come back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use melon_alloc_core::{LockedPool, RegionSource};

#[test]
// Miri would run the spinning thread, step by step, as long as the test sleeps.
#[cfg(not(miri))]
fn a_call_into_the_pool_from_inside_its_own_with_waits_forever() {
    static ENTERED: AtomicBool = AtomicBool::new(false);
    static CAME_BACK: AtomicBool = AtomicBool::new(false);
    let arena: &'static mut [u8] = Vec::leak(vec![0u8; 1 << 16]);
    let pool: &'static LockedPool<RegionSource> =
        Box::leak(Box::new(LockedPool::new(RegionSource::from_static(arena), None)));
    std::thread::spawn(move || {
        let _never = pool.with(|_held| {
            ENTERED.store(true, Ordering::SeqCst);
            pool.alloc(64)
        });
        CAME_BACK.store(true, Ordering::SeqCst);
    });
    while !ENTERED.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // The inner call, a few instructions past the flag, has had ample time to come back.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!CAME_BACK.load(Ordering::SeqCst), "the inner call took the lock its caller held");
}

/// A child that holds a chunk serves small blocks through `GlobalAlloc` without its parent's
/// lock, so a thread that holds the parent's lock may use it: an interrupt handler with a child
/// of its own, say. Only a chunk, or a block aligned to one, asks the parent.
#[test]
#[cfg(not(miri))]
fn a_child_with_a_chunk_serves_small_blocks_while_its_parents_lock_is_held() {
    use core::alloc::{GlobalAlloc, Layout};

    static CAME_BACK: AtomicBool = AtomicBool::new(false);
    let arena: &'static mut [u8] = Vec::leak(vec![0u8; 1 << 18]);
    let parent: &'static LockedPool<RegionSource> =
        Box::leak(Box::new(LockedPool::new(RegionSource::from_static(arena), None)));
    let child: &'static _ = Box::leak(Box::new(parent.child()));
    let layout = Layout::from_size_align(64, 16).unwrap();
    // The child takes its chunk now, outside the parent's lock.
    let warm = child.alloc(64).unwrap().as_ptr().addr();
    std::thread::spawn(move || {
        parent.with(|_held| {
            // SAFETY: the block came from `child` with this layout and is not used again.
            unsafe {
                GlobalAlloc::dealloc(child, core::ptr::with_exposed_provenance_mut(warm), layout)
            };
            // SAFETY: the layout's size is not zero.
            let block = unsafe { GlobalAlloc::alloc(child, layout) };
            assert!(!block.is_null());
            // SAFETY: as above.
            unsafe { GlobalAlloc::dealloc(child, block, layout) };
        });
        CAME_BACK.store(true, Ordering::SeqCst);
    });
    // Far longer than the few calls take: a wait for the parent's lock never comes back.
    for _ in 0..600 {
        if CAME_BACK.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("a small block of the child waited for its parent's lock");
}

/// Making a child takes no lock (nor does dropping one that never took a chunk), and formatting
/// the pool only tries it: both come back from inside the pool's own `with`.
#[test]
fn making_a_child_and_formatting_the_pool_inside_with_come_back() {
    static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    // SAFETY: this test is the arena's only user.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let pool = LockedPool::new(RegionSource::from_static(arena), None);
    let shown = pool.with(|_held| {
        drop(pool.child());
        format!("{pool:?}")
    });
    assert_eq!(shown, "LockedPool { .. }");
}
