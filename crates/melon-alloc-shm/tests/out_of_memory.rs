//! A shared pool made when the global allocator has no memory for its state or its lock: the
//! constructors say `ShmError::Os` with `ENOMEM` rather than abort. A global allocator that can be
//! told to fail stands in for a system without memory.

mod common;

use core::alloc::Layout;
use core::ptr;
use std::alloc::{GlobalAlloc, System};
use std::cell::Cell;

use common::TestLock;
use melon_alloc_shm::{ShmError, ShmPool};

/// The system allocator, failing every allocation of a thread while it is told to.
struct Failing;

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

#[global_allocator]
static GLOBAL: Failing = Failing;

/// Runs `f` with every allocation of this thread failing.
fn without_memory<R>(f: impl FnOnce() -> R) -> R {
    FAIL.with(|fail| fail.set(true));
    let result = f();
    FAIL.with(|fail| fail.set(false));
    result
}

/// Whether `made` is the error of a pool without memory for what it keeps on the heap.
fn is_out_of_memory(made: Result<ShmPool, ShmError>) -> bool {
    let enomem = rustix::io::Errno::NOMEM.raw_os_error();
    matches!(made, Err(ShmError::Os { errno, .. }) if errno.raw_os_error() == enomem)
}

#[test]
fn a_pool_without_memory_for_its_state_says_enomem() {
    assert!(is_out_of_memory(without_memory(|| ShmPool::new(1 << 20))));
    // With memory again, the same call makes a pool.
    assert!(ShmPool::new(1 << 20).is_ok());
}

#[test]
fn a_lock_given_without_memory_for_it_is_reported_by_build() {
    let (lock, _log) = TestLock::new();
    let builder = without_memory(|| ShmPool::builder().capacity(1 << 20).lock(lock));
    assert!(is_out_of_memory(builder.build()));
    let (lock, _log) = TestLock::new();
    assert!(ShmPool::builder().capacity(1 << 20).lock(lock).build().is_ok());
}
