//! Shared pools made through the C API: where the chunks of their child pools come from, and
//! how a block of a shared pool is told from a block of one of its child pools.
//!
//! Melon's caller holds the lock around a free of a shared pool's own block, and does not around
//! a free of a child pool's block (the child locks for itself when it gives a chunk back). So
//! [`owner`] must tell the two apart without the lock and without reading the shared memory,
//! which other processes may be changing. Each shared pool's entry in this process's table keeps
//! the address ranges of the chunks lent to this process's pools: a pointer inside one is a
//! child's block, any other pointer in the mapping is the shared pool's own.

use core::alloc::Layout;
use core::ffi::c_int;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::collections::BTreeMap;
use std::sync::{Once, PoisonError, RwLock};

use melon_alloc_core::ChunkSource;
use melon_alloc_heap::Pool;
use melon_alloc_shm::ShmPool;

/// A shared pool made through the C API, as this process sees it.
struct Entry {
    /// The shared pool, alive as long as the entry.
    shm: NonNull<ShmPool>,
    /// The mapping's address range.
    start: usize,
    end: usize,
    /// Chunks lent to this process's pools: start address to end address.
    lent: BTreeMap<usize, usize>,
    /// Chunks whose return failed because the lock failed: given back the next time a child pool
    /// of this process takes the lock, so that a failing lock loses no memory.
    pending: Vec<NonNull<u8>>,
    /// This process's heap pools whose chunks lie in the mapping, at any depth: their copies in a
    /// forked process are abandoned.
    pools: Vec<NonNull<Pool>>,
}

// SAFETY: the pointers are to a shared pool and heap pools that live as long as their entries
// (they are removed before being destroyed) and to chunks of the mapping; every access goes
// through the table's lock, and to the pools only as the callers of this module allow.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

/// The shared pools made through the C API in this process.
static TABLE: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
/// How many entries `TABLE` holds: lets a free of a heap block skip the table when there are no
/// shared pools, the common case.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// This process's id, refreshed in a forked child; 0 until the first shared pool is made.
static PID: AtomicU32 = AtomicU32::new(0);

fn table_mut() -> std::sync::RwLockWriteGuard<'static, Vec<Entry>> {
    TABLE.write().unwrap_or_else(PoisonError::into_inner)
}

fn table() -> std::sync::RwLockReadGuard<'static, Vec<Entry>> {
    TABLE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a shared pool to the table.
///
/// # Safety
/// `shm` stays valid until it is passed to [`unregister`].
pub(crate) unsafe fn register(shm: NonNull<ShmPool>) {
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        // SAFETY: the handler is an `extern "C" fn` that lives as long as the program.
        unsafe { pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    // SAFETY: the caller promises a live pool.
    let pool = unsafe { shm.as_ref() };
    let start = pool.ptr_at(0).map_or(0, |base| base.as_ptr().addr());
    let end = start + pool.capacity();
    let mut table = table_mut();
    table.push(Entry {
        shm,
        start,
        end,
        lent: BTreeMap::new(),
        pending: Vec::new(),
        pools: Vec::new(),
    });
    COUNT.store(table.len(), Ordering::Release);
}

/// Removes a shared pool from the table, before it is destroyed.
pub(crate) fn unregister(shm: NonNull<ShmPool>) {
    let mut table = table_mut();
    if let Some(index) = table.iter().position(|entry| entry.shm == shm) {
        table.swap_remove(index);
    }
    COUNT.store(table.len(), Ordering::Release);
}

/// Records that `pool`'s chunks come from the mapping of `shm`.
pub(crate) fn add_pool(shm: NonNull<ShmPool>, pool: NonNull<Pool>) {
    if let Some(entry) = table_mut().iter_mut().find(|entry| entry.shm == shm) {
        entry.pools.push(pool);
    }
}

/// Forgets `pool`, before it is destroyed.
pub(crate) fn remove_pool(shm: NonNull<ShmPool>, pool: NonNull<Pool>) {
    if let Some(entry) = table_mut().iter_mut().find(|entry| entry.shm == shm) {
        entry.pools.retain(|&known| known != pool);
    }
}

/// Whose block a pointer is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner {
    /// A block of a heap pool, a child of a shared pool included: its chunk header names the
    /// pool.
    Heap,
    /// A block of the shared pool itself.
    Shared(NonNull<ShmPool>),
}

/// Finds what kind of pool a block belongs to, from this process's table alone.
#[inline]
pub(crate) fn owner(block: NonNull<u8>) -> Owner {
    if COUNT.load(Ordering::Acquire) == 0 {
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
    match entry.lent.range(..=addr).next_back() {
        Some((_, &end)) if addr < end => Owner::Heap,
        _ => Owner::Shared(entry.shm),
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

    /// Gives back, under the lock `guard` holds, the chunks whose return failed earlier.
    fn give_back_pending(&self, guard: &mut melon_alloc_shm::ShmGuard<'_>) {
        let pending = match table_mut().iter_mut().find(|entry| ptr_eq(entry.shm, self.shm)) {
            Some(entry) if !entry.pending.is_empty() => core::mem::take(&mut entry.pending),
            _ => return,
        };
        for chunk in pending {
            // SAFETY: a chunk on the pending list was given back by its pool, which uses it no
            // more, and is a block of this shared pool still in use.
            let _ = unsafe { guard.free(chunk) };
        }
    }
}

fn ptr_eq(entry: NonNull<ShmPool>, shm: &ShmPool) -> bool {
    core::ptr::eq(entry.as_ptr(), shm)
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
        self.give_back_pending(&mut guard);
        let chunk = guard.alloc_layout(layout).ok();
        // A failing unlock does not undo the allocation, which is good: Melon ignores it too.
        let _ = guard.unlock();
        let chunk = chunk?;
        let start = chunk.as_ptr().addr();
        if let Some(entry) = table_mut().iter_mut().find(|entry| ptr_eq(entry.shm, self.shm)) {
            entry.lent.insert(start, start + layout.size());
        }
        Some(chunk)
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, _layout: Layout) {
        if !self.in_maker() {
            // The original pool, in the process that made it, still holds the chunk.
            return;
        }
        let start = chunk.as_ptr().addr();
        if let Some(entry) = table_mut().iter_mut().find(|entry| ptr_eq(entry.shm, self.shm)) {
            entry.lent.remove(&start);
        }
        match self.shm.lock() {
            Ok(mut guard) => {
                // SAFETY: the chunk is a block of the shared pool, in use until now, and the
                // caller (the pool giving it back) uses it no more.
                let _ = unsafe { guard.free(chunk) };
                self.give_back_pending(&mut guard);
            }
            Err(_) => {
                if let Some(entry) =
                    table_mut().iter_mut().find(|entry| ptr_eq(entry.shm, self.shm))
                {
                    entry.pending.push(chunk);
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

extern "C" {
    /// POSIX `pthread_atfork`, from the C library the standard library links.
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

/// Runs in a forked child: the pools made from shared pools before the fork belong to the
/// parent, so their copies here forget their chunks (and hand out nothing more, since their
/// source refuses a process other than their maker), and the table forgets the parent's lent and
/// pending chunks.
unsafe extern "C" fn after_fork_in_child() {
    PID.store(std::process::id(), Ordering::Relaxed);
    // Another thread of the parent may have held the table's lock at the fork; it does not exist
    // here, so the lock would never be released: leave the table as it is rather than wait.
    let mut table = match TABLE.try_write() {
        Ok(table) => table,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for entry in table.iter_mut() {
        entry.lent.clear();
        entry.pending.clear();
        for pool in &entry.pools {
            // SAFETY: a pool in the table is alive (removed before it is destroyed); only the
            // forking thread exists in the new process, so nothing else is using it.
            unsafe { pool.as_ref() }.abandon();
        }
    }
}
