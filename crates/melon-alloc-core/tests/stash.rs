//! The stash of a locked pool without a limit over a source that names stripes: the chunks its
//! children give back wait in the giving thread's stripe for the next child there, and go back
//! to the engine on a trim, a reset and the pool's drop.
#![cfg(feature = "pages")]

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use melon_alloc_core::{ChunkSource, LockedPool, CHUNK_SIZE};

/// Chunks from the standard allocator, counted, with a stripe for each thread; at most
/// `most_out` of them out at once, if set.
#[derive(Default)]
struct Striped {
    counts: Arc<Counts>,
    most_out: Option<usize>,
}

/// What a [`Striped`] source handed out and took back.
#[derive(Default)]
struct Counts {
    acquired: AtomicUsize,
    released: AtomicUsize,
}

impl Counts {
    fn acquired(&self) -> usize {
        self.acquired.load(Ordering::Relaxed)
    }

    fn released(&self) -> usize {
        self.released.load(Ordering::Relaxed)
    }
}

// SAFETY: chunks come from `std::alloc::alloc` with the asked-for layout and go back to `dealloc`
// with the same layout.
unsafe impl ChunkSource for Striped {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if self.most_out.is_some_and(|most| self.counts.acquired() - self.counts.released() >= most)
        {
            return None;
        }
        self.counts.acquired.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the engine never asks for a zero-sized layout.
        NonNull::new(unsafe { std::alloc::alloc(layout) })
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        self.counts.released.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller returns a chunk from `acquire` with its layout.
        unsafe { std::alloc::dealloc(chunk.as_ptr(), layout) }
    }

    fn stash_stripe() -> Option<usize> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if NO_STRIPE.with(Cell::get) {
            return None;
        }
        Some(STRIPE.with(|stripe| {
            let number = stripe.get().unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed));
            stripe.set(Some(number));
            number
        }))
    }
}

std::thread_local! {
    /// The calling thread's stripe: numbered in the order threads first ask, unless a test sets
    /// it with [`use_stripe`].
    static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
}

std::thread_local! {
    /// Whether the calling thread is one the source names no stripe for.
    static NO_STRIPE: Cell<bool> = const { Cell::new(false) };
}

/// Makes `stripe` the calling thread's stripe.
fn use_stripe(stripe: usize) {
    STRIPE.with(|own| own.set(Some(stripe)));
}

/// A pool over a [`Striped`] source, and the source's counts.
fn striped_pool(limit: Option<usize>) -> (LockedPool<Striped>, Arc<Counts>) {
    let source = Striped::default();
    let counts = Arc::clone(&source.counts);
    (LockedPool::new(source, limit), counts)
}

/// Makes `children` children at once, each holding one block of 64 bytes in a chunk of its own,
/// then drops them all.
fn children_come_and_go(pool: &LockedPool<Striped>, children: usize) {
    let held: Vec<_> = (0..children)
        .map(|_| {
            let child = pool.child();
            let block = child.alloc(64).expect("memory");
            (child, block)
        })
        .collect();
    for (child, block) in held {
        // SAFETY: the block came from `child` and is not used again.
        unsafe { child.free(block) };
    }
}

#[test]
fn a_child_takes_the_chunk_the_last_child_on_its_thread_gave_back() {
    let (pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 1);
    let stats = pool.stats();
    assert_eq!((stats.bytes_lent, stats.bytes_held), (0, CHUNK_SIZE));
    assert_eq!((counts.acquired(), counts.released()), (1, 0));
    for _ in 0..10 {
        children_come_and_go(&pool, 1);
    }
    assert_eq!((counts.acquired(), counts.released()), (1, 0));
    pool.check().expect("consistent");
}

/// Chunks a stripe keeps, one of which has the pool look whether it lends anything else.
const CHECK_EVERY: usize = 64;

#[test]
fn a_stripe_keeps_sixteen_chunks_and_the_engine_takes_the_rest() {
    let (pool, counts) = striped_pool(None);
    // A child that lives throughout, so that some chunk is always lent.
    let anchor = pool.child();
    let _kept = anchor.alloc(64).unwrap();
    children_come_and_go(&pool, 20);
    // The last four found the stripe full; the pool, which lends the anchor's chunk, keeps the
    // stripe's.
    assert_eq!((counts.acquired(), counts.released()), (21, 4));
    let stats = pool.stats();
    assert_eq!((stats.bytes_lent, stats.bytes_held), (CHUNK_SIZE, 17 * CHUNK_SIZE));
    // Twenty again: sixteen from the stripe, four from the source.
    children_come_and_go(&pool, 20);
    assert_eq!((counts.acquired(), counts.released()), (25, 8));
}

#[test]
fn a_pool_whose_children_all_end_gives_the_stripes_chunks_back() {
    let (pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 20);
    // The last child's chunk found the stripe full, and went to the engine: the pool then lent
    // nothing but the stripe's chunks, and gave them back.
    assert_eq!((counts.acquired(), counts.released()), (20, 20));
    assert_eq!(pool.stats().bytes_held, 0);
    // One at a time, children pass one chunk on through the stripe, but one time in
    // `CHECK_EVERY` that the stripe keeps it, the pool, finding it lends nothing else, gives it
    // back to the source, whence the next child takes one. The stripe's count goes on from the
    // sixteen it kept above: the 48th and the 112th of these go back, and the last sixteen leave
    // their chunk in the stripe.
    for _ in 0..2 * CHECK_EVERY {
        children_come_and_go(&pool, 1);
    }
    assert_eq!((counts.acquired(), counts.released()), (23, 22));
    assert_eq!(pool.stats().bytes_held, CHUNK_SIZE);
    pool.check().expect("consistent");
}

#[test]
fn trim_reset_and_drop_give_the_stashed_chunks_back() {
    let (pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 3);
    assert_eq!(pool.with(|engine| engine.trim()), 3 * CHUNK_SIZE);
    assert_eq!((counts.released(), pool.stats().bytes_held), (3, 0));

    let (mut pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 3);
    pool.reset();
    assert_eq!((counts.released(), pool.stats().bytes_held), (3, 0));

    let (pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 3);
    drop(pool);
    assert_eq!((counts.acquired(), counts.released()), (3, 3));
}

/// A source may name a stripe on some threads and none on others: a trim or a drop on a thread
/// it names none for gives back what the other threads' children stashed all the same.
#[test]
fn a_thread_without_a_stripe_trims_and_drops_the_stash_too() {
    let (pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 3);
    let pool = std::thread::spawn(move || {
        NO_STRIPE.with(|none| none.set(true));
        assert_eq!(pool.with(|engine| engine.trim()), 3 * CHUNK_SIZE);
        pool
    })
    .join()
    .unwrap();
    assert_eq!((counts.released(), pool.stats().bytes_held), (3, 0));

    children_come_and_go(&pool, 3);
    assert_eq!((counts.acquired(), counts.released()), (6, 3));
    std::thread::spawn(move || {
        NO_STRIPE.with(|none| none.set(true));
        drop(pool);
    })
    .join()
    .unwrap();
    assert_eq!(counts.released(), 6);
}

#[test]
fn a_pool_with_a_limit_keeps_no_stash() {
    let (pool, counts) = striped_pool(Some(4 * CHUNK_SIZE));
    children_come_and_go(&pool, 2);
    assert_eq!((counts.acquired(), counts.released()), (2, 2));
    assert_eq!(pool.stats().bytes_held, 0);
}

#[test]
fn children_on_two_threads_reuse_their_own_chunks() {
    let (pool, counts) = striped_pool(None);
    // A child that lives throughout, so that the stripes' chunks never all go back.
    let anchor = pool.child();
    let kept = anchor.alloc(64).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..100 {
                    children_come_and_go(&pool, 1);
                }
            });
        }
    });
    // The anchor's chunk, and one for each thread from the source, then from the thread's
    // stripe (or the one stripe both share, when their numbers meet modulo the count of
    // stripes): the pool, which lends the anchor's chunk, keeps the stripes' chunks.
    assert!(counts.acquired() <= 3, "{} chunks from the source", counts.acquired());
    assert_eq!(counts.released(), 0);
    // SAFETY: the block came from `anchor` and is not used again.
    unsafe { anchor.free(kept) };
    drop(anchor);
    assert_eq!(pool.stats().bytes_lent, 0);
    pool.check().expect("consistent");
}

// With 4 KiB chunks the table is a large block, which goes back before every class.
#[cfg(not(feature = "small-chunks"))]
#[test]
fn the_next_child_on_a_thread_gets_each_chunk_for_the_part_it_played_before() {
    // A request's small blocks share a chunk split into pages; its large table takes a chunk of
    // its own. The child gives its chunks back from its largest class down, so the stripe hands
    // them to the next child in the order the first one took them: each chunk serves the same
    // blocks again, whose lines the first child wrote last.
    let (pool, _) = striped_pool(None);
    let chunk_of = |block: NonNull<u8>| block.as_ptr() as usize / CHUNK_SIZE;
    let request = || {
        let child = pool.child();
        let small = chunk_of(child.alloc(64).expect("memory"));
        let large = chunk_of(child.alloc(4368).expect("memory"));
        (small, large)
    };
    let first = request();
    assert_ne!(first.0, first.1, "the large block has a chunk of its own");
    assert_eq!(request(), first);
}

#[test]
fn a_chunk_the_source_refuses_a_child_comes_from_the_stash() {
    let source = Striped { most_out: Some(1), ..Striped::default() };
    let counts = Arc::clone(&source.counts);
    let pool = LockedPool::new(source, None);
    use_stripe(0);
    children_come_and_go(&pool, 1);
    // The one chunk the source lends waits in stripe 0; a child on another thread, whose stripe
    // is empty, is refused by the source, and the stash gives the chunk back.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            use_stripe(1);
            children_come_and_go(&pool, 1);
        });
    });
    assert_eq!((counts.acquired(), counts.released()), (2, 1));
    assert_eq!(pool.stats().bytes_lent, 0);
    pool.check().expect("consistent");
}

#[test]
fn the_engine_seen_whole_holds_the_stashed_chunks_and_may_forget_them() {
    let (pool, counts) = striped_pool(None);
    children_come_and_go(&pool, 2);
    let lent = pool.with(|locked| {
        // SAFETY: the engine stays where it is.
        let engine = unsafe { locked.engine_mut() };
        let lent = engine.stats().bytes_lent;
        // SAFETY: no block of the pool is in use, no child lives, and the stash went back to
        // the engine before the reference was handed out.
        unsafe { engine.abandon() };
        lent
    });
    assert_eq!(lent, 0);
    assert_eq!(counts.released(), 2);
    // Nothing is left to give back: dropping the pool releases nothing twice.
    drop(pool);
    assert_eq!((counts.acquired(), counts.released()), (2, 2));
}

#[test]
fn the_engines_own_figures_count_stashed_chunks_as_lent() {
    let (pool, _) = striped_pool(None);
    children_come_and_go(&pool, 1);
    assert_eq!(pool.stats().bytes_lent, 0);
    assert_eq!(pool.with(|engine| engine.stats().bytes_lent), CHUNK_SIZE);
}

#[test]
fn the_pools_own_allocation_does_not_take_the_stash_back_until_a_trim() {
    let source = Striped { most_out: Some(1), ..Striped::default() };
    let pool = LockedPool::new(source, None);
    children_come_and_go(&pool, 1);
    // The source's one chunk waits in the stash: the pool's own block finds no chunk.
    assert!(pool.alloc(64).is_none());
    assert_eq!(pool.with(|engine| engine.trim()), CHUNK_SIZE);
    assert!(pool.alloc(64).is_some());
}

#[test]
fn a_childs_own_children_give_their_chunks_back_through_its_engine() {
    let (pool, counts) = striped_pool(None);
    let child = pool.child();
    let grandchild = child.child();
    let block = grandchild.alloc(64).expect("memory");
    // SAFETY: the block came from `grandchild` and is not used again.
    unsafe { grandchild.free(block) };
    drop(grandchild);
    // The child keeps no stash: the chunk went back through it to the pool's stripe.
    assert_eq!(child.stats().bytes_held, 0);
    assert_eq!(pool.stats().bytes_held, CHUNK_SIZE);
    assert_eq!((counts.acquired(), counts.released()), (1, 0));
}

#[test]
fn a_child_dropped_on_another_thread_leaves_its_chunks_in_that_threads_stripe() {
    let (pool, counts) = striped_pool(None);
    use_stripe(0);
    let child = pool.child();
    let _block = child.alloc(64).expect("memory");
    std::thread::scope(|scope| {
        scope.spawn(move || {
            use_stripe(1);
            drop(child);
        });
    });
    // Stripe 0 is empty: a child here takes a chunk from the source.
    children_come_and_go(&pool, 1);
    assert_eq!(counts.acquired(), 2);
    // Stripe 1 has the first child's, and stripe 9 is stripe 1 again: no chunk from the source.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            use_stripe(9);
            children_come_and_go(&pool, 1);
        });
    });
    assert_eq!((counts.acquired(), counts.released()), (2, 0));
}
