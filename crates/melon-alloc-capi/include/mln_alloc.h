/*
 * mln_alloc.h: Melon's memory pool API, served by melon-alloc.
 *
 * A program written against Melon's mln_alloc.h includes this header instead and links
 * libmelon_alloc_capi.a (with -lpthread -ldl -lm -lrt -lgcc_s) or libmelon_alloc_capi.so.
 * The functions and their signatures are Melon's; where Melon's behaviour was a bug, this
 * library does the right thing, and the comments below say where.
 *
 * Thread safety, as in Melon: a pool and its heap ancestors (up to the root, or up to a
 * shared-memory pool) are used by one thread at a time, and freeing a block (mln_alloc_free,
 * or mln_alloc_re moving or freeing it) uses its pool. A child pool takes memory from and gives
 * it back to its heap parent without a lock, so a heap pool and the pools made from it form one
 * unit for threads: two threads may work at once in pools with different roots, or in pools
 * made from different child pools of one shared-memory pool. A shared-memory pool itself is
 * shared under its lock, by threads and processes alike.
 *
 * While a shared-memory pool exists in the process, every mln_alloc_free (and mln_alloc_re of a
 * block) looks the pointer up in a process-wide table under a read lock, shared with other
 * frees and held for a few instructions; making or destroying a shared-memory pool or a pool
 * made from one takes that table for writing, briefly. fork() waits until no thread is inside
 * those, so a forked process never finds them half done, whatever the other threads were
 * doing.
 *
 * A panic inside the library (a bug, or a broken contract such as two threads in one pool) aborts
 * the process, with its message on standard error: it never unwinds into the caller, and no call
 * goes on with a pool it may have left half changed.
 */
#ifndef MLN_ALLOC_H
#define MLN_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sizes: an unsigned integer as wide as a pointer. */
typedef size_t mln_size_t;

/* A memory pool. Opaque: only pointers to it are handled. */
typedef struct mln_alloc_s mln_alloc_t;

/* A lock or unlock callback of a shared-memory pool: called with the pool's `locker`,
 * returns 0 on success and non-zero on failure. */
typedef int (*mln_alloc_shm_lock_cb_t)(void *);

/* What mln_alloc_available_capacity returns for a pool without a limit. */
#define M_ALLOC_INFINITE_SIZE ((mln_size_t)~((mln_size_t)0))

/*
 * Makes a heap pool. With `parent == NULL` its memory comes from the system heap; otherwise
 * from `parent` (a heap pool or a shared-memory pool), so pools cascade. `capacity` is a hard
 * limit in bytes on the memory the pool takes from its parent or the system; 0 means none.
 * Blocks of up to 8160 bytes come from 16 KiB chunks, so a limit below 16 KiB hands out none
 * of them; a larger block takes a chunk of its own, its length and a header, which such a limit
 * may still hold (from a shared-memory pool, that chunk is a whole number of 4 KiB pages, which
 * the limit counts).
 * A child's memory also counts against every limited ancestor.
 *
 * A pool whose parent is a shared-memory pool calls the parent's lock and unlock callbacks
 * around each use of the parent (taking or giving back a chunk), so the caller must not hold
 * that lock when using it. If a callback fails, the call that needed the parent fails cleanly:
 * allocation returns NULL, and a chunk that could not be given back (Melon leaked it) is given
 * back the next time this process holds the lock: in a call on the shared-memory pool itself, when
 * a pool made from it takes or gives back a chunk, or when a pool made from it, or the pool
 * itself, is destroyed (which then takes the lock through the callbacks). Unlike Melon, making
 * the pool takes no lock (Melon's did, and deadlocked a caller that held it), and its
 * bookkeeping lives in the calling process: a pool made from a shared pool belongs to the
 * process that made it. The shared pool records the chunks of such pools as their process's, in
 * a table with a place for each of 128 processes, so that a process's death gives its chunks
 * back; in a process that finds no place there, as when 128 living processes hold one each, the
 * pool hands out nothing, each allocation a NULL, until a place frees (one of those processes
 * has died, say). Its copy in a process forked afterwards hands out nothing, and
 * destroying the copy there gives nothing back. The blocks it held at the fork stay the
 * original process's: the forked process must not free them. Such a free does nothing while
 * the original process still holds the block's chunk, but once that chunk has gone back to the
 * shared pool and been handed out again, it frees whatever lies there now.
 *
 * Returns NULL when the pool cannot be made.
 *
 * As a convenience, `mln_alloc_init(parent)` with one argument, as Melon's documentation writes
 * it, means a capacity of 0; the macro below does that and leaves the two-argument call as is.
 */
mln_alloc_t *mln_alloc_init(mln_alloc_t *parent, mln_size_t capacity);

/*
 * Makes a shared-memory pool of `capacity` bytes (at least 64 KiB, at most 1 TiB; rounded down
 * to 4 KiB), for a process and the processes it forks afterwards. The memory is reserved now,
 * and held in memory from now on, so a lack of memory is a NULL here, not a signal later; a
 * capacity larger than the memory the system (or the process's memory control group) has to
 * spare is a NULL at once, and takes nothing.
 *
 * `lock` and `unlock` take and release a lock that works across processes (a process-shared
 * mutex, say), called with `locker`; they return non-zero on failure. As in Melon, they are
 * called only by the heap pools made from this pool (mln_alloc_init(shm, ...)): a call that
 * works on the shared pool itself (mln_alloc_m, _c, _re, available_capacity, and mln_alloc_free
 * of one of its blocks) takes no lock, and the caller must hold the lock around it.
 *
 * If `lock` and `unlock` are both NULL, the pool uses a lock of its own in the shared memory
 * instead, around every call, whoever makes it; the caller then locks nothing, and a process
 * that dies holding that lock is detected and its half-done operation undone. One NULL callback
 * without the other is refused (NULL).
 *
 * How a process's death is seen: the pool keeps a few descriptors open in each process that uses it
 * (close-on-exec), each with a page of the pool's file mapped through it that no fork copies, so
 * that a process counts as dead once it dies, whatever descriptors it closed. A process must still
 * not close them while it uses the pool, as they are the pool's: a daemon that closes every
 * descriptor from 3 up does so before it makes the pool, and a process forked from one that made it
 * closes none of the descriptors it inherited. With the pool's own descriptor closed before it
 * first used the pool, a process takes the pool's own lock no more, and its allocations from such a
 * pool return NULL; closed after, it cannot tell a dead lock holder from a live one, and waits for
 * one for good. A process makes those descriptors by reopening the pool's file through /proc; one
 * that cannot (no /proc, as in a chroot without it) shares one identity with all such processes,
 * which is never taken over: should it die holding the lock, the others wait for good. One that has
 * no descriptor to spare just then (its table full; a worker forked while its parent's table was
 * full has none from the parent either) makes none: every call that needs the pool's own lock
 * returns NULL, and the next call tries again.
 *
 * Differences from Melon, which fix its bugs: a mapping the system refuses is a NULL, not a
 * write through MAP_FAILED; a pool slightly above the minimum size can be used in full; every
 * block is 16-byte aligned; an allocation costs the same however large or full the pool, but
 * for one that finds no free run (it first gives back the slabs its classes keep empty, takes
 * back the chunks of dead processes, and grows the pool if it may); a
 * double free is detected and ignored instead of corrupting the pool, as long as the block's
 * memory has not been handed out again since (by the pool or a pool made from it); and
 * available_capacity is exact.
 */
mln_alloc_t *mln_alloc_shm_init(mln_size_t capacity, void *locker, mln_alloc_shm_lock_cb_t lock,
                                mln_alloc_shm_lock_cb_t unlock);

/*
 * Destroys a pool: every block it holds is released at once. `NULL` does nothing.
 *
 * Pools made from it (its children, and theirs) are destroyed first, as if destroyed one by
 * one, deepest first: in Melon they live in the parent's memory and die with it, and here too
 * their handles are invalid afterwards. Destroying a child before its parent is always fine.
 * A shared-memory pool with children made in this process gives their chunks back under the
 * lock callbacks, and so does any chunk whose return failed earlier, so the caller must not hold
 * the lock then. A chunk whose return fails once more stays in use in the shared memory.
 */
void mln_alloc_destroy(mln_alloc_t *pool);

/*
 * Allocates `size` bytes from `pool`, aligned to 16 (Melon's blocks were aligned to 8 only).
 * A size of 0 gets a unique small block. Returns NULL when the limit would be passed, the
 * memory is exhausted, the size is absurd, or `pool` is NULL. Running out of system
 * memory in mln_alloc_init or mln_alloc_shm_init is a NULL too, rather than an abort.
 */
void *mln_alloc_m(mln_alloc_t *pool, mln_size_t size);

/* Like mln_alloc_m, with the `size` bytes zeroed. */
void *mln_alloc_c(mln_alloc_t *pool, mln_size_t size);

/*
 * Resizes the block `ptr` of `pool` to `size` bytes and returns it, moved or not; the contents
 * up to the smaller size are kept. A shrink, or a grow that fits the block, stays in place.
 * With `size == 0`, frees `ptr` (nothing if it is NULL) and returns NULL. On failure returns
 * NULL and leaves `ptr` as it was (Melon's contract too). With `ptr == NULL` and a size above
 * 0, allocates, as realloc does (Melon's contract requires a block). A block of another pool
 * is moved into `pool`; the lock rules of both pools apply, so with lock callbacks a block
 * cannot move between a shared pool and one of its children (the caller must hold the lock for
 * the one and not for the other).
 */
void *mln_alloc_re(mln_alloc_t *pool, void *ptr, mln_size_t size);

/*
 * Frees a block by its pointer alone: the block knows its pool. `ptr` must be a pointer
 * returned by the functions above and not freed since; NULL does nothing. A second free of a
 * block of a shared pool itself (not of a pool made from it) is detected and ignored, as long
 * as the block's memory has not been handed out again since, by the shared pool or in a chunk
 * it lent to a pool made from it; once it has, the second free is a free of whatever lies there
 * now, and as undefined as a second free() of a malloc block. A block of a heap pool, one made
 * from a shared pool included, must not be freed twice, as with free(). A block of a pool made
 * from a shared pool is that pool's process's to free: a free by another process does nothing,
 * and the block stays in use until its pool is destroyed or its process dies; unless the block
 * was handed off (mln_alloc_hand_off), after which any process frees it, the one that handed it
 * off included.
 */
void mln_alloc_free(void *ptr);

/*
 * Hands a block of a pool made from a shared pool (mln_alloc_init(shm, ...)) off to other
 * processes: from now on any process forked from the one that made the shared pool (this one
 * included) frees it with mln_alloc_free, once, and `pool` takes it back when it next runs out
 * of blocks. A worker can so pass a message it allocated to another, which frees it when done.
 * Returns -1 with nothing changed when `pool` is NULL or not made directly from a shared pool,
 * or `ptr` is NULL, lies in none of the chunks of `pool` in the shared memory, or is handed off
 * already; otherwise 0. A pointer that lies in a chunk of `pool` must be the start of a block in
 * use: as with a free, a block freed already, or a pointer inside a block, is not told apart.
 *
 * The free of a handed-off block takes no lock of its own. With lock callbacks it calls none,
 * whether or not its caller holds the lock: should the block be the last one out of a chunk
 * whose pool is gone, the chunk waits until the shared pool next takes back the chunks of dead
 * processes, which an allocation from it that finds no room does. With the pool's own lock, the
 * free takes that lock to give such a chunk back at once.
 *
 * A handed-off block is not resized: mln_alloc_re returns NULL for it and leaves it as it was,
 * but for a size of 0, which frees it as mln_alloc_free does. It outlives its pool and its
 * process: were the pool destroyed, or the process to die, while handed-off blocks of a chunk
 * are out, the chunk comes back to the shared pool once the last of them is freed. A
 * handed-off block that is never freed (its receiver died holding it) keeps its chunk out, and
 * so does a process killed in the middle of freeing one (in the few instructions between
 * counting its free in and out), until mln_alloc_reclaim_orphans gives such chunks back.
 */
int mln_alloc_hand_off(mln_alloc_t *pool, void *ptr);

/*
 * Gives back to the shared pool `shm` the chunks of pools whose processes died, as an allocation
 * that finds no room does, and then every chunk whose pool is gone (destroyed, or its process
 * died) while blocks handed off from it were out, and that still waits for one of them to be
 * freed, as a block whose receiver died holding it leaves it; the chunks of live pools are not
 * touched. Returns the bytes given back, of both kinds; 0 for a NULL pool or one that is not a
 * shared pool.
 * Call it only when no process holds such a block, frees one, or will free one (a master whose
 * workers of that time have all exited, say): the chunks' memory is handed out again. As every
 * call on the shared pool itself, with lock callbacks it is made holding the lock.
 */
mln_size_t mln_alloc_reclaim_orphans(mln_alloc_t *shm);

/*
 * The bytes `pool` can still take: for a heap pool with a limit, the limit minus the memory it
 * holds from its parent or the system (blocks free inside memory it already holds are not
 * counted, as in Melon); for a heap pool without a limit, M_ALLOC_INFINITE_SIZE; for a
 * shared-memory pool, the exact free bytes (Melon's figure was wrong for large pools and
 * wrapped below zero once two regions were busy), in which the chunks still lent to pools of
 * processes that died count as taken until the pool takes them back, as an allocation that finds
 * no room does. 0 for a NULL pool.
 */
mln_size_t mln_alloc_available_capacity(mln_alloc_t *pool);

#ifdef __cplusplus
}
#endif

/* mln_alloc_init(parent) with one argument means mln_alloc_init(parent, 0). The trailing 0
 * keeps the variadic part non-empty, as strict C99 wants. Variadic macros came with C99 and
 * C++11, and GNU C and C++ had them before: a program built as strict C89 or C++98/03
 * (-std=c89, -ansi, -std=c++98) passes both arguments. */
#if (defined(__cplusplus) && __cplusplus >= 201103L) \
    || (!defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L) \
    || (defined(__GNUC__) && !defined(__STRICT_ANSI__))
/* GNU C89 and GNU C++98 with -pedantic would call them an extension, which they are there. g++
 * does not let a diagnostic pragma silence that warning, so before C++11 the rest of this file is
 * a system header, whose own code is not warned about. */
#if defined(__GNUC__) && !defined(__cplusplus)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wvariadic-macros"
#elif defined(__GNUC__) && __cplusplus < 201103L
#pragma GCC system_header
#endif
#define MLN_ALLOC_INIT_PICK_(first, second, name, ...) name
#define MLN_ALLOC_INIT_ONE_(parent) mln_alloc_init((parent), 0)
#define mln_alloc_init(...) \
    MLN_ALLOC_INIT_PICK_(__VA_ARGS__, mln_alloc_init, MLN_ALLOC_INIT_ONE_, 0)(__VA_ARGS__)
#if defined(__GNUC__) && !defined(__cplusplus)
#pragma GCC diagnostic pop
#endif
#endif

#endif /* MLN_ALLOC_H */
