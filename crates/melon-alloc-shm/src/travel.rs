//! How a pool reaches a process that did not inherit its mapping across a `fork`: its descriptor
//! sent over a UNIX socket, or its file opened by name.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::sys::{self, NewFile};
use crate::{ShmError, ShmLock, ShmPool};

/// The ordinary data of a pool's message. A descriptor travels on a stream socket only with at
/// least one byte of data; four fixed ones also tell a pool's message from other traffic.
const TAG: [u8; 4] = *b"MLNP";

impl ShmPool {
    /// Sends the pool's descriptor over a connected UNIX socket, for the process at the other
    /// end to [`receive`](ShmPool::receive): how a process shares a pool with one that was not
    /// forked from it after the pool was made.
    ///
    /// The message is four bytes of ordinary data, a fixed tag, with the descriptor in an
    /// `SCM_RIGHTS` control message. This process keeps its descriptor; the receiver gets one of
    /// its own, of the same file, and can read and write every byte of the pool through it.
    ///
    /// # Errors
    /// [`ShmError::Os`] when the socket refuses the message: `EPIPE` when the peer has closed
    /// its end (no `SIGPIPE` is raised), `EAGAIN` when a non-blocking socket is full,
    /// `ETOOMANYREFS` when this user has more descriptors in flight on sockets than it may have
    /// open.
    ///
    /// # Examples
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let (here, there) = UnixStream::pair().unwrap();
    /// let shm = ShmPool::new(1 << 20)?;
    /// let block = shm.alloc(16).unwrap();
    /// // SAFETY: the block is in use and 16 bytes long.
    /// unsafe { block.as_ptr().write_bytes(7, 16) };
    /// shm.send_to(&here)?;
    ///
    /// // Another process would receive it; this one maps the same pool a second time.
    /// // SAFETY: the message comes from `send_to`, with a pool this library made.
    /// let received = unsafe { ShmPool::receive(&there) }?;
    /// let seen = received.ptr_at(shm.offset_of(block).unwrap()).unwrap();
    /// assert_ne!(seen, block, "a mapping of its own, at another address");
    /// // SAFETY: the block is in use, and nothing writes it meanwhile.
    /// assert_eq!(unsafe { seen.as_ptr().read() }, 7);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn send_to(&self, socket: &UnixStream) -> Result<(), ShmError> {
        sys::send_descriptor(socket.as_fd(), &TAG, self.as_fd())
            .map_err(|errno| ShmError::os("sending the pool's descriptor", errno))
    }

    /// Receives the descriptor of a pool that [`send_to`](ShmPool::send_to) sent over a UNIX
    /// socket, and attaches to the pool with the built-in lock, as [`attach`](ShmPool::attach)
    /// does. Waits for the message, unless the socket is non-blocking.
    ///
    /// One message is read: the tag, and the descriptor, which is close-on-exec from the moment
    /// it arrives (`MSG_CMSG_CLOEXEC`), so that no program this process runs inherits it. Any
    /// other descriptors the message carries are closed.
    ///
    /// # Errors
    /// - [`ShmError::NoDescriptor`] when the message carries no descriptor, with `bytes: 0` when
    ///   the peer has closed its end.
    /// - [`ShmError::WrongTag`] when it carries a descriptor without the pool's tag.
    /// - [`ShmError::NotAPool`], [`ShmError::VersionMismatch`], [`ShmError::SizeMismatch`] or
    ///   [`ShmError::LockMismatch`] when the descriptor holds anything but a pool that this
    ///   library attaches with the built-in lock, as for [`attach`](ShmPool::attach); the
    ///   descriptor of anything but a regular file is [`ShmError::NotAPool`].
    /// - [`ShmError::Os`] when the socket fails (`EAGAIN` when a non-blocking socket has no
    ///   message) or the pool cannot be mapped.
    ///
    /// Whatever the error, the descriptors received are closed and no pool is changed.
    ///
    /// # Safety
    /// As for [`attach`](ShmPool::attach): every process using the pool runs this library's
    /// layout version. The header is checked, but a file that imitates it could still mislead
    /// the allocator, so the peer is trusted to send the descriptor of a real pool.
    ///
    /// # Examples
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let (mut here, there) = UnixStream::pair().unwrap();
    /// here.write_all(b"hello").unwrap();
    /// // SAFETY: a descriptor that came would be a pool's; none does.
    /// let refused = unsafe { ShmPool::receive(&there) };
    /// assert_eq!(refused.err(), Some(ShmError::NoDescriptor { bytes: 4 }));
    /// ```
    pub unsafe fn receive(socket: &UnixStream) -> Result<Self, ShmError> {
        let mut data = [0; TAG.len()];
        let (bytes, fd) = sys::receive_descriptor(socket.as_fd(), &mut data)
            .map_err(|errno| ShmError::os("receiving a pool's descriptor", errno))?;
        let fd = fd.ok_or(ShmError::NoDescriptor { bytes })?;
        if bytes != TAG.len() || data != TAG {
            return Err(ShmError::WrongTag);
        }
        // SAFETY: the caller upholds `attach`'s conditions.
        unsafe { ShmPool::attach(fd) }
    }

    /// Opens the pool that [`ShmPoolBuilder::path`](crate::ShmPoolBuilder::path) made at
    /// `path`, for reading and writing and close-on-exec, and attaches to it with the built-in
    /// lock, as [`attach`](ShmPool::attach) does.
    ///
    /// Whether this process may open the file is up to its mode and owner: 0600 as it was
    /// made, for its creator's user alone. A process that can open it can read and write every
    /// byte of the pool, outside this library's checks.
    ///
    /// # Errors
    /// - [`ShmError::Os`] when the file cannot be opened (`ENOENT` when nothing has that name,
    ///   or it was removed; `EACCES` when its mode keeps this process out) or mapped, unless
    ///   what `path` names is no regular file.
    /// - [`ShmError::NotAPool`], [`ShmError::VersionMismatch`], [`ShmError::SizeMismatch`] or
    ///   [`ShmError::LockMismatch`] when the file holds anything but a pool that this library
    ///   attaches with the built-in lock, as for [`attach`](ShmPool::attach); anything but a
    ///   regular file is [`ShmError::NotAPool`].
    ///
    /// # Safety
    /// - As for [`attach`](ShmPool::attach): every process using the pool runs this library's
    ///   layout version. The header is checked, but a file that imitates it could still
    ///   mislead the allocator.
    /// - Every process that may write the file (see its mode and owner) writes it only through
    ///   this library.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let path = format!("/dev/shm/melon-doc-open-{}", std::process::id());
    /// // SAFETY: nothing has that name, so nothing is mapped.
    /// let missing = unsafe { ShmPool::open_path(&path) }.unwrap_err();
    /// assert!(missing.to_string().contains("os error 2"), "{missing}");
    ///
    /// let shm = ShmPool::builder().path(&path).capacity(1 << 20).build()?;
    /// // SAFETY: the file at `path` is the pool just made, by this library.
    /// let opened = unsafe { ShmPool::open_path(&path) }?;
    /// assert_eq!(opened.capacity(), shm.capacity());
    /// std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn open_path(path: impl AsRef<Path>) -> Result<Self, ShmError> {
        let path = path.as_ref();
        let fd = sys::open_file(path).map_err(|errno| {
            // A directory or a socket cannot be opened for writing at all: what the name holds
            // is the answer, as for anything else but a regular file, which opens.
            if sys::names_no_regular_file(path) {
                ShmError::NotAPool
            } else {
                ShmError::os("opening the pool's file", errno)
            }
        })?;
        // SAFETY: the caller upholds `attach`'s conditions.
        unsafe { ShmPool::attach(fd) }
    }
}

/// Makes a pool in a new file named `path` (see
/// [`ShmPoolBuilder::path`](crate::ShmPoolBuilder::path)): made whole under a temporary name
/// beside it, then renamed without replacing anything.
pub(crate) fn create_at(
    path: &Path,
    initial: usize,
    max: usize,
    lock: Option<Box<dyn ShmLock>>,
) -> Result<ShmPool, ShmError> {
    let failed = |errno| ShmError::os("creating the pool's file", errno);
    // Only a cheap early answer: the rename below is what refuses a taken name for sure, but a
    // pool made before it would hold its memory until then.
    sys::check_vacant(path).map_err(failed)?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{:016x}.new", sys::random_name()));
    let temp = PathBuf::from(temp);
    let fd = sys::create_file(&temp).map_err(failed)?;
    let made = ShmPool::create(NewFile::Created(fd), initial, max, lock).and_then(|pool| {
        // A death here leaves the whole pool under its temporary name, and nothing at `path`.
        crate::stop_point::hit();
        sys::rename_no_replace(&temp, path)
            .map_err(|errno| ShmError::os("naming the pool's file", errno))?;
        Ok(pool)
    });
    if made.is_err() {
        // No other process knows the temporary name, so none can be using the file.
        let _ = sys::remove_file(&temp);
    }
    made
}
