//! The lock of a shared pool made from C: the caller's `lock` and `unlock` callbacks, skipped
//! while the caller holds the lock itself.
//!
//! Melon calls the callbacks only when a child pool uses its shared parent; a call on the shared
//! pool itself expects the caller to hold the lock already. A [`ShmPool`](melon_alloc_shm::ShmPool)
//! takes its lock around every operation, so the entry points that Melon leaves to the caller run
//! inside [`as_holder`], which makes the callbacks no-ops on this thread for that call.

use core::cell::Cell;
use core::ffi::{c_int, c_void};

use melon_alloc_shm::{LockError, ShmLock};

/// A lock or unlock callback: called with the pool's `locker`, returns non-zero on failure
/// (`mln_alloc_shm_lock_cb_t`).
pub type LockCallback = unsafe extern "C" fn(*mut c_void) -> c_int;

std::thread_local! {
    /// Whether the current call on this thread runs with the caller holding the lock.
    static CALLER_HOLDS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as a call whose caller holds the shared pool's lock: the callbacks are not called.
pub(crate) fn as_holder<R>(f: impl FnOnce() -> R) -> R {
    /// Clears the flag however `f` ends, a panic included.
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CALLER_HOLDS.with(|holds| holds.set(self.0));
        }
    }
    let _reset = Reset(CALLER_HOLDS.with(|holds| holds.replace(true)));
    f()
}

/// Melon's `locker`, `lock` and `unlock`, as a [`ShmLock`].
pub(crate) struct CallbackLock {
    locker: *mut c_void,
    lock: LockCallback,
    unlock: LockCallback,
}

impl CallbackLock {
    /// A lock that calls `lock(locker)` and `unlock(locker)`.
    ///
    /// # Safety
    /// - The callbacks may be called with `locker` from any thread of any process that shares
    ///   the pool, for as long as the pool exists.
    /// - Together they are a lock that works across those processes: between a successful
    ///   `lock` and the `unlock` that follows, no other caller's `lock` succeeds.
    pub(crate) unsafe fn new(
        locker: *mut c_void,
        lock: LockCallback,
        unlock: LockCallback,
    ) -> Self {
        Self { locker, lock, unlock }
    }

    fn call(&self, callback: LockCallback) -> Result<(), LockError> {
        if CALLER_HOLDS.with(Cell::get) {
            return Ok(());
        }
        // SAFETY: `new`'s caller promised the callback may be called with `locker` from here.
        let code = unsafe { callback(self.locker) };
        if code == 0 {
            Ok(())
        } else {
            Err(LockError::new(code))
        }
    }
}

// SAFETY: the callbacks and `locker` may be used from any thread (a promise of `new`'s caller);
// the struct holds nothing else.
unsafe impl Send for CallbackLock {}
// SAFETY: as above; the struct is never changed after it is made.
unsafe impl Sync for CallbackLock {}

// SAFETY: the callbacks are the caller's process-shared lock, which `mln_alloc_shm_init`'s
// contract requires to exclude every other holder between a successful `lock` and its `unlock`,
// with the ordering of a mutex; a non-zero return is an error, and then the lock is not held.
unsafe impl ShmLock for CallbackLock {
    fn lock(&self) -> Result<(), LockError> {
        self.call(self.lock)
    }

    fn unlock(&self) -> Result<(), LockError> {
        self.call(self.unlock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicI32, Ordering};

    /// Counts lock calls in the `AtomicI32` behind `locker`; fails with 7 once it is negative.
    unsafe extern "C" fn count(locker: *mut c_void) -> c_int {
        // SAFETY: the tests pass a pointer to a live `AtomicI32`.
        let calls = unsafe { &*locker.cast::<AtomicI32>() };
        if calls.load(Ordering::Relaxed) < 0 {
            return 7;
        }
        calls.fetch_add(1, Ordering::Relaxed);
        0
    }

    fn lock_over(calls: &AtomicI32) -> CallbackLock {
        let locker = core::ptr::from_ref(calls).cast_mut().cast();
        // SAFETY: `count` may be called with the counter from any thread while the test runs.
        unsafe { CallbackLock::new(locker, count, count) }
    }

    #[test]
    fn callbacks_are_called_unless_the_caller_holds_the_lock() {
        let calls = AtomicI32::new(0);
        let lock = lock_over(&calls);
        assert_eq!(lock.lock(), Ok(()));
        assert_eq!(lock.unlock(), Ok(()));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        as_holder(|| {
            assert_eq!(lock.lock(), Ok(()));
            assert_eq!(lock.unlock(), Ok(()));
        });
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert_eq!(lock.lock(), Ok(()));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_failing_callback_is_a_lock_error_with_its_code() {
        let calls = AtomicI32::new(-1);
        assert_eq!(lock_over(&calls).lock(), Err(LockError::new(7)));
    }

    #[test]
    fn the_flag_is_cleared_after_a_panic() {
        let result = std::panic::catch_unwind(|| as_holder(|| panic!("inside")));
        assert!(result.is_err());
        assert!(!CALLER_HOLDS.with(Cell::get));
    }
}
