/*
 * sip_msg: start line and header index (RFC 3261 §7, §25). See include/sipedge/sip_msg.h.
 */
#include "sipedge/sip_msg.h"

#include <errno.h>
#include <string.h>

#include "sip/sip_lex_internal.h"
#include "sipedge/sip_hdr.h"

static int fail(struct sip_err *err, int rc, int status, const char *reason)
{
    if (err) {
        err->status = status;
        err->reason = reason;
    }
    return rc;
}

static inline bool ieq(const char *p, const char *lit, size_t n)
{
    return slice_case_eq(slice_make(p, n), slice_make(lit, n));
}

enum sip_hdr_id sip_hdr_id_lookup(struct slice name)
{
    const char *p = name.p;
    char c;

    if (name.len == 0)
        return SIP_HDR_OTHER;
    c = (char)(p[0] | 0x20);

#define IS(lit, id)                                                                       \
    do {                                                                                  \
        if (ieq(p, lit, sizeof(lit) - 1))                                                 \
            return id;                                                                    \
    } while (0)

    switch (name.len) {
    case 1:
        /* Compact forms, RFC 3261 §7.3.3 and §20. e and s map to headers we do not index. */
        switch (c) {
        case 'v': return SIP_HDR_VIA;
        case 'f': return SIP_HDR_FROM;
        case 't': return SIP_HDR_TO;
        case 'i': return SIP_HDR_CALL_ID;
        case 'm': return SIP_HDR_CONTACT;
        case 'k': return SIP_HDR_SUPPORTED;
        case 'l': return SIP_HDR_CONTENT_LENGTH;
        case 'c': return SIP_HDR_CONTENT_TYPE;
        default: return SIP_HDR_OTHER;
        }
    case 2:
        if (c == 't')
            IS("To", SIP_HDR_TO);
        break;
    case 3:
        if (c == 'v')
            IS("Via", SIP_HDR_VIA);
        break;
    case 4:
        switch (c) {
        case 'f': IS("From", SIP_HDR_FROM); break;
        case 'c': IS("CSeq", SIP_HDR_CSEQ); break;
        case 'p': IS("Path", SIP_HDR_PATH); break;
        case 'd': IS("Date", SIP_HDR_DATE); break;
        }
        break;
    case 5:
        if (c == 'r')
            IS("Route", SIP_HDR_ROUTE);
        break;
    case 7:
        switch (c) {
        case 'c':
            IS("Call-ID", SIP_HDR_CALL_ID);
            IS("Contact", SIP_HDR_CONTACT);
            break;
        case 'e': IS("Expires", SIP_HDR_EXPIRES); break;
        case 'r': IS("Require", SIP_HDR_REQUIRE); break;
        }
        break;
    case 9:
        if (c == 's')
            IS("Supported", SIP_HDR_SUPPORTED);
        break;
    case 10:
        if (c == 'f')
            IS("Flow-Timer", SIP_HDR_FLOW_TIMER);
        if (c == 'u')
            IS("User-Agent", SIP_HDR_USER_AGENT);
        break;
    case 11:
        if (c == 'm')
            IS("Min-Expires", SIP_HDR_MIN_EXPIRES);
        break;
    case 12:
        switch (c) {
        case 'm': IS("Max-Forwards", SIP_HDR_MAX_FORWARDS); break;
        case 'r': IS("Record-Route", SIP_HDR_RECORD_ROUTE); break;
        case 'c': IS("Content-Type", SIP_HDR_CONTENT_TYPE); break;
        }
        break;
    case 13:
        if (c == 'p')
            IS("Proxy-Require", SIP_HDR_PROXY_REQUIRE);
        if (c == 'a')
            IS("Authorization", SIP_HDR_AUTHORIZATION);
        break;
    case 14:
        if (c == 'c')
            IS("Content-Length", SIP_HDR_CONTENT_LENGTH);
        break;
    case 16:
        if (c == 'w')
            IS("WWW-Authenticate", SIP_HDR_WWW_AUTHENTICATE);
        break;
    case 18:
        if (c == 'p')
            IS("Proxy-Authenticate", SIP_HDR_PROXY_AUTHENTICATE);
        break;
    case 19:
        if (c == 'p') {
            IS("Proxy-Authorization", SIP_HDR_PROXY_AUTHORIZATION);
            IS("P-Asserted-Identity", SIP_HDR_P_ASSERTED_IDENTITY);
        }
        break;
    case 20:
        if (c == 'p')
            IS("P-Preferred-Identity", SIP_HDR_P_PREFERRED_IDENTITY);
        break;
    default:
        break;
    }
#undef IS
    return SIP_HDR_OTHER;
}

enum sip_method sip_method_lookup(struct slice method)
{
    static const struct {
        const char *name;
        enum sip_method id;
    } methods[] = {
        {"ACK", SIP_METHOD_ACK},         {"BYE", SIP_METHOD_BYE},
        {"INFO", SIP_METHOD_INFO},       {"INVITE", SIP_METHOD_INVITE},
        {"CANCEL", SIP_METHOD_CANCEL},   {"NOTIFY", SIP_METHOD_NOTIFY},
        {"UPDATE", SIP_METHOD_UPDATE},   {"PRACK", SIP_METHOD_PRACK},
        {"REFER", SIP_METHOD_REFER},     {"OPTIONS", SIP_METHOD_OPTIONS},
        {"MESSAGE", SIP_METHOD_MESSAGE}, {"PUBLISH", SIP_METHOD_PUBLISH},
        {"REGISTER", SIP_METHOD_REGISTER}, {"SUBSCRIBE", SIP_METHOD_SUBSCRIBE},
    };

    if (method.len < 3 || method.len > 9)
        return SIP_METHOD_OTHER;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        /* Method names are case-sensitive (RFC 3261 §7.1). */
        if (methods[i].name[0] == method.p[0] && strlen(methods[i].name) == method.len &&
            memcmp(methods[i].name, method.p, method.len) == 0)
            return methods[i].id;
    }
    return SIP_METHOD_OTHER;
}

const struct sip_hdr *sip_msg_hdr(const struct sip_msg *m, enum sip_hdr_id id)
{
    if ((unsigned)id >= SIP_HDR__COUNT || m->first[id] < 0)
        return NULL;
    return &m->hdrs[m->first[id]];
}

const struct sip_hdr *sip_msg_hdr_next(const struct sip_msg *m, const struct sip_hdr *h)
{
    for (size_t i = (size_t)(h - m->hdrs) + 1; i < m->n_hdrs; i++) {
        if (m->hdrs[i].id == h->id)
            return &m->hdrs[i];
    }
    return NULL;
}

static bool is_version(const char *p, size_t n)
{
    return n == 7 && memcmp(p, "SIP/2.0", 7) == 0;
}

/* True when " SIP/" occurs in [p, e): the line at least claims to be SIP. */
static bool has_sip_marker(const char *p, const char *e)
{
    while (e - p >= 5) {
        const char *sp = memchr(p, ' ', (size_t)(e - p - 4));

        if (sp == NULL)
            return false;
        if (memcmp(sp + 1, "SIP/", 4) == 0)
            return true;
        p = sp + 1;
    }
    return false;
}

/*
 * Request-Line = Method SP Request-URI SP SIP-Version CRLF (RFC 3261 §7.1): exactly one
 * SP between elements, nothing after the version. Status-Line = SIP-Version SP
 * Status-Code SP Reason-Phrase CRLF (§7.2). A line without any "SIP/" marker, or with
 * control characters, is not SIP and gets no response.
 */
static int parse_start_line(struct sip_msg *m, const char *p, const char *e, struct sip_err *err)
{
    size_t n = (size_t)(e - p);

    for (const char *q = p; q < e; q++) {
        unsigned char c = (unsigned char)*q;

        if (c < 0x20 || c == 0x7f)
            return fail(err, -EBADMSG, 0, "Not SIP");
    }
    if (n >= 4 && memcmp(p, "SIP/", 4) == 0) {
        const char *c = p + 8;

        m->is_request = false;
        if (n < 11 || !is_version(p, 7) || p[7] != ' ')
            return fail(err, -EBADMSG, 0, "Bad Status-Line");
        if (!sip_lex_is_digit(c[0]) || !sip_lex_is_digit(c[1]) || !sip_lex_is_digit(c[2]))
            return fail(err, -EBADMSG, 0, "Bad Status-Line");
        if (c + 3 < e && c[3] != ' ')
            return fail(err, -EBADMSG, 0, "Bad Status-Line");
        m->status = (uint16_t)((c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0'));
        if (m->status < 100 || m->status > 699)
            return fail(err, -EBADMSG, 0, "Bad Status-Line");
        m->reason = c + 3 < e ? slice_make(c + 4, (size_t)(e - c - 4)) : slice_make(e, 0);
        return 0;
    }

    m->is_request = true;
    if (!has_sip_marker(p, e))
        return fail(err, -EBADMSG, 0, "Not SIP");

    const char *me = sip_lex_skip_token(p, e);
    if (me == p || me >= e || *me != ' ')
        return fail(err, -EBADMSG, 400, "Bad Request-Line");
    const char *u = me + 1;
    const char *ue = memchr(u, ' ', (size_t)(e - u));
    if (ue == NULL || ue == u)
        return fail(err, -EBADMSG, 400, "Bad Request-Line");
    const char *v = ue + 1;
    if (!is_version(v, (size_t)(e - v))) {
        if (e - v == 7 && memcmp(v, "SIP/", 4) == 0)
            return fail(err, -EBADMSG, 505, "Version Not Supported");
        return fail(err, -EBADMSG, 400, "Bad Request-Line");
    }
    m->method = slice_make(p, (size_t)(me - p));
    m->method_id = sip_method_lookup(m->method);
    m->ruri = slice_make(u, (size_t)(ue - u));
    return 0;
}

static const char *const missing_reason[SIP_HDR__COUNT] = {
    [SIP_HDR_VIA] = "Missing Via",
    [SIP_HDR_FROM] = "Missing From",
    [SIP_HDR_TO] = "Missing To",
    [SIP_HDR_CALL_ID] = "Missing Call-ID",
    [SIP_HDR_CSEQ] = "Missing CSeq",
};

int sip_msg_parse(struct sip_msg *m, const char *buf, size_t len, struct sip_hdr *hdrs,
                  const struct sip_limits *limits, struct sip_err *err)
{
    static const enum sip_hdr_id mandatory[] = {SIP_HDR_VIA, SIP_HDR_FROM, SIP_HDR_TO,
                                                SIP_HDR_CALL_ID, SIP_HDR_CSEQ};
    const char *end = buf + len;
    const char *p, *lf, *ce;
    struct sip_hdr *prev = NULL;
    size_t max_hdrs;

    if (m == NULL || hdrs == NULL || limits == NULL || (buf == NULL && len > 0))
        return fail(err, -EINVAL, 0, "Invalid argument");
    memset(m, 0, sizeof(*m));
    memset(m->first, 0xff, sizeof(m->first));
    m->buf = buf;
    m->hdrs = hdrs;
    if (len > limits->max_msg_bytes || len > UINT32_MAX)
        return fail(err, -EMSGSIZE, 513, "Message Too Large");
    if (len == 0)
        return fail(err, -EBADMSG, 0, "Not SIP");
    max_hdrs = limits->max_headers < INT16_MAX ? limits->max_headers : INT16_MAX;

    lf = memchr(buf, '\n', len);
    if (lf == NULL)
        return fail(err, -EBADMSG, 0, "Not SIP");
    ce = (lf > buf && lf[-1] == '\r') ? lf - 1 : lf;
    /*
     * A request whose Request-Line is malformed can still be answered 400 (RFC 4475
     * §3.1.2): index its headers so a reply can copy them, then report the line.
     */
    struct sip_err start_err = {0, NULL};
    int start_rc = parse_start_line(m, buf, ce, &start_err);
    if (start_rc < 0 && (!m->is_request || start_err.status == 0)) {
        if (err)
            *err = start_err;
        return start_rc;
    }
    m->start_line_len = (uint32_t)(lf + 1 - buf);

    /* One pass over the header lines; a line starting with SP/HT folds (RFC 3261 §7.3.1). */
    int bad_status = m->is_request ? 400 : 0;
    for (p = lf + 1;; p = lf + 1) {
        if (p >= end) {
            /*
             * The empty line is missing at the very end of the datagram: accept it as
             * the end of the headers with an empty body (some senders strip trailing
             * CRLFs; RFC 4475 §3.1.2.15 comes that way).
             */
            m->hdr_end = (uint32_t)(p - buf);
            break;
        }
        lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            return fail(err, -EBADMSG, bad_status, "Bad header line");
        ce = (lf > p && lf[-1] == '\r') ? lf - 1 : lf;
        if (ce > p && memchr(p, '\r', (size_t)(ce - p)) != NULL)
            return fail(err, -EBADMSG, bad_status, "Bad line end");
        if (ce == p) {
            m->hdr_end = (uint32_t)(p - buf);
            p = lf + 1;
            break;
        }
        if (*p == ' ' || *p == '\t') {
            if (prev == NULL)
                return fail(err, -EBADMSG, bad_status, "Bad header line");
            prev->value = slice_trim(slice_make(prev->value.p, (size_t)(ce - prev->value.p)));
            prev->line_len = (uint32_t)(lf + 1 - (buf + prev->off));
            continue;
        }

        const char *ne = sip_lex_skip_token(p, ce);
        const char *colon = ne;
        while (colon < ce && (*colon == ' ' || *colon == '\t'))
            colon++;
        if (ne == p || colon >= ce || *colon != ':')
            return fail(err, -EBADMSG, bad_status, "Bad header line");
        if (m->n_hdrs >= max_hdrs)
            return fail(err, -E2BIG, bad_status, "Too many headers");

        struct sip_hdr *h = &hdrs[m->n_hdrs];
        const char *v = colon + 1;
        while (v < ce && (*v == ' ' || *v == '\t'))
            v++;
        h->name = slice_make(p, (size_t)(ne - p));
        h->id = sip_hdr_id_lookup(h->name);
        h->value = slice_trim(slice_make(v, (size_t)(ce - v)));
        if (h->value.len == 0)
            h->value.p = v;
        h->off = (uint32_t)(p - buf);
        h->line_len = (uint32_t)(lf + 1 - p);
        if (m->first[h->id] < 0)
            m->first[h->id] = (int16_t)m->n_hdrs;
        m->count[h->id]++;
        m->n_hdrs++;
        prev = h;
    }
    if (start_rc < 0) {
        if (err)
            *err = start_err;
        return start_rc;
    }

    /*
     * Content-Length decides where the message ends; without it (UDP) the rest of the
     * datagram is the body (RFC 3261 §18.3). Bytes after the body are ignored.
     */
    size_t left = (size_t)(end - p);
    const struct sip_hdr *cl = sip_msg_hdr(m, SIP_HDR_CONTENT_LENGTH);
    if (cl != NULL) {
        uint32_t n;

        if (slice_to_u32(cl->value, UINT32_MAX, &n) < 0)
            return fail(err, -EBADMSG, bad_status, "Bad Content-Length");
        if (n > left)
            return fail(err, -EBADMSG, bad_status, "Content-Length too large");
        m->content_length = n;
        m->has_content_length = true;
    } else {
        m->content_length = (uint32_t)left;
    }
    m->body = slice_make(p, m->content_length);
    m->len = (uint32_t)(p - buf) + m->content_length;

    /* RFC 3261 §8.1.1: the mandatory headers. */
    for (size_t i = 0; i < sizeof(mandatory) / sizeof(mandatory[0]); i++) {
        if (m->first[mandatory[i]] < 0)
            return fail(err, -EBADMSG, bad_status, missing_reason[mandatory[i]]);
    }

    uint32_t seq;
    struct slice cseq_method;
    if (sip_cseq_parse(sip_msg_hdr(m, SIP_HDR_CSEQ)->value, &seq, &cseq_method) < 0)
        return fail(err, -EBADMSG, bad_status, "Bad CSeq");
    /* RFC 3261 §8.1.1.5: the CSeq method matches the request method. */
    if (m->is_request && !slice_eq(cseq_method, m->method))
        return fail(err, -EBADMSG, bad_status, "CSeq method mismatch");
    return 0;
}
