//! Makes one deliberate bad access to a pool block, for `cargo xtask valgrind` to run under
//! memcheck, which must report it when the pools are built with the `valgrind` feature. Built
//! without the feature, the same access goes unreported: the block lies inside a chunk that
//! memcheck sees as one plain allocation, which is what the feature's hooks are there to change.
//!
//! ```text
//! valgrind_bug use-after-free         reads a block after freeing it
//! valgrind_bug overrun                writes one byte past the size a block was asked for
//! valgrind_bug large-use-after-free   reads a large block after freeing it, its chunk cached
//! valgrind_bug large-overrun          writes one byte past the size a large block was asked for
//! valgrind_bug dropped-child          reads a block of a child pool after dropping the child
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
        Some("large-use-after-free") => large_use_after_free(&pool),
        Some("large-overrun") => large_overrun(&pool),
        Some("dropped-child") => dropped_child(&pool),
        _ => {
            eprintln!(
                "usage: valgrind_bug \
                 use-after-free|overrun|large-use-after-free|large-overrun|dropped-child"
            );
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

/// Bytes of the large block: more than a size class holds, less than the global source's
/// large-chunk cache keeps, and a length its source rounds up, so that its chunk is longer than
/// the block's engine asked for.
const LARGE: usize = 20_000;

fn large_use_after_free(pool: &HeapPool) {
    let block = pool.alloc(LARGE).expect("a large block");
    // SAFETY: the block was just handed out and holds `LARGE` bytes.
    unsafe { block.as_ptr().write_bytes(0xab, LARGE) };
    // SAFETY: the block came from `pool` and is in use; nothing but the deliberate bad read
    // below touches it again.
    unsafe { pool.free(block) };
    // SAFETY: none: reading a freed block is the bug this program exists to show. The global
    // source keeps the block's chunk in its cache, so the read itself cannot fault.
    let byte = unsafe { block.as_ptr().add(LARGE / 2).read_volatile() };
    println!("read {byte:#x} from a freed large block");
}

fn large_overrun(pool: &HeapPool) {
    let block = pool.alloc(LARGE).expect("a large block");
    // SAFETY: none: writing past the size asked for is the bug this program exists to show. The
    // source rounded the chunk's length up, so the byte is inside the chunk and cannot fault.
    unsafe { block.as_ptr().add(LARGE).write_volatile(1) };
    println!("wrote byte {LARGE} of a {LARGE}-byte block");
    // SAFETY: the block came from `pool` and is not used again.
    unsafe { pool.free(block) };
}

fn dropped_child(pool: &HeapPool) {
    // A block of the root's own keeps the root from giving its chunks back to the system.
    let kept = pool.alloc(64).expect("a block");
    let child = pool.child();
    let block = child.alloc(64).expect("a block of the child");
    // SAFETY: the block was just handed out and holds 64 bytes.
    unsafe { block.as_ptr().write_bytes(0xab, 64) };
    drop(child);
    // SAFETY: none: reading a block of a dropped pool is the bug this program exists to show.
    // The child's chunk went back to the global source, which keeps it, so the read itself
    // cannot fault.
    let byte = unsafe { block.as_ptr().add(16).read_volatile() };
    println!("read {byte:#x} from a block of a dropped child");
    // SAFETY: the block came from `pool` and is not used again.
    unsafe { pool.free(kept) };
}
