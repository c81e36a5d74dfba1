//! Typed values in a shared pool: the [`ShmSafe`] types that may live there, [`ShmOffset`], an
//! offset that means the same value in every process, and [`ShmBox`], which owns one.
//!
//! A pointer into the pool means the same bytes only where the pool is mapped at the same
//! address; an offset from the pool's start means them wherever it is mapped. So values in the
//! pool refer to each other by [`ShmOffset`], and a process turns one into a reference with
//! [`ShmPool::get`], which checks it against the pool.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicIsize, AtomicU16, AtomicU32, AtomicU64,
    AtomicU8, AtomicUsize,
};

use crate::arena::{Located, Shape};
use crate::{ShmError, ShmPool};

/// A type whose values may live in a shared pool and be read by every process that maps it.
///
/// Implemented for the integers, the floats, the integer atomics, arrays of `ShmSafe` types,
/// `()`, [`ShmOffset`] and [`ShmMutex`](crate::ShmMutex). A struct of such fields can implement
/// it too, with `unsafe impl` and a `#[repr(C)]` layout, so that every process built from the
/// same source lays it out alike.
///
/// Shared access ([`ShmPool::named`], [`ShmPool::get`]) also asks for `Sync`: the other
/// processes are like other threads, and change a value only through its atomics or a
/// [`ShmMutex`](crate::ShmMutex).
///
/// # Safety
/// An implementation promises that the type:
/// - holds no pointer, reference, descriptor of private memory or other value that means
///   something in one process only (no `Box`, `Vec`, `String`, `&T`): a value in the pool
///   refers to another by [`ShmOffset`];
/// - is valid for every bit pattern of its size, as the integers are (no `bool`, `char`, enum,
///   reference or `NonZero*`): another process, a buggy or a dying one, may have left any bytes
///   in it;
/// - has no destructor, and no field that has one: a named value is never dropped, only freed
///   ([`ShmPool::insert_named`] checks this when it is compiled);
/// - is told apart from every other `ShmSafe` type by its name as the compiler gives it
///   ([`core::any::type_name`]), its size and its alignment, in every program that maps the same
///   pool: the directory of names checks a value's type by those three alone. Two types with the
///   same path, size and alignment (two versions of one crate in one program, or a type whose
///   definition changed while a pool made with the old one lives on) must have the same fields,
///   with atomics and mutexes in the same places.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use melon_alloc_shm::{ShmBox, ShmPool, ShmSafe};
///
/// #[repr(C)]
/// struct Counters {
///     requests: AtomicU64,
///     errors: AtomicU64,
/// }
///
/// // SAFETY: two atomics, valid for every bit pattern, with no pointer and no destructor.
/// unsafe impl ShmSafe for Counters {}
///
/// let shm = ShmPool::new(1 << 20)?;
/// let counters =
///     ShmBox::new_in(Counters { requests: AtomicU64::new(0), errors: AtomicU64::new(0) }, &shm)?;
/// counters.requests.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(counters.requests.load(Ordering::Relaxed), 1);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
pub unsafe trait ShmSafe: Sized + 'static {}

macro_rules! shm_safe {
    ($($ty:ty),* $(,)?) => {
        $(
            // SAFETY: plain data or an atomic of it: no pointer, every bit pattern valid, no
            // destructor.
            unsafe impl ShmSafe for $ty {}
        )*
    };
}

shm_safe!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, ());
shm_safe!(AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize);
shm_safe!(AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize);

// SAFETY: an array of `ShmSafe` values is their bytes side by side, and has what each has.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

/// What the directory records of `T` in a value's entry: its size, its alignment, and the hash
/// and length of its name as the compiler gives it ([`type_name_of`]), which the value's block
/// holds after the value.
pub(crate) fn shape_of<T>() -> Shape {
    let name = type_name_of::<T>();
    Shape {
        size: core::mem::size_of::<T>() as u64,
        align: core::mem::align_of::<T>() as u64,
        tag: crate::arena::name_hash(name),
        name_len: name.len() as u64,
    }
}

/// `T`'s name as the compiler gives it ([`core::any::type_name`]): what tells a named value's
/// type apart from every other of the same size and alignment.
pub(crate) fn type_name_of<T>() -> &'static [u8] {
    core::any::type_name::<T>().as_bytes()
}

/// Fails to compile, when a function that places `T` in the pool is instantiated, for a type
/// that a safe impl of [`ShmSafe`] could not have: one with a destructor, which the pool would
/// never run.
pub(crate) const fn assert_no_drop<T>() {
    assert!(!core::mem::needs_drop::<T>(), "a value in a shared pool is never dropped");
}

/// The offset of a `T` in a shared pool: the same value in every process that maps the pool,
/// wherever it maps it, and storable inside values in the pool (it is [`ShmSafe`]).
///
/// It is a number: making, copying and storing one is safe, and following one takes
/// [`ShmPool::get`], which checks it against the pool.
///
/// # Examples
/// ```
/// use melon_alloc_shm::{ShmBox, ShmOffset, ShmPool};
///
/// let shm = ShmPool::new(1 << 20)?;
/// let boxed = ShmBox::new_in(42u64, &shm)?;
/// let offset: ShmOffset<u64> = boxed.offset();
/// // The offset is what another process would be handed; here, this one follows it.
/// // SAFETY: the box keeps the value in place, and nothing writes it meanwhile.
/// assert_eq!(*unsafe { shm.get(offset) }?, 42);
/// assert_eq!(ShmOffset::<u64>::from_raw(offset.raw()), offset);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[repr(transparent)]
pub struct ShmOffset<T> {
    raw: u64,
    _type: PhantomData<fn() -> T>,
}

impl<T> ShmOffset<T> {
    /// The offset `raw` bytes from the start of the pool, as a `T`'s.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmOffset;
    ///
    /// assert_eq!(ShmOffset::<u32>::from_raw(4096).raw(), 4096);
    /// ```
    #[must_use]
    pub const fn from_raw(raw: u64) -> Self {
        Self { raw, _type: PhantomData }
    }

    /// The offset in bytes from the start of the pool.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::ShmOffset;
    ///
    /// assert_eq!(ShmOffset::<u8>::from_raw(7).raw(), 7);
    /// ```
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.raw
    }
}

impl<T> Clone for ShmOffset<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ShmOffset<T> {}

impl<T> PartialEq for ShmOffset<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<T> Eq for ShmOffset<T> {}

impl<T> Hash for ShmOffset<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.hash(state);
    }
}

impl<T> fmt::Debug for ShmOffset<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmOffset<{}>({})", core::any::type_name::<T>(), self.raw)
    }
}

// SAFETY: a `u64`: no pointer, every bit pattern valid, no destructor.
unsafe impl<T: 'static> ShmSafe for ShmOffset<T> {}

/// A `T` in a shared pool, owned by this handle as a `Box` owns its value: dropping it drops
/// the value and frees the block.
///
/// A value of a [`ShmSafe`] type can be reached from other processes, through its
/// [`offset`](ShmBox::offset) and [`ShmPool::get`], and its ownership passes to another process
/// with [`into_offset`](ShmBox::into_offset) here and [`from_offset`](ShmBox::from_offset)
/// there. A value of any other type (a collection in `&ShmPool`, say) holds pointers, which mean
/// the same only in this process and in the processes forked from it afterwards; no other
/// process can use it.
///
/// # Fork
/// A process forked while the box exists inherits the handle. Only one of the processes drops
/// it (the others forget it with `mem::forget`, or end with `_exit`), or the block would be
/// freed twice; and while one of them writes the value through it, no other reads or writes
/// it. A value with pointers means the same in them only while every pointer leads into the
/// pool or to what they inherited unchanged: a block of one process's own heap that one of them
/// puts in the value means nothing in the others, which must not reach it. Pointers into pages
/// another process grew the pool by are fine: the box maps those pages before it hands the
/// value out or drops it. A value that several processes use at
/// once is for [`ShmMutex`](crate::ShmMutex).
///
/// # Examples
/// ```
/// use melon_alloc_shm::{ShmBox, ShmPool};
///
/// let shm = ShmPool::new(1 << 20)?;
/// let before = shm.available();
/// let mut table = ShmBox::new_in([0u32; 64], &shm)?;
/// table[3] = 7;
/// assert_eq!(table.iter().sum::<u32>(), 7);
/// drop(table);
/// assert_eq!(shm.available(), before);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
pub struct ShmBox<'pool, T> {
    pool: &'pool ShmPool,
    value: NonNull<T>,
}

// SAFETY: the box owns its value as a `Box` does, and the pool is `Sync`.
unsafe impl<T: Send> Send for ShmBox<'_, T> {}
// SAFETY: as above; shared access to the box is shared access to the value.
unsafe impl<T: Sync> Sync for ShmBox<'_, T> {}

impl<'pool, T> ShmBox<'pool, T> {
    /// Moves `value` into a new block of `pool`.
    ///
    /// # Errors
    /// [`ShmError::OutOfMemory`] or [`ShmError::Fragmented`] when there is no room; the lock's
    /// errors.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let boxed = melon_alloc_shm::ShmBox::new_in(7u64, &shm)?;
    /// assert_eq!(*boxed, 7);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn new_in(value: T, pool: &'pool ShmPool) -> Result<Self, ShmError> {
        // SAFETY: the closure writes a whole `T` at the start of a block made for one.
        unsafe { Self::new_with(pool, |place| place.write(value)) }
    }

    /// Makes a box of `pool` whose value `init` writes in place, at its final address.
    ///
    /// # Safety
    /// `init` leaves a valid `T` at the pointer it is given (aligned, and valid for writes of
    /// a `T`).
    pub(crate) unsafe fn new_with(
        pool: &'pool ShmPool,
        init: impl FnOnce(*mut T),
    ) -> Result<Self, ShmError> {
        let block = pool.lock()?.alloc_layout(core::alloc::Layout::new::<T>())?;
        let value = block.cast::<T>();
        init(value.as_ptr());
        Ok(Self { pool, value })
    }

    /// The value's offset in the pool, which any process mapping it can follow with
    /// [`ShmPool::get`] while this box keeps the value.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let boxed = melon_alloc_shm::ShmBox::new_in(7u64, &shm)?;
    /// assert_eq!(shm.ptr_at(boxed.offset().raw() as usize).unwrap().cast::<u64>(),
    ///     std::ptr::NonNull::from(&*boxed));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use]
    pub fn offset(&self) -> ShmOffset<T> {
        // The block lies in what this process has mapped: it allocated or followed it here.
        let offset = self.pool.shared().locked_offset_of(self.value.as_ptr().cast());
        ShmOffset::from_raw(offset.unwrap_or(0))
    }

    /// Gives up the box without dropping or freeing its value: the block's address.
    pub(crate) fn into_raw(self) -> NonNull<T> {
        let value = self.value;
        core::mem::forget(self);
        value
    }

    /// Gives up the box, leaving the value in the pool: the offset is all that is left of it,
    /// to be taken up again with [`from_offset`](ShmBox::from_offset), here or in another
    /// process.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmBox, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let offset = ShmBox::new_in(7u64, &shm)?.into_offset();
    /// // SAFETY: the value was given up above, and nothing else refers to it.
    /// let boxed = unsafe { ShmBox::from_offset(&shm, offset) }?;
    /// assert_eq!(*boxed, 7);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use = "the value stays in the pool until its offset is taken up again"]
    pub fn into_offset(self) -> ShmOffset<T> {
        let offset = self.offset();
        core::mem::forget(self);
        offset
    }

    /// Takes ownership of the value at `offset`, which a box gave up with
    /// [`into_offset`](ShmBox::into_offset).
    ///
    /// # Errors
    /// [`ShmError::NoObject`] when no block in use of this pool starts at `offset`, aligned and
    /// large enough for a `T`; the lock's errors.
    ///
    /// # Safety
    /// - `offset` came from [`into_offset`](ShmBox::into_offset) of a `ShmBox<T>` of this pool,
    ///   in any process, and is taken up once: no other box owns the value, and no process
    ///   uses it through another path after this box frees it.
    /// - If the value is or holds a [`ShmMutex`](crate::ShmMutex), no thread holds a guard of it
    ///   when the box frees it, not even a forgotten one.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmBox, ShmOffset, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// // SAFETY: the checks refuse an offset where no block is, before anything is owned.
    /// let refused = unsafe { ShmBox::<u64>::from_offset(&shm, ShmOffset::from_raw(1 << 40)) };
    /// assert!(refused.is_err());
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn from_offset(pool: &'pool ShmPool, offset: ShmOffset<T>) -> Result<Self, ShmError>
    where
        T: ShmSafe,
    {
        let value = pool.lock()?.object_at::<T>(offset.raw())?;
        Ok(Self { pool, value })
    }
}

impl<T> ShmBox<'_, T> {
    /// Drops the value and frees its block, as dropping the box does, but reports a free the
    /// pool refuses: that of a block freed already, by another box that took up the same
    /// offset (which [`from_offset`](ShmBox::from_offset)'s caller promised not to do). The
    /// refused free changes nothing.
    ///
    /// # Errors
    /// [`ShmError::Free`] when the block is not in use; the lock's errors.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmBox, ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let offset = ShmBox::new_in(7u64, &shm)?.into_offset();
    /// // SAFETY: the second box breaks `from_offset`'s promise on purpose, to show the error;
    /// // nothing is allocated between the two frees, so the second can only be refused.
    /// let (first, second) =
    ///     unsafe { (ShmBox::from_offset(&shm, offset)?, ShmBox::from_offset(&shm, offset)?) };
    /// first.free()?;
    /// assert!(matches!(second.free(), Err(ShmError::Free(_))));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn free(self) -> Result<(), ShmError> {
        let mut this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the box is not used, nor dropped, after.
        unsafe { this.release() }
    }

    /// Drops the value and frees the block.
    ///
    /// # Safety
    /// Called once, as the box's last use.
    unsafe fn release(&mut self) -> Result<(), ShmError> {
        self.map_grown();
        // SAFETY: the box owns a valid `T`, dropped once, here (caller); nothing uses it after
        // (`from_offset`'s contract for a value taken up from an offset).
        unsafe { self.value.as_ptr().drop_in_place() };
        // SAFETY: the box owns the block, which nothing uses after the value is dropped.
        unsafe { self.pool.try_free(self.value.cast()) }
    }
}

impl<T> ShmBox<'_, T> {
    /// Maps the pages another process grew the pool by, where the value's pointers may lead
    /// (a collection another process grew, say): one load when nothing grew. A process that
    /// cannot map them cannot reach the value safely, and stops.
    #[inline]
    fn map_grown(&self) {
        if self.pool.shared().map_grown().is_err() {
            crate::sys::stop(
                "melon-alloc-shm: cannot map the pages another process grew the pool by",
            );
        }
    }
}

impl<T> Deref for ShmBox<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.map_grown();
        // SAFETY: the box owns a valid `T` at `value` until it is dropped.
        unsafe { self.value.as_ref() }
    }
}

/// Only for a value that may move: a [`ShmMutex`](crate::ShmMutex) must not.
impl<T: Unpin> DerefMut for ShmBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.map_grown();
        // SAFETY: as above; `&mut self` is the only access through this box, and a process
        // that follows the offset with `ShmPool::get` promised not to read it while it is
        // written other than atomically.
        unsafe { self.value.as_mut() }
    }
}

impl<T> Drop for ShmBox<'_, T> {
    fn drop(&mut self) {
        // A free the pool refuses (a block another box freed already) changes nothing;
        // `free` reports it.
        // SAFETY: this is the box's last use.
        let _ = unsafe { self.release() };
    }
}

impl<T: fmt::Debug> fmt::Debug for ShmBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ShmBox").field(&**self).finish()
    }
}

impl crate::ShmGuard<'_> {
    /// The `T` at `offset`, checked: a block in use of this pool starts there (not one of a
    /// child pool's chunks), aligned for `T` and at least as large.
    pub(crate) fn object_at<T>(&self, offset: u64) -> Result<NonNull<T>, ShmError> {
        let refused = ShmError::NoObject { offset };
        let arena = self.arena();
        if offset % core::mem::align_of::<T>() as u64 != 0 {
            return Err(refused);
        }
        let located = arena.locate(offset).map_err(|_| refused)?;
        if located == Located::Lent || arena.usable_size(located) < core::mem::size_of::<T>() {
            return Err(refused);
        }
        Ok(self.ptr_at(offset).cast())
    }
}

impl ShmPool {
    /// Follows `offset` to the `T` there, after checking that a block in use of this pool
    /// starts at it, aligned for a `T` and at least as large.
    ///
    /// # Errors
    /// [`ShmError::NoObject`] when no such block is there (an offset past the end, of another
    /// pool, into a block, or of a block freed); the lock's errors.
    ///
    /// # Safety
    /// - A `T` was placed at `offset` ([`ShmBox`], [`insert_named`](ShmPool::insert_named)),
    ///   and stays there, not freed, for as long as the reference lives, in every process.
    /// - Meanwhile no process writes it other than through its atomics or a
    ///   [`ShmMutex`](crate::ShmMutex) (no `&mut` to it is used).
    /// - If it holds a [`ShmMutex`](crate::ShmMutex), whoever frees it afterwards holds no
    ///   guard of that mutex, not even a forgotten one.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use melon_alloc_shm::{ShmBox, ShmError, ShmOffset, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let hits = ShmBox::new_in(AtomicU32::new(0), &shm)?;
    /// // SAFETY: the box keeps the value for the reference's life, and it changes only
    /// // atomically.
    /// let seen = unsafe { shm.get(hits.offset()) }?;
    /// seen.fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(hits.load(Ordering::Relaxed), 1);
    /// // SAFETY: refused before anything is read.
    /// let wrong = unsafe { shm.get(ShmOffset::<u32>::from_raw(hits.offset().raw() + 4)) };
    /// assert!(matches!(wrong, Err(ShmError::NoObject { .. })));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub unsafe fn get<T: ShmSafe + Sync>(&self, offset: ShmOffset<T>) -> Result<&T, ShmError> {
        let value = self.lock()?.object_at::<T>(offset.raw())?;
        // SAFETY: a block in use of the pool holds a `T` there (checked, and the caller's
        // contract), which lives as long as the caller says; the mapping lives as long as
        // `self`, and the pages of the block are mapped (the lock caught this process up).
        Ok(unsafe { value.as_ref() })
    }
}
