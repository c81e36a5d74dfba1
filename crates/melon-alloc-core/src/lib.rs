//! The `no_std` engine of melon-alloc: size classes, chunk and block bookkeeping, limits,
//! statistics and an invariant scan, over any source of memory.
//!
//! A pool takes aligned chunks of [`CHUNK_SIZE`] bytes from a [`ChunkSource`] (the global
//! allocator, a parent pool, a shared mapping, a static arena) and cuts each into blocks of one
//! size class. Blocks carry no header: the chunk of a block is found by masking its address, so a
//! 64-byte request costs 64 bytes plus its share of one 64-byte header per 16 KiB chunk. Requests
//! over [`MAX_SMALL`] bytes get a chunk of their own. The [`Engine`] needs no allocator of its
//! own, which is what lets it run in a kernel or on a microcontroller; [`LockedPool`] puts it
//! behind a spin lock for use from several threads or as a `#[global_allocator]`.
//!
//! ```
//! use core::alloc::Layout;
//! use core::ptr::NonNull;
//! use melon_alloc_core::{ChunkSource, Engine};
//!
//! /// Takes chunks straight from the global allocator.
//! struct System;
//!
//! // SAFETY: chunks come from `std::alloc::alloc` with the asked-for layout and go back to
//! // `dealloc` with the same layout.
//! unsafe impl ChunkSource for System {
//!     fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
//!         // SAFETY: the engine never asks for a zero-sized layout.
//!         NonNull::new(unsafe { std::alloc::alloc(layout) })
//!     }
//!     unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
//!         // SAFETY: the caller returns a chunk from `acquire` with its layout.
//!         unsafe { std::alloc::dealloc(chunk.as_ptr(), layout) }
//!     }
//! }
//!
//! let mut pool = Engine::new(System, Some(1 << 20));
//! let block = pool.alloc(64).unwrap();
//! assert_eq!(block.as_ptr() as usize % 16, 0);
//! assert_eq!(pool.stats().live_blocks, 1);
//! // SAFETY: `block` came from this engine and is not used again.
//! unsafe { pool.free(block) };
//! pool.check().unwrap();
//! ```
//!
//! # When to use it, and when not
//!
//! Use it where there is no operating system or no allocator (firmware, kernels), or to build a
//! pool over memory of your own. On a program's heap, `melon-alloc-heap` (or the `melon-alloc`
//! facade) gives the same engine with a safe API, children and a global source. The engine takes
//! 16 KiB chunks: every size class in use holds at least one, so a region much smaller than
//! 16 KiB times the classes a program uses serves only some of them. A region is cut into whole
//! chunks aligned to their size, so one that is not aligned loses the bytes before its first
//! chunk and after its last. For regions of a few tens of KiB, the `small-chunks` feature makes
//! chunks 4 KiB: sixteen of them (64 KiB aligned to 4 KiB, or 68 KiB wherever it lies) hold blocks
//! of eight classes with half of the region still free, where four 16 KiB chunks leave room for
//! four classes and nothing else.
//!
//! # Features
//!
//! | feature | default | what it does |
//! |---|---|---|
//! | `allocator-api2` | yes | implements `allocator_api2::alloc::Allocator` for `LockedPool` |
//! | `pages` | yes | cheap child pools: an engine made `with_pages` (a child's) gives the classes it barely uses 4 KiB pages of a split chunk, and its drop visits only the classes it used; without it, that code is left out |
//! | `chunk-aligned` | yes | a `LockedPool` used as a `GlobalAlloc` serves a layout aligned to a chunk or more with a chunk of its own, so that heap pools (whose slabs are aligned to 16 KiB) work on top of it; without it such a layout is refused, and that code is left out |
//! | `valgrind` | no | tells memcheck about every block handed out and freed (x86_64 only) |
//! | `small-chunks` | no | 4 KiB chunks and classes up to 2016 bytes, for small regions; the heap and shared-memory crates refuse it |
//!
//! # Platforms
//!
//! Any target with `core` and compare-and-swap atomics: tested on x86_64 Linux, and run on a
//! Cortex-M4 (`thumbv7em-none-eabihf`) under QEMU by `cargo xtask no-std`. A target without
//! them (a Cortex-M0, `thumbv6m-none-eabi`) fails to build with a message that says so.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The pool's lock and its children's counters are compare-and-swap atomics; a target without
// them (ARMv6-M, RISC-V without the A extension) is told so here rather than by a missing method.
#[cfg(not(all(target_has_atomic = "8", target_has_atomic = "ptr")))]
compile_error!(
    "melon-alloc-core needs compare-and-swap atomics on bytes and pointers, which this target \
     lacks"
);

mod check;
mod chunk;
mod class;
mod engine;
mod error;
mod locked;
mod region;
mod source;
mod spin;
mod stash;
mod stats;
mod sync;
mod typed;
#[cfg(feature = "valgrind")]
mod valgrind;

pub use check::{CheckError, Problem};
pub use chunk::{CHUNK_SIZE, SMALL_CHUNK};
pub use class::{class_of, CLASS_COUNT, CLASS_SIZES, MAX_SMALL, MIN_ALIGN};
pub use engine::{Engine, SPARE_CHUNKS};
pub use error::FreeError;
pub use locked::{LockedChild, LockedEngine, LockedParent, LockedPool};
pub use region::RegionSource;
pub use source::ChunkSource;
#[cfg(feature = "pages")]
pub use stash::STASH_CHUNKS;
pub use stash::{ChunkStash, NoStripes, Stripes};
pub use stats::Stats;
pub use typed::{TypedAllocError, MAX_TYPED_ALIGN};

/// Items for the workspace's other crates, such as the heap pools' pointer-only `free`: public
/// only so that those crates can reach them, they are not part of this crate's API and follow no
/// semver promise.
#[doc(hidden)]
pub mod plumbing {
    use core::ptr::NonNull;

    pub use crate::typed::{
        alloc_slice_copy, alloc_slice_fill_with, alloc_str, alloc_value, Blocks,
    };

    /// What the workspace's `allocator_api2::alloc::Allocator`s hand out for a layout of no
    /// bytes: no block, but a dangling pointer aligned to the layout, as allocator-api2's
    /// `Global` does, and what their `deallocate`, `grow` and `shrink` then take for one. A
    /// collection that shrinks to nothing (`shrink_to_fit` of an empty `Vec`) keeps the pointer
    /// its allocator's `shrink` returns and never deallocates it: a block there would be lost.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    ///
    /// let layout = Layout::from_size_align(0, 64).unwrap();
    /// let none = melon_alloc_core::plumbing::zero_size_block(layout);
    /// assert_eq!(none.len(), 0);
    /// assert_eq!(none.cast::<u8>().as_ptr().addr(), 64);
    /// ```
    pub fn zero_size_block(layout: core::alloc::Layout) -> NonNull<[u8]> {
        let dangling = NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align()));
        NonNull::slice_from_raw_parts(dangling.unwrap_or(NonNull::dangling()), 0)
    }

    /// Tells valgrind's memcheck that the `len` bytes at `at` are inaccessible, so that it
    /// reports a read or a write of them as it does of freed memory: what a source does to the
    /// chunks it keeps for reuse, but for the word that links them. Nothing outside valgrind.
    ///
    /// # Examples
    /// ```
    /// let chunk = [0u8; 64];
    /// // Nothing to see outside valgrind; under it, the last 56 bytes are closed.
    /// melon_alloc_core::plumbing::memcheck_no_access(chunk[8..].as_ptr(), 56);
    /// melon_alloc_core::plumbing::memcheck_defined(chunk.as_ptr(), 64);
    /// assert_eq!(chunk[63], 0);
    /// ```
    #[cfg(feature = "valgrind")]
    pub fn memcheck_no_access(at: *const u8, len: usize) {
        crate::valgrind::no_access(at, len);
    }

    /// Tells valgrind's memcheck that the `len` bytes at `at` are accessible and hold what they
    /// hold: what a source does to a chunk it kept, as it hands it out again. The engine that
    /// takes the chunk registers each block it hands out as new, undefined memory. Nothing
    /// outside valgrind.
    ///
    /// # Examples
    /// ```
    /// let chunk = [0u8; 64];
    /// melon_alloc_core::plumbing::memcheck_defined(chunk.as_ptr(), 64);
    /// assert_eq!(chunk[0], 0);
    /// ```
    #[cfg(feature = "valgrind")]
    pub fn memcheck_defined(at: *const u8, len: usize) {
        crate::valgrind::defined(at, len);
    }

    /// Reads the address of the engine that owns the chunk of `block`, as recorded in the chunk
    /// header: the engine's owner address ([`Engine::set_owner`](crate::Engine::set_owner)), or
    /// the engine's own address while it has none, so never null. Pointer-only frees use it to
    /// find a block's pool.
    ///
    /// # Safety
    /// `block` is an in-use block of some live engine.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Box::new(Engine::new(source, None));
    /// let block = engine.alloc(64).unwrap();
    /// let here: *const Engine<RegionSource> = &*engine;
    /// // SAFETY: `block` is in use in `engine`, which is alive.
    /// assert_eq!(unsafe { melon_alloc_core::plumbing::owner_of(block) }, here.cast());
    /// ```
    pub unsafe fn owner_of(block: NonNull<u8>) -> *const () {
        // SAFETY: the caller promises a block of a live engine, so its chunk header is valid, and
        // the engine exposed the chunk's provenance when it took it.
        unsafe { (*crate::chunk::exposed_chunk_of(block.as_ptr())).owner }
    }
}
