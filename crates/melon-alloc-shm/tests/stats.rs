//! What `ShmPool::stats` reports beyond the totals: per size class, the high-water mark, the
//! longest free run, the failures, and that the counters live in the pool for every handle.

use core::alloc::Layout;
use core::ptr::NonNull;

use melon_alloc_shm::{ShmClassStats, ShmError, ShmPool, ShmStats};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn free_all(shm: &ShmPool, blocks: impl IntoIterator<Item = NonNull<u8>>) {
    for block in blocks {
        // SAFETY: every block passed here came from `shm` and is freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }
}

/// The figures of the class whose blocks are `block_size` bytes: slabs, blocks in use, blocks,
/// requests and failures.
fn class(stats: &ShmStats, block_size: usize) -> (usize, usize, usize, u64, u64) {
    let class = stats.classes().iter().find(|class| class.block_size == block_size).unwrap();
    (class.slabs, class.blocks_in_use, class.blocks, class.requests, class.failures)
}

/// The per-class figures add up to the totals.
fn assert_classes_add_up(stats: &ShmStats) {
    let small: usize = stats.classes().iter().map(|class| class.blocks_in_use).sum();
    assert_eq!(small + stats.large_blocks, stats.live_blocks);
    let small_bytes: usize =
        stats.classes().iter().map(|class| class.blocks_in_use * class.block_size).sum();
    assert!(small_bytes <= stats.bytes_in_use);
    for class in stats.classes() {
        assert!(class.blocks_in_use <= class.blocks, "{class:?}");
        assert!(class.failures <= class.requests, "{class:?}");
    }
}

#[test]
fn stats_report_each_class_its_slabs_blocks_requests_and_failures() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let fresh = shm.stats().unwrap();
    assert_eq!(fresh.classes().len(), 36);
    assert_eq!(fresh.classes()[0].block_size, 16);
    assert_eq!(fresh.classes()[35].block_size, 8192);
    let untouched = |class: &ShmClassStats| {
        (class.slabs, class.blocks_in_use, class.blocks, class.requests, class.failures)
            == (0, 0, 0, 0, 0)
    };
    assert!(fresh.classes().iter().all(untouched));

    let sixty_four: Vec<_> = (0..100).map(|_| shm.alloc(64).unwrap()).collect();
    let five_k: Vec<_> = (0..3).map(|_| shm.alloc(5000).unwrap()).collect();
    // Aligned to 256, 100 bytes come from the 256-byte class, the first whose blocks are.
    let aligned = shm.alloc_layout(Layout::from_size_align(100, 256).unwrap()).unwrap();
    let large = shm.alloc(100_000).unwrap();
    let stats = shm.stats().unwrap();
    // 64-byte blocks fill one-page slabs exactly, 64 to a slab; 5 KiB blocks come twelve to a
    // slab of sixteen pages; 256-byte blocks sixteen to a page.
    assert_eq!(class(&stats, 64), (2, 100, 128, 100, 0));
    assert_eq!(class(&stats, 5120), (1, 3, 12, 3, 0));
    assert_eq!(class(&stats, 256), (1, 1, 16, 1, 0));
    assert_eq!(class(&stats, 112), (0, 0, 0, 0, 0));
    assert_eq!(stats.failures, 0);
    assert_classes_add_up(&stats);

    free_all(&shm, sixty_four.into_iter().chain(five_k).chain([aligned, large]));
    let stats = shm.stats().unwrap();
    // The requests stay counted; the slabs each class keeps for reuse stay, empty.
    let (slabs, in_use, _, requests, _) = class(&stats, 64);
    assert_eq!((in_use, requests), (0, 100));
    assert_eq!(slabs, 1, "the first slab stays for reuse; the one emptied behind it went back");
    assert_classes_add_up(&stats);
    shm.check().unwrap();
}

#[test]
fn requests_a_slab_cannot_serve_are_counted_in_their_class_and_failures_too() {
    // Fifteen data pages: too few for a slab of 8 KiB blocks, so each is a run of two pages.
    let shm = ShmPool::new(64 * KIB).unwrap();
    let blocks: Vec<_> = (0..7).map(|_| shm.alloc(8192).unwrap()).collect();
    assert_eq!(shm.alloc(8192), None);
    assert_eq!(shm.alloc(MIB), None);
    let stats = shm.stats().unwrap();
    assert_eq!(class(&stats, 8192), (0, 0, 0, 8, 1));
    assert_eq!(stats.large_blocks, 7);
    assert_eq!(stats.failures, 2, "the 8 KiB request and the 1 MiB one");
    assert_classes_add_up(&stats);
    free_all(&shm, blocks.iter().copied());
    // SAFETY: the block was freed, so the call only inspects it.
    assert!(unsafe { shm.try_free(blocks[0]) }.is_err());
    assert_eq!(shm.stats().unwrap().failures, 2, "a refused free is no allocation failure");
    shm.check().unwrap();
}

#[test]
fn peak_bytes_in_use_is_the_high_water_mark() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    assert_eq!(shm.stats().unwrap().peak_bytes_in_use, 0);
    let large: Vec<_> = (0..3).map(|_| shm.alloc(100_000).unwrap()).collect();
    let high = 3 * 100_000usize.next_multiple_of(PAGE);
    // No free yet: the figure is the present one.
    assert_eq!(shm.stats().unwrap().peak_bytes_in_use, high);
    free_all(&shm, large[..2].iter().copied());
    let small = shm.alloc(64).unwrap();
    let stats = shm.stats().unwrap();
    assert_eq!(stats.bytes_in_use, high / 3 + 64);
    assert_eq!(stats.peak_bytes_in_use, high);
    free_all(&shm, [large[2], small]);
    assert_eq!(shm.stats().unwrap().peak_bytes_in_use, high);

    // A block that moves to grow is, for a moment, in use twice over: that is the peak.
    let block = shm.alloc(4 * PAGE * 30).unwrap();
    // SAFETY: the block is in use; after the move its old pointer is not used.
    let moved = unsafe { shm.realloc(block, 8 * PAGE * 30) }.unwrap();
    assert_ne!(moved, block);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.bytes_in_use, 8 * PAGE * 30);
    assert_eq!(stats.peak_bytes_in_use, 12 * PAGE * 30);
    free_all(&shm, [moved]);
    shm.check().unwrap();
}

#[test]
fn largest_free_run_is_the_longest_run_of_free_pages() {
    let shm = ShmPool::new(MIB).unwrap();
    let fresh = shm.stats().unwrap();
    assert_eq!(fresh.largest_free_run, fresh.data_bytes);
    // Three-page blocks, one after another from the start of the data pages.
    let mut blocks = Vec::new();
    while let Some(block) = shm.alloc(3 * PAGE) {
        blocks.push(block);
    }
    let full = shm.stats().unwrap();
    assert!(full.largest_free_run < 3 * PAGE);
    assert_eq!(full.largest_free_run, full.available, "the tail is one run");
    // Blocks 1 to 4 make a run of twelve pages, then blocks 6 to 8 one of nine: both in the
    // bin of 8 to 15 pages, the shorter one first in it, where allocations look.
    free_all(&shm, blocks[1..5].iter().copied());
    free_all(&shm, blocks[6..9].iter().copied());
    let stats = shm.stats().unwrap();
    assert_eq!(stats.largest_free_run, 12 * PAGE);
    assert_eq!(stats.available, full.available + 21 * PAGE);
    free_all(&shm, blocks[5..6].iter().copied());
    assert_eq!(shm.stats().unwrap().largest_free_run, 24 * PAGE, "merged: 4 + 1 + 3 blocks");
    free_all(&shm, blocks[..1].iter().chain(&blocks[9..]).copied());
    assert_eq!(shm.stats().unwrap().largest_free_run, fresh.data_bytes);
    shm.check().unwrap();
}

#[test]
fn the_counters_live_in_the_pool_for_every_handle() {
    let made = ShmPool::memfd("stats", MIB).unwrap();
    let block = made.alloc(300).unwrap();
    free_all(&made, [block]);
    assert_eq!(made.alloc(2 * MIB), None);
    let fd = made.as_fd().try_clone_to_owned().unwrap();
    // SAFETY: the descriptor holds a pool made by this library just above.
    let attached = unsafe { ShmPool::attach(fd) }.unwrap();
    let stats = attached.stats().unwrap();
    assert_eq!(stats, made.stats().unwrap());
    // The refused request gave back the empty slab the class kept; its request stays counted.
    assert_eq!(class(&stats, 320), (0, 0, 0, 1, 0));
    assert_eq!(stats.peak_bytes_in_use, 320);
    assert_eq!(stats.failures, 1);
    assert_eq!(stats.segments, 1);
    assert_eq!((stats.reclaimed_processes, stats.reclaimed_bytes), (0, 0));
}

#[test]
fn stats_display_as_totals_then_a_line_per_class_in_use() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let fresh = shm.stats().unwrap().to_string();
    assert_eq!(fresh.lines().count(), 8, "totals and the header, no class yet:\n{fresh}");
    let small: Vec<_> = (0..100).map(|_| shm.alloc(64).unwrap()).collect();
    let medium: Vec<_> = (0..3).map(|_| shm.alloc(5000).unwrap()).collect();
    let large = shm.alloc(100_000).unwrap();
    assert_eq!(shm.alloc(8 * MIB), None);
    let stats = shm.stats().unwrap();
    let table = stats.to_string();
    let lines: Vec<_> = table.lines().collect();
    assert_eq!(lines.len(), 10, "{table}");
    let line = |label: &str| *lines.iter().find(|line| line.starts_with(label)).unwrap();
    assert!(line("capacity").contains(&format!("{} bytes in 1 segment,", 4 * MIB)), "{table}");
    assert!(line("capacity").contains(&format!("{} of them for data", stats.data_bytes)));
    let in_use = 100 * 64 + 3 * 5120 + 100_000usize.next_multiple_of(PAGE);
    assert!(line("in use").contains(&format!("{in_use} bytes in 104 blocks (1 large)")));
    assert!(line("in use").ends_with(&format!("peak {in_use}")), "{table}");
    assert!(line("available").contains(&format!("{} bytes", stats.available)));
    assert!(line("available").ends_with(&format!("run {} bytes", stats.largest_free_run)));
    assert!(line("failures").contains(" 1 allocation refused"), "{table}");
    assert!(line("lent").contains(" 0 bytes"));
    let header: Vec<_> = lines[7].split_whitespace().collect();
    assert_eq!(header, ["class", "slabs", "in", "use", "blocks", "requests", "failures"]);
    // The columns line up under their headings.
    assert_eq!(lines[8].len(), lines[7].len(), "{table}");
    let figures = |line: &str| -> Vec<u64> {
        line.split_whitespace().map(|figure| figure.parse().unwrap()).collect()
    };
    assert_eq!(figures(lines[8]), [64, 2, 100, 128, 100, 0]);
    assert_eq!(figures(lines[9]), [5120, 1, 3, 12, 3, 0]);
    free_all(&shm, small.into_iter().chain(medium).chain([large]));
}

/// Blocks of three pages in `shm` until fewer than three pages are free, with blocks 1 to 4 and
/// 6 to 8 freed again: two free runs of one bin, 12 pages and, freed last, 9. Returns the blocks
/// still in use.
fn runs_of_12_and_9_pages(shm: &ShmPool) -> Vec<NonNull<u8>> {
    let mut blocks = Vec::new();
    while shm.available() >= 3 * PAGE {
        blocks.push(shm.alloc(3 * PAGE).unwrap());
    }
    let twelve: Vec<_> = blocks.drain(1..5).collect();
    let nine: Vec<_> = blocks.drain(2..5).collect();
    free_all(shm, twelve.into_iter().chain(nine));
    blocks
}

#[test]
fn the_largest_free_run_is_a_block_the_pool_hands_out() {
    let shm = ShmPool::new(MIB).unwrap();
    let kept = runs_of_12_and_9_pages(&shm);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.largest_free_run, 12 * PAGE);
    let whole = shm.try_alloc(stats.largest_free_run).unwrap();
    assert_eq!(shm.stats().unwrap().largest_free_run, 9 * PAGE);
    free_all(&shm, kept.into_iter().chain([whole]));
    shm.check().unwrap();
}

/// The empty slabs the size classes keep for their next blocks lie outside every free run, and
/// a request that no run fits gets them back first: the largest free run of a drained pool can
/// fall short of the block it hands out, until a refusal, or the request, gives them back.
#[test]
fn the_largest_free_run_leaves_out_the_empty_slabs_a_request_gets_back() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    // Slabs of two classes side by side, with a large block between each pair, then all freed:
    // each class keeps an empty slab, in the middle of the pages.
    let mut blocks = Vec::new();
    for _ in 0..8 {
        blocks.extend([shm.alloc(64).unwrap(), shm.alloc(3000).unwrap()]);
        blocks.push(shm.alloc(64 * KIB).unwrap());
    }
    free_all(&shm, blocks);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.available, start);
    let kept: usize = stats.classes().iter().map(|class| class.slabs).sum();
    assert!(kept > 0, "no empty slab kept");
    assert!(stats.largest_free_run < stats.available, "{stats:?}");
    let whole = shm.try_alloc(stats.available).unwrap();
    free_all(&shm, [whole]);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.largest_free_run, stats.available, "the slabs went back");
    shm.check().unwrap();
}

#[test]
fn a_pool_grows_only_when_no_free_run_fits() {
    let shm = ShmPool::builder().capacity(MIB).max_capacity(8 * MIB).build().unwrap();
    let kept = runs_of_12_and_9_pages(&shm);
    let block = shm.try_alloc(12 * PAGE).unwrap();
    assert_eq!(shm.stats().unwrap().segments, 1, "a free run of 12 pages was there to take");
    let grown = shm.try_alloc(12 * PAGE).unwrap();
    assert_eq!(shm.stats().unwrap().segments, 2);
    free_all(&shm, kept.into_iter().chain([block, grown]));
    shm.check().unwrap();
}

#[test]
fn every_refused_allocation_is_counted() {
    let shm = ShmPool::new(MIB).unwrap();
    let mut guard = shm.lock().unwrap();
    let block = guard.alloc(64).unwrap();
    // Sizes no layout describes, and one that does but no pool of 1 MiB holds.
    for size in [usize::MAX, isize::MAX as usize, 2 * MIB] {
        assert_eq!(guard.alloc(size), Err(ShmError::OutOfMemory { size }));
    }
    // SAFETY: the block is in use, and stays so when the move is refused.
    let refused = unsafe { guard.realloc(block, usize::MAX) };
    assert_eq!(refused, Err(ShmError::OutOfMemory { size: usize::MAX }));
    drop(guard);
    assert_eq!(shm.stats().unwrap().failures, 4);
    free_all(&shm, [block]);
}

#[test]
fn a_block_aligned_beyond_4_kib_takes_pages_and_no_class_counts_it() {
    let shm = ShmPool::new(MIB).unwrap();
    let mut guard = shm.lock().unwrap();
    let block = guard.alloc_layout(Layout::from_size_align(64, 8 * KIB).unwrap()).unwrap();
    drop(guard);
    assert_eq!(block.as_ptr().addr() % (8 * KIB), 0);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.classes().iter().map(|class| class.requests).sum::<u64>(), 0);
    assert_eq!((stats.large_blocks, stats.bytes_in_use), (1, PAGE));
    free_all(&shm, [block]);
}
