/*
 * allowlist: CIDR entries for IPv4 and IPv6, matched by prefix. Lists are short (policy
 * bound POLICY_MAX_ALLOW), so a linear scan beats any trie.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "guard/guard_internal.h"
#include "sipedge/cidr.h"

int allowlist_set(struct allowlist *al, const char (*texts)[48], unsigned n)
{
    struct allowlist tmp = {0};
    if (n > POLICY_MAX_ALLOW)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++)
        if (cidr_parse(texts[i], &tmp.cidr[i]) != 0)
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
        const struct cidr *c = &al->cidr[i];
        if (c->family == key->family && prefix_eq(c->addr, key->addr, c->prefix))
            return true;
    }
    return false;
}

bool allowlist_overlaps(const struct allowlist *al, const struct ban_key *key, unsigned bits)
{
    for (unsigned i = 0; i < al->n; i++) {
        const struct cidr *c = &al->cidr[i];
        unsigned n = c->prefix < bits ? c->prefix : bits;
        if (c->family == key->family && prefix_eq(c->addr, key->addr, n))
            return true;
    }
    return false;
}
