//! Cascading heap memory pools with hard limits, on the global allocator or on a parent pool.
//!
//! A [`HeapPool`] takes memory from the global allocator in aligned chunks and hands out blocks
//! from them several times faster than `malloc`, with no header per block. A
//! [`child`](Pool::child) takes its chunks from its parent instead, so a limit on the parent
//! caps the whole family; dropping a pool releases everything it holds at once. Blocks can be
//! freed by pointer alone with [`free`], as with Melon's `mln_alloc_free`.
//!
//! ```
//! use melon_alloc_heap::HeapPool;
//!
//! let root = HeapPool::with_limit(1 << 20);
//! let request = root.child_with_limit(64 << 10);
//! let buffer = request.alloc_zeroed(4096).unwrap();
//! // SAFETY: the block came from `request` and is not used again.
//! unsafe { melon_alloc_heap::free(buffer) };
//! assert_eq!(request.stats().live_blocks, 0);
//! drop(request);
//! assert_eq!(root.available(), Some(1 << 20));
//! ```

mod allocator;
mod global;
mod pool;

pub use global::GlobalSource;
pub use melon_alloc_core::{CheckError, FreeError, LockedPool, Problem, Stats};
pub use pool::{free, ChildPool, HeapPool, Pool};

/// A heap pool over the global allocator behind a spin lock: `Sync`, so threads can share it.
pub type LockedHeapPool = LockedPool<GlobalSource>;
