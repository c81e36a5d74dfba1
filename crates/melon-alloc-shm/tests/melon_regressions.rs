//! One regression test for each weakness of Melon's `mln_alloc` that this workspace set out to
//! fix (the list under "Weaknesses to fix" in the project's notes on Melon). Each test names what
//! Melon got wrong. The weaknesses that need several processes (a failed mapping, a lock holder
//! that dies) have their cases in `tests/fork.rs`.

mod common;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;

use common::{has_stamp, stamp, TestLock, FAIL_CODE};
use melon_alloc_core::{FreeError, CHUNK_SIZE};
use melon_alloc_heap::HeapPool;
use melon_alloc_shm::{LockError, ShmError, ShmPool};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn addr(block: NonNull<u8>) -> usize {
    block.as_ptr() as usize
}

/// Allocates `size`-byte blocks under one lock until the pool refuses, and returns them.
fn fill(shm: &ShmPool, size: usize) -> Vec<NonNull<u8>> {
    let mut guard = shm.lock().unwrap();
    let mut blocks = Vec::new();
    while let Ok(block) = guard.alloc(size) {
        blocks.push(block);
    }
    blocks
}

/// Frees every block under one lock.
fn free_all(shm: &ShmPool, blocks: impl IntoIterator<Item = NonNull<u8>>) {
    let mut guard = shm.lock().unwrap();
    for block in blocks {
        // SAFETY: every block passed in is an in-use block of `shm`, freed once.
        unsafe { guard.free(block) }.unwrap();
    }
}

/// Melon (1): the shared mapping's result was compared with NULL instead of `MAP_FAILED`, so a
/// failed mapping was written to. Here an impossible capacity is an error before anything is
/// mapped; a mapping the system refuses is an error too (the fork test limits the address space
/// of a child to show it).
#[test]
fn w1_an_absurd_capacity_is_an_error_not_a_crash() {
    for capacity in [usize::MAX, usize::MAX / 2, isize::MAX as usize, (1 << 40) + PAGE] {
        match ShmPool::new(capacity) {
            Err(ShmError::CapacityOutOfRange { capacity: asked, max, .. }) => {
                assert_eq!(asked, capacity);
                assert!(max < capacity);
            }
            other => panic!("capacity {capacity}: {other:?}"),
        }
    }
    // The pool that can be made still works after the refusals.
    let shm = ShmPool::new(64 * KIB).unwrap();
    assert!(shm.alloc(64).is_some());
    shm.check().unwrap();
}

/// Melon (2): the minimum capacity was 2 MiB + 1 KiB, yet the header did not fit in the slack,
/// so a pool just above the minimum accepted no allocation of 1.5 MiB or less, and a capacity
/// that was a multiple of 2 MiB lost a whole region to the header.
#[test]
fn w2_small_pools_and_region_multiples_waste_nothing() {
    // Just above the minimum: two pages of metadata, and every data page is usable, by one
    // block or by many.
    let shm = ShmPool::new(64 * KIB + KIB).unwrap();
    let data = shm.available();
    assert_eq!(data, shm.stats().unwrap().data_bytes);
    assert!(data >= 56 * KIB, "{data} data bytes in a 65 KiB pool");
    let whole = shm.alloc(data).unwrap();
    free_all(&shm, [whole]);
    for size in [16, 64, 1000, 1536, 2048] {
        let block = shm.alloc(size).unwrap();
        free_all(&shm, [block]);
    }
    // Melon's own minimum takes the 1.5 MiB block it refused.
    let shm = ShmPool::new(2 * MIB + KIB).unwrap();
    let block = shm.alloc(3 * MIB / 2).unwrap();
    free_all(&shm, [block]);
    // Capacities that are multiples of Melon's 2 MiB regions.
    for capacity in [2 * MIB, 4 * MIB, 8 * MIB] {
        let shm = ShmPool::new(capacity).unwrap();
        let start = shm.available();
        assert!(start * 100 >= capacity * 98, "capacity {capacity}: {start} data bytes");
        let blocks = fill(&shm, 64);
        assert!(blocks.len() * 64 * 10 >= capacity * 9, "capacity {capacity}");
        free_all(&shm, blocks);
        // One block can take nearly all of it.
        let big = shm.alloc(start).unwrap();
        free_all(&shm, [big]);
        assert_eq!(shm.available(), start);
        shm.check().unwrap();
    }
}

/// Melon (3): pointers were 8 mod 16, large regions were not rounded so the next region's
/// header could be misaligned, and `size + headers` could overflow near `SIZE_MAX`.
#[test]
fn w3_every_block_is_16_aligned_and_huge_sizes_do_not_overflow() {
    let shm = ShmPool::new(16 * MIB).unwrap();
    let mut blocks = Vec::new();
    // Odd-sized large blocks between small ones: whatever follows a large block is aligned.
    for round in 0..20 {
        for size in [1, 8193 + round, 24, 100_001 + 3 * round, 7, 3, 12_345, 2049] {
            let block = shm.alloc(size).unwrap();
            assert_eq!(addr(block) % 16, 0, "size {size}");
            blocks.push(block);
        }
    }
    let before = shm.stats().unwrap();
    let child = shm.child();
    for delta in (0..64).chain([4095, 4096, 4097, 1 << 20]) {
        for size in [usize::MAX - delta, isize::MAX as usize - delta, usize::MAX / 2 + delta] {
            assert_eq!(shm.try_alloc(size), Err(ShmError::OutOfMemory { size }));
            assert_eq!(shm.alloc_zeroed(size), None);
            assert_eq!(child.alloc(size), None);
            // SAFETY: `blocks[0]` is in use; a failed realloc leaves it so.
            assert_eq!(unsafe { shm.realloc(blocks[0], size) }, None);
        }
    }
    for size in [1 << 40, 1 << 50, isize::MAX as usize / 2, isize::MAX as usize - 2 * MIB] {
        for align in [16, PAGE, 2 * MIB] {
            let layout = Layout::from_size_align(size, align).unwrap();
            assert_eq!(shm.alloc_layout(layout), None, "size {size}, align {align}");
            assert_eq!(child.alloc_layout(layout), None, "size {size}, align {align}");
        }
    }
    drop(child);
    let mut after = shm.stats().unwrap();
    assert!(after.failures > before.failures, "the refusals are counted");
    after.failures = before.failures;
    assert_eq!(after, before, "no refused size changed the pool");
    free_all(&shm, blocks);
    shm.check().unwrap();
}

/// Melon (4): allocation scanned bitmaps bit by bit across every region under the lock, so its
/// cost grew with the pool. Timing would make a flaky test, so this shows what an O(1)
/// allocator must still do at high fill: every request that fits succeeds, holes are reused,
/// and the remaining run is found whole.
#[test]
fn w4_allocation_still_succeeds_at_95_percent_fill() {
    let shm = ShmPool::new(64 * MIB).unwrap();
    let start = shm.available();
    let mut guard = shm.lock().unwrap();
    let mut blocks = Vec::new();
    while guard.available() > start / 20 {
        blocks.push(guard.alloc(64).unwrap());
    }
    let tail = guard.available();
    // The slabs end at the page after the last block; the free tail starts there.
    let slabs_end =
        (blocks.iter().map(|&b| shm.offset_of(b).unwrap()).max().unwrap() / PAGE + 1) * PAGE;
    // Punch a hole every twentieth block, then fill the holes, at 95 % fill.
    let mut holes = 0;
    for index in (0..blocks.len()).step_by(20) {
        // SAFETY: every block is in use and freed once.
        unsafe { guard.free(blocks[index]) }.unwrap();
        holes += 1;
    }
    assert_eq!(guard.available(), tail + holes * 64);
    for index in (0..blocks.len()).step_by(20) {
        blocks[index] = guard.alloc(64).unwrap();
        let offset = shm.offset_of(blocks[index]).unwrap();
        assert!(offset < slabs_end, "a hole was left while the free tail was carved");
    }
    assert_eq!(guard.available(), tail);
    // The free tail is one run that a single request takes whole: the last slab holds less
    // than a page of the figure.
    let run = tail / PAGE * PAGE - PAGE;
    let big = guard.alloc(run).unwrap();
    // SAFETY: the block is in use and freed once.
    unsafe { guard.free(big) }.unwrap();
    // Churn at this fill: every allocation succeeds.
    for round in 0..20_000 {
        let index = round * 7919 % blocks.len();
        // SAFETY: every block is in use and freed once before its slot is refilled.
        unsafe { guard.free(blocks[index]) }.unwrap();
        blocks[index] = guard.alloc(1 + round % 64).unwrap();
    }
    guard.check().unwrap();
    for block in blocks {
        // SAFETY: as above.
        unsafe { guard.free(block) }.unwrap();
    }
    assert_eq!(guard.available(), start);
    guard.check().unwrap();
}

/// Melon (5): free cleared bitmap bits without checking them, so a double free corrupted the
/// counts, and a double free of a large block emptied the region list, after which live data
/// was handed out again.
#[test]
fn w5_a_double_free_is_refused_and_nothing_is_handed_out_twice() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let small: Vec<_> = (0..200).map(|_| shm.alloc(48).unwrap()).collect();
    let large: Vec<_> = (0..8).map(|_| shm.alloc(64 * KIB).unwrap()).collect();
    for (seed, &block) in small.iter().enumerate() {
        // SAFETY: the block is in use and holds 48 bytes.
        unsafe { stamp(block, 48, seed) };
    }
    for (seed, &block) in large.iter().enumerate() {
        // SAFETY: the block is in use and holds 64 KiB.
        unsafe { stamp(block, 64 * KIB, 1000 + seed) };
    }
    free_all(&shm, [small[10], small[11], large[2], large[5]]);
    let before = shm.stats().unwrap();
    for block in [small[10], small[11], large[2], large[5], small[10], large[2]] {
        // SAFETY: the block was freed, so the call only inspects it.
        let result = unsafe { shm.try_free(block) };
        assert_eq!(result, Err(ShmError::Free(FreeError::NotInUse { addr: addr(block) })));
        assert_eq!(shm.stats().unwrap(), before, "a refused double free changed the pool");
        shm.check().unwrap();
    }
    // Everything the pool hands out from now on is memory nobody holds.
    let mut fresh = Vec::new();
    for size in [64 * KIB, 5000, 100, 48, 16] {
        fresh.extend(fill(&shm, size));
    }
    // No page is left free: the bytes still free lie in slabs, blocks of other sizes or tails.
    let left = shm.available();
    let refused = shm.try_alloc(16);
    assert_eq!(refused, Err(ShmError::Fragmented { size: 16, available: left, largest_run: 0 }));
    let mut spans: Vec<(usize, usize)> = small
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 10 && i != 11)
        .map(|(_, &b)| b)
        .chain(large.iter().enumerate().filter(|&(i, _)| i != 2 && i != 5).map(|(_, &b)| b))
        .chain(fresh.iter().copied())
        .map(|block| (addr(block), shm.usable_size(block).unwrap()))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{:#x} handed out twice", pair[1].0);
    }
    for block in &fresh {
        // SAFETY: a fresh block of at least 48 bytes; scribbling on it must not reach others.
        unsafe { block.as_ptr().write_bytes(0xee, 48) };
    }
    for (seed, &block) in small.iter().enumerate().filter(|&(i, _)| i != 10 && i != 11) {
        // SAFETY: the block is still in use and was stamped with 48 bytes.
        assert!(unsafe { has_stamp(block, 48, seed) }, "small block {seed} was overwritten");
    }
    for (seed, &block) in large.iter().enumerate().filter(|&(i, _)| i != 2 && i != 5) {
        // SAFETY: the block is still in use and was stamped with 64 KiB.
        assert!(unsafe { has_stamp(block, 64 * KIB, 1000 + seed) }, "large block {seed}");
    }
    shm.check().unwrap();
}

/// Melon (6): `available_capacity` subtracted every region's used units from one region's total:
/// wrong for a fresh large pool, and wrapping below zero once two regions were busy
/// (18446744073705357504 after filling a pool).
#[test]
fn w6_available_is_exact_and_never_wraps() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    assert_eq!(start, shm.stats().unwrap().data_bytes);
    assert!(start > 7 * MIB, "a fresh pool offers all of its data, not one region's worth");
    // Two of Melon's regions' worth of mixed blocks.
    let mut blocks = Vec::new();
    let mut held = 0;
    let mut size = 16;
    while held < 4 * MIB {
        let block = shm.alloc(size).unwrap();
        held += shm.usable_size(block).unwrap();
        blocks.push(block);
        size = size * 7 % 20_000 + 16;
    }
    assert_eq!(shm.available(), start - held, "exact while two regions are busy");
    // Then everything, every size class from the largest down: the figure falls to the slabs'
    // unused tails, and never below zero.
    for size in [100_000, 10_000].into_iter().chain((16..=8192).rev().step_by(16)) {
        blocks.extend(fill(&shm, size));
        let available = shm.available();
        assert!(available <= start, "available() wrapped: {available}");
        assert_eq!(available + shm.stats().unwrap().bytes_in_use, start);
    }
    // The bytes still free are the slabs' tails: no use to any request.
    let left = shm.available();
    let refused = shm.try_alloc(16);
    assert_eq!(refused, Err(ShmError::Fragmented { size: 16, available: left, largest_run: 0 }));
    // A slab leaves at most an eighth of itself unused.
    assert!(shm.available() <= start / 8, "{} bytes left unused", shm.available());
    free_all(&shm, blocks);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// Melon (7), operations on the shared pool itself took no lock: here every operation takes the
/// lock once and releases it.
#[test]
fn w7_every_operation_takes_the_lock_itself() {
    let (lock, log) = TestLock::new();
    let shm = ShmPool::with_lock(MIB, lock).unwrap();
    let block = shm.alloc(64).unwrap();
    let large = shm.alloc(100_000).unwrap();
    let inside = NonNull::new(large.as_ptr().wrapping_add(16)).unwrap();
    // A block an operation allocated, freed after the lock calls were counted.
    let kept: Cell<Option<NonNull<u8>>> = Cell::new(None);
    let counted = |name: &str, op: &dyn Fn()| {
        let (locks, unlocks) = (log.locks(), log.unlocks());
        op();
        assert_eq!(log.locks(), locks + 1, "{name} took the lock once");
        assert_eq!(log.unlocks(), unlocks + 1, "{name} released it");
        assert!(!log.held());
        if let Some(block) = kept.take() {
            free_all(&shm, [block]);
        }
    };
    counted("alloc", &|| kept.set(Some(shm.alloc(32).unwrap())));
    counted("try_alloc", &|| kept.set(Some(shm.try_alloc(32).unwrap())));
    counted("alloc_zeroed", &|| kept.set(Some(shm.alloc_zeroed(32).unwrap())));
    counted("alloc_layout", &|| kept.set(Some(shm.alloc_layout(Layout::new::<u128>()).unwrap())));
    counted("realloc", &|| {
        // SAFETY: `block` is in use; 60 bytes fit it, so it stays in place.
        let same = unsafe { shm.realloc(block, 60) };
        assert_eq!(same, Some(block));
    });
    counted("usable_size", &|| assert_eq!(shm.usable_size(block), Ok(64)));
    counted("available", &|| assert!(shm.available() > 0));
    counted("stats", &|| assert_eq!(shm.stats().unwrap().live_blocks, 2));
    counted("check", &|| shm.check().unwrap());
    counted("try_free", &|| {
        // SAFETY: a pointer inside a block in use is refused without a change.
        let result = unsafe { shm.try_free(inside) };
        assert!(result.is_err());
    });
    counted("free", &|| {
        // SAFETY: `block` is in use and freed once.
        unsafe { shm.free(block) };
    });
    counted("the facade's free", &|| {
        // SAFETY: `large` is in use and freed once.
        unsafe { melon_alloc::free(large) };
    });
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
}

/// Melon (7), a child pool's state lived in shared memory and was changed without the lock, or
/// the lock was taken around each use: here a child pool keeps its bookkeeping in its process
/// and takes the shared pool's lock once per chunk, not once per block.
#[test]
fn w7_a_child_pool_locks_once_per_chunk() {
    let (lock, log) = TestLock::new();
    let shm = ShmPool::with_lock(4 * MIB, lock).unwrap();
    let child = shm.child();
    let locks = log.locks();
    let blocks: Vec<_> = (0..1000).map(|_| child.alloc(64).unwrap()).collect();
    let chunks = shm.stats().unwrap().lent_bytes / CHUNK_SIZE;
    assert!(chunks >= 4, "{chunks} chunks for 64,000 bytes");
    assert_eq!(log.locks() - locks, chunks + 1, "one lock per chunk, and one for the stats");
    let locks = log.locks();
    for block in blocks {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    let returned = log.locks() - locks;
    assert!(returned < chunks, "{returned} locks to free 1000 blocks of {chunks} chunks");
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
}

/// Melon (7), creating a child pool took the lock internally, so a caller already holding it
/// deadlocked: here making a child takes no lock at all.
#[test]
fn w7_making_a_child_while_holding_the_lock_does_not_deadlock() {
    let (lock, log) = TestLock::new();
    let shm = ShmPool::with_lock(MIB, lock).unwrap();
    let guard = shm.lock().unwrap();
    let locks = log.locks();
    let child = shm.child();
    let limited = shm.child_with_limit(64 * KIB);
    assert_eq!(log.locks(), locks, "making a child took the lock");
    drop(guard);
    let block = limited.alloc(100).unwrap();
    // SAFETY: the block came from `limited` and is freed once.
    unsafe { limited.free(block) };
    drop((child, limited));
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    // The built-in lock says so instead of hanging when a child needs a chunk meanwhile.
    let builtin = ShmPool::new(MIB).unwrap();
    let guard = builtin.lock().unwrap();
    let child = builtin.child();
    assert_eq!(child.alloc(64), None);
    drop(guard);
    assert!(child.alloc(64).is_some());
}

/// Melon (7), when taking the lock failed on a free path, the chunk had already been unlinked
/// and leaked, and the limit counter was charged before a failure and not given back: here a
/// failing lock costs nothing, and a chunk that could not go back goes back later.
#[test]
fn w7_a_failing_lock_loses_nothing_and_charges_nothing() {
    let (lock, log) = TestLock::new();
    let shm = ShmPool::with_lock(4 * MIB, lock).unwrap();
    let start = shm.available();

    // Allocation with a failing lock: refused, and nothing charged to the child's limit.
    let child = shm.child_with_limit(16 * CHUNK_SIZE);
    log.fail_lock(true);
    assert_eq!(child.alloc(64), None);
    assert_eq!(child.alloc(100_000), None);
    assert_eq!(child.available(), Some(16 * CHUNK_SIZE), "a refused chunk was charged");
    assert_eq!(child.stats().bytes_held, 0);
    assert_eq!(shm.try_alloc(64), Err(ShmError::Lock(LockError::new(FAIL_CODE))));
    log.fail_lock(false);
    assert_eq!(shm.available(), start);

    // Freeing with a failing lock: the shared pool's own block stays in use, and is freed later.
    let own = shm.alloc(64).unwrap();
    log.fail_lock(true);
    // SAFETY: `own` is in use; the failed call does not free it.
    assert_eq!(unsafe { shm.try_free(own) }, Err(ShmError::Lock(LockError::new(FAIL_CODE))));
    log.fail_lock(false);
    assert_eq!(shm.usable_size(own), Ok(64));
    free_all(&shm, [own]);

    // A child's chunks that cannot go back while the lock fails go back the next time it works.
    let small = child.alloc(64).unwrap();
    let large = child.alloc(100_000).unwrap();
    let lent = shm.stats().unwrap().lent_bytes;
    assert!(lent > CHUNK_SIZE + 100_000);
    log.fail_lock(true);
    // SAFETY: both blocks came from `child` and are freed once; the large one's chunk is given
    // back at once, which needs the lock.
    unsafe {
        child.free(small);
        child.free(large);
    }
    drop(child);
    log.fail_lock(false);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lent_bytes, 0, "a chunk that could not go back was lost");
    assert_eq!(stats.available, start);
    shm.check().unwrap();
}

/// Melon (8): heap pools put a 56-byte header before every block, kept chunks until they had
/// emptied 1,024 times, aligned to 8 bytes at most, and had neither statistics nor a way to
/// check their integrity.
#[test]
fn w8_heap_pools_are_lean_give_chunks_back_and_can_be_checked() {
    // No per-block header: consecutive blocks of a class are exactly one block apart.
    let pool = HeapPool::with_limit(MIB);
    let first = pool.alloc(64).unwrap();
    let second = pool.alloc(64).unwrap();
    assert_eq!(addr(second).abs_diff(addr(first)), 64);
    // SAFETY: both blocks came from `pool` and are freed once.
    unsafe {
        pool.free(first);
        pool.free(second);
    }
    // Empty chunks come back: beyond a few kept per class for reuse as soon as they empty, and
    // the rest when the pool is trimmed, however few times they were emptied.
    let blocks: Vec<_> = (0..8000).map(|_| pool.alloc(64).unwrap()).collect();
    let chunks = pool.stats().chunks;
    assert!(chunks > 20, "{chunks} chunks");
    for block in blocks {
        // SAFETY: the block came from `pool` and is freed once.
        unsafe { pool.free(block) };
    }
    let kept = pool.stats().chunks;
    assert!(kept <= 8, "{kept} of {chunks} empty chunks kept");
    assert_eq!(pool.available(), Some(MIB - kept * CHUNK_SIZE));
    pool.trim();
    assert_eq!(pool.available(), Some(MIB));
    // Alignment beyond 8 bytes, up to a page.
    for align in [16, 64, 256, 1024, PAGE] {
        let block = pool.alloc_layout(Layout::from_size_align(64, align).unwrap()).unwrap();
        assert_eq!(addr(block) % align, 0, "align {align}");
        // SAFETY: the block came from `pool` and is freed once.
        unsafe { pool.free(block) };
    }
    // Statistics and an integrity check.
    let block = pool.alloc(200).unwrap();
    let stats = pool.stats();
    assert_eq!((stats.live_blocks, stats.limit), (1, Some(MIB)));
    assert!(stats.bytes_in_use >= 200 && stats.bytes_held >= CHUNK_SIZE);
    pool.check().unwrap();
    // SAFETY: the block came from `pool` and is freed once.
    unsafe { pool.free(block) };
    // The same for a heap pool over a shared pool: its chunks go back to the shared pool.
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let child = shm.child();
    let blocks: Vec<_> = (0..8000).map(|_| child.alloc(64).unwrap()).collect();
    assert_eq!(addr(blocks[1]).abs_diff(addr(blocks[0])), 64);
    for block in blocks {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    // The engine keeps its head chunk and up to four spares, the child's source up to eight
    // more chunks for its next ones.
    assert!(shm.stats().unwrap().lent_bytes <= (1 + 4 + 8) * CHUNK_SIZE);
    child.check().unwrap();
    child.trim();
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    drop(child);
    assert_eq!(shm.available(), start);
}
