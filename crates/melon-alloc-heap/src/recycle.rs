//! What the root sources share: the lengths of slabs and large chunks, and the lists that keep
//! freed chunks for reuse.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use melon_alloc_core::CHUNK_SIZE;

/// Chunks in the first slab; each new slab doubles, up to [`MAX_SLAB_CHUNKS`].
pub(crate) const FIRST_SLAB_CHUNKS: usize = 4;
/// Bytes of the largest slab: one transparent huge page on x86_64 and aarch64 Linux.
pub(crate) const HUGE_SLAB: usize = 2 << 20;
/// Chunks in the largest slab.
pub(crate) const MAX_SLAB_CHUNKS: usize = HUGE_SLAB / CHUNK_SIZE;

/// Freed large chunks a source keeps for reuse hold at most this many bytes together by default,
pub(crate) const LARGE_CACHE_BYTES: usize = 2 << 20;
/// each from this long
const LARGE_CACHE_MIN: usize = 8 << 10;
/// to this long. A longer chunk is allocated and freed with its exact size: filling it costs far
/// more than a call to the system or the global allocator.
const LARGE_CACHE_MAX: usize = 256 << 10;
/// Lengths a cached chunk can have: eight per power of two from the least to the most.
const LARGE_BINS: usize =
    8 * (LARGE_CACHE_MAX.trailing_zeros() - LARGE_CACHE_MIN.trailing_zeros()) as usize + 1;

/// A recycled chunk: its first word links to the next one.
#[derive(Debug)]
pub(crate) struct FreeChunk {
    pub(crate) next: *mut FreeChunk,
}

/// The layout a large chunk of `layout` is allocated with: up to [`LARGE_CACHE_MAX`], its length
/// rounded up to an eighth of its power of two (at most 12.5 % more), so that chunks of nearby
/// lengths can stand in for each other; longer ones as they are. The same layout comes back on
/// release, since the engine gives back the layout it asked for.
#[inline]
pub(crate) fn large_layout(layout: Layout) -> Option<Layout> {
    let size = layout.size();
    if size > LARGE_CACHE_MAX {
        return Some(layout);
    }
    let grain = 1usize << size.ilog2().saturating_sub(3);
    Layout::from_size_align(size.checked_next_multiple_of(grain)?, layout.align()).ok()
}

/// The cache list for chunks allocated with `layout`, a layout [`large_layout`] made, if such
/// chunks are cached: their alignment is a chunk's and their length within the cached range.
#[inline]
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
    // SAFETY: the alignment is a power of two, and the length (at most 2^18 for the lists
    // there are) rounded up to it is far below `isize::MAX`.
    unsafe { Layout::from_size_align_unchecked(size, CHUNK_SIZE) }
}

/// The small chunks of a source: carved in turn from slabs the source obtains, which grow from
/// [`FIRST_SLAB_CHUNKS`] chunks to a huge page, and kept on a list, linked through their first
/// words, once they come back.
#[derive(Debug)]
pub(crate) struct SmallChunks {
    free: *mut FreeChunk,
    /// The uncarved rest of the newest slab.
    carve_next: *mut u8,
    carve_left: u32,
    /// At most [`MAX_SLAB_CHUNKS`]; 32 bits, like `carve_left`, keep a pool within its size.
    next_slab_chunks: u32,
    /// Chunks handed out and not yet back.
    out: usize,
    /// The most chunks out at once since [`take_peak`](Self::take_peak) last read it.
    peak: usize,
}

impl SmallChunks {
    pub(crate) const fn new() -> Self {
        Self {
            free: ptr::null_mut(),
            carve_next: ptr::null_mut(),
            carve_left: 0,
            next_slab_chunks: FIRST_SLAB_CHUNKS as u32,
            out: 0,
            peak: 0,
        }
    }

    /// The most chunks out at once since the last call, and starts counting again.
    pub(crate) fn take_peak(&mut self) -> usize {
        core::mem::replace(&mut self.peak, self.out)
    }

    /// Chunks handed out and not yet back.
    pub(crate) fn out(&self) -> usize {
        self.out
    }

    /// The layout of the slab to add next: a huge page is aligned to its size, so that the
    /// kernel can back it with one.
    pub(crate) fn next_slab(&self) -> Layout {
        let size = self.next_slab_chunks as usize * CHUNK_SIZE;
        let align = if size == HUGE_SLAB { HUGE_SLAB } else { CHUNK_SIZE };
        // SAFETY: both alignments are powers of two, and the size is at most `HUGE_SLAB`.
        unsafe { Layout::from_size_align_unchecked(size, align) }
    }

    /// A freed chunk, or a fresh one from the newest slab; `None` when the source must add a
    /// slab first.
    pub(crate) fn take(&mut self) -> Option<NonNull<u8>> {
        let chunk = if let Some(chunk) = NonNull::new(self.free) {
            // SAFETY: freed chunks hold the link to the next one in their first word.
            self.free = unsafe { (*chunk.as_ptr()).next };
            chunk.cast()
        } else if self.carve_left > 0 {
            let chunk = NonNull::new(self.carve_next)?;
            self.carve_left -= 1;
            // SAFETY: `chunk` starts a `CHUNK_SIZE` run inside the newest slab; the next run, if
            // any, is still inside it, and one-past-the-end is allowed.
            self.carve_next = unsafe { chunk.as_ptr().add(CHUNK_SIZE) };
            chunk
        } else {
            return None;
        };
        self.out += 1;
        self.peak = self.peak.max(self.out);
        memcheck::handed_out(chunk, CHUNK_SIZE);
        Some(chunk)
    }

    /// Starts carving a slab with the layout [`next_slab`](Self::next_slab) gave.
    ///
    /// # Safety
    /// The slab is valid for reads and writes of that layout's size, aligned to it, and the
    /// source's alone until [`clear`](Self::clear).
    pub(crate) unsafe fn add_slab(&mut self, slab: NonNull<u8>) {
        self.carve_next = slab.as_ptr();
        self.carve_left = self.next_slab_chunks;
        self.next_slab_chunks = (self.next_slab_chunks * 2).min(MAX_SLAB_CHUNKS as u32);
    }

    /// Takes a chunk back.
    ///
    /// # Safety
    /// `chunk` came from [`take`](Self::take), has not come back since, and nothing but this
    /// list uses it afterwards.
    pub(crate) unsafe fn put(&mut self, chunk: NonNull<u8>) {
        debug_assert!(self.out > 0);
        // SAFETY: the chunk came from `take` and is the source's again: not on the list, and
        // not left to carve.
        unsafe { self.add_free(chunk) };
        self.out -= 1;
    }

    /// Calls `f` on every freed chunk; `f` must leave each chunk's first word alone.
    #[cfg(target_os = "linux")]
    pub(crate) fn for_each_free(&self, mut f: impl FnMut(NonNull<u8>)) {
        let mut next = self.free;
        while let Some(chunk) = NonNull::new(next) {
            // SAFETY: freed chunks hold the link to the next one in their first word.
            next = unsafe { (*chunk.as_ptr()).next };
            f(chunk.cast());
        }
    }

    /// Lets the system take back the pages of every freed chunk but the first, which keeps the
    /// link to the next freed chunk: what a source that cannot give its slabs or regions back,
    /// while some chunk is out, still returns of its free ones. A discarded page reads as zeros,
    /// or as what backs the memory, when next touched. Nothing under Miri, which has no
    /// `madvise`.
    #[cfg(target_os = "linux")]
    pub(crate) fn discard_free(&self) {
        if cfg!(miri) {
            return;
        }
        let page = crate::sys::page_size();
        if page >= CHUNK_SIZE {
            return;
        }
        self.for_each_free(|chunk| {
            // SAFETY: `page < CHUNK_SIZE`, so the second page is inside the chunk.
            let rest = unsafe { chunk.add(page) };
            // SAFETY: (1) the chunk is aligned to `CHUNK_SIZE`, a multiple of the page size, so
            // its pages after the first are whole pages the source holds; (2) a freed chunk's
            // contents beyond its link are nobody's.
            unsafe { crate::sys::discard(rest, CHUNK_SIZE - page) };
        });
    }

    /// Carves the next chunks afresh from `slab`, of `chunks` chunks, which the source kept when
    /// every chunk had come back and it gave its other slabs back; the next slab it adds grows
    /// as before.
    ///
    /// # Safety
    /// - No chunk is out. The list of freed chunks is dropped: the chunks of any other slab the
    ///   source keeps go back on it through [`add_free`](Self::add_free).
    /// - `slab` is valid for reads and writes of `chunks` chunks, aligned to a chunk, and the
    ///   source's alone until [`clear`](Self::clear).
    pub(crate) unsafe fn restart_from(&mut self, slab: NonNull<u8>, chunks: usize) {
        debug_assert_eq!(self.out, 0);
        self.free = ptr::null_mut();
        self.carve_next = slab.as_ptr();
        // A slab holds at most `MAX_SLAB_CHUNKS` chunks; fewer carved would only waste some.
        self.carve_left = chunks.min(MAX_SLAB_CHUNKS) as u32;
    }

    /// Puts a chunk of a kept slab on the list of freed chunks, without counting it as back: it
    /// was never out since [`restart_from`](Self::restart_from).
    ///
    /// # Safety
    /// As for `restart_from`: the chunk lies in a slab the source keeps, and is not on the list
    /// nor left to carve.
    pub(crate) unsafe fn add_free(&mut self, chunk: NonNull<u8>) {
        let entry = chunk.cast::<FreeChunk>().as_ptr();
        // SAFETY: the chunk is the source's and at least a word long.
        unsafe { (*entry).next = self.free };
        self.free = entry;
        memcheck::kept(chunk, CHUNK_SIZE);
    }

    /// Forgets every chunk: the source has taken its slabs back.
    pub(crate) fn clear(&mut self) {
        self.free = ptr::null_mut();
        self.carve_next = ptr::null_mut();
        self.carve_left = 0;
        self.out = 0;
    }
}

/// The list heads of a [`LargeCache`], one per cached length: a fixed array where the cache must
/// not allocate, a vector made on first use where an empty cache should stay small.
pub(crate) trait Heads {
    /// The heads there are: none, or one per cached length.
    fn heads(&mut self) -> &mut [*mut FreeChunk];

    /// Makes the heads if there are none yet; returns whether there are now.
    fn make(&mut self) -> bool;
}

/// The list heads inline, for a source that must not allocate.
pub(crate) type InlineHeads = [*mut FreeChunk; LARGE_BINS];

impl Heads for InlineHeads {
    fn heads(&mut self) -> &mut [*mut FreeChunk] {
        self
    }

    fn make(&mut self) -> bool {
        true
    }
}

impl Heads for Vec<*mut FreeChunk> {
    fn heads(&mut self) -> &mut [*mut FreeChunk] {
        self
    }

    /// Allocates the heads once. If that fails, chunks simply go back to where they came from.
    fn make(&mut self) -> bool {
        if self.is_empty() {
            if self.try_reserve_exact(LARGE_BINS).is_err() {
                return false;
            }
            // Within the capacity just reserved: no allocation.
            self.resize(LARGE_BINS, ptr::null_mut());
        }
        true
    }
}

/// Freed large chunks kept for reuse: a list per rounded length, linked through the chunks' first
/// words, so the cache needs no memory beyond its list heads.
#[derive(Debug)]
pub(crate) struct LargeCache<H> {
    bins: H,
    /// Bytes of the cached chunks.
    bytes: usize,
    /// The most bytes the cache may hold: 0 turns it off.
    limit: usize,
}

impl LargeCache<InlineHeads> {
    #[cfg(target_os = "linux")]
    pub(crate) const fn inline(limit: usize) -> Self {
        Self { bins: [ptr::null_mut(); LARGE_BINS], bytes: 0, limit }
    }
}

impl LargeCache<Vec<*mut FreeChunk>> {
    pub(crate) const fn lazy(limit: usize) -> Self {
        Self { bins: Vec::new(), bytes: 0, limit }
    }
}

impl<H: Heads> LargeCache<H> {
    /// Bytes of the cached chunks.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The layout to allocate a large chunk of `layout` with ([`large_layout`]), and a cached
    /// chunk of that layout if there is one; `None` for an empty or impossible layout.
    #[inline]
    pub(crate) fn lookup(&mut self, layout: Layout) -> Option<(Layout, Option<NonNull<u8>>)> {
        if layout.size() == 0 {
            return None;
        }
        let layout = large_layout(layout)?;
        Some((layout, self.take(layout)))
    }

    /// A cached chunk allocated with `layout`, if there is one.
    #[inline]
    pub(crate) fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let head = self.bins.heads().get_mut(large_bin(layout)?)?;
        let chunk = NonNull::new(*head)?;
        // SAFETY: a cached chunk is the cache's, and its first word links to the next of its
        // length.
        *head = unsafe { (*chunk.as_ptr()).next };
        self.bytes -= layout.size();
        let chunk = chunk.cast();
        memcheck::handed_out(chunk, layout.size());
        Some(chunk)
    }

    /// A large chunk for `layout`, with the length to release it with: a cached one of the
    /// length `layout` rounds to, or else a cached one of the next two lengths no longer than
    /// `most` ([`take_longer`](LargeCache::take_longer)), or else a new one from `allocate`,
    /// which gets the rounded layout.
    #[inline]
    pub(crate) fn acquire(
        &mut self,
        layout: Layout,
        most: usize,
        allocate: impl FnOnce(Layout) -> Option<NonNull<u8>>,
    ) -> Option<(NonNull<u8>, usize)> {
        let (rounded, cached) = self.lookup(layout)?;
        let chunk = match cached {
            Some(chunk) => chunk,
            None => {
                if let Some(longer) = self.take_longer(rounded, most) {
                    return Some(longer);
                }
                allocate(rounded)?
            }
        };
        // The bytes the rounding adds lie past the chunk its engine knows of: an overrun there
        // is one past the block.
        memcheck::closed_tail(chunk, layout.size(), rounded.size());
        Some((chunk, layout.size()))
    }

    /// A cached chunk of one of the next two lengths above `rounded` (a length [`lookup`]
    /// rounds to) that is no longer than `most`, with its length: a request whose own length
    /// has none cached takes it rather than new memory. Released with a layout of that length,
    /// it comes back to its own list.
    ///
    /// [`lookup`]: LargeCache::lookup
    pub(crate) fn take_longer(
        &mut self,
        rounded: Layout,
        most: usize,
    ) -> Option<(NonNull<u8>, usize)> {
        let bin = large_bin(rounded)?;
        for longer in (bin + 1..LARGE_BINS).take(2) {
            let layout = large_bin_layout(longer);
            if layout.size() > most {
                break;
            }
            // A chunk of exactly `CHUNK_SIZE` bytes would come back with a small chunk's layout
            // and be taken for one.
            if layout.size() == CHUNK_SIZE {
                continue;
            }
            if let Some(chunk) = self.take(layout) {
                return Some((chunk, layout.size()));
            }
        }
        None
    }

    /// Keeps a freed chunk allocated with `layout` if its length is cached and there is room;
    /// returns whether it did. A chunk it does not keep is still the caller's.
    ///
    /// # Safety
    /// - `chunk` is valid for writes of `layout.size()` bytes.
    /// - Nothing but this cache uses the chunk afterwards, if it is kept.
    #[inline]
    pub(crate) unsafe fn put(&mut self, chunk: NonNull<u8>, layout: Layout) -> bool {
        let Some(bin) = large_bin(layout) else { return false };
        if self.bytes + layout.size() > self.limit || !self.bins.make() {
            return false;
        }
        let head = &mut self.bins.heads()[bin];
        let entry = chunk.cast::<FreeChunk>().as_ptr();
        // SAFETY: the caller hands the chunk over, valid for `layout.size()` bytes, which is at
        // least `LARGE_CACHE_MIN` since `large_bin` gave it a list: room for the link.
        unsafe { (*entry).next = *head };
        *head = entry;
        self.bytes += layout.size();
        memcheck::kept(chunk, layout.size());
        true
    }

    /// Takes any cached chunk out, with the layout it was allocated with, to give it back.
    pub(crate) fn pop(&mut self) -> Option<(NonNull<u8>, Layout)> {
        let bin = self.bins.heads().iter().position(|head| !head.is_null())?;
        let layout = large_bin_layout(bin);
        Some((self.take(layout)?, layout))
    }
}

/// Memcheck's view of the chunks a source keeps, with the `valgrind` feature: inaccessible but
/// for the word that links each to the next, so that a read or a write of a block of a chunk its
/// pool gave back, or of the bytes past a large block, is reported as it is for `malloc`'s freed
/// memory; accessible again, holding what it holds, when the source hands the chunk out. The
/// engine gives a chunk back accessible, as it got it, and registers each block it hands out as
/// new, undefined memory. Without the feature, nothing.
mod memcheck {
    use core::ptr::NonNull;

    /// Closes a chunk of `len` bytes that the source keeps, after its link.
    #[cfg_attr(not(feature = "valgrind"), allow(unused_variables))]
    pub(super) fn kept(chunk: NonNull<u8>, len: usize) {
        #[cfg(feature = "valgrind")]
        {
            let link = core::mem::size_of::<super::FreeChunk>();
            melon_alloc_core::plumbing::memcheck_no_access(
                chunk.as_ptr().wrapping_add(link),
                len.saturating_sub(link),
            );
        }
    }

    /// Opens a chunk of `len` bytes that the source hands out.
    #[cfg_attr(not(feature = "valgrind"), allow(unused_variables))]
    pub(super) fn handed_out(chunk: NonNull<u8>, len: usize) {
        #[cfg(feature = "valgrind")]
        melon_alloc_core::plumbing::memcheck_defined(chunk.as_ptr(), len);
    }

    /// Closes the bytes from `len` to `allocated` of a chunk handed out as `len` bytes long.
    #[cfg_attr(not(feature = "valgrind"), allow(unused_variables))]
    pub(super) fn closed_tail(chunk: NonNull<u8>, len: usize, allocated: usize) {
        #[cfg(feature = "valgrind")]
        melon_alloc_core::plumbing::memcheck_no_access(
            chunk.as_ptr().wrapping_add(len),
            allocated.saturating_sub(len),
        );
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
