//! Pools that a caught panic may have left half changed.
//!
//! No panic crosses into C: every entry point catches it and returns NULL, 0 or nothing. A panic
//! means a bug or a broken contract (a pool used by two threads at once, say) and may have
//! stopped an operation half way, so the pools it was working on are poisoned: every later call
//! on them, or on a pool made from them, fails the same way, a free of one of their blocks does
//! nothing, and destroying them leaves their memory allocated rather than walk corrupt lists.
//!
//! A panic in an operation on a handle poisons the handle's whole tree (its root and every pool
//! made from the root), since an operation changes the pool's heap ancestors too. A panic in a
//! free by pointer, where only the block's heap pool is known, poisons that pool and the pools
//! made from it. The records are a fixed number of slots, so that poisoning needs no memory;
//! once they are all taken, every call of the library fails.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use melon_alloc_heap::Pool;

use crate::pool::{self, MlnAlloc};
use crate::shared;

const SLOTS: usize = 32;

/// Roots of poisoned trees. A poisoned handle is never destroyed, so these stay valid.
static TREES: [AtomicPtr<MlnAlloc>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
/// Heap pools poisoned by a free: compared by address only.
static POOLS: [AtomicPtr<Pool>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
/// Whether anything is poisoned: the common case reads this alone.
static ANY: AtomicBool = AtomicBool::new(false);
/// Whether a record did not fit: everything is refused.
static ALL: AtomicBool = AtomicBool::new(false);

fn add<T>(slots: &[AtomicPtr<T>; SLOTS], item: *mut T) {
    let recorded = slots.iter().any(|slot| slot.load(Ordering::Acquire) == item)
        || slots.iter().any(|slot| {
            slot.compare_exchange(ptr::null_mut(), item, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
    if !recorded {
        ALL.store(true, Ordering::Release);
    }
    ANY.store(true, Ordering::Release);
}

fn contains<T>(slots: &[AtomicPtr<T>; SLOTS], item: *const T) -> bool {
    slots.iter().any(|slot| ptr::eq(slot.load(Ordering::Acquire), item))
}

/// Poisons the tree of `handle`.
pub(crate) fn poison_tree(handle: &MlnAlloc) {
    add(&TREES, handle.tree_root().as_ptr());
}

/// Poisons a heap pool found from one of its blocks.
pub(crate) fn poison_pool(pool: NonNull<Pool>) {
    add(&POOLS, pool.as_ptr());
}

/// Whether calls on `handle` are refused: its tree is poisoned, or it or one of its ancestors is
/// a poisoned heap pool.
#[inline]
pub(crate) fn refuses(handle: &MlnAlloc) -> bool {
    ANY.load(Ordering::Acquire) && refuses_slow(handle)
}

#[cold]
#[inline(never)]
fn refuses_slow(handle: &MlnAlloc) -> bool {
    if ALL.load(Ordering::Acquire) || contains(&TREES, handle.tree_root().as_ptr()) {
        return true;
    }
    let mut next = Some(handle);
    while let Some(handle) = next {
        if handle.heap().is_some_and(|heap| contains(&POOLS, heap)) {
            return true;
        }
        // SAFETY: a live handle's parent is live: destroying it would have destroyed the child.
        next = handle.parent().map(|parent| unsafe { parent.as_ref() });
    }
    false
}

/// Whether frees of the blocks of heap pool `pool` are refused.
#[inline]
pub(crate) fn refuses_pool(pool: NonNull<Pool>) -> bool {
    ANY.load(Ordering::Acquire) && refuses_pool_slow(pool)
}

#[cold]
#[inline(never)]
fn refuses_pool_slow(pool: NonNull<Pool>) -> bool {
    if ALL.load(Ordering::Acquire) || contains(&POOLS, pool.as_ptr()) {
        return true;
    }
    TREES.iter().any(|slot| {
        let Some(root) = NonNull::new(slot.load(Ordering::Acquire)) else {
            return false;
        };
        // SAFETY: a poisoned root is never destroyed.
        let root_ref = unsafe { root.as_ref() };
        if root_ref.heap().is_some_and(|heap| ptr::eq(heap, pool.as_ptr())) {
            return true;
        }
        let _table = root_ref.shared_root().map(|_| shared::table());
        // SAFETY: the table is held for a tree with a shared root (its links change only under
        // the write lock, and its handles are unlinked before they go), and a poisoned tree
        // without one is changed by no call any more (each is refused).
        let access = unsafe { pool::TreeAccess::new() };
        let mut found = false;
        pool::for_each_descendant(&access, root, |handle| {
            found |= handle.heap().is_some_and(|heap| ptr::eq(heap, pool.as_ptr()));
        });
        found
    })
}
