#![doc = include_str!("../README.md")]
//!
//! # The Rust side
//!
//! The functions below are the library's C ABI, `#[no_mangle]` under Melon's names; a Rust
//! program has the `melon-alloc` crate for the same pools without raw pointers. Every entry
//! point catches panics and returns NULL (or nothing) instead: no unwind crosses into C.
//!
//! How the C API maps onto the pools, and the choices it makes where Melon's documentation is
//! silent, are in `docs/architecture.md` under "C API".

use core::ffi::c_void;
use core::panic::AssertUnwindSafe;
use core::ptr::{self, NonNull};

use melon_alloc_heap::Pool;
use melon_alloc_shm::ShmPool;

mod lock;
mod pool;
mod shared;

pub use lock::LockCallback;
pub use pool::MlnAlloc;

use lock::CallbackLock;
use pool::{on_shared, Kind};
use shared::Owner;

/// `M_ALLOC_INFINITE_SIZE`: what [`mln_alloc_available_capacity`] returns for a pool without a
/// limit.
pub const M_ALLOC_INFINITE_SIZE: usize = usize::MAX;

/// Runs `f`, or returns `fallback` if it panics: no panic crosses into C.
fn guarded<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            // Dropping a panic's payload runs arbitrary code, which could panic again.
            core::mem::forget(payload);
            fallback
        }
    }
}

/// A block as C sees it; NULL for none.
fn to_c(block: Option<NonNull<u8>>) -> *mut c_void {
    block.map_or(ptr::null_mut(), |block| block.as_ptr().cast())
}

/// `0` means no limit, as in Melon.
fn limit(capacity: usize) -> Option<usize> {
    (capacity != 0).then_some(capacity)
}

/// Makes a heap pool: over the system heap when `parent` is NULL, over `parent` otherwise.
/// `capacity` is a limit in bytes, 0 for none. NULL on failure.
///
/// # Safety
/// `parent` is NULL or a pool from `mln_alloc_init` or `mln_alloc_shm_init`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_init(parent: *mut MlnAlloc, capacity: usize) -> *mut MlnAlloc {
    guarded(ptr::null_mut(), || {
        let handle = match NonNull::new(parent) {
            None => pool::new_heap(limit(capacity)),
            // SAFETY: the caller promises a live pool; destroying it destroys the child first.
            Some(parent) => unsafe { pool::new_child(parent, limit(capacity)) },
        };
        handle.as_ptr()
    })
}

/// Makes a shared-memory pool of `capacity` bytes whose child pools call `lock(locker)` and
/// `unlock(locker)` around each use of it; with both callbacks NULL, the pool locks itself with
/// a lock of its own. NULL on failure.
///
/// # Safety
/// - With callbacks: they may be called with `locker` from any thread of any process that uses
///   the pool, for as long as the pool exists, and together they are a lock that works across
///   those processes.
/// - With callbacks, the caller holds the lock around every call on the pool itself (not on its
///   child pools), as Melon requires.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_shm_init(
    capacity: usize,
    locker: *mut c_void,
    lock: Option<LockCallback>,
    unlock: Option<LockCallback>,
) -> *mut MlnAlloc {
    guarded(ptr::null_mut(), || {
        let made = match (lock, unlock) {
            (Some(lock), Some(unlock)) => {
                // SAFETY: forwarded from the caller.
                let lock = unsafe { CallbackLock::new(locker, lock, unlock) };
                ShmPool::with_lock(capacity, lock)
            }
            (None, None) => ShmPool::new(capacity),
            _ => return ptr::null_mut(),
        };
        made.map_or(ptr::null_mut(), |shm| pool::new_shared(shm).as_ptr())
    })
}

/// Destroys a pool and every pool made from it, releasing all their memory. NULL does nothing.
///
/// # Safety
/// - `pool` is NULL or a pool from `mln_alloc_init` or `mln_alloc_shm_init`, not destroyed.
/// - Neither it, nor a pool made from it, nor any of their blocks is used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_destroy(pool: *mut MlnAlloc) {
    guarded((), || {
        if let Some(pool) = NonNull::new(pool) {
            // SAFETY: forwarded from the caller.
            unsafe { pool::destroy(pool) }
        }
    });
}

/// Allocates `size` bytes from a pool, 16-byte aligned, zeroed if `zeroed`.
fn alloc_in(pool: &MlnAlloc, size: usize, zeroed: bool) -> Option<NonNull<u8>> {
    let heap: &Pool = match pool.kind() {
        Kind::Heap(heap) => heap,
        Kind::Child(child) => child,
        Kind::Shared(shm) if zeroed => return on_shared(shm, |shm| shm.alloc_zeroed(size)),
        Kind::Shared(shm) => return on_shared(shm, |shm| shm.alloc(size)),
    };
    if zeroed {
        heap.alloc_zeroed(size)
    } else {
        heap.alloc(size)
    }
}

/// Allocates `size` bytes from `pool`, 16-byte aligned. NULL on failure or for a NULL pool.
///
/// # Safety
/// `pool` is NULL or a live pool; for a shared pool with lock callbacks, the caller holds its
/// lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_m(pool: *mut MlnAlloc, size: usize) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: the caller promises NULL or a live pool.
        let pool = unsafe { pool.as_ref() };
        to_c(pool.and_then(|pool| alloc_in(pool, size, false)))
    })
}

/// Like [`mln_alloc_m`], with the `size` bytes zeroed.
///
/// # Safety
/// As for [`mln_alloc_m`].
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_c(pool: *mut MlnAlloc, size: usize) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: the caller promises NULL or a live pool.
        let pool = unsafe { pool.as_ref() };
        to_c(pool.and_then(|pool| alloc_in(pool, size, true)))
    })
}

/// Frees a block of any pool.
///
/// # Safety
/// `block` is an in-use block of a live pool and is not used afterwards; for a block of a
/// shared pool itself with lock callbacks, the caller holds its lock.
unsafe fn free_block(block: NonNull<u8>, owner: Owner) {
    match owner {
        // What `melon_alloc_heap::free` does, written out so that `Pool::free` inlines here:
        // this is the path of nearly every free from C.
        Owner::Heap => {
            // SAFETY: a block of a live heap pool, as the caller promises.
            let pool = unsafe { heap_pool_of(block) };
            // SAFETY: (1) heap pools record their `Pool` in their chunks, and the pool is live;
            // (2) a heap pool is used by one thread at a time, as in Melon, so this is the only
            // use of it now; (3) the caller gives the block up.
            unsafe { pool.as_ref().free(block) }
        }
        Owner::Shared(shm) => {
            // SAFETY: the block is in use, so its pool is live.
            let shm = unsafe { shm.as_ref() };
            // A pointer the pool refuses (a double free, say) changes nothing: ignore it.
            // SAFETY: forwarded from the caller.
            let _ = on_shared(shm, |shm| unsafe { shm.try_free(block) });
        }
    }
}

/// The bytes an in-use block can hold, from its pool.
///
/// # Safety
/// `block` is an in-use block of a live pool; `owner` is its owner.
unsafe fn usable_size(block: NonNull<u8>, owner: Owner) -> Option<usize> {
    match owner {
        Owner::Heap => {
            // SAFETY: the caller promises an in-use block of a live pool, a heap pool's, whose
            // chunk header names its pool.
            let pool = unsafe { heap_pool_of(block) };
            // SAFETY: an in-use block of that pool.
            Some(unsafe { pool.as_ref().usable_size(block) })
        }
        // SAFETY: the block is in use, so its pool is live.
        Owner::Shared(shm) => on_shared(unsafe { shm.as_ref() }, |shm| shm.usable_size(block)).ok(),
    }
}

/// The heap pool a block belongs to, from its chunk header.
///
/// # Safety
/// `block` is an in-use block of a live heap pool.
#[inline]
unsafe fn heap_pool_of(block: NonNull<u8>) -> NonNull<Pool> {
    // SAFETY: forwarded from the caller.
    let pool = unsafe { melon_alloc_core::owner_of(block) }.cast::<Pool>().cast_mut();
    // A heap pool's chunks always name it, so this is never the dangling pointer.
    NonNull::new(pool).unwrap_or(NonNull::dangling())
}

/// Resizes a block; see [`mln_alloc_re`].
///
/// # Safety
/// As for [`mln_alloc_re`].
unsafe fn realloc(
    handle: *mut MlnAlloc,
    block: Option<NonNull<u8>>,
    size: usize,
) -> Option<NonNull<u8>> {
    // SAFETY: the caller promises NULL or a live pool.
    let pool = unsafe { handle.as_ref() };
    let Some(block) = block else {
        return alloc_in(pool?, size, false);
    };
    let owner = shared::owner(block);
    if size == 0 {
        // SAFETY: forwarded from the caller, who gives the block up.
        unsafe { free_block(block, owner) };
        return None;
    }
    let pool = pool?;
    let in_place = match (owner, pool.kind()) {
        (Owner::Heap, Kind::Heap(_) | Kind::Child(_)) => {
            // SAFETY: a heap pool's block, as `owner` found, in use in a live pool.
            let owner = unsafe { heap_pool_of(block) };
            pool.heap().is_some_and(|heap| ptr::eq(heap, owner.as_ptr()))
        }
        (Owner::Shared(shared), Kind::Shared(shm)) => ptr::eq(shared.as_ptr(), &**shm),
        _ => false,
    };
    match pool.kind() {
        Kind::Heap(_) | Kind::Child(_) if in_place => {
            let heap = pool.heap()?;
            // SAFETY: an in-use block of this pool; forwarded from the caller.
            unsafe { heap.realloc(block, size) }
        }
        Kind::Shared(shm) if in_place => {
            // SAFETY: an in-use block of this pool; forwarded from the caller.
            on_shared(shm, |shm| unsafe { shm.realloc(block, size) })
        }
        // A block of another pool moves into this one.
        _ => {
            // SAFETY: forwarded from the caller.
            let old = unsafe { usable_size(block, owner) }?;
            let moved = alloc_in(pool, size, false)?;
            // SAFETY: (1) the old block holds `old` bytes and the new one at least `size`; (2)
            // two in-use blocks never overlap.
            unsafe { ptr::copy_nonoverlapping(block.as_ptr(), moved.as_ptr(), old.min(size)) };
            // SAFETY: forwarded from the caller, who gives the old block up.
            unsafe { free_block(block, owner) };
            Some(moved)
        }
    }
}

/// Resizes the block `ptr` to `size` bytes, keeping its contents up to the smaller size; a
/// shrink stays in place. `size == 0` frees the block and returns NULL; `ptr == NULL`
/// allocates. On failure returns NULL and leaves the block as it was.
///
/// # Safety
/// - `pool` is NULL or a live pool; `ptr` is NULL or an in-use block of a live pool (normally
///   `pool`).
/// - Once the block moves or is freed, `ptr` is not used again.
/// - For a shared pool with lock callbacks, the caller holds its lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_re(
    pool: *mut MlnAlloc,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: forwarded from the caller.
        to_c(unsafe { realloc(pool, NonNull::new(ptr.cast()), size) })
    })
}

/// Frees a block by its pointer alone. NULL does nothing.
///
/// # Safety
/// - `ptr` is NULL or an in-use block of a live pool, and is not used afterwards.
/// - For a block of a shared pool itself (not of one of its child pools) with lock callbacks,
///   the caller holds the pool's lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_free(ptr: *mut c_void) {
    guarded((), || {
        if let Some(block) = NonNull::new(ptr.cast::<u8>()) {
            // SAFETY: forwarded from the caller.
            unsafe { free_block(block, shared::owner(block)) }
        }
    });
}

/// The bytes a pool can still take: the limit minus what it holds for a heap pool,
/// [`M_ALLOC_INFINITE_SIZE`] without a limit, the exact free bytes for a shared pool; 0 for
/// NULL.
///
/// # Safety
/// `pool` is NULL or a live pool; for a shared pool with lock callbacks, the caller holds its
/// lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_available_capacity(pool: *mut MlnAlloc) -> usize {
    guarded(0, || {
        // SAFETY: the caller promises NULL or a live pool.
        let Some(pool) = (unsafe { pool.as_ref() }) else {
            return 0;
        };
        match pool.kind() {
            Kind::Heap(heap) => heap.available().unwrap_or(M_ALLOC_INFINITE_SIZE),
            Kind::Child(child) => child.available().unwrap_or(M_ALLOC_INFINITE_SIZE),
            Kind::Shared(shm) => on_shared(shm, ShmPool::available),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_fallback() {
        assert_eq!(guarded(5, || -> i32 { panic!("not to C") }), 5);
        assert_eq!(guarded(5, || 6), 6);
    }

    #[test]
    fn the_rust_side_runs_the_c_api() {
        // SAFETY: each pointer is a live pool or block of this test, used as the header says.
        unsafe {
            let pool = mln_alloc_init(ptr::null_mut(), 0);
            assert!(!pool.is_null());
            let child = mln_alloc_init(pool, 1 << 20);
            let block = mln_alloc_c(child, 100).cast::<u8>();
            assert!(!block.is_null() && block.read() == 0);
            let block = mln_alloc_re(child, block.cast(), 10_000);
            assert!(!block.is_null());
            assert!(mln_alloc_available_capacity(child) < 1 << 20);
            mln_alloc_free(block);
            assert_eq!(mln_alloc_available_capacity(pool), M_ALLOC_INFINITE_SIZE);
            mln_alloc_destroy(pool);
        }
    }
}
