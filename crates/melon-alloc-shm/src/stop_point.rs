//! The steps of a locked operation at which a test can stop it, to look at what it left: every
//! logged write, commit and checkpoint, every step of a recovery and of a growth.
//!
//! Builds with `--cfg melon_failpoints` kill the process there when the crash tests ask (the
//! public `failpoint` module); the unit tests, in any build, unwind there instead
//! ([`unwinding`]). Anywhere else a stop point is nothing at all.

/// A stop point: stops the operation here if a test asked for this one.
#[inline(always)]
pub(crate) fn hit() {
    #[cfg(melon_failpoints)]
    crate::failpoint::hit();
    #[cfg(test)]
    unwinding::hit();
}

/// The unit tests' stop points: the `n`-th point from now unwinds instead of killing, so that a
/// test in one thread, Miri's among them, can stop an operation at any step and look at what it
/// left.
#[cfg(test)]
pub(crate) mod unwinding {
    use std::cell::Cell;

    std::thread_local! {
        static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
    }

    /// Unwinds at the `n`-th stop point from now on this thread (1 is the next one); 0 disarms.
    pub(crate) fn arm(n: u64) {
        COUNTDOWN.with(|countdown| countdown.set(n));
    }

    /// The unwinding that [`arm`] asks for.
    pub(crate) struct Stopped;

    pub(super) fn hit() {
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
