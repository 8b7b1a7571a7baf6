#include "sipedge/worker.h"

#include <errno.h>
#include <stddef.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "sipedge/admin_http.h"
#include "sipedge/audit.h"
#include "sipedge/ctl_sock.h"
#include "sipedge/edge.h"
#include "sipedge/guard.h"
#include "sipedge/jsonl.h"
#include "sipedge/log.h"
#include "sipedge/metrics.h"
#include "sipedge/registrar.h"
#include "sipedge/transport.h"
#include "sipedge/transport_udp.h"
#include "sipedge/transport_ws.h"
#include "guard/ban_backend.h"
#ifdef SIPEDGE_WITH_NFT
#include "nft/ban_nft.h"
#endif
#include "worker/edge_persist.h"
#include "worker/loop_offload.h"

#define SOCK_REGISTRAR 254

struct worker {
    uv_loop_t loop;
    const struct config *cfg;
    struct policy pol;
    struct transport_udp *udp;
    struct transport_ws *ws;
    struct edge *edge;
    struct registrar *reg;
    struct guard *guard;
    struct ban_backend *ban_be; /* the guard's backend; closed after guard_free */
    struct ctl_sock *ctl;
    struct admin_http *http;
    struct audit *audit;
    struct metrics_reg reg_metrics;
    bool is_registrar_up;
    uv_timer_t tick;
    uv_signal_t sig_term, sig_int, sig_usr1, sig_hup;
    uv_timer_t stop_deadline; /* started by worker_stop; unref'd, so it never holds the loop */
    uint64_t last_second_ms;
    bool is_stopping;
    struct edge_persist *persist; /* the edge's flows on disk; NULL without --state-dir */
    struct tx_out tx;             /* every transport of the worker behind one contract */
};

/* ---- output: one struct tx_out over the UDP and WebSocket transports ------------------ */

static char *tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    struct worker *w = ctx;
    if (d->conn)
        return w->ws ? transport_ws_tx_reserve(w->ws, d, cap) : NULL;
    return transport_udp_tx_reserve(w->udp, d, cap);
}

static int tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    struct worker *w = ctx;
    if (d->conn)
        return w->ws ? transport_ws_tx_commit(w->ws, d, len) : -ENOENT;
    return transport_udp_tx_commit(w->udp, d, len);
}

/* The output contract (transport.h) for the edge and the registrar: a destination with a
 * connection goes to the WebSocket transport, any other is a UDP datagram. The
 * transports are looked up at each call, so it may be built before they exist. */
static struct tx_out worker_tx_out(struct worker *w)
{
    return (struct tx_out){.reserve = tx_reserve, .commit = tx_commit, .ctx = w};
}

static int on_ws_open(void *ctx, uint64_t conn, uint8_t transport, uint8_t listener,
                      const struct sockaddr *remote, uint64_t *ref)
{
    struct worker *w = ctx;
    return edge_flow_open(w->edge, transport, listener, remote, conn, uv_now(&w->loop), ref);
}

static void on_ws_message(void *ctx, uint64_t conn, uint64_t ref, const char *buf, size_t len)
{
    struct worker *w = ctx;
    (void)conn;
    edge_rx_flow(w->edge, ref, buf, len, uv_now(&w->loop));
}

static void on_ws_alive(void *ctx, uint64_t conn, uint64_t ref)
{
    struct worker *w = ctx;
    (void)conn;
    edge_flow_alive(w->edge, ref, uv_now(&w->loop));
}

static void on_ws_close(void *ctx, uint64_t conn, uint64_t ref)
{
    struct worker *w = ctx;
    (void)conn;
    if (w->edge)
        edge_flow_closed(w->edge, ref, uv_now(&w->loop));
}

static void on_edge_register(void *ctx, const struct edge_reg_event *ev)
{
    struct worker *w = ctx;
    metrics_reg_note(&w->reg_metrics, ev->status, ev->is_from_cache);
    audit_register(w->audit, ev, uv_now(&w->loop));
}

static void on_edge_flow(void *ctx, enum edge_flow_event kind, uint64_t flow_ref,
                         uint8_t transport, const struct sockaddr *remote, const char *reason)
{
    struct worker *w = ctx;
    audit_flow(w->audit, kind, flow_ref, transport, remote, reason);
}

static void on_http_snapshot(void *ctx, struct metrics_input *in)
{
    struct worker *w = ctx;
    memset(in, 0, sizeof(*in));
    if (w->edge) {
        in->edge = edge_stats(w->edge);
        in->latency = edge_latency(w->edge);
        edge_flow_counts(w->edge, &in->flows_udp, &in->flows_ws, &in->flows_wss);
    }
    if (w->guard) {
        in->guard = guard_stats(w->guard);
        in->bans_active = ban_stats(guard_bans(w->guard))->n_active;
    }
    in->audit = w->audit ? audit_stats(w->audit) : NULL;
    in->reg = &w->reg_metrics;
    in->is_registrar_up = w->is_registrar_up;
}

static const struct transport_ws_cbs ws_cbs = {
    .on_open = on_ws_open,
    .on_message = on_ws_message,
    .on_alive = on_ws_alive,
    .on_close = on_ws_close,
};

static void on_datagram(void *ctx, uint8_t sock, const char *buf, size_t len,
                        const struct sockaddr *src)
{
    struct worker *w = ctx;
    uint64_t now = uv_now(&w->loop);
    if (sock == SOCK_REGISTRAR)
        registrar_handle(w->reg, buf, len, src,
                         src->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                   : sizeof(struct sockaddr_in6),
                         now);
    else if (sock == EDGE_SOCK_CORE)
        edge_rx_core(w->edge, buf, len, src, now);
    else
        edge_rx_public(w->edge, sock, buf, len, src, now);
}

static void log_stats(struct worker *w)
{
    char buf[4000];
    if (w->edge) {
        edge_stats_format(w->edge, buf, sizeof(buf));
        log_info("stats edge %s", buf);
    }
    const struct transport_udp_stats *us = transport_udp_stats(w->udp);
    log_info("stats udp rx_datagrams=%llu rx_syscalls=%llu tx_datagrams=%llu tx_syscalls=%llu "
             "tx_dropped=%llu",
             (unsigned long long)us->rx_datagrams, (unsigned long long)us->rx_syscalls,
             (unsigned long long)us->tx_datagrams, (unsigned long long)us->tx_syscalls,
             (unsigned long long)us->tx_dropped);
    if (w->ws) {
        transport_ws_stats_format(w->ws, buf, sizeof(buf));
        log_info("stats ws %s", buf);
    }
    if (w->guard) {
        const struct guard_stats *gs = guard_stats(w->guard);
        size_t n = 0;
#define GUARD_STATS_PRINT(name)                                                                    \
    if (n < sizeof(buf))                                                                           \
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s=%llu", #name,                         \
                              (unsigned long long)gs->name);
        GUARD_STATS(GUARD_STATS_PRINT)
#undef GUARD_STATS_PRINT
        log_info("stats guard backend=%s%s", guard_backend_name(w->guard), buf);
    }
    if (w->reg)
        log_info("stats registrar bindings=%zu", registrar_n_bindings(w->reg));
}

static void on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    /* Every tick: what a crash loses is bounded by the tick, not by the second. */
    if (w->reg)
        registrar_flush(w->reg);
    edge_persist_tick(w->persist, now);
    if (now - w->last_second_ms < 1000) {
        if (w->edge)
            edge_tick_dead(w->edge, now);
        transport_udp_flush(w->udp);
        return;
    }
    w->last_second_ms = now;
    if (w->edge) {
        edge_tick(w->edge, now);
        w->is_registrar_up = edge_registrar_up(w->edge);
    }
    if (w->guard)
        guard_tick(w->guard, now);
    if (w->reg)
        registrar_tick(w->reg, now);
    /* Timer work (pings, de-REGISTERs) leaves now, not at the next I/O wakeup. */
    transport_udp_flush(w->udp);
}

static void on_closed_handle(uv_handle_t *h) { (void)h; }

static void on_udp_closed(void *ctx)
{
    struct worker *w = ctx;
    w->udp = NULL;
}

static void on_ctl_closed(void *ctx)
{
    struct worker *w = ctx;
    w->ctl = NULL;
}

static void on_http_closed(void *ctx)
{
    struct worker *w = ctx;
    w->http = NULL;
}

static void on_ws_closed(void *ctx)
{
    struct worker *w = ctx;
    w->ws = NULL;
}

/* The guard's timing clock (it reads none itself). */
static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

static void on_ban_backend_closed(void *ctx)
{
    struct worker *w = ctx;
    w->ban_be = NULL;
}

/* The ban backend the configuration asks for; nftables falls back to userspace drops when
 * its socket cannot be opened (the guard falls back too when the rules cannot be set up). */
static int ban_backend_open(struct worker *w)
{
    if ((enum guard_backend_kind)w->cfg->ban_backend == GUARD_BACKEND_NFTABLES) {
#ifdef SIPEDGE_WITH_NFT
        char err[512] = "";
        int rc = ban_nft_new(&w->ban_be, &w->loop, err, sizeof(err));
        if (rc == 0)
            return 0;
        log_warn("guard: nftables backend unavailable (%s%s%s), falling back to userspace drops",
                 strerror(-rc), err[0] ? ": " : "", err);
#else
        log_warn("guard: built without nftables, using userspace drops");
#endif
    }
    return ban_null_new(&w->ban_be);
}

/* What is still closing after stop.timeout is abandoned: the state is already written
 * and kernel bans stay, so exiting now loses nothing. */
static void on_stop_deadline(uv_timer_t *t)
{
    struct worker *w = t->data;
    log_warn("stop: still closing after %u s (stop.timeout), exiting now", w->pol.stop_timeout_s);
    jsonl_flush_all(); /* audit and event lines still queued reach their files */
    _exit(0);
}

static void worker_stop(struct worker *w)
{
    if (w->is_stopping)
        return;
    w->is_stopping = true;
    log_stats(w);
    /* The final snapshot; with a write in flight, its completion writes it. */
    edge_persist_stop(w->persist, uv_now(&w->loop));
    if (w->reg)
        registrar_flush(w->reg);
    if (w->guard)
        guard_state_save(w->guard, uv_now(&w->loop), true);
    uv_timer_init(&w->loop, &w->stop_deadline);
    w->stop_deadline.data = w;
    uv_timer_start(&w->stop_deadline, on_stop_deadline, (uint64_t)w->pol.stop_timeout_s * 1000, 0);
    uv_unref((uv_handle_t *)&w->stop_deadline);
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, on_closed_handle);
    uv_close((uv_handle_t *)&w->sig_term, on_closed_handle);
    uv_close((uv_handle_t *)&w->sig_int, on_closed_handle);
    uv_close((uv_handle_t *)&w->sig_usr1, on_closed_handle);
    uv_close((uv_handle_t *)&w->sig_hup, on_closed_handle);
    if (w->ws)
        transport_ws_close(w->ws, on_ws_closed, w);
    if (w->ctl)
        ctl_sock_close(w->ctl, on_ctl_closed, w);
    if (w->http)
        admin_http_close(w->http, on_http_closed, w);
    transport_udp_close(w->udp, on_udp_closed, w);
}

/*
 * SIGHUP and POST /api/reload: reopen the audit log (logrotate moved it), then reload the
 * policy. A policy that does not load, or that the guard refuses, leaves everything as it
 * was. Returns 0 or a negative errno with the reason in err.
 */
/* Policy keys that size tables allocated at start: a reload keeps the running value. */
static const struct {
    const char *key;
    size_t off;
} restart_only_keys[] = {
    {"limits.max_flows", offsetof(struct policy, max_flows)},
    {"registrar.max_bindings", offsetof(struct policy, max_bindings)},
    {"registrar.max_contacts_per_aor", offsetof(struct policy, max_contacts_per_aor)},
};

/* Keeps the running value of every restart-only key the new policy changes, and says so. */
static void keep_restart_only(const struct policy *cur, struct policy *next)
{
    for (size_t i = 0; i < sizeof(restart_only_keys) / sizeof(restart_only_keys[0]); i++) {
        uint32_t *to = (uint32_t *)((char *)next + restart_only_keys[i].off);
        const uint32_t *from = (const uint32_t *)((const char *)cur + restart_only_keys[i].off);
        if (*to == *from)
            continue;
        log_warn("policy reload: %s changes only at restart: keeping %u (the file says %u); "
                 "the other keys apply now",
                 restart_only_keys[i].key, *from, *to);
        *to = *from;
    }
}

static int worker_reload(struct worker *w, char *err, size_t cap)
{
    int rc = audit_reopen(w->audit);
    if (rc < 0)
        log_error("audit log %s: cannot reopen, still writing to the old file: %s",
                  w->cfg->audit_path, strerror(-rc));
    struct policy pol;
    if (policy_load_dir(&pol, w->cfg->policy_dir, err, cap) < 0) {
        log_error("policy reload refused, keeping the current policy: %s", err);
        return -EINVAL;
    }
    keep_restart_only(&w->pol, &pol);
    /* The guard may refuse (event log, nftables setup): then nothing changes. */
    if (w->guard && guard_set_policy(w->guard, &pol, uv_now(&w->loop)) < 0) {
        snprintf(err, cap, "policy refused by the guard (event log or nftables setup)");
        log_error("policy reload refused by the guard, keeping the current policy");
        return -EINVAL;
    }
    w->pol = pol;
    if (w->edge)
        edge_set_policy(w->edge, &w->pol);
    if (w->reg)
        registrar_set_policy(w->reg, &w->pol);
    if (w->ws)
        transport_ws_set_policy(w->ws, &w->pol);
    log_info("policy reloaded from %s", w->cfg->policy_dir);
    return 0;
}

static int on_http_reload(void *ctx, char *err, size_t cap)
{
    return worker_reload(ctx, err, cap);
}

/*
 * Switches to user name (its primary group, supplementary groups cleared) once every
 * socket is bound. Capabilities go with root; under systemd the unit grants them as
 * ambient capabilities to an unprivileged User= instead, and --user is not needed.
 */
static int worker_drop_privileges(const char *name)
{
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        log_error("user %s: no such user", name);
        return -ENOENT;
    }
    if (getuid() == pw->pw_uid && geteuid() == pw->pw_uid)
        return 0;
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        int rc = -errno;
        log_error("cannot switch to user %s: %s", name, strerror(errno));
        return rc;
    }
    /* Must not be able to get root back. */
    if (setuid(0) == 0) {
        log_error("user %s: privileges could be regained; refusing to run", name);
        return -EPERM;
    }
    log_info("running as user %s (uid %u, gid %u)", name, (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    return 0;
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct worker *w = s->data;
    if (signum == SIGUSR1) {
        log_stats(w);
        return;
    }
    if (signum == SIGHUP) {
        char err[CONFIG_ERR_MAX];
        worker_reload(w, err, sizeof(err));
        return;
    }
    log_info("stopping on signal %d", signum);
    worker_stop(w);
}

static int bind_or_log(struct worker *w, uint8_t id, const struct config_addr *a, const char *what)
{
    int rc = transport_udp_bind(w->udp, id, a);
    if (rc < 0)
        log_error("cannot bind %s socket on %s: %s", what, a->text, uv_strerror(rc));
    return rc;
}

int worker_run(const struct worker_opts *opts)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->cfg = opts->cfg;
    w->pol = *opts->policy;
    signal(SIGPIPE, SIG_IGN);
    rc = transport_udp_new(&w->udp, &w->loop, on_datagram, w);
    if (rc < 0)
        goto out;
    w->tx = worker_tx_out(w);

    if (opts->run_registrar) {
        /* Bindings survive a restart in the state directory; without one, memory only. */
        char db_path[CONFIG_PATH_MAX + 32] = "";
        if (w->cfg->state_dir[0]) {
            snprintf(db_path, sizeof(db_path), "%s/registrar.sqlite", w->cfg->state_dir);
        }
        struct registrar_opts ro = {
            .self = &w->cfg->embedded_listen,
            .users_file = w->cfg->users_file[0] ? w->cfg->users_file : NULL,
            .realm = w->cfg->realm,
            .policy = &w->pol,
            .trusted = &w->cfg->core,
            .n_trusted = 1,
            /* Core peers are the only places besides registered bindings that requests
             * may be routed to. */
            .peers = w->cfg->core_peers,
            .n_peers = w->cfg->n_core_peers,
            .db_path = db_path[0] ? db_path : NULL,
            .out = w->tx,
            .sock = SOCK_REGISTRAR,
        };
        char err[CONFIG_ERR_MAX] = "";
        rc = registrar_new(&w->reg, &ro, err, sizeof(err));
        if (rc < 0) {
            log_error("embedded registrar: %s", err[0] ? err : strerror(-rc));
            goto out_close;
        }
        rc = bind_or_log(w, SOCK_REGISTRAR, &w->cfg->embedded_listen, "registrar");
        if (rc < 0)
            goto out_close;
    }
    if (opts->run_edge) {
        rc = ban_backend_open(w);
        if (rc < 0) {
            log_error("guard: %s", strerror(-rc));
            goto out_close;
        }
        struct guard_opts go = {
            .cfg = w->cfg,
            .policy = &w->pol,
            .backend = w->ban_be,
            .offload = {.queue = loop_offload_queue, .ctx = &w->loop},
            .mono_us = mono_us,
            .seed = 0,
        };
        rc = guard_new(&w->guard, &go, uv_now(&w->loop));
        if (rc < 0) {
            log_error("guard: %s", strerror(-rc));
            goto out_close;
        }
        if (strcmp(guard_backend_name(w->guard), w->ban_be->ops->name) != 0) {
            /* The guard could not set the backend up and runs userspace drops without it;
             * its handle finishes closing while the loop runs. */
            struct ban_backend *unused = w->ban_be;
            w->ban_be = NULL;
            ban_backend_close(unused, NULL, NULL);
        }
        if (w->cfg->state_dir[0]) {
            /* Bans survive a restart; without the directory they are kept in memory only. */
            guard_state_open(w->guard, w->cfg->state_dir, uv_now(&w->loop));
        }
        if (w->cfg->admin_socket[0]) {
            rc = ctl_sock_new(&w->ctl, &w->loop, w->cfg->admin_socket, w->guard);
            if (rc < 0) {
                log_error("admin socket %s: %s", w->cfg->admin_socket, strerror(-rc));
                goto out_close;
            }
        }
        if (w->cfg->audit_path[0]) {
            struct audit_opts ao = {.path = w->cfg->audit_path};
            rc = audit_new(&w->audit, &ao);
            if (rc < 0) {
                log_error("audit log %s: %s", w->cfg->audit_path, strerror(-rc));
                goto out_close;
            }
        }
        w->is_registrar_up = true;
        struct edge_opts eo = {
            .hooks = {.on_register = on_edge_register, .on_flow = on_edge_flow, .ctx = w},
            .guard = w->guard,
            .cfg = w->cfg,
            .policy = &w->pol,
            .worker = 0,
            .out = w->tx,
        };
        rc = edge_new(&w->edge, &eo);
        if (rc < 0) {
            log_error("edge: %s", strerror(-rc));
            goto out_close;
        }
        if (w->cfg->state_dir[0]) {
            rc = edge_persist_open(&w->persist, &w->loop, w->edge, w->cfg->state_dir,
                                   uv_now(&w->loop));
            if (rc < 0) {
                log_error("edge state: %s", strerror(-rc));
                goto out_close;
            }
        }
        for (unsigned i = 0; i < w->cfg->n_listen_udp; i++) {
            rc = bind_or_log(w, (uint8_t)i, &w->cfg->listen_udp[i], "public");
            if (rc < 0)
                goto out_close;
        }
        rc = bind_or_log(w, EDGE_SOCK_CORE, &w->cfg->core, "core");
        if (rc < 0)
            goto out_close;
        if (w->cfg->n_listen_ws + w->cfg->n_listen_wss > 0) {
            struct transport_ws_opts wo = {.loop = &w->loop, .cfg = w->cfg, .policy = &w->pol};
            rc = transport_ws_new(&w->ws, &wo, &ws_cbs, w);
            if (rc < 0)
                goto out_close;
        }
        if (w->cfg->has_admin_listen) {
            struct admin_http_opts ho = {
                .loop = &w->loop,
                .listen = &w->cfg->admin_listen,
                .token = w->cfg->admin_token,
                .guard = w->guard,
                .edge = w->edge,
                .snapshot = on_http_snapshot,
                .reload = on_http_reload,
                .ctx = w,
            };
            rc = admin_http_new(&w->http, &ho);
            if (rc < 0) {
                w->http = NULL;
                goto out_close;
            }
        }
    }
    if (w->cfg->run_user[0]) {
        rc = worker_drop_privileges(w->cfg->run_user);
        if (rc < 0)
            goto out_close;
    }

    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, on_tick, 250, 250);
    uv_signal_t *sigs[] = {&w->sig_term, &w->sig_int, &w->sig_usr1, &w->sig_hup};
    int signums[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(&w->loop, sigs[i]);
        sigs[i]->data = w;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }

    /* Bounded: 3 x CONFIG_MAX_LISTEN addresses can exceed the buffer; the list is then
     * cut, never written past its end. */
    char listen_txt[512] = "";
    size_t n = 0;
    const struct {
        const char *name;
        const struct config_addr *addr;
        unsigned count;
    } kinds[] = {
        {"udp", w->cfg->listen_udp, w->cfg->n_listen_udp},
        {"ws", w->cfg->listen_ws, w->cfg->n_listen_ws},
        {"wss", w->cfg->listen_wss, w->cfg->n_listen_wss},
    };
    for (unsigned k = 0; opts->run_edge && k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        for (unsigned i = 0; i < kinds[k].count && n < sizeof(listen_txt); i++) {
            int m = snprintf(listen_txt + n, sizeof(listen_txt) - n, "%s%s:%s", n ? "," : "",
                             kinds[k].name, kinds[k].addr[i].text);
            if (m < 0)
                break;
            n += (size_t)m;
        }
    }
    log_always("sipedge: ready %s%s core=%s registrar=%s (%s)", listen_txt,
             opts->run_edge ? "" : "registrar-only", w->cfg->core.text,
             opts->run_registrar ? w->cfg->embedded_listen.text : w->cfg->registrar.text,
             opts->run_registrar ? "embedded" : "external");
    uv_run(&w->loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out;

out_close:
    if (w->ws)
        transport_ws_close(w->ws, on_ws_closed, w);
    if (w->ctl)
        ctl_sock_close(w->ctl, on_ctl_closed, w);
    if (w->http)
        admin_http_close(w->http, on_http_closed, w);
    transport_udp_close(w->udp, on_udp_closed, w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
out:
    if (w->is_stopping)
        uv_close((uv_handle_t *)&w->stop_deadline, on_closed_handle);
    edge_persist_free(w->persist);
    edge_free(w->edge);
    audit_free(w->audit);
    guard_free(w->guard);
    registrar_free(w->reg);
    if (w->ban_be)
        ban_backend_close(w->ban_be, on_ban_backend_closed, w);
    /* Runs until every handle has closed, the ban backend's included (its callback). */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->ban_be != NULL)
        log_warn("ban backend still closing at exit");
    if (uv_loop_close(&w->loop) != 0)
        log_warn("event loop closed with handles still open");
    free(w);
    return rc;
}
