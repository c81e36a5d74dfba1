//! The pool's lock: the pluggable [`ShmLock`], and the built-in lock in the mapping that
//! survives the death of its holder.

use std::time::{Duration, Instant};

use crate::layout::WAITERS;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
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

/// How many times a waiter looks at the lock word, pausing in between, before it sleeps: a holder
/// keeps the lock for well under a microsecond, and this spin of a few microseconds is far
/// cheaper than a sleep and a wake-up through the kernel.
const SPINS: u32 = 16;

/// The longest pause between two looks while spinning: 2^6 pause instructions.
const SPIN_BACKOFF_MAX: u32 = 6;

/// What the built-in lock asks of the operating system. [`sys::Os`] makes the real calls; the
/// loom models put a modelled thread behind it instead, whose death the model decides. The lock
/// functions are generic over it, so the real path has no indirection.
pub(crate) trait LockOs {
    /// The calling thread's id, which the lock word records as its owner: never 0, and never
    /// with the [`WAITERS`] bit set.
    fn thread_id(&self) -> u32;

    /// Whether the thread with id `tid` has died. When it says so, everything that thread wrote
    /// must be visible to the caller, as the kernel's bookkeeping of a death makes it: nothing
    /// else orders a dead holder's writes before the taker's reads, since the holder never
    /// released the lock.
    fn is_dead(&self, tid: u32) -> bool;

    /// Sleeps until `word` may have changed from `expected`, or `timeout` passes. May return
    /// early for any reason.
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration);

    /// Wakes one thread sleeping in [`wait`](LockOs::wait) on `word`, if there is one.
    fn wake_one(&self, word: &AtomicU32);
}

/// Takes the built-in lock: a futex word in the mapping holding the owner's thread id, taken
/// over (and counted in `takeovers`) when its owner has died.
#[inline]
pub(crate) fn lock_builtin(word: &AtomicU32, takeovers: &AtomicU64) -> Result<(), ShmError> {
    lock_builtin_with(word, takeovers, &sys::Os)
}

/// [`lock_builtin`] with the operating system's part played by `os`.
#[inline]
pub(crate) fn lock_builtin_with<O: LockOs>(
    word: &AtomicU32,
    takeovers: &AtomicU64,
    os: &O,
) -> Result<(), ShmError> {
    let me = os.thread_id();
    if try_take(word, me) {
        return Ok(());
    }
    lock_contended(word, me, takeovers, os)
}

/// Takes the lock if it is free, in one step, so that two threads can never both see it free and
/// both take it.
#[cfg(not(melon_loom_broken))]
#[inline]
fn try_take(word: &AtomicU32, me: u32) -> bool {
    word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// A deliberately broken [`try_take`], built only for the loom models that must catch it: the
/// check and the store are two steps, so two threads can both find the lock free and both take
/// it.
#[cfg(melon_loom_broken)]
fn try_take(word: &AtomicU32, me: u32) -> bool {
    if word.load(Ordering::Acquire) != 0 {
        return false;
    }
    word.store(me, Ordering::Relaxed);
    true
}

/// Whether a waiter may take the lock from `owner`: only once the owner has died, since a live
/// owner may be in the middle of changing the state.
#[cfg(not(melon_loom_broken))]
#[inline]
fn may_take_over<O: LockOs>(os: &O, owner: u32) -> bool {
    os.is_dead(owner)
}

/// A deliberately broken [`may_take_over`], built only for the loom models that must catch it:
/// it takes the lock from any owner that keeps a waiter waiting, dead or merely slow.
#[cfg(melon_loom_broken)]
fn may_take_over<O: LockOs>(os: &O, owner: u32) -> bool {
    // The question is still asked, so that the broken build runs the same calls as the real one.
    let _ = os.is_dead(owner);
    true
}

#[cold]
fn lock_contended<O: LockOs>(
    word: &AtomicU32,
    me: u32,
    takeovers: &AtomicU64,
    os: &O,
) -> Result<(), ShmError> {
    // Loom explores every interleaving; the spin would only multiply them.
    if !cfg!(melon_loom) {
        for round in 0..SPINS {
            // Each look at the word pulls its cache line away from the holder, who writes it
            // again to unlock and may be about to take it again: looking less often as the wait
            // grows lets a busy holder run several operations in a row on warm lines.
            for _ in 0..1u32 << round.min(SPIN_BACKOFF_MAX) {
                core::hint::spin_loop();
            }
            // Taken without the waiters bit, as on the fast path: whoever sleeps on the word
            // sets the bit again when it wakes and finds the lock held.
            if word.load(Ordering::Relaxed) == 0 && try_take(word, me) {
                return Ok(());
            }
        }
    }
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
        os.wait(word, current | WAITERS, LIVENESS_CHECK);
        // Loom has no clock: there, any wait may have been the one that timed out.
        if cfg!(melon_loom) || last_check.elapsed() >= LIVENESS_CHECK {
            last_check = Instant::now();
            let now = word.load(Ordering::Relaxed);
            if now & !WAITERS == owner
                && may_take_over(os, owner)
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
    unlock_builtin_with(word, &sys::Os);
}

/// [`unlock_builtin`] with the operating system's part played by `os`.
#[inline]
pub(crate) fn unlock_builtin_with<O: LockOs>(word: &AtomicU32, os: &O) {
    if word.swap(0, Ordering::Release) & WAITERS != 0 {
        os.wake_one(word);
    }
}
