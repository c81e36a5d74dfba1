//! What an `mln_alloc_t *` points to: a heap pool, a child pool or a shared pool, with the links
//! that let destroying a pool destroy the pools made from it first.

use core::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

use melon_alloc_heap::{ChildPool, HeapPool, Pool};
use melon_alloc_shm::ShmPool;

use crate::lock::as_holder;
use crate::shared::{self, ShmChunks};

/// The pool behind an `mln_alloc_t *`: C sees it only through pointers.
///
/// Handles are boxed and never move, so a child can keep a reference to its parent's pool:
/// the `'static` of a child's borrow stands for "until the parent is destroyed", and destroying
/// a parent destroys its children first.
pub struct MlnAlloc {
    kind: Kind,
    /// The pool this one was made from; `None` for a root.
    parent: Option<NonNull<MlnAlloc>>,
    /// The pools made from this one and not destroyed yet.
    children: Mutex<Vec<NonNull<MlnAlloc>>>,
    /// The shared pool whose mapping holds this pool's chunks, if any.
    shared_root: Option<NonNull<ShmPool>>,
}

/// Which kind of pool a handle is.
pub(crate) enum Kind {
    /// A root heap pool over the system heap.
    Heap(HeapPool),
    /// A heap pool whose chunks come from its parent, a heap or a shared pool.
    Child(ChildPool<'static>),
    /// A shared-memory pool; boxed so that its address, which the table of shared pools records,
    /// stays put.
    Shared(Box<ShmPool>),
}

impl core::fmt::Debug for MlnAlloc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match &self.kind {
            Kind::Heap(_) => "heap",
            Kind::Child(_) => "child",
            Kind::Shared(_) => "shared",
        };
        f.debug_struct("MlnAlloc").field("kind", &kind).finish_non_exhaustive()
    }
}

impl MlnAlloc {
    pub(crate) fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The heap pool of a heap or child handle.
    pub(crate) fn heap(&self) -> Option<&Pool> {
        match &self.kind {
            Kind::Heap(pool) => Some(pool),
            Kind::Child(pool) => Some(pool),
            Kind::Shared(_) => None,
        }
    }

    /// Boxes a handle and gives up the box: the pointer is what C holds.
    fn into_raw(self) -> NonNull<MlnAlloc> {
        NonNull::from(Box::leak(Box::new(self)))
    }
}

/// A root heap pool, with `limit` bytes at most (`None`: no limit).
pub(crate) fn new_heap(limit: Option<usize>) -> NonNull<MlnAlloc> {
    let pool = match limit {
        Some(limit) => HeapPool::with_limit(limit),
        None => HeapPool::new(),
    };
    MlnAlloc {
        kind: Kind::Heap(pool),
        parent: None,
        children: Mutex::new(Vec::new()),
        shared_root: None,
    }
    .into_raw()
}

/// A shared pool, entered in the table of shared pools.
pub(crate) fn new_shared(pool: ShmPool) -> NonNull<MlnAlloc> {
    let pool = Box::new(pool);
    let shm = NonNull::from(&*pool);
    let handle = MlnAlloc {
        kind: Kind::Shared(pool),
        parent: None,
        children: Mutex::new(Vec::new()),
        shared_root: Some(shm),
    }
    .into_raw();
    // SAFETY: the pool lives in its box until the handle is destroyed, which unregisters it
    // first.
    unsafe { shared::register(shm) };
    handle
}

/// A heap pool whose chunks come from `parent`, with `limit` bytes at most.
///
/// # Safety
/// `parent` is a live handle, and stays alive until the new pool is destroyed: destroying it
/// destroys the new pool first.
pub(crate) unsafe fn new_child(
    parent: NonNull<MlnAlloc>,
    limit: Option<usize>,
) -> NonNull<MlnAlloc> {
    // SAFETY: the caller promises a live handle. The reference is unbounded: it stands for
    // "until the parent is destroyed", which `destroy` makes outlast the child.
    let parent_ref: &'static MlnAlloc = unsafe { parent.as_ref() };
    let pool = match &parent_ref.kind {
        Kind::Heap(pool) => child_of(pool, limit),
        Kind::Child(pool) => child_of(pool, limit),
        Kind::Shared(shm) => ChildPool::with_source(Box::new(ShmChunks::new(shm)), limit),
    };
    let heap_pool = NonNull::from(&*pool);
    let shared_root = parent_ref.shared_root;
    let handle = MlnAlloc {
        kind: Kind::Child(pool),
        parent: Some(parent),
        children: Mutex::new(Vec::new()),
        shared_root,
    }
    .into_raw();
    parent_ref.children.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
    if let Some(shm) = shared_root {
        shared::add_pool(shm, heap_pool);
    }
    handle
}

/// A child of a heap pool, with `limit` bytes at most.
fn child_of(pool: &'static Pool, limit: Option<usize>) -> ChildPool<'static> {
    match limit {
        Some(limit) => pool.child_with_limit(limit),
        None => pool.child(),
    }
}

/// Destroys `handle` and every pool made from it, deepest first, so that each pool gives its
/// chunks back to a parent that still exists.
///
/// # Safety
/// - `handle` is a live handle.
/// - Nothing uses it, or any pool made from it, afterwards; no operation on any of them is in
///   progress.
pub(crate) unsafe fn destroy(handle: NonNull<MlnAlloc>) {
    // SAFETY: the caller promises a live handle.
    if let Some(parent) = unsafe { handle.as_ref() }.parent {
        // SAFETY: a live handle's parent is live: destroying the parent would have destroyed it.
        let parent = unsafe { parent.as_ref() };
        parent.children.lock().unwrap_or_else(PoisonError::into_inner).retain(|&c| c != handle);
    }
    // Every pool of the tree, parents before children; walked with a list rather than recursion,
    // so that a deep cascade cannot overflow the stack.
    let mut order = Vec::new();
    let mut pending = vec![handle];
    while let Some(next) = pending.pop() {
        order.push(next);
        // SAFETY: `handle` and its descendants are live until destroyed below.
        let children = unsafe { next.as_ref() }.children.lock();
        pending.extend(core::mem::take(&mut *children.unwrap_or_else(PoisonError::into_inner)));
    }
    for next in order.into_iter().rev() {
        // SAFETY: every pool made from `next` was destroyed before it (they follow it in
        // `order`), so nothing refers to it any more; the pointer came from `into_raw`.
        let pool = unsafe { Box::from_raw(next.as_ptr()) };
        match (&pool.kind, pool.shared_root) {
            (Kind::Shared(shm), _) => shared::unregister(NonNull::from(&**shm)),
            (Kind::Child(child), Some(shm)) => shared::remove_pool(shm, NonNull::from(&**child)),
            _ => {}
        }
        drop(pool);
    }
}

/// Runs `f` on a shared pool as a call whose caller holds its lock, as Melon expects of every
/// call on the shared pool itself.
pub(crate) fn on_shared<R>(pool: &ShmPool, f: impl FnOnce(&ShmPool) -> R) -> R {
    as_holder(|| f(pool))
}
