//! Every public operation of a shared pool in one process: [`ShmPool`], [`ShmGuard`], child
//! pools and the facade's pointer-only free, with the inputs each must refuse. The tests that
//! need several processes are in `tests/fork.rs`.

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use common::{has_stamp, stamp, TestLock, FAIL_CODE};
use melon_alloc_core::{FreeError, CHUNK_SIZE};
use melon_alloc_shm::{LockError, ShmError, ShmGuard, ShmPool};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn addr(block: NonNull<u8>) -> usize {
    block.as_ptr() as usize
}

/// The figures that must not move when an operation is refused.
fn figures(shm: &ShmPool) -> (usize, usize, usize, usize, usize) {
    let stats = shm.stats().unwrap();
    (stats.available, stats.bytes_in_use, stats.live_blocks, stats.large_blocks, stats.lent_bytes)
}

/// Offers `block` to `shm.try_free`, which must refuse it with `expected` and change nothing.
fn assert_refused(shm: &ShmPool, block: NonNull<u8>, expected: impl Into<ShmError>) {
    assert_refused_as(shm, block, &[expected.into()]);
}

/// Offers `block` to `shm.try_free`, which must refuse it with one of `expected` and change
/// nothing.
fn assert_refused_as(shm: &ShmPool, block: NonNull<u8>, expected: &[ShmError]) {
    let before = figures(shm);
    let available = shm.available();
    // SAFETY: the caller passes a pointer that is not an in-use block of `shm`, so the call only
    // inspects it.
    let result = unsafe { shm.try_free(block) };
    assert!(
        matches!(&result, Err(error) if expected.contains(error)),
        "pointer {block:p}: {result:?}, expected one of {expected:?}"
    );
    assert!(!result.unwrap_err().to_string().is_empty());
    assert_eq!(figures(shm), before, "a refused free changed the pool");
    assert_eq!(shm.available(), available);
    shm.check().unwrap();
}

/// Frees every block, which must all be in-use blocks of `shm`.
fn free_all(shm: &ShmPool, blocks: impl IntoIterator<Item = NonNull<u8>>) {
    for block in blocks {
        // SAFETY: every block passed in is an in-use block of `shm`, freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }
}

/// Asserts that `block` is no longer an in-use block of `shm`, so that freeing it again would be
/// refused. The first page of a freed large block that merged into the free run before it is
/// then inside that run: the pool would have to walk the run to tell it from any other page in
/// the middle of free space, so it may answer `Interior` as well as `NotInUse`.
fn assert_freed(shm: &ShmPool, block: NonNull<u8>) {
    let expected = addr(block);
    match shm.usable_size(block) {
        Err(ShmError::Free(FreeError::NotInUse { addr } | FreeError::Interior { addr }))
            if addr == expected => {}
        other => panic!("freed block {block:p} reads as {other:?}"),
    }
}

/// Asserts that no two of `blocks` (pointer, usable size) overlap.
fn assert_disjoint(blocks: &mut [(usize, usize)]) {
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "blocks {:#x} and {:#x} overlap",
            pair[0].0,
            pair[1].0
        );
    }
}

#[test]
fn new_rounds_the_capacity_down_to_pages_and_starts_empty() {
    let shm = ShmPool::new(MIB + 100).unwrap();
    assert_eq!(shm.capacity(), MIB);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.capacity, MIB);
    assert!(stats.data_bytes > MIB * 9 / 10 && stats.data_bytes < MIB, "{stats:?}");
    assert_eq!(stats.data_bytes % PAGE, 0);
    assert_eq!(stats.available, stats.data_bytes);
    assert_eq!(shm.available(), stats.data_bytes);
    assert_eq!(
        (stats.bytes_in_use, stats.live_blocks, stats.large_blocks, stats.lent_bytes),
        (0, 0, 0, 0)
    );
    assert_eq!((stats.lock_takeovers, stats.operations_undone), (0, 0));
    shm.check().unwrap();
    // The descriptor is the pool's whole mapping, as another process would map it.
    let file = std::fs::File::from(shm.as_fd().try_clone_to_owned().unwrap());
    assert_eq!(file.metadata().unwrap().len(), MIB as u64);
    assert!(format!("{shm:?}").contains("ShmPool"));
    // The smallest and a page-multiple capacity are kept as they are.
    assert_eq!(ShmPool::new(64 * KIB).unwrap().capacity(), 64 * KIB);
    assert_eq!(ShmPool::new(2 * MIB).unwrap().capacity(), 2 * MIB);
}

/// The length of the pool's file, and the bytes of memory the file holds.
fn file_sizes(shm: &ShmPool) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(shm.as_fd().try_clone_to_owned().unwrap());
    let metadata = file.metadata().unwrap();
    (metadata.len(), metadata.blocks() * 512)
}

/// The length of the pool's file.
fn file_len(shm: &ShmPool) -> u64 {
    file_sizes(shm).0
}

#[test]
fn a_growing_pool_reserves_memory_for_what_it_has_grown_to() {
    let shm = ShmPool::builder().capacity(16 * MIB).max_capacity(1 << 30).build().unwrap();
    // About the capacity: the metadata's three ranges are rounded out to whole pages.
    let slack = 3 * PAGE as u64;
    let (_, reserved) = file_sizes(&shm);
    assert!(reserved <= 16 * MIB as u64 + slack, "{reserved} bytes for a pool of 16 MiB");
    assert!(reserved >= shm.available() as u64);
    let block = shm.alloc(20 * MIB).expect("room after growing");
    let (len, reserved) = file_sizes(&shm);
    assert_eq!(shm.capacity(), 48 * MIB, "two segments more");
    assert!(reserved <= 48 * MIB as u64 + slack, "{reserved} bytes for a pool of 48 MiB");
    assert!(len > 1 << 24, "the layout's metadata for 1 GiB comes first, as holes");
    free_all(&shm, [block]);
    shm.check().unwrap();
}

#[test]
fn a_pool_made_by_new_never_grows() {
    let shm = ShmPool::new(MIB).unwrap();
    let stats = shm.stats().unwrap();
    assert_eq!((stats.capacity, stats.max_capacity, stats.segments), (MIB, MIB, 1));
    assert_eq!(shm.max_capacity(), MIB);
    let start = shm.available();
    let all = shm.alloc(start).expect("every data byte in one block");
    assert_eq!(shm.try_alloc(64), Err(ShmError::OutOfMemory { size: 64 }));
    assert_eq!(shm.try_alloc(2 * MIB), Err(ShmError::OutOfMemory { size: 2 * MIB }));
    let child = shm.child();
    assert_eq!(child.alloc(64), None, "no chunk either");
    drop(child);
    let full = shm.stats().unwrap();
    assert_eq!((full.capacity, full.max_capacity, full.segments), (MIB, MIB, 1));
    assert_eq!((full.available, full.bytes_in_use, full.data_bytes), (0, start, stats.data_bytes));
    assert_eq!((shm.capacity(), file_len(&shm)), (MIB, MIB as u64));
    free_all(&shm, [all]);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

#[test]
fn a_growing_pool_stops_at_its_largest_capacity() {
    let shm = ShmPool::builder().capacity(64 * KIB).max_capacity(MIB).build().unwrap();
    let fixed = ShmPool::new(MIB).unwrap().stats().unwrap();
    let start = shm.available();
    assert_eq!(shm.capacity(), 64 * KIB);
    let mut blocks = Vec::new();
    while let Some(block) = shm.alloc(20 * KIB) {
        blocks.push(block);
    }
    let stats = shm.stats().unwrap();
    assert_eq!(
        (stats.capacity, stats.max_capacity, stats.data_bytes),
        (MIB, MIB, fixed.data_bytes)
    );
    assert!(stats.segments > 16, "{stats:?}");
    assert_eq!(shm.try_alloc(20 * KIB), Err(ShmError::OutOfMemory { size: 20 * KIB }));
    assert_eq!(file_len(&shm), MIB as u64, "as long as a fixed pool of the largest capacity");
    shm.check().unwrap();
    free_all(&shm, blocks);
    assert_eq!(shm.available(), fixed.data_bytes);
    assert!(shm.available() > start);
    shm.check().unwrap();
}

/// A request that no pool of its largest capacity could serve (a block longer than every data
/// page, an alignment past the mapping's, a child's chunk as long) fails without growing the
/// pool: growth is paid for up front, and would not be given back.
#[test]
fn a_request_no_growth_could_serve_leaves_a_growing_pool_as_it_was() {
    let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
    let start = (shm.capacity(), file_len(&shm));
    assert!(shm.alloc(1 << 40).is_none());
    assert!(shm.alloc(65 * MIB).is_none());
    let aligned = core::alloc::Layout::from_size_align(64, 1 << 30).unwrap();
    assert!(shm.alloc_layout(aligned).is_none());
    let child = shm.child();
    assert!(child.alloc(65 * MIB).is_none());
    drop(child);
    assert_eq!((shm.capacity(), file_len(&shm)), start, "the pool grew for nothing");
    // A request that growth serves still grows it.
    let block = shm.alloc(2 * MIB).expect("a block the grown pool holds");
    assert!(shm.capacity() > start.0);
    // SAFETY: the block came from `shm` and is not used again.
    unsafe { shm.free(block) };
    shm.check().unwrap();
}

/// A request that the pool at its largest capacity could not serve, for what the pool holds
/// already, fails without growing it: here a named value larger than the pages left once the
/// directory has its block.
#[test]
fn a_request_the_largest_pool_could_not_hold_with_what_it_holds_does_not_grow_it() {
    let shm = ShmPool::builder().capacity(64 * KIB).max_capacity(128 * KIB).build().unwrap();
    shm.insert_named("first", 0u8).unwrap();
    let start = (shm.capacity(), shm.available(), file_len(&shm));
    assert!(shm.insert_named("big", [0u8; 100 * KIB]).is_err());
    assert!(shm.alloc(100 * KIB).is_none());
    assert_eq!((shm.capacity(), shm.available(), file_len(&shm)), start, "grew for nothing");
    shm.check().unwrap();
}

/// A pool whose largest capacity has no room for a slab of a small class still grows for a
/// block of that class, which then gets pages of its own, as it does in a pool made that large.
#[test]
fn a_pool_too_small_for_a_slab_grows_for_a_small_block() {
    const LARGEST: usize = 68 * KIB;
    let count = |shm: &ShmPool| core::iter::from_fn(|| shm.alloc(3000)).count();
    let fixed = ShmPool::new(LARGEST).unwrap();
    let growing = ShmPool::builder().capacity(64 * KIB).max_capacity(LARGEST).build().unwrap();
    assert_eq!(count(&growing), count(&fixed));
    assert_eq!(growing.capacity(), LARGEST);
    growing.check().unwrap();
}

#[test]
fn small_blocks_grow_a_pool_to_its_largest_capacity() {
    // Largest sizes whose last segment, cut short, is too short for a slab of some classes:
    // the blocks then take runs of their own there.
    for largest in (68..=148).step_by(4).map(|kib| kib * KIB) {
        let fixed_data = ShmPool::new(largest).unwrap().stats().unwrap().data_bytes;
        for size in [3000, 2000, 100] {
            let growing =
                ShmPool::builder().capacity(64 * KIB).max_capacity(largest).build().unwrap();
            let held = core::iter::from_fn(|| growing.alloc(size)).count();
            let stats = growing.stats().unwrap();
            assert_eq!(
                (stats.capacity, stats.data_bytes),
                (largest, fixed_data),
                "{size}-byte blocks, largest {largest}"
            );
            assert!(stats.available < PAGE, "{held} blocks of {size} bytes leave {stats:?}");
            growing.check().unwrap();
        }
    }
}

#[test]
fn a_builder_refuses_impossible_capacities() {
    let (min, max) = (64 * KIB, 1usize << 40);
    let build = |capacity: usize, largest: usize| {
        ShmPool::builder().capacity(capacity).max_capacity(largest).build().map(|_| ()).unwrap_err()
    };
    let above = ShmError::CapacityAboveMax { capacity: 2 * MIB, max_capacity: MIB };
    assert_eq!(build(2 * MIB, MIB), above);
    assert!(above.to_string().contains("above the largest"), "{above}");
    assert_eq!(
        build(MIB, max + PAGE),
        ShmError::CapacityOutOfRange { capacity: max + PAGE, min, max }
    );
    assert_eq!(build(PAGE, MIB), ShmError::CapacityOutOfRange { capacity: PAGE, min, max });
    assert_eq!(
        build(MIB, usize::MAX),
        ShmError::CapacityOutOfRange { capacity: usize::MAX, min, max }
    );
    let unset = ShmPool::builder().max_capacity(MIB).build().map(|_| ()).unwrap_err();
    assert_eq!(unset, ShmError::CapacityOutOfRange { capacity: 0, min, max });
    // Rounded down to pages, a capacity within a page of the largest is the largest.
    let shm = ShmPool::builder().capacity(MIB + 100).max_capacity(MIB).build().unwrap();
    assert_eq!((shm.capacity(), shm.max_capacity()), (MIB, MIB));
    assert!(format!("{:?}", ShmPool::builder().name("x")).contains("ShmPoolBuilder"));
}

#[test]
fn child_pools_and_locks_of_the_callers_grow_a_pool_too() {
    let (lock, log) = TestLock::new();
    let shm =
        ShmPool::builder().capacity(64 * KIB).max_capacity(4 * MIB).lock(lock).build().unwrap();
    let child = shm.child();
    let blocks: Vec<_> =
        (0..MIB / 64).map(|_| child.alloc(64).expect("chunks from a grown pool")).collect();
    let stats = shm.stats().unwrap();
    assert!(stats.lent_bytes >= MIB && stats.segments > 16, "{stats:?}");
    assert!(log.locks() > 16, "each chunk under the caller's lock");
    // The same pool, attached with the same lock, sees it grown.
    let fd = shm.as_fd().try_clone_to_owned().unwrap();
    // SAFETY: the descriptor is a pool made by this library, and `lock` reaches the same lock.
    let attached = unsafe { ShmPool::attach_with_lock(fd, TestLock(log.clone())) }.unwrap();
    assert_eq!(attached.capacity(), shm.capacity());
    let last = *blocks.last().unwrap();
    let seen = attached.ptr_at(shm.offset_of(last).unwrap()).unwrap();
    // SAFETY: the block is in use and holds 64 bytes.
    unsafe { stamp(last, 64, 5) };
    // SAFETY: the same block through the other mapping.
    assert!(unsafe { has_stamp(seen, 64, 5) });
    drop(attached);
    for block in blocks {
        // SAFETY: each block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}

#[test]
fn capacities_outside_the_supported_range_are_errors() {
    let (min, max) = (64 * KIB, 1usize << 40);
    let too_small = [0, 1, PAGE, 64 * KIB - PAGE, 64 * KIB - 1];
    let too_large = [max + 1, max + PAGE, isize::MAX as usize, usize::MAX];
    for capacity in too_small.into_iter().chain(too_large) {
        let expected = ShmError::CapacityOutOfRange { capacity, min, max };
        assert_eq!(ShmPool::new(capacity).unwrap_err(), expected);
        assert_eq!(ShmPool::memfd("melon-test", capacity).unwrap_err(), expected);
        assert_eq!(ShmPool::with_lock(capacity, TestLock::new().0).unwrap_err(), expected);
        let message = expected.to_string();
        assert!(
            message.contains(&capacity.to_string()) && message.contains("outside"),
            "{message}"
        );
    }
}

#[test]
fn memfd_names_its_descriptor() {
    let shm = ShmPool::memfd("melon-test-pool", MIB).unwrap();
    let link = std::fs::read_link(format!("/proc/self/fd/{}", shm.as_fd().as_raw_fd())).unwrap();
    let link = link.to_string_lossy();
    assert!(link.contains("memfd:melon-test-pool"), "{link}");
    let block = shm.alloc(64).unwrap();
    assert!(shm.offset_of(block).is_some());
    free_all(&shm, [block]);
    shm.check().unwrap();
}

#[test]
fn alloc_aligns_every_block_to_16_and_no_two_overlap() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    let mut blocks = Vec::new();
    for size in (0..=600).chain([2047, 2048, 2049, 4095, 4096, 4097, 10_000, 100_000]) {
        let block = shm.alloc(size).unwrap();
        assert_eq!(addr(block) % 16, 0, "size {size}");
        let usable = shm.usable_size(block).unwrap();
        assert!(usable >= size.max(1), "size {size}, usable {usable}");
        // SAFETY: the block is in use and holds `size` bytes.
        unsafe { stamp(block, size, blocks.len()) };
        blocks.push((block, size));
    }
    // Zero-size requests get distinct blocks, like every other request.
    let zero: HashSet<_> = (0..100).map(|_| shm.alloc(0).unwrap()).collect();
    assert_eq!(zero.len(), 100);
    let mut spans: Vec<_> = blocks
        .iter()
        .map(|&(block, _)| block)
        .chain(zero.iter().copied())
        .map(|block| (addr(block), shm.usable_size(block).unwrap()))
        .collect();
    assert_disjoint(&mut spans);
    assert_eq!(shm.stats().unwrap().live_blocks, blocks.len() + zero.len());
    shm.check().unwrap();
    for (seed, &(block, size)) in blocks.iter().enumerate() {
        // SAFETY: the block is in use and was stamped with `size` bytes.
        assert!(unsafe { has_stamp(block, size, seed) }, "block {seed} was overwritten");
    }
    free_all(&shm, blocks.into_iter().map(|(block, _)| block).chain(zero));
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

#[test]
fn try_alloc_reports_out_of_memory_with_the_size_and_changes_nothing() {
    let shm = ShmPool::new(MIB).unwrap();
    let before = figures(&shm);
    for size in
        [usize::MAX, usize::MAX - 15, isize::MAX as usize, isize::MAX as usize - 4095, 1 << 40, MIB]
    {
        assert_eq!(shm.try_alloc(size), Err(ShmError::OutOfMemory { size }));
        assert_eq!(shm.alloc(size), None);
        assert_eq!(shm.alloc_zeroed(size), None);
        assert_eq!(figures(&shm), before, "size {size}");
        assert!(ShmError::OutOfMemory { size }.to_string().contains(&size.to_string()));
    }
    // A fresh pool's data is one free run: a single block can take all of it, and then every
    // request is refused until the block is freed.
    let all = shm.available();
    assert_eq!(shm.try_alloc(all + 1), Err(ShmError::OutOfMemory { size: all + 1 }));
    let whole = shm.alloc(all).unwrap();
    assert_eq!(shm.usable_size(whole), Ok(all));
    assert_eq!(shm.available(), 0);
    for size in [0, 16, 64, 5000, PAGE] {
        assert_eq!(shm.try_alloc(size), Err(ShmError::OutOfMemory { size }));
    }
    free_all(&shm, [whole]);
    assert_eq!(shm.available(), all);
    // Fill it with pages' worth of blocks instead; the last request refused leaves less than
    // its size free, and nothing changes.
    let mut blocks = Vec::new();
    while let Ok(block) = shm.try_alloc(3 * PAGE) {
        blocks.push(block);
    }
    let left = shm.available();
    assert!(left < 3 * PAGE, "{left} bytes left, yet {} were refused", 3 * PAGE);
    let before = figures(&shm);
    assert_eq!(shm.try_alloc(left + 1), Err(ShmError::OutOfMemory { size: left + 1 }));
    assert_eq!(figures(&shm), before);
    free_all(&shm, blocks);
    assert_eq!(shm.available(), all);
    shm.check().unwrap();
}

#[test]
fn try_alloc_tells_a_fragmented_pool_from_a_full_one() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let data = shm.stats().unwrap().data_bytes;
    let mut refusals = 0;
    let mut blocks = Vec::new();
    while let Some(block) = shm.alloc(64) {
        blocks.push(block);
    }
    refusals += 1;
    // 64-byte blocks fill one-page slabs exactly: nothing is free, and nothing fits.
    assert_eq!(blocks.len() * 64, data);
    for size in [16, 64, 4096, MIB] {
        assert_eq!(shm.try_alloc(size), Err(ShmError::OutOfMemory { size }));
        refusals += 1;
    }
    // Every other block back: half the data is free, in 64-byte holes, and no page is.
    let (freed, kept): (Vec<_>, Vec<_>) = blocks.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    free_all(&shm, freed.into_iter().map(|(_, &block)| block));
    let available = data / 2;
    assert_eq!(shm.available(), available);
    for size in [16, 4096, MIB] {
        let refused = shm.try_alloc(size);
        assert_eq!(refused, Err(ShmError::Fragmented { size, available, largest_run: 0 }));
        refusals += 1;
        let message = refused.unwrap_err().to_string();
        assert!(message.contains(&format!("{size} bytes")), "{message}");
        assert!(message.contains(&format!("{available} bytes are free")), "{message}");
    }
    // More than is free is out of memory, however it lies.
    assert_eq!(shm.try_alloc(available + 1), Err(ShmError::OutOfMemory { size: available + 1 }));
    refusals += 1;
    // The holes take 64-byte blocks still.
    let again = shm.alloc(64).unwrap();
    free_all(&shm, [again]);
    // Emptying slabs 1 to 4 (slab 0 heads its class's list and stays) gives their pages back,
    // which merge into a run of four.
    let (emptied, kept): (Vec<_>, Vec<_>) =
        kept.into_iter().partition(|(i, _)| (64..5 * 64).contains(i));
    free_all(&shm, emptied.into_iter().map(|(_, &block)| block));
    let available = available + 2 * PAGE;
    let stats = shm.stats().unwrap();
    assert_eq!((stats.available, stats.largest_free_run), (available, 4 * PAGE));
    assert_eq!(
        shm.try_alloc(MIB),
        Err(ShmError::Fragmented { size: MIB, available, largest_run: 4 * PAGE })
    );
    refusals += 1;
    // The guard reports a block that cannot move the same way, and keeps it.
    let mut guard = shm.lock().unwrap();
    let (_, &block) = kept[0];
    // SAFETY: the block is in use and stays so when the move fails.
    let refused = unsafe { guard.realloc(block, MIB) };
    assert_eq!(refused, Err(ShmError::Fragmented { size: MIB, available, largest_run: 4 * PAGE }));
    refusals += 1;
    let run = guard.alloc(4 * PAGE).unwrap();
    drop(guard);
    assert_eq!(shm.stats().unwrap().failures, refusals);
    free_all(&shm, kept.into_iter().map(|(_, &block)| block).chain([run]));
    assert_eq!(shm.available(), data);
    shm.check().unwrap();
}

#[test]
fn an_alignment_no_run_can_give_is_out_of_memory_and_one_taken_says_so() {
    let layout = Layout::from_size_align(PAGE, 2 * MIB).unwrap();
    // A pool of 1 MiB has no page on a 2 MiB boundary, nor a run long enough to look for one.
    let shm = ShmPool::new(MIB).unwrap();
    let refused = shm.lock().unwrap().alloc_layout(layout);
    assert_eq!(refused, Err(ShmError::OutOfMemory { size: PAGE }));
    // A pool of 4 MiB has a run long enough once; with it taken, the runs left are longer than
    // the block, and the message says what they lack.
    let shm = ShmPool::new(4 * MIB).unwrap();
    let mut guard = shm.lock().unwrap();
    let first = guard.alloc_layout(layout).unwrap();
    assert_eq!(first.as_ptr().addr() % (2 * MIB), 0);
    let refused = guard.alloc_layout(layout).unwrap_err();
    let ShmError::Fragmented { size, largest_run, .. } = refused else {
        panic!("{refused:?}");
    };
    assert!(largest_run >= size, "{refused:?}");
    assert!(refused.to_string().contains("alignment asked for"), "{refused}");
    // SAFETY: the block came from this pool and is not used again.
    unsafe { guard.free(first) }.unwrap();
}

#[test]
fn alloc_zeroed_zeroes_memory_that_held_data() {
    let shm = ShmPool::new(MIB).unwrap();
    for size in [1, 100, 2048, 5000, 70_000] {
        let dirty = shm.alloc(size).unwrap();
        // SAFETY: the block is in use and holds `size` bytes; then it is freed once.
        unsafe {
            dirty.as_ptr().write_bytes(0xa5, size);
            shm.free(dirty);
        }
        let zeroed = shm.alloc_zeroed(size).unwrap();
        // The freed block is the one handed out again, so the zeroing is what cleared it.
        assert_eq!(zeroed, dirty, "size {size}");
        // SAFETY: the block is in use and holds `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(zeroed.as_ptr(), size) };
        assert!(bytes.iter().all(|&byte| byte == 0), "size {size}");
        free_all(&shm, [zeroed]);
    }
    shm.check().unwrap();
}

#[test]
fn alloc_layout_honours_every_alignment_up_to_2_mib() {
    let shm = ShmPool::new(16 * MIB).unwrap();
    let start = shm.available();
    for shift in 0..=21 {
        let align = 1usize << shift;
        let mut blocks = Vec::new();
        for size in [0, 1, 48, 64, 100, 3000, 5000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let block = shm.alloc_layout(layout).unwrap();
            assert_eq!(addr(block) % align.max(16), 0, "size {size}, align {align}");
            assert_eq!(shm.offset_of(block).unwrap() % align.max(16), 0);
            assert!(shm.usable_size(block).unwrap() >= size);
            // SAFETY: the block is in use and holds `size` bytes.
            unsafe { stamp(block, size, size + shift) };
            blocks.push((block, size));
        }
        let mut spans: Vec<_> =
            blocks.iter().map(|&(b, _)| (addr(b), shm.usable_size(b).unwrap())).collect();
        assert_disjoint(&mut spans);
        for &(block, size) in &blocks {
            // SAFETY: the block is in use and was stamped with `size` bytes.
            assert!(unsafe { has_stamp(block, size, size + shift) });
        }
        free_all(&shm, blocks.into_iter().map(|(block, _)| block));
        shm.check().unwrap();
    }
    // The guard's `alloc_layout` takes the same alignments.
    let mut guard = shm.lock().unwrap();
    let block = guard.alloc_layout(Layout::from_size_align(10, 2 * MIB).unwrap()).unwrap();
    assert_eq!(addr(block) % (2 * MIB), 0);
    // SAFETY: the block is in use.
    unsafe { guard.free(block) }.unwrap();
    drop(guard);
    // Beyond the alignment of the mapping itself, nothing can be promised, and nothing changes.
    let before = figures(&shm);
    assert_eq!(shm.alloc_layout(Layout::from_size_align(64, 4 * MIB).unwrap()), None);
    assert_eq!(figures(&shm), before);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

#[test]
fn usable_size_is_the_size_rounded_to_its_class_or_to_pages() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    for size in (0..=20_000).step_by(7).chain([100_000, 1_000_000, MIB]) {
        let block = shm.alloc(size).unwrap();
        let usable = shm.usable_size(block).unwrap();
        let rounded = size.max(1).next_multiple_of(16);
        assert!(usable >= rounded && usable % 16 == 0, "size {size}, usable {usable}");
        if size <= 256 {
            // Every multiple of 16 up to 256 bytes is a class of its own.
            assert_eq!(usable, rounded, "size {size}");
        } else {
            // A class rounds up by at most a quarter; a run of pages by less than a page.
            let bound = (rounded + rounded / 4).max(size.next_multiple_of(PAGE));
            assert!(usable <= bound, "size {size}, usable {usable}");
        }
        if size >= 100_000 {
            assert_eq!(usable, size.next_multiple_of(PAGE), "size {size}");
        }
        free_all(&shm, [block]);
        assert_eq!(
            shm.usable_size(block),
            Err(ShmError::Free(FreeError::NotInUse { addr: addr(block) }))
        );
    }
    let outside = NonNull::from(&shm).cast::<u8>();
    assert_eq!(
        shm.usable_size(outside),
        Err(ShmError::Free(FreeError::Foreign { addr: addr(outside) }))
    );
}

#[test]
fn realloc_shrinks_and_fits_in_place_moves_to_grow_and_frees_at_zero() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let small = shm.alloc(100).unwrap();
    // SAFETY: the block is in use and holds 100 bytes.
    unsafe { stamp(small, 100, 1) };
    // Each block passed to `realloc` below is in use, and a moved block's old pointer is not
    // used again except to show that the pool refuses it.
    // SAFETY: as said above.
    let same = unsafe { shm.realloc(small, 50) }.unwrap();
    assert_eq!(same, small, "a shrink stays in place");
    // SAFETY: as above.
    let same = unsafe { shm.realloc(small, 112) }.unwrap();
    assert_eq!(same, small, "a grow within the class stays in place");
    // SAFETY: as above.
    let moved = unsafe { shm.realloc(small, 1000) }.unwrap();
    assert_ne!(moved, small);
    // SAFETY: the moved block holds at least 1000 bytes.
    assert!(unsafe { has_stamp(moved, 100, 1) }, "the contents moved with the block");
    assert_eq!(
        shm.usable_size(small),
        Err(ShmError::Free(FreeError::NotInUse { addr: addr(small) }))
    );

    let large = shm.alloc(100_000).unwrap();
    let pages = 100_000usize.next_multiple_of(PAGE);
    assert_eq!(shm.usable_size(large), Ok(pages));
    // SAFETY: the block is in use and holds 100,000 bytes.
    unsafe { stamp(large, 100_000, 2) };
    // SAFETY: as above.
    assert_eq!(unsafe { shm.realloc(large, 50_000) }, Some(large));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.realloc(large, pages) }, Some(large), "a grow into its last page");
    // SAFETY: as above.
    let grown = unsafe { shm.realloc(large, 300_000) }.unwrap();
    assert_ne!(grown, large);
    // SAFETY: the grown block holds at least 100,000 bytes.
    assert!(unsafe { has_stamp(grown, 100_000, 2) });
    assert_eq!(shm.usable_size(grown), Ok(300_000usize.next_multiple_of(PAGE)));
    assert_freed(&shm, large);

    // A request that cannot be met leaves the block as it was, in use.
    let before = figures(&shm);
    for size in [usize::MAX, 8 * MIB] {
        // SAFETY: as above.
        assert_eq!(unsafe { shm.realloc(grown, size) }, None);
        assert_eq!(figures(&shm), before);
        // SAFETY: the block is still in use and holds 100,000 bytes.
        assert!(unsafe { has_stamp(grown, 100_000, 2) });
    }

    // Size 0 frees, like Melon's `mln_alloc_re`.
    for block in [moved, grown] {
        // SAFETY: as above.
        assert_eq!(unsafe { shm.realloc(block, 0) }, None);
        assert_freed(&shm, block);
    }
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(shm.available(), start);

    // The guard's `realloc` reports what the pool's folds into `None`.
    let mut guard = shm.lock().unwrap();
    let block = guard.alloc(64).unwrap();
    // SAFETY: as above.
    let refused = unsafe { guard.realloc(block, usize::MAX) };
    assert_eq!(refused, Err(ShmError::OutOfMemory { size: usize::MAX }));
    // SAFETY: as above.
    assert_eq!(unsafe { guard.realloc(block, 0) }, Ok(None));
    // SAFETY: the block was freed, so the call only inspects it.
    let refused = unsafe { guard.realloc(block, 10) };
    assert_eq!(refused, Err(ShmError::Free(FreeError::NotInUse { addr: addr(block) })));
    drop(guard);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

#[test]
fn available_is_exact_and_returns_to_its_start() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    assert_eq!(start, shm.stats().unwrap().data_bytes);

    // A block costs exactly what it can hold, whether its class has a slab already or not, and
    // freeing it gives exactly that back. The sizes touch every size class, many of whose slabs
    // do not divide evenly into blocks, and runs of pages.
    let sizes = (0..=PAGE).step_by(16).chain([5000, 8192, 8193, 10_000, 100_000, MIB]);
    let mut blocks = Vec::new();
    for size in sizes.clone().chain(sizes) {
        let before = shm.available();
        let block = shm.alloc(size).unwrap();
        let usable = shm.usable_size(block).unwrap();
        assert_eq!(shm.available(), before - usable, "size {size}");
        blocks.push((block, usable));
    }
    assert_eq!(shm.stats().unwrap().available, shm.available());
    assert_eq!(
        shm.available() + shm.stats().unwrap().bytes_in_use,
        start,
        "every byte is free or in use"
    );
    shm.check().unwrap();
    // Free every other block, then the rest, so that slabs empty in the middle of their lists.
    let (odd, even): (Vec<_>, Vec<_>) =
        blocks.into_iter().enumerate().partition(|(i, _)| i % 2 == 1);
    for (_, (block, usable)) in odd.into_iter().chain(even) {
        let before = shm.available();
        free_all(&shm, [block]);
        assert_eq!(shm.available(), before + usable);
    }
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(shm.available(), start, "freeing everything gives back every byte");
    shm.check().unwrap();
}

#[test]
fn stats_count_blocks_bytes_and_lent_chunks() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let data = shm.stats().unwrap().data_bytes;
    let small: Vec<_> = [64, 64, 100].iter().map(|&size| shm.alloc(size).unwrap()).collect();
    let large = shm.alloc(100_000).unwrap();
    let child = shm.child();
    let lent = child.alloc(64).unwrap();
    let stats = shm.stats().unwrap();
    assert_eq!(stats.live_blocks, 4);
    assert_eq!(stats.large_blocks, 1);
    assert_eq!(stats.bytes_in_use, 64 + 64 + 112 + 100_000usize.next_multiple_of(PAGE));
    assert_eq!(stats.lent_bytes, CHUNK_SIZE);
    // Every data byte is free, in use or lent.
    assert_eq!(stats.available + stats.bytes_in_use + stats.lent_bytes, data);
    assert_eq!(stats.available, shm.available());
    // SAFETY: the block came from `child` and is freed once.
    unsafe { child.try_free(lent) }.unwrap();
    drop(child);
    free_all(&shm, small.into_iter().chain([large]));
    let stats = shm.stats().unwrap();
    assert_eq!(
        (stats.live_blocks, stats.large_blocks, stats.bytes_in_use, stats.lent_bytes),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.available, data);
    shm.check().unwrap();
}

#[test]
fn a_guard_runs_several_operations_under_one_lock() {
    let (lock, log) = TestLock::new();
    let shm = ShmPool::with_lock(MIB, lock).unwrap();
    let start = shm.available();
    assert!(!log.held());
    let locks = log.locks();
    let mut guard: ShmGuard<'_> = shm.lock().unwrap();
    assert!(log.held());
    let a = guard.alloc(64).unwrap();
    let b = guard.alloc_layout(Layout::from_size_align(100, 256).unwrap()).unwrap();
    assert_eq!(addr(b) % 256, 0);
    assert_eq!(guard.usable_size(a), Ok(64));
    // SAFETY: `a` is in use; after the move its old pointer is not used.
    let a = unsafe { guard.realloc(a, 500) }.unwrap().unwrap();
    assert_eq!(guard.usable_size(a), Ok(512));
    // Both classes divide a page evenly, so the blocks cost exactly their class sizes.
    assert_eq!(guard.available(), start - 512 - 256);
    assert_eq!(guard.stats().live_blocks, 2);
    guard.check().unwrap();
    assert!(format!("{guard:?}").contains("ShmGuard"));
    // SAFETY: both blocks are in use and freed once.
    unsafe {
        guard.free(a).unwrap();
        guard.free(b).unwrap();
    }
    // SAFETY: `a` was freed, so the call only inspects it.
    let refused = unsafe { guard.free(a) };
    assert_eq!(refused, Err(ShmError::Free(FreeError::NotInUse { addr: addr(a) })));
    assert_eq!(log.locks(), locks + 1, "the guard's operations took no lock of their own");
    assert_eq!(log.unlocks(), locks);
    guard.unlock().unwrap();
    assert_eq!(log.unlocks(), locks + 1);
    assert!(!log.held());

    // Dropping a guard releases the lock too.
    drop(shm.lock().unwrap());
    assert_eq!((log.locks(), log.unlocks()), (locks + 2, locks + 2));

    // `unlock` reports a failure of the lock that dropping would have to ignore.
    log.fail_unlock(true);
    let guard = shm.lock().unwrap();
    assert_eq!(guard.unlock(), Err(ShmError::Lock(LockError::new(FAIL_CODE))));
    log.fail_unlock(false);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A collection in the pool cannot grow while its thread holds the pool's lock: the growth
/// fails, and the buffer it has stays as it was.
#[test]
fn a_collection_cannot_grow_while_its_thread_holds_the_lock() {
    let shm = ShmPool::new(MIB).unwrap();
    let mut numbers = allocator_api2::vec::Vec::new_in(&shm);
    numbers.extend_from_slice(&[1u64, 2, 3]);
    let live = shm.stats().unwrap().live_blocks;
    let guard = shm.lock().unwrap();
    assert!(numbers.try_reserve(4096).is_err(), "grew under the lock");
    assert_eq!(numbers, [1, 2, 3]);
    drop(guard);
    assert_eq!(shm.stats().unwrap().live_blocks, live);
    numbers.try_reserve(4096).unwrap();
}

#[test]
fn an_operation_while_this_thread_holds_the_guard_would_deadlock() {
    let shm = ShmPool::new(MIB).unwrap();
    let block = shm.alloc(64).unwrap();
    let start = shm.available();
    let guard = shm.lock().unwrap();
    assert_eq!(shm.lock().err(), Some(ShmError::WouldDeadlock));
    assert_eq!(shm.try_alloc(64), Err(ShmError::WouldDeadlock));
    assert_eq!(shm.alloc(64), None);
    assert_eq!(shm.alloc_zeroed(64), None);
    assert_eq!(shm.alloc_layout(Layout::new::<u64>()), None);
    assert_eq!(shm.usable_size(block), Err(ShmError::WouldDeadlock));
    assert_eq!(shm.stats(), Err(ShmError::WouldDeadlock));
    assert_eq!(shm.check(), Err(ShmError::WouldDeadlock));
    assert_eq!(shm.available(), 0, "documented: 0 when the lock cannot be had");
    // SAFETY: `block` is in use; the call fails before touching it.
    assert_eq!(unsafe { shm.try_free(block) }, Err(ShmError::WouldDeadlock));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.realloc(block, 1000) }, None);
    // A child pool made now takes no lock; it cannot get a chunk until the guard is gone.
    let child = shm.child();
    assert_eq!(child.alloc(64), None);
    assert!(ShmError::WouldDeadlock.to_string().contains("already holds"));
    drop(guard);
    // Nothing above changed the pool, and the block is still in use.
    assert_eq!(shm.available(), start);
    assert_eq!(shm.usable_size(block), Ok(64));
    let from_child = child.alloc(64).unwrap();
    // SAFETY: the block came from `child` and is freed once.
    unsafe { child.try_free(from_child) }.unwrap();
    drop(child);
    free_all(&shm, [block]);
    shm.check().unwrap();
}

#[test]
fn offset_of_and_ptr_at_translate_both_ways() {
    let shm = ShmPool::new(MIB).unwrap();
    let base = shm.ptr_at(0).unwrap();
    assert_eq!(addr(base) % (2 * MIB), 0, "the mapping is aligned for the largest alignment");
    assert_eq!(shm.offset_of(base), Some(0));
    let last = shm.ptr_at(MIB - 1).unwrap();
    assert_eq!(addr(last), addr(base) + MIB - 1);
    assert_eq!(shm.offset_of(last), Some(MIB - 1));
    assert_eq!(shm.ptr_at(MIB), None);
    assert_eq!(shm.ptr_at(usize::MAX), None);
    let blocks: Vec<_> =
        [16, 64, 3000, 9000].iter().map(|&size| shm.alloc(size).unwrap()).collect();
    for &block in &blocks {
        let offset = shm.offset_of(block).unwrap();
        assert_eq!(shm.ptr_at(offset), Some(block));
        assert_eq!(offset, addr(block) - addr(base));
    }
    let before = NonNull::new(base.as_ptr().wrapping_sub(1)).unwrap();
    let after = NonNull::new(base.as_ptr().wrapping_add(MIB)).unwrap();
    let elsewhere = NonNull::from(&blocks).cast::<u8>();
    for outside in [before, after, elsewhere] {
        assert_eq!(shm.offset_of(outside), None);
    }
    free_all(&shm, blocks);
    shm.check().unwrap();
}

/// A timeout bounds the wait for a lock that another thread holds, from none at all to one
/// too long to count; a timeout that runs out changes nothing, and a custom lock ignores it.
#[test]
fn timed_locks_give_up_on_a_held_lock_and_wait_for_a_released_one() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let shm = ShmPool::new(MIB).unwrap();
    let start = shm.available();
    let (held, is_held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let shm = &shm;
        let holder = scope.spawn(move || {
            let guard = shm.lock().unwrap();
            held.send(()).unwrap();
            released.recv().unwrap();
            drop(guard);
        });
        is_held.recv().unwrap();
        for timeout in [Duration::ZERO, Duration::from_millis(20)] {
            match shm.try_lock_for(timeout) {
                Err(ShmError::LockTimeout { waited }) => {
                    assert!(waited >= timeout, "gave up after {waited:?} of {timeout:?}");
                    assert!(ShmError::LockTimeout { waited }.to_string().contains("timeout"));
                }
                other => panic!("a timed lock on a held lock gave {other:?}"),
            }
        }
        shm.set_lock_timeout(Some(Duration::from_millis(1)));
        assert_eq!(shm.alloc(64), None);
        assert_eq!(shm.lock_timeout(), Some(Duration::from_millis(1)));
        // As good as forever: the deadline saturates instead of overflowing.
        shm.set_lock_timeout(Some(Duration::MAX));
        release.send(()).unwrap();
        let waiting = Instant::now();
        let block = shm.try_alloc(64).unwrap();
        assert!(waiting.elapsed() < Duration::from_secs(10));
        // SAFETY: the block is in use and freed once.
        unsafe { shm.try_free(block) }.unwrap();
        holder.join().unwrap();
    });
    shm.set_lock_timeout(None);
    assert_eq!(shm.lock_timeout(), None);
    assert_eq!(shm.available(), start);
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);

    // A custom lock is called as it is, timeout or not.
    let (lock, _log) = TestLock::new();
    let custom = ShmPool::with_lock(MIB, lock).unwrap();
    drop(custom.try_lock_for(Duration::ZERO).unwrap());
}

/// A thread that ends holding the pool's lock, its guard forgotten: the lock word names the
/// process, which lives on, so the lock stays held, as a forgotten guard of `std::sync::Mutex`
/// keeps its mutex, and nothing takes it over.
#[test]
fn a_pool_whose_lock_holder_thread_ended_stays_locked_while_its_process_lives() {
    use std::time::Duration;

    let shm = ShmPool::new(MIB).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| std::mem::forget(shm.lock().unwrap()));
    });
    for _ in 0..2 {
        let waited = shm.try_lock_for(Duration::from_millis(20));
        assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "{waited:?}");
    }
    shm.set_lock_timeout(Some(Duration::from_millis(1)));
    assert!(matches!(shm.try_alloc(64), Err(ShmError::LockTimeout { .. })));
    assert!(matches!(shm.stats(), Err(ShmError::LockTimeout { .. })));
    // `available` says 0 of a pool it cannot lock; the lock's own error tells why.
    assert_eq!(shm.available(), 0);
    assert!(matches!(shm.lock().map(|guard| guard.available()), Err(ShmError::LockTimeout { .. })));
    // The pool cannot be unlocked from here, so it is left mapped rather than dropped.
    std::mem::forget(shm);
}

#[test]
fn threads_of_one_process_share_a_pool() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 2000;
    let shm = ShmPool::new(16 * MIB).unwrap();
    let start = shm.available();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let shm = &shm;
            scope.spawn(move || {
                let mut live: Vec<(NonNull<u8>, usize, usize)> = Vec::new();
                for round in 0..ROUNDS {
                    let seed = thread * ROUNDS + round;
                    if round % 3 == 2 {
                        let (block, size, seed) = live.swap_remove(seed % live.len());
                        // SAFETY: this thread's block, stamped with `size` bytes.
                        assert!(unsafe { has_stamp(block, size, seed) }, "thread {thread}");
                        free_all(shm, [block]);
                    } else {
                        let size = 1 + seed * 37 % 6000;
                        let block = shm.alloc(size).unwrap();
                        // SAFETY: the block was just handed to this thread.
                        unsafe { stamp(block, size, seed) };
                        live.push((block, size, seed));
                    }
                }
                for (block, size, seed) in live {
                    // SAFETY: as above.
                    assert!(unsafe { has_stamp(block, size, seed) }, "thread {thread}");
                    free_all(shm, [block]);
                }
            });
        }
    });
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

#[test]
fn child_pools_take_chunks_and_the_facade_frees_blocks_of_both() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let child = shm.child();
    let small: Vec<_> = (0..10).map(|_| child.alloc(64).unwrap()).collect();
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lent_bytes, CHUNK_SIZE, "one chunk serves the ten blocks");
    assert_eq!(stats.live_blocks, 0, "the child's blocks are the child's to count");
    assert_eq!(shm.available(), start - CHUNK_SIZE);
    let large = child.alloc(100_000).unwrap();
    assert!(shm.stats().unwrap().lent_bytes > CHUNK_SIZE + 100_000);
    for (seed, &block) in small.iter().chain([&large]).enumerate() {
        assert!(shm.offset_of(block).is_some(), "child blocks lie in the shared mapping");
        // SAFETY: the block is in use and holds at least 64 bytes.
        unsafe { stamp(block, 64, seed) };
    }
    let own = shm.alloc(64).unwrap();
    assert_eq!(shm.stats().unwrap().live_blocks, 1);

    // The facade frees by pointer alone: a block of the shared pool, and of its child.
    // SAFETY: each block is in use and freed once.
    unsafe {
        melon_alloc::free(own);
        melon_alloc::free(small[0]);
        melon_alloc::free(large);
    }
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(child.stats().live_blocks, small.len() - 1);
    assert_eq!(shm.stats().unwrap().lent_bytes, CHUNK_SIZE, "the large block's chunk came back");
    for (seed, &block) in small.iter().enumerate().skip(1) {
        // SAFETY: the block is in use and was stamped with 64 bytes.
        assert!(unsafe { has_stamp(block, 64, seed) });
        // SAFETY: the block came from `child` and is freed once.
        unsafe { melon_alloc::free(block) };
    }
    assert_eq!(child.stats().live_blocks, 0);
    child.check().unwrap();
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A free by pointer waiting for a pool's lock does not hold up the thread that holds the lock
/// when it makes or drops another pool, which needs the list of pools the free looked in.
#[test]
fn a_free_by_pointer_waiting_for_a_lock_lets_its_holder_make_and_drop_pools() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    let shm = Arc::new(ShmPool::new(MIB).unwrap());
    let block = shm.alloc(64).unwrap().as_ptr().addr();
    let locked = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel();
    let holder = {
        let (shm, locked, done) = (Arc::clone(&shm), Arc::clone(&locked), done.clone());
        std::thread::spawn(move || {
            let guard = shm.lock().unwrap();
            locked.store(true, Ordering::Release);
            // Time for the other thread to look the block up and wait for the lock.
            std::thread::sleep(Duration::from_millis(100));
            let other = ShmPool::new(MIB).unwrap();
            drop(other);
            drop(guard);
            done.send("holder").unwrap();
        })
    };
    let freer = {
        let locked = Arc::clone(&locked);
        std::thread::spawn(move || {
            while !locked.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            let block = NonNull::new(block as *mut u8).unwrap();
            // SAFETY: the block is in use and freed once, here.
            let freed = unsafe { melon_alloc_shm::plumbing::free_shared(block) };
            assert_eq!(freed, Some(Ok(())));
            done.send("freer").unwrap();
        })
    };
    for _ in 0..2 {
        let who = finished.recv_timeout(Duration::from_secs(30));
        assert!(who.is_ok(), "the holder and the free wait for each other");
    }
    holder.join().unwrap();
    freer.join().unwrap();
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    shm.check().unwrap();
}

#[test]
fn free_shared_frees_blocks_of_any_mapped_pool_and_no_other() {
    let first = ShmPool::new(MIB).unwrap();
    let second = ShmPool::new(MIB).unwrap();
    let child = first.child();
    let a = first.alloc(64).unwrap();
    let b = second.alloc(100_000).unwrap();
    let lent = child.alloc(64).unwrap();
    let heap = Box::new(0u64);
    let elsewhere = NonNull::from(&*heap).cast::<u8>();
    // SAFETY: each block is in use and freed once; the pointers that are not blocks of a shared
    // pool are only looked up.
    unsafe {
        assert_eq!(melon_alloc_shm::plumbing::free_shared(a), Some(Ok(())));
        assert_eq!(melon_alloc_shm::plumbing::free_shared(b), Some(Ok(())));
        assert_eq!(melon_alloc_shm::plumbing::free_shared(elsewhere), None, "not in any pool");
        assert_eq!(melon_alloc_shm::plumbing::free_shared(lent), None, "the child's to free");
        assert_eq!(
            melon_alloc_shm::plumbing::free_shared(a),
            Some(Err(ShmError::Free(FreeError::NotInUse { addr: addr(a) })))
        );
    }
    assert_eq!(first.stats().unwrap().live_blocks, 0);
    assert_eq!(second.stats().unwrap().live_blocks, 0);
    assert_eq!(child.stats().live_blocks, 1);
    // SAFETY: the block came from `child` and is freed once.
    unsafe { child.free(lent) };
    // A pool that is gone is no longer looked up: its address range may belong to anything.
    let gone = second.ptr_at(0).unwrap();
    drop(second);
    // SAFETY: the pointer is only looked up.
    assert_eq!(unsafe { melon_alloc_shm::plumbing::free_shared(gone) }, None);
    first.check().unwrap();
}

#[test]
fn child_with_limit_holds_at_most_its_limit() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let child = shm.child_with_limit(2 * CHUNK_SIZE);
    assert_eq!(child.available(), Some(2 * CHUNK_SIZE));
    let mut blocks = Vec::new();
    while let Some(block) = child.alloc(2048) {
        blocks.push(block);
        assert!(blocks.len() < 100, "the limit never refused");
    }
    assert_eq!(child.available(), Some(0));
    assert_eq!(shm.stats().unwrap().lent_bytes, 2 * CHUNK_SIZE);
    assert_eq!(child.alloc(100_000), None);
    assert_eq!(shm.stats().unwrap().lent_bytes, 2 * CHUNK_SIZE, "a refusal takes nothing");
    for block in blocks {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { melon_alloc::free(block) };
    }
    child.trim();
    assert_eq!(child.available(), Some(2 * CHUNK_SIZE));
    assert_eq!(shm.available(), start);
    drop(child);
    shm.check().unwrap();
}

#[test]
fn bad_pointers_are_refused_and_change_nothing() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let other = ShmPool::new(MIB).unwrap();
    let small: Vec<_> = (0..4).map(|_| shm.alloc(64).unwrap()).collect();
    let large: Vec<_> = (0..6).map(|_| shm.alloc(16 * PAGE).unwrap()).collect();
    assert_eq!(shm.stats().unwrap().large_blocks, 6);
    let child = shm.child();
    let lent = child.alloc(64).unwrap();
    let theirs = other.alloc(64).unwrap();
    let base = shm.ptr_at(0).unwrap();
    let at = |block: NonNull<u8>, delta: usize| {
        NonNull::new(block.as_ptr().wrapping_add(delta)).unwrap()
    };

    // A double free of a small block and of a large one whose neighbours are in use.
    free_all(&shm, [small[1], large[1]]);
    assert_refused(&shm, small[1], FreeError::NotInUse { addr: addr(small[1]) });
    assert_refused(&shm, large[1], FreeError::NotInUse { addr: addr(large[1]) });
    // A double free of a large block that merged into the free run before it (see
    // `assert_freed` for why either answer is right).
    assert_eq!(addr(large[4]), addr(large[3]) + 16 * PAGE);
    free_all(&shm, [large[3], large[4]]);
    let merged = addr(large[4]);
    assert_refused_as(
        &shm,
        large[4],
        &[FreeError::NotInUse { addr: merged }.into(), FreeError::Interior { addr: merged }.into()],
    );
    assert_refused(&shm, large[3], FreeError::NotInUse { addr: addr(large[3]) });
    // Pointers outside the mapping, into its header, or of another pool.
    let outside = [
        NonNull::new(base.as_ptr().wrapping_sub(16)).unwrap(),
        at(base, 4 * MIB),
        at(base, 4 * MIB + 4096),
        base,
        at(base, 64),
        NonNull::from(&small).cast::<u8>(),
        theirs,
    ];
    for pointer in outside {
        assert_refused(&shm, pointer, FreeError::Foreign { addr: addr(pointer) });
    }
    // Interior pointers of small and large blocks in use.
    for pointer in [
        at(small[0], 16),
        at(small[0], 1),
        at(small[2], 48),
        at(large[0], 16),
        at(large[0], PAGE),
        at(large[2], 2 * PAGE + 32),
        at(large[2], 16 * PAGE - 16),
    ] {
        assert_refused(&shm, pointer, FreeError::Interior { addr: addr(pointer) });
    }
    // A slot of a slab that was never handed out.
    let never = at(small[3], 64 * 8);
    assert_refused(&shm, never, FreeError::NotInUse { addr: addr(never) });
    // A block of a child pool's chunk is the child's to free, not the shared pool's.
    for pointer in [lent, at(lent, 16)] {
        assert_refused(&shm, pointer, ShmError::NotHandedOff { addr: addr(pointer) });
    }
    assert_eq!(shm.usable_size(lent), Err(ShmError::Free(FreeError::Foreign { addr: addr(lent) })));
    // SAFETY: the block came from `child` and is freed once.
    unsafe { child.try_free(lent) }.unwrap();
    drop(child);

    // Everything that was refused is still as it was.
    let live = [small[0], small[2], small[3], large[0], large[2], large[5]];
    for &block in &live {
        assert!(shm.usable_size(block).is_ok());
    }
    free_all(&shm, live);
    // SAFETY: the block came from `other` and is freed once.
    unsafe { other.try_free(theirs) }.unwrap();
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    shm.check().unwrap();
    other.check().unwrap();
}

#[test]
fn sixty_four_byte_objects_fill_nine_tenths_of_the_capacity() {
    for capacity in [64 * KIB, MIB, 64 * MIB] {
        let shm = ShmPool::new(capacity).unwrap();
        let start = shm.available();
        let data_bytes = shm.stats().unwrap().data_bytes;
        let mut guard = shm.lock().unwrap();
        let mut offsets = Vec::with_capacity(capacity / 64);
        while let Ok(block) = guard.alloc(64) {
            assert_eq!(addr(block) % 16, 0);
            offsets.push(shm.offset_of(block).unwrap());
        }
        let usable = offsets.len() * 64;
        // 64-byte blocks fill their one-page slabs exactly: every data byte is usable. The
        // smallest pool spends two of its sixteen pages on metadata; from 1 MiB up, the
        // metadata is under a tenth.
        assert_eq!(usable, data_bytes, "capacity {capacity}");
        if capacity >= MIB {
            assert!(usable * 10 >= capacity * 9, "capacity {capacity}: only {usable} bytes usable");
        }
        assert_eq!(guard.available(), 0, "capacity {capacity}");
        offsets.sort_unstable();
        assert!(offsets.windows(2).all(|pair| pair[1] - pair[0] >= 64), "capacity {capacity}");
        guard.check().unwrap();
        for &offset in &offsets {
            let block = shm.ptr_at(offset).unwrap();
            // SAFETY: every offset is an in-use block of the pool, freed once.
            unsafe { guard.free(block) }.unwrap();
        }
        assert_eq!(guard.available(), start);
        guard.check().unwrap();
    }
}

#[test]
fn attach_maps_the_same_pool_at_another_address() {
    let shm = ShmPool::memfd("melon-test-attach", 2 * MIB).unwrap();
    let fd = shm.as_fd().try_clone_to_owned().unwrap();
    // SAFETY: the descriptor is a pool made by this library.
    let again = unsafe { ShmPool::attach(fd) }.unwrap();
    assert_eq!(again.capacity(), shm.capacity());
    assert_ne!(again.ptr_at(0), shm.ptr_at(0), "a second mapping, somewhere else");
    let block = shm.alloc(100).unwrap();
    // SAFETY: the block is in use and holds 100 bytes.
    unsafe { stamp(block, 100, 7) };
    let offset = shm.offset_of(block).unwrap();
    let seen = again.ptr_at(offset).unwrap();
    // SAFETY: the same block, through the other mapping.
    assert!(unsafe { has_stamp(seen, 100, 7) });
    assert_eq!(again.stats().unwrap().live_blocks, 1);
    // Both handles share the lock: one's guard blocks the other in this thread.
    let guard = again.lock().unwrap();
    assert_eq!(shm.try_alloc(16), Err(ShmError::WouldDeadlock));
    drop(guard);
    // A block freed through one mapping is free in the other.
    free_all(&again, [seen]);
    assert_eq!(
        shm.usable_size(block),
        Err(ShmError::Free(FreeError::NotInUse { addr: addr(block) }))
    );
    let theirs = again.alloc(5000).unwrap();
    free_all(&shm, [shm.ptr_at(again.offset_of(theirs).unwrap()).unwrap()]);
    assert_eq!(shm.available(), again.available());
    assert_eq!(again.stats().unwrap().live_blocks, 0);
    drop(again);
    shm.check().unwrap();
}

/// A handle of the pool `shm` names, mapped again in this process.
fn attached(shm: &ShmPool) -> ShmPool {
    let fd = shm.as_fd().try_clone_to_owned().unwrap();
    // SAFETY: the descriptor is a pool made by this library.
    unsafe { ShmPool::attach(fd) }.unwrap()
}

/// A chunk whose return failed (its child pool was dropped while the thread held the lock)
/// waits for the next time the lock is taken, and a handle dropped takes it, whether or not it
/// holds a slot in the owner table: with one, giving up the slot takes the lock; without one,
/// the chunk, lent to no slot, would otherwise stay lent for the pool's life.
#[test]
fn a_chunk_whose_return_failed_goes_back_when_its_handle_is_dropped() {
    const SLOTS: usize = 128;
    for holders in [0, SLOTS] {
        let shm = ShmPool::memfd("melon-test-pending", 16 * MIB).unwrap();
        let watcher = attached(&shm);
        // Each handle's child claims a slot of the table for it, kept until the handle goes.
        let holding: Vec<ShmPool> = (0..holders).map(|_| attached(&shm)).collect();
        for handle in &holding {
            assert!(handle.child().alloc(64).is_some());
        }
        let child = shm.child();
        assert!(child.alloc(64).is_some(), "a chunk, slot or no slot");
        assert_eq!(watcher.stats().unwrap().lent_bytes, CHUNK_SIZE);
        let guard = shm.lock().unwrap();
        drop(child);
        drop(guard);
        assert_eq!(watcher.stats().unwrap().lent_bytes, CHUNK_SIZE, "the return failed");
        drop(shm);
        assert_eq!(watcher.stats().unwrap().lent_bytes, 0, "with {holders} slots held");
        watcher.check().unwrap();
    }
}

/// A memfd holding `bytes`, `len` bytes long.
fn memfd_with(bytes: &[u8], len: u64) -> OwnedFd {
    let fd = rustix::fs::memfd_create("melon-test-file", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).unwrap();
    file.set_len(len).unwrap();
    OwnedFd::from(file)
}

#[test]
fn attach_refuses_what_is_not_a_pool() {
    let attach = |fd: OwnedFd| {
        // SAFETY: whatever the descriptor holds, attach only reads its header.
        unsafe { ShmPool::attach(fd) }.map(|_| ()).unwrap_err()
    };
    // Zeros of a valid size, too little, a size that is not whole pages, random bytes.
    assert_eq!(attach(memfd_with(&[], 64 * KIB as u64)), ShmError::NotAPool);
    assert_eq!(attach(memfd_with(&[], MIB as u64)), ShmError::NotAPool);
    assert_eq!(attach(memfd_with(&[], PAGE as u64)), ShmError::NotAPool);
    assert_eq!(attach(memfd_with(&[], 0)), ShmError::NotAPool);
    assert_eq!(attach(memfd_with(&[], 64 * KIB as u64 + 100)), ShmError::NotAPool);
    let noise: Vec<u8> = (0..64 * KIB).map(|index| common::pattern_byte(3, index)).collect();
    assert_eq!(attach(memfd_with(&noise, noise.len() as u64)), ShmError::NotAPool);
    // A regular file.
    let path = std::env::temp_dir().join(format!("melon-alloc-attach-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; 64 * KIB]).unwrap();
    let file = std::fs::File::options().read(true).write(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(attach(OwnedFd::from(file)), ShmError::NotAPool);
    // Descriptors of no regular file: a pipe and a directory.
    let (pipe, _writer) = std::io::pipe().unwrap();
    assert_eq!(attach(OwnedFd::from(pipe)), ShmError::NotAPool);
    let directory = std::fs::File::open(std::env::temp_dir()).unwrap();
    assert_eq!(attach(OwnedFd::from(directory)), ShmError::NotAPool);
    assert!(ShmError::NotAPool.to_string().contains("not hold"));

    // A copy of a real pool, in a file shorter than its header says.
    let shm = ShmPool::memfd("melon-test-original", MIB).unwrap();
    // SAFETY: the whole mapping is readable, and no operation on the pool runs meanwhile.
    let image =
        unsafe { core::slice::from_raw_parts(shm.ptr_at(0).unwrap().as_ptr(), MIB) }.to_vec();
    assert_eq!(
        attach(memfd_with(&image, (MIB - PAGE) as u64)),
        ShmError::SizeMismatch { header: MIB as u64, file: (MIB - PAGE) as u64 }
    );
    // A longer file is what a process that died growing a pool leaves: it attaches.
    // SAFETY: the descriptor holds a copy of a pool made by this library.
    let longer = unsafe { ShmPool::attach(memfd_with(&image, (MIB + PAGE) as u64)) }.unwrap();
    assert_eq!(longer.capacity(), MIB);
    longer.check().unwrap();
    // The same copy with another layout version. The header starts with the 8-byte magic and
    // the 4-byte version, the part of the format that stays put across versions.
    let mut newer = image.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        attach(memfd_with(&newer, MIB as u64)),
        ShmError::VersionMismatch { found: 99, .. }
    ));
    // The same copy as a build that lays out the lock words differently would have made it:
    // the word after the lock kind (at byte 32) records the format of the pool's and its
    // mutexes' lock words, and a built-in lock of another format is refused.
    let mut foreign = image.clone();
    let abi = u32::from_le_bytes(foreign[36..40].try_into().unwrap());
    assert_ne!(abi, 0, "the header records the lock words' format");
    foreign[36..40].copy_from_slice(&(abi ^ 0x0007_0000).to_le_bytes());
    assert_eq!(attach(memfd_with(&foreign, MIB as u64)), ShmError::LockMismatch);
    // An intact copy attaches.
    // SAFETY: the descriptor holds a copy of a pool made by this library.
    let copy = unsafe { ShmPool::attach(memfd_with(&image, MIB as u64)) }.unwrap();
    copy.check().unwrap();

    // A pool with a lock of its creator's is refused without one, and the other way round.
    let (lock, _log) = TestLock::new();
    let custom = ShmPool::with_lock(MIB, lock).unwrap();
    assert_eq!(attach(custom.as_fd().try_clone_to_owned().unwrap()), ShmError::LockMismatch);
    let fd = shm.as_fd().try_clone_to_owned().unwrap();
    // SAFETY: the descriptor is a pool made by this library.
    let result = unsafe { ShmPool::attach_with_lock(fd, TestLock::new().0) };
    assert_eq!(result.map(|_| ()).unwrap_err(), ShmError::LockMismatch);
    // With the lock it was made with, it attaches.
    let fd = custom.as_fd().try_clone_to_owned().unwrap();
    let (lock, log) = TestLock::new();
    // SAFETY: as above.
    let attached = unsafe { ShmPool::attach_with_lock(fd, lock) }.unwrap();
    let block = attached.alloc(64).unwrap();
    assert_eq!(log.locks(), 1);
    assert_eq!(custom.stats().unwrap().live_blocks, 1);
    free_all(&attached, [block]);
    shm.check().unwrap();
}

/// A free that cannot take the lock, its timeout run out, leaves the block allocated and the
/// process running, in every build (a debug build aborts only on a pointer the pool refuses);
/// `try_free` says why, and the block is freed once the lock comes back.
#[test]
fn a_free_that_cannot_take_the_lock_leaves_the_block_allocated() {
    let shm = ShmPool::new(1 << 20).unwrap();
    let block = shm.alloc(64).unwrap();
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let shm = &shm;
        scope.spawn(move || {
            let guard = shm.lock().unwrap();
            held.send(()).unwrap();
            released.recv().unwrap();
            drop(guard);
        });
        is_held.recv().unwrap();
        shm.set_lock_timeout(Some(std::time::Duration::from_millis(5)));
        // SAFETY: the block is in use; the free cannot happen while the lock is held.
        unsafe { shm.free(block) };
        // SAFETY: as above.
        unsafe { melon_alloc::free(block) };
        // SAFETY: as above.
        let refused = unsafe { shm.try_free(block) };
        assert!(matches!(refused, Err(ShmError::LockTimeout { .. })), "{refused:?}");
        release.send(()).unwrap();
    });
    shm.set_lock_timeout(None);
    assert_eq!(shm.stats().unwrap().live_blocks, 1);
    // SAFETY: the block is still in use, and freed once.
    unsafe { shm.try_free(block) }.unwrap();
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
}

/// A `ShmBox` drops its value when it goes, as a `Box` does, and frees its block.
#[test]
fn a_shm_box_drops_its_value_and_frees_its_block() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Counted(u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    let shm = ShmPool::new(1 << 20).unwrap();
    let boxed = melon_alloc_shm::ShmBox::new_in(Counted(7), &shm).unwrap();
    assert_eq!(boxed.0, 7);
    assert_eq!(shm.stats().unwrap().live_blocks, 1);
    drop(boxed);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
}

/// A child that empties many chunks at once, as a collection of its blocks freed elsewhere
/// does, keeps eight of them beyond its engine's head and spares, still lent: its next blocks
/// come from them without the pool's lock, which this thread holds, so that the first block past
/// them is refused. A trim gives them back, and so does the child's drop.
#[test]
fn a_child_keeps_eight_emptied_chunks_for_its_next_blocks_without_the_lock() {
    // Four blocks a chunk, in whole chunks.
    const SIZE: usize = 4000;
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child();
    let blocks: Vec<_> = (0..20 * 4).map(|_| child.alloc(SIZE).unwrap()).collect();
    assert_eq!(shm.stats().unwrap().lent_bytes, 20 * CHUNK_SIZE);
    for block in blocks {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    // The engine's head and four spares, and eight kept by the child.
    assert_eq!(child.stats().bytes_held, 5 * CHUNK_SIZE);
    assert_eq!(shm.stats().unwrap().lent_bytes, (5 + 8) * CHUNK_SIZE);
    let guard = shm.lock().unwrap();
    let again: Vec<_> = (0..(5 + 8) * 4).map(|_| child.alloc(SIZE)).collect();
    assert!(again.iter().all(Option::is_some), "a block from a kept chunk needed the lock");
    assert_eq!(child.alloc(SIZE), None, "a new chunk without the lock");
    drop(guard);
    for block in again.into_iter().flatten() {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    assert_eq!(shm.stats().unwrap().lent_bytes, (5 + 8) * CHUNK_SIZE);
    child.trim();
    assert_eq!(shm.stats().unwrap().lent_bytes, child.stats().bytes_held);
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    // With a limit, what the child holds and what it keeps stay within it together.
    let limit = 7 * CHUNK_SIZE;
    let child = shm.child_with_limit(limit);
    for _ in 0..3 {
        let blocks: Vec<_> = (0..7 * 4).map(|_| child.alloc(SIZE).unwrap()).collect();
        assert_eq!(child.alloc(SIZE), None, "past the limit");
        for block in blocks {
            // SAFETY: the block came from `child` and is freed once.
            unsafe { child.free(block) };
        }
        assert!(shm.stats().unwrap().lent_bytes <= limit);
    }
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}

#[test]
fn a_childs_large_chunk_is_whole_pages_of_the_pool_and_counts_them() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child_with_limit(64 * KIB);
    let block = child.alloc(20_000).unwrap();
    let held = child.stats().bytes_held;
    // Five pages, which the pool lends: the child counts what it took, and its limit with it.
    assert_eq!((held, shm.stats().unwrap().lent_bytes), (5 * PAGE, 5 * PAGE));
    assert_eq!(child.available(), Some(64 * KIB - 5 * PAGE));
    // SAFETY: the block came from `child` and is not used again.
    unsafe { child.free(block) };
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}
