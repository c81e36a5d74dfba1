/* A producer worker allocates messages from its own pool made from a shared pool, hands each
 * off, and passes it to a consumer worker, which checks it and frees it: every block comes back.
 * The producer destroys its pool while the consumer still holds some of its messages; their
 * chunks come back once the consumer has freed them. What hand-off refuses changes nothing.
 * Then a worker hands a message off to a receiver killed holding it, and exits: its chunk waits
 * for a free that never comes, until the master gives it back with mln_alloc_reclaim_orphans. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"
#include "workers.h"

#define MESSAGES 20000
#define SLOTS 64

/* A ring of messages from one producer to one consumer, in the shared pool. */
struct ring {
    void *slot[SLOTS];
    unsigned tag[SLOTS];
    unsigned size[SLOTS];
    unsigned head; /* written by the producer */
    unsigned tail; /* written by the consumer */
    unsigned producer_done;
};

static unsigned message_size(unsigned i)
{
    return 16 + (i * 37) % 400;
}

static void put(struct ring *ring, void *block, unsigned tag, unsigned size)
{
    unsigned head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    while (head - __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) == SLOTS) usleep(50);
    ring->slot[head % SLOTS] = block;
    ring->tag[head % SLOTS] = tag;
    ring->size[head % SLOTS] = size;
    __atomic_store_n(&ring->head, head + 1, __ATOMIC_RELEASE);
}

/* A pointer into mapped memory whose 16 KiB-aligned start, where a chunk header would be, is
 * not mapped: hand-off must refuse it without reading there. */
static void *outside_unmapped_chunk(void)
{
    const size_t chunk = 16 * 1024;
    char *area = (char *)mmap(NULL, 3 * chunk, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *start;
    CHECK(area != (char *)MAP_FAILED);
    start = (char *)(((uintptr_t)area + chunk - 1) & ~(uintptr_t)(chunk - 1));
    CHECK(munmap(start, 4096) == 0);
    return start + 4096 + 64;
}

static void produce(mln_alloc_t *shm, struct ring *ring)
{
    mln_alloc_t *mine = mln_alloc_init(shm, 0);
    mln_alloc_t *heap = mln_alloc_init(NULL, 0);
    void *own, *kept, *local;
    unsigned i;
    CHECK(mine != NULL && heap != NULL);

    /* Refused, with nothing changed: no pool, a block of another pool, a pool not made from a
     * shared pool, the shared pool itself, and a block handed off twice. */
    kept = mln_alloc_m(mine, 100);
    local = mln_alloc_m(heap, 100);
    own = mln_alloc_m(shm, 100);
    CHECK(kept != NULL && local != NULL && own != NULL);
    fill(kept, 100, 1);
    CHECK(mln_alloc_hand_off(NULL, kept) == -1);
    CHECK(mln_alloc_hand_off(mine, NULL) == -1);
    CHECK(mln_alloc_hand_off(heap, local) == -1);
    CHECK(mln_alloc_hand_off(shm, own) == -1);
    CHECK(mln_alloc_hand_off(mine, outside_unmapped_chunk()) == -1);
    CHECK(mln_alloc_hand_off(mine, kept) == 0);
    CHECK(mln_alloc_hand_off(mine, kept) == -1);
    /* A handed-off block is not resized; it stays as it was. */
    CHECK(mln_alloc_re(mine, kept, 50) == NULL && holds(kept, 100, 1));
    /* The process that handed it off may free it itself. */
    mln_alloc_free(kept);
    mln_alloc_free(local);
    mln_alloc_free(own);
    mln_alloc_destroy(heap);

    for (i = 0; i < MESSAGES; i++) {
        unsigned size = message_size(i);
        void *block = mln_alloc_m(mine, size);
        CHECK(block != NULL);
        fill(block, size, i);
        CHECK(mln_alloc_hand_off(mine, block) == 0);
        put(ring, block, i, size);
    }
    /* The consumer still holds some messages: their chunks wait for them. */
    mln_alloc_destroy(mine);
    __atomic_store_n(&ring->producer_done, 1, __ATOMIC_RELEASE);
}

static void consume(struct ring *ring)
{
    unsigned i;
    for (i = 0; i < MESSAGES; i++) {
        unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_RELAXED);
        void *block;
        while (__atomic_load_n(&ring->head, __ATOMIC_ACQUIRE) == tail) usleep(50);
        block = ring->slot[tail % SLOTS];
        CHECK(ring->tag[tail % SLOTS] == i);
        CHECK(holds(block, ring->size[tail % SLOTS], i));
        /* Hold the last messages until the producer has destroyed its pool. */
        if (i == MESSAGES - SLOTS / 2)
            while (!__atomic_load_n(&ring->producer_done, __ATOMIC_ACQUIRE)) usleep(100);
        mln_alloc_free(block);
        __atomic_store_n(&ring->tail, tail + 1, __ATOMIC_RELEASE);
    }
}

static pid_t worker(mln_alloc_t *shm, struct ring *ring, int producer)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* A worker whose master failed a check must not wait for good. */
        CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
        if (producer)
            produce(shm, ring);
        else
            consume(ring);
        _exit(0);
    }
    return pid;
}

int main(void)
{
    mln_alloc_t *shm = mln_alloc_shm_init(8 << 20, NULL, NULL, NULL);
    struct ring *ring;
    mln_size_t start;
    pid_t producer, consumer;
    CHECK(shm != NULL);
    ring = (struct ring *)mln_alloc_c(shm, sizeof *ring);
    CHECK(ring != NULL);
    start = mln_alloc_available_capacity(shm);
    consumer = worker(shm, ring, 0);
    producer = worker(shm, ring, 1);
    reap(producer);
    reap(consumer);
    /* Every message's chunk came back, orphaned or not. */
    CHECK(mln_alloc_available_capacity(shm) == start);
    CHECK(mln_alloc_reclaim_orphans(shm) == 0);

    /* A message whose receiver is killed holding it. */
    producer = fork();
    CHECK(producer >= 0);
    if (producer == 0) {
        mln_alloc_t *mine = mln_alloc_init(shm, 0);
        void *block;
        CHECK(mine != NULL);
        block = mln_alloc_m(mine, 300);
        CHECK(block != NULL && mln_alloc_hand_off(mine, block) == 0);
        ring->slot[0] = block;
        _exit(0);
    }
    reap(producer);
    consumer = fork();
    CHECK(consumer >= 0);
    if (consumer == 0) {
        CHECK(ring->slot[0] != NULL);
        pause();
        _exit(0);
    }
    CHECK(kill(consumer, SIGKILL) == 0);
    CHECK(waitpid(consumer, NULL, 0) == consumer);
    CHECK(mln_alloc_available_capacity(shm) < start);
    CHECK(mln_alloc_reclaim_orphans(NULL) == 0);
    CHECK(mln_alloc_reclaim_orphans(shm) == 16 * 1024);
    CHECK(mln_alloc_available_capacity(shm) == start);
    mln_alloc_free(ring);
    mln_alloc_destroy(shm);
    printf("hand_off: ok\n");
    return 0;
}
