//! The `pages` feature under attack: engines made `with_pages` split 16 KiB chunks into four
//! 4 KiB pages, one class each. These tests try to break the page bookkeeping through the
//! engine's public API (and `LockedPool`'s children, which are paged): hostile pointers handed
//! to the checked free, pages and chunks counted wrong across trims, resets and drops, blocks
//! handed out twice or leaving their page, and the limit's give-back-then-retry promise.
#![cfg(all(feature = "pages", not(feature = "small-chunks")))]

mod support;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;

use melon_alloc_core::{
    class_of, ChunkSource, Engine, FreeError, LockedPool, Problem, CHUNK_SIZE, CLASS_COUNT,
    CLASS_SIZES,
};
use support::{colour, free, Random, TestSource};

/// Bytes of a page of a paged chunk.
const PAGE: usize = CHUNK_SIZE / 4;
/// Bytes of the header at the start of every chunk and page.
const HEADER: usize = 64;
/// The magic number of a page header, as the engine writes it (`"MP"`, little-endian `u16`).
const PAGE_MAGIC: u16 = 0x4d50;

/// Whether the tests run under Miri, which is slow: loops are kept short there.
const MIRI: bool = cfg!(miri);

fn paged(limit: Option<usize>) -> (TestSource, Engine<TestSource>) {
    let source = TestSource::default();
    (source.clone(), Engine::new(source, limit).with_pages())
}

fn page_of(block: NonNull<u8>) -> usize {
    block.as_ptr().addr() & !(PAGE - 1)
}

fn chunk_of(block: NonNull<u8>) -> usize {
    block.as_ptr().addr() & !(CHUNK_SIZE - 1)
}

/// The page of a freshly split `chunk` that a paged engine takes at `turn` (0 for the first):
/// the engine takes them in turns that start from one chosen by the chunk's address, so that the
/// first pages of different chunks lie at different offsets.
fn page_taken(chunk: usize, turn: usize) -> usize {
    chunk + (colour(chunk / CHUNK_SIZE) + turn) % 4 * PAGE
}

/// A pointer to `addr` with the provenance of `block` (only its address matters to the engine's
/// checks, which never read through it).
fn at(block: NonNull<u8>, addr: usize) -> NonNull<u8> {
    NonNull::new(block.as_ptr().with_addr(addr)).unwrap()
}

/// Offset of the first block of `class` in a chunk or page, as the engine lays them out.
fn first_offset(class: usize) -> usize {
    let size = CLASS_SIZES[class];
    if size.is_power_of_two() && size > HEADER {
        size
    } else {
        HEADER
    }
}

/// Blocks of `class` a page holds.
fn page_capacity(class: usize) -> usize {
    PAGE.saturating_sub(first_offset(class)) / CLASS_SIZES[class]
}

/// Asserts that `try_free` refuses `pointer` with `error` and that the engine did not change.
fn refused<S: ChunkSource>(engine: &mut Engine<S>, pointer: NonNull<u8>, error: FreeError) {
    let before = engine.stats();
    assert_eq!(engine.validate(pointer), Err(error));
    // SAFETY: `pointer` is not an in-use block of `engine` (the caller expects a refusal), so
    // this only checks it.
    assert_eq!(unsafe { engine.try_free(pointer) }, Err(error));
    assert_eq!(engine.stats(), before, "a refused free changed the engine");
    engine.check().unwrap();
}

/// Fills the `size` bytes of a block with `tag`.
///
/// # Safety
/// The block is in use, holds `size` bytes, and nothing else uses it.
unsafe fn stamp(block: NonNull<u8>, size: usize, tag: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { block.as_ptr().write_bytes(tag, size) };
}

/// Whether the `size` bytes of a block all still hold `tag`.
///
/// # Safety
/// The block is in use and holds `size` bytes.
unsafe fn stamped(block: NonNull<u8>, size: usize, tag: u8) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { core::slice::from_raw_parts(block.as_ptr(), size) }.iter().all(|&byte| byte == tag)
}

// ---------------------------------------------------------------------------------------------
// Hostile pointers to the checked free.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_pointer_into_an_unused_page_is_refused_and_changes_nothing() {
    let (_source, mut engine) = paged(None);
    let block = engine.alloc(64).unwrap();
    let chunk = chunk_of(block);
    assert_eq!(page_of(block), page_taken(chunk, 0), "a class's first block is in a page");
    // The other three pages are unused: their headers, where their first blocks would be, and
    // deeper in.
    for page in (1..4).map(|turn| page_taken(chunk, turn)) {
        for offset in [0, 16, HEADER, HEADER + 64, PAGE - 16] {
            let pointer = at(block, page + offset);
            let addr = pointer.as_ptr().addr();
            refused(&mut engine, pointer, FreeError::NotInUse { addr });
        }
    }
    assert_eq!(engine.stats().live_blocks, 1);
    // Every page but the one in use unused, the first one included, whose header still counts
    // the pages in use.
    let other = engine.alloc(300).unwrap();
    assert_eq!(page_of(other), page_taken(chunk, 1));
    free(&mut engine, block);
    assert_eq!(engine.trim(), 0);
    for page in (0..4).map(|index| chunk + index * PAGE).filter(|&page| page != page_of(other)) {
        for offset in [0, 16, HEADER, HEADER + 64] {
            let pointer = at(other, page + offset);
            let addr = pointer.as_ptr().addr();
            refused(&mut engine, pointer, FreeError::NotInUse { addr });
        }
    }
    assert_eq!(engine.validate(other), Ok(()));
    free(&mut engine, other);
}

#[test]
fn a_pointer_into_a_page_header_is_refused_as_interior() {
    let (_source, mut engine) = paged(None);
    let first = engine.alloc(64).unwrap();
    let second = engine.alloc(300).unwrap();
    assert_eq!(page_of(second), page_taken(chunk_of(first), 1));
    // The header of the first page is also the chunk's: it counts the pages in use.
    for page in [page_of(first), page_of(second)] {
        for offset in [0, 8, 16, 32, 48] {
            let pointer = at(first, page + offset);
            let addr = pointer.as_ptr().addr();
            refused(&mut engine, pointer, FreeError::Interior { addr });
        }
    }
    free(&mut engine, first);
    free(&mut engine, second);
    engine.check().unwrap();
}

#[test]
fn the_interior_of_a_page_block_is_refused() {
    let (_source, mut engine) = paged(None);
    for size in [48, 80, 300, 1792, 2720] {
        let block = engine.alloc(size).unwrap();
        let class_size = CLASS_SIZES[class_of(size).unwrap()];
        for inside in [16, (class_size / 2) & !15, class_size - 16] {
            let pointer = at(block, block.as_ptr().addr() + inside);
            let addr = pointer.as_ptr().addr();
            refused(&mut engine, pointer, FreeError::Interior { addr });
        }
        free(&mut engine, block);
    }
}

#[test]
fn a_block_start_of_one_class_inside_another_classs_page_is_refused() {
    let (_source, mut engine) = paged(None);
    let sixty_four = engine.alloc(64).unwrap();
    let forty_eight = engine.alloc(48).unwrap();
    assert_eq!(chunk_of(sixty_four), chunk_of(forty_eight));
    assert_ne!(page_of(sixty_four), page_of(forty_eight));
    // In the 48-byte page, where a second 64-byte block would start: 16 bytes into its
    // second block.
    let pointer = at(sixty_four, page_of(forty_eight) + HEADER + 64);
    let addr = pointer.as_ptr().addr();
    refused(&mut engine, pointer, FreeError::Interior { addr });
    // In the 64-byte page, where a second 48-byte block would start: inside its first block.
    let pointer = at(sixty_four, page_of(sixty_four) + HEADER + 48);
    let addr = pointer.as_ptr().addr();
    refused(&mut engine, pointer, FreeError::Interior { addr });
    // The other class's block itself is a good pointer, whichever page the free starts from.
    assert_eq!(engine.validate(forty_eight), Ok(()));
    free(&mut engine, forty_eight);
    free(&mut engine, sixty_four);
}

#[test]
fn a_pointer_past_a_pages_last_block_is_refused() {
    let (_source, mut engine) = paged(None);
    // 80-byte blocks leave 32 bytes at the end of a page; 48-byte ones fill it to the byte.
    // Pages of 640, 1280 and 2720-byte blocks leave room for part of one more past their last
    // block, and the first two carve from a block their address picks.
    for size in [80, 48, 640, 1280, 2720] {
        let class = class_of(size).unwrap();
        let capacity = page_capacity(class);
        let blocks: Vec<_> = (0..capacity).map(|_| engine.alloc(size).unwrap()).collect();
        let page = page_of(blocks[0]);
        assert!(blocks.iter().all(|&block| page_of(block) == page), "one page holds them all");
        let past = page + first_offset(class) + capacity * size;
        assert!(past <= page + PAGE);
        let pointer = at(blocks[0], past);
        let addr = pointer.as_ptr().addr();
        let error = if past == page + PAGE {
            // The next page's header, whatever that page is used for; past the chunk's last
            // page, memory that is not the engine's.
            engine.validate(pointer).unwrap_err()
        } else {
            // Inside the page, where no block starts.
            FreeError::Interior { addr }
        };
        if past == chunk_of(blocks[0]) + CHUNK_SIZE {
            assert_eq!(error, FreeError::Foreign { addr });
        } else {
            assert!(
                matches!(error, FreeError::Interior { .. } | FreeError::NotInUse { .. }),
                "{error:?}"
            );
        }
        refused(&mut engine, pointer, error);
        for block in blocks {
            free(&mut engine, block);
        }
    }
    engine.check().unwrap();
}

#[test]
fn a_freed_page_block_and_a_never_carved_one_are_refused() {
    let (_source, mut engine) = paged(None);
    let kept = engine.alloc(64).unwrap();
    let freed = engine.alloc(64).unwrap();
    assert_eq!(page_of(kept), page_of(freed));
    free(&mut engine, freed);
    let addr = freed.as_ptr().addr();
    refused(&mut engine, freed, FreeError::NotInUse { addr });
    // The page's last block has never been handed out.
    let last = at(kept, page_of(kept) + HEADER + (page_capacity(class_of(64).unwrap()) - 1) * 64);
    let addr = last.as_ptr().addr();
    refused(&mut engine, last, FreeError::NotInUse { addr });
    free(&mut engine, kept);
}

#[test]
fn a_block_of_another_paged_engine_is_refused_as_foreign() {
    let (_source, mut engine) = paged(None);
    let (_other_source, mut other) = paged(None);
    let ours = engine.alloc(64).unwrap();
    let theirs = other.alloc(64).unwrap();
    let theirs_in_page = other.alloc(300).unwrap();
    // Also addresses no chunk can hold: the lowest 16 KiB, and the top of the address space.
    let extremes = [at(ours, 16), at(ours, PAGE + HEADER), at(ours, usize::MAX & !15)];
    for pointer in [theirs, theirs_in_page].into_iter().chain(extremes) {
        let addr = pointer.as_ptr().addr();
        refused(&mut engine, pointer, FreeError::Foreign { addr });
    }
    free(&mut other, theirs);
    free(&mut other, theirs_in_page);
    free(&mut engine, ours);
}

#[test]
fn a_pointer_into_a_large_chunk_that_looks_like_a_page_is_refused() {
    let (_source, mut engine) = paged(None);
    let small = engine.alloc(64).unwrap();
    let size = 2 * CHUNK_SIZE + 1000;
    let large = engine.alloc(size).unwrap();
    let chunk = chunk_of(large);
    let end = large.as_ptr().addr() + size;
    // The block's owner fills its data with what page headers look like, at every page
    // boundary it covers (within its first 16 KiB, and where later 16 KiB boundaries fall).
    let mut boundary = chunk + PAGE;
    while boundary + 2 <= end {
        if boundary >= large.as_ptr().addr() {
            let header = at(large, boundary).cast::<u16>();
            // SAFETY: the two bytes lie inside the large block, which is in use and ours.
            unsafe { header.write(PAGE_MAGIC) };
        }
        boundary += PAGE;
    }
    let before = engine.stats();
    for offset in [PAGE + HEADER, CHUNK_SIZE, CHUNK_SIZE + HEADER, 2 * CHUNK_SIZE + HEADER] {
        let pointer = at(large, chunk + offset);
        let addr = pointer.as_ptr().addr();
        refused(&mut engine, pointer, FreeError::Interior { addr });
    }
    assert_eq!(engine.stats(), before);
    free(&mut engine, large);
    free(&mut engine, small);
    engine.check().unwrap();
}

#[test]
fn a_whole_chunk_whose_block_holds_page_like_bytes_is_not_read_as_paged() {
    let (_source, mut engine) = paged(None);
    // 4080-byte blocks do not fit a page: a whole chunk of four, whose first block covers the
    // place where the second page's header would be.
    let mut blocks: Vec<_> = (0..4).map(|_| engine.alloc(4080).unwrap()).collect();
    let chunk = chunk_of(blocks[0]);
    assert!(blocks.iter().all(|&block| chunk_of(block) == chunk));
    blocks.sort_by_key(|block| block.as_ptr().addr());
    let (first, second) = (blocks[0], blocks[1]);
    assert_eq!(first.as_ptr().addr(), chunk + HEADER);
    let fake = at(first, chunk + PAGE);
    assert!(fake.as_ptr().addr() > first.as_ptr().addr());
    // SAFETY: the bytes are inside `first`, which is in use and ours; a header's magic, state
    // (`Avail`) and class 0 are what a page of 16-byte blocks would have.
    unsafe { fake.cast::<[u8; 4]>().write([0x50, 0x4d, 0, 0]) };
    // Where a 16-byte block of such a page would start lies inside `first`.
    let pointer = at(first, chunk + PAGE + HEADER);
    let addr = pointer.as_ptr().addr();
    refused(&mut engine, pointer, FreeError::Interior { addr });
    // SAFETY: in use in `engine`.
    assert_eq!(unsafe { engine.usable_size(second) }, 4080);
    for block in blocks {
        free(&mut engine, block);
    }
    engine.check().unwrap();
}

#[test]
fn a_large_chunk_shorter_than_a_chunk_refuses_pointers_past_its_end_as_foreign() {
    let (_source, mut engine) = paged(None);
    let large = engine.alloc(5000 + 8160).unwrap();
    // The chunk is 13 232 bytes: the last 64 bytes of its 16 KiB lie past it, as would the
    // block of a fourth page's 64-byte class.
    for offset in [CHUNK_SIZE - 64, 13_232] {
        let pointer = at(large, chunk_of(large) + offset);
        let addr = pointer.as_ptr().addr();
        refused(&mut engine, pointer, FreeError::Foreign { addr });
    }
    // The chunk's last bytes are still its own.
    let pointer = at(large, chunk_of(large) + 13_216);
    let addr = pointer.as_ptr().addr();
    refused(&mut engine, pointer, FreeError::Interior { addr });
    free(&mut engine, large);
}

// ---------------------------------------------------------------------------------------------
// Layout: blocks stay in their page, no block is handed out twice.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_paged_class_fills_its_page_without_leaving_it_or_overlapping() {
    // Under Miri every fourth class, and the last ones that fit a page.
    let classes: Vec<usize> = (0..CLASS_COUNT)
        .filter(|&class| page_capacity(class) > 0)
        .filter(|&class| !MIRI || class % 4 == 0 || CLASS_SIZES[class] >= 2048)
        .collect();
    assert!(classes.iter().any(|&class| CLASS_SIZES[class] == 3264));
    for class in classes {
        let size = CLASS_SIZES[class];
        let (source, mut engine) = paged(None);
        let capacity = page_capacity(class);
        let blocks: Vec<_> = (0..capacity).map(|_| engine.alloc(size).unwrap()).collect();
        let page = page_of(blocks[0]);
        let mut starts = HashSet::new();
        for (index, &block) in blocks.iter().enumerate() {
            let offset = block.as_ptr().addr() - page;
            assert!(offset >= HEADER && offset + size <= PAGE, "class {size}: offset {offset}");
            assert_eq!((offset - first_offset(class)) % size, 0, "class {size}");
            let align = 1 << size.trailing_zeros().min(first_offset(class).trailing_zeros());
            assert_eq!(block.as_ptr().addr() % align, 0, "class {size}");
            assert!(starts.insert(offset), "class {size}: block {offset} handed out twice");
            // SAFETY: the block is in use, `size` bytes long, and only this test uses it.
            unsafe { stamp(block, size, index as u8) };
        }
        for (index, &block) in blocks.iter().enumerate() {
            // SAFETY: as above.
            assert!(unsafe { stamped(block, size, index as u8) }, "class {size}: overwritten");
        }
        assert_eq!(engine.stats().live_blocks, capacity);
        // The next block is another page of the same chunk.
        let next = engine.alloc(size).unwrap();
        assert_ne!(page_of(next), page);
        assert_eq!(chunk_of(next), chunk_of(blocks[0]));
        assert_eq!(source.chunks_out(), 1);
        engine.check().unwrap();
        for block in blocks.into_iter().chain([next]) {
            free(&mut engine, block);
        }
        assert_eq!(engine.trim(), CHUNK_SIZE);
        assert_eq!(source.chunks_out(), 0);
    }
}

#[test]
fn aligned_layouts_served_from_pages_are_aligned_and_inside_their_page() {
    let (_source, mut engine) = paged(None);
    let mut blocks = Vec::new();
    for (size, align) in [(16, 32), (100, 64), (16, 128), (300, 256), (16, 1024), (1000, 2048)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        for _ in 0..2 {
            let block = engine.alloc_layout(layout).unwrap();
            let offset = block.as_ptr().addr() - page_of(block);
            assert_eq!(block.as_ptr().addr() % align, 0, "{layout:?}");
            assert!(offset >= HEADER && offset + size <= PAGE, "{layout:?}: offset {offset}");
            // SAFETY: in use in `engine`.
            assert!(unsafe { engine.usable_size(block) } >= size);
            blocks.push(block);
        }
    }
    engine.check().unwrap();
    for block in blocks {
        free(&mut engine, block);
    }
    engine.trim();
    assert_eq!(engine.stats().bytes_held, 0);
}

#[test]
fn a_mixed_workload_never_hands_out_a_block_twice_and_keeps_every_count_right() {
    let (source, mut engine) = paged(None);
    let sizes = [16, 40, 64, 100, 200, 300, 700, 1500, 2500, 3000, 4100, 9000, 40_000];
    let rounds = if MIRI { 300 } else { 6000 };
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    let mut next = || random.next();
    for round in 0..rounds {
        let roll = next();
        // Grow for a while, then shrink, so that pages fill, empty and go unused.
        let grow = (round / 500) % 2 == 0;
        if live.is_empty() || roll % 3 != 0 && grow || roll % 5 == 0 && !grow {
            let size = sizes[(roll >> 8) as usize % sizes.len()];
            let block = engine.alloc(size).unwrap();
            let tag = (round % 251) as u8;
            // SAFETY: the block was just handed out and holds `size` bytes.
            unsafe { stamp(block, size.min(256), tag) };
            live.push((block, size, tag));
        } else {
            let (block, size, tag) = live.swap_remove((roll >> 8) as usize % live.len());
            // SAFETY: the block is in use and holds `size` bytes.
            assert!(unsafe { stamped(block, size.min(256), tag) }, "a live block was overwritten");
            free(&mut engine, block);
            // Not in use, or in a chunk already given back.
            let addr = block.as_ptr().addr();
            let error = engine.validate(block).unwrap_err();
            assert!(
                [FreeError::NotInUse { addr }, FreeError::Foreign { addr }].contains(&error),
                "{error:?}"
            );
        }
        if round % 97 == 0 {
            engine.check().unwrap();
            let stats = engine.stats();
            assert_eq!(stats.live_blocks, live.len());
            let in_small: usize = live
                .iter()
                .filter_map(|&(_, size, _)| class_of(size))
                .map(|class| CLASS_SIZES[class])
                .sum();
            assert!(stats.bytes_in_use >= in_small);
            let mut spans: Vec<(usize, usize)> =
                live.iter().map(|&(block, size, _)| (block.as_ptr().addr(), size)).collect();
            spans.sort_unstable();
            for pair in spans.windows(2) {
                assert!(pair[0].0 + pair[0].1 <= pair[1].0, "blocks overlap: {pair:?}");
            }
            if round % 3 == 0 {
                engine.trim();
                engine.check().unwrap();
            }
        }
    }
    for (block, size, tag) in live.drain(..) {
        // SAFETY: in use, `size` bytes.
        assert!(unsafe { stamped(block, size.min(256), tag) });
        free(&mut engine, block);
    }
    engine.check().unwrap();
    engine.trim();
    assert_eq!(engine.stats().bytes_held, 0);
    assert_eq!(source.chunks_out(), 0);
}

// ---------------------------------------------------------------------------------------------
// Page and chunk counts through frees, trims, resets and drops.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_page_with_a_block_out_is_neither_unused_nor_trimmed() {
    let (source, mut engine) = paged(None);
    let blocks: Vec<_> = (0..3).map(|_| engine.alloc(64).unwrap()).collect();
    let other = engine.alloc(300).unwrap();
    free(&mut engine, blocks[0]);
    free(&mut engine, blocks[2]);
    assert_eq!(engine.trim(), 0);
    assert_eq!(source.chunks_out(), 1);
    assert_eq!(engine.validate(blocks[1]), Ok(()));
    // SAFETY: in use in `engine`, 64 bytes.
    unsafe { stamp(blocks[1], 64, 0xa5) };
    // Two new classes take the two unused pages; the page with a block out is not among them.
    let more = [engine.alloc(16).unwrap(), engine.alloc(1000).unwrap()];
    for block in more {
        assert_ne!(page_of(block), page_of(blocks[1]));
        assert_eq!(chunk_of(block), chunk_of(blocks[1]));
    }
    // SAFETY: as above.
    assert!(unsafe { stamped(blocks[1], 64, 0xa5) });
    engine.check().unwrap();
    for block in [blocks[1], other].into_iter().chain(more) {
        free(&mut engine, block);
    }
    assert_eq!(engine.trim(), CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn trim_keeps_a_split_chunk_until_its_last_page_is_empty() {
    let (source, mut engine) = paged(None);
    let blocks: Vec<_> = [16, 32, 48, 64].iter().map(|&size| engine.alloc(size).unwrap()).collect();
    assert_eq!(source.chunks_out(), 1);
    for &block in &blocks[..3] {
        free(&mut engine, block);
    }
    assert_eq!(engine.trim(), 0, "a page is still in use");
    assert_eq!(source.chunks_out(), 1);
    let stats = engine.stats();
    assert_eq!((stats.chunks, stats.live_blocks, stats.bytes_held), (1, 1, CHUNK_SIZE));
    engine.check().unwrap();
    // A new class takes a page the trim made unused, not a new chunk.
    let again = engine.alloc(80).unwrap();
    assert_eq!(chunk_of(again), chunk_of(blocks[3]));
    assert_eq!(source.chunks_out(), 1);
    free(&mut engine, again);
    assert_eq!(engine.trim(), 0);
    free(&mut engine, blocks[3]);
    assert_eq!(engine.trim(), CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
    assert_eq!(engine.stats().chunks, 0);
    engine.check().unwrap();
}

/// Makes 6 pages unused in two split chunks, each chunk kept by a block in its first page.
/// Returns the two keepers.
fn two_chunks_with_six_unused_pages(engine: &mut Engine<TestSource>) -> [NonNull<u8>; 2] {
    let sizes = [16, 32, 48, 64, 80, 96, 112, 128];
    let blocks: Vec<_> = sizes.iter().map(|&size| engine.alloc(size).unwrap()).collect();
    let keepers = [blocks[0], blocks[4]];
    assert_ne!(chunk_of(keepers[0]), chunk_of(keepers[1]));
    for block in blocks.into_iter().filter(|block| !keepers.contains(block)) {
        free(engine, block);
    }
    assert_eq!(engine.trim(), 0);
    keepers
}

#[test]
fn pages_emptied_past_the_spare_limit_go_unused_and_serve_other_classes() {
    let (source, mut engine) = paged(None);
    let keepers = two_chunks_with_six_unused_pages(&mut engine);
    assert_eq!(source.chunks_out(), 2);
    // 160-byte blocks: 25 a page. The class takes the six unused pages, then a whole chunk.
    let per_page = page_capacity(class_of(160).unwrap());
    let blocks: Vec<_> = (0..6 * per_page + 1).map(|_| engine.alloc(160).unwrap()).collect();
    assert_eq!(source.chunks_out(), 3);
    let pages: HashSet<usize> =
        blocks[..6 * per_page].iter().map(|&block| page_of(block)).collect();
    assert_eq!(pages.len(), 6);
    engine.check().unwrap();
    // Freed page by page: the first four emptied pages become spares, the fifth goes unused,
    // so that another class can have it without a new chunk.
    for block in &blocks[..5 * per_page] {
        free(&mut engine, *block);
        assert_eq!(engine.check(), Ok(()));
    }
    assert_eq!(source.chunks_out(), 3);
    let newcomer = engine.alloc(176).unwrap();
    assert_eq!(source.chunks_out(), 3, "the unused page served");
    assert!(pages.contains(&page_of(newcomer)));
    engine.check().unwrap();
    for block in blocks[5 * per_page..].iter().copied().chain([newcomer]).chain(keepers) {
        free(&mut engine, block);
    }
    assert_eq!(engine.stats().live_blocks, 0);
    assert_eq!(engine.trim(), 3 * CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
    let ledger = source.ledger();
    assert_eq!(ledger.acquired, ledger.released);
}

/// A page of one block leaves `full` and empties on the same free. It is handled as emptied, a
/// spare up to the limit and then unused, not left behind the head of its class's `avail` list,
/// where no later free would reach it.
#[test]
fn one_block_pages_emptied_past_the_spare_limit_go_unused_and_serve_other_classes() {
    let (source, mut engine) = paged(None);
    let keepers = two_chunks_with_six_unused_pages(&mut engine);
    assert_eq!(page_capacity(class_of(2048).unwrap()), 1);
    // Six pages of one block each, then a chunk of the class's own, which heads its list.
    let blocks: Vec<_> = (0..7).map(|_| engine.alloc(2048).unwrap()).collect();
    assert_eq!(source.chunks_out(), 3);
    let pages: HashSet<usize> = blocks[..6].iter().map(|&block| page_of(block)).collect();
    assert_eq!(pages.len(), 6);
    for &block in &blocks[..6] {
        free(&mut engine, block);
        assert_eq!(engine.check(), Ok(()));
    }
    // Four of the emptied pages wait as spares; the other two went unused.
    let newcomer = engine.alloc(176).unwrap();
    assert_eq!(source.chunks_out(), 3, "an unused page served");
    assert!(pages.contains(&page_of(newcomer)));
    engine.check().unwrap();
    for block in [blocks[6], newcomer].into_iter().chain(keepers) {
        free(&mut engine, block);
    }
    assert_eq!(engine.stats().live_blocks, 0);
    assert_eq!(engine.trim(), 3 * CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
}

/// Builds an engine with pages on `avail`, `full`, `spare` and the unused list, a whole chunk
/// and a large chunk, and returns the blocks in use.
fn pages_on_every_list(engine: &mut Engine<TestSource>) -> Vec<NonNull<u8>> {
    let mut keep = two_chunks_with_six_unused_pages(engine).to_vec();
    let per_page = page_capacity(class_of(160).unwrap());
    // Two full pages of 160 bytes, a third as the head with one block.
    let blocks: Vec<_> = (0..2 * per_page + 1).map(|_| engine.alloc(160).unwrap()).collect();
    // The second full page empties: a spare.
    let second_page = page_of(blocks[per_page]);
    for &block in &blocks {
        if page_of(block) == second_page {
            free(engine, block);
        } else {
            keep.push(block);
        }
    }
    // A whole chunk and a large one.
    keep.push(engine.alloc(5000).unwrap());
    keep.push(engine.alloc(3 * CHUNK_SIZE).unwrap());
    engine.check().unwrap();
    let stats = engine.stats();
    assert_eq!(stats.chunks, 3, "two split chunks and a whole one");
    assert_eq!(stats.live_blocks, keep.len());
    keep
}

#[test]
fn reset_with_pages_on_every_list_keeps_the_counts_and_hands_each_block_out_once() {
    let (source, mut engine) = paged(None);
    let old = pages_on_every_list(&mut engine);
    let before = engine.stats();
    // SAFETY: none of the blocks is used again.
    unsafe { engine.reset() };
    engine.check().unwrap();
    let after = engine.stats();
    assert_eq!((after.live_blocks, after.chunks), (0, before.chunks));
    assert_eq!(after.bytes_held, before.bytes_held - 3 * CHUNK_SIZE - 64, "the large one goes");
    for &block in &old {
        assert!(engine.validate(block).is_err(), "a block from before the reset is refused");
    }
    // Everything serves again from the chunks kept, each block once.
    let out_before = source.chunks_out();
    let mut seen = HashSet::new();
    let per_page = page_capacity(class_of(160).unwrap());
    for size in [16, 80, 5000].into_iter().chain(core::iter::repeat_n(160, 3 * per_page)) {
        let block = engine.alloc(size).unwrap();
        assert!(seen.insert(block.as_ptr().addr()), "handed out twice");
    }
    assert_eq!(source.chunks_out(), out_before, "no chunk taken: the kept pages served");
    engine.check().unwrap();
    assert_eq!(engine.stats().live_blocks, seen.len());
    drop(engine);
    assert_eq!(source.chunks_out(), 0);
    let ledger = source.ledger();
    assert_eq!(ledger.acquired, ledger.released);
}

#[test]
fn dropping_an_engine_with_pages_on_every_list_gives_each_chunk_back_once() {
    let (source, mut engine) = paged(None);
    let blocks = pages_on_every_list(&mut engine);
    assert!(!blocks.is_empty());
    assert_eq!(source.chunks_out(), 4);
    drop(engine);
    // The ledger panics on a chunk given back twice or with another layout.
    let ledger = source.ledger();
    assert!(ledger.out.is_empty(), "chunks leaked: {:?}", ledger.out);
    assert_eq!(ledger.acquired, ledger.released);
}

#[test]
fn trim_after_reset_gives_back_every_split_chunk_exactly_once() {
    let (source, mut engine) = paged(None);
    let _old = pages_on_every_list(&mut engine);
    // SAFETY: none of the blocks is used again.
    unsafe { engine.reset() };
    let held = engine.stats().bytes_held;
    assert_eq!(engine.trim(), held);
    assert_eq!(source.chunks_out(), 0);
    let stats = engine.stats();
    assert_eq!((stats.chunks, stats.bytes_held, stats.live_blocks), (0, 0, 0));
    engine.check().unwrap();
}

#[test]
fn stats_count_a_split_chunk_once_and_each_block_at_its_class_size() {
    let (_source, mut engine) = paged(None);
    let sizes = [16, 100, 300, 2000];
    let blocks: Vec<_> = sizes.iter().map(|&size| engine.alloc(size).unwrap()).collect();
    let stats = engine.stats();
    assert_eq!((stats.chunks, stats.live_blocks, stats.bytes_held), (1, 4, CHUNK_SIZE));
    let expected: usize = sizes.iter().map(|&size| CLASS_SIZES[class_of(size).unwrap()]).sum();
    assert_eq!(stats.bytes_in_use, expected);
    for block in blocks {
        free(&mut engine, block);
    }
    let stats = engine.stats();
    assert_eq!((stats.chunks, stats.live_blocks, stats.bytes_in_use), (1, 0, 0));
}

#[test]
fn check_sees_a_moved_paged_engine_and_try_free_still_finds_its_page_blocks() {
    let (_source, mut engine) = paged(None);
    let first = engine.alloc(64).unwrap();
    let second = engine.alloc(300).unwrap();
    let mut moved = Box::new(engine);
    assert_eq!(moved.check().unwrap_err().problem, Problem::WrongOwner);
    free(&mut moved, second);
    free(&mut moved, first);
    let addr = first.as_ptr().addr();
    refused_without_check(&mut moved, first, FreeError::NotInUse { addr });
}

/// As [`refused`], for an engine whose `check` is known to fail.
fn refused_without_check<S: ChunkSource>(
    engine: &mut Engine<S>,
    pointer: NonNull<u8>,
    error: FreeError,
) {
    let before = engine.stats();
    // SAFETY: `pointer` is not an in-use block of `engine`, so this only checks it.
    assert_eq!(unsafe { engine.try_free(pointer) }, Err(error));
    assert_eq!(engine.stats(), before);
}

// ---------------------------------------------------------------------------------------------
// The limit: cached empty pages go back before a refusal.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_limited_whole_chunk_engine_gives_its_cached_chunk_back_and_serves() {
    // The behaviour the paged engine is held to below: a request that would pass the limit
    // first has the engine's cached empty chunks given back, then is tried again.
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), Some(CHUNK_SIZE));
    let block = engine.alloc(16).unwrap();
    free(&mut engine, block);
    assert!(engine.alloc(80).is_some());
    assert_eq!(source.chunks_out(), 1);
}

#[test]
fn a_limited_paged_engine_serves_a_new_class_from_the_page_its_own_trim_frees() {
    let (source, mut engine) = paged(Some(CHUNK_SIZE));
    let blocks: Vec<_> = [16, 32, 48, 64].iter().map(|&size| engine.alloc(size).unwrap()).collect();
    assert_eq!(source.chunks_out(), 1);
    // The 16-byte page is empty, cached as its class's head: a trim makes it unused.
    free(&mut engine, blocks[0]);
    let first_try = engine.alloc(80);
    let retry = if first_try.is_none() { engine.alloc(80) } else { None };
    assert!(
        first_try.is_some(),
        "refused although the trim the limit triggered freed a page (a retry got {retry:?})"
    );
    engine.check().unwrap();
}

#[test]
fn a_limited_paged_engine_gives_a_class_that_filled_its_page_the_page_its_trim_frees() {
    let (source, mut engine) = paged(Some(CHUNK_SIZE));
    let per_page = page_capacity(class_of(64).unwrap());
    let others: Vec<_> = [16, 32, 48].iter().map(|&size| engine.alloc(size).unwrap()).collect();
    let full: Vec<_> = (0..per_page).map(|_| engine.alloc(64).unwrap()).collect();
    assert_eq!(source.chunks_out(), 1);
    assert_eq!(full.len(), per_page);
    free(&mut engine, others[0]);
    // The 64-byte page is full and no page is unused: the class asks for a whole chunk, which
    // the limit refuses; the trim that follows makes the 16-byte page unused.
    let first_try = engine.alloc(64);
    let retry = if first_try.is_none() { engine.alloc(64) } else { None };
    assert!(
        first_try.is_some(),
        "refused although the trim the limit triggered freed a page (a retry got {retry:?})"
    );
    engine.check().unwrap();
}

#[test]
fn a_limited_locked_child_serves_a_new_class_from_the_page_its_own_trim_frees() {
    let parent = LockedPool::new(TestSource::default(), None);
    let child = parent.child_with_limit(CHUNK_SIZE);
    let blocks: Vec<_> = [16, 32, 48, 64].iter().map(|&size| child.alloc(size).unwrap()).collect();
    // SAFETY: from `child`, not used again.
    assert_eq!(unsafe { child.try_free(blocks[0]) }, Ok(()));
    let first_try = child.alloc(80);
    let retry = if first_try.is_none() { child.alloc(80) } else { None };
    assert!(
        first_try.is_some(),
        "refused although the trim the limit triggered freed a page (a retry got {retry:?})"
    );
}

#[test]
fn a_page_block_freed_through_a_pointer_that_covers_only_the_block_is_accepted() {
    let (source, mut engine) = paged(None);
    let keeper = engine.alloc(16).unwrap();
    let mut blocks = Vec::new();
    for size in [64, 300, 2000] {
        let block = engine.alloc(size).unwrap();
        blocks.push((block, size));
    }
    // Four pages in use: three of them are not the chunk's first, whose header is the chunk's.
    let chunk = chunk_of(keeper);
    let pages: HashSet<_> =
        blocks.iter().map(|&(block, _)| page_of(block)).chain([page_of(keeper)]).collect();
    assert_eq!(pages, (0..4).map(|index| chunk + index * PAGE).collect());
    for (block, size) in blocks {
        // SAFETY: the block is in use, `size` bytes long, and nothing else uses it.
        let slot = unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), size) };
        slot.fill(0x5a);
        // A pointer whose provenance is the block alone, as `Box<[u8]>` hands back.
        let narrow = NonNull::from(slot).cast::<u8>();
        free(&mut engine, narrow);
    }
    free(&mut engine, keeper);
    engine.check().unwrap();
    assert_eq!(engine.trim(), CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
}

// ---------------------------------------------------------------------------------------------
// Emptied pages passed on to larger classes, and where a chunk's first blocks lie.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_page_emptied_by_a_smaller_class_serves_the_next_larger_one_without_a_new_page() {
    let (source, mut engine) = paged(None);
    // A table that grows: each size allocated before the one it replaces is freed.
    let small = engine.alloc(96).unwrap();
    let middle = engine.alloc(160).unwrap();
    free(&mut engine, small);
    let large = engine.alloc(320).unwrap();
    assert_eq!(page_of(large), page_of(small), "the 96-byte class's emptied page");
    // Carved afresh for its new class, from the page's first block: the lines just written.
    assert_eq!(large, small);
    // The old class takes another page on its next block.
    let again = engine.alloc(96).unwrap();
    assert_ne!(page_of(again), page_of(large));
    assert_eq!(source.chunks_out(), 1);
    engine.check().unwrap();
    for block in [middle, large, again] {
        free(&mut engine, block);
    }
    engine.check().unwrap();
    assert_eq!(engine.trim(), CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn of_several_emptied_pages_the_largest_smaller_classs_goes_first() {
    let (_source, mut engine) = paged(None);
    let small = engine.alloc(96).unwrap();
    let middle = engine.alloc(160).unwrap();
    free(&mut engine, small);
    free(&mut engine, middle);
    // Both pages are empty; the 160-byte class's lines were written last.
    let large = engine.alloc(320).unwrap();
    assert_eq!(page_of(large), page_of(middle));
    let next = engine.alloc(640).unwrap();
    assert_eq!(page_of(next), page_of(small));
    engine.check().unwrap();
    for block in [large, next] {
        free(&mut engine, block);
    }
    engine.check().unwrap();
}

#[test]
fn a_page_with_a_block_in_use_or_a_larger_class_keeps_its_class() {
    let (_source, mut engine) = paged(None);
    // One block of the 96-byte class still in use: its page stays.
    let kept = engine.alloc(96).unwrap();
    let freed = engine.alloc(96).unwrap();
    free(&mut engine, freed);
    let larger = engine.alloc(320).unwrap();
    assert_ne!(page_of(larger), page_of(kept));
    // The 320-byte page, emptied, is not taken by a smaller class: two classes used in turn
    // do not pass a page back and forth.
    free(&mut engine, larger);
    let smaller = engine.alloc(160).unwrap();
    assert_ne!(page_of(smaller), page_of(larger));
    let larger_again = engine.alloc(320).unwrap();
    assert_eq!(page_of(larger_again), page_of(larger), "its class kept it");
    engine.check().unwrap();
    for block in [kept, smaller, larger_again] {
        free(&mut engine, block);
    }
    engine.check().unwrap();
}

#[test]
fn a_class_with_more_than_one_chunk_keeps_its_emptied_page() {
    let (source, mut engine) = paged(None);
    // The 96-byte class fills its page and takes a second one: its head is then not its only
    // chunk, and its pages stay with it.
    let per_page = page_capacity(class_of(96).unwrap());
    let blocks: Vec<_> = (0..per_page + 1).map(|_| engine.alloc(96).unwrap()).collect();
    let pages: HashSet<usize> = blocks.iter().map(|&block| page_of(block)).collect();
    assert_eq!(pages.len(), 2);
    for &block in &blocks {
        free(&mut engine, block);
    }
    let larger = engine.alloc(320).unwrap();
    assert!(!pages.contains(&page_of(larger)));
    assert_eq!(source.chunks_out(), 1);
    engine.check().unwrap();
    free(&mut engine, larger);
    engine.check().unwrap();
}

/// The sizes a table grown as a hash map grows takes in pages, each passing its emptied page on to
/// the next but one: the 96, 160, 320, 640, 1280 and 2720-byte classes.
const TABLE_IN_PAGES: [usize; 6] = [96, 160, 320, 640, 1280, 2720];

/// A table grown through `sizes`, each allocated before the one it replaces is freed: the last.
fn grow_a_table(engine: &mut Engine<TestSource>, sizes: &[usize]) -> NonNull<u8> {
    let mut table = engine.alloc(sizes[0]).unwrap();
    for &size in &sizes[1..] {
        let grown = engine.alloc(size).unwrap();
        free(engine, table);
        table = grown;
    }
    table
}

/// A table grown through its sizes in pages and then to a whole chunk's class, `last` bytes:
/// the whole chunk's block.
fn grow_a_table_to_a_whole_chunk(engine: &mut Engine<TestSource>, last: usize) -> NonNull<u8> {
    let mut sizes = TABLE_IN_PAGES.to_vec();
    sizes.push(last);
    grow_a_table(engine, &sizes)
}

#[test]
fn a_split_chunk_whose_passed_pages_all_empty_goes_back_while_another_chunk_is_held() {
    let (source, mut engine) = paged(None);
    let table = grow_a_table_to_a_whole_chunk(&mut engine, 5000);
    // The pages the table grew through are all empty: their chunk went back when the last of
    // them emptied, and the table's whole chunk is all the engine holds.
    assert_eq!(chunk_of(table) % CHUNK_SIZE, 0);
    assert_eq!(source.chunks_out(), 1);
    assert_eq!(source.ledger().released, 1);
    assert_eq!(engine.stats().bytes_held, CHUNK_SIZE);
    engine.check().unwrap();
    // A new page comes from a new chunk, and the engine goes on as before.
    let buffer = engine.alloc(800).unwrap();
    assert_ne!(chunk_of(buffer), chunk_of(table));
    assert_eq!(source.chunks_out(), 2);
    engine.check().unwrap();
    free(&mut engine, buffer);
    free(&mut engine, table);
    engine.check().unwrap();
    drop(engine);
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn a_split_chunk_with_a_block_in_use_or_the_engines_only_chunk_stays() {
    // A block of another class in use in one of the chunk's pages keeps the chunk.
    let (source, mut engine) = paged(None);
    let kept = engine.alloc(48).unwrap();
    let table = grow_a_table_to_a_whole_chunk(&mut engine, 5000);
    assert_eq!(source.chunks_out(), 2);
    assert_eq!(source.ledger().released, 0);
    engine.check().unwrap();
    free(&mut engine, kept);
    free(&mut engine, table);
    engine.check().unwrap();

    // A table that stays in its pages leaves the engine's only chunk where it is.
    let (source, mut engine) = paged(None);
    let table = grow_a_table(&mut engine, &TABLE_IN_PAGES);
    free(&mut engine, table);
    assert_eq!(source.chunks_out(), 1);
    assert_eq!(source.ledger().released, 0);
    engine.check().unwrap();
    // Its pages serve the engine's next blocks.
    let again = engine.alloc(1280).unwrap();
    assert_eq!(source.chunks_out(), 1);
    free(&mut engine, again);
    engine.check().unwrap();
}

#[test]
fn a_class_used_over_and_over_after_its_page_was_passed_on_takes_no_chunk_each_time() {
    let (source, mut engine) = paged(None);
    let large = engine.alloc(5000).unwrap();
    // The 1280-byte class's page passed on from the 640-byte class: watched until it empties
    // the first time, which gives the chunk back, its other pages unused.
    let small = engine.alloc(640).unwrap();
    free(&mut engine, small);
    let block = engine.alloc(1280).unwrap();
    assert_eq!(page_of(block), page_of(small));
    free(&mut engine, block);
    assert_eq!(source.ledger().released, 1);
    // From then on the class takes a fresh page, not watched: a thousand blocks in turn cost one
    // chunk, kept.
    let acquired = source.ledger().acquired;
    for _ in 0..if MIRI { 20 } else { 1000 } {
        let block = engine.alloc(1280).unwrap();
        free(&mut engine, block);
    }
    assert_eq!(source.ledger().acquired, acquired + 1);
    assert_eq!(source.ledger().released, 1);
    engine.check().unwrap();
    free(&mut engine, large);
    engine.check().unwrap();
}

#[test]
fn the_first_page_a_split_chunk_gives_depends_on_the_chunks_address() {
    let (source, mut engine) = paged(None);
    // Sixteen classes, a page each, in four chunks: each chunk's pages are taken in turns from
    // one the chunk's address picks, so that the first pages of chunks do not all lie at
    // offset 0.
    let mut blocks = Vec::new();
    for size in (1..=32).map(|step| step * 16).filter(|&size| size <= 256) {
        let block = engine.alloc(size).unwrap();
        blocks.push(block);
        let chunk = chunk_of(block);
        let turn = blocks.iter().filter(|&&other| chunk_of(other) == chunk).count() - 1;
        assert_eq!(page_of(block), page_taken(chunk, turn), "the {size}-byte class's page");
    }
    assert_eq!(source.chunks_out(), 4);
    for block in blocks {
        free(&mut engine, block);
    }
    engine.check().unwrap();
}

#[test]
fn a_fresh_page_of_a_few_large_blocks_hands_them_out_from_one_its_address_picks() {
    let (_source, mut engine) = paged(None);
    for size in [640, 896, 1280, 2048, 2720, 3264] {
        let class = class_of(size).unwrap();
        let capacity = page_capacity(class);
        let blocks: Vec<_> = (0..capacity).map(|_| engine.alloc(size).unwrap()).collect();
        let page = page_of(blocks[0]);
        let start = colour(page / PAGE) % capacity;
        // In address order from that one, wrapping round, each block once.
        for (turn, &block) in blocks.iter().enumerate() {
            let index = (start + turn) % capacity;
            assert_eq!(block.as_ptr().addr(), page + first_offset(class) + index * size);
        }
        engine.check().unwrap();
        for block in blocks {
            free(&mut engine, block);
        }
    }
    engine.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// LockedPool's children, which are paged.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_locked_childs_pages_go_back_to_the_parent_when_it_is_dropped() {
    let source = TestSource::default();
    let parent = LockedPool::new(source.clone(), Some(8 * CHUNK_SIZE));
    {
        let child = parent.child();
        let blocks: Vec<_> = [16, 96, 160, 320, 640, 896, 1280]
            .iter()
            .map(|&size| child.alloc(size).unwrap())
            .collect();
        assert_eq!(child.stats().chunks, 2, "seven classes, two split chunks");
        assert_eq!(parent.stats().bytes_lent, 2 * CHUNK_SIZE);
        assert_eq!(parent.available(), Some(6 * CHUNK_SIZE));
        // SAFETY: from `child`, not used again.
        assert_eq!(unsafe { child.try_free(blocks[1]) }, Ok(()));
        // The parent's checked free does not take a child's block.
        let addr = blocks[2].as_ptr().addr();
        // SAFETY: the block is not the parent's, so this only checks it.
        assert_eq!(unsafe { parent.try_free(blocks[2]) }, Err(FreeError::Foreign { addr }));
        child.check().unwrap();
        parent.check().unwrap();
    }
    assert_eq!(parent.stats().bytes_lent, 0);
    assert_eq!(parent.available(), Some(8 * CHUNK_SIZE));
    parent.check().unwrap();
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn a_reset_locked_child_serves_its_kept_pages_again() {
    let source = TestSource::default();
    let parent = LockedPool::new(source.clone(), None);
    let mut child = parent.child();
    let blocks: Vec<_> = (0..100).map(|i| child.alloc(16 + i % 7 * 48).unwrap()).collect();
    let chunks = child.stats().chunks;
    child.reset();
    child.check().unwrap();
    assert_eq!(child.stats().live_blocks, 0);
    for &block in &blocks[..4] {
        assert!(child.with(|engine| engine.validate(block)).is_err());
    }
    let again: HashSet<usize> =
        (0..100).map(|i| child.alloc(16 + i % 7 * 48).unwrap().as_ptr().addr()).collect();
    assert_eq!(again.len(), 100);
    assert_eq!(child.stats().chunks, chunks);
    child.check().unwrap();
    drop(child);
    assert_eq!(source.chunks_out(), 0);
}

#[cfg(feature = "allocator-api2")]
#[test]
fn a_buffer_grown_through_a_locked_childs_pages_keeps_its_bytes_and_gives_them_back() {
    use allocator_api2::alloc::Allocator;

    let source = TestSource::default();
    let parent = LockedPool::new(source.clone(), None);
    {
        let child = parent.child();
        let keeper = child.allocate(Layout::new::<[u64; 4]>()).unwrap();
        // A buffer that doubles through the classes, as a growing vector's does: from a page
        // to a page of another class each time, then to a whole chunk and a large one.
        let mut layout = Layout::from_size_align(16, 8).unwrap();
        let mut buffer = child.allocate(layout).unwrap().cast::<u8>();
        // SAFETY: the buffer is in use and holds `layout.size()` bytes.
        unsafe { stamp(buffer, layout.size(), 1) };
        while layout.size() < 2 * CHUNK_SIZE {
            let grown = Layout::from_size_align(layout.size() * 2, 8).unwrap();
            // SAFETY: `buffer` came from `child` with `layout`; only the result is used after.
            let moved = unsafe { child.grow(buffer, layout, grown) }.unwrap();
            buffer = moved.cast();
            // SAFETY: the grown buffer holds `grown.size()` bytes, the first ones copied.
            assert!(unsafe { stamped(buffer, layout.size(), 1) });
            // SAFETY: as above.
            unsafe { stamp(buffer, grown.size(), 1) };
            layout = grown;
            child.check().unwrap();
            assert_eq!(child.stats().live_blocks, 2);
        }
        // SAFETY: both came from `child` with these layouts and are not used again.
        unsafe {
            child.deallocate(buffer, layout);
            child.deallocate(keeper.cast(), Layout::new::<[u64; 4]>());
        }
        assert_eq!(child.stats().live_blocks, 0);
        child.check().unwrap();
    }
    parent.check().unwrap();
    assert_eq!(parent.stats().bytes_lent, 0);
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn a_locked_child_moved_after_allocating_frees_its_blocks_and_reports_the_old_owner() {
    // A child is returned by value, and its engine names its current address in every chunk
    // (page) it takes. Moving the child afterwards, which safe code may do (into a `Box`, a
    // struct, a `Vec`), leaves the chunks naming the old address: frees must still work, in
    // debug builds too, whose `free` checks the block first; `check` reports the old owner, as
    // the engine's documentation says.
    let parent = LockedPool::new(TestSource::default(), None);
    let child = parent.child();
    let before = child.alloc(64).unwrap();
    let moved = Box::new(child);
    let after = moved.alloc(64).unwrap();
    // SAFETY: both blocks are in use in `moved` (the same pool), and not used again.
    unsafe {
        moved.free(before);
        moved.free(after);
    }
    assert_eq!(moved.stats().live_blocks, 0);
    assert_eq!(moved.check().map_err(|error| error.problem), Err(Problem::WrongOwner));
}
