//! Many processes hammering one shared pool with random allocations and frees, against
//! rts-alloc's shared region, Melon's figures for the same workload, and glibc and heap pools in
//! private heaps.
//!
//! Each of N processes, forked from this one after the pool is made, runs the same loop: draw
//! from its own seeded xorshift generator; if it holds fewer than 256 blocks and a coin flip says
//! so, allocate 16 to 4096 bytes (uniformly), otherwise free one of its live blocks chosen at
//! random. Every allocation and every free counts as one operation. A process stamps each block
//! with a tag of its own and checks the tag before the free, so that two processes handed the
//! same memory fail the run instead of speeding it up. When its operations are done it frees
//! what it still holds (timed, not counted) and reports success by its exit status.
//!
//! The parent times the whole run, from before the first fork to after the last `wait4` (a
//! `waitpid` that also returns the child's CPU time), and prints total million operations per
//! second. The variants, each in a fresh setup:
//! - `shm`: every operation on one shared [`ShmPool`], each taking the pool's lock.
//! - `shm-child`: each process makes its own child pool with [`ShmPool::child`] after the fork
//!   and works through it, taking the shared lock only when it needs or returns a chunk.
//! - `rts-alloc`: one shared region of the `rts-alloc` crate (see [`rts`]), the same size as
//!   the shared pool; each process claims a worker slot after the fork and allocates from slabs
//!   of its own without a lock. It rounds every request up to a power of two of at least 256
//!   bytes, and at the end each process checks that the region counts none of its bytes as
//!   still allocated.
//! - `glibc`: each process uses [`System`], glibc's `malloc` and `free`, in its private heap.
//! - `heap`: each process uses its own melon [`HeapPool`].
//!
//! After a shared variant the parent checks the pool and that its free bytes are back to what
//! they were before the fork.
//!
//! Criterion cannot time work spread over processes, which is why this is a plain binary:
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin hammer -- [OPS] [--quick] [--processes 1,2,4,16]
//!     [--runs 3] [--variants shm,shm-child,rts-alloc,glibc,heap] [--tsv PATH]
//! ```
//!
//! `--quick` does a twentieth of the operations in two runs, which is enough to see that every
//! cell works, not to quote its figures. The tables show the median of the runs with the lowest
//! and highest in brackets, the workers' CPU time per operation, and the ratios that the
//! targets are set on.
//!
//! With `--tsv PATH` it also writes one line per run to `PATH` (variant, processes, run, million
//! operations per second, CPU nanoseconds per operation, tab-separated, after a header line),
//! which is what `cargo xtask bench` reads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use melon_alloc::{ChildPool, HeapPool};
use melon_alloc_bench::{exit_with, Spread, XorShift64};
use melon_alloc_shm::ShmPool;

mod rts;

/// Operations per process unless the command line says otherwise.
const DEFAULT_OPS: u64 = 2_000_000;

/// Process counts run unless the command line says otherwise: 1, 2 and 4, the counts Melon's
/// figures are for, and 16 to show how the lock behaves when far more processes than cores
/// contend for it.
const DEFAULT_PROCESSES: [usize; 4] = [1, 2, 4, 16];

/// Runs of every cell unless the command line says otherwise; the table shows their median.
const DEFAULT_RUNS: usize = 3;

/// The most blocks one process holds at a time.
const MAX_LIVE: usize = 256;

/// The smallest request, in bytes.
const MIN_SIZE: usize = 16;

/// The largest request, in bytes.
const MAX_SIZE: usize = 4096;

/// Capacity of the shared pool, and of rts-alloc's region: 16 processes holding 256 blocks of
/// 4 KiB each need 16 MiB, and the rest leaves room for partly used slabs and the chunks child
/// pools keep.
const POOL: usize = 256 << 20;

/// Seed of the first process's generator; process `i` starts from `SEED + i`.
const SEED: u64 = 0x6861_6d6d_6572_0001;

/// Melon's `mln_alloc` shared pool with a process-shared pthread mutex on this workload, in
/// million operations per second in total, by process count (quoted from `MELON_ALLOC.md`, not
/// measured here).
const MELON: [(usize, f64); 3] = [(1, 5.2), (2, 3.0), (4, 1.4)];

/// glibc on the same workload in the same measurement as [`MELON`] (quoted, not measured here).
const GLIBC_QUOTED: [(usize, f64); 3] = [(1, 31.0), (2, 55.0), (4, 45.0)];

/// The target for `shm`: at least this many times Melon's figure at each process count.
const SHM_OVER_MELON: f64 = 4.0;

/// The target for `shm-child`: at least this share of glibc's figure from the same run.
const CHILD_OVER_GLIBC: f64 = 0.5;

/// One way of giving the processes memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    /// Every operation on the shared pool itself.
    Shm,
    /// A child pool of the shared pool per process.
    ShmChild,
    /// A worker of an rts-alloc region per process.
    Rts,
    /// glibc's `malloc` and `free`, private to each process.
    Glibc,
    /// A melon heap pool per process.
    Heap,
}

impl Variant {
    /// Every variant, in the order of the table's rows.
    const ALL: [Variant; 5] =
        [Variant::Shm, Variant::ShmChild, Variant::Rts, Variant::Glibc, Variant::Heap];

    /// The name on the command line and in the table.
    fn name(self) -> &'static str {
        match self {
            Variant::Shm => "shm",
            Variant::ShmChild => "shm-child",
            Variant::Rts => "rts-alloc",
            Variant::Glibc => "glibc",
            Variant::Heap => "heap",
        }
    }
}

/// What the parent makes before the fork for the workers to share, if anything.
enum Setup {
    /// Nothing: each worker allocates in its private heap.
    Private,
    /// A shared pool, with its free bytes before the fork.
    Shm(ShmPool, usize),
    /// An rts-alloc region.
    Rts(rts::Region),
}

impl Setup {
    /// A fresh setup for `variant` with `processes` workers.
    fn new(variant: Variant, processes: usize) -> Result<Self, String> {
        Ok(match variant {
            Variant::Shm | Variant::ShmChild => {
                let shm =
                    ShmPool::new(POOL).map_err(|e| format!("cannot make the shared pool: {e}"))?;
                let available = shm.available();
                Setup::Shm(shm, available)
            }
            Variant::Rts => Setup::Rts(rts::Region::new(POOL, processes)?),
            Variant::Glibc | Variant::Heap => Setup::Private,
        })
    }

    /// Checks what the workers left behind, after they are gone: the shared pool must be
    /// consistent and have every byte back. (Each rts-alloc worker checks its own count of
    /// allocated bytes, which only it can read.)
    fn check(&self) -> Result<(), String> {
        let Setup::Shm(shm, available) = self else { return Ok(()) };
        shm.check().map_err(|e| format!("the pool is corrupt: {e}"))?;
        let stats = shm.stats().map_err(|e| e.to_string())?;
        if stats.available != *available || stats.live_blocks != 0 || stats.lent_bytes != 0 {
            return Err(format!(
                "the pool did not get everything back: {} bytes free of {available}, {} live \
                 blocks, {} bytes lent",
                stats.available, stats.live_blocks, stats.lent_bytes
            ));
        }
        Ok(())
    }
}

/// Why a worker process failed, sent to the parent as its exit status.
#[derive(Clone, Copy, Debug)]
#[repr(i32)]
enum Failure {
    /// An allocation returned nothing.
    Alloc = 1,
    /// A free was refused.
    Free = 2,
    /// A block's tag changed while it was live: another process or block wrote into it.
    Stamp = 3,
    /// The allocator still counts bytes as allocated after every block was freed.
    Leak = 4,
    /// The worker could not join the shared allocator.
    Join = 5,
    /// The worker panicked.
    Panic = 101,
}

/// What a worker allocates through.
trait Allocator {
    /// Allocates `size` bytes aligned to 16.
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>>;

    /// Frees a block, returning whether the allocator accepted it.
    ///
    /// # Safety
    /// `block` came from [`alloc`](Allocator::alloc) on this allocator with `size`, has not
    /// been freed, and is not used again.
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize) -> bool;

    /// Bytes the allocator still counts as allocated by this process, where it keeps such a
    /// count: 0 once every block is back.
    fn outstanding(&self) -> u64 {
        0
    }
}

/// The shared pool itself: each operation takes its lock.
struct Shared<'pool>(&'pool ShmPool);

impl Allocator for Shared<'_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) -> bool {
        // The shared pool's checked free is its only free, and O(1): `free` calls it too.
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.try_free(block) }.is_ok()
    }
}

/// A heap pool: a child of the shared pool, or a root pool over glibc.
struct Pooled<'pool>(&'pool melon_alloc::Pool);

impl Allocator for Pooled<'_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) -> bool {
        // The plain free, as a program would call it: a heap pool's `try_free` walks every chunk
        // the pool holds to vet the pointer, which is a debugging aid, not the normal path. The
        // tags still catch a block handed out twice.
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.free(block) };
        true
    }
}

/// glibc's `malloc` and `free`, through the standard library's [`System`].
struct Glibc;

impl Allocator for Glibc {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(size, 16).ok()?;
        // SAFETY: every request is at least `MIN_SIZE` bytes, so the layout is not zero-sized.
        NonNull::new(unsafe { System.alloc(layout) })
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize) -> bool {
        let Ok(layout) = Layout::from_size_align(size, 16) else { return false };
        // SAFETY: the caller passes a live block allocated with this size, so with this layout.
        unsafe { System.dealloc(block.as_ptr(), layout) };
        true
    }
}

/// One process's share of the workload: `ops` random allocations and frees, then a free of
/// every block still held.
fn work(allocator: &mut impl Allocator, process: usize, ops: u64) -> Result<(), Failure> {
    let mut rng = XorShift64::new(SEED.wrapping_add(process as u64));
    // Allocated before the loop, from glibc, so that the bookkeeping costs the same in every
    // variant and never touches the allocator being timed.
    let mut live: Vec<(NonNull<u8>, usize, u64)> = Vec::with_capacity(MAX_LIVE);
    let owner = (process as u64) << 48;
    for op in 0..ops {
        // The top bit: xorshift's low bits are its weakest.
        let coin = rng.next_u64() >> 63 == 0;
        if live.is_empty() || (live.len() < MAX_LIVE && coin) {
            let size = MIN_SIZE + rng.below(MAX_SIZE - MIN_SIZE + 1);
            let block = allocator.alloc(size).ok_or(Failure::Alloc)?;
            let tag = owner | op;
            // SAFETY: the block holds at least 16 bytes and is aligned to 16.
            unsafe { block.cast::<u64>().as_ptr().write(tag) };
            live.push((block, size, tag));
        } else {
            let (block, size, tag) = live.swap_remove(rng.below(live.len()));
            release(allocator, block, size, tag)?;
        }
    }
    while let Some((block, size, tag)) = live.pop() {
        release(allocator, block, size, tag)?;
    }
    if allocator.outstanding() != 0 {
        return Err(Failure::Leak);
    }
    Ok(())
}

/// Checks a block's tag and frees it.
fn release(
    allocator: &mut impl Allocator,
    block: NonNull<u8>,
    size: usize,
    tag: u64,
) -> Result<(), Failure> {
    // SAFETY: the block is live, was stamped when allocated, and is aligned to 16.
    if unsafe { block.cast::<u64>().as_ptr().read() } != tag {
        return Err(Failure::Stamp);
    }
    // SAFETY: the block came from `allocator` with `size`, and is dropped from the live list.
    if unsafe { allocator.free(block, size) } {
        Ok(())
    } else {
        Err(Failure::Free)
    }
}

/// What a forked worker runs: its variant's allocator, the workload, and its exit status.
fn worker(variant: Variant, setup: &Setup, process: usize, ops: u64) -> i32 {
    let result = panic::catch_unwind(AssertUnwindSafe(|| match (variant, setup) {
        (Variant::Shm, Setup::Shm(shm, _)) => work(&mut Shared(shm), process, ops),
        (Variant::ShmChild, Setup::Shm(shm, _)) => {
            // Made after the fork: a child pool's bookkeeping is private to its process.
            let child: ChildPool<'_> = shm.child();
            let result = work(&mut Pooled(&child), process, ops);
            // Dropped before the process exits, so that its chunks go back to the shared pool.
            drop(child);
            result
        }
        (Variant::Rts, Setup::Rts(region)) => {
            // Dropped at the end of this arm, which gives its worker slot back.
            let mut worker = region.join().map_err(|_| Failure::Join)?;
            work(&mut worker, process, ops)
        }
        (Variant::Glibc, _) => work(&mut Glibc, process, ops),
        (Variant::Heap, _) => {
            let pool = HeapPool::new();
            work(&mut Pooled(&pool), process, ops)
        }
        (Variant::Shm | Variant::ShmChild | Variant::Rts, _) => Err(Failure::Join),
    }));
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(failure)) => failure as i32,
        Err(_) => Failure::Panic as i32,
    }
}

/// What one run measured.
struct Timing {
    /// From before the first fork to after the last `waitpid`.
    elapsed: Duration,
    /// CPU time the workers used, user and system, from `wait4`. Set against `elapsed`, it
    /// shows how much of a run was spent waiting: for the lock, or for a core that other work on
    /// the machine held.
    cpu: Duration,
}

/// Runs one variant with `processes` workers in a fresh setup and times it.
fn run(variant: Variant, processes: usize, ops: u64) -> Result<Timing, String> {
    let setup = Setup::new(variant, processes)?;
    // Anything still buffered would be written again by every child that flushed it.
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    std::io::stderr().flush().map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut children = Vec::with_capacity(processes);
    let mut fork_error = None;
    for process in 0..processes {
        // SAFETY: this process has a single thread, so the child may keep running Rust code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = worker(variant, &setup, process, ops);
            // SAFETY: leaves the child at once, without running the parent's destructors (the
            // setup's among them) a second time.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            fork_error = Some(std::io::Error::last_os_error());
            break;
        }
        children.push(pid);
    }
    let mut failures = Vec::new();
    let mut cpu = Duration::ZERO;
    for &pid in &children {
        let mut status = 0;
        // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is a child of this process, and `status` and `usage` are valid places
        // to write.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let seconds = |t: libc::timeval| {
            Duration::new(t.tv_sec as u64, 0) + Duration::from_micros(t.tv_usec as u64)
        };
        cpu += seconds(usage.ru_utime) + seconds(usage.ru_stime);
        if waited != pid {
            failures.push(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
        } else if !libc::WIFEXITED(status) {
            failures.push(format!("process {pid} ended by signal {}", libc::WTERMSIG(status)));
        } else if libc::WEXITSTATUS(status) != 0 {
            failures.push(format!("process {pid} exited with {}", libc::WEXITSTATUS(status)));
        }
    }
    let elapsed = started.elapsed();

    if let Some(error) = fork_error {
        failures.push(format!("fork: {error}"));
    }
    if !failures.is_empty() {
        return Err(format!("{} with {processes}: {}", variant.name(), failures.join("; ")));
    }
    setup.check().map_err(|e| format!("{} with {processes}: {e}", variant.name()))?;
    Ok(Timing { elapsed, cpu })
}

/// The command line, parsed.
struct Options {
    /// Operations per process.
    ops: u64,
    /// Process counts to run.
    processes: Vec<usize>,
    /// Runs of every cell.
    runs: usize,
    /// Variants to run.
    variants: Vec<Variant>,
    /// Where to write every run's figures as tab-separated lines, if anywhere.
    tsv: Option<String>,
}

/// Operations per process with `--quick`.
const QUICK_OPS: u64 = 100_000;

/// Runs of every cell with `--quick`: two, so that the spread is shown too.
const QUICK_RUNS: usize = 2;

/// Parses `[OPS] [--quick] [--processes LIST] [--runs N] [--variants LIST] [--tsv PATH]`.
///
/// `--quick` sets the operations and runs to [`QUICK_OPS`] and [`QUICK_RUNS`], wherever it
/// stands; an operation count or `--runs` given as well still wins.
fn parse(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let mut options = Options {
        ops: if quick { QUICK_OPS } else { DEFAULT_OPS },
        processes: DEFAULT_PROCESSES.to_vec(),
        runs: if quick { QUICK_RUNS } else { DEFAULT_RUNS },
        variants: Variant::ALL.to_vec(),
        tsv: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {}
            "--processes" => {
                options.processes = value("--processes")?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("bad process count {n:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => {
                let runs = value("--runs")?;
                options.runs = runs.parse().map_err(|e| format!("bad run count {runs:?}: {e}"))?;
            }
            "--tsv" => options.tsv = Some(value("--tsv")?.clone()),
            "--variants" => {
                options.variants = value("--variants")?
                    .split(',')
                    .map(|name| {
                        Variant::ALL
                            .into_iter()
                            .find(|variant| variant.name() == name)
                            .ok_or(format!("unknown variant {name:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            ops => {
                options.ops =
                    ops.parse().map_err(|e| format!("bad operation count {ops:?}: {e}"))?
            }
        }
    }
    if options.runs == 0 || options.ops == 0 || options.processes.contains(&0) {
        return Err("operations, runs and process counts must be at least 1".into());
    }
    Ok(options)
}

/// The figure for `processes` in a quoted table, if it has one.
fn quoted(table: &[(usize, f64)], processes: usize) -> Option<f64> {
    table.iter().find(|&&(count, _)| count == processes).map(|&(_, figure)| figure)
}

/// Every run's figures of every cell: million operations per second and the workers' CPU
/// nanoseconds per operation, by variant and process count.
struct Figures {
    runs: BTreeMap<(Variant, usize), Vec<(f64, f64)>>,
}

impl Figures {
    /// Million operations per second of a cell: the median of its runs and their extremes.
    fn mops(&self, variant: Variant, processes: usize) -> Option<Spread> {
        let runs = self.runs.get(&(variant, processes))?;
        Some(Spread::of(&runs.iter().map(|&(mops, _)| mops).collect::<Vec<_>>()))
    }

    /// The median CPU nanoseconds per operation of a cell.
    fn cpu_ns(&self, variant: Variant, processes: usize) -> Option<f64> {
        let runs = self.runs.get(&(variant, processes))?;
        Some(Spread::of(&runs.iter().map(|&(_, cpu)| cpu).collect::<Vec<_>>()).median)
    }

    /// The median of a figure: a measured cell, or a quoted figure where there is one.
    fn median(&self, figure: Figure, processes: usize) -> Option<f64> {
        match figure {
            Figure::Measured(variant) => self.mops(variant, processes).map(|s| s.median),
            Figure::Quoted(table) => quoted(table, processes),
        }
    }
}

/// A figure a ratio is made of: a variant measured in this run, or a quoted one.
#[derive(Clone, Copy)]
enum Figure {
    Measured(Variant),
    Quoted(&'static [(usize, f64)]),
}

/// The ratios the report shows, as (label, numerator, denominator).
const RATIOS: [(&str, Figure, Figure); 6] = [
    ("shm / Melon (target >= 4, quoted)", Figure::Measured(Variant::Shm), Figure::Quoted(&MELON)),
    (
        "shm-child / glibc (target >= 0.5)",
        Figure::Measured(Variant::ShmChild),
        Figure::Measured(Variant::Glibc),
    ),
    ("shm / glibc", Figure::Measured(Variant::Shm), Figure::Measured(Variant::Glibc)),
    ("shm / rts-alloc", Figure::Measured(Variant::Shm), Figure::Measured(Variant::Rts)),
    ("shm-child / rts-alloc", Figure::Measured(Variant::ShmChild), Figure::Measured(Variant::Rts)),
    ("Melon / glibc (both quoted)", Figure::Quoted(&MELON), Figure::Quoted(&GLIBC_QUOTED)),
];

/// Runs every cell, the runs going round all cells in turn, and returns their figures and the
/// lines of the tab-separated file.
fn measure(options: &Options) -> Result<(Figures, String), String> {
    let Options { ops, ref processes, runs, ref variants, .. } = *options;
    let mut lines = String::from("variant\tprocesses\trun\tmops\tcpu_ns_per_op\n");
    let mut figures = Figures { runs: BTreeMap::new() };
    // The runs go round every cell in turn, so that a stretch of load on the machine spreads
    // over all variants instead of landing on one.
    for run_index in 1..=runs {
        for &count in processes {
            for &variant in variants {
                let Timing { elapsed, cpu } = run(variant, count, ops)?;
                let total = (count as u64 * ops) as f64;
                let mops = total / elapsed.as_secs_f64() / 1e6;
                let per_op = cpu.as_secs_f64() * 1e9 / total;
                eprintln!(
                    "run {run_index}: {:>9} x {count:>2}: {:7.1} ms, {mops:6.2} M ops/s, \
                     {per_op:6.1} ns CPU per operation",
                    variant.name(),
                    elapsed.as_secs_f64() * 1e3
                );
                let _ =
                    writeln!(lines, "{}\t{count}\t{run_index}\t{mops}\t{per_op}", variant.name());
                figures.runs.entry((variant, count)).or_default().push((mops, per_op));
            }
        }
    }
    Ok((figures, lines))
}

/// Prints a table with a row per variant (or ratio, as `what` says) and a column per process
/// count.
fn table(what: &str, processes: &[usize], rows: &[(String, Vec<String>)]) {
    let counts: Vec<String> = processes
        .iter()
        .map(|&count| format!("{count} process{}", if count == 1 { "" } else { "es" }))
        .collect();
    println!("| {what} | {} |", counts.join(" | "));
    println!("|---|{}", "---:|".repeat(processes.len()));
    for (label, cells) in rows {
        println!("| {label} | {} |", cells.join(" | "));
    }
}

/// Runs every cell and prints the tables.
fn hammer(options: &Options) -> Result<(), String> {
    let Options { ops, ref processes, runs, ref variants, ref tsv } = *options;
    println!(
        "Hammer: each process does {ops} random allocations and frees of {MIN_SIZE} to {MAX_SIZE} \
         bytes, at most {MAX_LIVE} live; {runs} run(s) per cell; {} cores.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let (figures, lines) = measure(options)?;
    if let Some(path) = tsv {
        std::fs::write(path, lines).map_err(|e| format!("cannot write {path}: {e}"))?;
    }

    let na = || "n/a".to_string();
    println!();
    println!(
        "Total million operations per second, by process count: median of {runs} run(s), \
         lowest and highest in brackets."
    );
    println!();
    let mut rows: Vec<(String, Vec<String>)> = variants
        .iter()
        .map(|&variant| {
            let cells = processes
                .iter()
                .map(|&count| figures.mops(variant, count).map_or_else(na, |s| s.show()))
                .collect();
            (variant.name().to_string(), cells)
        })
        .collect();
    let melon = processes.iter().map(|&count| quoted(&MELON, count));
    rows.push((
        "Melon (quoted)".into(),
        melon.map(|figure| figure.map_or_else(na, |f| format!("{f:.2}"))).collect(),
    ));
    table("variant", processes, &rows);

    println!();
    println!(
        "CPU time of the workers per operation, user and system, in ns (median of {runs}): \
         the cost of an operation with waiting for the lock or for a core left out."
    );
    println!();
    let rows: Vec<(String, Vec<String>)> = variants
        .iter()
        .map(|&variant| {
            let cells = processes
                .iter()
                .map(|&count| figures.cpu_ns(variant, count).map_or_else(na, |c| format!("{c:.0}")))
                .collect();
            (variant.name().to_string(), cells)
        })
        .collect();
    table("variant", processes, &rows);

    println!();
    println!("Ratios of the medians:");
    println!();
    // Two decimals, or three below 0.1, where two would leave a single significant digit.
    let show = |r: f64| if r < 0.1 { format!("{r:.3}") } else { format!("{r:.2}") };
    let rows: Vec<(String, Vec<String>)> = RATIOS
        .iter()
        .map(|&(label, over, under)| {
            let cells = processes
                .iter()
                .map(|&count| {
                    let ratio = figures.median(over, count).zip(figures.median(under, count));
                    ratio.map_or_else(na, |(a, b)| show(a / b))
                })
                .collect();
            (label.to_string(), cells)
        })
        .collect();
    table("ratio", processes, &rows);

    // The targets are set at 1, 2 and 4 processes; 16 shows scaling and has none.
    let met = |over: Figure, under: Figure, target: f64| {
        processes.iter().filter(|&&count| count <= 4).all(|&count| {
            let ratio = figures.median(over, count).zip(figures.median(under, count));
            ratio.is_none_or(|(a, b)| a / b >= target)
        })
    };
    println!();
    let melon: Vec<String> = MELON.iter().map(|(n, f)| format!("{f} at {n}")).collect();
    let glibc_quoted: Vec<String> =
        GLIBC_QUOTED.iter().map(|(n, f)| format!("{f} at {n}")).collect();
    println!(
        "Quoted, not measured here: Melon {} M ops/s; glibc in the same measurement {}.",
        melon.join(", "),
        glibc_quoted.join(", ")
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let shm = Figure::Measured(Variant::Shm);
    if variants.contains(&Variant::Shm) {
        let shm_met = met(shm, Figure::Quoted(&MELON), SHM_OVER_MELON);
        println!("shm >= {SHM_OVER_MELON} x Melon at 1, 2 and 4 processes: {}", verdict(shm_met));
    }
    if variants.contains(&Variant::ShmChild) && variants.contains(&Variant::Glibc) {
        let child = Figure::Measured(Variant::ShmChild);
        let child_met = met(child, Figure::Measured(Variant::Glibc), CHILD_OVER_GLIBC);
        println!(
            "shm-child >= {CHILD_OVER_GLIBC} x glibc (same run) at 1, 2 and 4 processes: {}",
            verdict(child_met)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    exit_with("hammer", || parse(&args).and_then(|options| hammer(&options)))
}
