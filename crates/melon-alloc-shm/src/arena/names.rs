//! The directory of names: up to [`NAME_SLOTS`] named blocks, found by name in O(1) on average.
//!
//! The entries lie in one block of the pool, made by the first insertion; the state in the
//! header says where, and which entries hold a name. An entry is filled in while its bit is
//! clear, which no reader trusts, and published by setting the bit in the same logged operation
//! that allocates the named block; forgetting a name clears the bit in the operation that frees
//! it. So a process that dies at any point leaves either both or neither, and the undo log
//! needs no word outside the header.
//!
//! Entries are placed by open addressing: a name starts its search at its hash's slot and walks
//! on, past every entry that has ever held a name ([`Names::touched`]), to the first that never
//! has.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU8, Ordering};

use super::Arena;
use crate::layout::{kind, NameEntry, NAMES_BYTES, NAME_MAX, NAME_SLOTS, PAGE};
use crate::tx::Tx;

/// Pages of the block of entries.
const NAMES_PAGES: u32 = (NAMES_BYTES / PAGE) as u32;

/// What a value's type is, as the directory records and checks it. The type's name itself
/// follows the value in its block, `size` bytes from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) size: u64,
    pub(crate) align: u64,
    /// A hash of the type's name, which a lookup compares before the name.
    pub(crate) tag: u64,
    /// Bytes of the type's name.
    pub(crate) name_len: u64,
}

impl Shape {
    /// The shape an entry records.
    fn of_entry(entry: &NameEntry) -> Self {
        Self { size: entry.size, align: entry.align, tag: entry.tag, name_len: entry.type_len }
    }
}

/// A name found in the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) slot: usize,
    pub(crate) offset: u64,
    pub(crate) shape: Shape,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(Found),
    /// Not there; the slot a new entry for it would take, if any is free.
    Absent(Option<usize>),
    /// The state names a block of entries that is not one: a corrupt header.
    Corrupt,
}

/// FNV-1a over `bytes`: the hash of names and of type names.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    hash_of(bytes.iter().copied())
}

/// FNV-1a over the bytes `bytes` yields.
fn hash_of(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Arena {
    /// The first page of the block of entries, if there is one and it is what the state says:
    /// a large block of the data pages long enough for every entry. `Err` for anything else.
    fn names_page(&self) -> Result<Option<u32>, ()> {
        let page = state!(self, names.page);
        if page == 0 {
            return Ok(None);
        }
        let sound = self.in_data(page, NAMES_PAGES)
            && get!(self, page, kind) & 0xff == kind::LARGE
            && get!(self, page, len) >= NAMES_PAGES
            && self.is_in_use(u64::from(page) * PAGE as u64);
        if sound {
            Ok(Some(page))
        } else {
            Err(())
        }
    }

    /// Whether the directory has its block of entries yet; `Err` for a corrupt one.
    pub(crate) fn has_names(&self) -> Result<bool, ()> {
        self.names_page().map(|page| page.is_some())
    }

    /// Records the block at `offset`, just allocated in `tx`, as the block of entries.
    pub(crate) fn set_names_block(&self, tx: &mut Tx, offset: u64) {
        set_state!(self, tx, (offset / PAGE as u64) as u32, names.page);
    }

    /// Entry `slot` of the block at `page`.
    ///
    /// # Safety
    /// `page` is one [`names_page`](Arena::names_page) returned: the block's pages lie in the
    /// data pages grown so far, inside the mapping.
    unsafe fn entry(&self, page: u32, slot: usize) -> *mut NameEntry {
        let slot = slot.min(NAME_SLOTS - 1);
        // SAFETY: the block's pages lie in the mapping (caller), and hold every entry.
        unsafe { self.base.add(page as usize * PAGE).cast::<NameEntry>().add(slot) }
    }

    fn name_bit(words: &[u64; NAME_SLOTS / 64], slot: usize) -> bool {
        words[slot / 64] & 1 << (slot % 64) != 0
    }

    /// Looks `name` up. The caller holds the lock.
    pub(crate) fn lookup(&self, name: &[u8]) -> Lookup {
        let page = match self.names_page() {
            Ok(Some(page)) => page,
            Ok(None) => return Lookup::Absent(None),
            Err(()) => return Lookup::Corrupt,
        };
        let (used, touched) = (state!(self, names.used), state!(self, names.touched));
        let hash = hash(name);
        let mut vacant = None;
        for step in 0..NAME_SLOTS {
            let slot = (hash as usize).wrapping_add(step) % NAME_SLOTS;
            if !Self::name_bit(&used, slot) {
                vacant = vacant.or(Some(slot));
                if !Self::name_bit(&touched, slot) {
                    break;
                }
                continue;
            }
            // SAFETY: `page` came from `names_page`.
            let place = unsafe { self.entry(page, slot) };
            // SAFETY: the entry lies in the block of entries (see `entry`), under the lock; its
            // hash alone is read first, which rules out nearly every other name.
            if unsafe { addr_of!((*place).hash).read() } != hash {
                continue;
            }
            // SAFETY: as above.
            let entry = unsafe { place.read() };
            let len = entry.len as usize;
            if len <= NAME_MAX && entry.name[..len] == *name {
                let shape = Shape::of_entry(&entry);
                return Lookup::Found(Found { slot, offset: entry.offset, shape });
            }
        }
        Lookup::Absent(vacant)
    }

    /// Records the block at `offset` (0: none) as one the directory is to free: the next holder
    /// of the lock frees it ([`finish_release`](Arena::finish_release)) if the operation that
    /// recorded it dies before it clears the record.
    pub(crate) fn set_releasing(&self, tx: &mut Tx, offset: u64) {
        set_state!(self, tx, offset, names.releasing);
    }

    /// Publishes `name` in `slot` (vacant, as [`lookup`](Arena::lookup) found it) for the
    /// value of `shape` at `offset`, in the operation `tx` that allocated it. Returns whether it
    /// did: not when the directory's block is not one, which the caller's lookup under the same
    /// hold of the lock has ruled out.
    #[must_use]
    pub(crate) fn publish_name(
        &self,
        tx: &mut Tx,
        slot: usize,
        name: &[u8],
        offset: u64,
        shape: Shape,
    ) -> bool {
        let Ok(Some(page)) = self.names_page() else { return false };
        let mut entry = NameEntry {
            hash: hash(name),
            offset,
            size: shape.size,
            align: shape.align,
            tag: shape.tag,
            len: name.len().min(NAME_MAX) as u64,
            name: [0; NAME_MAX],
            type_len: shape.name_len,
            _reserved: 0,
        };
        let len = name.len().min(NAME_MAX);
        entry.name[..len].copy_from_slice(&name[..len]);
        // SAFETY: (1) `page` came from `names_page`, so the entry lies in the block of entries;
        // (2) its bit is clear, so no reader looks at it, and the lock is held. Written outside
        // the log: until the bit below is set, its contents mean nothing.
        unsafe { self.entry(page, slot).write(entry) };
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        let used = state!(self, names.used[word]);
        set_state!(self, tx, used | bit, names.used[word]);
        let touched = state!(self, names.touched[word]);
        if touched & bit == 0 {
            set_state!(self, tx, touched | bit, names.touched[word]);
        }
        true
    }

    /// Forgets the name in `slot`, in the operation `tx` that frees its block.
    pub(crate) fn forget_name(&self, tx: &mut Tx, slot: usize) {
        let slot = slot.min(NAME_SLOTS - 1);
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        let used = state!(self, names.used[word]);
        set_state!(self, tx, used & !bit, names.used[word]);
    }

    /// The address in this process of `offset`, an offset the arena handed out.
    pub(crate) fn at(&self, offset: u64) -> *mut u8 {
        self.base.wrapping_add(offset as usize)
    }

    /// Checks the directory: its block of entries is one, every entry in use has been, and
    /// names a block in use, not lent, that holds its type and then its type's name, whose
    /// hash the entry records, with a name no longer than [`NAME_MAX`]. The caller holds the
    /// lock.
    pub(crate) fn check_names(&self) -> Result<(), crate::ShmCheckError> {
        let bad = crate::ShmCheckError::BadDirectory;
        let (used, touched) = (state!(self, names.used), state!(self, names.touched));
        let page = match self.names_page() {
            Ok(Some(page)) => page,
            Ok(None) if used.iter().all(|&word| word == 0) => return Ok(()),
            _ => return Err(bad),
        };
        for slot in (0..NAME_SLOTS).filter(|&slot| Self::name_bit(&used, slot)) {
            // SAFETY: `page` came from `names_page`, so the entry lies in the block of entries;
            // the lock is held.
            let entry = unsafe { self.entry(page, slot).read() };
            let sound = Self::name_bit(&touched, slot)
                && (1..=NAME_MAX as u64).contains(&entry.len)
                && entry.hash == hash(&entry.name[..entry.len as usize])
                && entry.align.is_power_of_two()
                && entry.offset % entry.align == 0
                && self.holds_value_and_type_name(entry.offset, Shape::of_entry(&entry))
                && self
                    .stored_type_name(entry.offset, Shape::of_entry(&entry))
                    .is_some_and(|type_name| hash_of(type_name) == entry.tag);
            if !sound {
                return Err(bad);
            }
        }
        Ok(())
    }

    /// Whether the block at `offset` is one in use, not lent, with room for a value of `shape`
    /// and its type's name after it.
    fn holds_value_and_type_name(&self, offset: u64, shape: Shape) -> bool {
        let Some(needed) = shape.size.checked_add(shape.name_len) else { return false };
        self.locate(offset).is_ok_and(|located| {
            located != super::Located::Lent && self.usable_size(located) as u64 >= needed
        })
    }

    /// The bytes that follow a value of `shape` at `offset`, where its type's name is kept, or
    /// `None` when they would not all lie in the data pages. The caller holds the lock.
    fn stored_type_name(&self, offset: u64, shape: Shape) -> Option<impl Iterator<Item = u8> + '_> {
        let start = offset.checked_add(shape.size)?;
        let end = start.checked_add(shape.name_len)?;
        if shape.name_len > 0 {
            let first = u32::try_from(start / PAGE as u64).ok()?;
            let last = u32::try_from((end - 1) / PAGE as u64).ok()?;
            if !self.in_data(first, last.checked_sub(first)?.checked_add(1)?) {
                return None;
            }
        }
        let at = self.at(start);
        Some((0..shape.name_len as usize).map(move |i| {
            // SAFETY: (1) the `name_len` bytes at `at` lie in the data pages grown so far
            // (checked above), inside the mapping, which outlives the arena's borrow; (2) a byte
            // needs no alignment; (3) they are read atomically, one by one: an entry a buggy
            // process wrote may point them into a block another process writes meanwhile.
            unsafe { AtomicU8::from_ptr(at.add(i)) }.load(Ordering::Relaxed)
        }))
    }

    /// Whether the value named with `shape` at `offset` was placed with the type name
    /// `type_name`: the bytes after the value are those. `Err` for a corrupt entry: one whose
    /// name would lie outside the data pages, or that differs from `type_name` where no block
    /// in use holds the value and a name after it. The caller holds the lock; a lookup that
    /// hands out the value then checks its block.
    pub(crate) fn has_type_name(
        &self,
        offset: u64,
        shape: Shape,
        type_name: &[u8],
    ) -> Result<bool, ()> {
        let stored = self.stored_type_name(offset, shape).ok_or(())?;
        if shape.name_len == type_name.len() as u64 && stored.eq(type_name.iter().copied()) {
            return Ok(true);
        }
        // Another type's name only in a block made for a value and its name: the block is
        // looked at on this path alone, which a lookup of the right type does not take.
        if self.holds_value_and_type_name(offset, shape) {
            Ok(false)
        } else {
            Err(())
        }
    }

    /// Names in use.
    pub(crate) fn name_count(&self) -> u32 {
        state!(self, names.used).iter().map(|word| word.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a() {
        // The FNV-1a test vectors for "" and "a".
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
