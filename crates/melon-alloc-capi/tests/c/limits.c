/* Limits: a limited pool refuses what would pass its limit and says exactly what is left;
 * freed memory comes back; children count against their ancestors; absurd sizes fail; a
 * failed resize leaves the block alone; a shared pool is exact and never wraps. */
#include <string.h>

#include "check.h"
#include "mln_alloc.h"

#define CHUNK (16 * 1024)
#define MAX_BLOCKS 100000

static void *blocks[MAX_BLOCKS];

/* Allocates blocks of `size` until the pool refuses; returns how many it gave. */
static size_t fill_up(mln_alloc_t *pool, size_t size)
{
    size_t n = 0;
    while (n < MAX_BLOCKS) {
        void *p = mln_alloc_m(pool, size);
        if (p == NULL) break;
        memset(p, (int)(n & 0xff), size);
        blocks[n++] = p;
    }
    CHECK(n < MAX_BLOCKS);
    return n;
}

static void drain(size_t n, size_t size)
{
    size_t i;
    for (i = 0; i < n; i++) {
        CHECK(((unsigned char *)blocks[i])[size - 1] == (unsigned char)(i & 0xff));
        mln_alloc_free(blocks[i]);
    }
}

static void heap_limit(void)
{
    const mln_size_t cap = 1 << 20;
    mln_alloc_t *pool = mln_alloc_init(NULL, cap);
    size_t n, again;
    CHECK(pool != NULL);
    n = fill_up(pool, 64);
    /* Every byte under the limit went to 64-byte blocks, in 16 KiB chunks. */
    CHECK(n > (cap / 64) * 9 / 10);
    CHECK(mln_alloc_available_capacity(pool) < CHUNK);
    CHECK(mln_alloc_m(pool, 64) == NULL);
    /* A refused request costs nothing. */
    CHECK(mln_alloc_available_capacity(pool) < CHUNK);
    drain(n, 64);
    /* The limit is not a one-way ratchet: the same blocks fit again. */
    again = fill_up(pool, 64);
    CHECK(again == n);
    drain(again, 64);
    /* Other sizes can use what 64-byte blocks used before. */
    n = fill_up(pool, 1000);
    CHECK(n > 900);
    drain(n, 1000);
    mln_alloc_destroy(pool);
}

static void small_limits(void)
{
    /* A limit smaller than one chunk admits no block: memory is taken in 16 KiB chunks. */
    mln_alloc_t *pool = mln_alloc_init(NULL, 1000);
    CHECK(pool != NULL);
    CHECK(mln_alloc_available_capacity(pool) == 1000);
    CHECK(mln_alloc_m(pool, 16) == NULL);
    CHECK(mln_alloc_available_capacity(pool) == 1000);
    mln_alloc_destroy(pool);
    /* Below a chunk, still room for a block larger than a size class, in a chunk of its own. */
    pool = mln_alloc_init(NULL, 12 * 1024);
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 16) == NULL);
    CHECK(mln_alloc_m(pool, 9000) != NULL);
    mln_alloc_destroy(pool);
    /* One chunk's worth admits blocks of one size class. */
    pool = mln_alloc_init(NULL, CHUNK);
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 16) != NULL);
    CHECK(mln_alloc_available_capacity(pool) == 0);
    mln_alloc_destroy(pool);
}

/* From a shared-memory pool, a large block's chunk is a whole number of 4 KiB pages, which the
 * limit counts: the 9000 bytes and header that a 12000-byte limit holds from the heap take three
 * pages there, 12 KiB. */
static void limits_of_pools_made_from_a_shared_pool(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
    mln_alloc_t *heap = mln_alloc_init(NULL, 12000);
    mln_alloc_t *pool;
    CHECK(shm != NULL && heap != NULL);
    CHECK(mln_alloc_m(heap, 9000) != NULL);
    mln_alloc_destroy(heap);
    pool = mln_alloc_init(shm, 12000);
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 9000) == NULL);
    mln_alloc_destroy(pool);
    pool = mln_alloc_init(shm, 12 * 1024);
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 9000) != NULL);
    CHECK(mln_alloc_available_capacity(pool) == 0);
    mln_alloc_destroy(pool);
    mln_alloc_destroy(shm);
}

static void absurd_sizes(void)
{
    mln_alloc_t *pool = mln_alloc_init(NULL, 0);
    mln_alloc_t *limited = mln_alloc_init(NULL, 1 << 20);
    char *p;
    CHECK(pool != NULL && limited != NULL);
    CHECK(mln_alloc_m(pool, (mln_size_t)-1) == NULL);
    CHECK(mln_alloc_m(pool, (mln_size_t)-1 - 64) == NULL);
    CHECK(mln_alloc_c(pool, (mln_size_t)-1 / 2) == NULL);
    CHECK(mln_alloc_m(limited, 2 << 20) == NULL);
    p = (char *)mln_alloc_m(limited, 100);
    CHECK(p != NULL);
    fill(p, 100, 11);
    /* A resize that cannot be met fails, and the block stays as it was. */
    CHECK(mln_alloc_re(limited, p, (mln_size_t)-1) == NULL);
    CHECK(mln_alloc_re(limited, p, 2 << 20) == NULL);
    CHECK(holds(p, 100, 11));
    p = (char *)mln_alloc_re(limited, p, 200);
    CHECK(p != NULL && holds(p, 100, 11));
    mln_alloc_free(p);
    mln_alloc_destroy(limited);
    mln_alloc_destroy(pool);
}

static void family_limits(void)
{
    mln_alloc_t *root = mln_alloc_init(NULL, 512 * 1024);
    mln_alloc_t *child, *grandchild;
    mln_size_t before;
    size_t n;
    CHECK(root != NULL);
    before = mln_alloc_available_capacity(root);
    child = mln_alloc_init(root, 256 * 1024);
    grandchild = mln_alloc_init(child, 0);
    CHECK(child != NULL && grandchild != NULL);
    /* The grandchild has no limit of its own, but its ancestors do. */
    CHECK(mln_alloc_available_capacity(grandchild) == M_ALLOC_INFINITE_SIZE);
    n = fill_up(grandchild, 64);
    CHECK(n > 3000);
    CHECK(mln_alloc_available_capacity(child) < CHUNK);
    CHECK(mln_alloc_available_capacity(root) ==
          before - (256 * 1024 - mln_alloc_available_capacity(child)));
    drain(n, 64);
    mln_alloc_destroy(grandchild);
    mln_alloc_destroy(child);
    /* Everything the family took is back. */
    CHECK(mln_alloc_available_capacity(root) == before);
    mln_alloc_destroy(root);
}

static void shared_limits(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
    mln_size_t initial, full;
    size_t n, again;
    CHECK(shm != NULL);
    initial = mln_alloc_available_capacity(shm);
    CHECK(initial > 900 * 1024 && initial < 1 << 20);
    n = fill_up(shm, 64);
    /* Blocks have no header: nearly all of the pool holds 64-byte blocks. */
    CHECK(n * 64 > initial * 95 / 100);
    full = mln_alloc_available_capacity(shm);
    /* Exact, and no wrap below zero (Melon's figure wrapped here). */
    CHECK(full < 64);
    drain(n, 64);
    CHECK(mln_alloc_available_capacity(shm) == initial);
    again = fill_up(shm, 64);
    CHECK(again == n);
    drain(again, 64);
    /* A request larger than the pool. */
    CHECK(mln_alloc_m(shm, 2 << 20) == NULL);
    CHECK(mln_alloc_available_capacity(shm) == initial);
    mln_alloc_destroy(shm);
}

int main(void)
{
    heap_limit();
    small_limits();
    limits_of_pools_made_from_a_shared_pool();
    absurd_sizes();
    family_limits();
    shared_limits();
    printf("limits: ok\n");
    return 0;
}
