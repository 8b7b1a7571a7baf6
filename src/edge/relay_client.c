/*
 * relay_client: messages from clients, on their way to the core.
 *
 * A client request is relayed to the registrar (REGISTER, with Path or Contact
 * aliases) or the core proxy, with our Via carrying the flow token; a client response
 * is relayed only when it answers a request the edge delivered over that very flow.
 * Also here: the guard's view of client requests, NAT detection, the proof of return
 * routability carried by digest nonces, and the Contact and Route edit hooks the
 * relays hand to sip_edit.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_edit.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/siphash.h"

/* ---- rewriting helpers ---------------------------------------------------------------- */

/* True when uri has the shape of a Contact alias at our core address (a SIP URI there
 * whose user part has a '.'); sets its token and encoded halves, neither checked. */
bool edge_uri_alias_parts(struct slice uri, const struct config_addr *core, struct slice *tok,
                          struct slice *enc)
{
    struct sip_uri u;
    bool is_sip;
    return sip_uri_parse(uri, &u, &is_sip) == 0 && is_sip &&
           edge_hostport_is(u.host, u.port, core) && contact_alias_split(u.user, tok, enc) == 0;
}

/*
 * When uri is one of our Contact aliases (with a token-sized first half), sets *enc to
 * its encoded original URI. The token's MAC is not checked: restoring only changes what
 * the client is shown, and the registrar holds only aliases we wrote.
 */
static bool contact_is_alias(struct slice uri, const struct config_addr *core, struct slice *enc)
{
    struct slice tok;
    return edge_uri_alias_parts(uri, core, &tok, enc) && flow_token_len_ok(tok.len);
}

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
bool edge_contact_from_alias(void *ctx, struct sip_build *b, const struct sip_nameaddr *c)
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
        if (edge_hostport_is(u.host, u.port, &e->allow_routes[i]))
            return true;
    return false;
}

/* ---- proof of return routability ------------------------------------------------------ */

/* Hash of the nonce parameter of a digest challenge or credentials header value, or 0. */
static uint64_t digest_nonce_hash(const struct edge *e, struct slice v)
{
    for (size_t i = 0; i + 6 < v.len; i++) {
        bool at_start = i == 0 || v.p[i - 1] == ' ' || v.p[i - 1] == ',' || v.p[i - 1] == '\t';
        if (!at_start || (v.p[i] | 0x20) != 'n' ||
            !slice_case_prefix(slice_make(v.p + i, v.len - i), "nonce"))
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
void edge_note_challenge(const struct edge *e, struct flow *f, const struct sip_msg *m)
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
bool edge_guard_stops(struct edge *e, const struct rx *rx, const struct sip_msg *m,
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
    edge_reply(e, rx, m, v.status ? v.status : 503,
               v.status == 403 ? "Forbidden" : "Service Unavailable", extra[0] ? extra : NULL);
    return true;
}

/* Authorization or Proxy-Authorization present (a header count: no scan). */
static bool has_credentials(const struct sip_msg *m)
{
    return m->count[SIP_HDR_AUTHORIZATION] || m->count[SIP_HDR_PROXY_AUTHORIZATION];
}

/* The guard's view of a parsed request: scanner signatures, served domains. */
bool edge_guard_request(struct edge *e, const struct rx *rx, const struct sip_msg *m,
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
    struct guard_verdict v =
        guard_check_request(e->guard, rx->src, m->method, ua ? ua->value : SLICE_NULL, user, domain,
                            has_credentials(m), now_ms);
    return edge_guard_stops(e, rx, m, v);
}

/* ---- public side ---------------------------------------------------------------------- */

static bool uri_is_ours_public(const struct edge *e, const struct sip_uri *u)
{
    for (unsigned i = 0; i < e->cfg->n_listen_udp; i++) {
        if (edge_hostport_is(u->host, u->port, &e->cfg->listen_udp[i]))
            return true;
    }
    for (unsigned i = 0; i < e->cfg->n_listen_ws; i++) {
        if (edge_hostport_is(u->host, u->port, &e->cfg->listen_ws[i]))
            return true;
    }
    for (unsigned t = FLOW_WS; t < EDGE_N_TRANSPORTS; t++) {
        for (unsigned i = 0; i < e->listeners[t].n; i++) {
            if (edge_hostport_is(u->host, u->port, &e->listeners[t].addr[i]))
                return true;
        }
    }
    return false;
}

/* UDP flows are found (or made) by address; connection flows come with the message. */
static struct flow *rx_flow(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms)
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
            edge_reply(e, rx, m, 503, "Service Unavailable", "Retry-After: 30\r\n");
            return NULL;
        }
        if (flow_table_add(e->flows, e->keys, FLOW_UDP, rx->sock, rx->src, now_ms, &f) < 0) {
            if (e->guard)
                guard_flow_remove(e->guard, rx->src);
            e->st.reply_503_flows_full++;
            edge_reply(e, rx, m, 503, "Service Unavailable", "Retry-After: 30\r\n");
            return NULL;
        }
        e->st.flows_created++;
        edge_flow_event(e, EDGE_FLOW_OPENED, f, "udp");
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
void relay_client_request(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms)
{
    const struct sip_view *v = &e->view; /* checked: Via and Max-Forwards parse */
    uint32_t mf = v->max_forwards;
    if (mf == 0) {
        e->st.reply_483_too_many_hops++;
        edge_reply(e, rx, m, 483, "Too Many Hops", NULL);
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
        edge_reg_summarize(m, v, &sum);
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
            if (edge_guard_stops(e, rx, m,
                                 guard_admit_register(e->guard, rx->src, aor, known, cost, now_ms)))
                return;
            if (cost == 2)
                f->answer_paid_until_ms = now_ms + EDGE_CHALLENGE_ANSWER_MS;
        }
    }

    /* A client that uses us as outbound proxy may put our address in a Route. */
    struct sip_edit plan = {.top_via = v->via_hdr,
                            .via = {.via = &v->via,
                                    .src = rx->src,
                                    .is_received_always = true,
                                    .keep_s = e->pol.flow_timer_s},
                            .set_max_forwards = true,
                            .max_forwards = mf - 1,
                            .strip_identity = true,
                            .strip_path = true,
                            .route_ok = route_allowed,
                            .route_ctx = e,
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
    /* ACK gets no answer (RFC 3261 §17.1.1.3): it says nothing about the registrar. */
    const struct sockaddr *up = upstream_dst(e, now_ms, m->method_id != SIP_METHOD_ACK);
    /* RFC 3261 §18.1.1: a request that would come within 200 bytes of the path MTU goes
     * over TCP (policy upstream.udp_max_bytes is that bound). The size is known only once
     * written, so the bound is checked on the input plus the most our edits add (Via and
     * Path with the token twice, the flags); a message a little under the bound may
     * take TCP, none over it takes UDP. The embedded registrar speaks UDP only, on this
     * host: it always gets datagrams. */
    bool is_stream = e->cfg->has_external_registrar &&
                     m->len + e->relay_grows + 2u * f->token_len > e->pol.upstream_udp_max_bytes;
    struct tx_dest d =
        is_stream ? tx_dest_core_stream(EDGE_SOCK_CORE, up) : tx_dest_udp(EDGE_SOCK_CORE, up);
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
    if (is_stream)
        e->st.relayed_core_tcp++;
    sip_build_mem(&b, m->buf, m->start_line_len);
    /* Our Via carries the flow token (responses are routed by it, never by the client's
     * Via host) and flags the response handling needs: ob (add Flow-Timer), au (the
     * request carried credentials). */
    sip_build_str(&b, is_stream ? "Via: SIP/2.0/TCP " : "Via: SIP/2.0/UDP ");
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
    edge_send(e, &d, &b);
}

/* Client response to a request we delivered: pop our Via, on to the next Via. */
void relay_client_response(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms)
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
    struct slice tag =
        ours->branch.len == sizeof(EDGE_BRANCH_IN) - 1 + 16 + FLOW_TOKEN_TAG_LEN
            ? slice_make(ours->branch.p + ours->branch.len - FLOW_TOKEN_TAG_LEN, FLOW_TOKEN_TAG_LEN)
            : SLICE_NULL;
    if (!rf || rf->state != FLOW_LIVE || !tag.p ||
        edge_inbound_tag(e, rf, &next, m, NULL, tag) != 0) {
        e->st.drop_forged_response++;
        return;
    }
    struct sockaddr_storage dst;
    if (sip_via_response_addr(&next, &dst) < 0 ||
        !edge_is_core_peer(e, (const struct sockaddr *)&dst)) {
        e->st.drop_stray_response++;
        return;
    }
    if (m->status == 100) {
        e->st.drop_100_trying++;
        return;
    }
    rf->last_rx_ms = now_ms;
    /* A request the peer sent over TCP (its Via says so) is answered over TCP, on the
     * connection it came on while that is open (RFC 3261 §18.2.2). */
    bool is_stream = next.transport.len == 3 && strncasecmp(next.transport.p, "TCP", 3) == 0;
    struct tx_dest d = is_stream
                           ? tx_dest_core_stream(EDGE_SOCK_CORE, (const struct sockaddr *)&dst)
                           : tx_dest_udp(EDGE_SOCK_CORE, (const struct sockaddr *)&dst);
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
    sip_build_mem(&b, m->buf, m->start_line_len);
    sip_edit_copy(&b, m, &plan);
    e->st.relayed_response_to_core++;
    edge_send(e, &d, &b);
}
