//! A pool per request on a multi-threaded tokio runtime: each request's task makes a child of one
//! shared root, builds a map and a buffer in it across two `.await`s, and drops it at the end.
//!
//! Run it with `cargo run --release --example per_request`.

use std::time::Instant;

use allocator_api2::vec::Vec;
use hashbrown::HashMap;
use melon_alloc::heap::GlobalSource;
use melon_alloc::{SyncChild, SyncPool};
use tokio::task::JoinSet;

/// Requests served in all.
const REQUESTS: u64 = 20_000;
/// Requests whose tasks are alive at once.
const IN_FLIGHT: usize = 100;
/// Entries of each request's map.
const ENTRIES: u64 = 200;
/// Bytes of each request's buffer.
const BUFFER: usize = 800;
/// What one request may hold; far above what it needs. Past it, the child refuses memory:
/// `try_reserve` returns the error, which fails the request alone, while a collection's calls that
/// cannot fail (`insert`, `push`) would abort the process through `handle_alloc_error`, as they do
/// when the global allocator has no memory. So a request reserves room first.
const REQUEST_LIMIT: usize = 1 << 20;

/// The root every request's pool takes its chunks from. A `static` lives as long as every task,
/// which is what a child's borrow of it needs inside `tokio::spawn`.
static ROOT: SyncPool = SyncPool::new(GlobalSource::new(), None);

/// One request: a child pool, a map and a buffer in it that live across two `.await`s, a check
/// that they hold what was written, and the bytes the child held at its peak.
async fn request(id: u64) -> Result<usize, String> {
    let child: SyncChild<'static> = ROOT.child_with_limit(REQUEST_LIMIT);
    let mut map = HashMap::new_in(&child);
    map.try_reserve(ENTRIES as usize).map_err(|error| format!("request {id}: {error:?}"))?;
    for key in 0..ENTRIES {
        map.insert(key, key ^ id);
    }
    tokio::task::yield_now().await;
    let mut buffer = Vec::new_in(&child);
    buffer.try_reserve(BUFFER).map_err(|error| format!("request {id}: {error}"))?;
    buffer.extend((0..BUFFER).map(|i| (i as u64 ^ id) as u8));
    tokio::task::yield_now().await;
    let map_ok = (0..ENTRIES).all(|key| map.get(&key) == Some(&(key ^ id)));
    let buffer_ok = buffer.iter().enumerate().all(|(i, &byte)| byte == (i as u64 ^ id) as u8);
    if !(map_ok && buffer_ok) {
        return Err(format!("request {id} read back something it did not write"));
    }
    drop((map, buffer));
    Ok(child.stats().peak_bytes_held)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), String> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut child_peak = 0;
    let mut next = 0;
    while next < REQUESTS || !tasks.is_empty() {
        if next < REQUESTS && tasks.len() < IN_FLIGHT {
            tasks.spawn(request(next));
            next += 1;
            continue;
        }
        if let Some(done) = tasks.join_next().await {
            let peak = done.map_err(|error| format!("a request's task failed: {error}"))??;
            child_peak = child_peak.max(peak);
        }
    }
    let wall = started.elapsed();

    let stats = ROOT.stats();
    ROOT.check().map_err(|error| format!("the root is inconsistent: {error}"))?;
    println!("requests:                 {REQUESTS} ({IN_FLIGHT} in flight)");
    println!("wall time:                {:.1} ms", wall.as_secs_f64() * 1e3);
    println!("per request:              {:.2} us", wall.as_secs_f64() * 1e6 / REQUESTS as f64);
    println!("root's peak bytes held:   {}", stats.peak_bytes_held);
    println!("a request's peak (max):   {child_peak} bytes");
    println!("root at the end:          {} live blocks, check clean", stats.live_blocks);
    if stats.live_blocks != 0 {
        return Err("the root still has live blocks".into());
    }
    Ok(())
}
