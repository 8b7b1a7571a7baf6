#include "sipedge/netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

bool netaddr_eq(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

bool netaddr_ip_eq(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

socklen_t netaddr_len(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return sizeof(struct sockaddr_in);
    if (sa->sa_family == AF_INET6)
        return sizeof(struct sockaddr_in6);
    return 0;
}

bool netaddr_ip(const struct sockaddr *sa, char *ip, size_t cap, unsigned *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        *port = ntohs(in->sin_port);
        return inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t)cap) != NULL;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        *port = ntohs(in6->sin6_port);
        return inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t)cap) != NULL;
    }
    if (cap)
        ip[0] = '\0';
    *port = 0;
    return false;
}

size_t netaddr_format(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    if (!netaddr_ip(sa, ip, sizeof(ip), &port)) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    int n = snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap ? cap - 1 : 0;
}

int netaddr_from_host(struct slice host, uint16_t port, uint16_t default_port,
                      struct sockaddr_storage *out)
{
    char text[INET6_ADDRSTRLEN];
    bool is_bracketed = host.len >= 2 && host.p[0] == '[' && host.p[host.len - 1] == ']';
    if (is_bracketed)
        host = slice_make(host.p + 1, host.len - 2);
    if (host.len == 0 || host.len >= sizeof(text))
        return -EINVAL;
    memcpy(text, host.p, host.len);
    text[host.len] = '\0';
    memset(out, 0, sizeof(*out));
    uint16_t p = htons(port ? port : default_port);
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (!is_bracketed && inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = p;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = p;
        return 0;
    }
    return -EINVAL;
}
