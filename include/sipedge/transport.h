/*
 * transport: the one output contract every transport offers (UDP, WebSocket, TCP and
 * TLS), so a message is written once, straight into the
 * memory it leaves from, and the code that writes it never asks which transport it is.
 *
 *   size_t cap;
 *   struct tx_dest d = tx_dest_conn(ref);       // or tx_dest_udp(sock, addr)
 *   char *buf = out->reserve(out->ctx, &d, &cap);
 *   if (buf) {
 *       size_t len = write_message(buf, cap);
 *       out->commit(out->ctx, &d, len);          // len 0: nothing sent
 *   }
 *
 * reserve lends at least TX_MSG_MAX bytes for one message to d, or returns NULL when d
 * cannot take one now (a connection that is gone, or whose queue is over its bound).
 * The lent memory is the transmit memory itself: the UDP batch slot that sendmmsg will
 * send, or the WebSocket frame buffer behind its LWS_PRE headroom. One reservation is
 * open at a time; it stays valid until the matching commit, which queues its first len
 * bytes and returns 0 or a negative errno. No libuv or libwebsockets types here.
 */
#ifndef SIPEDGE_TRANSPORT_H
#define SIPEDGE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The largest message any transport takes (a UDP datagram's payload). */
#define TX_MSG_MAX 65535

/* Where one outgoing message goes: a connection, or a datagram on a UDP socket. */
struct tx_dest {
    uint64_t conn;               /* connection reference; 0: a datagram */
    const struct sockaddr *addr; /* datagram: the destination */
    uint8_t sock;                /* datagram: the socket id */
};

struct tx_out {
    char *(*reserve)(void *ctx, const struct tx_dest *d, size_t *cap);
    int (*commit)(void *ctx, const struct tx_dest *d, size_t len);
    void *ctx;
};

/*
 * The input side of every connection transport (WebSocket, TCP, TLS): events of one
 * connection, named by the transport's 64-bit id and by the owner's ref.
 */
struct transport_conn_cbs {
    /*
     * A connection is ready for SIP (WebSocket: handshake done; TLS: TLS handshake done;
     * TCP: accepted). transport is an enum flow_transport, listener the index of the
     * listen address in its config list, peer_id the verified client certificate's
     * subject (mutual TLS) or NULL. Return 0 and set *ref (handed back with every later
     * event of this connection), or a negative errno to refuse (-ENOSPC: flow table
     * full); the transport then closes the connection.
     */
    int (*on_open)(void *ctx, uint64_t conn, uint8_t transport, uint8_t listener,
                   const struct sockaddr *remote, const char *peer_id, uint64_t *ref);
    /* One complete SIP message (never a CRLF keepalive). */
    void (*on_message)(void *ctx, uint64_t conn, uint64_t ref, const char *buf, size_t len);
    /* Keepalive traffic (CRLF, pong) that proves the peer is alive. */
    void (*on_alive)(void *ctx, uint64_t conn, uint64_t ref);
    /* The connection is gone (close, reset, timeout). Called once per successful on_open. */
    void (*on_close)(void *ctx, uint64_t conn, uint64_t ref);
};

/* Connection ids of the stream transport (TCP/TLS) have this bit set; WebSocket ids
 * never do, so one tx_out can dispatch on the id alone. */
#define TX_CONN_STREAM (UINT64_C(1) << 63)

/* A message for a core peer (addr) over a stream connection, RFC 3261 §18.1.1: a request
 * too large for a datagram, or an answer to a request the peer sent over TCP. The stream
 * transport reuses a connection to or from that peer, or opens one. */
#define TX_CONN_CORE TX_CONN_STREAM /* generation 0: never a connection's own id */

static inline struct tx_dest tx_dest_core_stream(uint8_t sock, const struct sockaddr *addr)
{
    struct tx_dest d = {.conn = TX_CONN_CORE, .addr = addr, .sock = sock};
    return d;
}

static inline struct tx_dest tx_dest_udp(uint8_t sock, const struct sockaddr *addr)
{
    struct tx_dest d = {.conn = 0, .addr = addr, .sock = sock};
    return d;
}

static inline struct tx_dest tx_dest_conn(uint64_t conn)
{
    struct tx_dest d = {.conn = conn, .addr = NULL, .sock = 0};
    return d;
}

#endif
