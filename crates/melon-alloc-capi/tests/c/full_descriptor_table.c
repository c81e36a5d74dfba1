/* A worker forked while its parent's table of descriptors is full gets no descriptions of the
 * pool's file from its parent, and can open none of its own: it makes no identity in a shared
 * pool with the pool's own lock, and its calls that need the lock return NULL, where it used to
 * lock under an identity nothing takes over. Once it has descriptors again it makes its own,
 * and its death while it holds the lock, which a kill at any moment of its busy loop may land
 * on, keeps nobody waiting. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

#define ROUNDS 10

/* The soft limit on descriptors lowered to the lowest free number: no descriptor can be opened. */
static void fill_table(void)
{
    struct rlimit limit;
    int lowest = dup(0);
    CHECK(lowest > 0);
    close(lowest);
    CHECK(getrlimit(RLIMIT_NOFILE, &limit) == 0);
    limit.rlim_cur = (rlim_t)lowest;
    CHECK(setrlimit(RLIMIT_NOFILE, &limit) == 0);
}

int main(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
    volatile int *seen = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct rlimit start;
    void *block;
    int round, status;
    CHECK(shm != NULL && seen != MAP_FAILED);
    block = mln_alloc_m(shm, 64);
    CHECK(block != NULL);
    mln_alloc_free(block);
    CHECK(getrlimit(RLIMIT_NOFILE, &start) == 0);
    for (round = 0; round < ROUNDS; round++) {
        pid_t pid;
        *seen = 0;
        fill_table();
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            unsigned size;
            int refused, first, last, fd;
            CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
            /* Every number the fork freed taken too: the copies of the parent's descriptions
             * that the fork handler closed. */
            first = last = open("/dev/null", O_RDONLY);
            while ((fd = open("/dev/null", O_RDONLY)) >= 0) last = fd;
            refused = mln_alloc_m(shm, 64) == NULL;
            if (first >= 0)
                for (fd = first; fd <= last; fd++) close(fd);
            CHECK(setrlimit(RLIMIT_NOFILE, &start) == 0);
            block = mln_alloc_m(shm, 64);
            *seen = refused && block != NULL ? 1 : 2;
            mln_alloc_free(block);
            for (size = 1;; size = size % 5000 + 1) mln_alloc_free(mln_alloc_m(shm, size));
        }
        CHECK(setrlimit(RLIMIT_NOFILE, &start) == 0);
        while (*seen == 0) usleep(1000);
        usleep(5000 + 1000 * round);
        CHECK(kill(pid, SIGKILL) == 0);
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        CHECK(*seen == 1);
        /* A wait for good fails the program rather than hang it. */
        alarm(30);
        block = mln_alloc_m(shm, 100);
        alarm(0);
        CHECK(block != NULL);
        mln_alloc_free(block);
    }
    mln_alloc_destroy(shm);
    printf("full_descriptor_table: ok\n");
    return 0;
}
