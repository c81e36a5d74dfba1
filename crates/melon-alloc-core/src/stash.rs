//! Free chunks a [`LockedPool`](crate::LockedPool) keeps for its children, in stripes that
//! threads use apart.
//!
//! A child takes its chunks from its parent and gives them back when it goes. Through the
//! parent's lock, children on different threads meet on that lock and on the parent's engine at
//! every chunk, and their cache lines move between cores each time: with a pool per request on a
//! multi-threaded server, that costs more than the requests' allocations. So a parent whose
//! source says which stripe the calling thread uses ([`ChunkSource::stash_stripe`]) and that has
//! no limit keeps the small chunks its children give back in that thread's stripe, up to
//! `STASH_CHUNKS` a stripe, and a child on that thread takes them from there: each stripe has
//! a lock and a line of its own, which one thread uses.
//!
//! The engine counts a stashed chunk as lent, as it was when a child held it; the parent's
//! figures leave stashed chunks out of `bytes_lent` (`Stripes::bytes`). Stashed chunks go back
//! to the engine on a trim, a reset, the parent's drop and a chunk the source refuses a child,
//! with the engine's lock taken first and the stripes' inside it; a child takes a stripe's lock
//! alone, and the parent's after it is let go, so the two orders never cross. Only a pool made by
//! `new` has stripes ([`Stripes`]); a child has none ([`NoStripes`]), which keeps it small.

#[cfg(feature = "pages")]
use core::ptr::{self, NonNull};

#[cfg(feature = "pages")]
use crate::chunk::CHUNK_SIZE;
#[cfg(feature = "pages")]
use crate::spin::SpinLock;
#[cfg(doc)]
use crate::ChunkSource;

/// Stripes of a stash: a thread's stripe is its [`ChunkSource::stash_stripe`] modulo this.
#[cfg(feature = "pages")]
pub(crate) const STASH_STRIPES: usize = 8;

/// Chunks a stripe of a [`Stripes`] stash keeps at most, 256 KiB of 16 KiB chunks (64 KiB with
/// the `small-chunks` feature): enough for the children a thread makes and drops in turn, few
/// enough that a stash holds at most 2 MiB unused. A chunk given back to a full stripe goes back
/// to the pool's engine.
///
/// # Examples
/// ```
/// use melon_alloc_core::{CHUNK_SIZE, STASH_CHUNKS};
///
/// assert!(STASH_CHUNKS * CHUNK_SIZE <= 256 << 10);
/// ```
#[cfg(feature = "pages")]
pub const STASH_CHUNKS: usize = 16;

/// Every how many chunks a stripe keeps the pool looks, if its lock is free, whether it lends
/// any chunk but those its stripes keep: if not, it gives them all back to its source,
/// which can then give back the slabs a burst of children left, as it does for a pool without
/// stripes.
#[cfg(feature = "pages")]
pub(crate) const STASH_CHECK_EVERY: u32 = 64;

/// A stashed chunk: its first word links to the next of its stripe.
#[cfg(feature = "pages")]
struct Stashed {
    next: *mut Stashed,
}

/// One stripe's chunks, linked through their first words.
#[cfg(feature = "pages")]
struct Stripe {
    head: *mut Stashed,
    count: usize,
    /// Chunks the stripe has kept, modulo [`STASH_CHECK_EVERY`].
    given: u32,
}

// SAFETY: the list holds chunks the parent's engine lent out and no one uses; they may be handed
// to a child on any thread, the stripe's lock ordering every access to them.
#[cfg(feature = "pages")]
unsafe impl Send for Stripe {}

/// A stripe's lock, on a cache line of its own, so that threads on different stripes never
/// share one.
#[cfg(feature = "pages")]
#[repr(align(64))]
struct Line(SpinLock<Stripe>);

#[cfg(feature = "pages")]
impl Line {
    #[cfg(not(melon_loom))]
    const fn new() -> Self {
        Self(SpinLock::new(Stripe { head: ptr::null_mut(), count: 0, given: 0 }))
    }

    #[cfg(melon_loom)]
    fn new() -> Self {
        Self(SpinLock::new(Stripe { head: ptr::null_mut(), count: 0, given: 0 }))
    }
}

/// The free chunks a [`LockedPool`](crate::LockedPool) keeps for its children's threads: eight
/// stripes of up to 16 chunks each, each behind a lock on a cache line of its own, used where the
/// pool's source names stripes ([`ChunkSource::stash_stripe`](crate::ChunkSource::stash_stripe))
/// and the pool has no limit. The stash of every pool that is not itself a child; empty without
/// the `pages` feature.
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedPool, RegionSource, Stripes};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// // A pool made by `new` keeps its children's chunks in stripes, where its source names them.
/// let source = RegionSource::from_static(region);
/// let _pool: LockedPool<RegionSource, Stripes> = LockedPool::new(source, None);
/// ```
pub struct Stripes {
    #[cfg(feature = "pages")]
    stripes: [Line; STASH_STRIPES],
}

/// What a child pool keeps for children of its own: nothing. Its children take every chunk
/// through its lock.
///
/// # Examples
/// ```
/// use melon_alloc_core::{LockedChild, LockedPool, NoStripes, RegionSource};
///
/// static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// // SAFETY: this example is the arena's only user.
/// let region = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
/// let root = LockedPool::new(RegionSource::from_static(region), None);
/// // A child is a locked pool over its parent, with no stripes.
/// let child: LockedChild<'_, RegionSource> = root.child();
/// assert_eq!(core::mem::size_of::<NoStripes>(), 0);
/// # let _ = child;
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStripes;

/// What a [`LockedPool`](crate::LockedPool) keeps for its children's threads: [`Stripes`] for a
/// pool made by `new`, [`NoStripes`] for a child. Sealed: the two are the only kinds.
///
/// # Examples
/// ```
/// use melon_alloc_core::{ChunkStash, NoStripes, Stripes};
///
/// fn keeps<K: ChunkStash>() {}
/// keeps::<Stripes>();
/// keeps::<NoStripes>();
/// ```
pub trait ChunkStash: sealed::Sealed + Send + Sync {
    /// The stripes, if this kind has them.
    #[doc(hidden)]
    fn stripes(&self) -> Option<&Stripes>;
}

/// What keeps [`ChunkStash`] to the two kinds here: a trait nothing outside the crate can name.
mod sealed {
    #[doc(hidden)]
    pub trait Sealed {}
    impl Sealed for super::Stripes {}
    impl Sealed for super::NoStripes {}
}

impl ChunkStash for Stripes {
    #[inline]
    fn stripes(&self) -> Option<&Stripes> {
        if cfg!(feature = "pages") {
            Some(self)
        } else {
            None
        }
    }
}

impl ChunkStash for NoStripes {
    #[inline]
    fn stripes(&self) -> Option<&Stripes> {
        None
    }
}

impl core::fmt::Debug for Stripes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stripes").finish_non_exhaustive()
    }
}

impl Stripes {
    #[cfg(not(melon_loom))]
    pub(crate) const fn new() -> Self {
        Self {
            #[cfg(feature = "pages")]
            stripes: [const { Line::new() }; STASH_STRIPES],
        }
    }

    #[cfg(melon_loom)]
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(feature = "pages")]
            stripes: core::array::from_fn(|_| Line::new()),
        }
    }
}

#[cfg(feature = "pages")]
impl Stripes {
    /// Takes a chunk from stripe `stripe`, if it keeps one.
    #[inline]
    pub(crate) fn take(&self, stripe: usize) -> Option<NonNull<u8>> {
        self.stripes[stripe % STASH_STRIPES].0.with(|stripe| {
            let chunk = NonNull::new(stripe.head)?;
            // SAFETY: a stashed chunk's first word holds the link `keep` wrote, and the stripe's
            // lock orders that write before this read.
            stripe.head = unsafe { chunk.as_ptr().read().next };
            stripe.count -= 1;
            #[cfg(feature = "valgrind")]
            crate::valgrind::defined(chunk.as_ptr().cast(), CHUNK_SIZE);
            Some(chunk.cast())
        })
    }

    /// Keeps a small chunk in stripe `stripe`, or hands it back when the stripe is full. `Ok(true)`
    /// one time in [`STASH_CHECK_EVERY`]: the pool's time to look whether it lends anything else.
    ///
    /// # Safety
    /// `chunk` is a small chunk ([`CHUNK_SIZE`] bytes, aligned to it) that the parent's engine
    /// lent out, with provenance over all of it, and nothing uses it afterwards.
    #[inline]
    pub(crate) unsafe fn keep(
        &self,
        stripe: usize,
        chunk: NonNull<u8>,
    ) -> Result<bool, NonNull<u8>> {
        self.stripes[stripe % STASH_STRIPES].0.with(|stripe| {
            if stripe.count == STASH_CHUNKS {
                return Err(chunk);
            }
            stripe.given = (stripe.given + 1) % STASH_CHECK_EVERY;
            let entry = chunk.cast::<Stashed>();
            // SAFETY: the chunk is the caller's to give up, at least a word long and aligned to a
            // chunk; its first word now holds the link to the rest of the stripe.
            unsafe { entry.as_ptr().write(Stashed { next: stripe.head }) };
            // A block of the chunk read or written from now on is used after its free.
            #[cfg(feature = "valgrind")]
            crate::valgrind::no_access(
                chunk.as_ptr().wrapping_add(core::mem::size_of::<Stashed>()),
                CHUNK_SIZE - core::mem::size_of::<Stashed>(),
            );
            stripe.head = entry.as_ptr();
            stripe.count += 1;
            Ok(stripe.given == 0)
        })
    }

    /// Empties every stripe, handing each chunk to `give_back`.
    pub(crate) fn drain(&self, mut give_back: impl FnMut(NonNull<u8>)) {
        for line in &self.stripes {
            let mut entry = line.0.with(|stripe| {
                stripe.count = 0;
                core::mem::replace(&mut stripe.head, ptr::null_mut())
            });
            while let Some(chunk) = NonNull::new(entry) {
                // SAFETY: the list was taken whole under the stripe's lock, so its chunks are
                // this call's; each first word holds the link `keep` wrote, read before the
                // chunk is handed on.
                entry = unsafe { chunk.as_ptr().read().next };
                #[cfg(feature = "valgrind")]
                crate::valgrind::defined(chunk.as_ptr().cast(), CHUNK_SIZE);
                give_back(chunk.cast());
            }
        }
    }

    /// Bytes of the chunks the stripes keep, each stripe read under its lock.
    pub(crate) fn bytes(&self) -> usize {
        self.stripes.iter().map(|line| line.0.with(|stripe| stripe.count)).sum::<usize>()
            * CHUNK_SIZE
    }
}
