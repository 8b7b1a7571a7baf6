/*
 * allowlist: CIDR entries for IPv4 and IPv6, matched by prefix. Lists are short (policy
 * bound POLICY_MAX_ALLOW), so a linear scan beats any trie.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "guard/guard_internal.h"

int allowlist_parse(const char *text, struct guard_cidr *out)
{
    char buf[64];
    if (text == NULL || strlen(text) >= sizeof(buf) || text[0] == '\0')
        return -EINVAL;
    snprintf(buf, sizeof(buf), "%s", text);
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash != NULL) {
        *slash = '\0';
        char *end = NULL;
        if (slash[1] < '0' || slash[1] > '9')
            return -EINVAL;
        prefix = strtol(slash + 1, &end, 10);
        if (*end != '\0')
            return -EINVAL;
    }
    struct guard_cidr c = {0};
    if (inet_pton(AF_INET, buf, c.addr) == 1) {
        c.family = AF_INET;
        if (prefix > 32)
            return -EINVAL;
        c.prefix = prefix < 0 ? 32 : (uint8_t)prefix;
    } else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
        c.family = AF_INET6;
        if (prefix > 128)
            return -EINVAL;
        c.prefix = prefix < 0 ? 128 : (uint8_t)prefix;
    } else {
        return -EINVAL;
    }
    /* Host bits are cleared so matching is a plain masked compare. */
    unsigned bits = c.prefix;
    for (unsigned i = 0; i < 16; i++) {
        if (bits >= 8) {
            bits -= 8;
            continue;
        }
        c.addr[i] &= (uint8_t)(0xff00u >> bits);
        bits = 0;
    }
    if (out != NULL)
        *out = c;
    return 0;
}

int allowlist_set(struct allowlist *al, const char (*texts)[48], unsigned n)
{
    struct allowlist tmp = {0};
    if (n > POLICY_MAX_ALLOW)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++)
        if (allowlist_parse(texts[i], &tmp.cidr[i]) != 0)
            return -EINVAL;
    tmp.n = n;
    *al = tmp;
    return 0;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool allowlist_match(const struct allowlist *al, const struct ban_key *key)
{
    for (unsigned i = 0; i < al->n; i++) {
        const struct guard_cidr *c = &al->cidr[i];
        if (c->family == key->family && prefix_eq(c->addr, key->addr, c->prefix))
            return true;
    }
    return false;
}

bool allowlist_overlaps(const struct allowlist *al, const struct ban_key *key, unsigned bits)
{
    for (unsigned i = 0; i < al->n; i++) {
        const struct guard_cidr *c = &al->cidr[i];
        unsigned n = c->prefix < bits ? c->prefix : bits;
        if (c->family == key->family && prefix_eq(c->addr, key->addr, n))
            return true;
    }
    return false;
}
