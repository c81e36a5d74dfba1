//! A shared pool made when the global allocator has no memory for its state or its lock: the
//! constructors say `ShmError::Os` with `ENOMEM` rather than abort. A global allocator that can be
//! told to fail stands in for a system without memory. A pool, or a growth, larger than the
//! memory the machine has is refused with the same error, before any of it is taken.

mod common;

use common::{without_memory, Failing, TestLock};
use melon_alloc_shm::{ShmError, ShmPool};

#[global_allocator]
static GLOBAL: Failing = Failing;

/// Whether `made` is the error of a pool without memory for what it keeps on the heap.
fn is_out_of_memory(made: Result<ShmPool, ShmError>) -> bool {
    let enomem = rustix::io::Errno::NOMEM.raw_os_error();
    matches!(made, Err(ShmError::Os { errno, .. }) if errno.raw_os_error() == enomem)
}

#[test]
fn a_pool_without_memory_for_its_state_says_enomem() {
    assert!(is_out_of_memory(without_memory(|| ShmPool::new(1 << 20))));
    // With memory again, the same call makes a pool.
    assert!(ShmPool::new(1 << 20).is_ok());
}

#[test]
fn a_lock_given_without_memory_for_it_is_reported_by_build() {
    let (lock, _log) = TestLock::new();
    let builder = without_memory(|| ShmPool::builder().capacity(1 << 20).lock(lock));
    assert!(is_out_of_memory(builder.build()));
    let (lock, _log) = TestLock::new();
    assert!(ShmPool::builder().capacity(1 << 20).lock(lock).build().is_ok());
}

/// A field of `/proc/meminfo`, in bytes.
fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|line| line.starts_with(field)).unwrap();
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// The largest capacity a pool can have: 1 TiB.
const MAX_CAPACITY: u64 = 1 << 40;

/// Twice the machine's memory, if a pool can be that large (a machine with more than 512 GiB
/// has no such capacity to refuse).
fn more_than_the_machine_has() -> Option<usize> {
    let twice = 2 * meminfo("MemTotal:");
    (twice <= MAX_CAPACITY).then(|| usize::try_from(twice).unwrap() / 4096 * 4096)
}

#[test]
fn a_pool_larger_than_the_memory_there_is_says_enomem_and_takes_none() {
    let Some(capacity) = more_than_the_machine_has() else {
        println!("skipped: this machine has more memory than a pool can hold");
        return;
    };
    let before = meminfo("Shmem:");
    assert!(is_out_of_memory(ShmPool::new(capacity)));
    // Other tests' pools come and go meanwhile: a few of theirs, not the pool's gigabytes.
    assert!(meminfo("Shmem:") < before + (1 << 30), "the refused pool took memory");
    // Memory the machine has is still given.
    assert!(ShmPool::new(1 << 20).is_ok());
}

#[test]
fn a_growth_larger_than_the_memory_there_is_is_refused_and_the_pool_goes_on() {
    let Some(size) = more_than_the_machine_has() else {
        println!("skipped: this machine has more memory than a pool can hold");
        return;
    };
    let max = (size as u64 * 2).min(MAX_CAPACITY) as usize;
    let shm = ShmPool::builder().capacity(1 << 20).max_capacity(max).build().unwrap();
    let before = meminfo("Shmem:");
    assert_eq!(shm.try_alloc(size), Err(ShmError::OutOfMemory { size }));
    assert!(meminfo("Shmem:") < before + (1 << 30), "the refused growth took memory");
    let block = shm.try_alloc(64).unwrap();
    // SAFETY: the block came from `shm` and is not used again.
    unsafe { shm.try_free(block) }.unwrap();
    shm.check().unwrap();
}
