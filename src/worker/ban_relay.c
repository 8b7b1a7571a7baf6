/*
 * ban_relay: the ban backend of a worker's guard. The process has one real backend (the
 * nftables netlink socket, or userspace drops), owned by the control thread; each worker's
 * guard decides bans for the sources steered to it and the relay carries every add and
 * delete to the control thread through the worker's outbox, which applies them to the
 * real backend in its batches. The guard's userspace mirror stays the worker's own (no
 * lock on the hot path: a source's packets all reach its owner).
 *
 * configure and read_back call the real backend directly: the guard calls them at start
 * (the control thread waits for the worker's start) and on a reload (run by the control
 * thread itself while every worker is parked), so they never run beside the control loop.
 * read_back gives the guard only the bans whose source this worker owns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport/reuseport_steer.h"
#include "worker/worker_priv.h"

struct ban_relay {
    struct ban_backend base;
    struct ban_backend_ops ops;
    struct worker *w;
    struct ban_backend *real;
};

unsigned ban_key_owner(const struct ban_key *k, unsigned n_workers)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (k->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, k->addr, 4);
    } else if (k->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, k->addr, 16);
    }
    return reuseport_steer_index((const struct sockaddr *)&ss, n_workers);
}

static int relay_send(struct ban_relay *r, uint8_t kind, const struct ban_key *key,
                      uint32_t timeout_s, bool replace)
{
    struct outbox_msg m = {.kind = kind, .key = *key, .timeout_s = timeout_s, .replace = replace};
    return worker_to_control(r->w, &m) ? 0 : -ENOBUFS;
}

static int relay_add(struct ban_backend *be, const struct ban_key *key, uint32_t timeout_s,
                     bool replace)
{
    return relay_send((struct ban_relay *)be, OUTBOX_BAN_ADD, key, timeout_s, replace);
}

static int relay_del(struct ban_backend *be, const struct ban_key *key)
{
    return relay_send((struct ban_relay *)be, OUTBOX_BAN_DEL, key, 0, false);
}

static void relay_close(struct ban_backend *be, ban_backend_close_cb cb, void *ctx)
{
    free(be);
    if (cb)
        cb(ctx);
}

static int relay_configure(struct ban_backend *be, const struct ban_nft_opts *o, char *err,
                           size_t errcap)
{
    struct ban_relay *r = (struct ban_relay *)be;
    return r->real->ops->configure(r->real, o, err, errcap);
}

struct owned_ctx {
    ban_backend_restore_cb cb;
    void *arg;
    unsigned index, n;
};

static void on_owned(void *arg, const struct ban_key *key, uint64_t remaining_ms,
                     uint64_t timeout_ms)
{
    struct owned_ctx *c = arg;
    if (ban_key_owner(key, c->n) == c->index)
        c->cb(c->arg, key, remaining_ms, timeout_ms);
}

static int relay_read_back(struct ban_backend *be, ban_backend_restore_cb cb, void *arg,
                           char *err, size_t errcap)
{
    struct ban_relay *r = (struct ban_relay *)be;
    struct owned_ctx c = {.cb = cb,
                          .arg = arg,
                          .index = r->w->index,
                          .n = control_n_workers(worker_control(r->w))};
    return r->real->ops->read_back(r->real, on_owned, &c, err, errcap);
}

int ban_relay_new(struct ban_backend **out, struct worker *w)
{
    struct ban_backend *real = control_ban_backend(worker_control(w));
    if (!real)
        return -EINVAL;
    struct ban_relay *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->w = w;
    r->real = real;
    r->ops = (struct ban_backend_ops){
        .name = real->ops->name,
        .add = relay_add,
        .del = relay_del,
        .close = relay_close,
        .is_kernel = real->ops->is_kernel,
        .configure = real->ops->configure ? relay_configure : NULL,
        .read_back = real->ops->read_back ? relay_read_back : NULL,
    };
    r->base.ops = &r->ops;
    *out = &r->base;
    return 0;
}
