//! The layout of a pool inside its mapping: the header, the undo log, the allocator state, and
//! one descriptor per page. Everything is offsets and page indices, never pointers, so that a
//! process can use the pool wherever it has mapped it.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys::RobustMutex;

/// Size classes of the shared pool: the heap pools' classes up to 2 KiB, then eight more up to
/// 8 KiB, so that the medium sizes processes commonly share come from slabs too instead of page
/// runs, which cost several times more bookkeeping. Above 2 KiB they differ from the heap pools'
/// classes, which are cut to fill a 16 KiB chunk; these are cut to fill whole pages.
pub(crate) const CLASS_SIZES: [usize; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < SHARED_CLASSES {
        table[class] = melon_alloc_core::CLASS_SIZES[class];
        class += 1;
    }
    let extra = [2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192];
    let mut index = 0;
    while index < extra.len() {
        table[class + index] = extra[index];
        index += 1;
    }
    table
};
/// The heap pools' classes the shared pool uses as they are: those up to 2 KiB.
const SHARED_CLASSES: usize = 28;
/// The largest of them.
const SHARED_MAX: usize = 2048;
static_assertions::const_assert_eq!(melon_alloc_core::CLASS_SIZES[SHARED_CLASSES - 1], SHARED_MAX);
/// Number of size classes.
pub(crate) const CLASS_COUNT: usize = SHARED_CLASSES + 8;
/// The largest request served from a slab.
pub(crate) const MAX_SMALL: usize = 8192;

/// The smallest class holding `size` bytes, or `None` above [`MAX_SMALL`].
#[inline]
pub(crate) fn class_of(size: usize) -> Option<usize> {
    if size <= SHARED_MAX {
        return melon_alloc_core::class_of(size);
    }
    if size > MAX_SMALL {
        return None;
    }
    // The classes above 2 KiB step by 512 bytes up to 4 KiB, then by 1 KiB.
    let class = if size <= 4096 { (size - 2049) / 512 } else { 4 + (size - 4097) / 1024 };
    Some(SHARED_CLASSES + class)
}

/// The unit the pool manages its space in.
pub(crate) const PAGE: usize = 4096;
/// Identifies a melon-alloc shared pool.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MELONSHM");
/// The layout version; a pool of another version is refused.
///
/// Version 4 put the C library's robust mutex in place of the thread-id lock word, and records
/// the C library's kind next to the lock kind. Version 5 added the owner table, linked each lent
/// chunk into its owner's list, and appended the statistics counters ([`Tallies`]) after the
/// allocator state.
pub(crate) const VERSION: u32 = 5;
/// The smallest capacity: two pages of header and fourteen of data.
pub(crate) const MIN_CAPACITY: usize = 64 << 10;
/// The largest capacity, so that page indices fit in 32 bits with room to spare.
pub(crate) const MAX_CAPACITY: usize = 1 << 40;
/// "No page" or "no block" in a link.
pub(crate) const NONE: u32 = u32::MAX;
/// Entries in the undo log: more than any one operation writes.
pub(crate) const LOG_CAP: usize = 96;
/// Bins of free page runs: bin `b` holds runs of `2^b` to `2^(b+1) - 1` pages.
pub(crate) const BIN_COUNT: usize = 32;
/// Pages of the chunks lent to child pools, whose first pages must be findable from a block.
pub(crate) const CHUNK_PAGES: u32 = (melon_alloc_core::CHUNK_SIZE / PAGE) as u32;

/// Processes that can hold chunks for child pools at once, each through a slot of the owner
/// table.
pub(crate) const OWNER_SLOTS: usize = 128;
/// The owner lists: one per slot, and after them [`ORPHANS`].
pub(crate) const OWNER_LISTS: usize = OWNER_SLOTS + 1;
/// The list of orphaned chunks: given up by their process (which dropped its child pool, or
/// died) while blocks handed off from them to other processes were still out. The last of
/// those blocks to be freed gives the chunk back.
pub(crate) const ORPHANS: u32 = OWNER_SLOTS as u32;

/// Which lock guards a pool.
pub(crate) const LOCK_BUILTIN: u32 = 0;
pub(crate) const LOCK_CUSTOM: u32 = 1;

/// The page kinds a descriptor can have.
pub(crate) mod kind {
    /// Inside a run; only a run's first page (and a few more, below) says what the run is.
    pub(crate) const INTERIOR: u32 = 0;
    /// The first page of a free run.
    pub(crate) const FREE: u32 = 1;
    /// The first page of a slab of small blocks.
    pub(crate) const SLAB: u32 = 2;
    /// A later page of a slab; its `head` is the slab's first page.
    pub(crate) const SLAB_PAGE: u32 = 3;
    /// The first page of a large block.
    pub(crate) const LARGE: u32 = 4;
    /// The first page of a chunk lent to a child pool.
    pub(crate) const LENT: u32 = 5;
    /// One of the next pages of a lent chunk, up to [`CHUNK_PAGES`](super::CHUNK_PAGES); its
    /// `head` is the chunk's first page.
    pub(crate) const LENT_PAGE: u32 = 6;
    /// A page of the pool's own header.
    pub(crate) const HEADER: u32 = 7;
    /// Set, above the size class, in the kind of a slab whose free list was found corrupt: it is
    /// off its class's list for good, and `check` reports it.
    pub(crate) const QUARANTINED: u32 = 1 << 16;
}

/// One entry of the undo log: where a write went, how wide it was, and what was there before.
#[repr(C)]
pub(crate) struct LogEntry {
    /// The word's offset in the mapping, with bit 0 set for a 64-bit word (offsets of logged
    /// words are multiples of 4).
    pub(crate) key: u64,
    pub(crate) old: u64,
}

/// The allocator's state. Changed only through the undo log, under the lock.
#[repr(C)]
pub(crate) struct State {
    /// Per size class, the first slab with a free block; allocations come from it.
    pub(crate) partial: [u32; CLASS_COUNT],
    /// Per bin, the first free run.
    pub(crate) bins: [u32; BIN_COUNT],
    /// Bit `b` is set when bin `b` is not empty.
    pub(crate) bin_mask: u32,
    /// Slabs, or whole slab lists, taken out of use because a free-list link in them was
    /// impossible: the mark of a write into a freed block, or of a corrupted header.
    pub(crate) quarantined: u32,
    /// Bytes free: the data bytes not held by a block in use or lent to a child pool. A slab's
    /// unused tail counts as free, so that freeing every block brings this back to its start.
    pub(crate) free_bytes: u64,
    /// Pages lent to child pools.
    pub(crate) lent_pages: u64,
    /// The processes whose child pools hold chunks: a slot each, claimed by a process before its
    /// first chunk and held through a lock on one byte of the pool's file (see `owner.rs`).
    pub(crate) owners: [Owner; OWNER_LISTS],
}

/// One slot of the owner table.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Owner {
    /// The first page of the first chunk lent to the slot's process, or [`NONE`]; the chunks
    /// are linked through their first pages' `next` and `prev`.
    pub(crate) chunks: u32,
    /// 1 while a process holds the slot, 0 while it is free.
    pub(crate) claimed: u32,
    /// Blocks other processes freed into the slot's chunks since its process last looked: a
    /// hint, read and written atomically outside the lock and the undo log.
    pub(crate) pending: u32,
}

/// The start of every pool mapping.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) magic: u64,
    pub(crate) version: u32,
    pub(crate) page_size: u32,
    pub(crate) capacity: u64,
    pub(crate) page_count: u32,
    pub(crate) first_data_page: u32,
    pub(crate) lock_kind: u32,
    /// With the built-in lock, [`LOCK_ABI`](crate::sys::LOCK_ABI) of the process that made the
    /// pool: a process whose C library would read the mutex differently must not attach.
    pub(crate) lock_abi: u32,
    /// Times a process took the lock over from a dead owner.
    pub(crate) takeovers: AtomicU64,
    /// Operations found half done after their process died, and undone.
    pub(crate) undone: AtomicU64,
    /// The built-in lock, in a cache line of its own.
    pub(crate) lock: BuiltinLock,
    /// Entries in use in `log`; non-zero only while an operation is changing the state.
    pub(crate) log_len: AtomicU32,
    pub(crate) _pad: u32,
    pub(crate) log: [LogEntry; LOG_CAP],
    pub(crate) state: State,
    pub(crate) tallies: Tallies,
}

/// Statistics counters: what the pool has been asked and what became of it, which `stats`
/// reports and nothing decides on. They are not allocator state, so they stay out of the undo
/// log: each is an atomic, changed with relaxed loads and stores by the lock's holder (readers
/// in other processes take the lock too), and a process that dies in the middle of an operation
/// can leave one off by one, since the undo puts back the state but not them. A fresh mapping's
/// zeroes are their starting values.
#[repr(C)]
pub(crate) struct Tallies {
    /// Bytes in use at their highest, as last recorded: before each free, where bytes in use
    /// stand at a high point, rather than after each allocation; `stats` adds the present figure.
    pub(crate) peak_in_use: AtomicU64,
    /// Allocations refused, small and large.
    pub(crate) failures: AtomicU64,
    /// Per size class, allocation requests that the class serves.
    pub(crate) requests: [AtomicU64; CLASS_COUNT],
    /// Per size class, those of them refused.
    pub(crate) class_failures: [AtomicU64; CLASS_COUNT],
    /// Dead processes whose chunks were reclaimed.
    pub(crate) reclaimed_processes: AtomicU64,
    /// Bytes reclaimed from dead processes.
    pub(crate) reclaimed_bytes: AtomicU64,
}

impl Tallies {
    /// Adds one to `counter`. The caller holds the pool's lock, so a load and a store, cheaper
    /// than an atomic increment, lose nothing; a counter that wraps is merely wrong, as shared
    /// memory a buggy process wrote may be anyway.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Takes back one [`bump`](Tallies::bump) of `counter`, under the lock.
    #[inline]
    pub(crate) fn unbump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed);
    }

    /// Counts one dead process whose chunks, `bytes` of them, went back to the pool. Called
    /// under the lock by whoever reclaims them; reported by `stats` as `reclaimed_processes`
    /// and `reclaimed_bytes`.
    pub(crate) fn count_reclaim(&self, bytes: u64) {
        Self::bump(&self.reclaimed_processes);
        let total = self.reclaimed_bytes.load(Ordering::Relaxed).wrapping_add(bytes);
        self.reclaimed_bytes.store(total, Ordering::Relaxed);
    }
}

/// The built-in lock: the C library's robust mutex, and who holds it. It has its cache line to
/// itself: processes waiting for the lock read the line over and over, and were the holder's own
/// writes (the undo log's length, say) in it, every one of them would first have to pull the
/// line back from a waiter.
#[repr(C, align(64))]
pub(crate) struct BuiltinLock {
    pub(crate) mutex: RobustMutex,
    /// [`thread_token`](crate::sys::thread_token) of the holder, or 0: written by the holder
    /// alone, after it takes the mutex and before it releases it, so that a thread that asks
    /// for the lock it holds already is told so instead of waiting for itself forever (the
    /// mutex is not error-checking; see [`RobustMutex`]). A dead holder's token stays until the
    /// next holder writes its own; no live thread has it.
    pub(crate) holder: AtomicU64,
}

static_assertions::const_assert_eq!(core::mem::size_of::<BuiltinLock>(), 64);

/// Set in a lent chunk's hand-off count when its process gave it up with blocks still out.
pub(crate) const HANDOFF_ORPHANED: u32 = 1 << 31;

/// What one page is, and for the first page of a run, the run's bookkeeping.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PageDesc {
    /// One of [`kind`], with the size class of a slab in bits 8 to 15.
    pub(crate) kind: u32,
    /// Pages in the run (a free run, a slab, a large block, a lent chunk).
    pub(crate) len: u32,
    /// Slab: index of the first free block, or [`NONE`]. Lent chunk: the owner slot of the
    /// process it is lent to, [`ORPHANS`], or [`NONE`] for a chunk no slot answers for.
    pub(crate) free: u32,
    /// Slab: blocks in use. Lent chunk: the head of its remote-free list, the offset from the
    /// chunk's start of the last block another process freed into it, or 0; accessed
    /// atomically (see `arena/remote.rs`).
    pub(crate) live: u32,
    /// Slab: blocks handed out at least once; later ones have never been touched. Lent chunk:
    /// its blocks handed off to other processes and not yet freed, with [`HANDOFF_ORPHANED`]
    /// set once its process gave it up; accessed atomically.
    pub(crate) carved: u32,
    /// Free run, slab or lent chunk: the next in its bin, class or owner list.
    pub(crate) next: u32,
    /// Free run, slab or lent chunk: the previous in its bin, class or owner list.
    pub(crate) prev: u32,
    /// Later page of a slab or lent chunk, or last page of a free run: the run's first page.
    pub(crate) head: u32,
}

/// Where the page descriptors start, from the start of the mapping.
pub(crate) const DESC_OFFSET: usize = core::mem::size_of::<Header>().next_multiple_of(64);

static_assertions::const_assert_eq!(core::mem::size_of::<PageDesc>(), 32);
// A slab's free-list head and live count form one aligned 64-bit word, written as one.
static_assertions::const_assert_eq!(core::mem::offset_of!(PageDesc, free) % 8, 0);
static_assertions::const_assert_eq!(
    core::mem::offset_of!(PageDesc, live),
    core::mem::offset_of!(PageDesc, free) + 4
);
static_assertions::const_assert_eq!(DESC_OFFSET % 8, 0);
// A pool of the smallest capacity keeps its header, descriptors and bitmap in two pages.
static_assertions::const_assert!(
    DESC_OFFSET + (MIN_CAPACITY / PAGE) * 32 + MIN_CAPACITY / GRAIN / 8 <= 2 * PAGE
);
static_assertions::const_assert!(core::mem::align_of::<Header>() <= PAGE);

/// Pages per slab of each class: the fewest (1, 2, 4, 8 or 16) that hold at least
/// [`SLAB_MIN_BLOCKS`] blocks and waste at most an eighth of the slab, or 16 when none does. A
/// slab that fills after a few allocations costs a trip off and back onto its class's list each
/// time; in a pool too small for a class's slab, that class's requests are served as page runs.
pub(crate) const SLAB_PAGES: [u32; CLASS_COUNT] = {
    let mut table = [MAX_SLAB_PAGES; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        let mut pages = 1;
        while pages <= MAX_SLAB_PAGES as usize {
            let bytes = pages * PAGE;
            if (bytes % CLASS_SIZES[class]) * 8 <= bytes
                && bytes / CLASS_SIZES[class] >= SLAB_MIN_BLOCKS
            {
                table[class] = pages as u32;
                break;
            }
            pages *= 2;
        }
        class += 1;
    }
    table
};

/// The most pages in a slab: 64 KiB, so that offsets inside a slab stay below 2^16.
pub(crate) const MAX_SLAB_PAGES: u32 = 16;

/// The blocks a slab holds at least, where [`MAX_SLAB_PAGES`] allow.
const SLAB_MIN_BLOCKS: usize = 16;

/// Blocks per slab of each class.
pub(crate) const SLAB_BLOCKS: [u32; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        table[class] = (SLAB_PAGES[class] as usize * PAGE / CLASS_SIZES[class]) as u32;
        class += 1;
    }
    table
};

/// Bytes of the pool that one bit of the in-use bitmap stands for: the smallest block.
pub(crate) const GRAIN: usize = 16;

/// The geometry of a pool of a given capacity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) capacity: usize,
    pub(crate) page_count: u32,
    pub(crate) first_data_page: u32,
}

/// Where the in-use bitmap starts: after the page descriptors. Bit `n` is set when a block in
/// use starts at offset `16 n`, which makes a double free or an interior pointer an O(1) check.
pub(crate) fn bitmap_offset(page_count: u32) -> usize {
    (DESC_OFFSET + page_count as usize * core::mem::size_of::<PageDesc>()).next_multiple_of(8)
}

impl Geometry {
    /// The geometry for `capacity` bytes, rounded down to whole pages, or `None` when it is
    /// outside the supported range.
    pub(crate) fn for_capacity(capacity: usize) -> Option<Self> {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return None;
        }
        let capacity = capacity / PAGE * PAGE;
        let page_count = u32::try_from(capacity / PAGE).ok()?;
        let bitmap_bytes = (capacity / GRAIN).div_ceil(64) * 8;
        let meta = bitmap_offset(page_count) + bitmap_bytes;
        let first_data_page = u32::try_from(meta.div_ceil(PAGE)).ok()?;
        Some(Self { capacity, page_count, first_data_page })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabs_waste_at_most_an_eighth() {
        for class in 0..CLASS_COUNT {
            let bytes = SLAB_PAGES[class] as usize * PAGE;
            let used = SLAB_BLOCKS[class] as usize * CLASS_SIZES[class];
            assert!((bytes - used) * 8 <= bytes, "class {}", CLASS_SIZES[class]);
            assert!(SLAB_BLOCKS[class] >= 8);
            assert_eq!(class_of(CLASS_SIZES[class]), Some(class));
        }
        assert_eq!(SLAB_PAGES[3], 1, "64-byte blocks fill single pages exactly");
    }

    #[test]
    fn geometry_leaves_room_for_data() {
        let small = Geometry::for_capacity(MIN_CAPACITY).unwrap();
        assert_eq!(small.first_data_page, 2);
        assert_eq!(small.page_count, 16);
        let big = Geometry::for_capacity(1 << 30).unwrap();
        let meta = big.first_data_page as usize * PAGE;
        assert!(meta * 50 < (1 << 30), "metadata is under 2 % of a 1 GiB pool");
        assert!(Geometry::for_capacity(MIN_CAPACITY - 1).is_none());
        assert!(Geometry::for_capacity(MAX_CAPACITY + 1).is_none());
    }
}
