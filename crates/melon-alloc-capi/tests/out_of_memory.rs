//! Running out of system memory makes the C API return NULL rather than abort: the handles, the
//! table of shared pools and a shared pool's records of the chunks lent to a child are allocated
//! fallibly, before anything else a call allocates. A global allocator that can be told to fail stands in for a system
//! without memory.

use core::ptr;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use melon_alloc_capi::{
    mln_alloc_available_capacity, mln_alloc_destroy, mln_alloc_free, mln_alloc_init, mln_alloc_m,
    mln_alloc_shm_init,
};

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

#[test]
fn making_a_pool_without_memory_is_a_null() {
    // SAFETY: each pointer is a live pool of this test, used by this thread alone.
    unsafe {
        assert!(without_memory(|| mln_alloc_init(ptr::null_mut(), 0)).is_null());
        assert!(
            without_memory(|| mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None)).is_null()
        );
        let root = mln_alloc_init(ptr::null_mut(), 0);
        assert!(!root.is_null());
        assert!(without_memory(|| mln_alloc_init(root, 0)).is_null());
        let shm = mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None);
        assert!(!shm.is_null());
        assert!(without_memory(|| mln_alloc_init(shm, 0)).is_null());
        // And with memory again, all is as before.
        let child = mln_alloc_init(root, 0);
        assert!(!child.is_null());
        mln_alloc_destroy(root);
        mln_alloc_destroy(shm);
    }
}

#[test]
fn a_chunk_of_a_shared_pool_without_memory_for_its_record_goes_back() {
    // SAFETY: each pointer is a live pool or block of this test, used by this thread alone; the
    // shared pool locks itself.
    unsafe {
        let shm = mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None);
        assert!(!shm.is_null());
        let initial = mln_alloc_available_capacity(shm);
        let child = mln_alloc_init(shm, 0);
        assert!(!child.is_null());
        // The child's first chunk needs a record in its chunk source, which needs memory.
        assert!(without_memory(|| mln_alloc_m(child, 64)).is_null());
        assert_eq!(mln_alloc_available_capacity(shm), initial);
        let block = mln_alloc_m(child, 64);
        assert!(!block.is_null());
        assert!(mln_alloc_available_capacity(shm) < initial);
        mln_alloc_free(block);
        mln_alloc_destroy(child);
        assert_eq!(mln_alloc_available_capacity(shm), initial);
        mln_alloc_destroy(shm);
    }
}
