/*
 * keytab: bounded hash table with a stable entry pool and a linear-probing index, keyed
 * with SipHash-1-3 so that the tables whose keys remote peers choose cannot be flooded
 * into one probe run (the guard's sources and AORs, the ban engine's addresses).
 *
 * The index has at least twice as many slots as the pool, so probes stay short. Removal
 * shifts later members of the probe run back (Knuth's algorithm R) instead of leaving
 * tombstones, so a long-running table never degrades.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/keytab.h"
#include "sipedge/siphash.h"

/* SipHash-1-3 with the table's key. */
uint64_t keytab_hash(const struct keytab *t, const void *data, size_t len)
{
    return siphash13(t->k0, t->k1, data, len);
}

static uint32_t slots_for(uint32_t cap)
{
    uint32_t n = 16;
    while (n < cap * 2u && n < (1u << 30))
        n <<= 1;
    return n;
}

static void *entry_at(const struct keytab *t, uint32_t i)
{
    return t->pool + (size_t)i * t->entry_size;
}

static uint32_t home_of(const struct keytab *t, uint32_t idx)
{
    return (uint32_t)keytab_hash(t, entry_at(t, idx), t->key_size) & t->mask;
}

static void index_put(struct keytab *t, uint32_t idx)
{
    uint32_t s = home_of(t, idx);
    while (t->slots[s] != 0)
        s = (s + 1) & t->mask;
    t->slots[s] = idx + 1;
}

/* Grows the pool and index to hold n_alloc entries; on failure nothing changes. */
static int grow(struct keytab *t, uint32_t n_alloc)
{
    uint32_t n_slots = slots_for(n_alloc);
    unsigned char *pool = realloc(t->pool, (size_t)n_alloc * t->entry_size);
    if (pool == NULL)
        return -ENOMEM;
    t->pool = pool;
    uint8_t *used = realloc(t->used, n_alloc);
    if (used == NULL)
        return -ENOMEM;
    t->used = used;
    uint32_t *free_idx = realloc(t->free_idx, (size_t)n_alloc * sizeof(*free_idx));
    if (free_idx == NULL)
        return -ENOMEM;
    t->free_idx = free_idx;
    uint32_t *slots = calloc(n_slots, sizeof(*slots));
    if (slots == NULL)
        return -ENOMEM;
    /* Pool indices are handed out from the top of the stack, lowest first. */
    uint32_t n_new = n_alloc - t->n_alloc;
    memmove(t->free_idx + n_new, t->free_idx, (size_t)t->n_free * sizeof(*free_idx));
    for (uint32_t i = 0; i < n_new; i++)
        t->free_idx[i] = n_alloc - 1 - i;
    memset(t->used + t->n_alloc, 0, n_new);
    t->n_free += n_new;
    t->n_alloc = n_alloc;
    free(t->slots);
    t->slots = slots;
    t->mask = n_slots - 1;
    for (uint32_t i = 0; i < t->n_alloc; i++)
        if (t->used[i])
            index_put(t, i);
    return 0;
}

int keytab_init(struct keytab *t, size_t key_size, size_t entry_size, uint32_t cap, uint64_t seed)
{
    if (key_size == 0 || entry_size < key_size || cap == 0 || cap > (1u << 29))
        return -EINVAL;
    memset(t, 0, sizeof(*t));
    t->key_size = key_size;
    t->entry_size = entry_size;
    t->k0 = seed ^ 0x9e3779b97f4a7c15ULL;
    t->k1 = (seed * 0xbf58476d1ce4e5b9ULL) ^ 0x94d049bb133111ebULL;
    int rc = grow(t, cap);
    if (rc != 0) {
        keytab_deinit(t);
        return rc;
    }
    t->cap = cap;
    return 0;
}

void keytab_deinit(struct keytab *t)
{
    free(t->slots);
    free(t->free_idx);
    free(t->used);
    free(t->pool);
    memset(t, 0, sizeof(*t));
}

int keytab_set_cap(struct keytab *t, uint32_t cap)
{
    if (cap == 0 || cap > (1u << 29))
        return -EINVAL;
    if (cap > t->n_alloc) {
        int rc = grow(t, cap);
        if (rc != 0)
            return rc;
    }
    t->cap = cap;
    return 0;
}

void *keytab_find(const struct keytab *t, const void *key)
{
    uint32_t s = (uint32_t)keytab_hash(t, key, t->key_size) & t->mask;
    while (t->slots[s] != 0) {
        void *e = entry_at(t, t->slots[s] - 1);
        if (memcmp(e, key, t->key_size) == 0)
            return e;
        s = (s + 1) & t->mask;
    }
    return NULL;
}

void *keytab_insert(struct keytab *t, const void *key)
{
    if (t->n >= t->cap || t->n_free == 0)
        return NULL;
    uint32_t idx = t->free_idx[--t->n_free];
    void *e = entry_at(t, idx);
    memset(e, 0, t->entry_size);
    memcpy(e, key, t->key_size);
    t->used[idx] = 1;
    t->n++;
    index_put(t, idx);
    return e;
}

void keytab_remove(struct keytab *t, void *entry)
{
    uint32_t idx = (uint32_t)(((unsigned char *)entry - t->pool) / t->entry_size);
    uint32_t s = home_of(t, idx);
    while (t->slots[s] != idx + 1)
        s = (s + 1) & t->mask;
    /* Backward-shift deletion: pull later run members into the hole when their home
     * position does not lie cyclically between the hole and their slot. */
    uint32_t hole = s;
    for (uint32_t j = (hole + 1) & t->mask; t->slots[j] != 0; j = (j + 1) & t->mask) {
        uint32_t home = home_of(t, t->slots[j] - 1);
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        t->slots[hole] = t->slots[j];
        hole = j;
    }
    t->slots[hole] = 0;
    t->used[idx] = 0;
    t->free_idx[t->n_free++] = idx;
    t->n--;
}

void *keytab_at(const struct keytab *t, uint32_t i)
{
    if (i >= t->n_alloc || !t->used[i])
        return NULL;
    return entry_at(t, i);
}
