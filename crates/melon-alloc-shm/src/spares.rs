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
//! Each spare is tagged (see `tags.rs`): a number the program closed and got back for another
//! description is neither taken nor closed as that spare.

use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use crate::sys::{self, file_of, File};
use crate::tags::{self, Tagged};

/// What a spare description is for.
#[derive(Clone, Copy)]
pub(crate) enum Use {
    /// The process's identity, which the built-in lock's word names.
    Identity = 0,
    /// The process's slot in the owner table.
    Claim = 1,
}

/// A spare's place: its descriptor, or -1, and the tag of its description.
struct Spare {
    fd: AtomicI32,
    tag: AtomicI64,
}

impl Spare {
    const fn new() -> Self {
        Self { fd: AtomicI32::new(-1), tag: AtomicI64::new(0) }
    }

    /// Empties the place, returning the descriptor it held (-1 if none) and its tag.
    fn take(&self) -> Tagged {
        (self.fd.swap(-1, Ordering::Relaxed), self.tag.load(Ordering::Relaxed))
    }

    /// Fills the place, closing what it held, a spare of `file`.
    fn put(&self, (fd, tag): Tagged, file: File) {
        let old = self.take();
        self.tag.store(tag, Ordering::Relaxed);
        self.fd.store(fd, Ordering::Relaxed);
        close(old, file);
    }
}

/// One pool's spare descriptions in this process. Changed under `owner::lock_opening`, which
/// the fork handler holds across the fork, by the new process's one thread after it, or by the
/// pool's going (`Drop`), which waits for the pin under which the fork handler uses them. A pool
/// that goes while a fork is between its handlers leaves the new process copies of its spares
/// it cannot reach: descriptions that lock nothing, closed when it ends.
pub(crate) struct Spares {
    /// Opened by the fork handler for the process being forked, by [`Use`]; empty but between
    /// the handler's steps.
    for_child: [Spare; 2],
    /// Opened for this process by its parent's fork handler, by [`Use`]; empty once taken.
    mine: [Spare; 2],
    /// [`sys::process_token`] of the process `mine` was opened for: a process made by a fork
    /// that ran no handler finds its parent's, which are not its own.
    process: AtomicU64,
    /// The pool's file, whose descriptions the spares are.
    device: AtomicU64,
    inode: AtomicU64,
}

impl Spares {
    pub(crate) const fn new() -> Self {
        Self {
            for_child: [const { Spare::new() }; 2],
            mine: [const { Spare::new() }; 2],
            process: AtomicU64::new(0),
            device: AtomicU64::new(0),
            inode: AtomicU64::new(0),
        }
    }

    /// The pool's file, as the last fork handler found it.
    fn file(&self) -> File {
        (self.device.load(Ordering::Relaxed), self.inode.load(Ordering::Relaxed))
    }

    /// Before a fork, on the forking thread: opens a pair of descriptions of `pool` for the new
    /// process. One the system refuses is not opened; the new process opens its own then, or
    /// goes without.
    pub(crate) fn open_for_child(&self, pool: BorrowedFd<'_>) {
        let Some(file) = file_of(pool.as_raw_fd()) else { return };
        self.device.store(file.0, Ordering::Relaxed);
        self.inode.store(file.1, Ordering::Relaxed);
        for place in &self.for_child {
            place.put(open_tagged(pool).unwrap_or((-1, 0)), file);
        }
    }

    /// After a fork, in the parent: closes its copies of the new process's pair.
    pub(crate) fn close_for_child(&self) {
        for place in &self.for_child {
            close(place.take(), self.file());
        }
    }

    /// After a fork, in the new process, where only the forking thread exists: closes its copies
    /// of its parent's own spares and keeps the pair opened for it. Takes no lock and allocates
    /// nothing.
    pub(crate) fn adopt(&self) {
        for (mine, for_child) in self.mine.iter().zip(&self.for_child) {
            mine.put(for_child.take(), self.file());
        }
        self.process.store(sys::process_token(), Ordering::Relaxed);
    }

    /// This process's spare description for `what`, if its parent opened one and it was not
    /// taken yet, and its tag, which stays: the parent may not have closed its copy yet, which it
    /// tells by the tag. The caller holds `owner::lock_opening`, so that no fork copies the
    /// descriptor between here and the table of held descriptions it goes into.
    pub(crate) fn take(&self, what: Use) -> Option<(OwnedFd, i64)> {
        if self.process.load(Ordering::Relaxed) != sys::process_token() {
            // Made by a fork that ran no handler: what is here are copies of the parent's
            // spares, which would keep its descriptions, and the locks it may take through them,
            // alive for as long as this process lives.
            for place in &self.mine {
                close(place.take(), self.file());
            }
            return None;
        }
        let spare = self.mine[what as usize].take();
        // SAFETY: the spare the fork handler opened and tagged for this process, taken out of its
        // place, which nothing else owns.
        unsafe { tags::take(spare, self.file()) }.map(|fd| (fd, spare.1))
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let file = self.file();
        for place in self.mine.iter().chain(&self.for_child) {
            close(place.take(), file);
        }
    }
}

/// A new description of `pool`'s file, tagged.
fn open_tagged(pool: BorrowedFd<'_>) -> Option<Tagged> {
    let (fd, tag) = crate::owner::own_tagged_description(pool).ok()?;
    Some((fd.into_raw_fd(), tag))
}

/// Closes a spare of `file`, which the fork handler opened for this process or whose copy this
/// process inherited, taken out of its place, if its number still names it.
fn close(spare: Tagged, file: File) {
    // SAFETY: every caller, all in this module, passes a spare it took out of its place (a
    // description the fork handler tagged, or a copy a fork gave this process), which nothing
    // else owns.
    drop(unsafe { tags::take(spare, file) });
}
