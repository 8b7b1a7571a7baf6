/*
 * sip_check: validation before forwarding. See include/sipedge/sip_check.h.
 */
#include "sipedge/sip_check.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "sipedge/sip_hdr.h"

static int reject(const struct sip_msg *m, struct sip_err *err, const char *reason)
{
    if (err) {
        err->status = m->is_request ? 400 : 0;
        err->reason = reason;
    }
    return -EBADMSG;
}

static bool check_vias(const struct sip_msg *m, struct sip_view *v)
{
    v->via_hdr = sip_msg_hdr(m, SIP_HDR_VIA);
    for (const struct sip_hdr *h = v->via_hdr; h; h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;
        struct sip_via via;

        do {
            if (sip_via_parse(rest, &via, &rest) < 0)
                return false;
            if (h == v->via_hdr && v->via.raw.p == NULL) {
                v->via = via;
                v->via_rest = rest;
            }
            /*
             * A missing branch is not a syntax error: RFC 3261 §17.2.3 keeps RFC 2543
             * peers working without one, and RFC 4475 §3.1.1.7 (longreq) is a valid
             * request whose Vias have none. The relay derives its own branch.
             */
        } while (rest.len > 0);
    }
    return v->via_hdr != NULL;
}

/* From/To: exactly one element, not '*'. */
static bool check_single_nameaddr(const struct sip_hdr *h, struct sip_nameaddr *na)
{
    struct slice rest;

    return sip_nameaddr_parse(h->value, na, &rest) == 0 && rest.len == 0 && !na->is_star;
}

/* Contacts into v; with is_strict (requests) every element must parse, '*' stand
 * alone and expires be in range. Responses keep the elements that parse. */
static bool check_contacts(const struct sip_msg *m, struct sip_view *v, bool is_strict)
{
    uint16_t n_contacts = m->count[SIP_HDR_CONTACT];

    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_CONTACT); h;
         h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;
        bool is_first = true;

        do {
            struct sip_nameaddr na;
            struct slice ev;
            uint32_t expires;

            if (sip_nameaddr_parse(rest, &na, &rest) < 0)
                return !is_strict;
            /* RFC 3261 §10.2.2: "*" only alone, in a single Contact header. */
            if (is_strict && na.is_star && (!is_first || rest.len > 0 || n_contacts != 1))
                return false;
            if (is_strict && sip_params_get(na.params, "expires", &ev) &&
                sip_expires_parse(ev, &expires) < 0)
                return false;
            if (na.is_star)
                v->is_star = true;
            if (v->n_contacts < SIP_VIEW_MAX_CONTACTS)
                v->contacts[v->n_contacts] = (struct sip_view_contact){.hdr = h, .na = na};
            if (v->n_contacts < UINT16_MAX)
                v->n_contacts++;
            is_first = false;
        } while (rest.len > 0);
    }
    return true;
}

static bool ends_with_gmt(struct slice v)
{
    v = slice_trim(v);
    return v.len >= 3 && slice_eq(slice_make(v.p + v.len - 3, 3), SLICE_LIT("GMT"));
}

int sip_check_msg(const struct sip_msg *m, struct sip_err *err)
{
    struct sip_view v;
    return sip_check_view(m, err, &v);
}

int sip_check_view(const struct sip_msg *m, struct sip_err *err, struct sip_view *v)
{
    static const struct {
        enum sip_hdr_id id;
        const char *reason;
    } singles[] = {
        {SIP_HDR_FROM, "Duplicate From"},       {SIP_HDR_TO, "Duplicate To"},
        {SIP_HDR_CALL_ID, "Duplicate Call-ID"}, {SIP_HDR_CSEQ, "Duplicate CSeq"},
        {SIP_HDR_MAX_FORWARDS, "Duplicate Max-Forwards"},
        {SIP_HDR_CONTENT_LENGTH, "Bad Content-Length"},
    };
    const struct sip_hdr *h;
    uint32_t x;

    if (m == NULL || m->hdrs == NULL || v == NULL)
        return -EINVAL;
    memset(v, 0, offsetof(struct sip_view, contacts));
    v->max_forwards = 70;
    if (!check_vias(m, v))
        return reject(m, err, "Bad Via");
    h = sip_msg_hdr(m, SIP_HDR_CSEQ);
    if (h == NULL || sip_cseq_parse(h->value, &v->cseq, &v->cseq_method) < 0)
        return reject(m, err, "Bad CSeq");
    h = sip_msg_hdr(m, SIP_HDR_TO);
    if (h == NULL || !check_single_nameaddr(h, &v->to))
        return reject(m, err, "Bad To");
    h = sip_msg_hdr(m, SIP_HDR_FROM);
    if (h == NULL || !check_single_nameaddr(h, &v->from))
        return reject(m, err, "Bad From");
    h = sip_msg_hdr(m, SIP_HDR_CALL_ID);
    if (h != NULL)
        v->call_id = h->value;
    if (!m->is_request) {
        check_contacts(m, v, false);
        return 0;
    }

    /* RFC 3261 §8.1.1.3: the UAC always adds a From tag. */
    if (!sip_params_get(v->from.params, "tag", NULL))
        return reject(m, err, "Missing From tag");
    for (size_t i = 0; i < sizeof(singles) / sizeof(singles[0]); i++) {
        if (m->count[singles[i].id] > 1)
            return reject(m, err, singles[i].reason);
    }

    /* RFC 3261 §19.1.1: headers are not allowed in a sip/sips Request-URI. */
    struct sip_uri uri;
    bool is_sip;
    if (sip_uri_parse(m->ruri, &uri, &is_sip) < 0 ||
        (is_sip && uri.params.raw.p + uri.params.raw.len != m->ruri.p + m->ruri.len))
        return reject(m, err, "Bad Request-URI");

    if (!check_contacts(m, v, true))
        return reject(m, err, "Bad Contact");
    h = sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS);
    if (h != NULL) {
        if (slice_to_u32(h->value, 255, &v->max_forwards) < 0)
            return reject(m, err, "Bad Max-Forwards");
        v->has_max_forwards = true;
    }
    for (h = sip_msg_hdr(m, SIP_HDR_EXPIRES); h; h = sip_msg_hdr_next(m, h)) {
        if (sip_expires_parse(h->value, &x) < 0)
            return reject(m, err, "Bad Expires");
        if (!v->has_expires) {
            v->has_expires = true;
            v->expires = x;
        }
    }
    for (h = sip_msg_hdr(m, SIP_HDR_DATE); h; h = sip_msg_hdr_next(m, h)) {
        if (!ends_with_gmt(h->value))
            return reject(m, err, "Bad Date");
    }
    /* The top Route is not checked (a proxy only reads it); kept when it parses. */
    h = sip_msg_hdr(m, SIP_HDR_ROUTE);
    if (h != NULL && sip_nameaddr_parse(h->value, &v->route, &v->route_rest) == 0)
        v->route_hdr = h;
    return 0;
}

int sip_view_fill(const struct sip_msg *m, struct sip_view *v)
{
    if (m == NULL || m->hdrs == NULL || v == NULL)
        return -EINVAL;
    memset(v, 0, offsetof(struct sip_view, contacts));
    v->max_forwards = 70;
    v->via_hdr = sip_msg_hdr(m, SIP_HDR_VIA);
    if (v->via_hdr == NULL || sip_via_parse(v->via_hdr->value, &v->via, &v->via_rest) < 0)
        return -EBADMSG;
    const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_CSEQ);
    if (h != NULL && sip_cseq_parse(h->value, &v->cseq, &v->cseq_method) < 0)
        v->cseq = 0, v->cseq_method = SLICE_NULL;
    struct slice rest;
    h = sip_msg_hdr(m, SIP_HDR_TO);
    if (h != NULL && sip_nameaddr_parse(h->value, &v->to, &rest) < 0)
        memset(&v->to, 0, sizeof(v->to));
    h = sip_msg_hdr(m, SIP_HDR_CALL_ID);
    if (h != NULL)
        v->call_id = h->value;
    check_contacts(m, v, false);
    if (!m->is_request)
        return 0; /* From is read only to derive a request's branch */
    h = sip_msg_hdr(m, SIP_HDR_FROM);
    if (h != NULL && sip_nameaddr_parse(h->value, &v->from, &rest) < 0)
        memset(&v->from, 0, sizeof(v->from));
    h = sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS);
    if (h != NULL) {
        v->has_max_forwards = true;
        if (slice_to_u32(h->value, 255, &v->max_forwards) < 0)
            v->is_max_forwards_bad = true;
    }
    h = sip_msg_hdr(m, SIP_HDR_EXPIRES);
    if (h != NULL && sip_expires_parse(h->value, &v->expires) == 0)
        v->has_expires = true;
    h = sip_msg_hdr(m, SIP_HDR_ROUTE);
    if (h != NULL && sip_nameaddr_parse(h->value, &v->route, &v->route_rest) == 0)
        v->route_hdr = h;
    return 0;
}
