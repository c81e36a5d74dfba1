//! `cargo xtask no-std`: builds the core crate and a firmware-style binary for a microcontroller
//! target, proving the engine needs no operating system and no allocator of its own.

use crate::{cargo, root, run};

/// A Cortex-M4F target: no OS, no `std`, 32-bit, with compare-and-swap atomics.
const TARGET: &str = "thumbv7em-none-eabihf";

pub(crate) fn run_task() -> Result<(), String> {
    let mut target = std::process::Command::new("rustup");
    target.args(["target", "add", TARGET]);
    run(target)?;

    let mut core = cargo();
    core.args(["build", "-p", "melon-alloc-core", "--no-default-features", "--target", TARGET]);
    run(core)?;
    let mut core_api = cargo();
    core_api.args(["build", "-p", "melon-alloc-core", "--target", TARGET]);
    run(core_api)?;

    let mut firmware = cargo();
    firmware
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(root().join("firmware").join("Cargo.toml"));
    run(firmware)
}
