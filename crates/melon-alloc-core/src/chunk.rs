//! Chunks: the aligned runs of memory a pool takes from its source, and the header at the start
//! of each.
//!
//! Every chunk is aligned to [`CHUNK_SIZE`], and every block pointer lies within the first
//! [`CHUNK_SIZE`] bytes of its chunk, so the header of a block's chunk is found by clearing the low
//! bits of its address. That is what lets blocks go without a header of their own.
//!
//! A small chunk is either whole, one size class over all of it, or split into [`PAGES`] pages
//! of [`PAGE_SIZE`] bytes, each with a header of its own at its start and a class of its own: a
//! pool that uses a class only a little spends a page on it, not a chunk. Every page header has
//! [`PAGE_MAGIC`], so a block's header is its chunk's unless the chunk's first header says the
//! chunk is paged, and then its page's: one more test, with no header on the block.

use core::alloc::Layout;
use core::ptr;

/// Size and alignment of the chunks that hold small blocks: 16 KiB, or 4 KiB with the
/// `small-chunks` feature. Large blocks get a chunk of their own, aligned the same way and as
/// long as they need.
pub const CHUNK_SIZE: usize = if cfg!(feature = "small-chunks") { 4 << 10 } else { 16 << 10 };

/// The layout of every small chunk: the layout an engine asks its source for.
pub const SMALL_CHUNK: Layout = match Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE) {
    Ok(layout) => layout,
    Err(_) => panic!("CHUNK_SIZE is a power of two"),
};

/// Bytes at the start of every chunk, and of every page, that hold its [`ChunkHeader`].
pub(crate) const HEADER_SIZE: usize = 64;

/// Whether chunks are ever split into pages: with the `pages` feature, which leaves the code out
/// of builds that make no child pools (firmware), and never for the 4 KiB chunks of the
/// `small-chunks` feature, whose classes already fit a small pool.
pub(crate) const SPLIT: bool = cfg!(feature = "pages") && !cfg!(feature = "small-chunks");

/// Pages a paged chunk is split into; one where chunks are never split.
pub(crate) const PAGES: usize = if SPLIT { 4 } else { 1 };

/// Bytes of each page of a paged chunk.
pub(crate) const PAGE_SIZE: usize = CHUNK_SIZE / PAGES;

/// Tells a chunk header from any other memory in the invariant scan and debug checks.
pub(crate) const SMALL_MAGIC: u16 = 0x4d53; // "MS"
pub(crate) const LARGE_MAGIC: u16 = 0x4d4c; // "ML"
/// The magic of every page header of a paged chunk, the first one included: what tells a
/// block's lookup to go on to its page.
pub(crate) const PAGE_MAGIC: u16 = 0x4d50; // "MP"

/// An `event` count that is never reached: the free path of a chunk with this `event` never
/// leaves its fast path.
pub(crate) const NEVER: u32 = u32::MAX;

/// Which of its engine's lists a chunk is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum ChunkState {
    /// A small chunk on its class's `avail` list: the head, which blocks are taken from, or one
    /// that has had blocks freed since it was full.
    Avail = 0,
    /// A small chunk whose blocks are all in use, on its class's `full` list.
    Full = 1,
    /// A chunk that is one large block, on the engine's `large` list.
    Large = 2,
    /// An empty small chunk kept for reuse, on its class's `spare` list.
    Spare = 3,
    /// A page of a paged chunk that no class has, on the engine's list of unused pages.
    Unused = 4,
}

/// A free small block: its first word links to the next free block of the same list.
#[repr(C)]
pub(crate) struct FreeBlock {
    pub(crate) next: *mut FreeBlock,
}

/// The bookkeeping at the start of every chunk.
///
/// A small chunk has two free lists, as in mimalloc: allocation pops from `free` and a free
/// pushes onto `local_free`, so the two paths do not wait on each other's stores. Only the head
/// chunk of a class allocates; when its `free` list runs dry, `local_free` becomes the new
/// `free`. So only a head chunk ever has a non-empty `free` list, and for every other chunk the
/// blocks in use are `carved - local_count()`.
#[repr(C)]
pub(crate) struct ChunkHeader {
    /// [`SMALL_MAGIC`] or [`LARGE_MAGIC`].
    pub(crate) magic: u16,
    /// Which list the chunk is on.
    pub(crate) state: ChunkState,
    /// Size class of a small chunk; unused for a large one.
    pub(crate) class: u8,
    /// Offset of the data of a large chunk; in the first page of a paged chunk, how many of
    /// the chunk's pages have a class (are not [`ChunkState::Unused`]); unused otherwise.
    pub(crate) data_offset: u16,
    /// Blocks carved so far: blocks whose [`carve_index`](ChunkHeader::carve_index) is this or
    /// more have never been handed out.
    pub(crate) carved: u16,
    /// Frees left before one must leave its fast path: `event` less the entries on
    /// `local_free` ([`local_count`](ChunkHeader::local_count)), modulo 2^32. A free counts it
    /// down and takes the slow path when it reaches zero, one decrement and one test.
    pub(crate) countdown: u32,
    /// The `local_count` at which a free must leave its fast path: the chunk became empty, or
    /// stopped being full. [`NEVER`] for the head chunk of a class.
    pub(crate) event: u32,
    /// Address of the engine that holds the chunk.
    pub(crate) owner: *const (),
    /// Free blocks that allocation takes from.
    pub(crate) free: *mut FreeBlock,
    /// Blocks freed since `free` was last refilled.
    pub(crate) local_free: *mut FreeBlock,
    pub(crate) next: *mut ChunkHeader,
    pub(crate) prev: *mut ChunkHeader,
    /// Bytes of the chunk, as taken from the source, or of the page.
    pub(crate) span: usize,
}

impl ChunkHeader {
    /// The size class of a small chunk, as an index into the per-class tables and lists.
    ///
    /// Every header an engine writes holds a class below `CLASS_COUNT`; the bound is applied
    /// here as well so that a read of a class from memory never needs a bounds check, and so
    /// can never panic.
    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        usize::from(self.class).min(crate::class::CLASS_COUNT - 1)
    }

    /// Entries on `local_free`.
    pub(crate) fn local_count(&self) -> u32 {
        self.event.wrapping_sub(self.countdown)
    }

    /// Sets the `local_count` at which a free leaves its fast path, keeping `local_count`.
    pub(crate) fn set_event(&mut self, event: u32) {
        let local = self.local_count();
        self.event = event;
        self.countdown = event.wrapping_sub(local);
    }

    /// Empties the count of `local_free`, whose entries moved to `free` or were dropped.
    pub(crate) fn clear_local_count(&mut self) {
        self.countdown = self.event;
    }

    /// Makes `local_free` the `free` list, which must be empty, and empties it and its count:
    /// what an allocation that finds `free` empty does before anything else.
    #[inline]
    pub(crate) fn take_local_list(&mut self) {
        self.free = self.local_free;
        self.local_free = ptr::null_mut();
        self.clear_local_count();
    }

    /// The block a small chunk, or page, carves first. Every page starts with its header and
    /// first block at the same offsets, so the blocks short-lived pools write first would all
    /// fall into the same few sets of a cache that indexes by the address bits within 128 KiB or
    /// so; a chunk or page of [`COLOURED_MAX_BLOCKS`] blocks or fewer starts from one its address
    /// picks instead ([`colour`]), and carves on in address order round to the one before it. 0,
    /// the first block, for the others, which carve in batches, and on bare metal.
    #[inline]
    pub(crate) fn carve_start(&self) -> usize {
        #[cfg(not(target_os = "none"))]
        {
            let capacity = usize::from(self.capacity());
            if capacity <= COLOURED_MAX_BLOCKS {
                // A power of two the compiler knows: a shift, where `span` would be a division.
                let span = if self.is_page() { PAGE_SIZE } else { CHUNK_SIZE };
                return colour(ptr::from_ref(self).addr() / span) % capacity.max(1);
            }
        }
        0
    }

    /// The place of block `index` (counted from the chunk's first block) in the order the chunk
    /// carves its blocks: from [`carve_start`](ChunkHeader::carve_start) on, round to the one
    /// before it. An index past the chunk's last block (a pointer into the bytes after it) is
    /// its own place, at or past every count of carved blocks, never one of the order's.
    #[inline]
    pub(crate) fn carve_index(&self, index: usize) -> usize {
        let start = self.carve_start();
        let capacity = usize::from(self.capacity());
        if start == 0 || index >= capacity {
            index
        } else if index >= start {
            index - start
        } else {
            index + capacity - start
        }
    }

    /// The block at place `place` of the carving order, below the capacity: the inverse of
    /// [`carve_index`](ChunkHeader::carve_index). Only chunks of a few blocks need it, which carve
    /// one block at a time on hosted targets.
    #[cfg(not(target_os = "none"))]
    #[inline]
    pub(crate) fn carved_block(&self, place: usize) -> usize {
        let index = self.carve_start() + place;
        let capacity = usize::from(self.capacity());
        // The start and the place are both below the capacity: at most one round.
        if index >= capacity {
            index - capacity
        } else {
            index
        }
    }

    /// Whether this is a page of a paged chunk: never in a build without pages, where the
    /// compiler drops every path that handles one.
    #[inline(always)]
    pub(crate) fn is_page(&self) -> bool {
        SPLIT && self.magic == PAGE_MAGIC
    }

    /// Blocks a small chunk, or page, of this header's class holds.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> u16 {
        let class = self.class();
        if self.is_page() {
            crate::class::PAGE_CAPACITY[class]
        } else {
            crate::class::CAPACITY[class]
        }
    }
}

static_assertions::const_assert!(core::mem::size_of::<ChunkHeader>() <= HEADER_SIZE);
static_assertions::const_assert!(CHUNK_SIZE.is_power_of_two());
static_assertions::const_assert!(PAGE_SIZE.is_power_of_two() && PAGE_SIZE >= 4 * HEADER_SIZE);
static_assertions::const_assert!(HEADER_SIZE % crate::class::MIN_ALIGN == 0);
// A large block's data offset is at most `CHUNK_SIZE`, and a chunk holds at most
// `CHUNK_SIZE / 16` blocks: both must fit the header's 16-bit fields.
static_assertions::const_assert!(CHUNK_SIZE <= u16::MAX as usize);

/// Walks a free list and counts its entries, giving up (with `None`) after `limit` entries: a
/// longer list has a cycle.
///
/// # Safety
/// Every entry on the list is a block whose first word is readable.
pub(crate) unsafe fn list_len(mut entry: *mut FreeBlock, limit: u16) -> Option<u16> {
    let mut len = 0;
    while !entry.is_null() {
        if len == limit {
            return None;
        }
        len += 1;
        // SAFETY: forwarded from the caller.
        entry = unsafe { read_link(entry) };
    }
    Some(len)
}

/// Bytes of a free block that hold its link.
#[cfg(feature = "valgrind")]
const LINK: usize = core::mem::size_of::<FreeBlock>();

/// Reads the link in the first word of a free block.
///
/// With the `valgrind` feature, memcheck keeps free blocks inaccessible; the link is opened for
/// the read alone, so that only the engine's own accesses to it go unreported.
///
/// # Safety
/// `entry` is a free block whose first word holds a link.
#[inline(always)]
pub(crate) unsafe fn read_link(entry: *mut FreeBlock) -> *mut FreeBlock {
    #[cfg(feature = "valgrind")]
    crate::valgrind::defined(entry.cast(), LINK);
    // SAFETY: forwarded from the caller.
    let next = unsafe { (*entry).next };
    #[cfg(feature = "valgrind")]
    crate::valgrind::no_access(entry.cast(), LINK);
    next
}

/// Writes the link in the first word of a block that is free, or being freed.
///
/// With the `valgrind` feature, the link is opened for the write alone, as in [`read_link`].
///
/// # Safety
/// `entry` is a block of at least 16 bytes, aligned to 16, that no one else uses.
#[inline(always)]
pub(crate) unsafe fn write_link(entry: *mut FreeBlock, next: *mut FreeBlock) {
    #[cfg(feature = "valgrind")]
    crate::valgrind::undefined(entry.cast(), LINK);
    // SAFETY: forwarded from the caller.
    unsafe { (*entry).next = next };
    #[cfg(feature = "valgrind")]
    crate::valgrind::no_access(entry.cast(), LINK);
}

/// The first header of the chunk that holds the block at `block`: the chunk's own, or that of
/// its first page if it is paged.
///
/// Computing the address is always safe; reading through it is only valid when `block` really
/// is a block of some chunk.
#[inline(always)]
pub(crate) fn chunk_of(block: *mut u8) -> *mut ChunkHeader {
    block.map_addr(|addr| addr & !(CHUNK_SIZE - 1)).cast()
}

/// [`chunk_of`] as a pointer that may read the header whatever `block` may reach: its
/// provenance is the one the engine exposed when it took the chunk from its source.
///
/// A caller's pointer to a block may carry provenance over that block alone (std's `Box<[T]>`
/// hands `GlobalAlloc::dealloc` such a pointer), so the header outside it is reached through the
/// chunk's exposed provenance rather than the block pointer's. On hardware both are the same
/// address; under Miri this is the access the aliasing model checks.
#[inline(always)]
pub(crate) fn exposed_chunk_of(block: *mut u8) -> *mut ChunkHeader {
    core::ptr::with_exposed_provenance_mut(chunk_of(block).addr())
}

/// The header of the page that holds `block`, were its chunk paged. Always safe to compute,
/// as [`chunk_of`] is.
#[inline(always)]
pub(crate) fn page_of(block: *mut u8) -> *mut ChunkHeader {
    block.map_addr(|addr| addr & !(PAGE_SIZE - 1)).cast()
}

/// A number to pick a colour from (`colour(n) % colours`) for the `n`th unit of memory (chunk,
/// page or block span) from address 0: a multiplicative hash of all of `n`'s bits, so that two
/// units a cache's set period apart (128 KiB for a 1 MiB 8-way cache) get colours as different as
/// any two others, where `n % colours` alone would give them the same one.
#[inline]
pub(crate) fn colour(n: usize) -> usize {
    // 2^64 divided by the golden ratio: its product with `n` mixes every bit of `n` into the
    // high bits kept.
    ((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

/// The most blocks a small chunk, or page, may hold to carve from a block its address picks
/// ([`ChunkHeader::carve_start`]): classes from 640 bytes in a page, from 2720 in a 16 KiB chunk.
#[cfg(not(target_os = "none"))]
pub(crate) const COLOURED_MAX_BLOCKS: usize = 6;

/// An intrusive doubly linked list of chunk headers, threaded through `next` and `prev`.
#[derive(Debug)]
pub(crate) struct ChunkList {
    pub(crate) head: *mut ChunkHeader,
}

impl ChunkList {
    #[inline]
    pub(crate) const fn new() -> Self {
        Self { head: ptr::null_mut() }
    }

    /// Puts `chunk` first.
    ///
    /// # Safety
    /// - `chunk` points to a valid header that is on no list.
    /// - Every header on this list is valid.
    pub(crate) unsafe fn push_front(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: the caller guarantees `chunk` is a valid header.
        unsafe {
            (*chunk).prev = ptr::null_mut();
            (*chunk).next = self.head;
        }
        if !self.head.is_null() {
            // SAFETY: headers on the list are valid.
            unsafe { (*self.head).prev = chunk };
        }
        self.head = chunk;
    }

    /// Puts `chunk` second, after the head, or first on an empty list.
    ///
    /// # Safety
    /// As for [`ChunkList::push_front`].
    #[inline]
    pub(crate) unsafe fn push_second(&mut self, chunk: *mut ChunkHeader) {
        if self.head.is_null() {
            // SAFETY: forwarded from the caller.
            unsafe { self.push_front(chunk) };
            return;
        }
        let head = self.head;
        // SAFETY: `head` and the header after it are on the list and valid; `chunk` is valid.
        unsafe {
            let after = (*head).next;
            (*chunk).prev = head;
            (*chunk).next = after;
            if !after.is_null() {
                (*after).prev = chunk;
            }
            (*head).next = chunk;
        }
    }

    /// Takes `chunk` off the list. Its own links are left as they were: every list sets both
    /// when the chunk joins it.
    ///
    /// # Safety
    /// - `chunk` is on this list.
    /// - Every header on this list is valid.
    pub(crate) unsafe fn unlink(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: `chunk` and its neighbours are on the list, so they are valid headers.
        unsafe {
            let (prev, next) = ((*chunk).prev, (*chunk).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
    }

    /// Iterates over the headers on the list. The list must not change during the iteration.
    pub(crate) fn iter(&self) -> ChunkIter {
        ChunkIter { next: self.head }
    }
}

/// Iterator over the headers of a [`ChunkList`].
pub(crate) struct ChunkIter {
    next: *mut ChunkHeader,
}

impl Iterator for ChunkIter {
    type Item = *mut ChunkHeader;

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.next;
        if chunk.is_null() {
            return None;
        }
        // SAFETY: iterators are only made over lists of valid headers that do not change while
        // the iteration lasts (every list of an engine, borrowed with the engine).
        self.next = unsafe { (*chunk).next };
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks at the same place in a 128 KiB period, the set period of a 1 MiB 8-way cache,
    /// pick every page colour between them, and every block of a page of three: the colour
    /// depends on more than the address bits such a cache indexes by.
    #[test]
    fn chunks_one_cache_period_apart_pick_different_colours() {
        let period = (128 << 10) / CHUNK_SIZE;
        for place in 0..period {
            let chunks = (0..16).map(|turn| place + turn * period);
            let mut seen = [[false; 4]; 2];
            for chunk in chunks {
                seen[0][colour(chunk) % 4] = true;
                seen[1][colour(chunk) % 3] = true;
            }
            assert_eq!(seen[0], [true; 4], "page colours of chunks at place {place}");
            assert_eq!(seen[1][..3], [true; 3], "block colours of chunks at place {place}");
        }
    }
}
