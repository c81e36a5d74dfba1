//! The crash tests' fail points, which kill the process at a chosen step of a locked operation,
//! to show that the next process to take the lock undoes what it left.
//!
//! This module exists only in builds with `--cfg melon_failpoints`, for this crate's crash tests
//! (the `crash_*` cases of `tests/fork.rs` and `tests/named_fork.rs`). It is not part of the
//! crate's API: never build a program with that cfg.

use core::sync::atomic::{AtomicU64, Ordering};

static COUNTDOWN: AtomicU64 = AtomicU64::new(0);

/// Kills the process at the `n`-th fail point from now (1 is the next one); 0 disarms.
pub fn arm(n: u64) {
    COUNTDOWN.store(n, Ordering::SeqCst);
}

/// One fail point: kills the process if it is the one [`arm`] asked for.
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
