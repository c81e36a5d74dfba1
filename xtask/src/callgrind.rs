//! Instruction counts under callgrind: the same for every run of one build with the same
//! arguments, whatever else the machine is doing.

use std::process::Command;

/// Where the measured program is copied to, so that it starts under the same name wherever the
/// workspace lies.
const MEASURED: &str = "melon-alloc-measured";

/// The instructions `command` runs, counted by callgrind (which it runs under).
///
/// The program runs from a copy at a fixed path, in `/`, with no environment but a fixed
/// `PATH`: what a process allocates as it starts (its arguments, its environment) shapes the
/// heap that glibc's `malloc` then works in, and so the instructions of the workloads that call
/// it. So measured, the count is the same in any checkout and any shell.
pub(crate) fn instructions(command: &Command) -> Result<u64, String> {
    let copy = std::env::temp_dir().join(MEASURED);
    std::fs::copy(command.get_program(), &copy)
        .map_err(|error| format!("cannot copy {:?}: {error}", command.get_program()))?;
    let mut counted = Command::new("/usr/bin/valgrind");
    counted
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(&copy)
        .args(command.get_args());
    let output = counted.output().map_err(|error| format!("could not run valgrind: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed under callgrind:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|line| line.split("I   refs:").nth(1)?.trim().replace(',', "").parse().ok())
        .ok_or_else(|| "no instruction count in callgrind's output".to_string())
}

/// The instructions of one operation of a program that runs `n` operations when given `n` as
/// its last argument: the count at `2n` less the count at `n`, over `n`, so that start-up and
/// tear-down cancel out. `extra` is what `2n` adds beyond `n` operations when the program rounds
/// `n` (to whole rounds, say); `None` for exactly `n`.
pub(crate) fn per_operation(
    program: impl Fn(u64) -> Command,
    n: u64,
    extra: Option<u64>,
) -> Result<f64, String> {
    let once = instructions(&program(n))?;
    let twice = instructions(&program(2 * n))?;
    Ok(twice.saturating_sub(once) as f64 / extra.unwrap_or(n) as f64)
}
