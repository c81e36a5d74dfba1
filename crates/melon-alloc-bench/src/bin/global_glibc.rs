//! The global-allocator benchmark's child with glibc's `malloc` (std's `System`) as the global
//! allocator; see `melon_alloc_bench::global`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    melon_alloc_bench::global::child_main()
}
