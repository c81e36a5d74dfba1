//! Loom models of the core crate's concurrent code: the spin lock behind `LockedPool`, and the
//! stash through which its children on different threads pass chunks.
//!
//! Built only with `--cfg melon_loom` (`cargo xtask loom`). With `--cfg melon_loom_broken` as
//! well, the spin lock's acquire is replaced by a check-then-set that lets two threads in, and
//! the same models must then fail: that is how we know they can.

#[cfg(melon_loom)]
mod tests {
    use core::alloc::Layout;
    use core::ptr::NonNull;

    use loom::sync::Arc;
    use melon_alloc_core::{ChunkSource, LockedPool, CHUNK_SIZE};

    /// Chunks from the standard allocator.
    struct System;

    // SAFETY: chunks come from `std::alloc::alloc` with the asked-for layout and go back to
    // `dealloc` with the same layout.
    unsafe impl ChunkSource for System {
        fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
            // SAFETY: the engine never asks for a zero-sized layout.
            NonNull::new(unsafe { std::alloc::alloc(layout) })
        }

        unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
            // SAFETY: the caller returns a chunk from `acquire` with its layout.
            unsafe { std::alloc::dealloc(chunk.as_ptr(), layout) }
        }
    }

    /// [`System`] with one stash stripe for every thread, so that children on two threads meet
    /// on its lock.
    struct OneStripe(System);

    // SAFETY: as for `System`, which does the work.
    unsafe impl ChunkSource for OneStripe {
        fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
            self.0.acquire(layout)
        }

        unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
            // SAFETY: forwarded from the caller.
            unsafe { self.0.release(chunk, layout) }
        }

        fn stash_stripe() -> Option<usize> {
            Some(0)
        }
    }

    /// Runs a model, and checks that it passes with the real lock and fails with the broken one.
    fn expect_model(model: fn()) {
        let outcome = std::panic::catch_unwind(|| loom::model(model));
        if cfg!(melon_loom_broken) {
            assert!(outcome.is_err(), "the model accepted a lock that lets two threads in");
        } else if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Two threads allocate, write and free through one locked pool. Loom checks that the
    /// engine is never touched by both at once (mutual exclusion), that neither waits forever
    /// (no lost release), and the threads check that no block is handed to both (no double
    /// handout).
    fn two_threads_share_a_pool() {
        let pool = Arc::new(LockedPool::new(System, None));
        let workers: Vec<_> = (0..2u8)
            .map(|worker| {
                let pool = Arc::clone(&pool);
                loom::thread::spawn(move || {
                    let block = pool.alloc(32).expect("memory");
                    // SAFETY: the block holds 32 bytes and is this thread's alone.
                    unsafe { block.as_ptr().write_bytes(worker, 32) };
                    loom::thread::yield_now();
                    // SAFETY: as above; the other thread never writes this block.
                    let seen = unsafe { block.as_ptr().read() };
                    assert_eq!(seen, worker, "a block was handed to both threads");
                    // SAFETY: the block came from `pool` and is freed once.
                    unsafe { pool.try_free(block) }.expect("a valid free");
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
        assert_eq!(pool.stats().live_blocks, 0);
        pool.check().expect("consistent");
    }

    #[test]
    fn locked_pool_is_mutually_exclusive() {
        expect_model(two_threads_share_a_pool);
    }

    /// One thread holds the lock across several operations while another waits for it.
    fn a_held_lock_keeps_the_other_thread_out() {
        let pool = Arc::new(LockedPool::new(System, None));
        let other = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || pool.stats().live_blocks)
        };
        let inside = pool.with(|engine| {
            let block = engine.alloc(16).expect("memory");
            let live = engine.stats().live_blocks;
            // SAFETY: the block came from this engine and is freed once.
            unsafe { engine.free(block) };
            live
        });
        assert_eq!(inside, 1);
        // The other thread saw the pool before or after the locked stretch, never inside it.
        assert_eq!(other.join().expect("reader"), 0);
    }

    #[test]
    fn a_locked_stretch_is_atomic() {
        expect_model(a_held_lock_keeps_the_other_thread_out);
    }

    /// Two threads each make a child of one pool, allocate, write and free a block in it, and
    /// drop it, its chunk going to the stripe both threads use; the second child may take the
    /// first one's chunk from there. Loom checks that the stripe is never touched by both at once
    /// and that no chunk is lost or handed out twice: afterwards the pool lends nothing and a
    /// trim gives back every chunk it holds.
    fn two_threads_pass_chunks_through_one_stripe() {
        let pool = Arc::new(LockedPool::new(OneStripe(System), None));
        let workers: Vec<_> = (0..2u8)
            .map(|worker| {
                let pool = Arc::clone(&pool);
                loom::thread::spawn(move || {
                    let child = pool.child();
                    let block = child.alloc(32).expect("memory");
                    // SAFETY: the block holds 32 bytes and is this thread's alone.
                    unsafe { block.as_ptr().write_bytes(worker, 32) };
                    loom::thread::yield_now();
                    // SAFETY: as above; the other thread never writes this block.
                    let seen = unsafe { block.as_ptr().read() };
                    assert_eq!(seen, worker, "a chunk was handed to both threads");
                    // SAFETY: the block came from `child` and is freed once.
                    unsafe { child.free(block) };
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
        let stats = pool.stats();
        assert_eq!(stats.bytes_lent, 0);
        assert!([CHUNK_SIZE, 2 * CHUNK_SIZE].contains(&stats.bytes_held), "{stats:?}");
        assert_eq!(pool.with(|engine| engine.trim()), stats.bytes_held);
        assert_eq!(pool.stats().bytes_held, 0);
    }

    #[test]
    fn children_pass_chunks_through_a_stash_stripe() {
        expect_model(two_threads_pass_chunks_through_one_stripe);
    }

    /// Checks that a pool whose children have all gone lends nothing, and that a trim gives
    /// back every byte it holds, the stash's chunks with the rest: nothing was lost, and no
    /// chunk went back twice (the engine's figures would not add up).
    fn nothing_lent_and_all_trimmed(pool: &LockedPool<OneStripe>) {
        let stats = pool.stats();
        assert_eq!(stats.bytes_lent, 0, "{stats:?}");
        assert_eq!(pool.with(|engine| engine.trim()), stats.bytes_held);
        assert_eq!(pool.stats().bytes_held, 0);
        pool.check().expect("consistent");
    }

    /// A child on one thread gives its chunk to the stripe and a second child takes one, while
    /// another thread trims the pool, which empties the stripe into the engine. Loom checks that
    /// the stripe and the engine are never touched by two threads at once, and the end that no
    /// chunk is lost or given back twice, whichever of the child's steps the trim falls
    /// between.
    fn a_trim_empties_the_stripe_while_a_child_uses_it() {
        let pool = Arc::new(LockedPool::new(OneStripe(System), None));
        let user = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || {
                for _ in 0..2 {
                    let child = pool.child();
                    let block = child.alloc(32).expect("memory");
                    // SAFETY: the block came from `child` and is freed once.
                    unsafe { child.free(block) };
                }
            })
        };
        let trimmed = pool.with(|engine| engine.trim());
        assert!([0, CHUNK_SIZE].contains(&trimmed), "trimmed {trimmed}");
        user.join().expect("user");
        nothing_lent_and_all_trimmed(&pool);
    }

    #[test]
    fn a_trim_and_a_child_share_the_stripe() {
        expect_model(a_trim_empties_the_stripe_while_a_child_uses_it);
    }

    /// The main thread makes one chunk more than a stripe keeps, each in a child of its own, and
    /// gives all but two back, which leaves the stripe one short of full; a child on another
    /// thread takes a chunk from it and gives it back while the main thread's last two children
    /// go. So three chunks go to a stripe with room for two, in whichever order: one finds it
    /// full and goes back through the engine to the source, and with it, if the pool then lends
    /// no chunk but the stripe's, every chunk of the stripe. Loom checks that the two threads
    /// meet on the stripe one at a time; the end, that the stripe holds every chunk the pool
    /// still has, at most a full stripe's, and that a trim gives all of them back.
    fn a_full_stripe_sends_chunks_back_to_the_engine() {
        let pool = Arc::new(LockedPool::new(OneStripe(System), None));
        let mut children: Vec<_> = (0..=melon_alloc_core::STASH_CHUNKS)
            .map(|_| {
                let child = pool.child();
                let block = child.alloc(32).expect("memory");
                (child, block)
            })
            .collect();
        let last_two = children.split_off(children.len() - 2);
        let free_all = |children: Vec<_>| {
            for (child, block) in children {
                // SAFETY: the block came from `child` and is freed once.
                unsafe { LockedPool::free(&child, block) };
            }
        };
        free_all(children);
        let other = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || {
                let child = pool.child();
                let block = child.alloc(32).expect("memory");
                // SAFETY: the block came from `child` and is freed once.
                unsafe { child.free(block) };
            })
        };
        free_all(last_two);
        other.join().expect("other");
        let stats = pool.stats();
        // The chunk that found the stripe full went back through the engine to the source, and
        // the stripe holds what the pool still has.
        let stashed = melon_alloc_core::STASH_CHUNKS * CHUNK_SIZE;
        assert!(stats.bytes_held <= stashed, "{stats:?}");
        assert_eq!((stats.chunks * CHUNK_SIZE, stats.bytes_lent), (stats.bytes_held, 0));
        nothing_lent_and_all_trimmed(&pool);
    }

    #[test]
    fn a_full_stripe_keeps_no_more() {
        expect_model(a_full_stripe_sends_chunks_back_to_the_engine);
    }
}
