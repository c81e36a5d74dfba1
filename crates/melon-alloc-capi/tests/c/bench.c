/* Times 64-byte blocks through the C ABI against glibc malloc/free, in the same program:
 * alloc+free ping-pong, and filling 1024 blocks then freeing them all. The two allocators take
 * turns, round after round (which one goes first alternates), so that both run under the same
 * conditions; each round gives one time per allocator and their ratio. Prints, in nanoseconds
 * per alloc+free pair, the median of the rounds with the lowest and highest, and the median of
 * the per-round ratios with its spread. The first argument scales the work: at the default of
 * 1000, a round is 4 million ping-pong pairs, or 4000 fills of 1024 blocks. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "mln_alloc.h"

#define BLOCK 64
#define FILL 1024
#define ROUNDS 15

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

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts `values` and returns their median. */
static double median(double *values, int n)
{
    qsort(values, (size_t)n, sizeof *values, by_value);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/* Runs `workload` for both allocators, taking turns, and prints one line: each one's median
 * time with its range, then the median of the per-round ratios (pool time over glibc time)
 * with its range. */
static void compare(const char *label, double (*workload)(const struct allocator *, long),
                    const struct allocator *glibc, const struct allocator *mln, long n)
{
    double g[ROUNDS], m[ROUNDS], ratio[ROUNDS];
    int round;
    workload(glibc, n / 10 + 1); /* warm-up */
    workload(mln, n / 10 + 1);
    for (round = 0; round < ROUNDS; round++) {
        if (round % 2 == 0) {
            g[round] = workload(glibc, n);
            m[round] = workload(mln, n);
        } else {
            m[round] = workload(mln, n);
            g[round] = workload(glibc, n);
        }
        ratio[round] = m[round] / g[round];
    }
    double gm = median(g, ROUNDS), mm = median(m, ROUNDS), rm = median(ratio, ROUNDS);
    printf("%-26s %6.2f (%5.2f-%5.2f) %6.2f (%5.2f-%5.2f) %6.3f (%5.3f-%5.3f)\n", label, gm, g[0],
           g[ROUNDS - 1], mm, m[0], m[ROUNDS - 1], rm, ratio[0], ratio[ROUNDS - 1]);
}

int main(int argc, char **argv)
{
    long scale = argc > 1 ? atol(argv[1]) : 1000;
    struct allocator glibc = {"glibc malloc/free", malloc, free};
    struct allocator mln = {"mln_alloc_m/mln_alloc_free", pool_alloc, pool_free};

    if (scale < 1) scale = 1;
    pool = mln_alloc_init(NULL, 0);
    if (pool == NULL) return 1;

    printf("%d rounds, glibc and mln_alloc taking turns; ns per alloc+free pair of %d bytes, "
           "median (lowest-highest)\n",
           ROUNDS, BLOCK);
    printf("%-26s %20s %20s %23s\n", "workload", "glibc malloc/free", "mln_alloc_m/_free",
           "mln / glibc, per round");
    compare("alloc+free ping-pong", ping_pong, &glibc, &mln, scale * 4000);
    compare("fill 1024, then free all", fill_drain, &glibc, &mln, scale * 4);

    mln_alloc_destroy(pool);
    return 0;
}
