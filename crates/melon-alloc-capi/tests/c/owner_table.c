/* A pool made from a shared pool records its chunks as its process's, in the shared pool's
 * table of 128 processes, so that a death gives them back. With all 128 places held by living
 * processes, a pool made from the shared pool in one more process hands out nothing: each
 * allocation is a NULL. Once one of the 128 has died, the next allocation takes its place. */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

#define PLACES 128

static mln_alloc_t *shm;

/* The ends of the two pipes: a byte on `ready` from each child that is set, one on `go` for the
 * last child. */
static int ready[2], go[2];

/* A worker: allocates through a pool of its own made from the shared pool, says so on `ready`,
 * and waits to be killed, or for its parent to end (a failed check there must not leave it
 * behind, holding the test's output open). It closes its ends of the pipes, so that a child
 * that fails before it writes leaves the parent an end of file rather than a wait. */
static void hold_a_place(pid_t parent)
{
    mln_alloc_t *pool;
    char byte = 1;
    CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() == parent);
    CHECK(close(ready[0]) == 0 && close(go[0]) == 0 && close(go[1]) == 0);
    pool = mln_alloc_init(shm, 0);
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 64) != NULL);
    CHECK(write(ready[1], &byte, 1) == 1);
    CHECK(close(ready[1]) == 0);
    for (;;) pause();
}

/* Reads the byte a child sends on `ready`; fails, rather than waits for good, when none comes
 * within a minute (a child that failed before it wrote, while others keep the pipe open). */
static void await_ready(void)
{
    struct pollfd readable;
    char byte;
    readable.fd = ready[0];
    readable.events = POLLIN;
    CHECK(poll(&readable, 1, 60 * 1000) == 1);
    CHECK(read(ready[0], &byte, 1) == 1);
}

/* The process past the table: refused while it is full, served once a place is free. */
static void one_too_many(void)
{
    mln_alloc_t *pool;
    char byte = 1;
    CHECK(close(ready[0]) == 0 && close(go[1]) == 0);
    pool = mln_alloc_init(shm, 0);
    CHECK(pool != NULL);
    CHECK(mln_alloc_m(pool, 64) == NULL);
    CHECK(mln_alloc_c(pool, 64) == NULL);
    CHECK(write(ready[1], &byte, 1) == 1);
    CHECK(read(go[0], &byte, 1) == 1);
    CHECK(mln_alloc_m(pool, 64) != NULL);
    mln_alloc_destroy(pool);
    _exit(0);
}

int main(void)
{
    pid_t holders[PLACES], last, parent = getpid();
    int status, i;
    char byte = 1;

    shm = mln_alloc_shm_init(16u << 20, NULL, NULL, NULL);
    CHECK(shm != NULL);
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    for (i = 0; i < PLACES; i++) {
        holders[i] = fork();
        CHECK(holders[i] >= 0);
        if (holders[i] == 0) hold_a_place(parent);
        await_ready();
    }
    last = fork();
    CHECK(last >= 0);
    if (last == 0) one_too_many();
    CHECK(close(ready[1]) == 0 && close(go[0]) == 0);
    await_ready();

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
