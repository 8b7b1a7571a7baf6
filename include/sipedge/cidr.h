/*
 * cidr: an IPv4 or IPv6 address prefix ("192.0.2.0/24", "2001:db8::/32"), parsed from text.
 * Pure, numeric only; the policy loader validates allowlists with it and the guard matches
 * sources against it.
 */
#ifndef SIPEDGE_CIDR_H
#define SIPEDGE_CIDR_H

#include <stdint.h>

struct cidr {
    uint8_t family; /* AF_INET / AF_INET6 */
    uint8_t prefix; /* 0..32 / 0..128 */
    uint8_t addr[16];
};

/* Parses "a.b.c.d", "a.b.c.d/n", "x::y", "x::/n" (host bits are masked off). out may be
 * NULL (validation only). Returns 0 or -EINVAL. */
int cidr_parse(const char *text, struct cidr *out);

#endif
