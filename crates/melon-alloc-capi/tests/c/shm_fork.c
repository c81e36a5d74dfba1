/* A shared pool across fork(), locked with a process-shared pthread mutex, as Melon's
 * documentation describes: the parent makes the pool, children allocate in it under the lock
 * and leave blocks for the parent, and each child makes a heap pool over it that calls the lock
 * callbacks itself. The mutex checks errors, so a call that took the lock while its caller held
 * it would fail rather than hang. */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

#define CHILDREN 4
#define PER_CHILD 200
#define OWN_BLOCKS 2000
#define FRESH 600

struct shared {
    pthread_mutex_t mutex;
    void *blocks[CHILDREN][PER_CHILD];
    size_t sizes[CHILDREN][PER_CHILD];
    void *gifts[CHILDREN];
};

/* The parent's pools and block, in globals so that a child, which ends with _exit and leaves
 * them to the parent, still reaches them then (memcheck would call them leaked otherwise). */
static mln_alloc_t *shm, *before_fork;
static char *parents;
static void *fresh[FRESH];

/* Lock calls made by this process, and whether its next lock calls should fail. */
static int locks_here;
static int fail_here;

static int lock_cb(void *locker)
{
    int rc;
    if (fail_here) return -1;
    rc = pthread_mutex_lock((pthread_mutex_t *)locker);
    if (rc == 0) locks_here++;
    return rc;
}

static int unlock_cb(void *locker)
{
    return pthread_mutex_unlock((pthread_mutex_t *)locker);
}

static void hold(struct shared *sh)
{
    CHECK(pthread_mutex_lock(&sh->mutex) == 0);
}

static void release(struct shared *sh)
{
    CHECK(pthread_mutex_unlock(&sh->mutex) == 0);
}

static size_t size_of(int child, int i)
{
    if (i % 40 == 39) return (size_t)(40000 + child * 100 + i);
    return (size_t)(1 + (i * 53 + child * 7) % 3000);
}

static uint32_t tag_of(int child, int i)
{
    return (uint32_t)(child * 100000 + i);
}

static void child_main(struct shared *sh, int me)
{
    mln_alloc_t *own;
    static void *own_blocks[OWN_BLOCKS];
    int i;

    /* The gift the parent left: read and freed under the lock. */
    hold(sh);
    CHECK(holds(sh->gifts[me], 1000, 777u + (uint32_t)me));
    mln_alloc_free(sh->gifts[me]);
    sh->gifts[me] = NULL;
    release(sh);

    /* Blocks in the shared pool itself, under the caller's lock; some resized. */
    for (i = 0; i < PER_CHILD; i++) {
        void *p;
        size_t size = size_of(me, i);
        hold(sh);
        p = mln_alloc_m(shm, size / 2 + 1);
        CHECK(p != NULL && ALIGNED16(p));
        fill(p, size / 2 + 1, tag_of(me, i));
        p = mln_alloc_re(shm, p, size + 1);
        CHECK(p != NULL && holds(p, size / 2 + 1, tag_of(me, i)));
        fill(p, size, tag_of(me, i));
        sh->blocks[me][i] = p;
        sh->sizes[me][i] = size;
        release(sh);
    }
    /* The pool itself never called the callbacks. */
    CHECK(locks_here == 0);

    /* A pool made before the fork belongs to the parent: its copy here hands out nothing. */
    CHECK(mln_alloc_m(before_fork, 64) == NULL);
    CHECK(mln_alloc_m(before_fork, 50000) == NULL);
    /* Its block stays the parent's: freeing it here, or destroying the copy of its pool,
     * changes nothing that the parent sees (the parent checks). */
    mln_alloc_free(parents);
    CHECK(holds(parents, 64, 4242));
    mln_alloc_destroy(before_fork);

    /* A heap pool of this process over the shared pool, which locks for itself. */
    own = mln_alloc_init(shm, 0);
    CHECK(own != NULL);
    for (i = 0; i < OWN_BLOCKS; i++) {
        size_t size = size_of(me + 10, i);
        own_blocks[i] = mln_alloc_m(own, size);
        CHECK(own_blocks[i] != NULL && ALIGNED16(own_blocks[i]));
        fill(own_blocks[i], size, tag_of(me + 10, i));
    }
    CHECK(locks_here > 0);
    for (i = 0; i < OWN_BLOCKS; i++) {
        CHECK(holds(own_blocks[i], size_of(me + 10, i), tag_of(me + 10, i)));
        if (i % 3 == 0) {
            own_blocks[i] = mln_alloc_re(own, own_blocks[i], size_of(me + 10, i) * 2);
            CHECK(own_blocks[i] != NULL);
            CHECK(holds(own_blocks[i], size_of(me + 10, i), tag_of(me + 10, i)));
        }
        mln_alloc_free(own_blocks[i]);
    }
    mln_alloc_destroy(own);

    /* A failing lock fails the call, cleanly, and the next call works. */
    own = mln_alloc_init(shm, 0);
    CHECK(own != NULL);
    fail_here = 1;
    CHECK(mln_alloc_m(own, 64) == NULL);
    fail_here = 0;
    own_blocks[0] = mln_alloc_m(own, 64);
    CHECK(own_blocks[0] != NULL);
    mln_alloc_free(own_blocks[0]);
    mln_alloc_destroy(own);
}

int main(void)
{
    struct shared *sh;
    pthread_mutexattr_t attr;
    mln_size_t initial;
    pid_t pids[CHILDREN];
    int i, j;

    sh = (struct shared *)mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    CHECK(pthread_mutexattr_init(&attr) == 0);
    CHECK(pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) == 0);
    CHECK(pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK) == 0);
    CHECK(pthread_mutex_init(&sh->mutex, &attr) == 0);
    pthread_mutexattr_destroy(&attr);

    shm = mln_alloc_shm_init(64 << 20, &sh->mutex, lock_cb, unlock_cb);
    CHECK(shm != NULL);
    hold(sh);
    initial = mln_alloc_available_capacity(shm);
    for (i = 0; i < CHILDREN; i++) {
        sh->gifts[i] = mln_alloc_m(shm, 1000);
        CHECK(sh->gifts[i] != NULL);
        fill(sh->gifts[i], 1000, 777u + (uint32_t)i);
    }
    release(sh);
    CHECK(locks_here == 0);

    /* A heap pool of the parent over the shared pool, with a block in it. */
    before_fork = mln_alloc_init(shm, 0);
    CHECK(before_fork != NULL);
    parents = (char *)mln_alloc_m(before_fork, 64);
    CHECK(parents != NULL);
    fill(parents, 64, 4242);

    fflush(stdout);
    for (i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            locks_here = 0;
            child_main(sh, i);
            _exit(0);
        }
    }
    for (i = 0; i < CHILDREN; i++) {
        int status;
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed (status %d)\n", i, status);
            return 1;
        }
    }

    /* The parent's pool still works, and its block is intact and still in use: the children's
     * frees of it did not put it back on a free list, so the pool does not hand it out. */
    CHECK(holds(parents, 64, 4242));
    for (i = 0; i < FRESH; i++) {
        fresh[i] = mln_alloc_m(before_fork, 64);
        CHECK(fresh[i] != NULL && fresh[i] != parents);
    }
    for (i = 0; i < FRESH; i++) mln_alloc_free(fresh[i]);
    CHECK(holds(parents, 64, 4242));
    mln_alloc_free(parents);
    parents = (char *)mln_alloc_m(before_fork, 64);
    CHECK(parents != NULL);
    mln_alloc_free(parents);
    mln_alloc_destroy(before_fork);

    /* Every block the children left is intact; the parent frees them. */
    hold(sh);
    for (i = 0; i < CHILDREN; i++) {
        CHECK(sh->gifts[i] == NULL);
        for (j = 0; j < PER_CHILD; j++) {
            CHECK(sh->sizes[i][j] == size_of(i, j));
            CHECK(holds(sh->blocks[i][j], sh->sizes[i][j], tag_of(i, j)));
            mln_alloc_free(sh->blocks[i][j]);
        }
    }
    /* Every byte is back, children's pools included. */
    CHECK(mln_alloc_available_capacity(shm) == initial);
    release(sh);

    mln_alloc_destroy(shm);
    CHECK(pthread_mutex_destroy(&sh->mutex) == 0);
    CHECK(munmap(sh, sizeof *sh) == 0);
    printf("shm_fork: ok\n");
    return 0;
}
