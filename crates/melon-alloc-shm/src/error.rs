//! What can go wrong with a shared pool.

use core::fmt;

use melon_alloc_core::FreeError;
use rustix::io::Errno;

/// A failure of a [`ShmLock`](crate::ShmLock), with the code its callback returned (Melon's lock
/// callbacks return non-zero on failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockError {
    /// The lock's own error code.
    pub code: i32,
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the pool's lock failed with code {}", self.code)
    }
}

impl core::error::Error for LockError {}

/// Why a shared-pool operation failed. Nothing in the pool changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShmError {
    /// The capacity is outside what a pool supports.
    CapacityOutOfRange {
        /// The capacity asked for.
        capacity: usize,
        /// The smallest supported capacity.
        min: usize,
        /// The largest supported capacity.
        max: usize,
    },
    /// The capacity a pool starts with is above the capacity it may grow to.
    CapacityAboveMax {
        /// The capacity asked for.
        capacity: usize,
        /// The largest capacity asked for.
        max_capacity: usize,
    },
    /// A system call failed.
    Os {
        /// What was being done.
        call: &'static str,
        /// The error the system returned.
        errno: Errno,
    },
    /// The descriptor does not hold a melon-alloc pool.
    NotAPool,
    /// The pool was made by an incompatible version of this library.
    VersionMismatch {
        /// The layout version in the pool.
        found: u32,
        /// The layout version this library reads.
        expected: u32,
    },
    /// The pool's file is shorter than its header says the pool has grown to.
    SizeMismatch {
        /// Bytes the header says the pool reaches.
        header: u64,
        /// Size of the file behind the descriptor.
        file: u64,
    },
    /// The pool uses a lock of its creator's choosing, and was attached without one, or the
    /// other way round; or its built-in lock was made by a C library that reads it differently.
    LockMismatch,
    /// The lock failed.
    Lock(LockError),
    /// The calling thread already holds the pool's lock (through a guard), and would wait for
    /// itself forever.
    WouldDeadlock,
    /// The built-in lock stayed held, by a process that is alive (perhaps stopped), for longer
    /// than the timeout the caller set.
    LockTimeout {
        /// How long the caller waited.
        waited: core::time::Duration,
    },
    /// No free run or block is large enough.
    OutOfMemory {
        /// The size asked for.
        size: usize,
    },
    /// The pointer is not an in-use block of the pool.
    Free(FreeError),
    /// The invariant scan found the pool inconsistent.
    Corrupt(ShmCheckError),
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CapacityOutOfRange { capacity, min, max } => {
                write!(f, "capacity {capacity} is outside {min}..={max} bytes")
            }
            Self::CapacityAboveMax { capacity, max_capacity } => {
                write!(f, "capacity {capacity} is above the largest capacity, {max_capacity}")
            }
            Self::Os { call, errno } => write!(f, "{call} failed: {errno}"),
            Self::NotAPool => f.write_str("the descriptor does not hold a melon-alloc pool"),
            Self::VersionMismatch { found, expected } => {
                write!(f, "pool layout version {found}, this library reads {expected}")
            }
            Self::SizeMismatch { header, file } => {
                write!(f, "pool header says {header} bytes, its file has {file}")
            }
            Self::LockMismatch => f.write_str("the pool's lock kind does not match"),
            Self::Lock(error) => error.fmt(f),
            Self::WouldDeadlock => f.write_str("this thread already holds the pool's lock"),
            Self::LockTimeout { waited } => {
                write!(f, "the pool's lock stayed held for {waited:?}, past the timeout")
            }
            Self::OutOfMemory { size } => write!(f, "no room for {size} bytes"),
            Self::Free(error) => error.fmt(f),
            Self::Corrupt(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for ShmError {}

impl From<FreeError> for ShmError {
    fn from(error: FreeError) -> Self {
        Self::Free(error)
    }
}

/// A broken invariant found by [`ShmPool::check`](crate::ShmPool::check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShmCheckError {
    /// The undo log holds an operation that was neither finished nor undone.
    UnfinishedOperation,
    /// A page descriptor is impossible.
    BadPage {
        /// The page.
        page: u32,
    },
    /// A slab's counts or free list are impossible.
    BadSlab {
        /// The slab's first page.
        page: u32,
    },
    /// Two free runs lie side by side without having been merged.
    UnmergedFreeRuns {
        /// The second run's first page.
        page: u32,
    },
    /// A bin of free runs or a class's list of slabs is broken.
    BadList,
    /// A slab was taken out of use because a link in its free list was impossible (a write into
    /// a freed block, most likely); its blocks in use are intact.
    Quarantined {
        /// The slab's first page.
        page: u32,
    },
    /// A counter disagrees with what the pages hold.
    CountersDisagree {
        /// Which counter.
        counter: &'static str,
        /// What the pages add up to.
        counted: u64,
        /// What the counter says.
        recorded: u64,
    },
}

impl fmt::Display for ShmCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnfinishedOperation => f.write_str("an operation was left half done"),
            Self::BadPage { page } => write!(f, "page {page} has an impossible descriptor"),
            Self::BadSlab { page } => write!(f, "the slab at page {page} is inconsistent"),
            Self::UnmergedFreeRuns { page } => write!(f, "free runs meet unmerged at page {page}"),
            Self::BadList => f.write_str("a free-run bin or a slab list is broken"),
            Self::Quarantined { page } => {
                write!(f, "the slab at page {page} was quarantined: its free list was corrupt")
            }
            Self::CountersDisagree { counter, counted, recorded } => {
                write!(f, "{counter}: pages hold {counted}, counter says {recorded}")
            }
        }
    }
}

impl core::error::Error for ShmCheckError {}
