//! The global-allocator benchmark's child with mimalloc as the global allocator; see
//! `melon_alloc_bench::global`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    melon_alloc_bench::global::child_main()
}
