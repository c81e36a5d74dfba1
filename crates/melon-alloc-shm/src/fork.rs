//! What a `fork` does to this process's pools, through the handlers that `sys.rs` registers
//! with `pthread_atfork` the first time a child pool is made: one set of handlers for every
//! crate of the library, which other crates (the C API) join through [`on_fork`].
//!
//! Before the fork, on the forking thread, [`prepare`] runs the hooks' `prepare` in the order
//! they were added (they take their own locks), then takes the lock under which the families of
//! child pools change (`melon_alloc_heap::lock_families`). After the fork, [`parent`] releases it
//! and runs the hooks' `parent` in the opposite order. In the new process, [`child`] first
//! abandons the copies of every child pool and of every pool made from one, then releases the
//! lock and runs the hooks' `child`, also in the opposite order. So the new process never finds
//! the links of a family half changed, nor a lock held by a thread that does not exist there.

use core::cell::RefCell;
use core::sync::atomic::{AtomicPtr, Ordering};
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

std::thread_local! {
    /// The families' lock, held by the forking thread from `prepare` until after the fork.
    static HELD: RefCell<Option<MutexGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// Before a fork, on the forking thread. Nothing here panics: `try_with` and `try_borrow_mut`
/// return errors, and a second registration of the handlers (see `sys::register_fork_handler`)
/// finds the lock held by this thread already and leaves it.
pub(crate) fn prepare() {
    for hooks in hooks() {
        (hooks.prepare)();
    }
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            if held.is_none() {
                *held = Some(melon_alloc_heap::lock_families());
            }
        }
    });
}

/// The lock `prepare` took on this thread, if it did and it was not released yet.
fn release() {
    let held = HELD.try_with(|held| held.try_borrow_mut().ok().and_then(|mut held| held.take()));
    drop(held);
}

/// After a fork, in the parent.
pub(crate) fn parent() {
    release();
    for hooks in hooks().rev() {
        (hooks.parent)();
    }
}

/// After a fork, in the new process.
pub(crate) fn child() {
    crate::children::abandon_all_in_child();
    release();
    for hooks in hooks().rev() {
        (hooks.child)();
    }
}
