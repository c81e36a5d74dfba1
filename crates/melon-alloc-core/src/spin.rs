//! A spin lock that needs no operating system: what lets a pool be shared between threads, or
//! serve as the global allocator, in `no_std` code.

use crate::sync::{spin_hint, AtomicBool, Ordering, UnsafeCell};

/// A test-and-test-and-set spin lock around a value.
#[derive(Debug)]
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands the value to one thread at a time, so sharing the lock only ever moves
// the value between threads, which `T: Send` allows.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    #[cfg(not(melon_loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    #[cfg(melon_loom)]
    pub(crate) fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Runs `f` on the value with the lock held; a panic in `f` releases the lock.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.acquire();
        let _release = Release(&self.locked);
        // SAFETY: the lock is held until `_release` drops, after `f` returns or unwinds, so this
        // is the only access to the value.
        unsafe { self.value.with_mut(|value| f(&mut *value)) }
    }

    /// Runs `f` on the value if the lock is free right now.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok()?;
        let _release = Release(&self.locked);
        // SAFETY: as in `with`.
        Some(unsafe { self.value.with_mut(|value| f(&mut *value)) })
    }

    #[cfg(not(melon_loom_broken))]
    #[inline]
    fn acquire(&self) {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Wait on a plain load, which keeps the cache line shared, before trying again.
            while self.locked.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
    }

    /// A deliberately broken acquire, built only for the loom model that must catch it: the
    /// check and the set are two steps, so two threads can both get in.
    #[cfg(melon_loom_broken)]
    fn acquire(&self) {
        while self.locked.load(Ordering::Acquire) {
            spin_hint();
        }
        self.locked.store(true, Ordering::Relaxed);
    }
}

/// Releases the lock when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
