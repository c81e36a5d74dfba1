//! `cargo xtask miri`: the core and heap test suites under Miri, with strict provenance, on the
//! nightly toolchain.

use crate::{root, run};

pub(crate) fn run_task() -> Result<(), String> {
    let mut components = std::process::Command::new("rustup");
    components.args(["component", "add", "miri", "rust-src", "--toolchain", "nightly"]);
    run(components)?;

    // The rustup proxy, not the cargo running this task, understands `+nightly`.
    let mut miri = std::process::Command::new("cargo");
    miri.current_dir(root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .args(["+nightly", "miri", "test", "-p", "melon-alloc-core", "-p", "melon-alloc-heap"])
        .env("MIRIFLAGS", "-Zmiri-strict-provenance");
    run(miri)
}
