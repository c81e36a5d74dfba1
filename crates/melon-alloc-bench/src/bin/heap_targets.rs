//! The heap workloads that carry a target, melon's `HeapPool` against glibc's `malloc`
//! (`std::alloc::System`), timed in interleaved rounds: `ping_pong`, `fill_drain_1024` and
//! `shuffled_drain_1024`, the loops of `melon_alloc_bench::workloads` that the criterion target
//! `benches/heap.rs` times too, on 64-byte blocks.
//!
//! Criterion measures each peer in a stretch of time of its own, and on a shared machine the
//! speed moves from one stretch to the next, so the ratio of two criterion means mixes the
//! allocators with the machine. Here both allocators run in one process and take turns: each
//! workload gets a warm-up round (one untimed round of each allocator), then rounds that time a
//! fixed number of alloc+free pairs of each, melon first in odd rounds (the first is round 1)
//! and glibc first in even ones, so that a change in the machine's speed falls on both alike.
//! The table gives, in nanoseconds per pair, each allocator's median over the rounds, and the
//! median of each round's melon time over glibc's in the same round, with the least and
//! greatest in brackets. With `--tsv PATH` the figures also go to `PATH`, one line per
//! workload, allocator and round (with the pairs each round timed), which is what
//! `cargo xtask bench` reads.
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin heap_targets -- [--rounds N] [--tsv PATH]
//! ```

use std::alloc::System;
use std::fmt::Write as _;
use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use melon_alloc::HeapPool;
use melon_alloc_bench::workloads::{
    ping_pong, FillDrain, Global, Melon, Peer, ShuffledDrain, FILL,
};
use melon_alloc_bench::{exit_with, RoundsArgs, Spread, BLOCK};

/// The allocators, by the name the table and the file give them; melon's time is taken over
/// glibc's.
const PEERS: [&str; 2] = ["melon", "glibc"];

/// A workload as this driver times it: an iteration of a known number of alloc+free pairs, run
/// on any [`Peer`] (generic, so that each allocator gets an inlined copy of the timed loop).
trait Workload {
    /// The criterion group that times the same loop.
    const NAME: &'static str;
    /// Alloc+free pairs per iteration.
    const PAIRS: u64;
    /// Iterations per allocator per round: about 10 to 20 ms for melon and 40 to 90 ms for
    /// glibc on the benchmark machine, long enough that the timer's resolution matters little,
    /// short enough that the two allocators of a round run close together in time.
    const ITERATIONS: u64;

    /// One iteration on `peer`.
    fn once<P: Peer>(&mut self, peer: &mut P);
}

/// [`ping_pong`]: one block allocated and freed straight away.
struct PingPong;

impl Workload for PingPong {
    const NAME: &'static str = "ping_pong";
    const PAIRS: u64 = 1;
    const ITERATIONS: u64 = 4_000_000;

    #[inline]
    fn once<P: Peer>(&mut self, peer: &mut P) {
        ping_pong(peer);
    }
}

impl Workload for FillDrain {
    const NAME: &'static str = "fill_drain_1024";
    const PAIRS: u64 = FILL as u64;
    const ITERATIONS: u64 = 3_000;

    #[inline]
    fn once<P: Peer>(&mut self, peer: &mut P) {
        self.run(peer);
    }
}

impl Workload for ShuffledDrain {
    const NAME: &'static str = "shuffled_drain_1024";
    const PAIRS: u64 = FILL as u64;
    const ITERATIONS: u64 = 2_000;

    #[inline]
    fn once<P: Peer>(&mut self, peer: &mut P) {
        self.run(peer);
    }
}

/// One workload's figures: for each allocator of [`PEERS`], its nanoseconds per pair in each
/// round.
struct Figures {
    name: &'static str,
    pairs: u64,
    ns: [Vec<f64>; 2],
}

impl Figures {
    /// Each round's melon time over glibc's.
    fn ratios(&self) -> Vec<f64> {
        let [melon, glibc] = &self.ns;
        melon.iter().zip(glibc).map(|(melon, glibc)| melon / glibc).collect()
    }
}

fn main() -> ExitCode {
    exit_with("heap_targets", run)
}

fn run() -> Result<(), String> {
    let RoundsArgs { rounds, tsv } = RoundsArgs::parse("heap_targets", 15)?;
    let figures = [
        compare(&mut PingPong, rounds)?,
        compare(&mut FillDrain::new(), rounds)?,
        compare(&mut ShuffledDrain::new(), rounds)?,
    ];

    println!(
        "{rounds} rounds of each workload, melon and glibc taking turns (the first alternating), \
         after a warm-up round; ns per alloc+free pair of {BLOCK} bytes, median \
         (least-greatest), and the median of each round's melon time over glibc's."
    );
    println!();
    println!("| workload | pairs per round | melon | glibc | melon ÷ glibc, per round |");
    println!("|---|---:|---:|---:|---:|");
    for workload in &figures {
        let [melon, glibc] = workload.ns.each_ref().map(|ns| Spread::of(ns));
        let ratio = Spread::of(&workload.ratios());
        println!(
            "| {} | {} | {} | {} | {:.3} ({:.3}-{:.3}) |",
            workload.name,
            workload.pairs,
            melon.show(),
            glibc.show(),
            ratio.median,
            ratio.min,
            ratio.max
        );
    }

    if let Some(path) = tsv {
        let mut lines = String::from("workload\tpeer\tround\tns_per_pair\tpairs\n");
        for workload in &figures {
            for (peer, ns) in PEERS.iter().zip(&workload.ns) {
                for (round, ns) in ns.iter().enumerate() {
                    let _ = writeln!(
                        lines,
                        "{}\t{peer}\t{}\t{ns:.4}\t{}",
                        workload.name,
                        round + 1,
                        workload.pairs
                    );
                }
            }
        }
        fs::write(&path, lines).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs `workload` for melon (a root pool of its own, kept for every round) and glibc, a warm-up
/// round and then `rounds` timed rounds, taking turns. Checks the pool afterwards: every block
/// freed, every invariant kept.
fn compare<W: Workload>(workload: &mut W, rounds: usize) -> Result<Figures, String> {
    let mut melon = Melon(HeapPool::new());
    let mut glibc = Global(System);
    time(workload, &mut melon);
    time(workload, &mut glibc);
    let mut ns = [Vec::with_capacity(rounds), Vec::with_capacity(rounds)];
    for round in 1..=rounds {
        let (melon_ns, glibc_ns) = if round % 2 == 1 {
            let melon_ns = time(workload, &mut melon);
            (melon_ns, time(workload, &mut glibc))
        } else {
            let glibc_ns = time(workload, &mut glibc);
            (time(workload, &mut melon), glibc_ns)
        };
        eprintln!(
            "{} round {round}: melon {melon_ns:.2}, glibc {glibc_ns:.2} ns per pair",
            W::NAME
        );
        ns[0].push(melon_ns);
        ns[1].push(glibc_ns);
    }
    let pool = &melon.0;
    if pool.stats().live_blocks != 0 || pool.check().is_err() {
        return Err(format!("melon's pool is not empty and sound after {}", W::NAME));
    }
    Ok(Figures { name: W::NAME, pairs: W::ITERATIONS * W::PAIRS, ns })
}

/// Times [`Workload::ITERATIONS`] iterations of `workload` on `peer`: nanoseconds per pair.
fn time<W: Workload, P: Peer>(workload: &mut W, peer: &mut P) -> f64 {
    let started = Instant::now();
    for _ in 0..W::ITERATIONS {
        workload.once(peer);
    }
    started.elapsed().as_nanos() as f64 / (W::ITERATIONS * W::PAIRS) as f64
}
