//! Values found by name: the pool's directory, from the outside.
//!
//! A name holds one value, placed with it in one operation under the pool's lock; the
//! directory records the value's type (size, alignment, and its name, which the value's block
//! holds after the value), so that a lookup with another type is an error, never a
//! reinterpretation. A process that dies in the middle of an insertion or a removal leaves the
//! name and its value both there or both gone.

use core::alloc::Layout;

use crate::arena::{Arena, Found, Lookup};
use crate::layout::{NAMES_BYTES, NAME_MAX, PAGE};
use crate::tx::Tx;
use crate::typed::{assert_no_drop, shape_of, type_name_of};
use crate::{ShmCheckError, ShmError, ShmGuard, ShmOffset, ShmPool, ShmSafe};

impl ShmPool {
    /// The longest name the directory takes, in bytes.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(melon_alloc_shm::ShmPool::NAME_MAX, 64);
    /// ```
    pub const NAME_MAX: usize = NAME_MAX;

    /// Names the directory holds at most.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(melon_alloc_shm::ShmPool::NAME_SLOTS, 256);
    /// ```
    pub const NAME_SLOTS: usize = crate::layout::NAME_SLOTS;

    /// Moves `value` into a new block of the pool and publishes it under `name`, in one
    /// operation: every process sees both or neither. The block holds the name of the type `T`
    /// ([`core::any::type_name`]) after the value, as many bytes more: with the size and
    /// alignment, what a lookup tells `T` from other types by. The first name costs the
    /// directory's block of entries (32 KiB), which stays for the pool's life.
    ///
    /// # Errors
    /// [`ShmError::NameLength`] for an empty name or one longer than
    /// [`NAME_MAX`](ShmPool::NAME_MAX); [`ShmError::NameTaken`]; [`ShmError::DirectoryFull`];
    /// [`ShmError::OutOfMemory`] or [`ShmError::Fragmented`] when there is no room;
    /// [`ShmError::Corrupt`] when the directory is; the lock's errors. Nothing changes, but
    /// that the directory's block, once a first insertion has made it, stays when the value
    /// then finds no room.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// shm.insert_named("hits", AtomicU64::new(0))?;
    /// shm.named::<AtomicU64>("hits")?.unwrap().fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(shm.named::<AtomicU64>("hits")?.unwrap().load(Ordering::Relaxed), 1);
    /// assert_eq!(shm.insert_named("hits", AtomicU64::new(0)), Err(ShmError::NameTaken));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn insert_named<T: ShmSafe>(&self, name: &str, value: T) -> Result<ShmOffset<T>, ShmError> {
        // SAFETY: the closure writes a whole `T` at the start of a block made for one.
        unsafe { self.insert_named_with(name, |place: *mut T| place.write(value)) }
    }

    /// Like [`insert_named`](ShmPool::insert_named), with the value written in place by `init`.
    ///
    /// # Safety
    /// `init` leaves a valid `T` at the pointer it is given (aligned, valid for writes of a
    /// `T`), writes nothing past that `T`, and does not use the pool: the pool's lock is held.
    pub(crate) unsafe fn insert_named_with<T: ShmSafe>(
        &self,
        name: &str,
        init: impl FnOnce(*mut T),
    ) -> Result<ShmOffset<T>, ShmError> {
        const { assert_no_drop::<T>() };
        let name = checked(name)?;
        let mut guard = self.lock()?;
        let slot = match vacancy(&mut guard, name)? {
            Some(slot) => slot,
            None => return Err(ShmError::DirectoryFull),
        };
        let (shape, type_name) = (shape_of::<T>(), type_name_of::<T>());
        // The value, then its type's name, in one block.
        let layout = Layout::new::<T>()
            .extend(Layout::for_value(type_name))
            .map_err(|_| ShmError::OutOfMemory {
                size: core::mem::size_of::<T>().saturating_add(type_name.len()),
            })?
            .0;
        let (mut init, mut made) = (Some(init), Ok(()));
        let mut place = |arena: &Arena, tx: &mut Tx, offset| {
            // The block is recorded as one to free, in a step of its own, before the value
            // overwrites what a free block holds (its free-list link) outside the log: a death
            // from here on is undone back to this step, and the next holder frees the block.
            arena.set_releasing(tx, offset);
            tx.checkpoint();
            if let Some(init) = init.take() {
                let value = arena.at(offset).cast::<T>();
                init(value);
                // SAFETY: the block was made for `layout`: `type_name`'s bytes fit right after
                // the `T` at its start, which `init` does not write past (its contract), and
                // nothing else uses the block yet.
                unsafe {
                    let after = value.cast::<u8>().add(core::mem::size_of::<T>());
                    core::ptr::copy_nonoverlapping(type_name.as_ptr(), after, type_name.len());
                }
            }
            // The name, and the block no longer to free, in the operation's last step.
            if arena.publish_name(tx, slot, name, offset, shape) {
                arena.set_releasing(tx, 0);
            } else {
                made = Err(ShmError::Corrupt(ShmCheckError::BadDirectory));
            }
        };
        let block = guard.alloc_then(layout, &mut place)?;
        if let Err(error) = made {
            // No name leads to the block, which is still recorded as one to free: it goes back
            // now, or to the next holder if this process dies first.
            guard.arena().finish_release();
            return Err(error);
        }
        let offset = guard.offset_of(block.as_ptr()).unwrap_or(0);
        Ok(ShmOffset::from_raw(offset))
    }

    /// The offset of the value named `name`, if there is one, checked to be a `T`.
    ///
    /// # Errors
    /// [`ShmError::TypeMismatch`] when the value under `name` is of another type;
    /// [`ShmError::NameLength`] for a name no entry can hold; [`ShmError::Corrupt`] when the
    /// directory is; the lock's errors.
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmError, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let placed = shm.insert_named("limit", 100u32)?;
    /// assert_eq!(shm.find::<u32>("limit")?, Some(placed));
    /// assert_eq!(shm.find::<u32>("absent")?, None);
    /// assert!(matches!(shm.find::<u64>("limit"), Err(ShmError::TypeMismatch { .. })));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn find<T: ShmSafe>(&self, name: &str) -> Result<Option<ShmOffset<T>>, ShmError> {
        let name = checked(name)?;
        let guard = self.lock()?;
        let Some(found) = found(&guard, name)? else { return Ok(None) };
        matching::<T>(&guard, found)?;
        Ok(Some(ShmOffset::from_raw(found.offset)))
    }

    /// The value named `name`, if there is one, checked to be a `T`. Safe because a named
    /// value stays in place until [`remove_named`](ShmPool::remove_named), whose caller
    /// promises that nothing uses it any more.
    ///
    /// # Errors
    /// As for [`find`](ShmPool::find); [`ShmError::Corrupt`] when the entry names no block in
    /// use that can hold a `T`.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// shm.insert_named("workers", AtomicU32::new(4))?;
    /// let workers = shm.named::<AtomicU32>("workers")?.expect("inserted above");
    /// assert_eq!(workers.load(Ordering::Relaxed), 4);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn named<T: ShmSafe + Sync>(&self, name: &str) -> Result<Option<&T>, ShmError> {
        let name = checked(name)?;
        let guard = self.lock()?;
        let Some(found) = found(&guard, name)? else { return Ok(None) };
        matching::<T>(&guard, found)?;
        let value = guard
            .object_at::<T>(found.offset)
            .map_err(|_| ShmError::Corrupt(ShmCheckError::BadDirectory))?;
        // SAFETY: (1) the named block holds the `T` placed with the name (its shape checked);
        // (2) it stays until `remove_named`, whose caller promises no reference to it lives on;
        // (3) other processes change it only through its atomics or a mutex (`ShmSafe`, and
        // `T: Sync`); (4) the mapping lives as long as `self`.
        Ok(Some(unsafe { value.as_ref() }))
    }

    /// Removes `name` and frees its value's block, in one operation. Returns whether the name
    /// was there. The value is not dropped: [`ShmSafe`] types have no destructor.
    ///
    /// # Errors
    /// [`ShmError::TypeMismatch`] when the value under `name` is not a `T`;
    /// [`ShmError::NameLength`]; [`ShmError::Corrupt`] when the directory is; the lock's
    /// errors. Nothing changes.
    ///
    /// # Safety
    /// - No process uses the value any more: no reference from [`named`](ShmPool::named) or
    ///   [`get`](ShmPool::get) to it lives on, and its offset is not followed again.
    /// - If it is a [`ShmMutex`](crate::ShmMutex), or holds one, no thread holds a guard of it,
    ///   not even a forgotten one: the guard's holder may still reach the value.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// shm.insert_named("scratch", [0u8; 100])?;
    /// // SAFETY: nothing refers to the value.
    /// assert!(unsafe { shm.remove_named::<[u8; 100]>("scratch") }?);
    /// assert_eq!(shm.find::<[u8; 100]>("scratch")?, None);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub unsafe fn remove_named<T: ShmSafe>(&self, name: &str) -> Result<bool, ShmError> {
        let name = checked(name)?;
        let guard = self.lock()?;
        guard.arena().finish_release();
        let Some(found) = found(&guard, name)? else { return Ok(false) };
        matching::<T>(&guard, found)?;
        guard
            .arena()
            .free_named(found.offset, found.slot)
            .map_err(|_| ShmError::Corrupt(ShmCheckError::BadDirectory))?;
        Ok(true)
    }

    /// Names the directory holds.
    ///
    /// # Errors
    /// The lock's errors.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// assert_eq!(shm.name_count()?, 0);
    /// shm.insert_named("one", 1u8)?;
    /// assert_eq!(shm.name_count()?, 1);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn name_count(&self) -> Result<usize, ShmError> {
        Ok(self.lock()?.arena().name_count() as usize)
    }
}

/// `name`'s bytes, if a directory entry can hold them.
fn checked(name: &str) -> Result<&[u8], ShmError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > NAME_MAX {
        return Err(ShmError::NameLength { len: bytes.len() });
    }
    Ok(bytes)
}

/// The entry of `name`, if there is one.
fn found(guard: &ShmGuard<'_>, name: &[u8]) -> Result<Option<Found>, ShmError> {
    match guard.arena().lookup(name) {
        Lookup::Found(found) => Ok(Some(found)),
        Lookup::Absent(_) => Ok(None),
        Lookup::Corrupt => Err(ShmError::Corrupt(ShmCheckError::BadDirectory)),
    }
}

/// The slot a new entry for `name` takes, making the directory's block of entries first if
/// the pool has none; `None` when every slot holds a name.
///
/// # Errors
/// [`ShmError::NameTaken`]; the errors of allocating the block of entries.
fn vacancy(guard: &mut ShmGuard<'_>, name: &[u8]) -> Result<Option<usize>, ShmError> {
    // A removal whose process died between its two steps, under a lock that does not report
    // deaths, left its block to free.
    guard.arena().finish_release();
    match guard.arena().has_names() {
        Ok(true) => {}
        Ok(false) => {
            let layout = Layout::from_size_align(NAMES_BYTES, PAGE)
                .map_err(|_| ShmError::OutOfMemory { size: NAMES_BYTES })?;
            // The block and the state's record of it in one operation: never a block that
            // nothing refers to.
            let mut record = |arena: &Arena, tx: &mut Tx, offset| arena.set_names_block(tx, offset);
            guard.alloc_then(layout, &mut record)?;
        }
        Err(()) => return Err(ShmError::Corrupt(ShmCheckError::BadDirectory)),
    }
    match guard.arena().lookup(name) {
        Lookup::Found(_) => Err(ShmError::NameTaken),
        Lookup::Absent(slot) => Ok(slot),
        Lookup::Corrupt => Err(ShmError::Corrupt(ShmCheckError::BadDirectory)),
    }
}

/// Checks that the value `found` names is a `T`: recorded with `T`'s size, alignment and name.
fn matching<T>(guard: &ShmGuard<'_>, found: Found) -> Result<(), ShmError> {
    let wanted = shape_of::<T>();
    if found.shape == wanted {
        match guard.arena().has_type_name(found.offset, found.shape, type_name_of::<T>()) {
            Ok(true) => return Ok(()),
            // Another type of the same size, alignment and hash of its name.
            Ok(false) => {}
            Err(()) => return Err(ShmError::Corrupt(ShmCheckError::BadDirectory)),
        }
    }
    let found = found.shape;
    let width = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    Err(ShmError::TypeMismatch {
        size: width(wanted.size),
        align: width(wanted.align),
        found_size: width(found.size),
        found_align: width(found.align),
    })
}
