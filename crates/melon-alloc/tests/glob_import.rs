//! A glob import of the facade leaves the language's `core` crate reachable by its name: the
//! engine's crate is re-exported as `engine`.

use melon_alloc::*;

#[test]
fn a_glob_import_keeps_core_the_language_crate() {
    // `core::ptr::null` is the language's; were the engine's crate re-exported as `core`, the
    // glob import would make this path ambiguous.
    let nothing: *const u8 = core::ptr::null();
    assert!(nothing.is_null());
    assert_eq!(engine::CHUNK_SIZE, 16 * 1024);
    let pool = HeapPool::new();
    let block = pool.alloc(64).unwrap();
    // SAFETY: the block came from a heap pool and is not used again.
    unsafe { free(block) };
    assert_eq!(pool.stats().live_blocks, 0);
}
