//! The allocator inside the mapping: slabs of small blocks, runs of pages for large blocks and
//! for the chunks lent to child pools, all found from page descriptors by offset.
//!
//! Free page runs sit in 32 bins by the power of two of their length; a request looks at the
//! first run of its own bin, then takes the first run of the first non-empty larger bin, found
//! from a bit mask: O(1) however full or large the pool. Each size class keeps a list of slabs
//! that have a free block; allocation pops from the first. So no operation scans the pool.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, Ordering};

use melon_alloc_core::FreeError;

use crate::sync;

use crate::layout::{
    bitmap_offset, class_of, kind, Geometry, Header, Owner, PageDesc, State, Tallies, BIN_COUNT,
    CHUNK_PAGES, CLASS_COUNT, CLASS_SIZES, DESC_OFFSET, GRAIN, MAGIC, MAX_SMALL, NONE, ORPHANS,
    OWNER_LISTS, PAGE, SLAB_BLOCKS, SLAB_PAGES, VERSION,
};
use crate::tx::Tx;
use crate::ShmError;

/// What an operation that allocates a block also does, in the same logged operation, with the
/// block's offset: see [`Arena::alloc_then`]. Dynamic, so that the allocation path is compiled
/// once, the same for the plain allocations that pass none.
pub(crate) type AllocThen<'a, 'b> = &'a mut (dyn FnMut(&Arena, &mut Tx, u64) + 'b);

/// Reads a field of a page descriptor.
macro_rules! get {
    ($arena:expr, $page:expr, $field:ident) => {{
        let desc = $arena.desc($page);
        // SAFETY: `desc` points at a descriptor inside the mapping (see `Arena::desc`).
        unsafe { addr_of!((*desc).$field).read() }
    }};
}

/// Reads a field of a descriptor found once with [`Arena::desc_of`], for a function that reads
/// several fields of one page.
macro_rules! get_at {
    ($desc:expr, $field:ident) => {{
        let desc: Desc = $desc;
        // SAFETY: a `Desc` points at a descriptor inside the mapping (see `Arena::desc`).
        unsafe { addr_of!((*desc.0).$field).read() }
    }};
}

/// Writes a field of a page descriptor through the undo log.
macro_rules! set {
    ($arena:expr, $tx:expr, $page:expr, $field:ident, $value:expr) => {{
        let value = $value;
        let desc = $arena.desc($page);
        // SAFETY: `desc` points at a descriptor inside the mapping, and the arena's lock is held.
        unsafe { $tx.set(addr_of_mut!((*desc).$field), value) }
    }};
}

/// Writes a field of a descriptor found once with [`Arena::desc_of`] through the undo log.
macro_rules! set_at {
    ($tx:expr, $desc:expr, $field:ident, $value:expr) => {{
        let value = $value;
        let desc: Desc = $desc;
        // SAFETY: a `Desc` points at a descriptor inside the mapping, and the arena's lock is
        // held.
        unsafe { $tx.set(addr_of_mut!((*desc.0).$field), value) }
    }};
}

/// A page's descriptor, found by [`Arena::desc_of`], which bounds the page as [`Arena::desc`]
/// does: what a function that reads or writes several fields of one page finds once.
#[derive(Clone, Copy)]
struct Desc(*mut PageDesc);

/// What an allocation from a slab takes ([`Arena::pop_block`]): block `index`, leaving `next`
/// at the head of the slab's free list and `carved` blocks carved (`carving` when that is one
/// more than before), with the slab's descriptor and its count of blocks in use before.
#[derive(Clone, Copy)]
struct Popped {
    desc: Desc,
    index: u32,
    next: u32,
    carved: u32,
    carving: bool,
    live: u32,
}

/// Reads a field of the allocator state.
macro_rules! state {
    ($arena:expr, $($field:tt)+) => {{
        let state = $arena.state();
        // SAFETY: the state lies in the header at the start of the mapping.
        unsafe { addr_of!((*state).$($field)+).read() }
    }};
}

/// Writes a field of the allocator state through the undo log.
macro_rules! set_state {
    ($arena:expr, $tx:expr, $value:expr, $($field:tt)+) => {{
        let value = $value;
        let state = $arena.state();
        // SAFETY: the state lies in the header, and the arena's lock is held.
        unsafe { $tx.set(addr_of_mut!((*state).$($field)+), value) }
    }};
}

mod names;
mod owners;
mod remote;

pub(crate) use names::{hash as name_hash, Found, Lookup, Shape};
pub(crate) use owners::Reclaimed;
pub(crate) use remote::{RemoteFree, RemoteTarget, CHUNK_HEADER};

/// What [`Arena::take_back`] did with a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveBack {
    /// Not a chunk lent to that owner: nothing changed.
    Refused,
    /// Back in the free runs.
    TakenBack,
    /// On the orphans' list, until the blocks handed off from it come back.
    Orphaned,
}

/// Why an allocation that looked for more room, by reclaiming and growing, found none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The pool has none: it cannot grow, or grew and still holds no place for the block.
    InPool,
    /// The pool could grow, but the system refused the memory or the mapping.
    FromSystem,
}

/// What an offset into the pool is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Located {
    /// An in-use small block.
    Small { slab: u32, index: u32, class: usize },
    /// An in-use large block starting at this page.
    Large { page: u32 },
    /// Inside a chunk lent to a child pool; the child's own bookkeeping knows the block.
    Lent,
}

/// The pool's allocator: where its parts lie in the mapping. Its methods change the mapping, and
/// the arena's own idea of where the pages grown so far end; they are called only while the
/// pool's lock is held.
pub(crate) struct Arena {
    base: *mut u8,
    first_data: u32,
    bitmap: *mut u64,
    geometry: Geometry,
    /// The end of the data pages, as this process knows it: the header's `end_page`, bounded by
    /// the layout and by what this process has mapped, so that a page index bounded by it
    /// names a descriptor, a bitmap word and a page that are reserved and mapped here. Set by
    /// the lock's holder; read without the lock only by a free of a handed-off block, which
    /// trusts no page at or past it and is then refused (and retried under the lock).
    end: AtomicU32,
}

impl Arena {
    /// The allocator of the pool of `geometry` mapped at `base`.
    ///
    /// # Safety
    /// - `base` is the start of a pool formatted for `geometry` (`attach` checks the header
    ///   against the file), mapped at least up to the geometry's initial end: everything else
    ///   in the mapping is bounds-checked before use.
    /// - The caller holds the pool's lock whenever it uses the arena, and calls
    ///   [`sync_end`](Arena::sync_end) after taking it.
    #[inline]
    pub(crate) unsafe fn new(base: *mut u8, geometry: Geometry) -> Self {
        // SAFETY: the bitmap lies in the pool's metadata pages, before the first data page.
        let bitmap = unsafe { base.add(bitmap_offset(geometry.page_count)) }.cast();
        Self {
            base,
            first_data: geometry.first_data_page,
            bitmap,
            geometry,
            end: AtomicU32::new(geometry.initial_end()),
        }
    }

    /// Lays out a new pool in a zeroed mapping, with its first segment of data pages. The
    /// built-in lock, if `lock_kind` says the pool uses it, is the caller's to make: the
    /// allocator's tests format heap buffers that need no lock, under Miri among others, which
    /// cannot make a process-shared mutex.
    ///
    /// # Safety
    /// - `base` is the start of a mapping whose header, and whose descriptors, bitmap words and
    ///   pages of the first segment, are zeroed, and that nothing else uses yet.
    pub(crate) unsafe fn format(base: *mut u8, geometry: Geometry, lock_kind: u32) {
        let header = base.cast::<Header>();
        // SAFETY: the mapping is at least one page, which holds the header (see `layout`), and
        // is zeroed, which is a valid value for every field of it.
        unsafe {
            (*header).magic = MAGIC;
            (*header).version = VERSION;
            (*header).page_size = PAGE as u32;
            (*header).capacity = geometry.capacity as u64;
            (*header).initial_capacity = geometry.initial_capacity as u64;
            (*header).page_count = geometry.page_count;
            (*header).first_data_page = geometry.first_data_page;
            (*header).lock_kind = lock_kind;
            (*header).lock_abi = crate::sys::LOCK_ABI;
            (*header).end_page = sync::AtomicU32::new(geometry.initial_end());
            let state = addr_of_mut!((*header).state);
            (*state).partial = [NONE; CLASS_COUNT];
            (*state).bins = [NONE; BIN_COUNT];
            (*state).owners = [Owner { chunks: NONE, claimed: 0, pending: 0 }; OWNER_LISTS];
        }
        // SAFETY: the header is now in place, and nothing else uses the mapping.
        let arena = unsafe { Self::new(base, geometry) };
        // SAFETY: as above; the log starts empty.
        let mut tx = unsafe { Tx::begin(base) };
        let data_pages = geometry.segment_pages;
        arena.insert_free(&mut tx, geometry.first_data_page, data_pages);
        set_state!(arena, tx, u64::from(data_pages) * PAGE as u64, free_bytes);
        tx.commit();
    }

    /// The end of the data pages: see the field `end`.
    #[inline]
    pub(crate) fn end(&self) -> u32 {
        self.end.load(Ordering::Relaxed)
    }

    /// The geometry the arena was made with.
    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The header's word that publishes the end of the pages grown so far.
    fn end_page_word(&self) -> *mut sync::AtomicU32 {
        // SAFETY: the header is at the start of the mapping; no reference is made.
        unsafe { addr_of_mut!((*self.base.cast::<Header>()).end_page) }
    }

    /// The end of the pages grown so far as the header publishes it, bounded by the layout and
    /// no lower than the first segment's end, whatever a dying or buggy process left there.
    #[inline]
    pub(crate) fn published_end(&self) -> u32 {
        // SAFETY: the word lies in the header, and is only accessed atomically (or through the
        // undo log's atomic stores).
        let end = unsafe { &*self.end_page_word() }.load(sync::Ordering::Acquire);
        end.clamp(self.geometry.initial_end(), self.geometry.page_count)
    }

    /// Whether the published end differs from the one this arena works within: one load, on
    /// the path of every lock.
    #[inline]
    pub(crate) fn is_behind(&self) -> bool {
        // SAFETY: as in `published_end`.
        unsafe { &*self.end_page_word() }.load(sync::Ordering::Relaxed) != self.end()
    }

    /// Works from now on within the published end, or within the first `mapped` pages if this
    /// process has mapped fewer (only a header whose end runs past its file leaves it so).
    /// Called by the lock's holder, after mapping what the header publishes.
    pub(crate) fn sync_end(&self, mapped: u32) {
        let end = self.published_end().min(mapped.max(self.geometry.initial_end()));
        self.end.store(end, Ordering::Relaxed);
    }

    /// Adds the pages from the end up to `new_end` to the free runs, merged with a free run that
    /// ends where they start, and publishes the new end, in one logged operation. Returns
    /// whether there were pages to add.
    ///
    /// The caller has reserved the new pages, their descriptors and their bitmap words, which
    /// are zero as nothing has touched them, and mapped the pages in this process.
    pub(crate) fn grow(&self, new_end: u32) -> bool {
        let old = self.end();
        if new_end <= old || new_end > self.geometry.page_count {
            return false;
        }
        // The new pages' descriptors are reached through `desc`, which is bounded by the end.
        self.end.store(new_end, Ordering::Relaxed);
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        // SAFETY: (1) the word lies in the header, 4-aligned; (2) the lock is held; the undo log
        // stores atomically, as other processes read the word without the lock.
        unsafe { tx.set(self.end_page_word().cast::<u32>(), new_end) };
        let pages = new_end - old;
        self.count_free(u64::from(pages) * PAGE as u64);
        self.free_run(&mut tx, old, pages);
        tx.commit();
        true
    }

    /// The end to grow to for a request that needs a free run of `pages` pages: enough whole
    /// segments past the end, cut short at the layout's end; `None` when the pool has grown to
    /// its end already. Growing by at least `pages` makes room whatever the free runs hold.
    pub(crate) fn end_for(&self, pages: u32) -> Option<u32> {
        self.geometry.grown_end(self.end(), pages)
    }

    /// The end to grow to for a free run of `pages` pages, if a growth can make one: that of
    /// [`end_for`](Arena::end_for), unless the pages it adds, with the free run they merge
    /// with, fall short of `pages` (a last segment cut short at the largest capacity).
    pub(crate) fn end_for_run(&self, pages: u32) -> Option<u32> {
        let end = self.end_for(pages)?;
        let added = end - self.end();
        (added.saturating_add(self.free_pages_at_end()) >= pages).then_some(end)
    }

    /// The free run an allocation of `size` bytes at `align` needs at most: a slab's pages, or
    /// the block's pages with room to align them, which is also what a small block needs where
    /// no growth can make room for a slab of its class (a pool whose largest size has none, or
    /// whose last segment is too short for one): it then gets a run of its own, see `place`.
    pub(crate) fn pages_for_alloc(&self, size: usize, align: usize) -> Option<u32> {
        let slab = self.small_class(size, align).map(|class| SLAB_PAGES[class]);
        slab.filter(|&pages| self.end_for_run(pages).is_some())
            .or_else(|| run_pages(size, align / PAGE))
    }

    /// The pages of the free run that ends where the data pages end, which a growth merges with
    /// the pages it adds: 0 when the last page is not free.
    pub(crate) fn free_pages_at_end(&self) -> u32 {
        let end = self.end();
        self.free_run_ending_at(end).map_or(0, |head| end - head)
    }

    /// The first page of the free run that ends right before `page`, if there is one. The page
    /// before is a one-page free run, or the last page of a longer run whose `head` may be
    /// stale: it is believed only if that head is a free run ending right there.
    fn free_run_ending_at(&self, page: u32) -> Option<u32> {
        if page <= self.first_data || page > self.end() {
            return None;
        }
        let before = page - 1;
        let head =
            if self.kind_of(before) == kind::FREE { before } else { get!(self, before, head) };
        let ends_here = head != NONE
            && head >= self.first_data
            && head < page
            && self.kind_of(head) == kind::FREE
            && head.checked_add(get!(self, head, len)) == Some(page);
        ends_here.then_some(head)
    }

    /// The free run a chunk of `size` bytes at `align` needs at most (see [`lend`](Arena::lend)).
    pub(crate) fn pages_for_lend(size: usize, align: usize) -> Option<u32> {
        run_pages(size, (align / PAGE).max(CHUNK_PAGES as usize))
    }

    fn desc(&self, page: u32) -> *mut PageDesc {
        // Pages come from links in shared memory, which a dying or buggy process may have left
        // anything in: a page out of range is clamped into the data pages grown so far, so that
        // even a corrupt link reads and writes a descriptor that is reserved and nothing else.
        // The end is above the first data page (see `sync_end`); `max` then `min` could not
        // panic were it not, where `clamp` would.
        let page = page.max(self.first_data).min(self.end() - 1);
        // SAFETY: descriptors follow the header, one per page of the layout, and
        // `page < end <= page_count`.
        unsafe { self.base.add(DESC_OFFSET).cast::<PageDesc>().add(page as usize) }
    }

    /// [`desc`](Arena::desc), for [`get_at!`] and [`set_at!`].
    #[inline(always)]
    fn desc_of(&self, page: u32) -> Desc {
        Desc(self.desc(page))
    }

    /// Whether a word the undo log names lies in the header, or in the descriptors or bitmap
    /// of the first `reserved` pages, where every logged write goes: see
    /// [`recover`](crate::tx::recover).
    pub(crate) fn holds_logged_word(&self, offset: u64, width: u64, reserved: u32) -> bool {
        self.geometry.holds_logged_word(offset, width, reserved)
    }

    /// Whether the run of `len` pages at `page` lies in the data pages.
    fn in_data(&self, page: u32, len: u32) -> bool {
        page >= self.first_data
            && len > 0
            && page.checked_add(len).is_some_and(|end| end <= self.end())
    }

    fn state(&self) -> *mut State {
        // SAFETY: the header is at the start of the mapping.
        unsafe { addr_of_mut!((*self.base.cast::<Header>()).state) }
    }

    /// The statistics counters, which the allocator bumps and never reads back.
    pub(crate) fn tallies(&self) -> &Tallies {
        // SAFETY: (1) the header is at the start of the mapping, which outlives every use of
        // the arena; (2) the tallies are atomics all, which other processes change only
        // atomically, so a shared reference to them claims nothing untrue.
        unsafe { &*addr_of!((*self.base.cast::<Header>()).tallies) }
    }

    /// The bitmap word holding the in-use bit of `offset`, and the bit's mask.
    fn in_use_bit(&self, offset: u64) -> (*mut u64, u64) {
        // Bounded like a page in `desc`: an offset out of the data pages, which only corrupt
        // links lead to, names a bit of theirs all the same.
        let first = self.first_data as usize * (PAGE / GRAIN);
        let last = self.end() as usize * (PAGE / GRAIN) - 1;
        let grain = (offset as usize / GRAIN).max(first).min(last);
        // SAFETY: `offset` is inside the pool, and the bitmap has a bit for every grain of it.
        (unsafe { self.bitmap.add(grain / 64) }, 1 << (grain % 64))
    }

    fn is_in_use(&self, offset: u64) -> bool {
        let (word, mask) = self.in_use_bit(offset);
        // SAFETY: the word is in the bitmap (see `in_use_bit`).
        unsafe { word.read() & mask != 0 }
    }

    fn mark_in_use(&self, tx: &mut Tx, offset: u64, in_use: bool) {
        let (word, mask) = self.in_use_bit(offset);
        // SAFETY: the word is in the bitmap (see `in_use_bit`), and the lock is held.
        unsafe {
            let old = word.read();
            tx.set(word, if in_use { old | mask } else { old & !mask });
        }
    }

    fn kind_of(&self, page: u32) -> u32 {
        get!(self, page, kind) & 0xff
    }

    /// The link word at the start of block `index` of the slab at `slab`.
    fn link(&self, slab: u32, index: u32, class: usize) -> *mut u32 {
        let offset = slab as usize * PAGE + index as usize * CLASS_SIZES[class];
        // SAFETY: the block lies in the slab's pages, inside the mapping.
        unsafe { self.base.add(offset).cast() }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two). Returns the block's offset.
    /// A refusal is counted by [`refusal`](Arena::refusal), once the caller has given up.
    pub(crate) fn alloc(&self, size: usize, align: usize) -> Option<u64> {
        let class = self.small_class(size, align);
        if let Some(class) = class {
            Tallies::bump(&self.tallies().requests[class]);
        }
        self.alloc_in(class, size, align)
    }

    /// Tries an allocation that [`alloc`](Arena::alloc) just refused again, after something
    /// (reclaiming the chunks of the dead, growing) may have made room: the same request, not
    /// counted again.
    #[cold]
    pub(crate) fn alloc_again(&self, size: usize, align: usize) -> Option<u64> {
        self.alloc_in(self.small_class(size, align), size, align)
    }

    /// Allocates `size` bytes at `align` from `class`, the small class that serves them if any.
    #[inline]
    fn alloc_in(&self, class: Option<usize>, size: usize, align: usize) -> Option<u64> {
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        let offset = self.place(&mut tx, class, size, align);
        tx.commit();
        offset
    }

    /// The block of an allocation, in the operation `tx`: the one body of the allocation
    /// paths with and without [`alloc_then`](Arena::alloc_then), inlined into both, with what
    /// it calls on the way to a small block, so that the plain path is compiled as if it were
    /// the only one.
    #[inline(always)]
    fn place(&self, tx: &mut Tx, class: Option<usize>, size: usize, align: usize) -> Option<u64> {
        match class {
            // A pool with no room for a new slab may still have a page run for the block.
            Some(class) => {
                self.alloc_small(tx, class).or_else(|| self.alloc_large(tx, size, align))
            }
            None => self.alloc_large(tx, size, align),
        }
    }

    /// Like [`alloc`](Arena::alloc) (or, with `again`, [`alloc_again`](Arena::alloc_again)),
    /// then, in the same operation, `then` with the block's offset: the writes `then` logs stand
    /// or fall with the allocation, whatever becomes of the process (the directory of names
    /// publishes a block so). `then` logs a few words at most. A `then` that writes into the
    /// block outside the log first records it to be freed and checkpoints, as `insert_named`
    /// does: a free block holds its free-list link, which an undo would not put back. Off the
    /// path of plain allocations, which stays as the compiler makes it without `then`.
    #[cold]
    pub(crate) fn alloc_then(
        &self,
        size: usize,
        align: usize,
        again: bool,
        then: AllocThen<'_, '_>,
    ) -> Option<u64> {
        let class = self.small_class(size, align);
        if let (Some(class), false) = (class, again) {
            Tallies::bump(&self.tallies().requests[class]);
        }
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        let offset = self.place(&mut tx, class, size, align);
        if let Some(offset) = offset {
            then(self, &mut tx, offset);
        }
        tx.commit();
        offset
    }

    /// Why an allocation of `size` bytes at `align` was just refused, after `no_room`: fewer
    /// bytes free than the smallest block that would serve it (its class's, or its whole
    /// pages), no block of the pool could ever serve it, or the system refused the memory to
    /// grow the pool by, is [`OutOfMemory`](ShmError::OutOfMemory); enough bytes free, but in
    /// no place that fits, is [`Fragmented`](ShmError::Fragmented). Called under the lock right
    /// after the refusal, so the figures are the ones the allocation met, and off the
    /// allocation path, so the walk for the longest free run costs only a refusal.
    /// The refusal is counted here, once.
    #[cold]
    pub(crate) fn refusal(&self, size: usize, align: usize, no_room: NoRoom) -> ShmError {
        let class = self.small_class(size, align);
        self.count_failure(class);
        let need = match (no_room, class) {
            (NoRoom::FromSystem, _) => None,
            (NoRoom::InPool, Some(class)) => Some(CLASS_SIZES[class] as u64),
            (NoRoom::InPool, None) => large_run(size, align)
                // A run is taken with room to align its start: one longer than every data page
                // the pool can ever have is never found.
                .filter(|&(pages, align_pages)| {
                    let most = self.geometry.page_count - self.geometry.first_data_page;
                    pages.checked_add(align_pages - 1).is_some_and(|need| need <= most)
                })
                .map(|(pages, _)| u64::from(pages) * PAGE as u64),
        };
        let available = self.free_bytes();
        match need {
            Some(need) if available >= need => ShmError::Fragmented {
                size,
                available: available as usize,
                largest_run: self.largest_run() as usize * PAGE,
            },
            _ => ShmError::OutOfMemory { size },
        }
    }

    /// The refusal of an allocation of `size` bytes that no layout describes (past `isize::MAX`
    /// once rounded to its alignment): [`OutOfMemory`](ShmError::OutOfMemory), counted as every
    /// refusal is.
    #[cold]
    pub(crate) fn refusal_of_no_layout(&self, size: usize) -> ShmError {
        self.count_failure(None);
        ShmError::OutOfMemory { size }
    }

    /// Counts an allocation refused, of `class` if a small class serves it.
    #[cold]
    fn count_failure(&self, class: Option<usize>) {
        let tallies = self.tallies();
        Tallies::bump(&tallies.failures);
        if let Some(class) = class {
            Tallies::bump(&tallies.class_failures[class]);
        }
    }

    /// Records the bytes in use as the peak if they are above it. Called before each free:
    /// bytes in use grow only between frees, so each high point comes right before one, or is
    /// the present, which `stats` adds; an allocation then pays for no comparison.
    fn note_peak(&self) {
        let peak = &self.tallies().peak_in_use;
        let in_use = self.in_use_bytes();
        if in_use > peak.load(Ordering::Relaxed) {
            peak.store(in_use, Ordering::Relaxed);
        }
    }

    /// Bytes of the blocks in use, from the counters: the data bytes neither free nor lent.
    fn in_use_bytes(&self) -> u64 {
        let data = u64::from(self.end() - self.first_data) * PAGE as u64;
        let lent = state!(self, lent_pages).saturating_mul(PAGE as u64);
        data.saturating_sub(lent).saturating_sub(self.free_bytes())
    }

    /// The longest free run, in pages: the longest of the highest non-empty bin, since each bin's
    /// runs are longer than those of every bin below. A bin whose list turns out broken counts as
    /// far as it is sound, or not at all, and gives way to the next; the walk, like every walk
    /// of a list, stops after as many runs as the pool has pages.
    pub(crate) fn largest_run(&self) -> u32 {
        let mask = state!(self, bin_mask);
        let mut budget = self.end();
        for bin in (0..BIN_COUNT).rev().filter(|&bin| mask & (1 << bin) != 0) {
            let (mut run, mut longest) = (state!(self, bins[bin]), 0);
            while run != NONE && budget > 0 && self.is_free_run(run, bin) {
                budget -= 1;
                longest = longest.max(get!(self, run, len));
                run = get!(self, run, next);
            }
            if longest > 0 {
                return longest;
            }
        }
        0
    }

    /// The class that serves `size` bytes at `align`, if a small one does: slabs start on a page,
    /// so a block's alignment is the largest power of two dividing its class size.
    #[inline]
    fn small_class(&self, size: usize, align: usize) -> Option<usize> {
        if align <= GRAIN {
            return class_of(size);
        }
        if size > MAX_SMALL {
            return None;
        }
        let first = class_of(size)?;
        (first..CLASS_COUNT).find(|&class| {
            let natural = 1usize << CLASS_SIZES[class].trailing_zeros().min(12);
            natural >= align
        })
    }

    #[inline(always)]
    fn alloc_small(&self, tx: &mut Tx, class: usize) -> Option<u64> {
        // Each round that finds a corrupt slab takes it off the list; a few rounds, rather than
        // as many as the list is long, bound the time a corrupt list can cost one allocation.
        for _ in 0..QUARANTINE_ROUNDS {
            let mut slab = state!(self, partial[class]);
            if slab == NONE {
                slab = self.new_slab(tx, class)?;
            }
            let desc = self.desc_of(slab);
            if !self.is_slab_of_kind(slab, class, get_at!(desc, kind)) {
                // Not a slab of this class: the list head itself is corrupt, and nothing it
                // leads to can be trusted. The list is dropped; its slabs' blocks stay where
                // they are, and frees still find them by their pages.
                set_state!(self, tx, NONE, partial[class]);
                self.count_quarantine(tx);
                tx.checkpoint();
                continue;
            }
            match self.pop_block(slab, desc, class) {
                Some(popped) => return Some(self.hand_out(tx, class, slab, popped)),
                // The head, left on the list when its last block went (see `hand_out`): off it
                // now, a step of its own after which the pool is consistent, and the next slab
                // serves.
                None if self.is_full(slab, class) => self.unlink_partial(tx, class, slab),
                None => self.quarantine(tx, class, slab),
            }
            tx.checkpoint();
        }
        None
    }

    /// Whether `slab`, a slab of `class`, has every block carved and in use, as a slab's
    /// bookkeeping says when it is full and sound.
    fn is_full(&self, slab: u32, class: usize) -> bool {
        let capacity = SLAB_BLOCKS[class];
        get!(self, slab, live) == capacity
            && get!(self, slab, carved) == capacity
            && get!(self, slab, free) == NONE
    }

    /// Whether `slab` is the first page of a slab of `class`, all of it inside the data pages.
    fn is_slab_of(&self, slab: u32, class: usize) -> bool {
        self.is_slab_of_kind(slab, class, get!(self, slab, kind))
    }

    /// [`is_slab_of`](Arena::is_slab_of), for a caller that has read the slab's `kind` already
    /// (`slab_kind`).
    #[inline(always)]
    fn is_slab_of_kind(&self, slab: u32, class: usize, slab_kind: u32) -> bool {
        self.in_data(slab, SLAB_PAGES[class])
            && slab_kind & !kind::QUARANTINED == kind::SLAB | (class as u32) << 8
    }

    /// What an allocation from `slab`, whose descriptor is `desc`, takes; `None` when the slab's
    /// bookkeeping is impossible.
    /// A freed block holds its list link where a use after free writes first, so every link is
    /// checked before it is followed: a link out of the carved blocks, or to a block in use,
    /// would hand out memory that belongs to someone else.
    #[inline(always)]
    fn pop_block(&self, slab: u32, desc: Desc, class: usize) -> Option<Popped> {
        let capacity = SLAB_BLOCKS[class];
        let (free, live, carved) =
            (get_at!(desc, free), get_at!(desc, live), get_at!(desc, carved));
        if carved > capacity || live >= capacity {
            return None;
        }
        let popped = |index, next, carving| {
            let carved = if carving { carved + 1 } else { carved };
            Popped { desc, index, next, carved, carving, live }
        };
        if free == NONE {
            return (carved < capacity).then(|| popped(carved, NONE, true));
        }
        let start = slab as u64 * PAGE as u64;
        if free >= carved || self.is_in_use(start + u64::from(free) * CLASS_SIZES[class] as u64) {
            return None;
        }
        // SAFETY: `free` is a carved block of the slab, so its first word lies in the slab.
        let next = unsafe { self.link(slab, free, class).read() };
        (next == NONE || next < carved && next != free).then(|| popped(free, next, false))
    }

    /// Hands out the block [`pop_block`](Arena::pop_block) found in `slab`.
    #[inline(always)]
    fn hand_out(&self, tx: &mut Tx, class: usize, slab: u32, popped: Popped) -> u64 {
        let Popped { desc, index, next, carved, carving, live } = popped;
        if carving {
            set_at!(tx, desc, carved, carved);
        }
        // Below the slab's capacity (`pop_block`), so one more cannot overflow.
        set_free_live(tx, desc, next, live + 1);
        // A slab that fills stays at the head of its class's list until an allocation finds it
        // full (`alloc_small`): a free that follows at once, as an allocation paired with its
        // free at a slab's last block does, then finds it on the list, and neither operation
        // relinks it. Only the head can be full on the list.
        let size = CLASS_SIZES[class] as u64;
        self.count_alloc(size);
        let offset = slab as u64 * PAGE as u64 + u64::from(index) * size;
        self.mark_in_use(tx, offset, true);
        offset
    }

    /// Takes a slab whose free list is corrupt out of use: off its class's list, marked so that
    /// no free puts it back and `check` reports it. Its blocks in use stay in use and can still
    /// be freed; its free blocks are lost, which is the price of never following a bad link.
    #[cold]
    fn quarantine(&self, tx: &mut Tx, class: usize, slab: u32) {
        self.unlink_partial(tx, class, slab);
        set!(self, tx, slab, kind, get!(self, slab, kind) | kind::QUARANTINED);
        self.count_quarantine(tx);
    }

    fn count_quarantine(&self, tx: &mut Tx) {
        set_state!(self, tx, state!(self, quarantined).saturating_add(1), quarantined);
    }

    /// Slabs (or slab lists) taken out of use because their free lists were corrupt.
    pub(crate) fn quarantined(&self) -> u32 {
        state!(self, quarantined)
    }

    /// `free_bytes` is the one word of the state written outside the log: it follows from the
    /// pages, so after an undo [`recount_after_undo`](Arena::recount_after_undo) sets it again,
    /// and the hot paths save a log entry. Only the undo of a non-empty log recounts, so every
    /// call comes after a logged write of the same step.
    ///
    /// The counter is shared memory that a crash or another process's bug may have left wrong;
    /// it saturates rather than wrap or panic, and `check` reports the disagreement.
    fn count_alloc(&self, bytes: u64) {
        let place = self.free_bytes_word();
        // SAFETY: the word lies in the header, and the lock is held.
        unsafe { place.write(place.read().saturating_sub(bytes)) };
    }

    fn count_free(&self, bytes: u64) {
        let place = self.free_bytes_word();
        // SAFETY: as in `count_alloc`.
        unsafe { place.write(place.read().saturating_add(bytes)) };
    }

    fn free_bytes_word(&self) -> *mut u64 {
        // SAFETY: the state lies in the header at the start of the mapping.
        unsafe { addr_of_mut!((*self.state()).free_bytes) }
    }

    /// Sets `free_bytes` from the pages, after an operation left half done was undone; first
    /// takes the end of the pages again from the header, which the undo may have moved back,
    /// bounded by the `mapped` pages of this process.
    pub(crate) fn recount_after_undo(&self, mapped: u32) {
        self.sync_end(mapped);
        let counted = self.count_pages(&mut [ClassCount::default(); CLASS_COUNT]);
        // SAFETY: the word lies in the header, and the lock is held (see `new`).
        unsafe { self.free_bytes_word().write(counted.free_bytes) };
    }

    fn new_slab(&self, tx: &mut Tx, class: usize) -> Option<u32> {
        let pages = SLAB_PAGES[class];
        let slab = self.alloc_run(tx, pages, 1)?;
        set!(self, tx, slab, kind, kind::SLAB | (class as u32) << 8);
        set!(self, tx, slab, len, pages);
        set_free_live(tx, self.desc_of(slab), NONE, 0);
        set!(self, tx, slab, carved, 0);
        for page in slab + 1..slab + pages {
            set!(self, tx, page, kind, kind::SLAB_PAGE);
            set!(self, tx, page, head, slab);
        }
        self.push_partial(tx, class, slab);
        Some(slab)
    }

    fn push_partial(&self, tx: &mut Tx, class: usize, slab: u32) {
        let next = state!(self, partial[class]);
        set!(self, tx, slab, prev, NONE);
        set!(self, tx, slab, next, next);
        if next != NONE {
            set!(self, tx, next, prev, slab);
        }
        set_state!(self, tx, slab, partial[class]);
    }

    /// Puts `slab` on its class's list right after the first, so that allocations keep coming
    /// from the same slab and a slab emptied behind it can be given back.
    fn push_partial_second(&self, tx: &mut Tx, class: usize, slab: u32) {
        let first = state!(self, partial[class]);
        if first == NONE {
            self.push_partial(tx, class, slab);
            return;
        }
        let after = get!(self, first, next);
        set!(self, tx, slab, prev, first);
        set!(self, tx, slab, next, after);
        if after != NONE {
            set!(self, tx, after, prev, slab);
        }
        set!(self, tx, first, next, slab);
    }

    fn unlink_partial(&self, tx: &mut Tx, class: usize, slab: u32) {
        let (prev, next) = (get!(self, slab, prev), get!(self, slab, next));
        if prev == NONE {
            set_state!(self, tx, next, partial[class]);
        } else {
            set!(self, tx, prev, next, next);
        }
        if next != NONE {
            set!(self, tx, next, prev, prev);
        }
        set!(self, tx, slab, prev, NONE);
        set!(self, tx, slab, next, NONE);
    }

    fn alloc_large(&self, tx: &mut Tx, size: usize, align: usize) -> Option<u64> {
        let (pages, align_pages) = large_run(size, align)?;
        let page = self.alloc_run(tx, pages, align_pages)?;
        set!(self, tx, page, kind, kind::LARGE);
        set!(self, tx, page, len, pages);
        self.count_alloc(u64::from(pages) * PAGE as u64);
        let offset = page as u64 * PAGE as u64;
        self.mark_in_use(tx, offset, true);
        Some(offset)
    }

    /// Takes a run of `pages` pages starting at a multiple of `align` pages, giving back empty
    /// cached slabs first if nothing fits.
    fn alloc_run(&self, tx: &mut Tx, pages: u32, align: u32) -> Option<u32> {
        let need = pages.checked_add(align - 1)?;
        let run = match self.take_run(tx, need) {
            Some(run) => run,
            None => {
                if !self.trim(tx) {
                    return None;
                }
                self.take_run(tx, need)?
            }
        };
        let len = get!(self, run, len);
        let start = run.next_multiple_of(align);
        let lead = start - run;
        let tail = len - lead - pages;
        if lead > 0 {
            self.insert_free(tx, run, lead);
        }
        if tail > 0 {
            self.insert_free(tx, start + pages, tail);
        }
        Some(start)
    }

    /// Removes and returns a free run of at least `need` pages: the first run of `need`'s own
    /// bin if it is long enough, else the first run of the next bin that holds any, all of whose
    /// runs are; only when there is none, before the caller refuses the request or grows the
    /// pool, the rest of `need`'s own bin ([`take_fitting_run`](Arena::take_fitting_run)).
    fn take_run(&self, tx: &mut Tx, need: u32) -> Option<u32> {
        let floor = 31 - need.leading_zeros();
        let first = state!(self, bins[floor as usize]);
        if first != NONE && get!(self, first, len) >= need {
            if !self.is_free_run(first, floor as usize) {
                return self.drop_bin(tx, floor as usize);
            }
            self.remove_free(tx, first);
            return Some(first);
        }
        // Every run in a bin at or above `ceil` is at least `2^ceil >= need` pages long.
        let ceil = if need.is_power_of_two() { floor } else { floor + 1 };
        let mask = if (ceil as usize) < BIN_COUNT {
            state!(self, bin_mask) & (u32::MAX << ceil)
        } else {
            0
        };
        if mask == 0 {
            return self.take_fitting_run(tx, need, floor as usize);
        }
        let bin = mask.trailing_zeros() as usize;
        let run = state!(self, bins[bin]);
        if !self.is_free_run(run, bin) {
            return self.drop_bin(tx, bin);
        }
        self.remove_free(tx, run);
        Some(run)
    }

    /// Removes and returns the first run of bin `bin` that holds `need` pages, if any: a walk of
    /// the bin, whose runs are `2^bin` to `2^(bin + 1) - 1` pages long, so that a head too short
    /// for `need` says nothing of the runs after it. Only a request that would otherwise be
    /// refused, or grow the pool, walks: every allocation that a bin's head serves stays O(1),
    /// and `stats().largest_free_run` is a block the pool hands out. A run that is not a free
    /// run of the bin ends the walk and gives the bin up, as a corrupt head does.
    #[cold]
    fn take_fitting_run(&self, tx: &mut Tx, need: u32, bin: usize) -> Option<u32> {
        let mut run = state!(self, bins[bin]);
        // A bin never holds more runs than the pool has pages: a looped list is walked no
        // further.
        let mut budget = self.end();
        while run != NONE && budget > 0 {
            if !self.is_free_run(run, bin) {
                return self.drop_bin(tx, bin);
            }
            if get!(self, run, len) >= need {
                self.remove_free(tx, run);
                return Some(run);
            }
            budget -= 1;
            run = get!(self, run, next);
        }
        None
    }

    /// Whether `run` is a free run of bin `bin`, inside the data pages: what a bin's head must
    /// be before the pages it names are handed out.
    fn is_free_run(&self, run: u32, bin: usize) -> bool {
        let len = get!(self, run, len);
        self.in_data(run, len) && self.kind_of(run) == kind::FREE && Self::bin_of(len) == bin
    }

    /// Empties a bin whose head is not one of its free runs: nothing it leads to can be
    /// trusted, so its runs are given up rather than handed out. Returns `None`, for the
    /// request that found it.
    #[cold]
    fn drop_bin(&self, tx: &mut Tx, bin: usize) -> Option<u32> {
        set_state!(self, tx, NONE, bins[bin]);
        set_state!(self, tx, state!(self, bin_mask) & !(1 << bin), bin_mask);
        self.count_quarantine(tx);
        tx.checkpoint();
        None
    }

    /// Gives back every empty slab: the one each class keeps at the front of its list for reuse.
    /// Returns whether any was given back.
    ///
    /// Runs before the operation that needs the room has written anything (see `alloc_run`'s
    /// callers), so each slab given back is a step of its own: the pool is consistent after
    /// each, and the log is emptied, since one slab per class at once would overflow it.
    fn trim(&self, tx: &mut Tx) -> bool {
        let mut any = false;
        for class in 0..CLASS_COUNT {
            let mut slab = state!(self, partial[class]);
            // A list is never longer than the pool has pages, nor holds anything but slabs of
            // its class: a corrupt one is walked no further.
            let mut budget = self.end();
            while slab != NONE && budget > 0 && self.is_slab_of(slab, class) {
                budget -= 1;
                let next = get!(self, slab, next);
                if get!(self, slab, live) == 0 {
                    self.release_slab(tx, class, slab);
                    tx.checkpoint();
                    any = true;
                }
                slab = next;
            }
        }
        any
    }

    fn release_slab(&self, tx: &mut Tx, class: usize, slab: u32) {
        self.unlink_partial(tx, class, slab);
        let pages = SLAB_PAGES[class];
        for page in slab + 1..slab + pages {
            set!(self, tx, page, kind, kind::INTERIOR);
        }
        self.free_run(tx, slab, pages);
    }

    fn bin_of(len: u32) -> usize {
        // A run of no pages is a corrupt descriptor; it files with runs of one page rather than
        // underflow.
        (31 - len.max(1).leading_zeros()) as usize
    }

    fn insert_free(&self, tx: &mut Tx, page: u32, len: u32) {
        let bin = Self::bin_of(len);
        let next = state!(self, bins[bin]);
        set!(self, tx, page, kind, kind::FREE);
        set!(self, tx, page, len, len);
        set!(self, tx, page, prev, NONE);
        set!(self, tx, page, next, next);
        if next != NONE {
            set!(self, tx, next, prev, page);
        }
        set_state!(self, tx, page, bins[bin]);
        let mask = state!(self, bin_mask);
        if mask & (1 << bin) == 0 {
            set_state!(self, tx, mask | (1 << bin), bin_mask);
        }
        if len > 1 {
            set!(self, tx, page.saturating_add(len - 1), head, page);
        }
    }

    fn remove_free(&self, tx: &mut Tx, page: u32) {
        let bin = Self::bin_of(get!(self, page, len));
        let (prev, next) = (get!(self, page, prev), get!(self, page, next));
        if prev == NONE {
            set_state!(self, tx, next, bins[bin]);
            if next == NONE {
                set_state!(self, tx, state!(self, bin_mask) & !(1 << bin), bin_mask);
            }
        } else {
            set!(self, tx, prev, next, next);
        }
        if next != NONE {
            set!(self, tx, next, prev, prev);
        }
    }

    /// Returns a run to the free bins, merged with the free runs on either side.
    fn free_run(&self, tx: &mut Tx, page: u32, len: u32) {
        let (mut start, mut total) = (page, len);
        let after = page + len;
        if after < self.end() && self.kind_of(after) == kind::FREE {
            let after_len = get!(self, after, len);
            self.remove_free(tx, after);
            set!(self, tx, after, kind, kind::INTERIOR);
            total = total.saturating_add(after_len);
        }
        if let Some(head) = self.free_run_ending_at(page) {
            let head_len = get!(self, head, len);
            self.remove_free(tx, head);
            set!(self, tx, page, kind, kind::INTERIOR);
            start = head;
            total = total.saturating_add(head_len);
        }
        self.insert_free(tx, start, total);
    }

    /// Lends a chunk of `size` bytes aligned to `align` (at least a whole chunk) to a child pool
    /// of the process in owner slot `owner` (claimed), or of no slot's with [`NONE`].
    pub(crate) fn lend(&self, size: usize, align: usize, owner: u32) -> Option<u64> {
        let pages = u32::try_from(size.div_ceil(PAGE)).ok()?;
        // A chunk of no pages would be a run of length 0 in the middle of the free runs, which
        // every walk of the pages would stop at.
        if pages == 0 {
            return None;
        }
        let align_pages = u32::try_from(align / PAGE).ok()?.max(CHUNK_PAGES);
        if align_pages as usize * PAGE > crate::sys::MAP_ALIGN {
            return None;
        }
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        let Some(page) = self.alloc_run(&mut tx, pages, align_pages) else {
            tx.commit();
            return None;
        };
        set!(self, tx, page, kind, kind::LENT);
        set!(self, tx, page, len, pages);
        for next in page + 1..page + pages.min(CHUNK_PAGES) {
            set!(self, tx, next, kind, kind::LENT_PAGE);
            set!(self, tx, next, head, page);
        }
        // Its remote-free list and state start empty (see `arena/remote.rs`).
        let tail = remote::tail_page(page, pages);
        set!(self, tx, tail, live, 0);
        set!(self, tx, tail, carved, 0);
        self.link_lent(&mut tx, page, owner);
        self.count_alloc(u64::from(pages) * PAGE as u64);
        set_state!(self, tx, state!(self, lent_pages).saturating_add(u64::from(pages)), lent_pages);
        tx.commit();
        Some(page as u64 * PAGE as u64)
    }

    /// Takes back a chunk lent with [`lend`](Arena::lend) to `owner` (or orphaned, for
    /// [`ORPHANS`]): into the free runs, or, while blocks handed off from it to other processes
    /// are still out (or frees of them in flight), onto the orphans' list, from which the free
    /// that finds nothing of it out any more takes it back. If `offset` is not the start of a
    /// chunk of that size lent to that owner, nothing changes.
    pub(crate) fn take_back(&self, offset: u64, size: usize, owner: u32) -> GiveBack {
        let Some(page) = self.page_of(offset) else { return GiveBack::Refused };
        let Ok(pages) = u32::try_from(size.div_ceil(PAGE)) else { return GiveBack::Refused };
        if offset % PAGE as u64 != 0
            || !self.in_data(page, pages)
            || self.kind_of(page) != kind::LENT
            || get!(self, page, len) != pages
            || get!(self, page, free) != owner
        {
            return GiveBack::Refused;
        }
        // From here on a free that finds the chunk given up looks whether it can go back; if
        // something of it is out now, such a free will come.
        if self.orphan(page) {
            if owner != ORPHANS {
                // SAFETY: the lock is held (see `new`) and the log is empty between operations.
                let mut tx = unsafe { Tx::begin(self.base) };
                self.unlink_lent(&mut tx, page);
                self.link_lent(&mut tx, page, ORPHANS);
                tx.commit();
            }
            return GiveBack::Orphaned;
        }
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        // A logged write comes before the unlogged count, as in every operation: a process that
        // died between the count and the first logged write would leave an empty log, and no
        // later holder would know to recount (a one-page chunk has no page to mark here).
        let lent = state!(self, lent_pages).saturating_sub(u64::from(pages));
        set_state!(self, tx, lent, lent_pages);
        for next in page + 1..page + pages.min(CHUNK_PAGES) {
            set!(self, tx, next, kind, kind::INTERIOR);
        }
        self.unlink_lent(&mut tx, page);
        self.count_free(u64::from(pages) * PAGE as u64);
        self.free_run(&mut tx, page, pages);
        tx.commit();
        GiveBack::TakenBack
    }

    fn page_of(&self, offset: u64) -> Option<u32> {
        let page = u32::try_from(offset / PAGE as u64).ok()?;
        self.in_data(page, 1).then_some(page)
    }

    /// What the block at `offset` is, or why it is not an in-use block of this pool. O(1): the
    /// in-use bitmap says whether a block starts there.
    pub(crate) fn locate(&self, offset: u64) -> Result<Located, FreeError> {
        let addr = self.base.addr().wrapping_add(offset as usize);
        let Some(page) = self.page_of(offset) else {
            return Err(FreeError::Foreign { addr });
        };
        let desc = self.desc_of(page);
        let page_kind = get_at!(desc, kind);
        let desc_kind = page_kind & 0xff;
        if matches!(desc_kind, kind::LENT | kind::LENT_PAGE) {
            return Ok(Located::Lent);
        }
        let in_use = offset % GRAIN as u64 == 0 && self.is_in_use(offset);
        let (slab, slab_kind) = match desc_kind {
            kind::SLAB => (page, page_kind),
            kind::SLAB_PAGE => {
                let head = get_at!(desc, head);
                (head, get!(self, head, kind))
            }
            kind::LARGE if in_use && self.in_data(page, get_at!(desc, len)) => {
                return Ok(Located::Large { page })
            }
            // Only the first byte of a large block's first page starts it (that start is in use
            // for as long as the page says LARGE); any other byte of the page is inside it.
            kind::LARGE => return Err(FreeError::Interior { addr }),
            kind::FREE => return Err(FreeError::NotInUse { addr }),
            _ => return Err(FreeError::Interior { addr }),
        };
        let class = ((slab_kind >> 8) & 0xff) as usize;
        if class >= CLASS_COUNT || !self.is_slab_of_kind(slab, class, slab_kind) {
            return Err(FreeError::Interior { addr });
        }
        let relative = offset.wrapping_sub(slab as u64 * PAGE as u64);
        let Some(index) = block_index(relative, class) else {
            return Err(FreeError::Interior { addr });
        };
        if !in_use {
            return Err(FreeError::NotInUse { addr });
        }
        Ok(Located::Small { slab, index, class })
    }

    /// The bytes the block at a located offset can hold.
    pub(crate) fn usable_size(&self, located: Located) -> usize {
        match located {
            Located::Small { class, .. } => CLASS_SIZES[class],
            Located::Large { page } => get!(self, page, len) as usize * PAGE,
            Located::Lent => 0,
        }
    }

    /// Frees the block at `offset`, after checking it is an in-use block of this pool. Blocks of
    /// chunks lent to child pools are refused: their child frees them.
    pub(crate) fn free(&self, offset: u64) -> Result<(), FreeError> {
        let located = self.freeable(offset)?;
        self.note_peak();
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        self.release(&mut tx, offset, located);
        tx.commit();
        Ok(())
    }

    /// Records the block at `offset` as the one to free ([`set_releasing`]), in an operation of
    /// its own: from its commit on, the block is freed by [`finish_release`], this process's or,
    /// should it die first, the next holder's.
    ///
    /// [`set_releasing`]: Arena::set_releasing
    /// [`finish_release`]: Arena::finish_release
    pub(crate) fn record_release(&self, offset: u64) {
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        self.set_releasing(&mut tx, offset);
        tx.commit();
    }

    /// Frees the named block at `offset` and forgets its name, in slot `slot`, in two steps of
    /// one operation: the name goes first, with the block recorded as
    /// [`releasing`](crate::layout::Names::releasing); then the free, which writes a free-list
    /// link into the block outside the log. A death in the second step is undone back to the
    /// first step's end, with the name gone, never back to a name whose value the link
    /// overwrote. The free is finished by the next holder, when the lock tells it of the death
    /// or the log is not empty, or else by the next change to the directory
    /// ([`finish_release`](Arena::finish_release)).
    #[cold]
    pub(crate) fn free_named(&self, offset: u64, slot: usize) -> Result<(), FreeError> {
        let located = self.freeable(offset)?;
        self.note_peak();
        // SAFETY: the lock is held (see `new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        self.forget_name(&mut tx, slot);
        self.set_releasing(&mut tx, offset);
        tx.checkpoint();
        self.release(&mut tx, offset, located);
        self.set_releasing(&mut tx, 0);
        tx.commit();
        Ok(())
    }

    /// Finishes the free of a named block whose removal died after its name was gone, or of a
    /// block whose insertion died or failed before it published its name: frees the block if it
    /// is still in use, and clears the record. The caller holds the lock, with the log empty.
    #[cold]
    pub(crate) fn finish_release(&self) {
        let offset = state!(self, names.releasing);
        if offset == 0 {
            return;
        }
        let located = match self.freeable(offset) {
            Ok(located) => Some(located),
            // Freed already: only the record is left to clear.
            Err(FreeError::NotInUse { .. }) => None,
            // Anything else (pages this process has not caught up with, a record a dying or
            // buggy process left wrong) keeps the record, for a holder that can free it, or
            // for `check` to see.
            Err(_) => return,
        };
        if located.is_some() {
            // The block counted as in use since its allocation, which may have been the peak.
            self.note_peak();
        }
        // SAFETY: the lock is held (see `new`) and the log is empty (caller).
        let mut tx = unsafe { Tx::begin(self.base) };
        if let Some(located) = located {
            self.release(&mut tx, offset, located);
        }
        set_state!(self, tx, 0, names.releasing);
        tx.commit();
    }

    /// The block at `offset`, if it is one a free of the pool's takes: in use, and not in a
    /// lent chunk.
    #[inline(always)]
    fn freeable(&self, offset: u64) -> Result<Located, FreeError> {
        let located = self.locate(offset)?;
        if located == Located::Lent {
            let addr = self.base.addr().wrapping_add(offset as usize);
            return Err(FreeError::Foreign { addr });
        }
        Ok(located)
    }

    /// Frees the block `located` at `offset`, in the operation `tx`: the one body of the free
    /// paths of plain and named blocks ([`free_named`](Arena::free_named)), inlined into both as
    /// `place` is.
    #[inline(always)]
    fn release(&self, tx: &mut Tx, offset: u64, located: Located) {
        if let Located::Small { slab, index, class } = located {
            self.free_small(tx, offset, slab, index, class);
        } else if let Located::Large { page } = located {
            self.mark_in_use(tx, offset, false);
            let pages = get!(self, page, len);
            self.count_free(u64::from(pages) * PAGE as u64);
            self.free_run(tx, page, pages);
        }
    }

    /// Frees block `index` of `slab`, which starts at `offset`.
    #[inline(always)]
    fn free_small(&self, tx: &mut Tx, offset: u64, slab: u32, index: u32, class: usize) {
        let desc = self.desc_of(slab);
        let live = get_at!(desc, live);
        let link = self.link(slab, index, class);
        // The link needs no log entry: were this free undone, the block would be in use again and
        // its contents its owner's business.
        let next = get_at!(desc, free);
        // SAFETY: the block is carved, in use and being freed, so its first word can hold a link.
        unsafe { link.write(next) };
        set_free_live(tx, desc, index, live.saturating_sub(1));
        self.mark_in_use(tx, offset, false);
        self.count_free(CLASS_SIZES[class] as u64);
        // A quarantined slab stays out of use: its list cannot be trusted.
        if get_at!(desc, kind) & kind::QUARANTINED != 0 {
            return;
        }
        // A full slab goes back on its class's list, unless it is still its head.
        if live == SLAB_BLOCKS[class] && state!(self, partial[class]) != slab {
            self.push_partial_second(tx, class, slab);
        }
        // An empty slab goes back to the free runs, unless it is the one allocations come from.
        if live == 1 && state!(self, partial[class]) != slab {
            self.release_slab(tx, class, slab);
        }
    }

    /// Bytes free: read straight from the state.
    pub(crate) fn free_bytes(&self) -> u64 {
        state!(self, free_bytes)
    }

    /// The counters: the two kept in the state, and the rest added up from the pages, which
    /// keeps them off the allocation path.
    pub(crate) fn counters(&self) -> Counters {
        self.census().0
    }

    /// The counters, and per size class its slabs and their blocks in use: one walk of the
    /// pages.
    pub(crate) fn census(&self) -> (Counters, [ClassCount; CLASS_COUNT]) {
        let mut classes = [ClassCount::default(); CLASS_COUNT];
        let mut counted = self.count_pages(&mut classes);
        counted.free_bytes = state!(self, free_bytes);
        counted.lent_pages = state!(self, lent_pages);
        (counted, classes)
    }

    /// Adds up blocks, bytes and pages by walking the runs, and each class's slabs and blocks in
    /// use into `classes`.
    fn count_pages(&self, classes: &mut [ClassCount; CLASS_COUNT]) -> Counters {
        let mut counted =
            Counters { data_pages: self.end() - self.first_data, ..Counters::default() };
        let mut page = self.first_data;
        while page < self.end() {
            let len = get!(self, page, len).max(1);
            let desc_kind = get!(self, page, kind);
            // The descriptors may be anything a dying or buggy process left: sums saturate.
            let pages_bytes = u64::from(len) * PAGE as u64;
            match desc_kind & 0xff {
                kind::FREE => counted.free_bytes = counted.free_bytes.saturating_add(pages_bytes),
                kind::SLAB => {
                    let class = (((desc_kind >> 8) & 0xff) as usize).min(CLASS_COUNT - 1);
                    let live = u64::from(get!(self, page, live));
                    let used = live * CLASS_SIZES[class] as u64;
                    counted.live_blocks = counted.live_blocks.saturating_add(live);
                    counted.bytes_in_use = counted.bytes_in_use.saturating_add(used);
                    classes[class].slabs = classes[class].slabs.saturating_add(1);
                    classes[class].live_blocks = classes[class].live_blocks.saturating_add(live);
                    let slab_bytes = u64::from(get!(self, page, len)) * PAGE as u64;
                    let unused = slab_bytes.saturating_sub(used);
                    counted.free_bytes = counted.free_bytes.saturating_add(unused);
                }
                kind::LARGE => {
                    counted.live_blocks = counted.live_blocks.saturating_add(1);
                    counted.large_blocks = counted.large_blocks.saturating_add(1);
                    counted.bytes_in_use = counted.bytes_in_use.saturating_add(pages_bytes);
                }
                kind::LENT => {
                    counted.lent_pages = counted.lent_pages.saturating_add(u64::from(len));
                    if get!(self, page, free) == ORPHANS {
                        counted.orphaned_pages =
                            counted.orphaned_pages.saturating_add(u64::from(len));
                    }
                }
                _ => {}
            }
            page = page.saturating_add(len);
        }
        counted
    }

    /// Walks every page, run, bin and slab list, and checks that they agree with each other and
    /// with the counters.
    pub(crate) fn check(&self) -> Result<(), crate::ShmCheckError> {
        use crate::ShmCheckError as E;
        let header = self.base.cast::<Header>();
        // SAFETY: the header is at the start of the mapping.
        if unsafe { (*header).log_len.load(core::sync::atomic::Ordering::Acquire) } != 0 {
            return Err(E::UnfinishedOperation);
        }
        let mut counted =
            Counters { data_pages: self.end() - self.first_data, ..Counters::default() };
        let (mut free_runs, mut partial_slabs) = (0u32, [0u32; CLASS_COUNT]);
        let mut lent_chunks = [0u32; OWNER_LISTS];
        let mut page = self.first_data;
        let mut previous_free = false;
        while page < self.end() {
            let len = get!(self, page, len);
            if len == 0 || page.checked_add(len).is_none_or(|end| end > self.end()) {
                return Err(E::BadPage { page });
            }
            let desc_kind = get!(self, page, kind);
            let is_free = desc_kind & 0xff == kind::FREE;
            match desc_kind & 0xff {
                kind::FREE => {
                    if previous_free {
                        return Err(E::UnmergedFreeRuns { page });
                    }
                    if len > 1 && get!(self, page + len - 1, head) != page {
                        return Err(E::BadPage { page });
                    }
                    free_runs += 1;
                    counted.free_bytes += u64::from(len) * PAGE as u64;
                }
                kind::SLAB => {
                    if desc_kind & kind::QUARANTINED != 0 {
                        return Err(E::Quarantined { page });
                    }
                    let class = ((desc_kind >> 8) & 0xff) as usize;
                    if class >= CLASS_COUNT || len != SLAB_PAGES[class] {
                        return Err(E::BadPage { page });
                    }
                    self.check_slab(page, class, &mut counted)?;
                    if get!(self, page, live) < SLAB_BLOCKS[class] {
                        partial_slabs[class] += 1;
                    }
                }
                kind::LARGE => {
                    if !self.is_in_use(page as u64 * PAGE as u64) {
                        return Err(E::BadPage { page });
                    }
                    counted.live_blocks += 1;
                    counted.large_blocks += 1;
                    counted.bytes_in_use += u64::from(len) * PAGE as u64;
                }
                kind::LENT => {
                    for next in page + 1..page + len.min(CHUNK_PAGES) {
                        if self.kind_of(next) != kind::LENT_PAGE || get!(self, next, head) != page {
                            return Err(E::BadPage { page: next });
                        }
                    }
                    match get!(self, page, free) {
                        NONE => {}
                        owner if (owner as usize) < OWNER_LISTS => {
                            lent_chunks[owner as usize] += 1;
                        }
                        _ => return Err(E::BadPage { page }),
                    }
                    counted.lent_pages += u64::from(len);
                }
                _ => return Err(E::BadPage { page }),
            }
            previous_free = is_free;
            page += len;
        }
        self.check_lists(free_runs, &partial_slabs)?;
        self.check_owners(&lent_chunks)?;
        self.check_names()?;
        let recorded = self.counters();
        let pairs = [
            ("free bytes", counted.free_bytes, recorded.free_bytes),
            ("lent pages", counted.lent_pages, recorded.lent_pages),
        ];
        for (counter, counted, recorded) in pairs {
            if counted != recorded {
                return Err(E::CountersDisagree { counter, counted, recorded });
            }
        }
        Ok(())
    }

    fn check_slab(
        &self,
        slab: u32,
        class: usize,
        counted: &mut Counters,
    ) -> Result<(), crate::ShmCheckError> {
        use crate::ShmCheckError as E;
        let capacity = SLAB_BLOCKS[class];
        let (live, carved) = (get!(self, slab, live), get!(self, slab, carved));
        if carved > capacity || live > carved {
            return Err(E::BadSlab { page: slab });
        }
        for page in slab + 1..slab + SLAB_PAGES[class] {
            if self.kind_of(page) != kind::SLAB_PAGE || get!(self, page, head) != slab {
                return Err(E::BadPage { page });
            }
        }
        let mut entry = get!(self, slab, free);
        let mut free = 0;
        while entry != NONE {
            if entry >= carved || free >= carved {
                return Err(E::BadSlab { page: slab });
            }
            free += 1;
            // SAFETY: the entry is a carved block of the slab, holding the next index.
            entry = unsafe { self.link(slab, entry, class).read() };
        }
        if live + free != carved {
            return Err(E::BadSlab { page: slab });
        }
        let size = CLASS_SIZES[class] as u64;
        let start = slab as u64 * PAGE as u64;
        let marked =
            (0..capacity).filter(|&index| self.is_in_use(start + u64::from(index) * size)).count();
        if marked != live as usize {
            return Err(E::BadSlab { page: slab });
        }
        counted.live_blocks += u64::from(live);
        counted.bytes_in_use += u64::from(live) * size;
        counted.free_bytes += u64::from(SLAB_PAGES[class]) * PAGE as u64 - u64::from(live) * size;
        Ok(())
    }

    fn check_lists(
        &self,
        free_runs: u32,
        partial_slabs: &[u32; CLASS_COUNT],
    ) -> Result<(), crate::ShmCheckError> {
        use crate::ShmCheckError as E;
        let mut listed_runs = 0;
        let mask = state!(self, bin_mask);
        for bin in 0..BIN_COUNT {
            let mut run = state!(self, bins[bin]);
            if (run != NONE) != (mask & (1 << bin) != 0) {
                return Err(E::BadList);
            }
            let mut prev = NONE;
            while run != NONE {
                let valid = run >= self.first_data
                    && run < self.end()
                    && self.kind_of(run) == kind::FREE
                    && Self::bin_of(get!(self, run, len)) == bin
                    && get!(self, run, prev) == prev
                    && listed_runs < free_runs;
                if !valid {
                    return Err(E::BadList);
                }
                listed_runs += 1;
                prev = run;
                run = get!(self, run, next);
            }
        }
        if listed_runs != free_runs {
            return Err(E::BadList);
        }
        for class in 0..CLASS_COUNT {
            let head = state!(self, partial[class]);
            // The head alone may be full (see `hand_out`); every other listed slab has room.
            let head_full = u32::from(
                head != NONE && self.is_slab_of(head, class) && self.is_full(head, class),
            );
            let mut slab = head;
            let mut prev = NONE;
            let mut listed = 0;
            while slab != NONE {
                let valid = slab >= self.first_data
                    && slab < self.end()
                    && get!(self, slab, kind) == kind::SLAB | (class as u32) << 8
                    && (get!(self, slab, live) < SLAB_BLOCKS[class] || slab == head)
                    && get!(self, slab, prev) == prev
                    && listed < partial_slabs[class] + head_full;
                if !valid {
                    return Err(E::BadList);
                }
                listed += 1;
                prev = slab;
                slab = get!(self, slab, next);
            }
            if listed != partial_slabs[class] + head_full {
                return Err(E::BadList);
            }
        }
        Ok(())
    }
}

/// The pages of a large block of `size` bytes at `align`, and the multiple of pages it starts
/// at; `None` when no run could hold it: more pages than a page index counts, or an alignment
/// beyond the mapping's own.
fn large_run(size: usize, align: usize) -> Option<(u32, u32)> {
    let pages = u32::try_from(size.max(1).div_ceil(PAGE)).ok()?;
    let align_pages = u32::try_from((align / PAGE).max(1)).ok()?;
    (align_pages as usize * PAGE <= crate::sys::MAP_ALIGN).then_some((pages, align_pages))
}

/// How many corrupt slabs one allocation takes out of use before it gives up on its class and
/// looks for a page run instead.
const QUARANTINE_ROUNDS: u32 = 4;

/// Per class, `2^32 / size` rounded up: a multiplication and a shift divide a slab offset by the
/// class size, several times faster than a division on the free path.
const RECIPROCALS: [u64; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        table[class] = (1u64 << 32).div_ceil(CLASS_SIZES[class] as u64);
        class += 1;
    }
    table
};

/// Sets a slab's free-list head and live count with one logged write: the two words are side by
/// side in the descriptor, in one aligned 64-bit word. Every write to either goes through here,
/// so that the two are never written at another width: a store of 32 bits over part of an
/// earlier one of 64 is outside what the memory model defines for atomics. The caller holds the
/// lock.
fn set_free_live(tx: &mut Tx, desc: Desc, free: u32, live: u32) {
    let mut bytes = [0; 8];
    bytes[..4].copy_from_slice(&free.to_ne_bytes());
    bytes[4..].copy_from_slice(&live.to_ne_bytes());
    // SAFETY: (1) a `Desc` points at a descriptor inside the mapping, and `free` and `live` are
    // adjacent u32 fields of that `repr(C)` descriptor, the first at a multiple of 8 into it;
    // descriptors are 32 bytes and start `DESC_OFFSET`, a multiple of 8, into the page-aligned
    // mapping (all asserted in `layout`); (2) the lock is held (caller).
    unsafe { tx.set(addr_of_mut!((*desc.0).free).cast::<u64>(), u64::from_ne_bytes(bytes)) }
}

/// The index of the block of `class` that starts `relative` bytes into its slab, or `None` when
/// no block starts there. The reciprocal is exact for every offset inside a slab (below 2^16
/// bytes, with class sizes below 2^14); the check against the product makes that plain.
#[inline(always)]
fn block_index(relative: u64, class: usize) -> Option<u32> {
    let size = CLASS_SIZES[class] as u64;
    let index = (relative.min(u64::from(u32::MAX)) * RECIPROCALS[class]) >> 32;
    (index * size == relative && index < u64::from(SLAB_BLOCKS[class])).then_some(index as u32)
}

/// Pages of a run that holds `size` bytes starting at a multiple of `align_pages` pages,
/// wherever the run starts.
fn run_pages(size: usize, align_pages: usize) -> Option<u32> {
    // An alignment past the mapping's own is never served, however the pool grows.
    if align_pages * PAGE > crate::sys::MAP_ALIGN {
        return None;
    }
    let pages = size.max(1).div_ceil(PAGE).checked_add(align_pages.max(1) - 1)?;
    u32::try_from(pages).ok()
}

/// The allocator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) free_bytes: u64,
    pub(crate) live_blocks: u64,
    pub(crate) large_blocks: u64,
    pub(crate) bytes_in_use: u64,
    pub(crate) lent_pages: u64,
    /// Pages of the lent chunks whose process gave them up while blocks handed off from them
    /// were out.
    pub(crate) orphaned_pages: u64,
    pub(crate) data_pages: u32,
}

/// What the pages hold of one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClassCount {
    /// Slabs of the class, quarantined ones included.
    pub(crate) slabs: u64,
    /// Blocks in use in them.
    pub(crate) live_blocks: u64,
}

/// The arena over an ordinary zeroed buffer instead of a mapping: everything it does is
/// arithmetic on offsets and reads and writes inside its memory, so Miri can check it
/// (`cargo xtask miri` runs these tests).
#[cfg(test)]
mod in_a_buffer {
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::collections::BTreeMap;

    use super::*;
    use crate::layout::LOCK_BUILTIN;

    const CAPACITY: usize = 256 << 10;

    /// A formatted pool in a heap buffer as long as its largest capacity, freed on drop.
    struct Buffer {
        base: *mut u8,
        arena: Arena,
    }

    impl Buffer {
        fn new() -> Self {
            Self::with(Geometry::for_capacity(CAPACITY).unwrap())
        }

        fn with(geometry: Geometry) -> Self {
            let layout = Layout::from_size_align(geometry.capacity, PAGE).unwrap();
            // SAFETY: the layout has a non-zero size.
            let base = unsafe { alloc_zeroed(layout) };
            assert!(!base.is_null());
            // SAFETY: `base` is the whole layout's zeroed bytes, aligned to a page, used by
            // nothing else; then formatted, and used by this thread alone (which stands for
            // holding the lock).
            let arena = unsafe {
                Arena::format(base, geometry, LOCK_BUILTIN);
                Arena::new(base, geometry)
            };
            Self { base, arena }
        }

        /// Runs `operation` stopped at its `step`-th stop point, if it has that many, then what
        /// the next holder of the lock does ([`next_holder`](Buffer::next_holder)): whether it
        /// was stopped.
        fn stopped_at(&self, step: u64, operation: impl FnOnce() + std::panic::UnwindSafe) -> bool {
            crate::stop_point::unwinding::arm(step);
            let stopped = std::panic::catch_unwind(operation).is_err();
            crate::stop_point::unwinding::arm(0);
            self.next_holder();
            stopped
        }

        /// What the next holder of the lock does: undoes what a stopped operation left, and
        /// takes the end of the pages from the header. Returns whether there was an undo.
        fn next_holder(&self) -> bool {
            let (arena, pages) = (&self.arena, self.arena.geometry.page_count);
            // SAFETY: this thread alone uses the buffer, which holds every page of the layout.
            let undone = unsafe {
                crate::tx::recover(
                    self.base,
                    |offset, width| arena.holds_logged_word(offset, width, pages),
                    || arena.recount_after_undo(pages),
                )
            };
            arena.sync_end(pages);
            arena.finish_release();
            undone
        }
    }

    impl Drop for Buffer {
        fn drop(&mut self) {
            let layout = Layout::from_size_align(self.arena.geometry.capacity, PAGE).unwrap();
            // SAFETY: allocated in `with` with this layout.
            unsafe { dealloc(self.base, layout) };
        }
    }

    /// A small xorshift generator: the same operations in every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    /// Descriptors that a buggy process left saying every page is a slab of 4 Gi blocks of the
    /// largest class: the census adds them up without overflowing, saturated. Not under Miri,
    /// for which 3 GiB of pages and 786,000 descriptors are too many: the sums it checks are
    /// safe code.
    #[test]
    #[cfg(not(miri))]
    fn in_a_buffer_a_census_of_absurd_descriptors_saturates() {
        let pool = Buffer::with(Geometry::for_capacity(3 << 30).unwrap());
        let arena = &pool.arena;
        for page in arena.first_data..arena.end() {
            let desc = arena.desc(page);
            let slab = kind::SLAB | ((CLASS_COUNT as u32 - 1) << 8);
            // SAFETY: the descriptor lies in the buffer, which this thread alone uses.
            unsafe {
                addr_of_mut!((*desc).kind).write(slab);
                addr_of_mut!((*desc).len).write(1);
                addr_of_mut!((*desc).live).write(u32::MAX);
            }
        }
        let (counted, classes) = arena.census();
        assert_eq!(counted.bytes_in_use, u64::MAX);
        // Below the bound, the counts stay exact.
        let blocks = u64::from(u32::MAX) * u64::from(arena.end() - arena.first_data);
        assert_eq!(counted.live_blocks, blocks);
        assert_eq!(classes[CLASS_COUNT - 1].live_blocks, blocks);
    }

    #[test]
    fn in_a_buffer_random_operations_keep_every_invariant() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let start = arena.free_bytes();
        let mut rng = Rng(0x5eed_0001);
        // Live blocks by offset, with the byte each was filled with and its length.
        let mut live: BTreeMap<u64, (u8, usize)> = BTreeMap::new();
        // Miri takes seconds per step here: each checks the block's bytes, and `check` walks
        // every page.
        let steps = if cfg!(miri) { 120 } else { 3_000 };
        for step in 0..steps {
            if live.is_empty() || rng.below(3) > 0 && live.len() < 40 {
                let size = match rng.below(10) {
                    0..=6 => 1 + rng.below(512),
                    7 | 8 => 512 + rng.below(MAX_SMALL),
                    _ => MAX_SMALL + rng.below(5 * PAGE),
                };
                let align = [16, 16, 64, 4096][rng.below(4)];
                let Some(offset) = arena.alloc(size, align) else { continue };
                assert_eq!(offset % align as u64, 0);
                let fill = step as u8;
                // SAFETY: the block is `size` bytes inside the buffer and in use by no one else.
                unsafe { pool.base.add(offset as usize).write_bytes(fill, size) };
                assert!(live.insert(offset, (fill, size)).is_none(), "handed out twice");
            } else {
                let index = rng.below(live.len());
                let (&offset, &(fill, size)) = live.iter().nth(index).unwrap();
                // SAFETY: the block is `size` bytes inside the buffer, written above.
                let bytes =
                    unsafe { core::slice::from_raw_parts(pool.base.add(offset as usize), size) };
                assert!(bytes.iter().all(|&byte| byte == fill), "block at {offset} overwritten");
                if size > 1 {
                    assert!(arena.free(offset + 1).is_err(), "an interior pointer is refused");
                }
                assert_eq!(arena.free(offset), Ok(()));
                assert!(arena.free(offset).is_err(), "a double free is refused");
                live.remove(&offset);
            }
            if step % 40 == 0 {
                arena.check().unwrap();
            }
        }
        for (offset, _) in core::mem::take(&mut live) {
            assert_eq!(arena.free(offset), Ok(()));
        }
        arena.check().unwrap();
        assert_eq!(arena.free_bytes(), start);
        assert!(arena.free(CAPACITY as u64 + 16).is_err(), "an offset past the end is refused");
    }

    /// Taking back a chunk of one page, stopped at each step, leaves the counters right once
    /// the next holder has recovered: the unlogged count never comes before a logged write.
    #[test]
    fn in_a_buffer_taking_back_one_page_stopped_at_each_step() {
        for step in 1.. {
            assert!(step < 100, "taking back never completed");
            let pool = Buffer::new();
            let arena = &pool.arena;
            let start = arena.free_bytes();
            arena.claim_owner(0);
            let chunk = arena.lend(PAGE, CHUNK_PAGES as usize * PAGE, 0).unwrap();
            let stopped = pool.stopped_at(step, || {
                arena.take_back(chunk, PAGE, 0);
            });
            arena.check().unwrap_or_else(|error| panic!("stopped at {step}: {error}"));
            if !stopped {
                assert_eq!(arena.free_bytes(), start);
                break;
            }
        }
    }

    /// Lends `count` chunks to owner slot `slot`, claiming it first.
    fn lend_chunks(arena: &Arena, slot: u32, count: usize) -> Vec<u64> {
        arena.claim_owner(slot);
        let chunk = CHUNK_PAGES as usize * PAGE;
        (0..count).map(|_| arena.lend(chunk, chunk, slot).unwrap()).collect()
    }

    #[test]
    fn in_a_buffer_giving_up_an_owner_takes_back_its_chunks_and_no_others() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let start = arena.free_bytes();
        let kept = lend_chunks(arena, 3, 2);
        let dropped = lend_chunks(arena, 7, 5);
        // One chunk is taken back by its owner first, from the middle of the list.
        let chunk = CHUNK_PAGES as usize * PAGE;
        assert_eq!(arena.take_back(dropped[2], chunk, 3), GiveBack::Refused, "not slot 3's");
        assert_eq!(arena.take_back(dropped[2], chunk, 7), GiveBack::TakenBack);
        arena.check().unwrap();
        let reclaimed = arena.release_owner(7);
        assert_eq!(
            reclaimed,
            Reclaimed { chunks: 4, pages: 4 * u64::from(CHUNK_PAGES), orphaned_pages: 0 }
        );
        assert!(!arena.owner_claimed(7));
        arena.check().unwrap();
        let chunk_bytes = u64::from(CHUNK_PAGES) * PAGE as u64;
        assert_eq!(arena.free_bytes(), start - 2 * chunk_bytes);
        for chunk in kept {
            assert_eq!(arena.take_back(chunk, CHUNK_PAGES as usize * PAGE, 3), GiveBack::TakenBack);
        }
        assert_eq!(arena.release_owner(3), Reclaimed::default());
        arena.check().unwrap();
        assert_eq!(arena.free_bytes(), start);
    }

    /// Giving up an owner, stopped at each step, leaves a pool that checks clean once recovered,
    /// and a second call takes back whatever the first did not. When one of its chunks has a
    /// block handed off, that chunk waits as an orphan while the others go back, and once the
    /// block is freed every byte is back.
    #[test]
    fn in_a_buffer_giving_up_an_owner_stopped_at_each_step_is_finished_by_the_next() {
        for block_out in [false, true] {
            for step in 1.. {
                assert!(step < 400, "giving up never completed");
                let pool = Buffer::new();
                let arena = &pool.arena;
                let start = arena.free_bytes();
                let chunks = lend_chunks(arena, 5, 3);
                if block_out {
                    assert!(hand_off_in(arena, target(arena, chunks[1], 2), 5));
                }
                let stopped = pool.stopped_at(step, || {
                    arena.release_owner(5);
                });
                arena.check().unwrap_or_else(|error| panic!("stopped at {step}: {error}"));
                arena.release_owner(5);
                arena.check().unwrap();
                assert!(!arena.owner_claimed(5));
                if block_out {
                    let orphan = u64::from(CHUNK_PAGES) * PAGE as u64;
                    let held = start - arena.free_bytes();
                    assert_eq!(held, orphan, "stopped at {step}: the orphan alone");
                    // SAFETY: the block was handed off and is freed once.
                    let last = unsafe { arena.push_remote(target(arena, chunks[1], 2)) };
                    assert!(
                        last.accepted && last.given_up.is_some(),
                        "stopped at {step}: {last:?}"
                    );
                    let chunk_page = (chunks[1] / PAGE as u64) as u32;
                    let back = arena.release_orphan(chunk_page);
                    assert_eq!(back, GiveBack::TakenBack, "stopped at {step}");
                    arena.check().unwrap();
                }
                assert_eq!(arena.free_bytes(), start, "stopped at {step}");
                if !stopped {
                    assert!(!block_out || step > 2, "giving up was stopped at {} steps", step - 1);
                    break;
                }
            }
        }
    }

    /// A block `index` 64-byte slots into `chunk`, past its header, as a remote free names it.
    fn target(arena: &Arena, chunk: u64, index: u32) -> RemoteTarget<'_> {
        let offset = chunk + u64::from(CHUNK_HEADER + 64 * index);
        arena.remote_target(offset).expect("a block boundary of a lent chunk")
    }

    /// Hands off the block at `target`: in these tests every lent chunk stays lent while its
    /// blocks are handed off, which is what `Arena::hand_off` asks.
    fn hand_off_in(arena: &Arena, target: RemoteTarget<'_>, owner: u32) -> bool {
        // SAFETY: the chunk is lent and stays lent for the call (see above).
        unsafe { arena.hand_off(target, owner) }
    }

    /// The offsets on a chunk's remote-free list, first pushed last, taking the list.
    fn take_list(pool: &Buffer, chunk: u64) -> Vec<u32> {
        let mut within = crate::handoff::take(pool.arena.remote_list((chunk / PAGE as u64) as u32));
        let mut listed = Vec::new();
        while within != 0 {
            listed.push(within);
            // SAFETY: each listed block lies in the buffer and holds its link in its first word.
            within =
                unsafe { pool.base.add(chunk as usize + within as usize).cast::<u32>().read() };
        }
        listed
    }

    /// Only a block boundary past the header of a lent chunk is a remote free's target.
    #[test]
    fn in_a_buffer_remote_targets_are_block_boundaries_of_lent_chunks() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let chunk = lend_chunks(arena, 0, 1)[0];
        let first = arena.remote_target(chunk + 64).map(|found| (found.chunk(), found.within()));
        assert_eq!(first, Some(((chunk / PAGE as u64) as u32, 64)));
        let last_page = chunk + 3 * PAGE as u64 + 16;
        let within = (last_page - chunk) as u32;
        assert_eq!(arena.remote_target(last_page).map(|found| found.within()), Some(within));
        for refused in [chunk, chunk + 48, chunk + 72, chunk + CHUNK_SIZE_BYTES, 0, 1 << 40] {
            assert_eq!(arena.remote_target(refused), None, "offset {refused}");
        }
        let own = arena.alloc(64, 16).unwrap();
        assert_eq!(arena.remote_target(own), None, "a block of the pool itself");
    }

    const CHUNK_SIZE_BYTES: u64 = CHUNK_PAGES as u64 * PAGE as u64;

    /// A lend writes its first page's kind before its length: for a moment the first page says
    /// lent with the length of the longer run it was part of, over a page that still holds a
    /// block of the pool's own. That block is no remote target: its own page does not say it
    /// belongs to the chunk.
    #[test]
    fn in_a_buffer_a_half_written_lend_makes_no_remote_target_of_a_page_past_it() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let chunk = lend_chunks(arena, 0, 1)[0];
        let page = (chunk / PAGE as u64) as u32;
        let last = page + CHUNK_PAGES - 1;
        let block = chunk + u64::from(CHUNK_PAGES - 1) * PAGE as u64 + 64;
        assert!(arena.remote_target(block).is_some(), "a page of the chunk");
        // The last page as it would be were the lend in progress a page shorter: the pool's own.
        // SAFETY: this thread alone uses the buffer (which stands for holding the lock), and
        // the descriptor lies in it.
        unsafe { addr_of_mut!((*arena.desc(last)).kind).write(kind::SLAB) };
        assert_eq!(arena.remote_target(block), None);
        // So is a page of the chunk that names another chunk as its head.
        // SAFETY: as above.
        unsafe {
            addr_of_mut!((*arena.desc(last)).kind).write(kind::LENT_PAGE);
            addr_of_mut!((*arena.desc(last)).head).write(page + CHUNK_PAGES);
        }
        assert_eq!(arena.remote_target(block), None);
    }

    #[test]
    fn in_a_buffer_handed_off_blocks_freed_elsewhere_wait_for_their_owner() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let chunk = lend_chunks(arena, 1, 1)[0];
        assert!(!hand_off_in(arena, target(arena, chunk, 0), 2), "not slot 2's chunk");
        for index in 0..3 {
            assert!(hand_off_in(arena, target(arena, chunk, index), 1));
        }
        let queued = RemoteFree { accepted: true, given_up: None };
        for index in [2, 0] {
            let block = target(arena, chunk, index);
            // SAFETY: each block was handed off above and is freed once.
            assert_eq!(unsafe { arena.push_remote(block) }, queued);
        }
        // Only the push onto an empty list tells the owner.
        assert_eq!(arena.pending(1).load(core::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            take_list(&pool, chunk),
            [target(arena, chunk, 0).within(), target(arena, chunk, 2).within()]
        );
        assert!(take_list(&pool, chunk).is_empty(), "the owner took the whole list");
        // SAFETY: the last block handed off, freed once.
        assert_eq!(unsafe { arena.push_remote(target(arena, chunk, 1)) }, queued);
        let refused = RemoteFree { accepted: false, given_up: None };
        // SAFETY: a second free of the same block: its mark is gone, so it is refused and
        // nothing changes.
        assert_eq!(unsafe { arena.push_remote(target(arena, chunk, 1)) }, refused);
        assert!(hand_off_in(arena, target(arena, chunk, 4), 1));
        // SAFETY: never handed off, while another block of the chunk is out: refused all the
        // same, by its own mark.
        assert_eq!(unsafe { arena.push_remote(target(arena, chunk, 5)) }, refused);
        // SAFETY: handed off above, freed once.
        assert_eq!(unsafe { arena.push_remote(target(arena, chunk, 4)) }, queued);
        assert_eq!(
            take_list(&pool, chunk),
            [target(arena, chunk, 4).within(), target(arena, chunk, 1).within()]
        );
        arena.check().unwrap();
    }

    /// A chunk given up while blocks handed off from it are out waits on the orphans' list, and
    /// goes back once the last of them is freed; one with none out goes back at once.
    #[test]
    fn in_a_buffer_a_chunk_given_up_with_blocks_out_waits_as_an_orphan() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let start = arena.free_bytes();
        let chunks = lend_chunks(arena, 4, 2);
        for index in 0..2 {
            assert!(hand_off_in(arena, target(arena, chunks[0], index), 4));
        }
        // The process dies: its slot is given up.
        let reclaimed = arena.release_owner(4);
        assert_eq!(reclaimed.chunks, 1, "the chunk with nothing out came back");
        arena.check().unwrap();
        assert!(
            !hand_off_in(arena, target(arena, chunks[0], 5), 4),
            "an orphan takes no more hand-offs"
        );
        let chunk_page = (chunks[0] / PAGE as u64) as u32;
        // SAFETY: the blocks were handed off, and each is freed once.
        let first = unsafe { arena.push_remote(target(arena, chunks[0], 1)) };
        assert_eq!(first, RemoteFree { accepted: true, given_up: Some(chunk_page) });
        assert_eq!(arena.release_orphan(chunk_page), GiveBack::Orphaned, "a block is still out");
        // SAFETY: as above.
        let last = unsafe { arena.push_remote(target(arena, chunks[0], 0)) };
        assert_eq!(last, RemoteFree { accepted: true, given_up: Some(chunk_page) });
        assert_eq!(arena.release_orphan(chunk_page), GiveBack::TakenBack);
        assert_eq!(arena.release_orphan(chunk_page), GiveBack::Refused, "given back once");
        arena.check().unwrap();
        assert_eq!(arena.free_bytes(), start);
    }

    /// An orphan whose last free could not give it back (its process died, or the lock failed)
    /// goes back with the next reclaim of idle orphans.
    #[test]
    fn in_a_buffer_an_idle_orphan_goes_back_with_the_next_sweep() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let start = arena.free_bytes();
        let chunk = lend_chunks(arena, 9, 1)[0];
        assert!(hand_off_in(arena, target(arena, chunk, 3), 9));
        let orphaned = Reclaimed { orphaned_pages: u64::from(CHUNK_PAGES), ..Reclaimed::default() };
        assert_eq!(arena.release_owner(9), orphaned);
        assert_eq!(arena.release_idle_orphans(), Reclaimed::default(), "a block is still out");
        // SAFETY: the block was handed off and is freed once; its last-free duty is dropped.
        let last = unsafe { arena.push_remote(target(arena, chunk, 3)) };
        assert!(last.accepted && last.given_up.is_some());
        let swept = arena.release_idle_orphans();
        assert_eq!(
            swept,
            Reclaimed { chunks: 1, pages: u64::from(CHUNK_PAGES), orphaned_pages: 0 }
        );
        arena.check().unwrap();
        assert_eq!(arena.free_bytes(), start);
    }

    /// Every orphan goes back on demand, blocks out and a free counted in flight whose process
    /// died or not: the counts show it, and the pages are the pool's own again.
    #[test]
    fn in_a_buffer_every_orphan_goes_back_on_demand_whatever_is_out() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let start = arena.free_bytes();
        let chunks = lend_chunks(arena, 6, 3);
        for index in 0..2 {
            assert!(hand_off_in(arena, target(arena, chunks[0], index), 6));
        }
        assert!(hand_off_in(arena, target(arena, chunks[1], 0), 6));
        // A free of the second chunk's block, cut short by a kill after it counted itself in
        // flight and claimed the mark.
        arena.free_cut_short(target(arena, chunks[1], 0));
        let orphaned = 2 * u64::from(CHUNK_PAGES);
        assert_eq!(arena.release_owner(6).orphaned_pages, orphaned, "the third came back");
        assert_eq!(arena.census().0.orphaned_pages, orphaned);
        assert_eq!(arena.release_idle_orphans(), Reclaimed::default(), "neither is idle");
        let every = arena.release_every_orphan();
        assert_eq!(every, Reclaimed { chunks: 2, pages: orphaned, orphaned_pages: 0 });
        assert_eq!(arena.census().0.orphaned_pages, 0);
        arena.check().unwrap();
        assert_eq!(arena.free_bytes(), start);
        // No mark is left in their bitmap, which is the pool's in-use bits again.
        for chunk in &chunks[..2] {
            let grains = (0..CHUNK_PAGES as u64 * PAGE as u64).step_by(GRAIN);
            assert!(grains.map(|within| chunk + within).all(|offset| !arena.is_in_use(offset)));
        }
    }

    /// Makes the directory's block of entries, as the first insertion does.
    fn make_names(arena: &Arena) {
        let mut record = |arena: &Arena, tx: &mut Tx, offset| arena.set_names_block(tx, offset);
        let made = arena.alloc_then(crate::layout::NAMES_BYTES, PAGE, false, &mut record);
        assert!(made.is_some());
        assert_eq!(arena.has_names(), Ok(true));
    }

    /// Allocates a 64-byte block named `name` in one operation, as `insert_named` does.
    fn insert_name(arena: &Arena, name: &[u8], shape: Shape) -> Option<u64> {
        let Lookup::Absent(Some(slot)) = arena.lookup(name) else { return None };
        let mut publish = |arena: &Arena, tx: &mut Tx, offset| {
            assert!(arena.publish_name(tx, slot, name, offset, shape));
        };
        arena.alloc_then(64, 16, false, &mut publish)
    }

    /// Frees the block named `name` and forgets the name in one operation.
    fn remove_name(arena: &Arena, name: &[u8]) -> bool {
        let Lookup::Found(found) = arena.lookup(name) else { return false };
        arena.free_named(found.offset, found.slot).is_ok()
    }

    /// A value of 8 bytes whose type's name is empty: the tag is FNV-1a's hash of no bytes.
    const SHAPE: Shape = Shape { size: 8, align: 8, tag: 0xcbf2_9ce4_8422_2325, name_len: 0 };

    #[test]
    fn in_a_buffer_names_come_and_go_with_their_blocks() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        assert_eq!(arena.lookup(b"first"), Lookup::Absent(None), "no directory yet");
        make_names(arena);
        let start = arena.free_bytes();
        // More names than slots in a row share a start: each walks past the others.
        let names: Vec<Vec<u8>> = (0..300).map(|i| format!("name-{i}").into_bytes()).collect();
        let mut placed = Vec::new();
        for name in &names {
            match insert_name(arena, name, SHAPE) {
                Some(offset) => placed.push((name, offset)),
                None => assert_eq!(arena.lookup(name), Lookup::Absent(None), "full, not refused"),
            }
        }
        assert_eq!(placed.len(), crate::layout::NAME_SLOTS);
        assert_eq!(arena.name_count() as usize, placed.len());
        arena.check().unwrap();
        // Every other name goes; those after them in their walks are still found.
        for (name, _) in placed.iter().step_by(2) {
            assert!(remove_name(arena, name));
            assert!(matches!(arena.lookup(name), Lookup::Absent(Some(_))));
        }
        for (name, offset) in placed.iter().skip(1).step_by(2) {
            let Lookup::Found(found) = arena.lookup(name) else { panic!("lost {name:?}") };
            assert_eq!((found.offset, found.shape), (*offset, SHAPE));
        }
        arena.check().unwrap();
        for (name, _) in placed.iter().skip(1).step_by(2) {
            assert!(remove_name(arena, name));
        }
        assert_eq!(arena.name_count(), 0);
        assert_eq!(arena.free_bytes(), start, "every named block freed");
        arena.check().unwrap();
    }

    #[test]
    fn in_a_buffer_check_refuses_an_entry_whose_type_name_is_not_in_its_block() {
        // Past the end of its 64-byte block, and a hash that is not the stored name's.
        let past_the_end = Shape { name_len: 57, ..SHAPE };
        let wrong_hash = Shape { tag: 77, ..SHAPE };
        for (shape, sound) in [(SHAPE, true), (past_the_end, false), (wrong_hash, false)] {
            let pool = Buffer::new();
            let arena = &pool.arena;
            make_names(arena);
            let offset = insert_name(arena, b"value", shape).unwrap();
            let bad = Err(crate::ShmCheckError::BadDirectory);
            assert_eq!(arena.check_names(), if sound { Ok(()) } else { bad }, "{shape:?}");
            // A name that is not the one asked for is another type's only in a block that
            // holds it.
            let looked_up = if shape == past_the_end { Err(()) } else { Ok(true) };
            assert_eq!(arena.has_type_name(offset, shape, b""), looked_up, "{shape:?}");
        }
    }

    #[test]
    fn in_a_buffer_a_lookup_compares_the_type_name_after_the_value_inside_the_data_pages() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        make_names(arena);
        let shape = Shape { tag: name_hash(b"abc"), name_len: 3, ..SHAPE };
        let offset = insert_name(arena, b"value", shape).unwrap();
        let write = |at: u64, bytes: &[u8]| {
            // SAFETY: the bytes lie in the buffer's data pages, which nothing else uses here.
            unsafe { arena.at(at).copy_from_nonoverlapping(bytes.as_ptr(), bytes.len()) }
        };
        write(offset + 8, b"abc");
        assert_eq!(arena.has_type_name(offset, shape, b"abc"), Ok(true));
        assert_eq!(arena.has_type_name(offset, shape, b"abd"), Ok(false));
        assert_eq!(arena.has_type_name(offset, shape, b"ab"), Ok(false));

        // A name that ends on the last byte of the grown pages is read; one that would end a
        // byte further, start in the metadata, or lie beyond every page, is not.
        let end = u64::from(arena.end()) * PAGE as u64;
        let one_byte = Shape { size: 0, align: 1, tag: 0, name_len: 1 };
        write(end - 1, b"x");
        assert_eq!(arena.has_type_name(end - 1, one_byte, b"x"), Ok(true));
        assert_eq!(arena.has_type_name(end, one_byte, b"x"), Err(()));
        assert_eq!(arena.has_type_name(0, one_byte, b"x"), Err(()));
        assert_eq!(arena.has_type_name(1 << 44, one_byte, b"x"), Err(()));
        assert_eq!(arena.has_type_name(u64::MAX, one_byte, b"x"), Err(()));
        arena.check().unwrap();
    }

    /// An insertion or a removal stopped at each of its steps leaves, once the next holder has
    /// recovered, the name and its block both there or both gone.
    #[test]
    fn in_a_buffer_a_name_and_its_block_stand_or_fall_together() {
        for removing in [false, true] {
            for step in 1.. {
                assert!(step < 200, "the operation never completed");
                let pool = Buffer::new();
                let arena = &pool.arena;
                make_names(arena);
                let before = arena.free_bytes();
                if removing {
                    insert_name(arena, b"session", SHAPE).unwrap();
                }
                let start = arena.free_bytes();
                let stopped = pool.stopped_at(step, || {
                    if removing {
                        assert!(remove_name(arena, b"session"));
                    } else {
                        insert_name(arena, b"session", SHAPE).unwrap();
                    }
                });
                arena.check().unwrap_or_else(|error| panic!("stopped at {step}: {error}"));
                match arena.lookup(b"session") {
                    Lookup::Found(found) => {
                        assert!(arena.locate(found.offset).is_ok(), "step {step}: a name alone");
                        assert_eq!(arena.free_bytes(), before - 64, "step {step}");
                    }
                    _ => assert_eq!(arena.free_bytes(), before, "step {step}: a block alone"),
                }
                if !stopped {
                    assert_ne!(arena.free_bytes(), start, "the operation completed");
                    break;
                }
            }
        }
    }

    #[test]
    fn in_a_buffer_lending_nothing_is_refused() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let start = arena.free_bytes();
        assert_eq!(arena.lend(0, CHUNK_PAGES as usize * PAGE, NONE), None);
        let first = u64::from(arena.first_data) * PAGE as u64;
        assert_eq!(arena.take_back(first, 0, NONE), GiveBack::Refused);
        arena.check().unwrap();
        assert_eq!(arena.free_bytes(), start);
    }

    #[test]
    fn in_a_buffer_a_half_done_operation_is_undone() {
        let pool = Buffer::new();
        let arena = &pool.arena;
        let kept = arena.alloc(100, 16).unwrap();
        let before = arena.free_bytes();
        // An allocation that dies before its commit: its writes are logged, then undone.
        // SAFETY: this thread alone uses the buffer, and the log is empty.
        let mut tx = unsafe { Tx::begin(pool.base) };
        let class = class_of(3000).unwrap();
        let offset = arena.alloc_small(&mut tx, class).unwrap();
        // The process dies here: `tx` is never committed.
        assert!(arena.is_in_use(offset));
        // The "dead" operation left the log as it was.
        assert!(pool.next_holder());
        assert!(!arena.is_in_use(offset));
        assert_eq!(arena.free_bytes(), before);
        arena.check().unwrap();
        assert_eq!(arena.free(kept), Ok(()));
        arena.check().unwrap();
    }

    /// A pool that starts at 128 KiB and grows up to 1 MiB.
    fn growing() -> Buffer {
        Buffer::with(Geometry::growing(128 << 10, 1 << 20).unwrap())
    }

    /// Fills the data pages grown so far with one large block, whose offset is returned.
    fn fill(arena: &Arena) -> u64 {
        let block = arena.alloc(arena.free_bytes() as usize, PAGE).unwrap();
        assert_eq!(arena.free_bytes(), 0);
        block
    }

    #[test]
    fn in_a_buffer_growing_adds_segments_merged_with_the_free_run_at_the_end() {
        let pool = growing();
        let arena = &pool.arena;
        let geometry = arena.geometry;
        let segment = u64::from(geometry.segment_pages) * PAGE as u64;
        assert_eq!(arena.free_bytes(), segment);
        assert_eq!(arena.published_end(), geometry.initial_end());
        // A block that leaves a free run of a few pages at the end, which the next segment
        // must merge with.
        let first = arena.alloc(segment as usize - 3 * PAGE, PAGE).unwrap();
        // SAFETY: the block is in use and lies in the buffer.
        unsafe { pool.base.add(first as usize).write_bytes(0xa5, PAGE) };
        let big = 2 * segment as usize;
        assert_eq!(arena.alloc(big, 16), None, "no room before growing");
        let pages = arena.pages_for_alloc(big, 16).unwrap();
        let end = arena.end_for(pages).unwrap();
        assert_eq!((end - geometry.initial_end()) % geometry.segment_pages, 0, "whole segments");
        assert!(arena.grow(end));
        assert_eq!(arena.published_end(), end);
        assert_eq!(geometry.segments(end), 1 + pages.div_ceil(geometry.segment_pages));
        arena.check().unwrap();
        let second = arena.alloc(big, 16).unwrap();
        assert!(second < u64::from(geometry.initial_end()) * PAGE as u64, "runs merged");
        arena.check().unwrap();
        // Grow to the end, one segment at a time, filling each.
        let mut blocks = vec![first, second];
        while let Some(end) = arena.end_for(1) {
            assert!(arena.grow(end));
            blocks.push(fill(arena));
            arena.check().unwrap();
        }
        assert_eq!(arena.published_end(), geometry.page_count);
        assert!(!arena.grow(geometry.page_count + 1), "past the layout");
        // SAFETY: the first block's first page, written above.
        assert_eq!(unsafe { pool.base.add(first as usize).read() }, 0xa5);
        for block in blocks {
            assert_eq!(arena.free(block), Ok(()));
        }
        arena.check().unwrap();
        let data = geometry.page_count - geometry.first_data_page;
        assert_eq!(arena.free_bytes(), u64::from(data) * PAGE as u64);
        assert_eq!(arena.alloc(data as usize * PAGE, 16).map(|_| ()), Some(()), "one run");
    }

    /// A growth stopped at each step leaves, once the next holder has recovered, the pool as it
    /// was before, which grows as if nothing had happened.
    #[test]
    fn in_a_buffer_a_growth_stopped_at_each_step_is_undone() {
        let mut undone = 0;
        for step in 1.. {
            assert!(step < 100, "growing never completed");
            let pool = growing();
            let arena = &pool.arena;
            let kept = arena.alloc(1000, 16).unwrap();
            let (start, old_end) = (arena.free_bytes(), arena.published_end());
            let new_end = arena.end_for(1).unwrap();
            let stopped = pool.stopped_at(step, || {
                arena.grow(new_end);
            });
            arena.check().unwrap_or_else(|error| panic!("stopped at {step}: {error}"));
            let segment = u64::from(arena.geometry.segment_pages) * PAGE as u64;
            // Stopped after its commit, the growth stands; before, it is undone, and the pool
            // grows again as if nothing had happened.
            if arena.published_end() == new_end {
                assert_eq!(arena.free_bytes(), start + segment, "stopped at {step}");
            } else {
                assert_eq!((arena.published_end(), arena.free_bytes()), (old_end, start));
                assert!(stopped, "a growth that was not stopped stands");
                assert!(arena.grow(new_end), "stopped at {step}: grows again");
                undone += 1;
            }
            arena.check().unwrap();
            assert_eq!(arena.free(kept), Ok(()));
            assert_eq!(arena.free_bytes(), 2 * segment, "stopped at {step}");
            if !stopped {
                break;
            }
        }
        assert!(undone >= 3, "{undone} growths undone");
    }

    /// Whatever the lists hold, nothing writes the descriptors and bitmap words of the pages not
    /// grown yet: they are holes of the file, which a touch would fill.
    #[test]
    fn in_a_buffer_nothing_writes_the_metadata_of_pages_not_grown() {
        const MARK: u8 = 0x5a;
        let pool = growing();
        let arena = &pool.arena;
        let geometry = arena.geometry;
        let (end, count) = (geometry.initial_end() as usize, geometry.page_count as usize);
        let bitmap = bitmap_offset(geometry.page_count);
        let holes = [
            DESC_OFFSET + end * 32..DESC_OFFSET + count * 32,
            bitmap + end * 32..bitmap + count * 32,
        ];
        let hole = |range: &core::ops::Range<usize>| {
            // SAFETY: the range lies in the buffer's metadata, and this thread alone uses it.
            unsafe { core::slice::from_raw_parts_mut(pool.base.add(range.start), range.len()) }
        };
        holes.iter().for_each(|range| hole(range).fill(MARK));
        let untouched = || holes.iter().all(|range| hole(range).iter().all(|&byte| byte == MARK));
        let blocks: Vec<_> = [64, 3000, 20_000].iter().map(|&size| arena.alloc(size, 16)).collect();
        for head in [end as u32, end as u32 + 7, geometry.page_count - 1, NONE - 1] {
            let state = arena.state();
            // SAFETY: the state lies in the buffer's header; this thread alone uses it.
            unsafe {
                (*state).partial = [head; CLASS_COUNT];
                (*state).bins = [head; BIN_COUNT];
                (*state).bin_mask = u32::MAX;
            }
            for size in [16, 64, 3000, 9000, 40_000] {
                if let Some(block) = arena.alloc(size, 16) {
                    let _ = arena.free(block);
                }
            }
            let _ = arena.free(u64::from(head) * PAGE as u64);
            let _ = arena.lend(CHUNK_PAGES as usize * PAGE, CHUNK_PAGES as usize * PAGE, NONE);
            let _ = arena.check();
            assert!(untouched(), "head {head}");
        }
        for block in blocks.into_iter().flatten() {
            let _ = arena.free(block);
        }
        assert!(untouched());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_index_matches_division_for_every_slab_offset() {
        for class in 0..CLASS_COUNT {
            let size = CLASS_SIZES[class] as u64;
            let slab = u64::from(SLAB_PAGES[class]) * PAGE as u64;
            for relative in 0..slab {
                let expected = (relative % size == 0
                    && relative / size < u64::from(SLAB_BLOCKS[class]))
                .then_some((relative / size) as u32);
                assert_eq!(
                    block_index(relative, class),
                    expected,
                    "class {size}, offset {relative}"
                );
            }
        }
    }

    /// A slab's last block taken and freed in turn, as an allocation paired with its free at a
    /// slab's end does, leaves the slab at the head of its class's list, with no relinking
    /// either way; the allocation after it fills takes it off the list and opens a new slab.
    #[test]
    fn a_slab_that_fills_stays_at_the_head_until_an_allocation_finds_it_full() {
        let pool = crate::ShmPool::new(1 << 20).unwrap();
        let class = pool.lock().unwrap().arena().small_class(64, GRAIN).unwrap();
        // The head of the class's list, and whether that slab is full, read under the lock.
        let head = || {
            let guard = pool.lock().unwrap();
            let head = state!(guard.arena(), partial[class]);
            (head, head != NONE && guard.arena().is_full(head, class))
        };
        let blocks: Vec<_> = (0..SLAB_BLOCKS[class]).map(|_| pool.alloc(64).unwrap()).collect();
        let (filled, full) = head();
        assert!(filled != NONE && full, "the filled slab is still listed, at the head");
        pool.check().unwrap();
        let last = *blocks.last().unwrap();
        for _ in 0..3 {
            // SAFETY: the block came from `pool` and is not used until it is handed out again.
            unsafe { pool.try_free(last) }.unwrap();
            assert_eq!(head(), (filled, false));
            assert_eq!(pool.alloc(64), Some(last), "the slab's one free block");
            assert_eq!(head(), (filled, true));
            pool.check().unwrap();
        }
        let next = pool.alloc(64).unwrap();
        let (opened, _) = head();
        assert_ne!(opened, filled);
        {
            let guard = pool.lock().unwrap();
            let arena = guard.arena();
            let links = (get!(arena, filled, prev), get!(arena, filled, next));
            assert_eq!(links, (NONE, NONE), "the full slab is off the list");
            assert_eq!(get!(arena, opened, next), NONE);
        }
        pool.check().unwrap();
        for block in blocks.into_iter().chain([next]) {
            // SAFETY: each block came from `pool` and is freed once.
            unsafe { pool.try_free(block) }.unwrap();
        }
        pool.check().unwrap();
    }

    /// One empty slab cached per class, all given back by the allocation that needs their room,
    /// is more than the undo log holds in one step.
    #[test]
    fn an_allocation_can_give_back_every_cached_slab() {
        let pool = crate::ShmPool::new(256 << 10).unwrap();
        let start = pool.available();
        for size in (GRAIN..=MAX_SMALL).step_by(GRAIN) {
            if let Some(block) = pool.alloc(size) {
                // SAFETY: the block was just allocated and is not used again.
                unsafe { pool.try_free(block) }.unwrap();
            }
        }
        assert_eq!(pool.available(), start);
        let block = pool.alloc(start - 2 * PAGE).expect("room once the empty slabs are back");
        pool.check().unwrap();
        // SAFETY: the block was just allocated and is not used again.
        unsafe { pool.try_free(block) }.unwrap();
        assert_eq!(pool.available(), start);
    }
}
