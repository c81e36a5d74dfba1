//! `cargo xtask no-std`: builds the core crate for a microcontroller target, proving the engine
//! needs no operating system and no allocator of its own, then builds the test firmware in
//! `firmware/` and runs it on an emulated Cortex-M4 (QEMU's `mps2-an386` board), which passes
//! only if the firmware exits 0 after saying that every check held.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo, root, run};

/// A Cortex-M4F target: no OS, no `std`, 32-bit, with compare-and-swap atomics.
const TARGET: &str = "thumbv7em-none-eabihf";

/// QEMU's board with a Cortex-M4, 4 MiB of code memory at 0 and 4 MiB of data memory at
/// `0x2000_0000` (the firmware's `memory.x`).
const BOARD: &str = "mps2-an386";

/// How long the firmware may run: it needs well under a second; a hang fails the task.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// The firmware's last line on a good run.
const ALL_PASSED: &str = "all checks passed";

pub(crate) fn run_task() -> Result<(), String> {
    let mut target = Command::new("rustup");
    target.args(["target", "add", TARGET]);
    run(target)?;

    let mut core = cargo();
    core.args(["build", "-p", "melon-alloc-core", "--no-default-features", "--target", TARGET]);
    run(core)?;
    let mut core_api = cargo();
    core_api.args(["build", "-p", "melon-alloc-core", "--target", TARGET]);
    run(core_api)?;

    let firmware = root().join("firmware");
    let mut build = cargo();
    // The firmware's own `.cargo/config.toml` (the linker script) applies from its directory.
    build.current_dir(&firmware).args(["build", "--release", "--target", TARGET]);
    run(build)?;
    let elf = firmware.join("target").join(TARGET).join("release").join("melon-alloc-firmware");
    emulate(&elf)
}

/// Runs the firmware at `elf` on the emulated board, with semihosting for its output and exit
/// code, and fails unless it exits 0 in time having said that every check held.
fn emulate(elf: &std::path::Path) -> Result<(), String> {
    let mut qemu = Command::new("qemu-system-arm");
    qemu.args(["-M", BOARD, "-nographic", "-semihosting-config", "enable=on,target=native"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!("$ {qemu:?}");
    let mut child = qemu.spawn().map_err(|error| {
        format!(
            "could not start qemu-system-arm ({error}); on Debian: apt-get install qemu-system-arm"
        )
    })?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the firmware ran past {TIME_LIMIT:?} on {BOARD}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut output).map_err(|error| error.to_string())?;
    }
    print!("{output}");
    if status.success() && output.lines().any(|line| line == ALL_PASSED) {
        Ok(())
    } else {
        Err(format!("the firmware failed on {BOARD} ({status})"))
    }
}
