//! `cargo xtask bench --check` and `--save-baseline`: the instructions of one operation of each
//! workload of the `instructions` binary, and of an alloc+free pair through the C API, counted
//! under callgrind and held against the baseline committed in the repository. Instruction
//! counts are the same on every run of one build, so a change that makes a pool slower shows,
//! on a shared machine too, where times move by tens of percent from run to run.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::{cargo, root, run};

/// The baseline, relative to the workspace root: a header line, then a workload and its
/// instructions per operation on each line, tab-separated.
const BASELINE: &str = "xtask/instructions-baseline.tsv";

/// How much more than its baseline a workload may cost before the check fails.
const THRESHOLD: f64 = 0.03;

/// Operations of each workload at the smaller of its two runs.
const OPS: u64 = 20_000;

/// The name the C API's pair has in the baseline.
const C_PAIR: &str = "capi_ping_pong_fill_drain";

/// Counts every workload and checks it against the baseline, or, with `save`, writes the counts
/// as the new baseline.
pub(super) fn run_task(save: bool) -> Result<(), String> {
    let counts = count()?;
    let path = root().join(BASELINE);
    if save {
        let mut tsv = String::from("workload\tinstructions_per_operation\n");
        for (workload, count) in &counts {
            let _ = writeln!(tsv, "{workload}\t{count:.1}");
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
    let baseline: Vec<(&str, f64)> = baseline
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (workload, count) = line.split_once('\t')?;
            Some((workload, count.trim().parse().ok()?))
        })
        .collect();
    println!("| workload | baseline | now | change |\n|---|---:|---:|---:|");
    // A workload gone from the binary is a check that stopped running.
    let mut regressed: Vec<String> = baseline
        .iter()
        .filter(|(name, _)| !counts.iter().any(|(workload, _)| workload == name))
        .map(|(name, _)| format!("{name} is in the baseline but was not measured"))
        .collect();
    for (workload, count) in &counts {
        let Some(&(_, base)) = baseline.iter().find(|(name, _)| name == workload) else {
            println!("| {workload} | none | {count:.1} | |");
            regressed.push(format!("{workload} has no baseline"));
            continue;
        };
        let change = count / base - 1.0;
        println!("| {workload} | {base:.1} | {count:.1} | {:+.1} % |", change * 100.0);
        if change > THRESHOLD {
            regressed.push(format!("{workload}: {base:.1} -> {count:.1} instructions"));
        }
    }
    if regressed.is_empty() {
        println!("no workload costs more than {:.0} % over its baseline", THRESHOLD * 100.0);
        Ok(())
    } else {
        Err(format!(
            "over the baseline by more than {:.0} %: {}; if that is intended, \
             `cargo xtask bench --save-baseline` and commit {BASELINE}",
            THRESHOLD * 100.0,
            regressed.join(", ")
        ))
    }
}

/// Every workload's instructions per operation, in the order the binary lists them, then the C
/// API's pair.
fn count() -> Result<Vec<(String, f64)>, String> {
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
        // The fill-and-drain workload runs whole rounds of 1024 blocks.
        let extra = (workload == "heap_fill_drain").then_some((2 * OPS / 1024 - OPS / 1024) * 1024);
        counts.push((workload.to_string(), crate::callgrind::per_operation(program, OPS, extra)?));
    }
    counts.push((C_PAIR.to_string(), crate::capi::c_pair_instructions()?));
    Ok(counts)
}
