//! The crate's only calls to the operating system: mapping, unmapping and advice on memory.
//! Every other module goes through these functions.

use core::ptr::NonNull;

/// Asks the kernel to back `len` bytes at `start` with transparent huge pages. Only a hint: where
/// huge pages are off, or the call fails, the memory works the same with small pages.
pub(crate) fn advise_huge_pages(start: NonNull<u8>, len: usize) {
    #[cfg(all(target_os = "linux", not(miri)))]
    // SAFETY: the caller owns the `len` bytes at `start`; the advice changes how the kernel backs
    // the pages, never their contents.
    let _ = unsafe {
        rustix::mm::madvise(start.as_ptr().cast(), len, rustix::mm::Advice::LinuxHugepage)
    };
    #[cfg(any(not(target_os = "linux"), miri))]
    let _ = (start, len);
}

/// The system's page size: the granule of mapping, unmapping and advice.
#[cfg(target_os = "linux")]
pub(crate) fn page_size() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    // Asked of the system once: a pool over `OsSource` asks on every large block.
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Relaxed) {
        0 => {
            let page = rustix::param::page_size();
            PAGE.store(page, Relaxed);
            page
        }
        page => page,
    }
}

/// Maps `len` bytes of fresh, zeroed, private memory aligned to `align`, a power of two; `len` is
/// rounded up to whole pages. `None` when the system has no memory (or address space) for it.
///
/// An alignment beyond a page is had by mapping `align` bytes more and unmapping what lies
/// before and after the aligned run: the kernel hands out pages, not aligned runs.
#[cfg(target_os = "linux")]
pub(crate) fn map(len: usize, align: usize) -> Option<NonNull<u8>> {
    use rustix::mm::{MapFlags, ProtFlags};
    let page = page_size();
    let len = len.checked_next_multiple_of(page)?;
    let slack = if align > page { align } else { 0 };
    let reserve = len.checked_add(slack)?;
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing replaces
    // nothing; it only adds memory that this function then owns.
    let area = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            reserve,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    };
    let area = NonNull::new(area.ok()?.cast::<u8>())?;
    if slack == 0 {
        return Some(area);
    }
    // Both ends of the aligned run are whole pages: the area starts on a page, and `align` and
    // `len` are multiples of one.
    let skip = area.align_offset(align);
    let tail = slack - skip;
    // SAFETY: `skip <= slack`, so the run's start stays inside the area.
    let start = unsafe { area.add(skip) };
    if skip > 0 {
        // SAFETY: the `skip` bytes before the run are this function's and nothing uses them.
        unsafe { unmap(area, skip) };
    }
    if tail > 0 {
        // SAFETY: `skip + len + tail` is the whole area, so the tail is inside it; it is this
        // function's and nothing uses it.
        unsafe { unmap(start.add(len), tail) };
    }
    Some(start)
}

/// Gives `len` bytes at `start` back to the system; `len` is rounded up to whole pages, as
/// [`map`] rounded it.
///
/// # Safety
/// - The pages are a run of what [`map`] returned, and `start` is on a page.
/// - Nothing uses them afterwards.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn unmap(start: NonNull<u8>, len: usize) {
    // An unmap fails only for a bad range, which the caller rules out; there is nothing to do
    // about it in a deallocation anyway, so the error is dropped.
    // SAFETY: forwarded from the caller.
    let _ = unsafe { rustix::mm::munmap(start.as_ptr().cast(), len) };
}

/// Lets the system take back the physical pages of `len` bytes at `start`, keeping the address
/// range: the next touch of a page finds it zeroed (for the private anonymous memory [`map`]
/// and the usual global allocators hand out; memory backed by a file finds the file's bytes).
/// Only a hint; on failure the pages stay.
///
/// # Safety
/// - The bytes are a page-aligned run of whole pages that the caller holds: from [`map`], or
///   from the global allocator and not yet given back.
/// - Nobody needs their contents any more.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn discard(start: NonNull<u8>, len: usize) {
    // SAFETY: forwarded from the caller: `MADV_DONTNEED` changes the contents of these pages
    // alone, and they are the caller's to change.
    let _ = unsafe {
        rustix::mm::madvise(start.as_ptr().cast(), len, rustix::mm::Advice::LinuxDontNeed)
    };
}
