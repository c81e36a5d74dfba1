//! Descriptions of a pool's file that this process keeps by number, each told from whatever
//! else the number may name later by a tag: its file offset, which belongs to the description,
//! set to a value of its own when it is opened. A program may close such a number, as a daemon
//! closing every descriptor from 3 up does, and get it back for another description (of another
//! file, of the pool's, or another tagged one); the library then neither uses nor closes it as
//! the one it kept. The library moves no other description's offset: only a description of the
//! pool's file that the program read up to exactly a tag, and got that number for, would pass.

use core::sync::atomic::{AtomicI64, Ordering};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::{file_of, File};

/// The first tag: an offset no program seeks its descriptions of a pool's file to, low enough
/// for every file system.
const FIRST_TAG: i64 = 0x4d4c_0000;

/// The next tag this process gives; a forked process goes on from its parent's, so the tagged
/// descriptions it holds at once (its own and those it inherited or opens for its children)
/// never share one.
static NEXT_TAG: AtomicI64 = AtomicI64::new(0);

/// A kept description: its number, or -1 for none, and its tag.
pub(crate) type Tagged = (RawFd, i64);

/// Sets the offset of `fd`'s description to a new tag, and returns the tag.
///
/// # Errors
/// What the system says when the offset cannot be set.
pub(crate) fn tag(fd: BorrowedFd<'_>) -> Result<i64, rustix::io::Errno> {
    let tag = FIRST_TAG + NEXT_TAG.fetch_add(1, Ordering::Relaxed) % (1 << 28);
    let offset = u64::try_from(tag).map_err(|_| rustix::io::Errno::INVAL)?;
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(offset))?;
    Ok(tag)
}

/// Whether `fd` still names the description tagged `tag`: an open descriptor of `file` at that
/// offset.
fn is_tagged((fd, tag): Tagged, file: File) -> bool {
    // SAFETY: `lseek` on any number: one that is not an open descriptor fails with `EBADF`.
    fd >= 0 && unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) } == tag && file_of(fd) == Some(file)
}

/// Takes the description kept as `tagged`, a description of `file`, if its number still names
/// it: the caller then owns the number.
///
/// # Safety
/// `tagged` is a description of `file` this process's library code tagged and kept under that
/// number (or a copy a fork gave it), which it gives up with the call: no other code of the
/// library closes or uses it afterwards.
pub(crate) unsafe fn take(tagged: Tagged, file: File) -> Option<OwnedFd> {
    // SAFETY: the number names a description of `file` at the tag, so the one the caller kept
    // under it (see the module's docs), which it hands over: nothing else owns it.
    is_tagged(tagged, file).then(|| unsafe { OwnedFd::from_raw_fd(tagged.0) })
}
