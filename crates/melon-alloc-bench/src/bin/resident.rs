//! Resident memory per live block: melon's heap pool against glibc `malloc`, a mimalloc heap,
//! talc and rlsf.
//!
//! For each request size and allocator, a fresh child process (this binary, run again with
//! `--child ALLOCATOR SIZE`) reads its resident set from `/proc/self/statm`, allocates a million
//! blocks, writes a byte into each, and reads it again. The difference, over the number of
//! blocks, is what a live block really costs, headers, rounding and fragmentation included. A
//! process of its own per measurement keeps one allocator's cached memory out of another's
//! figure. The parent prints a markdown table; with `--tsv PATH` it also writes one line per
//! cell to `PATH` (request size, allocator, bytes per block, tab-separated, after a header line),
//! which is what `cargo xtask bench` reads.
//!
//! talc and rlsf allocate from an arena of their own, a region from glibc that is mapped lazily,
//! so that only the pages their blocks touch are counted, as for the others.
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin resident [-- --tsv PATH]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::process::{Command, ExitCode};
use std::ptr::NonNull;

use melon_alloc::HeapPool;
use melon_alloc_bench::{round_up_16, MiHeap, TalcArena, TlsfArena};

/// Live blocks per measurement.
const BLOCKS: usize = 1_000_000;

/// Request sizes measured, in bytes.
const SIZES: [usize; 3] = [16, 64, 200];

/// The allocators measured, by the name the child is given.
const ALLOCATORS: [&str; 5] = ["melon", "glibc", "mimalloc_heap", "talc", "rlsf"];

/// The arena of talc and rlsf: room for [`BLOCKS`] blocks of the largest size with their
/// headers, mapped lazily, so that its size costs nothing.
const ARENA: usize = 1 << 30;

/// melon's target: resident bytes per block at most this many times the request rounded up
/// to 16.
const TARGET_RATIO: f64 = 1.15;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--child") => child(&args[2..]),
        None => parent(None),
        Some("--tsv") if args.len() == 3 => parent(Some(&args[2])),
        Some(_) => Err(format!("usage: {} [--tsv PATH | --child ALLOCATOR SIZE]", args[0])),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("resident: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every measurement in a child process and prints the table; writes the figures to
/// `tsv` too when it is given.
fn parent(tsv: Option<&str>) -> Result<(), String> {
    let mut lines = String::from("request\tallocator\tbytes_per_block\n");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    println!("Resident bytes per live block, {BLOCKS} blocks, one fresh process per cell.");
    println!("Ratio: bytes per block over the request rounded up to 16 (melon's target: at most {TARGET_RATIO}).");
    println!();
    println!("| request (B) | rounded (B) | allocator | bytes per block | ratio |");
    println!("|---:|---:|---|---:|---:|");
    let mut melon_met = true;
    for size in SIZES {
        for allocator in ALLOCATORS {
            let output = Command::new(&exe)
                .args(["--child", allocator, &size.to_string()])
                .output()
                .map_err(|e| format!("cannot run the child process: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "child for {allocator} at {size} B failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let bytes: f64 = text
                .trim()
                .parse()
                .map_err(|e| format!("child for {allocator} printed {text:?}: {e}"))?;
            let ratio = bytes / round_up_16(size) as f64;
            if allocator == "melon" && ratio > TARGET_RATIO {
                melon_met = false;
            }
            println!("| {size} | {} | {allocator} | {bytes:.1} | {ratio:.3} |", round_up_16(size));
            lines.push_str(&format!("{size}\t{allocator}\t{bytes}\n"));
        }
    }
    if let Some(path) = tsv {
        fs::write(path, lines).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    println!();
    println!(
        "melon target (ratio <= {TARGET_RATIO}): {}",
        if melon_met { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Measures one allocator at one size and prints the resident bytes per block.
fn child(args: &[String]) -> Result<(), String> {
    let [allocator, size] = args else {
        return Err("the child takes ALLOCATOR SIZE".into());
    };
    let size: usize = size.parse().map_err(|e| format!("bad size {size:?}: {e}"))?;
    if size == 0 {
        return Err("the size must be at least one byte".into());
    }
    // The pointers are kept so that no allocator can see its blocks as dead. Their vector is
    // allocated and written before the first reading, so its own pages are not counted.
    let mut blocks: Vec<*mut u8> = vec![std::ptr::null_mut(); BLOCKS];
    let page = page_size()?;
    let per_block = match allocator.as_str() {
        "melon" => {
            let pool = HeapPool::new();
            measure(&mut blocks, page, || pool.alloc(size))?
        }
        "glibc" => {
            let layout = Layout::from_size_align(size, 16).map_err(|e| e.to_string())?;
            measure(&mut blocks, page, || {
                // SAFETY: `layout` has a non-zero size.
                NonNull::new(unsafe { System.alloc(layout) })
            })?
        }
        "mimalloc_heap" => {
            let heap = MiHeap::new().ok_or("mimalloc could not make a heap")?;
            measure(&mut blocks, page, || heap.alloc(size))?
        }
        "talc" => {
            let mut arena = TalcArena::new(ARENA).ok_or("no memory for talc's arena")?;
            measure(&mut blocks, page, || arena.alloc(size))?
        }
        "rlsf" => {
            let mut arena = TlsfArena::new(ARENA).ok_or("no memory for rlsf's arena")?;
            measure(&mut blocks, page, || arena.alloc(size))?
        }
        other => return Err(format!("unknown allocator {other:?}")),
    };
    println!("{per_block}");
    // The blocks are left to the end of the process: freeing them would only cost time.
    Ok(())
}

/// Fills `blocks` with fresh blocks from `alloc`, touching each, and returns the growth of the
/// resident set per block.
fn measure(
    blocks: &mut [*mut u8],
    page: usize,
    mut alloc: impl FnMut() -> Option<NonNull<u8>>,
) -> Result<f64, String> {
    let before = resident_pages()?;
    for slot in blocks.iter_mut() {
        let block = alloc().ok_or("out of memory")?;
        // SAFETY: the block was just allocated and holds at least one byte.
        unsafe { block.as_ptr().write(1) };
        *slot = block.as_ptr();
    }
    let after = resident_pages()?;
    std::hint::black_box(&blocks);
    Ok(after.saturating_sub(before) as f64 * page as f64 / blocks.len() as f64)
}

/// The resident set of this process, in pages: the second field of `/proc/self/statm`.
fn resident_pages() -> Result<usize, String> {
    let statm = fs::read_to_string("/proc/self/statm")
        .map_err(|e| format!("cannot read /proc/self/statm: {e}"))?;
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| format!("unexpected /proc/self/statm: {statm:?}"))
}

/// The page size, from the `AT_PAGESZ` entry of the auxiliary vector, which is how the kernel
/// tells a process without a call into libc. Each entry is two machine words: a key and a value.
fn page_size() -> Result<usize, String> {
    /// The auxiliary-vector key of the page size.
    const AT_PAGESZ: usize = 6;
    const WORD: usize = size_of::<usize>();
    let auxv =
        fs::read("/proc/self/auxv").map_err(|e| format!("cannot read /proc/self/auxv: {e}"))?;
    let word = |bytes: &[u8]| usize::from_ne_bytes(bytes.try_into().expect("one machine word"));
    auxv.chunks_exact(2 * WORD)
        .find(|entry| word(&entry[..WORD]) == AT_PAGESZ)
        .map(|entry| word(&entry[WORD..]))
        .ok_or_else(|| "no AT_PAGESZ in /proc/self/auxv".into())
}
