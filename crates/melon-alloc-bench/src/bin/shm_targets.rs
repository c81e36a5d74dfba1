//! The shared pool's target against glibc, timed in interleaved rounds: one 64-byte allocation
//! paired with its free, each taking the pool's lock, in a 64 MiB pool at 0 %, 50 % and 95 %
//! fill and in a 1 GiB pool at 0 % and 95 % fill (`melon_alloc_bench::filled_shm_pool`), against
//! the same pair on glibc's `malloc` (`std::alloc::System`). These are the cases of the criterion
//! group `shm_alloc_64` (`benches/shm.rs`). The rounds of the empty 64 MiB pool also time the
//! pool's lock taken and released twice with nothing under it (`lock_twice`, in a second pool),
//! and four compare-and-swaps of a bare word (`cas_four`, `melon_alloc_bench::BareLock`): the
//! share of a pair that its two trips through the lock take.
//!
//! Each case is a workload of `melon_alloc_bench::turns`: the pool and glibc take turns in one
//! process, after a warm-up round, so that a change in the machine's speed falls on both alike,
//! and the ratio is the median of each round's time over glibc's in the same round. One pool
//! exists at a time; after its rounds it must hold exactly the fill blocks and pass its
//! `check()`. With `--tsv PATH` the figures also go to `PATH`, which `cargo xtask bench` reads.
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin shm_targets -- [--rounds N] [--tsv PATH]
//! ```

use std::alloc::System;
use std::hint::black_box;
use std::process::ExitCode;

use melon_alloc_bench::turns::{compare, print, write_tsv, Contender, Figures, PingPong};
use melon_alloc_bench::workloads::{Global, Shm};
use melon_alloc_bench::{exit_with, filled_shm_pool, BareLock, RoundsArgs, BLOCK};
use melon_alloc_shm::ShmPool;

/// The cases: the criterion id, the pool's capacity and the share of its free bytes filled.
const CASES: [(&str, usize, usize); 5] = [
    ("shm_64MiB/fill_0", 64 << 20, 0),
    ("shm_64MiB/fill_50", 64 << 20, 50),
    ("shm_64MiB/fill_95", 64 << 20, 95),
    ("shm_1GiB/fill_0", 1 << 30, 0),
    ("shm_1GiB/fill_95", 1 << 30, 95),
];

/// The case whose rounds also time the lock's share of a pair.
const LOCK_SHARE_CASE: &str = "shm_64MiB/fill_0";

/// The pool's lock taken and released twice, with nothing done under it.
const LOCK_TWICE: &str = "lock_twice";

/// Four compare-and-swaps of a bare word, as a lock taken and released twice makes.
const CAS_FOUR: &str = "cas_four";

/// Pairs each peer does per round: about 20 ms of the shared pool's on the benchmark machine.
const PAIRS: u64 = 200_000;

fn main() -> ExitCode {
    exit_with("shm_targets", run)
}

fn run() -> Result<(), String> {
    let RoundsArgs { rounds, tsv } = RoundsArgs::parse("shm_targets", 15)?;
    let mut figures = Vec::with_capacity(CASES.len());
    for (name, capacity, percent) in CASES {
        figures.push(case(name, capacity, percent, rounds)?);
    }
    println!(
        "{rounds} rounds of each case, the shared pool and glibc taking turns (the first moving \
         one place a round), after a warm-up round; ns per pair (alloc+free of {BLOCK} bytes), \
         median (least-greatest), and the median of each round's time over glibc's."
    );
    print(&figures);
    match tsv {
        Some(path) => write_tsv(&path, &figures),
        None => Ok(()),
    }
}

/// One case: a pool filled as it says, against glibc.
fn case(
    name: &'static str,
    capacity: usize,
    percent: usize,
    rounds: usize,
) -> Result<Figures, String> {
    // What the pair's two lock round trips cost, in a pool of their own: the lock alone, and
    // the compare-and-swaps alone.
    let lock_pool = match name {
        LOCK_SHARE_CASE => Some(ShmPool::new(capacity).map_err(|e| format!("{name}: {e}"))?),
        _ => None,
    };
    let bare = BareLock::default();
    let mut shm = Shm(filled_shm_pool(capacity, percent));
    let filled = shm.0.stats().map_err(|e| format!("{name}: {e}"))?.live_blocks;
    let mut glibc = Global(System);
    let mut contenders = vec![Contender::with_iterations("shm", PingPong, &mut shm, PAIRS)];
    if let Some(lock_pool) = &lock_pool {
        contenders.push(Contender::from_fn(LOCK_TWICE, PAIRS, 1, || {
            drop(black_box(lock_pool.lock().expect("the pool's lock")));
            drop(black_box(lock_pool.lock().expect("the pool's lock")));
        }));
        contenders.push(Contender::from_fn(CAS_FOUR, PAIRS, 1, || {
            black_box(&bare).take_and_release_twice();
        }));
    }
    contenders.push(Contender::with_iterations("glibc", PingPong, &mut glibc, PAIRS));
    let figures = compare(name, PAIRS, contenders, rounds);
    let live = shm.0.stats().map_err(|e| format!("{name}: {e}"))?.live_blocks;
    if live != filled || shm.0.check().is_err() {
        return Err(format!("{name}: the pool is not as full and sound after its pairs"));
    }
    Ok(figures)
}
