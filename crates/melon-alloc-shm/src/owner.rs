//! Which process owns the chunks lent to child pools, and who is dead.
//!
//! A process claims a slot of the pool's owner table before its first chunk, and holds it
//! through a write lock on one byte of the pool's file, taken through an open file description
//! of its own (opened for it by its parent before the fork that made it, see `spares.rs`, or
//! else the file reopened through `/proc/self/fd`). The kernel drops such a lock when the
//! description's last reference goes. The process maps a page of the file through the
//! description, which no forked process inherits, and closes its descriptor at once
//! ([`open_pinned`]): the page is the description's only reference, which no `close` of the
//! program's drops, and the pool keeps no descriptor number that the program could close and
//! reuse. A process's death unmaps the page after its memory is gone: a slot marked claimed
//! whose byte nobody locks belongs to a process that can no longer touch the pool, whatever pid
//! namespace it ran in and whatever process has its id now, and its chunks can come back.
//!
//! An open file description's lock (`F_OFD_SETLK`), not a process's (`F_SETLK`): a process's
//! record locks on a file all go when it closes any descriptor of that file, which code that
//! never heard of the pool may do. And not a robust mutex, like the pool's lock: a mutex is held
//! by a thread, and the slot would look dead when the thread that claimed it ended.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::arena::{Arena, Reclaimed};
use crate::layout::{OWNER_SLOTS, PAGE};
use crate::spares::{Spares, Use};
use crate::sys;

/// Where the owner table's lock bytes lie in the pool's file: byte `LOCK_BASE + slot`, far past
/// the mapping, so that a [`ShmLock`](crate::ShmLock) of the user's that locks a range of the
/// pool's own bytes does not meet them.
const LOCK_BASE: i64 = 1 << 62;

/// What [`ShmPool::reclaim_dead`](crate::ShmPool::reclaim_dead) found and gave back.
///
/// # Examples
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// let report = shm.reclaim_dead()?;
/// assert_eq!(report.processes, 0, "nobody has died");
/// assert_eq!(report.bytes, 0);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReclaimReport {
    /// Processes found dead with chunks, or a slot, still theirs.
    pub processes: usize,
    /// Chunks taken back: those of the dead processes' child pools, but for any that a block
    /// handed off from it ([`ShmPool::hand_off`](crate::ShmPool::hand_off)) still holds, which
    /// waits as an orphan until that block is freed; and orphans, of any process, whose last
    /// such block has been freed since, by a process that could not give the chunk back then.
    pub chunks: usize,
    /// Bytes of those chunks.
    pub bytes: usize,
}

impl ReclaimReport {
    fn add(&mut self, reclaimed: Reclaimed) {
        self.processes += 1;
        self.chunks += reclaimed.chunks as usize;
        self.bytes += reclaimed.pages as usize * PAGE;
    }
}

/// This process's slot in one pool's owner table. Taken and given up while the pool's lock is
/// held, forgotten by a process that finds its parent's copy; atomics only so that the handle
/// can be shared between threads.
pub(crate) struct Claim {
    /// [`sys::process_token`] of the process that claimed the slot, or 0: in the child of a
    /// fork, the copy names the parent, and the child claims a slot of its own.
    process: AtomicU64,
    slot: AtomicU32,
    /// The address of the page that keeps the description the slot's byte is locked through
    /// ([`open_pinned`]).
    pin: AtomicUsize,
}

impl Claim {
    pub(crate) const fn new() -> Self {
        Self { process: AtomicU64::new(0), slot: AtomicU32::new(0), pin: AtomicUsize::new(0) }
    }

    /// This process's slot, if it has claimed one.
    #[inline]
    pub(crate) fn current(&self) -> Option<u32> {
        (self.process.load(Ordering::Relaxed) == sys::process_token())
            .then(|| self.slot.load(Ordering::Relaxed))
    }

    /// This process's slot, claimed now if it has none: `None` when the table is full or the
    /// system refuses a description or its lock. The caller holds the pool's lock.
    pub(crate) fn take(&self, arena: &Arena, pool: &sys::Mapping, spares: &Spares) -> Option<u32> {
        if let Some(slot) = self.current() {
            return Some(slot);
        }
        self.forget_parents();
        // A slot's byte locked in another file would say the process is dead (see `UNUSABLE`
        // in `identity.rs`).
        let pool = pool.checked_fd().ok()?;
        let full = || (0..OWNER_SLOTS as u32).all(|slot| arena.owner_claimed(slot));
        // A full table may hold the slots of the dead; one still full has nothing to claim, and
        // the spare description is kept for when a slot frees.
        if full() {
            reclaim_dead(arena, pool, None);
            if full() {
                return None;
            }
        }
        let (slot, pin) = open_pinned(pool, Use::Claim, spares, |fd| {
            (0..OWNER_SLOTS as u32)
                .find(|&slot| {
                    !arena.owner_claimed(slot)
                        && set_byte_lock(fd, slot_byte(slot), libc::F_WRLCK as _).is_ok()
                })
                .ok_or(rustix::io::Errno::AGAIN)
        })
        .ok()?;
        arena.claim_owner(slot);
        self.slot.store(slot, Ordering::Relaxed);
        self.pin.store(pin, Ordering::Relaxed);
        self.process.store(sys::process_token(), Ordering::Relaxed);
        Some(slot)
    }

    /// Gives this process's slot up, with whatever chunks are still on it, and drops the lock
    /// on its byte. The caller holds the pool's lock.
    pub(crate) fn give_up(&self, arena: &Arena) {
        if let Some(slot) = self.current() {
            arena.release_owner(slot);
            self.close();
        }
    }

    /// Drops the lock on this process's slot without touching the pool, when its lock cannot be
    /// taken: the slot then looks dead, and the next process to reclaim takes its chunks back.
    pub(crate) fn close(&self) {
        if self.current().is_some() {
            self.process.store(0, Ordering::Relaxed);
            unpin(self.pin.swap(0, Ordering::Relaxed));
        }
    }

    /// In a process that finds its parent's claim: forgets it. The parent's page was not
    /// inherited, so its address may be another mapping's here.
    pub(crate) fn forget_parents(&self) {
        if self.process.swap(0, Ordering::Relaxed) != 0 {
            self.pin.store(0, Ordering::Relaxed);
        }
    }
}

/// Held while a description is opened, locked through and closed, and by the thread that forks,
/// across the fork (see `fork.rs`): so no child inherits a descriptor of a description that
/// holds this process's locks.
static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`OPENING`]. Nothing panics while it is held, but a poisoned lock guards nothing that
/// could be left half done, so it is taken all the same.
pub(crate) fn lock_opening() -> std::sync::MutexGuard<'static, ()> {
    OPENING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens a description of the pool's file private to this process, takes its byte locks
/// through it with `lock`, maps the first page of the file through it and closes its
/// descriptor: what `lock` returned, and the page's address. The description is the spare its
/// parent opened for this `what` before the fork that made it, or else a new one.
///
/// The page, kept from forked processes (`MADV_DONTFORK`), is then the description's only
/// reference: the locks last until [`unpin`] or the process's death, whatever descriptors the
/// program closes, and the pool keeps no descriptor number of the program's table. All of it
/// happens under [`OPENING`], which the fork handler holds across a fork, so that no forked
/// process inherits the descriptor while it is open.
///
/// # Errors
/// What `lock` returned; what the system says when there is no spare and the file cannot be
/// opened again through `/proc`, or its page cannot be mapped. Nothing stays open or mapped.
pub(crate) fn open_pinned<T>(
    pool: BorrowedFd<'_>,
    what: Use,
    spares: &Spares,
    lock: impl FnOnce(BorrowedFd<'_>) -> Result<T, rustix::io::Errno>,
) -> Result<(T, usize), rustix::io::Errno> {
    let _opening = lock_opening();
    let fd = match spares.take(what) {
        Some(spare) => spare,
        None => own_description(pool)?,
    };
    let locked = lock(fd.as_fd())?;
    // Dropping `fd` closes it, and with it the locks, if the page cannot be mapped.
    let pin = pin(fd.as_fd())?;
    drop(fd);
    Ok((locked, pin))
}

/// Maps the first page of the pool's file through the description `fd`, kept from forked
/// processes: see [`open_pinned`]. Returns its address.
fn pin(fd: BorrowedFd<'_>) -> Result<usize, rustix::io::Errno> {
    use rustix::mm::{Advice, MapFlags, ProtFlags};
    // SAFETY: a new mapping, at an address the kernel picks, of a page the pool's header lies
    // in (the file is never shorter); nothing reads or writes through it.
    let page = unsafe {
        rustix::mm::mmap(core::ptr::null_mut(), PAGE, ProtFlags::READ, MapFlags::SHARED, fd, 0)
    }?;
    // SAFETY: the range is the mapping just made, and only its inheritance changes.
    if let Err(errno) = unsafe { rustix::mm::madvise(page, PAGE, Advice::LinuxDontFork) } {
        unpin(page.addr());
        return Err(errno);
    }
    Ok(page.addr())
}

/// Unmaps a page [`pin`] mapped, at `address`, which drops the locks taken through its
/// description; nothing for 0.
pub(crate) fn unpin(address: usize) {
    if address != 0 {
        // SAFETY: the page was mapped by `pin` in this process (the callers forget the address
        // of a parent's, which a fork did not copy), and nothing refers to it.
        let _ = unsafe { rustix::mm::munmap(core::ptr::without_provenance_mut(address), PAGE) };
    }
}

/// Gives back the chunks of every process that holds a slot but has died, except `mine`. The
/// caller holds the pool's lock.
pub(crate) fn reclaim_dead(
    arena: &Arena,
    pool: BorrowedFd<'_>,
    mine: Option<u32>,
) -> ReclaimReport {
    let mut report = ReclaimReport::default();
    for slot in 0..OWNER_SLOTS as u32 {
        if Some(slot) != mine
            && arena.owner_claimed(slot)
            && !crate::identity::byte_is_locked(pool, slot_byte(slot))
        {
            let reclaimed = arena.release_owner(slot);
            let pages = reclaimed.pages + reclaimed.orphaned_pages;
            arena.tallies().count_reclaim(pages * PAGE as u64);
            report.add(reclaimed);
        }
    }
    // Orphans whose last block was freed by a process that could not take the lock, or died.
    let idle = arena.release_idle_orphans();
    report.chunks += idle.chunks as usize;
    report.bytes += idle.pages as usize * PAGE;
    report
}

/// A new open file description of the pool's file, private to this process (but for a child
/// forked without the handler).
pub(crate) fn own_description(pool: BorrowedFd<'_>) -> Result<OwnedFd, rustix::io::Errno> {
    // Written on the stack: a child pool's first chunk must not need memory of the process's
    // heap, which may have run out (the C API then returns NULL rather than aborting).
    const PREFIX: &[u8] = b"/proc/self/fd/";
    let mut path = [0u8; PREFIX.len() + 11];
    path[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut fd = u32::try_from(pool.as_raw_fd()).map_err(|_| rustix::io::Errno::BADF)?;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (fd % 10) as u8;
        count += 1;
        fd /= 10;
        if fd == 0 {
            break;
        }
    }
    for (place, digit) in path[PREFIX.len()..].iter_mut().zip(digits[..count].iter().rev()) {
        *place = *digit;
    }
    // The byte after the digits is still 0: the path's end.
    let path =
        core::ffi::CStr::from_bytes_until_nul(&path).map_err(|_| rustix::io::Errno::INVAL)?;
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// Slot `slot`'s byte of the pool's file.
fn slot_byte(slot: u32) -> i64 {
    LOCK_BASE + i64::from(slot)
}

/// The lock request for the pool file's byte `byte`.
pub(crate) fn byte_lock(byte: i64, kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is plain integers, for which all zeroes is a valid value (and `l_pid` must
    // be 0 for a description's lock).
    let mut lock: libc::flock = unsafe { core::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte;
    lock.l_len = 1;
    lock
}

/// Takes (or drops, with `F_UNLCK`) the lock on the pool file's byte `byte` through the
/// description `fd`, without waiting.
///
/// # Errors
/// `EAGAIN` or `EACCES` when another description holds a conflicting lock; what else the
/// system says.
pub(crate) fn set_byte_lock(
    fd: BorrowedFd<'_>,
    byte: i64,
    kind: libc::c_short,
) -> Result<(), rustix::io::Errno> {
    let lock = byte_lock(byte, kind);
    // SAFETY: the caller's descriptor is open, and `lock` is a valid `flock` that lives across
    // the call; the call only reads it.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
        Ok(())
    } else {
        let error = std::io::Error::last_os_error();
        Err(rustix::io::Errno::from_io_error(&error).unwrap_or(rustix::io::Errno::IO))
    }
}
