/*
 * config_addr: a numeric "ip:port" or "[ipv6]:port" as the configuration writes it, parsed
 * and kept as text for logs and URIs. Base code: the YAML schema walker, the loaders, the
 * command line and the edge all parse addresses the same way.
 */
#ifndef SIPEDGE_CONFIG_ADDR_H
#define SIPEDGE_CONFIG_ADDR_H

#include <stdint.h>
#include <sys/socket.h>

struct config_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* "127.0.0.1:5060" / "[::1]:5060" */
    char host[48]; /* "127.0.0.1" / "[::1]" (brackets for IPv6, as in a SIP URI) */
    uint16_t port;
};

/* Parses "ip:port" / "[ip6]:port" (port required). Returns 0 or -EINVAL. */
int config_addr_parse(const char *s, struct config_addr *out);

#endif
