/*
 * ban_null: the userspace backend. The kernel holds nothing; the ban engine's mirror is what
 * guard_admit checks, so banned sources are dropped after the socket read.
 */
#include <errno.h>
#include <stdlib.h>

#include "guard/ban_backend.h"

static int null_add(struct ban_backend *be, const struct ban_key *key, uint32_t timeout_s,
                    bool replace)
{
    (void)be, (void)key, (void)timeout_s, (void)replace;
    return 0;
}

static int null_del(struct ban_backend *be, const struct ban_key *key)
{
    (void)be, (void)key;
    return 0;
}

static void null_close(struct ban_backend *be, ban_backend_close_cb cb, void *ctx)
{
    free(be);
    if (cb != NULL)
        cb(ctx); /* no handles: closed at once */
}

static const struct ban_backend_ops null_ops = {
    .name = "userspace",
    .add = null_add,
    .del = null_del,
    .close = null_close,
};

int ban_null_new(struct ban_backend **out)
{
    struct ban_backend *be = calloc(1, sizeof(*be));
    if (be == NULL)
        return -ENOMEM;
    be->ops = &null_ops;
    *out = be;
    return 0;
}
