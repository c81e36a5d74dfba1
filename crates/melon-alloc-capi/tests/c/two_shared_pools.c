/* mln_alloc_free tells every kind of block apart whether the process has one shared pool or two:
 * a heap pool's block, a shared pool's own, a block of a pool made from a shared pool, and one of
 * those handed off. With one shared pool it looks that pool up without the table's lock, with two
 * it reads the table; each free must reach the block's own pool in both, and with the first pool
 * destroyed, the second is the only one again. */
#include "check.h"
#include "mln_alloc.h"

#define CAPACITY (1 << 20)
/* A heap pool's limit: one 16 KiB chunk, which holds a few blocks of BIG bytes. */
#define ONE_CHUNK (16 * 1024)
#define BIG 4000
#define MOST 16

/* Allocates blocks of BIG bytes from `pool` until it refuses one: the count. */
static int fill_up(mln_alloc_t *pool, void **blocks)
{
    int count = 0;
    while (count < MOST && (blocks[count] = mln_alloc_m(pool, BIG)) != NULL) count++;
    CHECK(count > 0 && count < MOST);
    return count;
}

/* Frees a block of a pool filled up to its limit: the pool serves one block again, and only
 * one, which it could not do had the free gone to another pool. */
static void free_into_full(mln_alloc_t *pool, void *block)
{
    mln_alloc_free(block);
    block = mln_alloc_m(pool, BIG);
    CHECK(block != NULL);
    CHECK(mln_alloc_m(pool, BIG) == NULL);
}

/* Frees one block of each kind of `shm`, and one of `heap`, and checks where each went. */
static void free_each_kind(mln_alloc_t *shm, mln_alloc_t *heap)
{
    void *blocks[MOST], *own, *sent;
    mln_size_t before = mln_alloc_available_capacity(shm);
    mln_alloc_t *worker = mln_alloc_init(shm, ONE_CHUNK);
    CHECK(worker != NULL);

    /* The shared pool's own block goes back to it at once: its bytes are free again. */
    own = mln_alloc_m(shm, 200);
    CHECK(own != NULL && mln_alloc_available_capacity(shm) < before);
    mln_alloc_free(own);
    CHECK(mln_alloc_available_capacity(shm) == before);

    /* The worker's and the heap pool's blocks go back to their own pools. */
    free_into_full(worker, blocks[fill_up(worker, blocks) - 1]);
    free_into_full(heap, blocks[fill_up(heap, blocks) - 1]);

    /* A handed-off block goes back through the shared pool: freed as the worker's own, it would
     * keep its mark, and its chunk would stay out once the worker is gone. */
    mln_alloc_destroy(worker);
    CHECK(mln_alloc_available_capacity(shm) == before);
    worker = mln_alloc_init(shm, ONE_CHUNK);
    CHECK(worker != NULL);
    sent = mln_alloc_m(worker, 64);
    CHECK(sent != NULL && mln_alloc_hand_off(worker, sent) == 0);
    mln_alloc_free(sent);
    mln_alloc_destroy(worker);
    CHECK(mln_alloc_available_capacity(shm) == before);
}

int main(void)
{
    mln_alloc_t *first = mln_alloc_shm_init(CAPACITY, NULL, NULL, NULL);
    mln_alloc_t *second;
    CHECK(first != NULL);

    /* One shared pool. */
    mln_alloc_t *heap = mln_alloc_init(NULL, ONE_CHUNK);
    CHECK(heap != NULL);
    free_each_kind(first, heap);
    mln_alloc_destroy(heap);

    /* Two. */
    second = mln_alloc_shm_init(CAPACITY, NULL, NULL, NULL);
    CHECK(second != NULL);
    heap = mln_alloc_init(NULL, ONE_CHUNK);
    CHECK(heap != NULL);
    free_each_kind(first, heap);
    mln_alloc_destroy(heap);
    heap = mln_alloc_init(NULL, ONE_CHUNK);
    CHECK(heap != NULL);
    free_each_kind(second, heap);
    mln_alloc_destroy(heap);

    /* One again, the second. */
    mln_alloc_destroy(first);
    heap = mln_alloc_init(NULL, ONE_CHUNK);
    CHECK(heap != NULL);
    free_each_kind(second, heap);
    mln_alloc_destroy(heap);

    mln_alloc_destroy(second);
    puts("two_shared_pools: ok");
    return 0;
}
