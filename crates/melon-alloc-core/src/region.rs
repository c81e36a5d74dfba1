//! A source over one fixed region of memory: a static arena in firmware, a reserved range in a
//! kernel.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use crate::{ChunkSource, CHUNK_SIZE};

/// A free run of the region, kept in the run itself: free runs form a list sorted by address.
#[repr(C)]
struct FreeRun {
    size: usize,
    next: *mut FreeRun,
}

/// Hands out chunks from one fixed region, first fit, merging neighbours when they come back.
///
/// Every chunk is a whole number of [`CHUNK_SIZE`] units aligned to `CHUNK_SIZE`, so the region
/// loses at most one unit to alignment at each end. The bookkeeping lives in the free runs
/// themselves; the source needs no other memory, which makes it usable as the source of a
/// `#[global_allocator]`:
///
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 256 * 1024] = [0; 256 * 1024];
/// // SAFETY: nothing else ever touches `ARENA`.
/// static POOL: LockedPool<RegionSource> =
///     LockedPool::new(unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 256 * 1024) }, None);
///
/// let block = POOL.alloc(100).unwrap();
/// // SAFETY: the block came from `POOL` and is not used again.
/// unsafe { POOL.try_free(block) }.unwrap();
/// ```
///
/// # Soundness
/// [`new`](RegionSource::new) is unsafe: the caller vouches for the region. A `'static mut`
/// slice needs no such promise ([`from_static`](RegionSource::from_static)). Handing out chunks
/// is safe, since each is a disjoint part of the region; taking one back is unsafe.
#[derive(Debug)]
pub struct RegionSource {
    /// The region as given; laid out as free runs on first use.
    start: *mut u8,
    len: usize,
    laid_out: bool,
    free: *mut FreeRun,
}

// SAFETY: the source has exclusive use of its region (the contract of `new`), so it can move to
// another thread with it.
unsafe impl Send for RegionSource {}

impl RegionSource {
    /// A source over `len` bytes at `start`. Nothing is written until the first chunk is taken.
    ///
    /// # Safety
    /// - `start` is valid for reads and writes of `len` bytes for as long as the source and any
    ///   chunk it handed out are in use, and carries provenance over all of them.
    /// - Nothing else uses that memory meanwhile.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    ///
    /// let mut memory = vec![0u8; 4 * CHUNK_SIZE];
    /// // SAFETY: `memory` outlives the source and the engine, declared after it and so dropped
    /// // first, and nothing else uses it meanwhile.
    /// let source = unsafe { RegionSource::new(memory.as_mut_ptr(), memory.len()) };
    /// let mut engine = Engine::new(source, None);
    /// assert!(engine.alloc(64).is_some());
    /// ```
    #[inline]
    pub const unsafe fn new(start: *mut u8, len: usize) -> Self {
        Self { start, len, laid_out: false, free: ptr::null_mut() }
    }

    /// A source over a slice of memory that lives for the rest of the program.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 4 * CHUNK_SIZE] = [0; 4 * CHUNK_SIZE];
    /// // SAFETY: this example is the arena's only user.
    /// let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// // A region of four units loses at most one to the alignment of its chunks.
    /// assert!(source.free_bytes() >= 3 * CHUNK_SIZE);
    /// // One with no whole aligned unit has nothing to hand out.
    /// assert_eq!(RegionSource::from_static(&mut []).free_bytes(), 0);
    /// ```
    pub fn from_static(region: &'static mut [u8]) -> Self {
        let len = region.len();
        // SAFETY: a `'static mut` slice is valid, exclusive and ours for good.
        unsafe { Self::new(region.as_mut_ptr(), len) }
    }

    /// Bytes in free runs: what can still be handed out, before alignment.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{ChunkSource, RegionSource, SMALL_CHUNK};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// let mut source = RegionSource::from_static(region);
    /// let before = source.free_bytes();
    /// let chunk = source.acquire(SMALL_CHUNK).unwrap();
    /// assert_eq!(source.free_bytes(), before - SMALL_CHUNK.size());
    /// // SAFETY: the chunk came from `source` with this layout and is not used again.
    /// unsafe { source.release(chunk, SMALL_CHUNK) };
    /// assert_eq!(source.free_bytes(), before);
    /// ```
    pub fn free_bytes(&self) -> usize {
        let mut total = 0;
        let mut run = self.free;
        while !run.is_null() {
            // SAFETY: runs on the free list are valid `FreeRun`s inside the region.
            unsafe {
                total += (*run).size;
                run = (*run).next;
            }
        }
        total + if self.laid_out { 0 } else { self.usable().map_or(0, |(_, len)| len) }
    }

    /// The whole `CHUNK_SIZE` units of the region: their offset from `start` and their length.
    fn usable(&self) -> Option<(usize, usize)> {
        let offset = self.start.align_offset(CHUNK_SIZE);
        let len = self.len.checked_sub(offset)? & !(CHUNK_SIZE - 1);
        (len > 0).then_some((offset, len))
    }

    fn lay_out(&mut self) {
        self.laid_out = true;
        if let Some((offset, len)) = self.usable() {
            // SAFETY: `offset + len <= self.len`, so the run lies in the region, aligned to
            // `CHUNK_SIZE` and so to `FreeRun`.
            unsafe {
                let run = self.start.add(offset).cast::<FreeRun>();
                run.write(FreeRun { size: len, next: ptr::null_mut() });
                self.free = run;
            }
        }
    }

    /// Puts `size` bytes at `start` back on the free list, merged with the runs they touch.
    ///
    /// # Safety
    /// The bytes are a whole number of units of the region, aligned to `CHUNK_SIZE`, out of the
    /// free list (handed out by `acquire`), and nobody uses them from now on.
    unsafe fn add_run(&mut self, start: *mut u8, size: usize) {
        let new = start.cast::<FreeRun>();
        // SAFETY: (1) the bytes are `size` bytes of the region aligned to `CHUNK_SIZE` and
        // unused (caller), free to hold a `FreeRun`; (2) runs on the list are valid, and the
        // list is sorted by address, so the new run goes between `prev` and `next` and merges
        // with whichever of them it touches.
        unsafe {
            let mut prev: *mut FreeRun = ptr::null_mut();
            let mut next = self.free;
            while !next.is_null() && next.addr() < new.addr() {
                prev = next;
                next = (*next).next;
            }
            // The new run takes in the run after it if they touch, and the run before takes in
            // the new one if they touch; a run is only written where it starts.
            let mut run = FreeRun { size, next };
            if !next.is_null() && new.addr() + size == next.addr() {
                run = FreeRun { size: size + (*next).size, next: (*next).next };
            }
            if !prev.is_null() && prev.addr() + (*prev).size == new.addr() {
                (*prev).size += run.size;
                (*prev).next = run.next;
            } else {
                new.write(run);
                if prev.is_null() {
                    self.free = new;
                } else {
                    (*prev).next = new;
                }
            }
        }
    }
}

/// The size in whole units that a chunk of `layout` takes.
fn units(layout: Layout) -> Option<usize> {
    layout.size().checked_add(CHUNK_SIZE - 1).map(|size| size & !(CHUNK_SIZE - 1))
}

// SAFETY: (1) chunks are carved from free runs of the region, which the source uses exclusively,
// so they are disjoint from every other chunk handed out; (2) they are aligned to
// `layout.align()` (checked when carving) and `layout.size()` long, rounded up to whole units;
// (3) every pointer derives from `start`, which carries provenance over the whole region.
unsafe impl ChunkSource for RegionSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if !self.laid_out {
            self.lay_out();
        }
        // A chunk of no bytes would split a free run in two that touch, never to merge again.
        let size = units(layout).filter(|&size| size > 0)?;
        // Alignments are powers of two, so the bytes up to the next aligned address are a mask
        // of the address's negation.
        let align_mask = layout.align().max(CHUNK_SIZE) - 1;
        let mut link: *mut *mut FreeRun = &mut self.free;
        // SAFETY: `link` points at `self.free` or at the `next` field of a run on the list, and
        // every run on the list is a valid `FreeRun` inside the region.
        unsafe {
            while !(*link).is_null() {
                let run = *link;
                let run_size = (*run).size;
                let lead = run.addr().wrapping_neg() & align_mask;
                if lead.checked_add(size).is_some_and(|need| need <= run_size) {
                    let chunk = run.cast::<u8>().add(lead);
                    let tail = run_size - lead - size;
                    let after = (*run).next;
                    let mut rest = after;
                    if tail > 0 {
                        let tail_run = chunk.add(size).cast::<FreeRun>();
                        tail_run.write(FreeRun { size: tail, next: after });
                        rest = tail_run;
                    }
                    if lead > 0 {
                        (*run).size = lead;
                        (*run).next = rest;
                    } else {
                        *link = rest;
                    }
                    return NonNull::new(chunk);
                }
                link = &mut (*run).next;
            }
        }
        None
    }

    /// Whole units: a chunk takes its length rounded up to [`CHUNK_SIZE`].
    fn granule(&self) -> usize {
        CHUNK_SIZE
    }

    /// Every chunk is carved from the one region, and neighbours merge when they come back.
    fn merges_released_chunks(&self) -> bool {
        true
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        let Some(size) = units(layout) else { return };
        // SAFETY: the chunk came from `acquire` with this layout (caller), so it is `size` bytes
        // of the region aligned to `CHUNK_SIZE`, out of the free list, and unused from now on.
        unsafe { self.add_run(chunk.as_ptr(), size) };
    }

    /// Keeps the units a chunk needs no more: what a chunk of `new_len` bytes takes is what is
    /// left of it, and the units after them become a free run.
    unsafe fn shrink(&mut self, chunk: NonNull<u8>, layout: Layout, new_len: usize) -> bool {
        let (Some(size), Some(kept)) =
            (units(layout), new_len.checked_next_multiple_of(CHUNK_SIZE))
        else {
            return false;
        };
        if kept < size {
            // The tail may be closed to memcheck, as the rest of a block past what was asked for
            // is: it becomes plain memory again, as a released chunk does.
            #[cfg(feature = "valgrind")]
            crate::valgrind::undefined(chunk.as_ptr().wrapping_add(kept), size - kept);
            // SAFETY: the chunk came from `acquire` with this layout (caller), so its units from
            // `kept`, a whole number of units below `size`, to `size` are out of the free list,
            // aligned to `CHUNK_SIZE`, and unused from now on (caller).
            unsafe { self.add_run(chunk.as_ptr().add(kept), size - kept) };
        }
        true
    }

    /// Takes the whole region back: with every small chunk unused and every other chunk
    /// released, nothing of it is out. A pool over a region drops without a walk over its
    /// chunks.
    #[inline]
    unsafe fn release_all_small(&mut self) -> bool {
        self.laid_out = false;
        self.free = ptr::null_mut();
        true
    }
}
