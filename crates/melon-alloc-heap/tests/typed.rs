//! The typed surface of heap pools: values, strings and slices placed in a pool, the requests it
//! refuses with an error rather than a panic, and a fill function that panics midway.

use std::panic::{catch_unwind, AssertUnwindSafe};

use melon_alloc_core::CHUNK_SIZE;
use melon_alloc_heap::{HeapPool, TypedAllocError, MAX_TYPED_ALIGN};

#[test]
fn values_of_several_types_live_side_by_side() {
    let pool = HeapPool::new();
    let byte = pool.alloc_value(7_u8).unwrap();
    let wide = pool.alloc_value(u128::MAX).unwrap();
    let text = pool.alloc_value(String::from("owned elsewhere")).unwrap();
    *byte += 1;
    *wide -= 1;
    text.push('!');
    assert_eq!((*byte, *wide), (8, u128::MAX - 1));
    assert_eq!(text, "owned elsewhere!");
    assert_eq!(core::ptr::from_mut(wide).align_offset(align_of::<u128>()), 0);
    assert_eq!(pool.stats().live_blocks, 3);
    pool.check().unwrap();
    // The `String` is never dropped by the pool; its heap buffer belongs to the global
    // allocator, so take it back here rather than leak it.
    drop(core::mem::take(text));
}

#[test]
fn values_in_a_child_come_back_when_the_child_goes() {
    let root = HeapPool::new();
    let child = root.child();
    let value = child.alloc_value([1_u64; 4]).unwrap();
    value[3] = 9;
    assert_eq!(value.iter().sum::<u64>(), 12);
    assert_eq!(root.stats().bytes_lent, CHUNK_SIZE);
    drop(child);
    assert_eq!(root.stats().bytes_lent, 0);
    root.check().unwrap();
}

#[test]
fn a_reset_takes_every_typed_block_back() {
    let mut pool = HeapPool::with_limit(4 * CHUNK_SIZE);
    for round in 0..3 {
        let numbers = pool.alloc_slice_fill_with(1000, |i| i + round).unwrap();
        assert_eq!(numbers[999], 999 + round);
        let name = pool.alloc_str("round").unwrap();
        assert_eq!(name, "round");
        assert_eq!(pool.stats().live_blocks, 2);
        pool.reset();
        assert_eq!(pool.stats().live_blocks, 0);
        pool.check().unwrap();
    }
}

#[test]
fn strings_and_slices_are_copies() {
    let pool = HeapPool::new();
    let source = String::from("héllo");
    let copy = pool.alloc_str(&source).unwrap();
    copy.make_ascii_uppercase();
    assert_eq!((source.as_str(), &*copy), ("héllo", "HéLLO"));

    let numbers = [1_i32, -2, 3];
    let copied = pool.alloc_slice_copy(&numbers).unwrap();
    copied[1] = 2;
    assert_eq!((numbers, &*copied), ([1, -2, 3], &[1, 2, 3][..]));

    // Large enough to take a large block of its own.
    let long = vec![0xA5_u8; 3 * CHUNK_SIZE];
    let placed = pool.alloc_slice_copy(&long).unwrap();
    assert_eq!(placed.len(), long.len());
    assert!(placed.iter().all(|&byte| byte == 0xA5));
    assert_eq!(pool.stats().live_blocks, 3);
    pool.check().unwrap();
}

#[test]
fn empty_strings_and_slices_take_no_memory() {
    let pool = HeapPool::new();
    assert_eq!(pool.alloc_str("").unwrap(), "");
    assert!(pool.alloc_slice_copy::<u32>(&[]).unwrap().is_empty());
    let never_called = pool.alloc_slice_fill_with(0, |_| -> u8 { unreachable!() }).unwrap();
    assert!(never_called.is_empty());
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.stats().bytes_held, 0);
}

/// A value of a zero-sized type, as bumpalo serves it: no memory, a reference aligned for the
/// type, and a slice of any length whose fill function runs for each element.
#[test]
fn zero_sized_values_and_slices_take_no_memory() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(align(64))]
    struct Marker;

    let pool = HeapPool::new();
    assert_eq!(pool.alloc_value(()), Ok(&mut ()));
    let marker = pool.alloc_value(Marker).unwrap();
    assert_eq!(core::ptr::from_mut(marker).addr() % 64, 0);
    assert_eq!(pool.alloc_slice_copy(&[Marker; 4]).unwrap(), [Marker; 4]);
    let mut calls = 0;
    let filled = pool.alloc_slice_fill_with(5, |_| calls += 1).unwrap();
    assert_eq!((filled.len(), calls), (5, 5));
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.stats().bytes_held, 0);
}

/// A fill function that panics midway through a slice of a zero-sized type with a `Drop`: the
/// elements made so far are dropped once each, and no block is freed, since none was taken.
#[test]
fn a_panic_filling_a_zero_sized_slice_drops_what_was_made() {
    use std::sync::atomic::{AtomicU32, Ordering};

    static DROPS: AtomicU32 = AtomicU32::new(0);
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }

    let pool = HeapPool::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = pool.alloc_slice_fill_with(4, |i| {
            assert!(i < 3, "the fourth element fails");
            Counted
        });
    }));
    assert!(result.is_err());
    assert_eq!(DROPS.load(Ordering::Relaxed), 3);
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn alignments_above_what_the_pool_serves_are_refused() {
    #[derive(Clone, Copy)]
    #[repr(align(8192))]
    struct Largest(u8);
    // Only its alignment is ever looked at: the pool refuses it before it is written anywhere.
    #[allow(dead_code)]
    #[derive(Clone, Copy)]
    #[repr(align(16384))]
    struct TooLarge(u8);

    let pool = HeapPool::new();
    let largest = pool.alloc_value(Largest(1)).unwrap();
    assert_eq!(core::ptr::from_mut(largest).addr() % MAX_TYPED_ALIGN, 0);
    assert_eq!(largest.0, 1);
    let refused = Err(TypedAllocError::Alignment { align: 16384 });
    assert_eq!(pool.alloc_value(TooLarge(1)).map(|_| ()), refused);
    assert_eq!(pool.alloc_slice_copy(&[TooLarge(1)]).map(|_| ()), refused);
    assert_eq!(pool.alloc_slice_fill_with(1, |_| TooLarge(1)).map(|_| ()), refused);
    assert_eq!(pool.stats().live_blocks, 1);
    pool.check().unwrap();
}

#[test]
fn lengths_that_overflow_are_refused() {
    let pool = HeapPool::new();
    let calls = core::cell::Cell::new(0);
    let overflow = pool.alloc_slice_fill_with(usize::MAX / 2, |_| {
        calls.set(calls.get() + 1);
        0_u32
    });
    assert_eq!(overflow, Err(TypedAllocError::Overflow { len: usize::MAX / 2, elem_size: 4 }));
    // Past `isize::MAX` bytes, though the product fits a `usize`.
    let too_long = pool.alloc_slice_fill_with(isize::MAX as usize / 2 + 1, |_| 0_u16);
    assert!(matches!(too_long, Err(TypedAllocError::Overflow { .. })));
    assert_eq!(calls.get(), 0);
    assert_eq!(pool.stats().bytes_held, 0);
}

#[test]
fn the_limit_is_an_error() {
    let pool = HeapPool::with_limit(CHUNK_SIZE);
    let refused = pool.alloc_slice_copy(&[0_u8; 2 * CHUNK_SIZE]);
    assert_eq!(refused, Err(TypedAllocError::OutOfMemory { size: 2 * CHUNK_SIZE, align: 1 }));
    assert!(refused.unwrap_err().to_string().contains("limit"));
    let big = pool.alloc_value([0_u64; 64]);
    assert!(big.is_ok());
    assert_eq!(pool.stats().live_blocks, 1);
    pool.check().unwrap();
}

#[test]
fn a_refusal_for_memory_hands_out_nothing_and_gives_idle_chunks_back() {
    let pool = HeapPool::with_limit(2 * CHUNK_SIZE);
    let block = pool.alloc(64).unwrap();
    // SAFETY: the block came from `pool` and is not used again.
    unsafe { pool.free(block) };
    let before = pool.stats();
    assert_eq!(before.bytes_held, CHUNK_SIZE, "the emptied chunk is kept for reuse");
    let refused = pool.alloc_slice_copy(&[0_u8; 40_000]);
    assert!(matches!(refused, Err(TypedAllocError::OutOfMemory { size: 40_000, .. })));
    let after = pool.stats();
    assert_eq!(after.live_blocks, 0);
    assert_eq!(after.bytes_held, 0, "the refusal trimmed the pool first, to make room");
    assert_eq!(pool.available(), Some(2 * CHUNK_SIZE));
    pool.check().unwrap();
}

/// Counts the drops of the elements that `alloc_slice_fill_with` made before `f` panicked.
struct Tracked<'a>(&'a core::cell::Cell<usize>);

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_panic_in_the_fill_function_drops_what_was_made_and_frees_the_block() {
    let pool = HeapPool::new();
    let kept = pool.alloc_value(1_u32).unwrap();
    let drops = core::cell::Cell::new(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        pool.alloc_slice_fill_with(10, |i| {
            assert!(i < 6, "the fill function gives up at element {i}");
            Tracked(&drops)
        })
        .map(|slice| slice.len())
    }));
    let message = outcome.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert_eq!(message, "the fill function gives up at element 6");
    assert_eq!(drops.get(), 6);
    assert_eq!(pool.stats().live_blocks, 1);
    pool.check().unwrap();
    assert_eq!(*kept, 1);

    // The pool works on as before.
    let after = pool.alloc_slice_fill_with(3, |i| i as u8).unwrap();
    assert_eq!(after, [0, 1, 2]);
    pool.check().unwrap();
}

#[test]
fn a_typed_block_can_be_freed_through_the_unsafe_api() {
    let pool = HeapPool::new();
    let value = pool.alloc_value(5_u64).unwrap();
    let block = core::ptr::NonNull::from(value).cast::<u8>();
    // SAFETY: the block came from `pool` and the reference, moved into `NonNull::from`, is not
    // used again.
    unsafe { pool.try_free(block) }.unwrap();
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

/// A value shorter than the free list's link, freed through the pointer its reference gives,
/// which may write its own bytes alone: the free writes the link through the pool's pointer to
/// the block (under Miri, the access the aliasing model checks).
#[test]
fn a_typed_value_shorter_than_a_link_can_be_freed_through_its_reference() {
    let pool = HeapPool::new();
    let small = pool.alloc_value(5_u32).unwrap();
    // SAFETY: the block came from `pool`; the reference is not used again.
    unsafe { pool.free(core::ptr::NonNull::from(small).cast()) };
    let text = pool.alloc_str("ab").unwrap();
    // SAFETY: as above.
    unsafe { pool.try_free(core::ptr::NonNull::from(text).cast()) }.unwrap();
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

/// The typed calls of the locked pools that an async server shares between threads: a
/// request's child of a `static` root, its values used on another thread, its limit an error,
/// and everything back with the root once the child goes and the root is trimmed.
#[test]
fn a_locked_childs_typed_values_cross_threads_and_come_back() {
    use melon_alloc_heap::{GlobalSource, SyncPool};

    static ROOT: SyncPool = SyncPool::new(GlobalSource::new(), None);
    let child = ROOT.child_with_limit(CHUNK_SIZE);
    let name = child.alloc_str("request-7").unwrap();
    let ids = child.alloc_slice_fill_with(100, |i| i as u64).unwrap();
    let point = child.alloc_value((1_u32, 2_u32)).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            assert_eq!(&*name, "request-7");
            assert_eq!(ids[99], 99);
            point.0 = 5;
        });
    });
    assert_eq!(*point, (5, 2));
    assert_eq!(child.stats().live_blocks, 3);
    let refused = child.alloc_slice_copy(&[0_u8; 2 * CHUNK_SIZE]);
    assert_eq!(refused, Err(TypedAllocError::OutOfMemory { size: 2 * CHUNK_SIZE, align: 1 }));
    assert_eq!(child.alloc_value(()), Ok(&mut ()));
    drop(child);
    assert!(ROOT.trim() >= CHUNK_SIZE, "the child's chunk went back to the root");
    assert_eq!(ROOT.stats().chunks, 0);
}
