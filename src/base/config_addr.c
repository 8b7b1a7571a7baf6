/*
 * config_addr: parses the numeric addresses of the configuration ("ip:port",
 * "[ipv6]:port") into a socket address plus canonical text. It sits in base, below the
 * config layer, so the YAML schema walker (yaml_walk.c) can check address values without
 * calling back into the loader that uses it (config_load.c).
 */
#include "sipedge/config_addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Port: 1..65535, decimal digits only (no sign, no spaces). */
static int parse_port(const char *s, uint16_t *out)
{
    unsigned v = 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (s[n] < '0' || s[n] > '9' || n >= 5)
            return -EINVAL;
        v = v * 10 + (unsigned)(s[n] - '0');
    }
    if (n == 0 || v == 0 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

int config_addr_parse(const char *s, struct config_addr *out)
{
    if (s == NULL || out == NULL)
        return -EINVAL;

    struct config_addr a;
    memset(&a, 0, sizeof(a));
    char host[INET6_ADDRSTRLEN];
    const char *port;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        size_t n = (size_t)(close - (s + 1));
        if (n == 0 || n >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, n);
        host[n] = '\0';
        port = close + 2;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -EINVAL;
        if (parse_port(port, &a.port) != 0)
            return -EINVAL;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(a.port);
        a.len = sizeof(*sin6);
        /* Canonical text, so logs and URIs print one spelling per address. */
        char canon[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &sin6->sin6_addr, canon, sizeof(canon));
        snprintf(a.host, sizeof(a.host), "[%s]", canon);
    } else {
        /* Exactly one colon: an unbracketed IPv6 address would be ambiguous with a port. */
        const char *colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -EINVAL;
        size_t n = (size_t)(colon - s);
        if (n == 0 || n >= sizeof(host))
            return -EINVAL;
        memcpy(host, s, n);
        host[n] = '\0';
        port = colon + 1;
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -EINVAL;
        if (parse_port(port, &a.port) != 0)
            return -EINVAL;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(a.port);
        a.len = sizeof(*sin);
        inet_ntop(AF_INET, &sin->sin_addr, a.host, sizeof(a.host));
    }
    snprintf(a.text, sizeof(a.text), "%s:%u", a.host, (unsigned)a.port);
    *out = a;
    return 0;
}
