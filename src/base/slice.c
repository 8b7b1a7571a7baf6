/*
 * slice: borrowed byte views. See include/sipedge/slice.h.
 */
#include "sipedge/slice.h"

#include <errno.h>
#include <string.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static inline bool is_lws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool slice_eq(struct slice a, struct slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

bool slice_case_eq(struct slice a, struct slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    }
    return true;
}

bool slice_case_eq_str(struct slice a, const char *s)
{
    size_t i = 0;

    for (; i < a.len; i++) {
        if (s[i] == '\0' || lower((unsigned char)a.p[i]) != lower((unsigned char)s[i]))
            return false;
    }
    return s[i] == '\0';
}

bool slice_case_prefix(struct slice a, const char *prefix)
{
    for (size_t i = 0; prefix[i] != '\0'; i++) {
        if (i >= a.len || lower((unsigned char)a.p[i]) != lower((unsigned char)prefix[i]))
            return false;
    }
    return true;
}

struct slice slice_trim(struct slice s)
{
    if (s.p == NULL)
        return s;
    while (s.len > 0 && is_lws(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && is_lws(s.p[s.len - 1]))
        s.len--;
    return s;
}

int slice_to_u32(struct slice s, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    bool is_over = false;

    s = slice_trim(s);
    if (s.len == 0)
        return -EBADMSG;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];

        if (c < '0' || c > '9')
            return -EBADMSG;
        if (!is_over) {
            v = v * 10 + (uint64_t)(c - '0');
            if (v > max)
                is_over = true;
        }
    }
    if (is_over)
        return -ERANGE;
    *out = (uint32_t)v;
    return 0;
}

long slice_find(struct slice s, char c)
{
    const char *hit;

    if (s.len == 0)
        return -1;
    hit = memchr(s.p, c, s.len);
    return hit ? (long)(hit - s.p) : -1;
}

size_t slice_copy_cstr(char *dst, size_t cap, struct slice s)
{
    size_t n;

    if (cap == 0)
        return 0;
    n = s.len < cap - 1 ? s.len : cap - 1;
    if (n > 0)
        memcpy(dst, s.p, n);
    dst[n] = '\0';
    return n;
}
