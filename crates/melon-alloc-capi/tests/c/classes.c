/* Every size from 0 to 4 KiB, then sizes up to several MiB, in a heap pool, a child pool and a
 * shared pool: each block is 16-byte aligned, holds its size, and overlaps no other block. */
#include <string.h>

#include "check.h"
#include "mln_alloc.h"

#define SMALL_MAX 4096
#define LIVE 64

/* Allocates every size in [first, last] by `step` from `pool`, keeping the last LIVE blocks
 * alive at once and checking each one's contents when it is freed. */
static void sizes(mln_alloc_t *pool, size_t first, size_t last, size_t step, int zeroed)
{
    void *live[LIVE];
    size_t live_size[LIVE];
    size_t size, n = 0, i;
    memset(live, 0, sizeof live);
    memset(live_size, 0, sizeof live_size);
    for (size = first; size <= last; size += step, n++) {
        size_t slot = n % LIVE;
        void *p;
        if (live[slot] != NULL) {
            CHECK(holds(live[slot], live_size[slot], (uint32_t)live_size[slot]));
            mln_alloc_free(live[slot]);
        }
        p = zeroed ? mln_alloc_c(pool, size) : mln_alloc_m(pool, size);
        CHECK(p != NULL && ALIGNED16(p));
        if (zeroed) CHECK(all_zero(p, size));
        fill(p, size, (uint32_t)size);
        live[slot] = p;
        live_size[slot] = size;
    }
    for (i = 0; i < LIVE; i++) {
        if (live[i] == NULL) continue;
        CHECK(holds(live[i], live_size[i], (uint32_t)live_size[i]));
        mln_alloc_free(live[i]);
    }
}

static void all_sizes(mln_alloc_t *pool)
{
    sizes(pool, 0, SMALL_MAX, 1, 0);
    sizes(pool, 0, SMALL_MAX, 7, 1);
    sizes(pool, SMALL_MAX, 300 * 1024, 4093, 0);
    sizes(pool, 1 << 20, 5 << 20, 1 << 20, 1);
}

int main(void)
{
    mln_alloc_t *root = mln_alloc_init(NULL, 0);
    mln_alloc_t *child, *shm, *shm_child;
    CHECK(root != NULL);
    all_sizes(root);

    child = mln_alloc_init(root, 0);
    CHECK(child != NULL);
    all_sizes(child);
    mln_alloc_destroy(child);

    /* A shared pool with its own lock, and a child of it. */
    shm = mln_alloc_shm_init(64 << 20, NULL, NULL, NULL);
    CHECK(shm != NULL);
    all_sizes(shm);
    shm_child = mln_alloc_init(shm, 0);
    CHECK(shm_child != NULL);
    all_sizes(shm_child);
    mln_alloc_destroy(shm_child);
    mln_alloc_destroy(shm);

    mln_alloc_destroy(root);
    printf("classes: ok\n");
    return 0;
}
