//! The C programs of `crates/melon-alloc-capi/tests/c`, outside `cargo test`: under memcheck
//! (the C half of `cargo xtask valgrind`), and the C benchmark (`cargo xtask bench-c`), each
//! compiled against the static library of `melon-alloc-capi`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{cargo, root, run, target_dir};

/// Libraries a Rust static library needs on Linux, as `rustc --print native-static-libs` says.
const NATIVE_LIBS: [&str; 5] = ["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s"];

/// A C program of the test suite: its source, extra compiler flags, and its arguments under
/// memcheck (the churn runs fewer operations there, as memcheck is some fifty times slower).
struct Program {
    source: &'static str,
    flags: &'static [&'static str],
    args: &'static [&'static str],
}

/// Every program of `tests/c` but the benchmarks (`bench.c`, `pairs.c`) and the two that fork a
/// process for each place of the owner table and more (`fork_threads.c`, `owner_table.c`), which
/// memcheck, following every child, would make take minutes; `cargo test` runs those two.
const PROGRAMS: [Program; 10] = [
    // Melon's documented example declares `argc` and `argv` without using them.
    Program { source: "example.c", flags: &["-Wno-unused-parameter"], args: &[] },
    // The header as C89 sees it; the later `-std` wins over the default.
    Program { source: "c89.c", flags: &["-std=c89"], args: &[] },
    Program { source: "functions.c", flags: &[], args: &[] },
    Program { source: "classes.c", flags: &[], args: &[] },
    Program { source: "limits.c", flags: &[], args: &[] },
    Program { source: "cascade.c", flags: &[], args: &[] },
    Program { source: "shm_fork.c", flags: &[], args: &[] },
    Program { source: "churn.c", flags: &[], args: &["30000"] },
    Program { source: "modules.c", flags: &[], args: &[] },
    Program { source: "cxx_header.cpp", flags: &[], args: &[] },
];

/// The release profile with debug information, in a directory of its own (as the Rust half of
/// `cargo xtask valgrind` builds it), so that memcheck's reports name lines and the ordinary
/// release library is left alone.
const VALGRIND_PROFILE: [&str; 6] = [
    "--config",
    "profile.valgrind.inherits=\"release\"",
    "--config",
    "profile.valgrind.debug=true",
    "--profile",
    "valgrind",
];

fn crate_dir() -> PathBuf {
    root().join("crates").join("melon-alloc-capi")
}

/// Builds the static library with extra cargo arguments and returns its path, in `profile_dir`.
fn build_lib(args: &[&str], profile_dir: &str) -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args(["build", "--lib", "-p", "melon-alloc-capi"]).args(args);
    run(build)?;
    let lib = target_dir()?.join(profile_dir).join("libmelon_alloc_capi.a");
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!("{} is missing after the build", lib.display()))
    }
}

/// Compiles a program of `tests/c` against `lib` into `out_dir`, and returns the executable.
fn compile(source: &str, flags: &[&str], lib: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|error| format!("could not create {}: {error}", out_dir.display()))?;
    let tests = crate_dir().join("tests").join("c");
    let stem = Path::new(source).file_stem().and_then(|stem| stem.to_str()).unwrap_or(source);
    let exe = out_dir.join(stem);
    let cxx = source.ends_with(".cpp");
    let compiler = if cxx {
        env::var("CXX").unwrap_or_else(|_| "g++".into())
    } else {
        env::var("CC").unwrap_or_else(|_| "gcc".into())
    };
    let mut command = Command::new(compiler);
    command
        .arg(if cxx { "-std=c++11" } else { "-std=c99" })
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(flags)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(tests.join(source))
        .arg(lib)
        .args(NATIVE_LIBS)
        .arg("-o")
        .arg(&exe);
    run(command)?;
    Ok(exe)
}

/// Runs every C program of the test suite under memcheck, against a library built with the
/// pools' memcheck client requests, so that memcheck also sees accesses to freed or unallocated
/// bytes inside pool chunks. Fails on any error or leak, in the program or in a child it forks.
pub(crate) fn valgrind() -> Result<(), String> {
    let started = Instant::now();
    let mut args = VALGRIND_PROFILE.to_vec();
    args.extend(["--features", "valgrind"]);
    let lib = build_lib(&args, "valgrind")?;
    let out_dir = target_dir()?.join("valgrind").join("capi");
    let mut failed = Vec::new();
    for program in &PROGRAMS {
        let exe = compile(program.source, program.flags, &lib, &out_dir)?;
        let mut memcheck = Command::new("valgrind");
        memcheck
            .args([
                "--quiet",
                "--error-exitcode=1",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect,possible",
                "--trace-children=yes",
            ])
            .arg(&exe)
            .args(program.args);
        if let Err(error) = run(memcheck) {
            eprintln!("xtask: {error}");
            failed.push(program.source);
        }
    }
    if !failed.is_empty() {
        return Err(format!("memcheck failed on {}", failed.join(", ")));
    }
    eprintln!("{} C programs pass under memcheck in {:.0?}", PROGRAMS.len(), started.elapsed());
    Ok(())
}

/// Pairs of `pairs.c` at the smaller of its two runs under callgrind.
const PAIRS: u64 = 100_000;

/// Melon's own pool in the same loop as `pairs.c` on this project's benchmark machine, in
/// instructions per pair (quoted: Melon is not built here).
const MELON_INSTRUCTIONS: f64 = 98.8;

/// `cargo xtask bench-c`: the C benchmark against the library as C programs link it (the
/// `c-release` profile), compiled with `-O2`: its times against glibc, then the instructions of
/// an alloc+free pair under callgrind.
pub(crate) fn bench() -> Result<(), String> {
    let lib = build_lib(&["--profile", "c-release"], "c-release")?;
    let out_dir = target_dir()?.join("c-release").join("capi");
    let exe = compile("bench.c", &[], &lib, &out_dir)?;
    run(Command::new(exe))?;
    let per_pair = pair_instructions(&lib, &out_dir)?;
    println!(
        "instructions per alloc+free pair of 64 bytes, loop included (callgrind, pairs.c): \
         {per_pair:.1}; Melon's pool: {MELON_INSTRUCTIONS} (quoted), ratio {:.2}",
        per_pair / MELON_INSTRUCTIONS
    );
    Ok(())
}

/// `pairs.c` built against `lib` in `out_dir`: the program as it runs a count of pairs, and the
/// pairs that its doubled run adds.
fn pairs(
    lib: &Path,
    out_dir: &Path,
    mode: &'static str,
) -> Result<(impl Fn(u64) -> Command, u64), String> {
    let pairs = compile("pairs.c", &[], lib, out_dir)?;
    let program = move |n: u64| {
        let mut command = Command::new(&pairs);
        command.args([n.to_string().as_str(), mode]);
        command
    };
    // The extra pairs of the doubled run: N ping-pong pairs and the whole rounds of 1024.
    let extra = PAIRS + (2 * PAIRS / 1024 - PAIRS / 1024) * 1024;
    Ok((program, extra))
}

/// The instructions of one alloc+free pair through the C API in `pairs.c`, built against `lib`
/// in `out_dir`.
fn pair_instructions(lib: &Path, out_dir: &Path) -> Result<f64, String> {
    let (program, extra) = pairs(lib, out_dir, "")?;
    crate::callgrind::per_operation("pairs.c", program, PAIRS, Some(extra))
}

/// The instructions and the system calls of one alloc+free pair through the C API, built as C
/// programs link it, under the name `workload`, in `pairs.c`'s `mode` (empty: heap pools only):
/// what `cargo xtask bench --check` holds against its baseline.
pub(crate) fn c_pair_counts(workload: &str, mode: &'static str) -> Result<(f64, f64), String> {
    let lib = build_lib(&["--profile", "c-release"], "c-release")?;
    let out_dir = target_dir()?.join("c-release").join("capi");
    let (program, extra) = pairs(&lib, &out_dir, mode)?;
    let instructions = crate::callgrind::per_operation(workload, &program, PAIRS, Some(extra))?;
    let system_calls = crate::strace::per_operation(&program, PAIRS, Some(extra))?;
    Ok((instructions, system_calls))
}
