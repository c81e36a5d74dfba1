//! The allocator this build of `compare` measures, chosen by a cargo feature (none: melon's locked
//! core pool over a static region), embedded-alloc's linked-list (`llff`) or TLSF (`tlsf`) heap, talc,
//! or a bump allocator that never frees (`bump`), the baseline of the code size.
//!
//! Each peer is the program's global allocator over [`ARENA`], and makes fresh heaps of its kind
//! over any region for the measurements ([`over`]).

// At most one peer per build; none is melon.
const _: () = assert!(
    cfg!(feature = "llff") as u8
        + cfg!(feature = "tlsf") as u8
        + cfg!(feature = "talc") as u8
        + cfg!(feature = "bump") as u8
        <= 1,
    "build `compare` with at most one of the features llff, tlsf, talc, bump"
);

/// Bytes of the global allocator's arena.
pub(crate) const ARENA_BYTES: usize = 256 * 1024;

/// The global allocator's memory, aligned to a chunk so that every peer gets all of it.
#[repr(C, align(16384))]
pub(crate) struct Region<const N: usize>(pub(crate) [u8; N]);

pub(crate) static mut ARENA: Region<ARENA_BYTES> = Region([0; ARENA_BYTES]);

#[cfg(not(any(feature = "llff", feature = "tlsf", feature = "talc", feature = "bump")))]
mod chosen {
    use melon_alloc_core::{LockedPool, RegionSource};

    pub(crate) const NAME: &str =
        if cfg!(feature = "small-chunks") { "melon, 4 KiB chunks" } else { "melon" };

    pub(crate) type Heap = LockedPool<RegionSource>;

    #[global_allocator]
    // SAFETY: nothing but the pool ever touches `ARENA`.
    pub(crate) static GLOBAL: Heap = LockedPool::new(
        unsafe { RegionSource::new(&raw mut super::ARENA as *mut u8, super::ARENA_BYTES) },
        None,
    );

    pub(crate) fn init_global() {}

    /// # Safety
    /// The `len` bytes at `base` are the heap's alone while it lives.
    pub(crate) unsafe fn over(base: *mut u8, len: usize) -> Heap {
        // SAFETY: forwarded from the caller.
        LockedPool::new(unsafe { RegionSource::new(base, len) }, None)
    }
}

#[cfg(any(feature = "llff", feature = "tlsf"))]
mod chosen {
    #[cfg(feature = "llff")]
    pub(crate) use embedded_alloc::LlffHeap as Heap;
    #[cfg(not(feature = "llff"))]
    pub(crate) use embedded_alloc::TlsfHeap as Heap;

    pub(crate) const NAME: &str =
        if cfg!(feature = "llff") { "embedded-alloc LLFF" } else { "embedded-alloc TLSF" };

    #[global_allocator]
    pub(crate) static GLOBAL: Heap = Heap::empty();

    pub(crate) fn init_global() {
        // SAFETY: called once, before the first allocation; nothing else touches `ARENA`.
        unsafe { GLOBAL.init(&raw mut super::ARENA as usize, super::ARENA_BYTES) }
    }

    /// # Safety
    /// The `len` bytes at `base` are the heap's alone while it lives.
    pub(crate) unsafe fn over(base: *mut u8, len: usize) -> Heap {
        let heap = Heap::empty();
        // SAFETY: forwarded from the caller; the heap is new.
        unsafe { heap.init(base as usize, len) };
        heap
    }
}

#[cfg(feature = "talc")]
mod chosen {
    use spinning_top::RawSpinlock;
    use talc::source::Claim;

    pub(crate) const NAME: &str = "talc";

    pub(crate) type Heap = talc::TalcLock<RawSpinlock, Claim>;

    #[global_allocator]
    // SAFETY: nothing but talc ever touches `ARENA`.
    pub(crate) static GLOBAL: Heap =
        Heap::new(unsafe { Claim::new(&raw mut super::ARENA as *mut u8, super::ARENA_BYTES) });

    pub(crate) fn init_global() {}

    /// # Safety
    /// The `len` bytes at `base` are the heap's alone while it lives.
    pub(crate) unsafe fn over(base: *mut u8, len: usize) -> Heap {
        // SAFETY: forwarded from the caller.
        Heap::new(unsafe { Claim::new(base, len) })
    }
}

#[cfg(feature = "bump")]
mod chosen {
    use core::alloc::{GlobalAlloc, Layout};
    use core::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) const NAME: &str = "bump (baseline)";

    /// Hands out the bytes of its region in order and never takes one back.
    pub(crate) struct Heap {
        next: AtomicUsize,
        end: AtomicUsize,
    }

    // SAFETY: blocks are disjoint runs of the region, aligned as asked, each handed out once: the
    // load and the store of `next` are not one atomic step, which holds on the single core of
    // this firmware, where nothing allocates from an interrupt.
    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let next = self.next.load(Ordering::Relaxed);
            let start = next.next_multiple_of(layout.align());
            match start.checked_add(layout.size()) {
                Some(end) if end <= self.end.load(Ordering::Relaxed) => {
                    self.next.store(end, Ordering::Relaxed);
                    start as *mut u8
                }
                _ => core::ptr::null_mut(),
            }
        }

        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }

    #[global_allocator]
    pub(crate) static GLOBAL: Heap = Heap { next: AtomicUsize::new(0), end: AtomicUsize::new(0) };

    pub(crate) fn init_global() {
        let base = &raw mut super::ARENA as usize;
        GLOBAL.next.store(base, Ordering::Relaxed);
        GLOBAL.end.store(base + super::ARENA_BYTES, Ordering::Relaxed);
    }

    /// # Safety
    /// The `len` bytes at `base` are the heap's alone while it lives.
    pub(crate) unsafe fn over(base: *mut u8, len: usize) -> Heap {
        Heap { next: AtomicUsize::new(base as usize), end: AtomicUsize::new(base as usize + len) }
    }
}

pub(crate) use chosen::{init_global, over, Heap, NAME};
