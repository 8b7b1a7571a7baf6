/*
 * transport_ws: SIP over WebSocket (RFC 7118) on libwebsockets 4.1.6, foreign libuv loop.
 *
 * Layout: one lws context per worker loop, one lws vhost per listen address (created
 * with CONTEXT_PORT_NO_LISTEN_SERVER, so lws never binds). We bind and listen ourselves
 * (SO_REUSEPORT, numeric address), watch the socket with a uv_poll_t and hand every
 * accepted fd to lws_adopt_socket_vhost. See shared INTEGRATION-NOTES §1 for why: lws'
 * own listen share does not set SO_REUSEPORT, and `iface` is an interface name.
 *
 * Lifetimes: lws owns each connection's per-session data (struct ws_pss). Everything
 * outside an lws callback names a connection by a 64-bit id (generation << 32 | slot);
 * the slot table maps it back to the pss while the connection is established.
 *
 * This file is the adapter between lws and the transport: the connection ids, the lws
 * callback (handshake filter, establishment, reassembly and delivery, writeable, close)
 * and the output contract. Listening, the per-connection timers and shutdown are in
 * ws_server.c, output memory in ws_out.c, per-IP admission in ws_admission.c and the
 * pure Origin/subprotocol/UTF-8 rules in ws_policy.c.
 */
#define _GNU_SOURCE
#include "ws_lws.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "sipedge/log.h"
#include "sipedge/stats_text.h"

/* ---- ids ---------------------------------------------------------------------------- */

static struct ws_pss *ws_lookup(const struct transport_ws *t, uint64_t conn)
{
    return conn_ids_get(&t->ids, conn);
}

static int ws_slot_alloc(struct transport_ws *t, struct ws_pss *pss, uint64_t *conn)
{
    int rc = conn_ids_alloc(&t->ids, pss, &pss->id);
    if (rc < 0)
        return rc;
    *conn = pss->id;
    return 0;
}

static void ws_slot_free(struct transport_ws *t, struct ws_pss *pss)
{
    conn_ids_free(&t->ids, pss->id);
    pss->id = 0;
}

static void ws_peer(struct lws *wsi, union ws_addr *out)
{
    socklen_t sl = sizeof(*out);
    memset(out, 0, sizeof(*out));
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, &out->sa, &sl) < 0)
        out->sa.sa_family = AF_UNSPEC;
}

static void ws_out_free(struct transport_ws *t, struct ws_pss *pss)
{
    ws_outq_free(&t->arena, &pss->out);
    t->st.tx_blocks = t->arena.n_blocks;
}

void ws_rx_free(struct transport_ws *t, struct ws_pss *pss)
{
    t->st.rx_buffered_bytes -= pss->rx_cap;
    free(pss->rx);
    pss->rx = NULL;
    pss->rx_len = pss->rx_cap = 0;
    pss->is_in_msg = false;
}

/* Closes from outside the receive path: the close frame goes out on the next
 * SERVER_WRITEABLE; a backstop timeout kills the socket if that never comes (a peer
 * that stopped reading keeps lws' send buffer full). */
void ws_schedule_close(struct ws_pss *pss, uint16_t code)
{
    if (pss->is_closing)
        return;
    pss->is_closing = true;
    pss->close_code = code;
    ws_out_free(ws_of(pss->wsi), pss); /* the receive buffer may be in on_message's hands:
                                           freed later */
    lws_set_timeout(pss->wsi, PENDING_TIMEOUT_USER_OK, WS_CLOSE_BACKSTOP_S);
    lws_callback_on_writable(pss->wsi);
}

static const char *ws_close_text(uint16_t code)
{
    switch (code) {
    case WS_CLOSE_GOING_AWAY:
        return "going away";
    case WS_CLOSE_BAD_DATA:
        return "not utf-8";
    case WS_CLOSE_POLICY:
        return "policy";
    case WS_CLOSE_TOO_BIG:
        return "too big";
    case WS_CLOSE_INTERNAL:
        return "internal error";
    case WS_CLOSE_TRY_AGAIN:
        return "try again later";
    default:
        return "";
    }
}

/* Queues a copy of buf (the transport's own short messages, and transport_ws_send).
 * Returns 0 or -ENOMEM. */
static int ws_queue(struct transport_ws *t, struct ws_pss *pss, const char *buf, size_t len)
{
    size_t cap;
    char *out = ws_arena_reserve(&t->arena, &cap);
    if (!out)
        return -ENOMEM;
    memcpy(out, buf, len);
    int rc = ws_outq_commit(&t->arena, &pss->out, len);
    t->st.tx_blocks = t->arena.n_blocks;
    t->st.tx_slow_copies = t->arena.n_slow_copies;
    if (rc == 0)
        lws_callback_on_writable(pss->wsi);
    return rc;
}

/* ---- lws callback: adapts lws events to transport calls, no SIP here ----------------- */

static int ws_filter(struct transport_ws *t, struct lws *wsi, struct ws_pss *pss)
{
    char hdr[WS_ORIGIN_HDR_MAX];
    union ws_addr peer;
    char abuf[LOG_ADDR_MAX];
    ws_peer(wsi, &peer);
    if (pss)
        pss->remote = peer;
    const char *who = peer.sa.sa_family == AF_UNSPEC ? "?" : log_fmt_addr(&peer.sa, abuf,
                                                                          sizeof(abuf));

    /* RFC 7118 §4.1: the client MUST offer "sip". lws binds a handshake without any
     * Sec-WebSocket-Protocol to protocols[0] and accepts it, so refuse it here. */
    int n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_PROTOCOL);
    if (n <= 0 || !transport_ws_offers_sip(hdr)) {
        t->st.refused_no_subprotocol++;
        log_debug("ws %s: handshake refused: no \"sip\" subprotocol offered", who);
        return 1;
    }

    n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_ORIGIN);
    if (n <= 0) {
        if (t->pol.ws_require_origin) {
            t->st.refused_no_origin++;
            log_debug("ws %s: handshake refused: no Origin header", who);
            return 1;
        }
    } else if (!transport_ws_origin_allowed(t->origins, t->n_origins, hdr, (size_t)n)) {
        t->st.refused_origin++;
        log_debug("ws %s: handshake refused: Origin %.*s not allowed", who, n, hdr);
        return 1;
    }

    if (t->pol.ws_max_conns_per_ip && peer.sa.sa_family != AF_UNSPEC) {
        union ws_ip_key k;
        ws_ip_key(t, &peer.sa, &k);
        struct ws_ip *e = ws_ip_get(&t->ipt, &k, t->pol.ws_handshakes_per_ip_per_s,
                                    uv_now(t->loop));
        if (!e) {
            t->st.refused_ip_table_full++;
            log_debug("ws %s: handshake refused: per-IP table full", who);
            return 1;
        }
        if (e->n_conns >= t->pol.ws_max_conns_per_ip) {
            t->st.refused_conns_per_ip++;
            log_debug("ws %s: handshake refused: %u connections from this address", who,
                      e->n_conns);
            return 1;
        }
    }
    return 0;
}

static void ws_established(struct transport_ws *t, struct lws *wsi, struct ws_pss *pss)
{
    struct ws_listener *l = ws_listener_of(t, wsi);
    uint64_t conn = 0;
    char abuf[LOG_ADDR_MAX];
    int rc;

    pss->wsi = wsi;
    pss->is_established = true;
    t->st.handshakes_ok++;
    t->st.conns_open++;
    if (pss->remote.sa.sa_family == AF_UNSPEC)
        ws_peer(wsi, &pss->remote);
    if (pss->remote.sa.sa_family != AF_UNSPEC) {
        union ws_ip_key k;
        ws_ip_key(t, &pss->remote.sa, &k);
        struct ws_ip *e = ws_ip_get(&t->ipt, &k, t->pol.ws_handshakes_per_ip_per_s,
                                    uv_now(t->loop));
        if (e) {
            e->n_conns++;
            pss->ip = (uint32_t)(e - t->ipt.ips) + 1;
        }
    }
    if (t->is_closing) {
        ws_schedule_close(pss, WS_CLOSE_GOING_AWAY);
        return;
    }
    rc = ws_slot_alloc(t, pss, &conn);
    if (rc < 0) {
        t->st.refused_conn_table_full++;
        log_warn("ws %s: connection refused: connection table full (%u)",
                 log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)), t->ids.max);
        ws_schedule_close(pss, WS_CLOSE_TRY_AGAIN);
        return;
    }
    rc = t->cbs.on_open(t->ctx, conn, l->transport, l->index, &pss->remote.sa, NULL,
                        &pss->ref);
    if (rc < 0) {
        ws_slot_free(t, pss);
        t->st.refused_by_owner++;
        log_debug("ws %s: connection refused by the edge: %s",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)), strerror(-rc));
        ws_schedule_close(pss, WS_CLOSE_TRY_AGAIN);
        return;
    }
    log_debug("ws %s: connection %#llx open on %s", log_fmt_addr(&pss->remote.sa, abuf,
              sizeof(abuf)), (unsigned long long)conn, l->addr->text);
    pss->open_ms = pss->last_rx_ms = ws_now_ms(t);
}

/* One complete message (RFC 7118 §5: one SIP message per WebSocket message). */
static void ws_deliver(struct transport_ws *t, struct ws_pss *pss, const char *buf, size_t len,
                       bool is_binary)
{
    uint64_t conn = pss->id;
    /* RFC 5626 §4.4.1 CRLF keepalive as RFC 7118 carries it: "\r\n\r\n" is a ping and is
     * answered with "\r\n" at once; a lone "\r\n" is a pong. Neither is a SIP message. */
    if ((len == 4 && !memcmp(buf, "\r\n\r\n", 4)) || (len == 2 && !memcmp(buf, "\r\n", 2))) {
        t->st.keepalive_rx++;
        if (len == 4) {
            if (ws_outq_is_over(&pss->out, 2, t->pol.ws_out_queue_max_bytes)) {
                t->st.close_too_slow++;
                ws_schedule_close(pss, WS_CLOSE_POLICY);
                return;
            }
            if (ws_queue(t, pss, "\r\n", 2) == 0)
                t->st.keepalive_tx++;
        }
        t->cbs.on_alive(t->ctx, conn, pss->ref);
        return;
    }
    /* RFC 6455 §8.1: a text message that is not UTF-8 fails the connection (1007). */
    if (!is_binary && !transport_ws_is_utf8((const unsigned char *)buf, len)) {
        char abuf[LOG_ADDR_MAX];
        t->st.close_bad_utf8++;
        log_debug("ws %s: text message is not UTF-8: closing 1007",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)));
        ws_schedule_close(pss, WS_CLOSE_BAD_DATA);
        return;
    }
    pss->has_message = true;
    t->st.rx_messages++;
    t->st.rx_bytes += len;
    t->cbs.on_message(t->ctx, conn, pss->ref, buf, len);
}

static void ws_seen(const struct transport_ws *t, struct ws_pss *pss)
{
    pss->last_rx_ms = ws_now_ms(t);
    pss->is_ping_out = false;
}

static int ws_receive(struct transport_ws *t, struct lws *wsi, struct ws_pss *pss,
                      const char *in, size_t len)
{
    if (!pss->id || pss->is_closing)
        return 0;
    /* Client traffic (SIP or RFC 5626 CRLF keepalives) proves the connection as well as a
     * pong would: only connections that are really idle get pinged, and a pong delayed by
     * load does not kill a client that keeps talking. */
    ws_seen(t, pss);
    bool is_final = lws_is_final_fragment(wsi);
    size_t remaining = lws_remaining_packet_payload(wsi);
    if (!pss->is_in_msg) {
        pss->is_in_msg = true;
        pss->msg_ms = pss->last_rx_ms;
        pss->rx_len = 0;
        pss->is_rx_binary = lws_frame_is_binary(wsi);
    }
    /* Cap before buffering: what we hold, this chunk and the rest of this frame as the
     * frame header announced it. lws 4.1.6 has no message limit of its own. The
     * announced size only refuses early; the buffer grows with what really arrived, or a
     * peer announcing 64 KiB frames and sending a byte of each would pin 64 KiB. */
    uint64_t total = (uint64_t)pss->rx_len + len + remaining;
    if (total > t->pol.ws_max_message_bytes) {
        char abuf[LOG_ADDR_MAX];
        t->st.close_too_big++;
        log_debug("ws %s: message of at least %llu bytes over the %u cap: closing 1009",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)),
                  (unsigned long long)total, t->pol.ws_max_message_bytes);
        /* The rest of the message is read and discarded, never buffered. */
        ws_rx_free(t, pss);
        ws_schedule_close(pss, WS_CLOSE_TOO_BIG);
        return 0;
    }
    if (is_final && pss->rx_len == 0) {
        /* The whole message in one chunk: no copy. */
        pss->is_in_msg = false;
        ws_deliver(t, pss, in, len, pss->is_rx_binary);
        return 0;
    }
    uint64_t need = (uint64_t)pss->rx_len + len;
    if (need > pss->rx_cap) {
        /* Geometric, from one receive chunk, capped at the message limit (need is
         * below it: total was checked above). */
        uint64_t cap = pss->rx_cap ? (uint64_t)pss->rx_cap * 2 : WS_RX_CHUNK;
        if (cap < need)
            cap = need;
        if (cap > t->pol.ws_max_message_bytes)
            cap = t->pol.ws_max_message_bytes;
        char *nb = realloc(pss->rx, (size_t)cap);
        if (!nb) {
            t->st.close_no_memory++;
            ws_rx_free(t, pss);
            ws_schedule_close(pss, WS_CLOSE_INTERNAL);
            return 0;
        }
        t->st.rx_buffered_bytes += cap - pss->rx_cap;
        if (t->st.rx_buffered_bytes > t->st.rx_buffered_max)
            t->st.rx_buffered_max = t->st.rx_buffered_bytes;
        pss->rx = nb;
        pss->rx_cap = (uint32_t)cap;
    }
    memcpy(pss->rx + pss->rx_len, in, len);
    pss->rx_len += (uint32_t)len;
    if (is_final) {
        ws_deliver(t, pss, pss->rx, pss->rx_len, pss->is_rx_binary);
        /* Idle connections hold no receive buffer (memory per connection matters). */
        ws_rx_free(t, pss);
    }
    return 0;
}

/*
 * Our side of the closing handshake (RFC 6455 §5.5.1, §7.1.2): send the close frame,
 * then discard input until the peer's close frame arrives (PEER_INITIATED_CLOSE ends
 * the connection) or the backstop timeout set in ws_schedule_close fires.
 *
 * The frame is written by hand because lws 4.1.6 with the libuv event lib kills a
 * connection closed by returning -1 from SERVER_WRITEABLE before the close frame that
 * lws_close_reason queued goes out (the peer sees 1006). Closing at once also makes the
 * kernel reset a connection whose peer is still sending (an oversized message), and the
 * peer then loses the close frame as well. Opcode 4 is lws' internal LWS_WRITE_CLOSE,
 * left out of the public enum in 4.1.6 ("handled by lws_close_reason").
 */
#define WS_LWS_WRITE_CLOSE ((enum lws_write_protocol)4)

static void ws_send_close_frame(struct lws *wsi, struct ws_pss *pss)
{
    unsigned char frame[LWS_PRE + 2 + 32];
    const char *txt = ws_close_text(pss->close_code);
    size_t n = strlen(txt);
    frame[LWS_PRE] = (unsigned char)(pss->close_code >> 8);
    frame[LWS_PRE + 1] = (unsigned char)(pss->close_code & 0xff);
    memcpy(frame + LWS_PRE + 2, txt, n);
    lws_write(wsi, frame + LWS_PRE, 2 + n, WS_LWS_WRITE_CLOSE);
    pss->is_close_sent = true;
}

static int ws_lws_write(void *ctx, unsigned char *buf, size_t len, bool is_binary)
{
    return lws_write(ctx, buf, len, is_binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
}

static bool ws_lws_is_choked(void *ctx)
{
    return lws_send_pipe_choked(ctx) != 0;
}

static int ws_writeable(struct transport_ws *t, struct lws *wsi, struct ws_pss *pss)
{
    if (pss->is_closing) {
        if (!pss->is_close_sent)
            ws_send_close_frame(wsi, pss);
        return 0;
    }
    if (pss->is_ping_due) {
        unsigned char ping[LWS_PRE + 1];
        pss->is_ping_due = false;
        ping[LWS_PRE] = 'k';
        if (lws_write(wsi, ping + LWS_PRE, 1, LWS_WRITE_PING) < 1) {
            t->st.tx_errors++;
            return -1;
        }
        t->st.pings_tx++;
        if (lws_send_pipe_choked(wsi)) {
            if (pss->out.head) {
                ws_outq_evacuate(&t->arena, &pss->out); /* see ws_out.c: slow peers */
                t->st.tx_slow_copies = t->arena.n_slow_copies;
                lws_callback_on_writable(wsi);
            }
            return 0;
        }
    }
    /* Several messages per wakeup while the socket takes them (bounded). A write that
     * takes less than the whole frame is an error: lws itself keeps what the kernel did
     * not take and reports the full length, so less means the connection failed. */
    const struct ws_writer wr = {.write = ws_lws_write, .is_choked = ws_lws_is_choked, .ctx = wsi};
    int rc = ws_outq_drain(&t->arena, &pss->out, 16, &wr, &t->st.tx_messages, &t->st.tx_bytes);
    t->st.tx_blocks = t->arena.n_blocks;
    t->st.tx_slow_copies = t->arena.n_slow_copies;
    if (rc < 0) {
        t->st.tx_errors++;
        return -1;
    }
    if (pss->out.head)
        lws_callback_on_writable(wsi);
    return 0;
}

static void ws_closed(struct transport_ws *t, struct ws_pss *pss)
{
    if (pss->id) {
        uint64_t conn = pss->id;
        if (pss->is_peer_closed)
            t->st.close_by_peer++;
        else if (!pss->is_closing)
            t->st.close_other++; /* reset, EOF, ping timeout, handshake-less kill */
        ws_slot_free(t, pss);
        t->cbs.on_close(t->ctx, conn, pss->ref);
    }
    if (pss->ip) {
        t->ipt.ips[pss->ip - 1].n_conns--;
        pss->ip = 0;
    }
    if (pss->is_established) {
        pss->is_established = false;
        t->st.conns_open--;
    }
    ws_out_free(t, pss);
    ws_rx_free(t, pss);
    if (t->is_closing && t->ids.n_used == 0 && !t->is_lws_destroyed)
        ws_finish_soon(t);
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    struct ws_pss *pss = user;
    struct transport_ws *t;

    switch (reason) {
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* user is the vhost's SSL_CTX. Without RELEASE_BUFFERS OpenSSL keeps its read and
         * write buffers (~34 KiB) on every connection that ever carried data; with it an
         * idle wss client costs little more than its session. */
        if (user)
            SSL_CTX_set_mode((SSL_CTX *)user, SSL_MODE_RELEASE_BUFFERS);
        if (user && in) {
            /* Kept for certificate reloads (transport_ws_reload_cert). */
            struct ws_listener *l = lws_get_vhost_user((struct lws_vhost *)in);
            if (l)
                l->ssl_ctx = user;
        }
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return ws_filter(ws_of(wsi), wsi, pss);
    case LWS_CALLBACK_ESTABLISHED:
        if (pss)
            ws_established(ws_of(wsi), wsi, pss);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!pss)
            return 0;
        return ws_receive(ws_of(wsi), wsi, pss, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        /* The answer to our Ping (ws_tick_conn), or an unsolicited one (RFC 6455 §5.5.3
         * allows it as a heartbeat): either way the peer is alive. */
        t = ws_of(wsi);
        if (pss && pss->id && !pss->is_closing) {
            t->st.pongs_rx++;
            ws_seen(t, pss);
            t->cbs.on_alive(t->ctx, pss->id, pss->ref);
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!pss)
            return 0;
        return ws_writeable(ws_of(wsi), wsi, pss);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!pss)
            return 0;
        if (pss->is_close_sent)
            return -1; /* the peer answered our close: the handshake is complete */
        pss->is_peer_closed = true;
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (pss)
            ws_closed(ws_of(wsi), pss);
        return 0;
    case LWS_CALLBACK_HTTP:
        /* A plain HTTP request without Upgrade: this endpoint serves SIP only. */
        t = ws_of(wsi);
        t->st.refused_http++;
        return -1;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

const struct lws_protocols ws_protocols[] = {
    /* RFC 7118 §4.1: the registered subprotocol name is "sip". */
    {"sip", on_lws, sizeof(struct ws_pss), WS_RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* The connection d names when it can take a message now, else NULL (counted). */
static struct ws_pss *ws_tx_conn(struct transport_ws *t, const struct tx_dest *d)
{
    struct ws_pss *pss = ws_lookup(t, d->conn);
    if (!pss || pss->is_closing) {
        t->st.tx_no_conn++;
        return NULL;
    }
    return pss;
}

char *transport_ws_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    struct transport_ws *t = ctx;
    if (!ws_tx_conn(t, d))
        return NULL;
    char *buf = ws_arena_reserve(&t->arena, cap);
    t->st.tx_blocks = t->arena.n_blocks;
    if (!buf)
        t->st.tx_no_memory++;
    return buf;
}

int transport_ws_tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    struct transport_ws *t = ctx;
    struct ws_pss *pss = ws_tx_conn(t, d);
    if (!pss) {
        ws_arena_cancel(&t->arena);
        return -ENOENT;
    }
    if (len == 0 || len > TX_MSG_MAX) {
        ws_arena_cancel(&t->arena);
        return len ? -EMSGSIZE : 0;
    }
    if (ws_outq_is_over(&pss->out, len, t->pol.ws_out_queue_max_bytes)) {
        char abuf[LOG_ADDR_MAX];
        ws_arena_cancel(&t->arena);
        t->st.close_too_slow++;
        log_info("ws %s: output queue over %u bytes: closing as too slow",
                 log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)),
                 t->pol.ws_out_queue_max_bytes);
        ws_schedule_close(pss, WS_CLOSE_POLICY);
        return -ENOBUFS;
    }
    int rc = ws_outq_commit(&t->arena, &pss->out, len);
    t->st.tx_slow_copies = t->arena.n_slow_copies;
    if (rc < 0) {
        t->st.tx_no_memory++;
        return rc;
    }
    lws_callback_on_writable(pss->wsi);
    return 0;
}

int transport_ws_send(struct transport_ws *t, uint64_t conn, const char *buf, size_t len)
{
    struct tx_dest d = tx_dest_conn(conn);
    size_t cap;
    char *out = transport_ws_tx_reserve(t, &d, &cap);
    if (!out) {
        /* Gone (counted in tx_no_conn by reserve) or out of memory (tx_no_memory). */
        struct ws_pss *pss = ws_lookup(t, conn);
        return pss && !pss->is_closing ? -ENOMEM : -ENOENT;
    }
    if (len > cap) {
        ws_arena_cancel(&t->arena);
        return -EMSGSIZE;
    }
    memcpy(out, buf, len);
    return transport_ws_tx_commit(t, &d, len);
}

void transport_ws_close_conn(struct transport_ws *t, uint64_t conn, uint16_t code)
{
    struct ws_pss *pss = ws_lookup(t, conn);
    if (!pss || pss->is_closing)
        return;
    t->st.close_by_owner++;
    ws_schedule_close(pss, code);
}

const struct transport_ws_stats *transport_ws_stats(const struct transport_ws *t)
{
    return &t->st;
}

void transport_ws_stats_format_sum(const struct transport_ws *const *ts, unsigned n_ts, char *buf,
                                   size_t cap)
{
#define WS_STATS_NAME(name) #name,
    static const char *const names[] = {TRANSPORT_WS_STATS(WS_STATS_NAME)};
#undef WS_STATS_NAME
    const uint64_t *srcs[64]; /* a process runs at most 64 workers */
    unsigned n = n_ts < 64 ? n_ts : 64;
    for (unsigned i = 0; i < n; i++)
        srcs[i] = (const uint64_t *)&ts[i]->st;
    _Static_assert(sizeof(struct transport_ws_stats) ==
                       sizeof(names) / sizeof(names[0]) * sizeof(uint64_t),
                   "ws counters are uint64_t fields named by TRANSPORT_WS_STATS");
    stats_text_sum(buf, cap, "ws_", names, sizeof(names) / sizeof(names[0]), srcs, n);
}

void transport_ws_stats_format(const struct transport_ws *t, char *buf, size_t cap)
{
    transport_ws_stats_format_sum(&t, 1, buf, cap);
}

uint32_t transport_ws_n_conns(const struct transport_ws *t)
{
    return t->ids.n_used;
}
