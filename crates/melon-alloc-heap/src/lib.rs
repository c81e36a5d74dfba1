//! Cascading heap memory pools with hard limits, on the global allocator or on a parent pool.
//!
//! A [`HeapPool`] takes memory from the global allocator in aligned chunks and hands out blocks
//! from them several times faster than `malloc`, with no header per block. A
//! [`child`](Pool::child) takes its chunks from its parent instead, so a limit on the parent
//! caps the whole family; dropping a pool releases everything it holds at once. Blocks can be
//! freed by pointer alone with [`free`], as with Melon's `mln_alloc_free`. On Linux,
//! [`LockedHeapPool`] shares one pool between threads behind a spin lock, over memory that
//! [`OsSource`] maps from the system, so that it can be a program's `#[global_allocator]`.
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
//!
//! # What a collection sees at a pool's limit
//!
//! A collection in a pool (`allocator_api2::vec::Vec`, `hashbrown::HashMap`) asks the pool for
//! its buffer through [`Allocator`](allocator_api2::alloc::Allocator), and the limit answers
//! like any allocator that is out of memory:
//!
//! - `try_reserve` and `try_reserve_exact` return an error and leave the collection as it was.
//!   This is the way to meet a limit and carry on.
//! - A growth that cannot be refused, such as `push`, calls `handle_alloc_error`, which prints
//!   `memory allocation of N bytes failed` and aborts the process, as when the global allocator
//!   runs out.
//! - A `Vec` that grows by pushes doubles its buffer, and a buffer that cannot grow in place
//!   moves: during the move the old and the new buffer are both in the pool. So a `Vec` alone in
//!   a pool stops growing at the largest power of two that fits in the limit beside its half,
//!   with a header each: exactly half the limit for a limit that is a power of two from 32 KiB
//!   up, and between a third and two thirds of it otherwise (1 MiB of a 3 MiB limit, 64 KiB of
//!   100 KiB); the last doubling is refused. A limit of one 16 KiB chunk is
//!   tighter still, as each size class in use takes a chunk (a page of one in a child pool):
//!   grown a byte at a time, a `Vec` stops at 16 bytes in a root pool and at 2 KiB in a child;
//!   grown 4 KiB at a time, at 4 KiB. Reserving the capacity up front, with
//!   `with_capacity_in` or `try_reserve_exact`, takes one buffer and reaches nearly the whole
//!   limit.
//!
//! ```
//! use allocator_api2::vec::Vec;
//! use melon_alloc_heap::HeapPool;
//!
//! const LIMIT: usize = 1 << 20;
//! let pool = HeapPool::with_limit(LIMIT);
//! let mut grown = Vec::<u8, _>::new_in(&pool);
//! while grown.try_reserve(4096).is_ok() {
//!     grown.extend_from_slice(&[0; 4096]);
//! }
//! assert_eq!(grown.len(), LIMIT / 2);
//! assert!(grown.try_reserve_exact(LIMIT).is_err());
//! drop(grown);
//!
//! let reserved = Vec::<u8, _>::with_capacity_in(LIMIT / 8 * 7, &pool);
//! assert_eq!(reserved.capacity(), LIMIT / 8 * 7);
//! ```
//!
//! # When the system has no memory for a pool
//!
//! A pool's own bookkeeping comes from the global allocator when the pool is made.
//! [`HeapPool::new`], [`Pool::child`] and the other constructors abort through
//! `handle_alloc_error` when there is none, as `Box::new` does; [`HeapPool::try_new`],
//! [`HeapPool::try_with_limit`], [`Pool::try_child`], [`Pool::try_child_with_limit`] and
//! [`ChildPool::try_with_source`] return [`AllocError`] instead, for a program that must carry
//! on (the C API's `mln_alloc_init` returns NULL through them).
//!
//! # Typed values, and values whose `Drop` runs
//!
//! [`Pool::alloc_value`], [`Pool::alloc_str`], [`Pool::alloc_slice_copy`] and
//! [`Pool::alloc_slice_fill_with`] place values in a pool and hand back `&mut` references that
//! borrow it, as bumpalo does; their `Drop` never runs, and their memory comes back when the
//! pool is reset or dropped. The locked pools ([`SyncPool`], [`SyncChild`], any [`LockedPool`])
//! have the same calls, for values shared between threads. A value whose `Drop` must run goes in an
//! `allocator_api2::boxed::Box` in the pool instead, which frees its block when dropped:
//!
//! ```
//! use std::cell::Cell;
//!
//! use allocator_api2::boxed::Box;
//! use melon_alloc_heap::HeapPool;
//!
//! struct Counted<'a>(&'a Cell<u32>);
//! impl Drop for Counted<'_> {
//!     fn drop(&mut self) {
//!         self.0.set(self.0.get() + 1);
//!     }
//! }
//!
//! let drops = Cell::new(0);
//! let pool = HeapPool::new();
//! let placed = pool.alloc_value(Counted(&drops)).unwrap();
//! let boxed = Box::new_in(Counted(&drops), &pool);
//! assert_eq!(pool.stats().live_blocks, 2);
//! drop(boxed);
//! assert_eq!(drops.get(), 1);
//! assert_eq!(pool.stats().live_blocks, 1);
//! let _ = placed;
//! drop(pool);
//! // The placed value's `Drop` did not run.
//! assert_eq!(drops.get(), 1);
//! ```

//! # Pools that cross `.await`
//!
//! A [`HeapPool`] is `Send` but not `Sync`, so a future that holds `&HeapPool`, or a collection
//! in one, across an `.await` cannot go to `tokio::spawn` on a multi-threaded runtime. A
//! [`SyncPool`] can: it is a [`LockedPool`] over the global allocator, `Send` and `Sync`, and
//! its [`child_with_limit`](LockedPool::child_with_limit) is a [`SyncChild`], `Send` and `Sync`
//! too, that takes its chunks from the root: from a stripe of chunks the root keeps for the
//! calling thread, or else through the root's lock (see
//! [`ChunkSource::stash_stripe`](melon_alloc_core::ChunkSource::stash_stripe)). `&SyncPool` and
//! `&SyncChild` are `Allocator`s, so `allocator_api2` and `hashbrown` collections live in them.
//! The pattern for a server is one root for the program (a `static`, or an `Arc`) and a child
//! per request, made in the request's task and dropped when it ends, which gives the request's
//! chunks back to the root at once:
//!
//! ```
//! use allocator_api2::vec::Vec;
//! use melon_alloc_heap::{GlobalSource, SyncChild, SyncPool};
//!
//! static ROOT: SyncPool = SyncPool::new(GlobalSource::new(), None);
//!
//! fn assert_send<T: Send>(_: &T) {}
//! fn assert_sync<T: Sync>() {}
//! assert_sync::<SyncPool>();
//! assert_sync::<SyncChild<'static>>();
//!
//! async fn yield_once() {}
//!
//! let request = async {
//!     let child = ROOT.child_with_limit(1 << 20);
//!     let mut body = Vec::new_in(&child);
//!     body.extend_from_slice(b"hello");
//!     // `child` and `body` live across the `.await`, so the future holds them.
//!     yield_once().await;
//!     body.len()
//! };
//! // A future that is `Send` is what `tokio::spawn` asks for.
//! assert_send(&request);
//! ```
//!
//! Each call takes the pool's spin lock, one atomic compare-and-swap when no other thread holds
//! it; a child takes the root's lock only when it needs a chunk or gives one back, so requests on
//! different threads meet there rather than on every allocation. `cargo run --release --example
//! per_request` in the `melon-alloc` crate runs the pattern on a tokio runtime.
//!
//! # When to use it, and when not
//!
//! Use a pool for memory with a lifetime and a bound: a request's, a connection's, a
//! subsystem's; dropping the pool frees it all at once, and a limit holds for the whole tree.
//! Not for many buffers of tens of kilobytes (each gets a chunk of its own), and a [`HeapPool`]
//! is not `Sync`: share one through [`SyncPool`] or [`LockedHeapPool`].
//!
//! # Features
//!
//! | feature | default | what it does |
//! |---|---|---|
//! | `valgrind` | no | makes memcheck check accesses to pool blocks (x86_64 only) |
//!
//! # Platforms
//!
//! Any target with `std` whose clock (`std::time::Instant`) works: the global source reads it
//! to tell how long ago its load was last high (`wasm32-unknown-unknown` has no such clock).
//! [`OsSource`], and so [`LockedHeapPool`], is Linux only, as are the huge-page hints of the
//! global source.

// The pools' sources, their recycling and their limits are written for 16 KiB chunks: a build
// that turns on the core's `small-chunks` feature (for firmware, which uses the core alone) is
// refused here rather than run on rules made for another size.
const _: () = assert!(
    melon_alloc_core::CHUNK_SIZE == 16 << 10,
    "melon-alloc-heap needs 16 KiB chunks: melon-alloc-core's `small-chunks` feature is for the core alone"
);

mod allocator;
mod family;
mod global;
#[cfg(target_os = "linux")]
mod os;
/// Items for the workspace's other crates (the shared pool, the C API): public only so that
/// those crates can reach them, they are not part of this crate's API and follow no semver
/// promise.
#[doc(hidden)]
pub mod plumbing;
mod pool;
mod recycle;
mod sys;
mod typed;

/// What a fallible constructor (`try_new`, `try_child`, ...) returns when the global allocator has
/// no memory for the pool's bookkeeping: the `Allocator` trait's error, from `allocator-api2`.
///
/// ```
/// use melon_alloc_heap::{AllocError, HeapPool};
///
/// fn pool_for_a_request() -> Result<HeapPool, AllocError> {
///     HeapPool::try_with_limit(1 << 20)
/// }
/// assert!(pool_for_a_request().is_ok());
/// ```
pub use allocator_api2::alloc::AllocError;
pub use family::{abandon_every_family, lock_families};
pub use global::{GlobalSource, KEEP_SLABS_FOR};
pub use melon_alloc_core::{CheckError, FreeError, LockedChild, LockedPool, Problem, Stats};
#[cfg(target_os = "linux")]
pub use os::OsSource;
pub use pool::{free, ChildPool, HeapPool, Pool};
pub use typed::{TypedAllocError, MAX_TYPED_ALIGN};

/// A pool behind a spin lock, over memory mapped from the operating system: `Sync`, so threads
/// can share it, and fit to be the `#[global_allocator]`, since [`OsSource`] never calls the
/// global allocator.
///
/// A process that forks while another of its threads holds the pool's lock leaves the child a
/// lock that nobody will release: the pool registers no fork handlers, so a program with threads
/// whose global allocator it is forks only to `exec` (as `std::process::Command` does, which
/// allocates nothing in the child).
///
/// # Examples
///
/// ```
/// use melon_alloc_heap::{LockedHeapPool, OsSource};
///
/// #[global_allocator]
/// static POOL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), None);
///
/// let words: Vec<String> = (0..1000).map(|i| format!("word {i}")).collect();
/// assert_eq!(words[999], "word 999");
/// assert!(POOL.stats().live_blocks >= 1000);
/// POOL.check().unwrap();
/// ```
#[cfg(target_os = "linux")]
pub type LockedHeapPool = LockedPool<OsSource>;

/// A pool for data shared between threads and held across `.await`: a [`LockedPool`] over the
/// global allocator, `Send` and `Sync`, whose children ([`SyncChild`]) are too.
///
/// Where [`LockedHeapPool`] maps its memory from the system to be fit for the
/// `#[global_allocator]`, a `SyncPool` takes it from the global allocator, on every platform,
/// and its root keeps its slabs as a [`HeapPool`]'s does, so that the next child takes nothing
/// from the global allocator. A root with no limit also keeps the chunks its children give back
/// in a stripe of the giving thread, up to 16 chunks in each of 8 stripes, for the next child on
/// that thread (the first 8 threads to ask have a stripe each, and later ones share them):
/// children on different threads then rarely take the root's lock
/// ([`ChunkSource::stash_stripe`](melon_alloc_core::ChunkSource::stash_stripe)).
/// The root's `stats` count those chunks as held, not lent, among its `chunks`. The source gives
/// slabs back only once every chunk has come back to it, so one time in 64 that a stripe keeps
/// a chunk (if the root's lock is free then), and whenever a chunk goes back to the root's
/// engine, the root looks whether it lends any chunk but those the stripes keep: if not, it
/// gives them all back to the source, which keeps the slabs as it does for a [`HeapPool`],
/// giving back what a burst of children left once they have needed less for a second
/// ([`KEEP_SLABS_FOR`]). A root whose children never all end at once keeps its slabs until a
/// trim ([`LockedPool::trim`]), which gives back the stripes' chunks and, with no chunk out,
/// every slab. Under light traffic after a burst the look comes seldom (a request whose child
/// takes two chunks from its thread's stripe makes one look in 32 requests) and finds nothing
/// lent only if no other request holds a chunk just then, so what the burst needed may stay for
/// minutes: a server with bursts and long lulls calls `trim` now and then, from a timer task,
/// say. The root's `stats` count the chunks it holds; what its source keeps besides, the slabs
/// those chunks came from, is `root.with(|engine| engine.source().slab_bytes())`.
///
/// Its blocks' chunks name the address the pool had when it took them, as
/// [`LockedPool`]'s do: a `SyncPool` or a [`SyncChild`] moved after its first allocation still
/// frees its blocks, but its `check` reports them as another pool's
/// ([`Problem::WrongOwner`]). Keep a root in a `static`, a `Box` or an `Arc` from the start.
///
/// A `SyncPool` must not be the
/// `#[global_allocator]`: its source would then call the pool that calls it, which the
/// [`ChunkSource`](melon_alloc_core::ChunkSource) contract forbids. [`LockedHeapPool`] is the one
/// for that.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use hashbrown::HashMap;
/// use melon_alloc_heap::{GlobalSource, SyncPool};
///
/// let root = Arc::new(SyncPool::new(GlobalSource::new(), None));
/// let workers: Vec<_> = (0..2)
///     .map(|worker| {
///         let root = Arc::clone(&root);
///         std::thread::spawn(move || {
///             let request = root.child_with_limit(1 << 20);
///             let mut map = HashMap::new_in(&request);
///             map.insert(worker, "done");
///             map.len()
///         })
///     })
///     .collect();
/// for worker in workers {
///     assert_eq!(worker.join().unwrap(), 1);
/// }
/// assert_eq!(root.stats().live_blocks, 0);
/// ```
pub type SyncPool = LockedPool<GlobalSource>;

/// A child of a [`SyncPool`], made by [`child`](LockedPool::child) or
/// [`child_with_limit`](LockedPool::child_with_limit): `Send` and `Sync`, with chunks taken from
/// the root through its lock and given back when the child is dropped.
///
/// # Examples
///
/// ```
/// use allocator_api2::vec::Vec;
/// use melon_alloc_heap::{GlobalSource, SyncChild, SyncPool};
///
/// let root = SyncPool::new(GlobalSource::new(), None);
/// // A limit of one 16 KiB chunk.
/// let child: SyncChild<'_> = root.child_with_limit(16 << 10);
/// let mut bytes = Vec::new_in(&child);
/// assert!(bytes.try_reserve(32 << 10).is_err());
/// bytes.extend_from_slice(&[7; 800]);
/// assert_eq!(child.stats().live_blocks, 1);
/// ```
pub type SyncChild<'a> = LockedChild<'a, GlobalSource>;
