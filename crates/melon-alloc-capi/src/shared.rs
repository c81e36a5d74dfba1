//! Shared pools made through the C API: the per-process table that finds a pointer's shared
//! pool, and through it the pool's handle.
//!
//! Melon's caller holds the lock around a free of a shared pool's own block, and does not around
//! a free of a child pool's block (the child locks for itself when it gives a chunk back). So
//! [`owner`] must tell the two apart without the lock. The children of a C shared pool are made
//! with `melon_alloc_shm::plumbing::owned_child`, so every chunk they hold is lent to this
//! process's slot in the pool's owner table, and `plumbing::whose_to_free` tells, from the
//! descriptors of the pointer's chunk read atomically, a block of the pool's own from one of a
//! chunk lent to this process (a child's, handed off or not) or to another (a parent's, in a
//! forked process). This module maps a pointer to its pool and handle, and the answer to an
//! [`Owner`].
//!
//! Lock order: [`LIFECYCLE`], then [`TABLE`], then melon-alloc-heap's lock of pool families
//! (taken when a pool is made from a shared pool's child, and under which nothing else is
//! taken). Nothing takes any other lock, or calls a lock callback, while it holds [`TABLE`] or
//! [`LIFECYCLE`], so the fork hooks (in `fork`) can take all three, in that order, before a
//! `fork` without deadlocking.

use core::ptr::{self, NonNull};
use core::sync::atomic::{fence, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use melon_alloc_shm::plumbing::{self, Whose};
use melon_alloc_shm::ShmPool;

use crate::pool::MlnAlloc;

/// A shared pool made through the C API, as this process sees it.
pub(crate) struct Entry {
    /// The shared pool and its handle, alive as long as the entry.
    shm: NonNull<ShmPool>,
    handle: NonNull<MlnAlloc>,
    /// The mapping's address range.
    start: usize,
    end: usize,
}

// SAFETY: the pointers are to a shared pool and its handle, which live as long as the entry (it
// is removed before they are destroyed); every access goes through the table's lock, and to the
// pools only as the callers of this module allow.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

/// The shared pools made through the C API in this process.
static TABLE: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
/// The least start and the greatest end of the mappings of the pools `TABLE` holds (`usize::MAX`
/// and 0 when it holds none): a free of a block outside them, a heap pool's, skips the table and
/// its lock. Written under the table's write lock; a reader that sees one of them from before a
/// change sees a span at least as wide as the one after it, but for the pool just registered,
/// whose blocks no free can hold before the registration has happened for it.
static SPAN_START: AtomicUsize = AtomicUsize::new(usize::MAX);
static SPAN_END: AtomicUsize = AtomicUsize::new(0);
/// The table's entry while it holds exactly one, a pre-fork server's one shared pool, for a free
/// to read without the table's lock, as a sequence lock: `ONLY_SEQ` is odd while `publish`
/// writes the span and the entry, and a reader that finds it odd, or changed once it has read
/// them, reads the table instead. With one entry the span is its mapping; with any other number
/// of entries, the pool is null.
static ONLY_SEQ: AtomicUsize = AtomicUsize::new(0);
static ONLY_SHM: AtomicPtr<ShmPool> = AtomicPtr::new(ptr::null_mut());
static ONLY_HANDLE: AtomicPtr<MlnAlloc> = AtomicPtr::new(ptr::null_mut());
/// Held while a shared pool is made or unmapped, which takes locks inside `melon-alloc-shm`: a
/// fork waits for it, so a forked process never finds those locks held by a thread it lacks.
static LIFECYCLE: Mutex<()> = Mutex::new(());

pub(crate) type Table = RwLockWriteGuard<'static, Vec<Entry>>;

/// The table, for writing.
pub(crate) fn table_mut() -> Table {
    TABLE.write().unwrap_or_else(PoisonError::into_inner)
}

/// The table, for reading.
fn table() -> RwLockReadGuard<'static, Vec<Entry>> {
    TABLE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held around making and unmapping a shared pool.
pub(crate) fn lifecycle() -> MutexGuard<'static, ()> {
    LIFECYCLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a shared pool to the table. `false` when there is no memory for the entry.
///
/// # Safety
/// `shm` and `handle` (its handle) stay valid until `shm` is passed to [`unregister`].
pub(crate) unsafe fn register(shm: NonNull<ShmPool>, handle: NonNull<MlnAlloc>) -> bool {
    // SAFETY: the caller promises a live pool.
    let pool = unsafe { shm.as_ref() };
    let start = pool.ptr_at(0).map_or(0, |base| base.as_ptr().addr());
    let end = start + pool.capacity();
    let mut table = table_mut();
    if table.try_reserve(1).is_err() {
        return false;
    }
    table.push(Entry { shm, handle, start, end });
    publish(&table);
    true
}

/// Removes a shared pool from the table, before it is destroyed.
pub(crate) fn unregister(shm: NonNull<ShmPool>) {
    let mut table = table_mut();
    if let Some(index) = table.iter().position(|entry| entry.shm == shm) {
        table.swap_remove(index);
    }
    publish(&table);
}

/// Stores the span and the only entry of `table`, which the caller holds for writing.
fn publish(table: &[Entry]) {
    let start = table.iter().map(|entry| entry.start).min().unwrap_or(usize::MAX);
    let end = table.iter().map(|entry| entry.end).max().unwrap_or(0);
    let (shm, handle) = match table {
        [only] => (only.shm.as_ptr(), only.handle.as_ptr()),
        _ => (ptr::null_mut(), ptr::null_mut()),
    };
    ONLY_SEQ.fetch_add(1, Ordering::Relaxed);
    fence(Ordering::Release);
    SPAN_START.store(start, Ordering::Release);
    SPAN_END.store(end, Ordering::Release);
    ONLY_SHM.store(shm, Ordering::Relaxed);
    ONLY_HANDLE.store(handle, Ordering::Relaxed);
    ONLY_SEQ.fetch_add(1, Ordering::Release);
}

/// The only entry's pool and handle, if the table holds one entry, its mapping holds `addr`, and
/// no `publish` wrote it meanwhile.
#[inline]
fn only_entry(addr: usize) -> Option<(NonNull<ShmPool>, NonNull<MlnAlloc>)> {
    let seq = ONLY_SEQ.load(Ordering::Acquire);
    let (start, end) = (SPAN_START.load(Ordering::Relaxed), SPAN_END.load(Ordering::Relaxed));
    let shm = ONLY_SHM.load(Ordering::Relaxed);
    let handle = ONLY_HANDLE.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    let steady = seq % 2 == 0 && ONLY_SEQ.load(Ordering::Relaxed) == seq;
    (steady && (start..end).contains(&addr)).then_some((NonNull::new(shm)?, NonNull::new(handle)?))
}

/// Whose block a pointer is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner {
    /// A block outside every shared pool's mapping, or in a chunk lent to this process's pools:
    /// if it is a block at all, it is a heap pool's, and its chunk header names the pool.
    Heap,
    /// Inside a shared pool's mapping, outside every lent chunk: if it is a block at all, it is
    /// the shared pool's own. The pool's handle.
    Shared(NonNull<MlnAlloc>),
    /// Inside a chunk lent to a pool made from a shared pool, and either handed off
    /// (`mln_alloc_hand_off`) or another process's (a chunk of a pool copied by a `fork` and
    /// abandoned, whose original, in the parent, still hands it out): freed through the shared
    /// pool's lock-free path for handed-off blocks, which refuses any other block. The shared
    /// pool's handle.
    Lent(NonNull<MlnAlloc>),
}

/// Whether this process has a shared pool: if not, every block is a heap pool's.
#[inline]
pub(crate) fn any() -> bool {
    SPAN_END.load(Ordering::Acquire) != 0
}

/// Finds what kind of pool a block belongs to, without any shared pool's lock.
///
/// # Safety
/// `block` is an in-use block of a live pool, or a handed-off one not yet freed.
#[inline]
pub(crate) unsafe fn owner(block: NonNull<u8>) -> Owner {
    // With no shared pool the span is empty, and every block a heap pool's.
    let addr = block.as_ptr().addr();
    if addr < SPAN_START.load(Ordering::Acquire) || addr >= SPAN_END.load(Ordering::Acquire) {
        return Owner::Heap;
    }
    match only_entry(addr) {
        // SAFETY: the block lies in the pool's mapping and is in use in a live pool, or handed
        // off and not yet freed (caller): the shared pool's or one of its children's, which
        // keeps the pool, and so its entry's pool and handle, alive for the call.
        Some((shm, handle)) => unsafe { owner_in(shm.as_ref(), handle, block) },
        // SAFETY: forwarded from the caller.
        None => unsafe { owner_in_table(block) },
    }
}

/// [`owner`] in a process with shared pools.
///
/// # Safety
/// As for [`owner`].
#[inline(never)]
unsafe fn owner_in_table(block: NonNull<u8>) -> Owner {
    let addr = block.as_ptr().addr();
    let table = table();
    let Some(entry) = table.iter().find(|entry| (entry.start..entry.end).contains(&addr)) else {
        return Owner::Heap;
    };
    // SAFETY: the pool lives as long as its entry, which the table's read lock keeps; the block
    // is as the caller promises.
    unsafe { owner_in(entry.shm.as_ref(), entry.handle, block) }
}

/// Whose block `block` is, in the mapping of `shm`, whose handle is `handle`.
///
/// # Safety
/// As for [`owner`], with `block` in the mapping of `shm`, a live pool.
#[inline]
unsafe fn owner_in(shm: &ShmPool, handle: NonNull<MlnAlloc>, block: NonNull<u8>) -> Owner {
    // SAFETY: the block is in use in a live pool, or handed off and not yet freed (the caller's
    // promise to `owner`); in the shared pool's mapping, it is the pool's or its children's.
    match unsafe { plumbing::whose_to_free(shm, block) } {
        Whose::Shared => Owner::Shared(handle),
        Whose::OwnChild | Whose::Outside => Owner::Heap,
        _ => Owner::Lent(handle),
    }
}
