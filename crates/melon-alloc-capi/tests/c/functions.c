/* Every function of mln_alloc.h, on heap pools, child pools and shared pools, including the
 * NULL and zero cases the header documents. */
#include <string.h>

#include "check.h"
#include "mln_alloc.h"

/* Takes the lock as a Melon caller does before working on the shared pool itself. */
static void hold(struct counting_lock *l)
{
    CHECK(count_lock(l) == 0);
}

static void release(struct counting_lock *l)
{
    CHECK(count_unlock(l) == 0);
}

static void types_and_constants(void)
{
    mln_size_t infinite = M_ALLOC_INFINITE_SIZE;
    mln_alloc_shm_lock_cb_t cb = count_lock;
    CHECK(sizeof(mln_size_t) == sizeof(void *));
    CHECK(infinite == (mln_size_t)-1);
    CHECK(cb != NULL);
    /* mln_size_t is unsigned. */
    CHECK((mln_size_t)0 - 1 > 0);
}

static void heap_pool(void)
{
    mln_alloc_t *pool = mln_alloc_init(NULL, 0);
    char *a, *b, *z, *grown, *shrunk;
    size_t i;
    CHECK(pool != NULL);
    CHECK(mln_alloc_available_capacity(pool) == M_ALLOC_INFINITE_SIZE);

    a = (char *)mln_alloc_m(pool, 100);
    CHECK(a != NULL && ALIGNED16(a));
    fill(a, 100, 1);

    /* Zeroed memory, even where a freed block left bytes behind. */
    b = (char *)mln_alloc_m(pool, 200);
    CHECK(b != NULL);
    memset(b, 0xAB, 200);
    mln_alloc_free(b);
    z = (char *)mln_alloc_c(pool, 200);
    CHECK(z != NULL && ALIGNED16(z) && all_zero(z, 200));
    z[199] = 1;

    /* Size 0 gets a unique block. */
    b = (char *)mln_alloc_m(pool, 0);
    CHECK(b != NULL && b != a && b != z);
    mln_alloc_free(b);

    /* Grow: the contents move along. */
    grown = (char *)mln_alloc_re(pool, a, 5000);
    CHECK(grown != NULL && ALIGNED16(grown) && holds(grown, 100, 1));
    fill(grown, 5000, 2);
    /* Shrink: stays in place, as Melon's contract says. */
    shrunk = (char *)mln_alloc_re(pool, grown, 10);
    CHECK(shrunk == grown && holds(shrunk, 10, 2));
    /* Size 0 frees and returns NULL. */
    CHECK(mln_alloc_re(pool, shrunk, 0) == NULL);
    /* A NULL block with size 0 frees nothing and allocates nothing, as in Melon. */
    CHECK(mln_alloc_re(pool, NULL, 0) == NULL);
    /* A NULL block: allocates. */
    a = (char *)mln_alloc_re(pool, NULL, 64);
    CHECK(a != NULL && ALIGNED16(a));
    fill(a, 64, 3);

    /* Free of NULL is a no-op. */
    mln_alloc_free(NULL);

    /* Many blocks of one size are distinct and keep their contents. */
    {
        char *blocks[300];
        for (i = 0; i < 300; i++) {
            blocks[i] = (char *)mln_alloc_m(pool, 48);
            CHECK(blocks[i] != NULL && ALIGNED16(blocks[i]));
            fill(blocks[i], 48, (uint32_t)i);
        }
        for (i = 0; i < 300; i++) {
            CHECK(holds(blocks[i], 48, (uint32_t)i));
            mln_alloc_free(blocks[i]);
        }
    }
    CHECK(holds(a, 64, 3));
    mln_alloc_free(a);
    mln_alloc_free(z);
    mln_alloc_destroy(pool);
}

static void null_arguments(void)
{
    char *a;
    CHECK(mln_alloc_m(NULL, 10) == NULL);
    CHECK(mln_alloc_c(NULL, 10) == NULL);
    CHECK(mln_alloc_re(NULL, NULL, 10) == NULL);
    CHECK(mln_alloc_available_capacity(NULL) == 0);
    mln_alloc_destroy(NULL);
    mln_alloc_free(NULL);
    /* A block freed through mln_alloc_re with no pool: size 0 needs none. */
    {
        mln_alloc_t *pool = mln_alloc_init(NULL, 0);
        a = (char *)mln_alloc_m(pool, 10);
        CHECK(a != NULL);
        CHECK(mln_alloc_re(NULL, a, 0) == NULL);
        /* A resize with no pool fails and leaves the block alone. */
        a = (char *)mln_alloc_m(pool, 10);
        fill(a, 10, 9);
        CHECK(mln_alloc_re(NULL, a, 20) == NULL);
        CHECK(holds(a, 10, 9));
        mln_alloc_free(a);
        mln_alloc_destroy(pool);
    }
}

static void limited_pool(void)
{
    const mln_size_t cap = 256 * 1024;
    mln_alloc_t *pool = mln_alloc_init(NULL, cap);
    mln_alloc_t *child;
    mln_size_t before;
    void *p;
    CHECK(pool != NULL);
    CHECK(mln_alloc_available_capacity(pool) == cap);
    p = mln_alloc_m(pool, 64);
    CHECK(p != NULL);
    /* The pool took one chunk for the block, and says exactly how much is left. */
    CHECK(mln_alloc_available_capacity(pool) < cap);
    CHECK(cap - mln_alloc_available_capacity(pool) == 16 * 1024);
    /* A child's memory counts against its parent, and comes back when it goes. */
    before = mln_alloc_available_capacity(pool);
    child = mln_alloc_init(pool, 0);
    CHECK(child != NULL);
    CHECK(mln_alloc_available_capacity(child) == M_ALLOC_INFINITE_SIZE);
    CHECK(mln_alloc_m(child, 64) != NULL);
    CHECK(mln_alloc_available_capacity(pool) < before);
    mln_alloc_destroy(child);
    CHECK(mln_alloc_available_capacity(pool) == before);
    /* More than the limit at once is refused. */
    CHECK(mln_alloc_m(pool, cap + 1) == NULL);
    mln_alloc_free(p);
    mln_alloc_destroy(pool);
}

static void shared_pool_with_callbacks(void)
{
    struct counting_lock l = {0, 0, 0, 0};
    mln_alloc_t *shm = mln_alloc_shm_init(4 << 20, &l, count_lock, count_unlock);
    mln_alloc_t *child;
    mln_size_t initial, before;
    char *a, *b, *c, *moved;
    CHECK(shm != NULL);

    /* Calls on the shared pool itself: the caller holds the lock, the pool calls nothing. */
    hold(&l);
    initial = mln_alloc_available_capacity(shm);
    CHECK(initial > 3 << 20 && initial < 4 << 20);
    a = (char *)mln_alloc_m(shm, 100);
    CHECK(a != NULL && ALIGNED16(a));
    fill(a, 100, 4);
    b = (char *)mln_alloc_c(shm, 3000);
    CHECK(b != NULL && ALIGNED16(b) && all_zero(b, 3000));
    a = (char *)mln_alloc_re(shm, a, 10000);
    CHECK(a != NULL && holds(a, 100, 4));
    CHECK(mln_alloc_available_capacity(shm) < initial);
    mln_alloc_free(b);
    /* A double free of a shared block is detected and ignored: nothing changes. */
    before = mln_alloc_available_capacity(shm);
    mln_alloc_free(b);
    CHECK(mln_alloc_available_capacity(shm) == before);
    c = (char *)mln_alloc_m(shm, 3000);
    CHECK(c != NULL && c != a);
    CHECK(mln_alloc_available_capacity(shm) < before);
    mln_alloc_free(c);
    CHECK(mln_alloc_available_capacity(shm) == before);
    release(&l);
    CHECK(l.locks == 1 && l.unlocks == 1);

    /* A child pool calls the callbacks around each use of its parent. */
    child = mln_alloc_init(shm, 0);
    CHECK(child != NULL);
    CHECK(l.locks == 1);
    c = (char *)mln_alloc_m(child, 64);
    CHECK(c != NULL && ALIGNED16(c));
    CHECK(l.locks == 2 && l.unlocks == 2 && !l.held);
    fill(c, 64, 5);
    /* A large block takes a chunk of its own, under the lock again. */
    b = (char *)mln_alloc_m(child, 50000);
    CHECK(b != NULL && l.locks == 3 && !l.held);
    fill(b, 50000, 6);
    /* A child block freed by pointer alone, without the caller holding the lock: the large
     * block's chunk goes back under the callbacks. */
    mln_alloc_free(b);
    CHECK(l.locks == 4 && l.unlocks == 4 && !l.held);

    /* A failing lock fails the call cleanly. */
    l.fail = 1;
    CHECK(mln_alloc_m(child, 50000) == NULL);
    CHECK(mln_alloc_m(child, 700) == NULL); /* a size class with no chunk yet */
    /* Blocks of chunks the child holds need no lock. */
    moved = (char *)mln_alloc_m(child, 64);
    CHECK(moved != NULL);
    mln_alloc_free(moved);
    l.fail = 0;
    CHECK(!l.held);
    moved = (char *)mln_alloc_m(child, 700);
    CHECK(moved != NULL);
    mln_alloc_free(moved);

    /* Blocks move between pools: from the shared pool into a heap pool (the caller holds the
     * lock for the shared pool's part), from a child of the shared pool into a heap pool, and
     * back into the shared pool. */
    {
        mln_alloc_t *heap = mln_alloc_init(NULL, 0);
        CHECK(heap != NULL);
        hold(&l);
        moved = (char *)mln_alloc_re(heap, a, 200);
        release(&l);
        CHECK(moved != NULL && holds(moved, 100, 4));
        hold(&l);
        a = (char *)mln_alloc_re(shm, moved, 300);
        CHECK(a != NULL && holds(a, 100, 4));
        mln_alloc_free(a);
        release(&l);
        c = (char *)mln_alloc_re(heap, c, 64);
        CHECK(c != NULL && holds(c, 64, 5));
        c = (char *)mln_alloc_re(child, c, 64);
        CHECK(c != NULL && holds(c, 64, 5));
        mln_alloc_destroy(heap);
    }

    CHECK(holds(c, 64, 5));
    mln_alloc_free(c);
    mln_alloc_destroy(child);
    CHECK(!l.held && l.locks == l.unlocks);
    hold(&l);
    CHECK(mln_alloc_available_capacity(shm) == initial);
    release(&l);
    mln_alloc_destroy(shm);
}

/* A chunk whose return fails because the lock fails is given back the next time the lock is
 * held: by a call on the shared pool itself, by destroying a child pool, by destroying the
 * shared pool, or by a child taking a chunk. */
/* Frees a child's large block while the lock fails, so that its chunk cannot go back yet. */
static void strand_a_chunk(mln_alloc_t *child, struct counting_lock *l)
{
    void *big = mln_alloc_m(child, 50000);
    CHECK(big != NULL);
    l->fail = 1;
    mln_alloc_free(big);
    l->fail = 0;
}

/* Checks, under the caller's lock, that the shared pool has all its bytes back. */
static void check_all_back(mln_alloc_t *shm, struct counting_lock *l, mln_size_t initial)
{
    hold(l);
    CHECK(mln_alloc_available_capacity(shm) == initial);
    release(l);
}

static void shared_pool_failed_return(void)
{
    struct counting_lock l = {0, 0, 0, 0};
    mln_alloc_t *shm = mln_alloc_shm_init(4 << 20, &l, count_lock, count_unlock);
    mln_alloc_t *child, *other;
    mln_size_t initial;
    int locks;
    void *big;
    CHECK(shm != NULL);
    hold(&l);
    initial = mln_alloc_available_capacity(shm);
    release(&l);

    /* A large block has a chunk of its own, which goes back when the block is freed. */
    child = mln_alloc_init(shm, 0);
    CHECK(child != NULL);
    big = mln_alloc_m(child, 50000);
    CHECK(big != NULL);
    hold(&l);
    CHECK(mln_alloc_available_capacity(shm) < initial);
    release(&l);
    l.fail = 1;
    mln_alloc_free(big);
    l.fail = 0;
    CHECK(!l.held);
    /* The next call on the shared pool, under the caller's lock, gives it back. */
    check_all_back(shm, &l, initial);

    /* Destroying a child that holds no chunk gives it back, under the callbacks. */
    strand_a_chunk(child, &l);
    locks = l.locks;
    mln_alloc_destroy(child);
    CHECK(l.locks == locks + 1 && !l.held);
    check_all_back(shm, &l, initial);

    /* Another child taking a chunk gives it back. */
    child = mln_alloc_init(shm, 0);
    other = mln_alloc_init(shm, 0);
    CHECK(child != NULL && other != NULL);
    strand_a_chunk(child, &l);
    big = mln_alloc_m(other, 64);
    CHECK(big != NULL);
    mln_alloc_free(big);
    mln_alloc_destroy(other);
    check_all_back(shm, &l, initial);

    /* Destroying the shared pool gives a pending chunk back before it goes: other processes
     * may still use the mapping. */
    strand_a_chunk(child, &l);
    locks = l.locks;
    mln_alloc_destroy(shm);
    CHECK(l.locks == locks + 1 && !l.held && l.locks == l.unlocks);
}

static void shared_pool_with_its_own_lock(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
    mln_alloc_t *child;
    mln_size_t initial;
    char *a, *b;
    CHECK(shm != NULL);
    initial = mln_alloc_available_capacity(shm);
    a = (char *)mln_alloc_m(shm, 1000);
    CHECK(a != NULL);
    fill(a, 1000, 7);
    child = mln_alloc_init(shm, 64 * 1024);
    CHECK(child != NULL);
    CHECK(mln_alloc_available_capacity(child) == 64 * 1024);
    b = (char *)mln_alloc_c(child, 1000);
    CHECK(b != NULL && all_zero(b, 1000));
    mln_alloc_free(b);
    CHECK(holds(a, 1000, 7));
    mln_alloc_free(a);
    mln_alloc_destroy(child);
    CHECK(mln_alloc_available_capacity(shm) == initial);
    mln_alloc_destroy(shm);
}

static void shared_pool_refusals(void)
{
    struct counting_lock l = {0, 0, 0, 0};
    /* Capacity 0 has no meaning for a shared pool, nor has one that is too small. */
    CHECK(mln_alloc_shm_init(0, &l, count_lock, count_unlock) == NULL);
    CHECK(mln_alloc_shm_init(1000, &l, count_lock, count_unlock) == NULL);
    /* One callback without the other. */
    CHECK(mln_alloc_shm_init(1 << 20, &l, count_lock, NULL) == NULL);
    CHECK(mln_alloc_shm_init(1 << 20, &l, NULL, count_unlock) == NULL);
    /* More memory than the system will reserve. */
    CHECK(mln_alloc_shm_init((mln_size_t)1 << 62, &l, count_lock, count_unlock) == NULL);
    CHECK(l.locks == 0);
}

int main(void)
{
    types_and_constants();
    heap_pool();
    null_arguments();
    limited_pool();
    shared_pool_with_callbacks();
    shared_pool_failed_return();
    shared_pool_with_its_own_lock();
    shared_pool_refusals();
    printf("functions: ok\n");
    return 0;
}
