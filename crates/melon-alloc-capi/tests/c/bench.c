/* Times 64-byte blocks through the C ABI against glibc malloc/free, in the same program:
 * alloc+free ping-pong, and filling 1024 blocks then freeing them all. Prints nanoseconds per
 * alloc+free pair (the best of several rounds) and the ratio. The first argument scales the
 * work: at the default of 1000, a round is 4 million ping-pong pairs, or 4000 fills of 1024
 * blocks. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "mln_alloc.h"

#define BLOCK 64
#define FILL 1024
#define ROUNDS 9

/* Keeps the compiler from removing a malloc/free pair whose block is never used. */
static void *volatile sink;

static mln_alloc_t *pool;

static void *pool_alloc(size_t size) { return mln_alloc_m(pool, size); }
static void pool_free(void *p) { mln_alloc_free(p); }

struct allocator {
    const char *name;
    void *(*alloc)(size_t);
    void (*release)(void *);
};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double ping_pong(const struct allocator *a, long pairs)
{
    double start = now_ns();
    long i;
    for (i = 0; i < pairs; i++) {
        char *p = (char *)a->alloc(BLOCK);
        if (p == NULL) abort();
        p[0] = (char)i;
        sink = p;
        a->release(p);
    }
    return (now_ns() - start) / (double)pairs;
}

static double fill_drain(const struct allocator *a, long rounds)
{
    static void *blocks[FILL];
    double start = now_ns();
    long r;
    int i;
    for (r = 0; r < rounds; r++) {
        for (i = 0; i < FILL; i++) {
            char *p = (char *)a->alloc(BLOCK);
            if (p == NULL) abort();
            p[0] = (char)i;
            blocks[i] = p;
        }
        sink = blocks[FILL - 1];
        for (i = 0; i < FILL; i++) a->release(blocks[i]);
    }
    return (now_ns() - start) / ((double)rounds * FILL);
}

static double best(double (*workload)(const struct allocator *, long),
                   const struct allocator *a, long n)
{
    double result = workload(a, n / 10 + 1); /* warm-up */
    int round;
    for (round = 0; round < ROUNDS; round++) {
        double t = workload(a, n);
        if (round == 0 || t < result) result = t;
    }
    return result;
}

int main(int argc, char **argv)
{
    long scale = argc > 1 ? atol(argv[1]) : 1000;
    struct allocator glibc = {"glibc malloc/free", malloc, free};
    struct allocator melon = {"mln_alloc_m/mln_alloc_free", pool_alloc, pool_free};
    double g, m;

    if (scale < 1) scale = 1;
    pool = mln_alloc_init(NULL, 0);
    if (pool == NULL) return 1;

    printf("%-28s %14s %14s %8s\n", "workload (64-byte blocks)", "glibc ns/pair", "mln ns/pair",
           "ratio");
    g = best(ping_pong, &glibc, scale * 4000);
    m = best(ping_pong, &melon, scale * 4000);
    printf("%-28s %14.2f %14.2f %7.2fx\n", "alloc+free ping-pong", g, m, g / m);
    g = best(fill_drain, &glibc, scale * 4);
    m = best(fill_drain, &melon, scale * 4);
    printf("%-28s %14.2f %14.2f %7.2fx\n", "fill 1024, then free all", g, m, g / m);
    printf("(ratio: glibc time / mln_alloc time; above 1 means the pool is faster)\n");

    mln_alloc_destroy(pool);
    return 0;
}
