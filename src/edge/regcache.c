/*
 * regcache: the registration cache.
 *
 * A NATed client is told a short Expires while the registrar holds a long one; its
 * refreshes that match a confirmed, authenticated flow record are answered here
 * (regcache_answer). After a registrar outage, regcache.resync assert re-registers
 * the stale records of clients that would not refresh soon (regcache_resync_step).
 */
#include <stdio.h>
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/sip_msg.h"

/* Expires a NATed client is given: short, with a per-flow jitter (RFC 5626 §4.4 spirit:
 * frequent refreshes keep the NAT mapping; jitter keeps them from synchronising). */
uint32_t edge_nat_expires(const struct edge *e, const struct flow *f)
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
bool regcache_answer(struct edge *e, const struct rx *rx, struct flow *f, const struct sip_msg *m,
                     const struct reg_summary *sum, uint64_t now_ms)
{
    if (!e->pol.regcache || !sum->is_usable || !sum->has_contact || sum->is_removal)
        return false;
    struct flow_reg *r = flow_reg_find(f, sum->aor);
    /* Normally a refresh near the registrar's expiry goes upstream; while no registrar
     * answers, it is answered here until loss_grace past that expiry. */
    uint64_t horizon = e->loss_since_ms
                           ? r ? r->until_ms + (uint64_t)e->pol.registrar_loss_grace_s * 1000 : 0
                       : r ? r->until_ms
                           : 0;
    uint64_t need =
        e->loss_since_ms ? now_ms : now_ms + (uint64_t)e->pol.regcache_refresh_margin_s * 1000;
    if (!r || !r->is_authed || r->until_ms == 0 || horizon <= need ||
        r->cache_epoch != e->regcache_epoch || sum->cseq <= r->cseq ||
        !slice_eq(sum->call_id, slice_make(r->call_id, strlen(r->call_id))) ||
        !uri_list_eq(&r->contacts, &sum->contacts) || r->is_aliased != e->pol.nat_contact_alias)
        return false;
    uint32_t left_s =
        r->until_ms > now_ms ? (uint32_t)((r->until_ms - now_ms) / 1000) : e->pol.nat_expires_s;
    uint32_t grant = sum->max_expires && sum->max_expires < left_s ? sum->max_expires : left_s;
    if (f->is_nat && grant > edge_nat_expires(e, f))
        grant = edge_nat_expires(e, f);
    char extra[1024];
    size_t n = 0;
    /* One Contact line per URI of the recorded set. */
    for (unsigned i = 0; i < r->contacts.n; i++) {
        struct slice u = uri_list_at(&r->contacts, i);
        if (n + u.len + 40 >= sizeof(extra))
            return false;
        n += (size_t)snprintf(extra + n, sizeof(extra) - n, "Contact: <%.*s>;expires=%u\r\n",
                              SLICE_FMT(u), grant);
    }
    r->cseq = sum->cseq;
    e->st.regcache_hit++;
    edge_reply_ex(e, rx, m, 200, "OK", extra, true, grant);
    return true;
}

/*
 * regcache.resync assert: after a registrar came back, re-register the stale records of
 * clients whose own refresh is further away than the refresh margin, a slice of the table
 * per tick, paced by the guard's registrar budget (a record the budget refuses now is
 * tried on the next tick). Clients refreshing sooner refill the registrar themselves.
 */
void regcache_resync_step(struct edge *e, uint64_t now_ms)
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
        /* The client's next refresh: within edge_nat_expires for NATed clients. */
        uint64_t next = f->is_nat ? f->last_rx_ms + (uint64_t)edge_nat_expires(e, f) * 1000 : 0;
        for (struct flow_reg *r = f->regs; r; r = r->next) {
            if (!r->is_authed || !r->contacts.n || r->cache_epoch == e->regcache_epoch ||
                r->until_ms <= soon || (next && next <= soon))
                continue;
            struct slice aor = slice_make(r->aor, strlen(r->aor));
            if (e->guard &&
                guard_admit_register(e->guard, &f->remote.sa, aor, true, 1, now_ms).action !=
                    GUARD_PASS) {
                refused = true; /* this flow again on the next tick */
                break;
            }
            edge_send_asserted_register(e, f, r, (uint32_t)((r->until_ms - now_ms) / 1000), now_ms);
            budget--;
        }
        if (refused)
            break;
    }
    e->resync_slot = i < cap ? i + 1 : 0;
}
