//! Hard limits: exactly at the limit and one byte past it, refusals that charge nothing, sizes
//! that overflow, and limits on every level of a cascade of pools.

use core::alloc::Layout;
use core::ptr::NonNull;

use melon_alloc_core::{CHUNK_SIZE, MAX_SMALL};
use melon_alloc_heap::{HeapPool, Pool};

/// A large request whose chunk, header included, is exactly `chunks` chunks long.
fn chunks_worth(chunks: usize) -> usize {
    chunks * CHUNK_SIZE - 64
}

/// Allocates blocks of `size` until the pool refuses, and returns them.
fn fill(pool: &Pool, size: usize) -> Vec<NonNull<u8>> {
    let mut blocks = Vec::new();
    while let Some(block) = pool.alloc(size) {
        blocks.push(block);
        assert!(blocks.len() < 1 << 20, "the pool never refused");
    }
    blocks
}

/// Frees every block through `pool`.
fn free_all(pool: &Pool, blocks: Vec<NonNull<u8>>) {
    for block in blocks {
        // SAFETY: each block came from `pool` and is freed once.
        unsafe { pool.try_free(block) }.unwrap();
    }
}

/// Asserts that `attempt` fails and leaves every pool in `family` as it was.
fn assert_refused_without_charge(family: &[&Pool], attempt: impl FnOnce() -> bool, what: &str) {
    let before: Vec<_> = family.iter().map(|pool| (pool.stats(), pool.available())).collect();
    assert!(!attempt(), "{what} succeeded");
    let after: Vec<_> = family.iter().map(|pool| (pool.stats(), pool.available())).collect();
    assert_eq!(after, before, "{what} changed a pool");
    for pool in family {
        pool.check().unwrap();
    }
}

#[test]
fn a_limit_of_n_chunks_holds_n_large_blocks_of_a_chunk_each() {
    for n in [1, 2, 5] {
        for (limit, fits) in [
            (n * CHUNK_SIZE, n),
            (n * CHUNK_SIZE - 1, n - 1),
            (n * CHUNK_SIZE + 1, n),
            (n * CHUNK_SIZE + CHUNK_SIZE - 1, n),
        ] {
            let pool = HeapPool::with_limit(limit);
            let blocks = fill(&pool, chunks_worth(1));
            assert_eq!(blocks.len(), fits, "limit {limit}");
            assert_eq!(pool.available(), Some(limit - fits * CHUNK_SIZE));
            assert_eq!(pool.stats().bytes_held, fits * CHUNK_SIZE);
            pool.check().unwrap();
            free_all(&pool, blocks);
            assert_eq!(pool.available(), Some(limit));
        }
    }
}

#[test]
fn a_limit_of_n_chunks_holds_n_chunks_of_small_blocks() {
    for n in [1, 2, 5] {
        for (limit, fits) in [(n * CHUNK_SIZE, n), (n * CHUNK_SIZE - 1, n - 1)] {
            let pool = HeapPool::with_limit(limit);
            let blocks = fill(&pool, MAX_SMALL);
            assert_eq!(pool.stats().chunks, fits, "limit {limit}");
            assert_eq!(pool.available(), Some(limit - fits * CHUNK_SIZE));
            // Once full, no class can get a chunk, but a large block that fits the rest can.
            assert_eq!(pool.alloc(16), None);
            let rest = limit - fits * CHUNK_SIZE;
            if rest >= 64 + 16 {
                // The chunk of a large block is its size rounded up to 16, plus the header.
                let tail = pool.alloc((rest - 64) & !15).unwrap();
                assert!(pool.available().unwrap() < 16);
                // SAFETY: from `pool`, freed once.
                unsafe { pool.free(tail) };
            }
            free_all(&pool, blocks);
            pool.check().unwrap();
        }
    }
}

#[test]
fn a_large_block_exactly_at_the_limit_fits_and_one_byte_more_does_not() {
    let limit = 7 * CHUNK_SIZE + 48;
    let pool = HeapPool::with_limit(limit);
    assert_refused_without_charge(&[&pool], || pool.alloc(limit - 64 + 1).is_some(), "one past");
    let block = pool.alloc(limit - 64).unwrap();
    assert_eq!(pool.available(), Some(0));
    assert_refused_without_charge(&[&pool], || pool.alloc(0).is_some(), "a block when full");
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(block) };
    assert_eq!(pool.available(), Some(limit));
}

#[test]
fn a_refused_request_charges_nothing() {
    let limit = 10 * CHUNK_SIZE;
    let pool = HeapPool::with_limit(limit);
    // Seven chunks with blocks in use, none of them empty, so nothing can be trimmed.
    let mut blocks = Vec::new();
    for (i, size) in [16, 64, 256, 1024, 2048, 100, 200].into_iter().enumerate() {
        blocks.push(pool.alloc(size).unwrap());
        assert_eq!(pool.stats().chunks, i + 1);
    }
    assert_eq!(pool.available(), Some(3 * CHUNK_SIZE));
    let family = [&*pool];
    assert_refused_without_charge(&family, || pool.alloc(chunks_worth(3) + 1).is_some(), "large");
    assert_refused_without_charge(
        &family,
        || pool.alloc_zeroed(chunks_worth(4)).is_some(),
        "zeroed",
    );
    let layout = Layout::from_size_align(3 * CHUNK_SIZE - 4096, 8192).unwrap();
    assert_refused_without_charge(&family, || pool.alloc_layout(layout).is_some(), "aligned");
    // SAFETY: `blocks[0]` is in use in `pool`; a failed realloc leaves it so.
    let grow = || unsafe { pool.realloc(blocks[0], chunks_worth(5)) }.is_some();
    assert_refused_without_charge(&family, grow, "realloc");
    // Fill the rest, then even a block of a class that already has a chunk is refused once that
    // chunk is full.
    let big = pool.alloc(chunks_worth(3)).unwrap();
    assert_eq!(pool.available(), Some(0));
    let more = fill(&pool, 2048);
    assert_eq!(more.len(), 6, "a 2048-byte chunk holds seven blocks, one already in use");
    assert_refused_without_charge(&family, || pool.alloc(2048).is_some(), "full class");
    assert_refused_without_charge(&family, || pool.alloc(300).is_some(), "new class");
    free_all(&pool, more);
    free_all(&pool, blocks);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(big) };
    pool.check().unwrap();
}

#[test]
fn sizes_that_overflow_return_none_and_charge_nothing() {
    let sizes = [
        usize::MAX,
        usize::MAX - 10,
        usize::MAX - 63,
        usize::MAX - 64 - 14,
        usize::MAX / 2,
        isize::MAX as usize,
        isize::MAX as usize + 1,
        isize::MAX as usize - 63,
        isize::MAX as usize - CHUNK_SIZE,
        1 << 60,
    ];
    let root = HeapPool::with_limit(1 << 20);
    let child = root.child();
    let keep = child.alloc(100).unwrap();
    let family = [&*root, &*child];
    // Under Miri, which interprets every check of the family, every other size and two
    // alignments.
    let (step, aligns): (_, &[usize]) =
        if cfg!(miri) { (2, &[16, 8192]) } else { (1, &[1, 16, 4096, 8192]) };
    for size in sizes.into_iter().step_by(step) {
        for pool in family {
            assert_refused_without_charge(&family, || pool.alloc(size).is_some(), "alloc");
            assert_refused_without_charge(&family, || pool.alloc_zeroed(size).is_some(), "zeroed");
            for &align in aligns {
                if let Ok(layout) = Layout::from_size_align(size, align) {
                    let attempt = || pool.alloc_layout(layout).is_some();
                    assert_refused_without_charge(&family, attempt, "layout");
                }
            }
        }
        // SAFETY: `keep` is in use in `child`; a failed realloc leaves it so.
        let attempt = || unsafe { child.realloc(keep, size) }.is_some();
        assert_refused_without_charge(&family, attempt, "realloc");
    }
    // A pool without a limit refuses the sizes no allocator could serve, without panicking.
    let unlimited = HeapPool::new();
    for size in [usize::MAX, usize::MAX - 10, isize::MAX as usize, isize::MAX as usize - 63] {
        assert_refused_without_charge(&[&unlimited], || unlimited.alloc(size).is_some(), "alloc");
    }
    // SAFETY: from `child`, freed once.
    unsafe { child.free(keep) };
}

#[test]
fn after_freeing_everything_half_the_limit_and_then_all_of_it_fits_again() {
    // Under Miri, which interprets every allocation, a smaller limit to fill.
    let limit = if cfg!(miri) { 16 } else { 64 } * CHUNK_SIZE;
    let pool = HeapPool::with_limit(limit);
    let mut blocks = Vec::new();
    // Blocks of many classes and large ones, until the limit refuses.
    let mut i = 0usize;
    loop {
        let size = match i % 5 {
            4 => MAX_SMALL + 1 + i,
            _ => (i * 37) % MAX_SMALL,
        };
        match pool.alloc(size) {
            Some(block) => blocks.push(block),
            None => break,
        }
        i += 1;
    }
    assert!(pool.available().unwrap() < CHUNK_SIZE + MAX_SMALL + 1 + i);
    free_all(&pool, blocks);
    assert_eq!(pool.stats().live_blocks, 0);
    let half = pool.alloc(limit / 2).unwrap();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(half) };
    // A small block leaves its empty chunk cached, as the head of its class.
    let small = pool.alloc(64).unwrap();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(small) };
    // The cached empty chunks are given back before the limit refuses, so the whole limit can
    // be taken by one block.
    assert!(pool.stats().chunks > 0, "the test wants cached chunks");
    let whole = pool.alloc(limit - 64).unwrap();
    assert_eq!(pool.stats().chunks, 0);
    assert_eq!(pool.available(), Some(0));
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(whole) };
    assert_eq!(pool.available(), Some(limit));
    pool.check().unwrap();
}

#[test]
fn after_a_reset_every_kept_chunk_is_given_back_when_the_limit_needs_it() {
    let limit = 32 * CHUNK_SIZE;
    let mut pool = HeapPool::with_limit(limit);
    let blocks = fill(&pool, 1000);
    assert_eq!(pool.available(), Some(0));
    drop(blocks);
    pool.reset();
    assert_eq!(pool.stats().chunks, 32);
    let whole = pool.alloc(limit - 64).unwrap();
    assert_eq!(pool.stats().chunks, 0);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(whole) };
    pool.check().unwrap();
}

#[test]
fn an_empty_cached_chunk_is_given_back_before_refusing() {
    let limit = 4 * CHUNK_SIZE;
    let pool = HeapPool::with_limit(limit);
    let live = pool.alloc(64).unwrap();
    for size in [16, 128, 512] {
        let block = pool.alloc(size).unwrap();
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    assert_eq!(pool.stats().chunks, 4);
    assert_eq!(pool.available(), Some(0));
    let large = pool.alloc(chunks_worth(3)).unwrap();
    assert_eq!(pool.stats().chunks, 1);
    assert_eq!(pool.available(), Some(0));
    // A request that cannot fit even after trimming is refused, and takes nothing.
    assert_refused_without_charge(&[&pool], || pool.alloc(100).is_some(), "over the limit");
    // SAFETY: both blocks are from `pool`, freed once.
    unsafe { pool.free(large) };
    // SAFETY: as above.
    unsafe { pool.free(live) };
}

#[test]
fn a_limit_of_zero_refuses_everything() {
    let root = HeapPool::with_limit(0);
    assert_eq!(root.available(), Some(0));
    let child = root.child();
    for size in [0, 1, 100, MAX_SMALL, 100_000] {
        assert_refused_without_charge(&[&root], || root.alloc(size).is_some(), "root");
        assert_refused_without_charge(&[&root, &child], || child.alloc(size).is_some(), "child");
    }
    let unlimited = HeapPool::new();
    let zero = unlimited.child_with_limit(0);
    assert_refused_without_charge(&[&unlimited, &zero], || zero.alloc(0).is_some(), "child 0");
}

#[test]
fn dropping_a_child_restores_the_parent_exactly() {
    let limit = 200 * CHUNK_SIZE;
    let root = HeapPool::with_limit(limit);
    let own: Vec<_> = (0..50).map(|i| root.alloc(i * 40).unwrap()).collect();
    let (before, available) = (root.stats(), root.available());
    for child_limit in [None, Some(60 * CHUNK_SIZE)] {
        let child = match child_limit {
            Some(limit) => root.child_with_limit(limit),
            None => root.child(),
        };
        let grandchild = child.child_with_limit(5 * CHUNK_SIZE);
        let mut blocks = Vec::new();
        // Under Miri, which interprets every allocation, every sixth block of the same spread of
        // sizes, and larger blocks in the grandchild.
        let (step, size) = if cfg!(miri) { (6, 3000) } else { (1, 700) };
        for i in (0..300).step_by(step) {
            blocks.push(child.alloc(i * 7).unwrap());
        }
        let in_grandchild = fill(&grandchild, size);
        assert_eq!(grandchild.available(), Some(0));
        assert_eq!(child.stats().bytes_lent, 5 * CHUNK_SIZE);
        assert!(root.available() < available);
        // Some blocks freed, others left for the drop to take back.
        free_all(&child, blocks.split_off(blocks.len() / 2));
        free_all(&grandchild, in_grandchild);
        drop(grandchild);
        assert_eq!(child.stats().bytes_lent, 0);
        drop(child);
        let mut after = root.stats();
        assert!(after.peak_bytes_held > before.peak_bytes_held);
        after.peak_bytes_held = before.peak_bytes_held;
        assert_eq!(after, before);
        assert_eq!(root.available(), available);
        root.check().unwrap();
    }
    free_all(&root, own);
}

#[test]
fn a_grandchild_is_refused_by_whichever_ancestor_runs_out_first() {
    // The grandparent's limit is the tightest.
    let root = HeapPool::with_limit(4 * CHUNK_SIZE);
    let root_blocks = [root.alloc(16).unwrap(), root.alloc(2048).unwrap()];
    let child = root.child_with_limit(100 * CHUNK_SIZE);
    let grandchild = child.child_with_limit(100 * CHUNK_SIZE);
    let first = grandchild.alloc(chunks_worth(1)).unwrap();
    let second = grandchild.alloc(chunks_worth(1)).unwrap();
    assert_eq!(root.available(), Some(0));
    assert_eq!(child.available(), Some(98 * CHUNK_SIZE));
    assert_eq!(grandchild.available(), Some(98 * CHUNK_SIZE));
    let family = [&*root, &*child, &*grandchild];
    assert_refused_without_charge(&family, || grandchild.alloc(1).is_some(), "by grandparent");
    assert_refused_without_charge(&family, || child.alloc(1).is_some(), "child by parent");
    // SAFETY: from `grandchild`, freed once.
    unsafe { grandchild.free(first) };
    assert_eq!(root.available(), Some(CHUNK_SIZE));
    let third = grandchild.alloc(1).unwrap();
    assert_eq!(root.available(), Some(0));
    for block in [second, third] {
        // SAFETY: from `grandchild`, freed once.
        unsafe { grandchild.free(block) };
    }
    drop(grandchild);
    drop(child);
    free_all(&root, root_blocks.to_vec());
    root.check().unwrap();

    // The parent's limit is the tightest.
    let root = HeapPool::with_limit(100 * CHUNK_SIZE);
    let child = root.child_with_limit(3 * CHUNK_SIZE);
    let grandchild = child.child_with_limit(100 * CHUNK_SIZE);
    let blocks = fill(&grandchild, chunks_worth(1));
    assert_eq!(blocks.len(), 3);
    let family = [&*root, &*child, &*grandchild];
    assert_refused_without_charge(&family, || grandchild.alloc(0).is_some(), "by parent");
    assert_eq!(root.available(), Some(97 * CHUNK_SIZE));
    free_all(&grandchild, blocks);

    // Its own limit is the tightest.
    let own = child.child_with_limit(2 * CHUNK_SIZE);
    // Under Miri, which interprets every allocation, larger blocks fill the two chunks.
    let size = if cfg!(miri) { 2000 } else { 100 };
    let blocks = fill(&own, size);
    assert_eq!(own.stats().chunks, 2);
    assert_eq!(child.available(), Some(CHUNK_SIZE));
    let family = [&*root, &*child, &*own];
    assert_refused_without_charge(&family, || own.alloc(size).is_some(), "by itself");
    free_all(&own, blocks);
}

#[test]
fn a_middle_pool_gives_back_its_cached_chunk_so_a_grandchild_fits() {
    let root = HeapPool::with_limit(2 * CHUNK_SIZE);
    let child = root.child();
    // The child keeps an empty chunk cached after its only block goes.
    let block = child.alloc(64).unwrap();
    // SAFETY: from `child`, freed once.
    unsafe { child.free(block) };
    assert_eq!(child.stats().chunks, 1);
    let grandchild = child.child();
    let first = grandchild.alloc(chunks_worth(1)).unwrap();
    assert_eq!(root.available(), Some(0));
    // The root is full; the child's cached chunk goes back to it so this request can be served.
    let second = grandchild.alloc(chunks_worth(1)).unwrap();
    assert_eq!(child.stats().chunks, 0);
    assert_eq!(root.available(), Some(0));
    for block in [first, second] {
        // SAFETY: from `grandchild`, freed once.
        unsafe { grandchild.free(block) };
    }
    for pool in [&*root, &*child, &*grandchild] {
        pool.check().unwrap();
    }
}

#[test]
fn a_descendants_chunks_count_against_every_ancestor() {
    let root = HeapPool::with_limit(1 << 20);
    let child = root.child_with_limit(1 << 19);
    let grandchild = child.child_with_limit(1 << 18);
    let small = grandchild.alloc(100).unwrap();
    let span = 64 + 50_000;
    let large = grandchild.alloc(span - 64).unwrap();
    let held = CHUNK_SIZE + span;
    assert_eq!(grandchild.stats().bytes_held, held);
    assert_eq!(grandchild.stats().chunks, 1);
    assert_eq!(grandchild.stats().bytes_lent, 0);
    for (pool, limit) in [(&*child, 1 << 19), (&*root, 1 << 20)] {
        let stats = pool.stats();
        assert_eq!(stats.bytes_held, held);
        assert_eq!(stats.bytes_lent, held);
        assert_eq!(stats.chunks, 0);
        assert_eq!(stats.live_blocks, 0);
        assert_eq!(pool.available(), Some(limit - held));
    }
    assert_eq!(grandchild.available(), Some((1 << 18) - held));
    // SAFETY: from `grandchild`, freed once.
    unsafe { grandchild.free(large) };
    assert_eq!(root.stats().bytes_held, CHUNK_SIZE);
    // SAFETY: from `grandchild`, freed once.
    unsafe { grandchild.free(small) };
    assert_eq!(grandchild.trim(), CHUNK_SIZE);
    assert_eq!(root.stats().bytes_held, 0);
    assert_eq!(child.stats().bytes_held, 0);
}

/// A limited pool over [`OsSource`] counts the whole pages each large block maps: blocks aligned
/// to a chunk through `GlobalAlloc`, and large blocks, fill the limit with their pages and no
/// more. (Not under Miri, which takes the source's unmapping of part of a mapping for a partial
/// deallocation.)
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_limit_over_os_source_counts_the_pages_large_blocks_map() {
    use core::alloc::GlobalAlloc;
    use melon_alloc_heap::{LockedHeapPool, OsSource};

    let page = rustix::param::page_size();
    if page > CHUNK_SIZE {
        println!("skipped: pages of {page} bytes, longer than a chunk, which the granule stays");
        return;
    }
    const LIMIT: usize = 1 << 20;
    let pool = LockedHeapPool::new(OsSource::new(), Some(LIMIT));
    // 16 bytes aligned to a chunk: a mapping of one page each.
    let aligned = Layout::from_size_align(16, CHUNK_SIZE).unwrap();
    let mut blocks = Vec::new();
    loop {
        // SAFETY: the layout has a non-zero size.
        let block = unsafe { GlobalAlloc::alloc(&pool, aligned) };
        if block.is_null() {
            break;
        }
        blocks.push(block);
        assert!(blocks.len() <= LIMIT / page, "{} one-page blocks within {LIMIT}", blocks.len());
    }
    assert_eq!(blocks.len(), LIMIT / page);
    assert_eq!(pool.stats().bytes_held, LIMIT);
    for block in blocks {
        // SAFETY: each block came from `pool` with `aligned`, and is freed once.
        unsafe { GlobalAlloc::dealloc(&pool, block, aligned) };
    }
    // A large block just past the small classes: its chunk, header included, maps whole pages.
    let size = MAX_SMALL + 1;
    let span = (64 + size).next_multiple_of(page);
    let mut blocks = Vec::new();
    while let Some(block) = pool.alloc(size) {
        blocks.push(block);
    }
    assert_eq!(blocks.len(), LIMIT / span);
    assert_eq!(pool.stats().bytes_held, blocks.len() * span);
    for block in blocks {
        // SAFETY: each block came from `pool`, and is freed once.
        unsafe { pool.try_free(block) }.unwrap();
    }
    pool.with(|engine| engine.check()).unwrap();
}
