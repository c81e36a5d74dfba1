//! The engine on its own: out-of-memory paths through a source that can be told to fail, giving
//! cached chunks back before refusing, the locked pool, the region source, and the invariant
//! scan catching corruption planted on purpose.

mod support;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use melon_alloc_core::{
    ChunkSource, Engine, FreeError, LockedPool, Problem, RegionSource, Stats, CHUNK_SIZE, MAX_SMALL,
};
use support::{colour, free, FreedElsewhere, TestSource};

fn fresh(limit: Option<usize>) -> Stats {
    let mut stats = Stats::default();
    stats.limit = limit;
    stats
}

/// A reset has the source forget the blocks freed elsewhere that the engine has not collected:
/// every block is free after the reset, and each is handed out once.
#[test]
fn a_reset_forgets_blocks_freed_elsewhere() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let first: Vec<_> = (0..600).map(|_| engine.alloc(64).unwrap()).collect();
    source.ledger().remote.extend(first.iter().take(300).map(|&block| FreedElsewhere(block)));
    // SAFETY: none of `first` is used again.
    unsafe { engine.reset() };
    assert!(source.ledger().remote.is_empty(), "the source still holds blocks freed elsewhere");
    let mut again: Vec<_> = (0..1200).map(|_| engine.alloc(64).unwrap()).collect();
    again.sort_unstable();
    let len = again.len();
    again.dedup();
    assert_eq!(again.len(), len, "a block was handed out twice");
    engine.check().unwrap();
}

/// Blocks the source reports freed elsewhere come back into the engine before it takes a new
/// chunk: they serve again, each once, from the same chunks.
#[test]
fn blocks_freed_elsewhere_serve_again_before_a_new_chunk() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let first: Vec<_> = (0..600).map(|_| engine.alloc(64).unwrap()).collect();
    let chunks = source.chunks_out();
    assert!(chunks >= 2, "{chunks}");
    // The blocks are "freed" by someone else: the engine does not know yet.
    source.ledger().remote.extend(first.iter().map(|&block| FreedElsewhere(block)));
    let mut again: Vec<_> = (0..600).map(|_| engine.alloc(64).unwrap()).collect();
    assert_eq!(source.chunks_out(), chunks, "no new chunk");
    assert!(source.ledger().remote.is_empty(), "every block was collected");
    let mut sorted = again.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert!(sorted.len() == again.len(), "a block was handed out twice");
    let reused = again.iter().filter(|block| first.contains(block)).count();
    assert!(reused > 0, "collected blocks served again");
    for block in again.drain(..) {
        free(&mut engine, block);
    }
    engine.check().unwrap();
}

/// An engine at its limit, whose source was not told of a block freed elsewhere: a small request
/// has the source look everywhere, and the block's chunk, emptied, makes room for a chunk of
/// another class, which the request gets instead of a refusal.
#[test]
fn unannounced_frees_make_room_for_a_small_request_at_the_limit() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), Some(2 * CHUNK_SIZE));
    let big = engine.alloc(1024).unwrap();
    let first: Vec<_> = std::iter::from_fn(|| engine.alloc(64)).collect();
    assert_eq!(source.chunks_out(), 2, "the limit binds");
    assert!(source.ledger().rescans > 0, "a refusal looks everywhere first");
    source.ledger().unannounced.push(FreedElsewhere(big));
    let again: Vec<_> = std::iter::from_fn(|| engine.alloc(64)).collect();
    assert_eq!(again.len(), first.len(), "a whole chunk of 64-byte blocks more");
    assert!(source.ledger().unannounced.is_empty() && source.ledger().remote.is_empty());
    for block in first.into_iter().chain(again) {
        free(&mut engine, block);
    }
    engine.check().unwrap();
}

/// As above, for a large request: the emptied chunk goes back, and the large block fits.
#[test]
fn unannounced_frees_make_room_for_a_large_request_at_the_limit() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), Some(2 * CHUNK_SIZE));
    let big = engine.alloc(1024).unwrap();
    // More than a chunk: it fits beside no chunk within the limit.
    let size = CHUNK_SIZE + CHUNK_SIZE / 4;
    assert_eq!(engine.alloc(size), None, "the limit binds");
    source.ledger().unannounced.push(FreedElsewhere(big));
    let large = engine.alloc(size).expect("the emptied chunk made room");
    assert_eq!(source.chunks_out(), 1, "the emptied chunk went back");
    free(&mut engine, large);
    engine.check().unwrap();
}

#[test]
fn a_failing_source_refuses_without_a_charge() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), Some(1 << 20));
    // A refused request is tried once more after a trim: two refusals in a row make it final.
    for size in [0, 64, MAX_SMALL, MAX_SMALL + 1, 100_000] {
        source.fail_next(2);
        assert_eq!(engine.alloc(size), None, "size {size}");
        assert_eq!(engine.stats(), fresh(Some(1 << 20)));
        assert_eq!(engine.available(), Some(1 << 20));
        assert_eq!(source.chunks_out(), 0);
        engine.check().unwrap();
    }
    // The second alignment is served from a chunk of its own with 16 KiB chunks, and from the
    // 1 KiB class with 4 KiB chunks: either way it needs a chunk from the source.
    for align in [64, CHUNK_SIZE / 4] {
        source.fail_next(2);
        let layout = Layout::from_size_align(100, align).unwrap();
        assert_eq!(engine.alloc_layout(layout), None);
        source.fail_next(2);
        assert_eq!(engine.alloc_zeroed(5000), None);
    }
    assert_eq!(engine.stats(), fresh(Some(1 << 20)));
    assert_eq!(source.ledger().refused, 18);
    // The source recovers, and so does the engine.
    let block = engine.alloc(64).unwrap();
    assert_eq!(engine.stats().live_blocks, 1);
    free(&mut engine, block);
    engine.check().unwrap();
}

#[test]
fn a_failed_move_leaves_the_block_in_place() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let block = engine.alloc(100).unwrap();
    // SAFETY: the block holds at least 100 bytes.
    unsafe { block.as_ptr().write_bytes(0x77, 100) };
    let before = engine.stats();
    for new_size in [MAX_SMALL + 1, 50_000] {
        // The request and its retry after a trim both fail.
        source.fail_next(2);
        // SAFETY: the block is in use in `engine`; a failed realloc leaves it so.
        assert_eq!(unsafe { engine.realloc(block, new_size) }, None);
        let layout = Layout::from_size_align(new_size, 4096).unwrap();
        source.fail_next(2);
        // SAFETY: as above.
        assert_eq!(unsafe { engine.resize(block, layout) }, None);
        assert_eq!(engine.stats(), before);
    }
    // SAFETY: the block holds 100 bytes.
    let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), 100) };
    assert!(bytes.iter().all(|&b| b == 0x77));
    free(&mut engine, block);
    engine.check().unwrap();
}

#[test]
fn a_failing_source_gets_the_cached_chunks_back_before_the_engine_gives_up() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    for size in [16, 64, 512] {
        let block = engine.alloc(size).unwrap();
        free(&mut engine, block);
    }
    assert_eq!(engine.stats().chunks, 3);
    // The first attempt fails; the engine gives its three empty chunks back and tries again.
    source.fail_next(1);
    let large = engine.alloc(100_000).unwrap();
    assert_eq!(engine.stats().chunks, 0);
    assert_eq!(source.ledger().released, 3);
    assert_eq!(source.chunks_out(), 1);
    // With nothing left to give back, the retry is refused as well, and that is final.
    source.fail_next(2);
    assert_eq!(engine.alloc(64), None);
    assert_eq!(source.ledger().refused, 3);
    // One refusal alone is retried and served.
    source.fail_next(1);
    let small = engine.alloc(64).unwrap();
    assert_eq!(source.ledger().refused, 4);
    // A retry that fails too leaves the engine consistent, without the chunks it gave back.
    free(&mut engine, small);
    source.fail_next(2);
    assert_eq!(engine.alloc(100_000), None);
    let stats = engine.stats();
    assert_eq!((stats.chunks, stats.live_blocks, stats.large_blocks), (0, 1, 1));
    assert_eq!(stats.bytes_held, (64 + 100_000usize).next_multiple_of(16));
    engine.check().unwrap();
    free(&mut engine, large);
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn the_limit_gets_the_cached_chunks_back_before_refusing() {
    let source = TestSource::default();
    let limit = 4 * CHUNK_SIZE;
    let mut engine = Engine::new(source.clone(), Some(limit));
    let live = engine.alloc(64).unwrap();
    for size in [16, 128, 1024] {
        let block = engine.alloc(size).unwrap();
        free(&mut engine, block);
    }
    assert_eq!(engine.available(), Some(0));
    // Three chunks' worth fits once the three cached chunks are given back.
    let large = engine.alloc(3 * CHUNK_SIZE - 64).unwrap();
    assert_eq!(engine.stats().chunks, 1);
    assert_eq!(source.ledger().released, 3);
    assert_eq!(engine.available(), Some(0));
    // Nothing is cached any more, so this is refused, and nothing is charged.
    let before = engine.stats();
    assert_eq!(engine.alloc(100), None);
    assert_eq!(engine.stats(), before);
    free(&mut engine, large);
    free(&mut engine, live);
    engine.check().unwrap();
}

#[test]
fn chunks_lent_to_another_engine_are_charged_and_given_back() {
    let source = TestSource::default();
    let limit = 8 * CHUNK_SIZE;
    let mut parent = Engine::new(source.clone(), Some(limit));
    let small = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let large = Layout::from_size_align(3 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let first = parent.acquire_raw(small).unwrap();
    let second = parent.acquire_raw(large).unwrap();
    let stats = parent.stats();
    assert_eq!(
        (stats.bytes_lent, stats.bytes_held, stats.chunks),
        (4 * CHUNK_SIZE, 4 * CHUNK_SIZE, 0)
    );
    assert_eq!(parent.available(), Some(4 * CHUNK_SIZE));
    parent.check().unwrap();
    let too_much = Layout::from_size_align(5 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    assert_eq!(parent.acquire_raw(too_much), None);
    assert_eq!(parent.stats(), stats);
    // SAFETY: both chunks came from `acquire_raw` with these layouts and are not used again.
    unsafe { parent.release_raw(second, large) };
    // SAFETY: as above.
    unsafe { parent.release_raw(first, small) };
    assert_eq!(parent.stats().bytes_lent, 0);
    assert_eq!(parent.available(), Some(limit));
    assert_eq!(source.chunks_out(), 0);
    parent.check().unwrap();
}

#[test]
fn dropping_an_engine_gives_every_chunk_back() {
    let source = TestSource::default();
    {
        let mut engine = Engine::new(source.clone(), None);
        for i in 0..5000 {
            engine.alloc(i % 3000).unwrap();
        }
        engine.alloc(CHUNK_SIZE - 64).unwrap();
        engine.alloc(1 << 20).unwrap();
        assert!(source.chunks_out() > 10);
    }
    assert_eq!(source.chunks_out(), 0);
}

#[test]
fn reset_and_trim_hand_back_every_kept_chunk() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let blocks: Vec<_> = (0..3000).map(|i| engine.alloc(16 + i % 5 * 100).unwrap()).collect();
    engine.alloc(50_000).unwrap();
    let chunks = engine.stats().chunks;
    assert!(chunks > 5);
    // SAFETY: none of the blocks is used again.
    unsafe { engine.reset() };
    assert_eq!(engine.stats().chunks, chunks);
    assert_eq!(engine.stats().live_blocks, 0);
    assert_eq!(source.chunks_out(), chunks);
    // The old blocks are all out of use, in chunks the engine still holds.
    for &block in &blocks[..5] {
        let addr = block.as_ptr() as usize;
        assert_eq!(engine.validate(block), Err(FreeError::NotInUse { addr }));
    }
    // A new block takes a kept chunk into use; the others stay empty until trimmed.
    let again = engine.alloc(16).unwrap();
    assert_eq!(engine.stats().chunks, chunks);
    assert_eq!(engine.trim(), (chunks - 1) * CHUNK_SIZE);
    assert_eq!(engine.stats().chunks, 1);
    assert_eq!(source.chunks_out(), 1);
    free(&mut engine, again);
    assert_eq!(engine.trim(), CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
    engine.check().unwrap();
}

#[test]
fn validate_tells_every_kind_of_pointer_apart() {
    let mut engine = Engine::new(TestSource::default(), None);
    let mut other = Engine::new(TestSource::default(), None);
    let block = engine.alloc(48).unwrap();
    let freed = engine.alloc(48).unwrap();
    free(&mut engine, freed);
    let theirs = other.alloc(48).unwrap();
    let large = engine.alloc(3 * CHUNK_SIZE).unwrap();
    let addr = |ptr: NonNull<u8>| ptr.as_ptr() as usize;
    assert_eq!(engine.validate(block), Ok(()));
    assert_eq!(engine.validate(large), Ok(()));
    assert_eq!(engine.validate(freed), Err(FreeError::NotInUse { addr: addr(freed) }));
    assert_eq!(engine.validate(theirs), Err(FreeError::Foreign { addr: addr(theirs) }));
    for inside in [block.as_ptr().wrapping_add(16), large.as_ptr().wrapping_add(2 * CHUNK_SIZE)] {
        let inside = NonNull::new(inside).unwrap();
        assert_eq!(engine.validate(inside), Err(FreeError::Interior { addr: addr(inside) }));
    }
    let before = engine.stats();
    // SAFETY: `theirs` is not a block of `engine`, so this only checks it.
    assert!(unsafe { engine.try_free(theirs) }.is_err());
    assert_eq!(engine.stats(), before);
    free(&mut other, theirs);
    free(&mut engine, block);
    free(&mut engine, large);
}

/// Reads the first word of a block as a pointer, keeping its provenance.
///
/// # Safety
/// `block` is a block of at least 8 bytes whose memory is still allocated.
unsafe fn read_link(block: NonNull<u8>) -> *mut u8 {
    // SAFETY: forwarded from the caller; blocks are aligned to 16.
    unsafe { block.as_ptr().cast::<*mut u8>().read() }
}

/// Writes the first word of a block.
///
/// # Safety
/// As for [`read_link`], and nothing else reads or writes that word meanwhile.
unsafe fn write_link(block: NonNull<u8>, link: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe { block.as_ptr().cast::<*mut u8>().write(link) }
}

#[test]
fn check_finds_a_corrupted_free_list() {
    let mut engine = Engine::new(TestSource::default(), None);
    let a = engine.alloc(64).unwrap();
    let b = engine.alloc(64).unwrap();
    let c = engine.alloc(64).unwrap();
    let chunk = a.as_ptr() as usize & !(CHUNK_SIZE - 1);
    // SAFETY: `b` is a block of `engine`; it goes on its chunk's local free list.
    unsafe { engine.free(b) };
    engine.check().unwrap();
    // The freed block's first word is its free-list link. This keeps the memory allocated (the
    // engine holds the chunk), so the writes below are plain writes to memory we can reach.
    // SAFETY: `b`'s chunk is still held by the engine.
    let link = unsafe { read_link(b) };

    // A link into the middle of a block.
    let stray = a.as_ptr().wrapping_add(8);
    // SAFETY: as above; the engine does not run while the link is wrong.
    unsafe { write_link(b, stray) };
    let error = engine.check().unwrap_err();
    assert_eq!(error.chunk, chunk);
    assert_eq!(error.problem, Problem::StrayFreeEntry { entry: stray as usize });
    assert!(error.to_string().contains("stray free-list entry"), "{error}");

    // A link to the block itself: a cycle, as a double free would make.
    // SAFETY: as above.
    unsafe { write_link(b, b.as_ptr()) };
    assert_eq!(engine.check().unwrap_err().problem, Problem::FreeListTooLong);

    // A link to a block in use, which makes the list longer than its count says.
    // SAFETY: `c` is in use and ours, so its first word can be cleared to end the list there.
    unsafe { write_link(c, core::ptr::null_mut()) };
    // SAFETY: as above.
    unsafe { write_link(b, c.as_ptr()) };
    let problem = engine.check().unwrap_err().problem;
    assert!(
        matches!(problem, Problem::CountMismatch { local: 2, local_count: 1, .. }),
        "{problem:?}"
    );

    // SAFETY: as above; the original link puts the list back as it was.
    unsafe { write_link(b, link) };
    engine.check().unwrap();
    free(&mut engine, a);
    free(&mut engine, c);
    engine.check().unwrap();
}

#[test]
fn check_finds_a_corrupted_chunk_header() {
    let mut engine = Engine::new(TestSource::default(), None);
    let block = engine.alloc(100).unwrap();
    let header = block.as_ptr().map_addr(|addr| addr & !(CHUNK_SIZE - 1)).cast::<u16>();
    // SAFETY: the chunk header is the start of a chunk the engine holds, aligned to a chunk,
    // and begins with its 16-bit magic number.
    let magic = unsafe { header.read() };
    // SAFETY: as above; the engine does not run while the magic number is wrong.
    unsafe { header.write(!magic) };
    let error = engine.check().unwrap_err();
    assert_eq!((error.chunk, error.problem), (header as usize, Problem::BadMagic));
    assert!(error.to_string().contains("bad magic"), "{error}");
    // SAFETY: as above.
    unsafe { header.write(magic) };
    engine.check().unwrap();
    free(&mut engine, block);
}

#[test]
fn a_locked_pool_serves_its_whole_api() {
    let source = TestSource::default();
    let pool = LockedPool::new(source.clone(), Some(1 << 20));
    let block = pool.alloc(100).unwrap();
    let aligned = pool.alloc_layout(Layout::from_size_align(10, 1024).unwrap()).unwrap();
    assert_eq!(aligned.as_ptr() as usize % 1024, 0);
    let stats = pool.stats();
    assert_eq!((stats.live_blocks, stats.bytes_in_use, stats.chunks), (2, 112 + 1024, 2));
    assert_eq!(pool.available(), Some((1 << 20) - 2 * CHUNK_SIZE));
    pool.check().unwrap();
    assert!(format!("{pool:?}").contains("live_blocks: 2"));
    let shown_while_locked = pool.with(|engine| {
        let more = engine.alloc(MAX_SMALL + 1000).unwrap();
        // SAFETY: from `pool`, freed once.
        assert_eq!(unsafe { engine.try_free(more) }, Ok(()));
        // While the lock is held, `Debug` does not wait for it.
        format!("{pool:?}")
    });
    assert!(!shown_while_locked.contains("live_blocks"));
    // SAFETY: from `pool`, freed once.
    assert_eq!(unsafe { pool.try_free(block) }, Ok(()));
    // SAFETY: `block` is no longer in use, so this only checks it.
    let twice = unsafe { pool.try_free(block) };
    assert_eq!(twice, Err(FreeError::NotInUse { addr: block.as_ptr() as usize }));
    // SAFETY: from `pool`, freed once.
    unsafe { pool.try_free(aligned) }.unwrap();
    assert_eq!(pool.stats().live_blocks, 0);
    // With its cached chunks given back first, a failure of the source and of the retry after
    // a trim is final.
    assert_eq!(pool.with(|engine| engine.trim()), 2 * CHUNK_SIZE);
    source.fail_next(2);
    let before = pool.stats();
    assert_eq!(pool.alloc(1 << 19), None);
    assert_eq!(pool.stats(), before);
    assert_eq!(before.bytes_held, 0);
}

#[test]
fn a_locked_pool_is_a_global_alloc() {
    let pool = LockedPool::new(TestSource::default(), None);
    let layout = Layout::from_size_align(300, 64).unwrap();
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { GlobalAlloc::alloc(&pool, layout) };
    assert!(!block.is_null() && block as usize % 64 == 0);
    // SAFETY: the block holds 300 bytes.
    unsafe { block.write_bytes(0x42, 300) };
    // SAFETY: the block came from `pool` with `layout`; the result replaces it.
    let grown = unsafe { GlobalAlloc::realloc(&pool, block, layout, 5000) };
    assert!(!grown.is_null() && grown as usize % 64 == 0);
    // SAFETY: the first 300 bytes moved with the block.
    assert!(unsafe { core::slice::from_raw_parts(grown, 300) }.iter().all(|&b| b == 0x42));
    let grown_layout = Layout::from_size_align(5000, 64).unwrap();
    // SAFETY: `grown` came from `pool` with `grown_layout`; a too-large size fails cleanly.
    assert!(unsafe { GlobalAlloc::realloc(&pool, grown, grown_layout, usize::MAX - 64) }.is_null());
    // A shrink, and a grow that the block still holds, leave the block where it is.
    // SAFETY: `grown` is in use with `grown_layout`; the result replaces it.
    let shrunk = unsafe { GlobalAlloc::realloc(&pool, grown, grown_layout, 4000) };
    assert_eq!(shrunk, grown);
    let shrunk_layout = Layout::from_size_align(4000, 64).unwrap();
    // SAFETY: `shrunk` is in use with `shrunk_layout`; the result replaces it.
    let regrown = unsafe { GlobalAlloc::realloc(&pool, shrunk, shrunk_layout, 5000) };
    assert_eq!(regrown, grown);
    // SAFETY: `grown` is still in use with `grown_layout`.
    unsafe { GlobalAlloc::dealloc(&pool, grown, grown_layout) };
    let zeroed_layout = Layout::from_size_align(4000, 16).unwrap();
    // SAFETY: the layout has a non-zero size.
    let zeroed = unsafe { GlobalAlloc::alloc_zeroed(&pool, zeroed_layout) };
    // SAFETY: the block holds 4000 bytes.
    assert!(unsafe { core::slice::from_raw_parts(zeroed, 4000) }.iter().all(|&b| b == 0));
    // SAFETY: from `pool` with this layout.
    unsafe { GlobalAlloc::dealloc(&pool, zeroed, zeroed_layout) };
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[cfg(feature = "allocator-api2")]
#[test]
fn a_locked_pool_is_an_allocator() {
    use allocator_api2::alloc::Allocator;

    let pool = LockedPool::new(TestSource::default(), None);
    let small = Layout::from_size_align(40, 8).unwrap();
    let block = pool.allocate(small).unwrap();
    assert!(block.len() >= 40);
    let block = block.cast::<u8>();
    // A block of a size class whatever the chunk size.
    let big = Layout::from_size_align(2000, 8).unwrap();
    // SAFETY: `block` came from `pool` with `small`, and `big` is larger.
    let grown = unsafe { pool.grow(block, small, big) }.unwrap().cast::<u8>();
    // SAFETY: `grown` came from `pool` with `big`, and `small` is smaller.
    let shrunk = unsafe { pool.shrink(grown, big, small) }.unwrap().cast::<u8>();
    assert_eq!(shrunk, grown, "a shrink stays in place");
    // SAFETY: from `pool`, with the layout it now has.
    unsafe { pool.deallocate(shrunk, small) };
    assert!(pool.allocate(Layout::from_size_align(8, 1 << 20).unwrap()).is_err());
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn a_locked_pool_is_shared_by_threads() {
    let source = TestSource::default();
    let pool = LockedPool::new(source.clone(), Some(64 << 20));
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let pool = &pool;
            scope.spawn(move || {
                let mut blocks = Vec::new();
                for i in 0..if cfg!(miri) { 60 } else { 5_000usize } {
                    let size = (i * 37 + worker * 11) % 3000;
                    let block = pool.alloc(size).unwrap();
                    // SAFETY: the block holds at least one byte.
                    unsafe { block.as_ptr().write(worker as u8) };
                    blocks.push(block);
                    if i % 3 == 0 {
                        let block = blocks.swap_remove(i % blocks.len());
                        // SAFETY: the block is this thread's, from `pool`, freed once.
                        unsafe { pool.try_free(block) }.unwrap();
                    }
                }
                for block in blocks {
                    // SAFETY: each block holds the byte this thread wrote.
                    assert_eq!(unsafe { block.as_ptr().read() }, worker as u8);
                    // SAFETY: the block is this thread's, from `pool`, freed once.
                    unsafe { pool.try_free(block) }.unwrap();
                }
            });
        }
    });
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
    drop(pool);
    assert_eq!(source.chunks_out(), 0);
}

/// A buffer for a region source, and the region source over it.
fn region(len: usize) -> (Vec<u8>, RegionSource) {
    let mut buffer = vec![0u8; len];
    // SAFETY: the buffer is not touched again until the source and its chunks are gone: every
    // test below binds the source (or the engine owning it) after the buffer, so it is dropped
    // first, and reads the buffer only for its address and length.
    let source = unsafe { RegionSource::new(buffer.as_mut_ptr(), len) };
    (buffer, source)
}

fn units_in(buffer: &[u8]) -> usize {
    let lead = buffer.as_ptr().align_offset(CHUNK_SIZE);
    buffer.len().saturating_sub(lead) / CHUNK_SIZE
}

#[test]
fn a_region_hands_out_every_whole_unit_and_merges_them_back() {
    let small = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let (buffer, mut source) = region(12 * CHUNK_SIZE + 1234);
    let units = units_in(&buffer);
    let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
    assert!(units >= 11);
    assert_eq!(source.free_bytes(), units * CHUNK_SIZE);
    let mut chunks = Vec::new();
    while let Some(chunk) = source.acquire(small) {
        let addr = chunk.as_ptr() as usize;
        assert_eq!(addr % CHUNK_SIZE, 0);
        assert!(range.contains(&addr) && range.contains(&(addr + CHUNK_SIZE - 1)));
        chunks.push(chunk);
    }
    assert_eq!(chunks.len(), units);
    assert_eq!(source.free_bytes(), 0);
    // Every other unit back: plenty of bytes, but no two adjacent.
    let mut odd = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: the chunk came from `acquire` with `small` and is not used again.
            unsafe { source.release(chunk, small) };
        } else {
            odd.push(chunk);
        }
    }
    let two = Layout::from_size_align(2 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    assert_eq!(source.acquire(two), None);
    // The rest, in reverse order: neighbours on both sides merge.
    for chunk in odd.into_iter().rev() {
        // SAFETY: as above.
        unsafe { source.release(chunk, small) };
    }
    assert_eq!(source.free_bytes(), units * CHUNK_SIZE);
    let whole = Layout::from_size_align(units * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let all = source.acquire(whole).unwrap();
    assert_eq!(source.free_bytes(), 0);
    // SAFETY: as above.
    unsafe { source.release(all, whole) };
    // A stricter alignment than a unit is met by skipping units.
    let aligned = Layout::from_size_align(CHUNK_SIZE, 4 * CHUNK_SIZE).unwrap();
    let chunk = source.acquire(aligned).unwrap();
    assert_eq!(chunk.as_ptr() as usize % (4 * CHUNK_SIZE), 0);
    // SAFETY: as above.
    unsafe { source.release(chunk, aligned) };
    assert_eq!(source.free_bytes(), units * CHUNK_SIZE);
}

#[test]
fn a_region_takes_every_chunk_back_at_once_when_its_pool_goes() {
    let small = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let two = Layout::from_size_align(2 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let (buffer, mut source) = region(10 * CHUNK_SIZE);
    let units = units_in(&buffer);
    let large = source.acquire(two).unwrap();
    let chunks: Vec<_> = core::iter::from_fn(|| source.acquire(small)).collect();
    assert_eq!(chunks.len(), units - 2);
    // A pool gives its large chunks back one by one before it hands back the small ones at once.
    // SAFETY: the chunk came from `acquire` with `two` and is not used again.
    unsafe { source.release(large, two) };
    // SAFETY: no small chunk is used again, and the large one is back.
    assert!(unsafe { source.release_all_small() });
    assert_eq!(source.free_bytes(), units * CHUNK_SIZE);
    let whole = Layout::from_size_align(units * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    let all = source.acquire(whole).unwrap();
    assert_eq!(source.free_bytes(), 0);
    // SAFETY: the chunk came from `acquire` with `whole` and is not used again.
    unsafe { source.release(all, whole) };
    assert_eq!(source.free_bytes(), units * CHUNK_SIZE);
}

#[test]
fn a_region_smaller_than_a_unit_has_nothing_to_give() {
    let (buffer, source) = region(CHUNK_SIZE - 1);
    assert_eq!(source.free_bytes(), 0);
    let mut engine = Engine::new(source, None);
    assert_eq!(engine.alloc(16), None);
    assert_eq!(engine.alloc(100_000), None);
    engine.check().unwrap();
    drop(engine);
    drop(buffer);
}

#[test]
fn an_engine_over_a_region_fills_it_and_gets_it_back_whole() {
    // Twenty units, or nineteen when the region starts past a unit's boundary.
    for lead in [0, 100] {
        // Room for the region past the lead, wherever the buffer starts.
        let mut buffer = vec![0u8; 22 * CHUNK_SIZE];
        let start = buffer.as_ptr().align_offset(CHUNK_SIZE) + lead;
        let region = &mut buffer[start..start + 20 * CHUNK_SIZE];
        let units = units_in(region);
        assert_eq!(units, if lead == 0 { 20 } else { 19 });
        // SAFETY: the buffer is not touched again until the engine is gone, which happens
        // before the loop's next round.
        let source = unsafe { RegionSource::new(region.as_mut_ptr(), region.len()) };
        fill_and_get_back(Engine::new(source, None), units);
    }
}

/// Fills an engine over a region of `units` units with small blocks, then with large ones, and
/// frees them all: the region comes back whole each time.
fn fill_and_get_back(mut engine: Engine<RegionSource>, units: usize) {
    // Small blocks until the region runs out of units.
    let mut blocks = Vec::new();
    while let Some(block) = engine.alloc(1024) {
        blocks.push(block);
    }
    assert_eq!(engine.stats().chunks, units);
    assert_eq!(engine.source().free_bytes(), 0);
    engine.check().unwrap();
    for block in blocks.drain(..) {
        free(&mut engine, block);
    }
    // Large blocks, each a whole number of units in the region.
    let mut large = Vec::new();
    while let Some(block) = engine.alloc(2 * CHUNK_SIZE - 64) {
        large.push(block);
    }
    assert_eq!(large.len(), units / 2);
    // A quarter of a chunk: the largest alignment that 16 KiB chunks serve from a chunk of its
    // own, and 4 KiB chunks from a class; either way it takes the odd unit left, if there is one.
    let align = CHUNK_SIZE / 4;
    let aligned = engine.alloc_layout(Layout::from_size_align(100, align).unwrap());
    if units % 2 == 1 {
        assert_eq!(aligned.unwrap().as_ptr() as usize % align, 0);
    }
    for block in large.into_iter().chain(aligned) {
        free(&mut engine, block);
    }
    // Everything merged back: one block can take the whole region.
    let whole = engine.alloc(units * CHUNK_SIZE - 64).unwrap();
    assert_eq!(engine.stats().chunks, 0);
    assert_eq!(engine.source().free_bytes(), 0);
    free(&mut engine, whole);
    assert_eq!(engine.source().free_bytes(), units * CHUNK_SIZE);
    engine.check().unwrap();
}

#[test]
fn a_region_can_come_from_a_static_arena() {
    const LEN: usize = 8 * CHUNK_SIZE;
    static mut ARENA: [u8; LEN] = [0; LEN];
    // SAFETY: this test is the only user of `ARENA`, and it runs once.
    let arena = unsafe { core::slice::from_raw_parts_mut((&raw mut ARENA).cast::<u8>(), LEN) };
    let mut engine = Engine::new(RegionSource::from_static(arena), Some(LEN));
    let block = engine.alloc(100).unwrap();
    let start = &raw const ARENA as usize;
    assert!((start..start + LEN).contains(&(block.as_ptr() as usize)));
    free(&mut engine, block);
    engine.check().unwrap();
}

#[test]
fn engine_debug_output_shows_the_stats() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), Some(CHUNK_SIZE));
    let block = engine.alloc(1).unwrap();
    let text = format!("{engine:?}");
    assert!(text.starts_with("Engine { stats: Stats {"), "{text}");
    assert!(text.contains("live_blocks: 1"), "{text}");
    assert_eq!(engine.limit(), Some(CHUNK_SIZE));
    assert_eq!(engine.source().chunks_out(), 1);
    source.fail_next(1);
    assert_eq!(engine.alloc(5000), None);
    free(&mut engine, block);
}

// With the `valgrind` feature the engine tells memcheck that never-used memory is not to be
// touched, so this test's reads of it would be reported; memcheck itself checks the rule there.
#[cfg(not(feature = "valgrind"))]
#[test]
fn never_used_blocks_are_not_touched_until_they_are_carved() {
    let mut buffer = vec![0xAAu8; 3 * CHUNK_SIZE];
    // SAFETY: the buffer is not touched again until the engine is gone.
    let source = unsafe { RegionSource::new(buffer.as_mut_ptr(), buffer.len()) };
    let mut engine = Engine::new(source, None);
    let block = engine.alloc(16).unwrap();
    let chunk = block.as_ptr().map_addr(|addr| addr & !(CHUNK_SIZE - 1));
    // With the `pages` feature, a chunk's first carve is its first block alone; without it,
    // the first page of blocks.
    let carved_end =
        if cfg!(all(feature = "pages", not(feature = "small-chunks"))) { 64 + 16 } else { 4096 };
    // SAFETY: the chunk is `CHUNK_SIZE` bytes of the buffer, all of them initialized.
    let untouched = (carved_end..CHUNK_SIZE).all(|at| unsafe { chunk.add(at).read() } == 0xAA);
    assert!(untouched, "nothing past the first carve is touched");
    // Batches double as the chunk fills, and stop at the end of a page.
    let blocks: Vec<_> = (0..100).map(|_| engine.alloc(16).unwrap()).collect();
    // SAFETY: as above.
    let untouched = (4096..CHUNK_SIZE).all(|at| unsafe { chunk.add(at).read() } == 0xAA);
    assert!(untouched, "the blocks past the first page are not carved yet");
    for block in blocks {
        free(&mut engine, block);
    }
    free(&mut engine, block);
    drop(engine);
    drop(buffer);
}

/// A fresh chunk of six blocks or fewer carves them one at a time: handing out a block writes
/// the chunk's header and that block, and no other byte of it.
#[cfg(not(feature = "valgrind"))]
#[test]
fn a_chunk_of_a_few_large_blocks_touches_only_the_blocks_it_hands_out() {
    let size = if CHUNK_SIZE == 4096 { 640 } else { 2720 };
    let mut buffer = vec![0xAAu8; 3 * CHUNK_SIZE];
    // SAFETY: the buffer is not touched again until the engine is gone.
    let source = unsafe { RegionSource::new(buffer.as_mut_ptr(), buffer.len()) };
    let mut engine = Engine::new(source, None);
    let mut blocks = Vec::new();
    for _ in 0..2 {
        blocks.push(engine.alloc(size).unwrap());
        let chunk = blocks[0].as_ptr().map_addr(|addr| addr & !(CHUNK_SIZE - 1));
        let handed_out = |at: usize| {
            blocks.iter().any(|block| {
                (0..size).contains(&(chunk.addr() + at).wrapping_sub(block.as_ptr().addr()))
            })
        };
        // SAFETY: the chunk is `CHUNK_SIZE` bytes of the buffer, all of them initialized.
        let untouched = (64..CHUNK_SIZE)
            .filter(|&at| !handed_out(at))
            .all(|at| unsafe { chunk.add(at).read() } == 0xAA);
        assert!(
            untouched,
            "{} blocks handed out: a byte of another block was written",
            blocks.len()
        );
    }
    for block in blocks {
        free(&mut engine, block);
    }
    drop(engine);
    drop(buffer);
}

#[test]
fn emptied_chunks_wait_as_spares_and_are_revived_before_the_source_is_asked() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let per_chunk = (CHUNK_SIZE - 64) / 64;
    let blocks: Vec<_> = (0..6 * per_chunk).map(|_| engine.alloc(64).unwrap()).collect();
    assert_eq!(source.chunks_out(), 6);
    for &block in &blocks {
        free(&mut engine, block);
    }
    // The head stays, up to `SPARE_CHUNKS` more wait as spares, the rest went back.
    assert_eq!(source.chunks_out(), 1 + melon_alloc_core::SPARE_CHUNKS);
    let acquired = |source: &TestSource| {
        let ledger = source.ledger();
        ledger.out.len() + ledger.released
    };
    let before = acquired(&source);
    let again: Vec<_> = (0..5 * per_chunk).map(|_| engine.alloc(64).unwrap()).collect();
    assert_eq!(acquired(&source), before, "no new chunk");
    engine.check().unwrap();
    for block in again {
        free(&mut engine, block);
    }
}

/// The blocks of [`refill_after_scattered_frees`]: in address order, in the order they were
/// freed, and in the order they were handed out the second time.
struct Refill {
    in_address_order: Vec<NonNull<u8>>,
    freed: Vec<NonNull<u8>>,
    again: Vec<NonNull<u8>>,
}

/// Fills a fresh chunk (or page) of `engine` with `count` blocks of `size` bytes, frees them out
/// of address order (the odd ones, then the even ones: no two freed in a row are neighbours),
/// and allocates as many again.
fn refill_after_scattered_frees<S: ChunkSource>(
    engine: &mut Engine<S>,
    size: usize,
    count: usize,
) -> Refill {
    let blocks: Vec<_> = (0..count).map(|_| engine.alloc(size).unwrap()).collect();
    let mut in_address_order = blocks.clone();
    in_address_order.sort();
    let freed: Vec<_> =
        blocks.iter().skip(1).step_by(2).chain(blocks.iter().step_by(2)).copied().collect();
    for &block in &freed {
        free(engine, block);
    }
    let again = (0..count).map(|_| engine.alloc(size).unwrap()).collect();
    engine.check().unwrap();
    Refill { in_address_order, freed, again }
}

/// A chunk whose blocks all came back out of address order hands them out again in address
/// order, as a new chunk does, rather than in the order they were freed; one whose blocks came
/// back in the order they were handed out keeps its list, and hands them out last freed first.
#[test]
fn a_chunk_emptied_out_of_order_hands_its_blocks_out_in_address_order_again() {
    let mut engine = Engine::new(TestSource::default(), None);
    let per_chunk = (CHUNK_SIZE - 64) / 64;
    let Refill { in_address_order, again, .. } =
        refill_after_scattered_frees(&mut engine, 64, per_chunk);
    assert_eq!(again, in_address_order, "carved anew, in address order");

    for &block in &again {
        free(&mut engine, block);
    }
    let last_freed_first: Vec<_> = again.iter().rev().copied().collect();
    let kept: Vec<_> = (0..per_chunk).map(|_| engine.alloc(64).unwrap()).collect();
    assert_eq!(kept, last_freed_first, "the list, in order, is followed as it is");
    engine.check().unwrap();
    for block in kept {
        free(&mut engine, block);
    }
    assert_eq!(engine.stats().live_blocks, 0);
}

/// Blocks larger than 256 bytes are few enough a chunk that their list is followed as it was
/// left, scattered or not: the last one freed comes back first.
#[test]
fn a_chunk_of_blocks_above_256_bytes_keeps_its_scattered_list() {
    let mut engine = Engine::new(TestSource::default(), None);
    let per_chunk = (CHUNK_SIZE - 64) / 320;
    let Refill { in_address_order, freed, again } =
        refill_after_scattered_frees(&mut engine, 320, per_chunk);
    assert_ne!(again, in_address_order);
    assert_eq!(again, freed.into_iter().rev().collect::<Vec<_>>(), "last freed first");
    for block in again {
        free(&mut engine, block);
    }
}

#[test]
fn an_engine_that_moved_finds_its_blocks_by_its_lists_not_by_their_owner_address() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let block = engine.alloc(64).unwrap();
    let other = engine.alloc(64).unwrap();
    let mut moved = Box::new(engine);
    // The chunk still names the engine's old address...
    let here: *const Engine<TestSource> = &*moved;
    // SAFETY: `block` is an in-use block of a live engine.
    assert_ne!(unsafe { melon_alloc_core::plumbing::owner_of(block) }, here.cast());
    // ...while the checked operations search the engine's own lists, which moved with it.
    assert_eq!(moved.validate(block), Ok(()));
    // SAFETY: the block came from this engine and is not used again.
    assert_eq!(unsafe { moved.try_free(block) }, Ok(()));
    // A plain free takes it too, a debug build's check included, which searches the lists
    // when the chunk names another address.
    // SAFETY: as above.
    unsafe { moved.free(other) };
    assert_eq!(moved.stats().live_blocks, 0);
    // The scan reports the stale owner address of the chunk it still holds.
    assert_eq!(moved.check().map_err(|error| error.problem), Err(Problem::WrongOwner));
    drop(moved);
    assert_eq!(source.chunks_out(), 0, "dropping it still gives every chunk back");
}

/// What the `small-chunks` feature is for: a region of 64 KiB, as a microcontroller has, holds a
/// block of each of eight classes at once, where 16 KiB chunks leave room for four.
#[cfg(feature = "small-chunks")]
#[test]
fn small_chunks_let_a_64_kib_region_hold_eight_classes_at_once() {
    assert_eq!((CHUNK_SIZE, MAX_SMALL), (4096, 2016));
    // One unit more than 64 KiB, so that the region holds 16 whole units wherever it lies.
    let (buffer, source) = region(64 * 1024 + CHUNK_SIZE);
    assert!(units_in(&buffer) >= 16);
    let mut engine = Engine::new(source, None);
    let sizes = [16, 48, 112, 200, 400, 800, 1500, 3000];
    let blocks: Vec<_> = sizes.iter().map(|&size| engine.alloc(size).unwrap()).collect();
    assert_eq!(engine.stats().chunks + engine.stats().large_blocks, 8);
    // Half the region is still free, in one run.
    assert!(engine.alloc(7 * CHUNK_SIZE).is_some());
    // A block must start within a chunk's length of its chunk: 4 KiB alignments are refused.
    assert_eq!(engine.alloc_layout(Layout::from_size_align(16, 4096).unwrap()), None);
    engine.check().unwrap();
    for block in blocks {
        free(&mut engine, block);
    }
    drop(engine);
    drop(buffer);
}

/// What `small-chunks` is for: with 16 KiB chunks, a 64 KiB region holds blocks of four
/// classes at once, and a fifth class finds no chunk.
#[cfg(not(feature = "small-chunks"))]
#[test]
fn sixteen_kib_chunks_let_a_64_kib_region_hold_four_classes_at_once() {
    const REGION: usize = 64 * 1024;
    assert_eq!(CHUNK_SIZE, 16 * 1024);
    let (buffer, source) = support::aligned_region(REGION / CHUNK_SIZE, CHUNK_SIZE);
    let mut engine = Engine::new(source, None);
    let blocks: Vec<_> =
        [16, 48, 112, 200].iter().map(|&size| engine.alloc(size).unwrap()).collect();
    assert_eq!(engine.stats().chunks, 4);
    assert_eq!(engine.alloc(400), None, "no chunk is left for a fifth class");
    engine.check().unwrap();
    for block in blocks {
        free(&mut engine, block);
    }
    drop(engine);
    drop(buffer);
}

/// Bytes of each page of a paged chunk, and the blocks of 64 bytes one holds after its header.
#[cfg(all(feature = "pages", not(feature = "small-chunks")))]
const PAGE: usize = CHUNK_SIZE / 4;

#[cfg(all(feature = "pages", not(feature = "small-chunks")))]
#[test]
fn a_paged_engine_gives_the_classes_it_barely_uses_a_page_each() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None).with_pages();
    // Eight classes, a block each: two chunks of four pages, not eight chunks.
    let sizes = [16, 96, 160, 320, 640, 896, 1280, 2720];
    let blocks: Vec<_> = sizes.iter().map(|&size| engine.alloc(size).unwrap()).collect();
    assert_eq!(source.chunks_out(), 2);
    let stats = engine.stats();
    assert_eq!((stats.bytes_held, stats.chunks, stats.live_blocks), (2 * CHUNK_SIZE, 2, 8));
    engine.check().unwrap();
    // A class whose blocks do not fit a page takes a whole chunk.
    let whole = engine.alloc(5000).unwrap();
    assert_eq!(source.chunks_out(), 3);
    for block in blocks.into_iter().chain([whole]) {
        free(&mut engine, block);
    }
    engine.check().unwrap();
    // Each class keeps its emptied page for its next block until a trim; then every page of a
    // chunk is unused, and the chunk goes back.
    assert_eq!(engine.trim(), 3 * CHUNK_SIZE);
    assert_eq!(source.chunks_out(), 0);
    engine.check().unwrap();
    // Dropped with blocks in use, the engine gives every chunk back, split or whole.
    for size in sizes.into_iter().chain([5000, 100_000]) {
        engine.alloc(size).unwrap();
    }
    assert_eq!(source.chunks_out(), 4);
    drop(engine);
    assert_eq!(source.chunks_out(), 0);
}

/// A page, as a child pool's classes get, starts over as a whole chunk does once its blocks all
/// came back out of address order.
#[cfg(all(feature = "pages", not(feature = "small-chunks")))]
#[test]
fn a_page_emptied_out_of_order_hands_its_blocks_out_in_address_order_again() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None).with_pages();
    let per_page = (PAGE - 64) / 64;
    let Refill { in_address_order, again, .. } =
        refill_after_scattered_frees(&mut engine, 64, per_page);
    assert_eq!(source.chunks_out(), 1, "one page of one split chunk");
    assert_eq!(again, in_address_order);
    for block in again {
        free(&mut engine, block);
    }
}

#[cfg(all(feature = "pages", not(feature = "small-chunks")))]
#[test]
fn a_class_that_fills_its_page_takes_the_unused_pages_and_then_whole_chunks() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None).with_pages();
    let (per_page, per_chunk) = ((PAGE - 64) / 64, (CHUNK_SIZE - 64) / 64);
    let mut blocks: Vec<_> = (0..4 * per_page).map(|_| engine.alloc(64).unwrap()).collect();
    assert_eq!(source.chunks_out(), 1, "four pages of one chunk");
    blocks.extend((0..per_chunk).map(|_| engine.alloc(64).unwrap()));
    assert_eq!(source.chunks_out(), 2, "then a whole chunk");
    assert_eq!(engine.stats().chunks, 2);
    engine.check().unwrap();
    // Freed in a scattered order, with the invariants checked along the way.
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    let mut seed = 0x9e37_79b9_u64;
    for i in (1..order.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    for (done, &index) in order.iter().enumerate() {
        free(&mut engine, blocks[index]);
        if done % 50 == 0 {
            engine.check().unwrap();
        }
    }
    assert_eq!(engine.stats().live_blocks, 0);
    engine.check().unwrap();
    engine.trim();
    assert_eq!(source.chunks_out(), 0);
    assert_eq!(source.ledger().released, 2);
}

#[cfg(all(feature = "pages", not(feature = "small-chunks")))]
#[test]
fn a_pointer_into_a_page_is_checked_as_one_into_a_chunk() {
    let mut engine = Engine::new(TestSource::default(), None).with_pages();
    let first = engine.alloc(64).unwrap();
    let second = engine.alloc(300).unwrap();
    let chunk = first.as_ptr().addr() & !(CHUNK_SIZE - 1);
    assert_ne!(first.as_ptr().addr() & !(PAGE - 1), second.as_ptr().addr() & !(PAGE - 1));
    assert_eq!(engine.validate(second), Ok(()));
    let inside = second.as_ptr().wrapping_add(16);
    let inside = NonNull::new(inside).unwrap();
    assert_eq!(engine.validate(inside), Err(FreeError::Interior { addr: inside.as_ptr().addr() }));
    // Two pages of the chunk have no class yet: nothing in them is in use. A split chunk hands
    // its pages out in turns from one its address picks; the last to go is unused.
    let last = chunk + (colour(chunk / CHUNK_SIZE) + 3) % 4 * PAGE;
    let unused = NonNull::new(first.as_ptr().with_addr(last + 64)).unwrap();
    assert_eq!(engine.validate(unused), Err(FreeError::NotInUse { addr: unused.as_ptr().addr() }));
    // SAFETY: the block came from this engine and is not used again.
    assert_eq!(unsafe { engine.try_free(second) }, Ok(()));
    // SAFETY: `try_free` finds the block free and changes nothing.
    let again = unsafe { engine.try_free(second) };
    assert_eq!(again, Err(FreeError::NotInUse { addr: second.as_ptr().addr() }));
    // SAFETY: the block is in use in this engine.
    assert_eq!(unsafe { engine.usable_size(first) }, 64);
    free(&mut engine, first);
    engine.check().unwrap();
}

/// A fresh chunk of a class with six blocks or fewer hands them out starting from one its address
/// picks, then in address order round to the one before it, each once; a block not handed out
/// yet, wherever it lies, is refused by the checked free as never handed out, and a pointer past
/// the last block as one that starts no block.
#[test]
fn a_fresh_chunk_of_a_few_large_blocks_hands_them_out_from_one_its_address_picks() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    // The classes of six blocks or fewer a chunk, each block after the 64-byte header.
    let classes: &[(usize, usize)] = if CHUNK_SIZE == 4096 {
        &[(640, 6), (768, 5), (896, 4), (1344, 3), (2016, 2)]
    } else {
        &[(2720, 6), (3264, 5), (4080, 4), (5440, 3), (8160, 2)]
    };
    for &(size, capacity) in classes {
        let first = engine.alloc(size).unwrap();
        let chunk = first.as_ptr().addr() & !(CHUNK_SIZE - 1);
        let start = colour(chunk / CHUNK_SIZE) % capacity;
        let block_at = |index: usize| chunk + 64 + index * size;
        assert_eq!(first.as_ptr().addr(), block_at(start), "{size}-byte blocks");
        // The blocks not handed out yet, the one just before the first among them.
        for index in (0..capacity).filter(|&index| index != start) {
            let pointer = NonNull::new(first.as_ptr().with_addr(block_at(index))).unwrap();
            let addr = block_at(index);
            assert_eq!(engine.validate(pointer), Err(FreeError::NotInUse { addr }));
        }
        let mut blocks = vec![first];
        blocks.extend((1..capacity).map(|_| engine.alloc(size).unwrap()));
        for (turn, block) in blocks.iter().enumerate() {
            let index = (start + turn) % capacity;
            assert_eq!(block.as_ptr().addr(), block_at(index), "{size}-byte block {turn}");
            assert_eq!(engine.validate(*block), Ok(()));
        }
        // Where the bytes after the last block leave room for the start of one more (4 KiB
        // chunks of 640, 768 and 896-byte blocks), a pointer there starts no block.
        let past = block_at(capacity);
        if past < chunk + CHUNK_SIZE {
            let pointer = NonNull::new(first.as_ptr().with_addr(past)).unwrap();
            assert_eq!(engine.validate(pointer), Err(FreeError::Interior { addr: past }));
        }
        // The chunk is used up: the next block comes from another.
        let next = engine.alloc(size).unwrap();
        assert_ne!(next.as_ptr().addr() & !(CHUNK_SIZE - 1), chunk);
        engine.check().unwrap();
        for block in blocks.into_iter().chain([next]) {
            free(&mut engine, block);
        }
    }
    engine.check().unwrap();
    assert_eq!(engine.stats().live_blocks, 0);
}

/// A pointer that reaches its block alone, as std's `Box<[T]>` hands one to `dealloc`, is enough
/// for every call that finds the block's header from its address: the header lies outside the
/// block, and under Miri reading it through the caller's pointer would be undefined behaviour.
#[test]
fn a_pointer_that_reaches_only_its_block_finds_the_header_outside_it() {
    let source = TestSource::default();
    let mut engine = Engine::new(source, None).with_pages();
    for size in [24, 700, 3000, MAX_SMALL + 1] {
        let block = engine.alloc(size).unwrap();
        // A pointer retagged through a slice of the block's own bytes, and so reaching no further.
        // SAFETY: the block holds `size` bytes and nothing else uses them.
        let bytes = unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), size) };
        bytes.fill(7);
        let narrow = NonNull::from(bytes).cast::<u8>();
        // SAFETY: `narrow` is the address of a block in use in `engine`.
        assert!(unsafe { engine.usable_size(narrow) } >= size);
        // SAFETY: as above; `engine` is alive.
        let owner = unsafe { melon_alloc_core::plumbing::owner_of(narrow) };
        assert_eq!(owner, core::ptr::from_ref(&engine).cast());
        // SAFETY: as above, and the block is not used again.
        unsafe { engine.free(narrow) };
    }
    assert_eq!(engine.stats().live_blocks, 0);
    engine.check().unwrap();
}

/// As a `GlobalAlloc`, a locked pool serves layouts aligned to a whole chunk or more, which no
/// block of a size class or large chunk can be, with chunks of their own from its source: they
/// count against the limit, move on `realloc` with their contents, and go back to the source.
#[cfg(feature = "chunk-aligned")]
#[test]
fn a_global_alloc_layout_aligned_to_a_chunk_or_more_gets_a_chunk_of_its_own() {
    let source = TestSource::default();
    let pool = LockedPool::new(source.clone(), Some(8 * CHUNK_SIZE));
    // Longer than a chunk, and within the limit with the block it moves from.
    let grown_size = 2 * CHUNK_SIZE + 100;
    for align in [CHUNK_SIZE, 4 * CHUNK_SIZE] {
        let layout = Layout::from_size_align(3000, align).unwrap();
        // SAFETY: the layout's size is not zero.
        let block = unsafe { GlobalAlloc::alloc_zeroed(&pool, layout) };
        assert!(!block.is_null());
        assert_eq!(block as usize % align, 0);
        // SAFETY: the block holds 3000 bytes, zeroed.
        let bytes = unsafe { core::slice::from_raw_parts_mut(block, 3000) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0x5a);
        assert_eq!(pool.stats().bytes_held, 3008);
        // SAFETY: the block came from this pool with `layout`; the size rounded to `align` fits.
        let grown = unsafe { GlobalAlloc::realloc(&pool, block, layout, grown_size) };
        assert!(!grown.is_null());
        assert_eq!(grown as usize % align, 0);
        // SAFETY: the first 3000 bytes moved with the block.
        assert!(unsafe { core::slice::from_raw_parts(grown, 3000) }.iter().all(|&b| b == 0x5a));
        // Past the limit: refused, the block left as it was.
        // SAFETY: as above, with the grown size.
        let refused = unsafe {
            GlobalAlloc::realloc(&pool, grown, layout_of(grown_size, align), 9 * CHUNK_SIZE)
        };
        assert!(refused.is_null());
        // SAFETY: the block came from this pool with this layout and is not used again.
        unsafe { GlobalAlloc::dealloc(&pool, grown, layout_of(grown_size, align)) };
        assert_eq!(pool.stats().bytes_held, 0);
    }
    assert_eq!(source.chunks_out(), 0);
    pool.check().unwrap();
}

/// A block with a chunk of its own, shrunk through `GlobalAlloc::realloc` over a source that can
/// neither shorten its chunk nor give a new one, is refused with null and stays the caller's,
/// whole: under memcheck (`cargo xtask valgrind`), its tail is still accessible.
#[cfg(feature = "chunk-aligned")]
#[test]
fn a_refused_shrink_of_a_chunk_aligned_block_leaves_it_whole() {
    let source = TestSource::default();
    let pool = LockedPool::new(source.clone(), None);
    let layout = Layout::from_size_align(3 * CHUNK_SIZE, CHUNK_SIZE).unwrap();
    // SAFETY: the layout's size is not zero.
    let block = unsafe { GlobalAlloc::alloc(&pool, layout) };
    assert!(!block.is_null());
    // SAFETY: the block holds `layout.size()` bytes.
    unsafe { block.write_bytes(0x42, layout.size()) };
    // The source refuses the chunk, and again after the engine has given back what it kept.
    source.fail_next(2);
    // SAFETY: the block came from this pool with `layout`, and the new size is not zero.
    assert!(unsafe { GlobalAlloc::realloc(&pool, block, layout, 64) }.is_null());
    // SAFETY: the block still holds `layout.size()` bytes.
    unsafe { block.add(layout.size() - 1).write(0x43) };
    // SAFETY: as above.
    let whole = unsafe { core::slice::from_raw_parts(block, layout.size()) };
    assert!(whole[..layout.size() - 1].iter().all(|&b| b == 0x42));
    assert_eq!(pool.stats().bytes_held, layout.size());
    // SAFETY: the block came from this pool with `layout` and is not used again.
    unsafe { GlobalAlloc::dealloc(&pool, block, layout) };
    assert_eq!(source.chunks_out(), 0);
}

/// A child dropped while a block aligned to a chunk, a chunk of its own, is still out gives its
/// other chunks back to its parent; that one stays lent, as a forgotten child's chunks do.
#[cfg(feature = "chunk-aligned")]
#[test]
fn a_childs_chunk_aligned_block_still_out_stays_lent_when_the_child_drops() {
    let source = TestSource::default();
    let parent = LockedPool::new(source.clone(), None);
    let child = parent.child();
    let small = child.alloc(64).unwrap();
    assert_eq!(parent.stats().bytes_lent, CHUNK_SIZE);
    let layout = Layout::from_size_align(3000, CHUNK_SIZE).unwrap();
    // SAFETY: the layout's size is not zero.
    let aligned = unsafe { GlobalAlloc::alloc(&child, layout) };
    assert!(!aligned.is_null());
    let aligned_chunk = parent.stats().bytes_lent - CHUNK_SIZE;
    assert!(aligned_chunk >= 3000, "{aligned_chunk}");
    // SAFETY: the block came from `child` and is not used again.
    unsafe { child.free(small) };
    drop(child);
    assert_eq!(parent.stats().bytes_lent, aligned_chunk, "the aligned block's chunk");
    // Given back so that nothing leaks: the parent lent the chunk, and its own path for such a
    // layout gives a chunk it lent back to the source.
    // SAFETY: the block is a chunk the parent lent for `layout`, and not used again.
    unsafe { GlobalAlloc::dealloc(&parent, aligned, layout) };
    assert_eq!(parent.stats().bytes_lent, 0);
    drop(parent);
    assert_eq!(source.chunks_out(), 0);
}

/// Without the `chunk-aligned` feature, a `GlobalAlloc` layout aligned to a chunk or more is
/// refused, and the pool takes nothing for it.
#[cfg(not(feature = "chunk-aligned"))]
#[test]
fn without_the_feature_a_global_alloc_layout_aligned_to_a_chunk_is_refused() {
    let source = TestSource::default();
    let pool = LockedPool::new(source.clone(), None);
    for align in [CHUNK_SIZE, 4 * CHUNK_SIZE] {
        // SAFETY: the layout's size is not zero.
        let block = unsafe { GlobalAlloc::alloc(&pool, layout_of(3000, align)) };
        assert!(block.is_null(), "aligned to {align}");
    }
    assert_eq!(pool.stats().bytes_held, 0);
    assert_eq!(source.chunks_out(), 0);
}

fn layout_of(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// An explicit trim has the source let go of the pages of its free memory; the trim an
/// allocation makes before it retries a refused chunk does not, since the retry would take
/// those pages again at once (for a root at its limit, that was a system call per free chunk on
/// every refused allocation).
#[test]
fn only_an_explicit_trim_has_the_source_discard_its_free_pages() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), Some(2 * CHUNK_SIZE));
    let block = engine.alloc(64).unwrap();
    for _ in 0..10 {
        assert_eq!(engine.alloc(4 * CHUNK_SIZE), None, "past the limit");
    }
    source.fail_next(2);
    assert_eq!(engine.alloc(MAX_SMALL + 1), None, "the source refused, before and after a trim");
    assert_eq!(source.ledger().discards, 0);
    engine.trim();
    assert_eq!(source.ledger().discards, 1);
    support::free(&mut engine, block);
}

/// A large block resized to less than half its length, over a source that cannot shorten a
/// chunk in place, moves to a shorter block with its contents when one can be had, and stays
/// where it is, whole, when none can: a shrink does not fail. Shrunk to half or more, it stays.
/// (`realloc`, Melon's contract, keeps every shrunk block where it is.)
#[test]
fn a_large_block_shrunk_below_half_moves_when_it_can_and_stays_when_it_cannot() {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), None);
    let block = engine.alloc(60_000).unwrap();
    // SAFETY: the block holds 60,000 bytes.
    unsafe { block.as_ptr().write_bytes(0x6b, 60_000) };
    // SAFETY: the block came from this engine; only the pointer returned is used afterwards.
    let half = unsafe { engine.resize(block, layout_of(30_000, 16)) }.unwrap();
    assert_eq!(half, block, "half its length: in place");
    // The source refuses the chunk, and again after the engine has given back what it kept.
    source.fail_next(2);
    // SAFETY: as above.
    let kept = unsafe { engine.resize(half, layout_of(100, 16)) }.unwrap();
    assert_eq!(kept, block, "no shorter block to be had: in place");
    // SAFETY: as above.
    let moved = unsafe { engine.resize(kept, layout_of(100, 16)) }.unwrap();
    assert_ne!(moved, block, "moved to a block of a size class");
    // SAFETY: the first 100 bytes moved with the block.
    assert!(unsafe { core::slice::from_raw_parts(moved.as_ptr(), 100) }.iter().all(|&b| b == 0x6b));
    assert_eq!(engine.stats().bytes_held, CHUNK_SIZE, "the large chunk went back");
    // SAFETY: the block came from this engine and is not used again.
    unsafe { engine.free(moved) };
    engine.check().unwrap();
}

/// Through `GlobalAlloc` the same holds: a large block shrunk below half its length over a
/// source that refuses moves stays where it is, rather than `realloc` returning null.
#[test]
fn a_global_alloc_shrink_of_a_large_block_does_not_fail() {
    let source = TestSource::default();
    let pool = LockedPool::new(source.clone(), None);
    let layout = Layout::from_size_align(60_000, 16).unwrap();
    // SAFETY: the layout's size is not zero.
    let block = unsafe { GlobalAlloc::alloc(&pool, layout) };
    assert!(!block.is_null());
    // The source refuses the chunk, and again after the engine has given back what it kept.
    source.fail_next(2);
    // SAFETY: the block came from this pool with `layout`, and the new size is not zero.
    let kept = unsafe { GlobalAlloc::realloc(&pool, block, layout, 100) };
    assert_eq!(kept, block);
    let small = Layout::from_size_align(100, 16).unwrap();
    // SAFETY: as above, with the layout it has now.
    let moved = unsafe { GlobalAlloc::realloc(&pool, kept, small, 100) };
    assert!(!moved.is_null() && moved != block);
    assert_eq!(pool.stats().bytes_held, CHUNK_SIZE, "the large chunk went back");
    // SAFETY: the block came from this pool with `small` and is not used again.
    unsafe { GlobalAlloc::dealloc(&pool, moved, small) };
    pool.check().unwrap();
}

/// A large block's chunk goes back to the source on its first free, so a second `try_free`
/// finds no chunk of the pool there: `Foreign`, where a small block freed twice is `NotInUse`.
/// Either way nothing changes.
#[test]
fn a_large_block_freed_twice_is_foreign_and_a_small_one_not_in_use() {
    let mut engine = Engine::new(TestSource::default(), None);
    let keep = engine.alloc(64).unwrap();
    let small = engine.alloc(64).unwrap();
    let large = engine.alloc(MAX_SMALL + 1).unwrap();
    for block in [small, large] {
        // SAFETY: the block came from this engine and is not used again.
        assert_eq!(unsafe { engine.try_free(block) }, Ok(()));
    }
    let (small_addr, large_addr) = (small.as_ptr() as usize, large.as_ptr() as usize);
    // SAFETY: neither block is in use any more, which `try_free` finds.
    let again = unsafe { (engine.try_free(small), engine.try_free(large)) };
    assert_eq!(again.0, Err(FreeError::NotInUse { addr: small_addr }));
    assert_eq!(again.1, Err(FreeError::Foreign { addr: large_addr }));
    assert_eq!(engine.stats().live_blocks, 1);
    engine.check().unwrap();
    // SAFETY: the block came from this engine and is not used again.
    unsafe { engine.free(keep) };
}

/// The bytes a whole chunk leaves after its last block start no block: a pointer there is refused
/// as one inside the chunk that is not a block's start, with nothing changed.
#[test]
fn a_pointer_past_a_chunks_last_block_is_interior() {
    let mut engine = Engine::new(TestSource::default(), None);
    // 176-byte blocks after the 64-byte header leave bytes at the end of a 16 KiB chunk (92
    // blocks) and of a 4 KiB one (22 blocks).
    const SIZE: usize = 176;
    let block = engine.alloc(SIZE).unwrap();
    let chunk = block.as_ptr().addr() & !(CHUNK_SIZE - 1);
    let past = 64 + (CHUNK_SIZE - 64) / SIZE * SIZE;
    assert!(past < CHUNK_SIZE && past + SIZE > CHUNK_SIZE);
    let pointer = NonNull::new(block.as_ptr().with_addr(chunk + past)).unwrap();
    let addr = chunk + past;
    let before = engine.stats();
    assert_eq!(engine.validate(pointer), Err(FreeError::Interior { addr }));
    // SAFETY: the pointer is no block of the engine's, so the checked free only refuses it.
    assert_eq!(unsafe { engine.try_free(pointer) }, Err(FreeError::Interior { addr }));
    assert_eq!(engine.stats(), before);
    engine.check().unwrap();
    free(&mut engine, block);
}

/// A region is cut into whole chunks aligned to their size: 64 KiB aligned to a chunk holds four,
/// blocks of four classes, and 64 KiB that is not holds three.
#[cfg(not(feature = "small-chunks"))]
#[test]
fn a_64_kib_region_holds_four_classes_aligned_and_three_not() {
    const REGION: usize = 64 * 1024;
    // Room to place the region at a chunk boundary, or 1 KiB past one.
    let mut buffer = vec![0u8; REGION + 2 * CHUNK_SIZE];
    let aligned = buffer.as_ptr().align_offset(CHUNK_SIZE);
    for (start, classes) in [(aligned, 4), (aligned + 1024, 3)] {
        // SAFETY: the region lies inside the buffer, which nothing else touches until the engine
        // is dropped at the end of this iteration.
        let source = unsafe { RegionSource::new(buffer.as_mut_ptr().add(start), REGION) };
        let mut engine = Engine::new(source, None);
        let served: Vec<_> =
            [16, 48, 112, 200, 400].iter().map_while(|&size| engine.alloc(size)).collect();
        assert_eq!(served.len(), classes, "region at {start:#x}");
        assert_eq!(engine.stats().bytes_held, classes * CHUNK_SIZE);
        engine.check().unwrap();
        for block in served {
            free(&mut engine, block);
        }
    }
}
