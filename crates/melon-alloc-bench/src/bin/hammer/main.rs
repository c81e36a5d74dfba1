//! Many processes hammering one shared pool with allocations and frees, against rts-alloc's
//! shared region, Melon's figures for the same workload, and glibc and heap pools in private
//! heaps.
//!
//! N processes, forked from this one after the pool is made, each do OPS operations (every
//! allocation and every free counts as one) of one of two workloads:
//! - `mixed`: each process draws from its own seeded xorshift generator; if it holds fewer than
//!   256 blocks and a coin flip says so, it allocates 16 to 4096 bytes (uniformly), otherwise it
//!   frees one of its live blocks chosen at random. When its operations are done it frees what
//!   it still holds (timed, not counted).
//! - `producer-consumer`: the processes work in pairs, and every block is freed by the other
//!   process of its pair. The even one allocates OPS blocks of 16 to 4096 bytes (uniformly) and
//!   hands each one's offset in the shared mapping to its partner through a ring of 256 offsets
//!   in shared memory ([`ring`]); the odd one takes the offsets out in order and frees the
//!   blocks. Only variants whose blocks another process may free run it, and only with an even
//!   number of processes.
//!
//! A process stamps each block with a tag of its own and the freeing process checks the tag
//! before the free, so that two processes handed the same memory fail the run instead of
//! speeding it up. Each process reports success by its exit status.
//!
//! The parent times the whole run, from before the first fork to after the last `wait4` (a
//! `waitpid` that also returns the child's CPU time), and prints total million operations per
//! second. The variants, each in a fresh setup:
//! - `shm`: every operation on one shared [`ShmPool`], each taking the pool's lock.
//! - `shm-child`: each process makes its own child pool with [`ShmPool::child`] after the fork
//!   and works through it, taking the shared lock only when it needs or returns a chunk.
//! - `rts-alloc`: one shared region of the `rts-alloc` crate (see [`rts`]), the same size as
//!   the shared pool; each process claims a worker slot after the fork and allocates from slabs
//!   of its own without a lock. It rounds every request up to a power of two of at least 256
//!   bytes. A block freed by another process waits on its owner's remote-free list until the
//!   owner takes such blocks back, which a producer does every [`RECLAIM_EVERY`] allocations,
//!   when an allocation fails, and at the end. At the end each process checks that the region
//!   counts none of its bytes as still allocated.
//! - `glibc`: each process uses [`System`], glibc's `malloc` and `free`, in its private heap.
//! - `heap`: each process uses its own melon [`HeapPool`].
//!
//! After a run of `shm` or `shm-child` the parent checks the pool and that its free bytes are
//! back to what they were before the fork; rts-alloc's count of allocated bytes is per worker,
//! so each of its processes checks its own.
//!
//! Criterion cannot time work spread over processes, which is why this is a plain binary:
//!
//! ```text
//! cargo run --release -p melon-alloc-bench --bin hammer -- [OPS] [--quick]
//!     [--processes 1,2,4,16] [--runs 3] [--workloads mixed,producer-consumer]
//!     [--variants shm,shm-child,rts-alloc,glibc,heap] [--tsv PATH]
//! ```
//!
//! `--quick` does a twentieth of the operations in two runs, which is enough to see that every
//! cell works, not to quote its figures. The tables show the median of the runs with the lowest
//! and highest in brackets, the workers' CPU time per operation, and the ratios that the
//! targets are set on, each the median of the runs' own ratios (a run goes round every cell
//! once, so its two cells ran under the same conditions).
//!
//! With `--tsv PATH` it also writes one line per run to `PATH` (workload, variant, processes,
//! run, million operations per second, CPU nanoseconds per operation, tab-separated, after a
//! header line), which is what `cargo xtask bench` reads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use melon_alloc::{ChildPool, HeapPool};
use melon_alloc_bench::{exit_with, Spread, XorShift64};
use melon_alloc_shm::ShmPool;

mod ring;
mod rts;

use ring::{Ring, Rings, Stop};

/// Operations per process unless the command line says otherwise.
const DEFAULT_OPS: u64 = 2_000_000;

/// Process counts run unless the command line says otherwise: 1, 2 and 4, the counts Melon's
/// figures are for, and 16 to show how the lock behaves when far more processes than cores
/// contend for it.
const DEFAULT_PROCESSES: [usize; 4] = [1, 2, 4, 16];

/// Runs of every cell unless the command line says otherwise; the table shows their median.
const DEFAULT_RUNS: usize = 3;

/// The most blocks one process holds at a time.
const MAX_LIVE: usize = 256;

/// The smallest request, in bytes.
const MIN_SIZE: usize = 16;

/// The largest request, in bytes.
const MAX_SIZE: usize = 4096;

/// Capacity of the shared pool, and of rts-alloc's region: 16 processes holding 256 blocks of
/// 4 KiB each need 16 MiB, and the rest leaves room for partly used slabs and the chunks child
/// pools keep.
const POOL: usize = 256 << 20;

/// Every how many allocations a producer takes back the blocks its consumer freed, where the
/// allocator leaves that to the process that allocated them (rts-alloc): often enough that at
/// most this many freed blocks wait beyond the ring's own, seldom enough that the exchange of
/// the list's head, a cache line the consumer writes, costs little per allocation.
const RECLAIM_EVERY: u64 = 64;

/// Seed of the first process's generator; process `i` starts from `SEED + i`.
const SEED: u64 = 0x6861_6d6d_6572_0001;

/// Melon's `mln_alloc` shared pool with a process-shared pthread mutex on the mixed workload, in
/// million operations per second in total, by process count (quoted from `MELON_ALLOC.md`, not
/// measured here).
const MELON: [(usize, f64); 3] = [(1, 5.2), (2, 3.0), (4, 1.4)];

/// glibc on the same workload in the same measurement as [`MELON`] (quoted, not measured here).
const GLIBC_QUOTED: [(usize, f64); 3] = [(1, 31.0), (2, 55.0), (4, 45.0)];

/// The target for `shm`: at least this many times Melon's figure at each process count.
const SHM_OVER_MELON: f64 = 4.0;

/// The target for `shm-child`: at least this share of glibc's figure from the same run.
const CHILD_OVER_GLIBC: f64 = 0.5;

/// What the processes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    /// Each process allocates and frees its own blocks, at random.
    Mixed,
    /// Processes in pairs: one allocates, the other frees what it is handed.
    ProducerConsumer,
}

impl Workload {
    /// Every workload, in the order of the table's rows.
    const ALL: [Workload; 2] = [Workload::Mixed, Workload::ProducerConsumer];

    /// The name on the command line and in the table.
    fn name(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed",
            Workload::ProducerConsumer => "producer-consumer",
        }
    }

    /// Whether `variant` runs this workload with `processes` processes: the producer/consumer
    /// workload needs pairs, and blocks that another process may free.
    fn runs(self, variant: Variant, processes: usize) -> bool {
        match self {
            Workload::Mixed => true,
            Workload::ProducerConsumer => processes % 2 == 0 && variant.frees_across_processes(),
        }
    }
}

/// One way of giving the processes memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    /// Every operation on the shared pool itself.
    Shm,
    /// A child pool of the shared pool per process.
    ShmChild,
    /// A worker of an rts-alloc region per process.
    Rts,
    /// glibc's `malloc` and `free`, private to each process.
    Glibc,
    /// A melon heap pool per process.
    Heap,
}

impl Variant {
    /// Every variant, in the order of the table's rows.
    const ALL: [Variant; 5] =
        [Variant::Shm, Variant::ShmChild, Variant::Rts, Variant::Glibc, Variant::Heap];

    /// The name on the command line and in the table.
    fn name(self) -> &'static str {
        match self {
            Variant::Shm => "shm",
            Variant::ShmChild => "shm-child",
            Variant::Rts => "rts-alloc",
            Variant::Glibc => "glibc",
            Variant::Heap => "heap",
        }
    }

    /// Whether a process may free a block that another process allocated, which the
    /// producer/consumer workload needs: a child pool's block once its process hands it off.
    /// A variant that gains it implements [`CrossProcess`] and gets an arm in
    /// [`producer_consumer`].
    fn frees_across_processes(self) -> bool {
        matches!(self, Variant::Shm | Variant::ShmChild | Variant::Rts)
    }
}

/// What the parent makes before the fork for the workers to share, if anything.
enum Setup {
    /// Nothing: each worker allocates in its private heap.
    Private,
    /// A shared pool, with its free bytes before the fork.
    Shm(ShmPool, usize),
    /// An rts-alloc region.
    Rts(rts::Region),
}

impl Setup {
    /// A fresh setup for `variant` with `processes` workers.
    fn new(variant: Variant, processes: usize) -> Result<Self, String> {
        Ok(match variant {
            Variant::Shm | Variant::ShmChild => {
                let shm =
                    ShmPool::new(POOL).map_err(|e| format!("cannot make the shared pool: {e}"))?;
                let available = shm.available();
                Setup::Shm(shm, available)
            }
            Variant::Rts => Setup::Rts(rts::Region::new(POOL, processes)?),
            Variant::Glibc | Variant::Heap => Setup::Private,
        })
    }

    /// Checks what the workers left behind, after they are gone: the shared pool must be
    /// consistent and have every byte back. (Each rts-alloc worker checks its own count of
    /// allocated bytes, which only it can read.)
    fn check(&self) -> Result<(), String> {
        let Setup::Shm(shm, available) = self else { return Ok(()) };
        shm.check().map_err(|e| format!("the pool is corrupt: {e}"))?;
        let stats = shm.stats().map_err(|e| e.to_string())?;
        if stats.available != *available || stats.live_blocks != 0 || stats.lent_bytes != 0 {
            return Err(format!(
                "the pool did not get everything back: {} bytes free of {available}, {} live \
                 blocks, {} bytes lent",
                stats.available, stats.live_blocks, stats.lent_bytes
            ));
        }
        Ok(())
    }
}

/// Why a worker process failed, sent to the parent as its exit status.
#[derive(Clone, Copy, Debug)]
#[repr(i32)]
enum Failure {
    /// An allocation returned nothing.
    Alloc = 1,
    /// A free was refused.
    Free = 2,
    /// A block's tag changed while it was live: another process or block wrote into it.
    Stamp = 3,
    /// The allocator still counts bytes as allocated after every block was freed.
    Leak = 4,
    /// The worker could not join the shared allocator, or the variant cannot run the workload.
    Join = 5,
    /// A block lies outside the shared mapping, or an offset handed over does.
    Offset = 6,
    /// The other process of the pair failed.
    Partner = 7,
    /// The other process of the pair made no progress for a long time.
    Stalled = 8,
    /// The worker panicked.
    Panic = 101,
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Abandoned => Failure::Partner,
            Stop::Stalled => Failure::Stalled,
        }
    }
}

/// What a worker allocates through.
trait Allocator {
    /// Allocates `size` bytes aligned to 16.
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>>;

    /// Frees a block, returning whether the allocator accepted it.
    ///
    /// # Safety
    /// `block` came from [`alloc`](Allocator::alloc) on this allocator with `size`, has not
    /// been freed, and is not used again.
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize) -> bool;

    /// Bytes the allocator still counts as allocated by this process, where it keeps such a
    /// count: 0 once every block is back.
    fn outstanding(&self) -> u64 {
        0
    }
}

/// What the producer/consumer workload allocates through: blocks that another process frees,
/// handed over as offsets into a mapping that all the processes share.
trait CrossProcess: Allocator {
    /// The offset of `block` in the shared mapping, the same in every process; `None` when it
    /// lies outside.
    ///
    /// # Safety
    /// `block` came from [`alloc`](Allocator::alloc) on this allocator and is live.
    unsafe fn offset_of(&self, block: NonNull<u8>) -> Option<u64>;

    /// The block at `offset` in the shared mapping, in this process; `None` past its end.
    ///
    /// # Safety
    /// `offset` came from [`offset_of`](CrossProcess::offset_of) on a block of the same shared
    /// allocator, in any process.
    unsafe fn block_at(&self, offset: u64) -> Option<NonNull<u8>>;

    /// Frees a block that another process allocated, returning whether the allocator accepted
    /// it.
    ///
    /// # Safety
    /// `block` is a live block that another process allocated from the same shared allocator
    /// and handed over, and nothing uses it again, in any process.
    unsafe fn free_foreign(&mut self, block: NonNull<u8>) -> bool;

    /// Takes back the blocks that other processes freed, where the allocator leaves that to the
    /// process that allocated them.
    fn reclaim(&mut self) {}
}

/// The shared pool itself: each operation takes its lock.
struct Shared<'pool>(&'pool ShmPool);

impl Allocator for Shared<'_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) -> bool {
        // The shared pool's checked free is its only free, and O(1): `free` calls it too.
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.try_free(block) }.is_ok()
    }
}

impl CrossProcess for Shared<'_> {
    unsafe fn offset_of(&self, block: NonNull<u8>) -> Option<u64> {
        self.0.offset_of(block).map(|offset| offset as u64)
    }

    unsafe fn block_at(&self, offset: u64) -> Option<NonNull<u8>> {
        self.0.ptr_at(usize::try_from(offset).ok()?)
    }

    #[inline]
    unsafe fn free_foreign(&mut self, block: NonNull<u8>) -> bool {
        // Any process may free a block of the shared pool itself: the same call as its own.
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.try_free(block) }.is_ok()
    }
}

/// A heap pool: a child of the shared pool, or a root pool over glibc.
struct Pooled<'pool>(&'pool melon_alloc::Pool);

impl Allocator for Pooled<'_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) -> bool {
        // The plain free, as a program would call it: a heap pool's `try_free` walks every chunk
        // the pool holds to vet the pointer, which is a debugging aid, not the normal path. The
        // tags still catch a block handed out twice.
        // SAFETY: the caller passes a live block of this pool that nothing uses again.
        unsafe { self.0.free(block) };
        true
    }
}

/// A child pool of the shared pool whose blocks go to other processes: handed off as they are
/// sent, freed by the receiver through the shared pool without its lock, and collected by the
/// child when it runs out of blocks.
struct HandingOff<'pool> {
    shm: &'pool ShmPool,
    child: &'pool melon_alloc::Pool,
}

impl Allocator for HandingOff<'_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.child.alloc(size)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, _size: usize) -> bool {
        // SAFETY: the caller passes a live block of the child, never handed off, that nothing
        // uses again.
        unsafe { self.child.free(block) };
        true
    }
}

impl CrossProcess for HandingOff<'_> {
    unsafe fn offset_of(&self, block: NonNull<u8>) -> Option<u64> {
        // Asked for the block's offset just before it is sent: the hand-off.
        // SAFETY: the caller passes a live block of the child, which from now on only the
        // receiver frees, through the shared pool, once.
        unsafe { self.shm.hand_off(block) }.ok().map(|offset| offset as u64)
    }

    unsafe fn block_at(&self, offset: u64) -> Option<NonNull<u8>> {
        self.shm.ptr_at(usize::try_from(offset).ok()?)
    }

    #[inline]
    unsafe fn free_foreign(&mut self, block: NonNull<u8>) -> bool {
        // SAFETY: the caller passes a handed-off block that nothing uses again.
        unsafe { self.shm.try_free(block) }.is_ok()
    }
}

/// glibc's `malloc` and `free`, through the standard library's [`System`].
struct Glibc;

impl Allocator for Glibc {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(size, 16).ok()?;
        // SAFETY: every request is at least `MIN_SIZE` bytes, so the layout is not zero-sized.
        NonNull::new(unsafe { System.alloc(layout) })
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, size: usize) -> bool {
        let Ok(layout) = Layout::from_size_align(size, 16) else { return false };
        // SAFETY: the caller passes a live block allocated with this size, so with this layout.
        unsafe { System.dealloc(block.as_ptr(), layout) };
        true
    }
}

/// One process's share of the mixed workload: `ops` random allocations and frees, then a free
/// of every block still held.
fn work(allocator: &mut impl Allocator, process: usize, ops: u64) -> Result<(), Failure> {
    let mut rng = XorShift64::new(SEED.wrapping_add(process as u64));
    // Allocated before the loop, from glibc, so that the bookkeeping costs the same in every
    // variant and never touches the allocator being timed.
    let mut live: Vec<(NonNull<u8>, usize, u64)> = Vec::with_capacity(MAX_LIVE);
    let owner = (process as u64) << 48;
    for op in 0..ops {
        // The top bit: xorshift's low bits are its weakest.
        let coin = rng.next_u64() >> 63 == 0;
        if live.is_empty() || (live.len() < MAX_LIVE && coin) {
            let size = MIN_SIZE + rng.below(MAX_SIZE - MIN_SIZE + 1);
            let block = allocator.alloc(size).ok_or(Failure::Alloc)?;
            let tag = owner | op;
            // SAFETY: the block holds at least 16 bytes and is aligned to 16.
            unsafe { block.cast::<u64>().as_ptr().write(tag) };
            live.push((block, size, tag));
        } else {
            let (block, size, tag) = live.swap_remove(rng.below(live.len()));
            release(allocator, block, size, tag)?;
        }
    }
    while let Some((block, size, tag)) = live.pop() {
        release(allocator, block, size, tag)?;
    }
    if allocator.outstanding() != 0 {
        return Err(Failure::Leak);
    }
    Ok(())
}

/// Checks that a live block still holds the tag it was stamped with.
///
/// # Safety
/// `block` is a live block of at least 8 bytes, aligned to 8, that was stamped when allocated.
unsafe fn check_tag(block: NonNull<u8>, tag: u64) -> Result<(), Failure> {
    // SAFETY: the caller passes a live, stamped block that is large and aligned enough.
    if unsafe { block.cast::<u64>().as_ptr().read() } == tag {
        Ok(())
    } else {
        Err(Failure::Stamp)
    }
}

/// Checks a block's tag and frees it.
fn release(
    allocator: &mut impl Allocator,
    block: NonNull<u8>,
    size: usize,
    tag: u64,
) -> Result<(), Failure> {
    // SAFETY: the caller passes a live block of `allocator`, stamped when allocated; every block
    // holds at least 16 bytes and is aligned to 16.
    unsafe { check_tag(block, tag) }?;
    // SAFETY: the block came from `allocator` with `size`, and is dropped from the live list.
    if unsafe { allocator.free(block, size) } {
        Ok(())
    } else {
        Err(Failure::Free)
    }
}

/// The mixed workload through `variant`'s allocator.
fn mixed(variant: Variant, setup: &Setup, process: usize, ops: u64) -> Result<(), Failure> {
    match (variant, setup) {
        (Variant::Shm, Setup::Shm(shm, _)) => work(&mut Shared(shm), process, ops),
        (Variant::ShmChild, Setup::Shm(shm, _)) => {
            // Made after the fork: a child pool's bookkeeping is private to its process.
            let child: ChildPool<'_> = shm.child();
            let result = work(&mut Pooled(&child), process, ops);
            // Dropped before the process exits, so that its chunks go back to the shared pool.
            drop(child);
            result
        }
        (Variant::Rts, Setup::Rts(region)) => {
            // Dropped at the end of this arm, which gives its worker slot back.
            let mut worker = region.join().map_err(|_| Failure::Join)?;
            work(&mut worker, process, ops)
        }
        (Variant::Glibc, _) => work(&mut Glibc, process, ops),
        (Variant::Heap, _) => {
            let pool = HeapPool::new();
            work(&mut Pooled(&pool), process, ops)
        }
        (Variant::Shm | Variant::ShmChild | Variant::Rts, _) => Err(Failure::Join),
    }
}

/// The producer/consumer workload through `variant`'s allocator: one more arm here for each
/// variant that [frees across processes](Variant::frees_across_processes).
fn producer_consumer(
    variant: Variant,
    setup: &Setup,
    ring: &Ring,
    process: usize,
    ops: u64,
) -> Result<(), Failure> {
    match (variant, setup) {
        (Variant::Shm, Setup::Shm(shm, _)) => pass(&mut Shared(shm), ring, process, ops),
        (Variant::ShmChild, Setup::Shm(shm, _)) => {
            let child = shm.child();
            pass(&mut HandingOff { shm, child: &child }, ring, process, ops)
        }
        (Variant::Rts, Setup::Rts(region)) => {
            // Dropped at the end of this arm, which gives its worker slot back.
            let mut worker = region.join().map_err(|_| Failure::Join)?;
            pass(&mut worker, ring, process, ops)
        }
        _ => Err(Failure::Join),
    }
}

/// One process's side of the producer/consumer workload: the even process of each pair
/// produces into the pair's ring, the odd one consumes from it.
fn pass(
    allocator: &mut impl CrossProcess,
    ring: &Ring,
    process: usize,
    ops: u64,
) -> Result<(), Failure> {
    if process % 2 == 0 {
        produce(allocator, ring, process, ops)
    } else {
        consume(allocator, ring, process - 1, ops)
    }
}

/// The producer: `ops` allocations, each block stamped with `owner | n` (the allocation's
/// number) and its offset pushed into `ring`; then a wait until the consumer has freed every
/// block, after which the allocator must count none of this process's bytes as allocated.
fn produce(
    allocator: &mut impl CrossProcess,
    ring: &Ring,
    process: usize,
    ops: u64,
) -> Result<(), Failure> {
    let mut rng = XorShift64::new(SEED.wrapping_add(process as u64));
    let owner = (process as u64) << 48;
    let mut ring = ring.producer();
    for n in 0..ops {
        if n % RECLAIM_EVERY == 0 {
            allocator.reclaim();
        }
        let size = MIN_SIZE + rng.below(MAX_SIZE - MIN_SIZE + 1);
        let block = match allocator.alloc(size) {
            Some(block) => block,
            None => {
                allocator.reclaim();
                allocator.alloc(size).ok_or(Failure::Alloc)?
            }
        };
        // SAFETY: the block holds at least 16 bytes and is aligned to 16.
        unsafe { block.cast::<u64>().as_ptr().write(owner | n) };
        // SAFETY: the block came from `allocator` just now.
        let offset = unsafe { allocator.offset_of(block) }.ok_or(Failure::Offset)?;
        ring.push(offset)?;
    }
    // The blocks' frees are the consumer's operations, and end the run: a producer that is done
    // allocating waits for them, and then takes the last of them back.
    ring.drain()?;
    allocator.reclaim();
    if allocator.outstanding() != 0 {
        return Err(Failure::Leak);
    }
    Ok(())
}

/// The consumer: `ops` offsets taken out of `ring` in order, each block's tag checked against
/// the producer's `owner | n` and the block freed.
fn consume(
    allocator: &mut impl CrossProcess,
    ring: &Ring,
    producer: usize,
    ops: u64,
) -> Result<(), Failure> {
    let owner = (producer as u64) << 48;
    let mut ring = ring.consumer();
    for n in 0..ops {
        ring.pop(|offset| {
            // SAFETY: the producer took the offset from `offset_of` on the same shared
            // allocator.
            let block = unsafe { allocator.block_at(offset) }.ok_or(Failure::Offset)?;
            // SAFETY: the producer stamped the live block before it pushed the offset, and
            // every block holds at least 16 bytes aligned to 16.
            unsafe { check_tag(block, owner | n) }?;
            // SAFETY: the producer handed the live block over and does not use it again; this
            // process frees it once, here.
            if unsafe { allocator.free_foreign(block) } {
                Ok(())
            } else {
                Err(Failure::Free)
            }
        })??;
    }
    Ok(())
}

/// What a forked worker runs: its variant's allocator, the workload, and its exit status. A
/// process that fails in the producer/consumer workload marks its pair's ring abandoned, so
/// that its partner stops waiting for it.
fn worker(
    workload: Workload,
    variant: Variant,
    setup: &Setup,
    rings: Option<&Rings>,
    process: usize,
    ops: u64,
) -> i32 {
    let ring = rings.and_then(|rings| rings.get(process / 2));
    let result = panic::catch_unwind(AssertUnwindSafe(|| match (workload, ring) {
        (Workload::Mixed, _) => mixed(variant, setup, process, ops),
        (Workload::ProducerConsumer, Some(ring)) => {
            producer_consumer(variant, setup, ring, process, ops)
        }
        (Workload::ProducerConsumer, None) => Err(Failure::Join),
    }));
    let code = match result {
        Ok(Ok(())) => 0,
        Ok(Err(failure)) => failure as i32,
        Err(_) => Failure::Panic as i32,
    };
    if code != 0 {
        ring.inspect(|ring| ring.abandon());
    }
    code
}

/// What one run measured.
struct Timing {
    /// From before the first fork to after the last `waitpid`.
    elapsed: Duration,
    /// CPU time the workers used, user and system, from `wait4`. Set against `elapsed`, it
    /// shows how much of a run was spent waiting: for the lock, or for a core that other work on
    /// the machine held.
    cpu: Duration,
}

/// Runs one workload through one variant with `processes` workers in a fresh setup and times
/// it.
fn run(workload: Workload, variant: Variant, processes: usize, ops: u64) -> Result<Timing, String> {
    let setup = Setup::new(variant, processes)?;
    let rings = match workload {
        Workload::Mixed => None,
        Workload::ProducerConsumer => Some(Rings::new(processes / 2)?),
    };
    // Anything still buffered would be written again by every child that flushed it.
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    std::io::stderr().flush().map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut children = Vec::with_capacity(processes);
    let mut fork_error = None;
    for process in 0..processes {
        // SAFETY: this process has a single thread, so the child may keep running Rust code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = worker(workload, variant, &setup, rings.as_ref(), process, ops);
            // SAFETY: leaves the child at once, without running the parent's destructors (the
            // setup's among them) a second time.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            fork_error = Some(std::io::Error::last_os_error());
            // The processes already forked may wait for a partner that will never come.
            for pair in 0..processes / 2 {
                rings.as_ref().and_then(|rings| rings.get(pair)).inspect(|ring| ring.abandon());
            }
            break;
        }
        children.push(pid);
    }
    let mut failures = Vec::new();
    let mut cpu = Duration::ZERO;
    for &pid in &children {
        let mut status = 0;
        // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is a child of this process, and `status` and `usage` are valid places
        // to write.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let seconds = |t: libc::timeval| {
            Duration::new(t.tv_sec as u64, 0) + Duration::from_micros(t.tv_usec as u64)
        };
        cpu += seconds(usage.ru_utime) + seconds(usage.ru_stime);
        if waited != pid {
            failures.push(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
        } else if !libc::WIFEXITED(status) {
            failures.push(format!("process {pid} ended by signal {}", libc::WTERMSIG(status)));
        } else if libc::WEXITSTATUS(status) != 0 {
            failures.push(format!("process {pid} exited with {}", libc::WEXITSTATUS(status)));
        }
    }
    let elapsed = started.elapsed();

    if let Some(error) = fork_error {
        failures.push(format!("fork: {error}"));
    }
    let cell = format!("{} {} with {processes}", workload.name(), variant.name());
    if !failures.is_empty() {
        return Err(format!("{cell}: {}", failures.join("; ")));
    }
    setup.check().map_err(|e| format!("{cell}: {e}"))?;
    Ok(Timing { elapsed, cpu })
}

/// The command line, parsed.
struct Options {
    /// Operations per process.
    ops: u64,
    /// Process counts to run.
    processes: Vec<usize>,
    /// Runs of every cell.
    runs: usize,
    /// Workloads to run.
    workloads: Vec<Workload>,
    /// Variants to run.
    variants: Vec<Variant>,
    /// Where to write every run's figures as tab-separated lines, if anywhere.
    tsv: Option<String>,
}

/// Operations per process with `--quick`.
const QUICK_OPS: u64 = 100_000;

/// Runs of every cell with `--quick`: two, so that the spread is shown too.
const QUICK_RUNS: usize = 2;

/// Parses `[OPS] [--quick] [--processes LIST] [--runs N] [--workloads LIST] [--variants LIST]
/// [--tsv PATH]`.
///
/// `--quick` sets the operations and runs to [`QUICK_OPS`] and [`QUICK_RUNS`], wherever it
/// stands; an operation count or `--runs` given as well still wins.
fn parse(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let mut options = Options {
        ops: if quick { QUICK_OPS } else { DEFAULT_OPS },
        processes: DEFAULT_PROCESSES.to_vec(),
        runs: if quick { QUICK_RUNS } else { DEFAULT_RUNS },
        workloads: Workload::ALL.to_vec(),
        variants: Variant::ALL.to_vec(),
        tsv: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {}
            "--processes" => {
                options.processes = value("--processes")?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("bad process count {n:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => {
                let runs = value("--runs")?;
                options.runs = runs.parse().map_err(|e| format!("bad run count {runs:?}: {e}"))?;
            }
            "--tsv" => options.tsv = Some(value("--tsv")?.clone()),
            "--workloads" => {
                options.workloads = named(value("--workloads")?, &Workload::ALL, Workload::name)?;
            }
            "--variants" => {
                options.variants = named(value("--variants")?, &Variant::ALL, Variant::name)?;
            }
            ops => {
                options.ops =
                    ops.parse().map_err(|e| format!("bad operation count {ops:?}: {e}"))?
            }
        }
    }
    if options.runs == 0 || options.ops == 0 || options.processes.contains(&0) {
        return Err("operations, runs and process counts must be at least 1".into());
    }
    Ok(options)
}

/// The items of `all` named in a comma-separated `list`, in its order.
fn named<T: Copy>(list: &str, all: &[T], name: fn(T) -> &'static str) -> Result<Vec<T>, String> {
    list.split(',')
        .map(|wanted| {
            all.iter().copied().find(|&item| name(item) == wanted).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|&item| name(item)).collect();
                format!("unknown name {wanted:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// The figure for `processes` in a quoted table, if it has one.
fn quoted(table: &[(usize, f64)], processes: usize) -> Option<f64> {
    table.iter().find(|&&(count, _)| count == processes).map(|&(_, figure)| figure)
}

/// A cell of the tables: a workload through a variant.
type Row = (Workload, Variant);

/// Every run's figures of every cell: million operations per second and the workers' CPU
/// nanoseconds per operation, by workload, variant and process count.
struct Figures {
    runs: BTreeMap<(Row, usize), Vec<(f64, f64)>>,
}

impl Figures {
    /// Million operations per second of a cell: the median of its runs and their extremes.
    fn mops(&self, row: Row, processes: usize) -> Option<Spread> {
        let runs = self.runs.get(&(row, processes))?;
        Some(Spread::of(&runs.iter().map(|&(mops, _)| mops).collect::<Vec<_>>()))
    }

    /// The median CPU nanoseconds per operation of a cell.
    fn cpu_ns(&self, row: Row, processes: usize) -> Option<f64> {
        let runs = self.runs.get(&(row, processes))?;
        Some(Spread::of(&runs.iter().map(|&(_, cpu)| cpu).collect::<Vec<_>>()).median)
    }

    /// A figure's million operations per second, run by run: a measured cell's, or a quoted
    /// figure, the same for every run.
    fn by_run(&self, figure: Figure, processes: usize) -> Option<Vec<f64>> {
        match figure {
            Figure::Measured(workload, variant) => {
                let runs = self.runs.get(&((workload, variant), processes))?;
                Some(runs.iter().map(|&(mops, _)| mops).collect())
            }
            Figure::Quoted(table) => Some(vec![quoted(table, processes)?]),
        }
    }

    /// The ratio of two figures run by run, each run's cells set against each other (both ran
    /// in the same round of the cells), or against a quoted figure: the median of those ratios
    /// and their extremes.
    fn ratio(&self, over: Figure, under: Figure, processes: usize) -> Option<Spread> {
        let (over, under) = (self.by_run(over, processes)?, self.by_run(under, processes)?);
        let ratios: Vec<f64> = match (over.len(), under.len()) {
            (_, 1) => over.iter().map(|a| a / under[0]).collect(),
            (1, _) => under.iter().map(|b| over[0] / b).collect(),
            _ => over.iter().zip(&under).map(|(a, b)| a / b).collect(),
        };
        (!ratios.is_empty()).then(|| Spread::of(&ratios))
    }
}

/// A figure a ratio is made of: a cell measured in this run, or a quoted one.
#[derive(Clone, Copy)]
enum Figure {
    Measured(Workload, Variant),
    Quoted(&'static [(usize, f64)]),
}

/// The mixed workload through `variant`.
const fn mixed_cell(variant: Variant) -> Figure {
    Figure::Measured(Workload::Mixed, variant)
}

/// The ratios the report shows, as (label, numerator, denominator).
const RATIOS: [(&str, Figure, Figure); 8] = [
    ("mixed: shm / Melon (target >= 4, quoted)", mixed_cell(Variant::Shm), Figure::Quoted(&MELON)),
    (
        "mixed: shm-child / glibc (target >= 0.5)",
        mixed_cell(Variant::ShmChild),
        mixed_cell(Variant::Glibc),
    ),
    ("mixed: shm / glibc", mixed_cell(Variant::Shm), mixed_cell(Variant::Glibc)),
    ("mixed: shm / rts-alloc", mixed_cell(Variant::Shm), mixed_cell(Variant::Rts)),
    ("mixed: shm-child / rts-alloc", mixed_cell(Variant::ShmChild), mixed_cell(Variant::Rts)),
    (
        "producer-consumer: shm / rts-alloc",
        Figure::Measured(Workload::ProducerConsumer, Variant::Shm),
        Figure::Measured(Workload::ProducerConsumer, Variant::Rts),
    ),
    (
        "producer-consumer: shm-child / rts-alloc",
        Figure::Measured(Workload::ProducerConsumer, Variant::ShmChild),
        Figure::Measured(Workload::ProducerConsumer, Variant::Rts),
    ),
    ("mixed: Melon / glibc (both quoted)", Figure::Quoted(&MELON), Figure::Quoted(&GLIBC_QUOTED)),
];

/// Runs every cell, the runs going round all cells in turn, and returns their figures and the
/// lines of the tab-separated file.
fn measure(options: &Options) -> Result<(Figures, String), String> {
    let Options { ops, ref processes, runs, ref workloads, ref variants, .. } = *options;
    let mut lines = String::from("workload\tvariant\tprocesses\trun\tmops\tcpu_ns_per_op\n");
    let mut figures = Figures { runs: BTreeMap::new() };
    // The runs go round every cell in turn, so that a stretch of load on the machine spreads
    // over all variants instead of landing on one; the variant to run first moves one place a
    // run, so that none always follows the same one.
    for run_index in 1..=runs {
        for &count in processes {
            for &workload in workloads {
                let cell: Vec<Variant> =
                    variants.iter().copied().filter(|&v| workload.runs(v, count)).collect();
                for turn in 0..cell.len() {
                    let variant = cell[(run_index + turn) % cell.len()];
                    let Timing { elapsed, cpu } = run(workload, variant, count, ops)?;
                    let total = (count as u64 * ops) as f64;
                    let mops = total / elapsed.as_secs_f64() / 1e6;
                    let per_op = cpu.as_secs_f64() * 1e9 / total;
                    eprintln!(
                        "run {run_index}: {:>17} {:>9} x {count:>2}: {:7.1} ms, {mops:6.2} M \
                         ops/s, {per_op:6.1} ns CPU per operation",
                        workload.name(),
                        variant.name(),
                        elapsed.as_secs_f64() * 1e3
                    );
                    let _ = writeln!(
                        lines,
                        "{}\t{}\t{count}\t{run_index}\t{mops}\t{per_op}",
                        workload.name(),
                        variant.name()
                    );
                    let row = (workload, variant);
                    figures.runs.entry((row, count)).or_default().push((mops, per_op));
                }
            }
        }
    }
    Ok((figures, lines))
}

/// Prints a table with a column per process count, after the row's labels under `labels`.
fn table(labels: &[&str], processes: &[usize], rows: &[Vec<String>]) {
    let counts = processes
        .iter()
        .map(|&count| format!("{count} process{}", if count == 1 { "" } else { "es" }));
    let header: Vec<String> = labels.iter().map(|label| label.to_string()).chain(counts).collect();
    println!("| {} |", header.join(" | "));
    println!("|{}{}", "---|".repeat(labels.len()), "---:|".repeat(processes.len()));
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// Runs every cell and prints the tables.
fn hammer(options: &Options) -> Result<(), String> {
    let Options { ops, ref processes, runs, ref workloads, ref variants, ref tsv } = *options;
    println!(
        "Hammer: {ops} operations per process, blocks of {MIN_SIZE} to {MAX_SIZE} bytes; mixed: \
         random allocations and frees, at most {MAX_LIVE} live per process; producer-consumer: \
         pairs, one allocating and one freeing, at most {} in flight per pair; {runs} run(s) per \
         cell; {} cores.",
        ring::CAPACITY,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let (figures, lines) = measure(options)?;
    if let Some(path) = tsv {
        std::fs::write(path, lines).map_err(|e| format!("cannot write {path}: {e}"))?;
    }

    // The rows: every workload through every variant that runs it at some process count.
    let rows: Vec<Row> = workloads
        .iter()
        .flat_map(|&workload| variants.iter().map(move |&variant| (workload, variant)))
        .filter(|&(workload, variant)| processes.iter().any(|&c| workload.runs(variant, c)))
        .collect();
    let na = || "n/a".to_string();
    let cells = |show: &dyn Fn(usize) -> Option<String>| -> Vec<String> {
        processes.iter().map(|&count| show(count).unwrap_or_else(na)).collect()
    };
    let labelled = |(workload, variant): Row, cells: Vec<String>| -> Vec<String> {
        [workload.name().to_string(), variant.name().to_string()].into_iter().chain(cells).collect()
    };

    println!();
    println!(
        "Total million operations per second, by process count: median of {runs} run(s), \
         lowest and highest in brackets."
    );
    println!();
    let mut lines: Vec<Vec<String>> = rows
        .iter()
        .map(|&row| labelled(row, cells(&|count| Some(figures.mops(row, count)?.show()))))
        .collect();
    if workloads.contains(&Workload::Mixed) {
        // Melon's figures, for the mixed workload only, as the last of its rows.
        let melon = cells(&|count| quoted(&MELON, count).map(|figure| format!("{figure:.2}")));
        let mixed = rows.iter().rposition(|&(workload, _)| workload == Workload::Mixed);
        let at = mixed.map_or(rows.len(), |last| last + 1);
        let label = ["mixed".to_string(), "Melon (quoted)".to_string()];
        lines.insert(at, label.into_iter().chain(melon).collect());
    }
    table(&["workload", "variant"], processes, &lines);

    println!();
    println!(
        "CPU time of the workers per operation, user and system, in ns (median of {runs}): \
         the cost of an operation with waiting for the lock, a partner or a core left out."
    );
    println!();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|&row| {
            labelled(row, cells(&|count| Some(format!("{:.0}", figures.cpu_ns(row, count)?))))
        })
        .collect();
    table(&["workload", "variant"], processes, &lines);

    println!();
    println!(
        "Ratios: the median of the runs' own ratios (each run's two cells ran in the same round \
         of the cells), lowest and highest in brackets."
    );
    println!();
    // Two decimals, or three below 0.1, where two would leave a single significant digit.
    let show = |r: f64| if r < 0.1 { format!("{r:.3}") } else { format!("{r:.2}") };
    let lines: Vec<Vec<String>> = RATIOS
        .iter()
        .map(|&(label, over, under)| {
            let cells = cells(&|count| {
                let spread = figures.ratio(over, under, count)?;
                Some(if spread.min == spread.max {
                    show(spread.median)
                } else {
                    format!("{} ({}-{})", show(spread.median), show(spread.min), show(spread.max))
                })
            });
            [label.to_string()].into_iter().chain(cells).collect()
        })
        .collect();
    table(&["ratio"], processes, &lines);

    // The targets are set at 1, 2 and 4 processes; 16 shows scaling and has none.
    let met = |over: Figure, under: Figure, target: f64| {
        processes.iter().filter(|&&count| count <= 4).all(|&count| {
            figures.ratio(over, under, count).is_none_or(|spread| spread.median >= target)
        })
    };
    println!();
    let melon: Vec<String> = MELON.iter().map(|(n, f)| format!("{f} at {n}")).collect();
    let glibc_quoted: Vec<String> =
        GLIBC_QUOTED.iter().map(|(n, f)| format!("{f} at {n}")).collect();
    println!(
        "Quoted, not measured here: Melon {} M ops/s on the mixed workload; glibc in the same \
         measurement {}.",
        melon.join(", "),
        glibc_quoted.join(", ")
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let ran =
        |variant: Variant| workloads.contains(&Workload::Mixed) && variants.contains(&variant);
    if ran(Variant::Shm) {
        let shm_met = met(mixed_cell(Variant::Shm), Figure::Quoted(&MELON), SHM_OVER_MELON);
        println!("shm >= {SHM_OVER_MELON} x Melon at 1, 2 and 4 processes: {}", verdict(shm_met));
    }
    if ran(Variant::ShmChild) && ran(Variant::Glibc) {
        let child = mixed_cell(Variant::ShmChild);
        let child_met = met(child, mixed_cell(Variant::Glibc), CHILD_OVER_GLIBC);
        println!(
            "shm-child >= {CHILD_OVER_GLIBC} x glibc (same run) at 1, 2 and 4 processes: {}",
            verdict(child_met)
        );
    }
    let passed = |variant: Variant| {
        workloads.contains(&Workload::ProducerConsumer) && variants.contains(&variant)
    };
    if passed(Variant::ShmChild) && passed(Variant::Rts) {
        let cell = |variant| Figure::Measured(Workload::ProducerConsumer, variant);
        let child_met = met(cell(Variant::ShmChild), cell(Variant::Rts), 1.0);
        println!(
            "producer-consumer: shm-child >= rts-alloc (same run) at 2 and 4 processes: {}",
            verdict(child_met)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    exit_with("hammer", || parse(&args).and_then(|options| hammer(&options)))
}
