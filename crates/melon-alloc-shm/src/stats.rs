//! What a shared pool reports about itself.

/// A snapshot of a shared pool's state, from [`ShmPool::stats`](crate::ShmPool::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmStats {
    /// The capacity now, in bytes, header included: see
    /// [`ShmPool::capacity`](crate::ShmPool::capacity).
    pub capacity: usize,
    /// The capacity the pool can grow to: see
    /// [`ShmPool::max_capacity`](crate::ShmPool::max_capacity).
    pub max_capacity: usize,
    /// Segments of data pages the pool holds: 1 for a pool that has not grown, or never grows,
    /// and one more for each segment it has grown by (each as many pages as the first; the
    /// last one cut short at the largest capacity).
    pub data_segments: usize,
    /// Bytes of the data pages grown so far: the pages of the segments, without the header and
    /// the page descriptors and bitmap.
    pub data_bytes: usize,
    /// Exact free bytes: the data bytes not held by a block in use or lent to a child pool.
    pub available: usize,
    /// Bytes of the blocks in use, at their class size or in whole pages.
    pub bytes_in_use: usize,
    /// Blocks in use, small and large.
    pub live_blocks: usize,
    /// Large blocks in use.
    pub large_blocks: usize,
    /// Bytes lent to child pools as chunks.
    pub lent_bytes: usize,
    /// Times a process took the lock over from a holder that had died.
    pub lock_takeovers: u64,
    /// Operations found half done after their process died, and undone.
    pub operations_undone: u64,
    /// Slabs (or a class's whole list of slabs) taken out of use because their free list was
    /// found corrupt, as a write into a freed block leaves it; see
    /// [`ShmCheckError::Quarantined`](crate::ShmCheckError::Quarantined).
    pub quarantined_slabs: u64,
}
