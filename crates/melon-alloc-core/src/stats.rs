//! What a pool reports about itself.

/// A snapshot of a pool's state, from [`Engine::stats`](crate::Engine::stats).
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
    /// Bytes of `bytes_held` passed on to child pools.
    pub bytes_lent: usize,
    /// Small chunks the pool holds.
    pub chunks: usize,
    /// The pool's limit in bytes, if it has one.
    pub limit: Option<usize>,
}
