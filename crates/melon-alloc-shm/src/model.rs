//! What the loom models in `tests/loom.rs` drive, built only with `--cfg melon_loom`: the
//! built-in lock and the undo log on a header-shaped buffer, with modelled threads in place of
//! the operating system's. Not part of the crate's interface.
//!
//! A modelled thread is a number from 1 to [`MAX_THREAD`] that the model passes in; it "dies"
//! when the model says so, and the lock then sees it dead, as it sees a process that was killed.

use core::ptr::{addr_of, addr_of_mut, NonNull};
use std::time::Duration;

use loom::sync::atomic::AtomicBool;
use loom::sync::{Condvar, Mutex};

use crate::layout::{
    Header, LockWord, LogEntry, State, BIN_COUNT, CLASS_COUNT, LOCK_BUILTIN, MAGIC, NONE, PAGE,
    VERSION, WAITERS,
};
use crate::lock::{lock_builtin_with, unlock_builtin_with, LockOs};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::tx::Tx;
use crate::ShmError;

/// The largest thread id a model may use; ids start at 1, as 0 means a free lock.
pub const MAX_THREAD: u32 = 4;

/// How a modelled futex wait ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waits {
    /// A wait lasts until another thread wakes the waiter, or until the owner it waits for dies
    /// (standing in for the timeout after which a real waiter looks at its owner). A lost
    /// wake-up leaves a waiter asleep for ever, which loom reports as a deadlock.
    Blocking,
    /// Every wait may time out at once: the waiter only lets the other threads run, so loom
    /// explores every point at which a timeout could send it back to look at the word.
    TimingOut,
}

/// A header-shaped buffer whose atomics are loom's, and the model's stand-in for the kernel:
/// which threads have died, and the futex's queue of sleepers.
#[derive(Debug)]
pub struct Shm {
    header: NonNull<Header>,
    dead: [AtomicBool; MAX_THREAD as usize + 1],
    waits: Waits,
    /// The kernel's lock around the futex: a waiter compares the word and goes to sleep under
    /// it, and a waker wakes under it, so that a wake-up cannot fall between the two.
    queue: Mutex<()>,
    sleepers: Condvar,
}

// SAFETY: the header's atomics may be used from any thread; its other fields are reached only
// through the `unsafe` methods below, whose callers hold the lock.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

impl Shm {
    /// A free lock, an empty log, zeroed counters and state words, and no thread dead. Loom's
    /// atomics must be made inside the model, so this is called in it.
    pub fn new(waits: Waits) -> Self {
        let header = Box::new(Header {
            magic: MAGIC,
            version: VERSION,
            page_size: PAGE as u32,
            capacity: core::mem::size_of::<Header>() as u64,
            page_count: 0,
            first_data_page: 0,
            lock_kind: LOCK_BUILTIN,
            _pad_lock_kind: 0,
            takeovers: AtomicU64::new(0),
            undone: AtomicU64::new(0),
            lock: LockWord(AtomicU32::new(0)),
            log_len: AtomicU32::new(0),
            _pad: 0,
            log: core::array::from_fn(|_| LogEntry { key: 0, old: 0 }),
            state: State {
                partial: [NONE; CLASS_COUNT],
                bins: [NONE; BIN_COUNT],
                bin_mask: 0,
                _pad: 0,
                free_bytes: 0,
                lent_pages: 0,
            },
        });
        Self {
            header: NonNull::from(Box::leak(header)),
            dead: core::array::from_fn(|_| AtomicBool::new(false)),
            waits,
            queue: Mutex::new(()),
            sleepers: Condvar::new(),
        }
    }

    fn lock_word(&self) -> &AtomicU32 {
        // SAFETY: the header lives as long as `self`, and the lock word is only ever used
        // through shared references.
        unsafe { &*addr_of!((*self.header.as_ptr()).lock.0) }
    }

    fn takeover_count(&self) -> &AtomicU64 {
        // SAFETY: as in `lock_word`.
        unsafe { &*addr_of!((*self.header.as_ptr()).takeovers) }
    }

    fn undone_count(&self) -> &AtomicU64 {
        // SAFETY: as in `lock_word`.
        unsafe { &*addr_of!((*self.header.as_ptr()).undone) }
    }

    fn base(&self) -> *mut u8 {
        self.header.as_ptr().cast()
    }

    fn thread(&self, tid: u32) -> Thread<'_> {
        assert!((1..=MAX_THREAD).contains(&tid), "thread ids run from 1 to {MAX_THREAD}");
        Thread { shm: self, tid }
    }

    fn death_flag(&self, tid: u32) -> &AtomicBool {
        &self.dead[self.thread(tid).tid as usize]
    }

    /// Takes the built-in lock as thread `tid`, as a pool operation does.
    ///
    /// # Errors
    /// [`ShmError::WouldDeadlock`] when `tid` holds the lock already.
    pub fn lock(&self, tid: u32) -> Result<(), ShmError> {
        lock_builtin_with(self.lock_word(), self.takeover_count(), &self.thread(tid))
    }

    /// Releases the built-in lock as thread `tid`.
    pub fn unlock(&self, tid: u32) {
        unlock_builtin_with(self.lock_word(), &self.thread(tid));
    }

    /// Thread `tid` dies where it stands: whatever it holds, it never releases. Everything it
    /// wrote becomes visible to whoever then sees it dead, as the kernel's bookkeeping of a
    /// death makes it.
    pub fn die(&self, tid: u32) {
        self.death_flag(tid).store(true, Ordering::Release);
        if self.waits == Waits::Blocking {
            // The waiters' timeouts would send them to look at their owner; waking them all
            // stands in for that.
            let _queue = self.queue.lock().expect("the model's futex queue");
            self.sleepers.notify_all();
        }
    }

    /// Whether thread `tid` has died.
    pub fn is_dead(&self, tid: u32) -> bool {
        self.death_flag(tid).load(Ordering::Acquire)
    }

    /// Times a thread took the lock over from a dead owner.
    pub fn takeovers(&self) -> u64 {
        self.takeover_count().load(Ordering::Relaxed)
    }

    /// Operations found half done and undone by [`recover`](Shm::recover).
    pub fn undone(&self) -> u64 {
        self.undone_count().load(Ordering::Relaxed)
    }

    /// Entries in the undo log.
    pub fn log_len(&self) -> u32 {
        // SAFETY: as in `lock_word`.
        unsafe { &*addr_of!((*self.header.as_ptr()).log_len) }.load(Ordering::Acquire)
    }

    /// Starts an operation on the state words, logged as the pool logs its operations.
    ///
    /// # Safety
    /// - The calling thread holds the lock, and keeps it until the operation is committed or
    ///   the thread dies.
    /// - The log is empty: [`recover`](Shm::recover) has run since the lock was taken.
    pub unsafe fn begin(&self) -> Op<'_> {
        // SAFETY: (1) the buffer starts with a header, and the logged words lie in it; (2) the
        // caller holds the lock and the log is empty.
        let tx = unsafe { Tx::begin(self.base()) };
        Op { tx, shm: self }
    }

    /// Undoes an operation that a dead holder left half done, and counts it, as taking a
    /// pool's lock does. Returns whether there was one.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    pub unsafe fn recover(&self) -> bool {
        // SAFETY: (1) the buffer starts with a header, and every logged word lies in it; (2) the
        // caller holds the lock.
        let undone = unsafe { crate::tx::recover(self.base()) };
        if undone {
            self.undone_count().fetch_add(1, Ordering::Relaxed);
        }
        undone
    }

    /// The state words: the 64-bit one and the 32-bit one.
    ///
    /// # Safety
    /// No thread changes them meanwhile: the caller holds the lock, or every other thread that
    /// took it has finished or died.
    pub unsafe fn words(&self) -> (u64, u32) {
        // SAFETY: the words lie in the header, and nothing writes them meanwhile (caller).
        unsafe { (self.wide().read(), self.narrow().read()) }
    }

    fn wide(&self) -> *mut u64 {
        // SAFETY: the header lives as long as `self`; no reference is made.
        unsafe { addr_of_mut!((*self.header.as_ptr()).state.free_bytes) }
    }

    fn narrow(&self) -> *mut u32 {
        // SAFETY: as in `wide`.
        unsafe { addr_of_mut!((*self.header.as_ptr()).state.bin_mask) }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: the header came from `Box::leak` in `new`, and nothing refers to it any more.
        drop(unsafe { Box::from_raw(self.header.as_ptr()) });
    }
}

/// An operation in progress on the state words of a [`Shm`].
pub struct Op<'a> {
    tx: Tx,
    shm: &'a Shm,
}

impl Op<'_> {
    /// Writes the 64-bit state word, after logging its old value.
    pub fn set_wide(&mut self, value: u64) {
        // SAFETY: the word lies in the header, aligned for `u64`.
        unsafe { self.tx.set(self.shm.wide(), value) };
    }

    /// Writes the 32-bit state word, after logging its old value.
    pub fn set_narrow(&mut self, value: u32) {
        // SAFETY: the word lies in the header, aligned for `u32`.
        unsafe { self.tx.set(self.shm.narrow(), value) };
    }

    /// Ends the operation: its writes stand.
    pub fn commit(self) {
        self.tx.commit();
    }
}

impl core::fmt::Debug for Op<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Op").finish_non_exhaustive()
    }
}

/// A modelled thread, as the lock sees it through [`LockOs`].
struct Thread<'a> {
    shm: &'a Shm,
    tid: u32,
}

impl LockOs for Thread<'_> {
    fn thread_id(&self) -> u32 {
        self.tid
    }

    fn is_dead(&self, tid: u32) -> bool {
        self.shm.is_dead(tid)
    }

    fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Duration) {
        match self.shm.waits {
            Waits::TimingOut => crate::sync::yield_now(),
            Waits::Blocking => {
                let queue = self.shm.queue.lock().expect("the model's futex queue");
                // A dead owner's waiter would not sleep for long: its timeout comes (see `die`).
                if word.load(Ordering::SeqCst) == expected && !self.shm.is_dead(expected & !WAITERS)
                {
                    drop(self.shm.sleepers.wait(queue).expect("the model's futex queue"));
                }
            }
        }
    }

    fn wake_one(&self, _word: &AtomicU32) {
        if self.shm.waits == Waits::Blocking {
            let _queue = self.shm.queue.lock().expect("the model's futex queue");
            self.shm.sleepers.notify_one();
        }
    }
}
