/*
 * conn_ids: the generation-checked ids connection transports name their connections by
 * (WebSocket, TCP/TLS), so an id kept by the edge or a timer never reaches a newer
 * connection in the same slot. An id is tag | generation << 32 | slot; the generation
 * changes whenever the slot is freed and is never 0, so id 0 is never valid. Slots grow
 * by doubling up to a bound. One thread only.
 */
#ifndef SIPEDGE_CONN_IDS_H
#define SIPEDGE_CONN_IDS_H

#include <stdint.h>

struct conn_id_slot {
    void *p; /* NULL when free */
    uint32_t gen;
    uint32_t next_free; /* slot + 1, 0 ends the free list */
};

struct conn_ids {
    struct conn_id_slot *slots;
    uint32_t n;   /* slots ever handed out (walk 0..n-1) */
    uint32_t cap; /* allocated */
    uint32_t max; /* bound on slots in use */
    uint32_t n_used;
    uint32_t free_head; /* slot + 1 */
    uint32_t gen_mask;  /* bits the generation may use (at most 31 when tag uses bit 63) */
    uint64_t tag;       /* or'ed into every id */
};

/* An empty table (no memory yet); max: the bound. */
void conn_ids_init(struct conn_ids *t, uint32_t max, uint64_t tag, uint32_t gen_mask);
void conn_ids_fini(struct conn_ids *t);

/* Puts p in a free slot and sets *id. Returns 0, -ENOSPC (max slots in use) or -ENOMEM. */
int conn_ids_alloc(struct conn_ids *t, void *p, uint64_t *id);
/* What id names, or NULL (freed since, or not one of ours). */
void *conn_ids_get(const struct conn_ids *t, uint64_t id);
/* Frees id's slot; the id is stale from now on. */
void conn_ids_free(struct conn_ids *t, uint64_t id);
/* Slot i's pointer (NULL when free), for walks over 0..t->n-1. */
static inline void *conn_ids_at(const struct conn_ids *t, uint32_t i)
{
    return t->slots[i].p;
}

#endif
