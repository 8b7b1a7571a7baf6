/*
 * admin_http_routes: the HTTP admin API's answers. http_route takes one complete request
 * (method, path, query, body) collected by the server half (admin_http.c) and renders the
 * whole reply into a growing buffer: the status page, /metrics, the inventory, stats, and
 * the ban and reload calls (through admin_cmd_exec, as the UNIX admin socket does). Kept
 * apart from the server so that the API can grow without touching connection handling.
 */
#include "ops/admin_http_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/status_page.h"
#include "sipedge/admin.h"
#include "sipedge/ban.h"
#include "sipedge/edge.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/jsonl.h"
#include "sipedge/log.h"
#include "sipedge/strbuf.h"

/* ---- reply buffer ---- */

bool abuf_grow(struct abuf *b, size_t need)
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
void abuf_put(struct abuf *b, const char *fmt, ...)
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

void abuf_str(struct abuf *b, bool is_first, const char *name, const char *s)
{
    char esc[2048];
    if (!s)
        s = "";
    jsonl_escape(esc, sizeof(esc), s, strlen(s));
    abuf_put(b, "%s\"%s\":\"%s\"", is_first ? "" : ",", name, esc);
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
             (unsigned long long)fi->flow_ref, flow_transport_name(fi->transport),
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
    struct inv_ctx c = {.b = b,
                        .aor = aor,
                        .ip = ip,
                        .is_flat = is_flat,
                        .is_first = true,
                        .now_ms = uv_now(h->o.loop)};
    abuf_put(b, "{\"ok\":true,\"%s\":[", is_flat ? "registrations" : "flows");
    const struct admin_scope *sc = h->o.scope;
    if (sc && sc->edges) {
        admin_scope_isolate(sc);
        for (unsigned i = 0; i < sc->n; i++)
            edge_flows_foreach(sc->edges[i], on_inventory_flow, &c);
        admin_scope_release(sc);
    }
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
    if (!h->o.scope) {
        abuf_put(b, "{\"ok\":false,\"error\":\"no guard running\"}");
        return 503;
    }
    if (!abuf_grow(b, ADMIN_REPLY_MAX))
        return 500;
    int n = admin_cmd_exec_scope(h->o.scope, line, b->p + b->len, ADMIN_REPLY_MAX);
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
             "\"failed\":%llu},\"flows\":{\"udp\":%u,\"ws\":%u,\"wss\":%u,\"tcp\":%u,\"tls\":%u},\"bans_active\":%u,"
             "\"bans_total\":%llu,\"drops_total\":%llu,\"registrar_up\":%s",
             (unsigned long long)reg[0], (unsigned long long)reg[1], (unsigned long long)reg[2],
             (unsigned long long)reg[3], in.flows[FLOW_UDP], in.flows[FLOW_WS], in.flows[FLOW_WSS], in.flows[FLOW_TCP],
             in.flows[FLOW_TLS], in.bans_active,
             (unsigned long long)(in.guard ? in.guard->bans : 0),
             (unsigned long long)metrics_drops_total(&in), in.is_registrar_up ? "true" : "false");
    if (in.latency)
        abuf_put(b, ",\"relay_latency\":{\"count\":%llu,\"sum_s\":%.6f}",
                 (unsigned long long)in.latency->n, in.latency->sum_s);
    if (h->o.scope) {
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

unsigned http_route(struct admin_http *h, struct lws *wsi, struct http_pss *pss, struct abuf *b,
                    const char **ctype)
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
