//! A pool behind a spin lock, for use from several threads or as the global allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::spin::SpinLock;
use crate::{CheckError, ChunkSource, Engine, FreeError, Stats};

/// An [`Engine`] behind a spin lock: `Sync`, and usable as a `#[global_allocator]` or as an
/// `allocator_api2` [`Allocator`](allocator_api2::alloc::Allocator) shared between threads.
///
/// The spin lock needs no operating system, so this works in `no_std` code. Every call takes the
/// lock for the length of one operation; [`with`](LockedPool::with) holds it for several.
///
/// As a `#[global_allocator]`, the source must not itself allocate from the global allocator.
///
/// # Soundness
/// Every safe call (`new`, `alloc`, `alloc_layout`, `available`, `stats`, `check`, the
/// `Allocator` methods through `&LockedPool`) takes the lock and hands out only blocks that are
/// not in use; [`with`](LockedPool::with) gives a [`LockedEngine`], which cannot reset or replace
/// the engine. Freeing by pointer (`try_free`, `GlobalAlloc::dealloc`) is unsafe. Calling the
/// pool again from inside `with` waits for the lock forever.
pub struct LockedPool<S: ChunkSource> {
    engine: SpinLock<Engine<S>>,
}

impl<S: ChunkSource> LockedPool<S> {
    /// Makes a locked pool over `source` with an optional limit in bytes.
    #[cfg(not(melon_loom))]
    pub const fn new(source: S, limit: Option<usize>) -> Self {
        Self { engine: SpinLock::new(Engine::new(source, limit)) }
    }

    /// Makes a locked pool over `source` with an optional limit in bytes.
    #[cfg(melon_loom)]
    pub fn new(source: S, limit: Option<usize>) -> Self {
        Self { engine: SpinLock::new(Engine::new(source, limit)) }
    }

    /// Runs `f` with the lock held, for several operations in a row. `f` gets a
    /// [`LockedEngine`]: the engine's operations that cannot break a block handed out through
    /// another path (an `Allocator` borrow, another thread's block).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{LockedPool, RegionSource};
    ///
    /// let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
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
        self.engine.with(|engine| f(&mut LockedEngine { engine }))
    }

    /// Allocates `size` bytes aligned to 16; see [`Engine::alloc`].
    pub fn alloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.engine.with(|engine| engine.alloc(size))
    }

    /// Allocates a block for `layout`; see [`Engine::alloc_layout`].
    pub fn alloc_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.engine.with(|engine| engine.alloc_layout(layout))
    }

    /// Frees a block after checking it; see [`Engine::try_free`].
    ///
    /// # Errors
    /// [`FreeError`] says why the pointer was refused; nothing changed.
    ///
    /// # Safety
    /// As for [`Engine::try_free`].
    pub unsafe fn try_free(&self, block: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: forwarded from the caller.
        self.engine.with(|engine| unsafe { engine.try_free(block) })
    }

    /// Bytes left under the limit; see [`Engine::available`].
    pub fn available(&self) -> Option<usize> {
        self.engine.with(|engine| engine.available())
    }

    /// The engine's counters; see [`Engine::stats`].
    pub fn stats(&self) -> Stats {
        self.engine.with(|engine| engine.stats())
    }

    /// The invariant scan; see [`Engine::check`].
    ///
    /// # Errors
    /// The first broken invariant found.
    pub fn check(&self) -> Result<(), CheckError> {
        self.engine.with(|engine| engine.check())
    }
}

/// The engine of a [`LockedPool`] while [`with`](LockedPool::with) holds its lock.
///
/// It offers what safe code may do to a pool that other code holds blocks of: allocate, free
/// (unsafe, as on the engine), trim, and read the engine through `Deref`. What would break
/// those blocks (reset, abandon, a new owner address, replacing the engine or its source)
/// needs [`engine_mut`](LockedEngine::engine_mut), which is unsafe.
///
/// # Soundness
/// Safe code holding the view cannot make the pool hand out a block that is in use, nor free
/// one twice. These do not compile:
///
/// ```compile_fail,E0596
/// # use melon_alloc_core::{LockedPool, RegionSource};
/// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// // Resetting would hand the memory of every block out again.
/// pool.with(|engine| unsafe { engine.reset() });
/// ```
///
/// ```compile_fail,E0596
/// # use melon_alloc_core::{Engine, LockedPool, RegionSource};
/// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// // Replacing the engine would drop the chunks every block lives in.
/// pool.with(|engine| *engine = Engine::new(RegionSource::from_static(&mut []), None));
/// ```
///
/// ```compile_fail,E0133
/// # use melon_alloc_core::{LockedPool, RegionSource};
/// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
/// let pool = LockedPool::new(RegionSource::from_static(region), None);
/// pool.with(|engine| engine.engine_mut().trim());
/// ```
pub struct LockedEngine<'a, S: ChunkSource> {
    engine: &'a mut Engine<S>,
}

impl<S: ChunkSource> LockedEngine<'_, S> {
    /// Allocates `size` bytes aligned to 16; see [`Engine::alloc`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.with(|engine| engine.alloc(100)).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 16, 0);
    /// ```
    #[inline]
    pub fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.engine.alloc(size)
    }

    /// Allocates `size` zeroed bytes aligned to 16; see [`Engine::alloc_zeroed`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let block = pool.with(|engine| engine.alloc_zeroed(32)).unwrap();
    /// // SAFETY: the block holds 32 bytes, all zero.
    /// assert_eq!(unsafe { block.as_ptr().add(31).read() }, 0);
    /// ```
    pub fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.engine.alloc_zeroed(size)
    }

    /// Allocates a block for `layout`; see [`Engine::alloc_layout`].
    ///
    /// # Examples
    /// ```
    /// # use core::alloc::Layout;
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// let layout = Layout::from_size_align(256, 256).unwrap();
    /// let block = pool.with(|engine| engine.alloc_layout(layout)).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 256, 0);
    /// ```
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
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
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
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
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
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|engine| {
    ///     let block = engine.alloc(16).unwrap();
    ///     // SAFETY: the block came from this pool; only the returned pointer is used after.
    ///     let grown = unsafe { engine.realloc(block, 1000) }.unwrap();
    ///     // SAFETY: as above.
    ///     unsafe { engine.free(grown) };
    /// });
    /// ```
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
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
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
    pub unsafe fn resize(&mut self, block: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.engine.resize(block, new_layout) }
    }

    /// Gives back the cached empty chunks; see [`Engine::trim`].
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
    /// let pool = LockedPool::new(RegionSource::from_static(region), None);
    /// pool.with(|engine| {
    ///     let block = engine.alloc(64).unwrap();
    ///     // SAFETY: the block came from this pool and is not used again.
    ///     unsafe { engine.free(block) };
    ///     assert_eq!(engine.trim(), melon_alloc_core::CHUNK_SIZE);
    /// });
    /// ```
    pub fn trim(&mut self) -> usize {
        self.engine.trim()
    }

    /// The engine itself, for what the view leaves out: [`Engine::reset`],
    /// [`Engine::abandon`], [`Engine::source_mut`], which are unsafe themselves.
    ///
    /// # Safety
    /// The engine is not replaced, swapped or moved out through the reference (blocks handed
    /// out name it, and it holds their chunks).
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{LockedPool, RegionSource};
    /// # let region = Box::leak(vec![0; 1 << 16].into_boxed_slice());
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

impl<S: ChunkSource> core::fmt::Debug for LockedPool<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self
            .engine
            .try_with(|engine| f.debug_struct("LockedPool").field("engine", engine).finish())
        {
            Some(result) => result,
            None => f.debug_struct("LockedPool").finish_non_exhaustive(),
        }
    }
}

// SAFETY: (1) blocks come from `Engine::alloc_layout`, which returns blocks of at least
// `layout.size()` bytes aligned to `layout.align()` that overlap no other in-use block, or null;
// (2) `dealloc` and `realloc` receive, per `GlobalAlloc`'s contract, blocks this allocator handed
// out, which are blocks of the engine; (3) the lock makes every operation exclusive.
unsafe impl<S: ChunkSource> GlobalAlloc for LockedPool<S> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = self.alloc_layout(layout);
        if let Some(block) = block {
            // SAFETY: the block was just handed out and holds `layout.size()` bytes.
            unsafe { block.as_ptr().write_bytes(0, layout.size()) };
        }
        block.map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, block: *mut u8, _layout: Layout) {
        // SAFETY: `GlobalAlloc` callers pass a non-null block from this allocator.
        let block = unsafe { NonNull::new_unchecked(block) };
        // SAFETY: as above; the caller no longer uses it.
        self.engine.with(|engine| unsafe { engine.free(block) });
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc` callers pass a non-null block from this allocator.
        let block = unsafe { NonNull::new_unchecked(block) };
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: as above; on success the caller switches to the returned pointer.
        let moved = self.engine.with(|engine| unsafe { engine.resize(block, new_layout) });
        moved.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

#[cfg(feature = "allocator-api2")]
// SAFETY: (1) blocks stay valid until deallocated, and the engine lives as long as the borrowed
// pool; (2) `deallocate`, `grow` and `shrink` receive blocks this allocator handed out; (3) the
// lock makes every operation exclusive, so the pool can be shared between threads.
unsafe impl<S: ChunkSource> allocator_api2::alloc::Allocator for LockedPool<S> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let block = self.alloc_layout(layout).ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    unsafe fn deallocate(&self, block: NonNull<u8>, _layout: Layout) {
        // SAFETY: the caller passes a block from this allocator that it no longer uses.
        self.engine.with(|engine| unsafe { engine.free(block) });
    }

    unsafe fn grow(
        &self,
        block: NonNull<u8>,
        _old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        // SAFETY: the caller passes a block from this allocator; on success it uses the result.
        let moved = self.engine.with(|engine| unsafe { engine.resize(block, new) });
        let moved = moved.ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(moved, new.size()))
    }

    unsafe fn shrink(
        &self,
        block: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.grow(block, old, new) }
    }
}
