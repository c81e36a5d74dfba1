//! Valgrind client requests: how an engine tells memcheck which bytes of its chunks belong to a
//! block in use, so that memcheck reports a use after free or an overrun inside a pool the way it
//! does for `malloc`.
//!
//! Each engine is a memcheck *mempool* whose pieces are the blocks in use, registered with the
//! size the caller asked for; the rest of a block's slot becomes accessible when the caller asks
//! for the block's usable size. Outside the blocks in use, the bytes of a chunk after its header
//! are kept inaccessible; the engine opens the link word of a free block only around its own
//! reads and writes of it.
//!
//! An engine gives a chunk back to its source accessible, as it got it. A source that keeps it
//! for reuse closes it but for the word that links it to the next, and opens it as it hands it
//! out again: a `SyncPool`'s or `LockedPool`'s stripes here, and the heap crate's global and OS
//! sources, whose large-chunk caches also close the bytes by which they round a large chunk's
//! length up, past the chunk its engine knows of (`plumbing::memcheck_no_access` and
//! `plumbing::memcheck_defined`). So a read or a write of a block of a pool that has given its
//! chunk back, or past a large block, is reported. A chunk that a shared pool's child gives back
//! to the shared pool is the shared pool's memory again, which memcheck does not watch, as it does
//! not watch the shared pool's own blocks: a use of a block in it after that goes unreported.
//!
//! The requests are valgrind's "magic" instruction sequence, written out here rather than taken
//! from `valgrind.h` through a C shim: it is five instructions, needs neither `std` nor a C
//! toolchain, and outside valgrind it does nothing and returns the default value.

#[cfg(target_arch = "x86_64")]
use core::arch::asm;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the `valgrind` feature issues valgrind's client requests on x86_64 only");

// Request codes from `valgrind.h` and `memcheck.h` (valgrind 3.19; the numbers are an ABI that
// valgrind keeps stable).
const RUNNING_ON_VALGRIND: usize = 0x1001;
const CREATE_MEMPOOL: usize = 0x1303;
const DESTROY_MEMPOOL: usize = 0x1304;
const MEMPOOL_ALLOC: usize = 0x1305;
const MEMPOOL_FREE: usize = 0x1306;
const MEMPOOL_TRIM: usize = 0x1307;
const MEMPOOL_CHANGE: usize = 0x1309;
const MEMPOOL_EXISTS: usize = 0x130a;
/// `VG_USERREQ_TOOL_BASE('M', 'C')`: memcheck's own requests are numbered from here.
const MEMCHECK: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
const MAKE_MEM_NOACCESS: usize = MEMCHECK;
const MAKE_MEM_UNDEFINED: usize = MEMCHECK + 1;
const MAKE_MEM_DEFINED: usize = MEMCHECK + 2;
const GET_VBITS: usize = MEMCHECK + 8;

/// Issues one client request and returns valgrind's answer, or `default` when the program does
/// not run under valgrind.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn request(default: usize, code: usize, args: [usize; 5]) -> usize {
    let block = [code, args[0], args[1], args[2], args[3], args[4]];
    let result;
    // SAFETY: the sequence rotates `rdi` by 128 bits in all, leaving it as it was, and
    // `xchg rbx, rbx` exchanges a register with itself: natively nothing changes but the flags.
    // Under valgrind, the sequence is the client-request trap: valgrind reads the six words at
    // `rax` and writes its answer to `rdx`. The requests this module makes only change
    // valgrind's shadow state, except `GET_VBITS`, which writes into a buffer of the caller's
    // that the memory clobber covers.
    unsafe {
        asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") block.as_ptr(),
            inout("rdx") default => result,
            options(nostack),
        );
    }
    result
}

/// Stands in for the request elsewhere, so that the `compile_error!` above is the only error.
#[cfg(not(target_arch = "x86_64"))]
fn request(default: usize, _code: usize, _args: [usize; 5]) -> usize {
    default
}

/// Whether the program runs under valgrind.
pub(crate) fn running() -> bool {
    request(0, RUNNING_ON_VALGRIND, [0; 5]) != 0
}

/// Makes `pool` the handle of a new memcheck mempool, unless one with that handle exists, and
/// says whether it made one. Blocks are not zeroed and have no red zones: the size classes pack
/// them edge to edge, and the bytes past a block's requested size serve as its red zone.
pub(crate) fn create_pool(pool: *const ()) -> bool {
    if request(0, MEMPOOL_EXISTS, [pool.addr(), 0, 0, 0, 0]) != 0 {
        return false;
    }
    request(0, CREATE_MEMPOOL, [pool.addr(), 0, 0, 0, 0]);
    true
}

/// Forgets a mempool; its blocks become inaccessible.
pub(crate) fn destroy_pool(pool: *const ()) {
    request(0, DESTROY_MEMPOOL, [pool.addr(), 0, 0, 0, 0]);
}

/// Registers `len` bytes at `block` as a block of `pool` in use: accessible, contents undefined.
pub(crate) fn alloc(pool: *const (), block: *const u8, len: usize) {
    request(0, MEMPOOL_ALLOC, [pool.addr(), block.addr(), len, 0, 0]);
}

/// Unregisters a block of `pool`: its bytes become inaccessible. Memcheck reports a block that
/// `pool` does not have in use.
pub(crate) fn free(pool: *const (), block: *const u8) {
    request(0, MEMPOOL_FREE, [pool.addr(), block.addr(), 0, 0, 0]);
}

/// Changes the length of `pool`'s record of the block at `block` to `len`, leaving its bytes as
/// they are: what a later free makes inaccessible.
pub(crate) fn resize(pool: *const (), block: *const u8, len: usize) {
    request(0, MEMPOOL_CHANGE, [pool.addr(), block.addr(), block.addr(), len, 0]);
}

/// Unregisters every block of `pool` at once.
pub(crate) fn free_all(pool: *const ()) {
    // Trimming to an empty range frees every block outside it, which is all of them.
    request(0, MEMPOOL_TRIM, [pool.addr(), 0, 0, 0, 0]);
}

/// Marks `len` bytes at `at` inaccessible.
pub(crate) fn no_access(at: *const u8, len: usize) {
    request(0, MAKE_MEM_NOACCESS, [at.addr(), len, 0, 0, 0]);
}

/// Marks `len` bytes at `at` accessible, with undefined contents.
pub(crate) fn undefined(at: *const u8, len: usize) {
    request(0, MAKE_MEM_UNDEFINED, [at.addr(), len, 0, 0, 0]);
}

/// Marks `len` bytes at `at` accessible, with defined contents.
pub(crate) fn defined(at: *const u8, len: usize) {
    request(0, MAKE_MEM_DEFINED, [at.addr(), len, 0, 0, 0]);
}

/// Whether the byte at `at` is accessible. Unlike memcheck's checking requests, asking for the
/// validity bits of a byte reports no error when it is inaccessible.
fn accessible(at: *const u8) -> bool {
    let mut bits = 0u8;
    let answer = request(0, GET_VBITS, [at.addr(), (&raw mut bits).addr(), 1, 0, 0]);
    answer == 1
}

/// The registered length of the in-use block at `block`, whose slot holds `usable` bytes: the
/// length of its accessible prefix, since the rest of a slot is kept inaccessible. `usable`
/// when the program does not run under valgrind.
pub(crate) fn block_len(block: *const u8, usable: usize) -> usize {
    if !running() {
        return usable;
    }
    // The accessible bytes of a block in use are a prefix of its slot; find where it ends.
    let (mut accessible_up_to, mut inaccessible_from) = (0, usable);
    while accessible_up_to < inaccessible_from {
        let middle = accessible_up_to + (inaccessible_from - accessible_up_to) / 2;
        if accessible(block.wrapping_add(middle)) {
            accessible_up_to = middle + 1;
        } else {
            inaccessible_from = middle;
        }
    }
    accessible_up_to
}
