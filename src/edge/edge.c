/*
 * edge: decisions for every datagram, and the rewrites they need.
 *
 * Public side (untrusted):  requests are checked, then relayed to the registrar with
 *   our Via (flow token in ;fl=), received/rport on the client's Via (RFC 3581),
 *   Max-Forwards, and for REGISTER a Path with the flow token (RFC 3327, RFC 5626 §5.1).
 *   Responses are accepted only when their top Via is one we added for an inbound
 *   request; they go on to the next Via over the core socket.
 * Core side (trusted peers only): responses are routed by the flow token in our Via;
 *   requests whose top Route carries our flow token are delivered to that flow
 *   (RFC 5626 §5.3: 403 for a token that fails its MAC, 430 for a flow that is gone).
 * Contact aliases (policy nat.contact_alias), for registrars that ignore Path: a
 *   REGISTER's Contact URIs are rewritten to aliases at our core address that carry the
 *   flow token and the original URI (edge_internal.h), and no Path is added. A request
 *   to such an alias is delivered like a Path-routed one, with the original URI as its
 *   Request-URI; the aliases in a REGISTER response are restored for the client.
 */
#include "sipedge/edge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "edge/edge_internal.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_edit.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/sip_reply.h"
#include "sipedge/siphash.h"
#include "sipedge/statefile.h"
#include "sipedge/stun.h"

#define EDGE_MAX_HDRS 256
#define EDGE_TX_MIN 65535
/* Our inbound Via branches start with this, so a client response can be recognised. */
#define EDGE_BRANCH_IN "z9hG4bKsE"
#define EDGE_BRANCH_OUT "z9hG4bKsO"
/* Branch of the edge's OPTIONS pings to NATed clients. */
#define EDGE_BRANCH_PING "z9hG4bKsK"
/* Branch of the edge's own de-REGISTER requests. */
#define EDGE_BRANCH_DEREG "z9hG4bKsD"
/* Branch of the edge's own re-REGISTER requests after a registrar outage. */
#define EDGE_BRANCH_RESYNC "z9hG4bKsR"
/* Branch of the edge's OPTIONS health checks of its registrars. */
#define EDGE_BRANCH_HEALTH "z9hG4bKsH"

/*
 * A registration relayed over a flow: what the edge needs to de-register it when the
 * flow dies (RFC 5626 §5.3 leaves that to the edge), bounded and owned by the flow.
 */
struct flow_reg {
    struct flow_reg *next;
    uint64_t until_ms; /* expiry granted by the registrar; 0 until a 2xx confirms it */
    uint32_t cseq;     /* highest CSeq relayed or answered from the cache */
    bool is_authed;    /* the confirming 2xx answered a request that carried credentials */
    bool is_aliased;   /* relayed with Contact aliases: the registrar holds those */
    uint32_t cache_epoch; /* the edge's regcache_epoch when a 2xx confirmed it */
    char aor[256];     /* To URI */
    char call_id[128];
    char contacts[512]; /* "<uri>, <uri>" as confirmed by the registrar's 2xx */
    char user_agent[96];
    /* The REGISTER relayed last for this AOR, until its own 2xx confirms it: a request
     * changes nothing the edge acts on (cache, de-REGISTER) before the registrar has
     * accepted exactly that request (AOR, Call-ID and CSeq of the response match). */
    bool has_pending;
    bool pend_is_removal;
    bool pend_is_aliased;
    uint32_t pend_cseq;
    char pend_call_id[128];
    char pend_contacts[512];
};

#define FLOW_REGS_MAX 8
#define EDGE_MAX_UPSTREAMS (1 + CONFIG_MAX_PEERS)
/* How long the answer to a challenge stays prepaid: 64*T1, a client transaction's life. */
#define EDGE_CHALLENGE_ANSWER_MS 32000

/* A registrar and what the edge knows of its health. */
struct upstream {
    const struct config_addr *addr;
    uint64_t pending_since_ms; /* first relayed request not followed by any answer; 0: none */
    uint64_t down_until_ms;    /* marked down until then; 0: up */
    uint64_t ping_due_ms;      /* next OPTIONS health check */
    uint64_t ping_since_ms;    /* oldest unanswered health check; 0: none */
    bool answers_options;      /* has answered a health check: silence then means down */
};

struct edge {
    const struct config *cfg;
    struct policy pol;
    struct flow_token_keys *keys;
    struct flow_table *flows;
    struct guard *guard;
    struct edge_out out;
    struct edge_stats st;
    struct edge_latency lat;
    struct edge_hooks hooks;
    uint64_t last_sweep_ms;
    uint32_t dead_head; /* slot + 1 of the first dead flow waiting for de-registration */
    uint64_t dereg_seq;
    uint64_t n_ticks;
    struct upstream ups[EDGE_MAX_UPSTREAMS];
    unsigned n_ups;
    uint64_t loss_since_ms; /* every registrar down since then; 0: one answers */
    /* Bumped when a registrar marked down answers again: records confirmed under an
     * older epoch are stale, the cache no longer answers for them. */
    uint32_t regcache_epoch;
    uint32_t resync_slot; /* regcache.resync assert: next slot to re-register; 0: none */
    bool is_journaling;   /* changes to persisted flows are appended to journal */
    struct statefile_buf journal;
    struct config_addr allow_routes[POLICY_MAX_ROUTES]; /* policy relay.allow_routes */
    unsigned n_allow_routes;
    struct sip_hdr hdrs[EDGE_MAX_HDRS];
    /* The message in hand, parsed once (sip_check_view / sip_view_fill) by ingress and
     * valid while it is handled. */
    struct sip_view view;
    uint64_t branch_k0, branch_k1; /* key of derived branches (sip_edit_branch) */
    char pub_host[CONFIG_MAX_LISTEN][64]; /* host:port for our inbound Via per socket */
};

const double edge_latency_bounds_s[EDGE_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

/* ---- small helpers ------------------------------------------------------------------ */

/* True when host:port names the config address a (numeric compare). */
static bool hostport_is(struct slice host, uint16_t port, const struct config_addr *a)
{
    struct sockaddr_storage x;
    if (netaddr_from_host(host, port, 5060, &x) < 0)
        return false;
    return netaddr_eq((const struct sockaddr *)&x, (const struct sockaddr *)&a->ss);
}

static bool is_core_peer(const struct edge *e, const struct sockaddr *src)
{
    for (unsigned i = 0; i < e->n_ups; i++) {
        if (netaddr_eq(src, (const struct sockaddr *)&e->ups[i].addr->ss))
            return true;
    }
    for (unsigned i = 0; i < e->cfg->n_core_peers; i++) {
        if (netaddr_eq(src, (const struct sockaddr *)&e->cfg->core_peers[i].ss))
            return true;
    }
    return false;
}

static struct sip_limits edge_limits(const struct edge *e)
{
    struct sip_limits lim = {.max_msg_bytes = e->pol.max_message_bytes,
                             .max_headers = e->pol.max_headers};
    if (lim.max_headers > EDGE_MAX_HDRS)
        lim.max_headers = EDGE_MAX_HDRS;
    return lim;
}

/* ---- registrar health and failover -------------------------------------------------- */

/*
 * The registrar to relay to: the first in configured order that is not marked down (a
 * down one whose retry time has come is tried again). With every one down, the primary.
 * Notes a relay that expects an answer, so a missing one can mark the registrar down.
 */
static const struct sockaddr *upstream_dst(struct edge *e, uint64_t now_ms, bool expects_answer)
{
    struct upstream *u = &e->ups[0];
    for (unsigned i = 0; i < e->n_ups; i++) {
        if (e->ups[i].down_until_ms <= now_ms) {
            u = &e->ups[i];
            break;
        }
    }
    if (expects_answer && !u->pending_since_ms)
        u->pending_since_ms = now_ms ? now_ms : 1; /* 0 means "nothing pending" */
    return (const struct sockaddr *)&u->addr->ss;
}

/* Any answer from a registrar proves it up. */
static void upstream_answered(struct edge *e, const struct sockaddr *src)
{
    for (unsigned i = 0; i < e->n_ups; i++) {
        struct upstream *u = &e->ups[i];
        if (!netaddr_eq(src, (const struct sockaddr *)&u->addr->ss))
            continue;
        if (u->down_until_ms) {
            /* It may have come back without its bindings: from now on the cache answers
             * for none of them, so each client's next refresh refills it. */
            e->regcache_epoch++;
            e->st.regcache_marked_stale++;
            if (e->pol.regcache_resync)
                e->resync_slot = 1; /* slot + 1: walk the table from the start */
            log_info("registrar %s answers again: cached registrations marked stale, each "
                     "client's next refresh goes upstream",
                     u->addr->text);
        }
        u->pending_since_ms = 0;
        u->ping_since_ms = 0;
        u->down_until_ms = 0;
        if (e->loss_since_ms)
            e->st.registrar_recovered++;
        e->loss_since_ms = 0;
        return;
    }
}

/* Marks registrars that left a relayed request unanswered too long as down. */
static void upstream_check(struct edge *e, uint64_t now_ms)
{
    uint64_t timeout = (uint64_t)e->pol.registrar_timeout_s * 1000;
    bool all_down = true;
    for (unsigned i = 0; i < e->n_ups; i++) {
        struct upstream *u = &e->ups[i];
        /* A relayed request, or a health check of a registrar known to answer them,
         * unanswered for the timeout. */
        bool relay_lost = u->pending_since_ms && now_ms - u->pending_since_ms >= timeout;
        bool ping_lost = u->answers_options && u->ping_since_ms && !u->down_until_ms &&
                         now_ms - u->ping_since_ms >= timeout;
        if (relay_lost || ping_lost) {
            u->pending_since_ms = 0;
            u->ping_since_ms = 0;
            u->down_until_ms = now_ms + (uint64_t)e->pol.registrar_retry_s * 1000;
            e->st.registrar_marked_down++;
            log_warn("registrar %s did not answer %s for %u s: marked down, retried in %u s%s",
                     u->addr->text, relay_lost ? "a relayed request" : "health checks",
                     e->pol.registrar_timeout_s, e->pol.registrar_retry_s,
                     i + 1 < e->n_ups ? ", failing over" : "");
        }
        if (!u->down_until_ms)
            all_down = false;
    }
    if (all_down && !e->loss_since_ms) {
        e->loss_since_ms = now_ms ? now_ms : 1;
        log_warn("no registrar answers: cached registrations are kept alive for up to %u s",
                 e->pol.registrar_loss_grace_s);
    }
}

/* ---- output --------------------------------------------------------------------------- */

/* Where a message came from and where answers to it go. */
struct rx {
    uint8_t transport;          /* FLOW_UDP / FLOW_WS / FLOW_WSS; 0 for the core socket */
    uint8_t sock;               /* UDP socket id, WS listener index, or EDGE_SOCK_CORE */
    const struct sockaddr *src;
    struct flow *f;             /* the flow, once known (always for WS) */
};

/* Sends the reserved buffer's first len bytes to a flow over its own transport. */
static void send_to_flow(struct edge *e, struct flow *f, const char *buf, size_t len)
{
    if (f->transport == FLOW_UDP) {
        e->out.commit(e->out.ctx, f->sock, &f->remote.sa, len);
        return;
    }
    if (!e->out.send_conn || e->out.send_conn(e->out.ctx, f->conn, buf, len) < 0)
        e->st.conn_send_failed++;
}

static void send_to_rx(struct edge *e, const struct rx *rx, const char *buf, size_t len)
{
    if (rx->transport == FLOW_WS || rx->transport == FLOW_WSS)
        send_to_flow(e, rx->f, buf, len);
    else
        e->out.commit(e->out.ctx, rx->sock, rx->src, len);
}

static bool finish(struct edge *e, struct sip_build *b, size_t *len)
{
    if (sip_build_finish(b, len) < 0) {
        e->st.tx_overflow++;
        return false;
    }
    return true;
}

/* ---- stateless replies ---------------------------------------------------------------- */

static void audit_register(struct edge *e, const struct sip_msg *req, const struct rx *rx,
                           const struct flow *f, uint16_t status, uint32_t expires_s,
                           bool is_from_cache);

static void reply_ex(struct edge *e, const struct rx *rx, const struct sip_msg *req, int status,
                     const char *reason, const char *extra, bool is_from_cache, uint32_t expires_s)
{
    if (req->is_request && req->method_id == SIP_METHOD_ACK)
        return; /* ACK is never answered (RFC 3261 §17.2.3) */
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    netaddr_ip(rx->src, ip, sizeof(ip), &port);
    struct sip_reply_opts o = {.received = ip, .rport = port, .to_tag = NULL, .extra = extra};
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    int n = sip_reply_build(req, status, reason, &o, buf, cap);
    if (n <= 0)
        return;
    send_to_rx(e, rx, buf, (size_t)n);
    if (req->method_id == SIP_METHOD_REGISTER && rx->transport)
        audit_register(e, req, rx, rx->f, (uint16_t)status, expires_s, is_from_cache);
}

static void reply(struct edge *e, const struct rx *rx, const struct sip_msg *req, int status,
                  const char *reason, const char *extra)
{
    reply_ex(e, rx, req, status, reason, extra, false, 0);
}

/* ---- rewriting helpers ---------------------------------------------------------------- */

/* True when uri has the shape of a Contact alias at our core address (a SIP URI there
 * whose user part has a '.'); sets its token and encoded halves, neither checked. */
static bool uri_alias_parts(struct slice uri, const struct config_addr *core, struct slice *tok,
                            struct slice *enc)
{
    struct sip_uri u;
    bool is_sip;
    return sip_uri_parse(uri, &u, &is_sip) == 0 && is_sip && hostport_is(u.host, u.port, core) &&
           contact_alias_split(u.user, tok, enc) == 0;
}

/*
 * When uri is one of our Contact aliases (with a token-sized first half), sets *enc to
 * its encoded original URI. The token's MAC is not checked: restoring only changes what
 * the client is shown, and the registrar holds only aliases we wrote.
 */
static bool contact_is_alias(struct slice uri, const struct config_addr *core, struct slice *enc)
{
    struct slice tok;
    return uri_alias_parts(uri, core, &tok, enc) && flow_token_len_ok(tok.len);
}

/* What the Contact hook of a relayed REGISTER or its response does. */
struct contact_edit {
    struct edge *e;
    struct slice alias_token; /* non-empty: every Contact URI becomes an alias */
    uint64_t *n_edits;        /* counts the Contacts aliased or restored */
};

/* Contact URI → alias carrying the flow token and the original URI. */
static bool contact_to_alias(void *ctx, struct sip_build *b, const struct sip_nameaddr *c)
{
    struct contact_edit *ce = ctx;
    contact_alias_build(b, ce->alias_token, c->uri, ce->e->cfg->core.text);
    (*ce->n_edits)++;
    return true;
}

/*
 * One of our aliases → the original URI, so the client finds its own Contacts in the
 * answer (RFC 3261 §10.2.4). An addr-spec gets angle brackets: the original URI may
 * carry ';' or ',' that would otherwise read as header parameters or a new element.
 */
static bool contact_from_alias(void *ctx, struct sip_build *b, const struct sip_nameaddr *c)
{
    struct contact_edit *ce = ctx;
    struct slice enc;
    if (!contact_is_alias(c->uri, &ce->e->cfg->core, &enc))
        return false;
    bool is_bare = c->uri.p == c->raw.p;
    if (is_bare)
        sip_build_str(b, "<");
    if (contact_alias_decode(b, enc) == 0)
        (*ce->n_edits)++;
    else
        sip_build_slice(b, c->uri);
    if (is_bare)
        sip_build_str(b, ">");
    return true;
}

static bool route_allowed(void *ctx, struct slice uri)
{
    const struct edge *e = ctx;
    struct sip_uri u;
    bool is_sip;
    if (sip_uri_parse(uri, &u, &is_sip) < 0 || !is_sip)
        return false;
    for (unsigned i = 0; i < e->n_allow_routes; i++)
        if (hostport_is(u.host, u.port, &e->allow_routes[i]))
            return true;
    return false;
}

static void send_built_udp(struct edge *e, struct sip_build *b, uint8_t sock,
                           const struct sockaddr *dst)
{
    size_t len;
    if (finish(e, b, &len))
        e->out.commit(e->out.ctx, sock, dst, len);
}

static void send_built_flow(struct edge *e, struct sip_build *b, struct flow *f)
{
    size_t len;
    if (finish(e, b, &len))
        send_to_flow(e, f, b->buf, len);
}

/* ---- registrations relayed over a flow ---------------------------------------------- */

static void flow_regs_free(struct flow *f)
{
    struct flow_reg *r = f->regs;
    while (r) {
        struct flow_reg *next = r->next;
        free(r);
        r = next;
    }
    f->regs = NULL;
}

static uint64_t flow_ref_of(const struct edge *e, const struct flow *f)
{
    return (uint64_t)flow_table_slot(e->flows, f) << 32 | f->gen;
}

static void flow_event(struct edge *e, enum edge_flow_event kind, const struct flow *f,
                       const char *reason)
{
    if (e->hooks.on_flow)
        e->hooks.on_flow(e->hooks.ctx, kind, flow_ref_of(e, f), f->transport, &f->remote.sa,
                         reason);
}

static void journal_flow(struct edge *e, const struct flow *f, uint64_t now_ms);
static void journal_drop(struct edge *e, const struct flow *f);

static void on_flow_release(void *ctx, struct flow *f)
{
    struct edge *e = ctx;
    if (f->state == FLOW_LIVE)
        journal_drop(e, f);
    if (f->transport == FLOW_UDP && e->guard)
        guard_flow_remove(e->guard, &f->remote.sa);
    if (f->state == FLOW_LIVE)
        flow_event(e, EDGE_FLOW_CLOSED, f, "idle");
    flow_regs_free(f);
    e->st.flows_released++;
}

static struct flow_reg *flow_reg_find(struct flow *f, const char *aor)
{
    for (struct flow_reg *r = f->regs; r; r = r->next) {
        if (strcmp(r->aor, aor) == 0)
            return r;
    }
    return NULL;
}

static void flow_reg_remove(struct flow *f, struct flow_reg *victim)
{
    for (struct flow_reg **pp = &f->regs; *pp; pp = &(*pp)->next) {
        if (*pp == victim) {
            *pp = victim->next;
            free(victim);
            return;
        }
    }
}

/* A live flow registered aor again: a dead flow must not de-register it afterwards. */
static void dead_flows_forget_aor(struct edge *e, const char *aor, const char *contacts)
{
    for (uint32_t i = e->dead_head; i;) {
        struct flow *d = flow_table_get_slot(e->flows, i - 1);
        struct flow_reg *r = flow_reg_find(d, aor);
        if (r && strcmp(r->contacts, contacts) == 0)
            flow_reg_remove(d, r);
        i = d->dnext;
    }
}

/* What a REGISTER asks for, in the form the flow records keep. */
struct reg_summary {
    bool is_usable;   /* all fields below are set and fit */
    bool has_contact; /* false: a query */
    bool is_removal;  /* '*' or every contact at expires 0 */
    bool has_reg_id;  /* a Contact carries reg-id: the client asks for outbound */
    uint32_t cseq;
    struct slice call_id;
    uint32_t max_expires; /* largest non-zero expires asked, UINT32_MAX: none given */
    char aor[256];
    char contacts[512];
    size_t contacts_len;
    struct slice user_agent;
};

static void reg_summarize(const struct sip_msg *m, const struct sip_view *v,
                          struct reg_summary *sum)
{
    memset(sum, 0, sizeof(*sum));
    if (!v->call_id.len || v->to.uri.len >= sizeof(sum->aor) ||
        v->call_id.len >= sizeof(((struct flow_reg *)0)->call_id))
        return;
    slice_copy_cstr(sum->aor, sizeof(sum->aor), v->to.uri);
    sum->cseq = v->cseq;
    sum->call_id = v->call_id;
    const struct sip_hdr *ua = sip_msg_hdr(m, SIP_HDR_USER_AGENT);
    sum->user_agent = ua ? ua->value : SLICE_NULL;
    uint32_t hdr_exp = v->has_expires ? v->expires : UINT32_MAX;
    bool any_live = false;
    size_t n = 0;
    sum->contacts[0] = '\0';
    sum->max_expires = 0;
    sum->has_contact = v->n_contacts > 0;
    for (unsigned i = 0; i < sip_view_n_contacts(v); i++) {
        const struct sip_nameaddr *c = &v->contacts[i].na;
        if (c->is_star) {
            sum->is_removal = true;
            sum->is_usable = true;
            return;
        }
        uint32_t x = hdr_exp;
        struct slice pv;
        if (sip_params_get(c->params, "reg-id", &pv))
            sum->has_reg_id = true;
        if (sip_params_get(c->params, "expires", &pv))
            sip_expires_parse(pv, &x);
        if (x == 0)
            continue;
        any_live = true;
        if (x > sum->max_expires)
            sum->max_expires = x;
        if (n + c->uri.len + 4 >= sizeof(sum->contacts))
            return;
        n += (size_t)snprintf(sum->contacts + n, sizeof(sum->contacts) - n, "%s<%.*s>",
                              n ? ", " : "", SLICE_FMT(c->uri));
    }
    if (v->n_contacts > SIP_VIEW_MAX_CONTACTS)
        return; /* more than a record can hold: not usable */
    sum->contacts_len = n;
    sum->is_removal = sum->has_contact && !any_live;
    sum->is_usable = true;
}

/*
 * Notes a REGISTER relayed over f as the AOR's pending request: AOR, Call-ID, CSeq and
 * the Contact URIs. Nothing the edge acts on changes until the registrar's 2xx to this
 * very request confirms it (flow_reg_answered), so a request spoofed onto someone
 * else's UDP flow, or one the registrar refuses, changes nothing. is_aliased says the
 * registrar gets the contacts as Contact aliases. When the flow already holds
 * FLOW_REGS_MAX records, an unconfirmed one makes room; confirmed ones are kept.
 */
static void flow_reg_note(struct edge *e, struct flow *f, const struct reg_summary *sum,
                          bool is_aliased)
{
    if (!sum->is_usable) {
        e->st.regs_not_recorded++;
        return;
    }
    if (!sum->has_contact)
        return; /* a query changes nothing */
    struct flow_reg *r = flow_reg_find(f, sum->aor);
    if (!r) {
        unsigned count = 0;
        struct flow_reg *spare = NULL;
        for (struct flow_reg *x = f->regs; x; x = x->next) {
            count++;
            if (x->until_ms == 0)
                spare = x;
        }
        if (count >= FLOW_REGS_MAX && spare) {
            flow_reg_remove(f, spare);
            count--;
        }
        if (count >= FLOW_REGS_MAX || !(r = calloc(1, sizeof(*r)))) {
            e->st.regs_not_recorded++;
            return;
        }
        memcpy(r->aor, sum->aor, strlen(sum->aor) + 1);
        r->next = f->regs;
        f->regs = r;
        e->st.regs_recorded++;
    }
    r->has_pending = true;
    r->pend_is_removal = sum->is_removal;
    r->pend_is_aliased = is_aliased;
    r->pend_cseq = sum->cseq;
    slice_copy_cstr(r->pend_call_id, sizeof(r->pend_call_id), sum->call_id);
    memcpy(r->pend_contacts, sum->contacts, sum->contacts_len + 1);
    slice_copy_cstr(r->user_agent, sizeof(r->user_agent), sum->user_agent);
    if (sum->cseq > r->cseq || !slice_eq(sum->call_id, slice_make(r->call_id, strlen(r->call_id))))
        r->cseq = sum->cseq;
}

/* Expires a NATed client is given: short, with a per-flow jitter (RFC 5626 §4.4 spirit:
 * frequent refreshes keep the NAT mapping; jitter keeps them from synchronising). */
static uint32_t nat_expires(const struct edge *e, const struct flow *f)
{
    uint32_t j = e->pol.nat_expires_jitter_s;
    uint32_t cut = j ? (f->gen * 2654435761u + flow_table_slot(e->flows, f)) % (j + 1) : 0;
    uint32_t x = e->pol.nat_expires_s > cut ? e->pol.nat_expires_s - cut : e->pol.nat_expires_s;
    return x < 10 ? 10 : x;
}

/*
 * Registration caching: a refresh over the same flow, same Call-ID, higher CSeq and
 * the same Contact set, of a registration the registrar accepted after
 * authentication and still holds for longer than the policy margin, is answered here.
 * Returns true when it was answered.
 */
static bool regcache_answer(struct edge *e, const struct rx *rx, struct flow *f,
                            const struct sip_msg *m, const struct reg_summary *sum,
                            uint64_t now_ms)
{
    if (!e->pol.regcache || !sum->is_usable || !sum->has_contact || sum->is_removal)
        return false;
    struct flow_reg *r = flow_reg_find(f, sum->aor);
    /* Normally a refresh near the registrar's expiry goes upstream; while no registrar
     * answers, it is answered here until loss_grace past that expiry. */
    uint64_t horizon = e->loss_since_ms
                           ? r ? r->until_ms + (uint64_t)e->pol.registrar_loss_grace_s * 1000 : 0
                           : r ? r->until_ms : 0;
    uint64_t need = e->loss_since_ms ? now_ms
                                     : now_ms + (uint64_t)e->pol.regcache_refresh_margin_s * 1000;
    if (!r || !r->is_authed || r->until_ms == 0 || horizon <= need ||
        r->cache_epoch != e->regcache_epoch ||
        sum->cseq <= r->cseq || !slice_eq(sum->call_id, slice_make(r->call_id, strlen(r->call_id))) ||
        strcmp(r->contacts, sum->contacts) != 0 || r->is_aliased != e->pol.nat_contact_alias)
        return false;
    uint32_t left_s = r->until_ms > now_ms ? (uint32_t)((r->until_ms - now_ms) / 1000)
                                           : e->pol.nat_expires_s;
    uint32_t grant = sum->max_expires && sum->max_expires < left_s ? sum->max_expires : left_s;
    if (f->is_nat && grant > nat_expires(e, f))
        grant = nat_expires(e, f);
    char extra[1024];
    size_t n = 0;
    /* One Contact line per URI of the recorded set: "<uri>, <uri>" splits on ", <". */
    const char *p = r->contacts;
    while (*p && n < sizeof(extra) - 64) {
        const char *end = strstr(p, ", <");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (n + len + 40 >= sizeof(extra))
            return false;
        n += (size_t)snprintf(extra + n, sizeof(extra) - n, "Contact: %.*s;expires=%u\r\n",
                              (int)len, p, grant);
        p = end ? end + 2 : p + len;
    }
    r->cseq = sum->cseq;
    e->st.regcache_hit++;
    reply_ex(e, rx, m, 200, "OK", extra, true, grant);
    return true;
}

/* The flow's record whose pending REGISTER the response m answers (AOR from To, Call-ID
 * and CSeq number all equal), or NULL. */
static struct flow_reg *flow_reg_of_response(struct flow *f, const struct sip_view *v)
{
    char aor[256];
    if (!v->call_id.len || !v->to.uri.len || v->to.uri.len >= sizeof(aor))
        return NULL;
    slice_copy_cstr(aor, sizeof(aor), v->to.uri);
    struct flow_reg *r = flow_reg_find(f, aor);
    if (!r || !r->has_pending || r->pend_cseq != v->cseq ||
        !slice_eq(v->call_id, slice_make(r->pend_call_id, strlen(r->pend_call_id))))
        return NULL;
    return r;
}

/*
 * A 2xx to a REGISTER relayed over f confirms the record of that request only: its
 * pending contacts become the ones the cache answers for and a dead flow de-registers.
 * At expiry 0 (or a removal) the record ends. Returns the largest expires granted.
 */
static uint32_t flow_reg_confirm(struct edge *e, struct flow *f, const struct sip_msg *m,
                                 bool had_credentials, uint64_t now_ms)
{
    const struct sip_view *v = &e->view;
    uint32_t max_exp = 0;
    const struct sip_hdr *eh = sip_msg_hdr(m, SIP_HDR_EXPIRES);
    uint32_t hdr_exp = 0;
    if (eh)
        sip_expires_parse(eh->value, &hdr_exp);
    for (unsigned i = 0; i < sip_view_n_contacts(v); i++) {
        struct slice pv;
        uint32_t x = hdr_exp;
        if (sip_params_get(v->contacts[i].na.params, "expires", &pv))
            sip_expires_parse(pv, &x);
        if (x > max_exp)
            max_exp = x;
    }
    uint64_t until = now_ms + (uint64_t)max_exp * 1000;
    struct flow_reg *r = flow_reg_of_response(f, v);
    if (!r)
        return max_exp;
    r->has_pending = false;
    if (r->pend_is_removal || max_exp == 0) {
        flow_reg_remove(f, r);
        journal_flow(e, f, now_ms);
        return max_exp;
    }
    if (until > f->reg_until_ms)
        f->reg_until_ms = until;
    r->until_ms = until;
    r->is_authed = had_credentials;
    r->is_aliased = r->pend_is_aliased;
    r->cache_epoch = e->regcache_epoch;
    memcpy(r->call_id, r->pend_call_id, sizeof(r->call_id));
    memcpy(r->contacts, r->pend_contacts, sizeof(r->contacts));
    if (had_credentials && e->dead_head)
        dead_flows_forget_aor(e, r->aor, r->contacts);
    journal_flow(e, f, now_ms);
    return max_exp;
}

/* A 401/407 to a REGISTER relayed over f: a record that no 2xx ever confirmed is
 * dropped; a confirmed one keeps what was confirmed. */
static void flow_reg_refused(struct flow *f, const struct sip_view *v)
{
    struct flow_reg *r = flow_reg_of_response(f, v);
    if (!r)
        return;
    r->has_pending = false;
    if (r->until_ms == 0)
        flow_reg_remove(f, r);
}

/*
 * The edge's own de-REGISTER for a dead flow's contacts. The client's password is not
 * ours, so the request asserts the AOR with P-Asserted-Identity (RFC 3325); the edge
 * strips that header from every client request, so only its own reach the core.
 */
/*
 * A REGISTER of the edge's own for one record: expires 0 de-registers a dead flow's
 * contacts; expires > 0 re-registers them (regcache.resync: assert) with the Path of the
 * flow, under a Call-ID of its own so the client's next refresh (its Call-ID, its CSeq)
 * is never out of order at the registrar.
 */
static void send_asserted_register(struct edge *e, const struct flow *f, const struct flow_reg *r,
                                   uint32_t expires, uint64_t now_ms)
{
    struct sip_uri u;
    bool is_sip;
    if (sip_uri_parse(slice_make(r->aor, strlen(r->aor)), &u, &is_sip) < 0 || !is_sip)
        return;
    uint64_t id = siphash13(e->branch_k0 ^ ++e->dereg_seq, e->branch_k1, r->aor, strlen(r->aor));
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    struct sip_build b;
    sip_build_init(&b, buf, cap);
    sip_build_fmt(&b, "REGISTER %.*s:%.*s SIP/2.0\r\n", SLICE_FMT(u.scheme), SLICE_FMT(u.host));
    sip_build_fmt(&b, "Via: SIP/2.0/UDP %s;branch=%s%016llx\r\n", e->cfg->core.text,
                  expires ? EDGE_BRANCH_RESYNC : EDGE_BRANCH_DEREG, (unsigned long long)id);
    sip_build_str(&b, "Max-Forwards: 70\r\n");
    sip_build_fmt(&b, "From: <%s>;tag=%08llx\r\n", r->aor, (unsigned long long)(id >> 32));
    sip_build_fmt(&b, "To: <%s>\r\n", r->aor);
    if (expires)
        sip_build_fmt(&b, "Call-ID: %016llx.resync@sipedge\r\nCSeq: 1 REGISTER\r\n",
                      (unsigned long long)id);
    else
        sip_build_fmt(&b, "Call-ID: %s\r\nCSeq: %u REGISTER\r\n", r->call_id, r->cseq + 1);
    if (r->is_aliased) {
        /* The registrar holds the aliases, not the URIs the client registered. */
        sip_build_str(&b, "Contact: ");
        const char *p = r->contacts;
        while (*p == '<') {
            const char *end = strchr(p, '>');
            if (!end)
                break;
            if (p != r->contacts)
                sip_build_str(&b, ", ");
            sip_build_str(&b, "<");
            contact_alias_build(&b, slice_make(f->token, f->token_len),
                                slice_make(p + 1, (size_t)(end - p - 1)), e->cfg->core.text);
            sip_build_fmt(&b, ">;expires=%u", expires);
            p = end[1] == ',' && end[2] == ' ' ? end + 3 : end + 1;
        }
        sip_build_str(&b, "\r\n");
    } else if (expires) {
        sip_build_fmt(&b, "Contact: %s\r\n", r->contacts);
        sip_build_fmt(&b, "Path: <sip:%.*s@%s;lr>\r\nSupported: path\r\n", (int)f->token_len,
                      f->token, e->cfg->core.text);
    } else {
        sip_build_fmt(&b, "Contact: %s;expires=0\r\n", r->contacts);
    }
    sip_build_fmt(&b, "P-Asserted-Identity: <%s>\r\n", r->aor);
    sip_build_fmt(&b, "Expires: %u\r\nUser-Agent: sipedge\r\nContent-Length: 0\r\n\r\n", expires);
    if (expires) {
        e->st.resync_sent++;
    } else {
        e->st.dereg_sent++;
        log_info("flow dead: de-registering %s (%s)", r->aor, r->contacts);
    }
    send_built_udp(e, &b, EDGE_SOCK_CORE, upstream_dst(e, now_ms, true));
}

/*
 * The edge's own de-REGISTER for a dead flow's contacts. The client's password is not
 * ours, so the request asserts the AOR with P-Asserted-Identity (RFC 3325); the edge
 * strips that header from every client request, so only its own reach the core.
 */
static void send_dereg(struct edge *e, const struct flow *f, const struct flow_reg *r,
                       uint64_t now_ms)
{
    send_asserted_register(e, f, r, 0, now_ms);
}

static void flow_die(struct edge *e, struct flow *f, uint64_t now_ms, const char *reason)
{
    if (f->state != FLOW_LIVE)
        return;
    journal_drop(e, f);
    flow_event(e, EDGE_FLOW_CLOSED, f, reason);
    flow_table_mark_dead(e->flows, f);
    f->dead_at_ms = now_ms;
    f->dnext = e->dead_head;
    e->dead_head = flow_table_slot(e->flows, f) + 1;
    e->st.flows_dead++;
}

/* De-registers and forgets dead flows whose grace period is over. */
static void dead_flows_process(struct edge *e, uint64_t now_ms)
{
    uint64_t grace = (uint64_t)e->pol.dead_flow_grace_s * 1000;
    uint32_t *pp = &e->dead_head;
    while (*pp) {
        struct flow *d = flow_table_get_slot(e->flows, *pp - 1);
        if (now_ms - d->dead_at_ms < grace) {
            pp = &d->dnext;
            continue;
        }
        *pp = d->dnext;
        /* Only contacts an authenticated REGISTER created on this flow are asserted
         * away: the assertion speaks for the user, so it must be the user's. */
        for (struct flow_reg *r = d->regs; r; r = r->next) {
            if (r->until_ms > now_ms && r->is_authed && r->contacts[0])
                send_dereg(e, d, r, now_ms);
        }
        on_flow_release(e, d);
        flow_table_release(e->flows, d);
    }
}

static struct flow_reg *flow_reg_by_call_id(struct flow *f, struct slice call_id)
{
    for (struct flow_reg *r = f->regs; r; r = r->next) {
        if (slice_eq(call_id, slice_make(r->pend_call_id, strlen(r->pend_call_id))) ||
            slice_eq(call_id, slice_make(r->call_id, strlen(r->call_id))))
            return r;
    }
    return NULL;
}

/* One audit event per REGISTER outcome: the registrar's answer or the edge's own. */
static void audit_register(struct edge *e, const struct sip_msg *req, const struct rx *rx,
                           const struct flow *f, uint16_t status, uint32_t expires_s,
                           bool is_from_cache)
{
    if (!e->hooks.on_register)
        return;
    /* req is the message in hand: its view, unless it had none (it failed the check). */
    char aor[256] = "";
    struct sip_view tmp;
    const struct sip_view *v = &e->view;
    if (v->via_hdr == NULL) {
        sip_view_fill(req, &tmp);
        v = &tmp;
    }
    slice_copy_cstr(aor, sizeof(aor), v->to.uri);
    const struct flow_reg *r = NULL;
    if (f && v->call_id.len)
        r = flow_reg_by_call_id((struct flow *)f, v->call_id);
    char ua[96] = "";
    const struct sip_hdr *uah = sip_msg_hdr(req, SIP_HDR_USER_AGENT);
    if (uah)
        slice_copy_cstr(ua, sizeof(ua), uah->value);
    struct edge_reg_event ev = {
        .aor = aor,
        .src = f ? &f->remote.sa : rx->src,
        .transport = f ? f->transport : FLOW_UDP,
        .contacts = r ? (r->pend_contacts[0] ? r->pend_contacts : r->contacts) : "",
        .expires_s = expires_s,
        .user_agent = r && !uah ? r->user_agent : ua,
        .status = status,
        .is_from_cache = is_from_cache,
        .flow_ref = f ? flow_ref_of(e, f) : 0,
    };
    e->hooks.on_register(e->hooks.ctx, &ev);
}

static void latency_note(struct edge *e, uint32_t ms)
{
    double sec = ms / 1000.0;
    unsigned i = 0;
    while (i < EDGE_LATENCY_BUCKETS && sec > edge_latency_bounds_s[i])
        i++;
    e->lat.count[i]++;
    e->lat.n++;
    e->lat.sum_s += sec;
}

/* ---- proof of return routability ------------------------------------------------------ */

/* Hash of the nonce parameter of a digest challenge or credentials header value, or 0. */
static uint64_t digest_nonce_hash(const struct edge *e, struct slice v)
{
    for (size_t i = 0; i + 6 < v.len; i++) {
        bool at_start = i == 0 || v.p[i - 1] == ' ' || v.p[i - 1] == ',' || v.p[i - 1] == '\t';
        if (!at_start || (v.p[i] | 0x20) != 'n' || !slice_case_prefix(slice_make(v.p + i, v.len - i),
                                                                        "nonce"))
            continue;
        size_t j = i + 5;
        while (j < v.len && (v.p[j] == ' ' || v.p[j] == '\t'))
            j++;
        if (j >= v.len || v.p[j] != '=')
            continue;
        j++;
        while (j < v.len && (v.p[j] == ' ' || v.p[j] == '\t'))
            j++;
        bool quoted = j < v.len && v.p[j] == '"';
        size_t k = j + quoted;
        size_t end = k;
        while (end < v.len && (quoted ? v.p[end] != '"' : v.p[end] != ',' && v.p[end] != ' '))
            end++;
        if (end == k)
            return 0;
        uint64_t h = siphash13(e->branch_k0, e->branch_k1, v.p + k, end - k);
        return h ? h : 1;
    }
    return 0;
}

/* A challenge relayed to a UDP flow: remember its nonce. */
static void note_challenge(const struct edge *e, struct flow *f, const struct sip_msg *m)
{
    const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_WWW_AUTHENTICATE);
    if (!h)
        h = sip_msg_hdr(m, SIP_HDR_PROXY_AUTHENTICATE);
    if (h)
        f->challenge_hash = digest_nonce_hash(e, h->value);
}

/* A UDP request whose credentials carry the nonce sipedge relayed to that address proves
 * the address receives what is sent to it (a spoofed source never saw the nonce). */
static void check_proof(struct edge *e, const struct flow *f, const struct sip_msg *m,
                        uint64_t now_ms)
{
    if (!e->guard || !f->challenge_hash)
        return;
    const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_AUTHORIZATION);
    if (!h)
        h = sip_msg_hdr(m, SIP_HDR_PROXY_AUTHORIZATION);
    if (h && digest_nonce_hash(e, h->value) == f->challenge_hash)
        guard_note_proven(e->guard, &f->remote.sa, now_ms);
}

/* ---- guard -------------------------------------------------------------------------- */

/* Applies a guard verdict to a parsed request; returns true when the request stops here. */
static bool guard_stops(struct edge *e, const struct rx *rx, const struct sip_msg *m,
                        struct guard_verdict v)
{
    if (v.action == GUARD_PASS)
        return false;
    if (v.action == GUARD_DROP || !m) {
        e->st.guard_dropped++;
        return true;
    }
    e->st.guard_rejected++;
    char extra[64] = "";
    if (v.retry_after_s)
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", v.retry_after_s);
    reply(e, rx, m, v.status ? v.status : 503, v.status == 403 ? "Forbidden" : "Service Unavailable",
          extra[0] ? extra : NULL);
    return true;
}

/* Authorization or Proxy-Authorization present (a header count: no scan). */
static bool has_credentials(const struct sip_msg *m)
{
    return m->count[SIP_HDR_AUTHORIZATION] || m->count[SIP_HDR_PROXY_AUTHORIZATION];
}

/* The guard's view of a parsed request: scanner signatures, served domains. */
static bool guard_request(struct edge *e, const struct rx *rx, const struct sip_msg *m,
                          uint64_t now_ms)
{
    if (!e->guard)
        return false;
    const struct sip_hdr *ua = sip_msg_hdr(m, SIP_HDR_USER_AGENT);
    struct slice user = SLICE_NULL, domain = SLICE_NULL;
    struct sip_uri u;
    bool is_sip;
    if (sip_uri_parse(e->view.to.uri, &u, &is_sip) == 0 && is_sip) {
        user = u.user;
        domain = u.host;
    }
    struct guard_verdict v = guard_check_request(e->guard, rx->src, m->method,
                                                 ua ? ua->value : SLICE_NULL, user, domain,
                                                 has_credentials(m), now_ms);
    return guard_stops(e, rx, m, v);
}

/* ---- public side ---------------------------------------------------------------------- */

static bool uri_is_ours_public(const struct edge *e, const struct sip_uri *u)
{
    for (unsigned i = 0; i < e->cfg->n_listen_udp; i++) {
        if (hostport_is(u->host, u->port, &e->cfg->listen_udp[i]))
            return true;
    }
    for (unsigned i = 0; i < e->cfg->n_listen_ws; i++) {
        if (hostport_is(u->host, u->port, &e->cfg->listen_ws[i]))
            return true;
    }
    for (unsigned i = 0; i < e->cfg->n_listen_wss; i++) {
        if (hostport_is(u->host, u->port, &e->cfg->listen_wss[i]))
            return true;
    }
    return false;
}

/* UDP flows are found (or made) by address; connection flows come with the message. */
static struct flow *rx_flow(struct edge *e, struct rx *rx, const struct sip_msg *m,
                            uint64_t now_ms)
{
    if (rx->f)
        return rx->f;
    struct flow *f = flow_table_find(e->flows, FLOW_UDP, rx->sock, rx->src);
    if (f && f->state != FLOW_LIVE)
        f = NULL; /* a new packet from a dead UDP flow starts a new flow */
    if (!f) {
        /* One address (an IPv6 prefix) holds a bounded share of the table. */
        if (e->guard && guard_flow_add(e->guard, rx->src, now_ms) < 0) {
            e->st.reply_503_flows_full++;
            reply(e, rx, m, 503, "Service Unavailable", "Retry-After: 30\r\n");
            return NULL;
        }
        if (flow_table_add(e->flows, e->keys, FLOW_UDP, rx->sock, rx->src, now_ms, &f) < 0) {
            if (e->guard)
                guard_flow_remove(e->guard, rx->src);
            e->st.reply_503_flows_full++;
            reply(e, rx, m, 503, "Service Unavailable", "Retry-After: 30\r\n");
            return NULL;
        }
        e->st.flows_created++;
        flow_event(e, EDGE_FLOW_OPENED, f, "udp");
    }
    f->last_rx_ms = now_ms;
    f->missed_pings = 0;
    f->is_ping_outstanding = false;
    rx->f = f;
    return f;
}

static bool host_is_private_or_invalid(struct slice host)
{
    if (host.len > 8 && slice_case_eq_str(slice_make(host.p + host.len - 8, 8), ".invalid"))
        return true;
    struct sockaddr_storage ss;
    if (netaddr_from_host(host, 5060, 5060, &ss) < 0)
        return false;
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    if (ss.ss_family == AF_INET) {
        uint32_t ip = ntohl(in->sin_addr.s_addr);
        return (ip >> 24) == 10 || (ip >> 20) == 0xac1 || (ip >> 16) == 0xc0a8 ||
               (ip >> 22) == (100u << 2 | 1u); /* 10/8, 172.16/12, 192.168/16, 100.64/10 */
    }
    return (in6->sin6_addr.s6_addr[0] & 0xfe) == 0xfc; /* fc00::/7 */
}

/* RFC 5626 / common SBC practice: a client is behind NAT when its Via sent-by or a
 * Contact address differs from where the packet came from, or is private/.invalid. */
static bool detect_nat(const struct sip_view *v, const struct sockaddr *src)
{
    struct sockaddr_storage a;
    if (netaddr_from_host(v->via.host, v->via.port, 5060, &a) < 0 ||
        !netaddr_eq((const struct sockaddr *)&a, src))
        return true;
    for (unsigned i = 0; i < sip_view_n_contacts(v); i++) {
        const struct sip_nameaddr *c = &v->contacts[i].na;
        struct sip_uri u;
        bool is_sip;
        if (c->is_star || sip_uri_parse(c->uri, &u, &is_sip) < 0 || !is_sip)
            continue;
        if (host_is_private_or_invalid(u.host))
            return true;
        if (netaddr_from_host(u.host, u.port, 5060, &a) == 0 &&
            !netaddr_eq((const struct sockaddr *)&a, src))
            return true;
    }
    return false;
}

/* Client request → registrar (REGISTER, with Path) or core proxy (anything else). */
static void relay_client_request(struct edge *e, struct rx *rx, const struct sip_msg *m,
                                 uint64_t now_ms)
{
    const struct sip_view *v = &e->view; /* checked: Via and Max-Forwards parse */
    uint32_t mf = v->max_forwards;
    if (mf == 0) {
        e->st.reply_483_too_many_hops++;
        reply(e, rx, m, 483, "Too Many Hops", NULL);
        return;
    }
    struct flow *f = rx_flow(e, rx, m, now_ms);
    if (!f)
        return;
    bool is_register = m->method_id == SIP_METHOD_REGISTER;
    bool has_cred = has_credentials(m);
    if (has_cred && f->transport == FLOW_UDP)
        check_proof(e, f, m, now_ms);
    struct reg_summary sum;
    if (is_register) {
        reg_summarize(m, v, &sum);
        if (f->transport == FLOW_UDP)
            f->is_nat = detect_nat(v, rx->src);
        if (regcache_answer(e, rx, f, m, &sum, now_ms))
            return;
        if (e->guard) {
            struct flow_reg *r = sum.is_usable ? flow_reg_find(f, sum.aor) : NULL;
            bool known = (r && r->is_authed) || guard_is_authenticated(e->guard, rx->src, now_ms);
            struct slice aor = sum.is_usable ? slice_make(sum.aor, strlen(sum.aor)) : SLICE_NULL;
            /* A REGISTER without credentials pays the budget for the answer to its
             * challenge too; that answer, on the same flow, then passes on the prepaid
             * token (guard_admit_register). */
            bool is_prepaid = has_cred && f->answer_paid_until_ms > now_ms;
            unsigned cost = is_prepaid ? 0 : has_cred ? 1 : 2;
            f->answer_paid_until_ms = 0;
            if (guard_stops(e, rx, m,
                            guard_admit_register(e->guard, rx->src, aor, known, cost, now_ms)))
                return;
            if (cost == 2)
                f->answer_paid_until_ms = now_ms + EDGE_CHALLENGE_ANSWER_MS;
        }
    }

    /* A client that uses us as outbound proxy may put our address in a Route. */
    struct sip_edit plan = {.top_via = v->via_hdr,
                            .via = {.via = &v->via, .src = rx->src, .is_received_always = true,
                                    .keep_s = e->pol.flow_timer_s},
                            .set_max_forwards = true, .max_forwards = mf - 1,
                            .strip_identity = true, .strip_path = true,
                            .route_ok = route_allowed, .route_ctx = e,
                            .n_route_stripped = &e->st.route_stripped,
                            .n_path_stripped = &e->st.path_stripped};
    struct contact_edit ce = {.e = e};
    /* Registration caching: a NATed client is told a short Expires in the 2xx while the
     * registrar holds the long one, so its refreshes can be answered here. */
    bool raise_expires = is_register && f->is_nat && e->pol.regcache && sum.is_usable &&
                         sum.has_contact && !sum.is_removal;
    if (raise_expires)
        plan.expires_floor = e->pol.regcache_registrar_expires_s;
    /* A registrar without Path support stores the Contacts as they come: they must
     * lead back here, so they become aliases carrying the flow token. */
    bool is_aliased = is_register && e->pol.nat_contact_alias;
    if (is_aliased) {
        ce.alias_token = slice_make(f->token, f->token_len);
        ce.n_edits = &e->st.contacts_aliased;
        plan.contact_uri = contact_to_alias;
        plan.contact_ctx = &ce;
    }
    if (v->route_hdr) {
        struct sip_uri ru;
        bool is_sip;
        if (sip_uri_parse(v->route.uri, &ru, &is_sip) == 0 && is_sip &&
            uri_is_ours_public(e, &ru)) {
            plan.pop_route = v->route_hdr;
            plan.pop_route_rest = v->route_rest;
        }
    }
    /* RFC 5626 §5.1: ;ob only as the first hop (one Via) when the client asked for
     * outbound (a Contact with reg-id). */
    bool ob = is_register && m->count[SIP_HDR_VIA] == 1 && slice_trim(v->via_rest).len == 0 &&
              sum.has_reg_id;

    char branch[17];
    sip_edit_branch(m, v, rx->src, e->branch_k0, e->branch_k1, branch);
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    struct sip_build b;
    sip_build_init(&b, buf, cap);
    sip_build_mem(&b, m->buf, m->start_line_len);
    /* Our Via carries the flow token (responses are routed by it, never by the client's
     * Via host) and flags the response handling needs: ob (add Flow-Timer), au (the
     * request carried credentials). */
    sip_build_str(&b, "Via: SIP/2.0/UDP ");
    sip_build_str(&b, e->cfg->core.text);
    sip_build_str(&b, ";branch=" EDGE_BRANCH_OUT);
    sip_build_str(&b, branch);
    sip_build_str(&b, ";fl=");
    sip_build_mem(&b, f->token, f->token_len);
    if (ob)
        sip_build_str(&b, ";ob");
    if (has_cred)
        sip_build_str(&b, ";au");
    sip_build_fmt(&b, ";t=%x", (unsigned)(uint32_t)now_ms);
    sip_build_str(&b, "\r\n");
    if (is_register && !is_aliased) {
        sip_build_str(&b, "Path: <sip:");
        sip_build_mem(&b, f->token, f->token_len);
        sip_build_str(&b, "@");
        sip_build_str(&b, e->cfg->core.text);
        sip_build_str(&b, ob ? ";lr;ob>\r\n" : ";lr>\r\n");
        bool has_path_tag = false;
        for (const struct sip_hdr *sh = sip_msg_hdr(m, SIP_HDR_SUPPORTED); sh && !has_path_tag;
             sh = sip_msg_hdr_next(m, sh))
            has_path_tag = sip_tag_list_has(sh->value, "path");
        if (!has_path_tag)
            sip_build_str(&b, "Supported: path\r\n");
    }
    if (!sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS)) {
        sip_build_str(&b, "Max-Forwards: ");
        sip_build_u32(&b, plan.max_forwards);
        sip_build_str(&b, "\r\n");
    }
    if (raise_expires && !sip_msg_hdr(m, SIP_HDR_EXPIRES)) {
        sip_build_str(&b, "Expires: ");
        sip_build_u32(&b, plan.expires_floor);
        sip_build_str(&b, "\r\n");
    }
    sip_edit_copy(&b, m, &plan);
    if (is_register) {
        e->st.relayed_register++;
        flow_reg_note(e, f, &sum, is_aliased);
    } else {
        e->st.relayed_request++;
    }
    /* ACK gets no answer (RFC 3261 §17.1.1.3): it says nothing about the registrar. */
    send_built_udp(e, &b, EDGE_SOCK_CORE,
                   upstream_dst(e, now_ms, m->method_id != SIP_METHOD_ACK));
}

/*
 * The tag in our Via branch on a request delivered to a client (RFC 3261 §16.11 leaves
 * the branch to us): a MAC over the flow's token, the Via below ours (branch, sent-by,
 * received, rport: where the response goes on to), the Call-ID and the CSeq number.
 * A client response is relayed to the core only when its top Via carries the tag for
 * exactly those values, so a client can answer only requests sipedge delivered to it,
 * and only towards the hop that sent them. The CSeq method is left out so that a
 * CANCEL gets the branch of its INVITE (§9.2).
 */
static int inbound_tag(struct edge *e, const struct flow *f, const struct sip_via *next,
                       const struct sip_msg *m, char tag[FLOW_TOKEN_TAG_LEN + 1],
                       struct slice check)
{
    const struct sip_hdr *cid = sip_msg_hdr(m, SIP_HDR_CALL_ID);
    const struct sip_hdr *cs = sip_msg_hdr(m, SIP_HDR_CSEQ);
    uint32_t seq = 0;
    struct slice method;
    if (!cid || !cs || sip_cseq_parse(cs->value, &seq, &method) < 0)
        return -EBADMSG;
    char port[8], num[12];
    int pn = snprintf(port, sizeof(port), "%u", (unsigned)next->port);
    int sn = snprintf(num, sizeof(num), "%u", seq);
    struct slice parts[] = {
        slice_make(f->token, f->token_len), next->branch, next->host,
        slice_make(port, (size_t)pn), next->received, next->rport,
        slice_trim(cid->value), slice_make(num, (size_t)sn),
    };
    size_t n = sizeof(parts) / sizeof(parts[0]);
    if (check.p)
        return flow_token_tag_verify(e->keys, FLOW_TOKEN_TAG_INBOUND_BRANCH, parts, n, check);
    return flow_token_tag(e->keys, FLOW_TOKEN_TAG_INBOUND_BRANCH, parts, n, tag);
}

/* Client response to a request we delivered: pop our Via, on to the next Via. */
static void relay_client_response(struct edge *e, struct rx *rx, const struct sip_msg *m,
                                  uint64_t now_ms)
{
    const struct sip_view *v = &e->view;
    const struct sip_via *ours = &v->via;
    if (v->via_hdr && slice_case_prefix(ours->branch, EDGE_BRANCH_PING)) {
        /* Any answer to our OPTIONS ping proves the client and its NAT mapping alive. */
        struct flow *f = rx->f ? rx->f : flow_table_find(e->flows, FLOW_UDP, rx->sock, rx->src);
        if (f) {
            f->is_ping_outstanding = false;
            f->missed_pings = 0;
            f->last_rx_ms = now_ms;
            e->st.ping_answered++;
        }
        return;
    }
    struct sip_edit plan = {0};
    struct sip_via next;
    if (!v->via_hdr || !slice_case_prefix(ours->branch, EDGE_BRANCH_IN) ||
        sip_edit_pop_via(m, v, &next, &plan) < 0) {
        e->st.drop_stray_response++;
        return;
    }
    /* Only over the flow the request was delivered on, with our tag for it. */
    struct flow *rf = rx->f ? rx->f : flow_table_find(e->flows, FLOW_UDP, rx->sock, rx->src);
    struct slice tag = ours->branch.len == sizeof(EDGE_BRANCH_IN) - 1 + 16 + FLOW_TOKEN_TAG_LEN
                           ? slice_make(ours->branch.p + ours->branch.len - FLOW_TOKEN_TAG_LEN,
                                        FLOW_TOKEN_TAG_LEN)
                           : SLICE_NULL;
    if (!rf || rf->state != FLOW_LIVE || !tag.p ||
        inbound_tag(e, rf, &next, m, NULL, tag) != 0) {
        e->st.drop_forged_response++;
        return;
    }
    struct sockaddr_storage dst;
    if (sip_via_response_addr(&next, &dst) < 0 || !is_core_peer(e, (const struct sockaddr *)&dst)) {
        e->st.drop_stray_response++;
        return;
    }
    if (m->status == 100) {
        e->st.drop_100_trying++;
        return;
    }
    rf->last_rx_ms = now_ms;
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    struct sip_build b;
    sip_build_init(&b, buf, cap);
    sip_build_mem(&b, m->buf, m->start_line_len);
    sip_edit_copy(&b, m, &plan);
    e->st.relayed_response_to_core++;
    send_built_udp(e, &b, EDGE_SOCK_CORE, (const struct sockaddr *)&dst);
}

/* Every message from a client, UDP datagram or WebSocket message. */
static void ingress_public(struct edge *e, struct rx *rx, const char *buf, size_t len,
                           uint64_t now_ms)
{
    e->st.rx_public++;
    e->view.via_hdr = NULL; /* no view until this message has one */
    if (len == 0)
        return;
    struct guard_verdict admit = {.action = GUARD_PASS};
    if (e->guard) {
        admit = guard_admit(e->guard, rx->src, now_ms);
        if (admit.action == GUARD_DROP) {
            e->st.guard_dropped++;
            return;
        }
    }
    if (rx->transport == FLOW_UDP && stun_is_stun(buf, len)) {
        /* RFC 5626 §4.4.2: STUN Binding on the SIP port is the UDP keepalive. */
        size_t cap;
        char *out = e->out.reserve(e->out.ctx, &cap);
        int n = stun_binding_response(buf, len, rx->src, out, cap);
        if (n < 0) {
            e->st.drop_not_sip++;
            return;
        }
        e->out.commit(e->out.ctx, rx->sock, rx->src, (size_t)n);
        e->st.stun_answered++;
        struct flow *f = flow_table_find(e->flows, FLOW_UDP, rx->sock, rx->src);
        if (f) {
            f->last_rx_ms = now_ms;
            f->missed_pings = 0;
            f->is_ping_outstanding = false;
        }
        return;
    }
    /* RFC 5626 §4.4.1 style keepalive: CRLFCRLF answered with CRLF, lone CRLF ignored. */
    if (buf[0] == '\r' || buf[0] == '\n') {
        if (len == 4 && memcmp(buf, "\r\n\r\n", 4) == 0) {
            size_t cap;
            char *out = e->out.reserve(e->out.ctx, &cap);
            memcpy(out, "\r\n", 2);
            send_to_rx(e, rx, out, 2);
            e->st.keepalive_pong++;
            struct flow *f = rx->f ? rx->f : flow_table_find(e->flows, FLOW_UDP, rx->sock, rx->src);
            if (f)
                f->last_rx_ms = now_ms;
            return;
        }
        if (len <= 4)
            return;
    }
    struct sip_msg m;
    struct sip_err err = {0, NULL};
    struct sip_limits lim = edge_limits(e);
    if (rx->transport != FLOW_UDP && lim.max_msg_bytes < e->pol.ws_max_message_bytes)
        lim.max_msg_bytes = e->pol.ws_max_message_bytes;
    int rc = sip_msg_parse(&m, buf, len, e->hdrs, &lim, &err);
    if (rc < 0 && e->guard)
        guard_strike_malformed(e->guard, rx->src, now_ms);
    if (admit.action == GUARD_REJECT) {
        guard_stops(e, rx, rc == 0 && m.is_request ? &m : NULL, admit);
        return;
    }
    if (rc == -EMSGSIZE) {
        e->st.drop_oversize++;
        /* Answer 513 when the headers can be read at all (RFC 3261 §21.5.14). */
        struct sip_limits big = {.max_msg_bytes = 65535, .max_headers = lim.max_headers};
        struct sip_err err2;
        if (len <= 65535 && sip_msg_parse(&m, buf, len, e->hdrs, &big, &err2) == 0 &&
            m.is_request) {
            e->st.reply_513_too_large++;
            reply(e, rx, &m, 513, "Message Too Large", NULL);
        }
        return;
    }
    if (rc < 0) {
        if (err.status == 0) {
            e->st.drop_not_sip++;
            return;
        }
        e->st.drop_malformed++;
        if (m.is_request && err.status >= 400) {
            e->st.reply_400++;
            reply(e, rx, &m, err.status, err.reason ? err.reason : "Bad Request", NULL);
        }
        return;
    }
    if (!m.is_request) {
        if (sip_view_fill(&m, &e->view) < 0) {
            e->view.via_hdr = NULL;
            e->st.drop_stray_response++;
            return;
        }
        relay_client_response(e, rx, &m, now_ms);
        return;
    }
    if (sip_check_view(&m, &err, &e->view) < 0) {
        e->view.via_hdr = NULL;
        e->st.drop_malformed++;
        e->st.reply_400++;
        reply(e, rx, &m, err.status ? err.status : 400, err.reason ? err.reason : "Bad Request",
              NULL);
        if (e->guard)
            guard_strike_malformed(e->guard, rx->src, now_ms);
        return;
    }
    if (guard_request(e, rx, &m, now_ms))
        return;
    relay_client_request(e, rx, &m, now_ms);
}

void edge_rx_public(struct edge *e, uint8_t sock, const char *buf, size_t len,
                    const struct sockaddr *src, uint64_t now_ms)
{
    struct rx rx = {.transport = FLOW_UDP, .sock = sock, .src = src, .f = NULL};
    ingress_public(e, &rx, buf, len, now_ms);
}

static struct flow *flow_from_ref(struct edge *e, uint64_t ref)
{
    return flow_table_get(e->flows, (uint32_t)(ref >> 32), (uint32_t)ref);
}

int edge_flow_open(struct edge *e, uint8_t transport, uint8_t listener,
                   const struct sockaddr *remote, uint64_t conn, uint64_t now_ms, uint64_t *ref)
{
    struct flow *f;
    int rc = flow_table_add(e->flows, e->keys, transport, listener, remote, now_ms, &f);
    if (rc < 0) {
        if (rc == -ENOSPC)
            e->st.reply_503_flows_full++;
        return rc;
    }
    f->conn = conn;
    e->st.flows_created++;
    /* A connection completed its handshake: its address is not spoofed. */
    if (e->guard)
        guard_note_proven(e->guard, remote, now_ms);
    flow_event(e, EDGE_FLOW_OPENED, f, transport == FLOW_WSS ? "wss" : "ws");
    *ref = (uint64_t)flow_table_slot(e->flows, f) << 32 | f->gen;
    return 0;
}

void edge_rx_flow(struct edge *e, uint64_t ref, const char *buf, size_t len, uint64_t now_ms)
{
    struct flow *f = flow_from_ref(e, ref);
    if (!f || f->state != FLOW_LIVE)
        return;
    f->last_rx_ms = now_ms;
    struct rx rx = {.transport = f->transport, .sock = f->sock, .src = &f->remote.sa, .f = f};
    ingress_public(e, &rx, buf, len, now_ms);
}

void edge_flow_alive(struct edge *e, uint64_t ref, uint64_t now_ms)
{
    struct flow *f = flow_from_ref(e, ref);
    if (f)
        f->last_rx_ms = now_ms;
}

void edge_flow_closed(struct edge *e, uint64_t ref, uint64_t now_ms)
{
    struct flow *f = flow_from_ref(e, ref);
    if (f)
        flow_die(e, f, now_ms, "connection closed");
}

/* ---- core side ------------------------------------------------------------------------ */

/*
 * The live flow a verified token names, or NULL. A token is ours only when its MAC
 * holds; it names this flow only when it was made in this run (epoch) by this worker
 * and the slot's flow has the generation, transport and remote address the token
 * carries, so a slot reused by another client, or a token from an earlier run, never
 * reaches that client. *is_forged is set when the MAC fails.
 */
static struct flow *flow_of_token(struct edge *e, const struct flow_token_fields *tf)
{
    struct flow *f = flow_table_get(e->flows, tf->slot, tf->gen);
    if (!f || tf->epoch != flow_table_epoch(e->flows) || tf->worker != flow_table_worker(e->flows) ||
        tf->transport != f->transport || tf->sock != f->sock ||
        !netaddr_eq(&tf->remote.sa, &f->remote.sa))
        return NULL;
    return f;
}

static struct flow *flow_by_token(struct edge *e, struct slice tok, bool *is_forged)
{
    struct flow_token_fields tf;
    int rc = flow_token_decode(e->keys, tok, &tf);
    *is_forged = rc < 0;
    if (rc < 0)
        return NULL;
    struct flow *f = flow_of_token(e, &tf);
    return f && f->state == FLOW_LIVE ? f : NULL;
}

/*
 * The flow a request from the core is delivered over. The token's own flow when this
 * run still has it (live; a dead one gets 430). Otherwise, for UDP, the token's MAC
 * still proves the client's address, port and our local socket, so the request goes
 * to that address: over the live flow to it, or over a flow re-created for it. This is
 * what keeps UDP clients reachable across a restart (the registrar holds Paths of an
 * earlier run) and after their slot was reused; the slot's current holder is never
 * the one reached. A connection flow (WS) is gone with its connection: NULL, 430.
 * Returns NULL with *is_forged set when the MAC fails.
 */
static struct flow *flow_for_core_request(struct edge *e, struct slice tok, uint64_t now_ms,
                                          bool *is_forged)
{
    struct flow_token_fields tf;
    int rc = flow_token_decode(e->keys, tok, &tf);
    *is_forged = rc < 0;
    if (rc < 0)
        return NULL;
    struct flow *f = flow_of_token(e, &tf);
    if (f)
        return f->state == FLOW_LIVE ? f : NULL;
    if (tf.transport != FLOW_UDP || tf.sock >= e->cfg->n_listen_udp)
        return NULL;
    f = flow_table_find(e->flows, FLOW_UDP, tf.sock, &tf.remote.sa);
    if (f)
        return f->state == FLOW_LIVE ? f : NULL; /* dead: it stopped answering our pings */
    if (e->guard && guard_flow_add(e->guard, &tf.remote.sa, now_ms) < 0)
        return NULL;
    if (flow_table_add(e->flows, e->keys, FLOW_UDP, tf.sock, &tf.remote.sa, now_ms, &f) < 0) {
        if (e->guard)
            guard_flow_remove(e->guard, &tf.remote.sa);
        return NULL;
    }
    e->st.flows_created++;
    e->st.flows_recovered++;
    flow_event(e, EDGE_FLOW_OPENED, f, "udp-recovered");
    return f;
}

/* Registrar response → client, by the flow token in our Via. */
static void relay_core_response(struct edge *e, const struct sip_msg *m,
                                const struct sockaddr *src, uint64_t now_ms)
{
    const struct sip_view *v = &e->view;
    struct sip_via ours = v->via;
    struct slice tok;
    if (!hostport_is(ours.host, ours.port, &e->cfg->core)) {
        e->st.drop_stray_response++;
        return;
    }
    if (slice_case_prefix(ours.branch, EDGE_BRANCH_HEALTH)) {
        /* Any answer to a health check, whatever its status, shows the registrar runs
         * (upstream_answered has noted it); it ends here. */
        for (unsigned i = 0; i < e->n_ups; i++) {
            if (netaddr_eq(src, (const struct sockaddr *)&e->ups[i].addr->ss))
                e->ups[i].answers_options = true;
        }
        e->st.health_answered++;
        return;
    }
    if (slice_case_prefix(ours.branch, EDGE_BRANCH_RESYNC)) {
        if (m->status >= 200 && m->status < 300)
            e->st.resync_answered_ok++;
        else if (m->status >= 300) {
            e->st.resync_answered_error++;
            log_warn("registrar answered %u to a re-REGISTER after its outage (does it trust "
                     "sipedge's P-Asserted-Identity?)",
                     m->status);
        }
        return;
    }
    if (slice_case_prefix(ours.branch, EDGE_BRANCH_DEREG)) {
        /* The answer to our own de-REGISTER ends here. */
        if (m->status >= 200 && m->status < 300)
            e->st.dereg_answered_ok++;
        else if (m->status >= 300) {
            e->st.dereg_answered_error++;
            log_warn("registrar answered %u to a de-REGISTER of a dead flow", m->status);
        }
        return;
    }
    if (!slice_case_prefix(ours.branch, EDGE_BRANCH_OUT) ||
        !sip_params_get(ours.params, "fl", &tok)) {
        e->st.drop_stray_response++;
        return;
    }
    bool is_forged;
    struct flow *f = flow_by_token(e, tok, &is_forged);
    if (is_forged) {
        e->st.drop_stray_response++;
        return;
    }
    if (!f) {
        e->st.drop_dead_flow_response++;
        return;
    }
    if (m->status == 100) {
        e->st.drop_100_trying++;
        return;
    }
    struct slice flag;
    /* A final response to a REGISTER: audited; a 2xx also confirms the flow's record. */
    bool is_reg_final = m->status >= 200 && slice_eq(v->cseq_method, SLICE_LIT("REGISTER"));
    bool is_reg_2xx = is_reg_final && m->status < 300;
    bool had_cred = sip_params_get(ours.params, "au", &flag);
    struct slice tv;
    if (m->status >= 200 && sip_params_get(ours.params, "t", &tv) && tv.len && tv.len <= 8) {
        uint32_t t0 = 0;
        for (size_t i = 0; i < tv.len; i++) {
            char c = tv.p[i];
            t0 = t0 << 4 | (uint32_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
        }
        latency_note(e, (uint32_t)now_ms - t0);
    }
    uint32_t granted = 0;
    if (is_reg_2xx) {
        granted = flow_reg_confirm(e, f, m, had_cred, now_ms);
        if (f->is_nat && f->transport == FLOW_UDP && granted > nat_expires(e, f))
            granted = nat_expires(e, f);
    }
    if (is_reg_final) {
        struct rx frx = {.transport = f->transport, .sock = f->sock, .src = &f->remote.sa, .f = f};
        audit_register(e, m, &frx, f, m->status, granted, false);
    }
    if (m->status == 401 || m->status == 407) {
        if (f->transport == FLOW_UDP)
            note_challenge(e, f, m);
        if (is_reg_final)
            flow_reg_refused(f, v);
    }
    if (e->guard && m->status >= 200)
        guard_on_response(e->guard, &f->remote.sa, m->status, had_cred, v->to.uri, now_ms);
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    struct sip_build b;
    sip_build_init(&b, buf, cap);
    sip_build_mem(&b, m->buf, m->start_line_len);
    /* RFC 5626 §5.4: tell an outbound client how often to send keepalives. */
    if (is_reg_2xx && sip_params_get(ours.params, "ob", &flag) &&
        !sip_msg_hdr(m, SIP_HDR_FLOW_TIMER)) {
        sip_build_str(&b, "Flow-Timer: ");
        sip_build_u32(&b, e->pol.flow_timer_s);
        sip_build_str(&b, "\r\n");
        e->st.flow_timer_added++;
    }
    struct sip_edit plan = {.pop_via = v->via_hdr, .pop_via_rest = v->via_rest};
    if (is_reg_2xx && f->is_nat && f->transport == FLOW_UDP)
        plan.expires_cap = nat_expires(e, f);
    /* RFC 3261 §10.2.4: the client looks for its own Contacts in the answer. */
    struct contact_edit ce = {.e = e, .n_edits = &e->st.contacts_restored};
    if (is_reg_final && e->pol.nat_contact_alias) {
        plan.contact_uri = contact_from_alias;
        plan.contact_ctx = &ce;
    }
    sip_edit_copy(&b, m, &plan);
    e->st.relayed_response_to_client++;
    send_built_flow(e, &b, f);
}

/* True when the request is addressed to this edge itself (R-URI host is our core address). */
static bool ruri_is_core(const struct edge *e, const struct sip_msg *m)
{
    struct sip_uri u;
    bool is_sip;
    return sip_uri_parse(m->ruri, &u, &is_sip) == 0 && is_sip &&
           hostport_is(u.host, u.port, &e->cfg->core);
}

static const char *via_transport(const struct flow *f)
{
    switch (f->transport) {
    case FLOW_WS:
        return "WS";
    case FLOW_WSS:
        return "WSS";
    default:
        return "UDP";
    }
}

static const struct config_addr *flow_listener(const struct edge *e, const struct flow *f)
{
    if (f->transport == FLOW_WS && f->sock < e->cfg->n_listen_ws)
        return &e->cfg->listen_ws[f->sock];
    if (f->transport == FLOW_WSS && f->sock < e->cfg->n_listen_wss)
        return &e->cfg->listen_wss[f->sock];
    if (f->sock < e->cfg->n_listen_udp)
        return &e->cfg->listen_udp[f->sock];
    return &e->cfg->core;
}

/*
 * Request from the core for a client: its top Route is our Path (RFC 3327), or, with
 * no Route naming us, its Request-URI is one of our Contact aliases. Either way the
 * flow token decides the flow it is delivered over.
 */
static void relay_core_request(struct edge *e, struct rx *rx, const struct sip_msg *m,
                               uint64_t now_ms)
{
    const struct sip_view *v = &e->view;
    uint32_t mf = v->max_forwards;
    if (v->is_max_forwards_bad) {
        e->st.reply_400++;
        reply(e, rx, m, 400, "Bad Max-Forwards", NULL);
        return;
    }
    const struct sip_hdr *rh = v->route_hdr;
    struct slice route_rest = v->route_rest;
    struct sip_uri ru;
    bool is_sip = false;
    struct slice tok = SLICE_NULL, alias = SLICE_NULL;
    if (rh && sip_uri_parse(v->route.uri, &ru, &is_sip) == 0 && is_sip &&
        hostport_is(ru.host, ru.port, &e->cfg->core)) {
        tok = ru.user;
    } else if (uri_alias_parts(m->ruri, &e->cfg->core, &tok, &alias)) {
        rh = NULL; /* a Route that does not name us stays for the client */
    } else {
        if (m->method_id == SIP_METHOD_OPTIONS && ruri_is_core(e, m)) {
            reply(e, rx, m, 200, "OK", NULL);
            return;
        }
        e->st.reply_404_not_routable++;
        reply(e, rx, m, 404, "Not Found", NULL);
        return;
    }
    bool is_forged;
    struct flow *f = flow_for_core_request(e, tok, now_ms, &is_forged);
    if (is_forged) {
        e->st.reply_403_bad_token++;
        reply(e, rx, m, 403, "Forbidden", NULL);
        return;
    }
    if (!f) {
        /* RFC 5626 §5.3: the registrar/proxy may drop that binding or try another flow. */
        e->st.reply_430_flow_failed++;
        reply(e, rx, m, 430, "Flow Failed", NULL);
        return;
    }
    if (mf == 0) {
        e->st.reply_483_too_many_hops++;
        reply(e, rx, m, 483, "Too Many Hops", NULL);
        return;
    }
    char branch[17], tag[FLOW_TOKEN_TAG_LEN + 1];
    sip_edit_branch(m, v, rx->src, e->branch_k0, e->branch_k1, branch);
    if (inbound_tag(e, f, &v->via, m, tag, SLICE_NULL) < 0) {
        e->st.reply_400++;
        reply(e, rx, m, 400, "Bad Request", NULL);
        return;
    }
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    struct sip_build b;
    sip_build_init(&b, buf, cap);
    if (alias.p) {
        /* The original URI goes back into the Request-URI, decoded in place. */
        const char *ruri_end = m->ruri.p + m->ruri.len;
        sip_build_mem(&b, m->buf, (size_t)(m->ruri.p - m->buf));
        if (contact_alias_decode(&b, alias) == -EBADMSG) {
            e->st.reply_400++;
            e->st.reply_400_bad_alias++;
            reply(e, rx, m, 400, "Bad Contact Alias", NULL);
            return;
        }
        sip_build_mem(&b, ruri_end, m->start_line_len - (size_t)(ruri_end - m->buf));
    } else {
        sip_build_mem(&b, m->buf, m->start_line_len);
    }
    sip_build_fmt(&b, "Via: SIP/2.0/%s %s;branch=" EDGE_BRANCH_IN "%s%s\r\n", via_transport(f),
                  flow_listener(e, f)->text, branch, tag);
    if (!sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS)) {
        sip_build_str(&b, "Max-Forwards: ");
        sip_build_u32(&b, mf - 1);
        sip_build_str(&b, "\r\n");
    }
    struct sip_edit plan = {.pop_route = rh, .pop_route_rest = route_rest,
                            .set_max_forwards = true, .max_forwards = mf - 1};
    sip_edit_copy(&b, m, &plan);
    e->st.inbound_delivered++;
    if (alias.p)
        e->st.inbound_alias_delivered++;
    send_built_flow(e, &b, f);
}

void edge_rx_core(struct edge *e, const char *buf, size_t len, const struct sockaddr *src,
                  uint64_t now_ms)
{
    e->st.rx_core++;
    if (!is_core_peer(e, src)) {
        e->st.drop_non_core_peer++;
        return;
    }
    if (len == 0 || buf[0] == '\r' || buf[0] == '\n')
        return;
    struct rx rx = {.transport = 0, .sock = EDGE_SOCK_CORE, .src = src, .f = NULL};
    e->view.via_hdr = NULL;
    struct sip_msg m;
    struct sip_err err = {0, NULL};
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = EDGE_MAX_HDRS};
    if (sip_msg_parse(&m, buf, len, e->hdrs, &lim, &err) < 0) {
        e->st.drop_malformed++;
        if (err.status >= 400 && m.is_request) {
            e->st.reply_400++;
            reply(e, &rx, &m, err.status, err.reason, NULL);
        }
        return;
    }
    if (sip_view_fill(&m, &e->view) < 0) {
        e->view.via_hdr = NULL;
        if (m.is_request) {
            e->st.reply_400++;
            reply(e, &rx, &m, 400, "Bad Via", NULL);
        } else {
            e->st.drop_stray_response++;
        }
        return;
    }
    if (m.is_request) {
        relay_core_request(e, &rx, &m, now_ms);
    } else {
        upstream_answered(e, src);
        relay_core_response(e, &m, src, now_ms);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void edge_load_routes(struct edge *e);

int edge_new(struct edge **out, const struct edge_opts *opts)
{
    struct edge *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->cfg = opts->cfg;
    e->pol = *opts->policy;
    e->out = opts->out;
    e->guard = opts->guard;
    e->hooks = opts->hooks;
    e->ups[e->n_ups++].addr = &e->cfg->registrar;
    for (unsigned i = 0; i < e->cfg->n_registrar_backups && e->n_ups < EDGE_MAX_UPSTREAMS; i++)
        e->ups[e->n_ups++].addr = &e->cfg->registrar_backups[i];
    int rc = flow_token_keys_new(&e->keys, opts->cfg->flow_key,
                                 opts->cfg->has_flow_key_prev ? opts->cfg->flow_key_prev : NULL);
    if (rc < 0)
        goto fail;
    rc = flow_table_new(&e->flows, e->pol.max_flows, opts->worker);
    if (rc < 0)
        goto fail;
    /* A fresh epoch per run: tokens of an earlier run name no flow of this one. */
    uint32_t epoch = 0;
    while (epoch == 0) {
        if (RAND_bytes((unsigned char *)&epoch, sizeof(epoch)) != 1) {
            rc = -EIO;
            goto fail;
        }
    }
    flow_table_set_epoch(e->flows, epoch);
    uint64_t bk[2];
    if (RAND_bytes((unsigned char *)bk, sizeof(bk)) != 1) {
        rc = -EIO;
        goto fail;
    }
    e->branch_k0 = bk[0];
    e->branch_k1 = bk[1];
    edge_load_routes(e);
    *out = e;
    return 0;
fail:
    edge_free(e);
    return rc;
}

void edge_free(struct edge *e)
{
    if (!e)
        return;
    if (e->flows) {
        for (uint32_t i = 0; i < flow_table_capacity(e->flows); i++) {
            struct flow *f = flow_table_get_slot(e->flows, i);
            if (f && f->regs)
                flow_regs_free(f);
        }
    }
    flow_token_keys_free(e->keys);
    flow_table_free(e->flows);
    statefile_buf_free(&e->journal);
    free(e);
}

/* The policy's outbound-proxy Routes, parsed (the loader validated them). */
static void edge_load_routes(struct edge *e)
{
    e->n_allow_routes = 0;
    for (unsigned i = 0; i < e->pol.n_relay_allow_routes; i++)
        if (config_addr_parse(e->pol.relay_allow_routes[i], &e->allow_routes[e->n_allow_routes]) ==
            0)
            e->n_allow_routes++;
}

void edge_set_policy(struct edge *e, const struct policy *policy)
{
    e->pol = *policy;
    edge_load_routes(e);
}

static void send_ping(struct edge *e, struct flow *f)
{
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, &cap);
    if (e->pol.nat_ping_method == 0) {
        memcpy(buf, "\r\n\r\n", 4);
        e->out.commit(e->out.ctx, f->sock, &f->remote.sa, 4);
        e->st.ping_sent++;
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    netaddr_ip(&f->remote.sa, ip, sizeof(ip), &port);
    bool v6 = f->remote.sa.sa_family == AF_INET6;
    const char *lst = flow_listener(e, f)->text;
    uint64_t id = siphash13(e->branch_k0 ^ ++e->dereg_seq, e->branch_k1, f->token, f->token_len);
    struct sip_build b;
    sip_build_init(&b, buf, cap);
    sip_build_fmt(&b, "OPTIONS sip:%s%s%s:%u SIP/2.0\r\n", v6 ? "[" : "", ip, v6 ? "]" : "",
                  port);
    sip_build_fmt(&b, "Via: SIP/2.0/UDP %s;branch=" EDGE_BRANCH_PING "%016llx;rport\r\n", lst,
                  (unsigned long long)id);
    sip_build_str(&b, "Max-Forwards: 70\r\n");
    sip_build_fmt(&b, "From: <sip:keepalive@%s>;tag=%08llx\r\n", lst,
                  (unsigned long long)(id >> 32));
    sip_build_fmt(&b, "To: <sip:%s%s%s:%u>\r\n", v6 ? "[" : "", ip, v6 ? "]" : "", port);
    sip_build_fmt(&b, "Call-ID: %016llx@sipedge\r\n", (unsigned long long)id);
    sip_build_str(&b, "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    size_t len;
    if (!finish(e, &b, &len))
        return;
    e->out.commit(e->out.ctx, f->sock, &f->remote.sa, len);
    f->is_ping_outstanding = true;
    e->st.ping_sent++;
}

/*
 * Server pings to registered NATed UDP flows, every nat_ping_interval_s. Each tick
 * handles the slots congruent to the tick number, so the whole table is covered once
 * per interval without a timer per flow. OPTIONS pings left unanswered
 * nat_max_missed_pings times in a row mark the flow dead.
 */
static void nat_pings(struct edge *e, uint64_t now_ms)
{
    if (!e->pol.nat_keepalive || !e->pol.nat_ping_interval_s)
        return;
    uint32_t step = e->pol.nat_ping_interval_s;
    uint32_t cap = flow_table_capacity(e->flows);
    for (uint32_t i = (uint32_t)(e->n_ticks % step); i < cap; i += step) {
        struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state != FLOW_LIVE || f->transport != FLOW_UDP || !f->is_nat ||
            f->reg_until_ms <= now_ms)
            continue;
        /* A NATed client was told to refresh within nat_expires; one that stays silent
         * for twice that (plus a ping interval) is gone, whatever the ping method. */
        uint64_t overdue_ms = 2ull * nat_expires(e, f) * 1000 + (uint64_t)step * 1000;
        if (now_ms > f->last_rx_ms && now_ms - f->last_rx_ms > overdue_ms) {
            char a[LOG_ADDR_MAX];
            log_info("flow %s dead: no refresh for %llu s",
                     log_fmt_addr(&f->remote.sa, a, sizeof(a)),
                     (unsigned long long)((now_ms - f->last_rx_ms) / 1000));
            flow_die(e, f, now_ms, "refresh overdue");
            continue;
        }
        if (f->is_ping_outstanding && ++f->missed_pings >= e->pol.nat_max_missed_pings) {
            char a[LOG_ADDR_MAX];
            log_info("flow %s dead: %u pings unanswered", log_fmt_addr(&f->remote.sa, a, sizeof(a)),
                     f->missed_pings);
            flow_die(e, f, now_ms, "pings unanswered");
            continue;
        }
        send_ping(e, f);
    }
}

/*
 * OPTIONS health checks of every registrar, each ping_interval. Answers are absorbed in
 * relay_core_response; upstream_check marks a registrar down once it has answered
 * checks before and then leaves them unanswered for the timeout.
 */
static void health_pings(struct edge *e, uint64_t now_ms)
{
    if (!e->pol.registrar_ping_interval_s)
        return;
    for (unsigned i = 0; i < e->n_ups; i++) {
        struct upstream *u = &e->ups[i];
        if (now_ms < u->ping_due_ms)
            continue;
        u->ping_due_ms = now_ms + (uint64_t)e->pol.registrar_ping_interval_s * 1000;
        uint64_t id = siphash13(e->branch_k0 ^ ++e->dereg_seq, e->branch_k1, &i, sizeof(i));
        size_t cap;
        char *buf = e->out.reserve(e->out.ctx, &cap);
        struct sip_build b;
        sip_build_init(&b, buf, cap);
        sip_build_fmt(&b, "OPTIONS sip:%s SIP/2.0\r\n", u->addr->text);
        sip_build_fmt(&b, "Via: SIP/2.0/UDP %s;branch=" EDGE_BRANCH_HEALTH "%016llx\r\n",
                      e->cfg->core.text, (unsigned long long)id);
        sip_build_str(&b, "Max-Forwards: 70\r\n");
        sip_build_fmt(&b, "From: <sip:sipedge@%s>;tag=%08llx\r\n", e->cfg->core.text,
                      (unsigned long long)(id >> 32));
        sip_build_fmt(&b, "To: <sip:%s>\r\n", u->addr->text);
        sip_build_fmt(&b, "Call-ID: %016llx@sipedge\r\n", (unsigned long long)id);
        sip_build_str(&b, "CSeq: 1 OPTIONS\r\nUser-Agent: sipedge\r\nContent-Length: 0\r\n\r\n");
        size_t len;
        if (!finish(e, &b, &len))
            return;
        e->out.commit(e->out.ctx, EDGE_SOCK_CORE, (const struct sockaddr *)&u->addr->ss, len);
        if (!u->ping_since_ms)
            u->ping_since_ms = now_ms ? now_ms : 1;
        e->st.health_sent++;
    }
}

/*
 * regcache.resync assert: after a registrar came back, re-register the stale records of
 * clients whose own refresh is further away than the refresh margin, a slice of the table
 * per tick, paced by the guard's registrar budget (a record the budget refuses now is
 * tried on the next tick). Clients refreshing sooner refill the registrar themselves.
 */
static void resync_step(struct edge *e, uint64_t now_ms)
{
    if (!e->resync_slot)
        return;
    uint32_t cap = flow_table_capacity(e->flows);
    uint32_t budget = e->pol.guard_registrar_rate ? e->pol.guard_registrar_rate : 100;
    uint64_t soon = now_ms + (uint64_t)e->pol.regcache_refresh_margin_s * 1000;
    uint32_t i = e->resync_slot - 1;
    bool refused = false;
    for (uint32_t scanned = 0; i < cap && budget && scanned < 65536; i++, scanned++) {
        struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state != FLOW_LIVE)
            continue;
        /* The client's next refresh: within nat_expires for NATed clients. */
        uint64_t next = f->is_nat ? f->last_rx_ms + (uint64_t)nat_expires(e, f) * 1000 : 0;
        for (struct flow_reg *r = f->regs; r; r = r->next) {
            if (!r->is_authed || !r->contacts[0] || r->cache_epoch == e->regcache_epoch ||
                r->until_ms <= soon || (next && next <= soon))
                continue;
            struct slice aor = slice_make(r->aor, strlen(r->aor));
            if (e->guard &&
                guard_admit_register(e->guard, &f->remote.sa, aor, true, 1, now_ms).action !=
                    GUARD_PASS) {
                refused = true; /* this flow again on the next tick */
                break;
            }
            send_asserted_register(e, f, r, (uint32_t)((r->until_ms - now_ms) / 1000), now_ms);
            budget--;
        }
        if (refused)
            break;
    }
    e->resync_slot = i < cap ? i + 1 : 0;
}

void edge_tick_dead(struct edge *e, uint64_t now_ms) { dead_flows_process(e, now_ms); }

void edge_tick(struct edge *e, uint64_t now_ms)
{
    e->n_ticks++;
    upstream_check(e, now_ms);
    health_pings(e, now_ms);
    resync_step(e, now_ms);
    nat_pings(e, now_ms);
    /* Sweep the whole table about once a minute, a slice per tick. */
    uint32_t per_tick = flow_table_capacity(e->flows) / 60 + 1;
    flow_table_sweep(e->flows, now_ms, (uint64_t)e->pol.flow_idle_timeout_s * 1000, per_tick,
                     on_flow_release, e);
    dead_flows_process(e, now_ms);
    e->last_sweep_ms = now_ms;
}

const struct edge_stats *edge_stats(const struct edge *e) { return &e->st; }

uint32_t edge_n_flows(const struct edge *e) { return flow_table_count(e->flows); }

void edge_stats_format(const struct edge *e, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
#define EDGE_STATS_PRINT(name)                                                                     \
    if (n < cap)                                                                                   \
        n += (size_t)snprintf(buf + n, cap - n, "%s%s=%llu", n ? " " : "", #name,                  \
                              (unsigned long long)e->st.name);
    EDGE_STATS(EDGE_STATS_PRINT)
#undef EDGE_STATS_PRINT
    if (n < cap)
        snprintf(buf + n, cap - n, " flows=%u", flow_table_count(e->flows));
}

const struct edge_latency *edge_latency(const struct edge *e) { return &e->lat; }

bool edge_registrar_up(const struct edge *e) { return e->loss_since_ms == 0; }

size_t edge_flows_foreach(struct edge *e, bool (*cb)(void *ctx, const struct edge_flow_info *fi),
                          void *ctx)
{
    size_t n = 0;
    uint32_t cap = flow_table_capacity(e->flows);
    for (uint32_t i = 0; i < cap; i++) {
        struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state == FLOW_FREE)
            continue;
        struct edge_flow_info fi = {
            .flow_ref = flow_ref_of(e, f),
            .transport = f->transport,
            .state = f->state,
            .is_nat = f->is_nat,
            .remote = &f->remote.sa,
            .last_rx_ms = f->last_rx_ms,
        };
        for (struct flow_reg *r = f->regs; r && fi.n_regs < 8; r = r->next) {
            fi.regs[fi.n_regs++] = (struct edge_reg_info){.aor = r->aor,
                                                          .contacts = r->contacts,
                                                          .user_agent = r->user_agent,
                                                          .until_ms = r->until_ms,
                                                          .is_authed = r->is_authed};
        }
        n++;
        if (!cb(ctx, &fi))
            break;
    }
    return n;
}

void edge_flow_counts(const struct edge *e, uint32_t *udp, uint32_t *ws, uint32_t *wss)
{
    *udp = *ws = *wss = 0;
    uint32_t cap = flow_table_capacity(e->flows);
    for (uint32_t i = 0; i < cap; i++) {
        const struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state != FLOW_LIVE)
            continue;
        if (f->transport == FLOW_WS)
            (*ws)++;
        else if (f->transport == FLOW_WSS)
            (*wss)++;
        else
            (*udp)++;
    }
}

/* ---- persistence -------------------------------------------------------------------- */

/*
 * Snapshot payload, version 1 (statefile integers, big-endian):
 *   u32 flow count | flows
 *   flow: u8 sock | u8 is_nat | u8 family (4/6) | 16 address bytes | u16 port |
 *         u64 last received | u64 registration expiry | u16 record count | records
 *   record: u64 expiry | u32 cseq | u8 is_authed | u8 is_aliased |
 *           str aor | str call_id | str contacts | str user_agent
 * Times are wall-clock milliseconds (CLOCK_REALTIME), so the monotonic clock of the next
 * run does not matter and the time sipedge was down is taken off. Only live UDP flows
 * with a confirmed registration are kept: a WebSocket flow ends with its connection, and
 * an unregistered flow is re-created by the client's next packet anyway.
 */
/* Monotonic time t as wall-clock time, given both clocks now. */
static uint64_t to_wall(uint64_t t, uint64_t now_ms, uint64_t wall)
{
    return t >= now_ms ? wall + (t - now_ms) : wall > now_ms - t ? wall - (now_ms - t) : 0;
}

static void put_flow_key(const struct flow *f, struct statefile_buf *b);

static void save_flow(const struct flow *f, uint64_t now_ms, uint64_t wall, struct statefile_buf *b)
{
    statefile_put_u8(b, f->is_nat);
    put_flow_key(f, b);
    statefile_put_u64(b, to_wall(f->last_rx_ms, now_ms, wall));
    statefile_put_u64(b, to_wall(f->reg_until_ms, now_ms, wall));
    uint16_t nr = 0;
    for (const struct flow_reg *r = f->regs; r; r = r->next)
        nr += r->until_ms > now_ms;
    statefile_put_u16(b, nr);
    for (const struct flow_reg *r = f->regs; r; r = r->next) {
        if (r->until_ms <= now_ms)
            continue;
        statefile_put_u64(b, to_wall(r->until_ms, now_ms, wall));
        statefile_put_u32(b, r->cseq);
        statefile_put_u8(b, r->is_authed);
        statefile_put_u8(b, r->is_aliased);
        statefile_put_str(b, r->aor);
        statefile_put_str(b, r->call_id);
        statefile_put_str(b, r->contacts);
        statefile_put_str(b, r->user_agent);
    }
}

/* Journal records: a flow's whole persisted state, or its end. */
#define JOURNAL_FLOW 1
#define JOURNAL_DROP 2

static void put_flow_key(const struct flow *f, struct statefile_buf *b)
{
    statefile_put_u8(b, f->sock);
    uint8_t a[16] = {0};
    if (f->remote.sa.sa_family == AF_INET) {
        memcpy(a, &f->remote.in.sin_addr, 4);
        statefile_put_u8(b, 4);
        statefile_put_bytes(b, a, 16);
        statefile_put_u16(b, ntohs(f->remote.in.sin_port));
    } else {
        statefile_put_u8(b, 6);
        statefile_put_bytes(b, &f->remote.in6.sin6_addr, 16);
        statefile_put_u16(b, ntohs(f->remote.in6.sin6_port));
    }
}

/* A UDP flow's confirmed registrations changed: its whole state goes to the journal. */
static void journal_flow(struct edge *e, const struct flow *f, uint64_t now_ms)
{
    if (!e->is_journaling || f->transport != FLOW_UDP || f->state != FLOW_LIVE)
        return;
    statefile_put_u8(&e->journal, JOURNAL_FLOW);
    save_flow(f, now_ms, statefile_wall_ms(), &e->journal);
}

static void journal_drop(struct edge *e, const struct flow *f)
{
    if (!e->is_journaling || f->transport != FLOW_UDP)
        return;
    statefile_put_u8(&e->journal, JOURNAL_DROP);
    put_flow_key(f, &e->journal);
}

void edge_journal_enable(struct edge *e, bool on) { e->is_journaling = on; }

size_t edge_journal_take(struct edge *e, struct statefile_buf *out)
{
    *out = e->journal;
    statefile_buf_init(&e->journal);
    return out->len;
}

int edge_state_save_step(const struct edge *e, uint64_t now_ms, struct statefile_buf *b,
                         struct edge_snapshot *cur, uint32_t max_slots)
{
    if (!cur->is_started) {
        cur->is_started = true;
        cur->next_slot = 0;
        cur->n_flows = 0;
        cur->count_at = b->len;
        statefile_put_u32(b, 0); /* patched when the walk ends */
    }
    uint64_t wall = statefile_wall_ms();
    uint32_t cap = flow_table_capacity(e->flows);
    uint32_t end = max_slots && cap - cur->next_slot > max_slots ? cur->next_slot + max_slots : cap;
    for (uint32_t i = cur->next_slot; i < end; i++) {
        const struct flow *f = flow_table_get_slot(e->flows, i);
        if (!f || f->state != FLOW_LIVE || f->transport != FLOW_UDP || f->reg_until_ms <= now_ms)
            continue;
        save_flow(f, now_ms, wall, b);
        cur->n_flows++;
    }
    cur->next_slot = end;
    if (b->err)
        return b->err;
    if (end < cap)
        return 0;
    uint32_t n = cur->n_flows;
    uint8_t be[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    memcpy(b->p + cur->count_at, be, 4);
    return 1;
}

int edge_state_save(const struct edge *e, uint64_t now_ms, struct statefile_buf *b)
{
    struct edge_snapshot cur = {0};
    int rc = edge_state_save_step(e, now_ms, b, &cur, 0);
    return rc < 0 ? rc : (int)cur.n_flows;
}

/* Time left until wall-clock time t, at wall; 0 when past. */
static uint64_t wall_left(uint64_t t, uint64_t wall) { return t > wall ? t - wall : 0; }

/* Reads a flow key (socket and address); -EBADMSG when malformed. */
static int get_flow_key(struct statefile_rd *rd, uint8_t *sock, union flow_addr *addr)
{
    *sock = statefile_get_u8(rd);
    uint8_t fam = statefile_get_u8(rd);
    uint8_t a[16];
    statefile_get_bytes(rd, a, 16);
    uint16_t port = statefile_get_u16(rd);
    if (rd->err || (fam != 4 && fam != 6))
        return -EBADMSG;
    memset(addr, 0, sizeof(*addr));
    if (fam == 4) {
        addr->in.sin_family = AF_INET;
        memcpy(&addr->in.sin_addr, a, 4);
        addr->in.sin_port = htons(port);
    } else {
        addr->in6.sin6_family = AF_INET6;
        memcpy(&addr->in6.sin6_addr, a, 16);
        addr->in6.sin6_port = htons(port);
    }
    return 0;
}

/* Forgets a restored flow that the journal replaces or ends. */
static void restored_flow_release(struct edge *e, struct flow *f)
{
    if (f->state != FLOW_LIVE)
        return;
    if (e->guard)
        guard_flow_remove(e->guard, &f->remote.sa);
    flow_regs_free(f);
    flow_table_release(e->flows, f);
}

/*
 * Reads one flow record, and with apply into a fresh flow; returns 1 restored, 0 skipped,
 * <0 malformed. With replace (journal), a flow already there for that address is
 * replaced by the record; without, it is kept and the record skipped.
 */
static int restore_flow(struct edge *e, struct statefile_rd *rd, bool apply, bool replace,
                        uint64_t wall, uint64_t now_ms, uint32_t *n_regs)
{
    bool is_nat = statefile_get_u8(rd) != 0;
    uint8_t sock;
    union flow_addr addr;
    if (get_flow_key(rd, &sock, &addr) < 0)
        return -EBADMSG;
    uint64_t last_rx = statefile_get_u64(rd);
    uint64_t reg_left = wall_left(statefile_get_u64(rd), wall);
    uint16_t nr = statefile_get_u16(rd);
    if (rd->err || nr > FLOW_REGS_MAX)
        return -EBADMSG;
    struct flow *f = NULL;
    struct flow *old = apply ? flow_table_find(e->flows, FLOW_UDP, sock, &addr.sa) : NULL;
    if (old && replace) {
        restored_flow_release(e, old);
        old = NULL;
    }
    bool keep = apply && sock < e->cfg->n_listen_udp && reg_left > 0 && nr > 0 && !old;
    if (keep && e->guard && guard_flow_add(e->guard, &addr.sa, now_ms) < 0)
        keep = false;
    if (keep && flow_table_add(e->flows, e->keys, FLOW_UDP, sock, &addr.sa, now_ms, &f) < 0) {
        if (e->guard)
            guard_flow_remove(e->guard, &addr.sa);
        keep = false;
    }
    if (f) {
        uint64_t idle = wall > last_rx ? wall - last_rx : 0;
        f->is_nat = is_nat;
        f->last_rx_ms = now_ms > idle ? now_ms - idle : 0;
        f->reg_until_ms = now_ms + reg_left;
    }
    for (uint16_t i = 0; i < nr; i++) {
        struct flow_reg tmp;
        memset(&tmp, 0, sizeof(tmp));
        uint64_t left = wall_left(statefile_get_u64(rd), wall);
        tmp.cseq = statefile_get_u32(rd);
        tmp.is_authed = statefile_get_u8(rd) != 0;
        tmp.is_aliased = statefile_get_u8(rd) != 0;
        statefile_get_str(rd, tmp.aor, sizeof(tmp.aor));
        statefile_get_str(rd, tmp.call_id, sizeof(tmp.call_id));
        statefile_get_str(rd, tmp.contacts, sizeof(tmp.contacts));
        statefile_get_str(rd, tmp.user_agent, sizeof(tmp.user_agent));
        if (rd->err)
            return -EBADMSG;
        if (!f || left == 0)
            continue;
        struct flow_reg *r = malloc(sizeof(*r));
        if (!r)
            continue;
        *r = tmp;
        r->until_ms = now_ms + left;
        r->cache_epoch = e->regcache_epoch;
        r->next = f->regs;
        f->regs = r;
        (*n_regs)++;
    }
    if (f) {
        e->st.flows_created++;
        flow_event(e, EDGE_FLOW_OPENED, f, "udp-restored");
    }
    return f ? 1 : 0;
}

int edge_state_restore(struct edge *e, const uint8_t *p, size_t len, uint32_t version,
                       uint64_t now_ms, struct edge_restore_result *res, char *err, size_t cap)
{
    memset(res, 0, sizeof(*res));
    if (version != EDGE_STATE_VERSION) {
        snprintf(err, cap, "format version %u is not %u", version, EDGE_STATE_VERSION);
        return -EPROTONOSUPPORT;
    }
    struct statefile_rd rd;
    statefile_rd_init(&rd, p, len);
    uint32_t n = statefile_get_u32(&rd);
    uint64_t wall = statefile_wall_ms();
    size_t body = rd.off;
    /* The whole payload is checked before anything is created: never half-loaded. */
    for (uint32_t i = 0; i < n; i++) {
        if (restore_flow(e, &rd, false, false, wall, now_ms, &res->n_regs) < 0) {
            snprintf(err, cap, "malformed flow record %u of %u", i + 1, n);
            return -EBADMSG;
        }
    }
    if (!statefile_rd_done(&rd)) {
        snprintf(err, cap, "%zu bytes after the last flow record", rd.len - rd.off);
        return -EBADMSG;
    }
    rd.off = body;
    res->n_regs = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (restore_flow(e, &rd, true, false, wall, now_ms, &res->n_regs) > 0)
            res->n_flows++;
        else
            res->n_skipped++;
    }
    return 0;
}

/* Applies (apply) or only checks one journal chunk. */
static int journal_pass(struct edge *e, const uint8_t *p, size_t len, bool apply, uint64_t now_ms,
                        struct edge_restore_result *res)
{
    struct statefile_rd rd;
    statefile_rd_init(&rd, p, len);
    uint64_t wall = statefile_wall_ms();
    while (rd.off < rd.len) {
        uint8_t type = statefile_get_u8(&rd);
        if (type == JOURNAL_FLOW) {
            int rc = restore_flow(e, &rd, apply, true, wall, now_ms, &res->n_regs);
            if (rc < 0)
                return rc;
            res->n_flows += rc > 0;
        } else if (type == JOURNAL_DROP) {
            uint8_t sock;
            union flow_addr addr;
            if (get_flow_key(&rd, &sock, &addr) < 0)
                return -EBADMSG;
            struct flow *f = apply ? flow_table_find(e->flows, FLOW_UDP, sock, &addr.sa) : NULL;
            if (f) {
                restored_flow_release(e, f);
                res->n_skipped++;
            }
        } else {
            return -EBADMSG;
        }
    }
    return statefile_rd_done(&rd) ? 0 : -EBADMSG;
}

int edge_journal_replay(struct edge *e, const uint8_t *p, size_t len, uint64_t now_ms,
                        struct edge_restore_result *res)
{
    struct edge_restore_result dry = {0};
    if (journal_pass(e, p, len, false, now_ms, &dry) < 0)
        return -EBADMSG;
    return journal_pass(e, p, len, true, now_ms, res);
}
