//! `cargo xtask semver`: the published crates' public API against that of the last release,
//! with cargo-semver-checks (installed when missing), so that a change a release would have to
//! call breaking is seen before the release is made. Releases are the tags `v1.2.3`; before the
//! first one there is nothing to compare with, and the task says so and passes.

use std::process::Command;

use crate::{cargo, root, run};

pub(crate) fn run_task() -> Result<(), String> {
    let Some(tag) = last_release(&release_tags()?) else {
        println!("semver: no release tag (v1.2.3) yet, so no earlier API to check against");
        return Ok(());
    };
    let mut version = cargo();
    version.args(["semver-checks", "--version"]);
    if !crate::succeeds(version) {
        let mut install = cargo();
        install.args(["install", "cargo-semver-checks", "--locked"]);
        run(install)?;
    }
    // The crates with `publish = false` (bench, C API, xtask) are left out by the tool itself.
    let mut check = cargo();
    check.args(["semver-checks", "check-release", "--workspace", "--baseline-rev", &tag]);
    run(check)
}

/// The repository's tags.
fn release_tags() -> Result<Vec<String>, String> {
    let output = Command::new("git")
        .current_dir(root())
        .args(["tag", "--list"])
        .output()
        .map_err(|error| format!("could not run `git tag`: {error}"))?;
    if !output.status.success() {
        return Err(format!("`git tag --list` failed with {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect())
}

/// The tag of the highest release among `tags`: `v` and three dot-separated numbers, compared
/// as numbers. Other tags (`v1.2.3-rc.1`, `nightly`) are not releases.
fn last_release(tags: &[String]) -> Option<String> {
    tags.iter()
        .filter_map(|tag| Some((release_version(tag)?, tag)))
        .max()
        .map(|(_, tag)| tag.clone())
}

/// The version of a release tag `vMAJOR.MINOR.PATCH`.
fn release_version(tag: &str) -> Option<[u64; 3]> {
    let mut parts = tag.strip_prefix('v')?.split('.');
    let mut version = [0; 3];
    for place in &mut version {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        *place = part.parse().ok()?;
    }
    parts.next().is_none().then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_last_release_is_the_highest_version_not_the_last_listed() {
        let listed = tags(&["v0.9.0", "v0.10.0", "v0.2.11", "nightly"]);
        assert_eq!(last_release(&listed).as_deref(), Some("v0.10.0"));
    }

    #[test]
    fn pre_releases_and_other_tags_are_not_releases() {
        let listed = tags(&["v1.0.0-rc.1", "v1.0", "1.0.0", "v1.0.0.0", "v1..0", "release"]);
        assert_eq!(last_release(&listed), None);
        assert_eq!(last_release(&[]), None);
        assert_eq!(release_version("v2.13.0"), Some([2, 13, 0]));
    }
}
