//! How a shared pool is made: its capacity, how far it may grow, its memfd's name or its file's
//! path, its lock.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::layout::PAGE;
use crate::sys::NewFile;
use crate::{ShmError, ShmLock, ShmPool};

/// The memfd name of a pool made without one.
const DEFAULT_NAME: &str = "melon-alloc";

/// Makes a [`ShmPool`]: from [`ShmPool::builder`], set the [`capacity`](ShmPoolBuilder::capacity)
/// and whatever else differs from a fixed pool with the built-in lock, then
/// [`build`](ShmPoolBuilder::build).
///
/// A pool with a [`max_capacity`](ShmPoolBuilder::max_capacity) above its capacity grows: it
/// starts with the memory of `capacity`, and when an allocation or a child pool's chunk finds
/// no room, it grows by a segment of as much again (or by as many as one request needs), up to
/// `max_capacity`. Every process that maps the pool reserves address space for
/// `max_capacity` up front, but memory only for what the pool has grown to; a block never
/// moves, and an offset means the same bytes in every process for the pool's life.
///
/// # Examples
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::builder()
///     .name("sessions")
///     .capacity(1 << 20)
///     .max_capacity(256 << 20)
///     .build()?;
/// let stats = shm.stats()?;
/// assert_eq!((stats.capacity, stats.max_capacity, stats.segments), (1 << 20, 256 << 20, 1));
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[must_use = "a builder makes nothing until `build` is called"]
pub struct ShmPoolBuilder {
    /// The default name is static, so that a builder allocates nothing until a name or a lock
    /// is given.
    name: Cow<'static, str>,
    capacity: usize,
    max_capacity: Option<usize>,
    /// The lock, or why it could not be put on the heap, which `build` reports.
    lock: Option<Result<Box<dyn ShmLock>, ShmError>>,
    path: Option<PathBuf>,
}

impl ShmPoolBuilder {
    pub(crate) fn new() -> Self {
        let name = Cow::Borrowed(DEFAULT_NAME);
        Self { name, capacity: 0, max_capacity: None, lock: None, path: None }
    }

    /// The capacity the pool starts with, in bytes, header included, rounded down to 4 KiB:
    /// 64 KiB to 1 TiB. Required: a builder without it makes no pool. A pool that grows does so
    /// by segments of this size.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::builder().capacity((1 << 20) + 100).build()?;
    /// assert_eq!(shm.capacity(), 1 << 20);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The capacity the pool may grow to, in bytes, rounded down to 4 KiB: from
    /// [`capacity`](ShmPoolBuilder::capacity) to 1 TiB. By default the pool's capacity: a pool
    /// that never grows.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::builder().capacity(64 << 10).max_capacity(1 << 20).build()?;
    /// let blocks: Vec<_> = (0..100).map(|_| shm.alloc(4000).expect("the pool grows")).collect();
    /// assert!(shm.capacity() > 64 << 10 && shm.capacity() <= 1 << 20);
    /// assert!(shm.alloc(1 << 20).is_none(), "more than the largest capacity");
    /// for block in blocks {
    ///     // SAFETY: each block came from `shm` and is freed once.
    ///     unsafe { shm.try_free(block) }?;
    /// }
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn max_capacity(mut self, max_capacity: usize) -> Self {
        self.max_capacity = Some(max_capacity);
        self
    }

    /// The name of the pool's memfd (it shows in `/proc/*/maps`), as
    /// [`ShmPool::memfd`] gives it; `melon-alloc` by default.
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::builder().name("melon-cache").capacity(1 << 20).build()?;
    /// let link = format!("/proc/self/fd/{}", shm.as_fd().as_raw_fd());
    /// assert!(std::fs::read_link(link).unwrap().to_string_lossy().contains("melon-cache"));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        self.name = Cow::Owned(name.into());
        self
    }

    /// Guards the pool with `lock` instead of the built-in lock, as
    /// [`ShmPool::with_lock`] does. The lock is put on the heap here; where there is no memory
    /// for it, [`build`](ShmPoolBuilder::build) says so ([`ShmError::Os`] with `ENOMEM`).
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use melon_alloc_shm::{LockError, ShmLock, ShmPool};
    ///
    /// /// A lock for the threads of one process.
    /// struct Spin(AtomicBool);
    ///
    /// // SAFETY: the swap lets one holder in at a time, with acquire and release ordering.
    /// unsafe impl ShmLock for Spin {
    ///     fn lock(&self) -> Result<(), LockError> {
    ///         while self.0.swap(true, Ordering::Acquire) {
    ///             std::hint::spin_loop();
    ///         }
    ///         Ok(())
    ///     }
    ///     fn unlock(&self) -> Result<(), LockError> {
    ///         self.0.store(false, Ordering::Release);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let shm = ShmPool::builder()
    ///     .capacity(1 << 20)
    ///     .max_capacity(4 << 20)
    ///     .lock(Spin(AtomicBool::new(false)))
    ///     .build()?;
    /// let block = shm.alloc(2 << 20).expect("room after growing");
    /// // SAFETY: the block came from `shm` and is not used again.
    /// unsafe { shm.try_free(block) }?;
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn lock<L: ShmLock + 'static>(mut self, lock: L) -> Self {
        self.lock = Some(boxed_lock(lock));
        self
    }

    /// Makes the pool in a new file at `path`, instead of a memfd, so that a process of the same
    /// machine that neither inherited nor received its descriptor can open it by name, with
    /// [`ShmPool::open_path`]. The path is normally under `/dev/shm`, a tmpfs: the pool's memory
    /// is then the file's, as a memfd's would be. The memfd [`name`](ShmPoolBuilder::name) is
    /// not used.
    ///
    /// [`build`](ShmPoolBuilder::build) makes the whole pool in a file of its own, created
    /// beside `path` with `O_CREAT | O_EXCL | O_CLOEXEC` and mode 0600, and only then gives it
    /// the name `path`, in one step that fails with `EEXIST` when anything has that name. So
    /// two creators never share a file, and no process opens a pool that is not made yet; a
    /// creator that dies half way leaves a file named `path` followed by a dot, 16 hexadecimal
    /// digits and `.new`, never a pool at `path`.
    ///
    /// # Who can open it
    /// The file's mode (0600, less the umask) and owner decide which processes can open it. A
    /// process that can open it can read and write every byte of the pool, and so corrupt it,
    /// which is why [`open_path`](ShmPool::open_path) is unsafe. The file stays until it is
    /// removed, with [`std::fs::remove_file`], say, even when no process has the pool open;
    /// removing it does not affect the processes that have the pool mapped, and only stops
    /// others from opening it. [`open_path`](ShmPool::open_path) attaches with the built-in
    /// lock; a pool made with a [`lock`](ShmPoolBuilder::lock) of the caller's is opened with
    /// [`std::fs::OpenOptions`] and [`attach_with_lock`](ShmPool::attach_with_lock) instead.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let path = format!("/dev/shm/melon-doc-path-{}", std::process::id());
    /// let shm = ShmPool::builder().path(&path).capacity(1 << 20).build()?;
    /// let block = shm.alloc(64).unwrap();
    /// let offset = shm.offset_of(block).unwrap();
    ///
    /// // SAFETY: the file at `path` is the pool just made, by this library.
    /// let opened = unsafe { ShmPool::open_path(&path) }?;
    /// assert!(opened.ptr_at(offset).is_some(), "the same pool, mapped a second time");
    /// std::fs::remove_file(&path).unwrap();
    /// // Both mappings still work without the name.
    /// // SAFETY: the block came from the pool and is not used again.
    /// unsafe { opened.try_free(opened.ptr_at(offset).unwrap()) }?;
    /// assert_eq!(shm.stats()?.live_blocks, 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Makes the pool: reserves the memory of its first segment, so that running out of it is
    /// an error here, not a signal later, and address space for its largest capacity.
    ///
    /// # Errors
    /// [`ShmError::CapacityOutOfRange`] when the capacity or the largest capacity is below
    /// 64 KiB or above 1 TiB (or no capacity was given); [`ShmError::CapacityAboveMax`] when the
    /// capacity is above the largest; [`ShmError::Os`] when the memory or the address space
    /// cannot be had. With a [`path`](ShmPoolBuilder::path), also [`ShmError::Os`] with
    /// `EEXIST` when anything has that name already, and with the system's error when the file
    /// cannot be created or named (a missing directory, one the process may not write to, a
    /// file system that cannot reserve ranges); no file is left behind then.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let refused = ShmPool::builder().capacity(8 << 20).max_capacity(1 << 20).build();
    /// assert_eq!(
    ///     refused.err(),
    ///     Some(ShmError::CapacityAboveMax { capacity: 8 << 20, max_capacity: 1 << 20 })
    /// );
    /// assert!(matches!(
    ///     ShmPool::builder().build(),
    ///     Err(ShmError::CapacityOutOfRange { capacity: 0, .. })
    /// ));
    /// ```
    pub fn build(self) -> Result<ShmPool, ShmError> {
        let Self { name, capacity, max_capacity, lock, path } = self;
        let lock = lock.transpose()?;
        let max = max_capacity.unwrap_or(capacity);
        match path {
            Some(path) => crate::travel::create_at(&path, capacity, max, lock),
            None => ShmPool::create(NewFile::Memfd(&name), capacity, max, lock),
        }
    }
}

/// A lock of the caller's on the heap, where the pool keeps it, or `ENOMEM` when there is no
/// memory for it.
pub(crate) fn boxed_lock<L: ShmLock + 'static>(lock: L) -> Result<Box<dyn ShmLock>, ShmError> {
    // `?` then `Ok`: the box's type becomes the trait object's only in `Ok`.
    Ok(crate::sys::try_box(|| lock)
        .map_err(|errno| ShmError::os("allocating the pool's lock", errno))?)
}

impl core::fmt::Debug for ShmPoolBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmPoolBuilder")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("max_capacity", &self.max_capacity)
            .field("lock", &self.lock.as_ref().map(|_| "ShmLock"))
            .field("path", &self.path)
            .finish()
    }
}

// A pool grows by whole pages: the capacities the builder takes are rounded down to them.
static_assertions::const_assert_eq!(PAGE, 4096);
