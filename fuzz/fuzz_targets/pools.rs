//! Drives a heap pool (with or without a limit), a small shared pool, and a stack of child pools
//! of either with a sequence of actions decoded from the fuzzer's input, and checks every step
//! against a model of the live blocks.
//!
//! Every block is filled with a pattern that must survive until the block is freed or moved, no
//! two live blocks may overlap, and each pool must report exactly the blocks and bytes the model
//! holds. Heap pools are held to the exact sizes, limits and byte counts of the engine; the
//! shared pool, whose placement depends on fragmentation, to its own counters adding up. Bad
//! frees (interior pointers, blocks of another pool, double frees) go through the checked
//! `try_free` and must be refused without changing anything. Each input starts from a fresh heap
//! pool and an empty shared pool, and ends with everything freed and every pool scanned with
//! `check()`.

#![no_main]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use melon_alloc_core::{CHUNK_SIZE, CLASS_COUNT, CLASS_SIZES, MIN_ALIGN};
use melon_alloc_heap::{ChildPool, FreeError, HeapPool, Pool};
use melon_alloc_shm::{ShmError, ShmPool};

#[path = "../../crates/melon-alloc-heap/tests/support/expect.rs"]
mod expect;

use expect::{expect, Expect};

/// Capacity of the shared pool: small, so that running out of room happens often.
const SHM_CAPACITY: usize = 256 << 10;

/// Child pools may nest this deep.
const MAX_DEPTH: usize = 8;

/// Bytes of live blocks past which pools without any limit get no more allocations, so that an
/// input cannot make the process run out of memory.
const UNBOUNDED_BUDGET: usize = 64 << 20;

/// Every this many steps, every pool is compared with the model.
const VERIFY_EVERY: usize = 16;

/// Every this many steps, every pool is scanned and every block's pattern checked.
const SCAN_EVERY: usize = 64;

/// Page size of the shared pool.
const PAGE: usize = 4096;

/// Freed pointers kept for double frees.
const STALE_KEPT: usize = 64;

#[derive(Arbitrary, Debug)]
struct Input {
    root_limit: Option<RootLimit>,
    actions: Vec<Action>,
}

/// The heap root's limit: whole chunks and then some bytes.
#[derive(Arbitrary, Clone, Copy, Debug)]
struct RootLimit {
    chunks: u16,
    extra: u16,
}

impl RootLimit {
    fn bytes(self) -> usize {
        usize::from(self.chunks % 200) * CHUNK_SIZE + usize::from(self.extra) % CHUNK_SIZE
    }
}

/// A child pool's limit.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum ChildLimit {
    /// Below three chunks: often too little for anything.
    Tiny(u16),
    /// Whole chunks, and a few bytes more.
    Chunks(u8, u8),
}

impl ChildLimit {
    fn bytes(self) -> usize {
        match self {
            Self::Tiny(bytes) => usize::from(bytes) % (3 * CHUNK_SIZE),
            Self::Chunks(chunks, extra) => {
                usize::from(chunks % 40) * CHUNK_SIZE + [0, 1, 64, 5000][usize::from(extra % 4)]
            }
        }
    }
}

/// A requested size: mostly sane, sometimes one no pool can serve.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Size {
    Tiny(u8),
    /// Up to the shared pool's largest size class.
    Small(u16),
    /// Up to 64 KiB.
    Medium(u16),
    /// Around one of the heap engine's class sizes.
    ClassEdge(u8, u8),
    /// Around a multiple of the shared pool's page.
    PageEdge(u8, u8),
    /// 64 KiB to 1 MiB.
    Big(u32),
    Huge(u8),
}

impl Size {
    /// The size in bytes. `bounded` says whether some limit or the shared pool's capacity
    /// stands between the request and the global allocator: if not, huge sizes are only those
    /// that no allocation is even tried for, as the fuzzer counts a request of terabytes to the
    /// system as a crash.
    fn bytes(self, bounded: bool) -> usize {
        match self {
            Self::Tiny(size) => usize::from(size),
            Self::Small(size) => usize::from(size) % 8193,
            Self::Medium(size) => usize::from(size),
            Self::ClassEdge(class, delta) => {
                CLASS_SIZES[usize::from(class) % CLASS_COUNT] - 1 + usize::from(delta % 3)
            }
            Self::PageEdge(pages, delta) => {
                (usize::from(pages % 64) + 1) * PAGE - 1 + usize::from(delta % 3)
            }
            Self::Big(size) => (64 << 10) + size as usize % (1 << 20),
            Self::Huge(pick) => {
                let refused_early = [
                    usize::MAX,
                    usize::MAX - 10,
                    isize::MAX as usize + 1,
                    isize::MAX as usize,
                    isize::MAX as usize - 100,
                ];
                let refused_by_limit = [1 << 50, (1 << 41) + 3, (1 << 40) + 1];
                let pick = usize::from(pick);
                if bounded && pick % 2 == 0 {
                    refused_by_limit[pick / 2 % refused_by_limit.len()]
                } else {
                    refused_early[pick % refused_early.len()]
                }
            }
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum FreeHow {
    /// The pool's own `free`.
    Pool,
    /// The pool's `try_free`, which must succeed.
    Checked,
    /// The facade's pointer-only `free`.
    Pointer,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Action {
    Alloc {
        pool: u8,
        size: Size,
    },
    AllocZeroed {
        pool: u8,
        size: Size,
    },
    AllocLayout {
        pool: u8,
        size: Size,
        align_shift: u8,
    },
    Realloc {
        block: u16,
        size: Size,
    },
    Resize {
        block: u16,
        size: Size,
        align_shift: u8,
    },
    Free {
        block: u16,
        how: FreeHow,
    },
    /// A checked free through any pool at any offset into a live block: only the block's own
    /// pool at offset 0 may accept it.
    TryFree {
        block: u16,
        offset: u32,
        via: u8,
    },
    /// A checked free of a pointer freed earlier, through any pool.
    DoubleFree {
        stale: u8,
        via: u8,
    },
    Trim {
        pool: u8,
    },
    /// Makes a child of any pool on the stack; later actions run with it on top.
    Child {
        parent: u8,
        limit: Option<ChildLimit>,
    },
    /// Drops the child on top of the stack, with whatever blocks it still has.
    DropChild,
    /// Resets the pool on top of the stack (the heap root when there is no child).
    Reset,
    Check,
}

/// A pool the actions can reach.
#[derive(Clone, Copy)]
enum Target<'a> {
    Heap(&'a Pool),
    Shm(&'a ShmPool),
}

/// The pools reachable now, by model id.
type Handles<'a> = [(usize, Target<'a>)];

fn handle<'a>(handles: &Handles<'a>, id: usize) -> Target<'a> {
    handles.iter().find(|(other, _)| *other == id).expect("a live pool has a handle").1
}

fn heap<'a>(handles: &Handles<'a>, id: usize) -> &'a Pool {
    match handle(handles, id) {
        Target::Heap(pool) => pool,
        Target::Shm(_) => unreachable!("pool {id} is a heap pool"),
    }
}

/// Where a pool's chunks come from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Parent {
    /// The heap root (the global allocator) or the shared pool itself.
    None,
    /// A heap pool, which counts the child's bytes as lent.
    Heap(usize),
    /// The shared pool.
    Shm(usize),
}

#[derive(Debug)]
struct PoolInfo {
    parent: Parent,
    shm: bool,
    limit: Option<usize>,
    depth: usize,
    alive: bool,
    /// A heap pool's bytes held when it was last verified.
    held: usize,
    live: usize,
    in_use: usize,
    large: usize,
    large_spans: usize,
    /// Chunks kept by the last reset, which may stay empty until a trim.
    kept: usize,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    ptr: NonNull<u8>,
    usable: usize,
    /// A large heap block's chunk bytes; `None` for a small one and for shared blocks.
    span: Option<usize>,
    pattern: u8,
    pool: usize,
}

/// How an operation may change the bytes held along the chain of the heap pool it targeted.
#[derive(Clone, Copy, Debug)]
enum Change {
    Same,
    /// Down or not at all at every level (a refusal, which may trim).
    Shrink,
    Any,
    /// Down by the same amount at every level: one chunk or nothing for a small block, the
    /// chunk for a large one.
    Free {
        span: Option<usize>,
    },
    Down(usize),
}

/// Whether the first `len` bytes at `ptr` are all `byte`.
///
/// # Safety
/// `ptr` is a live block of at least `len` bytes that nothing else accesses meanwhile.
unsafe fn holds(ptr: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
    let page = [byte; 4096];
    bytes.chunks(page.len()).all(|part| part == &page[..part.len()])
}

struct Model<'i> {
    actions: &'i [Action],
    next: usize,
    step: usize,
    /// Child pools on the stack now.
    nesting: usize,
    pools: Vec<PoolInfo>,
    /// Live blocks in the order they were made; picked by index.
    blocks: Vec<Block>,
    /// Start and end of every live block, for the overlap check.
    extents: BTreeMap<usize, usize>,
    /// Recently freed pointers.
    stale: Vec<NonNull<u8>>,
    next_pattern: u8,
    live_bytes: usize,
}

impl<'i> Model<'i> {
    fn new(actions: &'i [Action]) -> Self {
        Self {
            actions,
            next: 0,
            step: 0,
            nesting: 0,
            pools: Vec::new(),
            blocks: Vec::new(),
            extents: BTreeMap::new(),
            stale: Vec::new(),
            next_pattern: 0,
            live_bytes: 0,
        }
    }

    fn next_action(&mut self) -> Option<Action> {
        let action = *self.actions.get(self.next)?;
        self.next += 1;
        self.step += 1;
        Some(action)
    }

    fn add_pool(&mut self, parent: Parent, shm: bool, limit: Option<usize>) -> usize {
        let depth = match parent {
            Parent::None => 0,
            Parent::Heap(parent) | Parent::Shm(parent) => self.pools[parent].depth + 1,
        };
        self.pools.push(PoolInfo {
            parent,
            shm,
            limit,
            depth,
            alive: true,
            held: 0,
            live: 0,
            in_use: 0,
            large: 0,
            large_spans: 0,
            kept: 0,
        });
        self.pools.len() - 1
    }

    /// A heap pool and its heap ancestors, nearest first.
    fn chain(&self, pool: usize) -> Vec<usize> {
        let mut chain = vec![pool];
        while let Parent::Heap(parent) = self.pools[*chain.last().unwrap()].parent {
            chain.push(parent);
        }
        chain
    }

    /// The shared pool a heap chain takes its chunks from, if any.
    fn shm_below(&self, chain: &[usize]) -> Option<usize> {
        match self.pools[*chain.last().unwrap()].parent {
            Parent::Shm(shm) => Some(shm),
            _ => None,
        }
    }

    /// The granule of the source at the bottom of `chain`: a page for a shared pool's, 16 bytes
    /// for the global allocator's.
    fn granule(&self, chain: &[usize]) -> usize {
        if self.shm_below(chain).is_some() {
            4096
        } else {
            MIN_ALIGN
        }
    }

    /// Whether a request to `pool` meets a limit or the shared pool's capacity before it could
    /// reach the global allocator.
    fn bounded(&self, pool: usize) -> bool {
        if self.pools[pool].shm {
            return true;
        }
        let chain = self.chain(pool);
        self.shm_below(&chain).is_some()
            || chain.iter().any(|&level| self.pools[level].limit.is_some())
    }

    /// Whether every limited level of a heap chain has room for `expected`, and the chain ends
    /// at the global allocator: then the request must be served.
    fn must_fit(&self, chain: &[usize], expected: Expect) -> bool {
        expected != Expect::Never
            && self.shm_below(chain).is_none()
            && chain.iter().all(|&level| {
                let info = &self.pools[level];
                info.limit.is_none_or(|limit| limit - info.held >= expected.need())
            })
    }

    /// After a refusal from a chain on the global allocator, some level must lack the room.
    fn assert_refusal_justified(&self, chain: &[usize], expected: Expect) {
        if expected == Expect::Never || self.shm_below(chain).is_some() {
            return;
        }
        let short = chain.iter().any(|&level| {
            let info = &self.pools[level];
            info.limit.is_some_and(|limit| limit - info.held < expected.need())
        });
        assert!(short, "step {}: refused though every pool of {chain:?} has room", self.step);
    }

    fn pattern(&mut self) -> u8 {
        // Zero is left out so that a block that should hold a pattern cannot pass for zeroed.
        self.next_pattern = self.next_pattern % 255 + 1;
        self.next_pattern
    }

    fn pick_block(&self, index: u16) -> Option<usize> {
        (!self.blocks.is_empty()).then(|| usize::from(index) % self.blocks.len())
    }

    /// Adds a block a pool just handed out, checks it against every live block, and fills it.
    fn insert(&mut self, ptr: NonNull<u8>, usable: usize, pool: usize, span: Option<usize>) {
        let start = ptr.as_ptr().addr();
        let end = start + usable.max(1);
        let step = self.step;
        if let Some((&before, &before_end)) = self.extents.range(..start).next_back() {
            assert!(
                before_end <= start,
                "step {step}: {start:#x} overlaps the block at {before:#x}"
            );
        }
        if let Some((&after, _)) = self.extents.range(start..).next() {
            assert!(end <= after, "step {step}: {start:#x}..{end:#x} overlaps {after:#x}");
        }
        let pattern = self.pattern();
        // SAFETY: the block was just handed out with `usable` bytes, and the model has no other
        // reference to them.
        unsafe { ptr.as_ptr().write_bytes(pattern, usable) };
        self.extents.insert(start, end);
        self.blocks.push(Block { ptr, usable, span, pattern, pool });
        self.live_bytes += usable;
        let info = &mut self.pools[pool];
        info.live += 1;
        info.in_use += usable;
        if let Some(span) = span {
            info.large += 1;
            info.large_spans += span;
        }
    }

    /// Takes a block out of the model once its pool has freed it.
    fn remove(&mut self, index: usize) -> Block {
        let block = self.blocks.swap_remove(index);
        self.extents.remove(&block.ptr.as_ptr().addr()).unwrap();
        self.live_bytes -= block.usable;
        let info = &mut self.pools[block.pool];
        info.live -= 1;
        info.in_use -= block.usable;
        if let Some(span) = block.span {
            info.large -= 1;
            info.large_spans -= span;
        }
        if self.stale.len() == STALE_KEPT {
            self.stale.remove(0);
        }
        self.stale.push(block.ptr);
        block
    }

    /// Takes out every block of a pool that was reset or dropped.
    fn forget_blocks_of(&mut self, pool: usize) {
        let mut index = 0;
        while index < self.blocks.len() {
            if self.blocks[index].pool == pool {
                self.remove(index);
            } else {
                index += 1;
            }
        }
    }

    fn assert_intact(&self, block: &Block) {
        // SAFETY: the block is live, with `usable` bytes.
        let intact = unsafe { holds(block.ptr, block.usable, block.pattern) };
        assert!(intact, "step {}: block {:p} was overwritten", self.step, block.ptr);
    }

    fn assert_all_intact(&self) {
        for block in &self.blocks {
            self.assert_intact(block);
        }
    }

    /// Small chunks holding live blocks of a heap pool.
    fn chunks_in_use(&self, pool: usize) -> usize {
        let chunks: HashSet<usize> = self
            .blocks
            .iter()
            .filter(|block| block.pool == pool && block.span.is_none())
            .map(|block| block.ptr.as_ptr().addr() & !(CHUNK_SIZE - 1))
            .collect();
        chunks.len()
    }

    /// Live pools whose chunks come from `parent`.
    fn children_held(&self, parent: Parent) -> (usize, usize) {
        let children = self.pools.iter().filter(|child| child.alive && child.parent == parent);
        children.fold((0, 0), |(count, held), child| (count + 1, held + child.held))
    }

    /// Compares a heap pool with the model and records its bytes held. Its children must have
    /// been verified first.
    fn verify_heap(&mut self, id: usize, pool: &Pool) -> usize {
        let stats = pool.stats();
        let info = &self.pools[id];
        let step = self.step;
        assert_eq!(stats.live_blocks, info.live, "step {step}: live blocks of pool {id}");
        assert_eq!(stats.bytes_in_use, info.in_use, "step {step}: bytes in use of pool {id}");
        assert_eq!(stats.large_blocks, info.large, "step {step}: large blocks of pool {id}");
        assert_eq!(stats.limit, info.limit, "step {step}: limit of pool {id}");
        let (_, lent) = self.children_held(Parent::Heap(id));
        assert_eq!(stats.bytes_lent, lent, "step {step}: bytes lent by pool {id}");
        let held = stats.chunks * CHUNK_SIZE + info.large_spans + lent;
        assert_eq!(stats.bytes_held, held, "step {step}: bytes held by pool {id}");
        assert!(stats.peak_bytes_held >= held, "step {step}: peak of pool {id}");
        let available = info.limit.map(|limit| limit.checked_sub(held));
        if let Some(available) = available {
            assert!(available.is_some(), "step {step}: pool {id} holds {held}, past its limit");
        }
        assert_eq!(pool.available(), available.flatten(), "step {step}: available in pool {id}");
        self.pools[id].held = held;
        stats.chunks
    }

    /// Compares the shared pool with the model: its blocks, and its counters adding up.
    fn verify_shm(&mut self, id: usize, shm: &ShmPool) {
        let stats = shm.stats().expect("the shared pool's stats");
        let info = &self.pools[id];
        let step = self.step;
        assert_eq!(stats.live_blocks, info.live, "step {step}: live blocks of the shared pool");
        assert_eq!(stats.bytes_in_use, info.in_use, "step {step}: bytes in use of the shared pool");
        assert_eq!(
            stats.data_bytes,
            stats.available + stats.bytes_in_use + stats.lent_bytes,
            "step {step}: the shared pool's bytes do not add up: {stats:?}"
        );
        assert_eq!(shm.available(), stats.available, "step {step}: shared available");
        let (children, held) = self.children_held(Parent::Shm(id));
        assert!(stats.lent_bytes >= held, "step {step}: lent {} < held {held}", stats.lent_bytes);
        if children == 0 {
            assert_eq!(stats.lent_bytes, 0, "step {step}: lent with no child pool");
        }
    }

    /// Verifies the heap chain an operation touched, nearest first, how its bytes held changed,
    /// and the shared pool below it, if any.
    fn verify_chain(&mut self, handles: &Handles<'_>, chain: &[usize], change: Change) {
        if chain.is_empty() {
            return;
        }
        let before: Vec<usize> = chain.iter().map(|&id| self.pools[id].held).collect();
        for &id in chain {
            self.verify_heap(id, heap(handles, id));
        }
        let after: Vec<usize> = chain.iter().map(|&id| self.pools[id].held).collect();
        let step = self.step;
        let drop_at_first = before[0].wrapping_sub(after[0]);
        for (level, (&old, &new)) in before.iter().zip(&after).enumerate() {
            let ok = match change {
                Change::Same => new == old,
                Change::Shrink => new <= old,
                Change::Any => true,
                Change::Free { span } => {
                    let first_ok = match span {
                        Some(span) => drop_at_first == span,
                        None => drop_at_first == 0 || drop_at_first == CHUNK_SIZE,
                    };
                    first_ok && old.checked_sub(new) == Some(drop_at_first)
                }
                Change::Down(bytes) => old.checked_sub(new) == Some(bytes),
            };
            assert!(
                ok,
                "step {step}: {change:?} but pool {} went from {old} to {new}",
                chain[level]
            );
        }
        if let Some(shm) = self.shm_below(chain) {
            self.verify_target(handles, shm);
        }
    }

    fn verify_target(&mut self, handles: &Handles<'_>, id: usize) {
        match handle(handles, id) {
            Target::Heap(_) => {
                let chain = self.chain(id);
                self.verify_chain(handles, &chain, Change::Same);
            }
            Target::Shm(shm) => self.verify_shm(id, shm),
        }
    }

    /// Verifies every pool, children before parents; with `scan`, also runs every pool's
    /// `check()` and checks every block's pattern.
    fn verify_all(&mut self, handles: &Handles<'_>, scan: bool) {
        let mut ids: Vec<usize> = handles.iter().map(|(id, _)| *id).collect();
        ids.sort_by_key(|&id| core::cmp::Reverse(self.pools[id].depth));
        let step = self.step;
        for id in ids {
            match handle(handles, id) {
                Target::Heap(pool) => {
                    let held = self.pools[id].held;
                    let chunks = self.verify_heap(id, pool);
                    assert_eq!(
                        self.pools[id].held, held,
                        "step {step}: pool {id} changed untouched"
                    );
                    // Every chunk with a live block is held; beyond those, a pool keeps at most
                    // one empty chunk per class, and the chunks its last reset kept.
                    let in_use = self.chunks_in_use(id);
                    let most = in_use + CLASS_COUNT + self.pools[id].kept;
                    assert!(
                        (in_use..=most).contains(&chunks),
                        "step {step}: pool {id} holds {chunks} chunks for blocks in {in_use}"
                    );
                    if scan {
                        if let Err(error) = pool.check() {
                            panic!("step {step}: pool {id}: {error}");
                        }
                    }
                }
                Target::Shm(shm) => {
                    self.verify_shm(id, shm);
                    if scan {
                        if let Err(error) = shm.check() {
                            panic!("step {step}: the shared pool: {error}");
                        }
                    }
                }
            }
        }
        if scan {
            self.assert_all_intact();
        }
    }

    fn apply(&mut self, action: Action, handles: &Handles<'_>) {
        match action {
            Action::Alloc { pool, size } => self.allocate(handles, pool, size, Kind::Plain),
            Action::AllocZeroed { pool, size } => self.allocate(handles, pool, size, Kind::Zeroed),
            Action::AllocLayout { pool, size, align_shift } => {
                let align = 1 << (align_shift % 23);
                self.allocate(handles, pool, size, Kind::Layout(align));
            }
            Action::Realloc { block, size } => self.reallocate(handles, block, size, None),
            Action::Resize { block, size, align_shift } => {
                let align = 1 << (align_shift % 16);
                self.reallocate(handles, block, size, Some(align));
            }
            Action::Free { block, how } => self.free(handles, block, how),
            Action::TryFree { block, offset, via } => self.try_free(handles, block, offset, via),
            Action::DoubleFree { stale, via } => self.double_free(handles, stale, via),
            Action::Trim { pool } => self.trim(handles, pool),
            Action::Check => self.verify_all(handles, true),
            Action::Child { .. } | Action::DropChild | Action::Reset => {
                unreachable!("handled by the frame")
            }
        }
    }

    fn allocate(&mut self, handles: &Handles<'_>, pool: u8, size: Size, kind: Kind) {
        let (id, target) = handles[usize::from(pool) % handles.len()];
        let bounded = self.bounded(id);
        let size = size.bytes(bounded);
        if !bounded && size <= 1 << 40 && self.live_bytes + size > UNBOUNDED_BUDGET {
            return;
        }
        let layout = match kind {
            Kind::Layout(align) => Layout::from_size_align(size, align).ok(),
            _ => None,
        };
        let align = layout.map_or(1, |layout| layout.align());
        let result = match (target, kind, layout) {
            (Target::Heap(pool), Kind::Zeroed, _) => pool.alloc_zeroed(size),
            (Target::Heap(pool), _, Some(layout)) => pool.alloc_layout(layout),
            (Target::Heap(pool), _, None) => pool.alloc(size),
            (Target::Shm(shm), Kind::Zeroed, _) => shm.alloc_zeroed(size),
            (Target::Shm(shm), _, Some(layout)) => shm.alloc_layout(layout),
            (Target::Shm(shm), _, None) => shm.alloc(size),
        };
        let step = self.step;
        if let (Some(ptr), Kind::Zeroed) = (result, kind) {
            // SAFETY: the block was just handed out with at least `size` bytes.
            assert!(unsafe { holds(ptr, size, 0) }, "step {step}: {size} zeroed bytes");
        }
        match target {
            Target::Heap(pool) => self.heap_allocated(handles, id, pool, size, align, result),
            Target::Shm(shm) => self.shm_allocated(id, shm, size, align, result),
        }
    }

    fn heap_allocated(
        &mut self,
        handles: &Handles<'_>,
        id: usize,
        pool: &Pool,
        size: usize,
        align: usize,
        result: Option<NonNull<u8>>,
    ) {
        let chain = self.chain(id);
        let expected = expect(size, align).in_granule(self.granule(&chain));
        let must_fit = self.must_fit(&chain, expected);
        let step = self.step;
        match result {
            Some(ptr) => {
                assert_ne!(expected, Expect::Never, "step {step}: {size} bytes at {align} served");
                let addr = ptr.as_ptr().addr();
                assert_eq!(addr % align.max(MIN_ALIGN), 0, "step {step}: alignment");
                // SAFETY: the block is in use in `pool`.
                let usable = unsafe { pool.usable_size(ptr) };
                // A root over the global allocator may serve a large block from a kept chunk a
                // little longer than its own.
                let over_global = matches!(self.pools[id].parent, Parent::None);
                let span = expected.check_served(usable, over_global).unwrap_or_else(|problem| {
                    panic!("step {step}: usable size of {size}: {problem}")
                });
                self.insert(ptr, usable, id, span);
                self.verify_chain(handles, &chain, Change::Any);
            }
            None => {
                assert!(!must_fit, "step {step}: {size} bytes at {align} refused under the limits");
                self.verify_chain(handles, &chain, Change::Shrink);
                self.assert_refusal_justified(&chain, expected);
            }
        }
    }

    fn shm_allocated(
        &mut self,
        id: usize,
        shm: &ShmPool,
        size: usize,
        align: usize,
        result: Option<NonNull<u8>>,
    ) {
        let step = self.step;
        if let Some(ptr) = result {
            assert_eq!(ptr.as_ptr().addr() % align.max(MIN_ALIGN), 0, "step {step}: alignment");
            let usable = shm.usable_size(ptr).expect("a new shared block has a size");
            // A block is a size class no larger than the request's pages, or whole pages.
            let most = size.max(MIN_ALIGN).next_multiple_of(PAGE);
            assert!((size..=most).contains(&usable), "step {step}: {usable} bytes for {size}");
            assert!(usable <= SHM_CAPACITY, "step {step}: {usable} bytes from the shared pool");
            self.insert(ptr, usable, id, None);
        }
        self.verify_shm(id, shm);
    }

    fn reallocate(&mut self, handles: &Handles<'_>, index: u16, size: Size, align: Option<usize>) {
        let Some(index) = self.pick_block(index) else { return };
        let block = self.blocks[index];
        self.assert_intact(&block);
        let bounded = self.bounded(block.pool);
        let new_size = size.bytes(bounded);
        let grows = new_size > block.usable && new_size <= 1 << 40;
        if !bounded && grows && self.live_bytes + new_size > UNBOUNDED_BUDGET {
            return;
        }
        match handle(handles, block.pool) {
            Target::Heap(pool) => self.heap_realloc(handles, index, pool, new_size, align),
            Target::Shm(shm) => self.shm_realloc(index, block.pool, shm, new_size),
        }
    }

    fn heap_realloc(
        &mut self,
        handles: &Handles<'_>,
        index: usize,
        pool: &Pool,
        new_size: usize,
        align: Option<usize>,
    ) {
        let block = self.blocks[index];
        let chain = self.chain(block.pool);
        let layout = align
            .filter(|&align| align > MIN_ALIGN)
            .and_then(|align| Layout::from_size_align(new_size, align).ok());
        let (result, align) = match layout {
            // SAFETY: the block is in use in `pool`; the model follows a move below.
            Some(layout) => (unsafe { pool.resize(block.ptr, layout) }, layout.align()),
            // SAFETY: the block is in use in `pool`; the model follows a move or a free.
            None => (unsafe { pool.realloc(block.ptr, new_size) }, MIN_ALIGN),
        };
        let step = self.step;
        if new_size == 0 && layout.is_none() {
            assert_eq!(result, None, "step {step}: realloc to 0 returned a block");
            self.remove(index);
            self.verify_chain(handles, &chain, Change::Free { span: block.span });
            return;
        }
        let fits = new_size <= block.usable && block.ptr.as_ptr().addr().is_multiple_of(align);
        // Through `resize`, a large block left more than twice as long as it needs moves to a
        // shorter block when one can be had, and stays otherwise; `realloc` keeps it.
        let loose = layout.is_some() && block.span.is_some() && new_size < block.usable / 2;
        let in_place = fits && (!loose || result == Some(block.ptr));
        let expected = expect(new_size, align).in_granule(self.granule(&chain));
        match result {
            Some(ptr) if in_place => {
                assert_eq!(ptr, block.ptr, "step {step}: resize to {new_size} moved");
                // A loose block that stayed tried for a shorter one first, and a refused try
                // gives back the empty chunks the pools kept, as a refused resize does.
                let change = if loose { Change::Shrink } else { Change::Same };
                self.verify_chain(handles, &chain, change);
            }
            Some(ptr) => {
                assert_ne!(ptr, block.ptr, "step {step}: resize to {new_size} stayed in place");
                assert_eq!(ptr.as_ptr().addr() % align, 0, "step {step}: alignment after resize");
                let copied = block.usable.min(new_size);
                // SAFETY: the new block got the old block's first `copied` bytes.
                assert!(unsafe { holds(ptr, copied, block.pattern) }, "step {step}: contents lost");
                // SAFETY: the block is in use in `pool`.
                let usable = unsafe { pool.usable_size(ptr) };
                let over_global = matches!(self.pools[block.pool].parent, Parent::None);
                let span = expected.check_served(usable, over_global).unwrap_or_else(|problem| {
                    panic!("step {step}: usable size after resize: {problem}")
                });
                // The old block is gone before the new one is checked for overlaps.
                self.remove(index);
                self.insert(ptr, usable, block.pool, span);
                self.verify_chain(handles, &chain, Change::Any);
            }
            None => {
                assert!(!in_place, "step {step}: an in-place resize to {new_size} failed");
                self.assert_intact(&block);
                self.verify_chain(handles, &chain, Change::Shrink);
                let must_fit = self.must_fit(&chain, expected);
                assert!(!must_fit, "step {step}: resize to {new_size} refused under the limits");
                self.assert_refusal_justified(&chain, expected);
            }
        }
    }

    fn shm_realloc(&mut self, index: usize, id: usize, shm: &ShmPool, new_size: usize) {
        let block = self.blocks[index];
        // SAFETY: the block is in use in `shm`; the model follows a move or a free.
        let result = unsafe { shm.realloc(block.ptr, new_size) };
        let step = self.step;
        match result {
            None if new_size == 0 => {
                self.remove(index);
            }
            Some(ptr) if new_size == 0 => panic!("step {step}: shared realloc to 0 gave {ptr:p}"),
            Some(ptr) if new_size <= block.usable => {
                assert_eq!(ptr, block.ptr, "step {step}: shared realloc to {new_size} moved");
            }
            Some(ptr) => {
                assert_ne!(ptr, block.ptr, "step {step}: shared realloc stayed in place");
                assert_eq!(ptr.as_ptr().addr() % MIN_ALIGN, 0, "step {step}: alignment");
                // SAFETY: the new block got all the old block's bytes.
                let kept = unsafe { holds(ptr, block.usable, block.pattern) };
                assert!(kept, "step {step}: contents lost");
                let usable = shm.usable_size(ptr).expect("a moved shared block has a size");
                assert!(usable >= new_size, "step {step}: {usable} bytes for {new_size}");
                self.remove(index);
                self.insert(ptr, usable, id, None);
            }
            None => {
                assert!(new_size > block.usable, "step {step}: an in-place realloc failed");
                self.assert_intact(&block);
            }
        }
        self.verify_shm(id, shm);
    }

    fn free(&mut self, handles: &Handles<'_>, index: u16, how: FreeHow) {
        let Some(index) = self.pick_block(index) else { return };
        let block = self.blocks[index];
        self.assert_intact(&block);
        let step = self.step;
        match (handle(handles, block.pool), how) {
            // SAFETY: the block is in use in `pool` and leaves the model.
            (Target::Heap(pool), FreeHow::Pool) => unsafe { pool.free(block.ptr) },
            (Target::Heap(pool), FreeHow::Checked) => {
                // SAFETY: as above.
                let result = unsafe { pool.try_free(block.ptr) };
                assert_eq!(result, Ok(()), "step {step}: try_free of a live block");
            }
            // SAFETY: as above.
            (Target::Shm(shm), FreeHow::Pool) => unsafe { shm.free(block.ptr) },
            (Target::Shm(shm), FreeHow::Checked) => {
                // SAFETY: as above.
                let result = unsafe { shm.try_free(block.ptr) };
                assert_eq!(result, Ok(()), "step {step}: try_free of a live shared block");
            }
            // SAFETY: the block is in use in a live pool of this thread and leaves the model.
            (_, FreeHow::Pointer) => unsafe { melon_alloc::free(block.ptr) },
        }
        self.remove(index);
        self.verify_freed(handles, &block);
    }

    fn verify_freed(&mut self, handles: &Handles<'_>, block: &Block) {
        if self.pools[block.pool].shm {
            self.verify_target(handles, block.pool);
        } else {
            let chain = self.chain(block.pool);
            self.verify_chain(handles, &chain, Change::Free { span: block.span });
        }
    }

    fn try_free(&mut self, handles: &Handles<'_>, index: u16, offset: u32, via: u8) {
        let Some(index) = self.pick_block(index) else { return };
        let block = self.blocks[index];
        self.assert_intact(&block);
        let (target, pool) = handles[usize::from(via) % handles.len()];
        let offset = offset as usize % block.usable;
        let ptr = NonNull::new(block.ptr.as_ptr().wrapping_add(offset)).unwrap();
        let addr = ptr.as_ptr().addr();
        let result = match pool {
            // SAFETY: if `ptr` is an in-use block of `pool`, it leaves the model below.
            Target::Heap(pool) => unsafe { pool.try_free(ptr) }.map_err(ShmError::Free),
            // SAFETY: as above.
            Target::Shm(shm) => unsafe { shm.try_free(ptr) },
        };
        let step = self.step;
        if target == block.pool && offset == 0 {
            assert_eq!(result, Ok(()), "step {step}: try_free of a live block");
            self.remove(index);
            self.verify_freed(handles, &block);
            return;
        }
        // The shared pool marks only the first chunk's worth of pages of a run it lends (where
        // every block of the run starts) as lent; past those, a pointer into a child's large block
        // reads as inside a block of the shared pool's own.
        let lent_by_target =
            !self.pools[block.pool].shm && self.shm_below(&self.chain(block.pool)) == Some(target);
        let run = block.ptr.as_ptr().addr() & !(CHUNK_SIZE - 1);
        let expected = if target == block.pool || (lent_by_target && addr >= run + CHUNK_SIZE) {
            ShmError::Free(FreeError::Interior { addr })
        } else if lent_by_target && addr.is_multiple_of(MIN_ALIGN) {
            // A block boundary of a lent chunk, whose block was not handed off.
            ShmError::NotHandedOff { addr }
        } else {
            ShmError::Free(FreeError::Foreign { addr })
        };
        assert_eq!(result, Err(expected), "step {step}: pool {target} freed {ptr:p} of {block:?}");
        self.verify_target(handles, target);
        self.assert_intact(&block);
    }

    fn double_free(&mut self, handles: &Handles<'_>, stale: u8, via: u8) {
        if self.stale.is_empty() {
            return;
        }
        let ptr = self.stale[usize::from(stale) % self.stale.len()];
        if self.extents.contains_key(&ptr.as_ptr().addr()) {
            // The address was handed out again: a free of it now would be a real one.
            return;
        }
        let (target, pool) = handles[usize::from(via) % handles.len()];
        let result = match pool {
            // SAFETY: `ptr` starts no live block, so the call only inspects it.
            Target::Heap(pool) => unsafe { pool.try_free(ptr) }.map_err(|_| ()),
            // SAFETY: as above.
            Target::Shm(shm) => unsafe { shm.try_free(ptr) }.map_err(|_| ()),
        };
        assert!(result.is_err(), "step {}: a stale pointer {ptr:p} was freed", self.step);
        self.verify_target(handles, target);
    }

    fn trim(&mut self, handles: &Handles<'_>, pool: u8) {
        let (id, target) = handles[usize::from(pool) % handles.len()];
        let Target::Heap(pool) = target else { return };
        let given_back = pool.trim();
        let chain = self.chain(id);
        self.verify_chain(handles, &chain, Change::Down(given_back));
        // Right after a trim, the pool holds exactly the chunks that have live blocks.
        let chunks = pool.stats().chunks;
        assert_eq!(chunks, self.chunks_in_use(id), "step {}: chunks after a trim", self.step);
        self.pools[id].kept = 0;
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Zeroed,
    Layout(usize),
}

/// A heap pool a frame owns, which it can reset.
trait Owner {
    fn pool(&self) -> &Pool;
    fn reset(&mut self);
}

impl Owner for HeapPool {
    fn pool(&self) -> &Pool {
        self
    }

    fn reset(&mut self) {
        HeapPool::reset(self);
    }
}

impl Owner for ChildPool<'_> {
    fn pool(&self) -> &Pool {
        self
    }

    fn reset(&mut self) {
        ChildPool::reset(self);
    }
}

/// What ended a frame.
enum Exit {
    /// A `DropChild` for the frame's own pool.
    Dropped,
    /// The end of the input.
    Done,
}

fn with_own<'a>(outer: &Handles<'a>, id: usize, pool: &'a Pool) -> Vec<(usize, Target<'a>)> {
    let mut handles = outer.to_vec();
    handles.push((id, Target::Heap(pool)));
    handles
}

/// Runs actions with `own` on top of the stack, until it is dropped or the input ends. A child
/// made here borrows its parent, so it lives in a nested frame and is dropped before this one
/// goes on.
fn frame<P: Owner>(m: &mut Model<'_>, outer: &Handles<'_>, own_id: usize, own: &mut P) -> Exit {
    while let Some(action) = m.next_action() {
        match action {
            Action::DropChild if m.nesting > 0 => return Exit::Dropped,
            Action::DropChild => {}
            Action::Reset => {
                let chunks = own.pool().stats().chunks;
                let spans = m.pools[own_id].large_spans;
                own.reset();
                m.forget_blocks_of(own_id);
                m.pools[own_id].kept = chunks;
                let step = m.step;
                assert_eq!(
                    own.pool().stats().chunks,
                    chunks,
                    "step {step}: a reset dropped chunks"
                );
                let handles = with_own(outer, own_id, own.pool());
                let chain = m.chain(own_id);
                m.verify_chain(&handles, &chain, Change::Down(spans));
            }
            Action::Child { parent, limit } => {
                if m.nesting >= MAX_DEPTH {
                    continue;
                }
                let handles = with_own(outer, own_id, own.pool());
                let (parent_id, target) = handles[usize::from(parent) % handles.len()];
                let limit = limit.map(ChildLimit::bytes);
                let (mut child, parent) = match target {
                    Target::Heap(pool) => {
                        let child = match limit {
                            Some(limit) => pool.child_with_limit(limit),
                            None => pool.child(),
                        };
                        (child, Parent::Heap(parent_id))
                    }
                    Target::Shm(shm) => {
                        let child = match limit {
                            Some(limit) => shm.child_with_limit(limit),
                            None => shm.child(),
                        };
                        (child, Parent::Shm(parent_id))
                    }
                };
                let id = m.add_pool(parent, false, limit);
                m.nesting += 1;
                let exit = frame(m, &handles, id, &mut child);
                m.nesting -= 1;
                drop_child(m, &handles, id, child);
                if let Exit::Done = exit {
                    return Exit::Done;
                }
            }
            action => {
                let handles = with_own(outer, own_id, own.pool());
                m.apply(action, &handles);
                if m.step.is_multiple_of(VERIFY_EVERY) {
                    m.verify_all(&handles, m.step.is_multiple_of(SCAN_EVERY));
                }
            }
        }
    }
    Exit::Done
}

/// Drops a child with whatever blocks it still has, and checks that its parent gets back
/// exactly what the child held.
fn drop_child(m: &mut Model<'_>, handles: &Handles<'_>, id: usize, child: ChildPool<'_>) {
    let step = m.step;
    let held = child.stats().bytes_held;
    assert_eq!(held, m.pools[id].held, "step {step}: child {id} changed untouched");
    if let Err(error) = child.check() {
        panic!("step {step}: child {id}: {error}");
    }
    for block in m.blocks.iter().filter(|block| block.pool == id) {
        m.assert_intact(block);
    }
    let shm_lent = match m.pools[id].parent {
        Parent::Shm(shm) => match handle(handles, shm) {
            Target::Shm(shm) => Some(shm.stats().expect("the shared pool's stats").lent_bytes),
            Target::Heap(_) => unreachable!(),
        },
        _ => None,
    };
    drop(child);
    m.forget_blocks_of(id);
    m.pools[id].alive = false;
    match m.pools[id].parent {
        Parent::Heap(parent) => {
            let chain = m.chain(parent);
            m.verify_chain(handles, &chain, Change::Down(held));
        }
        Parent::Shm(shm_id) => {
            let Target::Shm(shm) = handle(handles, shm_id) else { unreachable!() };
            let lent = shm.stats().expect("the shared pool's stats").lent_bytes;
            let before = shm_lent.unwrap();
            assert!(
                before - lent >= held,
                "step {step}: the shared pool got {} of {held}",
                before - lent
            );
            m.verify_shm(shm_id, shm);
        }
        Parent::None => unreachable!("a child has a parent"),
    }
}

/// Frees every block left, checking its pattern, and checks the pools are back to empty.
fn finish(m: &mut Model<'_>, root_id: usize, root: &HeapPool, shm_id: usize, shm: &ShmPool) {
    let handles = [(shm_id, Target::Shm(shm)), (root_id, Target::Heap(root))];
    m.verify_all(&handles, true);
    while let Some(block) = m.blocks.last().copied() {
        let result = match handle(&handles, block.pool) {
            // SAFETY: the block is in use in `pool` and leaves the model.
            Target::Heap(pool) => unsafe { pool.try_free(block.ptr) }.map_err(ShmError::Free),
            // SAFETY: as above.
            Target::Shm(shm) => unsafe { shm.try_free(block.ptr) },
        };
        assert_eq!(result, Ok(()), "the final free of {block:?}");
        m.remove(m.blocks.len() - 1);
        m.verify_freed(&handles, &block);
    }
    m.verify_all(&handles, true);
    root.trim();
    let stats = root.stats();
    assert_eq!((stats.live_blocks, stats.bytes_held), (0, 0), "an empty root: {stats:?}");
    assert_eq!(root.available(), m.pools[root_id].limit, "the root's limit after a trim");
    assert_pristine(shm);
    // Free pages merge as they are freed, and an allocation that finds no run large enough
    // gives back the empty slabs each class keeps: so the whole data area now serves one
    // block. This also leaves the pool in the same state for every input.
    let data_bytes = shm.stats().expect("the shared pool's stats").data_bytes;
    let whole = shm.alloc(data_bytes).expect("an empty shared pool serves its whole data area");
    // SAFETY: the block was just allocated and is not used again.
    unsafe { shm.try_free(whole) }.expect("the free of the whole data area");
    assert_pristine(shm);
}

/// Checks that the shared pool holds nothing: no block, no chunk lent, every byte free.
fn assert_pristine(shm: &ShmPool) {
    let stats = shm.stats().expect("the shared pool's stats");
    assert_eq!((stats.live_blocks, stats.lent_bytes), (0, 0), "an empty shared pool: {stats:?}");
    assert_eq!(stats.available, stats.data_bytes, "the shared pool has all its bytes back");
    shm.check().expect("the shared pool, empty");
}

/// The shared pool, made once: making one costs a memfd and reserving its memory, more than most
/// inputs take to run. Each input leaves it as it found it (see `finish`), so that inputs stay
/// independent.
static SHM: OnceLock<ShmPool> = OnceLock::new();

fuzz_target!(|input: Input| {
    let shm = SHM.get_or_init(|| ShmPool::new(SHM_CAPACITY).expect("a shared pool"));
    assert_pristine(shm);
    let limit = input.root_limit.map(RootLimit::bytes);
    let mut root = match limit {
        Some(limit) => HeapPool::with_limit(limit),
        None => HeapPool::new(),
    };
    let mut m = Model::new(&input.actions);
    let shm_id = m.add_pool(Parent::None, true, None);
    let root_id = m.add_pool(Parent::None, false, limit);
    frame(&mut m, &[(shm_id, Target::Shm(shm))], root_id, &mut root);
    finish(&mut m, root_id, &root, shm_id, shm);
    root.check().expect("the root after the input");
});
