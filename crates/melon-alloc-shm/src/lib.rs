//! A memory pool in shared memory: made before `fork()` or attached by descriptor, safe when a
//! process dies holding its lock, and as fast when full as when empty.
//!
//! A [`ShmPool`] lives in one shared mapping of a memfd. A parent makes it before forking, and it
//! and its children (and siblings) allocate and free in it; an unrelated process can
//! [`attach`](ShmPool::attach) to its descriptor instead. Everything inside the mapping is
//! offsets, so each process may map it at a different address.
//!
//! - Small blocks come from slabs of one size class without a header per block, so 64-byte
//!   objects fill nearly the whole capacity; large blocks are runs of 4 KiB pages. Allocation
//!   and free are O(1) in the size and fill of the pool, except that an allocation that finds no
//!   free run first walks the size classes' lists to give back empty slabs; `stats` and `check`
//!   walk the pages.
//! - Each operation takes the pool's lock: the built-in one is the C library's robust,
//!   process-shared mutex in the mapping, which the kernel hands on when its holder dies, in
//!   whatever pid namespace; or any [`ShmLock`] of the user's. A process may bound its wait
//!   for a holder that is alive but stopped ([`ShmPool::try_lock_for`],
//!   [`ShmPool::set_lock_timeout`]).
//! - Every change to the pool's state goes through an undo log, so an operation interrupted by
//!   the death of its process is rolled back by the next process to take the lock.
//! - [`ShmPool::child`] makes a heap pool that takes its chunks from the shared pool, locking once
//!   per chunk.

mod allocator;
mod arena;
mod children;
mod error;
pub mod failpoint;
mod layout;
mod lock;
#[cfg(melon_loom)]
#[doc(hidden)]
pub mod model;
mod pool;
mod registry;
mod stats;
mod sync;
mod sys;
mod tx;

pub use error::{LockError, ShmCheckError, ShmError};
pub use lock::ShmLock;
pub use pool::{ShmGuard, ShmPool};
pub use registry::free_shared;
pub use stats::{ShmClassStats, ShmStats};
