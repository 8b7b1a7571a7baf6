/*
 * ratelim: token bucket in thousandths of a token, so refill is an exact integer product
 * of elapsed milliseconds and the per-second rate. In base because nothing in it is the
 * guard's: any module that budgets events per key can keep one in its entries.
 */
#include "sipedge/ratelim.h"

void ratelim_init(struct ratelim *rl, uint32_t burst, uint64_t now_ms)
{
    rl->milli = (uint64_t)burst * 1000;
    rl->last_ms = now_ms;
}

void ratelim_refill(struct ratelim *rl, uint32_t rate_per_s, uint32_t burst, uint64_t now_ms)
{
    uint64_t cap = (uint64_t)burst * 1000;
    if (now_ms > rl->last_ms) {
        uint64_t elapsed = now_ms - rl->last_ms;
        /* Beyond this the bucket is full anyway; the cut keeps the product from overflowing. */
        if (elapsed > cap)
            elapsed = cap;
        rl->milli += elapsed * rate_per_s;
        rl->last_ms = now_ms;
    }
    /* A lowered burst (policy reload) takes effect at once. */
    if (rl->milli > cap)
        rl->milli = cap;
}

uint64_t ratelim_tokens(const struct ratelim *rl)
{
    return rl->milli / 1000;
}

bool ratelim_take(struct ratelim *rl, uint32_t n)
{
    uint64_t need = (uint64_t)n * 1000;
    if (rl->milli < need)
        return false;
    rl->milli -= need;
    return true;
}

bool ratelim_allow_n(struct ratelim *rl, uint32_t rate_per_s, uint32_t burst, uint32_t n,
                     uint64_t now_ms)
{
    ratelim_refill(rl, rate_per_s, burst, now_ms);
    return ratelim_take(rl, n < burst ? n : burst);
}

bool ratelim_allow(struct ratelim *rl, uint32_t rate_per_s, uint32_t burst, uint64_t now_ms)
{
    return ratelim_allow_n(rl, rate_per_s, burst, 1, now_ms);
}
