/*
 * registrar: REGISTER processing (RFC 3261 §10.3), digest challenges (RFC 7616), and
 * stateless routing to registered contacts through their Path (RFC 3261 §16.11,
 * RFC 3327 §5.3). See include/sipedge/registrar.h for the contract.
 *
 * Everything works on one received datagram at a time; the only per-message memory is
 * the registrar's preallocated header array and output buffers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "registrar/reg_store.h"
#include "registrar/registrar_internal.h"
#include "sipedge/flow_token.h"
#include "sipedge/log.h"
#include "sipedge/registrar.h"
#include "sipedge/statefile.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_edit.h"
#include "sipedge/siphash.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/sip_reply.h"

#define REGISTRAR_MAX_CONTACTS 32 /* Contact elements in one REGISTER */
#define REGISTRAR_OUT_MAX (65535 + 2048)
#define REGISTRAR_EXTRA_MAX 16384
#define REGISTRAR_DEFAULT_HEADERS 64
#define REGISTRAR_RETRY_AFTER_S 30
#define REGISTRAR_DEFAULT_MF 70 /* RFC 3261 §16.6 step 3 */
#define SIP_DEFAULT_PORT 5060
#define BRANCH_COOKIE "z9hG4bK" /* RFC 3261 §8.1.1.7 */
#define BRANCH_TEXT_MAX 32      /* "z9hG4bK" + 16 hex + NUL */

struct registrar {
    struct config_addr self;
    char realm[128];
    struct policy policy;
    struct config_addr *trusted;
    unsigned n_trusted;
    struct config_addr *peers; /* the only non-binding next hops (no open relay) */
    unsigned n_peers;
    registrar_send_cb send;
    void *send_ctx;
    struct location *loc;
    struct digest *dig; /* NULL: no authentication */
    struct flow_token_keys *sb_keys; /* key of the MAC in sb= (flow_token_tag) */
    struct registrar_stats stats;
    struct sip_hdr *hdrs;
    uint16_t max_hdrs;
    struct location_binding **found; /* scratch for one AOR's bindings */
    size_t found_cap;
    struct reg_store *store; /* NULL: bindings live in memory only */
    uint64_t now_ms;         /* of the last registrar_handle / registrar_tick */
    bool is_rebase_pending;  /* restored times are still unix ms, not now_ms */
    bool is_store_failing;   /* the last flush failed (logged once per outage) */
    uint64_t branch_k0, branch_k1; /* key of derived branches and request hashes */
    struct sip_view view;           /* the message in hand, parsed once */
    char extra[REGISTRAR_EXTRA_MAX];
    char out[REGISTRAR_OUT_MAX];
};

/* The request being handled. */
struct req {
    struct registrar *r;
    const struct sip_msg *m;
    const struct sip_view *v; /* what sip_check_view parsed of m */
    const struct sockaddr *src;
    socklen_t src_len;
    uint64_t now_ms;
};

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

static bool host_to_addr(struct slice host, uint16_t port, struct sockaddr_storage *ss,
                         socklen_t *len)
{
    if (netaddr_from_host(host, port, SIP_DEFAULT_PORT, ss) < 0)
        return false;
    *len = netaddr_len((const struct sockaddr *)ss);
    return true;
}

static bool is_self_hostport(const struct registrar *r, struct slice host, uint16_t port)
{
    return slice_case_eq_str(host, r->self.host) &&
           (port ? port : SIP_DEFAULT_PORT) == r->self.port;
}

static bool is_self_uri(const struct registrar *r, struct slice uri_text)
{
    struct sip_uri uri;
    bool is_sip = false;
    return sip_uri_parse(uri_text, &uri, &is_sip) == 0 && is_sip &&
           is_self_hostport(r, uri.host, uri.port);
}

/* "user@host" with the host lower-cased (RFC 3261 §19.1.4: hosts compare without case). */
static int aor_make(struct slice user, struct slice host, char *out, size_t cap)
{
    if (user.len == 0 || host.len == 0 || user.len + host.len + 2 > cap)
        return -EINVAL;
    memcpy(out, user.p, user.len);
    out[user.len] = '@';
    char *h = out + user.len + 1;
    for (size_t i = 0; i < host.len; i++) {
        char c = host.p[i];
        h[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    h[host.len] = '\0';
    return 0;
}

/* AOR of a sip/sips URI text, with its user part. */
static int aor_from_uri(struct slice uri_text, char *out, size_t cap, struct slice *user)
{
    struct sip_uri uri;
    bool is_sip = false;
    if (sip_uri_parse(uri_text, &uri, &is_sip) != 0 || !is_sip)
        return -EBADMSG;
    if (user)
        *user = uri.user;
    return aor_make(uri.user, uri.host, out, cap);
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

/* Bindings without q rank as 1.0 (the highest preference). */
static unsigned q_rank(const struct location_binding *b)
{
    return b->q == LOCATION_Q_NONE ? 1000 : b->q;
}

/* True when a should be tried before b: higher q, then the more recent registration. */
static bool binding_before(const struct location_binding *a, const struct location_binding *b)
{
    if (q_rank(a) != q_rank(b))
        return q_rank(a) > q_rank(b);
    return a->updated_ms > b->updated_ms;
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

/* ---- sending ----------------------------------------------------------------------- */

static void send_to(struct registrar *r, const struct sockaddr *dst, socklen_t dst_len,
                    const char *buf, size_t len)
{
    r->send(r->send_ctx, dst, dst_len, buf, len);
}

/*
 * Stateless response to the request's source (RFC 3581 semantics: the edge, or any
 * peer, gets the answer where the request came from). received/rport are added to the
 * top Via when the request asked for rport.
 */
static void reply(struct req *q, int status, const char *reason, const char *extra)
{
    struct registrar *r = q->r;
    if (q->m->method_id == SIP_METHOD_ACK)
        return; /* ACK never gets a response (RFC 3261 §17.1.1.3) */
    struct sip_reply_opts opts = {.extra = extra};
    char ip[INET6_ADDRSTRLEN];
    unsigned port = 0;
    const struct sip_hdr *vh = sip_msg_hdr(q->m, SIP_HDR_VIA);
    struct sip_via via;
    struct slice rest;
    if (vh && sip_via_parse(vh->value, &via, &rest) == 0 && via.has_rport && via.rport.len == 0 &&
        netaddr_ip(q->src, ip, sizeof(ip), &port)) {
        opts.received = ip;
        opts.rport = port;
    }
    int n = sip_reply_build(q->m, status, reason, &opts, r->out, sizeof(r->out));
    if (n <= 0) {
        r->stats.send_errors++;
        return;
    }
    send_to(r, q->src, q->src_len, r->out, (size_t)n);
}

/* ---- REGISTER ---------------------------------------------------------------------- */

/*
 * Digest check (RFC 7616) of the request's credentials for user: Authorization and 401
 * for a REGISTER (RFC 3261 §10.3 steps 3-4), Proxy-Authorization and 407 with
 * Proxy-Authenticate when is_proxy (§22.3). Credentials must name user, be for the
 * Request-URI, use an offered algorithm, verify, and not repeat a nonce count.
 * Returns true when the request may proceed; otherwise the answer has been sent.
 */
static bool authorize(struct req *q, struct slice aor_user, bool is_proxy)
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
            reply(q, 403, "Forbidden", NULL);
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
            reply(q, 503, "Service Unavailable", extra);
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
        reply(q, 407, "Proxy Authentication Required", r->extra);
    } else {
        reply(q, 401, "Unauthorized", r->extra);
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
    /* RFC 5626 §6: with +sip.instance the binding is (instance, reg-id); otherwise the
     * Contact URI names it (compared without case, a simplification of §19.1.4). */
    if (p->instance.len > 0 || b->instance[0])
        return slice_eq(p->instance, slice_make(b->instance, strlen(b->instance))) &&
               p->has_reg_id == b->has_reg_id && (!p->has_reg_id || p->reg_id == b->reg_id);
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
        for (; j > 0 && binding_before(b, r->found[j - 1]); j--)
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
        reply(q, 500, "Response Too Large", NULL);
        return;
    }
    r->stats.registers_ok++;
    reply(q, 200, "OK", r->extra);
}

static void register_reject(struct req *q, int status, const char *reason, const char *extra)
{
    q->r->stats.rejected++;
    log_debug("registrar: REGISTER rejected %d %s", status, reason);
    reply(q, status, reason, extra);
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

static void handle_register(struct req *q)
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
    if (!is_trusted && r->dig && !authorize(q, aor_user, false))
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
            reply(q, 503, "Service Unavailable", extra);
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

/* ---- routing ----------------------------------------------------------------------- */

/*
 * Next hop for a binding: the first Path URI when there is a Path (RFC 3327 §5.3), else
 * the Contact; a host that is not a numeric address falls back to the address the
 * REGISTER came from.
 */
static void binding_next_hop(const struct location_binding *b, struct sockaddr_storage *ss,
                             socklen_t *len)
{
    struct slice target = slice_make(b->contact, strlen(b->contact));
    struct sip_nameaddr na;
    struct slice rest;
    if (b->path[0] && sip_nameaddr_parse(slice_make(b->path, strlen(b->path)), &na, &rest) == 0)
        target = na.uri;
    struct sip_uri uri;
    bool is_sip = false;
    if (sip_uri_parse(target, &uri, &is_sip) == 0 && is_sip &&
        host_to_addr(uri.host, uri.port, ss, len))
        return;
    memcpy(ss, &b->received, sizeof(*ss));
    *len = b->received_len;
}

/*
 * MAC binding a routed request's sb=SLOT.GEN to that request: a flow_token_tag under the
 * registrar's key over slot, gen, the branch we wrote, the Call-ID and the CSeq number
 * (FLOW_TOKEN_TAG_LEN hex characters). A response echoes all of them (RFC 3261 §8.2.6.2),
 * so a 430 can be checked without state; a forger knowing slot and gen still lacks the
 * MAC. sb_mac_hex returns 0 or -EIO; sb_mac_ok compares in constant time.
 */
static int sb_parts(uint32_t slot, uint32_t gen, struct slice branch, struct slice call_id,
                    uint32_t cseq, char ids[32], char num[12], struct slice parts[4])
{
    int n = snprintf(ids, 32, "%u.%u", slot, gen);
    int k = snprintf(num, 12, "%u", cseq);
    parts[0] = slice_make(ids, (size_t)n);
    parts[1] = branch;
    parts[2] = call_id;
    parts[3] = slice_make(num, (size_t)k);
    return 4;
}

static int sb_mac_hex(struct registrar *r, uint32_t slot, uint32_t gen, struct slice branch,
                      struct slice call_id, uint32_t cseq, char out[FLOW_TOKEN_TAG_LEN + 1])
{
    char ids[32], num[12];
    struct slice parts[4];
    int n = sb_parts(slot, gen, branch, call_id, cseq, ids, num, parts);
    return flow_token_tag(r->sb_keys, FLOW_TOKEN_TAG_REGISTRAR_SB, parts, (size_t)n, out);
}

static bool sb_mac_ok(struct registrar *r, uint32_t slot, uint32_t gen, struct slice branch,
                      struct slice call_id, uint32_t cseq, struct slice mac)
{
    char ids[32], num[12];
    struct slice parts[4];
    int n = sb_parts(slot, gen, branch, call_id, cseq, ids, num, parts);
    return flow_token_tag_verify(r->sb_keys, FLOW_TOKEN_TAG_REGISTRAR_SB, parts, (size_t)n,
                                 mac) == 0;
}

struct forward {
    struct slice ruri;                /* new Request-URI */
    const struct location_binding *b; /* target binding, or NULL */
    bool strip_top_route;             /* top Route was ours (RFC 3261 §16.4) */
    struct slice top_route_rest;      /* remaining elements of that Route header */
    uint32_t max_forwards;            /* received value (already checked > 0) */
    struct sockaddr_storage dst;
    socklen_t dst_len;
};

/*
 * Writes and sends the forwarded request: our Via on top, Route from the binding's Path,
 * Max-Forwards decremented, the rest copied in order (RFC 3261 §16.6).
 *
 *   Via: SIP/2.0/UDP <self>;branch=z9hG4bK<16 hex>[;sb=<slot>.<gen>.<mac>]
 *
 * sb names the binding so a 430 coming back can remove it without any state; mac
 * (sb_mac_hex) ties it to this branch, Call-ID and CSeq so nobody else can name it.
 */
static void forward_request(struct req *q, const struct forward *f)
{
    struct registrar *r = q->r;
    const struct sip_msg *m = q->m;
    const struct sip_view *v = q->v;
    struct sip_build sb;
    sip_build_init(&sb, r->out, sizeof(r->out));
    sip_build_fmt(&sb, "%.*s %.*s SIP/2.0\r\n", SLICE_FMT(m->method), SLICE_FMT(f->ruri));
    char hex[17], branch[BRANCH_TEXT_MAX];
    sip_edit_branch(m, v, q->src, r->branch_k0, r->branch_k1, hex);
    int blen = snprintf(branch, sizeof(branch), BRANCH_COOKIE "%s", hex);
    sip_build_fmt(&sb, "Via: SIP/2.0/UDP %s;branch=%s", r->self.text, branch);
    if (f->b) {
        char mac[FLOW_TOKEN_TAG_LEN + 1];
        if (sb_mac_hex(r, f->b->slot, f->b->gen, slice_make(branch, (size_t)blen), v->call_id,
                       v->cseq, mac) != 0) {
            r->stats.send_errors++;
            reply(q, 500, "Server Internal Error", NULL);
            return;
        }
        sip_build_fmt(&sb, ";sb=%u.%u.%s", f->b->slot, f->b->gen, mac);
    }
    sip_build_str(&sb, "\r\n");
    /* The Path values become the Route set, in order (RFC 3327 §5.3), ahead of any
     * Route the request keeps. */
    if (f->b && f->b->path[0])
        sip_build_fmt(&sb, "Route: %s\r\n", f->b->path);
    if (!v->has_max_forwards)
        sip_build_fmt(&sb, "Max-Forwards: %u\r\n", REGISTRAR_DEFAULT_MF);
    struct sip_edit plan = {
        .top_via = v->via_hdr,
        .via = {.via = &v->via, .src = q->src},
        .set_max_forwards = true,
        .max_forwards = f->max_forwards - 1,
    };
    if (f->strip_top_route) {
        plan.pop_route = v->route_hdr;
        plan.pop_route_rest = f->top_route_rest;
    }
    sip_edit_copy(&sb, m, &plan);
    size_t len;
    if (sip_build_finish(&sb, &len) != 0) {
        r->stats.send_errors++;
        reply(q, 513, "Message Too Large", NULL);
        return;
    }
    r->stats.routed++;
    send_to(r, (const struct sockaddr *)&f->dst, f->dst_len, r->out, len);
}

/* Live binding of aor to try first, or NULL; *n_known counts expired ones too. */
static struct location_binding *route_pick(struct registrar *r, const char *aor, uint64_t now_ms,
                                           size_t *n_known)
{
    size_t n = location_find(r->loc, aor, r->found, r->found_cap);
    *n_known = n;
    struct location_binding *best = NULL;
    for (size_t i = 0; i < n && i < r->found_cap; i++) {
        struct location_binding *b = r->found[i];
        if (b->expires_at_ms > now_ms && (!best || binding_before(b, best)))
            best = b;
    }
    return best;
}

/* True when the URI names a configured peer exactly (numeric address and port, or the
 * peer's configured host text and port); *ss is then the peer's address. */
static bool uri_peer(const struct registrar *r, const struct sip_uri *uri,
                     struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_storage a;
    socklen_t a_len = 0;
    bool is_addr = host_to_addr(uri->host, uri->port, &a, &a_len);
    uint16_t port = uri->port ? uri->port : SIP_DEFAULT_PORT;
    for (unsigned i = 0; i < r->n_peers; i++) {
        const struct config_addr *p = &r->peers[i];
        if ((is_addr && netaddr_eq((const struct sockaddr *)&a, (const struct sockaddr *)&p->ss)) ||
            (slice_case_eq_str(uri->host, p->host) && port == p->port)) {
            memcpy(ss, &p->ss, sizeof(*ss));
            *len = p->len;
            return true;
        }
    }
    return false;
}

/* First element of a Route list as a forward target: only a configured peer qualifies. */
static bool route_target(const struct registrar *r, struct slice route_list,
                         struct sockaddr_storage *ss, socklen_t *len)
{
    struct sip_nameaddr na;
    struct slice rest;
    struct sip_uri uri;
    bool is_sip = false;
    return sip_nameaddr_parse(route_list, &na, &rest) == 0 &&
           sip_uri_parse(na.uri, &uri, &is_sip) == 0 && is_sip && uri_peer(r, &uri, ss, len);
}

/* 403 for a next hop we will not send to (RFC 3261 §16.5 leaves the policy to us). */
static void route_refuse(struct req *q, const char *what)
{
    q->r->stats.route_refused++;
    log_info("registrar: %.*s %s names no peer of ours: 403", SLICE_FMT(q->m->method), what);
    reply(q, 403, "Forbidden Route", NULL);
}

/*
 * RFC 3261 §22.3 (what Kamailio's default configuration does with proxy_authorize): a
 * request whose From names a local user (one of the users file, whatever the host) is
 * routed only with that user's Proxy-Authorization, so nobody can call or message in a
 * local user's name. ACK and CANCEL are never challenged (§22.1); a From that is not a
 * local user (a caller from outside) needs no credentials, the routing rules already
 * limit where its request can go. Without a users file nothing is checked.
 * Returns true when the request may be routed; otherwise the answer has been sent.
 */
static bool request_authorize(struct req *q)
{
    struct registrar *r = q->r;
    const struct sip_msg *m = q->m;
    if (!r->dig || m->method_id == SIP_METHOD_ACK || m->method_id == SIP_METHOD_CANCEL)
        return true;
    const struct sip_hdr *fh = sip_msg_hdr(m, SIP_HDR_FROM);
    struct sip_nameaddr from;
    struct slice rest;
    struct sip_uri uri;
    bool is_sip = false;
    if (!fh || sip_nameaddr_parse(fh->value, &from, &rest) != 0 ||
        sip_uri_parse(from.uri, &uri, &is_sip) != 0 || !is_sip || uri.user.len == 0 ||
        !digest_has_user(r->dig, uri.user))
        return true;
    return authorize(q, uri.user, true);
}

/*
 * Routing of every request but REGISTER (RFC 3261 §16, stateless per §16.11):
 *  - a Route set left after removing our own entry decides the next hop (§16.12), but
 *    only when it names a configured peer (opts->peers): any other gets 403;
 *  - otherwise a registered AOR in the Request-URI is retargeted to its best binding
 *    (highest q, then most recent) through the binding's Path;
 *  - a Request-URI naming a configured peer goes there; an in-dialog request that named
 *    us in its top Route and targets any other host gets 403.
 * So the registrar sends requests only to bindings (through their Path) and peers: a
 * client cannot make it send to an address of its choosing.
 * ACK is forwarded like any request when there is a target: a stateless element cannot
 * tell an ACK for a forwarded non-2xx from one for a 2xx, and the downstream server
 * transaction needs it (same branch as the INVITE, §16.11). An ACK that has no target
 * acknowledges a final response this element generated itself (404/480/483) and is
 * absorbed; ACK is never answered.
 */
static void handle_request(struct req *q)
{
    struct registrar *r = q->r;
    const struct sip_msg *m = q->m;
    bool is_ack = m->method_id == SIP_METHOD_ACK;
    struct forward f;
    memset(&f, 0, sizeof(f));
    f.ruri = m->ruri;
    f.max_forwards = REGISTRAR_DEFAULT_MF + 1; /* absent: the copy gets 70 */
    const struct sip_hdr *mfh = sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS);
    if (mfh && slice_to_u32(mfh->value, 255, &f.max_forwards) != 0) {
        r->stats.dropped_bad++;
        reply(q, 400, "Bad Max-Forwards", NULL);
        return;
    }

    /* RFC 3261 §16.4: a top Route naming us is removed; what follows decides. */
    const struct sip_hdr *rh = sip_msg_hdr(m, SIP_HDR_ROUTE);
    struct slice next_route = SLICE_NULL;
    if (rh) {
        if (q->v->route_hdr != rh) {
            r->stats.dropped_bad++;
            reply(q, 400, "Bad Route", NULL);
            return;
        }
        struct sip_nameaddr na = q->v->route;
        struct slice rest = q->v->route_rest;
        if (is_self_uri(r, na.uri)) {
            f.strip_top_route = true;
            f.top_route_rest = slice_trim(rest);
            if (f.top_route_rest.len > 0) {
                next_route = f.top_route_rest;
            } else {
                const struct sip_hdr *nh = sip_msg_hdr_next(m, rh);
                if (nh)
                    next_route = nh->value;
            }
        } else {
            next_route = rh->value;
        }
    }

    struct sip_uri ruri;
    bool is_sip = false;
    bool ruri_ok = sip_uri_parse(m->ruri, &ruri, &is_sip) == 0 && is_sip;
    char aor[LOCATION_AOR_MAX];
    bool has_aor = ruri_ok && aor_make(ruri.user, ruri.host, aor, sizeof(aor)) == 0;

    if (next_route.len == 0 && m->method_id == SIP_METHOD_OPTIONS &&
        (!ruri_ok || ruri.user.len == 0)) {
        r->stats.options_local++;
        reply(q, 200, "OK", "Allow: REGISTER, INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n");
        return;
    }

    if (next_route.len > 0) {
        if (!route_target(r, next_route, &f.dst, &f.dst_len)) {
            route_refuse(q, "Route");
            return;
        }
    } else {
        size_t n_known = 0;
        struct location_binding *b = has_aor ? route_pick(r, aor, q->now_ms, &n_known) : NULL;
        if (b) {
            f.b = b;
            f.ruri = slice_make(b->contact, strlen(b->contact));
            binding_next_hop(b, &f.dst, &f.dst_len);
        } else if (has_aor && (n_known > 0 || (r->dig && digest_has_user(r->dig, ruri.user)))) {
            if (is_ack) {
                r->stats.acks_absorbed++;
                return;
            }
            r->stats.unavailable++;
            reply(q, 480, "Temporarily Unavailable", NULL);
            return;
        } else if (ruri_ok && m->method_id == SIP_METHOD_OPTIONS &&
                   is_self_hostport(r, ruri.host, ruri.port)) {
            r->stats.options_local++;
            reply(q, 200, "OK", "Allow: REGISTER, INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n");
            return;
        } else if (ruri_ok && uri_peer(r, &ruri, &f.dst, &f.dst_len)) {
            /* Loose routing (in-dialog) or a request for a peer's domain. */
        } else if (f.strip_top_route && ruri_ok && !is_self_hostport(r, ruri.host, ruri.port)) {
            route_refuse(q, "Request-URI");
            return;
        } else {
            if (is_ack) {
                /* ACK for a final response this element generated (404/480/483). */
                r->stats.acks_absorbed++;
                return;
            }
            r->stats.not_found++;
            reply(q, 404, "Not Found", NULL);
            return;
        }
    }
    /* RFC 3261 §16.3 item 3. */
    if (f.max_forwards == 0) {
        if (is_ack) {
            r->stats.acks_absorbed++;
            return;
        }
        r->stats.too_many_hops++;
        reply(q, 483, "Too Many Hops", NULL);
        return;
    }
    if (!request_authorize(q))
        return;
    forward_request(q, &f);
}

/* ---- responses --------------------------------------------------------------------- */

/*
 * RFC 5626 §5.3: a 430 for a request we routed to a binding says the flow behind it is
 * gone. The binding is removed only when sb=SLOT.GEN.MAC verifies for the response's
 * branch, Call-ID and CSeq (sb_mac_hex) and the response came from the hop we sent the
 * request to; anything else naming a binding is counted as forged and changes nothing.
 */
static void flow_failed(struct registrar *r, const struct sip_view *v, struct slice sbv,
                        const struct sockaddr *src)
{
    long dot1 = slice_find(sbv, '.');
    struct slice after =
        dot1 > 0 ? slice_make(sbv.p + dot1 + 1, sbv.len - (size_t)dot1 - 1) : SLICE_NULL;
    long dot2 = slice_find(after, '.');
    uint32_t slot, gen;
    if (dot1 <= 0 || dot2 <= 0 ||
        slice_to_u32(slice_make(sbv.p, (size_t)dot1), UINT32_MAX, &slot) != 0 ||
        slice_to_u32(slice_make(after.p, (size_t)dot2), UINT32_MAX, &gen) != 0) {
        r->stats.forged_430++;
        return;
    }
    struct slice got = slice_make(after.p + dot2 + 1, after.len - (size_t)dot2 - 1);
    if (!sb_mac_ok(r, slot, gen, v->via.branch, v->call_id, v->cseq, got)) {
        r->stats.forged_430++;
        log_info("registrar: 430 with a bad sb MAC ignored");
        return;
    }
    struct location_binding *b = location_get(r->loc, slot, gen);
    if (!b)
        return; /* genuine, but the binding is already gone */
    struct sockaddr_storage hop;
    socklen_t hop_len = 0;
    binding_next_hop(b, &hop, &hop_len);
    /* Only the hop we sent the request to may declare its flow dead. */
    if (!netaddr_eq((const struct sockaddr *)&hop, src)) {
        r->stats.forged_430++;
        return;
    }
    log_info("registrar: %s: 430 Flow Failed, removed binding %s", b->aor, b->contact);
    location_remove(r->loc, b);
    r->stats.flow_failed++;
}

/*
 * Stateless response forwarding (RFC 3261 §16.7 step 3, §18.2.2): our Via must be on
 * top; it is popped and the response goes to the next Via's received/rport or sent-by.
 * 100 Trying is dropped: it only stops retransmissions of the hop that sent it, and a
 * stateless element has no transaction whose retransmissions it could stop upstream.
 */
static void handle_response(struct registrar *r, const struct sip_msg *m,
                            const struct sip_view *v, const struct sockaddr *src)
{
    const struct sip_via *top = &v->via;
    if (!is_self_hostport(r, top->host, top->port) || !slice_case_prefix(top->branch, BRANCH_COOKIE)) {
        r->stats.responses_dropped++;
        return;
    }
    if (m->status == 100) {
        r->stats.responses_dropped++;
        return;
    }
    struct slice sbv;
    if (m->status == 430 && sip_params_get(top->params, "sb", &sbv))
        flow_failed(r, v, sbv, src);
    struct sip_via next;
    struct sip_edit plan = {0};
    struct sockaddr_storage dst;
    if (sip_edit_pop_via(m, v, &next, &plan) < 0 || sip_via_response_addr(&next, &dst) < 0) {
        r->stats.responses_dropped++;
        return;
    }
    struct sip_build sb;
    sip_build_init(&sb, r->out, sizeof(r->out));
    sip_build_mem(&sb, m->buf, m->start_line_len);
    sip_edit_copy(&sb, m, &plan);
    size_t len;
    if (sip_build_finish(&sb, &len) != 0) {
        r->stats.send_errors++;
        return;
    }
    r->stats.responses_fwd++;
    send_to(r, (const struct sockaddr *)&dst, netaddr_len((const struct sockaddr *)&dst), r->out,
            len);
}

/* ---- interface --------------------------------------------------------------------- */

/* Keys r->sb_keys with key (REGISTRAR_BRANCH_KEY_LEN bytes) or, when NULL, a random one.
 * Returns 0 or -ENOMEM. */
static int sb_mac_new(struct registrar *r, const uint8_t *key)
{
    uint8_t k[REGISTRAR_BRANCH_KEY_LEN];
    if (key)
        memcpy(k, key, sizeof(k));
    else if (RAND_bytes(k, sizeof(k)) != 1)
        return -ENOMEM;
    int rc = flow_token_keys_new(&r->sb_keys, k, NULL);
    /* The branch key comes from the same secret, so branches survive a restart with it. */
    uint64_t a, b;
    memcpy(&a, k, sizeof(a));
    memcpy(&b, k + sizeof(a), sizeof(b));
    r->branch_k0 = siphash13(a, b, "branch.0", 8);
    r->branch_k1 = siphash13(a, b, "branch.1", 8);
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

/* ---- persistence ------------------------------------------------------------------- */

static int64_t wall_ms(void) { return (int64_t)statefile_wall_ms(); }

struct restore {
    struct registrar *r;
    int64_t wall_ms;
    size_t n_restored, n_expired, n_refused;
};

/* One stored row back into the table, its times still unix ms (rebase_times converts
 * them once now_ms is known). Expired rows and rows the table has no room for are left
 * out, and so deleted by the rewrite that follows. */
static int restore_row(void *ctx, const struct location_binding *src, int64_t expires_unix_ms,
                       int64_t updated_unix_ms)
{
    struct restore *rs = ctx;
    struct registrar *r = rs->r;
    if (expires_unix_ms <= rs->wall_ms) {
        rs->n_expired++;
        return 0;
    }
    struct location_binding *b;
    if (location_add(r->loc, src->aor, &b) != 0) {
        rs->n_refused++; /* a smaller table than the one that wrote the file */
        return 0;
    }
    memcpy(b->contact, src->contact, sizeof(b->contact));
    b->q = src->q;
    /* A clock set back must not make a binding outlive the longest expires we grant. */
    int64_t max_left = (int64_t)r->policy.max_expires_s * 1000;
    if (expires_unix_ms - rs->wall_ms > max_left)
        expires_unix_ms = rs->wall_ms + max_left;
    b->expires_at_ms = (uint64_t)expires_unix_ms;
    b->updated_ms = updated_unix_ms > 0 ? (uint64_t)updated_unix_ms : 0;
    memcpy(b->call_id, src->call_id, sizeof(b->call_id));
    b->cseq = src->cseq;
    memcpy(b->path, src->path, sizeof(b->path));
    b->received = src->received;
    b->received_len = src->received_len;
    memcpy(b->instance, src->instance, sizeof(b->instance));
    b->reg_id = src->reg_id;
    b->has_reg_id = src->has_reg_id;
    memcpy(b->user_agent, src->user_agent, sizeof(b->user_agent));
    rs->n_restored++;
    return 0;
}

/*
 * Rows are keyed by slot, and the restored bindings got new slots: the table is
 * rewritten under them in the transaction that read it, so a crash during start-up
 * leaves the old rows or the new ones. Returns 0 or a negative errno (err filled).
 */
static int store_restore(struct registrar *r, char *err, size_t errcap)
{
    struct restore rs = {.r = r, .wall_ms = wall_ms()};
    int rc = reg_store_begin(r->store);
    if (rc == 0)
        rc = reg_store_load(r->store, restore_row, &rs, err, errcap);
    if (rc == 0)
        rc = reg_store_clear(r->store);
    for (uint32_t i = 0; rc == 0 && i < location_n_slots(r->loc); i++) {
        const struct location_binding *b = location_slot(r->loc, i);
        if (b->is_used)
            rc = reg_store_put(r->store, b, 0);
    }
    if (rc == 0)
        rc = reg_store_commit(r->store);
    if (rc != 0) {
        if (!err[0])
            snprintf(err, errcap, "registrar store %s: cannot rewrite the bindings: %s",
                     reg_store_path(r->store), reg_store_errmsg(r->store));
        reg_store_rollback(r->store);
        return -EIO;
    }
    location_changes_clear(r->loc); /* what the table holds is what the file holds */
    r->is_rebase_pending = rs.n_restored > 0;
    log_info("registrar: %s: %zu bindings restored, %zu expired dropped, %zu did not fit",
             reg_store_path(r->store), rs.n_restored, rs.n_expired, rs.n_refused);
    return 0;
}

/* Opens the store and loads it. Fresh generations first: a (slot, gen) that a request
 * routed by the previous process carries in sb= must not name a restored binding. */
static int store_start(struct registrar *r, const char *path, char *err, size_t errcap)
{
    uint32_t gen;
    if (RAND_bytes((unsigned char *)&gen, sizeof(gen)) != 1)
        return -ENOMEM;
    location_seed_gen(r->loc, gen);
    int rc = location_track(r->loc);
    if (rc != 0)
        return rc;
    rc = reg_store_open(&r->store, path, err, errcap);
    if (rc == 0)
        rc = store_restore(r, err, errcap);
    return rc;
}

/* Restored times are unix ms until the first now_ms: moved onto that clock here. */
static void rebase_times(struct registrar *r, uint64_t now_ms)
{
    r->now_ms = now_ms;
    if (!r->is_rebase_pending)
        return;
    r->is_rebase_pending = false;
    int64_t offset = wall_ms() - (int64_t)now_ms;
    for (uint32_t i = 0; i < location_n_slots(r->loc); i++) {
        struct location_binding *b = location_slot(r->loc, i);
        if (!b->is_used)
            continue;
        int64_t e = (int64_t)b->expires_at_ms - offset, u = (int64_t)b->updated_ms - offset;
        b->expires_at_ms = e > 0 ? (uint64_t)e : 0;
        b->updated_ms = u > 0 ? (uint64_t)u : 0;
    }
}

int registrar_flush(struct registrar *r)
{
    if (!r->store)
        return 0;
    size_t n;
    const uint32_t *changed = location_changes(r->loc, &n);
    if (n == 0)
        return 0;
    /* Every change was made at most one flush interval before r->now_ms was taken, so
     * this maps its monotonic times to the wall clock within that interval. */
    int64_t offset = wall_ms() - (int64_t)r->now_ms;
    int rc = reg_store_begin(r->store);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct location_binding *b = location_slot(r->loc, changed[i]);
        rc = b->is_used ? reg_store_put(r->store, b, offset) : reg_store_del(r->store, b->slot);
    }
    if (rc == 0)
        rc = reg_store_commit(r->store);
    if (rc != 0) {
        /* The changes stay queued: the next flush writes them. */
        if (!r->is_store_failing)
            log_error("registrar store %s: cannot write %zu changes: %s", reg_store_path(r->store),
                      n, reg_store_errmsg(r->store));
        r->is_store_failing = true;
        reg_store_rollback(r->store);
        return rc;
    }
    if (r->is_store_failing)
        log_info("registrar store %s: writing again", reg_store_path(r->store));
    r->is_store_failing = false;
    location_changes_clear(r->loc);
    return 0;
}

/* ---- interface --------------------------------------------------------------------- */

int registrar_new(struct registrar **out, const struct registrar_opts *opts, registrar_send_cb send,
                  void *send_ctx, char *err, size_t errcap)
{
    if (!out || !opts || !opts->self || !opts->policy || !send ||
        (opts->n_trusted && !opts->trusted) || (opts->n_peers && !opts->peers)) {
        snprintf(err, errcap, "registrar: bad options");
        return -EINVAL;
    }
    const struct policy *pol = opts->policy;
    const char *realm = opts->realm ? opts->realm : opts->self->host;
    if (strlen(realm) >= sizeof(((struct registrar *)0)->realm) || pol->max_bindings == 0 ||
        pol->max_contacts_per_aor == 0 || pol->min_expires_s > pol->max_expires_s) {
        snprintf(err, errcap, "registrar: bad realm or policy bounds");
        return -EINVAL;
    }
    struct registrar *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = 0;
    r->self = *opts->self;
    snprintf(r->realm, sizeof(r->realm), "%s", realm);
    r->policy = *pol;
    r->send = send;
    r->send_ctx = send_ctx;
    r->max_hdrs = pol->max_headers ? pol->max_headers : REGISTRAR_DEFAULT_HEADERS;
    r->found_cap = pol->max_contacts_per_aor;
    r->hdrs = calloc(r->max_hdrs, sizeof(*r->hdrs));
    r->found = calloc(r->found_cap, sizeof(*r->found));
    if (opts->n_trusted) {
        r->trusted = calloc(opts->n_trusted, sizeof(*r->trusted));
        if (r->trusted) {
            memcpy(r->trusted, opts->trusted, opts->n_trusted * sizeof(*r->trusted));
            r->n_trusted = opts->n_trusted;
        }
    }
    if (opts->n_peers) {
        r->peers = calloc(opts->n_peers, sizeof(*r->peers));
        if (r->peers) {
            memcpy(r->peers, opts->peers, opts->n_peers * sizeof(*r->peers));
            r->n_peers = opts->n_peers;
        }
    }
    if (!r->hdrs || !r->found || (opts->n_trusted && !r->trusted) || (opts->n_peers && !r->peers)) {
        rc = -ENOMEM;
        goto out;
    }
    rc = sb_mac_new(r, opts->branch_key);
    if (rc != 0)
        goto out;
    rc = location_new(&r->loc, pol->max_bindings, pol->max_contacts_per_aor);
    if (rc != 0)
        goto out;
    if (opts->users_file)
        rc = digest_new(&r->dig, opts->users_file, r->realm, err, errcap);
    if (rc == 0 && r->dig)
        digest_nc_size(r->dig, opts->nonce_count_slots);
    if (rc == 0 && opts->db_path)
        rc = store_start(r, opts->db_path, err, errcap);
out:
    if (rc != 0) {
        if (rc == -ENOMEM)
            snprintf(err, errcap, "registrar: out of memory");
        registrar_free(r);
        return rc == -ENOMEM || rc == -EIO || rc == -EPROTO ? rc : -EINVAL;
    }
    *out = r;
    return 0;
}

void registrar_free(struct registrar *r)
{
    if (!r)
        return;
    reg_store_close(r->store);
    digest_free(r->dig);
    flow_token_keys_free(r->sb_keys);
    location_free(r->loc);
    free(r->trusted);
    free(r->peers);
    free(r->found);
    free(r->hdrs);
    free(r);
}

void registrar_handle(struct registrar *r, const char *buf, size_t len, const struct sockaddr *src,
                      socklen_t src_len, uint64_t now_ms)
{
    rebase_times(r, now_ms);
    struct sip_msg m;
    struct sip_err err = {0};
    struct sip_limits limits = {
        .max_msg_bytes = r->policy.max_message_bytes ? r->policy.max_message_bytes : 65535,
        .max_headers = r->max_hdrs,
    };
    if (sip_msg_parse(&m, buf, len, r->hdrs, &limits, &err) != 0) {
        /* The parser gives no message to answer from on failure; the edge in front has
         * already answered 400 to clients, so dropping here costs nothing. */
        r->stats.dropped_bad++;
        log_debug("registrar: unparsable message dropped: %s", err.reason ? err.reason : "?");
        return;
    }
    if (sip_check_view(&m, &err, &r->view) != 0) {
        r->stats.dropped_bad++;
        if (m.is_request && m.method_id != SIP_METHOD_ACK && err.status >= 400) {
            struct req bad = {.r = r, .m = &m, .src = src, .src_len = src_len, .now_ms = now_ms};
            reply(&bad, err.status, err.reason ? err.reason : "Bad Request", NULL);
        }
        return;
    }
    if (!m.is_request) {
        handle_response(r, &m, &r->view, src);
        return;
    }
    struct req q = {.r = r, .m = &m, .v = &r->view, .src = src, .src_len = src_len,
                    .now_ms = now_ms};
    if (m.method_id == SIP_METHOD_REGISTER)
        handle_register(&q);
    else
        handle_request(&q);
}

void registrar_tick(struct registrar *r, uint64_t now_ms)
{
    rebase_times(r, now_ms);
    size_t n = location_expire(r->loc, now_ms);
    if (n) {
        r->stats.expired += n;
        log_debug("registrar: %zu bindings expired", n);
    }
}

void registrar_set_policy(struct registrar *r, const struct policy *pol)
{
    if (pol->min_expires_s > pol->max_expires_s) {
        log_warn("registrar: policy with min_expires above max_expires ignored");
        return;
    }
    /* The location pool, per-AOR scratch and header array were sized by registrar_new
     * and are not reallocated under live bindings: those bounds keep their values. */
    struct policy keep = r->policy;
    r->policy = *pol;
    r->policy.max_bindings = keep.max_bindings;
    r->policy.max_contacts_per_aor = keep.max_contacts_per_aor;
    r->policy.max_headers = keep.max_headers;
}

size_t registrar_n_bindings(const struct registrar *r)
{
    return location_count(r->loc);
}

void registrar_stats(const struct registrar *r, struct registrar_stats *out)
{
    *out = r->stats;
    if (r->dig)
        out->nc_table_full = digest_nc_full(r->dig);
}
