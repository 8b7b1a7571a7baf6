#include "sipedge/flow_table.h"
#include "sipedge/netaddr.h"
#include "sipedge/siphash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct flow_table {
    struct flow *slots;
    uint32_t *buckets; /* slot + 1 of the chain head; 0 = empty */
    uint32_t cap;
    uint32_t mask;     /* buckets - 1 */
    uint32_t n_live;
    uint32_t free_head; /* slot + 1 of the first free slot (chained through hnext) */
    uint32_t sweep_pos;
    uint8_t worker;
    uint32_t epoch;
    uint64_t k0, k1; /* key of addr_hash */
};

/* The chain of a flow's key: SipHash under the table's random key, because the client
 * picks its address and port and must not be able to pick its chain too. */
static uint32_t addr_hash(const struct flow_table *t, uint8_t transport, uint8_t sock,
                          const struct sockaddr *sa)
{
    uint8_t key[2 + 2 + 16];
    size_t n = 4;
    key[0] = transport;
    key[1] = sock;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(key + 2, &in->sin_port, 2);
        memcpy(key + 4, &in->sin_addr, 4);
        n += 4;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(key + 2, &in6->sin6_port, 2);
        memcpy(key + 4, &in6->sin6_addr, 16);
        n += 16;
    }
    return (uint32_t)siphash13(t->k0, t->k1, key, n);
}

int flow_table_new(struct flow_table **out, uint32_t cap, uint8_t worker)
{
    if (cap == 0 || cap > (1u << 24))
        return -EINVAL;
    struct flow_table *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    uint32_t nb = 1;
    while (nb < cap)
        nb <<= 1;
    /* calloc'd memory stays untouched (and unbacked) until a slot is used. */
    t->slots = calloc(cap, sizeof(*t->slots));
    t->buckets = calloc(nb, sizeof(*t->buckets));
    siphash_key_random(&t->k0, &t->k1, (uint64_t)(uintptr_t)t);
    if (!t->slots || !t->buckets) {
        flow_table_free(t);
        return -ENOMEM;
    }
    t->cap = cap;
    t->mask = nb - 1;
    t->worker = worker;
    t->free_head = 0; /* slots are handed out in order first, see take_slot */
    *out = t;
    return 0;
}

void flow_table_free(struct flow_table *t)
{
    if (!t)
        return;
    free(t->slots);
    free(t->buckets);
    free(t);
}

/* Never-used slots are taken in order; released ones go on a free list. */
static struct flow *take_slot(struct flow_table *t, uint32_t *slot_out)
{
    if (t->free_head) {
        uint32_t s = t->free_head - 1;
        t->free_head = t->slots[s].hnext;
        *slot_out = s;
        return &t->slots[s];
    }
    uint32_t used = t->n_live; /* with an empty free list every slot below n_live is taken */
    if (used >= t->cap)
        return NULL;
    *slot_out = used;
    return &t->slots[used];
}

struct flow *flow_table_find(struct flow_table *t, uint8_t transport, uint8_t sock,
                             const struct sockaddr *remote)
{
    uint32_t i = t->buckets[addr_hash(t, transport, sock, remote) & t->mask];
    while (i) {
        struct flow *f = &t->slots[i - 1];
        if (f->transport == transport && f->sock == sock && netaddr_eq(&f->remote.sa, remote))
            return f->state == FLOW_FREE ? NULL : f;
        i = f->hnext;
    }
    return NULL;
}

int flow_table_add(struct flow_table *t, struct flow_token_keys *keys, uint8_t transport,
                   uint8_t sock, const struct sockaddr *remote, uint64_t now_ms,
                   struct flow **out)
{
    if (remote->sa_family != AF_INET && remote->sa_family != AF_INET6)
        return -EINVAL;
    uint32_t slot;
    struct flow *f = take_slot(t, &slot);
    if (!f)
        return -ENOSPC;
    uint32_t gen = f->gen + 1;
    memset(f, 0, sizeof(*f));
    f->gen = gen;
    f->state = FLOW_LIVE;
    f->transport = transport;
    f->sock = sock;
    if (remote->sa_family == AF_INET)
        memcpy(&f->remote.in, remote, sizeof(f->remote.in));
    else
        memcpy(&f->remote.in6, remote, sizeof(f->remote.in6));
    f->last_rx_ms = now_ms;
    struct flow_token_fields tf = {
        .worker = t->worker, .transport = transport, .sock = sock, .slot = slot, .gen = gen,
        .epoch = t->epoch, .remote = f->remote};
    int n = flow_token_encode(keys, &tf, f->token, sizeof(f->token));
    if (n < 0) {
        f->state = FLOW_FREE;
        f->hnext = t->free_head;
        t->free_head = slot + 1;
        return n;
    }
    f->token_len = (uint8_t)n;
    uint32_t b = addr_hash(t, transport, sock, remote) & t->mask;
    f->hnext = t->buckets[b];
    t->buckets[b] = slot + 1;
    t->n_live++;
    *out = f;
    return 0;
}

struct flow *flow_table_get(struct flow_table *t, uint32_t slot, uint32_t gen)
{
    if (slot >= t->cap)
        return NULL;
    struct flow *f = &t->slots[slot];
    if (f->state == FLOW_FREE || f->gen != gen)
        return NULL;
    return f;
}

struct flow *flow_table_get_slot(struct flow_table *t, uint32_t slot)
{
    return slot < t->cap ? &t->slots[slot] : NULL;
}

uint32_t flow_table_slot(const struct flow_table *t, const struct flow *f)
{
    return (uint32_t)(f - t->slots);
}

uint8_t flow_table_worker(const struct flow_table *t) { return t->worker; }

void flow_table_set_epoch(struct flow_table *t, uint32_t epoch) { t->epoch = epoch; }

uint32_t flow_table_epoch(const struct flow_table *t) { return t->epoch; }

void flow_table_mark_dead(struct flow_table *t, struct flow *f)
{
    (void)t;
    if (f->state == FLOW_LIVE)
        f->state = FLOW_DEAD;
}

void flow_table_release(struct flow_table *t, struct flow *f)
{
    if (f->state == FLOW_FREE)
        return;
    uint32_t slot = flow_table_slot(t, f);
    uint32_t *pp = &t->buckets[addr_hash(t, f->transport, f->sock, &f->remote.sa) & t->mask];
    while (*pp && *pp != slot + 1)
        pp = &t->slots[*pp - 1].hnext;
    if (*pp)
        *pp = f->hnext;
    f->state = FLOW_FREE;
    f->gen++;
    f->hnext = t->free_head;
    t->free_head = slot + 1;
    t->n_live--;
}

uint32_t flow_table_sweep(struct flow_table *t, uint64_t now_ms, uint64_t idle_ms,
                          uint32_t max_scan, flow_table_release_cb on_release, void *ctx)
{
    uint32_t released = 0;
    for (uint32_t i = 0; i < max_scan && i < t->cap; i++) {
        struct flow *f = &t->slots[t->sweep_pos];
        t->sweep_pos = (t->sweep_pos + 1) % t->cap;
        if (f->state != FLOW_LIVE || f->transport != FLOW_UDP)
            continue;
        if (now_ms >= f->reg_until_ms && now_ms >= f->last_rx_ms &&
            now_ms - f->last_rx_ms >= idle_ms) {
            if (on_release)
                on_release(ctx, f);
            flow_table_release(t, f);
            released++;
        }
    }
    return released;
}

uint32_t flow_table_count(const struct flow_table *t) { return t->n_live; }
uint32_t flow_table_capacity(const struct flow_table *t) { return t->cap; }
