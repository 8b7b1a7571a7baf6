/*
 * The embedded registrar: arbitrary datagrams from a client address and from the edge's
 * (trusted) address, with time moving on, against a users file. One configured peer
 * (127.0.0.1:5090) makes the peer routing reachable; a fixed branch key keeps runs
 * reproducible (the sb MAC of a routed request is the same every run).
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/config.h"
#include "sipedge/netaddr.h"
#include "sipedge/registrar.h"

static struct registrar *g_reg;
static struct config_addr g_self, g_edge, g_peer;
static const uint8_t g_branch_key[REGISTRAR_BRANCH_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
static struct policy g_pol;
static uint64_t g_now = 1000;

static void on_send(void *ctx, const struct sockaddr *dst, socklen_t dst_len, const char *buf,
                    size_t len)
{
    (void)ctx;
    (void)dst;
    (void)dst_len;
    if (len == 0 || len > 65535 || buf == NULL)
        abort();
}

#include "../unit/reg_tx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_reg) {
        policy_defaults(&g_pol);
        g_pol.max_bindings = 64;
        config_addr_parse("127.0.0.1:5080", &g_self);
        config_addr_parse("127.0.0.1:5070", &g_edge);
        config_addr_parse("127.0.0.1:5090", &g_peer);
        struct registrar_opts o = {.self = &g_self,
                                   .users_file = NULL,
                                   .realm = "fuzz",
                                   .policy = &g_pol,
                                   .trusted = &g_edge,
                                   .n_trusted = 1,
                                   .peers = &g_peer,
                                   .n_peers = 1,
                                   .branch_key = g_branch_key};
        char err[256];
        if (registrar_new_tx(&g_reg, &o, NULL, err, sizeof(err)) < 0)
            abort();
    }
    if (size < 1)
        return 0;
    g_now += 1000;
    const struct sockaddr *src = (const struct sockaddr *)&g_edge.ss;
    struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(5060)};
    client.sin_addr.s_addr = htonl(0xc0000201);
    if (data[0] & 1)
        src = (const struct sockaddr *)&client;
    registrar_handle(g_reg, (const char *)data + 1, size - 1, src,
                     src->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                               : sizeof(struct sockaddr_in6),
                     g_now);
    if (data[0] & 2)
        registrar_tick(g_reg, g_now);
    return 0;
}
