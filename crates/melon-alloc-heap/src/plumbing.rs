//! What the workspace's other crates (the shared pool, the C API) need of this one that is no
//! part of a pool's API: a `Box` made without aborting when the global allocator has no memory.
//!
//! # Examples
//! ```
//! let boxed = melon_alloc_heap::plumbing::try_box(|| 5u32)?;
//! assert_eq!(*boxed, 5);
//! # Ok::<(), melon_alloc_heap::AllocError>(())
//! ```

use core::alloc::Layout;
use core::ptr::NonNull;
use std::alloc;

use allocator_api2::alloc::AllocError;

/// `make`'s value in a `Box` of its own, written straight into its memory where the compiler
/// can, or `AllocError` when the global allocator has no memory for it, where `Box::new` aborts:
/// `Box::try_new`, which is not stable. `make` runs only once the memory is had; should it
/// panic, the memory leaks.
///
/// # Examples
/// ```
/// use core::mem::MaybeUninit;
///
/// let boxed = melon_alloc_heap::plumbing::try_box(|| [7u64; 128])?;
/// assert_eq!(boxed[127], 7);
/// // Memory first, the value later, as the C API makes a handle before its pool.
/// let mut place = melon_alloc_heap::plumbing::try_box(MaybeUninit::<u64>::uninit)?;
/// place.write(5);
/// // SAFETY: written just above.
/// assert_eq!(*unsafe { place.assume_init() }, 5);
/// # Ok::<(), melon_alloc_heap::AllocError>(())
/// ```
// Inlined, so that a pool's engine is written into its memory rather than copied there.
#[inline]
pub fn try_box<T>(make: impl FnOnce() -> T) -> Result<Box<T>, AllocError> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        // A zero-sized box allocates nothing.
        return Ok(Box::new(make()));
    }
    // SAFETY: the layout is not zero-sized.
    let place = NonNull::new(unsafe { alloc::alloc(layout) }.cast::<T>()).ok_or(AllocError)?;
    // SAFETY: (1) the place is allocated and aligned for a `T`, and holds no value yet; (2) it
    // came from the global allocator with `T`'s layout, which is what `Box::from_raw` asks.
    unsafe {
        place.as_ptr().write(make());
        Ok(Box::from_raw(place.as_ptr()))
    }
}
