//! `cargo xtask miri`: the core and heap test suites, the shared pool's allocator over an
//! ordinary buffer, and the C API's unit tests, under Miri, on the nightly toolchain; the
//! soundness tests of blocks reached in part under Tree Borrows as well.

use crate::run;

/// The heap crate's test targets that run under Miri: all but `global_allocator`, whose pool maps
/// its memory with `mmap` and aligns it by unmapping part of a mapping, which Miri takes for a
/// partial deallocation (the `OsSource` unit tests are left out under `cfg(miri)` for the same
/// reason, and `collections` puts its locked pools over `GlobalSource` there). Under `cfg(miri)`
/// they take fewer blocks, sizes and map entries, and check a sample of each block's bytes, since
/// Miri interprets every allocation and byte access; normal runs keep the full counts. The tests
/// that start the test binary again (the aborts of `collection_limits` and `out_of_memory`) are
/// not built under Miri. [`HEAP_BESIDE`] runs under Miri as well, beside these.
const HEAP_TARGETS: &[&str] = &[
    "api",
    "bad_input",
    "child_lifecycle",
    "classes",
    "collection_limits",
    "collections",
    "global_source",
    "limits",
    "model",
    "out_of_memory",
    "soundness",
    "typed",
];

/// The heap test target that takes Miri longest (minutes), run beside the rest on the second
/// core, in a target directory of its own so that the two cargo runs do not wait for each
/// other's lock.
const HEAP_BESIDE: &str = "sources";

pub(crate) fn run_task() -> Result<(), String> {
    let mut components = std::process::Command::new("rustup");
    components.args(["component", "add", "miri", "rust-src", "--toolchain", "nightly"]);
    run(components)?;
    // Miri's standard library, built once before two Miri runs could both set out to build it.
    let mut setup = crate::toolchain_cargo("nightly");
    setup.args(["miri", "setup"]);
    run(setup)?;

    let mut beside = miri();
    beside
        .args(["-p", "melon-alloc-heap", "--test", HEAP_BESIDE])
        .env("CARGO_TARGET_DIR", crate::root().join("target").join("miri-beside"));
    eprintln!("$ {beside:?} &");
    let mut beside = beside
        .spawn()
        .map_err(|error| format!("could not start Miri on {HEAP_BESIDE}: {error}"))?;

    let rest = the_rest();
    // Waited for whatever the rest did, so that no Miri run outlives the task.
    let beside = beside.wait().map_err(|error| format!("Miri on {HEAP_BESIDE}: {error}"))?;
    rest?;
    if beside.success() {
        Ok(())
    } else {
        Err(format!("Miri on the heap's `{HEAP_BESIDE}` tests failed with {beside}"))
    }
}

/// The core's tests, the heap's [`HEAP_TARGETS`], the shared pool's in a buffer, and the C API's
/// unit tests.
fn the_rest() -> Result<(), String> {
    let mut core = miri();
    core.args(["-p", "melon-alloc-core"]);
    run(core)?;

    let mut heap = miri();
    heap.args(["-p", "melon-alloc-heap", "--lib"]);
    for target in HEAP_TARGETS {
        heap.args(["--test", target]);
    }
    run(heap)?;

    // The shared pool's mapping, lock and processes are system calls Miri cannot make; its
    // allocator, undo log and recovery run over a heap buffer in the `in_a_buffer` tests.
    let mut shm = miri();
    shm.args(["-p", "melon-alloc-shm", "--lib", "--", "in_a_buffer"]);
    run(shm)?;

    // The C functions called from Rust, over heap pools: the tests that start the test binary
    // again, to see a panic abort, are not built under Miri. Its integration tests compile and
    // run C programs, which Miri cannot.
    let mut capi = miri();
    capi.args(["-p", "melon-alloc-capi", "--lib"]);
    run(capi)?;

    // The tests of what safe code does with a block it reaches only in part (a collection's
    // buffer, boxed and grown again), under Tree Borrows too, whose rules for such a pointer
    // differ from Stacked Borrows'.
    let mut tree_borrows = miri();
    tree_borrows
        .env("MIRIFLAGS", format!("{PROVENANCE} -Zmiri-tree-borrows"))
        .args(["-p", "melon-alloc-core", "-p", "melon-alloc-heap"])
        .args(["--test", "locked", "--test", "soundness"]);
    run(tree_borrows)
}

/// `cargo +nightly miri test` from the workspace root. Provenance is permissive: a free finds its
/// chunk's header through the provenance the engine exposed when it took the chunk, since the
/// caller's pointer may reach its block alone.
fn miri() -> std::process::Command {
    // The rustup proxy, not the cargo running this task, understands `+nightly`.
    let mut miri = crate::toolchain_cargo("nightly");
    miri.args(["miri", "test"]).env("MIRIFLAGS", PROVENANCE);
    miri
}

/// Miri's flag for the engine's exposed provenance (see [`miri`]).
const PROVENANCE: &str = "-Zmiri-permissive-provenance";
