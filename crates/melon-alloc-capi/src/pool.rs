//! What an `mln_alloc_t *` points to: a heap pool, a child pool or a shared pool, with the links
//! that let destroying a pool destroy the pools made from it first.
//!
//! # Trees and who may touch their links
//!
//! The pools made from one root (a heap pool over the system heap, or a shared pool) form a tree,
//! linked through each handle's [`Links`]: its first child and its siblings. Nothing here
//! allocates to record a child, so making and destroying pools cannot fail for want of memory
//! after the handle itself exists.
//!
//! A tree without a shared pool is used by one thread at a time, as the header requires of a
//! pool and its heap ancestors; its links need no lock. The children of a shared pool may be made
//! and destroyed by different threads at once, so every link of a tree under a shared pool is
//! read and written with the table of shared pools locked for writing ([`shared::table_mut`]),
//! which a `fork` also waits for: a forked process never finds the links half changed.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use melon_alloc_heap::{AllocError, ChildPool, HeapPool, Pool};
use melon_alloc_shm::{plumbing, ShmPool};

use crate::lock::as_holder;
use crate::shared;

/// The pool behind an `mln_alloc_t *`: C sees it only through pointers.
///
/// Handles are allocated once and never move, so a child can keep a reference to its parent's
/// pool: the `'static` of a child's borrow stands for "until the parent is destroyed", and
/// destroying a parent destroys its children first.
pub struct MlnAlloc {
    kind: Kind,
    /// The pool this one was made from; `None` for a root.
    parent: Option<NonNull<MlnAlloc>>,
    /// The shared pool whose mapping holds this pool's chunks, if any.
    shared_root: Option<NonNull<ShmPool>>,
    /// Where this pool sits in its tree; see the module's docs for who may touch it.
    links: UnsafeCell<Links>,
}

/// A handle's place in its tree.
#[derive(Clone, Copy, Default)]
struct Links {
    first_child: Option<NonNull<MlnAlloc>>,
    prev: Option<NonNull<MlnAlloc>>,
    next: Option<NonNull<MlnAlloc>>,
}

/// Which kind of pool a handle is.
pub(crate) enum Kind {
    /// A root heap pool over the system heap.
    Heap(HeapPool),
    /// A heap pool whose chunks come from its parent, a heap or a shared pool.
    Child(ChildPool<'static>),
    /// A shared-memory pool, allocated apart (with [`uninit`]) so that its address, which the
    /// table of shared pools and the children's chunk sources record, stays put. Every pointer to
    /// it derives from this one; [`destroy`] frees it.
    Shared(NonNull<ShmPool>),
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

    /// The shared pool of a shared handle.
    pub(crate) fn shm(&self) -> Option<&ShmPool> {
        match self.kind {
            // SAFETY: the shared pool lives until its handle is destroyed, and `self` is alive.
            Kind::Shared(shm) => Some(unsafe { shm.as_ref() }),
            _ => None,
        }
    }

    /// The shared pool a child handle was made from directly, if it was.
    pub(crate) fn shared_parent(&self) -> Option<&ShmPool> {
        if !matches!(self.kind, Kind::Child(_)) {
            return None;
        }
        // SAFETY: a parent outlives its children: destroying it destroys them first.
        unsafe { self.parent?.as_ref() }.shm()
    }

    /// A copy of this handle's links; `access` is to this handle's tree.
    fn links(&self, _access: &TreeAccess) -> Links {
        // SAFETY: while `access` lives, no write to the tree's links runs elsewhere.
        unsafe { *self.links.get() }
    }

    /// Changes this handle's links; `access` is to this handle's tree.
    fn update_links(&self, _access: &TreeAccess, change: impl FnOnce(&mut Links)) {
        // SAFETY: while `access` lives, nothing else writes the tree's links, and since this
        // access writes them, nothing else reads them either.
        change(unsafe { &mut *self.links.get() });
    }
}

/// The right to read and write the links of one tree, for as long as it lives: the table held
/// for writing for a tree with a shared root, or, for a tree without one, the header's promise
/// that this thread alone uses the tree (see the module's docs).
pub(crate) struct TreeAccess<'a>(PhantomData<&'a ()>);

impl TreeAccess<'_> {
    /// # Safety
    /// While the access lives, for the tree it is used on:
    /// - no other thread writes the links, nor reads them if this access writes them;
    /// - the handles linked into the tree stay alive.
    pub(crate) unsafe fn new() -> Self {
        Self(PhantomData)
    }

    /// The handle behind a pointer read from the tree's links (or the tree's own handles).
    fn get(&self, handle: NonNull<MlnAlloc>) -> &MlnAlloc {
        // SAFETY: handles linked into the tree stay alive while the access lives.
        unsafe { handle.as_ref() }
    }
}

/// Memory for one `T` from the global allocator, not yet holding a value and freed on drop until
/// [`fill`] fills it, or `None` where there is none: what a handle or a shared pool is made in,
/// before what it holds, so that running out of memory is a `None` instead of an abort.
fn uninit<T>() -> Option<Box<MaybeUninit<T>>> {
    melon_alloc_heap::plumbing::try_box(MaybeUninit::uninit).ok()
}

/// Moves `value` into `place` and gives up the box: the memory can be owned again through
/// `Box::from_raw`, having come from a `Box` of `T`'s layout.
fn fill<T>(mut place: Box<MaybeUninit<T>>, value: T) -> NonNull<T> {
    place.write(value);
    // SAFETY: written just above.
    NonNull::from(Box::leak(unsafe { place.assume_init() }))
}

/// A root heap pool, with `limit` bytes at most (`None`: no limit). `None` when there is no
/// memory for the handle.
pub(crate) fn new_heap(limit: Option<usize>) -> Option<NonNull<MlnAlloc>> {
    let handle = uninit::<MlnAlloc>()?;
    let pool = match limit {
        Some(limit) => HeapPool::try_with_limit(limit),
        None => HeapPool::try_new(),
    }
    .ok()?;
    Some(fill(
        handle,
        MlnAlloc {
            kind: Kind::Heap(pool),
            parent: None,
            shared_root: None,
            links: UnsafeCell::new(Links::default()),
        },
    ))
}

/// A shared pool made by `make`, entered in the table of shared pools. `None` when `make` fails
/// or there is no memory for the handle or the table.
pub(crate) fn new_shared(make: impl FnOnce() -> Option<ShmPool>) -> Option<NonNull<MlnAlloc>> {
    crate::fork::install();
    let handle = uninit::<MlnAlloc>()?;
    let place = uninit::<ShmPool>()?;
    let made = {
        let _making = shared::lifecycle();
        make()
    };
    let shm = fill(place, made?);
    let handle = fill(
        handle,
        MlnAlloc {
            kind: Kind::Shared(shm),
            parent: None,
            shared_root: Some(shm),
            links: UnsafeCell::new(Links::default()),
        },
    );
    // SAFETY: the pool and its handle live until the handle is destroyed, which unregisters
    // the pool first.
    if unsafe { shared::register(shm, handle) } {
        Some(handle)
    } else {
        // No memory for the table's entry: undo.
        // SAFETY: the handle was made above and nothing else knows of it.
        unsafe { destroy_one(handle) };
        None
    }
}

/// A heap pool whose chunks come from `parent`, with `limit` bytes at most. `None` when there is
/// no memory for it.
///
/// # Safety
/// - `parent` is a live handle, and stays alive until the new pool is destroyed: destroying it
///   destroys the new pool first.
/// - No other thread uses `parent` or its heap ancestors meanwhile (the header's contract).
pub(crate) unsafe fn new_child(
    parent: NonNull<MlnAlloc>,
    limit: Option<usize>,
) -> Option<NonNull<MlnAlloc>> {
    // SAFETY: the caller promises a live handle. The reference is unbounded: it stands for
    // "until the parent is destroyed", which `destroy` makes outlast the child.
    let parent_ref: &'static MlnAlloc = unsafe { parent.as_ref() };
    let handle = uninit::<MlnAlloc>()?;
    let pool = match &parent_ref.kind {
        Kind::Heap(pool) => child_of(pool, limit),
        Kind::Child(pool) => child_of(pool, limit),
        &Kind::Shared(shm) => {
            // SAFETY: the shared pool lives until its handle is destroyed, which destroys this
            // child first.
            let shm: &'static ShmPool = unsafe { shm.as_ref() };
            // Its chunks are lent to this process's slot in the pool's owner table, which is
            // what lets a free by pointer alone tell its blocks from the pool's own.
            plumbing::owned_child(shm, limit)
        }
    }
    .ok()?;
    let handle = fill(
        handle,
        MlnAlloc {
            kind: Kind::Child(pool),
            parent: Some(parent),
            shared_root: parent_ref.shared_root,
            links: UnsafeCell::new(Links::default()),
        },
    );
    let _table = parent_ref.shared_root.map(|_| shared::table_mut());
    // SAFETY: the table is held for a tree with a shared root, and otherwise the caller promises
    // that this thread alone uses the tree; its handles live while the parent does.
    let access = unsafe { TreeAccess::new() };
    let old_first = parent_ref.links(&access).first_child;
    access.get(handle).update_links(&access, |links| links.next = old_first);
    if let Some(old_first) = old_first {
        access.get(old_first).update_links(&access, |links| links.prev = Some(handle));
    }
    parent_ref.update_links(&access, |links| links.first_child = Some(handle));
    Some(handle)
}

/// A child of a heap pool, with `limit` bytes at most; `Err` when there is no memory for it.
fn child_of(pool: &'static Pool, limit: Option<usize>) -> Result<ChildPool<'static>, AllocError> {
    match limit {
        Some(limit) => pool.try_child_with_limit(limit),
        None => pool.try_child(),
    }
}

/// Destroys `handle` and every pool made from it, deepest first, so that each pool gives its
/// chunks back to a parent that still exists.
///
/// # Safety
/// - `handle` is a live handle.
/// - Nothing uses it, or any pool made from it, afterwards; no operation on any of them is in
///   progress; no other thread uses its heap ancestors meanwhile.
pub(crate) unsafe fn destroy(handle: NonNull<MlnAlloc>) {
    // SAFETY: the caller promises a live handle.
    let handle_ref = unsafe { handle.as_ref() };
    let (shared_root, was_shared) =
        (handle_ref.shared_root, matches!(handle_ref.kind, Kind::Shared(_)));
    let mut node = handle;
    // A walk without a stack or a list, so that a deep cascade can neither overflow the stack
    // nor need memory: go down to a leaf, destroy it, go up to its parent, and again. Each
    // handle is gone down to and come up from once.
    loop {
        let leaf = {
            let _table = shared_root.map(|_| shared::table_mut());
            // SAFETY: the table is held for a tree with a shared root; otherwise this thread
            // alone uses the tree, by the caller's promise. No handle of it is destroyed while
            // the access lives.
            unlink_leaf_under(&unsafe { TreeAccess::new() }, node)
        };
        // SAFETY: a live handle of the tree, until destroyed below.
        let parent = unsafe { leaf.as_ref() }.parent;
        let done = leaf == handle;
        // SAFETY: the leaf has no children left and is out of the tree, so nothing refers to
        // it any more.
        unsafe { destroy_one(leaf) };
        match parent {
            Some(parent) if !done => node = parent,
            _ => break,
        }
    }
    if let (Some(shm), false) = (shared_root, was_shared) {
        // The subtree's chunks are back; any whose return failed earlier go back now too, under
        // the callbacks (the caller does not hold the lock around a child pool's calls).
        // SAFETY: the shared pool outlives its children, among them the pools just destroyed.
        plumbing::retry_returns(unsafe { shm.as_ref() });
    }
}

/// Goes down from `node`, a handle of the tree, to a handle without children and takes it out
/// of the tree.
fn unlink_leaf_under(access: &TreeAccess, node: NonNull<MlnAlloc>) -> NonNull<MlnAlloc> {
    let mut leaf = node;
    while let Some(child) = access.get(leaf).links(access).first_child {
        leaf = child;
    }
    let leaf_ref = access.get(leaf);
    let links = leaf_ref.links(access);
    if let Some(prev) = links.prev {
        access.get(prev).update_links(access, |prev| prev.next = links.next);
    } else if let Some(parent) = leaf_ref.parent {
        access.get(parent).update_links(access, |parent| parent.first_child = links.next);
    }
    if let Some(next) = links.next {
        access.get(next).update_links(access, |next| next.prev = links.prev);
    }
    leaf_ref.update_links(access, |links| *links = Links::default());
    leaf
}

/// Destroys one handle that is out of its tree.
///
/// # Safety
/// `handle` is a live handle without children, made by this module, to which nothing refers.
unsafe fn destroy_one(handle: NonNull<MlnAlloc>) {
    // SAFETY: the handle came from `fill`, which gave up a `Box` of it.
    let pool = unsafe { Box::from_raw(handle.as_ptr()) };
    match (&pool.kind, pool.shared_root) {
        (&Kind::Shared(shm), _) => {
            // SAFETY: the pool lives until freed below.
            let shm_ref = unsafe { shm.as_ref() };
            // Chunks whose return failed go back before the pool goes, under the callbacks:
            // other processes may still use the mapping.
            plumbing::retry_returns(shm_ref);
            // Otherwise Melon's destroy of a shared pool calls no callback, and its caller may
            // hold the lock: this process's owner slot, empty now that the children are gone (but for a
            // chunk whose return failed), is let go of without the lock, and looks dead to the
            // next process that reclaims.
            // SAFETY: the handle has no children left (caller), so no child pool of this
            // process holds a chunk of the pool, and none is made before it is dropped below.
            unsafe { plumbing::let_go_without_lock(shm_ref) };
            shared::unregister(shm);
            drop(pool);
            let _unmapping = shared::lifecycle();
            // SAFETY: the pool came from `fill`, which gave up a `Box` of it; its handle, its table
            // entry and its children are gone, so nothing refers to it any more.
            drop(unsafe { Box::from_raw(shm.as_ptr()) });
        }
        _ => drop(pool),
    }
}

/// Runs `f` on a shared pool as a call whose caller holds its lock, as Melon expects of every
/// call on the shared pool itself. Chunks whose return failed earlier are given back as the pool
/// takes its (muted) lock.
pub(crate) fn on_shared<R>(pool: &ShmPool, f: impl FnOnce(&ShmPool) -> R) -> R {
    as_holder(|| f(pool))
}
