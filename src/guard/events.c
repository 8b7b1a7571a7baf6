/*
 * events: JSON-lines decision log. Each line is formatted into a stack buffer and handed
 * whole to the log's JSON-lines writer (sipedge/jsonl.h), which writes it off the loop's
 * thread, so a line is never split between writers and a slow disk never stalls a verdict.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sipedge/events.h"
#include "sipedge/jsonl.h"
#include "sipedge/strbuf.h"
#include "sipedge/wallclock.h"

struct events {
    struct jsonl *w;
};

int events_open(struct events **out, const char *path)
{
    if (out == NULL || path == NULL)
        return -EINVAL;
    if (path[0] == '\0') {
        *out = NULL;
        return 0;
    }
    struct events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return -ENOMEM;
    int rc = jsonl_open(&ev->w, path, 0);
    if (rc < 0) {
        free(ev);
        return rc;
    }
    *out = ev;
    return 0;
}

void events_close(struct events *ev)
{
    if (ev == NULL)
        return;
    jsonl_close(ev->w);
    free(ev);
}

const char *events_path(const struct events *ev)
{
    return ev == NULL ? "" : jsonl_path(ev->w);
}

static struct jsonl_stats events_stats(const struct events *ev)
{
    struct jsonl_stats st = {0};
    if (ev != NULL)
        jsonl_stats(ev->w, &st);
    return st;
}

uint64_t events_n_written(const struct events *ev)
{
    struct jsonl_stats st = events_stats(ev);
    return st.queued - st.failed;
}

uint64_t events_n_failed(const struct events *ev)
{
    return events_stats(ev).failed;
}

uint64_t events_n_dropped(const struct events *ev)
{
    return events_stats(ev).dropped;
}

void events_flush(struct events *ev)
{
    if (ev != NULL)
        jsonl_flush(ev->w);
}

size_t events_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    return jsonl_escape(dst, cap, s, len);
}

/* Appends ,"key":"escaped" keeping room for the closing quote; a key that does not fit
 * with at least one byte of value is left out. */
static void put_str(struct strbuf *b, const char *key, const char *s, size_t len)
{
    size_t start = strbuf_len(b);
    strbuf_fmt(b, ",\"%s\":\"", key);
    size_t room;
    char *tail = strbuf_tail(b, &room);
    if (strbuf_overflowed(b))
        return;
    if (room < 4) {
        strbuf_truncate(b, start);
        return;
    }
    strbuf_commit(b, jsonl_escape(tail, room - 3, s, len));
    strbuf_char(b, '"');
}

size_t events_format(char *buf, size_t cap, const struct events_rec *r)
{
    /* Reserve the closing brace and newline up front so the line always closes. */
    struct strbuf b;
    strbuf_init(&b, buf, cap - 2);
    uint64_t ms = r->wall_ms ? r->wall_ms : wallclock_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strbuf_fmt(&b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\"", tm.tm_year + 1900,
               tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
    if (strbuf_overflowed(&b)) {
        strbuf_init(&b, buf, cap - 2);
        strbuf_str(&b, "{\"ts\":\"\"");
    }
    const char *event = r->event != NULL ? r->event : "unknown";
    put_str(&b, "event", event, strlen(event));
    if (r->source != NULL)
        put_str(&b, "source", r->source, strlen(r->source));
    if (r->port != 0)
        strbuf_fmt(&b, ",\"port\":%u", r->port);
    if (r->reason != NULL)
        put_str(&b, "reason", r->reason, strlen(r->reason));
    if (r->strikes >= 0)
        strbuf_fmt(&b, ",\"strikes\":%lld", (long long)r->strikes);
    if (r->duration_s >= 0)
        strbuf_fmt(&b, ",\"duration_s\":%lld", (long long)r->duration_s);
    if (r->aor != NULL) {
        size_t n = r->aor_len != 0 ? r->aor_len : strlen(r->aor);
        put_str(&b, "aor", r->aor, n);
    }
    if (r->detail != NULL) {
        size_t n = r->detail_len != 0 ? r->detail_len : strlen(r->detail);
        put_str(&b, "detail", r->detail, n);
    }
    size_t o = strbuf_len(&b);
    buf[o++] = '}';
    buf[o++] = '\n';
    buf[o] = '\0';
    return o;
}

int events_emit(struct events *ev, const struct events_rec *r)
{
    if (ev == NULL)
        return 0;
    char line[EVENTS_LINE_MAX];
    size_t n = events_format(line, sizeof(line), r);
    return jsonl_put(ev->w, line, n);
}
