//! A `LockedHeapPool` over `OsSource` as this test binary's global allocator: everything the
//! standard library, the test harness and the collections below allocate comes from the pool.
//! Taking the pool's chunks from the global allocator would re-enter the pool's lock and hang
//! before `main`; that the binary runs at all is the first check.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

use hashbrown::HashMap;
use melon_alloc_heap::{LockedHeapPool, OsSource};

#[global_allocator]
static POOL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), None);

/// Entries of each thread's map, in every build: a debug build takes a few seconds for them.
const ENTRIES: u32 = 400_000;

/// The value stored under key `i`: a few bytes to a few hundred, so the map's blocks span many
/// size classes.
fn value(i: u32) -> Vec<u8> {
    (0..value_len(i)).map(|at| (i as usize + at) as u8).collect()
}

fn value_len(i: u32) -> usize {
    (i % 61 + i % 7 * 40) as usize
}

/// Builds a `BTreeMap<String, Vec<u8>>` of `ENTRIES` entries, checks lookups and totals, drops
/// it, and returns the total length of its values.
fn build_and_drop_a_btree(thread: u32) -> usize {
    let mut map = BTreeMap::new();
    for i in 0..ENTRIES {
        map.insert(format!("key {thread}-{i:07}"), value(i));
    }
    assert_eq!(map.len(), ENTRIES as usize);
    for i in (0..ENTRIES).step_by(997) {
        assert_eq!(map[&format!("key {thread}-{i:07}")], value(i), "thread {thread} key {i}");
    }
    let total: usize = map.values().map(Vec::len).sum();
    let expected: usize = (0..ENTRIES).map(value_len).sum();
    assert_eq!(total, expected);
    // The keys are in order, so the first and last are the least and greatest.
    assert_eq!(map.keys().next().unwrap(), &format!("key {thread}-0000000"));
    assert_eq!(map.keys().last().unwrap(), &format!("key {thread}-{:07}", ENTRIES - 1));
    drop(map);
    total
}

/// A hashbrown map of strings grown past many tables, thinned, and checked.
fn grow_a_hash_map() {
    let mut map: HashMap<u64, String> = HashMap::new();
    for key in 0..100_000u64 {
        map.insert(key, format!("{key:x}"));
    }
    map.retain(|key, _| key % 3 == 0);
    map.shrink_to_fit();
    assert_eq!(map.len(), 33_334);
    assert_eq!(map[&99_999], "1869f");
    let digits: usize = map.values().map(String::len).sum();
    let expected: usize = (0..100_000u64).step_by(3).map(|key| format!("{key:x}").len()).sum();
    assert_eq!(digits, expected);
}

/// Held by each test while it runs: the first compares the pool's figures before and after its
/// work, which another test's blocks in use at either moment would change.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn a_real_workload_runs_on_the_pool_and_gives_everything_back() {
    let _alone = one_at_a_time();
    let before = POOL.stats();

    let mut text = String::new();
    for i in 0..1000 {
        write!(text, "{i},").unwrap();
    }
    assert_eq!(text.len(), (0..1000).map(|i| format!("{i},").len()).sum::<usize>());
    drop(text);

    grow_a_hash_map();

    // Two threads build and drop their maps at once, sharing the pool's lock.
    let workers: Vec<_> =
        (0..2).map(|thread| thread::spawn(move || build_and_drop_a_btree(thread))).collect();
    let totals: Vec<usize> = workers.into_iter().map(|worker| worker.join().unwrap()).collect();
    assert_eq!(totals[0], totals[1]);
    assert!(totals[0] > usize::try_from(ENTRIES).unwrap() * 50);

    // Many short threads: each thread's own allocations (its name, its stack guard records,
    // its result) come and go through the pool.
    let sums: Vec<u64> = (0..32u64)
        .map(|n| thread::spawn(move || (0..=n).map(|i| i * i).sum::<u64>()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    assert_eq!(sums[31], 31 * 32 * 63 / 6);

    POOL.check().unwrap();
    let after = POOL.stats();
    // The harness may hold a few more blocks (captured output, its own threads' state).
    assert!(
        after.live_blocks <= before.live_blocks + 64,
        "live blocks {} before, {} after",
        before.live_blocks,
        after.live_blocks
    );
    assert!(after.bytes_in_use <= before.bytes_in_use + (64 << 10));
    assert!(after.peak_bytes_held >= 2 * usize::try_from(ENTRIES).unwrap() * 100);
}

/// Memory aligned to a chunk or more: a heap pool's slabs, which its `GlobalSource` takes from
/// this global allocator, and a value whose type asks for 16 KiB, each a chunk of its own from
/// the global pool's source.
#[test]
fn pools_over_the_global_allocator_and_chunk_aligned_values_work_on_top_of_it() {
    let _alone = one_at_a_time();
    #[repr(align(16384))]
    struct Page([u8; 16384]);

    let page = Box::new(Page([7; 16384]));
    assert_eq!(core::ptr::from_ref(&*page) as usize % 16384, 0);
    assert!(page.0.iter().all(|&b| b == 7));
    drop(page);

    let pool = melon_alloc_heap::HeapPool::new();
    let block = pool.alloc(64).expect("a heap pool takes its slabs from this global allocator");
    // SAFETY: the block came from `pool` and is not used again.
    unsafe { pool.free(block) };
    let root = melon_alloc_heap::SyncPool::new(melon_alloc_heap::GlobalSource::new(), None);
    let child = root.child_with_limit(1 << 20);
    let mut map = HashMap::new_in(&child);
    map.extend((0..1000u32).map(|key| (key, key * 2)));
    assert_eq!(map[&999], 1998);
    drop(map);
    drop(child);
    drop(root);
    drop(pool);
    POOL.check().unwrap();
}

/// Set in the environment of the run of this binary that frees a block twice: `small` for a
/// block of a size class, `chunk` for one aligned to a chunk, which has a chunk of its own.
#[cfg(debug_assertions)]
const FREE_TWICE: &str = "MELON_ALLOC_FREE_TWICE";

/// A debug build checks each free: a block freed twice through the global allocator stops the
/// process with a message, which the pool makes in itself once it has let go of its lock. (Made
/// under the lock, the message would wait for that lock forever.) Each run that frees twice is
/// this binary again, watched for at most a minute.
#[test]
#[cfg(debug_assertions)]
fn a_block_freed_twice_stops_the_process_with_a_message() {
    let _alone = one_at_a_time();
    use std::alloc::{alloc, dealloc, Layout};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    if let Some(kind) = std::env::var_os(FREE_TWICE) {
        let layout = match kind.to_str() {
            Some("small") => Layout::from_size_align(64, 8).unwrap(),
            _ => Layout::from_size_align(100, melon_alloc_core::CHUNK_SIZE).unwrap(),
        };
        // SAFETY: a layout of a non-zero size; the block is freed twice on purpose, which the
        // check must catch before anything is written.
        unsafe {
            let block = alloc(layout);
            assert!(!block.is_null());
            dealloc(block, layout);
            dealloc(block, layout);
        }
        return;
    }
    let test = "a_block_freed_twice_stops_the_process_with_a_message";
    for kind in ["small", "chunk"] {
        let mut run = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(FREE_TWICE, kind)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while run.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                run.kill().unwrap();
                panic!("{kind}: the process still ran a minute after the double free");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = run.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        // SIGABRT is signal 6 on Linux.
        assert_eq!(output.status.signal(), Some(6), "{kind}: {said}");
        assert!(said.contains("melon-alloc: invalid free: "), "{kind}: {said}");
    }
}
