/*
 * sip_check: validation before forwarding. See include/sipedge/sip_check.h.
 */
#include "sipedge/sip_check.h"

#include <errno.h>

#include "sipedge/sip_hdr.h"

static int reject(const struct sip_msg *m, struct sip_err *err, const char *reason)
{
    if (err) {
        err->status = m->is_request ? 400 : 0;
        err->reason = reason;
    }
    return -EBADMSG;
}

static bool check_vias(const struct sip_msg *m)
{
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_VIA); h; h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;

        do {
            if (sip_via_parse(rest, NULL, &rest) < 0)
                return false;
            /*
             * A missing branch is not a syntax error: RFC 3261 §17.2.3 keeps RFC 2543
             * peers working without one, and RFC 4475 §3.1.1.7 (longreq) is a valid
             * request whose Vias have none. The relay derives its own branch.
             */
        } while (rest.len > 0);
    }
    return true;
}

/* From/To: exactly one element, not '*'. */
static bool check_single_nameaddr(const struct sip_hdr *h, struct sip_nameaddr *na)
{
    struct slice rest;

    return sip_nameaddr_parse(h->value, na, &rest) == 0 && rest.len == 0 && !na->is_star;
}

static bool check_contacts(const struct sip_msg *m)
{
    uint16_t n_contacts = m->count[SIP_HDR_CONTACT];

    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_CONTACT); h;
         h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;
        bool is_first = true;

        do {
            struct sip_nameaddr na;
            struct slice v;
            uint32_t expires;

            if (sip_nameaddr_parse(rest, &na, &rest) < 0)
                return false;
            /* RFC 3261 §10.2.2: "*" only alone, in a single Contact header. */
            if (na.is_star && (!is_first || rest.len > 0 || n_contacts != 1))
                return false;
            if (sip_params_get(na.params, "expires", &v) && sip_expires_parse(v, &expires) < 0)
                return false;
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
    static const struct {
        enum sip_hdr_id id;
        const char *reason;
    } singles[] = {
        {SIP_HDR_FROM, "Duplicate From"},       {SIP_HDR_TO, "Duplicate To"},
        {SIP_HDR_CALL_ID, "Duplicate Call-ID"}, {SIP_HDR_CSEQ, "Duplicate CSeq"},
        {SIP_HDR_MAX_FORWARDS, "Duplicate Max-Forwards"},
        {SIP_HDR_CONTENT_LENGTH, "Bad Content-Length"},
    };
    struct sip_nameaddr na;
    const struct sip_hdr *h;
    uint32_t v;

    if (m == NULL || m->hdrs == NULL)
        return -EINVAL;
    if (!check_vias(m))
        return reject(m, err, "Bad Via");
    h = sip_msg_hdr(m, SIP_HDR_CSEQ);
    if (h == NULL || sip_cseq_parse(h->value, &v, NULL) < 0)
        return reject(m, err, "Bad CSeq");
    h = sip_msg_hdr(m, SIP_HDR_TO);
    if (h == NULL || !check_single_nameaddr(h, &na))
        return reject(m, err, "Bad To");
    h = sip_msg_hdr(m, SIP_HDR_FROM);
    if (h == NULL || !check_single_nameaddr(h, &na))
        return reject(m, err, "Bad From");
    if (!m->is_request)
        return 0;

    /* RFC 3261 §8.1.1.3: the UAC always adds a From tag. */
    if (!sip_params_get(na.params, "tag", NULL))
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

    if (!check_contacts(m))
        return reject(m, err, "Bad Contact");
    h = sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS);
    if (h != NULL && slice_to_u32(h->value, 255, &v) < 0)
        return reject(m, err, "Bad Max-Forwards");
    for (h = sip_msg_hdr(m, SIP_HDR_EXPIRES); h; h = sip_msg_hdr_next(m, h)) {
        if (sip_expires_parse(h->value, &v) < 0)
            return reject(m, err, "Bad Expires");
    }
    for (h = sip_msg_hdr(m, SIP_HDR_DATE); h; h = sip_msg_hdr_next(m, h)) {
        if (!ends_with_gmt(h->value))
            return reject(m, err, "Bad Date");
    }
    return 0;
}
