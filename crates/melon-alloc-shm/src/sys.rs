//! Every call into the operating system that the shared pool makes: the mapping, the memfd, the
//! futex, and process identity. Nothing else in the crate touches these primitives.

use core::ffi::c_void;
use core::ptr::NonNull;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{FallocateFlags, MemfdFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::lock::LockOs;
use crate::sync::AtomicU32;

/// Alignment of every mapping: a block of the pool's size classes, and the chunks it lends to
/// child pools, are aligned relative to the start of the mapping, so the start must be aligned to
/// the largest of those.
pub(crate) const MAP_ALIGN: usize = 2 << 20;

/// A shared mapping of a memfd, aligned to [`MAP_ALIGN`], unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; which thread unmaps it does not matter.
unsafe impl Send for Mapping {}
// SAFETY: the mapping itself is never changed after creation; access to its contents is
// synchronized by the pool's lock.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Makes a memfd of `len` bytes, reserves its memory, and maps it shared.
    pub(crate) fn create(name: &str, len: usize) -> Result<Self, Errno> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?;
        // Reserving the whole length now turns a later lack of memory into an error here
        // instead of a SIGBUS at some first touch.
        rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, len as u64)?;
        Self::map(fd, len)
    }

    /// Maps an existing pool's descriptor, whose size must be `len`.
    pub(crate) fn open(fd: OwnedFd, len: usize) -> Result<Self, Errno> {
        Self::map(fd, len)
    }

    /// The size of the file behind a descriptor.
    pub(crate) fn file_len(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
        Ok(rustix::fs::fstat(fd)?.st_size as u64)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, Errno> {
        let reserve = len.checked_add(MAP_ALIGN).ok_or(Errno::NOMEM)?;
        // SAFETY: a fresh private reservation that nothing else refers to; it only claims
        // address space, which the shared mapping then replaces in part.
        let area = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                reserve,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        let skip = area.cast::<u8>().align_offset(MAP_ALIGN);
        // SAFETY: `skip < MAP_ALIGN`, so `area + skip + len` stays inside the reservation.
        let base = unsafe { area.cast::<u8>().add(skip) };
        // SAFETY: the fixed address lies in the reservation made above, which this function
        // owns, so replacing its pages there unmaps nothing anyone else uses.
        let mapped = unsafe {
            rustix::mm::mmap(
                base.cast(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &fd,
                0,
            )
        };
        let trim = |mapped_ok: bool| {
            // SAFETY: the parts of the reservation outside `[base, base + len)` (all of it if the
            // shared mapping failed) belong to this function and are not used.
            unsafe {
                if mapped_ok {
                    if skip > 0 {
                        let _ = rustix::mm::munmap(area, skip);
                    }
                    let tail = reserve - skip - len;
                    if tail > 0 {
                        let _ = rustix::mm::munmap(base.add(len).cast(), tail);
                    }
                } else {
                    let _ = rustix::mm::munmap(area, reserve);
                }
            }
        };
        match mapped {
            Ok(_) => {
                trim(true);
                let base = NonNull::new(base).ok_or(Errno::NOMEM)?;
                Ok(Self { base, len, fd })
            }
            Err(errno) => {
                trim(false);
                Err(errno)
            }
        }
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own and nothing refers into it once the pool that
        // owns the value is gone.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// The calling thread's id: what the built-in lock records as its owner.
pub(crate) fn thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The calling process's id.
pub(crate) fn process_id() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Whether the thread with id `tid` has died: it no longer exists, or is a zombie whose parent
/// has not collected it yet.
pub(crate) fn thread_is_dead(tid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(tid as i32) else {
        return true;
    };
    if let Err(Errno::SRCH) = rustix::process::test_kill_process(pid) {
        return true;
    }
    // A killed process stays visible to `kill` until it is reaped; its state says it is dead.
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => false,
    }
}

/// Sleeps until `word` may have changed from `expected`, or `timeout` passes. Works across
/// processes: the futex is not private.
#[cfg(not(melon_loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // Every outcome (woken, timed out, interrupted, value already changed) sends the caller back
    // to look at the word again, so the result carries nothing to act on.
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        Some(&timeout),
    );
}

/// Under loom the word is loom's atomic, which the kernel cannot wait on: waiting becomes
/// letting another thread run, as if every wait timed out at once.
#[cfg(melon_loom)]
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Duration) {
    crate::sync::yield_now();
}

/// Wakes one process or thread waiting on `word`.
#[cfg(not(melon_loom))]
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
}

/// Under loom nobody sleeps in the kernel (see [`futex_wait`]), so there is nobody to wake.
#[cfg(melon_loom)]
pub(crate) fn futex_wake_one(_word: &AtomicU32) {}

/// The real operating system behind the built-in lock.
pub(crate) struct Os;

impl LockOs for Os {
    #[inline]
    fn thread_id(&self) -> u32 {
        ids().tid
    }

    fn is_dead(&self, tid: u32) -> bool {
        thread_is_dead(tid)
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        futex_wait(word, expected, timeout);
    }

    fn wake_one(&self, word: &AtomicU32) {
        futex_wake_one(word);
    }
}

/// Ends the process at once, as SIGKILL from outside would: the fail points of the crash tests.
#[cfg(feature = "failpoints")]
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

unsafe extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    crate::children::abandon_all_in_child();
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
fn register_fork_handler() {
    unsafe extern "C" fn register() {
        // SAFETY: the handler bumps an atomic and resets the bookkeeping of this process's child
        // pools, touching only memory of this process and taking no lock, as a handler run in
        // the child of a fork must.
        unsafe { pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
    // SAFETY: `REGISTER` is a `pthread_once_t` set to `PTHREAD_ONCE_INIT` (0) and used with
    // `pthread_once` alone; `register` lives as long as the program.
    unsafe { pthread_once(REGISTER.0.get(), register) };
}

/// The calling thread's and process's ids, cached per thread: asking the kernel costs a system
/// call, several times the price of a whole pool operation. The cache is refreshed after a
/// `fork` made through the C library, which runs the handler registered above.
#[derive(Clone, Copy)]
pub(crate) struct Ids {
    pub(crate) tid: u32,
    pub(crate) pid: u32,
}

#[inline]
pub(crate) fn ids() -> Ids {
    use core::cell::Cell;
    use core::sync::atomic::Ordering;
    thread_local! {
        static CACHE: Cell<(u64, u32, u32)> = const { Cell::new((u64::MAX, 0, 0)) };
    }
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    CACHE.with(|cache| {
        let (seen, tid, pid) = cache.get();
        if seen == generation {
            return Ids { tid, pid };
        }
        register_fork_handler();
        let ids = Ids { tid: thread_id(), pid: process_id() };
        // Read again after registering: a fork between the first read and the registration
        // would otherwise go unnoticed by this cache entry.
        cache.set((FORK_GENERATION.load(Ordering::Relaxed), ids.tid, ids.pid));
        ids
    })
}
