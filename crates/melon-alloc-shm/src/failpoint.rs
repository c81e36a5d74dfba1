//! Test-only fail points: with the `failpoints` feature, a test can have the process killed at
//! the n-th step of a locked operation, to show that the next process undoes it.

#[cfg(feature = "failpoints")]
mod enabled {
    use core::sync::atomic::{AtomicU64, Ordering};

    static COUNTDOWN: AtomicU64 = AtomicU64::new(0);

    /// Kills the process at the `n`-th fail point from now (1 is the next one); 0 disarms.
    pub fn arm(n: u64) {
        COUNTDOWN.store(n, Ordering::SeqCst);
    }

    pub(crate) fn hit() {
        let left = COUNTDOWN.load(Ordering::Relaxed);
        if left == 0 {
            return;
        }
        if left == 1 {
            crate::sys::kill_self();
        }
        COUNTDOWN.store(left - 1, Ordering::Relaxed);
    }
}

#[cfg(feature = "failpoints")]
pub use enabled::arm;
#[cfg(feature = "failpoints")]
pub(crate) use enabled::hit;

/// The unit tests' fail points, in builds without the feature: the `n`-th point from now
/// unwinds instead of killing, so that a test in one thread, Miri's among them, can stop an
/// operation at any step and look at what it left.
#[cfg(all(test, not(feature = "failpoints")))]
pub(crate) mod unwinding {
    use std::cell::Cell;

    std::thread_local! {
        static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
    }

    /// Unwinds at the `n`-th fail point from now on this thread (1 is the next one); 0 disarms.
    pub(crate) fn arm(n: u64) {
        COUNTDOWN.with(|countdown| countdown.set(n));
    }

    /// The unwinding that [`arm`] asks for.
    pub(crate) struct Stopped;

    pub(crate) fn hit() {
        let left = COUNTDOWN.with(Cell::get);
        if left == 0 {
            return;
        }
        COUNTDOWN.with(|countdown| countdown.set(left - 1));
        if left == 1 {
            std::panic::resume_unwind(Box::new(Stopped));
        }
    }
}

#[cfg(all(test, not(feature = "failpoints")))]
pub(crate) use unwinding::hit;

#[cfg(all(not(test), not(feature = "failpoints")))]
#[inline(always)]
pub(crate) fn hit() {}
