//! `cargo xtask valgrind`: the core and heap test suites under memcheck, built with the
//! `valgrind` feature so that the pools report every block they hand out and take back; then
//! deliberate bugs in pool blocks (a use after free and an overrun, of a small block and of a
//! large one, and a read of a block of a dropped child pool), which memcheck must report, and the
//! same bugs built without the feature, which it cannot see.

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::{cargo, root, run};

/// A release build with debug information, in a directory of its own so that it does not
/// rebuild the ordinary release artifacts.
const PROFILE: [&str; 4] = [
    "--config",
    "profile.valgrind.inherits=\"release\"",
    "--config",
    "profile.valgrind.debug=true",
];

/// Tests that cannot pass under memcheck by design: they corrupt a free list on purpose, by
/// writing into freed blocks, to show that `check()` finds it.
const SKIPPED: [&str; 1] = ["check_finds_a_corrupted_free_list"];

/// The deliberate bugs of the `valgrind_bug` example and what memcheck must say about each.
const BUGS: [(&str, &str); 5] = [
    ("use-after-free", "Invalid read"),
    ("overrun", "Invalid write"),
    ("large-use-after-free", "Invalid read"),
    ("large-overrun", "Invalid write"),
    ("dropped-child", "Invalid read"),
];

pub(crate) fn run_task() -> Result<(), String> {
    let started = Instant::now();
    let version = Command::new("valgrind").arg("--version").output().map_err(|error| {
        format!("valgrind is needed (apt-get install valgrind), and could not start: {error}")
    })?;
    eprintln!("using {}", String::from_utf8_lossy(&version.stdout).trim());

    let mut tests = cargo();
    tests.args(PROFILE).args(["test", "--profile", "valgrind", "--tests", "--no-run"]).args([
        "-p",
        "melon-alloc-core",
        "-p",
        "melon-alloc-heap",
        "--features",
        "melon-alloc-core/valgrind,melon-alloc-heap/valgrind",
    ]);
    let binaries = executables(tests)?;
    if binaries.is_empty() {
        return Err("cargo built no test binaries".into());
    }
    let mut failed = Vec::new();
    for binary in &binaries {
        let mut test = memcheck();
        test.arg(binary);
        for name in SKIPPED {
            test.args(["--skip", name]);
        }
        if let Err(error) = run(test) {
            eprintln!("xtask: {error}");
            failed.push(binary.clone());
        }
    }
    if !failed.is_empty() {
        return Err(format!("memcheck failed on {}", failed.join(", ")));
    }
    eprintln!(
        "{} test binaries pass under memcheck (skipped: {})",
        binaries.len(),
        SKIPPED.join(", ")
    );

    let example = bug_example(true)?;
    for (bug, expected) in BUGS {
        let output = under_memcheck(&example, bug)?;
        let report = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(1) || !report.contains(expected) {
            return Err(format!(
                "memcheck did not report the {bug} with the `valgrind` feature: expected \
                 \"{expected}\" and exit code 1, got {}:\n{report}",
                output.status
            ));
        }
        eprintln!("with the feature, memcheck reports the {bug}:\n{}", excerpt(&report, expected));
    }

    // Without the feature, pool blocks are plain bytes of a chunk to memcheck: the same bugs
    // should go unreported, which shows the hooks are what makes them visible. Only said, not
    // enforced: memcheck seeing more than expected is no failure of the pools.
    let example = bug_example(false)?;
    for (bug, _) in BUGS {
        let output = under_memcheck(&example, bug)?;
        let report = String::from_utf8_lossy(&output.stderr);
        let errors = error_count(&report).map_or("an unknown number of".into(), |n| n.to_string());
        eprintln!(
            "without the feature, memcheck reports {errors} errors for the {bug} (expected 0)"
        );
    }
    crate::capi::valgrind()?;
    eprintln!("valgrind task done in {:.0?}", started.elapsed());
    Ok(())
}

/// Memcheck, failing the run on any error. Leaks are not checked: the test harness keeps
/// allocations in statics until exit, which memcheck would count, and the pools' own leaks are
/// the business of their tests' `stats()` assertions.
fn memcheck() -> Command {
    let mut command = Command::new("valgrind");
    let mut suppressions = std::ffi::OsString::from("--suppressions=");
    suppressions.push(root().join("xtask").join("valgrind.supp"));
    command.current_dir(root()).args(["--error-exitcode=1", "--leak-check=no"]).arg(suppressions);
    command
}

/// Builds the `valgrind_bug` example, with or without the `valgrind` feature, and returns its
/// path.
fn bug_example(feature: bool) -> Result<String, String> {
    let mut build = cargo();
    build.args(PROFILE).args([
        "build",
        "--profile",
        "valgrind",
        "-p",
        "melon-alloc-heap",
        "--example",
        "valgrind_bug",
    ]);
    if feature {
        build.args(["--features", "valgrind"]);
    }
    let mut found = executables(build)?;
    match (found.pop(), found.is_empty()) {
        (Some(example), true) => Ok(example),
        _ => Err("expected one `valgrind_bug` executable from cargo".into()),
    }
}

/// Runs the example under memcheck with one bug, keeping memcheck's report.
fn under_memcheck(example: &str, bug: &str) -> Result<Output, String> {
    let mut command = memcheck();
    command.arg(example).arg(bug).stdin(Stdio::null());
    eprintln!("$ {command:?}");
    command.output().map_err(|error| format!("could not start {command:?}: {error}"))
}

/// Runs a cargo build with JSON messages and returns the executables it made, in order.
fn executables(mut command: Command) -> Result<Vec<String>, String> {
    command.arg("--message-format=json").stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("$ {command:?}");
    let output =
        command.output().map_err(|error| format!("could not start {command:?}: {error}"))?;
    if !output.status.success() {
        return Err(format!("{command:?} failed with {}", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.lines().filter_map(executable).collect())
}

/// The `"executable"` field of one JSON message from cargo, when it is a path.
fn executable(message: &str) -> Option<String> {
    const KEY: &str = "\"executable\":\"";
    let rest = &message[message.find(KEY)? + KEY.len()..];
    let mut path = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(path),
            // Paths rarely hold characters JSON escapes; these are the ones a path can.
            '\\' => match chars.next()? {
                'n' => path.push('\n'),
                't' => path.push('\t'),
                escaped => path.push(escaped),
            },
            c => path.push(c),
        }
    }
    None
}

/// The gist of memcheck's first report holding `phrase`: that line, the frames in the example,
/// and what memcheck knows of the address.
fn excerpt(report: &str, phrase: &str) -> String {
    let lines = report.lines().skip_while(|line| !line.contains(phrase));
    let error = lines.take_while(|line| !line.trim_end().ends_with("=="));
    let gist: Vec<&str> = error
        .enumerate()
        .filter(|(index, line)| {
            *index == 0 || line.contains("valgrind_bug.rs") || line.contains("Address ")
        })
        .map(|(_, line)| line)
        .collect();
    gist.join("\n")
}

/// The count in memcheck's closing "ERROR SUMMARY: N errors" line.
fn error_count(report: &str) -> Option<u64> {
    let line = report.lines().rev().find(|line| line.contains("ERROR SUMMARY:"))?;
    let after = &line[line.find("ERROR SUMMARY:")? + "ERROR SUMMARY:".len()..];
    after.split_whitespace().next()?.parse().ok()
}
