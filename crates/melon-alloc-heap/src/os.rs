//! The source of a pool that is the global allocator: chunks mapped from the operating system.

use core::alloc::Layout;
use core::mem::size_of;
use core::ptr::{self, NonNull};

use melon_alloc_core::{ChunkSource, CHUNK_SIZE, SMALL_CHUNK};

use crate::recycle::{
    large_layout, InlineHeads, LargeCache, SmallChunks, HUGE_SLAB, LARGE_CACHE_BYTES,
};
use crate::sys;

/// The record at the end of a region of small chunks, in the page mapped after its last chunk:
/// regions are linked through these, so the source finds them again without a list of its own.
struct RegionTail {
    /// The region mapped before this one.
    next: *mut RegionTail,
    /// Chunks in this region, which start `chunks * CHUNK_SIZE` bytes before this record.
    chunks: usize,
}

/// Takes memory straight from the operating system (`mmap`), for a pool that is the
/// `#[global_allocator]`.
///
/// A pool that serves the global allocator cannot take its chunks from the global allocator: the
/// call would come back to the pool, whose lock its caller already holds. This source never
/// calls it, neither for chunks nor for its own bookkeeping, which lives inside the mapped
/// memory: freed chunks link through their first word, and each region of small chunks ends in a
/// page that links it to the previous region.
///
/// Small chunks are carved from regions that grow from 64 KiB to 2 MiB; 2 MiB regions are
/// aligned to 2 MiB and marked for transparent huge pages. Freed small chunks go on a list and
/// are handed out again; regions stay mapped while the source lives, since a program that freed
/// its memory usually allocates again soon.
///
/// Large chunks are mapped on their own, aligned, and are whole pages: the source's
/// [`granule`](ChunkSource::granule) is the page, so that a pool's limit counts the pages its large
/// blocks map (where a page is longer than a chunk, the granule stays a chunk, and a limit does not
/// count the rest of each large block's last page). As with [`GlobalSource`](crate::GlobalSource),
/// their lengths up to 256 KiB are rounded up to an eighth of their power of two, and freed ones of
/// 8 to 256 KiB, up to 2 MiB together, are kept for reuse, so that a program which frees and
/// allocates buffers of a few dozen kilobytes in turn does not pay a map and an unmap for each. A
/// limit does not count that rounding, which above 64 KiB is coarser than a page: what a pool maps
/// can pass its limit by it, at most an eighth.
///
/// [`trim`](ChunkSource::trim), which the engine calls from its own `trim`, unmaps the cached
/// large chunks; then it either unmaps every region, if no small chunk is out, or lets the system
/// take back the pages of each free small chunk but its first (which holds the list link),
/// keeping the address range.
///
/// A forked child inherits the mappings, copy-on-write, like the rest of the parent's memory, so
/// the source goes on working in both processes.
///
/// # Soundness
/// As for [`GlobalSource`](crate::GlobalSource): handing out chunks and `trim` (which unmaps or
/// discards only chunks nobody holds) are safe, taking a chunk back is unsafe, and dropping the
/// source unmaps every chunk it handed out. As the source of a `#[global_allocator]`, the pool
/// lives in a `static` and is never dropped.
///
/// # Examples
///
/// ```
/// use melon_alloc_heap::{LockedHeapPool, OsSource};
///
/// // As a global allocator: `#[global_allocator] static POOL: LockedHeapPool = ...;`
/// static POOL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), None);
///
/// let block = POOL.alloc(100).unwrap();
/// // SAFETY: the block came from `POOL` and is not used again.
/// unsafe { POOL.try_free(block) }.unwrap();
/// assert_eq!(POOL.stats().live_blocks, 0);
/// ```
#[derive(Debug)]
pub struct OsSource {
    small: SmallChunks,
    /// The newest region's tail record; the regions before it follow from there.
    regions: *mut RegionTail,
    /// Bytes of chunks in all regions.
    region_bytes: usize,
    /// Freed large chunks kept for reuse.
    large_cache: LargeCache<InlineHeads>,
}

// SAFETY: the source exclusively owns its regions and cached chunks; its raw pointers point only
// into them, so it can move between threads with them.
unsafe impl Send for OsSource {}

impl OsSource {
    /// A source that has mapped nothing yet; `const`, so that it can initialize a `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_heap::{LockedHeapPool, OsSource};
    ///
    /// static POOL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), Some(1 << 20));
    /// assert_eq!(POOL.available(), Some(1 << 20));
    /// ```
    pub const fn new() -> Self {
        Self {
            small: SmallChunks::new(),
            regions: ptr::null_mut(),
            region_bytes: 0,
            large_cache: LargeCache::inline(LARGE_CACHE_BYTES),
        }
    }

    /// Bytes of freed large chunks kept for reuse.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_core::{ChunkSource, CHUNK_SIZE};
    /// use melon_alloc_heap::OsSource;
    /// use std::alloc::Layout;
    ///
    /// let mut source = OsSource::new();
    /// let layout = Layout::from_size_align(4 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    /// let chunk = source.acquire(layout).unwrap();
    /// // SAFETY: the chunk came from `source` with `layout` and is not used again.
    /// unsafe { source.release(chunk, layout) };
    /// assert_eq!(source.cached_large_bytes(), 4 * CHUNK_SIZE);
    /// source.trim();
    /// assert_eq!(source.cached_large_bytes(), 0);
    /// ```
    pub fn cached_large_bytes(&self) -> usize {
        self.large_cache.bytes()
    }

    /// Bytes of the regions mapped for small chunks, whether their chunks are out or free.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_core::{ChunkSource, SMALL_CHUNK};
    /// use melon_alloc_heap::OsSource;
    ///
    /// let mut source = OsSource::new();
    /// assert_eq!(source.region_bytes(), 0);
    /// let chunk = source.acquire(SMALL_CHUNK).unwrap();
    /// assert!(source.region_bytes() >= SMALL_CHUNK.size());
    /// // SAFETY: the chunk came from `source` as a small chunk and is not used again.
    /// unsafe { source.release(chunk, SMALL_CHUNK) };
    /// source.trim();
    /// assert_eq!(source.region_bytes(), 0);
    /// ```
    pub fn region_bytes(&self) -> usize {
        self.region_bytes
    }

    fn small_chunk(&mut self) -> Option<NonNull<u8>> {
        if let Some(chunk) = self.small.take() {
            return Some(chunk);
        }
        let layout = self.small.next_slab();
        let bytes = layout.size();
        let region = sys::map(bytes + size_of::<RegionTail>(), layout.align())?;
        if bytes == HUGE_SLAB {
            sys::advise_huge_pages(region, bytes);
        }
        // SAFETY: the mapping holds the chunks and, after them, the rounded-up page that holds
        // the tail record.
        let tail = unsafe { region.add(bytes) }.cast::<RegionTail>();
        let chunks = bytes / CHUNK_SIZE;
        // SAFETY: the tail is in the fresh mapping, aligned (a page boundary) and the source's.
        unsafe { tail.write(RegionTail { next: self.regions, chunks }) };
        self.regions = tail.as_ptr();
        self.region_bytes += bytes;
        // SAFETY: the region's chunks are mapped with the slab's layout, and stay the source's
        // until `release_regions`.
        unsafe { self.small.add_slab(region) };
        self.small.take()
    }

    /// Unmaps every region: the caller guarantees that no small chunk is out.
    fn release_regions(&mut self) {
        while let Some(tail) = NonNull::new(self.regions) {
            // SAFETY: tail records are the source's and intact while their region is mapped.
            let RegionTail { next, chunks } = unsafe { tail.as_ptr().read() };
            let bytes = chunks * CHUNK_SIZE;
            // SAFETY: the region's chunks start `bytes` before its tail record, in the same
            // mapping.
            let region = unsafe { tail.cast::<u8>().sub(bytes) };
            // SAFETY: (1) the region and its tail page are one mapping from `sys::map` of this
            // length; (2) no chunk of it is out, and the record was read above.
            unsafe { sys::unmap(region, bytes + size_of::<RegionTail>()) };
            self.regions = next;
        }
        self.region_bytes = 0;
        self.small.clear();
    }
}

impl Default for OsSource {
    /// The same as [`OsSource::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let source = melon_alloc_heap::OsSource::default();
    /// assert_eq!(source.region_bytes(), 0);
    /// ```
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: (1) small chunks are disjoint `CHUNK_SIZE` runs of mapped regions, aligned to
// `CHUNK_SIZE` because regions are, and each is handed out once until it comes back; (2) large
// chunks are mappings of their own, aligned as asked and at least as long as asked (or cached
// ones of the same rounded layout, or from `take_longer` exactly the length returned with them,
// at most `most`), each handed out once until it comes back; (3) regions are
// unmapped only when no small chunk is out, and every pointer is derived from the mapping it lies
// in.
unsafe impl ChunkSource for OsSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // No longer chunk than asked: a length of 0 rules them all out.
        self.acquire_at_least(layout, 0).map(|(chunk, _)| chunk)
    }

    fn acquire_at_least(&mut self, layout: Layout, most: usize) -> Option<(NonNull<u8>, usize)> {
        if layout == SMALL_CHUNK {
            return Some((self.small_chunk()?, layout.size()));
        }
        self.large_cache.acquire(layout, most, |rounded| sys::map(rounded.size(), rounded.align()))
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        if layout != SMALL_CHUNK {
            // `acquire` mapped the chunk with the rounded layout, which succeeded then.
            let Some(layout) = large_layout(layout) else { return };
            // SAFETY: the caller hands back a large chunk from `acquire`, valid for the rounded
            // length it was allocated with.
            if !unsafe { self.large_cache.put(chunk, layout) } {
                // SAFETY: the chunk is a mapping of its own of this length (or a cached one of
                // the same rounded layout), and nothing uses it any more.
                unsafe { sys::unmap(chunk, layout.size()) };
            }
            return;
        }
        // SAFETY: the caller hands back a small chunk from `acquire`, which took it from the list.
        unsafe { self.small.put(chunk) };
    }

    unsafe fn release_all_small(&mut self) -> bool {
        self.release_regions();
        true
    }

    /// Unmaps the cached large chunks; then unmaps every region if no small chunk is out.
    fn trim(&mut self) {
        self.keep_at_most(0);
        if self.small.out() == 0 {
            self.release_regions();
        }
    }

    /// Lets the system take back the pages of the free small chunks but the first of each,
    /// which regions that still have chunks out keep.
    fn discard_free(&mut self) {
        self.small.discard_free();
    }

    fn kept_bytes(&self) -> usize {
        self.large_cache.bytes()
    }

    /// Whole pages, up to a chunk: a large chunk is a mapping of its own, which takes whole
    /// pages, so that a limit counts them.
    #[inline]
    fn granule(&self) -> usize {
        sys::page_size().min(CHUNK_SIZE)
    }

    /// Gives back cached large chunks, the shortest first, until at most `bytes` are cached.
    fn keep_at_most(&mut self, bytes: usize) {
        while self.large_cache.bytes() > bytes {
            let Some((chunk, layout)) = self.large_cache.pop() else { break };
            // SAFETY: cached chunks were mapped with the length they are cached under, and are
            // not in use.
            unsafe { sys::unmap(chunk, layout.size()) };
        }
    }
}

impl Drop for OsSource {
    fn drop(&mut self) {
        self.release_regions();
        self.keep_at_most(0);
    }
}

// Miri cannot run these: its `mmap` shim reports unmapping part of a mapping, which is how
// regions and large chunks get their alignment, as undefined behaviour (to Miri's memory model it
// is a partial deallocation), and has no `madvise`. The engine's use of a source
// runs under Miri with `GlobalSource` and the core's `RegionSource`.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::recycle::MAX_SLAB_CHUNKS;

    fn large(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// Writes the first and last byte of a chunk, to show that it is mapped and writable.
    fn touch(chunk: NonNull<u8>, len: usize) {
        // SAFETY: the chunk is `len` bytes, just handed out and owned by the test.
        unsafe {
            chunk.as_ptr().write(1);
            chunk.as_ptr().add(len - 1).write(2);
        }
    }

    #[test]
    fn small_chunks_are_aligned_disjoint_and_reused() {
        let mut source = OsSource::new();
        let mut chunks = Vec::new();
        // Past the first regions, into two of the largest.
        for _ in 0..(2 * MAX_SLAB_CHUNKS + 200) {
            let chunk = source.acquire(SMALL_CHUNK).unwrap();
            assert_eq!(chunk.as_ptr().addr() % CHUNK_SIZE, 0);
            touch(chunk, CHUNK_SIZE);
            chunks.push(chunk);
        }
        let mut addresses: Vec<usize> = chunks.iter().map(|chunk| chunk.as_ptr().addr()).collect();
        addresses.sort_unstable();
        assert!(addresses.windows(2).all(|pair| pair[1] - pair[0] >= CHUNK_SIZE));
        let mapped = source.region_bytes();
        assert!(mapped >= chunks.len() * CHUNK_SIZE);
        let last = chunks.pop().unwrap();
        // SAFETY: the chunk came from `source` as a small chunk and is not used again.
        unsafe { source.release(last, SMALL_CHUNK) };
        assert_eq!(source.acquire(SMALL_CHUNK), Some(last));
        assert_eq!(source.region_bytes(), mapped);
        chunks.push(last);
        for chunk in chunks {
            // SAFETY: as above.
            unsafe { source.release(chunk, SMALL_CHUNK) };
        }
        // Regions stay mapped until trimmed: a global allocator's program allocates again.
        assert_eq!(source.region_bytes(), mapped);
        source.trim();
        assert_eq!(source.region_bytes(), 0);
        let again = source.acquire(SMALL_CHUNK).unwrap();
        touch(again, CHUNK_SIZE);
        // SAFETY: as above.
        unsafe { source.release(again, SMALL_CHUNK) };
    }

    #[test]
    fn large_chunks_are_aligned_and_cached_by_rounded_length() {
        let mut source = OsSource::new();
        let layout = large(40_000, CHUNK_SIZE);
        let chunk = source.acquire(layout).unwrap();
        assert_eq!(chunk.as_ptr().addr() % CHUNK_SIZE, 0);
        touch(chunk, layout.size());
        // SAFETY: the chunk came from `source` with `layout` and is not used again.
        unsafe { source.release(chunk, layout) };
        let rounded = large_layout(layout).unwrap().size();
        assert_eq!(source.cached_large_bytes(), rounded);
        // A nearby length rounds the same way and gets the cached chunk.
        let nearby = large(rounded - 16, CHUNK_SIZE);
        assert_eq!(source.acquire(nearby), Some(chunk));
        assert_eq!(source.cached_large_bytes(), 0);
        // SAFETY: as above, with `nearby`.
        unsafe { source.release(chunk, nearby) };
        source.trim();
        assert_eq!(source.cached_large_bytes(), 0);

        for (size, align) in [(1 << 20, CHUNK_SIZE), (48 << 10, 1 << 20), (3 << 20, 2 << 20)] {
            let layout = large(size, align);
            let chunk = source.acquire(layout).unwrap();
            assert_eq!(chunk.as_ptr().addr() % align, 0, "{size} {align}");
            touch(chunk, size);
            // SAFETY: as above.
            unsafe { source.release(chunk, layout) };
        }
        // Only chunk-aligned lengths up to 256 KiB are kept.
        assert_eq!(source.cached_large_bytes(), 0);
    }

    #[test]
    fn the_large_cache_holds_at_most_its_limit() {
        let mut source = OsSource::new();
        let layout = large(256 << 10, CHUNK_SIZE);
        let chunks: Vec<_> = (0..12).map(|_| source.acquire(layout).unwrap()).collect();
        for chunk in chunks {
            // SAFETY: the chunk came from `source` with `layout` and is not used again.
            unsafe { source.release(chunk, layout) };
        }
        assert_eq!(source.cached_large_bytes(), LARGE_CACHE_BYTES);
    }
}
