/*
 * admin_http: routing, access control and JSON rendering for the HTTP admin listener.
 * The lws callback only collects the request (path, query, body) and streams the answer;
 * every reply is rendered whole into a heap buffer first, then written in chunks as lws
 * reports the socket writable.
 */
#define _GNU_SOURCE /* accept4 */
#include "sipedge/admin_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
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

#include "ops/status_page.h"
#include "sipedge/admin.h"
#include "sipedge/ban.h"
#include "sipedge/edge.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/jsonl.h"
#include "sipedge/log.h"
#include "sipedge/lws_uv.h"
#include "sipedge/netaddr.h"
#include "sipedge/strbuf.h"

#define HTTP_ACCEPT_BATCH 16
#define HTTP_REPLY_MAX (16u * 1024 * 1024)
#define HTTP_CHUNK 16384
#define HTTP_STOP_POLLS_MAX 500
#define HTTP_PATH_MAX 256

#ifndef container_of
#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))
#endif

enum http_method { HTTP_GET = 1, HTTP_POST, HTTP_DELETE, HTTP_OTHER };

/* A growing reply buffer, bounded by HTTP_REPLY_MAX. */
struct abuf {
    char *p;
    size_t len, cap;
    bool is_full;
};

/* Per connection; lws zero-fills it. One request at a time (HTTP/1.1 keep-alive). */
struct http_pss {
    enum http_method method;
    bool is_body_expected, is_too_large, is_closing;
    char path[HTTP_PATH_MAX];
    size_t body_len;
    char body[ADMIN_HTTP_BODY_MAX + 1];
    char *reply; /* rendered answer; copied behind LWS_PRE chunk by chunk when writable */
    size_t reply_len, reply_off;
};

struct admin_http {
    struct admin_http_opts o;
    char token[ADMIN_HTTP_TOKEN_MAX];
    char listen_text[64];
    void *foreign_loops[1];
    struct lws_context *lws;
    struct lws_vhost *vh;
    int fd;
    uv_poll_t poll;
    uv_timer_t stop_timer;
    unsigned n_handles_open;
    struct lws_uv_teardown teardown;
    bool is_closing, is_lws_destroyed, is_polling;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

/* ---- reply buffer ---- */

static void abuf_put(struct abuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool abuf_grow(struct abuf *b, size_t need)
{
    if (b->is_full)
        return false;
    if (b->len + need + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need + 1)
        cap *= 2;
    if (cap > HTTP_REPLY_MAX) {
        b->is_full = true;
        return false;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->is_full = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

/* Formats into the free tail; a piece that does not fit grows the buffer and is formatted
 * again (once: after the growth it fits, or the reply is full). */
static void abuf_put(struct abuf *b, const char *fmt, ...)
{
    size_t need = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!abuf_grow(b, need))
            return;
        struct strbuf sb;
        strbuf_init(&sb, b->p + b->len, b->cap - b->len);
        va_list ap;
        va_start(ap, fmt);
        need = strbuf_vfmt(&sb, fmt, ap);
        va_end(ap);
        if (!strbuf_overflowed(&sb)) {
            b->len += strbuf_len(&sb);
            return;
        }
    }
}

/* "name":"escaped" (with a leading comma unless is_first). */
static void abuf_str(struct abuf *b, bool is_first, const char *name, const char *s)
{
    char esc[2048];
    if (!s)
        s = "";
    jsonl_escape(esc, sizeof(esc), s, strlen(s));
    abuf_put(b, "%s\"%s\":\"%s\"", is_first ? "" : ",", name, esc);
}

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

/* ---- minimal strict JSON for {"ip":"...","duration":N} ---- */

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* A JSON string without escapes other than \" \\ \/ (IP addresses need none). Returns the
 * position after the closing quote, or NULL. */
static const char *json_string(const char *p, char *out, size_t cap)
{
    if (*p != '"')
        return NULL;
    p++;
    size_t n = 0;
    while (*p != '"') {
        char c = *p;
        if (c == '\0' || (unsigned char)c < 0x20)
            return NULL;
        if (c == '\\') {
            p++;
            if (*p != '"' && *p != '\\' && *p != '/')
                return NULL;
            c = *p;
        }
        if (n + 1 >= cap)
            return NULL;
        out[n++] = c;
        p++;
    }
    out[n] = '\0';
    return p + 1;
}

/* Parses the ban body. Returns 0 or -EBADMSG. */
static int http_parse_ban(const char *body, char *ip, size_t ipcap, uint32_t *duration_s)
{
    const char *p = json_ws(body);
    bool has_ip = false, has_duration = false;
    *duration_s = 0;
    if (*p++ != '{')
        return -EBADMSG;
    p = json_ws(p);
    if (*p == '}')
        return -EBADMSG;
    for (;;) {
        char key[32];
        p = json_string(p, key, sizeof(key));
        if (!p)
            return -EBADMSG;
        p = json_ws(p);
        if (*p++ != ':')
            return -EBADMSG;
        p = json_ws(p);
        if (strcmp(key, "ip") == 0 && !has_ip) {
            p = json_string(p, ip, ipcap);
            if (!p)
                return -EBADMSG;
            has_ip = true;
        } else if (strcmp(key, "duration") == 0 && !has_duration) {
            uint64_t v = 0;
            int nd = 0;
            while (*p >= '0' && *p <= '9') {
                v = v * 10 + (uint64_t)(*p++ - '0');
                if (++nd > 9)
                    return -EBADMSG;
            }
            if (nd == 0 || v == 0 || v > 10u * 365 * 86400)
                return -EBADMSG;
            *duration_s = (uint32_t)v;
            has_duration = true;
        } else {
            return -EBADMSG;
        }
        p = json_ws(p);
        if (*p == ',') {
            p = json_ws(p + 1);
            continue;
        }
        if (*p++ != '}')
            return -EBADMSG;
        break;
    }
    if (*json_ws(p) != '\0' || !has_ip)
        return -EBADMSG;
    return 0;
}

/* ---- inventory ---- */

struct inv_ctx {
    struct abuf *b;
    const char *aor, *ip;
    bool is_flat, is_first;
    uint64_t now_ms;
};

static const char *http_transport_name(uint8_t t)
{
    return t == FLOW_UDP ? "udp" : t == FLOW_WS ? "ws" : t == FLOW_WSS ? "wss" : "unknown";
}

static bool inv_reg_matches(const struct inv_ctx *c, const struct edge_reg_info *r)
{
    return !c->aor[0] || (r->aor && strstr(r->aor, c->aor));
}

static void inv_reg(struct inv_ctx *c, const struct edge_reg_info *r, bool is_first)
{
    int64_t left = r->until_ms ? ((int64_t)r->until_ms - (int64_t)c->now_ms) / 1000 : -1;
    abuf_str(c->b, is_first, "aor", r->aor);
    abuf_str(c->b, false, "contacts", r->contacts);
    abuf_str(c->b, false, "user_agent", r->user_agent);
    abuf_put(c->b, ",\"expires_in_s\":%lld,\"authed\":%s", (long long)(left < 0 ? -1 : left),
             r->is_authed ? "true" : "false");
}

static bool on_inventory_flow(void *ctx, const struct edge_flow_info *fi)
{
    struct inv_ctx *c = ctx;
    char src[LOG_ADDR_MAX], ip[LOG_ADDR_MAX];
    log_fmt_addr(fi->remote, src, sizeof(src));
    /* Address without port, brackets removed, for the ?ip= filter. */
    snprintf(ip, sizeof(ip), "%s", src[0] == '[' ? src + 1 : src);
    char *colon = src[0] == '[' ? strrchr(ip, ']') : strrchr(ip, ':');
    if (colon)
        *colon = '\0';
    if (c->ip[0] && strcmp(ip, c->ip) != 0)
        return !c->b->is_full;
    unsigned n_match = 0;
    for (unsigned i = 0; i < fi->n_regs && i < 8; i++)
        n_match += inv_reg_matches(c, &fi->regs[i]);
    if (c->aor[0] && n_match == 0)
        return !c->b->is_full;
    char head[256];
    snprintf(head, sizeof(head),
             "\"flow\":\"0x%016llx\",\"transport\":\"%s\",\"state\":%u,\"nat\":%s,",
             (unsigned long long)fi->flow_ref, http_transport_name(fi->transport),
             (unsigned)fi->state, fi->is_nat ? "true" : "false");
    long long idle = fi->last_rx_ms && c->now_ms > fi->last_rx_ms
                         ? (long long)((c->now_ms - fi->last_rx_ms) / 1000)
                         : 0;
    if (c->is_flat) {
        for (unsigned i = 0; i < fi->n_regs && i < 8; i++) {
            if (!inv_reg_matches(c, &fi->regs[i]))
                continue;
            abuf_put(c->b, "%s{%s", c->is_first ? "" : ",", head);
            abuf_str(c->b, true, "source", src);
            abuf_put(c->b, ",\"idle_s\":%lld,", idle);
            inv_reg(c, &fi->regs[i], true);
            abuf_put(c->b, "}");
            c->is_first = false;
        }
    } else {
        abuf_put(c->b, "%s{%s", c->is_first ? "" : ",", head);
        abuf_str(c->b, true, "source", src);
        abuf_put(c->b, ",\"idle_s\":%lld,\"registrations\":[", idle);
        bool is_first_reg = true;
        for (unsigned i = 0; i < fi->n_regs && i < 8; i++) {
            if (!inv_reg_matches(c, &fi->regs[i]))
                continue;
            abuf_put(c->b, "%s{", is_first_reg ? "" : ",");
            inv_reg(c, &fi->regs[i], true);
            abuf_put(c->b, "}");
            is_first_reg = false;
        }
        abuf_put(c->b, "]}");
        c->is_first = false;
    }
    return !c->b->is_full;
}

/* Value of query argument name ("aor="), URL-decoded by lws, or "" (lws leaves the last
 * fragment in its buffer when the name is absent). */
static void http_query_arg(struct lws *wsi, const char *name, char *out, size_t cap)
{
    char tmp[512];
    const char *v = lws_get_urlarg_by_name(wsi, name, tmp, sizeof(tmp));
    snprintf(out, cap, "%s", v ? v : "");
}

static void http_inventory(struct admin_http *h, struct lws *wsi, struct abuf *b, bool is_flat)
{
    char aor[256] = "", ip[64] = "";
    http_query_arg(wsi, "aor=", aor, sizeof(aor));
    http_query_arg(wsi, "ip=", ip, sizeof(ip));
    struct inv_ctx c = {.b = b, .aor = aor, .ip = ip, .is_flat = is_flat, .is_first = true,
                        .now_ms = uv_now(h->o.loop)};
    abuf_put(b, "{\"ok\":true,\"%s\":[", is_flat ? "registrations" : "flows");
    if (h->o.edge)
        edge_flows_foreach(h->o.edge, on_inventory_flow, &c);
    bool is_truncated = b->is_full;
    if (is_truncated) {
        /* Rendered too much: answer with an honest error instead of cut JSON. */
        b->is_full = false;
        b->len = 0;
        abuf_put(b, "{\"ok\":false,\"error\":\"inventory too large, use ?aor= or ?ip=\"}");
        return;
    }
    abuf_put(b, "]}");
}

/* ---- routing ---- */

static unsigned http_admin_cmd(struct admin_http *h, struct abuf *b, const char *line)
{
    if (!h->o.guard) {
        abuf_put(b, "{\"ok\":false,\"error\":\"no guard running\"}");
        return 503;
    }
    if (!abuf_grow(b, ADMIN_REPLY_MAX))
        return 500;
    int n = admin_cmd_exec(h->o.guard, line, b->p + b->len, ADMIN_REPLY_MAX);
    if (n < 0)
        return 500;
    /* Drop the trailing newline: the HTTP reply is the object alone. */
    while (n > 0 && (b->p[b->len + (size_t)n - 1] == '\n'))
        n--;
    b->len += (size_t)n;
    b->p[b->len] = '\0';
    if (strstr(b->p, "\"ok\":true"))
        return 200;
    return strstr(b->p, "not banned") ? 404 : 400;
}

static void http_stats(struct admin_http *h, struct abuf *b)
{
    struct metrics_input in = {0};
    if (h->o.snapshot)
        h->o.snapshot(h->o.ctx, &in);
    uint64_t reg[METRICS_REG_N] = {0};
    for (unsigned i = 0; in.reg && i < METRICS_REG_N; i++)
        reg[i] = in.reg->n[i];
    abuf_put(b,
             "{\"ok\":true,\"register\":{\"ok\":%llu,\"cached\":%llu,\"rejected\":%llu,"
             "\"failed\":%llu},\"flows\":{\"udp\":%u,\"ws\":%u,\"wss\":%u},\"bans_active\":%u,"
             "\"bans_total\":%llu,\"drops_total\":%llu,\"registrar_up\":%s",
             (unsigned long long)reg[0], (unsigned long long)reg[1], (unsigned long long)reg[2],
             (unsigned long long)reg[3], in.flows_udp, in.flows_ws, in.flows_wss,
             in.bans_active, (unsigned long long)(in.guard ? in.guard->bans : 0),
             (unsigned long long)metrics_drops_total(&in), in.is_registrar_up ? "true" : "false");
    if (in.latency)
        abuf_put(b, ",\"relay_latency\":{\"count\":%llu,\"sum_s\":%.6f}",
                 (unsigned long long)in.latency->n, in.latency->sum_s);
    if (h->o.guard) {
        abuf_put(b, ",\"guard\":");
        size_t mark = b->len;
        unsigned st = http_admin_cmd(h, b, "stats");
        if (st != 200) {
            b->len = mark;
            abuf_put(b, "null");
        }
    }
    abuf_put(b, "}");
}

/* Answers one complete request: fills b and returns the status; *ctype is the type. */
static unsigned http_route(struct admin_http *h, struct lws *wsi, struct http_pss *pss,
                           struct abuf *b, const char **ctype)
{
    const char *path = pss->path;
    enum http_method m = pss->method;
    *ctype = "application/json";

    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        if (m != HTTP_GET)
            goto method;
        *ctype = "text/html; charset=utf-8";
        if (abuf_grow(b, status_page_html_len)) {
            memcpy(b->p, status_page_html, status_page_html_len);
            b->len = status_page_html_len;
            b->p[b->len] = '\0';
        }
        return 200;
    }
    if (strcmp(path, "/metrics") == 0) {
        if (m != HTTP_GET)
            goto method;
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        struct metrics_input in = {0};
        if (h->o.snapshot)
            h->o.snapshot(h->o.ctx, &in);
        for (size_t cap = 65536; cap <= HTTP_REPLY_MAX / 2; cap *= 2) {
            if (!abuf_grow(b, cap))
                return 500;
            int n = metrics_render(b->p, b->cap, &in);
            if (n >= 0) {
                b->len = (size_t)n;
                return 200;
            }
        }
        return 500;
    }
    if (strcmp(path, "/api/flows") == 0 || strcmp(path, "/api/registrations") == 0) {
        if (m != HTTP_GET)
            goto method;
        http_inventory(h, wsi, b, strcmp(path, "/api/registrations") == 0);
        return strncmp(b->p, "{\"ok\":true", 10) == 0 ? 200 : 413;
    }
    if (strcmp(path, "/api/stats") == 0) {
        if (m != HTTP_GET)
            goto method;
        http_stats(h, b);
        return 200;
    }
    if (strcmp(path, "/api/reload") == 0) {
        if (m != HTTP_POST)
            goto method;
        char err[CONFIG_ERR_MAX] = "";
        int rc = h->o.reload ? h->o.reload(h->o.ctx, err, sizeof(err)) : -ENOTSUP;
        if (rc < 0) {
            abuf_put(b, "{\"ok\":false");
            abuf_str(b, false, "error", err[0] ? err : strerror(-rc));
            abuf_put(b, "}");
            return 500;
        }
        abuf_put(b, "{\"ok\":true}");
        return 200;
    }
    if (strcmp(path, "/api/bans") == 0) {
        if (m == HTTP_GET)
            return http_admin_cmd(h, b, "bans");
        if (m != HTTP_POST)
            goto method;
        char ip[64];
        uint32_t dur;
        struct ban_key k;
        pss->body[pss->body_len] = '\0';
        if (strlen(pss->body) != pss->body_len ||
            http_parse_ban(pss->body, ip, sizeof(ip), &dur) < 0) {
            abuf_put(b, "{\"ok\":false,\"error\":\"expected {\\\"ip\\\":\\\"ADDR\\\","
                        "\\\"duration\\\":SECONDS}\"}");
            return 400;
        }
        if (ban_key_parse(ip, &k) < 0) {
            abuf_put(b, "{\"ok\":false,\"error\":\"bad address\"}");
            return 400;
        }
        char line[128];
        if (dur)
            snprintf(line, sizeof(line), "ban %s %u", ip, (unsigned)dur);
        else
            snprintf(line, sizeof(line), "ban %s", ip);
        return http_admin_cmd(h, b, line);
    }
    if (strncmp(path, "/api/bans/", 10) == 0) {
        if (m != HTTP_DELETE)
            goto method;
        struct ban_key k;
        const char *ip = path + 10;
        if (strlen(ip) > 60 || ban_key_parse(ip, &k) < 0) {
            abuf_put(b, "{\"ok\":false,\"error\":\"bad address\"}");
            return 400;
        }
        char line[128];
        snprintf(line, sizeof(line), "unban %s", ip);
        return http_admin_cmd(h, b, line);
    }
    abuf_put(b, "{\"ok\":false,\"error\":\"not found\"}");
    return 404;
method:
    abuf_put(b, "{\"ok\":false,\"error\":\"method not allowed\"}");
    return 405;
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

    /* Errors and warnings only (NULL keeps whichever emitter is installed). */
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
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
