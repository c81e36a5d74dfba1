/* What the test programs that fork workers share: waiting for a worker that must exit 0. */
#ifndef WORKERS_H
#define WORKERS_H

#include <sys/types.h>
#include <sys/wait.h>

#include "check.h"

static void reap(pid_t pid)
{
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

#endif
