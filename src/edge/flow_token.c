/*
 * flow_token: encode/verify RFC 5626 §5.2 flow tokens.
 *
 * Wire format before base64url (no padding), all integers big-endian:
 *
 *    0        1        2        3        4                 8                 12
 *   +--------+--------+--------+--------+-----------------+-----------------+
 *   | ver=2  | worker | sock|tr| family |      slot       |   generation    |
 *   +--------+--------+--------+--------+-----------------+-----------------+
 *   |      epoch      | remote IP (4 bytes for IPv4, 16 for IPv6) | port (2) |
 *   +-----------------+-------------------------------------------+----------+
 *   | HMAC-SHA256/80  |
 *   +-----------------+
 *
 * The third byte holds the transport in its low nibble and the index of the local
 * socket or listener the flow arrived on in its high nibble (0 in tokens that predate
 * it, which is the first socket), so a UDP token alone says where to send from.
 *
 * IPv4: 32 bytes → 43 characters; IPv6: 44 bytes → 59 characters. The MAC covers
 * every byte before it, so the remote address cannot be changed without the key. The
 * epoch is drawn at start, so a (slot, generation) of an earlier run never names a flow
 * of this one.
 *
 * Tags (flow_token_tag) are HMACs under the same keys over length-prefixed parts,
 * behind a label byte that keeps them apart from tokens and from each other.
 */
#include "sipedge/flow_token.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "edge/edge_internal.h"

#define TOKEN_VERSION 2
#define MAC_LEN 10
#define HDR_LEN 16
#define RAW_MAX (HDR_LEN + 16 + 2 + MAC_LEN)
#define LEN_V4 (HDR_LEN + 4 + 2 + MAC_LEN)
#define LEN_V6 (HDR_LEN + 16 + 2 + MAC_LEN)

struct flow_token_keys {
    EVP_MAC_CTX *cur;
    EVP_MAC_CTX *prev; /* NULL when no previous key */
};

static EVP_MAC_CTX *mac_ctx_new(const uint8_t *key)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return NULL;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (!ctx)
        return NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_init(ctx, key, FLOW_TOKEN_KEY_LEN, params)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int flow_token_keys_new(struct flow_token_keys **out, const uint8_t key[FLOW_TOKEN_KEY_LEN],
                        const uint8_t *prev)
{
    struct flow_token_keys *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->cur = mac_ctx_new(key);
    if (!k->cur)
        goto fail;
    if (prev) {
        k->prev = mac_ctx_new(prev);
        if (!k->prev)
            goto fail;
    }
    *out = k;
    return 0;
fail:
    flow_token_keys_free(k);
    return -ENOMEM;
}

void flow_token_keys_free(struct flow_token_keys *k)
{
    if (!k)
        return;
    EVP_MAC_CTX_free(k->cur);
    EVP_MAC_CTX_free(k->prev);
    free(k);
}

/* Re-initialising with a NULL key keeps the key set at creation (OpenSSL 3 HMAC). */
static int mac_compute(EVP_MAC_CTX *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    size_t olen = 0;
    if (!EVP_MAC_init(ctx, NULL, 0, NULL) || !EVP_MAC_update(ctx, data, len) ||
        !EVP_MAC_final(ctx, out, &olen, 32))
        return -EIO;
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int flow_token_encode(struct flow_token_keys *k, const struct flow_token_fields *f, char *out,
                      size_t cap)
{
    uint8_t raw[RAW_MAX];
    size_t n = HDR_LEN;
    raw[0] = TOKEN_VERSION;
    raw[1] = f->worker;
    if (f->transport > 0x0f || f->sock > 0x0f)
        return -EINVAL;
    raw[2] = (uint8_t)(f->sock << 4 | f->transport);
    put32(raw + 4, f->slot);
    put32(raw + 8, f->gen);
    put32(raw + 12, f->epoch);
    if (f->remote.sa.sa_family == AF_INET) {
        raw[3] = 4;
        memcpy(raw + n, &f->remote.in.sin_addr, 4);
        n += 4;
        memcpy(raw + n, &f->remote.in.sin_port, 2);
    } else if (f->remote.sa.sa_family == AF_INET6) {
        raw[3] = 6;
        memcpy(raw + n, &f->remote.in6.sin6_addr, 16);
        n += 16;
        memcpy(raw + n, &f->remote.in6.sin6_port, 2);
    } else {
        return -EINVAL;
    }
    n += 2;
    uint8_t mac[32];
    if (mac_compute(k->cur, raw, n, mac) < 0)
        return -EIO;
    memcpy(raw + n, mac, MAC_LEN);
    n += MAC_LEN;
    if (cap < FLOW_TOKEN_MAX)
        return -EINVAL;
    size_t len = b64url_encoded_len(n);
    b64url_encode(raw, n, out);
    out[len] = '\0';
    return (int)len;
}

int flow_token_decode(struct flow_token_keys *k, struct slice tok, struct flow_token_fields *out)
{
    uint8_t raw[RAW_MAX];
    if (!flow_token_len_ok(tok.len))
        return -EBADMSG;
    size_t n;
    if (b64url_decode(tok.p, tok.len, raw, sizeof(raw), &n) < 0)
        return -EBADMSG;
    size_t body = n - MAC_LEN;
    uint8_t mac[32];
    if (mac_compute(k->cur, raw, body, mac) < 0)
        return -EIO;
    if (CRYPTO_memcmp(mac, raw + body, MAC_LEN) != 0) {
        if (!k->prev || mac_compute(k->prev, raw, body, mac) < 0 ||
            CRYPTO_memcmp(mac, raw + body, MAC_LEN) != 0)
            return -EPERM;
    }
    /* Authenticated from here on; still check the layout is one we write. */
    if (raw[0] != TOKEN_VERSION)
        return -EBADMSG;
    struct flow_token_fields f;
    memset(&f, 0, sizeof(f));
    f.worker = raw[1];
    f.transport = raw[2] & 0x0f;
    f.sock = raw[2] >> 4;
    f.slot = get32(raw + 4);
    f.gen = get32(raw + 8);
    f.epoch = get32(raw + 12);
    if (raw[3] == 4 && n == LEN_V4) {
        f.remote.in.sin_family = AF_INET;
        memcpy(&f.remote.in.sin_addr, raw + HDR_LEN, 4);
        memcpy(&f.remote.in.sin_port, raw + HDR_LEN + 4, 2);
    } else if (raw[3] == 6 && n == LEN_V6) {
        f.remote.in6.sin6_family = AF_INET6;
        memcpy(&f.remote.in6.sin6_addr, raw + HDR_LEN, 16);
        memcpy(&f.remote.in6.sin6_port, raw + HDR_LEN + 16, 2);
    } else {
        return -EBADMSG;
    }
    *out = f;
    return 0;
}

static int tag_compute(EVP_MAC_CTX *ctx, uint8_t label, const struct slice *parts, size_t n,
                       uint8_t out[32])
{
    size_t olen = 0;
    if (!EVP_MAC_init(ctx, NULL, 0, NULL) || !EVP_MAC_update(ctx, &label, 1))
        return -EIO;
    for (size_t i = 0; i < n; i++) {
        uint8_t len[4];
        put32(len, (uint32_t)parts[i].len);
        if (!EVP_MAC_update(ctx, len, sizeof(len)) ||
            (parts[i].len && !EVP_MAC_update(ctx, (const uint8_t *)parts[i].p, parts[i].len)))
            return -EIO;
    }
    if (!EVP_MAC_final(ctx, out, &olen, 32))
        return -EIO;
    return 0;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

int flow_token_tag(struct flow_token_keys *k, uint8_t label, const struct slice *parts, size_t n,
                   char out[FLOW_TOKEN_TAG_LEN + 1])
{
    uint8_t mac[32];
    if (tag_compute(k->cur, label, parts, n, mac) < 0)
        return -EIO;
    hex_encode(mac, FLOW_TOKEN_TAG_LEN / 2, out);
    out[FLOW_TOKEN_TAG_LEN] = '\0';
    return 0;
}

int flow_token_tag_verify(struct flow_token_keys *k, uint8_t label, const struct slice *parts,
                          size_t n, struct slice tag)
{
    if (tag.len != FLOW_TOKEN_TAG_LEN)
        return -EPERM;
    char want[FLOW_TOKEN_TAG_LEN + 1];
    uint8_t mac[32];
    if (tag_compute(k->cur, label, parts, n, mac) < 0)
        return -EIO;
    hex_encode(mac, FLOW_TOKEN_TAG_LEN / 2, want);
    if (CRYPTO_memcmp(want, tag.p, FLOW_TOKEN_TAG_LEN) == 0)
        return 0;
    if (!k->prev || tag_compute(k->prev, label, parts, n, mac) < 0)
        return -EPERM;
    hex_encode(mac, FLOW_TOKEN_TAG_LEN / 2, want);
    return CRYPTO_memcmp(want, tag.p, FLOW_TOKEN_TAG_LEN) == 0 ? 0 : -EPERM;
}
