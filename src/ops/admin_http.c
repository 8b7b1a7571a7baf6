/*
 * admin_http: the HTTP admin listener's server half: its own lws context on the worker's
 * loop, the listening socket we bind and whose accepted sockets lws adopts, access control
 * (Host, token, loopback, Origin), request collection (path, query, body) and streaming of
 * the reply. Every reply is rendered whole by http_route (admin_http_routes.c) into a heap
 * buffer first, then written in chunks as lws reports the socket writable.
 */
#define _GNU_SOURCE /* accept4 */
#include "sipedge/admin_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <uv.h>

#include "ops/admin_http_internal.h"
#include "sipedge/log.h"
#include "sipedge/lws_uv.h"
#include "sipedge/netaddr.h"

#define HTTP_ACCEPT_BATCH 16
#define HTTP_CHUNK 16384
#define HTTP_STOP_POLLS_MAX 500

#ifndef container_of
#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))
#endif

/* ---- access control ---- */

static bool http_peer_is_loopback(struct lws *wsi)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return false;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        return ntohl(in->sin_addr.s_addr) == INADDR_LOOPBACK;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

static bool http_has_token(struct admin_http *h, struct lws *wsi)
{
    char auth[ADMIN_HTTP_TOKEN_MAX + 16];
    size_t tl = strlen(h->token);
    if (tl == 0)
        return false;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) >= (int)sizeof(auth))
        return false;
    if (lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        return false;
    if (strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != tl)
        return false;
    return CRYPTO_memcmp(auth + 7, h->token, tl) == 0;
}

/*
 * DNS rebinding: a page on evil.example whose name the attacker re-points at 127.0.0.1
 * reaches this listener from the local browser as a same-origin request, Origin and Host
 * both "evil.example:PORT". Only the names this listener really has are accepted: its
 * configured address, the socket's local address (a wildcard listener reached by one of
 * the host's addresses) and, on loopback, "localhost:PORT".
 */
static bool http_host_ok(const struct admin_http *h, struct lws *wsi)
{
    char host[256], name[INET6_ADDRSTRLEN + 16], ip[INET6_ADDRSTRLEN];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    if (n <= 0 || n >= (int)sizeof(host) ||
        lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) < 0)
        return false;
    if (strcasecmp(host, h->o.listen->text) == 0)
        return true;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return false;
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    unsigned port;
    if (!netaddr_ip(sa, ip, sizeof(ip), &port) || netaddr_format(sa, name, sizeof(name)) == 0)
        return false;
    bool is_loopback = ss.ss_family == AF_INET
                           ? (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127
                           : IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    if (strcasecmp(host, name) == 0)
        return true;
    snprintf(name, sizeof(name), "localhost:%u", port);
    return is_loopback && strcasecmp(host, name) == 0;
}

/* POST/DELETE from a browser page on another origin carry an Origin header: refuse unless
 * it names this listener (http://HOST:PORT as the browser was pointed at it). */
static bool http_origin_ok(struct lws *wsi)
{
    char origin[256], host[256];
    int ol = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (ol <= 0)
        return true;
    if (ol >= (int)sizeof(origin) ||
        lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0 ||
        lws_hdr_total_length(wsi, WSI_TOKEN_HOST) >= (int)sizeof(host) ||
        lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) < 0)
        return false;
    return strncmp(origin, "http://", 7) == 0 && strcmp(origin + 7, host) == 0;
}
/* ---- lws glue ---- */

static int http_start_reply(struct lws *wsi, struct http_pss *pss, unsigned status,
                            const char *ctype, struct abuf *b)
{
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    free(pss->reply);
    pss->reply = b->p;
    pss->reply_len = b->len;
    pss->reply_off = 0;
    b->p = NULL;
    if (lws_add_http_common_headers(wsi, status, ctype, pss->reply_len, &p, end))
        return 1;
    static const char nosniff[] = "nosniff";
    static const char csp[] = "default-src 'none'; script-src 'unsafe-inline'; "
                              "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'";
    if (lws_add_http_header_by_name(wsi, (const uint8_t *)"x-content-type-options:",
                                    (const uint8_t *)nosniff, (int)strlen(nosniff), &p, end) ||
        lws_add_http_header_by_name(wsi, (const uint8_t *)"cache-control:",
                                    (const uint8_t *)"no-store", 8, &p, end))
        return 1;
    if (strncmp(ctype, "text/html", 9) == 0 &&
        lws_add_http_header_by_name(wsi, (const uint8_t *)"content-security-policy:",
                                    (const uint8_t *)csp, (int)strlen(csp), &p, end))
        return 1;
    if (pss->is_closing &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const uint8_t *)"close", 5, &p,
                                     end))
        return 1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_reply_simple(struct lws *wsi, struct http_pss *pss, unsigned status,
                             const char *json)
{
    struct abuf b = {0};
    abuf_put(&b, "%s", json);
    int rc = http_start_reply(wsi, pss, status, "application/json", &b);
    free(b.p);
    return rc;
}

static int http_dispatch(struct admin_http *h, struct lws *wsi, struct http_pss *pss)
{
    struct abuf b = {0};
    const char *ctype;
    unsigned status = http_route(h, wsi, pss, &b, &ctype);
    if (b.is_full || !b.p) {
        free(b.p);
        b = (struct abuf){0};
        status = 500;
        ctype = "application/json";
        abuf_put(&b, "{\"ok\":false,\"error\":\"reply too large\"}");
    }
    int rc = http_start_reply(wsi, pss, status, ctype, &b);
    free(b.p);
    return rc;
}

static enum http_method http_method_of(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
        return HTTP_GET;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
        return HTTP_POST;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
        return HTTP_DELETE;
    return HTTP_OTHER;
}

static int on_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    struct http_pss *pss = user;
    struct admin_http *h = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        free(pss->reply);
        memset(pss, 0, sizeof(*pss));
        pss->method = http_method_of(wsi);
        if (len >= sizeof(pss->path)) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 414, "{\"ok\":false,\"error\":\"uri too long\"}");
        }
        memcpy(pss->path, in, len);
        pss->path[len] = '\0';
        if (!http_host_ok(h, wsi)) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 421,
                                     "{\"ok\":false,\"error\":\"Host does not name this "
                                     "listener\"}");
        }
        if (!http_peer_is_loopback(wsi) && !http_has_token(h, wsi)) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 403, "{\"ok\":false,\"error\":\"forbidden\"}");
        }
        /* Anything but GET may change state: the token is required even from loopback,
         * where every local process and browser page would otherwise be the admin. */
        if (pss->method != HTTP_GET && !h->token[0]) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 403,
                                     "{\"ok\":false,\"error\":\"state-changing calls over "
                                     "HTTP need admin.token: set it, or use the UNIX admin "
                                     "socket (sipedgectl)\"}");
        }
        if (pss->method != HTTP_GET && !http_has_token(h, wsi)) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 403, "{\"ok\":false,\"error\":\"token required\"}");
        }
        if (pss->method != HTTP_GET && !http_origin_ok(wsi)) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 403,
                                     "{\"ok\":false,\"error\":\"cross-origin request\"}");
        }
        if (pss->method == HTTP_POST || pss->method == HTTP_DELETE) {
            char cl[24];
            int n = lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
            if (n > 0) {
                char *endp;
                unsigned long long v = strtoull(cl, &endp, 10);
                if (*endp != '\0' || v > ADMIN_HTTP_BODY_MAX) {
                    pss->is_closing = true;
                    return http_reply_simple(wsi, pss, 413,
                                             "{\"ok\":false,\"error\":\"body too large\"}");
                }
                if (v > 0) {
                    pss->is_body_expected = true;
                    return 0; /* answered at LWS_CALLBACK_HTTP_BODY_COMPLETION */
                }
            } else if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
                pss->is_body_expected = true;
                return 0;
            }
        }
        return http_dispatch(h, wsi, pss);
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (!pss->is_body_expected)
            return 0;
        if (pss->body_len + len > ADMIN_HTTP_BODY_MAX) {
            pss->is_too_large = true;
            return 0;
        }
        memcpy(pss->body + pss->body_len, in, len);
        pss->body_len += len;
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!pss->is_body_expected)
            return 0;
        pss->is_body_expected = false;
        if (pss->is_too_large) {
            pss->is_closing = true;
            return http_reply_simple(wsi, pss, 413, "{\"ok\":false,\"error\":\"body too large\"}");
        }
        return http_dispatch(h, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (!pss || !pss->reply)
            return 0;
        uint8_t chunk[LWS_PRE + HTTP_CHUNK];
        size_t n = pss->reply_len - pss->reply_off;
        if (n > HTTP_CHUNK)
            n = HTTP_CHUNK;
        bool is_final = pss->reply_off + n == pss->reply_len;
        memcpy(chunk + LWS_PRE, pss->reply + pss->reply_off, n);
        if (lws_write(wsi, chunk + LWS_PRE, n, is_final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
            (int)n)
            return -1;
        pss->reply_off += n;
        if (!is_final) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        free(pss->reply);
        pss->reply = NULL;
        if (pss->is_closing)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    case LWS_CALLBACK_CLOSED_HTTP:
        /* Also comes for a connection that closed before lws gave it session data. */
        if (pss) {
            free(pss->reply);
            pss->reply = NULL;
        }
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols http_protocols[] = {
    {"http", on_http, sizeof(struct http_pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_accept(uv_poll_t *ph, int status, int events)
{
    struct admin_http *h = container_of(ph, struct admin_http, poll);
    (void)events;
    if (status < 0 || h->is_closing)
        return;
    for (int n = 0; n < HTTP_ACCEPT_BATCH; n++) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        /* On failure lws closes the fd itself. */
        lws_adopt_socket_vhost(h->vh, fd);
    }
}

static int http_listen(struct admin_http *h)
{
    int fd = lws_uv_listen(h->o.listen, 64, false, h->o.loop, &h->poll, on_accept);
    if (fd < 0)
        return fd;
    h->fd = fd;
    h->n_handles_open++;
    h->is_polling = true;
    return 0;
}

int admin_http_new(struct admin_http **out, const struct admin_http_opts *opts)
{
    if (!out || !opts || !opts->loop || !opts->listen)
        return -EINVAL;
    if (opts->token && strlen(opts->token) >= ADMIN_HTTP_TOKEN_MAX)
        return -EINVAL;
    struct admin_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->o = *opts;
    h->fd = -1;
    snprintf(h->token, sizeof(h->token), "%s", opts->token ? opts->token : "");
    h->foreign_loops[0] = opts->loop;

    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    ci.foreign_loops = h->foreign_loops;
    ci.port = CONTEXT_PORT_NO_LISTEN;
    ci.user = h;
    ci.count_threads = 1;
    ci.fd_limit_per_thread = ADMIN_HTTP_MAX_CONNS + 8;
    h->lws = lws_create_context(&ci);
    if (!h->lws) {
        log_error("admin http: lws_create_context failed (is libwebsockets-evlib-uv "
                  "installed?)");
        free(h);
        return -ENOMEM;
    }
    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof(vi));
    vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    vi.protocols = http_protocols;
    vi.vhost_name = "sipedge-admin";
    vi.keepalive_timeout = 5;
    vi.timeout_secs = 10;
    h->vh = lws_create_vhost(h->lws, &vi);
    uv_timer_init(h->o.loop, &h->stop_timer);
    h->n_handles_open++;
    int rc = h->vh ? http_listen(h) : -ENOMEM;
    if (rc < 0) {
        log_error("admin http: cannot listen on %s: %s", opts->listen->text, strerror(-rc));
        /* Start-up failure ends the process; lws' handles close on the caller's next
         * uv_run, so the object is left for them on purpose. */
        uv_close((uv_handle_t *)&h->stop_timer, NULL);
        lws_context_destroy(h->lws);
        return rc;
    }
    log_info("admin http: listening on http://%s%s", opts->listen->text,
             h->token[0] ? " (token required from non-loopback peers and for changes)"
                         : " (read-only: no admin.token)");
    *out = h;
    return 0;
}

static void on_handle_closed(uv_handle_t *hd)
{
    struct admin_http *h = hd->data;
    if (--h->n_handles_open > 0)
        return;
    void (*cb)(void *) = h->close_cb;
    void *ctx = h->close_ctx;
    free(h);
    if (cb)
        cb(ctx);
}

/* The two-step lws teardown (lws_uv.h), then our own timer closes. */
static void on_stop_timer(uv_timer_t *t)
{
    struct admin_http *h = container_of(t, struct admin_http, stop_timer);
    if (!h->is_lws_destroyed) {
        h->is_lws_destroyed = true;
        h->teardown = (struct lws_uv_teardown){.ctx = h->lws};
        lws_uv_teardown_step(&h->teardown, h->o.loop, HTTP_STOP_POLLS_MAX, "admin http");
        uv_timer_start(&h->stop_timer, on_stop_timer, 1, 1);
        return;
    }
    if (!lws_uv_teardown_step(&h->teardown, h->o.loop, HTTP_STOP_POLLS_MAX, "admin http"))
        return;
    uv_timer_stop(&h->stop_timer);
    h->lws = NULL;
    h->stop_timer.data = h;
    uv_close((uv_handle_t *)&h->stop_timer, on_handle_closed);
}

void admin_http_close(struct admin_http *h, void (*cb)(void *ctx), void *ctx)
{
    if (!h || h->is_closing)
        return;
    h->is_closing = true;
    h->close_cb = cb;
    h->close_ctx = ctx;
    if (h->fd >= 0) {
        if (h->is_polling)
            uv_poll_stop(&h->poll);
        h->poll.data = h;
        uv_close((uv_handle_t *)&h->poll, on_handle_closed);
        close(h->fd);
        h->fd = -1;
    }
    uv_timer_start(&h->stop_timer, on_stop_timer, 1, 0);
}
