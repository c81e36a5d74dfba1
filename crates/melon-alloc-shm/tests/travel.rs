//! A pool's descriptor travelling to processes that did not inherit it: sent over a UNIX socket
//! to a child forked before the pool existed, or opened by name from a file under `/dev/shm`;
//! and the messages and files that are not pools, refused.
//!
//! The cases run under the harness in `harness/mod.rs`, one after another in a process with a
//! single thread, so that forking is safe; it says how children report and how to pick cases.

mod harness;

use core::ptr::NonNull;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use harness::{fork, names_beside, open_descriptors, run_cases, Case};
use melon_alloc_shm::{ShmError, ShmPool};
use rustix::io::FdFlags;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

const MIB: usize = 1 << 20;

/// How long a process waits for the other's word on a socket before the case fails.
const READ_LIMIT: Duration = Duration::from_secs(60);

/// Bytes the children write through the pools they receive or open.
const MESSAGE_LEN: usize = 1000;

/// The cases, each under its function's name.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        vec![$((stringify!($case), $case as fn())),*]
    };
}

fn main() -> ExitCode {
    let cases: Vec<Case> = cases![
        a_pool_sent_to_a_child_forked_before_it_is_shared,
        a_received_descriptor_is_close_on_exec,
        extra_descriptors_in_a_message_are_closed,
        a_message_without_a_descriptor_is_refused,
        a_descriptor_without_the_tag_is_refused_and_closed,
        a_descriptor_of_anything_but_a_pool_is_refused,
        a_named_pool_is_made_once_and_opened_by_a_child,
        a_named_pool_outlives_its_name,
        a_named_pool_that_cannot_be_made_leaves_no_file,
        opening_what_is_not_a_named_pool_is_an_error,
    ];
    run_cases(cases, None)
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// A connected pair of sockets whose reads give up after [`READ_LIMIT`], so that a process whose
/// peer died fails instead of hanging.
fn socket_pair() -> (UnixStream, UnixStream) {
    let (one, other) = UnixStream::pair().unwrap();
    for end in [&one, &other] {
        end.set_read_timeout(Some(READ_LIMIT)).unwrap();
    }
    (one, other)
}

/// Sends a number to the peer.
fn tell(socket: &mut UnixStream, value: u64) {
    socket.write_all(&value.to_ne_bytes()).unwrap();
}

/// Receives a number from the peer.
fn hear(socket: &mut UnixStream) -> u64 {
    let mut bytes = [0; 8];
    socket.read_exact(&mut bytes).unwrap();
    u64::from_ne_bytes(bytes)
}

// ---------------------------------------------------------------------------------------------
// Blocks, descriptors, names
// ---------------------------------------------------------------------------------------------

/// The byte at `index` of the pattern for `seed`: different for every seed and position.
fn pattern_byte(seed: usize, index: usize) -> u8 {
    (seed.wrapping_mul(131).wrapping_add(index.wrapping_mul(7)) % 251) as u8
}

/// Allocates a block of [`MESSAGE_LEN`] bytes from `shm`, fills it with the pattern for `seed`,
/// and returns its offset.
fn write_message(shm: &ShmPool, seed: usize) -> usize {
    let block = shm.alloc(MESSAGE_LEN).expect("room for the message");
    // SAFETY: the block is in use, `MESSAGE_LEN` bytes long, and nothing else touches it yet.
    let bytes = unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), MESSAGE_LEN) };
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern_byte(seed, index);
    }
    shm.offset_of(block).unwrap()
}

/// Checks that the block at `offset` of `shm` holds the message for `seed`, and frees it.
fn take_message(shm: &ShmPool, offset: usize, seed: usize) {
    let block: NonNull<u8> = shm.ptr_at(offset).expect("the offset lies in the pool");
    // SAFETY: the block is in use, `MESSAGE_LEN` bytes long, and its writer has finished.
    let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), MESSAGE_LEN) };
    let wrong =
        bytes.iter().enumerate().position(|(index, &byte)| byte != pattern_byte(seed, index));
    assert_eq!(wrong, None, "the message reads back");
    // SAFETY: the block came from the pool and is not used again.
    unsafe { shm.try_free(block) }.unwrap();
}

/// Whether the descriptor is close-on-exec.
fn close_on_exec(fd: BorrowedFd<'_>) -> bool {
    rustix::io::fcntl_getfd(fd).unwrap().contains(FdFlags::CLOEXEC)
}

/// Whether `error` is a failed system call that returned `errno`.
fn is_os_error(error: &ShmError, errno: i32) -> bool {
    matches!(error, ShmError::Os { errno: found, .. } if found.raw_os_error() == errno)
}

/// Sends `data` with `fds` in one message, as a peer other than `send_to` might.
fn send_raw(socket: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)), "room for the descriptors");
    let sent =
        rustix::net::sendmsg(socket, &[IoSlice::new(data)], &mut control, SendFlags::empty());
    assert_eq!(sent, Ok(data.len()));
}

/// The ordinary data of a message that `send_to` sends, read off the socket as any peer would.
fn tag_of_a_pool_message() -> Vec<u8> {
    let shm = ShmPool::new(MIB).unwrap();
    let (here, there) = socket_pair();
    shm.send_to(&here).unwrap();
    let mut data = [0; 64];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let received =
        rustix::net::recvmsg(&there, &mut iov, &mut control, rustix::net::RecvFlags::empty())
            .unwrap();
    assert!(received.bytes > 0, "the message has ordinary data");
    data[..received.bytes].to_vec()
}

/// A path under `/dev/shm` that nothing has, for this process and `what`.
fn fresh_path(what: &str) -> PathBuf {
    let path = PathBuf::from(format!("/dev/shm/melon-travel-{}-{what}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

// ---------------------------------------------------------------------------------------------
// Over a socket
// ---------------------------------------------------------------------------------------------

fn a_pool_sent_to_a_child_forked_before_it_is_shared() {
    const SEED: usize = 11;
    let (mut parent_end, mut child_end) = socket_pair();
    // The child exists before the pool does, so the pool can reach it by the socket alone.
    let child = fork(move || {
        // SAFETY: the parent sends the descriptor of a pool this library made.
        let shm = unsafe { ShmPool::receive(&child_end) }.unwrap();
        assert!(close_on_exec(shm.as_fd()), "the received descriptor is close-on-exec");
        assert_eq!(shm.capacity(), 4 * MIB, "the parent's pool");
        let offset = write_message(&shm, SEED);
        tell(&mut child_end, offset as u64);
        // The block is the pool's, not the process's: it outlives this handle and this process.
        drop(shm);
    });
    let shm = ShmPool::memfd("melon-travel", 4 * MIB).unwrap();
    let start = shm.available();
    shm.send_to(&parent_end).unwrap();
    let offset = hear(&mut parent_end) as usize;
    child.succeeds("the child receives, allocates and writes");
    assert!(shm.available() < start, "the child's block is in the parent's pool");
    take_message(&shm, offset, SEED);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

fn a_received_descriptor_is_close_on_exec() {
    let shm = ShmPool::new(MIB).unwrap();
    let (here, there) = socket_pair();
    // A duplicate without the flag, so that the flag on the other side is the receiver's doing.
    let plain = rustix::io::fcntl_dupfd_cloexec(shm.as_fd(), 0).unwrap();
    rustix::io::fcntl_setfd(&plain, FdFlags::empty()).unwrap();
    assert!(!close_on_exec(plain.as_fd()));
    send_raw(&here, &tag_of_a_pool_message(), &[plain.as_fd()]);
    // SAFETY: the descriptor is of a pool this library made.
    let received = unsafe { ShmPool::receive(&there) }.unwrap();
    assert!(close_on_exec(received.as_fd()), "close-on-exec as it arrives");
    assert_eq!(received.capacity(), MIB);
}

fn extra_descriptors_in_a_message_are_closed() {
    let shm = ShmPool::new(MIB).unwrap();
    let tag = tag_of_a_pool_message();
    let (here, there) = socket_pair();
    let extra = std::fs::File::open("/proc/self/exe").unwrap();
    send_raw(&here, &tag, &[shm.as_fd(), extra.as_fd(), extra.as_fd()]);
    let before = open_descriptors().len();
    // SAFETY: the first descriptor is of a pool this library made.
    let received = unsafe { ShmPool::receive(&there) }.unwrap();
    assert_eq!(open_descriptors().len(), before + 1, "only the pool's descriptor stays open");
    let block = received.alloc(64).unwrap();
    assert_eq!(shm.stats().unwrap().live_blocks, 1, "the pool that was sent");
    // SAFETY: the block came from the pool and is not used again.
    unsafe { shm.try_free(shm.ptr_at(received.offset_of(block).unwrap()).unwrap()) }.unwrap();
}

fn a_message_without_a_descriptor_is_refused() {
    let (mut here, there) = socket_pair();
    let before = open_descriptors().len();
    // The tag alone is no pool.
    here.write_all(&tag_of_a_pool_message()).unwrap();
    // SAFETY: no descriptor comes, so nothing is attached.
    let refused = unsafe { ShmPool::receive(&there) }.unwrap_err();
    assert_eq!(refused, ShmError::NoDescriptor { bytes: 4 });
    here.write_all(b"x").unwrap();
    // SAFETY: as above.
    let refused = unsafe { ShmPool::receive(&there) }.unwrap_err();
    assert_eq!(refused, ShmError::NoDescriptor { bytes: 1 });
    drop(here);
    // SAFETY: as above.
    let refused = unsafe { ShmPool::receive(&there) }.unwrap_err();
    assert_eq!(refused, ShmError::NoDescriptor { bytes: 0 }, "the peer closed its end");
    assert!(refused.to_string().contains("closed"), "{refused}");
    assert_eq!(open_descriptors().len(), before - 1, "the closed end, and nothing new");
}

fn a_descriptor_without_the_tag_is_refused_and_closed() {
    let shm = ShmPool::new(MIB).unwrap();
    let (here, there) = socket_pair();
    let before = open_descriptors().len();
    send_raw(&here, b"pool", &[shm.as_fd()]);
    // SAFETY: the descriptor is refused before it is attached.
    let refused = unsafe { ShmPool::receive(&there) }.unwrap_err();
    assert_eq!(refused, ShmError::WrongTag);
    assert_eq!(open_descriptors().len(), before, "the descriptor that came is closed");
}

fn a_descriptor_of_anything_but_a_pool_is_refused() {
    let tag = tag_of_a_pool_message();
    let (here, there) = socket_pair();
    let before = open_descriptors().len();
    let receive = || {
        // SAFETY: the descriptor is of no pool, and the header check refuses it.
        unsafe { ShmPool::receive(&there) }.unwrap_err()
    };
    // A plain file, long enough to hold a header, of other bytes.
    let path = fresh_path("plain");
    std::fs::write(&path, vec![0x5a; 64 << 10]).unwrap();
    let plain = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    send_raw(&here, &tag, &[plain.as_fd()]);
    assert_eq!(receive(), ShmError::NotAPool, "a plain file");
    // An empty file has no header at all.
    plain.set_len(0).unwrap();
    send_raw(&here, &tag, &[plain.as_fd()]);
    assert_eq!(receive(), ShmError::NotAPool, "an empty file");
    // A pool whose header says it is longer than its file: cut short once no process maps it.
    let shm = ShmPool::new(MIB).unwrap();
    let copy = std::fs::File::from(rustix::io::fcntl_dupfd_cloexec(shm.as_fd(), 0).unwrap());
    drop(shm);
    copy.set_len(64 << 10).unwrap();
    send_raw(&here, &tag, &[copy.as_fd()]);
    assert!(matches!(receive(), ShmError::SizeMismatch { .. }), "a truncated pool");
    // Not a file at all.
    let (socket, peer) = UnixStream::pair().unwrap();
    send_raw(&here, &tag, &[socket.as_fd()]);
    assert_eq!(receive(), ShmError::NotAPool, "a socket");
    drop((plain, copy, socket, peer));
    assert_eq!(open_descriptors().len(), before, "every descriptor received is closed");
}

// ---------------------------------------------------------------------------------------------
// By name
// ---------------------------------------------------------------------------------------------

fn a_named_pool_is_made_once_and_opened_by_a_child() {
    const SEED: usize = 23;
    let path = fresh_path("named");
    let (mut parent_end, mut child_end) = socket_pair();
    // The child exists before the pool does, so it reaches the pool by its name alone.
    let child_path = path.clone();
    let child = fork(move || {
        assert_eq!(hear(&mut child_end), 1, "the pool is made");
        // SAFETY: the file at the path is the parent's pool, made by this library.
        let shm = unsafe { ShmPool::open_path(&child_path) }.unwrap();
        assert!(close_on_exec(shm.as_fd()), "the opened descriptor is close-on-exec");
        assert_eq!(shm.capacity(), 4 * MIB, "the parent's pool");
        let offset = write_message(&shm, SEED);
        tell(&mut child_end, offset as u64);
    });

    let shm = ShmPool::builder().path(&path).capacity(4 * MIB).build().unwrap();
    let start = shm.available();
    let metadata = std::fs::symlink_metadata(&path).unwrap();
    assert!(metadata.file_type().is_file(), "a regular file at the path");
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600, "its owner's alone");
    let file = std::fs::metadata(format!("/proc/self/fd/{}", raw(&shm))).unwrap();
    assert_eq!((metadata.dev(), metadata.ino()), (file.dev(), file.ino()), "the pool's file");
    let own = path.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names_beside(&path), [own], "no temporary file left beside it");

    // A second creator finds the name taken, and leaves the first pool alone.
    let taken = ShmPool::builder().path(&path).capacity(MIB).build().unwrap_err();
    assert!(is_os_error(&taken, libc::EEXIST), "{taken:?}");
    assert_eq!(names_beside(&path).len(), 1, "the second creator left nothing");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();

    tell(&mut parent_end, 1);
    let offset = hear(&mut parent_end) as usize;
    child.succeeds("the child opens the pool by name and writes");
    take_message(&shm, offset, SEED);
    assert_eq!(shm.available(), start);
    std::fs::remove_file(&path).unwrap();
}

/// The descriptor number of a pool, for its link under `/proc/self/fd`.
fn raw(shm: &ShmPool) -> i32 {
    use std::os::fd::AsRawFd;
    shm.as_fd().as_raw_fd()
}

fn a_named_pool_outlives_its_name() {
    let path = fresh_path("unlinked");
    let shm = ShmPool::builder().path(&path).capacity(MIB).max_capacity(4 * MIB).build().unwrap();
    let link = std::fs::read_link(format!("/proc/self/fd/{}", raw(&shm))).unwrap();
    let named = std::fs::canonicalize(&path).unwrap();
    assert_eq!(link, named, "the pool's file has the name asked for, not a temporary one");
    // SAFETY: the file at the path is the pool just made, by this library.
    let opened = unsafe { ShmPool::open_path(&path) }.unwrap();
    std::fs::remove_file(&path).unwrap();
    // SAFETY: as above, but the name is gone.
    let gone = unsafe { ShmPool::open_path(&path) }.unwrap_err();
    assert!(is_os_error(&gone, libc::ENOENT), "{gone:?}");
    // Both handles still share one pool, which can even grow.
    let offset = write_message(&opened, 5);
    let large = shm.alloc(2 * MIB).expect("room after growing");
    take_message(&shm, offset, 5);
    // SAFETY: the block came from the pool and is not used again.
    unsafe { opened.try_free(opened.ptr_at(shm.offset_of(large).unwrap()).unwrap()) }.unwrap();
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    opened.check().unwrap();
}

fn a_named_pool_that_cannot_be_made_leaves_no_file() {
    let path = fresh_path("refused");
    let refused = ShmPool::builder().path(&path).capacity(0).build().unwrap_err();
    assert!(matches!(refused, ShmError::CapacityOutOfRange { capacity: 0, .. }), "{refused:?}");
    assert!(names_beside(&path).is_empty(), "no pool and no temporary file");
    let refused = ShmPool::builder().path(&path).capacity(2 * MIB).max_capacity(MIB).build();
    assert!(matches!(refused, Err(ShmError::CapacityAboveMax { .. })));
    assert!(names_beside(&path).is_empty(), "no pool and no temporary file");
    // A directory that does not exist.
    let nowhere = path.join("pool");
    let refused = ShmPool::builder().path(&nowhere).capacity(MIB).build().unwrap_err();
    assert!(is_os_error(&refused, libc::ENOENT), "{refused:?}");
    // A dangling symbolic link takes the name as well as a file does.
    let target = fresh_path("target");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let taken = ShmPool::builder().path(&path).capacity(MIB).build().unwrap_err();
    assert!(is_os_error(&taken, libc::EEXIST), "{taken:?}");
    assert!(std::fs::symlink_metadata(&target).is_err(), "nothing made through the link");
    std::fs::remove_file(&path).unwrap();
}

fn opening_what_is_not_a_named_pool_is_an_error() {
    let path = fresh_path("missing");
    // SAFETY: nothing has that name, so nothing is attached.
    let missing = unsafe { ShmPool::open_path(&path) }.unwrap_err();
    assert!(is_os_error(&missing, libc::ENOENT), "{missing:?}");
    // A plain file.
    std::fs::write(&path, b"not a pool, though long enough to be read as a header".repeat(100))
        .unwrap();
    // SAFETY: the file is refused by the header check.
    let refused = unsafe { ShmPool::open_path(&path) }.unwrap_err();
    assert_eq!(refused, ShmError::NotAPool);
    std::fs::remove_file(&path).unwrap();
    // A directory and a socket cannot be opened for writing, a FIFO can: none is a regular
    // file.
    // SAFETY: as above.
    let directory = unsafe { ShmPool::open_path("/dev/shm") }.unwrap_err();
    assert_eq!(directory, ShmError::NotAPool);
    let socket = fresh_path("socket");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // SAFETY: as above.
    let refused = unsafe { ShmPool::open_path(&socket) }.unwrap_err();
    assert_eq!(refused, ShmError::NotAPool);
    drop(listener);
    std::fs::remove_file(&socket).unwrap();
    let fifo = fresh_path("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    // SAFETY: as above.
    let refused = unsafe { ShmPool::open_path(&fifo) }.unwrap_err();
    assert_eq!(refused, ShmError::NotAPool);
    std::fs::remove_file(&fifo).unwrap();
}
