//! The page, `docs/benchmarks.md`: its introduction, the machine, the targets at a glance, then
//! the heap pools' and the shared pool's sections, written from the results on disk.
//!
//! What a run cannot measure again is fixed text: the notes on where the time goes, here and in
//! `heap.rs` and `shm.rs`, and the shared pool's comparisons with its earlier builds, which are
//! kept word for word in `shm_history.md` and edited there (the page is checked to hold them as
//! that file has them).

mod firmware;
mod global;
mod heap;
mod per_request;
mod shm;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use super::chart::svg;
use super::format::utc;
use super::results::{
    locked_versions, Facts, Firmware, Global, Hammer, Interleaved, PerRequest, Resident,
};
use super::{Part, HEAP_TARGETS, SHM_TARGETS};
use crate::root;
use firmware::firmware_results;
use global::global_results;
use heap::{heap_results, resident_results, HEAP_NOTES};
use per_request::per_request_results;
use shm::{
    grow_results, hammer_results, objects_results, reclaim_results, shm_results, SHM_HISTORY,
    SHM_INTRO, SHM_NOTES,
};

/// The heading from which the existing page is copied through unchanged.
const KEPT_SECTION: &str = "## C API";

/// Writes `docs/benchmarks.md` and `docs/benchmarks.svg` from the results on disk.
pub(super) fn report(results: &Path) -> Result<(), String> {
    let facts = Facts::read(results);
    let heap_targets = Interleaved::read(results, HEAP_TARGETS);
    let shm_targets = Interleaved::read(results, SHM_TARGETS);
    let hammer = Hammer::read(results);
    let resident = Resident::read(results);
    let global = Global::read(results);
    let per_request = PerRequest::read(results);
    let per_request_on_threads = PerRequest::read_on_threads(results);
    let firmware = Firmware::read(results);
    let docs = root().join("docs");
    let page_path = docs.join("benchmarks.md");
    let kept = fs::read_to_string(&page_path)
        .ok()
        .and_then(|page| {
            let start = if page.starts_with(KEPT_SECTION) {
                0
            } else {
                page.find(&format!("\n{KEPT_SECTION}"))? + 1
            };
            Some(page[start..].to_string())
        })
        .unwrap_or_default();

    let mut targets = Vec::new();
    let mut chart = Vec::new();
    let mut head = String::new();
    intro(&mut head, &facts);
    machine(&mut head, &facts);
    let mut results_text = String::new();
    heap_results(&mut results_text, &mut targets, &mut chart, &heap_targets);
    resident_results(&mut results_text, &mut targets, &mut chart, &resident);
    global_results(&mut results_text, &mut targets, &global);
    per_request_results(&mut results_text, &mut targets, &per_request, &per_request_on_threads);
    firmware_results(&mut results_text, &mut targets, &firmware);
    let mut shm_text = String::new();
    shm_results(&mut shm_text, &mut targets, &mut chart, &shm_targets);
    reclaim_results(&mut shm_text);
    grow_results(&mut shm_text);
    objects_results(&mut shm_text);
    hammer_results(&mut shm_text, &mut targets, &mut chart, &hammer, &facts);

    let page = compose(&head, &targets, &results_text, &shm_text, &kept);

    fs::write(&page_path, page)
        .map_err(|error| format!("cannot write {}: {error}", page_path.display()))?;
    let svg_path = docs.join("benchmarks.svg");
    fs::write(&svg_path, svg(&chart))
        .map_err(|error| format!("cannot write {}: {error}", svg_path.display()))?;
    eprintln!("wrote {} and {}", page_path.display(), svg_path.display());
    Ok(())
}

/// The page from its generated parts and the fixed text around them: the introduction and the
/// machine (`head`), the targets, the heap pools' sections (`heap`) and notes, the shared pool's
/// introduction, sections (`shm`), notes and history, Melon's quoted figures, and last the part
/// of the old page that is kept as it was.
fn compose(head: &str, targets: &[Target], heap: &str, shm: &str, kept: &str) -> String {
    let mut page = head.to_string();
    glance(&mut page, targets);
    page.push_str(heap);
    page.push_str(HEAP_NOTES);
    page.push_str(SHM_INTRO);
    page.push_str(shm);
    page.push_str(SHM_NOTES);
    // The file's own last newlines do not matter: an editor may add or drop one.
    page.push_str(SHM_HISTORY.trim_end());
    page.push_str("\n\n");
    page.push_str(QUOTED);
    let mut page = wrap(&page);
    if !kept.is_empty() {
        page.push('\n');
        page.push_str(kept);
    }
    page
}

fn intro(page: &mut String, facts: &Facts) {
    page.push_str(
        "# Benchmarks\n\n\
         How fast melon-alloc's heap pools are next to glibc `malloc`, mimalloc, bumpalo, talc and \
         rlsf, and how much memory a live block costs; and how fast the shared-memory pool is, \
         alone and with many processes on it ([Shared-memory pool](#shared-memory-pool)). This \
         page is written by `cargo xtask bench` from one run on the machine described below: \
         every figure on it comes from that run unless it is marked as quoted.\n\n",
    );
    if facts.get("mode") == "quick" {
        page.push_str(
            "> **This page is from a quick run** (`cargo xtask bench --quick`: short \
             measurements, one hammer run per cell), made to try the pipeline. Its figures are \
             rough; run `cargo xtask bench` for figures worth quoting.\n\n",
        );
    }
    page.push_str("![Ratios to glibc per workload](benchmarks.svg)\n\n");
    page.push_str(
        "The chart shows every peer's figure over glibc's in the same run, on a log scale: \
         below the line at 1, faster (or, for resident memory, smaller) than glibc. For the \
         hammer it is glibc's operations per second over the peer's, so that lower is better \
         there too. A black dash over a bar marks that bar's target.\n\n",
    );
    page.push_str(REPRODUCE);
    let _ = write!(page, "{}", PEERS);
}

/// How to run the benchmarks, what they measure and with what.
const REPRODUCE: &str = "## How to reproduce

```sh
cargo xtask bench                  # everything, then this page and its chart
cargo xtask bench --quick          # short measurements, to try the pipeline
cargo xtask bench --report-only    # the page again from the results already on disk
cargo xtask bench --only heap fill_drain   # one part, one criterion group
cargo xtask bench --check          # instructions and system calls per operation against the baseline
```

`cargo xtask bench` runs seven parts in turn, then writes this page and `docs/benchmarks.svg`:

1. `cargo bench -p melon-alloc-bench --bench heap`: one criterion target,
   `crates/melon-alloc-bench/benches/heap.rs`, with one group per heap workload and every peer in
   each group, so that a single run gives the ratios. Then
   `cargo run --release -p melon-alloc-bench --bin heap_targets`: the workloads that carry a
   target, their allocators taking turns in one process (`src/bin/heap_targets.rs`): melon and
   glibc in the three small-block workloads, melon with and without a limit and mimalloc in the
   large ring. That is what those targets are judged by.
2. `cargo bench -p melon-alloc-bench --bench shm`: the shared pool's alloc+free pair at several
   sizes and fill levels, a dead process's chunks taken back, a pool grown by a segment, and
   named values and a mutex in the pool (`benches/shm.rs`). It needs 1 GiB of free memory. Then
   `cargo run --release -p melon-alloc-bench --bin shm_targets`: the pair at the same sizes and
   fill levels and glibc's, taking turns in one process (`src/bin/shm_targets.rs`), which the
   shared pool's target is judged by.
3. `cargo run --release -p melon-alloc-bench --bin hammer`: several processes on one shared
   pool (`src/bin/hammer/`), a plain binary because criterion cannot time work spread over
   processes.
4. `cargo run --release -p melon-alloc-bench --bin resident`: resident memory per live block
   (`src/bin/resident.rs`), each cell in a fresh child process.
5. `cargo run --release -p melon-alloc-bench --bin global`, after building the crate's binaries:
   glibc, mimalloc and melon each as a program's `#[global_allocator]`, in child binaries of their
   own (`src/bin/global*.rs`), interleaved in rounds.
6. `cargo run --release -p melon-alloc-bench --bin per_request`: a pool per request on a tokio
   runtime against the global allocator, mimalloc and bumpalo (`src/bin/per_request.rs`),
   interleaved in rounds.
7. The firmware comparison: `firmware/src/compare/` built once per allocator for
   `thumbv7em-none-eabihf` and run on QEMU's `mps2-an386` board.

`--only heap,shm,hammer,resident,global,per_request,firmware` runs some of the parts, and a filter after the options goes
to criterion as it would after `cargo bench -- `, for example `cargo xtask bench --only heap mixed`.
The criterion estimates stay in `target/criterion/`, the other parts' figures and the machine's
facts in `target/bench-results/`, which is what `--report-only` reads.
Each part can also be run by hand with the commands above. `cargo xtask ci` never times the
benchmarks: it compiles them, and runs `cargo xtask bench --check`, which counts what one
operation of each workload of `src/bin/instructions.rs`, and a pair through the C API (in a
program with heap pools only, in one that made a shared pool first, and in a worker's pool made
from that shared pool), costs in
instructions under callgrind and in system calls under `strace -f -c` (`valgrind` and `strace`
are taken from `PATH`), each as the count at 2N less the count at N, over N. It fails when a
workload costs more than 3 % more instructions than `xtask/instructions-baseline.tsv` says; more
than 10 % fewer, as then either its harness stopped doing its work or, for a real improvement,
the baseline must be saved again (`--save-baseline` rewrites it); no more at 2N than at N; more
than 0.01 system calls per operation over its baseline; or when a workload of the baseline was
not measured, or a measured one has no baseline. Two of them check what a pool pays once: `heap_root_lifecycle`, a whole root
pool's life (made, four chunks taken, dropped), and `heap_first_fill`, a new root pool per 1024
blocks, its chunks carved afresh. Others measure a part of a path apart, so that a few
instructions more in it pass the 3 %: `heap_empty_child_lifecycle` (a child made and dropped with
nothing in it), `shm_lock_pair` (the shared pool's lock alone), `heap_allocator_pair` (the
`Allocator` collections use), and `heap_realloc_small` and `locked_global_realloc` (resizes within
small classes, where the copy is short). Instruction counts are the same on every run of one build, so
that check holds on a shared machine where times move by tens of percent. The kernel's time,
which callgrind does not see, shows in the system calls: most workloads make none per
operation, and where glibc's heap grows or shrinks, the count moves by a few calls from run to
run, far below the 0.01 per operation allowed.

Times are criterion's mean (its point estimate) per alloc+free pair, or per block for the drop, with
the fastest and slowest of criterion's samples (each a timed run of many iterations) in brackets,
and every ratio is to `glibc` in the same group of the same run. Criterion times each peer in a
stretch of time of its own, though, and the speed of a shared machine moves from one stretch to the
next, so a ratio of two criterion means is only as steady as the machine. The heap pools' targets
against glibc are judged where both peers ran under the same conditions instead: melon and glibc
take turns in one process, round after round, and the figure is the median of the per-round ratios
with their spread ([Heap targets, interleaved](#heap-targets-interleaved)). The global-allocator and
per-request comparisons run their peers in interleaved rounds too. A section whose figures come from
an earlier run than the rest says when it was measured.

";

/// The peers and the workloads.
const PEERS: &str = "## Peers and workloads

| name | what it is |
|---|---|
| `melon` | a root `HeapPool` (`pool.alloc(size)`, `pool.free(p)`, `drop(pool)`) |
| `melon_child` | a child pool whose root keeps its chunks (the drop workload only, see below) |
| `glibc` | `std::alloc::System`, which is glibc's `malloc` and `free` for these layouts |
| `mimalloc_heap` | a mimalloc first-class heap: `mi_heap_malloc`, `mi_free`, `mi_heap_destroy` |
| `mimalloc` | mimalloc as a global allocator (`mimalloc::MiMalloc`), for reference |
| `bumpalo` | a `bumpalo::Bump` arena; it cannot free one block, so it calls `reset()` instead |
| `talc` | talc's `Talc` with a `Manual` source, over a 64 MiB arena it claims when made |
| `rlsf` | rlsf's `Tlsf` (two-level segregated fit), over a 64 MiB arena inserted as one free block |

talc and rlsf manage a fixed region they are given, as they would without an operating system;
their arena is a lazily mapped region from glibc, so its size costs nothing until used. Melon's
own C pool is not among the peers: it is not packaged on crates.io, and the benchmarks use only
what cargo can fetch. Its figures from `MELON_ALLOC.md` are quoted at the end.

Blocks are 64 bytes with 16-byte alignment, except in `mixed` and the resident-memory table. The
heap workloads:

- `ping_pong`: allocate one block and free it, repeated. Time per pair.
- `fill_drain_1024`: allocate 1024 blocks, then free them in allocation order. Time per pair
  (the iteration time over 1024).
- `shuffled_drain_1024`: allocate 1024 blocks, then free them in a fixed pseudo-random order
  (`melon_alloc_bench::permutation(1024, SHUFFLE_SEED)`). Time per pair. bumpalo cannot free in
  any order and has no part in it.
- `mixed`: sizes from 8 bytes to 64 KiB (`melon_alloc_bench::mixed_sizes`: every octave, 8 to 16
  bytes up to 32 to 64 KiB, equally likely, uniform within an octave, so half the requests are
  under 512 bytes and five in thirteen above 2 KiB) with a bounded live set: a ring of 256
  slots, where each step frees the slot's block and allocates the next size of a fixed sequence
  into it. Time per free+alloc pair. bumpalo has no part in it.
- `drop_full_pool`: a pool holding 1,000,000 live blocks, each written to, is dropped. Only the
  drop is timed; the pool is built again, untimed, before each iteration. For `glibc`, which has
  no pool, the timed part frees the million blocks one by one. For talc and rlsf, whose drop is
  giving back their arena, the arena is 256 MiB, room for the million blocks with their
  per-block headers, and what is returned is the pages the blocks touched. Time per block.

";

fn machine(page: &mut String, facts: &Facts) {
    let versions = locked_versions();
    let version = |name: &str| versions.get(name).map_or("?", String::as_str).to_string();
    let gib = |key: &str| facts.number(key).map_or(0.0, |kib| kib as f64 / (1 << 20) as f64);
    page.push_str("## The machine\n\n| | |\n|---|---|\n");
    let cpu = facts.get("cpu");
    let mut cpu_line = if cpu.is_empty() { "unknown".to_string() } else { cpu.to_string() };
    if !facts.get("cpu_family").is_empty() {
        let _ = write!(
            cpu_line,
            " (family {}, model {})",
            facts.get("cpu_family"),
            facts.get("cpu_model")
        );
    }
    let _ = write!(cpu_line, ", {} logical CPUs", facts.get("cpus"));
    if facts.get("virtual") == "true" {
        cpu_line.push_str(", virtual machine");
    }
    if !facts.get("cpu_cache").is_empty() {
        let _ = write!(cpu_line, "; cache {}", facts.get("cpu_cache"));
    }
    let _ = writeln!(page, "| CPU | {cpu_line} |");
    let _ = writeln!(page, "| `nproc` | {} |", facts.get("nproc"));
    let swap = if facts.number("swap_kib").unwrap_or(0) == 0 {
        "no swap".to_string()
    } else {
        format!("{:.1} GiB swap", gib("swap_kib"))
    };
    let _ = writeln!(page, "| memory | {:.1} GiB, {swap} |", gib("mem_kib"));
    let _ = writeln!(
        page,
        "| kernel | Linux {}, {}; transparent huge pages `{}` |",
        facts.get("kernel"),
        facts.get("arch"),
        facts.get("thp")
    );
    let _ = writeln!(page, "| glibc | `{}` |", facts.get("glibc"));
    let _ = writeln!(
        page,
        "| Rust | {}, `bench` profile (optimized, no debug info) |",
        facts.get("rustc")
    );
    let _ = writeln!(
        page,
        "| peers | mimalloc (crates `libmimalloc-sys` {}, `mimalloc` {}), bumpalo {}, talc {}, rlsf {}, rts-alloc {}; criterion {} |",
        version("libmimalloc-sys"),
        version("mimalloc"),
        version("bumpalo"),
        version("talc"),
        version("rlsf"),
        version("rts-alloc"),
        version("criterion")
    );
    let changed = facts.number("changed_files").unwrap_or(0);
    let tree = if changed == 0 {
        String::new()
    } else {
        format!(", with uncommitted changes to {changed} tracked files in the working tree")
    };
    let _ = writeln!(page, "| commit | `{}`{tree} |", facts.get("commit"));
    if let (Some(started), Some(finished)) = (facts.number("started"), facts.number("finished")) {
        let minutes = (facts.number("duration_s").unwrap_or(0) as f64 / 60.0).round();
        let length = match minutes {
            0.0 => "under a minute".to_string(),
            1.0 => "1 minute".to_string(),
            _ => format!("{minutes:.0} minutes"),
        };
        let _ = writeln!(
            page,
            "| run | {} to {}: {length}, building included ({} run{}{}) |",
            utc(started),
            &utc(finished)[11..],
            facts.get("mode"),
            partial_run(facts.get("parts")),
            if facts.get("filter").is_empty() {
                String::new()
            } else {
                format!(", filter `{}`", facts.get("filter"))
            }
        );
    } else if let Some(started) = facts.number("started") {
        let _ = writeln!(page, "| run | started {}, not finished |", utc(started));
    }
    let _ = writeln!(
        page,
        "| load average | {} at the start, {} at the end (one minute) |",
        facts.get("load_start"),
        facts.get("load_end")
    );
    page.push_str(
        "\nThe machine is shared: other work, builds and test runs among it, may hold one or both \
         of its two cores during a run, and the load average above says how busy it was. On \
         this machine, timings have moved by 10 to 40 % from one run to the next, and glibc's \
         own figures more than melon's, so read a ratio near its target as at the target, not \
         above or below it.\n\n",
    );
}

/// Starts the section of a part that writes its own figures: the heading, then "Not measured"
/// and `false` when the run has none, or when they were measured and `true`.
fn measured_section(page: &mut String, heading: &str, measured: bool, when: Option<u64>) -> bool {
    let _ = write!(page, "### {heading}\n\n");
    if !measured {
        page.push_str("Not measured in this run.\n\n");
        return false;
    }
    if let Some(when) = when {
        let _ = write!(page, "Measured {}. ", utc(when));
    }
    true
}

/// The targets at a glance, before the details.
fn glance(page: &mut String, targets: &[Target]) {
    page.push_str("## Targets at a glance\n\n| target | this run | met |\n|---|---|---|\n");
    for target in targets {
        let _ = writeln!(page, "| {} | {} | {} |", target.target, target.result, target.met);
    }
    page.push('\n');
}

/// A Markdown link to a heading of the page, by the anchor GitHub gives it: the heading in lower
/// case, its spaces made hyphens, and every other character but letters, digits, `-` and `_`
/// left out.
fn link(heading: &str) -> String {
    let anchor: String = heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect();
    format!("[{heading}](#{anchor})")
}

/// One line of the targets table.
struct Target {
    target: String,
    result: String,
    met: String,
}

/// The page with every prose line longer than 100 characters broken at spaces, as the hand-written
/// pages of the repository are; list items continue indented by two spaces, and an indented line
/// keeps its indentation. Tables, headings and code blocks are left as they are.
fn wrap(page: &str) -> String {
    const WIDTH: usize = 100;
    let mut out = String::new();
    let mut in_code = false;
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let keep = in_code
            || line.chars().count() <= WIDTH
            || line.starts_with('|')
            || line.starts_with('#');
        if keep {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // A line that continues a list item keeps its indentation on every line it becomes,
        // so that the item stays one item.
        let body = line.trim_start_matches(' ');
        let leading = &line[..line.len() - body.len()];
        let indent = if body.starts_with("- ") {
            format!("{leading}  ")
        } else if body.starts_with("> ") {
            "> ".to_string()
        } else {
            leading.to_string()
        };
        let mut current = leading.to_string();
        let mut empty = true;
        for word in body.split(' ') {
            if !empty && current.chars().count() + 1 + word.chars().count() > WIDTH {
                out.push_str(&current);
                out.push('\n');
                current = format!("{indent}{word}");
            } else {
                if !empty {
                    current.push(' ');
                }
                current.push_str(word);
                empty = false;
            }
        }
        out.push_str(&current);
        out.push('\n');
    }
    out
}

/// Melon's own figures, quoted.
const QUOTED: &str = "## Reference: Melon's C pool (quoted, not measured here)

These figures are quoted from `MELON_ALLOC.md`, which measured Melon's `mln_alloc` on the same
kind of machine (2 cores, x86_64, glibc 2.36). They are not from the run above and are not
directly comparable with it: glibc's own figures there are lower than here.

| workload | glibc malloc | Melon |
|---|---|---|
| heap alloc+free ping-pong | about 11 ns per pair | about 8 ns |
| heap fill 1024 then free all | about 15 ns per pair | about 10 ns |
| resident bytes per live block, 16 / 64 / 200 B requests (1M blocks) | 32 / 80 / 204 | 81 / 128 / 316 |
| shm: alloc 64 B until full, 8 MiB pool | n/a | 1.7 µs per alloc |
| shm: alloc 64 B until full, 64 MiB pool | n/a | 3.2 µs per alloc |
| shm hammer, 1 / 2 / 4 processes, M ops/s in total | 31 / 55 / 45 | 5.2 / 3.0 / 1.4 |
";

/// What the run row adds when the run took only some of the parts: the sections of the others
/// keep the figures of earlier runs.
fn partial_run(parts: &str) -> String {
    let ran: Vec<&str> = parts.split(',').filter(|part| !part.is_empty()).collect();
    let all = Part::ALL.iter().all(|part| ran.contains(&part.name()));
    if all || ran.is_empty() {
        String::new()
    } else {
        format!(
            " of {} only; the other sections keep the figures of earlier runs",
            ran.iter().map(|part| format!("`{part}`")).collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of some parts says which, and that the rest of the page is older; a run of all
    /// says nothing more.
    #[test]
    fn a_run_of_some_parts_says_so() {
        let all: Vec<&str> = Part::ALL.iter().map(|part| part.name()).collect();
        assert_eq!(partial_run(&all.join(",")), "");
        assert_eq!(
            partial_run("shm,hammer"),
            " of `shm`, `hammer` only; the other sections keep the figures of earlier runs"
        );
    }

    /// The headings of a page: its lines that start with `#`, outside code blocks.
    fn headings(page: &str) -> Vec<&str> {
        let mut in_code = false;
        page.lines()
            .filter(|line| {
                if line.starts_with("```") {
                    in_code = !in_code;
                }
                !in_code && line.starts_with('#')
            })
            .collect()
    }

    /// A page composed of placeholder parts, with a kept section at its end.
    fn composed() -> String {
        let target = Target { target: "a target".into(), result: "1".into(), met: "yes".into() };
        let head = "# Benchmarks\n\n";
        let heap = "## Heap pools\n\n### `ping_pong`\n\nfigures\n\n";
        let shm = "### `hammer`\n\nfigures\n\n";
        compose(head, &[target], heap, shm, "## C API\n\nkept as it was\n")
    }

    #[test]
    fn a_link_goes_to_the_anchor_github_gives_the_heading() {
        assert_eq!(
            link("The robust lock: before and after"),
            "[The robust lock: before and after](#the-robust-lock-before-and-after)"
        );
        assert_eq!(
            link("Where melon's time goes"),
            "[Where melon's time goes](#where-melons-time-goes)"
        );
        assert_eq!(link("`shm_grow`: growing"), "[`shm_grow`: growing](#shm_grow-growing)");
    }

    #[test]
    fn the_history_holds_five_sections() {
        assert_eq!(
            headings(SHM_HISTORY),
            [
                "### The robust lock: before and after",
                "### Free-list validation: before and after",
                "### Bounds checks and the fork-proof identity: before and after",
                "### The pool's own lock word: before and after",
                "### The locked pair with a bare compare-and-swap for a lock",
            ]
        );
    }

    #[test]
    fn the_history_is_on_the_page_word_for_word_after_the_shared_pools_notes() {
        let page = composed();
        let at = page.find(SHM_HISTORY.trim_end()).expect("the history, unchanged");
        let notes = page.find("### Where the shared pool's time goes").expect("the notes");
        let quoted = page.find("## Reference: Melon's C pool").expect("the quoted figures");
        assert!(notes < at && at < quoted, "the history sits between the notes and the quote");
        assert!(page.ends_with("\n\n## C API\n\nkept as it was\n"), "the kept section is last");
    }

    #[test]
    fn every_section_of_the_page_in_the_repository_is_one_the_generator_writes() {
        // The headings are searched for in the generator's sources, which hold each of them
        // whole, rather than in a page rendered from results: a rendering would need a fake
        // result for every part of a run.
        let sources = [
            include_str!("mod.rs"),
            include_str!("heap.rs"),
            include_str!("global.rs"),
            include_str!("per_request.rs"),
            include_str!("firmware.rs"),
            include_str!("shm.rs"),
            SHM_HISTORY,
        ]
        .concat();
        let path = crate::root().join("docs").join("benchmarks.md");
        let page = fs::read_to_string(&path).expect("docs/benchmarks.md");
        let generated = page.split(&format!("\n{KEPT_SECTION}\n")).next().unwrap_or_default();
        let missing: Vec<&str> = headings(generated)
            .into_iter()
            .filter(|heading| !sources.contains(heading.trim_start_matches('#').trim_start()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} has sections that `cargo xtask bench` does not write, so the next run would drop \
             them: {missing:?}. Have the generator write them, or, for what a run cannot measure \
             again, put them in xtask/src/bench/page/shm_history.md",
            path.display()
        );
    }

    #[test]
    fn the_page_in_the_repository_holds_the_history_as_its_file_has_it() {
        let path = crate::root().join("docs").join("benchmarks.md");
        let page = fs::read_to_string(&path).expect("docs/benchmarks.md");
        assert!(
            page.contains(SHM_HISTORY.trim_end()),
            "{} differs from xtask/src/bench/page/shm_history.md, which is where the history \
             is edited: copy the file's text into the page",
            path.display()
        );
    }

    /// A line of `words` words of four letters: 5 characters a word with its space.
    fn words(count: usize) -> String {
        vec!["word"; count].join(" ")
    }

    #[test]
    fn short_lines_tables_headings_and_code_are_kept() {
        let long = words(30);
        let page = format!("{}\n| {long} |\n### {long}\n```\n{long}\n```\n", words(20));
        assert_eq!(wrap(&page), page);
    }

    #[test]
    fn a_long_line_breaks_at_the_last_space_within_100_characters() {
        let wrapped = wrap(&words(30));
        assert_eq!(wrapped, format!("{}\n{}\n", words(20), words(10)));
    }

    #[test]
    fn a_list_item_and_its_indented_continuation_stay_indented() {
        let page = format!("- {}\n  {}\n", words(25), words(30));
        let wrapped = wrap(&page);
        let lines: Vec<&str> = wrapped.lines().collect();
        assert_eq!(
            lines,
            [
                format!("- {}", words(19)),
                format!("  {}", words(6)),
                format!("  {}", words(19)),
                format!("  {}", words(11)),
            ]
        );
    }
}
