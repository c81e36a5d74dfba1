//! What a `fork` does to this process's pools, through the handlers that `sys.rs` registers
//! with `pthread_atfork` the first time a pool is mapped: one set of handlers for every crate of
//! the library, which other crates (the C API) join through [`on_fork`].
//!
//! Before the fork, on the forking thread, [`prepare`] runs the hooks' `prepare` in the order
//! they were added (they take their own locks), then takes the lock under which the families of
//! child pools change (`melon_alloc_heap::lock_families`) and the one under which descriptions
//! are opened (`owner::lock_opening`), and opens each mapped pool's spare descriptions for the
//! new process (`spares.rs`). After the fork, [`parent`] closes its copies of the spares,
//! releases the locks and runs the hooks' `parent` in the opposite order. In the new process,
//! [`child`] first abandons the copies of every child pool of a shared pool and of every pool
//! made from one (the families the heap crate links: `ShmPool::child` starts one), closes its
//! copies of the descriptions its parent's identities and slots hold
//! (`owner::forget_all_in_child`), drops the registry's pins of the threads it lacks, keeps the
//! spares, then releases the locks and runs the hooks' `child`, also in the opposite order. So
//! the new process never finds the links of a family half changed, nor a lock held by a thread
//! that does not exist there.
//!
//! The registry of pools takes no lock (see `registry.rs`). The handlers take their locks in the
//! order the rest of the library does (the hooks', then the families', then the one under which
//! descriptions are opened), and a thread of the library's that holds either of the last two
//! waits for no other lock of the library's, so the handlers cannot deadlock with the library's
//! own work.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::MutexGuard;

/// Functions that a crate runs around every `fork` of the process, with the library's own
/// handlers: [`on_fork`] adds them. Each runs on the forking thread, must not panic (a panic
/// there aborts the process), and must not fork; `child` runs in the new process, where only
/// that thread exists.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use melon_alloc_shm::plumbing::{on_fork, ForkHooks};
///
/// static FORKS: AtomicU32 = AtomicU32::new(0);
/// static COUNT_FORKS: ForkHooks = ForkHooks {
///     prepare: || {},
///     parent: || {
///         FORKS.fetch_add(1, Ordering::Relaxed);
///     },
///     child: || {},
/// };
/// assert!(on_fork(&COUNT_FORKS));
/// // Added once, however often it is asked.
/// assert!(on_fork(&COUNT_FORKS));
/// ```
#[derive(Debug)]
pub struct ForkHooks {
    /// Before the fork, before the library takes its own locks.
    pub prepare: fn(),
    /// After the fork, in the parent, after the library released its locks.
    pub parent: fn(),
    /// After the fork, in the new process, after the library abandoned the copies of its child
    /// pools and released its locks.
    pub child: fn(),
}

/// How many crates can add hooks.
const HOOK_SLOTS: usize = 4;

static HOOKS: [AtomicPtr<ForkHooks>; HOOK_SLOTS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; HOOK_SLOTS];

/// Adds `hooks` to what every `fork` of this process runs, from now on, if they are not there
/// already. `false` when the slots for hooks are all taken.
///
/// # Examples
/// ```
/// use melon_alloc_shm::plumbing::{on_fork, ForkHooks};
///
/// static NOTHING: ForkHooks = ForkHooks { prepare: || {}, parent: || {}, child: || {} };
/// assert!(on_fork(&NOTHING));
/// ```
pub fn on_fork(hooks: &'static ForkHooks) -> bool {
    crate::sys::register_fork_handler();
    let wanted = core::ptr::from_ref(hooks).cast_mut();
    HOOKS.iter().any(|slot| {
        match slot.compare_exchange(
            core::ptr::null_mut(),
            wanted,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(there) => there == wanted,
        }
    })
}

/// The hooks added so far, in the order they were added.
fn hooks() -> impl DoubleEndedIterator<Item = &'static ForkHooks> {
    HOOKS.iter().filter_map(|slot| {
        // SAFETY: a slot holds null or a `&'static ForkHooks` that `on_fork` stored.
        unsafe { slot.load(Ordering::Acquire).as_ref() }
    })
}

/// The locks the forking thread holds from `prepare` until after the fork.
struct Guards {
    /// The families' lock.
    _families: MutexGuard<'static, ()>,
    /// The lock under which descriptions are opened and listed (`owner::lock_opening`): each
    /// pool's spare descriptions are opened, and closed or kept after the fork, under it.
    _opening: MutexGuard<'static, ()>,
}

/// The [`Guards`], held by the forking thread from `prepare` until after the fork, and that
/// thread (its `pthread_self`, which a forked process keeps), 0 while nobody holds them here. A
/// static rather than a thread-local: a thread past its thread-locals (forking from one's
/// destructor) must hold the locks as well as any other.
struct Held {
    holder: AtomicUsize,
    guard: UnsafeCell<Option<Guards>>,
}

// SAFETY: `guard` is written only by the thread that holds the families' lock, between taking
// and releasing it (`prepare`, `release`), so no two threads touch it at once; a `MutexGuard`
// released on the thread that took it is the only use made of what it holds.
unsafe impl Sync for Held {}

static HELD: Held = Held { holder: AtomicUsize::new(0), guard: UnsafeCell::new(None) };

/// This thread, as `pthread_self` names it: the same in a forked process as in the thread that
/// forked it. Never 0 (glibc's and musl's are addresses).
fn this_thread() -> usize {
    // SAFETY: `pthread_self` has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// Before a fork, on the forking thread. A second registration of the handlers (see
/// `sys::register_fork_handler`) runs this twice on the same thread: the second finds the lock
/// held by this thread already and leaves it.
pub(crate) fn prepare() {
    for hooks in hooks() {
        (hooks.prepare)();
    }
    let me = this_thread();
    if HELD.holder.load(Ordering::Acquire) == me {
        return;
    }
    let guards = Guards {
        _families: melon_alloc_heap::lock_families(),
        _opening: crate::owner::lock_opening(),
    };
    // Under the families' lock, which two threads forking at once take in turn.
    crate::registry::each_pool(crate::pool::Shared::before_fork);
    // SAFETY: this thread holds the families' lock, so it alone writes the guard's place.
    unsafe { *HELD.guard.get() = Some(guards) };
    HELD.holder.store(me, Ordering::Release);
}

/// Runs `then` on every pool and releases the locks if `prepare` took them on this thread and
/// they were not released yet.
fn release(then: fn(&crate::pool::Shared)) {
    if HELD.holder.load(Ordering::Acquire) != this_thread() {
        return;
    }
    HELD.holder.store(0, Ordering::Release);
    // SAFETY: this thread holds the families' lock (the holder was this thread), so it alone
    // writes the guard's place; dropping the guard releases the locks on the thread that took
    // them.
    let guards = unsafe { (*HELD.guard.get()).take() };
    crate::registry::each_pool(then);
    drop(guards);
}

/// After a fork, in the parent.
pub(crate) fn parent() {
    release(crate::pool::Shared::after_fork_in_parent);
    for hooks in hooks().rev() {
        (hooks.parent)();
    }
}

/// Whether, in the new process, the handler for it runs for the first time: a second
/// registration of the handlers runs it twice, and `prepare` took the locks once.
pub(crate) fn first_in_child() -> bool {
    HELD.holder.load(Ordering::Acquire) == this_thread()
}

/// After a fork, in the new process.
pub(crate) fn child() {
    // SAFETY: (1) only this thread exists in the new process, so nothing else uses the pools or
    // their links, and this thread held the families' lock across the fork (`prepare`), so no
    // link is half changed; (2) the blocks the copies
    // handed out belong to the originals in the parent, and `ShmPool::child` makes freeing them
    // in the new process part of the contract of `fork`, which no safe code can call.
    unsafe { melon_alloc_heap::abandon_every_family() };
    // Once, before the hooks run: a hook may lock a pool, and so list a description of this
    // process's own, which a second run would close.
    if first_in_child() {
        crate::owner::forget_all_in_child();
        crate::registry::forget_pins_in_child();
    }
    release(crate::pool::Shared::after_fork_in_child);
    for hooks in hooks().rev() {
        (hooks.child)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing() {}

    /// One set of hooks more than there are slots, each at an address of its own.
    static SETS: [ForkHooks; HOOK_SLOTS + 1] =
        [const { ForkHooks { prepare: nothing, parent: nothing, child: nothing } }; HOOK_SLOTS + 1];

    /// The only test of this binary that adds hooks, so it sees every slot free at its start.
    #[test]
    fn hooks_are_added_once_each_until_the_slots_run_out() {
        let (last, fitting) = SETS.split_last().unwrap();
        for hooks in fitting {
            assert!(on_fork(hooks));
            assert!(on_fork(hooks), "asked again");
        }
        assert_eq!(hooks().count(), HOOK_SLOTS);
        assert!(!on_fork(last), "one set of hooks too many took a slot");
        assert!(on_fork(&SETS[0]), "hooks already added are still there");
    }
}
