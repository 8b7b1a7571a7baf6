/*
 * guard_internal: the pure building blocks of the guard, private to src/guard (and the
 * white-box unit tests): token buckets (ratelim), sliding-window strike counters (strikes),
 * CIDR allowlists (allowlist) and the bounded hash table the guard and the ban engine keep
 * their entries in (addr_table). None of them allocates per message, reads a clock or
 * includes uv.h; time comes in as now_ms.
 */
#ifndef SIPEDGE_GUARD_INTERNAL_H
#define SIPEDGE_GUARD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/cidr.h"
#include "sipedge/config.h"
#include "sipedge/guard.h"

/* ---- ratelim: token bucket, value type ------------------------------------------------ */

/* Tokens are kept in thousandths so a rate of r/s refills exactly r per elapsed ms. */
struct ratelim {
    uint64_t milli;   /* tokens * 1000 */
    uint64_t last_ms; /* time of the last refill */
};

/* Starts full (burst tokens) at now_ms. */
void ratelim_init(struct ratelim *rl, uint32_t burst, uint64_t now_ms);
/* Adds rate_per_s * elapsed tokens, capped at burst. Time going backwards adds nothing.
 * Rate and burst are arguments so a policy change applies without re-initialising. */
void ratelim_refill(struct ratelim *rl, uint32_t rate_per_s, uint32_t burst, uint64_t now_ms);
/* Whole tokens available now (after a refill). */
uint64_t ratelim_tokens(const struct ratelim *rl);
/* Takes n tokens when available (true) or leaves the bucket unchanged (false). */
bool ratelim_take(struct ratelim *rl, uint32_t n);
/* ratelim_refill + ratelim_take(1). */
bool ratelim_allow(struct ratelim *rl, uint32_t rate_per_s, uint32_t burst, uint64_t now_ms);
/* ratelim_refill + ratelim_take(n), n cut to burst (more could never be available). */
bool ratelim_allow_n(struct ratelim *rl, uint32_t rate_per_s, uint32_t burst, uint32_t n,
                     uint64_t now_ms);

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

/* ---- addr_table: bounded open-addressing hash over fixed-size entries ----------------- */

/*
 * Entries are entry_size bytes and start with a key_size-byte key compared with memcmp.
 * Entries live in a pool and keep their index until removed; an index array with linear
 * probing (and backward-shift deletion, no tombstones) finds them. The hash is SipHash-1-3
 * with a per-table random key, so remote peers cannot aim at one chain.
 */
struct addr_table {
    size_t key_size, entry_size;
    uint32_t cap;       /* entries allowed */
    uint32_t n_alloc;   /* entries in the pool (>= cap after growth, may exceed a lowered cap) */
    uint32_t n;         /* entries in use */
    uint32_t mask;      /* index slots - 1 */
    uint32_t *slots;    /* 0 = empty, else pool index + 1 */
    uint32_t *free_idx; /* stack of free pool indices */
    uint32_t n_free;
    uint8_t *used;      /* per pool entry */
    unsigned char *pool;
    uint64_t k0, k1;
};

int addr_table_init(struct addr_table *t, size_t key_size, size_t entry_size, uint32_t cap,
                    uint64_t seed);
void addr_table_deinit(struct addr_table *t);
/* Changes the bound. Growing reallocates (-ENOMEM leaves the table as it was); shrinking
 * below n keeps every entry and refuses inserts until n < cap. */
int addr_table_set_cap(struct addr_table *t, uint32_t cap);
void *addr_table_find(const struct addr_table *t, const void *key);
/* Inserts a zeroed entry with key (must be absent); returns it, or NULL when full. */
void *addr_table_insert(struct addr_table *t, const void *key);
void addr_table_remove(struct addr_table *t, void *entry);
/* Pool access for iteration: entry at index i, or NULL when unused. */
void *addr_table_at(const struct addr_table *t, uint32_t i);
uint64_t addr_table_hash(const struct addr_table *t, const void *data, size_t len);

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
