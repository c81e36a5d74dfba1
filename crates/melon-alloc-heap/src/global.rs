//! The source of a root pool: chunks carved from slabs of the global allocator.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use std::alloc;

use melon_alloc_core::{ChunkSource, CHUNK_SIZE};

/// Chunks in the first slab; each new slab doubles, up to [`MAX_SLAB_CHUNKS`].
const FIRST_SLAB_CHUNKS: usize = 4;
/// Bytes of the largest slab: one transparent huge page on x86_64 and aarch64 Linux.
const HUGE_SLAB: usize = 2 << 20;
/// Chunks in the largest slab.
const MAX_SLAB_CHUNKS: usize = HUGE_SLAB / CHUNK_SIZE;

/// A recycled small chunk: its first word links to the next one.
struct FreeChunk {
    next: *mut FreeChunk,
}

/// Takes memory from the global allocator for a root pool.
///
/// Small chunks are carved from slabs that grow from 64 KiB to 2 MiB, because asking the global
/// allocator for each aligned 16 KiB chunk on its own leaves an alignment gap beside nearly every
/// one (glibc's `posix_memalign` does), which would cost more than the blocks themselves. Chunks
/// that come back are reused; once every chunk has come back, and when the pool is dropped, the
/// slabs go back to the global allocator. Large chunks go straight to the global allocator.
///
/// On Linux, 2 MiB slabs are aligned to 2 MiB and marked for transparent huge pages: unmapping a
/// full pool of 4 KiB pages costs the kernel several nanoseconds per 64-byte block, a huge page
/// a small fraction of that.
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
        let size = self.next_slab_chunks * CHUNK_SIZE;
        let align = if size == HUGE_SLAB { HUGE_SLAB } else { CHUNK_SIZE };
        let layout = Layout::from_size_align(size, align).ok()?;
        self.slabs.try_reserve(1).ok()?;
        // SAFETY: the layout has a non-zero size.
        let slab = NonNull::new(unsafe { alloc::alloc(layout) })?;
        if size == HUGE_SLAB {
            advise_huge_pages(slab, size);
        }
        self.slabs.push((slab, layout));
        self.carve_next = slab.as_ptr();
        self.carve_left = self.next_slab_chunks;
        self.next_slab_chunks = (self.next_slab_chunks * 2).min(MAX_SLAB_CHUNKS);
        Some(())
    }

    fn release_slabs(&mut self) {
        self.chunks_out = 0;
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
        debug_assert!(self.chunks_out > 0);
        let entry = chunk.cast::<FreeChunk>().as_ptr();
        // SAFETY: the chunk is ours again and at least a word long.
        unsafe { (*entry).next = self.free };
        self.free = entry;
        self.chunks_out -= 1;
        if self.chunks_out == 0 {
            self.release_slabs();
        }
    }

    unsafe fn release_all_small(&mut self) -> bool {
        self.release_slabs();
        true
    }
}

/// Asks the kernel to back a slab with transparent huge pages. Only a hint: where huge pages are
/// off, or the call fails, the slab works the same with small pages.
fn advise_huge_pages(slab: NonNull<u8>, len: usize) {
    #[cfg(all(target_os = "linux", not(miri)))]
    // SAFETY: the slab is `len` bytes just obtained from the global allocator and owned by this
    // source; the advice changes how the kernel backs the pages, never their contents.
    let _ = unsafe {
        rustix::mm::madvise(slab.as_ptr().cast(), len, rustix::mm::Advice::LinuxHugepage)
    };
    #[cfg(any(not(target_os = "linux"), miri))]
    let _ = (slab, len);
}

impl Drop for GlobalSource {
    fn drop(&mut self) {
        self.release_slabs();
    }
}
