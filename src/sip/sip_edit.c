/*
 * sip_edit: the stateless-proxy kit shared by the edge and the embedded registrar.
 * See include/sipedge/sip_edit.h. Every edit is applied while the message is copied,
 * so a relayed message is written once.
 */
#include "sipedge/sip_edit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>

#include "sipedge/netaddr.h"
#include "sipedge/siphash.h"

#define SIP_DEFAULT_PORT 5060

/* ---- branch ----------------------------------------------------------------------------- */

static void hash_slice(struct siphash *h, struct slice s)
{
    siphash_add(h, s.p, s.len);
    siphash_add(h, "\0", 1); /* a separator, so "ab"+"c" and "a"+"bc" differ */
}

void sip_edit_branch(const struct sip_msg *m, const struct sip_view *v, const struct sockaddr *src,
                     uint64_t k0, uint64_t k1, char out[17])
{
    struct siphash h;
    siphash_init(&h, k0, k1);
    const struct sip_via *via = &v->via;
    if (via->branch.len > 7 && slice_case_prefix(via->branch, "z9hG4bK")) {
        hash_slice(&h, via->branch);
    } else {
        /* RFC 2543 peer: what identifies the transaction, CSeq number not method. */
        hash_slice(&h, v->call_id);
        hash_slice(&h, v->from.raw);
        hash_slice(&h, v->to.raw);
        siphash_add(&h, &v->cseq, sizeof(v->cseq));
        if (m->method_id != SIP_METHOD_CANCEL && m->method_id != SIP_METHOD_ACK)
            hash_slice(&h, m->ruri);
    }
    hash_slice(&h, via->host);
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)src;
        siphash_add(&h, &in->sin_addr, sizeof(in->sin_addr));
        siphash_add(&h, &in->sin_port, sizeof(in->sin_port));
    } else if (src->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)src;
        siphash_add(&h, &in6->sin6_addr, sizeof(in6->sin6_addr));
        siphash_add(&h, &in6->sin6_port, sizeof(in6->sin6_port));
    }
    snprintf(out, 17, "%016llx", (unsigned long long)siphash_final(&h));
}

/* ---- the client's Via ------------------------------------------------------------------ */

/* True when the Via's sent-by host is the text of ip (brackets of an IPv6 host dropped). */
static bool host_is_ip(struct slice host, const char *ip)
{
    if (host.len >= 2 && host.p[0] == '[')
        host = slice_make(host.p + 1, host.len - 2);
    return slice_case_eq_str(host, ip);
}

void sip_edit_client_via(struct sip_build *b, const struct sip_via_edit *o)
{
    const struct sip_via *via = o->via;
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    if (!netaddr_ip(o->src, ip, sizeof(ip), &port) ||
        (!o->is_received_always && !via->has_rport && host_is_ip(via->host, ip))) {
        sip_build_slice(b, via->raw); /* RFC 3261 §18.2.1: nothing to add */
        return;
    }
    const char *start = via->raw.p;
    const char *pstart = via->params.raw.len ? via->params.raw.p : via->raw.p + via->raw.len;
    sip_build_mem(b, start, (size_t)(pstart - start));
    struct slice rest = via->params.raw;
    while (rest.len) {
        /* rest starts at ';' */
        size_t i = 1;
        while (i < rest.len && rest.p[i] != ';')
            i++;
        struct slice seg = slice_make(rest.p, i);
        struct slice name = slice_make(seg.p + 1, seg.len - 1);
        long eq = slice_find(name, '=');
        if (eq >= 0)
            name.len = (size_t)eq;
        name = slice_trim(name);
        if (slice_case_eq_str(name, "keep") && eq < 0 && o->keep_s) {
            /* RFC 6223 §4.2: we will take keepalives; say how often we want them. */
            sip_build_str(b, ";keep=");
            sip_build_u32(b, o->keep_s);
        } else if (!slice_case_eq_str(name, "received") && !slice_case_eq_str(name, "rport") &&
                   name.len) {
            sip_build_mem(b, seg.p, seg.len);
        }
        rest = slice_make(rest.p + i, rest.len - i);
    }
    sip_build_str(b, ";received=");
    sip_build_str(b, ip);
    if (via->has_rport) {
        sip_build_str(b, ";rport=");
        sip_build_u32(b, port);
    }
}

/* ---- the copy ------------------------------------------------------------------------- */

uint32_t sip_edit_expires(const struct sip_edit *e, uint32_t x)
{
    if (x == 0)
        return 0; /* a removal stays a removal */
    if (e->expires_floor && x < e->expires_floor)
        return e->expires_floor;
    if (e->expires_cap && x > e->expires_cap)
        return e->expires_cap;
    return x;
}

static bool edits_expires(const struct sip_edit *e)
{
    return e->expires_floor || e->expires_cap;
}

/*
 * Copies a Contact line element by element: the URI replaced when the caller's hook
 * writes a replacement, the expires parameter floored or capped. Everything else
 * (display name, q, +sip.instance, reg-id) is copied as it is.
 */
static void copy_contact(struct sip_build *b, const struct sip_msg *m, const struct sip_hdr *h,
                         const struct sip_edit *e)
{
    const char *pos = m->buf + h->off;
    struct slice rest = h->value;
    struct sip_nameaddr c;
    while (rest.len && sip_nameaddr_parse(rest, &c, &rest) == 0) {
        if (c.is_star)
            continue;
        if (e->contact_uri) {
            /* Write up to the URI, then let the hook replace it or copy it. */
            sip_build_mem(b, pos, (size_t)(c.uri.p - pos));
            if (!e->contact_uri(e->contact_ctx, b, &c))
                sip_build_slice(b, c.uri);
            pos = c.uri.p + c.uri.len;
        }
        struct slice v;
        uint32_t x;
        if (!edits_expires(e) || !sip_params_get(c.params, "expires", &v) || !v.len ||
            sip_expires_parse(v, &x) < 0)
            continue;
        sip_build_mem(b, pos, (size_t)(v.p - pos));
        sip_build_u32(b, sip_edit_expires(e, x));
        pos = v.p + v.len;
    }
    sip_build_mem(b, pos, (size_t)(m->buf + h->off + h->line_len - pos));
}

/* Copies the Route elements (from value on) the plan's filter accepts. */
static void copy_route_filtered(struct sip_build *b, const struct sip_msg *m,
                                const struct sip_hdr *h, struct slice value,
                                const struct sip_edit *e)
{
    struct slice rest = value;
    struct sip_nameaddr na;
    bool any = false;
    while (rest.len && sip_nameaddr_parse(rest, &na, &rest) == 0) {
        if (!e->route_ok(e->route_ctx, na.uri)) {
            if (e->n_route_stripped)
                (*e->n_route_stripped)++;
            continue;
        }
        if (!any)
            sip_build_mem(b, m->buf + h->off, (size_t)(h->value.p - (m->buf + h->off)));
        else
            sip_build_str(b, ", ");
        sip_build_slice(b, na.raw);
        any = true;
    }
    if (any)
        sip_build_str(b, "\r\n");
}

/* Copies a header line replacing its value by rest (the elements after the first). */
static void copy_line_rest(struct sip_build *b, const struct sip_msg *m, const struct sip_hdr *h,
                           struct slice rest)
{
    rest = slice_trim(rest);
    if (rest.len && rest.p[0] == ',')
        rest = slice_trim(slice_make(rest.p + 1, rest.len - 1));
    if (!rest.len)
        return; /* the line held one element: drop it whole */
    sip_build_mem(b, m->buf + h->off, (size_t)(h->value.p - (m->buf + h->off)));
    sip_build_slice(b, rest);
    sip_build_str(b, "\r\n");
}

static void copy_value(struct sip_build *b, const struct sip_msg *m, const struct sip_hdr *h,
                       uint32_t value)
{
    const char *line = m->buf + h->off;
    sip_build_mem(b, line, (size_t)(h->value.p - line));
    sip_build_u32(b, value);
    sip_build_str(b, "\r\n");
}

void sip_edit_copy(struct sip_build *b, const struct sip_msg *m, const struct sip_edit *e)
{
    bool edit_contacts = edits_expires(e) || e->contact_uri;
    for (uint16_t i = 0; i < m->n_hdrs; i++) {
        const struct sip_hdr *h = &m->hdrs[i];
        const char *line = m->buf + h->off;
        if (h == e->top_via) {
            const struct sip_via *via = e->via.via;
            sip_build_mem(b, line, (size_t)(via->raw.p - line));
            sip_edit_client_via(b, &e->via);
            const char *after = via->raw.p + via->raw.len;
            sip_build_mem(b, after, (size_t)(line + h->line_len - after));
            continue;
        }
        if (h == e->pop_via) {
            copy_line_rest(b, m, h, e->pop_via_rest);
            continue;
        }
        if (h->id == SIP_HDR_ROUTE && e->route_ok) {
            copy_route_filtered(b, m, h, h == e->pop_route ? e->pop_route_rest : h->value, e);
            continue;
        }
        if (h == e->pop_route) {
            copy_line_rest(b, m, h, e->pop_route_rest);
            continue;
        }
        switch (h->id) {
        case SIP_HDR_PATH:
            if (!e->strip_path)
                break;
            if (e->n_path_stripped)
                (*e->n_path_stripped)++;
            continue;
        case SIP_HDR_MAX_FORWARDS:
            if (!e->set_max_forwards)
                break;
            copy_value(b, m, h, e->max_forwards);
            continue;
        case SIP_HDR_CONTACT:
            if (!edit_contacts)
                break;
            copy_contact(b, m, h, e);
            continue;
        case SIP_HDR_EXPIRES: {
            uint32_t x;
            if (!edits_expires(e) || sip_expires_parse(h->value, &x) < 0)
                break;
            copy_value(b, m, h, sip_edit_expires(e, x));
            continue;
        }
        case SIP_HDR_P_ASSERTED_IDENTITY:
        case SIP_HDR_P_PREFERRED_IDENTITY:
            if (e->strip_identity)
                continue;
            break;
        default:
            break;
        }
        sip_build_mem(b, line, h->line_len);
    }
    /* The empty line and the body, without any trailing bytes of the datagram. */
    sip_build_mem(b, m->buf + m->hdr_end, m->len - m->hdr_end);
}

/* ---- responses: the next hop ------------------------------------------------------------ */

int sip_edit_pop_via(const struct sip_msg *m, const struct sip_view *v, struct sip_via *next,
                     struct sip_edit *e)
{
    struct slice nrest = slice_trim(v->via_rest);
    if (nrest.len && nrest.p[0] == ',')
        nrest = slice_make(nrest.p + 1, nrest.len - 1);
    if (!slice_trim(nrest).len) {
        const struct sip_hdr *nh = sip_msg_hdr_next(m, v->via_hdr);
        if (!nh)
            return -ENOENT;
        nrest = nh->value;
    }
    struct slice after;
    if (sip_via_parse(nrest, next, &after) < 0)
        return -EBADMSG;
    if (e) {
        e->pop_via = v->via_hdr;
        e->pop_via_rest = v->via_rest;
    }
    return 0;
}

int sip_via_response_addr(const struct sip_via *via, struct sockaddr_storage *out)
{
    uint32_t port = via->port;
    if (via->rport.len && slice_to_u32(via->rport, 65535, &port) < 0)
        port = via->port;
    struct slice host = via->received.len ? via->received : via->host;
    return netaddr_from_host(host, (uint16_t)port, SIP_DEFAULT_PORT, out);
}
