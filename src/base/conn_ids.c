#include "sipedge/conn_ids.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void conn_ids_init(struct conn_ids *t, uint32_t max, uint64_t tag, uint32_t gen_mask)
{
    memset(t, 0, sizeof(*t));
    t->max = max;
    t->tag = tag;
    t->gen_mask = gen_mask ? gen_mask : 0xffffffffu;
}

void conn_ids_fini(struct conn_ids *t)
{
    free(t->slots);
    t->slots = NULL;
    t->n = t->cap = t->n_used = t->free_head = 0;
}

int conn_ids_alloc(struct conn_ids *t, void *p, uint64_t *id)
{
    uint32_t slot;
    if (t->n_used >= t->max)
        return -ENOSPC;
    if (t->free_head) {
        slot = t->free_head - 1;
        t->free_head = t->slots[slot].next_free;
    } else {
        if (t->n == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 256;
            if (cap < t->cap) /* wrapped */
                return -ENOSPC;
            if (cap > t->max && t->max > t->n)
                cap = t->max;
            struct conn_id_slot *s = realloc(t->slots, (size_t)cap * sizeof(*s));
            if (!s)
                return -ENOMEM;
            t->slots = s;
            t->cap = cap;
        }
        slot = t->n++;
        t->slots[slot].gen = 1;
    }
    t->slots[slot].p = p;
    t->slots[slot].next_free = 0;
    t->n_used++;
    *id = t->tag | ((uint64_t)t->slots[slot].gen << 32) | slot;
    return 0;
}

void *conn_ids_get(const struct conn_ids *t, uint64_t id)
{
    if ((id & t->tag) != t->tag)
        return NULL;
    uint32_t slot = (uint32_t)id;
    uint32_t gen = (uint32_t)((id & ~t->tag) >> 32);
    if (slot >= t->n || t->slots[slot].gen != gen)
        return NULL;
    return t->slots[slot].p;
}

void conn_ids_free(struct conn_ids *t, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= t->n || !t->slots[slot].p)
        return;
    t->slots[slot].p = NULL;
    t->slots[slot].gen = (t->slots[slot].gen + 1) & t->gen_mask;
    if (t->slots[slot].gen == 0)
        t->slots[slot].gen = 1; /* id 0 is never valid */
    t->slots[slot].next_free = t->free_head;
    t->free_head = slot + 1;
    t->n_used--;
}
