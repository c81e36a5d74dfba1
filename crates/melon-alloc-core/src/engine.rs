//! The slab engine: hands out blocks from size-class chunks and large blocks from chunks of
//! their own, keeps to its limit, and gives empty chunks back to its source.
//!
//! Per size class, the engine keeps an `avail` list of chunks and a `full` list. Blocks are only
//! taken from the head of `avail`, so the allocation fast path is two loads and a store. A free
//! goes to the local free list of the block's own chunk, found from the block's address; it
//! leaves its fast path only when the chunk's `local_count` reaches the chunk's `event` value
//! (kept as a countdown, so that the test is one decrement),
//! which is set so that this happens exactly when a full chunk gets its first block back, or
//! when a chunk other than the head becomes empty. Neither path keeps a pool-wide counter:
//! statistics are read off the chunk headers when asked for.
//!
//! An engine made [`with_pages`](Engine::with_pages) (a child pool's, which serves one request
//! or task) gives a class's first chunk as a page of a paged chunk (one of four, each with its
//! own class), and any later one too while a page is unused: a pool that touches many classes a
//! little holds a page for each, not a chunk. Once a class has filled its page and no page is
//! unused, it takes whole chunks. A class that needs a page takes first the emptied page of a
//! smaller class, as a growing collection leaves behind. A paged chunk goes back to the source
//! with its last page, or as soon as the pages a growing collection passed along have all emptied
//! while the engine holds another chunk, so that its lines, just written, serve the next pool.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

#[cfg(not(target_os = "none"))]
use crate::chunk::COLOURED_MAX_BLOCKS;
use crate::chunk::{
    chunk_of, exposed_chunk_of, list_len, page_of, read_link, write_link, ChunkHeader, ChunkList,
    ChunkState, FreeBlock, CHUNK_SIZE, HEADER_SIZE, LARGE_MAGIC, NEVER, PAGES, PAGE_MAGIC,
    PAGE_SIZE, SMALL_CHUNK, SMALL_MAGIC,
};
use crate::class::{
    class_for_layout, class_of, BLOCK_ALIGN, CLASS_COUNT, CLASS_SIZES, FIRST_OFFSET, MIN_ALIGN,
    PAGE_CAPACITY,
};
use crate::error::FreeError;
use crate::source::ChunkSource;
use crate::stats::Stats;

/// Empty chunks an engine keeps per size class rather than give back: enough that a pool filling
/// and draining a few chunks over and over neither goes back to its source nor rebuilds their
/// free lists each time. Besides these, the chunk allocations come from may be empty too.
pub const SPARE_CHUNKS: usize = 4;

/// How far [`Engine::give_back_empty`] looks along each class's `avail` list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Up to the first chunk with a block in use.
    Heads,
    /// The whole list.
    WholeLists,
}

/// Blocks taken from [`ChunkSource::take_remote_frees`] at a time.
const REMOTE_BATCH: usize = 32;

/// Batches [`Engine::collect_remote_frees`] takes at most in one call.
const REMOTE_ROUNDS: usize = 64;

/// How a block stands to the layout a resize asks of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fit {
    /// It holds the layout, and stays where it is.
    Kept,
    /// It holds the layout but takes more than twice the bytes it needs: it moves if a shorter
    /// block can be had, and stays otherwise.
    Loose,
    /// It does not hold the layout: it moves, or the resize fails.
    Short,
}

/// The bytes a slot of the chunk or page `header` heads holds: its class size, or a large
/// block's usable length.
fn slot_in(header: &ChunkHeader) -> usize {
    match header.state {
        ChunkState::Large => header.span - usize::from(header.data_offset),
        ChunkState::Avail | ChunkState::Full | ChunkState::Spare | ChunkState::Unused => {
            CLASS_SIZES[header.class()]
        }
    }
}

/// What a resize does with a [`Fit::Loose`] block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loose {
    /// It stays: Melon's `mln_alloc_re` keeps a shrunk block where it is.
    Stays,
    /// It moves to a shorter block, if one can be had.
    Moves,
}

/// A memory pool over a [`ChunkSource`]: size classes, large blocks, a limit, statistics.
///
/// The engine is the whole allocator of a pool without any policy about where it lives or who
/// may call it: [`melon-alloc-heap`] wraps it for single-threaded pools that cascade, and
/// [`LockedPool`](crate::LockedPool) puts it behind a spin lock.
///
/// # Identity
/// The engine writes its own address into every chunk it takes, which is how a pointer-only free
/// finds a block's pool. Keep an engine in one place (a `static`, a `Box`) while it holds chunks,
/// or give it a stable owner address with [`set_owner`](Engine::set_owner). An engine that moved
/// stays memory safe, and its checked operations ([`validate`](Engine::validate),
/// [`try_free`](Engine::try_free)), which search its own lists, still accept its blocks, as does
/// `free`'s check in debug builds when a chunk names another address; but the chunks name its old
/// address, so [`check`](Engine::check) reports them.
///
/// # Soundness
/// The engine hands out raw pointers, and every call that takes one back (`free`, `try_free`,
/// `realloc`, `resize`, `usable_size`) is unsafe. Of the safe calls, `alloc*`, `trim` (empty
/// cached chunks only), `validate`, `stats`, `check`, `limit`, `available` and `source` never
/// touch a block in use. What forgets or recycles blocks in use (`reset`, `abandon`), renames
/// their owner (`set_owner`) or could swap the source under them (`source_mut`) is unsafe.
/// Dropping or replacing an engine gives its chunks back, which is why wrappers that lend blocks
/// to safe code (an `Allocator`) never hand out `&mut Engine`.
///
/// # Examples
/// ```
/// use melon_alloc_core::{Engine, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let mut engine = Engine::new(RegionSource::from_static(region), None);
/// let block = engine.alloc(8).unwrap().cast::<u64>();
/// // SAFETY: the block holds 8 bytes aligned to 16, and nothing else uses it.
/// unsafe { block.write(42) };
/// // SAFETY: as above, and the block was written.
/// assert_eq!(unsafe { block.read() }, 42);
/// // SAFETY: the block came from this engine and is not used again.
/// unsafe { engine.free(block.cast()) };
/// assert_eq!(engine.stats().live_blocks, 0);
/// ```
///
/// [`melon-alloc-heap`]: https://docs.rs/melon-alloc-heap
pub struct Engine<S: ChunkSource> {
    /// Chunks with a free or never-used block; blocks come from the head.
    avail: [ChunkList; CLASS_COUNT],
    /// Chunks whose blocks are all in use.
    full: [ChunkList; CLASS_COUNT],
    /// Empty chunks kept for reuse, at most [`SPARE_CHUNKS`] per class. Their number is not
    /// kept: a walk of at most that many counts them, on the rare paths that need it.
    spare: [ChunkList; CLASS_COUNT],
    /// Chunks that each hold one large block.
    large: ChunkList,
    /// Pages of paged chunks that no class has.
    unused_pages: ChunkList,
    /// Whether new chunks of classes barely used are pages ([`with_pages`](Engine::with_pages)).
    pages: bool,
    /// Bit `c` is set once class `c` has taken a chunk, so that dropping a pool that used a few
    /// classes visits only those: what a short-lived child costs to drop. Kept only with the
    /// `pages` feature, the one for child pools: on a 32-bit target the 64-bit shift is code a
    /// firmware build without children does not need.
    classes_used: u64,
    limit: Option<usize>,
    /// Bytes taken from the source: small chunks, large chunks and chunks lent out. The count
    /// of chunks of each kind is not kept: [`stats`](Engine::stats) reads it off the lists.
    held: usize,
    peak_held: usize,
    /// Bytes taken from the source on behalf of another engine (a child pool).
    lent: usize,
    /// The address written into every chunk as its owner; null until set, meaning the engine's
    /// own address.
    owner: *const (),
    /// The handle of the engine's memcheck mempool; null until the first allocation makes it.
    #[cfg(feature = "valgrind")]
    memcheck_pool: *const (),
    source: S,
}

// SAFETY: the raw pointers in an engine point only into chunks that the engine holds exclusively,
// so moving the engine to another thread moves all of its state with it; the source goes along
// and must itself be `Send`.
unsafe impl<S: ChunkSource + Send> Send for Engine<S> {}

impl<S: ChunkSource> Engine<S> {
    /// Makes an engine that takes its chunks from `source` and holds at most `limit` bytes of
    /// them at a time (`None`: no limit). It takes no memory until the first allocation.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, Some(4 * CHUNK_SIZE));
    /// assert_eq!(engine.stats().bytes_held, 0);
    /// let _block = engine.alloc(64).unwrap();
    /// assert_eq!(engine.stats().bytes_held, CHUNK_SIZE);
    /// ```
    pub const fn new(source: S, limit: Option<usize>) -> Self {
        Self {
            avail: [const { ChunkList::new() }; CLASS_COUNT],
            full: [const { ChunkList::new() }; CLASS_COUNT],
            spare: [const { ChunkList::new() }; CLASS_COUNT],
            large: ChunkList::new(),
            unused_pages: ChunkList::new(),
            pages: false,
            classes_used: 0,
            limit,
            held: 0,
            peak_held: 0,
            lent: 0,
            owner: ptr::null(),
            #[cfg(feature = "valgrind")]
            memcheck_pool: ptr::null(),
            source,
        }
    }

    /// The same engine, giving pages of [`CHUNK_SIZE`]` / 4` bytes rather than whole chunks to
    /// the classes it barely uses: to each class its first chunk, and any other while a page is
    /// unused. A pool that uses eight classes a little then holds two chunks, not eight. Fit for
    /// short-lived and small pools (the children of `melon-alloc-heap`'s pools and of
    /// [`LockedPool`](crate::LockedPool) are made this way); a pool that lives long and fills
    /// many chunks of each class gains little from it. A source that places blocks by their
    /// whole chunk itself (a shared pool's, for its hand-offs) must not be paired with it.
    /// Without the `pages` feature (on by default), and with the `small-chunks` feature's 4 KiB
    /// chunks, chunks are never split and this changes nothing.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None).with_pages();
    /// let blocks = [16, 100, 300].map(|size| engine.alloc(size).unwrap());
    /// // Three classes, three pages, one chunk.
    /// # #[cfg(all(feature = "pages", not(feature = "small-chunks")))]
    /// assert_eq!(engine.stats().bytes_held, CHUNK_SIZE);
    /// for block in blocks {
    ///     // SAFETY: the block came from this engine and is not used again.
    ///     unsafe { engine.free(block) };
    /// }
    /// assert_eq!(engine.check(), Ok(()));
    /// ```
    #[must_use]
    pub const fn with_pages(mut self) -> Self {
        self.pages = true;
        self
    }

    /// Sets the address the engine writes into its chunks as their owner, in place of its own:
    /// the address of the wrapper that keeps the engine (a boxed pool), with the provenance that
    /// code finding the pool from a block's chunk will use.
    ///
    /// # Safety
    /// - The engine holds no chunk yet (no allocation has been made): blocks handed out earlier
    ///   would name an owner the engine no longer answers to.
    /// - Code that finds a pool from a block's chunk header (a pointer-only free) trusts the owner
    ///   address, so `owner` must be what that code expects for as long as the engine holds
    ///   chunks.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// static HOME: u8 = 0;
    /// let mut engine = Engine::new(source, None);
    /// // SAFETY: the engine has not allocated yet, and no code finds it from its chunks.
    /// unsafe { engine.set_owner(core::ptr::addr_of!(HOME).cast()) };
    /// let block = engine.alloc(64).unwrap();
    /// // The chunk names `HOME`, not the engine's address, so the engine may move.
    /// let mut moved = Box::new(engine);
    /// assert_eq!(moved.check(), Ok(()));
    /// // SAFETY: the block came from this engine and is not used again.
    /// unsafe { moved.free(block) };
    /// ```
    pub unsafe fn set_owner(&mut self, owner: *const ()) {
        self.owner = owner;
    }

    /// The source the engine takes its chunks from.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let before = engine.source().free_bytes();
    /// let _block = engine.alloc(64).unwrap();
    /// assert_eq!(engine.source().free_bytes(), before - CHUNK_SIZE);
    /// ```
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Bytes taken from the source on behalf of child pools and still out: the `bytes_lent` of
    /// [`stats`](Engine::stats), without its walk of the lists.
    #[cfg(feature = "pages")]
    pub(crate) fn lent_bytes(&self) -> usize {
        self.lent
    }

    /// The source, to change or inspect it.
    ///
    /// # Safety
    /// The source must stay the one the engine's chunks came from: it must not be replaced
    /// (`mem::replace`, `mem::swap`, assignment), and nothing done through the reference may
    /// take back or reuse a chunk the engine holds.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// // SAFETY: the source is only read.
    /// let source = unsafe { engine.source_mut() };
    /// assert!(source.free_bytes() > 0);
    /// ```
    pub unsafe fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The limit in bytes, if any.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE, MAX_SMALL};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, Some(CHUNK_SIZE));
    /// assert_eq!(engine.limit(), Some(CHUNK_SIZE));
    /// let _block = engine.alloc(64).unwrap();
    /// // The one chunk the limit allows is taken: another size class cannot have one.
    /// assert_eq!(engine.alloc(MAX_SMALL), None);
    /// ```
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Bytes that can still be taken from the source before the limit is reached: the limit
    /// minus the bytes held. `None` when there is no limit. A source that has no memory, or a
    /// parent pool at its own limit, refuses sooner.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, Some(4 * CHUNK_SIZE));
    /// let _block = engine.alloc(64).unwrap();
    /// assert_eq!(engine.available(), Some(3 * CHUNK_SIZE));
    /// let unlimited = Engine::new(RegionSource::from_static(&mut []), None);
    /// assert_eq!(unlimited.available(), None);
    /// ```
    pub fn available(&self) -> Option<usize> {
        self.limit.map(|limit| limit - self.held)
    }

    /// The owner address this engine writes into its chunks and checks blocks against.
    fn id(&self) -> *const () {
        if self.owner.is_null() {
            (self as *const Self).cast()
        } else {
            self.owner
        }
    }

    /// Allocates `size` bytes aligned to 16. A `size` of 0 gets a unique block of 16 bytes.
    /// Returns `None` when the source has no memory or the limit would be passed.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, MIN_ALIGN};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(100).unwrap();
    /// assert_eq!(block.as_ptr() as usize % MIN_ALIGN, 0);
    /// // A source with no memory gives none.
    /// let mut empty = Engine::new(RegionSource::from_static(&mut []), None);
    /// assert_eq!(empty.alloc(100), None);
    /// ```
    #[inline]
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let block = match class_of(size) {
            Some(class) => self.alloc_small(class),
            None => self.alloc_large(size, MIN_ALIGN),
        };
        #[cfg(feature = "valgrind")]
        self.memcheck_alloc(block, size);
        block
    }

    /// Like [`alloc`](Engine::alloc), with the block's first `size` bytes set to zero.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// static mut ARENA: [u8; 1 << 16] = [0xFF; 1 << 16];
    /// // SAFETY: this example is the arena's only user.
    /// let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc_zeroed(100).unwrap();
    /// // SAFETY: the block holds 100 bytes, just zeroed, and nothing else uses it.
    /// let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), 100) };
    /// assert!(bytes.iter().all(|&byte| byte == 0));
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        let block = self.alloc(size)?;
        // SAFETY: the block was just handed out and holds at least `size` bytes.
        unsafe { block.as_ptr().write_bytes(0, size) };
        Some(block)
    }

    /// Allocates a block for `layout`. Any power-of-two alignment below
    /// [`CHUNK_SIZE`](crate::CHUNK_SIZE) is served; larger ones get `None`.
    ///
    /// # Examples
    /// ```
    /// # use core::alloc::Layout;
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let layout = Layout::from_size_align(100, 512).unwrap();
    /// let block = engine.alloc_layout(layout).unwrap();
    /// assert_eq!(block.as_ptr() as usize % 512, 0);
    /// // A whole chunk's alignment is more than any block can have.
    /// let too_aligned = Layout::from_size_align(64, CHUNK_SIZE).unwrap();
    /// assert_eq!(engine.alloc_layout(too_aligned), None);
    /// ```
    #[inline]
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub fn alloc_layout(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.align() <= MIN_ALIGN {
            return self.alloc(layout.size());
        }
        let block = match class_for_layout(layout.size(), layout.align()) {
            Some(class) => self.alloc_small(class),
            None => self.alloc_large(layout.size(), layout.align()),
        };
        #[cfg(feature = "valgrind")]
        self.memcheck_alloc(block, layout.size());
        block
    }

    #[inline(always)]
    fn alloc_small(&mut self, class: usize) -> Option<NonNull<u8>> {
        let chunk = self.avail[class].head;
        if !chunk.is_null() {
            // SAFETY: the head of an `avail` list is a valid header of a chunk this engine holds.
            let block = unsafe { (*chunk).free };
            if let Some(block) = NonNull::new(block) {
                // SAFETY: (1) a free-list entry is a free block of this chunk whose first word
                // holds the next entry; (2) the header is valid as above.
                unsafe { (*chunk).free = read_link(block.as_ptr()) };
                return Some(block.cast());
            }
        }
        self.alloc_small_slow(class)
    }

    /// Allocation when the head chunk of `class` has an empty `free` list: refill it from the
    /// chunk's local free list, carve a never-used block, move an exhausted head to the `full`
    /// list, or take a new chunk.
    #[cold]
    #[inline(never)]
    fn alloc_small_slow(&mut self, class: usize) -> Option<NonNull<u8>> {
        // Classes come from `class_of` and `class_for_layout`, which only return classes below
        // `CLASS_COUNT`; saying so here lets the compiler drop the bounds checks of this path,
        // and with them its only way to panic.
        let class = class.min(CLASS_COUNT - 1);
        // The cheap case of what `alloc_from_avail` does for the head; hosted targets only,
        // since firmware counts code bytes.
        #[cfg(not(target_os = "none"))]
        {
            let head = self.avail[class].head;
            if !head.is_null() {
                // SAFETY: the head of `avail[class]` is a valid header of a chunk this engine
                // holds, and its lists hold free blocks of it.
                if let Some(block) = unsafe { take_own_frees(head) } {
                    return Some(block);
                }
            }
        }
        if let Some(block) = self.alloc_from_avail(class) {
            return Some(block);
        }
        // Blocks freed elsewhere may have made room in a chunk this engine holds.
        if self.collect_remote_frees() {
            if let Some(block) = self.alloc_from_avail(class) {
                return Some(block);
            }
        }
        self.alloc_from_new_chunk(class).or_else(|| self.alloc_after_rescan(class))
    }

    /// No chunk can be had for `class`: blocks freed elsewhere that the source was not told of
    /// may still make room, in the class's chunks or, emptying chunks of other classes, for a
    /// new one.
    #[cold]
    fn alloc_after_rescan(&mut self, class: usize) -> Option<NonNull<u8>> {
        if !self.collect_unannounced_frees() {
            return None;
        }
        self.alloc_from_avail(class).or_else(|| self.alloc_from_new_chunk(class))
    }

    /// Has the source look for blocks freed elsewhere in every chunk, not only where it was told
    /// of frees (a freer may have died before it told), and frees them into this engine
    /// ([`ChunkSource::rescan_remote_frees`]): what a request does before it is refused. Returns
    /// whether there were any.
    #[cold]
    fn collect_unannounced_frees(&mut self) -> bool {
        self.source.rescan_remote_frees();
        self.collect_remote_frees()
    }

    /// Takes a block from the chunks of `class`'s `avail` list (or a spare chunk), moving
    /// exhausted heads to the `full` list; `None` when none has a block left.
    fn alloc_from_avail(&mut self, class: usize) -> Option<NonNull<u8>> {
        loop {
            let chunk = self.avail[class].head;
            if chunk.is_null() {
                if self.revive_spare(class) {
                    continue;
                }
                return None;
            }
            // SAFETY: the head of `avail[class]` is a valid header of a chunk of `class` this
            // engine holds; its `free` list is empty, so the local list can take its place (or
            // the chunk start over), and never-used blocks can join it.
            unsafe {
                // A chunk whose blocks all came back out of order is carved anew, in order.
                #[cfg(not(target_os = "none"))]
                start_over_if_scattered(chunk, class);
                (*chunk).take_local_list();
                if (*chunk).carved < (*chunk).capacity() {
                    carve_batch(chunk);
                    // A watched page's event follows its carved blocks.
                    if crate::chunk::SPLIT && (*chunk).event != NEVER {
                        (*chunk).set_event(u32::from((*chunk).carved));
                    }
                }
                let block = (*chunk).free;
                if !block.is_null() {
                    (*chunk).free = read_link(block);
                    return Some(NonNull::new_unchecked(block.cast()));
                }
            }
            // The head is exhausted, every block in use: it waits on `full` for one to come back.
            // SAFETY: `chunk` is on `avail[class]` and every header on both lists is valid.
            unsafe {
                self.avail[class].unlink(chunk);
                (*chunk).state = ChunkState::Full;
                (*chunk).set_event(1);
                self.full[class].push_front(chunk);
                self.promote_head(class);
            }
        }
    }

    /// Takes a new chunk, or page, for `class` and a block from it. Always inlined into the
    /// allocation slow path, its only caller, which saves a call and a frame on the way to a new
    /// chunk.
    #[inline(always)]
    fn alloc_from_new_chunk(&mut self, class: usize) -> Option<NonNull<u8>> {
        // A class that takes no page asks for a whole chunk. A refused acquisition trims first,
        // which may empty a page that the class's blocks fit: it then takes that page.
        let whole = if self.takes_page(class) { None } else { self.acquire(SMALL_CHUNK) };
        // With the chunk, whether a smaller class passed it on as a page (`take_page`).
        let (chunk, passed) = match whole {
            Some(chunk) => {
                let chunk = chunk.cast::<ChunkHeader>().as_ptr();
                // SAFETY: the source handed out `CHUNK_SIZE` bytes aligned to `CHUNK_SIZE`,
                // enough for a header.
                unsafe {
                    chunk.write(ChunkHeader {
                        state: ChunkState::Avail,
                        class: class as u8,
                        ..self.blank_header(SMALL_MAGIC, CHUNK_SIZE)
                    });
                }
                // Memcheck sees a chunk from the source as accessible memory; blocks become
                // accessible as they are handed out.
                #[cfg(feature = "valgrind")]
                crate::valgrind::no_access(
                    chunk.cast::<u8>().wrapping_add(HEADER_SIZE),
                    CHUNK_SIZE - HEADER_SIZE,
                );
                (chunk, false)
            }
            None if self.takes_page(class) => {
                let (page, passed) = self.take_page(class)?;
                // SAFETY: `page` is a valid header of a page on no list, unused or emptied and
                // taken from its class; its `data_offset` is its chunk's count of pages in use
                // if it is the first page, and is kept.
                unsafe {
                    let data_offset = (*page).data_offset;
                    page.write(ChunkHeader {
                        state: ChunkState::Avail,
                        class: class as u8,
                        data_offset,
                        ..self.blank_header(PAGE_MAGIC, PAGE_SIZE)
                    });
                }
                (page, passed)
            }
            None => return None,
        };
        if crate::chunk::SPLIT {
            self.classes_used |= 1 << class;
        }
        // SAFETY: `chunk` is a valid header on no list, and the `avail` list holds valid headers.
        unsafe { self.avail[class].push_front(chunk) };
        // SAFETY: the header was just set up, with nothing carved yet and room for a block.
        unsafe {
            carve_batch(chunk);
            if passed {
                (*chunk).set_event(u32::from((*chunk).carved));
            }
            let block = (*chunk).free;
            (*chunk).free = read_link(block);
            Some(NonNull::new_unchecked(block.cast()))
        }
    }

    /// Whether `class`'s next chunk is a page: if the engine gives pages, its blocks fit one, and
    /// either a page is unused or the class has no chunk yet (the allocation slow path found its
    /// `avail` and `spare` lists empty, and its `full` list is).
    fn takes_page(&self, class: usize) -> bool {
        crate::chunk::SPLIT
            && self.pages
            && PAGE_CAPACITY[class] > 0
            && (!self.unused_pages.head.is_null() || self.full[class].head.is_null())
    }

    /// A page for `class`: the emptied page of a smaller class ([`emptied_page_below`]), or an
    /// unused page, taken off its list and counted in its chunk; a chunk from the source is split
    /// into pages first if none is unused. With it, whether a smaller class passed it on: such a
    /// page is watched until it empties ([`passed_page_emptied`]).
    ///
    /// [`emptied_page_below`]: Engine::emptied_page_below
    /// [`passed_page_emptied`]: Engine::passed_page_emptied
    fn take_page(&mut self, class: usize) -> Option<(*mut ChunkHeader, bool)> {
        if let Some(page) = self.emptied_page_below(class) {
            return Some((page, true));
        }
        // A refused acquisition trims first, which may empty a page.
        let fresh = if self.unused_pages.head.is_null() { self.acquire(SMALL_CHUNK) } else { None };
        if let Some(chunk) = fresh {
            let chunk = chunk.cast::<u8>().as_ptr();
            // The page taken first differs from chunk to chunk: see `page_colour`.
            let first = page_colour(chunk);
            for turn in (0..PAGES).rev() {
                #[allow(clippy::modulo_one, reason = "one page where chunks are never split")]
                let index = (first + turn) % PAGES;
                // SAFETY: (1) page `index` starts inside the chunk's `CHUNK_SIZE` bytes, aligned
                // to `PAGE_SIZE`, with room for a header; (2) the page is on no list, and the
                // list of unused pages holds valid headers.
                unsafe {
                    let page = chunk.add(index * PAGE_SIZE).cast::<ChunkHeader>();
                    page.write(self.blank_header(PAGE_MAGIC, PAGE_SIZE));
                    self.unused_pages.push_front(page);
                }
                #[cfg(feature = "valgrind")]
                crate::valgrind::no_access(
                    chunk.wrapping_add(index * PAGE_SIZE + HEADER_SIZE),
                    PAGE_SIZE - HEADER_SIZE,
                );
            }
        }
        let page = NonNull::new(self.unused_pages.head)?.as_ptr();
        // SAFETY: `page` heads the list of unused pages, whose headers are valid, and the first
        // page of its chunk is a valid header too, whose `data_offset` counts the pages in use
        // (fewer than `PAGES`, since this one was not).
        unsafe {
            self.unused_pages.unlink(page);
            (*chunk_of(page.cast())).data_offset += 1;
        }
        Some((page, false))
    }

    /// The page of a class smaller than `class` whose blocks have all come back and that is the
    /// only chunk of its class, taken from that class, or `None`. A collection that grows
    /// (a hash table, a vector) leaves such a page behind at each step; handing it to the next
    /// size keeps a short-lived pool's memory to the lines it has just written, rather than
    /// spreading it over a fresh page per size. Only smaller classes give up their page, so a
    /// class that takes one never gives it back to the class it came from: two classes in turn
    /// cannot pass one page back and forth. Of those, the largest goes: its lines are the most
    /// recently written. Each class costs at most [`EMPTY_PROBE`] links to look at.
    fn emptied_page_below(&mut self, class: usize) -> Option<*mut ChunkHeader> {
        let mut smaller = self.classes_used & ((1u64 << class) - 1);
        while smaller != 0 {
            let other = (u64::BITS - 1 - smaller.leading_zeros()) as usize;
            smaller &= !(1u64 << other);
            let page = self.avail[other].head;
            // SAFETY: the head of `avail[other]` is a valid header of a chunk or page the engine
            // holds, whose `free` list holds free blocks of it; the other lists hold valid
            // headers too.
            let emptied = !page.is_null()
                && unsafe { (*page).is_page() && (*page).next.is_null() && all_free(page) }
                && self.full[other].head.is_null()
                && self.spare[other].head.is_null();
            if emptied {
                // SAFETY: `page` is on `avail[other]`, whose headers are valid. Every block it
                // carved is on one of its free lists, so none is in use, and the class keeps no
                // other chunk to promote.
                unsafe { self.avail[other].unlink(page) };
                self.classes_used &= !(1u64 << other);
                return Some(page);
            }
        }
        None
    }

    /// The header of a chunk or page that no class has yet, nothing carved and on no list.
    fn blank_header(&self, magic: u16, span: usize) -> ChunkHeader {
        ChunkHeader {
            magic,
            state: ChunkState::Unused,
            class: 0,
            data_offset: 0,
            carved: 0,
            countdown: NEVER,
            event: NEVER,
            owner: self.id(),
            free: ptr::null_mut(),
            local_free: ptr::null_mut(),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            span,
        }
    }

    /// Gives back an empty small chunk, on no list: a whole one to the source, a page to the
    /// list of unused pages, and with it its chunk to the source if that was its last page in
    /// use.
    ///
    /// # Safety
    /// `chunk` is a valid header of an empty small chunk or page of this engine, on no list, and
    /// no block of it is used afterwards.
    unsafe fn release_small(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: the header is valid (caller).
        if !unsafe { (*chunk).is_page() } {
            // SAFETY: a whole small chunk came from the source with `SMALL_CHUNK`; the caller
            // gives up its blocks.
            unsafe { self.release(NonNull::new_unchecked(chunk.cast()), SMALL_CHUNK) };
            return;
        }
        let first = chunk_of(chunk.cast());
        // SAFETY: (1) `chunk` is a page on no list, and the list of unused pages holds valid
        // headers; (2) the chunk's first page is a valid header whose count includes this page.
        let in_use = unsafe {
            (*chunk).state = ChunkState::Unused;
            self.unused_pages.push_front(chunk);
            (*first).data_offset -= 1;
            (*first).data_offset
        };
        if in_use == 0 {
            for index in 0..PAGES {
                // SAFETY: no page of the chunk is in use, so all of them are on the list of
                // unused pages, whose headers are valid.
                unsafe { self.unused_pages.unlink(first.byte_add(index * PAGE_SIZE)) };
            }
            // SAFETY: the chunk came from the source with `SMALL_CHUNK`, and none of its pages
            // is on a list or in use any more.
            unsafe { self.release(NonNull::new_unchecked(first.cast()), SMALL_CHUNK) };
        }
    }

    /// Frees into this engine the blocks its source says were freed elsewhere
    /// ([`ChunkSource::take_remote_frees`]). Returns whether there were any.
    #[cold]
    fn collect_remote_frees(&mut self) -> bool {
        let mut batch = [None; REMOTE_BATCH];
        let mut collected = false;
        // Blocks freed elsewhere while this runs wait for the next time: a bound, so that a
        // stream of them cannot keep the engine here.
        for _ in 0..REMOTE_ROUNDS {
            let count = self.source.take_remote_frees(&mut batch).min(REMOTE_BATCH);
            if count == 0 {
                break;
            }
            collected = true;
            for block in batch[..count].iter_mut().filter_map(Option::take) {
                // SAFETY: the source returns blocks this engine handed out from chunks it
                // holds, in use by nobody, each once (its contract).
                unsafe { self.free(block) };
            }
        }
        collected
    }

    /// Makes a spare chunk of `class`, if there is one, the head of its `avail` list. Its blocks
    /// are all on its local free list, ready for the allocation slow path to take.
    fn revive_spare(&mut self, class: usize) -> bool {
        let chunk = self.spare[class].head;
        if chunk.is_null() {
            return false;
        }
        // SAFETY: `chunk` is on `spare[class]`, the `avail` list is empty, and every list holds
        // valid headers.
        unsafe {
            self.spare[class].unlink(chunk);
            (*chunk).state = ChunkState::Avail;
            (*chunk).set_event(NEVER);
            self.avail[class].push_front(chunk);
        }
        true
    }

    /// Makes the head of `avail[class]`, if any, the chunk that allocations come from: one that
    /// is never given back while it is the head.
    ///
    /// # Safety
    /// Every header on `avail[class]` is valid.
    unsafe fn promote_head(&mut self, class: usize) {
        let head = self.avail[class].head;
        if !head.is_null() {
            // SAFETY: forwarded from the caller.
            unsafe { (*head).set_event(NEVER) };
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_large(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // The data must start inside the first `CHUNK_SIZE` bytes of the chunk, where
        // `chunk_of` finds its header: data aligned to a whole chunk would start a chunk of its
        // own.
        if align >= CHUNK_SIZE {
            return None;
        }
        let offset = align.max(HEADER_SIZE);
        // A zero-size request still gets 16 bytes: a free writes its link into the first word.
        let size = size.max(MIN_ALIGN);
        // Whole granules of the source, which it would take anyway: the chunk counts what it
        // takes, and the limit bounds the source's memory (a region's are whole chunks).
        let granule = self.source.granule().max(MIN_ALIGN);
        let span = offset.checked_add(size)?.checked_add(granule - 1)? & !(granule - 1);
        let layout = Layout::from_size_align(span, CHUNK_SIZE).ok()?;
        // A kept chunk up to a quarter longer serves as well as a new one of the length asked.
        let most = span.saturating_add(span / 4) & !(MIN_ALIGN - 1);
        let (chunk, span) = self.acquire_up_to(layout, most).or_else(|| {
            // Blocks freed elsewhere may empty chunks, which a second try gives back first.
            self.collect_unannounced_frees().then(|| self.acquire_up_to(layout, most))?
        })?;
        let chunk = chunk.cast::<ChunkHeader>().as_ptr();
        // SAFETY: (1) the source handed out `span >= offset >= HEADER_SIZE` bytes aligned to
        // `CHUNK_SIZE`; (2) the chunk is on no list and the `large` list holds valid headers.
        // `event` is 1 so that the small-block free path sends this chunk to `free_slow` on its
        // first free.
        unsafe {
            chunk.write(ChunkHeader {
                state: ChunkState::Large,
                data_offset: offset as u16,
                carved: 1,
                countdown: 1,
                event: 1,
                ..self.blank_header(LARGE_MAGIC, span)
            });
            self.large.push_front(chunk);
        }
        #[cfg(feature = "valgrind")]
        crate::valgrind::no_access(
            chunk.cast::<u8>().wrapping_add(HEADER_SIZE),
            span - HEADER_SIZE,
        );
        // SAFETY: `offset + 16 <= span`, so the data start is inside the chunk.
        Some(unsafe { NonNull::new_unchecked(chunk.cast::<u8>().add(offset)) })
    }

    /// Frees a block.
    ///
    /// In debug builds the block is checked as [`try_free`](Engine::try_free) does (except that
    /// ownership is read from the chunk header rather than searched for), and a double free or
    /// an interior pointer aborts the process with a message. The check reads the header of the
    /// chunk the address falls in, so it cannot help where that chunk is gone: a large block
    /// freed twice, whose chunk went back to the source, or a pointer of another allocator, may
    /// fault instead. A [`LockedPool`](crate::LockedPool) stops the process only once it has let
    /// go of its lock, so that the message can be made even in the pool that is the
    /// `#[global_allocator]`; a free through [`LockedEngine`](crate::LockedEngine), inside
    /// `with`, cannot, and there such a pool waits for its own lock forever instead.
    ///
    /// # Safety
    /// - `block` was returned by this engine and has not been freed since.
    /// - Nothing uses the block afterwards.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(100).unwrap();
    /// assert_eq!(engine.stats().live_blocks, 1);
    /// // SAFETY: the block came from this engine and is not used again.
    /// unsafe { engine.free(block) };
    /// assert_eq!(engine.stats().live_blocks, 0);
    /// ```
    #[inline]
    pub unsafe fn free(&mut self, block: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        stop_if_invalid(unsafe { self.free_reporting(block) });
    }

    /// Frees a block, but one that the debug build's check refuses, which it leaves alone and
    /// reports: for a caller that holds a lock it must let go of before it stops the process
    /// ([`stop_if_invalid`]). In a release build, nothing is refused.
    ///
    /// # Safety
    /// As for [`free`](Engine::free).
    #[inline]
    pub(crate) unsafe fn free_reporting(&mut self, block: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.check_in_debug(block) }?;
        // SAFETY: forwarded from the caller.
        unsafe { self.free_unchecked(block) };
        Ok(())
    }

    /// The debug build's check of a block about to be freed: `Ok` in a release build.
    ///
    /// # Safety
    /// As for [`free`](Engine::free): the caller promises `block` came from this engine, so its
    /// chunk header is valid.
    #[inline(always)]
    pub(crate) unsafe fn check_in_debug(&self, block: NonNull<u8>) -> Result<(), FreeError> {
        #[cfg(debug_assertions)]
        // SAFETY: forwarded from the caller.
        unsafe {
            self.check_block_in_header_chunk(block)
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = block;
            Ok(())
        }
    }

    /// Frees a block without the debug build's check of its chunk header.
    ///
    /// # Safety
    /// As for [`free`](Engine::free).
    #[inline]
    unsafe fn free_unchecked(&mut self, block: NonNull<u8>) {
        // Memcheck hears of the free first, so that it reports a double free before the link
        // is written.
        #[cfg(feature = "valgrind")]
        // SAFETY: the caller promises an in-use block of this engine.
        unsafe {
            self.memcheck_free(block);
        }
        // SAFETY: the caller promises an in-use block of this engine.
        let (chunk, listed) = unsafe { self.chunk_and_block(block) };
        // SAFETY: (1) the block belongs to this engine, so `chunk` is the valid header of its
        // chunk; (2) the block is at least 16 bytes, aligned to 16, and no longer in use, so its
        // first word can hold the free-list link. The link is written through the engine's own
        // pointer to the block, which reaches all of it: the caller's may reach only the bytes
        // of a shorter value (a `u32` freed through its reference, say).
        unsafe {
            write_link(listed.cast(), (*chunk).local_free);
            (*chunk).local_free = listed.cast::<FreeBlock>();
            (*chunk).countdown = (*chunk).countdown.wrapping_sub(1);
            if (*chunk).countdown == 0 {
                self.free_slow(chunk);
            }
        }
    }

    /// Frees a block after checking that it is one: a block of this engine, at its start, in
    /// use. On error nothing is changed.
    ///
    /// # Errors
    /// [`FreeError`] says why the pointer was refused.
    ///
    /// # Safety
    /// If `block` is a block of this engine that is in use, nothing uses it afterwards.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, FreeError, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(100).unwrap();
    /// // SAFETY: the block came from this engine and is not used again.
    /// assert_eq!(unsafe { engine.try_free(block) }, Ok(()));
    /// // SAFETY: the block is no longer in use, which `try_free` finds: it changes nothing.
    /// let again = unsafe { engine.try_free(block) };
    /// assert_eq!(again, Err(FreeError::NotInUse { addr: block.as_ptr() as usize }));
    /// ```
    pub unsafe fn try_free(&mut self, block: NonNull<u8>) -> Result<(), FreeError> {
        self.validate(block)?;
        // SAFETY: `validate` proved `block` is an in-use block of this engine, on its own lists
        // (whatever owner address its chunk names); the caller gives up its use.
        unsafe { self.free_unchecked(block) };
        Ok(())
    }

    /// Whether `block` is an in-use block of this engine, at its start. Costs a walk over the
    /// engine's chunk lists and over the free list of the block's chunk.
    ///
    /// # Errors
    /// [`FreeError`] says what the pointer is instead.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, FreeError, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(100).unwrap();
    /// assert_eq!(engine.validate(block), Ok(()));
    /// // SAFETY: 16 bytes in is still inside the block.
    /// let inside = unsafe { block.byte_add(16) };
    /// let error = FreeError::Interior { addr: inside.as_ptr() as usize };
    /// assert_eq!(engine.validate(inside), Err(error));
    /// ```
    pub fn validate(&self, block: NonNull<u8>) -> Result<(), FreeError> {
        let Some(chunk) = self.find_chunk(chunk_of(block.as_ptr())) else {
            let addr = block.as_ptr().addr();
            // Past its first `CHUNK_SIZE` bytes, a large block's address no longer rounds down
            // to its chunk, so look for the chunk it lies in.
            let in_large = self.large.iter().any(|chunk| {
                // SAFETY: headers on the `large` list are valid.
                let span = unsafe { (*chunk).span };
                (chunk.addr()..chunk.addr() + span).contains(&addr)
            });
            return Err(if in_large {
                FreeError::Interior { addr }
            } else {
                FreeError::Foreign { addr }
            });
        };
        // SAFETY: `chunk` is one of this engine's chunks, found on its lists, so its header is
        // valid; so is the header of each of its pages, all of which are on its lists.
        unsafe {
            let chunk = if (*chunk).is_page() {
                self.find_chunk(page_of(block.as_ptr())).unwrap_or(chunk)
            } else {
                chunk
            };
            self.check_block_in_chunk(chunk, block.as_ptr())
        }
    }

    /// The header of `block`'s chunk, and the block, both as pointers that may reach the whole
    /// chunk.
    ///
    /// Masking the block's address gives the header's address. A caller's pointer may carry
    /// provenance over its block alone (std's `Box<[T]>` hands `GlobalAlloc::dealloc` such a
    /// pointer), so both pointers take the provenance the engine exposed when it took the chunk
    /// ([`exposed_chunk_of`]), which reaches the whole chunk.
    ///
    /// The header is the block's page's when its chunk is paged, which the chunk's first header
    /// says.
    ///
    /// # Safety
    /// `block` is a block of some live engine, so that the first header of its chunk is valid.
    #[inline(always)]
    unsafe fn chunk_and_block(&self, block: NonNull<u8>) -> (*mut ChunkHeader, *mut u8) {
        let mut chunk = exposed_chunk_of(block.as_ptr());
        let block = chunk.cast::<u8>().with_addr(block.as_ptr().addr());
        // SAFETY: the first header of the block's chunk is valid (caller), and `chunk` carries
        // the provenance its engine exposed over the whole chunk when it took it.
        if unlikely(unsafe { (*chunk).is_page() }) {
            chunk = chunk.with_addr(page_of(block).addr());
        }
        (chunk, block)
    }

    /// The pointer on this engine's lists to the chunk or page at `chunk`'s address, if it holds
    /// one.
    fn find_chunk(&self, chunk: *mut ChunkHeader) -> Option<*mut ChunkHeader> {
        self.avail
            .iter()
            .chain(&self.full)
            .chain(&self.spare)
            .chain([&self.large, &self.unused_pages])
            .find_map(|list| list.iter().find(|&held| held == chunk))
    }

    /// Checks a block whose chunk header is trusted to be readable: the header must name this
    /// engine as owner.
    ///
    /// # Safety
    /// `chunk_of(block)` is a valid chunk header of some engine.
    #[cfg(debug_assertions)]
    unsafe fn check_block_in_header_chunk(&self, given: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: forwarded from the caller.
        let (chunk, block) = unsafe { self.chunk_and_block(given) };
        // SAFETY: forwarded from the caller; a paged chunk's pages all have valid headers.
        let (magic, owner) = unsafe { ((*chunk).magic, (*chunk).owner) };
        if ![SMALL_MAGIC, LARGE_MAGIC, PAGE_MAGIC].contains(&magic) {
            return Err(FreeError::Foreign { addr: block.addr() });
        }
        if owner != self.id() {
            // An engine known by its address may have moved since it took the chunk: its own
            // lists say whether the chunk is its, as they do for `validate`.
            return if self.owner.is_null() {
                self.validate(given)
            } else {
                Err(FreeError::Foreign { addr: block.addr() })
            };
        }
        // SAFETY: the header names this engine, so it is one of this engine's chunks.
        unsafe { self.check_block_in_chunk(chunk, block) }
    }

    /// Checks that `block` starts a block of `chunk` that is in use.
    ///
    /// # Safety
    /// `chunk` is a valid header of a chunk this engine holds.
    unsafe fn check_block_in_chunk(
        &self,
        chunk: *mut ChunkHeader,
        block: *const u8,
    ) -> Result<(), FreeError> {
        let addr = block.addr();
        let offset = addr - chunk.addr();
        // SAFETY: the caller guarantees the header is valid.
        let header = unsafe { &*chunk };
        if header.state == ChunkState::Unused {
            return Err(FreeError::NotInUse { addr });
        }
        if header.state == ChunkState::Large {
            return if offset == usize::from(header.data_offset) {
                Ok(())
            } else if offset < header.span {
                Err(FreeError::Interior { addr })
            } else {
                // A large chunk may end before the next `CHUNK_SIZE` boundary, and its source may
                // have handed out the bytes after it to anyone.
                Err(FreeError::Foreign { addr })
            };
        }
        let class = header.class();
        let (first, size) = (FIRST_OFFSET[class], CLASS_SIZES[class]);
        if offset < first || (offset - first) % size != 0 {
            return Err(FreeError::Interior { addr });
        }
        let index = (offset - first) / size;
        // The bytes a chunk or page leaves after its last block start no block either.
        if index >= usize::from(header.capacity()) {
            return Err(FreeError::Interior { addr });
        }
        if header.carve_index(index) >= usize::from(header.carved) {
            return Err(FreeError::NotInUse { addr });
        }
        for list in [header.free, header.local_free] {
            let mut entry = list;
            let mut steps = 0;
            while !entry.is_null() && steps <= header.carved {
                if entry.addr() == addr {
                    return Err(FreeError::NotInUse { addr });
                }
                // SAFETY: free-list entries are free blocks of this chunk holding the next link.
                entry = unsafe { read_link(entry) };
                steps += 1;
            }
        }
        Ok(())
    }

    /// The rare ends of a free: the chunk of a large block goes back to the source, a full chunk
    /// returns to `avail`, an empty chunk other than the head goes back to the source.
    ///
    /// # Safety
    /// `chunk` is a valid header of a chunk this engine holds, whose `local_count` has just
    /// reached its `event` value.
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: (1) the caller guarantees the header is valid, and every list holds valid
        // headers; (2) a chunk that reaches the release at the end is a whole chunk, never a page
        // (pages leave through `release_small`), and its `span` is the length it was taken with
        // (`CHUNK_SIZE` for a small chunk, what `acquire_up_to` got for a large one), which made
        // a valid layout with an alignment of `CHUNK_SIZE`.
        unsafe {
            let list = match (*chunk).state {
                ChunkState::Large => &mut self.large,
                ChunkState::Full => {
                    let class = (*chunk).class();
                    self.full[class].unlink(chunk);
                    (*chunk).state = ChunkState::Avail;
                    if self.avail[class].head.is_null() {
                        self.avail[class].push_front(chunk);
                        (*chunk).set_event(NEVER);
                    } else {
                        // Empty again once every carved block is back on the local list.
                        self.avail[class].push_second(chunk);
                        (*chunk).set_event(u32::from((*chunk).carved));
                        if crate::chunk::SPLIT && (*chunk).countdown == 0 {
                            self.emptied_leaving_full(chunk);
                        }
                    }
                    return;
                }
                ChunkState::Avail => {
                    let class = (*chunk).class();
                    // A head leaves its fast path only when it is a watched page: any other
                    // head's event is `NEVER`, which its count never reaches. A watched page's
                    // event is its carved count, so every block it carved is on its local list.
                    if crate::chunk::SPLIT && self.avail[class].head == chunk {
                        self.passed_page_emptied(chunk);
                        return;
                    }
                    if spares_below(self.spare[class].head, SPARE_CHUNKS) {
                        self.avail[class].unlink(chunk);
                        (*chunk).state = ChunkState::Spare;
                        self.spare[class].push_front(chunk);
                        return;
                    }
                    if (*chunk).is_page() {
                        self.avail[class].unlink(chunk);
                        self.release_small(chunk);
                        return;
                    }
                    &mut self.avail[class]
                }
                // A spare chunk or an unused page has no block in use, so no free reaches it.
                ChunkState::Spare | ChunkState::Unused => return,
            };
            // One way back to the source for an emptied whole chunk and a large one.
            list.unlink(chunk);
            let layout = Layout::from_size_align_unchecked((*chunk).span, CHUNK_SIZE);
            self.release(NonNull::new_unchecked(chunk.cast()), layout);
        }
    }

    /// The watched page `page`, head of its class, has every block it carved back on its local
    /// list. A page that an emptied smaller class passed on, as a growing table or vector leaves
    /// its last size behind, is watched (its `event` is its carved count, where a head's is
    /// otherwise [`NEVER`]) until the first time it empties, here. If then every page of its
    /// chunk is empty and the engine holds another chunk, the chunk goes back to the source at
    /// once, rather than when the pool goes: a short-lived pool whose growing collection has moved
    /// on to a whole chunk gives back the lines it has just written while they are in cache, for
    /// the next pool of the same source (the next request's) to write, where otherwise every pool
    /// would keep its own such lines and pools in flight together would fill the cache with them.
    /// A page is watched once per pass, so a pool that goes on using the class frees along its
    /// fast path, and a pool that takes a chunk again takes a fresh page, which is not watched.
    ///
    /// # Safety
    /// `page` is a valid header of a page at the head of its class's `avail` list, every block of
    /// which is on its local list.
    #[cold]
    #[inline(never)]
    unsafe fn passed_page_emptied(&mut self, page: *mut ChunkHeader) {
        // SAFETY: the header is valid (caller).
        unsafe { (*page).set_event(NEVER) };
        if self.held <= CHUNK_SIZE {
            return;
        }
        let first = chunk_of(page.cast());
        let page_at = |index: usize| first.wrapping_byte_add(index * PAGE_SIZE);
        // SAFETY: a page's chunk is split into `PAGES` pages, each with a valid header (an unused
        // one's is blank, on the list of unused pages); a page on a class's list has free lists
        // of its own blocks.
        let empty = (0..PAGES).all(|index| unsafe {
            let other = page_at(index);
            match (*other).state {
                ChunkState::Unused | ChunkState::Spare => true,
                ChunkState::Avail => all_free(other),
                ChunkState::Full | ChunkState::Large => false,
            }
        });
        if !empty {
            return;
        }
        // The pages leave their lists first, and the engine after: giving back the last of them
        // gives back the chunk (`release_small`), after which no header of it may be read.
        let mut leaving = [ptr::null_mut(); PAGES];
        let mut count = 0;
        for index in 0..PAGES {
            let other = page_at(index);
            // SAFETY: as above; each page with a class is on its class's `avail` or `spare`
            // list, and none of its blocks is in use, so it can leave the list.
            unsafe {
                let class = (*other).class();
                match (*other).state {
                    ChunkState::Avail => {
                        let was_head = self.avail[class].head == other;
                        self.avail[class].unlink(other);
                        if was_head {
                            self.promote_head(class);
                        }
                    }
                    ChunkState::Spare => self.spare[class].unlink(other),
                    ChunkState::Unused | ChunkState::Full | ChunkState::Large => continue,
                }
                if self.avail[class].head.is_null()
                    && self.full[class].head.is_null()
                    && self.spare[class].head.is_null()
                {
                    self.classes_used &= !(1u64 << class);
                }
            }
            leaving[count] = other;
            count += 1;
        }
        for &other in &leaving[..count] {
            // SAFETY: each page is an empty page of this engine on no list now, whose blocks
            // nobody uses; the chunk stays until the last of them goes.
            unsafe { self.release_small(other) };
        }
    }

    /// A page of one block, whose block was just freed as it left `full` for `avail`: it is
    /// empty, and no later free would tell, so it goes where an emptied page goes. Only a page
    /// can hold a single block; a whole chunk holds two of the largest class.
    ///
    /// # Safety
    /// As for [`free_slow`](Engine::free_slow); the chunk is on `avail`, behind its head.
    #[cold]
    #[inline(never)]
    unsafe fn emptied_leaving_full(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: forwarded from the caller; the chunk is `Avail` now, which `free_slow` treats
        // as a chunk whose last block came back.
        unsafe { self.free_slow(chunk) }
    }

    /// Resizes a block to `new_size` bytes aligned to 16, keeping its contents up to the smaller
    /// of the two sizes. A `new_size` of 0 frees the block and returns `None`. A shrink, or a
    /// grow that still fits the block, returns the same block.
    ///
    /// On failure (`None` for a non-zero `new_size`) the old block is left as it was.
    ///
    /// # Safety
    /// As for [`free`](Engine::free): `block` is an in-use block of this engine. On success the
    /// old pointer is not used again unless it was returned.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(16).unwrap();
    /// // SAFETY: the block holds 16 bytes and nothing else uses it.
    /// unsafe { block.as_ptr().write_bytes(7, 16) };
    /// // SAFETY: the block came from this engine; only the pointer returned is used afterwards.
    /// let grown = unsafe { engine.realloc(block, 1000) }.unwrap();
    /// // SAFETY: the grown block holds 1000 bytes, the first 16 copied from the old one.
    /// assert_eq!(unsafe { grown.as_ptr().add(15).read() }, 7);
    /// // SAFETY: `grown` is in use in this engine and not used again: a size of 0 frees it.
    /// assert_eq!(unsafe { engine.realloc(grown, 0) }, None);
    /// assert_eq!(engine.stats().live_blocks, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn realloc(&mut self, block: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        if new_size == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.free(block) };
            return None;
        }
        let new_layout = Layout::from_size_align(new_size, MIN_ALIGN).ok()?;
        // SAFETY: forwarded from the caller.
        unsafe { self.resize_as(block, new_layout, Loose::Stays) }
    }

    /// Resizes a block to `new_layout`, in place when the block already holds `new_layout.size()`
    /// bytes at `new_layout.align()`, otherwise by moving it. On failure the old block is left as
    /// it was.
    ///
    /// A large block that holds the new layout first gives back the source's granules past what
    /// it needs, if the source can shorten a chunk in place ([`ChunkSource::shrink`]); left more
    /// than twice as long as it needs, it then moves to a shorter block if one can be had, and
    /// stays otherwise. [`realloc`](Engine::realloc) keeps it where it is.
    ///
    /// # Safety
    /// As for [`realloc`](Engine::realloc).
    ///
    /// # Examples
    /// ```
    /// # use core::alloc::Layout;
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(100).unwrap();
    /// // A request of 100 bytes gets a slot of 112: growing to 112 keeps the block where it is.
    /// let wider = Layout::from_size_align(112, 16).unwrap();
    /// // SAFETY: the block came from this engine; only the pointer returned is used afterwards.
    /// let same = unsafe { engine.resize(block, wider) }.unwrap();
    /// assert_eq!(same, block);
    /// // A block without the alignment asked for moves to one that has it.
    /// let aligned = Layout::from_size_align(112, 1024).unwrap();
    /// // SAFETY: as above.
    /// let moved = unsafe { engine.resize(same, aligned) }.unwrap();
    /// assert_eq!(moved.as_ptr() as usize % 1024, 0);
    /// ```
    #[must_use = "a block not kept is lost until it is freed through its pointer or the pool goes"]
    pub unsafe fn resize(&mut self, block: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.resize_as(block, new_layout, Loose::Moves) }
    }

    /// [`resize`](Engine::resize), with a [`Fit::Loose`] block staying or moving as `loose`
    /// says.
    ///
    /// # Safety
    /// As for [`realloc`](Engine::realloc).
    unsafe fn resize_as(
        &mut self,
        block: NonNull<u8>,
        new_layout: Layout,
        loose: Loose,
    ) -> Option<NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        let (fit, usable) = unsafe { self.fit(block, new_layout) };
        if fit == Fit::Kept || (fit == Fit::Loose && loose == Loose::Stays) {
            return Some(self.keep_in_place(block, usable, new_layout.size()));
        }
        let Some(moved) = self.alloc_layout(new_layout) else {
            // A block that holds the new layout stays when no shorter one can be had: a shrink
            // does not fail.
            return (fit == Fit::Loose)
                .then(|| self.keep_in_place(block, usable, new_layout.size()));
        };
        // Only the bytes memcheck counts as the block's are copied: the rest of its slot stays
        // inaccessible until the caller asks for the block's usable size.
        #[cfg(feature = "valgrind")]
        let usable = crate::valgrind::block_len(block.as_ptr(), usable);
        // The whole slot is read, through the provenance the engine exposed over the chunk: the
        // caller's pointer may reach only the bytes it asked for (an `Allocator`'s caller hands
        // `grow` a pointer made from its slice of the block).
        // SAFETY: `block` is an in-use block of this engine (caller).
        let source = unsafe { self.chunk_and_block(block) }.1;
        // SAFETY: (1) the old block holds `usable` bytes and the new one at least
        // `new_layout.size()`, and the smaller count is copied; (2) two distinct in-use blocks
        // do not overlap; (3) `source` is the old block, at its address, and the caller gives it
        // up.
        unsafe {
            ptr::copy_nonoverlapping(source, moved.as_ptr(), usable.min(new_layout.size()));
            self.free(NonNull::new_unchecked(source));
        }
        Some(moved)
    }

    /// How `block` stands to `new_layout`, and the bytes its slot holds then. A large block
    /// that holds the layout first gives back to the source the granules past what the layout
    /// needs, if the source can shorten a chunk in place; nothing else changes. A block that
    /// stays goes through [`keep_in_place`](Engine::keep_in_place).
    ///
    /// # Safety
    /// `block` is an in-use block of this engine.
    pub(crate) unsafe fn fit(&mut self, block: NonNull<u8>, new_layout: Layout) -> (Fit, usize) {
        // SAFETY: the caller promises a block of this engine, so its chunk header is valid.
        let chunk = unsafe { self.chunk_and_block(block) }.0;
        // SAFETY: as above.
        let usable = unsafe { slot_in(&*chunk) };
        // An alignment is a power of two, so a mask tests it without a division.
        let aligned = block.as_ptr().addr() & (new_layout.align() - 1) == 0;
        if new_layout.size() > usable || !aligned {
            return (Fit::Short, usable);
        }
        // SAFETY: as above.
        if unsafe { (*chunk).state } != ChunkState::Large {
            return (Fit::Kept, usable);
        }
        // SAFETY: `chunk` is the valid header of the large chunk that holds the block, whose
        // caller asks for no more than `new_layout.size()` of it from now on.
        let usable = unsafe { self.shorten_large(chunk, new_layout.size()) };
        // A large block more than twice as long as it needs is worth a move, as in mimalloc.
        let fit = if new_layout.size() < usable / 2 { Fit::Loose } else { Fit::Kept };
        (fit, usable)
    }

    /// Keeps a block of `usable` bytes where it is for a caller that asks for `size` of them:
    /// with the `valgrind` feature, memcheck counts the first `size` as the caller's. Returns
    /// the block.
    #[cfg_attr(not(feature = "valgrind"), allow(unused_variables, clippy::unused_self))]
    pub(crate) fn keep_in_place(
        &self,
        block: NonNull<u8>,
        usable: usize,
        size: usize,
    ) -> NonNull<u8> {
        #[cfg(feature = "valgrind")]
        self.memcheck_grow_in_place(block, usable, size);
        block
    }

    /// Has the source take back the granules of a large chunk past what a block of `size`
    /// bytes needs, if it can shorten a chunk in place; returns the bytes the block's slot holds
    /// afterwards.
    ///
    /// # Safety
    /// `chunk` is the valid header of a large chunk of this engine, on its `large` list, and
    /// `size` is at most its block's usable length; nothing uses the block past `size` bytes
    /// afterwards.
    unsafe fn shorten_large(&mut self, chunk: *mut ChunkHeader, size: usize) -> usize {
        // SAFETY: forwarded from the caller.
        let (span, offset) = unsafe { ((*chunk).span, usize::from((*chunk).data_offset)) };
        let granule = self.source.granule().max(MIN_ALIGN);
        // As `alloc_large` rounds; `offset + size <= span`, so nothing overflows.
        let needed = (offset + size.max(MIN_ALIGN)).next_multiple_of(granule);
        if needed < span {
            // SAFETY: (1) the chunk came from `acquire_up_to` with a length of `span` and an
            // alignment of `CHUNK_SIZE`, which made a valid layout then, or was shortened to
            // `span` since, which makes it such a chunk; (2) `needed` is a
            // multiple of the granule, above 0 and below `span`; (3) the block ends at or below
            // `offset + size <= needed`, and the header lies before it.
            let shortened = unsafe {
                let layout = Layout::from_size_align_unchecked(span, CHUNK_SIZE);
                self.shorten_held(NonNull::new_unchecked(chunk.cast()), layout, needed)
            };
            if shortened {
                // SAFETY: forwarded from the caller.
                unsafe { (*chunk).span = needed };
                // Memcheck's record keeps what the caller asks for now, so that the block's free
                // closes none of the bytes the source took back.
                #[cfg(feature = "valgrind")]
                if !self.memcheck_pool.is_null() {
                    let block = chunk.cast::<u8>().wrapping_add(offset);
                    crate::valgrind::resize(self.memcheck_pool, block, size.max(MIN_ALIGN));
                }
                return needed - offset;
            }
        }
        span - offset
    }

    /// Has the source shorten a chunk the engine holds to `new_len` bytes in place, if it can;
    /// the bytes it takes back leave the engine's count and the limit.
    ///
    /// # Safety
    /// As for [`ChunkSource::shrink`], for a chunk this engine took from its source.
    unsafe fn shorten_held(&mut self, chunk: NonNull<u8>, layout: Layout, new_len: usize) -> bool {
        // Unlike `release`, the tail is left as memcheck sees it: a source that declines keeps
        // it the caller's, and one that takes it back makes it accessible before it writes
        // there, as the region does.
        // SAFETY: forwarded from the caller.
        if !unsafe { self.source.shrink(chunk, layout, new_len) } {
            return false;
        }
        self.held -= layout.size() - new_len;
        if let Some(limit) = self.limit {
            self.keep_source_within(limit.saturating_sub(self.held));
        }
        true
    }

    /// The number of bytes the block can hold: its class size, or the usable length of a large
    /// block.
    ///
    /// With the `valgrind` feature, memcheck counts the bytes past the size the block was asked
    /// for as the caller's from the first time this is asked for the block: until then, an access
    /// to them is reported as an overrun.
    ///
    /// # Safety
    /// `block` is an in-use block of this engine.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{class_of, Engine, RegionSource, CLASS_SIZES, MAX_SMALL};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let small = engine.alloc(100).unwrap();
    /// // SAFETY: the block is in use in this engine.
    /// assert_eq!(unsafe { engine.usable_size(small) }, CLASS_SIZES[class_of(100).unwrap()]);
    /// let large = engine.alloc(MAX_SMALL + 1).unwrap();
    /// // SAFETY: as above.
    /// assert!(unsafe { engine.usable_size(large) } > MAX_SMALL);
    /// ```
    pub unsafe fn usable_size(&self, block: NonNull<u8>) -> usize {
        // SAFETY: forwarded from the caller.
        let usable = unsafe { self.slot_size(block) };
        #[cfg(feature = "valgrind")]
        self.memcheck_claim(block, usable);
        usable
    }

    /// The bytes the block's slot holds: what [`usable_size`](Engine::usable_size) returns.
    ///
    /// # Safety
    /// `block` is an in-use block of this engine.
    unsafe fn slot_size(&self, block: NonNull<u8>) -> usize {
        // SAFETY: the caller promises a block of this engine, so its chunk header is valid.
        slot_in(unsafe { &*self.chunk_and_block(block).0 })
    }

    /// Has the source give back what it keeps beyond `room`, the limit's room: what the engine
    /// holds and what its source keeps for reuse stay within the limit together.
    #[inline(always)]
    fn keep_source_within(&mut self, room: usize) {
        if self.source.kept_bytes() > room {
            self.source.keep_at_most(room);
        }
    }

    /// Takes a chunk from the source, charging it against the limit. Empty cached chunks are
    /// given back first when the limit or the source would refuse, and what the source keeps
    /// when it would leave no room for the chunk within the limit.
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.acquire_up_to(layout, layout.size()).map(|(chunk, _)| chunk)
    }

    /// Takes a chunk of at least `layout` and at most `most` bytes from the source, as
    /// [`acquire`](Engine::acquire) does, with its length: at most what the limit leaves room for.
    // Inlined whole on hosted targets, so that a large block's path makes no call of its own for
    // it; left to the compiler on bare metal, where firmware counts its bytes.
    #[cfg_attr(not(target_os = "none"), inline(always))]
    fn acquire_up_to(&mut self, layout: Layout, most: usize) -> Option<(NonNull<u8>, usize)> {
        if self.source.merges_released_chunks()
            && (layout.size() > CHUNK_SIZE || layout.align() > CHUNK_SIZE)
        {
            // Empty chunks kept in the source's one space would split the run this chunk needs.
            self.give_back_empty(Reach::Heads);
        }
        let mut trimmed = false;
        loop {
            if let Some(most) = self.fit_to_limit(layout.size(), most) {
                if let Some((chunk, len)) = self.source.acquire_at_least(layout, most) {
                    // A free finds the chunk's header from a block's address alone, through this
                    // provenance ([`exposed_chunk_of`]).
                    let _ = chunk.as_ptr().expose_provenance();
                    // The source's contract: at least `layout`, at most `most` (or exactly
                    // `layout`).
                    debug_assert!(
                        (layout.size()..=most.max(layout.size())).contains(&len),
                        "{len} bytes"
                    );
                    self.held += len;
                    self.peak_held = self.peak_held.max(self.held);
                    return Some((chunk, len));
                }
            }
            // The limit or the source refused: once, give back the empty chunks kept for reuse
            // and try again. The retry does not depend on what the engine gave back: the trim
            // also has the source give back what it keeps (slabs, large chunks), which the
            // system may need to serve the request, and may empty a page.
            if trimmed {
                return None;
            }
            self.give_back_kept();
            trimmed = true;
        }
    }

    /// The most bytes a chunk of at least `size` bytes may have, `most` cut to what the limit
    /// leaves room for, a multiple of 16 as the source's contract has lengths; `None` when the
    /// limit leaves less than `size`. With a limit, the source first gives back what it keeps
    /// beyond the room the limit will leave once the chunk is held.
    #[inline(always)]
    fn fit_to_limit(&mut self, size: usize, most: usize) -> Option<usize> {
        let most = match self.limit {
            None => most,
            Some(limit) => {
                let room = limit.checked_sub(self.held)?.checked_sub(size)?;
                self.keep_source_within(room);
                most.min(room + size)
            }
        };
        Some(most & !(MIN_ALIGN - 1))
    }

    /// Gives a chunk back to the source.
    ///
    /// # Safety
    /// `chunk` came from `acquire` with `layout`, or from `acquire_up_to` with a length that
    /// `layout` has (and its alignment), is on no list, and nothing uses it afterwards.
    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        // The source gets the chunk back as memcheck saw it when it was handed out.
        #[cfg(feature = "valgrind")]
        crate::valgrind::undefined(chunk.as_ptr(), layout.size());
        // SAFETY: forwarded from the caller; `acquire` and `acquire_up_to` got the chunk from
        // this source's `acquire_at_least` with this length.
        unsafe { self.source.release(chunk, layout) };
        self.held -= layout.size();
        if let Some(limit) = self.limit {
            self.keep_source_within(limit.saturating_sub(self.held));
        }
    }

    /// Takes a chunk from this engine's source on behalf of another engine, charging it against
    /// this engine's limit. This is how a child pool gets its chunks from its parent.
    ///
    /// Plumbing for the child pools of `melon-alloc-heap` and `LockedPool`, not a stable API.
    #[doc(hidden)]
    pub fn acquire_raw(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let chunk = self.acquire(layout)?;
        self.lent += layout.size();
        Some(chunk)
    }

    /// Shortens a chunk taken with [`acquire_raw`](Engine::acquire_raw) to `new_len` bytes in
    /// place, if the source can ([`ChunkSource::shrink`]); returns whether it did. The chunk is
    /// then one taken with `new_len` bytes and `layout`'s alignment.
    ///
    /// # Safety
    /// `chunk` came from `acquire_raw` on this engine with `layout`; `new_len` is a multiple of
    /// the source's granule, above 0 and below `layout.size()`; nothing uses the chunk past
    /// `new_len` bytes afterwards.
    pub(crate) unsafe fn shrink_raw(
        &mut self,
        chunk: NonNull<u8>,
        layout: Layout,
        new_len: usize,
    ) -> bool {
        // SAFETY: `acquire_raw` took the chunk from the source with `layout` (caller), and the
        // rest is forwarded.
        let shortened = unsafe { self.shorten_held(chunk, layout, new_len) };
        if shortened {
            self.lent -= layout.size() - new_len;
        }
        shortened
    }

    /// [`release_raw`](Engine::release_raw), but for a chunk longer than what is lent, which a
    /// debug build refuses and reports, as [`free_reporting`](Engine::free_reporting) does a
    /// block: what a chunk given back twice with nothing else lent comes to. In a release
    /// build, nothing is refused.
    ///
    /// # Safety
    /// As for `release_raw`.
    pub(crate) unsafe fn release_raw_reporting(
        &mut self,
        chunk: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        if cfg!(debug_assertions) && self.lent < layout.size() {
            return Err(FreeError::NotInUse { addr: chunk.addr().get() });
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.release_raw(chunk, layout) };
        Ok(())
    }

    /// Gives back a chunk taken with [`acquire_raw`](Engine::acquire_raw).
    ///
    /// # Safety
    /// `chunk` came from `acquire_raw` on this engine with `layout`, and nothing uses it
    /// afterwards.
    ///
    /// Plumbing for the child pools of `melon-alloc-heap` and `LockedPool`, not a stable API.
    #[doc(hidden)]
    pub unsafe fn release_raw(&mut self, chunk: NonNull<u8>, layout: Layout) {
        self.lent -= layout.size();
        // SAFETY: forwarded from the caller.
        unsafe { self.release(chunk, layout) };
    }

    /// Gives back to the source every cached empty chunk: the head chunk of a class, kept for
    /// reuse once its blocks are all free, and the chunks a [`reset`](Engine::reset) kept that
    /// have not been used since; then asks the source to give back what it keeps
    /// ([`ChunkSource::trim`]) and to let the system take the pages of its free memory
    /// ([`ChunkSource::discard_free`]). Returns the bytes the engine gave back. Costs O(chunks).
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, CHUNK_SIZE};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let block = engine.alloc(100).unwrap();
    /// // SAFETY: the block came from this engine and is not used again.
    /// unsafe { engine.free(block) };
    /// // The chunk, empty now, is kept for the next allocation until a trim.
    /// assert_eq!(engine.stats().bytes_held, CHUNK_SIZE);
    /// assert_eq!(engine.trim(), CHUNK_SIZE);
    /// assert_eq!(engine.stats().bytes_held, 0);
    /// ```
    pub fn trim(&mut self) -> usize {
        let given = self.give_back_kept();
        self.source.discard_free();
        given
    }

    /// What [`trim`](Engine::trim) does but for the source's discard of its free pages: what an
    /// allocation does before it tries again, when it would take those pages at once. Returns
    /// the bytes given back.
    fn give_back_kept(&mut self) -> usize {
        let before = self.held;
        self.give_back_empty(Reach::WholeLists);
        self.source.trim();
        before - self.held
    }

    /// Gives back to the source the spare chunks of every class and the empty chunks of its
    /// `avail` list, from its front up to the first chunk with a block in use (`Reach::Heads`,
    /// O(classes + chunks given back)) or along the whole list (`Reach::WholeLists`); then makes
    /// each list's head the chunk allocations come from. The spares join the list at its front,
    /// and but for the chunks a reset kept, the head is the one `avail` chunk that stays on its
    /// list once it empties: `Heads` gives back every empty chunk but those.
    fn give_back_empty(&mut self, reach: Reach) {
        for class in 0..CLASS_COUNT {
            // Spare chunks are empty: they join the `avail` list, and go back with its other
            // empty chunks.
            while let Some(spare) = NonNull::new(self.spare[class].head) {
                // SAFETY: `spare` is on `spare[class]`, and every header on both lists is valid.
                unsafe {
                    self.spare[class].unlink(spare.as_ptr());
                    self.avail[class].push_front(spare.as_ptr());
                }
            }
            let mut chunk = self.avail[class].head;
            while !chunk.is_null() {
                // SAFETY: headers on an `avail` list are valid.
                let (next, live) = unsafe { ((*chunk).next, small_live(chunk)) };
                if live == 0 {
                    // SAFETY: `chunk` is on `avail[class]`, empty, and so not referred to by any
                    // block. Giving it back changes no chunk still on the list: a page goes to
                    // the list of unused pages, and its chunk goes back only with all of its
                    // pages unused.
                    unsafe {
                        self.avail[class].unlink(chunk);
                        self.release_small(chunk);
                    }
                } else if reach == Reach::Heads {
                    break;
                }
                chunk = next;
            }
            // SAFETY: every header on the list is valid.
            unsafe { self.promote_head(class) };
        }
    }

    /// Forgets every chunk without touching it or giving it back: afterwards the engine holds
    /// nothing, and its next allocation asks the source for a chunk.
    ///
    /// This is for a copy of an engine that must not act on chunks it shares with the original:
    /// the copy a `fork` leaves in the new process when the chunks live in shared memory. Blocks
    /// handed out before are no longer blocks of this engine.
    ///
    /// # Safety
    /// No block handed out before the call is freed, resized or checked through this engine
    /// afterwards, nor through any code that finds the engine from a block's chunk: those calls
    /// would act on lists that no longer hold the block's chunk. The forgotten chunks are
    /// never given back by this engine; their memory is whoever else's holds it. No chunk lent
    /// before the call ([`acquire_raw`](Engine::acquire_raw)) comes back through
    /// [`release_raw`](Engine::release_raw) afterwards: the engine no longer counts it.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let _block = engine.alloc(64).unwrap();
    /// // SAFETY: `_block` is never freed or used through the engine again.
    /// unsafe { engine.abandon() };
    /// assert_eq!(engine.stats().live_blocks, 0);
    /// ```
    pub unsafe fn abandon(&mut self) {
        for class in 0..CLASS_COUNT {
            self.avail[class] = ChunkList::new();
            self.full[class] = ChunkList::new();
            self.spare[class] = ChunkList::new();
        }
        self.large = ChunkList::new();
        self.unused_pages = ChunkList::new();
        self.classes_used = 0;
        self.held = 0;
        self.lent = 0;
    }

    /// Frees every block at once. Small chunks stay for reuse; large blocks go back to the
    /// source. Costs O(chunks).
    ///
    /// # Safety
    /// No block handed out before the call is used or freed afterwards: the engine hands their
    /// memory out again.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let _block = engine.alloc(64).unwrap();
    /// // SAFETY: `_block` is not used again.
    /// unsafe { engine.reset() };
    /// assert_eq!(engine.stats().live_blocks, 0);
    /// ```
    pub unsafe fn reset(&mut self) {
        #[cfg(feature = "valgrind")]
        self.memcheck_reset();
        // Blocks freed elsewhere and not collected yet are free already, as every block is
        // after the reset: collected later, they would be free twice.
        self.source.forget_remote_frees();
        for class in 0..CLASS_COUNT {
            while !self.full[class].head.is_null() {
                let chunk = self.full[class].head;
                // SAFETY: `chunk` is on `full[class]`; every list holds valid headers.
                unsafe {
                    self.full[class].unlink(chunk);
                    self.avail[class].push_front(chunk);
                }
            }
            for chunk in self.avail[class].iter() {
                // SAFETY: headers on the list are valid; no block of the chunk is in use any more.
                unsafe {
                    (*chunk).free = ptr::null_mut();
                    (*chunk).local_free = ptr::null_mut();
                    (*chunk).carved = 0;
                    (*chunk).event = 0;
                    (*chunk).clear_local_count();
                    (*chunk).state = ChunkState::Avail;
                }
            }
            // SAFETY: every header on the list is valid.
            unsafe { self.promote_head(class) };
        }
        self.release_large();
    }

    /// Takes a chunk of `class` off its `avail`, `full` or `spare` list, in that order.
    fn pop_small(&mut self, class: usize) -> Option<*mut ChunkHeader> {
        let class = class.min(CLASS_COUNT - 1);
        for list in [&mut self.avail[class], &mut self.full[class], &mut self.spare[class]] {
            let chunk = list.head;
            if !chunk.is_null() {
                // SAFETY: `chunk` heads the list, whose headers are valid.
                unsafe { list.unlink(chunk) };
                return Some(chunk);
            }
        }
        None
    }

    fn release_large(&mut self) {
        while !self.large.head.is_null() {
            let chunk = self.large.head;
            // SAFETY: `chunk` is on the `large` list, a valid header of a chunk of `span` bytes,
            // the length `acquire_up_to` got it with.
            unsafe {
                self.large.unlink(chunk);
                let layout = Layout::from_size_align_unchecked((*chunk).span, CHUNK_SIZE);
                self.release(NonNull::new_unchecked(chunk.cast()), layout);
            }
        }
    }

    /// A snapshot of the engine's counters. Costs a walk over the chunk headers.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, MAX_SMALL};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let _small = engine.alloc(100).unwrap();
    /// let _large = engine.alloc(MAX_SMALL + 1).unwrap();
    /// let stats = engine.stats();
    /// assert_eq!((stats.live_blocks, stats.large_blocks, stats.chunks), (2, 1, 1));
    /// // Blocks count at their size: the small one's class, the large one's usable length.
    /// assert!(stats.bytes_in_use >= 112 + MAX_SMALL + 1);
    /// ```
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            bytes_held: self.held,
            peak_bytes_held: self.peak_held,
            bytes_lent: self.lent,
            limit: self.limit,
            ..Stats::default()
        };
        // A paged chunk counts once, by its first page: all of its pages are on some list.
        let starts_chunk = |chunk: *mut ChunkHeader| {
            // SAFETY: only headers on the engine's lists are passed, and those are valid.
            let paged = unsafe { (*chunk).is_page() };
            !paged || chunk == chunk_of(chunk.cast())
        };
        for (class, lists) in self.avail.iter().zip(&self.full).enumerate() {
            for chunk in lists.0.iter().chain(lists.1.iter()) {
                // SAFETY: headers on the engine's lists are valid.
                let live = usize::from(unsafe { small_live(chunk) });
                stats.live_blocks += live;
                stats.bytes_in_use += live * CLASS_SIZES[class];
                stats.chunks += usize::from(starts_chunk(chunk));
            }
            stats.chunks += self.spare[class].iter().filter(|&chunk| starts_chunk(chunk)).count();
        }
        stats.chunks += self.unused_pages.iter().filter(|&page| starts_chunk(page)).count();
        for chunk in self.large.iter() {
            // SAFETY: headers on the engine's lists are valid.
            stats.bytes_in_use += unsafe { (*chunk).span - usize::from((*chunk).data_offset) };
            stats.live_blocks += 1;
            stats.large_blocks += 1;
        }
        stats
    }

    /// Walks every chunk and every free list and checks the engine's invariants.
    ///
    /// # Errors
    /// The first broken invariant found, with the chunk it was found in.
    ///
    /// # Examples
    /// ```
    /// # use melon_alloc_core::{Engine, RegionSource, MAX_SMALL};
    /// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
    /// # // SAFETY: this example is the arena's only user.
    /// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
    /// let mut engine = Engine::new(source, None);
    /// let small = engine.alloc(100).unwrap();
    /// let _large = engine.alloc(MAX_SMALL + 1).unwrap();
    /// // SAFETY: the block came from this engine and is not used again.
    /// unsafe { engine.free(small) };
    /// assert_eq!(engine.check(), Ok(()));
    /// ```
    pub fn check(&self) -> Result<(), crate::CheckError> {
        crate::check::check(self.parts())
    }

    pub(crate) fn parts(&self) -> crate::check::Parts<'_> {
        crate::check::Parts {
            avail: &self.avail,
            full: &self.full,
            spare: &self.spare,
            large: &self.large,
            unused_pages: &self.unused_pages,
            owner: self.id(),
            limit: self.limit,
            held: self.held,
            peak_held: self.peak_held,
            lent: self.lent,
        }
    }
}

/// Whether the list that starts at `head` holds fewer than `most` chunks: a walk of at most
/// `most` links.
///
/// # Safety
/// Every header on the list is valid.
#[inline(always)]
unsafe fn spares_below(mut head: *mut ChunkHeader, most: usize) -> bool {
    for _ in 0..most {
        if head.is_null() {
            return true;
        }
        // SAFETY: headers on the list are valid (caller).
        head = unsafe { (*head).next };
    }
    false
}

/// `condition`, marked as rarely true, so that the compiler branches on it rather than compute
/// both outcomes and select one: on a free, that keeps the read of the chunk's first header off
/// the path to the header the free updates, for the whole chunks of most pools.
#[inline(always)]
fn unlikely(condition: bool) -> bool {
    #[cold]
    fn rare() {}
    if condition {
        rare();
    }
    condition
}

// A class is a bit of `Engine::classes_used`.
static_assertions::const_assert!(CLASS_COUNT <= 64);

/// `Engine::classes_used` with every class's bit set.
const ALL_CLASSES: u64 = u64::MAX >> (64 - CLASS_COUNT);

/// Bytes of never-used blocks carved at a time: a page, so that memory the pool has not handed
/// out is not touched.
const CARVE_BYTES: usize = 4096;

/// Makes a chunk of `class` whose blocks were all carved, are all on its local list and were
/// freed out of address order a chunk with nothing carved, as a new one is: the caller carves it
/// again in address order, in the batches a new chunk is carved in, instead of chasing links
/// across the chunk in the order they were freed, a cache miss each. A list in order is kept,
/// since following it costs less than carving again, and a chunk carved in part goes on carving.
/// Inlined into the allocation slow path, which pays for its tests alone unless the chunk is all
/// free; left out on bare metal, where firmware counts code bytes.
///
/// # Safety
/// `chunk` is a valid header of a small chunk or page of `class` whose `free` list is empty.
#[cfg(not(target_os = "none"))]
#[inline(always)]
unsafe fn start_over_if_scattered(chunk: *mut ChunkHeader, class: usize) {
    let size = CLASS_SIZES[class];
    // SAFETY: (1) the header is valid (caller); (2) `local_free` is the chunk's own free list,
    // as `starts_in_order` needs; (3) with `free` empty, every block carved and not in use is on
    // `local_free`, and `local_count` counts its entries (each free counts itself, each swap of
    // the lists clears the count), so a count equal to `carved` means no block is in use and
    // none of them needs its link: forgetting the list and the carved count hands every block
    // out again, each once, by carving.
    unsafe {
        let carved = (*chunk).carved;
        if size <= START_OVER_MAX_SIZE
            && carved == (*chunk).capacity()
            && (*chunk).local_count() == u32::from(carved)
            && !starts_in_order((*chunk).local_free, size)
        {
            (*chunk).local_free = ptr::null_mut();
            (*chunk).carved = 0;
        }
    }
}

/// Takes a block from the blocks freed into `chunk` since its `free` list was last filled, when
/// that is all [`Engine::alloc_from_avail`] would do for it as the head of its class's list:
/// every block of the chunk is carved, so there is none to carve, and some are still in use, so
/// the chunk cannot be starting over. A pool whose blocks in use of a class stand at one short of
/// a full chunk has every allocation of that class come here, each paired with a free of the
/// block before it, and skips the rest of the slow path.
///
/// # Safety
/// `chunk` is a valid header of a small chunk or page, whose `free` and local lists hold free
/// blocks of it, each with the link to the next, the local one counted by `local_count`.
#[cfg(not(target_os = "none"))]
#[inline]
unsafe fn take_own_frees(chunk: *mut ChunkHeader) -> Option<NonNull<u8>> {
    // SAFETY: the header is valid, and its lists as the caller says; the local list replaces
    // the `free` list only when that is empty.
    unsafe {
        let carved = u32::from((*chunk).carved);
        let local = (*chunk).local_free;
        if local.is_null()
            || !(*chunk).free.is_null()
            || carved != u32::from((*chunk).capacity())
            || (*chunk).local_count() >= carved
        {
            return None;
        }
        (*chunk).take_local_list();
        (*chunk).free = read_link(local);
        Some(NonNull::new_unchecked(local.cast()))
    }
}

/// Whether every block a small chunk, or page, has carved is free: on its local list, or on its
/// `free` list, which is followed for at most [`EMPTY_PROBE`] links; a chunk with more blocks
/// than that neither on its local list nor in use counts as not free.
///
/// # Safety
/// `chunk` is a valid header of a small chunk or page whose `free` list holds free blocks of it,
/// each with the link to the next.
unsafe fn all_free(chunk: *mut ChunkHeader) -> bool {
    // SAFETY: the header is valid (caller).
    let (carved, local) = unsafe { (u32::from((*chunk).carved), (*chunk).local_count()) };
    // SAFETY: the header is valid and its `free` list holds free blocks of it (caller); with at
    // most `EMPTY_PROBE` blocks off the local list, the walk is that short.
    carved.checked_sub(local).is_some_and(|elsewhere| elsewhere <= EMPTY_PROBE)
        && unsafe { small_live(chunk) } == 0
}

/// Links of a `free` list that [`all_free`] follows at most.
const EMPTY_PROBE: u32 = 8;

/// The page of a freshly split chunk that is taken first, from the chunk's address. A short-lived
/// pool uses its first pages and few blocks of each, and every page starts with its header and
/// first blocks at the same offsets: were it always page 0, the lines such pools write would all
/// fall at the same few offsets of a chunk, and so into the same few sets of a cache that indexes
/// by the address bits within 128 KiB or so, which then evicts lines while most of it sits idle.
/// Taking the chunks' pages in turns spreads those lines over every offset. The turn starts from
/// a [`colour`](crate::chunk::colour) of the chunk's address, not from its bits just above the
/// chunk's size: those are bits such a cache indexes by too, so every chunk at the same place in
/// the cache's period would start from the same page.
#[allow(clippy::modulo_one, reason = "one page where chunks are never split")]
fn page_colour(chunk: *mut u8) -> usize {
    crate::chunk::colour(chunk.addr() / CHUNK_SIZE) % PAGES
}

/// Whether the first links of a free list join neighbouring blocks of `size` bytes, the order a
/// chunk's blocks come back in when they are freed in the order they were handed out, or its
/// reverse. Reads at most [`ORDER_PROBE`] links.
///
/// # Safety
/// `list` is null or a free list of one chunk whose entries each hold the link to the next.
#[cfg(not(target_os = "none"))]
#[inline(never)]
unsafe fn starts_in_order(list: *mut FreeBlock, size: usize) -> bool {
    let mut entry = list;
    for _ in 0..ORDER_PROBE {
        if entry.is_null() {
            return true;
        }
        // SAFETY: `entry` is an entry of the list (caller), so its first word holds a link.
        let next = unsafe { read_link(entry) };
        if !next.is_null() && next.addr().abs_diff(entry.addr()) != size {
            return false;
        }
        entry = next;
    }
    true
}

/// The largest blocks whose chunks [`start_over_if_scattered`]: a page of them holds 15 or more,
/// a 16 KiB chunk 63 or more, and chasing their links in a scattered order misses the cache on
/// most; a chunk of larger blocks holds few enough that following their links costs less than
/// carving them again.
#[cfg(not(target_os = "none"))]
const START_OVER_MAX_SIZE: usize = 256;

/// Links of a chunk's free list that [`starts_in_order`] follows.
#[cfg(not(target_os = "none"))]
const ORDER_PROBE: usize = 3;

/// Puts the next never-used blocks of a chunk at the front of its `free` list: as many as are
/// carved already (at least one), and none past the end of the page the first one starts in.
/// The batches double, so a chunk that fills reaches whole pages after a few refills, while one
/// that serves a block or two (a short-lived pool's) has only those written. On hosted targets, a
/// chunk or page of [`COLOURED_MAX_BLOCKS`] blocks or fewer carves one block at a time, in the
/// order [`ChunkHeader::carve_index`] gives, so that no 4 KiB of it is touched before a block in
/// it is handed out.
///
/// # Safety
/// `chunk` is a valid header of a small chunk or page whose `carved` count is below its
/// capacity.
unsafe fn carve_batch(chunk: *mut ChunkHeader) {
    // SAFETY: the header is valid (caller).
    let (class, carved) = unsafe { ((*chunk).class(), usize::from((*chunk).carved)) };
    let size = CLASS_SIZES[class];
    // SAFETY: the header is valid (caller).
    let capacity = usize::from(unsafe { (*chunk).capacity() });
    // A chunk or page of a few large blocks: one block at a time, the next in its order.
    #[cfg(not(target_os = "none"))]
    if capacity <= COLOURED_MAX_BLOCKS {
        // SAFETY: the header is valid (caller).
        let index = unsafe { (*chunk).carved_block(carved) };
        // SAFETY: (1) the header is valid; (2) `carved` is below the capacity (caller), so
        // block `index` is below it too and lies within the chunk or page; it is the one at
        // place `carved` of the carving order, which the `carved` blocks carved so far come
        // before, so it has never been handed out and its first word can hold a link to the
        // blocks already free.
        unsafe {
            let block = chunk.cast::<u8>().add(FIRST_OFFSET[class] + index * size).cast();
            write_link(block, (*chunk).free);
            (*chunk).free = block;
            (*chunk).carved += 1;
        }
        return;
    }
    let first = FIRST_OFFSET[class] + carved * size;
    let page_end = (first / CARVE_BYTES + 1) * CARVE_BYTES;
    // Batches that grow from one block are for child pools, which the `pages` feature serves.
    let batch = if crate::chunk::SPLIT { carved.max(1) } else { usize::MAX };
    let count = (page_end - first).div_ceil(size).min(capacity - carved).min(batch);
    // SAFETY: (1) the header is valid; (2) blocks `carved..carved + count` lie within the
    // chunk's, or page's, `span` bytes, since `carved + count` is at most its capacity, and have
    // never been handed out, so their first words can hold links. Each links to the one after
    // it, in address order, and the last to the blocks already free.
    unsafe {
        let start = chunk.cast::<u8>().add(first);
        let mut block = start;
        for _ in 1..count {
            let after = block.add(size);
            debug_assert!(block.addr() % BLOCK_ALIGN[class] == 0);
            write_link(block.cast(), after.cast());
            block = after;
        }
        write_link(block.cast(), (*chunk).free);
        (*chunk).free = start.cast();
        (*chunk).carved += count as u16;
    }
}

/// Blocks in use in a small chunk: carved, and on neither free list. Walks the `free` list,
/// which only the head chunk of a class has.
///
/// # Safety
/// `chunk` is a valid header of a small chunk whose free lists are intact.
pub(crate) unsafe fn small_live(chunk: *mut ChunkHeader) -> u16 {
    // SAFETY: (1) the header is valid; (2) entries on its `free` list are free blocks of the
    // chunk, at most `carved` of them.
    unsafe {
        let carved = (*chunk).carved;
        let on_free = list_len((*chunk).free, carved).unwrap_or(carved);
        let local = u16::try_from((*chunk).local_count()).unwrap_or(carved);
        carved.saturating_sub(on_free).saturating_sub(local)
    }
}

impl<S: ChunkSource> Drop for Engine<S> {
    /// Gives every chunk back to the source in O(chunks), without visiting blocks, or in O(large
    /// blocks) when the source can take back all small chunks at once.
    fn drop(&mut self) {
        #[cfg(feature = "valgrind")]
        self.memcheck_drop();
        // Large chunks go first: one of exactly `CHUNK_SIZE` bytes has a small chunk's layout,
        // so the source counts it among the small chunks that `release_all_small` takes back.
        self.release_large();
        // SAFETY: the engine is going away, so none of its blocks is used again; its large
        // chunks were released one by one above.
        if unsafe { self.source.release_all_small() } {
            return;
        }
        // A paged chunk goes back with the last of its pages to leave a class's list: every page
        // is on one list or another, so that happens once for each.
        //
        // The largest class goes first. A pool that grows a table takes chunks for its small
        // classes before its large ones, and a source that hands back the chunk it got last
        // (a locked parent's stash, a free list) then gives the next pool the chunks in the
        // order this one took them: each serves the same part again, its blocks on the lines
        // this pool wrote last.
        let mut classes = if crate::chunk::SPLIT { self.classes_used } else { ALL_CLASSES };
        while classes != 0 {
            let class = (u64::BITS - 1 - classes.leading_zeros()) as usize;
            classes &= !(1 << class);
            while let Some(chunk) = self.pop_small(class) {
                // SAFETY: `chunk` was on one of the engine's lists, so its header is valid; the
                // engine is going away, so none of its blocks is used again.
                unsafe { self.release_small(chunk) };
            }
        }
    }
}

/// Memcheck's view of the engine: a mempool whose pieces are the blocks in use, each as long as
/// it was asked to be, or as its whole slot once the caller has asked for its usable size. The
/// rest of every chunk after its header stays inaccessible.
///
/// Memcheck's record of a block keeps the length it was handed out with: the engine widens what
/// is accessible itself, and closes the whole slot on a free, because changing a record makes
/// memcheck sort every block of the pool.
#[cfg(feature = "valgrind")]
impl<S: ChunkSource> Engine<S> {
    /// Registers a block just handed out, `len` bytes long, making the mempool first if need be.
    fn memcheck_alloc(&mut self, block: Option<NonNull<u8>>, len: usize) {
        let Some(block) = block else { return };
        // A zero-size request gets a block of 16 bytes, as `alloc` promises.
        let len = if len == 0 { MIN_ALIGN } else { len };
        if self.memcheck_pool.is_null() {
            // The handle is the engine's identity, or a byte past it if another engine that
            // lived there moved away and still has its mempool: handles only need to differ.
            let mut handle = self.id();
            while !crate::valgrind::create_pool(handle) {
                handle = handle.wrapping_byte_add(1);
            }
            self.memcheck_pool = handle;
        }
        crate::valgrind::alloc(self.memcheck_pool, block.as_ptr(), len);
    }

    /// Unregisters a block being freed and makes its whole slot inaccessible.
    ///
    /// # Safety
    /// `block` is an in-use block of this engine.
    unsafe fn memcheck_free(&self, block: NonNull<u8>) {
        crate::valgrind::free(self.memcheck_pool, block.as_ptr());
        // SAFETY: forwarded from the caller.
        let slot = unsafe { self.slot_size(block) };
        crate::valgrind::no_access(block.as_ptr(), slot);
    }

    /// Makes accessible, and undefined, the bytes a block gains by growing where it is, up to
    /// `len`. A shrink leaves the block as it was: a block resized in place keeps its usable
    /// size and contents, which the caller may go on using, but for the tail of a large block
    /// that its source took back (`shorten_large`).
    fn memcheck_grow_in_place(&self, block: NonNull<u8>, usable: usize, len: usize) {
        let old = crate::valgrind::block_len(block.as_ptr(), usable);
        if len > old {
            crate::valgrind::undefined(block.as_ptr().wrapping_add(old), len - old);
        }
    }

    /// Makes the whole slot of a block accessible, the bytes past what it was asked for
    /// undefined: the caller has just learnt that they are its to use.
    fn memcheck_claim(&self, block: NonNull<u8>, usable: usize) {
        self.memcheck_grow_in_place(block, usable, usable);
    }

    /// Unregisters every block at once and closes every small chunk, as a reset frees them all.
    fn memcheck_reset(&mut self) {
        if !self.memcheck_pool.is_null() {
            crate::valgrind::free_all(self.memcheck_pool);
        }
        for chunk in self.avail.iter().chain(&self.full).flat_map(ChunkList::iter) {
            let blocks = chunk.cast::<u8>().wrapping_add(HEADER_SIZE);
            // SAFETY: headers on the engine's lists are valid.
            crate::valgrind::no_access(blocks, unsafe { (*chunk).span } - HEADER_SIZE);
        }
    }

    /// Forgets the mempool and makes the blocks of every small chunk plain memory again, since a
    /// source may take them all back at once without the engine visiting them. The headers stay
    /// as they are: the engine still walks them to release chunks one by one.
    fn memcheck_drop(&mut self) {
        if !self.memcheck_pool.is_null() {
            crate::valgrind::destroy_pool(self.memcheck_pool);
        }
        let lists = self.avail.iter().chain(&self.full).chain(&self.spare);
        for chunk in lists.chain([&self.unused_pages]).flat_map(ChunkList::iter) {
            let blocks = chunk.cast::<u8>().wrapping_add(HEADER_SIZE);
            // SAFETY: headers on the engine's lists are valid.
            crate::valgrind::undefined(blocks, unsafe { (*chunk).span } - HEADER_SIZE);
        }
    }
}

impl<S: ChunkSource> core::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Stops the process on a free that the debug build's check refused ([`Engine::free_reporting`]);
/// nothing in a release build, whose check refuses nothing.
#[inline(always)]
pub(crate) fn stop_if_invalid(freed: Result<(), FreeError>) {
    #[cfg(debug_assertions)]
    if let Err(error) = freed {
        invalid_free(error);
    }
    #[cfg(not(debug_assertions))]
    let _ = freed;
}

/// Stops the process on a free that the contract of [`Engine::free`] rules out. A panic during
/// a panic aborts, which is what this relies on where `std` is present.
#[cfg(debug_assertions)]
#[cold]
#[inline(never)]
fn invalid_free(error: FreeError) -> ! {
    struct AbortOnUnwind;
    impl Drop for AbortOnUnwind {
        fn drop(&mut self) {
            panic!("melon-alloc: aborting after an invalid free");
        }
    }
    let _abort = AbortOnUnwind;
    panic!("melon-alloc: invalid free: {error}");
}
