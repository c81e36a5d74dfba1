//! The owner table: which process's child pools each lent chunk serves, so that the chunks of a
//! process that died come back to the pool.
//!
//! A process claims a slot before its first chunk; every chunk lent to it is linked into its
//! slot's list through the chunk's first page descriptor, and unlinked when taken back. Giving a
//! slot up (its process dropped the pool, or died) takes back every chunk on its list, one
//! logged operation each, then frees the slot: a death half way leaves the rest listed, and the
//! next holder of the lock that gives the slot up again finishes the work.

use core::ptr::{addr_of, addr_of_mut};

use super::Arena;
use super::GiveBack;
use crate::layout::{kind, NONE, ORPHANS, OWNER_LISTS, OWNER_SLOTS, PAGE};
use crate::tx::Tx;

/// What giving up an owner slot took back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reclaimed {
    /// Chunks taken back.
    pub(crate) chunks: u64,
    /// Their pages.
    pub(crate) pages: u64,
    /// Pages of the chunks left as orphans, until the blocks handed off from them are freed.
    pub(crate) orphaned_pages: u64,
}

/// Reads a field of owner list `slot` (below [`OWNER_LISTS`]).
macro_rules! owner {
    ($arena:expr, $slot:expr, $field:ident) => {{
        let state = $arena.state();
        // SAFETY: the state lies in the header, and `$slot` is below `OWNER_LISTS`.
        unsafe { addr_of!((*state).owners[$slot as usize].$field).read() }
    }};
}

/// Writes a field of owner list `slot` (below [`OWNER_LISTS`]) through the undo log.
macro_rules! set_owner {
    ($arena:expr, $tx:expr, $slot:expr, $field:ident, $value:expr) => {{
        let value = $value;
        let state = $arena.state();
        // SAFETY: the state lies in the header, `$slot` is below `OWNER_LISTS`, and the arena's
        // lock is held.
        unsafe { $tx.set(addr_of_mut!((*state).owners[$slot as usize].$field), value) }
    }};
}

impl Arena {
    /// Whether a process holds owner slot `slot`.
    pub(crate) fn owner_claimed(&self, slot: u32) -> bool {
        (slot as usize) < OWNER_SLOTS && owner!(self, slot, claimed) != 0
    }

    /// Marks the free slot `slot` held, with no chunks.
    pub(crate) fn claim_owner(&self, slot: u32) {
        if slot as usize >= OWNER_SLOTS {
            return;
        }
        // SAFETY: the lock is held (see `Arena::new`) and the log is empty between operations.
        let mut tx = unsafe { Tx::begin(self.base) };
        set_owner!(self, tx, slot, chunks, NONE);
        set_owner!(self, tx, slot, claimed, 1);
        tx.commit();
    }

    /// Gives up owner slot `slot`: takes back every chunk lent to it, then frees the slot.
    /// Each chunk is an operation of its own, so a death half way leaves a slot that a second
    /// call finishes.
    pub(crate) fn release_owner(&self, slot: u32) -> Reclaimed {
        let mut reclaimed = Reclaimed::default();
        if slot as usize >= OWNER_SLOTS {
            return reclaimed;
        }
        // A list is never longer than the data pages; the bound keeps a corrupt one from
        // looping.
        for _ in self.first_data..self.end() {
            let chunk = owner!(self, slot, chunks);
            if chunk == NONE {
                break;
            }
            let pages = get!(self, chunk, len);
            let gave = if self.is_lent_to(chunk, slot) {
                self.take_back(u64::from(chunk) * PAGE as u64, pages as usize * PAGE, slot)
            } else {
                GiveBack::Refused
            };
            match gave {
                GiveBack::TakenBack => {
                    reclaimed.chunks += 1;
                    reclaimed.pages += u64::from(pages);
                }
                // Off this list, onto the orphans'.
                GiveBack::Orphaned => reclaimed.orphaned_pages += u64::from(pages),
                GiveBack::Refused => {
                    // A head that is no chunk of this slot's cannot be followed: drop the rest
                    // of the list, whose chunks stay lent (`check` reports them).
                    // SAFETY: as in `claim_owner`.
                    let mut tx = unsafe { Tx::begin(self.base) };
                    set_owner!(self, tx, slot, chunks, NONE);
                    tx.commit();
                    break;
                }
            }
        }
        // SAFETY: as in `claim_owner`.
        let mut tx = unsafe { Tx::begin(self.base) };
        set_owner!(self, tx, slot, chunks, NONE);
        set_owner!(self, tx, slot, claimed, 0);
        tx.commit();
        reclaimed
    }

    /// The first chunk on owner list `slot`, or [`NONE`].
    pub(super) fn owner_chunks(&self, slot: u32) -> u32 {
        if slot as usize >= OWNER_LISTS {
            return NONE;
        }
        owner!(self, slot, chunks)
    }

    /// Whether `page` is the first page of a chunk, in the data pages, lent to owner `slot` (or
    /// orphaned, for [`ORPHANS`]).
    pub(super) fn is_lent_to(&self, page: u32, slot: u32) -> bool {
        self.in_data(page, 1) && self.kind_of(page) == kind::LENT && get!(self, page, free) == slot
    }

    /// Records the chunk at `page` as lent to `owner` (or orphaned, for [`ORPHANS`]), first on
    /// its list; a chunk of no slot's ([`NONE`], or a slot out of range) is on no list.
    pub(super) fn link_lent(&self, tx: &mut Tx, page: u32, owner: u32) {
        if owner as usize >= OWNER_LISTS {
            set!(self, tx, page, free, NONE);
            return;
        }
        let head = owner!(self, owner, chunks);
        // A head that is not a chunk of the slot's is dropped rather than written through.
        let head = if self.is_lent_to(head, owner) { head } else { NONE };
        set!(self, tx, page, free, owner);
        set!(self, tx, page, prev, NONE);
        set!(self, tx, page, next, head);
        if head != NONE {
            set!(self, tx, head, prev, page);
        }
        set_owner!(self, tx, owner, chunks, page);
    }

    /// Takes the lent chunk at `page` off its owner's list.
    pub(super) fn unlink_lent(&self, tx: &mut Tx, page: u32) {
        let owner = get!(self, page, free);
        if owner as usize >= OWNER_LISTS {
            return;
        }
        let (prev, next) = (get!(self, page, prev), get!(self, page, next));
        let next = if self.is_lent_to(next, owner) { next } else { NONE };
        if next != NONE {
            set!(self, tx, next, prev, prev);
        }
        if prev == NONE {
            if owner!(self, owner, chunks) == page {
                set_owner!(self, tx, owner, chunks, next);
            }
        } else if self.is_lent_to(prev, owner) {
            set!(self, tx, prev, next, next);
        }
    }

    /// Checks each owner list against the lent chunks: every chunk of a slot is on the slot's
    /// list, linked both ways, and a free slot has none. `lent_chunks[slot]` counts the lent
    /// chunks whose first page names the slot.
    pub(super) fn check_owners(
        &self,
        lent_chunks: &[u32; OWNER_LISTS],
    ) -> Result<(), crate::ShmCheckError> {
        use crate::ShmCheckError as E;
        for slot in 0..OWNER_LISTS as u32 {
            let mut chunk = owner!(self, slot, chunks);
            let held = slot == ORPHANS || self.owner_claimed(slot);
            if !held && (chunk != NONE || lent_chunks[slot as usize] != 0) {
                return Err(E::BadList);
            }
            let (mut prev, mut listed) = (NONE, 0);
            while chunk != NONE {
                if !self.is_lent_to(chunk, slot)
                    || get!(self, chunk, prev) != prev
                    || listed >= lent_chunks[slot as usize]
                {
                    return Err(E::BadList);
                }
                listed += 1;
                prev = chunk;
                chunk = get!(self, chunk, next);
            }
            if listed != lent_chunks[slot as usize] {
                return Err(E::BadList);
            }
        }
        Ok(())
    }
}
