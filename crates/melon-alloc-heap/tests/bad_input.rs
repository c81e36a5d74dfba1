//! Pointers a pool must refuse: double frees, pointers of other pools or allocators, interior
//! pointers. `try_free` reports each with a [`FreeError`] and changes nothing.

use core::ptr::NonNull;

use melon_alloc_core::CHUNK_SIZE;
use melon_alloc_heap::{FreeError, HeapPool, Pool};

/// Offers `block` to `pool.try_free`, which must refuse it with `expected` and leave the pool
/// exactly as it was.
fn assert_refused(pool: &Pool, block: NonNull<u8>, expected: FreeError) {
    let before = pool.stats();
    // SAFETY: the caller passes a pointer that is not an in-use block of `pool`, so the call
    // only inspects it.
    let result = unsafe { pool.try_free(block) };
    assert_eq!(result, Err(expected), "pointer {block:p}");
    assert_eq!(pool.stats(), before, "a refused free changed the pool");
    pool.check().unwrap();
}

fn addr(block: NonNull<u8>) -> usize {
    block.as_ptr() as usize
}

#[test]
fn a_double_free_is_not_in_use() {
    let pool = HeapPool::new();
    let blocks: Vec<_> = (0..10).map(|_| pool.alloc(48).unwrap()).collect();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(blocks[3]) }.unwrap();
    assert_refused(&pool, blocks[3], FreeError::NotInUse { addr: addr(blocks[3]) });
    // A block freed through the plain path is refused the same way.
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(blocks[4]) };
    assert_refused(&pool, blocks[4], FreeError::NotInUse { addr: addr(blocks[4]) });
    // A block freed by `realloc` to zero as well.
    // SAFETY: from `pool`, freed once.
    assert_eq!(unsafe { pool.realloc(blocks[5], 0) }, None);
    assert_refused(&pool, blocks[5], FreeError::NotInUse { addr: addr(blocks[5]) });
    // The other blocks are untouched and still free normally.
    for (i, &block) in blocks.iter().enumerate() {
        if !(3..=5).contains(&i) {
            // SAFETY: from `pool`, freed once.
            unsafe { pool.try_free(block) }.unwrap();
        }
    }
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn a_double_free_in_a_chunk_that_was_full_is_not_in_use() {
    let pool = HeapPool::new();
    // Two chunks' worth of 2048-byte blocks, so the first chunk fills up and moves to the full
    // list, then comes back to the available list with its first free.
    let blocks: Vec<_> = (0..14).map(|_| pool.alloc(2048).unwrap()).collect();
    assert_eq!(pool.stats().chunks, 2);
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(blocks[0]) }.unwrap();
    assert_refused(&pool, blocks[0], FreeError::NotInUse { addr: addr(blocks[0]) });
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(blocks[13]) }.unwrap();
    assert_refused(&pool, blocks[13], FreeError::NotInUse { addr: addr(blocks[13]) });
}

#[test]
fn a_never_handed_out_block_is_not_in_use() {
    let pool = HeapPool::new();
    let block = pool.alloc(16).unwrap();
    // Blocks are carved a page at a time, so a block start in the chunk's last page has never
    // been handed out.
    let chunk_start = addr(block) & !(CHUNK_SIZE - 1);
    let late = NonNull::new(block.as_ptr().with_addr(chunk_start + CHUNK_SIZE - 16)).unwrap();
    assert_refused(&pool, late, FreeError::NotInUse { addr: addr(late) });
    // SAFETY: from `pool`, freed once.
    unsafe { pool.free(block) };
}

#[test]
fn a_block_of_another_pool_is_foreign() {
    let first = HeapPool::new();
    let second = HeapPool::new();
    let child = first.child();
    let sizes = [0, 100, 2048, 5000, 100_000];
    for size in sizes {
        let theirs = second.alloc(size).unwrap();
        assert_refused(&first, theirs, FreeError::Foreign { addr: addr(theirs) });
        // A child's blocks are not the parent's, though its chunks come from the parent...
        let childs = child.alloc(size).unwrap();
        assert_refused(&first, childs, FreeError::Foreign { addr: addr(childs) });
        // ...and the parent's blocks are not the child's.
        let parents = first.alloc(size).unwrap();
        assert_refused(&child, parents, FreeError::Foreign { addr: addr(parents) });
        for (pool, block) in [(&*second, theirs), (&*child, childs), (&*first, parents)] {
            // SAFETY: each block is freed once, through its own pool.
            unsafe { pool.try_free(block) }.unwrap();
        }
    }
    for pool in [&*first, &*second, &*child] {
        assert_eq!(pool.stats().live_blocks, 0);
    }
}

#[test]
fn memory_of_the_system_allocator_or_the_stack_is_foreign() {
    let pool = HeapPool::new();
    let live = pool.alloc(64).unwrap();
    let boxed = Box::new([0u8; 64]);
    let from_box = NonNull::from(&*boxed).cast::<u8>();
    assert_refused(&pool, from_box, FreeError::Foreign { addr: addr(from_box) });
    let big = vec![0u8; 1 << 20];
    let from_vec = NonNull::from(&big[CHUNK_SIZE * 3]);
    assert_refused(&pool, from_vec, FreeError::Foreign { addr: addr(from_vec) });
    let on_stack = 0u64;
    let from_stack = NonNull::from(&on_stack).cast::<u8>();
    assert_refused(&pool, from_stack, FreeError::Foreign { addr: addr(from_stack) });
    let dangling = NonNull::<u8>::dangling();
    assert_refused(&pool, dangling, FreeError::Foreign { addr: addr(dangling) });
    assert_eq!(on_stack, 0);
    // Under Miri, which interprets every read, a sample of the large buffer.
    let stride = if cfg!(miri) { 1021 } else { 1 };
    let sampled = big.iter().step_by(stride).chain(big.last());
    assert!(boxed.iter().chain(sampled).all(|&b| b == 0), "a refused free wrote to the memory");
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(live) }.unwrap();
}

#[test]
fn an_interior_pointer_of_a_small_block_is_interior() {
    let pool = HeapPool::new();
    for size in [32, 48, 100, 256, 1000, 2048] {
        let block = pool.alloc(size).unwrap();
        for offset in [1, 8, 16, size / 2, size - 1] {
            let inside = NonNull::new(block.as_ptr().wrapping_add(offset)).unwrap();
            assert_refused(&pool, inside, FreeError::Interior { addr: addr(inside) });
        }
        // SAFETY: from `pool`, freed once.
        unsafe { pool.try_free(block) }.unwrap();
    }
    // A pointer into a chunk's header is no block at all.
    let block = pool.alloc(16).unwrap();
    let header = NonNull::new(block.as_ptr().with_addr(addr(block) & !(CHUNK_SIZE - 1))).unwrap();
    assert_refused(&pool, header, FreeError::Interior { addr: addr(header) });
    let in_header = NonNull::new(header.as_ptr().wrapping_add(8)).unwrap();
    assert_refused(&pool, in_header, FreeError::Interior { addr: addr(in_header) });
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(block) }.unwrap();
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn an_interior_pointer_of_a_large_block_is_interior() {
    let pool = HeapPool::new();
    let size = 5 * CHUNK_SIZE;
    let block = pool.alloc(size).unwrap();
    // Pointers in the block's first chunk-sized stretch and far beyond it, where rounding the
    // address down no longer lands on the block's header.
    for offset in [1, 16, 4096, CHUNK_SIZE - 64, CHUNK_SIZE, 3 * CHUNK_SIZE + 16, size - 1] {
        let inside = NonNull::new(block.as_ptr().wrapping_add(offset)).unwrap();
        assert_refused(&pool, inside, FreeError::Interior { addr: addr(inside) });
    }
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(block) }.unwrap();
    assert_eq!(pool.stats().large_blocks, 0);
}

#[test]
fn a_pointer_past_a_short_large_block_is_foreign() {
    // A large chunk shorter than `CHUNK_SIZE` shares its chunk-sized stretch of addresses with
    // whatever its source put after it: the pool holds none of those bytes.
    let pool = HeapPool::new();
    let block = pool.alloc(10_000).unwrap();
    // SAFETY: from `pool`, in use.
    let usable = unsafe { pool.usable_size(block) };
    let last = NonNull::new(block.as_ptr().wrapping_add(usable - 1)).unwrap();
    assert_refused(&pool, last, FreeError::Interior { addr: addr(last) });
    let chunk_end = (addr(block) & !(CHUNK_SIZE - 1)) + CHUNK_SIZE;
    for past in [addr(block) + usable, chunk_end - 16] {
        let past = NonNull::new(block.as_ptr().with_addr(past)).unwrap();
        assert_refused(&pool, past, FreeError::Foreign { addr: addr(past) });
    }
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(block) }.unwrap();
}

#[test]
fn a_double_free_of_a_large_block_is_foreign() {
    // A freed large block's chunk goes straight back to the source, so the pointer is no longer
    // in any chunk of the pool.
    let pool = HeapPool::new();
    let keep = pool.alloc(100).unwrap();
    let block = pool.alloc(50_000).unwrap();
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(block) }.unwrap();
    assert_refused(&pool, block, FreeError::Foreign { addr: addr(block) });
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(keep) }.unwrap();
}

#[test]
fn refusals_leave_a_busy_pool_and_its_family_intact() {
    let root = HeapPool::with_limit(4 << 20);
    let child = root.child_with_limit(1 << 20);
    let mut live = Vec::new();
    // Under Miri, which interprets every check, every 25th block of the same spread of sizes.
    let step = if cfg!(miri) { 25 } else { 1 };
    for i in (0..200).step_by(step) {
        live.push((&*root, root.alloc(i * 13).unwrap()));
        live.push((&*child, child.alloc(i * 29).unwrap()));
    }
    let (root_before, child_before) = (root.stats(), child.stats());
    let (root_avail, child_avail) = (root.available(), child.available());
    for &(pool, block) in &live {
        let other: &Pool = if core::ptr::eq(pool, &*root) { &child } else { &root };
        let error = FreeError::Foreign { addr: addr(block) };
        assert_refused(other, block, error);
        let inside = NonNull::new(block.as_ptr().wrapping_add(1)).unwrap();
        assert_refused(pool, inside, FreeError::Interior { addr: addr(inside) });
    }
    assert_eq!((root.stats(), child.stats()), (root_before, child_before));
    assert_eq!((root.available(), child.available()), (root_avail, child_avail));
    for (pool, block) in live {
        // SAFETY: each block is freed once, through its own pool.
        unsafe { pool.try_free(block) }.unwrap();
    }
    assert_eq!(root.stats().live_blocks + child.stats().live_blocks, 0);
}

#[test]
fn free_errors_explain_themselves() {
    let texts = [
        (FreeError::Foreign { addr: 0x10 }, "does not belong"),
        (FreeError::Interior { addr: 0x20 }, "inside a block"),
        (FreeError::NotInUse { addr: 0x30 }, "not in use"),
    ];
    for (error, words) in texts {
        let text = error.to_string();
        assert!(text.contains(words), "{text}");
        assert!(text.contains("0x"), "{text}");
        let _: &dyn std::error::Error = &error;
    }
}

#[cfg(all(target_os = "linux", debug_assertions, not(miri)))]
#[path = "support/rerun.rs"]
mod rerun;

/// Set in the environment of a second run of this test binary, to the bad free it makes.
const BAD_FREE: &str = "MELON_ALLOC_BAD_FREE";

/// A debug build's unchecked `free` aborts with a message on a double free and on an interior
/// pointer, whose chunk is still the pool's. The abort ends the process, so the test binary runs
/// itself again, filtered to this test, once per bad free, and checks how each run died.
#[test]
#[cfg(all(target_os = "linux", debug_assertions))]
// Miri cannot start a process, so the test is not built there.
#[cfg(not(miri))]
fn a_debug_build_aborts_with_a_message_on_a_double_free_or_an_interior_pointer() {
    if let Some(kind) = std::env::var_os(BAD_FREE) {
        let pool = HeapPool::new();
        let block = pool.alloc(64).unwrap();
        let _other = pool.alloc(64).unwrap();
        if kind == "twice" {
            // SAFETY: the block came from `pool` and is not used again.
            unsafe { pool.free(block) };
            // SAFETY: deliberately broken: the block was freed just now, which the debug check
            // catches before anything changes.
            unsafe { pool.free(block) };
        } else {
            // SAFETY: deliberately broken: a pointer inside a block, which the debug check
            // catches before anything changes.
            unsafe { pool.free(block.byte_add(16)) };
        }
        unreachable!("the bad free returned");
    }
    for (kind, message) in [("twice", "is not in use"), ("interior", "points inside a block")] {
        let (signal, stderr) = rerun::rerun(
            "a_debug_build_aborts_with_a_message_on_a_double_free_or_an_interior_pointer",
            BAD_FREE,
            kind,
        );
        // SIGABRT is signal 6 on Linux.
        assert_eq!(signal, Some(6), "{kind}: {stderr}");
        assert!(stderr.contains("melon-alloc: invalid free"), "{kind}: {stderr}");
        assert!(stderr.contains(message), "{kind}: {stderr}");
    }
}
