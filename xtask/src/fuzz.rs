//! `cargo xtask fuzz [--time SECONDS]`: the fuzz targets under libFuzzer and the address
//! sanitizer, on the nightly toolchain, one after another, sharing a set time (a minute unless
//! told otherwise) equally:
//! - `pools`: heap, shared and child pools driven against a model of their blocks;
//! - `shm_header`: a shared pool attached after random bytes were written into its header, undo
//!   log and page descriptors, which must never write outside its mapping or crash;
//! - `shm_names`: a shared pool's directory of names, typed boxes and offsets against a model.
//!
//! Inputs that crash a target are written to `fuzz/artifacts/TARGET/`, and the inputs that
//! reached new code to `fuzz/corpus/TARGET/`, which later runs start from.

use std::process::Command;

use crate::{root, run};

/// The fuzz targets in `fuzz/Cargo.toml`, in the order they run.
const TARGETS: [&str; 3] = ["pools", "shm_header", "shm_names"];

/// How long the fuzzers run in all when `--time` is not given, in seconds.
const DEFAULT_SECONDS: u64 = 60;

/// Runs the fuzz task with the arguments that follow `fuzz` on the command line.
pub(crate) fn run_task(args: &[String]) -> Result<(), String> {
    let seconds = seconds(args)?;

    crate::install_nightly()?;
    let mut version = crate::toolchain_cargo("nightly");
    version.args(["fuzz", "--version"]);
    if !crate::succeeds(version) {
        let mut install = Command::new("cargo");
        install.args(["install", "cargo-fuzz", "--locked"]);
        run(install)?;
    }

    // Each target gets its share of the time, and at least a second.
    let share = (seconds / TARGETS.len() as u64).max(1);
    let max_total_time = format!("-max_total_time={share}");
    for target in TARGETS {
        let mut fuzz = crate::toolchain_cargo("nightly");
        fuzz.args(["fuzz", "run", target, "--", &max_total_time]);
        fuzz.current_dir(root().join("fuzz"));
        run(fuzz)?;
    }
    Ok(())
}

/// The fuzzing time: the value of `--time N` (or `--time=N`), else [`DEFAULT_SECONDS`].
fn seconds(args: &[String]) -> Result<u64, String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--time") {
            Some("") => args.next().ok_or("`--time` needs a number of seconds")?.as_str(),
            Some(value) if value.starts_with('=') => &value[1..],
            _ => return Err(format!("unknown argument `{arg}`; try `cargo xtask fuzz --time 60`")),
        };
        seconds = match value.parse() {
            Ok(0) | Err(_) => {
                return Err(format!("`--time` wants a positive number of seconds, not `{value}`"))
            }
            Ok(value) => value,
        };
    }
    Ok(seconds)
}
