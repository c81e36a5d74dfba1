//! Blocks of one process's child pool freed by another process, without the pool's lock.
//!
//! A process hands a block of its child pool off to others ([`Arena::hand_off`]), which marks
//! it in the in-use bitmap (whose bits lent chunks do not otherwise use), so that only a block
//! handed off and not yet freed can be freed. Whoever frees it later claims the mark and pushes
//! the block onto the chunk's remote-free list; the owner's child pool collects the list when it
//! runs out of blocks ([`Arena::remote_list`]). The list and the chunk's state (frees in flight,
//! and whether its process gave it up) live in the descriptor of the chunk's last page among its
//! first [`CHUNK_PAGES`], its tail, apart from the first page's kind, length and owner, which
//! every hand-off and free reads: a cache line that only changes when the chunk is lent. They
//! are changed atomically, so that no lock is needed, except by the lock holder when it lends
//! the chunk (a logged write, which an undo of the lend restores), when nobody can free into it.
//! The protocol itself is in `handoff.rs`.
//!
//! The owner may give a chunk up (drop its child pool, or die) at any time, and
//! [`Arena::take_back`] then marks it given up. If nothing of it is out, no block marked and no
//! free in flight, it goes back at once; otherwise it waits on the orphans' list, and the free
//! that finds it given up looks again under the lock ([`Arena::release_orphan`]).

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use melon_alloc_core::CHUNK_SIZE;

use super::{Arena, GiveBack};
use crate::handoff;
use crate::layout::{kind, PageDesc, CHUNK_PAGES, GRAIN, NONE, ORPHANS, OWNER_SLOTS, PAGE};

/// The bytes at the start of every chunk that hold the child pool's chunk header: no block
/// starts inside them.
pub(crate) const CHUNK_HEADER: u32 = 64;

/// The lent chunk a block of another process's child pool lies in, as
/// [`remote_target`](Arena::remote_target) found it in the arena it borrows: the only way to
/// make one, and its fields cannot be changed after, so that a target always names a block
/// boundary inside a lent chunk's first pages, inside the data pages of that arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteTarget<'arena> {
    /// The chunk's first page.
    chunk: u32,
    /// The block's offset from the chunk's start.
    within: u32,
    /// The chunk's first page descriptor, found once.
    desc: *mut PageDesc,
    /// The chunk's first pages, up to [`CHUNK_PAGES`]: its tail ([`tail_page`]), which holds its
    /// remote-free list and state, is the last of them.
    pages: u32,
    _arena: core::marker::PhantomData<&'arena Arena>,
}

impl RemoteTarget<'_> {
    /// The block's offset in the mapping.
    fn offset(&self) -> usize {
        self.chunk as usize * PAGE + self.within as usize
    }
}

#[cfg(test)]
impl RemoteTarget<'_> {
    /// The chunk's first page.
    pub(crate) fn chunk(&self) -> u32 {
        self.chunk
    }

    /// The block's offset from the chunk's start.
    pub(crate) fn within(&self) -> u32 {
        self.within
    }
}

/// What a remote free did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteFree {
    /// Whether the block was freed: refused, with nothing changed, when it was not handed off
    /// or was freed already.
    pub(crate) accepted: bool,
    /// The first page of the chunk, when its process gave it up: the caller gives it back under
    /// the lock if nothing of it is out any more ([`Arena::release_orphan`]).
    pub(crate) given_up: Option<u32>,
}

/// The page whose descriptor holds the remote-free list and state of the chunk whose first page
/// is `chunk`, `pages` long: the last of its first [`CHUNK_PAGES`].
pub(super) fn tail_page(chunk: u32, pages: u32) -> u32 {
    chunk + pages.clamp(1, CHUNK_PAGES) - 1
}

impl Arena {
    /// The words of page `page`'s descriptor that are read or written without the lock.
    fn words(&self, page: u32) -> DescWords<'_> {
        DescWords::at(self.desc(page))
    }

    /// The lent chunk `offset` lies in, if it lies in the block area of one, at a block
    /// boundary. Read without the lock: it is exact for a block the caller holds, whose chunk
    /// stays lent while the block is out, and merely an answer for any other offset.
    ///
    /// Blocks start in their chunk's first [`CHUNK_SIZE`] bytes, and lent chunks are aligned to
    /// it: the chunk is found by masking. A block past the chunk's first page needs its own page
    /// to say it is one of the chunk's too: a lend in progress writes the chunk's kind before its
    /// length, so the first page alone may say lent, with the length of a longer run it used to
    /// be part of, over a page that still holds a block of the pool's own. Such a page never
    /// says [`kind::LENT_PAGE`] while its block is in use.
    #[inline]
    pub(crate) fn remote_target(&self, offset: u64) -> Option<RemoteTarget<'_>> {
        let chunk_start = offset & !(CHUNK_SIZE as u64 - 1);
        let chunk = u32::try_from(chunk_start / PAGE as u64).ok()?;
        // A page outside the data pages reads a clamped descriptor, and fails the bound below.
        let words = self.words(chunk);
        if words.kind().load(Ordering::Acquire) & 0xff != kind::LENT {
            return None;
        }
        // Blocks lie in a chunk's first pages, which must lie in the data pages too.
        let pages = words.len().load(Ordering::Acquire).min(super::CHUNK_PAGES);
        if !self.in_data(chunk, pages) {
            return None;
        }
        // Below `CHUNK_SIZE`, by the mask.
        let within = (offset - chunk_start) as u32;
        let inside = within < pages * PAGE as u32;
        if !(within >= CHUNK_HEADER && within % GRAIN as u32 == 0 && inside) {
            return None;
        }
        let pages_in = within / PAGE as u32;
        if pages_in != 0 {
            // SAFETY: the page lies in the chunk's first `pages`, inside the data pages (checked
            // above), and descriptors follow each other one per page.
            let desc = unsafe { words.desc.add(pages_in as usize) };
            let page_words = DescWords::at(desc);
            let one_of_its_pages = page_words.kind().load(Ordering::Acquire) & 0xff
                == kind::LENT_PAGE
                && page_words.head().load(Ordering::Acquire) == chunk;
            if !one_of_its_pages {
                return None;
            }
        }
        Some(RemoteTarget {
            chunk,
            within,
            desc: words.desc,
            pages,
            _arena: core::marker::PhantomData,
        })
    }

    /// The first page of the lent chunk whose pages hold `offset`, and that page's words. Read
    /// without the lock, with the same exactness as [`remote_target`](Arena::remote_target).
    fn lent_chunk_of(&self, offset: u64) -> Option<(u32, DescWords<'_>)> {
        let page = self.page_of(offset)?;
        let words = self.words(page);
        match words.kind().load(Ordering::Acquire) & 0xff {
            kind::LENT => Some((page, words)),
            kind::LENT_PAGE => {
                let chunk = words.head().load(Ordering::Acquire);
                // At or before the page; the callers bound it from beneath with `in_data`.
                if chunk > page {
                    return None;
                }
                let chunk_words = self.words(chunk);
                (chunk_words.kind().load(Ordering::Acquire) & 0xff == kind::LENT)
                    .then_some((chunk, chunk_words))
            }
            _ => None,
        }
    }

    /// The owner slot of the lent chunk whose pages hold `offset` ([`NONE`] for a chunk of no
    /// slot's), or `None` when `offset` lies in no lent chunk. Read without the lock: exact for
    /// a block the caller holds, whether of the pool itself (its page is never lent while the
    /// block is in use) or of a child pool (its chunk stays lent while the child holds it).
    pub(crate) fn lent_owner(&self, offset: u64) -> Option<u32> {
        let (chunk, words) = self.lent_chunk_of(offset)?;
        self.in_data(chunk, 1).then(|| words.owner().load(Ordering::Acquire))
    }

    /// Marks a block of the chunk `target` names as handed off: until it is freed, the chunk
    /// stays lent, or orphaned, whatever becomes of its process. Refused for a chunk that is not
    /// `owner`'s, or a block marked already.
    ///
    /// # Safety
    /// The block at `target` is an in-use block of a child pool of the caller's process, so
    /// that its chunk stays lent for the call.
    pub(crate) unsafe fn hand_off(&self, target: RemoteTarget<'_>, owner: u32) -> bool {
        let words = self.target_words(target);
        if owner >= OWNER_SLOTS as u32 || words.owner().load(Ordering::Acquire) != owner {
            return false;
        }
        let (bits, bit) = self.handed_bit(target);
        handoff::hand_off(bits, bit)
    }

    /// The owner slot of the chunk `target` names ([`NONE`] for a chunk of no slot's).
    pub(crate) fn target_owner(&self, target: RemoteTarget<'_>) -> u32 {
        self.target_words(target).owner().load(Ordering::Acquire)
    }

    /// Whether the block at `target` is marked handed off.
    ///
    /// # Safety
    /// The chunk at `target` stays lent for the call: the block is one a child pool holds, or
    /// handed off and not yet freed.
    pub(crate) unsafe fn is_handed_off(&self, target: RemoteTarget<'_>) -> bool {
        let (bits, bit) = self.handed_bit(target);
        bits.load(Ordering::SeqCst) & bit != 0
    }

    /// The words of the chunk `target` names, from the descriptor it found.
    fn target_words(&self, target: RemoteTarget<'_>) -> DescWords<'_> {
        DescWords::at(target.desc)
    }

    /// The words of the tail of the chunk `target` names: its remote-free list and state.
    fn target_tail(&self, target: RemoteTarget<'_>) -> DescWords<'_> {
        let from_first = tail_page(target.chunk, target.pages) - target.chunk;
        // SAFETY: `remote_target` made the target only with at least one page (a block lies
        // within `pages` pages) and with the chunk's first `pages` in the data pages; the tail
        // is the last of them, and descriptors follow each other one per page.
        DescWords::at(unsafe { target.desc.add(from_first as usize) })
    }

    /// The tail words of the lent chunk at `chunk`, from its length: the caller holds the lock,
    /// or a block of the chunk, so that the length stays as it is.
    fn tail_words(&self, chunk: u32) -> DescWords<'_> {
        let pages = self.words(chunk).len().load(Ordering::Acquire);
        self.words(tail_page(chunk, pages))
    }

    /// The word and bit that mark the block at `target` handed off: its bit of the in-use
    /// bitmap, which no block of a lent chunk otherwise uses.
    fn handed_bit(&self, target: RemoteTarget<'_>) -> (&AtomicU64, u64) {
        let grain = target.offset() / GRAIN;
        // SAFETY: (1) the block lies in the data pages (`remote_target` made the target), and
        // the bitmap has a bit for every grain of them, in a word that lives as long as the
        // mapping; (2) it is 8-aligned; (3) a bitmap word covers 1024 bytes of one page, and
        // while a chunk is lent its pages' words are only accessed atomically (here and in
        // `is_idle`); the chunk is lent for the whole call, by the callers' contract
        // (`hand_off`: a block of the caller's own child; `push_remote`: a block handed off, or
        // held by its child).
        (unsafe { AtomicU64::from_ptr(self.bitmap.add(grain / 64)) }, 1 << (grain % 64))
    }

    /// Frees a handed-off block of another process's child pool: claims its mark and pushes it
    /// onto its chunk's remote-free list for the owner to collect. Refused, with nothing changed,
    /// for a block not handed off, or freed already (two frees of one block at once are the
    /// caller's error: the one refused may have counted itself in the chunk's state).
    ///
    /// # Safety
    /// The chunk at `target` stays lent for the call: the block was handed off with
    /// [`hand_off`](Arena::hand_off), is not in use any more and is freed once; or it is a block
    /// that its child holds, which is refused.
    pub(crate) unsafe fn push_remote(&self, target: RemoteTarget<'_>) -> RemoteFree {
        let (bits, bit) = self.handed_bit(target);
        let tail = self.target_tail(target);
        let block = self.block_at(target);
        // The owner is read before the push: once the free is counted out, nothing of the chunk
        // may be read.
        let owner = self.target_words(target).owner().load(Ordering::Acquire);
        let freed = handoff::free(tail.remote(), tail.state(), bits, bit, target.within, |next| {
            // SAFETY: the block is the caller's to free, and its mark claimed: 16 bytes or more,
            // aligned to 16, its first word can hold the link.
            unsafe { block.write(next) }
        });
        if freed.pushed == handoff::Pushed::First && (owner as usize) < OWNER_SLOTS {
            // A death here leaves the list unannounced until the owner's next news.
            crate::stop_point::hit();
            // The list was empty: the owner may not look at this chunk again unless told.
            // The count lies in the header, not in the chunk: it outlives the chunk.
            handoff::announce(self.pending(owner));
        }
        RemoteFree {
            accepted: freed.pushed != handoff::Pushed::Refused,
            given_up: freed.given_up.then_some(target.chunk),
        }
    }

    /// What a free of the handed-off block at `target` leaves when its process is killed after
    /// it counted itself in flight and claimed the block's mark, before its push.
    #[cfg(test)]
    pub(super) fn free_cut_short(&self, target: RemoteTarget<'_>) {
        self.target_tail(target).state().fetch_add(1, Ordering::SeqCst);
        let (bits, bit) = self.handed_bit(target);
        bits.fetch_and(!bit, Ordering::SeqCst);
    }

    /// The remote-free list of the chunk at `chunk`, lent to the caller's process: a word whose
    /// place stays the same while the mapping lives, so that a child finds it once per chunk.
    /// [`handoff::take`] takes the whole list: the offset of its first block from the chunk's
    /// start, or 0. Each block's first word holds the offset of the next, 0 ending the list.
    pub(crate) fn remote_list(&self, chunk: u32) -> &AtomicU32 {
        self.tail_words(chunk).remote()
    }

    /// A count of the frees that found a remote-free list of owner slot `slot`'s chunks empty:
    /// when it changes, a child pool of the slot's process has blocks to collect. Each child
    /// compares it with the value it last saw, rather than clearing it, so that a free into
    /// one child's chunk is not taken for nothing by another.
    pub(crate) fn pending(&self, slot: u32) -> &AtomicU32 {
        let slot = (slot as usize).min(OWNER_SLOTS - 1);
        let state = self.state();
        // SAFETY: (1) the state lies in the header, and `slot` is below `OWNER_SLOTS`; (2) the
        // word is aligned and only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(addr_of_mut!((*state).owners[slot].pending)) }
    }

    /// The first word of the block at `target`.
    fn block_at(&self, target: RemoteTarget<'_>) -> *mut u32 {
        // SAFETY: the chunk lies in the mapping, and `within` is inside its first pages (see
        // `remote_target`, which made the target).
        unsafe { self.base.add(target.offset()).cast() }
    }

    /// Marks the chunk at `page` given up by its process. Returns whether something of it is
    /// still out, a block handed off or a free in flight, so that it must wait as an orphan. The
    /// caller holds the lock.
    pub(super) fn orphan(&self, page: u32) -> bool {
        handoff::give_up(self.tail_words(page).state());
        !self.is_idle(page)
    }

    /// Whether nothing of the given-up chunk at `chunk` is out: no free in flight, no block
    /// marked handed off. The caller holds the lock.
    fn is_idle(&self, chunk: u32) -> bool {
        handoff::idle(self.tail_words(chunk).state(), || {
            self.lent_bitmap(chunk).any(|bits| bits.load(Ordering::SeqCst) != 0)
        })
    }

    /// The bitmap words of the lent chunk at `chunk`'s first pages, where its blocks start: in a
    /// lent chunk they hold its blocks' hand-off marks. The caller holds the lock.
    fn lent_bitmap(&self, chunk: u32) -> impl Iterator<Item = &AtomicU64> {
        let pages = get!(self, chunk, len).clamp(1, CHUNK_PAGES);
        let first = chunk as usize * (PAGE / GRAIN) / 64;
        let words = pages as usize * (PAGE / GRAIN) / 64;
        (first..first + words).map(|word| {
            // SAFETY: (1) the chunk lies in the data pages (the caller found it lent), and the
            // bitmap has a bit for every grain of them, in words that live as long as the
            // mapping; (2) they are 8-aligned; (3) while a chunk is lent its pages' words are
            // only accessed atomically (see `handed_bit`).
            unsafe { AtomicU64::from_ptr(self.bitmap.add(word)) }
        })
    }

    /// Gives back the orphaned chunk at `chunk` if nothing of it is out any more: a free that
    /// found it given up ([`RemoteFree::given_up`]) calls this. The caller holds the lock.
    pub(crate) fn release_orphan(&self, chunk: u32) -> GiveBack {
        if !self.is_lent_to(chunk, ORPHANS) {
            return GiveBack::Refused;
        }
        let len = get!(self, chunk, len);
        self.take_back(u64::from(chunk) * PAGE as u64, len as usize * PAGE, ORPHANS)
    }

    /// Gives back every orphaned chunk, whatever of it is still out: its blocks' hand-off marks
    /// and its count of frees in flight are cleared first. The caller holds the lock, and the
    /// program has said that no process holds such a block or frees one
    /// ([`ShmPool::reclaim_orphans`](crate::ShmPool::reclaim_orphans)).
    pub(crate) fn release_every_orphan(&self) -> super::Reclaimed {
        self.release_orphans(|chunk| {
            // Unlogged: should the holder die before the chunk is back, it is an idle orphan,
            // which the next reclaim gives back.
            self.lent_bitmap(chunk).for_each(|bits| bits.store(0, Ordering::SeqCst));
            self.tail_words(chunk).state().fetch_and(handoff::GIVEN_UP, Ordering::SeqCst);
            true
        })
    }

    /// Gives back every orphaned chunk with nothing out any more: those whose last free died
    /// before it could. The caller holds the lock.
    pub(crate) fn release_idle_orphans(&self) -> super::Reclaimed {
        self.release_orphans(|chunk| self.is_idle(chunk))
    }

    /// Gives back each orphaned chunk that `ready` says may go, if nothing of it is out once
    /// `ready` has had its say. The caller holds the lock.
    fn release_orphans(&self, mut ready: impl FnMut(u32) -> bool) -> super::Reclaimed {
        let mut reclaimed = super::Reclaimed::default();
        let mut chunk = self.owner_chunks(ORPHANS);
        for _ in self.first_data..self.end() {
            if chunk == NONE || !self.is_lent_to(chunk, ORPHANS) {
                break;
            }
            let (next, pages) = (get!(self, chunk, next), get!(self, chunk, len));
            if ready(chunk) && self.release_orphan(chunk) == GiveBack::TakenBack {
                reclaimed.chunks += 1;
                reclaimed.pages += u64::from(pages);
            }
            chunk = next;
        }
        reclaimed
    }
}

/// A page descriptor's words, as atomics: those that processes read or write without the lock.
struct DescWords<'arena> {
    /// A descriptor inside the mapping (see `Arena::desc`).
    desc: *mut PageDesc,
    _arena: core::marker::PhantomData<&'arena Arena>,
}

/// A word of the descriptor, as an atomic.
macro_rules! desc_word {
    ($name:ident, $field:ident) => {
        fn $name(&self) -> &'arena AtomicU32 {
            // SAFETY: (1) `desc` points at a descriptor inside the mapping, which outlives the
            // arena's borrow; (2) the word is 4-aligned (`PageDesc` is `repr(C)` of `u32`s);
            // (3) every access to it that can be concurrent with another is atomic (module
            // docs).
            unsafe { AtomicU32::from_ptr(addr_of_mut!((*self.desc).$field)) }
        }
    };
}

impl<'arena> DescWords<'arena> {
    /// The words of the descriptor at `desc`, one inside the mapping.
    fn at(desc: *mut PageDesc) -> Self {
        Self { desc, _arena: core::marker::PhantomData }
    }

    desc_word!(kind, kind);
    desc_word!(len, len);
    desc_word!(head, head);
    // A lent chunk's owner slot, in its first page; its remote-free list and state, in its tail.
    desc_word!(owner, free);
    desc_word!(remote, live);
    desc_word!(state, carved);
}
