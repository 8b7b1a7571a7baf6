/*
 * ratelim: a token bucket as a value type (two integers, no allocation, no clock: time
 * comes in as now_ms). Rate and burst are arguments of every call, so a bucket kept in a
 * table entry needs no back pointer and a policy change applies without re-initialising.
 */
#ifndef SIPEDGE_RATELIM_H
#define SIPEDGE_RATELIM_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
