//! Pools per request on a tokio runtime, against the global allocator, mimalloc and bumpalo:
//! the workload of [`melon_alloc_bench::per_request::work`] (a 200-entry map and an 800-byte
//! buffer built across two `.await`s) for each of 5,000 requests, 100 in flight.
//!
//! - `melon`: each request's task makes a `SyncChild` of a `static SyncPool` root, with a limit,
//!   on a multi-threaded runtime, and drops it at the end.
//! - `global`: the same collections in the global allocator (glibc's `malloc`), on the same
//!   runtime.
//! - `mimalloc`: the same collections in mimalloc, through an `allocator_api2` `Allocator` over
//!   `mi_malloc_aligned` and `mi_free` (the program's global allocator stays glibc), on the same
//!   runtime: mimalloc's thread-local heaps are what a pool per request competes with.
//! - `bumpalo`: each request's task makes a `bumpalo::Bump` of its own and builds the same
//!   collections in it through bumpalo's `allocator-api2` support; a `Bump` is not `Sync`, so a
//!   future that holds one cannot be spawned on the multi-threaded runtime, and these tasks run
//!   on one thread in a `LocalSet`, as a bumpalo user has to run them.
//!
//! The peers run interleaved in rounds after one round of warm-up, the first to run moving one
//! place a round (melon, global, mimalloc, bumpalo; then global, mimalloc, bumpalo, melon; ...),
//! so that a change in the machine's load, and what a peer leaves the next, falls on all of them
//! alike; the table gives the median time per request over the rounds, the median of each
//! round's time over the global allocator's (least and greatest in brackets), and the bytes one
//! request's pool held at its peak (the child's `peak_bytes_held`, bumpalo's `allocated_bytes`),
//! averaged over one request in 16.
//! With `--tsv PATH` the figures also go to `PATH`, which is what `cargo xtask bench` reads,
//! with the median, least and greatest of each round's time over bumpalo's as well.
//! `--in-flight N` changes how many requests are alive at once, and `--peers melon,global` runs
//! only the peers named (a ratio needs `global` among them), for a profiler to see one alone.
//! `--threads N` serves the requests on N threads instead, each with a current-thread runtime of
//! its own on which it runs one request at a time, `bumpalo` included: what the allocators cost
//! when every thread allocates all the time, without the scheduling of the shared runtime.
//! `--map sized` makes each request's map with room for all its entries, so that it takes one
//! table instead of growing through one of each size (`--map empty`, the default): the
//! difference is what the growth costs each peer.
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin per_request -- [--rounds N] [--tsv PATH]
//!     [--in-flight N] [--peers melon,global,mimalloc,bumpalo] [--threads N] [--map empty|sized]
//! ```

use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use core::alloc::Layout;
use core::ffi::c_void;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};
use bumpalo::Bump;
use melon_alloc::heap::GlobalSource;
use melon_alloc::SyncPool;
use melon_alloc_bench::per_request::{work, MapStart};
use melon_alloc_bench::{exit_with, positive_count, RoundsArgs, Spread};
use tokio::runtime::Runtime;
use tokio::task::{JoinSet, LocalSet};

/// Requests per round.
const REQUESTS: u64 = 5_000;
/// Requests whose tasks are alive at once, unless `--in-flight` says otherwise.
const IN_FLIGHT: usize = 100;
/// Each melon request's limit: far above its need, as a server would set it.
const REQUEST_LIMIT: usize = 1 << 20;
/// The peers, by the name the table shows; the global allocator is the baseline.
const PEERS: [&str; 4] = ["melon", "global", "mimalloc", "bumpalo"];
const BASELINE: usize = 1;
/// The other peer a target compares melon with, round by round.
const BUMPALO: usize = 3;

/// The root of every melon request's pool, alive as long as the tasks that borrow it.
static ROOT: SyncPool = SyncPool::new(GlobalSource::new(), None);

/// Every how many requests one reads its pool's figures: reading a child's `stats` takes its
/// lock and walks its counters, which is measurement, not work, so most requests skip it.
const SAMPLE_EVERY: u64 = 16;

/// What a request's task reports: the bytes its pool held at its peak, where that is known and
/// the request is one of the sampled ones.
type Outcome = Result<Option<usize>, String>;

fn main() -> ExitCode {
    exit_with("per_request", run)
}

fn run() -> Result<(), String> {
    let mut in_flight = IN_FLIGHT;
    let mut threads = None;
    let mut start = MapStart::Empty;
    let mut running = PEERS.map(|_| true);
    let options = concat!(
        " [--in-flight N] [--peers melon,global,mimalloc,bumpalo] [--threads N]",
        " [--map empty|sized]"
    );
    let RoundsArgs { rounds, tsv } =
        RoundsArgs::parse_with("per_request", 9, options, |option, value| match option {
            "--in-flight" => {
                in_flight = positive_count(option, value)?;
                Ok(true)
            }
            "--threads" => {
                threads = Some(positive_count(option, value)?);
                Ok(true)
            }
            "--map" => {
                start = match value {
                    "empty" => MapStart::Empty,
                    "sized" => MapStart::Sized,
                    _ => return Err(format!("--map is `empty` or `sized`, not `{value}`")),
                };
                Ok(true)
            }
            "--peers" => {
                let named: Vec<&str> = value.split(',').collect();
                if let Some(unknown) = named.iter().find(|name| !PEERS.contains(name)) {
                    return Err(format!("unknown peer `{unknown}`: {}", PEERS.join(", ")));
                }
                running = PEERS.map(|peer| named.contains(&peer));
                Ok(true)
            }
            _ => Ok(false),
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // figures[peer][round] = (µs per request, mean bytes per request's pool)
    let mut figures = vec![Vec::new(); PEERS.len()];
    let order: Vec<usize> = (0..PEERS.len()).filter(|&slot| running[slot]).collect();
    for round in 0..=rounds {
        for turn in 0..order.len() {
            let slot = order[(round + turn) % order.len()];
            let peer = PEERS[slot];
            let figure = match threads {
                Some(threads) => measure_on_threads(peer, threads, start)?,
                None => measure(&runtime, peer, in_flight, start)?,
            };
            // Round 0 warms up the runtime's threads, the root's slab and the allocators.
            if round > 0 {
                eprintln!("round {round}, {peer}: {figure:?}");
                figures[slot].push(figure);
            }
        }
    }

    let served = match threads {
        Some(threads) => format!("on {threads} threads, one request at a time each"),
        None => format!("{in_flight} in flight"),
    };
    println!(
        "{REQUESTS} requests, {served}, {rounds} rounds; ratios are the median over the rounds \
         of each round's time over the global allocator's (least-greatest)."
    );
    println!();
    println!("| peer | µs per request | time / global | bytes per request's pool |");
    println!("|---|---:|---:|---:|");
    let mut lines = String::from(concat!(
        "peer\tus_per_request\tratio\tratio_min\tratio_max\tbytes",
        "\tto_bumpalo\tto_bumpalo_min\tto_bumpalo_max\n"
    ));
    // Each round's time of the peer in `slot` over that of the peer in `base`.
    let ratios = |slot: usize, base: usize| {
        let ratios: Vec<f64> =
            figures[slot].iter().zip(&figures[base]).map(|(own, base)| own.0 / base.0).collect();
        Spread::of(&ratios)
    };
    for (slot, peer) in PEERS.iter().enumerate().filter(|&(slot, _)| running[slot]) {
        let time = Spread::of(&figures[slot].iter().map(|f| f.0).collect::<Vec<_>>());
        let ratio = ratios(slot, BASELINE);
        let to_bumpalo = ratios(slot, BUMPALO);
        let bytes = Spread::of(&figures[slot].iter().map(|f| f.1).collect::<Vec<_>>()).median;
        let shown = if bytes > 0.0 { format!("{bytes:.0}") } else { "n/a".into() };
        // Without the global allocator's rounds there is nothing to divide by.
        let shown_ratio = if running[BASELINE] { ratio.show() } else { "n/a".into() };
        println!("| {peer} | {:.2} | {shown_ratio} | {shown} |", time.median);
        lines.push_str(&format!(
            "{peer}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{bytes:.0}\t{:.3}\t{:.3}\t{:.3}\n",
            time.median,
            ratio.median,
            ratio.min,
            ratio.max,
            to_bumpalo.median,
            to_bumpalo.min,
            to_bumpalo.max
        ));
    }
    if ROOT.stats().live_blocks != 0 || ROOT.check().is_err() {
        return Err("melon's root is not empty and sound after the run".into());
    }
    if let Some(path) = tsv {
        fs::write(&path, lines).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs one round of one peer: its time per request in µs and the mean bytes a request's pool
/// held at its peak (0 for the global allocator, which has no pool per request).
fn measure(
    runtime: &Runtime,
    peer: &str,
    in_flight: usize,
    start: MapStart,
) -> Result<(f64, f64), String> {
    let started = Instant::now();
    let (peaks, sampled) = match peer {
        "melon" => runtime.block_on(drive(in_flight, |tasks, id| {
            tasks.spawn(request_in_child(id, start));
        })),
        "global" => runtime.block_on(drive(in_flight, |tasks, id| {
            tasks.spawn(request_in(Global, id, start));
        })),
        "mimalloc" => runtime.block_on(drive(in_flight, |tasks, id| {
            tasks.spawn(request_in(Mimalloc, id, start));
        })),
        _ => runtime.block_on(LocalSet::new().run_until(drive(in_flight, |tasks, id| {
            tasks.spawn_local(request_in_bump(id, start));
        }))),
    }?;
    Ok(round_figures(started, peaks, sampled))
}

/// A round's figures from when it started and the peaks of its sampled requests: the time per
/// request in µs, and the mean bytes a sampled request's pool held at its peak.
fn round_figures(started: Instant, peaks: usize, sampled: usize) -> (f64, f64) {
    let micros = started.elapsed().as_secs_f64() * 1e6 / REQUESTS as f64;
    (micros, if sampled == 0 { 0.0 } else { peaks as f64 / sampled as f64 })
}

/// One request in a child of [`ROOT`] of its own: the bytes the child held at its peak, if the
/// request is sampled. A function of its own for each kind of peer, so that each request's
/// future is as large as its own peer's makes it.
async fn request_in_child(id: u64, start: MapStart) -> Outcome {
    let child = ROOT.child_with_limit(REQUEST_LIMIT);
    work(&child, id, start).await?;
    Ok(sampled(id).then(|| child.stats().peak_bytes_held))
}

/// One request in `alloc`, an allocator with no pool per request.
async fn request_in<A: Allocator + Copy>(alloc: A, id: u64, start: MapStart) -> Outcome {
    work(alloc, id, start).await.map(|()| None)
}

/// One request in a `Bump` of its own, whose future cannot move between threads.
async fn request_in_bump(id: u64, start: MapStart) -> Outcome {
    let bump = Bump::new();
    work(&bump, id, start).await?;
    Ok(sampled(id).then(|| bump.allocated_bytes()))
}

/// Runs one round of one peer on `threads` threads, each serving its share of the requests one
/// after another on a current-thread runtime of its own: the time per request of them all
/// together, in µs, and the mean bytes a request's pool held at its peak.
fn measure_on_threads(peer: &str, threads: usize, start: MapStart) -> Result<(f64, f64), String> {
    let started = Instant::now();
    let shares = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| scope.spawn(move || serve_in_turn(peer, thread, threads, start)))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().map_err(|_| "a serving thread panicked".to_string())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    let (peaks, sampled) = shares.iter().fold((0, 0), |(p, s), &(peak, n)| (p + peak, s + n));
    Ok(round_figures(started, peaks, sampled))
}

/// Serves the requests whose ids are `thread` modulo `threads`, one at a time: the sum of the
/// bytes the sampled ones' pools held at their peaks, and how many were sampled.
fn serve_in_turn(
    peer: &str,
    thread: usize,
    threads: usize,
    start: MapStart,
) -> Result<(usize, usize), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let (mut peaks, mut counted) = (0, 0);
    for id in (thread as u64..REQUESTS).step_by(threads) {
        let peak = match peer {
            "melon" => runtime.block_on(request_in_child(id, start)),
            "global" => runtime.block_on(request_in(Global, id, start)),
            "mimalloc" => runtime.block_on(request_in(Mimalloc, id, start)),
            _ => runtime.block_on(request_in_bump(id, start)),
        }?;
        if let Some(peak) = peak {
            peaks += peak;
            counted += 1;
        }
    }
    Ok((peaks, counted))
}

/// mimalloc's own functions as an `Allocator`, for collections in mimalloc in a program whose
/// global allocator is another.
#[derive(Clone, Copy)]
struct Mimalloc;

// SAFETY: (1) `mi_malloc_aligned` returns null or a block of at least the size asked for,
// aligned as asked, that no other live block overlaps, valid until `mi_free`; (2) `deallocate`
// receives, per the trait's contract, blocks `allocate` returned and nobody uses any more;
// mimalloc's functions may be called from any thread, for blocks of any thread.
unsafe impl Allocator for Mimalloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: mimalloc takes any size and any power-of-two alignment; a size of 0 gets a
        // unique block of its own, which `mi_free` takes back.
        let block = unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) };
        let block = NonNull::new(block.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    unsafe fn deallocate(&self, block: NonNull<u8>, _layout: Layout) {
        // SAFETY: the block came from `mi_malloc_aligned` in `allocate`, and the caller uses it
        // no more.
        unsafe { libmimalloc_sys::mi_free(block.as_ptr().cast::<c_void>()) }
    }
}

/// Whether request `id` reads its pool's figures.
fn sampled(id: u64) -> bool {
    id % SAMPLE_EVERY == 0
}

/// Serves [`REQUESTS`] requests, each a task that `spawn` adds to the set, with at most
/// `in_flight` alive at once; the sum of the bytes the sampled ones' pools held at their
/// peaks, and how many were sampled.
async fn drive(
    in_flight: usize,
    mut spawn: impl FnMut(&mut JoinSet<Outcome>, u64),
) -> Result<(usize, usize), String> {
    let mut tasks = JoinSet::new();
    let (mut next, mut peaks, mut sampled) = (0, 0, 0);
    while next < REQUESTS || !tasks.is_empty() {
        if next < REQUESTS && tasks.len() < in_flight {
            spawn(&mut tasks, next);
            next += 1;
        } else if let Some(done) = tasks.join_next().await {
            let peak = done.map_err(|e| format!("a request's task failed: {e}"))??;
            if let Some(peak) = peak {
                peaks += peak;
                sampled += 1;
            }
        }
    }
    Ok((peaks, sampled))
}
