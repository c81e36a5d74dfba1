//! `cargo xtask loom`: the loom models of every lock and atomic the pools share between threads
//! or processes, first with the real code (they must pass), then with deliberately broken
//! variants (they must fail, which each model asserts).

use crate::{cargo, root, run};

/// The crates with loom models, as `cargo test` package arguments.
const MODELLED: &[&str] = &["melon-alloc-core", "melon-alloc-shm"];

pub(crate) fn run_task() -> Result<(), String> {
    for cfg in ["--cfg melon_loom", "--cfg melon_loom --cfg melon_loom_broken"] {
        let mut models = cargo();
        models.args(["test", "--release", "--test", "loom"]);
        for package in MODELLED {
            models.args(["-p", package]);
        }
        models
            .env("RUSTFLAGS", cfg)
            // Loom's builds differ from the normal ones in every crate; keep them apart.
            .env("CARGO_TARGET_DIR", root().join("target").join("loom"))
            // Bounded preemptions keep the exploration to minutes; lock bugs need very few.
            .env("LOOM_MAX_PREEMPTIONS", "3");
        run(models)?;
    }
    Ok(())
}
