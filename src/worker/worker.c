/*
 * worker: one edge worker thread. Its own libuv loop runs its UDP sockets (members of the
 * process's SO_REUSEPORT groups, steered by source address), its WebSocket listeners (the
 * same), its core-side socket (--core port + index), its edge (flow table shard, tokens
 * naming this worker) and its guard (the sources steered here). Nothing on its per-packet
 * path takes a lock or writes memory another worker writes; it talks to the control thread
 * through its outbox (bans, audit events) and hears from it through its inbox.
 */
#include "sipedge/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "sipedge/edge.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/transport_udp.h"
#include "sipedge/transport_stream.h"
#include "sipedge/transport_ws.h"
#include "worker/edge_persist.h"
#include "worker/loop_offload.h"
#include "worker/worker_priv.h"

struct control *worker_control(struct worker *w) { return w->ctl; }

/* ---- output: one struct tx_out over the UDP, WebSocket and stream transports ----------- */

static char *tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    struct worker *w = ctx;
    if (d->conn & TX_CONN_STREAM)
        return w->stream ? transport_stream_tx_reserve(w->stream, d, cap) : NULL;
    if (d->conn)
        return w->ws ? transport_ws_tx_reserve(w->ws, d, cap) : NULL;
    return transport_udp_tx_reserve(w->udp, d, cap);
}

static int tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    struct worker *w = ctx;
    if (d->conn & TX_CONN_STREAM)
        return w->stream ? transport_stream_tx_commit(w->stream, d, len) : -ENOENT;
    if (d->conn)
        return w->ws ? transport_ws_tx_commit(w->ws, d, len) : -ENOENT;
    return transport_udp_tx_commit(w->udp, d, len);
}

/* ---- transports → edge ---------------------------------------------------------------- */

static int on_conn_open(void *ctx, uint64_t conn, uint8_t transport, uint8_t listener,
                      const struct sockaddr *remote, const char *peer_id, uint64_t *ref)
{
    struct worker *w = ctx;
    return edge_flow_open(w->edge, transport, listener, remote, peer_id, conn, uv_now(&w->loop),
                          ref);
}

static void on_conn_message(void *ctx, uint64_t conn, uint64_t ref, const char *buf, size_t len)
{
    struct worker *w = ctx;
    (void)conn;
    edge_rx_flow(w->edge, ref, buf, len, uv_now(&w->loop));
}

static void on_conn_alive(void *ctx, uint64_t conn, uint64_t ref)
{
    struct worker *w = ctx;
    (void)conn;
    edge_flow_alive(w->edge, ref, uv_now(&w->loop));
}

static void on_conn_close(void *ctx, uint64_t conn, uint64_t ref)
{
    struct worker *w = ctx;
    (void)conn;
    if (w->edge)
        edge_flow_closed(w->edge, ref, uv_now(&w->loop));
}

/* WebSocket, TCP and TLS connections: the same events, the same edge calls. */
static const struct transport_conn_cbs conn_cbs = {
    .on_open = on_conn_open,
    .on_message = on_conn_message,
    .on_alive = on_conn_alive,
    .on_close = on_conn_close,
};

/* A message from a core peer over TCP. */
static void on_core_stream(void *ctx, const char *buf, size_t len, const struct sockaddr *peer)
{
    struct worker *w = ctx;
    edge_rx_core(w->edge, buf, len, peer, uv_now(&w->loop));
}

static void on_datagram(void *ctx, uint8_t sock, const char *buf, size_t len,
                        const struct sockaddr *src)
{
    struct worker *w = ctx;
    uint64_t now = uv_now(&w->loop);
    if (sock == EDGE_SOCK_CORE)
        edge_rx_core(w->edge, buf, len, src, now);
    else
        edge_rx_public(w->edge, sock, buf, len, src, now);
}

/* ---- edge → control thread ------------------------------------------------------------ */

bool worker_to_control(struct worker *w, const struct outbox_msg *m)
{
    return handoff_send(&w->outbox, m);
}

/* Copies s into m->text at *off, cut to what is left; returns the length copied. */
static uint16_t put_text(struct outbox_msg *m, size_t *off, const char *s, size_t reserve)
{
    size_t n = s ? strlen(s) : 0;
    size_t room = sizeof(m->text) - *off - reserve - 1;
    if (n > room)
        n = room;
    if (n)
        memcpy(m->text + *off, s, n);
    m->text[*off + n] = '\0';
    *off += n + 1;
    return (uint16_t)n;
}

static void on_edge_register(void *ctx, const struct edge_reg_event *ev)
{
    struct worker *w = ctx;
    metrics_reg_note(&w->reg_metrics, ev->status, ev->is_from_cache);
    if (!control_has_audit(w->ctl))
        return;
    struct outbox_msg m;
    m.kind = OUTBOX_AUDIT_REGISTER;
    m.transport = ev->transport;
    m.is_from_cache = ev->is_from_cache;
    m.status = ev->status;
    m.expires_s = ev->expires_s;
    m.flow_ref = ev->flow_ref;
    m.mono_ms = uv_now(&w->loop);
    memcpy(&m.src, ev->src, ev->src->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                            : sizeof(struct sockaddr_in));
    size_t off = 0;
    /* The AOR and the User-Agent keep their room first; contacts take the rest. */
    m.aor_len = put_text(&m, &off, ev->aor, 2 + 256);
    m.ua_len = put_text(&m, &off, ev->user_agent, 1);
    m.contacts_len = put_text(&m, &off, ev->contacts, 0);
    worker_to_control(w, &m);
}

static void on_edge_flow(void *ctx, enum edge_flow_event kind, uint64_t flow_ref,
                         uint8_t transport, const struct sockaddr *remote, const char *reason)
{
    struct worker *w = ctx;
    if (!control_has_audit(w->ctl))
        return;
    struct outbox_msg m;
    m.kind = OUTBOX_AUDIT_FLOW;
    m.flow_kind = (uint8_t)kind;
    m.transport = transport;
    m.flow_ref = flow_ref;
    memset(&m.src, 0, sizeof(m.src));
    if (remote)
        memcpy(&m.src, remote, remote->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                              : sizeof(struct sockaddr_in));
    size_t off = 0;
    m.aor_len = put_text(&m, &off, reason, 0);
    m.ua_len = m.contacts_len = 0;
    worker_to_control(w, &m);
}

/* A core message for a flow of worker `owner`: a heap copy crosses to its inbox. */
static bool on_edge_foreign(void *ctx, uint8_t owner, const char *buf, size_t len,
                            const struct sockaddr *src)
{
    struct worker *w = ctx;
    struct control *c = w->ctl;
    if (owner >= control_n_workers(c) || owner == w->index || !control_handoff_open(c))
        return false;
    struct inbox_msg m = {.kind = INBOX_CORE, .len = (uint32_t)len};
    m.buf = malloc(len);
    if (!m.buf)
        return false;
    memcpy(m.buf, buf, len);
    memcpy(&m.src, src, src->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                    : sizeof(struct sockaddr_in));
    if (!handoff_send(&control_worker(c, owner)->inbox, &m)) {
        free(m.buf);
        return false;
    }
    return true;
}

/* ---- timers, policy, stats ------------------------------------------------------------ */

static void on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    edge_persist_tick(w->persist, now);
    if (now - w->last_second_ms < 1000) {
        edge_tick_dead(w->edge, now);
        transport_udp_flush(w->udp);
        return;
    }
    w->last_second_ms = now;
    edge_tick(w->edge, now);
    w->is_registrar_up = edge_registrar_up(w->edge);
    guard_tick(w->guard, now);
    /* Timer work (pings, de-REGISTERs) leaves now, not at the next I/O wakeup. */
    transport_udp_flush(w->udp);
}

static uint32_t share(uint32_t v, unsigned n)
{
    if (v == 0 || n <= 1)
        return v;
    uint32_t s = (uint32_t)((v + n - 1) / n);
    return s ? s : 1;
}

void worker_policy_share(struct policy *out, const struct policy *pol, unsigned n)
{
    *out = *pol;
    /* The registrar's budget is the process's: each worker spends its share, so N workers
     * together send the registrar what one process would. The surge reserve is a share of
     * each worker's budget, the same percentage. */
    out->guard_registrar_rate = share(pol->guard_registrar_rate, n);
    out->guard_registrar_burst = share(pol->guard_registrar_burst, n);
}

int worker_apply_policy(struct worker *w, const struct policy *process_pol, char *err,
                        size_t cap)
{
    struct policy pol;
    worker_policy_share(&pol, process_pol, control_n_workers(w->ctl));
    /* The guard may refuse (event log, nftables setup): then nothing changes. */
    if (guard_set_policy(w->guard, &pol, uv_now(&w->loop)) < 0) {
        snprintf(err, cap, "policy refused by the guard (event log or nftables setup)");
        return -EINVAL;
    }
    w->pol = pol;
    edge_set_policy(w->edge, &w->pol);
    if (w->ws)
        transport_ws_set_policy(w->ws, &w->pol);
    if (w->stream)
        transport_stream_set_policy(w->stream, &w->pol);
    return 0;
}

int worker_apply_tls(struct worker *w, struct tls_server *tls)
{
    if (w->stream && tls)
        transport_stream_set_tls(w->stream, tls);
    if (w->ws)
        return transport_ws_reload_cert(w->ws);
    return 0;
}

void worker_log_stats(struct worker *w, const char *prefix)
{
    char buf[4000];
    edge_stats_format(w->edge, buf, sizeof(buf));
    log_info("%sstats edge %s", prefix, buf);
    const struct transport_udp_stats *us = transport_udp_stats(w->udp);
    struct handoff_stats in, out;
    handoff_stats(&w->inbox, &in);
    handoff_stats(&w->outbox, &out);
    log_info("%sstats udp rx_datagrams=%llu rx_syscalls=%llu tx_datagrams=%llu tx_syscalls=%llu "
             "tx_dropped=%llu inbox=%llu outbox=%llu outbox_dropped_full=%llu",
             prefix, (unsigned long long)us->rx_datagrams, (unsigned long long)us->rx_syscalls,
             (unsigned long long)us->tx_datagrams, (unsigned long long)us->tx_syscalls,
             (unsigned long long)us->tx_dropped, (unsigned long long)in.delivered,
             (unsigned long long)out.sent, (unsigned long long)out.dropped_full);
    if (w->ws) {
        transport_ws_stats_format(w->ws, buf, sizeof(buf));
        log_info("%sstats ws %s", prefix, buf);
    }
    if (w->stream) {
        transport_stream_stats_format(w->stream, buf, sizeof(buf));
        log_info("%sstats stream %s", prefix, buf);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void on_closed_handle(uv_handle_t *h) { (void)h; }

/* A close callback: ctx is the owner's pointer to the closed object, now NULL. */
static void clear_ptr(void *ctx)
{
    *(void **)ctx = NULL;
}

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

static void worker_stop(struct worker *w)
{
    if (w->is_stopping)
        return;
    w->is_stopping = true;
    /* The final snapshot; with a write in flight, its completion writes it. */
    edge_persist_stop(w->persist, uv_now(&w->loop));
    guard_state_save(w->guard, uv_now(&w->loop), true);
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, on_closed_handle);
    if (w->ws)
        transport_ws_close(w->ws, clear_ptr, &w->ws);
    if (w->stream)
        transport_stream_close(w->stream, clear_ptr, &w->stream);
    transport_udp_close(w->udp, clear_ptr, &w->udp);
    handoff_close(&w->inbox, NULL);
}

static void on_inbox(void *ctx, const void *msg)
{
    struct worker *w = ctx;
    const struct inbox_msg *m = msg;
    switch (m->kind) {
    case INBOX_PARK:
        /* Sends queued by the messages before this one leave first. */
        transport_udp_flush(w->udp);
        control_park(w->ctl);
        break;
    case INBOX_STOP:
        worker_stop(w);
        break;
    case INBOX_CORE:
        if (!w->is_stopping)
            edge_rx_core(w->edge, m->buf, m->len, (const struct sockaddr *)&m->src,
                         uv_now(&w->loop));
        free(m->buf);
        break;
    default:
        break;
    }
}

void worker_send(struct worker *w, const struct inbox_msg *m)
{
    /* The inbox drains while the worker runs; the control thread's few messages wait for
     * room instead of being lost. */
    while (!handoff_send(&w->inbox, m))
        uv_sleep(1);
}

static int bind_or_log(struct worker *w, uint8_t id, const struct config_addr *a, unsigned group,
                       const char *what)
{
    int rc = transport_udp_bind(w->udp, id, a, group);
    if (rc < 0)
        log_error("worker %u: cannot bind %s socket on %s: %s", w->index, what, a->text,
                  uv_strerror(rc));
    return rc;
}

static bool is_owned(void *arg, const struct ban_key *k)
{
    struct worker *w = arg;
    return ban_key_owner(k, control_n_workers(w->ctl)) == w->index;
}

/*
 * Bans survive a restart; without the directory they are kept in memory only. Each worker
 * keeps the bans of the sources steered to it, read from every worker's file: after a
 * change in the number of workers a source may have moved, and its ban moves with it.
 */
static void restore_bans(struct worker *w)
{
    uint64_t now = uv_now(&w->loop);
    guard_state_open_shared(w->guard, w->state_dir, is_owned, w, now);
    const char *dir = w->cfg.state_dir;
    if (w->index != 0)
        guard_state_import(w->guard, dir, is_owned, w, now);
    for (unsigned j = 1; j < WORKERS_MAX; j++) {
        if (j == w->index)
            continue;
        char other[sizeof(w->state_dir)];
        snprintf(other, sizeof(other), "%s/w%u", dir, j);
        guard_state_import(w->guard, other, is_owned, w, now);
    }
}

/* Builds the worker on its loop. Returns 0 or a negative errno (logged). */
static int worker_start(struct worker *w)
{
    struct control *c = w->ctl;
    unsigned n = control_n_workers(c);
    int rc = handoff_init(&w->inbox, &w->loop, INBOX_CAP, sizeof(struct inbox_msg), on_inbox, w);
    if (rc < 0)
        return rc;
    rc = transport_udp_new(&w->udp, &w->loop, on_datagram, w);
    if (rc < 0)
        return rc;
    w->tx = (struct tx_out){.reserve = tx_reserve, .commit = tx_commit, .ctx = w};
    rc = ban_relay_new(&w->ban_be, w);
    if (rc < 0)
        return rc;
    struct guard_opts go = {
        .cfg = &w->cfg,
        .policy = &w->pol,
        .backend = w->ban_be,
        .offload = {.queue = loop_offload_queue, .ctx = &w->loop},
        .mono_us = mono_us,
        .seed = 0,
    };
    rc = guard_new(&w->guard, &go, uv_now(&w->loop));
    if (rc < 0) {
        log_error("guard: %s", strerror(-rc));
        return rc;
    }
    if (strcmp(guard_backend_name(w->guard), w->ban_be->ops->name) != 0) {
        /* The guard could not set the backend up and runs userspace drops without it. */
        struct ban_backend *unused = w->ban_be;
        w->ban_be = NULL;
        ban_backend_close(unused, NULL, NULL);
    }
    if (w->state_dir[0])
        restore_bans(w);
    w->is_registrar_up = true;
    struct edge_opts eo = {
        .hooks = {.on_register = on_edge_register,
                  .on_flow = on_edge_flow,
                  .on_foreign = n > 1 ? on_edge_foreign : NULL,
                  .is_outcome_only = !control_has_audit(c),
                  .ctx = w},
        .guard = w->guard,
        .cfg = &w->cfg,
        .policy = &w->pol,
        .worker = (uint8_t)w->index,
        .out = w->tx,
    };
    rc = edge_new(&w->edge, &eo);
    if (rc < 0) {
        log_error("edge: %s", strerror(-rc));
        return rc;
    }
    if (w->state_dir[0]) {
        rc = edge_persist_open(&w->persist, &w->loop, w->edge, w->state_dir, uv_now(&w->loop));
        if (rc < 0) {
            log_error("edge state: %s", strerror(-rc));
            return rc;
        }
    }
    /* Every public socket joins its address's group, in worker order (the control thread
     * starts the workers one after the other), so member i of every group is worker i. */
    for (unsigned i = 0; i < w->cfg.n_listen_udp; i++) {
        rc = bind_or_log(w, (uint8_t)i, &w->cfg.listen_udp[i], n, "public");
        if (rc < 0)
            return rc;
    }
    rc = bind_or_log(w, EDGE_SOCK_CORE, &w->cfg.core, 0, "core");
    if (rc < 0)
        return rc;
    if (w->cfg.n_listen_ws + w->cfg.n_listen_wss > 0) {
        struct transport_ws_opts wo = {
            .loop = &w->loop, .cfg = &w->cfg, .policy = &w->pol, .group = n};
        rc = transport_ws_new(&w->ws, &wo, &conn_cbs, w);
        if (rc < 0)
            return rc;
    }
    /* Always: besides the public TCP and TLS listeners, it carries the core side's TCP
     * (large requests to the registrar, and the registrar's requests over TCP to the core
     * address). */
    struct transport_stream_opts so = {.loop = &w->loop,
                                       .cfg = &w->cfg,
                                       .policy = &w->pol,
                                       .tls = control_tls(c),
                                       .group = n,
                                       .on_core = on_core_stream};
    rc = transport_stream_new(&w->stream, &so, &conn_cbs, w);
    if (rc < 0)
        return rc;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, on_tick, 250, 250);
    return 0;
}

/* Per-worker state lives in the state directory for worker 0 and in w<i>/ under it for
 * the others, so each worker's files are its own and a worker's restart finds them. */
static int worker_state_dir(struct worker *w)
{
    const char *dir = w->cfg.state_dir;
    if (!dir[0])
        return 0;
    if (w->index == 0) {
        snprintf(w->state_dir, sizeof(w->state_dir), "%s", dir);
        return 0;
    }
    snprintf(w->state_dir, sizeof(w->state_dir), "%s/w%u", dir, w->index);
    if (mkdir(w->state_dir, 0750) < 0 && errno != EEXIST) {
        int rc = -errno;
        log_error("worker %u: state directory %s: %s", w->index, w->state_dir, strerror(errno));
        return rc;
    }
    return 0;
}

void worker_thread_main(void *arg)
{
    struct worker *w = arg;
    struct control *c = w->ctl;
    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        w->start_rc = rc;
        control_started(c);
        return;
    }
    rc = worker_state_dir(w);
    if (rc == 0)
        rc = worker_start(w);
    w->start_rc = rc;
    if (rc < 0) {
        /* Close what was opened; the process stops. */
        if (w->ws)
            transport_ws_close(w->ws, clear_ptr, &w->ws);
        if (w->stream)
            transport_stream_close(w->stream, clear_ptr, &w->stream);
        if (w->udp)
            transport_udp_close(w->udp, clear_ptr, &w->udp);
        if (w->inbox.loop)
            handoff_close(&w->inbox, NULL);
        w->is_stopping = true;
    }
    control_started(c);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    edge_persist_free(w->persist);
    w->persist = NULL;
    edge_free(w->edge);
    w->edge = NULL;
    guard_free(w->guard);
    w->guard = NULL;
    if (w->ban_be)
        ban_backend_close(w->ban_be, clear_ptr, &w->ban_be);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0)
        log_warn("worker %u: event loop closed with handles still open", w->index);
    if (rc == 0) {
        /* The last message: the control thread may close the outbox after it. */
        struct outbox_msg m = {.kind = OUTBOX_EXITED};
        while (!handoff_send(&w->outbox, &m))
            uv_sleep(1);
    }
}
