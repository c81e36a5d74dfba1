//! Typed allocation on a heap pool: values, strings and slices placed in the pool and handed
//! back as references that borrow it, in the manner of bumpalo, through the core's typed calls
//! ([`melon_alloc_core::plumbing::Blocks`]).

use core::alloc::Layout;
use core::ptr::NonNull;

use melon_alloc_core::plumbing::{self as core_typed, Blocks};
pub use melon_alloc_core::{TypedAllocError, MAX_TYPED_ALIGN};

use crate::Pool;

// SAFETY: `alloc_layout` hands out a block that nobody else is handed while it is in use, valid
// for the layout; it comes back only through `free` (here `give_back`, or the unsafe frees),
// `reset`, which borrows the pool uniquely, or the pool's drop, which its borrow rules out.
unsafe impl Blocks for Pool {
    fn block(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_layout(layout)
    }

    unsafe fn give_back(&self, block: NonNull<u8>) {
        // SAFETY: forwarded from the caller: a block of this pool, in use, not used again.
        unsafe { self.free(block) };
    }
}

impl Pool {
    /// Moves `value` into the pool and returns a reference to it that borrows the pool. A
    /// zero-sized value takes no memory.
    ///
    /// The value's `Drop` is **not** run: not when the reference goes, nor when the pool is
    /// reset or dropped; its memory simply comes back with the pool's. For a value whose `Drop`
    /// must run, use `allocator_api2::boxed::Box::new_in(value, &pool)` (see the crate docs).
    ///
    /// # Errors
    /// [`TypedAllocError::Alignment`] for an alignment above [`MAX_TYPED_ALIGN`],
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    /// `value` is dropped.
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let point = pool.alloc_value((3_u32, 4_u32)).unwrap();
    /// point.0 += 1;
    /// assert_eq!(*point, (4, 4));
    /// assert_eq!(pool.stats().live_blocks, 1);
    /// ```
    ///
    /// The reference cannot outlive its pool:
    ///
    /// ```compile_fail,E0505
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let value = pool.alloc_value(7_u64).unwrap();
    /// drop(pool);
    /// *value += 1;
    /// ```
    ///
    /// nor survive a reset, which would hand its memory out again:
    ///
    /// ```compile_fail,E0502
    /// let mut pool = melon_alloc_heap::HeapPool::new();
    /// let value = pool.alloc_value(7_u64).unwrap();
    /// pool.reset();
    /// *value += 1;
    /// ```
    ///
    /// # Soundness
    /// The block is in use and handed out to no one else. It comes back to the pool only through
    /// `reset`, which takes the pool by `&mut` and so cannot run while the reference lives,
    /// dropping the pool, ruled out the same way, or an unsafe free whose caller promises the
    /// reference is no longer used.
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_value<T>(&self, value: T) -> Result<&mut T, TypedAllocError> {
        core_typed::alloc_value(self, value)
    }

    /// Copies `s` into the pool. An empty string takes no memory.
    ///
    /// # Errors
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let name = pool.alloc_str("melon").unwrap();
    /// name.make_ascii_uppercase();
    /// assert_eq!(name, "MELON");
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_str(&self, s: &str) -> Result<&mut str, TypedAllocError> {
        core_typed::alloc_str(self, s)
    }

    /// Copies `src` into the pool. A slice of no bytes (empty, or of a zero-sized type) takes no
    /// memory.
    ///
    /// # Errors
    /// [`TypedAllocError::Alignment`] for an alignment above [`MAX_TYPED_ALIGN`],
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let primes = pool.alloc_slice_copy(&[2_u16, 3, 5, 7]).unwrap();
    /// primes[0] = 1;
    /// assert_eq!(primes, [1, 3, 5, 7]);
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], TypedAllocError> {
        core_typed::alloc_slice_copy(self, src)
    }

    /// Makes a slice of `len` elements in the pool, element `i` being `f(i)`. A slice of no
    /// bytes takes no memory; `f` is called for each element all the same.
    ///
    /// As with [`alloc_value`](Pool::alloc_value), the elements' `Drop` is not run when the pool
    /// is reset or dropped.
    ///
    /// # Errors
    /// [`TypedAllocError::Alignment`] for an alignment above [`MAX_TYPED_ALIGN`],
    /// [`TypedAllocError::Overflow`] when `len` elements do not fit in an `isize`,
    /// [`TypedAllocError::OutOfMemory`] when the pool refuses the bytes.
    ///
    /// # Panics
    /// Only if `f` panics. The panic passes on after the elements made so far are dropped and
    /// the block is freed: nothing half-made is handed out.
    ///
    /// # Examples
    /// ```
    /// let pool = melon_alloc_heap::HeapPool::new();
    /// let squares = pool.alloc_slice_fill_with(5, |i| i * i).unwrap();
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_with<T>(
        &self,
        len: usize,
        f: impl FnMut(usize) -> T,
    ) -> Result<&mut [T], TypedAllocError> {
        core_typed::alloc_slice_fill_with(self, len, f)
    }
}
