//! Where an engine's chunks come from.

use core::alloc::Layout;
use core::ptr::NonNull;

/// A supplier of chunks: the global allocator, a parent pool, a shared mapping, a static arena.
///
/// The engine asks for two kinds of layout: small chunks of exactly
/// [`CHUNK_SIZE`](crate::CHUNK_SIZE) bytes, and large chunks of any size that is a multiple of
/// 16; both aligned to [`CHUNK_SIZE`](crate::CHUNK_SIZE) or more. A source may treat the two
/// differently (keep a list of small chunks, say).
///
/// # Safety
/// An implementation must uphold, for every `layout` the engine asks for:
/// - a chunk returned by [`acquire`](ChunkSource::acquire) is valid for reads and writes of
///   `layout.size()` bytes, aligned to `layout.align()`, and overlaps no other chunk the source
///   has handed out and not taken back;
/// - it stays valid until it is passed to [`release`](ChunkSource::release) or the source is
///   dropped;
/// - the pointer carries provenance over the whole chunk;
/// - a chunk returned by [`acquire_at_least`](ChunkSource::acquire_at_least) with a length `len`
///   is, in all of the above, a chunk returned by `acquire` for a layout of `len` bytes and
///   `layout`'s alignment; `len` is `layout.size()`, or a multiple of 16 no larger than `most`
///   (which the engine passes as a multiple of 16);
/// - [`granule`](ChunkSource::granule) gives the same power of two every time, from 16 to
///   [`CHUNK_SIZE`](crate::CHUNK_SIZE);
/// - a block returned by [`take_remote_frees`](ChunkSource::take_remote_frees) is one that the
///   engine using this source handed out from a chunk of this source that it still holds, is in
///   use by nobody any more, and is returned once per time it was freed;
/// - none of its methods calls, directly or through the global allocator, the engine or pool
///   that calls it, nor a pool that takes its chunks from that one: the caller is in the middle
///   of an operation, with its state borrowed mutably (or its lock held).
///
/// # Examples
/// A source that counts the chunks it has out, over a region:
/// ```
/// use core::alloc::Layout;
/// use core::ptr::NonNull;
/// use melon_alloc_core::{ChunkSource, Engine, RegionSource};
///
/// struct Counted {
///     region: RegionSource,
///     out: usize,
/// }
///
/// // SAFETY: every chunk comes from the region, which upholds the contract, and goes back to it.
/// unsafe impl ChunkSource for Counted {
///     fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
///         let chunk = self.region.acquire(layout)?;
///         self.out += 1;
///         Some(chunk)
///     }
///     unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
///         self.out -= 1;
///         // SAFETY: the caller returns a chunk from `acquire`, which the region handed out.
///         unsafe { self.region.release(chunk, layout) }
///     }
/// }
///
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let region = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
/// let mut engine = Engine::new(Counted { region, out: 0 }, None);
/// let block = engine.alloc(64).unwrap();
/// assert_eq!(engine.source().out, 1);
/// // SAFETY: the block came from this engine and is not used again.
/// unsafe { engine.free(block) };
/// engine.trim();
/// assert_eq!(engine.source().out, 0);
/// ```
pub unsafe trait ChunkSource {
    /// Hands out a chunk for `layout`, or `None` when there is no memory for it.
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>>;

    /// Hands out a chunk for `layout` that may be longer, up to `most` bytes, with its length:
    /// a source that keeps freed chunks can hand out one a little longer than asked rather than
    /// take new memory. The engine asks this for large blocks, and releases the chunk with a
    /// layout of the length returned. The default hands out exactly `layout`.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    /// use melon_alloc_core::{ChunkSource, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 128 * 1024] = [0; 128 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 128 * 1024) };
    /// let layout = Layout::from_size_align(20_000, CHUNK_SIZE).unwrap();
    /// let (chunk, len) = source.acquire_at_least(layout, 25_000).unwrap();
    /// assert_eq!(len, 20_000, "a region hands out what is asked");
    /// // SAFETY: the chunk came from `source` with this length, and is not used again.
    /// unsafe { source.release(chunk, Layout::from_size_align(len, CHUNK_SIZE).unwrap()) };
    /// ```
    fn acquire_at_least(&mut self, layout: Layout, most: usize) -> Option<(NonNull<u8>, usize)> {
        let _ = most;
        Some((self.acquire(layout)?, layout.size()))
    }

    /// Takes back a chunk.
    ///
    /// # Safety
    /// - `chunk` was returned by [`acquire`](ChunkSource::acquire) on this source with this
    ///   `layout` (or by [`acquire_at_least`](ChunkSource::acquire_at_least) with the length
    ///   of `layout`), and has not been released since.
    /// - Nothing uses the chunk's memory afterwards.
    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout);

    /// Shortens a chunk in place to `new_len` bytes, taking back the rest; returns whether it
    /// did. The default does nothing and returns `false`: the engine then keeps the chunk whole,
    /// or moves what it holds to a shorter one. A large block shrunk by a granule or more, and
    /// a [`LockedPool`](crate::LockedPool)'s block with a chunk of its own, shrink in place
    /// through this: they need no new memory to shrink.
    ///
    /// # Safety
    /// - `chunk` was returned by [`acquire`](ChunkSource::acquire) on this source with this
    ///   `layout` (or by [`acquire_at_least`](ChunkSource::acquire_at_least) with the length
    ///   of `layout`), and has not been released since.
    /// - `new_len` is a multiple of [`granule`](ChunkSource::granule), above 0 and below
    ///   `layout.size()`.
    /// - Nothing uses the chunk past its first `new_len` bytes afterwards.
    ///
    /// After it returns `true`, the chunk is, in all of the above, one returned by `acquire` for
    /// `new_len` bytes and `layout`'s alignment.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    /// use melon_alloc_core::{ChunkSource, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 5 * CHUNK_SIZE] = [0; 5 * CHUNK_SIZE];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 5 * CHUNK_SIZE) };
    /// let whole = Layout::from_size_align(3 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    /// let chunk = source.acquire(whole).unwrap();
    /// let before = source.free_bytes();
    /// // SAFETY: the chunk came from `source` with `whole`, and nothing uses its tail.
    /// assert!(unsafe { source.shrink(chunk, whole, CHUNK_SIZE) });
    /// assert_eq!(source.free_bytes(), before + 2 * CHUNK_SIZE);
    /// let short = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
    /// // SAFETY: the chunk is now one of `CHUNK_SIZE` bytes, and is not used again.
    /// unsafe { source.release(chunk, short) };
    /// ```
    unsafe fn shrink(&mut self, chunk: NonNull<u8>, layout: Layout, new_len: usize) -> bool {
        let _ = (chunk, layout, new_len);
        false
    }

    /// Takes back every small chunk at once, if the source can do that without being told
    /// which chunks they are (a source that carves them from slabs of its own can drop the
    /// slabs). Returns whether it did; the default does nothing and returns `false`, and the
    /// engine then releases its chunks one by one.
    ///
    /// An engine calls this only when it is dropped, which is what lets dropping a pool skip the
    /// walk over its chunks.
    ///
    /// # Safety
    /// - Every small chunk the source handed out is, from now on, unused by anyone.
    /// - Large chunks were released one by one before this call, so every chunk still out with
    ///   a small chunk's layout (which a large chunk of exactly `CHUNK_SIZE` bytes also has) is
    ///   a small chunk.
    unsafe fn release_all_small(&mut self) -> bool {
        false
    }

    /// Blocks of this source's chunks that were freed elsewhere (by another process, into a
    /// chunk lent from a shared pool), for the engine to take back into its lists: the source
    /// writes up to `out.len()` of them into `out` and returns how many. The engine asks when a
    /// size class has no block left in its chunks, before it takes a new chunk, and again while
    /// the answer is not 0, up to a bound per call (blocks beyond it wait for the next time).
    /// The default has none.
    ///
    /// # Examples
    /// ```
    /// use core::ptr::NonNull;
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// static mut ARENA: [u8; 64 * 1024] = [0; 64 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 64 * 1024) };
    /// // A region has no other process freeing into it.
    /// let mut out: [Option<NonNull<u8>>; 8] = [None; 8];
    /// assert_eq!(source.take_remote_frees(&mut out), 0);
    /// ```
    fn take_remote_frees(&mut self, out: &mut [Option<NonNull<u8>>]) -> usize {
        let _ = out;
        0
    }

    /// Has the next [`take_remote_frees`](ChunkSource::take_remote_frees) look for blocks freed
    /// elsewhere in every chunk, not only where it was told of frees: a source told of them may
    /// miss one whose freer died before it told. The engine asks when it cannot have the chunk a
    /// request needs, then takes the blocks, which may empty chunks it can give back, before it
    /// refuses the request. The default does nothing.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// static mut ARENA: [u8; 64 * 1024] = [0; 64 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 64 * 1024) };
    /// source.rescan_remote_frees();
    /// let mut out = [None; 8];
    /// assert_eq!(source.take_remote_frees(&mut out), 0, "a region has nothing freed elsewhere");
    /// ```
    fn rescan_remote_frees(&mut self) {}

    /// Forgets the blocks freed elsewhere that [`take_remote_frees`](ChunkSource::take_remote_frees)
    /// has not given the engine yet. The engine calls it when it is reset
    /// ([`Engine::reset`](crate::Engine::reset)), after which every block of its chunks is free
    /// already: given to the engine afterwards, one of them would be free twice, and handed out
    /// twice. The default has none to forget.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// static mut ARENA: [u8; 64 * 1024] = [0; 64 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 64 * 1024) };
    /// source.forget_remote_frees();
    /// let mut out = [None; 8];
    /// assert_eq!(source.take_remote_frees(&mut out), 0);
    /// ```
    fn forget_remote_frees(&mut self) {}

    /// Gives back to the system whatever released memory the source keeps for reuse, if any;
    /// the engine calls it from [`Engine::trim`](crate::Engine::trim), and when the limit or the
    /// source refused a chunk, before it tries again. The default does nothing.
    fn trim(&mut self) {}

    /// Lets the system take back the pages of free memory the source keeps but cannot give back
    /// yet (free chunks of a slab that still has chunks out, say), where it can. The engine
    /// calls it from [`Engine::trim`](crate::Engine::trim) alone, not before the retry of a
    /// refused chunk, where the pages would be needed again at once. The default does nothing.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 1 << 16) };
    /// // A region keeps no pages it could let go of.
    /// source.discard_free();
    /// ```
    fn discard_free(&mut self) {}

    /// The granule the source's memory is taken in: a chunk of `len` bytes takes `len` rounded
    /// up to a multiple of it, which an engine counts as held and charges against its limit,
    /// so that a limit bounds the memory taken. A power of two from 16 to
    /// [`CHUNK_SIZE`](crate::CHUNK_SIZE), the same every time; the default, 16, makes what a
    /// chunk takes its length. A region carves whole `CHUNK_SIZE` units.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, Engine, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 1 << 17] = [0; 1 << 17];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 1 << 17) };
    /// assert_eq!(source.granule(), CHUNK_SIZE);
    /// // A large block of a little more than half a chunk holds a whole unit of the region.
    /// let mut engine = Engine::new(source, Some(4 * CHUNK_SIZE));
    /// let _large = engine.alloc(CHUNK_SIZE / 2 + 16).unwrap();
    /// assert_eq!(engine.stats().bytes_held, CHUNK_SIZE);
    /// ```
    fn granule(&self) -> usize {
        crate::MIN_ALIGN
    }

    /// Whether the source carves every chunk, small or large, out of one bounded space, where
    /// small chunks given back merge into the runs that larger ones need, as a
    /// [`RegionSource`](crate::RegionSource) does. An engine over such a source gives back the
    /// empty chunks it keeps before it asks for a chunk longer than
    /// [`CHUNK_SIZE`](crate::CHUNK_SIZE), or aligned to more, so that they do not split the
    /// space that chunk needs.
    /// The default, `false`, suits a source whose longer chunks come from elsewhere.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, Engine, RegionSource, CHUNK_SIZE};
    ///
    /// static mut ARENA: [u8; 8 * CHUNK_SIZE] = [0; 8 * CHUNK_SIZE];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// assert!(source.merges_released_chunks());
    /// let units = source.free_bytes() / CHUNK_SIZE;
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(64).unwrap();
    /// // SAFETY: the block came from this engine and is not used again.
    /// unsafe { engine.free(block) };
    /// // The emptied chunk, kept for the next small block, goes back for a block of every unit.
    /// assert!(engine.alloc(units * CHUNK_SIZE - 64).is_some());
    /// ```
    fn merges_released_chunks(&self) -> bool {
        false
    }

    /// Bytes of released chunks the source keeps for reuse instead of giving them back to the
    /// system. An engine with a limit counts them against it (see
    /// [`keep_at_most`](ChunkSource::keep_at_most)). The default keeps nothing.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// static mut ARENA: [u8; 64 * 1024] = [0; 64 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 64 * 1024) };
    /// // A region keeps nothing apart from what it hands out.
    /// assert_eq!(source.kept_bytes(), 0);
    /// ```
    fn kept_bytes(&self) -> usize {
        0
    }

    /// Gives kept chunks back to the system until at most `bytes` bytes are kept. An engine with
    /// a limit calls it before it takes a chunk and after it gives one back, so that the bytes it
    /// holds and the bytes its source keeps stay within the limit together. The default does
    /// nothing, which is right for a source that keeps nothing.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// static mut ARENA: [u8; 64 * 1024] = [0; 64 * 1024];
    /// // SAFETY: nothing else ever touches `ARENA`.
    /// let mut source = unsafe { RegionSource::new(&raw mut ARENA as *mut u8, 64 * 1024) };
    /// source.keep_at_most(0);
    /// assert_eq!(source.kept_bytes(), 0);
    /// ```
    fn keep_at_most(&mut self, bytes: usize) {
        let _ = bytes;
    }

    /// Which stripe of a [`LockedPool`](crate::LockedPool)'s stash of free chunks the calling
    /// thread uses, for a source whose pools are shared by threads and whose memory is not
    /// scarce; `None`, the default, for a source without stripes.
    ///
    /// A locked pool with no limit over a source that names stripes keeps the small chunks its
    /// children give back in the giving thread's stripe (8 stripes, taken modulo 8, of up to 16
    /// chunks each), and a child takes its chunks from its thread's stripe before it asks the
    /// pool's engine. Children on different threads then take and give back chunks without
    /// meeting on the pool's lock, and the chunks a thread gives back are the ones it takes next,
    /// still in its caches. What the stripes keep is held by the pool, counted in the pool's
    /// `bytes_held` and not in its `bytes_lent` ([`LockedPool::stats`](crate::LockedPool::stats);
    /// the engine's own figures, seen inside `with`, count it as lent), and goes back to its
    /// engine on a trim, a reset, its drop, and a chunk the source refuses to a child. The
    /// pool's own allocations do not take it back: a refused one fails while the stripes keep
    /// up to 2 MiB, until a trim.
    /// Without stripes every chunk goes back to the engine at once, where the pool's own
    /// allocations find it: what a source of a fixed region needs.
    ///
    /// A source that names stripes should give each thread a stripe of its own, as far as it
    /// can: threads that share a stripe share its lock. It names one on every call, or on none.
    /// The pool asks whenever a child takes or gives back a small chunk; what the stripes keep
    /// goes back to the engine on a trim, a reset and the pool's drop whatever the calling
    /// thread's answer, from every stripe.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_core::{ChunkSource, RegionSource};
    ///
    /// // A region's chunks are scarce: they all go back to the engine.
    /// assert_eq!(RegionSource::stash_stripe(), None);
    /// ```
    fn stash_stripe() -> Option<usize>
    where
        Self: Sized,
    {
        None
    }
}
