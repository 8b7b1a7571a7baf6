/*
 * ban_backend: where the ban engine's decisions take effect.
 *
 * A backend receives a copy of each key. add() and del() must not block: the nftables
 * backend queues a netlink batch on its non-blocking socket (watched by a uv_poll_t on the
 * owner's loop) and reports kernel errors later by log and counter; the userspace backend
 * does nothing (the engine's mirror does the dropping). Only this header and ban_nft.c know
 * about the loop.
 */
#ifndef SIPEDGE_BAN_BACKEND_H
#define SIPEDGE_BAN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/ban.h"

struct uv_loop_s;
struct ban_backend;

struct ban_backend_ops {
    const char *name;
    /* Adds key with a kernel timeout. replace: the key may already be present with another
     * timeout (escalation): delete and add in one batch. Returns 0 or -errno (queue full). */
    int (*add)(struct ban_backend *be, const struct ban_key *key, uint32_t timeout_s,
               bool replace);
    /* Removes key (absent is not an error). Returns 0 or -errno. */
    int (*del)(struct ban_backend *be, const struct ban_key *key);
    /* Releases the backend; may finish asynchronously on the loop. */
    void (*free)(struct ban_backend *be);
};

/* Backends embed this as their first member. */
struct ban_backend {
    const struct ban_backend_ops *ops;
    uint64_t n_errors; /* kernel or queue errors seen */
};

/* Gives the engine its backend (after a restore into an engine built without one). The engine
 * owns be from now on; a previous backend is freed. */
void ban_attach_backend(struct ban *b, struct ban_backend *be);
/* The engine's backend (NULL when none). */
struct ban_backend *ban_backend_of(const struct ban *b);

/* The userspace backend: no kernel state. Returns 0 or -ENOMEM. */
int ban_null_new(struct ban_backend **out);

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

typedef void (*ban_nft_restore_cb)(void *arg, const struct ban_key *key, uint64_t remaining_ms,
                                   uint64_t timeout_ms);

/*
 * Runs the setup script (libnftables; idempotent; elements kept), opens the netlink socket
 * on loop and reads back every live element (cb per element). Returns 0; -EPERM when the
 * process lacks CAP_NET_ADMIN; -EPROTONOSUPPORT/-EAFNOSUPPORT without nf_tables; other
 * -errno. err gets a one-line reason on failure.
 */
int ban_nft_new(struct ban_backend **out, struct uv_loop_s *loop, const struct ban_nft_opts *o,
                ban_nft_restore_cb cb, void *arg, char *err, size_t errcap);
/* Re-runs the setup script with new rule scope (policy reload). Returns 0 or -errno. */
int ban_nft_configure(struct ban_backend *be, const struct ban_nft_opts *o, char *err,
                      size_t errcap);
/* Builds the setup script into buf. Returns its length or -ENOSPC. (Exposed for tests.) */
int ban_nft_script(const struct ban_nft_opts *o, char *buf, size_t cap);
/* True when be is an nftables backend. */
bool ban_backend_is_nft(const struct ban_backend *be);

#endif
