/*
 * sip_reply: stateless responses (RFC 3261 §8.2.6, §18.2.1; RFC 3581 §4).
 * See include/sipedge/sip_reply.h.
 */
#include "sipedge/sip_reply.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "sip/sip_lex_internal.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_hdr.h"

#define SIP_REPLY_DEFAULT_TAG "sipedge"

/*
 * Finds a bare "rport" flag among the Via parameters and returns the position right
 * after it, where "=PORT" belongs (RFC 3581 §4). NULL when there is none.
 */
static const char *find_bare_rport(struct slice raw)
{
    const char *p = raw.p;
    const char *end = raw.p + raw.len;

    while (p < end) {
        if (*p == '"') {
            const char *q = sip_lex_skip_quoted(p, end);
            p = q ? q : end;
            continue;
        }
        if (*p++ != ';')
            continue;
        const char *a = sip_lex_skip_lws(p, end);
        const char *e = sip_lex_skip_token(a, end);
        if (!slice_case_eq_str(slice_make(a, (size_t)(e - a)), "rport"))
            continue;
        const char *n = sip_lex_skip_lws(e, end);
        if (n >= end || *n == ';')
            return e;
    }
    return NULL;
}

static int write_top_via(struct sip_build *b, const struct sip_hdr *h,
                         const struct sip_reply_opts *opts)
{
    struct sip_via via;
    struct slice rest;
    const char *after;

    if (sip_via_parse(h->value, &via, &rest) < 0) {
        /* A 400 for a malformed Via still goes back to the packet's source; echo the
         * line as received so the client can match it (RFC 3261 §8.2.6.2). */
        sip_build_str(b, "Via: ");
        sip_build_slice(b, h->value);
        sip_build_str(b, "\r\n");
        return 0;
    }
    sip_build_str(b, "Via: ");
    sip_build_mem(b, h->value.p, (size_t)(via.raw.p - h->value.p));
    after = opts && opts->rport ? find_bare_rport(via.raw) : NULL;
    if (after != NULL) {
        sip_build_mem(b, via.raw.p, (size_t)(after - via.raw.p));
        sip_build_str(b, "=");
        sip_build_u32(b, opts->rport);
        sip_build_mem(b, after, (size_t)(via.raw.p + via.raw.len - after));
    } else {
        sip_build_slice(b, via.raw);
    }
    /* RFC 3261 §18.2.1 and RFC 3581 §4: the source address the request came from. */
    if (opts && opts->received) {
        sip_build_str(b, ";received=");
        sip_build_str(b, opts->received);
    }
    if (rest.len > 0) {
        sip_build_str(b, ",");
        sip_build_slice(b, rest);
    }
    sip_build_str(b, "\r\n");
    return 0;
}

int sip_reply_build(const struct sip_msg *req, int status, const char *reason,
                    const struct sip_reply_opts *opts, char *buf, size_t cap)
{
    static const struct {
        enum sip_hdr_id id;
        const char *name;
    } copied[] = {
        {SIP_HDR_FROM, "From: "}, {SIP_HDR_CALL_ID, "Call-ID: "}, {SIP_HDR_CSEQ, "CSeq: "}};
    struct sip_build b;
    const struct sip_hdr *h;
    struct sip_nameaddr to;
    size_t len;
    int rc;

    if (req == NULL || buf == NULL || reason == NULL || status < 100 || status > 699)
        return -EINVAL;
    if (!req->is_request || req->hdrs == NULL)
        return -EBADMSG;
    /*
     * The Via is what lets the client match the answer; the rest is copied when present.
     * A request missing From, To or Call-ID still gets its 400 (RFC 4475 §3.3.1).
     */
    if (sip_msg_hdr(req, SIP_HDR_VIA) == NULL)
        return -EBADMSG;
    h = sip_msg_hdr(req, SIP_HDR_TO);
    bool to_ok = h && sip_nameaddr_parse(h->value, &to, NULL) == 0;

    sip_build_init(&b, buf, cap);
    sip_build_fmt(&b, "SIP/2.0 %d %s\r\n", status, reason);
    for (h = sip_msg_hdr(req, SIP_HDR_VIA); h != NULL; h = sip_msg_hdr_next(req, h)) {
        if (h == sip_msg_hdr(req, SIP_HDR_VIA)) {
            rc = write_top_via(&b, h, opts);
            if (rc < 0)
                return rc;
        } else {
            sip_build_str(&b, "Via: ");
            sip_build_slice(&b, h->value);
            sip_build_str(&b, "\r\n");
        }
    }
    if (sip_msg_hdr(req, SIP_HDR_FROM)) {
        sip_build_str(&b, copied[0].name);
        sip_build_slice(&b, sip_msg_hdr(req, SIP_HDR_FROM)->value);
        sip_build_str(&b, "\r\n");
    }
    if (sip_msg_hdr(req, SIP_HDR_TO)) {
        sip_build_str(&b, "To: ");
        sip_build_slice(&b, sip_msg_hdr(req, SIP_HDR_TO)->value);
        /* RFC 3261 §8.2.6.2: add a To tag unless one is there (optional for 100 Trying). */
        if (status != 100 && to_ok && !sip_params_get(to.params, "tag", NULL)) {
            sip_build_str(&b, ";tag=");
            sip_build_str(&b, opts && opts->to_tag ? opts->to_tag : SIP_REPLY_DEFAULT_TAG);
        }
        sip_build_str(&b, "\r\n");
    }
    for (size_t i = 1; i < sizeof(copied) / sizeof(copied[0]); i++) {
        if (sip_msg_hdr(req, copied[i].id) == NULL)
            continue;
        sip_build_str(&b, copied[i].name);
        sip_build_slice(&b, sip_msg_hdr(req, copied[i].id)->value);
        sip_build_str(&b, "\r\n");
    }
    if (opts && opts->extra)
        sip_build_str(&b, opts->extra);
    sip_build_str(&b, "Content-Length: 0\r\n\r\n");
    rc = sip_build_finish(&b, &len);
    if (rc < 0)
        return rc;
    if (len > INT_MAX)
        return -ENOSPC;
    return (int)len;
}
