//! A pool over a region, as firmware has it: the region carves whole `CHUNK_SIZE` units, and a
//! limit bounds the units taken, whatever the blocks' lengths.

mod support;

use core::alloc::Layout;
use melon_alloc_core::{ChunkSource, Engine, CHUNK_SIZE, MAX_SMALL};
use support::aligned_region as region;

/// What the shrink tests keep of a large block: more than half of one unit, so that the block
/// stays in its unit rather than move to a size class, whatever the chunk size.
const KEPT: usize = CHUNK_SIZE * 5 / 8;

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

/// A large block shrunk to a unit gives the region back the units it no longer needs, in place
/// and with its contents, though the region had nothing left to move it to: a later
/// allocation of that length then fits.
#[test]
fn a_large_block_shrunk_in_place_gives_its_tail_back() {
    let (_buffer, source) = region(7, CHUNK_SIZE);
    let mut engine = Engine::new(source, None);
    let first = engine.alloc(4 * CHUNK_SIZE - 64).unwrap();
    let filler = engine.alloc(2 * CHUNK_SIZE).unwrap();
    // The region is empty now: the first block cannot move.
    assert_eq!(engine.source().free_bytes(), 0);
    // SAFETY: the block holds at least `4 * CHUNK_SIZE - 64` bytes.
    unsafe { first.as_ptr().write_bytes(0x5a, 4 * CHUNK_SIZE - 64) };
    // SAFETY: the block came from this engine; only the pointer returned is used afterwards.
    let shrunk = unsafe { engine.realloc(first, KEPT) }.unwrap();
    assert_eq!(shrunk, first, "shrunk in place");
    // SAFETY: the first 3000 bytes stayed.
    assert!(unsafe { core::slice::from_raw_parts(shrunk.as_ptr(), 3000) }
        .iter()
        .all(|&b| b == 0x5a));
    assert_eq!(engine.source().free_bytes(), 3 * CHUNK_SIZE);
    // One unit for the first block, three for the filler and its header.
    assert_eq!(engine.stats().bytes_held, 4 * CHUNK_SIZE);
    // SAFETY: the block is in use in this engine.
    let usable = unsafe { engine.usable_size(shrunk) };
    assert_eq!(usable, CHUNK_SIZE - shrunk.as_ptr() as usize % CHUNK_SIZE, "the rest of one unit");
    let second = engine.alloc(3 * CHUNK_SIZE - 64).unwrap();
    engine.check().unwrap();
    for block in [shrunk, filler, second] {
        // SAFETY: each block came from this engine and is not used again.
        unsafe { engine.free(block) };
    }
    assert_eq!(engine.source().free_bytes(), 7 * CHUNK_SIZE);
    engine.check().unwrap();
}

/// As a `GlobalAlloc` over a full region, a block with a chunk of its own (aligned to a chunk)
/// shrinks in place, giving back the units past its new length, and grows in place within its
/// units; freed with its new layout, every unit comes back.
#[cfg(feature = "chunk-aligned")]
#[test]
fn a_chunk_aligned_block_shrinks_in_place_in_a_full_region() {
    use core::alloc::GlobalAlloc;
    use melon_alloc_core::LockedPool;

    let (_buffer, source) = region(3, CHUNK_SIZE);
    let pool = LockedPool::new(source, None);
    let layout = Layout::from_size_align(3 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    // SAFETY: the layout's size is not zero.
    let block = unsafe { GlobalAlloc::alloc(&pool, layout) };
    assert!(!block.is_null());
    assert_eq!(pool.with(|engine| engine.source().free_bytes()), 0);
    // SAFETY: the block holds `3 * CHUNK_SIZE` bytes.
    unsafe { block.write_bytes(0x33, 3 * CHUNK_SIZE) };
    // SAFETY: the block came from this pool with `layout`, and the new size is not zero.
    let shrunk = unsafe { GlobalAlloc::realloc(&pool, block, layout, 64) };
    assert_eq!(shrunk, block, "shrunk in place");
    assert_eq!(pool.with(|engine| engine.source().free_bytes()), 2 * CHUNK_SIZE);
    assert_eq!((pool.stats().bytes_held, pool.stats().bytes_lent), (CHUNK_SIZE, CHUNK_SIZE));
    let small = layout_of(64);
    // Within its one unit, a block grows in place.
    // SAFETY: as above, with the shrunk layout.
    let regrown = unsafe { GlobalAlloc::realloc(&pool, shrunk, small, CHUNK_SIZE) };
    assert_eq!(regrown, block, "grown in place");
    // SAFETY: the block's first 64 bytes stayed.
    assert!(unsafe { core::slice::from_raw_parts(regrown, 64) }.iter().all(|&b| b == 0x33));
    // SAFETY: the block came from this pool with this layout and is not used again.
    unsafe { GlobalAlloc::dealloc(&pool, regrown, layout_of(CHUNK_SIZE)) };
    assert_eq!(pool.with(|engine| engine.source().free_bytes()), 3 * CHUNK_SIZE);
    assert_eq!(pool.stats().bytes_held, 0);
    pool.check().unwrap();

    fn layout_of(size: usize) -> Layout {
        Layout::from_size_align(size, CHUNK_SIZE).unwrap()
    }
}

/// A child of a pool over a region shrinks its large blocks in place as the root does: the
/// units past the block's new length go back to the region through the root.
#[test]
fn a_childs_large_block_shrunk_gives_the_region_its_units_back() {
    use melon_alloc_core::LockedPool;

    let (_buffer, source) = region(8, CHUNK_SIZE);
    let root = LockedPool::new(source, None);
    let child = root.child();
    let block = child.alloc(4 * CHUNK_SIZE - 64).unwrap();
    let free_before = root.with(|engine| engine.source().free_bytes());
    // SAFETY: the block came from `child`; only the pointer returned is used afterwards.
    let shrunk = child.with(|engine| unsafe { engine.realloc(block, KEPT) }).unwrap();
    assert_eq!(shrunk, block, "shrunk in place");
    assert_eq!(root.with(|engine| engine.source().free_bytes()), free_before + 3 * CHUNK_SIZE);
    assert_eq!(root.stats().bytes_lent, CHUNK_SIZE);
    // SAFETY: the block came from `child` and is not used again.
    unsafe { child.try_free(shrunk) }.unwrap();
    assert_eq!(root.stats().bytes_lent, 0);
    drop(child);
    root.check().unwrap();
}

/// The units a shrunk large block gave back hold the next large block, and freeing the shrunk
/// block leaves that one whole: under memcheck (`cargo xtask valgrind`), its free closes only
/// its new slot, and the next block stays accessible.
#[test]
fn the_units_a_shrunk_block_gave_back_serve_the_next_block() {
    let (_buffer, source) = region(8, CHUNK_SIZE);
    let mut engine = Engine::new(source, None);
    let first = engine.alloc(4 * CHUNK_SIZE - 64).unwrap();
    // SAFETY: the block came from this engine; only the pointer returned is used afterwards.
    let first = unsafe { engine.realloc(first, 100) }.unwrap();
    let second = engine.alloc(2 * CHUNK_SIZE).unwrap();
    let old_end = first.as_ptr() as usize + 4 * CHUNK_SIZE;
    assert!((first.as_ptr() as usize..old_end).contains(&(second.as_ptr() as usize)));
    // SAFETY: the second block holds `2 * CHUNK_SIZE` bytes.
    unsafe { second.as_ptr().write_bytes(7, 2 * CHUNK_SIZE) };
    // SAFETY: the block came from this engine and is not used again.
    unsafe { engine.free(first) };
    // SAFETY: as above, for the second block, still in use.
    let kept = unsafe { core::slice::from_raw_parts(second.as_ptr(), 2 * CHUNK_SIZE) };
    assert!(kept.iter().all(|&b| b == 7));
    // SAFETY: the block came from this engine and is not used again.
    unsafe { engine.free(second) };
    engine.check().unwrap();
}
