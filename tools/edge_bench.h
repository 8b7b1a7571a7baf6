/*
 * edge_bench: the in-process harness the edge benchmarks share (bench_snapshot,
 * bench_relay): an output that keeps the last message the edge wrote, an edge with one
 * public UDP socket and an external registrar, the registrar's 200 OK for the REGISTER
 * the edge relayed last, and a monotonic clock. It compiles against the edge API with the
 * output contract (transport.h) and the one before it, so scripts/bench_relay.sh can
 * build a benchmark against an older commit.
 */
#ifndef SIPEDGE_TOOLS_EDGE_BENCH_H
#define SIPEDGE_TOOLS_EDGE_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/sip_msg.h"

static char bench_tx[65535], bench_last[65535];
static size_t bench_last_len;

#ifdef TX_MSG_MAX /* struct tx_out */
static char *bench_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    (void)ctx;
    (void)d;
    *cap = sizeof(bench_tx);
    return bench_tx;
}

static int bench_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    (void)ctx;
    (void)d;
    memcpy(bench_last, bench_tx, len);
    bench_last_len = len;
    return 0;
}
#else /* struct edge_out */
static char *bench_reserve(void *ctx, size_t *cap)
{
    (void)ctx;
    *cap = sizeof(bench_tx);
    return bench_tx;
}

static void bench_commit(void *ctx, uint8_t sock, const struct sockaddr *dst, size_t len)
{
    (void)ctx;
    (void)sock;
    (void)dst;
    memcpy(bench_last, bench_tx, len);
    bench_last_len = len;
}
#endif

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An edge on 127.0.0.1:5060 (core :5070, registrar :5080) for max_flows flows; exits on
 * failure. cfg and pol must outlive it. */
static inline struct edge *bench_edge(struct config *cfg, struct policy *pol, uint32_t max_flows)
{
    config_defaults(cfg);
    config_addr_parse("127.0.0.1:5060", &cfg->listen_udp[0]);
    cfg->n_listen_udp = 1;
    config_addr_parse("127.0.0.1:5070", &cfg->core);
    config_addr_parse("127.0.0.1:5080", &cfg->registrar);
    cfg->has_external_registrar = true;
    memset(cfg->flow_key, 7, sizeof(cfg->flow_key));
    cfg->has_flow_key = true;
    policy_defaults(pol);
    pol->max_flows = max_flows;
    struct edge_opts eo = {
        .cfg = cfg, .policy = pol, .out = {.reserve = bench_reserve, .commit = bench_commit}};
    struct edge *e = NULL;
    if (edge_new(&e, &eo) < 0) {
        fprintf(stderr, "edge_new failed\n");
        exit(1);
    }
    return e;
}

/* The registrar's 200 for the REGISTER the edge wrote last, granting contact 3600 s. */
static inline size_t bench_ok_for_last(char *resp, size_t cap, const char *contact)
{
    struct sip_hdr hdrs[64];
    struct sip_msg m;
    struct sip_err err;
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = 64};
    if (sip_msg_parse(&m, bench_last, bench_last_len, hdrs, &lim, &err) < 0)
        return 0;
    size_t n = (size_t)snprintf(resp, cap, "SIP/2.0 200 OK\r\n");
    for (uint16_t i = 0; i < m.n_hdrs; i++) {
        const struct sip_hdr *h = &m.hdrs[i];
        if (h->id == SIP_HDR_VIA || h->id == SIP_HDR_FROM || h->id == SIP_HDR_TO ||
            h->id == SIP_HDR_CALL_ID || h->id == SIP_HDR_CSEQ)
            n += (size_t)snprintf(resp + n, cap - n, "%.*s", (int)h->line_len, bench_last + h->off);
    }
    n += (size_t)snprintf(resp + n, cap - n,
                          "Contact: <%s>;expires=3600\r\nContent-Length: 0\r\n\r\n", contact);
    return n;
}

#endif
