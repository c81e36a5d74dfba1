//! Helpers shared by the single-process test binaries: a lock of the test's own that counts its
//! calls and can be told to fail, byte patterns to fill blocks with and read back, and a global
//! allocator that can be told to fail.

// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::alloc::{GlobalAlloc, System};
use std::cell::Cell;
use std::sync::Arc;

use melon_alloc_shm::{LockError, ShmLock};

/// The code [`TestLock`] fails with when it is told to.
pub(crate) const FAIL_CODE: i32 = 5;
/// The code [`TestLock`] fails with when it is taken while held: the tests that use it are
/// single-threaded, so that can only be the same thread taking it twice, which would wait
/// forever on a real lock.
pub(crate) const HELD_CODE: i32 = 35;

/// What a [`TestLock`] has seen, shared with the test that made it.
#[derive(Debug, Default)]
pub(crate) struct LockLog {
    held: AtomicBool,
    locks: AtomicUsize,
    unlocks: AtomicUsize,
    fail_lock: AtomicBool,
    fail_unlock: AtomicBool,
}

impl LockLog {
    /// Successful `lock` calls so far.
    pub(crate) fn locks(&self) -> usize {
        self.locks.load(Ordering::SeqCst)
    }

    /// `unlock` calls so far.
    pub(crate) fn unlocks(&self) -> usize {
        self.unlocks.load(Ordering::SeqCst)
    }

    /// Whether the lock is held now.
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Makes every `lock` fail from now on (`true`) or work again (`false`).
    pub(crate) fn fail_lock(&self, fail: bool) {
        self.fail_lock.store(fail, Ordering::SeqCst);
    }

    /// Makes every `unlock` report a failure (it still releases the lock).
    pub(crate) fn fail_unlock(&self, fail: bool) {
        self.fail_unlock.store(fail, Ordering::SeqCst);
    }
}

/// A lock for a pool used by one thread: it counts its calls, refuses to be taken twice, and
/// fails on demand, which is what Melon's lock callbacks may do.
#[derive(Debug)]
pub(crate) struct TestLock(pub(crate) Arc<LockLog>);

impl TestLock {
    /// A lock and the log to watch it through.
    pub(crate) fn new() -> (Self, Arc<LockLog>) {
        let log = Arc::new(LockLog::default());
        (Self(Arc::clone(&log)), log)
    }
}

// SAFETY: `held` lets one holder in at a time (a second `lock` is refused, not let in), and its
// sequentially consistent swaps order each holder's writes before the next holder's reads.
unsafe impl ShmLock for TestLock {
    fn lock(&self) -> Result<(), LockError> {
        if self.0.fail_lock.load(Ordering::SeqCst) {
            return Err(LockError::new(FAIL_CODE));
        }
        if self.0.held.swap(true, Ordering::SeqCst) {
            return Err(LockError::new(HELD_CODE));
        }
        self.0.locks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn unlock(&self) -> Result<(), LockError> {
        assert!(self.0.held.swap(false, Ordering::SeqCst), "unlock of a lock that is not held");
        self.0.unlocks.fetch_add(1, Ordering::SeqCst);
        if self.0.fail_unlock.load(Ordering::SeqCst) {
            return Err(LockError::new(FAIL_CODE));
        }
        Ok(())
    }
}

/// The byte at `index` of the pattern for `seed`: different for every seed and position, so a
/// block overwritten by another, or moved to the wrong place, reads back wrong.
pub(crate) fn pattern_byte(seed: usize, index: usize) -> u8 {
    (seed.wrapping_mul(131).wrapping_add(index.wrapping_mul(7)) % 251) as u8
}

/// Fills `len` bytes of a block with the pattern for `seed`.
///
/// # Safety
/// `block` is an in-use block of at least `len` bytes that nothing else accesses meanwhile.
pub(crate) unsafe fn stamp(block: NonNull<u8>, len: usize, seed: usize) {
    // SAFETY: the caller promises `len` writable bytes that nothing else touches.
    let bytes = unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) };
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern_byte(seed, index);
    }
}

/// Whether the first `len` bytes of a block hold the pattern for `seed`.
///
/// # Safety
/// `block` is an in-use block of at least `len` bytes that nothing writes meanwhile.
pub(crate) unsafe fn has_stamp(block: NonNull<u8>, len: usize, seed: usize) -> bool {
    // SAFETY: the caller promises `len` readable bytes that nothing writes.
    let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), len) };
    bytes.iter().enumerate().all(|(index, &byte)| byte == pattern_byte(seed, index))
}

/// The system allocator, failing every allocation of a thread while it is told to: a binary that
/// tests a lack of memory makes it its `#[global_allocator]`.
pub(crate) struct Failing;

std::thread_local! {
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to `System`, or returns NULL, which `GlobalAlloc` allows for any request.
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if FAIL.try_with(Cell::get).unwrap_or(false) {
            return ptr::null_mut();
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller; every block came from `System`.
        unsafe { System.dealloc(block, layout) }
    }
}

/// Runs `f` with every allocation of this thread failing.
pub(crate) fn without_memory<R>(f: impl FnOnce() -> R) -> R {
    FAIL.with(|fail| fail.set(true));
    let result = f();
    FAIL.with(|fail| fail.set(false));
    result
}
