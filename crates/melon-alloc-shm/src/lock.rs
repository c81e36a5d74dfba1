//! The pool's lock: the pluggable [`ShmLock`], and the built-in lock in the mapping that
//! survives the death of its holder.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::layout::WAITERS;
use crate::sys;
use crate::{LockError, ShmError};

/// A lock that processes sharing a pool take around each operation: Melon's `lock` and `unlock`
/// callbacks. It must work across processes (a process-shared mutex or semaphore in shared
/// memory, a file lock, ...), and be inherited by, or reachable from, every process that uses
/// the pool.
///
/// If a holder can die while holding it, the lock itself must notice and let the next process in
/// (as a robust mutex does); the pool then finds the dead holder's operation in its undo log and
/// undoes it.
pub trait ShmLock: Send + Sync {
    /// Takes the lock, waiting as long as it takes.
    ///
    /// # Errors
    /// The lock's own failure; the pool then does nothing.
    fn lock(&self) -> Result<(), LockError>;

    /// Releases the lock.
    ///
    /// # Errors
    /// The lock's own failure.
    fn unlock(&self) -> Result<(), LockError>;
}

/// How long a waiter sleeps before it looks at whether the holder is still alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(20);

/// Takes the built-in lock: a futex word in the mapping holding the owner's thread id, taken
/// over (and counted in `takeovers`) when its owner has died.
#[inline]
pub(crate) fn lock_builtin(word: &AtomicU32, takeovers: &AtomicU64) -> Result<(), ShmError> {
    let me = sys::ids().tid;
    if word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return Ok(());
    }
    lock_contended(word, me, takeovers)
}

#[cold]
fn lock_contended(word: &AtomicU32, me: u32, takeovers: &AtomicU64) -> Result<(), ShmError> {
    let mut last_check = Instant::now();
    loop {
        let current = word.load(Ordering::Relaxed);
        if current == 0 {
            // Whoever else is waiting went to sleep expecting a wake-up from the next owner, so
            // this owner must assume there are waiters.
            if word.compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return Ok(());
            }
            continue;
        }
        let owner = current & !WAITERS;
        if owner == me {
            return Err(ShmError::WouldDeadlock);
        }
        if current & WAITERS == 0
            && word
                .compare_exchange(current, current | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        sys::futex_wait(word, current | WAITERS, LIVENESS_CHECK);
        if last_check.elapsed() >= LIVENESS_CHECK {
            last_check = Instant::now();
            let now = word.load(Ordering::Relaxed);
            if now & !WAITERS == owner
                && sys::thread_is_dead(owner)
                && word
                    .compare_exchange(now, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                takeovers.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
}

/// Releases the built-in lock, waking one waiter if any may be asleep.
#[inline]
pub(crate) fn unlock_builtin(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) & WAITERS != 0 {
        sys::futex_wake_one(word);
    }
}
