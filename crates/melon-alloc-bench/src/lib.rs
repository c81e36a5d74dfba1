//! Benchmarks of melon-alloc's heap pools against glibc `malloc`, mimalloc's first-class heaps
//! and bumpalo, and of its shared-memory pool against glibc and Melon's figures, with the helpers
//! the benchmarks share.
//!
//! A pool allocator is only worth having if it beats the general-purpose allocator on the
//! workloads it is meant for, and a claim like "four times faster than `malloc`" means nothing
//! without the peers measured in the same run on the same machine. This crate holds the timing
//! benchmarks (`benches/heap.rs` and `benches/shm.rs`, run with
//! `cargo bench -p melon-alloc-bench --bench heap` or `--bench shm`), the resident-memory
//! measurement (`cargo run --release -p melon-alloc-bench --bin resident`) and the multi-process
//! hammer of the shared pool (`cargo run --release -p melon-alloc-bench --bin hammer`);
//! `docs/benchmarks.md` in the repository records their results and the targets they are held to.
//!
//! The helpers here are what several of them need: the block size, a reproducible permutation
//! for frees in a shuffled order, a seeded random number generator, and a safe owner for a
//! mimalloc heap.

use core::ffi::c_void;
use core::fmt;
use core::ptr::NonNull;

use libmimalloc_sys as mi;

/// The block size of the timing workloads, in bytes.
pub const BLOCK: usize = 64;

/// The seed of the permutation the shuffled workload frees its blocks in, fixed so that every
/// run and every peer frees in the same order.
pub const SHUFFLE_SEED: u64 = 0x6d65_6c6f_6e5f_6865;

/// A permutation of `0..len`, the same for the same `len` and `seed` on every machine.
///
/// It is a Fisher-Yates shuffle driven by SplitMix64, written out here rather than taken from a
/// crate so that the order cannot change under the benchmark with a dependency's version.
///
/// ```
/// let order = melon_alloc_bench::permutation(1024, 7);
/// let mut sorted = order.clone();
/// sorted.sort_unstable();
/// assert!(sorted.iter().copied().eq(0..1024));
/// assert_ne!(order, sorted);
/// ```
pub fn permutation(len: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        // The modulo bias is below 2^-50 for the lengths used here, far under what could change
        // a timing.
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// A xorshift64 random number generator (Marsaglia, 2003): three shifts and three XORs per
/// number, so that drawing the next operation costs next to nothing beside the allocator being
/// timed, and the same seed gives the same sequence on every machine.
///
/// ```
/// use melon_alloc_bench::XorShift64;
///
/// let mut a = XorShift64::new(42);
/// let mut b = XorShift64::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Clone, Debug)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A generator started from `seed`. The seed is scrambled first, so that neighbouring seeds
    /// (one per process, say) give unrelated sequences, and a seed of 0, which would stay 0 for
    /// ever, is replaced.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self { state: if z == 0 { 0x6d65_6c6f_6e00_0001 } else { z } }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A number in `0..bound`. The modulo bias is below `bound / 2^64`, far under anything a
    /// benchmark could notice.
    ///
    /// # Panics
    /// When `bound` is 0.
    #[inline]
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// `size` rounded up to a multiple of 16: the least a 16-byte-aligned allocator can spend on a
/// block, and what resident-memory figures are compared with.
pub const fn round_up_16(size: usize) -> usize {
    (size + 15) & !15
}

/// A mimalloc first-class heap (`mi_heap_new`): dropping it frees every block still in it at
/// once (`mi_heap_destroy`), which is the peer of dropping a melon pool.
///
/// A mimalloc heap belongs to the thread that made it, so this type is neither `Send` nor
/// `Sync` (the raw pointer inside sees to that).
pub struct MiHeap {
    heap: NonNull<mi::mi_heap_t>,
}

impl MiHeap {
    /// A new, empty heap owned by the current thread. `None` when mimalloc cannot make one.
    pub fn new() -> Option<Self> {
        // SAFETY: `mi_heap_new` has no preconditions; it returns null on failure.
        let heap = unsafe { mi::mi_heap_new() };
        NonNull::new(heap).map(|heap| Self { heap })
    }

    /// Allocates `size` bytes from this heap (`mi_heap_malloc`), aligned as `malloc` aligns.
    /// `None` when there is no memory.
    #[inline]
    pub fn alloc(&self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: the heap is alive and this is its owning thread, since `MiHeap` is not `Send`.
        let block = unsafe { mi::mi_heap_malloc(self.heap.as_ptr(), size) };
        NonNull::new(block.cast())
    }

    /// Frees one block (`mi_free`).
    ///
    /// # Safety
    /// - `block` came from [`alloc`](MiHeap::alloc) on this heap and has not been freed.
    /// - Nothing uses the block afterwards.
    #[inline]
    pub unsafe fn free(&self, block: NonNull<u8>) {
        // SAFETY: the caller promises a live block of this heap, so `mi_free` may take it back.
        unsafe { mi::mi_free(block.as_ptr().cast::<c_void>()) }
    }
}

impl Drop for MiHeap {
    fn drop(&mut self) {
        // SAFETY: the heap came from `mi_heap_new` and is destroyed once, here. Its blocks are
        // raw pointers, which a caller may only dereference while the heap is alive.
        unsafe { mi::mi_heap_destroy(self.heap.as_ptr()) }
    }
}

impl fmt::Debug for MiHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiHeap").field("heap", &self.heap).finish()
    }
}
