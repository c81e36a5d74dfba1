//! The heap workloads that carry a target, timed in interleaved rounds: `ping_pong`,
//! `fill_drain_1024` and `shuffled_drain_1024` on 64-byte blocks, melon's `HeapPool` against
//! glibc's `malloc` (`std::alloc::System`), with a bare free list (`FreeList`) beside them, what
//! one list's pops and pushes take on the machine; and `large_ring` (32 live blocks of 16 to
//! 64 KiB), melon's `HeapPool` with and without a limit against mimalloc as the global
//! allocator. The loops are those of `melon_alloc_bench::workloads`, which the criterion target
//! `benches/heap.rs` times too.
//!
//! Criterion measures each peer in a stretch of time of its own, and on a shared machine the
//! speed moves from one stretch to the next, so the ratio of two criterion means mixes the
//! allocators with the machine. Here the allocators of a workload run in one process and take
//! turns: each workload gets a warm-up round (one untimed round of each allocator), then rounds
//! that time a fixed number of pairs of each, the first allocator to run moving one place on
//! every round (melon first in the first), so that a change in the machine's speed falls on all
//! alike. The table gives, in nanoseconds per pair, each allocator's median over the rounds, and
//! the median of each round's time over the baseline's (glibc, or mimalloc for the ring)
//! in the same round, with the least and greatest in brackets. With `--tsv PATH` the figures
//! also go to `PATH`, one line per workload, allocator and round (with the pairs each round
//! timed), which is what `cargo xtask bench` reads.
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin heap_targets -- [--rounds N] [--tsv PATH]
//! ```

use std::alloc::System;
use std::process::ExitCode;

use melon_alloc::HeapPool;
use melon_alloc_bench::turns::{compare, print, write_tsv, Contender, Figures, PingPong, Workload};
use melon_alloc_bench::workloads::{FillDrain, FreeList, Global, Melon, Peer, Ring, ShuffledDrain};
use melon_alloc_bench::{
    exit_with, large_sizes, RoundsArgs, BLOCK, LARGE_LIMIT, LARGE_RING, RING_SIZES,
};
use mimalloc::MiMalloc;

fn main() -> ExitCode {
    exit_with("heap_targets", run)
}

fn run() -> Result<(), String> {
    let RoundsArgs { rounds, tsv } = RoundsArgs::parse("heap_targets", 15)?;
    let figures = [
        against_glibc(rounds, || PingPong)?,
        against_glibc(rounds, FillDrain::new)?,
        against_glibc(rounds, ShuffledDrain::new)?,
        large_ring(rounds)?,
    ];

    println!(
        "{rounds} rounds of each workload, its allocators taking turns (the first moving one \
         place a round), after a warm-up round; ns per pair (alloc+free of {BLOCK} bytes, or \
         free+alloc of 16 to 64 KiB in the ring), median (least-greatest), and the median of \
         each round's time over the last allocator's."
    );
    print(&figures);
    match tsv {
        Some(path) => write_tsv(&path, &figures),
        None => Ok(()),
    }
}

/// A small-block workload for melon (a root pool of its own, kept for every round), the bare
/// [`FreeList`] that shows what one list's pops and pushes take on this machine, and glibc.
fn against_glibc<W: Workload>(rounds: usize, make: impl Fn() -> W) -> Result<Figures, String> {
    let mut melon = Melon(HeapPool::new());
    let mut free_list = FreeList::new();
    let mut glibc = Global(System);
    let figures = compare(
        W::NAME,
        W::ITERATIONS * W::PAIRS,
        vec![
            Contender::new("melon", make(), &mut melon),
            Contender::new("free_list", make(), &mut free_list),
            Contender::new("glibc", make(), &mut glibc),
        ],
        rounds,
    );
    check_empty(&melon.0, W::NAME)?;
    Ok(figures)
}

/// The large ring for melon, melon with a limit (each a root pool of its own) and mimalloc, each
/// with a ring of its own, filled before the first round and drained after the last.
fn large_ring(rounds: usize) -> Result<Figures, String> {
    let mut melon = Melon(HeapPool::new());
    let mut limited = Melon(HeapPool::with_limit(LARGE_LIMIT));
    let mut mimalloc = Global(MiMalloc);
    let sizes = large_sizes(RING_SIZES);
    let mut rings = [
        Ring::fill(sizes.clone(), LARGE_RING, &mut melon),
        Ring::fill(sizes.clone(), LARGE_RING, &mut limited),
        Ring::fill(sizes, LARGE_RING, &mut mimalloc),
    ];
    let [melon_ring, limited_ring, mimalloc_ring] = &mut rings;
    let figures = compare(
        RingTurns::NAME,
        RingTurns::ITERATIONS * RingTurns::PAIRS,
        vec![
            Contender::new("melon", RingTurns(melon_ring), &mut melon),
            Contender::new("melon_limited", RingTurns(limited_ring), &mut limited),
            Contender::new("mimalloc", RingTurns(mimalloc_ring), &mut mimalloc),
        ],
        rounds,
    );
    let [melon_ring, limited_ring, mimalloc_ring] = rings;
    // SAFETY: each ring goes back to the peer it was filled from and turned with.
    unsafe {
        melon_ring.drain(&mut melon);
        limited_ring.drain(&mut limited);
        mimalloc_ring.drain(&mut mimalloc);
    }
    check_empty(&melon.0, RingTurns::NAME)?;
    check_empty(&limited.0, RingTurns::NAME)?;
    Ok(figures)
}

/// The large ring, one turn an iteration: a [`Ring`] borrowed for the rounds, so that its blocks
/// can be drained after them.
struct RingTurns<'a>(&'a mut Ring);

impl Workload for RingTurns<'_> {
    const NAME: &'static str = "large_ring";
    const PAIRS: u64 = LARGE_RING as u64;
    const ITERATIONS: u64 = 8_000;

    #[inline]
    unsafe fn once<P: Peer>(&mut self, peer: &mut P) {
        // SAFETY: the caller passes the peer the ring was filled from.
        unsafe { self.0.turn(peer) };
    }
}

/// Checks a pool after its workload: every block freed, every invariant kept.
fn check_empty(pool: &HeapPool, workload: &str) -> Result<(), String> {
    if pool.stats().live_blocks != 0 || pool.check().is_err() {
        return Err(format!("melon's pool is not empty and sound after {workload}"));
    }
    Ok(())
}
