//! [`ShmMutex`], a mutex for values in a shared pool, on a lock word of the same kind as the
//! pool's own, naming its holder's process by its identity in the pool, with the same takeover
//! protocol: a holder that dies hands the next locker a guard that says so, never a silent
//! unlock.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::{PhantomData, PhantomPinned};
use core::ops::{Deref, DerefMut};
use core::ptr::{addr_of_mut, NonNull};
use std::time::Duration;

use rustix::io::Errno;

use crate::identity::Kernel;
use crate::layout::MutexLock;
use crate::lock::{lock_robust, unlock_robust, Acquired, ProcessLock};
use crate::registry;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys;
use crate::{ShmBox, ShmError, ShmOffset, ShmPool, ShmSafe};

/// Set in a mutex's state when a holder's death loses its value
/// ([`ShmMutex::new_poisoning_in`]).
const POISONING: u32 = 1;
/// Set in a poisoning mutex's state once a holder has died holding it.
const POISONED: u32 = 2;

/// A mutex that lives in a shared pool and guards a `T` there, for the threads of every
/// process that maps the pool.
///
/// Its lock is a word of the kind the pool's own lock is (see "The lock" in
/// `docs/architecture.md`): it names the holder's process by the process's identity in the
/// pool, which no pid namespace and no reuse of a pid can make another process's. When a
/// holder's process dies, a locker waiting for it, which asks every 5 ms whether the holder
/// lives, takes the mutex over (unless the holder had no identity of its own, as under "Whose
/// memory is whose" in the [crate docs](crate), which nothing can tell the death of), and its
/// guard reports the death ([`ShmMutexGuard::holder_died`]); the value may be half changed, and
/// that locker decides what to do about it. The mutex is usable again after that guard. A
/// thread that locks a mutex it holds already gets [`ShmError::WouldDeadlock`] rather than
/// waiting for itself; a thread that ends holding one (its guard forgotten) leaves it held for
/// as long as its process lives, as a forgotten guard of `std::sync::Mutex` does.
///
/// A mutex is made in place, in the pool: [`ShmMutex::new_in`] or
/// [`ShmPool::insert_named_mutex`] for a [`ShmSafe`] value, which can be named and reached from
/// any process that maps the pool; [`ShmMutex::new_poisoning_in`] for any other value (a
/// collection in `&ShmPool`, say), which is for this process and the processes forked from it
/// afterwards, through the handle they inherit (see [`ShmMutexBox`]). A `ShmSafe` value is valid
/// whatever bytes a dying holder left in it; any other may not be a value at all once a holder
/// died in the middle of changing it (a map whose table was freed and not yet replaced), so a
/// mutex made by `new_poisoning_in` never hands it out again: every lock after such a death
/// fails with [`ShmError::Poisoned`].
///
/// A guard belongs to the thread that took the mutex: a copy of it that a fork leaves in the
/// child releases nothing there, and the parent's hold stands.
///
/// # Examples
/// ```
/// use melon_alloc_shm::{ShmMutex, ShmPool};
///
/// let shm = ShmPool::new(1 << 20)?;
/// let balance = ShmMutex::new_in(100i64, &shm)?;
/// {
///     let mut guard = balance.lock()?;
///     assert!(!guard.holder_died());
///     *guard -= 30;
/// }
/// assert_eq!(*balance.lock()?, 70);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[repr(C)]
pub struct ShmMutex<T> {
    lock: MutexLock,
    /// Times a locker found the previous holder dead.
    takeovers: AtomicU64,
    /// [`POISONING`] for a mutex whose value a holder's death loses, with [`POISONED`] once one
    /// has died holding it.
    state: AtomicU32,
    value: UnsafeCell<T>,
    /// A mutex must not move once made, since other threads and processes lock it where it is:
    /// no `&mut ShmMutex` is handed out where `Unpin` is asked for (such as [`ShmBox`]'s
    /// `DerefMut`).
    _pinned: PhantomPinned,
}

// SAFETY: the lock lets one holder at a time reach the value, as `std::sync::Mutex` does.
unsafe impl<T: Send> Sync for ShmMutex<T> {}
// SAFETY: the value moves with the mutex, which holds nothing of a thread's but while locked.
unsafe impl<T: Send> Send for ShmMutex<T> {}

// SAFETY: (1) the lock word, the holder's token, the counters and the state are atomics, and
// every bit pattern of them is a state the operations handle: a word naming an identity no
// live process holds is taken over as a dead holder's, one naming the anonymous identity keeps
// lockers waiting until their timeouts as a live holder would, and unknown state bits are
// ignored;
// (2) `T` is `ShmSafe`; (3) nothing has a destructor.
unsafe impl<T: ShmSafe> ShmSafe for ShmMutex<T> {}

impl<T: ShmSafe> ShmMutex<T> {
    /// Makes a mutex holding `value` in a new block of `pool`. A holder that dies hands the next
    /// locker the value as it left it ([`ShmMutexGuard::holder_died`]), valid for a `ShmSafe`
    /// type whatever its bytes.
    ///
    /// # Errors
    /// [`ShmError::OutOfMemory`] or [`ShmError::Fragmented`] when there is no room; the pool
    /// lock's errors.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let sessions = melon_alloc_shm::ShmMutex::new_in([0u64; 16], &shm)?;
    /// sessions.lock()?[2] = 9;
    /// assert_eq!(sessions.lock()?.iter().sum::<u64>(), 9);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn new_in(value: T, pool: &ShmPool) -> Result<ShmMutexBox<'_, T>, ShmError> {
        Self::make_in(value, pool, 0)
    }
}

impl<T> ShmMutex<T> {
    /// Makes a mutex holding `value`, of any type, in a new block of `pool`; a holder's death
    /// poisons it for good. The value may hold pointers into the pool (a collection in
    /// `&ShmPool`), which a holder that dies in the middle of a change can leave pointing at
    /// blocks already freed: after such a death every lock fails with [`ShmError::Poisoned`],
    /// and dropping the box does not drop the value, whose blocks stay in the pool. Its lock
    /// also maps the pages other processes grew the pool by, where the value's pointers may lead.
    ///
    /// # Errors
    /// As for [`new_in`](ShmMutex::new_in).
    ///
    /// # Examples
    /// ```
    /// use allocator_api2::vec::Vec;
    /// use melon_alloc_shm::{ShmMutex, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// let log = ShmMutex::new_poisoning_in(Vec::new_in(&shm), &shm)?;
    /// log.lock()?.extend_from_slice(b"ready");
    /// assert_eq!(&log.lock()?[..], b"ready");
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn new_poisoning_in(value: T, pool: &ShmPool) -> Result<ShmMutexBox<'_, T>, ShmError> {
        Self::make_in(value, pool, POISONING)
    }

    /// Makes a mutex holding `value` in a new block of `pool`, with `state` as its state.
    fn make_in(value: T, pool: &ShmPool, state: u32) -> Result<ShmMutexBox<'_, T>, ShmError> {
        // SAFETY: `init` writes every field of the mutex at its final place.
        let boxed = unsafe { ShmBox::new_with(pool, |place| Self::init(place, value, state)) }?;
        Ok(ShmMutexBox { pool, mutex: boxed.into_raw() })
    }

    /// Writes an unlocked mutex holding `value` at `place`, with `state` as its state (0 or
    /// [`POISONING`]).
    ///
    /// # Safety
    /// `place` is valid for writes of a `ShmMutex<T>` and aligned for it, and nothing uses it
    /// yet.
    pub(crate) unsafe fn init(place: *mut Self, value: T, state: u32) {
        // SAFETY: `place` is valid for writes of every field (caller).
        unsafe {
            addr_of_mut!((*place).lock.word).write(AtomicU32::new(0));
            addr_of_mut!((*place).lock.holder).write(AtomicU64::new(0));
            addr_of_mut!((*place).takeovers).write(AtomicU64::new(0));
            addr_of_mut!((*place).state).write(AtomicU32::new(state));
            addr_of_mut!((*place).value).write(UnsafeCell::new(value));
            addr_of_mut!((*place)._pinned).write(PhantomPinned);
        }
    }

    /// Takes the mutex, waiting as long as it takes.
    ///
    /// # Errors
    /// [`ShmError::WouldDeadlock`] when this thread holds it already; [`ShmError::Poisoned`]
    /// for a mutex of [`new_poisoning_in`](ShmMutex::new_poisoning_in) a holder died holding;
    /// [`ShmError::Os`] when the system refuses to make this process's identity in the pool's
    /// file, or to map the pages a poisoning mutex's value may lead to.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let count = melon_alloc_shm::ShmMutex::new_in(0u32, &shm)?;
    /// let mut guard = count.lock()?;
    /// *guard += 1;
    /// assert!(matches!(count.lock(), Err(melon_alloc_shm::ShmError::WouldDeadlock)));
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn lock(&self) -> Result<ShmMutexGuard<'_, T>, ShmError> {
        self.lock_within(None)
    }

    /// Takes the mutex, waiting at most `timeout` for a holder that is alive.
    ///
    /// # Errors
    /// [`ShmError::LockTimeout`] when it stayed held; otherwise as for
    /// [`lock`](ShmMutex::lock).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let flag = melon_alloc_shm::ShmMutex::new_in(0u8, &shm)?;
    /// let held = flag.lock()?;
    /// let other = std::thread::scope(|scope| {
    ///     scope.spawn(|| flag.try_lock_for(Duration::from_millis(10)).map(|_| ())).join()
    /// });
    /// assert!(matches!(other.unwrap(), Err(melon_alloc_shm::ShmError::LockTimeout { .. })));
    /// drop(held);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> Result<ShmMutexGuard<'_, T>, ShmError> {
        self.lock_within(Some(timeout))
    }

    fn lock_within(&self, timeout: Option<Duration>) -> Result<ShmMutexGuard<'_, T>, ShmError> {
        let (token, process) = sys::thread_and_process_tokens();
        if self.lock.holder.load(Ordering::Relaxed) == token {
            return Err(ShmError::WouldDeadlock);
        }
        let poisoning = self.state.load(Ordering::Relaxed) & POISONING != 0;
        let addr = core::ptr::from_ref(self).cast::<u8>();
        // A free mutex, in the pool this thread last found a mutex in, is taken with no more
        // than its compare-and-swap: that needs only this process's identity in the pool,
        // remembered, and the pool's registration, which tells it is still that pool. A
        // poisoning mutex maps the pages the pool grew by, which takes the pool itself.
        if !poisoning {
            if let Some(me) = remembered_identity(addr, process) {
                let word = ProcessLock::new(&self.lock.word, me, Kernel { pool: None });
                if word.try_lock().is_ok() {
                    return Ok(self.held(me, token, false));
                }
            }
        }
        // The pool the mutex lies in gives this process's identity, and asks whether a holder
        // lives; it stays registered until the mutex is taken.
        let taken = registry::with_pool_found(addr, |shared, found| {
            let me = shared.identity_here()?;
            if let Some(found) = found {
                remember_identity(found, process, me);
            }
            let mut holder_died = false;
            lock_robust(&shared.word_lock(&self.lock.word, me), timeout, &self.takeovers, || {
                holder_died = true;
                // Before the takeover is over: a locker that dies in between leaves the death
                // for the next one to find again.
                if poisoning {
                    self.state.fetch_or(POISONED, Ordering::Relaxed);
                }
            })?;
            let guard = self.held(me, token, holder_died);
            if poisoning {
                if self.state.load(Ordering::Relaxed) & POISONED != 0 {
                    // Released by the guard, without the value ever being reached.
                    return Err(ShmError::Poisoned);
                }
                // The value's pointers lead into the pool, perhaps into pages another process
                // grew it by and this one has not mapped: mapped now, before it is handed out.
                shared.map_grown()?;
            }
            Ok(guard)
        });
        // A mutex lies in a pool this process maps for as long as it can be reached.
        taken.unwrap_or_else(|| {
            Err(ShmError::os("finding the pool of a shared mutex", Errno::INVAL))
        })
    }

    /// Times a locker found the previous holder dead, since the mutex was made.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let mutex = melon_alloc_shm::ShmMutex::new_in(0u8, &shm)?;
    /// assert_eq!(mutex.takeovers(), 0);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use]
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }
}

impl<T> ShmMutex<T> {
    /// The guard of a lock word just taken under identity `me` by the thread whose token is
    /// `token`, which the mutex records as its holder.
    fn held(&self, me: u32, token: u64, holder_died: bool) -> ShmMutexGuard<'_, T> {
        self.lock.holder.store(token, Ordering::Relaxed);
        ShmMutexGuard { mutex: self, me, token, holder_died, _not_send: PhantomData }
    }
}

/// The pool this thread last found a mutex in, in the registry, with the process it was found
/// in and that process's identity in it: a fork's child, whose identity differs, finds another
/// process token here and looks the pool up again.
#[derive(Clone, Copy)]
struct Remembered {
    found: registry::Found,
    process: u64,
    me: u32,
}

std::thread_local! {
    static REMEMBERED: core::cell::Cell<Option<Remembered>> = const { core::cell::Cell::new(None) };
}

/// This process's identity in the pool that holds `addr`, if the calling thread remembers it
/// from that pool's current registration, in this process (`process` is its token), with `addr`
/// in what the pool had mapped when it was found.
#[inline]
fn remembered_identity(addr: *const u8, process: u64) -> Option<u32> {
    let remembered = REMEMBERED.try_with(core::cell::Cell::get).ok().flatten()?;
    (remembered.process == process && remembered.found.holds(addr)).then_some(remembered.me)
}

/// Remembers, for the calling thread, this process's identity `me` in the pool found at `found`.
fn remember_identity(found: registry::Found, process: u64, me: u32) {
    // The cell has no destructor, so it is there for as long as the thread runs; a thread
    // without it would only look its pools up every time.
    let _ = REMEMBERED.try_with(|cell| cell.set(Some(Remembered { found, process, me })));
}

impl<T> fmt::Debug for ShmMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutex").finish_non_exhaustive()
    }
}

/// The value of a [`ShmMutex`], held: dropping the guard releases the mutex.
///
/// # Examples
/// ```
/// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
/// let mutex = melon_alloc_shm::ShmMutex::new_in([1u16; 4], &shm)?;
/// let guard = mutex.lock()?;
/// assert_eq!(guard.len(), 4);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
#[must_use = "the mutex is released as soon as the guard is dropped"]
pub struct ShmMutexGuard<'a, T> {
    mutex: &'a ShmMutex<T>,
    /// This process's identity in the pool, which the word names while the guard holds it.
    me: u32,
    /// The token of the thread that took the mutex, which the mutex keeps while it holds it.
    token: u64,
    holder_died: bool,
    /// The hold belongs to the thread that took it.
    _not_send: PhantomData<*const ()>,
}

impl<T> ShmMutexGuard<'_, T> {
    /// Whether the previous holder died holding the mutex: the value may be half changed, and
    /// this holder should check it, or set it back to something it can trust.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let mutex = melon_alloc_shm::ShmMutex::new_in(0u32, &shm)?;
    /// assert!(!mutex.lock()?.holder_died());
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use]
    pub fn holder_died(&self) -> bool {
        self.holder_died
    }
}

// SAFETY: shared access to the guard is shared access to the value, which `T: Sync` allows.
unsafe impl<T: Sync> Sync for ShmMutexGuard<'_, T> {}

impl<T> Deref for ShmMutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the mutex, so no other holder reaches the value.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for ShmMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` is the only access through this guard.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for ShmMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Only the hold this guard is releases the mutex: the guard's thread, while the mutex
        // still keeps its token. A copy of the guard that a fork left in a child has another
        // thread's token than the child's, so it leaves the mutex alone, whoever holds it now:
        // the parent, whose hold stands and still hears `WouldDeadlock`, or the child itself,
        // which took it since. A load and a store tell, without a locked instruction: only a
        // holder writes the token, its own once it holds the word and 0 before it lets go, so a
        // thread reads its own token there only while it holds the mutex.
        let lock = &self.mutex.lock;
        if self.token == sys::thread_token() && lock.holder.load(Ordering::Relaxed) == self.token {
            lock.holder.store(0, Ordering::Relaxed);
            // Released without the pool: a release asks nothing about holders.
            let word = ProcessLock::new(&lock.word, self.me, Kernel { pool: None });
            // The word names this process, whose thread this is: never refused.
            let _ = unlock_robust(&word);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ShmMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutexGuard")
            .field("value", &**self)
            .field("holder_died", &self.holder_died)
            .finish()
    }
}

impl ShmPool {
    /// Makes a [`ShmMutex`] holding `value` and publishes it under `name`, in one operation,
    /// as [`insert_named`](ShmPool::insert_named) does for other values.
    ///
    /// # Errors
    /// As for [`insert_named`](ShmPool::insert_named).
    ///
    /// # Examples
    /// ```
    /// use melon_alloc_shm::{ShmMutex, ShmPool};
    ///
    /// let shm = ShmPool::new(1 << 20)?;
    /// shm.insert_named_mutex("config", [0u32; 8])?;
    /// let config = shm.named::<ShmMutex<[u32; 8]>>("config")?.expect("inserted above");
    /// config.lock()?[0] = 3;
    /// assert_eq!(config.lock()?[0], 3);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    pub fn insert_named_mutex<T: ShmSafe>(
        &self,
        name: &str,
        value: T,
    ) -> Result<ShmOffset<ShmMutex<T>>, ShmError> {
        // SAFETY: `init` writes every field of the mutex at its final place, without using
        // the pool.
        unsafe {
            self.insert_named_with(name, |place: *mut ShmMutex<T>| ShmMutex::init(place, value, 0))
        }
    }
}

/// A [`ShmMutex`] in a block of its own, owned by this handle: [`ShmMutex::new_in`] and
/// [`ShmMutex::new_poisoning_in`] make it.
/// It gives shared access only, so the mutex never moves. Dropping it drops the value and frees
/// the block, unless a live holder keeps the mutex (a guard was leaked with `mem::forget`):
/// then the value and the block are left in the pool, for the holder may still use them. A
/// holder found dead does not keep it.
///
/// # Fork
/// A process forked while the box exists inherits the handle, and may lock the mutex through
/// it; only one process drops it, and a process that holds a guard when it forks must forget
/// the guard's copy in the child (or end it with `_exit`). A value with pointers (a collection
/// in `&ShmPool`) means the same in the processes forked after it was made, never in a process
/// that attached to the pool, and only while every pointer in it leads into the pool or to
/// what the processes inherited unchanged (the pool's handle): a block of one process's own
/// heap (a `Vec`, `Box` or `String` of the global allocator) that one process puts in the value
/// means nothing in the others, which must not reach it.
///
/// # Examples
/// ```
/// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
/// let before = shm.available();
/// let count = melon_alloc_shm::ShmMutex::new_in(0u64, &shm)?;
/// *count.lock()? += 1;
/// assert_eq!(*count.lock()?, 1);
/// drop(count);
/// assert_eq!(shm.available(), before);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
///
/// A mutex never moves, so the box hands out no `&mut` to it:
/// ```compile_fail,E0596
/// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
/// let mut a = melon_alloc_shm::ShmMutex::new_in(0u8, &shm)?;
/// let mut b = melon_alloc_shm::ShmMutex::new_in(0u8, &shm)?;
/// std::mem::swap(&mut *a, &mut *b);
/// # Ok::<(), melon_alloc_shm::ShmError>(())
/// ```
pub struct ShmMutexBox<'pool, T> {
    pool: &'pool ShmPool,
    mutex: NonNull<ShmMutex<T>>,
}

// SAFETY: the box owns the mutex as a `Box` would, and the pool is `Sync`.
unsafe impl<T: Send> Send for ShmMutexBox<'_, T> {}
// SAFETY: shared access to the box is shared access to the mutex, which is `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for ShmMutexBox<'_, T> {}

impl<T> ShmMutexBox<'_, T> {
    /// The mutex's offset in the pool, which a process that maps it follows with
    /// [`ShmPool::get`] while this box keeps it.
    ///
    /// # Examples
    /// ```
    /// let shm = melon_alloc_shm::ShmPool::new(1 << 20)?;
    /// let mutex = melon_alloc_shm::ShmMutex::new_in(5u32, &shm)?;
    /// // SAFETY: the box keeps the mutex for the reference's life.
    /// let same = unsafe { shm.get(mutex.offset()) }?;
    /// assert_eq!(*same.lock()?, 5);
    /// # Ok::<(), melon_alloc_shm::ShmError>(())
    /// ```
    #[must_use]
    pub fn offset(&self) -> ShmOffset<ShmMutex<T>> {
        ShmOffset::from_raw(
            self.pool.shared().locked_offset_of(self.mutex.as_ptr().cast()).unwrap_or(0),
        )
    }
}

impl<T> Deref for ShmMutexBox<'_, T> {
    type Target = ShmMutex<T>;

    fn deref(&self) -> &ShmMutex<T> {
        // SAFETY: the box owns a mutex made in place, alive until the box is dropped.
        unsafe { self.mutex.as_ref() }
    }
}

impl<T> Drop for ShmMutexBox<'_, T> {
    fn drop(&mut self) {
        let mutex = &**self;
        let shared = self.pool.shared();
        // A process that can take none of the pool's locks leaves the block as it is.
        let Ok(me) = shared.identity_here() else { return };
        let word = shared.word_lock(&mutex.lock.word, me);
        // Taken at once, or from a holder found dead; a live holder (a thread that forgot its
        // guard, say) keeps it, and the block stays as it is, for the pool's life. A free word
        // is taken by the try, without the waiters' bit that the timed lock takes it with and
        // that the release would answer with a wake nobody waits for.
        let Ok(acquired) = word.try_lock().or_else(|_| word.lock(Some(Duration::ZERO))) else {
            return;
        };
        let _ = unlock_robust(&word);
        let state = mutex.state.load(Ordering::Relaxed);
        let lost =
            state & POISONING != 0 && (state & POISONED != 0 || acquired == Acquired::OwnerDied);
        if !lost {
            // SAFETY: the box owns the value, dropped once, here; nothing reaches it after. A
            // value a holder's death may have left invalid is not dropped (above): its blocks
            // stay in the pool.
            unsafe { mutex.value.get().drop_in_place() };
        }
        // SAFETY: the box owns the block, which nothing uses after the value is dropped.
        let _ = unsafe { self.pool.try_free(self.mutex.cast()) };
    }
}

impl<T> fmt::Debug for ShmMutexBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutexBox").finish_non_exhaustive()
    }
}
