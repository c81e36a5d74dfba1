//! `cargo xtask bench --check` and `--save-baseline`: what one operation of each workload of the
//! `instructions` binary, and an alloc+free pair through the C API, costs in instructions
//! (counted under callgrind) and in system calls (counted under `strace -f -c`), held against
//! the baseline committed in the repository. Both counts are the same on every run of one build,
//! so a change that makes a pool slower shows, on a shared machine too, where times move by tens
//! of percent from run to run. Each is the count at `2N` less the count at `N`, over `N`, so
//! that start-up and tear-down cancel out.
//!
//! The check fails when a workload
//! - costs more than 3 % more instructions than its baseline;
//! - costs more than 10 % fewer: either its harness stopped doing its work (it runs fewer
//!   operations than its `N`), or the pool got faster and the baseline must be saved again;
//! - makes more than 0.01 system calls per operation over its baseline: the kernel's time is
//!   invisible to callgrind, and a workload in its steady state makes none;
//! - costs no more instructions at `2N` than at `N` (see [`crate::callgrind::per_operation`]);
//! - is in the baseline but was not measured, or was measured but has no baseline.
//!
//! `valgrind` and `strace` are looked for on the caller's `PATH`.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::{cargo, root, run};

/// The baseline, relative to the workspace root: a header line, then on each line a workload,
/// its instructions per operation and its system calls per operation, tab-separated.
const BASELINE: &str = "xtask/instructions-baseline.tsv";

/// The header line of the baseline.
const HEADER: &str = "workload\tinstructions_per_operation\tsystem_calls_per_operation";

/// How much more than its baseline a workload may cost before the check fails.
const THRESHOLD: f64 = 0.03;

/// How much less than its baseline a workload may cost before the check fails: more than that
/// is more likely a harness that stopped doing its work than a pool that got faster.
const FLOOR: f64 = 0.10;

/// How many system calls per operation a workload may make over its baseline: one more call in
/// every hundred operations.
const CALLS_MARGIN: f64 = 0.01;

/// Operations of each workload at the smaller of its two runs.
const OPS: u64 = 20_000;

/// The workloads that run whole rounds, with the operations of a round: given `n`, they run
/// `n` rounded down to whole rounds, and their doubled run adds the operations of the rounds
/// it adds.
const ROUNDS: [(&str, u64); 3] =
    [("heap_fill_drain", 1024), ("heap_first_fill", 1024), ("heap_realloc_grow", 12)];

/// The names the C API's pairs have in the baseline, with `pairs.c`'s mode for each: in a
/// program with only heap pools, in a heap pool of one that made a shared-memory pool first, and
/// in a pool made from that shared pool, as a pre-fork server's worker's.
const C_PAIRS: [(&str, &str); 3] = [
    ("capi_ping_pong_fill_drain", ""),
    ("capi_ping_pong_fill_drain_with_shm", "shm"),
    ("capi_ping_pong_fill_drain_in_shm_child", "shm-child"),
];

/// What one operation of a workload costs.
struct Count {
    workload: String,
    instructions: f64,
    system_calls: f64,
}

/// Counts every workload and checks it against the baseline, or, with `save`, writes the counts
/// as the new baseline.
pub(super) fn run_task(save: bool) -> Result<(), String> {
    let counts = count()?;
    let path = root().join(BASELINE);
    if save {
        let mut tsv = format!("{HEADER}\n");
        for count in &counts {
            let _ = writeln!(
                tsv,
                "{}\t{:.1}\t{:.3}",
                count.workload, count.instructions, count.system_calls
            );
        }
        fs::write(&path, tsv)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    let baseline = fs::read_to_string(&path).map_err(|error| {
        format!(
            "cannot read {} ({error}); `cargo xtask bench --save-baseline` writes it",
            path.display()
        )
    })?;
    check(&baseline, &counts)
}

/// Holds `counts` against `baseline`, the text of the baseline file, printing a table of both.
fn check(baseline: &str, counts: &[Count]) -> Result<(), String> {
    let baseline = parse(baseline)?;
    println!(
        "| workload | instructions: baseline | now | change | system calls: baseline | now |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    // A workload gone from the binary is a check that stopped running.
    let mut missing: Vec<String> = baseline
        .iter()
        .filter(|base| !counts.iter().any(|count| count.workload == base.workload))
        .map(|base| format!("{} is in the baseline but was not measured", base.workload))
        .collect();
    let (mut dearer, mut cheaper, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for count in counts {
        let Count { workload, instructions, system_calls } = count;
        let Some(base) = baseline.iter().find(|base| base.workload == workload) else {
            println!("| {workload} | none | {instructions:.1} | | none | {system_calls:.3} |");
            missing.push(format!("{workload} has no baseline"));
            continue;
        };
        let change = instructions / base.instructions - 1.0;
        println!(
            "| {workload} | {:.1} | {instructions:.1} | {:+.1} % | {:.3} | {system_calls:.3} |",
            base.instructions,
            change * 100.0,
            base.system_calls
        );
        let moved =
            format!("{workload}: {:.1} -> {instructions:.1} instructions", base.instructions);
        if change > THRESHOLD {
            dearer.push(moved);
        } else if change < -FLOOR {
            cheaper.push(moved);
        }
        if *system_calls > base.system_calls + CALLS_MARGIN {
            calls.push(format!(
                "{workload}: {:.3} -> {system_calls:.3} system calls",
                base.system_calls
            ));
        }
    }
    let mut failures = Vec::new();
    if !dearer.is_empty() {
        failures.push(format!(
            "more than {:.0} % over the instruction baseline: {}; if that is intended, \
             `cargo xtask bench --save-baseline` and commit {BASELINE}",
            THRESHOLD * 100.0,
            dearer.join(", ")
        ));
    }
    if !cheaper.is_empty() {
        failures.push(format!(
            "more than {:.0} % under the instruction baseline: {}; either the workload stopped \
             doing its work (its harness runs fewer operations than it is given), or, for a real \
             improvement, the baseline must be saved again with \
             `cargo xtask bench --save-baseline` and {BASELINE} committed",
            FLOOR * 100.0,
            cheaper.join(", ")
        ));
    }
    if !calls.is_empty() {
        failures.push(format!(
            "more than {CALLS_MARGIN} system calls per operation over the baseline, which \
             callgrind does not see the kernel's time of: {}; if that is intended, \
             `cargo xtask bench --save-baseline` and commit {BASELINE}",
            calls.join(", ")
        ));
    }
    failures.extend(missing);
    if failures.is_empty() {
        println!(
            "every workload is within {:.0} % over and {:.0} % under its instruction baseline, \
             and within {CALLS_MARGIN} system calls per operation over its system-call baseline",
            THRESHOLD * 100.0,
            FLOOR * 100.0
        );
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// A line of the baseline.
struct Base<'a> {
    workload: &'a str,
    instructions: f64,
    system_calls: f64,
}

/// The lines of the baseline after its header. A line that is not a workload and two counts is
/// an error rather than a workload left unchecked.
fn parse(baseline: &str) -> Result<Vec<Base<'_>>, String> {
    baseline
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t').map(str::trim);
            let parsed = match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some(workload), Some(instructions), Some(system_calls), None) => {
                    instructions.parse().ok().zip(system_calls.parse().ok()).map(
                        |(instructions, system_calls)| Base {
                            workload,
                            instructions,
                            system_calls,
                        },
                    )
                }
                _ => None,
            };
            parsed.ok_or_else(|| {
                format!(
                    "`{line}` in {BASELINE} is not a workload, its instructions and its system \
                     calls per operation; `cargo xtask bench --save-baseline` writes the file"
                )
            })
        })
        .collect()
}

/// Every workload's instructions and system calls per operation, in the order the binary lists
/// them, then the C API's pair.
fn count() -> Result<Vec<Count>, String> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "melon-alloc-bench", "--bin", "instructions"]);
    run(build)?;
    let exe = crate::target_dir()?.join("release").join("instructions");
    let listed = Command::new(&exe)
        .arg("--list")
        .output()
        .map_err(|error| format!("could not run {}: {error}", exe.display()))?;
    let workloads = String::from_utf8_lossy(&listed.stdout);
    if !listed.status.success() || workloads.trim().is_empty() {
        return Err(format!(
            "`{} --list` failed or listed no workload: {}\n{}",
            exe.display(),
            listed.status,
            String::from_utf8_lossy(&listed.stderr)
        ));
    }
    let mut counts = Vec::new();
    for workload in workloads.lines() {
        let program = |n: u64| {
            let mut command = Command::new(&exe);
            command.args([workload, &n.to_string()]);
            command
        };
        let extra = ROUNDS
            .iter()
            .find(|(name, _)| *name == workload)
            .map(|&(_, round)| (2 * OPS / round - OPS / round) * round);
        counts.push(Count {
            workload: workload.to_string(),
            instructions: crate::callgrind::per_operation(workload, program, OPS, extra)?,
            system_calls: crate::strace::per_operation(program, OPS, extra)?,
        });
    }
    for (workload, mode) in C_PAIRS {
        let (instructions, system_calls) = crate::capi::c_pair_counts(workload, mode)?;
        counts.push(Count { workload: workload.to_string(), instructions, system_calls });
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::{check, Count, HEADER};

    fn counts(instructions: f64, system_calls: f64) -> Vec<Count> {
        vec![Count { workload: "pair".to_string(), instructions, system_calls }]
    }

    fn baseline() -> String {
        format!("{HEADER}\npair\t100.0\t0.000\n")
    }

    #[test]
    fn a_workload_within_its_bounds_passes() {
        assert!(check(&baseline(), &counts(102.9, 0.009)).is_ok());
        assert!(check(&baseline(), &counts(90.1, 0.0)).is_ok());
    }

    #[test]
    fn a_dearer_workload_fails() {
        let error = check(&baseline(), &counts(103.1, 0.0)).unwrap_err();
        assert!(error.contains("over the instruction baseline: pair"), "{error}");
    }

    #[test]
    fn a_much_cheaper_workload_fails_and_says_why() {
        let error = check(&baseline(), &counts(89.9, 0.0)).unwrap_err();
        assert!(error.contains("under the instruction baseline: pair"), "{error}");
        assert!(error.contains("stopped doing its work"), "{error}");
        assert!(error.contains("--save-baseline"), "{error}");
    }

    #[test]
    fn a_system_call_per_operation_fails() {
        let error = check(&baseline(), &counts(100.0, 1.0)).unwrap_err();
        assert!(error.contains("system calls per operation over the baseline"), "{error}");
        assert!(error.contains("pair: 0.000 -> 1.000"), "{error}");
    }

    #[test]
    fn a_workload_missing_from_either_side_fails() {
        let error = check(&format!("{}other\t1.0\t0.0\n", baseline()), &counts(100.0, 0.0));
        assert!(error.unwrap_err().contains("other is in the baseline but was not measured"));
        let error = check(&format!("{HEADER}\n"), &counts(100.0, 0.0)).unwrap_err();
        assert!(error.contains("pair has no baseline"), "{error}");
    }

    #[test]
    fn a_line_without_its_system_calls_is_an_error() {
        let error = check("workload\tinstructions\npair\t100.0\n", &counts(100.0, 0.0));
        assert!(error.unwrap_err().contains("`pair\t100.0` in"));
    }
}
