/*
 * loop_offload: runs a job from a loop-free layer (the guard's bans.state write) on the
 * libuv thread pool and reports back on the loop thread. It exists so the guard can keep its
 * writes off the loop without naming a uv type: the worker, which owns the loop, supplies
 * this as guard_opts.offload.
 */
#include "worker/loop_offload.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

struct offload_job {
    uv_work_t req;
    void (*work)(void *arg);
    void (*done)(void *arg, bool ran);
    void *arg;
};

static void on_work(uv_work_t *req)
{
    struct offload_job *j = req->data;
    j->work(j->arg);
}

static void on_after_work(uv_work_t *req, int status)
{
    struct offload_job *j = req->data;
    void (*done)(void *, bool) = j->done;
    void *arg = j->arg;
    free(j);
    done(arg, status != UV_ECANCELED);
}

int loop_offload_queue(void *loop, void (*work)(void *arg), void (*done)(void *arg, bool ran),
                       void *arg)
{
    struct offload_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->req.data = j;
    j->work = work;
    j->done = done;
    j->arg = arg;
    int rc = uv_queue_work(loop, &j->req, on_work, on_after_work);
    if (rc != 0)
        free(j);
    return rc;
}
