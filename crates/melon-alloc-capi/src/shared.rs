//! Shared pools made through the C API: where the chunks of their child pools come from, and
//! how a block of a shared pool is told from a block of one of its child pools.
//!
//! Melon's caller holds the lock around a free of a shared pool's own block, and does not around
//! a free of a child pool's block (the child locks for itself when it gives a chunk back). So
//! [`owner`] must tell the two apart without the lock and without reading the shared memory,
//! which other processes may be changing. Each shared pool's entry in this process's table keeps
//! the address ranges of the chunks lent to this process's pools: a pointer inside one is a
//! child's block, any other pointer in the mapping is the shared pool's own.
//!
//! Lock order: a shared pool's lock, then [`TABLE`]; [`LIFECYCLE`], then [`TABLE`]. Nothing
//! takes another lock, or calls a lock callback, while it holds [`TABLE`] or [`LIFECYCLE`], so
//! the fork handlers (in `fork`) can take both before a `fork` without deadlocking.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use melon_alloc_core::ChunkSource;
use melon_alloc_shm::{ShmGuard, ShmPool};

use crate::pool::{self, MlnAlloc};

/// A shared pool made through the C API, as this process sees it.
pub(crate) struct Entry {
    /// The shared pool and its handle, alive as long as the entry.
    shm: NonNull<ShmPool>,
    handle: NonNull<MlnAlloc>,
    /// The mapping's address range.
    start: usize,
    end: usize,
    /// Chunks lent to this process's pools, and chunks this process must keep its hands off,
    /// sorted by address; disjoint.
    lent: Vec<Lent>,
}

/// A chunk of a shared pool's mapping known to this process.
struct Lent {
    chunk: NonNull<u8>,
    len: usize,
    state: LentState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LentState {
    /// Held by one of this process's pools: its blocks are that pool's.
    Held,
    /// Given back by its pool while the lock failed: still a block of the shared pool, to be
    /// freed the next time this process holds the lock (Melon leaked it).
    Pending,
    /// Held (or pending) when this process was forked from the one whose pools hold it: the
    /// copies of those pools here are abandoned, and pointers into it free nothing.
    Foreign,
}

impl Lent {
    fn end(&self) -> usize {
        self.chunk.as_ptr().addr() + self.len
    }
}

// SAFETY: the pointers are to a shared pool, its handle and chunks of its mapping, which live as
// long as the entry (it is removed before they are destroyed); every access goes through the
// table's lock, and to the pools only as the callers of this module allow.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

/// The shared pools made through the C API in this process.
static TABLE: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
/// How many entries `TABLE` holds: lets a free of a heap block skip the table when there are no
/// shared pools, the common case.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many chunks are [`LentState::Pending`] over all entries: lets the calls that hold a
/// shared pool's lock skip the table when none are, the common case.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// This process's id, refreshed in a forked child; 0 until the first shared pool is made.
static PID: AtomicU32 = AtomicU32::new(0);
/// Held while a shared pool is made or unmapped, which takes locks inside `melon-alloc-shm`: a
/// fork waits for it, so a forked process never finds those locks held by a thread it lacks.
static LIFECYCLE: Mutex<()> = Mutex::new(());

pub(crate) type Table = RwLockWriteGuard<'static, Vec<Entry>>;

/// The table, for writing.
pub(crate) fn table_mut() -> Table {
    TABLE.write().unwrap_or_else(PoisonError::into_inner)
}

/// The table, for reading.
pub(crate) fn table() -> RwLockReadGuard<'static, Vec<Entry>> {
    TABLE.read().unwrap_or_else(PoisonError::into_inner)
}

/// The table, for writing, if no other thread holds it. Only for a forked child, where a thread
/// that held it does not exist.
pub(crate) fn try_table_mut() -> Option<Table> {
    match TABLE.try_write() {
        Ok(table) => Some(table),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Held around making and unmapping a shared pool.
pub(crate) fn lifecycle() -> MutexGuard<'static, ()> {
    LIFECYCLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records this process's id: at the first shared pool, and in a forked child.
pub(crate) fn refresh_pid() {
    PID.store(std::process::id(), Ordering::Relaxed);
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
    table.push(Entry { shm, handle, start, end, lent: Vec::new() });
    COUNT.store(table.len(), Ordering::Release);
    true
}

/// Removes a shared pool from the table, before it is destroyed. Chunks still pending are left in
/// use in the mapping: the caller gave them back first if it could.
pub(crate) fn unregister(shm: NonNull<ShmPool>) {
    let mut table = table_mut();
    if let Some(index) = table.iter().position(|entry| entry.shm == shm) {
        let entry = table.swap_remove(index);
        let pending = entry.lent.iter().filter(|lent| lent.state == LentState::Pending).count();
        PENDING.fetch_sub(pending, Ordering::Relaxed);
    }
    COUNT.store(table.len(), Ordering::Release);
}

fn entry_of<'t>(table: &'t mut [Entry], shm: &ShmPool) -> Option<&'t mut Entry> {
    table.iter_mut().find(|entry| core::ptr::eq(entry.shm.as_ptr(), shm))
}

/// Whose block a pointer is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner {
    /// A block outside every shared pool's mapping, or in a chunk held by one of this process's
    /// pools: if it is a block at all, it is a heap pool's, and its chunk header names the pool.
    Heap,
    /// Inside a shared pool's mapping, outside the chunks this process knows of: if it is a
    /// block at all, it is the shared pool's own. The pool's handle.
    Shared(NonNull<MlnAlloc>),
    /// Inside a chunk this process must not touch: a chunk of a pool copied by a `fork` and
    /// abandoned, or one given back whose return is pending. Freeing it does nothing.
    Gone,
}

/// Whether this process has a shared pool: if not, every block is a heap pool's.
#[inline]
pub(crate) fn any() -> bool {
    COUNT.load(Ordering::Acquire) != 0
}

/// Finds what kind of pool a block belongs to, from this process's table alone.
#[inline]
pub(crate) fn owner(block: NonNull<u8>) -> Owner {
    if !any() {
        return Owner::Heap;
    }
    owner_in_table(block)
}

#[inline(never)]
fn owner_in_table(block: NonNull<u8>) -> Owner {
    let addr = block.as_ptr().addr();
    let table = table();
    let Some(entry) = table.iter().find(|entry| (entry.start..entry.end).contains(&addr)) else {
        return Owner::Heap;
    };
    let index = entry.lent.partition_point(|lent| lent.chunk.as_ptr().addr() <= addr);
    match index.checked_sub(1).map(|index| &entry.lent[index]) {
        Some(lent) if addr < lent.end() => match lent.state {
            LentState::Held => Owner::Heap,
            LentState::Pending | LentState::Foreign => Owner::Gone,
        },
        _ => Owner::Shared(entry.handle),
    }
}

/// Records a chunk just taken by one of this process's pools. `false` when there is no memory
/// for the record.
fn record(shm: &ShmPool, chunk: NonNull<u8>, len: usize) -> bool {
    let mut table = table_mut();
    let Some(entry) = entry_of(&mut table, shm) else {
        return false;
    };
    let start = chunk.as_ptr().addr();
    let end = start + len;
    let mut index = entry.lent.partition_point(|lent| lent.chunk.as_ptr().addr() < start);
    // Records the chunk overlaps are stale: chunks that the process this one was forked from
    // held, and has given back since.
    if index > 0 && entry.lent[index - 1].end() > start {
        index -= 1;
        entry.lent.remove(index);
    }
    while entry.lent.get(index).is_some_and(|lent| lent.chunk.as_ptr().addr() < end) {
        entry.lent.remove(index);
    }
    if entry.lent.try_reserve(1).is_err() {
        return false;
    }
    entry.lent.insert(index, Lent { chunk, len, state: LentState::Held });
    true
}

/// Forgets the record of a chunk given back.
fn forget(table: &mut [Entry], shm: &ShmPool, chunk: NonNull<u8>) {
    if let Some(entry) = entry_of(table, shm) {
        if let Ok(index) = entry
            .lent
            .binary_search_by_key(&chunk.as_ptr().addr(), |lent| lent.chunk.as_ptr().addr())
        {
            if entry.lent.remove(index).state == LentState::Pending {
                PENDING.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Frees, under the lock `guard` holds, the chunks of `shm` whose return failed earlier.
fn give_back_pending(shm: &ShmPool, guard: &mut ShmGuard<'_>) {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut table = table_mut();
    let Some(entry) = entry_of(&mut table, shm) else {
        return;
    };
    entry.lent.retain(|lent| {
        if lent.state != LentState::Pending {
            return true;
        }
        // SAFETY: a pending chunk is a block of this shared pool, still in use, that its pool
        // gave back and uses no more.
        let _ = unsafe { guard.free(lent.chunk) };
        PENDING.fetch_sub(1, Ordering::Relaxed);
        false
    });
}

/// Gives back the chunks of `shm` whose return failed earlier, on a call whose caller holds the
/// pool's lock (inside [`as_holder`](crate::lock::as_holder)).
pub(crate) fn give_back_pending_held(shm: &ShmPool) {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Ok(mut guard) = shm.lock() {
        give_back_pending(shm, &mut guard);
    }
}

/// Gives back the chunks of `shm` whose return failed earlier, taking the lock (through the
/// callbacks) if there are any. If the lock fails again, they stay pending.
pub(crate) fn give_back_pending_locking(shm: &ShmPool) {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let any = {
        let mut table = table_mut();
        entry_of(&mut table, shm)
            .is_some_and(|entry| entry.lent.iter().any(|lent| lent.state == LentState::Pending))
    };
    if any {
        if let Ok(mut guard) = shm.lock() {
            give_back_pending(shm, &mut guard);
            // A failing unlock changes nothing here: Melon ignores it too.
            let _ = guard.unlock();
        }
    }
}

/// The chunks of a heap pool made from a shared pool: blocks of the shared pool, aligned to a
/// chunk, taken under its lock (the C callbacks), and recorded in the table.
pub(crate) struct ShmChunks {
    shm: &'static ShmPool,
    /// The process that made the pool; a copy of it in another process takes no chunks.
    pid: u32,
}

impl ShmChunks {
    /// The chunk source of a pool made from `shm` by this process.
    pub(crate) fn new(shm: &'static ShmPool) -> Self {
        Self { shm, pid: PID.load(Ordering::Relaxed) }
    }

    fn in_maker(&self) -> bool {
        PID.load(Ordering::Relaxed) == self.pid
    }
}

impl core::fmt::Debug for ShmChunks {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmChunks").field("pid", &self.pid).finish_non_exhaustive()
    }
}

// SAFETY: (1) a chunk is a block of the shared pool allocated with the chunk's layout, so it is
// valid for `layout.size()` bytes at `layout.align()`, and disjoint from every other block; (2)
// it stays a block of the pool until `release` frees it (or forever, in a forked copy, which
// never frees it), and the pool outlives its children; (3) the pointer derives from the mapping.
unsafe impl ChunkSource for ShmChunks {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if !self.in_maker() {
            // A forked copy of a pool would hand out what the original hands out.
            return None;
        }
        let mut guard = self.shm.lock().ok()?;
        give_back_pending(self.shm, &mut guard);
        let chunk = guard.alloc_layout(layout).ok().and_then(|chunk| {
            // Recorded under the lock, so that the record and the chunk come and go together.
            if record(self.shm, chunk, layout.size()) {
                Some(chunk)
            } else {
                // SAFETY: the chunk was just allocated, and nothing has seen it.
                let _ = unsafe { guard.free(chunk) };
                None
            }
        });
        // A failing unlock does not undo the allocation, which is good: Melon ignores it too.
        let _ = guard.unlock();
        chunk
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, _layout: Layout) {
        if !self.in_maker() {
            // The original pool, in the process that made it, still holds the chunk.
            return;
        }
        match self.shm.lock() {
            Ok(mut guard) => {
                // The record goes under the lock, before the chunk: once the lock is released,
                // another pool may take the chunk and record it again.
                forget(&mut table_mut(), self.shm, chunk);
                // SAFETY: the chunk is a block of the shared pool, in use until now, and the
                // caller (the pool giving it back) uses it no more.
                let _ = unsafe { guard.free(chunk) };
                give_back_pending(self.shm, &mut guard);
                let _ = guard.unlock();
            }
            Err(_) => {
                // Kept, without allocating, until this process next holds the lock.
                let mut table = table_mut();
                if let Some(entry) = entry_of(&mut table, self.shm) {
                    let addr = chunk.as_ptr().addr();
                    if let Ok(index) =
                        entry.lent.binary_search_by_key(&addr, |lent| lent.chunk.as_ptr().addr())
                    {
                        entry.lent[index].state = LentState::Pending;
                        PENDING.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    unsafe fn release_all_small(&mut self) -> bool {
        // In a forked copy, every chunk belongs to the original: nothing to give back, and the
        // copy's engine need not walk its (abandoned) lists.
        !self.in_maker()
    }
}

/// In a forked child, with the table held: the pools made from shared pools before the fork
/// belong to the parent, so their copies here forget their chunks (and hand out nothing more,
/// since their source refuses a process other than their maker), and every chunk the table
/// knows of becomes [`LentState::Foreign`], so that a free of a pointer into one does nothing.
///
/// Nothing is freed here: this runs between `fork` and whatever the program does next.
pub(crate) fn after_fork_in_child(table: &mut Table) {
    PENDING.store(0, Ordering::Relaxed);
    for entry in table.iter_mut() {
        for lent in &mut entry.lent {
            lent.state = LentState::Foreign;
        }
        // SAFETY: the table is held, as the links of a tree with a shared root require, and the
        // handles of the tree, its root among them, stay alive while it is.
        let access = unsafe { pool::TreeAccess::new() };
        // Only the forking thread exists in the new process, so nothing else is using any of the
        // pools.
        pool::for_each_descendant(&access, entry.handle, |pool| {
            if let Some(heap) = pool.heap() {
                // SAFETY: the copy's blocks are the original pool's, in the parent; a free of
                // one of them here lies in a lent range now marked foreign, which the library
                // ignores, so none comes back to the copy.
                unsafe { heap.abandon() };
            }
        });
    }
}
