//! The layout of a pool inside its mapping: the header, the undo log, the allocator state, and
//! one descriptor per page. Everything is offsets and page indices, never pointers, so that a
//! process can use the pool wherever it has mapped it.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

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
/// allocator state. Version 6 lays the pool out for its largest capacity and grows it segment by
/// segment: the header records the initial capacity and the end of the pages grown so far, and
/// the descriptors and bitmap words of the header's own pages are no longer written. Version 7
/// added the directory of names ([`State::names`]). Version 8 replaced the C library's mutex in
/// the header with the pool's own lock word ([`PoolLock`]). Version 9 moved a lent chunk's
/// remote-free list and state to the descriptor of its tail page, and replaced its count of
/// handed-off blocks with a count of frees in flight. Version 10 moved the end of the grown pages
/// into the header's first cache line. Version 11 keeps the name of a named value's type in its
/// block, after the value, and the name's length in its directory entry. Version 12 replaced the
/// C library's mutex in every [`ShmMutex`](crate::ShmMutex) with a word like the pool's own.
/// Version 13 lets a class's list of slabs with room keep a full slab at its head, until an
/// allocation finds it full.
pub(crate) const VERSION: u32 = 13;
/// The smallest capacity: sixteen pages, header included.
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
    /// The directory of names: where its entries lie, and which of them are in use.
    pub(crate) names: Names,
}

/// Entries in the directory of names.
pub(crate) const NAME_SLOTS: usize = 256;
/// The longest name, in bytes.
pub(crate) const NAME_MAX: usize = 64;

/// The directory of names, in the state: its entries lie in a block of the pool, made on the
/// first insertion; which of them hold a name is here, so that publishing or forgetting a name
/// is one logged write of the state, in the operation that allocates or frees its block.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Names {
    /// The first page of the block of [`NAME_SLOTS`] entries, or 0 before the first name.
    pub(crate) page: u32,
    pub(crate) _reserved: u32,
    /// The offset of a block the directory is to free, or 0: a named block whose name is gone
    /// and whose free has not finished, or a block whose insertion has not published its name.
    /// A removal forgets the name and records the block here in one step, then frees it and
    /// clears this in the next, so that a removal cut short by death never brings back a name
    /// whose value the free began to overwrite. An insertion allocates the block and records it
    /// here in one step, then writes the value, publishes the name and clears this in the next,
    /// so that a death never puts back on a free list a block whose link the value overwrote.
    /// The next holder finishes the free.
    pub(crate) releasing: u64,
    /// Bit `i` is set while entry `i` holds a name.
    pub(crate) used: [u64; NAME_SLOTS / 64],
    /// Bit `i` is set once entry `i` has held a name: a lookup walks on past such an entry,
    /// since the name it looks for may have been placed after it while it was in use.
    pub(crate) touched: [u64; NAME_SLOTS / 64],
}

/// One entry of the directory of names, in the pool's block of entries. Written while its bit
/// in [`Names::used`] is clear, then published by setting the bit.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct NameEntry {
    /// The name's hash, which a lookup compares first.
    pub(crate) hash: u64,
    /// The named block's offset in the mapping.
    pub(crate) offset: u64,
    /// The size, alignment and type tag of the value's type.
    pub(crate) size: u64,
    pub(crate) align: u64,
    pub(crate) tag: u64,
    /// Bytes of `name` in use.
    pub(crate) len: u64,
    pub(crate) name: [u8; NAME_MAX],
    /// Bytes of the type's name, which follows the value in its block.
    pub(crate) type_len: u64,
    pub(crate) _reserved: u64,
}

static_assertions::const_assert_eq!(core::mem::size_of::<NameEntry>(), 128);
/// Bytes of the block of directory entries: whole pages.
pub(crate) const NAMES_BYTES: usize = NAME_SLOTS * core::mem::size_of::<NameEntry>();
static_assertions::const_assert_eq!(NAMES_BYTES % PAGE, 0);

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
    /// The capacity the layout is made for: the most the pool can grow to.
    pub(crate) capacity: u64,
    /// Pages the layout has room for, header included, at [`capacity`](Header::capacity).
    pub(crate) page_count: u32,
    pub(crate) first_data_page: u32,
    pub(crate) lock_kind: u32,
    /// With the built-in lock, [`LOCK_ABI`](crate::sys::LOCK_ABI) of the process that made the
    /// pool: a process whose build would read the lock words of the pool and of its
    /// [`ShmMutex`](crate::ShmMutex)es differently must not attach.
    pub(crate) lock_abi: u32,
    /// The capacity the pool was made with: its first segment, and the size of each later one.
    pub(crate) initial_capacity: u64,
    /// Times a process took the lock over from a dead owner.
    pub(crate) takeovers: AtomicU64,
    /// The end of the pages grown so far: pages from `first_data_page` up to this one hold data,
    /// and their descriptors and bitmap words are reserved; those after it are holes of the file
    /// that nothing touches. Written under the lock, through the undo log, after the pages are
    /// reserved; read without the lock by processes that meet an offset past what they have
    /// mapped, and by every lookup of a block's offset. In the first cache line, with the
    /// geometry, which never changes, and the count of takeovers, which seldom does, rather than
    /// beside the words every holder of the lock writes, so that a lookup does not wait for the
    /// line of the lock's holder.
    pub(crate) end_page: AtomicU32,
    /// The built-in lock, in a cache line of its own.
    pub(crate) lock: PoolLock,
    /// [`thread_token`](crate::sys::thread_token) of the built-in lock's holder, or 0: written by
    /// the holder alone, after it takes the lock and before it releases it, so that a thread
    /// that asks for the lock it holds already is told so instead of waiting for itself forever,
    /// and a thread of the holder's process that does not hold it cannot release it. A dead
    /// holder's token stays until the next holder writes its own; no live thread has it. Out of
    /// the lock's cache line, which waiters read over and over, and in the undo log's, which the
    /// holder writes anyway.
    pub(crate) holder: AtomicU64,
    /// Entries in use in `log`; non-zero only while an operation is changing the state.
    pub(crate) log_len: AtomicU32,
    /// Operations found half done after their process died, and undone.
    pub(crate) undone: AtomicU64,
    pub(crate) log: [LogEntry; LOG_CAP],
    pub(crate) state: State,
    pub(crate) tallies: Tallies,
}

/// Statistics counters: what the pool has been asked and what became of it, which `stats`
/// reports and nothing decides on. They are not allocator state, so they stay out of the undo
/// log: each is an atomic, changed with relaxed loads and stores by the lock's holder (readers
/// in other processes take the lock too), and a process that dies in the middle of an operation
/// can leave one off by one, since the undo puts back the state but not them. A reclaim is one
/// operation per chunk, so a reclaimer that dies part way may leave uncounted what it had
/// taken back. A fresh mapping's zeroes are their starting values.
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

    /// Counts one dead process whose chunks, `bytes` of them, went back to the pool. Called
    /// under the lock by whoever reclaims them; reported by `stats` as `reclaimed_processes`
    /// and `reclaimed_bytes`.
    pub(crate) fn count_reclaim(&self, bytes: u64) {
        Self::bump(&self.reclaimed_processes);
        let total = self.reclaimed_bytes.load(Ordering::Relaxed).wrapping_add(bytes);
        self.reclaimed_bytes.store(total, Ordering::Relaxed);
    }
}

/// The pool's built-in lock (see [`ProcessLock`](crate::lock::ProcessLock)): its word, and the
/// counter its holders' identities come from. It has its cache line to itself: processes
/// waiting for the lock read the line over and over, and were the holder's own writes (the undo
/// log's length, say) in it, every one of them would first have to pull the line back from a
/// waiter.
#[repr(C, align(64))]
pub(crate) struct PoolLock {
    /// The holder's identity in the pool, with [`WAITERS`](crate::lock::WAITERS), or 0.
    pub(crate) word: AtomicU32,
    /// The next identity to give a process (see `identity.rs`).
    pub(crate) next_identity: AtomicU32,
}

static_assertions::const_assert_eq!(core::mem::size_of::<PoolLock>(), 64);

/// The lock of a [`ShmMutex`](crate::ShmMutex): a word of the same kind as the pool's own
/// ([`PoolLock::word`]), naming the holder's process by its identity in the pool, and who holds
/// it, in a cache line of their own as the pool's lock is.
#[repr(C, align(64))]
pub(crate) struct MutexLock {
    /// The holder's identity in the pool, with [`WAITERS`](crate::lock::WAITERS), or 0.
    pub(crate) word: AtomicU32,
    /// [`thread_token`](crate::sys::thread_token) of the holder, or 0: written by the holder
    /// alone, after it takes the word and before it releases it, so that a thread that asks
    /// for the lock it holds already is told so instead of waiting for itself forever, and so
    /// that only the thread that took it releases it (the word names a process, not a thread).
    /// A dead holder's token stays until the next holder writes its own; no live thread has it.
    pub(crate) holder: AtomicU64,
}

static_assertions::const_assert_eq!(core::mem::size_of::<MutexLock>(), 64);
// The fields before the lock keep the places they had before the pool could grow, and the lock
// its cache line.
static_assertions::const_assert_eq!(core::mem::offset_of!(Header, lock_abi), 36);
static_assertions::const_assert_eq!(core::mem::offset_of!(Header, lock), 64);
// The grown end shares the first cache line with the geometry and the count of takeovers, which
// change seldom.
static_assertions::const_assert!(core::mem::offset_of!(Header, end_page) < 64);

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
    /// Slab: blocks in use. Tail of a lent chunk (its last page among its first
    /// [`CHUNK_PAGES`]): the head of its remote-free list, the offset from the chunk's start of
    /// the last block another process freed into it, or 0; accessed atomically (see
    /// `arena/remote.rs`).
    pub(crate) live: u32,
    /// Slab: blocks handed out at least once; later ones have never been touched. Tail of a lent
    /// chunk: frees of its handed-off blocks in flight, with `handoff::GIVEN_UP` set once its
    /// process gave it up; accessed atomically.
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

/// The geometry of a pool: the layout, made for its largest capacity, and how far it reaches at
/// first and grows by at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// The largest capacity, which the layout is made for.
    pub(crate) capacity: usize,
    pub(crate) page_count: u32,
    pub(crate) first_data_page: u32,
    /// The capacity the pool starts with; equal to `capacity` for a pool that never grows.
    pub(crate) initial_capacity: usize,
    /// Data pages of a segment: as many as a pool of `initial_capacity` that never grows has.
    /// The pool starts with one segment and grows by whole segments, the last one cut short at
    /// `page_count`.
    pub(crate) segment_pages: u32,
}

/// Where the in-use bitmap starts: after the page descriptors. Bit `n` is set when a block in
/// use starts at offset `16 n`, which makes a double free or an interior pointer an O(1) check.
pub(crate) fn bitmap_offset(page_count: u32) -> usize {
    (DESC_OFFSET + page_count as usize * core::mem::size_of::<PageDesc>()).next_multiple_of(8)
}

/// Bytes of descriptor, and bytes of bitmap, that one page has.
const META_PER_PAGE: usize = core::mem::size_of::<PageDesc>();
static_assertions::const_assert_eq!(META_PER_PAGE, PAGE / GRAIN / 8);

/// The page count and first data page of a layout for `capacity` bytes, rounded down to pages.
fn layout(capacity: usize) -> Option<(usize, u32, u32)> {
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return None;
    }
    let capacity = capacity / PAGE * PAGE;
    let page_count = u32::try_from(capacity / PAGE).ok()?;
    let bitmap_bytes = (capacity / GRAIN).div_ceil(64) * 8;
    let meta = bitmap_offset(page_count) + bitmap_bytes;
    let first_data_page = u32::try_from(meta.div_ceil(PAGE)).ok()?;
    Some((capacity, page_count, first_data_page))
}

impl Geometry {
    /// The geometry of a pool of `capacity` bytes, rounded down to whole pages, that never
    /// grows, or `None` when it is outside the supported range.
    pub(crate) fn for_capacity(capacity: usize) -> Option<Self> {
        Self::growing(capacity, capacity)
    }

    /// The geometry of a pool that starts at `initial` bytes and grows up to `max`, both rounded
    /// down to whole pages, or `None` when either is outside the supported range or `initial`
    /// is above `max`.
    pub(crate) fn growing(initial: usize, max: usize) -> Option<Self> {
        let (capacity, page_count, first_data_page) = layout(max)?;
        let (initial_capacity, initial_pages, initial_first_data) = layout(initial)?;
        if initial_capacity > capacity {
            return None;
        }
        // A larger layout never has fewer data pages, so the first segment fits in the layout.
        let segment_pages = initial_pages - initial_first_data;
        Some(Self { capacity, page_count, first_data_page, initial_capacity, segment_pages })
    }

    /// The end of the first segment: where a new pool's data pages stop.
    pub(crate) fn initial_end(&self) -> u32 {
        self.first_data_page + self.segment_pages
    }

    /// Segments of data pages up to page `end`: a pool that never grows has one.
    pub(crate) fn segments(&self, end: u32) -> u32 {
        end.saturating_sub(self.first_data_page).div_ceil(self.segment_pages)
    }

    /// The capacity of a pool grown up to page `end`: the initial capacity for each segment, and
    /// the largest once the pool has grown to its end.
    pub(crate) fn capacity_at(&self, end: u32) -> usize {
        if end >= self.page_count {
            return self.capacity;
        }
        (self.initial_capacity.saturating_mul(self.segments(end) as usize)).min(self.capacity)
    }

    /// The end after growing from page `end` by enough whole segments for `pages` more data
    /// pages (at least one segment), cut short at the layout's end; `None` when the pool has
    /// grown to its end already, or when even the largest pool would hold no run that long.
    pub(crate) fn grown_end(&self, end: u32, pages: u32) -> Option<u32> {
        // A run longer than every data page of the largest pool never fits: no growth for it.
        if end >= self.page_count || pages > self.page_count - self.first_data_page {
            return None;
        }
        let segments = pages.div_ceil(self.segment_pages).max(1);
        let added = segments.saturating_mul(self.segment_pages);
        Some(end.saturating_add(added).min(self.page_count))
    }

    /// The bytes of the file that the pages from `from` up to `to` need reserved, as ranges of
    /// whole pages: their descriptors, their bitmap words, and the pages themselves. The
    /// descriptors and bitmap words of the pages before `from` and after `to` that share a page
    /// with them are reserved too, but never touched until their own pages are.
    pub(crate) fn reserve_ranges(&self, from: u32, to: u32) -> [core::ops::Range<usize>; 3] {
        let pages = |start: usize, end: usize| start / PAGE * PAGE..end.next_multiple_of(PAGE);
        let (from, to) = (from as usize, to as usize);
        let bitmap = bitmap_offset(self.page_count);
        [
            pages(DESC_OFFSET + from * META_PER_PAGE, DESC_OFFSET + to * META_PER_PAGE),
            pages(bitmap + from * META_PER_PAGE, bitmap + to * META_PER_PAGE),
            from * PAGE..to * PAGE,
        ]
    }

    /// The bytes of the header, in whole pages: the only metadata that is not a page's.
    pub(crate) fn header_range() -> core::ops::Range<usize> {
        0..DESC_OFFSET.next_multiple_of(PAGE)
    }

    /// Whether the logged word of `width` bytes at `offset` lies in the allocator's state or
    /// the end of the grown pages in the header, or in the descriptor or bitmap words of a data
    /// page before `end`: where every write of the undo log goes. The rest of the header (the
    /// lock, the log itself, the geometry) is never logged: a corrupt entry naming the lock
    /// would otherwise have the recovery write into the lock word.
    pub(crate) fn holds_logged_word(&self, offset: u64, width: u64, end: u32) -> bool {
        let Some(last) = offset.checked_add(width) else { return false };
        let inside =
            |start: usize, len: usize| offset >= start as u64 && last <= start as u64 + len as u64;
        let data = self.first_data_page as usize..(end.min(self.page_count)) as usize;
        let len = data.len() * META_PER_PAGE;
        let bitmap = bitmap_offset(self.page_count);
        inside(core::mem::offset_of!(Header, state), core::mem::size_of::<State>())
            || inside(core::mem::offset_of!(Header, end_page), core::mem::size_of::<u32>())
            || inside(DESC_OFFSET + data.start * META_PER_PAGE, len)
            || inside(bitmap + data.start * META_PER_PAGE, len)
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
    fn the_undo_log_may_write_the_state_and_the_grown_end_but_not_the_lock_or_the_log() {
        use core::mem::{offset_of, size_of};

        let geometry = Geometry::for_capacity(MIN_CAPACITY).unwrap();
        let end = geometry.page_count;
        let holds =
            |offset: usize, width: u64| geometry.holds_logged_word(offset as u64, width, end);
        let state = offset_of!(Header, state);
        assert!(holds(state, 8) && holds(state + size_of::<State>() - 4, 4));
        assert!(holds(offset_of!(Header, end_page), 4));
        let lock = offset_of!(Header, lock);
        for offset in (lock..lock + size_of::<PoolLock>()).step_by(4) {
            assert!(!holds(offset, 4), "the lock's word at {offset}");
        }
        for field in
            [offset_of!(Header, magic), offset_of!(Header, log_len), offset_of!(Header, log)]
        {
            assert!(!holds(field, 4), "the header's word at {field}");
        }
        assert!(holds(DESC_OFFSET + geometry.first_data_page as usize * META_PER_PAGE, 4));
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
        assert_eq!(big.initial_end(), big.page_count, "a fixed pool has one segment, all of it");
        assert_eq!((big.segments(big.page_count), big.capacity_at(big.page_count)), (1, 1 << 30));
    }

    #[test]
    fn a_growing_layout_starts_with_a_small_pools_data_and_reaches_the_largest() {
        let (initial, max) = (16 << 20, 1 << 30);
        let small = Geometry::for_capacity(initial).unwrap();
        let growing = Geometry::growing(initial, max).unwrap();
        let big = Geometry::for_capacity(max).unwrap();
        assert_eq!(
            (growing.page_count, growing.first_data_page),
            (big.page_count, big.first_data_page)
        );
        assert_eq!(growing.segment_pages, small.page_count - small.first_data_page);
        let mut end = growing.initial_end();
        assert_eq!((growing.segments(end), growing.capacity_at(end)), (1, initial));
        // One page more than a segment takes two.
        end = growing.grown_end(end, growing.segment_pages + 1).unwrap();
        assert_eq!((growing.segments(end), growing.capacity_at(end)), (3, 3 * initial));
        // The largest layout holds a little more than 64 segments: the metadata of the first
        // is relatively larger. The capacity reaches the largest with the 64th.
        while let Some(next) = growing.grown_end(end, 1) {
            assert!(next > end && growing.capacity_at(next) >= growing.capacity_at(end));
            assert!(growing.capacity_at(next) <= max);
            end = next;
        }
        assert_eq!(growing.segments(end), 65);
        assert_eq!((end, growing.capacity_at(end)), (big.page_count, max));
        assert!(
            Geometry::growing(max, initial).is_none(),
            "the initial capacity above the largest"
        );
        assert!(Geometry::growing(initial, MAX_CAPACITY + PAGE).is_none());
    }

    #[test]
    fn only_the_header_and_grown_pages_metadata_take_logged_writes() {
        let growing = Geometry::growing(1 << 20, 64 << 20).unwrap();
        let end = growing.initial_end();
        let [descs, bitmap, data] = growing.reserve_ranges(growing.first_data_page, end);
        assert_eq!(data, growing.first_data_page as usize * PAGE..end as usize * PAGE);
        let first = DESC_OFFSET + growing.first_data_page as usize * 32;
        assert!(descs.start <= first && descs.end >= DESC_OFFSET + end as usize * 32);
        assert!(bitmap.end - bitmap.start < 2 * PAGE + growing.segment_pages as usize * 32);
        let state = core::mem::offset_of!(Header, state) as u64;
        assert!(growing.holds_logged_word(state, 8, end), "the header's allocator state");
        assert!(!growing.holds_logged_word(8, 8, end), "the header's geometry");
        assert!(growing.holds_logged_word(first as u64, 4, end), "the first data page");
        let past = DESC_OFFSET as u64 + u64::from(end) * 32;
        assert!(!growing.holds_logged_word(past, 4, end), "a page not grown");
        assert!(growing.holds_logged_word(past, 4, end + 1), "once it is");
        assert!(!growing.holds_logged_word(DESC_OFFSET as u64, 4, end), "a header page's");
        assert!(!growing.holds_logged_word(u64::MAX - 3, 8, end));
    }
}
