//! Fast, lean memory pools with hard limits: cascading heap pools, and (soon after) pools shared
//! between forked processes.
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

#[doc(inline)]
pub use melon_alloc_core as core;
#[doc(inline)]
pub use melon_alloc_heap as heap;

pub use melon_alloc_core::{CheckError, FreeError, Problem, Stats};
pub use melon_alloc_heap::{free, ChildPool, HeapPool, LockedHeapPool, Pool};

/// The examples of the workspace README, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
