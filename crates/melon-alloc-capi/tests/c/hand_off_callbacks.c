/* With lock callbacks, the free of the last handed-off block of a chunk whose pool is gone
 * takes the lock through them to give the chunk back; while another holder has the lock, the
 * chunk stays out and nothing of the pool changes. */
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
    mln_size_t start;
    void *block;
    CHECK(shm != NULL);
    start = mln_alloc_available_capacity(shm);

    /* The lock is free: the free takes it, gives the chunk back, and lets it go. */
    block = orphaned_block(shm);
    CHECK(mln_alloc_available_capacity(shm) < start);
    lock_calls = 0;
    mln_alloc_free(block);
    CHECK(lock_calls == 1 && !held);
    CHECK(mln_alloc_available_capacity(shm) == start);

    /* Another holder has the lock: the free asks for it, is refused, and gives nothing back. */
    block = orphaned_block(shm);
    held = 1;
    lock_calls = 0;
    mln_alloc_free(block);
    CHECK(lock_calls == 1 && held);
    CHECK(mln_alloc_available_capacity(shm) < start);
    held = 0;

    mln_alloc_destroy(shm);
    printf("hand_off_callbacks: ok\n");
    return 0;
}
