//! A model-based property test: seeded random sequences of pool operations (allocations of
//! every kind, reallocations, the three ways to free, refused frees, trims, and child pools
//! made, nested, reset and dropped), checked step by step against a plain model of the live
//! blocks and of each pool's limit.
//!
//! After every operation the pools it touched must report exactly the blocks and bytes the model
//! holds, their bytes held must add up from their chunks, large blocks and children, and pools
//! it did not touch must not have changed; every few steps every pool is scanned with `check()`.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::{BTreeMap, HashMap, HashSet};

use melon_alloc_core::{CHUNK_SIZE, CLASS_COUNT, CLASS_SIZES, MAX_SMALL, MIN_ALIGN, SPARE_CHUNKS};
use melon_alloc_heap::{ChildPool, FreeError, GlobalSource, HeapPool, Pool};

#[path = "support/expect.rs"]
mod expect;

use expect::{expect, Expect};

/// Operations per seed. Miri runs a short sequence: it is a thousand times slower.
const STEPS: usize = if cfg!(miri) { 50 } else { 20_000 };

/// Pools made per seed may nest this deep below the root.
const MAX_DEPTH: usize = 3;

/// splitmix64: small, fast, and good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A live block as the model sees it.
#[derive(Clone, Copy, Debug)]
struct Block {
    ptr: NonNull<u8>,
    size: usize,
    usable: usize,
    /// The chunk bytes of a large block; `None` for a small one.
    span: Option<usize>,
    pattern: u8,
    pool: usize,
    /// Place in `Model::order`.
    slot: usize,
}

/// A pool as the model sees it.
#[derive(Debug)]
struct PoolInfo {
    parent: Option<usize>,
    limit: Option<usize>,
    depth: usize,
    alive: bool,
    /// Bytes held when the pool was last looked at.
    held: usize,
    live: usize,
    in_use: usize,
    large: usize,
    large_spans: usize,
    /// Chunks kept by the last reset, which may stay empty until a trim.
    kept: usize,
}

/// How an operation may change the bytes held along the chain of the pool it targeted.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Not at all.
    Same,
    /// Down or not at all, at every level independently (a refused allocation, which may trim).
    Shrink,
    /// Any way (a served allocation, which may take a chunk or trim to make room).
    Any,
    /// A free: down by the same amount at every level, one chunk or nothing for a small block,
    /// the chunk for a large one.
    Free { span: Option<usize> },
    /// Down by exactly this many bytes at every level.
    Down(usize),
}

struct Model {
    seed: u64,
    step: usize,
    steps_left: usize,
    rng: Rng,
    blocks: HashMap<usize, Block>,
    /// Addresses of the live blocks, for picking one at random.
    order: Vec<usize>,
    /// Start and end of every live block, for the overlap check.
    extents: BTreeMap<usize, usize>,
    pools: Vec<PoolInfo>,
    /// Recently freed pointers, for refused frees.
    stale: Vec<NonNull<u8>>,
    next_pattern: u8,
    /// Depth of the frame running now.
    frame_depth: usize,
    /// How often each kind of event happened, so that a run that stopped exercising something
    /// fails instead of passing vacuously.
    seen: Seen,
}

#[derive(Debug, Default)]
struct Seen {
    served: usize,
    refused_by_limit: usize,
    never: usize,
    in_place: usize,
    moved: usize,
    resize_refused: usize,
    freed: usize,
    refused_frees: usize,
    trims: usize,
    children: usize,
    limited_children: usize,
    sourced_children: usize,
    deepest: usize,
    child_resets: usize,
    child_drops_with_blocks: usize,
}

/// The pools reachable from the current frame, by id.
type Handles<'a> = [(usize, &'a Pool)];

fn handle<'a>(handles: &Handles<'a>, id: usize) -> &'a Pool {
    handles.iter().find(|(other, _)| *other == id).expect("a live pool has a handle").1
}

/// The bytes of a block.
///
/// # Safety
/// `ptr` is a live block of at least `len` bytes that nothing else accesses meanwhile.
unsafe fn bytes<'a>(ptr: NonNull<u8>, len: usize) -> &'a mut [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) }
}

/// Whether the first `len` bytes of a block are all `byte`, compared a page at a time so that
/// the check stays fast in debug builds.
///
/// # Safety
/// As for [`bytes`].
unsafe fn holds(ptr: NonNull<u8>, len: usize, byte: u8) -> bool {
    let page = [byte; 4096];
    // SAFETY: forwarded from the caller.
    unsafe { bytes(ptr, len) }.chunks(page.len()).all(|part| part == &page[..part.len()])
}

impl Model {
    fn new(seed: u64, steps: usize) -> Self {
        Self {
            seed,
            step: 0,
            steps_left: steps,
            rng: Rng(seed),
            blocks: HashMap::new(),
            order: Vec::new(),
            extents: BTreeMap::new(),
            pools: Vec::new(),
            stale: Vec::new(),
            next_pattern: 0,
            frame_depth: 0,
            seen: Seen::default(),
        }
    }

    /// Where a failure happened, to replay it.
    fn at(&self) -> String {
        format!("seed {:#x} step {}", self.seed, self.step)
    }

    fn add_pool(&mut self, parent: Option<usize>, limit: Option<usize>) -> usize {
        // A pool without a parent counts as deep as where it was made, so that the pools made
        // in it still come before it when every pool is verified, children first.
        let depth = parent.map_or(self.frame_depth, |parent| self.pools[parent].depth + 1);
        self.seen.deepest = self.seen.deepest.max(depth);
        self.pools.push(PoolInfo {
            parent,
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

    /// The pool and its ancestors, nearest first.
    fn chain(&self, pool: usize) -> Vec<usize> {
        let mut chain = vec![pool];
        while let Some(parent) = self.pools[*chain.last().unwrap()].parent {
            chain.push(parent);
        }
        chain
    }

    fn pattern(&mut self) -> u8 {
        // Zero is left out so that a block that should hold a pattern cannot pass for zeroed.
        self.next_pattern = self.next_pattern % 255 + 1;
        self.next_pattern
    }

    fn random_size(&mut self) -> usize {
        match self.rng.below(100) {
            0..=44 => self.rng.below(257),
            45..=69 => 257 + self.rng.below(MAX_SMALL - 256),
            70..=76 => {
                let class = self.rng.pick(&CLASS_SIZES);
                class - 1 + self.rng.below(3)
            }
            77..=93 => MAX_SMALL + 1 + self.rng.below(40_000),
            94..=98 => 40_000 + self.rng.below(260_000),
            // Sizes no pool can serve; an unlimited pool would ask the system for them, which
            // Miri does not model.
            _ if cfg!(miri) => 0,
            _ => self.rng.pick(&[
                usize::MAX,
                usize::MAX - 10,
                isize::MAX as usize,
                isize::MAX as usize - 100,
                1 << 50,
            ]),
        }
    }

    fn random_align(&mut self) -> usize {
        if self.rng.percent(3) {
            CHUNK_SIZE << self.rng.below(3)
        } else {
            1 << self.rng.below(14)
        }
    }

    fn random_block(&mut self) -> Option<Block> {
        if self.order.is_empty() {
            return None;
        }
        let addr = self.order[self.rng.below(self.order.len())];
        Some(self.blocks[&addr])
    }

    /// Adds a block the pool just handed out, checks it against every live block, and fills it.
    fn insert(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        usable: usize,
        pool: usize,
        span: Option<usize>,
    ) {
        let start = ptr.as_ptr() as usize;
        let end = start + usable.max(1);
        if let Some((&before, &before_end)) = self.extents.range(..start).next_back() {
            assert!(
                before_end <= start,
                "{}: {start:#x} overlaps the block at {before:#x}",
                self.at()
            );
        }
        if let Some((&after, _)) = self.extents.range(start..).next() {
            assert!(
                end <= after,
                "{}: {start:#x}..{end:#x} overlaps the block at {after:#x}",
                self.at()
            );
        }
        let pattern = self.pattern();
        // SAFETY: the block was just handed out with `usable` bytes.
        unsafe { bytes(ptr, usable) }.fill(pattern);
        self.extents.insert(start, end);
        self.order.push(start);
        let slot = self.order.len() - 1;
        self.blocks.insert(start, Block { ptr, size, usable, span, pattern, pool, slot });
        let info = &mut self.pools[pool];
        info.live += 1;
        info.in_use += usable;
        if let Some(span) = span {
            info.large += 1;
            info.large_spans += span;
        }
    }

    /// Takes a block out of the model, once its pool has freed it.
    fn remove(&mut self, block: Block) {
        let start = block.ptr.as_ptr() as usize;
        // The copy may be older than the model's entry, whose place in `order` is current.
        let block = self.blocks.remove(&start).unwrap();
        self.extents.remove(&start).unwrap();
        self.order.swap_remove(block.slot);
        if let Some(&moved) = self.order.get(block.slot) {
            self.blocks.get_mut(&moved).unwrap().slot = block.slot;
        }
        let info = &mut self.pools[block.pool];
        info.live -= 1;
        info.in_use -= block.usable;
        if let Some(span) = block.span {
            info.large -= 1;
            info.large_spans -= span;
        }
        if self.stale.len() == 64 {
            self.stale.swap_remove(self.rng.below(64));
        }
        self.stale.push(block.ptr);
    }

    /// Checks that a block still holds its pattern over its whole usable size.
    fn assert_intact(&self, block: &Block) {
        // SAFETY: the block is live, with `usable` bytes.
        let intact = unsafe { holds(block.ptr, block.usable, block.pattern) };
        assert!(
            intact,
            "{}: block {:p} of {} bytes was overwritten",
            self.at(),
            block.ptr,
            block.size
        );
    }

    /// Small chunks that hold live blocks of `pool`.
    fn chunks_in_use(&self, pool: usize) -> usize {
        let chunks: HashSet<usize> = self
            .blocks
            .values()
            .filter(|block| block.pool == pool && block.span.is_none())
            .map(|block| block.ptr.as_ptr() as usize & !(CHUNK_SIZE - 1))
            .collect();
        chunks.len()
    }

    /// Compares one pool with the model and records its bytes held. Children must have been
    /// looked at first, since a pool's bytes lent are its children's bytes held.
    fn verify_pool(&mut self, id: usize, pool: &Pool) -> usize {
        let stats = pool.stats();
        let info = &self.pools[id];
        let at = self.at();
        assert_eq!(stats.live_blocks, info.live, "{at}: live blocks of pool {id}");
        assert_eq!(stats.bytes_in_use, info.in_use, "{at}: bytes in use of pool {id}");
        assert_eq!(stats.large_blocks, info.large, "{at}: large blocks of pool {id}");
        assert_eq!(stats.limit, info.limit, "{at}: limit of pool {id}");
        let lent: usize = self
            .pools
            .iter()
            .filter(|child| child.alive && child.parent == Some(id))
            .map(|child| child.held)
            .sum();
        assert_eq!(stats.bytes_lent, lent, "{at}: bytes lent by pool {id}");
        let held = stats.chunks * CHUNK_SIZE + info.large_spans + lent;
        assert_eq!(stats.bytes_held, held, "{at}: bytes held by pool {id}");
        assert!(stats.peak_bytes_held >= held, "{at}: peak of pool {id}");
        let available = info.limit.map(|limit| limit - stats.bytes_held);
        assert_eq!(pool.available(), available, "{at}: available in pool {id}");
        self.pools[id].held = stats.bytes_held;
        stats.chunks
    }

    /// Verifies the chain of pools an operation touched, nearest first, and how their bytes
    /// held changed.
    fn verify_chain(&mut self, handles: &Handles<'_>, chain: &[usize], change: Change) {
        if chain.is_empty() {
            return;
        }
        let before: Vec<usize> = chain.iter().map(|&id| self.pools[id].held).collect();
        for &id in chain {
            self.verify_pool(id, handle(handles, id));
        }
        let after: Vec<usize> = chain.iter().map(|&id| self.pools[id].held).collect();
        let at = self.at();
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
                "{at}: {change:?} but pool {} went from {old} to {new} bytes held",
                chain[level]
            );
        }
    }

    /// Verifies every pool, children before parents: the counts, that pools no operation
    /// touched still hold what they held, and the bounds on their chunks.
    fn verify_all(&mut self, handles: &Handles<'_>, scan: bool) {
        let mut ids: Vec<usize> = handles.iter().map(|(id, _)| *id).collect();
        ids.sort_by_key(|&id| core::cmp::Reverse(self.pools[id].depth));
        for id in ids {
            let pool = handle(handles, id);
            let held = self.pools[id].held;
            let chunks = self.verify_pool(id, pool);
            let at = self.at();
            assert_eq!(self.pools[id].held, held, "{at}: pool {id} changed untouched");
            // Every chunk with a live block is held; beyond those, a pool keeps per class at most
            // the empty chunk allocations come from and its spare chunks, and the chunks its last
            // reset kept.
            let in_use = self.chunks_in_use(id);
            let most = in_use + CLASS_COUNT * (1 + SPARE_CHUNKS) + self.pools[id].kept;
            assert!(
                (in_use..=most).contains(&chunks),
                "{at}: pool {id} holds {chunks} chunks for blocks in {in_use}"
            );
            if scan {
                if let Err(error) = pool.check() {
                    panic!("{at}: pool {id}: {error}");
                }
            }
        }
    }

    /// An allocation of one of the three kinds from a random pool.
    fn allocate(&mut self, handles: &Handles<'_>) {
        let (id, pool) = self.rng.pick(handles);
        let size = self.random_size();
        let kind = self.rng.below(10);
        let align = if kind >= 7 { self.random_align() } else { 1 };
        let layout = Layout::from_size_align(size, align);
        let (result, zeroed) = match kind {
            0..=4 => (pool.alloc(size), false),
            5 | 6 => (pool.alloc_zeroed(size), true),
            _ => match layout {
                Ok(layout) => (pool.alloc_layout(layout), false),
                Err(_) => (pool.alloc(size), false),
            },
        };
        let align = if kind >= 7 && layout.is_ok() { align } else { 1 };
        let expected = expect(size, align);
        let chain = self.chain(id);
        let must_fit = expected != Expect::Never
            && chain.iter().all(|&level| {
                let info = &self.pools[level];
                info.limit.is_none_or(|limit| limit - info.held >= expected.need())
            });
        match result {
            Some(ptr) => {
                let at = self.at();
                assert_ne!(expected, Expect::Never, "{at}: {size} bytes at {align} were served");
                assert_eq!(ptr.as_ptr() as usize % align.max(MIN_ALIGN), 0, "{at}: alignment");
                // SAFETY: the block is in use in `pool`.
                let usable = unsafe { pool.usable_size(ptr) };
                let span = expected
                    .check_served(usable, chain.len() == 1)
                    .unwrap_or_else(|problem| panic!("{at}: {size} bytes at {align}: {problem}"));
                if zeroed {
                    // SAFETY: the block holds `size` bytes.
                    assert!(unsafe { holds(ptr, size, 0) }, "{at}: {size} zeroed bytes");
                }
                self.insert(ptr, size, usable, id, span);
                self.verify_chain(handles, &chain, Change::Any);
                self.seen.served += 1;
            }
            None => {
                assert!(
                    !must_fit,
                    "{}: {size} bytes at {align} refused under the limits",
                    self.at()
                );
                if expected == Expect::Never {
                    self.seen.never += 1;
                } else {
                    self.seen.refused_by_limit += 1;
                }
                self.verify_chain(handles, &chain, Change::Shrink);
                self.assert_refusal_justified(&chain, expected);
            }
        }
    }

    /// After a refusal, some pool of the chain must lack room for what the request needed.
    fn assert_refusal_justified(&self, chain: &[usize], expected: Expect) {
        if expected == Expect::Never {
            return;
        }
        let short = chain.iter().any(|&level| {
            let info = &self.pools[level];
            info.limit.is_some_and(|limit| limit - info.held < expected.need())
        });
        assert!(short, "{}: refused though every pool of {chain:?} has room", self.at());
    }

    /// A realloc, or a resize to a layout, of a random block.
    fn reallocate(&mut self, handles: &Handles<'_>) {
        let Some(block) = self.random_block() else { return };
        self.assert_intact(&block);
        let pool = handle(handles, block.pool);
        let chain = self.chain(block.pool);
        let new_size = match self.rng.below(10) {
            0 => 0,
            1 => self.rng.below(block.usable + 1),
            2 => block.usable + 1,
            _ => self.random_size(),
        };
        let align = if self.rng.percent(30) { self.random_align() } else { MIN_ALIGN };
        let layout = Layout::from_size_align(new_size, align);
        let (result, align) = match layout {
            Ok(layout) if align != MIN_ALIGN => {
                // SAFETY: the block is in use in `pool`; the model follows a move below.
                (unsafe { pool.resize(block.ptr, layout) }, align)
            }
            _ => {
                // SAFETY: the block is in use in `pool`; the model follows a move or a free.
                (unsafe { pool.realloc(block.ptr, new_size) }, MIN_ALIGN)
            }
        };
        let at = self.at();
        if new_size == 0 && align == MIN_ALIGN {
            assert_eq!(result, None, "{at}: realloc to 0 returned a block");
            self.remove(block);
            self.verify_chain(handles, &chain, Change::Free { span: block.span });
            return;
        }
        let fits = new_size <= block.usable && block.ptr.as_ptr() as usize % align == 0;
        // Through `resize`, a large block left more than twice as long as it needs moves to a
        // shorter block when one can be had, and stays otherwise; `realloc` keeps it.
        let loose = align != MIN_ALIGN && block.span.is_some() && new_size < block.usable / 2;
        let in_place = fits && (!loose || result == Some(block.ptr));
        let expected = expect(new_size, align);
        match result {
            Some(ptr) if in_place => {
                assert_eq!(
                    ptr, block.ptr,
                    "{at}: resize to {new_size} within {} moved",
                    block.usable
                );
                self.blocks.get_mut(&(ptr.as_ptr() as usize)).unwrap().size = new_size;
                // A loose block that stayed tried for a shorter one first, and a refused try
                // gives back the empty chunks the pools kept, as a refused resize does.
                let change = if loose { Change::Shrink } else { Change::Same };
                self.verify_chain(handles, &chain, change);
                self.seen.in_place += 1;
            }
            Some(ptr) => {
                assert_ne!(ptr, block.ptr, "{at}: resize to {new_size} stayed in place");
                assert_eq!(ptr.as_ptr() as usize % align, 0, "{at}: alignment after resize");
                let copied = block.usable.min(new_size);
                // SAFETY: the new block got the old block's first `copied` bytes.
                assert!(unsafe { holds(ptr, copied, block.pattern) }, "{at}: contents lost");
                // SAFETY: the block is in use in `pool`.
                let usable = unsafe { pool.usable_size(ptr) };
                let span = expected
                    .check_served(usable, chain.len() == 1)
                    .unwrap_or_else(|problem| panic!("{at}: resize to {new_size}: {problem}"));
                // The old block is gone before the new one is checked for overlaps.
                self.remove(block);
                self.insert(ptr, new_size, usable, block.pool, span);
                self.verify_chain(handles, &chain, Change::Any);
                self.seen.moved += 1;
            }
            None => {
                assert!(!in_place, "{at}: an in-place resize to {new_size} failed");
                self.seen.resize_refused += 1;
                self.assert_intact(&block);
                self.verify_chain(handles, &chain, Change::Shrink);
                let must_fit = expected != Expect::Never
                    && chain.iter().all(|&level| {
                        let info = &self.pools[level];
                        info.limit.is_none_or(|limit| limit - info.held >= expected.need())
                    });
                assert!(!must_fit, "{at}: resize to {new_size} refused under the limits");
                self.assert_refusal_justified(&chain, expected);
            }
        }
    }

    /// Frees a random block through its pool, checked or not, or by pointer alone.
    fn free(&mut self, handles: &Handles<'_>) {
        let Some(block) = self.random_block() else { return };
        self.assert_intact(&block);
        let pool = handle(handles, block.pool);
        match self.rng.below(3) {
            // SAFETY: the block is in use in `pool` and leaves the model.
            0 => unsafe { pool.free(block.ptr) },
            1 => {
                // SAFETY: as above.
                let result = unsafe { pool.try_free(block.ptr) };
                assert_eq!(result, Ok(()), "{}: try_free of a live block", self.at());
            }
            // SAFETY: as above; no other thread uses the pool.
            _ => unsafe { melon_alloc_heap::free(block.ptr) },
        }
        self.remove(block);
        let chain = self.chain(block.pool);
        self.verify_chain(handles, &chain, Change::Free { span: block.span });
        self.seen.freed += 1;
    }

    /// Offers a pool a pointer it must refuse, and checks that nothing changed.
    fn refused_free(&mut self, handles: &Handles<'_>) {
        let Some(block) = self.random_block() else { return };
        let (target, ptr, expected) = match self.rng.below(3) {
            0 => {
                let offset = 1 + self.rng.below(block.usable - 1);
                let ptr = NonNull::new(block.ptr.as_ptr().wrapping_add(offset)).unwrap();
                (block.pool, ptr, Some(FreeError::Interior { addr: ptr.as_ptr() as usize }))
            }
            1 if handles.len() > 1 => {
                let (other, _) = self.rng.pick(handles);
                if other == block.pool {
                    return;
                }
                let addr = block.ptr.as_ptr() as usize;
                (other, block.ptr, Some(FreeError::Foreign { addr }))
            }
            // A stale pointer's memory may have gone back to the system, which Miri would
            // rightly flag when the pointer is followed, so only native runs try them.
            _ if cfg!(miri) || self.stale.is_empty() => return,
            _ => {
                let ptr = self.rng.pick(&self.stale);
                if self.blocks.contains_key(&(ptr.as_ptr() as usize)) {
                    return;
                }
                (self.rng.pick(handles).0, ptr, None)
            }
        };
        let pool = handle(handles, target);
        // SAFETY: `ptr` is not an in-use block of `pool`, so the call only inspects it.
        let result = unsafe { pool.try_free(ptr) };
        let at = self.at();
        match expected {
            Some(error) => assert_eq!(result, Err(error), "{at}: refused free"),
            None => assert!(result.is_err(), "{at}: a stale pointer {ptr:p} was freed"),
        }
        let chain = self.chain(target);
        self.verify_chain(handles, &chain, Change::Same);
        self.seen.refused_frees += 1;
    }

    fn trim(&mut self, handles: &Handles<'_>) {
        let (id, pool) = self.rng.pick(handles);
        let given_back = pool.trim();
        let chain = self.chain(id);
        self.verify_chain(handles, &chain, Change::Down(given_back));
        // Right after a trim, the pool holds exactly the chunks that have live blocks.
        let chunks = pool.stats().chunks;
        assert_eq!(chunks, self.chunks_in_use(id), "{}: chunks after a trim", self.at());
        self.pools[id].kept = 0;
        self.seen.trims += 1;
    }

    /// Takes out of the model every block of a pool that was reset or dropped.
    fn forget_blocks_of(&mut self, pool: usize) {
        let gone: Vec<Block> =
            self.blocks.values().filter(|block| block.pool == pool).copied().collect();
        for block in gone {
            self.remove(block);
        }
    }

    fn random_limit(&mut self) -> Option<usize> {
        match self.rng.below(10) {
            0..=3 => None,
            4 => Some(self.rng.below(3 * CHUNK_SIZE)),
            _ => Some(self.rng.below(40) * CHUNK_SIZE + self.rng.pick(&[0, 1, 64, 5000])),
        }
    }
}

/// One frame of pools: the pools of enclosing frames, reachable through `outer`, and children
/// of them made here. Children are dropped when the frame ends; a nested frame can make
/// children of this frame's children.
fn run<'p>(m: &mut Model, outer: &[(usize, &'p Pool)], depth: usize) {
    let mut children: Vec<(usize, ChildPool<'p>)> = Vec::new();
    while m.steps_left > 0 {
        m.steps_left -= 1;
        m.step += 1;
        let roll = m.rng.below(1000);
        let live_pools = outer.len() + children.len();
        if roll < 8 && children.len() < 3 && live_pools < 12 {
            let (parent, pool) = m.rng.pick(outer);
            let limit = m.random_limit();
            // Now and then a pool with a source of its own instead of a parent.
            let (child, parent) = if m.rng.percent(15) {
                (ChildPool::with_source(Box::new(GlobalSource::new()), limit), None)
            } else if let Some(limit) = limit {
                (pool.child_with_limit(limit), Some(parent))
            } else {
                (pool.child(), Some(parent))
            };
            let id = m.add_pool(parent, limit);
            children.push((id, child));
            m.seen.children += 1;
            m.seen.limited_children += usize::from(limit.is_some());
            m.seen.sourced_children += usize::from(parent.is_none());
        } else if roll < 12 && !children.is_empty() {
            let (id, child) = children.swap_remove(m.rng.below(children.len()));
            drop_child(m, outer, id, child);
        } else if roll < 16 && !children.is_empty() {
            let index = m.rng.below(children.len());
            let (id, child) = &mut children[index];
            let id = *id;
            let chunks = child.stats().chunks;
            let spans = m.pools[id].large_spans;
            child.reset();
            m.forget_blocks_of(id);
            m.pools[id].kept = chunks;
            m.seen.child_resets += 1;
            assert_eq!(child.stats().chunks, chunks, "{}: a reset dropped chunks", m.at());
            let mut handles = outer.to_vec();
            handles.push((id, &**child));
            let chain = m.chain(id);
            m.verify_chain(&handles, &chain, Change::Down(spans));
        } else if roll < 22 && depth < MAX_DEPTH && !children.is_empty() {
            let mut handles = outer.to_vec();
            handles.extend(children.iter().map(|(id, child)| (*id, &**child)));
            m.frame_depth = depth + 1;
            run(m, &handles, depth + 1);
            m.frame_depth = depth;
        } else if roll < 26 && depth > 0 {
            break;
        } else {
            let mut handles = outer.to_vec();
            handles.extend(children.iter().map(|(id, child)| (*id, &**child)));
            // Frees catch up with allocations once many blocks are live.
            let busy = m.order.len() > 1500;
            match m.rng.below(100) {
                0..=39 if !busy => m.allocate(&handles),
                0..=39 => m.free(&handles),
                40..=59 => m.reallocate(&handles),
                60..=87 => m.free(&handles),
                88..=97 => m.refused_free(&handles),
                _ => m.trim(&handles),
            }
            if m.step % 16 == 0 {
                m.verify_all(&handles, m.step % 64 == 0);
            }
            if m.step % 512 == 0 {
                for block in m.blocks.values() {
                    m.assert_intact(block);
                }
            }
        }
    }
    while let Some((id, child)) = children.pop() {
        drop_child(m, outer, id, child);
    }
    m.verify_all(outer, true);
}

/// Drops a child with whatever blocks it still has, and checks that every ancestor gets back
/// exactly what the child held.
fn drop_child(m: &mut Model, outer: &Handles<'_>, id: usize, child: ChildPool<'_>) {
    let held = child.stats().bytes_held;
    assert_eq!(held, m.pools[id].held, "{}: child {id} changed untouched", m.at());
    for block in m.blocks.values().filter(|block| block.pool == id) {
        m.assert_intact(block);
    }
    drop(child);
    m.seen.child_drops_with_blocks += usize::from(m.pools[id].live > 0);
    m.forget_blocks_of(id);
    m.pools[id].alive = false;
    let ancestors = m.chain(id).split_off(1);
    m.verify_chain(outer, &ancestors, Change::Down(held));
}

/// Runs `STEPS` operations from `seed`, on a succession of root pools with and without limits,
/// each reset or dropped in turn.
fn run_seed(seed: u64) {
    let mut m = Model::new(seed, STEPS);
    while m.steps_left > 0 {
        let limit = match m.rng.below(3) {
            0 => None,
            _ => Some((50 + m.rng.below(400)) * CHUNK_SIZE + m.rng.below(CHUNK_SIZE)),
        };
        let mut root = match limit {
            Some(limit) => HeapPool::with_limit(limit),
            None => HeapPool::new(),
        };
        let id = m.add_pool(None, limit);
        for _ in 0..3 {
            // Each round spends a share of the steps, then the root is reset with whatever
            // blocks it still has.
            let budget = m.steps_left.min(STEPS / 6 + 1);
            let rest = m.steps_left - budget;
            m.steps_left = budget;
            run(&mut m, &[(id, &root)], 0);
            m.steps_left += rest;
            let spans = m.pools[id].large_spans;
            let chunks = root.stats().chunks;
            root.reset();
            m.forget_blocks_of(id);
            m.pools[id].kept = chunks;
            assert_eq!(root.stats().chunks, chunks, "{}: a reset dropped chunks", m.at());
            m.verify_chain(&[(id, &root)], &[id], Change::Down(spans));
            root.check().unwrap();
        }
        drop(root);
        m.pools[id].alive = false;
    }
    assert!(m.step >= STEPS);
    if !cfg!(miri) {
        let seen = &m.seen;
        let counts = [
            seen.served,
            seen.refused_by_limit,
            seen.never,
            seen.in_place,
            seen.moved,
            seen.resize_refused,
            seen.freed,
            seen.refused_frees,
            seen.trims,
            seen.children,
            seen.limited_children,
            seen.sourced_children,
            seen.child_resets,
            seen.child_drops_with_blocks,
        ];
        assert!(counts.iter().all(|&count| count > 0), "seed {seed:#x}: {seen:?}");
        assert!(seen.deepest >= 2, "seed {seed:#x}: {seen:?}");
    }
    eprintln!("seed {seed:#x}: {:?}", m.seen);
}

#[test]
fn model_seed_1() {
    run_seed(1);
}

#[test]
fn model_seed_2() {
    run_seed(0x5eed_0002);
}

#[test]
fn model_seed_3() {
    run_seed(0xdead_beef_0003);
}

#[test]
fn model_seed_4() {
    run_seed(0x0123_4567_89ab_cdef);
}
