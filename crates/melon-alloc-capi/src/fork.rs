//! What a `fork` does to the pools made from shared pools: handlers registered with
//! `pthread_atfork` the first time a shared pool is made.
//!
//! Before the fork, on the forking thread, `prepare` takes [`shared::lifecycle`] and the table
//! of shared pools for writing, waiting for any other thread inside them to leave; the guards are
//! kept in a thread-local, since the three handlers run on the forking thread. After the fork,
//! `parent` drops them; `child` first abandons the copies of the pools whose chunks lie in a
//! shared mapping (see [`shared::after_fork_in_child`]), then drops them. So the forked process
//! never finds the table or the pools' links half changed, nor a lock held by a thread that does
//! not exist there.
//!
//! The handlers may be registered twice: `pthread_once` in glibc runs its routine again in a
//! process forked while another thread was running it. They are written to allow it: the second
//! `prepare` finds the guards taken and does nothing, the second `parent` finds them gone and
//! does nothing, and the second `child` does again what the first did, which changes nothing.

use core::cell::{RefCell, UnsafeCell};
use core::ffi::c_int;
use std::sync::MutexGuard;

use crate::shared::{self, Table};

extern "C" {
    /// POSIX `pthread_atfork`, from the C library the standard library links.
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
    /// POSIX `pthread_once`; `pthread_once_t` is an `int` in glibc and musl.
    fn pthread_once(control: *mut c_int, routine: unsafe extern "C" fn()) -> c_int;
}

/// `PTHREAD_ONCE_INIT`, in memory `pthread_once` may write to from any thread.
struct OnceControl(UnsafeCell<c_int>);

// SAFETY: only `pthread_once` touches the value, and it synchronizes its own accesses.
unsafe impl Sync for OnceControl {}

static ONCE: OnceControl = OnceControl(UnsafeCell::new(0));

/// Registers the fork handlers, once per process. Unlike `std::sync::Once`, `pthread_once`
/// (glibc's) does not leave a forked process waiting forever for a thread that was registering
/// at the fork and does not exist there.
pub(crate) fn install() {
    // SAFETY: `ONCE` is a `pthread_once_t` initialised to `PTHREAD_ONCE_INIT` (0) and used with
    // `pthread_once` alone; `register` is a routine that lives as long as the program.
    unsafe { pthread_once(ONCE.0.get(), register) };
}

unsafe extern "C" fn register() {
    // SAFETY: the handlers are `extern "C"` functions that live as long as the program; they
    // cannot unwind (see each one).
    unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// The locks the forking thread holds across a `fork`, in the order they were taken.
struct Held {
    _lifecycle: MutexGuard<'static, ()>,
    table: Table,
}

std::thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Before a fork: takes the locks, unless this thread already did (a second registration).
/// Nothing in it panics: `try_with` and `try_borrow_mut` return errors, and the locks' poisoning
/// is ignored.
unsafe extern "C" fn prepare() {
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            if held.is_none() {
                let lifecycle = shared::lifecycle();
                *held = Some(Held { _lifecycle: lifecycle, table: shared::table_mut() });
            }
        }
    });
}

/// The locks `prepare` took on this thread, if it did and they were not released yet.
fn take_held() -> Option<Held> {
    HELD.try_with(|held| held.try_borrow_mut().ok().and_then(|mut held| held.take())).ok().flatten()
}

/// After a fork, in the parent: releases the locks.
unsafe extern "C" fn parent() {
    drop(take_held());
}

/// After a fork, in the child: abandons the copies of the pools made from shared pools, then
/// releases the locks. If `prepare` could not keep them (the thread was exiting), it takes the
/// table only if it is free; the work is the same whichever handler does it, and doing it twice
/// changes nothing.
unsafe extern "C" fn child() {
    match take_held() {
        Some(mut held) => shared::after_fork_in_child(&mut held.table),
        None => {
            if let Some(mut table) = shared::try_table_mut() {
                shared::after_fork_in_child(&mut table);
            }
        }
    }
}
