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

    /// Runs `f` on the engine with the lock held, for several operations in a row.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine<S>) -> R) -> R {
        self.engine.with(f)
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
