//! A pool made when the global allocator has no memory for its bookkeeping: the `try_`
//! constructors return `AllocError`, dropping what they were given, and the others abort through
//! `handle_alloc_error`, as `Box::new` does. A global allocator that can be told to fail stands
//! in for a system without memory.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use std::alloc::{GlobalAlloc, System};
use std::cell::Cell;
use std::rc::Rc;

use melon_alloc_core::{ChunkSource, RegionSource};
use melon_alloc_heap::{AllocError, ChildPool, HeapPool};

/// The system allocator, failing every allocation of a thread while it is told to.
struct Failing;

std::thread_local! {
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to `System`, or returns NULL, which `GlobalAlloc` allows for any request.
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if FAIL.try_with(Cell::get).unwrap_or(false) {
            return ptr::null_mut();
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller; every block came from `System`.
        unsafe { System.dealloc(block, layout) }
    }
}

#[global_allocator]
static GLOBAL: Failing = Failing;

/// Runs `f` with every allocation of this thread failing.
fn without_memory<R>(f: impl FnOnce() -> R) -> R {
    FAIL.with(|fail| fail.set(true));
    let result = f();
    FAIL.with(|fail| fail.set(false));
    result
}

#[test]
fn the_try_constructors_say_alloc_error_without_memory() {
    assert_eq!(without_memory(HeapPool::try_new).err(), Some(AllocError));
    assert_eq!(without_memory(|| HeapPool::try_with_limit(1 << 20)).err(), Some(AllocError));
    let root = HeapPool::try_new().expect("memory for the root");
    assert_eq!(without_memory(|| root.try_child()).err(), Some(AllocError));
    assert_eq!(without_memory(|| root.try_child_with_limit(1 << 16)).err(), Some(AllocError));
    // With memory again, each makes a pool that works, and the root lent nothing meanwhile.
    assert_eq!(root.stats().bytes_lent, 0);
    let child = root.try_child_with_limit(1 << 16).expect("memory for the child");
    let block = child.alloc(64).expect("a block");
    // SAFETY: the block came from `child` and is not used again.
    unsafe { child.free(block) };
}

/// A region source that counts its drops.
struct Counted {
    region: RegionSource,
    drops: Rc<Cell<u32>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

// SAFETY: forwards to the region, which upholds the contract.
unsafe impl ChunkSource for Counted {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.region.acquire(layout)
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.region.release(chunk, layout) }
    }
}

/// A region source over a new arena of 256 KiB, counting its drops in `drops`, and the arena,
/// for [`free_arena`] once the source is dropped.
fn counted_source(drops: &Rc<Cell<u32>>) -> (Counted, *mut [u8]) {
    let arena = Box::into_raw(vec![0u8; 1 << 18].into_boxed_slice());
    // SAFETY: the arena was just allocated, and only the source uses it until `free_arena`,
    // which the caller calls after the source is dropped.
    let region = RegionSource::from_static(unsafe { &mut *arena });
    (Counted { region, drops: Rc::clone(drops) }, arena)
}

/// Gives back an arena of [`counted_source`].
///
/// # Safety
/// The source over it is dropped, and nothing uses the arena any more.
unsafe fn free_arena(arena: *mut [u8]) {
    // SAFETY: the arena came from `Box::into_raw` and nothing uses it (caller).
    drop(unsafe { Box::from_raw(arena) });
}

#[test]
fn a_source_given_to_a_pool_that_cannot_be_made_is_dropped_once() {
    let drops = Rc::new(Cell::new(0));
    let (source, arena) = counted_source(&drops);
    let made = without_memory(|| ChildPool::try_with_source(source, None));
    assert_eq!(made.err(), Some(AllocError));
    assert_eq!(drops.get(), 1, "dropped once, by the failed constructor");
    // SAFETY: the failed constructor dropped the source.
    unsafe { free_arena(arena) };
    let (source, arena) = counted_source(&drops);
    let pool = ChildPool::try_with_source(source, None).expect("memory for the pool");
    assert!(pool.alloc(1000).is_some());
    drop(pool);
    assert_eq!(drops.get(), 2, "dropped with its pool");
    // SAFETY: the source went with its pool.
    unsafe { free_arena(arena) };
}

#[cfg(target_os = "linux")]
#[cfg(not(miri))]
#[path = "support/rerun.rs"]
mod rerun;

/// Set in the environment of the second run of this test binary, which makes a pool without
/// memory.
const NEW_WITHOUT_MEMORY: &str = "MELON_ALLOC_NEW_WITHOUT_MEMORY";

/// The abort ends the process, so the test binary runs itself again, filtered to this test, and
/// checks how that run died.
#[test]
#[cfg(target_os = "linux")]
// Miri cannot start a process, so the test is not built there.
#[cfg(not(miri))]
fn new_without_memory_aborts_through_handle_alloc_error() {
    if std::env::var_os(NEW_WITHOUT_MEMORY).is_some() {
        let pool = without_memory(HeapPool::new);
        drop(pool);
        return;
    }
    let test = "new_without_memory_aborts_through_handle_alloc_error";
    let (signal, stderr) = rerun::rerun(test, NEW_WITHOUT_MEMORY, "1");
    // SIGABRT is signal 6 on Linux.
    assert_eq!(signal, Some(6), "{stderr}");
    let pool = size_of::<melon_alloc_heap::Pool>();
    assert!(stderr.contains(&format!("memory allocation of {pool} bytes failed")), "{stderr}");
}
