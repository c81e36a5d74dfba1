//! Makes one deliberate bad access to a pool block, for `cargo xtask valgrind` to run under
//! memcheck, which must report it when the pools are built with the `valgrind` feature. Built
//! without the feature, the same access goes unreported: the block lies inside a chunk that
//! memcheck sees as one plain allocation, which is what the feature's hooks are there to change.
//!
//! ```text
//! valgrind_bug use-after-free   reads a block after freeing it
//! valgrind_bug overrun          writes one byte past the size a block was asked for
//! ```
//!
//! Either way the program exits with success: only memcheck's report tells the bug.

use std::process::ExitCode;

use melon_alloc_core::{class_of, CLASS_SIZES};
use melon_alloc_heap::HeapPool;

/// Bytes asked for in the overrun, fewer than the block's size class holds: the byte past them
/// is inside the block's slot, where only the registered length can tell that it is not the
/// caller's.
const ASKED: usize = 100;

fn main() -> ExitCode {
    let bug = std::env::args().nth(1);
    let pool = HeapPool::new();
    match bug.as_deref() {
        Some("use-after-free") => use_after_free(&pool),
        Some("overrun") => overrun(&pool),
        _ => {
            eprintln!("usage: valgrind_bug use-after-free|overrun");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn use_after_free(pool: &HeapPool) {
    let block = pool.alloc(64).expect("a 64-byte block");
    // SAFETY: the block was just handed out and holds 64 bytes.
    unsafe { block.as_ptr().write_bytes(0xab, 64) };
    // SAFETY: the block came from `pool` and is in use; nothing but the deliberate bad read
    // below touches it again.
    unsafe { pool.free(block) };
    // SAFETY: none: reading a freed block is the bug this program exists to show. The pool
    // still holds the block's chunk, so the read itself cannot fault.
    let byte = unsafe { block.as_ptr().add(16).read_volatile() };
    println!("read {byte:#x} from a freed block");
}

fn overrun(pool: &HeapPool) {
    // Asking the pool for the block's usable size would give the caller the rest of its slot,
    // under memcheck too; the size class tells the same without asking.
    let class = class_of(ASKED).expect("a small size");
    assert!(CLASS_SIZES[class] > ASKED, "the overrun must stay inside the block's slot");
    let block = pool.alloc(ASKED).expect("a block");
    // SAFETY: none: writing past the size asked for is the bug this program exists to show. The
    // byte is inside the block's slot, so the write itself cannot fault or touch another block.
    unsafe { block.as_ptr().add(ASKED).write_volatile(1) };
    println!("wrote byte {ASKED} of a {ASKED}-byte block");
    // SAFETY: the block came from `pool` and is not used again.
    unsafe { pool.free(block) };
}
