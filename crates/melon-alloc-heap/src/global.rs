//! The source of a root pool: chunks carved from slabs of the global allocator.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::time::Duration;
use std::alloc;
use std::time::Instant;

use melon_alloc_core::{ChunkSource, CHUNK_SIZE, SMALL_CHUNK};

use crate::recycle::{
    large_layout, FreeChunk, LargeCache, SmallChunks, HUGE_SLAB, LARGE_CACHE_BYTES,
};
use crate::sys::advise_huge_pages;

/// Takes memory from the global allocator for a root pool.
///
/// Small chunks are carved from slabs that grow from 64 KiB to 2 MiB (and go on from where they
/// were after a trim gave them all back), because asking the global allocator for each aligned
/// 16 KiB chunk on its own leaves an alignment gap beside nearly every one (glibc's
/// `posix_memalign` does), which would cost more than the blocks themselves. Chunks
/// that come back are reused. Once every chunk has come back, the source keeps its newest slabs,
/// as many as held the most chunks out at once in its busiest moment, and gives the older ones
/// back to the global allocator; once every chunk has come back from lighter loads for a second
/// ([`KEEP_SLABS_FOR`]), it keeps only what the latest of them needed. A root whose children come
/// and go (a pool per request, in bursts with lulls between them) so calls the global allocator
/// only while its load grows. No timer runs: what its bursts needed goes back when a chunk comes
/// back a second or more after the last of them, so an idle root keeps it until then.
/// [`trim`](ChunkSource::trim) gives every slab back when no chunk is out; while some chunk is
/// out it lets the system take the pages of the free chunks instead (on Linux: all of each
/// chunk's pages but the first, which keeps its link), so that a root that keeps a block while
/// its children come and go still gives back what a burst of them left. Dropping the pool gives
/// back everything.
///
/// Large chunks come from the global allocator. Up to 256 KiB their length is rounded up to an
/// eighth of its power of two, and freed ones of 8 to 256 KiB, up to 2 MiB together, are kept in
/// a list per rounded length and handed out again for a request that rounds to the same length
/// (or, asked through [`acquire_at_least`](ChunkSource::acquire_at_least) as the engine does,
/// to one of the two lengths below when its own list is empty):
/// a program that frees and allocates blocks of a few kilobytes in turn would otherwise pay for
/// an aligned allocation of the global allocator on every one. A root pool with a limit keeps
/// them within its limit: the engine has the source give kept chunks back
/// ([`keep_at_most`](ChunkSource::keep_at_most)) whenever what the pool holds and what the source
/// keeps would pass it; once every small chunk has come back, the slabs it keeps besides the
/// newest count as kept too, and go back, the oldest first, when the limit needs their room.
/// What it holds from the system can still pass its limit by the uncarved rest of its newest
/// slab, by the slabs it keeps for its busiest moment while a small chunk is out, and by the
/// rounding of large chunks.
///
/// On Linux, 2 MiB slabs are aligned to 2 MiB and marked for transparent huge pages: unmapping a
/// full pool of 4 KiB pages costs the kernel several nanoseconds per 64-byte block, a huge page
/// a small fraction of that.
///
/// # Soundness
/// Handing out a chunk (`acquire`), `trim` (which frees only cached chunks nobody holds) and the
/// figures are safe; taking a chunk back is unsafe, as [`ChunkSource`] says. Dropping the source
/// frees its slabs, and with them every chunk it handed out: an engine that owns the source is
/// dropped with it, and a caller that took chunks itself holds only raw pointers, whose use is
/// unsafe.
///
/// # Examples
/// ```
/// use melon_alloc_heap::{ChildPool, GlobalSource};
///
/// // A pool over a source of its own, as `HeapPool::new` makes.
/// let pool = ChildPool::with_source(Box::new(GlobalSource::new()), None);
/// assert!(pool.alloc(100).is_some());
/// ```
#[derive(Debug)]
pub struct GlobalSource {
    small: SmallChunks,
    slabs: Vec<(NonNull<u8>, Layout)>,
    /// The most chunks out at once in the busiest moment the source still keeps slabs for.
    /// Chunk counts are 32 bits here, as in [`SmallChunks`], so that the source and a pool's
    /// box stay small.
    busiest: u32,
    /// Chunks of the slabs kept besides the newest when every chunk last came back, until a
    /// chunk is taken: while none is out, a limit counts them as kept
    /// ([`kept_bytes`](ChunkSource::kept_bytes)).
    older_slab_chunks: u32,
    /// When every chunk first came back from a lighter load than `busiest`, if it has since
    /// that moment: after [`KEEP_SLABS_FOR`] of lighter loads, `busiest` is forgotten.
    lighter_since: Option<Instant>,
    /// Freed large chunks kept for reuse.
    large_cache: LargeCache<Vec<*mut FreeChunk>>,
}

// SAFETY: the source exclusively owns its slabs and recycled chunks; its raw pointers point only
// into them, so it can move between threads with them.
unsafe impl Send for GlobalSource {}

impl GlobalSource {
    /// A source that holds nothing yet.
    ///
    /// # Examples
    /// ```
    /// let source = melon_alloc_heap::GlobalSource::new();
    /// assert_eq!((source.slab_bytes(), source.cached_large_bytes()), (0, 0));
    /// ```
    pub const fn new() -> Self {
        Self::with_large_cache(LARGE_CACHE_BYTES)
    }

    /// A source that keeps no freed large chunk: everything it takes from the global allocator
    /// is a chunk some pool holds.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    /// use melon_alloc_core::ChunkSource;
    /// use melon_alloc_heap::GlobalSource;
    ///
    /// let mut source = GlobalSource::without_large_cache();
    /// let layout = Layout::from_size_align(64 << 10, 16 << 10).unwrap();
    /// let chunk = source.acquire(layout).unwrap();
    /// // SAFETY: the chunk came from `source` with `layout`, and is not used again.
    /// unsafe { source.release(chunk, layout) };
    /// assert_eq!(source.cached_large_bytes(), 0, "given back, not kept");
    /// ```
    pub const fn without_large_cache() -> Self {
        Self::with_large_cache(0)
    }

    const fn with_large_cache(large_cache_limit: usize) -> Self {
        Self {
            small: SmallChunks::new(),
            slabs: Vec::new(),
            busiest: 0,
            lighter_since: None,
            older_slab_chunks: 0,
            large_cache: LargeCache::lazy(large_cache_limit),
        }
    }

    /// Bytes of freed large chunks kept for reuse.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    /// use melon_alloc_core::ChunkSource;
    /// use melon_alloc_heap::GlobalSource;
    ///
    /// let mut source = GlobalSource::new();
    /// let layout = Layout::from_size_align(64 << 10, 16 << 10).unwrap();
    /// let chunk = source.acquire(layout).unwrap();
    /// // SAFETY: the chunk came from `source` with `layout`, and is not used again.
    /// unsafe { source.release(chunk, layout) };
    /// assert_eq!(source.cached_large_bytes(), 64 << 10, "kept for the next large chunk");
    /// ```
    pub fn cached_large_bytes(&self) -> usize {
        self.large_cache.bytes()
    }

    /// Bytes of slabs currently held from the global allocator.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, SMALL_CHUNK};
    /// use melon_alloc_heap::GlobalSource;
    ///
    /// let mut source = GlobalSource::new();
    /// let chunk = source.acquire(SMALL_CHUNK).unwrap();
    /// // Small chunks come out of a slab taken from the global allocator, larger than one chunk.
    /// assert!(source.slab_bytes() > SMALL_CHUNK.size());
    /// // SAFETY: the chunk came from `source` with this layout, and is not used again.
    /// unsafe { source.release(chunk, SMALL_CHUNK) };
    /// ```
    pub fn slab_bytes(&self) -> usize {
        self.slabs.iter().map(|(_, layout)| layout.size()).sum()
    }

    fn small_chunk(&mut self) -> Option<NonNull<u8>> {
        // Once a chunk is out, the older slabs are not kept for a limit to count: see
        // `kept_bytes`. (With none out, the take below fails only with no slab at all.)
        self.older_slab_chunks = 0;
        if let Some(chunk) = self.small.take() {
            return Some(chunk);
        }
        let layout = self.small.next_slab();
        self.slabs.try_reserve(1).ok()?;
        // SAFETY: the layout has a non-zero size.
        let slab = NonNull::new(unsafe { alloc::alloc(layout) })?;
        if layout.size() == HUGE_SLAB {
            advise_huge_pages(slab, layout.size());
        }
        self.slabs.push((slab, layout));
        // SAFETY: the slab was just allocated with this layout and is the source's until
        // `release_slabs`, `keep_slabs_for_peak` or `keep_older_slabs_within` gives it back, each
        // when no chunk is out and with the list of freed chunks emptied (`clear`, or
        // `restart_from` in `hand_out_afresh`) and made anew of the slabs kept.
        unsafe { self.small.add_slab(slab) };
        self.small.take()
    }

    /// Every chunk has come back: keeps the newest slabs, enough to hold as many chunks as were
    /// out at once in the busiest moment not yet forgotten (see [`KEEP_SLABS_FOR`]), gives back
    /// the others, and hands the kept ones out afresh: carving the newest, the others from the
    /// list of freed chunks.
    fn keep_slabs_for_peak(&mut self) {
        let peak = u32::try_from(self.small.take_peak().max(1)).unwrap_or(u32::MAX);
        if peak >= self.busiest {
            // As busy as ever: no clock read, which a root whose one child comes and goes
            // would otherwise pay on every drop.
            (self.busiest, self.lighter_since) = (peak, None);
        } else {
            let now = Instant::now();
            match self.lighter_since {
                None => self.lighter_since = Some(now),
                Some(since) if now.duration_since(since) >= KEEP_SLABS_FOR => {
                    (self.busiest, self.lighter_since) = (peak, None);
                }
                Some(_) => {}
            }
        }
        let peak = self.busiest as usize;
        let mut kept_chunks = 0;
        let kept = self
            .slabs
            .iter()
            .rev()
            .take_while(|(_, layout)| {
                let short = kept_chunks < peak;
                kept_chunks += layout.size() / CHUNK_SIZE;
                short
            })
            .count();
        // SAFETY: every chunk has come back, and `hand_out_afresh` drops the list of freed
        // chunks and puts back only chunks of the slabs kept.
        unsafe { self.give_back_oldest(self.slabs.len() - kept) };
        self.hand_out_afresh();
    }

    /// No chunk being out, hands the slabs out afresh: carving the newest, the others from the
    /// list of freed chunks, which is dropped first.
    #[inline]
    fn hand_out_afresh(&mut self) {
        // With no slab there is no list to drop.
        let Some(&(newest, layout)) = self.slabs.last() else {
            self.older_slab_chunks = 0;
            return;
        };
        // SAFETY: (1) no chunk is out; the chunks of the slabs kept besides the newest go back
        // on the list below; (2) the slab came from `alloc::alloc` with `layout`, a whole number
        // of chunks aligned to a chunk, and stays the source's until it is given back, which
        // happens only with no chunk out, after which this function makes the list anew (or
        // `release_slabs` clears it).
        unsafe { self.small.restart_from(newest, layout.size() / CHUNK_SIZE) };
        let mut older_chunks = 0;
        for &(slab, layout) in &self.slabs[..self.slabs.len() - 1] {
            let chunks = layout.size() / CHUNK_SIZE;
            older_chunks += chunks;
            for index in 0..chunks {
                // SAFETY: `index` is below the slab's chunk count, so the chunk starts inside it.
                let chunk = unsafe { slab.add(index * CHUNK_SIZE) };
                // SAFETY: the chunk lies in a slab the source keeps, and is on no list:
                // `restart_from` emptied the list, and only the newest slab is carved.
                unsafe { self.small.add_free(chunk) };
            }
        }
        self.older_slab_chunks = u32::try_from(older_chunks).unwrap_or(u32::MAX);
    }

    /// Bytes of the slabs kept besides the newest when every chunk last came back.
    fn older_slab_bytes(&self) -> usize {
        self.older_slab_chunks as usize * CHUNK_SIZE
    }

    /// Gives back the slabs kept besides the newest, the oldest first, until at most `bytes` of
    /// them are kept; nothing while a chunk is out.
    fn keep_older_slabs_within(&mut self, bytes: usize) {
        if self.small.out() != 0 {
            return;
        }
        let mut older = self.older_slab_bytes();
        let older_slabs = &self.slabs[..self.slabs.len().saturating_sub(1)];
        let count = older_slabs
            .iter()
            .take_while(|(_, layout)| {
                let over = older > bytes;
                older = older.saturating_sub(layout.size());
                over
            })
            .count();
        // SAFETY: no chunk is out, and `hand_out_afresh` drops the list of freed chunks and puts
        // back only chunks of the slabs kept.
        unsafe { self.give_back_oldest(count) };
        self.hand_out_afresh();
    }

    fn release_slabs(&mut self) {
        self.small.clear();
        (self.busiest, self.lighter_since, self.older_slab_chunks) = (0, None, 0);
        // SAFETY: `clear` forgot every chunk, and a source releases its slabs only when none
        // is out (every chunk came back, or the engine gave them all back at once), or when it
        // is dropped, after which no chunk of it may be used (the `ChunkSource` contract).
        unsafe { self.give_back_oldest(self.slabs.len()) };
    }

    /// Gives the oldest `count` slabs back to the global allocator.
    ///
    /// # Safety
    /// No chunk of those slabs is out, and none is on the list of freed chunks afterwards.
    unsafe fn give_back_oldest(&mut self, count: usize) {
        for (slab, layout) in self.slabs.drain(..count) {
            // SAFETY: the slab came from `alloc::alloc` with this layout, and the caller
            // promises that nothing of it is in use or listed.
            unsafe { alloc::dealloc(slab.as_ptr(), layout) };
        }
    }
}

/// How long a [`GlobalSource`] keeps the slabs its busiest moment needed once its load has
/// fallen, counted from the first time every chunk came back from a lighter load: a root serving
/// requests in bursts keeps what a burst needs while the bursts come, rather than give slabs
/// back in each lull and map them afresh, zeroed by the kernel, in the next burst.
///
/// # Examples
/// ```
/// assert_eq!(melon_alloc_heap::KEEP_SLABS_FOR.as_millis(), 1000);
/// ```
pub const KEEP_SLABS_FOR: Duration = Duration::from_secs(1);

impl Default for GlobalSource {
    fn default() -> Self {
        Self::new()
    }
}

fn is_small_chunk(layout: Layout) -> bool {
    layout == SMALL_CHUNK
}

// SAFETY: (1) small chunks are disjoint `CHUNK_SIZE` runs of slabs, aligned to `CHUNK_SIZE`
// because slabs are, and each is handed out once until it comes back; (2) large chunks come from
// the global allocator, or its cache of freed ones, with the asked-for alignment and at least the
// asked-for length (a cached one from `take_longer` exactly the length returned with it, which is
// at most `most`), and a cached chunk is handed out once until it comes back; (3) slabs are
// freed only when no chunk is out, or when the source is dropped, after which the contract lets
// no chunk be used, and every pointer is derived from the slab or allocation it lies in.
unsafe impl ChunkSource for GlobalSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // No longer chunk than asked: a length of 0 rules them all out.
        self.acquire_at_least(layout, 0).map(|(chunk, _)| chunk)
    }

    #[inline]
    fn acquire_at_least(&mut self, layout: Layout, most: usize) -> Option<(NonNull<u8>, usize)> {
        if is_small_chunk(layout) {
            return Some((self.small_chunk()?, layout.size()));
        }
        self.large_cache.acquire(layout, most, |rounded| {
            // SAFETY: `lookup` refuses an empty layout, and rounding only lengthens it.
            NonNull::new(unsafe { alloc::alloc(rounded) })
        })
    }

    #[inline]
    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        if !is_small_chunk(layout) {
            // `acquire` allocated the chunk with the rounded layout, which succeeded then.
            let Some(layout) = large_layout(layout) else { return };
            // SAFETY: the caller hands back a large chunk from `acquire`, valid for the rounded
            // length it was allocated with.
            if !unsafe { self.large_cache.put(chunk, layout) } {
                // SAFETY: the chunk came from `alloc::alloc` with this layout (or from the
                // cache, where it went with it), and nothing uses it any more.
                unsafe { alloc::dealloc(chunk.as_ptr(), layout) };
            }
            return;
        }
        // SAFETY: the caller hands back a small chunk from `acquire`, which took it from the list.
        unsafe { self.small.put(chunk) };
        if self.small.out() == 0 {
            self.keep_slabs_for_peak();
        }
    }

    unsafe fn release_all_small(&mut self) -> bool {
        self.release_slabs();
        true
    }

    fn trim(&mut self) {
        self.keep_at_most(0);
        if self.small.out() == 0 {
            self.release_slabs();
        }
    }

    fn discard_free(&mut self) {
        // A slab goes back to the global allocator only whole; while some chunk is out, the free
        // ones give the system their pages instead, as `OsSource`'s do.
        #[cfg(target_os = "linux")]
        self.small.discard_free();
    }

    /// Cached large chunks; and, while no small chunk is out, the slabs kept besides the newest,
    /// which could go back at once. The newest stays for the next small chunks, uncounted, as
    /// the uncarved rest of a slab is.
    #[inline]
    fn kept_bytes(&self) -> usize {
        // 0 once a small chunk is out (`small_chunk`).
        self.large_cache.bytes() + self.older_slab_bytes()
    }

    /// Gives back cached large chunks, the shortest first, then, while no small chunk is out, the
    /// slabs kept besides the newest, the oldest first, until at most `bytes` are kept.
    fn keep_at_most(&mut self, bytes: usize) {
        while self.large_cache.bytes() > bytes {
            let Some((chunk, layout)) = self.large_cache.pop() else { break };
            // SAFETY: cached chunks came from `alloc::alloc` with the layout they are cached
            // under, and are not in use.
            unsafe { alloc::dealloc(chunk.as_ptr(), layout) };
        }
        if self.kept_bytes() > bytes {
            self.keep_older_slabs_within(bytes.saturating_sub(self.large_cache.bytes()));
        }
    }

    /// The calling thread's number, given out in turn the first time a thread asks, from one
    /// count for the whole process that never gives a number back: the first 8 threads to ask
    /// each get a stripe of their own, and later threads share theirs.
    #[inline]
    fn stash_stripe() -> Option<usize> {
        Some(thread_number())
    }
}

/// The calling thread's number among the threads that have asked, from 0. A `const`-initialised
/// thread-local without a destructor: reading it allocates nothing, as a global allocator's path
/// may need.
#[inline]
fn thread_number() -> usize {
    use core::cell::Cell;
    use core::sync::atomic::{AtomicUsize, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
        static NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
    }
    NUMBER.with(|number| match number.get() {
        Some(own) => own,
        None => {
            let own = NEXT.fetch_add(1, Ordering::Relaxed);
            number.set(Some(own));
            own
        }
    })
}

impl Drop for GlobalSource {
    fn drop(&mut self) {
        self.release_slabs();
        self.keep_at_most(0);
    }
}
