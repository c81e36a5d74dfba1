//! The protocol of handed-off blocks, on four kinds of word: a block's mark, which its owner sets
//! when it hands the block off and the process that frees it clears; two words of the lent chunk,
//! its remote-free list, a stack of block offsets that any process pushes onto and the owner takes
//! whole, and its state, the frees in flight with [`GIVEN_UP`] set once the owner gave the chunk up
//! (see `arena/remote.rs`); and the owner slot's count of news, which a free that finds a list
//! empty adds to and the owner's child pools compare ([`news`]). Written once over [`AtomicWord`],
//! so that the pool runs it on the words in its mapping and the loom models (`tests/loom.rs`) on
//! loom's atomics, which explore its schedules up to three preemptions; loom runs a sequentially
//! consistent operation in the order of its schedule, so the part of the argument below that rests
//! on sequential consistency is reasoned, not checked by it.
//!
//! Handing a block off writes its mark alone, a word only hand-offs and frees write, so that the
//! owner's side costs one atomic operation on a line no read of the chunk's kind shares. A chunk
//! goes back once nothing of it is out: no mark set and no free in flight. The process that gives
//! the chunk up and every free that finds it given up look, under the pool's lock, and the first
//! to find it idle gives it back. A free reads its block's mark before it writes anything, so
//! that one refused (a block freed already, or never handed off) writes nothing, as long as the
//! chunk is still lent when it reads: once the chunk has gone back, the bit may be the pool's
//! own in-use bit, and a second free would write into the pool's pages, which is why freeing a
//! block twice is outside the contract of the pool's frees. Each free is
//! counted in flight before it claims its block's mark and until after its push, so that the
//! chunk a free pushes into is still lent; and every step is sequentially consistent, so that of
//! a free and the giving up, at least one sees the other: the free sees [`GIVEN_UP`], or the
//! giving up sees the free's mark or its count.

use core::sync::atomic::Ordering;

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
    fn fetch_add(&self, value: u32, order: Ordering) -> u32;
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
            fn fetch_add(&self, value: u32, order: Ordering) -> u32 {
                <$atomic>::fetch_add(self, value, order)
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

/// A 64-bit atomic word of block marks, a bit a block.
pub(crate) trait AtomicMarks {
    fn load(&self, order: Ordering) -> u64;
    fn fetch_or(&self, bits: u64, order: Ordering) -> u64;
    fn fetch_and(&self, bits: u64, order: Ordering) -> u64;
}

macro_rules! atomic_marks {
    ($atomic:ty) => {
        impl AtomicMarks for $atomic {
            fn load(&self, order: Ordering) -> u64 {
                <$atomic>::load(self, order)
            }
            fn fetch_or(&self, bits: u64, order: Ordering) -> u64 {
                <$atomic>::fetch_or(self, bits, order)
            }
            fn fetch_and(&self, bits: u64, order: Ordering) -> u64 {
                <$atomic>::fetch_and(self, bits, order)
            }
        }
    };
}

atomic_marks!(core::sync::atomic::AtomicU64);
#[cfg(melon_loom)]
atomic_marks!(loom::sync::atomic::AtomicU64);

/// Set in a lent chunk's state once its process gave it up; the bits below count frees in
/// flight.
pub(crate) const GIVEN_UP: u32 = 1 << 31;

/// Where a free of a handed-off block put it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Refused: the block's mark was not set, as a double free or a block never handed off shows.
    Refused,
    /// The block waits on the remote-free list for its owner, on a list that held others
    /// already.
    Queued,
    /// The block waits on the remote-free list for its owner, the first on it since the owner
    /// last took the list: the one free that needs to tell the owner.
    First,
}

/// What a free of a handed-off block did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freed {
    /// Where the block went.
    pub(crate) pushed: Pushed,
    /// The chunk's process gave it up: the caller looks, under the lock, whether the chunk is
    /// idle now ([`idle`]), and gives it back if so. Set too for a free refused after it counted
    /// itself in flight (a second free racing the first), whose count may have kept the giving
    /// up from giving the chunk back.
    pub(crate) given_up: bool,
}

/// Marks a block handed off, with its bit `bit` of `marks`. Refused when the mark is set
/// already.
pub(crate) fn hand_off<M: AtomicMarks>(marks: &M, bit: u64) -> bool {
    marks.fetch_or(bit, Ordering::SeqCst) & bit == 0
}

/// Frees the handed-off block at offset `within` of its chunk: counts itself in flight in
/// `state`, claims the block's mark (`bit` of `marks`), pushes the block onto `list` (writing the
/// link to the block with `link`), and counts itself out. Refused when the mark is not set: a
/// block freed already, or never handed off, is refused before anything is written, while its
/// chunk is lent (see the module docs for a chunk gone back). Only a second free racing with
/// the first can pass that look and be refused after counting itself: freeing a block twice at
/// once is the caller's error.
pub(crate) fn free<W: AtomicWord, M: AtomicMarks>(
    list: &W,
    state: &W,
    marks: &M,
    bit: u64,
    within: u32,
    mut link: impl FnMut(u32),
) -> Freed {
    if marks.load(Ordering::SeqCst) & bit == 0 {
        return Freed { pushed: Pushed::Refused, given_up: false };
    }
    state.fetch_add(1, Ordering::SeqCst);
    let pushed = if marks.fetch_and(!bit, Ordering::SeqCst) & bit == 0 {
        Pushed::Refused
    } else {
        let mut next = list.load(Ordering::Relaxed);
        loop {
            link(next);
            match list.compare_exchange_weak(next, within, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => next = now,
            }
        }
        if next == 0 {
            Pushed::First
        } else {
            Pushed::Queued
        }
    };
    // After this, nothing of the chunk may be touched: it may go back.
    let before = state.fetch_sub(1, Ordering::SeqCst);
    Freed { pushed, given_up: before & GIVEN_UP != 0 }
}

/// Tells a chunk's owner that a free found the chunk's remote-free list empty: one more on the
/// count of news of the owner's slot ([`news`]). Made after the push, with release ordering, so
/// that an owner that sees the count sees the push.
pub(crate) fn announce<W: AtomicWord>(count: &W) {
    count.fetch_add(1, Ordering::Release);
}

/// Whether frees were announced on `count` since a child pool last looked, when it read `seen`,
/// which it then holds the count's new value. The count is compared, not cleared: the child pools
/// of one process share it, and one that cleared it would take another's news for nothing.
#[cfg(not(melon_loom_broken))]
pub(crate) fn news<W: AtomicWord>(count: &W, seen: &mut u32) -> bool {
    let now = count.load(Ordering::Acquire);
    let changed = now != *seen;
    *seen = now;
    changed
}

/// A deliberately broken [`news`], built only for the loom models that must catch it: it clears
/// the count, so that one child pool takes the news of another's blocks.
#[cfg(melon_loom_broken)]
pub(crate) fn news<W: AtomicWord>(count: &W, _seen: &mut u32) -> bool {
    count.swap(0, Ordering::Acquire) != 0
}

/// Takes the whole remote-free list: the offset of its first block, or 0. An empty list is
/// only read, so that looking costs no write to a line other processes share.
pub(crate) fn take<W: AtomicWord>(list: &W) -> u32 {
    if list.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    list.swap(0, Ordering::Acquire)
}

/// Marks the chunk given up by its process. The caller then looks whether it is [`idle`], and
/// gives it back if so; otherwise the free that finds it idle does.
pub(crate) fn give_up<W: AtomicWord>(state: &W) {
    state.fetch_or(GIVEN_UP, Ordering::SeqCst);
}

/// Whether a given-up chunk has nothing out: no block marked, as `marked` says, and then no free
/// in flight in `state`.
#[cfg(not(melon_loom_broken))]
pub(crate) fn idle<W: AtomicWord>(state: &W, marked: impl FnOnce() -> bool) -> bool {
    // The marks first: a free clears its block's mark only while counted in flight, so a
    // cleared mark seen here comes with its free's count, unless that free is over.
    let marked = marked();
    !marked && state.load(Ordering::SeqCst) == GIVEN_UP
}

/// A deliberately broken [`idle`], built only for the loom models that must catch it: it reads
/// the state before the marks, so a free that starts in between, claims its mark and is still
/// pushing goes unseen, and the chunk goes back under it.
#[cfg(melon_loom_broken)]
pub(crate) fn idle<W: AtomicWord>(state: &W, marked: impl FnOnce() -> bool) -> bool {
    let state = state.load(Ordering::SeqCst);
    !marked() && state == GIVEN_UP
}
