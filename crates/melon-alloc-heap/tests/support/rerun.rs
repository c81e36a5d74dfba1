//! Runs this test binary again, filtered to one test: how a test watches a run end in an
//! abort, which would end the test binary itself.

use std::os::unix::process::ExitStatusExt;

/// Runs the current test binary filtered to `test`, with `var=value` in its environment, and
/// returns the signal that ended it, if one did, and what it wrote to stderr.
pub(crate) fn rerun(test: &str, var: &str, value: &str) -> (Option<i32>, String) {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(var, value)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (child.status.signal(), String::from_utf8_lossy(&child.stderr).into_owned())
}
