//! Collections whose memory is in a shared pool: `&ShmPool` and its child pools implement
//! `allocator_api2::alloc::Allocator`. A forked process reads them in `tests/fork.rs`.

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use hashbrown::HashMap;
use melon_alloc_shm::ShmPool;

const MIB: usize = 1 << 20;

#[test]
fn a_vector_grows_and_shrinks_in_the_shared_pool() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let empty = shm.available();
    let mut numbers = Vec::new_in(&shm);
    for n in 0..100_000u64 {
        numbers.push(n * 3);
    }
    let start = numbers.as_ptr().cast::<u8>();
    let offset = shm.offset_of(core::ptr::NonNull::new(start.cast_mut()).unwrap());
    assert!(offset.is_some(), "the buffer lies in the pool");
    assert!(shm.available() <= empty - 800_000);
    assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u64 * 3));
    numbers.truncate(10);
    numbers.shrink_to_fit();
    assert_eq!(numbers, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
    assert_eq!(shm.stats().unwrap().live_blocks, 1);
    drop(numbers);
    assert_eq!(shm.available(), empty);
    shm.check().unwrap();
}

#[test]
fn a_vector_shrunk_to_nothing_gives_its_block_back() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let empty = shm.available();
    for _ in 0..100 {
        let mut bytes: Vec<u8, _> = Vec::with_capacity_in(8000, &shm);
        bytes.push(1);
        bytes.clear();
        // allocator-api2's `Vec` keeps the pointer the shrink gives and never deallocates a
        // vector of no capacity: the shrink frees the block.
        bytes.shrink_to_fit();
        assert_eq!(bytes.capacity(), 0);
    }
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    assert_eq!(shm.available(), empty);
    // A layout of no bytes takes no block.
    let none = Layout::from_size_align(0, 8).unwrap();
    let block = Allocator::allocate(&&shm, none).unwrap();
    assert_eq!((block.len(), shm.available()), (0, empty));
    // SAFETY: the block came from this allocator with this layout.
    unsafe { Allocator::deallocate(&&shm, block.cast(), none) };
    shm.check().unwrap();
}

#[test]
fn a_hash_map_lives_in_the_pool_and_in_a_child_of_it() {
    let shm = ShmPool::new(8 * MIB).unwrap();
    let empty = shm.available();
    let mut direct = HashMap::new_in(&shm);
    let child = shm.child();
    let mut local = HashMap::new_in(&child);
    for key in 0..20_000u32 {
        direct.insert(key, key.wrapping_mul(2_654_435_761));
        local.insert(key, u64::from(key) << 8);
    }
    assert_eq!(direct.len(), 20_000);
    assert!((0..20_000u32).all(|key| direct[&key] == key.wrapping_mul(2_654_435_761)));
    assert!((0..20_000u32).all(|key| local[&key] == u64::from(key) << 8));
    assert!(shm.stats().unwrap().lent_bytes > 0, "the child's chunks come from the pool");
    drop((direct, local));
    drop(child);
    assert_eq!(shm.available(), empty);
    shm.check().unwrap();
}

#[test]
fn growing_keeps_contents_and_honours_a_larger_alignment() {
    let shm = ShmPool::new(4 * MIB).unwrap();
    let allocator = &shm;
    let small = Layout::from_size_align(40, 8).unwrap();
    let block = allocator.allocate(small).unwrap().cast::<u8>();
    // SAFETY: the block holds 40 bytes.
    unsafe { block.as_ptr().write_bytes(0xA5, 40) };
    let aligned = Layout::from_size_align(40, 4096).unwrap();
    // SAFETY: the block came from this allocator with `small`; only the result is used after.
    let moved = unsafe { allocator.grow(block, small, aligned) }.unwrap().cast::<u8>();
    assert_eq!(moved.as_ptr() as usize % 4096, 0);
    // SAFETY: the moved block holds the 40 bytes copied over.
    assert!((0..40).all(|i| unsafe { moved.as_ptr().add(i).read() } == 0xA5));
    let larger = Layout::from_size_align(100_000, 4096).unwrap();
    // SAFETY: as above.
    let grown = unsafe { allocator.grow(moved, aligned, larger) }.unwrap();
    assert!(grown.len() >= 100_000);
    let grown = grown.cast::<u8>();
    // SAFETY: the grown block starts with the same 40 bytes.
    assert!((0..40).all(|i| unsafe { grown.as_ptr().add(i).read() } == 0xA5));
    // SAFETY: the block came from this allocator with `larger`, and is not used again.
    unsafe { allocator.deallocate(grown, larger) };
    assert_eq!(shm.stats().unwrap().live_blocks, 0);
    shm.check().unwrap();
}

#[test]
fn a_full_pool_is_an_allocation_error_not_a_panic() {
    let shm = ShmPool::new(1 << 16).unwrap();
    let mut bytes = Vec::new_in(&shm);
    assert!(bytes.try_reserve(1 << 20).is_err());
    bytes.extend_from_slice(b"still works");
    assert_eq!(&bytes[..], b"still works");
}
