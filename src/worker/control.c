/*
 * control: the process. The main thread runs the control loop: signals, the admin HTTP
 * listener and the UNIX control socket, the audit log, the ban backend (the one nftables
 * netlink socket) and the embedded registrar (its own UDP socket, reached by the workers
 * over UDP like any registrar). It starts N edge workers (worker.c), one thread and one
 * loop each, and reaches them through their inboxes.
 *
 * Isolation: an admin command, a metrics scrape, a reload or the stats signal needs every
 * worker's state at once. control_isolate parks every worker (each inbox gets INBOX_PARK;
 * the worker waits on a condition variable inside its handler) and returns when all are
 * parked; the control thread then reads and changes their objects directly, and
 * control_release lets them go. The mutex is taken only by these rare operations, never
 * on a worker's per-packet path.
 */
#define _GNU_SOURCE
#include "sipedge/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "sipedge/admin.h"
#include "sipedge/admin_http.h"
#include "sipedge/audit.h"
#include "sipedge/ctl_sock.h"
#include "sipedge/guard.h"
#include "sipedge/jsonl.h"
#include "sipedge/log.h"
#include "sipedge/registrar.h"
#include "sipedge/transport_udp.h"
#include "sipedge/tls_server.h"
#include "sipedge/transport_stream.h"
#include "sipedge/transport_ws.h"
#ifdef SIPEDGE_WITH_NFT
#include "nft/ban_nft.h"
#endif
#include "worker/worker_priv.h"

struct control {
    uv_loop_t loop;
    const struct config *cfg;
    struct policy pol; /* the process policy, as loaded */
    unsigned n;        /* edge workers */
    struct worker *w;  /* n of them */
    struct guard *guards[WORKERS_MAX];
    struct edge *edges[WORKERS_MAX];
    struct admin_scope scope;
    struct transport_udp *udp; /* the embedded registrar's socket */
    struct registrar *reg;
    struct tx_out reg_tx;
    struct config_addr trusted[WORKERS_MAX];
    struct ban_backend *ban_be;
    struct tls_server *tls; /* TLS listeners' certificate context, shared by the workers */
    struct audit *audit;
    struct ctl_sock *ctl;
    struct admin_http *http;
    uv_timer_t tick;
    uv_signal_t sig_term, sig_int, sig_usr1, sig_hup;
    uv_timer_t stop_deadline;
    uint64_t last_second_ms;
    bool is_stopping;
    bool is_running; /* the loop runs (after every worker started), until the stop */
    /* Workers may hand messages to each other: every inbox exists and none is closing.
     * Set once all have started; cleared, with every worker parked, before any stops. */
    _Atomic bool is_handoff_open;
    unsigned n_started, n_exited;
    uv_sem_t started;
    /* isolation */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned n_parked;
    bool is_isolated;
    /* the sums a snapshot points at */
    struct edge_stats sum_edge;
    struct edge_latency sum_lat;
    struct guard_stats sum_guard;
    struct metrics_reg sum_reg;
    struct metrics_worker per_worker[WORKERS_MAX];
};

unsigned control_n_workers(const struct control *c) { return c->n; }
struct worker *control_worker(struct control *c, unsigned i) { return &c->w[i]; }
struct ban_backend *control_ban_backend(struct control *c) { return c->ban_be; }
bool control_has_audit(const struct control *c) { return c->audit != NULL; }
struct tls_server *control_tls(struct control *c) { return c->tls; }
bool control_handoff_open(const struct control *c)
{
    return atomic_load_explicit(&c->is_handoff_open, memory_order_acquire);
}

void control_started(struct control *c) { uv_sem_post(&c->started); }

/* ---- isolation ------------------------------------------------------------------------ */

void control_park(struct control *c)
{
    pthread_mutex_lock(&c->mu);
    c->n_parked++;
    pthread_cond_broadcast(&c->cv);
    while (c->is_isolated)
        pthread_cond_wait(&c->cv, &c->mu);
    c->n_parked--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void control_isolate(void *ctx)
{
    struct control *c = ctx;
    if (c->n == 0 || !c->is_running)
        return;
    pthread_mutex_lock(&c->mu);
    c->is_isolated = true;
    pthread_mutex_unlock(&c->mu);
    struct inbox_msg m = {.kind = INBOX_PARK};
    for (unsigned i = 0; i < c->n; i++)
        worker_send(&c->w[i], &m);
    pthread_mutex_lock(&c->mu);
    while (c->n_parked < c->n)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

static void control_release(void *ctx)
{
    struct control *c = ctx;
    if (c->n == 0 || !c->is_running)
        return;
    pthread_mutex_lock(&c->mu);
    c->is_isolated = false;
    pthread_cond_broadcast(&c->cv);
    /* Every worker is out before the next isolation can start. */
    while (c->n_parked > 0)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

static unsigned scope_owner(void *ctx, const struct ban_key *k)
{
    struct control *c = ctx;
    return ban_key_owner(k, c->n);
}

/* ---- messages from the workers --------------------------------------------------------- */

static void finish_stop(struct control *c);

static void on_outbox(void *ctx, const void *msg)
{
    struct control *c = ctx;
    const struct outbox_msg *m = msg;
    switch (m->kind) {
    case OUTBOX_BAN_ADD:
        if (c->ban_be)
            c->ban_be->ops->add(c->ban_be, &m->key, m->timeout_s, m->replace);
        break;
    case OUTBOX_BAN_DEL:
        if (c->ban_be)
            c->ban_be->ops->del(c->ban_be, &m->key);
        break;
    case OUTBOX_AUDIT_REGISTER:
        if (c->audit) {
            const char *aor = m->text;
            const char *ua = aor + m->aor_len + 1;
            const char *contacts = ua + m->ua_len + 1;
            struct edge_reg_event ev = {
                .aor = aor,
                .src = (const struct sockaddr *)&m->src,
                .transport = m->transport,
                .contacts = contacts,
                .expires_s = m->expires_s,
                .user_agent = ua,
                .status = m->status,
                .is_from_cache = m->is_from_cache,
                .flow_ref = m->flow_ref,
            };
            audit_register(c->audit, &ev, m->mono_ms);
        }
        break;
    case OUTBOX_AUDIT_FLOW:
        if (c->audit)
            audit_flow(c->audit, (enum edge_flow_event)m->flow_kind, m->flow_ref, m->transport,
                       m->src.ss_family ? (const struct sockaddr *)&m->src : NULL, m->text);
        break;
    case OUTBOX_EXITED:
        if (++c->n_exited == c->n_started)
            finish_stop(c);
        break;
    default:
        break;
    }
}

/* ---- snapshot, stats, reload ------------------------------------------------------------ */

static void on_http_snapshot(void *ctx, struct metrics_input *in)
{
    struct control *c = ctx;
    memset(in, 0, sizeof(*in));
    if (!c->is_running) {
        in->is_registrar_up = true;
        return;
    }
    memset(&c->sum_edge, 0, sizeof(c->sum_edge));
    memset(&c->sum_lat, 0, sizeof(c->sum_lat));
    memset(&c->sum_guard, 0, sizeof(c->sum_guard));
    memset(&c->sum_reg, 0, sizeof(c->sum_reg));
    in->is_registrar_up = true;
    if (c->n > 0) {
        control_isolate(c);
        bool any_up = false;
        for (unsigned i = 0; i < c->n; i++) {
            struct worker *w = &c->w[i];
            const struct edge_stats *es = edge_stats(w->edge);
#define SUM_EDGE(name) c->sum_edge.name += es->name;
            EDGE_STATS(SUM_EDGE)
#undef SUM_EDGE
            const struct edge_latency *l = edge_latency(w->edge);
            for (unsigned b = 0; b <= EDGE_LATENCY_BUCKETS; b++)
                c->sum_lat.count[b] += l->count[b];
            c->sum_lat.n += l->n;
            c->sum_lat.sum_s += l->sum_s;
            uint32_t fc[FLOW_N_TRANSPORTS];
            edge_flow_counts(w->edge, fc);
            uint32_t n_flows = 0;
            for (unsigned t = 0; t < FLOW_N_TRANSPORTS; t++) {
                in->flows[t] += fc[t];
                n_flows += fc[t];
            }
            guard_stats_add(&c->sum_guard, guard_stats(w->guard));
            in->bans_active += ban_stats(guard_bans(w->guard))->n_active;
            for (unsigned k = 0; k < METRICS_REG_N; k++)
                c->sum_reg.n[k] += w->reg_metrics.n[k];
            any_up |= w->is_registrar_up;
            struct handoff_stats hin, hout;
            handoff_stats(&w->inbox, &hin);
            handoff_stats(&w->outbox, &hout);
            c->per_worker[i] = (struct metrics_worker){
                .rx_public = es->rx_public,
                .rx_core = es->rx_core,
                .handed_in = hin.delivered,
                .outbox_dropped = hout.dropped_full,
                .flows = n_flows,
            };
        }
        in->n_workers = c->n;
        in->workers = c->per_worker;
        control_release(c);
        in->edge = &c->sum_edge;
        in->latency = &c->sum_lat;
        in->guard = &c->sum_guard;
        /* Every worker watches the registrar on its own socket; it is down for the
         * process when it is down for all of them. */
        in->is_registrar_up = any_up;
    }
    in->audit = c->audit ? audit_stats(c->audit) : NULL;
    in->reg = &c->sum_reg;
}

static void log_stats(struct control *c)
{
    char buf[4000];
    if (c->n > 0 && c->is_running) {
        control_isolate(c);
        if (c->n > 1) {
            for (unsigned i = 0; i < c->n; i++) {
                char prefix[32];
                snprintf(prefix, sizeof(prefix), "worker %u ", i);
                worker_log_stats(&c->w[i], prefix);
            }
        }
        edge_stats_format_sum((const struct edge *const *)c->edges, c->n, buf, sizeof(buf));
        log_info("stats edge %s", buf);
        struct transport_udp_stats us = {0};
        const struct transport_ws *ws[WORKERS_MAX];
        const struct transport_stream *st[WORKERS_MAX];
        unsigned n_ws = 0, n_st = 0;
        struct guard_stats gs = {0};
        for (unsigned i = 0; i < c->n; i++) {
            const struct transport_udp_stats *s = transport_udp_stats(c->w[i].udp);
            us.rx_datagrams += s->rx_datagrams;
            us.rx_syscalls += s->rx_syscalls;
            us.tx_datagrams += s->tx_datagrams;
            us.tx_syscalls += s->tx_syscalls;
            us.tx_dropped += s->tx_dropped;
            if (c->w[i].ws)
                ws[n_ws++] = c->w[i].ws;
            if (c->w[i].stream)
                st[n_st++] = c->w[i].stream;
            guard_stats_add(&gs, guard_stats(c->w[i].guard));
        }
        log_info("stats udp rx_datagrams=%llu rx_syscalls=%llu tx_datagrams=%llu "
                 "tx_syscalls=%llu tx_dropped=%llu workers=%u",
                 (unsigned long long)us.rx_datagrams, (unsigned long long)us.rx_syscalls,
                 (unsigned long long)us.tx_datagrams, (unsigned long long)us.tx_syscalls,
                 (unsigned long long)us.tx_dropped, c->n);
        if (n_ws) {
            transport_ws_stats_format_sum(ws, n_ws, buf, sizeof(buf));
            log_info("stats ws %s", buf);
        }
        if (n_st) {
            transport_stream_stats_format_sum(st, n_st, buf, sizeof(buf));
            log_info("stats stream %s", buf);
        }
        size_t n = 0;
#define GUARD_STATS_PRINT(name)                                                                    \
    if (n < sizeof(buf))                                                                           \
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s=%llu", #name,                         \
                              (unsigned long long)gs.name);
        GUARD_STATS(GUARD_STATS_PRINT)
#undef GUARD_STATS_PRINT
        log_info("stats guard backend=%s%s", guard_backend_name(c->guards[0]), buf);
        control_release(c);
    }
    if (c->reg)
        log_info("stats registrar bindings=%zu", registrar_n_bindings(c->reg));
}

/* Policy keys that size tables allocated at start: a reload keeps the running value. */
static const struct {
    const char *key;
    size_t off;
} restart_only_keys[] = {
    {"limits.max_flows", offsetof(struct policy, max_flows)},
    {"registrar.max_bindings", offsetof(struct policy, max_bindings)},
    {"registrar.max_contacts_per_aor", offsetof(struct policy, max_contacts_per_aor)},
};

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

/*
 * The certificate and key again from their files (TLS and wss), for connections from now
 * on; established ones keep theirs. A pair that does not load or does not match keeps the
 * current one, and the log says why.
 */
static void control_reload_tls(struct control *c)
{
    const struct config *cfg = c->cfg;
    if (cfg->n_listen_tls + cfg->n_listen_wss == 0)
        return;
    char err[CONFIG_ERR_MAX];
    struct tls_server *next;
    if (tls_server_new(&next, cfg, c->tls, err, sizeof(err)) < 0) {
        log_error("certificate reload refused, keeping the current certificate: %s", err);
        return;
    }
    int rc = 0;
    control_isolate(c);
    for (unsigned i = 0; i < c->n; i++)
        rc |= worker_apply_tls(&c->w[i], c->tls ? next : NULL);
    control_release(c);
    if (c->tls) {
        tls_server_unref(c->tls);
        c->tls = next;
    } else {
        tls_server_unref(next);
    }
    if (rc == 0)
        log_info("certificate reloaded from %s", cfg->tls_cert);
}

/*
 * SIGHUP and POST /api/reload: reopen the audit log (logrotate moved it), then reload the
 * policy into every worker, isolated. A policy that does not load, or that a guard refuses,
 * leaves every worker as it was (a worker already changed gets the old policy back).
 */
static int control_reload(struct control *c, char *err, size_t cap)
{
    if (!c->is_running) {
        snprintf(err, cap, "stopping");
        return -EAGAIN;
    }
    if (c->audit) {
        int rc = audit_reopen(c->audit);
        if (rc < 0)
            log_error("audit log %s: cannot reopen, still writing to the old file: %s",
                      c->cfg->audit_path, strerror(-rc));
    }
    control_reload_tls(c);
    struct policy pol;
    if (policy_load_dir(&pol, c->cfg->policy_dir, err, cap) < 0) {
        log_error("policy reload refused, keeping the current policy: %s", err);
        return -EINVAL;
    }
    keep_restart_only(&c->pol, &pol);
    int rc = 0;
    control_isolate(c);
    unsigned i;
    for (i = 0; i < c->n; i++) {
        rc = worker_apply_policy(&c->w[i], &pol, err, cap);
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        char ignored[CONFIG_ERR_MAX];
        while (i-- > 0)
            worker_apply_policy(&c->w[i], &c->pol, ignored, sizeof(ignored));
    }
    control_release(c);
    if (rc < 0) {
        log_error("policy reload refused by the guard, keeping the current policy");
        return rc;
    }
    c->pol = pol;
    if (c->reg)
        registrar_set_policy(c->reg, &c->pol);
    log_info("policy reloaded from %s (%u worker%s)", c->cfg->policy_dir, c->n,
             c->n == 1 ? "" : "s");
    return 0;
}

static int on_http_reload(void *ctx, char *err, size_t cap)
{
    return control_reload(ctx, err, cap);
}

/* ---- the embedded registrar's socket ---------------------------------------------------- */

static void on_registrar_datagram(void *ctx, uint8_t sock, const char *buf, size_t len,
                                  const struct sockaddr *src)
{
    struct control *c = ctx;
    (void)sock;
    registrar_handle(c->reg, buf, len, src,
                     src->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                               : sizeof(struct sockaddr_in6),
                     uv_now(&c->loop));
}

static char *reg_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    struct control *c = ctx;
    return d->conn ? NULL : transport_udp_tx_reserve(c->udp, d, cap);
}

static int reg_tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    struct control *c = ctx;
    return d->conn ? -ENOENT : transport_udp_tx_commit(c->udp, d, len);
}

static void on_tick(uv_timer_t *t)
{
    struct control *c = t->data;
    uint64_t now = uv_now(&c->loop);
    /* Every tick: what a crash loses is bounded by the tick, not by the second. */
    if (c->reg)
        registrar_flush(c->reg);
    if (now - c->last_second_ms >= 1000) {
        c->last_second_ms = now;
        if (c->reg)
            registrar_tick(c->reg, now);
    }
    if (c->udp)
        transport_udp_flush(c->udp);
}

/* ---- stop ------------------------------------------------------------------------------ */

static void on_closed_handle(uv_handle_t *h) { (void)h; }

/* A close callback: ctx is the owner's pointer to the closed object, now NULL. */
static void clear_ptr(void *ctx)
{
    *(void **)ctx = NULL;
}

/* What is still closing after stop.timeout is abandoned: the state is already written
 * and kernel bans stay, so exiting now loses nothing. */
static void on_stop_deadline(uv_timer_t *t)
{
    struct control *c = t->data;
    log_warn("stop: still closing after %u s (stop.timeout), exiting now", c->pol.stop_timeout_s);
    jsonl_flush_all(); /* audit and event lines still queued reach their files */
    _exit(0);
}

/* Every started worker has exited: their outboxes are drained (EXITED is each one's last
 * message), so the ban backend and the outboxes close now. */
static void finish_stop(struct control *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        struct worker *w = &c->w[i];
        if (w->has_thread) {
            uv_thread_join(&w->thread);
            w->has_thread = false;
        }
        if (w->outbox.loop) {
            handoff_close(&w->outbox, NULL);
            w->outbox.loop = NULL;
        }
    }
    if (c->ban_be)
        ban_backend_close(c->ban_be, clear_ptr, &c->ban_be);
}

/* Closes the admin surfaces and the registrar's socket and tells every started worker to
 * stop; the ban backend and the outboxes close once all have exited (finish_stop). */
static void close_and_stop_workers(struct control *c)
{
    if (c->ctl)
        ctl_sock_close(c->ctl, clear_ptr, &c->ctl);
    if (c->http)
        admin_http_close(c->http, clear_ptr, &c->http);
    if (c->udp)
        transport_udp_close(c->udp, clear_ptr, &c->udp);
    struct inbox_msg m = {.kind = INBOX_STOP};
    for (unsigned i = 0; i < c->n_started; i++)
        worker_send(&c->w[i], &m);
    if (c->n_started == 0)
        finish_stop(c);
}

static void control_stop(struct control *c)
{
    if (c->is_stopping)
        return;
    log_stats(c);
    /* No worker hands a message to another from here on: once all are parked, none is in
     * the middle of a send, and each sees the flag when it resumes. Then no inbox is
     * written but by this thread, and a stopping worker may close its own. */
    control_isolate(c);
    atomic_store_explicit(&c->is_handoff_open, false, memory_order_release);
    control_release(c);
    c->is_stopping = true;
    c->is_running = false;
    c->scope.n = 0; /* admin requests still in flight touch no worker */
    if (c->reg)
        registrar_flush(c->reg);
    uv_timer_init(&c->loop, &c->stop_deadline);
    c->stop_deadline.data = c;
    uv_timer_start(&c->stop_deadline, on_stop_deadline, (uint64_t)c->pol.stop_timeout_s * 1000, 0);
    uv_unref((uv_handle_t *)&c->stop_deadline);
    uv_timer_stop(&c->tick);
    uv_close((uv_handle_t *)&c->tick, on_closed_handle);
    uv_close((uv_handle_t *)&c->sig_term, on_closed_handle);
    uv_close((uv_handle_t *)&c->sig_int, on_closed_handle);
    uv_close((uv_handle_t *)&c->sig_usr1, on_closed_handle);
    uv_close((uv_handle_t *)&c->sig_hup, on_closed_handle);
    close_and_stop_workers(c);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct control *c = s->data;
    if (c->is_stopping)
        return;
    if (signum == SIGUSR1) {
        log_stats(c);
        return;
    }
    if (signum == SIGHUP) {
        char err[CONFIG_ERR_MAX];
        control_reload(c, err, sizeof(err));
        return;
    }
    log_info("stopping on signal %d", signum);
    control_stop(c);
}

/* ---- start ----------------------------------------------------------------------------- */

/*
 * Switches to user name (its primary group, supplementary groups cleared) once every
 * socket is bound. Capabilities go with root; under systemd the unit grants them as
 * ambient capabilities to an unprivileged User= instead, and --user is not needed.
 * glibc applies the change to every thread of the process.
 */
static int drop_privileges(const char *name)
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

/* The ban backend the configuration asks for; nftables falls back to userspace drops when
 * its socket cannot be opened (the guard falls back too when the rules cannot be set up). */
static int ban_backend_open(struct control *c)
{
    if ((enum guard_backend_kind)c->cfg->ban_backend == GUARD_BACKEND_NFTABLES) {
#ifdef SIPEDGE_WITH_NFT
        char err[512] = "";
        int rc = ban_nft_new(&c->ban_be, &c->loop, err, sizeof(err));
        if (rc == 0)
            return 0;
        log_warn("guard: nftables backend unavailable (%s%s%s), falling back to userspace drops",
                 strerror(-rc), err[0] ? ": " : "", err);
#else
        log_warn("guard: built without nftables, using userspace drops");
#endif
    }
    return ban_null_new(&c->ban_be);
}

/* a with its port replaced. */
static void addr_with_port(const struct config_addr *a, unsigned port, struct config_addr *out)
{
    *out = *a;
    out->port = (uint16_t)port;
    if (out->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&out->ss)->sin_port = htons((uint16_t)port);
    snprintf(out->text, sizeof(out->text), "%s:%u", out->host, port);
}

/* workers: 0 means one per CPU this process may run on. */
static unsigned workers_wanted(const struct config *cfg)
{
    if (cfg->workers)
        return cfg->workers;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int start_registrar(struct control *c)
{
    /* Bindings survive a restart in the state directory; without one, memory only. */
    char db_path[CONFIG_PATH_MAX + 32] = "";
    if (c->cfg->state_dir[0])
        snprintf(db_path, sizeof(db_path), "%s/registrar.sqlite", c->cfg->state_dir);
    int rc = transport_udp_new(&c->udp, &c->loop, on_registrar_datagram, c);
    if (rc < 0)
        return rc;
    c->reg_tx = (struct tx_out){.reserve = reg_tx_reserve, .commit = reg_tx_commit, .ctx = c};
    /* The edge's requests come from its workers' core ports. A registrar-only process
     * runs no workers of its own: it trusts the ports of the edge's `workers` (the same
     * setting, read from the same configuration). */
    unsigned n_trusted = c->n ? c->n : workers_wanted(c->cfg);
    if (n_trusted > WORKERS_MAX)
        n_trusted = WORKERS_MAX;
    if (c->cfg->core.port + n_trusted - 1 > 65535)
        n_trusted = 65536 - c->cfg->core.port;
    for (unsigned i = 0; i < n_trusted; i++)
        addr_with_port(&c->cfg->core, c->cfg->core.port + i, &c->trusted[i]);
    struct registrar_opts ro = {
        .self = &c->cfg->embedded_listen,
        .users_file = c->cfg->users_file[0] ? c->cfg->users_file : NULL,
        .realm = c->cfg->realm,
        .policy = &c->pol,
        .trusted = c->trusted,
        .n_trusted = n_trusted,
        /* Core peers are the only places besides registered bindings that requests
         * may be routed to. */
        .peers = c->cfg->core_peers,
        .n_peers = c->cfg->n_core_peers,
        .db_path = db_path[0] ? db_path : NULL,
        .out = c->reg_tx,
        .sock = SOCK_REGISTRAR,
    };
    char err[CONFIG_ERR_MAX] = "";
    rc = registrar_new(&c->reg, &ro, err, sizeof(err));
    if (rc < 0) {
        log_error("embedded registrar: %s", err[0] ? err : strerror(-rc));
        return rc;
    }
    rc = transport_udp_bind(c->udp, SOCK_REGISTRAR, &c->cfg->embedded_listen, 0);
    if (rc < 0)
        log_error("cannot bind registrar socket on %s: %s", c->cfg->embedded_listen.text,
                  uv_strerror(rc));
    return rc;
}

/* The ban files of workers this run does not have: every worker has taken its share of
 * them (restore_bans), and its own file holds them from now on, so the old file must not
 * bring back at the next start a ban lifted in this run. */
static void drop_stale_ban_files(struct control *c)
{
    if (!c->cfg->state_dir[0])
        return;
    for (unsigned j = c->n ? c->n : 1; j < WORKERS_MAX; j++) {
        char path[CONFIG_PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/w%u/bans.state", c->cfg->state_dir, j);
        if (unlink(path) == 0)
            log_info("guard: %s taken over by the %u workers of this run, removed", path, c->n);
    }
}

/* Starts the workers one after the other (each binds its sockets before the next starts,
 * so member i of every SO_REUSEPORT group is worker i). */
static int start_workers(struct control *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        struct worker *w = &c->w[i];
        w->index = i;
        w->ctl = c;
        w->cfg = *c->cfg;
        addr_with_port(&c->cfg->core, c->cfg->core.port + i, &w->cfg.core);
        worker_policy_share(&w->pol, &c->pol, c->n);
        int rc = handoff_init(&w->outbox, &c->loop, OUTBOX_CAP, sizeof(struct outbox_msg),
                              on_outbox, c);
        if (rc < 0)
            return rc;
        rc = uv_thread_create(&w->thread, worker_thread_main, w);
        if (rc < 0)
            return rc;
        w->has_thread = true;
        uv_sem_wait(&c->started);
        if (w->start_rc < 0) {
            uv_thread_join(&w->thread);
            w->has_thread = false;
            return w->start_rc;
        }
        c->n_started++;
        c->guards[i] = w->guard;
        c->edges[i] = w->edge;
    }
    drop_stale_ban_files(c);
    return 0;
}

static void log_ready(struct control *c, const struct worker_opts *opts)
{
    /* Bounded: 3 x CONFIG_MAX_LISTEN addresses can exceed the buffer; the list is then
     * cut, never written past its end. */
    char listen_txt[512] = "";
    size_t n = 0;
    const struct {
        const char *name;
        const struct config_addr *addr;
        unsigned count;
    } kinds[] = {
        {"udp", c->cfg->listen_udp, c->cfg->n_listen_udp},
        {"ws", c->cfg->listen_ws, c->cfg->n_listen_ws},
        {"wss", c->cfg->listen_wss, c->cfg->n_listen_wss},
        {"tcp", c->cfg->listen_tcp, c->cfg->n_listen_tcp},
        {"tls", c->cfg->listen_tls, c->cfg->n_listen_tls},
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
    char core_txt[96];
    if (c->n > 1)
        snprintf(core_txt, sizeof(core_txt), "%s..%u", c->cfg->core.text,
                 c->cfg->core.port + c->n - 1);
    else
        snprintf(core_txt, sizeof(core_txt), "%s", c->cfg->core.text);
    log_always("sipedge: ready %s%s core=%s registrar=%s (%s) workers=%u", listen_txt,
               opts->run_edge ? "" : "registrar-only", core_txt,
               opts->run_registrar ? c->cfg->embedded_listen.text : c->cfg->registrar.text,
               opts->run_registrar ? "embedded" : "external", c->n);
}

int worker_run(const struct worker_opts *opts)
{
    struct control *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int rc = uv_loop_init(&c->loop);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->cfg = opts->cfg;
    c->pol = *opts->policy;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    uv_sem_init(&c->started, 0);
    signal(SIGPIPE, SIG_IGN);
    c->n = opts->run_edge ? workers_wanted(c->cfg) : 0;
    if (c->n > WORKERS_MAX || c->cfg->core.port + (c->n ? c->n - 1 : 0) > 65535) {
        log_error("workers: %u is more than this process can run (at most %u, and the core "
                  "ports %u.. must stay below 65536)",
                  c->n, WORKERS_MAX, c->cfg->core.port);
        rc = -EINVAL;
        goto out;
    }
    c->w = calloc(c->n ? c->n : 1, sizeof(*c->w));
    if (!c->w) {
        rc = -ENOMEM;
        goto out;
    }
    c->scope = (struct admin_scope){.guards = c->guards,
                                    .edges = c->edges,
                                    .n = c->n,
                                    .owner = scope_owner,
                                    .isolate = control_isolate,
                                    .release = control_release,
                                    .ctx = c};
    /* The time zone is read once, here: libraries that call localtime() from the workers
     * (libwebsockets' certificate and date code) then never rebuild it concurrently. */
    tzset();
    /* lws' log settings are the process's: set once, before any thread makes a context. */
    transport_ws_log_init(c->n + (c->cfg->has_admin_listen ? 1 : 0));
    if (opts->run_registrar) {
        rc = start_registrar(c);
        if (rc < 0)
            goto out_close;
    }
    if (opts->run_edge) {
        rc = ban_backend_open(c);
        if (rc < 0) {
            log_error("guard: %s", strerror(-rc));
            goto out_close;
        }
        if (c->cfg->audit_path[0]) {
            struct audit_opts ao = {.path = c->cfg->audit_path};
            rc = audit_new(&c->audit, &ao);
            if (rc < 0) {
                log_error("audit log %s: %s", c->cfg->audit_path, strerror(-rc));
                goto out_close;
            }
        }
        if (c->cfg->n_listen_tls) {
            char err[CONFIG_ERR_MAX];
            rc = tls_server_new(&c->tls, c->cfg, NULL, err, sizeof(err));
            if (rc < 0) {
                log_error("TLS: %s", err);
                goto out_close;
            }
        }
        rc = start_workers(c);
        if (rc < 0)
            goto out_close;
        if (c->cfg->admin_socket[0]) {
            rc = ctl_sock_new(&c->ctl, &c->loop, c->cfg->admin_socket, &c->scope);
            if (rc < 0) {
                log_error("admin socket %s: %s", c->cfg->admin_socket, strerror(-rc));
                goto out_close;
            }
        }
        if (c->cfg->has_admin_listen) {
            struct admin_http_opts ho = {
                .loop = &c->loop,
                .listen = &c->cfg->admin_listen,
                .token = c->cfg->admin_token,
                .scope = &c->scope,
                .snapshot = on_http_snapshot,
                .reload = on_http_reload,
                .ctx = c,
            };
            rc = admin_http_new(&c->http, &ho);
            if (rc < 0) {
                c->http = NULL;
                goto out_close;
            }
        }
    }
    if (c->cfg->run_user[0]) {
        rc = drop_privileges(c->cfg->run_user);
        if (rc < 0)
            goto out_close;
    }
    uv_timer_init(&c->loop, &c->tick);
    c->tick.data = c;
    uv_timer_start(&c->tick, on_tick, 250, 250);
    uv_signal_t *sigs[] = {&c->sig_term, &c->sig_int, &c->sig_usr1, &c->sig_hup};
    int signums[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(&c->loop, sigs[i]);
        sigs[i]->data = c;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    c->is_running = true;
    atomic_store_explicit(&c->is_handoff_open, c->n > 1, memory_order_release);
    log_ready(c, opts);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out;

out_close:
    /* Workers already running stop; the loop runs until they have exited and every
     * handle is closed. */
    c->is_stopping = true;
    close_and_stop_workers(c);
    uv_run(&c->loop, UV_RUN_DEFAULT);
out:
    if (c->stop_deadline.loop)
        uv_close((uv_handle_t *)&c->stop_deadline, on_closed_handle);
    audit_free(c->audit);
    if (c->tls)
        tls_server_unref(c->tls);
    registrar_free(c->reg);
    if (c->ban_be)
        ban_backend_close(c->ban_be, clear_ptr, &c->ban_be);
    /* Runs until every handle has closed, the ban backend's included (its callback). */
    uv_run(&c->loop, UV_RUN_DEFAULT);
    if (c->ban_be != NULL)
        log_warn("ban backend still closing at exit");
    if (uv_loop_close(&c->loop) != 0)
        log_warn("event loop closed with handles still open");
    uv_sem_destroy(&c->started);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->w);
    free(c);
    return rc;
}
