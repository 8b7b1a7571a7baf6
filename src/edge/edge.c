/*
 * edge: decisions for every datagram, and the rewrites they need.
 *
 * Public side (untrusted):  requests are checked, then relayed to the registrar with
 *   our Via (flow token in ;fl=), received/rport on the client's Via (RFC 3581),
 *   Max-Forwards, and for REGISTER a Path with the flow token (RFC 3327, RFC 5626 §5.1).
 *   Responses are accepted only when their top Via is one we added for an inbound
 *   request; they go on to the next Via over the core socket.
 * Core side (trusted peers only): responses are routed by the flow token in our Via;
 *   requests whose top Route carries our flow token are delivered to that flow
 *   (RFC 5626 §5.3: 403 for a token that fails its MAC, 430 for a flow that is gone).
 * Contact aliases (policy nat.contact_alias), for registrars that ignore Path: a
 *   REGISTER's Contact URIs are rewritten to aliases at our core address that carry the
 *   flow token and the original URI (edge_internal.h), and no Path is added. A request
 *   to such an alias is delivered like a Path-routed one, with the original URI as its
 *   Request-URI; the aliases in a REGISTER response are restored for the client.
 *
 * This file holds the edge's lifecycle (edge_new, edge_free, edge_set_policy), the
 * periodic edge_tick that drives every timer-based job, and the read-only accessors
 * (stats, latency, flow inventory). The rest of the subsystem, by role (shared types
 * and declarations in edge_priv.h):
 *   ingress.c       entry points (public, flow, core) and the output/reply helpers
 *   relay_client.c  client requests and responses: guard, NAT detection, Contact hooks
 *   relay_core.c    core requests and responses: flow tokens, delivery to a flow
 *   flow_reg.c      registrations relayed over a flow, dead flows and their de-REGISTER
 *   regcache.c      the registration cache and its resync after a registrar outage
 *   upstream.c      registrar health checks and failover
 *   keepalive.c     server pings to NATed UDP clients
 *   edge_state.c    snapshot and journal of flows across restarts
 */
#include "sipedge/edge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/statefile.h"

const double edge_latency_bounds_s[EDGE_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

/* ---- lifecycle ------------------------------------------------------------------------ */

static void edge_load_routes(struct edge *e);

int edge_new(struct edge **out, const struct edge_opts *opts)
{
    struct edge *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->cfg = opts->cfg;
    e->pol = *opts->policy;
    e->out = opts->out;
    e->guard = opts->guard;
    e->hooks = opts->hooks;
    const struct config *c = opts->cfg;
    e->listeners[0] = (struct edge_listeners){c->listen_udp, c->n_listen_udp, "UDP"};
    e->listeners[FLOW_UDP] = (struct edge_listeners){c->listen_udp, c->n_listen_udp, "UDP"};
    e->listeners[FLOW_WS] = (struct edge_listeners){c->listen_ws, c->n_listen_ws, "WS"};
    e->listeners[FLOW_WSS] = (struct edge_listeners){c->listen_wss, c->n_listen_wss, "WSS"};
    e->listeners[FLOW_TCP] = (struct edge_listeners){c->listen_tcp, c->n_listen_tcp, "TCP"};
    e->listeners[FLOW_TLS] = (struct edge_listeners){c->listen_tls, c->n_listen_tls, "TLS"};
    /* Our Via and Path name the core address; the flags and parameters around them. */
    e->relay_grows = 2 * strlen(c->core.text) + 160;
    e->ups[e->n_ups++].addr = &e->cfg->registrar;
    for (unsigned i = 0; i < e->cfg->n_registrar_backups && e->n_ups < EDGE_MAX_UPSTREAMS; i++)
        e->ups[e->n_ups++].addr = &e->cfg->registrar_backups[i];
    int rc = flow_token_keys_new(&e->keys, opts->cfg->flow_key,
                                 opts->cfg->has_flow_key_prev ? opts->cfg->flow_key_prev : NULL);
    if (rc < 0)
        goto fail;
    rc = flow_table_new(&e->flows, e->pol.max_flows, opts->worker);
    if (rc < 0)
        goto fail;
    /* A fresh epoch per run: tokens of an earlier run name no flow of this one. */
    uint32_t epoch = 0;
    while (epoch == 0) {
        if (RAND_bytes((unsigned char *)&epoch, sizeof(epoch)) != 1) {
            rc = -EIO;
            goto fail;
        }
    }
    flow_table_set_epoch(e->flows, epoch);
    uint64_t bk[2];
    if (RAND_bytes((unsigned char *)bk, sizeof(bk)) != 1) {
        rc = -EIO;
        goto fail;
    }
    e->branch_k0 = bk[0];
    e->branch_k1 = bk[1];
    edge_load_routes(e);
    *out = e;
    return 0;
fail:
    edge_free(e);
    return rc;
}

void edge_free(struct edge *e)
{
    if (!e)
        return;
    if (e->flows) {
        for (uint32_t i = 0; i < flow_table_capacity(e->flows); i++) {
            struct flow *f = flow_table_get_slot(e->flows, i);
            if (f && f->regs)
                flow_regs_free(f);
        }
    }
    flow_token_keys_free(e->keys);
    flow_table_free(e->flows);
    statefile_buf_free(&e->journal);
    free(e);
}

/* The policy's outbound-proxy Routes, parsed (the loader validated them). */
static void edge_load_routes(struct edge *e)
{
    e->n_allow_routes = 0;
    for (unsigned i = 0; i < e->pol.n_relay_allow_routes; i++)
        if (config_addr_parse(e->pol.relay_allow_routes[i], &e->allow_routes[e->n_allow_routes]) ==
            0)
            e->n_allow_routes++;
}

void edge_set_policy(struct edge *e, const struct policy *policy)
{
    e->pol = *policy;
    edge_load_routes(e);
}

void edge_tick_dead(struct edge *e, uint64_t now_ms)
{
    edge_dead_flows_process(e, now_ms);
}

void edge_tick(struct edge *e, uint64_t now_ms)
{
    e->n_ticks++;
    upstream_check(e, now_ms);
    upstream_health_pings(e, now_ms);
    regcache_resync_step(e, now_ms);
    edge_nat_pings(e, now_ms);
    /* Sweep the whole table about once a minute, a slice per tick. */
    uint32_t per_tick = flow_table_capacity(e->flows) / 60 + 1;
    flow_table_sweep(e->flows, now_ms, (uint64_t)e->pol.flow_idle_timeout_s * 1000, per_tick,
                     edge_on_flow_release, e);
    edge_dead_flows_process(e, now_ms);
    e->last_sweep_ms = now_ms;
}

const struct edge_stats *edge_stats(const struct edge *e)
{
    return &e->st;
}

uint32_t edge_n_flows(const struct edge *e)
{
    return flow_table_count(e->flows);
}

void edge_stats_format_sum(const struct edge *const *es, unsigned n_edges, char *buf, size_t cap)
{
    struct edge_stats st = {0};
    unsigned n_flows = 0;
    for (unsigned i = 0; i < n_edges; i++) {
#define EDGE_STATS_ADD(name) st.name += es[i]->st.name;
        EDGE_STATS(EDGE_STATS_ADD)
#undef EDGE_STATS_ADD
        n_flows += flow_table_count(es[i]->flows);
    }
    size_t n = 0;
    buf[0] = '\0';
#define EDGE_STATS_PRINT(name)                                                                     \
    if (n < cap)                                                                                   \
        n += (size_t)snprintf(buf + n, cap - n, "%s%s=%llu", n ? " " : "", #name,                  \
                              (unsigned long long)st.name);
    EDGE_STATS(EDGE_STATS_PRINT)
#undef EDGE_STATS_PRINT
    if (n < cap)
        snprintf(buf + n, cap - n, " flows=%u", n_flows);
}

void edge_stats_format(const struct edge *e, char *buf, size_t cap)
{
    edge_stats_format_sum(&e, 1, buf, cap);
}

const struct edge_latency *edge_latency(const struct edge *e)
{
    return &e->lat;
}

bool edge_registrar_up(const struct edge *e)
{
    return e->loss_since_ms == 0;
}

size_t edge_flows_foreach(struct edge *e, bool (*cb)(void *ctx, const struct edge_flow_info *fi),
                          void *ctx)
{
    size_t n = 0;
    uint32_t cap = flow_table_capacity(e->flows);
    for (uint32_t i = 0; i < cap; i++) {
        struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state == FLOW_FREE)
            continue;
        struct edge_flow_info fi = {
            .flow_ref = edge_flow_ref_of(e, f),
            .transport = f->transport,
            .state = f->state,
            .is_nat = f->is_nat,
            .remote = &f->remote.sa,
            .last_rx_ms = f->last_rx_ms,
        };
        char contacts[8][URI_LIST_TEXT_MAX];
        for (struct flow_reg *r = f->regs; r && fi.n_regs < 8; r = r->next) {
            uri_list_format(&r->contacts, contacts[fi.n_regs], sizeof(contacts[0]));
            fi.regs[fi.n_regs] = (struct edge_reg_info){.aor = r->aor,
                                                        .contacts = contacts[fi.n_regs],
                                                        .user_agent = r->user_agent,
                                                        .until_ms = r->until_ms,
                                                        .is_authed = r->is_authed};
            fi.n_regs++;
        }
        n++;
        if (!cb(ctx, &fi))
            break;
    }
    return n;
}

void edge_flow_counts(const struct edge *e, uint32_t n[FLOW_N_TRANSPORTS])
{
    memset(n, 0, FLOW_N_TRANSPORTS * sizeof(n[0]));
    uint32_t cap = flow_table_capacity(e->flows);
    for (uint32_t i = 0; i < cap; i++) {
        const struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state == FLOW_LIVE && f->transport < FLOW_N_TRANSPORTS)
            n[f->transport]++;
    }
}
