/*
 * reg_register: REGISTER handling (RFC 3261 §10.3, RFC 5626 §6, RFC 3327).
 *
 * The digest check of a request's credentials (reg_authorize, also used for the
 * Proxy-Authorization of routed requests), the parsing of a REGISTER's Contacts into
 * a plan per element, the checks a binding change must pass (Call-ID and CSeq order,
 * Require, the trusted de-REGISTER of a dead flow asserted by the edge), the update of
 * the location table, and the 200 OK listing the AOR's bindings.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "registrar/registrar_priv.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/siphash.h"

/* One Contact element of a REGISTER and what will happen to it. */
struct contact_plan {
    struct slice uri;
    uint32_t expires_s;
    uint16_t q;
    struct slice instance;
    uint32_t reg_id;
    bool has_reg_id;
    struct location_binding *existing;
    bool is_superseded; /* a later element of the same request names the same binding */
};

/* ---- small helpers ----------------------------------------------------------------- */

/* AOR of a sip/sips URI text, with its user part. */
static int aor_from_uri(struct slice uri_text, char *out, size_t cap, struct slice *user)
{
    struct sip_uri uri;
    bool is_sip = false;
    if (sip_uri_parse(uri_text, &uri, &is_sip) != 0 || !is_sip)
        return -EBADMSG;
    if (user)
        *user = uri.user;
    return reg_aor_make(uri.user, uri.host, out, cap);
}

static void copy_slice(char *dst, size_t cap, struct slice s)
{
    slice_copy_cstr(dst, cap, s);
}

/* q-value "0", "0.5", "1.000" (RFC 3261 §20.10) as permille. */
static int q_parse(struct slice s, uint16_t *out)
{
    s = slice_trim(s);
    if (s.len == 0 || (s.p[0] != '0' && s.p[0] != '1'))
        return -EBADMSG;
    unsigned v = (unsigned)(s.p[0] - '0') * 1000;
    if (s.len > 1) {
        if (s.p[1] != '.' || s.len > 5)
            return -EBADMSG;
        unsigned scale = 100;
        for (size_t i = 2; i < s.len; i++, scale /= 10) {
            if (s.p[i] < '0' || s.p[i] > '9')
                return -EBADMSG;
            v += (unsigned)(s.p[i] - '0') * scale;
        }
    }
    if (v > 1000)
        return -EBADMSG;
    *out = (uint16_t)v;
    return 0;
}

static void q_format(uint16_t q, char *out, size_t cap)
{
    if (q >= 1000) {
        snprintf(out, cap, "1");
        return;
    }
    char digits[4];
    snprintf(digits, sizeof(digits), "%03u", q);
    int n = 3;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    snprintf(out, cap, "0.%.*s", n, digits);
}

static bool hdr_tag_present(const struct sip_msg *m, enum sip_hdr_id id, const char *tag)
{
    for (const struct sip_hdr *h = sip_msg_hdr(m, id); h; h = sip_msg_hdr_next(m, h))
        if (sip_tag_list_has(h->value, tag))
            return true;
    return false;
}

/* What a REGISTER asks for (To, Call-ID, CSeq, Contacts, Expires): the same again is a
 * retransmission; a change with the same digest nc is a replay (digest_nc_note). */
static uint64_t request_hash(const struct registrar *r, const struct sip_msg *m)
{
    static const enum sip_hdr_id ids[] = {SIP_HDR_TO, SIP_HDR_CALL_ID, SIP_HDR_CSEQ,
                                          SIP_HDR_CONTACT, SIP_HDR_EXPIRES};
    struct siphash h;
    siphash_init(&h, r->branch_k0, r->branch_k1);
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        for (const struct sip_hdr *hh = sip_msg_hdr(m, ids[i]); hh; hh = sip_msg_hdr_next(m, hh)) {
            siphash_add(&h, hh->value.p, hh->value.len);
            siphash_add(&h, "\0", 1); /* "ab"+"c" and "a"+"bc" differ */
        }
    return siphash_final(&h);
}

/* ---- REGISTER ---------------------------------------------------------------------- */

/*
 * Digest check (RFC 7616) of the request's credentials for user: Authorization and 401
 * for a REGISTER (RFC 3261 §10.3 steps 3-4), Proxy-Authorization and 407 with
 * Proxy-Authenticate when is_proxy (§22.3). Credentials must name user, be for the
 * Request-URI, use an offered algorithm, verify, and not repeat a nonce count.
 * Returns true when the request may proceed; otherwise the answer has been sent.
 */
bool reg_authorize(struct req *q, struct slice aor_user, bool is_proxy)
{
    struct registrar *r = q->r;
    struct digest_creds c;
    bool has_creds = false;
    struct slice realm = slice_make(r->realm, strlen(r->realm));
    enum sip_hdr_id creds_id = is_proxy ? SIP_HDR_PROXY_AUTHORIZATION : SIP_HDR_AUTHORIZATION;
    for (const struct sip_hdr *h = sip_msg_hdr(q->m, creds_id); h; h = sip_msg_hdr_next(q->m, h)) {
        if (digest_creds_parse(h->value, &c) == 0 && slice_eq(c.realm, realm)) {
            has_creds = true;
            break;
        }
    }
    bool is_stale = false;
    if (has_creds) {
        /* Unknown users and users registering someone else's AOR get the same 403, so
         * the answer does not tell which user names exist. */
        if (!slice_eq(c.username, aor_user) || !digest_has_user(r->dig, c.username)) {
            r->stats.forbidden++;
            log_info("registrar: 403 for user %.*s on AOR user %.*s", SLICE_FMT(c.username),
                     SLICE_FMT(aor_user));
            reg_reply(q, 403, "Forbidden", NULL);
            return false;
        }
        int rc = 0;
        if (!digest_uri_matches(&c, q->m->ruri)) {
            r->stats.digest_uri_mismatch++;
            rc = -EBADMSG;
            log_info("registrar: digest uri %.*s of %.*s is not the Request-URI", SLICE_FMT(c.uri),
                     SLICE_FMT(c.username));
        } else if (!digest_alg_offered(&c, r->policy.digest_challenges)) {
            r->stats.digest_alg_refused++;
            rc = -EBADMSG;
            log_info("registrar: digest algorithm %.*s of %.*s was not offered",
                     SLICE_FMT(c.algorithm), SLICE_FMT(c.username));
        } else {
            rc = digest_verify(r->dig, &c, q->m->method, q->now_ms, r->policy.nonce_ttl_s);
        }
        if (rc == 0)
            rc = digest_nc_note(r->dig, &c, request_hash(q->r, q->m), q->now_ms,
                                r->policy.nonce_ttl_s);
        if (rc == 0)
            return true;
        if (rc == -ENOSPC) {
            /* No room to remember this use: accepting it unchecked would let a replay
             * through, so the client retries later (counted in digest_nc_full). */
            char extra[32];
            log_warn("registrar: nonce-count table full, 503 for %.*s", SLICE_FMT(c.username));
            snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", REGISTRAR_RETRY_AFTER_S);
            reg_reply(q, 503, "Service Unavailable", extra);
            return false;
        }
        if (rc == -EALREADY) {
            /* Valid credentials with an nc already seen for that nonce: a replay, or a
             * client that does not count. A fresh nonce (stale=true) serves the honest one. */
            r->stats.replays++;
            r->stats.challenges++;
            is_stale = true;
            log_info("registrar: nonce count %.*s of %.*s already used: new challenge",
                     SLICE_FMT(c.nc), SLICE_FMT(c.username));
        } else if (rc == -EACCES) {
            r->stats.auth_fail++;
            log_info("registrar: wrong digest response for %.*s", SLICE_FMT(c.username));
        } else {
            r->stats.challenges++;
            is_stale = rc == -ETIMEDOUT;
        }
    } else {
        r->stats.challenges++;
    }
    int n = digest_challenge_build_hdr(r->dig, is_proxy ? "Proxy-Authenticate" : "WWW-Authenticate",
                                       q->now_ms, is_stale, r->policy.digest_challenges, r->extra,
                                       sizeof(r->extra));
    if (n < 0) {
        r->stats.send_errors++;
        return false;
    }
    if (is_proxy) {
        r->stats.proxy_challenges++;
        reg_reply(q, 407, "Proxy Authentication Required", r->extra);
    } else {
        reg_reply(q, 401, "Unauthorized", r->extra);
    }
    return false;
}

/* True when src is one of opts->trusted (the edge). */
static bool src_is_trusted(const struct registrar *r, const struct sockaddr *src)
{
    for (unsigned i = 0; i < r->n_trusted; i++)
        if (netaddr_eq(src, (const struct sockaddr *)&r->trusted[i].ss))
            return true;
    return false;
}

/*
 * RFC 3325 trust domain: a peer listed in opts->trusted (the edge) removes bindings it
 * can no longer reach by asserting the AOR; it cannot sign for the user. Only removals
 * qualify, so the assertion never creates a binding.
 */
static bool register_is_trusted_dereg(struct req *q, const char *aor, bool is_star,
                                      const struct contact_plan *plans, size_t n_plans)
{
    if (!src_is_trusted(q->r, q->src) || (!is_star && n_plans == 0))
        return false;
    for (size_t i = 0; i < n_plans; i++)
        if (plans[i].expires_s != 0)
            return false;
    for (const struct sip_hdr *h = sip_msg_hdr(q->m, SIP_HDR_P_ASSERTED_IDENTITY); h;
         h = sip_msg_hdr_next(q->m, h)) {
        struct sip_nameaddr na;
        struct slice rest;
        char pai[LOCATION_AOR_MAX];
        if (sip_nameaddr_parse(h->value, &na, &rest) == 0 &&
            aor_from_uri(na.uri, pai, sizeof(pai), NULL) == 0 && strcmp(pai, aor) == 0)
            return true;
    }
    return false;
}

/* Drops the AOR's expired bindings and loads the rest into r->found. */
static size_t register_load(struct registrar *r, const char *aor, uint64_t now_ms)
{
    size_t n = location_find(r->loc, aor, r->found, r->found_cap);
    size_t kept = 0;
    for (size_t i = 0; i < n && i < r->found_cap; i++) {
        if (r->found[i]->expires_at_ms <= now_ms)
            location_remove(r->loc, r->found[i]);
        else
            r->found[kept++] = r->found[i];
    }
    return kept;
}

static bool binding_matches(const struct location_binding *b, const struct contact_plan *p)
{
    /* RFC 5626 §6: with +sip.instance the binding is (instance, reg-id). */
    if (p->instance.len > 0)
        return slice_eq(p->instance, slice_make(b->instance, strlen(b->instance))) &&
               p->has_reg_id == b->has_reg_id && (!p->has_reg_id || p->reg_id == b->reg_id);
    /* Without it the Contact URI names the binding (RFC 3261 §10.3; compared without
     * case, a simplification of §19.1.4). A binding registered with an instance is
     * named so only by a removal: the de-REGISTER of an edge that kept the URI alone (a
     * dead flow), or a client that unregisters without its instance. A refresh without
     * the instance is another binding and never strips one of its instance. */
    if (b->instance[0] && p->expires_s != 0)
        return false;
    return slice_case_eq_str(p->uri, b->contact);
}

static bool plans_same(const struct contact_plan *a, const struct contact_plan *b)
{
    if (a->instance.len > 0 || b->instance.len > 0)
        return slice_eq(a->instance, b->instance) && a->has_reg_id == b->has_reg_id &&
               (!a->has_reg_id || a->reg_id == b->reg_id);
    return slice_case_eq(a->uri, b->uri);
}

/*
 * Parses every Contact element (RFC 3261 §10.3 step 6-7: expires from the contact
 * param, else Expires, else the default). Returns 0, or a status with *reason set.
 * *min_violated is set when a non-zero expires is below the policy minimum (423).
 */
static int register_parse_contacts(struct req *q, struct contact_plan *plans, size_t *n_plans,
                                   bool *is_star, bool *min_violated, const char **reason)
{
    const struct policy *pol = &q->r->policy;
    uint32_t hdr_expires = pol->default_expires_s;
    bool has_hdr_expires = false;
    const struct sip_hdr *eh = sip_msg_hdr(q->m, SIP_HDR_EXPIRES);
    if (eh) {
        if (sip_expires_parse(eh->value, &hdr_expires) != 0) {
            *reason = "Bad Expires";
            return 400;
        }
        has_hdr_expires = true;
    }
    size_t n = 0;
    *is_star = false;
    *min_violated = false;
    for (const struct sip_hdr *h = sip_msg_hdr(q->m, SIP_HDR_CONTACT); h;
         h = sip_msg_hdr_next(q->m, h)) {
        struct slice rest = h->value;
        while (rest.len > 0) {
            struct sip_nameaddr na;
            if (sip_nameaddr_parse(rest, &na, &rest) != 0) {
                *reason = "Bad Contact";
                return 400;
            }
            if (na.is_star) {
                *is_star = true;
                continue;
            }
            if (n == REGISTRAR_MAX_CONTACTS) {
                *reason = "Too Many Contacts";
                return 400;
            }
            struct contact_plan *p = &plans[n++];
            memset(p, 0, sizeof(*p));
            p->uri = na.uri;
            p->q = LOCATION_Q_NONE;
            struct sip_uri uri;
            bool is_sip;
            if (na.uri.len == 0 || na.uri.len >= LOCATION_CONTACT_MAX ||
                sip_uri_parse(na.uri, &uri, &is_sip) != 0) {
                *reason = "Bad Contact URI";
                return 400;
            }
            struct slice v;
            p->expires_s = hdr_expires;
            if (sip_params_get(na.params, "expires", &v) && sip_expires_parse(v, &p->expires_s)) {
                *reason = "Bad Contact Expires";
                return 400;
            }
            if (sip_params_get(na.params, "q", &v) && q_parse(v, &p->q) != 0) {
                *reason = "Bad q";
                return 400;
            }
            if (sip_params_get(na.params, "+sip.instance", &v)) {
                if (v.len >= LOCATION_INSTANCE_MAX) {
                    *reason = "Bad +sip.instance";
                    return 400;
                }
                p->instance = v;
            }
            if (sip_params_get(na.params, "reg-id", &v)) {
                if (slice_to_u32(v, UINT32_MAX, &p->reg_id) != 0) {
                    *reason = "Bad reg-id";
                    return 400;
                }
                p->has_reg_id = true;
            }
            if (p->expires_s != 0 && p->expires_s < pol->min_expires_s)
                *min_violated = true;
            if (p->expires_s > pol->max_expires_s)
                p->expires_s = pol->max_expires_s;
        }
    }
    /* RFC 3261 §10.3 step 6: '*' only alone and only with Expires: 0. */
    if (*is_star && (n > 0 || !has_hdr_expires || hdr_expires != 0)) {
        *reason = "Bad Wildcard Contact";
        return 400;
    }
    *n_plans = n;
    return 0;
}

/*
 * RFC 3261 §10.3 step 7 ordering: for a binding with the same Call-ID the request's
 * CSeq must be higher than the stored one, otherwise "the update MUST be aborted and
 * the request fails". We answer that failure with 500 and change nothing. An equal
 * CSeq is accepted as a retransmission of the request that made the binding: this
 * element has no transaction layer to absorb retransmissions (RFC 3261 §17.2.1), and
 * re-applying the same REGISTER is idempotent.
 */
static bool cseq_in_order(const struct location_binding *b, struct slice call_id, uint32_t cseq)
{
    if (!slice_eq(call_id, slice_make(b->call_id, strlen(b->call_id))))
        return true;
    return cseq >= b->cseq;
}

/* Path values of the request, ", "-joined, for storage (RFC 3327 §5.3). */
static int register_join_path(const struct sip_msg *m, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_PATH); h; h = sip_msg_hdr_next(m, h)) {
        size_t need = h->value.len + (len ? 2 : 0);
        if (len + need + 1 > cap)
            return -ENOSPC;
        if (len) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, h->value.p, h->value.len);
        len += h->value.len;
        out[len] = '\0';
    }
    return 0;
}

static void binding_fill(struct req *q, struct location_binding *b, const struct contact_plan *p,
                         struct slice call_id, uint32_t cseq, const char *path)
{
    copy_slice(b->contact, sizeof(b->contact), p->uri);
    b->q = p->q;
    b->expires_at_ms = q->now_ms + (uint64_t)p->expires_s * 1000;
    b->updated_ms = q->now_ms;
    copy_slice(b->call_id, sizeof(b->call_id), call_id);
    b->cseq = cseq;
    snprintf(b->path, sizeof(b->path), "%s", path);
    memset(&b->received, 0, sizeof(b->received));
    size_t n = q->src_len < sizeof(b->received) ? q->src_len : sizeof(b->received);
    memcpy(&b->received, q->src, n);
    b->received_len = (socklen_t)n;
    copy_slice(b->instance, sizeof(b->instance), p->instance);
    b->reg_id = p->reg_id;
    b->has_reg_id = p->has_reg_id;
    const struct sip_hdr *ua = sip_msg_hdr(q->m, SIP_HDR_USER_AGENT);
    copy_slice(b->user_agent, sizeof(b->user_agent), ua ? ua->value : SLICE_NULL);
}

/* 200 OK: every current binding (RFC 3261 §10.3 step 8) and, when it was taken, the
 * request's Path echoed (RFC 3327 §5.3). */
static void register_reply_ok(struct req *q, const char *aor, bool use_path)
{
    struct registrar *r = q->r;
    size_t n = register_load(r, aor, q->now_ms);
    if (n > r->found_cap)
        n = r->found_cap;
    for (size_t i = 1; i < n; i++) { /* insertion sort: n <= max_contacts_per_aor */
        struct location_binding *b = r->found[i];
        size_t j = i;
        for (; j > 0 && reg_binding_before(b, r->found[j - 1]); j--)
            r->found[j] = r->found[j - 1];
        r->found[j] = b;
    }
    struct sip_build sb;
    sip_build_init(&sb, r->extra, sizeof(r->extra));
    for (size_t i = 0; i < n; i++) {
        const struct location_binding *b = r->found[i];
        uint64_t left_ms = b->expires_at_ms - q->now_ms;
        sip_build_fmt(&sb, "Contact: <%s>;expires=%u", b->contact,
                      (unsigned)((left_ms + 999) / 1000));
        if (b->q != LOCATION_Q_NONE) {
            char qtext[8];
            q_format(b->q, qtext, sizeof(qtext));
            sip_build_fmt(&sb, ";q=%s", qtext);
        }
        if (b->instance[0])
            sip_build_fmt(&sb, ";+sip.instance=%s", b->instance);
        if (b->has_reg_id)
            sip_build_fmt(&sb, ";reg-id=%u", b->reg_id);
        sip_build_str(&sb, "\r\n");
    }
    for (const struct sip_hdr *h = use_path ? sip_msg_hdr(q->m, SIP_HDR_PATH) : NULL; h;
         h = sip_msg_hdr_next(q->m, h))
        sip_build_fmt(&sb, "Path: %.*s\r\n", SLICE_FMT(h->value));
    sip_build_mem(&sb, "", 1);
    size_t len;
    if (sip_build_finish(&sb, &len) != 0) {
        r->stats.send_errors++;
        reg_reply(q, 500, "Response Too Large", NULL);
        return;
    }
    r->stats.registers_ok++;
    reg_reply(q, 200, "OK", r->extra);
}

static void register_reject(struct req *q, int status, const char *reason, const char *extra)
{
    q->r->stats.rejected++;
    log_debug("registrar: REGISTER rejected %d %s", status, reason);
    reg_reply(q, status, reason, extra);
}

/*
 * RFC 3261 §10.3 step 2 / §8.2.2.3: every option tag in Require must be supported; the
 * first one that is not is returned in *tag.
 */
static bool register_require_ok(const struct sip_msg *m, struct slice *tag)
{
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_REQUIRE); h; h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;
        while (rest.len > 0) {
            long comma = slice_find(rest, ',');
            size_t n = comma < 0 ? rest.len : (size_t)comma;
            struct slice t = slice_trim(slice_make(rest.p, n));
            rest = comma < 0 ? SLICE_NULL : slice_make(rest.p + n + 1, rest.len - n - 1);
            if (t.len > 0 && !slice_case_eq_str(t, "path") && !slice_case_eq_str(t, "outbound")) {
                *tag = t;
                return false;
            }
        }
    }
    return true;
}

void reg_handle_register(struct req *q)
{
    struct registrar *r = q->r;
    const struct sip_msg *m = q->m;
    char aor[LOCATION_AOR_MAX];
    struct slice aor_user;
    struct sip_nameaddr to;
    struct slice rest;
    const struct sip_hdr *to_h = sip_msg_hdr(m, SIP_HDR_TO);
    if (!to_h || sip_nameaddr_parse(to_h->value, &to, &rest) != 0 ||
        aor_from_uri(to.uri, aor, sizeof(aor), &aor_user) != 0) {
        register_reject(q, 400, "Bad To", NULL);
        return;
    }
    struct slice bad_tag;
    if (!register_require_ok(m, &bad_tag)) {
        char extra[96];
        snprintf(extra, sizeof(extra), "Unsupported: %.*s\r\n",
                 (int)(bad_tag.len < 64 ? bad_tag.len : 64), bad_tag.p);
        register_reject(q, 420, "Bad Extension", extra);
        return;
    }
    /* RFC 3327 §5.3: the registrar stores a Path only from proxies it trusts; the edge
     * (opts->trusted) is the one that inserts it. A Path from anyone else would let the
     * sender choose where the AOR's requests go: it is dropped, as if absent, and counted. */
    bool use_path = src_is_trusted(r, q->src);
    if (!use_path && sip_msg_hdr(m, SIP_HDR_PATH)) {
        r->stats.path_ignored++;
        log_info("registrar: %s: Path from an untrusted source ignored", aor);
    }
    /* RFC 3327 §5.3: Path without Supported: path is refused. */
    if (use_path && sip_msg_hdr(m, SIP_HDR_PATH) &&
        !hdr_tag_present(m, SIP_HDR_SUPPORTED, "path")) {
        register_reject(q, 420, "Bad Extension", "Unsupported: path\r\n");
        return;
    }

    struct contact_plan plans[REGISTRAR_MAX_CONTACTS];
    size_t n_plans = 0;
    bool is_star = false, min_violated = false;
    const char *bad_reason = NULL;
    int bad = register_parse_contacts(q, plans, &n_plans, &is_star, &min_violated, &bad_reason);

    bool is_trusted = bad == 0 && register_is_trusted_dereg(q, aor, is_star, plans, n_plans);
    if (!is_trusted && r->dig && !reg_authorize(q, aor_user, false))
        return;
    if (bad) {
        register_reject(q, bad, bad_reason, NULL);
        return;
    }
    if (min_violated) { /* RFC 3261 §10.3 step 7, §21.4.17 */
        char extra[48];
        snprintf(extra, sizeof(extra), "Min-Expires: %u\r\n", r->policy.min_expires_s);
        register_reject(q, 423, "Interval Too Brief", extra);
        return;
    }

    struct slice call_id = sip_msg_hdr(m, SIP_HDR_CALL_ID)->value;
    uint32_t cseq = 0;
    struct slice cseq_method;
    if (sip_cseq_parse(sip_msg_hdr(m, SIP_HDR_CSEQ)->value, &cseq, &cseq_method) != 0) {
        register_reject(q, 400, "Bad CSeq", NULL);
        return;
    }
    if (call_id.len >= LOCATION_CALL_ID_MAX) {
        register_reject(q, 400, "Call-ID Too Long", NULL);
        return;
    }
    char path[LOCATION_PATH_MAX];
    path[0] = '\0';
    if (use_path && register_join_path(m, path, sizeof(path)) != 0) {
        register_reject(q, 400, "Path Too Long", NULL);
        return;
    }

    size_t n_found = register_load(r, aor, q->now_ms);
    if (is_star) {
        for (size_t i = 0; i < n_found; i++) {
            if (!cseq_in_order(r->found[i], call_id, cseq)) {
                register_reject(q, 500, "CSeq Out Of Order", NULL);
                return;
            }
        }
        for (size_t i = 0; i < n_found; i++)
            location_remove(r->loc, r->found[i]);
        if (n_found)
            log_info("registrar: %s: removed all %zu bindings", aor, n_found);
    } else {
        size_t n_new = 0, n_removed = 0;
        for (size_t i = 0; i < n_plans; i++) {
            struct contact_plan *p = &plans[i];
            for (size_t j = 0; j < n_found && !p->existing; j++)
                if (binding_matches(r->found[j], p))
                    p->existing = r->found[j];
            for (size_t j = 0; j < i; j++) {
                if (!plans[j].is_superseded && plans_same(&plans[j], p)) {
                    plans[j].is_superseded = true;
                    break;
                }
            }
            if (p->existing && !cseq_in_order(p->existing, call_id, cseq)) {
                register_reject(q, 500, "CSeq Out Of Order", NULL);
                return;
            }
        }
        for (size_t i = 0; i < n_plans; i++) {
            if (plans[i].is_superseded)
                continue;
            if (plans[i].existing && plans[i].expires_s == 0)
                n_removed++;
            else if (!plans[i].existing && plans[i].expires_s != 0)
                n_new++;
        }
        if (n_new > location_n_free(r->loc))
            r->stats.expired += location_expire(r->loc, q->now_ms);
        if (n_found + n_new > location_max_per_aor(r->loc) + n_removed ||
            n_new > location_n_free(r->loc)) {
            /* Bounded table: refuse, never evict a live binding (DESIGN ownership 6). */
            char extra[32];
            r->stats.table_full++;
            log_warn("registrar: %s: location table full (%zu bindings), 503", aor,
                     location_count(r->loc));
            snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", REGISTRAR_RETRY_AFTER_S);
            reg_reply(q, 503, "Service Unavailable", extra);
            return;
        }
        for (size_t i = 0; i < n_plans; i++) {
            struct contact_plan *p = &plans[i];
            if (p->is_superseded)
                continue;
            struct location_binding *b = p->existing;
            if (b && p->expires_s == 0) {
                log_info("registrar: %s: removed binding %s", aor, b->contact);
                location_remove(r->loc, b);
                continue;
            }
            if (!b && p->expires_s == 0)
                continue;
            if (!b) {
                if (location_add(r->loc, aor, &b) != 0) { /* checked above */
                    r->stats.send_errors++;
                    continue;
                }
                log_info("registrar: %s: new binding %.*s for %us", aor, SLICE_FMT(p->uri),
                         p->expires_s);
            }
            binding_fill(q, b, p, call_id, cseq, path);
            location_touch(r->loc, b);
        }
    }
    if (is_trusted)
        r->stats.trusted_dereg++;
    register_reply_ok(q, aor, use_path);
}
