//! Heap pools: a root over the global allocator, children over a parent pool.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use melon_alloc_core::{CheckError, ChunkSource, Engine, FreeError, Stats};
use std::alloc;

use crate::family::{self, Links};
use crate::plumbing::try_box;
use crate::GlobalSource;

/// Where a heap pool's chunks come from.
pub(crate) enum HeapSource {
    /// A root pool: the global allocator.
    Global(GlobalSource),
    /// A child pool: its parent, which outlives it (the child borrows it), and its source's
    /// granule, asked once, so that the chunk paths make no call for it.
    Parent(NonNull<Pool>, usize),
    /// A child pool over a source of the caller's (a shared pool, say), owned by the pool and
    /// freed with it, and its granule and whether it merges released chunks, asked once; the
    /// lifetime it may borrow for is kept by the [`ChildPool`].
    External(NonNull<dyn ChunkSource>, usize, bool),
}

impl HeapSource {
    /// The source of a child of `parent`.
    fn parent(parent: &Pool) -> Self {
        // SAFETY: as in `acquire`: the parent is alive (borrowed here) and not in the middle of
        // an operation of its own, since pools are not `Sync` and no pool operation makes a
        // child; only its source is read.
        let granule = unsafe { parent.engine() }.source().granule();
        Self::Parent(NonNull::from(parent), granule)
    }
}

impl Drop for HeapSource {
    fn drop(&mut self) {
        if let Self::External(source, ..) = *self {
            // SAFETY: the pointer came from a leaked `Box` (`ChildPool::with_source`,
            // `try_with_source`), and the engine that used it has given back every chunk before
            // its source is dropped (or no engine used it: the pool it was made for could not be
            // allocated).
            drop(unsafe { Box::from_raw(source.as_ptr()) });
        }
    }
}

// SAFETY: (1) the global source upholds the contract itself; (2) a parent's `acquire_raw` takes
// chunks from the parent's own source and charges them to the parent, and `release_raw` gives
// back exactly those; the parent outlives the child, which borrows it; (3) an external source
// is an `unsafe impl` of its own and upholds the contract itself, `take_remote_frees` included,
// which only it answers (the others have no block freed elsewhere).
unsafe impl ChunkSource for HeapSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        match self {
            Self::Global(global) => global.acquire(layout),
            // SAFETY: the parent is alive (borrowed by the child) and not in the middle of an
            // operation of its own: pools are not `Sync`, and no pool operation calls into a
            // child.
            Self::Parent(parent, _) => unsafe { parent.as_ref().engine() }.acquire_raw(layout),
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_mut() }.acquire(layout),
        }
    }

    #[inline(always)]
    fn acquire_at_least(&mut self, layout: Layout, most: usize) -> Option<(NonNull<u8>, usize)> {
        match self {
            Self::Global(global) => global.acquire_at_least(layout, most),
            // A parent hands out what is asked: its own engine charges the chunk.
            Self::Parent(..) => Some((self.acquire(layout)?, layout.size())),
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_mut() }.acquire_at_least(layout, most),
        }
    }

    #[inline]
    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        match self {
            // SAFETY: forwarded from the caller.
            Self::Global(global) => unsafe { global.release(chunk, layout) },
            // SAFETY: as in `acquire`; the chunk came from the parent's `acquire_raw`.
            Self::Parent(parent, _) => unsafe {
                parent.as_ref().engine().release_raw(chunk, layout)
            },
            // SAFETY: as in `acquire`; the caller's guarantees are the source's own.
            Self::External(source, ..) => unsafe { source.as_mut().release(chunk, layout) },
        }
    }

    unsafe fn release_all_small(&mut self) -> bool {
        match self {
            // SAFETY: forwarded from the caller.
            Self::Global(global) => unsafe { global.release_all_small() },
            // A parent must hear of each chunk, to uncharge it and reuse or release it.
            Self::Parent(..) => false,
            // SAFETY: forwarded from the caller.
            Self::External(source, ..) => unsafe { source.as_mut().release_all_small() },
        }
    }

    #[inline(always)]
    fn granule(&self) -> usize {
        match self {
            Self::Global(global) => global.granule(),
            Self::Parent(_, granule) | Self::External(_, granule, _) => *granule,
        }
    }

    #[inline(always)]
    fn merges_released_chunks(&self) -> bool {
        match self {
            Self::External(_, _, merges) => *merges,
            // The global allocator's large chunks come from the system, and a parent gives its
            // child's chunks a place of its own choosing.
            Self::Global(_) | Self::Parent(..) => false,
        }
    }

    fn take_remote_frees(&mut self, out: &mut [Option<NonNull<u8>>]) -> usize {
        match self {
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_mut() }.take_remote_frees(out),
            // Neither the global allocator nor a parent pool has blocks freed elsewhere.
            Self::Global(_) | Self::Parent(..) => 0,
        }
    }

    fn rescan_remote_frees(&mut self) {
        if let Self::External(source, ..) = self {
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            unsafe { source.as_mut() }.rescan_remote_frees();
        }
    }

    fn forget_remote_frees(&mut self) {
        if let Self::External(source, ..) = self {
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            unsafe { source.as_mut() }.forget_remote_frees();
        }
    }

    fn trim(&mut self) {
        match self {
            Self::Global(global) => global.trim(),
            // What a parent keeps is the parent's to trim.
            Self::Parent(..) => {}
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_mut() }.trim(),
        }
    }

    fn discard_free(&mut self) {
        match self {
            Self::Global(global) => global.discard_free(),
            // What a parent keeps is the parent's to let go of.
            Self::Parent(..) => {}
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_mut() }.discard_free(),
        }
    }

    #[inline]
    fn kept_bytes(&self) -> usize {
        match self {
            Self::Global(global) => global.kept_bytes(),
            // What a parent keeps counts against the parent's limit, not the child's.
            Self::Parent(..) => 0,
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_ref() }.kept_bytes(),
        }
    }

    fn keep_at_most(&mut self, bytes: usize) {
        match self {
            Self::Global(global) => global.keep_at_most(bytes),
            Self::Parent(..) => {}
            // SAFETY: the source is owned by this pool and alive until it is dropped.
            Self::External(source, ..) => unsafe { source.as_mut() }.keep_at_most(bytes),
        }
    }
}

/// The operations every heap pool has, root or child: reach them through a [`HeapPool`] or a
/// [`ChildPool`], which dereference to this.
///
/// A pool is not `Sync`: one thread uses it at a time. Its blocks are plain memory and can be
/// read and written from anywhere, but only freed through the pool's thread.
///
/// # Soundness
/// The safe calls (`alloc*`, `available`, `stats`, `check`, `trim`, `child*`, and the
/// `Allocator` methods through `&Pool`) hand out only blocks that are not in use, and `trim`
/// gives back only empty chunks. Calls that take a block back (`free`, `try_free`, `realloc`,
/// `resize`, `usable_size`, the pointer-only [`free`](crate::free)) and
/// [`abandon`](Pool::abandon) are unsafe. `reset` frees every block, so it takes the
/// [`HeapPool`] or [`ChildPool`] by `&mut`: no collection can still borrow the pool, nor any
/// child, which borrows its parent.
///
/// The typed calls ([`alloc_value`](Pool::alloc_value), [`alloc_str`](Pool::alloc_str),
/// [`alloc_slice_copy`](Pool::alloc_slice_copy), [`alloc_slice_fill_with`](Pool::alloc_slice_fill_with))
/// are safe for the same reason: their `&mut` references borrow the pool, so neither `reset`
/// nor dropping the pool can run while one lives, and only an unsafe free can take the block
/// back early.
///
/// ```compile_fail,E0277
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<melon_alloc_heap::Pool>();
/// ```
#[repr(C)]
pub struct Pool {
    engine: UnsafeCell<Engine<HeapSource>>,
    /// Its place in a family that a fork must reach, if it is in one (see `family.rs`).
    pub(crate) links: Links,
}

impl Pool {
    /// Puts a pool on the heap and gives up the `Box`: its address is recorded in its chunks
    /// and used by pointer-only frees, so it must neither move nor be reborrowed uniquely, as
    /// moving a `Box` would. [`Owned`] frees it. Aborts through `handle_alloc_error`, as
    /// `Box::new` does, when there is no memory for it.
    fn boxed(source: HeapSource, limit: Option<usize>) -> Owned {
        Self::try_boxed(source, limit)
            .unwrap_or_else(|AllocError| alloc::handle_alloc_error(Layout::new::<Self>()))
    }

    /// [`boxed`](Pool::boxed), or `Err` when the global allocator has no memory for the pool,
    /// which drops `source`.
    fn try_boxed(source: HeapSource, limit: Option<usize>) -> Result<Owned, AllocError> {
        // A child serves one request or task: classes it barely uses get a page, not a chunk.
        let child = matches!(source, HeapSource::Parent(..));
        // Made in place on the heap: the engine is a kilobyte, and a child is made per request.
        let pool = NonNull::from(Box::leak(try_box(|| Self {
            engine: UnsafeCell::new(if child {
                Engine::new(source, limit).with_pages()
            } else {
                Engine::new(source, limit)
            }),
            links: Links::default(),
        })?));
        // SAFETY: the pool was just made and nothing else refers to it yet.
        unsafe { (*pool.as_ref().engine.get()).set_owner(pool.as_ptr().cast()) };
        Ok(Owned(pool))
    }

    /// The engine, for the length of one operation.
    ///
    /// # Safety
    /// No other reference to the engine is alive. This holds because a pool is not `Sync`, and
    /// every operation takes the engine once and does not call back into the same pool (its
    /// source is its parent or the global allocator, never itself or a child).
    #[allow(clippy::mut_from_ref)]
    unsafe fn engine(&self) -> &mut Engine<HeapSource> {
        // SAFETY: the caller guarantees exclusive access for the length of the borrow.
        unsafe { &mut *self.engine.get() }
    }

    /// Allocates `size` bytes aligned to 16 (Melon's `mln_alloc_m`). A `size` of 0 gets a unique
    /// 16-byte block. `None` when the limit would be passed or the system has no memory.
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(100).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 16, 0);
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    #[inline]
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc(&self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.alloc(size)
    }

    /// Like [`alloc`](Pool::alloc), with the first `size` bytes zeroed (Melon's `mln_alloc_c`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc_zeroed(100).unwrap();
    /// // SAFETY: the block holds at least 100 bytes.
    /// let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), 100) };
    /// assert!(bytes.iter().all(|&byte| byte == 0));
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.alloc_zeroed(size)
    }

    /// Allocates a block for `layout`: any power-of-two alignment up to 8 KiB (half a chunk).
    /// Larger alignments get `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::Layout;
    ///
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc_layout(Layout::from_size_align(100, 256).unwrap()).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 256, 0);
    /// assert!(pool.alloc_layout(Layout::from_size_align(64, 1 << 20).unwrap()).is_none());
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    #[inline]
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.alloc_layout(layout)
    }

    /// Resizes a block (Melon's `mln_alloc_re`). A `new_size` of 0 frees the block and returns
    /// `None`; a shrink, or a grow that fits the block, returns the same pointer; otherwise the
    /// contents move to a new block. On failure the old block is untouched.
    ///
    /// # Safety
    /// - `block` is an in-use block of this pool.
    /// - After a move or a free, the old pointer is not used again.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(16).unwrap();
    /// // SAFETY: the block holds 16 bytes.
    /// unsafe { block.as_ptr().write_bytes(7, 16) };
    /// // SAFETY: an in-use block of `pool`; the old pointer is not used after the move.
    /// let grown = unsafe { pool.realloc(block, 1000) }.unwrap();
    /// // SAFETY: the first 16 bytes moved with the block.
    /// assert_eq!(unsafe { grown.as_ptr().add(15).read() }, 7);
    /// // SAFETY: a size of 0 frees the block, which is not used again.
    /// assert!(unsafe { pool.realloc(grown, 0) }.is_none());
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn realloc(&self, block: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: see `engine`; the block contract is forwarded from the caller.
        unsafe { self.engine().realloc(block, new_size) }
    }

    /// Resizes a block to `new_layout`, in place when the block already holds that many bytes at
    /// that alignment, otherwise by moving it; a large block left more than twice as long as it
    /// needs moves to a shorter one if it can, where [`realloc`](Pool::realloc) keeps it. On
    /// failure the old block is untouched.
    ///
    /// # Safety
    /// As for [`realloc`](Pool::realloc).
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::Layout;
    ///
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// let aligned = Layout::from_size_align(64, 512).unwrap();
    /// // SAFETY: an in-use block of `pool`; it is not used after the move.
    /// let moved = unsafe { pool.resize(block, aligned) }.unwrap();
    /// assert_eq!(moved.as_ptr() as usize % 512, 0);
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(moved) };
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn resize(&self, block: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: see `engine`; the block contract is forwarded from the caller.
        unsafe { self.engine().resize(block, new_layout) }
    }

    /// Frees a block. Debug builds check the pointer against its chunk's header and abort with a
    /// message on a double free or an interior pointer (see [`Engine::free`] for what they cannot
    /// catch); use [`try_free`](Pool::try_free) for an error instead.
    ///
    /// [`Engine::free`]: melon_alloc_core::Engine::free
    ///
    /// # Safety
    /// - `block` is an in-use block of this pool.
    /// - Nothing uses the block afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    #[inline]
    pub unsafe fn free(&self, block: NonNull<u8>) {
        // SAFETY: see `engine`; the block contract is forwarded from the caller.
        unsafe { self.engine().free(block) }
    }

    /// Frees a block after checking it is an in-use block of this pool, at its start. Costs a
    /// walk over the pool's chunks.
    ///
    /// # Errors
    /// [`FreeError`] for a pointer of another pool, an interior pointer, or a block not in use
    /// (a double free; a large block's chunk went back with its first free, so its second is a
    /// pointer of no chunk of this pool, until the pool takes that memory again); nothing is
    /// changed.
    ///
    /// # Safety
    /// If `block` is an in-use block of this pool, nothing uses it afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// // SAFETY: the block came from `pool` and is not used again.
    /// assert_eq!(unsafe { pool.try_free(block) }, Ok(()));
    /// // A second free is refused and changes nothing.
    /// // SAFETY: `try_free` checks the pointer before it frees anything.
    /// assert!(unsafe { pool.try_free(block) }.is_err());
    /// pool.check().unwrap();
    /// ```
    pub unsafe fn try_free(&self, block: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: see `engine`; the block contract is forwarded from the caller.
        unsafe { self.engine().try_free(block) }
    }

    /// The bytes a block can hold: its size class, or a large block's usable length. With the
    /// `valgrind` feature, memcheck lets the caller use the bytes past the size it asked for only
    /// once it has asked this.
    ///
    /// # Safety
    /// `block` is an in-use block of this pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(100).unwrap();
    /// // 100 bytes round up to the 112-byte class.
    /// // SAFETY: an in-use block of `pool`.
    /// assert_eq!(unsafe { pool.usable_size(block) }, 112);
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    pub unsafe fn usable_size(&self, block: NonNull<u8>) -> usize {
        // SAFETY: see `engine`; the block contract is forwarded from the caller.
        unsafe { self.engine().usable_size(block) }
    }

    /// Bytes that can still be taken before the limit (Melon's `mln_alloc_available_capacity`):
    /// the limit minus the bytes the pool holds from its parent or the system. `None` when the
    /// pool has no limit. It is this pool's own limit only: a parent at its limit, or a source
    /// out of memory, refuses sooner.
    ///
    /// # Examples
    ///
    /// ```
    /// let limited = melon_alloc_heap::HeapPool::with_limit(1 << 20);
    /// assert_eq!(limited.available(), Some(1 << 20));
    /// assert_eq!(melon_alloc_heap::HeapPool::new().available(), None);
    /// ```
    pub fn available(&self) -> Option<usize> {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.available()
    }

    /// A snapshot of the pool's counters. Costs a walk over its chunk headers.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// let stats = pool.stats();
    /// assert_eq!((stats.live_blocks, stats.bytes_in_use), (1, 64));
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    pub fn stats(&self) -> Stats {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.stats()
    }

    /// Walks every chunk and free list and checks the pool's invariants.
    ///
    /// # Errors
    /// The first broken invariant, with the chunk it is in.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// assert_eq!(pool.check(), Ok(()));
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    pub fn check(&self) -> Result<(), CheckError> {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.check()
    }

    /// Gives back to the parent or the system the empty chunks the pool keeps for reuse.
    /// Returns the bytes given back.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// // The emptied chunk is kept for the next allocation until a trim gives it back.
    /// assert_eq!(pool.trim(), 16 * 1024);
    /// assert_eq!(pool.stats().bytes_held, 0);
    /// ```
    pub fn trim(&self) -> usize {
        // SAFETY: see `engine`.
        unsafe { self.engine() }.trim()
    }

    /// Forgets every chunk the pool holds, without touching or giving back any: see
    /// [`Engine::abandon`](melon_alloc_core::Engine::abandon). A shared pool does this to the copy
    /// of each of its child pools that a `fork` leaves in the new process, so that the copy hands
    /// out nothing the original may hand out too. Blocks handed out before are no longer blocks
    /// of this pool.
    ///
    /// # Safety
    /// No block the pool handed out before the call is freed, resized or checked afterwards,
    /// through the pool, its `Allocator`, or [`free`]: the pool no longer lists their chunks, and
    /// acting on them would corrupt its lists and counts. The chunks are never given back; their
    /// memory is lost unless something else owns it (the original pool, in the parent of a fork).
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let _forgotten = pool.alloc(64).unwrap();
    /// // SAFETY: `_forgotten` is never freed or used again.
    /// unsafe { pool.abandon() };
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// pool.check().unwrap();
    /// ```
    ///
    /// Safe code cannot call it, for a collection in the pool would free its buffer into lists
    /// that no longer hold it:
    ///
    /// ```compile_fail,E0133
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let mut buffer = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(20_000, &*pool);
    /// buffer.push(1);
    /// pool.abandon();
    /// drop(buffer);
    /// ```
    pub unsafe fn abandon(&self) {
        // SAFETY: (1) see `engine`; (2) the caller promises that no earlier block comes back.
        unsafe { self.engine().abandon() };
    }

    /// Makes this pool the first of a family that a fork must reach whole: every pool made from
    /// it, at any depth, is linked under it while it lives, so that
    /// [`abandon_every_family`](crate::abandon_every_family) finds them all. For a pool whose
    /// chunks lie in memory a forked process shares, as the shared-memory crate's child pools
    /// do.
    ///
    /// # Examples
    /// ```
    /// let root = melon_alloc_heap::HeapPool::new();
    /// root.track_family();
    /// let child = root.child();
    /// let grandchild = child.child();
    /// assert!(grandchild.alloc(64).is_some());
    /// let families = melon_alloc_heap::lock_families();
    /// // SAFETY: the block above is never freed or used again, nor are the pools used
    /// // meanwhile, and the families' lock is held.
    /// unsafe { melon_alloc_heap::abandon_every_family() };
    /// drop(families);
    /// assert_eq!(grandchild.stats().chunks, 0);
    /// ```
    #[doc(hidden)]
    pub fn track_family(&self) {
        // SAFETY: every pool lives in a box of its own, and unlinks itself before it goes.
        unsafe { family::found(self) };
    }

    /// A pool without a limit whose chunks come from this one (Melon's `mln_alloc_init(parent,
    /// 0)`). The child borrows this pool, and gives all its chunks back when dropped.
    ///
    /// # Examples
    /// ```
    /// let root = melon_alloc_heap::HeapPool::new();
    /// let child = root.child();
    /// let block = child.alloc(64).unwrap();
    /// assert_eq!(root.stats().bytes_lent, melon_alloc_core::CHUNK_SIZE);
    /// // SAFETY: the block came from `child` and is not used again.
    /// unsafe { child.free(block) };
    /// ```
    ///
    /// The borrow keeps the parent alive as long as the child:
    ///
    /// ```compile_fail,E0505
    /// let root = melon_alloc_heap::HeapPool::new();
    /// let child = root.child();
    /// drop(root);
    /// child.alloc(64);
    /// ```
    #[must_use = "a child pool dropped at once gives its chunks back and serves nothing"]
    pub fn child(&self) -> ChildPool<'_> {
        ChildPool::new(self, None)
    }

    /// A pool whose chunks come from this one and that holds at most `limit` bytes of them.
    /// Its chunks also count against this pool's limit.
    ///
    /// # Examples
    /// ```
    /// let root = melon_alloc_heap::HeapPool::new();
    /// let request = root.child_with_limit(32 << 10);
    /// assert!(request.alloc(10_000).is_some());
    /// assert!(request.alloc(40_000).is_none(), "past the child's limit");
    /// assert!(root.alloc(40_000).is_some(), "the root has none");
    /// ```
    #[must_use = "a child pool dropped at once gives its chunks back and serves nothing"]
    pub fn child_with_limit(&self, limit: usize) -> ChildPool<'_> {
        ChildPool::new(self, Some(limit))
    }

    /// [`child`](Pool::child), or `Err` when the global allocator has no memory for the child's
    /// bookkeeping, where `child` aborts as `Box::new` does.
    ///
    /// # Examples
    /// ```
    /// let root = melon_alloc_heap::HeapPool::new();
    /// let child = root.try_child()?;
    /// assert!(child.alloc(64).is_some());
    /// # Ok::<(), melon_alloc_heap::AllocError>(())
    /// ```
    pub fn try_child(&self) -> Result<ChildPool<'_>, AllocError> {
        ChildPool::try_new(self, None)
    }

    /// [`child_with_limit`](Pool::child_with_limit), or `Err` when the global allocator has no
    /// memory for the child's bookkeeping, where `child_with_limit` aborts as `Box::new` does.
    ///
    /// # Examples
    /// ```
    /// let root = melon_alloc_heap::HeapPool::new();
    /// let request = root.try_child_with_limit(32 << 10)?;
    /// assert!(request.alloc(40_000).is_none(), "past the child's limit");
    /// # Ok::<(), melon_alloc_heap::AllocError>(())
    /// ```
    pub fn try_child_with_limit(&self, limit: usize) -> Result<ChildPool<'_>, AllocError> {
        ChildPool::try_new(self, Some(limit))
    }

    /// Frees every block at once, keeping the chunks for reuse.
    ///
    /// # Safety
    /// No block of the pool is used afterwards. ([`HeapPool::reset`] and [`ChildPool::reset`]
    /// make this safe by taking the pool by `&mut`, so no borrow of its blocks can be alive.)
    unsafe fn reset(&self) {
        // SAFETY: (1) see `engine`; (2) the caller promises that no block is used afterwards.
        unsafe { self.engine().reset() };
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("stats", &self.stats()).finish()
    }
}

/// A pool on the heap, owned through a raw pointer so that the pointers its chunks hold stay
/// valid however the handle moves.
struct Owned(NonNull<Pool>);

impl Owned {
    fn get(&self) -> &Pool {
        // SAFETY: the pool lives until `Owned` is dropped, and is only ever shared.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        family::leave(self.get());
        // SAFETY: the pointer came from a `Box` leaked in `Pool::try_boxed`, and the handle that
        // owns it is going away, along with every borrow of the pool.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// A root heap pool: its chunks come from the global allocator.
///
/// All the pool's operations are on [`Pool`], which this dereferences to. Dropping the pool
/// gives back every chunk at once (Melon's `mln_alloc_destroy`), without visiting blocks.
///
/// ```
/// use melon_alloc_heap::HeapPool;
///
/// let root = HeapPool::with_limit(64 << 10);
/// let child = root.child();
/// let block = child.alloc(200).unwrap();
/// assert!(root.available().unwrap() < 64 << 10);
/// // SAFETY: the block came from `child` and is not used again.
/// unsafe { child.free(block) };
/// drop(child);
/// assert_eq!(root.available(), Some(64 << 10));
/// ```
///
/// # Soundness
/// `HeapPool` is `Send`: its engine and slabs move with it, and it cannot move while a child or
/// a collection borrows it. [`reset`](HeapPool::reset) takes `&mut self` for the same reason.
pub struct HeapPool {
    pool: Owned,
}

// SAFETY: a root pool owns its engine and its global source; its chunks' memory goes wherever it
// goes. Children borrow it, so it cannot move while one exists.
unsafe impl Send for HeapPool {}

impl HeapPool {
    /// A pool without a limit over the global allocator (Melon's `mln_alloc_init(NULL, 0)`).
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let block = pool.alloc(64).unwrap();
    /// assert_eq!(pool.available(), None, "no limit");
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// ```
    pub fn new() -> Self {
        Self { pool: Pool::boxed(HeapSource::Global(GlobalSource::new()), None) }
    }

    /// A pool over the global allocator that holds at most `limit` bytes (Melon's
    /// `mln_alloc_init(NULL, limit)`).
    ///
    /// Freed large blocks are kept for reuse as in any root ([`GlobalSource`]), within the
    /// limit: the bytes the pool holds and the large chunks it keeps never pass `limit`
    /// together, and kept chunks are given back first when a new one would. (Freed small chunks
    /// stay in the source's slabs, uncounted, while any small chunk is out, and in its newest
    /// slab after.)
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::with_limit(64 << 10);
    /// assert_eq!(pool.available(), Some(64 << 10));
    /// assert!(pool.alloc(100 << 10).is_none(), "past the limit");
    /// ```
    pub fn with_limit(limit: usize) -> Self {
        Self { pool: Pool::boxed(HeapSource::Global(GlobalSource::new()), Some(limit)) }
    }

    /// [`new`](HeapPool::new), or `Err` when the global allocator has no memory for the pool's
    /// bookkeeping, where `new` aborts as `Box::new` does.
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::try_new()?;
    /// assert!(pool.alloc(64).is_some());
    /// # Ok::<(), melon_alloc_heap::AllocError>(())
    /// ```
    pub fn try_new() -> Result<Self, AllocError> {
        Ok(Self { pool: Pool::try_boxed(HeapSource::Global(GlobalSource::new()), None)? })
    }

    /// [`with_limit`](HeapPool::with_limit), or `Err` when the global allocator has no memory
    /// for the pool's bookkeeping, where `with_limit` aborts as `Box::new` does.
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::try_with_limit(64 << 10)?;
    /// assert_eq!(pool.available(), Some(64 << 10));
    /// # Ok::<(), melon_alloc_heap::AllocError>(())
    /// ```
    pub fn try_with_limit(limit: usize) -> Result<Self, AllocError> {
        Ok(Self { pool: Pool::try_boxed(HeapSource::Global(GlobalSource::new()), Some(limit))? })
    }

    /// Frees every block at once, keeping the chunks for reuse. Costs O(chunks).
    ///
    /// # Examples
    /// ```
    /// let mut pool = melon_alloc_heap::HeapPool::new();
    /// for _ in 0..100 {
    ///     let _ = pool.alloc(64).unwrap();
    /// }
    /// pool.reset();
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    pub fn reset(&mut self) {
        // SAFETY: `&mut self` rules out live borrows of the pool, and children borrow it.
        unsafe { self.pool.get().reset() }
    }
}

impl Default for HeapPool {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for HeapPool {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        self.pool.get()
    }
}

impl fmt::Debug for HeapPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HeapPool").field(self.pool.get()).finish()
    }
}

/// A pool whose chunks come from a parent pool, which it borrows.
///
/// All the pool's operations are on [`Pool`], which this dereferences to. Dropping it gives every
/// chunk back to the parent, whose [`available`](Pool::available) is then what it was before
/// the child existed.
///
/// # Soundness
/// A child borrows its parent, so the parent outlives it. It is neither `Send` nor `Sync`: it
/// takes chunks from its parent's engine without a lock. [`with_source`](ChildPool::with_source)
/// is safe because [`ChunkSource`] is an unsafe trait: its implementation vouches for the chunks.
///
/// ```compile_fail,E0277
/// fn send<T: Send>(_: T) {}
/// let root = melon_alloc_heap::HeapPool::new();
/// send(root.child());
/// ```
///
/// A parent declared after its child would be dropped first, at the end of the scope, and the
/// child would then give its chunks back to it; that does not compile:
///
/// ```compile_fail,E0597
/// let child;
/// let root = melon_alloc_heap::HeapPool::new();
/// child = root.child();
/// let _value = child.alloc_value(5u64).unwrap();
/// ```
pub struct ChildPool<'parent> {
    pool: Owned,
    _parent: PhantomData<&'parent Pool>,
}

impl<'parent> ChildPool<'parent> {
    fn new(parent: &'parent Pool, limit: Option<usize>) -> Self {
        Self::try_new(parent, limit)
            .unwrap_or_else(|AllocError| alloc::handle_alloc_error(Layout::new::<Pool>()))
    }

    fn try_new(parent: &'parent Pool, limit: Option<usize>) -> Result<Self, AllocError> {
        let pool = Pool::try_boxed(HeapSource::parent(parent), limit)?;
        // SAFETY: both pools are alive and boxed, and the child is new.
        unsafe { family::adopt(parent, pool.0) };
        Ok(Self { pool, _parent: PhantomData })
    }

    /// A pool whose chunks come from `source`: a shared-memory pool, a region, anything that
    /// implements [`ChunkSource`]. The pool owns the source, and may borrow from `'parent` through
    /// it.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::RegionSource;
    /// use melon_alloc_heap::ChildPool;
    ///
    /// static mut ARENA: [u8; 256 * 1024] = [0; 256 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let region = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 256 * 1024) };
    /// let pool = ChildPool::with_source(Box::new(region), None);
    /// assert!(pool.alloc(1000).is_some());
    /// ```
    pub fn with_source(source: Box<dyn ChunkSource + 'parent>, limit: Option<usize>) -> Self {
        Self::over(source, limit)
            .unwrap_or_else(|AllocError| alloc::handle_alloc_error(Layout::new::<Pool>()))
    }

    /// [`with_source`](ChildPool::with_source) with the source by value, or `Err` (the source
    /// dropped) when the global allocator has no memory for the source or the pool's
    /// bookkeeping, where `with_source` and `Box::new` abort.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::RegionSource;
    /// use melon_alloc_heap::ChildPool;
    ///
    /// static mut ARENA: [u8; 256 * 1024] = [0; 256 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let region = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 256 * 1024) };
    /// let pool = ChildPool::try_with_source(region, None)?;
    /// assert!(pool.alloc(1000).is_some());
    /// # Ok::<(), melon_alloc_heap::AllocError>(())
    /// ```
    pub fn try_with_source<S: ChunkSource + 'parent>(
        source: S,
        limit: Option<usize>,
    ) -> Result<Self, AllocError> {
        Self::over(try_box(|| source)?, limit)
    }

    /// A pool over `source`, which it owns from now on, or `Err` when there is no memory for
    /// the pool, which drops the source.
    fn over(
        source: Box<dyn ChunkSource + 'parent>,
        limit: Option<usize>,
    ) -> Result<Self, AllocError> {
        let (granule, merges) = (source.granule(), source.merges_released_chunks());
        let source: NonNull<dyn ChunkSource + 'parent> = NonNull::from(Box::leak(source));
        // SAFETY: only the lifetime changes; the `ChildPool` keeps `'parent` in its type, so the
        // source is not used after anything it borrows has gone.
        let source: NonNull<dyn ChunkSource> = unsafe { core::mem::transmute(source) };
        Ok(Self {
            pool: Pool::try_boxed(HeapSource::External(source, granule, merges), limit)?,
            _parent: PhantomData,
        })
    }

    /// Frees every block at once, keeping the chunks for reuse. Costs O(chunks).
    ///
    /// # Examples
    /// ```
    /// let root = melon_alloc_heap::HeapPool::new();
    /// let mut child = root.child();
    /// let _ = child.alloc(64).unwrap();
    /// child.reset();
    /// assert_eq!(child.stats().live_blocks, 0);
    /// ```
    pub fn reset(&mut self) {
        // SAFETY: `&mut self` rules out live borrows of the pool, and children borrow it.
        unsafe { self.pool.get().reset() }
    }
}

/// Empty, and there for the drop checker: a type with a `Drop` impl that names `'parent` keeps
/// the parent borrowed until the child is dropped, so that a parent declared after its child
/// (and so dropped first) is refused, rather than the child giving its chunks back to a parent
/// that is gone. The chunks go back in `Owned`'s drop, which runs right after this.
impl Drop for ChildPool<'_> {
    fn drop(&mut self) {}
}

impl Deref for ChildPool<'_> {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        self.pool.get()
    }
}

impl fmt::Debug for ChildPool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChildPool").field(self.pool.get()).finish()
    }
}

/// Frees a block of any heap pool, found from the pointer alone (Melon's `mln_alloc_free`).
///
/// # Safety
/// - `block` is an in-use block of a live [`HeapPool`] or [`ChildPool`] (not of a
///   [`LockedPool`](melon_alloc_core::LockedPool)), and nothing uses it afterwards.
/// - No operation on that pool is in progress on another thread.
///
/// # Examples
/// ```
/// let root = melon_alloc_heap::HeapPool::new();
/// let child = root.child();
/// let block = child.alloc(64).unwrap();
/// // SAFETY: the block is in use in `child`, which lives, and is not used again.
/// unsafe { melon_alloc_heap::free(block) };
/// assert_eq!(child.stats().live_blocks, 0);
/// ```
pub unsafe fn free(block: NonNull<u8>) {
    // SAFETY: the caller promises a block of a live heap pool, whose chunk names its pool.
    let owner = unsafe { melon_alloc_core::plumbing::owner_of(block) }.cast::<Pool>();
    // SAFETY: (1) heap pools record the pointer to their `Pool` in their chunks (see
    // `Pool::boxed`), and the pool is alive; (2) the caller rules out concurrent
    // use, so this is the only access to the pool.
    unsafe { (*owner).free(block) }
}
