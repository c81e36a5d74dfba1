//! The pools mapped in this process, so that a block can be freed by its pointer alone, and
//! the fork handler can reach every pool.
//!
//! Lock-free: a `fork` copies the registry as it is. A lock some other thread held at that
//! moment (a free looking a pointer up) would stay held in the new process, where that thread
//! does not exist, and the first pool made or dropped there would wait for it forever; and the
//! fork handler must not wait for a thread that may itself wait for a lock of the program's that
//! the program's own fork handler takes. The pins that other threads held at the fork are
//! dropped in the new process by the fork handler (a fork that runs none keeps them).
//!
//! A pool has a slot, in blocks of slots that are never freed. A thread that uses a slot's pool
//! (a free by pointer, the fork handler) pins the slot first and reads the pool's address after;
//! a pool that goes marks its slot and waits until nobody pins it. Each registration has a
//! number of its own, never given again, so that a thread can remember where it found a pool
//! ([`Found`]) and later tell, without a pin, that the pool is still the one registered there.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use melon_alloc_core::FreeError;

use crate::blocks::Blocks;
use crate::pool::Shared;
use crate::ShmError;

/// Slots in a block.
const SLOTS: usize = 16;

/// [`Slot::shared`] while the slot is being filled or emptied: pinned by nobody new, taken by no
/// other pool.
const BUSY: *mut Shared = core::ptr::dangling_mut();

/// One pool's place in the registry.
struct Slot {
    /// The pool's process-local side: null when the slot is free, [`BUSY`] while it is filled or
    /// emptied.
    shared: AtomicPtr<Shared>,
    /// The addresses reserved for the pool's mapping, from `start` to `end`: read without a pin,
    /// to skip the pools a pointer is not in (a stale range costs a pin, not a wrong answer).
    start: AtomicUsize,
    end: AtomicUsize,
    /// Threads that pinned the slot and may use its pool.
    users: AtomicUsize,
    /// The number of the registration that put the slot's pool there; 0 once it starts to go.
    registration: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            shared: AtomicPtr::new(core::ptr::null_mut()),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            registration: AtomicU64::new(0),
        }
    }

    /// Whether the pool last seen in the slot reserved the address `addr`.
    fn may_hold(&self, addr: usize) -> bool {
        (self.start.load(Ordering::Relaxed)..self.end.load(Ordering::Relaxed)).contains(&addr)
    }

    /// The slot's pool, kept from going until the pin is dropped; `None` if the slot holds none.
    fn pin(&'static self) -> Option<Pinned> {
        // Sequentially consistent, with `unregister`'s mark and count: either the pool that goes
        // sees this pin, or this pin sees the pool gone.
        self.users.fetch_add(1, Ordering::SeqCst);
        let shared = self.shared.load(Ordering::SeqCst);
        match NonNull::new(shared) {
            Some(shared) if shared.as_ptr() != BUSY => Some(Pinned { slot: self, shared }),
            _ => {
                self.users.fetch_sub(1, Ordering::Release);
                None
            }
        }
    }
}

/// The slots: a first block of them, and more added as pools fill them, never freed.
static SLOTS_TABLE: Blocks<Slot, SLOTS> = Blocks::new([const { Slot::new() }; SLOTS]);
/// How many pools are registered: lets a free skip the registry when there are none.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The number the last registration took: each takes the next, so none is given twice.
static REGISTRATIONS: AtomicU64 = AtomicU64::new(0);

/// Every slot, block by block.
fn slots() -> impl Iterator<Item = &'static Slot> {
    SLOTS_TABLE.entries()
}

/// A pinned slot's pool.
struct Pinned {
    slot: &'static Slot,
    shared: NonNull<Shared>,
}

impl Pinned {
    fn shared(&self) -> &Shared {
        // SAFETY: the pool stays valid while its slot is pinned: `unregister` waits for the pin
        // to go before the pool is freed.
        unsafe { self.shared.as_ref() }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Release: the pin's last use of the pool happens before `unregister` sees the count.
        self.slot.users.fetch_sub(1, Ordering::Release);
    }
}

/// Adds a pool to the registry; `ENOMEM`, with the pool left out, when every slot is taken and
/// there is no memory for a new block of them.
///
/// # Safety
/// `shared` stays valid until it is passed to [`unregister`].
pub(crate) unsafe fn register(shared: NonNull<Shared>) -> Result<(), rustix::io::Errno> {
    // SAFETY: valid, by the caller's promise.
    let range = unsafe { shared.as_ref() }.reserved_range();
    let slot = loop {
        let free = slots().find(|slot| {
            slot.shared
                .compare_exchange(core::ptr::null_mut(), BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(slot) = free {
            break slot;
        }
        SLOTS_TABLE.grow(|| [const { Slot::new() }; SLOTS])?;
    };
    slot.start.store(range.start, Ordering::Relaxed);
    slot.end.store(range.end, Ordering::Relaxed);
    let registration = REGISTRATIONS.fetch_add(1, Ordering::Relaxed) + 1;
    slot.registration.store(registration, Ordering::Relaxed);
    slot.shared.store(shared.as_ptr(), Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Removes a pool from the registry, once nobody uses it through the registry any more.
///
/// # Safety
/// `shared` was registered.
pub(crate) unsafe fn unregister(shared: NonNull<Shared>) {
    let Some(slot) = slots().find(|slot| {
        slot.shared
            .compare_exchange(shared.as_ptr(), BUSY, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }) else {
        return;
    };
    // From here no thread takes a pool it remembered for this one.
    slot.registration.store(0, Ordering::SeqCst);
    COUNT.fetch_sub(1, Ordering::Relaxed);
    // No thread can pin the pool any more; those that did finish first. None of them waits for
    // this thread: it holds no lock of the pool's, which a free might wait for.
    while slot.users.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
    slot.shared.store(core::ptr::null_mut(), Ordering::Release);
}

/// Runs `then` on every registered pool, each pinned meanwhile.
pub(crate) fn each_pool(mut then: impl FnMut(&Shared)) {
    for slot in slots() {
        if let Some(pinned) = slot.pin() {
            then(pinned.shared());
        }
    }
}

/// In the new process after a fork, where only the forking thread exists: drops the pins that
/// the parent's other threads held, which no thread here will drop.
pub(crate) fn forget_pins_in_child() {
    for slot in slots() {
        slot.users.store(0, Ordering::Relaxed);
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
    // SAFETY: forwarded from the caller.
    with_pool_holding(block.as_ptr(), |shared| unsafe { free_in(shared, block) }).flatten()
}

/// Runs `then` on the shared pool of this process whose reserved addresses hold `addr`, pinned
/// for the call; `None` when no pool's do. Nothing is mapped on the way: `then` decides.
pub(crate) fn with_pool_holding<R>(addr: *const u8, then: impl FnOnce(&Shared) -> R) -> Option<R> {
    pin_holding(addr).map(|pinned| then(pinned.shared()))
}

/// [`with_pool_holding`], telling `then` too where the pool was found, for the caller to
/// remember: `None` for a pool that has started to go, which the pin does not keep from
/// starting, and which nobody should remember.
pub(crate) fn with_pool_found<R>(
    addr: *const u8,
    then: impl FnOnce(&Shared, Option<Found>) -> R,
) -> Option<R> {
    let pinned = pin_holding(addr)?;
    let shared = pinned.shared();
    let registration = pinned.slot.registration.load(Ordering::Relaxed);
    let mapped = shared.mapped_range();
    let found = (registration != 0).then_some(Found {
        slot: pinned.slot,
        registration,
        start: mapped.start,
        end: mapped.end,
    });
    Some(then(shared, found))
}

/// The slot of the shared pool of this process whose reserved addresses hold `addr`, pinned.
fn pin_holding(addr: *const u8) -> Option<Pinned> {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    slots().filter(|slot| slot.may_hold(addr.addr())).find_map(|slot| {
        slot.pin().filter(|pinned| pinned.shared().reserved_offset_of(addr).is_some())
    })
}

/// Where a thread found a registered pool: enough to tell later, without a pin, whether that
/// pool is still registered and had mapped an address in this process when it was found.
#[derive(Clone, Copy)]
pub(crate) struct Found {
    slot: &'static Slot,
    registration: u64,
    /// The addresses the pool had mapped in this process when it was found.
    start: usize,
    end: usize,
}

impl Found {
    /// Whether the pool found is still registered, and `addr` lies in what it had mapped in this
    /// process when it was found.
    ///
    /// A registered pool keeps what it mapped, which only grows, so memory at such an address
    /// that the caller can reach is this pool's; and the caller reaching memory of the pool
    /// keeps the pool alive, registered included, for as long as it does.
    #[inline]
    pub(crate) fn holds(&self, addr: *const u8) -> bool {
        // Relaxed: registration numbers are never given twice (and a `Found` never holds 0,
        // which a free slot shows), so seeing this one again means the slot still holds the
        // registration it was read from; nothing else is read through it.
        (self.start..self.end).contains(&addr.addr())
            && self.slot.registration.load(Ordering::Relaxed) == self.registration
    }
}

/// [`free_shared`] of `block`, which `shared`'s reserved addresses hold.
///
/// # Safety
/// As for [`free_shared`].
unsafe fn free_in(shared: &Shared, block: NonNull<u8>) -> Option<Result<(), ShmError>> {
    // The block may lie in pages another process grew the pool by: mapped first, or not the
    // pool's to free.
    shared.offset_of(block.as_ptr())?;
    // A block of a child pool's chunk needs no lock: freed at once if handed off, and otherwise
    // left to its child, whether or not the lock could be had.
    // SAFETY: forwarded from the caller.
    match unsafe { shared.free_if_lent(block, crate::pool::Orphans::Lock) } {
        Some(Err(ShmError::NotHandedOff { .. })) => return None,
        Some(freed) => return Some(freed),
        None => {}
    }
    let mut guard = match shared.lock() {
        Ok(guard) => guard,
        Err(error) => return Some(Err(error)),
    };
    // A block of a child pool's chunk is freed too if it was handed off; any other block of a
    // child's is refused, unchanged, and left to its child, as is a pointer the pool does not
    // hold.
    // SAFETY: forwarded from the caller.
    match unsafe { guard.free(block) } {
        Err(ShmError::NotHandedOff { .. } | ShmError::Free(FreeError::Foreign { .. })) => None,
        freed => Some(freed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShmPool;

    /// Where a pool was found tells that it holds its own addresses while it lives, and no
    /// address once it is gone, even when a new pool takes the same slot and the same addresses.
    #[test]
    fn a_pool_found_is_known_again_only_while_it_stays_registered() {
        let first = ShmPool::new(1 << 20).unwrap();
        let block = first.alloc(64).unwrap();
        let addr = block.as_ptr().cast_const();
        let found = with_pool_found(addr, |_, found| found).unwrap().unwrap();
        assert!(found.holds(addr));
        let outside = first.shared().mapped_range().end as *const u8;
        assert!(!found.holds(outside), "an address past what the pool had mapped");

        drop(first);
        assert!(!found.holds(addr), "the pool is gone");
        // Pools made until one reserves the first's addresses, perhaps in the first's slot: it
        // is found there, and the first is still not. The kernel tends to hand out the
        // addresses unmapped last first, but need not; the first is not found either way.
        let mut later = Vec::new();
        for _ in 0..16 {
            let pool = ShmPool::new(1 << 20).unwrap();
            let reused = pool.shared().reserved_range().contains(&addr.addr());
            later.push(pool);
            if reused {
                let again = with_pool_found(addr, |_, found| found).unwrap().unwrap();
                assert!(again.holds(addr));
                break;
            }
        }
        assert!(!found.holds(addr), "a new pool in the same place is another registration");
    }
}
