/*
 * siphash: SipHash-1-3 (Aumasson and Bernstein), one-shot and streamed.
 */
#include "sipedge/siphash.h"

#include <string.h>
#include <sys/random.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void sipround(struct siphash *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static inline void compress(struct siphash *s, uint64_t m)
{
    s->v3 ^= m;
    sipround(s);
    s->v0 ^= m;
}

void siphash_init(struct siphash *s, uint64_t k0, uint64_t k1)
{
    s->v0 = 0x736f6d6570736575ULL ^ k0;
    s->v1 = 0x646f72616e646f6dULL ^ k1;
    s->v2 = 0x6c7967656e657261ULL ^ k0;
    s->v3 = 0x7465646279746573ULL ^ k1;
    s->tail = 0;
    s->len = 0;
}

void siphash_add(struct siphash *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t fill = s->len & 7;
    s->len += len;
    /* Top up the pending word first. */
    while (fill && len) {
        s->tail |= (uint64_t)*p++ << (8 * fill);
        len--;
        if (++fill == 8) {
            compress(s, s->tail);
            s->tail = 0;
            fill = 0;
        }
    }
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t m;
        memcpy(&m, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        m = __builtin_bswap64(m);
#endif
        compress(s, m);
    }
    for (size_t j = 0; j < len; j++)
        s->tail |= (uint64_t)p[j] << (8 * j);
}

uint64_t siphash_final(struct siphash *s)
{
    uint64_t b = s->tail | (uint64_t)s->len << 56;
    compress(s, b);
    s->v2 ^= 0xff;
    sipround(s);
    sipround(s);
    sipround(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

uint64_t siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    struct siphash s;
    siphash_init(&s, k0, k1);
    siphash_add(&s, data, len);
    return siphash_final(&s);
}

/* splitmix64 step: spreads a weak fallback over all 64 bits. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

bool siphash_key_random(uint64_t *k0, uint64_t *k1, uint64_t fallback)
{
    uint64_t k[2];
    if (getrandom(k, sizeof(k), GRND_NONBLOCK) == (ssize_t)sizeof(k)) {
        *k0 = k[0];
        *k1 = k[1];
        return true;
    }
    *k0 = mix64(fallback);
    *k1 = mix64(*k0 ^ fallback);
    return false;
}
