//! `cargo xtask miri`: the core and heap test suites, and the shared pool's allocator over an
//! ordinary buffer, under Miri, on the nightly toolchain.

use crate::run;

/// The heap crate's test targets that run under Miri: all but `global_allocator`, whose pool maps
/// its memory with `mmap` and aligns it by unmapping part of a mapping, which Miri takes for a
/// partial deallocation (the `OsSource` unit tests are left out under `cfg(miri)` for the same
/// reason, and `collections` puts its locked pools over `GlobalSource` there). Under `cfg(miri)`
/// they take fewer blocks, sizes and map entries, and check a sample of each block's bytes, since
/// Miri interprets every allocation and byte access; normal runs keep the full counts. The abort
/// test of `collection_limits`, which starts the test binary again, is not built under Miri.
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
    "soundness",
    "typed",
];

pub(crate) fn run_task() -> Result<(), String> {
    let mut components = std::process::Command::new("rustup");
    components.args(["component", "add", "miri", "rust-src", "--toolchain", "nightly"]);
    run(components)?;

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
    run(shm)
}

/// `cargo +nightly miri test` from the workspace root. Provenance is permissive: a free finds its
/// chunk's header through the provenance the engine exposed when it took the chunk, since the
/// caller's pointer may reach its block alone.
fn miri() -> std::process::Command {
    // The rustup proxy, not the cargo running this task, understands `+nightly`.
    let mut miri = crate::toolchain_cargo("nightly");
    miri.args(["miri", "test"]).env("MIRIFLAGS", "-Zmiri-permissive-provenance");
    miri
}
