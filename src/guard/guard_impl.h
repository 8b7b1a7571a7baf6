/*
 * guard_impl: the guard's state, shared by the files the guard is made of: guard.c
 * (admission verdicts, strikes, bans and their escalation, flows, the tick) and
 * guard_life.c (construction, backend start, policy reload, accessors, names). Private to
 * those two files; everything else uses sipedge/guard.h or guard_internal.h.
 */
#ifndef SIPEDGE_GUARD_IMPL_H
#define SIPEDGE_GUARD_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "guard/guard_internal.h"
#include "sipedge/ban.h"
#include "sipedge/config.h"
#include "sipedge/events.h"
#include "sipedge/guard.h"

#define GUARD_USERS_MAX 16
#define GUARD_AOR_KEY 96
#define GUARD_AOR_KEEP 64
#define GUARD_TICK_SCAN 8192
#define GUARD_PORTS_MAX (4 * CONFIG_MAX_LISTEN) /* tcp: ws, wss, tcp and tls */
#define GUARD_PROTECTED_MAX (3 + 2 * CONFIG_MAX_PEERS)

struct guard_src {
    struct ban_key key; /* must stay first: the table key; port 0 = the address entry */
    struct ratelim bucket;
    struct strikes strikes;
    uint64_t last_seen_ms;
    uint64_t last_trip_ms;    /* last over-limit strike and event */
    uint64_t auth_until_ms;   /* pair: authenticated; address: some port authenticated */
    uint64_t proven_until_ms; /* pair: proof of return routability (guard_note_proven) */
    uint64_t users_since_ms;
    uint32_t users[GUARD_USERS_MAX]; /* address entry: AORs that got 404 in the window */
    struct ban_key auth_src;         /* address entry: latest authenticated (address, port) */
    uint32_t flows;                  /* address entry: UDP flows held (never forgotten > 0) */
    uint8_t n_users;
    char aor[GUARD_AOR_KEEP]; /* latest AOR seen, for events */
};

struct guard_aor {
    char key[GUARD_AOR_KEY]; /* lower-cased, zero-padded; must stay first */
    struct ratelim bucket;
    uint64_t last_seen_ms;
    uint64_t last_trip_ms;
};

struct guard {
    struct policy pol;
    const struct config *cfg;
    struct keytab srcs;
    struct keytab aors;
    struct ratelim overflow;     /* shared by sources the full table cannot hold */
    struct ratelim overflow_aor; /* shared by AORs the full table cannot hold */
    struct ratelim reg_known;    /* reserved registrar share */
    struct ratelim reg_general;
    uint64_t reg_last_trip_ms;
    uint64_t full_logged_ms;
    struct allowlist allow;
    struct ban *ban;
    struct events *ev;
    struct guard_offload offload;
    uint64_t (*mono_us)(void);
    bool is_nft; /* the kernel backend runs: its set holds the live bans */
    uint16_t udp_ports[GUARD_PORTS_MAX], tcp_ports[GUARD_PORTS_MAX];
    unsigned n_udp_ports, n_tcp_ports;
    struct ban_key protected_keys[GUARD_PROTECTED_MAX]; /* core side: never banned */
    unsigned n_protected;
    uint64_t rng;
    uint64_t now_ms;
    uint32_t src_cursor, aor_cursor;
    struct guard_stats stats;
    struct guard_state *state; /* guard_state_open: ban persistence */
};

static inline uint64_t guard_rng_next(struct guard *g)
{
    /* xorshift64*: jitter only, not security. */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 0x2545f4914f6cdd1dULL;
}

/* The address of k (port ignored) is one of the core side's, or for IPv6 shares its
 * ipv6_prefix with one (guard.c). */
bool guard_is_protected(const struct guard *g, const struct ban_key *k);

#endif
