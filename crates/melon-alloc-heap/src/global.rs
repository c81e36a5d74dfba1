//! The source of a root pool: chunks carved from slabs of the global allocator.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use std::alloc;

use melon_alloc_core::{ChunkSource, CHUNK_SIZE, SMALL_CHUNK};

/// Chunks in the first slab; each new slab doubles, up to [`MAX_SLAB_CHUNKS`].
const FIRST_SLAB_CHUNKS: usize = 4;
/// Bytes of the largest slab: one transparent huge page on x86_64 and aarch64 Linux.
const HUGE_SLAB: usize = 2 << 20;
/// Chunks in the largest slab.
const MAX_SLAB_CHUNKS: usize = HUGE_SLAB / CHUNK_SIZE;

/// Freed large chunks a source keeps for reuse hold at most this many bytes together,
const LARGE_CACHE_BYTES: usize = 2 << 20;
/// each from this long
const LARGE_CACHE_MIN: usize = 8 << 10;
/// to this long. A longer chunk is allocated and freed with its exact size: filling it costs far
/// more than the global allocator's call.
const LARGE_CACHE_MAX: usize = 256 << 10;
/// Lengths a cached chunk can have: eight per power of two from the least to the most.
const LARGE_BINS: usize =
    8 * (LARGE_CACHE_MAX.trailing_zeros() - LARGE_CACHE_MIN.trailing_zeros()) as usize + 1;

/// A recycled small chunk: its first word links to the next one.
struct FreeChunk {
    next: *mut FreeChunk,
}

/// Takes memory from the global allocator for a root pool.
///
/// Small chunks are carved from slabs that grow from 64 KiB to 2 MiB, because asking the global
/// allocator for each aligned 16 KiB chunk on its own leaves an alignment gap beside nearly every
/// one (glibc's `posix_memalign` does), which would cost more than the blocks themselves. Chunks
/// that come back are reused; once every chunk has come back, and when the pool is dropped, the
/// slabs go back to the global allocator.
///
/// Large chunks come from the global allocator. Up to 256 KiB their length is rounded up to an
/// eighth of its power of two, and freed ones of 8 to 256 KiB, up to 2 MiB together, are kept in
/// a list per rounded length and handed out again for a request that rounds to the same length:
/// a program that frees and allocates blocks of a few kilobytes in turn would otherwise pay for
/// an aligned allocation of the global allocator on every one. A root pool with a limit keeps no such cache
/// ([`without_large_cache`](GlobalSource::without_large_cache)), so that all it takes from the
/// system is within its limit.
///
/// On Linux, 2 MiB slabs are aligned to 2 MiB and marked for transparent huge pages: unmapping a
/// full pool of 4 KiB pages costs the kernel several nanoseconds per 64-byte block, a huge page
/// a small fraction of that.
#[derive(Debug)]
pub struct GlobalSource {
    free: *mut FreeChunk,
    /// The uncarved rest of the newest slab.
    carve_next: *mut u8,
    carve_left: usize,
    slabs: Vec<(NonNull<u8>, Layout)>,
    next_slab_chunks: usize,
    /// Small chunks handed out and not yet back.
    chunks_out: usize,
    /// Freed large chunks by rounded length ([`large_bin`]), each list linked through the
    /// chunks' first words; empty until the first chunk is kept.
    large_bins: Vec<*mut FreeChunk>,
    /// Bytes of the cached large chunks.
    large_cache_bytes: usize,
    /// The most bytes the cache may hold: 0 turns it off.
    large_cache_limit: usize,
}

// SAFETY: the source exclusively owns its slabs and recycled chunks; its raw pointers point only
// into them, so it can move between threads with them.
unsafe impl Send for GlobalSource {}

impl GlobalSource {
    /// A source that holds nothing yet.
    pub const fn new() -> Self {
        Self::with_large_cache(LARGE_CACHE_BYTES)
    }

    /// A source that keeps no freed large chunk: everything it takes from the global allocator
    /// is a chunk some pool holds, which is what a pool with a limit needs.
    pub const fn without_large_cache() -> Self {
        Self::with_large_cache(0)
    }

    const fn with_large_cache(large_cache_limit: usize) -> Self {
        Self {
            free: ptr::null_mut(),
            carve_next: ptr::null_mut(),
            carve_left: 0,
            slabs: Vec::new(),
            next_slab_chunks: FIRST_SLAB_CHUNKS,
            chunks_out: 0,
            large_bins: Vec::new(),
            large_cache_bytes: 0,
            large_cache_limit,
        }
    }

    /// Bytes of freed large chunks kept for reuse.
    pub fn cached_large_bytes(&self) -> usize {
        self.large_cache_bytes
    }

    /// Bytes of slabs currently held from the global allocator.
    pub fn slab_bytes(&self) -> usize {
        self.slabs.iter().map(|(_, layout)| layout.size()).sum()
    }

    fn small_chunk(&mut self) -> Option<NonNull<u8>> {
        if let Some(chunk) = NonNull::new(self.free) {
            // SAFETY: recycled chunks hold the link to the next one in their first word.
            self.free = unsafe { (*chunk.as_ptr()).next };
            return Some(chunk.cast());
        }
        if self.carve_left == 0 {
            self.new_slab()?;
        }
        let chunk = self.carve_next;
        self.carve_left -= 1;
        // SAFETY: `chunk` starts a `CHUNK_SIZE` run inside the newest slab; the next run, if any,
        // is still inside it, and one-past-the-end is allowed.
        self.carve_next = unsafe { chunk.add(CHUNK_SIZE) };
        NonNull::new(chunk)
    }

    fn new_slab(&mut self) -> Option<()> {
        let size = self.next_slab_chunks * CHUNK_SIZE;
        let align = if size == HUGE_SLAB { HUGE_SLAB } else { CHUNK_SIZE };
        let layout = Layout::from_size_align(size, align).ok()?;
        self.slabs.try_reserve(1).ok()?;
        // SAFETY: the layout has a non-zero size.
        let slab = NonNull::new(unsafe { alloc::alloc(layout) })?;
        if size == HUGE_SLAB {
            advise_huge_pages(slab, size);
        }
        self.slabs.push((slab, layout));
        self.carve_next = slab.as_ptr();
        self.carve_left = self.next_slab_chunks;
        self.next_slab_chunks = (self.next_slab_chunks * 2).min(MAX_SLAB_CHUNKS);
        Some(())
    }

    /// A cached large chunk allocated with `layout`, if there is one.
    fn cached_large(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let head = self.large_bins.get_mut(large_bin(layout)?)?;
        let chunk = NonNull::new(*head)?;
        // SAFETY: a cached chunk is ours, and its first word links to the next of its length.
        *head = unsafe { (*chunk.as_ptr()).next };
        self.large_cache_bytes -= layout.size();
        Some(chunk.cast())
    }

    /// Keeps a freed large chunk allocated with `layout` for reuse, if there is room; gives it
    /// back to the global allocator otherwise.
    ///
    /// # Safety
    /// `chunk` came from `alloc::alloc` with `layout`, and nothing uses it afterwards.
    unsafe fn cache_large(&mut self, chunk: NonNull<u8>, layout: Layout) {
        let bin = large_bin(layout)
            .filter(|_| self.large_cache_bytes + layout.size() <= self.large_cache_limit)
            .filter(|_| self.reserve_large_bins());
        match bin {
            Some(bin) => {
                let entry = chunk.cast::<FreeChunk>().as_ptr();
                // SAFETY: the chunk is ours again and at least a word long.
                unsafe { (*entry).next = self.large_bins[bin] };
                self.large_bins[bin] = entry;
                self.large_cache_bytes += layout.size();
            }
            // SAFETY: forwarded from the caller.
            None => unsafe { alloc::dealloc(chunk.as_ptr(), layout) },
        }
    }

    /// Makes the list heads of the large-chunk cache, once. If that fails, chunks simply go
    /// back to the global allocator.
    fn reserve_large_bins(&mut self) -> bool {
        if self.large_bins.is_empty() {
            if self.large_bins.try_reserve_exact(LARGE_BINS).is_err() {
                return false;
            }
            // Within the capacity just reserved: no allocation.
            self.large_bins.resize(LARGE_BINS, ptr::null_mut());
        }
        true
    }

    fn release_large_cache(&mut self) {
        for (bin, head) in self.large_bins.iter_mut().enumerate() {
            let layout = large_bin_layout(bin);
            while let Some(chunk) = NonNull::new(*head) {
                // SAFETY: (1) a cached chunk's first word links to the next of its length;
                // (2) chunks of this list came from `alloc::alloc` with this layout and are not
                // in use.
                unsafe {
                    *head = (*chunk.as_ptr()).next;
                    alloc::dealloc(chunk.as_ptr().cast(), layout);
                }
            }
        }
        self.large_cache_bytes = 0;
    }

    fn release_slabs(&mut self) {
        self.chunks_out = 0;
        for (slab, layout) in self.slabs.drain(..) {
            // SAFETY: the slab came from `alloc::alloc` with this layout and none of its chunks
            // is out.
            unsafe { alloc::dealloc(slab.as_ptr(), layout) };
        }
        self.free = ptr::null_mut();
        self.carve_next = ptr::null_mut();
        self.carve_left = 0;
    }
}

impl Default for GlobalSource {
    fn default() -> Self {
        Self::new()
    }
}

fn is_small_chunk(layout: Layout) -> bool {
    layout == SMALL_CHUNK
}

/// The layout a large chunk of `layout` is allocated with: up to [`LARGE_CACHE_MAX`], its length
/// rounded up to an eighth of its power of two (at most 12.5 % more), so that chunks of nearby
/// lengths can stand in for each other; longer ones as they are. The same layout comes back on
/// release, since the engine gives back the layout it asked for.
fn large_layout(layout: Layout) -> Option<Layout> {
    let size = layout.size();
    if size > LARGE_CACHE_MAX {
        return Some(layout);
    }
    let grain = 1usize << size.ilog2().saturating_sub(3);
    Layout::from_size_align(size.checked_next_multiple_of(grain)?, layout.align()).ok()
}

/// The cache list for chunks allocated with `layout`, a layout [`large_layout`] made, if such
/// chunks are cached: their alignment is a chunk's and their length within the cached range.
fn large_bin(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() != CHUNK_SIZE || !(LARGE_CACHE_MIN..=LARGE_CACHE_MAX).contains(&size) {
        return None;
    }
    // A rounded length is k eighths of its power of two, k from 8 to 15.
    let power = size.ilog2();
    let eighths = size >> (power - 3);
    Some(8 * (power - LARGE_CACHE_MIN.trailing_zeros()) as usize + eighths - 8)
}

/// The layout of the chunks in cache list `bin`: the inverse of [`large_bin`].
fn large_bin_layout(bin: usize) -> Layout {
    let power = LARGE_CACHE_MIN.trailing_zeros() as usize + bin / 8;
    let size = (8 + bin % 8) << (power - 3);
    // SAFETY: the alignment is a power of two, and the length (at most 2^19 for the lists
    // there are) rounded up to it is far below `isize::MAX`.
    unsafe { Layout::from_size_align_unchecked(size, CHUNK_SIZE) }
}

// SAFETY: (1) small chunks are disjoint `CHUNK_SIZE` runs of slabs, aligned to `CHUNK_SIZE`
// because slabs are, and each is handed out once until it comes back; (2) large chunks come from
// the global allocator, or its cache of freed ones, with the asked-for alignment and at least the
// asked-for length, and a cached chunk is handed out once until it comes back; (3) slabs are
// freed only when no chunk is out, and every pointer is derived from the slab or allocation it
// lies in.
unsafe impl ChunkSource for GlobalSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if is_small_chunk(layout) {
            let chunk = self.small_chunk()?;
            self.chunks_out += 1;
            return Some(chunk);
        }
        if layout.size() == 0 {
            return None;
        }
        let layout = large_layout(layout)?;
        if let Some(chunk) = self.cached_large(layout) {
            return Some(chunk);
        }
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { alloc::alloc(layout) })
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        if !is_small_chunk(layout) {
            // `acquire` allocated the chunk with the rounded layout, which succeeded then.
            let Some(layout) = large_layout(layout) else { return };
            // SAFETY: the caller returns a large chunk from `acquire`, which came from
            // `alloc::alloc` with this layout (or from the cache, where it went with it).
            unsafe { self.cache_large(chunk, layout) };
            return;
        }
        debug_assert!(self.chunks_out > 0);
        let entry = chunk.cast::<FreeChunk>().as_ptr();
        // SAFETY: the chunk is ours again and at least a word long.
        unsafe { (*entry).next = self.free };
        self.free = entry;
        self.chunks_out -= 1;
        if self.chunks_out == 0 {
            self.release_slabs();
        }
    }

    unsafe fn release_all_small(&mut self) -> bool {
        self.release_slabs();
        true
    }

    fn trim(&mut self) {
        self.release_large_cache();
    }
}

/// Asks the kernel to back a slab with transparent huge pages. Only a hint: where huge pages are
/// off, or the call fails, the slab works the same with small pages.
fn advise_huge_pages(slab: NonNull<u8>, len: usize) {
    #[cfg(all(target_os = "linux", not(miri)))]
    // SAFETY: the slab is `len` bytes just obtained from the global allocator and owned by this
    // source; the advice changes how the kernel backs the pages, never their contents.
    let _ = unsafe {
        rustix::mm::madvise(slab.as_ptr().cast(), len, rustix::mm::Advice::LinuxHugepage)
    };
    #[cfg(any(not(target_os = "linux"), miri))]
    let _ = (slab, len);
}

impl Drop for GlobalSource {
    fn drop(&mut self) {
        self.release_slabs();
        self.release_large_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cached_length_has_its_own_list_and_back() {
        let mut seen = [false; LARGE_BINS];
        for size in (16..=LARGE_CACHE_MAX + 4096).step_by(16) {
            let requested = Layout::from_size_align(size, CHUNK_SIZE).unwrap();
            let rounded = large_layout(requested).unwrap();
            assert!(rounded.size() >= size && rounded.size() - size <= size / 8, "{size}");
            if let Some(bin) = large_bin(rounded) {
                assert!(size > LARGE_CACHE_MIN / 2 && size <= LARGE_CACHE_MAX);
                assert_eq!(large_bin_layout(bin), rounded, "{size}");
                seen[bin] = true;
            }
        }
        assert!(seen.iter().all(|&seen| seen));
        let other_alignment = Layout::from_size_align(20_480, 2 * CHUNK_SIZE).unwrap();
        assert_eq!(large_bin(other_alignment), None);
    }
}
