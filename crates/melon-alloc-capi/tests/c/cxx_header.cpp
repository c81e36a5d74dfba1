// The header compiled as C++: every declaration, the constant and the one-argument form of
// mln_alloc_init, in a program that links and runs.
#include <cstdio>
#include <cstring>

#include "mln_alloc.h"

namespace {

int lock_cb(void *locker)
{
    ++*static_cast<int *>(locker);
    return 0;
}

int unlock_cb(void *locker)
{
    --*static_cast<int *>(locker);
    return 0;
}

}  // namespace

int main()
{
    static_assert(sizeof(mln_size_t) == sizeof(void *), "mln_size_t is pointer-wide");
    mln_alloc_shm_lock_cb_t lock = lock_cb;
    mln_alloc_t *root = mln_alloc_init(NULL);
    mln_alloc_t *child = mln_alloc_init(root, 1 << 20);
    int depth = 0;
    mln_alloc_t *shm = mln_alloc_shm_init(1 << 20, &depth, lock, unlock_cb);
    if (root == NULL || child == NULL || shm == NULL) return 1;

    char *text = static_cast<char *>(mln_alloc_c(child, 32));
    if (text == NULL || text[31] != 0) return 1;
    std::strcpy(text, "c++");
    text = static_cast<char *>(mln_alloc_re(child, text, 64));
    if (text == NULL || std::strcmp(text, "c++") != 0) return 1;
    mln_alloc_free(text);

    // Calls on the shared pool itself run with its lock held, as the header requires; the
    // library calls no callback then.
    if (lock(&depth) != 0) return 1;
    void *block = mln_alloc_m(shm, 100);
    if (block == NULL || mln_alloc_available_capacity(shm) >= (1 << 20)) return 1;
    mln_alloc_free(block);
    if (depth != 1) return 1;
    if (unlock_cb(&depth) != 0) return 1;
    if (mln_alloc_available_capacity(root) != M_ALLOC_INFINITE_SIZE) return 1;
    if (depth != 0) return 1;

    mln_alloc_destroy(shm);
    mln_alloc_destroy(root);
    std::printf("cxx_header: ok\n");
    return 0;
}
