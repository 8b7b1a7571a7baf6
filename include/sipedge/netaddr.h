/*
 * netaddr: small helpers on IPv4/IPv6 socket addresses, shared by every module that
 * compares peers. Pure functions.
 */
#ifndef SIPEDGE_NETADDR_H
#define SIPEDGE_NETADDR_H

#include <stdbool.h>
#include <sys/socket.h>

/* True when a and b are the same family, address and port (other families: false). */
bool netaddr_eq(const struct sockaddr *a, const struct sockaddr *b);

/* Size of the sockaddr for its family (sockaddr_in / sockaddr_in6), 0 for others. */
socklen_t netaddr_len(const struct sockaddr *sa);

#endif
