/* The loop whose instructions `cargo xtask bench-c` counts under callgrind: one heap pool, N
 * ping-pong pairs (allocate 64 bytes, write a byte, free), then N / 1024 rounds of 1024
 * allocations of 64 bytes freed in order. Run at N and at 2N, the difference over the extra
 * pairs is the cost of one alloc+free pair, the loop included, without the start-up. With a
 * second argument `shm`, a shared-memory pool is made first, as a pre-fork server makes one
 * before its heap pools: mln_alloc_free then has a shared pool's blocks to tell apart from the
 * heap pool's. With `shm-child`, the pool of the pairs is made from that shared pool, as a
 * pre-fork server's worker makes its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mln_alloc.h"

#define BLOCK 64
#define FILL 1024

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    const char *mode = argc > 2 ? argv[2] : "";
    int in_child = strcmp(mode, "shm-child") == 0;
    mln_alloc_t *shm = NULL;
    if (in_child || strcmp(mode, "shm") == 0) {
        shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
        if (shm == NULL) return 1;
    }
    mln_alloc_t *pool = mln_alloc_init(in_child ? shm : NULL, 0);
    static char *blocks[FILL];
    if (pool == NULL || n < 0) return 1;
    for (long i = 0; i < n; i++) {
        /* No test of the block for NULL, as in the loop the target is set on: a NULL faults. */
        char *block = mln_alloc_m(pool, BLOCK);
        block[0] = 1;
        mln_alloc_free(block);
    }
    for (long round = 0; round < n / FILL; round++) {
        for (int i = 0; i < FILL; i++) blocks[i] = mln_alloc_m(pool, BLOCK);
        for (int i = 0; i < FILL; i++) mln_alloc_free(blocks[i]);
    }
    mln_alloc_destroy(pool);
    mln_alloc_destroy(shm);
    return 0;
}
