//! Typed allocation: values, strings and slices placed in a pool and handed back as references
//! that borrow it, in the manner of bumpalo. [`LockedPool`](crate::LockedPool) and the heap
//! crate's pools serve them through the functions here, over the two calls of [`Blocks`].

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

/// The largest alignment the typed calls serve: the largest power of two below a chunk's size,
/// since a block must start within the first [`CHUNK_SIZE`](crate::CHUNK_SIZE) bytes of its
/// chunk for its header to be found by masking.
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource, TypedAllocError, MAX_TYPED_ALIGN};
///
/// #[repr(align(16384))]
/// struct Page([u8; 16384]);
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// assert!(align_of::<Page>() > MAX_TYPED_ALIGN);
/// let refused = pool.alloc_value(Page([0; 16384])).map(|_| ());
/// assert_eq!(refused, Err(TypedAllocError::Alignment { align: 16384 }));
/// ```
pub const MAX_TYPED_ALIGN: usize = crate::CHUNK_SIZE / 2;

/// Why a typed allocation (`alloc_value`, `alloc_str`, `alloc_slice_copy`,
/// `alloc_slice_fill_with`) handed back nothing. Nothing is handed out or counted against the
/// limit; a refusal for memory may first have given the pool's idle chunks back to its source,
/// as a trim does, to make room.
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource, TypedAllocError};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// let refused = pool.alloc_slice_fill_with(usize::MAX, |_| 0_u64).map(|_| ());
/// assert_eq!(refused, Err(TypedAllocError::Overflow { len: usize::MAX, elem_size: 8 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypedAllocError {
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
    /// The pool refused the bytes: they would pass its limit or an ancestor's, or its source
    /// has no memory for them.
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
            Self::Alignment { align } => {
                write!(f, "alignment {align} is above the pool's {MAX_TYPED_ALIGN}")
            }
            Self::Overflow { len, elem_size } => {
                write!(f, "{len} elements of {elem_size} bytes overflow an isize")
            }
            Self::OutOfMemory { size, align } => write!(
                f,
                "the pool refused {size} bytes aligned to {align}: they would pass its limit \
                 or an ancestor's, or its source has no memory for them"
            ),
        }
    }
}

impl core::error::Error for TypedAllocError {}

/// What typed allocation needs of a pool: a block for a layout, and its free.
///
/// # Safety
/// An implementation hands out from [`block`](Blocks::block) a block that no one else is handed
/// while it is in use, valid for `layout`, that stays valid and in use until it comes back
/// through [`give_back`](Blocks::give_back) or an unsafe free, or the pool is reset through a
/// unique borrow (`&mut`) or dropped.
///
/// # Examples
/// ```
/// use core::alloc::Layout;
///
/// use melon_alloc_core::plumbing::Blocks;
/// use melon_alloc_core::{LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// let block = pool.block(Layout::new::<u64>()).unwrap();
/// // SAFETY: the block came from `block` and is not used again.
/// unsafe { pool.give_back(block) };
/// assert_eq!(pool.stats().live_blocks, 0);
/// ```
pub unsafe trait Blocks {
    /// A block for `layout`, if the pool has one.
    fn block(&self, layout: Layout) -> Option<NonNull<u8>>;

    /// Frees a block that [`block`](Blocks::block) handed out.
    ///
    /// # Safety
    /// `block` came from this pool's [`block`](Blocks::block), is in use, and nothing uses it
    /// afterwards.
    unsafe fn give_back(&self, block: NonNull<u8>);
}

/// A block for `layout`, or the reason there is none: a zero-sized layout takes no memory and
/// gets a dangling pointer aligned for it. The checks come before the pool is asked, so that
/// an alignment it cannot serve reads as such rather than as no memory.
fn typed_block<P: Blocks + ?Sized>(
    pool: &P,
    layout: Layout,
) -> Result<NonNull<u8>, TypedAllocError> {
    if layout.align() > MAX_TYPED_ALIGN {
        return Err(TypedAllocError::Alignment { align: layout.align() });
    }
    if layout.size() == 0 {
        // A layout's alignment is a power of two, never 0: the fallback is never taken.
        let aligned = core::ptr::without_provenance_mut::<u8>(layout.align());
        return Ok(NonNull::new(aligned).unwrap_or(NonNull::dangling()));
    }
    pool.block(layout)
        .ok_or(TypedAllocError::OutOfMemory { size: layout.size(), align: layout.align() })
}

/// A block for `len` elements of `T`: dangling when they take no bytes.
fn slice_block<P: Blocks + ?Sized, T>(pool: &P, len: usize) -> Result<NonNull<T>, TypedAllocError> {
    let layout = Layout::array::<T>(len)
        .map_err(|_| TypedAllocError::Overflow { len, elem_size: size_of::<T>() })?;
    Ok(typed_block(pool, layout)?.cast())
}

/// Moves `value` into `pool` and returns a reference to it that borrows the pool; `value` is
/// dropped on error. See the typed calls of [`LockedPool`](crate::LockedPool).
///
/// # Examples
/// ```
/// use melon_alloc_core::{plumbing, LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// assert_eq!(*plumbing::alloc_value(&pool, 7_u32).unwrap(), 7);
/// ```
#[allow(clippy::mut_from_ref)]
pub fn alloc_value<P: Blocks + ?Sized, T>(pool: &P, value: T) -> Result<&mut T, TypedAllocError> {
    let block = typed_block(pool, Layout::new::<T>())?.cast::<T>();
    // SAFETY: the block is new (or dangling and aligned for a zero-sized `T`), holds a `T` and
    // is aligned for it.
    unsafe { block.as_ptr().write(value) };
    // SAFETY: the value was just written, and nothing else refers to the block while the pool
    // is borrowed: it comes back only through a reset that borrows the pool uniquely, the
    // pool's drop, or an unsafe free (`Blocks`' contract).
    Ok(unsafe { &mut *block.as_ptr() })
}

/// Copies `src` into `pool`. See the typed calls of [`LockedPool`](crate::LockedPool).
///
/// # Examples
/// ```
/// use melon_alloc_core::{plumbing, LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// assert_eq!(plumbing::alloc_slice_copy(&pool, &[1_u8, 2]).unwrap(), [1, 2]);
/// ```
#[allow(clippy::mut_from_ref)]
pub fn alloc_slice_copy<'p, P: Blocks + ?Sized, T: Copy>(
    pool: &'p P,
    src: &[T],
) -> Result<&'p mut [T], TypedAllocError> {
    let block = slice_block::<P, T>(pool, src.len())?;
    // SAFETY: the block is new, so disjoint from `src`, and holds `src.len()` aligned `T`s (or
    // is dangling and aligned, and the copy is of no bytes).
    unsafe { block.as_ptr().copy_from_nonoverlapping(src.as_ptr(), src.len()) };
    // SAFETY: every element was just written; the block is the caller's alone, as in
    // `alloc_value`.
    Ok(unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), src.len()) })
}

/// Copies `s` into `pool`. See the typed calls of [`LockedPool`](crate::LockedPool).
///
/// # Examples
/// ```
/// use melon_alloc_core::{plumbing, LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// assert_eq!(plumbing::alloc_str(&pool, "melon").unwrap(), "melon");
/// ```
#[allow(clippy::mut_from_ref)]
pub fn alloc_str<'p, P: Blocks + ?Sized>(
    pool: &'p P,
    s: &str,
) -> Result<&'p mut str, TypedAllocError> {
    let bytes = alloc_slice_copy(pool, s.as_bytes())?;
    // SAFETY: the bytes are a copy of a `str`, so valid UTF-8.
    Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
}

/// Frees a block on drop unless forgotten, and drops the elements written so far: what keeps a
/// panic in the fill function from leaving a half-made slice or a lost block.
struct FillGuard<'a, P: Blocks + ?Sized, T> {
    pool: &'a P,
    block: NonNull<T>,
    filled: usize,
    /// Whether the block came from the pool: a slice of no bytes has a dangling pointer instead.
    from_pool: bool,
}

impl<P: Blocks + ?Sized, T> Drop for FillGuard<'_, P, T> {
    fn drop(&mut self) {
        let written = NonNull::slice_from_raw_parts(self.block, self.filled);
        // SAFETY: the first `filled` elements were written and nothing else refers to them: the
        // slice was never handed out.
        unsafe { written.as_ptr().drop_in_place() };
        if self.from_pool {
            // SAFETY: the block came from `pool` in `alloc_slice_fill_with`, is in use, and
            // nothing refers to it once the guard goes.
            unsafe { self.pool.give_back(self.block.cast()) };
        }
    }
}

/// Makes a slice of `len` elements in `pool`, element `i` being `f(i)`. See the typed calls of
/// [`LockedPool`](crate::LockedPool).
///
/// # Examples
/// ```
/// use melon_alloc_core::{plumbing, LockedPool, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let pool = LockedPool::new(RegionSource::from_static(unsafe { &mut *(&raw mut ARENA) }), None);
/// assert_eq!(plumbing::alloc_slice_fill_with(&pool, 3, |i| i).unwrap(), [0, 1, 2]);
/// ```
#[allow(clippy::mut_from_ref)]
pub fn alloc_slice_fill_with<P: Blocks + ?Sized, T>(
    pool: &P,
    len: usize,
    mut f: impl FnMut(usize) -> T,
) -> Result<&mut [T], TypedAllocError> {
    let block = slice_block::<P, T>(pool, len)?;
    let from_pool = len != 0 && size_of::<T>() != 0;
    let mut guard = FillGuard { pool, block, filled: 0, from_pool };
    while guard.filled < len {
        let element = f(guard.filled);
        // SAFETY: `filled < len`, so the slot is inside the block (or the block is dangling and
        // aligned, and `T` has no size), aligned, and not yet written.
        unsafe { block.add(guard.filled).write(element) };
        guard.filled += 1;
    }
    core::mem::forget(guard);
    // SAFETY: all `len` elements were written; the block is the caller's alone, as in
    // `alloc_value`.
    Ok(unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) })
}
