/*
 * location: bounded AOR -> bindings table over a preallocated slot pool.
 *
 * Slots are chained per hash bucket (all bindings of one AOR share a bucket), free slots
 * form a LIFO list. Nothing allocates after location_new. AORs come from the network, so
 * buckets are chosen by SipHash-1-3 with a random key per table: nobody outside can aim
 * many AORs at one chain.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "registrar/registrar_internal.h"
#include "sipedge/siphash.h"

#define LOCATION_NIL UINT32_MAX

struct location {
    struct location_binding *slots;
    uint32_t n_slots;
    uint32_t *buckets; /* first slot of each chain, or LOCATION_NIL */
    uint32_t bucket_mask;
    uint32_t free_head; /* free slots chained through hnext */
    uint32_t n_used;
    uint32_t max_per_aor;
    uint32_t *changed; /* slots changed since location_changes_clear; NULL: untracked */
    uint32_t n_changed;
    uint64_t k0, k1; /* bucket hash key */
};

static void mark_changed(struct location *l, struct location_binding *b)
{
    if (!l->changed || b->is_dirty)
        return;
    b->is_dirty = true;
    l->changed[l->n_changed++] = b->slot;
}

static uint32_t aor_bucket(const struct location *l, const char *aor)
{
    return (uint32_t)siphash13(l->k0, l->k1, aor, strlen(aor)) & l->bucket_mask;
}

int location_new(struct location **out, uint32_t max_bindings, uint32_t max_per_aor)
{
    if (!out || max_bindings == 0 || max_bindings >= LOCATION_NIL / 2 || max_per_aor == 0)
        return -EINVAL;
    struct location *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    siphash_key_random(&l->k0, &l->k1, (uint64_t)(uintptr_t)l ^ max_bindings);
    uint32_t n_buckets = 16;
    while (n_buckets < max_bindings)
        n_buckets <<= 1;
    l->slots = calloc(max_bindings, sizeof(*l->slots));
    l->buckets = malloc(n_buckets * sizeof(*l->buckets));
    if (!l->slots || !l->buckets) {
        location_free(l);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n_buckets; i++)
        l->buckets[i] = LOCATION_NIL;
    l->bucket_mask = n_buckets - 1;
    l->n_slots = max_bindings;
    l->max_per_aor = max_per_aor;
    l->free_head = LOCATION_NIL;
    for (uint32_t i = max_bindings; i-- > 0;) {
        l->slots[i].slot = i;
        l->slots[i].hnext = l->free_head;
        l->free_head = i;
    }
    *out = l;
    return 0;
}

void location_free(struct location *l)
{
    if (!l)
        return;
    free(l->changed);
    free(l->slots);
    free(l->buckets);
    free(l);
}

size_t location_find(struct location *l, const char *aor, struct location_binding **out, size_t cap)
{
    size_t n = 0;
    for (uint32_t i = l->buckets[aor_bucket(l, aor)]; i != LOCATION_NIL;
         i = l->slots[i].hnext) {
        struct location_binding *b = &l->slots[i];
        if (strcmp(b->aor, aor) != 0)
            continue;
        if (n < cap)
            out[n] = b;
        n++;
    }
    return n;
}

int location_add(struct location *l, const char *aor, struct location_binding **out)
{
    size_t aor_len = strlen(aor);
    if (aor_len == 0 || aor_len >= LOCATION_AOR_MAX)
        return -EINVAL;
    if (l->free_head == LOCATION_NIL || location_find(l, aor, NULL, 0) >= l->max_per_aor)
        return -ENOSPC;
    uint32_t i = l->free_head;
    struct location_binding *b = &l->slots[i];
    l->free_head = b->hnext;
    uint32_t gen = b->gen;
    bool is_dirty = b->is_dirty;
    memset(b, 0, sizeof(*b));
    b->slot = i;
    b->gen = gen;
    b->is_dirty = is_dirty;
    b->q = LOCATION_Q_NONE;
    memcpy(b->aor, aor, aor_len + 1);
    b->is_used = true;
    uint32_t *head = &l->buckets[aor_bucket(l, aor)];
    b->hnext = *head;
    *head = i;
    l->n_used++;
    mark_changed(l, b);
    *out = b;
    return 0;
}

void location_remove(struct location *l, struct location_binding *b)
{
    if (!b || !b->is_used)
        return;
    uint32_t *link = &l->buckets[aor_bucket(l, b->aor)];
    while (*link != LOCATION_NIL && *link != b->slot)
        link = &l->slots[*link].hnext;
    if (*link == b->slot)
        *link = b->hnext;
    b->is_used = false;
    b->gen++;
    b->aor[0] = '\0';
    b->hnext = l->free_head;
    l->free_head = b->slot;
    l->n_used--;
    mark_changed(l, b);
}

struct location_binding *location_get(struct location *l, uint32_t slot, uint32_t gen)
{
    if (slot >= l->n_slots)
        return NULL;
    struct location_binding *b = &l->slots[slot];
    return b->is_used && b->gen == gen ? b : NULL;
}

size_t location_expire(struct location *l, uint64_t now_ms)
{
    size_t n = 0;
    for (uint32_t i = 0; i < l->n_slots && l->n_used > 0; i++) {
        struct location_binding *b = &l->slots[i];
        if (b->is_used && b->expires_at_ms <= now_ms) {
            location_remove(l, b);
            n++;
        }
    }
    return n;
}

size_t location_count(const struct location *l)
{
    return l->n_used;
}

size_t location_n_free(const struct location *l)
{
    return l->n_slots - l->n_used;
}

uint32_t location_max_per_aor(const struct location *l)
{
    return l->max_per_aor;
}

int location_track(struct location *l)
{
    if (l->changed)
        return 0;
    l->changed = malloc(l->n_slots * sizeof(*l->changed));
    return l->changed ? 0 : -ENOMEM;
}

void location_touch(struct location *l, struct location_binding *b)
{
    if (b && b->is_used)
        mark_changed(l, b);
}

const uint32_t *location_changes(const struct location *l, size_t *n)
{
    *n = l->n_changed;
    return l->changed;
}

void location_changes_clear(struct location *l)
{
    for (uint32_t i = 0; i < l->n_changed; i++)
        l->slots[l->changed[i]].is_dirty = false;
    l->n_changed = 0;
}

struct location_binding *location_slot(struct location *l, uint32_t i)
{
    return i < l->n_slots ? &l->slots[i] : NULL;
}

uint32_t location_n_slots(const struct location *l)
{
    return l->n_slots;
}

void location_seed_gen(struct location *l, uint32_t gen)
{
    for (uint32_t i = 0; i < l->n_slots; i++)
        if (!l->slots[i].is_used)
            l->slots[i].gen = gen;
}
