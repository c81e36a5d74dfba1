//! What a `fork` needs of the C API's own state: its locks, taken before the fork by hooks that
//! run with melon-alloc-shm's fork handlers ([`plumbing::on_fork`]), which also abandon, in the
//! forked process, the copies of the child pools of shared pools and of every pool made from
//! them.
//!
//! Before the fork, on the forking thread, `prepare` takes [`shared::lifecycle`] and the table
//! of shared pools for writing, waiting for any other thread inside them to leave; the guards are
//! kept in a thread-local, since the three hooks run on the forking thread. melon-alloc-shm then
//! takes the lock under which pools are linked into families: the table, which a pool is made
//! under, comes first. After the fork, `parent` and `child` drop the guards. So the forked
//! process never finds the table or a family's links half changed, nor a lock held by a thread
//! that does not exist there.
//!
//! The hooks may run twice: `pthread_once` in glibc runs melon-alloc-shm's registration again in
//! a process forked while another thread was running it. They are written to allow it: the
//! second `prepare` finds the guards taken and does nothing, and the second `parent` or `child`
//! finds them gone and does nothing.

use core::cell::RefCell;
use std::sync::MutexGuard;

use melon_alloc_shm::plumbing::{self, ForkHooks};

use crate::shared::{self, Table};

static HOOKS: ForkHooks = ForkHooks { prepare, parent: release, child: release };

/// Adds the hooks to every fork of this process, once; asking again changes nothing. The
/// library adds few hooks of its own, so there is always a slot for these.
pub(crate) fn install() {
    let _ = plumbing::on_fork(&HOOKS);
}

/// The locks the forking thread holds across a `fork`, in the order they were taken.
struct Held {
    _lifecycle: MutexGuard<'static, ()>,
    _table: Table,
}

std::thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Before a fork: takes the locks, unless this thread already did (a second registration).
/// Nothing in it panics: `try_with` and `try_borrow_mut` return errors, and the locks' poisoning
/// is ignored.
fn prepare() {
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            if held.is_none() {
                let lifecycle = shared::lifecycle();
                *held = Some(Held { _lifecycle: lifecycle, _table: shared::table_mut() });
            }
        }
    });
}

/// After a fork, in the parent and in the new process: releases the locks `prepare` took on this
/// thread, if it did and they were not released yet.
fn release() {
    let held = HELD.try_with(|held| held.try_borrow_mut().ok().and_then(|mut held| held.take()));
    drop(held);
}
