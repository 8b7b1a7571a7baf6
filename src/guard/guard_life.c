/*
 * guard_life: the guard's lifetime and its plumbing, apart from the decisions in guard.c.
 * guard_new builds the tables, opens the event log, collects the listen ports (the scope of
 * the nftables rules) and the core side's addresses (never banned), and starts the injected
 * backend; guard_set_policy applies a reload all or nothing; the accessors and the reason
 * names serve the admin, metrics and state code. Nothing here judges a packet.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "guard/ban_backend.h"
#include "guard/guard_impl.h"
#include "sipedge/log.h"

static const char *const reason_names[] = {
    [GUARD_REASON_NONE] = "none",
    [GUARD_REASON_BANNED] = "banned",
    [GUARD_REASON_RATE_IP] = "rate_ip",
    [GUARD_REASON_RATE_IP_PORT] = "rate_ip_port",
    [GUARD_REASON_RATE_OVERFLOW] = "rate_overflow",
    [GUARD_REASON_RATE_AOR] = "rate_aor",
    [GUARD_REASON_RATE_REGISTRAR] = "rate_registrar",
    [GUARD_REASON_SCANNER] = "scanner",
    [GUARD_REASON_UNKNOWN_DOMAIN] = "unknown_domain",
    [GUARD_REASON_MALFORMED] = "malformed",
    [GUARD_REASON_AUTH_FAILURE] = "auth_failure",
    [GUARD_REASON_FORBIDDEN] = "forbidden",
    [GUARD_REASON_NOT_FOUND] = "not_found",
    [GUARD_REASON_USER_SCAN] = "user_scan",
    [GUARD_REASON_OVER_LIMIT] = "over_limit",
    [GUARD_REASON_ADMIN] = "admin",
};

const char *guard_reason_name(enum guard_reason r)
{
    if ((size_t)r < sizeof(reason_names) / sizeof(reason_names[0]) && reason_names[r] != NULL)
        return reason_names[r];
    return "unknown";
}

static void collect_ports(struct guard *g)
{
    g->n_udp_ports = g->n_tcp_ports = 0;
    if (g->cfg == NULL)
        return;
    const struct config *c = g->cfg;
    for (unsigned i = 0; i < c->n_listen_udp && g->n_udp_ports < GUARD_PORTS_MAX; i++)
        g->udp_ports[g->n_udp_ports++] = c->listen_udp[i].port;
    for (unsigned i = 0; i < c->n_listen_ws && g->n_tcp_ports < GUARD_PORTS_MAX; i++)
        g->tcp_ports[g->n_tcp_ports++] = c->listen_ws[i].port;
    for (unsigned i = 0; i < c->n_listen_wss && g->n_tcp_ports < GUARD_PORTS_MAX; i++)
        g->tcp_ports[g->n_tcp_ports++] = c->listen_wss[i].port;
    for (unsigned i = 0; i < c->n_listen_tcp && g->n_tcp_ports < GUARD_PORTS_MAX; i++)
        g->tcp_ports[g->n_tcp_ports++] = c->listen_tcp[i].port;
    for (unsigned i = 0; i < c->n_listen_tls && g->n_tcp_ports < GUARD_PORTS_MAX; i++)
        g->tcp_ports[g->n_tcp_ports++] = c->listen_tls[i].port;
}

static void protect(struct guard *g, const struct config_addr *a)
{
    struct ban_key k;
    if (a->len == 0 || g->n_protected >= GUARD_PROTECTED_MAX ||
        ban_key_from_sockaddr((const struct sockaddr *)&a->ss, false, &k) != 0)
        return;
    if (!guard_is_protected(g, &k))
        g->protected_keys[g->n_protected++] = k;
}

/* The core side's addresses: whatever they send, they are never banned (a forged strike
 * storm must not cut the edge off its registrar or peers). */
static void collect_protected(struct guard *g)
{
    g->n_protected = 0;
    if (g->cfg == NULL)
        return;
    const struct config *c = g->cfg;
    protect(g, &c->registrar);
    for (unsigned i = 0; i < c->n_registrar_backups && i < CONFIG_MAX_PEERS; i++)
        protect(g, &c->registrar_backups[i]);
    for (unsigned i = 0; i < c->n_core_peers && i < CONFIG_MAX_PEERS; i++)
        protect(g, &c->core_peers[i]);
    protect(g, &c->embedded_listen);
    protect(g, &c->core);
}

static struct ban_nft_opts nft_opts(const struct guard *g, const struct policy *pol)
{
    return (struct ban_nft_opts){
        .drop_all = pol->guard_nft_drop == POLICY_NFT_DROP_ALL,
        .udp_ports = g->udp_ports,
        .n_udp_ports = g->n_udp_ports,
        .tcp_ports = g->tcp_ports,
        .n_tcp_ports = g->n_tcp_ports,
        .ipv6_prefix = (uint8_t)pol->guard_ipv6_prefix,
    };
}

struct restore_ctx {
    struct guard *g;
    uint64_t now;
    unsigned n;
};

static void on_restore(void *arg, const struct ban_key *key, uint64_t remaining_ms,
                       uint64_t timeout_ms)
{
    struct restore_ctx *r = arg;
    if (ban_restore(r->g->ban, key, remaining_ms, timeout_ms, r->now) == 0)
        r->n++;
}

/* Sets the backend's rules up and reads its live bans back into the mirror; on failure the
 * guard runs without it (userspace drops) and says so once. */
static void backend_start(struct guard *g, struct ban_backend *be, uint64_t now)
{
    if (be == NULL)
        return;
    char err[512] = "";
    struct restore_ctx r = {.g = g, .now = now};
    struct ban_nft_opts o = nft_opts(g, &g->pol);
    int rc = be->ops->configure != NULL ? be->ops->configure(be, &o, err, sizeof(err)) : 0;
    if (rc == 0 && be->ops->read_back != NULL)
        rc = be->ops->read_back(be, on_restore, &r, err, sizeof(err));
    if (rc != 0) {
        log_warn("guard: %s backend unavailable (%s%s%s), falling back to userspace drops",
                 be->ops->name, strerror(-rc), err[0] ? ": " : "", err);
        return;
    }
    ban_attach_backend(g->ban, be);
    g->is_nft = be->ops->is_kernel;
    if (g->is_nft)
        log_info("guard: %s backend ready (table inet sipedge), %u bans restored", be->ops->name,
                 r.n);
}

int guard_new(struct guard **out, const struct guard_opts *opts, uint64_t now_ms)
{
    if (out == NULL || opts == NULL || opts->policy == NULL)
        return -EINVAL;
    const struct policy *pol = opts->policy;
    struct guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    int rc = -EINVAL;
    g->pol = *pol;
    g->cfg = opts->cfg;
    g->offload = opts->offload;
    g->mono_us = opts->mono_us;
    g->now_ms = now_ms;
    uint64_t seed = opts->seed;
    if (seed == 0 && getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
        seed = now_ms ^ (uint64_t)(uintptr_t)g;
    g->rng = seed | 1;
    if (allowlist_set(&g->allow, pol->guard_allowlist, pol->n_guard_allowlist) != 0)
        goto fail;
    rc = keytab_init(&g->srcs, sizeof(struct ban_key), sizeof(struct guard_src),
                         pol->guard_max_sources, guard_rng_next(g));
    if (rc != 0)
        goto fail;
    rc = keytab_init(&g->aors, GUARD_AOR_KEY, sizeof(struct guard_aor), pol->guard_max_aors,
                         guard_rng_next(g));
    if (rc != 0)
        goto fail;
    rc = ban_new(&g->ban, pol->guard_max_bans, pol->guard_ban_durations_s,
                 pol->n_guard_ban_durations, pol->guard_ban_memory_s, NULL);
    if (rc != 0)
        goto fail;
    rc = events_open(&g->ev, pol->guard_event_log);
    if (rc != 0) {
        log_error("guard: cannot open event log '%s': %s", pol->guard_event_log, strerror(-rc));
        goto fail;
    }
    ratelim_init(&g->overflow, pol->guard_ip_burst, now_ms);
    ratelim_init(&g->overflow_aor, pol->guard_aor_burst, now_ms);
    ratelim_init(&g->reg_known, pol->guard_registrar_burst, now_ms);
    ratelim_init(&g->reg_general, pol->guard_registrar_burst, now_ms);
    collect_ports(g);
    collect_protected(g);
    backend_start(g, opts->backend, now_ms);
    *out = g;
    return 0;
fail:
    guard_free(g);
    return rc;
}

void guard_free(struct guard *g)
{
    if (g == NULL)
        return;
    guard_state_close(g);
    ban_free(g->ban);
    events_close(g->ev);
    keytab_deinit(&g->srcs);
    keytab_deinit(&g->aors);
    free(g);
}

int guard_set_policy(struct guard *g, const struct policy *pol, uint64_t now_ms)
{
    struct allowlist allow;
    struct events *ev = NULL;
    bool new_ev = strcmp(pol->guard_event_log, events_path(g->ev)) != 0;
    g->now_ms = now_ms;
    if (allowlist_set(&allow, pol->guard_allowlist, pol->n_guard_allowlist) != 0)
        return -EINVAL;
    if (new_ev) {
        int rc = events_open(&ev, pol->guard_event_log);
        if (rc != 0) {
            log_error("guard: cannot open event log '%s': %s; keeping the current policy",
                      pol->guard_event_log, strerror(-rc));
            return rc;
        }
    }
    int rc = keytab_set_cap(&g->srcs, pol->guard_max_sources);
    if (rc == 0)
        rc = keytab_set_cap(&g->aors, pol->guard_max_aors);
    if (rc == 0)
        rc = ban_set_limits(g->ban, pol->guard_max_bans, pol->guard_ban_durations_s,
                            pol->n_guard_ban_durations, pol->guard_ban_memory_s);
    struct ban_backend *be = ban_backend_of(g->ban);
    if (rc == 0 && be != NULL && be->ops->configure != NULL &&
        (pol->guard_nft_drop != g->pol.guard_nft_drop ||
         pol->guard_ipv6_prefix != g->pol.guard_ipv6_prefix)) {
        char err[512] = "";
        struct ban_nft_opts o = nft_opts(g, pol);
        rc = be->ops->configure(be, &o, err, sizeof(err));
        if (rc != 0)
            log_error("guard: %s rules not updated: %s", be->ops->name, err);
    }
    if (rc != 0) {
        if (new_ev)
            events_close(ev);
        /* Table bounds may already have moved; put them back to the running policy. */
        keytab_set_cap(&g->srcs, g->pol.guard_max_sources);
        keytab_set_cap(&g->aors, g->pol.guard_max_aors);
        ban_set_limits(g->ban, g->pol.guard_max_bans, g->pol.guard_ban_durations_s,
                       g->pol.n_guard_ban_durations, g->pol.guard_ban_memory_s);
        return rc;
    }
    if (new_ev) {
        events_close(g->ev);
        g->ev = ev;
    }
    g->allow = allow;
    g->pol = *pol;
    return 0;
}

/* ---- accessors -------------------------------------------------------------------------- */

const struct ban *guard_bans(const struct guard *g)
{
    return g->ban;
}

struct ban *guard_ban_engine(struct guard *g)
{
    return g->ban;
}

const struct guard_offload *guard_offload_of(const struct guard *g)
{
    return &g->offload;
}

uint64_t guard_mono_us(const struct guard *g)
{
    return g->mono_us != NULL ? g->mono_us() : 0;
}

bool guard_is_nft(const struct guard *g)
{
    return g->is_nft;
}

struct guard_state **guard_state_slot(struct guard *g)
{
    return &g->state;
}

uint64_t guard_now_ms(const struct guard *g)
{
    return g->now_ms;
}

void guard_stats_add(struct guard_stats *to, const struct guard_stats *from)
{
#define GUARD_STATS_ADD(name) to->name += from->name;
    GUARD_STATS(GUARD_STATS_ADD)
#undef GUARD_STATS_ADD
}

const struct guard_stats *guard_stats(const struct guard *g)
{
    return &g->stats;
}

const char *guard_backend_name(const struct guard *g)
{
    return ban_backend_name(g->ban);
}
