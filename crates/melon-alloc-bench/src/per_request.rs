//! The per-request workload of a server, for the `per_request` driver: each request builds a map
//! and a buffer across two `.await`s and reads them back, in whatever allocator its pool is.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use hashbrown::HashMap;

/// Entries of each request's map, built by inserts so that it grows as a server's would.
pub const ENTRIES: u64 = 200;

/// Bytes of each request's buffer.
pub const BUFFER: usize = 800;

/// How each request's map starts.
///
/// # Examples
/// ```
/// use allocator_api2::alloc::Global;
/// use melon_alloc_bench::per_request::{work, MapStart};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(MapStart::default(), MapStart::Empty);
/// assert_eq!(runtime.block_on(work(Global, 1, MapStart::Sized)), Ok(()));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapStart {
    /// Empty, so that it grows through a table of each size on the way to [`ENTRIES`], each
    /// freed as the next is made, as a server's map would.
    #[default]
    Empty,
    /// With room for [`ENTRIES`] entries, so that it takes one table and never grows: the
    /// difference from [`Empty`](MapStart::Empty) is what the growth costs.
    Sized,
}

/// One request's work in `alloc`: a `hashbrown::HashMap<u64, u64>` of [`ENTRIES`] entries,
/// started as `start` says, then a buffer of [`BUFFER`] bytes, each followed by a yield to the
/// runtime while both are alive, then a check that they read back what was written. Every peer
/// builds the same collections with the same hash function; only the allocator differs.
///
/// # Errors
/// A message when the map or the buffer reads back something other than what was written.
pub async fn work<A: Allocator + Copy>(alloc: A, id: u64, start: MapStart) -> Result<(), String> {
    let mut map = match start {
        MapStart::Empty => HashMap::new_in(alloc),
        MapStart::Sized => HashMap::with_capacity_in(ENTRIES as usize, alloc),
    };
    for key in 0..ENTRIES {
        map.insert(key, key ^ id);
    }
    tokio::task::yield_now().await;
    let mut buffer = Vec::with_capacity_in(BUFFER, alloc);
    buffer.extend((0..BUFFER).map(|i| byte(i, id)));
    tokio::task::yield_now().await;
    let map_ok = (0..ENTRIES).all(|key| map.get(&key) == Some(&(key ^ id)));
    let buffer_ok = buffer.iter().enumerate().all(|(i, &b)| b == byte(i, id));
    if map_ok && buffer_ok {
        Ok(())
    } else {
        Err(format!("request {id} read back something it did not write"))
    }
}

/// The byte at `i` of request `id`'s buffer: differs between requests, so that a buffer shared
/// by mistake shows.
fn byte(i: usize, id: u64) -> u8 {
    (i as u64 ^ id) as u8
}

#[cfg(test)]
mod tests {
    use core::alloc::Layout;
    use core::cell::Cell;
    use core::ptr::NonNull;

    use allocator_api2::alloc::{AllocError, Allocator, Global};

    use super::{work, MapStart};

    /// The global allocator, counting the blocks it hands out.
    struct Counting(Cell<usize>);

    // SAFETY: every call goes to `Global` unchanged, which keeps the trait's contract; the count
    // is only a side note.
    unsafe impl Allocator for Counting {
        fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
            self.0.set(self.0.get() + 1);
            Global.allocate(layout)
        }

        unsafe fn deallocate(&self, block: NonNull<u8>, layout: Layout) {
            // SAFETY: the caller hands back a block `allocate` gave it, which `Global` made.
            unsafe { Global.deallocate(block, layout) }
        }
    }

    /// The blocks one request's work takes when its map starts as `start`.
    fn blocks_taken(start: MapStart) -> usize {
        let counting = Counting(Cell::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(work(&counting, 7, start)).unwrap();
        counting.0.get()
    }

    #[test]
    fn a_sized_map_takes_one_table_and_an_empty_one_grows_through_several() {
        // The map's one table and the buffer.
        assert_eq!(blocks_taken(MapStart::Sized), 2);
        // Tables for 3, 7, 14, 28, 56, 112 and 224 entries, and the buffer.
        assert_eq!(blocks_taken(MapStart::Empty), 8);
    }
}
