//! `allocator_api2::alloc::Allocator` for heap pools, so collections such as
//! `hashbrown::HashMap` and `allocator_api2::vec::Vec` can live in a pool.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use melon_alloc_core::plumbing::zero_size_block;

use crate::{ChildPool, HeapPool, Pool};

// SAFETY: (1) blocks come from `alloc_layout`, which returns blocks of at least `layout.size()`
// bytes aligned to `layout.align()`, disjoint from every other in-use block; a layout of no bytes
// gets no block, a dangling pointer (`zero_size_block`); (2) they stay valid until deallocated or
// the pool is dropped, and the pool outlives the borrow `&Pool`; (3) `deallocate`, `grow` and
// `shrink` receive blocks of this pool, per `Allocator`'s contract, or the dangling pointer of a
// layout of no bytes, which they leave alone.
unsafe impl Allocator for &Pool {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(zero_size_block(layout));
        }
        let block = self.alloc_layout(layout).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    #[inline]
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
        // SAFETY: `engine` is exclusive for this call (see `Pool::engine`); the caller passes an
        // in-use block of this pool and switches to the result on success.
        let moved = unsafe { self.resize(block, new) }.ok_or(AllocError)?;
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

/// Implements `Allocator` for a borrowed pool handle by handing each call to its [`Pool`].
macro_rules! forward_allocator {
    ($($handle:ty),*) => {$(
        // SAFETY: every call goes to the `Allocator` of the `Pool` the handle owns, which lives
        // as long as the handle.
        unsafe impl Allocator for $handle {
            #[inline]
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                let pool: &Pool = self;
                Allocator::allocate(&pool, layout)
            }
            #[inline]
            unsafe fn deallocate(&self, block: NonNull<u8>, layout: Layout) {
                let pool: &Pool = self;
                // SAFETY: forwarded from the caller.
                unsafe { Allocator::deallocate(&pool, block, layout) }
            }
            unsafe fn grow(&self, block: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
                let pool: &Pool = self;
                // SAFETY: forwarded from the caller.
                unsafe { Allocator::grow(&pool, block, old, new) }
            }
            unsafe fn shrink(&self, block: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
                let pool: &Pool = self;
                // SAFETY: forwarded from the caller.
                unsafe { Allocator::shrink(&pool, block, old, new) }
            }
        }
    )*};
}

forward_allocator!(&HeapPool, &ChildPool<'_>);
