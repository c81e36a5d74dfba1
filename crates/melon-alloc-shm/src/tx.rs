//! The undo log that makes every change to a pool's state survive the death of the process
//! making it.
//!
//! Before a word of the state changes, its offset, width and old value go into the log in the
//! header, and the log's length is bumped; then the word is written. An entry is two words, the
//! offset with the width in its lowest bit and the old value, so that logging costs three stores.
//! When the operation is done the length goes back to zero. A process that takes the lock and finds a non-zero length knows
//! the previous holder died mid-operation, and restores the logged words in reverse order, which
//! puts the state back exactly as it was before that operation began.

use core::ptr;
use core::sync::atomic as hw;

use crate::layout::{Header, LogEntry, LOG_CAP};
use crate::sync::Ordering;

/// A value the log can hold.
pub(crate) trait Word: Copy {
    /// Set in a log entry's key for a 64-bit word; clear for a 32-bit one.
    const WIDE: u64;
    fn to_u64(self) -> u64;
    fn from_u64(value: u64) -> Self;

    /// Writes `value` to `place` after every write before it, as the compiler sees it: a
    /// release store, which on the machines this runs on is a plain store.
    ///
    /// # Safety
    /// `place` is valid for writes and aligned, and no other thread accesses it meanwhile but
    /// through atomic loads.
    unsafe fn store_after(place: *mut Self, value: Self);
}

impl Word for u32 {
    const WIDE: u64 = 0;
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    fn from_u64(value: u64) -> Self {
        value as u32
    }
    unsafe fn store_after(place: *mut Self, value: Self) {
        // SAFETY: valid, aligned, and not accessed by another thread meanwhile but atomically
        // (caller).
        unsafe { hw::AtomicU32::from_ptr(place) }.store(value, hw::Ordering::Release);
    }
}

impl Word for u64 {
    const WIDE: u64 = 1;
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(value: u64) -> Self {
        value
    }
    unsafe fn store_after(place: *mut Self, value: Self) {
        // SAFETY: valid, aligned, and not accessed by another thread meanwhile but atomically
        // (caller).
        unsafe { hw::AtomicU64::from_ptr(place) }.store(value, hw::Ordering::Release);
    }
}

/// One operation's writes to the state, each logged before it is made.
pub(crate) struct Tx {
    base: *mut u8,
    header: *mut Header,
    /// Entries written so far: the log's length, kept here so that each write need not read it
    /// back from the header.
    len: usize,
}

impl Tx {
    /// Starts an operation on the pool mapped at `base`.
    ///
    /// # Safety
    /// - `base` is the start of a mapped pool, valid for its whole capacity.
    /// - The caller holds the pool's lock until the `Tx` is committed, and the log is empty.
    pub(crate) unsafe fn begin(base: *mut u8) -> Self {
        Self { base, header: base.cast(), len: 0 }
    }

    /// Writes `value` to `place`, after logging the old value.
    ///
    /// # Safety
    /// `place` points into the pool's mapping, aligned for `T`.
    #[inline]
    pub(crate) unsafe fn set<T: Word>(&mut self, place: *mut T, value: T) {
        crate::stop_point::hit();
        // SAFETY: the caller guarantees `place` is in the mapping; the lock makes this the only
        // writer, and the header is valid (see `begin`).
        unsafe {
            let len = self.len;
            if len >= LOG_CAP {
                log_overflow();
            }
            let entry = ptr::addr_of_mut!((*self.header).log[len]);
            // Logged words are at least 4-aligned, so the offset's lowest bit is free for the width.
            let offset = (place.addr() - self.base.addr()) as u64;
            entry.write(LogEntry { key: offset | T::WIDE, old: place.read().to_u64() });
            self.len = len + 1;
            // The entry, then the length that counts it, then the write it covers, each in
            // memory before the next whatever the compiler would like to reorder: a kill can
            // land between any two instructions. Release stores keep that order at no cost on
            // x86, where a store is never made visible before an earlier one.
            (*self.header).log_len.store(len as u32 + 1, Ordering::Release);
            crate::stop_point::hit();
            T::store_after(place, value);
        }
    }

    /// Makes the writes so far stand and empties the log, for an operation made of steps that
    /// each leave the pool consistent: a death after this undoes only the step under way, and
    /// the log need only hold the largest step.
    ///
    /// Call it only where the state is consistent and nothing logged since `begin` (or the last
    /// checkpoint) needs the writes still to come.
    #[inline]
    pub(crate) fn checkpoint(&mut self) {
        crate::stop_point::hit();
        // SAFETY: the header is valid (see `begin`).
        unsafe { (*self.header).log_len.store(0, Ordering::Release) };
        self.len = 0;
    }

    /// Ends the operation: its writes stand.
    #[inline]
    pub(crate) fn commit(self) {
        crate::stop_point::hit();
        // The release store puts every write of the operation in memory before the log empties.
        // SAFETY: the header is valid (see `begin`).
        unsafe { (*self.header).log_len.store(0, Ordering::Release) };
        crate::stop_point::hit();
    }
}

/// Every operation is written to stay under the log's size; getting here is a bug in this crate,
/// and the state must not be changed without a log entry.
#[cold]
fn log_overflow() -> ! {
    crate::sys::stop("melon-alloc: undo log overflow")
}

/// Undoes a half-done operation left by a process that died holding the lock. Returns whether
/// there was one.
///
/// The log is emptied last, after `recount` has set again what the log does not cover: a
/// process that dies at any step of this finds the log as it was, and the next holder runs the
/// whole recovery again, which writes the same values. Emptying the log first would leave a
/// state that no later holder knows to repair.
///
/// Every logged word lies in the pool's metadata, where `holds(offset, width)` says it may be;
/// an entry that names anything else, or a misaligned word, was not written by an operation,
/// and is skipped rather than written: a log a dying or buggy process left corrupt must not make
/// this write outside the metadata. Words are restored with atomic stores, as other threads and
/// processes read some of them without the lock.
///
/// # Safety
/// - `base` is the start of a mapped pool that holds its header, and every word for which
///   `holds` is true lies in the mapping, valid for writes.
/// - The caller holds the lock, so no live process is in the middle of an operation.
pub(crate) unsafe fn recover(
    base: *mut u8,
    holds: impl Fn(u64, u64) -> bool,
    recount: impl FnOnce(),
) -> bool {
    let header = base.cast::<Header>();
    // SAFETY: the header is valid (caller).
    let len = unsafe { (*header).log_len.load(Ordering::Acquire) } as usize;
    if len == 0 {
        return false;
    }
    for index in (0..len.min(LOG_CAP)).rev() {
        // SAFETY: `index < LOG_CAP`, inside the header (caller); entries were written before
        // the length that counts them.
        let entry = unsafe { ptr::addr_of!((*header).log[index]).read() };
        let wide = entry.key & 1 == u64::WIDE;
        let width = if wide { 8 } else { 4 };
        let offset = entry.key & !1;
        if !holds(offset, width) || offset % width != 0 {
            continue;
        }
        // SAFETY: `holds` says the word lies in the mapping (caller), aligned for its width
        // since `base` is page-aligned.
        let place = unsafe { base.add(offset as usize) };
        // Atomic stores: a few words the log covers (a lent chunk's descriptor, the end of the
        // grown pages) are read without the lock, by processes freeing handed-off blocks or
        // catching up with a growth.
        if wide {
            // SAFETY: as above; the lock is held, so no other thread writes the word.
            unsafe { u64::store_after(place.cast(), entry.old) };
        } else {
            // SAFETY: as above.
            unsafe { u32::store_after(place.cast(), u32::from_u64(entry.old)) };
        }
        crate::stop_point::hit();
    }
    recount();
    crate::stop_point::hit();
    // SAFETY: the header is valid (caller).
    unsafe { (*header).log_len.store(0, Ordering::Release) };
    crate::stop_point::hit();
    true
}
