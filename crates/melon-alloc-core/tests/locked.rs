//! The locked pool's own calls: the unchecked free, reset through `&mut`, zeroed blocks, and
//! children that take their chunks through the parent's lock.

use melon_alloc_core::{LockedPool, RegionSource, CHUNK_SIZE};

/// A buffer for a region of `chunks` chunks (one more, since the buffer's start need not be
/// aligned to a chunk), every byte `fill`.
fn buffer_of(chunks: usize, fill: u8) -> Vec<u8> {
    vec![fill; (chunks + 1) * CHUNK_SIZE]
}

/// A locked pool over `buffer`.
fn pool_over(buffer: &mut [u8], limit: Option<usize>) -> LockedPool<RegionSource> {
    // SAFETY: the buffer is not touched again until the pool and its chunks are gone: every test
    // binds the pool after the buffer, so the pool is dropped first.
    let source = unsafe { RegionSource::new(buffer.as_mut_ptr(), buffer.len()) };
    LockedPool::new(source, limit)
}

#[test]
fn free_takes_blocks_back_for_reuse() {
    let mut arena = buffer_of(2, 0);
    let pool = pool_over(&mut arena, None);
    // More blocks than one chunk holds, one at a time: only reuse keeps them in one chunk.
    for _ in 0..CHUNK_SIZE / 48 + 8 {
        let block = pool.alloc(48).unwrap();
        // SAFETY: the block came from `pool` and is not used again.
        unsafe { pool.free(block) };
    }
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.stats().bytes_held, CHUNK_SIZE);
    pool.check().unwrap();
}

#[test]
fn alloc_zeroed_zeroes_dirty_memory() {
    let mut arena = buffer_of(2, 0xEE);
    let pool = pool_over(&mut arena, None);
    let clean = pool.alloc_zeroed(200).unwrap();
    // SAFETY: the block holds 200 initialised bytes, and nothing else refers to it.
    let bytes = unsafe { core::slice::from_raw_parts(clean.as_ptr(), 200) };
    assert!(bytes.iter().all(|&byte| byte == 0));
    pool.check().unwrap();
}

#[test]
fn reset_frees_every_block_and_keeps_the_chunks() {
    let mut arena = buffer_of(4, 0);
    let mut pool = pool_over(&mut arena, None);
    // Half a chunk of small blocks, in one chunk; the large block takes the other three.
    for _ in 0..CHUNK_SIZE / 64 / 2 {
        pool.alloc(64).unwrap();
    }
    pool.alloc(2 * CHUNK_SIZE).unwrap();
    let held = pool.stats().bytes_held;
    pool.reset();
    let stats = pool.stats();
    assert_eq!(stats.live_blocks, 0);
    assert!(stats.bytes_held <= held);
    pool.check().unwrap();
    // The pool serves on from what it kept.
    let block = pool.alloc(64).unwrap();
    // SAFETY: the block came from `pool` and is not used again.
    unsafe { pool.free(block) };
    pool.check().unwrap();
}

#[test]
fn a_child_takes_chunks_from_its_parent_and_gives_them_all_back() {
    let mut arena = buffer_of(6, 0);
    let root = pool_over(&mut arena, None);
    let child = root.child();
    let small = child.alloc(64).unwrap();
    let large = child.alloc(2 * CHUNK_SIZE).unwrap();
    assert_eq!(root.stats().bytes_lent, child.stats().bytes_held);
    assert!(root.stats().bytes_lent >= 3 * CHUNK_SIZE);
    // SAFETY: both blocks came from `child` and are not used again.
    unsafe { child.free(small) };
    // SAFETY: as above.
    unsafe { child.try_free(large) }.unwrap();
    child.check().unwrap();
    drop(child);
    assert_eq!(root.stats().bytes_lent, 0);
    root.check().unwrap();
}

#[test]
fn a_child_limit_and_the_parent_limit_both_hold() {
    let mut arena = buffer_of(6, 0);
    let root = pool_over(&mut arena, Some(2 * CHUNK_SIZE));
    let capped = root.child_with_limit(CHUNK_SIZE);
    assert!(capped.alloc(64).is_some());
    assert!(capped.alloc(CHUNK_SIZE).is_none(), "past the child's own limit");
    let other = root.child();
    assert!(other.alloc(64).is_some());
    assert!(other.alloc(2 * CHUNK_SIZE).is_none(), "past the parent's limit");
    assert_eq!(root.available(), Some(0));
    drop((capped, other));
    assert_eq!(root.available(), Some(2 * CHUNK_SIZE));
    root.check().unwrap();
}

#[test]
fn a_child_resets_alone_and_grandchildren_nest() {
    let mut arena = buffer_of(6, 0);
    let root = pool_over(&mut arena, None);
    let mut child = root.child();
    {
        let grandchild = child.child();
        let block = grandchild.alloc_zeroed(100).unwrap();
        assert_eq!(child.stats().bytes_lent, CHUNK_SIZE);
        assert_eq!(root.stats().bytes_lent, CHUNK_SIZE);
        // SAFETY: the block came from `grandchild` and is not used again.
        unsafe { grandchild.free(block) };
    }
    assert_eq!(child.stats().bytes_lent, 0);
    for _ in 0..50 {
        child.alloc(128).unwrap();
    }
    child.reset();
    assert_eq!(child.stats().live_blocks, 0);
    child.check().unwrap();
    root.check().unwrap();
}

#[test]
fn threads_share_a_child_of_a_shared_pool() {
    let threads = if cfg!(miri) { 2 } else { 4 };
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    let mut arena = buffer_of(64, 0);
    let root = pool_over(&mut arena, None);
    let left = root.child();
    let right = root.child_with_limit(4 * CHUNK_SIZE);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let pool = if thread % 2 == 0 { &left } else { &right };
            scope.spawn(move || {
                for round in 0..rounds {
                    let size = 16 + (round * 37 + thread * 11) % 1000;
                    let block = pool.alloc(size).unwrap();
                    // SAFETY: the block holds `size` bytes.
                    unsafe { block.as_ptr().write_bytes(thread as u8, size) };
                    // SAFETY: the block came from `pool` and is not used again.
                    unsafe { pool.free(block) };
                }
            });
        }
    });
    for pool in [&left, &right] {
        assert_eq!(pool.stats().live_blocks, 0);
        pool.check().unwrap();
    }
    assert_eq!(root.stats().bytes_lent, left.stats().bytes_held + right.stats().bytes_held);
    drop((left, right));
    assert_eq!(root.stats().bytes_lent, 0);
    root.check().unwrap();
}

/// `Allocator::grow` is handed a pointer made from the caller's own slice of the block, which
/// reaches only the bytes it asked for: the move reads the block through the pool's provenance,
/// so that Miri finds no access beyond the slice, and the bytes move with it.
#[test]
#[cfg(feature = "allocator-api2")]
fn grow_takes_a_pointer_that_reaches_only_the_callers_bytes() {
    use allocator_api2::alloc::Allocator;
    use core::alloc::Layout;
    use core::ptr::NonNull;

    let mut arena = buffer_of(2, 0);
    let pool = pool_over(&mut arena, None);
    // 100 bytes, in a slot of 112.
    let (old, new) = (Layout::new::<[u8; 100]>(), Layout::new::<[u8; 200]>());
    let block = pool.allocate(old).unwrap().cast::<[u8; 100]>();
    // SAFETY: the block holds 100 bytes, aligned, and nothing else uses it.
    let bytes: &mut [u8; 100] = unsafe { &mut *block.as_ptr() };
    bytes.fill(7);
    let handed_back = NonNull::from(bytes).cast::<u8>();
    // SAFETY: a block of this pool, allocated with `old`; only the result is used after.
    let grown = unsafe { pool.grow(handed_back, old, new) }.unwrap().cast::<u8>();
    assert_ne!(grown, handed_back, "the block moved to a larger class");
    // SAFETY: the first 100 bytes moved with the block.
    assert!((0..100).all(|index| unsafe { grown.as_ptr().add(index).read() } == 7));
    // SAFETY: the block is this pool's, with the new layout, and not used again.
    unsafe { pool.deallocate(grown, new) };
    assert_eq!(pool.stats().live_blocks, 0);
}
