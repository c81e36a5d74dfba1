//! The global-allocator benchmark's workload and the measuring child's side of it.
//!
//! A global allocator is chosen per binary, so each allocator gets a binary of its own
//! (`global_glibc`, `global_mimalloc`, `global_melon`) whose `main` is [`child_main`]; the
//! `global` binary runs them in turn and compares their figures.

use std::collections::BTreeMap;
use std::fs;
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

/// Entries of each thread's map.
pub const ENTRIES: u32 = 400_000;

/// The value stored under key `i`: 0 to 300 bytes, so that the maps' blocks span many size
/// classes, as a program's strings and buffers do.
fn value(i: u32) -> Vec<u8> {
    let len = (i % 61 + i % 7 * 40) as usize;
    (0..len).map(|at| (i as usize + at) as u8).collect()
}

/// Builds a `BTreeMap<String, Vec<u8>>` of [`ENTRIES`] entries, reads it, and drops it, on each
/// of `threads` threads at once. Returns a checksum of what was read, the same for every
/// allocator, so that the work cannot be optimized away and a wrong allocator shows.
///
/// ```
/// let sum = melon_alloc_bench::global::btree_workload(1, 1000);
/// assert_eq!(sum, melon_alloc_bench::global::btree_workload(1, 1000));
/// ```
pub fn btree_workload(threads: u32, entries: u32) -> u64 {
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            thread::spawn(move || {
                let mut map = BTreeMap::new();
                for i in 0..entries {
                    map.insert(format!("key {thread}-{i:07}"), value(i));
                }
                let lengths: u64 = map.values().map(|value| value.len() as u64).sum();
                let firsts: u64 =
                    map.values().filter_map(|value| value.first()).map(|&b| u64::from(b)).sum();
                drop(map);
                lengths + firsts
            })
        })
        .collect();
    workers.into_iter().map(|worker| worker.join().unwrap_or(0)).sum()
}

/// The process's peak resident memory in KiB (`VmHWM` in `/proc/self/status`), or 0 where that
/// cannot be read.
///
/// ```
/// let before = melon_alloc_bench::global::peak_resident_kib();
/// let touched = vec![1u8; 8 << 20];
/// let after = melon_alloc_bench::global::peak_resident_kib();
/// assert!(cfg!(not(target_os = "linux")) || after >= before + 8 * 1024 - 64);
/// drop(touched);
/// ```
pub fn peak_resident_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// The `main` of a measuring child: runs [`btree_workload`] once with the number of threads
/// given as its argument, and prints the wall time in nanoseconds, the peak resident memory in
/// KiB and the checksum, tab-separated.
pub fn child_main() -> ExitCode {
    let Some(threads) = std::env::args().nth(1).and_then(|arg| arg.parse().ok()) else {
        eprintln!("usage: global_ALLOCATOR THREADS");
        return ExitCode::FAILURE;
    };
    let started = Instant::now();
    let checksum = btree_workload(threads, ENTRIES);
    let wall = started.elapsed().as_nanos();
    println!("{wall}\t{}\t{checksum}", peak_resident_kib());
    ExitCode::SUCCESS
}
