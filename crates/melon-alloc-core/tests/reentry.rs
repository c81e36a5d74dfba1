//! The pool's lock is not reentrant: a call into the pool from inside its own `with`, as from an
//! interrupt or signal handler that ran while the interrupted code held the lock, waits for it
//! forever. The waiting thread spins until this binary, which holds nothing else, exits.

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
