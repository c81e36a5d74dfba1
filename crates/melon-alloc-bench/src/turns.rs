//! Allocators timed in interleaved rounds, for the workloads that carry a target: the
//! `heap_targets` and `shm_targets` binaries.
//!
//! Criterion measures each peer in a stretch of time of its own, and on a shared machine the
//! speed moves from one stretch to the next, so the ratio of two criterion means mixes the
//! allocators with the machine. Here the allocators of a workload run in one process and take
//! turns: a warm-up round (one untimed round of each allocator), then rounds that time a fixed
//! number of pairs of each, the first allocator to run moving one place on every round, so that
//! a change in the machine's speed falls on all alike. A ratio is then the median of each
//! round's time over the baseline's in the same round.
//!
//! ```
//! use melon_alloc::HeapPool;
//! use melon_alloc_bench::turns::{compare, Contender, PingPong};
//! use melon_alloc_bench::workloads::{FreeList, Melon};
//!
//! let mut melon = Melon(HeapPool::new());
//! let mut list = FreeList::new();
//! let contenders = vec![
//!     Contender::with_iterations("melon", PingPong, &mut melon, 1000),
//!     Contender::with_iterations("free_list", PingPong, &mut list, 1000),
//! ];
//! let figures = compare("ping_pong", 1000, contenders, 3);
//! assert_eq!(figures.ns.len(), 2);
//! assert_eq!(figures.ratios(0).len(), 3);
//! assert!(figures.ns.iter().all(|(_, rounds)| rounds.len() == 3));
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::workloads::{ping_pong, FillDrain, Peer, ShuffledDrain, FILL};
use crate::Spread;

/// A workload as the drivers time it: an iteration of a known number of pairs, run on any
/// [`Peer`] (generic, so that each allocator gets an inlined copy of the timed loop).
///
/// ```
/// use melon_alloc_bench::turns::Workload;
/// use melon_alloc_bench::workloads::{FreeList, Peer};
///
/// /// Two blocks, then both freed.
/// struct TwoAtOnce;
///
/// impl Workload for TwoAtOnce {
///     const NAME: &'static str = "two_at_once";
///     const PAIRS: u64 = 2;
///     const ITERATIONS: u64 = 1000;
///
///     unsafe fn once<P: Peer>(&mut self, peer: &mut P) {
///         let (a, b) = (peer.alloc(64), peer.alloc(64));
///         // SAFETY: both came from `peer` with 64 bytes and are not used again.
///         unsafe { peer.free(a, 64); peer.free(b, 64) };
///     }
/// }
///
/// let mut list = FreeList::new();
/// // SAFETY: the workload runs on this peer alone.
/// unsafe { TwoAtOnce.once(&mut list) };
/// ```
pub trait Workload {
    /// The criterion group that times the same loop.
    const NAME: &'static str;
    /// Pairs per iteration.
    const PAIRS: u64;
    /// Iterations per allocator per round: about 10 to 20 ms for melon's heap pool on the
    /// benchmark machine, long enough that the timer's resolution matters little, short enough
    /// that the allocators of a round run close together in time.
    const ITERATIONS: u64;

    /// One iteration on `peer`.
    ///
    /// # Safety
    /// `peer` is the peer this workload was made for and has run on before, if it ran at all.
    unsafe fn once<P: Peer>(&mut self, peer: &mut P);
}

/// [`ping_pong`]: one block allocated and freed straight away.
///
/// ```
/// use melon_alloc_bench::turns::{PingPong, Workload};
/// use melon_alloc_bench::workloads::Melon;
///
/// let mut melon = Melon(melon_alloc::HeapPool::new());
/// // SAFETY: the workload runs on this peer alone.
/// unsafe { PingPong.once(&mut melon) };
/// assert_eq!(melon.0.stats().live_blocks, 0);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PingPong;

impl Workload for PingPong {
    const NAME: &'static str = "ping_pong";
    const PAIRS: u64 = 1;
    const ITERATIONS: u64 = 4_000_000;

    #[inline]
    unsafe fn once<P: Peer>(&mut self, peer: &mut P) {
        ping_pong(peer);
    }
}

impl Workload for FillDrain {
    const NAME: &'static str = "fill_drain_1024";
    const PAIRS: u64 = FILL as u64;
    const ITERATIONS: u64 = 3_000;

    #[inline]
    unsafe fn once<P: Peer>(&mut self, peer: &mut P) {
        self.run(peer);
    }
}

impl Workload for ShuffledDrain {
    const NAME: &'static str = "shuffled_drain_1024";
    const PAIRS: u64 = FILL as u64;
    const ITERATIONS: u64 = 2_000;

    #[inline]
    unsafe fn once<P: Peer>(&mut self, peer: &mut P) {
        self.run(peer);
    }
}

/// One allocator taking part in a workload: its name in the table and the file, and a timed
/// round of the workload on it, giving nanoseconds per pair.
///
/// ```
/// use melon_alloc_bench::turns::{compare, Contender, PingPong};
/// use melon_alloc_bench::workloads::FreeList;
///
/// let mut list = FreeList::new();
/// let contender = Contender::with_iterations("free_list", PingPong, &mut list, 100);
/// let figures = compare("ping_pong", 100, vec![contender], 1);
/// assert_eq!(figures.ns[0].0, "free_list");
/// assert!(figures.ns[0].1[0] > 0.0);
/// ```
pub struct Contender<'a> {
    name: &'static str,
    round: Box<dyn FnMut() -> f64 + 'a>,
}

impl core::fmt::Debug for Contender<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Contender").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<'a> Contender<'a> {
    /// `peer` running its own `workload`, [`Workload::ITERATIONS`] iterations a round.
    ///
    /// ```
    /// use melon_alloc_bench::turns::{Contender, PingPong};
    /// use melon_alloc_bench::workloads::FreeList;
    ///
    /// let mut list = FreeList::new();
    /// let _contender = Contender::new("free_list", PingPong, &mut list);
    /// ```
    pub fn new<W: Workload + 'a, P: Peer + 'a>(
        name: &'static str,
        workload: W,
        peer: &'a mut P,
    ) -> Self {
        Self::with_iterations(name, workload, peer, W::ITERATIONS)
    }

    /// `peer` running its own `workload`, `iterations` iterations a round: for a peer slower
    /// or faster than melon's heap pool, which [`Workload::ITERATIONS`] is sized for.
    ///
    /// ```
    /// use melon_alloc_bench::turns::{compare, Contender, PingPong};
    /// use melon_alloc_bench::workloads::FreeList;
    ///
    /// let mut list = FreeList::new();
    /// let contender = Contender::with_iterations("free_list", PingPong, &mut list, 10);
    /// assert_eq!(compare("ping_pong", 10, vec![contender], 2).ns[0].1.len(), 2);
    /// ```
    pub fn with_iterations<W: Workload + 'a, P: Peer + 'a>(
        name: &'static str,
        mut workload: W,
        peer: &'a mut P,
        iterations: u64,
    ) -> Self {
        Self::from_fn(name, iterations, W::PAIRS, move || {
            // SAFETY: this workload runs on `peer` alone.
            unsafe { workload.once(peer) };
        })
    }

    /// `iterations` calls of `once` a round, each of `pairs` pairs: for what is timed beside the
    /// allocators without being one, such as a lock taken and released.
    ///
    /// ```
    /// use melon_alloc_bench::turns::{compare, Contender};
    ///
    /// let mut count = 0u64;
    /// let contender = Contender::from_fn("count", 100, 1, || count += 1);
    /// assert_eq!(compare("count", 100, vec![contender], 2).ns[0].1.len(), 2);
    /// assert_eq!(count, 300, "a warm-up round and two timed ones");
    /// ```
    pub fn from_fn(
        name: &'static str,
        iterations: u64,
        pairs: u64,
        mut once: impl FnMut() + 'a,
    ) -> Self {
        let iterations = iterations.max(1);
        let pairs = pairs.max(1);
        Self {
            name,
            round: Box::new(move || {
                let started = Instant::now();
                for _ in 0..iterations {
                    once();
                }
                started.elapsed().as_nanos() as f64 / (iterations * pairs) as f64
            }),
        }
    }
}

/// One workload's figures: for each allocator, its name and nanoseconds per pair in each round,
/// the last allocator being the baseline of the ratios.
///
/// ```
/// use melon_alloc_bench::turns::Figures;
///
/// let figures = Figures { name: "w", pairs: 1, ns: vec![("a", vec![1.0]), ("glibc", vec![4.0])] };
/// assert_eq!(figures.ratios(0), [0.25]);
/// assert_eq!(figures.ratios(1), [1.0], "the baseline against itself");
/// ```
#[derive(Debug)]
pub struct Figures {
    /// The workload, as the tables and the file name it.
    pub name: &'static str,
    /// Pairs each allocator did per round.
    pub pairs: u64,
    /// Each allocator's name and nanoseconds per pair, round by round.
    pub ns: Vec<(&'static str, Vec<f64>)>,
}

impl Figures {
    /// Each round's time of the allocator at `index` over the baseline's.
    ///
    /// ```
    /// use melon_alloc_bench::turns::Figures;
    ///
    /// let figures = Figures { name: "w", pairs: 1, ns: vec![("a", vec![2.0, 3.0]), ("b", vec![4.0, 3.0])] };
    /// assert_eq!(figures.ratios(0), [0.5, 1.0]);
    /// ```
    pub fn ratios(&self, index: usize) -> Vec<f64> {
        let Some((_, base)) = self.ns.last() else { return Vec::new() };
        let Some((_, own)) = self.ns.get(index) else { return Vec::new() };
        own.iter().zip(base).map(|(own, base)| own / base).collect()
    }
}

/// Runs a warm-up round of every contender and then `rounds` timed rounds, the first to run
/// moving one place a round, and says each round's times on standard error as it goes.
/// `pairs` is what each contender does in a round, for the record.
///
/// ```
/// use melon_alloc_bench::turns::{compare, Contender, PingPong};
/// use melon_alloc_bench::workloads::FreeList;
///
/// let mut list = FreeList::new();
/// let contender = Contender::with_iterations("free_list", PingPong, &mut list, 10);
/// let figures = compare("ping_pong", 10, vec![contender], 4);
/// assert_eq!((figures.name, figures.pairs, figures.ns[0].1.len()), ("ping_pong", 10, 4));
/// ```
pub fn compare(
    name: &'static str,
    pairs: u64,
    mut contenders: Vec<Contender<'_>>,
    rounds: usize,
) -> Figures {
    for contender in &mut contenders {
        (contender.round)();
    }
    let mut ns: Vec<Vec<f64>> = contenders.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        let mut line = format!("{name} round {}:", round + 1);
        let count = contenders.len();
        for turn in 0..count {
            let index = (round + turn) % count;
            let time = (contenders[index].round)();
            ns[index].push(time);
        }
        for (contender, ns) in contenders.iter().zip(&ns) {
            let _ = write!(line, " {} {:.2}", contender.name, ns[round]);
        }
        eprintln!("{line} ns per pair");
    }
    Figures { name, pairs, ns: contenders.iter().map(|c| c.name).zip(ns).collect() }
}

/// Prints each workload's figures: each allocator's median ns per pair (least-greatest), and
/// the median of its rounds' ratios to the baseline.
///
/// ```
/// use melon_alloc_bench::turns::{print, Figures};
///
/// print(&[Figures { name: "w", pairs: 1, ns: vec![("a", vec![2.0]), ("b", vec![4.0])] }]);
/// ```
pub fn print(figures: &[Figures]) {
    for workload in figures {
        println!();
        println!("{}, {} pairs per round:", workload.name, workload.pairs);
        let last = workload.ns.len().saturating_sub(1);
        for (index, (name, ns)) in workload.ns.iter().enumerate() {
            let ratio = if index == last {
                String::from("baseline")
            } else {
                Spread::of(&workload.ratios(index)).show()
            };
            println!("  {name:<14} {:<26} {ratio}", Spread::of(ns).show());
        }
    }
}

/// Writes the figures to `path` as tab-separated values, one line per workload, allocator and
/// round, with the pairs each round timed: what `cargo xtask bench` reads.
///
/// # Errors
/// The file cannot be written.
///
/// ```
/// use melon_alloc_bench::turns::{write_tsv, Figures};
///
/// let path = std::env::temp_dir().join(format!("turns-doc-{}.tsv", std::process::id()));
/// write_tsv(&path, &[Figures { name: "w", pairs: 8, ns: vec![("a", vec![2.0])] }]).unwrap();
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert_eq!(text, "workload\tpeer\tround\tns_per_pair\tpairs\nw\ta\t1\t2.0000\t8\n");
/// std::fs::remove_file(path).unwrap();
/// ```
pub fn write_tsv(path: &Path, figures: &[Figures]) -> Result<(), String> {
    let mut lines = String::from("workload\tpeer\tround\tns_per_pair\tpairs\n");
    for workload in figures {
        for (peer, ns) in &workload.ns {
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
    std::fs::write(path, lines).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
