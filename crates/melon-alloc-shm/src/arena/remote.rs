//! Blocks of one process's child pool freed by another process, without the pool's lock.
//!
//! A process hands a block of its child pool off to others ([`Arena::hand_off`]), which counts
//! it in the chunk's hand-off count and marks it in the in-use bitmap (whose bits lent chunks do
//! not otherwise use), so that only a block handed off and not yet freed can be freed. Whoever frees it later pushes it onto the chunk's
//! remote-free list and then takes it off the count; the owner's child pool collects the list
//! when it runs out of blocks ([`Arena::remote_list`]). Both words live in the chunk's first
//! page descriptor and are only ever changed atomically, by compare-and-swap, swap and
//! fetch-or, so that no lock is needed; they are not in the undo log, and the lock holder only
//! writes them when it lends the chunk, or undoes a lend, when nobody can free into it.
//!
//! The count is what keeps a chunk in place while a block of it is out: the owner may give a
//! chunk up (drop its child pool, or die) at any time, and [`Arena::take_back`] then sets the
//! count's [`HANDOFF_ORPHANED`] bit. If no block is out, the chunk goes back at once; otherwise
//! it waits on the orphans' list, and the free that takes the count from one to zero sees the
//! bit and gives the chunk back. A free first pushes, then counts down, so a chunk it pushes into
//! is still lent: its own block holds the count above zero until then.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use melon_alloc_core::CHUNK_SIZE;

use super::{Arena, GiveBack};
use crate::handoff;
use crate::layout::{kind, PageDesc, GRAIN, HANDOFF_ORPHANED, NONE, ORPHANS, OWNER_SLOTS, PAGE};

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
pub(crate) enum Pushed {
    /// The block waits for its owner to collect it.
    Queued,
    /// The block was the last one out of an orphaned chunk: the caller gives the chunk back
    /// under the lock ([`Arena::release_orphan`]).
    LastOfOrphan(u32),
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
        Some(RemoteTarget { chunk, within, desc: words.desc, _arena: core::marker::PhantomData })
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

    /// Counts a block of the chunk `target` names as handed off: until it is freed, the chunk
    /// stays lent, or orphaned, whatever becomes of its process. Refused for a chunk that is not
    /// `owner`'s.
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
        if bits.load(Ordering::Acquire) & bit != 0 {
            return false;
        }
        let count = words.handoffs();
        if !handoff::hand_off(count) {
            return false;
        }
        // Marked after it is counted, and cleared by a free before it is counted down: a block
        // marked is always counted, so a chunk whose count is zero has no mark left.
        if bits.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            count.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// The words of the chunk `target` names, from the descriptor it found.
    fn target_words(&self, target: RemoteTarget<'_>) -> DescWords<'_> {
        DescWords::at(target.desc)
    }

    /// The word and bit that mark the block at `target` handed off: its bit of the in-use
    /// bitmap, which no block of a lent chunk otherwise uses.
    fn handed_bit(&self, target: RemoteTarget<'_>) -> (&AtomicU64, u64) {
        let grain = target.offset() / GRAIN;
        // SAFETY: (1) the block lies in the data pages (`remote_target` made the target), and
        // the bitmap has a bit for every grain of them, in a word that lives as long as the
        // mapping; (2) it is 8-aligned; (3) a bitmap word covers 1024 bytes of one page, and
        // while a chunk is lent its pages' words are only accessed atomically, here; the chunk
        // is lent for the whole call, by the callers' contract (`hand_off`: a block of the
        // caller's own child; `push_remote`: a block handed off, or held by its child).
        (unsafe { AtomicU64::from_ptr(self.bitmap.add(grain / 64)) }, 1 << (grain % 64))
    }

    /// Frees a handed-off block of another process's child pool: pushes it onto its chunk's
    /// remote-free list for the owner to collect, then takes it off the chunk's count. Refused
    /// (`None`), with nothing changed, for a block not handed off, or freed already.
    ///
    /// # Safety
    /// The chunk at `target` stays lent for the call: the block was handed off with
    /// [`hand_off`](Arena::hand_off), is not in use any more and is freed once; or it is a block
    /// that its child holds, which is refused.
    pub(crate) unsafe fn push_remote(&self, target: RemoteTarget<'_>) -> Option<Pushed> {
        // Only a block handed off and not freed since has its mark: anything else, a second
        // free or a pointer inside a block among them, is refused here and changes nothing.
        let (bits, bit) = self.handed_bit(target);
        if bits.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
            return None;
        }
        let words = self.target_words(target);
        let (list, count) = (words.remote(), words.handoffs());
        let block = self.block_at(target);
        // The owner is read before the push: after the count goes down, nothing of the chunk
        // may be read.
        let owner = words.owner().load(Ordering::Acquire);
        let freed = handoff::free(list, count, target.within, |next| {
            // SAFETY: the block is the caller's to free, 16 bytes or more, aligned to 16: its
            // first word can hold the link.
            unsafe { block.write(next) }
        })?;
        Some(match freed {
            handoff::Freed::Queued => Pushed::Queued,
            handoff::Freed::First => {
                // The list was empty: the owner may not look at this chunk again unless told.
                // The count lies in the header, not in the chunk: it outlives the chunk.
                if (owner as usize) < OWNER_SLOTS {
                    self.pending(owner).fetch_add(1, Ordering::Release);
                }
                Pushed::Queued
            }
            handoff::Freed::LastOfOrphan => Pushed::LastOfOrphan(target.chunk),
        })
    }

    /// The remote-free list of the chunk at `chunk`, lent to the caller's process: a word whose
    /// place stays the same while the mapping lives, so that a child finds it once per chunk.
    /// [`handoff::take`] takes the whole list: the offset of its first block from the chunk's
    /// start, or 0. Each block's first word holds the offset of the next, 0 ending the list.
    pub(crate) fn remote_list(&self, chunk: u32) -> &AtomicU32 {
        self.words(chunk).remote()
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

    /// Marks the chunk at `page` given up by its process. Returns whether blocks handed off from
    /// it are still out, so that it must wait for them as an orphan.
    pub(super) fn orphan(&self, page: u32) -> bool {
        handoff::give_up(self.words(page).handoffs())
    }

    /// Gives back the orphaned chunk at `chunk` once its last handed-off block was freed
    /// ([`Pushed::LastOfOrphan`]). The caller holds the lock.
    pub(crate) fn release_orphan(&self, chunk: u32) -> GiveBack {
        if !self.is_lent_to(chunk, ORPHANS) {
            return GiveBack::Refused;
        }
        let len = get!(self, chunk, len);
        self.take_back(u64::from(chunk) * PAGE as u64, len as usize * PAGE, ORPHANS)
    }

    /// Gives back every orphaned chunk with no block out any more: those whose last free died
    /// before it could. The caller holds the lock.
    pub(crate) fn release_idle_orphans(&self) -> super::Reclaimed {
        let mut reclaimed = super::Reclaimed::default();
        let mut chunk = self.owner_chunks(ORPHANS);
        for _ in self.first_data..self.end() {
            if chunk == NONE || !self.is_lent_to(chunk, ORPHANS) {
                break;
            }
            let (next, pages) = (get!(self, chunk, next), get!(self, chunk, len));
            let idle = self.words(chunk).handoffs().load(Ordering::Acquire) == HANDOFF_ORPHANED;
            if idle && self.release_orphan(chunk) == GiveBack::TakenBack {
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
    // A lent chunk's owner slot, remote-free list and hand-off count.
    desc_word!(owner, free);
    desc_word!(remote, live);
    desc_word!(handoffs, carved);
}
