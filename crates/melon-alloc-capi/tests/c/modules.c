/* What the modules of a Melon program do with pools, written from Melon's documented API: a
 * pool per connection made and destroyed thousands of times without freeing its blocks one by
 * one; strings built by appending through mln_alloc_re; a cascade of three pools (a server's,
 * a connection's, a request's) with limits; and a shared pool whose forked workers make pools
 * of their own over it and leave blocks for the master. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mln_alloc.h"

#define CONNECTIONS 2000
#define BUFFERS 6
#define WORKERS 3
#define PER_WORKER 50

/* A buffer chain node, as a connection keeps for what it reads. */
struct chain {
    struct chain *next;
    char *data;
    size_t len;
};

/* A connection's pool holds a header, a chain of buffers and a few strings, and goes away
 * whole: no block is freed on its own. */
static void pools_per_connection(void)
{
    uint64_t random = 7;
    int i, b;
    for (i = 0; i < CONNECTIONS; i++) {
        mln_alloc_t *pool = mln_alloc_init(NULL, 0);
        struct chain *head = NULL;
        CHECK(pool != NULL);
        for (b = 0; b < BUFFERS; b++) {
            struct chain *node = mln_alloc_m(pool, sizeof *node);
            CHECK(node != NULL);
            node->len = 64 + next_random(&random) % 9000;
            node->data = mln_alloc_m(pool, node->len);
            CHECK(node->data != NULL && ALIGNED16(node->data));
            fill(node->data, node->len, (uint32_t)(i * BUFFERS + b));
            node->next = head;
            head = node;
        }
        for (b = BUFFERS - 1; head != NULL; head = head->next, b--)
            CHECK(holds(head->data, head->len, (uint32_t)(i * BUFFERS + b)));
        mln_alloc_destroy(pool);
    }
}

/* Appends `piece` to the string at `*text`, of `*len` bytes, growing it with mln_alloc_re as
 * a string module does. */
static void append(mln_alloc_t *pool, char **text, size_t *len, const char *piece)
{
    size_t add = strlen(piece);
    char *grown = mln_alloc_re(pool, *text, *len + add + 1);
    CHECK(grown != NULL);
    memcpy(grown + *len, piece, add + 1);
    *text = grown;
    *len += add;
}

static void strings_built_by_realloc(void)
{
    mln_alloc_t *pool = mln_alloc_init(NULL, 0);
    char *text = NULL;
    size_t len = 0, i;
    char expected[64];
    CHECK(pool != NULL);
    append(pool, &text, &len, "");
    for (i = 0; i < 3000; i++) {
        snprintf(expected, sizeof expected, "%zu,", i);
        append(pool, &text, &len, expected);
    }
    /* The whole string kept every piece through every move. */
    for (i = 0, len = 0; i < 3000; i++) {
        snprintf(expected, sizeof expected, "%zu,", i);
        CHECK(strncmp(text + len, expected, strlen(expected)) == 0);
        len += strlen(expected);
    }
    CHECK(text[len] == '\0');
    /* A shrink keeps the block and its start. */
    CHECK(mln_alloc_re(pool, text, 16) == text && strncmp(text, "0,1,2,", 6) == 0);
    mln_alloc_free(text);
    mln_alloc_destroy(pool);
}

static void a_cascade_of_three(void)
{
    mln_alloc_t *server = mln_alloc_init(NULL, 4 << 20);
    mln_size_t start;
    int round;
    CHECK(server != NULL);
    start = mln_alloc_available_capacity(server);
    for (round = 0; round < 200; round++) {
        mln_alloc_t *connection = mln_alloc_init(server, 1 << 20);
        mln_alloc_t *request;
        void *kept, *body;
        CHECK(connection != NULL);
        kept = mln_alloc_m(connection, 300);
        request = mln_alloc_init(connection, 256 << 10);
        CHECK(kept != NULL && request != NULL);
        body = mln_alloc_c(request, 100000);
        CHECK(body != NULL && all_zero(body, 100000));
        /* More than the request's limit: refused, and nothing charged. */
        CHECK(mln_alloc_m(request, 300 << 10) == NULL);
        CHECK(mln_alloc_available_capacity(connection) < (1 << 20) - 100000);
        mln_alloc_destroy(request);
        /* The request's memory is back with the connection, which holds its own block. */
        CHECK(mln_alloc_available_capacity(connection) >= (1 << 20) - (16 << 10));
        mln_alloc_free(kept);
        if (round % 2 == 0) {
            mln_alloc_destroy(connection);
        } else {
            /* Destroying the server's child with a grandchild alive destroys both. */
            CHECK(mln_alloc_init(connection, 0) != NULL);
            mln_alloc_destroy(connection);
        }
        CHECK(mln_alloc_available_capacity(server) == start);
    }
    mln_alloc_destroy(server);
}

/* A table the master allocates in the shared pool before the fork: each worker leaves the
 * blocks it allocated from the shared pool itself there, for the master to read and free. */
struct table {
    char *entries[WORKERS][PER_WORKER];
};

static mln_alloc_t *shm;
static struct table *table;

static void worker(int id)
{
    /* A heap pool of the worker's own over the shared pool, for its scratch work. */
    mln_alloc_t *scratch = mln_alloc_init(shm, 0);
    int i;
    CHECK(scratch != NULL);
    for (i = 0; i < PER_WORKER; i++) {
        char *temp = mln_alloc_m(scratch, 100 + (size_t)i * 37);
        char *entry = mln_alloc_m(shm, 48);
        CHECK(temp != NULL && entry != NULL);
        snprintf(temp, 100, "worker %d entry %d", id, i);
        memcpy(entry, temp, strlen(temp) + 1);
        table->entries[id][i] = entry;
        if (i % 3 == 0) mln_alloc_free(temp);
    }
    mln_alloc_destroy(scratch);
    _exit(0);
}

static void a_shared_pool_with_workers(void)
{
    mln_size_t start;
    char expected[64];
    int w, i, status;
    shm = mln_alloc_shm_init(8 << 20, NULL, NULL, NULL);
    CHECK(shm != NULL);
    start = mln_alloc_available_capacity(shm);
    table = mln_alloc_c(shm, sizeof *table);
    CHECK(table != NULL);
    for (w = 0; w < WORKERS; w++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) worker(w);
    }
    for (w = 0; w < WORKERS; w++) {
        CHECK(wait(&status) > 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (w = 0; w < WORKERS; w++) {
        for (i = 0; i < PER_WORKER; i++) {
            snprintf(expected, sizeof expected, "worker %d entry %d", w, i);
            CHECK(table->entries[w][i] != NULL && strcmp(table->entries[w][i], expected) == 0);
            mln_alloc_free(table->entries[w][i]);
        }
    }
    mln_alloc_free(table);
    /* Every block is back, and every chunk the workers' pools took. */
    CHECK(mln_alloc_available_capacity(shm) == start);
    mln_alloc_destroy(shm);
}

int main(void)
{
    pools_per_connection();
    strings_built_by_realloc();
    a_cascade_of_three();
    a_shared_pool_with_workers();
    printf("modules: ok\n");
    return 0;
}
