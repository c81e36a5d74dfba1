//! The per-request workload of a server, for the `per_request` driver: each request builds a map
//! and a buffer across two `.await`s and reads them back, in whatever allocator its pool is.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use hashbrown::HashMap;

/// Entries of each request's map, built by inserts so that it grows as a server's would.
pub const ENTRIES: u64 = 200;

/// Bytes of each request's buffer.
pub const BUFFER: usize = 800;

/// One request's work in `alloc`: a `hashbrown::HashMap<u64, u64>` of [`ENTRIES`] entries, then
/// a buffer of [`BUFFER`] bytes, each followed by a yield to the runtime while both are alive,
/// then a check that they read back what was written. Every peer builds the same collections
/// with the same hash function; only the allocator differs.
///
/// # Errors
/// A message when the map or the buffer reads back something other than what was written.
pub async fn work<A: Allocator + Copy>(alloc: A, id: u64) -> Result<(), String> {
    let mut map = HashMap::new_in(alloc);
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
