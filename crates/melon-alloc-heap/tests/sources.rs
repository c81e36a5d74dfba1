//! The root sources under stress: small chunks carved from slabs and handed out once, slabs kept
//! across lulls and given back, the large-chunk cache's lengths, alignments and layouts, and the
//! limit of a root over them. This binary's global allocator records the layout of every
//! allocation of a page or more and checks that each is freed with the layout it was made with.

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::alloc::{GlobalAlloc, System};
use std::collections::HashSet;
use std::sync::Mutex;

use melon_alloc_core::{ChunkSource, Engine, CHUNK_SIZE, MAX_SMALL, SMALL_CHUNK};
use melon_alloc_heap::{GlobalSource, HeapPool, Pool};

// ---------------------------------------------------------------------------------------------
// A global allocator that checks layouts and counts each thread's aligned bytes.

/// Allocations of at least this many bytes, or aligned to it, are recorded.
const TRACKED: usize = 4096;
const SLOTS: usize = 4096;

/// Live recorded allocations: address, size, alignment; address 0 is a free slot.
static TABLE: Mutex<[(usize, usize, usize); SLOTS]> = Mutex::new([(0, 0, 0); SLOTS]);
/// Whether the table ever ran out of slots (then an unknown address proves nothing).
static OVERFLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    /// Frees on this thread with a layout other than the allocation's.
    static MISMATCHES: Cell<usize> = const { Cell::new(0) };
    /// Bytes of this thread's live allocations aligned to a chunk or more: slabs and large
    /// chunks.
    static CHUNK_BYTES: Cell<isize> = const { Cell::new(0) };
    /// The most bytes aligned to a chunk this thread may hold: past it, the allocator has no
    /// memory, as a system under pressure has none.
    static CHUNK_CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

struct Checking;

fn tracked(layout: Layout) -> bool {
    layout.size() >= TRACKED || layout.align() >= TRACKED
}

// SAFETY: every call goes to `System`, which upholds `GlobalAlloc`; the bookkeeping allocates
// nothing and never unwinds.
unsafe impl GlobalAlloc for Checking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() >= CHUNK_SIZE
            && CHUNK_CAP.try_with(Cell::get).unwrap_or(usize::MAX) < chunk_bytes() + layout.size()
        {
            return core::ptr::null_mut();
        }
        // SAFETY: forwarded from the caller.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() && tracked(layout) {
            let mut table = TABLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match table.iter_mut().find(|slot| slot.0 == 0) {
                Some(slot) => *slot = (block.addr(), layout.size(), layout.align()),
                None => OVERFLOWED.store(true, std::sync::atomic::Ordering::Relaxed),
            }
            if layout.align() >= CHUNK_SIZE {
                let _ =
                    CHUNK_BYTES.try_with(|bytes| bytes.set(bytes.get() + layout.size() as isize));
            }
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let mut table = TABLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mismatch = match table.iter_mut().find(|slot| slot.0 == block.addr()) {
            Some(slot) => {
                let mismatch = (slot.1, slot.2) != (layout.size(), layout.align());
                *slot = (0, 0, 0);
                mismatch
            }
            // Not recorded: fine if it is too short to be, or if the table overflowed.
            None => tracked(layout) && !OVERFLOWED.load(std::sync::atomic::Ordering::Relaxed),
        };
        drop(table);
        if mismatch {
            let _ = MISMATCHES.try_with(|count| count.set(count.get() + 1));
        }
        if tracked(layout) && layout.align() >= CHUNK_SIZE {
            let _ = CHUNK_BYTES.try_with(|bytes| bytes.set(bytes.get() - layout.size() as isize));
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(block, layout) }
    }
}

#[global_allocator]
static CHECKING: Checking = Checking;

/// Frees with a wrong layout on this thread so far.
fn mismatches() -> usize {
    MISMATCHES.with(Cell::get)
}

/// Bytes of this thread's live allocations aligned to a chunk or more.
fn chunk_bytes() -> usize {
    usize::try_from(CHUNK_BYTES.try_with(Cell::get).unwrap_or(0)).unwrap_or(0)
}

/// Runs `f` with the global allocator refusing this thread any chunk-aligned memory beyond
/// what it holds now.
fn with_no_more_memory<T>(f: impl FnOnce() -> T) -> T {
    CHUNK_CAP.with(|cap| cap.set(chunk_bytes()));
    let result = f();
    CHUNK_CAP.with(|cap| cap.set(usize::MAX));
    result
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn large(size: usize) -> Layout {
    layout(size, CHUNK_SIZE)
}

/// A little xorshift generator: the tests are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Fills the first and last word of a chunk with its tag.
fn stamp(chunk: NonNull<u8>, len: usize, tag: usize) {
    // SAFETY: the chunk is `len >= 16` bytes, handed out and owned by the test; unaligned
    // writes need no alignment.
    unsafe {
        chunk.as_ptr().cast::<usize>().write_unaligned(tag);
        chunk.as_ptr().add(len - 8).cast::<usize>().write_unaligned(!tag);
    }
}

/// Whether a chunk still holds the tag `stamp` wrote.
fn stamped(chunk: NonNull<u8>, len: usize, tag: usize) -> bool {
    // SAFETY: as in `stamp`: the chunk is still handed out to the test.
    unsafe {
        chunk.as_ptr().cast::<usize>().read_unaligned() == tag
            && chunk.as_ptr().add(len - 8).cast::<usize>().read_unaligned() == !tag
    }
}

/// Whether the ranges `[start, start + len)` overlap none of each other.
fn disjoint(mut ranges: Vec<(usize, usize)>) -> bool {
    ranges.sort_unstable();
    ranges.windows(2).all(|pair| pair[0].0 + pair[0].1 <= pair[1].0)
}

/// Chunks in the slabs a source takes, oldest first: 4 doubling to 128.
fn slab_chunks(index: u32) -> usize {
    (4usize << index).min((2 << 20) / CHUNK_SIZE)
}

// ---------------------------------------------------------------------------------------------
// Small chunks and slabs.

#[test]
fn small_chunks_are_aligned_disjoint_and_never_out_twice_through_random_churn() {
    let mut source = GlobalSource::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<(NonNull<u8>, usize)> = Vec::new();
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    let most_out = if cfg!(miri) { 40 } else { 400 };
    for step in 0..steps {
        if out.len() < most_out && rng.below(3) != 0 {
            let chunk = source.acquire(SMALL_CHUNK).unwrap();
            assert_eq!(chunk.as_ptr().addr() % CHUNK_SIZE, 0);
            stamp(chunk, CHUNK_SIZE, step);
            out.push((chunk, step));
        } else if !out.is_empty() {
            let (chunk, tag) = out.swap_remove(rng.below(out.len()));
            assert!(stamped(chunk, CHUNK_SIZE, tag), "a chunk out was written by someone else");
            // SAFETY: from `source` as a small chunk, released once.
            unsafe { source.release(chunk, SMALL_CHUNK) };
        }
        // Now and then every chunk comes back, which restarts the kept slabs.
        if rng.below(500) == 0 {
            for (chunk, tag) in out.drain(..) {
                assert!(stamped(chunk, CHUNK_SIZE, tag));
                // SAFETY: from `source` as a small chunk, released once.
                unsafe { source.release(chunk, SMALL_CHUNK) };
            }
        }
        let addresses: HashSet<_> = out.iter().map(|(chunk, _)| chunk.as_ptr().addr()).collect();
        assert_eq!(addresses.len(), out.len(), "a chunk handed out twice at step {step}");
        assert!(source.slab_bytes() >= out.len() * CHUNK_SIZE);
    }
    assert!(disjoint(out.iter().map(|(chunk, _)| (chunk.as_ptr().addr(), CHUNK_SIZE)).collect()));
    for (chunk, tag) in out {
        assert!(stamped(chunk, CHUNK_SIZE, tag));
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    source.trim();
    assert_eq!(source.slab_bytes(), 0);
    assert_eq!(mismatches(), 0, "a slab freed with a layout other than its own");
}

#[test]
fn slabs_double_from_four_chunks_and_a_full_load_keeps_every_one_of_them() {
    let mut source = GlobalSource::new();
    let slabs = if cfg!(miri) { 3 } else { 7 };
    let total: usize = (0..slabs).map(slab_chunks).sum();
    let chunks: Vec<_> = (0..total).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    assert_eq!(source.slab_bytes(), total * CHUNK_SIZE, "slabs are filled before the next one");
    for &chunk in &chunks {
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    assert_eq!(source.slab_bytes(), total * CHUNK_SIZE, "the busiest moment needed them all");
    // The same load again is served from the kept slabs, each chunk once.
    let again: Vec<_> = (0..total).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    assert_eq!(source.slab_bytes(), total * CHUNK_SIZE, "no slab taken");
    let before: HashSet<_> = chunks.iter().copied().collect();
    let after: HashSet<_> = again.iter().copied().collect();
    assert_eq!(after.len(), total, "a chunk handed out twice after the restart");
    assert_eq!(after, before, "the same chunks, from the same slabs");
    // One more takes the next slab, twice the last.
    let extra = source.acquire(SMALL_CHUNK).unwrap();
    assert_eq!(source.slab_bytes(), (total + slab_chunks(slabs)) * CHUNK_SIZE);
    for chunk in again.into_iter().chain([extra]) {
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    source.trim();
    assert_eq!(source.slab_bytes(), 0);
    // After the trim, slabs grow on from where they were, not from four chunks again.
    let after_trim = source.acquire(SMALL_CHUNK).unwrap();
    assert_eq!(source.slab_bytes(), slab_chunks(slabs + 1) * CHUNK_SIZE);
    // SAFETY: from `source` as a small chunk, released once.
    unsafe { source.release(after_trim, SMALL_CHUNK) };
    source.trim();
    assert_eq!(source.slab_bytes(), 0);
    assert_eq!(mismatches(), 0);
}

#[test]
fn once_every_chunk_is_back_only_the_newest_slabs_the_peak_needs_stay() {
    let mut source = GlobalSource::new();
    // 4 + 8 + 16 chunks, and one more: a slab of 32.
    let peak = 29;
    let chunks: Vec<_> = (0..peak).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    assert_eq!(source.slab_bytes(), (4 + 8 + 16 + 32) * CHUNK_SIZE);
    let newest: Vec<_> = chunks[28..].to_vec();
    for &chunk in &chunks {
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    assert_eq!(source.slab_bytes(), 32 * CHUNK_SIZE, "the newest slab holds the peak alone");
    assert_eq!(mismatches(), 0);
    // The peak again comes out of the kept slab only, carved from its start.
    let again: Vec<_> = (0..peak).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    assert_eq!(source.slab_bytes(), 32 * CHUNK_SIZE);
    assert_eq!(again[0], newest[0], "carving restarts at the kept slab's start");
    let start = newest[0].as_ptr().addr();
    assert!(again
        .iter()
        .all(|chunk| (start..start + 32 * CHUNK_SIZE).contains(&chunk.as_ptr().addr())));
    assert_eq!(again.iter().collect::<HashSet<_>>().len(), peak);
    for chunk in again {
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
}

#[test]
fn a_chunk_out_keeps_its_slab_through_trim_and_every_other_return() {
    let mut source = GlobalSource::new();
    let kept = source.acquire(SMALL_CHUNK).unwrap();
    let others: Vec<_> = (0..40).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    stamp(kept, CHUNK_SIZE, 7);
    for &chunk in &others {
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    let held = source.slab_bytes();
    source.trim();
    assert_eq!(source.slab_bytes(), held, "no slab goes while a chunk is out");
    // Under Miri, a slab given back early would make this a use after free.
    assert!(stamped(kept, CHUNK_SIZE, 7));
    // SAFETY: the chunk is out and `CHUNK_SIZE` bytes long.
    unsafe { kept.as_ptr().write_bytes(0x5a, CHUNK_SIZE) };
    // The freed chunks are handed out again, never the one still out.
    let again: Vec<_> = (0..40).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    assert!(!again.contains(&kept));
    for chunk in again.into_iter().chain([kept]) {
        // SAFETY: from `source` as a small chunk, released once.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    assert!(source.slab_bytes() > 0, "slabs are kept once every chunk is back");
    source.trim();
    assert_eq!(source.slab_bytes(), 0, "trim gives back every slab once no chunk is out");
}

/// Retention across lulls: a lighter load keeps the busiest slabs for `KEEP_SLABS_FOR`, counted
/// from the first lighter return; a load as busy as ever restarts the count; after it, only
/// the latest load's need stays.
#[cfg(not(miri))]
#[test]
fn lighter_loads_keep_the_busiest_slabs_for_keep_slabs_for_and_then_only_the_latest_need() {
    use melon_alloc_heap::KEEP_SLABS_FOR;
    use std::time::{Duration, Instant};

    let mut source = GlobalSource::new();
    let load = |source: &mut GlobalSource, chunks: usize| {
        let out: Vec<_> = (0..chunks).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
        for chunk in out {
            // SAFETY: from `source` as a small chunk, released once.
            unsafe { source.release(chunk, SMALL_CHUNK) };
        }
    };
    // 4 + 8 + 16 + 32 + 64 chunks: the busiest load needs the newest two slabs.
    load(&mut source, 124);
    let busiest = source.slab_bytes();
    assert_eq!(busiest, (64 + 32 + 16 + 8 + 4) * CHUNK_SIZE);
    let started = Instant::now();
    load(&mut source, 2);
    load(&mut source, 2);
    if started.elapsed() < KEEP_SLABS_FOR {
        assert_eq!(source.slab_bytes(), busiest, "a short lull keeps the busiest slabs");
    }
    // As busy as ever: the count starts again from the next lighter return.
    std::thread::sleep(KEEP_SLABS_FOR + Duration::from_millis(50));
    load(&mut source, 124);
    let restarted = Instant::now();
    load(&mut source, 2);
    if restarted.elapsed() < KEEP_SLABS_FOR {
        assert_eq!(source.slab_bytes(), busiest, "the busy load restarted the count");
    }
    std::thread::sleep(KEEP_SLABS_FOR + Duration::from_millis(50));
    assert_eq!(source.slab_bytes(), busiest, "no timer: an idle source keeps them until a return");
    load(&mut source, 2);
    assert_eq!(source.slab_bytes(), 64 * CHUNK_SIZE, "only the newest slab for the latest load");
    assert_eq!(mismatches(), 0);
}

#[test]
fn dropping_a_source_with_chunks_out_frees_every_slab_and_cached_chunk() {
    let before = chunk_bytes();
    {
        let mut source = GlobalSource::new();
        let out: Vec<_> = (0..20).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
        let cached = source.acquire(large(40_000)).unwrap();
        // SAFETY: from `source` with this layout, released once.
        unsafe { source.release(cached, large(40_000)) };
        assert!(source.cached_large_bytes() > 0);
        assert!(chunk_bytes() > before);
        let _ = out;
    }
    // (Miri's leak check would also catch a slab left behind.)
    assert_eq!(chunk_bytes(), before, "something of the source outlived it");
    assert_eq!(mismatches(), 0);
}

// ---------------------------------------------------------------------------------------------
// The large-chunk cache.

/// Every length from a few bytes past the cached range, at several alignments: each chunk is
/// aligned, writable over its whole length, kept only at a chunk's alignment and from 8 to 256
/// KiB, and freed (when given back) with the layout it was allocated with.
#[test]
fn large_chunks_of_every_length_and_alignment_go_back_with_the_layout_they_came_with() {
    let mut source = GlobalSource::new();
    let step = if cfg!(miri) { 24_592 } else { 1_008 };
    let aligns = [16, 4096, CHUNK_SIZE, 2 * CHUNK_SIZE];
    for size in (16..(300 << 10)).step_by(step) {
        for align in aligns {
            let want = layout(size, align);
            if want == SMALL_CHUNK {
                continue;
            }
            let chunk = source.acquire(want).unwrap();
            assert_eq!(chunk.as_ptr().addr() % align, 0, "{size} {align}");
            stamp(chunk, size, size ^ align);
            let cached = source.cached_large_bytes();
            // SAFETY: from `source` with `want`, released once.
            unsafe { source.release(chunk, want) };
            let kept = source.cached_large_bytes() - cached;
            if align != CHUNK_SIZE || !((8 << 10) - 1024..=(256 << 10)).contains(&size) {
                assert_eq!(kept, 0, "{size} {align} kept");
            }
            assert!(kept == 0 || (kept >= size && kept - size <= size / 8), "{size} kept {kept}");
            assert!(source.cached_large_bytes() <= 2 << 20);
        }
    }
    // The kept chunks serve their lengths again, and go back with their layouts.
    for size in (16..(300 << 10)).step_by(step) {
        if let Some(chunk) = source.acquire(large(size)) {
            stamp(chunk, size, size);
            // SAFETY: from `source` with this layout, released once.
            unsafe { source.release(chunk, large(size)) };
        }
    }
    source.trim();
    assert_eq!(source.cached_large_bytes(), 0);
    assert_eq!(mismatches(), 0, "a chunk freed with a layout other than its allocation's");
}

/// A request whose list is empty takes a kept chunk of one of the next two lengths, across a
/// power of two too, and the chunk comes back to its own list with its own layout.
#[test]
fn a_longer_kept_chunk_across_a_power_of_two_returns_to_its_own_list_and_layout() {
    let mut source = GlobalSource::new();
    // 30,720 is fifteen eighths of 16 KiB; the next lengths are 32 KiB and 36 KiB.
    for (request, kept_len) in [(30_000, 32_768), (30_000, 36_864), (60_000, 73_728)] {
        let kept = source.acquire(large(kept_len)).unwrap();
        // SAFETY: from `source` with this layout, released once.
        unsafe { source.release(kept, large(kept_len)) };
        assert_eq!(source.cached_large_bytes(), kept_len);
        let (chunk, len) = source.acquire_at_least(large(request), request + request / 4).unwrap();
        assert_eq!((chunk, len), (kept, kept_len), "{request} takes the kept {kept_len}");
        assert_eq!(source.cached_large_bytes(), 0);
        // SAFETY: the chunk is `len` bytes, handed out to the test.
        unsafe { chunk.as_ptr().write_bytes(0xc3, len) };
        // SAFETY: released with the length it came with, once.
        unsafe { source.release(chunk, large(len)) };
        assert_eq!(source.cached_large_bytes(), kept_len, "back on its own list");
        // Its own length finds it there.
        assert_eq!(source.acquire(large(kept_len)), Some(kept));
        // SAFETY: from `source` with this layout, released once.
        unsafe { source.release(kept, large(kept_len)) };
        source.trim();
        assert_eq!(source.cached_large_bytes(), 0);
    }
    // Three lengths up is too far, even within `most`.
    let far = source.acquire(large(40_960)).unwrap();
    // SAFETY: from `source` with this layout, released once.
    unsafe { source.release(far, large(40_960)) };
    let (chunk, len) = source.acquire_at_least(large(30_000), 50_000).unwrap();
    assert_ne!(chunk, far);
    assert_eq!(len, 30_000);
    // SAFETY: from `source` with this length, released once.
    unsafe { source.release(chunk, large(len)) };
    source.trim();
    assert_eq!(mismatches(), 0, "a chunk freed with a layout other than its allocation's");
}

#[test]
fn empty_and_impossible_requests_get_nothing_and_tiny_ones_a_chunk_of_their_own() {
    let mut source = GlobalSource::new();
    assert_eq!(source.acquire(layout(0, CHUNK_SIZE)), None);
    assert_eq!(source.acquire(layout(0, 1)), None);
    assert_eq!(source.acquire_at_least(layout(0, CHUNK_SIZE), 1 << 20), None);
    for size in [1, 7, 8, 9, 15, 16, 17, 100] {
        let want = layout(size, 1);
        let chunk = source.acquire(want).unwrap();
        // SAFETY: the chunk is `size` bytes, handed out to the test.
        unsafe { chunk.as_ptr().write_bytes(1, size) };
        // SAFETY: from `source` with `want`, released once.
        unsafe { source.release(chunk, want) };
        assert_eq!(source.cached_large_bytes(), 0, "{size}: too short to keep");
    }
    #[cfg(not(miri))]
    {
        let huge = layout(isize::MAX as usize - 2 * CHUNK_SIZE, CHUNK_SIZE);
        assert_eq!(source.acquire(huge), None);
        assert_eq!(source.acquire_at_least(huge, usize::MAX), None);
    }
    assert_eq!(source.cached_large_bytes(), 0);
    assert_eq!(mismatches(), 0);
}

#[test]
fn a_small_chunks_layout_never_gets_a_kept_large_chunk_nor_a_large_one_a_slab_chunk() {
    let mut source = GlobalSource::new();
    // 16,000 bytes round up to exactly a chunk's length.
    let kept = source.acquire(large(16_000)).unwrap();
    // SAFETY: from `source` with this layout, released once.
    unsafe { source.release(kept, large(16_000)) };
    assert_eq!(source.cached_large_bytes(), CHUNK_SIZE);
    let small = source.acquire(SMALL_CHUNK).unwrap();
    assert_ne!(small, kept);
    assert_eq!(source.cached_large_bytes(), CHUNK_SIZE);
    assert!(source.slab_bytes() > 0);
    // A nearby large length does get it, and gives it back as large.
    let again = source.acquire(large(15_500)).unwrap();
    assert_eq!(again, kept);
    // SAFETY: from `source` with these layouts, each released once.
    unsafe {
        source.release(again, large(15_500));
        source.release(small, SMALL_CHUNK);
    }
    assert_eq!(source.cached_large_bytes(), CHUNK_SIZE);
    source.trim();
    assert_eq!((source.slab_bytes(), source.cached_large_bytes()), (0, 0));
    assert_eq!(mismatches(), 0);
}

#[test]
fn keep_at_most_gives_back_the_shortest_first_and_stops_within_the_bound() {
    let mut source = GlobalSource::new();
    let lengths = [8 << 10, 64 << 10, 256 << 10];
    let chunks: Vec<_> = lengths.iter().map(|&len| source.acquire(large(len)).unwrap()).collect();
    for (&chunk, &len) in chunks.iter().zip(&lengths) {
        // SAFETY: from `source` with this layout, released once.
        unsafe { source.release(chunk, large(len)) };
    }
    assert_eq!(source.kept_bytes(), (8 + 64 + 256) << 10);
    source.keep_at_most(300 << 10);
    assert_eq!(source.kept_bytes(), 256 << 10, "the two shorter ones went, the longest stays");
    assert_eq!(source.acquire(large(256 << 10)), Some(chunks[2]));
    assert_eq!(source.kept_bytes(), 0);
    // SAFETY: from `source` with this layout, released once.
    unsafe { source.release(chunks[2], large(256 << 10)) };
    source.keep_at_most(256 << 10);
    assert_eq!(source.kept_bytes(), 256 << 10, "already within the bound");
    source.keep_at_most(0);
    assert_eq!(source.kept_bytes(), 0);
    assert_eq!(mismatches(), 0);
}

// ---------------------------------------------------------------------------------------------
// Limits.

/// A limited root over large blocks only: after every step the pool's `available()` is exactly
/// the limit minus what it holds, what it holds and keeps stay within the limit, and what it has
/// from the global allocator passes the limit by at most the rounding of large chunks.
#[test]
fn a_limited_root_takes_at_most_an_eighth_past_its_limit_from_the_global_allocator() {
    const LIMIT: usize = 512 << 10;
    let before = chunk_bytes();
    let mut engine = Engine::new(GlobalSource::new(), Some(LIMIT));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut live = Vec::new();
    for _ in 0..if cfg!(miri) { 150 } else { 5_000 } {
        // Large blocks only (no slab), never of a chunk's exact length.
        let size = MAX_SMALL + 64 + rng.below(200 << 10);
        if live.len() < 8 && rng.below(2) == 0 {
            live.extend(engine.alloc(size));
        } else if !live.is_empty() {
            let block = live.swap_remove(rng.below(live.len()));
            // SAFETY: an in-use block of `engine`, freed once.
            unsafe { engine.free(block) };
        }
        let held = engine.stats().bytes_held;
        let kept = engine.source().kept_bytes();
        assert_eq!(engine.available(), Some(LIMIT - held));
        assert!(held + kept <= LIMIT, "held {held} + kept {kept}");
        let taken = chunk_bytes() - before;
        assert!(taken <= LIMIT + LIMIT / 8, "{taken} bytes taken for a limit of {LIMIT}");
    }
    for block in live {
        // SAFETY: an in-use block of `engine`, freed once.
        unsafe { engine.free(block) };
    }
    engine.check().unwrap();
    drop(engine);
    assert_eq!(chunk_bytes(), before);
    assert_eq!(mismatches(), 0);
}

/// A limited root whose source keeps freed large chunks still serves a request of every byte
/// the limit leaves: the kept chunks go back rather than make it refuse.
#[test]
fn a_request_of_every_available_byte_fits_however_full_the_cache_is() {
    const LIMIT: usize = 1 << 20;
    let pool = HeapPool::with_limit(LIMIT);
    let blocks: Vec<_> = [20_000, 40_000, 100_000, 200_000, 60_000]
        .iter()
        .map(|&size| pool.alloc(size).unwrap())
        .collect();
    for block in blocks {
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    assert_eq!(pool.available(), Some(LIMIT));
    // A large block's chunk is its length and a 64-byte header.
    let all = pool.alloc(LIMIT - 64).expect("the whole limit fits");
    assert_eq!(pool.available(), Some(0));
    assert!(pool.alloc(1).is_none(), "nothing more fits");
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(all) };
    assert_eq!(pool.available(), Some(LIMIT));
    // Small blocks up to the limit, with large chunks kept again first.
    let big = pool.alloc(100_000).unwrap();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(big) };
    let mut small = Vec::new();
    while let Some(block) = pool.alloc(MAX_SMALL) {
        small.push(block);
    }
    assert!(pool.available().unwrap() < CHUNK_SIZE, "small blocks filled the limit");
    assert!(small.len() >= LIMIT / CHUNK_SIZE - 1);
    for block in small {
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    pool.check().unwrap();
    assert_eq!(mismatches(), 0);
}

/// Near the limit a kept chunk longer than the room left is not handed out for a shorter
/// request: the pool never holds more than its limit.
#[test]
fn a_kept_longer_chunk_is_not_handed_out_past_the_limit() {
    // 24,576 bytes kept; then a request of 21,008 bytes with only 22,528 bytes of room.
    let limit = 3 * CHUNK_SIZE + 22_528;
    let mut engine = Engine::new(GlobalSource::new(), Some(limit));
    let kept = engine.alloc(24_576 - 64).unwrap();
    // SAFETY: an in-use block of `engine`, freed once.
    unsafe { engine.free(kept) };
    assert_eq!(engine.source().kept_bytes(), 24_576);
    let filler = engine.alloc(3 * CHUNK_SIZE - 64).unwrap();
    assert!(engine.source().kept_bytes() <= 22_528);
    let block = engine.alloc(21_008 - 64).unwrap();
    let held = engine.stats().bytes_held;
    assert!(held <= limit, "held {held} past the limit {limit}");
    assert_eq!(engine.available(), Some(limit - held));
    assert!(held + engine.source().kept_bytes() <= limit);
    // SAFETY: in-use blocks of `engine`, each freed once.
    unsafe {
        engine.free(block);
        engine.free(filler);
    }
    engine.check().unwrap();
    drop(engine);
    assert_eq!(mismatches(), 0);
}

/// A limited root whose child filled the limit with small chunks keeps, once the child is gone,
/// the slabs of that moment: those besides the newest count against the limit, and go back, the
/// oldest first, to make room for large blocks. What the root has from the global allocator
/// passes its limit by at most its newest slab.
#[test]
fn slabs_kept_once_every_small_chunk_is_back_give_way_to_the_limit() {
    const LIMIT: usize = 124 * CHUNK_SIZE;
    let newest_slab = slab_chunks(4) * CHUNK_SIZE;
    let before = chunk_bytes();
    let root = HeapPool::with_limit(LIMIT);
    {
        // 124 chunks out at once: slabs of 4, 8, 16, 32 and 64 chunks.
        let child = root.child();
        let mut blocks = Vec::new();
        while let Some(block) = child.alloc(MAX_SMALL) {
            blocks.push(block);
        }
        for block in blocks {
            // SAFETY: from `child`, freed once.
            unsafe { child.free(block) };
        }
    }
    assert_eq!(root.available(), Some(LIMIT), "no chunk is out");
    assert_eq!(chunk_bytes() - before, LIMIT, "every slab is kept");
    // Never rounded: past the longest length the cache keeps.
    let size = 300 << 10;
    let mut large = Vec::new();
    while let Some(block) = root.alloc(size) {
        large.push(block);
        let (held, taken) = (root.stats().bytes_held, chunk_bytes() - before);
        assert!(taken <= LIMIT + newest_slab, "{taken} bytes taken, {held} held");
    }
    assert_eq!(large.len(), LIMIT / (size + 64));
    for block in large {
        // SAFETY: from `root`, freed once.
        unsafe { root.free(block) };
    }
    root.check().unwrap();
    drop(root);
    assert_eq!(chunk_bytes(), before);
    assert_eq!(mismatches(), 0);
}

/// Children of a limited root come and go: the root's `available()` is back to the limit after
/// each, and its slabs stay within what its busiest moment needed.
#[test]
fn children_of_a_limited_root_give_back_exactly_what_they_took() {
    const LIMIT: usize = 64 * CHUNK_SIZE;
    let root = HeapPool::with_limit(LIMIT);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..if cfg!(miri) { 4 } else { 200 } {
        let child = root.child_with_limit(LIMIT / 2);
        let mut blocks = Vec::new();
        for _ in 0..if cfg!(miri) { 20 } else { 100 } {
            let size = [16, 200, 3000, MAX_SMALL, 20_000, 70_000][rng.below(6)];
            if let Some(block) = child.alloc(size) {
                blocks.push(block);
            }
        }
        assert!(root.available().unwrap() + child.available().unwrap() >= LIMIT / 2);
        for block in blocks.drain(..).step_by(2) {
            // SAFETY: from `child`, freed once.
            unsafe { child.free(block) };
        }
        drop(child);
        assert_eq!(root.available(), Some(LIMIT));
        assert_eq!(root.stats().bytes_lent, 0);
    }
    root.check().unwrap();
    drop(root);
    assert_eq!(mismatches(), 0);
}

/// Allocates `size` bytes, and once more if that failed: whether the first try was refused for
/// no lasting reason.
fn alloc_twice(pool: &Pool, size: usize) -> (Option<NonNull<u8>>, Option<NonNull<u8>>) {
    let first = pool.alloc(size);
    let second = if first.is_none() { pool.alloc(size) } else { None };
    (first, second)
}

/// Frees the blocks that are there.
fn free_some(pool: &Pool, blocks: impl IntoIterator<Item = Option<NonNull<u8>>>) {
    for block in blocks.into_iter().flatten() {
        // SAFETY: each block came from `pool` and is freed once.
        unsafe { pool.free(block) };
    }
}

/// When the global allocator has no memory for a request, the pool trims, and its source gives
/// back the large chunks it keeps: the request is then served from that memory, not refused.
#[test]
fn a_request_the_system_refuses_is_retried_after_the_source_gives_back_its_kept_chunks() {
    for limit in [None, Some(4 << 20)] {
        let pool = match limit {
            None => HeapPool::new(),
            Some(limit) => HeapPool::with_limit(limit),
        };
        let blocks: Vec<_> = (0..4).map(|_| pool.alloc(200_000).unwrap()).collect();
        for block in blocks {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
        assert_eq!(pool.stats().bytes_held, 0);
        let kept = chunk_bytes();
        assert!(kept >= 800_000, "the source keeps the freed chunks");
        // Twice what the request needs is kept; the system has nothing more.
        let (first, second) = with_no_more_memory(|| alloc_twice(&pool, 400_000));
        assert!(
            first.is_some(),
            "refused (limit {limit:?}) though its trim gave back {kept} bytes: \
             a second try at once {}",
            if second.is_some() { "succeeded" } else { "failed too" }
        );
        free_some(&pool, [first, second]);
        pool.check().unwrap();
    }
    assert_eq!(mismatches(), 0);
}

/// The same with slabs: a root whose children have come and gone keeps the slabs of its busiest
/// moment; when the system has no memory for a large block, its trim gives them back, and the
/// block is served from that memory.
#[test]
fn a_request_the_system_refuses_is_retried_after_the_source_gives_back_its_kept_slabs() {
    let root = HeapPool::new();
    {
        let children: Vec<_> =
            (0..if cfg!(miri) { 20 } else { 60 }).map(|_| root.child()).collect();
        for child in &children {
            let block = child.alloc(MAX_SMALL).unwrap();
            // SAFETY: from `child`, freed once.
            unsafe { child.free(block) };
        }
    }
    assert_eq!(root.stats().bytes_held, 0);
    let kept = chunk_bytes();
    assert!(kept >= 20 * CHUNK_SIZE, "the root keeps its busiest moment's slabs");
    let (first, second) = with_no_more_memory(|| alloc_twice(&root, kept / 2));
    assert!(
        first.is_some(),
        "refused though its trim gave back {kept} bytes of slabs: a second try at once {}",
        if second.is_some() { "succeeded" } else { "failed too" }
    );
    free_some(&root, [first, second]);
    root.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// `OsSource`: not under Miri, which cannot unmap part of a mapping.

#[cfg(all(target_os = "linux", not(miri)))]
mod os {
    use super::*;
    use melon_alloc_heap::OsSource;

    #[test]
    fn os_small_chunks_are_never_out_twice_and_trim_leaves_chunks_out_intact() {
        let mut source = OsSource::new();
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut out: Vec<(NonNull<u8>, usize)> = Vec::new();
        for step in 0..20_000 {
            if out.len() < 300 && rng.below(3) != 0 {
                let chunk = source.acquire(SMALL_CHUNK).unwrap();
                assert_eq!(chunk.as_ptr().addr() % CHUNK_SIZE, 0);
                stamp(chunk, CHUNK_SIZE, step);
                out.push((chunk, step));
            } else if !out.is_empty() {
                let (chunk, tag) = out.swap_remove(rng.below(out.len()));
                assert!(stamped(chunk, CHUNK_SIZE, tag));
                // SAFETY: from `source` as a small chunk, released once.
                unsafe { source.release(chunk, SMALL_CHUNK) };
            }
            if rng.below(1000) == 0 {
                // Discards the free chunks' pages: the chunks out keep their contents.
                source.trim();
                assert!(out.iter().all(|&(chunk, tag)| stamped(chunk, CHUNK_SIZE, tag)));
            }
            let addresses: HashSet<_> = out.iter().map(|(chunk, _)| chunk.as_ptr()).collect();
            assert_eq!(addresses.len(), out.len(), "a chunk handed out twice at step {step}");
        }
        for (chunk, tag) in out {
            assert!(stamped(chunk, CHUNK_SIZE, tag));
            // SAFETY: from `source` as a small chunk, released once.
            unsafe { source.release(chunk, SMALL_CHUNK) };
        }
        source.trim();
        assert_eq!(source.region_bytes(), 0);
    }

    #[test]
    fn os_large_chunks_of_every_alignment_are_aligned_writable_and_kept_only_at_a_chunks() {
        let mut source = OsSource::new();
        for size in (16..(300 << 10)).step_by(4_000) {
            for align in [16, 4096, CHUNK_SIZE, 4 * CHUNK_SIZE, 2 << 20] {
                let want = layout(size, align);
                if want == SMALL_CHUNK {
                    continue;
                }
                let chunk = source.acquire(want).unwrap();
                assert_eq!(chunk.as_ptr().addr() % align, 0, "{size} {align}");
                // SAFETY: the chunk is `size` bytes, handed out to the test.
                unsafe { chunk.as_ptr().write_bytes(0xa5, size) };
                let cached = source.cached_large_bytes();
                // SAFETY: from `source` with `want`, released once.
                unsafe { source.release(chunk, want) };
                if align != CHUNK_SIZE {
                    assert_eq!(source.cached_large_bytes(), cached, "{size} {align} kept");
                }
                assert!(source.cached_large_bytes() <= 2 << 20);
            }
        }
        source.trim();
        assert_eq!(source.cached_large_bytes(), 0);
        assert_eq!(source.acquire(layout(0, CHUNK_SIZE)), None);
    }

    #[test]
    fn os_a_longer_kept_chunk_comes_back_to_its_own_list_and_serves_its_own_length() {
        let mut source = OsSource::new();
        let kept = source.acquire(large(36_864)).unwrap();
        // SAFETY: from `source` with this layout, released once.
        unsafe { source.release(kept, large(36_864)) };
        let (chunk, len) = source.acquire_at_least(large(30_000), 40_000).unwrap();
        assert_eq!((chunk, len), (kept, 36_864));
        // SAFETY: the chunk is `len` bytes, handed out to the test.
        unsafe { chunk.as_ptr().write_bytes(0x11, len) };
        // SAFETY: released with the length it came with, once.
        unsafe { source.release(chunk, large(len)) };
        assert_eq!(source.cached_large_bytes(), 36_864);
        let again = source.acquire(large(36_000)).unwrap();
        assert_eq!(again, kept);
        // SAFETY: the chunk is at least 36,000 bytes, handed out to the test.
        unsafe { again.as_ptr().write_bytes(0x22, 36_000) };
        // SAFETY: from `source` with this layout, released once.
        unsafe { source.release(again, large(36_000)) };
        source.trim();
        assert_eq!(source.cached_large_bytes(), 0);
    }

    #[test]
    fn os_a_limited_engine_keeps_what_it_holds_and_caches_within_its_limit() {
        const LIMIT: usize = 512 << 10;
        let mut engine = Engine::new(OsSource::new(), Some(LIMIT));
        let mut rng = Rng(0x0bad_5eed_0bad_5eed);
        let mut live = Vec::new();
        for _ in 0..5_000 {
            let size = 16 + rng.below(200 << 10);
            if live.len() < 10 && rng.below(2) == 0 {
                live.extend(engine.alloc(size));
            } else if !live.is_empty() {
                let block = live.swap_remove(rng.below(live.len()));
                // SAFETY: an in-use block of `engine`, freed once.
                unsafe { engine.free(block) };
            }
            let held = engine.stats().bytes_held;
            assert_eq!(engine.available(), Some(LIMIT - held));
            assert!(held + engine.source().kept_bytes() <= LIMIT);
        }
        for block in live {
            // SAFETY: an in-use block of `engine`, freed once.
            unsafe { engine.free(block) };
        }
        engine.check().unwrap();
    }
}
