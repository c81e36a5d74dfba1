//! Size classes seen from outside: every class boundary gets the class it should, and a block
//! can be written to its whole usable size without touching its neighbours.

use core::alloc::Layout;
use core::ptr::NonNull;

use melon_alloc_core::{class_of, CHUNK_SIZE, CLASS_SIZES, MAX_SMALL, MIN_ALIGN};
use melon_alloc_heap::{HeapPool, Pool};

/// The block size the pool should give a request of `size` bytes at the minimum alignment: the
/// smallest class that holds it, or for a large request the size rounded up to 16.
fn expected_usable(size: usize) -> usize {
    if size > MAX_SMALL {
        return size.next_multiple_of(MIN_ALIGN);
    }
    *CLASS_SIZES.iter().find(|&&class| class >= size).unwrap()
}

/// Every size on either side of a class boundary, and some well past the largest class.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes = vec![0, 1, 2, 7, 8, 15, 16, 17];
    for class in CLASS_SIZES {
        sizes.extend([class - 1, class, class + 1]);
    }
    sizes.extend([MAX_SMALL + 1, MAX_SMALL + 15, MAX_SMALL + 16, MAX_SMALL + 17, 4095, 4096]);
    sizes.extend([CHUNK_SIZE - 64, CHUNK_SIZE, CHUNK_SIZE + 1, 1 << 20]);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// A byte pattern that differs between neighbouring blocks and along each block, so that an
/// overlap or an overrun shows up as a wrong byte.
fn pattern(block: usize, offset: usize) -> u8 {
    (block.wrapping_mul(131) ^ offset.wrapping_mul(7)) as u8
}

/// The offsets of `len` bytes that get a pattern: all of them, or under Miri, which interprets
/// every access, both ends (where neighbours would overlap) and a sample of the middle.
fn patterned_offsets(len: usize) -> impl Iterator<Item = usize> {
    let (ends, stride) = if cfg!(miri) { (16, 61) } else { (len, 1) };
    let head = ends.min(len);
    let tail = len.saturating_sub(ends).max(head);
    (0..head).chain((head..tail).step_by(stride)).chain(tail..len)
}

/// Writes the pattern of block number `index` over `len` bytes.
///
/// # Safety
/// `block` is in use and holds at least `len` bytes.
unsafe fn write_pattern(block: NonNull<u8>, len: usize, index: usize) {
    // SAFETY: the caller promises `len` bytes of a live block.
    let bytes = unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) };
    for offset in patterned_offsets(len) {
        bytes[offset] = pattern(index, offset);
    }
}

/// The first offset in `len` bytes that does not hold the pattern of block number `index`.
///
/// # Safety
/// As for [`write_pattern`].
unsafe fn pattern_mismatch(block: NonNull<u8>, len: usize, index: usize) -> Option<usize> {
    // SAFETY: the caller promises `len` bytes of a live block.
    let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), len) };
    patterned_offsets(len).find(|&offset| bytes[offset] != pattern(index, offset))
}

#[test]
fn every_class_boundary_gets_the_smallest_class_that_holds_it() {
    let pool = HeapPool::new();
    for (index, size) in boundary_sizes().into_iter().enumerate() {
        let expected = expected_usable(size);
        if let Some(class) = class_of(size) {
            assert_eq!(CLASS_SIZES[class], expected, "class_of({size})");
        } else {
            assert!(size > MAX_SMALL, "class_of({size}) is None");
        }
        // Under Miri, which interprets every allocation, each size takes one way in turn.
        let way = |way: usize| !cfg!(miri) || way == index % 3;
        let zeroed = way(0).then(|| pool.alloc_zeroed(size).unwrap());
        let layout =
            way(1).then(|| pool.alloc_layout(Layout::from_size_align(size, 8).unwrap()).unwrap());
        let plain = way(2).then(|| pool.alloc(size).unwrap());
        for block in [plain, zeroed, layout].into_iter().flatten() {
            // SAFETY: the block is in use and from `pool`.
            let usable = unsafe { pool.usable_size(block) };
            assert_eq!(usable, expected, "size {size}");
            // SAFETY: from `pool`, freed once.
            unsafe { pool.free(block) };
        }
    }
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn stats_count_blocks_at_their_class_size() {
    let pool = HeapPool::new();
    let mut blocks = Vec::new();
    let mut total = 0;
    // Under Miri, which interprets every allocation, every other size.
    for size in boundary_sizes().into_iter().step_by(if cfg!(miri) { 2 } else { 1 }) {
        blocks.push(pool.alloc(size).unwrap());
        total += expected_usable(size);
        assert_eq!(pool.stats().bytes_in_use, total, "after size {size}");
    }
    assert_eq!(pool.stats().live_blocks, blocks.len());
    for block in blocks {
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
    assert_eq!(pool.stats().bytes_in_use, 0);
}

/// Allocates `count` blocks of `size`, writes each whole usable size with its own pattern, and
/// checks every block afterwards and again after freeing every other one and refilling.
fn fill_and_verify(pool: &Pool, size: usize, count: usize) {
    let usable = expected_usable(size);
    let mut blocks: Vec<_> = (0..count).map(|_| pool.alloc(size).unwrap()).collect();
    for (index, &block) in blocks.iter().enumerate() {
        // SAFETY: the block is in use and from `pool`.
        assert_eq!(unsafe { pool.usable_size(block) }, usable);
        // SAFETY: the block holds `usable` bytes.
        unsafe { write_pattern(block, usable, index) };
    }
    let mut sorted: Vec<_> = blocks.iter().map(|block| block.as_ptr() as usize).collect();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert!(pair[0] + usable <= pair[1], "size {size}: blocks {pair:x?} overlap");
    }
    let verify = |blocks: &[NonNull<u8>]| {
        for (index, &block) in blocks.iter().enumerate() {
            // SAFETY: the block holds `usable` bytes.
            let mismatch = unsafe { pattern_mismatch(block, usable, index) };
            assert_eq!(mismatch, None, "size {size}: block {index} at {block:p} was overwritten");
        }
    };
    verify(&blocks);
    for index in (0..count).step_by(2) {
        // SAFETY: from `pool`, freed once; replaced below.
        unsafe { pool.free(blocks[index]) };
    }
    for index in (0..count).step_by(2) {
        blocks[index] = pool.alloc(size).unwrap();
        // SAFETY: the block is in use and from `pool`.
        assert_eq!(unsafe { pool.usable_size(blocks[index]) }, usable);
        // SAFETY: the block holds `usable` bytes.
        unsafe { write_pattern(blocks[index], usable, index) };
    }
    verify(&blocks);
    assert_eq!(pool.stats().live_blocks, count);
    pool.check().unwrap();
    for block in blocks {
        // SAFETY: from `pool`, freed once.
        unsafe { pool.free(block) };
    }
}

#[test]
fn writing_a_whole_small_block_spares_its_neighbours() {
    let pool = HeapPool::new();
    // Under Miri, which interprets every allocation, a few classes from small to the largest.
    let classes: &[usize] = if cfg!(miri) { &[512, 2720, MAX_SMALL] } else { &CLASS_SIZES };
    for &class in classes {
        // Enough blocks for three chunks of the class, so chunk edges are crossed too; under
        // Miri, for a little over one, so one edge is crossed.
        let chunks = if cfg!(miri) { 1 } else { 3 };
        let count = chunks * CHUNK_SIZE / class + 1;
        for size in [class - 15, class] {
            fill_and_verify(&pool, size, count);
        }
    }
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn writing_a_whole_large_block_spares_its_neighbours() {
    let pool = HeapPool::new();
    // Under Miri, which interprets every allocation, fewer sizes and blocks.
    let (sizes, count): (&[usize], _) = if cfg!(miri) {
        (&[MAX_SMALL + 1, CHUNK_SIZE - 64, 100_000], 3)
    } else {
        (&[MAX_SMALL + 1, 10_000, 12_288, CHUNK_SIZE - 64, CHUNK_SIZE, 100_000], 12)
    };
    for &size in sizes {
        fill_and_verify(&pool, size, count);
    }
    // Small and large blocks side by side in one pool.
    let child = pool.child();
    let mut blocks = Vec::new();
    // Under Miri, every third size.
    let step = if cfg!(miri) { 3 } else { 1 };
    for (index, size) in boundary_sizes().into_iter().step_by(step).enumerate() {
        let block = child.alloc(size).unwrap();
        // SAFETY: the block is in use and from `child`.
        assert_eq!(unsafe { child.usable_size(block) }, expected_usable(size), "size {size}");
        // SAFETY: the block holds its usable size.
        unsafe { write_pattern(block, expected_usable(size), index) };
        blocks.push((block, size));
    }
    for (index, &(block, size)) in blocks.iter().enumerate() {
        // SAFETY: the block holds its usable size.
        let mismatch = unsafe { pattern_mismatch(block, expected_usable(size), index) };
        assert_eq!(mismatch, None, "size {size}");
    }
    child.check().unwrap();
}
