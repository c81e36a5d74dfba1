//! Which process owns the chunks lent to child pools, and who is dead.
//!
//! A process claims a slot of the pool's owner table before its first chunk, and holds it
//! through a write lock on one byte of the pool's file, taken through an open file description
//! of its own (opened for it by its parent before the fork that made it, see `spares.rs`, or
//! else the file reopened through `/proc/self/fd`). The kernel drops such a lock when the
//! description's last reference goes: its descriptors, and a page of the file the process maps
//! through it ([`open_held`]), which no forked process inherits, so that a process that closes
//! the descriptors is not taken for dead while it runs (the crate docs still tell a program not
//! to: their numbers stay listed here). A process's death drops both, after its
//! memory is gone: a slot marked claimed whose byte nobody locks belongs to a process that can
//! no longer touch the pool, whatever pid namespace it ran in and whatever process has its id
//! now, and its chunks can come back.
//!
//! An open file description's lock (`F_OFD_SETLK`), not a process's (`F_SETLK`): a process's
//! record locks on a file all go when it closes any descriptor of that file, which code that
//! never heard of the pool may do. And not a robust mutex, like the pool's lock: a mutex is held
//! by a thread, and the slot would look dead when the thread that claimed it ended.

use core::sync::atomic::Ordering::{self, Relaxed};
use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use crate::arena::{Arena, Reclaimed};
use crate::blocks::Blocks;
use crate::layout::{OWNER_SLOTS, PAGE};
use crate::spares::{Spares, Use};
use crate::sys;
use crate::tags::{self, Tagged};

/// Where the owner table's lock bytes lie in the pool's file: byte `LOCK_BASE + slot`, far past
/// the mapping, so that a [`ShmLock`](crate::ShmLock) of the user's that locks a range of the
/// pool's own bytes does not meet them.
const LOCK_BASE: i64 = 1 << 62;

/// The descriptions this process holds its slots and its identities in pools through (see
/// `identity.rs`), so that the child of a `fork` can close its copies: a copy would keep its
/// parent's slot and identity looking alive after the parent died, and with them its chunks and
/// any lock it died holding. Every such description is listed: the table grows by a block when
/// it is full, and a description with no room, when there is no memory for a block, is closed
/// and refused. Each is tagged (see `tags.rs`), so that a number the program closed and got
/// back for a file of its own is not closed as the description, here or in a forked process.
static HELD: Blocks<Listed, HELD_BLOCK> = Blocks::new(no_descriptions());

/// Descriptions in a block of [`HELD`]: two per pool (a slot and an identity), for 128 pools.
const HELD_BLOCK: usize = 256;

/// An entry of [`HELD`]: a description's number, or -1 for none, its tag and its file. The
/// number is set first, by the thread that takes the entry; the rest after, before the
/// description is used.
struct Listed {
    fd: AtomicI32,
    tag: AtomicI64,
    device: AtomicU64,
    inode: AtomicU64,
}

impl Listed {
    /// The entry's description, as its number, its tag and its file.
    fn read(&self) -> (Tagged, sys::File) {
        let tagged = (self.fd.load(Ordering::Relaxed), self.tag.load(Ordering::Relaxed));
        (tagged, (self.device.load(Ordering::Relaxed), self.inode.load(Ordering::Relaxed)))
    }
}

/// A block of [`HELD`] that lists nothing.
const fn no_descriptions() -> [Listed; HELD_BLOCK] {
    [const {
        Listed {
            fd: AtomicI32::new(-1),
            tag: AtomicI64::new(0),
            device: AtomicU64::new(0),
            inode: AtomicU64::new(0),
        }
    }; HELD_BLOCK]
}

/// What [`ShmPool::reclaim_dead`](crate::ShmPool::reclaim_dead), or
/// [`ShmPool::reclaim_orphans`](crate::ShmPool::reclaim_orphans), found and gave back.
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
    /// such block has been freed since, by a process that could not give the chunk back then
    /// (with `reclaim_orphans`, every orphan).
    pub chunks: usize,
    /// Bytes of those chunks.
    pub bytes: usize,
}

impl ReclaimReport {
    /// Adds chunks given back, of no process found dead: orphans.
    pub(crate) fn add_orphans(&mut self, reclaimed: Reclaimed) {
        self.chunks += reclaimed.chunks as usize;
        self.bytes += reclaimed.pages as usize * PAGE;
    }

    /// Adds a process found dead, and the chunks of its given back.
    fn add(&mut self, reclaimed: Reclaimed) {
        self.processes += 1;
        self.add_orphans(reclaimed);
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
    /// The description the slot's byte is locked through, and its tag.
    fd: AtomicI32,
    tag: AtomicI64,
    /// The address of the page mapped through it ([`Held::pin`]).
    pin: AtomicUsize,
}

impl Claim {
    pub(crate) const fn new() -> Self {
        Self {
            process: AtomicU64::new(0),
            slot: AtomicU32::new(0),
            fd: AtomicI32::new(-1),
            tag: AtomicI64::new(0),
            pin: AtomicUsize::new(0),
        }
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
        let (fd, file) = (pool.checked_fd().ok()?, pool.file());
        let full = || (0..OWNER_SLOTS as u32).all(|slot| arena.owner_claimed(slot));
        // A full table may hold the slots of the dead; one still full has nothing to claim, and
        // the spare description is kept for when a slot frees.
        if full() {
            reclaim_dead(arena, fd, None);
            if full() {
                return None;
            }
        }
        let held = open_held(fd, file, || spares.take(Use::Claim)).ok()?;
        let Some(slot) = (0..OWNER_SLOTS as u32).find(|&slot| {
            !arena.owner_claimed(slot)
                && set_byte_lock(held.fd, slot_byte(slot), libc::F_WRLCK as _).is_ok()
        }) else {
            held.close();
            return None;
        };
        arena.claim_owner(slot);
        self.slot.store(slot, Ordering::Relaxed);
        self.fd.store(held.fd, Ordering::Relaxed);
        self.tag.store(held.tag, Ordering::Relaxed);
        self.pin.store(held.pin, Ordering::Relaxed);
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
            let pin = self.pin.swap(0, Ordering::Relaxed);
            let (fd, tag) = (self.fd.swap(-1, Ordering::Relaxed), self.tag.load(Ordering::Relaxed));
            Held { fd, tag, pin }.close();
        }
    }

    /// In a process that finds its parent's claim: closes the copy of the parent's description
    /// that a fork without the handler (a raw `fork` or `clone` system call) left it. After a
    /// fork that ran the handler, the handler closed it, and the number may name another
    /// description by now, which its tag tells and which is left alone.
    pub(crate) fn forget_parents(&self) {
        if self.process.swap(0, Ordering::Relaxed) == 0 {
            return;
        }
        // The parent's page was not inherited: its address may be another mapping's here.
        self.pin.store(0, Ordering::Relaxed);
        close_held((self.fd.swap(-1, Ordering::Relaxed), self.tag.load(Ordering::Relaxed)));
    }
}

/// Held while a description is opened and listed in [`HELD`], and by the thread that forks,
/// across the fork (see `fork.rs`): so no child inherits a description that is not listed yet,
/// which the fork handler would not close.
static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`OPENING`]. Nothing panics while it is held, but a poisoned lock guards nothing that
/// could be left half done, so it is taken all the same.
pub(crate) fn lock_opening() -> std::sync::MutexGuard<'static, ()> {
    OPENING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A description [`open_held`] opened, and the page of the pool's file mapped through it.
pub(crate) struct Held {
    /// Its descriptor, listed in [`HELD`], and its tag.
    pub(crate) fd: RawFd,
    pub(crate) tag: i64,
    /// The address of the first page of the pool's file, mapped through the description and
    /// kept from forked processes (`MADV_DONTFORK`): a reference to the description that no
    /// `close` of the program's drops, so that the byte locks taken through it last until the
    /// process dies or gives them up ([`Held::close`]). 0 for none.
    pub(crate) pin: usize,
}

impl Held {
    /// No description: an identity that locks nothing of its own.
    pub(crate) const NONE: Self = Self { fd: -1, tag: 0, pin: 0 };

    /// Drops the description's locks: unmaps its page, and closes and unlists its descriptor.
    pub(crate) fn close(self) {
        unpin(self.pin);
        close_held((self.fd, self.tag));
    }
}

/// An open file description of the pool's file, `file`, private to this process, tagged, listed in
/// [`HELD`] and pinned ([`Held::pin`]): what `spare` gives, a description opened for this process
/// before the fork that made it, with its tag, or else a new one, tagged here. `spare` runs under
/// the same lock as the listing, so that no fork copies its descriptor before it is listed.
///
/// # Errors
/// What the system says when there is no spare and the file cannot be opened again through
/// `/proc`, tagged, or its page mapped; `ENOMEM` when the table is full and there is no memory
/// for a block more, with the description closed (or the spare given up): one a fork could not
/// close in the child must not lock anything.
pub(crate) fn open_held(
    pool: BorrowedFd<'_>,
    file: sys::File,
    spare: impl FnOnce() -> Option<(OwnedFd, i64)>,
) -> Result<Held, rustix::io::Errno> {
    let _opening = lock_opening();
    // Dropping `fd` on an error closes it: it is listed nowhere yet.
    let (fd, tag) = match spare() {
        Some(spare) => spare,
        None => own_tagged_description(pool)?,
    };
    let pin = pin(fd.as_fd())?;
    loop {
        let entry = HELD.entries().find(|entry| {
            let taken = entry.fd.compare_exchange(-1, fd.as_raw_fd(), Relaxed, Relaxed);
            taken.is_ok()
        });
        if let Some(entry) = entry {
            entry.tag.store(tag, Ordering::Relaxed);
            entry.device.store(file.0, Ordering::Relaxed);
            entry.inode.store(file.1, Ordering::Relaxed);
            return Ok(Held { fd: fd.into_raw_fd(), tag, pin });
        }
        if let Err(errno) = HELD.grow(no_descriptions) {
            unpin(pin);
            return Err(errno);
        }
    }
}

/// Maps the first page of the pool's file through the description `fd`, kept from forked
/// processes: see [`Held::pin`]. Returns its address.
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

/// Unmaps a page [`pin`] mapped, at `address`; nothing for 0.
fn unpin(address: usize) {
    if address != 0 {
        // SAFETY: the page was mapped by `pin` in this process (the callers forget the address
        // of a parent's, which a fork did not copy), and nothing refers to it.
        let _ = unsafe { rustix::mm::munmap(core::ptr::without_provenance_mut(address), PAGE) };
    }
}

/// Closes a claim's or an identity's description, kept as `held`, and takes it off [`HELD`],
/// if its number still names it: a program that closed the number and got it back for a file of
/// its own keeps that file.
pub(crate) fn close_held(held: Tagged) {
    if held.0 < 0 {
        return;
    }
    let Some(entry) = HELD.entries().find(|entry| entry.read().0 == held) else { return };
    // SAFETY: the claim or identity kept `held` tagged and listed, and hands it over: the fork
    // handler, the only other code that closes such descriptions, does so in a child, whose copy
    // of the claim or identity never gets here (see their `forget_parents`).
    let Some(mut description) = (unsafe { tags::take(held, entry.read().1) }) else {
        entry.fd.store(-1, Ordering::Relaxed);
        return;
    };
    // The description goes first, at once: its number is pointed at `/dev/null`, so that a fork
    // before the number is off the table copies a description that locks nothing (which the
    // forked process keeps: it is no longer tagged). No lock is taken: a pool may be dropped
    // anywhere, fork handlers of the program's included.
    if let Ok(null) = rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::io::dup3(&null, &mut description, rustix::io::DupFlags::CLOEXEC);
    }
    entry.fd.store(-1, Ordering::Relaxed);
    drop(description);
}

/// Closes this process's copies of the descriptions its parent held slots and identities
/// through, where their numbers still name them. Run in the child of a fork, where only the
/// forking thread exists: it takes no lock and only closes descriptors.
pub(crate) fn forget_all_in_child() {
    for entry in HELD.entries() {
        let (held, file) = entry.read();
        if held.0 >= 0 {
            entry.fd.store(-1, Ordering::Relaxed);
            // SAFETY: the entry listed a description this module tagged, inherited by this
            // process, whose claim or identity forgets it (their `forget_parents`).
            drop(unsafe { tags::take(held, file) });
        }
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
    report.add_orphans(arena.release_idle_orphans());
    report
}

/// A new open file description of the pool's file, private to this process, tagged (see
/// `tags.rs`), and its tag.
pub(crate) fn own_tagged_description(
    pool: BorrowedFd<'_>,
) -> Result<(OwnedFd, i64), rustix::io::Errno> {
    let fd = own_description(pool)?;
    let tag = tags::tag(fd.as_fd())?;
    Ok((fd, tag))
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
    fd: RawFd,
    byte: i64,
    kind: libc::c_short,
) -> Result<(), rustix::io::Errno> {
    let lock = byte_lock(byte, kind);
    // SAFETY: the caller's descriptor is open, and `lock` is a valid `flock` that lives across
    // the call; the call only reads it.
    if unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &lock) } == 0 {
        Ok(())
    } else {
        let error = std::io::Error::last_os_error();
        Err(rustix::io::Errno::from_io_error(&error).unwrap_or(rustix::io::Errno::IO))
    }
}
