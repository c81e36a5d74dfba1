//! `cargo xtask loom`: the loom models of every lock and atomic the pools share between threads
//! or processes, first with the real code (they must pass), then with deliberately broken
//! variants (they must fail, which each model asserts). Every model is built only under
//! `--cfg melon_loom`, so the task first lists each crate's models and fails if there are none:
//! a flag that did not reach the build would otherwise leave an empty test binary that passes.

use std::process::Command;

use crate::{add_flags, cargo, root, run, Flags};

/// The crates with loom models, as `cargo test` package arguments.
const MODELLED: &[&str] = &["melon-alloc-core", "melon-alloc-shm"];

pub(crate) fn run_task() -> Result<(), String> {
    for cfg in
        [&["--cfg", "melon_loom"][..], &["--cfg", "melon_loom", "--cfg", "melon_loom_broken"]]
    {
        for package in MODELLED {
            let listed = count_models(models(package, cfg)?)?;
            if listed == 0 {
                return Err(format!(
                    "no loom model of {package} was built with {}: the flags did not reach the \
                     build",
                    cfg.join(" ")
                ));
            }
            eprintln!("{listed} loom models in {package}");
            run(models(package, cfg)?)?;
        }
    }
    Ok(())
}

/// `cargo test` of `package`'s loom models, built with `cfg`.
fn models(package: &str, cfg: &[&str]) -> Result<Command, String> {
    let mut models = cargo();
    models
        .args(["test", "--release", "--test", "loom", "-p", package])
        // Loom's builds differ from the normal ones in every crate; keep them apart.
        .env("CARGO_TARGET_DIR", root().join("target").join("loom"))
        // Bounded preemptions keep the exploration to minutes; lock bugs need very few.
        .env("LOOM_MAX_PREEMPTIONS", "3");
    add_flags(&mut models, Flags::Rustc, cfg)?;
    Ok(models)
}

/// The tests `models` lists: it builds them, and runs none.
fn count_models(mut models: Command) -> Result<usize, String> {
    models.args(["--", "--list", "--format", "terse"]);
    eprintln!("$ {models:?}");
    let output = models.output().map_err(|error| format!("could not start {models:?}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{models:?} failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.ends_with(": test"))
        .count())
}
