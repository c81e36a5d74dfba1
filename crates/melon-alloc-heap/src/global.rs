//! The source of a root pool: chunks carved from slabs of the global allocator.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use std::alloc;

use melon_alloc_core::{ChunkSource, CHUNK_SIZE};

/// Chunks in the first slab; each new slab doubles, up to [`MAX_SLAB_CHUNKS`].
const FIRST_SLAB_CHUNKS: usize = 4;
/// Chunks in the largest slab (4 MiB).
const MAX_SLAB_CHUNKS: usize = 256;

/// A recycled small chunk: its first word links to the next one.
struct FreeChunk {
    next: *mut FreeChunk,
}

/// Takes memory from the global allocator for a root pool.
///
/// Small chunks are carved from slabs that grow from 64 KiB to 4 MiB, because asking the global
/// allocator for each aligned 16 KiB chunk on its own leaves an alignment gap beside nearly every
/// one (glibc's `posix_memalign` does), which would cost more than the blocks themselves. Chunks
/// that come back are reused; once every chunk has come back, the slabs go back to the global
/// allocator. Large chunks go straight to the global allocator.
#[derive(Debug)]
pub struct GlobalSource {
    free: *mut FreeChunk,
    /// The uncarved rest of the newest slab.
    carve_next: *mut u8,
    carve_left: usize,
    slabs: Vec<(NonNull<u8>, Layout)>,
    next_slab_chunks: usize,
    /// Small chunks handed out and not yet back.
    chunks_out: usize,
}

// SAFETY: the source exclusively owns its slabs and recycled chunks; its raw pointers point only
// into them, so it can move between threads with them.
unsafe impl Send for GlobalSource {}

impl GlobalSource {
    /// A source that holds nothing yet.
    pub const fn new() -> Self {
        Self {
            free: ptr::null_mut(),
            carve_next: ptr::null_mut(),
            carve_left: 0,
            slabs: Vec::new(),
            next_slab_chunks: FIRST_SLAB_CHUNKS,
            chunks_out: 0,
        }
    }

    /// Bytes of slabs currently held from the global allocator.
    pub fn slab_bytes(&self) -> usize {
        self.slabs.iter().map(|(_, layout)| layout.size()).sum()
    }

    fn small_chunk(&mut self) -> Option<NonNull<u8>> {
        if let Some(chunk) = NonNull::new(self.free) {
            // SAFETY: recycled chunks hold the link to the next one in their first word.
            self.free = unsafe { (*chunk.as_ptr()).next };
            return Some(chunk.cast());
        }
        if self.carve_left == 0 {
            self.new_slab()?;
        }
        let chunk = self.carve_next;
        self.carve_left -= 1;
        // SAFETY: `chunk` starts a `CHUNK_SIZE` run inside the newest slab; the next run, if any,
        // is still inside it, and one-past-the-end is allowed.
        self.carve_next = unsafe { chunk.add(CHUNK_SIZE) };
        NonNull::new(chunk)
    }

    fn new_slab(&mut self) -> Option<()> {
        let layout =
            Layout::from_size_align(self.next_slab_chunks * CHUNK_SIZE, CHUNK_SIZE).ok()?;
        self.slabs.try_reserve(1).ok()?;
        // SAFETY: the layout has a non-zero size.
        let slab = NonNull::new(unsafe { alloc::alloc(layout) })?;
        self.slabs.push((slab, layout));
        self.carve_next = slab.as_ptr();
        self.carve_left = self.next_slab_chunks;
        self.next_slab_chunks = (self.next_slab_chunks * 2).min(MAX_SLAB_CHUNKS);
        Some(())
    }

    fn release_slabs(&mut self) {
        for (slab, layout) in self.slabs.drain(..) {
            // SAFETY: the slab came from `alloc::alloc` with this layout and none of its chunks
            // is out.
            unsafe { alloc::dealloc(slab.as_ptr(), layout) };
        }
        self.free = ptr::null_mut();
        self.carve_next = ptr::null_mut();
        self.carve_left = 0;
    }
}

impl Default for GlobalSource {
    fn default() -> Self {
        Self::new()
    }
}

fn is_small_chunk(layout: Layout) -> bool {
    layout.size() == CHUNK_SIZE && layout.align() == CHUNK_SIZE
}

// SAFETY: (1) small chunks are disjoint `CHUNK_SIZE` runs of slabs, aligned to `CHUNK_SIZE`
// because slabs are, and each is handed out once until it comes back; (2) large chunks come from
// the global allocator with the asked-for layout; (3) slabs are freed only when no chunk is out,
// and every pointer is derived from the slab or allocation it lies in.
unsafe impl ChunkSource for GlobalSource {
    fn acquire(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if is_small_chunk(layout) {
            let chunk = self.small_chunk()?;
            self.chunks_out += 1;
            return Some(chunk);
        }
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { alloc::alloc(layout) })
    }

    unsafe fn release(&mut self, chunk: NonNull<u8>, layout: Layout) {
        if !is_small_chunk(layout) {
            // SAFETY: the caller returns a large chunk from `acquire`, which came from
            // `alloc::alloc` with this layout.
            unsafe { alloc::dealloc(chunk.as_ptr(), layout) };
            return;
        }
        let entry = chunk.cast::<FreeChunk>().as_ptr();
        // SAFETY: the chunk is ours again and at least a word long.
        unsafe { (*entry).next = self.free };
        self.free = entry;
        self.chunks_out -= 1;
        if self.chunks_out == 0 {
            self.release_slabs();
        }
    }
}

impl Drop for GlobalSource {
    fn drop(&mut self) {
        self.release_slabs();
    }
}
