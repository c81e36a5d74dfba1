//! The global allocators compared on a program's workload: glibc's `malloc`, mimalloc and melon's
//! `LockedHeapPool` over `OsSource`, each as the `#[global_allocator]` of a child binary of its
//! own (`global_glibc`, `global_mimalloc`, `global_melon`, built beside this one).
//!
//! The workload ([`melon_alloc_bench::global::btree_workload`]) builds a `BTreeMap<String,
//! Vec<u8>>` of 400,000 entries and drops it, on 1 thread and on 2 threads at once. Each child runs
//! it once in a fresh process and reports its wall time and its peak resident memory (`VmHWM`). The
//! children run interleaved in rounds after an untimed round of warm-up, the first to run moving
//! one place a round (glibc, mimalloc, melon; then mimalloc, melon, glibc; ...), so that a change
//! in the machine's load falls on all of them alike, and each round's figures are taken over
//! glibc's of the same round. The table gives the median of those ratios and their spread (least to
//! greatest). With `--tsv PATH` the figures also go to `PATH`, one line per (threads, allocator),
//! which is what `cargo xtask bench` reads.
//!
//! ```text
//! cargo build --release -p melon-alloc-bench --bins
//! target/release/global [--rounds N] [--tsv PATH]
//! ```

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

use melon_alloc_bench::{exit_with, RoundsArgs, Spread};

/// The children, by the name the table shows; glibc first, since it is the baseline.
const ALLOCATORS: [&str; 3] = ["glibc", "mimalloc", "melon"];

/// Thread counts measured.
const THREADS: [u32; 2] = [1, 2];

fn main() -> ExitCode {
    exit_with("global", run)
}

fn run() -> Result<(), String> {
    let RoundsArgs { rounds, tsv } = RoundsArgs::parse("global", 7)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut lines = String::from(concat!(
        "threads\tallocator\twall_ms\twall_ratio\twall_min\twall_max\t",
        "peak_mib\tpeak_ratio\tpeak_min\tpeak_max\n"
    ));
    println!(
        "BTreeMap<String, Vec<u8>> of {} entries built and dropped per thread; {rounds} rounds.",
        melon_alloc_bench::global::ENTRIES
    );
    println!(
        "Ratios: median over the rounds of each round's figure over glibc's (least-greatest)."
    );
    println!();
    println!(
        "| threads | allocator | wall (ms) | wall / glibc | peak RSS (MiB) | peak RSS / glibc |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for threads in THREADS {
        // figures[allocator][round] = (wall ms, peak MiB)
        let mut figures = vec![Vec::new(); ALLOCATORS.len()];
        // Round 0 warms up the page cache of each child's binary, and the system's memory.
        for round in 0..=rounds {
            for turn in 0..ALLOCATORS.len() {
                let slot = (round + turn) % ALLOCATORS.len();
                let allocator = ALLOCATORS[slot];
                let figure = measure(&exe, allocator, threads)?;
                if round > 0 {
                    eprintln!("round {round}, {threads} threads, {allocator}: {figure:?}");
                    figures[slot].push(figure);
                }
            }
        }
        for (slot, allocator) in ALLOCATORS.iter().enumerate() {
            let ratios = |pick: fn(&(f64, f64)) -> f64| {
                let ratios: Vec<f64> = figures[slot]
                    .iter()
                    .zip(&figures[0])
                    .map(|(own, glibc)| pick(own) / pick(glibc))
                    .collect();
                Spread::of(&ratios)
            };
            let wall = Spread::of(&figures[slot].iter().map(|f| f.0).collect::<Vec<_>>());
            let peak = Spread::of(&figures[slot].iter().map(|f| f.1).collect::<Vec<_>>());
            let (wall_ratio, peak_ratio) = (ratios(|f| f.0), ratios(|f| f.1));
            println!(
                "| {threads} | {allocator} | {:.0} | {} | {:.1} | {} |",
                wall.median,
                wall_ratio.show(),
                peak.median,
                peak_ratio.show()
            );
            lines.push_str(&format!(
                "{threads}\t{allocator}\t{:.1}\t{:.3}\t{:.3}\t{:.3}\t{:.1}\t{:.3}\t{:.3}\t{:.3}\n",
                wall.median,
                wall_ratio.median,
                wall_ratio.min,
                wall_ratio.max,
                peak.median,
                peak_ratio.median,
                peak_ratio.min,
                peak_ratio.max
            ));
        }
    }
    if let Some(path) = tsv {
        fs::write(&path, lines).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs one child once: its wall time in milliseconds and its peak resident memory in MiB.
fn measure(exe: &Path, allocator: &str, threads: u32) -> Result<(f64, f64), String> {
    let child = exe.with_file_name(format!("global_{allocator}"));
    let output = Command::new(&child)
        .arg(threads.to_string())
        .output()
        .map_err(|e| format!("cannot run {} (build it first): {e}", child.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed with {}: {}",
            child.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<f64> = text.split_whitespace().filter_map(|field| field.parse().ok()).collect();
    let [wall_ns, peak_kib, _checksum] = fields[..] else {
        return Err(format!("{} printed `{}`", child.display(), text.trim()));
    };
    Ok((wall_ns / 1e6, peak_kib / 1024.0))
}
