//! The project's task runner: `cargo xtask <task>` runs what CI runs, the same way everywhere.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::OnceLock;

mod bench;
mod callgrind;
mod capi;
mod ci;
mod examples;
mod fuzz;
mod loom;
mod miri;
mod no_std;
mod package;
mod public_api;
mod semver;
mod strace;
mod valgrind;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run_task(&args[1..]),
        Some("bench-c") => capi::bench(),
        Some("ci") => ci::run_all(),
        Some("examples") => examples::run_task(),
        Some("fuzz") => fuzz::run_task(&args[1..]),
        Some("loom") => loom::run_task(),
        Some("miri") => miri::run_task(),
        Some("no-std") => no_std::run_task(),
        Some("package") => package::run_task(),
        Some("public-api") => public_api::run_task(&args[1..]),
        Some("semver") => semver::run_task(),
        Some("valgrind") => valgrind::run_task(),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>\n\n\
         tasks:\n  \
         bench   the benchmarks, then docs/benchmarks.md and docs/benchmarks.svg from the run;\n          \
         --quick, --report-only, --only heap,shm,hammer,resident,global,per_request,firmware, a criterion FILTER;\n          \
         --check: instructions per operation under callgrind and system calls per operation\n          \
         under strace against the committed baseline (--save-baseline writes it)\n  \
         bench-c the C API against glibc malloc, 64-byte blocks, and its instructions per pair\n  \
         ci      format check, clippy -D warnings, tests, rustdoc -D warnings, the public API,\n          \
         benches compiled, no-std and Miri\n  \
         examples the public items without an example, of which there must be none\n  \
         fuzz    the fuzz targets under libFuzzer and ASan (nightly); --time SECONDS in all, default 60\n  \
         loom    loom models of the locks, real (must pass) and broken (must fail)\n  \
         miri    the core and heap test suites under Miri (nightly)\n  \
         no-std  the core crate for thumbv7em-none-eabihf, and the test firmware run on QEMU\n  \
         package what `cargo publish` would upload, packaged and built, without uploading\n  \
         public-api the published crates' public API against docs/public-api/ (nightly);\n          \
         --bless rewrites those files\n  \
         semver  the published crates' API against the last release tag (cargo-semver-checks)\n  \
         valgrind the core and heap suites under memcheck, with the pools' client requests\n  \
         help    this text"
    );
}

/// The published crates, in dependency order: a crate comes after those it depends on.
const CRATES: [&str; 4] =
    ["melon-alloc-core", "melon-alloc-heap", "melon-alloc-shm", "melon-alloc"];

/// The workspace root, which every task runs in.
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The directory cargo builds into, as `cargo metadata` reports it: the one `CARGO_TARGET_DIR`
/// or a configuration's `build.target-dir` names, else `target` in the workspace root. Asked once
/// per run.
fn target_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut metadata = cargo();
        metadata.args(["metadata", "--format-version", "1", "--no-deps"]);
        let output =
            metadata.output().map_err(|error| format!("could not start {metadata:?}: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "{metadata:?} failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|error| format!("`cargo metadata` wrote no JSON: {error}"))?;
        metadata
            .get("target_directory")
            .and_then(serde_json::Value::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| "`cargo metadata` names no target directory".to_string())
    })
    .clone()
}

/// A `cargo` command run from the workspace root, with the cargo that runs the xtask.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// `cargo +toolchain` through the rustup proxy, from the workspace root. The variables that the
/// cargo running this task sets are removed: they would pin its own toolchain instead.
fn toolchain_cargo(toolchain: &str) -> Command {
    let mut command = Command::new("cargo");
    command
        .current_dir(root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .arg(format!("+{toolchain}"));
    command
}

/// Installs the standard library of `target` with rustup, if it is missing.
fn add_target(target: &str) -> Result<(), String> {
    let mut add = Command::new("rustup");
    add.args(["target", "add", target]);
    run(add)
}

/// Installs the nightly toolchain with rustup, if it is missing.
fn install_nightly() -> Result<(), String> {
    let output = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map_err(|error| format!("could not run `rustup toolchain list`: {error}"))?;
    if !output.status.success() {
        return Err(format!("`rustup toolchain list` failed with {}", output.status));
    }
    if String::from_utf8_lossy(&output.stdout).lines().any(|line| line.starts_with("nightly")) {
        return Ok(());
    }
    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
    run(install)
}

/// Whether a command runs and succeeds; its output is not shown, as only the answer matters.
fn succeeds(mut command: Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Which flags a command's compiler takes from the environment: those of rustc or of rustdoc.
#[derive(Clone, Copy)]
enum Flags {
    Rustc,
    Rustdoc,
}

/// Adds `flags` to those the environment gives `command`'s compiler. Cargo takes
/// `CARGO_ENCODED_RUSTFLAGS` (flags separated by 0x1f) over `RUSTFLAGS` whenever it is set, even
/// empty, and likewise for rustdoc: a flag put in the plain variable then never reaches the
/// build, and a task that depends on it (a `cfg` that builds its tests, `-D warnings`) passes
/// without doing its work. So the flags go where cargo reads them, after any already there.
fn add_flags(command: &mut Command, kind: Flags, flags: &[&str]) -> Result<(), String> {
    let (variable, all) = joined_flags(kind, flags, |name| std::env::var_os(name))?;
    command.env(variable, all);
    Ok(())
}

/// The variable [`add_flags`] sets and its value, with `env` reading the environment.
fn joined_flags(
    kind: Flags,
    flags: &[&str],
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(&'static str, String), String> {
    let (encoded, plain) = match kind {
        Flags::Rustc => ("CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"),
        Flags::Rustdoc => ("CARGO_ENCODED_RUSTDOCFLAGS", "RUSTDOCFLAGS"),
    };
    let (variable, separator) = match env(encoded) {
        Some(_) => (encoded, '\x1f'),
        None => (plain, ' '),
    };
    let mut all = match env(variable) {
        Some(all) => all.into_string().map_err(|_| format!("{variable} is not UTF-8"))?,
        None => String::new(),
    };
    for flag in flags {
        if !all.is_empty() {
            all.push(separator);
        }
        all.push_str(flag);
    }
    Ok((variable, all))
}

/// The path of `program` in the first directory of the caller's `PATH` that holds it as an
/// executable file, or an error that names the package to install, which `purpose` says the
/// task needs it for.
fn on_path(program: &str, purpose: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;

    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|directory| directory.join(program))
        .find(|path| {
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            format!(
                "`{program}` is not on PATH: install it (the `{program}` package of Debian and \
                 Ubuntu, `apt-get install {program}`) to {purpose}"
            )
        })
}

/// Runs a command, echoing it first, and fails the task if it fails.
fn run(mut command: Command) -> Result<(), String> {
    eprintln!("$ {command:?}");
    let status =
        command.status().map_err(|error| format!("could not start {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

#[cfg(test)]
mod flag_tests {
    use std::ffi::OsString;

    use super::{joined_flags, Flags};

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.into())
    }

    #[test]
    fn flags_go_where_cargo_reads_them() {
        let cfg = ["--cfg", "melon_loom"];
        let plain = joined_flags(Flags::Rustc, &cfg, env(&[])).unwrap();
        assert_eq!(plain, ("RUSTFLAGS", "--cfg melon_loom".to_string()));
        let added = joined_flags(Flags::Rustc, &cfg, env(&[("RUSTFLAGS", "-C debuginfo=0")]));
        assert_eq!(added.unwrap().1, "-C debuginfo=0 --cfg melon_loom");
        // Set but empty, the encoded variable still wins over the plain one.
        let both = [("CARGO_ENCODED_RUSTFLAGS", ""), ("RUSTFLAGS", "-C debuginfo=0")];
        let encoded = joined_flags(Flags::Rustc, &cfg, env(&both)).unwrap();
        assert_eq!(encoded, ("CARGO_ENCODED_RUSTFLAGS", "--cfg\x1fmelon_loom".to_string()));
        let docs = [("CARGO_ENCODED_RUSTDOCFLAGS", "-Zx")];
        let rustdoc = joined_flags(Flags::Rustdoc, &["-D", "warnings"], env(&docs)).unwrap();
        assert_eq!(rustdoc, ("CARGO_ENCODED_RUSTDOCFLAGS", "-Zx\x1f-D\x1fwarnings".to_string()));
    }
}
