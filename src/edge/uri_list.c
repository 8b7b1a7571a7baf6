/*
 * uri_list: the Contact URIs of a flow record, as a bounded list.
 *
 * A record keeps the URIs the client registered (or their aliases' originals) so the
 * cache can answer with them, a dead flow can de-register them and a live flow can take
 * them over. Kept as a list, each use walks the URIs directly; nothing is parsed again.
 * The URIs sit back to back in one fixed array, each NUL-terminated, so two lists compare
 * with one memcmp and a record needs no allocation beyond its own.
 */
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/sip_hdr.h"

void uri_list_clear(struct uri_list *l)
{
    l->n = 0;
    l->len = 0;
}

bool uri_list_add(struct uri_list *l, struct slice uri)
{
    if (l->n >= URI_LIST_MAX || uri.len == 0 || memchr(uri.p, '\0', uri.len) ||
        (size_t)l->len + uri.len + 1 > sizeof(l->text))
        return false;
    l->off[l->n++] = l->len;
    memcpy(l->text + l->len, uri.p, uri.len);
    l->len = (uint16_t)(l->len + uri.len);
    l->text[l->len++] = '\0';
    return true;
}

struct slice uri_list_at(const struct uri_list *l, unsigned i)
{
    const char *p = l->text + l->off[i];
    size_t end = i + 1 < l->n ? l->off[i + 1] : l->len;
    return slice_make(p, end - l->off[i] - 1);
}

bool uri_list_eq(const struct uri_list *a, const struct uri_list *b)
{
    return a->n == b->n && a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

size_t uri_list_format(const struct uri_list *l, char *out, size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    for (unsigned i = 0; i < l->n; i++) {
        struct slice u = uri_list_at(l, i);
        size_t need = (i ? 2 : 0) + u.len + 2;
        if (n + need >= cap)
            break;
        if (i) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        out[n++] = '<';
        memcpy(out + n, u.p, u.len);
        n += u.len;
        out[n++] = '>';
    }
    out[n] = '\0';
    return n;
}

int uri_list_parse(struct uri_list *l, const char *text)
{
    uri_list_clear(l);
    struct slice rest = slice_make(text, strlen(text));
    struct sip_nameaddr na;
    while (rest.len) {
        if (sip_nameaddr_parse(rest, &na, &rest) < 0 || !uri_list_add(l, na.uri))
            return -1;
    }
    return 0;
}
