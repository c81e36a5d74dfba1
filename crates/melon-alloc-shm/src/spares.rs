//! Descriptions of a pool's file that a process opens before it forks, for the new process to
//! make its identity and claim its owner slot through (see `identity.rs` and `owner.rs`).
//!
//! A process makes both through a description of its own, opened through `/proc/self/fd` the
//! first time it needs one. A worker of a pre-fork server often cannot by then: it dropped its
//! privileges after the fork, and a named pool's file is its creator's alone. So the fork handler
//! opens a pair for each mapped pool in the parent, which still has the right; the parent closes
//! its copies after the fork, and the new process keeps them, the only holder of each
//! description, until it uses them or drops the pool.

use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use crate::sys;

/// What a spare description is for.
#[derive(Clone, Copy)]
pub(crate) enum Use {
    /// The process's identity, which the built-in lock's word names.
    Identity = 0,
    /// The process's slot in the owner table.
    Claim = 1,
}

/// One pool's spare descriptions in this process.
pub(crate) struct Spares {
    /// Opened by the fork handler for the process being forked, by [`Use`]; -1 but between the
    /// handler's steps.
    for_child: [AtomicI32; 2],
    /// Opened for this process by its parent's fork handler, by [`Use`]; -1 once taken.
    mine: [AtomicI32; 2],
    /// [`sys::process_token`] of the process `mine` was opened for: a process made by a fork
    /// that ran no handler finds its parent's, which are not its own.
    process: AtomicU64,
}

impl Spares {
    pub(crate) const fn new() -> Self {
        Self {
            for_child: [const { AtomicI32::new(-1) }; 2],
            mine: [const { AtomicI32::new(-1) }; 2],
            process: AtomicU64::new(0),
        }
    }

    /// Before a fork, on the forking thread: opens a pair of descriptions of `pool` for the new
    /// process. One the system refuses is not opened; the new process opens its own then, or
    /// goes without.
    pub(crate) fn open_for_child(&self, pool: BorrowedFd<'_>) {
        for place in &self.for_child {
            let fd = crate::owner::own_description(pool).map_or(-1, IntoRawFd::into_raw_fd);
            close(place.swap(fd, Ordering::Relaxed));
        }
    }

    /// After a fork, in the parent: closes its copies of the new process's pair.
    pub(crate) fn close_for_child(&self) {
        for place in &self.for_child {
            close(place.swap(-1, Ordering::Relaxed));
        }
    }

    /// After a fork, in the new process, where only the forking thread exists: closes its copies
    /// of its parent's own spares and keeps the pair opened for it. Takes no lock and allocates
    /// nothing.
    pub(crate) fn adopt(&self) {
        for (mine, for_child) in self.mine.iter().zip(&self.for_child) {
            close(mine.swap(for_child.swap(-1, Ordering::Relaxed), Ordering::Relaxed));
        }
        self.process.store(sys::process_token(), Ordering::Relaxed);
    }

    /// This process's spare description of `pool` for `what`, if its parent opened one and it
    /// was not taken yet. A descriptor that no longer names the pool's file (the program closed
    /// it, and the number was given to another file since) is left to whoever has it now.
    pub(crate) fn take(&self, what: Use, pool: BorrowedFd<'_>) -> Option<OwnedFd> {
        if self.process.load(Ordering::Relaxed) != sys::process_token() {
            // Made by a fork that ran no handler: what is here are copies of the parent's
            // spares, which would keep its descriptions, and the locks it may take through them,
            // alive for as long as this process lives.
            for place in &self.mine {
                close(place.swap(-1, Ordering::Relaxed));
            }
            return None;
        }
        let fd = self.mine[what as usize].swap(-1, Ordering::Relaxed);
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is only borrowed here, for the length of the call: it is open, or the
        // call fails.
        let same_file = match (
            rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(fd) }),
            rustix::fs::fstat(pool),
        ) {
            (Ok(spare), Ok(pool)) => spare.st_dev == pool.st_dev && spare.st_ino == pool.st_ino,
            _ => false,
        };
        // SAFETY: the descriptor names the description the fork handler opened for this
        // process, which nothing else in it owns.
        same_file.then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        for place in self.mine.iter().chain(&self.for_child) {
            close(place.swap(-1, Ordering::Relaxed));
        }
    }
}

/// Closes a spare descriptor, if `fd` is one.
fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: spares hold descriptors the fork handler opened, or this process's copies of
        // them, which nothing else owns; each is taken out of its place before it is closed.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
