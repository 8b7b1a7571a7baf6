/*
 * strbuf: the one way sipedge appends text to a bounded buffer (log lines, metrics, HTTP
 * replies), so that the overflow rule (whole pieces or nothing, a sticky flag, always
 * NUL-terminated) is written once instead of once per module.
 */
#include "sipedge/strbuf.h"

#include <stdio.h>
#include <string.h>

void strbuf_init(struct strbuf *b, char *buf, size_t cap)
{
    b->p = buf;
    b->cap = cap;
    b->len = 0;
    b->is_overflow = cap == 0;
    if (cap > 0)
        buf[0] = '\0';
}

void strbuf_mem(struct strbuf *b, const void *data, size_t n)
{
    if (b->is_overflow)
        return;
    if (n > b->cap - 1 - b->len) {
        b->is_overflow = true;
        return;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void strbuf_str(struct strbuf *b, const char *s)
{
    strbuf_mem(b, s, strlen(s));
}

void strbuf_char(struct strbuf *b, char c)
{
    strbuf_mem(b, &c, 1);
}

const char *strbuf_digits(uint64_t v, char tmp[STRBUF_DIGITS_MAX], size_t *len)
{
    size_t n = STRBUF_DIGITS_MAX;
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    *len = STRBUF_DIGITS_MAX - n;
    return tmp + n;
}

void strbuf_u64(struct strbuf *b, uint64_t v)
{
    char tmp[STRBUF_DIGITS_MAX];
    size_t n;
    const char *d = strbuf_digits(v, tmp, &n);
    strbuf_mem(b, d, n);
}

size_t strbuf_vfmt(struct strbuf *b, const char *fmt, va_list ap)
{
    if (b->is_overflow)
        return 0;
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->p + b->len, room, fmt, ap);
    if (n < 0 || (size_t)n >= room) {
        b->p[b->len] = '\0'; /* drop the cut piece */
        b->is_overflow = true;
        return n < 0 ? 0 : (size_t)n;
    }
    b->len += (size_t)n;
    return (size_t)n;
}

size_t strbuf_fmt(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = strbuf_vfmt(b, fmt, ap);
    va_end(ap);
    return n;
}

char *strbuf_tail(struct strbuf *b, size_t *room)
{
    *room = b->is_overflow ? 0 : b->cap - b->len;
    return b->p + b->len;
}

void strbuf_commit(struct strbuf *b, size_t n)
{
    if (b->is_overflow)
        return;
    if (n > b->cap - 1 - b->len) {
        b->p[b->len] = '\0';
        b->is_overflow = true;
        return;
    }
    b->len += n;
    b->p[b->len] = '\0';
}

void strbuf_truncate(struct strbuf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->p[len] = '\0';
    }
}
