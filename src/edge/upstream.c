/*
 * upstream: the registrars' health and failover.
 *
 * Requests go to the first configured registrar not marked down. A registrar that
 * leaves a relayed request (or, once it has answered one, a health check) unanswered
 * for the timeout is marked down and retried later; with every registrar down the
 * registration cache keeps clients alive for a grace period. Any answer marks a
 * registrar up again; one that was marked down may have lost its bindings, so the
 * cached registrations become stale. The relays only ask it for the next hop
 * (upstream_dst) and report the answers (upstream_answered).
 */
#include <stdint.h>

#include "edge/edge_priv.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/siphash.h"

/* ---- registrar health and failover -------------------------------------------------- */

/*
 * The registrar to relay to: the first in configured order that is not marked down (a
 * down one whose retry time has come is tried again). With every one down, the primary.
 * Notes a relay that expects an answer, so a missing one can mark the registrar down.
 */
const struct sockaddr *upstream_dst(struct edge *e, uint64_t now_ms, bool expects_answer)
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
void upstream_answered(struct edge *e, const struct sockaddr *src)
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
void upstream_check(struct edge *e, uint64_t now_ms)
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

/*
 * OPTIONS health checks of every registrar, each ping_interval. Answers are absorbed in
 * relay_core_response; upstream_check marks a registrar down once it has answered
 * checks before and then leaves them unanswered for the timeout.
 */
void upstream_health_pings(struct edge *e, uint64_t now_ms)
{
    if (!e->pol.registrar_ping_interval_s)
        return;
    for (unsigned i = 0; i < e->n_ups; i++) {
        struct upstream *u = &e->ups[i];
        if (now_ms < u->ping_due_ms)
            continue;
        u->ping_due_ms = now_ms + (uint64_t)e->pol.registrar_ping_interval_s * 1000;
        uint64_t id = siphash13(e->branch_k0 ^ ++e->dereg_seq, e->branch_k1, &i, sizeof(i));
        struct tx_dest d = tx_dest_udp(EDGE_SOCK_CORE, (const struct sockaddr *)&u->addr->ss);
        struct sip_build b;
        if (!edge_begin(e, &d, &b))
            return;
        sip_build_fmt(&b, "OPTIONS sip:%s SIP/2.0\r\n", u->addr->text);
        sip_build_fmt(&b, "Via: SIP/2.0/UDP %s;branch=" EDGE_BRANCH_HEALTH "%016llx\r\n",
                      e->cfg->core.text, (unsigned long long)id);
        sip_build_str(&b, "Max-Forwards: 70\r\n");
        sip_build_fmt(&b, "From: <sip:sipedge@%s>;tag=%08llx\r\n", e->cfg->core.text,
                      (unsigned long long)(id >> 32));
        sip_build_fmt(&b, "To: <sip:%s>\r\n", u->addr->text);
        sip_build_fmt(&b, "Call-ID: %016llx@sipedge\r\n", (unsigned long long)id);
        sip_build_str(&b, "CSeq: 1 OPTIONS\r\nUser-Agent: sipedge\r\nContent-Length: 0\r\n\r\n");
        bool is_overflow = b.err != 0;
        edge_send(e, &d, &b);
        if (is_overflow)
            return;
        if (!u->ping_since_ms)
            u->ping_since_ms = now_ms ? now_ms : 1;
        e->st.health_sent++;
    }
}
