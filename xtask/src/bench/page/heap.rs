//! The heap pools' section of the page: a table per heap workload, the resident memory per
//! live block, and where melon's time goes.

use std::fmt::Write as _;

use super::{measured_section, Target};
use crate::bench::chart::{series_of, Bar, ChartGroup};
use crate::bench::format::{ns, ns_spread, ratio, utc, verdict, yes_no};
use crate::bench::results::{estimate, Estimate, Resident};

/// The request sizes of the resident measurement, in bytes.
const RESIDENT_SIZES: [usize; 3] = [16, 64, 200];

/// The peers of the heap workloads, in table order, with the label of their row.
const HEAP_PEERS: [(&str, &str); 10] = [
    ("melon", "melon"),
    ("melon_busy_root", "melon, busy root"),
    ("melon_limited", "melon, limited root"),
    ("melon_child", "melon_child"),
    ("glibc", "glibc"),
    ("mimalloc_heap", "mimalloc_heap"),
    ("mimalloc", "mimalloc"),
    ("bumpalo", "bumpalo"),
    ("talc", "talc"),
    ("rlsf", "rlsf"),
];

/// The heap workloads: one group of criterion figures each, with its target for melon.
struct HeapWorkload {
    group: &'static str,
    title: &'static str,
    unit: &'static str,
    /// melon's target as a ratio to glibc, if the target is one.
    target: Option<f64>,
    /// What the group adds below its table.
    note: &'static str,
}

const HEAP_WORKLOADS: [HeapWorkload; 7] = [
    HeapWorkload {
        group: "ping_pong",
        title: "`ping_pong`: ns per alloc+free pair",
        unit: "ns per pair",
        target: Some(0.25),
        note: "bumpalo's figure is an allocation and a `reset()`.",
    },
    HeapWorkload {
        group: "fill_drain_1024",
        title: "`fill_drain_1024`: ns per alloc+free pair",
        unit: "ns per pair",
        target: Some(0.25),
        note: "bumpalo's figure is 1024 allocations and one `reset()`, over 1024.",
    },
    HeapWorkload {
        group: "shuffled_drain_1024",
        title: "`shuffled_drain_1024`: ns per alloc+free pair",
        unit: "ns per pair",
        target: Some(0.3),
        note: "",
    },
    HeapWorkload {
        group: "mixed",
        title: "`mixed`: ns per free+alloc pair, 8 B to 64 KiB, 256 live blocks",
        unit: "ns per pair",
        target: None,
        note: "No target is set for this workload: it shows how a pool whose size classes end \
               at 8160 bytes does when about a quarter of the requests are larger (see [Where \
               melon's time goes](#where-melons-time-goes)).",
    },
    HeapWorkload {
        group: "large_ring",
        title: "`large_ring`: ns per free+alloc pair, 16 to 64 KiB, 32 live blocks",
        unit: "ns per pair",
        target: None,
        note: "`melon, limited root` is a root with a limit of 4 MiB, which keeps freed large \
               chunks within its limit. Target: melon, with and without a limit, at most \
               mimalloc's time.",
    },
    HeapWorkload {
        group: "child_lifecycle",
        title: "`child_lifecycle`: ns per pool made, one block allocated and freed, pool dropped",
        unit: "ns per pool",
        target: None,
        note: "melon's pool is a child of a root that holds nothing else (`melon`) or one live \
               block (`melon, busy root`); mimalloc's is a heap (`mi_heap_new`, \
               `mi_heap_destroy`), bumpalo's a `Bump`; glibc has no pools and only allocates and \
               frees. Target: under 1 µs for melon on an idle root.",
    },
    HeapWorkload {
        group: "drop_full_pool",
        title: "`drop_full_pool`: ns per block, 1,000,000 live blocks",
        unit: "ns per block",
        target: None,
        note: "",
    },
];

pub(super) fn heap_results(
    page: &mut String,
    targets: &mut Vec<Target>,
    chart: &mut Vec<ChartGroup>,
) {
    page.push_str("## Heap pools\n\n");
    let newest = HEAP_WORKLOADS
        .iter()
        .flat_map(|w| HEAP_PEERS.iter().filter_map(|(id, _)| estimate(w.group, id)))
        .map(|e| e.when)
        .max();
    for workload in &HEAP_WORKLOADS {
        let rows: Vec<(&str, &str, Estimate)> = HEAP_PEERS
            .iter()
            .filter_map(|&(id, label)| estimate(workload.group, id).map(|e| (id, label, e)))
            .collect();
        let _ = writeln!(page, "### {}\n", workload.title);
        if rows.is_empty() {
            page.push_str("Not measured in this run.\n\n");
            continue;
        }
        let oldest = rows.iter().map(|(_, _, e)| e.when).min().unwrap_or(0);
        if newest.is_some_and(|newest| newest > oldest + 3600) {
            let _ = writeln!(page, "Measured {}, before the rest of this run.\n", utc(oldest));
        }
        let glibc = rows.iter().find(|(id, _, _)| *id == "glibc").map(|(_, _, e)| e.ns);
        let drop = workload.group == "drop_full_pool";
        if drop {
            page.push_str(
                "| peer | total | ns per block | ratio to glibc |\n|---|---:|---:|---:|\n",
            );
        } else {
            let _ =
                writeln!(page, "| peer | {} | ratio to glibc |\n|---|---:|---:|", workload.unit);
        }
        let mut bars = Vec::new();
        for (id, label, e) in &rows {
            let r = glibc.map(|glibc| e.ns / glibc);
            let shown = match (r, *id) {
                (_, "glibc") => "1".into(),
                (Some(r), "melon") => format!("**{}**", ratio(r)),
                (Some(r), _) => ratio(r),
                (None, _) => "n/a".into(),
            };
            let label = match (*id, workload.group) {
                ("bumpalo", "ping_pong") => "bumpalo (alloc + reset)",
                ("bumpalo", "fill_drain_1024") => "bumpalo (1024 allocs + reset)",
                ("glibc", "drop_full_pool") => "glibc (1M frees)",
                ("mimalloc_heap", "drop_full_pool") => "mimalloc_heap (`mi_heap_destroy`)",
                ("talc" | "rlsf", "drop_full_pool") => {
                    if *id == "talc" {
                        "talc (arena dropped)"
                    } else {
                        "rlsf (arena dropped)"
                    }
                }
                _ => label,
            };
            if drop {
                let total_ms = e.ns * e.elements / 1e6;
                let figure = ns_spread(e.ns, e.spread);
                let _ = writeln!(page, "| {label} | {total_ms:.3} ms | {figure} | {shown} |");
            } else {
                let _ = writeln!(page, "| {label} | {} | {shown} |", ns_spread(e.ns, e.spread));
            }
            if let (Some(r), true) = (r, *id != "glibc") {
                let target = match (*id, workload.target, drop) {
                    ("melon", Some(target), _) => Some(target),
                    ("melon", None, true) => glibc.map(|glibc| 1.0 / glibc),
                    _ => None,
                };
                bars.push(Bar { series: series_of(id), value: r, target });
            }
        }
        page.push('\n');
        let melon = rows.iter().find(|(id, _, _)| *id == "melon").map(|(_, _, e)| e.ns);
        let melon_ratio = melon.zip(glibc).map(|(melon, glibc)| melon / glibc);
        match (workload.group, workload.target) {
            (_, Some(target)) => {
                let (result, met) = match melon_ratio {
                    Some(r) => (ratio(r), verdict(r <= target).to_string()),
                    None => ("n/a".into(), "not measured".into()),
                };
                let _ =
                    writeln!(page, "Target: melon at most {target} of glibc. {met} ({result}).\n");
                let name = match workload.group {
                    "ping_pong" => "ping-pong",
                    "fill_drain_1024" => "fill/drain",
                    _ => "shuffled drain",
                };
                targets.push(Target {
                    target: format!("{name} ≤ {target} × glibc"),
                    result: result.clone(),
                    met: yes_no(melon_ratio.map(|r| r <= target)),
                });
            }
            ("large_ring", None) => {
                let mimalloc = rows.iter().find(|(id, _, _)| *id == "mimalloc");
                for (id, name) in [("melon", "melon"), ("melon_limited", "limited melon")] {
                    let own = rows.iter().find(|(row, _, _)| *row == id);
                    let r = own.zip(mimalloc).map(|((_, _, own), (_, _, mi))| own.ns / mi.ns);
                    targets.push(Target {
                        target: format!("large ring: {name} ≤ mimalloc"),
                        result: r.map_or("n/a".into(), |r| format!("{} × mimalloc", ratio(r))),
                        met: yes_no(r.map(|r| r <= 1.0)),
                    });
                }
            }
            ("drop_full_pool", None) => {
                let met = melon.map(|melon| melon < 1.0);
                let result = melon.map_or("n/a".into(), |melon| format!("{} ns", ns(melon)));
                let _ = writeln!(
                    page,
                    "Target: dropping melon's pool costs under 1 ns per block. {} ({result}).\n",
                    met.map_or("Not measured", verdict)
                );
                let child = rows.iter().find(|(id, _, _)| *id == "melon_child");
                if let (Some(melon), Some((_, _, child))) = (melon, child) {
                    let _ = writeln!(
                        page,
                        "`melon_child` shows the pool's own share: a child pool's chunks go back \
                         to a root that keeps them, so nothing returns to the system, and its \
                         drop costs {} ns per block, {:.1} times less than the root's.",
                        ns(child.ns),
                        melon / child.ns
                    );
                }
                page.push('\n');
                targets.push(Target {
                    target: "drop of 1M blocks < 1 ns per block".into(),
                    result,
                    met: yes_no(met),
                });
            }
            _ => {}
        }
        if !workload.note.is_empty() {
            let _ = writeln!(page, "{}\n", workload.note);
        }
        let label = match workload.group {
            "fill_drain_1024" => "fill/drain",
            "shuffled_drain_1024" => "shuffled drain",
            "drop_full_pool" => "drop 1M blocks",
            "ping_pong" => "ping-pong",
            "large_ring" => "large ring",
            other => other,
        };
        chart.push(ChartGroup { label: label.to_string(), bars });
    }
}

pub(super) fn resident_results(
    page: &mut String,
    targets: &mut Vec<Target>,
    chart: &mut Vec<ChartGroup>,
    resident: &Resident,
) {
    let measured = !resident.bytes.is_empty();
    if !measured_section(page, "Resident memory per live block", measured, resident.when) {
        return;
    }
    page.push_str(
        "1,000,000 live blocks, one byte written in each, resident set read from \
         `/proc/self/statm` before and after, in a fresh process per cell. The ratio is to the \
         request rounded up to 16 bytes, the least a 16-byte-aligned allocator can spend.\n\n\
         | request (B) | rounded (B) | allocator | bytes per block | ratio to rounded | ratio to glibc |\n\
         |---:|---:|---|---:|---:|---:|\n",
    );
    let round = |size: usize| (size + 15) & !15;
    let mut melon_ratios = Vec::new();
    for size in RESIDENT_SIZES {
        let glibc = resident.get(size, "glibc");
        let mut bars = Vec::new();
        for allocator in resident.allocators() {
            let Some(bytes) = resident.get(size, &allocator) else { continue };
            let r = bytes / round(size) as f64;
            let to_glibc = glibc.map(|glibc| bytes / glibc);
            let shown = if allocator == "melon" {
                melon_ratios.push(r);
                format!("**{r:.3}**")
            } else {
                format!("{r:.3}")
            };
            let _ = writeln!(
                page,
                "| {size} | {} | {allocator} | {bytes:.1} | {shown} | {} |",
                round(size),
                match to_glibc {
                    _ if allocator == "glibc" => "1".into(),
                    Some(r) => format!("{r:.3}"),
                    None => "n/a".into(),
                }
            );
            if let (Some(value), true) = (to_glibc, allocator != "glibc") {
                let target = (allocator == "melon")
                    .then(|| glibc.map(|glibc| 1.15 * round(size) as f64 / glibc))
                    .flatten();
                bars.push(Bar { series: series_of(&allocator), value, target });
            }
        }
        chart.push(ChartGroup { label: format!("resident {size} B"), bars });
    }
    let met = (melon_ratios.len() == RESIDENT_SIZES.len())
        .then(|| melon_ratios.iter().all(|&r| r <= 1.15));
    let result: Vec<String> = melon_ratios.iter().map(|r| format!("{r:.3}")).collect();
    let _ = writeln!(
        page,
        "\nTarget: melon at most 1.15 times the rounded request. {} ({}).\n",
        met.map_or("Not measured at every size", verdict),
        result.join(" / ")
    );
    targets.push(Target {
        target: "resident ≤ 1.15 × request rounded to 16 (16 / 64 / 200 B)".into(),
        result: result.join(" / "),
        met: yes_no(met),
    });
}

/// What the heap pools' figures come from, kept from the analysis of earlier runs where it still
/// holds.
pub(super) const HEAP_NOTES: &str = "### Where melon's time goes

- **Fill and drain.** A chunk other than the head of its class that empties is kept on the
  class's spare list (up to four per class) with its free lists intact, so a pool that fills and
  drains the same few chunks neither goes back to its source nor carves their blocks again.
  Before the spare lists, a profile (`perf record`) put about a quarter of the fill/drain time in
  re-carving the four chunks that a 1024-block fill spans.
- **Mixed sizes.** Heap pools serve size classes up to 8160 bytes (above 2 KiB, five classes that
  split a 16 KiB chunk into 6, 5, 4, 3 and 2 blocks); a larger request gets a 16 KiB-aligned chunk
  of its own from the pool's source, which for a root pool is an aligned `malloc` from glibc. A
  root pool keeps freed large chunks of 8 to 256 KiB, up to 2 MiB, in a list per length rounded
  to an eighth of its power of two, and hands them out again, so most large pairs of `mixed`
  cost a list push and pop. What remains in a profile is glibc's aligned allocation when no
  kept chunk has the length (about a fifth of the time), and chunks of the large classes
  filling and emptying, since they hold only two to six blocks.
- **Dropping a root pool.** The pool gives its slabs back to glibc in O(slabs), without visiting
  chunks or blocks, so what remains is glibc and the kernel unmapping 64 MB: `strace` counts one
  `mmap`, one `madvise` and one `munmap` per slab, and a pool of a million blocks has about 20.
  That is why the figure depends on glibc's `mmap` threshold (with
  `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072`, an earlier run took 1.17 ns per block
  against 0.73 with the defaults), and why `melon_child`, whose memory stays in the process, is
  cheaper. bumpalo, talc and rlsf also return their memory in one piece or a few, but in ordinary
  4 KiB pages; melon asks for huge pages for its slabs (`madvise`), which leaves the kernel far
  fewer pages to unmap, and is the likely reason its drop costs less.
- **talc and rlsf** keep no per-size cache: every allocation splits a free block and every free
  merges it back with its neighbours, so even a ping-pong pair goes through their bins; and each
  block carries a header and is rounded more coarsely than 16 bytes, which is what their resident
  figures show.

";
