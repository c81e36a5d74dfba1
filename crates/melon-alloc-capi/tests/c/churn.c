/* A random churn of allocations, zeroed allocations, resizes (within a pool and across pools)
 * and frees over heap pools, a limited child, a grandchild, a shared pool and a child of the
 * shared pool, checking every block's contents whenever it is touched. The seed is fixed, so a
 * failure replays; the first argument overrides the number of operations. */
#include <string.h>

#include "check.h"
#include "mln_alloc.h"

#define SLOTS 2048
#define POOLS 5

enum { ROOT, LIMITED, GRANDCHILD, SHARED, SHARED_CHILD };

struct slot {
    void *block;
    size_t size;
    uint32_t tag;
    int pool;
};

/* A lock for one process that refuses to be taken twice, so that a call which locks while
 * its caller holds the lock shows up as a failure. */
static int held;
static int lock_cb(void *locker)
{
    (void)locker;
    if (held) return 1;
    held = 1;
    return 0;
}
static int unlock_cb(void *locker)
{
    (void)locker;
    if (!held) return 1;
    held = 0;
    return 0;
}

static mln_alloc_t *pools[POOLS];
static struct slot slots[SLOTS];

/* Calls on the shared pool itself run with the lock held, as Melon requires. */
static void enter(int pool)
{
    if (pool == SHARED) {
        CHECK(!held);
        held = 1;
    }
}
static void leave(int pool)
{
    if (pool == SHARED) held = 0;
}

static size_t random_size(uint64_t *rng)
{
    uint64_t r = next_random(rng);
    switch (r % 100) {
    case 0: case 1: case 2: case 3: case 4:
        return 4097 + (size_t)(r >> 8) % 120000;
    default:
        if (r % 100 < 25) return 257 + (size_t)(r >> 8) % 3840;
        return (size_t)(r >> 8) % 257;
    }
}

/* Two pools a block may move between in one call: not the shared pool and its child together,
 * since the caller must hold the lock for one and not for the other. */
static int compatible(int a, int b)
{
    return !((a == SHARED && b == SHARED_CHILD) || (a == SHARED_CHILD && b == SHARED));
}

int main(int argc, char **argv)
{
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    long ops = argc > 1 ? atol(argv[1]) : 200000;
    long op, allocs = 0, moves = 0, refusals = 0;
    mln_size_t shared_initial;
    int i;

    pools[ROOT] = mln_alloc_init(NULL, 0);
    pools[LIMITED] = mln_alloc_init(pools[ROOT], 4 << 20);
    pools[GRANDCHILD] = mln_alloc_init(pools[LIMITED], 0);
    pools[SHARED] = mln_alloc_shm_init(128 << 20, NULL, lock_cb, unlock_cb);
    pools[SHARED_CHILD] = mln_alloc_init(pools[SHARED], 0);
    for (i = 0; i < POOLS; i++) CHECK(pools[i] != NULL);
    enter(SHARED);
    shared_initial = mln_alloc_available_capacity(pools[SHARED]);
    leave(SHARED);

    for (op = 0; op < ops; op++) {
        struct slot *s = &slots[next_random(&rng) % SLOTS];
        uint64_t r = next_random(&rng);
        if (s->block == NULL) {
            int pool = (int)(r % POOLS);
            size_t size = random_size(&rng);
            int zeroed = (r >> 8) % 4 == 0;
            void *p;
            enter(pool);
            p = zeroed ? mln_alloc_c(pools[pool], size) : mln_alloc_m(pools[pool], size);
            leave(pool);
            if (p == NULL) {
                /* Only the limited family may refuse. */
                CHECK(pool == LIMITED || pool == GRANDCHILD);
                refusals++;
                continue;
            }
            CHECK(ALIGNED16(p));
            if (zeroed) CHECK(all_zero(p, size));
            s->block = p;
            s->size = size;
            s->tag = (uint32_t)(r >> 32);
            s->pool = pool;
            fill(p, size, s->tag);
            allocs++;
        } else if (r % 3 == 0) {
            CHECK(holds(s->block, s->size, s->tag));
            enter(s->pool);
            mln_alloc_free(s->block);
            leave(s->pool);
            s->block = NULL;
        } else {
            int target = (r >> 8) % 4 == 0 ? (int)((r >> 16) % POOLS) : s->pool;
            size_t size = random_size(&rng);
            size_t kept = size < s->size ? size : s->size;
            void *p;
            if (!compatible(target, s->pool)) target = s->pool;
            CHECK(holds(s->block, s->size, s->tag));
            enter(target == SHARED || s->pool == SHARED ? SHARED : target);
            p = mln_alloc_re(pools[target], s->block, size);
            leave(target == SHARED || s->pool == SHARED ? SHARED : target);
            if (size == 0) {
                CHECK(p == NULL);
                s->block = NULL;
                continue;
            }
            if (p == NULL) {
                /* A failed resize leaves the block as it was. */
                CHECK(target == LIMITED || target == GRANDCHILD);
                CHECK(holds(s->block, s->size, s->tag));
                refusals++;
                continue;
            }
            CHECK(ALIGNED16(p) && holds(p, kept, s->tag));
            if (size <= s->size && target == s->pool) CHECK(p == s->block);
            moves += target != s->pool;
            s->block = p;
            s->size = size;
            s->pool = target;
            fill(p, size, s->tag);
        }
        CHECK(!held);
    }

    for (i = 0; i < SLOTS; i++) {
        struct slot *s = &slots[i];
        if (s->block == NULL) continue;
        CHECK(holds(s->block, s->size, s->tag));
        enter(s->pool);
        mln_alloc_free(s->block);
        leave(s->pool);
    }
    mln_alloc_destroy(pools[SHARED_CHILD]);
    enter(SHARED);
    CHECK(mln_alloc_available_capacity(pools[SHARED]) == shared_initial);
    leave(SHARED);
    mln_alloc_destroy(pools[SHARED]);
    mln_alloc_destroy(pools[ROOT]);
    CHECK(allocs > ops / 4);
    /* Blocks did move between pools, not only within one. */
    CHECK(moves > 0);
    printf("churn: ok\n");
    fprintf(stderr, "churn: %ld operations, %ld allocations, %ld moves, %ld refusals\n", ops,
            allocs, moves, refusals);
    return 0;
}
