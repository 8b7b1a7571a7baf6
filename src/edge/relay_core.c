/*
 * relay_core: messages from the core (registrar and core peers), on their way to clients.
 *
 * A response is routed by the flow token in our Via (or ends here when it answers one
 * of the edge's own requests); a request is delivered over the flow its Route or
 * Contact alias names. The token is verified before any table lookup, and a request is
 * tagged so only the client it reached can answer it (edge_inbound_tag).
 */
#include <errno.h>
#include <stdio.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_edit.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

/* ---- core side ------------------------------------------------------------------------ */

/*
 * The tag in our Via branch on a request delivered to a client (RFC 3261 §16.11 leaves
 * the branch to us): a MAC over the flow's token, the Via below ours (branch, sent-by,
 * received, rport: where the response goes on to), the Call-ID and the CSeq number.
 * A client response is relayed to the core only when its top Via carries the tag for
 * exactly those values, so a client can answer only requests sipedge delivered to it,
 * and only towards the hop that sent them. The CSeq method is left out so that a
 * CANCEL gets the branch of its INVITE (§9.2).
 */
int edge_inbound_tag(struct edge *e, const struct flow *f, const struct sip_via *next,
                     const struct sip_msg *m, char tag[FLOW_TOKEN_TAG_LEN + 1], struct slice check)
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
        slice_make(f->token, f->token_len),
        next->branch,
        next->host,
        slice_make(port, (size_t)pn),
        next->received,
        next->rport,
        slice_trim(cid->value),
        slice_make(num, (size_t)sn),
    };
    size_t n = sizeof(parts) / sizeof(parts[0]);
    if (check.p)
        return flow_token_tag_verify(e->keys, FLOW_TOKEN_TAG_INBOUND_BRANCH, parts, n, check);
    return flow_token_tag(e->keys, FLOW_TOKEN_TAG_INBOUND_BRANCH, parts, n, tag);
}

/*
 * The live flow a verified token names, or NULL. A token is ours only when its MAC
 * holds; it names this flow only when it was made in this run (epoch) by this worker
 * and the slot's flow has the generation, transport and remote address the token
 * carries, so a slot reused by another client, or a token from an earlier run, never
 * reaches that client.
 */
static struct flow *flow_of_token(struct edge *e, const struct flow_token_fields *tf)
{
    struct flow *f = flow_table_get(e->flows, tf->slot, tf->gen);
    if (!f || tf->epoch != flow_table_epoch(e->flows) ||
        tf->worker != flow_table_worker(e->flows) || tf->transport != f->transport ||
        tf->sock != f->sock || !netaddr_eq(&tf->remote.sa, &f->remote.sa))
        return NULL;
    return f;
}

enum token_verdict { TOKEN_OURS, TOKEN_FORGED, TOKEN_HANDED };

/*
 * Verifies tok (MAC first). A verified token of another worker of this process hands the
 * message in hand to that worker, which owns the flow (its connection, its table): the
 * caller then does nothing more with it.
 */
static enum token_verdict token_verify(struct edge *e, struct slice tok,
                                       const struct sockaddr *src, struct flow_token_fields *tf)
{
    if (flow_token_decode(e->keys, tok, tf) < 0)
        return TOKEN_FORGED;
    if (tf->worker == flow_table_worker(e->flows) || !e->hooks.on_foreign || !e->rx_buf ||
        !e->hooks.on_foreign(e->hooks.ctx, tf->worker, e->rx_buf, e->rx_len, src))
        return TOKEN_OURS;
    e->st.handed_to_owner++;
    return TOKEN_HANDED;
}

static struct flow *flow_by_token(struct edge *e, struct slice tok, const struct sockaddr *src,
                                  enum token_verdict *verdict)
{
    struct flow_token_fields tf;
    *verdict = token_verify(e, tok, src, &tf);
    if (*verdict != TOKEN_OURS)
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
 * Returns NULL with *verdict TOKEN_FORGED when the MAC fails, TOKEN_HANDED when the
 * token's worker took the message.
 */
static struct flow *flow_for_core_request(struct edge *e, struct slice tok,
                                          const struct sockaddr *src, uint64_t now_ms,
                                          enum token_verdict *verdict)
{
    struct flow_token_fields tf;
    *verdict = token_verify(e, tok, src, &tf);
    if (*verdict != TOKEN_OURS)
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
    edge_flow_event(e, EDGE_FLOW_OPENED, f, "udp-recovered");
    return f;
}

/* Registrar response → client, by the flow token in our Via. */
void relay_core_response(struct edge *e, const struct sip_msg *m, const struct sockaddr *src,
                         uint64_t now_ms)
{
    const struct sip_view *v = &e->view;
    struct sip_via ours = v->via;
    struct slice tok;
    if (!edge_hostport_is(ours.host, ours.port, &e->cfg->core)) {
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
    enum token_verdict verdict;
    struct flow *f = flow_by_token(e, tok, src, &verdict);
    if (verdict == TOKEN_HANDED)
        return;
    if (verdict == TOKEN_FORGED) {
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
        edge_latency_note(e, (uint32_t)now_ms - t0);
    }
    uint32_t granted = 0;
    if (is_reg_2xx) {
        granted = flow_reg_confirm(e, f, m, had_cred, now_ms);
        if (f->is_nat && f->transport == FLOW_UDP && granted > edge_nat_expires(e, f))
            granted = edge_nat_expires(e, f);
    }
    if (is_reg_final) {
        struct rx frx = {.transport = f->transport, .sock = f->sock, .src = &f->remote.sa, .f = f};
        edge_audit_register(e, m, &frx, f, m->status, granted, false);
    }
    if (m->status == 401 || m->status == 407) {
        if (f->transport == FLOW_UDP)
            edge_note_challenge(e, f, m);
        if (is_reg_final)
            flow_reg_refused(f, v);
    }
    if (e->guard && m->status >= 200)
        guard_on_response(e->guard, &f->remote.sa, m->status, had_cred, v->to.uri, now_ms);
    struct tx_dest d = edge_dest_flow(f);
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
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
        plan.expires_cap = edge_nat_expires(e, f);
    /* RFC 3261 §10.2.4: the client looks for its own Contacts in the answer. */
    struct contact_edit ce = {.e = e, .n_edits = &e->st.contacts_restored};
    if (is_reg_final && e->pol.nat_contact_alias) {
        plan.contact_uri = edge_contact_from_alias;
        plan.contact_ctx = &ce;
    }
    sip_edit_copy(&b, m, &plan);
    e->st.relayed_response_to_client++;
    edge_send(e, &d, &b);
}

/* True when the request is addressed to this edge itself (R-URI host is our core address). */
static bool ruri_is_core(const struct edge *e, const struct sip_msg *m)
{
    struct sip_uri u;
    bool is_sip;
    return sip_uri_parse(m->ruri, &u, &is_sip) == 0 && is_sip &&
           edge_hostport_is(u.host, u.port, &e->cfg->core);
}

/* The transport's listeners and Via name (edge_new fills the table, one row per
 * transport, so a new transport is a new row, not a new branch). */
static const struct edge_listeners *listeners_of(const struct edge *e, const struct flow *f)
{
    return f->transport < EDGE_N_TRANSPORTS ? &e->listeners[f->transport] : &e->listeners[0];
}

static const char *via_transport(const struct edge *e, const struct flow *f)
{
    return listeners_of(e, f)->via;
}

const struct config_addr *edge_flow_listener(const struct edge *e, const struct flow *f)
{
    const struct edge_listeners *l = listeners_of(e, f);
    return f->sock < l->n ? &l->addr[f->sock] : &e->cfg->core;
}

/*
 * Request from the core for a client: its top Route is our Path (RFC 3327), or, with
 * no Route naming us, its Request-URI is one of our Contact aliases. Either way the
 * flow token decides the flow it is delivered over.
 */
void relay_core_request(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms)
{
    const struct sip_view *v = &e->view;
    uint32_t mf = v->max_forwards;
    if (v->is_max_forwards_bad) {
        e->st.reply_400++;
        edge_reply(e, rx, m, 400, "Bad Max-Forwards", NULL);
        return;
    }
    const struct sip_hdr *rh = v->route_hdr;
    struct slice route_rest = v->route_rest;
    struct sip_uri ru;
    bool is_sip = false;
    struct slice tok = SLICE_NULL, alias = SLICE_NULL;
    if (rh && sip_uri_parse(v->route.uri, &ru, &is_sip) == 0 && is_sip &&
        edge_hostport_is(ru.host, ru.port, &e->cfg->core)) {
        tok = ru.user;
    } else if (edge_uri_alias_parts(m->ruri, &e->cfg->core, &tok, &alias)) {
        rh = NULL; /* a Route that does not name us stays for the client */
    } else {
        if (m->method_id == SIP_METHOD_OPTIONS && ruri_is_core(e, m)) {
            edge_reply(e, rx, m, 200, "OK", NULL);
            return;
        }
        e->st.reply_404_not_routable++;
        edge_reply(e, rx, m, 404, "Not Found", NULL);
        return;
    }
    enum token_verdict verdict;
    struct flow *f = flow_for_core_request(e, tok, rx->src, now_ms, &verdict);
    if (verdict == TOKEN_HANDED)
        return;
    if (verdict == TOKEN_FORGED) {
        e->st.reply_403_bad_token++;
        edge_reply(e, rx, m, 403, "Forbidden", NULL);
        return;
    }
    if (!f) {
        /* RFC 5626 §5.3: the registrar/proxy may drop that binding or try another flow. */
        e->st.reply_430_flow_failed++;
        edge_reply(e, rx, m, 430, "Flow Failed", NULL);
        return;
    }
    if (mf == 0) {
        e->st.reply_483_too_many_hops++;
        edge_reply(e, rx, m, 483, "Too Many Hops", NULL);
        return;
    }
    char branch[17], tag[FLOW_TOKEN_TAG_LEN + 1];
    sip_edit_branch(m, v, rx->src, e->branch_k0, e->branch_k1, branch);
    if (edge_inbound_tag(e, f, &v->via, m, tag, SLICE_NULL) < 0) {
        e->st.reply_400++;
        edge_reply(e, rx, m, 400, "Bad Request", NULL);
        return;
    }
    struct tx_dest d = edge_dest_flow(f);
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
    if (alias.p) {
        /* The original URI goes back into the Request-URI, decoded in place. */
        const char *ruri_end = m->ruri.p + m->ruri.len;
        sip_build_mem(&b, m->buf, (size_t)(m->ruri.p - m->buf));
        if (contact_alias_decode(&b, alias) == -EBADMSG) {
            edge_commit(e, &d, 0); /* the loan ends before the answer takes another */
            e->st.reply_400++;
            e->st.reply_400_bad_alias++;
            edge_reply(e, rx, m, 400, "Bad Contact Alias", NULL);
            return;
        }
        sip_build_mem(&b, ruri_end, m->start_line_len - (size_t)(ruri_end - m->buf));
    } else {
        sip_build_mem(&b, m->buf, m->start_line_len);
    }
    sip_build_fmt(&b, "Via: SIP/2.0/%s %s;branch=" EDGE_BRANCH_IN "%s%s\r\n", via_transport(e, f),
                  edge_flow_listener(e, f)->text, branch, tag);
    if (!sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS)) {
        sip_build_str(&b, "Max-Forwards: ");
        sip_build_u32(&b, mf - 1);
        sip_build_str(&b, "\r\n");
    }
    struct sip_edit plan = {.pop_route = rh,
                            .pop_route_rest = route_rest,
                            .set_max_forwards = true,
                            .max_forwards = mf - 1};
    sip_edit_copy(&b, m, &plan);
    e->st.inbound_delivered++;
    if (alias.p)
        e->st.inbound_alias_delivered++;
    edge_send(e, &d, &b);
}
