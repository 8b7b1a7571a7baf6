/*
 * ban_backend: where the ban engine's decisions take effect.
 *
 * A backend receives a copy of each key. add() and del() must not block: the nftables
 * backend queues a netlink batch on its non-blocking socket (watched on the worker's loop)
 * and reports kernel errors later by log and counter; the userspace backend does nothing
 * (the engine's mirror does the dropping). The worker creates the backend (nft/ban_nft.h or
 * ban_null_new), hands it to the guard in guard_opts, and closes it after guard_free; the
 * guard and the engine only borrow it. Nothing here names a loop type.
 */
#ifndef SIPEDGE_BAN_BACKEND_H
#define SIPEDGE_BAN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/ban.h"

struct ban_backend;

/* What the nftables rules cover. */
struct ban_nft_opts {
    bool drop_all;          /* true: every packet from a banned source; false: listen ports */
    const uint16_t *udp_ports;
    unsigned n_udp_ports;
    const uint16_t *tcp_ports;
    unsigned n_tcp_ports;
    uint8_t ipv6_prefix;    /* ban6 elements are prefixes of this length: the rule masks the
                             * packet's source (0 or 128: whole addresses) */
};

/* One live element read back from the kernel. */
typedef void (*ban_backend_restore_cb)(void *arg, const struct ban_key *key,
                                       uint64_t remaining_ms, uint64_t timeout_ms);
/* Runs once the backend's handles are closed and its memory is released. */
typedef void (*ban_backend_close_cb)(void *ctx);

struct ban_backend_ops {
    const char *name;
    /* Adds key with a kernel timeout. replace: the key may already be present with another
     * timeout (escalation): delete and add in one batch. Returns 0 or -errno (queue full). */
    int (*add)(struct ban_backend *be, const struct ban_key *key, uint32_t timeout_s,
               bool replace);
    /* Removes key (absent is not an error). Returns 0 or -errno. */
    int (*del)(struct ban_backend *be, const struct ban_key *key);
    /* Closes the backend: cb(ctx) runs once its handles are closed (at once when it has
     * none), so the owner keeps its loop running until then. */
    void (*close)(struct ban_backend *be, ban_backend_close_cb cb, void *ctx);
    /* True when a kernel set holds the live bans (a restart reads them back and trusts it). */
    bool is_kernel;
    /* Sets up or updates the rule scope (start, policy reload). NULL: nothing to set up.
     * Returns 0 or -errno, with a one-line reason in err. */
    int (*configure)(struct ban_backend *be, const struct ban_nft_opts *o, char *err,
                     size_t errcap);
    /* Reads every live element back (cb per element). NULL: the backend holds none.
     * Returns 0 or -errno, with a one-line reason in err. */
    int (*read_back)(struct ban_backend *be, ban_backend_restore_cb cb, void *arg, char *err,
                     size_t errcap);
};

/* Backends embed this as their first member. */
struct ban_backend {
    const struct ban_backend_ops *ops;
    uint64_t n_errors; /* kernel or queue errors seen */
};

/* be->ops->close, or cb(ctx) at once when be is NULL. */
void ban_backend_close(struct ban_backend *be, ban_backend_close_cb cb, void *ctx);

/* Gives the engine its backend (borrowed), after a restore into an engine built without one. */
void ban_attach_backend(struct ban *b, struct ban_backend *be);
/* The engine's backend (NULL when none). */
struct ban_backend *ban_backend_of(const struct ban *b);

/* The userspace backend: no kernel state. Returns 0 or -ENOMEM. */
int ban_null_new(struct ban_backend **out);

/* Builds the nftables setup script into buf (src/nft/ban_nft.c). Returns its length or
 * -ENOSPC. (Exposed for tests.) */
int ban_nft_script(const struct ban_nft_opts *o, char *buf, size_t cap);

#endif
