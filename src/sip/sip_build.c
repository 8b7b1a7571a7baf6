/*
 * sip_build: bounded output buffer with a sticky error. See include/sipedge/sip_build.h.
 */
#include "sipedge/sip_build.h"
#include "sipedge/strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void sip_build_init(struct sip_build *b, char *buf, size_t cap)
{
    b->buf = buf;
    b->cap = buf ? cap : 0;
    b->len = 0;
    b->err = 0;
}

void sip_build_mem(struct sip_build *b, const void *p, size_t n)
{
    if (b->err != 0 || n == 0)
        return;
    if (n > b->cap - b->len) {
        b->err = -ENOSPC;
        return;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

void sip_build_str(struct sip_build *b, const char *s)
{
    sip_build_mem(b, s, strlen(s));
}

void sip_build_slice(struct sip_build *b, struct slice s)
{
    sip_build_mem(b, s.p, s.len);
}

void sip_build_fmt(struct sip_build *b, const char *fmt, ...)
{
    va_list ap;
    size_t room;
    int n;

    if (b->err != 0)
        return;
    room = b->cap - b->len;
    va_start(ap, fmt);
    n = vsnprintf(room ? b->buf + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = -EINVAL;
        return;
    }
    /* vsnprintf needs room for its NUL, which is not part of the message. */
    if ((size_t)n >= room) {
        b->err = -ENOSPC;
        return;
    }
    b->len += (size_t)n;
}

void sip_build_u32(struct sip_build *b, uint32_t v)
{
    char tmp[STRBUF_DIGITS_MAX];
    size_t n;
    const char *d = strbuf_digits(v, tmp, &n);
    sip_build_mem(b, d, n);
}

int sip_build_finish(struct sip_build *b, size_t *len)
{
    if (b->err != 0)
        return b->err;
    if (len)
        *len = b->len;
    return 0;
}
