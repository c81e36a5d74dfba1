//! The directory of names and [`ShmMutex`] across processes: workers that find a mutex by name
//! and count under it, a worker killed while it holds a mutex, names inserted on either side of
//! a fork and, in a build with `--cfg melon_failpoints`, processes killed at every step of an
//! insertion or a removal, which must leave the name and its value both there or both gone.
//!
//! The cases run under the harness in `harness/mod.rs`, one after another in a process with a
//! single thread, so that forking is safe; it says how children report and how to pick cases.

mod harness;

use core::sync::atomic::{AtomicU64, Ordering};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::{
    await_word, fork, kill_self, run_cases, Case, Child, Exit, SharedWords, CHILD_LIMIT,
    FAILPOINTS_NOTE,
};
use melon_alloc_shm::{ShmBox, ShmError, ShmMutex, ShmOffset, ShmPool};

const MIB: usize = 1 << 20;

/// Bytes of the directory's block of entries, which the first insertion allocates for good.
const DIRECTORY_BYTES: usize = 32 << 10;

/// How long a process may wait for a lock whose holder died: a waiter asks every 5 ms whether
/// the holder lives, so this bound only proves that nothing hangs, on however busy a machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // Only the build with fail points adds cases to the list.
    #[cfg_attr(not(melon_failpoints), allow(unused_mut))]
    let mut cases: Vec<Case> = vec![
        ("workers_count_under_a_named_mutex", workers_count_under_a_named_mutex),
        ("a_holder_killed_in_a_mutex_hands_it_on", a_holder_killed_in_a_mutex_hands_it_on),
        (
            "a_worker_forked_after_its_master_locked_a_mutex_holds_it_as_itself",
            a_worker_forked_after_its_master_locked_a_mutex_holds_it_as_itself,
        ),
        (
            "a_poisoning_mutex_whose_holder_died_never_hands_out_its_value_again",
            a_poisoning_mutex_whose_holder_died_never_hands_out_its_value_again,
        ),
        (
            "a_mutex_box_dropped_after_its_holder_died_frees_its_block",
            a_mutex_box_dropped_after_its_holder_died_frees_its_block,
        ),
        (
            "a_waiter_gets_a_mutex_whose_holder_is_killed",
            a_waiter_gets_a_mutex_whose_holder_is_killed,
        ),
        (
            "names_inserted_after_the_fork_are_seen_across_it",
            names_inserted_after_the_fork_are_seen_across_it,
        ),
        (
            "a_collection_grown_by_one_process_is_read_by_another_under_its_mutex",
            a_collection_grown_by_one_process_is_read_by_another_under_its_mutex,
        ),
        (
            "a_boxed_collection_grown_by_a_child_is_read_by_its_parent",
            a_boxed_collection_grown_by_a_child_is_read_by_its_parent,
        ),
        (
            "a_boxed_collection_grown_by_a_child_is_dropped_by_its_parent",
            a_boxed_collection_grown_by_a_child_is_dropped_by_its_parent,
        ),
    ];
    #[cfg(melon_failpoints)]
    cases.extend(crash::CASES);
    run_cases(cases, FAILPOINTS_NOTE)
}

// ---------------------------------------------------------------------------------------------
// Mutexes between processes
// ---------------------------------------------------------------------------------------------

const WORKERS: usize = 4;
const ROUNDS: u64 = 1000;

/// A slot per worker, and the total of all of them last.
type Table = ShmMutex<[u64; WORKERS + 1]>;

/// A collection under a poisoning mutex, made before the fork, that the parent grows past the
/// pool's first segment: the child, which has not mapped the new pages, reads it all under the
/// mutex, whose lock maps them first.
fn a_collection_grown_by_one_process_is_read_by_another_under_its_mutex() {
    const LEN: usize = 4 * MIB;
    let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
    let bytes = ShmMutex::new_poisoning_in(allocator_api2::vec::Vec::new_in(&shm), &shm).unwrap();
    let grown = SharedWords::<AtomicU64>::new(1);
    let child = fork(|| {
        await_word(&grown[0]);
        let bytes = bytes.lock().unwrap();
        assert_eq!(bytes.len(), LEN);
        assert!(bytes.iter().all(|&byte| byte == 7), "the bytes the parent wrote");
    });
    bytes.lock().unwrap().resize(LEN, 7u8);
    assert!(shm.stats().unwrap().segments > 1, "the pool grew");
    grown[0].store(1, Ordering::Release);
    child.succeeds("the child reads the collection");
}

/// A collection in a box, made before the fork, that the child alone grows past the pool's first
/// segment and leaves: the parent, which has not mapped the new pages, reads it all through its
/// copy of the box, which maps them first.
fn a_boxed_collection_grown_by_a_child_is_read_by_its_parent() {
    const LEN: usize = 4 * MIB;
    let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
    let mut bytes = ShmBox::new_in(allocator_api2::vec::Vec::new_in(&shm), &shm).unwrap();
    fork(|| {
        bytes.resize(LEN, 7u8);
        assert!(shm.stats().unwrap().segments > 1, "the pool grew");
        // Ends without dropping its copy of the box: the parent's drops it.
    })
    .succeeds("the child grows the collection");
    assert_eq!(bytes.len(), LEN);
    assert!(bytes.iter().all(|&byte| byte == 7), "the bytes the child wrote");
    drop(bytes);
    shm.check().unwrap();
}

/// A collection of collections in a box, grown by the child alone past the pool's first segment:
/// the parent drops its copy of the box without reading it first, and the drop, which reads
/// every element, maps the new pages before.
fn a_boxed_collection_grown_by_a_child_is_dropped_by_its_parent() {
    type Inner<'pool> = allocator_api2::vec::Vec<u8, &'pool ShmPool>;
    let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
    let start = shm.available();
    let mut outer =
        ShmBox::new_in(allocator_api2::vec::Vec::<Inner<'_>, _>::new_in(&shm), &shm).unwrap();
    fork(|| {
        // Four MiB of empty elements: their drops free nothing, so none takes the lock, which
        // would map the pages, before the drop has read them all.
        outer.resize_with(4 * MIB / 24, || Inner::new_in(&shm));
        assert!(shm.stats().unwrap().segments > 1, "the pool grew");
        // Ends without dropping its copy of the box: the parent's drops it.
    })
    .succeeds("the child grows the collection");
    drop(outer);
    assert_eq!(shm.stats().unwrap().live_blocks, 0, "every buffer was freed");
    assert!(shm.available() >= start);
    shm.check().unwrap();
}

/// The master names a mutex before forking; each worker finds it by name and counts in its own
/// slot and in the total, under the mutex, all at once.
fn workers_count_under_a_named_mutex() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let placed = shm.insert_named_mutex("table", [0u64; WORKERS + 1]).unwrap();
    let go = SharedWords::<AtomicU64>::new(1);
    let workers: Vec<Child> = (0..WORKERS)
        .map(|slot| {
            let (shm, go) = (&shm, &go);
            fork(move || {
                let table = shm.named::<Table>("table").unwrap().expect("named before the fork");
                await_word(&go[0]);
                for _ in 0..ROUNDS {
                    let mut guard = table.lock().unwrap();
                    assert!(!guard.holder_died());
                    guard[slot] += 1;
                    // A read, then a write: two processes inside at once would lose a count.
                    let total = guard[WORKERS];
                    std::hint::black_box(&total);
                    guard[WORKERS] = total + 1;
                }
            })
        })
        .collect();
    go[0].store(1, Ordering::Release);
    for worker in workers {
        worker.succeeds("a worker counts under the named mutex");
    }
    let table = shm.named::<Table>("table").unwrap().unwrap();
    assert_eq!(shm.find::<Table>("table"), Ok(Some(placed)));
    let guard = table.lock().unwrap();
    assert!(!guard.holder_died());
    assert_eq!(guard[..WORKERS], [ROUNDS; WORKERS]);
    assert_eq!(guard[WORKERS], WORKERS as u64 * ROUNDS);
    drop(guard);
    assert_eq!(table.takeovers(), 0);
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
    shm.check().unwrap();
}

/// A worker killed holding a mutex that nobody has locked since: the box that owns the mutex,
/// dropped, finds the holder dead and frees the block, where a live holder would keep it.
fn a_mutex_box_dropped_after_its_holder_died_frees_its_block() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let mutex = ShmMutex::new_in(7u64, &shm).unwrap();
    let mut holder = fork(|| {
        let _held = mutex.lock().unwrap();
        kill_self();
    });
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    assert_eq!(mutex.takeovers(), 0, "nobody has locked it since");
    drop(mutex);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A worker killed holding two mutexes of values it was changing: the one that poisons never
/// hands its value out again, and its box frees the mutex's block alone; the other hands the
/// value on, with the death reported.
fn a_poisoning_mutex_whose_holder_died_never_hands_out_its_value_again() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let mut words = allocator_api2::vec::Vec::new_in(&shm);
    words.extend_from_slice(&[1u64, 2, 3]);
    let map = ShmMutex::new_poisoning_in(words, &shm).unwrap();
    let plain = ShmMutex::new_in(7u64, &shm).unwrap();
    assert_eq!(map.lock().unwrap()[..], [1, 2, 3]);
    let mut holder = fork(|| {
        let mut half_changed = map.lock().unwrap();
        half_changed.push(4);
        let _also = plain.lock().unwrap();
        kill_self();
    });
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    assert_eq!(map.try_lock_for(TAKEOVER_BOUND).map(|_| ()), Err(ShmError::Poisoned));
    assert_eq!(map.lock().map(|_| ()), Err(ShmError::Poisoned), "for good");
    assert_eq!(map.takeovers(), 1);
    assert!(ShmError::Poisoned.to_string().contains("died"));
    let guard = plain.try_lock_for(TAKEOVER_BOUND).unwrap();
    assert!(guard.holder_died());
    assert_eq!(*guard, 7);
    drop(guard);
    assert!(!plain.lock().unwrap().holder_died());
    // Dropping the poisoning box frees the mutex's block, not the value's buffer.
    let before = shm.stats().unwrap().live_blocks;
    drop(map);
    assert_eq!(shm.stats().unwrap().live_blocks, before - 1, "the mutex's block alone");
    drop(plain);
    assert_eq!(shm.stats().unwrap().live_blocks, before - 2);
    shm.check().unwrap();
}

/// A worker takes the named mutex, changes half of the value, and kills itself: the master's
/// next lock says the holder died, and the mutex then works as before, for it and for a new
/// worker.
fn a_holder_killed_in_a_mutex_hands_it_on() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    shm.insert_named_mutex("pair", [0u64; 2]).unwrap();
    let mut holder = fork(|| {
        let pair = shm.named::<ShmMutex<[u64; 2]>>("pair").unwrap().unwrap();
        let mut guard = pair.lock().unwrap();
        // The first half of a change that keeps both words equal.
        guard[0] = 7;
        kill_self();
    });
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    let pair = shm.named::<ShmMutex<[u64; 2]>>("pair").unwrap().unwrap();
    assert_eq!(pair.takeovers(), 0);

    let start = Instant::now();
    let mut guard = pair.try_lock_for(TAKEOVER_BOUND).unwrap();
    assert!(start.elapsed() < TAKEOVER_BOUND);
    assert!(guard.holder_died(), "the holder was killed holding the mutex");
    assert_eq!(pair.takeovers(), 1);
    assert_eq!(*guard, [7, 0], "the dead holder's half-made change");
    guard[1] = 7;
    drop(guard);

    // From now on, an ordinary mutex.
    let guard = pair.lock().unwrap();
    assert!(!guard.holder_died());
    assert_eq!(*guard, [7, 7]);
    drop(guard);
    let guard = pair.try_lock_for(Duration::from_secs(1)).unwrap();
    assert!(!guard.holder_died());
    drop(guard);
    fork(|| {
        let pair = shm.named::<ShmMutex<[u64; 2]>>("pair").unwrap().unwrap();
        let mut guard = pair.lock().unwrap();
        assert!(!guard.holder_died());
        assert_eq!(*guard, [7, 7]);
        *guard = [8, 8];
    })
    .succeeds("a new worker locks the mutex after the takeover");
    let guard = pair.lock().unwrap();
    assert!(!guard.holder_died());
    assert_eq!(*guard, [8, 8]);
    drop(guard);
    assert_eq!(pair.takeovers(), 1);
    // The pool's own lock was not held when the worker died.
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
    shm.check().unwrap();
}

/// The master locks and unlocks a mutex, so that its thread remembers the pool, then forks a
/// worker that takes the mutex and is killed holding it: the worker's thread, a copy of the
/// master's, held it as the worker's process, not as the master's, so the master's next lock
/// finds the holder dead instead of waiting for a holder it takes to be itself.
fn a_worker_forked_after_its_master_locked_a_mutex_holds_it_as_itself() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let counter = ShmMutex::new_in(0u64, &shm).unwrap();
    *counter.lock().unwrap() += 1;
    let mut holder = fork(|| {
        let mut guard = counter.lock().unwrap();
        *guard += 1;
        kill_self();
    });
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));

    let guard = counter.try_lock_for(TAKEOVER_BOUND).unwrap();
    assert!(guard.holder_died(), "the worker was killed holding the mutex");
    assert_eq!(*guard, 2);
    assert_eq!(counter.takeovers(), 1);
    drop(guard);
    shm.check().unwrap();
}

/// A worker waits in `lock` while the holder is killed: the kernel hands it the mutex, and its
/// guard says so.
fn a_waiter_gets_a_mutex_whose_holder_is_killed() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    shm.insert_named_mutex("pair", [0u64; 2]).unwrap();
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let mut holder = fork(|| {
        let pair = shm.named::<ShmMutex<[u64; 2]>>("pair").unwrap().unwrap();
        let mut guard = pair.lock().unwrap();
        guard[0] = 1;
        mailbox[0].store(1, Ordering::Release);
        // Let the waiter reach the mutex before dying.
        await_word(&mailbox[1]);
        std::thread::sleep(Duration::from_millis(50));
        kill_self();
    });
    let waiter = fork(|| {
        let pair = shm.named::<ShmMutex<[u64; 2]>>("pair").unwrap().unwrap();
        await_word(&mailbox[0]);
        mailbox[1].store(1, Ordering::Release);
        let start = Instant::now();
        let mut guard = pair.lock().unwrap();
        assert!(start.elapsed() < TAKEOVER_BOUND);
        assert!(guard.holder_died(), "the waiter was not told the holder died");
        assert_eq!(pair.takeovers(), 1);
        assert_eq!(*guard, [1, 0]);
        guard[1] = 2;
    });
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    waiter.succeeds("a waiter takes over the mutex of a killed holder");
    let pair = shm.named::<ShmMutex<[u64; 2]>>("pair").unwrap().unwrap();
    let guard = pair.lock().unwrap();
    assert!(!guard.holder_died());
    assert_eq!(*guard, [1, 2]);
    drop(guard);
    assert_eq!(pair.takeovers(), 1);
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
    shm.check().unwrap();
}

/// A worker makes the pool's directory with its first name after the fork, names a mutex and
/// the offset of a box it gives up; the master finds them all, and the worker finds a name the
/// master inserts after the fork. Every name and value is then removed, and the pool is as it
/// was but for the directory's block.
fn names_inserted_after_the_fork_are_seen_across_it() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let empty = shm.available();
    assert_eq!(shm.find::<[u64; 4]>("from-worker"), Ok(None));
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let worker = fork(|| {
        shm.insert_named("from-worker", [0xfeed_u64, 1, 2, 3]).unwrap();
        shm.insert_named_mutex("worker-mutex", 5u32).unwrap();
        let mut boxed = ShmBox::new_in([0u32; 16], &shm).unwrap();
        boxed[15] = 15;
        shm.insert_named("handoff", boxed.into_offset()).unwrap();
        mailbox[0].store(1, Ordering::Release);
        await_word(&mailbox[1]);
        assert_eq!(shm.named::<u64>("from-master"), Ok(Some(&0xbeef)));
    });
    await_word(&mailbox[0]);
    shm.insert_named("from-master", 0xbeef_u64).unwrap();
    mailbox[1].store(1, Ordering::Release);
    worker.succeeds("the worker names values and finds the master's");

    assert_eq!(shm.name_count(), Ok(4));
    assert_eq!(shm.named::<[u64; 4]>("from-worker"), Ok(Some(&[0xfeed, 1, 2, 3])));
    let mutex = shm.named::<ShmMutex<u32>>("worker-mutex").unwrap().unwrap();
    let guard = mutex.lock().unwrap();
    assert!(!guard.holder_died());
    assert_eq!(*guard, 5);
    drop(guard);
    let handoff = *shm.named::<ShmOffset<[u32; 16]>>("handoff").unwrap().unwrap();
    // SAFETY: the worker gave the box up and ended; this process takes it up once.
    let boxed = unsafe { ShmBox::from_offset(&shm, handoff) }.unwrap();
    assert_eq!(boxed[15], 15);
    drop(boxed);
    // SAFETY: freed above, so the offset is refused before anything is read.
    let freed = unsafe { shm.get(handoff) }.map(|_| ());
    assert_eq!(freed, Err(ShmError::NoObject { offset: handoff.raw() }));
    shm.check().unwrap();

    // SAFETY: no process refers to the value any more: the worker has ended, and the
    // references above are not used again.
    assert_eq!(unsafe { shm.remove_named::<[u64; 4]>("from-worker") }, Ok(true));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<ShmMutex<u32>>("worker-mutex") }, Ok(true));
    // SAFETY: as above; the offset's box was freed above, and the offset itself is a number.
    assert_eq!(unsafe { shm.remove_named::<ShmOffset<[u32; 16]>>("handoff") }, Ok(true));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<u64>("from-master") }, Ok(true));
    assert_eq!(shm.name_count(), Ok(0));
    assert_eq!(shm.available(), empty - DIRECTORY_BYTES, "all but the directory came back");
    shm.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Crashes at every step
// ---------------------------------------------------------------------------------------------

#[cfg(melon_failpoints)]
mod crash {
    //! A child arms the fail point `k` and runs one insertion or removal, so that it is killed
    //! at its `k`-th step while holding the pool's lock, for every `k` until the operation
    //! completes. The parent then takes the lock over and must find the name and its value both
    //! there, the value intact, with exactly the bytes free that the operation leaves, or both
    //! gone, with exactly the bytes free before it; and a pool that checks clean, whose other
    //! names and blocks are untouched, and on which the operation can be run again.

    use melon_alloc_shm::{failpoint, ShmBox, ShmError, ShmMutex, ShmOffset, ShmPool};

    use super::{fork, Case, Exit, CHILD_LIMIT, DIRECTORY_BYTES, MIB, TAKEOVER_BOUND};

    pub(super) const CASES: [Case; 9] = [
        ("crash_remove_named_grown_by_another_process", crash_remove_named_grown_elsewhere),
        ("crash_insert_named", || crash(Op::Insert)),
        ("crash_insert_named_into_a_freed_block", || crash(Op::InsertReused)),
        ("crash_insert_named_large", || crash(Op::InsertLarge)),
        ("crash_insert_named_first_making_the_directory", || crash(Op::InsertFirst)),
        ("crash_remove_named", || crash(Op::Remove)),
        ("crash_remove_named_large", || crash(Op::RemoveLarge)),
        ("crash_insert_named_mutex", || crash(Op::InsertMutex)),
        ("crash_insert_named_after_writing_its_value", crash_insert_after_writing_its_value),
    ];

    const CAPACITY: usize = 2 * MIB;
    const NAME: &str = "crash-target";

    /// A value of a small block, and one of a large block (a run of pages: slabs serve up to
    /// 8 KiB).
    type Small = [u64; 8];
    type Large = [u64; 2048];

    fn pattern<const N: usize>(seed: u64) -> [u64; N] {
        core::array::from_fn(|i| seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64)
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Op {
        /// `insert_named` of a small value.
        Insert,
        /// `insert_named` of a small value into a block freed before, whose free-list link the
        /// value overwrites.
        InsertReused,
        /// `insert_named` of a large value.
        InsertLarge,
        /// The first `insert_named` of the pool, which makes the directory's block first.
        InsertFirst,
        /// `remove_named` of a small value.
        Remove,
        /// `remove_named` of a large value.
        RemoveLarge,
        /// `insert_named_mutex`.
        InsertMutex,
    }

    impl Op {
        /// Whether the name is there once the operation is done.
        fn inserts(self) -> bool {
            !matches!(self, Op::Remove | Op::RemoveLarge)
        }
    }

    /// What setting up leaves besides the pool: witnesses that every crash must leave intact,
    /// and the named value a removal removes.
    struct Setup {
        shm: ShmPool,
        witness_box: ShmOffset<[u64; 16]>,
        target: Option<u64>,
        /// The block freed for the insertion to take, for [`Op::InsertReused`].
        freed: Option<u64>,
    }

    /// Brings a fresh pool to the state the operation starts from: the same calls, so the same
    /// offsets, every time.
    fn setup(op: Op) -> Setup {
        let shm = ShmPool::new(CAPACITY).unwrap();
        let witness_box = ShmBox::new_in(pattern::<16>(1), &shm).unwrap().into_offset();
        let freed = (op == Op::InsertReused).then(|| {
            // A block of the class the named value and its type's name take (72 bytes: 64, and
            // 8 of "[u64; 8]"), freed, heads its slab's free list for the insertion to take.
            let freed = ShmBox::new_in([0u64; 9], &shm).unwrap();
            freed.offset().raw()
        });
        if op != Op::InsertFirst {
            shm.insert_named("witness", pattern::<4>(2)).unwrap();
        }
        let target = match op {
            Op::Remove => Some(shm.insert_named(NAME, pattern::<8>(3)).unwrap().raw()),
            Op::RemoveLarge => Some(shm.insert_named(NAME, pattern::<2048>(3)).unwrap().raw()),
            _ => None,
        };
        Setup { shm, witness_box, target, freed }
    }

    /// A removal killed at each step, of a value that lies in pages another process grew the
    /// pool by, which the process taking the lock over has not mapped yet: the name and its
    /// block are still both there or both gone, the block not lost for being out of that
    /// process's view.
    fn crash_remove_named_grown_elsewhere() {
        for k in 1.. {
            assert!(k < 1000, "the removal never completed");
            let shm = ShmPool::builder().capacity(CAPACITY).max_capacity(4 * CAPACITY).build();
            let shm = shm.unwrap();
            fork(|| {
                // A filler leaves room in the first segment for the directory's block (32 KiB)
                // but not for the value (16 KiB) too, whose insertion grows the pool.
                let room = 40 * 1024;
                // Never freed: it keeps that room taken.
                let _filler = shm.alloc((shm.available() - room) / 4096 * 4096).unwrap();
                shm.insert_named(NAME, pattern::<2048>(3)).unwrap();
                assert_eq!(shm.stats().unwrap().segments, 2);
            })
            .succeeds("another process grows the pool");
            let mut process = fork(|| {
                failpoint::arm(k);
                // SAFETY: no process refers to the value.
                assert_eq!(unsafe { shm.remove_named::<Large>(NAME) }, Ok(true));
                failpoint::arm(0);
            });
            let killed = match process.wait(CHILD_LIMIT) {
                Exit::Code(0) => false,
                Exit::Signal(libc::SIGKILL) => true,
                other => panic!("at {k}: the child ended with {other:?}"),
            };
            drop(shm.try_lock_for(TAKEOVER_BOUND).unwrap());
            shm.check().unwrap_or_else(|error| panic!("at {k}: {error}"));
            // The filler, the directory's block and, while named, the value: all large blocks.
            let large = shm.stats().unwrap().large_blocks;
            match shm.find::<Large>(NAME).unwrap() {
                Some(_) => {
                    let value = shm.named::<Large>(NAME).unwrap().unwrap();
                    assert_eq!(*value, pattern::<2048>(3), "at {k}: the value changed");
                    assert_eq!(large, 3, "at {k}: the name without its block");
                }
                None => assert_eq!(large, 2, "at {k}: the name gone, its block not freed"),
            }
            if !killed {
                break;
            }
        }
    }

    /// An insertion killed after its value's block was allocated and written, before the name:
    /// the next holder of the lock frees the block, and the peak of bytes in use still counts
    /// it, as it would have after a free of any other block.
    fn crash_insert_after_writing_its_value() {
        let reference = setup(Op::InsertLarge);
        run(Op::InsertLarge, &reference.shm);
        let with_it = reference.shm.stats().unwrap().bytes_in_use;
        let offset = look(Op::InsertLarge, &reference.shm, "a pool that never crashed").unwrap();
        let mut written_then_freed = 0;
        for k in 1.. {
            assert!(k < 1000, "the insertion never completed");
            let Setup { shm, .. } = setup(Op::InsertLarge);
            let mut process = fork(|| {
                failpoint::arm(k);
                run(Op::InsertLarge, &shm);
                failpoint::arm(0);
            });
            if process.wait(CHILD_LIMIT) == Exit::Code(0) {
                break;
            }
            drop(shm.try_lock_for(TAKEOVER_BOUND).unwrap());
            shm.check().unwrap_or_else(|error| panic!("at {k}: {error}"));
            let value = shm.ptr_at(offset as usize).unwrap().cast::<Large>();
            // SAFETY: the block lies in the pool's mapping, and no process uses the pool now;
            // its bytes are read as words, which any bytes are.
            let written = unsafe { value.read() } == pattern::<2048>(3);
            if written && shm.find::<Large>(NAME).unwrap().is_none() {
                written_then_freed += 1;
                let peak = shm.stats().unwrap().peak_bytes_in_use;
                assert!(peak >= with_it, "killed at {k}: peak {peak}, {with_it} were in use");
            }
        }
        assert!(written_then_freed > 0, "no kill between the value and its name");
    }

    fn run(op: Op, shm: &ShmPool) {
        match op {
            Op::Insert | Op::InsertReused | Op::InsertFirst => {
                shm.insert_named(NAME, pattern::<8>(3)).unwrap();
            }
            Op::InsertLarge => {
                shm.insert_named(NAME, pattern::<2048>(3)).unwrap();
            }
            Op::InsertMutex => {
                shm.insert_named_mutex(NAME, pattern::<8>(3)).unwrap();
            }
            // SAFETY: no process refers to the value.
            Op::Remove => assert_eq!(unsafe { shm.remove_named::<Small>(NAME) }, Ok(true)),
            // SAFETY: as above.
            Op::RemoveLarge => assert_eq!(unsafe { shm.remove_named::<Large>(NAME) }, Ok(true)),
        }
    }

    /// The offset of the value under the name, if the name is there, after checking that the
    /// value is intact, and reachable by name and by offset.
    fn look(op: Op, shm: &ShmPool, when: &str) -> Option<u64> {
        match op {
            Op::Insert | Op::InsertReused | Op::InsertFirst | Op::Remove => {
                let offset = shm.find::<Small>(NAME).unwrap()?;
                let value = shm.named::<Small>(NAME).unwrap().unwrap();
                assert_intact(value, &pattern(3), &format!("{when}, by name"));
                // SAFETY: the name keeps the value for the reference's life; nothing writes it.
                let value = unsafe { shm.get(offset) }.unwrap();
                assert_intact(value, &pattern(3), &format!("{when}, by offset"));
                Some(offset.raw())
            }
            Op::InsertLarge | Op::RemoveLarge => {
                let offset = shm.find::<Large>(NAME).unwrap()?;
                let value = shm.named::<Large>(NAME).unwrap().unwrap();
                assert_intact(value, &pattern(3), &format!("{when}, by name"));
                // SAFETY: as above.
                let value = unsafe { shm.get(offset) }.unwrap();
                assert_intact(value, &pattern(3), &format!("{when}, by offset"));
                Some(offset.raw())
            }
            Op::InsertMutex => {
                let offset = shm.find::<ShmMutex<Small>>(NAME).unwrap()?;
                let mutex = shm.named::<ShmMutex<Small>>(NAME).unwrap().unwrap();
                let guard = mutex.try_lock_for(TAKEOVER_BOUND).unwrap();
                assert!(!guard.holder_died(), "nobody held the mutex");
                assert_eq!(*guard, pattern(3));
                drop(guard);
                assert_eq!(mutex.takeovers(), 0);
                Some(offset.raw())
            }
        }
    }

    /// Asserts that `value` is `expected`, naming the words that differ (a large value is too
    /// long to print whole).
    fn assert_intact<const N: usize>(value: &[u64; N], expected: &[u64; N], when: &str) {
        let differ: Vec<String> = (0..N)
            .filter(|&i| value[i] != expected[i])
            .map(|i| format!("word {i}: {:#x}, not {:#x}", value[i], expected[i]))
            .collect();
        assert!(differ.is_empty(), "{when}: the named value changed: {}", differ.join("; "));
    }

    /// The witnesses, intact.
    fn witnesses_intact(op: Op, setup: &Setup) {
        let shm = &setup.shm;
        // SAFETY: the witness box was given up and stays in the pool; nothing writes it.
        assert_eq!(unsafe { shm.get(setup.witness_box) }, Ok(&pattern(1)));
        if op != Op::InsertFirst {
            assert_eq!(shm.named::<[u64; 4]>("witness"), Ok(Some(&pattern(2))));
        }
    }

    /// The pool's state after a kill, ordered as the operation goes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Stage {
        /// As before the operation.
        Before,
        /// The directory's block made, the name not yet inserted (the first insertion only).
        DirectoryOnly,
        /// As after the operation.
        After,
    }

    /// What a kill at one fail point left.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Outcome {
        stage: Stage,
        /// Whether the next holder of the lock undid a half-made operation.
        undone: bool,
        /// Whether the process was killed (rather than completing).
        killed: bool,
    }

    fn crash(op: Op) {
        // Two pools that never crash give the bytes free and the names before and after.
        let reference = setup(op);
        let before = (reference.shm.available(), reference.shm.name_count().unwrap());
        run(op, &reference.shm);
        let after = (reference.shm.available(), reference.shm.name_count().unwrap());
        let after_offset = if op.inserts() {
            look(op, &reference.shm, "a pool that never crashed")
        } else {
            reference.target
        };
        assert!(after_offset.is_some());
        assert_ne!(before, after, "{op:?}");
        if let Some(freed) = reference.freed {
            assert_eq!(after_offset, Some(freed), "{op:?}: the value takes the freed block");
        }

        let mut outcomes: Vec<Outcome> = Vec::new();
        for k in 1.. {
            assert!(k < 1000, "{op:?} never completed");
            let outcome = crash_at(op, k, before, after, after_offset);
            outcomes.push(outcome);
            if !outcome.killed {
                break;
            }
        }
        let points = outcomes.len() - 1;
        println!("  {op:?}: {points} fail points");
        let last = outcomes[points];
        assert_eq!(last.stage, Stage::After, "{op:?}: completed");
        assert!(!last.undone, "{op:?}: completed, yet something was undone");
        // A kill before the first write leaves nothing to undo; kills in the middle leave an
        // operation the next holder undoes; a kill after the commit leaves it done.
        assert_eq!(outcomes[0], Outcome { stage: Stage::Before, undone: false, killed: true });
        let undone = outcomes.iter().filter(|outcome| outcome.undone).count();
        assert!(undone >= 2, "{op:?}: {outcomes:?}");
        let committed = outcomes[..points].iter().filter(|outcome| outcome.stage == Stage::After);
        assert!(committed.count() >= 1, "{op:?}: no kill after the commit: {outcomes:?}");
        // The stages only move forwards with `k`, and an operation that stood was not undone.
        for (k, pair) in outcomes.windows(2).enumerate() {
            assert!(pair[0].stage <= pair[1].stage, "{op:?} at {}: {outcomes:?}", k + 1);
        }
        // A removal forgets the name in its first step and frees the block in its second: a
        // kill in the second is undone back to the first step's end, and the next holder then
        // finishes the free, so the removal stands although something was undone. Any other
        // operation that stood was not undone.
        let two_steps = matches!(op, Op::Remove | Op::RemoveLarge);
        for outcome in &outcomes {
            let stood_undone = outcome.stage == Stage::After && outcome.undone;
            assert!(!stood_undone || two_steps, "{op:?}: {outcomes:?}");
        }
        if two_steps {
            assert!(
                outcomes.iter().any(|outcome| outcome.stage == Stage::After && outcome.undone),
                "{op:?}: no kill in the free after the name went: {outcomes:?}"
            );
        }
        if op == Op::InsertFirst {
            assert!(
                outcomes.iter().any(|outcome| outcome.stage == Stage::DirectoryOnly),
                "{op:?}: no kill between the directory and the name: {outcomes:?}"
            );
        }
    }

    /// Kills a process at its `k`-th fail point in `op`, and checks what it left. `before` and
    /// `after` are the bytes free and the names before and after the operation; `after_offset`
    /// is where the value lies (inserted or, for a removal, removed).
    fn crash_at(
        op: Op,
        k: u64,
        before: (usize, usize),
        after: (usize, usize),
        after_offset: Option<u64>,
    ) -> Outcome {
        let setup = setup(op);
        let shm = &setup.shm;
        let counters = shm.stats().unwrap();
        let mut process = fork(|| {
            failpoint::arm(k);
            run(op, shm);
            failpoint::arm(0);
        });
        let killed = match process.wait(CHILD_LIMIT) {
            Exit::Code(0) => false,
            Exit::Signal(libc::SIGKILL) => true,
            other => panic!("{op:?} at {k}: the child ended with {other:?}"),
        };
        let start = std::time::Instant::now();
        drop(shm.try_lock_for(TAKEOVER_BOUND).unwrap());
        assert!(start.elapsed() < TAKEOVER_BOUND, "{op:?} at {k}");
        shm.check().unwrap_or_else(|error| panic!("{op:?} at {k}: {error}"));
        let stats = shm.stats().unwrap();
        let takeovers = stats.lock_takeovers - counters.lock_takeovers;
        assert_eq!(takeovers, u64::from(killed), "{op:?} at {k}: killed holding the lock");
        let undone = stats.operations_undone > counters.operations_undone;

        let now = (shm.available(), shm.name_count().unwrap());
        let found = look(op, shm, &format!("{op:?} killed at {k}"));
        let there = found.is_some();
        let stage = if there == op.inserts() {
            assert_eq!(now, after, "{op:?} at {k}: the name done, the bytes free not");
            assert_eq!(found.or(setup.target), after_offset, "{op:?} at {k}: the value's place");
            Stage::After
        } else if now == before {
            Stage::Before
        } else {
            assert_eq!(op, Op::InsertFirst, "{op:?} at {k}: {now:?}, before {before:?}");
            assert_eq!(now, (before.0 - DIRECTORY_BYTES, before.1), "{op:?} at {k}");
            Stage::DirectoryOnly
        };
        // A removed value's block is free with its name; a value not removed is in its block.
        if let Some(target) = setup.target {
            // SAFETY: a value still named is read only, and a freed one is refused unread.
            let block = unsafe { shm.get(ShmOffset::<Small>::from_raw(target)) }.map(|_| ());
            let expected = if there { Ok(()) } else { Err(ShmError::NoObject { offset: target }) };
            assert_eq!(block, expected, "{op:?} at {k}: the name and its block");
        }
        witnesses_intact(op, &setup);

        // The pool goes on: the operation, run again where it was not done, ends where a pool
        // that never crashed is; where it was done, running it again is refused.
        if stage == Stage::After {
            if op.inserts() {
                let again = match op {
                    Op::InsertMutex => shm.insert_named_mutex(NAME, [0u64; 8]).map(|_| ()),
                    _ => shm.insert_named(NAME, [0u64; 8]).map(|_| ()),
                };
                assert_eq!(again, Err(ShmError::NameTaken), "{op:?} at {k}");
            } else {
                // SAFETY: the name is gone, so nothing is freed.
                assert_eq!(unsafe { shm.remove_named::<Small>(NAME) }, Ok(false));
            }
        } else {
            run(op, shm);
            let again = look(op, shm, &format!("{op:?} at {k}, run again"));
            assert_eq!(again.is_some(), op.inserts());
            assert_eq!((shm.available(), shm.name_count().unwrap()), after, "{op:?} at {k}");
        }
        shm.check().unwrap_or_else(|error| panic!("{op:?} at {k}, run again: {error}"));
        witnesses_intact(op, &setup);
        Outcome { stage, undone, killed }
    }
}
