//! Loom models of the shared pool's built-in lock and undo log: mutual exclusion, no lost
//! wake-up, the takeover of a dead owner's lock (and never of a live owner's), and the undoing
//! of an operation whose thread died in the middle of it.
//!
//! Built only with `--cfg melon_loom` (`cargo xtask loom`). Threads are modelled: each has an
//! id the model picks, and "dies" by marking itself dead and doing nothing more, which is all
//! the lock can see of a killed process. With `--cfg melon_loom_broken` as well, the lock's
//! acquire checks the word and stores it in two steps, and its takeover stops asking whether the
//! owner is dead. Every model must then fail (each says which broken part it catches), and the
//! test fails if one does not: that is how we know the models can.

#[cfg(melon_loom)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;
    use melon_alloc_shm::model::{Shm, Waits};

    const A: u32 = 1;
    const B: u32 = 2;
    const C: u32 = 3;
    const D: u32 = 4;

    /// Runs a model: it must pass with the real lock, and fail with the broken one, which shows
    /// that it can.
    fn expect_model(model: impl Fn() + Send + Sync + 'static) {
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

    /// Two threads each take the lock, bump the counter and release it, twice. Loom reports a
    /// bump made while the other thread is inside; every bump must count, and nobody may have
    /// been taken over, as nobody died. The broken acquire lets both threads in.
    fn two_threads_take_turns(waits: Waits) {
        let shm = Arc::new(Shm::new(waits));
        let count = Counter::new();
        let threads: Vec<_> = [A, B]
            .into_iter()
            .map(|tid| {
                let (shm, count) = (Arc::clone(&shm), Arc::clone(&count));
                thread::spawn(move || {
                    // Twice, so that a thread also comes back for a lock it has just released.
                    for _ in 0..2 {
                        shm.lock(tid).expect("the lock");
                        count.bump();
                        shm.unlock(tid);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread");
        }
        assert_eq!(count.get(), 4);
        assert_eq!(shm.takeovers(), 0, "a live owner was taken over");
    }

    #[test]
    fn lock_is_mutually_exclusive() {
        expect_model(|| two_threads_take_turns(Waits::Blocking));
    }

    #[test]
    fn lock_is_mutually_exclusive_when_waits_time_out() {
        expect_model(|| two_threads_take_turns(Waits::TimingOut));
    }

    /// A holds the lock while B and C come for it, then releases it. Waits end only on a
    /// wake-up, so if an unlock forgets a sleeper, loom finds every thread blocked and reports a
    /// deadlock; otherwise all three get in, one at a time. Either broken part lets two threads
    /// in at once.
    fn sleepers_are_woken() {
        let shm = Arc::new(Shm::new(Waits::Blocking));
        let count = Counter::new();
        shm.lock(A).expect("a free lock");
        let waiters: Vec<_> = [B, C]
            .into_iter()
            .map(|tid| {
                let (shm, count) = (Arc::clone(&shm), Arc::clone(&count));
                thread::spawn(move || {
                    shm.lock(tid).expect("the lock");
                    count.bump();
                    shm.unlock(tid);
                })
            })
            .collect();
        count.bump();
        shm.unlock(A);
        for waiter in waiters {
            waiter.join().expect("a waiter");
        }
        assert_eq!(count.get(), 3);
        assert_eq!(shm.takeovers(), 0, "a live owner was taken over");
    }

    #[test]
    fn no_wake_up_is_lost() {
        expect_model(sleepers_are_woken);
    }

    /// A takes the lock, works, and dies holding it. B, waiting meanwhile, must get the lock,
    /// only once A is dead, through the takeover, and counted once. The broken takeover lets B
    /// in while A still works.
    fn dead_owner_is_taken_over() {
        let shm = Arc::new(Shm::new(Waits::TimingOut));
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
                shm.unlock(B);
            })
        };
        count.bump();
        // A's work takes a while, during which B's waits time out and it looks at A.
        thread::yield_now();
        shm.die(A);
        b.join().expect("B");
        assert_eq!(shm.takeovers(), 1);
    }

    #[test]
    fn dead_owner_is_taken_over_once() {
        expect_model(dead_owner_is_taken_over);
    }

    /// A holds the lock, alive, while B waits and its every wait times out, so that B looks at
    /// A's liveness at every step. B must wait for A's unlock, and nobody is taken over. The
    /// broken takeover lets B in while A still works.
    fn live_owner_is_waited_for() {
        let shm = Arc::new(Shm::new(Waits::TimingOut));
        let count = Counter::new();
        shm.lock(A).expect("a free lock");
        let b = {
            let (shm, count) = (Arc::clone(&shm), Arc::clone(&count));
            thread::spawn(move || {
                shm.lock(B).expect("the lock");
                count.bump();
                shm.unlock(B);
            })
        };
        count.bump();
        // A's work takes a while, during which B's waits time out and it looks at A.
        thread::yield_now();
        shm.unlock(A);
        b.join().expect("B");
        assert_eq!(count.get(), 2);
        assert_eq!(shm.takeovers(), 0, "a live owner was taken over");
    }

    #[test]
    fn live_owner_is_never_taken_over() {
        expect_model(live_owner_is_waited_for);
    }

    const WIDE: u64 = 0x5555_0000_0000_0001;
    const NARROW: u32 = 0x8000_0001;

    /// A takes the lock, starts an operation, writes `sets` of the two state words through the
    /// undo log, commits if `commit`, and dies holding the lock. B, waiting meanwhile, takes
    /// over and runs recovery, which must put back the old values of an uncommitted operation
    /// and keep a committed one's, and leave the log empty either way. The broken takeover lets
    /// B recover while A is still writing.
    fn interrupted_operation(sets: usize, commit: bool) {
        let shm = Arc::new(Shm::new(Waits::TimingOut));
        shm.lock(A).expect("a free lock");
        let b = {
            let shm = Arc::clone(&shm);
            thread::spawn(move || {
                shm.lock(B).expect("the lock, taken over");
                assert!(shm.is_dead(A), "B took the lock from a live owner");
                // SAFETY: B holds the lock.
                let undone = unsafe { shm.recover() };
                assert_eq!(shm.log_len(), 0, "recovery left entries in the log");
                // SAFETY: B holds the lock.
                let words = unsafe { shm.words() };
                shm.unlock(B);
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
        expect_model(|| interrupted_operation(1, false));
    }

    #[test]
    fn operation_interrupted_after_two_writes_is_undone() {
        expect_model(|| interrupted_operation(2, false));
    }

    #[test]
    fn committed_operation_stands() {
        expect_model(|| interrupted_operation(2, true));
    }

    /// A dies in the middle of an operation; B and C both wait, and each, once it has the lock,
    /// recovers, starts an operation of its own and dies in it too; then D takes the lock. Every
    /// takeover and every undone operation must be counted: three of each, from three threads.
    /// The broken takeover lets a thread in before the previous owner has begun its operation.
    fn every_takeover_is_counted() {
        // Waits that time out would have two threads spin on a dead owner at once, more than loom
        // can explore in minutes; a dead owner's waiters are woken instead (see `Waits`).
        let shm = Arc::new(Shm::new(Waits::Blocking));
        shm.lock(A).expect("a free lock");
        let takers: Vec<_> = [B, C]
            .into_iter()
            .map(|tid| {
                let shm = Arc::clone(&shm);
                thread::spawn(move || {
                    shm.lock(tid).expect("the lock, taken over");
                    // SAFETY: this thread holds the lock.
                    assert!(unsafe { shm.recover() }, "a dead owner's operation was missed");
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
        // SAFETY: D holds the lock.
        assert!(unsafe { shm.recover() }, "the last dead owner's operation was missed");
        assert_eq!(shm.takeovers(), 3);
        assert_eq!(shm.undone(), 3);
        // SAFETY: D holds the lock.
        assert_eq!(unsafe { shm.words() }, (0, 0));
        shm.unlock(D);
    }

    #[test]
    fn takeovers_and_undone_operations_are_all_counted() {
        expect_model(every_takeover_is_counted);
    }
}
