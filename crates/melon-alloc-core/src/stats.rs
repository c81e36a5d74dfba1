//! What a pool reports about itself.

/// A snapshot of a pool's state, from [`Engine::stats`](crate::Engine::stats).
///
/// # Examples
/// ```
/// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
/// let mut engine = Engine::new(source, Some(4 * CHUNK_SIZE));
/// let block = engine.alloc(100).unwrap();
/// // SAFETY: the block came from this engine and is not used again.
/// unsafe { engine.free(block) };
/// let stats = engine.stats();
/// assert_eq!((stats.live_blocks, stats.bytes_in_use), (0, 0));
/// // The emptied chunk is kept for reuse, and counts against the limit.
/// assert_eq!((stats.bytes_held, stats.peak_bytes_held), (CHUNK_SIZE, CHUNK_SIZE));
/// assert_eq!(stats.limit, Some(4 * CHUNK_SIZE));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes of the blocks in use, counted at their block size (the request rounded up to its
    /// class; the usable size of a large block).
    pub bytes_in_use: usize,
    /// Blocks handed out and not yet freed, small and large.
    pub live_blocks: usize,
    /// Large blocks in use (each one a chunk of its own).
    pub large_blocks: usize,
    /// Bytes the pool holds from its source (its parent, or the system): small chunks and large
    /// blocks. This is what the limit is checked against.
    pub bytes_held: usize,
    /// The highest `bytes_held` has been since the pool was made.
    pub peak_bytes_held: usize,
    /// Bytes of `bytes_held` passed on to child pools, and, in a [`LockedPool`](crate::LockedPool)
    /// used as a `GlobalAlloc`, held as chunks of their own by blocks whose layout asks for an
    /// alignment of a chunk or more.
    pub bytes_lent: usize,
    /// Small chunks the pool holds, whole or split into pages
    /// ([`Engine::with_pages`](crate::Engine::with_pages)).
    pub chunks: usize,
    /// The pool's limit in bytes, if it has one.
    pub limit: Option<usize>,
}
