//! A memory pool in shared memory: made before `fork()` or attached by descriptor, safe when a
//! process dies holding its lock, and as fast when full as when empty.
//!
//! A [`ShmPool`] lives in one shared mapping of a memfd. A parent makes it before forking, and it
//! and its children (and siblings) allocate and free in it; an unrelated process can
//! [`attach`](ShmPool::attach) to its descriptor instead. Everything inside the mapping is
//! offsets, so each process may map it at a different address.
//!
//! - Small blocks come from slabs of one size class without a header per block, so 64-byte
//!   objects fill nearly the whole capacity; large blocks are runs of 4 KiB pages. Allocation
//!   and free are O(1) in the size and fill of the pool, except that an allocation that finds no
//!   free run first walks the size classes' lists to give back empty slabs; `stats` and `check`
//!   walk the pages.
//! - Each operation takes the pool's lock: the built-in one is a futex word in the mapping
//!   naming the holder's process by an identity the pool hands out, which a waiter takes over
//!   once the holder is dead (a waiter looks every 5 ms), in whatever pid namespace; or any
//!   [`ShmLock`] of the user's. A process may bound its wait for a holder that is alive but
//!   stopped ([`ShmPool::try_lock_for`], [`ShmPool::set_lock_timeout`]).
//! - Every change to the pool's state goes through an undo log, so an operation interrupted by
//!   the death of its process is rolled back by the next process to take the lock.
//! - [`ShmPool::child`] makes a heap pool that takes its chunks from the shared pool, locking once
//!   per chunk.
//! - A pool made by [`ShmPool::new`] has the capacity it was made with, reserved up front. One
//!   made by [`ShmPool::builder`] with a [`max_capacity`](ShmPoolBuilder::max_capacity) starts
//!   with its capacity and grows, when an allocation or a chunk finds no room, by segments of
//!   that size up to the largest: each process reserves address space for the largest capacity,
//!   but memory only for what the pool has grown to. Nothing moves as the pool grows, so a block
//!   keeps its address in every process; a process maps the pages another grew the pool by when
//!   it next takes the lock, or meets one of their offsets in [`ShmPool::ptr_at`] (a raw pointer
//!   into them, handed across a `fork`, is usable once it has done either).
//!
//! # Whose memory is whose
//!
//! A block allocated from the shared pool itself ([`ShmPool::alloc`], a collection in
//! `&ShmPool`) is shared: any process may use and free it, and it outlives the process that
//! allocated it, so that a worker can leave a result for the master. The chunks of a child pool
//! ([`ShmPool::child`]) are its process's scratch: they are recorded in the pool's owner table
//! under that process, and when it dies, however it dies, they come back to the pool, with every
//! block in them. A process that is alive never loses them, whatever pid namespace it runs in
//! and whatever process has had its pid: the table knows a process by a lock the kernel holds
//! for it until it is gone, not by its id. The pool gives a dead process's chunks back when it
//! takes its lock over from a dead holder, when an allocation or a chunk finds no room, and when
//! [`ShmPool::reclaim_dead`] asks, as a master can when it reaps a worker. So put per-request and
//! per-process scratch in a child pool, and what other processes must see directly in the shared
//! pool. Between the two, a block of a child pool can be [handed off](ShmPool::hand_off) to other
//! processes (a message a worker passes on, say): any process then frees it through the shared
//! pool without its lock, the child takes it back when it runs out of blocks, and it outlives
//! its process: the chunk it lies in waits, as an orphan, until the last such block of it is
//! freed. An orphan whose block is never freed (its receiver died holding it) waits for good:
//! [`ShmStats::orphaned_bytes`] counts such chunks, and [`ShmPool::reclaim_orphans`] gives them
//! back when the program knows that nobody holds their blocks any more.
//!
//! The owner table has 128 slots: a process holds one from its first child's first chunk until
//! it drops its `ShmPool` or dies. Past 128 such processes, chunks are still lent, but the death
//! of a process that found no slot does not give its chunks back.
//!
//! The lock knows its holder, and the owner table its slot's process, by a description of the
//! pool's file of that process's own. A process made by `fork` (the C library's, which runs the
//! fork handlers) from one that could open the file has its pair already: the parent opened them
//! for it before the fork, so a worker may drop its privileges right after (a named pool's file is
//! its creator's alone). Any other process opens its own (through `/proc/self/fd`) the first time
//! it takes the lock or its first child pool takes a chunk. One that cannot (no `/proc`, or no
//! right to the file) uses the pool under an anonymous identity that nothing takes over, and its
//! child pools' chunks do not come back when it dies: were it to die holding the lock, the others
//! would wait until their timeouts. One that has no descriptor or memory to spare just then (its
//! table of descriptors full, say) makes none: every operation that needs the lock fails with
//! [`ShmError::Os`] and what the system said (`EMFILE`, say), and the next one tries again. Those
//! descriptions are descriptors of the process's (close-on-exec), each with a page of the pool's
//! file mapped through it that no forked process inherits, so that closing the descriptors of a
//! pool made without a path does not end them: only the process's death, or the pool handle's drop,
//! does. A program must not close them all the same: on some file systems a mapping does not keep
//! the description it was made through (see `docs/architecture.md`). Each is tagged by its file
//! offset, so that a number the program closed and got back for a file of its own is neither used
//! nor closed as the pool's, in the process or in one it forks. The pool's own descriptor
//! ([`ShmPool::as_fd`]) is the one all of that is asked and done through, and a process in which it
//! no longer names the pool's file (closed, its number perhaps given to another file since) before
//! it first takes a lock takes neither the pool's built-in lock nor a [`ShmMutex`]: every operation
//! that needs one fails with [`ShmError::Os`] and `EBADF`. Nor does it grow the pool, or take
//! anything back from the dead, through that number, and nothing is written to the other file. A
//! process that closed it after its first lock keeps the identity and slot it made then, so it
//! still takes the lock, and no other process takes its lock over or its chunks back while it runs;
//! but it cannot tell a dead holder from a live one, and waits for a dead one as for a live one,
//! until its lock timeout if it set one. So a program that closes every descriptor from 3 up, as a
//! daemon may, does it before it makes or attaches a pool; a process forked from one that uses a
//! pool keeps the pool's descriptor open, or attaches the pool again
//! ([`open_path`](ShmPool::open_path), [`receive`](ShmPool::receive)) after it closes it.
//!
//! Before a fork, the library's handler (registered with `pthread_atfork` when the first pool
//! is mapped) takes two locks of its own: the one under which child pools are made and dropped,
//! and the one under which a process opens its descriptions of a pool's file. A program whose
//! own fork handler, registered earlier, takes a lock of the program's runs after the library's,
//! so a thread that holds that lock must not, while another thread may fork, make or drop a
//! child pool, take a pool's lock for the first time in its process, or have a child pool take
//! its first chunk there: each would wait for the library's lock, held by a fork that waits for
//! the program's.
//!
//! # Shared objects
//!
//! Values of [`ShmSafe`] types (plain data, atomics, arrays of them, offsets, mutexes) live in
//! the pool typed: a [`ShmBox`] owns one in one process; a value refers to another by
//! [`ShmOffset`], which means the same value in every process, wherever it maps the pool; a
//! name finds one ([`ShmPool::insert_named`], [`ShmPool::find`], [`ShmPool::named`]), with its
//! type checked; a [`ShmMutex`] guards one with a lock word like the pool's own, which tells the
//! next holder when a holder's process died holding it (one with an identity of its own: see
//! "Whose memory is whose" above).
//!
//! ```
//! use melon_alloc_shm::{ShmMutex, ShmPool};
//!
//! let shm = ShmPool::new(1 << 20)?;
//! // The master, before it forks: a table of counters under a name.
//! shm.insert_named_mutex("hits", [0u64; 8])?;
//! // Any process that maps the pool: find it, lock it, count.
//! let hits = shm.named::<ShmMutex<[u64; 8]>>("hits")?.expect("published above");
//! let mut table = hits.lock()?;
//! if table.holder_died() {
//!     // The last holder died holding the lock: the table may be half changed.
//! }
//! table[3] += 1;
//! # drop(table);
//! # assert_eq!(hits.lock()?[3], 1);
//! # Ok::<(), melon_alloc_shm::ShmError>(())
//! ```
//!
//! ## Which containers work where
//!
//! A collection in the pool (an `allocator_api2::vec::Vec` or a `hashbrown::HashMap` in
//! `&ShmPool`) records its buffer by pointer. A pointer into the pool means
//! the same bytes only where the pool is mapped at the same address: in the process that made
//! the collection and in the processes forked from it afterwards, which can share it under a
//! [`ShmMutex`] made before the fork by [`ShmMutex::new_poisoning_in`] (a holder that dies in
//! the middle of a change poisons it: a half-changed collection is not one). A process that
//! attached by descriptor
//! ([`ShmPool::attach`], [`ShmPool::receive`], [`ShmPool::open_path`]) maps the pool elsewhere
//! and must not follow those pointers; what it can use are values that refer to each other by
//! [`ShmOffset`], such as a table of offsets:
//!
//! ```
//! use melon_alloc_shm::{ShmBox, ShmOffset, ShmPool};
//!
//! let shm = ShmPool::new(1 << 20)?;
//! // Four values, each in its own block, and a named table of their offsets.
//! let mut table = [ShmOffset::<u64>::from_raw(0); 4];
//! for (slot, value) in table.iter_mut().zip(10..) {
//!     *slot = ShmBox::new_in(value, &shm)?.into_offset();
//! }
//! shm.insert_named("table", table)?;
//! // Any process that maps the pool, wherever it maps it, follows the offsets.
//! let found = shm.named::<[ShmOffset<u64>; 4]>("table")?.expect("inserted above");
//! // SAFETY: the values stay in the pool, and nothing writes them.
//! let sum: u64 = found.iter().map(|&offset| *unsafe { shm.get(offset) }.unwrap()).sum();
//! assert_eq!(sum, 10 + 11 + 12 + 13);
//! # Ok::<(), melon_alloc_shm::ShmError>(())
//! ```
//!
//! # Platforms
//!
//! Linux only: the pool needs `memfd_create`, futexes and open file description locks. On any
//! other target the crate is empty, so that a crate which uses it on Linux alone can depend on
//! it everywhere.

// Empty elsewhere: see "Platforms" above.
#![cfg(target_os = "linux")]

// The shared pool lends chunks of whole pages, written for 16 KiB chunks: a build that turns on
// the core's `small-chunks` feature (for firmware, which uses the core alone) is refused here.
const _: () = assert!(
    melon_alloc_core::CHUNK_SIZE == 16 << 10,
    "melon-alloc-shm needs 16 KiB chunks: melon-alloc-core's `small-chunks` feature is for the core alone"
);

mod allocator;
mod arena;
mod blocks;
mod builder;
mod directory;
mod error;
#[cfg(melon_failpoints)]
#[doc(hidden)]
pub mod failpoint;
mod fork;
mod handoff;
mod headroom;
mod identity;
mod layout;
mod lock;
#[cfg(melon_loom)]
#[doc(hidden)]
pub mod model;
mod mutex;
mod owner;
mod pool;
mod registry;
mod spares;
mod stats;
mod stop_point;
mod sync;
mod sys;
mod tags;
mod travel;
mod tx;
mod typed;

pub use builder::ShmPoolBuilder;
pub use error::{Errno, LockError, ShmCheckError, ShmError};
pub use lock::ShmLock;
pub use mutex::{ShmMutex, ShmMutexBox, ShmMutexGuard};
pub use owner::ReclaimReport;
pub use pool::{ShmGuard, ShmPool};
pub use stats::{ShmClassStats, ShmStats};
pub use typed::{ShmBox, ShmOffset, ShmSafe};

/// Items for the workspace's other crates, such as the facade's pointer-only `free`: public only
/// so that those crates can reach them, they are not part of this crate's API and follow no
/// semver promise.
#[doc(hidden)]
pub mod plumbing {
    use core::ptr::NonNull;

    use melon_alloc_heap::ChildPool;

    pub use crate::fork::{on_fork, ForkHooks};
    pub use crate::pool::Whose;
    pub use crate::registry::free_shared;
    use crate::ShmPool;

    /// A child pool of `pool` (with at most `limit` bytes of chunks, if a limit is given) whose
    /// every chunk is lent to this process's slot in the owner table, so that [`whose`] can
    /// tell its blocks from the pool's own and from other processes' without the lock. Where
    /// no slot can be claimed (128 processes hold them), it takes no chunk. Otherwise it is
    /// [`ShmPool::child`], fork included. `Err` when the global allocator has no memory for the
    /// child's bookkeeping, where `ShmPool::child` aborts as `Box::new` does.
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let child = melon_alloc_shm::plumbing::owned_child(&shm, Some(64 << 10)).unwrap();
    /// assert!(child.alloc(100).is_some());
    /// assert!(shm.stats()?.lent_bytes > 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn owned_child(
        pool: &ShmPool,
        limit: Option<usize>,
    ) -> Result<ChildPool<'_>, melon_alloc_heap::AllocError> {
        pool.owned_child(limit)
    }

    /// Frees `block` if it is a handed-off block of a chunk lent to a child pool, by any
    /// process, without the lock, as [`ShmPool::try_free`] does; `None` for a pointer in no
    /// lent chunk, which this never frees: unlike `try_free`, it leaves the pool's own blocks
    /// alone. A block of a lent chunk that is not handed off is refused
    /// ([`ShmError::NotHandedOff`](crate::ShmError::NotHandedOff)), with nothing changed.
    ///
    /// When the block is the last one out of a chunk whose process gave it up, `try_free` takes
    /// the lock to give the chunk back. So does this for a pool that locks itself; with a
    /// custom lock ([`ShmPool::with_lock`]), which its caller may hold already, it takes none,
    /// and the chunk waits for the next reclaim of dead processes' chunks
    /// ([`ShmPool::reclaim_dead`], which an allocation that finds no room runs).
    ///
    /// # Safety
    /// As for [`ShmPool::try_free`].
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{plumbing::free_if_lent, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let own = shm.alloc(64).expect("the pool is empty");
    /// // SAFETY: the block is the pool's own, and this leaves it alone.
    /// assert!(unsafe { free_if_lent(&shm, own) }.is_none());
    /// let child = shm.child();
    /// let block = child.alloc(64).unwrap();
    /// // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
    /// unsafe { shm.hand_off(block) }?;
    /// // SAFETY: the block was handed off, and is freed once.
    /// assert!(matches!(unsafe { free_if_lent(&shm, block) }, Some(Ok(()))));
    /// // SAFETY: the block is the pool's own, and not used again.
    /// unsafe { shm.try_free(own) }?;
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn free_if_lent(
        pool: &ShmPool,
        block: NonNull<u8>,
    ) -> Option<Result<(), crate::ShmError>> {
        let shared = pool.shared();
        let orphans = if shared.has_custom_lock() {
            crate::pool::Orphans::Leave
        } else {
            crate::pool::Orphans::Lock
        };
        // SAFETY: forwarded from the caller.
        unsafe { shared.free_if_lent(block, orphans) }
    }

    /// Whose block `block` is, read from its page's descriptor in the mapping, atomically and
    /// without the lock: exact for a block the caller holds, of the pool itself or of a child
    /// pool made with [`owned_child`] (whose chunk stays lent while the child holds it), and
    /// merely an answer for any other pointer.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{plumbing::{owned_child, whose, Whose}, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let child = owned_child(&shm, None).unwrap();
    /// let own = shm.alloc(64).expect("the pool is empty");
    /// let childs = child.alloc(64).expect("the pool is empty");
    /// assert_eq!(whose(&shm, own), Whose::Shared);
    /// assert_eq!(whose(&shm, childs), Whose::OwnChild);
    /// assert_eq!(whose(&shm, core::ptr::NonNull::from(&0u8)), Whose::Outside);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn whose(pool: &ShmPool, block: NonNull<u8>) -> Whose {
        pool.shared().whose(block.as_ptr())
    }

    /// What a free by pointer alone needs to know of `block`: [`whose`] it is, and for a block
    /// of this process's child pools, whether it is handed off ([`Whose::HandedOff`]), which
    /// a second look at the block's chunk would tell after `whose`, here from one look.
    ///
    /// # Safety
    /// `block` is an in-use block of `pool` or of a child pool of it that this process made, or
    /// one handed off and not yet freed: a child's chunk stays lent for the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{plumbing::{owned_child, whose_to_free, Whose}, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let child = owned_child(&shm, None).unwrap();
    /// let own = shm.alloc(64).expect("the pool is empty");
    /// let kept = child.alloc(64).expect("the pool is empty");
    /// let sent = child.alloc(64).expect("the pool is empty");
    /// // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
    /// unsafe { shm.hand_off(sent) }?;
    /// // SAFETY: each block is in use in `shm` or its child, or handed off and not yet freed.
    /// unsafe {
    ///     assert_eq!(whose_to_free(&shm, own), Whose::Shared);
    ///     assert_eq!(whose_to_free(&shm, kept), Whose::OwnChild);
    ///     assert_eq!(whose_to_free(&shm, sent), Whose::HandedOff);
    /// }
    /// // SAFETY: the block was handed off, and is freed once.
    /// unsafe { shm.try_free(sent) }?;
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn whose_to_free(pool: &ShmPool, block: NonNull<u8>) -> Whose {
        // SAFETY: forwarded from the caller.
        unsafe { pool.shared().whose_to_free(block.as_ptr()) }
    }

    /// What an unchecked free does with the outcome of its checked one: in a debug build, a
    /// free the caller got wrong (a pointer the pool refuses, or a free by a thread that holds
    /// the pool's lock itself) aborts the process with a message. A lock that timed out or
    /// failed, which left the block allocated, passes, as does every outcome in a release
    /// build. [`ShmPool::free`] and the facade's pointer-only free share it.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{plumbing::abort_on_misused_free, ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(64).expect("the pool is empty");
    /// // SAFETY: the block came from `shm` and is not used again.
    /// abort_on_misused_free(unsafe { shm.try_free(block) });
    /// // A free that could not take the lock leaves its block allocated, and passes.
    /// let waited = core::time::Duration::from_millis(20);
    /// abort_on_misused_free(Err(ShmError::LockTimeout { waited }));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn abort_on_misused_free(result: Result<(), crate::ShmError>) {
        if cfg!(debug_assertions) {
            if let Err(error @ (crate::ShmError::Free(_) | crate::ShmError::WouldDeadlock)) = result
            {
                std::eprintln!("melon-alloc: invalid free of a shared block: {error}");
                std::process::abort();
            }
        }
    }

    /// Gives back, taking the pool's lock, the chunks that child pools of this process could not
    /// give back because the lock failed, if there are any; takes no lock otherwise. (The next
    /// taking of the lock, for whatever operation, gives them back anyway; this is for a caller
    /// that wants them back now, as the C API does when a pool goes.)
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let before = shm.available();
    /// // Nothing failed to come back: nothing to do.
    /// melon_alloc_shm::plumbing::retry_returns(&shm);
    /// assert_eq!(shm.available(), before);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn retry_returns(pool: &ShmPool) {
        pool.shared().retry_returns();
    }

    /// Lets go of this process's slot in `pool`'s owner table without the pool's lock, for a
    /// pool about to be dropped by a caller that may hold the lock already (the C API's
    /// `mln_alloc_destroy`, whose caller's lock is not recursive): the slot then looks dead,
    /// and the next process to reclaim empties it. Dropping the pool afterwards takes no lock.
    ///
    /// # Safety
    /// - No child pool this process made from `pool` holds a chunk (they have all been
    ///   dropped), and none takes one until `pool` is dropped: another process that reclaims
    ///   the slot gives every chunk lent to it back to the pool, to be lent again.
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// drop(melon_alloc_shm::plumbing::owned_child(&shm, None).unwrap());
    /// // SAFETY: the only child is dropped, and `shm` is dropped next.
    /// unsafe { melon_alloc_shm::plumbing::let_go_without_lock(&shm) };
    /// drop(shm);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn let_go_without_lock(pool: &ShmPool) {
        pool.shared().claim_close();
    }
}
