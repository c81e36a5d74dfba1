//! Descriptions of a pool's file that a process opens before it forks, for the new process to
//! make its identity and claim its owner slot through (see `identity.rs` and `owner.rs`).
//!
//! A process makes both through a description of its own, opened through `/proc/self/fd` the
//! first time it needs one. A worker of a pre-fork server often cannot by then: it dropped its
//! privileges after the fork, and a named pool's file is its creator's alone. So the fork handler
//! opens a pair for each mapped pool in the parent, which still has the right; the parent closes
//! its copies after the fork, and the new process keeps them until it uses them or drops the
//! pool.
//!
//! Each spare's file offset, which belongs to the description, is set to [`TAG`]: a descriptor
//! number the program closed and got back for a file of its own (or for another description of
//! the pool's file) is not taken, nor closed, for a spare.

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

/// The file offset of every spare: bytes no pool reaches, and that nothing else seeks to.
const TAG: i64 = 0x6d6c_6e5f_7370_6172;

/// One pool's spare descriptions in this process. Changed only under `owner::lock_opening`,
/// which the fork handler holds across the fork, or by the new process's one thread after it.
pub(crate) struct Spares {
    /// Opened by the fork handler for the process being forked, by [`Use`]; -1 but between the
    /// handler's steps.
    for_child: [AtomicI32; 2],
    /// [`sys::process_token`] of the process that opened `for_child`: a process made meanwhile
    /// by a fork that ran no handler finds copies of them, which are not its own.
    for_child_opener: AtomicU64,
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
            for_child_opener: AtomicU64::new(0),
            mine: [const { AtomicI32::new(-1) }; 2],
            process: AtomicU64::new(0),
        }
    }

    /// Before a fork, on the forking thread: opens a pair of descriptions of `pool` for the new
    /// process. One the system refuses is not opened; the new process opens its own then, or
    /// goes without.
    pub(crate) fn open_for_child(&self, pool: BorrowedFd<'_>) {
        self.for_child_opener.store(sys::process_token(), Ordering::Relaxed);
        for place in &self.for_child {
            let fd = crate::owner::own_description(pool)
                .ok()
                .and_then(|fd| {
                    rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(TAG as u64))
                        .is_ok()
                        .then_some(fd)
                })
                .map_or(-1, IntoRawFd::into_raw_fd);
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

    /// This process's spare description for `what`, if its parent opened one and it was not
    /// taken yet. The caller holds `owner::lock_opening`, so that no fork copies the descriptor
    /// between here and the table of held descriptions it goes into.
    pub(crate) fn take(&self, what: Use) -> Option<OwnedFd> {
        let token = sys::process_token();
        if self.for_child_opener.load(Ordering::Relaxed) != token {
            // Copies of a pair the parent opened for a sibling while this process was made by a
            // fork that ran no handler: they would keep the sibling looking alive.
            for place in &self.for_child {
                close(place.swap(-1, Ordering::Relaxed));
            }
        }
        if self.process.load(Ordering::Relaxed) != token {
            // Made by a fork that ran no handler: what is here are copies of the parent's
            // spares, which would keep its descriptions, and the locks it may take through them,
            // alive for as long as this process lives.
            for place in &self.mine {
                close(place.swap(-1, Ordering::Relaxed));
            }
            return None;
        }
        let fd = self.mine[what as usize].swap(-1, Ordering::Relaxed);
        // SAFETY: a tagged descriptor is the spare the fork handler opened for this process,
        // which nothing else in it owns.
        is_spare(fd).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        for place in self.mine.iter().chain(&self.for_child) {
            close(place.swap(-1, Ordering::Relaxed));
        }
    }
}

/// Whether `fd` is an open descriptor whose description has the spares' offset.
fn is_spare(fd: RawFd) -> bool {
    // SAFETY: `lseek` on any number: one that is not an open descriptor fails with `EBADF`.
    fd >= 0 && unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) } == TAG
}

/// Closes a spare descriptor, if `fd` still is one.
fn close(fd: RawFd) {
    if is_spare(fd) {
        // SAFETY: `fd` is a spare the fork handler opened, or this process's copy of one, taken
        // out of its place, which nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
