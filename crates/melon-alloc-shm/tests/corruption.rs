//! What a pool does with state that a buggy or dying process left wrong: a write into a freed
//! block, impossible counters, requests its own code never makes. Each case must end in an
//! error, a counter or a quarantined slab, never in a block handed out twice or a write outside
//! the mapping.

use core::ptr::NonNull;

use melon_alloc_shm::{ShmCheckError, ShmError, ShmPool};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn addr(block: NonNull<u8>) -> usize {
    block.as_ptr() as usize
}

/// A use after free overwrites the free-list link of a slab's block; the next allocations must
/// not follow it into memory another block owns, whatever the link says: past the carved
/// blocks, to a block in use, or back to itself.
#[test]
fn a_write_into_a_freed_block_never_hands_out_a_live_block() {
    for link in [64u32, 10, 6, 0x4141_4141] {
        let shm = ShmPool::new(MIB).unwrap();
        // One slab of 64-byte blocks is one page of 64 blocks.
        let slab: Vec<_> = (0..64).map(|_| shm.alloc(64).unwrap()).collect();
        assert!(slab.iter().all(|&block| addr(block) / PAGE == addr(slab[0]) / PAGE));
        let large = shm.alloc(20_000).unwrap();
        let mut live: Vec<(usize, usize)> = slab.iter().map(|&block| (addr(block), 64)).collect();
        live.push((addr(large), shm.usable_size(large).unwrap()));
        for index in [5, 6] {
            // SAFETY: the block came from `shm` and is freed once.
            unsafe { shm.try_free(slab[index]) }.unwrap();
            live.retain(|&(at, _)| at != addr(slab[index]));
        }
        // The use after free: block 6, at the head of the free list, gets a new first word.
        // SAFETY: the block lies in the pool's mapping, which stays mapped; writing it is the
        // bug under test, not undefined behaviour of this program.
        unsafe { slab[6].as_ptr().cast::<u32>().write(link) };
        for _ in 0..4 {
            let block = shm.alloc(64).unwrap();
            let at = addr(block);
            let owner = live.iter().find(|&&(start, len)| at >= start && at < start + len);
            assert_eq!(owner, None, "link {link}: {at:#x} handed out while in use");
            live.push((at, 64));
        }
        assert_eq!(shm.stats().unwrap().quarantined_slabs, 1, "link {link}");
        let page = u32::try_from((addr(slab[0]) - addr(shm.ptr_at(0).unwrap())) / PAGE).unwrap();
        assert_eq!(shm.check(), Err(ShmError::Corrupt(ShmCheckError::Quarantined { page })));
        // The quarantined slab's blocks in use can still be freed, and it stays out of use.
        for &block in &slab[..5] {
            // SAFETY: an in-use block of the pool, freed once.
            unsafe { shm.try_free(block) }.unwrap();
        }
        let again = shm.alloc(64).unwrap();
        assert_ne!(addr(again) / PAGE, addr(slab[0]) / PAGE, "link {link}: back in use");
    }
}
