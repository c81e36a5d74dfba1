//! What a collection sees at its pool's limit: `try_reserve` returns an error, `push` aborts
//! through `handle_alloc_error`, and a `Vec` that grows one push at a time stops at half the
//! limit or thereabouts, since its old and new buffers are both held while it moves.

use allocator_api2::vec::Vec as PoolVec;
use melon_alloc_core::CHUNK_SIZE;
use melon_alloc_heap::HeapPool;

/// The limit of the pools here: a power of two, so that a doubling `Vec`'s buffers land on
/// exact halves of it.
const LIMIT: usize = if cfg!(miri) { 16 * CHUNK_SIZE } else { 64 * CHUNK_SIZE };

#[test]
fn try_reserve_past_the_limit_is_an_error_and_changes_nothing() {
    let pool = HeapPool::with_limit(LIMIT);
    let mut bytes = PoolVec::<u8, _>::new_in(&*pool);
    bytes.try_reserve_exact(LIMIT / 2).unwrap();
    let capacity = bytes.capacity();
    assert!(bytes.try_reserve_exact(LIMIT).is_err());
    assert_eq!(bytes.capacity(), capacity);
    bytes.push(1);
    assert_eq!(bytes, [1]);
    pool.check().unwrap();
}

#[test]
fn a_vec_grown_by_pushes_stops_at_half_the_limit() {
    let pool = HeapPool::with_limit(LIMIT);
    let mut bytes = PoolVec::<u8, _>::new_in(&*pool);
    // A kibibyte at a time, to keep Miri's run short; the `Vec` still doubles its buffer.
    let piece = [0x5A_u8; 1024];
    while bytes.try_reserve(piece.len()).is_ok() {
        bytes.extend_from_slice(&piece);
    }
    // The last growth needed the old buffer (half the limit) and a new one (the whole limit)
    // at once.
    assert_eq!(bytes.len(), LIMIT / 2);
    assert_eq!(pool.stats().live_blocks, 1);
    drop(bytes);
    pool.check().unwrap();

    // Asked for up front, three quarters of the limit fit in one buffer.
    let up_front = PoolVec::<u8, _>::with_capacity_in(LIMIT / 4 * 3, &*pool);
    assert_eq!(up_front.capacity(), LIMIT / 4 * 3);
}

/// How far a `Vec` grown 4 KiB at a time gets in a pool limited to `limit`.
fn grown_by_pushes(limit: usize) -> usize {
    let pool = HeapPool::with_limit(limit);
    let mut bytes = PoolVec::<u8, _>::new_in(&*pool);
    while bytes.try_reserve(4096).is_ok() {
        bytes.extend_from_slice(&[0; 4096]);
    }
    bytes.len()
}

#[test]
// Each limit's `Vec` writes half of it: too long a run under Miri, which the test above covers.
#[cfg(not(miri))]
fn exactly_half_for_every_power_of_two_from_two_chunks_up_and_a_quarter_of_one_chunk() {
    for shift in 15..=26 {
        assert_eq!(grown_by_pushes(1 << shift), 1 << (shift - 1), "a limit of 2^{shift}");
    }
    // Its 4 KiB buffer holds a chunk of its own class, so the 8 KiB one does not fit beside it.
    assert_eq!(grown_by_pushes(CHUNK_SIZE), CHUNK_SIZE / 4);
}

#[test]
// As above.
#[cfg(not(miri))]
fn between_a_third_and_two_thirds_for_a_limit_between_two_powers_of_two() {
    // 2 MiB and 1 MiB, with a header each, pass 3 MiB.
    assert_eq!(grown_by_pushes(3 << 20), 1 << 20);
    // 64 KiB and 32 KiB fit in 100 KiB.
    assert_eq!(grown_by_pushes(100 << 10), 64 << 10);
}

/// How far a `Vec` grown a byte at a time gets in `pool`.
fn grown_by_bytes(pool: &melon_alloc_heap::Pool) -> usize {
    let mut bytes = PoolVec::<u8, _>::new_in(pool);
    while bytes.try_reserve(1).is_ok() {
        bytes.push(0);
    }
    bytes.len()
}

#[test]
fn a_one_chunk_limit_holds_the_classes_of_one_chunk() {
    // The first buffer's class takes the chunk; the next class finds no room.
    assert_eq!(grown_by_bytes(&HeapPool::with_limit(CHUNK_SIZE)), 16);
    // A child's classes take pages of the chunk, which an emptied buffer gives back.
    let parent = HeapPool::new();
    assert_eq!(grown_by_bytes(&parent.child_with_limit(CHUNK_SIZE)), 2048);
}

#[cfg(all(target_os = "linux", not(miri)))]
#[path = "support/rerun.rs"]
mod rerun;

/// Set in the environment of the second run of this test binary, which pushes past the limit.
const PUSH_PAST_THE_LIMIT: &str = "MELON_ALLOC_PUSH_PAST_THE_LIMIT";

/// The abort ends the process, so the test binary runs itself again, filtered to this test, and
/// checks how that run died.
#[test]
#[cfg(target_os = "linux")]
// Miri cannot start a process, so the test is not built there.
#[cfg(not(miri))]
fn push_past_the_limit_aborts_through_handle_alloc_error() {
    if std::env::var_os(PUSH_PAST_THE_LIMIT).is_some() {
        let pool = HeapPool::with_limit(4 * CHUNK_SIZE);
        let mut bytes = PoolVec::<u8, _>::new_in(&*pool);
        loop {
            bytes.push(0);
        }
    }
    let (signal, stderr) = rerun::rerun(
        "push_past_the_limit_aborts_through_handle_alloc_error",
        PUSH_PAST_THE_LIMIT,
        "1",
    );
    // SIGABRT is signal 6 on Linux.
    assert_eq!(signal, Some(6), "{stderr}");
    // The buffer doubles from 8 bytes; 64 KiB is the first that a limit of four chunks cannot
    // hold, a large block's header and the old buffer taking their share.
    assert!(stderr.contains("memory allocation of 65536 bytes failed"), "{stderr}");
}
