//! The producer/consumer workload's queues: for each pair of processes, a single-producer,
//! single-consumer ring of block offsets, in a mapping made before the fork that the processes
//! share.
//!
//! A process waiting on its partner (for room in a full ring, for an offset in an empty one, or
//! for the last free) spins a few rounds and then yields its core, which is what lets the
//! partner run when the processes outnumber the cores. It gives up when the partner has marked
//! the ring abandoned, which a failing process does, or after a long wait without progress, so
//! that a partner that died cannot hang the run.

use std::hint::spin_loop;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Offsets one ring holds: the blocks in flight between a producer and its consumer, as many as
/// one process of the mixed workload holds at most.
pub(super) const CAPACITY: usize = super::MAX_LIVE;

/// Rounds of spinning, each twice as long as the one before, before a waiting process yields
/// its core.
const SPIN_ROUNDS: u32 = 6;

/// How long a process waits without progress before it gives up on its partner: far longer
/// than a descheduled partner takes to run again, even with eight processes per core.
const STALL: Duration = Duration::from_secs(60);

/// Why a wait ended without what it waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// The partner marked the ring abandoned: it failed.
    Abandoned,
    /// Nothing moved for [`STALL`].
    Stalled,
}

/// A counter alone on its cache line, so that the producer's writes and the consumer's do not
/// contend for one line.
#[repr(C, align(64))]
struct Line(AtomicU64);

/// One ring: offsets pushed by one process and popped by another.
///
/// Every field is an atomic integer, so the all-zero bytes of a new anonymous mapping are an
/// empty ring.
#[repr(C)]
pub(super) struct Ring {
    /// Offsets taken out so far, each after its block was dealt with: written by the consumer
    /// alone.
    head: Line,
    /// Offsets put in so far: written by the producer alone.
    tail: Line,
    /// Set by either process when it fails, so that the other stops waiting for it.
    abandoned: AtomicBool,
    /// The offsets, at their count modulo [`CAPACITY`].
    slots: [AtomicU64; CAPACITY],
}

impl Ring {
    /// The producer's end of the ring. Only one process may hold it.
    pub(super) fn producer(&self) -> Producer<'_> {
        let tail = self.tail.0.load(Ordering::Relaxed);
        Producer { ring: self, tail, head: self.head.0.load(Ordering::Acquire) }
    }

    /// The consumer's end of the ring. Only one process may hold it.
    pub(super) fn consumer(&self) -> Consumer<'_> {
        let head = self.head.0.load(Ordering::Relaxed);
        Consumer { ring: self, head, tail: self.tail.0.load(Ordering::Acquire) }
    }

    /// Tells the partner to stop waiting: this process failed.
    pub(super) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

/// The end of a ring that puts offsets in, with its own count and the last count of the
/// consumer's it read, so that it reads the consumer's cache line only when the ring looks full.
pub(super) struct Producer<'ring> {
    ring: &'ring Ring,
    /// Offsets put in so far.
    tail: u64,
    /// Offsets taken out, as last read.
    head: u64,
}

impl Producer<'_> {
    /// Puts `offset` in, unless the ring is full.
    fn try_push(&mut self, offset: u64) -> bool {
        if self.tail - self.head == CAPACITY as u64 {
            // Acquire: the consumer is done with the slots it gave back (their blocks freed).
            self.head = self.ring.head.0.load(Ordering::Acquire);
            if self.tail - self.head == CAPACITY as u64 {
                return false;
            }
        }
        self.ring.slots[self.tail as usize % CAPACITY].store(offset, Ordering::Relaxed);
        self.tail += 1;
        // Release: the offset, and what the producer wrote into the block, are there before the
        // consumer sees the count.
        self.ring.tail.0.store(self.tail, Ordering::Release);
        true
    }

    /// Puts `offset` in, waiting for room.
    pub(super) fn push(&mut self, offset: u64) -> Result<(), Stop> {
        let mut backoff = Backoff::new();
        while !self.try_push(offset) {
            backoff.wait(self.ring)?;
        }
        Ok(())
    }

    /// Waits until the consumer has taken out and dealt with every offset put in.
    pub(super) fn drain(&mut self) -> Result<(), Stop> {
        let mut backoff = Backoff::new();
        loop {
            self.head = self.ring.head.0.load(Ordering::Acquire);
            if self.head == self.tail {
                return Ok(());
            }
            backoff.wait(self.ring)?;
        }
    }
}

/// The end of a ring that takes offsets out, with its own count and the last count of the
/// producer's it read, so that it reads the producer's cache line only when the ring looks
/// empty.
pub(super) struct Consumer<'ring> {
    ring: &'ring Ring,
    /// Offsets taken out so far.
    head: u64,
    /// Offsets put in, as last read.
    tail: u64,
}

impl Consumer<'_> {
    /// Hands the oldest offset to `deal` and takes it out once `deal` returns, so that the
    /// ring's bound on blocks in flight holds until each block is freed. `None` when the ring is
    /// empty.
    fn try_pop<R>(&mut self, deal: impl FnOnce(u64) -> R) -> Option<R> {
        if self.head == self.tail {
            // Acquire: pairs with the producer's release of its count.
            self.tail = self.ring.tail.0.load(Ordering::Acquire);
            if self.head == self.tail {
                return None;
            }
        }
        let result = deal(self.ring.slots[self.head as usize % CAPACITY].load(Ordering::Relaxed));
        self.head += 1;
        // Release: whatever `deal` did (the free) happens before the producer sees the slot
        // given back.
        self.ring.head.0.store(self.head, Ordering::Release);
        Some(result)
    }

    /// Hands the oldest offset to `deal` and takes it out, waiting for one.
    pub(super) fn pop<R>(&mut self, mut deal: impl FnMut(u64) -> R) -> Result<R, Stop> {
        let mut backoff = Backoff::new();
        loop {
            if let Some(result) = self.try_pop(&mut deal) {
                return Ok(result);
            }
            backoff.wait(self.ring)?;
        }
    }
}

/// A wait for the partner: spinning first, then yielding the core.
struct Backoff {
    round: u32,
    /// When the yielding began.
    since: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Self { round: 0, since: None }
    }

    /// Waits a little, unless the partner has given up or nothing moved for too long.
    fn wait(&mut self, ring: &Ring) -> Result<(), Stop> {
        if ring.abandoned.load(Ordering::Acquire) {
            return Err(Stop::Abandoned);
        }
        if self.round < SPIN_ROUNDS {
            for _ in 0..1u32 << self.round {
                spin_loop();
            }
            self.round += 1;
            return Ok(());
        }
        std::thread::yield_now();
        if self.since.get_or_insert_with(Instant::now).elapsed() > STALL {
            return Err(Stop::Stalled);
        }
        Ok(())
    }
}

/// The rings of every pair, in an anonymous shared mapping made before the fork: the processes
/// forked after it see the same rings.
pub(super) struct Rings {
    base: NonNull<Ring>,
    count: usize,
    /// Bytes mapped.
    len: usize,
}

impl Rings {
    /// `count` empty rings.
    pub(super) fn new(count: usize) -> Result<Self, String> {
        let len = size_of::<Ring>() * count.max(1);
        // SAFETY: asks for a new mapping at an address of the kernel's choice, so no existing
        // memory is touched.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("cannot map the rings: {}", std::io::Error::last_os_error()));
        }
        let base = NonNull::new(base.cast::<Ring>()).ok_or("mmap returned null")?;
        Ok(Self { base, count, len })
    }

    /// The ring of pair `index`, if there is one.
    pub(super) fn get(&self, index: usize) -> Option<&Ring> {
        if index >= self.count {
            return None;
        }
        // SAFETY: 1. the mapping holds `count` rings, so ring `index` lies inside it; 2. it is
        // page-aligned, so aligned for `Ring`; 3. the kernel zeroed it, and all zeroes is an
        // empty ring; 4. it stays mapped while `self` lives, and every process reaches the ring
        // through atomics alone.
        Some(unsafe { self.base.add(index).as_ref() })
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: the mapping came from `mmap` with `len` bytes and is unmapped once, here; the
        // references `get` hands out borrow `self`, so none outlives it in this process.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_come_out_in_order_and_a_full_ring_refuses_more() {
        let rings = Rings::new(2).unwrap();
        let ring = rings.get(1).unwrap();
        assert!(rings.get(2).is_none());
        let (mut producer, mut consumer) = (ring.producer(), ring.consumer());
        // Twice round, so that the slots wrap.
        for round in 0..2u64 {
            for i in 0..CAPACITY as u64 {
                assert!(producer.try_push(round * 1000 + i));
            }
            assert!(!producer.try_push(1));
            for i in 0..CAPACITY as u64 {
                assert_eq!(consumer.pop(|offset| offset), Ok(round * 1000 + i));
            }
            assert_eq!(consumer.try_pop(|offset| offset), None);
        }
        assert_eq!(producer.drain(), Ok(()));
    }

    #[test]
    fn an_abandoned_ring_stops_the_wait() {
        let rings = Rings::new(1).unwrap();
        let ring = rings.get(0).unwrap();
        let mut producer = ring.producer();
        assert!(producer.try_push(7));
        ring.abandon();
        assert_eq!(producer.drain(), Err(Stop::Abandoned));
        let mut consumer = ring.consumer();
        assert_eq!(consumer.pop(|offset| offset), Ok(7));
        assert_eq!(consumer.pop(|offset| offset), Err(Stop::Abandoned));
    }
}
