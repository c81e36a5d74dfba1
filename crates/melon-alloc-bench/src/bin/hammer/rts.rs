//! rts-alloc, the hammer's shared-memory peer: the allocator a production validator shares
//! between its processes.
//!
//! A region is one file mapped by every process, cut into slabs of [`SLAB`] bytes. A worker (a
//! process or thread holding one of the region's worker slots) takes slabs from a lock-free
//! global list, one size class per slab, and allocates from its own slabs without a lock. A
//! worker frees a block of its own slabs at once; a block of another worker's slab goes onto
//! that worker's remote-free stack, a lock-free list that the owner empties when it calls
//! `clean_remote_frees`. There are five size classes, 256, 512, 1024, 2048 and 4096 bytes, so a
//! request takes the next power of two of at least 256 bytes, and nothing above 4096 bytes can
//! be had. The region's size and its number of worker slots are fixed when it is made, and
//! nothing repairs it after a process dies inside an operation.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;

use rts_alloc::FreeOnlyAllocator;

use super::{Allocator, CrossProcess};

/// Bytes per slab: 16 blocks of the largest class, 256 of the smallest. A power of two between
/// 16 KiB (four of the largest blocks) and 16 MiB (65,535 of the smallest), as rts-alloc asks.
const SLAB: u32 = 64 << 10;

/// An rts-alloc region in a memfd, made by the parent before the fork; each worker process
/// claims a worker slot of its own after it.
pub(super) struct Region {
    /// The parent's handle on the mapping. A free-only handle holds no worker slot, which leaves
    /// every slot to the worker processes.
    handle: FreeOnlyAllocator,
}

impl Region {
    /// A region of `bytes` bytes with room for at least `workers` workers.
    pub(super) fn new(bytes: usize, workers: usize) -> Result<Self, String> {
        let workers = u32::try_from(workers).map_err(|_| format!("{workers} workers"))?;
        let file = memfd()?;
        // SAFETY: the memfd was just made, so this is the only `create` on its file.
        let creator = unsafe { rts_alloc::Allocator::create(&file, bytes, workers, SLAB) }
            .map_err(|e| format!("cannot make the rts-alloc region: {e}"))?;
        let handle = FreeOnlyAllocator::join_from_existing(&creator);
        // Gives the creator's worker slot back; the mapping stays, shared with `handle`, and
        // outlives the descriptor, which closes here.
        drop(creator);
        Ok(Self { handle })
    }

    /// Claims a worker slot of the region for this process: called after the fork, in the
    /// worker process, which then allocates through the worker alone.
    pub(super) fn join(&self) -> Result<Worker, rts_alloc::error::Error> {
        rts_alloc::Allocator::join_from_existing_free_only(&self.handle).map(Worker)
    }
}

/// A new, empty memfd to hold a region.
fn memfd() -> Result<File, String> {
    // SAFETY: the name is a NUL-terminated string, and the flags are valid.
    let fd = unsafe { libc::memfd_create(c"rts-alloc".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `memfd_create` returned a new descriptor, which nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(File::from(fd))
}

/// One worker process's part of a region; dropping it gives the worker slot back.
pub(super) struct Worker(rts_alloc::Allocator);

impl Allocator for Worker {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.allocate(u32::try_from(size).ok()?)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) -> bool {
        // SAFETY: the caller passes a live block of this worker's region that nothing uses
        // again.
        unsafe { self.0.free(block) };
        true
    }

    fn outstanding(&self) -> u64 {
        self.0.outstanding_allocation_bytes()
    }
}

impl CrossProcess for Worker {
    unsafe fn offset_of(&self, block: NonNull<u8>) -> Option<u64> {
        // SAFETY: the caller passes a live block of this worker, so one inside the region.
        let offset = unsafe { self.0.offset(block) };
        u64::try_from(offset).ok()
    }

    unsafe fn block_at(&self, offset: u64) -> Option<NonNull<u8>> {
        let offset = usize::try_from(offset).ok()?;
        // SAFETY: the caller passes an offset that `offset_of` took from a block of this region,
        // which every worker maps whole.
        Some(unsafe { self.0.ptr_from_offset(offset) })
    }

    #[inline]
    unsafe fn free_foreign(&mut self, block: NonNull<u8>) -> bool {
        // rts-alloc's free sees that the block's slab belongs to another worker and pushes the
        // block onto that worker's remote-free list, without a lock.
        // SAFETY: the caller passes a live block of this region that nothing uses again.
        unsafe { self.0.free(block) };
        true
    }

    fn reclaim(&mut self) {
        self.0.clean_remote_frees();
    }
}
