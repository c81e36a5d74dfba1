//! The child pools of shared pools in this process, so that a `fork` can make their copies in
//! the new process hand out nothing.
//!
//! A child pool's bookkeeping lives in its process, but its chunks live in the shared mapping.
//! After a `fork`, the new process holds a copy of that bookkeeping that would hand out the same
//! blocks as the original, and so do the pools made from the child, whose chunks the child lent
//! them. The fork handler abandons every such copy, so the copy's next allocation asks its parent,
//! and at the top the shared pool, for a chunk, which the shared pool refuses to a process other
//! than the child's maker.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use melon_alloc_heap::Pool;

/// How many child pools of shared pools a process can have alive at once with this protection;
/// children beyond it still refuse new chunks after a fork, but not blocks of chunks they hold.
const SLOTS: usize = 256;

static CHILDREN: [AtomicPtr<Pool>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];

/// Marks a slot taken before its pool exists.
fn reserved() -> *mut Pool {
    NonNull::dangling().as_ptr()
}

/// A child pool's place in the table, freed when the child's chunk source is dropped.
#[derive(Debug)]
pub(crate) struct Slot(Option<usize>);

impl Slot {
    /// Takes a free slot, if any.
    pub(crate) fn reserve() -> Self {
        let index = CHILDREN.iter().position(|slot| {
            slot.compare_exchange(ptr::null_mut(), reserved(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        Self(index)
    }

    /// Where the slot is in the table, to [`fill`] it once the pool exists.
    pub(crate) fn index(&self) -> Option<usize> {
        self.0
    }
}

/// Records in slot `index` (from [`Slot::index`]) the pool that the slot stands for.
pub(crate) fn fill(index: Option<usize>, pool: &Pool) {
    if let Some(index) = index {
        CHILDREN[index].store(ptr::from_ref(pool).cast_mut(), Ordering::Release);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(index) = self.0 {
            CHILDREN[index].store(ptr::null_mut(), Ordering::Release);
        }
    }
}

/// Abandons the copy of every registered child pool, and of every pool made from one, at any
/// depth (its family: see `melon_alloc_heap::Pool::track_family`). Run in the new process right
/// after a `fork`, where only the forking thread exists, and which that thread made holding the
/// lock under which families change.
pub(crate) fn abandon_all_in_child() {
    for slot in &CHILDREN {
        let pool = slot.load(Ordering::Acquire);
        if !pool.is_null() && pool != reserved() {
            // SAFETY: (1) a filled slot names a live child pool: the slot is cleared before the
            // pool's memory goes; only this thread exists in the new process, so nothing else uses
            // it or its family, and the forking thread held the families' lock across the fork,
            // so no link is half changed; (2) the blocks the copies handed out belong to the
            // originals in the parent, and `ShmPool::child` makes freeing them in the new process
            // part of the contract of `fork`, which no safe code can call.
            unsafe { (*pool).abandon_family() };
        }
    }
}
