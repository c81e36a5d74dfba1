/* The header in a strict C89 program: mln_alloc_init takes both of its arguments. */
#include <stdio.h>
#include <string.h>
#include "mln_alloc.h"

int main(void)
{
    mln_alloc_t *root, *child;
    char *p;

    root = mln_alloc_init(NULL, 0);
    if (root == NULL) {
        fprintf(stderr, "root init failed\n");
        return 1;
    }
    child = mln_alloc_init(root, 64 * 1024);
    if (child == NULL) {
        fprintf(stderr, "child init failed\n");
        return 1;
    }
    p = (char *)mln_alloc_m(child, 6);
    if (p == NULL) {
        fprintf(stderr, "alloc failed\n");
        return 1;
    }
    memcpy(p, "hello", 6);
    if (strcmp(p, "hello") != 0 || mln_alloc_available_capacity(root) != M_ALLOC_INFINITE_SIZE) {
        fprintf(stderr, "read back or capacity wrong\n");
        return 1;
    }
    mln_alloc_free(p);
    mln_alloc_destroy(child);
    mln_alloc_destroy(root);
    printf("c89: ok\n");
    return 0;
}
