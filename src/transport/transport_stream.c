/*
 * transport_stream: SIP over TCP and TLS on the worker's loop: the listen sockets
 * (ours, SO_REUSEPORT groups steered by source), accepts in bounded batches, per-IP
 * admission before a byte is read or a handshake is started (a flood costs an accept and
 * a close, no TLS), the connection table with generation-checked ids, the one-second
 * tick that runs every connection's deadlines, the output contract, and shutdown. A
 * connection's own I/O is in stream_io.c.
 *
 * Connection ids:
 *
 *    63  62          32 31                     0
 *   +---+--------------+------------------------+
 *   | 1 |  generation  |          slot          |
 *   +---+--------------+------------------------+
 *
 * The generation is 31 bits and never 0, bumped when a slot is freed, so an id a caller
 * kept across an asynchronous boundary names nothing once its connection is gone.
 */
#define _GNU_SOURCE
#include "stream_conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sipedge/flow_table.h"
#include "sipedge/log.h"
#include "sipedge/stats_text.h"
#include "sipedge/lws_uv.h"
#include "sipedge/tls_server.h"
#include "transport/reuseport_steer.h"

#define STREAM_GEN_MASK 0x7fffffffu

static void stream_maybe_finish(struct transport_stream *t);
static void on_listener_closed(uv_handle_t *h);
static void on_tick_closed(uv_handle_t *h);

/* ---- connection table --------------------------------------------------------------- */

/* The open connection conn names, or NULL (gone, closing, or not ours). */
static struct stream_conn *stream_lookup(const struct transport_stream *t, uint64_t conn)
{
    struct stream_conn *c = conn_ids_get(&t->ids, conn);
    if (!c || c->is_closing || !c->is_open)
        return NULL;
    return c;
}

int stream_slot_alloc(struct transport_stream *t, struct stream_conn *c)
{
    return conn_ids_alloc(&t->ids, c, &c->id);
}

void stream_conn_release(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    if (c->id)
        conn_ids_free(&t->ids, c->id);
    if (c->ip) {
        t->ipt.ips[c->ip - 1].n_conns--;
        c->ip = 0;
    }
    if (c->is_core)
        stream_core_forget(c);
    if (c->is_open) {
        t->n_live--;
        t->st.conns_open--;
    }
}

void stream_handle_closed(struct transport_stream *t)
{
    t->n_handles_open--;
    stream_maybe_finish(t);
}

/* ---- accepting ---------------------------------------------------------------------- */

static void stream_accept_pause(struct transport_stream *t)
{
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (t->lst[i].is_polling) {
            uv_poll_stop(&t->lst[i].poll);
            t->lst[i].is_polling = false;
        }
    }
    t->is_accept_paused = true;
}

static void stream_accept_resume(struct transport_stream *t)
{
    t->is_accept_paused = false;
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (!t->lst[i].is_polling && t->lst[i].fd >= 0) {
            uv_poll_start(&t->lst[i].poll, UV_READABLE, stream_on_accept);
            t->lst[i].is_polling = true;
        }
    }
}

/* Dead peers are found by the kernel: keepalive probes after 60 s of silence, and
 * unacknowledged data gives up after 60 s (RFC 5626 §4.4 leaves the choice to us). */
void stream_sockopts(int fd)
{
    int one = 1, idle = 60, intvl = 10, cnt = 3;
    unsigned user_timeout_ms = 60000;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

/* Per-IP admission. Returns the entry + 1 to count the connection in, or 0 (refused and
 * counted). */
static uint32_t stream_admit(struct transport_stream *t, const struct sockaddr *sa)
{
    char abuf[LOG_ADDR_MAX];
    uint32_t rate = t->pol.stream_conns_per_ip_per_s;
    uint64_t now = uv_now(t->loop);
    union ws_ip_key k;
    transport_ws_ip_key(sa, t->pol.guard_ipv6_prefix, &k);
    struct ws_ip *e = ws_ip_get(&t->ipt, &k, rate, now);
    if (!e) {
        t->st.refused_ip_table_full++;
        log_debug("stream %s: connection refused: per-IP table full",
                  log_fmt_addr(sa, abuf, sizeof(abuf)));
        return 0;
    }
    if (rate && !ws_ip_allow_handshake(e, rate, now)) {
        t->st.refused_conn_rate++;
        log_debug("stream %s: connection refused: rate over %u/s",
                  log_fmt_addr(sa, abuf, sizeof(abuf)), rate);
        return 0;
    }
    if (t->pol.stream_max_conns_per_ip && e->n_conns >= t->pol.stream_max_conns_per_ip) {
        t->st.refused_conns_per_ip++;
        log_debug("stream %s: connection refused: %u connections open",
                  log_fmt_addr(sa, abuf, sizeof(abuf)), e->n_conns);
        return 0;
    }
    return (uint32_t)(e - t->ipt.ips) + 1;
}

static void stream_accept_one(struct stream_listener *l, int fd, const union ws_addr *peer,
                              socklen_t sl)
{
    struct transport_stream *t = l->t;
    bool is_tls = l->transport == FLOW_TLS;
    if (is_tls && !t->tls) {
        t->st.refused_no_tls++;
        close(fd);
        return;
    }
    uint32_t ip = stream_admit(t, &peer->sa);
    if (!ip) {
        close(fd);
        return;
    }
    struct stream_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        t->st.refused_no_memory++;
        close(fd);
        return;
    }
    c->t = t;
    c->fd = fd;
    c->transport = l->transport;
    c->listener = l->index;
    c->is_tls = is_tls;
    memcpy(&c->remote, peer, sl < sizeof(c->remote) ? sl : sizeof(c->remote));
    int rc = stream_slot_alloc(t, c);
    if (rc < 0) {
        char abuf[LOG_ADDR_MAX];
        if (rc == -ENOSPC)
            t->st.refused_conn_table_full++;
        else
            t->st.refused_no_memory++;
        log_debug("stream %s: connection refused: %u connection slots in use",
                  log_fmt_addr(&peer->sa, abuf, sizeof(abuf)), t->ids.max);
        free(c);
        close(fd);
        return;
    }
    if (uv_poll_init_socket(t->loop, &c->poll, fd) < 0) {
        c->ip = 0;
        stream_conn_release(c);
        t->st.refused_no_memory++;
        free(c);
        close(fd);
        return;
    }
    c->ip = ip;
    t->ipt.ips[ip - 1].n_conns++;
    t->n_handles_open++;
    stream_sockopts(fd);
    stream_conn_start(c);
}

static void stream_accepted(void *ctx, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct stream_listener *l = ctx;
    l->t->st.accepted++;
    stream_accept_one(l, fd, (const union ws_addr *)peer, len);
}

void stream_on_accept(uv_poll_t *h, int status, int events)
{
    struct stream_listener *l = container_of(h, struct stream_listener, poll);
    struct transport_stream *t = l->t;
    (void)events;
    if (status < 0 || t->is_closing)
        return;
    int err = lws_uv_accept_batch(l->fd, STREAM_ACCEPT_BATCH,
                                  l->transport ? stream_accepted : stream_core_accepted, l);
    if (err) {
        t->st.accept_errors++;
        log_warn("stream %s: accept: %s; pausing accepts for %d ms", l->addr->text, strerror(err),
                 STREAM_TICK_MS);
        stream_accept_pause(t);
    }
}

static int stream_listen(struct transport_stream *t, struct stream_listener *l)
{
    int fd =
        lws_uv_listen(l->addr, STREAM_LISTEN_BACKLOG, true, t->loop, &l->poll, stream_on_accept);
    if (fd < 0)
        return fd;
    /* Owned by the transport from here: an error below is closed with the rest. */
    l->fd = fd;
    l->is_polling = true;
    t->n_handles_open++;
    if (t->group > 1)
        return reuseport_steer_attach(fd, t->group);
    return 0;
}

/* ---- deadlines ---------------------------------------------------------------------- */

static void stream_tick_conn(struct transport_stream *t, struct stream_conn *c, uint32_t now)
{
    char abuf[LOG_ADDR_MAX];
    const struct policy *p = &t->pol;
    uint64_t *counter = NULL;
    const char *why = NULL;
    if (c->is_gone)
        return;
    if (c->is_lingering) {
        if (now - c->close_ms >= STREAM_LINGER_MS)
            stream_conn_close(c, NULL, false);
        return;
    }
    if (!c->is_handshake_done) {
        if (p->stream_tls_handshake_timeout_s &&
            now - c->accept_ms >= p->stream_tls_handshake_timeout_s * 1000u) {
            counter =
                c->is_connecting ? &t->st.core_connect_errors : &t->st.close_tls_handshake_timeout;
            why = c->is_connecting ? "connect timeout" : "TLS handshake timeout";
        }
    } else if (c->n_crlf && now - c->msg_ms >= STREAM_TICK_MS) {
        stream_conn_crlf_expire(c);
        return;
    } else if (c->rx_len && p->stream_message_timeout_s &&
               now - c->msg_ms >= p->stream_message_timeout_s * 1000u) {
        counter = &t->st.close_message_timeout;
        why = "message incomplete";
    } else if (!c->has_message && p->stream_first_message_timeout_s &&
               now - c->open_ms >= p->stream_first_message_timeout_s * 1000u) {
        counter = &t->st.close_first_message_timeout;
        why = "no SIP message";
    } else if (p->stream_idle_timeout_s &&
               now - c->last_rx_ms >= p->stream_idle_timeout_s * 1000u) {
        counter = &t->st.close_idle_timeout;
        why = "idle";
    }
    if (!counter)
        return;
    log_debug("stream %s: %s: closing", log_fmt_addr(&c->remote.sa, abuf, sizeof(abuf)), why);
    stream_conn_close(c, counter, false);
}

static void on_tick(uv_timer_t *h)
{
    struct transport_stream *t = container_of(h, struct transport_stream, tick);
    uint32_t now = stream_now_ms(t);
    if (t->is_closing)
        return;
    if (t->is_accept_paused)
        stream_accept_resume(t);
    ws_ip_sweep(&t->ipt, t->pol.stream_conns_per_ip_per_s, uv_now(t->loop));
    for (uint32_t i = 0; i < t->ids.n; i++) {
        struct stream_conn *c = conn_ids_at(&t->ids, i);
        if (c)
            stream_tick_conn(t, c, now);
    }
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void stream_apply_policy(struct transport_stream *t, const struct policy *p)
{
    t->pol = *p;
    if (t->pol.stream_max_message_bytes < 4096)
        t->pol.stream_max_message_bytes = 4096;
    if (t->pol.stream_out_queue_max_bytes < TX_MSG_MAX)
        t->pol.stream_out_queue_max_bytes = TX_MSG_MAX;
}

static void stream_free(struct transport_stream *t)
{
    tls_server_unref(t->tls);
    ws_ip_table_free(&t->ipt);
    conn_ids_fini(&t->ids);
    free(t->rx_scratch);
    free(t->tx_scratch);
    free(t);
}

int transport_stream_new(struct transport_stream **out, const struct transport_stream_opts *opts,
                         const struct transport_conn_cbs *cbs, void *ctx)
{
    const struct config *cfg = opts ? opts->cfg : NULL;
    int rc = 0;
    if (!opts || !opts->loop || !cfg || !opts->policy || !cbs || !cbs->on_open ||
        !cbs->on_message || !cbs->on_alive || !cbs->on_close ||
        (cfg->n_listen_tcp + cfg->n_listen_tls == 0 && !opts->on_core))
        return -EINVAL;
    if (cfg->n_listen_tls && !opts->tls) {
        log_error("stream: tls listener configured without a certificate context");
        return -EINVAL;
    }
    struct transport_stream *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->loop = opts->loop;
    t->cfg = cfg;
    t->cbs = *cbs;
    t->ctx = ctx;
    t->group = opts->group;
    t->on_core = opts->on_core;
    t->tls = tls_server_ref(opts->tls);
    stream_apply_policy(t, opts->policy);
    conn_ids_init(&t->ids,
                  opts->policy->max_flows ? opts->policy->max_flows : STREAM_DEFAULT_MAX_CONNS,
                  TX_CONN_STREAM, STREAM_GEN_MASK);
    for (unsigned i = 0; i < 2 * CONFIG_MAX_LISTEN + 1; i++)
        t->lst[i].fd = -1;
    t->rx_scratch = malloc(STREAM_RX_PAD + STREAM_RX_SCRATCH);
    t->tx_scratch = malloc(TX_MSG_MAX);
    if (!t->rx_scratch || !t->tx_scratch || ws_ip_table_init(&t->ipt) < 0) {
        stream_free(t);
        return -ENOMEM;
    }
    /* OpenSSL writes to the socket with write(): a peer that resets a TLS connection
     * must not kill the process. */
    signal(SIGPIPE, SIG_IGN);

    uv_timer_init(t->loop, &t->tick);
    t->n_handles_open = 1;
    for (unsigned k = 0; k < 2; k++) {
        unsigned n = k ? cfg->n_listen_tls : cfg->n_listen_tcp;
        for (unsigned i = 0; i < n; i++) {
            struct stream_listener *l = &t->lst[t->n_lst++];
            l->t = t;
            l->transport = k ? FLOW_TLS : FLOW_TCP;
            l->index = (uint8_t)i;
            l->addr = k ? &cfg->listen_tls[i] : &cfg->listen_tcp[i];
            rc = stream_listen(t, l);
            if (rc < 0) {
                log_error("stream: cannot listen on %s %s: %s", k ? "tls" : "tcp", l->addr->text,
                          strerror(-rc));
                goto fail;
            }
            log_info("stream: listening on %s %s", k ? "tls" : "tcp", l->addr->text);
        }
    }
    if (t->on_core) {
        struct stream_listener *l = &t->lst[t->n_lst++];
        rc = stream_core_listen(t, l);
        if (rc < 0) {
            log_error("stream: cannot listen on core tcp %s: %s", cfg->core.text, strerror(-rc));
            goto fail;
        }
    }
    uv_timer_start(&t->tick, on_tick, STREAM_TICK_MS, STREAM_TICK_MS);
    *out = t;
    return 0;

fail:
    /* Nothing was accepted yet: the handles close on the caller's next uv_run and the
     * last close callback frees the transport (the caller never sees it). */
    t->is_closing = true;
    t->n_handles_open++;
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (t->lst[i].fd >= 0)
            uv_close((uv_handle_t *)&t->lst[i].poll, on_listener_closed);
    }
    uv_close((uv_handle_t *)&t->tick, on_tick_closed);
    stream_handle_closed(t);
    return rc;
}

void transport_stream_set_policy(struct transport_stream *t, const struct policy *policy)
{
    stream_apply_policy(t, policy);
    /* A lower bound refuses new connections until enough have gone; none is cut. */
    t->ids.max = policy->max_flows ? policy->max_flows : STREAM_DEFAULT_MAX_CONNS;
}

void transport_stream_set_tls(struct transport_stream *t, struct tls_server *tls)
{
    struct tls_server *old = t->tls;
    t->tls = tls_server_ref(tls);
    tls_server_unref(old);
}

/* ---- output contract ---------------------------------------------------------------- */

/* The connection d names: its own id, or the one to or from a core peer. */
static struct stream_conn *stream_dest(struct transport_stream *t, const struct tx_dest *d)
{
    if (d->conn == TX_CONN_CORE)
        return t->on_core && d->addr ? stream_core_get(t, d->addr) : NULL;
    return stream_lookup(t, d->conn);
}

char *transport_stream_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    struct transport_stream *t = ctx;
    if (!stream_dest(t, d)) {
        t->st.tx_no_conn++;
        return NULL;
    }
    *cap = TX_MSG_MAX;
    return t->tx_scratch;
}

int transport_stream_tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    struct transport_stream *t = ctx;
    struct stream_conn *c = stream_dest(t, d);
    if (!c) {
        t->st.tx_no_conn++;
        return -ENOENT;
    }
    if (len == 0)
        return 0;
    if (len > TX_MSG_MAX)
        return -EINVAL;
    int rc = stream_conn_send(c, t->tx_scratch, len);
    if (rc == -EPIPE)
        return -ENOENT;
    if (rc < 0)
        return rc;
    t->st.tx_messages++;
    t->st.tx_bytes += len;
    return 0;
}

void transport_stream_close_conn(struct transport_stream *t, uint64_t conn)
{
    struct stream_conn *c = stream_lookup(t, conn);
    if (c)
        stream_conn_close(c, &t->st.close_by_owner, true);
}

/* ---- counters ----------------------------------------------------------------------- */

const struct transport_stream_stats *transport_stream_stats(const struct transport_stream *t)
{
    return &t->st;
}

uint32_t transport_stream_n_conns(const struct transport_stream *t)
{
    return t->n_live;
}

size_t transport_stream_conn_size(void)
{
    return sizeof(struct stream_conn);
}

int transport_stream_local_addr(const struct transport_stream *t, unsigned i,
                                struct sockaddr_storage *ss)
{
    socklen_t sl = sizeof(*ss);
    if (i >= t->n_lst || t->lst[i].fd < 0 ||
        getsockname(t->lst[i].fd, (struct sockaddr *)ss, &sl) < 0)
        return -ENOENT;
    return 0;
}

void transport_stream_stats_format_sum(const struct transport_stream *const *ts, unsigned n_ts,
                                       char *buf, size_t cap)
{
#define STREAM_STATS_NAME(name) #name,
    static const char *const names[] = {TRANSPORT_STREAM_STATS(STREAM_STATS_NAME)};
#undef STREAM_STATS_NAME
    const uint64_t *srcs[64]; /* a process runs at most 64 workers */
    unsigned n = n_ts < 64 ? n_ts : 64;
    for (unsigned i = 0; i < n; i++)
        srcs[i] = (const uint64_t *)&ts[i]->st;
    _Static_assert(sizeof(struct transport_stream_stats) == sizeof(names) / sizeof(names[0]) *
                                                               sizeof(uint64_t),
                   "stream counters are uint64_t fields named by TRANSPORT_STREAM_STATS");
    stats_text_sum(buf, cap, "stream_", names, sizeof(names) / sizeof(names[0]), srcs, n);
}

void transport_stream_stats_format(const struct transport_stream *t, char *buf, size_t cap)
{
    transport_stream_stats_format_sum(&t, 1, buf, cap);
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h)
{
    struct stream_listener *l = container_of((uv_poll_t *)h, struct stream_listener, poll);
    close(l->fd);
    l->fd = -1;
    stream_handle_closed(l->t);
}

static void on_tick_closed(uv_handle_t *h)
{
    struct transport_stream *t = container_of((uv_timer_t *)h, struct transport_stream, tick);
    stream_handle_closed(t);
}

static void stream_maybe_finish(struct transport_stream *t)
{
    if (!t->is_closing || t->n_handles_open)
        return;
    void (*cb)(void *) = t->close_cb;
    void *ctx = t->close_ctx;
    stream_free(t);
    if (cb)
        cb(ctx);
}

void transport_stream_close(struct transport_stream *t, void (*cb)(void *ctx), void *ctx)
{
    if (t->is_closing)
        return;
    t->is_closing = true;
    t->close_cb = cb;
    t->close_ctx = ctx;
    /* One handle is held for the duration, so a close callback that runs while this
     * loop is still going cannot finish the transport under it. */
    t->n_handles_open++;
    for (unsigned i = 0; i < t->n_lst; i++) {
        struct stream_listener *l = &t->lst[i];
        if (l->fd < 0)
            continue;
        if (l->is_polling)
            uv_poll_stop(&l->poll);
        l->is_polling = false;
        uv_close((uv_handle_t *)&l->poll, on_listener_closed);
    }
    uv_timer_stop(&t->tick);
    uv_close((uv_handle_t *)&t->tick, on_tick_closed);
    for (uint32_t s = 0; s < t->ids.n; s++) {
        struct stream_conn *c = conn_ids_at(&t->ids, s);
        if (c && !c->is_gone)
            stream_conn_close(c, c->is_closing ? NULL : &t->st.close_shutdown, false);
    }
    stream_handle_closed(t);
}
