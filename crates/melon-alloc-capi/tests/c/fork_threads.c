/* fork() while other threads are inside the library: one allocates and frees in a heap pool of
 * its own (each free consults the process's table of shared pools), one makes and destroys
 * child pools of a shared pool (changing that table), one makes and destroys shared pools.
 * Each forked process checks that the copy of a pool made from the shared pool before the fork
 * hands out nothing, and that making pools, heap and shared, completes. An alarm turns a
 * process that hangs into a failure; the parent checks every child's status. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

#define FORKS 200
#define THREADS 3
/* Seconds a forked process may take before its alarm kills it: far more than it needs. */
#define PATIENCE 20

/* Pools made from the shared pool before the forks, at two depths, each holding a chunk. */
#define MADE_BEFORE 3
static mln_alloc_t *shm, *before_fork[MADE_BEFORE];
static volatile int stop;

static void *heap_churn(void *arg)
{
    mln_alloc_t *mine = mln_alloc_init(NULL, 0);
    (void)arg;
    CHECK(mine != NULL);
    while (!stop) {
        void *p = mln_alloc_m(mine, 64);
        CHECK(p != NULL);
        mln_alloc_free(p);
    }
    mln_alloc_destroy(mine);
    return NULL;
}

static void *children_churn(void *arg)
{
    (void)arg;
    while (!stop) {
        mln_alloc_t *child = mln_alloc_init(shm, 0);
        void *p;
        CHECK(child != NULL);
        p = mln_alloc_m(child, 64);
        CHECK(p != NULL);
        mln_alloc_free(p);
        mln_alloc_destroy(child);
    }
    return NULL;
}

static void *shared_churn(void *arg)
{
    (void)arg;
    while (!stop) {
        mln_alloc_t *other = mln_alloc_shm_init(64 << 10, NULL, NULL, NULL);
        CHECK(other != NULL);
        mln_alloc_destroy(other);
    }
    return NULL;
}

/* What a forked process checks; it exits 0 when all is well. */
static void in_forked_process(void)
{
    mln_alloc_t *child, *other;
    void *p;
    int i;
    alarm(PATIENCE);
    /* The copies of pools made from the shared pool before the fork are the parent's. */
    for (i = 0; i < MADE_BEFORE; i++) CHECK(mln_alloc_m(before_fork[i], 64) == NULL);
    /* Making pools completes, and they work. */
    child = mln_alloc_init(shm, 0);
    CHECK(child != NULL);
    p = mln_alloc_m(child, 64);
    CHECK(p != NULL);
    mln_alloc_free(p);
    mln_alloc_destroy(child);
    other = mln_alloc_shm_init(64 << 10, NULL, NULL, NULL);
    CHECK(other != NULL);
    mln_alloc_destroy(other);
    child = mln_alloc_init(NULL, 0);
    CHECK(child != NULL);
    mln_alloc_destroy(child);
    _exit(0);
}

int main(void)
{
    void *(*bodies[THREADS])(void *) = {heap_churn, children_churn, shared_churn};
    pthread_t threads[THREADS];
    void *kept[MADE_BEFORE];
    int i, hung = 0;

    /* The built-in lock, so that a forked process needs no lock of the caller's. */
    shm = mln_alloc_shm_init(8 << 20, NULL, NULL, NULL);
    CHECK(shm != NULL);
    before_fork[0] = mln_alloc_init(shm, 0);
    before_fork[1] = mln_alloc_init(before_fork[0], 0); /* a grandchild */
    before_fork[2] = mln_alloc_init(shm, 0);            /* a sibling */
    for (i = 0; i < MADE_BEFORE; i++) {
        CHECK(before_fork[i] != NULL);
        kept[i] = mln_alloc_m(before_fork[i], 64); /* the pool now holds a chunk */
        CHECK(kept[i] != NULL);
    }
    for (i = 0; i < THREADS; i++) CHECK(pthread_create(&threads[i], NULL, bodies[i], NULL) == 0);

    for (i = 0; i < FORKS; i++) {
        int status;
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) in_forked_process();
        CHECK(waitpid(pid, &status, 0) == pid);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
            hung++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "fork %d: forked process failed (status %d)\n", i, status);
            return 1;
        }
    }
    CHECK(hung == 0);

    stop = 1;
    for (i = 0; i < THREADS; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    for (i = 0; i < MADE_BEFORE; i++) mln_alloc_free(kept[i]);
    mln_alloc_destroy(shm);
    printf("fork_threads: ok\n");
    return 0;
}
