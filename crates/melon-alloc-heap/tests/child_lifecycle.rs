//! A root pool whose children come and go: once warm, making a child, allocating from it and
//! dropping it calls the global allocator for no slab, however often it is done. This binary's
//! global allocator counts the calls large enough to be slabs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Instant;

use melon_alloc_heap::{HeapPool, KEEP_SLABS_FOR};

/// The smallest slab a root pool takes from the global allocator.
const SLAB: usize = 64 << 10;

/// The system allocator, counting the allocations and frees of slab size or more.
struct Counting;

static SLAB_CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System`, which upholds `GlobalAlloc`; the count is a side note.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= SLAB {
            SLAB_CALLS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if layout.size() >= SLAB {
            SLAB_CALLS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(block, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The count is the whole binary's, so the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One request's worth of a child: made, used for a few blocks of several classes, dropped.
fn one_child(root: &HeapPool) {
    let child = root.child();
    let blocks: Vec<_> =
        [16, 64, 200, 1000].iter().map(|&size| child.alloc(size).unwrap()).collect();
    for block in blocks {
        // SAFETY: the block came from `child` and is not used again.
        unsafe { child.free(block) };
    }
}

#[test]
fn children_of_an_idle_root_take_no_slab_once_warm() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = HeapPool::new();
    let calls = || SLAB_CALLS.load(Ordering::Relaxed);
    let cold = calls();
    one_child(&root);
    assert_eq!(calls(), cold + 1, "the first child makes the root take a slab, and keep it");
    let warm = calls();
    for _ in 0..if cfg!(miri) { 20 } else { 1000 } {
        one_child(&root);
    }
    assert_eq!(calls(), warm, "no slab taken or given back");
    assert_eq!(root.stats().bytes_held, 0);
    // `trim` gives the kept slab back, and the next child takes one again.
    root.trim();
    assert_eq!(calls(), warm + 1);
    one_child(&root);
    assert_eq!(calls(), warm + 2);
    root.check().unwrap();
}

#[test]
fn batches_of_children_reuse_the_slabs_of_the_batch_before() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = HeapPool::new();
    let calls = || SLAB_CALLS.load(Ordering::Relaxed);
    let batch = |root: &HeapPool| {
        // Two hundred requests at once, each with two chunks (four classes in pages of one,
        // and a class too large for a page), then all dropped.
        let children: Vec<_> = (0..200).map(|_| root.child()).collect();
        for child in &children {
            for size in [16, 64, 200, 1000, 5000] {
                let block = child.alloc(size).unwrap();
                // SAFETY: the block came from `child` and is not used again.
                unsafe { child.free(block) };
            }
        }
        assert!(root.stats().bytes_lent >= 400 * melon_alloc_core::CHUNK_SIZE);
    };
    batch(&root);
    let warm = calls();
    for _ in 0..if cfg!(miri) { 2 } else { 20 } {
        batch(&root);
    }
    assert_eq!(calls(), warm, "the slabs of one batch serve the next");
    // A lull shorter than `KEEP_SLABS_FOR` keeps them for the next burst.
    let lull = Instant::now();
    one_child(&root);
    one_child(&root);
    if lull.elapsed() < KEEP_SLABS_FOR {
        assert_eq!(calls(), warm, "the slabs of the last burst are kept through a short lull");
    }
    // After a longer one, a small load lets the root give back what it no longer needs.
    std::thread::sleep(KEEP_SLABS_FOR);
    one_child(&root);
    one_child(&root);
    assert!(calls() > warm, "the slabs beyond a single child's need went back");
    root.check().unwrap();
}

#[test]
fn a_request_that_grows_a_table_through_eight_classes_holds_two_chunks_and_gives_one_back_early() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = HeapPool::new();
    let request = root.child();
    let page_of = |block: NonNull<u8>| block.as_ptr().addr() / (melon_alloc_core::CHUNK_SIZE / 4);
    // The tables a `hashbrown::HashMap<u64, u64>` grows through up to 200 entries, each freed
    // once the next holds its entries, then an 800-byte buffer.
    let mut table = request.alloc(84).unwrap();
    let mut pages = vec![page_of(table)];
    for size in [152, 288, 560, 1104, 2192, 4368] {
        let grown = request.alloc(size).unwrap();
        pages.push(page_of(grown));
        // SAFETY: the block came from `request` and is not used again.
        unsafe { request.free(table) };
        table = grown;
    }
    // Each table below the last takes the page the table before the one it replaces emptied:
    // six tables in two pages, in turn.
    for step in 2..6 {
        assert_eq!(pages[step], pages[step - 2], "table {step} reuses an emptied page");
    }
    assert_ne!(pages[0], pages[1]);
    // Those two pages' chunk went back to the root once both were empty, the last table in a
    // chunk of its own staying.
    assert_eq!(request.stats().bytes_held, melon_alloc_core::CHUNK_SIZE);
    assert_eq!(root.stats().bytes_lent, melon_alloc_core::CHUNK_SIZE);
    // The buffer takes a page of a chunk taken anew.
    let buffer = request.alloc(800).unwrap();
    assert_eq!(request.stats().peak_bytes_held, 2 * melon_alloc_core::CHUNK_SIZE);
    for block in [table, buffer] {
        // SAFETY: the block came from `request` and is not used again.
        unsafe { request.free(block) };
    }
    request.check().unwrap();
    drop(request);
    assert_eq!(root.stats().bytes_lent, 0);
}

/// A `SyncPool` root keeps in its stripes chunks its children gave back, which its source counts
/// as still out: after a burst, the slabs stay with the root through a long lull and a small
/// load, where a `HeapPool`'s would go back (above), until a trim.
#[test]
fn a_sync_roots_stash_keeps_its_slabs_until_a_trim() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = melon_alloc_heap::SyncPool::new(melon_alloc_heap::GlobalSource::new(), None);
    let calls = || SLAB_CALLS.load(Ordering::Relaxed);
    let burst = if cfg!(miri) { 40 } else { 200 };
    let children: Vec<_> = (0..burst).map(|_| root.child()).collect();
    for child in &children {
        for size in [16, 64, 200, 1000, 5000] {
            let block = child.alloc(size).unwrap();
            // SAFETY: the block came from `child` and is not used again.
            unsafe { child.free(block) };
        }
    }
    drop(children);
    let after_burst = calls();
    std::thread::sleep(KEEP_SLABS_FOR);
    for _ in 0..2 {
        let child = root.child();
        let block = child.alloc(64).unwrap();
        // SAFETY: as above.
        unsafe { child.free(block) };
    }
    assert_eq!(calls(), after_burst, "the slabs stay while the stripes hold chunks");
    root.with(|engine| engine.trim());
    assert!(calls() > after_burst, "the trim gives them back");
    root.check().unwrap();
}
