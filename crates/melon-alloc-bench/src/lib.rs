//! Benchmarks of melon-alloc's heap pools against glibc `malloc`, mimalloc's first-class heaps,
//! bumpalo, talc and rlsf, and of its shared-memory pool against rts-alloc, glibc and Melon's
//! figures, with the helpers the benchmarks share.
//!
//! A pool allocator is only worth having if it beats the general-purpose allocator on the
//! workloads it is meant for, and a claim like "four times faster than `malloc`" means nothing
//! without the peers measured in the same run on the same machine. This crate holds the timing
//! benchmarks (`benches/heap.rs` and `benches/shm.rs`, run with
//! `cargo bench -p melon-alloc-bench --bench heap` or `--bench shm`), the resident-memory
//! measurement (`cargo run --release -p melon-alloc-bench --bin resident`) and the multi-process
//! hammer of the shared pool (`cargo run --release -p melon-alloc-bench --bin hammer`), the
//! heap workloads that carry a target timed for melon and its peer in interleaved rounds (the
//! `heap_targets` binary, over the loops of [`workloads`]), the comparison of global allocators
//! on a program's workload (the `global` binary and its children, one per allocator:
//! [`global`]);
//! `cargo xtask bench` runs them all and writes `docs/benchmarks.md` from the results, with the
//! targets they are held to.
//!
//! The helpers here are what several of them need: the block size, a reproducible permutation
//! for frees in a shuffled order, a seeded random number generator, the size sequence of the
//! mixed workload, a safe owner for a mimalloc heap, talc and rlsf each over an arena of its
//! own, and the heap workloads' loops with the allocators they run on ([`workloads`]).

pub mod global;
pub mod per_request;
pub mod turns;
pub mod workloads;

use core::alloc::Layout;
use core::ffi::c_void;
use core::fmt;
use core::ptr::NonNull;
use std::alloc::{GlobalAlloc, System};

use libmimalloc_sys as mi;
use rlsf::Tlsf;
use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

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

/// The smallest request of the mixed workload, in bytes.
pub const MIXED_MIN: usize = 8;

/// One more than the largest request of the mixed workload: requests run up to 64 KiB.
pub const MIXED_END: usize = 64 << 10;

/// Request sizes for the mixed workload: from [`MIXED_MIN`] up to (not including)
/// [`MIXED_END`], the same for the same `len` and `seed` on every machine.
///
/// Every power-of-two octave (8 to 16 bytes, 16 to 32, ..., 32 to 64 KiB) is equally likely and
/// sizes are uniform within an octave, which approximates a log-uniform distribution with integer
/// arithmetic alone: half the requests are under 512 bytes, and one in thirteen is 32 KiB or
/// more. Real programs allocate mostly small objects and now and then a large buffer; this
/// sequence has the same shape.
///
/// ```
/// use melon_alloc_bench::{mixed_sizes, MIXED_END, MIXED_MIN};
///
/// let sizes = mixed_sizes(4096, 1);
/// assert!(sizes.iter().all(|&size| (MIXED_MIN..MIXED_END).contains(&size)));
/// assert_eq!(sizes, mixed_sizes(4096, 1));
/// let small = sizes.iter().filter(|&&size| size < 512).count();
/// assert!(small > 1500 && small < 2600);
/// ```
pub fn mixed_sizes(len: usize, seed: u64) -> Vec<usize> {
    let mut rng = XorShift64::new(seed);
    let low = MIXED_MIN.trailing_zeros() as usize;
    let octaves = (MIXED_END.trailing_zeros() as usize) - low;
    (0..len)
        .map(|_| {
            let base = 1usize << (low + rng.below(octaves));
            base + rng.below(base)
        })
        .collect()
}

/// Live blocks of the mixed workload's ring.
pub const MIXED_RING: usize = 256;

/// Length of the size sequences the rings walk round and round; a power of two.
pub const RING_SIZES: usize = 1 << 14;

/// The seed of the mixed workload's sizes, fixed so that every run and every peer sees the same
/// sequence.
pub const MIXED_SEED: u64 = 0x6d69_7865_645f_7365;

/// Live blocks in the large-block ring.
pub const LARGE_RING: usize = 32;

/// The large-block ring's sizes: from this many bytes
pub const LARGE_MIN: usize = 16 << 10;
/// to this many, uniformly ([`large_sizes`]).
pub const LARGE_MAX: usize = 64 << 10;

/// The limit of the limited root in the large-block ring: twice what the ring holds at most, so
/// that the limit leaves the pool room to keep freed chunks.
pub const LARGE_LIMIT: usize = 2 * LARGE_RING * LARGE_MAX;

/// `len` sizes of the large-block ring, uniform from [`LARGE_MIN`] to [`LARGE_MAX`] bytes, the
/// same on every run: blocks that every peer serves from its large-block path.
///
/// ```
/// use melon_alloc_bench::{large_sizes, LARGE_MAX, LARGE_MIN};
///
/// let sizes = large_sizes(1024);
/// assert!(sizes.iter().all(|&size| (LARGE_MIN..=LARGE_MAX).contains(&size)));
/// assert_eq!(sizes, large_sizes(1024));
/// ```
pub fn large_sizes(len: usize) -> Vec<usize> {
    let mut rng = XorShift64::new(0x6c61_7267_655f_7269);
    (0..len).map(|_| LARGE_MIN + rng.below(LARGE_MAX - LARGE_MIN + 1)).collect()
}

/// A region of memory from glibc for an arena allocator to manage, given back when dropped.
///
/// A region this large is mapped by `malloc` with `mmap`, so its pages cost nothing until the
/// allocator in it touches them, and a resident-memory reading sees only those.
struct Region {
    base: NonNull<u8>,
    layout: Layout,
}

impl Region {
    /// A region of `bytes` bytes aligned to a page. `None` when there is no memory.
    fn new(bytes: usize) -> Option<Self> {
        let layout = Layout::from_size_align(bytes.max(1), 4096).ok()?;
        // SAFETY: the layout's size is at least one byte.
        let base = NonNull::new(unsafe { System.alloc(layout) })?;
        Some(Self { base, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the region came from `System` with `self.layout` and is given back once, here.
        unsafe { System.dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// The talc allocator (`talc::base::Talc` with a `Manual` source) over an arena of its own,
/// claimed when it is made: the way talc is used without an operating system.
///
/// Dropping it gives the whole arena back at once, which is the peer of dropping a melon pool.
pub struct TalcArena {
    // Declared before the region, so that it is dropped first: it points into the region.
    talc: Talc<Manual, DefaultBinning>,
    region: Region,
}

impl TalcArena {
    /// A talc allocator over a fresh arena of `bytes` bytes. `None` when there is no memory or
    /// the arena is too small for talc's metadata.
    pub fn new(bytes: usize) -> Option<Self> {
        let region = Region::new(bytes)?;
        let mut talc = Talc::new(Manual);
        // SAFETY: the region is this arena's alone, nothing else writes to it, and it outlives
        // `talc`, which is dropped first; `Manual` allows claiming by hand.
        unsafe { talc.claim(region.base.as_ptr(), region.layout.size()) }?;
        Some(Self { talc, region })
    }

    /// Allocates a block of `size` bytes aligned to 16. `None` when the arena is full or `size`
    /// is 0.
    #[inline]
    pub fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        let layout = Layout::from_size_align(size, 16).ok()?;
        // SAFETY: the layout's size is not zero.
        unsafe { self.talc.allocate(layout) }
    }

    /// Frees a block.
    ///
    /// # Safety
    /// - `block` came from [`alloc`](TalcArena::alloc) on this arena with `size`, and has not
    ///   been freed.
    /// - Nothing uses the block afterwards.
    #[inline]
    pub unsafe fn free(&mut self, block: NonNull<u8>, size: usize) {
        // SAFETY: `alloc` made this layout from the same size, so it is valid.
        let layout = unsafe { Layout::from_size_align_unchecked(size, 16) };
        // SAFETY: the caller promises a live block of this allocator, allocated with `layout`.
        unsafe { self.talc.deallocate(block.as_ptr(), layout) }
    }
}

impl fmt::Debug for TalcArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TalcArena")
            .field("base", &self.region.base)
            .field("bytes", &self.region.layout.size())
            .finish_non_exhaustive()
    }
}

/// rlsf's TLSF allocator: first-level classes up to 8 GiB (32-byte granularity shifted by 28),
/// 32 second-level classes each.
type TlsfAllocator = Tlsf<'static, u32, u32, 28, 32>;

/// The rlsf allocator (`rlsf::Tlsf`, two-level segregated fit, O(1) for both operations) over an
/// arena of its own, inserted as one free block when it is made.
///
/// Dropping it gives the whole arena back at once, which is the peer of dropping a melon pool.
pub struct TlsfArena {
    // Boxed because the allocator's lists are a few kilobytes, and declared before the region,
    // so that it is dropped first: it points into the region.
    tlsf: Box<TlsfAllocator>,
    region: Region,
}

impl TlsfArena {
    /// An rlsf allocator over a fresh arena of `bytes` bytes. `None` when there is no memory.
    pub fn new(bytes: usize) -> Option<Self> {
        let region = Region::new(bytes)?;
        let mut tlsf = Box::new(TlsfAllocator::new());
        let block = NonNull::slice_from_raw_parts(region.base, region.layout.size());
        // SAFETY: the region is this arena's alone and outlives `tlsf`, which is dropped first.
        // (rlsf's safe `insert_free_block` would want the region borrowed for `'static`.)
        unsafe { tlsf.insert_free_block_ptr(block) }?;
        Some(Self { tlsf, region })
    }

    /// Allocates a block of `size` bytes aligned to 16. `None` when the arena is full.
    #[inline]
    pub fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(size, 16).ok()?;
        self.tlsf.allocate(layout)
    }

    /// Frees a block.
    ///
    /// # Safety
    /// - `block` came from [`alloc`](TlsfArena::alloc) on this arena and has not been freed.
    /// - Nothing uses the block afterwards.
    #[inline]
    pub unsafe fn free(&mut self, block: NonNull<u8>) {
        // SAFETY: the caller promises a live block of this allocator; `alloc` aligned it to 16.
        unsafe { self.tlsf.deallocate(block, 16) }
    }
}

impl fmt::Debug for TlsfArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsfArena")
            .field("base", &self.region.base)
            .field("bytes", &self.region.layout.size())
            .finish_non_exhaustive()
    }
}

/// A bare lock word and, in its cache line, three words an operation would write under it: what
/// a lock's compare-and-swaps cost alone, to set beside the shared pool's lock.
///
/// ```
/// let lock = melon_alloc_bench::BareLock::default();
/// lock.take_and_release_twice();
/// ```
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct BareLock {
    word: core::sync::atomic::AtomicU32,
    written: [core::sync::atomic::AtomicU64; 3],
}

impl BareLock {
    /// Two takes and two releases of the word, each a compare-and-swap, with three stores under
    /// each take; the word is free again afterwards.
    ///
    /// ```
    /// let lock = melon_alloc_bench::BareLock::default();
    /// lock.take_and_release_twice();
    /// lock.take_and_release_twice();
    /// ```
    #[inline]
    pub fn take_and_release_twice(&self) {
        use core::sync::atomic::Ordering;
        for round in 0..2u64 {
            // The results are not looked at: the word is free before each take and held before
            // each release, and the compare-and-swaps run whatever they find.
            let _ = self.word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed);
            for word in &self.written {
                word.store(round, Ordering::Relaxed);
            }
            let _ = self.word.compare_exchange(1, 0, Ordering::Release, Ordering::Relaxed);
        }
    }
}

/// A shared pool of `capacity` bytes with `percent` % of its free bytes taken by [`BLOCK`]-byte
/// blocks, each written to so that its page is resident as a live block's is: the setup of the
/// shared pool's alloc+free pair at a fill level.
///
/// The blocks are never freed one by one: dropping the pool unmaps them all at once. The fill is
/// done under one hold of the lock, which is only a matter of setup speed.
///
/// # Panics
/// When the pool cannot be made or filled, or its figures do not add up afterwards: a benchmark
/// cannot go on without it.
///
/// ```
/// let shm = melon_alloc_bench::filled_shm_pool(1 << 20, 50);
/// let stats = shm.stats().unwrap();
/// assert!(stats.live_blocks > 0);
/// assert!(shm.available() < (1 << 20) / 2);
/// ```
pub fn filled_shm_pool(capacity: usize, percent: usize) -> melon_alloc_shm::ShmPool {
    let shm = melon_alloc_shm::ShmPool::new(capacity).expect("shared memory for the pool");
    let blocks = shm.available() / 100 * percent / BLOCK;
    let mut guard = shm.lock().expect("the pool's lock");
    for _ in 0..blocks {
        let block = guard.alloc(BLOCK).expect("room for the fill");
        // SAFETY: the block was just allocated and holds `BLOCK` bytes.
        unsafe { block.as_ptr().write(1) };
    }
    drop(guard);
    let stats = shm.stats().expect("the pool's lock");
    assert_eq!(stats.live_blocks, blocks, "every fill block is live");
    shm
}

/// The median and the extremes of some figures: how the drivers that run their peers in rounds
/// report a figure and its ratio to the baseline.
///
/// ```
/// use melon_alloc_bench::Spread;
///
/// let spread = Spread::of(&[1.5, 0.5, 1.0, 2.0]);
/// assert_eq!((spread.median, spread.min, spread.max), (1.25, 0.5, 2.0));
/// assert_eq!(spread.show(), "1.25 (0.50-2.00)");
/// assert!(Spread::of(&[]).median.is_nan());
/// ```
#[derive(Debug)]
pub struct Spread {
    /// The middle figure, or the mean of the two middle ones.
    pub median: f64,
    /// The least figure.
    pub min: f64,
    /// The greatest figure.
    pub max: f64,
}

impl Spread {
    /// The spread of `figures`; `NaN` throughout when there are none.
    pub fn of(figures: &[f64]) -> Self {
        let mut sorted = figures.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = match sorted.len() {
            0 => f64::NAN,
            len if len % 2 == 0 => (sorted[middle - 1] + sorted[middle]) / 2.0,
            _ => sorted[middle],
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// The median and, in brackets, the least and greatest, to two decimals.
    pub fn show(&self) -> String {
        format!("{:.2} ({:.2}-{:.2})", self.median, self.min, self.max)
    }
}

/// The command line of a driver that runs its peers in rounds: `[--rounds N] [--tsv PATH]`.
#[derive(Debug)]
pub struct RoundsArgs {
    /// Rounds to run, at least one.
    pub rounds: usize,
    /// Where to write the figures as tab-separated values, if anywhere.
    pub tsv: Option<std::path::PathBuf>,
}

impl RoundsArgs {
    /// Parses the process's arguments, with `rounds` unless `--rounds` says otherwise.
    ///
    /// # Errors
    /// A usage line naming `program` when an argument is unknown or a count is not positive.
    pub fn parse(program: &str, rounds: usize) -> Result<Self, String> {
        Self::parse_with(program, rounds, "", |_, _| Ok(false))
    }

    /// Like [`parse`](RoundsArgs::parse), with options of the driver's own: `extra` gets each
    /// other option and its value, and says whether it took them; `usage` lists them for the
    /// usage line.
    ///
    /// # Errors
    /// A usage line naming `program` when an argument is unknown or a count is not positive, or
    /// what `extra` said was wrong with its option.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_bench::{positive_count, RoundsArgs};
    ///
    /// let mut in_flight = 100;
    /// let args = RoundsArgs::parse_with("driver", 9, " [--in-flight N]", |option, value| {
    ///     if option != "--in-flight" {
    ///         return Ok(false);
    ///     }
    ///     in_flight = positive_count(option, value)?;
    ///     Ok(true)
    /// })?;
    /// // A doctest runs without arguments: every figure keeps its default.
    /// assert_eq!((args.rounds, in_flight), (9, 100));
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse_with(
        program: &str,
        rounds: usize,
        usage: &str,
        mut extra: impl FnMut(&str, &str) -> Result<bool, String>,
    ) -> Result<Self, String> {
        let mut parsed = Self { rounds, tsv: None };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match (arg.as_str(), args.next()) {
                ("--rounds", Some(n)) => parsed.rounds = positive_count("--rounds", &n)?,
                ("--tsv", Some(path)) => parsed.tsv = Some(path.into()),
                (option, Some(value)) if extra(option, &value)? => {}
                _ => return Err(format!("usage: {program} [--rounds N] [--tsv PATH]{usage}")),
            }
        }
        Ok(parsed)
    }
}

/// The value of a driver's `option` that counts something: a whole number above zero.
///
/// # Errors
/// "`option` needs a count" when `value` is not one.
///
/// # Examples
/// ```
/// use melon_alloc_bench::positive_count;
///
/// assert_eq!(positive_count("--rounds", "15"), Ok(15));
/// assert_eq!(positive_count("--rounds", "0"), Err("--rounds needs a count".to_string()));
/// ```
pub fn positive_count(option: &str, value: &str) -> Result<usize, String> {
    value.parse().ok().filter(|&n| n > 0).ok_or_else(|| format!("{option} needs a count"))
}

/// Runs a driver's `run`, printing its error under the program's name and failing the process.
pub fn exit_with(
    program: &str,
    run: impl FnOnce() -> Result<(), String>,
) -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{program}: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
