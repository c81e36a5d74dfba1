//! The pool's locks: the pluggable [`ShmLock`]; the built-in lock word, the pool's own and every
//! [`ShmMutex`](crate::ShmMutex)'s, a futex word that names its holder's process, whose death a
//! waiter sees as the end of the process's identity lock; and the protocol every robust lock
//! follows when a holder dies.

use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::{LockError, ShmError};

/// A lock that processes sharing a pool take around each operation: Melon's `lock` and `unlock`
/// callbacks. It must work across processes (a process-shared mutex or semaphore in shared
/// memory, a file lock, ...), and be inherited by, or reachable from, every process that uses
/// the pool.
///
/// If a holder can die while holding it, the lock itself must notice and let the next process in
/// (as a robust mutex does); the pool then finds the dead holder's operation in its undo log and
/// undoes it.
///
/// A pool's lock timeout ([`ShmPool::try_lock_for`](crate::ShmPool::try_lock_for),
/// [`ShmPool::set_lock_timeout`](crate::ShmPool::set_lock_timeout)) does not apply to a lock of
/// this trait: the pool calls [`lock`](ShmLock::lock), which waits as long as the lock itself
/// waits. A lock that should give up returns an error from `lock` when it does.
///
/// Nor does the pool know which thread holds a lock of this trait. A thread that holds the
/// pool's [`ShmGuard`](crate::ShmGuard) and calls an operation that takes the lock again (any
/// operation of the pool or of its child pools but the guard's own, formatting the pool with
/// `{:?}` included, which reads its stats) calls `lock` while it holds it: where the built-in
/// lock answers [`ShmError::WouldDeadlock`], a lock of this trait that waits waits for itself.
///
/// # Safety
/// The pool's state is plain memory that every holder reads and writes, so the pool is only as
/// sound as the lock. An implementation must uphold:
/// - between a [`lock`](ShmLock::lock) that returns `Ok` and the next [`unlock`](ShmLock::unlock)
///   of that holder, no other thread of any process using the pool gets `Ok` from `lock`;
/// - a `lock` that returns `Ok` sees every write made before the previous holder's `unlock` (the
///   acquire and release ordering of a mutex);
/// - a `lock` that returns an error does not hold the lock;
/// - it is not a process's record lock (`fcntl` with `F_SETLK` or `F_SETLKW`) on the pool's own
///   file: the pool opens and closes descriptors of that file while it holds the lock (for its
///   owner table), and closing any descriptor of a file drops every record lock the process
///   holds on it. Record locks on another file, open file description locks (`F_OFD_SETLK`) on
///   bytes below 2^62, and `flock` are all fine.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use melon_alloc_shm::{LockError, ShmLock, ShmPool};
///
/// /// A lock for the threads of one process, refusing rather than waiting when it is held.
/// struct Refusing(AtomicBool);
///
/// // SAFETY: the swap lets one holder in at a time, with acquire and release ordering.
/// unsafe impl ShmLock for Refusing {
///     fn lock(&self) -> Result<(), LockError> {
///         if self.0.swap(true, Ordering::Acquire) {
///             return Err(LockError::new(16));
///         }
///         Ok(())
///     }
///     fn unlock(&self) -> Result<(), LockError> {
///         self.0.store(false, Ordering::Release);
///         Ok(())
///     }
/// }
///
/// let shm = ShmPool::with_lock(1 << 20, Refusing(AtomicBool::new(false)))?;
/// let guard = shm.lock()?;
/// // Taking the lock again, this thread is refused: a lock that waited would wait for ever.
/// assert!(shm.alloc(64).is_none());
/// drop(guard);
/// let block = shm.alloc(64).unwrap();
/// // SAFETY: the block came from `shm` and is not used again.
/// unsafe { shm.try_free(block) }?;
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
pub unsafe trait ShmLock: Send + Sync {
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

/// How many times a waiter tries the lock, pausing in between, before it sleeps: a holder keeps
/// the lock for well under a microsecond, and a spin, even of tens of microseconds, is cheaper
/// than a sleep and a wake-up through the kernel.
const SPINS: u32 = 16;

/// The longest pause between two tries while spinning: 2^10 pause instructions, 7,167 in all
/// before the waiter sleeps. A `pause` lasts from a few cycles to over a hundred by processor
/// (about 13 ns on the Intel Xeon of the bench page, where the whole spin takes about 90 µs). The
/// longer the pauses, the more operations a busy holder runs in a row while the lock's line and
/// its own stay in its cache: on that machine, two processes of the hammer did 8.1 to 8.5
/// million operations a second in all with pauses of at most 2^6, and 13.3 to 14.3 with 2^10.
const SPIN_BACKOFF_MAX: u32 = 10;

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// From a holder that released it.
    Clean,
    /// From a holder that died holding it: the caller holds it now, and repairs what the holder
    /// left half done.
    OwnerDied,
}

/// Why a lock was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Someone holds it (from a try that does not wait).
    Busy,
    /// Someone held it until the deadline.
    TimedOut,
}

/// Set in the pool lock's word while a process may be asleep waiting for it: the holder then
/// wakes one when it lets go.
pub(crate) const WAITERS: u32 = 1 << 31;

/// The bits of the pool lock's word that name its holder: a process's identity in the pool,
/// never 0, which is a free lock.
pub(crate) const HOLDER: u32 = WAITERS - 1;

/// What the pool's lock needs of the system: sleeping on its word, waking a sleeper, and asking
/// whether the process behind an identity is alive. The kernel's futex and the identity locks
/// on the pool's file do it for real ([`Kernel`]); the loom models give it a modelled one.
pub(crate) trait Waits {
    /// Sleeps while `word` holds `expected`, until woken, for a while, or until `deadline`.
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Waited;

    /// Wakes one process asleep on `word`.
    fn wake(&self, word: &AtomicU32);

    /// Whether the process whose identity is `holder` may still be running. An answer the
    /// system cannot give is "alive": a live holder must never be taken over.
    fn is_alive(&self, holder: u32) -> bool;
}

/// How a [`Waits::wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The word changed, or the holder woke a sleeper: look again.
    Woken,
    /// A while passed and the word may not have changed: time to ask whether its holder lives.
    Checkpoint,
    /// The deadline passed.
    Expired,
}

/// The pool's built-in lock, as one process takes it: a 32-bit word in the mapping holding the
/// identity of the process that holds it (and [`WAITERS`]), taken with one compare-and-swap and
/// released with one, or, when the waiters' bit is set, with a swap and a wake. A waiter sleeps
/// on the word with the kernel's futex, waking now and then to ask whether the holder's process
/// still lives; a dead holder's word is taken over by one compare-and-swap from the word the
/// waiter saw, and reported as [`Acquired::OwnerDied`]. Process identities come from the pool's
/// file, not from any id of the kernel's, so no pid namespace can make one process look like
/// another.
pub(crate) struct ProcessLock<'a, W> {
    word: &'a AtomicU32,
    /// This process's identity: in `1..=HOLDER`.
    me: u32,
    waits: W,
}

impl<'a, W: Waits> ProcessLock<'a, W> {
    /// The lock whose word is `word`, as the process whose identity is `me` takes it.
    pub(crate) fn new(word: &'a AtomicU32, me: u32, waits: W) -> Self {
        debug_assert!(me != 0 && me <= HOLDER, "identity {me} out of range");
        Self { word, me, waits }
    }

    /// Takes the lock from a holder found dead, when the word still says `seen`.
    fn take_over(&self, seen: u32) -> bool {
        // Acquire: the dead holder's writes were made before its identity lock went, which
        // `is_alive` saw; this orders them before the repair (the kernel orders them for real).
        self.word
            .compare_exchange(seen, self.me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

impl<W: Waits> ProcessLock<'_, W> {
    /// Whether the word may be free, by a read that leaves the holder's cache line shared: a
    /// waiter tries to take it only then.
    fn looks_free(&self) -> bool {
        self.word.load(Ordering::Relaxed) & HOLDER == 0
    }

    /// Takes the word if nobody holds it, without waiting.
    #[inline]
    pub(crate) fn try_lock(&self) -> Result<Acquired, Refused> {
        match self.word.compare_exchange(0, self.me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(Acquired::Clean),
            Err(_) => Err(Refused::Busy),
        }
    }

    /// Takes the word, waiting as long as it takes, or at most `timeout`; a holder found dead
    /// is taken over.
    pub(crate) fn lock(&self, timeout: Option<Duration>) -> Result<Acquired, Refused> {
        // A timeout too long to add to the clock is no timeout.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let mut seen = self.word.load(Ordering::Relaxed);
        loop {
            if seen & HOLDER == 0 {
                // Taken with the waiters' bit: whoever else sleeps on the word is woken in turn.
                match self.word.compare_exchange(
                    seen,
                    self.me | WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(Acquired::Clean),
                    Err(now) => {
                        seen = now;
                        continue;
                    }
                }
            }
            if seen & WAITERS == 0 {
                if let Err(now) = self.word.compare_exchange(
                    seen,
                    seen | WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    seen = now;
                    continue;
                }
                seen |= WAITERS;
            }
            let waited = self.waits.wait(self.word, seen, deadline);
            let now = self.word.load(Ordering::Relaxed);
            let holder = seen & HOLDER;
            // Only a word unchanged since before the sleep can belong to a dead holder: any
            // change was made by a live process. Another thread of this process is alive.
            if waited != Waited::Woken
                && now == seen
                && holder != self.me
                && !self.waits.is_alive(holder)
            {
                if self.take_over(seen) {
                    return Ok(Acquired::OwnerDied);
                }
                seen = self.word.load(Ordering::Relaxed);
                continue;
            }
            if waited == Waited::Expired && now & HOLDER != 0 {
                return Err(Refused::TimedOut);
            }
            // A deadline that passed as the word came free still lets this waiter try once.
            seen = now;
        }
    }

    /// Releases the word; `EPERM`, changing nothing, where it names another process.
    #[inline]
    pub(crate) fn unlock(&self) -> Result<(), Errno> {
        // One read-modify-write when nobody waits: the waiters read the word over and over, so
        // every separate access of the holder's may have to fetch its line back first.
        let Err(seen) =
            self.word.compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed)
        else {
            return Ok(());
        };
        // Only the holder's process changes the holder the word names (waiters only add
        // `WAITERS`), so the holder the failed exchange saw is current for a holder; a caller
        // that is not one is refused, and changes nothing. The swap reads the bit anew.
        if seen & HOLDER != self.me {
            return Err(Errno::PERM);
        }
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            self.waits.wake(self.word);
        }
        Ok(())
    }
}

/// Takes a built-in lock word, waiting at most `timeout` if one is given. When the previous
/// holder died holding it, `repair` undoes what it left half done, and the takeover is counted in
/// `takeovers`. A taker that dies in the middle of the repair is a dead holder like any other:
/// the next taker repairs again, so a repair must be one that can run twice.
///
/// # Errors
/// [`ShmError::LockTimeout`] when `timeout` passed first. The caller then does not hold the
/// lock.
#[inline]
pub(crate) fn lock_robust<W: Waits>(
    mutex: &ProcessLock<'_, W>,
    timeout: Option<Duration>,
    takeovers: &AtomicU64,
    repair: impl FnOnce(),
) -> Result<(), ShmError> {
    let acquired = match mutex.try_lock() {
        Ok(acquired) => acquired,
        Err(_) => lock_contended(mutex, timeout)?,
    };
    if acquired == Acquired::OwnerDied {
        take_over(takeovers, repair);
    }
    Ok(())
}

/// What a lock from a dead owner asks: count it, and repair the state.
#[cfg(not(melon_loom_broken))]
#[cold]
fn take_over(takeovers: &AtomicU64, repair: impl FnOnce()) {
    takeovers.fetch_add(1, Ordering::Relaxed);
    repair();
}

/// A deliberately broken [`take_over`], built only for the loom models that must catch it: it
/// ignores the owner's death, as if the lock had been released, so nothing is repaired or
/// counted.
#[cfg(melon_loom_broken)]
fn take_over(_takeovers: &AtomicU64, _repair: impl FnOnce()) {}

#[cold]
fn lock_contended<W: Waits>(
    mutex: &ProcessLock<'_, W>,
    timeout: Option<Duration>,
) -> Result<Acquired, ShmError> {
    let start = Instant::now();
    // Loom explores the schedules; the spin would only multiply them.
    if !cfg!(melon_loom) {
        for round in 0..SPINS {
            // Each try pulls the lock's cache line away from the holder, who writes it again to
            // unlock and may be about to take it again: trying less often as the wait grows
            // lets a busy holder run several operations in a row on warm lines.
            for _ in 0..1u32 << round.min(SPIN_BACKOFF_MAX) {
                core::hint::spin_loop();
            }
            if !mutex.looks_free() {
                continue;
            }
            match mutex.try_lock() {
                Ok(acquired) => return Ok(acquired),
                Err(Refused::Busy) => {}
                Err(refused) => return Err(refusal(refused, start)),
            }
        }
    }
    // The spin, 7,167 pauses, is not taken off the timeout.
    mutex.lock(timeout).map_err(|refused| refusal(refused, start))
}

/// The error for a lock that was not taken, after waiting since `start`.
fn refusal(refused: Refused, start: Instant) -> ShmError {
    match refused {
        Refused::TimedOut => ShmError::LockTimeout { waited: start.elapsed() },
        // A wait without a deadline never reports busy; say so rather than invent an errno.
        Refused::Busy => ShmError::os("taking a lock of the pool", Errno::BUSY),
    }
}

/// Releases the built-in lock.
///
/// # Errors
/// [`ShmError::Os`] when the mutex says the caller does not hold it: the caller's hold was
/// broken (see "The lock" in the architecture notes).
#[inline]
pub(crate) fn unlock_robust<W: Waits>(mutex: &ProcessLock<'_, W>) -> Result<(), ShmError> {
    mutex.unlock().map_err(|errno| ShmError::os("releasing a lock of the pool", errno))
}
