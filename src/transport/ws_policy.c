/*
 * ws_policy: the pure rules of the WebSocket transport's handshake and frames, with no
 * lws and no state: the Origin allowlist (RFC 6454 §7; RFC 7118 §4.1 leaves the check to
 * the server), the "sip" subprotocol in the offer, the per-IP key of a source, and the
 * UTF-8 check that text frames need (RFC 6455 §5.6, §8.1). They are apart from the lws
 * adapter so the unit tests reach them without a context.
 */
#define _GNU_SOURCE
#include "transport_ws_internal.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/*
 * IPv6 sources are keyed by their first v6_prefix bits (guard.ipv6_prefix): one host
 * usually holds a whole /64, and keying the full address would let it fill the table
 * and multiply the per-IP caps. An IPv4-mapped address is keyed as the IPv4 one.
 */
void transport_ws_ip_key(const struct sockaddr *sa, unsigned v6_prefix, union ws_ip_key *k)
{
    memset(k, 0, sizeof(*k));
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            k->family = AF_INET;
            memcpy(k->addr, &s6->sin6_addr.s6_addr[12], 4);
            return;
        }
        if (v6_prefix == 0 || v6_prefix > 128)
            v6_prefix = 128;
        k->family = AF_INET6;
        memcpy(k->addr, &s6->sin6_addr, v6_prefix / 8);
        if (v6_prefix % 8)
            k->addr[v6_prefix / 8] =
                (uint8_t)(s6->sin6_addr.s6_addr[v6_prefix / 8] & (0xffu << (8 - v6_prefix % 8)));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        k->family = AF_INET;
        memcpy(k->addr, &s4->sin_addr, 4);
    }
}

/* ---- subprotocol (RFC 7118 §4.1) ---------------------------------------------------- */

bool transport_ws_offers_sip(char *hdr)
{
    bool has_sip = false;
    char *save = NULL;
    for (char *tok = strtok_r(hdr, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
            l--;
        if (l == 3 && !memcmp(tok, "sip", 3))
            has_sip = true;
    }
    return has_sip;
}

/* ---- Origin policy (RFC 6454 §7, RFC 7118 §4.1 leaves it to the server) ------------- */

static uint16_t ws_default_port(const char *scheme)
{
    if (!strcasecmp(scheme, "https") || !strcasecmp(scheme, "wss"))
        return 443;
    if (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "ws"))
        return 80;
    return 0;
}

int transport_ws_origin_parse(const char *s, size_t n, struct ws_origin *out)
{
    struct ws_origin o;
    memset(&o, 0, sizeof(o));
    const char *end = s + n;
    const char *sep = NULL;
    for (const char *p = s; p + 2 < end; p++) {
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            sep = p;
            break;
        }
    }
    if (!sep || sep == s || (size_t)(sep - s) >= sizeof(o.scheme))
        return -EINVAL;
    memcpy(o.scheme, s, (size_t)(sep - s));
    const char *host = sep + 3;
    if (end > host && end[-1] == '/')
        end--; /* tolerate a trailing slash in configuration */
    const char *host_end = end;
    const char *colon = NULL;
    if (host < end && *host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (!rb)
            return -EINVAL;
        host_end = rb + 1;
        if (host_end < end) {
            if (*host_end != ':')
                return -EINVAL;
            colon = host_end;
        }
    } else {
        for (const char *p = host; p < end; p++) {
            if (*p == '/' || *p == '?' || *p == '#' || *p == '@')
                return -EINVAL;
            if (*p == ':') {
                colon = p;
                host_end = p;
                break;
            }
        }
    }
    if (host_end == host || (size_t)(host_end - host) >= sizeof(o.host))
        return -EINVAL;
    memcpy(o.host, host, (size_t)(host_end - host));
    if (colon) {
        unsigned long port = 0;
        const char *p = colon + 1;
        if (p == end)
            return -EINVAL;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            port = port * 10 + (unsigned long)(*p - '0');
            if (port > 65535)
                return -EINVAL;
        }
        if (port == 0)
            return -EINVAL;
        o.port = (uint16_t)port;
        o.has_port = true;
    }
    *out = o;
    return 0;
}

bool transport_ws_origin_allowed(const struct ws_origin *allow, unsigned n_allow,
                                 const char *origin, size_t len)
{
    struct ws_origin o;
    if (n_allow == 0)
        return true;
    if (transport_ws_origin_parse(origin, len, &o) < 0)
        return false; /* "null" and anything malformed */
    uint16_t port = o.has_port ? o.port : ws_default_port(o.scheme);
    for (unsigned i = 0; i < n_allow; i++) {
        const struct ws_origin *a = &allow[i];
        if (strcasecmp(a->scheme, o.scheme) || strcasecmp(a->host, o.host))
            continue;
        if (!a->has_port || a->port == port)
            return true;
    }
    return false;
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/*
 * RFC 3629 §4 well-formed UTF-8 (no overlongs, no surrogates, max U+10FFFF). SIP is
 * almost all ASCII, so runs of 8 ASCII bytes are skipped a word at a time; every output
 * message is scanned once, at commit, and this keeps that scan a small part of it.
 */
bool transport_ws_is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t w;
        if (n - i >= 8 && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ull) == 0)) {
            i += 8;
            continue;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (i + k >= n)
            return false; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++) {
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return false;
        }
        i += k + 1;
    }
    return true;
}
