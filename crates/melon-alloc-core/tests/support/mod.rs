//! What the engine's test binaries share: a chunk source that keeps a ledger of its chunks and
//! fails on request, a region over a buffer, the checked free, a seeded random generator, and
//! the engine's colour rule.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use melon_alloc_core::{ChunkSource, Engine, RegionSource, CHUNK_SIZE};

/// What a [`TestSource`] has handed out, and how many of its next acquires must fail.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) fail_next: usize,
    pub(crate) refused: usize,
    /// Chunks handed out and given back, counted.
    pub(crate) acquired: usize,
    pub(crate) released: usize,
    /// Chunks out: address and layout.
    pub(crate) out: Vec<(usize, Layout)>,
    /// Blocks freed "elsewhere", as another process frees into a shared pool's chunk, for the
    /// engine to collect.
    pub(crate) remote: Vec<FreedElsewhere>,
    /// Blocks freed elsewhere that the source was not told of: `take_remote_frees` finds them
    /// only after `rescan_remote_frees`.
    pub(crate) unannounced: Vec<FreedElsewhere>,
    /// Calls of `rescan_remote_frees`.
    pub(crate) rescans: usize,
    /// Calls of `discard_free`.
    pub(crate) discards: usize,
}

/// A block pointer in the ledger: the pointer itself, so that it keeps its provenance.
#[derive(Debug)]
pub(crate) struct FreedElsewhere(pub(crate) NonNull<u8>);

// SAFETY: the ledger only hands the pointer back to the engine that made it, which uses it on
// the thread that asks; the pointer is never dereferenced on the way.
unsafe impl Send for FreedElsewhere {}

/// A source over the global allocator that keeps a ledger of its chunks, checks every release
/// against it, and fails on request. Clones share the ledger, so a test keeps one to steer and
/// inspect the source while an engine owns another.
#[derive(Clone, Debug, Default)]
pub(crate) struct TestSource(Arc<Mutex<Ledger>>);

impl TestSource {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap()
    }

    pub(crate) fn fail_next(&self, count: usize) {
        self.ledger().fail_next = count;
    }

    pub(crate) fn chunks_out(&self) -> usize {
        self.ledger().out.len()
    }
}

// SAFETY: chunks come from `std::alloc::alloc` with the asked-for layout, are handed out once,
// and go back to `dealloc` with the same layout, which the ledger checks.
unsafe impl ChunkSource for TestSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let mut ledger = self.ledger();
        assert!(layout.align() >= CHUNK_SIZE, "{layout:?}");
        assert!(layout.size() > 0 && layout.size() % 16 == 0, "{layout:?}");
        if ledger.fail_next > 0 {
            ledger.fail_next -= 1;
            ledger.refused += 1;
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let chunk = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        ledger.out.push((chunk.as_ptr() as usize, layout));
        ledger.acquired += 1;
        Some(chunk)
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        let mut ledger = self.ledger();
        let addr = chunk.as_ptr() as usize;
        let index = ledger.out.iter().position(|&(out, _)| out == addr);
        let index = index.expect("a released chunk was handed out");
        assert_eq!(ledger.out[index].1, layout, "a chunk came back with another layout");
        ledger.out.swap_remove(index);
        ledger.released += 1;
        // SAFETY: the chunk came from `alloc` with this layout, as the ledger just confirmed.
        unsafe { std::alloc::dealloc(chunk.as_ptr(), layout) };
    }

    fn take_remote_frees(&mut self, out: &mut [Option<NonNull<u8>>]) -> usize {
        let mut ledger = self.ledger();
        let count = out.len().min(ledger.remote.len());
        let start = ledger.remote.len() - count;
        for (place, freed) in out.iter_mut().zip(ledger.remote.drain(start..)) {
            *place = Some(freed.0);
        }
        count
    }

    fn rescan_remote_frees(&mut self) {
        let mut ledger = self.ledger();
        ledger.rescans += 1;
        let found = core::mem::take(&mut ledger.unannounced);
        ledger.remote.extend(found);
    }

    fn forget_remote_frees(&mut self) {
        let mut ledger = self.ledger();
        ledger.remote.clear();
        ledger.unannounced.clear();
    }

    fn discard_free(&mut self) {
        self.ledger().discards += 1;
    }
}

/// Frees a block through the checked path and asserts it was accepted.
pub(crate) fn free<S: ChunkSource>(engine: &mut Engine<S>, block: NonNull<u8>) {
    // SAFETY: the caller passes a block of `engine` that is not used again.
    let result = unsafe { engine.try_free(block) };
    assert_eq!(result, Ok(()));
}

/// A xorshift generator: the same sequence for a seed on every machine.
pub(crate) struct Random(pub(crate) u64);

impl Random {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// The number the engine picks a colour from for the `n`th chunk, page or span of memory: a
/// multiplicative hash of all of `n`'s bits (by 2^64 over the golden ratio), its bits 40 and up.
pub(crate) fn colour(n: usize) -> usize {
    ((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

/// A buffer and a region over `units` whole chunks of it, starting on an address aligned to
/// `align`, a multiple of `CHUNK_SIZE`. The caller binds the buffer before the region, or the
/// pool that owns it, so that the buffer outlives them.
pub(crate) fn aligned_region(units: usize, align: usize) -> (Vec<u8>, RegionSource) {
    let mut buffer = vec![0u8; units * CHUNK_SIZE + align];
    let lead = buffer.as_ptr().align_offset(align);
    // SAFETY: the region lies in the buffer (`lead < align`), which the caller keeps until the
    // region and its chunks are gone, and touches only for its address.
    let source = unsafe { RegionSource::new(buffer.as_mut_ptr().add(lead), units * CHUNK_SIZE) };
    (buffer, source)
}
