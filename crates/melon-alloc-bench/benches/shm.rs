//! The shared-memory pool against glibc `malloc` and a heap pool: one 64-byte allocation and its
//! free, in pools of two sizes at several fill levels.
//!
//! Melon's C pool scans bitmaps bit by bit for every allocation, so its cost grows with the size
//! and fill of the pool; this pool's allocation is meant to cost the same however big or full the
//! pool is. The group `shm_alloc_64` therefore times the same alloc+free pair in a 64 MiB pool at
//! 0 %, 50 % and 95 % fill and in a 1 GiB pool at 0 % and 95 % fill, next to the same pair on
//! glibc and on a melon [`HeapPool`], so that one run gives every ratio. The peers:
//! - `shm_64MiB/fill_N`, `shm_1GiB/fill_N`: [`ShmPool::alloc`] and [`ShmPool::free`], each of
//!   which takes the pool's process-shared lock, with N % of the pool's free bytes taken by
//!   64-byte blocks before the timing starts.
//! - `glibc`: [`System`], which is `malloc` and `free` for this layout.
//! - `heap`: a root [`HeapPool`], which takes no lock.
//! - `lock_twice`: the pool's lock alone, measured apart from the pair: [`ShmPool::lock`] and
//!   the guard's drop, twice, with nothing done under the lock, in a 64 MiB pool.
//! - `cas_four`: four compare-and-swaps of the kind a lock is taken and released with, measured
//!   apart: two takes and two releases of a bare word, uncontended, with three stores to the
//!   word's cache line under each take.
//!
//! The group `shm_reclaim` times the other side of a worker's life: a process that took 1 MiB
//! through a child pool, in 64 chunks, and died; the time is that of the
//! [`ShmPool::reclaim_dead`] that gives its chunks back, in a 64 MiB pool.
//!
//! The group `shm_grow` times what a pool that grows adds: the allocation that finds no room and
//! grows the pool by one segment (of 1 MiB or 16 MiB), which reserves the segment's memory and
//! metadata, maps it and adds it to the free runs; and the alloc+free pair of 64 bytes in a pool
//! of one segment of 16 MiB next to the same pool grown to 16 segments, which should cost the
//! same.
//!
//! The group `shm_objects` times the pool's named values and its mutex, uncontended:
//! - `find` and `named`: [`ShmPool::find`] and [`ShmPool::named`] of one of 200 names, taken in
//!   turn, each of which takes the pool's lock and looks the name up in the directory.
//! - `shm_mutex_pair`: [`ShmMutex::lock`] and the guard's drop, with a write through the guard.
//! - `pthread_mutex_pair`, `pthread_robust_mutex_pair`: the same pair on a bare
//!   `pthread_mutex_t` in a block of the pool, process-shared, then process-shared and robust:
//!   what the C library offers for a lock between processes, without and with a report of a
//!   holder's death, which [`ShmMutex`] gives on a lock word of its own.
//!
//! Every case of `shm_alloc_64` runs twice: in `shm_alloc_64`, timed by the wall clock as criterion usually times,
//! and in `shm_alloc_64_cpu`, timed by the CPU clock of the benchmarking thread. The machine these
//! benchmarks run on is shared, and while another process holds the core, the wall clock keeps
//! running but the thread's CPU clock does not; the second group is the cost of the pair with
//! that noise left out.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{addr_of_mut, NonNull};
use core::time::Duration;
use std::alloc::System;
use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use melon_alloc::HeapPool;
use melon_alloc_bench::{filled_shm_pool, BareLock, BLOCK};
use melon_alloc_shm::{ShmMutex, ShmPool};

/// The smaller pool: large enough that a 95 % fill is a million blocks.
const SMALL_POOL: usize = 64 << 20;

/// The larger pool, where Melon's bit-by-bit scan would test millions of bits per allocation.
const LARGE_POOL: usize = 1 << 30;

/// The layout of every block: 16-byte alignment is what `malloc` and the pools give anyway, so
/// no peer pays for a stricter one.
const LAYOUT: Layout = match Layout::from_size_align(BLOCK, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("64 bytes at 16 is a valid layout"),
};

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`), as a criterion
/// measurement.
struct ThreadCpuTime;

/// The wall clock's formatter is the right one for CPU time too, since both are durations; it is
/// reached through a static so that the reference outlives any one call.
static WALL_TIME: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

/// The CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the result, and the clock id is one Linux supports.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "the thread's CPU clock is readable");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The alloc+free pair on the shared pool, under any measurement.
fn shm_pair<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, id: &BenchmarkId, shm: &ShmPool) {
    group.bench_function(id.clone(), |b| {
        b.iter(|| {
            let block = shm.alloc(black_box(BLOCK)).expect("room in the pool");
            // SAFETY: the block came from `shm` and is not used again.
            unsafe { shm.free(black_box(block)) };
        });
    });
}

/// The alloc+free pair on glibc, under any measurement.
fn glibc_pair<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group.bench_function("glibc", |b| {
        b.iter(|| {
            // SAFETY: `LAYOUT` has a non-zero size.
            let block = NonNull::new(unsafe { System.alloc(black_box(LAYOUT)) }).expect("memory");
            // SAFETY: the block came from `System` with `LAYOUT` and is not used again.
            unsafe { System.dealloc(black_box(block).as_ptr(), LAYOUT) };
        });
    });
}

/// The alloc+free pair on a heap pool, under any measurement.
fn heap_pair<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group.bench_function("heap", |b| {
        let pool = HeapPool::new();
        b.iter(|| {
            let block = pool.alloc(black_box(BLOCK)).expect("out of memory");
            // SAFETY: the block came from `pool` and is not used again.
            unsafe { pool.free(black_box(block)) };
        });
    });
}

/// The pool's lock taken and released twice, nothing done under it: the lock's share of a pair.
fn lock_twice<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, shm: &ShmPool) {
    group.bench_function("lock_twice", |b| {
        b.iter(|| {
            drop(black_box(shm.lock().expect("the pool's lock")));
            drop(black_box(shm.lock().expect("the pool's lock")));
        });
    });
}

/// Two takes and two releases of a [`BareLock`], in criterion's loop.
fn cas_four<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    let lock = BareLock::default();
    let lock = black_box(&lock);
    group.bench_function("cas_four", |b| b.iter(|| lock.take_and_release_twice()));
}

/// Sets the sampling of a group. Each case is a few tens of nanoseconds, so small samples are
/// stable enough, and they keep both groups, setup of a filled 1 GiB pool included, within about
/// a minute and a half.
fn configure<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// One 64-byte allocation paired with its free, so that the fill level stays where the setup
/// put it. Time per pair, by the wall clock and by the thread's CPU clock.
fn shm_alloc_64(wall: &mut Criterion, cpu: &mut Criterion<ThreadCpuTime>) {
    let mut wall = wall.benchmark_group("shm_alloc_64");
    let mut cpu = cpu.benchmark_group("shm_alloc_64_cpu");
    configure(&mut wall);
    configure(&mut cpu);

    let cases = [
        ("shm_64MiB", SMALL_POOL, 0),
        ("shm_64MiB", SMALL_POOL, 50),
        ("shm_64MiB", SMALL_POOL, 95),
        ("shm_1GiB", LARGE_POOL, 0),
        ("shm_1GiB", LARGE_POOL, 95),
    ];
    for (name, capacity, percent) in cases {
        // One pool per case, dropped before the next is made, so that no more than one large
        // pool is resident at a time.
        let shm = filled_shm_pool(capacity, percent);
        let available = shm.available();
        let id = BenchmarkId::new(name, format!("fill_{percent}"));
        shm_pair(&mut wall, &id, &shm);
        shm_pair(&mut cpu, &id, &shm);
        // The pairs must leave the pool as they found it, or the fill level was not what it says.
        shm.check().expect("the pool is consistent after the pairs");
        assert_eq!(shm.available(), available, "the pairs left the fill level unchanged");
    }
    glibc_pair(&mut wall);
    glibc_pair(&mut cpu);
    heap_pair(&mut wall);
    heap_pair(&mut cpu);
    let shm = filled_shm_pool(SMALL_POOL, 0);
    lock_twice(&mut wall, &shm);
    lock_twice(&mut cpu, &shm);
    drop(shm);
    cas_four(&mut wall);
    cas_four(&mut cpu);
    wall.finish();
    cpu.finish();
}

/// Chunks a dead worker of `shm_reclaim` holds, one block each.
const DEAD_CHUNKS: usize = 64;

/// A block that takes a 16 KiB chunk of its own: 64 of them are 1 MiB of chunks.
const CHUNK_BLOCK: usize = 16_000;

/// The time to take back the chunks of a process that died holding [`DEAD_CHUNKS`] of them.
/// Each iteration forks a worker that fills its child pool and ends without giving anything
/// back; only the reclaim that follows is timed.
fn shm_reclaim(wall: &mut Criterion) {
    let mut group = wall.benchmark_group("shm_reclaim");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let shm = ShmPool::new(SMALL_POOL).expect("a 64 MiB pool");
    let start = shm.available();
    group.bench_function("dead_process_1MiB_in_64_chunks", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                die_holding_chunks(&shm);
                let started = std::time::Instant::now();
                let report = black_box(shm.reclaim_dead().expect("the lock is free"));
                total += started.elapsed();
                assert_eq!(report.chunks, DEAD_CHUNKS, "{report:?}");
            }
            total
        });
    });
    group.finish();
    assert_eq!(shm.available(), start, "every dead worker's chunks came back");
}

/// Forks a process that takes [`DEAD_CHUNKS`] chunks through a child pool and dies with them,
/// and reaps it.
fn die_holding_chunks(shm: &ShmPool) {
    // SAFETY: the child only allocates from the pool and ends with `_exit`, running none of the
    // parent's destructors; glibc's fork handlers leave `malloc` usable in it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let child = shm.child();
        let held = (0..DEAD_CHUNKS).filter(|_| child.alloc(CHUNK_BLOCK).is_some()).count();
        // SAFETY: ends the process at once, as a killed worker ends, holding everything.
        unsafe { libc::_exit(i32::from(held != DEAD_CHUNKS)) };
    }
    let mut status = 0;
    // SAFETY: `pid` is this process's child, and `status` a valid place to write.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the worker took its chunks"
    );
}

/// Segments a pool of `shm_grow` grows by before the next pool is made: each iteration fills
/// the pool, so the memory of one pool is what the bench holds at most.
const GROWTHS_PER_POOL: usize = 15;

/// The block whose allocation grows a filled pool: a run of pages, so that no slab with room
/// serves it instead.
const GROWING_BLOCK: usize = 16 << 10;

/// The page size: a filled pool's free bytes are whole pages.
const PAGE: usize = 4096;

/// The time to grow a pool by one segment, and the alloc+free pair in a pool of 1 segment and
/// of 16.
fn shm_grow(wall: &mut Criterion) {
    let mut group = wall.benchmark_group("shm_grow");
    configure(&mut group);
    for segment in [1 << 20, 16 << 20] {
        let id = BenchmarkId::new("add_a_segment", format!("{}MiB", segment >> 20));
        group.bench_function(id, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut pool: Option<(ShmPool, Vec<NonNull<u8>>)> = None;
                for _ in 0..iters {
                    let (shm, held) = pool.get_or_insert_with(|| {
                        let shm = ShmPool::builder()
                            .capacity(segment)
                            .max_capacity(segment * (GROWTHS_PER_POOL + 1))
                            .build()
                            .expect("a growing pool");
                        (shm, Vec::new())
                    });
                    // Untimed: the pool is filled, so that the next allocation must grow it.
                    let fill = shm.available() / PAGE * PAGE;
                    held.push(shm.alloc(fill).expect("room for the fill"));
                    let segments = shm.stats().expect("the pool's lock").segments;
                    let started = std::time::Instant::now();
                    let block = black_box(shm.alloc(black_box(GROWING_BLOCK)));
                    total += started.elapsed();
                    held.push(block.expect("room after growing"));
                    let grown = shm.stats().expect("the pool's lock").segments;
                    assert_eq!(grown, segments + 1, "one segment per allocation");
                    if shm.capacity() == shm.max_capacity() {
                        pool = None;
                    }
                }
                total
            });
        });
    }
    let one = ShmPool::builder()
        .capacity(16 << 20)
        .max_capacity(1 << 30)
        .build()
        .expect("a growing pool");
    let sixteen = ShmPool::builder()
        .capacity(16 << 20)
        .max_capacity(1 << 30)
        .build()
        .expect("a growing pool");
    // Fifteen segments more than the first holds: the block and the first's free pages.
    let grown = sixteen.alloc(14 * (16 << 20)).expect("room after growing");
    // SAFETY: the block was just allocated and is not used again.
    unsafe { sixteen.free(grown) };
    for (segments, shm) in [(1, &one), (16, &sixteen)] {
        assert_eq!(shm.stats().expect("the pool's lock").segments, segments);
        let id = BenchmarkId::new("alloc_64", format!("segments_{segments}"));
        shm_pair(&mut group, &id, shm);
    }
    group.finish();
}

/// Names in the directory of `shm_objects`: most of its 256 slots, so that a lookup meets the
/// collisions of a well-filled directory.
const NAMES: usize = 200;

/// A C library mutex and the value it guards, side by side in a block of the shared pool, as in
/// a [`ShmMutex`].
#[repr(C)]
struct PthreadMutex {
    mutex: libc::pthread_mutex_t,
    value: u64,
}

/// The mutex and the value of a [`PthreadMutex`].
///
/// # Safety
/// `held` points to a block of a live pool that is large enough and aligned for a
/// `PthreadMutex`.
unsafe fn fields(held: NonNull<PthreadMutex>) -> (*mut libc::pthread_mutex_t, *mut u64) {
    let place = held.as_ptr();
    // SAFETY: the place is in bounds of a live block (caller); no reference is made.
    let mutex = unsafe { addr_of_mut!((*place).mutex) };
    // SAFETY: as above.
    let value = unsafe { addr_of_mut!((*place).value) };
    (mutex, value)
}

/// Makes a [`PthreadMutex`] in a new block of `shm`: a normal, process-shared mutex, robust too
/// when `robust` is set, holding 0.
fn pthread_mutex_in(shm: &ShmPool, robust: bool) -> NonNull<PthreadMutex> {
    let layout = Layout::new::<PthreadMutex>();
    let held = shm.alloc_layout(layout).expect("room for a mutex").cast::<PthreadMutex>();
    // SAFETY: the block was just allocated with the layout of a `PthreadMutex`.
    let (mutex, value) = unsafe { fields(held) };
    let mut attr = core::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is valid for writes; `init` fills it in.
    let status = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
    assert_eq!(status, 0, "pthread_mutexattr_init");
    let attr = attr.as_mut_ptr();
    // SAFETY: `attr` was initialised above and is destroyed only at the end.
    let status = unsafe { libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_NORMAL) };
    assert_eq!(status, 0, "pthread_mutexattr_settype");
    // SAFETY: as above.
    let status = unsafe { libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED) };
    assert_eq!(status, 0, "pthread_mutexattr_setpshared");
    if robust {
        // SAFETY: as above.
        let status = unsafe { libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST) };
        assert_eq!(status, 0, "pthread_mutexattr_setrobust");
    }
    // SAFETY: (1) `mutex` is in a new block of the pool, aligned, that nothing else uses;
    // (2) `attr` is initialised.
    let status = unsafe { libc::pthread_mutex_init(mutex, attr) };
    assert_eq!(status, 0, "pthread_mutex_init");
    // SAFETY: `attr` is initialised, and the mutex keeps no reference to it.
    unsafe { libc::pthread_mutexattr_destroy(attr) };
    // SAFETY: `value` is in the same new block, aligned and valid for writes.
    unsafe { value.write(0) };
    held
}

/// The lock+unlock pair on a [`PthreadMutex`], with a write to its value while it is held.
fn pthread_pair(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, held: NonNull<PthreadMutex>) {
    // SAFETY: `held` came from `pthread_mutex_in`, and its block stays until after the group.
    let (mutex, value) = unsafe { fields(held) };
    group.bench_function(id, |b| {
        b.iter(|| {
            // SAFETY: the mutex was made by `pthread_mutex_in` and lives until after the group;
            // this thread does not hold it.
            let status = unsafe { libc::pthread_mutex_lock(mutex) };
            assert_eq!(status, 0, "pthread_mutex_lock");
            // SAFETY: the mutex is held, so this thread alone reaches the value.
            let old = unsafe { value.read() };
            // SAFETY: as above.
            unsafe { value.write(black_box(old.wrapping_add(1))) };
            // SAFETY: this thread holds the mutex.
            let status = unsafe { libc::pthread_mutex_unlock(mutex) };
            assert_eq!(status, 0, "pthread_mutex_unlock");
        });
    });
}

/// Finding a named value, and the lock+unlock pair of a [`ShmMutex`] next to the C library's
/// process-shared mutex, plain and robust, in the same pool.
fn shm_objects(wall: &mut Criterion) {
    let mut group = wall.benchmark_group("shm_objects");
    configure(&mut group);
    let shm = ShmPool::new(1 << 20).expect("a 1 MiB pool");
    let names: Vec<String> = (0..NAMES).map(|index| format!("counter_{index}")).collect();
    for (index, name) in names.iter().enumerate() {
        let placed = shm.insert_named(name, index as u64).expect("room for the name");
        // The timed lookups below unwrap only the lock's result; that each finds its value is
        // checked here, once.
        assert_eq!(shm.find::<u64>(name).expect("the pool's lock"), Some(placed));
        assert_eq!(shm.named::<u64>(name).expect("the pool's lock"), Some(&(index as u64)));
    }
    group.bench_function("find", |b| {
        let mut next = names.iter().cycle();
        b.iter(|| {
            let name = next.next().expect("a cycle never ends");
            black_box(shm.find::<u64>(black_box(name)).expect("the pool's lock"))
        });
    });
    group.bench_function("named", |b| {
        let mut next = names.iter().cycle();
        b.iter(|| {
            let name = next.next().expect("a cycle never ends");
            black_box(shm.named::<u64>(black_box(name)).expect("the pool's lock"))
        });
    });

    let mutex = ShmMutex::new_in(0u64, &shm).expect("room for a mutex");
    group.bench_function("shm_mutex_pair", |b| {
        b.iter(|| {
            let mut guard = mutex.lock().expect("no other holder");
            *guard = black_box(guard.wrapping_add(1));
        });
    });
    let plain = pthread_mutex_in(&shm, false);
    let robust = pthread_mutex_in(&shm, true);
    pthread_pair(&mut group, "pthread_mutex_pair", plain);
    pthread_pair(&mut group, "pthread_robust_mutex_pair", robust);
    group.finish();

    for held in [plain, robust] {
        // SAFETY: `held` came from `pthread_mutex_in`, and its block is still allocated.
        let (mutex, _) = unsafe { fields(held) };
        // SAFETY: the mutex was made by `pthread_mutex_in`, is not held, and is not used again.
        unsafe { libc::pthread_mutex_destroy(mutex) };
        // SAFETY: the block came from `shm` and is not used again.
        unsafe { shm.free(held.cast()) };
    }
    drop(mutex);
    shm.check().expect("the pool is consistent after the group");
}

// What `criterion_group!` and `criterion_main!` expand to, written out because the macro's
// function is public and undocumented, which the workspace's `missing_docs` lint rejects.
fn main() {
    let mut wall = Criterion::default().configure_from_args();
    let mut cpu = Criterion::default().with_measurement(ThreadCpuTime).configure_from_args();
    shm_alloc_64(&mut wall, &mut cpu);
    shm_reclaim(&mut wall);
    shm_grow(&mut wall);
    shm_objects(&mut wall);
    wall.final_summary();
    cpu.final_summary();
}
