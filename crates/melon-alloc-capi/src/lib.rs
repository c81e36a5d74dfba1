#![doc = include_str!("../README.md")]
//!
//! # The Rust side
//!
//! The functions below are the library's C ABI, `#[no_mangle]` under Melon's names; a Rust
//! program has the `melon-alloc` crate for the same pools without raw pointers.
//!
//! A panic inside the library means a bug of ours or a broken contract (two threads in one pool,
//! say), and may have stopped an operation half way. No unwind crosses into C: a panic in an
//! `extern "C"` function aborts the process, with the panic's message on standard error. The
//! reasons, and the poisoning it replaces, are in `docs/architecture.md` under "C API".
//!
//! Thread safety is Melon's: a pool and its heap ancestors (up to the root, or up to a shared
//! pool) are used by one thread at a time, and freeing a block uses its pool. Every `# Safety`
//! section below includes it.
//!
//! How the C API maps onto the pools, and the choices it makes where Melon's documentation is
//! silent, are in `docs/architecture.md` under "C API".

use core::ffi::{c_int, c_void};
use core::ptr::{self, NonNull};

use melon_alloc_heap::Pool;
use melon_alloc_shm::{plumbing, ShmPool};

mod fork;
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

/// A test's way to make a call panic at a given point, as a bug would.
#[cfg(test)]
mod failpoint {
    use core::cell::Cell;

    std::thread_local! {
        static ARMED: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    /// Makes the next call on this thread that reaches `point` panic there. Only the tests that
    /// run themselves again in a child process arm a point, and Miri cannot start one.
    #[cfg(not(miri))]
    pub(crate) fn arm(point: &'static str) {
        ARMED.with(|armed| armed.set(Some(point)));
    }

    pub(crate) fn hit(point: &'static str) {
        if ARMED.with(|armed| armed.get() == Some(point)) {
            ARMED.with(|armed| armed.set(None));
            panic!("failpoint {point}");
        }
    }
}

#[cfg(not(test))]
mod failpoint {
    #[inline(always)]
    pub(crate) fn hit(_point: &'static str) {}
}

/// A block as C sees it; NULL for none.
fn to_c(block: Option<NonNull<u8>>) -> *mut c_void {
    block.map_or(ptr::null_mut(), |block| block.as_ptr().cast())
}

/// A handle as C sees it; NULL for none.
fn handle_to_c(handle: Option<NonNull<MlnAlloc>>) -> *mut MlnAlloc {
    handle.map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// `0` means no limit, as in Melon.
fn limit(capacity: usize) -> Option<usize> {
    (capacity != 0).then_some(capacity)
}

/// Makes a heap pool: over the system heap when `parent` is NULL, over `parent` otherwise.
/// `capacity` is a limit in bytes, 0 for none. NULL on failure.
///
/// # Safety
/// - `parent` is NULL or a pool from `mln_alloc_init` or `mln_alloc_shm_init`, not destroyed.
/// - No other thread uses `parent` or its heap ancestors (up to its root, or up to a shared
///   pool) meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_init(parent: *mut MlnAlloc, capacity: usize) -> *mut MlnAlloc {
    let Some(parent) = NonNull::new(parent) else {
        return handle_to_c(pool::new_heap(limit(capacity)));
    };
    // SAFETY: the caller promises a live pool, used by this thread alone with its heap
    // ancestors; destroying it destroys the child first.
    handle_to_c(unsafe { pool::new_child(parent, limit(capacity)) })
}

/// Makes a shared-memory pool of `capacity` bytes whose child pools call `lock(locker)` and
/// `unlock(locker)` around each use of it; with both callbacks NULL, the pool locks itself with
/// a lock of its own. NULL on failure.
///
/// # Safety
/// - With callbacks: they may be called with `locker` from any thread of any process that uses
///   the pool, for as long as the pool exists, so `locker` stays valid that long; together they
///   are a lock that works across those processes: between a `lock` that returns 0 and the next
///   `unlock`, no other `lock` returns 0, with a mutex's memory ordering.
/// - With callbacks, the caller holds the lock around every call on the pool itself (not on its
///   child pools), as Melon requires, but for [`mln_alloc_destroy`], which may take it through
///   the callbacks itself.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_shm_init(
    capacity: usize,
    locker: *mut c_void,
    lock: Option<LockCallback>,
    unlock: Option<LockCallback>,
) -> *mut MlnAlloc {
    let lock = match (lock, unlock) {
        // SAFETY: forwarded from the caller.
        (Some(lock), Some(unlock)) => Some(unsafe { CallbackLock::new(locker, lock, unlock) }),
        (None, None) => None,
        _ => return ptr::null_mut(),
    };
    handle_to_c(pool::new_shared(|| {
        match lock {
            Some(lock) => ShmPool::with_lock(capacity, lock),
            None => ShmPool::new(capacity),
        }
        .ok()
    }))
}

/// Destroys a pool and every pool made from it, releasing all their memory. NULL does nothing.
///
/// # Safety
/// - `pool` is NULL or a pool from `mln_alloc_init` or `mln_alloc_shm_init`, not destroyed.
/// - Neither it, nor a pool made from it, nor any of their blocks is used afterwards, and no
///   call on any of them is in progress.
/// - No other thread uses its heap ancestors (up to its root, or up to a shared pool)
///   meanwhile.
/// - The caller does not hold the lock of a shared pool with lock callbacks: destroying it, or
///   a pool made from it, may take that lock through the callbacks.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_destroy(pool: *mut MlnAlloc) {
    if let Some(handle) = NonNull::new(pool) {
        // SAFETY: forwarded from the caller.
        unsafe { pool::destroy(handle) }
    }
}

/// Allocates `size` bytes from a pool, 16-byte aligned, zeroed if `zeroed`.
#[inline(always)]
fn alloc_in(pool: &MlnAlloc, size: usize, zeroed: bool) -> Option<NonNull<u8>> {
    failpoint::hit("alloc");
    let heap: &Pool = match pool.kind() {
        Kind::Heap(heap) => heap,
        Kind::Child(child) => child,
        Kind::Shared(_) => return alloc_shared(pool, size, zeroed),
    };
    if zeroed {
        heap.alloc_zeroed(size)
    } else {
        heap.alloc(size)
    }
}

/// [`alloc_in`] for a shared pool: out of line, so that it adds nothing to the heap pools' path,
/// which nearly every allocation from C takes.
#[cold]
#[inline(never)]
fn alloc_shared(pool: &MlnAlloc, size: usize, zeroed: bool) -> Option<NonNull<u8>> {
    let shm = pool.shm()?;
    if zeroed {
        on_shared(shm, |shm| shm.alloc_zeroed(size))
    } else {
        on_shared(shm, |shm| shm.alloc(size))
    }
}

/// Allocates `size` bytes from `pool`, 16-byte aligned. NULL on failure and for a NULL pool.
///
/// # Safety
/// - `pool` is NULL or a live pool.
/// - No other thread uses `pool` or its heap ancestors (up to its root, or up to a shared pool)
///   meanwhile.
/// - For a shared pool with lock callbacks, the caller holds its lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_m(pool: *mut MlnAlloc, size: usize) -> *mut c_void {
    // SAFETY: the caller promises NULL or a live pool.
    let pool = unsafe { pool.as_ref() };
    to_c(pool.and_then(|pool| alloc_in(pool, size, false)))
}

/// Like [`mln_alloc_m`], with the `size` bytes zeroed.
///
/// # Safety
/// As for [`mln_alloc_m`].
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_c(pool: *mut MlnAlloc, size: usize) -> *mut c_void {
    // SAFETY: the caller promises NULL or a live pool.
    let pool = unsafe { pool.as_ref() };
    to_c(pool.and_then(|pool| alloc_in(pool, size, true)))
}

/// Frees a block of any pool; a block in a chunk this process must not touch is left alone.
///
/// # Safety
/// - `block` is an in-use block of a live pool, and is not used afterwards, a handed-off block
///   not yet freed, or a block of a shared pool itself freed already (see [`mln_alloc_free`]);
///   `owner` is what [`shared::owner`] says of it.
/// - No other thread uses the block's pool or its heap ancestors (up to its root, or up to a
///   shared pool) meanwhile.
/// - For a block of a shared pool itself with lock callbacks, the caller holds its lock.
#[inline(always)]
unsafe fn free_block(block: NonNull<u8>, owner: Owner) {
    match owner {
        // What `melon_alloc_heap::free` does, written out so that `Pool::free` inlines here:
        // this is the path of nearly every free from C.
        Owner::Heap => {
            // SAFETY: `owner` found the block outside every shared mapping or in a chunk held by
            // one of this process's heap pools, so by the caller's promise it is an in-use block
            // of a live heap pool.
            let pool = unsafe { heap_pool_of(block) };
            failpoint::hit("free");
            // SAFETY: (1) heap pools record their `Pool` in their chunks, and the pool is live;
            // (2) the caller promises that no other thread uses the pool or its heap ancestors,
            // which its free may change; (3) the caller gives the block up.
            unsafe { pool.as_ref().free(block) }
        }
        Owner::Shared(handle) => {
            // SAFETY: `owner` found the handle in the process's table of shared pools, where it
            // stays until its pool is destroyed, which the caller's promise rules out during
            // this call; a block freed already, which this path refuses, has a live pool too.
            let handle_ref = unsafe { handle.as_ref() };
            if let Some(shm) = handle_ref.shm() {
                // A pointer the pool refuses (a double free, say) changes nothing: ignore it.
                // SAFETY: forwarded from the caller.
                let _ = on_shared(shm, |shm| unsafe { shm.try_free(block) });
            }
        }
        Owner::Lent(handle) => {
            // SAFETY: as for `Owner::Shared`.
            let handle_ref = unsafe { handle.as_ref() };
            if let Some(shm) = handle_ref.shm() {
                // Not `on_shared`: this free takes no lock through the callbacks, which its
                // caller may or may not hold, and leaves an orphaned chunk it empties to the
                // next reclaim; with the pool's own lock it takes that lock to give the chunk
                // back. A block that is not handed off is refused, and changes nothing: ignore
                // it.
                // SAFETY: forwarded from the caller.
                let _ = unsafe { plumbing::free_if_lent(shm, block) };
            }
        }
    }
}

/// The bytes an in-use block can hold, from its pool; `None` for a block in a chunk this process
/// must not touch.
///
/// # Safety
/// As for [`free_block`], the block being kept.
unsafe fn usable_size(block: NonNull<u8>, owner: Owner) -> Option<usize> {
    match owner {
        Owner::Heap => {
            // SAFETY: as in `free_block`: an in-use block of a live heap pool.
            let pool = unsafe { heap_pool_of(block) };
            // SAFETY: an in-use block of that pool, which no other thread uses meanwhile.
            Some(unsafe { pool.as_ref().usable_size(block) })
        }
        Owner::Shared(handle) => {
            // SAFETY: as in `free_block`: a handle from the table, whose pool is live.
            let handle = unsafe { handle.as_ref() };
            on_shared(handle.shm()?, |shm| shm.usable_size(block)).ok()
        }
        Owner::Lent(_) => None,
    }
}

/// The heap pool a block belongs to, from its chunk header.
///
/// # Safety
/// `block` is an in-use block of a live heap pool.
#[inline]
unsafe fn heap_pool_of(block: NonNull<u8>) -> NonNull<Pool> {
    // SAFETY: forwarded from the caller.
    let pool = unsafe { melon_alloc_core::plumbing::owner_of(block) }.cast::<Pool>().cast_mut();
    // SAFETY: an engine names itself in its chunks by its owner address, or by its own address
    // while it has none (`Engine::id`): never null. A heap pool's engine names its `Pool`.
    unsafe { NonNull::new_unchecked(pool) }
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
    // Size 0 frees before anything else, as Melon's `mln_alloc_re` does: a NULL block with size
    // 0 is a free of nothing, not an allocation.
    if size == 0 {
        if let Some(block) = block {
            // SAFETY: forwarded from the caller, who gives the block up; `owner` asks of the
            // block what the caller promises of it.
            unsafe { free_block(block, shared::owner(block)) };
        }
        return None;
    }
    let Some(block) = block else {
        return alloc_in(pool?, size, false);
    };
    // SAFETY: the caller passes an in-use block of a live pool.
    let owner = unsafe { shared::owner(block) };
    let pool = pool?;
    let in_place = match (owner, pool.kind()) {
        (Owner::Heap, Kind::Heap(_) | Kind::Child(_)) => {
            // SAFETY: as in `free_block`: `owner` found the block outside every shared mapping
            // or in a chunk held by one of this process's heap pools, so by the caller's promise
            // it is an in-use block of a live heap pool.
            let owner = unsafe { heap_pool_of(block) };
            pool.heap().is_some_and(|heap| ptr::eq(heap, owner.as_ptr()))
        }
        (Owner::Shared(shared), Kind::Shared(_)) => shared == NonNull::from(pool),
        _ => false,
    };
    match pool.kind() {
        Kind::Heap(_) | Kind::Child(_) if in_place => {
            let heap = pool.heap()?;
            // SAFETY: an in-use block of this pool; forwarded from the caller.
            unsafe { heap.realloc(block, size) }
        }
        Kind::Shared(_) if in_place => {
            // SAFETY: an in-use block of this pool; forwarded from the caller.
            on_shared(pool.shm()?, |shm| unsafe { shm.realloc(block, size) })
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
/// shrink stays in place. `size == 0` frees the block, if `ptr` is not NULL, and returns NULL;
/// otherwise `ptr == NULL` allocates. On failure returns NULL and leaves the block as it was.
///
/// # Safety
/// - `pool` is NULL or a live pool; `ptr` is NULL or an in-use block of a live pool (normally
///   `pool`).
/// - Once the block moves or is freed, `ptr` is not used again.
/// - No other thread uses `pool`, the block's pool, or their heap ancestors (up to their roots,
///   or up to a shared pool) meanwhile.
/// - For a shared pool with lock callbacks, the caller holds its lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_re(
    pool: *mut MlnAlloc,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    // SAFETY: forwarded from the caller.
    to_c(unsafe { realloc(pool, NonNull::new(ptr.cast()), size) })
}

/// Frees a block by its pointer alone. NULL does nothing.
///
/// # Safety
/// - `ptr` is NULL or an in-use block of a live pool, and is not used afterwards; or a block
///   handed off ([`mln_alloc_hand_off`]) and not yet freed, whose shared pool is live in this
///   process, freed once; or a block of a live shared pool itself freed already, whose memory
///   the shared pool has not handed out again since, nor lent in a chunk to a pool made from it
///   (the pool refuses it).
/// - No other thread uses the block's pool or its heap ancestors (up to its root, or up to a
///   shared pool) meanwhile.
/// - For a block of a shared pool itself (not of one of its child pools) with lock callbacks,
///   the caller holds the pool's lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_free(ptr: *mut c_void) {
    let Some(block) = NonNull::new(ptr.cast::<u8>()) else {
        return;
    };
    if shared::any() {
        // SAFETY: forwarded from the caller.
        unsafe { free_with_shared_pools(block) }
    } else {
        // SAFETY: with no shared pool in this process, the block is a heap pool's; forwarded
        // from the caller.
        unsafe { free_block(block, Owner::Heap) }
    }
}

/// Hands a block of a pool made directly from a shared pool off to other processes, which may
/// then free it with [`mln_alloc_free`]. Returns 0, or -1 with nothing changed when `pool` is
/// not a pool made from a shared pool by this process, or `ptr` lies in none of its chunks (or
/// is handed off already).
///
/// # Safety
/// - `pool` is NULL or a live pool; `ptr` lies in none of the chunks of `pool` or is the start of
///   an in-use block of `pool`.
/// - From now on the block is freed with `mln_alloc_free`, once, by any process that maps the
///   shared pool (this one included), and is not resized.
/// - No other thread uses `pool` meanwhile.
///
/// # Examples
/// ```
/// use core::ptr;
/// use melon_alloc_capi::*;
///
/// // SAFETY: each pointer is a live pool or block of this example, used as the header says;
/// // with no lock callbacks, the pool locks itself.
/// unsafe {
///     let shm = mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None);
///     let worker = mln_alloc_init(shm, 0);
///     let message = mln_alloc_m(worker, 200);
///     assert_eq!(mln_alloc_hand_off(worker, message), 0);
///     // Handed off once only; another process would now free it, as this one may.
///     assert_eq!(mln_alloc_hand_off(worker, message), -1);
///     mln_alloc_free(message);
///     mln_alloc_destroy(shm);
/// }
/// ```
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_hand_off(pool: *mut MlnAlloc, ptr: *mut c_void) -> c_int {
    // SAFETY: the caller promises NULL or a live pool.
    let Some(pool) = (unsafe { pool.as_ref() }) else { return -1 };
    let (Some(shm), Some(heap), Some(block)) =
        (pool.shared_parent(), pool.heap(), NonNull::new(ptr.cast::<u8>()))
    else {
        return -1;
    };
    // Only a chunk lent to this process's pools is read: any other pointer may lie in memory
    // that is not mapped.
    if plumbing::whose(shm, block) != plumbing::Whose::OwnChild {
        return -1;
    }
    // SAFETY: the block lies in a chunk lent to this process's pools, a live heap pool's, whose
    // header names its pool.
    let owner = unsafe { heap_pool_of(block) };
    if !ptr::eq(heap, owner.as_ptr()) {
        return -1;
    }
    // SAFETY: `ptr` lies in a chunk of `pool` (found above), so by the caller's promise it starts
    // an in-use block of `pool`, a child pool this process made from `shm` (a handle made from a
    // shared pool is its `owned_child`); from now on it is freed through the shared pool alone.
    match unsafe { shm.hand_off(block) } {
        Ok(_) => 0,
        Err(_) => -1,
    }
}

/// Gives back the chunks of dead processes' pools, and then every orphan of the shared pool
/// `shm`: each chunk whose pool went while blocks handed off from it were out, and that still
/// waits for one of them ([`ShmPool::reclaim_orphans`]). Returns the bytes given back, of both
/// kinds; 0 for NULL, a pool that is not a shared pool, or a lock that fails.
///
/// # Safety
/// - `shm` is NULL or a live pool.
/// - No process holds, frees or will free a block handed off from such a chunk.
/// - With lock callbacks, the caller holds the lock, as for every call on the shared pool.
///
/// # Examples
/// ```
/// use core::ptr;
/// use melon_alloc_capi::*;
///
/// // SAFETY: each pointer is a live pool or block of this example, used as the header says;
/// // with no lock callbacks, the pool locks itself.
/// unsafe {
///     let shm = mln_alloc_shm_init(1 << 20, ptr::null_mut(), None, None);
///     let start = mln_alloc_available_capacity(shm);
///     let worker = mln_alloc_init(shm, 0);
///     let message = mln_alloc_m(worker, 200);
///     assert_eq!(mln_alloc_hand_off(worker, message), 0);
///     // The worker's pool goes while its message is out, which nobody will free.
///     mln_alloc_destroy(worker);
///     assert!(mln_alloc_available_capacity(shm) < start);
///     assert_eq!(mln_alloc_reclaim_orphans(shm), 16 << 10);
///     assert_eq!(mln_alloc_available_capacity(shm), start);
///     mln_alloc_destroy(shm);
/// }
/// ```
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_reclaim_orphans(shm: *mut MlnAlloc) -> usize {
    // SAFETY: the caller promises NULL or a live pool.
    let Some(shm) = (unsafe { shm.as_ref() }).and_then(MlnAlloc::shm) else { return 0 };
    // SAFETY: the caller promises that nobody holds, frees or will free a block handed off from
    // an orphan.
    on_shared(shm, |shm| unsafe { shm.reclaim_orphans() }).map_or(0, |report| report.bytes)
}

/// [`mln_alloc_free`] in a process with shared pools, whose table says what the block is: out of
/// line, so that it adds nothing to the free of a process without one.
///
/// # Safety
/// As for [`mln_alloc_free`], `block` not NULL.
#[cold]
#[inline(never)]
unsafe fn free_with_shared_pools(block: NonNull<u8>) {
    // SAFETY: forwarded from the caller.
    unsafe { free_block(block, shared::owner(block)) }
}

/// The bytes a pool can still take: the limit minus what it holds for a heap pool,
/// [`M_ALLOC_INFINITE_SIZE`] without a limit, the exact free bytes for a shared pool; 0 for
/// NULL.
///
/// # Safety
/// - `pool` is NULL or a live pool.
/// - No other thread uses `pool` or its heap ancestors (up to its root, or up to a shared pool)
///   meanwhile.
/// - For a shared pool with lock callbacks, the caller holds its lock.
#[no_mangle]
pub unsafe extern "C" fn mln_alloc_available_capacity(pool: *mut MlnAlloc) -> usize {
    // SAFETY: the caller promises NULL or a live pool.
    let Some(pool) = (unsafe { pool.as_ref() }) else {
        return 0;
    };
    match pool.kind() {
        Kind::Heap(heap) => heap.available().unwrap_or(M_ALLOC_INFINITE_SIZE),
        Kind::Child(child) => child.available().unwrap_or(M_ALLOC_INFINITE_SIZE),
        Kind::Shared(_) => pool.shm().map_or(0, |shm| on_shared(shm, ShmPool::available)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_deep_cascade_is_destroyed_from_its_root() {
        // SAFETY: each pointer is a live pool of this test, used as the header says.
        unsafe {
            let root = mln_alloc_init(ptr::null_mut(), 0);
            let mut parent = root;
            // Miri interprets each level's pool creation slowly; the walk is the same.
            let levels = if cfg!(miri) { 60 } else { 2_000 };
            for depth in 0..levels {
                let child = mln_alloc_init(parent, 0);
                assert!(!child.is_null());
                // Siblings too, so that the walk goes up and across as well as down.
                if depth % 20 == 0 {
                    let sibling = mln_alloc_init(parent, 0);
                    assert!(!mln_alloc_m(sibling, 64).is_null());
                }
                parent = child;
            }
            assert!(!mln_alloc_m(parent, 64).is_null());
            mln_alloc_destroy(root);
        }
    }

    /// Set in the environment of the child process of the abort tests: the fail point its call
    /// panics at.
    #[cfg(not(miri))]
    const PANIC_AT: &str = "MELON_CAPI_PANIC_AT";

    /// Runs the test `name` again in a child process, where the call it makes panics at `point`,
    /// and checks that the panic ended the process with SIGABRT and its message, rather than
    /// unwinding into the caller or returning.
    #[cfg(not(miri))]
    fn assert_aborts(name: &str, point: &str) {
        use std::os::unix::process::ExitStatusExt;

        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(PANIC_AT, point)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        // SIGABRT is signal 6 on Linux.
        assert_eq!(child.status.signal(), Some(6), "{:?}: {stderr}", child.status);
        assert!(stderr.contains(&format!("failpoint {point}")), "{stderr}");
        assert!(stderr.contains("panic in a function that cannot unwind"), "{stderr}");
    }

    #[test]
    // Miri cannot start a process.
    #[cfg(not(miri))]
    fn a_panic_in_an_allocation_aborts_the_process() {
        if std::env::var_os(PANIC_AT).is_some() {
            failpoint::arm("alloc");
            // SAFETY: a live pool of this test, used as the header says.
            unsafe {
                let pool = mln_alloc_init(ptr::null_mut(), 0);
                mln_alloc_m(pool, 64);
            }
            std::process::exit(0);
        }
        assert_aborts("tests::a_panic_in_an_allocation_aborts_the_process", "alloc");
    }

    #[test]
    // Miri cannot start a process.
    #[cfg(not(miri))]
    fn a_panic_in_a_free_aborts_the_process() {
        if std::env::var_os(PANIC_AT).is_some() {
            // SAFETY: a live pool and block of this test, used as the header says.
            unsafe {
                let pool = mln_alloc_init(ptr::null_mut(), 0);
                let block = mln_alloc_m(pool, 64);
                failpoint::arm("free");
                mln_alloc_free(block);
            }
            std::process::exit(0);
        }
        assert_aborts("tests::a_panic_in_a_free_aborts_the_process", "free");
    }
}
