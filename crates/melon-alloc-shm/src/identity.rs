//! A process's identity in a pool, which the pool's lock word holds while the process holds the
//! lock: a number from a counter in the header, and a write lock on one byte of the pool's file
//! for that number, taken through an open file description of the process's own (opened for it
//! by its parent before the fork that made it, see `spares.rs`, or else the file reopened
//! through `/proc/self/fd`). The kernel drops the byte's lock when the description's last
//! reference goes, its descriptors and the page pinned through it (see `owner.rs`), which a
//! process's death does after its memory is gone: a lock word naming an identity whose byte
//! nobody locks belongs to a process that can write to the pool no more, whatever pid namespace
//! it ran in and whatever process has its pid now.
//!
//! It is also how [`Kernel`] answers the lock's questions: it sleeps on the lock word with the
//! futex of the pool's file, and asks whether a byte is locked through the pool's own
//! descriptor, which never locks, so that every holder conflicts with it.

use core::sync::atomic::{
    AtomicI32, AtomicI64, AtomicU32 as PlainU32, AtomicU64 as PlainU64, AtomicUsize, Ordering,
};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::layout::PoolLock;
use crate::lock::{Waited, Waits, HOLDER};
use crate::owner::{close_held, open_held, set_byte_lock, Held};
use crate::spares::{Spares, Use};
use crate::sync::AtomicU32;
use crate::sys::Mapping;

/// Where the identities' lock bytes lie in the pool's file: byte `IDENTITY_BASE + identity`,
/// past the owner table's bytes and far past the mapping.
const IDENTITY_BASE: i64 = (1 << 62) + (1 << 32);

/// How long a waiter sleeps on the lock word before it asks whether the holder still lives: the
/// longest a dead holder keeps the lock, and a system call per this much waiting for a live one.
#[cfg_attr(melon_loom, allow(dead_code))]
const CHECK_PERIOD: Duration = Duration::from_millis(5);

/// How many identities a process tries before it gives up: one is taken only while the process
/// it was last given to lives, which takes 2^31 processes using the pool in between.
const TRIES: u32 = 64;

/// The identity of a process that cannot make one of its own (no `/proc`, or no right to the
/// file): shared by every such process, and never taken over, since nothing tells whether they
/// live. A process holding the lock under it and dying keeps the others waiting until their
/// timeouts. Never handed out by the counter.
pub(crate) const ANONYMOUS: u32 = HOLDER;

/// No identity at all: the pool's descriptor in this process no longer names the pool's file,
/// through which the identity's byte would be locked and the others' asked about (the program
/// closed the descriptor, as a daemon closing every one from 3 up does, and the number may name
/// another file by now). The process takes none of the pool's locks, so that it can neither be
/// taken for dead while it holds one nor take another's from a live process.
pub(crate) const UNUSABLE: u32 = 0;

/// This process's identity in one pool, made on its first lock: atomics only so that the handle
/// can be shared between threads.
pub(crate) struct Identity {
    /// [`sys::process_token`](crate::sys::process_token) of the process the identity is
    /// for, or 0; published last, with release, once the fields below are written.
    process: PlainU64,
    /// The identity: in `1..=HOLDER`.
    id: PlainU32,
    /// The description the identity's byte is locked through, and its tag (see `tags.rs`).
    fd: AtomicI32,
    tag: AtomicI64,
    /// The address of the page mapped through it (see `Held::pin` in `owner.rs`), or 0.
    pin: AtomicUsize,
    /// The process token of a thread making the identity, or 0: the threads of one process
    /// make it one at a time, and a child of a fork taken in the middle takes over its
    /// parent's mark, whose thread does not exist there.
    making: PlainU64,
}

impl Identity {
    pub(crate) const fn new() -> Self {
        Self {
            process: PlainU64::new(0),
            id: PlainU32::new(0),
            fd: AtomicI32::new(-1),
            tag: AtomicI64::new(0),
            pin: AtomicUsize::new(0),
            making: PlainU64::new(0),
        }
    }

    /// This process's identity, made now if it has none: [`ANONYMOUS`] for good where the
    /// system refuses to make one, [`UNUSABLE`] for good where the pool's descriptor no longer
    /// names its file.
    ///
    /// # Errors
    /// What the system said when it had no descriptor, memory or lock to spare for one
    /// ([`is_shortage`]): the process has no identity yet, and the next call tries again.
    #[inline]
    pub(crate) fn get(
        &self,
        lock: &PoolLock,
        pool: &Mapping,
        spares: &Spares,
    ) -> Result<u32, Errno> {
        self.get_as(crate::sys::process_token(), lock, pool, spares)
    }

    /// [`get`](Identity::get), for a caller that has this process's
    /// [`process_token`](crate::sys::process_token) at hand.
    #[inline]
    pub(crate) fn get_as(
        &self,
        process: u64,
        lock: &PoolLock,
        pool: &Mapping,
        spares: &Spares,
    ) -> Result<u32, Errno> {
        if self.process.load(Ordering::Acquire) == process {
            return Ok(self.id.load(Ordering::Relaxed));
        }
        self.make(process, lock, pool, spares)
    }

    /// This process's identity, if it has made one: `None` in a process that only inherited
    /// its parent's.
    #[inline]
    pub(crate) fn current(&self) -> Option<u32> {
        (self.process.load(Ordering::Acquire) == crate::sys::process_token())
            .then(|| self.id.load(Ordering::Relaxed))
    }

    #[cold]
    fn make(
        &self,
        token: u64,
        lock: &PoolLock,
        pool: &Mapping,
        spares: &Spares,
    ) -> Result<u32, Errno> {
        loop {
            if self.process.load(Ordering::Acquire) == token {
                return Ok(self.id.load(Ordering::Relaxed));
            }
            let making = self.making.load(Ordering::Acquire);
            if making == token {
                // Another thread of this process is making it.
                std::thread::yield_now();
            } else if self
                .making
                .compare_exchange(making, token, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
        let made = if self.process.load(Ordering::Acquire) == token {
            Ok(self.id.load(Ordering::Relaxed))
        } else {
            self.forget_parents();
            let claimed = match pool.checked_fd() {
                Ok(fd) => match claim(lock, fd, pool.file(), spares) {
                    // A shortage may pass: no identity is kept, so that the process does not
                    // lock under the anonymous one, which nothing takes over, for good.
                    Err(errno) if is_shortage(errno) => Err(errno),
                    claimed => Ok(claimed.unwrap_or((ANONYMOUS, Held::NONE))),
                },
                Err(_) => Ok((UNUSABLE, Held::NONE)),
            };
            claimed.map(|(id, held)| {
                self.id.store(id, Ordering::Relaxed);
                self.fd.store(held.fd, Ordering::Relaxed);
                self.tag.store(held.tag, Ordering::Relaxed);
                self.pin.store(held.pin, Ordering::Relaxed);
                self.process.store(token, Ordering::Release);
                id
            })
        };
        self.making.store(0, Ordering::Release);
        made
    }

    /// In a process that finds its parent's identity: closes the copy of the parent's
    /// description that a fork without the handler (a raw `fork` or `clone` system call) left
    /// it, which would keep the parent looking alive for as long as this process lives. After a
    /// fork that ran the handler, the handler closed it, and the number may name another
    /// description by now, which its tag tells and which is left alone.
    fn forget_parents(&self) {
        if self.process.swap(0, Ordering::Relaxed) == 0 {
            return;
        }
        // The parent's page was not inherited: its address may be another mapping's here.
        self.pin.store(0, Ordering::Relaxed);
        close_held((self.fd.swap(-1, Ordering::Relaxed), self.tag.load(Ordering::Relaxed)));
    }

    /// Gives the identity up: a pool handle that goes. The caller holds no lock of the pool.
    pub(crate) fn close(&self) {
        if self.process.load(Ordering::Relaxed) == crate::sys::process_token() {
            self.process.store(0, Ordering::Relaxed);
            let pin = self.pin.swap(0, Ordering::Relaxed);
            let (fd, tag) = (self.fd.swap(-1, Ordering::Relaxed), self.tag.load(Ordering::Relaxed));
            Held { fd, tag, pin }.close();
        } else {
            self.forget_parents();
        }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether `errno`, from making an identity, says the system had no descriptor, memory or lock
/// to spare, which may change: a process's table of descriptors full, say. Any other refusal
/// (no `/proc`, no right to the file) stays.
fn is_shortage(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOLCK | Errno::AGAIN | Errno::INTR
    )
}

/// Takes a free identity: the next number of the lock's counter whose byte nobody locks, and
/// that the lock's word does not name (a dead holder's, not taken over yet, once the counter has
/// wrapped), with the lock on its byte taken through a description of the pool's file of this
/// process's own: the spare its parent opened for it, or a new one.
///
/// # Errors
/// What the system says when there is no spare and the file cannot be opened again, or when
/// the byte cannot be locked; `EAGAIN` when [`TRIES`] numbers in a row were all taken.
fn claim(
    lock: &PoolLock,
    pool: BorrowedFd<'_>,
    file: crate::sys::File,
    spares: &Spares,
) -> Result<(u32, Held), Errno> {
    let held = open_held(pool, file, || spares.take(Use::Identity))?;
    let mut refused = Errno::AGAIN;
    for _ in 0..TRIES {
        let id = lock.next_identity.fetch_add(1, crate::sync::Ordering::Relaxed) & HOLDER;
        let named = lock.word.load(crate::sync::Ordering::Relaxed) & HOLDER;
        if id == 0 || id == ANONYMOUS || id == named {
            continue;
        }
        match set_byte_lock(held.fd, IDENTITY_BASE + i64::from(id), libc::F_WRLCK as _) {
            Ok(()) => return Ok((id, held)),
            // Another live process has the number.
            Err(Errno::AGAIN | Errno::ACCESS) => {}
            Err(errno) => {
                refused = errno;
                break;
            }
        }
    }
    held.close();
    Err(refused)
}

/// Whether some description holds the lock on `byte`: its process is alive. The pool's own
/// descriptor, which never locks, asks, so every holder conflicts with it. A system that cannot
/// answer counts as alive.
pub(crate) fn byte_is_locked(pool: BorrowedFd<'_>, byte: i64) -> bool {
    let mut lock = crate::owner::byte_lock(byte, libc::F_WRLCK as libc::c_short);
    // SAFETY: the descriptor is open for the borrow, and `lock` is a valid `flock` the call
    // writes the answer into.
    let asked = unsafe {
        libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&pool), libc::F_OFD_GETLK, &mut lock)
    };
    asked != 0 || lock.l_type != libc::F_UNLCK as libc::c_short
}

/// What a waiter does once its futex wait of `sleep` returned `slept`.
#[cfg(not(melon_loom))]
fn after_sleep(slept: Result<(), Errno>, sleep: Duration, deadline: Option<Instant>) -> Waited {
    match slept {
        // The word changed, or a release woke this waiter.
        Ok(()) | Err(Errno::AGAIN) => Waited::Woken,
        // A timeout, a signal, or a futex the system refuses: each is a time to ask about the
        // holder, so that signals coming faster than the sleeps end do not keep a waiter from a
        // dead holder. A refusal is not a sleep, so one is taken here.
        Err(errno) => {
            if !matches!(errno, Errno::TIMEDOUT | Errno::INTR) {
                std::thread::sleep(sleep);
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => Waited::Expired,
                _ => Waited::Checkpoint,
            }
        }
    }
}

/// The system's side of the pool's lock words: the futex of the pool's file, and the
/// identities' locks on its bytes, asked through the pool's own descriptor.
pub(crate) struct Kernel<'a> {
    /// The pool's mapping, whose descriptor asks; `None` for a lock word that is only released
    /// through this value, which never asks about a holder.
    pub(crate) pool: Option<&'a Mapping>,
}

impl Waits for Kernel<'_> {
    #[cfg(not(melon_loom))]
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Waited {
        let mut sleep = CHECK_PERIOD;
        if let Some(deadline) = deadline {
            match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => sleep = sleep.min(left),
                _ => return Waited::Expired,
            }
        }
        let timeout = rustix::time::Timespec {
            tv_sec: sleep.as_secs() as _,
            tv_nsec: sleep.subsec_nanos().into(),
        };
        // Not private: the word is in a mapping other processes share.
        let slept = rustix::thread::futex::wait(
            word,
            rustix::thread::futex::Flags::empty(),
            expected,
            Some(&timeout),
        );
        after_sleep(slept, sleep, deadline)
    }

    /// The loom build's pool is never locked for real (the models bring their own [`Waits`]):
    /// this only keeps it compiling.
    #[cfg(melon_loom)]
    fn wait(&self, _word: &AtomicU32, _expected: u32, deadline: Option<Instant>) -> Waited {
        std::thread::yield_now();
        if deadline.is_some() {
            Waited::Expired
        } else {
            Waited::Checkpoint
        }
    }

    fn wake(&self, word: &AtomicU32) {
        #[cfg(not(melon_loom))]
        let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
        #[cfg(melon_loom)]
        let _ = word;
    }

    /// A descriptor that no longer names the pool's file cannot tell: the holder counts as
    /// alive, rather than be taken for dead because another file has no lock on its byte.
    fn is_alive(&self, holder: u32) -> bool {
        let Some(Ok(pool)) = self.pool.map(Mapping::checked_fd) else { return true };
        holder == ANONYMOUS || byte_is_locked(pool, IDENTITY_BASE + i64::from(holder))
    }
}

#[cfg(all(test, not(melon_loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use rustix::io::Errno;

    use super::{after_sleep, Kernel, ANONYMOUS, CHECK_PERIOD};
    use crate::lock::{Waited, Waits};
    use crate::sync::AtomicU32;

    /// What the crate's docs say: a waiter looks every 5 ms.
    #[test]
    fn a_waiter_on_a_word_that_stays_asks_about_the_holder_every_five_milliseconds() {
        assert_eq!(CHECK_PERIOD, Duration::from_millis(5));
        let word = AtomicU32::new(7);
        let kernel = Kernel { pool: None };
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(kernel.wait(&word, 7, None), Waited::Checkpoint);
            assert!(started.elapsed() >= CHECK_PERIOD, "{:?}", started.elapsed());
        }
        // A word that differs from the one expected is no reason to sleep.
        assert_eq!(kernel.wait(&word, 8, None), Waited::Woken);
    }

    /// A futex the system refuses is replaced by a plain sleep of the period, then a look at
    /// the holder, or the end of a deadline that sleep passed.
    #[test]
    fn a_refused_futex_sleeps_the_period_instead_then_asks() {
        for refusal in [Errno::NOSYS, Errno::INVAL, Errno::FAULT] {
            let started = Instant::now();
            assert_eq!(after_sleep(Err(refusal), CHECK_PERIOD, None), Waited::Checkpoint);
            assert!(started.elapsed() >= CHECK_PERIOD, "{refusal:?}: {:?}", started.elapsed());
        }
        let soon = Instant::now() + Duration::from_millis(1);
        assert_eq!(after_sleep(Err(Errno::NOSYS), CHECK_PERIOD, Some(soon)), Waited::Expired);
        // A timeout or a signal was a sleep already: nothing more is slept.
        for slept in [Errno::TIMEDOUT, Errno::INTR] {
            let (period, started) = (Duration::from_secs(120), Instant::now());
            let waited = after_sleep(Err(slept), period, Some(started + 2 * period));
            assert_eq!(waited, Waited::Checkpoint);
            assert!(started.elapsed() < period / 2, "{slept:?}: slept again");
        }
        assert_eq!(after_sleep(Err(Errno::AGAIN), CHECK_PERIOD, None), Waited::Woken);
        assert_eq!(after_sleep(Ok(()), CHECK_PERIOD, None), Waited::Woken);
    }

    /// A process without an identity of its own holds the lock under the anonymous one, which no
    /// byte lock stands for: it always counts as alive, so its lock is never taken over, while an
    /// identity whose byte nobody locks counts as dead.
    #[test]
    fn the_anonymous_identity_always_counts_as_alive() {
        use crate::sys::{Mapping, NewFile};

        let pool = Mapping::create(NewFile::Memfd("identity"), 1 << 20, &[], 0).unwrap();
        let kernel = Kernel { pool: Some(&pool) };
        assert!(kernel.is_alive(ANONYMOUS));
        assert!(!kernel.is_alive(7), "nobody locks identity 7's byte");
    }

    extern "C" fn ignore(_signal: libc::c_int) {}

    /// Signals every millisecond, faster than the sleeps end: an interrupted sleep is a time to
    /// ask about the holder, so the wait comes back while they still arrive, rather than going
    /// back to sleep for another period each time.
    #[test]
    fn signals_faster_than_the_period_do_not_keep_a_waiter_from_asking() {
        // SAFETY: `action` is a valid `sigaction` for a handler that does nothing, installed for
        // a signal nothing else in this test binary uses.
        unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            assert_eq!(libc::sigaction(libc::SIGUSR2, &action, core::ptr::null_mut()), 0);
        }
        let word = AtomicU32::new(7);
        let came_back = AtomicBool::new(false);
        let (tell, told) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                // SAFETY: `pthread_self` only names the calling thread.
                tell.send(unsafe { libc::pthread_self() }).unwrap();
                let waited = Kernel { pool: None }.wait(&word, 7, None);
                came_back.store(true, Ordering::Release);
                waited
            });
            let thread = told.recv().unwrap();
            let until = Instant::now() + Duration::from_secs(10);
            while !came_back.load(Ordering::Acquire) && Instant::now() < until {
                // SAFETY: the waiter is joined only after the loop, so its id stays valid even
                // once it has ended; the signal's handler does nothing.
                unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(came_back.load(Ordering::Acquire), "the signals kept the waiter asleep");
            assert_eq!(waiter.join().unwrap(), Waited::Checkpoint);
        });
    }
}
