//! `allocator_api2::alloc::Allocator` for `&ShmPool`, so that collections such as
//! `allocator_api2::vec::Vec` and `hashbrown::HashMap` can keep their memory in a shared pool.
//!
//! A collection records its buffer by pointer, and a pointer into the pool means the same bytes
//! only where the pool is mapped at the same address: in the process that made the pool and in
//! the processes forked from it after. There the others can read the collection's buffer, as
//! long as no process writes, grows or drops the collection meanwhile: a read alongside a write is
//! a data race, and one after a growth or a drop reads a block the pool may have handed out
//! again. The collection itself (its pointer, length and capacity) lives wherever the program
//! put it.
//! A collection in a process's own memory that a fork copies is the forking code's to hand to
//! one process, which alone drops or grows it: the copies share one buffer. One that processes
//! share goes in the pool, under a mutex made by
//! [`ShmMutex::new_poisoning_in`](crate::ShmMutex::new_poisoning_in) (or in a
//! [`ShmBox`](crate::ShmBox), by its rules for a fork), and its elements follow the same rule:
//! pointers into the pool, never into one process's own heap. Both map the pages another
//! process grew the pool by before they hand the collection out.
//!
//! Each call takes the pool's lock, so a collection must not be dropped, grown or shrunk by a
//! thread that holds the lock itself ([`ShmPool::lock`]): its `deallocate` is
//! [`ShmPool::free`], which leaves the buffer allocated then (and in debug builds aborts the
//! process with a message), and its growth fails.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use melon_alloc_core::plumbing::zero_size_block;

use crate::ShmPool;

// SAFETY: (1) blocks come from `alloc_layout`, which returns blocks of at least `layout.size()`
// bytes aligned to `layout.align()`, disjoint from every other in-use block of the pool in any
// process; a layout of no bytes gets no block, a dangling pointer (`zero_size_block`); (2) they
// stay valid until deallocated or the pool is dropped, and the pool outlives the borrow
// `&ShmPool`; (3) `deallocate`, `grow` and `shrink` receive blocks of this pool, per
// `Allocator`'s contract, or the dangling pointer of a layout of no bytes, which they leave alone,
// and each takes the pool's lock for a block.
unsafe impl Allocator for &ShmPool {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(zero_size_block(layout));
        }
        let block = self.alloc_layout(layout).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    unsafe fn deallocate(&self, block: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the caller passes an in-use block of this pool and gives up its use.
        unsafe { self.free(block) }
    }

    unsafe fn grow(
        &self,
        block: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 {
            return self.allocate(new);
        }
        let mut guard = self.lock().map_err(|_| AllocError)?;
        // SAFETY: the caller passes an in-use block of this pool and switches to the result on
        // success.
        let moved = unsafe { guard.resize(block, new) }.map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(moved, new.size()))
    }

    unsafe fn shrink(
        &self,
        block: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if new.size() == 0 {
            // SAFETY: the caller gives the block up for the result.
            unsafe { self.deallocate(block, old) };
            return Ok(zero_size_block(new));
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.grow(block, old, new) }
    }
}
