//! Child pools of a shared pool under attack: chunks lent to a process, blocks handed off and
//! freed by others, and the reclaim of a dead process's chunks, each pushed where a block could
//! be handed out twice, a free lost or applied twice, or a chunk given back under a live user.
//!
//! The multi-process cases fork from a test of the standard harness, which runs other threads:
//! every case here takes [`SERIAL`] first, so that no two of them fork at once, and a forked
//! child only uses the pool, the heap (whose locks the C library takes across `fork`) and
//! `_exit`s, printing nothing unless it fails.

mod common;
// Only its process helpers; its runner is for binaries without the standard harness.
mod harness;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::{has_stamp, stamp};
use harness::{after_fork, await_word, kill_self, Child, Exit, SharedWords, CHILD_LIMIT};
use melon_alloc_core::CHUNK_SIZE;
use melon_alloc_shm::{ShmError, ShmPool};

const MIB: usize = 1 << 20;

/// Held by every case, so that forks never overlap and each case sees only its own processes.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forks a child that runs `body` and `_exit`s with 0, or 101 if it panics.
fn fork(body: impl FnOnce()) -> Child {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: the harness's other threads wait on channels and hold no lock the child needs
    // (every case holds `SERIAL`, so no other case runs its code meanwhile); the C library's
    // `fork` takes and resets the heap's locks, and the pool's fork handler its own. The child
    // only uses the pool and the heap, then `_exit`s (`after_fork`).
    let pid = unsafe { libc::fork() };
    after_fork(pid, body)
}

/// Hands `block` off and returns its offset.
fn hand_off(shm: &ShmPool, block: NonNull<u8>) -> usize {
    // SAFETY: every block passed is an in-use block of a child of `shm` made in this process,
    // handed off once and from then on freed through `shm` alone.
    unsafe { shm.hand_off(block) }.unwrap()
}

fn try_free(shm: &ShmPool, block: NonNull<u8>) -> Result<(), ShmError> {
    // SAFETY: the block was handed off and nothing uses it any more, or the call is one the
    // pool must refuse without a change, which is what the test checks.
    unsafe { shm.try_free(block) }
}

fn not_handed_off(block: NonNull<u8>) -> Result<(), ShmError> {
    Err(ShmError::NotHandedOff { addr: block.as_ptr().addr() })
}

/// The counters that say what the pool holds.
fn figures(shm: &ShmPool) -> [usize; 5] {
    let stats = shm.stats().unwrap();
    [stats.available, stats.bytes_in_use, stats.live_blocks, stats.large_blocks, stats.lent_bytes]
}

// ---------------------------------------------------------------------------------------------
// One process
// ---------------------------------------------------------------------------------------------

/// A chunk lent while the owner table was full is lent to no slot. If the process claims a slot
/// later (a slot freed up meanwhile), a give-back of that first chunk must still find it: the
/// chunk must not stay lent for the pool's life once its child is dropped.
#[test]
fn a_chunk_lent_without_a_slot_comes_back_after_its_process_claims_one() {
    let _serial = serial();
    const SLOTS: usize = 128;
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    // Every slot taken, by handles of this very process: each handle claims a slot of its own.
    let handles: Vec<ShmPool> = (0..SLOTS)
        .map(|_| {
            let fd = shm.as_fd().try_clone_to_owned().unwrap();
            // SAFETY: the descriptor is the pool's own, made by this build of the library.
            unsafe { ShmPool::attach(fd) }.unwrap()
        })
        .collect();
    for handle in &handles {
        let child = handle.child();
        let block = child.alloc(64).unwrap();
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
        // The chunk goes back with the child, the slot stays claimed by the handle.
    }
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    let child = shm.child();
    // The first chunk: the table is full (of the living), so it is lent to no slot.
    let first: Vec<_> = (0..200).map(|_| child.alloc(64).unwrap()).collect();
    assert_eq!(shm.stats().unwrap().lent_bytes, CHUNK_SIZE);
    // A slot frees up; the child's next chunk claims it.
    let mut handles = handles;
    drop(handles.pop());
    let second: Vec<_> = (0..400).map(|_| child.alloc(64).unwrap()).collect();
    assert!(shm.stats().unwrap().lent_bytes >= 2 * CHUNK_SIZE, "a second chunk");
    for block in first.into_iter().chain(second) {
        // SAFETY: each block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0, "every chunk of the dropped child is back");
    drop(handles);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A handed-off block freed once gives its orphaned chunk back; the chunk is lent again, to a
/// new child, whose blocks fill it. A second free of the old pointer must be refused, change no
/// count, and leave the new child's blocks as they are.
#[test]
fn a_second_free_after_the_chunk_was_lent_again_is_refused_and_changes_nothing() {
    let _serial = serial();
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let first = shm.child();
    let block = first.alloc(64).unwrap();
    let offset = hand_off(&shm, block);
    drop(first);
    assert_eq!(shm.stats().unwrap().lent_bytes, CHUNK_SIZE, "an orphan");
    let received = shm.ptr_at(offset).unwrap();
    try_free(&shm, received).unwrap();
    assert_eq!(shm.stats().unwrap().lent_bytes, 0, "the orphan went back with its last block");
    assert_eq!(shm.available(), start);
    let second = shm.child();
    let blocks: Vec<_> = (0..200).map(|_| second.alloc(64).unwrap()).collect();
    let chunk_of = |at: usize| at & !(CHUNK_SIZE - 1);
    assert!(
        blocks.iter().any(|&b| chunk_of(shm.offset_of(b).unwrap()) == chunk_of(offset)),
        "the chunk is lent again"
    );
    for (seed, &b) in blocks.iter().enumerate() {
        // SAFETY: an in-use block of 64 bytes that nothing else touches.
        unsafe { stamp(b, 64, seed) };
    }
    let before = figures(&shm);
    assert_eq!(try_free(&shm, received), not_handed_off(received), "freed twice");
    assert_eq!(figures(&shm), before);
    for (seed, &b) in blocks.iter().enumerate() {
        // SAFETY: as above, read only.
        assert!(unsafe { has_stamp(b, 64, seed) }, "block {seed} overwritten");
    }
    // Nothing of the old free reached the new child: it serves 200 more blocks, all distinct.
    let more: Vec<_> = (0..200).map(|_| second.alloc(64).unwrap()).collect();
    let mut all: Vec<_> = blocks.iter().chain(&more).map(|b| b.as_ptr().addr()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 400, "a block handed out twice");
    for b in blocks.into_iter().chain(more) {
        // SAFETY: each block came from `second` and is freed once.
        unsafe { second.free(b) };
    }
    drop(second);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// Pointers a free through the shared pool must refuse, however they reach a chunk lent to a
/// child: its header, a block of the child never handed off, a block past the chunk's first
/// 16 KiB (a large child block's tail), and an offset between blocks. Nothing changes.
#[test]
fn frees_into_a_lent_chunk_other_than_of_handed_off_blocks_are_refused_and_change_nothing() {
    let _serial = serial();
    let shm = ShmPool::new(4 * MIB).unwrap();
    let child = shm.child();
    let small = child.alloc(64).unwrap();
    let large = child.alloc(3 * CHUNK_SIZE).unwrap();
    let handed = child.alloc(64).unwrap();
    hand_off(&shm, handed);
    let chunk = shm.offset_of(small).unwrap() & !(CHUNK_SIZE - 1);
    let before = figures(&shm);
    let at = |offset: usize| shm.ptr_at(offset).unwrap();
    let large_at = shm.offset_of(large).unwrap();
    for (what, pointer) in [
        ("the chunk's start", at(chunk)),
        ("inside the chunk header", at(chunk + 16)),
        ("a block never handed off", small),
        ("inside the handed-off block", at(shm.offset_of(handed).unwrap() + 16)),
        ("the large block itself", large),
        ("past the large block's first chunk", at(large_at + CHUNK_SIZE + 64)),
        ("the large block's last page", at(large_at + 3 * CHUNK_SIZE - 4096)),
    ] {
        let refused = try_free(&shm, pointer);
        let refused_as_expected =
            matches!(refused, Err(ShmError::Free(_) | ShmError::NotHandedOff { .. }));
        assert!(refused_as_expected, "{what}: {refused:?}");
        assert_eq!(figures(&shm), before, "{what}");
    }
    try_free(&shm, handed).unwrap();
    assert_eq!(try_free(&shm, handed), not_handed_off(handed), "twice");
    // SAFETY: both came from `child` and are freed once.
    unsafe { child.free(small) };
    // SAFETY: as above.
    unsafe { child.free(large) };
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    shm.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Blocks a producer process stamps and hands off, with scratch of its child's around them:
/// their offsets, plus 1, go to `mailbox[first..first + count]`.
fn produce(shm: &ShmPool, child: &melon_alloc_heap::ChildPool<'_>, mailbox: &[AtomicU64]) {
    for (index, word) in mailbox.iter().enumerate() {
        let size = 16 + index % 200;
        let block = child.alloc(size).unwrap();
        // SAFETY: the block is in use and holds `size` bytes.
        unsafe { stamp(block, size, index) };
        word.store(hand_off(shm, block) as u64 + 1, Ordering::Release);
    }
}

/// Checks and frees the blocks `produce` handed off, each once, and checks that a second free
/// of each is refused.
fn consume(shm: &ShmPool, mailbox: &[AtomicU64]) {
    for (index, word) in mailbox.iter().enumerate() {
        let offset = word.swap(0, Ordering::Acquire);
        assert_ne!(offset, 0, "block {index} never arrived");
        let block = shm.ptr_at(offset as usize - 1).unwrap();
        // SAFETY: the producer stamped the block before handing it off.
        assert!(unsafe { has_stamp(block, 16 + index % 200, index) }, "block {index} changed");
        try_free(shm, block).unwrap();
        // Refused as not handed off, or as not in use once its chunk went back with it.
        let again = try_free(shm, block);
        let refused = matches!(again, Err(ShmError::Free(_) | ShmError::NotHandedOff { .. }));
        assert!(refused, "block {index} freed twice: {again:?}");
    }
}

/// A process that dies holding the lock, with handed-off blocks out and scratch of its own: the
/// next process to take the lock gives its chunks back without anybody calling `reclaim_dead`,
/// but for the chunks the handed-off blocks hold, which wait, intact, for their last free.
#[test]
fn a_process_that_dies_holding_the_lock_has_its_chunks_reclaimed_by_the_next_lock() {
    let _serial = serial();
    const BLOCKS: usize = 300;
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(BLOCKS + 1);
    let mut producer = fork(|| {
        let child = shm.child();
        let _scratch: Vec<_> = (0..40).map(|_| child.alloc(8000).unwrap()).collect();
        produce(&shm, &child, &mailbox[1..]);
        let guard = shm.lock().unwrap();
        core::mem::forget(guard);
        mailbox[0].store(1, Ordering::Release);
        kill_self()
    });
    await_word(&mailbox[0]);
    assert_eq!(producer.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    let before = shm.stats().unwrap();
    assert_eq!(before.lock_takeovers, 1, "the stats took the lock over");
    assert_eq!(before.reclaimed_processes, 1, "and reclaimed the dead process's chunks");
    assert!(before.lent_bytes > 0, "the handed-off blocks' chunks wait");
    assert!(before.lent_bytes < 40 * 8000, "the scratch came back: {}", before.lent_bytes);
    assert_eq!(shm.reclaim_dead().unwrap(), Default::default(), "nothing left to reclaim");
    shm.check().unwrap();
    consume(&shm, &mailbox[1..]);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0, "the orphans went back with their last block");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A live producer's chunks, whose blocks other processes free while a third process dies
/// holding the lock: the takeover's reclaim must not touch the living, no free is lost or
/// counted twice (the producer serves as many blocks again from what came back, with no new
/// chunk), and no block is handed out while a consumer still holds it.
#[test]
fn reclaims_while_blocks_cross_processes_leave_the_living_alone_and_lose_no_free() {
    let _serial = serial();
    const BLOCKS: usize = 1000;
    const CONSUMERS: usize = 4;
    let shm = ShmPool::new(16 * MIB).unwrap();
    let start = shm.available();
    // 0: batch out; 1: consumers done (count); 2: producer done; 3: lent bytes; then offsets.
    let mailbox = SharedWords::<AtomicU64>::new(4 + BLOCKS);
    let mut producer = fork(|| {
        let child = shm.child();
        let mine: Vec<_> = (0..100).map(|_| child.alloc(300).unwrap()).collect();
        for (seed, &block) in mine.iter().enumerate() {
            // SAFETY: an in-use block of 300 bytes of this process's.
            unsafe { stamp(block, 300, seed + 7) };
        }
        produce(&shm, &child, &mailbox[4..]);
        let lent = shm.stats().unwrap().lent_bytes;
        mailbox[3].store(lent as u64, Ordering::Release);
        mailbox[0].store(1, Ordering::Release);
        // Allocate while the consumers free: blocks come back as they are freed, and none may
        // be one a consumer still reads (it checks its stamp before the free).
        let mut again = Vec::new();
        while mailbox[1].load(Ordering::Acquire) < CONSUMERS as u64 {
            if again.len() < BLOCKS {
                let block = child.alloc(16).unwrap();
                // SAFETY: an in-use block of 16 bytes of this process's.
                unsafe { block.as_ptr().write_bytes(0xee, 16) };
                again.push(block);
            }
        }
        while again.len() < BLOCKS {
            again.push(child.alloc(16).unwrap());
        }
        for (seed, &block) in mine.iter().enumerate() {
            // SAFETY: as above, read only.
            assert!(unsafe { has_stamp(block, 300, seed + 7) }, "the reclaim took block {seed}");
        }
        let mut all: Vec<_> = again.iter().map(|b| b.as_ptr().addr()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), BLOCKS, "a block handed out twice");
        assert!(
            shm.stats().unwrap().lent_bytes <= lent + CHUNK_SIZE,
            "the freed blocks served again, not new chunks"
        );
        mailbox[2].store(1, Ordering::Release);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    await_word(&mailbox[0]);
    let consumers: Vec<Child> = (0..CONSUMERS)
        .map(|part| {
            let (shm, mailbox) = (&shm, &mailbox);
            fork(move || {
                let share = BLOCKS / CONSUMERS;
                let words = &mailbox[4 + part * share..4 + (part + 1) * share];
                for (index, word) in words.iter().enumerate() {
                    let index = part * share + index;
                    let offset = word.swap(0, Ordering::Acquire) - 1;
                    let block = shm.ptr_at(offset as usize).unwrap();
                    // SAFETY: stamped by the producer before the hand-off.
                    assert!(unsafe { has_stamp(block, 16 + index % 200, index) }, "{index}");
                    try_free(shm, block).unwrap();
                }
                mailbox[1].fetch_add(1, Ordering::AcqRel);
            })
        })
        .collect();
    // Meanwhile a process dies holding the lock, and the next lock reclaims.
    let mut dying = fork(|| {
        let child = shm.child();
        let _block = child.alloc(64).unwrap();
        core::mem::forget(shm.lock().unwrap());
        kill_self()
    });
    assert_eq!(dying.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    let report = shm.reclaim_dead().unwrap();
    assert!(report.processes <= 1, "{report:?}");
    for consumer in consumers {
        consumer.succeeds("a consumer");
    }
    await_word(&mailbox[2]);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.reclaimed_processes, 1, "the dying process alone");
    assert_eq!(stats.reclaimed_bytes, CHUNK_SIZE as u64);
    assert!(stats.lent_bytes >= mailbox[3].load(Ordering::Acquire) as usize);
    producer.kill_dead();
    assert_eq!(shm.reclaim_dead().unwrap().processes, 1);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0, "nothing handed off was out");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A producer drops its child while several processes free its handed-off blocks at once: the
/// chunks go back exactly once each, whichever of the drop and the last free comes first.
#[test]
fn a_child_dropped_while_others_free_its_blocks_gives_every_chunk_back_once() {
    let _serial = serial();
    const BLOCKS: usize = 600;
    const CONSUMERS: usize = 3;
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    for round in 0..5 {
        // 0: batch out; 1: go; then offsets.
        let mailbox = SharedWords::<AtomicU64>::new(2 + BLOCKS);
        let producer = fork(|| {
            let child = shm.child();
            produce(&shm, &child, &mailbox[2..]);
            mailbox[0].store(1, Ordering::Release);
            await_word(&mailbox[1]);
            for _ in 0..round * 50 {
                std::hint::spin_loop();
            }
            drop(child);
        });
        await_word(&mailbox[0]);
        let consumers: Vec<Child> = (0..CONSUMERS)
            .map(|part| {
                let (shm, mailbox) = (&shm, &mailbox);
                fork(move || {
                    await_word(&mailbox[1]);
                    for index in (part..BLOCKS).step_by(CONSUMERS) {
                        let offset = mailbox[2 + index].swap(0, Ordering::Acquire) - 1;
                        let block = shm.ptr_at(offset as usize).unwrap();
                        // SAFETY: stamped by the producer before the hand-off.
                        assert!(unsafe { has_stamp(block, 16 + index % 200, index) });
                        try_free(shm, block).unwrap();
                    }
                })
            })
            .collect();
        mailbox[1].store(1, Ordering::Release);
        producer.succeeds("the producer");
        for consumer in consumers {
            consumer.succeeds("a consumer");
        }
        assert_eq!(shm.stats().unwrap().lent_bytes, 0, "round {round}");
        assert_eq!(shm.available(), start, "round {round}");
        shm.check().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes at every step (`RUSTFLAGS="--cfg melon_failpoints"`)
// ---------------------------------------------------------------------------------------------

/// A process killed at any logged step of a child-pool operation loses only what it owned: the
/// pool stays usable, every handed-off block stays intact and is freed exactly once, and in the
/// end every byte is back.
#[cfg(melon_failpoints)]
mod crash {
    use super::*;
    use melon_alloc_shm::failpoint;

    const BLOCKS: usize = 60;

    /// Runs `one(k)` for k = 1, 2, ... until the operation completes without a kill (`one`
    /// returns `true`); it must have been killed at three steps at least.
    fn at_each_step(what: &str, mut one: impl FnMut(u64) -> bool) {
        for k in 1..1000 {
            if one(k) {
                assert!(k > 3, "{what}: only {} fail points", k - 1);
                return;
            }
        }
        panic!("{what} never completed");
    }

    /// Whether the victim was killed (`false`) or completed (`true`).
    fn completed(mut victim: Child, what: &str, k: u64) -> bool {
        match victim.wait(CHILD_LIMIT) {
            Exit::Code(0) => true,
            Exit::Signal(libc::SIGKILL) => false,
            other => panic!("{what} at {k}: {other:?}"),
        }
    }

    /// After the kill: the pool is consistent, the blocks come back intact, each freed once,
    /// and then the pool holds what it held at `start`.
    fn survives(shm: &ShmPool, start: usize, mailbox: &[AtomicU64], what: &str, k: u64) {
        // The lock is taken over, if the victim died holding it, and the dead reclaimed.
        let _ = shm.reclaim_dead().unwrap();
        shm.check().unwrap_or_else(|error| panic!("{what} at {k}: {error:?}"));
        consume(shm, mailbox);
        let _ = shm.reclaim_dead().unwrap();
        assert_eq!(shm.stats().unwrap().lent_bytes, 0, "{what} at {k}");
        assert_eq!(shm.available(), start, "{what} at {k}");
        shm.check().unwrap_or_else(|error| panic!("{what} at {k}: {error:?}"));
        // And it still serves a child.
        let child = shm.child();
        assert!(child.alloc(64).is_some(), "{what} at {k}");
    }

    /// Killed at each step of dropping a child whose chunks hold handed-off blocks: its other
    /// chunks go back, those wait as orphans, whatever step the drop reached.
    #[test]
    fn a_producer_killed_while_dropping_a_child_with_blocks_out_loses_nothing_else() {
        let _serial = serial();
        at_each_step("drop", |k| {
            let shm = ShmPool::new(4 * MIB).unwrap();
            let start = shm.available();
            let mailbox = SharedWords::<AtomicU64>::new(BLOCKS + 1);
            let victim = fork(|| {
                let child = shm.child();
                let scratch: Vec<_> = (0..20).map(|_| child.alloc(5000).unwrap()).collect();
                produce(&shm, &child, &mailbox[1..]);
                for block in scratch {
                    // SAFETY: each block came from `child` and is freed once.
                    unsafe { child.free(block) };
                }
                mailbox[0].store(1, Ordering::Release);
                failpoint::arm(k);
                drop(child);
                failpoint::arm(0);
            });
            let done = completed(victim, "drop", k);
            assert_eq!(await_word(&mailbox[0]), 1);
            survives(&shm, start, &mailbox[1..], "drop", k);
            done
        });
    }

    /// A dead producer's chunks, some of them holding handed-off blocks, reclaimed by a process
    /// killed at its `k`-th step; then the next lock finishes the reclaim. Returns whether the
    /// reclaimer completed, and the bytes lent before the reclaim and reclaimed after it.
    fn reclaim_killed_at(k: u64) -> bool {
        let shm = ShmPool::new(4 * MIB).unwrap();
        let start = shm.available();
        let mailbox = SharedWords::<AtomicU64>::new(BLOCKS + 1);
        let mut producer = fork(|| {
            let child = shm.child();
            let _scratch: Vec<_> = (0..20).map(|_| child.alloc(5000).unwrap()).collect();
            produce(&shm, &child, &mailbox[1..]);
            mailbox[0].store(1, Ordering::Release);
            harness::idle_until_killed()
        });
        await_word(&mailbox[0]);
        producer.kill_dead();
        let victim = fork(|| {
            failpoint::arm(k);
            let report = shm.reclaim_dead().unwrap();
            failpoint::arm(0);
            assert_eq!(report.processes, 1);
        });
        let done = completed(victim, "reclaim", k);
        let _ = shm.reclaim_dead().unwrap();
        survives(&shm, start, &mailbox[1..], "reclaim", k);
        done
    }

    /// Killed at each step of reclaiming a dead producer's chunks, some of them holding
    /// handed-off blocks: the next process to take the lock finishes the reclaim.
    #[test]
    fn a_reclaimer_killed_at_any_step_leaves_the_reclaim_to_the_next_lock() {
        let _serial = serial();
        at_each_step("reclaim", reclaim_killed_at);
    }

    /// Killed at each step of giving back an orphan whose last block it freed: the orphan, with
    /// nothing out, goes back with the next reclaim, once.
    #[test]
    fn the_last_free_of_an_orphan_killed_at_any_step_leaves_it_to_the_next_reclaim() {
        let _serial = serial();
        at_each_step("last free", |k| {
            let shm = ShmPool::new(4 * MIB).unwrap();
            let start = shm.available();
            let mailbox = SharedWords::<AtomicU64>::new(2);
            fork(|| {
                let child = shm.child();
                let _scratch: Vec<_> = (0..20).map(|_| child.alloc(5000).unwrap()).collect();
                produce(&shm, &child, &mailbox[1..]);
            })
            .succeeds("the producer");
            // Its child was dropped as it ended: only the orphan is left, and its empty slot.
            assert_eq!(shm.reclaim_dead().unwrap().processes, 1);
            assert_eq!(shm.stats().unwrap().lent_bytes, CHUNK_SIZE, "one orphan");
            let offset = mailbox[1].load(Ordering::Acquire) as usize - 1;
            let block = shm.ptr_at(offset).unwrap();
            let victim = fork(|| {
                failpoint::arm(k);
                try_free(&shm, block).unwrap();
                failpoint::arm(0);
            });
            let done = completed(victim, "last free", k);
            let _ = shm.reclaim_dead().unwrap();
            assert_eq!(shm.stats().unwrap().lent_bytes, 0, "last free at {k}");
            assert_eq!(shm.available(), start, "last free at {k}");
            assert!(matches!(try_free(&shm, block), Err(ShmError::Free(_))), "freed twice");
            shm.check().unwrap();
            done
        });
    }
}
