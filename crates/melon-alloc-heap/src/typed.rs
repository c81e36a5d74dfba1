//! Typed allocation on a heap pool: values, strings and slices placed in the pool and handed
//! back as references that borrow it, in the manner of bumpalo.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use crate::Pool;

/// The largest alignment the typed calls serve: what [`Pool::alloc_layout`] promises, the
/// largest power of two below a chunk's size, since a block must start within the first
/// `CHUNK_SIZE` bytes of its chunk for its header to be found by masking.
///
/// # Examples
/// ```
/// use melon_alloc_heap::{HeapPool, TypedAllocError, MAX_TYPED_ALIGN};
///
/// #[repr(align(16384))]
/// struct Page([u8; 16384]);
/// let pool = HeapPool::new();
/// let refused = pool.alloc_value(Page([0; 16384])).map(|_| ());
/// assert_eq!(refused, Err(TypedAllocError::Alignment { align: 2 * MAX_TYPED_ALIGN }));
/// ```
// The engine serves alignments below a chunk's: the largest power of two below it.
pub const MAX_TYPED_ALIGN: usize = melon_alloc_core::CHUNK_SIZE / 2;

/// Why a typed allocation ([`Pool::alloc_value`], [`Pool::alloc_str`],
/// [`Pool::alloc_slice_copy`], [`Pool::alloc_slice_fill_with`]) handed back nothing. Nothing is
/// handed out or counted against the limit; a refusal for memory may first have given the pool's
/// idle chunks back to its source, as [`trim`](Pool::trim) does, to make room.
///
/// # Examples
/// ```
/// use melon_alloc_heap::{HeapPool, TypedAllocError};
///
/// let pool = HeapPool::new();
/// assert_eq!(pool.alloc_value(()), Err(TypedAllocError::ZeroSized));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypedAllocError {
    /// The type has no size: it needs no memory, and a pool block for it would be wasted.
    ZeroSized,
    /// The type's alignment is above [`MAX_TYPED_ALIGN`].
    Alignment {
        /// The alignment asked for.
        align: usize,
    },
    /// `len` elements of `elem_size` bytes do not fit in an `isize`.
    Overflow {
        /// The number of elements asked for.
        len: usize,
        /// The size of one element.
        elem_size: usize,
    },
    /// The pool's limit would be passed, or its source has no memory.
    OutOfMemory {
        /// The bytes asked for.
        size: usize,
        /// Their alignment.
        align: usize,
    },
}

impl fmt::Display for TypedAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroSized => f.write_str("a zero-sized type takes no pool memory"),
            Self::Alignment { align } => {
                write!(f, "alignment {align} is above the pool's {MAX_TYPED_ALIGN}")
            }
            Self::Overflow { len, elem_size } => {
                write!(f, "{len} elements of {elem_size} bytes overflow an isize")
            }
            Self::OutOfMemory { size, align } => {
                write!(f, "no memory for {size} bytes aligned to {align} within the pool's limit")
            }
        }
    }
}

impl core::error::Error for TypedAllocError {}

/// Frees a block on drop unless forgotten, and drops the elements written so far: what keeps a
/// panic in the fill function from leaving a half-made slice or a lost block.
struct FillGuard<'a, T> {
    pool: &'a Pool,
    block: NonNull<T>,
    filled: usize,
}

impl<T> Drop for FillGuard<'_, T> {
    fn drop(&mut self) {
        let written = NonNull::slice_from_raw_parts(self.block, self.filled);
        // SAFETY: the first `filled` elements were written and nothing else refers to them: the
        // slice was never handed out.
        unsafe { written.as_ptr().drop_in_place() };
        // SAFETY: the block came from `pool` in `alloc_slice_fill_with`, is in use, and nothing
        // refers to it once the guard goes.
        unsafe { self.pool.free(self.block.cast()) };
    }
}

impl Pool {
    /// A block for `layout`, or the reason there is none. The checks come before the pool is
    /// asked, so that an alignment it cannot serve reads as such rather than as no memory.
    fn typed_block(&self, layout: Layout) -> Result<NonNull<u8>, TypedAllocError> {
        if layout.size() == 0 {
            return Err(TypedAllocError::ZeroSized);
        }
        if layout.align() > MAX_TYPED_ALIGN {
            return Err(TypedAllocError::Alignment { align: layout.align() });
        }
        self.alloc_layout(layout)
            .ok_or(TypedAllocError::OutOfMemory { size: layout.size(), align: layout.align() })
    }

    /// A block for `len` elements of `T`, or `None` for an empty slice, which takes no memory.
    fn slice_block<T>(&self, len: usize) -> Result<Option<NonNull<T>>, TypedAllocError> {
        if size_of::<T>() == 0 {
            return Err(TypedAllocError::ZeroSized);
        }
        if len == 0 {
            return Ok(None);
        }
        let layout = Layout::array::<T>(len)
            .map_err(|_| TypedAllocError::Overflow { len, elem_size: size_of::<T>() })?;
        Ok(Some(self.typed_block(layout)?.cast()))
    }

    /// Moves `value` into the pool and returns a reference to it that borrows the pool.
    ///
    /// The value's `Drop` is **not** run: not when the reference goes, nor when the pool is
    /// reset or dropped; its memory simply comes back with the pool's. For a value whose `Drop`
    /// must run, use `allocator_api2::boxed::Box::new_in(value, &pool)` (see the crate docs).
    ///
    /// # Errors
    /// [`TypedAllocError::ZeroSized`] for a zero-sized `T`, [`TypedAllocError::Alignment`] for an
    /// alignment above [`MAX_TYPED_ALIGN`], [`TypedAllocError::OutOfMemory`] at the pool's limit.
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
        let block = self.typed_block(Layout::new::<T>())?.cast::<T>();
        // SAFETY: the block is new, holds a `T` and is aligned for it.
        unsafe { block.as_ptr().write(value) };
        // SAFETY: the value was just written, and nothing else refers to the block while the
        // pool is borrowed (see "Soundness").
        Ok(unsafe { &mut *block.as_ptr() })
    }

    /// Copies `s` into the pool. An empty string takes no memory.
    ///
    /// # Errors
    /// [`TypedAllocError::OutOfMemory`] at the pool's limit.
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
        let bytes = self.alloc_slice_copy(s.as_bytes())?;
        // SAFETY: the bytes are a copy of a `str`, so valid UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Copies `src` into the pool. An empty slice takes no memory.
    ///
    /// # Errors
    /// [`TypedAllocError::ZeroSized`] for a zero-sized `T`, [`TypedAllocError::Alignment`] for an
    /// alignment above [`MAX_TYPED_ALIGN`], [`TypedAllocError::OutOfMemory`] at the pool's limit.
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
        let Some(block) = self.slice_block::<T>(src.len())? else {
            return Ok(&mut []);
        };
        // SAFETY: the block is new, so disjoint from `src`, and holds `src.len()` aligned `T`s.
        unsafe { block.as_ptr().copy_from_nonoverlapping(src.as_ptr(), src.len()) };
        // SAFETY: every element was just written; the block is the caller's alone, as in
        // `alloc_value`.
        Ok(unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), src.len()) })
    }

    /// Makes a slice of `len` elements in the pool, element `i` being `f(i)`. An empty slice
    /// takes no memory, and `f` is not called.
    ///
    /// As with [`alloc_value`](Pool::alloc_value), the elements' `Drop` is not run when the pool
    /// is reset or dropped.
    ///
    /// # Errors
    /// [`TypedAllocError::ZeroSized`] for a zero-sized `T`, [`TypedAllocError::Alignment`] for an
    /// alignment above [`MAX_TYPED_ALIGN`], [`TypedAllocError::Overflow`] when `len` elements do
    /// not fit in an `isize`, [`TypedAllocError::OutOfMemory`] at the pool's limit.
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
        mut f: impl FnMut(usize) -> T,
    ) -> Result<&mut [T], TypedAllocError> {
        let Some(block) = self.slice_block::<T>(len)? else {
            return Ok(&mut []);
        };
        let mut guard = FillGuard { pool: self, block, filled: 0 };
        while guard.filled < len {
            let element = f(guard.filled);
            // SAFETY: `filled < len`, so the slot is inside the block, aligned, and not yet
            // written.
            unsafe { block.add(guard.filled).write(element) };
            guard.filled += 1;
        }
        core::mem::forget(guard);
        // SAFETY: all `len` elements were written; the block is the caller's alone, as in
        // `alloc_value`.
        Ok(unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) })
    }
}
