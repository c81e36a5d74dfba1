//! The undo log that makes every change to a pool's state survive the death of the process
//! making it.
//!
//! Before a word of the state changes, its offset, width and old value go into the log in the
//! header, and the log's length is bumped; then the word is written. When the operation is done
//! the length goes back to zero. A process that takes the lock and finds a non-zero length knows
//! the previous holder died mid-operation, and restores the logged words in reverse order, which
//! puts the state back exactly as it was before that operation began.

use core::ptr;
use core::sync::atomic::compiler_fence;

use crate::layout::{Header, LogEntry, LOG_CAP};
use crate::sync::Ordering;

/// A value the log can hold.
pub(crate) trait Word: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(value: u64) -> Self;
}

impl Word for u32 {
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    fn from_u64(value: u64) -> Self {
        value as u32
    }
}

impl Word for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(value: u64) -> Self {
        value
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
        crate::failpoint::hit();
        // SAFETY: the caller guarantees `place` is in the mapping; the lock makes this the only
        // writer, and the header is valid (see `begin`).
        unsafe {
            let len = self.len;
            if len >= LOG_CAP {
                // Every operation is written to stay under the log's size; getting here is a bug
                // in this crate, and the state must not be changed without a log entry.
                eprintln!("melon-alloc: undo log overflow");
                std::process::abort();
            }
            let entry = ptr::addr_of_mut!((*self.header).log[len]);
            entry.write(LogEntry {
                offset: (place.addr() - self.base.addr()) as u64,
                width: core::mem::size_of::<T>() as u64,
                old: place.read().to_u64(),
            });
            self.len = len + 1;
            (*self.header).log_len.store(len as u32 + 1, Ordering::Release);
            // The entry must be in memory before the write it covers, whatever the compiler
            // would like to reorder: a kill can land between any two instructions.
            compiler_fence(Ordering::SeqCst);
            crate::failpoint::hit();
            place.write(value);
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
        compiler_fence(Ordering::SeqCst);
        crate::failpoint::hit();
        // SAFETY: the header is valid (see `begin`).
        unsafe { (*self.header).log_len.store(0, Ordering::Release) };
        self.len = 0;
    }

    /// Ends the operation: its writes stand.
    #[inline]
    pub(crate) fn commit(self) {
        compiler_fence(Ordering::SeqCst);
        crate::failpoint::hit();
        // SAFETY: the header is valid (see `begin`).
        unsafe { (*self.header).log_len.store(0, Ordering::Release) };
        crate::failpoint::hit();
    }
}

/// Undoes a half-done operation left by a process that died holding the lock. Returns whether
/// there was one.
///
/// # Safety
/// - `base` is the start of a mapped pool.
/// - The caller holds the lock, so no live process is in the middle of an operation.
pub(crate) unsafe fn recover(base: *mut u8) -> bool {
    let header = base.cast::<Header>();
    // SAFETY: the header is valid (caller).
    let len = unsafe { (*header).log_len.load(Ordering::Acquire) } as usize;
    if len == 0 {
        return false;
    }
    for index in (0..len.min(LOG_CAP)).rev() {
        // SAFETY: (1) logged entries were written before the length that counts them; (2) each
        // names an offset in the mapping that held a word of the logged width, aligned for it.
        unsafe {
            let entry = ptr::addr_of!((*header).log[index]).read();
            let place = base.add(entry.offset as usize);
            match entry.width {
                4 => place.cast::<u32>().write(u32::from_u64(entry.old)),
                _ => place.cast::<u64>().write(entry.old),
            }
        }
    }
    // SAFETY: the header is valid (caller).
    unsafe { (*header).log_len.store(0, Ordering::Release) };
    true
}
