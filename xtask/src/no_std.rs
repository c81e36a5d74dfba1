//! `cargo xtask no-std`: builds the core crate for a microcontroller target, proving the engine
//! needs no operating system and no allocator of its own, then builds the test firmware in
//! `firmware/` and runs it on an emulated Cortex-M4 (QEMU's `mps2-an386` board), with the core's
//! 16 KiB chunks and again with its `small-chunks` feature; each run passes only if the
//! firmware exits 0 after saying that every check held. It also checks that a target without
//! compare-and-swap atomics is refused with the core's own message, and that the allocator's
//! code in firmware is no larger than talc's ([`code_within_talcs`]).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo, root, run};

/// A Cortex-M4F target: no OS, no `std`, 32-bit, with compare-and-swap atomics.
pub(crate) const TARGET: &str = "thumbv7em-none-eabihf";

/// A Cortex-M0 target: atomic loads and stores, but no compare-and-swap, which the core needs.
const TARGET_WITHOUT_CAS: &str = "thumbv6m-none-eabi";

/// What the core's build says on a target without compare-and-swap atomics.
const NO_CAS_MESSAGE: &str = "melon-alloc-core needs compare-and-swap atomics";

/// QEMU's board with a Cortex-M4, 4 MiB of code memory at 0 and 4 MiB of data memory at
/// `0x2000_0000` (the firmware's `memory.x`).
const BOARD: &str = "mps2-an386";

/// How long the firmware may run: it needs well under a second; a hang fails the task.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// The firmware's last line on a good run.
const ALL_PASSED: &str = "all checks passed";

pub(crate) fn run_task() -> Result<(), String> {
    crate::add_target(TARGET)?;

    let mut core = cargo();
    core.args(["build", "-p", "melon-alloc-core", "--no-default-features", "--target", TARGET]);
    run(core)?;
    let mut core_api = cargo();
    core_api.args(["build", "-p", "melon-alloc-core", "--target", TARGET]);
    run(core_api)?;
    refused_without_cas()?;

    // The test firmware with the core's 16 KiB chunks, then with its 4 KiB ones, then serving
    // layouts aligned to a chunk with chunks of their own.
    for features in [None, Some("small-chunks"), Some("chunk-aligned")] {
        let mut build = cargo();
        // The firmware's own `.cargo/config.toml` (the linker script) applies from its
        // directory.
        build.current_dir(root().join("firmware"));
        build.args(["build", "--release", "--target", TARGET]);
        build.arg("--target-dir").arg(firmware_target_dir());
        if let Some(features) = features {
            build.args(["--features", features]);
        }
        run(build)?;
        emulate(&elf("melon-alloc-firmware"), ALL_PASSED)?;
    }
    code_within_talcs()
}

/// The `.text` bytes of the `footprint` program, which only builds `alloc`'s collections
/// through its global allocator, built with `feature` (none for melon's pool). The allocator's
/// code is that over the build with `bump`, a bump allocator that never frees, as the benchmark
/// page counts it.
fn footprint_text(feature: &str) -> Result<u64, String> {
    let mut build = cargo();
    build.current_dir(root().join("firmware"));
    build.args(["build", "--release", "--target", TARGET, "--bin", "footprint"]);
    build.arg("--target-dir").arg(firmware_target_dir());
    if !feature.is_empty() {
        build.args(["--features", feature]);
    }
    run(build)?;
    text_bytes(&elf("footprint"))
}

/// Fails when melon's pool, with 16 KiB chunks or 4 KiB ones, puts more code into firmware than
/// talc does: the code-size target of the benchmark page, checked on every run of the task so
/// that a change that grows the firmware build shows before a benchmark run would.
fn code_within_talcs() -> Result<(), String> {
    let bump = footprint_text("bump")?;
    let code = |feature: &str| {
        let text = footprint_text(feature)?;
        text.checked_sub(bump)
            .ok_or_else(|| format!("the bump allocator's build is larger than {feature:?}'s"))
    };
    let talc = code("talc")?;
    for (feature, name) in [("", "melon"), ("small-chunks", SMALL_CHUNKS_PEER)] {
        let melon = code(feature)?;
        eprintln!("allocator code in firmware: {name} {melon} bytes, talc {talc} bytes");
        if melon > talc {
            return Err(format!(
                "{name}'s allocator code in firmware is {melon} bytes, more than talc's {talc}: \
                 keep what firmware does not need out of bare-metal builds \
                 (`cfg(target_os = \"none\")`)"
            ));
        }
    }
    Ok(())
}

/// Builds the core for a target without compare-and-swap atomics, which must fail with the
/// core's own message rather than only the compiler's word on a missing method.
fn refused_without_cas() -> Result<(), String> {
    crate::add_target(TARGET_WITHOUT_CAS)?;
    let mut build = cargo();
    build.args(["build", "-p", "melon-alloc-core", "--no-default-features"]);
    build.args(["--target", TARGET_WITHOUT_CAS]);
    eprintln!("$ {build:?} (must fail)");
    let output = build.output().map_err(|error| format!("could not start {build:?}: {error}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || !stderr.contains(NO_CAS_MESSAGE) {
        return Err(format!(
            "the core's build for {TARGET_WITHOUT_CAS} should fail with \"{NO_CAS_MESSAGE}\"; it \
             ended with {} and said:\n{stderr}",
            output.status
        ));
    }
    Ok(())
}

/// The peers of the firmware comparison: the `compare` binary's feature for each (none is
/// melon's pool), and the name its table row gets. The last, a bump allocator that never frees,
/// is the baseline the others' code size is measured against.
pub(crate) const FIRMWARE_PEERS: [(&str, &str); 6] = [
    ("", "melon"),
    ("small-chunks", SMALL_CHUNKS_PEER),
    ("llff", "embedded-alloc LLFF"),
    ("tlsf", "embedded-alloc TLSF"),
    ("talc", "talc"),
    ("bump", "bump"),
];

/// The name of melon's row with the core's `small-chunks` feature.
pub(crate) const SMALL_CHUNKS_PEER: &str = "melon, 4 KiB chunks";

/// One peer's build and run of the `compare` firmware.
pub(crate) struct Compared {
    pub(crate) peer: &'static str,
    /// Bytes of the `.text` section of the peer's build of `footprint`.
    pub(crate) text_bytes: u64,
    /// The figures the run printed (`name value` lines, see `firmware/src/compare/main.rs`).
    pub(crate) figures: Vec<(String, u64)>,
}

/// Builds the `compare` firmware once per peer and runs each on the emulated board.
pub(crate) fn compare() -> Result<Vec<Compared>, String> {
    crate::add_target(TARGET)?;
    let mut rows = Vec::new();
    for (feature, name) in FIRMWARE_PEERS {
        let mut build = cargo();
        build.current_dir(root().join("firmware"));
        build.args(["build", "--release", "--target", TARGET, "--bin", "compare"]);
        build.args(["--bin", "footprint"]);
        build.arg("--target-dir").arg(firmware_target_dir());
        if !feature.is_empty() {
            build.args(["--features", feature]);
        }
        run(build)?;
        // The code size from the program that only allocates through its global allocator;
        // the figures from the one that measures.
        let text = text_bytes(&elf("footprint"))?;
        let output = emulate(&elf("compare"), "done")?;
        let figures = output
            .lines()
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect();
        rows.push(Compared { peer: name, text_bytes: text, figures });
    }
    Ok(rows)
}

/// Where the firmware is built: named on every build, so that `CARGO_TARGET_DIR` cannot send
/// the build elsewhere while [`elf`] looks here.
fn firmware_target_dir() -> std::path::PathBuf {
    root().join("firmware").join("target")
}

/// The release build of the firmware's binary `name`.
fn elf(name: &str) -> std::path::PathBuf {
    firmware_target_dir().join(TARGET).join("release").join(name)
}

/// The size of the `.text` section of `elf`, from binutils' `size`.
fn text_bytes(elf: &std::path::Path) -> Result<u64, String> {
    let output = Command::new("size")
        .args(["-A", "-d"])
        .arg(elf)
        .output()
        .map_err(|error| format!("could not run size: {error}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(".text")).then(|| fields.next()?.parse().ok())?
        })
        .ok_or_else(|| format!("no .text section in {}", elf.display()))
}

/// Runs the firmware at `elf` on the emulated board, with semihosting for its output and exit
/// code, and returns its output; fails unless it exits 0 in time with `last` among its lines.
fn emulate(elf: &std::path::Path, last: &str) -> Result<String, String> {
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
    // Read as it comes, so that a firmware that prints much cannot fill the pipe and stall.
    let mut stdout = child.stdout.take().ok_or("qemu's output was not piped")?;
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        stdout.read_to_string(&mut output).map(|_| output)
    });
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
    let output = reader
        .join()
        .map_err(|_| "the reader of qemu's output panicked".to_string())?
        .map_err(|error| error.to_string())?;
    print!("{output}");
    if status.success() && output.lines().any(|line| line == last) {
        Ok(output)
    } else {
        Err(format!("the firmware failed on {BOARD} ({status})"))
    }
}
