/*
 * ws_admission: the WebSocket transport's per-IP table, which admits a connection before
 * lws sees it: a handshake token bucket per source (the guard's struct ratelim, burst
 * twice the rate) and the count of connections each source holds. IPv6 sources are
 * keyed by prefix (transport_ws_ip_key). The table is bounded (WS_IP_CAP entries); an
 * entry is forgotten once it holds no connection and its bucket is full again. No lws
 * here: time comes in as now_ms.
 */
#include "transport_ws_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/siphash.h"

static uint32_t ws_ip_hash(const struct ws_ip_table *tb, const union ws_ip_key *k)
{
    /* Keyed: a remote peer picks its address, not the chain it lands in. */
    return (uint32_t)siphash13(tb->k0, tb->k1, k->bytes, sizeof(k->bytes)) & (WS_IP_HASH - 1);
}

static uint32_t ws_ip_burst(uint32_t rate_per_s)
{
    return rate_per_s * 2u; /* burst = 2x rate */
}

int ws_ip_table_init(struct ws_ip_table *tb)
{
    memset(tb, 0, sizeof(*tb));
    siphash_key_random(&tb->k0, &tb->k1, (uint64_t)(uintptr_t)tb);
    tb->ips = calloc(WS_IP_CAP, sizeof(*tb->ips));
    tb->heads = calloc(WS_IP_HASH, sizeof(*tb->heads));
    if (!tb->ips || !tb->heads) {
        ws_ip_table_free(tb);
        return -ENOMEM;
    }
    return 0;
}

void ws_ip_table_free(struct ws_ip_table *tb)
{
    free(tb->ips);
    free(tb->heads);
    tb->ips = NULL;
    tb->heads = NULL;
}

struct ws_ip *ws_ip_get(struct ws_ip_table *tb, const union ws_ip_key *k, uint32_t rate_per_s,
                        uint64_t now_ms)
{
    uint32_t h = ws_ip_hash(tb, k);
    for (uint32_t i = tb->heads[h]; i; i = tb->ips[i - 1].hnext) {
        struct ws_ip *e = &tb->ips[i - 1];
        if (memcmp(&e->key, k, sizeof(*k)) == 0)
            return e;
    }
    uint32_t idx;
    if (tb->free) {
        idx = tb->free - 1;
        tb->free = tb->ips[idx].hnext;
    } else if (tb->hwm < WS_IP_CAP) {
        idx = tb->hwm++;
    } else {
        return NULL;
    }
    struct ws_ip *e = &tb->ips[idx];
    memset(e, 0, sizeof(*e));
    e->key = *k;
    e->is_used = true;
    ratelim_init(&e->bucket, ws_ip_burst(rate_per_s), now_ms);
    e->hnext = tb->heads[h];
    tb->heads[h] = idx + 1;
    tb->n_used++;
    return e;
}

bool ws_ip_allow_handshake(struct ws_ip *e, uint32_t rate_per_s, uint64_t now_ms)
{
    return ratelim_allow(&e->bucket, rate_per_s, ws_ip_burst(rate_per_s), now_ms);
}

void ws_ip_sweep(struct ws_ip_table *tb, uint32_t rate_per_s, uint64_t now_ms)
{
    uint32_t burst = ws_ip_burst(rate_per_s);
    for (uint32_t h = 0; h < WS_IP_HASH; h++) {
        uint32_t *link = &tb->heads[h];
        while (*link) {
            uint32_t idx = *link - 1;
            struct ws_ip *e = &tb->ips[idx];
            ratelim_refill(&e->bucket, rate_per_s, burst, now_ms);
            if (e->n_conns == 0 && ratelim_tokens(&e->bucket) >= burst) {
                *link = e->hnext;
                e->is_used = false;
                e->hnext = tb->free;
                tb->free = idx + 1;
                tb->n_used--;
            } else {
                link = &e->hnext;
            }
        }
    }
}
