//! The global-allocator section of the page: a program's workload with glibc, mimalloc and
//! melon's `LockedHeapPool` each as the `#[global_allocator]`, and where a single lock stands.

use std::fmt::Write as _;

use super::{measured_section, Target};
use crate::bench::format::{verdict, yes_no};
use crate::bench::results::Global;

pub(super) fn global_results(page: &mut String, targets: &mut Vec<Target>, global: &Global) {
    let measured = !global.rows.is_empty();
    if !measured_section(page, "As the global allocator", measured, global.when) {
        return;
    }
    page.push_str(
        "A program's workload with each allocator as its `#[global_allocator]`: a \
         `BTreeMap<String, Vec<u8>>` of 400,000 entries (keys of 13 bytes, values of 0 to 300) \
         built, read and dropped, on 1 thread, and on 2 threads at once, each with a map of its \
         own. `melon` is `LockedHeapPool::new(OsSource::new(), None)`, `mimalloc` is \
         `mimalloc::MiMalloc`, `glibc` is `std::alloc::System`. Each allocator is a binary of its \
         own (`crates/melon-alloc-bench/src/bin/global_*.rs`), run once per round in a fresh \
         process that times the workload and reads its peak resident memory (`VmHWM`); the \
         rounds run the three in turn after an untimed round of warm-up, the first to run moving \
         one place a round, and each ratio is the median, over the rounds, of the \
         round's figure over glibc's in the same round, with the least and greatest in \
         brackets. Produced by:\n\n\
         ```sh\n\
         cargo xtask bench --only global\n\
         ```\n\n\
         | threads | allocator | wall (ms) | wall / glibc | peak RSS (MiB) | peak RSS / glibc |\n\
         |---:|---|---:|---:|---:|---:|\n",
    );
    for row in &global.rows {
        let spread = |[median, min, max]: [f64; 3]| format!("{median:.2} ({min:.2}–{max:.2})");
        let (wall, peak) = (spread(row.wall_ratio), spread(row.peak_ratio));
        let (wall, peak) = if row.allocator == "melon" {
            (format!("**{wall}**"), format!("**{peak}**"))
        } else {
            (wall, peak)
        };
        let _ = writeln!(
            page,
            "| {} | {} | {:.0} | {wall} | {:.1} | {peak} |",
            row.threads, row.allocator, row.wall_ms, row.peak_mib
        );
    }
    let one = global.get(1, "melon").map(|row| row.wall_ratio[0]);
    let met = one.map(|ratio| ratio <= 1.0);
    let _ = writeln!(
        page,
        "\nTarget: melon no slower than glibc on 1 thread. {} ({}).\n",
        met.map_or("Not measured", verdict),
        one.map_or("n/a".into(), |ratio| format!("{ratio:.2}"))
    );
    targets.push(Target {
        target: "global allocator, B-tree map on 1 thread: wall ≤ glibc".into(),
        result: one.map_or("n/a".into(), |ratio| format!("{ratio:.2}")),
        met: yes_no(met),
    });
    page.push_str(GLOBAL_NOTES);
}

/// Where one lock stands with two threads, and what it would take to do better.
const GLOBAL_NOTES: &str = "On one thread the pool's fast paths (a free-list pop and push per \
block, no header, a lock taken and released without contention) beat glibc's `malloc`, and \
`OsSource` keeps the system out of the way: it maps 2 MiB regions of 16 KiB chunks, so a \
program of a hundred megabytes makes about sixty mappings, and a freed chunk goes on a list \
rather than back to the system. Peak resident memory is about 5 % above glibc's, as mimalloc's \
is: what size classes cost (a request is rounded up to its class's size), against glibc's \
8-byte header per block.

On two threads, one spin lock serializes every allocation and free of both threads: at best the \
two run no faster than one thread doing both maps, and the cache line of the lock and of the \
pool's lists moves between the cores on every call. Worse, a spinning waiter burns its core \
while the holder may be descheduled (this machine's two cores are shared with other work), which \
is what stretches the spread. glibc and mimalloc give each thread an arena or heap of its own and \
take no lock on the common path. Doing as well would take the same in melon: a small pool per \
thread (a thread-local `HeapPool`-like engine taking chunks from the shared `OsSource` in \
batches), with frees from another thread pushed onto the owning chunk's list atomically, as \
mimalloc's delayed frees are, and the shared lock taken only to move chunks between a thread's \
pool and the source. Until then, a `LockedHeapPool` is a fit global allocator for programs that \
allocate mostly from one thread at a time.

";
