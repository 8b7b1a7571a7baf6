/*
 * keytab: a bounded hash table over fixed-size entries, keyed with SipHash-1-3.
 *
 * Entries are entry_size bytes and start with a key_size-byte key compared with memcmp.
 * Entries live in a pool and keep their index until removed; an index array with linear
 * probing (and backward-shift deletion, no tombstones) finds them. The hash is SipHash-1-3
 * with a secret key per table drawn from the seed, so remote peers who choose the keys
 * (addresses, AORs) cannot aim at one probe run. Allocation happens only in keytab_init
 * and when keytab_set_cap grows the bound; no clock, no I/O.
 */
#ifndef SIPEDGE_KEYTAB_H
#define SIPEDGE_KEYTAB_H

#include <stddef.h>
#include <stdint.h>

struct keytab {
    size_t key_size, entry_size;
    uint32_t cap;       /* entries allowed */
    uint32_t n_alloc;   /* entries in the pool (>= cap after growth, may exceed a lowered cap) */
    uint32_t n;         /* entries in use */
    uint32_t mask;      /* index slots - 1 */
    uint32_t *slots;    /* 0 = empty, else pool index + 1 */
    uint32_t *free_idx; /* stack of free pool indices */
    uint32_t n_free;
    uint8_t *used; /* per pool entry */
    unsigned char *pool;
    uint64_t k0, k1; /* SipHash key */
};

/* seed: a random value per table (the SipHash key is derived from it). Returns 0, -EINVAL
 * (key_size 0, entry_size < key_size, cap 0 or over 2^29) or -ENOMEM. */
int keytab_init(struct keytab *t, size_t key_size, size_t entry_size, uint32_t cap, uint64_t seed);
void keytab_deinit(struct keytab *t);
/* Changes the bound. Growing reallocates (-ENOMEM leaves the table as it was); shrinking
 * below n keeps every entry and refuses inserts until n < cap. */
int keytab_set_cap(struct keytab *t, uint32_t cap);
void *keytab_find(const struct keytab *t, const void *key);
/* Inserts a zeroed entry with key (must be absent); returns it, or NULL when full. */
void *keytab_insert(struct keytab *t, const void *key);
void keytab_remove(struct keytab *t, void *entry);
/* Pool access for iteration: entry at index i (< n_alloc), or NULL when unused. */
void *keytab_at(const struct keytab *t, uint32_t i);
/* SipHash-1-3 of len bytes with the table's key (for values derived from the same
 * secret, e.g. short fingerprints kept beside an entry). */
uint64_t keytab_hash(const struct keytab *t, const void *data, size_t len);

#endif
