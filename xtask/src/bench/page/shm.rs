//! The shared-memory pool's section of the page: one operation by fill level and pool size
//! (`shm_alloc_64`), many processes on one pool (`hammer`), and where the shared pool's time
//! goes.

use std::fmt::Write as _;

use super::Target;
use crate::bench::chart::{series_of, Bar, ChartGroup};
use crate::bench::format::{list, ns, ratio, utc, verdict};
use crate::bench::results::{estimate, Facts, Hammer};

/// Melon's shared pool on the hammer workload, million operations per second in total at 1, 2
/// and 4 processes (quoted from `MELON_ALLOC.md`, not measured here).
const MELON_HAMMER: [(usize, f64); 3] = [(1, 5.2), (2, 3.0), (4, 1.4)];

/// glibc in the same measurement as [`MELON_HAMMER`] (quoted).
const GLIBC_HAMMER_QUOTED: [(usize, f64); 3] = [(1, 31.0), (2, 55.0), (4, 45.0)];

/// The shared-pool cases of `shm_alloc_64`, as criterion ids with their row labels.
const SHM_CASES: [(&str, &str); 5] = [
    ("shm_64MiB/fill_0", "shm, 64 MiB, 0 % full"),
    ("shm_64MiB/fill_50", "shm, 64 MiB, 50 % full"),
    ("shm_64MiB/fill_95", "shm, 64 MiB, 95 % full"),
    ("shm_1GiB/fill_0", "shm, 1 GiB, 0 % full"),
    ("shm_1GiB/fill_95", "shm, 1 GiB, 95 % full"),
];

pub(super) fn shm_results(
    page: &mut String,
    targets: &mut Vec<Target>,
    chart: &mut Vec<ChartGroup>,
) {
    page.push_str("### `shm_alloc_64`: ns per alloc+free pair\n\n");
    let wall = |id: &str| estimate("shm_alloc_64", id);
    let cpu = |id: &str| estimate("shm_alloc_64_cpu", id);
    let (Some(glibc_wall), glibc_cpu) = (wall("glibc"), cpu("glibc")) else {
        page.push_str("Not measured in this run.\n\n");
        return;
    };
    let _ = writeln!(page, "Measured {}. Criterion's means.\n", utc(glibc_wall.when));
    page.push_str(
        "| case | wall ns per pair | wall ratio to glibc | CPU ns per pair | CPU ratio to glibc |\n\
         |---|---:|---:|---:|---:|\n",
    );
    let mut wall_ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut bars = Vec::new();
    let rows = SHM_CASES
        .iter()
        .copied()
        .chain([("glibc", "glibc"), ("heap", "heap (`HeapPool`, no lock)")]);
    for (id, label) in rows {
        let (Some(w), c) = (wall(id), cpu(id)) else { continue };
        let wr = w.ns / glibc_wall.ns;
        let cr = c.zip(glibc_cpu).map(|(c, g)| c.ns / g.ns);
        let shared = id.starts_with("shm_");
        if shared {
            wall_ratios.push(wr);
            cpu_ratios.extend(cr);
        }
        let bold = |text: String| if shared { format!("**{text}**") } else { text };
        let _ = writeln!(
            page,
            "| {label} | {} | {} | {} | {} |",
            ns(w.ns),
            if id == "glibc" { "1".into() } else { bold(ratio(wr)) },
            c.map_or("n/a".into(), |c| ns(c.ns)),
            match (id, cr) {
                ("glibc", _) => "1".into(),
                (_, Some(cr)) => bold(ratio(cr)),
                (_, None) => "n/a".into(),
            }
        );
        if id != "glibc" {
            let series = if shared { "shm" } else { "melon" };
            bars.push(Bar { series, value: wr, target: shared.then_some(5.0) });
        }
    }
    chart.push(ChartGroup { label: "shm 64 B pair".into(), bars });
    let range = |ratios: &[f64]| {
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        format!("{} to {}", ratio(low), ratio(high))
    };
    let wall_met = !wall_ratios.is_empty() && wall_ratios.iter().all(|&r| r <= 5.0);
    let cpu_met = !cpu_ratios.is_empty() && cpu_ratios.iter().all(|&r| r <= 5.0);
    let _ = writeln!(
        page,
        "\nTarget: the shared pool within 5 times glibc at every fill level and pool size. By the \
         wall clock {} ({}); by CPU time {} ({}).\n",
        verdict(wall_met),
        range(&wall_ratios),
        verdict(cpu_met),
        if cpu_ratios.is_empty() { "n/a".into() } else { range(&cpu_ratios) }
    );
    targets.push(Target {
        target: "shm 64 B alloc+free at 0 / 50 / 95 % fill (64 MiB and 1 GiB) ≤ 5 × glibc".into(),
        result: format!("{} wall, {} CPU", range(&wall_ratios), range(&cpu_ratios)),
        met: if wall_met && cpu_met {
            "yes".into()
        } else if wall_met || cpu_met {
            format!("by {} time only", if wall_met { "wall" } else { "CPU" })
        } else {
            "**no**".into()
        },
    });
}

/// The time to take back a dead process's chunks (`shm_reclaim`).
pub(super) fn reclaim_results(page: &mut String) {
    page.push_str("### `shm_reclaim`: taking back a dead process's chunks\n\n");
    let Some(reclaim) = estimate("shm_reclaim", "dead_process_1MiB_in_64_chunks") else {
        page.push_str("Not measured in this run.\n\n");
        return;
    };
    let _ = writeln!(
        page,
        "Measured {}. A process took 1 MiB through a child pool, in 64 chunks of 16 KiB, and \
         died; `ShmPool::reclaim_dead` in the 64 MiB pool gave them back in {} µs (criterion's \
         mean, wall clock): a test of the byte lock of each claimed slot, then one logged \
         operation per chunk.\n",
        utc(reclaim.when),
        ns(reclaim.ns / 1000.0)
    );
}

pub(super) fn hammer_results(
    page: &mut String,
    targets: &mut Vec<Target>,
    chart: &mut Vec<ChartGroup>,
    hammer: &Hammer,
    facts: &Facts,
) {
    page.push_str("### `hammer`: million operations per second, all processes together\n\n");
    let counts = hammer.processes();
    if counts.is_empty() {
        page.push_str("Not measured in this run.\n\n");
        return;
    }
    let runs = hammer.run_count();
    if let Some(when) = hammer.when {
        let _ = writeln!(
            page,
            "Measured {}. Median of {runs} run{} per cell.\n",
            utc(when),
            if runs == 1 { "" } else { "s" }
        );
    }
    let variants = ["shm", "shm-child", "glibc", "heap"];
    let quoted = |table: &[(usize, f64)], count: usize| {
        table.iter().find(|&&(n, _)| n == count).map(|&(_, figure)| figure)
    };
    page.push_str(
        "| processes | shm | shm-child | glibc | heap | shm / Melon | shm-child / glibc |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut shm_results = Vec::new();
    let mut child_results = Vec::new();
    for &count in &counts {
        let cells: Vec<String> = variants
            .iter()
            .map(|v| hammer.mops(v, count).map_or("n/a".into(), |m| format!("{m:.2}")))
            .collect();
        let over_melon =
            hammer.mops("shm", count).zip(quoted(&MELON_HAMMER, count)).map(|(a, b)| a / b);
        let over_glibc =
            hammer.mops("shm-child", count).zip(hammer.mops("glibc", count)).map(|(a, b)| a / b);
        let targeted = count <= 4;
        let show = |r: Option<f64>| {
            r.map_or(String::new(), |r| {
                if targeted {
                    format!("**{r:.2}**")
                } else {
                    format!("{r:.2}")
                }
            })
        };
        let _ = writeln!(
            page,
            "| {count} | {} | {} | {} |",
            cells.join(" | "),
            show(over_melon),
            show(over_glibc)
        );
        if targeted {
            if let Some(r) = over_melon {
                shm_results.push((count, hammer.mops("shm", count).unwrap_or(0.0), r));
            }
            if let Some(r) = over_glibc {
                child_results.push((count, r));
            }
        }
        if let Some(glibc) = hammer.mops("glibc", count) {
            let bars = ["shm", "shm-child", "heap"]
                .iter()
                .filter_map(|&v| {
                    let mops = hammer.mops(v, count)?;
                    let target = match v {
                        "shm" => quoted(&MELON_HAMMER, count).map(|melon| glibc / (4.0 * melon)),
                        "shm-child" if targeted => Some(2.0),
                        _ => None,
                    };
                    let series = if v == "heap" { "melon" } else { series_of(v) };
                    Some(Bar { series, value: glibc / mops, target })
                })
                .collect();
            chart.push(ChartGroup { label: format!("hammer {count} proc."), bars });
        }
    }
    if runs > 1 {
        let _ = writeln!(
            page,
            "\nLowest and highest of the {runs} runs:\n\n\
             | processes | shm | shm-child | glibc | heap |\n|---:|---:|---:|---:|---:|"
        );
        for &count in &counts {
            let cells: Vec<String> = variants
                .iter()
                .map(|v| {
                    hammer
                        .spread(v, count)
                        .map_or("n/a".into(), |(low, high)| format!("{low:.2} to {high:.2}"))
                })
                .collect();
            let _ = writeln!(page, "| {count} | {} |", cells.join(" | "));
        }
    }
    page.push_str(
        "\nThe workers' CPU time per operation, user and system, in ns (median): the cost of an \
         operation without the time spent waiting for a core or asleep on the lock.\n\n\
         | processes | shm | shm-child | glibc | heap |\n|---:|---:|---:|---:|---:|\n",
    );
    for &count in &counts {
        let cells: Vec<String> = variants
            .iter()
            .map(|v| hammer.cpu(v, count).map_or("n/a".into(), |c| format!("{c:.0}")))
            .collect();
        let _ = writeln!(page, "| {count} | {} |", cells.join(" | "));
    }

    // The CPU time per operation of the locked variant is the figure that shows whether the
    // machine was busy: alone, a process pays only for the pool; with company, the waiter's spin,
    // the futex sleeps and wake-ups, and the pool's cache lines moving between cores are paid too.
    let (alone, crowded) = (hammer.cpu("shm", 1), hammer.cpu("shm", 2));
    if let (Some(alone), Some(crowded)) = (alone, crowded) {
        if crowded > 2.0 * alone {
            let _ = writeln!(
                page,
                "\nIn this run `shm` used {crowded:.0} ns of CPU per operation at 2 processes, \
                 {:.1} times its {alone:.0} ns alone: the waiting process's spin, futex sleeps \
                 and wake-ups, and the pool's cache lines moving between cores, which grow when \
                 other work holds the cores and preempts the holder of the lock (the load \
                 average went from {} to {} over the run). Figures at 2 processes and more depend on how busy the machine was as \
                 much as on the pool; the spread of the three runs shows by how much.",
                crowded / alone,
                facts.get("load_start"),
                facts.get("load_end")
            );
        }
    }

    let melon: Vec<String> = MELON_HAMMER.iter().map(|(_, f)| format!("{f:.1}")).collect();
    let glibc: Vec<String> = GLIBC_HAMMER_QUOTED.iter().map(|(_, f)| format!("{f:.0}")).collect();
    let _ = writeln!(
        page,
        "\nThe figures to compare with, quoted from `MELON_ALLOC.md` and not measured here: \
         Melon's shared pool with a process-shared pthread mutex does {} million operations a \
         second in total at 1, 2 and 4 processes; glibc, in the same measurement, {}.\n",
        list(&melon),
        list(&glibc)
    );

    let shm_text: Vec<String> = shm_results
        .iter()
        .map(|&(count, mops, r)| format!("{mops:.2} at {count} ({r:.2} × Melon)"))
        .collect();
    let shm_met: Vec<(usize, bool)> =
        shm_results.iter().map(|&(count, _, r)| (count, r >= 4.0)).collect();
    let child_text: Vec<String> =
        child_results.iter().map(|&(count, r)| format!("{r:.2} at {count}")).collect();
    let child_met: Vec<(usize, bool)> =
        child_results.iter().map(|&(count, r)| (count, r >= 0.5)).collect();
    // The verdict over several process counts, in the words of a table cell (`yes`, `no`) or
    // of a sentence (`met`, `not met`).
    let summary = |met: &[(usize, bool)], (yes, no): (&str, &str)| -> String {
        if met.is_empty() {
            return "not measured".into();
        }
        if met.iter().all(|&(_, ok)| ok) {
            return yes.into();
        }
        if met.iter().all(|&(_, ok)| !ok) {
            return format!("**{no}**");
        }
        let at = |ok: bool| {
            met.iter().filter(|m| m.1 == ok).map(|m| m.0.to_string()).collect::<Vec<_>>()
        };
        let (met, missed) = (at(true), at(false));
        let unit = if met == ["1"] { "process" } else { "processes" };
        format!("{yes} at {} {unit}, **{no} at {}**", list(&met), list(&missed))
    };
    let own_glibc: Vec<(usize, f64)> = [1, 2, 4]
        .into_iter()
        .filter_map(|count| {
            Some((count, hammer.mops("shm", count)? / hammer.mops("glibc", count)?))
        })
        .collect();
    let _ = writeln!(
        page,
        "Targets:\n\n\
         - `shm` at least 4 times Melon (at least 20.8, 12 and 5.6 million a second at 1, 2 and \
         4 processes): {}: {}.\n\
         - `shm-child` at least half of glibc in the same run, at 1, 2 and 4 processes: {}: {}.\n\
         - Melon's figures come from another machine and day, on which glibc itself did 31 \
         million a second alone. Set against each run's own glibc, `shm` does {} times glibc's \
         figure here at {} processes, and Melon did 0.17, 0.055 and 0.031 times its glibc's at 1, \
         2 and 4 processes. That comparison is an inference across two measurements, not the target as \
         set.\n",
        summary(&shm_met, ("met", "not met")),
        list(&shm_text),
        summary(&child_met, ("met", "not met")),
        list(&child_text),
        list(&own_glibc.iter().map(|(_, r)| format!("{r:.2}")).collect::<Vec<_>>()),
        list(&own_glibc.iter().map(|(count, _)| count.to_string()).collect::<Vec<_>>())
    );
    targets.push(Target {
        target: "shm hammer ≥ 4 × Melon's quoted 5.2 / 3.0 / 1.4 M ops/s at 1 / 2 / 4 processes"
            .into(),
        result: shm_results
            .iter()
            .map(|&(_, mops, _)| format!("{mops:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
            + " M ops/s",
        met: summary(&shm_met, ("yes", "no")),
    });
    targets.push(Target {
        target: "shm child pools ≥ 0.5 × glibc's hammer figure, same run, 1 / 2 / 4 processes"
            .into(),
        result: child_results
            .iter()
            .map(|&(_, r)| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" / "),
        met: summary(&child_met, ("yes", "no")),
    });
}

/// The shared pool's section: what it measures and how.
pub(super) const SHM_INTRO: &str = "## Shared-memory pool

How much one operation on a `ShmPool` costs however big or full the pool is, and how many
operations a second several processes get out of one pool, next to glibc and to Melon's figures.

**`shm_alloc_64`.** One 64-byte allocation paired with its free, so that the fill level stays
where the setup put it; time per pair. The shared pool is timed in a 64 MiB pool at 0 %, 50 % and
95 % fill and in a 1 GiB pool at 0 % and 95 % fill: before the timing, that share of the pool's
free bytes is taken by 64-byte blocks, each written to. Each pool is checked after its case (the
pairs must leave it consistent and exactly as full) and dropped before the next one is made. The
peers do the same pair in the same group: `glibc` (`std::alloc::System`) and `heap` (a root
`HeapPool`). Every case runs twice: in `shm_alloc_64`, timed by the wall clock, and in
`shm_alloc_64_cpu`, timed by the benchmarking thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`),
which stops while another process holds the core. The two groups time separate runs of the same
loop, so each carries its own noise; neither is consistently the lower.

**`hammer`.** N processes (1, 2, 4, and 16 to show behaviour under heavy contention), forked from
one parent after the pool is made. Each draws from its own seeded xorshift generator: if it holds
fewer than 256 blocks and a coin flip says so, it allocates 16 to 4096 bytes (uniformly),
otherwise it frees one of its live blocks chosen at random. Every allocation and every free is one
operation; each process does 2,000,000. A process stamps every block with a tag of its own and
checks the tag before the free, so that memory handed to two processes fails the run. At the end it
frees what it still holds (timed, not counted) and reports success by its exit status; the parent
checks every status. The parent times from before the first fork to after the last `wait4`, and
reports total million operations per second. Variants, each in a fresh setup (a new 256 MiB pool
for the shared ones):

| variant | what each process does |
|---|---|
| `shm` | every operation on the one shared `ShmPool`, each taking the pool's lock |
| `shm-child` | makes its own child pool with `shm.child()` after the fork and works through it; the shared lock is taken only when the child needs or returns a chunk |
| `glibc` | `std::alloc::System`, glibc's `malloc` and `free`, in its private heap |
| `heap` | its own melon `HeapPool`, in its private heap |

After each shared run the hammer calls `check()` and verifies that the pool's free bytes are back
to their figure before the fork, with no live block and no chunk still lent; a run that fails
those checks fails the whole task. Each cell is run three times (once with `--quick`, which also
does a tenth of the operations and leaves 16 processes out), the runs going round all cells in
turn so that a stretch of load spreads over every variant; the tables show the median. The
machine has two cores, so 4 processes oversubscribe it two to one and 16 eight to one.

";

/// Why the shared pool's figures are what they are, kept from the analysis of earlier runs.
pub(super) const SHM_NOTES: &str = "### Where the shared pool's time goes

- **One operation.** `valgrind --tool=callgrind` counts about 200 instructions per operation
  of the hammer's loop inside the shared pool, at one process, about as many as glibc's `malloc`
  and `free` take on the same loop: the two trips through the lock (a compare-and-swap and a
  swap, with the checks for an operation left half done and for chunks waiting to be returned
  behind one test), the size class, the slab's free list, two logged writes to the undo log
  (the slab's free-list head and live count side by side in one word, and the in-use bit), the
  free-byte counter (unlogged: it is recounted from the pages after an undo), and on a free the
  validation that refuses a double or foreign free (the page descriptor and the in-use bitmap).
  No part of it depends on the size or fill of the pool, which is what the flat `shm_alloc_64`
  figures show. Melon's C pool takes 1.5 to 3.3 µs for one 64-byte allocation (quoted from
  `MELON_ALLOC.md`: allocating until full in 8 MiB and 64 MiB pools), and its cost grows with
  the pool.
- **Slabs of at least 16 blocks.** A slab that fills leaves its class's list and comes back on
  its next free, four logged writes each way. Slabs hold at least 16 blocks where 16 pages
  allow, so in this workload, where half the requests are 2 to 4 KiB, that happens on a small
  fraction of operations.
- **Contention.** A waiter spins on the lock word, with pauses that double up to 64 `pause`
  instructions, for some microseconds before it sleeps on the futex: a critical section lasts
  well under 100 ns, far less than a sleep and a wake-up, and looking less often lets the holder
  run several operations in a row while its cache lines are warm. Without the backoff, two
  processes did 8 to 10 million operations a second in all, against 16 to 18 with it. When the processes outnumber the cores, a holder that loses its core still keeps the
  others waiting, which is why the CPU time per operation rises with the process count.
- **`shm-child`.** Heap pools, and so child pools, have size classes up to 8160 bytes, so every
  request of this workload comes from the child's own chunks, and the shared lock is taken only
  when a child needs a 16 KiB chunk or gives one back. That is why `shm-child` does more
  operations a second than glibc: its blocks carry no header and need no lock.

";
