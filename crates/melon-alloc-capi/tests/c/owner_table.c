/* A pool made from a shared pool records its chunks as its process's, in the shared pool's
 * table of 128 processes, so that a death gives them back. With all 128 places held by living
 * processes, a pool made from the shared pool in one more process hands out nothing: each
 * allocation is a NULL. Once one of the 128 has died, the next allocation takes its place. */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

#define PLACES 128

static mln_alloc_t *shm;

/* A worker: allocates through a pool of its own made from the shared pool, says so on `ready`,
 * and waits to be killed. */
static void hold_a_place(int ready)
{
    mln_alloc_t *pool = mln_alloc_init(shm, 0);
    char byte = 1;
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 64) != NULL);
    CHECK(write(ready, &byte, 1) == 1);
    for (;;) pause();
}

/* The process past the table: refused while it is full, served once a place is free. */
static void one_too_many(int ready, int go)
{
    mln_alloc_t *pool = mln_alloc_init(shm, 0);
    char byte = 1;
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 64) == NULL);
    CHECK(mln_alloc_c(pool, 64) == NULL);
    CHECK(write(ready, &byte, 1) == 1);
    CHECK(read(go, &byte, 1) == 1);
    CHECK(mln_alloc_m(pool, 64) != NULL);
    mln_alloc_destroy(pool);
    _exit(0);
}

int main(void)
{
    pid_t holders[PLACES], last;
    int ready[2], go[2], status, i;
    char byte;

    shm = mln_alloc_shm_init(16u << 20, NULL, NULL, NULL);
    CHECK(shm != NULL);
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    for (i = 0; i < PLACES; i++) {
        holders[i] = fork();
        CHECK(holders[i] >= 0);
        if (holders[i] == 0) hold_a_place(ready[1]);
        CHECK(read(ready[0], &byte, 1) == 1);
    }
    last = fork();
    CHECK(last >= 0);
    if (last == 0) one_too_many(ready[1], go[0]);
    CHECK(read(ready[0], &byte, 1) == 1);

    CHECK(kill(holders[0], SIGKILL) == 0);
    CHECK(waitpid(holders[0], &status, 0) == holders[0]);
    CHECK(write(go[1], &byte, 1) == 1);
    CHECK(waitpid(last, &status, 0) == last);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    for (i = 1; i < PLACES; i++) {
        CHECK(kill(holders[i], SIGKILL) == 0);
        CHECK(waitpid(holders[i], &status, 0) == holders[i]);
    }
    mln_alloc_destroy(shm);
    printf("owner_table: ok\n");
    return 0;
}
