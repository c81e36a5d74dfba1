//! Running out of system memory makes the C API return NULL rather than abort: the handles, heap
//! pools and child pools, shared pools' state and locks, the table of shared pools and a shared
//! pool's records of the chunks lent to a child are allocated fallibly. A global allocator that
//! can be told to fail stands in for a system without memory. A shared pool larger than the
//! machine's memory is a NULL too, before it takes any.

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use melon_alloc_capi::{
    mln_alloc_available_capacity, mln_alloc_destroy, mln_alloc_free, mln_alloc_init, mln_alloc_m,
    mln_alloc_shm_init, MlnAlloc,
};

/// The system allocator, failing a thread's allocations once it has let through as many as it
/// was told to.
struct Failing;

std::thread_local! {
    /// How many more allocations this thread may make before they fail.
    static ALLOWED: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Whether an allocation of this thread failed since the count was last set.
    static FAILED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to `System`, or returns NULL, which `GlobalAlloc` allows for any request.
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let allowed = ALLOWED.try_with(Cell::get).unwrap_or(usize::MAX);
        if allowed == 0 {
            let _ = FAILED.try_with(|failed| failed.set(true));
            return ptr::null_mut();
        }
        if allowed != usize::MAX {
            let _ = ALLOWED.try_with(|left| left.set(allowed - 1));
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

/// Runs `f` with the allocations of this thread after the first `allowed` failing, and says
/// whether one failed.
fn with_memory_for<R>(allowed: usize, f: impl FnOnce() -> R) -> (R, bool) {
    FAILED.with(|failed| failed.set(false));
    ALLOWED.with(|left| left.set(allowed));
    let result = f();
    ALLOWED.with(|left| left.set(usize::MAX));
    (result, FAILED.with(Cell::get))
}

/// Runs `f` with every allocation of this thread failing.
fn without_memory<R>(f: impl FnOnce() -> R) -> R {
    with_memory_for(0, f).0
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

/// Calls `make` with memory for 0 allocations, then 1, and so on, until a call makes all it
/// needs: each call that met a failed allocation must return NULL, and the one that met none a
/// pool that allocates, which is then destroyed. Returns how many allocations that call made.
///
/// # Safety
/// `make` returns NULL or a new pool that nothing else uses, which locks itself or is locked
/// by [`take`] and [`release`] (`callbacks`).
unsafe fn fails_cleanly_at_each_allocation(
    make: impl Fn() -> *mut MlnAlloc,
    callbacks: bool,
) -> usize {
    for allowed in 0.. {
        let (pool, failed) = with_memory_for(allowed, &make);
        if failed {
            assert!(pool.is_null(), "a pool made with its allocation {allowed} failing");
            continue;
        }
        assert!(!pool.is_null(), "a pool made with all the memory it asked for");
        // SAFETY: the caller promises a new pool that nothing else uses, and the lock is held
        // around its use where the callbacks are its lock, as the header requires.
        unsafe {
            if callbacks {
                take(ptr::null_mut());
            }
            let block = mln_alloc_m(pool, 64);
            assert!(!block.is_null());
            mln_alloc_free(block);
            if callbacks {
                release(ptr::null_mut());
            }
            mln_alloc_destroy(pool);
        }
        return allowed;
    }
    unreachable!("the loop returns")
}

/// A lock for the callbacks of `mln_alloc_shm_init`, good between the threads of one process,
/// which is all these tests need.
static HELD: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn take(_locker: *mut c_void) -> c_int {
    while HELD.swap(true, Ordering::Acquire) {
        std::hint::spin_loop();
    }
    0
}

unsafe extern "C" fn release(_locker: *mut c_void) -> c_int {
    HELD.store(false, Ordering::Release);
    0
}

#[test]
fn making_a_heap_pool_is_a_null_whichever_of_its_allocations_fails() {
    // SAFETY: each pool is made by the closures and used by this thread alone.
    unsafe {
        // The handle and the pool's own bookkeeping, at least.
        assert!(
            fails_cleanly_at_each_allocation(|| mln_alloc_init(ptr::null_mut(), 0), false) >= 2
        );
        assert!(
            fails_cleanly_at_each_allocation(|| mln_alloc_init(ptr::null_mut(), 1 << 20), false)
                >= 2
        );
        let root = mln_alloc_init(ptr::null_mut(), 0);
        assert!(fails_cleanly_at_each_allocation(|| mln_alloc_init(root, 0), false) >= 2);
        assert!(fails_cleanly_at_each_allocation(|| mln_alloc_init(root, 64 << 10), false) >= 2);
        mln_alloc_destroy(root);
    }
}

#[test]
fn making_a_shared_pool_is_a_null_whichever_of_its_allocations_fails() {
    // SAFETY: each pool is made by the closures and used by this thread alone; the callbacks are
    // a lock, for as long as the program runs.
    unsafe {
        // The handle, the pool's state and its entry in the table of shared pools, at least.
        let own_lock = || mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None);
        assert!(fails_cleanly_at_each_allocation(own_lock, false) >= 3);
        // And the callbacks' lock.
        let callbacks = || mln_alloc_shm_init(1 << 20, ptr::null_mut(), Some(take), Some(release));
        assert!(fails_cleanly_at_each_allocation(callbacks, true) >= 4);
    }
}

#[test]
fn making_a_shared_pool_when_this_process_has_many_is_a_null_whichever_allocation_fails() {
    // The process keeps its shared pools in blocks of 16 slots, and a pool that finds every slot
    // taken needs memory for a new block. With more and more pools alive, some step meets a
    // full block, whatever other tests hold meanwhile.
    let mut alive = Vec::new();
    for _ in 0..40 {
        // SAFETY: each pool is made by the closure and used by this thread alone.
        unsafe {
            let make = || mln_alloc_shm_init(64 << 10, ptr::null_mut(), None, None);
            fails_cleanly_at_each_allocation(make, false);
            let pool = mln_alloc_shm_init(64 << 10, ptr::null_mut(), None, None);
            assert!(!pool.is_null());
            alive.push(pool);
        }
    }
    for pool in alive {
        // SAFETY: made above, destroyed once.
        unsafe { mln_alloc_destroy(pool) };
    }
}

#[test]
fn making_a_child_of_a_shared_pool_is_a_null_whichever_of_its_allocations_fails() {
    // SAFETY: each pool is made by the closure and used by this thread alone; the shared pool
    // locks itself.
    unsafe {
        let shm = mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None);
        assert!(!shm.is_null());
        let initial = mln_alloc_available_capacity(shm);
        // The handle, the child's source and its bookkeeping, at least.
        assert!(fails_cleanly_at_each_allocation(|| mln_alloc_init(shm, 0), false) >= 3);
        assert_eq!(mln_alloc_available_capacity(shm), initial);
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

#[test]
fn a_shared_pool_larger_than_the_machine_is_a_null_at_once() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_line = meminfo.lines().find(|line| line.starts_with("MemTotal:")).unwrap();
    let kib: u64 =
        total_line["MemTotal:".len()..].trim().trim_end_matches("kB").trim().parse().unwrap();
    let twice = 2 * kib * 1024;
    if twice > 1 << 40 {
        println!("skipped: this machine has more memory than a pool can hold");
        return;
    }
    // SAFETY: no lock callbacks; a pool made would be destroyed below.
    let pool = unsafe { mln_alloc_shm_init(twice as usize, ptr::null_mut(), None, None) };
    let made = !pool.is_null();
    if made {
        // SAFETY: a live pool of this test.
        unsafe { mln_alloc_destroy(pool) };
    }
    assert!(!made, "a pool of twice the machine's memory was made");
}
