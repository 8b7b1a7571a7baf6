/*
 * STUN header (RFC 5389 §6):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |0 0|     STUN Message Type     |         Message Length        |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                  Magic Cookie = 0x2112A442                    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                  Transaction ID (96 bits)                     |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Attributes follow as type (16) | length (16) | value padded to 4 bytes.
 */
#include "sipedge/stun.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#define STUN_HDR 20
#define STUN_COOKIE 0x2112A442u
#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_ATTR_XOR_MAPPED 0x0020
#define STUN_ATTR_FINGERPRINT 0x8028
#define STUN_FINGERPRINT_XOR 0x5354554eu

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* CRC-32 (ISO 3309) as FINGERPRINT needs it; keepalives are rare, a bitwise loop will do. */
static uint32_t crc32_iso(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

bool stun_is_stun(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    return len >= 1 && (p[0] & 0xc0) == 0 && p[0] != '\r' && p[0] != '\n';
}

int stun_binding_response(const void *req, size_t len, const struct sockaddr *src, void *out,
                          size_t cap)
{
    const uint8_t *q = req;
    if (len < STUN_HDR || get16(q) != STUN_BINDING_REQUEST ||
        get16(q + 2) != len - STUN_HDR || (len & 3) != 0 ||
        ((uint32_t)q[4] << 24 | (uint32_t)q[5] << 16 | (uint32_t)q[6] << 8 | q[7]) != STUN_COOKIE)
        return -EBADMSG;
    /* Walk the attributes only to validate their framing and see FINGERPRINT. */
    bool has_fp = false;
    size_t off = STUN_HDR;
    while (off + 4 <= len) {
        uint16_t type = get16(q + off), alen = get16(q + off + 2);
        size_t padded = ((size_t)alen + 3) & ~(size_t)3;
        if (off + 4 + padded > len)
            return -EBADMSG;
        if (type == STUN_ATTR_FINGERPRINT)
            has_fp = true;
        off += 4 + padded;
    }
    if (off != len)
        return -EBADMSG;

    size_t addr_len = src->sa_family == AF_INET ? 4 : src->sa_family == AF_INET6 ? 16 : 0;
    if (!addr_len)
        return -EBADMSG;
    size_t need = STUN_HDR + 4 + 4 + addr_len + (has_fp ? 8 : 0);
    if (cap < need)
        return -ENOSPC;
    uint8_t *r = out;
    put16(r, STUN_BINDING_SUCCESS);
    memcpy(r + 4, q + 4, 16); /* cookie and transaction id */
    uint8_t *a = r + STUN_HDR;
    put16(a, STUN_ATTR_XOR_MAPPED);
    put16(a + 2, (uint16_t)(4 + addr_len));
    a[4] = 0;
    uint16_t port;
    const uint8_t *ip;
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)src;
        a[5] = 0x01;
        port = ntohs(in->sin_port);
        ip = (const uint8_t *)&in->sin_addr;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)src;
        a[5] = 0x02;
        port = ntohs(in6->sin6_port);
        ip = (const uint8_t *)&in6->sin6_addr;
    }
    put16(a + 6, port ^ (uint16_t)(STUN_COOKIE >> 16));
    /* X-Address: XOR with the cookie, then (IPv6) with the transaction id. */
    for (size_t i = 0; i < addr_len; i++)
        a[8 + i] = ip[i] ^ r[4 + i];
    size_t n = STUN_HDR + 8 + addr_len;
    if (has_fp) {
        put16(r + 2, (uint16_t)(n - STUN_HDR + 8));
        put16(r + n, STUN_ATTR_FINGERPRINT);
        put16(r + n + 2, 4);
        put32(r + n + 4, crc32_iso(r, n) ^ STUN_FINGERPRINT_XOR);
        n += 8;
    } else {
        put16(r + 2, (uint16_t)(n - STUN_HDR));
    }
    return (int)n;
}
