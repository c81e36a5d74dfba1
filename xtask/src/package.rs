//! `cargo xtask package`: what `cargo publish` would upload, checked without uploading: every
//! published crate packaged and its package built on its own, in dependency order, against the
//! packages of the crates before it (`cargo publish --dry-run --workspace`).

use std::path::PathBuf;

use crate::{cargo, run};

pub(crate) fn run_task() -> Result<(), String> {
    forget_earlier_packages()?;
    let mut package = cargo();
    // Uncommitted changes are packaged as they are: the task checks the packages, not the tree.
    package.args(["publish", "--dry-run", "--workspace", "--allow-dirty"]);
    run(package)
}

/// Removes what earlier dry runs left of this workspace's packages in cargo's home. A dry run
/// builds each crate against the packages before it, from a local registry under the target
/// directory; cargo unpacks those into its home by the registry's path and never again, so a
/// later run from the same path (a new clone in the same place) would build against the packages
/// of the earlier run instead of its own.
fn forget_earlier_packages() -> Result<(), String> {
    let home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").ok_or("neither CARGO_HOME nor HOME is set")?)
                .join(".cargo")
        }
    };
    for kind in ["src", "cache"] {
        let Ok(registries) = std::fs::read_dir(home.join("registry").join(kind)) else { continue };
        for registry in registries.flatten() {
            // crates.io's own registries hold nothing of this workspace.
            if registry.file_name().to_string_lossy().starts_with("index.crates.io") {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(registry.path()) else { continue };
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with("melon-alloc") {
                    continue;
                }
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|error| format!("removing {}: {error}", path.display()))?;
            }
        }
    }
    Ok(())
}
