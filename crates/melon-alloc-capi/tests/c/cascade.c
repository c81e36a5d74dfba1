/* Cascades three deep: root -> child -> grandchild -> great-grandchild, over the heap and over
 * a shared pool. Blocks at every level, moved between levels, freed by pointer alone;
 * destroying a level gives its memory back to the level above; destroying a pool with live
 * descendants destroys them first (memcheck finds no leak). */
#include <string.h>

#include "check.h"
#include "mln_alloc.h"

#define DEPTH 4 /* the root and three levels below it */
#define PER_LEVEL 500


static void *blocks[DEPTH][PER_LEVEL];

static size_t size_of(int level, int i)
{
    /* Small classes mostly, a large block now and then. */
    if (i % 50 == 49) return (size_t)(20000 + level * 1000 + i);
    return (size_t)(1 + (i * 37 + level * 11) % 1500);
}

/* Fills levels [from, to) with blocks. */
static void fill_levels(mln_alloc_t **levels, int from, int to)
{
    int level, i;
    for (level = from; level < to; level++) {
        for (i = 0; i < PER_LEVEL; i++) {
            void *p = mln_alloc_m(levels[level], size_of(level, i));
            CHECK(p != NULL && ALIGNED16(p));
            fill(p, size_of(level, i), (uint32_t)(level * PER_LEVEL + i));
            blocks[level][i] = p;
        }
    }
}

static void check_levels(void)
{
    int level, i;
    for (level = 0; level < DEPTH; level++)
        for (i = 0; i < PER_LEVEL; i++)
            if (blocks[level][i] != NULL)
                CHECK(holds(blocks[level][i], size_of(level, i),
                            (uint32_t)(level * PER_LEVEL + i)));
}

/* Frees every other block of every level by pointer alone. */
static void free_half(void)
{
    int level, i;
    for (level = 0; level < DEPTH; level++)
        for (i = 0; i < PER_LEVEL; i += 2) {
            mln_alloc_free(blocks[level][i]);
            blocks[level][i] = NULL;
        }
}

/* Moves the deepest level's surviving blocks up into the root with mln_alloc_re. */
static void move_up(mln_alloc_t *root)
{
    int i;
    for (i = 1; i < PER_LEVEL; i += 2) {
        size_t size = size_of(DEPTH - 1, i);
        void *p = mln_alloc_re(root, blocks[DEPTH - 1][i], size + 16);
        CHECK(p != NULL && holds(p, size, (uint32_t)((DEPTH - 1) * PER_LEVEL + i)));
        blocks[DEPTH - 1][i] = p;
    }
}

/* The bytes a root like heap_cascade's can still take after the same calls on the root itself
 * as heap_cascade makes, without any child: what the root keeps for reuse depends on those
 * calls alone, since its children's chunks go back to the system through it. */
static mln_size_t root_alone(void)
{
    static void *own[PER_LEVEL], *moved[PER_LEVEL];
    mln_alloc_t *root = mln_alloc_init(NULL, 64 << 20);
    mln_size_t available;
    int i;
    CHECK(root != NULL);
    for (i = 0; i < PER_LEVEL; i++) {
        own[i] = mln_alloc_m(root, size_of(0, i));
        CHECK(own[i] != NULL);
    }
    for (i = 0; i < PER_LEVEL; i += 2) {
        mln_alloc_free(own[i]);
        own[i] = NULL;
    }
    for (i = 1; i < PER_LEVEL; i += 2) {
        moved[i] = mln_alloc_m(root, size_of(DEPTH - 1, i) + 16);
        CHECK(moved[i] != NULL);
    }
    for (i = 0; i < PER_LEVEL; i++) {
        mln_alloc_free(own[i]);
        mln_alloc_free(moved[i]);
    }
    available = mln_alloc_available_capacity(root);
    mln_alloc_destroy(root);
    return available;
}

static void heap_cascade(void)
{
    mln_alloc_t *levels[DEPTH];
    mln_size_t root_before, child_before;
    int level;
    levels[0] = mln_alloc_init(NULL, 64 << 20);
    CHECK(levels[0] != NULL);
    root_before = mln_alloc_available_capacity(levels[0]);
    levels[1] = mln_alloc_init(levels[0], 32 << 20);
    levels[2] = mln_alloc_init(levels[1], 0);
    levels[3] = mln_alloc_init(levels[2], 16 << 20);
    for (level = 1; level < DEPTH; level++) CHECK(levels[level] != NULL);
    fill_levels(levels, 0, 2);
    child_before = mln_alloc_available_capacity(levels[1]);
    fill_levels(levels, 2, DEPTH);
    check_levels();
    /* The deepest level's memory counts against every limited ancestor. */
    CHECK(mln_alloc_available_capacity(levels[3]) < 16 << 20);
    CHECK(mln_alloc_available_capacity(levels[1]) < child_before);
    CHECK(mln_alloc_available_capacity(levels[2]) == M_ALLOC_INFINITE_SIZE);
    free_half();
    check_levels();
    move_up(levels[0]);
    check_levels();

    /* Destroying the deepest level, then the next, gives their memory back upwards: the first
     * level holds what it held before they had blocks (its own blocks are half freed, but it
     * keeps their chunks). */
    for (level = 0; level < PER_LEVEL; level++) blocks[2][level] = NULL;
    mln_alloc_destroy(levels[3]);
    mln_alloc_destroy(levels[2]);
    CHECK(mln_alloc_available_capacity(levels[1]) >= child_before);
    /* The first level, with blocks still live in it: all released. */
    for (level = 0; level < PER_LEVEL; level++) blocks[1][level] = NULL;
    mln_alloc_destroy(levels[1]);
    check_levels();
    for (level = 0; level < PER_LEVEL; level++) {
        mln_alloc_free(blocks[0][level]);
        mln_alloc_free(blocks[3][level]);
    }
    memset(blocks, 0, sizeof blocks);
    /* The root holds only the chunks it keeps for reuse: exactly what a root that made the same
     * calls without children keeps, so every chunk of the levels below came back. */
    CHECK(mln_alloc_available_capacity(levels[0]) == root_alone());
    CHECK(root_alone() < root_before);
    mln_alloc_destroy(levels[0]);
}

/* Destroying a pool whose descendants are alive, with blocks in all of them, destroys them
 * too; destroying a middle level leaves the levels above intact. */
static void destroy_with_live_descendants(void)
{
    mln_alloc_t *levels[DEPTH];
    mln_size_t before;
    int level;
    levels[0] = mln_alloc_init(NULL, 8 << 20);
    CHECK(levels[0] != NULL);
    for (level = 1; level < DEPTH; level++) {
        levels[level] = mln_alloc_init(levels[level - 1], 0);
        CHECK(levels[level] != NULL);
    }
    fill_levels(levels, 0, 1);
    before = mln_alloc_available_capacity(levels[0]);
    fill_levels(levels, 1, DEPTH);
    CHECK(mln_alloc_available_capacity(levels[0]) < before);
    /* Destroying level 1 takes levels 2 and 3 with it, and gives all their memory back. */
    mln_alloc_destroy(levels[1]);
    CHECK(mln_alloc_available_capacity(levels[0]) == before);
    for (level = 0; level < PER_LEVEL; level++)
        CHECK(holds(blocks[0][level], size_of(0, level), (uint32_t)level));
    /* New children of the root work as before. */
    levels[1] = mln_alloc_init(levels[0], 0);
    levels[2] = mln_alloc_init(levels[1], 0);
    CHECK(levels[2] != NULL && mln_alloc_m(levels[2], 100) != NULL);
    /* Destroying the root takes everything. */
    mln_alloc_destroy(levels[0]);
    memset(blocks, 0, sizeof blocks);
}

static void shared_cascade(void)
{
    struct counting_lock l = {0, 0, 0, 0};
    mln_alloc_t *levels[DEPTH];
    mln_size_t initial;
    int level, i, locks;
    levels[0] = mln_alloc_shm_init(32 << 20, &l, count_lock, count_unlock);
    CHECK(levels[0] != NULL);
    l.held = 1; /* the caller holds the lock for calls on the shared pool itself */
    initial = mln_alloc_available_capacity(levels[0]);
    l.held = 0;
    for (level = 1; level < DEPTH; level++) {
        levels[level] = mln_alloc_init(levels[level - 1], level == 2 ? 4 << 20 : 0);
        CHECK(levels[level] != NULL);
    }
    CHECK(l.locks == 0);
    /* Blocks in the shared pool itself, under the caller's lock. */
    l.held = 1;
    for (i = 0; i < PER_LEVEL; i++) {
        blocks[0][i] = mln_alloc_m(levels[0], size_of(0, i));
        CHECK(blocks[0][i] != NULL);
        fill(blocks[0][i], size_of(0, i), (uint32_t)i);
    }
    l.held = 0;
    locks = l.locks;
    CHECK(locks == 0);
    /* Blocks in the children, which lock the shared pool for each chunk they take, at any
     * depth. */
    for (level = 1; level < DEPTH; level++) {
        for (i = 0; i < PER_LEVEL; i++) {
            blocks[level][i] = mln_alloc_m(levels[level], size_of(level, i));
            CHECK(blocks[level][i] != NULL && ALIGNED16(blocks[level][i]));
            fill(blocks[level][i], size_of(level, i), (uint32_t)(level * PER_LEVEL + i));
        }
        CHECK(l.locks > locks && !l.held);
        locks = l.locks;
    }
    check_levels();
    /* Free half of every level by pointer alone: the shared pool's own blocks under the lock,
     * the children's without it. */
    l.held = 1;
    for (i = 0; i < PER_LEVEL; i += 2) {
        mln_alloc_free(blocks[0][i]);
        blocks[0][i] = NULL;
    }
    l.held = 0;
    for (level = 1; level < DEPTH; level++)
        for (i = 0; i < PER_LEVEL; i += 2) {
            mln_alloc_free(blocks[level][i]);
            blocks[level][i] = NULL;
        }
    CHECK(!l.held);
    check_levels();
    /* Destroying level 1 with the levels below it alive gives every chunk back. */
    mln_alloc_destroy(levels[1]);
    CHECK(!l.held);
    l.held = 1;
    for (i = 1; i < PER_LEVEL; i += 2) {
        CHECK(holds(blocks[0][i], size_of(0, i), (uint32_t)i));
        mln_alloc_free(blocks[0][i]);
    }
    /* Every byte is back: the shared pool's count is exact. */
    CHECK(mln_alloc_available_capacity(levels[0]) == initial);
    l.held = 0;
    memset(blocks, 0, sizeof blocks);
    /* A shared pool destroyed with children alive. */
    levels[1] = mln_alloc_init(levels[0], 0);
    levels[2] = mln_alloc_init(levels[1], 0);
    CHECK(mln_alloc_m(levels[2], 5000) != NULL);
    mln_alloc_destroy(levels[0]);
    CHECK(!l.held);
}

int main(void)
{
    heap_cascade();
    destroy_with_live_descendants();
    shared_cascade();
    printf("cascade: ok\n");
    return 0;
}
