//! The pools mapped in this process, so that a block can be freed by its pointer alone.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use melon_alloc_core::FreeError;

use crate::pool::Shared;
use crate::ShmError;

/// A registered pool's process-local side, and how many frees through the registry found it and
/// have not finished: they use the pool after they let go of the registry, and the pool waits for
/// them before it goes.
struct Entry {
    shared: NonNull<Shared>,
    /// Boxed, so that its place stays the same as the list moves its entries.
    users: Box<AtomicUsize>,
}

// SAFETY: `Shared` is `Sync` in effect (its state is behind the process-shared lock), and the
// registry only reads the mapping's bounds and takes the lock through it.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

static POOLS: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
/// How many pools are registered: lets a free skip the registry when there are none.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Adds a pool to the registry.
///
/// # Safety
/// `shared` stays valid until it is passed to [`unregister`].
pub(crate) unsafe fn register(shared: NonNull<Shared>) {
    if let Ok(mut pools) = POOLS.write() {
        pools.push(Entry { shared, users: Box::new(AtomicUsize::new(0)) });
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

/// The registry, held for reading: no pool is added or removed until it is dropped.
pub(crate) struct Held(RwLockReadGuard<'static, Vec<Entry>>);

impl Held {
    /// Every registered pool's process-local side.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Shared> {
        // SAFETY: registered pools are valid until unregistered, which needs the write lock.
        self.0.iter().map(|entry| unsafe { entry.shared.as_ref() })
    }
}

/// Holds the registry for reading, as a fork does across the `fork` call. A thread that
/// panicked while it held it for writing left nothing half done (a push or a removal is whole
/// or not begun), so a poisoned registry is held all the same.
pub(crate) fn hold() -> Held {
    Held(POOLS.read().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Removes a pool from the registry.
///
/// # Safety
/// `shared` was registered.
pub(crate) unsafe fn unregister(shared: NonNull<Shared>) {
    let removed = match POOLS.write() {
        Ok(mut pools) => pools.iter().position(|entry| entry.shared == shared).map(|index| {
            COUNT.fetch_sub(1, Ordering::Relaxed);
            pools.swap_remove(index)
        }),
        Err(_) => None,
    };
    // No free can find the pool any more; those that found it before finish first. None of them
    // waits for this thread: it holds no lock of the pool's, which a free might wait for.
    if let Some(entry) = removed {
        while entry.users.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
    }
}

/// A free through the registry in progress, counted in its pool's entry until it is dropped.
struct Using<'a>(&'a AtomicUsize);

impl Drop for Using<'_> {
    fn drop(&mut self) {
        // Release: the free's last use of the pool happens before `unregister` sees the count.
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Frees `block` if it is a block of a shared pool mapped in this process, or a block of a child
/// pool's chunk that was [handed off](crate::ShmPool::hand_off). Returns `None` when no shared
/// pool frees it: any other block of a child pool's chunk is the child's to free.
///
/// # Safety
/// If `block` is an in-use block of a shared pool, nothing uses it afterwards.
///
/// # Examples
///
/// ```
/// use core::ptr::NonNull;
///
/// use melon_alloc_shm::{plumbing::free_shared, ShmPool};
///
/// let shm = ShmPool::new(1 << 20)?;
/// let block = shm.alloc(64).expect("the pool is empty");
/// let not_shared = Box::new(0u64);
/// // SAFETY: the pool's block is not used afterwards; the other pointer is only looked up.
/// unsafe {
///     assert_eq!(free_shared(block), Some(Ok(())));
///     assert_eq!(free_shared(NonNull::from(&*not_shared).cast()), None);
/// }
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
pub unsafe fn free_shared(block: NonNull<u8>) -> Option<Result<(), ShmError>> {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    // The registry is let go of before the pool's lock is taken: a thread that holds that lock
    // may be making or dropping a pool, which needs the registry's write lock.
    let (shared, users) = {
        let pools = POOLS.read().ok()?;
        let entry = pools.iter().find(|entry| {
            // SAFETY: registered pools are valid until unregistered, which needs the write lock.
            let shared = unsafe { entry.shared.as_ref() };
            shared.offset_of(block.as_ptr()).is_some()
        })?;
        // Counted while the registry is held, so that `unregister`, which removes the entry
        // under the write lock, sees the count and waits for this free.
        entry.users.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the pool and the count stay valid until `unregister` has removed the entry and
        // seen the count back at zero, which `Using` below holds off until this free is done.
        unsafe { (entry.shared.as_ref(), &*core::ptr::from_ref::<AtomicUsize>(&entry.users)) }
    };
    // Declared before the guard, so dropped after it.
    let _using = Using(users);
    // A block of a child pool's chunk needs no lock: freed at once if handed off, and otherwise
    // left to its child, whether or not the lock could be had.
    // SAFETY: forwarded from the caller.
    match unsafe { shared.free_if_lent(block) } {
        Some(Err(ShmError::Free(FreeError::Foreign { .. }))) => return None,
        Some(freed) => return Some(freed),
        None => {}
    }
    let mut guard = match shared.lock() {
        Ok(guard) => guard,
        Err(error) => return Some(Err(error)),
    };
    // A block of a child pool's chunk is freed too if it was handed off; any other block of a
    // child's is refused as foreign, unchanged, and left to its child.
    // SAFETY: forwarded from the caller.
    match unsafe { guard.free(block) } {
        Err(ShmError::Free(FreeError::Foreign { .. })) => None,
        freed => Some(freed),
    }
}
