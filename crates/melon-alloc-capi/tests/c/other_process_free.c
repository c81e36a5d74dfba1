/* A block of a pool made from a shared pool is that pool's process's to free: a free of it by
 * another process does nothing. The block stays in use, its bytes as its owner wrote them, and
 * is not handed out again, until its owner destroys the pool, which gives the pool's memory back
 * to the shared pool. */
#define _GNU_SOURCE
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"
#include "workers.h"

struct mailbox {
    void *volatile block;
    volatile int step;
};

static void await_step(struct mailbox *box, int step)
{
    while (box->step != step) usleep(1000);
}

int main(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, NULL, NULL, NULL);
    struct mailbox *box;
    mln_size_t start;
    pid_t owner, other;
    CHECK(shm != NULL);
    box = (struct mailbox *)mln_alloc_c(shm, sizeof *box);
    CHECK(box != NULL);
    start = mln_alloc_available_capacity(shm);
    owner = fork();
    CHECK(owner >= 0);
    if (owner == 0) {
        mln_alloc_t *mine = mln_alloc_init(shm, 0);
        void *block, *next;
        CHECK(mine != NULL);
        block = mln_alloc_m(mine, 200);
        CHECK(block != NULL);
        fill(block, 200, 7);
        box->block = block;
        box->step = 1;
        await_step(box, 2);
        CHECK(holds(block, 200, 7));
        /* A block the pool had taken back would be the next one handed out. */
        next = mln_alloc_m(mine, 200);
        CHECK(next != NULL && next != block);
        mln_alloc_destroy(mine);
        _exit(0);
    }
    other = fork();
    CHECK(other >= 0);
    if (other == 0) {
        await_step(box, 1);
        mln_alloc_free(box->block);
        box->step = 2;
        _exit(0);
    }
    reap(other);
    reap(owner);
    CHECK(mln_alloc_available_capacity(shm) == start);
    mln_alloc_free(box);
    mln_alloc_destroy(shm);
    printf("other_process_free: ok\n");
    return 0;
}
