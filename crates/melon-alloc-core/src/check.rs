//! The invariant scan: walks every chunk and free list of an engine and reports the first thing
//! that is wrong.

use core::fmt;

use crate::chunk::{
    ChunkHeader, ChunkList, ChunkState, FreeBlock, CHUNK_SIZE, HEADER_SIZE, LARGE_MAGIC, NEVER,
    PAGES, PAGE_MAGIC, PAGE_SIZE, SMALL_MAGIC,
};
use crate::class::{CLASS_COUNT, CLASS_SIZES, FIRST_OFFSET};

/// A broken invariant found by [`Engine::check`](crate::Engine::check).
///
/// # Examples
/// ```
/// # use melon_alloc_core::{Engine, Problem, RegionSource, CHUNK_SIZE};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
/// let mut engine = Engine::new(source, None);
/// let block = engine.alloc(64).unwrap();
/// // Moved while it holds a chunk, the engine is not the owner the chunk names.
/// let moved = Box::new(engine);
/// let error = moved.check().unwrap_err();
/// assert_eq!(error.problem, Problem::WrongOwner);
/// assert_eq!(error.chunk, block.as_ptr() as usize & !(CHUNK_SIZE - 1));
/// assert!(error.to_string().ends_with("chunk belongs to another pool"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckError {
    /// Address of the chunk where the problem was found; 0 for a problem with the totals.
    pub chunk: usize,
    /// What is wrong.
    pub problem: Problem,
}

/// What [`CheckError`] found wrong.
///
/// # Examples
/// ```
/// # use melon_alloc_core::{Engine, Problem, RegionSource};
/// # static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
/// # // SAFETY: this example is the arena's only user.
/// # let source = RegionSource::from_static(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) });
/// let mut engine = Engine::new(source, None);
/// let _block = engine.alloc(64).unwrap();
/// let moved = Box::new(engine);
/// let verdict = match moved.check().map_err(|error| error.problem) {
///     Ok(()) => "sound",
///     Err(Problem::WrongOwner) => "moved since it took its chunks",
///     Err(_) => "corrupt",
/// };
/// assert_eq!(verdict, "moved since it took its chunks");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The chunk header's magic number is not a chunk's.
    BadMagic,
    /// The chunk header names another engine as its owner.
    WrongOwner,
    /// The chunk is on the list of a class, or in a state, that its header does not match.
    WrongList,
    /// A list's back link does not point at the previous chunk.
    BrokenLink,
    /// More blocks are counted in use or carved than the chunk has room for.
    CountOverCapacity,
    /// A free-list entry is outside the chunk, not at a block start, or never carved.
    StrayFreeEntry {
        /// Address of the entry.
        entry: usize,
    },
    /// The free list holds more entries than the chunk has carved: a cycle or a double free.
    FreeListTooLong,
    /// The free lists do not match the chunk's counts.
    CountMismatch {
        /// Entries on the allocation free list.
        free: u16,
        /// Entries on the local free list.
        local: u16,
        /// What the header says the local free list holds.
        local_count: u32,
        /// Blocks carved.
        carved: u16,
    },
    /// The chunk's free-path trigger is not the one its place on the lists calls for.
    WrongEvent,
    /// A large chunk's data offset or span is impossible.
    BadLargeLayout,
    /// The engine's counters disagree with what its lists hold.
    TotalsMismatch {
        /// Bytes the lists account for.
        counted: usize,
        /// Bytes the engine says it holds.
        recorded: usize,
    },
    /// The engine holds more than its limit, or more than its recorded peak.
    OverLimit,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool corrupt at chunk {:#x}: ", self.chunk)?;
        match self.problem {
            Problem::BadMagic => f.write_str("bad magic number"),
            Problem::WrongOwner => f.write_str("chunk belongs to another pool"),
            Problem::WrongList => f.write_str("chunk is on the wrong list"),
            Problem::BrokenLink => f.write_str("broken back link"),
            Problem::CountOverCapacity => f.write_str("block counts exceed the chunk's capacity"),
            Problem::StrayFreeEntry { entry } => write!(f, "stray free-list entry {entry:#x}"),
            Problem::FreeListTooLong => f.write_str("free list has a cycle or a double free"),
            Problem::CountMismatch { free, local, local_count, carved } => write!(
                f,
                "{free} free + {local} local (header says {local_count}) do not fit {carved} carved"
            ),
            Problem::WrongEvent => f.write_str("wrong free-path trigger"),
            Problem::BadLargeLayout => f.write_str("impossible large block layout"),
            Problem::TotalsMismatch { counted, recorded } => {
                write!(f, "lists hold {counted} bytes, counters say {recorded}")
            }
            Problem::OverLimit => f.write_str("more held than the limit or the recorded peak"),
        }
    }
}

impl core::error::Error for CheckError {}

/// The parts of an engine the scan reads, without its source type.
pub(crate) struct Parts<'a> {
    pub(crate) avail: &'a [ChunkList; CLASS_COUNT],
    pub(crate) full: &'a [ChunkList; CLASS_COUNT],
    pub(crate) spare: &'a [ChunkList; CLASS_COUNT],
    pub(crate) large: &'a ChunkList,
    pub(crate) unused_pages: &'a ChunkList,
    pub(crate) owner: *const (),
    pub(crate) limit: Option<usize>,
    pub(crate) held: usize,
    pub(crate) peak_held: usize,
    pub(crate) lent: usize,
}

fn fail(chunk: *const ChunkHeader, problem: Problem) -> Result<(), CheckError> {
    Err(CheckError { chunk: chunk.addr(), problem })
}

pub(crate) fn check(parts: Parts<'_>) -> Result<(), CheckError> {
    let mut small_bytes = 0;
    for class in 0..CLASS_COUNT {
        let lists = [
            (&parts.avail[class], ChunkState::Avail),
            (&parts.full[class], ChunkState::Full),
            (&parts.spare[class], ChunkState::Spare),
        ];
        for (list, state) in lists {
            let mut prev: *mut ChunkHeader = core::ptr::null_mut();
            for chunk in list.iter() {
                // SAFETY: the engine's lists hold valid headers.
                let header = unsafe { &*chunk };
                let magic = if header.is_page() { PAGE_MAGIC } else { SMALL_MAGIC };
                check_header(chunk, header, &parts, magic)?;
                if header.prev != prev {
                    return fail(chunk, Problem::BrokenLink);
                }
                let span = if header.is_page() { PAGE_SIZE } else { CHUNK_SIZE };
                if header.class as usize != class || header.state != state || header.span != span {
                    return fail(chunk, Problem::WrongList);
                }
                if header.is_page() {
                    check_page_count(chunk)?;
                }
                check_small_chunk(chunk, header, prev.is_null())?;
                small_bytes += span;
                prev = chunk;
            }
        }
        if parts.spare[class].iter().count() > crate::engine::SPARE_CHUNKS {
            return fail(parts.spare[class].head, Problem::WrongList);
        }
    }
    let mut prev: *mut ChunkHeader = core::ptr::null_mut();
    for chunk in parts.unused_pages.iter() {
        // SAFETY: the engine's lists hold valid headers.
        let header = unsafe { &*chunk };
        check_header(chunk, header, &parts, PAGE_MAGIC)?;
        if header.prev != prev {
            return fail(chunk, Problem::BrokenLink);
        }
        if header.state != ChunkState::Unused || header.span != PAGE_SIZE {
            return fail(chunk, Problem::WrongList);
        }
        check_page_count(chunk)?;
        small_bytes += PAGE_SIZE;
        prev = chunk;
    }
    let mut large_bytes = 0;
    let mut prev: *mut ChunkHeader = core::ptr::null_mut();
    for chunk in parts.large.iter() {
        // SAFETY: the engine's lists hold valid headers.
        let header = unsafe { &*chunk };
        check_header(chunk, header, &parts, LARGE_MAGIC)?;
        if header.prev != prev {
            return fail(chunk, Problem::BrokenLink);
        }
        if header.state != ChunkState::Large || header.local_count() != 0 || header.event != 1 {
            return fail(chunk, Problem::WrongList);
        }
        let offset = usize::from(header.data_offset);
        if !(HEADER_SIZE..CHUNK_SIZE).contains(&offset) || offset >= header.span {
            return fail(chunk, Problem::BadLargeLayout);
        }
        large_bytes += header.span;
        prev = chunk;
    }
    let counted = small_bytes + large_bytes + parts.lent;
    if counted != parts.held {
        return fail(core::ptr::null(), Problem::TotalsMismatch { counted, recorded: parts.held });
    }
    if parts.limit.is_some_and(|limit| parts.held > limit) || parts.held > parts.peak_held {
        return fail(core::ptr::null(), Problem::OverLimit);
    }
    Ok(())
}

fn check_header(
    chunk: *mut ChunkHeader,
    header: &ChunkHeader,
    parts: &Parts<'_>,
    magic: u16,
) -> Result<(), CheckError> {
    if header.magic != magic {
        return fail(chunk, Problem::BadMagic);
    }
    if header.owner != parts.owner {
        return fail(chunk, Problem::WrongOwner);
    }
    Ok(())
}

/// Checks that the first page of `page`'s chunk counts as in use the pages that are: a chunk
/// whose count is off would go back to its source too early, or never.
fn check_page_count(page: *mut ChunkHeader) -> Result<(), CheckError> {
    let first = crate::chunk::chunk_of(page.cast());
    let in_use = (0..PAGES)
        // SAFETY: `page` is a page on one of the engine's lists, so its chunk is paged and each
        // of its pages starts with a valid header.
        .filter(|index| unsafe { (*first.byte_add(index * PAGE_SIZE)).state } != ChunkState::Unused)
        .count();
    // SAFETY: as above, for the first page.
    if usize::from(unsafe { (*first).data_offset }) != in_use {
        return fail(first, Problem::WrongList);
    }
    Ok(())
}

fn check_small_chunk(
    chunk: *mut ChunkHeader,
    header: &ChunkHeader,
    is_head: bool,
) -> Result<(), CheckError> {
    let class = header.class();
    let capacity = header.capacity();
    if header.carved > capacity || header.local_count() > u32::from(header.carved) {
        return fail(chunk, Problem::CountOverCapacity);
    }
    let on_free = check_free_list(chunk, header, header.free, class)?;
    let on_local = check_free_list(chunk, header, header.local_free, class)?;
    if u32::from(on_local) != header.local_count() || on_free + on_local > header.carved {
        return fail(
            chunk,
            Problem::CountMismatch {
                free: on_free,
                local: on_local,
                local_count: header.local_count(),
                carved: header.carved,
            },
        );
    }
    let event_ok = match header.state {
        // A spare chunk has every carved block back on its local list.
        ChunkState::Spare => on_free == 0 && on_local == header.carved,
        ChunkState::Full => {
            header.carved == capacity && on_free == 0 && on_local == 0 && header.event == 1
        }
        // A head never leaves its fast path, unless it is a page watched until it empties.
        _ if is_head => {
            header.event == NEVER || (header.is_page() && header.event == u32::from(header.carved))
        }
        // Only the head allocates, so only the head has a `free` list.
        _ => on_free == 0 && header.event == u32::from(header.carved),
    };
    if !event_ok {
        return fail(chunk, Problem::WrongEvent);
    }
    Ok(())
}

/// Checks that every entry of a free list is a carved block of the chunk, and counts them.
fn check_free_list(
    chunk: *mut ChunkHeader,
    header: &ChunkHeader,
    list: *mut FreeBlock,
    class: usize,
) -> Result<u16, CheckError> {
    let (first, size) = (FIRST_OFFSET[class], CLASS_SIZES[class]);
    let mut count = 0u16;
    let mut entry = list;
    while !entry.is_null() {
        if count >= header.carved {
            return Err(CheckError { chunk: chunk.addr(), problem: Problem::FreeListTooLong });
        }
        let offset = entry.addr().wrapping_sub(chunk.addr());
        let stray = offset < first
            || offset >= header.span
            || (offset - first) % size != 0
            || header.carve_index((offset - first) / size) >= usize::from(header.carved);
        if stray {
            return Err(CheckError {
                chunk: chunk.addr(),
                problem: Problem::StrayFreeEntry { entry: entry.addr() },
            });
        }
        count += 1;
        // SAFETY: the entry is a carved block of this chunk, so its first word is readable.
        entry = unsafe { crate::chunk::read_link(entry) };
    }
    Ok(count)
}
