//! Loom models of the shared pool's built-in lock and undo log: mutual exclusion with nobody
//! taken over while everyone lives and no sleeper left asleep, the takeover of a dead owner's
//! lock (repaired and counted, so the lock goes on working), a taker that dies while repairing,
//! a timed lock that gives up on a live holder and takes over a dead one, and the undoing of an
//! operation whose process died in the middle of it. Then the protocol of blocks a child pool
//! hands off to other processes: each collected once, a chunk given up going back once after its
//! last block, and the news of a free reaching the child whose block it is.
//!
//! Built only with `--cfg melon_loom` (`cargo xtask loom`). The lock is the pool's own code on
//! the header's lock word; the kernel is modelled: each thread stands for a process whose
//! identity the model picks, and "dies" by having its identity's byte lock go, which is all the
//! others can see of a killed process; the futex's sleepers are woken one per release. With
//! `--cfg melon_loom_broken` as well, the lock ignores an owner's death, as if the lock had been
//! released: nothing is repaired or counted; the look for an idle chunk reads its state before
//! its marks; and the look for news clears the count the children share. Every model that says
//! it catches that must then fail, and the test fails if one does not: that is how we know the
//! models can.

#[cfg(melon_loom)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;
    use melon_alloc_shm::model::{HandoffChildren, HandoffChunk, Shm};
    use melon_alloc_shm::ShmError;

    const A: u32 = 1;
    const B: u32 = 2;
    const C: u32 = 3;
    const D: u32 = 4;

    /// Runs a model that must pass, with the real lock and with the broken one alike: it checks
    /// what ignoring a death cannot break, as nobody dies in it.
    fn passes(model: impl Fn() + Send + Sync + 'static) {
        loom::model(model);
    }

    /// Runs a model that must pass with the real lock and fail with the broken one, which shows
    /// that it can.
    fn catches_broken(model: impl Fn() + Send + Sync + 'static) {
        // A failed model leaves nothing behind that the test looks at afterwards.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| loom::model(model)));
        if cfg!(melon_loom_broken) {
            assert!(outcome.is_err(), "the model accepted a broken lock");
        } else if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// A plain counter that only the lock's holder may touch: loom reports any two threads that
    /// touch it without the lock ordering one after the other.
    struct Counter(UnsafeCell<u32>);

    // SAFETY: every access is made by the lock's holder, and loom checks that they are ordered.
    unsafe impl Sync for Counter {}

    impl Counter {
        fn new() -> Arc<Self> {
            Arc::new(Self(UnsafeCell::new(0)))
        }

        fn bump(&self) {
            // SAFETY: the caller holds the lock, so no other thread touches the count.
            self.0.with_mut(|count| unsafe { *count += 1 });
        }

        fn get(&self) -> u32 {
            // SAFETY: as in `bump`.
            self.0.with(|count| unsafe { *count })
        }
    }

    /// Threads for processes `tids`, each taking the lock `rounds` times in a row, bumping the
    /// counter each time it holds it; joined, then the lock's takeovers checked: nobody died,
    /// so none. `before_joining` runs between the start of the threads and the joins.
    fn take_turns(shm: &Arc<Shm>, tids: &[u32], rounds: u32, before_joining: impl FnOnce()) -> u32 {
        let count = Counter::new();
        let threads: Vec<_> = tids
            .iter()
            .map(|&tid| {
                let (shm, count) = (Arc::clone(shm), Arc::clone(&count));
                thread::spawn(move || {
                    for _ in 0..rounds {
                        shm.lock(tid).expect("the lock");
                        count.bump();
                        shm.unlock(tid).expect("the holder's unlock");
                    }
                })
            })
            .collect();
        before_joining();
        for thread in threads {
            thread.join().expect("a thread");
        }
        assert_eq!(shm.takeovers(), 0, "a live owner was taken over");
        count.get()
    }

    /// Two threads each take the lock, bump the counter and release it, twice (so that a thread
    /// also comes back for a lock it has just released). Loom reports a bump made while the
    /// other thread is inside; every bump must count.
    fn two_threads_take_turns() {
        let shm = Arc::new(Shm::new());
        assert_eq!(take_turns(&shm, &[A, B], 2, || {}), 4);
    }

    #[test]
    fn lock_is_mutually_exclusive() {
        passes(two_threads_take_turns);
    }

    /// Three processes take the lock once each while a fourth holds it at the start: two may be
    /// asleep on the word at once, and each release wakes one, so a waiter woken while the lock
    /// was taken again must leave the word marked for the one still asleep. A sleeper left
    /// asleep is a deadlock, which loom reports.
    fn three_waiters_all_get_the_lock() {
        let shm = Arc::new(Shm::new());
        shm.lock(D).expect("a free lock");
        let released = || shm.unlock(D).expect("the holder's unlock");
        assert_eq!(take_turns(&shm, &[A, B, C], 1, released), 3);
    }

    #[test]
    fn no_waiter_sleeps_through_the_releases() {
        passes(three_waiters_all_get_the_lock);
    }

    /// A takes the lock, works, and dies holding it. B, waiting meanwhile, must get the lock
    /// only once A is dead, counted once; and the lock must go on working after B releases it.
    /// The broken lock does not count the takeover.
    fn dead_owner_is_taken_over() {
        let shm = Arc::new(Shm::new());
        let count = Counter::new();
        shm.lock(A).expect("a free lock");
        let b = {
            let (shm, count) = (Arc::clone(&shm), Arc::clone(&count));
            thread::spawn(move || {
                shm.lock(B).expect("the lock, taken over");
                assert!(shm.is_dead(A), "B took the lock from a live owner");
                count.bump();
                assert_eq!(count.get(), 2, "B missed the dead owner's work");
                assert_eq!(shm.takeovers(), 1);
                shm.unlock(B).expect("the holder's unlock");
            })
        };
        count.bump();
        shm.die(A);
        b.join().expect("B");
        shm.lock(C).expect("the lock after a takeover");
        shm.unlock(C).expect("the holder's unlock");
        assert_eq!(shm.takeovers(), 1);
    }

    #[test]
    fn dead_owner_is_taken_over_once_and_the_lock_goes_on() {
        catches_broken(dead_owner_is_taken_over);
    }

    /// A holds the lock while B tries it with a timeout, which runs out whenever A still holds
    /// it; B then waits without one. Nobody is taken over, and B never gets in while A is.
    fn timed_lock_gives_up_on_a_live_holder() {
        let shm = Arc::new(Shm::new());
        let count = Counter::new();
        shm.lock(A).expect("a free lock");
        let b = {
            let (shm, count) = (Arc::clone(&shm), Arc::clone(&count));
            thread::spawn(move || {
                match shm.lock_for(B) {
                    Ok(()) => {}
                    Err(ShmError::LockTimeout { .. }) => shm.lock(B).expect("the lock"),
                    Err(other) => panic!("a timed lock failed with {other:?}"),
                }
                count.bump();
                shm.unlock(B).expect("the holder's unlock");
            })
        };
        count.bump();
        shm.unlock(A).expect("the holder's unlock");
        b.join().expect("B");
        assert_eq!(count.get(), 2);
        assert_eq!(shm.takeovers(), 0, "a live owner was taken over");
    }

    #[test]
    fn a_timed_lock_gives_up_on_a_live_holder_and_changes_nothing() {
        passes(timed_lock_gives_up_on_a_live_holder);
    }

    /// A dies in the middle of an operation; B tries the lock with a timeout until it gets it.
    /// It must get it through the takeover, with A's operation undone. The broken lock undoes
    /// nothing.
    fn timed_lock_takes_over_a_dead_holder() {
        let shm = Arc::new(Shm::new());
        shm.lock(A).expect("a free lock");
        let b = {
            let shm = Arc::clone(&shm);
            thread::spawn(move || {
                while let Err(error) = shm.lock_for(B) {
                    assert!(matches!(error, ShmError::LockTimeout { .. }), "{error:?}");
                    thread::yield_now();
                }
                assert!(shm.is_dead(A), "B took the lock from a live owner");
                assert_eq!(shm.log_len(), 0, "the dead owner's operation was left");
                // SAFETY: B holds the lock.
                let words = unsafe { shm.words() };
                shm.unlock(B).expect("the holder's unlock");
                words
            })
        };
        // SAFETY: A holds the lock until it dies, and the log of a new buffer is empty.
        let mut op = unsafe { shm.begin() };
        op.set_wide(WIDE);
        shm.die(A);
        assert_eq!(b.join().expect("B"), (0, 0), "B saw the dead owner's write");
        assert_eq!((shm.takeovers(), shm.undone()), (1, 1));
    }

    #[test]
    fn a_timed_lock_takes_over_a_dead_holder() {
        catches_broken(timed_lock_takes_over_a_dead_holder);
    }

    const WIDE: u64 = 0x5555_0000_0000_0001;
    const NARROW: u32 = 0x8000_0001;

    /// A takes the lock, starts an operation, writes `sets` of the two state words through the
    /// undo log, commits if `commit`, and dies holding the lock. B, waiting meanwhile, takes
    /// over, which must put back the old values of an uncommitted operation and keep a
    /// committed one's, and leave the log empty either way. The broken lock repairs nothing and
    /// counts no takeover.
    fn interrupted_operation(sets: usize, commit: bool) {
        let shm = Arc::new(Shm::new());
        shm.lock(A).expect("a free lock");
        let b = {
            let shm = Arc::clone(&shm);
            thread::spawn(move || {
                shm.lock(B).expect("the lock, taken over");
                assert!(shm.is_dead(A), "B took the lock from a live owner");
                assert_eq!(shm.log_len(), 0, "recovery left entries in the log");
                let undone = shm.undone() == 1;
                // SAFETY: B holds the lock.
                let words = unsafe { shm.words() };
                shm.unlock(B).expect("the holder's unlock");
                (undone, words)
            })
        };
        // SAFETY: A holds the lock until it dies, and the log of a new buffer is empty.
        let mut op = unsafe { shm.begin() };
        if sets >= 1 {
            op.set_wide(WIDE);
        }
        if sets >= 2 {
            op.set_narrow(NARROW);
        }
        if commit {
            op.commit();
        }
        shm.die(A);
        let (undone, words) = b.join().expect("B");

        let written = (if sets >= 1 { WIDE } else { 0 }, if sets >= 2 { NARROW } else { 0 });
        let expected = if commit { written } else { (0, 0) };
        assert_eq!(words, expected, "B saw the wrong state after recovery");
        assert_eq!(undone, !commit && sets > 0, "recovery misjudged the operation");
        // SAFETY: A is dead and B has finished.
        assert_eq!(unsafe { shm.words() }, expected);
        assert_eq!(shm.log_len(), 0);
        assert_eq!(shm.undone(), u64::from(undone));
        assert_eq!(shm.takeovers(), 1);
    }

    #[test]
    fn operation_interrupted_after_one_write_is_undone() {
        catches_broken(|| interrupted_operation(1, false));
    }

    #[test]
    fn operation_interrupted_after_two_writes_is_undone() {
        catches_broken(|| interrupted_operation(2, false));
    }

    #[test]
    fn committed_operation_stands() {
        catches_broken(|| interrupted_operation(2, true));
    }

    /// A dies in the middle of an operation; B and C both wait, and each, once it has the lock,
    /// starts an operation of its own and dies in it too; then D takes the lock. Every takeover
    /// and every undone operation must be counted: three of each, from three threads. The
    /// broken lock counts none and undoes none.
    fn every_takeover_is_counted() {
        let shm = Arc::new(Shm::new());
        shm.lock(A).expect("a free lock");
        let takers: Vec<_> = [B, C]
            .into_iter()
            .map(|tid| {
                let shm = Arc::clone(&shm);
                thread::spawn(move || {
                    shm.lock(tid).expect("the lock, taken over");
                    assert_eq!(shm.log_len(), 0, "a dead owner's operation was missed");
                    // SAFETY: this thread holds the lock, and the log is empty after recovery.
                    let mut op = unsafe { shm.begin() };
                    op.set_narrow(tid);
                    shm.die(tid);
                })
            })
            .collect();
        // SAFETY: A holds the lock until it dies, and the log of a new buffer is empty.
        let mut op = unsafe { shm.begin() };
        op.set_wide(WIDE);
        shm.die(A);
        for taker in takers {
            taker.join().expect("a taker");
        }
        shm.lock(D).expect("the lock, taken over");
        assert_eq!(shm.takeovers(), 3);
        assert_eq!(shm.undone(), 3);
        // SAFETY: D holds the lock.
        assert_eq!(unsafe { shm.words() }, (0, 0));
        shm.unlock(D).expect("the holder's unlock");
    }

    #[test]
    fn takeovers_and_undone_operations_are_all_counted() {
        catches_broken(every_takeover_is_counted);
    }

    /// A dies in the middle of an operation; B takes the lock over and dies while repairing,
    /// before it undoes anything. C must find the lock's owner dead again and the repair still
    /// to do. The broken lock lets B hold the lock without repairing, so B never dies and never
    /// releases it, and C cannot get it.
    fn repair_interrupted_by_death() {
        let shm = Arc::new(Shm::new());
        shm.lock(A).expect("a free lock");
        let b = {
            let shm = Arc::clone(&shm);
            thread::spawn(move || {
                // B dies inside; what it is told no longer matters.
                let _ = shm.lock_dying_in_repair(B);
            })
        };
        // SAFETY: A holds the lock until it dies, and the log of a new buffer is empty.
        let mut op = unsafe { shm.begin() };
        op.set_wide(WIDE);
        shm.die(A);
        b.join().expect("B");
        // Timed, so that the broken lock's failure is a refusal, not a deadlock (which loom
        // reports by a panic that cannot unwind through the model's shared state). B is dead,
        // so the correct lock never times out here.
        shm.lock_for(C).expect("the lock, taken over again");
        // SAFETY: C holds the lock.
        assert_eq!(unsafe { shm.words() }, (0, 0), "the dead owner's write stands");
        assert_eq!((shm.takeovers(), shm.undone()), (2, 1));
        shm.unlock(C).expect("the holder's unlock");
    }

    #[test]
    fn a_repair_cut_short_by_death_is_done_by_the_next_taker() {
        catches_broken(repair_interrupted_by_death);
    }

    /// Frees each of `blocks` from a thread of its own, each thread returning whether its free
    /// was accepted.
    fn free_elsewhere<const N: usize>(
        chunk: &Arc<HandoffChunk>,
        blocks: [usize; N],
    ) -> Vec<thread::JoinHandle<bool>> {
        blocks
            .into_iter()
            .map(|block| {
                let chunk = Arc::clone(chunk);
                thread::spawn(move || chunk.free(block))
            })
            .collect()
    }

    /// Two processes free handed-off blocks while the owner collects: every block is collected
    /// once, between the collection that runs alongside and the one after. The model counts the
    /// schedules in which the first collection took a block pushed alongside, and fails if there
    /// were none: that overlap, a push's link read by the owner, is what it is for.
    #[test]
    fn handed_off_blocks_freed_elsewhere_are_collected_once() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        static OVERLAPS: AtomicUsize = AtomicUsize::new(0);
        passes(|| {
            let chunk = Arc::new(HandoffChunk::new(2));
            let freers = free_elsewhere(&chunk, [0, 1]);
            // Without it loom never runs a push before this collection: its free's first read
            // of the list, the same word the collection reads, leaves that order out of the
            // orders it explores.
            thread::yield_now();
            let mut collected = chunk.collect();
            if !collected.is_empty() {
                OVERLAPS.fetch_add(1, Relaxed);
            }
            assert!(freers.into_iter().all(|freer| freer.join().unwrap()));
            collected.extend(chunk.collect());
            collected.sort_unstable();
            assert_eq!(collected, [0, 1]);
            assert!(!chunk.free(0), "nothing is out any more");
        });
        assert!(OVERLAPS.load(Relaxed) > 0, "no schedule collected a block pushed alongside");
    }

    /// Two processes each free a handed-off block of one of two child pools of a third process,
    /// whose children look for news meanwhile and once more after: each child collects its own
    /// block. The broken look for news clears the count the children share, so that the first
    /// child to look takes the second's news, and the second never looks at its list.
    fn news_of_frees_reaches_each_child() {
        let children = Arc::new(HandoffChildren::new());
        let freers: Vec<_> = (0..2)
            .map(|child| {
                let children = Arc::clone(&children);
                thread::spawn(move || children.free(child))
            })
            .collect();
        // As in the model above: without it loom never runs a free before the looks.
        thread::yield_now();
        let mut collected = [children.collect(0), children.collect(1)];
        assert!(freers.into_iter().all(|freer| freer.join().unwrap()));
        for (child, blocks) in collected.iter_mut().enumerate() {
            blocks.extend(children.collect(child));
        }
        assert_eq!(collected, [[0], [0]]);
    }

    #[test]
    fn news_of_a_free_reaches_the_child_whose_block_it_is() {
        catches_broken(news_of_frees_reaches_each_child);
    }

    /// The owner gives a chunk up while the last two handed-off blocks are freed: the chunk goes
    /// back exactly once, by whoever finds nothing left out, and after every push into it. The
    /// broken look for an idle chunk gives it back under a free still pushing.
    fn chunk_given_up_while_its_last_blocks_are_freed() {
        let chunk = Arc::new(HandoffChunk::new(2));
        let freers = free_elsewhere(&chunk, [0, 1]);
        chunk.give_up();
        assert!(freers.into_iter().all(|freer| freer.join().unwrap()));
        assert_eq!(chunk.releases(), 1);
    }

    #[test]
    fn a_chunk_given_up_goes_back_once_after_its_last_block() {
        catches_broken(chunk_given_up_while_its_last_blocks_are_freed);
    }

    /// A block freed twice at once while its chunk is given up, the caller's error: one free is
    /// accepted, and the refused one, which may have counted itself in flight, does not keep the
    /// chunk from going back. The broken look for an idle chunk gives it back under the accepted
    /// free.
    fn double_free_of_an_orphans_block() {
        let chunk = Arc::new(HandoffChunk::new(1));
        let freers = free_elsewhere(&chunk, [0, 0]);
        chunk.give_up();
        let accepted = freers.into_iter().map(|freer| freer.join().unwrap());
        assert_eq!(accepted.filter(|&accepted| accepted).count(), 1);
        assert_eq!(chunk.releases(), 1);
    }

    #[test]
    fn a_double_free_of_an_orphans_block_is_refused_and_the_chunk_still_goes_back() {
        catches_broken(double_free_of_an_orphans_block);
    }

    /// A stray free (of a block never handed off) into a chunk that goes back meanwhile: it is
    /// refused, and writes nothing into the chunk's words, which a lend has set anew by then.
    /// The broken look for an idle chunk gives it back under the accepted free.
    fn stray_free_into_a_chunk_going_back() {
        let chunk = Arc::new(HandoffChunk::new(1));
        let freers = free_elsewhere(&chunk, [0, 1]);
        chunk.give_up();
        let accepted: Vec<bool> = freers.into_iter().map(|freer| freer.join().unwrap()).collect();
        assert_eq!(accepted, [true, false]);
        assert_eq!(chunk.releases(), 1);
        assert_eq!(chunk.state(), 0, "the stray free wrote the next lend's state");
    }

    #[test]
    fn a_stray_free_into_a_chunk_going_back_writes_nothing() {
        catches_broken(stray_free_into_a_chunk_going_back);
    }

    /// A block handed off and freed while the owner hands off another and gives the chunk up:
    /// the chunk waits for the second block, and goes back once after its free.
    #[test]
    fn a_chunk_waits_for_a_block_handed_off_before_it_was_given_up() {
        passes(|| {
            let chunk = Arc::new(HandoffChunk::new(1));
            let freer = {
                let chunk = Arc::clone(&chunk);
                thread::spawn(move || assert!(chunk.free(0)))
            };
            assert!(chunk.hand_off(1));
            chunk.give_up();
            freer.join().unwrap();
            assert_eq!(chunk.releases(), 0, "block 1 is still out");
            assert!(chunk.free(1));
            assert_eq!(chunk.releases(), 1);
        });
    }
}
