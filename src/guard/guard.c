/*
 * guard: admission verdicts and strike bookkeeping over the pure pieces (ratelim, strikes,
 * allowlist, keytab) and the ban engine: rate limits, request checks, strikes, bans and
 * their escalation, flows per address, the tick. Construction, policy reload and the
 * accessors are in guard_life.c; the state both share is in guard_impl.h.
 *
 * Sources live in one bounded table with two kinds of entries: the address (port 0) and
 * the (address, port) pair. Limits and strikes are counted on both, so ten phones behind
 * one NAT address are judged one by one, while a source that spreads over many ports is
 * still caught on its address.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard/guard_impl.h"
#include "sipedge/log.h"

static struct guard_verdict verdict(enum guard_action a, uint16_t status, enum guard_reason r)
{
    return (struct guard_verdict){.action = a, .status = status, .reason = r};
}

static struct guard_verdict over_limit_verdict(struct guard *g, enum guard_reason r)
{
    if (g->pol.guard_over_limit_action == POLICY_OVER_LIMIT_DROP)
        return verdict(GUARD_DROP, 0, r);
    struct guard_verdict v = verdict(GUARD_REJECT, 503, r);
    uint32_t lo = g->pol.guard_retry_after_min_s, hi = g->pol.guard_retry_after_max_s;
    if (hi < lo)
        hi = lo;
    v.retry_after_s = lo + (uint32_t)(guard_rng_next(g) % ((uint64_t)hi - lo + 1));
    return v;
}

static uint32_t weight_of(const struct guard *g, enum guard_reason r)
{
    const struct policy *p = &g->pol;
    switch (r) {
    case GUARD_REASON_MALFORMED:
        return p->guard_w_malformed;
    case GUARD_REASON_AUTH_FAILURE:
        return p->guard_w_auth_failure;
    case GUARD_REASON_FORBIDDEN:
        return p->guard_w_forbidden;
    case GUARD_REASON_NOT_FOUND:
        return p->guard_w_not_found;
    case GUARD_REASON_SCANNER:
        return p->guard_w_scanner;
    case GUARD_REASON_UNKNOWN_DOMAIN:
        return p->guard_w_unknown_domain;
    case GUARD_REASON_OVER_LIMIT:
        return p->guard_w_over_limit;
    case GUARD_REASON_USER_SCAN:
        return p->guard_w_user_scan;
    default:
        return 0;
    }
}

static uint64_t window_ms(const struct guard *g)
{
    return (uint64_t)g->pol.guard_window_s * 1000;
}

/* The address key of kp: port 0, and an IPv6 address cut to ipv6_prefix bits, so one
 * prefix is limited, struck and banned as one source however it rotates addresses. */
static struct ban_key addr_key(const struct guard *g, const struct ban_key *kp)
{
    struct ban_key ka = *kp;
    ka.port = 0;
    if (ka.family == AF_INET6 && g->pol.guard_ipv6_prefix < 128) {
        unsigned bits = g->pol.guard_ipv6_prefix;
        for (unsigned i = 0; i < 16; i++) {
            unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
            ka.addr[i] &= (uint8_t)(0xff00u >> keep);
        }
    }
    return ka;
}

/* (address, port) and address keys of src; -EAFNOSUPPORT for other families. */
static int src_keys(const struct guard *g, const struct sockaddr *src, struct ban_key *kp,
                    struct ban_key *ka)
{
    int rc = ban_key_from_sockaddr(src, true, kp);
    if (rc == 0)
        *ka = addr_key(g, kp);
    return rc;
}

/* ---- source table ----------------------------------------------------------------------- */

static struct guard_src *src_get(struct guard *g, const struct ban_key *k, bool create,
                                 uint64_t now)
{
    struct guard_src *s = keytab_find(&g->srcs, k);
    if (s == NULL && create) {
        s = keytab_insert(&g->srcs, k);
        if (s != NULL) {
            uint32_t burst = k->port == 0 ? g->pol.guard_ip_burst : g->pol.guard_ip_port_burst;
            ratelim_init(&s->bucket, burst, now);
            strikes_init(&s->strikes);
        }
    }
    if (s != NULL)
        s->last_seen_ms = now;
    return s;
}

static void copy_aor(char *dst, size_t cap, struct slice aor)
{
    if (aor.len == 0 || aor.p == NULL)
        return;
    size_t n = aor.len < cap - 1 ? aor.len : cap - 1;
    memcpy(dst, aor.p, n);
    dst[n] = '\0';
}

/* ---- events ----------------------------------------------------------------------------- */

static void emit(struct guard *g, const char *event, const struct ban_key *k, const char *reason,
                 int64_t strikes, int64_t duration_s, const char *aor)
{
    char addr[BAN_ADDR_MAX];
    struct events_rec r = {
        .event = event,
        .source = k != NULL ? ban_key_format_addr(k, addr, sizeof(addr)) : NULL,
        .port = k != NULL ? k->port : 0,
        .reason = reason,
        .aor = aor != NULL && aor[0] != '\0' ? aor : NULL,
        .strikes = strikes,
        .duration_s = duration_s,
    };
    events_emit(g->ev, &r);
}

/* ---- bans --------------------------------------------------------------------------------- */

/* duration_s 0: the next ladder step; else that fixed duration (no escalation). */
static void impose(struct guard *g, const struct ban_key *k, enum guard_reason why,
                   uint32_t strikes, const char *aor, uint32_t duration_s, uint64_t now)
{
    char addr[BAN_ADDR_MAX];
    struct ban_entry e;
    int rc = ban_impose(g->ban, k, duration_s, BAN_ORIGIN_STRIKES, now, &e);
    if (rc == -ENOSPC) {
        g->stats.bans_refused_full++;
        emit(g, "ban_refused", k, "table_full", strikes, -1, aor);
        if (g->full_logged_ms == 0 || now - g->full_logged_ms >= 10000) {
            g->full_logged_ms = now;
            log_warn("guard: ban table full (%u bans), refusing to ban %s port %u (%s)",
                     (unsigned)g->pol.guard_max_bans, ban_key_format_addr(k, addr, sizeof(addr)),
                     k->port, guard_reason_name(why));
        }
        return;
    }
    if (rc != 0)
        return;
    g->stats.bans++;
    emit(g, "ban", k, guard_reason_name(why), strikes, e.duration_s, aor);
    log_info("guard: banned %s port %u for %us (%s, %u strikes, %s%u)",
             ban_key_format_addr(k, addr, sizeof(addr)), k->port, (unsigned)e.duration_s,
             guard_reason_name(why), (unsigned)strikes, duration_s != 0 ? "unproven, " : "step ",
             duration_s != 0 ? 0u : e.level + 1u);
}

static bool same_addr(const struct ban_key *a, const struct ban_key *b)
{
    return a->family == b->family && memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

static struct ban_key addr_key(const struct guard *g, const struct ban_key *kp);

/* The address of k (port ignored) is one of the core side's, or for IPv6 shares its
 * ipv6_prefix with one: an address ban of that prefix would cut the core side off. */
bool guard_is_protected(const struct guard *g, const struct ban_key *k)
{
    struct ban_key m = addr_key(g, k);
    for (unsigned i = 0; i < g->n_protected; i++) {
        struct ban_key pm = addr_key(g, &g->protected_keys[i]);
        if (same_addr(&pm, &m))
            return true;
    }
    return false;
}

/* Never banned: allowlisted (the address itself) or core side. */
static bool is_exempt(const struct guard *g, const struct ban_key *k)
{
    return allowlist_match(&g->allow, k) || guard_is_protected(g, k);
}

/* An address ban of ka (IPv6: a prefix) would cover an allowlisted address. */
static bool covers_allowed(const struct guard *g, const struct ban_key *ka)
{
    unsigned bits = ka->family == AF_INET6 ? g->pol.guard_ipv6_prefix : 32;
    return allowlist_overlaps(&g->allow, ka, bits);
}

static bool is_proven(const struct guard_src *p, uint64_t now)
{
    return p != NULL && (p->proven_until_ms > now || p->auth_until_ms > now);
}

/*
 * Adds a strike and decides the ban. An (address, port) without proof of return
 * routability is charged alone (its address may be forged): at threshold it is banned for
 * unproven_duration, without the ladder, and the address is never charged. A proven one
 * charges the address and the (address, port) entries:
 *  - the address crosses ip_threshold: the whole address;
 *  - scope ip, the address crosses threshold and no other port of it authenticated
 *    recently: the whole address;
 *  - the pair crosses threshold: only (address, port).
 */
static void strike(struct guard *g, const struct sockaddr *src, enum guard_reason why,
                   struct slice aor, uint64_t now)
{
    struct ban_key kp, ka;
    uint32_t w = weight_of(g, why);
    if (w == 0 || src_keys(g, src, &kp, &ka) != 0)
        return;
    if (is_exempt(g, &kp)) {
        g->stats.strikes_allowlisted++;
        return;
    }
    if (ban_is_banned(g->ban, &ka, now) || ban_is_banned(g->ban, &kp, now))
        return;
    g->stats.strikes++;
    uint64_t win = window_ms(g);
    struct guard_src *p = src_get(g, &kp, false, now);
    if (!is_proven(p, now)) {
        p = p != NULL ? p : src_get(g, &kp, true, now);
        if (p == NULL) {
            g->stats.strikes_untracked++;
            return;
        }
        g->stats.strikes_unproven++;
        uint32_t sum = strikes_add(&p->strikes, w, win, now);
        copy_aor(p->aor, sizeof(p->aor), aor);
        if (sum >= g->pol.guard_threshold) {
            g->stats.bans_unproven++;
            impose(g, &kp, why, sum, p->aor, g->pol.guard_unproven_ban_s, now);
            strikes_reset(&p->strikes);
        }
        return;
    }
    struct guard_src *a = src_get(g, &ka, true, now);
    if (a == NULL) {
        g->stats.strikes_untracked++;
        return;
    }
    uint32_t a_sum = strikes_add(&a->strikes, w, win, now);
    uint32_t p_sum = p != NULL ? strikes_add(&p->strikes, w, win, now) : 0;
    copy_aor(a->aor, sizeof(a->aor), aor);
    if (p != NULL)
        copy_aor(p->aor, sizeof(p->aor), aor);
    bool other_auth = a->auth_until_ms > now && memcmp(&a->auth_src, &kp, sizeof(kp)) != 0;
    /* A prefix holding an allowlisted address is banned per (address, port) only. */
    if (!covers_allowed(g, &ka) &&
        (a_sum >= g->pol.guard_ip_threshold ||
         (g->pol.guard_ban_scope == POLICY_BAN_SCOPE_IP && a_sum >= g->pol.guard_threshold &&
          !other_auth))) {
        impose(g, &ka, why, a_sum, a->aor, 0, now);
        strikes_reset(&a->strikes);
        if (p != NULL)
            strikes_reset(&p->strikes);
    } else if (p != NULL && p_sum >= g->pol.guard_threshold) {
        impose(g, &kp, why, p_sum, p->aor, 0, now);
        strikes_reset(&p->strikes);
    }
}

/* ---- decisions -------------------------------------------------------------------------- */

struct guard_verdict guard_admit(struct guard *g, const struct sockaddr *src, uint64_t now_ms)
{
    struct ban_key kp, ka;
    g->now_ms = now_ms;
    if (src_keys(g, src, &kp, &ka) != 0)
        return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
    if (ban_is_banned(g->ban, &ka, now_ms) || ban_is_banned(g->ban, &kp, now_ms)) {
        g->stats.drop_banned++;
        return verdict(GUARD_DROP, 0, GUARD_REASON_BANNED);
    }
    const struct policy *p = &g->pol;
    struct guard_src *a = src_get(g, &ka, true, now_ms);
    struct guard_src *pp = NULL;
    bool a_empty = false;
    if (a != NULL) {
        ratelim_refill(&a->bucket, p->guard_ip_rate, p->guard_ip_burst, now_ms);
        /* An address (IPv6: prefix) over its limit gets no new (address, port) entries: by
         * rotating ports or addresses it cannot fill the table faster than its rate. */
        a_empty = ratelim_tokens(&a->bucket) < 1;
        pp = src_get(g, &kp, !a_empty, now_ms);
    }
    if (a == NULL || (pp == NULL && !a_empty)) {
        /* No room to track this source: it shares one bucket with every other such source,
         * so a flood of new addresses gets one source's budget in total. */
        g->stats.sources_full++;
        if (ratelim_allow(&g->overflow, p->guard_ip_rate, p->guard_ip_burst, now_ms)) {
            g->stats.admitted++;
            return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
        }
        g->stats.over_limit_overflow++;
        return over_limit_verdict(g, GUARD_REASON_RATE_OVERFLOW);
    }
    enum guard_reason why = GUARD_REASON_NONE;
    struct guard_src *over = NULL;
    if (a_empty) {
        why = GUARD_REASON_RATE_IP, over = a;
        g->stats.over_limit_ip++;
    } else {
        ratelim_refill(&pp->bucket, p->guard_ip_port_rate, p->guard_ip_port_burst, now_ms);
        if (ratelim_tokens(&pp->bucket) < 1) {
            why = GUARD_REASON_RATE_IP_PORT, over = pp;
            g->stats.over_limit_ip_port++;
        }
    }
    if (over == NULL) {
        ratelim_take(&a->bucket, 1);
        ratelim_take(&pp->bucket, 1);
        g->stats.admitted++;
        return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
    }
    /* One trip per second per source: one event and one over_limit strike, so a sustained
     * flood bans after threshold/weight seconds while the event log stays bounded. */
    if (over->last_trip_ms == 0 || now_ms - over->last_trip_ms >= 1000) {
        over->last_trip_ms = now_ms;
        g->stats.rate_trips++;
        if (!allowlist_match(&g->allow, &kp))
            emit(g, "rate_limit", over == a ? &ka : &kp, guard_reason_name(why),
                 strikes_sum(&over->strikes, window_ms(g), now_ms), -1, over->aor);
        strike(g, src, GUARD_REASON_OVER_LIMIT, SLICE_NULL, now_ms);
    }
    return over_limit_verdict(g, why);
}

static bool contains_ci(struct slice hay, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0 || hay.p == NULL || hay.len < n)
        return false;
    for (size_t i = 0; i + n <= hay.len; i++) {
        size_t j = 0;
        while (j < n && tolower((unsigned char)hay.p[i + j]) == tolower((unsigned char)needle[j]))
            j++;
        if (j == n)
            return true;
    }
    return false;
}

static bool domain_served(const struct guard *g, struct slice d)
{
    const struct config *c = g->cfg;
    if (c == NULL || c->n_domains == 0)
        return true;
    /* Host part only: "[v6]:port" or "host:port". */
    if (d.len > 0 && d.p[0] == '[') {
        long close = slice_find(d, ']');
        if (close > 0)
            d = slice_make(d.p + 1, (size_t)close - 1);
    } else {
        long colon = slice_find(d, ':');
        if (colon >= 0)
            d = slice_make(d.p, (size_t)colon);
    }
    for (unsigned i = 0; i < c->n_domains; i++)
        if (slice_case_eq_str(d, c->domains[i]))
            return true;
    return false;
}

static struct slice aor_of(struct slice user, struct slice domain, char *buf, size_t cap)
{
    if (user.len == 0 && domain.len == 0)
        return SLICE_NULL;
    int n = snprintf(buf, cap, "%.*s@%.*s", SLICE_FMT(user), SLICE_FMT(domain));
    if (n < 0)
        return SLICE_NULL;
    return slice_make(buf, (size_t)n < cap ? (size_t)n : cap - 1);
}

struct guard_verdict guard_check_request(struct guard *g, const struct sockaddr *src,
                                         struct slice method, struct slice user_agent,
                                         struct slice to_user, struct slice to_domain,
                                         bool has_credentials, uint64_t now_ms)
{
    (void)method;
    (void)has_credentials;
    char buf[GUARD_AOR_KEEP];
    g->now_ms = now_ms;
    for (unsigned i = 0; i < g->pol.n_guard_scanners; i++) {
        if (contains_ci(user_agent, g->pol.guard_scanners[i])) {
            g->stats.scanner++;
            strike(g, src, GUARD_REASON_SCANNER, aor_of(to_user, to_domain, buf, sizeof(buf)),
                   now_ms);
            return verdict(GUARD_DROP, 0, GUARD_REASON_SCANNER);
        }
    }
    if (to_domain.len > 0 && !domain_served(g, to_domain)) {
        g->stats.unknown_domain++;
        strike(g, src, GUARD_REASON_UNKNOWN_DOMAIN, aor_of(to_user, to_domain, buf, sizeof(buf)),
               now_ms);
        return verdict(GUARD_REJECT, 403, GUARD_REASON_UNKNOWN_DOMAIN);
    }
    return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
}

static void aor_key(struct slice aor, char key[GUARD_AOR_KEY])
{
    memset(key, 0, GUARD_AOR_KEY);
    /* AORs longer than the key share their prefix's bucket: a bound, not a hole, since
     * they still pass the registrar budget. */
    size_t n = aor.len < GUARD_AOR_KEY ? aor.len : GUARD_AOR_KEY;
    for (size_t i = 0; i < n; i++)
        key[i] = (char)tolower((unsigned char)aor.p[i]);
}

struct guard_verdict guard_admit_register(struct guard *g, const struct sockaddr *src,
                                          struct slice aor, bool is_known_authenticated_flow,
                                          unsigned cost, uint64_t now_ms)
{
    const struct policy *p = &g->pol;
    g->now_ms = now_ms;
    if (aor.len > 0 && aor.p != NULL) {
        char key[GUARD_AOR_KEY];
        aor_key(aor, key);
        struct guard_aor *e = keytab_find(&g->aors, key);
        if (e == NULL) {
            e = keytab_insert(&g->aors, key);
            if (e != NULL)
                ratelim_init(&e->bucket, p->guard_aor_burst, now_ms);
        }
        bool ok;
        if (e != NULL) {
            e->last_seen_ms = now_ms;
            ok = ratelim_allow(&e->bucket, p->guard_aor_rate, p->guard_aor_burst, now_ms);
        } else {
            g->stats.aors_full++;
            ok = ratelim_allow(&g->overflow_aor, p->guard_aor_rate * 16, p->guard_aor_burst * 16,
                               now_ms);
        }
        if (!ok) {
            g->stats.over_limit_aor++;
            if (e != NULL && (e->last_trip_ms == 0 || now_ms - e->last_trip_ms >= 1000)) {
                struct ban_key k;
                char a[GUARD_AOR_KEEP];
                e->last_trip_ms = now_ms;
                g->stats.rate_trips++;
                copy_aor(a, sizeof(a), aor);
                if (ban_key_from_sockaddr(src, true, &k) == 0)
                    emit(g, "rate_limit", &k, guard_reason_name(GUARD_REASON_RATE_AOR), -1, -1,
                         a);
                strike(g, src, GUARD_REASON_OVER_LIMIT, aor, now_ms);
            }
            return over_limit_verdict(g, GUARD_REASON_RATE_AOR);
        }
    }
    if (cost == 0) {
        g->stats.registrar_prepaid_served++;
        return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
    }
    /* Known flows draw from their reserved share first, then from the general budget;
     * everyone else only from the general budget, so a flood of unknown sources cannot take
     * the share that keeps existing users registered. */
    uint64_t known_rate = (uint64_t)p->guard_registrar_rate * p->guard_registrar_reserved_pct / 100;
    uint64_t known_burst =
        (uint64_t)p->guard_registrar_burst * p->guard_registrar_reserved_pct / 100;
    uint32_t gen_rate = (uint32_t)(p->guard_registrar_rate - known_rate);
    uint32_t gen_burst = (uint32_t)(p->guard_registrar_burst - known_burst);
    if (is_known_authenticated_flow && known_burst > 0 &&
        ratelim_allow_n(&g->reg_known, (uint32_t)(known_rate ? known_rate : 1),
                        (uint32_t)known_burst, cost, now_ms)) {
        g->stats.registrar_known_served++;
        return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
    }
    if (gen_burst > 0 &&
        ratelim_allow_n(&g->reg_general, gen_rate ? gen_rate : 1, gen_burst, cost, now_ms))
        return verdict(GUARD_PASS, 0, GUARD_REASON_NONE);
    g->stats.over_limit_registrar++;
    if (g->reg_last_trip_ms == 0 || now_ms - g->reg_last_trip_ms >= 1000) {
        g->reg_last_trip_ms = now_ms;
        g->stats.rate_trips++;
        emit(g, "rate_limit", NULL, guard_reason_name(GUARD_REASON_RATE_REGISTRAR), -1, -1, NULL);
    }
    return over_limit_verdict(g, GUARD_REASON_RATE_REGISTRAR);
}

static void note_not_found(struct guard *g, const struct sockaddr *src, struct slice aor,
                           uint64_t now)
{
    struct ban_key kp, ka;
    if (aor.len == 0 || src_keys(g, src, &kp, &ka) != 0)
        return;
    struct guard_src *a = src_get(g, &ka, true, now);
    if (a == NULL)
        return;
    if (a->n_users == 0 || now - a->users_since_ms > window_ms(g)) {
        a->n_users = 0;
        a->users_since_ms = now;
    }
    char key[GUARD_AOR_KEY];
    aor_key(aor, key);
    uint32_t h = (uint32_t)keytab_hash(&g->srcs, key, sizeof(key));
    for (unsigned i = 0; i < a->n_users; i++)
        if (a->users[i] == h)
            return;
    if (a->n_users < GUARD_USERS_MAX)
        a->users[a->n_users++] = h;
    if (a->n_users >= g->pol.guard_unknown_users) {
        a->n_users = 0;
        g->stats.user_scans++;
        strike(g, src, GUARD_REASON_USER_SCAN, aor, now);
    }
}

void guard_on_response(struct guard *g, const struct sockaddr *flow_src, unsigned status,
                       bool request_had_credentials, struct slice aor, uint64_t now_ms)
{
    g->now_ms = now_ms;
    if ((status == 401 || status == 407) && request_had_credentials) {
        g->stats.auth_failures++;
        strike(g, flow_src, GUARD_REASON_AUTH_FAILURE, aor, now_ms);
    } else if (status == 403) {
        strike(g, flow_src, GUARD_REASON_FORBIDDEN, aor, now_ms);
    } else if (status == 404) {
        strike(g, flow_src, GUARD_REASON_NOT_FOUND, aor, now_ms);
        note_not_found(g, flow_src, aor, now_ms);
    } else if (status >= 200 && status < 300 && request_had_credentials) {
        struct ban_key kp, ka;
        if (src_keys(g, flow_src, &kp, &ka) != 0)
            return;
        uint64_t until = now_ms + (uint64_t)g->pol.guard_auth_memory_s * 1000;
        struct guard_src *a = src_get(g, &ka, true, now_ms);
        struct guard_src *p = src_get(g, &kp, true, now_ms);
        if (p != NULL)
            p->auth_until_ms = until;
        if (a != NULL) {
            a->auth_until_ms = until;
            a->auth_src = kp;
        }
    }
}

void guard_strike_malformed(struct guard *g, const struct sockaddr *src, uint64_t now_ms)
{
    g->now_ms = now_ms;
    strike(g, src, GUARD_REASON_MALFORMED, SLICE_NULL, now_ms);
}

bool guard_is_authenticated(struct guard *g, const struct sockaddr *src, uint64_t now_ms)
{
    struct ban_key kp;
    if (ban_key_from_sockaddr(src, true, &kp) != 0)
        return false;
    const struct guard_src *p = keytab_find(&g->srcs, &kp);
    return p != NULL && p->auth_until_ms > now_ms;
}

static void on_expired(void *arg, const struct ban_entry *e)
{
    struct guard *g = arg;
    char addr[BAN_ADDR_MAX];
    g->stats.expired++;
    emit(g, "expire", &e->key, NULL, -1, e->duration_s, NULL);
    log_info("guard: ban of %s port %u expired after %us",
             ban_key_format_addr(&e->key, addr, sizeof(addr)), e->key.port,
             (unsigned)e->duration_s);
}

/* Idle long enough that the bucket would be full again and the window is empty. */
static uint64_t idle_ms(const struct guard *g)
{
    const struct policy *p = &g->pol;
    uint64_t m = window_ms(g);
    uint64_t refill = (uint64_t)p->guard_ip_port_burst * 1000 / p->guard_ip_port_rate;
    uint64_t refill_ip = (uint64_t)p->guard_ip_burst * 1000 / p->guard_ip_rate;
    uint64_t refill_aor = (uint64_t)p->guard_aor_burst * 1000 / p->guard_aor_rate;
    if (refill > m)
        m = refill;
    if (refill_ip > m)
        m = refill_ip;
    if (refill_aor > m)
        m = refill_aor;
    return m + 1000;
}

void guard_tick(struct guard *g, uint64_t now_ms)
{
    g->now_ms = now_ms;
    if (g->ev)
        g->stats.event_lines_dropped = events_n_dropped(g->ev);
    ban_tick(g->ban, now_ms, on_expired, g);
    uint64_t idle = idle_ms(g);
    /* Bounded work per tick: the tables are swept a slice at a time. */
    for (uint32_t n = 0; n < GUARD_TICK_SCAN && g->srcs.n_alloc > 0; n++) {
        uint32_t i = g->src_cursor++ % g->srcs.n_alloc;
        struct guard_src *s = keytab_at(&g->srcs, i);
        if (s != NULL && now_ms - s->last_seen_ms > idle && s->auth_until_ms <= now_ms &&
            s->proven_until_ms <= now_ms && s->flows == 0)
            keytab_remove(&g->srcs, s);
    }
    for (uint32_t n = 0; n < GUARD_TICK_SCAN && g->aors.n_alloc > 0; n++) {
        uint32_t i = g->aor_cursor++ % g->aors.n_alloc;
        struct guard_aor *a = keytab_at(&g->aors, i);
        if (a != NULL && now_ms - a->last_seen_ms > idle)
            keytab_remove(&g->aors, a);
    }
    if (g->state != NULL)
        guard_state_tick(g, now_ms);
}

int guard_ban(struct guard *g, const struct ban_key *key, uint32_t duration_s, uint64_t now_ms,
              struct ban_entry *out)
{
    char addr[BAN_ADDR_MAX];
    struct ban_key ka, kb;
    struct ban_entry e;
    if (key == NULL)
        return -EINVAL;
    g->now_ms = now_ms;
    ka = *key;
    ka.port = 0;
    if (is_exempt(g, &ka)) {
        g->stats.bans_allowlisted_skipped++;
        return -EPERM;
    }
    /* An IPv6 address ban covers its ipv6_prefix, as bans from strikes do. */
    kb = key->port == 0 ? addr_key(g, key) : *key;
    key = &kb;
    if (key->port == 0 && covers_allowed(g, key)) {
        g->stats.bans_allowlisted_skipped++;
        return -EPERM;
    }
    int rc = ban_impose(g->ban, key, duration_s, BAN_ORIGIN_ADMIN, now_ms, &e);
    if (rc == -ENOSPC) {
        g->stats.bans_refused_full++;
        emit(g, "ban_refused", key, "table_full", -1, duration_s, NULL);
    }
    if (rc != 0)
        return rc;
    g->stats.bans++;
    emit(g, "ban", key, "admin", -1, e.duration_s, NULL);
    log_info("guard: operator banned %s port %u for %us",
             ban_key_format_addr(key, addr, sizeof(addr)), key->port, (unsigned)e.duration_s);
    if (out != NULL)
        *out = e;
    return 0;
}

int guard_unban(struct guard *g, const struct ban_key *key, uint64_t now_ms)
{
    char addr[BAN_ADDR_MAX];
    g->now_ms = now_ms;
    if (key == NULL)
        return -EINVAL;
    struct ban_key kb = key->port == 0 ? addr_key(g, key) : *key;
    key = &kb;
    int rc = ban_lift(g->ban, key, now_ms);
    if (rc != 0)
        return rc;
    g->stats.unbans++;
    emit(g, "unban", key, "admin", -1, -1, NULL);
    log_info("guard: operator unbanned %s port %u", ban_key_format_addr(key, addr, sizeof(addr)),
             key->port);
    return 0;
}

void guard_note_proven(struct guard *g, const struct sockaddr *src, uint64_t now_ms)
{
    struct ban_key kp;
    g->now_ms = now_ms;
    if (ban_key_from_sockaddr(src, true, &kp) != 0)
        return;
    struct guard_src *p = src_get(g, &kp, true, now_ms);
    if (p != NULL)
        p->proven_until_ms = now_ms + (uint64_t)g->pol.guard_auth_memory_s * 1000;
}

int guard_flow_add(struct guard *g, const struct sockaddr *src, uint64_t now_ms)
{
    struct ban_key kp, ka;
    g->now_ms = now_ms;
    if (src_keys(g, src, &kp, &ka) != 0)
        return 0;
    /* Allowlisted and core-side sources are capped too: the cap bounds memory. */
    struct guard_src *a = src_get(g, &ka, true, now_ms);
    if (a == NULL) {
        /* The source table is full: admit uncounted (the flow table has its own bound). */
        g->stats.flows_untracked++;
        return 0;
    }
    if (a->flows >= g->pol.guard_max_flows_per_ip) {
        g->stats.flows_per_ip_full++;
        return -ENOSPC;
    }
    a->flows++;
    return 0;
}

void guard_flow_remove(struct guard *g, const struct sockaddr *src)
{
    struct ban_key kp, ka;
    if (src_keys(g, src, &kp, &ka) != 0)
        return;
    struct guard_src *a = keytab_find(&g->srcs, &ka);
    /* No entry or no count: the flow was admitted uncounted while the table was full. */
    if (a != NULL && a->flows > 0)
        a->flows--;
}
