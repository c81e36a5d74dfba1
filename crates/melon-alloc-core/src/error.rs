//! What can go wrong when a block is handed back.

use core::fmt;

/// Why a checked free refused a pointer. Nothing was changed.
///
/// # Examples
/// ```
/// # use core::ptr::NonNull;
/// # use melon_alloc_core::{Engine, FreeError, RegionSource};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
/// let mut engine = Engine::new(source, None);
/// let mut elsewhere = 0u64;
/// let foreign = NonNull::from(&mut elsewhere).cast::<u8>();
/// // SAFETY: the pointer is no block of this engine, which `try_free` finds: it changes nothing.
/// let error = unsafe { engine.try_free(foreign) }.unwrap_err();
/// assert_eq!(error, FreeError::Foreign { addr: foreign.as_ptr() as usize });
/// assert!(error.to_string().ends_with("does not belong to this pool"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// The pointer lies in no chunk of this pool: it came from another pool, another
    /// allocator, or nowhere. A large block freed already went back to the source with its
    /// chunk, so a second free of it is refused as foreign, as long as the pool has not taken
    /// that memory again since.
    Foreign {
        /// The address that was passed in.
        addr: usize,
    },
    /// The pointer lies inside a chunk of this pool but is not the start of a block.
    Interior {
        /// The address that was passed in.
        addr: usize,
    },
    /// The pointer is the start of a block of a size class that is not in use: freed already,
    /// or never handed out.
    NotInUse {
        /// The address that was passed in.
        addr: usize,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Foreign { addr } => write!(f, "{addr:#x} does not belong to this pool"),
            Self::Interior { addr } => {
                write!(f, "{addr:#x} points inside a block, not at its start")
            }
            Self::NotInUse { addr } => {
                write!(f, "{addr:#x} is not in use (double free, or never allocated)")
            }
        }
    }
}

impl core::error::Error for FreeError {}
