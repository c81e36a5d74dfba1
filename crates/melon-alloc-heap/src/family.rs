//! Families of pools that a `fork` must reach whole: a pool whose chunks lie in memory that a
//! forked process shares with its parent (a child of a shared-memory pool), and every pool made
//! from it, at any depth. Their bookkeeping is this process's, but the headers of their chunks
//! lie in the shared memory, so a copy of any of them in the forked process would hand out the
//! blocks its original hands out.
//!
//! The shared-memory crate marks the first pool of such a family
//! ([`Pool::track_family`](crate::Pool::track_family)), which links it into this process's list
//! of families; a child of a marked pool is marked too and linked under its parent when it is
//! made; each is unlinked when it is dropped; and the forked process abandons every family whole
//! ([`abandon_every_family`]). Pools outside such a family keep no links and take no lock.
//!
//! The links change only under [`FAMILIES`], which the shared-memory crate's fork handler holds
//! across a `fork` ([`lock_families`]), so that the forked process never finds them half
//! changed.

use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::Pool;

/// Held while any family's links change, and [`FIRSTS`] with them.
static FAMILIES: Mutex<()> = Mutex::new(());

/// The first pool of the first family of this process, or null: the first pools of the families
/// are linked to each other through their `next` and `prev`, which no sibling of theirs uses.
/// Changed only under [`FAMILIES`]; an atomic only so that a static may hold it.
static FIRSTS: AtomicPtr<Pool> = AtomicPtr::new(core::ptr::null_mut());

/// Holds the lock under which the links of every family change, until the guard is dropped: for
/// a fork handler, so that no link is half changed when the process forks. Nothing else is done
/// while the lock is held, so it may be taken before any other lock. The lock is not reentrant:
/// the thread that holds the guard must not track a pool's family
/// ([`track_family`](crate::Pool::track_family)), nor make or drop a pool of a tracked
/// family, which takes the lock again (a `std::sync::Mutex` locked by the thread that holds it
/// never returns: it deadlocks or panics).
///
/// # Examples
/// ```
/// let families = melon_alloc_heap::lock_families();
/// // A child of a pool outside every family neither links nor waits.
/// let root = melon_alloc_heap::HeapPool::new();
/// let child = root.child();
/// assert!(child.alloc(64).is_some());
/// drop(families);
/// ```
#[doc(hidden)]
pub fn lock_families() -> MutexGuard<'static, ()> {
    // The lock guards no data of its own, so a thread that panicked holding it left nothing
    // half done that the poisoning could warn of.
    FAMILIES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pool's place in its family. All empty, and never looked at, for a pool outside every
/// family.
///
/// Four words: a pool with them still fits the largest size that glibc's per-thread cache
/// serves (1032 bytes), which a fifth word would pass, making every pool's creation and drop
/// dearer. So whether the pool is in a family is told by `parent`: `None` for a pool outside
/// every family, [`first_mark`] for the first pool of one, its parent for any other.
#[derive(Default)]
pub(crate) struct Links {
    parent: Cell<Option<NonNull<Pool>>>,
    first_child: Cell<Option<NonNull<Pool>>>,
    next: Cell<Option<NonNull<Pool>>>,
    prev: Cell<Option<NonNull<Pool>>>,
}

/// What the first pool of a family has for a parent: an address that is no pool's, and is
/// never read through.
fn first_mark() -> NonNull<Pool> {
    static MARK: u8 = 0;
    NonNull::from(&MARK).cast()
}

impl Links {
    /// Whether the pool belongs to a family.
    pub(crate) fn tracked(&self) -> bool {
        self.parent.get().is_some()
    }

    /// The pool's parent in its family: `None` for the first pool of a family, or outside one.
    fn parent(&self) -> Option<NonNull<Pool>> {
        self.parent.get().filter(|&parent| parent != first_mark())
    }
}

/// Makes `pool` the first of a family, linked into the list of families, unless it is in one
/// already.
///
/// # Safety
/// The pool is alive and does not move while linked (pools live in boxes of their own).
pub(crate) unsafe fn found(pool: &Pool) {
    let _families = lock_families();
    let links = &pool.links;
    if links.tracked() {
        return;
    }
    links.parent.set(Some(first_mark()));
    let first = NonNull::new(FIRSTS.swap(core::ptr::from_ref(pool).cast_mut(), Ordering::Relaxed));
    links.next.set(first);
    if let Some(first) = first {
        // SAFETY: a linked pool is alive until it unlinks itself, under the lock held here.
        unsafe { first.as_ref() }.links.prev.set(Some(NonNull::from(pool)));
    }
}

/// Links `child`, just made from `parent`, into the parent's family, if the parent is in one.
///
/// # Safety
/// Both pools are alive, `child` is new and linked nowhere, and neither moves while linked (pools
/// live in boxes of their own).
pub(crate) unsafe fn adopt(parent: &Pool, child: NonNull<Pool>) {
    if !parent.links.tracked() {
        return;
    }
    let _families = lock_families();
    // SAFETY: the caller promises a live child that nothing else refers to yet.
    let links = unsafe { &child.as_ref().links };
    links.parent.set(Some(NonNull::from(parent)));
    let first = parent.links.first_child.replace(Some(child));
    links.next.set(first);
    if let Some(first) = first {
        // SAFETY: a linked pool is alive until it unlinks itself, under the lock held here.
        unsafe { first.as_ref() }.links.prev.set(Some(child));
    }
}

/// Takes `pool`, which is going away, out of its family, if it is in one. Its children, if any
/// are left (a child that was leaked rather than dropped), stay linked to nothing that a walk
/// from the family's first pool reaches.
pub(crate) fn leave(pool: &Pool) {
    let links = &pool.links;
    if !links.tracked() {
        return;
    }
    let _families = lock_families();
    let (prev, next) = (links.prev.take(), links.next.take());
    let parent = links.parent();
    links.parent.set(None);
    // A linked pool is alive until it unlinks itself, under the lock held here, and the parent
    // of a linked pool outlives it: each neighbour below is alive.
    match (prev, parent) {
        // SAFETY: see above.
        (Some(prev), _) => unsafe { prev.as_ref() }.links.next.set(next),
        // SAFETY: see above.
        (None, Some(parent)) => unsafe { parent.as_ref() }.links.first_child.set(next),
        // The first pool of a family, at the head of the list of families.
        (None, None) => {
            FIRSTS.store(next.map_or(core::ptr::null_mut(), NonNull::as_ptr), Ordering::Relaxed);
        }
    }
    if let Some(next) = next {
        // SAFETY: as above.
        unsafe { next.as_ref() }.links.prev.set(prev);
    }
}

/// [`Pool::abandon`]s every pool of every family of this process: what a process forked from
/// this one does with its copies of the pools whose chunks it shares.
///
/// # Safety
/// - As for [`Pool::abandon`], for every pool of every family.
/// - No pool of a family is in use meanwhile, and no link changes: the caller is the only
///   thread of a process forked while the forking thread held [`lock_families`]'s lock.
///
/// # Examples
/// ```
/// let shared_memory_like = melon_alloc_heap::HeapPool::new();
/// shared_memory_like.track_family();
/// let child = shared_memory_like.child();
/// assert!(child.alloc(64).is_some());
/// let families = melon_alloc_heap::lock_families();
/// // SAFETY: the block above is never freed or used again, nor are the pools used meanwhile,
/// // and the families' lock is held.
/// unsafe { melon_alloc_heap::abandon_every_family() };
/// drop(families);
/// assert_eq!(child.stats().chunks, 0);
/// ```
#[doc(hidden)]
pub unsafe fn abandon_every_family() {
    let mut next = NonNull::new(FIRSTS.load(Ordering::Relaxed));
    while let Some(first) = next {
        // SAFETY: a linked pool is alive until it unlinks itself, which the caller rules out.
        let first = unsafe { first.as_ref() };
        // SAFETY: forwarded from the caller.
        unsafe { walk(first, |pool| pool.abandon()) };
        next = first.links.next.get();
    }
}

/// Calls `visit` on `first` and on every pool linked under it, parents before children.
///
/// # Safety
/// No link of the family changes meanwhile: the caller holds [`FAMILIES`], or is the only thread
/// of a process forked while the forking thread held it.
pub(crate) unsafe fn walk(first: &Pool, mut visit: impl FnMut(&Pool)) {
    visit(first);
    let mut next = first.links.first_child.get();
    while let Some(pool) = next {
        // SAFETY: a linked pool is alive until it unlinks itself, which the caller rules out.
        let pool = unsafe { pool.as_ref() };
        visit(pool);
        // Down first; else across; else up until a pool below `first` has a next sibling.
        next = pool.links.first_child.get().or_else(|| {
            let mut up = pool;
            loop {
                if let Some(sibling) = up.links.next.get() {
                    return Some(sibling);
                }
                // SAFETY: as above; the parent of a linked pool outlives it.
                match up.links.parent().map(|parent| unsafe { parent.as_ref() }) {
                    Some(parent) if !core::ptr::eq(parent, first) => up = parent,
                    _ => return None,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapPool;

    /// The pools a walk from `first` visits, by address.
    fn walked(first: &Pool) -> Vec<*const Pool> {
        let _families = lock_families();
        let mut seen = Vec::new();
        // SAFETY: the lock is held.
        unsafe { walk(first, |pool| seen.push(core::ptr::from_ref(pool))) };
        seen
    }

    fn address(pool: &Pool) -> *const Pool {
        core::ptr::from_ref(pool)
    }

    /// Asserts that a walk from `first` visits exactly `pools`, in any order.
    fn assert_walks(first: &Pool, pools: &[&Pool]) {
        let mut seen = walked(first);
        seen.sort();
        let mut expected: Vec<_> = pools.iter().map(|pool| address(pool)).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_walk_reaches_every_live_pool_of_the_family_once() {
        let root = HeapPool::new();
        root.track_family();
        let a = root.child();
        let b = root.child();
        let a1 = a.child();
        let a2 = a.child_with_limit(1 << 20);
        let b1 = b.child();
        let b11 = b1.child();
        assert_walks(&root, &[&root, &a, &b, &a1, &a2, &b1, &b11]);
        // A walk from inside the family stays below its start.
        assert_eq!(walked(&b1), vec![address(&b1), address(&b11)]);
        // Dropped in no particular order, each leaves the links of the others whole.
        drop(a1);
        drop(b11);
        assert_walks(&root, &[&root, &a, &b, &a2, &b1]);
        drop((a2, b1));
        assert_eq!(walked(&root).len(), 3);
    }

    /// A pool is boxed when it is made: past 1032 bytes, glibc serves the box from its bins
    /// rather than its per-thread cache, which made a child's creation and drop 10 % dearer.
    /// (Memcheck's build keeps more in each engine, and is not timed.)
    #[cfg(all(target_pointer_width = "64", not(feature = "valgrind")))]
    #[test]
    fn a_pool_fits_the_largest_size_glibcs_thread_cache_serves() {
        assert!(core::mem::size_of::<Pool>() <= 1032, "{} bytes", core::mem::size_of::<Pool>());
    }

    #[test]
    fn pools_outside_a_family_are_never_linked() {
        let root = HeapPool::new();
        let child = root.child();
        let grandchild = child.child();
        assert!(!grandchild.links.tracked());
        assert_eq!(walked(&root), vec![address(&root)]);
    }

    #[test]
    fn abandoning_a_family_empties_every_pool_of_it() {
        let root = HeapPool::new();
        root.track_family();
        let child = root.child();
        let grandchild = child.child();
        for pool in [&*root, &*child, &*grandchild] {
            assert!(pool.alloc(64).is_some());
            assert!(pool.stats().chunks > 0);
        }
        let families = lock_families();
        // SAFETY: none of the blocks above is freed or used again, and the lock is held.
        unsafe { walk(&root, |pool| pool.abandon()) };
        drop(families);
        for pool in [&*root, &*child, &*grandchild] {
            assert_eq!((pool.stats().chunks, pool.stats().live_blocks), (0, 0));
        }
    }
}
