//! The C programs in `tests/c/`, compiled with the system C compiler against the static library
//! of this build (debug or release, whichever `cargo test` built), run, and checked: each must
//! exit with status 0 and print what it prints when every check passes. The header is also
//! compiled as C++, into a program that runs.
//!
//! The compilers are `gcc` and `g++`, or `$CC` and `$CXX` when set.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Libraries a Rust static library needs on Linux, as `rustc --print native-static-libs` says.
const NATIVE_LIBS: [&str; 5] = ["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s"];

/// Warnings the programs compile without, as errors.
const C_FLAGS: [&str; 7] = ["-std=c99", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The static library of the profile this test was built with, built first if it has to be.
///
/// The test executable lives in `<target>/<profile>/deps/`, and the library that Cargo built
/// with this crate in `<target>/<profile>/`. Cargo builds every crate type of the library in one
/// go before it runs the tests, so the static library is normally there and as fresh as the
/// `rlib` beside it. If it is missing or older, this asks Cargo to build it.
fn static_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = env::current_exe().expect("the test executable's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("<target>/<profile>/deps");
        let lib = profile_dir.join("libmelon_alloc_capi.a");
        let modified = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok();
        if let (Some(lib_time), Some(rlib_time)) =
            (modified(&lib), modified(&profile_dir.join("libmelon_alloc_capi.rlib")))
        {
            if lib_time >= rlib_time {
                return lib;
            }
        }
        let profile = profile_dir.file_name().and_then(|name| name.to_str()).expect("profile");
        let above = profile_dir.parent().expect("the target directory");
        // `<target>/<triple>/<profile>` when built for an explicit target.
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
            (above, None)
        } else {
            let triple = above.file_name().and_then(|name| name.to_str()).map(str::to_owned);
            (above.parent().expect("the target directory"), triple)
        };
        let mut build = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        build.args(["build", "--lib", "-p", "melon-alloc-capi", "--target-dir"]).arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        if let Some(triple) = triple {
            build.args(["--target", &triple]);
        }
        let output = build.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "{build:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(lib.exists(), "{} is missing after {build:?}", lib.display());
        lib
    })
}

/// Compiles `tests/c/<source>` into an executable with `compiler` and `flags`, linked with the
/// static library, and returns its path.
fn compile(compiler: &str, source: &str, flags: &[&str]) -> PathBuf {
    let stem = Path::new(source).file_stem().and_then(|stem| stem.to_str()).expect("a name");
    compile_linked(compiler, source, flags, stem, &[static_lib().as_os_str().to_owned()])
}

/// Compiles `tests/c/<source>` into the executable `name`, linked with `link`, and returns its
/// path.
fn compile_linked(
    compiler: &str,
    source: &str,
    flags: &[&str],
    name: &str,
    link: &[OsString],
) -> PathBuf {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&out_dir).expect("a directory for the programs");
    let exe = out_dir.join(name);
    let tests = crate_dir().join("tests").join("c");
    let mut command = Command::new(compiler);
    command
        .args(flags)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(&tests)
        .arg(tests.join(source))
        .args(link)
        .args(NATIVE_LIBS)
        .arg("-o")
        .arg(&exe);
    let output = command.output().unwrap_or_else(|error| panic!("{compiler} runs: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

fn compile_c(source: &str, extra: &[&str]) -> PathBuf {
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".into());
    let flags: Vec<&str> = C_FLAGS.iter().chain(extra).copied().collect();
    compile(&cc, source, &flags)
}

/// Runs a program and checks that it succeeds and prints exactly `expected`.
fn run(exe: &Path, args: &[&str], expected: &str) -> Output {
    let output = Command::new(exe).args(args).output().expect("the program runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} {args:?} failed with {}:\nstdout:\n{stdout}\nstderr:\n{}",
        exe.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, expected, "{}", exe.display());
    output
}

#[test]
fn melons_documented_example_unchanged() {
    // The example declares `argc` and `argv` without using them.
    let exe = compile_c("example.c", &["-Wno-unused-parameter"]);
    run(&exe, &[], "hello\n");
}

/// Compiles `tests/c/<source>` into `name` linked against the shared library, which lies next to
/// the static one.
fn compile_against_shared(source: &str, extra: &[&str], name: &str) -> PathBuf {
    let dir = static_lib().parent().expect("the profile directory");
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(dir);
    let mut search = OsString::from("-L");
    search.push(dir);
    let link = [search, "-lmelon_alloc_capi".into(), rpath];
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".into());
    let flags: Vec<&str> = C_FLAGS.iter().chain(extra).copied().collect();
    compile_linked(&cc, source, &flags, name, &link)
}

#[test]
fn example_links_against_the_shared_library() {
    // The shared library exports Melon's functions alone.
    let exe = compile_against_shared("example.c", &["-Wno-unused-parameter"], "example_shared");
    run(&exe, &[], "hello\n");
    let dir = static_lib().parent().expect("the profile directory");
    let shared = dir.join("libmelon_alloc_capi.so");
    let listing = Command::new("nm")
        .args(["-D", "--defined-only", "--format=just-symbols"])
        .arg(&shared)
        .output()
        .expect("nm runs");
    assert!(listing.status.success(), "nm {}", shared.display());
    let mut exported: Vec<&str> =
        std::str::from_utf8(&listing.stdout).expect("symbol names").lines().collect();
    exported.sort_unstable();
    assert_eq!(
        exported,
        [
            "mln_alloc_available_capacity",
            "mln_alloc_c",
            "mln_alloc_destroy",
            "mln_alloc_free",
            "mln_alloc_hand_off",
            "mln_alloc_init",
            "mln_alloc_m",
            "mln_alloc_re",
            "mln_alloc_reclaim_orphans",
            "mln_alloc_shm_init",
        ]
    );
}

#[test]
fn the_readme_example_runs() {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).expect("the README");
    let code = readme
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a C example in the README");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&dir).expect("a directory for the programs");
    let source = dir.join("readme.c");
    std::fs::write(&source, code).expect("the example written out");
    let exe = compile_c(source.to_str().expect("a UTF-8 path"), &[]);
    // The child's first chunk, 16 KiB, counts against the root's 1 MiB.
    run(&exe, &[], &format!("{} bytes left\n", (1 << 20) - (16 << 10)));
}

#[test]
fn every_function() {
    run(&compile_c("functions.c", &[]), &[], "functions: ok\n");
}

#[test]
fn size_classes() {
    run(&compile_c("classes.c", &[]), &[], "classes: ok\n");
}

#[test]
fn limits() {
    run(&compile_c("limits.c", &[]), &[], "limits: ok\n");
}

#[test]
fn cascade_three_deep() {
    run(&compile_c("cascade.c", &[]), &[], "cascade: ok\n");
}

#[test]
fn what_melons_modules_do_with_pools() {
    run(&compile_c("modules.c", &[]), &[], "modules: ok\n");
    run(&compile_against_shared("modules.c", &[], "modules_shared"), &[], "modules: ok\n");
}

#[test]
fn shared_pool_across_fork() {
    run(&compile_c("shm_fork.c", &[]), &[], "shm_fork: ok\n");
}

#[test]
fn a_process_past_the_owner_table_gets_null_until_a_place_frees() {
    run(&compile_c("owner_table.c", &[]), &[], "owner_table: ok\n");
}

#[test]
fn a_forked_process_that_closed_the_pools_descriptor_gets_null() {
    run(&compile_c("closed_descriptors.c", &[]), &[], "closed_descriptors: ok\n");
}

#[test]
fn a_free_by_another_process_of_a_block_of_a_pool_made_from_a_shared_pool_does_nothing() {
    run(&compile_c("other_process_free.c", &[]), &[], "other_process_free: ok\n");
}

#[test]
fn a_block_handed_off_is_freed_by_another_process_and_its_chunk_comes_back() {
    run(&compile_c("hand_off.c", &[]), &[], "hand_off: ok\n");
}

#[test]
fn a_free_finds_each_kind_of_block_with_one_shared_pool_or_two() {
    run(&compile_c("two_shared_pools.c", &[]), &[], "two_shared_pools: ok\n");
}

#[test]
fn with_lock_callbacks_the_free_of_a_handed_off_block_takes_no_lock() {
    run(&compile_c("hand_off_callbacks.c", &[]), &[], "hand_off_callbacks: ok\n");
}

#[test]
fn a_worker_forked_with_a_full_descriptor_table_gets_null_until_it_has_one() {
    run(&compile_c("full_descriptor_table.c", &[]), &[], "full_descriptor_table: ok\n");
}

#[test]
fn fork_while_other_threads_are_inside_the_library() {
    run(&compile_c("fork_threads.c", &[]), &[], "fork_threads: ok\n");
}

#[test]
fn random_churn() {
    run(&compile_c("churn.c", &[]), &[], "churn: ok\n");
}

#[test]
fn header_compiles_as_c89() {
    // The later `-std` wins over the one in `C_FLAGS`.
    run(&compile_c("c89.c", &["-std=c89"]), &[], "c89: ok\n");
}

/// GNU C89 had variadic macros before C99, and Melon's one-argument `mln_alloc_init` with them.
#[test]
fn header_gives_gnu89_the_one_argument_form() {
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".into());
    // As in `melons_documented_example_unchanged`, but GNU C89, whose variadic macros the
    // header keeps `-pedantic` from flagging as an extension.
    let flags =
        ["-std=gnu89", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wno-unused-parameter"];
    let lib = [static_lib().as_os_str().to_owned()];
    let exe = compile_linked(&cc, "example.c", &flags, "example_gnu89", &lib);
    run(&exe, &[], "hello\n");
}

#[test]
fn header_compiles_as_cxx() {
    let cxx = env::var("CXX").unwrap_or_else(|_| "g++".into());
    let flags = ["-std=c++11", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"];
    run(&compile(&cxx, "cxx_header.cpp", &flags), &[], "cxx_header: ok\n");
}

/// GNU C++ had variadic macros before C++11, and Melon's one-argument `mln_alloc_init` with them,
/// which `-pedantic` must not turn into an error.
#[test]
fn header_gives_gnu_cxx98_the_one_argument_form() {
    let cxx = env::var("CXX").unwrap_or_else(|_| "g++".into());
    let flags = ["-std=gnu++98", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"];
    run(&compile(&cxx, "cxx98.cpp", &flags), &[], "cxx98: ok\n");
}

#[test]
fn benchmark_program_runs() {
    // A small scale: this only shows that the program builds and runs; `cargo xtask bench-c`
    // times it against the release library.
    let exe = compile_c("bench.c", &[]);
    let output = Command::new(&exe).arg("1").output().expect("the benchmark runs");
    assert!(output.status.success(), "{} failed with {}", exe.display(), output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("alloc+free ping-pong"), "{stdout}");
    assert!(stdout.contains("fill 1024, then free all"), "{stdout}");
}
