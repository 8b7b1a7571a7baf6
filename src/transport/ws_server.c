/*
 * ws_server: the server side of transport_ws around the lws adapter (transport_ws.c):
 * the listen sockets we bind ourselves and whose accepted fds are adopted into lws
 * (after the per-IP handshake rate), one vhost per listener, lws' log in ours, the
 * one-second tick that runs every connection's timers, creation of the lws context on
 * the worker's loop, and the shutdown steps that destroy it. It is apart from the
 * adapter because none of it runs inside a connection's lws callback.
 */
#define _GNU_SOURCE
#include "ws_lws.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sipedge/flow_table.h"
#include "sipedge/log.h"
#include "transport/reuseport_steer.h"

static void ws_maybe_finish(struct transport_ws *t);
static void on_stop_timer(uv_timer_t *h);

/* ---- certificates --------------------------------------------------------------------- */

int transport_ws_reload_cert(struct transport_ws *t)
{
    for (unsigned i = 0; i < t->n_lst; i++) {
        SSL_CTX *ctx = t->lst[i].ssl_ctx;
        if (!ctx)
            continue;
        /* SSL_new copies the context's certificate, so sessions already made keep theirs. */
        if (SSL_CTX_use_certificate_chain_file(ctx, t->cfg->tls_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, t->cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            char why[160];
            ERR_error_string_n(ERR_get_error(), why, sizeof(why));
            ERR_clear_error();
            log_error("wss %s: certificate reload failed: %s", t->lst[i].addr->text, why);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- listening ---------------------------------------------------------------------- */

static void ws_accept_pause(struct transport_ws *t)
{
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (t->lst[i].is_polling) {
            uv_poll_stop(&t->lst[i].poll);
            t->lst[i].is_polling = false;
        }
    }
    t->is_accept_paused = true;
}

static void on_accept(uv_poll_t *h, int status, int events);

static void ws_accept_resume(struct transport_ws *t)
{
    t->is_accept_paused = false;
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (!t->lst[i].is_polling && t->lst[i].fd >= 0) {
            uv_poll_start(&t->lst[i].poll, UV_READABLE, on_accept);
            t->lst[i].is_polling = true;
        }
    }
}

static void ws_accept_one(void *ctx, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct ws_listener *l = ctx;
    struct transport_ws *t = l->t;
    (void)len;
    t->st.accepted++;
    uint32_t rate = t->pol.ws_handshakes_per_ip_per_s;
    if (rate) {
        union ws_ip_key k;
        uint64_t now = uv_now(t->loop);
        ws_ip_key(t, peer, &k);
        struct ws_ip *e = ws_ip_get(&t->ipt, &k, rate, now);
        if (!e) {
            t->st.refused_ip_table_full++;
            close(fd);
            return;
        }
        if (!ws_ip_allow_handshake(e, rate, now)) {
            char abuf[LOG_ADDR_MAX];
            t->st.refused_handshake_rate++;
            log_debug("ws %s: connection refused: handshake rate over %u/s",
                      log_fmt_addr(peer, abuf, sizeof(abuf)), t->pol.ws_handshakes_per_ip_per_s);
            close(fd);
            return;
        }
    }
    /* On failure lws closes the fd itself (lws-adopt.h). */
    if (!lws_adopt_socket_vhost(l->vh, fd))
        t->st.adopt_errors++;
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct ws_listener *l = container_of(h, struct ws_listener, poll);
    struct transport_ws *t = l->t;
    (void)events;
    if (status < 0 || t->is_closing)
        return;
    int err = lws_uv_accept_batch(l->fd, WS_ACCEPT_BATCH, ws_accept_one, l);
    if (err) {
        t->st.accept_errors++;
        log_warn("ws %s: accept: %s; pausing accepts for %d ms", l->addr->text, strerror(err),
                 WS_TICK_MS);
        ws_accept_pause(t);
    }
}

static int ws_listen(struct transport_ws *t, struct ws_listener *l)
{
    /* SO_REUSEPORT: with several workers each listens on the same port with its own
     * socket, one group steered by source address, so every connection of one address
     * reaches one worker and its per-IP caps and handshake rate are exact. (Several
     * processes may share a port too, as before, with the kernel's own spread.) */
    unsigned group = t->group;
    int fd = lws_uv_listen(l->addr, WS_LISTEN_BACKLOG, true, t->loop, &l->poll, on_accept);
    if (fd < 0)
        return fd;
    if (group > 1) {
        int rc = reuseport_steer_attach(fd, group);
        if (rc < 0) {
            uv_close((uv_handle_t *)&l->poll, NULL);
            close(fd);
            return rc;
        }
    }
    l->fd = fd;
    t->n_handles_open++;
    l->is_polling = true;
    return 0;
}

static int ws_vhost(struct transport_ws *t, struct ws_listener *l)
{
    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof(vi));
    vi.vhost_name = l->name;
    vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    vi.protocols = ws_protocols;
    vi.user = l;
    /* All zero: no lws validity timer (ws_tick_conn does keepalive; see there why). */
    vi.retry_and_idle_policy = &t->retry;
    vi.timeout_secs = WS_HANDSHAKE_TIMEOUT_S;
    vi.keepalive_timeout = WS_HANDSHAKE_TIMEOUT_S;
    if (l->transport == FLOW_WSS) {
        vi.ssl_cert_filepath = t->cfg->tls_cert;
        vi.ssl_private_key_filepath = t->cfg->tls_key;
        /* lws enables TLS on a vhost only when its own options ask for it. */
        vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        vi.alpn = "http/1.1"; /* WebSocket over HTTP/1.1 only (RFC 6455 §4.1) */
    }
    l->vh = lws_create_vhost(t->lws, &vi);
    if (!l->vh)
        return -EINVAL;
    return 0;
}

static bool ws_addr_equal(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && (y->sin_addr.s_addr == htonl(INADDR_ANY) ||
                                              x->sin_addr.s_addr == y->sin_addr.s_addr);
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr) ||
            !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)));
}

/*
 * The listener a connection came in on, from its local address. Not from the wsi's
 * vhost: every vhost here has port CONTEXT_PORT_NO_LISTEN_SERVER, and lws rebinds an
 * upgraded connection to the first vhost on that "port" whose name matches the Host
 * header, else to the first vhost created, so a wss connection may end up on "ws0".
 */
struct ws_listener *ws_listener_of(struct transport_ws *t, struct lws *wsi)
{
    union ws_addr local;
    socklen_t sl = sizeof(local);
    int fd = lws_get_socket_fd(wsi);
    if (fd >= 0 && getsockname(fd, &local.sa, &sl) == 0) {
        for (unsigned i = 0; i < t->n_lst; i++) {
            if (ws_addr_equal(&local.sa, &t->lst[i].addr->ss))
                return &t->lst[i];
        }
    }
    return lws_vhost_user(lws_get_vhost(wsi));
}

/* ---- lws logging into ours ---------------------------------------------------------- */

static void on_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        log_error("lws: %.*s", (int)n, line);
    else if (level & LLL_WARN)
        log_warn("lws: %.*s", (int)n, line);
    else
        log_debug("lws: %.*s", (int)n, line);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void ws_apply_policy(struct transport_ws *t, const struct policy *p)
{
    t->pol = *p;
    if (t->pol.ws_max_message_bytes < 65536)
        t->pol.ws_max_message_bytes = 65536; /* RFC 7118 clients may send up to 64 KiB */
}

/*
 * Per-connection timers, run from the transport's one-second tick over the slot table
 * instead of lws' timers. lws 4.1 keeps every scheduled callback of a thread (validity
 * pings, lws_set_timer_usecs) in one sorted list, and re-arming the validity timer on
 * every received frame walks that list: with 10,000+ connections that walk was most of
 * the process' CPU and handshakes started to time out. A linear pass per second costs a
 * few nanoseconds per connection, and there is nothing to re-arm when a frame arrives.
 *
 *  - no SIP message within ws_first_message_timeout_s of the handshake: close 1008
 *    (RFC 6455 §7.4.1, the generic policy code: 1000/1001 would tell the client we are
 *    done or going away, 1002/1003 would blame its framing);
 *  - a message started (its first chunk arrived) but not complete within
 *    ws_message_timeout_s: close 1008. Without this deadline a peer that sends the
 *    start of a message and stalls holds its receive buffer for as long as it
 *    answers pings;
 *  - nothing received for ws_ping_interval_s: a WebSocket Ping (RFC 6455 §5.5.2);
 *  - still nothing ws_pong_timeout_s after the Ping: the peer is gone. No close frame
 *    (it could not answer one either): the connection is dropped and the flow dies.
 */
static void ws_tick_conn(struct transport_ws *t, struct ws_pss *pss, uint32_t now)
{
    char abuf[LOG_ADDR_MAX];
    if (pss->is_closing)
        return;
    if (pss->is_in_msg && t->pol.ws_message_timeout_s &&
        now - pss->msg_ms >= t->pol.ws_message_timeout_s * 1000u) {
        t->st.close_message_timeout++;
        log_debug("ws %s: message incomplete after %u s (%u bytes): closing 1008",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)), t->pol.ws_message_timeout_s,
                  pss->rx_len);
        ws_rx_free(t, pss);
        ws_schedule_close(pss, WS_CLOSE_POLICY);
        return;
    }
    if (!pss->has_message && t->pol.ws_first_message_timeout_s &&
        now - pss->open_ms >= t->pol.ws_first_message_timeout_s * 1000u) {
        t->st.close_first_message_timeout++;
        log_debug("ws %s: no SIP message within %u s: closing 1008",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)),
                  t->pol.ws_first_message_timeout_s);
        ws_schedule_close(pss, WS_CLOSE_POLICY);
        return;
    }
    if (pss->is_ping_out) {
        if (now - pss->ping_ms < t->pol.ws_pong_timeout_s * 1000u)
            return;
        t->st.close_ping_timeout++;
        log_debug("ws %s: no answer within %u s of a ping: dropping the connection",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)), t->pol.ws_pong_timeout_s);
        pss->is_closing = true;
        pss->is_close_sent = true;
        /* Synchronous, as lws' own timeouts close from its timer: an asynchronous kill
         * would wait for lws to next service something (its deadline is only re-armed
         * then), which on an idle server can be never. CLOSED runs now and frees the
         * slot; the caller's loop reads the slot again, not pss. */
        lws_set_timeout(pss->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
        return;
    }
    if (t->pol.ws_ping_interval_s && now - pss->last_rx_ms >= t->pol.ws_ping_interval_s * 1000u) {
        pss->is_ping_out = true;
        pss->is_ping_due = true;
        pss->ping_ms = now;
        lws_callback_on_writable(pss->wsi);
    }
}

static void on_tick(uv_timer_t *h)
{
    struct transport_ws *t = container_of(h, struct transport_ws, tick);
    uint32_t now = ws_now_ms(t);
    if (t->is_accept_paused && !t->is_closing)
        ws_accept_resume(t);
    ws_ip_sweep(&t->ipt, t->pol.ws_handshakes_per_ip_per_s, uv_now(t->loop));
    if (t->is_closing)
        return;
    for (uint32_t i = 0; i < t->ids.n; i++) {
        struct ws_pss *pss = conn_ids_at(&t->ids, i);
        if (pss)
            ws_tick_conn(t, pss, now);
    }
}

void transport_ws_log_init(unsigned n_threads)
{
    int lws_level = LLL_ERR | LLL_WARN;
    /* lws formats every line in one static buffer (_lws_logv): with several threads its
     * notices would race; errors and warnings are rare. */
    if (log_get_level() >= LOG_LEVEL_DEBUG && n_threads <= 1)
        lws_level |= LLL_NOTICE;
    lws_set_log_level(lws_level, on_lws_log);
}

int transport_ws_new(struct transport_ws **out, const struct transport_ws_opts *opts,
                     const struct transport_conn_cbs *cbs, void *ctx)
{
    const struct config *cfg = opts->cfg;
    struct transport_ws *t;
    int rc = 0;

    if (!opts->loop || !cfg || !opts->policy || !cbs || !cbs->on_open || !cbs->on_message ||
        !cbs->on_alive || !cbs->on_close || cfg->n_listen_ws + cfg->n_listen_wss == 0)
        return -EINVAL;
    if (cfg->n_listen_wss && (!cfg->tls_cert[0] || !cfg->tls_key[0])) {
        log_error("ws: wss listener configured without tls cert and key");
        return -EINVAL;
    }

    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->loop = opts->loop;
    t->cfg = cfg;
    t->cbs = *cbs;
    t->ctx = ctx;
    t->foreign_loops[0] = opts->loop;
    ws_arena_init(&t->arena, LWS_PRE);
    t->group = opts->group;
    ws_apply_policy(t, opts->policy);
    /* Generations in 31 bits: a WebSocket id never has TX_CONN_STREAM set. */
    conn_ids_init(&t->ids, opts->policy->max_flows ? opts->policy->max_flows : WS_DEFAULT_MAX_CONNS,
                  0, 0x7fffffffu);
    for (unsigned i = 0; i < 2 * CONFIG_MAX_LISTEN; i++)
        t->lst[i].fd = -1;

    for (unsigned i = 0; i < cfg->n_ws_origins; i++) {
        const char *o = cfg->ws_origins[i];
        if (transport_ws_origin_parse(o, strlen(o), &t->origins[t->n_origins]) < 0) {
            log_error("ws: origin \"%s\" is not scheme://host[:port]", o);
            free(t);
            return -EINVAL;
        }
        t->n_origins++;
    }
    /* Once per process, not once per worker. */
    static bool is_origin_warned;
    if (t->n_origins == 0 && !__atomic_exchange_n(&is_origin_warned, true, __ATOMIC_RELAXED))
        log_warn("ws: no ws origins configured: handshakes from any Origin are accepted");

    /* lws writes with MSG_NOSIGNAL on most paths, OpenSSL does not: a peer that resets
     * a wss connection must not kill the process. */
    signal(SIGPIPE, SIG_IGN);

    if (ws_ip_table_init(&t->ipt) < 0) {
        free(t);
        return -ENOMEM;
    }

    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    /* The TLS library's process-wide set-up once, by the first context (contexts are made
     * one worker after the other): lws keeps what it sets up in globals, and a second set-up
     * replaces them under the first context's feet. */
    static bool is_ssl_global_done;
    if (!__atomic_exchange_n(&is_ssl_global_done, true, __ATOMIC_RELAXED))
        ci.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    ci.foreign_loops = t->foreign_loops;
    ci.port = CONTEXT_PORT_NO_LISTEN;
    ci.user = t;
    ci.count_threads = 1;
    t->lws = lws_create_context(&ci);
    if (!t->lws) {
        /* Most often the evlib-uv plugin (libwebsockets-evlib-uv) is missing. */
        log_error("ws: lws_create_context failed (is libwebsockets-evlib-uv installed?)");
        ws_ip_table_free(&t->ipt);
        free(t);
        return -ENOMEM;
    }

    uv_timer_init(t->loop, &t->tick);
    uv_timer_init(t->loop, &t->stop_timer);
    t->n_handles_open = 2;
    uv_timer_start(&t->tick, on_tick, WS_TICK_MS, WS_TICK_MS);

    for (unsigned k = 0; k < 2; k++) {
        unsigned n = k ? cfg->n_listen_wss : cfg->n_listen_ws;
        for (unsigned i = 0; i < n; i++) {
            struct ws_listener *l = &t->lst[t->n_lst++];
            l->t = t;
            l->transport = k ? FLOW_WSS : FLOW_WS;
            l->index = (uint8_t)i;
            l->addr = k ? &cfg->listen_wss[i] : &cfg->listen_ws[i];
            snprintf(l->name, sizeof(l->name), "sipedge/%s%u", k ? "wss" : "ws", i);
            rc = ws_vhost(t, l);
            if (rc < 0) {
                log_error("ws: cannot create %s vhost for %s (tls cert %s, key %s)",
                          k ? "wss" : "ws", l->addr->text, cfg->tls_cert, cfg->tls_key);
                goto fail;
            }
            rc = ws_listen(t, l);
            if (rc < 0) {
                log_error("ws: cannot listen on %s %s: %s", k ? "wss" : "ws", l->addr->text,
                          strerror(-rc));
                goto fail;
            }
            log_info("ws: listening on %s://%s", k ? "wss" : "ws", l->addr->text);
        }
    }
    *out = t;
    return 0;

fail:
    /* The loop has not run yet: tear down synchronously as far as we can; lws' handles
     * and ours close on the caller's next uv_run. The object is leaked on purpose
     * because start-up failure ends the process and close callbacks still point at it. */
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (t->lst[i].fd >= 0) {
            uv_close((uv_handle_t *)&t->lst[i].poll, NULL);
            close(t->lst[i].fd);
            t->lst[i].fd = -1;
        }
    }
    uv_close((uv_handle_t *)&t->tick, NULL);
    uv_close((uv_handle_t *)&t->stop_timer, NULL);
    lws_context_destroy(t->lws);
    return rc;
}

void transport_ws_set_policy(struct transport_ws *t, const struct policy *policy)
{
    /* Keepalive timings change in place: lws reads them through the vhost's pointer. */
    ws_apply_policy(t, policy);
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct transport_ws *t = h->data;
    t->n_handles_open--;
    ws_maybe_finish(t);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct ws_listener *l = container_of((uv_poll_t *)h, struct ws_listener, poll);
    close(l->fd);
    l->fd = -1;
    on_handle_closed(h);
}

static void ws_maybe_finish(struct transport_ws *t)
{
    if (t->lws || t->n_handles_open)
        return;
    void (*cb)(void *) = t->close_cb;
    void *ctx = t->close_ctx;
    ws_arena_destroy(&t->arena);
    conn_ids_fini(&t->ids);
    ws_ip_table_free(&t->ipt);
    free(t);
    if (cb)
        cb(ctx);
}

/*
 * Shutdown runs in steps on stop_timer, each outside any lws callback:
 *   1. lws_context_destroy: every connection still open is closed (CLOSED, on_close)
 *      and lws starts closing its uv handles.
 *   2. once no handle on the loop is closing any more: lws_context_destroy again. With
 *      a foreign libuv loop this second call frees the vhosts and the context and
 *      unloads the evlib-uv plugin (lws issue #2595). Calling it while lws' close
 *      callbacks are still pending jumps into the unloaded plugin.
 *   3. our own handles close; cb runs from the last close callback.
 */
static void on_stop_timer(uv_timer_t *h)
{
    struct transport_ws *t = container_of(h, struct transport_ws, stop_timer);
    if (!t->is_lws_destroyed) {
        t->is_lws_destroyed = true;
        uv_timer_stop(&t->tick);
        t->teardown = (struct lws_uv_teardown){.ctx = t->lws};
        lws_uv_teardown_step(&t->teardown, t->loop, WS_STOP_POLLS_MAX, "ws");
        uv_timer_start(&t->stop_timer, on_stop_timer, 1, 1);
        return;
    }
    if (!lws_uv_teardown_step(&t->teardown, t->loop, WS_STOP_POLLS_MAX, "ws"))
        return;
    uv_timer_stop(&t->stop_timer);
    t->lws = NULL;
    t->tick.data = t;
    t->stop_timer.data = t;
    uv_close((uv_handle_t *)&t->tick, on_handle_closed);
    uv_close((uv_handle_t *)&t->stop_timer, on_handle_closed);
}

void ws_finish_soon(struct transport_ws *t)
{
    uv_timer_start(&t->stop_timer, on_stop_timer, 0, 0);
}

void transport_ws_close(struct transport_ws *t, void (*cb)(void *ctx), void *ctx)
{
    if (t->is_closing)
        return;
    t->is_closing = true;
    t->close_cb = cb;
    t->close_ctx = ctx;
    for (unsigned i = 0; i < t->n_lst; i++) {
        struct ws_listener *l = &t->lst[i];
        if (l->fd < 0)
            continue;
        if (l->is_polling)
            uv_poll_stop(&l->poll);
        l->is_polling = false;
        l->poll.data = t;
        uv_close((uv_handle_t *)&l->poll, on_listener_closed);
    }
    /* RFC 6455 §7.4.1: 1001, the server is going away. */
    for (uint32_t s = 0; s < t->ids.n; s++) {
        if (conn_ids_at(&t->ids, s)) {
            t->st.close_shutdown++;
            ws_schedule_close(conn_ids_at(&t->ids, s), WS_CLOSE_GOING_AWAY);
        }
    }
    uv_timer_start(&t->stop_timer, on_stop_timer, t->ids.n_used ? WS_SHUTDOWN_GRACE_MS : 0, 0);
}
