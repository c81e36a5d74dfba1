//! What can go wrong with a shared pool.

use core::fmt;

use melon_alloc_core::FreeError;

/// An error code the operating system returned (the `errno` of the failed call). The pool's own
/// type, so that the crates it calls the system through can change without changing this API.
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::Errno;
///
/// let busy = Errno::from_raw_os_error(16);
/// assert_eq!(busy.raw_os_error(), 16);
/// assert_eq!(busy, Errno::from_raw_os_error(16));
/// assert!(busy.to_string().contains("os error 16"), "{busy}");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// The error with this code, as `errno` would hold it.
    ///
    /// # Examples
    ///
    /// ```
    /// let nomem = melon_alloc_shm::Errno::from_raw_os_error(12);
    /// assert_eq!(nomem.raw_os_error(), 12);
    /// ```
    pub const fn from_raw_os_error(code: i32) -> Self {
        Self(code)
    }

    /// The code, as `errno` would hold it.
    ///
    /// # Examples
    ///
    /// ```
    /// let code = melon_alloc_shm::Errno::from_raw_os_error(16).raw_os_error();
    /// assert_eq!(code, 16);
    /// ```
    pub const fn raw_os_error(self) -> i32 {
        self.0
    }

    pub(crate) fn from_system(errno: rustix::io::Errno) -> Self {
        Self(errno.raw_os_error())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({}: {})", self.0, std::io::Error::from_raw_os_error(self.0).kind())
    }
}

/// A failure of a [`ShmLock`](crate::ShmLock), with the code its callback returned (Melon's lock
/// callbacks return non-zero on failure).
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::LockError;
///
/// let failed = LockError::new(16);
/// assert_eq!(failed.code(), 16);
/// assert!(failed.to_string().contains("16"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockError {
    code: i32,
}

impl LockError {
    /// A failure of the lock with its own error code.
    ///
    /// # Examples
    ///
    /// ```
    /// let failed = melon_alloc_shm::LockError::new(-1);
    /// assert_eq!(failed.code(), -1);
    /// ```
    pub const fn new(code: i32) -> Self {
        Self { code }
    }

    /// The lock's own error code.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(melon_alloc_shm::LockError::new(7).code(), 7);
    /// ```
    pub const fn code(self) -> i32 {
        self.code
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the pool's lock failed with code {}", self.code)
    }
}

impl core::error::Error for LockError {}

/// Why a shared-pool operation failed. Nothing in the pool changed.
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::{ShmError, ShmPool};
///
/// let too_small = ShmPool::new(1 << 10).unwrap_err();
/// assert!(matches!(too_small, ShmError::CapacityOutOfRange { capacity: 1024, .. }));
/// let shm = ShmPool::new(1 << 20)?;
/// let refused = shm.try_alloc(2 << 20).unwrap_err();
/// assert_eq!(refused, ShmError::OutOfMemory { size: 2 << 20 });
/// assert_eq!(refused.to_string(), "no room for 2097152 bytes");
/// # Ok::<(), ShmError>(())
/// ```
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
    /// other way round; or it was made by a build that lays out the lock words of the pool and
    /// of its [`ShmMutex`](crate::ShmMutex)es differently.
    LockMismatch,
    /// The lock failed.
    Lock(LockError),
    /// The calling thread already holds the lock it asked for, the pool's or a
    /// [`ShmMutex`](crate::ShmMutex)'s (through a guard), and would wait for itself forever.
    WouldDeadlock,
    /// A holder of a [`ShmMutex`](crate::ShmMutex) made by
    /// [`new_poisoning_in`](crate::ShmMutex::new_poisoning_in) died holding it: the value it
    /// guards may have been left half changed, which for a value with pointers is no value at
    /// all, so it is never handed out again.
    Poisoned,
    /// The built-in lock stayed held, by a process that is alive (perhaps stopped), for longer
    /// than the timeout the caller set.
    LockTimeout {
        /// How long the caller waited.
        waited: core::time::Duration,
    },
    /// Too few bytes are free for the block the request needs (its size rounded up to its
    /// size class, or to whole pages), or no block of the pool could ever hold it (a size or an
    /// alignment beyond what a pool maps), or a pool that could grow for it was refused the
    /// memory by the system.
    OutOfMemory {
        /// The size asked for.
        size: usize,
    },
    /// Enough bytes are free, but in no place that fits the block: every free run of pages is
    /// too short (or starts off the alignment asked for), and the free blocks in slabs belong to
    /// other size classes, or are the unused tails of slabs. Freeing blocks that share slabs or
    /// lie between free runs helps; a pool this fragmented holds many long-lived blocks among
    /// short-lived ones.
    ///
    /// `largest_run` can reach the size asked for in one case: a block aligned beyond a page
    /// takes a run long enough to align its start wherever the run lies, its pages and one page
    /// less than its alignment, so a shorter run that happens to start aligned is not tried.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// // Fill a pool with 64-byte blocks, then free every other one: half of it is free, in
    /// // 64-byte holes.
    /// let shm = ShmPool::new(1 << 20)?;
    /// let mut blocks = Vec::new();
    /// while let Some(block) = shm.alloc(64) {
    ///     blocks.push(block);
    /// }
    /// for block in blocks.iter().step_by(2) {
    ///     // SAFETY: the block came from `shm` and is not used again.
    ///     unsafe { shm.try_free(*block) }?;
    /// }
    /// let available = shm.available();
    /// assert_eq!(
    ///     shm.try_alloc(4096),
    ///     Err(ShmError::Fragmented { size: 4096, available, largest_run: 0 })
    /// );
    /// assert!(shm.alloc(64).is_some(), "the holes still hold 64-byte blocks");
    /// # Ok::<(), ShmError>(())
    /// ```
    Fragmented {
        /// The size asked for.
        size: usize,
        /// The bytes free, as [`ShmStats::available`](crate::ShmStats::available) counts them.
        available: usize,
        /// Bytes of the longest free run of pages, as
        /// [`ShmStats::largest_free_run`](crate::ShmStats::largest_free_run) counts them.
        largest_run: usize,
    },
    /// A name for the pool's directory is empty or longer than
    /// [`ShmPool::NAME_MAX`](crate::ShmPool::NAME_MAX) bytes.
    NameLength {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name is in the pool's directory already.
    NameTaken,
    /// Every entry of the pool's directory holds a name.
    DirectoryFull,
    /// The value under a name, or at an offset, is not of the type asked for: its size,
    /// alignment or type name differs.
    TypeMismatch {
        /// Size of the type asked for.
        size: usize,
        /// Alignment of the type asked for.
        align: usize,
        /// Size of the value's type, as recorded when it was placed.
        found_size: usize,
        /// Alignment of the value's type, as recorded when it was placed.
        found_align: usize,
    },
    /// No block in use of this pool starts at the offset, aligned for the type and large
    /// enough for it: an offset past the end, from another pool, or of a block freed since.
    NoObject {
        /// The offset.
        offset: u64,
    },
    /// The pointer is not an in-use block of the pool.
    Free(FreeError),
    /// The pointer lies in a chunk lent to a child pool, where the shared pool frees only a
    /// block [handed off](crate::ShmPool::hand_off) and not freed since: it is a block freed
    /// already, a block its child pool frees (never handed off), or a pointer inside a block.
    /// Nothing was changed.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let child = shm.child();
    /// let message = child.alloc(64).unwrap();
    /// // SAFETY: the block is the child's, in use, and from now on freed through `shm` alone.
    /// unsafe { shm.hand_off(message) }?;
    /// // SAFETY: the block was handed off, and this is its one free.
    /// unsafe { shm.try_free(message) }?;
    /// // SAFETY: a second free, which the block's mark, cleared by the first, refuses.
    /// let again = unsafe { shm.try_free(message) };
    /// assert_eq!(again, Err(ShmError::NotHandedOff { addr: message.as_ptr().addr() }));
    /// # Ok::<(), ShmError>(())
    /// ```
    NotHandedOff {
        /// The address that was passed in.
        addr: usize,
    },
    /// The invariant scan found the pool inconsistent.
    Corrupt(ShmCheckError),
    /// A message received on a socket by [`ShmPool::receive`](crate::ShmPool::receive) carried
    /// no descriptor.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let (here, there) = UnixStream::pair().unwrap();
    /// drop(here);
    /// // SAFETY: no descriptor comes, so nothing is attached.
    /// let refused = unsafe { ShmPool::receive(&there) };
    /// assert_eq!(refused.err(), Some(ShmError::NoDescriptor { bytes: 0 }));
    /// ```
    NoDescriptor {
        /// Bytes of ordinary data the message held: 0 when the peer had closed its end.
        bytes: usize,
    },
    /// A message received on a socket by [`ShmPool::receive`](crate::ShmPool::receive) carried a
    /// descriptor, but not the tag that [`ShmPool::send_to`](crate::ShmPool::send_to) sends with
    /// a pool's: it was not sent as a pool. The descriptor was closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::IoSlice;
    /// use std::mem::MaybeUninit;
    /// use std::os::unix::net::UnixStream;
    /// use melon_alloc_shm::{ShmError, ShmPool};
    /// use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    ///
    /// // A peer sends a pool's descriptor with data of its own, not through `send_to`.
    /// let shm = ShmPool::new(1 << 20)?;
    /// let (here, there) = UnixStream::pair().unwrap();
    /// let fds = [shm.as_fd()];
    /// let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    /// let mut control = SendAncillaryBuffer::new(&mut space);
    /// assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    /// let data = [IoSlice::new(b"pool")];
    /// rustix::net::sendmsg(&here, &data, &mut control, SendFlags::empty()).unwrap();
    /// // SAFETY: the descriptor is refused before anything is attached.
    /// let refused = unsafe { ShmPool::receive(&there) };
    /// assert_eq!(refused.err(), Some(ShmError::WrongTag));
    /// # Ok::<(), ShmError>(())
    /// ```
    WrongTag,
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
            Self::WouldDeadlock => f.write_str("this thread already holds the lock"),
            Self::Poisoned => {
                f.write_str("a holder of the mutex died holding it, and its value is lost")
            }
            Self::LockTimeout { waited } => {
                write!(f, "the pool's lock stayed held for {waited:?}, past the timeout")
            }
            Self::OutOfMemory { size } => write!(f, "no room for {size} bytes"),
            Self::Fragmented { size, available, largest_run } => {
                write!(
                    f,
                    "no room for {size} bytes in one place: {available} bytes are free, in runs \
                     of at most {largest_run} bytes and in slabs of other sizes"
                )?;
                if largest_run >= size {
                    f.write_str(" (no run long enough to start at the alignment asked for)")?;
                }
                Ok(())
            }
            Self::NameLength { len } => {
                write!(f, "a name of {len} bytes: names are 1 to {} bytes", crate::layout::NAME_MAX)
            }
            Self::NameTaken => f.write_str("the name is in the pool's directory already"),
            Self::DirectoryFull => f.write_str("every entry of the pool's directory is in use"),
            Self::TypeMismatch { size, align, found_size, found_align } => {
                if (size, align) == (found_size, found_align) {
                    write!(f, "the value is of another type of {size} bytes aligned to {align}")
                } else {
                    write!(
                        f,
                        "the value is of a type of {found_size} bytes aligned to {found_align}, \
                         not {size} bytes aligned to {align}"
                    )
                }
            }
            Self::NoObject { offset } => {
                write!(f, "no block of this pool at offset {offset} holds a value of that type")
            }
            Self::Free(error) => error.fmt(f),
            Self::NotHandedOff { addr } => write!(
                f,
                "{addr:#x} lies in a child pool's chunk and is no block handed off and not freed \
                 since (a second free, a block its child frees, or a pointer inside a block)"
            ),
            Self::Corrupt(error) => error.fmt(f),
            Self::NoDescriptor { bytes: 0 } => {
                f.write_str("the peer closed the socket before sending a pool's descriptor")
            }
            Self::NoDescriptor { bytes } => {
                write!(f, "a message of {bytes} bytes came without a pool's descriptor")
            }
            Self::WrongTag => f.write_str("a descriptor came without a pool's tag"),
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
///
/// # Examples
///
/// ```
/// use std::{fs::File, os::unix::fs::FileExt};
/// use melon_alloc_shm::{ShmCheckError, ShmError, ShmPool};
///
/// let shm = ShmPool::new(1 << 20)?;
/// let [_kept, freed] = [shm.alloc(64).unwrap(), shm.alloc(64).unwrap()];
/// let offset = shm.offset_of(freed).unwrap() as u64;
/// // SAFETY: the block came from `shm` and is not used again.
/// unsafe { shm.try_free(freed) }?;
/// // A stray write into the pool's file, where the freed block lies, breaks the list of free
/// // blocks that runs through it.
/// let file = File::from(shm.as_fd().try_clone_to_owned().unwrap());
/// file.write_all_at(&[0x41; 4], offset).unwrap();
/// // The next allocation of that size meets the broken link, and takes the slab out of use.
/// assert!(shm.alloc(64).is_some());
/// let found = shm.check().unwrap_err();
/// assert!(matches!(found, ShmError::Corrupt(ShmCheckError::Quarantined { .. })));
/// # Ok::<(), ShmError>(())
/// ```
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
    /// The directory of names is impossible: its block of entries is not one, or an entry
    /// names no block in use.
    BadDirectory,
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
            Self::BadDirectory => f.write_str("the directory of names is inconsistent"),
            Self::CountersDisagree { counter, counted, recorded } => {
                write!(f, "{counter}: pages hold {counted}, counter says {recorded}")
            }
        }
    }
}

impl core::error::Error for ShmCheckError {}

impl ShmError {
    /// A failed system call: `call` says what was being done.
    pub(crate) fn os(call: &'static str, errno: rustix::io::Errno) -> Self {
        Self::Os { call, errno: Errno::from_system(errno) }
    }
}
