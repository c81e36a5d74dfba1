//! Instruction counts under callgrind, the same for every run of one build with the same
//! arguments whatever else the machine is doing, and the clean start that the system-call counts
//! of `strace.rs` share with them.
//!
//! `valgrind` is looked for on the caller's `PATH`, and the task fails, naming the package to
//! install, when it is not there. The measured program itself runs with no environment but a
//! fixed `PATH` (see [`Measured`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The name the measured program is copied to, so that it starts under the same name wherever
/// the workspace lies.
const MEASURED: &str = "measured";

/// A directory of this process's own, removed when dropped, that programs are measured from.
///
/// The program runs from a copy at a path of the same length every time, with no environment
/// but a fixed `PATH`, in `/`: what a process allocates as it starts (its arguments, its
/// environment) shapes the heap that glibc's `malloc` then works in, and so the instructions of
/// the workloads that call it, and the system calls that grow or shrink that heap. So measured,
/// a count is the same in any checkout and any shell. The directory is this process's own, so
/// that two checks at once do not measure each other's programs.
pub(crate) struct Measured {
    directory: PathBuf,
}

impl Measured {
    /// A new directory, named by the process id, written with ten digits so that the path's
    /// length does not depend on it.
    pub(crate) fn new() -> Result<Self, String> {
        let directory =
            std::env::temp_dir().join(format!("melon-alloc-measured-{:010}", std::process::id()));
        std::fs::create_dir_all(&directory)
            .map_err(|error| format!("cannot make {}: {error}", directory.display()))?;
        Ok(Self { directory })
    }

    /// A path in the directory, for a tool's report.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.directory.join(name)
    }

    /// Runs `command` under `tool`, given `tool_args` before the program: from the copy, with
    /// the cleared environment. Fails unless the program, and so the tool, succeeds.
    pub(crate) fn run(
        &self,
        tool: &Path,
        tool_args: &[&OsStr],
        command: &Command,
    ) -> Result<Output, String> {
        let copy = self.path(MEASURED);
        std::fs::copy(command.get_program(), &copy)
            .map_err(|error| format!("cannot copy {:?}: {error}", command.get_program()))?;
        let output = Command::new(tool)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .args(tool_args)
            .arg(&copy)
            .args(command.get_args())
            .output()
            .map_err(|error| format!("could not run {}: {error}", tool.display()))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{command:?} failed under {}:\n{}",
                tool.display(),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// The instructions `command` runs, counted by callgrind (which it runs under, as
/// [`Measured::run`] runs it).
pub(crate) fn instructions(command: &Command) -> Result<u64, String> {
    let valgrind = crate::on_path("valgrind", "count instructions under callgrind")?;
    let tool_args = ["--tool=callgrind", "--callgrind-out-file=/dev/null"].map(OsStr::new);
    let output = Measured::new()?.run(&valgrind, &tool_args, command)?;
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|line| line.split("I   refs:").nth(1)?.trim().replace(',', "").parse().ok())
        .ok_or_else(|| "no instruction count in callgrind's output".to_string())
}

/// The instructions of one operation of `workload`, a program that runs `n` operations when
/// given `n` as its last argument: the count at `2n` less the count at `n`, over `n`, so that
/// start-up and tear-down cancel out. `extra` is what `2n` adds beyond `n` operations when the
/// program rounds `n` (to whole rounds, say); `None` for exactly `n`.
///
/// A doubled run that costs no more than the single one is an error that names the workload:
/// its operations are not being done, or not being counted.
pub(crate) fn per_operation(
    workload: &str,
    program: impl Fn(u64) -> Command,
    n: u64,
    extra: Option<u64>,
) -> Result<f64, String> {
    let once = instructions(&program(n))?;
    let twice = instructions(&program(2 * n))?;
    if twice <= once {
        return Err(format!(
            "{workload}: {twice} instructions at N = {} against {once} at N = {n}, no more for \
             twice the operations, so the workload does not do the work its N asks for",
            2 * n
        ));
    }
    Ok((twice - once) as f64 / extra.unwrap_or(n) as f64)
}
