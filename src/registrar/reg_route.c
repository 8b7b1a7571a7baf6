/*
 * reg_route: stateless routing of every request but REGISTER, and of responses
 * (RFC 3261 §16.11, RFC 3327 §5.3, RFC 5626 §5.3).
 *
 * A request goes to the best binding of its AOR through the binding's Path, to a
 * configured peer, or nowhere (403/404/480); the Via we add names the binding in a
 * MAC-protected sb= parameter, so a 430 coming back can remove that binding without
 * any state. A response is forwarded by the Via below ours.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "registrar/registrar_priv.h"
#include "sipedge/flow_token.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_edit.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

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
    return flow_token_tag_verify(r->sb_keys, FLOW_TOKEN_TAG_REGISTRAR_SB, parts, (size_t)n, mac) ==
           0;
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
    struct tx_dest d;
    struct sip_build sb;
    if (!reg_begin(r, &d, (const struct sockaddr *)&f->dst, &sb))
        return;
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
            (void)r->out.commit(r->out.ctx, &d, 0); /* the loan ends before the answer */
            reg_reply(q, 500, "Server Internal Error", NULL);
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
    if (!reg_send(r, &d, &sb)) {
        reg_reply(q, 513, "Message Too Large", NULL);
        return;
    }
    r->stats.routed++;
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
        if (b->expires_at_ms > now_ms && (!best || reg_binding_before(b, best)))
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
    reg_reply(q, 403, "Forbidden Route", NULL);
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
    return reg_authorize(q, uri.user, true);
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
void reg_handle_request(struct req *q)
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
        reg_reply(q, 400, "Bad Max-Forwards", NULL);
        return;
    }

    /* RFC 3261 §16.4: a top Route naming us is removed; what follows decides. */
    const struct sip_hdr *rh = sip_msg_hdr(m, SIP_HDR_ROUTE);
    struct slice next_route = SLICE_NULL;
    if (rh) {
        if (q->v->route_hdr != rh) {
            r->stats.dropped_bad++;
            reg_reply(q, 400, "Bad Route", NULL);
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
    bool has_aor = ruri_ok && reg_aor_make(ruri.user, ruri.host, aor, sizeof(aor)) == 0;

    if (next_route.len == 0 && m->method_id == SIP_METHOD_OPTIONS &&
        (!ruri_ok || ruri.user.len == 0)) {
        r->stats.options_local++;
        reg_reply(q, 200, "OK", "Allow: REGISTER, INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n");
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
            reg_reply(q, 480, "Temporarily Unavailable", NULL);
            return;
        } else if (ruri_ok && m->method_id == SIP_METHOD_OPTIONS &&
                   is_self_hostport(r, ruri.host, ruri.port)) {
            r->stats.options_local++;
            reg_reply(q, 200, "OK",
                      "Allow: REGISTER, INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n");
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
            reg_reply(q, 404, "Not Found", NULL);
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
        reg_reply(q, 483, "Too Many Hops", NULL);
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
void reg_handle_response(struct registrar *r, const struct sip_msg *m, const struct sip_view *v,
                         const struct sockaddr *src)
{
    const struct sip_via *top = &v->via;
    if (!is_self_hostport(r, top->host, top->port) ||
        !slice_case_prefix(top->branch, BRANCH_COOKIE)) {
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
    struct tx_dest d;
    struct sip_build sb;
    if (!reg_begin(r, &d, (const struct sockaddr *)&dst, &sb))
        return;
    sip_build_mem(&sb, m->buf, m->start_line_len);
    sip_edit_copy(&sb, m, &plan);
    if (reg_send(r, &d, &sb))
        r->stats.responses_fwd++;
}
