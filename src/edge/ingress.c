/*
 * ingress: where every message enters the edge, and the output helpers every path uses.
 *
 * The public entry points (edge_rx_public for UDP, edge_flow_open / edge_rx_flow /
 * edge_flow_alive / edge_flow_closed for connection flows) run keepalives, STUN, the
 * guard's admission and the parser, then hand a checked message to the client relay.
 * edge_rx_core admits datagrams from core peers only and hands them to the core relay.
 * The output helpers (send to a flow or back to a sender, stateless replies, finishing
 * a built message) are the one place the edge writes through its tx_out.
 */
#include "sipedge/edge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_msg.h"
#include "sipedge/sip_reply.h"
#include "sipedge/stun.h"

/* ---- small helpers ------------------------------------------------------------------ */

/* True when host:port names the config address a (numeric compare). */
bool edge_hostport_is(struct slice host, uint16_t port, const struct config_addr *a)
{
    struct sockaddr_storage x;
    if (netaddr_from_host(host, port, 5060, &x) < 0)
        return false;
    return netaddr_eq((const struct sockaddr *)&x, (const struct sockaddr *)&a->ss);
}

bool edge_is_core_peer(const struct edge *e, const struct sockaddr *src)
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

/* ---- output --------------------------------------------------------------------------- */

bool edge_begin(struct edge *e, const struct tx_dest *d, struct sip_build *b)
{
    size_t cap;
    char *buf = e->out.reserve(e->out.ctx, d, &cap);
    if (!buf) {
        e->st.conn_send_failed++; /* a connection gone or over its queue bound */
        return false;
    }
    sip_build_init(b, buf, cap);
    return true;
}

void edge_commit(struct edge *e, const struct tx_dest *d, size_t len)
{
    if (e->out.commit(e->out.ctx, d, len) < 0)
        e->st.conn_send_failed++;
}

void edge_send(struct edge *e, const struct tx_dest *d, struct sip_build *b)
{
    size_t len;
    if (sip_build_finish(b, &len) < 0) {
        e->st.tx_overflow++;
        len = 0;
    }
    edge_commit(e, d, len);
}

/* ---- stateless replies ---------------------------------------------------------------- */

void edge_reply_ex(struct edge *e, const struct rx *rx, const struct sip_msg *req, int status,
                   const char *reason, const char *extra, bool is_from_cache, uint32_t expires_s)
{
    if (req->is_request && req->method_id == SIP_METHOD_ACK)
        return; /* ACK is never answered (RFC 3261 §17.2.3) */
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    netaddr_ip(rx->src, ip, sizeof(ip), &port);
    struct sip_reply_opts o = {.received = ip, .rport = port, .to_tag = NULL, .extra = extra};
    struct tx_dest d = edge_dest_rx(rx);
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
    int n = sip_reply_build(req, status, reason, &o, b.buf, b.cap);
    edge_commit(e, &d, n > 0 ? (size_t)n : 0);
    if (n <= 0)
        return;
    if (req->method_id == SIP_METHOD_REGISTER && rx->transport)
        edge_audit_register(e, req, rx, rx->f, (uint16_t)status, expires_s, is_from_cache);
}

void edge_reply(struct edge *e, const struct rx *rx, const struct sip_msg *req, int status,
                const char *reason, const char *extra)
{
    edge_reply_ex(e, rx, req, status, reason, extra, false, 0);
}

/* ---- public side ---------------------------------------------------------------------- */

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
        struct tx_dest d = edge_dest_rx(rx);
        struct sip_build b;
        if (!edge_begin(e, &d, &b))
            return;
        int n = stun_binding_response(buf, len, rx->src, b.buf, b.cap);
        edge_commit(e, &d, n > 0 ? (size_t)n : 0);
        if (n < 0) {
            e->st.drop_not_sip++;
            return;
        }
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
            struct tx_dest d = edge_dest_rx(rx);
            struct sip_build b;
            if (edge_begin(e, &d, &b)) {
                sip_build_str(&b, "\r\n");
                edge_send(e, &d, &b);
            }
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
    if ((rx->transport == FLOW_WS || rx->transport == FLOW_WSS) &&
        lim.max_msg_bytes < e->pol.ws_max_message_bytes)
        lim.max_msg_bytes = e->pol.ws_max_message_bytes;
    else if ((rx->transport == FLOW_TCP || rx->transport == FLOW_TLS) &&
             lim.max_msg_bytes < e->pol.stream_max_message_bytes)
        lim.max_msg_bytes = e->pol.stream_max_message_bytes;
    int rc = sip_msg_parse(&m, buf, len, e->hdrs, &lim, &err);
    if (rc < 0 && e->guard)
        guard_strike_malformed(e->guard, rx->src, now_ms);
    if (admit.action == GUARD_REJECT) {
        edge_guard_stops(e, rx, rc == 0 && m.is_request ? &m : NULL, admit);
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
            edge_reply(e, rx, &m, 513, "Message Too Large", NULL);
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
            edge_reply(e, rx, &m, err.status, err.reason ? err.reason : "Bad Request", NULL);
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
        edge_reply(e, rx, &m, err.status ? err.status : 400,
                   err.reason ? err.reason : "Bad Request", NULL);
        if (e->guard)
            guard_strike_malformed(e->guard, rx->src, now_ms);
        return;
    }
    if (edge_guard_request(e, rx, &m, now_ms))
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
    if ((uint8_t)(ref >> 56) != flow_table_worker(e->flows))
        return NULL;
    return flow_table_get(e->flows, (uint32_t)(ref >> 32) & 0xffffffu, (uint32_t)ref);
}

int edge_flow_open(struct edge *e, uint8_t transport, uint8_t listener,
                   const struct sockaddr *remote, const char *peer_id, uint64_t conn,
                   uint64_t now_ms, uint64_t *ref)
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
    char why[320];
    if (peer_id)
        snprintf(why, sizeof(why), "%s cert=%s", flow_transport_name(transport), peer_id);
    edge_flow_event(e, EDGE_FLOW_OPENED, f, peer_id ? why : flow_transport_name(transport));
    *ref = edge_flow_ref_of(e, f);
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
        edge_flow_die(e, f, now_ms, "connection closed");
}

/* ---- core side ------------------------------------------------------------------------ */

void edge_rx_core(struct edge *e, const char *buf, size_t len, const struct sockaddr *src,
                  uint64_t now_ms)
{
    e->st.rx_core++;
    if (!edge_is_core_peer(e, src)) {
        e->st.drop_non_core_peer++;
        return;
    }
    if (len == 0 || buf[0] == '\r' || buf[0] == '\n')
        return;
    struct rx rx = {.transport = 0, .sock = EDGE_SOCK_CORE, .src = src, .f = NULL};
    e->view.via_hdr = NULL;
    e->rx_buf = buf;
    e->rx_len = len;
    struct sip_msg m;
    struct sip_err err = {0, NULL};
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = EDGE_MAX_HDRS};
    if (sip_msg_parse(&m, buf, len, e->hdrs, &lim, &err) < 0) {
        e->st.drop_malformed++;
        if (err.status >= 400 && m.is_request) {
            e->st.reply_400++;
            edge_reply(e, &rx, &m, err.status, err.reason, NULL);
        }
        return;
    }
    if (sip_view_fill(&m, &e->view) < 0) {
        e->view.via_hdr = NULL;
        if (m.is_request) {
            e->st.reply_400++;
            edge_reply(e, &rx, &m, 400, "Bad Via", NULL);
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
