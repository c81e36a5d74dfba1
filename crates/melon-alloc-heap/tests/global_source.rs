//! The root pools' source: its cache of freed large chunks, seen through the source itself and
//! through a pool.

use core::alloc::Layout;

use core::time::Duration;

use melon_alloc_core::{ChunkSource, Engine, CHUNK_SIZE, MAX_SMALL, SMALL_CHUNK};
use melon_alloc_heap::{GlobalSource, HeapPool};

fn large(size: usize) -> Layout {
    Layout::from_size_align(size, CHUNK_SIZE).unwrap()
}

#[test]
fn a_freed_large_chunk_serves_the_next_request_of_a_nearby_length() {
    let mut source = GlobalSource::new();
    let first = source.acquire(large(20_000)).unwrap();
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(first, large(20_000)) };
    // 20,000 bytes round up to 20,480, an eighth of 16 KiB past 16 KiB; 20,400 does too.
    assert_eq!(source.cached_large_bytes(), 20_480);
    let second = source.acquire(large(20_400)).unwrap();
    assert_eq!(second, first);
    assert_eq!(source.cached_large_bytes(), 0);
    // SAFETY: the chunk holds the 20,480 bytes it was allocated with, so 20,400 are writable.
    unsafe { second.as_ptr().write_bytes(0xab, 20_400) };
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(second, large(20_400)) };
    // A length that rounds differently gets a chunk of its own.
    let other = source.acquire(large(30_000)).unwrap();
    assert_ne!(other, first);
    assert_eq!(source.cached_large_bytes(), 20_480);
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(other, large(30_000)) };
    source.trim();
    assert_eq!(source.cached_large_bytes(), 0);
}

#[test]
fn the_cache_is_bounded_and_skips_long_chunks() {
    let mut source = GlobalSource::new();
    let chunks: Vec<_> = (0..40).map(|_| source.acquire(large(64 << 10)).unwrap()).collect();
    for &chunk in &chunks {
        // SAFETY: from `source` with this layout, each released once.
        unsafe { source.release(chunk, large(64 << 10)) };
    }
    // At most 2 MiB: 32 chunks of 64 KiB.
    assert_eq!(source.cached_large_bytes(), 2 << 20);
    source.trim();
    let long = source.acquire(large(1 << 20)).unwrap();
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(long, large(1 << 20)) };
    assert_eq!(source.cached_large_bytes(), 0, "chunks over 256 KiB are not kept");
}

#[test]
fn a_source_without_a_cache_keeps_nothing() {
    let mut source = GlobalSource::without_large_cache();
    let chunk = source.acquire(large(20_000)).unwrap();
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(chunk, large(20_000)) };
    assert_eq!(source.cached_large_bytes(), 0);
}

#[test]
fn pools_reuse_large_blocks_and_trim_gives_the_cache_back() {
    let pool = HeapPool::new();
    // With its 64-byte header, a chunk of 13,224 bytes, which rounds up to 13,312; so does the
    // chunk for 48 bytes more.
    let size = MAX_SMALL + 5_000;
    let first = pool.alloc(size).unwrap();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(first) };
    let again = pool.alloc(size + 48).unwrap();
    assert_eq!(again, first, "the freed chunk serves a nearby length");
    // SAFETY: the block holds at least `size + 48` bytes.
    unsafe { again.as_ptr().write_bytes(0x5a, size + 48) };
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(again) };
    assert_eq!(pool.stats().bytes_held, 0, "a cached chunk is not held by the pool");
    pool.check().unwrap();
    pool.trim();
    let limited = HeapPool::with_limit(1 << 20);
    let block = limited.alloc(size).unwrap();
    // SAFETY: from `limited`, freed once.
    unsafe { limited.free(block) };
    assert_eq!(limited.available(), Some(1 << 20));
    limited.check().unwrap();
}

#[test]
fn a_limited_root_reuses_a_freed_large_chunk() {
    let limited = HeapPool::with_limit(1 << 20);
    let size = 40 << 10;
    let first = limited.alloc(size).unwrap();
    // SAFETY: from `limited`, freed once.
    unsafe { limited.free(first) };
    assert_eq!(limited.available(), Some(1 << 20), "a kept chunk is not held");
    let again = limited.alloc(size).unwrap();
    assert_eq!(again, first, "the freed chunk is kept and serves the same length");
    // SAFETY: from `limited`, freed once.
    unsafe { limited.free(again) };
    limited.check().unwrap();
}

/// An engine with a limit over a root's source: after every step, the bytes the engine holds
/// and the bytes the source keeps for reuse stay within the limit together.
#[test]
fn what_a_limited_engine_holds_and_its_source_keeps_stay_within_the_limit() {
    const LIMIT: usize = 256 << 10;
    let mut engine = Engine::new(GlobalSource::new(), Some(LIMIT));
    let within = |engine: &Engine<GlobalSource>| {
        let (held, kept) = (engine.stats().bytes_held, engine.source().kept_bytes());
        assert!(held + kept <= LIMIT, "held {held} + kept {kept} past the limit");
        kept
    };
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut live = Vec::new();
    let mut most_kept = 0;
    for _ in 0..if cfg!(miri) { 200 } else { 5_000 } {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = (16 << 10) + (rng % (48 << 10)) as usize;
        if live.len() < 6 && rng >> 63 == 0 {
            // Refused once the limit is reached: that is not a failure of the test.
            live.extend(engine.alloc(size));
        } else if !live.is_empty() {
            let block = live.swap_remove((rng >> 32) as usize % live.len());
            // SAFETY: an in-use block of `engine`, freed once.
            unsafe { engine.free(block) };
        }
        most_kept = most_kept.max(within(&engine));
    }
    assert!(most_kept > 0, "the source kept some chunks for reuse");
    for block in live {
        // SAFETY: an in-use block of `engine`, freed once.
        unsafe { engine.free(block) };
        within(&engine);
    }
    engine.check().unwrap();
}

#[test]
fn a_request_takes_a_kept_chunk_a_little_longer_rather_than_new_memory() {
    let mut source = GlobalSource::new();
    let kept = source.acquire(large(24_576)).unwrap();
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(kept, large(24_576)) };
    // 21,000 bytes round up to 22,528, whose list is empty; 24,576 is the next length but one.
    let (chunk, len) = source.acquire_at_least(large(21_000), 26_000).unwrap();
    assert_eq!((chunk, len), (kept, 24_576), "the kept chunk, with its own length");
    assert_eq!(source.cached_large_bytes(), 0);
    // SAFETY: from `source`, released with the length it came with.
    unsafe { source.release(chunk, large(len)) };
    assert_eq!(source.cached_large_bytes(), 24_576, "back on its own list");
    let (fresh, len) = source.acquire_at_least(large(21_000), 24_000).unwrap();
    assert_ne!(fresh, kept, "no kept chunk longer than the most asked for");
    assert_eq!(len, 21_000);
    // SAFETY: from `source` with this length, not used again.
    unsafe { source.release(fresh, large(len)) };
    source.trim();
}

#[test]
fn a_kept_chunk_of_a_small_chunks_length_serves_no_longer_request() {
    let mut source = GlobalSource::new();
    // 16,000 bytes round up to 16,384, `CHUNK_SIZE`: kept on that length's list.
    let kept = source.acquire(large(16_000)).unwrap();
    // SAFETY: from `source` with this layout, not used again.
    unsafe { source.release(kept, large(16_000)) };
    assert_eq!(source.cached_large_bytes(), CHUNK_SIZE);
    // Handed out with its length, it would come back with a small chunk's layout and be taken
    // for one: a 15,000-byte request gets new memory instead.
    let (fresh, len) = source.acquire_at_least(large(15_000), 20_000).unwrap();
    assert_ne!(fresh, kept);
    assert_eq!(len, 15_000);
    assert_eq!(source.cached_large_bytes(), CHUNK_SIZE, "the kept chunk stays kept");
    // SAFETY: from `source` with this length, not used again.
    unsafe { source.release(fresh, large(len)) };
    source.trim();
}

/// A kept chunk a little longer than a large block needs serves it: the engine records the
/// chunk's own length as the block's span (its usable size and what it holds), and gives the
/// chunk back with that length, onto its own list.
#[test]
fn an_engine_records_a_longer_kept_chunk_as_its_span() {
    let mut engine = Engine::new(GlobalSource::new(), None);
    // A large block's chunk is its size and a 64-byte header: 24,576 bytes, a list of its own.
    let first = engine.alloc(24_576 - 64).unwrap();
    // SAFETY: an in-use block of `engine`, freed once.
    unsafe { engine.free(first) };
    assert_eq!(engine.source().kept_bytes(), 24_576);
    // 21,008 bytes with the header round up to 22,528, whose list is empty.
    let second = engine.alloc(21_008 - 64).unwrap();
    assert_eq!(second, first, "the kept chunk serves the shorter block");
    // SAFETY: an in-use block of `engine`.
    assert_eq!(unsafe { engine.usable_size(second) }, 24_576 - 64);
    assert_eq!(engine.stats().bytes_held, 24_576);
    assert_eq!(engine.source().kept_bytes(), 0);
    // SAFETY: an in-use block of `engine`, freed once.
    unsafe { engine.free(second) };
    assert_eq!(engine.source().kept_bytes(), 24_576, "back on its own list");
    engine.check().unwrap();
}

/// While one small chunk is out, a root source cannot give its slab or region back, so a trim
/// lets the system take the pages of the free chunks instead (all but each one's first page,
/// which keeps its link): a request's pool that grew and went leaves no resident memory behind
/// once trimmed, though the root keeps a block. The chunks still serve again, their discarded
/// pages zeroed.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_trim_discards_the_pages_of_free_chunks_while_another_is_out() {
    trim_discards_free_chunks_while_one_is_out(GlobalSource::new());
    trim_discards_free_chunks_while_one_is_out(melon_alloc_heap::OsSource::new());
}

#[cfg(all(target_os = "linux", not(miri)))]
fn trim_discards_free_chunks_while_one_is_out(mut source: impl ChunkSource) {
    let kept = source.acquire(SMALL_CHUNK).unwrap();
    let freed: Vec<_> = (0..10).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    for &chunk in &freed {
        // SAFETY: the chunk is handed out and `CHUNK_SIZE` bytes long.
        unsafe { chunk.as_ptr().write_bytes(0xa5, CHUNK_SIZE) };
        // SAFETY: the chunk came from `source` as a small chunk and is not used again.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
    // What an engine's trim asks of its source.
    source.trim();
    source.discard_free();
    let page = rustix::param::page_size();
    let mut again: Vec<_> = (0..10).map(|_| source.acquire(SMALL_CHUNK).unwrap()).collect();
    for &chunk in &again {
        // SAFETY: the chunk is handed out and `CHUNK_SIZE` bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(chunk.as_ptr(), CHUNK_SIZE) };
        // A page as long as a chunk holds the link: such a chunk keeps its bytes.
        let discarded = bytes.get(page..).unwrap_or_default();
        assert!(discarded.iter().all(|&b| b == 0), "the pages after the first were discarded");
    }
    let mut before = freed.clone();
    before.sort();
    again.sort();
    assert_eq!(before, again);
    for chunk in again.into_iter().chain([kept]) {
        // SAFETY: as above.
        unsafe { source.release(chunk, SMALL_CHUNK) };
    }
}

#[test]
fn each_thread_keeps_one_stash_stripe_and_two_threads_have_two() {
    let here = GlobalSource::stash_stripe().expect("the global source names stripes");
    assert_eq!(GlobalSource::stash_stripe(), Some(here));
    let there = std::thread::spawn(GlobalSource::stash_stripe).join().unwrap();
    assert_ne!(there, Some(here));
}

#[test]
fn a_sync_pool_keeps_a_dropped_childs_chunk_for_the_next_child() {
    let root = melon_alloc_heap::SyncPool::new(GlobalSource::new(), None);
    let child = root.child();
    let block = child.alloc(64).unwrap();
    let chunk = block.as_ptr() as usize / CHUNK_SIZE;
    drop(child);
    let stats = root.stats();
    assert_eq!((stats.bytes_lent, stats.bytes_held), (0, CHUNK_SIZE));
    let next = root.child();
    assert_eq!(next.alloc(64).unwrap().as_ptr() as usize / CHUNK_SIZE, chunk);
    drop(next);
    assert_eq!(root.with(|engine| engine.trim()), CHUNK_SIZE);
    assert_eq!(root.stats().bytes_held, 0);
}

#[test]
fn a_sync_child_carries_no_stripes_of_its_own() {
    // A child's stash kind is the empty one: making a child costs its engine and lock alone.
    let lone = core::mem::size_of::<melon_alloc_core::LockedPool<GlobalSource>>();
    let child = core::mem::size_of::<melon_alloc_heap::SyncChild<'static>>();
    let stripes = core::mem::size_of::<melon_alloc_core::Stripes>();
    assert!(stripes >= 8 * 64, "{stripes} bytes of stripes");
    assert!(child + stripes <= lone + 64, "a child of {child} bytes, a root of {lone}");
    #[cfg(target_arch = "x86_64")]
    assert!(child < 1024, "a child of {child} bytes");
    assert!(core::mem::align_of::<melon_alloc_heap::SyncChild<'static>>() < 64);
}

/// A `SyncPool` root keeps the chunks its children give back in its stripes, counted among its
/// `chunks`; now and then it finds no chunk lent but those, and gives them back to its source,
/// which then keeps what the busiest moment needed, and, once children have needed less for a
/// second, only its newest slab, as it does for a `HeapPool`. A trim gives back the rest.
#[test]
fn a_sync_pool_gives_back_a_bursts_slabs_a_second_after_it() {
    /// The largest slab, and the newest once the source has grown to it.
    const NEWEST: usize = 2 << 20;
    let root = melon_alloc_heap::SyncPool::new(GlobalSource::new(), None);
    let slab_bytes = || root.with(|engine| engine.source().slab_bytes());
    let child = root.child();
    assert!(child.alloc(100).is_some());
    drop(child);
    let stats = root.stats();
    assert_eq!((stats.chunks, stats.bytes_held, stats.bytes_lent), (1, CHUNK_SIZE, 0));
    // A chunk of its own for each child's large block, a chunk of pages for its small one.
    let burst: Vec<_> = (0..160)
        .map(|_| {
            let child = root.child();
            assert!(child.alloc(6000).is_some() && child.alloc(100).is_some());
            child
        })
        .collect();
    assert!(slab_bytes() >= 2 * NEWEST, "{} bytes of slabs", slab_bytes());
    // The second of lighter loads starts at the first look after the burst, no sooner.
    let burst_over = std::time::Instant::now();
    drop(burst);
    // Twice the chunks a stripe keeps between two looks of the root.
    let light_load = || {
        for _ in 0..128 {
            let child = root.child();
            assert!(child.alloc(100).is_some());
        }
    };
    light_load();
    let stats = root.stats();
    assert_eq!((stats.chunks * CHUNK_SIZE, stats.bytes_lent), (stats.bytes_held, 0));
    // A machine slow enough (Miri) to spend the second on the light load has forgotten the
    // burst already, as it should.
    if burst_over.elapsed() < melon_alloc_heap::KEEP_SLABS_FOR {
        assert!(slab_bytes() > NEWEST, "the busiest moment's slabs went back within a second");
    }
    std::thread::sleep(melon_alloc_heap::KEEP_SLABS_FOR + Duration::from_millis(100));
    light_load();
    assert_eq!(slab_bytes(), NEWEST, "a second of lighter load later");
    root.with(|engine| engine.trim());
    assert_eq!(slab_bytes(), 0);
    assert_eq!((root.stats().chunks, root.stats().bytes_held), (0, 0));
}

/// A `SyncPool` moved after its first allocation still frees its blocks, but its chunks name
/// the address it had, and `check` reports them as another pool's.
#[test]
fn a_sync_pool_moved_after_its_first_allocation_checks_as_another_pools() {
    let root = melon_alloc_heap::SyncPool::new(GlobalSource::new(), None);
    let block = root.alloc(64).unwrap();
    root.check().unwrap();
    let moved = Box::new(root);
    let error = moved.check().unwrap_err();
    assert_eq!(error.problem, melon_alloc_heap::Problem::WrongOwner, "{error:?}");
    // SAFETY: the block came from the pool, which moved, and is freed once.
    unsafe { moved.free(block) };
    assert_eq!(moved.stats().live_blocks, 0);
}
