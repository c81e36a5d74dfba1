//! What a shared pool reports about itself.

use core::fmt;

use crate::layout::CLASS_COUNT;

/// A snapshot of a shared pool's state, from [`ShmPool::stats`](crate::ShmPool::stats).
///
/// The figures are read under the pool's lock, so they agree with each other. The per-class
/// figures ([`classes`](ShmStats::classes)) are an array inside the snapshot rather than a
/// collection beside it, so that a snapshot is one `Copy` value of under 2 KiB, taken without
/// allocating while the lock is held.
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// let block = shm.alloc(64).unwrap();
/// // SAFETY: the block came from `shm` and is not used again.
/// unsafe { shm.try_free(block) }?;
/// assert!(shm.alloc(4 << 20).is_none());
/// let stats = shm.stats()?;
/// assert_eq!(stats.bytes_in_use, 0);
/// assert_eq!(stats.peak_bytes_in_use, 64, "the high-water mark of bytes in use");
/// assert_eq!(stats.failures, 1, "the 4 MiB request");
/// // The refused request first gave back the empty slab kept for the next 64 bytes: the
/// // pool's free bytes are one run again.
/// assert_eq!(stats.largest_free_run, stats.available);
/// assert_eq!(stats.segments, 1);
/// assert_eq!((stats.reclaimed_processes, stats.reclaimed_bytes), (0, 0));
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmStats {
    /// The capacity now, in bytes, header included: see
    /// [`ShmPool::capacity`](crate::ShmPool::capacity).
    pub capacity: usize,
    /// The capacity the pool can grow to: see
    /// [`ShmPool::max_capacity`](crate::ShmPool::max_capacity).
    pub max_capacity: usize,
    /// Bytes of the data pages grown so far: the pages of the segments, without the header and
    /// the page descriptors and bitmap.
    pub data_bytes: usize,
    /// Exact free bytes: the data bytes not held by a block in use or lent to a child pool.
    pub available: usize,
    /// Bytes of the blocks in use, at their class size or in whole pages.
    pub bytes_in_use: usize,
    /// The most bytes ever in use at once: the high-water mark of `bytes_in_use`.
    pub peak_bytes_in_use: usize,
    /// Blocks in use, small and large.
    pub live_blocks: usize,
    /// Large blocks in use.
    pub large_blocks: usize,
    /// Bytes lent to child pools as chunks.
    pub lent_bytes: usize,
    /// Bytes of those chunks whose process gave them up while blocks handed off from them were
    /// out, and which wait, as orphans, for the last of those blocks to be freed: see
    /// [`ShmPool::reclaim_orphans`](crate::ShmPool::reclaim_orphans). A process gives its chunks
    /// up when it drops its child pool, or, once it has died, when its death is found
    /// ([`ShmPool::reclaim_dead`](crate::ShmPool::reclaim_dead)): until then a dead process's
    /// chunks count as lent, not orphaned.
    pub orphaned_bytes: usize,
    /// Bytes of the longest run of free pages: the largest block the pool can hand out as a
    /// page run as it stands, and, set beside `available`, a measure of how fragmented the pool
    /// is. A slab's free blocks are not in it, and neither are the empty slabs the size classes
    /// keep for their next blocks: a request that no run fits gets those back first, so it may
    /// be handed a longer block than this, and a pool drained of its blocks may show runs
    /// shorter than its free bytes until a request or a refusal gives the slabs back (the
    /// largest run of a [`Fragmented`](crate::ShmError::Fragmented) refusal is counted after
    /// that).
    pub largest_free_run: usize,
    /// Allocations the pool refused, small and large, since it was made (the chunks it lends to
    /// child pools are not allocations of its own).
    pub failures: u64,
    /// Segments of data pages the pool holds: 1 for a pool that has not grown, or never grows,
    /// and one more for each segment it has grown by (each as many pages as the first; the
    /// last one cut short at the largest capacity).
    pub segments: usize,
    /// Times a process took the lock over from a holder that had died.
    pub lock_takeovers: u64,
    /// Operations found half done after their process died, and undone.
    pub operations_undone: u64,
    /// Slabs (or a class's whole list of slabs) taken out of use because their free list was
    /// found corrupt, as a write into a freed block leaves it; see
    /// [`ShmCheckError::Quarantined`](crate::ShmCheckError::Quarantined).
    pub quarantined_slabs: u64,
    /// Dead processes found holding a slot of the pool's owner table, which went back to the
    /// pool with whatever chunks they held, if any (as [`ReclaimReport::processes`] counts
    /// them).
    ///
    /// [`ReclaimReport::processes`]: crate::ReclaimReport::processes
    pub reclaimed_processes: u64,
    /// Bytes of the chunks that dead processes' child pools held, counted when the death is
    /// found: each went back to the pool then, or, where a block handed off from it is still
    /// out, waits as an orphan and goes back once that block is freed. A process that dies
    /// while it reclaims may leave out of this figure and `reclaimed_processes` what it had
    /// taken back; the next reclaim takes back the rest.
    pub reclaimed_bytes: u64,
    /// Per size class, smallest first.
    pub(crate) classes: [ShmClassStats; CLASS_COUNT],
}

// A snapshot is copied out from under the lock; the docs promise it stays small.
static_assertions::const_assert!(core::mem::size_of::<ShmStats>() < 2048);

impl ShmStats {
    /// The figures of each size class that slabs serve, smallest block size first: every
    /// request up to 8 KiB aligned to at most 4 KiB goes to the smallest class that holds it (a
    /// larger one for a larger alignment); a request aligned beyond 4 KiB takes whole pages, and
    /// no class counts it.
    ///
    /// # Examples
    ///
    /// ```
    /// use melon_alloc_shm::ShmPool;
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let blocks: Vec<_> = (0..3).map(|_| shm.alloc(100).unwrap()).collect();
    /// let stats = shm.stats()?;
    /// let class = stats.classes().iter().find(|class| class.block_size >= 100).unwrap();
    /// assert_eq!(class.block_size, 112);
    /// assert_eq!((class.slabs, class.blocks_in_use, class.requests), (1, 3, 3));
    /// assert!(stats.classes().windows(2).all(|pair| pair[0].block_size < pair[1].block_size));
    /// for block in blocks {
    ///     // SAFETY: the block came from `shm` and is not used again.
    ///     unsafe { shm.try_free(block) }?;
    /// }
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn classes(&self) -> &[ShmClassStats] {
        &self.classes
    }
}

/// A table for people: the totals, one to a line, then a line for each size class that has a
/// slab or has been asked for a block, with its block size, slabs, blocks in use, blocks,
/// requests and failures. The lines are for reading, not parsing; the fields are for programs.
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// let blocks: Vec<_> = (0..3).map(|_| shm.alloc(64).unwrap()).collect();
/// let table = shm.stats()?.to_string();
/// assert!(table.starts_with("capacity"));
/// assert!(table.contains("192 bytes in 3 blocks"));
/// let last = table.lines().last().unwrap();
/// assert_eq!(last.split_whitespace().collect::<Vec<_>>(), ["64", "1", "3", "64", "3", "0"]);
/// # for block in blocks {
/// #     // SAFETY: the block came from `shm` and is not used again.
/// #     unsafe { shm.try_free(block) }?;
/// # }
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
impl fmt::Display for ShmStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "capacity    {} bytes in {}, {} of them for data",
            self.capacity,
            Counted(self.segments as u64, "segment", "segments"),
            self.data_bytes
        )?;
        writeln!(
            f,
            "in use      {} bytes in {} ({} large), peak {}",
            self.bytes_in_use,
            Counted(self.live_blocks as u64, "block", "blocks"),
            self.large_blocks,
            self.peak_bytes_in_use
        )?;
        writeln!(
            f,
            "available   {} bytes; largest free run {} bytes",
            self.available, self.largest_free_run
        )?;
        writeln!(
            f,
            "lent        {} bytes to child pools, {} of them orphaned",
            self.lent_bytes, self.orphaned_bytes
        )?;
        writeln!(f, "failures    {} refused", Counted(self.failures, "allocation", "allocations"))?;
        writeln!(
            f,
            "recovered   {}, {} undone, {} quarantined",
            Counted(self.lock_takeovers, "lock takeover", "lock takeovers"),
            Counted(self.operations_undone, "operation", "operations"),
            Counted(self.quarantined_slabs, "slab", "slabs")
        )?;
        writeln!(
            f,
            "reclaimed   the slots of {}, and {} bytes of their chunks",
            Counted(self.reclaimed_processes, "dead process", "dead processes"),
            self.reclaimed_bytes
        )?;
        let shown = || self.classes.iter().filter(|class| class.slabs > 0 || class.requests > 0);
        // Each column as wide as its heading or its longest figure, whichever is wider: the
        // counts of a pool that runs for months outgrow any fixed width.
        let width = |heading: &str, figure: fn(&ShmClassStats) -> u64| {
            shown().map(|class| digits(figure(class))).fold(heading.len(), usize::max)
        };
        let [w0, w1, w2, w3, w4, w5] = [
            width("class", |class| class.block_size as u64),
            width("slabs", |class| class.slabs as u64),
            width("in use", |class| class.blocks_in_use as u64),
            width("blocks", |class| class.blocks as u64),
            width("requests", |class| class.requests),
            width("failures", |class| class.failures),
        ];
        write!(
            f,
            "{:>w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {:>w5$}",
            "class", "slabs", "in use", "blocks", "requests", "failures"
        )?;
        for class in shown() {
            write!(
                f,
                "\n{:>w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {:>w5$}",
                class.block_size,
                class.slabs,
                class.blocks_in_use,
                class.blocks,
                class.requests,
                class.failures
            )?;
        }
        Ok(())
    }
}

/// A count and its noun, singular for one: "1 block", "3 blocks".
struct Counted(u64, &'static str, &'static str);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(count, one, many) = *self;
        write!(f, "{count} {}", if count == 1 { one } else { many })
    }
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

impl Default for ShmStats {
    fn default() -> Self {
        Self {
            capacity: 0,
            max_capacity: 0,
            data_bytes: 0,
            available: 0,
            bytes_in_use: 0,
            peak_bytes_in_use: 0,
            live_blocks: 0,
            large_blocks: 0,
            lent_bytes: 0,
            orphaned_bytes: 0,
            largest_free_run: 0,
            failures: 0,
            segments: 0,
            lock_takeovers: 0,
            operations_undone: 0,
            quarantined_slabs: 0,
            reclaimed_processes: 0,
            reclaimed_bytes: 0,
            classes: [ShmClassStats::default(); CLASS_COUNT],
        }
    }
}

/// What one size class of a shared pool holds and has been asked for, from
/// [`ShmStats::classes`].
///
/// # Examples
///
/// ```
/// use melon_alloc_shm::ShmPool;
///
/// let shm = ShmPool::new(1 << 20)?;
/// let block = shm.alloc(64).unwrap();
/// let stats = shm.stats()?;
/// let class = stats.classes().iter().find(|class| class.block_size == 64).unwrap();
/// assert_eq!(class.slabs, 1);
/// assert_eq!(class.blocks, 64, "a 4 KiB slab of 64-byte blocks");
/// assert_eq!(class.blocks_in_use, 1);
/// assert_eq!((class.requests, class.failures), (1, 0));
/// // SAFETY: the block came from `shm` and is not used again.
/// unsafe { shm.try_free(block) }?;
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmClassStats {
    /// Bytes of each block of the class.
    pub block_size: usize,
    /// Slabs of the class: runs of pages cut into its blocks.
    pub slabs: usize,
    /// Blocks of the class in use.
    pub blocks_in_use: usize,
    /// Blocks the class's slabs hold, in use or not.
    pub blocks: usize,
    /// Allocation requests the class served or was asked to, since the pool was made. A request
    /// that finds no room for a new slab and gets a run of pages instead counts here all the
    /// same.
    pub requests: u64,
    /// Those of the requests that were refused.
    pub failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_table_stays_in_columns_whatever_the_counts() {
        let mut stats = ShmStats::default();
        let class = |block_size, requests, failures| ShmClassStats {
            block_size,
            slabs: 1,
            blocks_in_use: 1,
            blocks: 255,
            requests,
            failures,
        };
        stats.classes[0] = class(16, u64::MAX, 12_345_678_901);
        stats.classes[1] = class(32, 7, 0);
        let table = stats.to_string();
        let lines: Vec<_> = table.lines().collect();
        let header = lines.len() - 3;
        assert!(lines[header].starts_with("class"), "{table}");
        assert!(lines[header..].iter().all(|line| line.len() == lines[header].len()), "{table}");
        assert!(lines[header + 1].ends_with(&format!("{}  12345678901", u64::MAX)), "{table}");
    }
}
