/* What the test programs share: a check that names the failing line and exits non-zero, and a
 * byte pattern that tells whether a block kept its contents. */
#ifndef CHECK_H
#define CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

/* Whether a pointer is aligned to 16 bytes, as every block of the library is. */
#define ALIGNED16(p) ((((uintptr_t)(p)) & 15u) == 0)

/* The byte at `index` of a block tagged `tag`. */
static inline unsigned char pattern_byte(uint32_t tag, size_t index)
{
    return (unsigned char)(tag * 131u + (uint32_t)index * 31u + (uint32_t)(index >> 8));
}

static inline void fill(void *block, size_t size, uint32_t tag)
{
    unsigned char *bytes = (unsigned char *)block;
    size_t i;
    for (i = 0; i < size; i++) bytes[i] = pattern_byte(tag, i);
}

static inline int holds(const void *block, size_t size, uint32_t tag)
{
    const unsigned char *bytes = (const unsigned char *)block;
    size_t i;
    for (i = 0; i < size; i++)
        if (bytes[i] != pattern_byte(tag, i)) return 0;
    return 1;
}

static inline int all_zero(const void *block, size_t size)
{
    const unsigned char *bytes = (const unsigned char *)block;
    size_t i;
    for (i = 0; i < size; i++)
        if (bytes[i] != 0) return 0;
    return 1;
}

/* xorshift64*: a small reproducible random source. */
static inline uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A lock for one process that counts its calls, refuses to be taken twice (so a call that
 * locked while the caller holds the lock is caught instead of hanging) or released when free,
 * and can be told to fail. */
struct counting_lock {
    int held;
    int locks;
    int unlocks;
    int fail;
};

static inline int count_lock(void *locker)
{
    struct counting_lock *l = (struct counting_lock *)locker;
    if (l->fail || l->held) return 1;
    l->held = 1;
    l->locks++;
    return 0;
}

static inline int count_unlock(void *locker)
{
    struct counting_lock *l = (struct counting_lock *)locker;
    if (!l->held) return 1;
    l->held = 0;
    l->unlocks++;
    return 0;
}

#endif
