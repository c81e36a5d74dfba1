//! Every call into the operating system that the shared pool makes: the mapping, the memfd or
//! named file, descriptors passed over sockets, the fork handler, and process identity.
//! Nothing else in the crate touches these primitives.

use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use rustix::fs::{AtFlags, FallocateFlags, FileType, MemfdFlags, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Alignment of every mapping: a block of the pool's size classes, and the chunks it lends to
/// child pools, are aligned relative to the start of the mapping, so the start must be aligned to
/// the largest of those.
pub(crate) const MAP_ALIGN: usize = 2 << 20;

/// A pool's memfd and its mapping: address space reserved for the pool's largest capacity,
/// aligned to [`MAP_ALIGN`], over whose start the file's first bytes are mapped shared. The rest
/// of the reservation has no access and no memory behind it until the pool grows into it, so
/// that every offset keeps its address for the mapping's life. Unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    /// Bytes of address space reserved from `base`.
    reserved: usize,
    /// Bytes of the file mapped from `base`: only ever grows.
    mapped: AtomicUsize,
    /// [`process_token`] of the process whose thread is mapping more, or 0: a spin lock that a
    /// forked child, in which the parent's thread does not exist, takes over (see
    /// [`Mapping::map_to`]).
    mapper: AtomicU64,
    /// Set when a mapping over the reservation failed, which may have given part of the
    /// reservation back to the system (as kernels before 6.12 may): nothing more is mapped over
    /// it, and the drop unmaps only what is mapped.
    broken: AtomicBool,
    fd: OwnedFd,
    /// The file `fd` named when it was mapped.
    file: File,
}

// SAFETY: the mapping is plain shared memory; which thread unmaps it does not matter.
unsafe impl Send for Mapping {}
// SAFETY: the mapping's bounds only grow, through atomics and under `mapper`; access to its
// contents is synchronized by the pool's lock.
unsafe impl Sync for Mapping {}

/// The file a new pool is made in. The pool needs only that the file starts empty and takes
/// `fallocate`: it uses no memfd seals and no memfd flag but close-on-exec, so a file on tmpfs
/// serves as well as a memfd. (A file on a disk file system serves too, but the kernel writes
/// the pool's pages back to the disk.)
pub(crate) enum NewFile<'a> {
    /// A new memfd with this name, which shows in `/proc/*/maps`.
    Memfd(&'a str),
    /// A file this process has just created, empty and open for reading and writing.
    Created(OwnedFd),
}

impl Mapping {
    /// Makes the file of a pool of at most `reserve` bytes, reserves its memory over each of
    /// `ranges`, and maps its first `len` bytes. `ENOMEM`, before anything is reserved, when
    /// the ranges together do not fit in the memory the system has to spare (see `headroom.rs`).
    pub(crate) fn create(
        file: NewFile<'_>,
        reserve: usize,
        ranges: &[core::ops::Range<usize>],
        len: usize,
    ) -> Result<Self, Errno> {
        let fd = match file {
            NewFile::Memfd(name) => rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?,
            NewFile::Created(fd) => fd,
        };
        let bytes = ranges.iter().map(|range| range.len() as u64).sum();
        if !crate::headroom::has_room(fd.as_fd(), bytes) {
            return Err(Errno::NOMEM);
        }
        for range in ranges {
            allocate(fd.as_fd(), range.clone())?;
        }
        Self::map(fd, reserve, len)
    }

    /// Maps the first `len` bytes of an existing pool's descriptor, in a reservation of
    /// `reserve` bytes.
    pub(crate) fn open(fd: OwnedFd, reserve: usize, len: usize) -> Result<Self, Errno> {
        Self::map(fd, reserve, len)
    }

    /// The size of the file behind a descriptor.
    pub(crate) fn file_len(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
        Ok(rustix::fs::fstat(fd)?.st_size as u64)
    }

    /// Reads the file's first bytes into `buf`; fewer than asked at the file's end.
    pub(crate) fn read_start(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
        rustix::io::pread(fd, buf, 0)
    }

    fn map(fd: OwnedFd, reserve: usize, len: usize) -> Result<Self, Errno> {
        // Before the reservation, which only the value made below gives back.
        let file = file_of(fd.as_raw_fd()).ok_or(Errno::BADF)?;
        let len = len.min(reserve);
        let padded = reserve.checked_add(MAP_ALIGN).ok_or(Errno::NOMEM)?;
        // SAFETY: a fresh private reservation that nothing else refers to; it only claims
        // address space, which the shared mapping then replaces in part.
        let area = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                padded,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        let skip = area.cast::<u8>().align_offset(MAP_ALIGN);
        // SAFETY: `skip < MAP_ALIGN`, so `area + skip + reserve` stays inside the area.
        let base = unsafe { area.cast::<u8>().add(skip) };
        // SAFETY: the parts of the area outside `[base, base + reserve)` belong to this function
        // and are not used.
        unsafe {
            if skip > 0 {
                let _ = rustix::mm::munmap(area, skip);
            }
            let tail = padded - skip - reserve;
            if tail > 0 {
                let _ = rustix::mm::munmap(base.add(reserve).cast(), tail);
            }
        }
        let Some(base) = NonNull::new(base) else {
            // SAFETY: the reservation is this function's, and unused.
            let _ = unsafe { rustix::mm::munmap(area, padded) };
            return Err(Errno::NOMEM);
        };
        let mapping = Self {
            base,
            reserved: reserve,
            mapped: AtomicUsize::new(0),
            mapper: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            file,
            fd,
        };
        // Dropped on failure, which gives the reservation back.
        if mapping.map_to(len)? < len {
            return Err(Errno::INVAL);
        }
        Ok(mapping)
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Bytes of address space the mapping reserves: the pool's largest capacity.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Bytes of the file mapped in this process.
    #[inline]
    pub(crate) fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Acquire)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The file the pool was mapped from, which [`checked_fd`](Mapping::checked_fd) checks its
    /// descriptor against.
    pub(crate) fn file(&self) -> File {
        self.file
    }

    /// Whether the descriptor still names the file it was mapped from. A process may close its
    /// descriptors (a forked daemon closing every one from 3 up, say), and the number then names
    /// nothing, or whatever file the process opened next: growing or mapping through it, or
    /// locking bytes of it for the pool's locks, would reach that file instead.
    fn names_its_file(&self) -> bool {
        file_of(self.fd.as_raw_fd()) == Some(self.file)
    }

    /// `EBADF` when the descriptor no longer names the pool's file ([`names_its_file`]).
    ///
    /// [`names_its_file`]: Mapping::names_its_file
    pub(crate) fn checked_fd(&self) -> Result<BorrowedFd<'_>, Errno> {
        if self.names_its_file() {
            Ok(self.fd())
        } else {
            Err(Errno::BADF)
        }
    }

    /// The size of the pool's file: `EBADF` when the descriptor no longer names it.
    pub(crate) fn len(&self) -> Result<u64, Errno> {
        Self::file_len(self.checked_fd()?)
    }

    /// Reserves the file's memory over `range`, growing the file to its end if it is shorter:
    /// `EBADF` when the descriptor no longer names it.
    pub(crate) fn allocate(&self, range: core::ops::Range<usize>) -> Result<(), Errno> {
        allocate(self.checked_fd()?, range)
    }

    /// Whether `bytes` more of the file fit in the memory the system has to spare (see
    /// `headroom.rs`), for a caller about to reserve several ranges that must all fit.
    pub(crate) fn has_room(&self, bytes: u64) -> bool {
        crate::headroom::has_room(self.fd(), bytes)
    }

    /// Maps the file up to `len` bytes, if this process has not yet, but no further than the
    /// reservation and the file's end (a header that a dying or buggy process left saying more
    /// must not lead to a mapping whose touch raises SIGBUS). Returns the bytes mapped now,
    /// which are fewer than `len` only when the file is shorter.
    ///
    /// Threads of the process may call it at once: one maps while the others wait.
    #[inline]
    pub(crate) fn map_to(&self, len: usize) -> Result<usize, Errno> {
        let mapped = self.mapped();
        if mapped >= len.min(self.reserved) {
            return Ok(mapped);
        }
        self.map_more(len.min(self.reserved))
    }

    #[cold]
    fn map_more(&self, len: usize) -> Result<usize, Errno> {
        let _mapper = Mapper::take(&self.mapper);
        let mapped = self.mapped();
        if mapped >= len {
            return Ok(mapped);
        }
        if self.broken.load(Ordering::Relaxed) {
            return Err(Errno::NOMEM);
        }
        let file = usize::try_from(self.len()?).unwrap_or(usize::MAX);
        let end = len.min(file / PAGE_SIZE * PAGE_SIZE);
        if end <= mapped {
            return Ok(mapped);
        }
        // SAFETY: `mapped < end <= reserved`, so the range lies in the reservation that this
        // value owns; no one refers to its unmapped part, which this call replaces.
        let at = unsafe { self.base.as_ptr().add(mapped) };
        // SAFETY: as above: the fixed range holds nothing but this value's reservation.
        let done = unsafe {
            rustix::mm::mmap(
                at.cast(),
                end - mapped,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &self.fd,
                mapped as u64,
            )
        };
        if let Err(errno) = done {
            // SAFETY: the range is this value's: reserving it again maps over nothing (no
            // replacement), and only fills a hole the failure may have left.
            let again = unsafe {
                rustix::mm::mmap_anonymous(
                    at.cast(),
                    end - mapped,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
                )
            };
            // Taken again, the range is the reservation as before; otherwise it may or may not
            // be, and nothing is mapped over it any more.
            if again.is_err() {
                self.broken.store(true, Ordering::Relaxed);
            }
            return Err(errno);
        }
        self.mapped.store(end, Ordering::Release);
        Ok(end)
    }
}

/// A file's device and inode numbers.
pub(crate) type File = (u64, u64);

/// The file behind descriptor number `fd`, if it is an open descriptor: a number, not a
/// borrowed descriptor, since the numbers asked about may have been closed by the program.
pub(crate) fn file_of(fd: RawFd) -> Option<File> {
    // SAFETY: `fstat` on any number writes into a local `stat`, or fails with `EBADF`.
    let mut stat: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return None;
    }
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

/// Reserves the memory of `range` of the file behind `fd`: a later lack of memory is then an
/// error here instead of a SIGBUS at some first touch. The caller first asks whether the
/// system has the memory to spare ([`Mapping::has_room`]): for a file in memory the kernel
/// itself refuses nothing, and hands it page after page until its out-of-memory killer ends
/// processes.
fn allocate(fd: BorrowedFd<'_>, range: core::ops::Range<usize>) -> Result<(), Errno> {
    if range.is_empty() {
        return Ok(());
    }
    rustix::fs::fallocate(fd, FallocateFlags::empty(), range.start as u64, range.len() as u64)
}

/// `make`'s value in a `Box`, or `ENOMEM` where `Box::new` would abort: a pool made or
/// attached without memory for its state fails as a mapping does.
pub(crate) fn try_box<T>(make: impl FnOnce() -> T) -> Result<Box<T>, Errno> {
    melon_alloc_heap::plumbing::try_box(make).map_err(|_| Errno::NOMEM)
}

/// Creates a new, empty file at `path` for a pool, open for reading and writing and
/// close-on-exec, which only its owner may open (mode 0600, less the umask). Fails with `EEXIST`
/// when anything has that name, a dangling symbolic link included.
pub(crate) fn create_file(path: &Path) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::RUSR | Mode::WUSR)
}

/// Opens the file at `path` for reading and writing, close-on-exec. A terminal opened this way
/// does not become the process's controlling terminal.
pub(crate) fn open_file(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty())
}

/// Whether `path`, its symbolic links followed, names something other than a regular file: a
/// directory, a socket, a device. False when it names nothing that can be looked up.
pub(crate) fn names_no_regular_file(path: &Path) -> bool {
    rustix::fs::stat(path)
        .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile)
}

/// Fails with `EEXIST` when anything has the name `path` (a dangling symbolic link included),
/// as creating a file there would; a name that cannot be looked up is left for that creation to
/// report.
pub(crate) fn check_vacant(path: &Path) -> Result<(), Errno> {
    match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Err(Errno::EXIST),
        Err(_) => Ok(()),
    }
}

/// Renames the file `from` to `to`, in one step that fails with `EEXIST` when anything has the
/// name `to`: so no process finds a file at `to` before it is whole, and two creators never share
/// one.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> Result<(), Errno> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        // A file system or kernel without such renames can still add a link, which fails the
        // same way when the name is taken; the first name then goes.
        Err(Errno::INVAL | Errno::NOSYS) => {
            rustix::fs::link(from, to)?;
            let _ = rustix::fs::unlink(from);
            Ok(())
        }
        renamed => renamed,
    }
}

/// Removes the name `path` from its directory.
pub(crate) fn remove_file(path: &Path) -> Result<(), Errno> {
    rustix::fs::unlink(path)
}

/// Whether the descriptor is of a regular file, as every pool's file is (a memfd included).
pub(crate) fn is_regular_file(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    let stat = rustix::fs::fstat(fd)?;
    Ok(FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile)
}

/// A random number for a name no other process picks, never 0: see [`random_token`].
pub(crate) fn random_name() -> u64 {
    random_token()
}

/// Sends `data` on a connected socket, with the descriptor `fd` in an `SCM_RIGHTS` message on
/// its first byte. A peer that has closed its end is `EPIPE`, not a `SIGPIPE` that would end
/// this process.
pub(crate) fn send_descriptor(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fd: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // The space was sized for exactly this message.
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Errno::NOBUFS);
    }
    let mut sent = 0;
    while sent < data.len() {
        let iov = [IoSlice::new(&data[sent..])];
        match rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL) {
            // A socket that takes no byte of the message would otherwise be asked forever.
            Ok(0) => return Err(Errno::PIPE),
            Ok(count) => {
                sent += count;
                // The descriptor went with the first byte; the rest of the data goes alone.
                control = SendAncillaryBuffer::default();
            }
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Receives one message of at most `data.len()` bytes from a socket, with the descriptors that
/// come with it made close-on-exec as they arrive. Returns the bytes received (0 when the peer
/// has closed its end) and the first descriptor, if any came; the others are closed, and so
/// are those the kernel had no room for.
pub(crate) fn receive_descriptor(
    socket: BorrowedFd<'_>,
    data: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    // Room for a few descriptors, to be closed here; the kernel closes any beyond the room.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(data)];
    let received = loop {
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => {}
            done => break done?,
        }
    };
    let mut first = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                // Every descriptor but the first is dropped here, which closes it.
                if first.is_none() {
                    first = Some(fd);
                }
            }
        }
    }
    Ok((received.bytes, first))
}

/// The spin lock of [`Mapping::mapper`], held while it lives.
struct Mapper<'a>(&'a AtomicU64);

impl<'a> Mapper<'a> {
    fn take(word: &'a AtomicU64) -> Self {
        let me = process_token();
        loop {
            match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Self(word),
                // A thread of the process this one was forked from held it: no thread here does.
                Err(holder) if holder != me => {
                    if word
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Self(word);
                    }
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }
}

impl Drop for Mapper<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let len = if self.broken.load(Ordering::Relaxed) { self.mapped() } else { self.reserved };
        // SAFETY: the mapping and the reservation are this value's own and nothing refers into
        // them once the pool that owns the value is gone; after a failure, only what is mapped
        // is surely still this value's.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), len) };
    }
}

/// The calling thread's id, as this process's pid namespace numbers it.
pub(crate) fn thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The format of the lock words in a pool, the pool's own and every
/// [`ShmMutex`](crate::ShmMutex)'s, which a pool records so that a build that reads them
/// differently is refused: 2, the identity-naming word with its waiters' bit (1 was the C
/// library's robust mutex, whose size and library family the pool recorded instead).
pub(crate) const LOCK_ABI: u32 = 2 << 16;

/// Stops the process with `message`: for a state the crate cannot go on from.
#[cold]
#[inline(never)]
pub(crate) fn stop(message: &str) -> ! {
    eprintln!("{message}");
    std::process::abort()
}

/// Ends the process at once, as SIGKILL from outside would: the fail points of the crash tests.
#[cfg(melon_failpoints)]
pub(crate) fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

/// Bumped in the child after every `fork`, so that per-thread caches of process and thread ids
/// know to refresh: a forked child inherits its parent's caches but not its ids.
static FORK_GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

extern "C" {
    /// POSIX `pthread_atfork`, from the C library the standard library already links.
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> core::ffi::c_int;
    /// POSIX `pthread_once`; `pthread_once_t` is an `int` in glibc and musl.
    fn pthread_once(
        control: *mut core::ffi::c_int,
        routine: unsafe extern "C" fn(),
    ) -> core::ffi::c_int;
}

unsafe extern "C" fn before_fork() {
    crate::fork::prepare();
}

unsafe extern "C" fn after_fork_in_parent() {
    crate::fork::parent();
}

unsafe extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // Where the kernel wipes no page on fork, the epoch lives here, and the child draws anew:
    // before anything below asks for this process's token, and once (a second registration of
    // the handlers runs this again, and a second draw would leave the first one's users behind).
    if crate::fork::first_in_child() {
        EPOCH_FALLBACK.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    crate::fork::child();
}

/// `PTHREAD_ONCE_INIT`, in memory that `pthread_once` may write from any thread.
struct OnceControl(core::cell::UnsafeCell<core::ffi::c_int>);

// SAFETY: only `pthread_once` touches the value, and it synchronizes its own accesses.
unsafe impl Sync for OnceControl {}

static REGISTER: OnceControl = OnceControl(core::cell::UnsafeCell::new(0));

/// Registers the fork handler, once per process. Unlike `std::sync::Once`, glibc's
/// `pthread_once` does not leave a process forked while another thread was registering waiting
/// forever for that thread, which does not exist there; it runs the registration again instead,
/// and a handler registered twice only bumps the generation twice and abandons copies that are
/// already abandoned.
pub(crate) fn register_fork_handler() {
    unsafe extern "C" fn register() {
        // SAFETY: the handlers cannot unwind, and live as long as the program. Before the fork,
        // on the forking thread, they take the locks that guard the bookkeeping a forked process
        // reads (see `fork.rs`); after it, they release them; in the child, before releasing,
        // they reset the bookkeeping of this process's child pools and close the descriptors
        // its parent held owner slots and identities through, touching only memory of this
        // process and taking no other lock, as a handler run in the child of a fork must.
        unsafe {
            pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child))
        };
    }
    // SAFETY: `REGISTER` is a `pthread_once_t` set to `PTHREAD_ONCE_INIT` (0) and used with
    // `pthread_once` alone; `register` lives as long as the program.
    unsafe { pthread_once(REGISTER.0.get(), register) };
}

/// A word in a page that the kernel zeroes in the child of every fork (`MADV_WIPEONFORK`),
/// however the fork was made: through the C library, or by a raw `fork` or `clone` system call
/// that runs no `pthread_atfork` handler. Non-zero once a thread of this process has drawn it, so
/// a zero says the process is new; the value, drawn at random, tells this process's caches from
/// the parent's that a forked child inherits. Null until the first call of [`epoch`].
static EPOCH: core::sync::atomic::AtomicPtr<core::sync::atomic::AtomicU64> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Where [`EPOCH`] points when the kernel has no wipe-on-fork page to give (before Linux 4.14, or
/// out of memory): a word the fork handler alone can refresh, as before.
static EPOCH_FALLBACK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A number that tells this process from every other process, its parent and children
/// included, whatever pid namespace each is in: drawn at random in each new process (see
/// [`EPOCH`]). Never 0.
#[inline]
pub(crate) fn process_token() -> u64 {
    epoch()
}

/// This process's epoch: one load from a page this process already touched, on the path of
/// every lock, where `getpid()` would be a system call each time.
#[inline]
fn epoch() -> u64 {
    use core::sync::atomic::Ordering;
    let mut word = EPOCH.load(Ordering::Acquire);
    if word.is_null() {
        word = epoch_word();
    }
    // SAFETY: `word` points at `EPOCH_FALLBACK` or into a page mapped by `epoch_word`, never
    // unmapped, and is only accessed atomically.
    let epoch = unsafe { &*word }.load(Ordering::Relaxed);
    if epoch != 0 {
        return epoch;
    }
    // SAFETY: as above.
    draw_epoch(unsafe { &*word })
}

/// Draws the epoch of a new process into `word`, which holds 0: once per process, off the path
/// of every lock.
#[cold]
#[inline(never)]
fn draw_epoch(word: &core::sync::atomic::AtomicU64) -> u64 {
    use core::sync::atomic::Ordering;
    // The first thread to draw in a new process wins; the others take its value.
    match word.compare_exchange(0, random_token(), Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => word.load(Ordering::Relaxed),
        Err(drawn) => drawn,
    }
}

/// Maps the page [`EPOCH`] points into, once per process (a child of a fork keeps the mapping,
/// zeroed).
#[cold]
fn epoch_word() -> *mut core::sync::atomic::AtomicU64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    let fallback = core::ptr::addr_of!(EPOCH_FALLBACK).cast_mut();
    // SAFETY: a new private anonymous mapping at an address of the kernel's choosing replaces
    // nothing.
    let page = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            PAGE_SIZE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    };
    let word = match page {
        Ok(page) => {
            // SAFETY: the page was just mapped by this function and nothing else refers to it.
            let wiped = unsafe {
                rustix::mm::madvise(page, PAGE_SIZE, rustix::mm::Advice::LinuxWipeOnFork)
            };
            if wiped.is_ok() {
                page.cast::<AtomicU64>()
            } else {
                // SAFETY: as above; the page is given back unused.
                let _ = unsafe { rustix::mm::munmap(page, PAGE_SIZE) };
                fallback
            }
        }
        Err(_) => fallback,
    };
    match EPOCH.compare_exchange(core::ptr::null_mut(), word, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => word,
        Err(installed) => {
            if word != fallback {
                // SAFETY: another thread installed its page first; this one was never shared.
                let _ = unsafe { rustix::mm::munmap(word.cast(), PAGE_SIZE) };
            }
            installed
        }
    }
}

/// The size of the page [`EPOCH`] lives in; the kernel rounds to its own page size.
const PAGE_SIZE: usize = 4096;

/// The thread's token, cached per thread: drawing one costs a system call, several times the
/// price of a whole pool operation. The cache is refreshed in a
/// new process, which [`epoch`] tells after any kind of fork, and after a `fork` made through the
/// C library, which runs the handler registered above, where the kernel has no wipe-on-fork.
#[derive(Clone, Copy)]
pub(crate) struct Ids {
    /// See [`thread_token`].
    pub(crate) token: u64,
}

/// A number that tells the calling thread from every other thread of every process on the
/// machine, whatever pid namespace each is in: 64 random bits drawn for each thread, and drawn
/// again in the child of a `fork`, a raw `fork` or `clone` system call included (which would
/// otherwise inherit its parent's; see [`epoch`]). Thread ids
/// cannot do this: two threads in different pid namespaces may have the same one. Never 0.
#[inline]
pub(crate) fn thread_token() -> u64 {
    ids().0.token
}

/// The calling thread's token ([`thread_token`]) and its process's ([`process_token`]), for the
/// lock, which needs both: the process's epoch is read once.
#[inline]
pub(crate) fn thread_and_process_tokens() -> (u64, u64) {
    let (ids, epoch) = ids();
    (ids.token, epoch)
}

/// 64 bits from the kernel's random pool, or, where it has none to give, from the time, the
/// thread id and an address of the stack: never 0.
fn random_token() -> u64 {
    let mut bytes = [0u8; 8];
    let drawn = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    let mut token = u64::from_ne_bytes(bytes);
    if drawn != Ok(bytes.len()) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let place = core::ptr::addr_of!(bytes).addr() as u64;
        token = (now.tv_nsec as u64 ^ (now.tv_sec as u64).rotate_left(30))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(thread_id()).rotate_left(40)
            ^ place;
    }
    token.max(1)
}

#[inline]
fn ids() -> (Ids, u64) {
    use core::cell::Cell;
    use core::sync::atomic::Ordering;
    thread_local! {
        static CACHE: Cell<(u64, u64, Ids)> =
            const { Cell::new((u64::MAX, 0, Ids { token: 0 })) };
    }
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    let epoch = epoch();
    CACHE.with(|cache| {
        let (seen, seen_epoch, ids) = cache.get();
        if seen == generation && seen_epoch == epoch {
            return (ids, epoch);
        }
        (fresh_ids(cache, epoch), epoch)
    })
}

/// Draws a thread's ids anew, in a new thread or process, and caches them with `epoch`: off the
/// path of every lock.
#[cold]
#[inline(never)]
fn fresh_ids(cache: &core::cell::Cell<(u64, u64, Ids)>, epoch: u64) -> Ids {
    use core::sync::atomic::Ordering;
    register_fork_handler();
    let ids = Ids { token: random_token() };
    // Read again after registering: a fork between the first read and the registration would
    // otherwise go unnoticed by this cache entry.
    cache.set((FORK_GENERATION.load(Ordering::Relaxed), epoch, ids));
    ids
}
