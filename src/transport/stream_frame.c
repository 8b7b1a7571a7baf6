/*
 * stream_frame: where one SIP message ends in a byte stream (RFC 3261 §18.3). On a
 * stream, unlike a datagram, Content-Length is mandatory and is the only way to find the
 * end of the body; the header block ends at the first empty line. Between messages a
 * client may send CRLFCRLF as a keepalive ping, which the server answers with a CRLF
 * pong (RFC 5626 §4.4.1, §3.5.1). Nothing else of SIP is looked at here: the message is
 * parsed later, as a datagram would be.
 *
 * Pure: no state between calls except what the caller hands back (scanned), no
 * allocation, and every limit is checked before the work it bounds.
 */
#define _GNU_SOURCE
#include "stream_internal.h"

#include <string.h>

static bool is_lws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool name_is(const char *p, size_t n, const char *lower)
{
    size_t m = strlen(lower);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lower[i])
            return false;
    }
    return true;
}

/* The value of one Content-Length header (v..end, folds included): digits between
 * linear white space. Returns 0 and *out, or -1 when it is not a number or over max. */
static int parse_cl(const char *v, const char *end, size_t max, size_t *out)
{
    while (v < end && is_lws(*v))
        v++;
    if (v == end || *v < '0' || *v > '9')
        return -1;
    size_t n = 0;
    while (v < end && *v >= '0' && *v <= '9') {
        n = n * 10 + (size_t)(*v - '0');
        if (n > max)
            return -1;
        v++;
    }
    while (v < end && is_lws(*v))
        v++;
    if (v != end)
        return -1;
    *out = n;
    return 0;
}

/*
 * Content-Length of the header block buf[0..hdr_len) (hdr_len includes the final
 * CRLFCRLF). Header names are only looked for at the start of a line that is not a
 * continuation (RFC 3261 §7.3.1: a line starting with SP or HT continues the one
 * before). Returns 1 and *cl, 0 when there is none, -1 when one is malformed, over max,
 * or two disagree (which one would a proxy behind us believe?).
 */
static int find_cl(const char *buf, size_t hdr_len, size_t max, size_t *cl)
{
    const char *end = buf + hdr_len - 2; /* the empty line's CRLF */
    const char *p = memmem(buf, hdr_len, "\r\n", 2);
    int found = 0;
    if (!p)
        return 0;
    p += 2; /* past the start line */
    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (!e)
            break;
        /* The header's extent: its line and every continuation line after it. */
        while (e + 2 < end && (e[2] == ' ' || e[2] == '\t')) {
            const char *n = memmem(e + 2, (size_t)(end - (e + 2)) + 2, "\r\n", 2);
            if (!n)
                break;
            e = n;
        }
        if (*p != ' ' && *p != '\t') {
            const char *colon = memchr(p, ':', (size_t)(e - p));
            if (colon) {
                const char *ne = colon;
                while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
                    ne--;
                size_t nl = (size_t)(ne - p);
                if (name_is(p, nl, "content-length") || name_is(p, nl, "l")) {
                    size_t v;
                    if (parse_cl(colon + 1, e, max, &v) < 0)
                        return -1;
                    if (found && v != *cl)
                        return -1;
                    *cl = v;
                    found = 1;
                }
            }
        }
        p = e + 2;
    }
    return found;
}

static enum stream_frame_kind frame_done(struct stream_frame_res *out, enum stream_frame_kind k,
                                         size_t len)
{
    out->kind = k;
    out->len = len;
    return k;
}

enum stream_frame_kind stream_frame(const char *buf, size_t len, size_t max, size_t scanned,
                                    struct stream_frame_res *out)
{
    memset(out, 0, sizeof(*out));
    out->is_request = true;
    if (len == 0)
        return frame_done(out, STREAM_FRAME_NEED, 0);

    /* RFC 5626 §4.4.1: keepalives come between messages only. */
    if (buf[0] == '\r' && (len < 2 || buf[1] == '\n')) {
        if (len < 3 || (len == 3 && buf[2] == '\r'))
            return frame_done(out, STREAM_FRAME_NEED, 0);
        if (len >= 4 && buf[2] == '\r' && buf[3] == '\n')
            return frame_done(out, STREAM_FRAME_PING, 4);
        return frame_done(out, STREAM_FRAME_PONG, 2);
    }

    out->is_request = !(len >= 8 && memcmp(buf, "SIP/2.0 ", 8) == 0);
    size_t lim = len < max ? len : max;
    size_t from = scanned > 3 ? scanned - 3 : 0;
    const char *hend = NULL;
    if (from < lim)
        hend = memmem(buf + from, lim - from, "\r\n\r\n", 4);
    if (!hend) {
        if (len >= max)
            return frame_done(out, STREAM_FRAME_ERR_TOO_BIG, 0);
        out->scanned = lim;
        return frame_done(out, STREAM_FRAME_NEED, 0);
    }
    size_t hdr_len = (size_t)(hend - buf) + 4;
    size_t cl = 0;
    int rc = find_cl(buf, hdr_len, max, &cl);
    if (rc < 0)
        return frame_done(out, STREAM_FRAME_ERR_BAD_CL, 0);
    if (rc == 0)
        return frame_done(out, STREAM_FRAME_ERR_NO_CL, 0);
    if (cl > max - hdr_len)
        return frame_done(out, STREAM_FRAME_ERR_TOO_BIG, 0);
    size_t total = hdr_len + cl;
    if (len < total) {
        out->scanned = hdr_len - 4;
        return frame_done(out, STREAM_FRAME_NEED, total);
    }
    return frame_done(out, STREAM_FRAME_MSG, total);
}
