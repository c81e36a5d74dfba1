/* A process forked from one that made a shared pool with the pool's own lock closes every
 * descriptor from 3 up, the pool's among them, as the header tells a daemon not to: it takes
 * the pool's lock no more, and its allocations from the pool are NULL, while the parent's go on
 * as before. */
#define _GNU_SOURCE
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

int main(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
    void *block;
    pid_t pid;
    int status, fd;
    CHECK(shm != NULL);
    block = mln_alloc_m(shm, 64);
    CHECK(block != NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        for (fd = 3; fd < 1024; fd++) close(fd);
        CHECK(mln_alloc_m(shm, 64) == NULL);
        CHECK(mln_alloc_c(shm, 64) == NULL);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    mln_alloc_free(block);
    block = mln_alloc_m(shm, 64);
    CHECK(block != NULL);
    mln_alloc_free(block);
    mln_alloc_destroy(shm);
    printf("closed_descriptors: ok\n");
    return 0;
}
