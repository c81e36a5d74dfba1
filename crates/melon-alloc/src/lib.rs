//! Fast, lean memory pools with hard limits: cascading heap pools, and pools shared between
//! processes that survive the death of any of them.
//!
//! This crate is the index of the workspace: the types a user needs first at the root, and each
//! layer under its own name for the rest.
//!
//! ```
//! use melon_alloc::HeapPool;
//!
//! let root = HeapPool::new();
//! let child = root.child_with_limit(1 << 20);
//! let block = child.alloc(64).unwrap();
//! // SAFETY: the block came from a heap pool and is not used again.
//! unsafe { melon_alloc::free(block) };
//! assert_eq!(child.stats().live_blocks, 0);
//! ```
//!
//! # Platforms
//!
//! - Linux: everything.
//! - Any other target with `std` whose clock (`std::time::Instant`) works: the heap pools
//!   ([`HeapPool`], its children, [`SyncPool`]) over the global allocator. The shared-memory
//!   pool (`shm`) and the pool over memory mapped from the system (`LockedHeapPool` over
//!   `OsSource`) are Linux only. `cargo xtask ci` checks the workspace's library crates for
//!   macOS (`x86_64-apple-darwin`) to keep it so.
//! - No `std` (firmware, kernels): `melon-alloc-core` alone.

// Not `core`: a glob import of this crate would then shadow the language's `core` crate.
#[doc(inline)]
pub use melon_alloc_core as engine;
#[doc(inline)]
pub use melon_alloc_heap as heap;
#[cfg(target_os = "linux")]
#[doc(inline)]
pub use melon_alloc_shm as shm;

pub use melon_alloc_core::{CheckError, FreeError, Problem, Stats};
pub use melon_alloc_heap::{ChildPool, HeapPool, Pool, SyncChild, SyncPool};
#[cfg(target_os = "linux")]
pub use melon_alloc_heap::{LockedHeapPool, OsSource};
#[cfg(target_os = "linux")]
pub use melon_alloc_shm::{ShmError, ShmLock, ShmPool};

/// Frees a block by its pointer alone (Melon's `mln_alloc_free`): a block of a heap pool
/// ([`HeapPool`], [`ChildPool`]), of a shared pool, or of a child of either, and a block
/// [handed off](ShmPool::hand_off) from a child of a shared pool, in any process. A block of a
/// shared pool takes that pool's lock. The pools behind a lock of their own
/// ([`LockedHeapPool`], [`SyncPool`], [`SyncChild`]) are not among them.
///
/// In debug builds, a block that its shared pool refuses (a double free, say), or a free by a
/// thread that holds that pool's lock itself, aborts the process with a message; release builds
/// leave the pool as it was. A block whose shared pool's lock cannot be taken (its timeout ran
/// out, or the lock failed) stays allocated, in every build.
///
/// # Safety
/// - `block` is an in-use block of a live [`HeapPool`], [`ChildPool`] or `ShmPool` (not of a
///   [`LockedHeapPool`], [`SyncPool`] or [`SyncChild`]), and nothing uses it afterwards, in any
///   process.
/// - No operation on a heap pool that owns it is in progress on another thread.
///
/// # Examples
///
/// ```
/// use melon_alloc::{HeapPool, ShmPool};
///
/// let heap = HeapPool::new();
/// let shm = ShmPool::new(1 << 20)?;
/// let child = shm.child();
/// let blocks = [heap.alloc(64), shm.alloc(64), child.alloc(64)].map(Option::unwrap);
/// for block in blocks {
///     // SAFETY: the block is in use in a live pool, and not used again; one thread uses the
///     // pools.
///     unsafe { melon_alloc::free(block) };
/// }
/// assert_eq!(heap.stats().live_blocks + child.stats().live_blocks, 0);
/// assert_eq!(shm.stats()?.live_blocks, 0);
/// # Ok::<(), melon_alloc::ShmError>(())
/// ```
pub unsafe fn free(block: ::core::ptr::NonNull<u8>) {
    #[cfg(target_os = "linux")]
    // SAFETY: forwarded from the caller.
    if let Some(result) = unsafe { melon_alloc_shm::plumbing::free_shared(block) } {
        melon_alloc_shm::plumbing::abort_on_misused_free(result);
        return;
    }
    // SAFETY: not a block of a shared pool itself, so a block of a heap pool (a child of a shared
    // pool included), as the caller promises.
    unsafe { melon_alloc_heap::free(block) }
}

/// The examples of the workspace README, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
#[doc(hidden)]
pub struct ReadmeDoctests;
