//! `cargo xtask bench`: runs the benchmarks and writes `docs/benchmarks.md` and
//! `docs/benchmarks.svg` from the run.
//!
//! ```text
//! cargo xtask bench [--quick] [--report-only] [--only heap,shm,hammer,resident,global,per_request,firmware] [FILTER]
//! cargo xtask bench --check | --save-baseline
//! ```
//!
//! `--check` counts the instructions of one operation of each workload under callgrind, and its
//! system calls under `strace`, and fails if one costs more than 3 % more or 10 % fewer
//! instructions than the baseline committed in `xtask/instructions-baseline.tsv`, or makes more
//! than 0.01 system calls per operation over it; `--save-baseline` writes the counts there
//! instead (see `check.rs`). Neither touches the page.
//!
//! The run has seven parts: `heap`, the criterion bench `heap` of `melon-alloc-bench` and then
//! the `heap_targets` binary, which times the workloads that carry a target for melon and its
//! peer (glibc, or mimalloc in the large ring) in interleaved rounds and is what those targets
//! are judged by; `shm`, the criterion bench `shm` (criterion leaves its estimates in
//! `criterion/<group>/<function>/new/` of the target directory: `target/`, or
//! `CARGO_TARGET_DIR` when it is set) and then the `shm_targets` binary, the shared pool's pair
//! and glibc's in interleaved rounds, which its target is judged by; the multi-process `hammer`;
//! the `resident` memory measurement; the `global` allocator comparison; the tokio
//! `per_request` workload; and the `firmware` comparison of allocators on an emulated Cortex-M4
//! (see `no_std.rs`). Every part writes tab-separated figures to `target/bench-results/`, the
//! criterion benches through their targets' binaries. The facts of the machine and of the run go
//! to `target/bench-results/machine.tsv`. The page is then written from those files alone, which
//! is what `--report-only` does without running anything. `--quick` shortens every measurement
//! to try the pipeline; its figures are not worth publishing, and the page says so. A `FILTER` is
//! handed to criterion (a regular expression over `group/function`), and `--only` picks parts.
//!
//! Any section of the existing page that starts with a line `## C API` is kept, to the end of
//! the page, after the generated text. The sections that set the shared pool against its earlier
//! builds ("The robust lock: before and after" and the two after it) cannot be measured again by
//! a run: their text lives in `page/shm_history.md`, is edited there, and goes on the page word
//! for word after the shared pool's notes.

mod chart;
mod check;
mod format;
mod page;
mod results;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{cargo, root, run};

/// Where the hammer, the resident measurement and the machine facts leave their figures,
/// relative to the workspace root.
const RESULTS: &str = "target/bench-results";

/// The file of `target/bench-results/` with the per-request figures on two plain threads.
pub(crate) const PER_REQUEST_THREADS_TSV: &str = "per_request_threads.tsv";

/// The binary that times the heap pools' targeted workloads in interleaved rounds, and the stem
/// of its file of figures.
pub(crate) const HEAP_TARGETS: &str = "heap_targets";

/// The binary that times the shared pool's pair against glibc in interleaved rounds, and the
/// stem of its file of figures.
pub(crate) const SHM_TARGETS: &str = "shm_targets";

/// The parts of a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Heap,
    Shm,
    Hammer,
    Resident,
    Global,
    PerRequest,
    Firmware,
}

impl Part {
    const ALL: [Part; 7] = [
        Part::Heap,
        Part::Shm,
        Part::Hammer,
        Part::Resident,
        Part::Global,
        Part::PerRequest,
        Part::Firmware,
    ];

    fn name(self) -> &'static str {
        match self {
            Part::Heap => "heap",
            Part::Shm => "shm",
            Part::Hammer => "hammer",
            Part::Resident => "resident",
            Part::Global => "global",
            Part::PerRequest => "per_request",
            Part::Firmware => "firmware",
        }
    }
}

/// What `--check` and `--save-baseline` ask for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Instructions {
    /// Count, and fail on a regression against the baseline.
    Check,
    /// Count, and write the counts as the baseline.
    SaveBaseline,
}

/// The command line, parsed.
struct Options {
    quick: bool,
    report_only: bool,
    /// `--check` or `--save-baseline`: the instruction counts alone (see [`check`]).
    instructions: Option<Instructions>,
    parts: Vec<Part>,
    filter: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        report_only: false,
        instructions: None,
        parts: Part::ALL.to_vec(),
        filter: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--report-only" => options.report_only = true,
            "--check" => options.instructions = Some(Instructions::Check),
            "--save-baseline" => options.instructions = Some(Instructions::SaveBaseline),
            "--only" => {
                let list = args.next().ok_or("`--only` needs a list, e.g. `--only heap,shm`")?;
                options.parts = list
                    .split(',')
                    .map(|name| {
                        Part::ALL.into_iter().find(|part| part.name() == name).ok_or(format!(
                            "unknown part `{name}`: heap, shm, hammer, resident, global, per_request, firmware"
                        ))
                    })
                    .collect::<Result<_, _>>()?;
            }
            other if other.starts_with("--") => {
                return Err(format!(
                    "unknown argument `{other}`; usage: cargo xtask bench [--quick] \
                     [--report-only] [--only heap,shm,hammer,resident,global,per_request,firmware] \
                     [FILTER], or cargo xtask bench --check | --save-baseline"
                ))
            }
            filter => options.filter = Some(filter.to_string()),
        }
    }
    Ok(options)
}

/// Runs the bench task with the arguments that follow `bench` on the command line.
pub(crate) fn run_task(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    if let Some(instructions) = options.instructions {
        return check::run_task(instructions == Instructions::SaveBaseline);
    }
    let results = root().join(RESULTS);
    fs::create_dir_all(&results)
        .map_err(|error| format!("cannot create {}: {error}", results.display()))?;
    if !options.report_only {
        measure(&options, &results)?;
    }
    page::report(&results)
}

/// Runs the parts of the benchmark that `options` asks for and records the machine and the run.
fn measure(options: &Options, results: &Path) -> Result<(), String> {
    let started = Instant::now();
    let mut facts = machine_facts();
    facts.push(("started".into(), unix_now().to_string()));
    facts.push(("mode".into(), if options.quick { "quick" } else { "full" }.into()));
    let parts: Vec<&str> = options.parts.iter().map(|part| part.name()).collect();
    facts.push(("parts".into(), parts.join(",")));
    facts.push(("filter".into(), options.filter.clone().unwrap_or_default()));
    facts.push(("load_start".into(), load_average()));
    write_facts(results, &facts)?;

    for part in &options.parts {
        match part {
            Part::Heap | Part::Shm => {
                let mut bench = cargo();
                bench.args(["bench", "-p", "melon-alloc-bench", "--bench", part.name(), "--"]);
                if options.quick {
                    bench.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
                }
                bench.args(options.filter.iter());
                run(bench)?;
                // The targets are judged by melon and glibc taking turns in one process, not
                // by criterion's means, which are taken in stretches of time of their own. A few
                // seconds, so they run whatever the filter.
                let targets = if *part == Part::Heap { HEAP_TARGETS } else { SHM_TARGETS };
                let mut interleaved = release_bin(targets);
                interleaved.args(["--rounds", if options.quick { "5" } else { "15" }]);
                interleaved.arg("--tsv").arg(results.join(format!("{targets}.tsv")));
                run(interleaved)?;
            }
            Part::Hammer => {
                let mut hammer = release_bin("hammer");
                if options.quick {
                    hammer.args(["200000", "--processes", "1,2,4", "--runs", "1"]);
                } else {
                    hammer.args(["2000000", "--processes", "1,2,4,16", "--runs", "5"]);
                }
                hammer.arg("--tsv").arg(results.join("hammer.tsv"));
                run(hammer)?;
            }
            Part::Resident => {
                let mut resident = release_bin("resident");
                resident.arg("--tsv").arg(results.join("resident.tsv"));
                run(resident)?;
            }
            Part::Global => {
                // The driver runs its sibling binaries, one per global allocator, so they are
                // built first.
                let mut build = cargo();
                build.args(["build", "--release", "-p", "melon-alloc-bench", "--bins"]);
                run(build)?;
                let mut global = release_bin("global");
                global.args(["--rounds", if options.quick { "3" } else { "9" }]);
                global.arg("--tsv").arg(results.join("global.tsv"));
                run(global)?;
            }
            Part::PerRequest => {
                let mut per_request = release_bin("per_request");
                per_request.args(["--rounds", if options.quick { "3" } else { "9" }]);
                per_request.arg("--tsv").arg(results.join("per_request.tsv"));
                run(per_request)?;
                // The same requests on two threads, one at a time each: the allocators alone,
                // with every thread allocating all the time.
                let mut on_threads = release_bin("per_request");
                on_threads.args(["--rounds", if options.quick { "3" } else { "9" }]);
                on_threads.args(["--threads", "2"]);
                on_threads.arg("--tsv").arg(results.join(PER_REQUEST_THREADS_TSV));
                run(on_threads)?;
            }
            Part::Firmware => {
                let mut tsv = String::from("peer\ttext_bytes\tfigure\tvalue\n");
                for run in crate::no_std::compare()? {
                    for (figure, value) in run.figures {
                        let _ =
                            writeln!(tsv, "{}\t{}\t{figure}\t{value}", run.peer, run.text_bytes);
                    }
                }
                let path = results.join("firmware.tsv");
                fs::write(&path, tsv)
                    .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            }
        }
    }

    facts.push(("finished".into(), unix_now().to_string()));
    facts.push(("duration_s".into(), started.elapsed().as_secs().to_string()));
    facts.push(("load_end".into(), load_average()));
    write_facts(results, &facts)
}

/// `cargo run --release` of one of the bench crate's binaries; its arguments follow.
fn release_bin(name: &str) -> Command {
    let mut command = cargo();
    command.args(["run", "--release", "-p", "melon-alloc-bench", "--bin", name, "--"]);
    command
}

/// What is known about the machine and the tree: every fact the page's machine table shows.
fn machine_facts() -> Vec<(String, String)> {
    let mut facts = Vec::new();
    let mut fact = |key: &str, value: String| facts.push((key.to_string(), value));
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|line| line.split(':').next().is_some_and(|key| key.trim() == name))
            .and_then(|line| line.split_once(':'))
            .map(|(_, value)| value.trim().to_string())
            .unwrap_or_default()
    };
    fact("cpu", field("model name"));
    fact("cpu_family", field("cpu family"));
    fact("cpu_model", field("model"));
    fact("cpu_cache", field("cache size"));
    let processors = cpuinfo.lines().filter(|line| line.starts_with("processor")).count();
    fact("cpus", processors.to_string());
    let flags = field("flags");
    fact("virtual", flags.split_whitespace().any(|flag| flag == "hypervisor").to_string());
    fact("nproc", output("nproc", &[]));
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |name: &str| {
        meminfo
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("0")
            .to_string()
    };
    fact("mem_kib", kib("MemTotal:"));
    fact("swap_kib", kib("SwapTotal:"));
    fact("kernel", output("uname", &["-r"]));
    fact("arch", output("uname", &["-m"]));
    let thp = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let thp = thp.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(mode, _)| mode);
    fact("thp", thp.unwrap_or("unknown").to_string());
    fact("glibc", output("ldd", &["--version"]).lines().next().unwrap_or_default().to_string());
    fact("rustc", output("rustc", &["-V"]));
    fact("commit", output("git", &["rev-parse", "--short", "HEAD"]));
    let status = output("git", &["status", "--porcelain", "--untracked-files=no"]);
    fact("changed_files", status.lines().count().to_string());
    facts
}

/// The trimmed standard output of a command run from the workspace root, or an empty string.
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The one-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

fn write_facts(results: &Path, facts: &[(String, String)]) -> Result<(), String> {
    let mut text = String::new();
    for (key, value) in facts {
        let _ = writeln!(text, "{key}\t{}", value.replace(['\t', '\n'], " "));
    }
    let path = results.join("machine.tsv");
    fs::write(&path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))
}
