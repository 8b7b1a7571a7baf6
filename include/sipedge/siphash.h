/*
 * siphash: SipHash-1-3 (one compression round, three finalisation rounds), the keyed
 * hash for every table and derived value whose input a remote peer chooses: with a
 * secret key per table, nobody outside can aim many keys at one chain.
 *
 * One-shot (siphash13) or streamed over several fields (siphash_init / _add / _final);
 * both give the same value for the same bytes. Pure, no allocation; siphash_key_random
 * reads getrandom(2).
 */
#ifndef SIPEDGE_SIPHASH_H
#define SIPEDGE_SIPHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct siphash {
    uint64_t v0, v1, v2, v3;
    uint64_t tail;  /* bytes not yet compressed, little-endian */
    size_t len;     /* bytes added so far */
};

void siphash_init(struct siphash *s, uint64_t k0, uint64_t k1);
void siphash_add(struct siphash *s, const void *data, size_t len);
uint64_t siphash_final(struct siphash *s);

uint64_t siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len);

/* A secret key for one table: 16 bytes from getrandom(2). When the kernel cannot give them
 * without blocking (early boot), the key is mixed from fallback (say an address and a
 * clock) instead of waiting, and false is returned. */
bool siphash_key_random(uint64_t *k0, uint64_t *k1, uint64_t fallback);

#endif
