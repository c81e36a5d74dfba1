//! System-call counts under `strace -f -c`: the time a program spends in the kernel is
//! invisible to callgrind, so a change that adds a system call to an operation (a `getpid`, an
//! `madvise` in a pool's drop) shows here instead. A workload in its steady state makes no
//! system call at all, so that the count at `2N` equals the count at `N`; where glibc's `malloc`
//! takes part, the count can move by a few calls from run to run (see [`per_operation`]).
//!
//! `strace` is looked for on the caller's `PATH`, and the task fails, naming the package to
//! install, when it is not there. The measured program starts as it does under callgrind (see
//! [`Measured`]).

use std::ffi::OsStr;
use std::process::Command;

use crate::callgrind::Measured;

/// The name of `strace`'s summary in the measuring directory.
const SUMMARY: &str = "system-calls";

/// The system calls `command` makes, its children's included, counted by `strace`.
pub(crate) fn system_calls(command: &Command) -> Result<u64, String> {
    let strace = crate::on_path("strace", "count system calls")?;
    let measured = Measured::new()?;
    let summary = measured.path(SUMMARY);
    let tool_args = [OsStr::new("-f"), OsStr::new("-c"), OsStr::new("-o"), summary.as_os_str()];
    measured.run(&strace, &tool_args, command)?;
    let summary = std::fs::read_to_string(&summary)
        .map_err(|error| format!("cannot read strace's summary of {command:?}: {error}"))?;
    total(&summary)
        .ok_or_else(|| format!("no total in strace's summary of {command:?}:\n{summary}"))
}

/// The calls of the `total` line of a summary of `strace -c`: its fourth column, as the errors
/// column before `total` is empty when no call failed.
fn total(summary: &str) -> Option<u64> {
    let line = summary.lines().rfind(|line| line.trim_end().ends_with(" total"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The system calls of one operation of `workload`, counted as
/// [`callgrind::per_operation`](crate::callgrind::per_operation) counts its instructions: the
/// calls at `2n` less those at `n`, over `n` (or over `extra`). A steady workload makes as many
/// calls at `2n` as at `n`, so 0 per operation is the usual answer.
///
/// Unlike the instructions under callgrind, a count can move by a few calls from run to run:
/// glibc's `malloc` grows and trims its heap with `brk` at points that depend on where the
/// kernel's address-space randomization put the heap, so a workload whose large blocks go to
/// `malloc` (`heap_realloc_grow`, the rings) makes up to four calls more or fewer in one run than
/// in the next. That is some 0.0002 calls per operation at the `n` of the check, and a doubled
/// run can come out with fewer calls than the single one: the difference is then taken as 0,
/// since only more calls per operation than the baseline fail the check.
pub(crate) fn per_operation(
    program: impl Fn(u64) -> Command,
    n: u64,
    extra: Option<u64>,
) -> Result<f64, String> {
    let once = system_calls(&program(n))?;
    let twice = system_calls(&program(2 * n))?;
    Ok(twice.saturating_sub(once) as f64 / extra.unwrap_or(n) as f64)
}

#[cfg(test)]
mod tests {
    use super::total;

    #[test]
    fn the_total_is_the_calls_of_the_last_line() {
        let summary = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 28.57    0.000010          10         1           execve
 71.43    0.000025           1        25         4 mmap
------ ----------- ----------- --------- --------- ----------------
100.00    0.000035           1        72         4 total
";
        assert_eq!(total(summary), Some(72));
        let no_errors = summary.replace("        72         4 total", "        72           total");
        assert_eq!(total(&no_errors), Some(72));
        assert_eq!(total("strace: exec: No such file or directory\n"), None);
    }
}
