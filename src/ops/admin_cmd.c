/*
 * admin_cmd: the operator command language (bans, ban, unban, stats) as a plain dispatcher,
 * admin_cmd_exec. It does no I/O, so the UNIX control socket (ctl_sock.c), the HTTP admin API
 * (admin_http.c) and the unit tests all drive the guard through the same code.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/admin.h"
#include "sipedge/ban.h"
#include "sipedge/jsonl.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/strbuf.h"

static int reply_error(char *out, size_t cap, const char *msg, const char *arg)
{
    char esc[256];
    jsonl_escape(esc, sizeof(esc), arg ? arg : "", arg ? strlen(arg) : 0);
    int n = snprintf(out, cap, "{\"ok\":false,\"error\":\"%s%s%s\"}\n", msg, arg ? ": " : "", esc);
    return n < 0 ? 0 : ((size_t)n >= cap ? (int)cap - 1 : n);
}

/* Parses "600", "90s", "10m", "2h", "1d" into seconds (1..31536000). */
static int parse_duration(const char *s, uint32_t *out)
{
    char *end = NULL;
    if (s[0] < '0' || s[0] > '9')
        return -EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*end != '\0' || v == 0 || v > 31536000ull / mul)
        return -EINVAL;
    *out = (uint32_t)(v * mul);
    return 0;
}

static const char *origin_name(enum ban_origin o)
{
    return o == BAN_ORIGIN_ADMIN ? "admin" : o == BAN_ORIGIN_RESTORED ? "restored" : "strikes";
}

struct list_ctx {
    struct strbuf *o;
    uint64_t now;
    unsigned n;
};

static bool on_ban_visit(void *arg, const struct ban_entry *e)
{
    struct list_ctx *c = arg;
    char addr[BAN_ADDR_MAX];
    size_t mark = strbuf_len(c->o);
    strbuf_fmt(c->o,
                      "%s{\"source\":\"%s\",\"port\":%u,\"duration_s\":%u,\"expires_in_s\":%llu,"
                      "\"step\":%u,\"origin\":\"%s\"}",
                      c->n ? "," : "", ban_key_format_addr(&e->key, addr, sizeof(addr)),
                      e->key.port, (unsigned)e->duration_s,
                      (unsigned long long)((e->expires_ms - c->now + 999) / 1000), e->level + 1u,
                      origin_name(e->origin));
    if (strbuf_overflowed(c->o)) {
        strbuf_truncate(c->o, mark); /* no half entry; the reply stays full */
        return false;
    }
    c->n++;
    return true;
}

static void cmd_bans(const struct admin_scope *sc, struct strbuf *o)
{
    struct list_ctx c = {.o = o};
    unsigned n_active = 0;
    strbuf_fmt(o, "{\"ok\":true,\"backend\":\"%s\",\"bans\":[", guard_backend_name(sc->guards[0]));
    /* Leave room for the tail so a cut list still closes. */
    size_t cap = o->cap;
    o->cap = cap > 64 ? cap - 64 : cap;
    for (unsigned i = 0; i < sc->n; i++) {
        const struct ban *b = guard_bans(sc->guards[i]);
        c.now = guard_now_ms(sc->guards[i]);
        n_active += ban_stats(b)->n_active;
        ban_foreach(b, c.now, on_ban_visit, &c);
    }
    bool cut = c.n < n_active;
    o->cap = cap;
    o->is_overflow = false; /* the tail has its room */
    strbuf_fmt(o, "],\"count\":%u%s", c.n, cut ? ",\"truncated\":true" : "");
}

static void cmd_stats(const struct admin_scope *sc, struct strbuf *o)
{
    struct guard_stats s = {0};
    struct ban_stats b = {0};
    for (unsigned i = 0; i < sc->n; i++) {
        const struct ban_stats *bs = ban_stats(guard_bans(sc->guards[i]));
        guard_stats_add(&s, guard_stats(sc->guards[i]));
        b.n_active += bs->n_active;
        b.n_history += bs->n_history;
        b.n_imposed += bs->n_imposed;
        b.n_escalated += bs->n_escalated;
        b.n_lifted += bs->n_lifted;
        b.n_expired += bs->n_expired;
        b.n_refused_full += bs->n_refused_full;
        b.n_backend_errors += bs->n_backend_errors;
        b.n_restored += bs->n_restored;
    }
    strbuf_fmt(o, "{\"ok\":true,\"backend\":\"%s\",\"guard\":{",
               guard_backend_name(sc->guards[0]));
    bool first = true;
#define STAT_OUT(name)                                                                             \
    strbuf_fmt(o, "%s\"" #name "\":%llu", first ? "" : ",", (unsigned long long)s.name);              \
    first = false;
    GUARD_STATS(STAT_OUT)
#undef STAT_OUT
    strbuf_fmt(o,
            "},\"bans\":{\"active\":%u,\"history\":%u,\"imposed\":%llu,\"escalated\":%llu,"
            "\"lifted\":%llu,\"expired\":%llu,\"refused_full\":%llu,\"backend_errors\":%llu,"
            "\"restored\":%llu}",
            b.n_active, b.n_history, (unsigned long long)b.n_imposed,
            (unsigned long long)b.n_escalated, (unsigned long long)b.n_lifted,
            (unsigned long long)b.n_expired, (unsigned long long)b.n_refused_full,
            (unsigned long long)b.n_backend_errors, (unsigned long long)b.n_restored);
}

void admin_scope_isolate(const struct admin_scope *s)
{
    if (s->isolate)
        s->isolate(s->ctx);
}

void admin_scope_release(const struct admin_scope *s)
{
    if (s->release)
        s->release(s->ctx);
}

static int exec_isolated(const struct admin_scope *sc, const char *line, char *out, size_t cap)
{
    char buf[ADMIN_LINE_MAX];
    size_t n = strcspn(line, "\r\n");
    if (n >= sizeof(buf))
        return reply_error(out, cap, "line too long", NULL);
    memcpy(buf, line, n);
    buf[n] = '\0';
    char *save = NULL;
    char *cmd = strtok_r(buf, " \t", &save);
    char *a1 = cmd ? strtok_r(NULL, " \t", &save) : NULL;
    char *a2 = a1 ? strtok_r(NULL, " \t", &save) : NULL;
    char *extra = a2 ? strtok_r(NULL, " \t", &save) : NULL;
    /* Two bytes stay free for the closing "}\n" of the reply. */
    struct strbuf o;
    strbuf_init(&o, out, cap - 2);
    if (cmd == NULL)
        return reply_error(out, cap, "empty command", NULL);
    if (strcmp(cmd, "bans") == 0 && a1 == NULL) {
        cmd_bans(sc, &o);
    } else if (strcmp(cmd, "stats") == 0 && a1 == NULL) {
        cmd_stats(sc, &o);
    } else if (strcmp(cmd, "ban") == 0 && a1 != NULL && extra == NULL) {
        struct ban_key k;
        uint32_t d = 0;
        struct ban_entry e;
        if (ban_key_parse(a1, &k) != 0)
            return reply_error(out, cap, "bad address", a1);
        if (a2 != NULL && parse_duration(a2, &d) != 0)
            return reply_error(out, cap, "bad duration (seconds or Ns/Nm/Nh/Nd)", a2);
        unsigned w = sc->owner ? sc->owner(sc->ctx, &k) : 0;
        struct guard *g = sc->guards[w < sc->n ? w : 0];
        int rc = guard_ban(g, &k, d, guard_now_ms(g), &e);
        if (rc == -EPERM)
            return reply_error(out, cap, "address is allowlisted", a1);
        if (rc == -ENOSPC)
            return reply_error(out, cap, "ban table full", NULL);
        if (rc != 0)
            return reply_error(out, cap, strerror(-rc), NULL);
        char addr[BAN_ADDR_MAX];
        strbuf_fmt(&o, "{\"ok\":true,\"source\":\"%s\",\"port\":%u,\"duration_s\":%u",
                ban_key_format_addr(&k, addr, sizeof(addr)), k.port, (unsigned)e.duration_s);
    } else if (strcmp(cmd, "unban") == 0 && a1 != NULL && a2 == NULL) {
        struct ban_key k;
        if (ban_key_parse(a1, &k) != 0)
            return reply_error(out, cap, "bad address", a1);
        /* Whichever guard holds it (its owner, unless the source moved to another worker
         * since: a restart with another number of workers). */
        int rc = -ENOENT;
        for (unsigned i = 0; i < sc->n; i++) {
            int r = guard_unban(sc->guards[i], &k, guard_now_ms(sc->guards[i]));
            if (r != -ENOENT)
                rc = rc == 0 ? 0 : r;
        }
        if (rc == -ENOENT)
            return reply_error(out, cap, "not banned", a1);
        if (rc != 0)
            return reply_error(out, cap, strerror(-rc), NULL);
        char addr[BAN_ADDR_MAX];
        strbuf_fmt(&o, "{\"ok\":true,\"source\":\"%s\",\"port\":%u",
                ban_key_format_addr(&k, addr, sizeof(addr)), k.port);
    } else {
        return reply_error(out, cap, "usage: bans | ban ADDR [DURATION] | unban ADDR | stats",
                           NULL);
    }
    size_t len = strbuf_len(&o);
    out[len++] = '}';
    out[len++] = '\n';
    out[len] = '\0';
    return (int)len;
}

int admin_cmd_exec_scope(const struct admin_scope *sc, const char *line, char *out, size_t cap)
{
    if (sc == NULL || sc->n == 0 || sc->guards == NULL || line == NULL || out == NULL ||
        cap < 128)
        return -EINVAL;
    admin_scope_isolate(sc);
    int n = exec_isolated(sc, line, out, cap);
    admin_scope_release(sc);
    return n;
}

int admin_cmd_exec(struct guard *g, const char *line, char *out, size_t cap)
{
    if (g == NULL)
        return -EINVAL;
    struct admin_scope sc = {.guards = &g, .n = 1};
    return admin_cmd_exec_scope(&sc, line, out, cap);
}
