//! The heap workloads that free block by block, the allocators they run on, and the loops of the
//! four that carry a target.
//!
//! The criterion target (`benches/heap.rs`) times these loops with every peer in its own stretch
//! of time, and the `heap_targets` binary times the same loops for melon and its peer (glibc, or
//! mimalloc in the large ring) in interleaved rounds. Both take them from here, so that the
//! figures of the two are figures of one workload.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::hint::black_box;

use melon_alloc::HeapPool;
use melon_alloc_shm::ShmPool;

use crate::{permutation, MiHeap, TalcArena, TlsfArena, BLOCK, SHUFFLE_SEED};

/// Blocks allocated and then freed per round of the fill-and-drain workloads.
pub const FILL: usize = 1024;

/// An allocator as the workloads that free block by block drive it. Every peer but bumpalo
/// implements it; the calls inline, so the trait costs nothing in the timed loops.
pub trait Peer {
    /// Allocates `size` bytes aligned to 16.
    ///
    /// # Panics
    /// When there is no memory: a benchmark cannot go on without it.
    fn alloc(&mut self, size: usize) -> NonNull<u8>;

    /// Frees a block.
    ///
    /// # Safety
    /// - `block` came from [`alloc`](Peer::alloc) on this peer with `size`, and has not been
    ///   freed.
    /// - Nothing uses the block afterwards.
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize);
}

/// A root heap pool as a peer: melon.
#[derive(Debug)]
pub struct Melon(pub HeapPool);

impl Peer for Melon {
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        self.0.alloc(size).expect("out of memory")
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) {
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.free(block) }
    }
}

/// A shared pool as a peer: each allocation and each free takes the pool's lock
/// ([`ShmPool::alloc`], [`ShmPool::free`]).
///
/// ```
/// use melon_alloc_bench::workloads::{ping_pong, Shm};
///
/// let mut shm = Shm(melon_alloc_shm::ShmPool::new(1 << 20).unwrap());
/// ping_pong(&mut shm);
/// assert_eq!(shm.0.stats().unwrap().live_blocks, 0);
/// ```
#[derive(Debug)]
pub struct Shm(pub ShmPool);

impl Peer for Shm {
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        self.0.alloc(size).expect("room in the shared pool")
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) {
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.free(block) }
    }
}

/// A global allocator as a peer: `System` (glibc) or `MiMalloc`.
#[derive(Debug)]
pub struct Global<A>(pub A);

impl<A: GlobalAlloc> Peer for Global<A> {
    /// Allocates `size` bytes aligned to 16.
    ///
    /// # Panics
    /// When there is no memory, or when `size` is 0 or too large to make a layout of.
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        let layout = Layout::from_size_align(size, 16).expect("a valid layout");
        assert_ne!(layout.size(), 0, "a global allocator's block needs a size");
        // SAFETY: the layout's size is not zero.
        NonNull::new(unsafe { self.0.alloc(layout) }).expect("out of memory")
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize) {
        // SAFETY: `alloc` made a layout from the same size, so this one is valid.
        let layout = unsafe { Layout::from_size_align_unchecked(size, 16) };
        // SAFETY: the caller passes a live block of this allocator, allocated with `layout`.
        unsafe { self.0.dealloc(block.as_ptr(), layout) }
    }
}

impl Peer for MiHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        MiHeap::alloc(self, size).expect("out of memory")
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) {
        // SAFETY: the caller passes a live block of this heap that nothing uses again.
        unsafe { MiHeap::free(self, block) }
    }
}

impl Peer for TalcArena {
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        TalcArena::alloc(self, size).expect("out of memory")
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize) {
        // SAFETY: the caller passes a live block of this arena, allocated with `size`.
        unsafe { TalcArena::free(self, block, size) }
    }
}

impl Peer for TlsfArena {
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        TlsfArena::alloc(self, size).expect("out of memory")
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) {
        // SAFETY: the caller passes a live block of this arena that nothing uses again.
        unsafe { TlsfArena::free(self, block) }
    }
}

/// The reference of the small-block workloads: one free list of [`FILL`] blocks of [`BLOCK`] bytes
/// in an arena of its own, with no size classes, no chunks and no checks, its head kept in memory
/// as every allocator keeps its state between calls (glibc's tcache and mimalloc's heap are reached
/// through a thread's pointer, melon's lists through a chunk's header). An allocation pops the
/// head and a free pushes the block: what is left of an allocator when everything but the list is
/// taken away, timed beside the others so that a target can be read against what one list's pops
/// and pushes take on the machine.
///
/// ```
/// use melon_alloc_bench::workloads::{FillDrain, FreeList, Peer};
///
/// let mut list = FreeList::new();
/// FillDrain::new().run(&mut list);
/// let block = list.alloc(64);
/// // SAFETY: the block came from `list` with 64 bytes and is not used again.
/// unsafe { list.free(block, 64) };
/// ```
#[derive(Debug)]
pub struct FreeList {
    /// The blocks, [`FILL`] of [`BLOCK`] bytes, from `Box::into_raw`: the list's links point
    /// into them, so the arena is reached only through raw pointers until it is dropped.
    arena: *mut [Slot],
    /// Where the list's head lives: a cell of its own on the heap, reached through a pointer
    /// the optimiser cannot see the origin of, so that it keeps the head in memory across the
    /// stores of a timed loop, as it must an allocator's state, rather than in a register.
    head: *mut *mut Slot,
}

/// A block of [`FreeList`]'s arena; while free, its first word links to the next free block.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    next: *mut Slot,
    _rest: [u8; BLOCK - 8],
}

impl FreeList {
    /// A list of every block of a new arena, in address order.
    pub fn new() -> Self {
        let empty = Slot { next: core::ptr::null_mut(), _rest: [0; BLOCK - 8] };
        let arena = Box::into_raw(vec![empty; FILL].into_boxed_slice());
        let first = arena.cast::<Slot>();
        for index in 1..FILL {
            // SAFETY: `index` is below `FILL`, the arena's length, and nothing else reaches the
            // arena yet.
            unsafe { (*first.add(index - 1)).next = first.add(index) };
        }
        let head = black_box(Box::into_raw(Box::new(first)));
        Self { arena, head }
    }
}

impl Default for FreeList {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FreeList {
    fn drop(&mut self) {
        // SAFETY: both came from `Box::into_raw` in `new` and are given back only here.
        unsafe {
            drop(Box::from_raw(self.head));
            drop(Box::from_raw(self.arena));
        }
    }
}

impl Peer for FreeList {
    /// Pops the head of the list.
    ///
    /// # Panics
    /// When `size` is more than [`BLOCK`] or every block is in use.
    #[inline]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        assert!(size <= BLOCK, "the free list holds blocks of {BLOCK} bytes");
        // SAFETY: `head` is the cell `new` made, which only this list uses.
        let block = unsafe { *self.head };
        let block = NonNull::new(block).expect("every block of the free list is in use");
        // SAFETY: (1) a block on the list is a free slot of the arena, whose first word holds
        // the next entry; (2) the cell is valid as above.
        unsafe { *self.head = block.as_ref().next };
        block.cast()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) {
        let block = block.cast::<Slot>().as_ptr();
        // SAFETY: (1) the caller passes a block of this list that nothing uses any more, a slot
        // of the arena whose first word can hold the link; (2) the cell is valid as in `alloc`.
        unsafe {
            (*block).next = *self.head;
            *self.head = block;
        }
    }
}

/// One pair of `ping_pong`: a block of [`BLOCK`] bytes allocated and freed straight away, the
/// cost of the fast paths alone.
///
/// ```
/// use melon_alloc_bench::workloads::{ping_pong, Melon};
///
/// let mut melon = Melon(melon_alloc::HeapPool::new());
/// ping_pong(&mut melon);
/// assert_eq!(melon.0.stats().live_blocks, 0);
/// ```
#[inline]
pub fn ping_pong<P: Peer>(peer: &mut P) {
    let block = peer.alloc(black_box(BLOCK));
    // SAFETY: the block came from `peer` with `BLOCK` and is not used again.
    unsafe { peer.free(black_box(block), BLOCK) };
}

/// `fill_drain_1024`: [`FILL`] blocks of [`BLOCK`] bytes allocated, then all freed in the order
/// they came, a request's worth of short-lived objects.
///
/// ```
/// use melon_alloc_bench::workloads::{FillDrain, Melon};
///
/// let mut melon = Melon(melon_alloc::HeapPool::new());
/// FillDrain::new().run(&mut melon);
/// assert_eq!(melon.0.stats().live_blocks, 0);
/// ```
#[derive(Debug)]
pub struct FillDrain {
    /// The vector of pointers, allocated once, outside the timed loop. Empty between rounds.
    blocks: Vec<NonNull<u8>>,
}

impl FillDrain {
    /// The workload, with room for its blocks' pointers.
    pub fn new() -> Self {
        Self { blocks: Vec::with_capacity(FILL) }
    }

    /// One round on `peer`: [`FILL`] pairs.
    #[inline]
    pub fn run<P: Peer>(&mut self, peer: &mut P) {
        let blocks = &mut self.blocks;
        // A round cut short by a panic leaves its blocks here; they are forgotten rather than
        // freed into a peer that may not be theirs.
        blocks.clear();
        blocks.extend((0..FILL).map(|_| peer.alloc(black_box(BLOCK))));
        for block in blocks.drain(..) {
            // SAFETY: every block came from `peer` with `BLOCK` and is freed once.
            unsafe { peer.free(block, BLOCK) };
        }
    }
}

impl Default for FillDrain {
    fn default() -> Self {
        Self::new()
    }
}

/// `shuffled_drain_1024`: [`FILL`] blocks of [`BLOCK`] bytes allocated, then freed in a fixed
/// pseudo-random order ([`permutation`] of [`SHUFFLE_SEED`]), so that the free lists end up
/// scattered across pages as they do in a long-running program.
///
/// ```
/// use melon_alloc_bench::workloads::{Melon, ShuffledDrain};
///
/// let mut melon = Melon(melon_alloc::HeapPool::new());
/// ShuffledDrain::new().run(&mut melon);
/// assert_eq!(melon.0.stats().live_blocks, 0);
/// ```
#[derive(Debug)]
pub struct ShuffledDrain {
    /// The order of the frees, the same for every peer.
    order: Vec<usize>,
    /// The vector of pointers, allocated once, outside the timed loop. Empty between rounds.
    blocks: Vec<NonNull<u8>>,
}

impl ShuffledDrain {
    /// The workload, with its order of frees and room for its blocks' pointers.
    pub fn new() -> Self {
        Self { order: permutation(FILL, SHUFFLE_SEED), blocks: Vec::with_capacity(FILL) }
    }

    /// One round on `peer`: [`FILL`] pairs.
    #[inline]
    pub fn run<P: Peer>(&mut self, peer: &mut P) {
        let Self { order, blocks } = self;
        // As in `FillDrain::run`: what a round cut short left is forgotten, not freed.
        blocks.clear();
        blocks.extend((0..FILL).map(|_| peer.alloc(black_box(BLOCK))));
        for &index in order.iter() {
            // SAFETY: `order` is a permutation of `0..FILL` and `blocks` holds this round's
            // `FILL` blocks of `peer`, so every one of them is freed once.
            unsafe { peer.free(blocks[index], BLOCK) };
        }
        blocks.clear();
    }
}

impl Default for ShuffledDrain {
    fn default() -> Self {
        Self::new()
    }
}

/// A bounded live set walked round and round (the `mixed` and `large_ring` workloads): a ring of
/// slots, where each step frees the slot's block and allocates the next size of a fixed sequence
/// into it. A turn of the ring is one free+alloc pair per slot.
///
/// ```
/// use melon_alloc_bench::workloads::{Melon, Ring};
/// use melon_alloc_bench::{large_sizes, LARGE_RING};
///
/// let mut melon = Melon(melon_alloc::HeapPool::new());
/// let mut ring = Ring::fill(large_sizes(64), LARGE_RING, &mut melon);
/// // SAFETY: the ring was filled from `melon`.
/// unsafe { ring.turn(&mut melon) };
/// assert_eq!(melon.0.stats().live_blocks, LARGE_RING);
/// // SAFETY: as above.
/// unsafe { ring.drain(&mut melon) };
/// assert_eq!(melon.0.stats().live_blocks, 0);
/// ```
#[derive(Debug)]
pub struct Ring {
    /// The request sizes, the same for every peer; a power of two of them.
    sizes: Vec<usize>,
    /// The index in `sizes` of the next request.
    next: usize,
    /// The live blocks, with their sizes: the ring's slots.
    slots: Vec<(NonNull<u8>, usize)>,
}

impl Ring {
    /// A ring of `slots` blocks of `peer`, allocated with the first sizes of `sizes`.
    ///
    /// # Panics
    /// When the number of sizes is not a power of two.
    pub fn fill<P: Peer>(sizes: Vec<usize>, slots: usize, peer: &mut P) -> Self {
        assert!(sizes.len().is_power_of_two(), "the sizes wrap by a mask");
        let mut ring = Self { sizes, next: 0, slots: Vec::with_capacity(slots) };
        for _ in 0..slots {
            let size = ring.next_size();
            ring.slots.push((peer.alloc(size), size));
        }
        ring
    }

    /// The next size of the sequence, hidden from the optimiser.
    #[inline]
    fn next_size(&mut self) -> usize {
        let size = self.sizes[self.next];
        self.next = (self.next + 1) & (self.sizes.len() - 1);
        black_box(size)
    }

    /// One turn: every slot's block freed and a block of the next size allocated in its place.
    ///
    /// # Safety
    /// `peer` is the peer the ring was filled from (and turned with before).
    #[inline]
    pub unsafe fn turn<P: Peer>(&mut self, peer: &mut P) {
        for index in 0..self.slots.len() {
            let (block, size) = self.slots[index];
            // SAFETY: the slot's block came from `peer` (the caller passes the ring's peer) with
            // `size`, and is replaced here.
            unsafe { peer.free(block, size) };
            let size = self.next_size();
            self.slots[index] = (peer.alloc(size), size);
        }
    }

    /// Frees every block of the ring.
    ///
    /// # Safety
    /// `peer` is the peer the ring was filled from and turned with.
    pub unsafe fn drain<P: Peer>(self, peer: &mut P) {
        for (block, size) in self.slots {
            // SAFETY: the caller passes the ring's peer, and each block is live and freed once.
            unsafe { peer.free(block, size) };
        }
    }
}
