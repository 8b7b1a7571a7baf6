/*
 * flow_reg: the registrations relayed over each flow, and what happens when a flow dies.
 *
 * Every REGISTER relayed over a flow leaves a bounded record on it (AOR, Call-ID, CSeq,
 * Contacts), changed only by the registrar's 2xx to that very request. The records
 * feed the registration cache (regcache.c), the audit events and the de-REGISTER the
 * edge sends for a dead flow's contacts once its grace period is over. Flow lifecycle
 * events (opened, closed, released) are reported from here too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/siphash.h"

/* ---- registrations relayed over a flow ---------------------------------------------- */

void flow_regs_free(struct flow *f)
{
    struct flow_reg *r = f->regs;
    while (r) {
        struct flow_reg *next = r->next;
        free(r);
        r = next;
    }
    f->regs = NULL;
}

/* worker (8 bits) | slot (24 bits: max_flows is at most 2^22) | generation (32 bits): one
 * process's references are unique across its workers, in the audit log and the inventory. */
uint64_t edge_flow_ref_of(const struct edge *e, const struct flow *f)
{
    return (uint64_t)flow_table_worker(e->flows) << 56 |
           (uint64_t)flow_table_slot(e->flows, f) << 32 | f->gen;
}

void edge_flow_event(struct edge *e, enum edge_flow_event kind, const struct flow *f,
                     const char *reason)
{
    if (e->hooks.on_flow)
        e->hooks.on_flow(e->hooks.ctx, kind, edge_flow_ref_of(e, f), f->transport, &f->remote.sa,
                         reason);
}

void edge_on_flow_release(void *ctx, struct flow *f)
{
    struct edge *e = ctx;
    if (f->state == FLOW_LIVE)
        edge_journal_drop(e, f);
    if (f->transport == FLOW_UDP && e->guard)
        guard_flow_remove(e->guard, &f->remote.sa);
    if (f->state == FLOW_LIVE)
        edge_flow_event(e, EDGE_FLOW_CLOSED, f, "idle");
    flow_regs_free(f);
    e->st.flows_released++;
}

struct flow_reg *flow_reg_find(struct flow *f, const char *aor)
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
static void dead_flows_forget_aor(struct edge *e, const char *aor,
                                  const struct uri_list *contacts)
{
    for (uint32_t i = e->dead_head; i;) {
        struct flow *d = flow_table_get_slot(e->flows, i - 1);
        struct flow_reg *r = flow_reg_find(d, aor);
        if (r && uri_list_eq(&r->contacts, contacts))
            flow_reg_remove(d, r);
        i = d->dnext;
    }
}

void edge_reg_summarize(const struct sip_msg *m, const struct sip_view *v, struct reg_summary *sum)
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
    uri_list_clear(&sum->contacts);
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
        if (!uri_list_add(&sum->contacts, c->uri))
            return; /* more than a record holds: not usable */
    }
    if (v->n_contacts > SIP_VIEW_MAX_CONTACTS)
        return; /* more than a record can hold: not usable */
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
void flow_reg_note(struct edge *e, struct flow *f, const struct reg_summary *sum, bool is_aliased)
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
    r->pend_contacts = sum->contacts;
    slice_copy_cstr(r->user_agent, sizeof(r->user_agent), sum->user_agent);
    if (sum->cseq > r->cseq || !slice_eq(sum->call_id, slice_make(r->call_id, strlen(r->call_id))))
        r->cseq = sum->cseq;
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
uint32_t flow_reg_confirm(struct edge *e, struct flow *f, const struct sip_msg *m,
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
        edge_journal_flow(e, f, now_ms);
        return max_exp;
    }
    if (until > f->reg_until_ms)
        f->reg_until_ms = until;
    r->until_ms = until;
    r->is_authed = had_credentials;
    r->is_aliased = r->pend_is_aliased;
    r->cache_epoch = e->regcache_epoch;
    memcpy(r->call_id, r->pend_call_id, sizeof(r->call_id));
    r->contacts = r->pend_contacts;
    if (had_credentials && e->dead_head)
        dead_flows_forget_aor(e, r->aor, &r->contacts);
    edge_journal_flow(e, f, now_ms);
    return max_exp;
}

/* A 401/407 to a REGISTER relayed over f: a record that no 2xx ever confirmed is
 * dropped; a confirmed one keeps what was confirmed. */
void flow_reg_refused(struct flow *f, const struct sip_view *v)
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
void edge_send_asserted_register(struct edge *e, const struct flow *f, const struct flow_reg *r,
                                 uint32_t expires, uint64_t now_ms)
{
    struct sip_uri u;
    bool is_sip;
    if (sip_uri_parse(slice_make(r->aor, strlen(r->aor)), &u, &is_sip) < 0 || !is_sip)
        return;
    uint64_t id = siphash13(e->branch_k0 ^ ++e->dereg_seq, e->branch_k1, r->aor, strlen(r->aor));
    struct tx_dest d = tx_dest_udp(EDGE_SOCK_CORE, upstream_dst(e, now_ms, true));
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
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
        for (unsigned i = 0; i < r->contacts.n; i++) {
            if (i)
                sip_build_str(&b, ", ");
            sip_build_str(&b, "<");
            contact_alias_build(&b, slice_make(f->token, f->token_len),
                                uri_list_at(&r->contacts, i), e->cfg->core.text);
            sip_build_fmt(&b, ">;expires=%u", expires);
        }
        sip_build_str(&b, "\r\n");
    } else {
        /* The URIs as one Contact line, as the client registered them. */
        sip_build_str(&b, "Contact: ");
        for (unsigned i = 0; i < r->contacts.n; i++) {
            sip_build_str(&b, i ? ", <" : "<");
            sip_build_slice(&b, uri_list_at(&r->contacts, i));
            sip_build_str(&b, ">");
        }
        sip_build_str(&b, expires ? "\r\n" : ";expires=0\r\n");
        if (expires)
            sip_build_fmt(&b, "Path: <sip:%.*s@%s;lr>\r\nSupported: path\r\n",
                          (int)f->token_len, f->token, e->cfg->core.text);
    }
    sip_build_fmt(&b, "P-Asserted-Identity: <%s>\r\n", r->aor);
    sip_build_fmt(&b, "Expires: %u\r\nUser-Agent: sipedge\r\nContent-Length: 0\r\n\r\n", expires);
    if (expires) {
        e->st.resync_sent++;
    } else {
        e->st.dereg_sent++;
        char text[URI_LIST_TEXT_MAX];
        uri_list_format(&r->contacts, text, sizeof(text));
        log_info("flow dead: de-registering %s (%s)", r->aor, text);
    }
    edge_send(e, &d, &b);
}

/*
 * The edge's own de-REGISTER for a dead flow's contacts. The client's password is not
 * ours, so the request asserts the AOR with P-Asserted-Identity (RFC 3325); the edge
 * strips that header from every client request, so only its own reach the core.
 */
static void send_dereg(struct edge *e, const struct flow *f, const struct flow_reg *r,
                       uint64_t now_ms)
{
    edge_send_asserted_register(e, f, r, 0, now_ms);
}

void edge_flow_die(struct edge *e, struct flow *f, uint64_t now_ms, const char *reason)
{
    if (f->state != FLOW_LIVE)
        return;
    edge_journal_drop(e, f);
    edge_flow_event(e, EDGE_FLOW_CLOSED, f, reason);
    flow_table_mark_dead(e->flows, f);
    f->dead_at_ms = now_ms;
    f->dnext = e->dead_head;
    e->dead_head = flow_table_slot(e->flows, f) + 1;
    e->st.flows_dead++;
}

/* De-registers and forgets dead flows whose grace period is over. */
void edge_dead_flows_process(struct edge *e, uint64_t now_ms)
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
            if (r->until_ms > now_ms && r->is_authed && r->contacts.n)
                send_dereg(e, d, r, now_ms);
        }
        edge_on_flow_release(e, d);
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
void edge_audit_register(struct edge *e, const struct sip_msg *req, const struct rx *rx,
                         const struct flow *f, uint16_t status, uint32_t expires_s,
                         bool is_from_cache)
{
    if (!e->hooks.on_register)
        return;
    if (e->hooks.is_outcome_only) {
        struct edge_reg_event ev = {
            .aor = "",
            .src = f ? &f->remote.sa : rx->src,
            .transport = f ? f->transport : FLOW_UDP,
            .contacts = "",
            .expires_s = expires_s,
            .user_agent = "",
            .status = status,
            .is_from_cache = is_from_cache,
            .flow_ref = f ? edge_flow_ref_of(e, f) : 0,
        };
        e->hooks.on_register(e->hooks.ctx, &ev);
        return;
    }
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
    char contacts[URI_LIST_TEXT_MAX] = "";
    if (r)
        uri_list_format(r->pend_contacts.n ? &r->pend_contacts : &r->contacts, contacts,
                        sizeof(contacts));
    struct edge_reg_event ev = {
        .aor = aor,
        .src = f ? &f->remote.sa : rx->src,
        .transport = f ? f->transport : FLOW_UDP,
        .contacts = contacts,
        .expires_s = expires_s,
        .user_agent = r && !uah ? r->user_agent : ua,
        .status = status,
        .is_from_cache = is_from_cache,
        .flow_ref = f ? edge_flow_ref_of(e, f) : 0,
    };
    e->hooks.on_register(e->hooks.ctx, &ev);
}

void edge_latency_note(struct edge *e, uint32_t ms)
{
    double sec = ms / 1000.0;
    unsigned i = 0;
    while (i < EDGE_LATENCY_BUCKETS && sec > edge_latency_bounds_s[i])
        i++;
    e->lat.count[i]++;
    e->lat.n++;
    e->lat.sum_s += sec;
}
