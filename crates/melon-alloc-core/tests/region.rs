//! A pool over a region, as firmware has it: the region carves whole `CHUNK_SIZE` units, and a
//! limit bounds the units taken, whatever the blocks' lengths.

mod support;

use core::alloc::Layout;
use melon_alloc_core::{ChunkSource, Engine, CHUNK_SIZE, MAX_SMALL};
use support::aligned_region as region;

/// Large blocks a little longer than half a chunk each take a whole unit: the limit counts the
/// units, and `bytes_held` says what the region gave.
#[test]
fn a_limit_bounds_the_units_large_blocks_take() {
    let (_buffer, source) = region(16, CHUNK_SIZE);
    let total = source.free_bytes();
    let limit = 4 * CHUNK_SIZE;
    let mut engine = Engine::new(source, Some(limit));
    let blocks: Vec<_> = core::iter::from_fn(|| engine.alloc(MAX_SMALL + 1)).collect();
    let taken = total - engine.source().free_bytes();
    assert_eq!(blocks.len(), 4, "one unit each");
    assert_eq!((taken, engine.stats().bytes_held), (limit, limit));
    engine.check().unwrap();
    for block in blocks {
        // SAFETY: each block came from this engine and is not used again.
        unsafe { engine.free(block) };
    }
    assert_eq!(engine.stats().bytes_held, 0);
    engine.check().unwrap();
}

/// Through `GlobalAlloc`, a layout aligned to a chunk gets a chunk of its own, a whole unit of
/// the region however few bytes it asks for: the limit counts the unit.
#[cfg(feature = "chunk-aligned")]
#[test]
fn a_limit_bounds_the_units_chunk_aligned_layouts_take() {
    use core::alloc::GlobalAlloc;
    use melon_alloc_core::LockedPool;

    let (_buffer, source) = region(16, CHUNK_SIZE);
    let total = source.free_bytes();
    let limit = 2 * CHUNK_SIZE;
    let pool = LockedPool::new(source, Some(limit));
    let layout = Layout::from_size_align(16, CHUNK_SIZE).unwrap();
    // SAFETY: the layout's size is not zero.
    let blocks: Vec<_> = core::iter::from_fn(|| Some(unsafe { GlobalAlloc::alloc(&pool, layout) }))
        .take_while(|block| !block.is_null())
        .collect();
    let taken = total - pool.with(|engine| engine.source().free_bytes());
    assert_eq!(blocks.len(), 2);
    assert_eq!((taken, pool.stats().bytes_held, pool.stats().bytes_lent), (limit, limit, limit));
    for block in blocks {
        // SAFETY: each came from this pool with `layout`, and is not used again.
        unsafe { GlobalAlloc::dealloc(&pool, block, layout) };
    }
    assert_eq!(pool.stats().bytes_held, 0);
    pool.check().unwrap();
}

/// A chunk of no bytes is refused: carving one would split a free run in two that touch and
/// are never merged again.
#[test]
fn a_chunk_of_no_bytes_is_refused_and_the_region_stays_whole() {
    let (_buffer, mut source) = region(8, 2 * CHUNK_SIZE);
    let one = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let first = source.acquire(one).unwrap();
    // The free run now starts one unit past a two-unit boundary.
    assert!(source.acquire(Layout::from_size_align(0, 2 * CHUNK_SIZE).unwrap()).is_none());
    // SAFETY: `first` came from `acquire` with `one` and is not used again.
    unsafe { source.release(first, one) };
    let all = Layout::from_size_align(8 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    assert!(source.acquire(all).is_some(), "the whole region in one run");
}
