//! The protocol of handed-off blocks, on two words of a lent chunk: its remote-free list, a
//! stack of block offsets that any process pushes onto and the owner takes whole, and its
//! hand-off count, which keeps the chunk lent while a block is out (see `arena/remote.rs`).
//! Written once over [`AtomicWord`], so that the pool runs it on the words in its mapping and
//! the loom models (`tests/loom.rs`) on loom's atomics, which explore every interleaving of it.

use core::sync::atomic::Ordering;

use crate::layout::HANDOFF_ORPHANED;

/// A 32-bit atomic word.
pub(crate) trait AtomicWord {
    fn load(&self, order: Ordering) -> u32;
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    fn swap(&self, value: u32, order: Ordering) -> u32;
    fn fetch_sub(&self, value: u32, order: Ordering) -> u32;
    fn fetch_or(&self, value: u32, order: Ordering) -> u32;
}

macro_rules! atomic_word {
    ($atomic:ty) => {
        impl AtomicWord for $atomic {
            fn load(&self, order: Ordering) -> u32 {
                <$atomic>::load(self, order)
            }
            fn compare_exchange_weak(
                &self,
                current: u32,
                new: u32,
                success: Ordering,
                failure: Ordering,
            ) -> Result<u32, u32> {
                <$atomic>::compare_exchange_weak(self, current, new, success, failure)
            }
            fn swap(&self, value: u32, order: Ordering) -> u32 {
                <$atomic>::swap(self, value, order)
            }
            fn fetch_sub(&self, value: u32, order: Ordering) -> u32 {
                <$atomic>::fetch_sub(self, value, order)
            }
            fn fetch_or(&self, value: u32, order: Ordering) -> u32 {
                <$atomic>::fetch_or(self, value, order)
            }
        }
    };
}

atomic_word!(core::sync::atomic::AtomicU32);
#[cfg(melon_loom)]
atomic_word!(loom::sync::atomic::AtomicU32);

/// What a free of a handed-off block did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freed {
    /// The block waits on the remote-free list for its owner, on a list that held others
    /// already.
    Queued,
    /// The block waits on the remote-free list for its owner, the first on it since the owner
    /// last took the list: the one free that needs to tell the owner.
    First,
    /// The block was the last one out of a chunk its process gave up: the caller gives the
    /// chunk back.
    LastOfOrphan,
}

/// Counts one more block of the chunk as handed off. Refused once the chunk's process gave it
/// up, or when the count is full.
pub(crate) fn hand_off<W: AtomicWord>(count: &W) -> bool {
    let mut handed = count.load(Ordering::Acquire);
    loop {
        if handed & HANDOFF_ORPHANED != 0 || handed >= HANDOFF_ORPHANED - 1 {
            return false;
        }
        match count.compare_exchange_weak(handed, handed + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => handed = now,
        }
    }
}

/// Frees the handed-off block at offset `within` of its chunk: pushes it onto `list` (writing
/// the link to the block with `link`), then takes it off `count`. Refused (`None`) when the count
/// says no block is out, as a double free or a block never handed off shows.
///
/// The push comes first: until the count goes down, the caller's block holds the chunk lent,
/// so the list it pushes onto is still that chunk's; after it, the chunk may go back to the
/// pool, and nothing of it is touched.
pub(crate) fn free<W: AtomicWord>(
    list: &W,
    count: &W,
    within: u32,
    mut link: impl FnMut(u32),
) -> Option<Freed> {
    if count.load(Ordering::Acquire) & !HANDOFF_ORPHANED == 0 {
        return None;
    }
    let mut next = list.load(Ordering::Relaxed);
    loop {
        link(next);
        match list.compare_exchange_weak(next, within, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => next = now,
        }
    }
    let before = count.fetch_sub(1, Ordering::AcqRel);
    Some(if before == HANDOFF_ORPHANED | 1 {
        Freed::LastOfOrphan
    } else if next == 0 {
        Freed::First
    } else {
        Freed::Queued
    })
}

/// Takes the whole remote-free list: the offset of its first block, or 0. An empty list is
/// only read, so that looking costs no write to a line other processes share.
pub(crate) fn take<W: AtomicWord>(list: &W) -> u32 {
    if list.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    list.swap(0, Ordering::Acquire)
}

/// Marks the chunk given up by its process. Returns whether blocks handed off from it are still
/// out: then the free of the last of them gives the chunk back; otherwise the caller does, now.
pub(crate) fn give_up<W: AtomicWord>(count: &W) -> bool {
    count.fetch_or(HANDOFF_ORPHANED, Ordering::AcqRel) & !HANDOFF_ORPHANED != 0
}
