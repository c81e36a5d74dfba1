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

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit() {}
