//! Instruction counts under callgrind: the same for every run of one build with the same
//! arguments, whatever else the machine is doing.

use std::process::Command;

/// The instructions `command` runs, counted by callgrind (which it runs under).
pub(crate) fn instructions(command: &Command) -> Result<u64, String> {
    let mut counted = Command::new("valgrind");
    counted
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(command.get_program())
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
