/* With lock callbacks, the free of a handed-off block calls none, whether or not its caller
 * holds the lock: the last block out of a chunk whose pool is gone leaves the chunk to wait, and
 * an allocation from the shared pool that finds no room takes it back. */
#include "check.h"
#include "mln_alloc.h"

static int held;       /* whether the lock is taken, by this process or "another" */
static int lock_calls; /* calls of `lock_cb` since the count was last reset */

static int lock_cb(void *locker)
{
    (void)locker;
    lock_calls++;
    if (held) return 16; /* busy: another holder has it */
    held = 1;
    return 0;
}

static int unlock_cb(void *locker)
{
    (void)locker;
    held = 0;
    return 0;
}

/* A block handed off from a child of `shm`, whose child is then destroyed: the block's chunk
 * waits for it, out of the pool. */
static void *orphaned_block(mln_alloc_t *shm)
{
    mln_alloc_t *child = mln_alloc_init(shm, 0);
    void *block;
    CHECK(child != NULL);
    block = mln_alloc_m(child, 64);
    CHECK(block != NULL);
    CHECK(mln_alloc_hand_off(child, block) == 0);
    mln_alloc_destroy(child);
    CHECK(!held);
    return block;
}

int main(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, lock_cb, unlock_cb);
    mln_size_t start, want;
    void *block, *big;
    CHECK(shm != NULL);
    start = mln_alloc_available_capacity(shm);

    /* The lock is free: the free takes it not, and the chunk waits. */
    block = orphaned_block(shm);
    lock_calls = 0;
    mln_alloc_free(block);
    CHECK(lock_calls == 0 && !held);
    CHECK(mln_alloc_available_capacity(shm) < start);

    /* The caller holds the lock, as around a free of the shared pool's own blocks: the free
     * calls no callback, which could not take the lock. */
    block = orphaned_block(shm);
    held = 1;
    lock_calls = 0;
    mln_alloc_free(block);
    CHECK(lock_calls == 0 && held);

    /* Holding the lock, as a call on the shared pool itself needs: an allocation of more than
     * the pool has free takes the waiting chunks back to make room. */
    want = mln_alloc_available_capacity(shm) + 4096;
    CHECK(want <= start);
    big = mln_alloc_m(shm, want);
    CHECK(big != NULL);
    mln_alloc_free(big);
    CHECK(mln_alloc_available_capacity(shm) == start);
    held = 0;

    mln_alloc_destroy(shm);
    printf("hand_off_callbacks: ok\n");
    return 0;
}
