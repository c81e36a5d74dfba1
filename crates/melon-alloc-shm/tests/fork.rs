//! Shared pools used by several processes: forked children, siblings, an unrelated process that
//! attaches by descriptor, processes on both sides of a pid namespace boundary, a lock holder
//! stopped by SIGSTOP, a pool that grows under processes that did not grow it, processes killed
//! at random moments or, in a build with `--cfg melon_failpoints`, at every step of an operation
//! (a growth among them) while they hold the lock.
//!
//! The cases run under the harness in `harness/mod.rs`, one after another in a process with a
//! single thread, so that forking is safe; it says how children report and how to pick cases.
//! Started with `--attach-child` or `--attach-growing-child` first, the binary is instead the
//! unrelated process that a case starts to attach to its pool.

mod harness;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::catch_unwind;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::{
    after_fork, await_word, file_of, fork, idle_until_killed, open_descriptors, run_cases, Case,
    Child, Exit, SharedWords, CHILD_LIMIT, FAILPOINTS_NOTE,
};
use melon_alloc_shm::plumbing::free_shared;
use melon_alloc_shm::{ShmError, ShmMutex, ShmPool};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
const GIB: usize = 1 << 30;

/// How long a process may wait for a lock whose holder died: a waiter asks every 5 ms whether the
/// holder lives, so this bound only proves that nothing hangs, on however busy a machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

/// Operations per hammer process.
const HAMMER_OPS: u64 = 100_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--attach-child") => std::process::exit(attach_child(&args[1..])),
        Some("--attach-growing-child") => std::process::exit(attach_growing_child(&args[1..])),
        _ => {}
    }
    // Only the build with fail points adds cases to the list.
    #[cfg_attr(not(melon_failpoints), allow(unused_mut))]
    let mut cases: Vec<Case> = vec![
        ("parent_writes_child_reads_and_frees", parent_writes_child_reads_and_frees),
        ("child_allocates_parent_frees", child_allocates_parent_frees),
        ("collections_cross_a_fork", collections_cross_a_fork),
        ("siblings_share_one_pool", siblings_share_one_pool),
        ("attach_from_an_unrelated_process", attach_from_an_unrelated_process),
        ("an_attached_process_sees_the_pool_grow", an_attached_process_sees_the_pool_grow),
        ("child_pools_belong_to_one_process", child_pools_belong_to_one_process),
        (
            "orphans_of_dead_producers_and_consumers_come_back_on_demand",
            orphans_of_dead_producers_and_consumers_come_back_on_demand,
        ),
        (
            "pools_made_from_a_child_pool_belong_to_one_process",
            pools_made_from_a_child_pool_belong_to_one_process,
        ),
        (
            "w1_a_mapping_the_system_refuses_is_an_error",
            w1_a_mapping_the_system_refuses_is_an_error,
        ),
        (
            "a_growth_the_system_refuses_is_out_of_memory",
            a_growth_the_system_refuses_is_out_of_memory,
        ),
        ("w7_a_dead_lock_holder_is_taken_over", w7_a_dead_lock_holder_is_taken_over),
        (
            "a_worker_that_closes_every_descriptor_after_first_use_is_not_taken_for_dead",
            a_worker_that_closes_every_descriptor_after_first_use_is_not_taken_for_dead,
        ),
        (
            "the_pages_that_keep_a_processs_locks_are_its_own_and_go_with_its_handle",
            the_pages_that_keep_a_processs_locks_are_its_own_and_go_with_its_handle,
        ),
        (
            "numbers_a_program_closes_after_first_use_and_reuses_stay_the_programs",
            numbers_a_program_closes_after_first_use_and_reuses_stay_the_programs,
        ),
        (
            "a_named_pool_on_overlayfs_tells_a_live_worker_from_a_dead_one",
            a_named_pool_on_overlayfs_tells_a_live_worker_from_a_dead_one,
        ),
        (
            "on_overlayfs_a_worker_that_closes_its_descriptors_looks_dead",
            on_overlayfs_a_worker_that_closes_its_descriptors_looks_dead,
        ),
        (
            "a_guard_copied_by_a_fork_is_not_the_childs_to_release",
            a_guard_copied_by_a_fork_is_not_the_childs_to_release,
        ),
        (
            "a_worker_without_descriptors_to_spare_uses_those_its_parent_opened",
            a_worker_without_descriptors_to_spare_uses_those_its_parent_opened,
        ),
        (
            "a_process_without_descriptors_to_spare_is_refused_until_it_has_one",
            a_process_without_descriptors_to_spare_is_refused_until_it_has_one,
        ),
        (
            "a_process_whose_pool_descriptor_names_another_file_takes_no_lock",
            a_process_whose_pool_descriptor_names_another_file_takes_no_lock,
        ),
        (
            "a_descriptor_number_reused_after_first_use_grows_and_reclaims_nothing",
            a_descriptor_number_reused_after_first_use_grows_and_reclaims_nothing,
        ),
        (
            "a_mutex_guard_copied_by_a_fork_releases_nothing_in_the_child",
            a_mutex_guard_copied_by_a_fork_releases_nothing_in_the_child,
        ),
        (
            "a_pool_dropped_under_a_forgotten_mutex_guard_is_written_no_more",
            a_pool_dropped_under_a_forgotten_mutex_guard_is_written_no_more,
        ),
        (
            "a_collection_dropped_by_the_holder_of_the_lock_keeps_its_buffer",
            a_collection_dropped_by_the_holder_of_the_lock_keeps_its_buffer,
        ),
        ("hammer", hammer),
        ("hammer_grows_a_pool", hammer_grows_a_pool),
        ("hammer_with_random_kills", hammer_with_random_kills),
        ("hammer_across_pid_namespaces", hammer_across_pid_namespaces),
        ("a_stopped_holder_makes_timed_locks_give_up", a_stopped_holder_makes_timed_locks_give_up),
        ("a_raw_fork_is_a_new_process_to_the_pool", a_raw_fork_is_a_new_process_to_the_pool),
        ("dead_workers_chunks_come_back", dead_workers_chunks_come_back),
        (
            "a_dead_process_that_held_only_a_slot_is_counted",
            a_dead_process_that_held_only_a_slot_is_counted,
        ),
        ("a_live_process_keeps_its_chunks", a_live_process_keeps_its_chunks),
        (
            "a_master_with_many_pools_is_taken_over_while_its_worker_lives",
            a_master_with_many_pools_is_taken_over_while_its_worker_lives,
        ),
        (
            "a_dead_workers_forked_child_does_not_keep_its_chunks",
            a_dead_workers_forked_child_does_not_keep_its_chunks,
        ),
        (
            "a_worker_in_another_pid_namespace_keeps_its_chunks_until_it_dies",
            a_worker_in_another_pid_namespace_keeps_its_chunks_until_it_dies,
        ),
        (
            "a_mutex_held_in_another_pid_namespace_is_handed_on_only_when_its_holder_dies",
            a_mutex_held_in_another_pid_namespace_is_handed_on_only_when_its_holder_dies,
        ),
        (
            "past_a_full_owner_table_chunks_are_lent_but_not_reclaimed",
            past_a_full_owner_table_chunks_are_lent_but_not_reclaimed,
        ),
        (
            "a_claim_in_a_full_table_of_the_dead_reclaims_them",
            a_claim_in_a_full_table_of_the_dead_reclaims_them,
        ),
        (
            "handed_off_blocks_cross_processes_and_outlive_their_producer",
            handed_off_blocks_cross_processes_and_outlive_their_producer,
        ),
        (
            "a_forked_process_keeps_its_own_slots_whatever_descriptors_it_reuses",
            a_forked_process_keeps_its_own_slots_whatever_descriptors_it_reuses,
        ),
        (
            "a_forked_process_leaves_its_parents_failed_returns_alone",
            a_forked_process_leaves_its_parents_failed_returns_alone,
        ),
        (
            "a_worker_that_locks_before_it_loses_the_file_is_taken_over_when_it_dies",
            a_worker_that_locks_before_it_loses_the_file_is_taken_over_when_it_dies,
        ),
        (
            "a_worker_that_loses_the_file_right_after_the_fork_is_taken_over_and_reclaimed",
            a_worker_that_loses_the_file_right_after_the_fork_is_taken_over_and_reclaimed,
        ),
        (
            "a_fork_leaves_the_parents_descriptors_as_they_were",
            a_fork_leaves_the_parents_descriptors_as_they_were,
        ),
        (
            "a_fork_while_a_thread_frees_by_pointer_lets_the_new_process_make_pools",
            a_fork_while_a_thread_frees_by_pointer_lets_the_new_process_make_pools,
        ),
        (
            "a_process_forked_while_its_parent_makes_identities_inherits_none_of_them",
            a_process_forked_while_its_parent_makes_identities_inherits_none_of_them,
        ),
        (
            "closed_spare_numbers_given_back_to_new_spares_stay_the_new_processs",
            closed_spare_numbers_given_back_to_new_spares_stay_the_new_processs,
        ),
    ];
    #[cfg(melon_failpoints)]
    cases.extend(crash::CASES);
    run_cases(cases, FAILPOINTS_NOTE)
}

/// Forks with the raw system call, which runs no `pthread_atfork` handler (as glibc's `_Fork`,
/// or `clone`, would not): the child runs `body` and exits with status 0, or 101 if it panics.
fn raw_fork(body: impl FnOnce()) -> Child {
    let _ = std::io::stdout().flush();
    // SAFETY: this process has a single thread, so the child, a copy of it, may run any code;
    // the C library's own caches in it (its thread id among them) are its parent's, which is
    // what the case is about.
    let pid = unsafe { libc::syscall(libc::SYS_fork) };
    after_fork(pid as libc::pid_t, body)
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

/// The byte at `index` of the pattern for `seed`.
fn pattern_byte(seed: u64, index: usize) -> u8 {
    (seed.wrapping_mul(131).wrapping_add(index as u64 * 7) % 251) as u8
}

/// Fills `len` bytes of a block with the pattern for `seed`.
///
/// # Safety
/// `block` holds at least `len` bytes that nothing else accesses meanwhile.
unsafe fn stamp(block: NonNull<u8>, len: usize, seed: u64) {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) };
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern_byte(seed, index);
    }
}

/// Whether the first `len` bytes of a block hold the pattern for `seed`.
///
/// # Safety
/// `block` holds at least `len` bytes that nothing writes meanwhile.
unsafe fn has_stamp(block: NonNull<u8>, len: usize, seed: u64) -> bool {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), len) };
    bytes.iter().enumerate().all(|(index, &byte)| byte == pattern_byte(seed, index))
}

/// A small, fast pseudo-random generator (SplitMix64): the tests need variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A seed that differs from run to run, printed so that a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("MELON_FORK_SEED").ok().and_then(|seed| seed.parse().ok());
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        now.as_nanos() as u64
    });
    println!("  seed {seed} (set MELON_FORK_SEED to replay)");
    seed
}

// ---------------------------------------------------------------------------------------------
// Sharing between processes
// ---------------------------------------------------------------------------------------------

fn parent_writes_child_reads_and_frees() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let small = shm.alloc(1000).unwrap();
    let large = shm.alloc(100_000).unwrap();
    // SAFETY: both blocks are in use and hold the stamped lengths.
    unsafe {
        stamp(small, 1000, 1);
        stamp(large, 100_000, 2);
    }
    let offsets = [shm.offset_of(small).unwrap(), shm.offset_of(large).unwrap()];
    fork(|| {
        for (offset, len, seed) in [(offsets[0], 1000, 1), (offsets[1], 100_000, 2)] {
            let block = shm.ptr_at(offset).unwrap();
            // SAFETY: the parent's block, handed over to this process.
            assert!(unsafe { has_stamp(block, len, seed) }, "the child sees what the parent wrote");
            // SAFETY: the block is in use; the parent no longer touches it.
            unsafe { shm.try_free(block) }.unwrap();
        }
        assert_eq!(shm.stats().unwrap().live_blocks, 0);
    })
    .succeeds("the child reads and frees the parent's blocks");
    assert_eq!(shm.stats().unwrap().live_blocks, 0, "the child's frees are seen by the parent");
    // SAFETY: the block was freed by the child, so the call only inspects it.
    assert!(unsafe { shm.try_free(small) }.is_err(), "a double free across processes");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

fn child_allocates_parent_frees() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(4);
    fork(|| {
        let pid = u64::from(std::process::id());
        for (slot, size) in [(0, 5000), (2, 300_000)] {
            let block = shm.alloc(size).unwrap();
            // SAFETY: the block was just handed to this process and holds `size` bytes.
            unsafe { stamp(block, size, pid + size as u64) };
            mailbox[slot + 1].store(pid, Ordering::Relaxed);
            mailbox[slot].store(shm.offset_of(block).unwrap() as u64, Ordering::Release);
        }
    })
    .succeeds("the child allocates");
    assert_eq!(shm.stats().unwrap().live_blocks, 2);
    for (slot, size) in [(0, 5000), (2, 300_000)] {
        let offset = mailbox[slot].load(Ordering::Acquire) as usize;
        let pid = mailbox[slot + 1].load(Ordering::Relaxed);
        let block = shm.ptr_at(offset).unwrap();
        assert!(shm.usable_size(block).unwrap() >= size);
        // SAFETY: the child's block, which the child left to this process.
        assert!(unsafe { has_stamp(block, size, pid + size as u64) });
        // SAFETY: as above; freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A collection whose buffer is in the pool, read in a forked child, and one the child builds
/// and hands to the parent, which frees it.
fn collections_cross_a_fork() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let mut squares = allocator_api2::vec::Vec::new_in(&shm);
    squares.extend((0..10_000u64).map(|n| n * n));
    let handover = shm.alloc_zeroed(16).unwrap().cast::<AtomicU64>();
    // SAFETY: the block holds two zeroed words, used only as atomics from here on.
    let (pointer_word, length_word) = unsafe { (handover.as_ref(), &*handover.as_ptr().add(1)) };
    fork(|| {
        assert!(squares.iter().enumerate().all(|(n, &square)| square == (n * n) as u64));
        let mut cubes = allocator_api2::vec::Vec::with_capacity_in(5_000, &shm);
        cubes.extend((0..5_000u64).map(|n| n * n * n));
        let offset = shm.offset_of(core::ptr::NonNull::from(&cubes[0]).cast()).unwrap();
        length_word.store(cubes.len() as u64, Ordering::Relaxed);
        pointer_word.store(offset as u64, Ordering::Release);
        // The parent owns the buffer from here on.
        core::mem::forget(cubes);
    })
    .succeeds("the child reads the parent's vector and builds one");
    let offset = pointer_word.load(Ordering::Acquire) as usize;
    let len = length_word.load(Ordering::Relaxed) as usize;
    let start_of_cubes = shm.ptr_at(offset).unwrap().cast::<u64>();
    // SAFETY: the child's vector of `len` words with capacity `len`, allocated from `&shm` at the
    // same address in this process, and handed over.
    let cubes = unsafe {
        allocator_api2::vec::Vec::from_raw_parts_in(start_of_cubes.as_ptr(), len, len, &shm)
    };
    assert!(cubes.iter().enumerate().all(|(n, &cube)| cube == (n * n * n) as u64));
    drop((cubes, squares));
    // SAFETY: the hand-over block is in use and no longer read.
    unsafe { shm.try_free(handover.cast()) }.unwrap();
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

fn siblings_share_one_pool() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(2);
    // The reader starts first, so it really waits for its sibling.
    let reader = fork(|| {
        let offset = await_word(&mailbox[0]) as usize;
        let seed = await_word(&mailbox[1]);
        let block = shm.ptr_at(offset).unwrap();
        // SAFETY: the sibling's block, handed over to this process.
        assert!(unsafe { has_stamp(block, 700, seed) }, "the reader sees what the writer wrote");
        // SAFETY: as above; freed once.
        unsafe { shm.try_free(block) }.unwrap();
    });
    let writer = fork(|| {
        let block = shm.alloc(700).unwrap();
        let seed = u64::from(std::process::id());
        // SAFETY: the block was just handed to this process.
        unsafe { stamp(block, 700, seed) };
        mailbox[1].store(seed, Ordering::Relaxed);
        mailbox[0].store(shm.offset_of(block).unwrap() as u64, Ordering::Release);
    });
    writer.succeeds("the writer allocates and publishes");
    reader.succeeds("the reader reads and frees");
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// The layout of the block through which the parent and the attached process talk: a message
/// from the parent, then the offset of the reply.
const MESSAGE_LEN: usize = 256;
const MESSAGE_SEED: u64 = 77;
const REPLY_LEN: usize = 500;
const REPLY_SEED: u64 = 78;

fn attach_from_an_unrelated_process() {
    let shm = ShmPool::memfd("melon-fork-attach", 4 * MIB).unwrap();
    let start = shm.available();
    let block = shm.alloc(MESSAGE_LEN + 8).unwrap();
    // SAFETY: the block is in use and holds the message and the reply slot.
    unsafe { stamp(block, MESSAGE_LEN, MESSAGE_SEED) };
    let slot = block.as_ptr().wrapping_add(MESSAGE_LEN).cast::<AtomicU64>();
    // SAFETY: the slot lies in the block, aligned to 8 (blocks are aligned to 16 and the message
    // is a multiple of 8), and is only accessed atomically from now on.
    let slot = unsafe { &*slot };
    slot.store(0, Ordering::Relaxed);
    // The pool's descriptor is close-on-exec; a duplicate is not, so the new process inherits
    // it under that number.
    // SAFETY: `dup` of a descriptor this process holds open makes a new one, owned here.
    let inherited = unsafe { libc::dup(shm.as_fd().as_raw_fd()) };
    assert!(inherited >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just made and nothing else owns it.
    let inherited = unsafe { OwnedFd::from_raw_fd(inherited) };
    let base = shm.ptr_at(0).unwrap().as_ptr().addr();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--attach-child")
        .arg(inherited.as_raw_fd().to_string())
        .arg(shm.offset_of(block).unwrap().to_string())
        .arg(base.to_string())
        .arg(shm.capacity().to_string())
        .status()
        .unwrap();
    drop(inherited);
    assert!(status.success(), "the attached process failed: {status}");
    let reply = shm.ptr_at(slot.load(Ordering::Acquire) as usize).unwrap();
    // SAFETY: the attached process's reply, left to this process.
    assert!(unsafe { has_stamp(reply, REPLY_LEN, REPLY_SEED) }, "the reply reads back");
    assert_eq!(shm.stats().unwrap().live_blocks, 2);
    // SAFETY: both blocks are in use and freed once.
    unsafe {
        shm.try_free(reply).unwrap();
        shm.try_free(block).unwrap();
    }
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// The attached process: maps the parent's pool somewhere else, reads the message, allocates,
/// frees and replies. Returns the exit code.
fn attach_child(args: &[String]) -> i32 {
    let outcome = catch_unwind(|| {
        let number = |index: usize| args[index].parse::<usize>().unwrap();
        let (fd, offset, parent_base, capacity) = (number(0), number(1), number(2), number(3));
        // Keep the parent's address range busy, so that the pool must map elsewhere and only
        // offsets can lead to the message. If something is there already, so much the better.
        // SAFETY: `MAP_FIXED_NOREPLACE` never replaces an existing mapping; the placeholder is
        // never accessed and lives until the process exits.
        unsafe {
            libc::mmap(
                core::ptr::without_provenance_mut(parent_base),
                capacity,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        // SAFETY: the descriptor was inherited from the parent, open, and owned by nothing else
        // in this process.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the parent made the pool with this same library.
        let shm = unsafe { ShmPool::attach(fd) }.unwrap();
        assert_eq!(shm.capacity(), capacity);
        assert_ne!(shm.ptr_at(0).unwrap().as_ptr().addr(), parent_base, "mapped elsewhere");
        shm.check().unwrap();
        let message = shm.ptr_at(offset).unwrap();
        // SAFETY: the parent's block, which it does not touch until this process exits.
        assert!(unsafe { has_stamp(message, MESSAGE_LEN, MESSAGE_SEED) }, "the message");
        let mut blocks = Vec::new();
        for size in (1..200).map(|i| i * 97) {
            blocks.push(shm.alloc(size).unwrap());
        }
        for block in blocks {
            // SAFETY: each block came from this pool and is freed once.
            unsafe { shm.try_free(block) }.unwrap();
        }
        let reply = shm.alloc(REPLY_LEN).unwrap();
        // SAFETY: the block was just handed to this process.
        unsafe { stamp(reply, REPLY_LEN, REPLY_SEED) };
        let slot = message.as_ptr().wrapping_add(MESSAGE_LEN).cast::<AtomicU64>();
        // SAFETY: the parent's reply slot, inside its block, accessed atomically.
        let slot = unsafe { &*slot };
        slot.store(shm.offset_of(reply).unwrap() as u64, Ordering::Release);
        shm.check().unwrap();
    });
    if outcome.is_ok() {
        0
    } else {
        101
    }
}

/// Words of the block through which the parent and an attached process follow a pool's growth:
/// the offset of each large block one of them allocated, by turn, in the order they are written.
const TURNS: usize = 3;
/// The bytes of each turn's block, each larger than the pool's initial capacity.
const TURN_LEN: usize = 3 * MIB;

/// The parent grows a pool before an unrelated process attaches to it, and again while it is
/// attached; the attached process reads both blocks through offsets alone, then grows the pool
/// itself, and the parent reads its block.
fn an_attached_process_sees_the_pool_grow() {
    let shm = ShmPool::builder()
        .name("melon-fork-grow")
        .capacity(MIB)
        .max_capacity(64 * MIB)
        .build()
        .unwrap();
    let start = shm.available();
    let words = shm.alloc(TURNS * 8).unwrap();
    // SAFETY: the block holds `TURNS` words, aligned to 16, accessed atomically from now on, and
    // lives until the end of the case.
    let turns = unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<AtomicU64>(), TURNS) };
    turns.iter().for_each(|turn| turn.store(0, Ordering::Relaxed));
    let turn = |index: usize| {
        let block = shm.alloc(TURN_LEN).expect("room after growing");
        // SAFETY: the block was just handed to this process and holds `TURN_LEN` bytes.
        unsafe { stamp(block, TURN_LEN, 90 + index as u64) };
        turns[index].store(shm.offset_of(block).unwrap() as u64, Ordering::Release);
    };
    turn(0);
    let attached_to = shm.capacity();
    // SAFETY: `dup` of a descriptor this process holds open makes a new one, owned here; unlike
    // the pool's, it is inherited across `exec`.
    let inherited = unsafe { OwnedFd::from_raw_fd(libc::dup(shm.as_fd().as_raw_fd())) };
    let mut process = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--attach-growing-child")
        .arg(inherited.as_raw_fd().to_string())
        .arg(shm.offset_of(words).unwrap().to_string())
        .arg(attached_to.to_string())
        .spawn()
        .unwrap();
    drop(inherited);
    turn(1);
    let status = process.wait().unwrap();
    assert!(status.success(), "the attached process failed: {status}");
    let theirs = turns[2].load(Ordering::Acquire) as usize;
    let block = shm.ptr_at(theirs).expect("pages the other process grew the pool by");
    // SAFETY: the attached process's block, left to this process.
    assert!(unsafe { has_stamp(block, TURN_LEN, 92) }, "the attached process's block");
    let stats = shm.stats().unwrap();
    assert!(stats.capacity > attached_to && stats.segments >= 10, "{stats:?}");
    for offset in turns.iter().map(|turn| turn.load(Ordering::Relaxed) as usize) {
        // SAFETY: each turn's block is in use, freed once.
        unsafe { shm.try_free(shm.ptr_at(offset).unwrap()) }.unwrap();
    }
    // SAFETY: the words' block, in use, freed once; nothing reads it any more.
    unsafe { shm.try_free(words) }.unwrap();
    shm.check().unwrap();
    assert_eq!(shm.available(), start * stats.segments);
}

/// The attached process of [`an_attached_process_sees_the_pool_grow`]. Returns the exit code.
fn attach_growing_child(args: &[String]) -> i32 {
    let outcome = catch_unwind(|| {
        let number = |index: usize| args[index].parse::<usize>().unwrap();
        let (fd, words, grown_to) = (number(0), number(1), number(2));
        // SAFETY: the descriptor was inherited from the parent, open, and owned by nothing else
        // in this process.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the parent made the pool with this same library.
        let shm = unsafe { ShmPool::attach(fd) }.unwrap();
        assert!(shm.capacity() >= grown_to, "the pool as it had grown before the attach");
        assert_eq!(shm.max_capacity(), 64 * MIB);
        let words = shm.ptr_at(words).unwrap();
        // SAFETY: the parent's words, accessed atomically, live until this process exits.
        let turns =
            unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<AtomicU64>(), TURNS) };
        for (index, turn) in turns.iter().enumerate().take(2) {
            let offset = await_word(turn) as usize;
            let block = shm.ptr_at(offset).expect("pages the parent grew the pool by");
            // SAFETY: the parent's block, which it does not write again.
            assert!(unsafe { has_stamp(block, TURN_LEN, 90 + index as u64) }, "turn {index}");
        }
        shm.check().unwrap();
        let block = shm.alloc(TURN_LEN).expect("room after growing");
        // SAFETY: the block was just handed to this process.
        unsafe { stamp(block, TURN_LEN, 92) };
        turns[2].store(shm.offset_of(block).unwrap() as u64, Ordering::Release);
        shm.check().unwrap();
    });
    if outcome.is_ok() {
        0
    } else {
        101
    }
}

fn child_pools_belong_to_one_process() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();

    // A child pool with several chunks, whose forked copy is dropped unused: the copy must not
    // give the original's chunks back to the shared pool, which would hand them out again.
    // In a cell, so that the forked process can drop its copy while the parent keeps its own.
    let cell = core::cell::RefCell::new(Some(shm.child()));
    let blocks: Vec<_> = {
        let child = cell.borrow();
        let child = child.as_ref().unwrap();
        (0..1000).map(|_| child.alloc(64).unwrap()).collect()
    };
    for (seed, &block) in blocks.iter().enumerate() {
        // SAFETY: the block is in use and holds 64 bytes.
        unsafe { stamp(block, 64, seed as u64) };
    }
    let lent = shm.stats().unwrap().lent_bytes;
    assert!(lent >= 4 * 16 * KIB, "{lent} bytes lent for 1000 blocks");
    fork(|| {
        drop(cell.borrow_mut().take().unwrap());
        assert_eq!(shm.stats().unwrap().lent_bytes, lent, "the copy gave the chunks back");
        // What the shared pool hands out now is not the original's.
        let block = shm.alloc(64 * KIB).unwrap();
        let offset = shm.offset_of(block).unwrap();
        for &theirs in &blocks {
            assert!(shm.offset_of(theirs).unwrap().abs_diff(offset) >= 64, "handed out twice");
        }
        // SAFETY: the block is in use and freed once.
        unsafe { shm.try_free(block) }.unwrap();
    })
    .succeeds("dropping a forked copy of a child pool");
    assert_eq!(shm.stats().unwrap().lent_bytes, lent);
    let child = cell.into_inner().unwrap();
    // The chunk headers, which lie in the shared mapping, still link the original's lists.
    child.check().unwrap();
    assert_eq!(child.stats().live_blocks, blocks.len());
    for (seed, &block) in blocks.iter().enumerate() {
        // SAFETY: the block is in use and was stamped with 64 bytes.
        assert!(unsafe { has_stamp(block, 64, seed as u64) }, "block {seed} was overwritten");
    }
    // The original still works in the process that made it, and gives everything back.
    let more = child.alloc(100_000).unwrap();
    for block in blocks.into_iter().chain([more]) {
        // SAFETY: each block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    child.check().unwrap();
    drop(child);
    assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();

    // A forked copy hands out nothing at all, not even what is left of the chunks it holds,
    // whose headers it shares with the original: the fork handler has abandoned its
    // bookkeeping, and the shared pool refuses it new chunks.
    let child = shm.child();
    let mine: Vec<_> = (0..10).map(|_| child.alloc(64).unwrap()).collect();
    for (seed, &block) in mine.iter().enumerate() {
        // SAFETY: the block is in use and holds 64 bytes.
        unsafe { stamp(block, 64, seed as u64) };
    }
    let lent = shm.stats().unwrap().lent_bytes;
    fork(|| {
        assert_eq!(child.alloc(64), None, "the copy handed out a block of a shared chunk");
        assert_eq!(child.alloc(100_000), None, "the copy took a chunk of its own");
        assert_eq!(child.stats().chunks, 0, "the copy still holds the original's chunks");
        assert_eq!(shm.stats().unwrap().lent_bytes, lent, "a chunk was lent to the copy");
    })
    .succeeds("a forked copy of a child pool hands out nothing");
    assert_eq!(shm.stats().unwrap().lent_bytes, lent);
    for (seed, &block) in mine.iter().enumerate() {
        // SAFETY: the block is in use and was stamped with 64 bytes.
        assert!(unsafe { has_stamp(block, 64, seed as u64) }, "block {seed} was overwritten");
    }
    // The original is untouched by its copy and carries on in the process that made it.
    child.check().unwrap();
    let more: Vec<_> = (0..1000).map(|_| child.alloc(64).unwrap()).collect();
    for block in mine.into_iter().chain(more) {
        // SAFETY: each block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    child.check().unwrap();
    drop(child);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// Melon (1): the mapping's result was compared with NULL instead of `MAP_FAILED`, so a failed
/// mapping was written to. A child whose address space is too small for the pool, or whose
/// file size limit is too small for its memory, gets an error and goes on.
fn w1_a_mapping_the_system_refuses_is_an_error() {
    fork(|| {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
        let limit = (pages * 4096 + 16 * MIB) as libc::rlim_t;
        lower_limit(libc::RLIMIT_AS, limit);
        match ShmPool::new(64 * MIB) {
            Err(error @ ShmError::Os { errno, .. }) => {
                assert_eq!(errno.raw_os_error(), rustix::io::Errno::NOMEM.raw_os_error());
                assert!(error.to_string().contains("failed"), "{error}");
            }
            other => panic!("a mapping past the address-space limit gave {other:?}"),
        }
        // A pool that fits still works.
        let shm = ShmPool::new(MIB).unwrap();
        let block = shm.alloc(64).unwrap();
        // SAFETY: the block is in use and freed once.
        unsafe { shm.try_free(block) }.unwrap();
    })
    .succeeds("a mapping past the address-space limit");
    fork(|| {
        // SAFETY: ignoring SIGXFSZ makes a write past the limit fail with EFBIG instead of
        // killing this child; no handler runs.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        lower_limit(libc::RLIMIT_FSIZE, MIB as libc::rlim_t);
        match ShmPool::new(8 * MIB) {
            Err(ShmError::Os { errno, .. }) => {
                assert_eq!(errno.raw_os_error(), rustix::io::Errno::FBIG.raw_os_error());
            }
            other => panic!("memory past the file size limit gave {other:?}"),
        }
        assert!(ShmPool::new(512 * KIB).is_ok());
    })
    .succeeds("memory past the file size limit");
}

/// A pool that would grow past the file size limit stops growing there: its allocations report
/// no room, out of memory even where the bytes free would be enough in one place, and nothing
/// raises SIGBUS; the pool is intact and can be drained.
fn a_growth_the_system_refuses_is_out_of_memory() {
    fork(|| {
        // SAFETY: ignoring SIGXFSZ makes a growth past the limit fail with EFBIG instead of
        // killing this child; no handler runs.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
        lower_limit(libc::RLIMIT_FSIZE, (4 * MIB) as libc::rlim_t);
        let mut blocks = Vec::new();
        while let Some(block) = shm.alloc(200 * KIB) {
            // SAFETY: the block was just handed to this process; every byte is written, as
            // its user would, so that a page the system did not reserve would raise SIGBUS.
            unsafe { block.as_ptr().write_bytes(0xa5, 200 * KIB) };
            blocks.push(block);
            assert!(blocks.len() < 64, "grew past the file size limit");
        }
        assert_eq!(shm.try_alloc(200 * KIB), Err(ShmError::OutOfMemory { size: 200 * KIB }));
        let stats = shm.stats().unwrap();
        assert!(stats.segments > 1 && stats.capacity <= 4 * MIB, "{stats:?}");
        shm.check().unwrap();
        // Enough bytes free in holes too short for the block: still the system's refusal to
        // grow, not fragmentation, is what stops it.
        let (every_other, rest): (Vec<_>, Vec<_>) =
            blocks.iter().enumerate().partition(|(index, _)| index % 2 == 0);
        for (_, block) in every_other {
            // SAFETY: each block is in use, freed once.
            unsafe { shm.try_free(*block) }.unwrap();
        }
        assert!(shm.available() >= 300 * KIB);
        assert_eq!(shm.try_alloc(300 * KIB), Err(ShmError::OutOfMemory { size: 300 * KIB }));
        for (_, block) in rest {
            // SAFETY: each block is in use, freed once.
            unsafe { shm.try_free(*block) }.unwrap();
        }
        shm.check().unwrap();
        assert_eq!(shm.available(), stats.data_bytes);
    })
    .succeeds("a growth past the file size limit");
}

/// Lowers the soft limit on `resource` to `limit` for this process.
fn lower_limit(resource: libc::__rlimit_resource_t, limit: libc::rlim_t) {
    let mut rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` writes the current limits into the local struct.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut rlimit) }, 0);
    rlimit.rlim_cur = limit.min(rlimit.rlim_max);
    // SAFETY: `setrlimit` reads the struct; a lower soft limit affects this process only.
    assert_eq!(unsafe { libc::setrlimit(resource, &rlimit) }, 0);
}

/// Melon (7): nothing recovered when a process died holding the lock. A child takes the lock and
/// is killed; the processes waiting for it carry on.
fn w7_a_dead_lock_holder_is_taken_over() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(4);
    let holder = fork(|| {
        let mut guard = shm.lock().unwrap();
        let block = guard.alloc(64).unwrap();
        mailbox[1].store(shm.offset_of(block).unwrap() as u64, Ordering::Relaxed);
        mailbox[0].store(1, Ordering::Release);
        // Hold the lock until killed.
        loop {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    await_word(&mailbox[0]);
    let waiters: Vec<Child> = (0..3)
        .map(|waiter| {
            let (shm, mailbox) = (&shm, &mailbox);
            fork(move || {
                mailbox[2].fetch_add(1, Ordering::AcqRel);
                let start = Instant::now();
                let block = shm.alloc(100 + waiter).unwrap();
                let waited = start.elapsed();
                assert!(waited < TAKEOVER_BOUND, "waited {waited:?} for a dead holder's lock");
                // SAFETY: the block is in use and freed once.
                unsafe { shm.try_free(block) }.unwrap();
            })
        })
        .collect();
    // Let the waiters reach the lock before the holder dies.
    while mailbox[2].load(Ordering::Acquire) < 3 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut holder = holder;
    holder.signal_kill();
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    for waiter in waiters {
        waiter.succeeds("a waiter gets the lock of a dead holder");
    }
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lock_takeovers, 1, "exactly one process took the lock over");
    assert_eq!(stats.operations_undone, 0, "the holder died between operations");
    // The dead holder's block is still in use; nobody else can free it by mistake.
    assert_eq!(stats.live_blocks, 1);
    let block = shm.ptr_at(mailbox[1].load(Ordering::Relaxed) as usize).unwrap();
    // SAFETY: the dead holder's block, freed once on its behalf.
    unsafe { shm.try_free(block) }.unwrap();
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A process forked while its parent holds the lock inherits a copy of the parent's guard. Its
/// release of that copy is refused and changes nothing, whether the child has an identity of
/// its own in the pool yet or not; the parent's own release then works, and the pool goes on.
fn a_guard_copied_by_a_fork_is_not_the_childs_to_release() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let guard = shm.lock().unwrap();
    for makes_identity in [false, true] {
        let (shm, guard) = (&shm, &guard);
        fork(move || {
            if makes_identity {
                // A timed lock makes the child's identity before it waits, and times out.
                let waited = shm.try_lock_for(Duration::from_millis(20));
                assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "{waited:?}");
            }
            // SAFETY: the child's memory is a copy of the parent's, so this guard is the
            // child's copy of the parent's, used here once and never again in either process.
            let copy = unsafe { core::ptr::read(guard) };
            assert!(copy.unlock().is_err(), "a copied guard released the parent's lock");
        })
        .succeeds("a child refused the release of a guard it inherited");
    }
    guard.unlock().expect("the parent's own release");
    fork(|| drop(shm.lock().expect("the lock, released by the parent")))
        .succeeds("a child takes the lock after the parent released it");
    assert!(shm.lock().is_ok());
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
}

/// A process forked while its parent holds a `ShmMutex` inherits a copy of the parent's guard.
/// Once the parent has let go and the child has taken the mutex itself, the child's drop of the
/// copy releases nothing: the child's own hold stands (the parent's timed lock gives up), and
/// its own release hands the mutex back with no death reported.
fn a_mutex_guard_copied_by_a_fork_releases_nothing_in_the_child() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let mutex = ShmMutex::new_in(0u64, &shm).unwrap();
    let guard = mutex.lock().unwrap();
    // 0: the child holds the mutex and dropped the copy; 1: the parent looked, let go.
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let child = {
        let (mutex, guard, mailbox) = (&mutex, &guard, &mailbox);
        fork(move || {
            let mut own = mutex.try_lock_for(TAKEOVER_BOUND).expect("released by the parent");
            assert!(!own.holder_died(), "the parent let go");
            *own = 1;
            // SAFETY: the child's memory is a copy of the parent's, so this guard is the
            // child's copy of the parent's, used here once and never again in either process.
            drop(unsafe { core::ptr::read(guard) });
            mailbox[0].store(1, Ordering::Release);
            await_word(&mailbox[1]);
            *own = 2;
        })
    };
    drop(guard);
    await_word(&mailbox[0]);
    let waited = mutex.try_lock_for(Duration::from_millis(20)).map(|_| ());
    assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "the child holds it: {waited:?}");
    mailbox[1].store(1, Ordering::Release);
    child.succeeds("a child dropped a copy of its parent's guard while it held the mutex");
    let after = mutex.lock().unwrap();
    assert!(!after.holder_died(), "the child let go; nobody died holding the mutex");
    assert_eq!(*after, 2);
    drop(after);
    assert_eq!(mutex.takeovers(), 0);
}

/// Safe code only: a guard of a `ShmMutex` forgotten, and its pool dropped. The pool's memory
/// is unmapped, and nothing of the thread's points into the mutex any more: its next locks of
/// other mutexes write nothing at the mutex's address, mapped again here as a zeroed page. (A
/// robust mutex of the C library would stay on the thread's list, through which those locks
/// write.) In a child, whose crash the case would see.
fn a_pool_dropped_under_a_forgotten_mutex_guard_is_written_no_more() {
    fork(|| {
        let first = ShmPool::new(16 * MIB).unwrap();
        let mutex = ShmMutex::new_in(0u64, &first).unwrap();
        core::mem::forget(mutex.lock().unwrap());
        let place = core::ptr::from_ref::<ShmMutex<u64>>(&mutex).addr();
        drop(mutex);
        drop(first);
        let page = place & !(PAGE - 1);
        // SAFETY: `MAP_FIXED_NOREPLACE` maps a new private page only where nothing is mapped,
        // and fails otherwise.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(mapped as usize, page, "the dropped pool's memory is unmapped");
        let other = ShmPool::new(MIB).unwrap();
        let mutex = ShmMutex::new_in(1u64, &other).unwrap();
        *mutex.lock().unwrap() += 1;
        assert_eq!(*mutex.lock().unwrap(), 2);
        drop(mutex);
        // SAFETY: the page was mapped above, readable and written by nothing of this test's.
        let bytes = unsafe { core::slice::from_raw_parts(page as *const u8, PAGE) };
        assert!(bytes.iter().all(|&byte| byte == 0), "a lock wrote where the mutex was");
    })
    .succeeds("a thread locked a mutex after a pool went under a forgotten guard");
}

/// A collection in the pool dropped by a thread that holds the pool's lock: its free cannot
/// take the lock, so the buffer stays allocated; a debug build aborts the process with a
/// message, as `ShmPool::free` does for a free it cannot make. In a child, whose end the case
/// reads.
fn a_collection_dropped_by_the_holder_of_the_lock_keeps_its_buffer() {
    let shm = ShmPool::new(MIB).unwrap();
    let live = shm.stats().unwrap().live_blocks;
    let mut child = fork(|| {
        let mut numbers = allocator_api2::vec::Vec::new_in(&shm);
        numbers.extend_from_slice(&[1u64, 2, 3]);
        let guard = shm.lock().unwrap();
        drop(numbers);
        drop(guard);
        assert_eq!(shm.stats().unwrap().live_blocks, live + 1, "the buffer was freed");
    });
    let expected = if cfg!(debug_assertions) { Exit::Signal(libc::SIGABRT) } else { Exit::Code(0) };
    assert_eq!(child.wait(CHILD_LIMIT), expected);
}

/// A worker that can open no descriptor still allocates and frees: the fork handler opened the
/// descriptions it makes its identity and claims its slot through before the fork. Its parent
/// goes on using the pool alongside.
fn a_worker_without_descriptors_to_spare_uses_those_its_parent_opened() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    // The parent's identity is made here; the child must make its own.
    let parents = shm.alloc(64).unwrap();
    fork(|| {
        // No descriptor beyond those open now: reopening the pool's file fails with EMFILE.
        lower_limit(libc::RLIMIT_NOFILE, lowest_free_descriptor() as libc::rlim_t);
        let blocks: Vec<_> = (0..100).map(|_| shm.alloc(200).unwrap()).collect();
        for block in blocks {
            // SAFETY: the block is in use and freed once.
            unsafe { shm.try_free(block) }.unwrap();
        }
    })
    .succeeds("a process without a descriptor to spare allocates and frees");
    // SAFETY: the parent's block, freed once.
    unsafe { shm.try_free(parents) }.unwrap();
    assert_eq!(shm.available(), start);
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
    shm.check().unwrap();
}

/// A process that can open no descriptor, and has none from a fork handler (a raw fork), makes
/// no identity in the pool: every operation that needs the lock fails with `EMFILE`, and none
/// locks under the anonymous identity, which nothing takes over. Once it has a descriptor to
/// spare it makes its identity, and a lock it holds when it dies is taken over.
fn a_process_without_descriptors_to_spare_is_refused_until_it_has_one() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let ready = SharedWords::<AtomicU64>::new(1);
    let mut holder = raw_fork(|| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `getrlimit` writes the current limits into the local struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        // No new descriptor at all, whatever number the process closes: it closes its copy of
        // the description its parent made its own identity through.
        lower_limit(libc::RLIMIT_NOFILE, 0);
        let too_many = |error: &ShmError| matches!(error, ShmError::Os { errno, .. } if errno.raw_os_error() == libc::EMFILE);
        let refused = shm.try_alloc(64).unwrap_err();
        assert!(too_many(&refused), "{refused:?}");
        assert!(shm.alloc(64).is_none(), "a block allocated without an identity");
        assert!(too_many(&shm.lock().err().unwrap()), "the lock taken without an identity");
        // SAFETY: `setrlimit` reads the struct: the limits the process started with.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let _held = shm.lock().unwrap();
        ready[0].store(1, Ordering::Release);
        loop {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    await_word(&ready[0]);
    holder.kill_dead();
    let taken = shm.try_lock_for(TAKEOVER_BOUND).map(drop);
    assert!(taken.is_ok(), "a dead holder's lock was not taken over: {taken:?}");
    assert_eq!(shm.stats().unwrap().lock_takeovers, 1);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// The lowest descriptor number this process has free: with the soft limit on descriptors
/// lowered to it, the process can open none.
fn lowest_free_descriptor() -> i32 {
    // SAFETY: `dup` of standard input, which the test binary has open.
    let lowest_free = unsafe { libc::dup(0) };
    assert!(lowest_free > 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just opened by `dup` and nothing else uses it.
    unsafe { libc::close(lowest_free) };
    lowest_free
}

/// Moves an open file onto descriptor number `number`, which then names that file.
fn reuse_number(file: &std::fs::File, number: i32) {
    if file.as_raw_fd() != number {
        // SAFETY: both numbers are this process's; `dup2` closes what `number` named, which
        // only the pool, which checks what it names, still refers to.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), number) }, number);
    }
}

/// A new empty file of this test's, open for reading and writing, and its path.
fn scratch_file(what: &str) -> (std::fs::File, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("melon-test-{what}-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    (file, path)
}

/// A worker that closes every descriptor from 3 up after the fork, the pool's among them, before
/// it first uses the pool, and opens a file that gets the pool's descriptor number: through that
/// number it could lock its identity's byte only in the other file, where nobody would see it
/// alive, and grow only that file. It takes none of the pool's locks: every operation that needs
/// one fails with `EBADF`, and neither the file nor the pool changes.
fn a_process_whose_pool_descriptor_names_another_file_takes_no_lock() {
    let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
    let (start, capacity) = (shm.available(), shm.capacity());
    let number = shm.as_fd().as_raw_fd();
    let (file, path) = scratch_file("closed-descriptors");
    drop(file);
    let mutex = ShmMutex::new_in(7u64, &shm).unwrap();
    fork(|| {
        for fd in 3..1024 {
            // SAFETY: closing numbers of this process; only the pool refers to any of them after.
            unsafe { libc::close(fd) };
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        reuse_number(&file, number);
        let refused = shm.try_alloc(8 * MIB).unwrap_err();
        let bad_descriptor = |error: &ShmError| {
            matches!(error, ShmError::Os { errno, .. } if errno.raw_os_error() == libc::EBADF)
        };
        assert!(bad_descriptor(&refused), "{refused:?}");
        assert!(shm.alloc(64).is_none());
        assert!(shm.child().alloc(64).is_none(), "a chunk lent through a lock taken");
        assert!(bad_descriptor(&shm.lock().err().unwrap()));
        assert!(bad_descriptor(&mutex.lock().err().unwrap()), "a mutex of the pool");
        assert_eq!(file.metadata().unwrap().len(), 0, "the other file was written");
    })
    .succeeds("a process whose pool descriptor names another file is refused");
    assert_eq!(*mutex.lock().unwrap(), 7);
    drop(mutex);
    std::fs::remove_file(&path).unwrap();
    assert_eq!((shm.available(), shm.capacity()), (start, capacity));
    assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
    shm.check().unwrap();
}

/// A worker that used the pool, then let another file take the pool's descriptor number: a
/// growth fails and leaves that file alone; a reclaim takes no live process's chunks; and a wait
/// for the lock that a live process holds times out rather than take it over, since the
/// descriptor cannot tell that the holder lives.
fn a_descriptor_number_reused_after_first_use_grows_and_reclaims_nothing() {
    let shm = ShmPool::builder().capacity(MIB).max_capacity(64 * MIB).build().unwrap();
    let (start, capacity) = (shm.available(), shm.capacity());
    let number = shm.as_fd().as_raw_fd();
    let flags = SharedWords::<AtomicU64>::new(2);
    // The parent's chunk, lent under a slot of its own, which a reclaim must leave alone.
    let parents = shm.child();
    let parents_block = parents.alloc(64).unwrap();
    let lent = shm.stats().unwrap().lent_bytes;
    let (file, path) = scratch_file("reused-descriptor");
    let worker = fork(|| {
        let block = shm.alloc(64).expect("the worker's first use");
        // SAFETY: the block is in use and freed once.
        unsafe { shm.try_free(block) }.unwrap();
        reuse_number(&file, number);
        assert!(shm.try_alloc(8 * MIB).is_err(), "a growth through another file");
        assert_eq!(file.metadata().unwrap().len(), 0, "the other file was written");
        let report = shm.reclaim_dead().unwrap();
        assert_eq!((report.processes, report.chunks), (0, 0), "{report:?}");
        flags[0].store(1, Ordering::Release);
        await_word(&flags[1]);
        let waited = shm.try_lock_for(Duration::from_millis(50)).map(|_| ());
        assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "{waited:?}");
    });
    await_word(&flags[0]);
    let guard = shm.lock().unwrap();
    flags[1].store(1, Ordering::Release);
    worker.succeeds("a process whose pool descriptor was reused after its first use");
    drop(guard);
    std::fs::remove_file(&path).unwrap();
    let stats = shm.stats().unwrap();
    assert_eq!((stats.lent_bytes, stats.lock_takeovers, shm.capacity()), (lent, 0, capacity));
    // SAFETY: the block came from `parents` and is freed once.
    unsafe { parents.free(parents_block) };
    drop(parents);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A worker that used the pool, then closed every descriptor from 3 up, as a daemon that closes
/// what it does not know does: the descriptions its identity and its slot lock their bytes
/// through live as long as it does, so that it is not taken for dead. A process waiting for the
/// lock it holds waits until it lets go, and a reclaim leaves its chunk alone.
fn a_worker_that_closes_every_descriptor_after_first_use_is_not_taken_for_dead() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let flags = SharedWords::<AtomicU64>::new(3);
    let worker = fork(|| {
        let child = shm.child();
        let block = child.alloc(64).expect("the worker's first chunk");
        for fd in 3..1024 {
            // SAFETY: closing numbers of this process, as a daemon's `close_range` would; the
            // pool reaches its descriptors only through the descriptions they named.
            unsafe { libc::close(fd) };
        }
        let guard = shm.lock().expect("the lock, under the identity made before");
        flags[0].store(1, Ordering::Release);
        std::thread::sleep(Duration::from_millis(300));
        flags[1].store(1, Ordering::Release);
        drop(guard);
        await_word(&flags[2]);
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    });
    await_word(&flags[0]);
    let guard = shm.lock().unwrap();
    assert_eq!(flags[1].load(Ordering::Acquire), 1, "the lock was taken from a live holder");
    drop(guard);
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.chunks), (0, 0), "a live worker's chunk: {report:?}");
    flags[2].store(1, Ordering::Release);
    worker.succeeds("a worker that closed its descriptors after its first use");
    let stats = shm.stats().unwrap();
    assert_eq!((stats.lock_takeovers, stats.lent_bytes), (0, 0));
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// Pages of a pool's file of one page's length that this process maps: those that keep the
/// descriptions its identity and slot lock through alive (the pool itself maps more).
fn pinned_pages() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|line| line.contains("melon-alloc"))
        .filter(|line| {
            let range = line.split(' ').next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            let len =
                usize::from_str_radix(end, 16).unwrap() - usize::from_str_radix(start, 16).unwrap();
            len == PAGE
        })
        .count()
}

/// The pages that keep a process's identity and slot alive are its own: a process that used the
/// pool maps one for each, a process it forks inherits neither, and they go with the handle.
fn the_pages_that_keep_a_processs_locks_are_its_own_and_go_with_its_handle() {
    fork(|| {
        let shm = ShmPool::new(MIB).unwrap();
        assert_eq!(pinned_pages(), 0, "before the pool is used");
        let child = shm.child();
        let block = child.alloc(64).unwrap();
        drop(shm.lock().unwrap());
        assert_eq!(pinned_pages(), 2, "the identity's and the slot's");
        fork(|| assert_eq!(pinned_pages(), 0)).succeeds("a process forked from one that pinned");
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
        drop(child);
        drop(shm);
        assert_eq!(pinned_pages(), 0, "after the handle goes");
    })
    .succeeds("a process that used a pool");
}

/// A pipe of this process's: its read and write ends.
fn pipe() -> [libc::c_int; 2] {
    let mut ends = [-1; 2];
    // SAFETY: `ends` has room for the two descriptors `pipe` writes.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0, "a pipe");
    ends
}

/// Whether `ends` is still a pipe of this process's: a byte written to its write end comes out
/// of its read end.
fn still_a_pipe(ends: [libc::c_int; 2]) -> bool {
    let mut byte = [0u8];
    // SAFETY: one byte is written from, then read into, a buffer of one byte; a descriptor that
    // names no pipe makes the calls fail, or the byte differ, and nothing else.
    unsafe {
        libc::write(ends[1], [0x5a_u8].as_ptr().cast(), 1) == 1
            && libc::read(ends[0], byte.as_mut_ptr().cast(), 1) == 1
            && byte[0] == 0x5a
    }
}

/// A program that closes every descriptor from 3 up but the pool's own after it has used the
/// pool, as a daemon may, and gets the numbers back for pipes of its own, finds the pipes intact
/// in a process it forks and after the pool's handle goes: the descriptions the process's
/// identity and slot lock through are tagged, so the pool closes no number that names another.
fn numbers_a_program_closes_after_first_use_and_reuses_stay_the_programs() {
    fork(|| {
        let shm = ShmPool::new(MIB).unwrap();
        let child = shm.child();
        let block = child.alloc(64).expect("a chunk for the child pool");
        drop(shm.lock().unwrap());
        let own = shm.as_fd().as_raw_fd();
        for fd in (3..1024).filter(|&fd| fd != own) {
            // SAFETY: closing numbers of this process, as a daemon's `close_range` would; the
            // pool needs no descriptor but its own.
            unsafe { libc::close(fd) };
        }
        let pipes: Vec<[libc::c_int; 2]> = (0..4).map(|_| pipe()).collect();
        fork(|| {
            assert!(pipes.iter().all(|&ends| still_a_pipe(ends)), "in the forked process");
            drop(shm.lock().unwrap());
        })
        .succeeds("a process forked after its parent reused the numbers");
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
        drop(child);
        drop(shm);
        assert!(pipes.iter().all(|&ends| still_a_pipe(ends)), "after the pool's handle went");
    })
    .succeeds("a process that reused its numbers");
}

/// Moves this process, which must have a single thread, into new user and mount namespaces and
/// mounts an overlay file system there, over directories under `base`: its merged directory, or
/// `None`, saying so, where the system lets it make no such namespace or mount (as some
/// containers' seccomp profiles and older kernels do).
fn overlay_in_a_namespace_of_its_own(base: &std::path::Path) -> Option<std::path::PathBuf> {
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    // SAFETY: the caller is a forked child with one thread, as `CLONE_NEWUSER` needs; only this
    // process's namespaces change.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        println!(
            "  skipped: no user and mount namespaces here ({})",
            std::io::Error::last_os_error()
        );
        return None;
    }
    std::fs::write("/proc/self/setgroups", "deny").unwrap();
    std::fs::write("/proc/self/uid_map", format!("0 {} 1", uid.as_raw())).unwrap();
    std::fs::write("/proc/self/gid_map", format!("0 {} 1", gid.as_raw())).unwrap();
    let dirs = ["lower", "upper", "work", "merged"].map(|name| base.join(name));
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs[0].display(),
        dirs[1].display(),
        dirs[2].display()
    );
    let options = std::ffi::CString::new(options).unwrap();
    let target = std::ffi::CString::new(dirs[3].to_str().unwrap()).unwrap();
    // SAFETY: the strings are NUL-terminated and outlive the call.
    let mounted = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if mounted != 0 {
        println!("  skipped: no overlay mount here ({})", std::io::Error::last_os_error());
        return None;
    }
    Some(dirs[3].clone())
}

/// A named pool whose file lies on an overlay file system, as a container's `/tmp` does, where a
/// mapping of the file is one of the file beneath it and so keeps no description of the pool's
/// file: a live worker that holds the lock and a chunk is neither taken over nor reclaimed, and
/// once it is dead, its chunk comes back.
fn a_named_pool_on_overlayfs_tells_a_live_worker_from_a_dead_one() {
    let base = std::env::temp_dir().join(format!("melon-overlay-{}", std::process::id()));
    fork(|| {
        let Some(merged) = overlay_in_a_namespace_of_its_own(&base) else { return };
        let shm = ShmPool::builder().path(merged.join("pool")).capacity(4 * MIB).build().unwrap();
        let flags = SharedWords::<AtomicU64>::new(3);
        let worker = fork(|| {
            let child = shm.child();
            let block = child.alloc(64).expect("the worker's first chunk");
            let guard = shm.lock().unwrap();
            flags[0].store(1, Ordering::Release);
            await_word(&flags[1]);
            drop(guard);
            await_word(&flags[2]);
            // SAFETY: the block came from `child` and is freed once.
            unsafe { child.free(block) };
            // The chunk stays lent to the worker when it dies.
            std::mem::forget(child);
        });
        await_word(&flags[0]);
        let taken = shm.try_lock_for(Duration::from_millis(100));
        assert!(matches!(taken, Err(ShmError::LockTimeout { .. })), "{taken:?}");
        flags[1].store(1, Ordering::Release);
        let report = shm.reclaim_dead().unwrap();
        assert_eq!(report.processes, 0, "a live worker's slot: {report:?}");
        flags[2].store(1, Ordering::Release);
        worker.succeeds("a worker on an overlay file system");
        let report = shm.reclaim_dead().unwrap();
        assert_eq!((report.processes, report.chunks), (1, 1), "the dead worker's: {report:?}");
        assert_eq!(shm.stats().unwrap().lock_takeovers, 0);
        shm.check().unwrap();
    })
    .succeeds("a process with an overlay file system of its own");
    let _ = std::fs::remove_dir_all(&base);
}

/// Why the docs tell a program not to close the pool's descriptors though a page of its file
/// keeps each description: on an overlay file system the page is one of the file beneath, and a
/// live worker that closes every descriptor but the pool's own after its first chunk loses the
/// lock on its slot's byte, so that a reclaim takes it for dead. (Its chunk, reclaimed, is not
/// touched again: the worker forgets its child pool.)
fn on_overlayfs_a_worker_that_closes_its_descriptors_looks_dead() {
    let base = std::env::temp_dir().join(format!("melon-overlay-closed-{}", std::process::id()));
    fork(|| {
        let Some(merged) = overlay_in_a_namespace_of_its_own(&base) else { return };
        let shm = ShmPool::builder().path(merged.join("pool")).capacity(4 * MIB).build().unwrap();
        let flags = SharedWords::<AtomicU64>::new(2);
        let worker = fork(|| {
            let child = shm.child();
            child.alloc(64).expect("the worker's first chunk");
            let own = shm.as_fd().as_raw_fd();
            for fd in (3..1024).filter(|&fd| fd != own) {
                // SAFETY: closing numbers of this process, as a daemon's `close_range` would.
                unsafe { libc::close(fd) };
            }
            flags[0].store(1, Ordering::Release);
            await_word(&flags[1]);
            std::mem::forget(child);
        });
        await_word(&flags[0]);
        let report = shm.reclaim_dead().unwrap();
        assert_eq!(report.processes, 1, "a live worker that closed its descriptors: {report:?}");
        flags[1].store(1, Ordering::Release);
        worker.succeeds("a worker that closed its descriptors on an overlay file system");
        shm.check().unwrap();
    })
    .succeeds("a process with an overlay file system of its own");
    let _ = std::fs::remove_dir_all(&base);
}

// ---------------------------------------------------------------------------------------------
// Dead processes' chunks
// ---------------------------------------------------------------------------------------------

/// Forks a worker that takes `bytes` through a child pool of its own (4 KiB blocks, stamped) and
/// one block of `direct` bytes from the shared pool itself, says so in `ready`, and waits to be
/// killed. Returns the worker and the offset of its direct block.
fn worker_holding(shm: &ShmPool, bytes: usize, direct: usize, ready: &AtomicU64) -> (Child, u64) {
    ready.store(0, Ordering::Release);
    let worker = fork(|| {
        let child = shm.child();
        for index in 0..bytes / (4 * KIB) {
            let block = child.alloc(4 * KIB).expect("the worker's child pool finds room");
            // SAFETY: the block is in use and holds 4 KiB.
            unsafe { stamp(block, 4 * KIB, index as u64) };
        }
        let shared = shm.alloc(direct).expect("a direct block");
        ready.store(shm.offset_of(shared).unwrap() as u64 + 1, Ordering::Release);
        idle_until_killed()
    });
    let offset = await_word(ready) - 1;
    (worker, offset)
}

/// A worker that made a child pool and dropped it, so that it holds a slot of the owner table but
/// no chunk, then died: the reclaim counts it among the dead processes, with no bytes, as
/// `ShmStats::reclaimed_processes` and `ReclaimReport::processes` say.
fn a_dead_process_that_held_only_a_slot_is_counted() {
    let shm = ShmPool::new(MIB).unwrap();
    let ready = SharedWords::<AtomicU64>::new(1);
    let mut worker = fork(|| {
        let child = shm.child();
        let block = child.alloc(64).expect("a chunk for the child pool");
        // SAFETY: the block came from `child` and is not used again.
        unsafe { child.free(block) };
        drop(child);
        ready[0].store(1, Ordering::Release);
        idle_until_killed()
    });
    await_word(&ready[0]);
    worker.kill_dead();
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.chunks, report.bytes), (1, 0, 0), "{report:?}");
    let stats = shm.stats().unwrap();
    assert_eq!((stats.reclaimed_processes, stats.reclaimed_bytes), (1, 0));
    shm.check().unwrap();
}

/// Thirty workers in a row each take 1 MiB through a child pool and are SIGKILLed while idle.
/// Nobody calls anything on their behalf, yet each finds its megabyte in a 16 MiB pool: the
/// chunks of the dead come back when a chunk finds no room. The blocks they took from the shared
/// pool itself stay in use, as shared objects do; once the master frees them, the pool is back
/// where it started.
fn dead_workers_chunks_come_back() {
    const WORKERS: usize = 30;
    let shm = ShmPool::new(16 * MIB).unwrap();
    let start = shm.available();
    let ready = SharedWords::<AtomicU64>::new(1);
    let mut direct = Vec::new();
    for _ in 0..WORKERS {
        let (mut worker, offset) = worker_holding(&shm, MIB, 64, &ready[0]);
        worker.kill_dead();
        direct.push(offset);
    }
    let report = shm.reclaim_dead().unwrap();
    assert!(report.processes >= 1, "the last worker's chunks are still out: {report:?}");
    assert!(report.bytes >= MIB, "{report:?}");
    assert_eq!(shm.reclaim_dead().unwrap().processes, 0, "nothing is given back twice");
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lent_bytes, 0);
    assert_eq!(stats.live_blocks, WORKERS, "the direct blocks outlive their allocators");
    assert_eq!(stats.reclaimed_processes, WORKERS as u64, "each dead worker, once");
    assert!(stats.reclaimed_bytes >= (WORKERS * MIB) as u64, "{stats:?}");
    for offset in direct {
        // SAFETY: a dead worker's direct block, freed once on its behalf.
        unsafe { shm.try_free(shm.ptr_at(offset as usize).unwrap()) }.unwrap();
    }
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// Pools a master has made, each locked once and with a chunk of a child pool, before it
/// forks its worker: past 128 of them, the process holds more than 256 descriptions of pools'
/// files.
const MANY_POOLS: usize = 130;

/// A master that uses many pools, each through the lock and through a child pool, forks a
/// worker and is killed holding the lock of one more pool, whose child pool holds a chunk of
/// it. The worker, alive, inherited a copy of every description the master held its identities
/// and slots through, however many: the fork closed each, so the lock is taken over at once
/// and the master's chunk comes back, while the worker lives on.
fn a_master_with_many_pools_is_taken_over_while_its_worker_lives() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let mut master = fork(|| {
        let pools: Vec<ShmPool> = (0..MANY_POOLS)
            .map(|_| {
                let pool = ShmPool::new(256 * KIB).unwrap();
                drop(pool.lock().unwrap());
                let child = pool.child();
                assert!(child.alloc(64).is_some(), "a chunk for a child pool");
                core::mem::forget(child);
                pool
            })
            .collect();
        let child = shm.child();
        assert!(child.alloc(64).is_some(), "a chunk for a child pool");
        core::mem::forget(child);
        core::mem::forget(shm.lock().unwrap());
        let worker = fork(|| {
            mailbox[1].store(std::process::id().into(), Ordering::Release);
            idle_until_killed()
        });
        // The worker outlives the master: it is killed by pid below.
        core::mem::forget(worker);
        await_word(&mailbox[1]);
        mailbox[0].store(1, Ordering::Release);
        core::mem::forget(pools);
        idle_until_killed()
    });
    await_word(&mailbox[0]);
    master.kill_dead();
    let worker = mailbox[1].load(Ordering::Acquire) as libc::pid_t;
    let taken = shm.try_lock_for(TAKEOVER_BOUND).map(drop);
    // Only a lock taken over lets the reclaim, which waits for the lock, return.
    let report = taken.is_ok().then(|| shm.reclaim_dead());
    // SAFETY: the worker was reparented, not reaped: its pid is still its own.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    taken.expect("the dead master's lock is taken over while its worker lives");
    let report = report.expect("taken over above").unwrap();
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lock_takeovers, 1);
    assert_eq!(stats.reclaimed_processes, 1, "{report:?}");
    assert_eq!(stats.lent_bytes, 0, "the dead master's chunk came back");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A process that is alive keeps its chunks, however often others reclaim, and its blocks keep
/// their contents; once it is killed, one reclaim gives back exactly what it held.
fn a_live_process_keeps_its_chunks() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(3);
    let mut worker = fork(|| {
        let child = shm.child();
        let blocks: Vec<_> = (0..64).map(|_| child.alloc(4 * KIB).unwrap()).collect();
        for (index, &block) in blocks.iter().enumerate() {
            // SAFETY: the block is in use and holds 4 KiB.
            unsafe { stamp(block, 4 * KIB, index as u64) };
        }
        mailbox[0].store(1, Ordering::Release);
        await_word(&mailbox[1]);
        for (index, &block) in blocks.iter().enumerate() {
            // SAFETY: as above; nobody else has written it.
            assert!(unsafe { has_stamp(block, 4 * KIB, index as u64) }, "block {index}");
        }
        mailbox[2].store(1, Ordering::Release);
        idle_until_killed()
    });
    await_word(&mailbox[0]);
    let lent = shm.stats().unwrap().lent_bytes;
    assert!(lent >= 64 * 4 * KIB);
    for _ in 0..3 {
        assert_eq!(shm.reclaim_dead().unwrap(), Default::default(), "the worker is alive");
    }
    // Allocations that fill the pool look for the dead too, and must not find the worker.
    let mut filler = Vec::new();
    while let Some(block) = shm.alloc(64 * KIB) {
        filler.push(block);
    }
    assert_eq!(shm.stats().unwrap().lent_bytes, lent);
    mailbox[1].store(1, Ordering::Release);
    await_word(&mailbox[2]);
    worker.kill_dead();
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.bytes), (1, lent), "{report:?}");
    for block in filler {
        // SAFETY: each block is in use and freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// The pools made from a child pool, at any depth, hand out nothing in a forked process either:
/// their chunks came from the child, so their headers lie in the shared mapping, where the
/// originals' lists run through them. The fork handler abandons the child's whole family.
fn pools_made_from_a_child_pool_belong_to_one_process() {
    let shm = ShmPool::new(16 * MIB).unwrap();
    let start = shm.available();
    let child = shm.child();
    let grandchild = child.child();
    let great_grandchild = grandchild.child_with_limit(MIB);
    let family = [&*child, &*grandchild, &*great_grandchild];
    let mut mine = Vec::new();
    for (depth, pool) in family.iter().enumerate() {
        for seed in 0..10 {
            let block = pool.alloc(64).unwrap();
            // SAFETY: the block is in use and holds 64 bytes.
            unsafe { stamp(block, 64, (depth * 100 + seed) as u64) };
            mine.push((depth, block, (depth * 100 + seed) as u64));
        }
    }
    let lent = shm.stats().unwrap().lent_bytes;
    fork(|| {
        for (depth, pool) in family.iter().enumerate() {
            assert_eq!(pool.alloc(64), None, "the copy at depth {depth} handed out a block");
            assert_eq!(pool.stats().chunks, 0, "the copy at depth {depth} holds chunks");
        }
        assert_eq!(shm.stats().unwrap().lent_bytes, lent, "a chunk was lent to a copy");
    })
    .succeeds("the forked copies of a child pool's family hand out nothing");
    // The originals are untouched by their copies, and carry on.
    for &(_, block, seed) in &mine {
        // SAFETY: the block is in use and was stamped with 64 bytes.
        assert!(unsafe { has_stamp(block, 64, seed) }, "block {seed} was overwritten");
    }
    for pool in family {
        pool.check().unwrap();
        let more = pool.alloc(64).unwrap();
        // SAFETY: the block came from `pool` and is freed once.
        unsafe { pool.free(more) };
    }
    for (depth, block, _) in mine {
        // SAFETY: each block came from the pool at `depth` and is freed once.
        unsafe { family[depth].free(block) };
    }
    drop(great_grandchild);
    drop(grandchild);
    drop(child);
    assert_eq!(shm.available(), start);

    // However many children a process has: the families are listed without a bound.
    let many: Vec<_> = (0..300).map(|_| shm.child()).collect();
    let blocks: Vec<_> = many.iter().map(|child| child.alloc(16).unwrap()).collect();
    fork(|| {
        for (index, child) in many.iter().enumerate() {
            assert_eq!(child.alloc(16), None, "the copy of child {index} handed out a block");
        }
    })
    .succeeds("the forked copies of 300 child pools hand out nothing");
    for (child, block) in many.iter().zip(blocks) {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
    drop(many);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A worker that forked a process of its own before it died: the new process inherited the
/// worker's descriptors, yet the worker's chunks come back while it still runs (the fork
/// handler closes its copy of the one the worker's slot is held through).
fn a_dead_workers_forked_child_does_not_keep_its_chunks() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let mut worker = fork(|| {
        let child = shm.child();
        let _scratch: Vec<_> = (0..16).map(|_| child.alloc(4 * KIB).unwrap()).collect();
        let grandchild = fork(|| {
            mailbox[1].store(std::process::id().into(), Ordering::Release);
            idle_until_killed()
        });
        // The grandchild outlives this worker: it is killed by pid below.
        core::mem::forget(grandchild);
        await_word(&mailbox[1]);
        mailbox[0].store(1, Ordering::Release);
        idle_until_killed()
    });
    await_word(&mailbox[0]);
    worker.kill_dead();
    let grandchild = mailbox[1].load(Ordering::Acquire) as libc::pid_t;
    let report = shm.reclaim_dead().unwrap();
    // SAFETY: the grandchild was reparented, not reaped: its pid is still its own.
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    assert_eq!(report.processes, 1, "{report:?}");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A worker that is pid 2 of a new user and pid namespace, as in a container: the namespace's
/// first process (its init, whose death would end the namespace) starts it and kills it when
/// told.
struct NamespacedWorker {
    /// The process that made the namespace, and through its children, the worker.
    inside: Child,
    /// 0: namespace made (1) or refused (errno + 2); 1: the worker ran its part; 2: kill it;
    /// 3: it is dead.
    mailbox: SharedWords<AtomicU64>,
}

impl NamespacedWorker {
    /// Starts the worker, which runs `work` and then idles until it is killed; returns once
    /// `work` has run. `None`, after saying why, where the kernel refuses the namespace.
    fn start(work: impl FnOnce()) -> Option<Self> {
        let mailbox = SharedWords::<AtomicU64>::new(4);
        let inside = fork(|| {
            // SAFETY: this child has a single thread, as `unshare(CLONE_NEWUSER)` requires; it
            // changes only this process's namespaces, and its children's.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) } != 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                mailbox[0].store(errno as u64 + 2, Ordering::Release);
                return;
            }
            mailbox[0].store(1, Ordering::Release);
            fork(|| {
                let mut worker = fork(|| {
                    assert_eq!(std::process::id(), 2, "the worker is pid 2 of its namespace");
                    work();
                    mailbox[1].store(1, Ordering::Release);
                    idle_until_killed()
                });
                await_word(&mailbox[2]);
                worker.kill_dead();
                mailbox[3].store(1, Ordering::Release);
            })
            .succeeds("the namespace's first process");
        });
        let entered = await_word(&mailbox[0]);
        if entered != 1 {
            inside.succeeds("the process that tried to make a namespace");
            println!(
                "  skipped: the kernel refuses a new user and pid namespace here: {}",
                std::io::Error::from_raw_os_error((entered - 2) as i32)
            );
            return None;
        }
        await_word(&mailbox[1]);
        Some(Self { inside, mailbox })
    }

    /// Has the worker killed, and returns once it is dead.
    fn kill(&self) {
        self.mailbox[2].store(1, Ordering::Release);
        await_word(&self.mailbox[3]);
    }

    /// Waits for the processes inside the namespace to end, each successfully.
    fn finish(self) {
        self.inside.succeeds("the processes inside the namespace");
    }
}

/// A worker in a pid namespace of its own, whose pid there means nothing outside: while it
/// lives, the master's reclaims leave its chunks alone; once it dies, one reclaim gives them back.
fn a_worker_in_another_pid_namespace_keeps_its_chunks_until_it_dies() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let start = shm.available();
    let Some(worker) = NamespacedWorker::start(|| {
        let child = shm.child();
        let scratch: Vec<_> = (0..32).map(|_| child.alloc(4 * KIB).unwrap()).collect();
        // Held until the worker is killed.
        core::mem::forget((scratch, child));
    }) else {
        return;
    };
    assert_eq!(shm.reclaim_dead().unwrap(), Default::default(), "the worker is alive");
    let lent = shm.stats().unwrap().lent_bytes;
    assert!(lent >= 32 * 4 * KIB);
    worker.kill();
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.bytes), (1, lent), "{report:?}");
    worker.finish();
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A `ShmMutex` held by a worker in a pid namespace of its own, whose pid there means nothing
/// outside: while the worker lives, the master's timed lock gives up and takes nothing over;
/// once it is killed, the master's lock gets the mutex with the death reported, and the value
/// the worker left.
fn a_mutex_held_in_another_pid_namespace_is_handed_on_only_when_its_holder_dies() {
    let shm = ShmPool::new(MIB).unwrap();
    let mutex = ShmMutex::new_in(0u64, &shm).unwrap();
    let Some(worker) = NamespacedWorker::start(|| {
        let mut guard = mutex.lock().unwrap();
        *guard = 42;
        // Held until the worker is killed.
        core::mem::forget(guard);
    }) else {
        return;
    };
    let waited = mutex.try_lock_for(Duration::from_millis(50)).map(|_| ());
    assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "the holder lives: {waited:?}");
    assert_eq!(mutex.takeovers(), 0);
    worker.kill();
    let guard = mutex.try_lock_for(TAKEOVER_BOUND).unwrap();
    assert!(guard.holder_died(), "the holder was killed holding the mutex");
    assert_eq!(*guard, 42);
    drop(guard);
    assert_eq!(mutex.takeovers(), 1);
    worker.finish();
    assert!(!mutex.lock().unwrap().holder_died());
}

/// With every slot of the owner table held by a live process, one more process still gets
/// chunks for its child pools, but nobody answers for them: its death gives nothing back. The
/// others' deaths give theirs back as ever.
fn past_a_full_owner_table_chunks_are_lent_but_not_reclaimed() {
    const SLOTS: usize = 128;
    let shm = ShmPool::new(16 * MIB).unwrap();
    let ready = SharedWords::<AtomicU64>::new(SLOTS + 1);
    let mut workers: Vec<Child> = (0..=SLOTS)
        .map(|index| {
            let (shm, ready) = (&shm, &ready);
            let worker = fork(move || {
                let child = shm.child();
                let _block = child.alloc(64).expect("a chunk, slot or no slot");
                if index == SLOTS {
                    // A child whose chunks must be this process's own (the C API's) gets none.
                    let owned = melon_alloc_shm::plumbing::owned_child(shm, None).unwrap();
                    assert!(owned.alloc(64).is_none(), "a chunk lent without a slot");
                }
                ready[index].store(1, Ordering::Release);
                idle_until_killed()
            });
            await_word(&ready[index]);
            worker
        })
        .collect();
    let chunk = melon_alloc_core::CHUNK_SIZE;
    assert_eq!(shm.stats().unwrap().lent_bytes, (SLOTS + 1) * chunk);
    let mut last = workers.pop().unwrap();
    last.kill_dead();
    assert_eq!(shm.reclaim_dead().unwrap().processes, 0, "the last one held no slot");
    for worker in &mut workers {
        worker.kill_dead();
    }
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.bytes), (SLOTS, SLOTS * chunk), "{report:?}");
    assert_eq!(shm.stats().unwrap().lent_bytes, chunk, "the slotless chunk stays lent");
    shm.check().unwrap();
}

/// When every slot of the owner table belongs to a dead process, the next process to claim one
/// gives the dead's chunks back first, with nobody calling `reclaim_dead`, and gets a slot.
fn a_claim_in_a_full_table_of_the_dead_reclaims_them() {
    const SLOTS: usize = 128;
    let shm = ShmPool::new(16 * MIB).unwrap();
    let ready = SharedWords::<AtomicU64>::new(SLOTS + 1);
    for index in 0..SLOTS {
        let (shm, ready) = (&shm, &ready);
        let mut worker = fork(move || {
            let child = shm.child();
            let _block = child.alloc(64).expect("a chunk");
            ready[index].store(1, Ordering::Release);
            idle_until_killed()
        });
        await_word(&ready[index]);
        worker.kill_dead();
    }
    let chunk = melon_alloc_core::CHUNK_SIZE;
    assert_eq!(shm.stats().unwrap().lent_bytes, SLOTS * chunk, "the dead still hold their chunks");
    let mut last = fork(|| {
        let child = shm.child();
        let _block = child.alloc(64).expect("a chunk");
        ready[SLOTS].store(1, Ordering::Release);
        idle_until_killed()
    });
    await_word(&ready[SLOTS]);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.reclaimed_processes, SLOTS as u64, "the claim reclaimed the dead");
    assert_eq!(stats.lent_bytes, chunk, "only the last worker's chunk is out");
    last.kill_dead();
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.bytes), (1, chunk), "the last worker held a slot");
    shm.check().unwrap();
}

/// A producer hands blocks of its child pool off to a consumer process, which checks and frees
/// them: the producer's child takes the freed blocks back and serves a second batch from them,
/// with no new chunk. The producer is then killed with that batch out: its scratch comes back
/// at once, the chunks holding the batch when the consumer has freed the last block of it, with
/// every block intact until then; all of them count as reclaimed from its death.
fn handed_off_blocks_cross_processes_and_outlive_their_producer() {
    const BLOCKS: usize = 2000;
    let size = |index: usize| 16 + index % 300;
    let shm = ShmPool::new(16 * MIB).unwrap();
    let start = shm.available();
    // 0: batch 1 ready; 1: batch 1 freed; 2: batch 2 ready; then the offsets, plus 1.
    let mailbox = SharedWords::<AtomicU64>::new(3 + BLOCKS);
    let batch = |shm: &ShmPool, child: &melon_alloc_heap::ChildPool<'_>, seed: u64| {
        for index in 0..BLOCKS {
            let block = child.alloc(size(index)).unwrap();
            // SAFETY: the block is in use and holds `size(index)` bytes.
            unsafe { stamp(block, size(index), seed + index as u64) };
            // SAFETY: the block is the child's, in use, handed off once, and freed by the
            // consumer alone.
            let offset = unsafe { shm.hand_off(block) }.unwrap();
            mailbox[3 + index].store(offset as u64 + 1, Ordering::Release);
        }
    };
    let mut producer = fork(|| {
        let child = shm.child();
        let _scratch: Vec<_> = (0..64).map(|_| child.alloc(16 * KIB).unwrap()).collect();
        batch(&shm, &child, 0);
        mailbox[0].store(1, Ordering::Release);
        await_word(&mailbox[1]);
        let lent = shm.stats().unwrap().lent_bytes;
        batch(&shm, &child, 1 << 20);
        assert_eq!(shm.stats().unwrap().lent_bytes, lent, "the second batch reused the first");
        mailbox[2].store(1, Ordering::Release);
        idle_until_killed()
    });
    let consume = |seed: u64| {
        for index in 0..BLOCKS {
            let offset = mailbox[3 + index].swap(0, Ordering::Acquire) - 1;
            let block = shm.ptr_at(offset as usize).unwrap();
            // SAFETY: the producer stamped the block before handing it off.
            assert!(unsafe { has_stamp(block, size(index), seed + index as u64) }, "{index}");
            // SAFETY: the block was handed off to this process, which frees it once.
            unsafe { shm.try_free(block) }.unwrap();
        }
    };
    fork(|| {
        await_word(&mailbox[0]);
        consume(0);
        mailbox[1].store(1, Ordering::Release);
    })
    .succeeds("the consumer of the first batch");
    await_word(&mailbox[2]);
    let lent = shm.stats().unwrap().lent_bytes;
    producer.kill_dead();
    let report = shm.reclaim_dead().unwrap();
    assert_eq!(report.processes, 1);
    assert!(report.bytes >= 64 * 16 * KIB, "the scratch came back: {report:?}");
    let orphaned = shm.stats().unwrap().lent_bytes;
    assert_eq!(orphaned, lent - report.bytes, "the batch's chunks wait");
    assert!(orphaned > 0);
    // The dead process's bytes are counted at its death, those waiting as orphans too.
    assert_eq!(shm.stats().unwrap().reclaimed_bytes, lent as u64);
    shm.check().unwrap();
    fork(|| consume(1 << 20)).succeeds("the consumer of the second batch");
    let stats = shm.stats().unwrap();
    assert_eq!((stats.lent_bytes, stats.reclaimed_bytes), (0, lent as u64), "counted once");
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A producer hands a block off to a consumer, and both are killed, the consumer holding it: the
/// producer's chunk waits as an orphan for a free that will never come, which `reclaim_dead`
/// cannot tell, and the stats show; the master, knowing both gone, gives it back with
/// `reclaim_orphans`.
fn orphans_of_dead_producers_and_consumers_come_back_on_demand() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let start = shm.available();
    // 0: the block's offset, plus 1; 1: the consumer holds it.
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let mut producer = fork(|| {
        let child = shm.child();
        let block = child.alloc(200).unwrap();
        // SAFETY: the block is in use and holds 200 bytes.
        unsafe { stamp(block, 200, 7) };
        // SAFETY: the block is the child's, in use, handed off once, and freed by the consumer
        // alone (which never does).
        let offset = unsafe { shm.hand_off(block) }.unwrap();
        mailbox[0].store(offset as u64 + 1, Ordering::Release);
        idle_until_killed()
    });
    let mut consumer = fork(|| {
        let offset = await_word(&mailbox[0]) - 1;
        let block = shm.ptr_at(offset as usize).unwrap();
        // SAFETY: the producer stamped the block before handing it off.
        assert!(unsafe { has_stamp(block, 200, 7) });
        mailbox[1].store(1, Ordering::Release);
        idle_until_killed()
    });
    await_word(&mailbox[1]);
    producer.kill_dead();
    consumer.kill_dead();
    let stats = shm.stats().unwrap();
    let chunk = melon_alloc_core::CHUNK_SIZE;
    assert_eq!((stats.orphaned_bytes, stats.lent_bytes), (0, chunk), "lent until found dead");
    let report = shm.reclaim_dead().unwrap();
    assert_eq!((report.processes, report.chunks), (1, 0), "the producer's chunk waits");
    let stats = shm.stats().unwrap();
    assert_eq!((stats.orphaned_bytes, stats.lent_bytes), (chunk, chunk));
    assert!(stats.to_string().contains(&format!("{chunk} of them orphaned")), "{stats}");
    // SAFETY: the only process that held a block of the orphan is gone.
    let report = unsafe { shm.reclaim_orphans() }.unwrap();
    assert_eq!((report.chunks, report.bytes), (1, chunk));
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A forked process that claims its own slots in two pools, in the other order from its parent,
/// gets descriptor numbers its parent's claims had: forgetting the parent's claim must not close
/// the process's own, or its live chunks would look dead.
fn a_forked_process_keeps_its_own_slots_whatever_descriptors_it_reuses() {
    let (first, second) = (ShmPool::new(4 * MIB).unwrap(), ShmPool::new(4 * MIB).unwrap());
    let keep: Vec<_> = [&first, &second].iter().map(|shm| shm.child()).collect();
    for child in &keep {
        assert!(child.alloc(64).is_some(), "the parent claims a slot in each pool");
    }
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let mut worker = fork(|| {
        // Claimed in the other order: the second pool's description may get the number the
        // parent's first one had, which the fork handler closed in this process.
        let second_child = second.child();
        let _held = second_child.alloc(64).unwrap();
        let first_child = first.child();
        let _also = first_child.alloc(64).unwrap();
        mailbox[0].store(1, Ordering::Release);
        await_word(&mailbox[1]);
        idle_until_killed()
    });
    await_word(&mailbox[0]);
    for shm in [&first, &second] {
        assert_eq!(shm.reclaim_dead().unwrap(), Default::default(), "the worker is alive");
    }
    mailbox[1].store(1, Ordering::Release);
    worker.kill_dead();
    for shm in [&first, &second] {
        assert_eq!(shm.reclaim_dead().unwrap().processes, 1);
    }
    drop(keep);
    for shm in [&first, &second] {
        assert_eq!(shm.stats().unwrap().lent_bytes, 0);
        shm.check().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The hammer
// ---------------------------------------------------------------------------------------------

/// Live blocks a hammer process holds at most.
const MAX_LIVE: usize = 256;
/// The largest block a hammer process asks for.
const MAX_SIZE: usize = 4096;
/// Owner-table bit marking the first unit of a block.
const START: u32 = 1 << 31;
/// The owner table's unit: the pool's smallest block.
const UNIT: usize = 16;
/// The longest any single operation may take: it only ever waits for a lock, and a lock held by
/// a dead process is taken over long before this.
const STALL: Duration = TAKEOVER_BOUND;

struct Live {
    block: NonNull<u8>,
    size: usize,
    span: usize,
    seq: u64,
}

/// One process of the hammer: random allocations, reallocations and frees, each block stamped
/// with the process id and a sequence number across its whole length and checked before it goes,
/// each claimed in the shared owner table unit by unit so that a block handed out twice is
/// caught the moment its second owner claims it.
struct Worker<'a> {
    shm: &'a ShmPool,
    owners: &'a [AtomicU32],
    /// For a process that will be killed: set while it holds the lock for a batch of
    /// operations, so that the parent can aim its kill at that.
    holding: Option<&'a AtomicU64>,
    /// For a process that survives kills it measures: the [`Watch`] words, and until when to
    /// go on.
    watch: Option<&'a [AtomicU64]>,
    tag: u32,
    pid: u64,
    rng: Rng,
    live: Vec<Live>,
    seq: u64,
    /// The bytes blocks are stamped with, from an offset below 256: as long as the largest
    /// block and 256 more.
    pattern: Vec<u8>,
}

impl<'a> Worker<'a> {
    fn new(shm: &'a ShmPool, owners: &'a [AtomicU32], tag: u32, seed: u64) -> Self {
        Self::with_blocks_up_to(shm, owners, tag, seed, MAX_SIZE)
    }

    /// A worker that may also hold blocks of up to `largest` bytes.
    fn with_blocks_up_to(
        shm: &'a ShmPool,
        owners: &'a [AtomicU32],
        tag: u32,
        seed: u64,
        largest: usize,
    ) -> Self {
        let pid = u64::from(std::process::id());
        let mut rng = Rng(seed ^ pid.rotate_left(32));
        let pattern = (0..largest.max(MAX_SIZE) + 256).map(|_| rng.next() as u8).collect();
        Self {
            shm,
            owners,
            holding: None,
            watch: None,
            tag,
            pid,
            rng,
            live: Vec::new(),
            seq: 0,
            pattern,
        }
    }

    fn size(&mut self) -> usize {
        match self.rng.below(10) {
            0..=5 => 16 + self.rng.below(241) as usize,
            6..=8 => 257 + self.rng.below(1792) as usize,
            _ => 2049 + self.rng.below((MAX_SIZE - 2048) as u64) as usize,
        }
    }

    /// Runs `ops` operations (forever if `None`; a watching process goes on until told to
    /// stop), then frees everything.
    fn run(&mut self, ops: Option<u64>) {
        let mut done = 0;
        let told_to_stop = |watch: Option<&[AtomicU64]>| {
            watch.is_none_or(|w| w[Watch::STOP].load(Ordering::Acquire) != 0)
        };
        while ops.is_none_or(|ops| done < ops) || !told_to_stop(self.watch) {
            let start = Instant::now();
            let roll = self.rng.below(100);
            if self.holding.is_some() && roll < 50 {
                self.batch();
            } else if self.live.len() < MAX_LIVE && (self.live.is_empty() || roll < 50) {
                self.alloc();
            } else if roll < 62 {
                self.realloc();
            } else {
                let index = self.rng.below(self.live.len() as u64) as usize;
                self.free(index);
            }
            let took = start.elapsed();
            assert!(took < STALL, "an operation took {took:?}");
            if let Some(watch) = self.watch {
                Watch::note_progress(self.shm, watch);
            }
            done += 1;
        }
        assert!(self.seq >= done / 4, "{} blocks allocated in {done} operations", self.seq);
        while !self.live.is_empty() {
            self.free(self.live.len() - 1);
        }
    }

    /// Allocates and frees under one hold of the lock, as a process does when it has several
    /// operations to make.
    fn batch(&mut self) {
        let shm = self.shm;
        let mut guard = shm.lock().unwrap();
        let holding = self.holding.unwrap();
        holding.store(1, Ordering::Release);
        for _ in 0..16 {
            if self.live.len() < MAX_LIVE && (self.live.is_empty() || self.rng.below(2) == 0) {
                let size = self.size();
                let block = guard.alloc(size).expect("the pool ran out");
                let span = guard.usable_size(block).unwrap();
                self.claim(block, span);
                self.seq += 1;
                let live = Live { block, size, span, seq: self.seq };
                self.stamp(&live);
                self.live.push(live);
            } else {
                let index = self.rng.below(self.live.len() as u64) as usize;
                let live = self.live.swap_remove(index);
                self.verify(&live);
                self.release(live.block, live.span);
                // SAFETY: the block is this process's, in use, and freed once.
                unsafe { guard.free(live.block) }.unwrap();
            }
        }
        holding.store(0, Ordering::Release);
    }

    fn alloc(&mut self) {
        let size = self.size();
        self.alloc_sized(size);
    }

    /// Allocates `size` bytes, at most the largest block the worker was made for.
    fn alloc_sized(&mut self, size: usize) {
        let (block, span) = match self.rng.below(3) {
            0 => {
                let block = self.shm.alloc(size).expect("the pool ran out");
                (block, self.shm.usable_size(block).unwrap())
            }
            1 => {
                let block = self.shm.alloc_zeroed(size).expect("the pool ran out");
                // SAFETY: the block was just handed to this process and holds `size` bytes.
                let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), size) };
                assert!(bytes.iter().all(|&byte| byte == 0), "alloc_zeroed left data");
                (block, self.shm.usable_size(block).unwrap())
            }
            _ => {
                let mut guard = self.shm.lock().unwrap();
                let block = guard.alloc(size).expect("the pool ran out");
                (block, guard.usable_size(block).unwrap())
            }
        };
        assert!(span >= size && span % UNIT == 0, "size {size}, usable {span}");
        assert_eq!(block.as_ptr() as usize % UNIT, 0);
        self.claim(block, span);
        self.seq += 1;
        let live = Live { block, size, span, seq: self.seq };
        self.stamp(&live);
        self.live.push(live);
    }

    fn realloc(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let index = self.rng.below(self.live.len() as u64) as usize;
        let new_size = self.size();
        let old = &self.live[index];
        self.verify(old);
        let (old_block, old_size, old_span, old_seq) = (old.block, old.size, old.span, old.seq);
        self.release(old_block, old_span);
        // SAFETY: the block is this process's, in use; if it moves, the old pointer is dropped.
        let block = unsafe { self.shm.realloc(old_block, new_size) }.expect("the pool ran out");
        let span = self.shm.usable_size(block).unwrap();
        self.claim(block, span);
        let kept = Live { block, size: old_size.min(new_size), span, seq: old_seq };
        self.verify(&kept);
        self.seq += 1;
        let live = Live { block, size: new_size, span, seq: self.seq };
        self.stamp(&live);
        self.live[index] = live;
    }

    fn free(&mut self, index: usize) {
        let live = self.live.swap_remove(index);
        self.verify(&live);
        self.release(live.block, live.span);
        // SAFETY: the block is this process's, in use, and freed once.
        unsafe { self.shm.try_free(live.block) }.unwrap();
    }

    fn units(&self, block: NonNull<u8>, span: usize) -> core::ops::Range<usize> {
        let first = self.shm.offset_of(block).unwrap() / UNIT;
        first..first + span / UNIT
    }

    fn claim(&self, block: NonNull<u8>, span: usize) {
        let units = self.units(block, span);
        let first = units.start;
        for unit in units {
            let mark = if unit == first { self.tag | START } else { self.tag };
            if let Err(owner) =
                self.owners[unit].compare_exchange(0, mark, Ordering::AcqRel, Ordering::Acquire)
            {
                panic!(
                    "unit at offset {:#x} of a new block ({span} bytes at {:#x}) belongs to \
                     process tag {}: handed out twice",
                    unit * UNIT,
                    first * UNIT,
                    owner & !START
                );
            }
        }
    }

    /// Gives the block's units back, its first unit last, so that an owner-table entry with the
    /// start mark always means a block still allocated.
    fn release(&self, block: NonNull<u8>, span: usize) {
        let units = self.units(block, span);
        let first = units.start;
        for unit in units.rev() {
            let mark = if unit == first { self.tag | START } else { self.tag };
            if let Err(owner) =
                self.owners[unit].compare_exchange(mark, 0, Ordering::AcqRel, Ordering::Acquire)
            {
                panic!(
                    "unit at offset {:#x} of a block of this process reads {owner:#x}",
                    unit * UNIT
                );
            }
        }
    }

    fn stamp_head(&self, seq: u64) -> [u8; 8] {
        (self.pid << 32 | seq).to_le_bytes()
    }

    fn stamp(&self, live: &Live) {
        // SAFETY: the block is this process's, in use, and holds `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(live.block.as_ptr(), live.size) };
        let head = self.stamp_head(live.seq);
        let split = live.size.min(8);
        bytes[..split].copy_from_slice(&head[..split]);
        let from = (live.seq % 256) as usize;
        bytes[split..].copy_from_slice(&self.pattern[from..from + live.size - split]);
    }

    fn verify(&self, live: &Live) {
        // SAFETY: as in `stamp`.
        let bytes = unsafe { core::slice::from_raw_parts(live.block.as_ptr(), live.size) };
        let head = self.stamp_head(live.seq);
        let split = live.size.min(8);
        let from = (live.seq % 256) as usize;
        let intact = bytes[..split] == head[..split]
            && bytes[split..] == self.pattern[from..from + live.size - split];
        assert!(
            intact,
            "block {:p} of {} bytes (sequence {}) was overwritten",
            live.block, live.size, live.seq
        );
    }
}

/// The pool and owner table of a hammer run.
struct Arena {
    shm: ShmPool,
    owners: SharedWords<AtomicU32>,
    start: usize,
}

impl Arena {
    fn new(capacity: usize) -> Self {
        Self::over(ShmPool::new(capacity).unwrap())
    }

    /// The owner table for `shm`, as large as the pool can grow.
    fn over(shm: ShmPool) -> Self {
        let start = shm.available();
        Self { owners: SharedWords::new(shm.max_capacity() / UNIT), shm, start }
    }

    fn spawn(&self, tag: u32, seed: u64, ops: Option<u64>) -> Child {
        fork(|| Worker::new(&self.shm, &self.owners, tag, seed).run(ops))
    }

    /// A process that runs `ops` operations and then until told to stop, noting in `watch`
    /// when it goes on after a kill.
    fn spawn_watching(&self, tag: u32, seed: u64, ops: u64, watch: &[AtomicU64]) -> Child {
        fork(|| {
            let mut worker = Worker::new(&self.shm, &self.owners, tag, seed);
            worker.watch = Some(watch);
            worker.run(Some(ops));
        })
    }

    /// A process that runs until it is killed, often holding the lock, which it flags in
    /// `holding`.
    fn spawn_victim(&self, tag: u32, seed: u64, holding: &AtomicU64) -> Child {
        fork(|| {
            let mut worker = Worker::new(&self.shm, &self.owners, tag, seed);
            worker.holding = Some(holding);
            worker.run(None);
        })
    }
}

fn hammer() {
    const WORKERS: u32 = 8;
    let arena = Arena::new(32 * MIB);
    let seed = seed();
    let workers: Vec<Child> =
        (1..=WORKERS).map(|tag| arena.spawn(tag, seed, Some(HAMMER_OPS))).collect();
    for worker in workers {
        worker.succeeds("a hammer process");
    }
    let shm = &arena.shm;
    shm.check().unwrap();
    let stats = shm.stats().unwrap();
    assert_eq!(stats.live_blocks, 0);
    assert_eq!(shm.available(), arena.start);
    assert_eq!((stats.lock_takeovers, stats.operations_undone), (0, 0), "nobody died");
    let claimed = arena.owners.iter().filter(|owner| owner.load(Ordering::Relaxed) != 0).count();
    assert_eq!(claimed, 0, "every unit was released");
}

/// Blocks written before a pool grows, as (offset, length, seed), which every process reads back
/// after: an offset keeps its bytes, wherever each process has mapped the pool.
fn witnesses(shm: &ShmPool, seeds: u64) -> Vec<(usize, usize, u64)> {
    [(100, 0), (5000, 1), (200_000, 2)]
        .into_iter()
        .map(|(len, seed)| {
            let block = shm.alloc(len).unwrap();
            // SAFETY: the block was just handed to this process and holds `len` bytes.
            unsafe { stamp(block, len, seeds + seed) };
            (shm.offset_of(block).unwrap(), len, seeds + seed)
        })
        .collect()
}

/// Whether every witness still holds its bytes, read through this process's mapping.
fn witnesses_hold(shm: &ShmPool, witnesses: &[(usize, usize, u64)]) -> bool {
    witnesses.iter().all(|&(offset, len, seed)| {
        // SAFETY: a witness block, in use until the case ends, which nothing writes.
        shm.ptr_at(offset).is_some_and(|block| unsafe { has_stamp(block, len, seed) })
    })
}

/// Waits until `word` reaches `value`, for at most the time a child may run.
fn await_count(word: &AtomicU64, value: u64) {
    let start = Instant::now();
    while word.load(Ordering::Acquire) < value {
        assert!(
            start.elapsed() < CHILD_LIMIT,
            "{} of {value} processes got there",
            word.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Four processes fill a pool that starts at 16 MiB to 600 MiB between them, which grows it by
/// dozens of segments under their feet, hammer it, and drain it, while the hammer's owner table
/// checks that no block is handed out twice. Blocks written before the growth keep their bytes
/// at their offsets in every process.
fn hammer_grows_a_pool() {
    const WORKERS: u32 = 4;
    const SHARE: usize = 150 * MIB;
    const LARGEST: usize = 256 * KIB;
    let shm = ShmPool::builder().capacity(16 * MIB).max_capacity(GIB).build().unwrap();
    let start = shm.available();
    let witnessed = witnesses(&shm, 40);
    let before: Vec<_> = witnessed.iter().map(|&(offset, ..)| shm.ptr_at(offset)).collect();
    let arena = Arena::over(shm);
    let shm = &arena.shm;
    assert_eq!(shm.stats().unwrap().segments, 1);
    let seed = seed();
    // Processes that hold their share, and the parent's word to go on.
    let words = SharedWords::<AtomicU64>::new(2);
    let (filled, go) = (&words[0], &words[1]);
    let workers: Vec<Child> = (1..=WORKERS)
        .map(|tag| {
            fork(|| {
                let mut worker = Worker::with_blocks_up_to(shm, &arena.owners, tag, seed, LARGEST);
                let mut held = 0;
                while held < SHARE {
                    // Mostly large blocks, each claimed unit by unit; now and then the
                    // ordinary mix, frees and moves included.
                    match worker.rng.below(16) {
                        0 => worker.alloc(),
                        1 => worker.realloc(),
                        2 if !worker.live.is_empty() => {
                            let index = worker.rng.below(worker.live.len() as u64) as usize;
                            worker.free(index);
                        }
                        _ => {
                            let spread = worker.rng.below((LARGEST - 64 * KIB) as u64) as usize;
                            worker.alloc_sized(64 * KIB + spread);
                        }
                    }
                    held = worker.live.iter().map(|live| live.span).sum();
                }
                assert!(witnesses_hold(shm, &witnessed), "the witnesses, after growing");
                filled.fetch_add(1, Ordering::AcqRel);
                await_count(go, 1);
                worker.run(Some(HAMMER_OPS / 10));
                assert!(worker.live.is_empty());
                assert!(witnesses_hold(shm, &witnessed), "the witnesses, after draining");
            })
        })
        .collect();
    await_count(filled, u64::from(WORKERS));
    let stats = shm.stats().unwrap();
    println!(
        "  filled: {} MiB in use, {} segments, capacity {} MiB",
        stats.bytes_in_use / MIB,
        stats.segments,
        stats.capacity / MIB
    );
    assert!(stats.bytes_in_use >= WORKERS as usize * SHARE, "{stats:?}");
    assert!(stats.capacity >= WORKERS as usize * SHARE && stats.capacity <= GIB, "{stats:?}");
    assert_eq!(stats.capacity, stats.segments * 16 * MIB);
    shm.check().unwrap();
    go.store(1, Ordering::Release);
    for worker in workers {
        worker.succeeds("a process of the growing hammer");
    }
    // The parent had not mapped the pages the workers grew the pool by.
    assert!(witnesses_hold(shm, &witnessed), "the witnesses, in the parent");
    for (&(offset, ..), before) in witnessed.iter().zip(before) {
        let block = shm.ptr_at(offset);
        assert_eq!(block, before, "a block keeps its address");
        // SAFETY: a witness block, in use, freed once.
        unsafe { shm.try_free(block.unwrap()) }.unwrap();
    }
    shm.check().unwrap();
    let grown = shm.stats().unwrap();
    assert_eq!((grown.live_blocks, grown.segments), (0, stats.segments));
    assert_eq!(shm.available(), grown.data_bytes, "every byte is free again");
    assert_eq!(shm.available(), start * grown.segments, "each segment as the first");
    let claimed = arena.owners.iter().filter(|owner| owner.load(Ordering::Relaxed) != 0).count();
    assert_eq!(claimed, 0, "every unit was released");
}

fn hammer_with_random_kills() {
    const SURVIVORS: u32 = 4;
    const VICTIMS: u32 = 3;
    let arena = Arena::new(32 * MIB);
    let seed = seed();
    let mut rng = Rng(seed);
    let holding = SharedWords::<AtomicU64>::new(VICTIMS as usize);
    let survivors: Vec<Child> =
        (1..=SURVIVORS).map(|tag| arena.spawn(tag, seed, Some(HAMMER_OPS / 2))).collect();
    let victims: Vec<Child> = (0..VICTIMS)
        .map(|index| arena.spawn_victim(SURVIVORS + 1 + index, seed, &holding[index as usize]))
        .collect();
    // Each victim dies at a random moment, most often while it holds the lock.
    for (victim, holding) in victims.iter().zip(holding.iter()) {
        std::thread::sleep(Duration::from_millis(10 + rng.below(150)));
        let start = Instant::now();
        while holding.load(Ordering::Acquire) == 0 && start.elapsed() < Duration::from_secs(1) {
            std::hint::spin_loop();
        }
        victim.signal_kill();
    }
    for mut victim in victims {
        assert_eq!(victim.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    }
    for survivor in survivors {
        survivor.succeeds("a survivor carries on after the kills");
    }
    let shm = &arena.shm;
    shm.check().unwrap();
    let stats = shm.stats().unwrap();
    println!(
        "  {} lock takeovers, {} operations undone, {} blocks left by the killed",
        stats.lock_takeovers, stats.operations_undone, stats.live_blocks
    );
    // The killed processes' blocks are the only ones left. Those the owner table knows of are
    // freed on their behalf; each killed process may have had one more in flight (between the
    // pool and the table), or two in a reallocation that was moving its block.
    let mut freed = 0;
    for (unit, owner) in arena.owners.iter().enumerate() {
        let owner = owner.load(Ordering::Relaxed);
        if owner == 0 {
            continue;
        }
        assert!(owner & !START > SURVIVORS, "a survivor left unit {unit} claimed");
        if owner & START != 0 {
            let block = shm.ptr_at(unit * UNIT).unwrap();
            // SAFETY: a killed process's block, still in use, freed once on its behalf.
            unsafe { shm.try_free(block) }.unwrap();
            freed += 1;
        }
    }
    let stats = shm.stats().unwrap();
    assert!(
        stats.live_blocks <= 2 * VICTIMS as usize,
        "{} blocks lost after freeing the {freed} the killed processes left",
        stats.live_blocks
    );
    assert!(stats.bytes_in_use <= 2 * VICTIMS as usize * MAX_SIZE);
    assert_eq!(shm.available() + stats.bytes_in_use, arena.start);
    shm.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Pid namespaces and stopped holders
// ---------------------------------------------------------------------------------------------

/// Words shared by the processes of [`hammer_across_pid_namespaces`], by index.
struct Watch;

impl Watch {
    /// Per kill (outside, inside): monotonic nanoseconds at which the parent killed the holder.
    const KILL_AT: [usize; 2] = [0, 1];
    /// Per kill: the first monotonic nanoseconds after it at which a survivor held the lock.
    const RESUMED_AT: [usize; 2] = [2, 3];
    /// Set when the survivors may stop.
    const STOP: usize = 4;
    /// How entering the namespace went: 1 entered, or the errno of `unshare` plus 2.
    const NAMESPACE: usize = 5;
    /// Per victim (outside, inside): its pid as the parent sees it, once it holds the lock.
    const VICTIM_PID: [usize; 2] = [6, 7];
    /// Per victim: set by the parent when the victim may take the lock and keep it.
    const GO: [usize; 2] = [8, 9];
    const LEN: usize = 10;

    /// After an operation of a surviving process: for a kill that nobody has yet noted the
    /// survivors going on after, takes the lock and notes the time. Holding the lock after the
    /// kill proves the dead holder's lock was handed on, since it held the lock from before the
    /// kill until it died.
    fn note_progress(shm: &ShmPool, watch: &[AtomicU64]) {
        for kill in 0..2 {
            let kill_at = watch[Self::KILL_AT[kill]].load(Ordering::Acquire);
            if kill_at == 0 || watch[Self::RESUMED_AT[kill]].load(Ordering::Acquire) != 0 {
                continue;
            }
            let guard = shm.lock().unwrap();
            let now = monotonic_nanos();
            let _ = watch[Self::RESUMED_AT[kill]].compare_exchange(
                0,
                now,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            drop(guard);
        }
    }
}

/// The monotonic clock in nanoseconds: the same clock in every pid namespace.
fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` writes the time into the local struct.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) }, 0);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The calling process's pid as the parent's pid namespace numbers it: `/proc` was mounted
/// there, so its `self` link names that pid even from inside a new pid namespace.
fn pid_outside() -> u64 {
    let link = std::fs::read_link("/proc/self").unwrap();
    link.to_str().unwrap().parse().unwrap()
}

/// A process that works a little, then, when the parent says so, takes the lock and keeps it
/// until it is killed, having told the parent its pid.
fn hold_until_killed(arena: &Arena, tag: u32, seed: u64, watch: &[AtomicU64], side: usize) {
    Worker::new(&arena.shm, &arena.owners, tag, seed).run(Some(2_000));
    await_word(&watch[Watch::GO[side]]);
    let _guard = arena.shm.lock().unwrap();
    watch[Watch::VICTIM_PID[side]].store(pid_outside(), Ordering::Release);
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The hammer with processes on both sides of a pid namespace boundary, as when a container
/// shares the pool's memfd with the host: four processes outside, four in a new user and pid
/// namespace, and one more on each side that takes the lock and is killed holding it. A thread
/// id means nothing across the boundary, so a lock that judged its holder by one would take the
/// lock from a live holder on the other side, or wait for a dead one. Nothing may be handed
/// out twice, no live holder may be taken over (one takeover per kill), and the survivors must
/// go on after each kill, within the bound of a takeover.
fn hammer_across_pid_namespaces() {
    const PER_SIDE: u32 = 4;
    const OPS: u64 = HAMMER_OPS / 4;
    /// A liveness bound, not a performance target: a waiter finds the holder dead within 5 ms
    /// of its death, but ten processes on a loaded machine may wait far longer for a core.
    const GO_ON_BOUND: Duration = TAKEOVER_BOUND;
    let arena = Arena::new(32 * MIB);
    let seed = seed();
    let watch = SharedWords::<AtomicU64>::new(Watch::LEN);
    let inside = fork(|| {
        // SAFETY: this child has a single thread, as `unshare(CLONE_NEWUSER)` requires; it
        // changes only this process's namespaces, and its children's.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) } != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            watch[Watch::NAMESPACE].store(errno as u64 + 2, Ordering::Release);
            return;
        }
        watch[Watch::NAMESPACE].store(1, Ordering::Release);
        // The first child in a new pid namespace is its pid 1, its init: were it killed, the
        // kernel would kill the whole namespace, so it only starts and reaps the others.
        fork(|| {
            assert_eq!(std::process::id(), 1, "the first process of the new pid namespace");
            let workers: Vec<Child> = (1..=PER_SIDE)
                .map(|tag| arena.spawn_watching(PER_SIDE + tag, seed, OPS, &watch))
                .collect();
            let mut victim = fork(|| hold_until_killed(&arena, 2 * PER_SIDE + 2, seed, &watch, 1));
            for worker in workers {
                worker.succeeds("a hammer process inside the namespace");
            }
            assert_eq!(victim.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
        })
        .succeeds("the namespace's first process");
    });
    let entered = await_word(&watch[Watch::NAMESPACE]);
    if entered != 1 {
        let errno = (entered - 2) as i32;
        inside.succeeds("the process that tried to make a namespace");
        let refused = [libc::EPERM, libc::EINVAL, libc::ENOSYS, libc::EUSERS, libc::ENOSPC];
        assert!(
            refused.contains(&errno),
            "unshare failed: {}",
            std::io::Error::from_raw_os_error(errno)
        );
        println!(
            "  skipped: the kernel refuses a new user and pid namespace here: {}",
            std::io::Error::from_raw_os_error(errno)
        );
        return;
    }
    let workers: Vec<Child> =
        (1..=PER_SIDE).map(|tag| arena.spawn_watching(tag, seed, OPS, &watch)).collect();
    let mut outside_victim = fork(|| hold_until_killed(&arena, 2 * PER_SIDE + 1, seed, &watch, 0));

    let mut went_on = Vec::new();
    for (side, name) in ["outside", "inside"].into_iter().enumerate() {
        watch[Watch::GO[side]].store(1, Ordering::Release);
        let pid = await_word(&watch[Watch::VICTIM_PID[side]]);
        // Let the survivors pile up on the held lock.
        std::thread::sleep(Duration::from_millis(20));
        let kill_at = monotonic_nanos();
        watch[Watch::KILL_AT[side]].store(kill_at, Ordering::Release);
        // SAFETY: `pid` is the victim's, which is alive and holds the lock until this kill.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
        let resumed = await_word(&watch[Watch::RESUMED_AT[side]]);
        let gap = Duration::from_nanos(resumed.saturating_sub(kill_at));
        assert!(gap < GO_ON_BOUND, "the survivors went on {gap:?} after the kill {name}");
        went_on.push((name, gap));
    }
    assert_eq!(outside_victim.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    watch[Watch::STOP].store(1, Ordering::Release);
    for worker in workers {
        worker.succeeds("a hammer process outside the namespace");
    }
    inside.succeeds("the processes inside the namespace");

    let shm = &arena.shm;
    shm.check().unwrap();
    let stats = shm.stats().unwrap();
    let gaps: Vec<String> = went_on
        .iter()
        .map(|(side, gap)| format!("{:.2} ms after the kill {side}", gap.as_secs_f64() * 1e3))
        .collect();
    println!(
        "  {PER_SIDE} hammer processes outside and {PER_SIDE} inside a new user and pid \
         namespace, {OPS}+ operations each; 2 holders killed holding the lock (one each side): \
         {} takeovers, {} operations undone, {} blocks left; survivors went on {}",
        stats.lock_takeovers,
        stats.operations_undone,
        stats.live_blocks,
        gaps.join(", ")
    );
    assert_eq!(stats.lock_takeovers, 2, "one takeover per holder killed, and no live one");
    assert_eq!(stats.operations_undone, 0, "the holders died between operations");
    assert_eq!(stats.live_blocks, 0);
    assert_eq!(shm.available(), arena.start);
    let claimed = arena.owners.iter().filter(|owner| owner.load(Ordering::Relaxed) != 0).count();
    assert_eq!(claimed, 0, "every unit was released");
}

/// A holder stopped by SIGSTOP is alive, and no lock may take its lock over; a caller that set
/// a timeout gives up instead of waiting forever, and once the holder goes on, so does the lock.
fn a_stopped_holder_makes_timed_locks_give_up() {
    const TIMEOUT: Duration = Duration::from_millis(50);
    let shm = ShmPool::new(4 * MIB).unwrap();
    let mailbox = SharedWords::<AtomicU64>::new(2);
    let mut holder = fork(|| {
        let guard = shm.lock().unwrap();
        mailbox[0].store(1, Ordering::Release);
        while mailbox[1].load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(guard);
    });
    await_word(&mailbox[0]);
    // SAFETY: the holder is this process's own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(holder.pid, libc::SIGSTOP) }, 0);
    match shm.try_lock_for(TIMEOUT) {
        Err(ShmError::LockTimeout { waited }) => {
            assert!(waited >= TIMEOUT, "gave up after {waited:?}");
            assert!(waited < TAKEOVER_BOUND, "gave up only after {waited:?}");
        }
        other => panic!("a timed lock on a stopped holder's lock gave {other:?}"),
    }
    // The pool's own operations give up too once a timeout is set, and change nothing.
    shm.set_lock_timeout(Some(TIMEOUT));
    assert!(matches!(shm.try_alloc(64), Err(ShmError::LockTimeout { .. })));
    assert_eq!(shm.alloc(64), None);
    shm.set_lock_timeout(None);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(holder.pid, libc::SIGCONT) }, 0);
    mailbox[1].store(1, Ordering::Release);
    let mut guard = shm.try_lock_for(TAKEOVER_BOUND).unwrap();
    let block = guard.alloc(64).unwrap();
    // SAFETY: the block is in use and freed once.
    unsafe { guard.free(block) }.unwrap();
    drop(guard);
    assert_eq!(holder.wait(CHILD_LIMIT), Exit::Code(0));
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lock_takeovers, 0, "the stopped holder was alive");
    assert_eq!(stats.live_blocks, 0);
    shm.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Crashes at fail points
// ---------------------------------------------------------------------------------------------

/// A chunk whose return failed (its child pool was dropped while the thread held the lock)
/// waits in the process that held it, and goes back the next time that process takes the lock.
/// A process forked meanwhile inherits the waiting list, but gives back nothing of it: by the
/// time it takes the lock, the parent has given the chunk back and a new child pool holds it.
fn a_forked_process_leaves_its_parents_failed_returns_alone() {
    let chunk = melon_alloc_core::CHUNK_SIZE;
    let shm = ShmPool::new(MIB).unwrap();
    let start = shm.available();
    let first = shm.child();
    let block = first.alloc(64).unwrap();
    let lent_chunk = shm.offset_of(block).unwrap() / chunk;
    // SAFETY: the block came from `first` and is freed once.
    unsafe { first.free(block) };
    let guard = shm.lock().unwrap();
    drop(first);
    drop(guard);
    let flags = SharedWords::<AtomicU64>::new(1);
    let forked = fork(|| {
        await_word(&flags[0]);
        // Taking the lock does what waits to be done, of this process's.
        shm.stats().unwrap();
    });
    assert_eq!(shm.stats().unwrap().lent_bytes, 0, "the waiting chunk did not go back");
    let second = shm.child();
    let blocks: Vec<_> = (0..100).map(|_| second.alloc(64).unwrap()).collect();
    let lent = shm.stats().unwrap().lent_bytes;
    assert_eq!(lent, chunk);
    let again = shm.offset_of(blocks[0]).unwrap() / chunk;
    assert_eq!(again, lent_chunk, "the test needs the chunk lent again");
    for (seed, &block) in blocks.iter().enumerate() {
        // SAFETY: the block is in use and holds 64 bytes.
        unsafe { stamp(block, 64, seed as u64) };
    }
    flags[0].store(1, Ordering::Release);
    forked.succeeds("a forked process taking the lock");
    assert_eq!(shm.stats().unwrap().lent_bytes, lent, "the forked process gave the chunk back");
    // Nothing the pool hands out now lies in the second child's chunk.
    let mine: Vec<_> = (0..200).map(|_| shm.alloc(64).unwrap()).collect();
    for &block in &mine {
        assert_ne!(shm.offset_of(block).unwrap() / chunk, lent_chunk, "handed out twice");
        // SAFETY: the block is in use and freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }
    for (seed, &block) in blocks.iter().enumerate() {
        // SAFETY: the block is in use and was stamped with 64 bytes.
        assert!(unsafe { has_stamp(block, 64, seed as u64) }, "block {seed} was overwritten");
        // SAFETY: the block came from `second` and is freed once.
        unsafe { second.free(block) };
    }
    drop(second);
    assert_eq!(shm.available(), start);
    shm.check().unwrap();
}

/// A worker of a named pool that takes the lock once (any operation does) before it can no
/// longer open the pool's file, as after dropping privileges, keeps the identity it made then:
/// killed while it holds the lock, it is taken over.
fn a_worker_that_locks_before_it_loses_the_file_is_taken_over_when_it_dies() {
    let path = format!("/dev/shm/melon-fork-{}-identity", std::process::id());
    let _ = std::fs::remove_file(&path);
    let shm = ShmPool::builder().capacity(4 * MIB).path(&path).build().unwrap();
    let mailbox = SharedWords::<AtomicU64>::new(1);
    let mut worker = fork(|| {
        shm.stats().unwrap();
        lose_the_file(&shm, &path);
        let _guard = shm.lock().unwrap();
        mailbox[0].store(1, Ordering::Release);
        idle_until_killed();
    });
    await_word(&mailbox[0]);
    worker.kill_dead();
    assert_taken_over(&shm);
    std::fs::remove_file(&path).unwrap();
    shm.check().unwrap();
}

/// A worker of a named pool that loses the right to the pool's file right after the fork,
/// before it touches the pool (as a pre-fork server's worker drops its privileges), makes its
/// identity and claims its owner slot through the descriptions its parent opened for it before
/// the fork: killed while it holds the lock, it is taken over, and its child pool's chunks come
/// back. Whatever the file system: tmpfs, and the temporary directory's (a disk's, here).
fn a_worker_that_loses_the_file_right_after_the_fork_is_taken_over_and_reclaimed() {
    let temporary = std::env::temp_dir();
    for dir in [std::path::Path::new("/dev/shm"), temporary.as_path()] {
        worker_that_loses_the_file_is_taken_over_and_reclaimed(dir);
    }
}

/// The case above with the pool's file in `dir`.
fn worker_that_loses_the_file_is_taken_over_and_reclaimed(dir: &std::path::Path) {
    let path = dir.join(format!("melon-fork-{}-spares", std::process::id()));
    let path = path.to_str().unwrap();
    let _ = std::fs::remove_file(path);
    let shm = ShmPool::builder().capacity(4 * MIB).path(path).build().unwrap();
    let start = shm.available();
    let mailbox = SharedWords::<AtomicU64>::new(1);
    let mut worker = fork(|| {
        lose_the_file(&shm, path);
        let scratch = shm.child();
        scratch.alloc(64 << 10).unwrap();
        let guard = shm.lock().unwrap();
        mailbox[0].store(1, Ordering::Release);
        core::mem::forget((guard, scratch));
        idle_until_killed();
    });
    await_word(&mailbox[0]);
    worker.kill_dead();
    assert_taken_over(&shm);
    let stats = shm.stats().unwrap();
    assert_eq!(stats.lent_bytes, 0, "the dead worker's chunks are still lent");
    assert_eq!(shm.available(), start);
    std::fs::remove_file(path).unwrap();
    shm.check().unwrap();
}

/// A worker that closed the spare descriptions it did not use, as a program that closes every
/// descriptor it does not know does, and then forks, gives the new process its pair all the
/// same: the new pair gets the closed numbers back, and the worker's stale spares are told from
/// them by their tags.
fn closed_spare_numbers_given_back_to_new_spares_stay_the_new_processs() {
    let shm = ShmPool::new(MIB).unwrap();
    let file = file_of(shm.as_fd().as_raw_fd());
    let descriptors_of_the_pool =
        || open_descriptors().into_iter().filter(|&fd| file_of(fd) == file).collect::<Vec<_>>();
    fork(|| {
        let own = shm.as_fd().as_raw_fd();
        for fd in descriptors_of_the_pool().into_iter().filter(|&fd| fd != own) {
            // SAFETY: closes a spare description of the pool's file, as a program's `closefrom`
            // would; nothing in this process uses it.
            unsafe { libc::close(fd) };
        }
        assert_eq!(descriptors_of_the_pool(), [own]);
        fork(|| assert_eq!(descriptors_of_the_pool().len(), 3, "the pool's and the pair's"))
            .succeeds("a process forked after its parent closed its spares");
        // The worker opens its own, its spares gone.
        drop(shm.lock().unwrap());
    })
    .succeeds("a worker that closed its spares");
}

/// A fork leaves the parent's descriptors as they were: it closes its copies of the descriptions
/// it opened for the new process.
fn a_fork_leaves_the_parents_descriptors_as_they_were() {
    let pools = [ShmPool::new(MIB).unwrap(), ShmPool::new(MIB).unwrap()];
    let before = open_descriptors().len();
    for _ in 0..3 {
        fork(|| {
            for shm in &pools {
                let child = shm.child();
                assert!(child.alloc(64).is_some(), "the new process claims a slot");
                drop(shm.lock().unwrap());
            }
        })
        .succeeds("the new process");
    }
    assert_eq!(open_descriptors().len(), before);
    for shm in &pools {
        assert_eq!(shm.stats().unwrap().lent_bytes, 0);
    }
}

/// A fork while another thread frees by pointer leaves the new process free to make and drop
/// pools: the lookup of a pointer's pool takes no lock that the new process could find held by
/// a thread it lacks.
fn a_fork_while_a_thread_frees_by_pointer_lets_the_new_process_make_pools() {
    /// Stops the freeing thread when the forks are done, or one of them failed.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _shm = ShmPool::new(MIB).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let not_shared = Box::new(0u64);
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the pointer is no pool's block: it is only looked up.
                let freed = unsafe { free_shared(NonNull::from(&*not_shared).cast()) };
                assert_eq!(freed, None);
            }
        });
        let _stop = Stop(&stop);
        for _ in 0..100 {
            // SAFETY: the child only makes and drops a pool and exits; the C library makes its
            // own state (the allocator's locks) fork-safe, whatever the other thread does.
            let pid = unsafe { libc::fork() };
            after_fork(pid, || {
                // A lock left held would hang the child: the alarm ends it, and the case fails.
                // SAFETY: `alarm` has no preconditions.
                unsafe { libc::alarm(10) };
                drop(ShmPool::new(MIB).unwrap());
            })
            .succeeds("a process forked while a free looked a pointer up");
        }
    });
}

/// A process forked while its parent, a worker, makes its identities through the descriptions
/// opened for it before its own fork inherits none of them: it holds each pool's descriptor and
/// the pair opened for it, and no more, so the worker's death is seen whatever it forked.
fn a_process_forked_while_its_parent_makes_identities_inherits_none_of_them() {
    const POOLS: usize = 100;
    let pools: Vec<ShmPool> = (0..POOLS).map(|_| ShmPool::new(MIB).unwrap()).collect();
    let files: Vec<(u64, u64)> = pools.iter().map(|shm| file_of(shm.as_fd().as_raw_fd())).collect();
    let descriptors_of_pools =
        || open_descriptors().into_iter().filter(|&fd| files.contains(&file_of(fd))).count();
    // The window is a few instructions wide: many workers, to meet it.
    for _ in 0..40 {
        fork(|| {
            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for shm in &pools {
                        drop(shm.lock().unwrap());
                    }
                    done.store(true, Ordering::Release);
                });
                while !done.load(Ordering::Acquire) {
                    // SAFETY: the child only reads its descriptors and exits; the C library makes
                    // its own state fork-safe, whatever the other thread does.
                    let pid = unsafe { libc::fork() };
                    after_fork(pid, || assert_eq!(descriptors_of_pools(), 3 * POOLS))
                        .succeeds("a process forked while its parent made identities");
                }
            });
        })
        .succeeds("a worker");
    }
}

/// Takes the lock of `shm`, whose holder was just killed, within the bound of a takeover.
fn assert_taken_over(shm: &ShmPool) {
    let taken = shm.try_lock_for(TAKEOVER_BOUND);
    assert!(taken.is_ok(), "the dead worker's lock was not taken over: {taken:?}");
}

/// Leaves this process unable to open the file at `path`, that of `shm`, again: as root, by
/// becoming `nobody` (root opens any file); otherwise by taking every permission off the file.
fn lose_the_file(shm: &ShmPool, path: &str) {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: plain system calls on this process's credentials.
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, core::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    // Refused to `nobody`, which does not own the file; then `nobody` cannot open it anyway.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000));
    let reopen = format!("/proc/self/fd/{}", shm.as_fd().as_raw_fd());
    let reopened = std::fs::OpenOptions::new().read(true).write(true).open(&reopen);
    assert!(reopened.is_err(), "the process can still open the pool's file");
}

/// A child made by a fork that skips `pthread_atfork` is a process of its own to the pool: while
/// its parent holds the lock, its `lock` waits for it rather than taking the parent's token for
/// its own (`WouldDeadlock`), and a child pool its parent made gets no chunk from it.
fn a_raw_fork_is_a_new_process_to_the_pool() {
    let shm = ShmPool::new(MIB).unwrap();
    let parents = shm.child();
    let flags = SharedWords::<AtomicU64>::new(1);
    let guard = shm.lock().unwrap();
    let child = raw_fork(|| {
        assert!(parents.alloc(64).is_none(), "the parent's child pool served the raw child");
        core::mem::forget(parents);
        // Started before the parent hears of it, so that the wait counts the parent's sleep.
        let start = Instant::now();
        flags[0].store(1, Ordering::Release);
        let mut guard = shm.lock().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20), "the lock did not wait");
        let block = guard.alloc(64).unwrap();
        // SAFETY: the block was just allocated and is not used again.
        unsafe { guard.free(block) }.unwrap();
    });
    await_word(&flags[0]);
    std::thread::sleep(Duration::from_millis(50));
    drop(guard);
    child.succeeds("the raw-forked child");
    shm.check().unwrap();
}

#[cfg(melon_failpoints)]
mod crash {
    //! A child arms the fail point `k` and runs one operation, so that it is killed at its
    //! `k`-th write while holding the lock, for every `k` until the operation completes. The
    //! parent then takes the lock over, and must find the pool exactly as it was before the
    //! operation (or, once the operation had committed, exactly as after it): the same
    //! counters, the same answers to the same requests as a pool that never saw a crash.

    use core::ptr::NonNull;
    use std::time::Instant;

    use melon_alloc_core::CHUNK_SIZE;
    use melon_alloc_heap::ChildPool;
    use melon_alloc_shm::{failpoint, ShmPool};

    use super::{fork, has_stamp, stamp, Case, Exit, CHILD_LIMIT, KIB, MIB, TAKEOVER_BOUND};
    use crate::harness::names_beside;

    pub(super) const CASES: [Case; 15] = [
        ("crash_alloc_small", || crash(Op::AllocSmall)),
        ("crash_alloc_small_new_slab", || crash(Op::AllocNewSlab)),
        ("crash_alloc_large", || crash(Op::AllocLarge)),
        ("crash_free_small", || crash(Op::FreeSmall)),
        ("crash_free_small_emptying_a_slab", || crash(Op::FreeEmptiesSlab)),
        ("crash_free_large_merging", || crash(Op::FreeLargeMerging)),
        ("crash_child_lends_a_chunk", || crash(Op::ChildLend)),
        ("crash_child_gives_a_chunk_back", || crash(Op::ChildTakeBack)),
        ("crash_realloc_moving_a_block", || crash(Op::ReallocMoving)),
        ("crash_the_recovery_at_each_step", crash_the_recovery_at_each_step),
        ("crash_growing_a_pool", crash_growing_a_pool),
        ("crash_a_growth_after_reserving_its_segment", crash_a_growth_after_reserving_its_segment),
        (
            "crash_a_remote_free_before_it_tells_the_owner",
            crash_a_remote_free_before_it_tells_the_owner,
        ),
        (
            "crash_a_remote_free_before_it_tells_an_owner_at_its_limit",
            crash_a_remote_free_before_it_tells_an_owner_at_its_limit,
        ),
        ("crash_making_a_named_pool", crash_making_a_named_pool),
    ];

    /// The pool's counters that describe its contents (not its lock's history).
    fn figures(shm: &ShmPool) -> [usize; 6] {
        let stats = shm.stats().unwrap();
        [
            stats.data_bytes,
            stats.available,
            stats.bytes_in_use,
            stats.live_blocks,
            stats.large_blocks,
            stats.lent_bytes,
        ]
    }

    const CAPACITY: usize = 2 * MIB;
    const LARGE: usize = 20_000;
    /// The size of the block a reallocation moves to a large block, and its stamp.
    const MOVED: usize = 3000;
    const MOVED_SEED: u64 = 9;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Op {
        AllocSmall,
        AllocNewSlab,
        AllocLarge,
        FreeSmall,
        FreeEmptiesSlab,
        FreeLargeMerging,
        ChildLend,
        ChildTakeBack,
        ReallocMoving,
    }

    /// What the pool looked like after a crash at one fail point.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Outcome {
        /// Killed before its first write: nothing to undo.
        Untouched,
        /// Killed mid-way: the next process undid it.
        Undone,
        /// Killed after the operation committed, before the lock was released.
        Committed,
        /// Killed in the last step of an operation that stands once its earlier steps are
        /// done: the next process undid the step and finished it.
        Finished,
        /// Not killed: the operation has fewer fail points.
        Completed,
    }

    /// The blocks that setting up leaves: the one the operation frees, and witnesses that must
    /// come through every crash intact.
    struct Setup {
        target: Option<usize>,
        witnesses: Vec<(usize, usize, u64)>,
    }

    fn offset(shm: &ShmPool, size: usize) -> usize {
        shm.offset_of(shm.alloc(size).unwrap()).unwrap()
    }

    /// Brings a fresh pool to the state the operation starts from. Deterministic: the same
    /// calls on a pool of the same capacity give the same offsets.
    fn setup(op: Op, shm: &ShmPool) -> Setup {
        let mut witnesses = Vec::new();
        for (size, seed) in [(200, 1), (50_000, 2), (80, 3)] {
            let at = offset(shm, size);
            // SAFETY: the block is in use and holds `size` bytes.
            unsafe { stamp(shm.ptr_at(at).unwrap(), size, seed) };
            witnesses.push((at, size, seed));
        }
        let target = match op {
            Op::AllocNewSlab | Op::ChildLend | Op::ChildTakeBack => None,
            Op::AllocSmall => {
                // The operation's class has a slab with room.
                offset(shm, 64);
                None
            }
            Op::AllocLarge => {
                offset(shm, LARGE);
                offset(shm, 3 * LARGE);
                None
            }
            Op::FreeSmall => {
                let blocks: Vec<_> = (0..3).map(|_| offset(shm, 64)).collect();
                Some(blocks[1])
            }
            Op::FreeEmptiesSlab => {
                // Fill a slab of 64-byte blocks (one page) and start the next, then free all but
                // one block of the full slab: freeing that one empties a slab that allocations
                // no longer come from, which goes back to the free pages.
                let first = offset(shm, 64);
                let mut slab = vec![first];
                loop {
                    let next = offset(shm, 64);
                    if next / 4096 != first / 4096 {
                        break;
                    }
                    slab.push(next);
                }
                let last = slab.pop().unwrap();
                for at in slab {
                    free(shm, at);
                }
                Some(last)
            }
            Op::ReallocMoving => {
                let at = offset(shm, MOVED);
                // SAFETY: the block is in use and holds `MOVED` bytes.
                unsafe { stamp(shm.ptr_at(at).unwrap(), MOVED, MOVED_SEED) };
                Some(at)
            }
            Op::FreeLargeMerging => {
                let blocks: Vec<_> = (0..4).map(|_| offset(shm, LARGE)).collect();
                let span = shm.usable_size(shm.ptr_at(blocks[0]).unwrap()).unwrap();
                for pair in blocks.windows(2) {
                    assert_eq!(pair[1], pair[0] + span, "large blocks side by side");
                }
                free(shm, blocks[0]);
                free(shm, blocks[2]);
                Some(blocks[1])
            }
        };
        Setup { target, witnesses }
    }

    fn free(shm: &ShmPool, at: usize) {
        // SAFETY: every offset passed is an in-use block of the pool, freed once.
        unsafe { shm.try_free(shm.ptr_at(at).unwrap()) }.unwrap();
    }

    /// The part of the starting state that the process running the operation makes itself.
    fn prepare(op: Op, shm: &ShmPool) -> Option<ChildPool<'_>> {
        if op != Op::ChildTakeBack {
            return None;
        }
        let child = shm.child();
        let block = child.alloc(64).unwrap();
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
        Some(child)
    }

    /// The operation. Returns the offset of the block it allocated, if any.
    fn run(op: Op, shm: &ShmPool, setup: &Setup, child: Option<ChildPool<'_>>) -> Option<usize> {
        match op {
            Op::AllocSmall => Some(offset(shm, 64)),
            Op::AllocNewSlab => Some(offset(shm, 48)),
            Op::AllocLarge => Some(offset(shm, 2 * LARGE)),
            Op::FreeSmall | Op::FreeEmptiesSlab | Op::FreeLargeMerging => {
                free(shm, setup.target.unwrap());
                None
            }
            Op::ChildLend => {
                let child = shm.child();
                let at = shm.offset_of(child.alloc(64).unwrap());
                // The chunk stays lent, as it does when the process that took it dies.
                core::mem::forget(child);
                at
            }
            Op::ChildTakeBack => {
                drop(child.unwrap());
                None
            }
            Op::ReallocMoving => {
                let old = shm.ptr_at(setup.target.unwrap()).unwrap();
                // SAFETY: the block is in use, and only the result is used after.
                let moved = unsafe { shm.realloc(old, 3 * LARGE) }.unwrap();
                // SAFETY: the new block holds at least `MOVED` bytes, the old one's.
                assert!(unsafe { has_stamp(moved, MOVED, MOVED_SEED) }, "the contents moved");
                shm.offset_of(moved)
            }
        }
    }

    /// Requests whose answers depend on every free list and run of the pool.
    fn probe(shm: &ShmPool) -> (Vec<Option<usize>>, [usize; 6]) {
        let mut offsets: Vec<_> = [16, 48, 64, 100, 1000, 3000, 5000, 9000, 40_000, 300_000]
            .iter()
            .map(|&size| shm.alloc(size).and_then(|block| shm.offset_of(block)))
            .collect();
        let child = shm.child();
        offsets.push(child.alloc(64).and_then(|block| shm.offset_of(block)));
        core::mem::forget(child);
        (offsets, figures(shm))
    }

    /// Whether `op` is an operation of a child pool, whose chunks are its process's: a death
    /// anywhere in it gives back all the process held, so the pool ends as if the process had
    /// never run.
    fn owned_by_the_process(op: Op) -> bool {
        matches!(op, Op::ChildLend | Op::ChildTakeBack)
    }

    fn crash(op: Op) {
        let mut outcomes = Vec::new();
        for k in 1.. {
            assert!(k < 1000, "{op:?} never completed");
            let outcome = crash_at(op, k);
            outcomes.push(outcome);
            if outcome == Outcome::Completed {
                break;
            }
        }
        let points = outcomes.len() - 1;
        println!("  {op:?}: {points} fail points");
        assert!(points >= 3, "{op:?}: {outcomes:?}");
        if owned_by_the_process(op) {
            // Whatever the point, the pool is as before: undone, or given back with the dead
            // process's chunks.
            let undone = outcomes.iter().filter(|&&outcome| outcome == Outcome::Undone).count();
            assert!(undone >= 3, "{op:?}: {outcomes:?}");
            assert_eq!(outcomes[0], Outcome::Untouched, "{op:?}");
            assert!(outcomes[..points]
                .iter()
                .all(|outcome| matches!(outcome, Outcome::Untouched | Outcome::Undone)));
            return;
        }
        if op == Op::ReallocMoving {
            // Three operations: the allocation, recorded as the block to free; the record moved
            // to the old block, once the contents have; the free of the old block. Killed
            // before the record moved, the move is rolled back (nothing to undo in the copy,
            // where the next holder frees the new block); after, it stands (the next holder
            // frees the old block, after undoing a free cut short).
            let moved = outcomes
                .iter()
                .position(|outcome| matches!(outcome, Outcome::Committed | Outcome::Finished))
                .unwrap();
            let (rolled_back, stood) = outcomes.split_at(moved);
            assert_eq!(rolled_back[0], Outcome::Untouched, "{op:?}: {outcomes:?}");
            let undone_or_not =
                |outcome: &Outcome| matches!(outcome, Outcome::Untouched | Outcome::Undone);
            assert!(rolled_back.iter().all(undone_or_not), "{op:?}: {outcomes:?}");
            let untouched = rolled_back.iter().filter(|&&outcome| outcome == Outcome::Untouched);
            assert!(untouched.count() >= 3, "{op:?}: the copy's points: {outcomes:?}");
            let (last, standing) = stood.split_last().unwrap();
            assert_eq!(*last, Outcome::Completed, "{op:?}");
            let stands =
                |outcome: &Outcome| matches!(outcome, Outcome::Committed | Outcome::Finished);
            assert!(standing.iter().all(stands), "{op:?}: {outcomes:?}");
            assert!(
                standing.contains(&Outcome::Finished),
                "{op:?}: a free cut short: {outcomes:?}"
            );
            return;
        }
        // Nothing is written before the first fail point, every point after it until the commit
        // leaves a logged write to undo, and the last one comes after the commit.
        let mut expected = vec![Outcome::Untouched];
        expected.resize(points - 1, Outcome::Undone);
        expected.extend([Outcome::Committed, Outcome::Completed]);
        assert_eq!(outcomes, expected, "{op:?}");
    }

    fn crash_at(op: Op, k: u64) -> Outcome {
        // Two pools that never crash: one left where the operation starts, one after it.
        let before = ShmPool::new(CAPACITY).unwrap();
        setup(op, &before);
        if let Some(child) = prepare(op, &before) {
            core::mem::forget(child);
        }
        // The pool as the process found it, before it made anything its own.
        let base = ShmPool::new(CAPACITY).unwrap();
        setup(op, &base);
        let after = ShmPool::new(CAPACITY).unwrap();
        let after_setup = setup(op, &after);
        let child = prepare(op, &after);
        let allocated = run(op, &after, &after_setup, child);

        let shm = ShmPool::new(CAPACITY).unwrap();
        let ready = setup(op, &shm);
        let counters = shm.stats().unwrap();
        let mut process = fork(|| {
            let child = prepare(op, &shm);
            failpoint::arm(k);
            run(op, &shm, &ready, child);
            failpoint::arm(0);
        });
        let exit = process.wait(CHILD_LIMIT);
        let outcome = match exit {
            Exit::Code(0) => {
                assert_eq!(figures(&shm), figures(&after), "{op:?}: completed without a kill");
                assert_eq!(shm.stats().unwrap().lock_takeovers, counters.lock_takeovers);
                Outcome::Completed
            }
            Exit::Signal(libc::SIGKILL) => {
                let start = Instant::now();
                let guard = shm.lock().unwrap();
                let waited = start.elapsed();
                assert!(waited < TAKEOVER_BOUND, "{op:?} at {k}: the lock took {waited:?}");
                drop(guard);
                let stats = shm.stats().unwrap();
                assert_eq!(stats.lock_takeovers, counters.lock_takeovers + 1, "{op:?} at {k}");
                let undone = stats.operations_undone - counters.operations_undone;
                let now = figures(&shm);
                if owned_by_the_process(op) {
                    assert_eq!(now, figures(&base), "{op:?} at {k}: the dead process's chunks");
                }
                match (undone, now == figures(&before), now == figures(&after)) {
                    _ if owned_by_the_process(op) && undone == 0 => Outcome::Untouched,
                    _ if owned_by_the_process(op) && undone == 1 => Outcome::Undone,
                    (0, true, _) => Outcome::Untouched,
                    (1, true, _) => Outcome::Undone,
                    (0, false, true) => Outcome::Committed,
                    (1, false, true) if op == Op::ReallocMoving => Outcome::Finished,
                    _ => panic!(
                        "{op:?} killed at {k}: {undone} undone, pool {now:?}, before {:?}, \
                         after {:?}",
                        figures(&before),
                        figures(&after)
                    ),
                }
            }
            other => panic!("{op:?} at {k}: the child ended with {other:?}"),
        };
        shm.check().unwrap();
        for &(at, len, seed) in &ready.witnesses {
            // SAFETY: a witness block, in use since setup, which no operation touches.
            assert!(unsafe { has_stamp(shm.ptr_at(at).unwrap(), len, seed) }, "{op:?} at {k}");
        }
        // Replay the operation where it was undone, so that the pool must now match the one
        // that ran it once; then both must answer the same requests the same way.
        let reference = match outcome {
            Outcome::Untouched | Outcome::Undone if owned_by_the_process(op) => &base,
            Outcome::Untouched | Outcome::Undone => {
                let replayed = run(op, &shm, &ready, None);
                assert_eq!(replayed, allocated, "{op:?} at {k}: the replay");
                assert_eq!(figures(&shm), figures(&after), "{op:?} at {k}: after the replay");
                &after
            }
            Outcome::Committed | Outcome::Finished | Outcome::Completed => {
                if let Some(at) = allocated {
                    let block: NonNull<u8> = shm.ptr_at(at).unwrap();
                    if op != Op::ChildLend {
                        assert!(shm.usable_size(block).is_ok(), "{op:?} at {k}: lost");
                    }
                }
                if let Some(at) = ready.target {
                    // SAFETY: the operation freed the block, so the call only inspects it.
                    let again = unsafe { shm.try_free(shm.ptr_at(at).unwrap()) };
                    assert!(again.is_err(), "{op:?} at {k}: the freed block is in use");
                }
                &after
            }
        };
        assert_eq!(probe(&shm), probe(reference), "{op:?} at {k}: answers differ");
        shm.check().unwrap();
        outcome
    }

    /// A process dies in an allocation at each of its fail points; a second process, taking the
    /// lock over, dies at each step of undoing it; a third must still find the pool exactly as it
    /// was before the allocation, counters included: the recovery can be run again from any
    /// point.
    fn crash_the_recovery_at_each_step() {
        for op in [Op::AllocSmall, Op::AllocLarge, Op::FreeSmall] {
            let before = ShmPool::new(CAPACITY).unwrap();
            setup(op, &before);
            let mut steps_seen = 0;
            for k in 2.. {
                assert!(k < 1000, "{op:?} never completed");
                let shm = ShmPool::new(CAPACITY).unwrap();
                let ready = setup(op, &shm);
                let mut process = fork(|| {
                    failpoint::arm(k);
                    run(op, &shm, &ready, None);
                    failpoint::arm(0);
                });
                if process.wait(CHILD_LIMIT) == Exit::Code(0) {
                    break;
                }
                for j in 1.. {
                    assert!(j < 1000, "{op:?} at {k}: the recovery never completed");
                    let mut recoverer = fork(|| {
                        failpoint::arm(j);
                        drop(shm.lock().unwrap());
                        failpoint::arm(0);
                    });
                    match recoverer.wait(CHILD_LIMIT) {
                        Exit::Code(0) => break,
                        Exit::Signal(libc::SIGKILL) => steps_seen = steps_seen.max(j),
                        other => panic!("{op:?} at {k}, recovery at {j}: {other:?}"),
                    }
                }
                drop(shm.lock().unwrap());
                shm.check().unwrap_or_else(|error| panic!("{op:?} at {k}: {error}"));
                let now = figures(&shm);
                let committed = now != figures(&before);
                assert!(
                    !committed || shm.stats().unwrap().operations_undone == 0,
                    "{op:?} at {k}: pool {now:?}, before {:?}",
                    figures(&before)
                );
                for &(at, len, seed) in &ready.witnesses {
                    // SAFETY: a witness block, in use since setup, which no operation touches.
                    assert!(unsafe { has_stamp(shm.ptr_at(at).unwrap(), len, seed) });
                }
            }
            assert!(steps_seen >= 3, "{op:?}: the recovery has {steps_seen} fail points");
        }
    }

    /// A growing pool with little room left, and witnesses, as the growth cases start.
    fn growing_pool() -> (ShmPool, Vec<(usize, usize, u64)>) {
        let shm = ShmPool::builder().capacity(256 * KIB).max_capacity(4 * MIB).build().unwrap();
        let mut witnesses = Vec::new();
        for (size, seed) in [(200, 1), (50_000, 2)] {
            let at = offset(&shm, size);
            // SAFETY: the block is in use and holds `size` bytes.
            unsafe { stamp(shm.ptr_at(at).unwrap(), size, seed) };
            witnesses.push((at, size, seed));
        }
        offset(&shm, shm.available() - 2 * 4096);
        (shm, witnesses)
    }

    /// The request that makes the pool grow: more than it has room for, less than a segment.
    const GROWING: usize = 150 * KIB;

    /// The length of a pool's file.
    fn file_len(shm: &ShmPool) -> u64 {
        let file = std::fs::File::from(shm.as_fd().try_clone_to_owned().unwrap());
        file.metadata().unwrap().len()
    }

    /// A process allocates a block its pool has no room for, which grows the pool, and is killed
    /// at each fail point of that: after reserving the new pages, after mapping them, at each
    /// logged write of the growth and of the allocation, after each commit. The parent, which
    /// never mapped the new pages, takes the lock over and finds a pool that checks clean, grown
    /// or not; it makes the same allocation, which gives the same block, and grows it further.
    fn crash_growing_a_pool() {
        let (reference, _) = growing_pool();
        let before = figures(&reference);
        let (len_before, expected) = (file_len(&reference), Some(offset(&reference, GROWING)));
        let after = figures(&reference);
        free(&reference, expected.unwrap());
        let grown = figures(&reference);
        // Kills that left the pool as it was, with the file lengthened; with the growth undone;
        // with the growth standing.
        let (mut lengthened, mut undone, mut stood) = (0, 0, 0);
        for k in 1.. {
            assert!(k < 1000, "growing never completed");
            let (shm, witnesses) = growing_pool();
            let counters = shm.stats().unwrap();
            let mut process = fork(|| {
                failpoint::arm(k);
                let block = shm.alloc(GROWING);
                failpoint::arm(0);
                assert!(block.is_some());
            });
            let exit = process.wait(CHILD_LIMIT);
            if exit == Exit::Code(0) {
                assert_eq!(figures(&shm), after, "completed without a kill");
                break;
            }
            assert_eq!(exit, Exit::Signal(libc::SIGKILL), "killed at {k}");
            drop(shm.lock().unwrap());
            shm.check().unwrap_or_else(|error| panic!("killed at {k}: {error}"));
            let stats = shm.stats().unwrap();
            assert_eq!(stats.lock_takeovers, counters.lock_takeovers + 1, "killed at {k}");
            let was_undone = stats.operations_undone > counters.operations_undone;
            let now = figures(&shm);
            match (now == before, now == grown, now == after) {
                (true, ..) if was_undone => undone += 1,
                (true, ..) => lengthened += usize::from(file_len(&shm) > len_before),
                (_, true, _) => stood += 1,
                (.., true) => {}
                _ => panic!("killed at {k}: pool {now:?}, before {before:?}, grown {grown:?}"),
            }
            for &(at, len, seed) in &witnesses {
                // SAFETY: a witness block, in use since setup, which no operation touches.
                assert!(unsafe { has_stamp(shm.ptr_at(at).unwrap(), len, seed) }, "at {k}");
            }
            if now != after {
                assert_eq!(shm.alloc(GROWING).and_then(|block| shm.offset_of(block)), expected);
            }
            assert_eq!(figures(&shm), after, "killed at {k}: after the allocation");
            let further = shm.alloc(MIB).expect("the pool grows further");
            assert!(shm.stats().unwrap().segments > 2);
            // SAFETY: the block was just allocated and is freed once.
            unsafe { shm.try_free(further) }.unwrap();
            shm.check().unwrap();
        }
        println!("  {lengthened} lengthened, {undone} undone, {stood} grown");
        assert!(lengthened >= 1 && undone >= 3 && stood >= 1);
    }

    /// A growth killed after it reserved its segment leaves the file holding that memory. The
    /// next growth reserves the same range, which takes nothing more of the system, and asks the
    /// system only for the rest: where the system has a segment and a half to spare less what
    /// the file holds, it grows as a pool whose grower was never killed does. Run in a user and
    /// mount namespace of its own, whose `/proc/meminfo` says what the system has to spare.
    fn crash_a_growth_after_reserving_its_segment() {
        const SEGMENT: usize = 32 * MIB;
        fork(|| {
            let Some(spare) = FakeSpare::new() else { return };
            let mut killed_after_reserving = 0;
            for k in 0..100 {
                spare.set(1 << 40);
                let shm = ShmPool::builder().capacity(SEGMENT).max_capacity(2 * SEGMENT).build();
                let shm = shm.unwrap();
                // Never freed: the pool must grow for the next half segment.
                let _filler = shm.alloc(shm.available() - 8192).unwrap();
                let (base, data) = (file_bytes(&shm), shm.stats().unwrap().data_bytes);
                // At `k` = 0, a pool whose grower is never killed.
                if k > 0 {
                    let mut grower = fork(|| {
                        failpoint::arm(k);
                        let _ = shm.alloc(SEGMENT / 2);
                        failpoint::arm(0);
                    });
                    if grower.wait(CHILD_LIMIT) == Exit::Code(0) {
                        break;
                    }
                    shm.check().unwrap();
                    let grown = shm.stats().unwrap().data_bytes > data;
                    if grown || file_bytes(&shm) < base + SEGMENT as u64 / 2 {
                        continue;
                    }
                    killed_after_reserving += 1;
                }
                let held = file_bytes(&shm) - base;
                spare.set((SEGMENT as u64 * 3 / 2).saturating_sub(held));
                let grown = shm.try_alloc(SEGMENT / 2).map(|_| ());
                assert_eq!(grown, Ok(()), "killed at {k}, the file holding {held} bytes more");
            }
            assert!(killed_after_reserving > 0, "no kill after the reservation");
        })
        .succeeds("growths in a namespace whose system has little to spare");
    }

    /// Bytes of memory the pool's file holds.
    fn file_bytes(shm: &ShmPool) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::from(shm.as_fd().try_clone_to_owned().unwrap());
        file.metadata().unwrap().blocks() * 512
    }

    /// A `/proc/meminfo` of this process's own, in a user and mount namespace made for it,
    /// whose spare memory (what the pool reads: `MemAvailable` less 1/64 of `MemTotal`) the
    /// test sets.
    struct FakeSpare {
        path: std::path::PathBuf,
    }

    impl FakeSpare {
        /// Moves this process, which must have a single thread, into new user and mount
        /// namespaces, and puts a file of its own over `/proc/meminfo` there; `None`, saying so,
        /// where the system lets it make no such namespaces (as some containers' seccomp
        /// profiles do).
        fn new() -> Option<Self> {
            let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
            // SAFETY: the caller is a forked child with one thread, as `CLONE_NEWUSER` needs;
            // only this process's namespaces change.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
                let error = std::io::Error::last_os_error();
                println!("  skipped: no user and mount namespaces here ({error})");
                return None;
            }
            std::fs::write("/proc/self/setgroups", "deny").unwrap();
            std::fs::write("/proc/self/uid_map", format!("0 {} 1", uid.as_raw())).unwrap();
            std::fs::write("/proc/self/gid_map", format!("0 {} 1", gid.as_raw())).unwrap();
            // Mounts made here stay here.
            let root = c"/";
            // SAFETY: the strings are NUL-terminated, and the null arguments are allowed.
            let private = unsafe {
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                libc::mount(
                    core::ptr::null(),
                    root.as_ptr(),
                    core::ptr::null(),
                    flags,
                    core::ptr::null(),
                )
            };
            assert_eq!(private, 0, "{}", std::io::Error::last_os_error());
            let path = std::env::temp_dir().join(format!("melon-meminfo-{}", std::process::id()));
            let spare = Self { path };
            spare.set(1 << 40);
            let source = std::ffi::CString::new(spare.path.to_str().unwrap()).unwrap();
            // SAFETY: as above.
            let bound = unsafe {
                libc::mount(
                    source.as_ptr(),
                    c"/proc/meminfo".as_ptr(),
                    core::ptr::null(),
                    libc::MS_BIND,
                    core::ptr::null(),
                )
            };
            assert_eq!(bound, 0, "{}", std::io::Error::last_os_error());
            Some(spare)
        }

        /// Says that the system has `bytes` to spare.
        fn set(&self, bytes: u64) {
            let (total, kept) = (64u64 << 30, 1u64 << 30);
            let text = format!(
                "MemTotal: {} kB\nMemAvailable: {} kB\n",
                total >> 10,
                (kept + bytes) >> 10
            );
            std::fs::write(&self.path, text).unwrap();
        }
    }

    impl Drop for FakeSpare {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Frees the handed-off block at `offset` from a process killed after its push onto the
    /// chunk's remote-free list, before it tells the owner.
    fn free_killed_before_telling(shm: &ShmPool, offset: usize) {
        let mut freer = fork(|| {
            let block = shm.ptr_at(offset).unwrap();
            failpoint::arm(1);
            // SAFETY: the block was handed off to this process, which frees it once.
            let freed = unsafe { shm.try_free(block) };
            failpoint::arm(0);
            panic!("the free went past its fail point: {freed:?}");
        });
        assert_eq!(freer.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL));
    }

    /// A process is killed after pushing a handed-off block onto its chunk's empty remote-free
    /// list, before it adds to the owner's count of such pushes. The owner, not told, takes new
    /// chunks rather than the block; the next remote free onto another empty list of its chunks
    /// tells it, and it then collects both blocks without taking a chunk: a delay, not a loss.
    fn crash_a_remote_free_before_it_tells_the_owner() {
        const BLOCKS: usize = 600;
        let shm = ShmPool::new(4 * MIB).unwrap();
        let child = shm.child();
        let mut held: Vec<_> = (0..BLOCKS).map(|_| child.alloc(64).unwrap()).collect();
        let first = held[0];
        // SAFETY: the block is the child's, in use, handed off once, and freed by the process
        // forked below alone.
        let offset = unsafe { shm.hand_off(first) }.unwrap();
        free_killed_before_telling(&shm, offset);
        held.extend((0..BLOCKS).map(|_| child.alloc(64).unwrap()));
        assert!(!held[BLOCKS..].contains(&first), "the owner was not told, and took new chunks");

        let last = *held.last().unwrap();
        // SAFETY: as above; this process frees it at once.
        let offset = unsafe { shm.hand_off(last) }.unwrap();
        // SAFETY: the block was handed off, and is freed once.
        unsafe { shm.try_free(shm.ptr_at(offset).unwrap()) }.unwrap();
        let lent = shm.stats().unwrap().lent_bytes;
        let mut again = Vec::new();
        while !(again.contains(&first) && again.contains(&last)) && again.len() < BLOCKS {
            again.push(child.alloc(64).unwrap());
        }
        assert!(again.contains(&first), "told by the second free, the owner collects the first");
        assert!(again.contains(&last), "and the second");
        assert_eq!(shm.stats().unwrap().lent_bytes, lent, "without taking a chunk");
        held.retain(|&block| block != last);
        for block in held.into_iter().chain(again).filter(|&block| block != first) {
            // SAFETY: each block came from `child`, is in use, and is freed once.
            unsafe { child.free(block) };
        }
        // SAFETY: `first` came back from `child` in `again`, and is freed once.
        unsafe { child.free(first) };
        child.check().unwrap();
        drop(child);
        assert_eq!(shm.stats().unwrap().lent_bytes, 0);
        shm.check().unwrap();
    }

    /// As above, for a child at its limit, which cannot take a new chunk instead: every block of
    /// its one chunk is handed off and freed, the first by a process killed before it tells the
    /// owner, so that no free tells it; the child, refused a chunk, looks at its chunk's list
    /// anyway and allocates again.
    fn crash_a_remote_free_before_it_tells_an_owner_at_its_limit() {
        let shm = ShmPool::new(4 * MIB).unwrap();
        let child = shm.child_with_limit(CHUNK_SIZE);
        let held: Vec<_> = std::iter::from_fn(|| child.alloc(64)).collect();
        assert!(held.len() > 200, "one chunk of 64-byte blocks: {}", held.len());
        // SAFETY: the block is the child's, in use, handed off once, and freed by the process
        // forked below alone.
        let offset = unsafe { shm.hand_off(held[0]) }.unwrap();
        free_killed_before_telling(&shm, offset);
        for &block in &held[1..] {
            // SAFETY: each block is the child's, in use, handed off once and freed at once.
            let offset = unsafe { shm.hand_off(block) }.unwrap();
            // SAFETY: as above.
            unsafe { shm.try_free(shm.ptr_at(offset).unwrap()) }.unwrap();
        }
        let again: Vec<_> = std::iter::from_fn(|| child.alloc(64)).collect();
        assert_eq!(again.len(), held.len(), "every block of the chunk serves again");
        assert!(again.contains(&held[0]), "the block whose freer died among them");
        for block in again {
            // SAFETY: each block came from `child`, is in use, and is freed once.
            unsafe { child.free(block) };
        }
        child.check().unwrap();
        drop(child);
        assert_eq!(shm.stats().unwrap().lent_bytes, 0);
        shm.check().unwrap();
    }

    /// A process makes a pool at a path and is killed at each fail point of that. Until the
    /// pool is whole and named, the path stays free: what is left is a stray file beside it,
    /// never a pool at the path that could not be opened; and the path can then be made, and
    /// opened, as if nothing had happened.
    fn crash_making_a_named_pool() {
        let name = format!("melon-fork-{}-crash-named", std::process::id());
        let path = std::path::Path::new("/dev/shm").join(&name);
        let _ = std::fs::remove_file(&path);
        let mut killed = 0;
        for k in 1.. {
            let mut process = fork(|| {
                failpoint::arm(k);
                let made = ShmPool::builder().path(&path).capacity(MIB).build();
                failpoint::arm(0);
                made.unwrap().check().unwrap();
            });
            match process.wait(CHILD_LIMIT) {
                Exit::Code(0) => break,
                Exit::Signal(libc::SIGKILL) => {
                    killed += 1;
                    // Not the pool's name: one `<name>.<16 hex digits>.new` alone.
                    let left = names_beside(&path);
                    let [stray] = &left[..] else { panic!("killed at {k}: {left:?}") };
                    let hex = stray
                        .strip_prefix(&format!("{name}."))
                        .and_then(|rest| rest.strip_suffix(".new"));
                    let hex = hex.unwrap_or_else(|| panic!("killed at {k}: {stray}"));
                    assert!(
                        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{stray}"
                    );
                    std::fs::remove_file(path.with_file_name(stray)).unwrap();
                }
                other => panic!("killed at {k}: the process ended with {other:?}"),
            }
        }
        assert!(killed >= 1, "the naming is a fail point");
        assert_eq!(names_beside(&path), [name], "a pool made whole leaves nothing beside it");
        // SAFETY: the pool was made by this test's own process, and nothing else writes to it.
        let opened = unsafe { ShmPool::open_path(&path) }.unwrap();
        opened.check().unwrap();
        drop(opened);
        std::fs::remove_file(&path).unwrap();
        println!("  {killed} fail points before the pool was named");
    }
}
