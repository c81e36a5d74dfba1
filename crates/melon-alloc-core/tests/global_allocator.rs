//! A [`LockedPool`] over a [`RegionSource`] in a static arena as the global allocator of this
//! whole test program, harness included, the way firmware without an operating system would
//! use it.
// Loom's atomics cannot be built in a `static`, and loom models this pool on its own.
// Under Miri, the standard library's own code frees boxes whose pointers cover less than a
// free-list link (a `Box<u32>`) or that are still protected arguments (`self: Box<Self>`), where
// any allocator keeping its free list inside freed blocks writes outside the borrow Stacked Borrows
// allows; every other test hands blocks back through the pools' own pointers, and runs there.
#![cfg(not(any(melon_loom, miri)))]

use core::ptr::NonNull;

use melon_alloc_core::{FreeError, LockedPool, RegionSource, CHUNK_SIZE};

/// Room for the test harness as well as the tests.
const ARENA_SIZE: usize = 64 << 20;

static mut ARENA: [u8; ARENA_SIZE] = [0; ARENA_SIZE];

#[global_allocator]
static GLOBAL: LockedPool<RegionSource> =
    // SAFETY: `ARENA` is used by nothing but this pool, for the whole run.
    LockedPool::new(unsafe { RegionSource::new(&raw mut ARENA as *mut u8, ARENA_SIZE) }, None);

/// Whether `ptr` points into the arena.
fn in_arena<T: ?Sized>(ptr: *const T) -> bool {
    let start = &raw const ARENA as usize;
    (start..start + ARENA_SIZE).contains(&(ptr.cast::<u8>() as usize))
}

/// Whether `ptr` is the start of a block in use in the global pool. The lock is released before
/// anything is asserted, since a failed assertion allocates.
fn in_use<T: ?Sized>(ptr: *const T) -> Result<(), FreeError> {
    let block = NonNull::new(ptr.cast::<u8>().cast_mut()).unwrap();
    GLOBAL.with(|engine| engine.validate(block))
}

/// A page aligned to a quarter of a chunk: the largest alignment (below a chunk) that this test
/// asks of the pool.
#[cfg_attr(not(feature = "small-chunks"), repr(align(4096)))]
#[cfg_attr(feature = "small-chunks", repr(align(1024)))]
struct Page([u8; 4096]);

#[test]
fn std_collections_live_in_the_arena() {
    let numbers: Vec<u64> = (0..10_000).collect();
    let text = String::from("a string in a pool in a static arena");
    let boxed = Box::new(12345u32);
    let page = Box::new(Page([9; 4096]));
    let big = vec![7u8; 1 << 20];
    for (ptr, what) in [
        (numbers.as_ptr().cast::<u8>(), "vec"),
        (text.as_ptr(), "string"),
        ((&raw const *boxed).cast::<u8>(), "box"),
        ((&raw const *page).cast::<u8>(), "page"),
        (big.as_ptr(), "big vec"),
    ] {
        assert!(in_arena(ptr), "{what} at {ptr:p} is outside the arena");
        assert_eq!(in_use(ptr), Ok(()), "{what}");
    }
    assert_eq!((&raw const *page) as usize % core::mem::align_of::<Page>(), 0);
    assert_eq!(core::mem::align_of::<Page>(), CHUNK_SIZE / 4);
    assert_eq!(numbers.iter().sum::<u64>(), 9_999 * 10_000 / 2);
    assert!(page.0.iter().all(|&b| b == 9) && big.iter().all(|&b| b == 7) && *boxed == 12345);
    let stats = GLOBAL.stats();
    assert!(stats.live_blocks >= 5, "{stats:?}");
    assert!(stats.large_blocks >= 3, "{stats:?}");
    assert!(stats.bytes_in_use >= (1 << 20) + 80_000 + 4096, "{stats:?}");
    // Growing a vector goes through `realloc` and keeps the contents.
    let mut growing = text.into_bytes();
    for round in 0..2_000u32 {
        growing.extend_from_slice(&round.to_le_bytes());
    }
    assert!(growing.starts_with(b"a string in a pool"));
    assert!(in_arena(growing.as_ptr()));
    drop(big);
    // A freed large block's chunk goes straight back to the region. Under one hold of the lock,
    // no other thread can take the chunk again before the check; nothing allocates meanwhile.
    let after_free = GLOBAL.with(|engine| {
        let block = engine.alloc(1 << 20).unwrap();
        // SAFETY: the block is from this engine and not used again.
        unsafe { engine.free(block) };
        engine.validate(block)
    });
    assert!(matches!(after_free, Err(FreeError::Foreign { .. })), "{after_free:?}");
    GLOBAL.check().unwrap();
}

#[test]
fn threads_share_the_arena() {
    let handles: Vec<_> = (0..2u64)
        .map(|worker| {
            std::thread::spawn(move || {
                let mut lists: Vec<Vec<u64>> = Vec::new();
                for round in 0..200 {
                    lists.push((0..round).map(|i| i * worker).collect());
                    if round % 3 == 0 {
                        lists.swap_remove(0);
                    }
                }
                let boxed: Vec<Box<[u8; 3000]>> = (0..50).map(|_| Box::new([1; 3000])).collect();
                assert!(lists
                    .iter()
                    .filter(|list| list.capacity() > 0)
                    .all(|list| in_arena(list.as_ptr())));
                assert!(boxed.iter().all(|block| in_arena(&raw const **block)));
                assert!(boxed.iter().all(|block| in_use(&raw const **block).is_ok()));
                lists.iter().map(|list| list.len()).sum::<usize>()
            })
        })
        .collect();
    let sums: Vec<usize> = handles.into_iter().map(|handle| handle.join().unwrap()).collect();
    assert_eq!(sums[0], sums[1]);
    GLOBAL.check().unwrap();
    // Everything the threads made is gone; what is left is small enough to be the harness's.
    assert!(GLOBAL.stats().bytes_held < ARENA_SIZE / 2);
    assert!(GLOBAL.stats().peak_bytes_held > CHUNK_SIZE);
}

/// Formatting the pool allocates the text from the pool itself: the statistics are read under
/// the lock, and written once it is released. The other tests' threads hold the lock now and
/// then, and a pool whose lock is held formats without its statistics; so it is formatted until
/// it finds the lock free.
#[test]
fn the_global_pool_formats_itself() {
    let text = (0..100_000)
        .map(|_| format!("{GLOBAL:?}"))
        .find(|text| text != "LockedPool { .. }")
        .expect("the lock was free at some point");
    assert!(text.starts_with("LockedPool { stats: Stats {"), "{text}");
    assert!(text.contains("live_blocks"), "{text}");
    assert!(in_arena(text.as_ptr()), "the text lives in the pool");
}
