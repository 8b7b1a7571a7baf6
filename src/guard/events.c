/*
 * events: JSON-lines decision log. Each line is formatted into a stack buffer and written
 * with a single write(2), so a line is never split between writers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sipedge/events.h"
#include "sipedge/strbuf.h"

struct events {
    int fd;
    bool is_owned;
    uint64_t n_written, n_failed;
    char path[512];
};

int events_open(struct events **out, const char *path)
{
    if (out == NULL || path == NULL)
        return -EINVAL;
    if (path[0] == '\0') {
        *out = NULL;
        return 0;
    }
    if (strlen(path) >= sizeof(((struct events *)0)->path))
        return -ENAMETOOLONG;
    struct events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return -ENOMEM;
    snprintf(ev->path, sizeof(ev->path), "%s", path);
    if (strcmp(path, "-") == 0) {
        ev->fd = STDOUT_FILENO;
    } else {
        ev->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (ev->fd < 0) {
            int rc = -errno;
            free(ev);
            return rc;
        }
        ev->is_owned = true;
    }
    *out = ev;
    return 0;
}

void events_close(struct events *ev)
{
    if (ev == NULL)
        return;
    if (ev->is_owned)
        close(ev->fd);
    free(ev);
}

const char *events_path(const struct events *ev)
{
    return ev == NULL ? "" : ev->path;
}

uint64_t events_n_written(const struct events *ev)
{
    return ev == NULL ? 0 : ev->n_written;
}

uint64_t events_n_failed(const struct events *ev)
{
    return ev == NULL ? 0 : ev->n_failed;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 when the bytes there are not one. */
static size_t utf8_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t min, cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

size_t events_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char tmp[8];
        size_t tn = 0, adv = 1;
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            tmp[tn++] = '\\';
            tmp[tn++] = (char)c;
        } else if (c == '\n') {
            tmp[tn++] = '\\', tmp[tn++] = 'n';
        } else if (c == '\r') {
            tmp[tn++] = '\\', tmp[tn++] = 'r';
        } else if (c == '\t') {
            tmp[tn++] = '\\', tmp[tn++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(tmp, "\\u00", 4);
            tn = 4;
            tmp[tn++] = hex[c >> 4];
            tmp[tn++] = hex[c & 15];
        } else if (c < 0x80) {
            tmp[tn++] = (char)c;
        } else {
            size_t n = utf8_len(p + i, len - i);
            if (n == 0) {
                memcpy(tmp, "\\ufffd", 6);
                tn = 6;
            } else {
                memcpy(tmp, p + i, n);
                tn = n;
                adv = n;
            }
        }
        if (o + tn + 1 > cap)
            break;
        memcpy(dst + o, tmp, tn);
        o += tn;
        i += adv;
    }
    dst[o] = '\0';
    return o;
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
    strbuf_commit(b, events_json_escape(tail, room - 3, s, len));
    strbuf_char(b, '"');
}

size_t events_format(char *buf, size_t cap, const struct events_rec *r)
{
    /* Reserve the closing brace and newline up front so the line always closes. */
    struct strbuf b;
    strbuf_init(&b, buf, cap - 2);
    uint64_t ms = r->wall_ms;
    if (ms == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    }
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
    ssize_t w;
    do {
        w = write(ev->fd, line, n);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)n) {
        ev->n_failed++;
        return w < 0 ? -errno : -EIO;
    }
    ev->n_written++;
    return 0;
}
