//! `cargo xtask ci`: every check CI runs, in CI's order, cheapest first.

use crate::{cargo, run};

pub(crate) fn run_all() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run(clippy)?;

    outside_the_workspace()?;

    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run(test)?;

    // The core again with 4 KiB chunks: its own tests and doctests, alone, since the heap and
    // shared-memory crates refuse that feature.
    let mut small_chunks = cargo();
    small_chunks.args(["test", "-p", "melon-alloc-core", "--features", "small-chunks"]);
    run(small_chunks)?;

    refused_small_chunks()?;

    // The core as firmware builds it, without its default features: the tests of what they
    // leave out, such as a `GlobalAlloc` layout aligned to a chunk, refused without
    // `chunk-aligned`.
    let mut bare = cargo();
    bare.args(["test", "-p", "melon-alloc-core", "--no-default-features", "--lib", "--tests"]);
    run(bare)?;

    // The lints of those two builds of the core, whose constants differ (one page a chunk).
    for features in [&["--no-default-features"][..], &["--features", "small-chunks"]] {
        let mut clippy = cargo();
        clippy.args(["clippy", "-p", "melon-alloc-core", "--all-targets"]).args(features);
        clippy.args(["--", "-D", "warnings"]);
        run(clippy)?;
    }

    crash_tests()?;

    let mut release_test = cargo();
    release_test.args(["test", "--workspace", "--release", "--lib", "--tests"]);
    run(release_test)?;

    readme_commands()?;
    crate::examples::run_task()?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"]);
    crate::add_flags(&mut doc, crate::Flags::Rustdoc, &["-D", "warnings"])?;
    run(doc)?;
    crate::public_api::run_task(&[])?;

    other_platform()?;
    minimum_rust()?;

    let mut benches = cargo();
    benches.args(["bench", "--workspace", "--no-run"]);
    run(benches)?;

    // Instructions per operation under callgrind, against the committed baseline.
    crate::bench::run_task(&["--check".to_string()])?;
    crate::package::run_task()?;
    crate::semver::run_task()?;
    crate::no_std::run_task()?;
    crate::loom::run_task()?;
    crate::valgrind::run_task()?;
    crate::fuzz::run_task(&["--time".to_string(), "60".to_string()])?;
    crate::miri::run_task()?;
    nightly_doctests()
}

/// The heap and shared-memory crates refuse to build with the core's `small-chunks` feature, as
/// the core's docs say: their chunks and layouts are 16 KiB. (The shared-memory crate's build
/// stops at the heap crate it depends on, which refuses first.)
fn refused_small_chunks() -> Result<(), String> {
    for krate in ["melon-alloc-heap", "melon-alloc-shm"] {
        let mut check = cargo();
        check.args(["check", "-p", krate, "--features", "melon-alloc-core/small-chunks"]);
        eprintln!("$ {check:?} (must fail)");
        let output =
            check.output().map_err(|error| format!("could not start {check:?}: {error}"))?;
        let said = String::from_utf8_lossy(&output.stderr);
        let expected = "needs 16 KiB chunks: melon-alloc-core's `small-chunks` feature";
        if output.status.success() || !said.contains(expected) {
            return Err(format!("{check:?} was not refused with `{expected}`:\n{said}"));
        }
    }
    Ok(())
}

/// Runs every `cargo run` command of the README's first `sh` block, as a reader would type it:
/// each example the README offers must run to its end and exit with status 0.
fn readme_commands() -> Result<(), String> {
    let path = crate::root().join("README.md");
    let readme = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let commands = cargo_run_commands(&readme);
    if commands.is_empty() {
        return Err("README.md's first `sh` block has no `cargo run` command".into());
    }
    for args in commands {
        let mut command = cargo();
        command.args(args);
        run(command)?;
    }
    Ok(())
}

/// The arguments after `cargo` of each `cargo run` line of the first `sh` block in `readme`,
/// without the line's comment.
fn cargo_run_commands(readme: &str) -> Vec<Vec<&str>> {
    readme
        .lines()
        .skip_while(|line| line.trim() != "```sh")
        .skip(1)
        .take_while(|line| line.trim() != "```")
        .map(|line| line.split('#').next().unwrap_or_default().split_whitespace())
        .filter_map(|mut words| (words.next() == Some("cargo")).then(|| words.collect::<Vec<_>>()))
        .filter(|args| args.first() == Some(&"run"))
        .collect()
}

/// Formatting and lints of the crates outside the workspace, which `--all` and `--workspace`
/// leave out: the fuzz targets, and the test firmware for its microcontroller.
fn outside_the_workspace() -> Result<(), String> {
    let manifest = |dir: &str| crate::root().join(dir).join("Cargo.toml");
    for dir in ["fuzz", "firmware"] {
        let mut fmt = cargo();
        fmt.args(["fmt", "--check", "--manifest-path"]).arg(manifest(dir));
        run(fmt)?;
    }
    let mut fuzz = cargo();
    fuzz.args(["clippy", "--all-targets", "--manifest-path"]).arg(manifest("fuzz"));
    fuzz.args(["--", "-D", "warnings"]);
    run(fuzz)?;
    crate::add_target(crate::no_std::TARGET)?;
    let mut firmware = cargo();
    firmware.args(["clippy", "--target", crate::no_std::TARGET, "--manifest-path"]);
    firmware.arg(manifest("firmware")).args(["--", "-D", "warnings"]);
    run(firmware)
}

/// The fork tests again, with the fail points that kill a process inside each locked operation
/// of the shared pool: a cfg rather than a feature, so that no crate depending on the pool can
/// turn them on. The flag is added to any the environment sets, and the build kept in a target
/// directory of its own, since a change of flags rebuilds every crate.
fn crash_tests() -> Result<(), String> {
    let mut crash_test = cargo();
    crash_test
        .args(["test", "-p", "melon-alloc-shm", "--test", "fork", "--test", "named_fork"])
        .args(["--test", "child_pools_under_attack"])
        .env("CARGO_TARGET_DIR", crate::root().join("target").join("failpoints"));
    crate::add_flags(&mut crash_test, crate::Flags::Rustc, &["--cfg", "melon_failpoints"])?;
    run(crash_test)
}

/// The doctests again on nightly, whose rustdoc checks the error code a `compile_fail` example
/// names: stable rustdoc only checks that it fails to compile, for whatever reason.
fn nightly_doctests() -> Result<(), String> {
    let mut doctests = crate::toolchain_cargo("nightly");
    doctests.args(["test", "--doc"]).args([
        "-p",
        "melon-alloc-core",
        "-p",
        "melon-alloc-heap",
        "-p",
        "melon-alloc-shm",
    ]);
    run(doctests)
}

/// A target other than Linux, where the heap pools build and the shared pool is an empty crate.
const OTHER_PLATFORM: &str = "x86_64-apple-darwin";

/// The library crates checked for [`OTHER_PLATFORM`], warnings denied: what the facade's
/// "Platforms" section promises there.
fn other_platform() -> Result<(), String> {
    crate::add_target(OTHER_PLATFORM)?;
    let mut check = cargo();
    check
        .args(["check", "--target", OTHER_PLATFORM])
        .args(["-p", "melon-alloc", "-p", "melon-alloc-heap", "-p", "melon-alloc-core"])
        .args(["-p", "melon-alloc-shm"]);
    crate::add_flags(&mut check, crate::Flags::Rustc, &["-D", "warnings"])?;
    run(check)
}

/// The library crates checked with the oldest Rust the workspace says it supports
/// (`rust-version` in the workspace's `Cargo.toml`), installed first if missing. Only the
/// libraries: the dev tools (loom, criterion) need newer releases.
fn minimum_rust() -> Result<(), String> {
    let manifest = std::fs::read_to_string(crate::root().join("Cargo.toml"))
        .map_err(|error| format!("cannot read the workspace's Cargo.toml: {error}"))?;
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|value| value.trim().trim_matches('"').to_string())
        .ok_or("no rust-version in the workspace's Cargo.toml")?;
    let mut install = std::process::Command::new("rustup");
    install.args(["toolchain", "install", &version, "--profile", "minimal"]);
    run(install)?;
    let mut check = crate::toolchain_cargo(&version);
    check.args(["check", "-p", "melon-alloc-core", "-p", "melon-alloc-heap"]).args([
        "-p",
        "melon-alloc-shm",
        "-p",
        "melon-alloc",
        "-p",
        "melon-alloc-capi",
    ]);
    run(check)
}

#[cfg(test)]
mod tests {
    use super::cargo_run_commands;

    #[test]
    fn the_readme_commands_are_its_first_sh_blocks_cargo_runs() {
        let readme = "# x\n```rust\ncargo run --example no\n```\n```sh\n\
                      cargo run --release --example tour   # a tour\n\
                      cargo xtask ci  # not a run\n\
                      \n\
                      cargo run --example b\n\
                      ```\n```sh\ncargo run --example later\n```\n";
        assert_eq!(
            cargo_run_commands(readme),
            [vec!["run", "--release", "--example", "tour"], vec!["run", "--example", "b"]]
        );
    }

    #[test]
    fn the_readme_offers_its_examples() {
        let readme = std::fs::read_to_string(crate::root().join("README.md")).unwrap();
        let examples: Vec<_> = cargo_run_commands(&readme)
            .into_iter()
            .filter_map(|args| args.last().copied())
            .collect();
        assert!(examples.contains(&"tour") && examples.contains(&"fork_workers"), "{examples:?}");
    }
}
