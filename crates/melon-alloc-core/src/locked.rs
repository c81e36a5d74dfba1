//! A pool behind a spin lock, for use from several threads or as the global allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

#[cfg(not(target_os = "none"))]
use crate::engine::Fit;
use crate::spin::SpinLock;
use crate::stash::{ChunkStash, NoStripes, Stripes};
#[cfg(feature = "pages")]
use crate::SMALL_CHUNK;
use crate::{CheckError, ChunkSource, Engine, FreeError, Stats, TypedAllocError};

/// An [`Engine`] behind a spin lock: `Sync`, and usable as a `#[global_allocator]` or as an
/// `allocator_api2` [`Allocator`](allocator_api2::alloc::Allocator) shared between threads.
///
/// The spin lock needs no operating system, so this works in `no_std` code. Every call takes the
/// lock for the length of one operation; [`with`](LockedPool::with) holds it for several.
/// `GlobalAlloc::realloc` of a block that cannot grow or shrink where it is takes it to try
/// that, again for the allocation and again for the free, and copies the block in between, with
/// the lock free. On bare metal (`target_os = "none"`), where firmware counts code bytes, it
/// keeps a shrunk block where it is, whole, and moves a grown one; [`with`](LockedPool::with)'s
/// [`resize`](LockedEngine::resize) gives a shrunk large block's tail back there too.
///
/// As a `#[global_allocator]`, the source must not itself allocate from the global allocator.
/// As a `GlobalAlloc`, the pool serves a layout aligned to a chunk
/// ([`CHUNK_SIZE`](crate::CHUNK_SIZE)) or more, which no block of the engine can be, with a
/// chunk of its own from the source, counted in `bytes_held` and `bytes_lent` and against the
/// limit; so pools that take chunk-aligned slabs from the global allocator work on top of it.
/// Such a chunk goes back through `dealloc` alone: [`reset`](LockedPool::reset) and dropping the
/// pool leave it out, still counted, as they leave a forgotten child's chunks, and
/// [`free`](LockedPool::free) does not take it. All of this takes the `chunk-aligned` feature,
/// on by default; without it, such a layout is refused with a null.
///
/// # Soundness
/// Every safe call that reaches the engine (`alloc`, `alloc_zeroed`, `alloc_layout`, `available`,
/// `stats`, `check`, a child's first chunk, the `Allocator` methods through `&LockedPool`) takes
/// the lock and hands out only blocks that are not in use; `new` and `child` touch no engine but
/// their own new one. [`with`](LockedPool::with) gives a [`LockedEngine`], which cannot reset or
/// replace the engine. Freeing by pointer (`free`, `try_free`, `GlobalAlloc::dealloc`) is unsafe.
/// [`reset`](LockedPool::reset) takes `&mut self`, which no collection, thread or child borrowing
/// the pool can hold at the time. Calling the pool again from inside `with` in a way that takes the
/// lock waits for it forever (`tests/reentry.rs`), and so does a call from an interrupt or signal
/// handler that ran while the code it interrupted held the lock, which a firmware's handlers must
/// not make (a firmware that allocates in a handler wraps the pool in a `GlobalAlloc` of its own
/// that masks interrupts around each call); in a pool that is the `#[global_allocator]`, allocating
/// inside `with` in any way (a panic's message among them) is such a call. Making a child takes no
/// lock, and formatting the pool with `{:?}` only tries it: both come back. The pool's own paths
/// (`free`, `GlobalAlloc::dealloc`, `Allocator::grow`) let go of the lock before a debug build
/// stops the process on a block freed twice, so that its message can be made. (A block aligned to a
/// chunk or more, a chunk of its own, is checked only against the bytes the pool has lent: freed
/// twice while another such block is out, its chunk goes back twice.)
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// std::thread::scope(|scope| {
///     for size in [64, 1000] {
///         let pool = &pool;
///         scope.spawn(move || {
///             let block = pool.alloc(size).unwrap();
///             // SAFETY: the block came from `pool` and is not used again.
///             unsafe { pool.free(block) };
///         });
///     }
/// });
/// // Each size got a chunk of its class, kept for reuse now that its block is free.
/// assert_eq!(pool.stats().chunks, 2);
/// ```
///
/// The second type parameter is what the pool keeps for its children's threads: [`Stripes`],
/// the default, for a pool made by [`new`](LockedPool::new), and [`NoStripes`] for a child
/// ([`LockedChild`]), whose own children always take the child's lock.
pub struct LockedPool<S: ChunkSource, K: ChunkStash = Stripes> {
    engine: SpinLock<Engine<S>>,
    /// Free chunks kept for children, by thread, where the source names stripes and the pool has
    /// no limit ([`ChunkSource::stash_stripe`]): [`Stripes`], or [`NoStripes`] for a child.
    #[cfg_attr(not(feature = "pages"), allow(dead_code, reason = "empty without pages"))]
    stash: K,
    /// Whether the pool keeps chunks in its stash: it has no limit, which stashed chunks, idle
    /// but held, would count against.
    #[cfg(feature = "pages")]
    stashes: bool,
}

impl<S: ChunkSource> LockedPool<S> {
    /// Makes a locked pool over `source` with an optional limit in bytes.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // A `const fn`, so a pool can be a `static`.
    /// static POOL: LockedPool<RegionSource> = LockedPool::new(
    ///     // SAFETY: nothing but `POOL` ever touches `ARENA`.
    ///     unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 1 << 16) },
    ///     Some(2 * CHUNK_SIZE),
    /// );
    /// assert!(POOL.alloc(64).is_some());
    /// assert_eq!(POOL.available(), Some(CHUNK_SIZE));
    /// ```
    #[cfg(not(melon_loom))]
    pub const fn new(source: S, limit: Option<usize>) -> Self {
        Self {
            engine: SpinLock::new(Engine::new(source, limit)),
            stash: Stripes::new(),
            #[cfg(feature = "pages")]
            stashes: limit.is_none(),
        }
    }

    /// Makes a locked pool over `source` with an optional limit in bytes: the build for loom's
    /// models, whose atomics cannot be made in a `const fn`. Hidden, as everything that exists
    /// only for loom is: the `const` one above is the documented `new`.
    #[cfg(melon_loom)]
    #[doc(hidden)]
    pub fn new(source: S, limit: Option<usize>) -> Self {
        Self::locking(Engine::new(source, limit), limit, Stripes::new())
    }
}

impl<S: ChunkSource, K: ChunkStash> LockedPool<S, K> {
    /// `engine` behind a lock, with `stash`, which it uses if it has no `limit`.
    fn locking(engine: Engine<S>, limit: Option<usize>, stash: K) -> Self {
        #[cfg(not(feature = "pages"))]
        let _ = limit;
        Self {
            engine: SpinLock::new(engine),
            stash,
            #[cfg(feature = "pages")]
            stashes: limit.is_none(),
        }
    }

    /// The pool's stash and the stripe of it a child on the calling thread uses, if the pool
    /// keeps one.
    #[inline]
    #[cfg(feature = "pages")]
    fn stash_here(&self) -> Option<(&Stripes, usize)> {
        let stripes = self.stash.stripes().filter(|_| self.stashes)?;
        Some((stripes, S::stash_stripe()?))
    }

    /// The pool's stash, if it keeps one: none for a child, which has no stripes, nor for a pool
    /// with a limit. Whether the calling thread names a stripe does not matter here: what is
    /// in the stash goes back whichever thread drops, resets or trims the pool (over a source
    /// that names no stripes, the stash stays empty).
    #[inline]
    #[cfg(feature = "pages")]
    fn kept_stash(&self) -> Option<&Stripes> {
        self.stash.stripes().filter(|_| self.stashes)
    }

    /// Runs `f` with the lock held, for several operations in a row. `f` gets a
    /// [`LockedEngine`]: the engine's operations that cannot break a block handed out through
    /// another path (an `Allocator` borrow, another thread's block).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let (a, b) = pool.with(|engine| (engine.alloc(64).unwrap(), engine.alloc(64).unwrap()));
    /// assert_ne!(a, b);
    /// pool.with(|engine| {
    ///     // SAFETY: both blocks came from this pool and are not used again.
    ///     unsafe { engine.free(a) };
    ///     // SAFETY: as above.
    ///     unsafe { engine.free(b) };
    /// });
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    pub fn with<R>(&self, f: impl FnOnce(&mut LockedEngine<'_, S>) -> R) -> R {
        self.engine.with(|engine| {
            f(&mut LockedEngine {
                engine,
                #[cfg(feature = "pages")]
                stash: self.kept_stash(),
            })
        })
    }

    /// Allocates `size` bytes aligned to 16; see [`Engine::alloc`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.alloc(100).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 16, 0);
    /// assert_eq!(pool.stats().live_blocks, 1);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.engine.with(|engine| engine.alloc(size))
    }

    /// Allocates a block for `layout`; see [`Engine::alloc_layout`].
    ///
    /// # Examples
    /// ```
    /// # use core::alloc::Layout;
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let layout = Layout::from_size_align(64, 64).unwrap();
    /// let block = pool.alloc_layout(layout).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 64, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.engine.with(|engine| engine.alloc_layout(layout))
    }

    /// Allocates `size` bytes aligned to 16, the first `size` of them zeroed; see
    /// [`Engine::alloc_zeroed`].
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0xFF; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.alloc_zeroed(64).unwrap();
    /// // SAFETY: the block holds 64 bytes, all zero.
    /// assert_eq!(unsafe { block.as_ptr().add(63).read() }, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        self.engine.with(|engine| engine.alloc_zeroed(size))
    }

    /// Frees a block without checking it, in O(1) under the lock; see [`Engine::free`] for what
    /// a debug build checks. Use [`try_free`](LockedPool::try_free) for an error instead.
    ///
    /// # Safety
    /// - `block` is an in-use block of this pool, and not one that `GlobalAlloc` gave a layout
    ///   aligned to a chunk or more (a chunk of its own, which `dealloc` takes back).
    /// - Nothing uses the block afterwards.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.alloc(100).unwrap();
    /// // SAFETY: the block came from this pool and is not used again.
    /// unsafe { pool.free(block) };
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    #[inline]
    pub unsafe fn free(&self, block: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        let freed = self.engine.with(|engine| unsafe { engine.free_reporting(block) });
        // After the lock: stopping makes a message, which may allocate in this very pool.
        crate::engine::stop_if_invalid(freed);
    }

    /// Frees a block after checking it; see [`Engine::try_free`].
    ///
    /// # Errors
    /// [`FreeError`] says why the pointer was refused; nothing changed.
    ///
    /// # Safety
    /// As for [`Engine::try_free`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{FreeError, LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let child = pool.child();
    /// let block = pool.alloc(64).unwrap();
    /// // SAFETY: the block is no block of `child`, which finds so and changes nothing.
    /// let refused = unsafe { child.try_free(block) };
    /// assert_eq!(refused, Err(FreeError::Foreign { addr: block.as_ptr() as usize }));
    /// // SAFETY: the block came from `pool` and is not used again.
    /// assert_eq!(unsafe { pool.try_free(block) }, Ok(()));
    /// ```
    pub unsafe fn try_free(&self, block: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: forwarded from the caller.
        self.engine.with(|engine| unsafe { engine.try_free(block) })
    }

    /// Frees every block at once, keeping the chunks for reuse; see [`Engine::reset`]. Costs
    /// O(chunks). A block of a chunk of its own, which `GlobalAlloc` gives a layout aligned to a
    /// chunk or more, is not among them: it goes back only through `dealloc`.
    ///
    /// It takes `&mut self` because a pool shared by `&` may have blocks in use anywhere: in a
    /// collection that borrows it as its `Allocator`, in another thread, in a child. `&mut`
    /// rules all of those out, so no block can be used after it is handed out again.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let mut pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let _forgotten = pool.alloc(64).unwrap();
    /// pool.reset();
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// pool.check().unwrap();
    /// ```
    ///
    /// A collection in the pool, which holds it as its `Allocator` by `&`, keeps it from being
    /// reset:
    ///
    /// ```compile_fail,E0502
    /// use core::alloc::Layout;
    ///
    /// use allocator_api2::alloc::Allocator;
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let mut pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let allocator = &pool;
    /// let buffer = allocator.allocate(Layout::new::<u64>()).unwrap();
    /// pool.reset();
    /// // SAFETY: the buffer came from `allocator` with this layout.
    /// unsafe { allocator.deallocate(buffer.cast(), Layout::new::<u64>()) };
    /// ```
    pub fn reset(&mut self) {
        self.engine.with(|engine| {
            // Stashed chunks go back first, so that the reset finds them as lent chunks that
            // came back.
            #[cfg(feature = "pages")]
            give_back_stash(engine, self.kept_stash());
            // SAFETY: `&mut self` means nothing borrows the pool, so no block of it is used
            // again (a pointer kept from `alloc` can only be used by unsafe code, whose caller
            // answers for it); a child, which borrows its parent, is gone or was forgotten, and
            // the chunks a forgotten one holds stay lent: the reset leaves lent chunks alone.
            unsafe { engine.reset() }
        });
    }

    /// A pool without a limit whose chunks come from this one, through its lock. See
    /// [`LockedChild`] for how it behaves.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let root = LockedPool::new(RegionSource::from_static(region), None);
    /// let child = root.child();
    /// let block = child.alloc(64).unwrap();
    /// assert_eq!(root.stats().bytes_lent, CHUNK_SIZE);
    /// // SAFETY: the block came from `child` and is not used again.
    /// unsafe { child.free(block) };
    /// drop(child);
    /// assert_eq!(root.stats().bytes_lent, 0);
    /// ```
    ///
    /// The child is returned by value, and may move like any value: its chunks name the address
    /// its engine had when it took them ([the engine's identity](crate::Engine#identity)), so
    /// once moved it still frees and checks its blocks by its own lists, and only
    /// [`check`](LockedPool::check) tells, with [`Problem::WrongOwner`](crate::Problem::WrongOwner).
    ///
    /// The child borrows its parent, which cannot go, nor be reset, while the child lives:
    ///
    /// ```compile_fail,E0505
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let root = LockedPool::new(RegionSource::from_static(region), None);
    /// let child = root.child();
    /// drop(root);
    /// child.alloc(64);
    /// ```
    #[must_use = "a child pool dropped at once gives its chunks back and serves nothing"]
    pub fn child(&self) -> LockedChild<'_, S, K> {
        let engine = Engine::new(LockedParent::of(self), None).with_pages();
        LockedPool::locking(engine, None, NoStripes)
    }

    /// A pool whose chunks come from this one, through its lock, and that holds at most `limit`
    /// bytes of them. Its chunks also count against this pool's limit.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let root = LockedPool::new(RegionSource::from_static(region), None);
    /// let child = root.child_with_limit(CHUNK_SIZE);
    /// assert!(child.alloc(64).is_some());
    /// assert!(child.alloc(2 * CHUNK_SIZE).is_none());
    /// assert_eq!(child.available(), Some(0));
    /// ```
    #[must_use = "a child pool dropped at once gives its chunks back and serves nothing"]
    pub fn child_with_limit(&self, limit: usize) -> LockedChild<'_, S, K> {
        let engine = Engine::new(LockedParent::of(self), Some(limit)).with_pages();
        LockedPool::locking(engine, Some(limit), NoStripes)
    }

    /// Bytes left under the limit; see [`Engine::available`]. It is this pool's own limit only:
    /// for a child, its parent at its limit, or the root's source out of memory, refuses sooner.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), Some(2 * CHUNK_SIZE));
    /// let _block = pool.alloc(64).unwrap();
    /// assert_eq!(pool.available(), Some(CHUNK_SIZE));
    /// ```
    pub fn available(&self) -> Option<usize> {
        self.engine.with(|engine| engine.available())
    }

    /// The engine's counters; see [`Engine::stats`]. Chunks the pool keeps for its children's
    /// threads ([`ChunkSource::stash_stripe`]) are held, not lent, and counted in `chunks`. While
    /// children on other threads take and give back chunks, the figures are of a moment.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let _block = pool.alloc(100).unwrap();
    /// let stats = pool.stats();
    /// assert_eq!((stats.live_blocks, stats.bytes_in_use), (1, 112));
    /// assert_eq!(stats.bytes_held, CHUNK_SIZE);
    /// ```
    pub fn stats(&self) -> Stats {
        self.engine.with(|engine| {
            #[allow(unused_mut, reason = "only the stash changes the engine's figures")]
            let mut stats = engine.stats();
            // Stashed chunks are held, not lent. A chunk that moves between stripes while they
            // are counted may be counted twice: the figure is of a moment.
            #[cfg(feature = "pages")]
            {
                let stashed = self.kept_stash().map_or(0, Stripes::bytes);
                stats.bytes_lent = stats.bytes_lent.saturating_sub(stashed);
                stats.chunks += stashed / crate::CHUNK_SIZE;
            }
            stats
        })
    }

    /// The invariant scan; see [`Engine::check`].
    ///
    /// # Errors
    /// The first broken invariant found.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.alloc(100).unwrap();
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// assert_eq!(pool.check(), Ok(()));
    /// ```
    pub fn check(&self) -> Result<(), CheckError> {
        self.engine.with(|engine| engine.check())
    }

    /// Gives the pool's idle chunks back to its source, those it keeps for its children's
    /// threads included; the bytes given back. See [`LockedEngine::trim`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.alloc(64).unwrap();
    /// // SAFETY: the block came from `pool` and is not used again.
    /// unsafe { pool.free(block) };
    /// assert_eq!(pool.trim(), CHUNK_SIZE);
    /// assert_eq!(pool.stats().chunks, 0);
    /// ```
    pub fn trim(&self) -> usize {
        self.with(|engine| engine.trim())
    }

    /// Moves `value` into the pool and returns a reference to it that borrows the pool, as
    /// bumpalo's `alloc` does. A zero-sized value takes no memory.
    ///
    /// The value's `Drop` is **not** run: not when the reference goes, nor when the pool is
    /// reset or dropped; its memory simply comes back with the pool's. For a value whose `Drop`
    /// must run, use `allocator_api2::boxed::Box::new_in(value, &pool)` (feature
    /// `allocator-api2`).
    ///
    /// # Errors
    /// [`TypedAllocError::Alignment`] for an alignment above
    /// [`MAX_TYPED_ALIGN`](crate::MAX_TYPED_ALIGN),
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes. `value` is dropped.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let point = pool.alloc_value((3_u32, 4_u32)).unwrap();
    /// point.0 += 1;
    /// assert_eq!(*point, (4, 4));
    /// assert_eq!(pool.stats().live_blocks, 1);
    /// ```
    ///
    /// The reference cannot survive a reset, which would hand its memory out again:
    ///
    /// ```compile_fail,E0502
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let mut pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let value = pool.alloc_value(7_u64).unwrap();
    /// pool.reset();
    /// *value += 1;
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_value<T>(&self, value: T) -> Result<&mut T, TypedAllocError> {
        crate::typed::alloc_value(self, value)
    }

    /// Copies `s` into the pool. An empty string takes no memory.
    ///
    /// # Errors
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let name = pool.alloc_str("melon").unwrap();
    /// name.make_ascii_uppercase();
    /// assert_eq!(name, "MELON");
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_str(&self, s: &str) -> Result<&mut str, TypedAllocError> {
        crate::typed::alloc_str(self, s)
    }

    /// Copies `src` into the pool. A slice of no bytes (empty, or of a zero-sized type) takes
    /// no memory.
    ///
    /// # Errors
    /// [`TypedAllocError::Alignment`] for an alignment above
    /// [`MAX_TYPED_ALIGN`](crate::MAX_TYPED_ALIGN),
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let primes = pool.alloc_slice_copy(&[2_u16, 3, 5, 7]).unwrap();
    /// primes[0] = 1;
    /// assert_eq!(primes, [1, 3, 5, 7]);
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], TypedAllocError> {
        crate::typed::alloc_slice_copy(self, src)
    }

    /// Makes a slice of `len` elements in the pool, element `i` being `f(i)`. A slice of no
    /// bytes takes no memory; `f` is called for each element all the same.
    ///
    /// As with [`alloc_value`](LockedPool::alloc_value), the elements' `Drop` is not run when
    /// the pool is reset or dropped.
    ///
    /// # Errors
    /// [`TypedAllocError::Alignment`] for an alignment above
    /// [`MAX_TYPED_ALIGN`](crate::MAX_TYPED_ALIGN),
    /// [`TypedAllocError::Overflow`] when `len` elements do not fit in an `isize`,
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    ///
    /// # Panics
    /// Only if `f` panics. The panic passes on after the elements made so far are dropped and
    /// the block is freed: nothing half-made is handed out.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let squares = pool.alloc_slice_fill_with(5, |i| i * i).unwrap();
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_with<T>(
        &self,
        len: usize,
        f: impl FnMut(usize) -> T,
    ) -> Result<&mut [T], TypedAllocError> {
        crate::typed::alloc_slice_fill_with(self, len, f)
    }
}

// SAFETY: `alloc_layout` hands out a block of the engine that nobody else is handed while it is
// in use, valid for the layout; it comes back only through `free` (here `give_back`, or the
// unsafe frees), `reset`, which borrows the pool uniquely, or the pool's drop.
unsafe impl<S: ChunkSource, K: ChunkStash> crate::typed::Blocks for LockedPool<S, K> {
    fn block(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_layout(layout)
    }

    unsafe fn give_back(&self, block: NonNull<u8>) {
        // SAFETY: forwarded from the caller: a block of this pool, in use, not used again.
        unsafe { self.free(block) };
    }
}

/// A child of a [`LockedPool`]: a locked pool of its own whose chunks come from its parent,
/// through the parent's lock.
///
/// Made by [`LockedPool::child`] and [`LockedPool::child_with_limit`]. It is a [`LockedPool`]
/// itself, so it has the whole locked API (`alloc`, `free`, `reset`, `with`, `Allocator`,
/// children of its own), and it lives wherever the caller puts it, with its engine inline, as
/// its parent does: no allocation is needed to make one, which keeps it usable in `no_std` code.
///
/// It is locked rather than single-threaded: a child is how a part of a program gets a limit of
/// its own inside a shared pool, and that part may run on several threads. Its lock is taken
/// first and the parent's inside it, only when the child needs a chunk or gives one back;
/// nothing takes them in the other order, so the two cannot deadlock. An uncontended spin lock
/// costs one atomic compare-and-swap per call, which single-threaded use pays too. Calling the
/// child from inside the parent's [`with`](LockedPool::with) waits for the lock forever.
///
/// A parent with no limit, over a source that names a stripe for each thread
/// ([`ChunkSource::stash_stripe`]), keeps the chunks its children give back in the giving
/// thread's stripe, and a child takes its chunks from its thread's stripe before it takes the
/// parent's lock: children on different threads then pass chunks without meeting. A stripe's
/// lock is always the innermost: a child takes it inside its own, and the parent inside its own
/// when it gives its stash back, which a child whose chunk the parent refused has it do inside
/// the child's lock too.
///
/// Dropping the child gives every chunk back to the parent but the chunk of a block aligned to a
/// chunk or more (see [`LockedPool`]) still out, which stays lent, as a forgotten child's chunks
/// do. As with any [`LockedPool`], its
/// chunks record its address: keep it where it was when it first allocated, or `check` reports
/// its blocks (which `free` still takes, searching the child's lists in a debug build).
///
/// # Soundness
/// The child borrows its parent, so the parent outlives it and cannot be reset while it lives
/// ([`reset`](LockedPool::reset) takes `&mut`). The child is `Send` and `Sync` exactly when its
/// parent is `Sync`.
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 17] = [0; 1 << 17];
/// // SAFETY: this example is the arena's only user.
/// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let root = LockedPool::new(RegionSource::from_static(region), None);
/// let request = root.child_with_limit(1 << 15);
/// std::thread::scope(|scope| {
///     for _ in 0..2 {
///         scope.spawn(|| {
///             let block = request.alloc(100).unwrap();
///             // SAFETY: the block came from `request` and is not used again.
///             unsafe { request.free(block) };
///         });
///     }
/// });
/// assert_eq!(request.stats().live_blocks, 0);
/// ```
pub type LockedChild<'a, S, K = Stripes> = LockedPool<LockedParent<'a, S, K>, NoStripes>;

/// The source of a [`LockedChild`]: chunks taken from the parent's engine under its lock and
/// charged to it as lent ([`Stats::bytes_lent`]), and given back the same way.
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let root = LockedPool::new(RegionSource::from_static(region), None);
/// let child = root.child();
/// let lent = child.with(|engine| engine.source().parent().stats().bytes_lent);
/// assert_eq!(lent, 0);
/// ```
pub struct LockedParent<'a, S: ChunkSource, K: ChunkStash = Stripes> {
    parent: &'a LockedPool<S, K>,
    /// The parent's source's granule, once asked; 0 before. Atomic only to keep the source
    /// `Sync`: it is read and written under the child's lock.
    granule: core::sync::atomic::AtomicUsize,
}

impl<'a, S: ChunkSource, K: ChunkStash> LockedParent<'a, S, K> {
    /// The source of a child of `parent`.
    fn of(parent: &'a LockedPool<S, K>) -> Self {
        Self { parent, granule: core::sync::atomic::AtomicUsize::new(0) }
    }

    /// The parent pool the chunks come from.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let root = LockedPool::new(RegionSource::from_static(region), None);
    /// let child = root.child();
    /// let parent = child.with(|engine| engine.source().parent());
    /// assert!(core::ptr::eq(parent, &root));
    /// ```
    pub fn parent(&self) -> &'a LockedPool<S, K> {
        self.parent
    }
}

// SAFETY: every chunk comes from the parent's `acquire_raw`, which takes it from the parent's
// own source under the parent's lock, so it upholds that source's contract: valid, aligned,
// disjoint, with provenance; it stays valid while the parent lives, which the borrow `'a`
// guarantees outlasts this source. A chunk of the parent's stash is one of those, which a child
// gave back and no one uses, handed to one child at a time under its stripe's lock. `release`
// hands each chunk back to `release_raw` with the layout it was taken with, as the engine
// promises, or keeps a small chunk in the stash, still lent, for the next child.
unsafe impl<S: ChunkSource, K: ChunkStash> ChunkSource for LockedParent<'_, S, K> {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        #[cfg(feature = "pages")]
        if layout == SMALL_CHUNK {
            if let Some(chunk) = self.parent.stash_here().and_then(|(stash, s)| stash.take(s)) {
                return Some(chunk);
            }
        }
        self.parent.engine.with(|engine| {
            let chunk = engine.acquire_raw(layout);
            // Refused: what the stash keeps may be what the source needs.
            #[cfg(feature = "pages")]
            if chunk.is_none() && give_back_stash(engine, self.parent.kept_stash()) > 0 {
                return engine.acquire_raw(layout);
            }
            chunk
        })
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        #[cfg(feature = "pages")]
        if layout == SMALL_CHUNK {
            if let Some((stash, stripe)) = self.parent.stash_here() {
                // SAFETY: a chunk of the small chunks' layout that the parent's engine lent out
                // (the caller's promise, as below), which nothing uses any more.
                match unsafe { stash.keep(stripe, chunk) } {
                    Ok(false) => return,
                    Ok(true) => {
                        // A look, if the lock is free; if not, the next time will do.
                        self.parent.engine.try_with(|engine| give_back_idle_stash(engine, stash));
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
        self.parent.engine.with(|engine| {
            // SAFETY: the caller passes a chunk that `acquire` took from the parent's
            // `acquire_raw` with `layout` (or from its stash, where chunks of that layout from
            // there wait), and no longer uses it.
            unsafe { engine.release_raw(chunk, layout) };
            #[cfg(feature = "pages")]
            if let Some(stash) = self.parent.kept_stash() {
                give_back_idle_stash(engine, stash);
            }
        });
    }

    /// The parent's source's, so that the child's large chunks are what the parent's source
    /// takes: asked under the parent's lock, once, when the child makes its first large block
    /// or block aligned to a chunk, whose chunk takes that lock anyway.
    fn granule(&self) -> usize {
        use core::sync::atomic::Ordering::Relaxed;
        match self.granule.load(Relaxed) {
            0 => {
                let granule = self.parent.engine.with(|engine| engine.source().granule());
                self.granule.store(granule, Relaxed);
                granule
            }
            granule => granule,
        }
    }

    /// The parent's source shortens the chunk, if it can: a child's large block shrinks in
    /// place as the parent's would.
    unsafe fn shrink(&mut self, chunk: NonNull<u8>, layout: Layout, new_len: usize) -> bool {
        // SAFETY: the chunk came from the parent's `acquire_raw` with `layout` (or from its
        // stash, where chunks of that layout from there wait), `new_len` is a multiple of the
        // parent's source's granule, which is this source's, and the rest is forwarded.
        self.parent.engine.with(|engine| unsafe { engine.shrink_raw(chunk, layout, new_len) })
    }
    // `release_all_small` keeps its default: the parent must hear of each chunk, to uncharge it
    // and reuse it. What the parent keeps is the parent's to trim.
}

impl<S: ChunkSource, K: ChunkStash> core::fmt::Debug for LockedParent<'_, S, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LockedParent").finish_non_exhaustive()
    }
}

/// The engine of a [`LockedPool`] while [`with`](LockedPool::with) holds its lock.
///
/// It offers what safe code may do to a pool that other code holds blocks of: allocate, free
/// (unsafe, as on the engine), trim, and read the engine through `Deref`. What would break
/// those blocks (reset, abandon, a new owner address, replacing the engine or its source)
/// needs [`engine_mut`](LockedEngine::engine_mut), which is unsafe.
///
/// # Examples
/// ```
/// # use melon_alloc_core::{LockedPool, RegionSource};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// // Two blocks under one hold of the lock.
/// let (a, b) = pool.with(|engine| (engine.alloc(64), engine.alloc(64)));
/// let (a, b) = (a.unwrap(), b.unwrap());
/// assert_eq!(pool.with(|engine| engine.stats().live_blocks), 2);
/// // SAFETY: both blocks came from `pool` and are not used again.
/// pool.with(|engine| unsafe { engine.free(a); engine.free(b) });
/// assert_eq!(pool.stats().live_blocks, 0);
/// ```
///
/// # Soundness
/// Safe code holding the view cannot make the pool hand out a block that is in use, nor free
/// one twice. These do not compile:
///
/// ```compile_fail,E0596
/// # use melon_alloc_core::{LockedPool, RegionSource};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// // Resetting would hand the memory of every block out again.
/// pool.with(|engine| unsafe { engine.reset() });
/// ```
///
/// ```compile_fail,E0308
/// # use melon_alloc_core::{Engine, LockedPool, RegionSource};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// // Replacing the engine would drop the chunks every block lives in; the view is not the
/// // engine, so nothing of type `Engine` can be written through it.
/// pool.with(|engine| *engine = Engine::new(RegionSource::from_static(&mut []), None));
/// ```
///
/// ```compile_fail,E0133
/// # use melon_alloc_core::{LockedPool, RegionSource};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// pool.with(|engine| engine.engine_mut().trim());
/// ```
pub struct LockedEngine<'a, S: ChunkSource> {
    engine: &'a mut Engine<S>,
    /// The pool's stash, if it keeps one, which a trim empties.
    #[cfg(feature = "pages")]
    stash: Option<&'a Stripes>,
}

impl<S: ChunkSource> LockedEngine<'_, S> {
    /// Allocates `size` bytes aligned to 16; see [`Engine::alloc`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.with(|engine| engine.alloc(100)).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 16, 0);
    /// ```
    #[inline]
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.engine.alloc(size)
    }

    /// Allocates `size` zeroed bytes aligned to 16; see [`Engine::alloc_zeroed`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.with(|engine| engine.alloc_zeroed(32)).unwrap();
    /// // SAFETY: the block holds 32 bytes, all zero.
    /// assert_eq!(unsafe { block.as_ptr().add(31).read() }, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.engine.alloc_zeroed(size)
    }

    /// Allocates a block for `layout`; see [`Engine::alloc_layout`].
    ///
    /// # Examples
    /// ```
    /// # use core::alloc::Layout;
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let layout = Layout::from_size_align(256, 256).unwrap();
    /// let block = pool.with(|engine| engine.alloc_layout(layout)).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 256, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_layout(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.engine.alloc_layout(layout)
    }

    /// Frees a block; see [`Engine::free`].
    ///
    /// # Safety
    /// As for [`Engine::free`]: `block` is an in-use block of this pool, not used afterwards.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|engine| {
    ///     let block = engine.alloc(64).unwrap();
    ///     // SAFETY: the block came from this pool and is not used again.
    ///     unsafe { engine.free(block) };
    /// });
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    #[inline]
    pub unsafe fn free(&mut self, block: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.engine.free(block) }
    }

    /// Frees a block after checking it; see [`Engine::try_free`].
    ///
    /// # Errors
    /// [`FreeError`] says why the pointer was refused; nothing changed.
    ///
    /// # Safety
    /// As for [`Engine::try_free`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{FreeError, LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|engine| {
    ///     let block = engine.alloc(64).unwrap();
    ///     // SAFETY: the block came from this pool and is not used again.
    ///     unsafe { engine.try_free(block) }.unwrap();
    ///     // SAFETY: a freed block is refused before anything is touched.
    ///     assert!(matches!(unsafe { engine.try_free(block) }, Err(FreeError::NotInUse { .. })));
    /// });
    /// ```
    pub unsafe fn try_free(&mut self, block: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.engine.try_free(block) }
    }

    /// Resizes a block to `new_size` bytes; see [`Engine::realloc`].
    ///
    /// # Safety
    /// As for [`Engine::realloc`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|engine| {
    ///     let block = engine.alloc(16).unwrap();
    ///     // SAFETY: the block came from this pool; only the returned pointer is used after.
    ///     let grown = unsafe { engine.realloc(block, 1000) }.unwrap();
    ///     // SAFETY: as above.
    ///     unsafe { engine.free(grown) };
    /// });
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn realloc(&mut self, block: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.engine.realloc(block, new_size) }
    }

    /// Resizes a block to `new_layout`; see [`Engine::resize`].
    ///
    /// # Safety
    /// As for [`Engine::resize`].
    ///
    /// # Examples
    /// ```
    /// # use core::alloc::Layout;
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let layout = Layout::from_size_align(64, 64).unwrap();
    /// pool.with(|engine| {
    ///     let block = engine.alloc(16).unwrap();
    ///     // SAFETY: the block came from this pool; only the returned pointer is used after.
    ///     let moved = unsafe { engine.resize(block, layout) }.unwrap();
    ///     assert_eq!(moved.as_ptr() as usize % 64, 0);
    ///     // SAFETY: as above.
    ///     unsafe { engine.free(moved) };
    /// });
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn resize(&mut self, block: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.engine.resize(block, new_layout) }
    }

    /// Gives back the cached empty chunks; see [`Engine::trim`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|engine| {
    ///     let block = engine.alloc(64).unwrap();
    ///     // SAFETY: the block came from this pool and is not used again.
    ///     unsafe { engine.free(block) };
    ///     assert_eq!(engine.trim(), melon_alloc_core::CHUNK_SIZE);
    /// });
    /// ```
    pub fn trim(&mut self) -> usize {
        #[cfg(feature = "pages")]
        let stashed = give_back_stash(self.engine, self.stash);
        #[cfg(not(feature = "pages"))]
        let stashed = 0;
        stashed + self.engine.trim()
    }

    /// The engine itself, for what the view leaves out: [`Engine::reset`],
    /// [`Engine::abandon`], [`Engine::source_mut`], which are unsafe themselves. The chunks the
    /// pool keeps for its children's threads ([`ChunkSource::stash_stripe`]) go back to the
    /// engine first, so that with no child alive nothing of the pool is lent; a child alive on
    /// another thread may give a chunk back into its stripe meanwhile, which the stash, not the
    /// engine, then holds.
    ///
    /// # Safety
    /// The engine is not replaced, swapped or moved out through the reference (blocks handed
    /// out name it, and it holds their chunks).
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|locked| {
    ///     let _block = locked.alloc(64).unwrap();
    ///     // SAFETY: the engine stays where it is.
    ///     let engine = unsafe { locked.engine_mut() };
    ///     // SAFETY: `_block` is not used again, and no other block of the pool exists.
    ///     unsafe { engine.reset() };
    /// });
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// ```
    pub unsafe fn engine_mut(&mut self) -> &mut Engine<S> {
        #[cfg(feature = "pages")]
        give_back_stash(self.engine, self.stash);
        self.engine
    }
}

impl<S: ChunkSource> core::ops::Deref for LockedEngine<'_, S> {
    type Target = Engine<S>;

    fn deref(&self) -> &Engine<S> {
        self.engine
    }
}

impl<S: ChunkSource> core::fmt::Debug for LockedEngine<'_, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LockedEngine").field("engine", &*self.engine).finish()
    }
}

/// Gives every chunk of `stash`, if there is one, back to `engine`, the pool it belongs to,
/// whose lock the caller holds; returns the bytes given back.
#[cfg(feature = "pages")]
fn give_back_stash<S: ChunkSource>(engine: &mut Engine<S>, stash: Option<&Stripes>) -> usize {
    let Some(stash) = stash else { return 0 };
    let mut bytes = 0;
    stash.drain(|chunk| {
        // SAFETY: stashed chunks are small chunks that the engine lent out (`acquire_raw` with
        // the small chunks' layout) and that their children gave back; the drain hands each over
        // once, and nothing uses it.
        unsafe { engine.release_raw(chunk, SMALL_CHUNK) };
        bytes += SMALL_CHUNK.size();
    });
    bytes
}

/// Gives the stashed chunks back to `engine` if it lends none but those: no child holds a chunk,
/// and the source, seeing every chunk back, can give back what a burst of children left. Looked
/// at when a chunk goes back to the engine, and one time in `STASH_CHECK_EVERY` that a stripe
/// keeps one. Children on other threads may take from the stripes meanwhile: a chunk taken is
/// lent, and the drain gives back only what it finds.
#[cfg(feature = "pages")]
fn give_back_idle_stash<S: ChunkSource>(engine: &mut Engine<S>, stash: &Stripes) {
    let lent = engine.lent_bytes();
    // More than the stripes can keep: some child holds a chunk, found without their locks.
    let most = crate::stash::STASH_STRIPES * crate::STASH_CHUNKS * crate::CHUNK_SIZE;
    if lent != 0 && lent <= most && lent == stash.bytes() {
        give_back_stash(engine, Some(stash));
    }
}

#[cfg(feature = "pages")]
impl<S: ChunkSource, K: ChunkStash> Drop for LockedPool<S, K> {
    /// Gives the stashed chunks back to the engine, which then gives back all it holds.
    fn drop(&mut self) {
        if let Some(stash) = self.kept_stash() {
            self.engine.with(|engine| give_back_stash(engine, Some(stash)));
        }
    }
}

impl<S: ChunkSource, K: ChunkStash> core::fmt::Debug for LockedPool<S, K> {
    /// The engine's statistics, read under the lock if it is free and written out after it is
    /// released: writing may allocate, from this very pool when it is the global allocator.
    /// Unlike [`stats`](LockedPool::stats), they count the chunks kept for children's threads
    /// as lent, as the engine sees them.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.engine.try_with(|engine| engine.stats()) {
            Some(stats) => f.debug_struct("LockedPool").field("stats", &stats).finish(),
            None => f.debug_struct("LockedPool").finish_non_exhaustive(),
        }
    }
}

/// The chunk that serves a `GlobalAlloc` layout aligned to a whole chunk or more, which no block
/// of the engine can be (its header would have to lie where the block starts): `layout` rounded
/// up to whole granules of the source (`granule`, 16 bytes at least), as the engine's large
/// chunks are, or `None` for a layout that is not, or for every layout without the
/// `chunk-aligned` feature (the engine then refuses such a layout).
#[inline(always)]
fn own_chunk_layout(layout: Layout, granule: impl FnOnce() -> usize) -> Option<Layout> {
    if !cfg!(feature = "chunk-aligned") || layout.align() < crate::CHUNK_SIZE {
        return None;
    }
    let granule = granule();
    // Checked: a size of 0, which `GlobalAlloc` rules out, made 16 may not fit with the largest
    // alignments, and such a layout is then refused. The size fits `isize`, the granule is at
    // most a chunk: the rounding does not overflow.
    let size = layout.size().max(1).next_multiple_of(granule.max(crate::MIN_ALIGN));
    Layout::from_size_align(size, layout.align()).ok()
}

// SAFETY: (1) blocks come from `Engine::alloc_layout`, which returns blocks of at least
// `layout.size()` bytes aligned to `layout.align()` that overlap no other in-use block, or null;
// a layout aligned to a chunk or more gets a chunk of its own from `Engine::acquire_raw`, at
// least as long and as aligned, which overlaps nothing else the engine holds; (2) `dealloc` and
// `realloc` receive, per `GlobalAlloc`'s contract, blocks this allocator handed out with the
// same layout, so the layout tells which of the two a block is; (3) the lock makes every
// operation exclusive.
unsafe impl<S: ChunkSource, K: ChunkStash> GlobalAlloc for LockedPool<S, K> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // One call of the lock for both kinds of block: firmware counts the bytes each call
        // site of its inlined code costs.
        let block = self.engine.with(|engine| match own_chunk_layout(layout, || granule(engine)) {
            Some(chunk) => engine.acquire_raw(chunk),
            None => engine.alloc_layout(layout),
        });
        block.map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let block = unsafe { GlobalAlloc::alloc(self, layout) };
        if !block.is_null() {
            // SAFETY: the block was just handed out and holds `layout.size()` bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `GlobalAlloc` callers pass a non-null block from this allocator, which they no
        // longer use.
        let block = unsafe { NonNull::new_unchecked(block) };
        let freed = self.engine.with(|engine| match own_chunk_layout(layout, || granule(engine)) {
            // SAFETY: a block of this layout came from `acquire_raw` with this chunk layout, as
            // `alloc` does it.
            Some(chunk) => unsafe { engine.release_raw_reporting(block, chunk) },
            // SAFETY: as above: any other block is a block of the engine.
            None => unsafe { engine.free_reporting(block) },
        });
        // After the lock, as in `free`: this pool may be the one the message is made in.
        crate::engine::stop_if_invalid(freed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc` callers pass a non-null block from this allocator.
        let block = unsafe { NonNull::new_unchecked(block) };
        // A size that overflows `isize` once rounded up to the alignment is refused, as `Layout`
        // refuses it; the alignment, taken from a layout, needs no check.
        if new_size > isize::MAX as usize - (layout.align() - 1) {
            return ptr::null_mut();
        }
        // On bare metal, where firmware counts code bytes, a shrink keeps the block where it is,
        // all of it, and a grow moves it: fitting the block and giving back its tail stay out of
        // the build. A block with a chunk of its own moves either way: `dealloc` gives back the
        // chunk its layout names, and a chunk kept whole under a shorter layout would go back
        // short.
        #[cfg(target_os = "none")]
        if new_size <= layout.size() && own_chunk_layout(layout, || crate::MIN_ALIGN).is_none() {
            block.as_ptr()
        } else {
            // SAFETY: forwarded from the caller, and the size checked.
            unsafe { self.move_block(block, layout, new_size) }
        }
        // SAFETY: forwarded from the caller, and the size checked.
        #[cfg(not(target_os = "none"))]
        unsafe {
            self.fit_or_move(block, layout, new_size)
        }
    }
}

impl<S: ChunkSource, K: ChunkStash> LockedPool<S, K> {
    /// `GlobalAlloc::realloc` on a hosted target: a block whose slot holds the new size stays,
    /// a large block giving its source the tail it no longer needs if the source can take it
    /// back in place, and one left more than twice as long as it needs moves when it can; any
    /// other block moves.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc`, with `new_size` rounded up to `layout.align()` within
    /// `isize`.
    #[cfg(not(target_os = "none"))]
    unsafe fn fit_or_move(&self, block: NonNull<u8>, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `layout.align()` is a power of two, and `new_size` rounded up to it fits
        // `isize`, as checked above.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if own_chunk_layout(layout, || crate::MIN_ALIGN).is_some() {
            // SAFETY: the block came from `acquire_raw` with its chunk layout, as `alloc` takes
            // it, and the caller uses no more than `new_size` bytes of it from now on.
            let kept = |engine: &mut Engine<S>| unsafe {
                keep_own_chunk(engine, block, layout, new_layout)
            };
            if self.engine.with(kept) {
                return block.as_ptr();
            }
            // SAFETY: forwarded from the caller, and the size checked.
            return unsafe { self.move_block(block, layout, new_size) };
        }
        let (fit, usable) = self.engine.with(|engine| {
            // SAFETY: the block is from this allocator, as above.
            let (fit, usable) = unsafe { engine.fit(block, new_layout) };
            if fit == Fit::Kept {
                engine.keep_in_place(block, usable, new_size);
            }
            (fit, usable)
        });
        if fit == Fit::Kept {
            return block.as_ptr();
        }
        // SAFETY: forwarded from the caller.
        let moved = unsafe { self.move_block(block, layout, new_size) };
        if moved.is_null() && fit == Fit::Loose {
            // A block that holds the new size stays when no shorter one can be had: a shrink
            // does not fail. Only memcheck needs to hear of it, under the lock.
            #[cfg(feature = "valgrind")]
            self.engine.with(|engine| engine.keep_in_place(block, usable, new_size));
            #[cfg(not(feature = "valgrind"))]
            let _ = usable;
            return block.as_ptr();
        }
        moved
    }

    /// `GlobalAlloc::realloc` of a block that moves: the pool's own allocation and free, which a
    /// `#[global_allocator]` links anyway, with the copy made while the lock is free. Null, with
    /// the old block left as it was, when the new one cannot be had.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc`: `block` came from this allocator with `layout`, and
    /// `new_size` is not zero and, rounded up to `layout.align()`, fits `isize`.
    unsafe fn move_block(&self, block: NonNull<u8>, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller checked the size against the alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a layout with a non-zero size is all `alloc` needs; `GlobalAlloc::realloc`'s
        // caller promises one.
        let moved = unsafe { GlobalAlloc::alloc(self, new_layout) };
        if moved.is_null() {
            return moved;
        }
        // SAFETY: (1) the old block holds `layout.size()` bytes and the new one `new_size`; (2)
        // two blocks in use do not overlap.
        unsafe { ptr::copy_nonoverlapping(block.as_ptr(), moved, layout.size().min(new_size)) };
        // SAFETY: the block is from this pool, and the caller uses the moved one from now on.
        unsafe { self.dealloc(block.as_ptr(), layout) };
        moved
    }
}

#[cfg(feature = "allocator-api2")]
// SAFETY: (1) blocks stay valid until deallocated, and the engine lives as long as the borrowed
// pool; a layout of no bytes gets no block, a dangling pointer (`zero_size_block`); (2)
// `deallocate`, `grow` and `shrink` receive blocks this allocator handed out, or the dangling
// pointer of a layout of no bytes, which they leave alone; (3) the lock makes every operation
// exclusive, so the pool can be shared between threads.
unsafe impl<S: ChunkSource, K: ChunkStash> allocator_api2::alloc::Allocator for LockedPool<S, K> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        if layout.size() == 0 {
            return Ok(crate::plumbing::zero_size_block(layout));
        }
        let block = self.alloc_layout(layout).ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    unsafe fn deallocate(&self, block: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the caller passes a block from this allocator that it no longer uses.
        unsafe { self.free(block) };
    }

    unsafe fn grow(
        &self,
        block: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        if old.size() == 0 {
            return self.allocate(new);
        }
        // SAFETY: the caller passes a block from this allocator; on success it uses the result.
        // The block is checked first, so that the move's free refuses nothing under the lock.
        let moved = self.engine.with(|engine| unsafe {
            engine.check_in_debug(block).map(|()| engine.resize(block, new))
        });
        // After the lock, as in `free`.
        crate::engine::stop_if_invalid(moved.map(drop));
        let moved = moved.ok().flatten().ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(moved, new.size()))
    }

    unsafe fn shrink(
        &self,
        block: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        if new.size() == 0 {
            // SAFETY: the caller gives the block up for the result.
            unsafe { allocator_api2::alloc::Allocator::deallocate(self, block, old) };
            return Ok(crate::plumbing::zero_size_block(new));
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.grow(block, old, new) }
    }
}

/// The granule of the engine's source ([`ChunkSource::granule`]).
#[inline(always)]
fn granule<S: ChunkSource>(engine: &Engine<S>) -> usize {
    engine.source().granule()
}

/// Whether a block with a chunk of its own can stay where it is at `new_layout`: its chunk
/// already has the length the new layout's chunk would have, or the source shortens it to that
/// length in place. `dealloc` then gives the chunk back with the new layout's length.
///
/// # Safety
/// `block` came from `acquire_raw` on `engine` with `own_chunk_layout(layout)`, and `new_layout`
/// has `layout`'s alignment; the caller uses no more than `new_layout.size()` bytes of it if it
/// stays.
#[cfg(not(target_os = "none"))]
unsafe fn keep_own_chunk<S: ChunkSource>(
    engine: &mut Engine<S>,
    block: NonNull<u8>,
    layout: Layout,
    new_layout: Layout,
) -> bool {
    let granule = granule(engine);
    let (Some(old), Some(new)) =
        (own_chunk_layout(layout, || granule), own_chunk_layout(new_layout, || granule))
    else {
        return false;
    };
    // SAFETY: (1) the chunk came from `acquire_raw` with `old` (caller); (2) `new` is a multiple
    // of the granule above 0, tested below `old`; (3) the caller uses only `new_layout.size()
    // <= new.size()` bytes of it from now on.
    new.size() == old.size()
        || (new.size() < old.size() && unsafe { engine.shrink_raw(block, old, new.size()) })
}

#[cfg(all(test, feature = "chunk-aligned"))]
mod tests {
    use super::*;

    /// A chunk of its own is the layout rounded up to 16 bytes, or to the source's granule; a
    /// size of 0 with the largest alignment, which rounds to no valid layout, gets none rather
    /// than an invalid one.
    #[test]
    fn a_chunk_aligned_layout_rounds_to_its_granule_or_is_refused() {
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        let chunk = crate::CHUNK_SIZE;
        let own = |size, align| own_chunk_layout(layout(size, align), || 16);
        assert_eq!(own(3000, 16), None, "below a chunk's alignment");
        assert_eq!(own(3000, chunk), Some(layout(3008, chunk)));
        assert_eq!(own(0, chunk), Some(layout(16, chunk)));
        assert_eq!(own_chunk_layout(layout(3000, chunk), || chunk), Some(layout(chunk, chunk)));
        let largest = 1 << (usize::BITS - 2);
        assert_eq!(own(0, largest), Some(layout(16, largest)));
        assert_eq!(own(0, largest << 1), None, "16 bytes do not fit");
    }
}
