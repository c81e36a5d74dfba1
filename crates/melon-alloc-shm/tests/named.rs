//! Typed values and the directory of names of a shared pool, in one process: [`ShmBox`],
//! [`ShmOffset`] and [`ShmPool::get`] with every offset they must refuse; the directory's
//! insertions, lookups and removals, with every name, type and state they must refuse and the
//! open addressing of names that share a slot; [`ShmMutex`] between threads. The cases that need
//! several processes are in `tests/named_fork.rs`.

use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use melon_alloc_shm::{ShmBox, ShmCheckError, ShmError, ShmMutex, ShmOffset, ShmPool, ShmSafe};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// Bytes of the directory's block of entries, which the first insertion allocates for good.
const DIRECTORY_BYTES: usize = 32 * KIB;

/// A pool with room for every case here.
fn pool() -> ShmPool {
    ShmPool::new(2 * MIB).unwrap()
}

/// Makes the pool's directory, with a name inserted and removed again, and returns the bytes
/// available then: what the pool comes back to once every later name and box is gone.
fn with_directory(shm: &ShmPool) -> usize {
    let before = shm.available();
    shm.insert_named("made", 0u8).unwrap();
    // SAFETY: nothing refers to the value.
    assert!(unsafe { shm.remove_named::<u8>("made") }.unwrap());
    let after = shm.available();
    assert_eq!(before - after, DIRECTORY_BYTES, "the directory's block of entries");
    assert_eq!(shm.name_count().unwrap(), 0);
    shm.check().unwrap();
    after
}

/// What a refused call must leave as it was: the bytes free, the names, the blocks in use.
fn figures(shm: &ShmPool) -> (usize, usize, usize) {
    let stats = shm.stats().unwrap();
    (shm.available(), shm.name_count().unwrap(), stats.live_blocks)
}

/// FNV-1a, by which the directory picks the slot a name's search starts at.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `count` distinct names whose searches all start at `slot`.
fn colliding_names(slot: usize, count: usize) -> Vec<String> {
    let names: Vec<String> = (0u32..)
        .map(|i| format!("collider-{i}"))
        .filter(|name| fnv1a(name.as_bytes()) % ShmPool::NAME_SLOTS as u64 == slot as u64)
        .take(count)
        .collect();
    assert_eq!(names.len(), count);
    names
}

/// `len` bytes of a name.
fn name_of_len(len: usize) -> String {
    "n".repeat(len)
}

/// Asserts that `offset` is refused, as a `T`, by both [`ShmPool::get`] and
/// [`ShmBox::from_offset`], with the offset in the error, and that nothing changed.
fn assert_no_object<T: ShmSafe + Sync>(shm: &ShmPool, offset: u64, what: &str) {
    let before = figures(shm);
    let expected = Err(ShmError::NoObject { offset });
    // SAFETY: no `T` lies at `offset` (the caller says so), and the check refuses it before
    // anything is read; were it accepted, the reference would only be compared.
    let got = unsafe { shm.get(ShmOffset::<T>::from_raw(offset)) }.map(|_| ());
    assert_eq!(got, expected, "get of {what}");
    // SAFETY: as above; were it accepted, `into_offset` gives the block up again rather than
    // freeing a block the box does not own.
    let boxed = unsafe { ShmBox::from_offset(shm, ShmOffset::<T>::from_raw(offset)) };
    assert_eq!(boxed.map(ShmBox::into_offset).map(|_| ()), expected, "from_offset of {what}");
    assert_eq!(figures(shm), before, "a refused offset changed the pool ({what})");
    shm.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Boxes and offsets
// ---------------------------------------------------------------------------------------------

#[test]
fn a_box_holds_its_value_and_frees_its_block_on_drop() {
    let shm = pool();
    let before = shm.available();
    let mut table = ShmBox::new_in([0u32; 64], &shm).unwrap();
    assert!(shm.available() < before);
    table[5] = 11;
    table[63] = 3;
    assert_eq!(table.iter().sum::<u32>(), 14);
    let offset = table.offset();
    assert_eq!(offset.raw() % core::mem::align_of::<[u32; 64]>() as u64, 0);
    // The offset is where the box's value lies in this process's mapping.
    assert_eq!(
        shm.ptr_at(offset.raw() as usize).unwrap().cast::<[u32; 64]>(),
        NonNull::from(&*table)
    );
    // SAFETY: the box keeps the value for the reference's life; it is read after the writes.
    let seen = unsafe { shm.get(offset) }.unwrap();
    assert_eq!((seen[5], seen[63]), (11, 3));
    assert!(format!("{table:?}").starts_with("ShmBox(["));
    shm.check().unwrap();
    drop(table);
    assert_eq!(shm.available(), before);
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    shm.check().unwrap();
}

#[test]
fn a_box_given_up_as_an_offset_is_taken_up_again() {
    let shm = pool();
    let before = shm.available();
    let mut boxed = ShmBox::new_in([7u64; 16], &shm).unwrap();
    boxed[15] = 99;
    let offset = boxed.into_offset();
    // Given up, not freed: the block is still in use, with its value.
    assert!(shm.available() < before);
    assert_eq!(shm.stats().unwrap().live_blocks, 1);
    // SAFETY: the value stays in the pool, unowned, and nothing writes it meanwhile.
    assert_eq!(unsafe { shm.get(offset) }.unwrap()[15], 99);
    // SAFETY: the offset came from `into_offset` above and is taken up once.
    let again = unsafe { ShmBox::from_offset(&shm, offset) }.unwrap();
    assert_eq!(again.offset(), offset);
    assert_eq!(again[0], 7);
    assert_eq!(again[15], 99);
    drop(again);
    assert_eq!(shm.available(), before);
    shm.check().unwrap();
    // Freed now: the offset leads nowhere.
    assert_no_object::<[u64; 16]>(&shm, offset.raw(), "a box's block after its drop");
}

#[test]
fn offsets_are_plain_numbers() {
    let offset = ShmOffset::<u64>::from_raw(4096);
    assert_eq!(offset.raw(), 4096);
    let copy = offset;
    assert_eq!(copy, offset);
    assert_ne!(ShmOffset::<u64>::from_raw(4112), offset);
    let debug = format!("{offset:?}");
    assert!(debug.contains("4096") && debug.contains("u64"), "{debug}");

    // Distinct boxes have distinct offsets, which hash as distinct keys.
    let shm = pool();
    let boxes: Vec<_> = (0..50u64).map(|i| ShmBox::new_in(i, &shm).unwrap()).collect();
    let offsets: HashSet<ShmOffset<u64>> = boxes.iter().map(|boxed| boxed.offset()).collect();
    assert_eq!(offsets.len(), boxes.len());
    for boxed in &boxes {
        // SAFETY: the box keeps its value for the reference's life.
        assert_eq!(unsafe { shm.get(boxed.offset()) }.unwrap(), &**boxed);
    }
}

/// A type aligned to 32 bytes, which a 16-byte aligned block of the right size may not hold.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Aligned32([u8; 32]);

// SAFETY: bytes: no pointer, every bit pattern valid, no destructor.
unsafe impl ShmSafe for Aligned32 {}

#[test]
fn get_and_from_offset_refuse_offsets_past_the_end_and_in_the_header() {
    let shm = pool();
    let _witness = ShmBox::new_in(1u64, &shm).unwrap();
    let end = shm.capacity() as u64;
    for offset in [0, 16, 4096, end, end + 4096, 1 << 40, u64::MAX - 15] {
        assert_no_object::<u64>(&shm, offset, &format!("offset {offset}"));
    }
}

#[test]
fn get_and_from_offset_refuse_misaligned_offsets() {
    let shm = pool();
    let boxed = ShmBox::new_in(5u64, &shm).unwrap();
    let at = boxed.offset().raw();
    for shift in [1, 2, 4] {
        assert_no_object::<u64>(&shm, at + shift, &format!("{shift} bytes into a u64"));
    }
    // A block of the right size whose start is aligned to 16 bytes but not to 32: refused as a
    // 32-aligned type, for its alignment alone; a block of the same class at a 32-aligned start
    // is accepted.
    let blocks: Vec<_> = (0..8).map(|_| ShmBox::new_in([0u8; 48], &shm).unwrap()).collect();
    let (aligned, misaligned): (Vec<_>, Vec<_>) =
        blocks.iter().map(|block| block.offset().raw()).partition(|offset| offset % 32 == 0);
    assert!(!aligned.is_empty() && !misaligned.is_empty(), "48-byte blocks lie at 16 mod 32");
    assert_no_object::<Aligned32>(&shm, misaligned[0], "a 48-byte block at 16 mod 32");
    // SAFETY: the box keeps the block (zeroed bytes, valid as `Aligned32`) for the reference's
    // life.
    let fits = unsafe { shm.get(ShmOffset::<Aligned32>::from_raw(aligned[0])) };
    assert_eq!(fits.copied(), Ok(Aligned32([0; 32])));
    drop(boxed);
}

#[test]
fn get_and_from_offset_refuse_a_type_larger_than_the_block() {
    let shm = pool();
    let small = ShmBox::new_in(3u32, &shm).unwrap();
    let block = shm.ptr_at(small.offset().raw() as usize).unwrap();
    let usable = shm.usable_size(block).unwrap();
    assert!(usable < 512, "a u32's block holds {usable} bytes");
    assert_no_object::<[u64; 64]>(&shm, small.offset().raw(), "a u32's block as 512 bytes");
    // As large a type as the block, though, fits.
    let large = ShmBox::new_in([1u64; 1024], &shm).unwrap();
    assert_no_object::<[u64; 1025]>(&shm, large.offset().raw(), "8 KiB block as 8200 bytes");
    // SAFETY: the box keeps the value for the reference's life.
    assert_eq!(unsafe { shm.get(large.offset()) }.unwrap()[1023], 1);
}

#[test]
fn get_and_from_offset_refuse_offsets_inside_blocks() {
    let shm = pool();
    let small = ShmBox::new_in([9u64; 8], &shm).unwrap();
    let at = small.offset().raw();
    for inside in [8, 16, 32, 56] {
        assert_no_object::<u64>(&shm, at + inside, &format!("{inside} bytes into a small block"));
    }
    let large = ShmBox::new_in([9u64; 4 * PAGE / 8], &shm).unwrap();
    let at = large.offset().raw();
    assert_eq!(at % PAGE as u64, 0, "a large block starts a page");
    for inside in [16, 64, PAGE as u64, 3 * PAGE as u64 + 256] {
        assert_no_object::<u64>(&shm, at + inside, &format!("{inside} bytes into a large block"));
    }
    // The starts themselves are accepted.
    // SAFETY: the boxes keep their values for the references' lives.
    assert_eq!(unsafe { shm.get(small.offset()) }.unwrap()[7], 9);
    // SAFETY: as above.
    assert_eq!(unsafe { shm.get(large.offset()) }.unwrap()[0], 9);
}

#[test]
fn get_and_from_offset_refuse_freed_blocks() {
    let shm = pool();
    // A witness keeps the small block's slab in use, so that the freed block lies in a slab.
    let _witness = ShmBox::new_in(0u64, &shm).unwrap();
    let small = ShmBox::new_in(1u64, &shm).unwrap().offset();
    let large = ShmBox::new_in([1u64; 2048], &shm).unwrap().offset();
    // Both boxes were dropped at the end of their statements.
    assert_no_object::<u64>(&shm, small.raw(), "a freed small block");
    assert_no_object::<[u64; 2048]>(&shm, large.raw(), "a freed large block");
    // A block allocated there again is followed again.
    let mut again = Vec::new();
    while again.last().map(ShmBox::offset) != Some(small) {
        assert!(again.len() < 4096, "the freed block was never handed out again");
        again.push(ShmBox::new_in(2u64, &shm).unwrap());
    }
    // SAFETY: the box keeps the value for the reference's life.
    assert_eq!(unsafe { shm.get(small) }.copied(), Ok(2));
}

#[test]
fn get_and_from_offset_refuse_blocks_of_a_child_pool() {
    let shm = pool();
    let child = shm.child();
    let blocks: Vec<NonNull<u8>> = (0..4).map(|_| child.alloc(64).unwrap()).collect();
    for &block in &blocks {
        let offset = shm.offset_of(block).unwrap() as u64;
        assert_no_object::<u64>(&shm, offset, "a child pool's block");
        assert_no_object::<[u8; 64]>(&shm, offset, "a child pool's block");
    }
    for block in blocks {
        // SAFETY: the block came from `child` and is freed once.
        unsafe { child.free(block) };
    }
}

#[test]
fn get_and_from_offset_refuse_another_pools_box() {
    // An offset carries no trace of its pool: it is refused here because no block of this pool
    // starts there. This pool holds a large block across the pages where the other pool's boxes
    // lie (in the slab after the other pool's first, of another class), and a block of their
    // class elsewhere.
    let shm = pool();
    let other = pool();
    let mine = ShmBox::new_in([0u8; 4 * PAGE], &shm).unwrap();
    let first = ShmBox::new_in(0u8, &other).unwrap();
    assert_eq!(first.offset().raw(), mine.offset().raw(), "both pools start alike");
    let theirs: Vec<_> = (0..3u64).map(|i| ShmBox::new_in([i; 4], &other).unwrap()).collect();
    let same_class = ShmBox::new_in([9u64; 4], &shm).unwrap();
    for (i, boxed) in theirs.iter().enumerate() {
        let at = boxed.offset().raw();
        assert!(at > mine.offset().raw() && at < mine.offset().raw() + 4 * PAGE as u64);
        assert_ne!(at, same_class.offset().raw());
        assert_no_object::<[u64; 4]>(&shm, at, "another pool's box");
        // SAFETY: the box keeps the value for the reference's life.
        assert_eq!(unsafe { other.get(boxed.offset()) }.unwrap(), &[i as u64; 4]);
    }
    drop(mine);
}

// ---------------------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------------------

#[test]
fn a_named_value_round_trips() {
    let shm = pool();
    let empty = shm.available();
    // Looking up and removing in a pool without a directory finds nothing and makes nothing.
    assert_eq!(shm.find::<u64>("answer"), Ok(None));
    assert_eq!(shm.named::<u64>("answer"), Ok(None));
    // SAFETY: nothing is named, so nothing is freed.
    assert_eq!(unsafe { shm.remove_named::<u64>("answer") }, Ok(false));
    assert_eq!(shm.name_count(), Ok(0));
    assert_eq!(shm.available(), empty, "a lookup made the directory");

    let answer = shm.insert_named("answer", 42u64).unwrap();
    let with_one = shm.available();
    assert!(empty - with_one >= DIRECTORY_BYTES + 8, "{empty} then {with_one}");
    assert_eq!(shm.name_count(), Ok(1));
    assert_eq!(shm.find::<u64>("answer"), Ok(Some(answer)));
    assert_eq!(shm.named::<u64>("answer"), Ok(Some(&42)));
    // SAFETY: the name keeps the value until it is removed below, after the reference's use.
    assert_eq!(unsafe { shm.get(answer) }.copied(), Ok(42));
    shm.check().unwrap();

    // A second name, changed through its atomics and seen through every path to it.
    let hits = shm.insert_named("hits", AtomicU64::new(0)).unwrap();
    assert_ne!(hits.raw(), answer.raw());
    assert_eq!(shm.name_count(), Ok(2));
    shm.named::<AtomicU64>("hits").unwrap().unwrap().fetch_add(3, Ordering::Relaxed);
    // SAFETY: the name keeps the value for the reference's life, changed only atomically.
    let seen = unsafe { shm.get(hits) }.unwrap();
    assert_eq!(seen.fetch_add(1, Ordering::Relaxed), 3);
    assert_eq!(shm.named::<AtomicU64>("hits").unwrap().unwrap().load(Ordering::Relaxed), 4);
    shm.check().unwrap();

    // SAFETY: the references to the value are dead.
    assert_eq!(unsafe { shm.remove_named::<AtomicU64>("hits") }, Ok(true));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<u64>("answer") }, Ok(true));
    assert_eq!(shm.name_count(), Ok(0));
    assert_eq!(shm.find::<u64>("answer"), Ok(None));
    assert_eq!(shm.named::<AtomicU64>("hits").map(|found| found.is_some()), Ok(false));
    // SAFETY: the name is gone, so nothing is freed.
    assert_eq!(unsafe { shm.remove_named::<u64>("answer") }, Ok(false));
    assert_no_object::<u64>(&shm, answer.raw(), "a removed name's value");
    // Everything but the directory's block came back.
    assert_eq!(shm.available(), empty - DIRECTORY_BYTES);
    assert_eq!(shm.stats().unwrap().live_blocks, 1, "the directory's block");
    shm.check().unwrap();
}

#[test]
fn the_directory_block_is_made_once_and_stays() {
    let shm = pool();
    let base = with_directory(&shm);
    for round in 0..3u64 {
        let placed = shm.insert_named("again", [round; 4]).unwrap();
        let block = shm.ptr_at(placed.raw() as usize).unwrap();
        let usable = shm.usable_size(block).unwrap();
        assert_eq!(shm.available(), base - usable, "round {round}: no second directory");
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<[u64; 4]>("again") }, Ok(true));
        assert_eq!(shm.available(), base, "round {round}");
    }
    shm.check().unwrap();
}

#[test]
fn names_of_1_to_64_bytes_are_taken_and_others_refused() {
    let shm = pool();
    let empty = shm.available();
    // A refused name makes no directory.
    for len in [0, ShmPool::NAME_MAX + 1, 1000] {
        let name = name_of_len(len);
        let refused: Result<(), ShmError> = Err(ShmError::NameLength { len });
        assert_eq!(shm.insert_named(&name, 1u8).map(|_| ()), refused, "insert of {len} bytes");
        assert_eq!(shm.insert_named_mutex(&name, 1u8).map(|_| ()), refused);
        assert_eq!(shm.find::<u8>(&name), refused.map(|()| None));
        assert_eq!(shm.named::<u8>(&name), refused.map(|()| None));
        // SAFETY: a refused name frees nothing.
        assert_eq!(unsafe { shm.remove_named::<u8>(&name) }, refused.map(|()| false));
    }
    assert_eq!(shm.available(), empty);
    assert_eq!(shm.name_count(), Ok(0));
    let base = with_directory(&shm);

    assert_eq!(ShmPool::NAME_MAX, 64);
    for len in [1, 2, 63, 64] {
        let name = name_of_len(len);
        let placed = shm.insert_named(&name, len as u64).unwrap();
        assert_eq!(shm.find::<u64>(&name), Ok(Some(placed)), "{len} bytes");
        assert_eq!(shm.named::<u64>(&name), Ok(Some(&(len as u64))));
    }
    let before = figures(&shm);
    let long = name_of_len(65);
    assert_eq!(shm.insert_named(&long, 0u64), Err(ShmError::NameLength { len: 65 }));
    assert_eq!(shm.find::<u64>(&long), Err(ShmError::NameLength { len: 65 }));
    assert_eq!(figures(&shm), before);
    // Lengths are in bytes: 32 two-byte characters fit, 32 and one more byte do not.
    let wide = "é".repeat(32);
    assert_eq!(wide.len(), 64);
    shm.insert_named(&wide, 2u16).unwrap();
    assert_eq!(shm.named::<u16>(&wide), Ok(Some(&2)));
    let wider = format!("{wide}x");
    assert_eq!(shm.insert_named(&wider, 2u16), Err(ShmError::NameLength { len: 65 }));
    assert!(ShmError::NameLength { len: 65 }.to_string().contains("65"));
    shm.check().unwrap();

    for len in [1, 2, 63, 64] {
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<u64>(&name_of_len(len)) }, Ok(true));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<u16>(&wide) }, Ok(true));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

#[test]
fn names_are_compared_byte_for_byte() {
    let shm = pool();
    let base = with_directory(&shm);
    let names = ["a", "a\0", "\0a", "A", "ab", "a ", "é", "e\u{301}"];
    for (value, name) in names.iter().enumerate() {
        shm.insert_named(name, value as u32).unwrap();
    }
    assert_eq!(shm.name_count(), Ok(names.len()));
    for (value, name) in names.iter().enumerate() {
        assert_eq!(shm.named::<u32>(name), Ok(Some(&(value as u32))), "{name:?}");
    }
    assert_eq!(shm.find::<u32>("b"), Ok(None));
    for name in names {
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<u32>(name) }, Ok(true), "{name:?}");
    }
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

#[test]
fn a_taken_name_is_refused_and_keeps_its_value() {
    let shm = pool();
    let base = with_directory(&shm);
    let placed = shm.insert_named("config", 1u64).unwrap();
    let before = figures(&shm);
    assert_eq!(shm.insert_named("config", 2u64), Err(ShmError::NameTaken));
    assert_eq!(shm.insert_named("config", [0u8; 500]).map(|_| ()), Err(ShmError::NameTaken));
    assert_eq!(shm.insert_named_mutex("config", 3u64).map(|_| ()), Err(ShmError::NameTaken));
    assert_eq!(figures(&shm), before, "a refused insertion changed the pool");
    assert_eq!(shm.find::<u64>("config"), Ok(Some(placed)));
    assert_eq!(shm.named::<u64>("config"), Ok(Some(&1)));
    assert!(!ShmError::NameTaken.to_string().is_empty());
    shm.check().unwrap();
    // SAFETY: nothing refers to the value.
    assert_eq!(unsafe { shm.remove_named::<u64>("config") }, Ok(true));
    // Free again once removed.
    shm.insert_named("config", 4u64).unwrap();
    assert_eq!(shm.named::<u64>("config"), Ok(Some(&4)));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<u64>("config") }, Ok(true));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

#[test]
fn a_full_directory_refuses_until_a_name_goes() {
    let shm = pool();
    let base = with_directory(&shm);
    let name = |i: usize| format!("slot-{i}");
    let mut offsets = Vec::new();
    for i in 0..ShmPool::NAME_SLOTS {
        offsets.push(shm.insert_named(&name(i), i as u64).unwrap());
    }
    assert_eq!(shm.name_count(), Ok(ShmPool::NAME_SLOTS));
    shm.check().unwrap();

    let full = figures(&shm);
    assert_eq!(shm.insert_named("one-more", 0u64), Err(ShmError::DirectoryFull));
    assert_eq!(shm.insert_named_mutex("one-more", 0u64).map(|_| ()), Err(ShmError::DirectoryFull));
    // A name that is there is still reported as taken.
    assert_eq!(shm.insert_named(&name(7), 0u64), Err(ShmError::NameTaken));
    assert_eq!(figures(&shm), full, "a refused insertion changed the pool");
    assert_eq!(shm.find::<u64>("one-more"), Ok(None));
    assert!(!ShmError::DirectoryFull.to_string().is_empty());
    for (i, &offset) in offsets.iter().enumerate() {
        assert_eq!(shm.find::<u64>(&name(i)), Ok(Some(offset)));
        assert_eq!(shm.named::<u64>(&name(i)), Ok(Some(&(i as u64))));
    }

    // One name goes: one comes in, and the directory is full again.
    // SAFETY: nothing refers to the value.
    assert_eq!(unsafe { shm.remove_named::<u64>(&name(100)) }, Ok(true));
    assert_eq!(shm.name_count(), Ok(ShmPool::NAME_SLOTS - 1));
    shm.insert_named("one-more", 1000u64).unwrap();
    assert_eq!(shm.named::<u64>("one-more"), Ok(Some(&1000)));
    assert_eq!(shm.find::<u64>(&name(100)), Ok(None));
    assert_eq!(shm.insert_named(&name(100), 0u64), Err(ShmError::DirectoryFull));
    assert_eq!(figures(&shm), full);
    shm.check().unwrap();

    // Emptied, the directory takes a full set of names again, though every slot has held one.
    // SAFETY: nothing refers to the value.
    assert_eq!(unsafe { shm.remove_named::<u64>("one-more") }, Ok(true));
    for i in (0..ShmPool::NAME_SLOTS).filter(|&i| i != 100) {
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<u64>(&name(i)) }, Ok(true), "{}", name(i));
    }
    assert_eq!(shm.name_count(), Ok(0));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
    for i in 0..ShmPool::NAME_SLOTS {
        shm.insert_named(&format!("second-{i}"), i as u64).unwrap();
    }
    assert_eq!(shm.insert_named("one-more", 0u64), Err(ShmError::DirectoryFull));
    for i in 0..ShmPool::NAME_SLOTS {
        assert_eq!(shm.named::<u64>(&format!("second-{i}")), Ok(Some(&(i as u64))));
        assert_eq!(shm.find::<u64>(&name(i)), Ok(None));
    }
    shm.check().unwrap();
}

#[test]
fn names_that_share_a_slot_are_found_past_removed_entries() {
    let shm = pool();
    let base = with_directory(&shm);
    // Every name starts its search at the same slot, so that the names fill the directory in
    // one run that wraps around its end.
    let names = colliding_names(200, ShmPool::NAME_SLOTS);
    for (i, name) in names.iter().enumerate() {
        shm.insert_named(name, i as u64).unwrap();
    }
    assert_eq!(shm.name_count(), Ok(ShmPool::NAME_SLOTS));
    assert_eq!(shm.insert_named("collider-extra", 0u64), Err(ShmError::DirectoryFull));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(shm.named::<u64>(name), Ok(Some(&(i as u64))), "{name}");
    }
    shm.check().unwrap();

    // Every other name goes: each name left is found past the removed entries before it.
    for name in names.iter().step_by(2) {
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<u64>(name) }, Ok(true), "{name}");
    }
    assert_eq!(shm.name_count(), Ok(ShmPool::NAME_SLOTS / 2));
    shm.check().unwrap();
    for (i, name) in names.iter().enumerate() {
        let expected = (i % 2 == 1).then_some(i as u64);
        assert_eq!(shm.named::<u64>(name).map(Option::<&u64>::copied), Ok(expected), "{name}");
    }
    // A name left is still taken, though its search passes a vacant entry first: the directory
    // must not place it a second time there.
    let before = figures(&shm);
    for name in names.iter().skip(1).step_by(2) {
        assert_eq!(shm.insert_named(name, 0u64), Err(ShmError::NameTaken), "{name}");
    }
    assert_eq!(figures(&shm), before);

    // The names removed come back, with new values, into the vacant entries.
    for (i, name) in names.iter().enumerate().step_by(2) {
        shm.insert_named(name, 1000 + i as u64).unwrap();
    }
    assert_eq!(shm.name_count(), Ok(ShmPool::NAME_SLOTS));
    assert_eq!(shm.insert_named("collider-extra", 0u64), Err(ShmError::DirectoryFull));
    for (i, name) in names.iter().enumerate() {
        let expected = if i % 2 == 0 { 1000 + i as u64 } else { i as u64 };
        assert_eq!(shm.named::<u64>(name), Ok(Some(&expected)), "{name}");
    }
    shm.check().unwrap();

    // Removed in the other order, from the end of the run back to its start.
    for name in names.iter().rev() {
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<u64>(name) }, Ok(true), "{name}");
        assert_eq!(shm.find::<u64>(name), Ok(None));
    }
    assert_eq!(shm.name_count(), Ok(0));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

#[test]
fn a_few_names_that_share_a_slot_among_others() {
    // Colliding names mixed with names that start elsewhere, removed and inserted in turns, as
    // a directory in use sees them.
    let shm = pool();
    let base = with_directory(&shm);
    let colliders = colliding_names(7, 12);
    let others: Vec<String> = (0..40).map(|i| format!("other-{i}")).collect();
    let all: Vec<&String> = colliders.iter().chain(&others).collect();
    let mut live: Vec<(&String, u64)> = Vec::new();
    for round in 0..6u64 {
        for (i, &name) in all.iter().enumerate() {
            let present = live.iter().position(|(live_name, _)| *live_name == name);
            match present {
                Some(at) if (i as u64 + round) % 3 == 0 => {
                    // SAFETY: nothing refers to the value.
                    assert_eq!(unsafe { shm.remove_named::<u64>(name) }, Ok(true));
                    live.swap_remove(at);
                }
                Some(_) => assert_eq!(shm.insert_named(name, 0u64), Err(ShmError::NameTaken)),
                None => {
                    let value = round * 1000 + i as u64;
                    shm.insert_named(name, value).unwrap();
                    live.push((name, value));
                }
            }
        }
        assert_eq!(shm.name_count(), Ok(live.len()), "round {round}");
        for &name in &all {
            let expected = live.iter().find(|(live_name, _)| *live_name == name).map(|e| e.1);
            assert_eq!(shm.named::<u64>(name).map(Option::<&u64>::copied), Ok(expected));
        }
        shm.check().unwrap();
    }
    for (name, _) in live {
        // SAFETY: nothing refers to the value.
        assert_eq!(unsafe { shm.remove_named::<u64>(name) }, Ok(true));
    }
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

/// A `u64` under another type name: the same size and alignment.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meters(u64);

// SAFETY: a `u64`: no pointer, every bit pattern valid, no destructor.
unsafe impl ShmSafe for Meters {}

#[test]
fn another_type_is_a_mismatch_and_changes_nothing() {
    let shm = pool();
    let base = with_directory(&shm);
    let placed = shm.insert_named("distance", 7u64).unwrap();
    let before = figures(&shm);
    let mismatch =
        |size, align| ShmError::TypeMismatch { size, align, found_size: 8, found_align: 8 };

    assert_eq!(shm.find::<u32>("distance"), Err(mismatch(4, 4)));
    assert_eq!(shm.find::<[u8; 8]>("distance"), Err(mismatch(8, 1)));
    assert_eq!(shm.find::<[u64; 2]>("distance"), Err(mismatch(16, 8)));
    // The same size and alignment under another type name.
    assert_eq!(shm.find::<i64>("distance"), Err(mismatch(8, 8)));
    assert_eq!(shm.find::<f64>("distance"), Err(mismatch(8, 8)));
    assert_eq!(shm.find::<Meters>("distance"), Err(mismatch(8, 8)));
    assert_eq!(shm.find::<ShmOffset<u8>>("distance"), Err(mismatch(8, 8)));
    assert_eq!(shm.named::<AtomicU64>("distance").map(|_| ()), Err(mismatch(8, 8)));
    assert_eq!(shm.named::<u16>("distance").map(|_| ()), Err(mismatch(2, 2)));
    // SAFETY: refused before anything is freed.
    assert_eq!(unsafe { shm.remove_named::<i64>("distance") }, Err(mismatch(8, 8)));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<[u32; 2]>("distance") }, Err(mismatch(8, 4)));
    assert!(mismatch(8, 8).to_string().contains("another type"));
    assert!(mismatch(4, 4).to_string().contains('4'));

    assert_eq!(figures(&shm), before, "a mismatch changed the pool");
    assert_eq!(shm.find::<u64>("distance"), Ok(Some(placed)));
    assert_eq!(shm.named::<u64>("distance"), Ok(Some(&7)));
    shm.check().unwrap();

    // A value of another shape the other way round, and a mutex of another value type.
    shm.insert_named("trip", Meters(5)).unwrap();
    assert_eq!(shm.named::<Meters>("trip"), Ok(Some(&Meters(5))));
    assert_eq!(shm.find::<u64>("trip"), Err(mismatch(8, 8)));
    shm.insert_named_mutex("guarded", 1u32).unwrap();
    assert!(matches!(
        shm.find::<ShmMutex<i32>>("guarded"),
        Err(ShmError::TypeMismatch { size, found_size, .. }) if size == found_size
    ));
    assert!(matches!(shm.find::<u32>("guarded"), Err(ShmError::TypeMismatch { size: 4, .. })));
    assert_eq!(*shm.named::<ShmMutex<u32>>("guarded").unwrap().unwrap().lock().unwrap(), 1);

    // SAFETY: nothing refers to the values.
    assert_eq!(unsafe { shm.remove_named::<u64>("distance") }, Ok(true));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<Meters>("trip") }, Ok(true));
    // SAFETY: as above.
    assert_eq!(unsafe { shm.remove_named::<ShmMutex<u32>>("guarded") }, Ok(true));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

/// A value in the pool that refers to another by offset, as values in a shared pool do.
#[repr(C)]
struct Catalog {
    items: ShmOffset<[u64; 8]>,
    len: u64,
    lookups: AtomicU64,
}

// SAFETY: an offset (a `u64`), a `u64` and an atomic: no pointer, every bit pattern valid, no
// destructor; `#[repr(C)]` lays it out alike in every process built from this source.
unsafe impl ShmSafe for Catalog {}

#[test]
fn an_offset_inside_a_named_value_leads_to_its_box() {
    let shm = pool();
    let base = with_directory(&shm);
    let mut items = ShmBox::new_in([0u64; 8], &shm).unwrap();
    for (i, item) in items.iter_mut().enumerate() {
        *item = 10 * i as u64;
    }
    let items = items.into_offset();
    let catalog = Catalog { items, len: 8, lookups: AtomicU64::new(0) };
    let placed = shm.insert_named("catalog", catalog).unwrap();
    shm.check().unwrap();

    // As another process would: from the name to the value, from the value's offset to the box.
    let found = shm.named::<Catalog>("catalog").unwrap().unwrap();
    assert_eq!(found.len, 8);
    found.lookups.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the box's value stays (given up, not freed) for the reference's life, unwritten.
    let followed = unsafe { shm.get(found.items) }.unwrap();
    assert_eq!(followed, &[0, 10, 20, 30, 40, 50, 60, 70]);
    // SAFETY: the name keeps the value for the reference's life.
    let by_offset = unsafe { shm.get(placed) }.unwrap();
    assert_eq!(by_offset.items, items);
    assert_eq!(by_offset.lookups.load(Ordering::Relaxed), 1);

    // Taken apart: the box taken up again and dropped, then the name removed.
    // SAFETY: the offset came from `into_offset` and is taken up once; the references to the
    // value are not used again.
    let owned = unsafe { ShmBox::from_offset(&shm, found.items) }.unwrap();
    assert_eq!(owned[7], 70);
    drop(owned);
    assert_no_object::<[u64; 8]>(&shm, items.raw(), "the catalog's items after their drop");
    // SAFETY: nothing refers to the value any more.
    assert_eq!(unsafe { shm.remove_named::<Catalog>("catalog") }, Ok(true));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

#[test]
fn a_named_value_is_a_t_only_if_its_block_holds_the_name_of_t() {
    // What a value of another type with the same size, alignment and hash of its name would
    // meet: an entry that agrees with `u64` in all three, over a block whose type name differs.
    let shm = pool();
    let base = with_directory(&shm);
    let placed = shm.insert_named("count", 3u64).unwrap();
    let value = shm.ptr_at(placed.raw() as usize).unwrap().as_ptr();
    let name = core::any::type_name::<u64>().as_bytes();
    // SAFETY: the block holds the value's 8 bytes and then its type's name, inside the pool;
    // nothing else reads or writes them meanwhile.
    let stored: Vec<u8> = (0..name.len()).map(|i| unsafe { value.add(8 + i).read() }).collect();
    assert_eq!(stored, name, "the type's name follows the value");

    // SAFETY: as above; one byte of the type's name changes, and nothing refers to the value.
    unsafe { value.add(8).write(name[0] ^ 1) };
    let mismatch = ShmError::TypeMismatch { size: 8, align: 8, found_size: 8, found_align: 8 };
    assert_eq!(shm.find::<u64>("count"), Err(mismatch));
    assert_eq!(shm.named::<u64>("count").map(|_| ()), Err(mismatch));
    // SAFETY: refused before anything is freed.
    assert_eq!(unsafe { shm.remove_named::<u64>("count") }, Err(mismatch));
    // The entry's hash is no longer that of the name after the value.
    assert_eq!(shm.check(), Err(ShmError::Corrupt(ShmCheckError::BadDirectory)));

    // SAFETY: as above; the name is as it was again.
    unsafe { value.add(8).write(name[0]) };
    assert_eq!(shm.find::<u64>("count"), Ok(Some(placed)));
    shm.check().unwrap();
    // SAFETY: nothing refers to the value.
    assert_eq!(unsafe { shm.remove_named::<u64>("count") }, Ok(true));
    assert_eq!(shm.available(), base);
}

#[test]
fn a_named_block_freed_behind_the_directory_is_reported_corrupt() {
    let shm = pool();
    with_directory(&shm);
    shm.insert_named("kept", 1u64).unwrap();
    let victim = shm.insert_named("victim", [5u64; 4]).unwrap();
    shm.check().unwrap();
    let block = shm.ptr_at(victim.raw() as usize).unwrap();
    // SAFETY: the block is in use, of this pool; the test reads it no more, and allocates
    // nothing that could reuse it.
    unsafe { shm.try_free(block) }.unwrap();
    let corrupt = Err(ShmError::Corrupt(ShmCheckError::BadDirectory));
    assert_eq!(shm.check(), corrupt);
    assert_eq!(shm.named::<[u64; 4]>("victim").map(|_| ()), corrupt);
    // SAFETY: the removal is refused, freeing nothing.
    assert_eq!(unsafe { shm.remove_named::<[u64; 4]>("victim") }, corrupt.map(|()| false));
    // The other names are unaffected.
    assert_eq!(shm.named::<u64>("kept"), Ok(Some(&1)));
    assert!(!ShmCheckError::BadDirectory.to_string().is_empty());

    // A value so small that the free's link overwrites its type's name after it: still
    // reported corrupt, not taken for a value of another type.
    let tiny = shm.insert_named("tiny", 1u8).unwrap();
    let block = shm.ptr_at(tiny.raw() as usize).unwrap();
    // SAFETY: as above.
    unsafe { shm.try_free(block) }.unwrap();
    assert_eq!(shm.find::<u8>("tiny"), corrupt.map(|()| None));
    assert_eq!(shm.named::<u8>("tiny").map(|_| ()), corrupt);
    // SAFETY: the removal is refused, freeing nothing.
    assert_eq!(unsafe { shm.remove_named::<u8>("tiny") }, corrupt.map(|()| false));
}

#[test]
fn an_insertion_without_room_changes_nothing() {
    let shm = ShmPool::new(256 * KIB).unwrap();
    // Filled in pages but for one, and the directory cannot be made: no directory appears.
    let mut blocks = Vec::new();
    while let Some(block) = shm.alloc(PAGE) {
        blocks.push(block);
    }
    for _ in 0..2 {
        // SAFETY: the block came from `shm` and is freed once.
        unsafe { shm.try_free(blocks.pop().unwrap()) }.unwrap();
    }
    let before = figures(&shm);
    assert!(before.0 < DIRECTORY_BYTES, "{before:?}");
    let refused = shm.insert_named("first", 1u64);
    assert!(
        matches!(refused, Err(ShmError::OutOfMemory { .. } | ShmError::Fragmented { .. })),
        "{refused:?}"
    );
    assert_eq!(figures(&shm), before);
    shm.check().unwrap();
    for block in blocks.drain(..) {
        // SAFETY: the block came from `shm` and is freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }

    // With a directory, a value without room is refused and leaves no name.
    with_directory(&shm);
    shm.insert_named("small", 1u64).unwrap();
    while let Some(block) = shm.alloc(PAGE) {
        blocks.push(block);
    }
    let before = figures(&shm);
    let refused = shm.insert_named("big", [0u64; 2 * PAGE / 8]);
    assert!(
        matches!(refused, Err(ShmError::OutOfMemory { .. } | ShmError::Fragmented { .. })),
        "{refused:?}"
    );
    assert_eq!(figures(&shm), before);
    assert_eq!(shm.find::<[u64; 2 * PAGE / 8]>("big"), Ok(None));
    assert_eq!(shm.named::<u64>("small"), Ok(Some(&1)));
    shm.check().unwrap();
    for block in blocks {
        // SAFETY: the block came from `shm` and is freed once.
        unsafe { shm.try_free(block) }.unwrap();
    }
    shm.insert_named("big", [3u64; 2 * PAGE / 8]).unwrap();
    assert_eq!(shm.named::<[u64; 2 * PAGE / 8]>("big").unwrap().unwrap()[1023], 3);
    shm.check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Mutexes
// ---------------------------------------------------------------------------------------------

const THREADS: usize = 4;
const ROUNDS: u64 = 10_000;

#[test]
fn a_mutex_serialises_threads() {
    let shm = pool();
    let before = shm.available();
    let counter = ShmMutex::new_in(0u64, &shm).unwrap();
    assert_eq!(counter.takeovers(), 0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..ROUNDS {
                    let mut guard = counter.lock().unwrap();
                    assert!(!guard.holder_died());
                    // A read, then a write: two threads inside at once would lose a count.
                    let seen = *guard;
                    std::hint::black_box(&seen);
                    *guard = seen + 1;
                }
            });
        }
    });
    let guard = counter.lock().unwrap();
    assert_eq!(*guard, THREADS as u64 * ROUNDS);
    assert!(!guard.holder_died());
    let debug = format!("{guard:?}");
    assert!(debug.contains("40000") && debug.contains("holder_died: false"), "{debug}");
    drop(guard);
    assert_eq!(counter.takeovers(), 0);
    assert!(format!("{:?}", *counter).contains("ShmMutex"));
    shm.check().unwrap();
    drop(counter);
    assert_eq!(shm.available(), before);
    shm.check().unwrap();
}

#[test]
fn a_named_mutex_serialises_threads_that_find_it_by_name() {
    let shm = pool();
    let base = with_directory(&shm);
    let placed = shm.insert_named_mutex("table", [0u64; THREADS + 1]).unwrap();
    assert_eq!(shm.find::<ShmMutex<[u64; THREADS + 1]>>("table"), Ok(Some(placed)));
    std::thread::scope(|scope| {
        for slot in 0..THREADS {
            let shm = &shm;
            scope.spawn(move || {
                let table = shm.named::<ShmMutex<[u64; THREADS + 1]>>("table").unwrap().unwrap();
                for _ in 0..ROUNDS {
                    let mut guard = table.lock().unwrap();
                    assert!(!guard.holder_died());
                    guard[slot] += 1;
                    let total = guard[THREADS];
                    std::hint::black_box(&total);
                    guard[THREADS] = total + 1;
                }
            });
        }
    });
    // SAFETY: the name keeps the mutex for the reference's life.
    let table = unsafe { shm.get(placed) }.unwrap();
    let guard = table.lock().unwrap();
    assert_eq!(guard[..THREADS], [ROUNDS; THREADS]);
    assert_eq!(guard[THREADS], THREADS as u64 * ROUNDS);
    drop(guard);
    assert_eq!(table.takeovers(), 0);
    // SAFETY: the references to the mutex are not used again.
    assert_eq!(unsafe { shm.remove_named::<ShmMutex<[u64; THREADS + 1]>>("table") }, Ok(true));
    assert_eq!(shm.available(), base);
    shm.check().unwrap();
}

#[test]
fn locking_a_held_mutex_from_its_holder_would_deadlock() {
    let shm = pool();
    let first = ShmMutex::new_in(5u32, &shm).unwrap();
    let second = ShmMutex::new_in(8u32, &shm).unwrap();
    let mut guard = first.lock().unwrap();
    assert!(matches!(first.lock(), Err(ShmError::WouldDeadlock)));
    // A timed lock gives up at once, rather than when its timeout runs out.
    let start = Instant::now();
    assert!(matches!(first.try_lock_for(Duration::from_secs(60)), Err(ShmError::WouldDeadlock)));
    assert!(start.elapsed() < Duration::from_secs(30), "waited {:?}", start.elapsed());
    // Another mutex, and the pool itself, are still this thread's to take.
    let other = second.lock().unwrap();
    assert_eq!(*other, 8);
    let block = ShmBox::new_in(1u8, &shm).unwrap();
    drop(block);
    drop(other);
    *guard += 1;
    drop(guard);
    // Released: the holder locks it again, and sees what it wrote.
    let guard = first.lock().unwrap();
    assert_eq!(*guard, 6);
    assert!(!guard.holder_died());
    drop(guard);
    assert_eq!(*first.try_lock_for(Duration::from_secs(1)).unwrap(), 6);
    assert_eq!(first.takeovers(), 0);
}

#[test]
fn a_timed_lock_gives_up_on_a_mutex_another_thread_holds() {
    let shm = pool();
    let mutex = ShmMutex::new_in(0u64, &shm).unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let mutex = &mutex;
        let holder = scope.spawn(move || {
            let mut guard = mutex.lock().unwrap();
            *guard = 17;
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            *guard = 18;
        });
        held_rx.recv().unwrap();
        let timeout = Duration::from_millis(100);
        let start = Instant::now();
        let refused = mutex.try_lock_for(timeout).map(|_| ());
        let took = start.elapsed();
        match refused {
            Err(ShmError::LockTimeout { waited }) => {
                assert!(waited >= timeout, "gave up after {waited:?}");
                assert!(took >= timeout, "returned after {took:?}");
            }
            other => panic!("a held mutex: {other:?}"),
        }
        release_tx.send(()).unwrap();
        // The holder lets go: a locker waiting with time to spare gets it, with its last write.
        let guard = mutex.try_lock_for(Duration::from_secs(60)).unwrap();
        assert_eq!(*guard, 18);
        assert!(!guard.holder_died());
        drop(guard);
        holder.join().unwrap();
    });
    assert_eq!(mutex.takeovers(), 0);
}

/// A mutex whose guard was forgotten is held: dropping its box leaves the block in the pool,
/// where the C library's record of the held mutex points, rather than handing it to the next
/// allocation, which that record would then be written into.
#[test]
fn a_mutex_dropped_while_held_keeps_its_block() {
    let shm = pool();
    let held = ShmMutex::new_in(0u64, &shm).unwrap();
    let with_mutex = shm.available();
    core::mem::forget(held.lock().unwrap());
    drop(held);
    assert_eq!(shm.available(), with_mutex, "the held mutex's block stays");
    // The next blocks do not take its place, and locking another mutex writes nothing into
    // them.
    let values = ShmBox::new_in([0u64; 16], &shm).unwrap();
    let other = ShmMutex::new_in(0u64, &shm).unwrap();
    *other.lock().unwrap() += 1;
    assert_eq!(*values, [0u64; 16]);
    shm.check().unwrap();
    // A mutex nobody holds goes with its block.
    let before = shm.available();
    drop(other);
    assert!(shm.available() > before);
}

/// A mutex starts with its lock word (4 bytes) and, 8 bytes in, the holder's token (8 bytes),
/// which a process that died or went wrong may have left holding any bits. Whatever identity the
/// word names, nobody alive holds it, so the next lock takes the mutex over and says so, and the
/// mutex goes on as before; except the anonymous identity (all ones), whose deaths nothing can
/// tell, which keeps lockers waiting until their timeouts.
#[test]
fn a_mutex_whose_lock_holds_any_bits_is_taken_over_not_trusted() {
    let shm = pool();
    let mutex = ShmMutex::new_in(5u64, &shm).unwrap();
    let start = core::ptr::from_ref::<ShmMutex<u64>>(&mutex).cast::<u8>().cast_mut();
    // SAFETY: the mutex starts with its lock (`MutexLock` in `src/layout.rs`, `repr(C)`): an
    // `AtomicU32` at byte 0 and an `AtomicU64` at byte 8, so both ranges are the bytes of
    // atomics, which shared references allow writing; nothing holds the mutex or reads them
    // now, and any bits are values of theirs.
    let scribble = |byte: u8| unsafe {
        start.write_bytes(byte, 4);
        start.add(8).write_bytes(byte, 8);
    };
    for byte in [0xa5u8, 0x01, 0x80, 0xff] {
        scribble(byte);
        if byte == 0xff {
            let waited = mutex.try_lock_for(Duration::from_millis(20)).map(|_| ());
            assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "{waited:?}");
            scribble(0);
            assert!(!mutex.lock().unwrap().holder_died(), "a zeroed lock is a free one");
            continue;
        }
        let guard = mutex.try_lock_for(Duration::from_secs(10)).unwrap();
        assert!(guard.holder_died(), "a word naming nobody alive, with {byte:#x}");
        assert_eq!(*guard, 5);
        drop(guard);
        assert!(!mutex.lock().unwrap().holder_died());
    }
    assert_eq!(mutex.takeovers(), 3);
}

#[test]
fn a_mutex_whose_holder_thread_ended_stays_held_while_its_process_lives() {
    let shm = pool();
    let plain = ShmMutex::new_in(7u64, &shm).unwrap();
    // A thread that ends holding it, its guard forgotten: the mutex names the process, which
    // lives on, so it stays held, as a forgotten guard of `std::sync::Mutex` keeps its mutex.
    std::thread::scope(|scope| {
        scope.spawn(|| std::mem::forget(plain.lock().unwrap()));
    });
    let waited = plain.try_lock_for(Duration::from_millis(20));
    assert!(matches!(waited, Err(ShmError::LockTimeout { .. })), "{waited:?}");
    drop(waited);
    assert_eq!(plain.takeovers(), 0);
    // Its box leaves the mutex and its block in the pool, for the holder may still use them.
    let before = shm.stats().unwrap().live_blocks;
    drop(plain);
    assert_eq!(shm.stats().unwrap().live_blocks, before);
    shm.check().unwrap();
}
