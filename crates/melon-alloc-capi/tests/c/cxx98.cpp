// The header in a GNU C++98 program built with -pedantic -Werror: Melon's one-argument
// mln_alloc_init, through a variadic macro, which GNU C++ had before C++11 made them standard.
#include <cstdio>
#include <cstring>

#include "mln_alloc.h"

int main()
{
    mln_alloc_t *root = mln_alloc_init(NULL);
    mln_alloc_t *child = mln_alloc_init(root, 1 << 20);
    char *text;
    if (root == NULL || child == NULL) return 1;
    text = static_cast<char *>(mln_alloc_m(child, 6));
    if (text == NULL) return 1;
    std::memcpy(text, "hello", 6);
    if (std::strcmp(text, "hello") != 0) return 1;
    if (mln_alloc_available_capacity(root) != M_ALLOC_INFINITE_SIZE) return 1;
    mln_alloc_destroy(root);
    std::printf("cxx98: ok\n");
    return 0;
}
