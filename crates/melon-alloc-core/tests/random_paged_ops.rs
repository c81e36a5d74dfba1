//! A paged engine driven by a random mix of operations: allocations of sizes across the classes
//! that take pages and those that take whole chunks, checked frees, frees "elsewhere" that the
//! engine collects later, trims, resets, acquisitions the source refuses, with and without a
//! limit. After every operation the invariant scan passes, the live count matches, and no block
//! has been handed out twice: each block holds a tag written over its whole length when it was
//! handed out, read back before it is freed. Pages change class here often, which is where the
//! bookkeeping of emptied pages and of blocks carved from a chosen start is put to the test.
#![cfg(all(feature = "pages", not(feature = "small-chunks")))]

mod support;

use core::ptr::NonNull;

use melon_alloc_core::{Engine, CHUNK_SIZE};
use support::{FreedElsewhere, Random, TestSource};

/// Request sizes: classes that take pages (up to 3264 bytes) and classes that take whole chunks.
const SIZES: [usize; 16] =
    [16, 48, 96, 160, 256, 320, 512, 640, 768, 1024, 1536, 2048, 2720, 3264, 4080, 8160];

/// Steps of each run, and runs: fewer under Miri, which is slow.
const STEPS: usize = if cfg!(miri) { 120 } else { 2000 };
const RUNS: u64 = if cfg!(miri) { 1 } else { 24 };

/// A block in use: where it is, how long, and the tag it was filled with.
struct Live {
    block: NonNull<u8>,
    size: usize,
    tag: u8,
}

impl Live {
    /// Whether the block still holds its tag over its whole length.
    fn intact(&self) -> bool {
        // SAFETY: the block is in use, `size` bytes long, and only this test writes it.
        unsafe { core::slice::from_raw_parts(self.block.as_ptr(), self.size) }
            .iter()
            .all(|&byte| byte == self.tag)
    }
}

fn run(seed: u64, limit: Option<usize>) {
    let source = TestSource::default();
    let mut engine = Engine::new(source.clone(), limit).with_pages();
    let mut random = Random(seed | 1);
    let mut live: Vec<Live> = Vec::new();
    let mut tag = 0u8;
    for step in 0..STEPS {
        let roll = random.below(100);
        if roll < 50 || live.is_empty() {
            let size = SIZES[random.below(SIZES.len())];
            if random.below(50) == 0 {
                source.fail_next(1);
            }
            if let Some(block) = engine.alloc(size) {
                tag = tag.wrapping_add(1).max(1);
                // SAFETY: the block was just handed out, at least `size` bytes long.
                unsafe { block.as_ptr().write_bytes(tag, size) };
                live.push(Live { block, size, tag });
            }
        } else if roll < 90 {
            let freed = live.swap_remove(random.below(live.len()));
            assert!(freed.intact(), "seed {seed:#x}, step {step}: a block was overwritten");
            if random.below(3) == 0 {
                source.ledger().remote.push(FreedElsewhere(freed.block));
            } else {
                // SAFETY: the block is in use in `engine` and not used again.
                assert_eq!(unsafe { engine.try_free(freed.block) }, Ok(()), "seed {seed:#x}");
            }
        } else if roll < 97 {
            engine.trim();
        } else {
            // SAFETY: no block of the engine is used after this: `live` is emptied with it.
            unsafe { engine.reset() };
            live.clear();
        }
        if let Err(error) = engine.check() {
            panic!("seed {seed:#x}, step {step}: {error}");
        }
        let pending = source.ledger().remote.len();
        assert_eq!(engine.stats().live_blocks, live.len() + pending, "seed {seed:#x}, step {step}");
    }
    assert!(live.iter().all(Live::intact), "seed {seed:#x}: a block was overwritten");
    drop(engine);
    assert_eq!(source.chunks_out(), 0, "seed {seed:#x}: a chunk was not given back");
}

#[test]
fn random_operations_keep_every_block_and_count_of_a_paged_engine_right() {
    for run_index in 1..=RUNS {
        let seed = run_index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        run(seed, None);
        run(seed.wrapping_add(7), Some(6 * CHUNK_SIZE));
    }
}
