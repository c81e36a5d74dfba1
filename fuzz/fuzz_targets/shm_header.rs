//! Writes the fuzzer's bytes into the header, undo log, allocator state and page descriptors of
//! a shared pool, through its descriptor, as a process dying half way through a write or a buggy
//! one would leave them; then attaches to the pool from a second handle, as the next process
//! would, and runs operations on it.
//!
//! A directory of names is there too, and the operations look names up and insert one.
//!
//! Errors are fine: a refused attach, a refused free, an allocation that finds no room, a
//! `check()` that reports the damage. What must never happen is a write outside the mapping (the
//! pages around it are not mapped, so it would crash the process), a block handed out past the
//! pool's end, a panic, or a hang.

#![no_main]

use core::ptr::NonNull;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use melon_alloc_shm::ShmPool;

/// Capacity of the pool: the smallest few pages of metadata, so that random offsets hit them
/// often.
const CAPACITY: usize = 256 << 10;

/// Bytes the writes land in: the metadata pages of a pool of [`CAPACITY`] (header, undo log,
/// allocator state, page descriptors, in-use bitmap) and a page of data after them.
const TARGET: usize = 3 * 4096;

/// The built-in lock's cache line, which the writes leave alone: a lock word that names a live
/// process as its holder (this one, whose identity the line's counter hands out) is a lock held
/// for good, and the target would wait for it rather than find anything.
const LOCK_LINE: core::ops::Range<usize> = 64..128;

/// Sizes the operations ask for: small classes, a slab of its own, page runs.
const SIZES: [usize; 8] = [16, 64, 100, 3000, 5000, 9000, 20_000, 70_000];

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let made = ShmPool::memfd("fuzz", CAPACITY).unwrap();
    // Some slabs, runs and free-list links for the damage to land on.
    let setup: Vec<_> =
        [64, 64, 64, 3000, 20_000, 100].iter().filter_map(|&size| made.alloc(size)).collect();
    // SAFETY: the block came from `made` and is not used again.
    unsafe { made.try_free(setup[1]) }.unwrap();
    // A directory of names, whose bitmaps in the state the damage may land on too.
    made.insert_named("a", 7u64).unwrap();
    made.insert_named("b", [1u8; 40]).unwrap();

    let file = std::fs::File::from(made.as_fd().try_clone_to_owned().unwrap());
    let mut rest = rest;
    for _ in 0..count % 32 {
        let [low, high, len, tail @ ..] = rest else { break };
        let offset = usize::from(u16::from_le_bytes([*low, *high])) % TARGET;
        let len = usize::from(len % 8 + 1).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        let end = offset + bytes.len();
        if end > LOCK_LINE.start && offset < LOCK_LINE.end {
            continue;
        }
        file.write_all_at(bytes, offset as u64).unwrap();
    }

    let fd = made.as_fd().try_clone_to_owned().unwrap();
    // SAFETY: the descriptor holds a pool of this library's version, damaged on purpose: what
    // attaching to it does is the subject of this target.
    let Ok(shm) = (unsafe { ShmPool::attach(fd) }) else { return };
    // A damaged pool must not make an operation wait for ever.
    shm.set_lock_timeout(Some(Duration::from_secs(1)));
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
    for &byte in rest.iter().take(64) {
        match byte % 4 {
            0 | 1 => {
                let size = SIZES[usize::from(byte / 4) % SIZES.len()];
                if let Some(block) = shm.alloc(size) {
                    let offset = shm.offset_of(block).expect("a block outside the pool");
                    assert!(offset + size <= CAPACITY, "{size} bytes at {offset} past the end");
                    // Writing the whole block is what its user would do: it must be mapped.
                    // SAFETY: the block lies in the mapping (checked above), `size` bytes long.
                    unsafe { block.as_ptr().write_bytes(byte, size) };
                    live.push((block, size));
                }
            }
            2 if !live.is_empty() => {
                let (block, _) = live.swap_remove(usize::from(byte) % live.len());
                // SAFETY: the block came from `shm` and is freed once; a damaged pool may refuse.
                let _ = unsafe { shm.try_free(block) };
            }
            3 if byte & 0x80 != 0 => {
                // A damaged directory may answer anything but a value outside the pool.
                let name = if byte & 0x40 != 0 { "a" } else { "b" };
                if let Ok(Some(value)) = shm.named::<u64>(name) {
                    let offset = shm.offset_of(std::ptr::NonNull::from(value).cast());
                    assert!(offset.is_some_and(|at| at + 8 <= CAPACITY), "a value outside");
                }
                let _ = shm.insert_named("c", u32::from(byte));
            }
            _ => {
                let _ = shm.check();
                let _ = shm.stats();
            }
        }
    }
});
