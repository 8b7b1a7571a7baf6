/*
 * sip_hdr: header body parsers (RFC 3261 §19.1, §20, §25.1). See include/sipedge/sip_hdr.h.
 *
 * Every parser works on [p, end) inside the caller's slice and treats LWS, including
 * the CRLF of a folded line, as a separator where the grammar allows SWS/LWS.
 */
#include "sipedge/sip_hdr.h"

#include <errno.h>
#include <string.h>

#include "sip/sip_lex_internal.h"

static inline const char *end_of(struct slice s)
{
    return s.len > 0 ? s.p + s.len : s.p;
}

static inline struct slice span(const char *a, const char *b)
{
    return slice_make(a, (size_t)(b - a));
}

/*
 * Splits raw parameters on ';' outside quoted strings and calls back per parameter.
 * Used on spans that were validated already, so it is tolerant.
 */
bool sip_params_get(struct sip_params params, const char *name, struct slice *value)
{
    const char *p = params.raw.p;
    const char *end = end_of(params.raw);

    if (p == NULL)
        return false;
    while (p < end) {
        if (*p != ';') {
            p++;
            continue;
        }
        const char *a = ++p;
        while (p < end && *p != ';') {
            if (*p == '"') {
                const char *q = sip_lex_skip_quoted(p, end);
                p = q ? q : end;
            } else {
                p++;
            }
        }
        struct slice item = span(a, p);
        long eq = slice_find(item, '=');
        struct slice pname = slice_trim(eq < 0 ? item : slice_make(item.p, (size_t)eq));
        if (!slice_case_eq_str(pname, name))
            continue;
        if (value) {
            if (eq < 0) {
                *value = slice_make(pname.p + pname.len, 0);
            } else {
                *value = slice_trim(slice_make(item.p + eq + 1, item.len - (size_t)eq - 1));
            }
        }
        return true;
    }
    return false;
}

/*
 * generic-param = token [ EQUAL gen-value ], gen-value = token / host / quoted-string
 * (RFC 3261 §25.1). Parses ";p;q=v" with LWS allowed around ';' and '='. Returns the
 * position after the last parameter, or NULL on a syntax error (empty name, empty value).
 */
static const char *scan_params(const char *p, const char *end)
{
    for (;;) {
        const char *q = sip_lex_skip_lws(p, end);

        if (q >= end || *q != ';')
            return p;
        q = sip_lex_skip_lws(q + 1, end);
        const char *ne = sip_lex_skip_token(q, end);
        if (ne == q)
            return NULL;
        p = ne;
        q = sip_lex_skip_lws(ne, end);
        if (q < end && *q == '=') {
            q = sip_lex_skip_lws(q + 1, end);
            if (q < end && *q == '"') {
                p = sip_lex_skip_quoted(q, end);
                if (p == NULL)
                    return NULL;
            } else {
                const char *ve = q;
                while (ve < end && (sip_lex_is_token((unsigned char)*ve) || *ve == ':' ||
                                    *ve == '[' || *ve == ']'))
                    ve++;
                if (ve == q)
                    return NULL;
                p = ve;
            }
        }
    }
}

/* host = hostname / IPv4address / IPv6reference (RFC 3261 §25.1). */
static const char *scan_host(const char *p, const char *end)
{
    const char *q = p;

    if (p < end && *p == '[') {
        for (q = p + 1; q < end && *q != ']'; q++) {
            unsigned char c = (unsigned char)*q;
            if (!(sip_lex_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                  c == ':' || c == '.'))
                return NULL;
        }
        if (q >= end || q - p < 3)
            return NULL;
        return q + 1;
    }
    while (q < end && (sip_lex_is_alpha((unsigned char)*q) || sip_lex_is_digit((unsigned char)*q) ||
                       *q == '-' || *q == '.' || *q == '_'))
        q++;
    return q == p ? NULL : q;
}

static const char *scan_port(const char *p, const char *end, uint16_t *port)
{
    uint32_t v = 0;
    const char *q = p;

    while (q < end && sip_lex_is_digit((unsigned char)*q) && q - p < 6) {
        v = v * 10 + (uint32_t)(*q - '0');
        q++;
    }
    if (q == p || v == 0 || v > 65535 || (q < end && sip_lex_is_digit((unsigned char)*q)))
        return NULL;
    *port = (uint16_t)v;
    return q;
}

int sip_uri_parse(struct slice s, struct sip_uri *out, bool *is_sip)
{
    const char *p = s.p;
    const char *end = end_of(s);
    struct sip_uri u = {0};
    const char *q;

    if (s.len == 0 || p == NULL)
        return -EBADMSG;
    /* No whitespace, controls or angle brackets anywhere in a URI (RFC 3261 §19.1.1). */
    for (q = p; q < end; q++) {
        unsigned char c = (unsigned char)*q;
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return -EBADMSG;
    }
    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    if (!sip_lex_is_alpha((unsigned char)*p))
        return -EBADMSG;
    for (q = p + 1; q < end && *q != ':'; q++) {
        unsigned char c = (unsigned char)*q;
        if (!(sip_lex_is_alpha(c) || sip_lex_is_digit(c) || c == '+' || c == '-' || c == '.'))
            return -EBADMSG;
    }
    if (q >= end || q + 1 >= end)
        return -EBADMSG;
    u.scheme = span(p, q);
    p = q + 1;
    if (!slice_case_eq_str(u.scheme, "sip") && !slice_case_eq_str(u.scheme, "sips")) {
        if (is_sip)
            *is_sip = false;
        if (out)
            *out = u;
        return 0;
    }

    /* userinfo ends at the first '@'; user-unreserved allows ';', '?', ',' and '/'. */
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        u.user = span(p, colon ? colon : at);
        if (u.user.len == 0)
            return -EBADMSG;
        p = at + 1;
    } else {
        u.user = slice_make(p, 0);
    }
    q = scan_host(p, end);
    if (q == NULL)
        return -EBADMSG;
    u.host = span(p, q);
    p = q;
    if (p < end && *p == ':') {
        p = scan_port(p + 1, end, &u.port);
        if (p == NULL)
            return -EBADMSG;
    }
    if (p < end && *p != ';' && *p != '?')
        return -EBADMSG;
    q = memchr(p, '?', (size_t)(end - p));
    u.params.raw = span(p, q ? q : end);
    for (const char *r = p; r < u.params.raw.p + u.params.raw.len; r++) {
        if (*r == ';' && (r + 1 == end || r[1] == ';' || r[1] == '?' || r[1] == '='))
            return -EBADMSG;
    }
    u.headers = q ? span(q + 1, end) : slice_make(end, 0);
    if (is_sip)
        *is_sip = true;
    if (out)
        *out = u;
    return 0;
}

/* Skips LWS, expects c, skips LWS (SLASH, COLON... of RFC 3261 §25.1). */
static const char *expect_sep(const char *p, const char *end, char c)
{
    p = sip_lex_skip_lws(p, end);
    if (p >= end || *p != c)
        return NULL;
    return sip_lex_skip_lws(p + 1, end);
}

/* Ends an element: optional LWS, then ',' (rest follows) or the end of the value. */
static int end_element(const char *p, const char *end, struct slice *rest)
{
    p = sip_lex_skip_lws(p, end);
    if (p < end && *p != ',')
        return -EBADMSG;
    if (p < end) {
        p = sip_lex_skip_lws(p + 1, end);
        if (p >= end)
            return -EBADMSG; /* trailing empty element */
    }
    if (rest)
        *rest = span(p, end);
    return 0;
}

/*
 * via-parm = sent-protocol LWS sent-by *( SEMI via-params ), sent-protocol =
 * protocol-name SLASH protocol-version SLASH transport (RFC 3261 §20.42, §25.1).
 */
int sip_via_parse(struct slice s, struct sip_via *out, struct slice *rest)
{
    const char *end = end_of(s);
    const char *p, *q, *start;
    struct sip_via v = {0};

    if (s.p == NULL)
        return -EBADMSG;
    p = start = sip_lex_skip_lws(s.p, end);
    q = sip_lex_skip_token(p, end);
    if (!slice_case_eq_str(span(p, q), "SIP"))
        return -EBADMSG;
    p = expect_sep(q, end, '/');
    if (p == NULL)
        return -EBADMSG;
    q = sip_lex_skip_token(p, end);
    if (!slice_eq(span(p, q), SLICE_LIT("2.0")))
        return -EBADMSG;
    p = expect_sep(q, end, '/');
    if (p == NULL)
        return -EBADMSG;
    q = sip_lex_skip_token(p, end);
    if (q == p)
        return -EBADMSG;
    v.transport = span(p, q);
    p = sip_lex_skip_lws(q, end);
    if (p == q)
        return -EBADMSG;
    q = scan_host(p, end);
    if (q == NULL)
        return -EBADMSG;
    v.host = span(p, q);
    p = sip_lex_skip_lws(q, end);
    if (p < end && *p == ':') {
        p = scan_port(sip_lex_skip_lws(p + 1, end), end, &v.port);
        if (p == NULL)
            return -EBADMSG;
    } else {
        p = q;
    }
    q = scan_params(p, end);
    if (q == NULL)
        return -EBADMSG;
    v.params.raw = slice_trim(span(p, q));
    v.raw = span(start, q);
    if (end_element(q, end, rest) < 0)
        return -EBADMSG;
    sip_params_get(v.params, "branch", &v.branch);
    v.has_rport = sip_params_get(v.params, "rport", &v.rport);
    sip_params_get(v.params, "received", &v.received);
    if (out)
        *out = v;
    return 0;
}

/*
 * name-addr = [ display-name ] LAQUOT addr-spec RAQUOT, display-name = *(token LWS) /
 * quoted-string; a bare addr-spec ends at ';' and may not hold ',', '?' or LWS
 * (RFC 3261 §20.10, §25.1).
 */
int sip_nameaddr_parse(struct slice s, struct sip_nameaddr *out, struct slice *rest)
{
    const char *end = end_of(s);
    const char *p, *q, *start;
    struct sip_nameaddr na = {0};

    if (s.p == NULL)
        return -EBADMSG;
    p = start = sip_lex_skip_lws(s.p, end);
    if (p >= end)
        return -EBADMSG;
    if (*p == '*') {
        q = sip_lex_skip_lws(p + 1, end);
        if (q >= end || *q == ',') {
            na.is_star = true;
            na.raw = span(p, p + 1);
            if (end_element(q, end, rest) < 0)
                return -EBADMSG;
            if (out)
                *out = na;
            return 0;
        }
    }

    bool is_name_addr = false;
    if (*p == '"') {
        q = sip_lex_skip_quoted(p, end);
        if (q == NULL)
            return -EBADMSG;
        na.display = span(p, q);
        p = sip_lex_skip_lws(q, end);
        if (p >= end || *p != '<')
            return -EBADMSG;
        is_name_addr = true;
    } else if (*p == '<') {
        is_name_addr = true;
    } else {
        /* Tokens separated by LWS followed by '<' are a display name. */
        q = p;
        while (q < end &&
               (sip_lex_is_token((unsigned char)*q) || sip_lex_is_lws((unsigned char)*q)))
            q++;
        if (q < end && *q == '<') {
            na.display = slice_trim(span(p, q));
            p = q;
            is_name_addr = true;
        }
    }

    if (is_name_addr) {
        q = memchr(p, '>', (size_t)(end - p));
        if (q == NULL)
            return -EBADMSG;
        na.uri = span(p + 1, q);
        if (sip_uri_parse(na.uri, NULL, NULL) < 0)
            return -EBADMSG;
        p = q + 1;
    } else {
        q = p;
        while (q < end && *q != ';' && *q != ',')
            q++;
        na.uri = slice_trim(span(p, q));
        if (slice_find(na.uri, '?') >= 0 || sip_uri_parse(na.uri, NULL, NULL) < 0)
            return -EBADMSG;
        p = na.uri.p + na.uri.len;
    }
    q = scan_params(p, end);
    if (q == NULL)
        return -EBADMSG;
    na.params.raw = slice_trim(span(p, q));
    na.raw = span(start, q);
    if (end_element(q, end, rest) < 0)
        return -EBADMSG;
    if (out)
        *out = na;
    return 0;
}

/* CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16); the number is below 2^31 (§8.1.1.5). */
int sip_cseq_parse(struct slice s, uint32_t *seq, struct slice *method)
{
    const char *end = end_of(s);
    const char *p, *q;
    uint32_t n;

    if (s.p == NULL)
        return -EBADMSG;
    p = sip_lex_skip_lws(s.p, end);
    q = p;
    while (q < end && sip_lex_is_digit((unsigned char)*q))
        q++;
    if (q == p || slice_to_u32(span(p, q), 0x7fffffffu, &n) < 0)
        return -EBADMSG;
    p = sip_lex_skip_lws(q, end);
    if (p == q)
        return -EBADMSG;
    q = sip_lex_skip_token(p, end);
    if (q == p || sip_lex_skip_lws(q, end) != end)
        return -EBADMSG;
    if (seq)
        *seq = n;
    if (method)
        *method = span(p, q);
    return 0;
}

/* delta-seconds = 1*DIGIT (RFC 3261 §20.19); we keep values up to 2^32-1. */
int sip_expires_parse(struct slice s, uint32_t *out)
{
    uint32_t v;

    if (slice_to_u32(s, UINT32_MAX, &v) < 0)
        return -EBADMSG;
    if (out)
        *out = v;
    return 0;
}

bool sip_tag_list_has(struct slice list, const char *tag)
{
    const char *p = list.p;
    const char *end = end_of(list);

    if (p == NULL)
        return false;
    while (p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *e = c ? c : end;

        if (slice_case_eq_str(slice_trim(span(p, e)), tag))
            return true;
        p = c ? c + 1 : end;
    }
    return false;
}

/* credentials = auth-scheme LWS auth-param *(COMMA auth-param) (RFC 3261 §25.1). */
bool sip_auth_param(struct slice value, const char *name, struct slice *out)
{
    const char *end = end_of(value);
    const char *p, *q;

    if (value.p == NULL)
        return false;
    p = sip_lex_skip_lws(value.p, end);
    q = sip_lex_skip_token(p, end);
    if (q == p)
        return false;
    p = q;
    for (;;) {
        p = sip_lex_skip_lws(p, end);
        while (p < end && *p == ',')
            p = sip_lex_skip_lws(p + 1, end);
        q = sip_lex_skip_token(p, end);
        if (q == p)
            return false;
        struct slice pname = span(p, q);
        p = expect_sep(q, end, '=');
        if (p == NULL)
            return false;
        struct slice val;
        if (p < end && *p == '"') {
            q = sip_lex_skip_quoted(p, end);
            if (q == NULL)
                return false;
            val = span(p + 1, q - 1);
        } else {
            q = p;
            while (q < end && *q != ',' && !sip_lex_is_lws((unsigned char)*q))
                q++;
            val = span(p, q);
        }
        if (slice_case_eq_str(pname, name)) {
            if (out)
                *out = val;
            return true;
        }
        p = q;
    }
}
