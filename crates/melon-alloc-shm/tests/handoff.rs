//! Blocks of a child pool handed off with `ShmPool::hand_off` and freed through the shared
//! pool: the child collects them when it runs out of blocks, a double free or a pointer inside
//! a block is refused, and a
//! child dropped while blocks are out leaves their chunks lent until the last one is freed.
//! (Across processes: `tests/fork.rs`.)

use core::ptr::NonNull;

use melon_alloc_core::CHUNK_SIZE;
use melon_alloc_heap::ChildPool;
use melon_alloc_shm::{ShmError, ShmPool};

const MIB: usize = 1 << 20;

/// Hands `block` off and returns it as the receiving side would see it.
fn hand_off(shm: &ShmPool, block: NonNull<u8>) -> NonNull<u8> {
    // SAFETY: every block passed is an in-use block of a child of `shm`, handed off once and
    // from then on freed through `shm` alone.
    let offset = unsafe { shm.hand_off(block) }.unwrap();
    shm.ptr_at(offset).unwrap()
}

fn free(shm: &ShmPool, block: NonNull<u8>) -> Result<(), ShmError> {
    // SAFETY: the block was handed off and nothing uses it any more; a second free is refused by
    // the block's mark, which is what one test checks.
    unsafe { shm.try_free(block) }
}

#[test]
fn handed_off_blocks_freed_through_the_pool_come_back_to_their_child() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let child = shm.child();
    let blocks: Vec<_> = (0..1000).map(|_| hand_off(&shm, child.alloc(64).unwrap())).collect();
    let lent = shm.stats().unwrap().lent_bytes;
    for block in blocks {
        free(&shm, block).unwrap();
    }
    // The child's chunks are all in use as far as it knows, until it runs out and collects.
    let again: Vec<_> = (0..1000).map(|_| child.alloc(64).unwrap()).collect();
    assert_eq!(shm.stats().unwrap().lent_bytes, lent, "the freed blocks served, no new chunk");
    for block in again {
        // SAFETY: each block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    child.check().unwrap();
    drop(child);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lent_bytes, 0);
    shm.check().unwrap();
}

/// Lists of many lengths, in chunks of three classes, collected at once: each block comes back,
/// none twice.
#[test]
fn remote_free_lists_of_many_chunks_and_lengths_all_come_back_once() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let child = shm.child();
    let sizes = [64, 1000, 3000];
    let per_chunk = |size: usize| CHUNK_SIZE / size;
    let blocks: Vec<Vec<_>> = sizes
        .iter()
        .map(|&size| (0..per_chunk(size) * 3).map(|_| child.alloc(size).unwrap()).collect())
        .collect();
    // Freed in another order than allocated, and more from some chunks than from others: every
    // third block of the small class, every block of the others.
    let mut freed = std::collections::HashSet::new();
    for (class, list) in blocks.iter().enumerate() {
        for (index, &block) in list.iter().enumerate().rev() {
            if class != 0 || index % 3 == 0 {
                freed.insert(block);
                free(&shm, hand_off(&shm, block)).unwrap();
            }
        }
    }
    // The child first hands out what its chunks still have, at most a chunk's worth a class;
    // then it collects.
    let mut again = std::collections::HashSet::new();
    for (class, &size) in sizes.iter().enumerate() {
        let mine: Vec<_> = blocks[class].iter().filter(|block| freed.contains(block)).collect();
        for _ in 0..mine.len() + per_chunk(size) {
            assert!(again.insert(child.alloc(size).unwrap()), "a block handed out twice");
            if mine.iter().all(|block| again.contains(block)) {
                break;
            }
        }
    }
    assert!(freed.is_subset(&again), "each freed block came back");
    child.check().unwrap();
}

#[test]
fn a_block_not_handed_off_or_freed_twice_is_refused() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child();
    let kept = child.alloc(64).unwrap();
    let addr = kept.as_ptr().addr();
    assert_eq!(
        free(&shm, kept),
        Err(ShmError::NotHandedOff { addr }),
        "a block of a child, never handed off"
    );
    // Two blocks of one chunk out: each free is checked against its own block's mark, not
    // against the chunk's count alone.
    let block = hand_off(&shm, child.alloc(64).unwrap());
    let other = hand_off(&shm, child.alloc(64).unwrap());
    free(&shm, block).unwrap();
    let addr = block.as_ptr().addr();
    assert_eq!(free(&shm, block), Err(ShmError::NotHandedOff { addr }), "twice");
    // SAFETY: 16 bytes into a 64-byte block.
    let inside = unsafe { other.add(16) };
    let addr = inside.as_ptr().addr();
    assert_eq!(free(&shm, inside), Err(ShmError::NotHandedOff { addr }), "inside");
    // SAFETY: handed off above; refused without any change, as it is handed off already.
    assert!(unsafe { shm.hand_off(other) }.is_err(), "handed off twice");
    free(&shm, other).unwrap();
    // A block of the shared pool itself is no child's to hand off.
    let own = shm.alloc(64).unwrap();
    // SAFETY: refused without any change, as the pool's own blocks are not handed off.
    let refused = unsafe { shm.hand_off(own) };
    assert!(refused.is_err());
    free(&shm, own).unwrap();
    // SAFETY: the block came from `child` and is freed once.
    unsafe { child.free(kept) };
    shm.check().unwrap();
}

/// A receiver that writes into a block after freeing it can break the remote-free list the block
/// waits on, here into a loop back to the block itself; the child still hands each block out
/// once.
#[test]
fn a_remote_free_list_looped_back_by_a_stray_write_hands_each_block_out_once() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child();
    let block = child.alloc(64).unwrap();
    let within = u32::try_from(shm.offset_of(block).unwrap() % CHUNK_SIZE).unwrap();
    let received = hand_off(&shm, block);
    free(&shm, received).unwrap();
    // SAFETY: the block holds 64 bytes and nothing else writes it meanwhile; writing it after
    // the free is the receiver's bug this test plays.
    unsafe { received.cast::<u32>().as_ptr().write(within) };
    // More than a chunk's worth of 64-byte blocks: the child runs out and collects.
    let blocks: Vec<_> = (0..CHUNK_SIZE / 64 + 1).map(|_| child.alloc(64).unwrap()).collect();
    let distinct: std::collections::HashSet<_> = blocks.iter().collect();
    assert_eq!(distinct.len(), blocks.len(), "a block handed out twice");
    assert!(blocks.contains(&block), "the freed block came back");
    child.check().unwrap();
    for block in blocks {
        // SAFETY: each block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}

/// A child dropped while blocks handed off from it are out: its other chunks come back at once,
/// the chunk those blocks lie in when the last of them is freed.
#[test]
fn a_dropped_childs_chunk_waits_for_its_handed_off_blocks() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let child = shm.child();
    let out: Vec<_> = (0..3).map(|_| hand_off(&shm, child.alloc(100).unwrap())).collect();
    let _scratch: Vec<_> = (0..200).map(|_| child.alloc(2000).unwrap()).collect();
    for (index, block) in out.iter().enumerate() {
        // SAFETY: each handed-off block holds 100 bytes.
        unsafe { block.as_ptr().write_bytes(index as u8, 100) };
    }
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, CHUNK_SIZE, "one orphan, the rest came back");
    shm.check().unwrap();
    for (index, block) in out.into_iter().enumerate() {
        // SAFETY: the orphan's blocks are still in place, untouched.
        assert_eq!(unsafe { block.as_ptr().add(99).read() }, index as u8);
        free(&shm, block).unwrap();
    }
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// Orphans whose blocks nobody will free (their receiver died holding them) are counted in the
/// stats, stay through `reclaim_dead`, and come back with `reclaim_orphans`, which leaves a live
/// child's chunk, and its block handed off, alone.
#[test]
fn orphans_nobody_will_free_into_come_back_on_demand_and_live_chunks_stay() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let (gone, live) = (shm.child(), shm.child());
    let orphans: Vec<_> =
        [100, 3000].iter().map(|&size| hand_off(&shm, gone.alloc(size).unwrap())).collect();
    let still_live = hand_off(&shm, live.alloc(100).unwrap());
    drop(gone);
    let stats = shm.stats().unwrap();
    assert_eq!((stats.orphaned_bytes, stats.lent_bytes), (2 * CHUNK_SIZE, 3 * CHUNK_SIZE));
    // One of the orphans' blocks is freed; the other's receiver is gone.
    free(&shm, orphans[0]).unwrap();
    assert_eq!(shm.stats().unwrap().orphaned_bytes, CHUNK_SIZE, "the idle orphan went back");
    assert_eq!(shm.reclaim_dead().unwrap().chunks, 0, "nobody died: the orphan waits");
    // SAFETY: nobody holds or frees the block left in the orphan.
    let report = unsafe { shm.reclaim_orphans() }.unwrap();
    assert_eq!((report.processes, report.chunks, report.bytes), (0, 1, CHUNK_SIZE));
    let stats = shm.stats().unwrap();
    assert_eq!((stats.orphaned_bytes, stats.lent_bytes), (0, CHUNK_SIZE));
    shm.check().unwrap();
    // The live child's block is still handed off, and its free is still taken.
    free(&shm, still_live).unwrap();
    assert_eq!(
        free(&shm, still_live),
        Err(ShmError::NotHandedOff { addr: still_live.as_ptr() as usize })
    );
    drop(live);
    assert_eq!(shm.available(), start);
    // SAFETY: there are no orphans left.
    assert_eq!(unsafe { shm.reclaim_orphans() }.unwrap().chunks, 0);
    shm.check().unwrap();
}

/// Two child pools of one process: frees into one child's chunks are collected by that child,
/// even when the other runs out of blocks and looks first.
#[test]
fn each_child_of_a_process_collects_its_own_blocks() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let (first, second) = (shm.child(), shm.child());
    let handed: Vec<_> = (0..255).map(|_| hand_off(&shm, second.alloc(64).unwrap())).collect();
    for block in handed {
        free(&shm, block).unwrap();
    }
    // The first child runs out of blocks, and looks at its own lists.
    let mine: Vec<_> = (0..600).map(|_| first.alloc(64).unwrap()).collect();
    let lent = shm.stats().unwrap().lent_bytes;
    let again: Vec<_> = (0..255).map(|_| second.alloc(64).unwrap()).collect();
    assert_eq!(shm.stats().unwrap().lent_bytes, lent, "the second child reused its blocks");
    for (pool, blocks) in [(&first, mine), (&second, again)] {
        for block in blocks {
            // SAFETY: each block came from `pool` and is freed once.
            unsafe { pool.free(block) };
        }
    }
    drop((first, second));
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}

/// Freeing by pointer alone: a handed-off block is freed as its shared pool's, and any other
/// block of a child is left to the child (`None`), unchanged.
#[test]
fn free_shared_frees_handed_off_blocks_and_leaves_the_rest_to_their_child() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child();
    let own = child.alloc(64).unwrap();
    let handed = hand_off(&shm, child.alloc(64).unwrap());
    // SAFETY: a block of the child, never handed off: refused without any change.
    assert_eq!(unsafe { melon_alloc_shm::plumbing::free_shared(own) }, None);
    // SAFETY: the handed-off block, freed once.
    assert_eq!(unsafe { melon_alloc_shm::plumbing::free_shared(handed) }, Some(Ok(())));
    // SAFETY: freed already: no longer handed off, so left alone.
    assert_eq!(unsafe { melon_alloc_shm::plumbing::free_shared(handed) }, None);
    // SAFETY: the child's own block, freed once by its child.
    unsafe { child.free(own) };
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
}

/// A child reset after another process freed its handed-off blocks, before the child collected
/// them: the reset forgets them, as every block of the child is free after it, and each block
/// is handed out once.
#[test]
fn a_reset_child_hands_each_block_out_once() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let mut child = shm.child();
    let handed: Vec<_> = (0..300).map(|_| hand_off(&shm, child.alloc(64).unwrap())).collect();
    for block in handed {
        free(&shm, block).unwrap();
    }
    child.reset();
    let mut blocks: Vec<_> = (0..2000).map(|_| child.alloc(64).unwrap().as_ptr().addr()).collect();
    blocks.sort_unstable();
    let len = blocks.len();
    blocks.dedup();
    assert_eq!(blocks.len(), len, "a block was handed out twice");
    child.check().unwrap();
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}

/// A list of more blocks than the engine takes at a time, looped back to its head by a stray
/// write into its last block: each block is handed out once, and the loop ends the walk.
#[test]
fn a_looped_list_longer_than_the_engines_batch_hands_each_block_out_once() {
    const LENGTH: usize = 40;
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child();
    let blocks: Vec<_> = (0..LENGTH).map(|_| child.alloc(64).unwrap()).collect();
    let chunk_of = |block: NonNull<u8>| shm.offset_of(block).unwrap() / CHUNK_SIZE;
    assert!(blocks.iter().all(|&block| chunk_of(block) == chunk_of(blocks[0])), "one list");
    let received: Vec<_> = blocks.iter().map(|&block| hand_off(&shm, block)).collect();
    for &block in &received {
        free(&shm, block).unwrap();
    }
    // The list runs from the last block freed to the first, whose link, written into it after
    // its free (the receiver's bug this test plays), names the head.
    let head = u32::try_from(shm.offset_of(blocks[LENGTH - 1]).unwrap() % CHUNK_SIZE).unwrap();
    // SAFETY: the block holds 64 bytes and nothing else writes it meanwhile.
    unsafe { received[0].cast::<u32>().as_ptr().write(head) };
    let again: Vec<_> = (0..CHUNK_SIZE / 64 + 1).map(|_| child.alloc(64).unwrap()).collect();
    let distinct: std::collections::HashSet<_> = again.iter().collect();
    assert_eq!(distinct.len(), again.len(), "a block handed out twice");
    assert!(blocks.iter().all(|block| distinct.contains(block)), "each freed block came back");
    child.check().unwrap();
}

/// A child that handed off `count` blocks of 16 bytes, freed elsewhere, and then allocated until
/// it took back the first of them: more than one collection takes at once, so that the rest are
/// still on the lists the child took. Returns the child, the bytes lent to it, and the blocks it
/// holds.
fn child_with_a_collection_under_way(
    shm: &ShmPool,
    count: usize,
) -> (ChildPool<'_>, usize, Vec<usize>) {
    let child = shm.child();
    let handed: Vec<_> = (0..count).map(|_| hand_off(shm, child.alloc(16).unwrap())).collect();
    let freed: std::collections::HashSet<_> =
        handed.iter().map(|block| block.as_ptr().addr()).collect();
    for block in handed {
        free(shm, block).unwrap();
    }
    let lent = shm.stats().unwrap().lent_bytes;
    // Blocks never handed out come first, a chunk's worth at most.
    let mut held = Vec::new();
    while held.last().is_none_or(|block| !freed.contains(block)) {
        assert!(held.len() <= CHUNK_SIZE / 16, "no block freed elsewhere came back");
        held.push(child.alloc(16).unwrap().as_ptr().addr());
    }
    (child, lent, held)
}

/// Blocks freed elsewhere, more than one collection takes: the next allocations take the rest
/// of them, each once, with no new chunk.
#[test]
fn a_collection_longer_than_one_take_hands_each_block_out_once() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let (child, lent, mut blocks) = child_with_a_collection_under_way(&shm, 5000);
    while blocks.len() < 5000 {
        blocks.push(child.alloc(16).unwrap().as_ptr().addr());
    }
    assert_eq!(shm.stats().unwrap().lent_bytes, lent, "the freed blocks served, no new chunk");
    blocks.sort_unstable();
    blocks.dedup();
    assert_eq!(blocks.len(), 5000, "a block was handed out twice");
    child.check().unwrap();
}

/// A child reset in the middle of a collection forgets the blocks it had still to take, as it
/// does the lists: each block is handed out once after it.
#[test]
fn a_child_reset_in_the_middle_of_a_collection_hands_each_block_out_once() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let (mut child, _, _) = child_with_a_collection_under_way(&shm, 5000);
    child.reset();
    let mut blocks: Vec<_> = (0..6000).map(|_| child.alloc(16).unwrap().as_ptr().addr()).collect();
    blocks.sort_unstable();
    blocks.dedup();
    assert_eq!(blocks.len(), 6000, "a block was handed out twice");
    child.check().unwrap();
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}
