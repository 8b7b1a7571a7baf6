/*
 * guard_internal: the pure building blocks of the guard, private to src/guard (and the
 * white-box unit tests): sliding-window strike counters (strikes) and CIDR allowlists
 * (allowlist). Its token buckets are sipedge/ratelim.h; the guard and the ban engine keep
 * their entries in keyed tables (sipedge/keytab.h). None of them allocates per message,
 * reads a clock or includes uv.h; time comes in as now_ms.
 */
#ifndef SIPEDGE_GUARD_INTERNAL_H
#define SIPEDGE_GUARD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/cidr.h"
#include "sipedge/config.h"
#include "sipedge/guard.h"
#include "sipedge/keytab.h"
#include "sipedge/ratelim.h"

/* ---- strikes: weighted events in a sliding window, value type ------------------------- */

/* The window is cut into STRIKES_SLOTS slots; a slot older than the window is forgotten, so
 * the count covers between (SLOTS-1)/SLOTS of the window and the whole of it. */
#define STRIKES_SLOTS 8

struct strikes {
    uint32_t count[STRIKES_SLOTS];
    uint32_t epoch[STRIKES_SLOTS]; /* slot number (now / slot_ms) the count belongs to */
};

void strikes_init(struct strikes *s);
/* Adds weight at now_ms for a window of window_ms (>= STRIKES_SLOTS); returns the sum. */
uint32_t strikes_add(struct strikes *s, uint32_t weight, uint64_t window_ms, uint64_t now_ms);
/* Sum of strikes inside the window ending at now_ms. */
uint32_t strikes_sum(const struct strikes *s, uint64_t window_ms, uint64_t now_ms);
void strikes_reset(struct strikes *s);

/* ---- allowlist: CIDR set ---------------------------------------------------------------- */

struct allowlist {
    struct cidr cidr[POLICY_MAX_ALLOW];
    unsigned n;
};

/* Replaces the list with n texts (each must parse with cidr_parse). Returns 0 or -EINVAL
 * (list untouched). */
int allowlist_set(struct allowlist *al, const char (*texts)[48], unsigned n);
/* True when key's address (port ignored) lies in one of the CIDRs. */
bool allowlist_match(const struct allowlist *al, const struct ban_key *key);
/* True when the first bits of key's address (a prefix) share an address with one of the
 * CIDRs: a ban of that prefix would cover an allowlisted address. */
bool allowlist_overlaps(const struct allowlist *al, const struct ban_key *key, unsigned bits);

/* ---- the guard's tables: sipedge/keytab.h ---------------------------------------------- */

/* ---- ban engine internals (white-box tests) -------------------------------------------- */

struct ban;
/* Entries the ban engine has looked at to free room in a full table, since ban_new. Each
 * insert into a full table costs O(1) of these (the oldest history entry, or none). */
uint64_t ban_reclaim_steps(const struct ban *b);

/* ---- guard internals shared with guard_state.c ---------------------------------------- */

struct guard_state;

struct ban *guard_ban_engine(struct guard *g);
/* guard_opts.offload as given (queue NULL: write synchronously). */
const struct guard_offload *guard_offload_of(const struct guard *g);
/* guard_opts.mono_us, or 0 without one. */
uint64_t guard_mono_us(const struct guard *g);
/* True when the nftables backend runs (the kernel set holds the live bans). */
bool guard_is_nft(const struct guard *g);
struct guard_state **guard_state_slot(struct guard *g);
/* Called by guard_tick: the periodic save. */
void guard_state_tick(struct guard *g, uint64_t now_ms);
/* Called by guard_free: releases the state (a write in flight frees it when done). */
void guard_state_close(struct guard *g);

struct guard_state_stats {
    uint64_t n_saves;   /* payloads built */
    uint64_t n_writes;  /* files written */
    uint64_t n_skipped; /* periodic saves skipped: a write was in flight */
    uint64_t n_failed;
    uint64_t last_build_us; /* time to build the latest payload */
    size_t last_len;
};
/* NULL when guard_state_open was not called. */
const struct guard_state_stats *guard_state_stats(const struct guard *g);
/* Wall clock in ms (CLOCK_REALTIME); tests replace it. */
extern uint64_t (*guard_state_wall_ms)(void);

#endif
