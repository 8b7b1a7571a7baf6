/*
 * netaddr: small helpers on IPv4/IPv6 socket addresses, shared by every module that
 * compares, prints or parses peers. Pure functions, numeric addresses only (no DNS).
 */
#ifndef SIPEDGE_NETADDR_H
#define SIPEDGE_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/slice.h"

/* Longest text netaddr_format writes, with the NUL: "[v6]:65535". */
#define NETADDR_TEXT_MAX 48

/* True when a and b are the same family, address and port (other families: false). */
bool netaddr_eq(const struct sockaddr *a, const struct sockaddr *b);

/* True when a and b are the same family and address, whatever their ports. */
bool netaddr_ip_eq(const struct sockaddr *a, const struct sockaddr *b);

/* Size of the sockaddr for its family (sockaddr_in / sockaddr_in6), 0 for others. */
socklen_t netaddr_len(const struct sockaddr *sa);

/* The address as text without brackets ("192.0.2.1", "2001:db8::1") into ip (at least
 * INET6_ADDRSTRLEN bytes), and its port. Returns false for other families. */
bool netaddr_ip(const struct sockaddr *sa, char *ip, size_t cap, unsigned *port);

/* "ip:port", "[v6]:port" into out; returns the length, or 0 for other families. */
size_t netaddr_format(const struct sockaddr *sa, char *out, size_t cap);

/*
 * A numeric host as SIP writes it (IPv4, or IPv6 in brackets; bare IPv6 is accepted
 * too) and a port (0: default_port) into *out. Returns 0 or -EINVAL.
 */
int netaddr_from_host(struct slice host, uint16_t port, uint16_t default_port,
                      struct sockaddr_storage *out);

#endif
