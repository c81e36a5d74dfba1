//! Every public operation of heap pools: [`HeapPool`], [`ChildPool`], the [`Pool`] they both
//! dereference to, and the pointer-only [`melon_alloc_heap::free`].

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;

use melon_alloc_core::{CHUNK_SIZE, MAX_SMALL, MIN_ALIGN};
use melon_alloc_heap::{ChildPool, FreeError, HeapPool, Pool, Stats};

/// The bytes of a block, to fill or to read back.
///
/// # Safety
/// `block` is an in-use block that holds at least `len` bytes, and nothing else accesses those
/// bytes while the slice lives.
unsafe fn bytes<'a>(block: NonNull<u8>, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller promises `len` bytes of a live block that nothing else touches.
    unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) }
}

/// Fills `len` bytes of a block with `byte`.
///
/// # Safety
/// As for [`bytes`].
unsafe fn fill(block: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { bytes(block, len) }.fill(byte);
}

/// The offsets of `len` bytes that checks read: all of them, or under Miri, which interprets
/// every read, both ends and a sample of the middle.
fn checked_offsets(len: usize) -> impl Iterator<Item = usize> {
    let (ends, stride) = if cfg!(miri) { (16, 61) } else { (len, 1) };
    let head = ends.min(len);
    let tail = len.saturating_sub(ends).max(head);
    (0..head).chain((head..tail).step_by(stride)).chain(tail..len)
}

/// Whether all `len` bytes of a block are `byte` (a sample of them under Miri).
///
/// # Safety
/// As for [`bytes`].
unsafe fn all_are(block: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { bytes(block, len) };
    checked_offsets(len).all(|offset| bytes[offset] == byte)
}

/// What a large block of `size` bytes at the minimum alignment is charged: its 64-byte chunk
/// header plus the size rounded up to 16.
fn large_span(size: usize) -> usize {
    (64 + size).next_multiple_of(MIN_ALIGN)
}

/// The stats of a pool that has never allocated.
fn fresh(limit: Option<usize>) -> Stats {
    let mut stats = Stats::default();
    stats.limit = limit;
    stats
}

#[test]
fn alloc_aligns_to_16_and_zero_sizes_get_unique_blocks() {
    let pool = HeapPool::new();
    let mut blocks = Vec::new();
    // Under Miri, which interprets every allocation, a sample of the small sizes.
    let (step, zeros) = if cfg!(miri) { (7, 20) } else { (1, 200) };
    for size in (0..=600).step_by(step).chain([MAX_SMALL, MAX_SMALL + 1, 5000, 100_000]) {
        let block = pool.alloc(size).unwrap();
        assert_eq!(block.as_ptr() as usize % MIN_ALIGN, 0, "size {size}");
        blocks.push(block);
    }
    let mut zero = HashSet::new();
    for _ in 0..zeros {
        let block = pool.alloc(0).unwrap();
        assert_eq!(block.as_ptr() as usize % MIN_ALIGN, 0);
        // SAFETY: the block is in use and from `pool`.
        assert_eq!(unsafe { pool.usable_size(block) }, 16);
        // SAFETY: a zero-size block still holds its 16 usable bytes.
        unsafe { fill(block, 16, 0x5a) };
        assert!(zero.insert(block), "zero-size block {block:p} handed out twice");
    }
    assert_eq!(pool.stats().live_blocks, blocks.len() + zero.len());
    pool.check().unwrap();
    for block in blocks.into_iter().chain(zero) {
        // SAFETY: every block came from `pool` and is freed once.
        unsafe { pool.free(block) };
    }
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.stats().bytes_in_use, 0);
    pool.check().unwrap();
}

#[test]
fn alloc_zeroed_is_zero_even_in_reused_dirty_blocks() {
    let pool = HeapPool::new();
    // Under Miri, only the sizes with few blocks to a chunk.
    let sizes: &[usize] =
        if cfg!(miri) { &[1000, MAX_SMALL] } else { &[1, 16, 17, 100, 256, 1000, MAX_SMALL] };
    for &size in sizes {
        // Enough blocks for several chunks: once all are freed, the chunks that emptied go back
        // to the source and come back dirty, and the cached head is reused once its never-used
        // blocks run out.
        let count = 3 * CHUNK_SIZE / size.max(16);
        let dirty: Vec<_> = (0..count).map(|_| pool.alloc(size).unwrap()).collect();
        for &block in &dirty {
            // SAFETY: a fresh block of `size` bytes.
            unsafe { fill(block, size, 0xff) };
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
        let old: HashSet<_> = dirty.into_iter().collect();
        let zeroed: Vec<_> = (0..count).map(|_| pool.alloc_zeroed(size).unwrap()).collect();
        let reused = zeroed.iter().filter(|block| old.contains(block)).count();
        assert!(reused > 0, "size {size}: no dirty block was reused, so the test proves nothing");
        for &block in &zeroed {
            // SAFETY: a fresh block of `size` bytes.
            assert!(unsafe { all_are(block, size, 0) }, "size {size}: block {block:p} not zeroed");
        }
        for block in zeroed {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
    }
    // A large block and a zero-size block on a child pool, which gets its chunks from the root.
    let child = pool.child();
    let large = child.alloc_zeroed(300_000).unwrap();
    // SAFETY: a fresh block of 300,000 bytes.
    assert!(unsafe { all_are(large, 300_000, 0) });
    let empty = child.alloc_zeroed(0).unwrap();
    assert_ne!(empty, large);
    assert_eq!(child.stats().live_blocks, 2);
    pool.check().unwrap();
    child.check().unwrap();
}

#[test]
fn alloc_layout_serves_every_alignment_up_to_half_a_chunk() {
    let pool = HeapPool::new();
    let sizes = [0, 1, 8, 16, 17, 100, 255, 1000, MAX_SMALL, MAX_SMALL + 1, 5000, 20_000, 70_000];
    let mut blocks = Vec::new();
    let last = CHUNK_SIZE.trailing_zeros() - 1;
    // Under Miri, a sample of the alignments: 1, 16, 256, 4096 and half a chunk.
    let shifts = (0..=last).filter(|&shift| !cfg!(miri) || shift % 4 == 0 || shift == last);
    for align in shifts.map(|shift| 1usize << shift) {
        for size in sizes {
            let layout = Layout::from_size_align(size, align).unwrap();
            let block = pool.alloc_layout(layout).unwrap();
            assert_eq!(block.as_ptr() as usize % align, 0, "size {size} align {align}");
            // SAFETY: the block is in use and from `pool`.
            let usable = unsafe { pool.usable_size(block) };
            assert!(usable >= size.max(1), "size {size} align {align}: only {usable} usable");
            // SAFETY: the block holds `usable` bytes.
            unsafe { fill(block, usable, align.trailing_zeros() as u8) };
            blocks.push((block, usable, align.trailing_zeros() as u8));
        }
    }
    pool.check().unwrap();
    assert_eq!(pool.stats().live_blocks, blocks.len());
    for (block, usable, byte) in blocks {
        // SAFETY: the block holds `usable` bytes, filled with `byte` above.
        assert!(unsafe { all_are(block, usable, byte) }, "block {block:p} was overwritten");
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn alignments_from_a_whole_chunk_up_are_refused_without_a_charge() {
    // A block's chunk header is found by rounding its address down to a chunk boundary, so a
    // block aligned to a whole chunk would start on a boundary of its own and lose its header.
    let pool = HeapPool::with_limit(1 << 20);
    let before = pool.stats();
    for shift in CHUNK_SIZE.trailing_zeros()..=24 {
        for size in [0, 1, 100, MAX_SMALL, 100_000] {
            let layout = Layout::from_size_align(size, 1 << shift).unwrap();
            assert_eq!(pool.alloc_layout(layout), None, "size {size} align {}", 1usize << shift);
        }
    }
    assert_eq!(pool.stats(), before);
    assert_eq!(pool.available(), Some(1 << 20));
    pool.check().unwrap();
}

#[test]
fn realloc_to_zero_frees_and_returns_none() {
    let pool = HeapPool::new();
    let keep = pool.alloc(100).unwrap();
    let block = pool.alloc(100).unwrap();
    // SAFETY: from `pool`; not used after the free.
    assert_eq!(unsafe { pool.realloc(block, 0) }, None);
    assert_eq!(pool.stats().live_blocks, 1);
    // SAFETY: `block` is no longer in use, so this only checks it; its chunk is still held.
    let again = unsafe { pool.try_free(block) };
    assert_eq!(again, Err(FreeError::NotInUse { addr: block.as_ptr() as usize }));
    let large = pool.alloc(50_000).unwrap();
    // SAFETY: from `pool`; not used after the free.
    assert_eq!(unsafe { pool.realloc(large, 0) }, None);
    assert_eq!(pool.stats().large_blocks, 0);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(keep) };
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn realloc_shrinks_and_grows_in_place_while_the_block_holds_the_size() {
    let pool = HeapPool::new();
    let block = pool.alloc(1000).unwrap();
    // SAFETY: the block is in use and from `pool`.
    let usable = unsafe { pool.usable_size(block) };
    assert_eq!(usable, 1024);
    // SAFETY: the block holds `usable` bytes.
    unsafe { fill(block, usable, 0x11) };
    for size in [10, 1, 500, 1000, 1024] {
        // SAFETY: `block` is in use in `pool` and returned in place, so it stays valid.
        let same = unsafe { pool.realloc(block, size) }.unwrap();
        assert_eq!(same, block, "resize to {size} moved the block");
        // SAFETY: an in-place resize keeps the block, and its usable size, as it was.
        assert_eq!(unsafe { pool.usable_size(same) }, usable);
    }
    // SAFETY: the block still holds `usable` bytes.
    assert!(unsafe { all_are(block, usable, 0x11) });
    // A large block shrunk to a small size stays where it is, in its own chunk.
    let large = pool.alloc(40_000).unwrap();
    // SAFETY: the block holds 40,000 bytes.
    unsafe { fill(large, 40_000, 0x22) };
    // SAFETY: `large` is in use in `pool`.
    let shrunk = unsafe { pool.realloc(large, 10) }.unwrap();
    assert_eq!(shrunk, large);
    assert_eq!(pool.stats().large_blocks, 1);
    // SAFETY: the block still holds 40,000 bytes.
    assert!(unsafe { all_are(large, 40_000, 0x22) });
    // Growing a large block within its rounded-up length stays in place too.
    // SAFETY: `large` is in use in `pool`.
    assert_eq!(unsafe { pool.usable_size(large) }, 40_000);
    // SAFETY: `large` is in use in `pool`.
    let grown = unsafe { pool.realloc(large, 40_000) }.unwrap();
    assert_eq!(grown, large);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(block) };
    // SAFETY: as above.
    unsafe { pool.free(large) };
    pool.check().unwrap();
}

#[test]
fn realloc_beyond_the_block_moves_and_keeps_the_contents() {
    let pool = HeapPool::new();
    let mut block = pool.alloc(1).unwrap();
    let mut size = 1;
    // SAFETY: the block holds one byte.
    unsafe { fill(block, 1, 1) };
    // Steps cross every kind of move: small to small, small to large and large to large.
    for (step, new_size) in
        [17, 100, 256, 257, 2048, 2049, 3000, 16_384, 100_000, 1 << 20].into_iter().enumerate()
    {
        // SAFETY: `block` is in use in `pool`.
        let old_usable = unsafe { pool.usable_size(block) };
        // SAFETY: `block` is in use in `pool`; the old pointer is dropped after a move.
        let moved = unsafe { pool.realloc(block, new_size) }.unwrap();
        if new_size <= old_usable {
            assert_eq!(moved, block, "grow to {new_size} within {old_usable} moved");
        } else {
            assert_ne!(moved, block, "grow to {new_size} beyond {old_usable} stayed");
        }
        // SAFETY: the new block holds at least `size` bytes copied from the old one.
        assert!(unsafe { all_are(moved, size, step as u8 + 1) }, "contents lost at {new_size}");
        // SAFETY: the new block holds `new_size` bytes.
        unsafe { fill(moved, new_size, step as u8 + 2) };
        assert_eq!(pool.stats().live_blocks, 1);
        pool.check().unwrap();
        block = moved;
        size = new_size;
    }
    assert_eq!(pool.stats().large_blocks, 1);
    // Large back to small moves only when asked for a stricter alignment than the block has.
    let layout = Layout::from_size_align(100, 8192).unwrap();
    // SAFETY: `block` is in use in `pool`.
    let aligned = unsafe { pool.resize(block, layout) }.unwrap();
    assert_eq!(aligned.as_ptr() as usize % 8192, 0);
    // SAFETY: the first 100 bytes were copied.
    assert!(unsafe { all_are(aligned, 100, 11) });
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(aligned) };
    let stats = pool.stats();
    assert_eq!((stats.live_blocks, stats.bytes_in_use, stats.large_blocks), (0, 0, 0));
    pool.check().unwrap();
}

#[test]
fn realloc_from_small_to_large_and_back() {
    let pool = HeapPool::new();
    let small = pool.alloc(1000).unwrap();
    // SAFETY: the block holds 1000 bytes.
    unsafe { fill(small, 1000, 0x33) };
    // SAFETY: `small` is in use in `pool`.
    let large = unsafe { pool.realloc(small, 10_000) }.unwrap();
    assert_ne!(large, small);
    assert_eq!(pool.stats().large_blocks, 1);
    // SAFETY: the first 1000 bytes were copied.
    assert!(unsafe { all_are(large, 1000, 0x33) });
    // A resize to a small size with the same alignment keeps the large block in place.
    // SAFETY: `large` is in use in `pool`.
    let back = unsafe { pool.realloc(large, 16) }.unwrap();
    assert_eq!(back, large);
    assert_eq!(pool.stats().live_blocks, 1);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(back) };
    assert_eq!(pool.stats().large_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn a_failed_realloc_leaves_the_block_as_it_was() {
    let pool = HeapPool::with_limit(CHUNK_SIZE);
    let block = pool.alloc(100).unwrap();
    // SAFETY: the block holds 100 bytes.
    unsafe { fill(block, 100, 0x44) };
    let before = pool.stats();
    for new_size in [CHUNK_SIZE, 1 << 20, isize::MAX as usize, usize::MAX] {
        // SAFETY: `block` is in use in `pool`; a failed realloc leaves it so.
        assert_eq!(unsafe { pool.realloc(block, new_size) }, None, "size {new_size}");
        assert_eq!(pool.stats(), before);
    }
    // SAFETY: the block still holds 100 bytes.
    assert!(unsafe { all_are(block, 100, 0x44) });
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(block) }.unwrap();
    pool.check().unwrap();
}

#[test]
fn free_and_try_free_give_blocks_back() {
    let pool = HeapPool::new();
    let blocks: Vec<_> =
        [0, 64, 64, 10_000].iter().map(|&size| pool.alloc(size).unwrap()).collect();
    assert_eq!(pool.stats().live_blocks, 4);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(blocks[0]) };
    assert_eq!(pool.stats().live_blocks, 3);
    // SAFETY: from `pool`, freed once.
    assert_eq!(unsafe { pool.try_free(blocks[1]) }, Ok(()));
    // SAFETY: from `pool`, freed once.
    assert_eq!(unsafe { pool.try_free(blocks[3]) }, Ok(()));
    let stats = pool.stats();
    assert_eq!((stats.live_blocks, stats.bytes_in_use, stats.large_blocks), (1, 64, 0));
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(blocks[2]) };
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn usable_size_is_the_class_or_the_rounded_large_size() {
    let pool = HeapPool::new();
    let cases = [
        (0, 16),
        (1, 16),
        (16, 16),
        (17, 32),
        (257, 320),
        (2000, 2048),
        (2049, 2720),
        (5000, 5440),
        (MAX_SMALL, MAX_SMALL),
        (MAX_SMALL + 1, MAX_SMALL + 16),
        (1 << 20, 1 << 20),
    ];
    for (size, usable) in cases {
        let block = pool.alloc(size).unwrap();
        // SAFETY: the block is in use and from `pool`.
        assert_eq!(unsafe { pool.usable_size(block) }, usable, "size {size}");
        // SAFETY: the block holds `usable` bytes.
        unsafe { fill(block, usable, 0x55) };
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    pool.check().unwrap();
}

/// A child's `available` is its own limit's figure: a parent at its limit refuses first, for the
/// heap pools and the locked ones alike.
#[test]
fn a_childs_available_is_its_own_limit_and_a_full_parent_refuses_sooner() {
    let parent = HeapPool::with_limit(CHUNK_SIZE);
    let _filler = parent.alloc(CHUNK_SIZE / 2).unwrap();
    let child = parent.child_with_limit(4 * CHUNK_SIZE);
    assert_eq!(child.available(), Some(4 * CHUNK_SIZE));
    assert!(child.alloc(64).is_none(), "the parent's limit refused the child's chunk");

    let root =
        melon_alloc_heap::SyncPool::new(melon_alloc_heap::GlobalSource::new(), Some(CHUNK_SIZE));
    let _filler = root.alloc(CHUNK_SIZE / 2).unwrap();
    let child = root.child_with_limit(4 * CHUNK_SIZE);
    assert_eq!(child.available(), Some(4 * CHUNK_SIZE));
    assert!(child.alloc(64).is_none(), "the root's limit refused the child's chunk");
}

#[test]
fn available_is_the_limit_minus_what_the_pool_holds() {
    let unlimited = HeapPool::new();
    assert_eq!(unlimited.available(), None);
    let _block = unlimited.alloc(10).unwrap();
    assert_eq!(unlimited.available(), None);

    let limit = 10 * CHUNK_SIZE + 123;
    let pool = HeapPool::with_limit(limit);
    assert_eq!(pool.available(), Some(limit));
    let small = pool.alloc(10).unwrap();
    assert_eq!(pool.available(), Some(limit - CHUNK_SIZE));
    // A second block of the same class comes from the same chunk: nothing more is taken.
    let small2 = pool.alloc(10).unwrap();
    assert_eq!(pool.available(), Some(limit - CHUNK_SIZE));
    let large = pool.alloc(10_000).unwrap();
    assert_eq!(pool.available(), Some(limit - CHUNK_SIZE - large_span(10_000)));
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(large) };
    assert_eq!(pool.available(), Some(limit - CHUNK_SIZE));
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(small) };
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(small2) };
    // The empty chunk is kept for reuse, so it still counts until trimmed.
    assert_eq!(pool.available(), Some(limit - CHUNK_SIZE));
    assert_eq!(pool.trim(), CHUNK_SIZE);
    assert_eq!(pool.available(), Some(limit));
    assert_eq!(pool.available(), Some(limit - pool.stats().bytes_held));
}

#[test]
fn stats_report_exact_counts() {
    let limit = 1 << 20;
    let pool = HeapPool::with_limit(limit);
    assert_eq!(pool.stats(), fresh(Some(limit)));
    assert_eq!(HeapPool::new().stats(), fresh(None));

    let small: Vec<_> = (0..3).map(|_| pool.alloc(64).unwrap()).collect();
    let large = pool.alloc(10_000).unwrap();
    let mut expected = fresh(Some(limit));
    expected.bytes_in_use = 3 * 64 + 10_000;
    expected.live_blocks = 4;
    expected.large_blocks = 1;
    expected.bytes_held = CHUNK_SIZE + large_span(10_000);
    expected.peak_bytes_held = expected.bytes_held;
    expected.chunks = 1;
    assert_eq!(pool.stats(), expected);

    // A child's chunk is lent by the parent: it counts in the parent's bytes held and lent, but
    // not among the parent's own chunks or blocks.
    let child = pool.child();
    let in_child = child.alloc(100).unwrap();
    expected.bytes_held += CHUNK_SIZE;
    expected.peak_bytes_held = expected.bytes_held;
    expected.bytes_lent = CHUNK_SIZE;
    assert_eq!(pool.stats(), expected);
    let mut child_expected = fresh(None);
    child_expected.bytes_in_use = 112;
    child_expected.live_blocks = 1;
    child_expected.bytes_held = CHUNK_SIZE;
    child_expected.peak_bytes_held = CHUNK_SIZE;
    child_expected.chunks = 1;
    assert_eq!(child.stats(), child_expected);

    // SAFETY: from `child`, freed once.
    unsafe { child.free(in_child) };
    drop(child);
    for block in small {
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(large) };
    let peak = expected.peak_bytes_held;
    let mut expected = fresh(Some(limit));
    // The head chunk of the 64-byte class stays cached; the peak is remembered.
    expected.bytes_held = CHUNK_SIZE;
    expected.chunks = 1;
    expected.peak_bytes_held = peak;
    assert_eq!(pool.stats(), expected);
    pool.check().unwrap();
}

#[test]
fn check_passes_on_fresh_busy_and_emptied_pools() {
    let pool = HeapPool::new();
    pool.check().unwrap();
    // Under Miri, every `step`th block of the same spread of sizes.
    let step = if cfg!(miri) { 50 } else { 1 };
    let blocks: Vec<_> = (0..5000).step_by(step).map(|i| pool.alloc(i % 3000).unwrap()).collect();
    pool.check().unwrap();
    let child = pool.child_with_limit(4 << 20);
    let in_child: Vec<_> = (0..500).step_by(step).map(|i| child.alloc(i * 7).unwrap()).collect();
    pool.check().unwrap();
    child.check().unwrap();
    for (i, block) in blocks.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
    }
    pool.check().unwrap();
    for block in in_child {
        // SAFETY: from `child`, freed once.
        unsafe { child.free(block) };
    }
    child.check().unwrap();
    pool.check().unwrap();
}

#[test]
fn trim_gives_back_cached_empty_chunks_only() {
    let pool = HeapPool::new();
    assert_eq!(pool.trim(), 0);
    let a = pool.alloc(64).unwrap();
    let b = pool.alloc(128).unwrap();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(a) };
    // The 128-byte class still has a block in use, so only the 64-byte chunk goes back.
    assert_eq!(pool.trim(), CHUNK_SIZE);
    assert_eq!(pool.stats().chunks, 1);
    assert_eq!(pool.trim(), 0);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(b) };
    assert_eq!(pool.trim(), CHUNK_SIZE);
    assert_eq!(pool.stats().chunks, 0);
    assert_eq!(pool.stats().bytes_held, 0);
    pool.check().unwrap();
}

/// How many small blocks [`fill_pool`] allocates; fewer under Miri still take several chunks.
const FILL_BLOCKS: usize = if cfg!(miri) { 500 } else { 3000 };

/// Allocates blocks of many classes, several chunks' worth of some, plus large blocks.
fn fill_pool(pool: &Pool) -> Vec<NonNull<u8>> {
    let mut blocks = Vec::new();
    for i in 0..FILL_BLOCKS {
        blocks.push(pool.alloc(16 + (i % 7) * 48).unwrap());
    }
    for size in [10_000, 50_000] {
        blocks.push(pool.alloc(size).unwrap());
    }
    blocks
}

#[test]
fn reset_frees_every_block_and_keeps_the_chunks() {
    let mut pool = HeapPool::with_limit(8 << 20);
    let blocks = fill_pool(&pool);
    let before = pool.stats();
    assert_eq!(before.live_blocks, blocks.len());
    assert!(before.chunks > 7, "the test wants several chunks per class");
    pool.reset();
    let after = pool.stats();
    assert_eq!(after.live_blocks, 0);
    assert_eq!(after.bytes_in_use, 0);
    assert_eq!(after.large_blocks, 0);
    assert_eq!(after.chunks, before.chunks);
    // Large blocks are chunks of their own and go back; small chunks stay.
    let large = large_span(10_000) + large_span(50_000);
    assert_eq!(after.bytes_held, before.bytes_held - large);
    assert_eq!(pool.available(), Some((8 << 20) - after.bytes_held));
    pool.check().unwrap();

    // The kept chunks serve the same blocks again without taking any more memory.
    let small_only: Vec<_> =
        (0..FILL_BLOCKS).map(|i| pool.alloc(16 + (i % 7) * 48).unwrap()).collect();
    assert_eq!(pool.stats().chunks, before.chunks);
    assert_eq!(pool.stats().bytes_held, after.bytes_held);
    pool.check().unwrap();
    assert_eq!(small_only.iter().collect::<HashSet<_>>().len(), small_only.len());
    pool.reset();
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn reset_then_trim_gives_back_every_chunk() {
    let mut pool = HeapPool::new();
    let _blocks = fill_pool(&pool);
    pool.reset();
    let chunks = pool.stats().chunks;
    assert!(chunks > 7, "the test wants several chunks per class");
    assert_eq!(pool.trim(), chunks * CHUNK_SIZE);
    assert_eq!(pool.stats().chunks, 0);
    assert_eq!(pool.stats().bytes_held, 0);
    pool.check().unwrap();
}

#[test]
fn reset_of_a_child_keeps_its_chunks_lent() {
    let parent = HeapPool::with_limit(8 << 20);
    let mut child = parent.child_with_limit(4 << 20);
    let blocks = fill_pool(&child);
    assert_eq!(child.stats().live_blocks, blocks.len());
    let child_before = child.stats();
    let parent_before = parent.stats();
    child.reset();
    let large = large_span(10_000) + large_span(50_000);
    assert_eq!(child.stats().live_blocks, 0);
    assert_eq!(child.stats().chunks, child_before.chunks);
    assert_eq!(child.stats().bytes_held, child_before.bytes_held - large);
    assert_eq!(parent.stats().bytes_lent, parent_before.bytes_lent - large);
    assert_eq!(parent.available(), Some((8 << 20) - parent.stats().bytes_held));
    child.check().unwrap();
    parent.check().unwrap();
    let again = child.alloc(100).unwrap();
    // SAFETY: from `child`, freed once.
    unsafe { child.free(again) };
    drop(child);
    assert_eq!(parent.stats().bytes_held, 0);
    assert_eq!(parent.available(), Some(8 << 20));
}

#[test]
fn pointer_only_free_finds_the_right_pool() {
    let root = HeapPool::new();
    let child = root.child();
    let grandchild = child.child_with_limit(1 << 20);
    let pools: [&Pool; 3] = [&root, &child, &grandchild];
    let mut blocks = Vec::new();
    for (index, pool) in pools.iter().enumerate() {
        for size in [0, 1, 100, 2048, 5000, 70_000] {
            blocks.push((index, pool.alloc(size).unwrap()));
        }
    }
    for (index, pool) in pools.iter().enumerate() {
        assert_eq!(pool.stats().live_blocks, 6, "pool {index}");
    }
    for (count, (index, block)) in blocks.into_iter().enumerate() {
        let before = pools[index].stats().live_blocks;
        // SAFETY: the block is in use in one of the live pools and not used again.
        unsafe { melon_alloc_heap::free(block) };
        assert_eq!(pools[index].stats().live_blocks, before - 1, "block {count}");
    }
    for pool in pools {
        assert_eq!(pool.stats().live_blocks, 0);
        pool.check().unwrap();
    }
}

#[test]
fn children_take_their_limits_and_borrow_their_parent() {
    let root = HeapPool::default();
    assert_eq!(root.stats().limit, None);
    let unlimited: ChildPool<'_> = root.child();
    assert_eq!(unlimited.stats().limit, None);
    assert_eq!(unlimited.available(), None);
    let limited = root.child_with_limit(5 * CHUNK_SIZE);
    assert_eq!(limited.stats().limit, Some(5 * CHUNK_SIZE));
    assert_eq!(limited.available(), Some(5 * CHUNK_SIZE));
    let nested = limited.child_with_limit(CHUNK_SIZE);
    let block = nested.alloc(1).unwrap();
    assert_eq!(nested.available(), Some(0));
    assert_eq!(limited.available(), Some(4 * CHUNK_SIZE));
    assert_eq!(root.stats().bytes_lent, CHUNK_SIZE);
    // SAFETY: from `nested`, freed once.
    unsafe { nested.free(block) };
}

#[test]
fn debug_output_names_the_handle_and_shows_the_stats() {
    let root = HeapPool::new();
    let _a = root.alloc(10).unwrap();
    let _b = root.alloc(10).unwrap();
    let child = root.child_with_limit(1 << 20);
    let _c = child.alloc(10_000).unwrap();
    let root_text = format!("{root:?}");
    assert!(root_text.starts_with("HeapPool(Pool {"), "{root_text}");
    assert!(root_text.contains("live_blocks: 2"), "{root_text}");
    let child_text = format!("{child:?}");
    assert!(child_text.starts_with("ChildPool(Pool {"), "{child_text}");
    assert!(child_text.contains("large_blocks: 1"), "{child_text}");
    assert!(child_text.contains("limit: Some(1048576)"), "{child_text}");
    let pool: &Pool = &child;
    let pool_text = format!("{pool:?}");
    assert!(pool_text.starts_with("Pool { stats: Stats {"), "{pool_text}");
    let error = FreeError::NotInUse { addr: 0x1230 };
    assert!(error.to_string().contains("0x1230"), "{error}");
    assert!(format!("{error:?}").contains("NotInUse"));
}

#[test]
fn a_root_pool_can_move_to_another_thread() {
    let pool = HeapPool::with_limit(1 << 20);
    let block = pool.alloc(100).unwrap();
    let pool = std::thread::spawn(move || {
        let more = pool.alloc(200).unwrap();
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(more) };
        pool
    })
    .join()
    .unwrap();
    assert_eq!(pool.stats().live_blocks, 1);
    // SAFETY: `block` is still in use in `pool`, which kept its address across the move.
    unsafe { pool.try_free(block) }.unwrap();
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn dropping_pools_with_live_blocks_gives_everything_back() {
    // Sizes around a large block whose chunk is exactly one small chunk long, which a source
    // cannot tell from a small chunk by its layout.
    let sizes = [0, 100, MAX_SMALL, CHUNK_SIZE - 64 - 15, CHUNK_SIZE - 64, CHUNK_SIZE - 63, 70_000];
    let limit = 64 * CHUNK_SIZE;
    let root = HeapPool::with_limit(limit);
    {
        let child = root.child_with_limit(limit / 2);
        let grandchild = child.child();
        for pool in [&*child, &*grandchild] {
            for size in sizes {
                pool.alloc(size).unwrap();
            }
        }
        assert!(root.available().unwrap() < limit);
    }
    assert_eq!(root.available(), Some(limit));
    assert_eq!(root.stats().bytes_lent, 0);
    root.check().unwrap();
    // A root dropped with the same blocks live gives its slabs and large chunks back in bulk.
    for size in sizes {
        root.alloc(size).unwrap();
    }
    let layout = Layout::from_size_align(CHUNK_SIZE - 64, 64).unwrap();
    root.alloc_layout(layout).unwrap();
    drop(root);
}

/// A source over the global allocator that counts the chunks it has out in a counter it
/// borrows, and records that it was dropped.
struct Counting<'a> {
    out: &'a core::cell::Cell<isize>,
    dropped: &'a core::cell::Cell<bool>,
    /// Times the pool asked the source to let go of the free pages it keeps.
    discards: &'a core::cell::Cell<usize>,
}

// SAFETY: chunks come from `std::alloc::alloc` with the asked-for layout and go back to
// `dealloc` with the same layout.
unsafe impl melon_alloc_core::ChunkSource for Counting<'_> {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.out.set(self.out.get() + 1);
        // SAFETY: the engine never asks for a zero-sized layout.
        NonNull::new(unsafe { std::alloc::alloc(layout) })
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        self.out.set(self.out.get() - 1);
        // SAFETY: the caller returns a chunk from `acquire` with its layout.
        unsafe { std::alloc::dealloc(chunk.as_ptr(), layout) }
    }

    fn discard_free(&mut self) {
        self.discards.set(self.discards.get() + 1);
    }
}

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

#[test]
fn a_child_over_a_source_of_its_own_gives_it_everything_back() {
    let out = core::cell::Cell::new(0);
    let dropped = core::cell::Cell::new(false);
    let discards = core::cell::Cell::new(0);
    {
        let source = Box::new(Counting { out: &out, dropped: &dropped, discards: &discards });
        let pool = ChildPool::with_source(source, Some(100 * CHUNK_SIZE));
        // Under Miri, every eighth block of the same spread of sizes.
        let step = if cfg!(miri) { 8 } else { 1 };
        let blocks: Vec<_> = (0..400).step_by(step).map(|i| pool.alloc(i * 3).unwrap()).collect();
        let large = pool.alloc(3 * CHUNK_SIZE).unwrap();
        assert_eq!(out.get() as usize, pool.stats().chunks + 1);
        assert_eq!(pool.available(), Some(100 * CHUNK_SIZE - pool.stats().bytes_held));
        assert_eq!(pool.alloc(100 * CHUNK_SIZE), None);
        let grandchild = pool.child();
        let nested = grandchild.alloc(100).unwrap();
        assert_eq!(pool.stats().bytes_lent, CHUNK_SIZE);
        // SAFETY: from `grandchild`, freed once, by pointer alone.
        unsafe { melon_alloc_heap::free(nested) };
        drop(grandchild);
        for block in blocks.into_iter().step_by(2) {
            // SAFETY: from `pool`, freed once, by pointer alone.
            unsafe { melon_alloc_heap::free(block) };
        }
        // SAFETY: from `pool`, freed once.
        unsafe { pool.try_free(large) }.unwrap();
        pool.check().unwrap();
        // A trim asks the source to let go of the free pages it keeps.
        assert_eq!(discards.get(), 0);
        pool.trim();
        assert_eq!(discards.get(), 1, "the trim did not reach the pool's own source");
        assert!(!dropped.get());
    }
    assert_eq!(out.get(), 0, "chunks were not given back");
    assert!(dropped.get(), "the source was not dropped with the pool");
}

#[test]
fn a_child_over_a_region_gives_its_kept_chunks_back_before_a_large_block() {
    const UNITS: usize = 20;
    let mut buffer = vec![0u8; (UNITS + 1) * CHUNK_SIZE];
    let start = buffer.as_ptr().align_offset(CHUNK_SIZE);
    let region = &mut buffer[start..start + UNITS * CHUNK_SIZE];
    // SAFETY: the buffer outlives the pool, which is dropped at the end of the block below, and
    // nothing else touches it meanwhile.
    let region = unsafe { melon_alloc_core::RegionSource::new(region.as_mut_ptr(), region.len()) };
    {
        let pool = ChildPool::with_source(Box::new(region), None);
        let blocks: Vec<_> = core::iter::from_fn(|| pool.alloc(1000)).collect();
        assert_eq!(pool.stats().chunks, UNITS);
        for block in blocks {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
        assert!(pool.stats().chunks > 1, "the pool kept no chunks to give back");
        // Blocks of two units each: the kept chunks go back first, so that they split no run.
        let large: Vec<_> = core::iter::from_fn(|| pool.alloc(2 * CHUNK_SIZE - 64)).collect();
        assert_eq!(large.len(), UNITS / 2);
        for block in large {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
        pool.check().unwrap();
    }
    drop(buffer);
}

#[test]
fn a_child_over_a_region_stays_inside_it() {
    let mut buffer = vec![0u8; 9 * CHUNK_SIZE];
    let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
    let units = (buffer.len() - buffer.as_ptr().align_offset(CHUNK_SIZE)) / CHUNK_SIZE;
    // SAFETY: the buffer outlives the pool, which is dropped at the end of the block below, and
    // nothing else touches it meanwhile.
    let region = unsafe { melon_alloc_core::RegionSource::new(buffer.as_mut_ptr(), buffer.len()) };
    {
        let pool = ChildPool::with_source(Box::new(region), None);
        let mut blocks = Vec::new();
        while let Some(block) = pool.alloc(1000) {
            assert!(range.contains(&(block.as_ptr() as usize)));
            blocks.push(block);
        }
        assert_eq!(pool.stats().chunks, units);
        for block in blocks {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
        // A few empty chunks are kept for reuse, at most five of this class (the head and four
        // spares); once trimmed, the region has every unit back and one block can span it.
        let kept = pool.stats().chunks;
        assert_eq!(kept, units.min(5));
        assert_eq!(pool.trim(), kept * CHUNK_SIZE);
        assert_eq!(pool.stats().chunks, 0);
        let whole = pool.alloc(units * CHUNK_SIZE - 64).unwrap();
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(whole) };
        pool.check().unwrap();
    }
    drop(buffer);
}
