//! What the loom models in `tests/loom.rs` drive, built only with `--cfg melon_loom`: the
//! built-in lock ([`ProcessLock`], the pool's own code, on the header's lock word) with its
//! protocol around a dead holder (count, repair, release), and the undo log, on a header-shaped
//! buffer, with modelled processes and a modelled kernel. Not part of the crate's interface.
//!
//! A modelled process is a number from 1 to [`MAX_THREAD`] that the model passes in, its
//! identity in the pool; it "dies" when the model says so, which is what the kernel's release of
//! its identity's byte lock tells the others: the lock word still names it, and a waiter that
//! asks whether it lives hears that it does not. The modelled futex sleeps by yielding, and
//! every wake-up may be a check of the holder.

use core::ptr::{addr_of, addr_of_mut, NonNull};
use std::time::Duration;

use std::time::Instant;

use loom::sync::atomic::AtomicBool;
use loom::sync::{Condvar, Mutex};

use crate::layout::{
    Header, LogEntry, Names, Owner, PoolLock, State, Tallies, BIN_COUNT, CLASS_COUNT, LOCK_BUILTIN,
    MAGIC, NAME_SLOTS, NONE, OWNER_LISTS, PAGE, VERSION,
};
use crate::lock::{lock_robust, unlock_robust, ProcessLock, Waited, Waits};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys::LOCK_ABI;
use crate::tx::Tx;
use crate::ShmError;

/// The largest thread id a model may use; ids start at 1, as 0 means a free lock.
pub const MAX_THREAD: u32 = 4;

/// A header-shaped buffer whose atomics are loom's, and the model's stand-in for the kernel:
/// which processes have died, and the futex's queue of sleepers.
#[derive(Debug)]
pub struct Shm {
    header: NonNull<Header>,
    dead: [AtomicBool; MAX_THREAD as usize + 1],
    futex: Mutex<()>,
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
    pub fn new() -> Self {
        let header = Box::new(Header {
            magic: MAGIC,
            version: VERSION,
            page_size: PAGE as u32,
            capacity: core::mem::size_of::<Header>() as u64,
            page_count: 0,
            first_data_page: 0,
            lock_kind: LOCK_BUILTIN,
            lock_abi: LOCK_ABI,
            initial_capacity: core::mem::size_of::<Header>() as u64,
            takeovers: AtomicU64::new(0),
            undone: AtomicU64::new(0),
            lock: PoolLock { word: AtomicU32::new(0), next_identity: AtomicU32::new(0) },
            holder: AtomicU64::new(0),
            log_len: crate::sync::AtomicU32::new(0),
            end_page: crate::sync::AtomicU32::new(0),
            log: core::array::from_fn(|_| LogEntry { key: 0, old: 0 }),
            state: State {
                partial: [NONE; CLASS_COUNT],
                bins: [NONE; BIN_COUNT],
                bin_mask: 0,
                quarantined: 0,
                free_bytes: 0,
                lent_pages: 0,
                owners: [Owner { chunks: NONE, claimed: 0, pending: 0 }; OWNER_LISTS],
                names: Names {
                    page: 0,
                    _reserved: 0,
                    releasing: 0,
                    used: [0; NAME_SLOTS / 64],
                    touched: [0; NAME_SLOTS / 64],
                },
            },
            tallies: Tallies {
                peak_in_use: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                requests: core::array::from_fn(|_| AtomicU64::new(0)),
                class_failures: core::array::from_fn(|_| AtomicU64::new(0)),
                reclaimed_processes: AtomicU64::new(0),
                reclaimed_bytes: AtomicU64::new(0),
            },
        });
        Self {
            header: NonNull::from(Box::leak(header)),
            dead: core::array::from_fn(|_| AtomicBool::new(false)),
            futex: Mutex::new(()),
            sleepers: Condvar::new(),
        }
    }

    fn takeover_count(&self) -> &AtomicU64 {
        // SAFETY: the header lives as long as `self`, and the counter is only ever used through
        // shared references.
        unsafe { &*addr_of!((*self.header.as_ptr()).takeovers) }
    }

    fn undone_count(&self) -> &AtomicU64 {
        // SAFETY: as in `takeover_count`.
        unsafe { &*addr_of!((*self.header.as_ptr()).undone) }
    }

    fn base(&self) -> *mut u8 {
        self.header.as_ptr().cast()
    }

    /// The pool's lock as process `tid` takes it.
    fn thread(&self, tid: u32) -> ProcessLock<'_, Kernel<'_>> {
        assert!((1..=MAX_THREAD).contains(&tid), "thread ids run from 1 to {MAX_THREAD}");
        // SAFETY: the header lives as long as `self`, and its lock word is only ever used
        // through shared references.
        let word = unsafe { &*addr_of!((*self.header.as_ptr()).lock.word) };
        ProcessLock::new(word, tid, Kernel { shm: self })
    }

    /// Undoes what a dead holder left half done, as the pool does when it takes the lock from
    /// one.
    fn repair(&self) {
        let header = core::mem::size_of::<Header>() as u64;
        let in_header = |offset: u64, width: u64| offset.checked_add(width) <= Some(header);
        // SAFETY: (1) the buffer starts with a header, and every word `in_header` accepts lies in
        // it; (2) the caller holds the lock, taken from a dead owner.
        if unsafe { crate::tx::recover(self.base(), in_header, || {}) } {
            self.undone_count().fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the built-in lock as thread `tid`, as a pool operation does, waiting as long as it
    /// takes; a dead owner's half-done operation is undone before this returns.
    ///
    /// # Errors
    /// The error the pool would report; none is expected here.
    pub fn lock(&self, tid: u32) -> Result<(), ShmError> {
        lock_robust(&self.thread(tid), None, self.takeover_count(), || self.repair())
    }

    /// Like [`lock`](Shm::lock), with a timeout: where the real wait could run out, the modelled
    /// one always does, so that loom explores giving up at every point.
    ///
    /// # Errors
    /// [`ShmError::LockTimeout`] when the lock is held by a live thread; as for
    /// [`lock`](Shm::lock) otherwise.
    pub fn lock_for(&self, tid: u32) -> Result<(), ShmError> {
        let timeout = Some(Duration::from_millis(50));
        lock_robust(&self.thread(tid), timeout, self.takeover_count(), || self.repair())
    }

    /// Takes the lock as thread `tid`, and if it comes from a dead owner, dies while repairing
    /// it, before undoing anything: the next taker must find the same repair left to do.
    ///
    /// # Errors
    /// What the pool would report to a thread that died: nothing anyone sees.
    pub fn lock_dying_in_repair(&self, tid: u32) -> Result<(), ShmError> {
        lock_robust(&self.thread(tid), None, self.takeover_count(), || self.die(tid))
    }

    /// Releases the built-in lock as thread `tid`.
    ///
    /// # Errors
    /// `EPERM` when `tid` does not hold it.
    pub fn unlock(&self, tid: u32) -> Result<(), ShmError> {
        unlock_robust(&self.thread(tid))
    }

    /// Process `tid` dies where it stands: whatever it holds, it never releases, and its
    /// identity's byte lock goes, which is all the others can see. Everything it wrote becomes
    /// visible to whoever then finds it dead, as the kernel's bookkeeping of a death makes it
    /// (the release store orders the two).
    pub fn die(&self, tid: u32) {
        self.dead[Self::index(tid)].store(true, Ordering::Release);
        // The real waiters wake within a check period and ask; here they wake at once.
        let _queue = self.futex.lock().expect("the model's futex");
        self.sleepers.notify_all();
    }

    /// Whether process `tid` has died.
    pub fn is_dead(&self, tid: u32) -> bool {
        self.dead[Self::index(tid)].load(Ordering::Acquire)
    }

    fn index(tid: u32) -> usize {
        assert!((1..=MAX_THREAD).contains(&tid), "thread ids run from 1 to {MAX_THREAD}");
        tid as usize
    }

    /// Times a thread took the lock over from a dead owner.
    pub fn takeovers(&self) -> u64 {
        self.takeover_count().load(Ordering::Relaxed)
    }

    /// Operations found half done and undone.
    pub fn undone(&self) -> u64 {
        self.undone_count().load(Ordering::Relaxed)
    }

    /// Entries in the undo log.
    pub fn log_len(&self) -> u32 {
        // SAFETY: as in `takeover_count`.
        unsafe { &*addr_of!((*self.header.as_ptr()).log_len) }.load(Ordering::Acquire)
    }

    /// Starts an operation on the state words, logged as the pool logs its operations.
    ///
    /// # Safety
    /// - The calling thread holds the lock, and keeps it until the operation is committed or
    ///   the thread dies.
    /// - The log is empty, as it is whenever [`lock`](Shm::lock) returns.
    pub unsafe fn begin(&self) -> Op<'_> {
        // SAFETY: (1) the buffer starts with a header, and the logged words lie in it; (2) the
        // caller holds the lock and the log is empty.
        let tx = unsafe { Tx::begin(self.base()) };
        Op { tx, shm: self }
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

impl Default for Shm {
    fn default() -> Self {
        Self::new()
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

/// The modelled kernel, as the pool's lock sees it through [`Waits`]: a futex whose sleepers
/// the holder's release wakes one at a time, and a death all at once (the real ones wake within
/// a check period and ask); a timed sleep always runs out, so that loom explores giving up at
/// every point; and a process is alive until the model kills it.
struct Kernel<'a> {
    shm: &'a Shm,
}

impl Waits for Kernel<'_> {
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Waited {
        if deadline.is_some() {
            return Waited::Expired;
        }
        let queue = self.shm.futex.lock().expect("the model's futex");
        // As the kernel does, the word is compared under the queue's lock, so a release (or a
        // death) after the comparison finds the sleeper queued and wakes it.
        let holder_dead = !self.is_alive(expected & crate::lock::HOLDER);
        if word.load(Ordering::Relaxed) != expected || holder_dead {
            return Waited::Checkpoint;
        }
        drop(self.shm.sleepers.wait(queue).expect("the model's futex"));
        Waited::Checkpoint
    }

    fn wake(&self, _word: &AtomicU32) {
        let _queue = self.shm.futex.lock().expect("the model's futex");
        self.shm.sleepers.notify_one();
    }

    fn is_alive(&self, holder: u32) -> bool {
        !self.shm.dead.get(holder as usize).is_some_and(|dead| dead.load(Ordering::Acquire))
    }
}

/// A lent chunk's hand-off words, its blocks' marks and [`HANDOFF_BLOCKS`] blocks, for the loom
/// models of blocks handed off to other processes: the protocol the pool runs on its mapping
/// (`handoff.rs`), here on loom's atomics, with a loom mutex for the pool's lock. A block's memory
/// is a loom cell, so that a link written after the chunk went back (or without ordering before
/// the owner reads it) is a race loom reports.
pub struct HandoffChunk {
    list: loom::sync::atomic::AtomicU32,
    state: loom::sync::atomic::AtomicU32,
    marks: loom::sync::atomic::AtomicU64,
    blocks: [loom::cell::UnsafeCell<u32>; HANDOFF_BLOCKS],
    /// The pool's lock, and whether the chunk went back, as the pool's lent-to-orphans check
    /// tells.
    lock: loom::sync::Mutex<bool>,
    releases: loom::sync::atomic::AtomicUsize,
}

/// Blocks of a [`HandoffChunk`].
pub const HANDOFF_BLOCKS: usize = 3;

impl core::fmt::Debug for HandoffChunk {
    /// The hand-off words, as a failed model's report shows them; the blocks are cells loom
    /// tracks, which only the model's steps read.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandoffChunk")
            .field("list", &self.list.load(Ordering::SeqCst))
            .field("state", &self.state.load(Ordering::SeqCst))
            .field("marks", &self.marks.load(Ordering::SeqCst))
            .field("releases", &self.releases.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl HandoffChunk {
    /// A chunk whose first `handed` blocks are handed off.
    pub fn new(handed: u32) -> Self {
        Self {
            list: loom::sync::atomic::AtomicU32::new(0),
            state: loom::sync::atomic::AtomicU32::new(0),
            marks: loom::sync::atomic::AtomicU64::new((1 << handed) - 1),
            blocks: core::array::from_fn(|_| loom::cell::UnsafeCell::new(0)),
            lock: loom::sync::Mutex::new(false),
            releases: loom::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The offset within the chunk of block `block`, as the list holds it: past the header.
    fn within(block: usize) -> u32 {
        64 + 64 * block as u32
    }

    /// Hands block `block` off; refused when it is handed off already.
    pub fn hand_off(&self, block: usize) -> bool {
        crate::handoff::hand_off(&self.marks, 1 << block)
    }

    /// Frees handed-off block `block` from another process, as the pool does: the free, then,
    /// if the chunk was given up, a look under the lock whether it can go back. Whether the
    /// free was accepted.
    pub fn free(&self, block: usize) -> bool {
        self.free_pushed(block) != crate::handoff::Pushed::Refused
    }

    /// [`free`](HandoffChunk::free), saying where the block went.
    fn free_pushed(&self, block: usize) -> crate::handoff::Pushed {
        let within = Self::within(block);
        let freed = crate::handoff::free(
            &self.list,
            &self.state,
            &self.marks,
            1 << block,
            within,
            |next| {
                // SAFETY: the block is the freeing thread's until the list holds it.
                self.blocks[block].with_mut(|link| unsafe { *link = next });
            },
        );
        if freed.given_up {
            self.settle();
        }
        freed.pushed
    }

    /// What the owner collects: the blocks on the list, taking it.
    pub fn collect(&self) -> Vec<usize> {
        let mut within = crate::handoff::take(&self.list);
        let mut blocks = Vec::new();
        while within != 0 {
            let block = (within as usize - 64) / 64;
            blocks.push(block);
            // SAFETY: a listed block's link was written before the push that the take acquired.
            within = self.blocks[block].with(|link| unsafe { *link });
        }
        blocks
    }

    /// The owner gives the chunk up, under the lock, and gives it back if nothing is out.
    pub fn give_up(&self) {
        let mut released = self.lock.lock().expect("the model's lock");
        crate::handoff::give_up(&self.state);
        self.release_if_idle(&mut released);
    }

    /// What a free that found the chunk given up does: under the lock, gives it back if nothing
    /// is out and it has not gone back already.
    fn settle(&self) {
        let mut released = self.lock.lock().expect("the model's lock");
        self.release_if_idle(&mut released);
    }

    fn release_if_idle(&self, released: &mut bool) {
        let marked = || self.marks.load(Ordering::SeqCst) != 0;
        if !*released && crate::handoff::idle(&self.state, marked) {
            *released = true;
            self.release();
        }
    }

    /// Gives the chunk back to the pool, which may write anywhere in it from then on, and lends
    /// it again at once: its list and state start over as a lend sets them, so that a free that
    /// writes them after the chunk went back shows in [`state`](HandoffChunk::state).
    fn release(&self) {
        for block in &self.blocks {
            // SAFETY: a chunk given back is nobody's: a write that races with this is the bug
            // the models look for.
            block.with_mut(|word| unsafe { *word = u32::MAX });
        }
        self.list.swap(0, Ordering::SeqCst);
        self.state.swap(0, Ordering::SeqCst);
        self.releases.fetch_add(1, Ordering::AcqRel);
    }

    /// The chunk's state word: 0 for a chunk lent again after it went back, when nothing wrote
    /// it since.
    pub fn state(&self) -> u32 {
        self.state.load(Ordering::SeqCst)
    }

    /// Times the chunk was given back.
    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::Acquire)
    }
}

/// Two child pools of one process, each holding a [`HandoffChunk`] whose block 0 is handed off,
/// and the count of news of the process's owner slot, which both read: a free that finds a
/// chunk's list empty announces itself on the count, and a child collects its lists only when
/// the count changed since it last looked, as the pool's children do.
#[derive(Debug)]
pub struct HandoffChildren {
    chunks: [HandoffChunk; 2],
    news: loom::sync::atomic::AtomicU32,
    /// The count as each child last read it: only that child's thread touches it.
    seen: [loom::cell::UnsafeCell<u32>; 2],
}

impl HandoffChildren {
    /// Two children, each with one chunk whose block 0 is handed off, and no news.
    pub fn new() -> Self {
        Self {
            chunks: [HandoffChunk::new(1), HandoffChunk::new(1)],
            news: loom::sync::atomic::AtomicU32::new(0),
            seen: [loom::cell::UnsafeCell::new(0), loom::cell::UnsafeCell::new(0)],
        }
    }

    /// Frees block 0 of child `child`'s chunk from another process, announcing it if the list
    /// was empty. Whether the free was accepted.
    pub fn free(&self, child: usize) -> bool {
        let pushed = self.chunks[child].free_pushed(0);
        if pushed == crate::handoff::Pushed::First {
            crate::handoff::announce(&self.news);
        }
        pushed != crate::handoff::Pushed::Refused
    }

    /// What child `child` collects: nothing unless the count changed since it last looked, and
    /// then the blocks on its chunk's list. Only one thread at a time may act for a child.
    pub fn collect(&self, child: usize) -> Vec<usize> {
        // SAFETY: the caller acts for `child` from one thread at a time, the only one touching
        // its `seen`; loom checks that.
        let news = self.seen[child]
            .with_mut(|seen| crate::handoff::news(&self.news, unsafe { &mut *seen }));
        if news {
            self.chunks[child].collect()
        } else {
            Vec::new()
        }
    }
}

impl Default for HandoffChildren {
    fn default() -> Self {
        Self::new()
    }
}
