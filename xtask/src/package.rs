//! `cargo xtask package`: what `cargo publish` would upload, checked without uploading: every
//! published crate packaged and its package built on its own, in dependency order, against the
//! packages of the crates before it (`cargo publish --dry-run --workspace`).

use crate::{cargo, run};

pub(crate) fn run_task() -> Result<(), String> {
    let mut package = cargo();
    // Uncommitted changes are packaged as they are: the task checks the packages, not the tree.
    package.args(["publish", "--dry-run", "--workspace", "--allow-dirty"]);
    run(package)
}
