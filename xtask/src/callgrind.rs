//! Instruction counts under callgrind: the same for every run of one build with the same
//! arguments, whatever else the machine is doing.

use std::process::Command;

/// The name the measured program is copied to, so that it starts under the same name wherever
/// the workspace lies.
const MEASURED: &str = "measured";

/// The instructions `command` runs, counted by callgrind (which it runs under).
///
/// The program runs from a copy at a path of the same length every time, in `/`, with no
/// environment but a fixed `PATH`: what a process allocates as it starts (its arguments, its
/// environment) shapes the heap that glibc's `malloc` then works in, and so the instructions of
/// the workloads that call it. So measured, the count is the same in any checkout and any
/// shell. The copy lies in a directory of this process's own, so that two checks at once do not
/// measure each other's programs.
pub(crate) fn instructions(command: &Command) -> Result<u64, String> {
    let directory = measuring_directory()?;
    let copy = directory.join(MEASURED);
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
    let output = counted.output().map_err(|error| format!("could not run valgrind: {error}"));
    let _ = std::fs::remove_dir_all(&directory);
    let output = output?;
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

/// A new directory for this process's measured copy: named by the process id, written with ten
/// digits so that the path's length does not depend on it.
fn measuring_directory() -> Result<std::path::PathBuf, String> {
    let directory =
        std::env::temp_dir().join(format!("melon-alloc-measured-{:010}", std::process::id()));
    std::fs::create_dir_all(&directory)
        .map_err(|error| format!("cannot make {}: {error}", directory.display()))?;
    Ok(directory)
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
