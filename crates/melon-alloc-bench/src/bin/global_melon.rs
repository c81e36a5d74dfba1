//! The global-allocator benchmark's child with melon's `LockedHeapPool` over `OsSource` as the
//! global allocator; see `melon_alloc_bench::global`.

use melon_alloc::{LockedHeapPool, OsSource};

#[global_allocator]
static GLOBAL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), None);

fn main() -> std::process::ExitCode {
    melon_alloc_bench::global::child_main()
}
