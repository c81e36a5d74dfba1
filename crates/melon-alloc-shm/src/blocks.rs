//! A table of this process's that grows by blocks and never shrinks: the registry of mapped
//! pools and the list of descriptions the fork handler closes live in one. Readers walk it
//! without a lock, so a fork copies it as it is, and the fork handler can walk it; a block,
//! once linked, stays for the life of the process, so no reader ever meets a freed one.

use core::sync::atomic::{AtomicPtr, Ordering};

/// A block of `N` entries, linked to the next one: the first is a `static`, the others are
/// leaked boxes added by [`grow`](Blocks::grow).
pub(crate) struct Blocks<T: 'static, const N: usize> {
    entries: [T; N],
    next: AtomicPtr<Blocks<T, N>>,
}

impl<T: 'static, const N: usize> Blocks<T, N> {
    /// A block holding `entries`, with no next one.
    pub(crate) const fn new(entries: [T; N]) -> Self {
        Self { entries, next: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Every entry of this block and of the blocks linked after it, block by block.
    pub(crate) fn entries(&'static self) -> impl Iterator<Item = &'static T> {
        core::iter::successors(Some(self), |block| {
            // SAFETY: a block's `next` is null or a leaked block, published with release by
            // `grow` after it was made, and never freed.
            unsafe { block.next.load(Ordering::Acquire).as_ref() }
        })
        .flat_map(|block| &block.entries)
    }

    /// Links a new block of the entries `make` gives after the last one (a thread that meets a
    /// block another just linked goes past it); `ENOMEM`, with nothing linked, when there is no
    /// memory for it.
    #[cold]
    pub(crate) fn grow(
        &'static self,
        make: impl FnOnce() -> [T; N],
    ) -> Result<(), rustix::io::Errno> {
        let new = Box::leak(crate::sys::try_box(|| Self::new(make()))?);
        let mut last = self;
        loop {
            match last.next.compare_exchange(
                core::ptr::null_mut(),
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                // SAFETY: as in `entries`.
                Err(next) => last = unsafe { &*next },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::{AtomicUsize, Ordering};

    use super::Blocks;

    static TABLE: Blocks<AtomicUsize, 2> = Blocks::new([const { AtomicUsize::new(0) }; 2]);

    #[test]
    fn grown_blocks_follow_the_first_in_order() {
        assert_eq!(TABLE.entries().count(), 2);
        TABLE.grow(|| [const { AtomicUsize::new(7) }; 2]).unwrap();
        TABLE.grow(|| [const { AtomicUsize::new(9) }; 2]).unwrap();
        let values: Vec<usize> =
            TABLE.entries().map(|entry| entry.load(Ordering::Relaxed)).collect();
        assert_eq!(values, [0, 0, 7, 7, 9, 9]);
    }
}
