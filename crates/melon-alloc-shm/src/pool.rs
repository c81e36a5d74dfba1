//! The shared pool: one mapping, a lock, the allocator inside, and the process-local handle.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;
use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use melon_alloc_core::{ChunkSource, FreeError, CHUNK_SIZE, SMALL_CHUNK};
use melon_alloc_heap::{AllocError, ChildPool};

use crate::arena::{AllocThen, Arena, Located, NoRoom, RemoteFree, RemoteTarget, CHUNK_HEADER};
use crate::identity::{Identity, Kernel};
use crate::layout::{
    Geometry, Header, CLASS_SIZES, LOCK_BUILTIN, LOCK_CUSTOM, MAGIC, MAX_CAPACITY, MIN_CAPACITY,
    NONE, PAGE, SLAB_BLOCKS, VERSION,
};
use crate::lock::{lock_robust, unlock_robust, ProcessLock, ShmLock};
use crate::owner::{self, Claim, ReclaimReport};
use crate::spares::Spares;
use crate::sys::{self, Mapping};
use crate::{registry, ShmClassStats, ShmError, ShmPoolBuilder, ShmStats};

/// The chunks whose return to the pool failed, behind a flag of its own rather than a mutex:
/// the fork handler takes the flag before a fork and gives it back after, in both processes
/// (see [`Shared::before_fork`]), so that no process is forked while another of its threads is
/// changing the list. A mutex held by such a thread would stay held in the new process, where
/// that thread does not exist, and the new process's next holder of the pool's lock, which
/// looks at the list, would wait for it forever, with every other process of the pool waiting
/// behind it.
struct PendingReturns {
    taken: core::sync::atomic::AtomicBool,
    list: core::cell::UnsafeCell<Vec<PendingReturn>>,
}

// SAFETY: the list is only reached by the thread that holds the flag, inside `with`; the fork
// handler holds the flag across a fork without reaching the list.
unsafe impl Sync for PendingReturns {}

impl PendingReturns {
    const fn new() -> Self {
        Self {
            taken: core::sync::atomic::AtomicBool::new(false),
            list: core::cell::UnsafeCell::new(Vec::new()),
        }
    }

    /// Runs `f` on the list, the flag held: the critical sections are a push or a take, so a
    /// waiter spins, and yields its core now and then to a holder that lost its own.
    fn with<R>(&self, f: impl FnOnce(&mut Vec<PendingReturn>) -> R) -> R {
        self.take();
        /// Gives the flag back however `f` ends.
        struct Give<'a>(&'a PendingReturns);
        impl Drop for Give<'_> {
            fn drop(&mut self) {
                self.0.give();
            }
        }
        let _give = Give(self);
        // SAFETY: this thread holds the flag until `_give` drops, so no other thread reaches
        // the list meanwhile.
        f(unsafe { &mut *self.list.get() })
    }

    /// Takes the flag, waiting for its holder.
    fn take(&self) {
        let mut spins = 0u32;
        while self
            .taken
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
    }

    /// Gives the flag back.
    fn give(&self) {
        self.taken.store(false, Ordering::Release);
    }
}

/// A chunk whose return to the pool failed, waiting for the next time the lock is taken.
#[derive(Clone, Copy, Debug)]
struct PendingReturn {
    offset: u64,
    size: usize,
    /// The owner slot it was lent under.
    owner: u32,
    /// The [`sys::process_token`] of the process whose child pool gave it up: the only process
    /// that may give it back. A process forked meanwhile inherits the list, and by the time it
    /// takes the lock its parent may have given the chunk back and had it lent again.
    process: u64,
}

/// The process-local side of a pool: its mapping and its lock. Lives at a fixed address (see
/// [`ShmPool`]) so that the registry and child pools can point at it.
pub(crate) struct Shared {
    mapping: Mapping,
    lock: Option<Box<dyn ShmLock>>,
    /// Chunks a child pool could not give back because the lock failed; given back the next
    /// time this process takes the lock, at the latest when the handle is dropped. A lock that
    /// fails then too leaves them lent: to the process's slot, which a reclaim empties once the
    /// process is gone, or, lent to no slot, for the pool's life.
    pending_returns: PendingReturns,
    /// Whether `pending_returns` may hold anything, so that taking the lock need not look.
    has_pending: core::sync::atomic::AtomicBool,
    /// The allocator's view of the mapping: the geometry, read from the header once, so that no
    /// locked stretch reads it again, and the end of the pages grown so far.
    arena: Arena,
    /// How long this process's operations wait for the built-in lock, in nanoseconds, or
    /// [`NO_TIMEOUT`]. A setting of this process's handle, not of the pool: each process decides
    /// how long it is willing to wait.
    lock_timeout: core::sync::atomic::AtomicU64,
    /// This process's slot in the owner table, which the chunks of its child pools are lent to.
    claim: Claim,
    /// This process's identity in the pool, which the built-in lock's word holds while it
    /// holds the lock.
    identity: Identity,
    /// Descriptions of the pool's file opened before a fork, for the new process's identity
    /// and claim.
    spares: Spares,
}

/// The header's fields that `attach` checks, read from the file.
struct HeaderFields {
    magic: u64,
    version: u32,
    capacity: u64,
    initial_capacity: u64,
    page_count: u32,
    first_data_page: u32,
    lock_kind: u32,
    lock_abi: u32,
}

impl HeaderFields {
    /// The fields, from the file's first bytes: they lie before anything that changes after the
    /// pool is made.
    fn read(fd: BorrowedFd<'_>) -> Result<Self, ShmError> {
        use core::mem::offset_of;
        let mut bytes = [0; offset_of!(Header, takeovers)];
        let read = Mapping::read_start(fd, &mut bytes)
            .map_err(|errno| ShmError::os("reading the pool's header", errno))?;
        if read < bytes.len() {
            return Err(ShmError::NotAPool);
        }
        // Each field as the header's own type lays it out in memory, in this machine's order.
        let word = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let wide = |at: usize| {
            let mut field = [0; 8];
            field.copy_from_slice(&bytes[at..at + 8]);
            u64::from_ne_bytes(field)
        };
        Ok(Self {
            magic: wide(offset_of!(Header, magic)),
            version: word(offset_of!(Header, version)),
            capacity: wide(offset_of!(Header, capacity)),
            initial_capacity: wide(offset_of!(Header, initial_capacity)),
            page_count: word(offset_of!(Header, page_count)),
            first_data_page: word(offset_of!(Header, first_data_page)),
            lock_kind: word(offset_of!(Header, lock_kind)),
            lock_abi: word(offset_of!(Header, lock_abi)),
        })
    }

    /// The geometry the fields describe, if it is one this library makes.
    fn geometry(&self) -> Option<Geometry> {
        let max = usize::try_from(self.capacity).ok()?;
        let initial = usize::try_from(self.initial_capacity).ok()?;
        let geometry = Geometry::growing(initial, max)?;
        let made = geometry.capacity == max
            && geometry.initial_capacity == initial
            && geometry.page_count == self.page_count
            && geometry.first_data_page == self.first_data_page;
        made.then_some(geometry)
    }
}

/// References to the header's fields that processes change concurrently, all of them atomic;
/// see [`Shared::header_atomics`].
struct HeaderAtomics<'a> {
    lock: &'a crate::layout::PoolLock,
    holder: &'a crate::sync::AtomicU64,
    takeovers: &'a crate::sync::AtomicU64,
    undone: &'a crate::sync::AtomicU64,
    log_len: &'a crate::sync::AtomicU32,
}

/// [`Shared::lock_timeout`] when operations wait as long as it takes.
const NO_TIMEOUT: u64 = u64::MAX;

impl Shared {
    /// The process-local side of a pool mapping formatted for `geometry`.
    fn new(mapping: Mapping, lock: Option<Box<dyn ShmLock>>, geometry: Geometry) -> Self {
        // SAFETY: the mapping holds a pool formatted for `geometry` (made or checked by the
        // caller), mapped up to its initial end at least; the arena is only used while the lock
        // is held, and `lock_within` syncs its end.
        let arena = unsafe { Arena::new(mapping.base().as_ptr(), geometry) };
        Self {
            mapping,
            lock,
            pending_returns: PendingReturns::new(),
            has_pending: core::sync::atomic::AtomicBool::new(false),
            arena,
            lock_timeout: core::sync::atomic::AtomicU64::new(NO_TIMEOUT),
            claim: Claim::new(),
            identity: Identity::new(),
            spares: Spares::new(),
        }
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.mapping.base().as_ptr()
    }

    /// The header's atomics, by reference. No reference to the whole header is ever made: the
    /// undo log and the allocator state in it are plain memory that other processes write
    /// (under the lock), which a `&Header` would claim nobody changes while it lives; they are
    /// read and written through raw pointers only.
    fn header_atomics(&self) -> HeaderAtomics<'_> {
        let header = self.base().cast::<Header>();
        // SAFETY: (1) the mapping starts with the pool's header, valid for as long as the
        // mapping, which outlives `self`; (2) each reference covers atomics, which other
        // processes only access atomically.
        unsafe {
            HeaderAtomics {
                lock: &*ptr::addr_of!((*header).lock),
                holder: &*ptr::addr_of!((*header).holder),
                takeovers: &*ptr::addr_of!((*header).takeovers),
                undone: &*ptr::addr_of!((*header).undone),
                log_len: &*ptr::addr_of!((*header).log_len),
            }
        }
    }

    /// Bytes from the start of the pool to the end of the pages grown so far, as the header
    /// publishes it: every offset below it is the pool's.
    #[inline]
    pub(crate) fn extent(&self) -> usize {
        self.arena.published_end() as usize * PAGE
    }

    /// Maps the pages grown so far, as the header publishes them, where this process has not
    /// mapped them yet. Returns the bytes mapped.
    fn map_published(&self) -> Result<usize, ShmError> {
        self.mapping
            .map_to(self.extent())
            .map_err(|errno| ShmError::os("mapping the pool's new pages", errno))
    }

    /// Maps the pages other processes grew the pool by, without the pool's lock: what a process
    /// does before it follows a pointer into the pool that another process wrote.
    pub(crate) fn map_grown(&self) -> Result<(), ShmError> {
        self.map_published().map(|_| ())
    }

    /// Maps the pages another process grew the pool by, and has the arena work within them.
    /// Called by the lock's holder.
    fn catch_up_growth(&self) -> Result<(), ShmError> {
        let mapped = self.map_published()?;
        self.arena.sync_end(u32::try_from(mapped / PAGE).unwrap_or(u32::MAX));
        Ok(())
    }

    /// The timeout set with [`ShmPool::set_lock_timeout`].
    fn timeout(&self) -> Option<Duration> {
        match self.lock_timeout.load(Ordering::Relaxed) {
            NO_TIMEOUT => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// A lock word of the pool (its own lock's, or a [`ShmMutex`](crate::ShmMutex)'s) as the
    /// process whose identity in the pool is `me` takes it.
    #[inline]
    pub(crate) fn word_lock<'a>(
        &'a self,
        word: &'a crate::sync::AtomicU32,
        me: u32,
    ) -> ProcessLock<'a, Kernel<'a>> {
        ProcessLock::new(word, me, Kernel { pool: Some(&self.mapping) })
    }

    /// This process's identity in the pool, made now if it has none.
    ///
    /// # Errors
    /// [`ShmError::Os`] with `EBADF` when the pool's descriptor in this process no longer names
    /// the pool's file ([`UNUSABLE`](crate::identity::UNUSABLE)), and with what the system said
    /// when it had no descriptor or memory to spare for the identity.
    #[inline]
    pub(crate) fn identity_here(&self) -> Result<u32, ShmError> {
        usable(self.identity.get(self.header_atomics().lock, &self.mapping, &self.spares))
    }

    /// Takes the lock, waiting at most the timeout set for this process's operations.
    #[inline]
    pub(crate) fn lock(&self) -> Result<ShmGuard<'_>, ShmError> {
        self.lock_within(self.timeout())
    }

    /// Takes the lock, waiting at most `timeout` if the lock is the built-in one, maps the pages
    /// other processes grew the pool by, undoes any operation a dead holder left half done, and
    /// gives back chunks whose return failed earlier.
    #[inline]
    fn lock_within(&self, timeout: Option<Duration>) -> Result<ShmGuard<'_>, ShmError> {
        let header = self.header_atomics();
        let mut holder_died = false;
        // The holder's token, kept by the guard for the unlock: one lookup per hold.
        let mut token = 0;
        match &self.lock {
            None => {
                let process;
                (token, process) = sys::thread_and_process_tokens();
                if header.holder.load(Ordering::Relaxed) == token {
                    return Err(ShmError::WouldDeadlock);
                }
                let lock = header.lock;
                let identity =
                    usable(self.identity.get_as(process, lock, &self.mapping, &self.spares))?;
                let lock = self.word_lock(&header.lock.word, identity);
                lock_robust(&lock, timeout, header.takeovers, || {
                    // An undo that cannot run leaves the log as it is, and `catch_up` below
                    // reports why.
                    let _ = self.undo_dead_holder();
                    holder_died = true;
                })?;
                header.holder.store(token, Ordering::Relaxed);
            }
            Some(lock) => lock.lock().map_err(ShmError::Lock)?,
        }
        // Made now, so that an error below releases the lock.
        let mut guard = ShmGuard { shared: self, token, _not_send: core::marker::PhantomData };
        // All four are rare; one test each keeps the common path short.
        if header.log_len.load(Ordering::Relaxed) != 0
            || self.has_pending.load(Ordering::Relaxed)
            || self.arena.is_behind()
        {
            self.catch_up()?;
        }
        if holder_died {
            // A holder's death is a process's, most likely: whatever it lent is given back now.
            guard.reclaim_dead();
        }
        Ok(guard)
    }

    /// What a process that has just taken the lock may find left to do: pages another process
    /// grew the pool by, to map; an operation whose process died half way, to undo; and chunks
    /// whose return to the pool failed, to take back.
    ///
    /// # Errors
    /// [`ShmError::Os`] when the new pages cannot be mapped, or the file's length read for an
    /// undo: the pool's state then stays as it is, the operation to undo in the log, for a
    /// process that can.
    #[cold]
    #[inline(never)]
    fn catch_up(&self) -> Result<(), ShmError> {
        let arena = &self.arena;
        self.catch_up_growth()?;
        self.undo_dead_holder()?;
        if self.has_pending.swap(false, Ordering::Acquire) {
            let pending = self.pending_returns.with(core::mem::take);
            let me = sys::process_token();
            for chunk in pending.into_iter().filter(|chunk| chunk.process == me) {
                arena.take_back(chunk.offset, chunk.size, chunk.owner);
            }
        }
        Ok(())
    }

    /// Undoes the operation a dead holder left half done, if there is one, and counts it.
    /// The caller holds the lock.
    ///
    /// The dead holder may have been growing the pool: the pages it published are mapped
    /// first, and the undo may write the descriptors and bitmap words of any page the file
    /// reaches, whose metadata a growth reserves before it lengthens the file. Where the pages
    /// cannot be mapped, or the file's length read, the operation stays in the log for the next
    /// holder, and the error says why.
    fn undo_dead_holder(&self) -> Result<(), ShmError> {
        let arena = &self.arena;
        let mapped = self.map_published()?;
        let file = self
            .mapping
            .len()
            .map_err(|errno| ShmError::os("reading the length of the pool's file", errno))?;
        let pages = |bytes: u64| u32::try_from(bytes / PAGE as u64).unwrap_or(u32::MAX);
        let (mapped, reserved) = (pages(mapped as u64), pages(file));
        // SAFETY: (1) the mapping is a formatted pool, and the metadata of every page, which the
        // words `holds_logged_word` accepts lie in, comes before the first data page, mapped
        // since the pool was; (2) the caller holds the lock.
        let undone = unsafe {
            crate::tx::recover(
                self.base(),
                |offset, width| arena.holds_logged_word(offset, width, reserved),
                || arena.recount_after_undo(mapped),
            )
        };
        if undone {
            self.header_atomics().undone.fetch_add(1, Ordering::Relaxed);
        }
        // The block a removal left to free may lie in pages another process grew the pool by,
        // which this process's view of the end must reach first.
        arena.sync_end(mapped);
        arena.finish_release();
        Ok(())
    }

    /// Releases the lock that the thread whose token is `token` (its [`sys::thread_token`])
    /// holds.
    #[inline]
    fn unlock(&self, token: u64) -> Result<(), ShmError> {
        match &self.lock {
            None => {
                let header = self.header_atomics();
                let refused = || ShmError::os("releasing the pool's lock", rustix::io::Errno::PERM);
                // A guard copied into another process by a fork is not that process's hold: its
                // release is refused before anything is touched, so the holder's own still
                // works. The word names the holding process; the anonymous identity names any
                // process without one of its own, which the thread's token tells apart.
                let identity = self.identity.current().ok_or_else(refused)?;
                let named = header.lock.word.load(Ordering::Relaxed) & crate::lock::HOLDER;
                if named != identity
                    || (identity == crate::identity::ANONYMOUS && token != sys::thread_token())
                {
                    return Err(refused());
                }
                // Only the holding thread releases the lock, and clears its own token: another
                // thread must not erase the token of the thread that holds the lock, which would
                // then wait for itself on its next `lock` instead of hearing `WouldDeadlock`; nor
                // release that thread's lock, which its word would not tell from this one's when
                // both run in one process. A load and a store do this without a locked
                // instruction: the token is written only by a holder of the lock, its own after
                // it takes it and 0 before it lets it go, so a thread that does not hold the lock
                // reads 0 or the holder's token, never its own (its own last write to the word,
                // which it reads or a later one, was a 0), and a thread that holds it reads its
                // own token, which nothing else writes until the release below.
                if header.holder.load(Ordering::Relaxed) != token {
                    return Err(refused());
                }
                header.holder.store(0, Ordering::Relaxed);
                unlock_robust(&self.word_lock(&header.lock.word, identity))
            }
            Some(lock) => lock.unlock().map_err(ShmError::Lock),
        }
    }

    /// Frees a handed-off block of a child pool's chunk, at `addr` in the chunk `target` names,
    /// onto the chunk's remote-free list, without the lock; when the chunk's process gave it up,
    /// gives it back if nothing of it is out any more, as `orphans` says.
    ///
    /// # Safety
    /// As for [`ShmGuard::free`].
    #[inline]
    pub(crate) unsafe fn free_remote(
        &self,
        addr: usize,
        target: RemoteTarget<'_>,
        orphans: Orphans,
    ) -> Result<(), ShmError> {
        // SAFETY: the caller frees an in-use block once; one of a lent chunk is one handed off,
        // or its block's mark, which `push_remote` checks, refuses it.
        let RemoteFree { accepted, given_up } = unsafe { self.arena.push_remote(target) };
        if let Some(chunk) = given_up {
            match orphans {
                Orphans::Held => {
                    self.arena.release_orphan(chunk);
                }
                Orphans::Lock => {
                    if let Ok(_guard) = self.lock() {
                        self.arena.release_orphan(chunk);
                    }
                }
                Orphans::Leave => {}
            }
            // A lock that fails, or is not taken, leaves the orphan, idle or not, to the next
            // reclaim.
        }
        if accepted {
            Ok(())
        } else {
            Err(ShmError::NotHandedOff { addr })
        }
    }

    /// Frees `block` without the lock if it is a block boundary in a chunk lent to a child pool,
    /// in the part this process has mapped: a handed-off block goes onto its chunk's remote-free
    /// list, any other is refused ([`ShmError::NotHandedOff`]), to be freed by its child. `None`
    /// for a pointer anywhere else, which the lock's holder frees or refuses.
    ///
    /// # Safety
    /// As for [`ShmPool::try_free`].
    #[inline]
    pub(crate) unsafe fn free_if_lent(
        &self,
        block: NonNull<u8>,
        orphans: Orphans,
    ) -> Option<Result<(), ShmError>> {
        let target = self
            .locked_offset_of(block.as_ptr())
            .and_then(|offset| self.arena.remote_target(offset))?;
        // SAFETY: forwarded from the caller.
        Some(unsafe { self.free_remote(block.as_ptr().addr(), target, orphans) })
    }

    /// Whether the pool's lock is a custom one ([`ShmPool::with_lock`]).
    pub(crate) fn has_custom_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// The addresses reserved for the pool's mapping, at its largest capacity.
    pub(crate) fn reserved_range(&self) -> core::ops::Range<usize> {
        let start = self.base().addr();
        start..start + self.mapping.reserved()
    }

    /// The addresses of the part of the mapping this process has mapped so far, which only
    /// grows while the pool lives.
    pub(crate) fn mapped_range(&self) -> core::ops::Range<usize> {
        let start = self.base().addr();
        start..start + self.mapping.mapped()
    }

    /// The offset of `block` in the mapping, if it lies in the part this process has mapped: for
    /// a caller that holds the lock, which mapped the pages grown so far as it took it, and for
    /// one that only reads the block's first words, which lie there if the block is this
    /// process's to free.
    pub(crate) fn locked_offset_of(&self, block: *const u8) -> Option<u64> {
        let offset = block.addr().checked_sub(self.base().addr())?;
        (offset < self.mapping.mapped()).then_some(offset as u64)
    }

    /// The offset of `addr` in the addresses reserved for the mapping, mapped or not.
    pub(crate) fn reserved_offset_of(&self, addr: *const u8) -> Option<usize> {
        let offset = addr.addr().checked_sub(self.base().addr())?;
        (offset < self.mapping.reserved()).then_some(offset)
    }

    /// The offset of `block` in the mapping, if it lies in the part this process has mapped,
    /// which first grows to the pages grown so far: `block` may be one that another process
    /// allocated from pages it grew the pool by, and the caller will touch all of it.
    pub(crate) fn offset_of(&self, block: *const u8) -> Option<u64> {
        let offset = self.reserved_offset_of(block)?;
        let mapped = self.map_published().ok()?;
        (offset < mapped).then_some(offset as u64)
    }

    /// Takes the lock, and so gives back the chunks whose return failed, if there are any; see
    /// [`plumbing::retry_returns`](crate::plumbing::retry_returns).
    pub(crate) fn retry_returns(&self) {
        if self.has_pending.load(Ordering::Relaxed) {
            // Taking the lock is the work (see `catch_up`); a lock that fails again leaves them.
            drop(self.lock());
        }
    }

    /// Before a fork, on the forking thread: opens the descriptions the new process will make
    /// its identity and claim its slot through, and takes the flag of the chunks whose return
    /// failed, so that no other thread is changing their list when the process forks.
    pub(crate) fn before_fork(&self) {
        if let Ok(pool) = self.mapping.checked_fd() {
            self.spares.open_for_child(pool);
        }
        self.pending_returns.take();
    }

    /// After a fork, in the parent.
    pub(crate) fn after_fork_in_parent(&self) {
        self.pending_returns.give();
        self.spares.close_for_child();
    }

    /// After a fork, in the new process, where only the forking thread exists.
    pub(crate) fn after_fork_in_child(&self) {
        self.pending_returns.give();
        self.spares.adopt();
    }

    /// Drops this process's claim on its owner slot without the lock; see
    /// [`plumbing::let_go_without_lock`](crate::plumbing::let_go_without_lock).
    pub(crate) fn claim_close(&self) {
        self.claim.close();
    }

    /// Whose block `block` is, without the lock and without writing the mapping: see
    /// [`plumbing::whose`](crate::plumbing::whose).
    pub(crate) fn whose(&self, block: *const u8) -> Whose {
        let Some(offset) = block.addr().checked_sub(self.base().addr()) else {
            return Whose::Outside;
        };
        if offset >= self.mapping.reserved() {
            return Whose::Outside;
        }
        // A chunk of this process's lies in the pages it has mapped: it mapped them to lend it.
        if offset >= self.mapping.mapped() {
            return Whose::Shared;
        }
        match self.arena.lent_owner(offset as u64) {
            None => Whose::Shared,
            Some(owner) if owner != NONE && Some(owner) == self.claim.current() => Whose::OwnChild,
            Some(_) => Whose::OtherChild,
        }
    }

    /// [`whose`](Shared::whose), with a block of this process's child pools that is handed off
    /// told apart: see [`plumbing::whose_to_free`](crate::plumbing::whose_to_free). A pointer
    /// at a block boundary of a lent chunk is answered from that chunk's descriptors, read once
    /// for both answers; any other pointer as `whose` answers it.
    ///
    /// # Safety
    /// As for `plumbing::whose_to_free`.
    pub(crate) unsafe fn whose_to_free(&self, block: *const u8) -> Whose {
        let target =
            self.locked_offset_of(block).and_then(|offset| self.arena.remote_target(offset));
        let Some(target) = target else {
            return self.whose(block);
        };
        let owner = self.arena.target_owner(target);
        if owner == NONE || Some(owner) != self.claim.current() {
            return Whose::OtherChild;
        }
        // SAFETY: the block is one a child pool of this process holds, or handed off and not yet
        // freed (caller), so its chunk stays lent.
        if unsafe { self.arena.is_handed_off(target) } {
            Whose::HandedOff
        } else {
            Whose::OwnChild
        }
    }

    fn ptr_at(&self, offset: u64) -> NonNull<u8> {
        // SAFETY: offsets handed out by the arena lie inside the mapping, within the end of the
        // pages grown so far, which this process has mapped.
        unsafe { NonNull::new_unchecked(self.base().add(offset as usize)) }
    }
}

/// The lock of a shared pool, held: every operation through it runs without taking the lock
/// again. Dropping it releases the lock.
///
/// # Fork
/// A process forked while a thread of its parent holds the guard gets a copy of the guard,
/// which does not hold the lock in the new process: the new process must not use the copy (it
/// forgets it with `mem::forget` or ends with `_exit`), or it allocates and frees alongside the
/// holder. Its release is refused and leaves the holder's lock alone. Forking is unsafe, and
/// this is part of what a caller of `fork` promises.
///
/// # Soundness
/// Allocation, `usable_size`, `available`, `stats` and `check` are safe: every block and offset
/// is checked against the pool before it is used. A free or a resize is unsafe, since the block
/// may still be in use somewhere, in any process. The guard is not `Send`: the built-in lock
/// belongs to the thread that took it.
///
/// # Examples
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// // A block and the count that includes it, with no other process in between.
/// let mut guard = shm.lock()?;
/// let block = guard.alloc(64)?;
/// assert_eq!(guard.stats().live_blocks, 1);
/// // SAFETY: the block came from `shm` and is not used again.
/// unsafe { guard.free(block) }?;
/// drop(guard); // releases the lock
/// assert_eq!(shm.stats()?.live_blocks, 0);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[must_use = "the pool's lock is released as soon as the guard is dropped"]
// Two words, which `lock_within` returns in registers: with a third, its result went through
// memory, and a locked alloc+free pair took a quarter longer.
pub struct ShmGuard<'pool> {
    shared: &'pool Shared,
    /// The token of the thread that took the built-in lock ([`sys::thread_token`]), which the
    /// unlock clears from the lock; 0 with a lock of the user's.
    token: u64,
    /// The built-in lock belongs to the thread that took it.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl ShmGuard<'_> {
    /// The allocator, for the crate's operations made of several steps under one hold of the
    /// lock (the directory of names).
    pub(crate) fn arena(&self) -> &Arena {
        &self.shared.arena
    }

    /// The address in this process of `offset`, which the arena handed out or checked.
    pub(crate) fn ptr_at(&self, offset: u64) -> NonNull<u8> {
        self.shared.ptr_at(offset)
    }

    /// The offset of `block` in the part of the mapping this process has mapped.
    pub(crate) fn offset_of(&self, block: *const u8) -> Option<u64> {
        self.shared.locked_offset_of(block)
    }

    /// Allocates `size` bytes aligned to 16.
    ///
    /// # Errors
    /// [`ShmError::OutOfMemory`] when too few bytes are free; [`ShmError::Fragmented`] when enough
    /// are, but in no place that fits the block.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let block = guard.alloc(100)?;
    /// assert_eq!(block.as_ptr().addr() % 16, 0);
    /// assert_eq!(guard.alloc(2 << 20), Err(ShmError::OutOfMemory { size: 2 << 20 }));
    /// # Ok::<(), ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc(&mut self, size: usize) -> Result<NonNull<u8>, ShmError> {
        let Ok(layout) = Layout::from_size_align(size, 16) else {
            return Err(self.shared.arena.refusal_of_no_layout(size));
        };
        self.alloc_layout(layout)
    }

    /// Allocates a block for `layout`: any power-of-two alignment up to 2 MiB.
    ///
    /// # Errors
    /// As for [`alloc`](ShmGuard::alloc); [`ShmError::OutOfMemory`] for an alignment above
    /// 2 MiB.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let page = guard.alloc_layout(Layout::from_size_align(4096, 4096).unwrap())?;
    /// assert_eq!(page.as_ptr().addr() % 4096, 0);
    /// let beyond = Layout::from_size_align(64, 4 << 20).unwrap();
    /// assert_eq!(guard.alloc_layout(beyond), Err(ShmError::OutOfMemory { size: 64 }));
    /// # Ok::<(), ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_layout(&mut self, layout: Layout) -> Result<NonNull<u8>, ShmError> {
        let (arena, size, align) = (&self.shared.arena, layout.size(), layout.align().max(16));
        let offset = match arena.alloc(size, align) {
            Some(offset) => offset,
            // The dead may hold the room this block needs, or the pool may grow.
            None => self
                .with_room(
                    |arena| arena.pages_for_alloc(size, align),
                    |arena| arena.alloc_again(size, align),
                )
                .map_err(|no_room| self.shared.arena.refusal(size, align, no_room))?,
        };
        Ok(self.shared.ptr_at(offset))
    }

    /// Allocates a block for `layout` and runs `then` on its offset in the same logged
    /// operation (see [`Arena::alloc_then`]), making room as [`alloc_layout`] does.
    ///
    /// [`alloc_layout`]: ShmGuard::alloc_layout
    #[cold]
    pub(crate) fn alloc_then(
        &mut self,
        layout: Layout,
        then: AllocThen<'_, '_>,
    ) -> Result<NonNull<u8>, ShmError> {
        let (arena, size, align) = (&self.shared.arena, layout.size(), layout.align().max(16));
        let offset = match arena.alloc_then(size, align, false, &mut *then) {
            Some(offset) => offset,
            None => self
                .with_room(
                    |arena| arena.pages_for_alloc(size, align),
                    |arena| arena.alloc_then(size, align, true, &mut *then),
                )
                .map_err(|no_room| self.shared.arena.refusal(size, align, no_room))?,
        };
        Ok(self.shared.ptr_at(offset))
    }

    /// After `attempt` found no room: runs it again after giving back the chunks of dead
    /// processes, then after growing the pool by enough for a free run of the pages `pages`
    /// says the request needs. The error says whether the system refused a growth.
    #[cold]
    fn with_room<T>(
        &mut self,
        pages: impl FnOnce(&Arena) -> Option<u32>,
        mut attempt: impl FnMut(&Arena) -> Option<T>,
    ) -> Result<T, NoRoom> {
        let arena = &self.shared.arena;
        // The dead may hold the room this needs.
        if self.reclaim_dead().chunks > 0 {
            if let Some(found) = attempt(arena) {
                return Ok(found);
            }
        }
        self.grow(pages(arena).ok_or(NoRoom::InPool)?)?;
        attempt(arena).ok_or(NoRoom::InPool)
    }

    /// Grows the pool by enough whole segments for a free run of `pages` pages: reserves the new
    /// pages' descriptors and bitmap words, then the pages (which lengthens the file), maps them
    /// in this process, and adds them to the free runs, publishing the new end. A pool at its
    /// largest capacity, a growth that even with the free run at the end would hold no run of
    /// `pages` pages (one cut short at the largest capacity), and a system that has not the
    /// memory for all of it leave the pool as it was; one that refuses a reservation or the
    /// mapping part way may leave the file longer, which the next growth reuses; the error says
    /// which of the two refused it, the pool or the system.
    fn grow(&mut self, pages: u32) -> Result<(), NoRoom> {
        let shared = self.shared;
        let arena = &shared.arena;
        let end = arena.end_for_run(pages).ok_or(NoRoom::InPool)?;
        let [descs, bitmap, data] = arena.geometry().reserve_ranges(arena.end(), end);
        // A growth that died after its reservation left the file holding part of the data
        // range, which takes nothing more of the system now. (A file whose length cannot be
        // read counts as holding none of it.)
        let file = shared.mapping.len().unwrap_or(0);
        let held = file.saturating_sub(data.start as u64).min(data.len() as u64);
        let needed = (descs.len() + bitmap.len() + data.len()) as u64 - held;
        if !shared.mapping.has_room(needed) {
            return Err(NoRoom::FromSystem);
        }
        // The metadata before the pages: the undo log counts on the metadata of every page the
        // file reaches being reserved (see `undo_dead_holder`).
        if [descs, bitmap, data].into_iter().any(|range| shared.mapping.allocate(range).is_err()) {
            return Err(NoRoom::FromSystem);
        }
        crate::stop_point::hit();
        let len = end as usize * PAGE;
        if shared.mapping.map_to(len).map_or(true, |mapped| mapped < len) {
            return Err(NoRoom::FromSystem);
        }
        crate::stop_point::hit();
        arena.grow(end).then_some(()).ok_or(NoRoom::InPool)
    }

    /// Frees a block after checking it is an in-use block of this pool.
    ///
    /// # Errors
    /// [`ShmError::Free`] for a pointer outside the pool, inside a block, or not in use (a double
    /// free); nothing changes.
    ///
    /// # Safety
    /// If `block` is an in-use block of the pool, nothing uses it afterwards, in any process.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let block = guard.alloc(64)?;
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { guard.free(block) }?;
    /// // SAFETY: not a block of the pool, which refuses it and changes nothing.
    /// let refused = unsafe { guard.free(core::ptr::NonNull::from(&0u8)) };
    /// assert!(matches!(refused, Err(ShmError::Free(_))));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub unsafe fn free(&mut self, block: NonNull<u8>) -> Result<(), ShmError> {
        let addr = block.as_ptr().addr();
        let offset =
            self.shared.locked_offset_of(block.as_ptr()).ok_or(FreeError::Foreign { addr })?;
        match self.shared.arena.free(offset) {
            // The arena refuses a block of a lent chunk as foreign: it is freed here if it was
            // handed off, refused as not handed off if not, which keeps the check off the path
            // of the pool's own blocks.
            Err(error @ FreeError::Foreign { .. }) => match self.shared.arena.remote_target(offset)
            {
                // SAFETY: forwarded from the caller.
                Some(target) => unsafe { self.shared.free_remote(addr, target, Orphans::Held) },
                None => Err(error.into()),
            },
            freed => Ok(freed?),
        }
    }

    /// Resizes a block; see [`ShmPool::realloc`].
    ///
    /// # Errors
    /// [`ShmError::Free`] when `block` is not an in-use block of the pool;
    /// [`ShmError::OutOfMemory`] or [`ShmError::Fragmented`] when it must move and there is no
    /// room (it stays as it was).
    ///
    /// # Safety
    /// As for [`ShmPool::realloc`].
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let block = guard.alloc(100)?;
    /// // SAFETY: the block came from `shm`; a shrink keeps it where it is.
    /// assert_eq!(unsafe { guard.realloc(block, 50) }?, Some(block));
    /// // SAFETY: as above; a size of 0 frees it, and it is not used again.
    /// assert_eq!(unsafe { guard.realloc(block, 0) }?, None);
    /// assert_eq!(guard.stats().live_blocks, 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        new_size: usize,
    ) -> Result<Option<NonNull<u8>>, ShmError> {
        if new_size == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.free(block) }?;
            return Ok(None);
        }
        let Ok(layout) = Layout::from_size_align(new_size, 16) else {
            return Err(self.shared.arena.refusal_of_no_layout(new_size));
        };
        // SAFETY: forwarded from the caller.
        unsafe { self.resize(block, layout) }.map(Some)
    }

    /// Resizes a block to `new_layout`: in place when it holds `new_layout.size()` bytes at
    /// `new_layout.align()` already, otherwise by moving its contents (as many bytes as both
    /// blocks hold) to a new block.
    ///
    /// # Errors
    /// As for [`realloc`](ShmGuard::realloc); on error the block stays as it was.
    ///
    /// # Safety
    /// As for [`ShmPool::realloc`].
    pub(crate) unsafe fn resize(
        &mut self,
        block: NonNull<u8>,
        new_layout: Layout,
    ) -> Result<NonNull<u8>, ShmError> {
        let usable = self.usable_size(block)?;
        if new_layout.size() <= usable && block.as_ptr().addr() % new_layout.align() == 0 {
            return Ok(block);
        }
        // The new block is recorded as one to free, in the operation that allocates it, until
        // the contents have moved: a death until then (a copy of many megabytes takes a while)
        // leaves the old block as it was, and the next holder frees the new one, as it does a
        // named block whose removal died. Then the record names the old block instead, in one
        // logged write, and the free that follows clears it: from that write on, a death leaves
        // the free to the next holder, and the move stands. The old block is never written
        // before it is sure to go, so a move cut short leaves it whole. A record an earlier
        // operation left is finished first, since the move takes its place.
        let arena = &self.shared.arena;
        arena.finish_release();
        let mut record =
            |arena: &Arena, tx: &mut crate::tx::Tx, offset| arena.set_releasing(tx, offset);
        let moved = self.alloc_then(new_layout, &mut record)?;
        // The whole block is read through the mapping's pointer: the caller's may reach only the
        // bytes it asked for (an `Allocator`'s caller hands `grow` a pointer made from its slice).
        let source = self.shared.base().with_addr(block.as_ptr().addr());
        // SAFETY: (1) the old block, in the mapping (`usable_size` found it there), holds
        // `usable` bytes, the new one `new_layout.size()`, and the smaller count is copied; (2)
        // two in-use blocks never overlap.
        unsafe { ptr::copy_nonoverlapping(source, moved.as_ptr(), usable.min(new_layout.size())) };
        crate::stop_point::hit();
        // `usable_size` found the old block in the mapping.
        let old = self.shared.locked_offset_of(block.as_ptr()).unwrap_or(0);
        arena.record_release(old);
        arena.finish_release();
        Ok(moved)
    }

    /// The bytes an in-use block can hold.
    ///
    /// # Errors
    /// [`ShmError::Free`] when `block` is not an in-use block of the pool itself.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let block = guard.alloc(100)?;
    /// assert!(guard.usable_size(block)? >= 100);
    /// assert!(guard.usable_size(core::ptr::NonNull::from(&0u8)).is_err(), "not in the pool");
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn usable_size(&self, block: NonNull<u8>) -> Result<usize, ShmError> {
        let addr = block.as_ptr().addr();
        let offset =
            self.shared.locked_offset_of(block.as_ptr()).ok_or(FreeError::Foreign { addr })?;
        match self.shared.arena.locate(offset)? {
            Located::Lent => Err(ShmError::Free(FreeError::Foreign { addr })),
            located => Ok(self.shared.arena.usable_size(located)),
        }
    }

    /// Exact free bytes: the data bytes not held by a block in use or lent to a child pool.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let before = guard.available();
    /// let block = guard.alloc(100)?;
    /// assert_eq!(guard.available(), before - guard.usable_size(block)?);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn available(&self) -> usize {
        self.shared.arena.free_bytes() as usize
    }

    /// A snapshot of the pool's counters.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let _block = guard.alloc(100)?;
    /// let stats = guard.stats();
    /// assert_eq!(stats.live_blocks, 1);
    /// assert_eq!(stats.available, guard.available());
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn stats(&self) -> ShmStats {
        let arena = &self.shared.arena;
        let (counters, classes) = arena.census();
        let header = self.shared.header_atomics();
        let tallies = arena.tallies();
        let count = |counter: &crate::sync::AtomicU64| counter.load(Ordering::Relaxed);
        let (geometry, end) = (arena.geometry(), arena.end());
        ShmStats {
            capacity: geometry.capacity_at(end),
            max_capacity: geometry.capacity,
            data_bytes: counters.data_pages as usize * crate::layout::PAGE,
            available: counters.free_bytes as usize,
            bytes_in_use: counters.bytes_in_use as usize,
            live_blocks: counters.live_blocks as usize,
            large_blocks: counters.large_blocks as usize,
            // The lent-page counter is shared memory, which may hold anything.
            lent_bytes: (counters.lent_pages as usize).saturating_mul(crate::layout::PAGE),
            orphaned_bytes: (counters.orphaned_pages as usize).saturating_mul(crate::layout::PAGE),
            lock_takeovers: header.takeovers.load(Ordering::Relaxed),
            operations_undone: header.undone.load(Ordering::Relaxed),
            quarantined_slabs: u64::from(arena.quarantined()),
            // Recorded before each free; the present figure may be the highest yet.
            peak_bytes_in_use: count(&tallies.peak_in_use).max(counters.bytes_in_use) as usize,
            largest_free_run: arena.largest_run() as usize * crate::layout::PAGE,
            failures: count(&tallies.failures),
            segments: geometry.segments(end) as usize,
            reclaimed_processes: count(&tallies.reclaimed_processes),
            reclaimed_bytes: count(&tallies.reclaimed_bytes),
            classes: core::array::from_fn(|class| ShmClassStats {
                block_size: CLASS_SIZES[class],
                slabs: classes[class].slabs as usize,
                blocks_in_use: classes[class].live_blocks as usize,
                blocks: (classes[class].slabs as usize).saturating_mul(SLAB_BLOCKS[class] as usize),
                requests: count(&tallies.requests[class]),
                failures: count(&tallies.class_failures[class]),
            }),
        }
    }

    /// Walks every page, free run and slab, and checks the pool's invariants.
    ///
    /// # Errors
    /// [`ShmError::Corrupt`] with the first broken invariant.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// let block = guard.alloc(100)?;
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { guard.free(block) }?;
    /// assert_eq!(guard.check(), Ok(()));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn check(&self) -> Result<(), ShmError> {
        self.shared.arena.check().map_err(ShmError::Corrupt)
    }

    /// Releases the lock, reporting a failure (dropping the guard ignores it).
    ///
    /// # Errors
    /// [`ShmError::Lock`] when a custom lock's `unlock` fails; [`ShmError::Os`] when the
    /// built-in lock says this thread does not hold it: the guard is a copy that a fork left in
    /// another process (see "The lock" in the architecture notes).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let guard = shm.lock()?;
    /// // The built-in lock is not recursive: this thread would wait for itself.
    /// assert_eq!(shm.lock().err(), Some(ShmError::WouldDeadlock));
    /// guard.unlock()?;
    /// assert!(shm.lock().is_ok());
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn unlock(self) -> Result<(), ShmError> {
        let (shared, token) = (self.shared, self.token);
        core::mem::forget(self);
        shared.unlock(token)
    }

    /// Gives back the chunks of every process that held chunks for its child pools and has
    /// died since. This process's own are never touched.
    ///
    /// Blocks allocated from the shared pool itself are not the process's: they stay in use,
    /// since other processes may hold them.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.lock()?;
    /// assert_eq!(guard.reclaim_dead().chunks, 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn reclaim_dead(&mut self) -> ReclaimReport {
        let shared = self.shared;
        // A descriptor that no longer names the pool's file would take every slot for dead's.
        match shared.mapping.checked_fd() {
            Ok(pool) => owner::reclaim_dead(&shared.arena, pool, shared.claim.current()),
            Err(_) => ReclaimReport::default(),
        }
    }

    /// Lends a chunk to a child pool of this process's, recorded as this process's so that its
    /// death gives it back, with the owner slot it is lent under. Without a slot in the owner
    /// table the chunk is lent to no slot ([`NONE`]), or, if `owned_only`, not at all.
    pub(crate) fn lend(&mut self, layout: Layout, owned_only: bool) -> Option<(NonNull<u8>, u32)> {
        let shared = self.shared;
        let owner = match shared.claim.take(&shared.arena, &shared.mapping, &shared.spares) {
            Some(slot) => slot,
            None if owned_only => return None,
            None => NONE,
        };
        let (size, align) = (layout.size(), layout.align());
        let lend = |arena: &Arena| arena.lend(size, align, owner);
        let offset = match lend(&shared.arena) {
            Some(offset) => offset,
            None => self.with_room(|_| Arena::pages_for_lend(size, align), lend).ok()?,
        };
        Some((shared.ptr_at(offset), owner))
    }

    /// Takes back a chunk that [`lend`](ShmGuard::lend) lent under `owner`: the slot it was
    /// lent under, which a process that had none then and claimed one since no longer has.
    pub(crate) fn take_back(&mut self, chunk: NonNull<u8>, size: usize, owner: u32) {
        let shared = self.shared;
        if let Some(offset) = shared.locked_offset_of(chunk.as_ptr()) {
            shared.arena.take_back(offset, size, owner);
        }
    }
}

impl Drop for ShmGuard<'_> {
    fn drop(&mut self) {
        // A custom lock's failure to unlock cannot be reported from here; `unlock` reports it.
        let _ = self.shared.unlock(self.token);
    }
}

impl core::fmt::Debug for ShmGuard<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmGuard").field("stats", &self.stats()).finish()
    }
}

/// A memory pool in shared memory, for a parent process and the children it forks, or for
/// unrelated processes that attach to its descriptor (Melon's `mln_alloc_shm_init`).
///
/// Every operation takes the pool's lock itself; [`lock`](ShmPool::lock) holds it across several.
/// The pool is `Sync`: threads of one process share it as processes do.
///
/// `&ShmPool` implements `allocator_api2::alloc::Allocator`, so a collection can keep its
/// buffer in the pool, as the pools made by [`child`](ShmPool::child) can. A buffer is found
/// through the pointer the collection holds, which means the same bytes wherever the pool is
/// mapped at the same address: in the process that made the pool and in processes forked from
/// it afterwards, not in one that attached by descriptor.
///
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// let mut names = allocator_api2::vec::Vec::new_in(&shm);
/// names.extend_from_slice(b"worker-1");
/// assert!(shm.offset_of(core::ptr::NonNull::from(&names[0])).is_some());
/// drop(names);
/// assert_eq!(shm.stats()?.live_blocks, 0);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
///
/// Blocks by pointer and offset:
///
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// let block = shm.alloc(64).unwrap();
/// let offset = shm.offset_of(block).unwrap(); // means the same block in every process
/// assert_eq!(shm.ptr_at(offset), Some(block));
/// // SAFETY: the block came from `shm` and is not used again.
/// unsafe { shm.try_free(block) }?;
/// shm.check()?;
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
///
/// # Soundness
/// Every safe call takes the lock and hands out only blocks that are not in use, in any
/// process, or reads the pool; the calls that take a block back (`free`, `try_free`, `realloc`)
/// and [`attach`](ShmPool::attach), which trusts what the descriptor holds, are unsafe. The
/// lock is what keeps two processes out of each other's way, so a lock of the user's
/// ([`with_lock`](ShmPool::with_lock)) comes through [`ShmLock`], an unsafe trait. The
/// descriptor ([`as_fd`](ShmPool::as_fd)) gives access to the pool's bytes outside the
/// library's checks, as `/proc/self/mem` would: writing or truncating the file through it
/// breaks the pool. Child pools ([`child`](ShmPool::child)) carry a promise of their own across
/// `fork`.
pub struct ShmPool {
    shared: NonNull<Shared>,
}

// SAFETY: every access to the pool's state goes through its process-shared lock; the handle's
// own data (mapping, lock) is `Send + Sync`.
unsafe impl Send for ShmPool {}
// SAFETY: as above.
unsafe impl Sync for ShmPool {}

impl ShmPool {
    /// Makes a pool of `capacity` bytes (rounded down to 4 KiB) with the built-in lock, which
    /// never grows. The memory is reserved now, so running out of it is an error here, not a
    /// signal later. [`builder`](ShmPool::builder) makes a pool that grows.
    ///
    /// # Errors
    /// [`ShmError::CapacityOutOfRange`] below 64 KiB or above 1 TiB; [`ShmError::Os`] when the
    /// memory cannot be had.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new((1 << 20) + 100)?;
    /// assert_eq!(shm.capacity(), 1 << 20);
    /// assert!(shm.alloc(64).is_some());
    /// let small = ShmPool::new(1 << 10).unwrap_err();
    /// assert!(matches!(small, ShmError::CapacityOutOfRange { min: 65536, .. }));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self, ShmError> {
        Self::builder().capacity(capacity).build()
    }

    /// Like [`new`](ShmPool::new), with `name` for the memfd (it shows in `/proc/*/maps`), so
    /// that its descriptor ([`as_fd`](ShmPool::as_fd)) can be handed to other processes.
    ///
    /// # Errors
    /// As for [`new`](ShmPool::new).
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::memfd("melon-jobs", 1 << 20)?;
    /// let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    /// assert!(maps.contains("/memfd:melon-jobs"));
    /// # drop(shm);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn memfd(name: &str, capacity: usize) -> Result<Self, ShmError> {
        Self::builder().name(name).capacity(capacity).build()
    }

    /// Makes a pool guarded by `lock` instead of the built-in lock (Melon's `locker`, `lock` and
    /// `unlock` arguments).
    ///
    /// # Errors
    /// As for [`new`](ShmPool::new).
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use melon_alloc_shm::{LockError, ShmError, ShmPool};
    ///
    /// /// A lock for the threads of one process that refuses, rather than waits, when it is
    /// /// held: `ShmLock`'s example, on a flag in a static.
    /// struct Refusing;
    /// static HELD: AtomicBool = AtomicBool::new(false);
    /// # // SAFETY: the swap lets one holder in at a time, with acquire and release ordering.
    /// # unsafe impl melon_alloc_shm::ShmLock for Refusing {
    /// #     fn lock(&self) -> Result<(), LockError> {
    /// #         if HELD.swap(true, Ordering::Acquire) {
    /// #             return Err(LockError::new(16));
    /// #         }
    /// #         Ok(())
    /// #     }
    /// #     fn unlock(&self) -> Result<(), LockError> {
    /// #         HELD.store(false, Ordering::Release);
    /// #         Ok(())
    /// #     }
    /// # }
    ///
    /// let shm = ShmPool::with_lock(1 << 20, Refusing)?;
    /// assert!(shm.alloc(64).is_some());
    /// // Held by someone else, the lock refuses the pool, whose operations fail with its error.
    /// HELD.store(true, Ordering::Relaxed);
    /// assert_eq!(shm.try_alloc(64), Err(ShmError::Lock(LockError::new(16))));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn with_lock<L: ShmLock + 'static>(capacity: usize, lock: L) -> Result<Self, ShmError> {
        Self::builder().capacity(capacity).lock(lock).build()
    }

    /// A builder for a pool of any kind: one that grows ([`max_capacity`]), with a name for its
    /// memfd, with a lock of the caller's.
    ///
    /// [`max_capacity`]: ShmPoolBuilder::max_capacity
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// // 4 MiB now, up to 64 MiB as allocations need it.
    /// let shm = ShmPool::builder().capacity(4 << 20).max_capacity(64 << 20).build()?;
    /// assert_eq!(shm.capacity(), 4 << 20);
    /// let block = shm.alloc(6 << 20).expect("room after growing");
    /// assert_eq!(shm.capacity(), 12 << 20, "three segments of 4 MiB");
    /// assert_eq!(shm.max_capacity(), 64 << 20);
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.try_free(block) }?;
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn builder() -> ShmPoolBuilder {
        ShmPoolBuilder::new()
    }

    /// Makes the pool a builder describes, in `file`.
    pub(crate) fn create(
        file: sys::NewFile<'_>,
        initial: usize,
        max: usize,
        lock: Option<Box<dyn ShmLock>>,
    ) -> Result<Self, ShmError> {
        let out_of_range = |capacity| ShmError::CapacityOutOfRange {
            capacity,
            min: MIN_CAPACITY,
            max: MAX_CAPACITY,
        };
        Geometry::for_capacity(initial).ok_or(out_of_range(initial))?;
        Geometry::for_capacity(max).ok_or(out_of_range(max))?;
        let geometry = Geometry::growing(initial, max)
            .ok_or(ShmError::CapacityAboveMax { capacity: initial, max_capacity: max })?;
        // The header, and the metadata and pages of the first segment; the metadata of later
        // segments stays a hole of the file until they are added.
        let end = geometry.initial_end();
        let [descs, bitmap, data] = geometry.reserve_ranges(geometry.first_data_page, end);
        let ranges = [Geometry::header_range(), descs, bitmap, data];
        let mapping = Mapping::create(file, geometry.capacity, &ranges, end as usize * PAGE)
            .map_err(|errno| ShmError::os("creating the shared mapping", errno))?;
        let lock_kind = if lock.is_some() { LOCK_CUSTOM } else { LOCK_BUILTIN };
        let base = mapping.base().as_ptr();
        // SAFETY: the mapping is new, zeroed (a new file), and maps the header and the first
        // segment, whose metadata and pages are reserved.
        unsafe { crate::arena::Arena::format(base, geometry, lock_kind) };
        Self::from_shared(Shared::new(mapping, lock, geometry))
    }

    /// Maps the pool behind `fd`, made by [`memfd`](ShmPool::memfd) in another process, with the
    /// built-in lock.
    ///
    /// # Errors
    /// [`ShmError::NotAPool`], [`ShmError::VersionMismatch`], [`ShmError::SizeMismatch`] or
    /// [`ShmError::LockMismatch`] when the descriptor holds something else; [`ShmError::Os`] when
    /// it cannot be mapped, or there is no memory for the pool's state.
    ///
    /// # Safety
    /// Every process using the pool runs this library's layout version: the header is checked,
    /// but a file that imitates it could still mislead the allocator.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::memfd("melon-jobs", 1 << 20)?;
    /// // Another process would receive the descriptor; this one maps it a second time.
    /// let fd = shm.as_fd().try_clone_to_owned().unwrap();
    /// // SAFETY: the pool was made by this very build of the library.
    /// let attached = unsafe { ShmPool::attach(fd) }?;
    /// let block = shm.alloc(8).unwrap();
    /// // SAFETY: the block holds 8 bytes, aligned to 16, and nothing else uses it.
    /// unsafe { block.cast::<u64>().write(42) };
    /// let seen = attached.ptr_at(shm.offset_of(block).unwrap()).unwrap();
    /// assert_ne!(seen, block, "the second mapping lies elsewhere");
    /// // SAFETY: the same block, through the second mapping; nothing writes it meanwhile.
    /// assert_eq!(unsafe { seen.cast::<u64>().read() }, 42);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn attach(fd: OwnedFd) -> Result<Self, ShmError> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::open(fd, None) }
    }

    /// Like [`attach`](ShmPool::attach), for a pool made with [`with_lock`](ShmPool::with_lock):
    /// `lock` must be the same lock, reached from this process.
    ///
    /// # Errors
    /// As for [`attach`](ShmPool::attach).
    ///
    /// # Safety
    /// As for [`attach`](ShmPool::attach).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # use melon_alloc_shm::{LockError, ShmLock};
    /// # static HELD: AtomicBool = AtomicBool::new(false);
    /// # // SAFETY: the swap lets one holder in at a time, with acquire and release ordering.
    /// # unsafe impl ShmLock for Spin {
    /// #     fn lock(&self) -> Result<(), LockError> {
    /// #         while HELD.swap(true, Ordering::Acquire) {
    /// #             std::hint::spin_loop();
    /// #         }
    /// #         Ok(())
    /// #     }
    /// #     fn unlock(&self) -> Result<(), LockError> {
    /// #         HELD.store(false, Ordering::Release);
    /// #         Ok(())
    /// #     }
    /// # }
    ///
    /// /// A lock for the threads of one process, spinning while it is held: every `Spin` is the
    /// /// same lock, a flag in a static.
    /// struct Spin;
    ///
    /// let shm = ShmPool::with_lock(1 << 20, Spin)?;
    /// let fd = shm.as_fd().try_clone_to_owned().unwrap();
    /// // SAFETY: the pool was made by this very build of the library.
    /// let attached = unsafe { ShmPool::attach_with_lock(fd, Spin) }?;
    /// let block = attached.alloc(64).unwrap();
    /// assert!(shm.offset_of(block).is_none(), "allocated in the second mapping");
    /// assert_eq!(shm.stats()?.live_blocks, 1);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn attach_with_lock<L: ShmLock + 'static>(
        fd: OwnedFd,
        lock: L,
    ) -> Result<Self, ShmError> {
        let lock = crate::builder::boxed_lock(lock)?;
        // SAFETY: forwarded from the caller.
        unsafe { Self::open(fd, Some(lock)) }
    }

    unsafe fn open(fd: OwnedFd, lock: Option<Box<dyn ShmLock>>) -> Result<Self, ShmError> {
        use std::os::fd::AsFd;
        // Every pool's file is a regular file (a memfd included): reading the header of a
        // socket, a pipe or a directory would fail with an error about the read, not the file.
        let regular = sys::is_regular_file(fd.as_fd())
            .map_err(|errno| ShmError::os("reading the descriptor's file type", errno))?;
        if !regular {
            return Err(ShmError::NotAPool);
        }
        let file = Mapping::file_len(fd.as_fd())
            .map_err(|errno| ShmError::os("reading the descriptor's size", errno))?;
        let header = HeaderFields::read(fd.as_fd())?;
        if header.magic != MAGIC {
            return Err(ShmError::NotAPool);
        }
        if header.version != VERSION {
            return Err(ShmError::VersionMismatch { found: header.version, expected: VERSION });
        }
        // Every page index is bounded by the geometry, read once into the arena: it must be one
        // this library makes, not whatever a corrupt header says.
        let geometry = header.geometry().ok_or(ShmError::NotAPool)?;
        let initial = geometry.initial_end() as u64 * PAGE as u64;
        if file < initial {
            return Err(ShmError::SizeMismatch { header: initial, file });
        }
        let expected_kind = if lock.is_some() { LOCK_CUSTOM } else { LOCK_BUILTIN };
        if header.lock_kind != expected_kind
            || (expected_kind == LOCK_BUILTIN && header.lock_abi != sys::LOCK_ABI)
        {
            return Err(ShmError::LockMismatch);
        }
        // The whole largest capacity is reserved; the first segment is mapped now, what the pool
        // has grown by since as the header publishes it.
        let mapping = Mapping::open(fd, geometry.capacity, initial as usize)
            .map_err(|errno| ShmError::os("mapping the pool", errno))?;
        let shared = Shared::new(mapping, lock, geometry);
        shared.map_published()?;
        Self::from_shared(shared)
    }

    /// The pool over `shared`, which it puts on the heap, or [`ShmError::Os`] when there is no
    /// memory for it.
    fn from_shared(shared: Shared) -> Result<Self, ShmError> {
        // A fork must open the new process's spare descriptions of the pool's file.
        sys::register_fork_handler();
        let shared = sys::try_box(|| shared)
            .map_err(|errno| ShmError::os("allocating the pool's state", errno))?;
        let shared = NonNull::from(Box::leak(shared));
        // SAFETY: the `Shared` was just leaked and lives until this pool is dropped, which
        // unregisters it first.
        if let Err(errno) = unsafe { registry::register(shared) } {
            // SAFETY: the registry refused the pool and holds nothing of it; the box leaked
            // above is taken back, once.
            drop(unsafe { Box::from_raw(shared.as_ptr()) });
            return Err(ShmError::os("registering the pool in this process", errno));
        }
        Ok(Self { shared })
    }

    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: the `Shared` lives until the pool is dropped.
        unsafe { self.shared.as_ref() }
    }

    /// The pool's descriptor, to hand to another process for [`attach`](ShmPool::attach).
    ///
    /// # Examples
    /// ```
    /// use std::fs::File;
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// // The descriptor's file is the pool's whole mapping, as another process would map it.
    /// let file = File::from(shm.as_fd().try_clone_to_owned().unwrap());
    /// assert_eq!(file.metadata().unwrap().len(), 1 << 20);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared().mapping.fd()
    }

    /// The pool's capacity now, in bytes, header included. A pool made by [`new`](ShmPool::new)
    /// keeps the capacity it was made with; one that grows starts at the
    /// [`capacity`](ShmPoolBuilder::capacity) it was made with and adds as much again with each
    /// segment it grows by, up to its [`max_capacity`](ShmPool::max_capacity) (which it may
    /// reach a segment early: a larger layout holds a few more pages than the segments add up
    /// to, for the first segment's metadata is relatively larger). It is about the memory the
    /// pool has reserved.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// assert_eq!(ShmPool::new(1 << 20)?.capacity(), 1 << 20);
    /// let growing = ShmPool::builder().capacity(1 << 20).max_capacity(8 << 20).build()?;
    /// assert_eq!(growing.capacity(), 1 << 20);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        let shared = self.shared();
        shared.arena.geometry().capacity_at(shared.arena.published_end())
    }

    /// The capacity the pool can grow to, in bytes: its [`capacity`](ShmPool::capacity) for a
    /// pool that never grows. Every process that maps the pool reserves this much address
    /// space, but no memory, for it.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// assert_eq!(ShmPool::new(1 << 20)?.max_capacity(), 1 << 20);
    /// let growing = ShmPool::builder().capacity(1 << 20).max_capacity(1 << 30).build()?;
    /// assert_eq!(growing.max_capacity(), 1 << 30);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn max_capacity(&self) -> usize {
        self.shared().arena.geometry().capacity
    }

    /// Takes the lock for several operations in a row.
    ///
    /// # Errors
    /// [`ShmError::Lock`] when a custom lock fails; [`ShmError::WouldDeadlock`] when this thread
    /// holds the built-in lock already; [`ShmError::LockTimeout`] when a timeout was set with
    /// [`set_lock_timeout`](ShmPool::set_lock_timeout) and passed first; [`ShmError::Os`] when
    /// this process has no identity in the pool to take the built-in lock under (see the
    /// [crate docs](crate): its descriptor of the pool names another file, or the system had no
    /// descriptor or memory to spare for the identity).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// // Ten blocks for one taking of the lock, not ten.
    /// let mut guard = shm.lock()?;
    /// let blocks = (0..10).map(|_| guard.alloc(64)).collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(guard.stats().live_blocks, blocks.len());
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn lock(&self) -> Result<ShmGuard<'_>, ShmError> {
        self.shared().lock()
    }

    /// Takes the lock for several operations in a row, waiting at most `timeout` for a holder
    /// to release it: how a process gives up on a holder that is alive but stopped (by
    /// `SIGSTOP` or a debugger, say), which no lock can tell from a slow one. A holder that
    /// dies is not waited for; its lock is taken over at once, timeout or not.
    ///
    /// With a lock of the caller's ([`with_lock`](ShmPool::with_lock)), the timeout does not
    /// apply: the pool calls [`ShmLock::lock`], which waits as that lock waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut guard = shm.try_lock_for(Duration::from_millis(50))?;
    /// let block = guard.alloc(64)?;
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { guard.free(block) }?;
    /// # Ok::<(), ShmError>(())
    /// ```
    ///
    /// # Errors
    /// [`ShmError::LockTimeout`] when `timeout` passed with the lock still held; as for
    /// [`lock`](ShmPool::lock) otherwise.
    pub fn try_lock_for(&self, timeout: Duration) -> Result<ShmGuard<'_>, ShmError> {
        self.shared().lock_within(Some(timeout))
    }

    /// Bounds how long this process's operations on the pool (every method that takes the
    /// lock, child pools' chunk requests included) wait for the built-in lock; `None`, the
    /// default, waits as long as it takes. An operation that gives up fails with
    /// [`ShmError::LockTimeout`] (or returns `None`, for those that return an `Option`) and
    /// changes nothing. The setting belongs to this process's handle, not to the pool.
    ///
    /// With a lock of the caller's ([`with_lock`](ShmPool::with_lock)), the timeout does not
    /// apply (see [`try_lock_for`](ShmPool::try_lock_for)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// shm.set_lock_timeout(Some(Duration::from_secs(1)));
    /// assert_eq!(shm.lock_timeout(), Some(Duration::from_secs(1)));
    /// assert!(shm.alloc(64).is_some());
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn set_lock_timeout(&self, timeout: Option<Duration>) {
        // Anything from 584 years up is as good as forever.
        let nanos = timeout.map_or(NO_TIMEOUT, |timeout| {
            u64::try_from(timeout.as_nanos()).unwrap_or(NO_TIMEOUT).min(NO_TIMEOUT - 1)
        });
        self.shared().lock_timeout.store(nanos, Ordering::Relaxed);
    }

    /// The timeout set with [`set_lock_timeout`](ShmPool::set_lock_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// assert_eq!(shm.lock_timeout(), None);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.shared().timeout()
    }

    /// Allocates `size` bytes aligned to 16, or `None` when there is no room or the lock fails.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(100).unwrap();
    /// assert_eq!(block.as_ptr().addr() % 16, 0);
    /// assert!(shm.alloc(2 << 20).is_none(), "more than the pool holds");
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.try_free(block) }?;
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.try_alloc(size).ok()
    }

    /// Allocates `size` bytes aligned to 16.
    ///
    /// # Errors
    /// [`ShmError::OutOfMemory`] when too few bytes are free; [`ShmError::Fragmented`] when enough
    /// are, but in no place that fits the block; the lock's error.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.try_alloc(100)?;
    /// assert!(matches!(shm.try_alloc(2 << 20), Err(ShmError::OutOfMemory { .. })));
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.try_free(block) }?;
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn try_alloc(&self, size: usize) -> Result<NonNull<u8>, ShmError> {
        self.lock()?.alloc(size)
    }

    /// Like [`alloc`](ShmPool::alloc), with the block's first `size` bytes zeroed (Melon's
    /// `mln_alloc_c`).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let dirty = shm.alloc(64).unwrap();
    /// // SAFETY: the block holds 64 bytes, and nothing else uses it.
    /// unsafe { dirty.as_ptr().write_bytes(0xff, 64) };
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.try_free(dirty) }?;
    /// let block = shm.alloc_zeroed(64).unwrap();
    /// // SAFETY: the block holds 64 initialized bytes, and nothing else uses it.
    /// let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), 64) };
    /// assert!(bytes.iter().all(|&byte| byte == 0));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        let block = self.alloc(size)?;
        // SAFETY: the block was just handed out and holds at least `size` bytes.
        unsafe { block.as_ptr().write_bytes(0, size) };
        Some(block)
    }

    /// Allocates a block for `layout`: any power-of-two alignment up to 2 MiB.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let page = shm.alloc_layout(Layout::from_size_align(4096, 4096).unwrap()).unwrap();
    /// assert_eq!(page.as_ptr().addr() % 4096, 0);
    /// assert!(shm.alloc_layout(Layout::from_size_align(64, 4 << 20).unwrap()).is_none());
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.lock().ok()?.alloc_layout(layout).ok()
    }

    /// Resizes a block (Melon's `mln_alloc_re`): a `new_size` of 0 frees it and returns `None`;
    /// a shrink or a grow that fits stays in place; otherwise the contents move. On failure the
    /// old block stays as it was. A move cut short by the death of its process is rolled back
    /// until the contents have moved, however long the copy (the old block whole, the new one
    /// freed by the next holder of the lock), and stands after (the old block freed by it, the
    /// new one left to the dead process, as any block it allocated).
    ///
    /// # Safety
    /// - `block` is an in-use block of this pool.
    /// - After a move or a free, the old pointer is not used again, in any process.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(16).unwrap();
    /// // SAFETY: the block holds 16 bytes, and nothing else uses it.
    /// unsafe { block.as_ptr().write_bytes(7, 16) };
    /// // SAFETY: the block came from `shm`, and the old pointer is not used after the call.
    /// let grown = unsafe { shm.realloc(block, 10_000) }.unwrap();
    /// assert!(shm.usable_size(grown)? >= 10_000);
    /// // SAFETY: the grown block starts with the old one's 16 bytes; nothing else uses it.
    /// assert_eq!(unsafe { grown.as_ptr().read() }, 7);
    /// // SAFETY: as above; a size of 0 frees the block, which is not used again.
    /// assert_eq!(unsafe { shm.realloc(grown, 0) }, None);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn realloc(&self, block: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let mut guard = self.lock().ok()?;
        // SAFETY: forwarded from the caller.
        unsafe { guard.realloc(block, new_size) }.ok().flatten()
    }

    /// Frees a block of the pool, or one [handed off](ShmPool::hand_off) from a child pool of
    /// any process; a pointer that is neither is ignored (in debug builds, the process aborts
    /// with a message, as it does for a free by a thread that holds the pool's lock itself). A
    /// block whose free cannot take the lock (its [timeout](ShmPool::set_lock_timeout) ran out,
    /// or the lock failed) stays allocated, in every build. [`try_free`](ShmPool::try_free)
    /// reports either.
    ///
    /// # Safety
    /// - `block` is an in-use block of this pool, or a handed-off block of a child's (see
    ///   [`try_free`](ShmPool::try_free) for pointers into a child's chunk).
    /// - Nothing uses it afterwards, in any process.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(64).unwrap();
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.free(block) };
    /// assert_eq!(shm.stats()?.live_blocks, 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn free(&self, block: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        let result = unsafe { self.try_free(block) };
        crate::plumbing::abort_on_misused_free(result);
    }

    /// Frees a block after checking it is an in-use block of this pool, or a block
    /// [handed off](ShmPool::hand_off) from a child pool of any process, which goes back to its
    /// child without the lock.
    ///
    /// # Errors
    /// [`ShmError::Free`] for a pointer outside the pool, inside a block, or not in use (a
    /// double free); [`ShmError::NotHandedOff`] for a pointer into a child pool's chunk that is
    /// not a block handed off and not freed since (each handed-off block carries a mark, which
    /// the free clears); the lock's error. Nothing changes.
    ///
    /// # Safety
    /// - A pointer into a chunk lent to a child pool is one of that child's blocks, handed off
    ///   (or, if not handed off, one whose child keeps its chunk lent meanwhile): the free is
    ///   checked without the lock, against a chunk that must not go back to the pool under it.
    /// - If `block` is an in-use block of the pool, or a handed-off block of a child's, nothing
    ///   uses it afterwards, in any process.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::FreeError;
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(64).unwrap();
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.try_free(block) }?;
    /// // SAFETY: freed already, and in no child pool's chunk: the pool refuses the block.
    /// let again = unsafe { shm.try_free(block) };
    /// assert!(matches!(again, Err(ShmError::Free(FreeError::NotInUse { .. }))));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub unsafe fn try_free(&self, block: NonNull<u8>) -> Result<(), ShmError> {
        // A block of a child pool's chunk, handed off, is freed without the lock. It lies within
        // what this process has mapped (a pointer into pages grown since goes through the lock,
        // which maps them).
        // SAFETY: forwarded from the caller.
        if let Some(freed) = unsafe { self.shared().free_if_lent(block, Orphans::Lock) } {
            return freed;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.lock()?.free(block) }
    }

    /// Hands a block of one of this process's child pools off to other processes, which may then
    /// free it with [`free`](ShmPool::free) or [`try_free`](ShmPool::try_free), without the
    /// pool's lock; the child pool collects it when it next runs out of blocks. Returns the
    /// block's offset, to send to them.
    ///
    /// A block handed off outlives its child pool and its process: were the child dropped, or
    /// the process to die, while handed-off blocks of a chunk are out, the chunk waits, as an
    /// orphan, until the last of them is freed, and then comes back to the pool. Everything
    /// else the child held comes back at once. A handed-off block that is never freed (its
    /// receiver died holding it, say) keeps its chunk an orphan, and so does a process killed in
    /// the middle of such a free, in the few instructions between counting itself in flight and
    /// out: such chunks wait until [`reclaim_orphans`](ShmPool::reclaim_orphans) gives them back,
    /// and [`ShmStats::orphaned_bytes`] counts them meanwhile (a dead process's, once its death
    /// is found).
    ///
    /// # Errors
    /// [`ShmError::Free`] with [`FreeError::Foreign`] when `block` does not lie in a chunk lent
    /// to this process's child pools, past its header and on a 16-byte boundary (or this
    /// process holds no slot in the owner table: see "Whose memory is whose" in the
    /// [crate docs](crate)). A pointer inside such a chunk that does not start a block in use is
    /// not told apart here: the safety contract below rules it out.
    ///
    /// # Safety
    /// - `block` is an in-use block of a child pool that this process made with
    ///   [`child`](ShmPool::child) or [`child_with_limit`](ShmPool::child_with_limit) (not of a
    ///   child of such a child), and is handed off once.
    /// - From now on the block is freed through the shared pool, by any process, once, and never
    ///   through the child pool.
    /// - The child pool is not reset ([`reset`](melon_alloc_heap::Pool::reset)) until a free of
    ///   the block has returned: the reset hands out the memory of every block of its chunks
    ///   again, and forgets the blocks freed into them before it.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(4 << 20)?;
    /// let child = shm.child();
    /// let message = child.alloc(256).unwrap();
    /// // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
    /// let offset = unsafe { shm.hand_off(message) }?;
    /// // Another process would receive `offset`, use the block, and free it:
    /// let received = shm.ptr_at(offset).unwrap();
    /// // SAFETY: the block was handed off, and is freed once.
    /// unsafe { shm.try_free(received) }?;
    /// drop(child);
    /// assert_eq!(shm.stats()?.lent_bytes, 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn hand_off(&self, block: NonNull<u8>) -> Result<usize, ShmError> {
        let shared = self.shared();
        let addr = block.as_ptr().addr();
        let refused = ShmError::Free(FreeError::Foreign { addr });
        // The block is this process's own, allocated in pages it has mapped.
        let offset = shared.locked_offset_of(block.as_ptr()).ok_or(refused)?;
        let target = shared.arena.remote_target(offset).ok_or(refused)?;
        let owner = shared.claim.current().ok_or(refused)?;
        // SAFETY: the caller passes an in-use block of a child pool of this process.
        if !unsafe { shared.arena.hand_off(target, owner) } {
            return Err(refused);
        }
        Ok(offset as usize)
    }

    /// The bytes an in-use block can hold.
    ///
    /// # Errors
    /// [`ShmError::Free`] when `block` is not an in-use block of the pool; the lock's error.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(100).unwrap();
    /// let usable = shm.usable_size(block)?;
    /// assert!(usable >= 100);
    /// // SAFETY: the block holds `usable` bytes, and nothing else uses it.
    /// unsafe { block.as_ptr().write_bytes(0, usable) };
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn usable_size(&self, block: NonNull<u8>) -> Result<usize, ShmError> {
        self.lock()?.usable_size(block)
    }

    /// Exact free bytes: the data bytes not held by a block in use or lent to a child pool. 0 if
    /// the lock fails (a timeout, say); [`lock`](ShmPool::lock) and then the guard's
    /// [`available`](ShmGuard::available) tell that from a full pool, with the lock's error.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let empty = shm.available();
    /// assert!(empty < 1 << 20, "the pool's own bookkeeping takes a few pages");
    /// let _block = shm.alloc(64 << 10).unwrap();
    /// assert_eq!(shm.available(), empty - (64 << 10));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn available(&self) -> usize {
        self.lock().map_or(0, |guard| guard.available())
    }

    /// A snapshot of the pool's counters.
    ///
    /// # Errors
    /// The lock's error.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let _block = shm.alloc(100).unwrap();
    /// let stats = shm.stats()?;
    /// assert_eq!((stats.capacity, stats.live_blocks), (1 << 20, 1));
    /// assert!(stats.bytes_in_use >= 100);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn stats(&self) -> Result<ShmStats, ShmError> {
        Ok(self.lock()?.stats())
    }

    /// Walks every page, free run and slab, and checks the pool's invariants.
    ///
    /// # Errors
    /// [`ShmError::Corrupt`] with the first broken invariant; the lock's error.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let blocks: Vec<_> = (1..=50).map(|n| shm.alloc(n * 100).unwrap()).collect();
    /// for block in blocks.into_iter().step_by(2) {
    ///     // SAFETY: the block came from `shm` and is not used again.
    ///     unsafe { shm.try_free(block) }?;
    /// }
    /// assert_eq!(shm.check(), Ok(()));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn check(&self) -> Result<(), ShmError> {
        self.lock()?.check()
    }

    /// Gives back the chunks that the child pools of dead processes held: see "Whose memory
    /// is whose" in the [crate docs](crate). The pool does this by itself when it takes its
    /// lock over from a dead holder, when an allocation or a child's chunk finds no room, and
    /// when a process takes a slot in a full owner table; a master that learns of a worker's
    /// death (`SIGCHLD`) can call it at once.
    ///
    /// # Errors
    /// The lock's error.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(4 << 20)?;
    /// let start = shm.available();
    /// // SAFETY: the child process only allocates, then ends as a killed worker would, without
    /// // running destructors.
    /// match unsafe { libc::fork() } {
    ///     0 => {
    ///         let child = shm.child();
    ///         let _scratch = child.alloc(100_000);
    ///         std::mem::forget(child);
    ///         unsafe { libc::_exit(0) };
    ///     }
    ///     pid => unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) },
    /// };
    /// let report = shm.reclaim_dead()?;
    /// assert_eq!(report.processes, 1);
    /// assert!(report.bytes >= 100_000);
    /// assert_eq!(shm.available(), start);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn reclaim_dead(&self) -> Result<ReclaimReport, ShmError> {
        Ok(self.lock()?.reclaim_dead())
    }

    /// Gives back every orphan: each chunk whose child pool's process gave it up (dropped the
    /// child, or died) while blocks handed off from it ([`hand_off`](ShmPool::hand_off)) were
    /// out, and that still waits for one of them to be freed. [`ShmStats::orphaned_bytes`]
    /// counts them. Such a block is freed by whoever received it; one whose receiver died
    /// holding it, or a free of one cut short by a kill, keeps its chunk waiting for good, which
    /// neither the pool nor [`reclaim_dead`](ShmPool::reclaim_dead) can tell from a block
    /// still in use. A program that knows better, such as a master whose workers that could
    /// hold such blocks have all exited, gives them back with this. It first takes back the
    /// chunks of dead processes, as [`reclaim_dead`](ShmPool::reclaim_dead) does, so that
    /// theirs are among the orphans, and reports both. The chunks of live child pools, and the
    /// blocks handed off from them, are not touched.
    ///
    /// # Errors
    /// The lock's error.
    ///
    /// # Safety
    /// No process holds a block handed off from an orphan, or is freeing one, or will free one:
    /// the chunks go back to the pool, which may hand their memory out again.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(4 << 20)?;
    /// let start = shm.available();
    /// let child = shm.child();
    /// let message = child.alloc(256).unwrap();
    /// // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
    /// unsafe { shm.hand_off(message) }?;
    /// // The child goes while its block is out, and the block's receiver dies holding it.
    /// drop(child);
    /// assert_eq!(shm.stats()?.orphaned_bytes, melon_alloc_core::CHUNK_SIZE);
    /// // SAFETY: nobody holds or frees the block handed off any more.
    /// let report = unsafe { shm.reclaim_orphans() }?;
    /// assert_eq!((report.chunks, report.bytes), (1, melon_alloc_core::CHUNK_SIZE));
    /// assert_eq!(shm.available(), start);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn reclaim_orphans(&self) -> Result<ReclaimReport, ShmError> {
        let mut guard = self.lock()?;
        let mut report = guard.reclaim_dead();
        report.add_orphans(self.shared().arena.release_every_orphan());
        Ok(report)
    }

    /// The offset of `block` from the start of the pool: the same block in every process, wherever
    /// each has mapped the pool. `None` for a pointer outside the pool.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(64).unwrap();
    /// assert!(shm.offset_of(block).is_some_and(|offset| offset < shm.capacity()));
    /// assert_eq!(shm.offset_of(core::ptr::NonNull::from(&0u8)), None, "not in the pool");
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn offset_of(&self, block: NonNull<u8>) -> Option<usize> {
        self.shared().offset_of(block.as_ptr()).map(|offset| offset as usize)
    }

    /// The pointer, in this process, to the byte at `offset` in the pool. `None` past the end of
    /// the pages the pool has grown to. The pages another process grew the pool by are mapped
    /// here first, so that the whole block at `offset` can be used.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(64).unwrap();
    /// // Another process would receive the offset and find the block in its own mapping.
    /// let offset = shm.offset_of(block).unwrap();
    /// assert_eq!(shm.ptr_at(offset), Some(block));
    /// assert_eq!(shm.ptr_at(shm.capacity()), None, "past the end");
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[inline]
    pub fn ptr_at(&self, offset: usize) -> Option<NonNull<u8>> {
        let shared = self.shared();
        let extent = shared.extent();
        // The block at `offset` may reach into pages this process has not mapped yet.
        let mapped = shared.mapping.map_to(extent).ok()?;
        (offset < mapped.min(extent)).then(|| shared.ptr_at(offset as u64))
    }

    /// A heap pool whose chunks come from this shared pool (Melon's cascade): it takes the lock
    /// once per chunk, not per block. Its bookkeeping lives in this process: used from another
    /// process (after a `fork`), it hands out nothing and refuses to take chunks, and dropping
    /// it there leaves its chunks to the original. The same holds for every pool made from it,
    /// at any depth ([`child`](melon_alloc_heap::Pool::child) of the child, and so on), whose
    /// chunks it lent them.
    ///
    /// Besides the few empty chunks of each size class a heap pool keeps, the child keeps up to
    /// eight more of the chunks it empties (128 KiB), and takes its next chunks from them
    /// without the pool's lock: blocks it handed off come back in batches, which can empty many
    /// chunks at once. They stay lent, counted in [`ShmStats::lent_bytes`](crate::ShmStats) and
    /// not in the child's `bytes_held`, within its limit if it has one, until a
    /// [`trim`](melon_alloc_heap::Pool::trim) or its drop gives them back.
    ///
    /// # Fork
    /// A process forked while the child exists must not free the blocks of the child, or of a
    /// pool made from it, nor drop a collection that lives in one: the chunks' headers lie in
    /// the shared mapping, and the originals' lists run through them. It forgets them
    /// (`mem::forget`) or ends with `_exit`. Forking is unsafe, and this is part of what a caller
    /// of `fork` promises.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let child = shm.child();
    /// let block = child.alloc(64).unwrap();
    /// assert!(shm.stats()?.lent_bytes >= melon_alloc_core::CHUNK_SIZE);
    /// // SAFETY: the block came from `child` and is not used again.
    /// unsafe { child.free(block) };
    /// drop(child);
    /// assert_eq!(shm.stats()?.lent_bytes, 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a child pool dropped at once gives its chunks back and serves nothing"]
    pub fn child(&self) -> ChildPool<'_> {
        self.make_child(None, false)
    }

    /// Like [`child`](ShmPool::child), holding at most `limit` bytes of chunks.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(4 << 20)?;
    /// let child = shm.child_with_limit(64 << 10);
    /// assert!(child.alloc(32 << 10).is_some());
    /// assert!(child.alloc(64 << 10).is_none(), "past the limit");
    /// assert!(shm.stats()?.lent_bytes <= 64 << 10);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "a child pool dropped at once gives its chunks back and serves nothing"]
    pub fn child_with_limit(&self, limit: usize) -> ChildPool<'_> {
        self.make_child(Some(limit), false)
    }

    /// A child pool whose chunks are all lent to this process's slot in the owner table: one
    /// that cannot claim a slot takes no chunk. So [`Shared::whose`] tells its blocks from any
    /// other process's without the lock, as the C API's pointer-only free needs. `Err` when the
    /// global allocator has no memory for the child's bookkeeping.
    pub(crate) fn owned_child(&self, limit: Option<usize>) -> Result<ChildPool<'_>, AllocError> {
        self.try_make_child(limit, true)
    }

    fn make_child(&self, limit: Option<usize>, owned_only: bool) -> ChildPool<'_> {
        let chunks = Box::new(self.child_chunks(owned_only));
        Self::in_family(ChildPool::with_source(chunks, limit))
    }

    fn try_make_child(
        &self,
        limit: Option<usize>,
        owned_only: bool,
    ) -> Result<ChildPool<'_>, AllocError> {
        let chunks = self.child_chunks(owned_only);
        Ok(Self::in_family(ChildPool::try_with_source(chunks, limit)?))
    }

    /// The source of a new child pool's chunks.
    fn child_chunks(&self, owned_only: bool) -> ShmChunks<'_> {
        // A fork must abandon the child's copy and close the copy of this process's slot.
        sys::register_fork_handler();
        ShmChunks::new(self.shared(), owned_only)
    }

    /// A new child pool, tracked with its family: its chunks lie in the shared mapping, and so
    /// do those of every pool made from it, and the fork handler abandons the copies of the
    /// whole family.
    fn in_family(child: ChildPool<'_>) -> ChildPool<'_> {
        child.track_family();
        child
    }
}

impl Drop for ShmPool {
    fn drop(&mut self) {
        // No child pool borrows the pool any more: this process's slot has no chunk left in use.
        let claim = &self.shared().claim;
        if claim.current().is_some() {
            match self.lock() {
                Ok(_guard) => claim.give_up(&self.shared().arena),
                // The slot then looks dead, and the next process to reclaim empties it.
                Err(_) => claim.close(),
            }
        } else {
            // Chunks whose return failed come back under the lock: with no slot to give up,
            // nothing else takes it before the list goes with this handle.
            self.shared().retry_returns();
            claim.forget_parents();
        }
        // SAFETY: the pool registered its `Shared` when made, and no child borrows it any more.
        unsafe { registry::unregister(self.shared) };
        // SAFETY: the pointer came from `Box::leak` in `from_shared`, and nothing refers to it
        // any more.
        drop(unsafe { Box::from_raw(self.shared.as_ptr()) });
    }
}

impl core::fmt::Debug for ShmPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmPool")
            .field("capacity", &self.capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Whose block a pointer into a shared pool's mapping is, as
/// [`plumbing::whose`](crate::plumbing::whose) tells it.
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::{plumbing::{whose, Whose}, ShmPool};
///
/// let shm = ShmPool::new(1 << 20)?;
/// let block = shm.alloc(64).expect("the pool is empty");
/// assert_eq!(whose(&shm, block), Whose::Shared);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Whose {
    /// Not in the pool's mapping.
    Outside,
    /// In no lent chunk: if a block at all, one of the pool's own.
    Shared,
    /// In a chunk lent to this process's slot: if a block at all, one of a child pool of this
    /// process's (or of a pool made from one), which its chunk header names.
    OwnChild,
    /// In a chunk lent to another process, or to no slot: not this process's to free.
    OtherChild,
    /// A block of a chunk lent to this process's slot, handed off ([`ShmPool::hand_off`]): to
    /// be freed through the pool, not its child. Only
    /// [`plumbing::whose_to_free`](crate::plumbing::whose_to_free) tells it apart.
    HandedOff,
}

/// What the free of a handed-off block does with its chunk when it finds the chunk given up by
/// its process and nothing of it out any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Orphans {
    /// The caller holds the lock: the chunk goes back now.
    Held,
    /// The chunk goes back under the lock, if it can be had.
    Lock,
    /// The chunk waits for the next reclaim, and no lock is taken: for a caller that may hold
    /// a custom lock already.
    Leave,
}

/// Where each of a child's chunks, by offset, lies in its list of [`LentChunk`]s.
type ChunkPlaces = HashMap<u64, usize>;

/// A chunk a child pool holds, as its collection of remote frees walks it.
#[derive(Clone, Copy, Debug)]
struct LentChunk<'pool> {
    /// Its remote-free list, found once.
    remote: &'pool core::sync::atomic::AtomicU32,
    /// Its offset in the mapping.
    offset: u64,
    /// The owner slot it was lent under, which it goes back under.
    owner: u32,
    /// The end of the part of it where blocks start: its length, up to [`CHUNK_SIZE`].
    block_end: u32,
}

/// The source of a child pool's chunks: the shared pool, locked once per chunk.
struct ShmChunks<'pool> {
    shared: &'pool Shared,
    /// [`sys::process_token`] of the process that made the child; nobody else may take chunks
    /// for it. Not its pid: a child in a new pid namespace may have its parent's.
    owner: u64,
    /// Whether a chunk is lent only with a slot in the owner table (see
    /// [`ShmPool::owned_child`]).
    owned_only: bool,
    /// The chunks the child holds, in no particular order: their remote-free lists are what it
    /// collects, in a walk over this list, which costs a few instructions a chunk.
    chunks: Vec<LentChunk<'pool>>,
    /// Where each chunk, by offset, lies in `chunks`, so that giving one back finds it.
    places: ChunkPlaces,
    /// The lists a collection walks, one for each chunk whose list held blocks: room for one a
    /// chunk is kept, so that a collection allocates nothing for them.
    walks: Vec<ListWalk<'pool>>,
    /// Blocks collected from those lists that the engine has not taken yet.
    collected: Vec<NonNull<u8>>,
    /// The count of the owner slot's remote frees ([`Arena::pending`]) when the child last
    /// looked at its lists.
    seen: u32,
    /// Whether the next look takes every list that holds blocks, news or none.
    rescan: bool,
    /// Small chunks the child's engine gave back, kept for its next ones, at most
    /// [`KEPT_CHUNKS`]: lent still, to the slot they were lent under, and recorded in `chunks`.
    /// A child whose blocks are freed elsewhere gets them back in batches, each of which may
    /// empty many chunks of a class at once that its next allocations fill again; kept here,
    /// they come back without the pool's lock.
    kept: Vec<NonNull<u8>>,
}

/// Small chunks a child pool of a shared pool keeps at most for its next ones, beyond the spare
/// chunks its engine keeps: 128 KiB of 16 KiB chunks.
const KEPT_CHUNKS: usize = 8;

impl<'pool> ShmChunks<'pool> {
    /// The source of a child pool of `shared`, made by this process, holding no chunk yet.
    fn new(shared: &'pool Shared, owned_only: bool) -> Self {
        Self {
            shared,
            owner: sys::process_token(),
            owned_only,
            chunks: Vec::new(),
            places: ChunkPlaces::default(),
            walks: Vec::new(),
            collected: Vec::new(),
            seen: 0,
            rescan: false,
            kept: Vec::new(),
        }
    }
}

impl ShmChunks<'_> {
    /// Takes the remote-free lists of this child's chunks, if other processes freed blocks
    /// into this process's chunks since it last looked, or a rescan was asked, into
    /// `collected`.
    ///
    /// Each link lies in a block another process wrote last, so reading it waits for that
    /// process's cache: the lists are walked side by side, a block of each in turn, so that the
    /// reads of different lists wait at the same time rather than one after the other.
    fn collect(&mut self) {
        let arena = &self.shared.arena;
        let Some(slot) = self.shared.claim.current() else { return };
        let news = crate::handoff::news(arena.pending(slot), &mut self.seen);
        let rescan = core::mem::take(&mut self.rescan);
        if !news && !rescan {
            return;
        }
        // The lists that hold blocks are found first, and taken after: reads of the lists can
        // wait at the same time, and each take, an atomic swap, waits for the reads before it.
        self.walks.clear();
        for &LentChunk { remote, offset: chunk, block_end, .. } in &self.chunks {
            if remote.load(Ordering::Relaxed) != 0 {
                // A list holds at most a chunk's worth of 16-byte blocks; a longer one is
                // corrupt.
                let steps = CHUNK_SIZE as u32 / 16;
                self.walks.push(ListWalk { list: remote, chunk, next: 0, block_end, steps });
            }
        }
        for walk in &mut self.walks {
            walk.next = crate::handoff::take(walk.list);
        }
        // Each round steps every list once; a list that ends leaves the walk.
        let (shared, collected) = (self.shared, &mut self.collected);
        while !self.walks.is_empty() {
            self.walks.retain_mut(|walk| match walk.step(shared) {
                Some(block) => {
                    collected.push(block);
                    true
                }
                None => false,
            });
        }
    }

    /// Records a chunk the child took, at `offset`, `size` bytes long, lent under `owner`. The
    /// caller reserved room in both lists.
    fn record(&mut self, offset: u64, size: usize, owner: u32) {
        // Blocks start in a chunk's first `CHUNK_SIZE` bytes.
        let block_end = size.min(CHUNK_SIZE) as u32;
        self.places.insert(offset, self.chunks.len());
        let remote = self.shared.arena.remote_list(arena_page(offset));
        self.chunks.push(LentChunk { remote, offset, owner, block_end });
    }

    /// Forgets the chunk at `offset`, which the child gives back; the owner slot it was lent
    /// under, if the child holds it.
    fn forget(&mut self, offset: u64) -> Option<u32> {
        let place = self.places.remove(&offset)?;
        let owner = self.chunks.swap_remove(place).owner;
        // The chunk that was last now fills the gap.
        if let Some(moved) = self.chunks.get(place) {
            self.places.insert(moved.offset, place);
        }
        Some(owner)
    }
}

/// What a block's link holds once a child took it off its remote-free list: no block's offset,
/// since blocks start on 16-byte boundaries.
const TAKEN: u32 = 1;

/// A remote-free list of one of a child's chunks, as a collection walks it.
#[derive(Clone, Copy, Debug)]
struct ListWalk<'pool> {
    /// The list.
    list: &'pool core::sync::atomic::AtomicU32,
    /// The chunk's offset in the mapping.
    chunk: u64,
    /// The offset from the chunk's start of the next block on the list; 0 ends it.
    next: u32,
    /// The end of the part of the chunk where blocks start.
    block_end: u32,
    /// Blocks the list may still hold.
    steps: u32,
}

impl ListWalk<'_> {
    /// Takes the next block off the list, or `None` at its end.
    fn step(&mut self, shared: &Shared) -> Option<NonNull<u8>> {
        // A link another process wrote: only a block boundary inside the chunk, past its
        // header, is followed (0, the end of the list, is none). A block taken already holds
        // `TAKEN`, so that a free that wrote into its block afterwards cannot make the list a
        // loop that hands one block out again and again.
        let within = self.next;
        if within < CHUNK_HEADER || within % 16 != 0 || within >= self.block_end || self.steps == 0
        {
            return None;
        }
        self.steps -= 1;
        let block = shared.ptr_at(self.chunk + u64::from(within)).cast::<u32>();
        // SAFETY: the block was pushed onto the list by the process that freed it, with a
        // release that the list's swap acquired: its first word holds the next link, and the
        // block is this child's again, to write.
        self.next = unsafe { block.as_ptr().replace(TAKEN) };
        (self.next != TAKEN).then_some(block.cast())
    }
}

/// `identity`, or the error of a process that has none to lock with: one whose descriptor of the
/// pool no longer names the pool's file, which takes none of its locks
/// ([`UNUSABLE`](crate::identity::UNUSABLE)), or one the system had no descriptor or memory to
/// spare for just now.
#[inline]
fn usable(identity: Result<u32, rustix::io::Errno>) -> Result<u32, ShmError> {
    let identity = identity
        .map_err(|errno| ShmError::os("making this process's identity in the pool", errno))?;
    if identity == crate::identity::UNUSABLE {
        return Err(ShmError::os(
            "taking a lock of the pool through its descriptor, which names another file or none",
            rustix::io::Errno::BADF,
        ));
    }
    Ok(identity)
}

/// The page of a chunk's offset.
fn arena_page(offset: u64) -> u32 {
    (offset / crate::layout::PAGE as u64) as u32
}

impl ShmChunks<'_> {
    /// Gives `chunk`, of `layout`, back to the pool, under its lock; a chunk whose return the
    /// lock refuses waits on the pool's list of failed returns for the next holder.
    ///
    /// # Safety
    /// `chunk` is a chunk this child took with `layout` and no longer uses, in the process that
    /// made the child.
    unsafe fn give_back(&mut self, chunk: NonNull<u8>, layout: Layout) {
        // Mapped since the chunk was lent: its offset needs no mapping, which could fail and
        // leave the chunk listed, its remote-free word then another holder's.
        let offset = self.shared.locked_offset_of(chunk.as_ptr());
        // The slot the chunk was lent under: this process may have claimed one since, if the
        // owner table had none free then.
        let lent_under = offset.and_then(|offset| self.forget(offset));
        let owner = lent_under.unwrap_or_else(|| self.shared.claim.current().unwrap_or(NONE));
        match self.shared.lock() {
            Ok(mut guard) => guard.take_back(chunk, layout.size(), owner),
            Err(_) => {
                if let Some(offset) = offset {
                    let size = layout.size();
                    let chunk = PendingReturn { offset, size, owner, process: self.owner };
                    self.shared.pending_returns.with(|pending| pending.push(chunk));
                    self.shared.has_pending.store(true, Ordering::Release);
                }
            }
        }
    }
}

impl Drop for ShmChunks<'_> {
    /// Gives the kept chunks back; the engine gave back the others before.
    fn drop(&mut self) {
        self.keep_at_most(0);
    }
}

// SAFETY: (1) chunks come from `Arena::lend`, which hands out disjoint runs of the mapping
// aligned to at least a chunk, as long as asked for; (2) they stay lent until taken back, and the
// mapping lives as long as the borrowed pool; (3) pointers derive from the mapping's base, which
// carries provenance over the whole mapping.
unsafe impl ChunkSource for ShmChunks<'_> {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if sys::process_token() != self.owner {
            // A forked copy of the child's bookkeeping would hand out the same blocks as the
            // original: refuse rather than share.
            return None;
        }
        if layout == SMALL_CHUNK {
            if let Some(chunk) = self.kept.pop() {
                return Some(chunk);
            }
        }
        // Room for the chunk's record first: without memory, no chunk rather than an abort.
        self.chunks.try_reserve(1).ok()?;
        self.places.try_reserve(1).ok()?;
        // Empty outside a collection.
        self.walks.try_reserve(self.chunks.len() + 1).ok()?;
        let (chunk, owner) = self.shared.lock().ok()?.lend(layout, self.owned_only)?;
        // The lock mapped the pages grown so far, the chunk's among them: its offset needs no
        // mapping, which could fail and leave it unrecorded.
        if let Some(offset) = self.shared.locked_offset_of(chunk.as_ptr()) {
            self.record(offset, layout.size(), owner);
        }
        Some(chunk)
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        if sys::process_token() != self.owner {
            // A forked copy of the child is giving back a chunk that the original, in the
            // process that made it, still holds and hands out: it stays lent to the original.
            return;
        }
        // A small chunk the engine gives back while it lives has emptied: every block of it is
        // free, none handed off and out, so its remote-free list is empty, and it can be handed
        // to the engine again as it is. One it gives back as it is dropped may still hold
        // handed-off blocks, which is why the kept chunks go back through `give_back`, as any
        // other, when the source follows the engine (`Drop`).
        if layout == SMALL_CHUNK
            && self.kept.len() < KEPT_CHUNKS
            && self.kept.try_reserve(1).is_ok()
        {
            self.kept.push(chunk);
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.give_back(chunk, layout) };
    }

    fn kept_bytes(&self) -> usize {
        self.kept.len() * CHUNK_SIZE
    }

    fn keep_at_most(&mut self, bytes: usize) {
        if sys::process_token() != self.owner {
            // A forked copy's kept chunks are the original's.
            return;
        }
        while self.kept_bytes() > bytes {
            let Some(chunk) = self.kept.pop() else { break };
            // SAFETY: a kept chunk is a small chunk this child took and its engine gave back,
            // which nothing uses.
            unsafe { self.give_back(chunk, SMALL_CHUNK) };
        }
    }

    fn trim(&mut self) {
        self.keep_at_most(0);
    }

    unsafe fn release_all_small(&mut self) -> bool {
        // A forked copy of the child owns none of its chunks (see `release`), and their headers
        // lie in the shared mapping, where the original's lists run through them: saying they
        // are all taken back keeps the copy's engine from unlinking them one by one.
        sys::process_token() != self.owner
    }

    /// A lent chunk is whole pages of the pool.
    fn granule(&self) -> usize {
        PAGE
    }

    fn take_remote_frees(&mut self, out: &mut [Option<NonNull<u8>>]) -> usize {
        if sys::process_token() != self.owner {
            return 0;
        }
        if self.collected.is_empty() {
            self.collect();
        }
        let count = out.len().min(self.collected.len());
        for (place, block) in out.iter_mut().zip(self.collected.drain(..count)) {
            *place = Some(block);
        }
        count
    }

    /// A free whose process died between its push onto an empty list and its news leaves the
    /// list unannounced: the next look takes it anyway.
    fn rescan_remote_frees(&mut self) {
        self.rescan = true;
    }

    fn forget_remote_frees(&mut self) {
        if sys::process_token() != self.owner {
            return;
        }
        // Blocks in flight between another process's free and this child are free, as the
        // reset leaves every block of the child's chunks: the lists and what was collected
        // from them are dropped.
        self.collected.clear();
        for chunk in &self.chunks {
            crate::handoff::take(chunk.remote);
        }
    }
}

#[cfg(test)]
mod tests {
    use core::ptr::addr_of_mut;

    use super::*;
    use crate::layout::NONE;

    /// The flag of the chunks whose return failed, as the fork handler holds it: taken before a
    /// fork, it keeps every other thread out of the list until it is given back after.
    #[test]
    fn the_list_of_failed_returns_waits_for_a_fork_to_end() {
        use std::sync::atomic::AtomicBool;

        let pending = PendingReturns::new();
        let chunk = PendingReturn { offset: 1 << 20, size: CHUNK_SIZE, owner: 0, process: 1 };
        pending.take();
        let pushed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                pending.with(|list| list.push(chunk));
                pushed.store(true, Ordering::Release);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!pushed.load(Ordering::Acquire), "a thread changed the list during a fork");
            pending.give();
        });
        assert!(pushed.load(Ordering::Acquire));
        assert_eq!(pending.with(core::mem::take).len(), 1);
    }

    /// The fields an attach reads from a pool's file are the values the pool was made with: each
    /// read whole as the header lays it out, on a machine of either byte order.
    #[test]
    fn the_header_fields_read_from_the_file_are_the_pools() {
        let shm = ShmPool::builder().capacity(1 << 20).max_capacity(8 << 20).build().unwrap();
        let fields = HeaderFields::read(shm.shared().mapping.fd()).unwrap();
        assert_eq!(fields.magic, crate::layout::MAGIC);
        assert_eq!(fields.version, crate::layout::VERSION);
        assert_eq!(fields.capacity, 8 << 20);
        assert_eq!(fields.initial_capacity, 1 << 20);
        assert_eq!(fields.lock_kind, 0, "the built-in lock");
    }

    /// A child's list of chunks stays in step with its map of where each lies, whichever chunk
    /// goes back, and keeps each chunk's own remote-free word.
    #[test]
    fn a_childs_chunk_list_follows_the_chunks_it_takes_and_gives_back() {
        let shm = ShmPool::new(4 << 20).unwrap();
        let mut chunks = ShmChunks::new(shm.shared(), false);
        let small = SMALL_CHUNK;
        let large = Layout::from_size_align(3 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
        let taken: Vec<_> = [small, large, small, small, small]
            .into_iter()
            .map(|layout| (chunks.acquire(layout).unwrap(), layout))
            .collect();
        let assert_in_step = |chunks: &ShmChunks<'_>, held: &[(NonNull<u8>, Layout)]| {
            assert_eq!(chunks.chunks.len(), held.len());
            assert_eq!(chunks.places.len(), held.len());
            for &(chunk, layout) in held {
                let offset = shm.offset_of(chunk).unwrap() as u64;
                let place = chunks.places[&offset];
                let listed = chunks.chunks[place];
                assert_eq!(listed.offset, offset);
                assert_eq!(listed.block_end as usize, layout.size().min(CHUNK_SIZE));
                let remote = shm.shared().arena.remote_list(arena_page(offset));
                assert!(core::ptr::eq(listed.remote, remote), "chunk at {offset}");
            }
        };
        assert_in_step(&chunks, &taken);
        // The first, then the last, then one in the middle: each way a list entry moves.
        for gone in [0, 3, 1] {
            let mut held: Vec<_> = chunks
                .chunks
                .iter()
                .map(|listed| {
                    let chunk = shm.ptr_at(listed.offset as usize).unwrap();
                    let layout = taken.iter().find(|(taken, _)| *taken == chunk).unwrap().1;
                    (chunk, layout)
                })
                .collect();
            let (chunk, layout) = held.remove(gone);
            // SAFETY: the chunk came from `acquire` with this layout and is not used again.
            unsafe { chunks.give_back(chunk, layout) };
            assert_in_step(&chunks, &held);
        }
        assert_eq!(chunks.chunks.len(), 2);
    }

    /// A thread that does not hold the built-in lock and releases it anyway (as a thread whose
    /// hold was broken would) gets an error, and the holder keeps both its lock and its token.
    #[test]
    fn a_wrong_owner_unlock_is_refused_and_leaves_the_holder_alone() {
        let shm = ShmPool::new(1 << 20).unwrap();
        let mut guard = shm.lock().unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let refused = shm.shared().unlock(sys::thread_token());
                assert_eq!(
                    refused,
                    Err(ShmError::Os {
                        call: "releasing the pool's lock",
                        errno: crate::Errno::from_raw_os_error(
                            rustix::io::Errno::PERM.raw_os_error()
                        )
                    })
                );
                let waited = shm.try_lock_for(Duration::from_millis(20));
                assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "{waited:?}");
            });
        });
        assert_eq!(
            shm.try_lock_for(Duration::from_millis(20)).err(),
            Some(ShmError::WouldDeadlock)
        );
        assert!(guard.alloc(64).is_ok());
        guard.unlock().unwrap();
        assert!(shm.lock().is_ok());
    }

    /// A pool whose header is corrupted by `corrupt` (given the header, under the lock), then
    /// attached from a second handle, as the next process would.
    fn attach_corrupted(corrupt: impl FnOnce(*mut Header)) -> (ShmPool, ShmPool) {
        let made = ShmPool::memfd("corrupt", 1 << 20).unwrap();
        let blocks: Vec<_> = [64, 64, 3000, 20_000].iter().map(|&size| made.alloc(size)).collect();
        assert!(blocks.iter().all(Option::is_some));
        let guard = made.lock().unwrap();
        corrupt(made.shared().base().cast());
        drop(guard);
        let fd = made.as_fd().try_clone_to_owned().unwrap();
        // SAFETY: the descriptor holds a pool of this library's version; its corruption is the
        // test's subject, and attaching must survive it.
        let attached = unsafe { ShmPool::attach(fd) }.unwrap();
        (made, attached)
    }

    /// Blocks the pool hands out lie inside its mapping, whatever its header says; an error is
    /// fine.
    fn exercise(shm: &ShmPool) {
        let base = shm.shared().base().addr();
        let end = base + shm.capacity();
        let mut blocks = Vec::new();
        for size in [16, 64, 64, 100, 3000, 5000, 20_000, 70_000, 64, 16] {
            if let Some(block) = shm.alloc(size) {
                let at = block.as_ptr().addr();
                assert!(at >= base && at + size <= end, "{size} bytes at {at:#x} outside the pool");
                blocks.push(block);
            }
        }
        for block in blocks {
            // SAFETY: the block came from `shm` and is freed once; a refusal is fine.
            let _ = unsafe { shm.try_free(block) };
        }
        let _ = shm.check();
        let _ = shm.stats();
    }

    #[test]
    fn an_undo_log_naming_words_outside_the_metadata_is_not_followed() {
        let (made, attached) = attach_corrupted(|header| {
            // SAFETY: the header of a live mapping, under its lock.
            unsafe {
                let log = addr_of_mut!((*header).log).cast::<crate::layout::LogEntry>();
                // The first word past the metadata, as a 64-bit one.
                let data = (u64::from((*header).first_data_page) * crate::layout::PAGE as u64) | 1;
                for (index, key) in [u64::MAX, 1 << 20, (1 << 20) - 4, data, 3].iter().enumerate() {
                    log.add(index).write(crate::layout::LogEntry { key: *key, old: u64::MAX });
                }
                (*header).log_len.store(5, Ordering::Relaxed);
            }
        });
        exercise(&attached);
        // Nothing named a word of the metadata, so nothing was restored, and the pool is intact.
        attached.check().unwrap();
        assert_eq!(made.stats().unwrap().operations_undone, 1);
    }

    #[test]
    fn an_undo_log_longer_than_its_capacity_is_cut_to_it() {
        let (_made, attached) = attach_corrupted(|header| {
            // SAFETY: the header of a live mapping, under its lock.
            unsafe { (*header).log_len.store(u32::MAX, Ordering::Relaxed) };
        });
        exercise(&attached);
    }

    #[test]
    fn a_header_whose_geometry_is_not_its_files_is_refused() {
        for (page_count, first_data_page) in [(u32::MAX, 1), (255, 1), (256, 0), (256, 300)] {
            let made = ShmPool::memfd("corrupt", 1 << 20).unwrap();
            let header = made.shared().base().cast::<Header>();
            // SAFETY: the header of a live mapping that no operation uses meanwhile.
            unsafe {
                addr_of_mut!((*header).page_count).write(page_count);
                addr_of_mut!((*header).first_data_page).write(first_data_page);
            }
            let fd = made.as_fd().try_clone_to_owned().unwrap();
            // SAFETY: as in `attach_corrupted`.
            let attached = unsafe { ShmPool::attach(fd) };
            assert_eq!(attached.err(), Some(ShmError::NotAPool), "{page_count}, {first_data_page}");
        }
    }

    #[test]
    fn list_heads_outside_the_data_pages_are_dropped_not_followed() {
        for head in [0, 1, 255, 256, 10_000, NONE - 1] {
            let (_made, attached) = attach_corrupted(|header| {
                // SAFETY: the header of a live mapping, under its lock.
                unsafe {
                    let state = addr_of_mut!((*header).state);
                    (*state).partial = [head; crate::layout::CLASS_COUNT];
                    (*state).bins = [head; crate::layout::BIN_COUNT];
                    (*state).bin_mask = u32::MAX;
                }
            });
            exercise(&attached);
            assert!(attached.check().is_err(), "head {head}");
            assert!(attached.stats().unwrap().quarantined_slabs > 0, "head {head}");
        }
    }

    #[test]
    fn impossible_counters_saturate() {
        for free_bytes in [0, u64::MAX] {
            let (_made, attached) = attach_corrupted(|header| {
                // SAFETY: the header of a live mapping, under its lock.
                unsafe { addr_of_mut!((*header).state.free_bytes).write(free_bytes) };
            });
            exercise(&attached);
        }
    }
}
