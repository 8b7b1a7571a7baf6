/*
 * stream_io: one connection's life after admission: the TLS handshake, reads into the
 * transport's scratch buffer, framing (stream_frame.c) and delivery to the owner, CRLF
 * keepalives, writes with the output queue, and the close.
 *
 * Two I/O modes on the same nonblocking fd: plain (recv, send with MSG_NOSIGNAL) and
 * TLS (OpenSSL on the fd itself, no memory BIOs: SSL_ERROR_WANT_READ/WANT_WRITE decide
 * which poll events to wait for). With SSL_MODE_RELEASE_BUFFERS an idle TLS connection
 * holds no record buffers, and an idle connection of either kind holds no rx or out
 * buffer, only struct stream_conn.
 *
 * Reentrancy: on_message may commit on the same connection or close it. A close never
 * frees anything at once: it marks the connection and starts uv_close, and memory and
 * on_close go in the close callback, so a read loop that is still running over the
 * connection's buffer stays valid; every loop checks is_closing after each callback.
 */
#define _GNU_SOURCE
#include "stream_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "sipedge/log.h"
#include "sipedge/tls_server.h"

static void on_conn_io(uv_poll_t *h, int status, int events);

static void conn_poll_update(struct stream_conn *c)
{
    if (c->is_gone)
        return;
    int ev;
    if (c->is_connecting)
        ev = UV_WRITABLE;
    else if (!c->is_handshake_done)
        ev = c->is_read_wants_write ? UV_WRITABLE : UV_READABLE;
    else if (c->is_lingering && !c->is_wr_shut)
        ev = UV_WRITABLE | (c->is_write_wants_read ? UV_READABLE : 0);
    else if (c->is_lingering)
        ev = UV_READABLE;
    else
        ev = UV_READABLE | (c->out_len || c->is_read_wants_write ? UV_WRITABLE : 0);
    if (ev == c->events)
        return;
    c->events = (uint8_t)ev;
    uv_poll_start(&c->poll, ev, on_conn_io);
}

/* ---- buffers ------------------------------------------------------------------------ */

static void rx_free(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    t->st.rx_buffered_bytes -= c->rx_cap;
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = c->rx_need = c->rx_scanned = 0;
}

/* Room for need bytes in rx. Returns 0 or -ENOMEM. */
static int rx_reserve(struct stream_conn *c, size_t need)
{
    struct transport_stream *t = c->t;
    if (need <= c->rx_cap)
        return 0;
    size_t cap = c->rx_cap ? (size_t)c->rx_cap * 2 : STREAM_RX_MIN;
    while (cap < need)
        cap *= 2;
    size_t max = (size_t)t->pol.stream_max_message_bytes + 1;
    if (cap > max)
        cap = max > need ? max : need;
    char *p = realloc(c->rx, cap);
    if (!p)
        return -ENOMEM;
    t->st.rx_buffered_bytes += cap - c->rx_cap;
    if (t->st.rx_buffered_bytes > t->st.rx_buffered_max)
        t->st.rx_buffered_max = t->st.rx_buffered_bytes;
    c->rx = p;
    c->rx_cap = (uint32_t)cap;
    return 0;
}

static void out_free(struct stream_conn *c)
{
    c->t->st.tx_queued_bytes -= c->out_len;
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = c->out_cap = 0;
}

/* Appends to the queue. The bytes already queued may move (compaction, realloc):
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets a TLS write be retried from the new place. */
static int out_append(struct stream_conn *c, const char *buf, size_t len)
{
    size_t need = (size_t)c->out_len + len;
    if ((size_t)c->out_off + need > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len);
            c->out_off = 0;
        }
        if (need > c->out_cap) {
            size_t cap = c->out_cap ? (size_t)c->out_cap * 2 : 4096;
            while (cap < need)
                cap *= 2;
            char *p = realloc(c->out, cap);
            if (!p)
                return -ENOMEM;
            c->out = p;
            c->out_cap = (uint32_t)cap;
        }
    }
    memcpy(c->out + c->out_off + c->out_len, buf, len);
    c->out_len += (uint32_t)len;
    c->t->st.tx_queued_bytes += len;
    return 0;
}

/* ---- socket or TLS ------------------------------------------------------------------ */

/* Returns bytes read, 0 at EOF, -EAGAIN, -EPROTO (TLS error) or another negative errno. */
static ssize_t conn_read(struct stream_conn *c, char *buf, size_t cap)
{
    if (c->is_tls) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, (int)cap);
        if (r > 0) {
            c->is_read_wants_write = false;
            return r;
        }
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_READ:
            c->is_read_wants_write = false;
            return -EAGAIN;
        case SSL_ERROR_WANT_WRITE:
            c->is_read_wants_write = true;
            return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
            return 0;
        case SSL_ERROR_SYSCALL:
            return errno ? -errno : -ECONNRESET;
        default:
            return -EPROTO;
        }
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

/* Returns bytes written (> 0), -EAGAIN or a negative errno. */
static ssize_t conn_write(struct stream_conn *c, const char *buf, size_t len)
{
    if (c->is_tls) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, buf, (int)len);
        if (r > 0) {
            c->is_write_wants_read = false;
            return r;
        }
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_WRITE:
            c->is_write_wants_read = false;
            return -EAGAIN;
        case SSL_ERROR_WANT_READ:
            c->is_write_wants_read = true;
            return -EAGAIN;
        default:
            return -EPIPE;
        }
    }
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

/* ---- close -------------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct stream_conn *c = container_of((uv_poll_t *)h, struct stream_conn, poll);
    struct transport_stream *t = c->t;
    if (c->is_open)
        t->cbs.on_close(t->ctx, c->id, c->ref);
    rx_free(c);
    out_free(c);
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
    free(c);
    stream_handle_closed(t);
}

static void conn_shut_write(struct stream_conn *c)
{
    if (c->is_tls)
        SSL_shutdown(c->ssl); /* close_notify; the peer's answer is not waited for */
    shutdown(c->fd, SHUT_WR);
    c->is_wr_shut = true;
}

/* Writes what is queued. Returns 0, or -EPIPE when the write failed and c is closed. */
static int conn_flush(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    while (c->out_len) {
        ssize_t n = conn_write(c, c->out + c->out_off, c->out_len);
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            t->st.tx_errors++;
            stream_conn_close(c, &t->st.close_reset, false);
            return -EPIPE;
        }
        c->out_off += (uint32_t)n;
        c->out_len -= (uint32_t)n;
        t->st.tx_queued_bytes -= (uint64_t)n;
    }
    if (!c->out_len && c->out)
        out_free(c);
    if (c->is_lingering && !c->out_len && !c->is_wr_shut)
        conn_shut_write(c);
    return 0;
}

void stream_conn_close(struct stream_conn *c, uint64_t *counter, bool is_linger)
{
    struct transport_stream *t = c->t;
    if (c->is_gone || (c->is_closing && is_linger))
        return;
    if (counter)
        (*counter)++;
    c->is_closing = true;
    if (is_linger && c->is_handshake_done) {
        c->is_lingering = true;
        c->close_ms = stream_now_ms(t);
        if (conn_flush(c) < 0)
            return;
        conn_poll_update(c);
        return;
    }
    c->is_gone = true;
    stream_conn_release(c);
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
}

/* ---- output ------------------------------------------------------------------------- */

int stream_conn_send(struct stream_conn *c, const char *buf, size_t len)
{
    struct transport_stream *t = c->t;
    size_t taken = 0;
    if (c->is_gone)
        return -EPIPE;
    if (!c->out_len && c->is_handshake_done) {
        while (taken < len) {
            ssize_t n = conn_write(c, buf + taken, len - taken);
            if (n == -EAGAIN)
                break;
            if (n < 0) {
                t->st.tx_errors++;
                stream_conn_close(c, &t->st.close_reset, false);
                return -EPIPE;
            }
            taken += (size_t)n;
        }
    }
    if (taken == len)
        return 0;
    size_t rest = len - taken;
    if ((size_t)c->out_len + rest > t->pol.stream_out_queue_max_bytes) {
        char abuf[LOG_ADDR_MAX];
        log_debug("stream %s: output queue over %u bytes: closing as too slow",
                  log_fmt_addr(&c->remote.sa, abuf, sizeof(abuf)),
                  t->pol.stream_out_queue_max_bytes);
        stream_conn_close(c, &t->st.close_too_slow, false);
        return -ENOBUFS;
    }
    /* What a TLS write took in part is in OpenSSL's record now; the retry from the
     * queue starts with exactly the bytes it did not report as written. */
    if (out_append(c, buf + taken, rest) < 0) {
        t->st.tx_no_memory++;
        stream_conn_close(c, &t->st.close_no_memory, false);
        return -ENOMEM;
    }
    t->st.tx_queued++;
    conn_poll_update(c);
    return 0;
}

/* ---- input -------------------------------------------------------------------------- */

static void conn_frame_error(struct stream_conn *c, const struct stream_frame_res *r)
{
    struct transport_stream *t = c->t;
    char abuf[LOG_ADDR_MAX];
    const char *reply, *why;
    uint64_t *counter;
    switch (r->kind) {
    case STREAM_FRAME_ERR_NO_CL:
        reply = STREAM_REPLY_400_NO_CL;
        why = "no Content-Length";
        counter = &t->st.close_no_content_length;
        break;
    case STREAM_FRAME_ERR_BAD_CL:
        reply = STREAM_REPLY_400_BAD_CL;
        why = "bad Content-Length";
        counter = &t->st.close_bad_content_length;
        break;
    default:
        reply = STREAM_REPLY_513;
        why = "message too large";
        counter = &t->st.close_too_big;
        break;
    }
    log_debug("stream %s: %s: closing", log_fmt_addr(&c->remote.sa, abuf, sizeof(abuf)), why);
    /* Only a request gets an answer: a broken response has nobody to answer to. */
    if (r->is_request && stream_conn_send(c, reply, strlen(reply)) < 0)
        return;
    stream_conn_close(c, counter, true);
}

/*
 * Frames and delivers what has arrived. data/n: the bytes of this read (in the scratch
 * buffer). With nothing buffered before, messages are delivered straight from the
 * scratch and only an incomplete tail is copied; else the bytes are appended to rx.
 */
static void conn_process(struct stream_conn *c, char *data, size_t n)
{
    struct transport_stream *t = c->t;
    if (c->n_crlf) {
        /* The read went to STREAM_RX_PAD bytes into the scratch: room for these. */
        data -= c->n_crlf;
        memcpy(data, "\r\n\r", c->n_crlf);
        n += c->n_crlf;
        c->n_crlf = 0;
    }
    const char *buf = data;
    size_t len = n, off = 0;
    bool is_scratch = c->rx_len == 0;
    size_t max = t->pol.stream_max_message_bytes;
    struct stream_frame_res r = {0};

    if (!is_scratch) {
        if (rx_reserve(c, (size_t)c->rx_len + n) < 0) {
            stream_conn_close(c, &t->st.close_no_memory, false);
            return;
        }
        memcpy(c->rx + c->rx_len, data, n);
        c->rx_len += (uint32_t)n;
        if (c->rx_need && c->rx_len < c->rx_need)
            return;
        buf = c->rx;
        len = c->rx_len;
    }
    while (off < len && !c->is_closing) {
        size_t scanned = (!is_scratch && off == 0) ? c->rx_scanned : 0;
        switch (stream_frame(buf + off, len - off, max, scanned, &r)) {
        case STREAM_FRAME_NEED:
            goto tail;
        case STREAM_FRAME_PING:
            /* RFC 5626 §4.4.1: answer a CRLFCRLF ping with a CRLF pong at once. */
            t->st.keepalive_rx++;
            if (!c->is_core)
                t->cbs.on_alive(t->ctx, c->id, c->ref);
            if (!c->is_closing && stream_conn_send(c, "\r\n", 2) == 0)
                t->st.keepalive_tx++;
            break;
        case STREAM_FRAME_PONG:
            t->st.pongs_rx++;
            if (!c->is_core)
                t->cbs.on_alive(t->ctx, c->id, c->ref);
            break;
        case STREAM_FRAME_MSG:
            t->st.rx_messages++;
            c->has_message = true;
            if (c->is_core) {
                t->st.core_rx_messages++;
                t->on_core(t->ctx, buf + off, r.len, &c->remote.sa);
            } else {
                t->cbs.on_message(t->ctx, c->id, c->ref, buf + off, r.len);
            }
            break;
        default:
            conn_frame_error(c, &r);
            return;
        }
        off += r.len;
    }
tail:
    if (c->is_closing)
        return;
    size_t rest = len - off;
    if (rest && rest <= 3 && memcmp(buf + off, "\r\n\r", rest) == 0) {
        /* Half a ping, or a lone CRLF keepalive at the end of what came: held back in
         * the struct, so a client that sends CRLF alone costs no buffer and starts no
         * message deadline. */
        c->n_crlf = (uint8_t)rest;
        c->msg_ms = stream_now_ms(t);
        if (!is_scratch)
            rx_free(c);
        return;
    }
    if (is_scratch) {
        if (!rest)
            return;
        if (rx_reserve(c, rest) < 0) {
            stream_conn_close(c, &t->st.close_no_memory, false);
            return;
        }
        memcpy(c->rx, buf + off, rest);
        c->msg_ms = stream_now_ms(t);
    } else if (off) {
        if (!rest) {
            rx_free(c);
            return;
        }
        memmove(c->rx, c->rx + off, rest);
        c->msg_ms = stream_now_ms(t);
    }
    c->rx_len = (uint32_t)rest;
    c->rx_need = (uint32_t)r.len;
    c->rx_scanned = (uint32_t)r.scanned;
}

static void conn_read_loop(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    for (unsigned i = 0; !c->is_closing; i++) {
        /* Bounded per wakeup (STYLE §5); TLS must still empty the record it has
         * decrypted, as the poll would not fire again for bytes OpenSSL holds. */
        if (i >= STREAM_READS_MAX && !(c->is_tls && SSL_has_pending(c->ssl)))
            break;
        size_t room = STREAM_RX_SCRATCH;
        if (c->rx_len) {
            /* Never more than one byte past the cap into rx: enough to see it is too big. */
            size_t max = (size_t)t->pol.stream_max_message_bytes + 1;
            size_t left = max > c->rx_len ? max - c->rx_len : 1;
            if (left < room)
                room = left;
        }
        ssize_t n = conn_read(c, t->rx_scratch + STREAM_RX_PAD, room);
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            stream_conn_close(c,
                              n == 0         ? &t->st.close_by_peer
                              : n == -EPROTO ? &t->st.close_tls_error
                                             : &t->st.close_reset,
                              false);
            break;
        }
        c->last_rx_ms = stream_now_ms(t);
        t->st.rx_bytes += (uint64_t)n;
        conn_process(c, t->rx_scratch + STREAM_RX_PAD, (size_t)n);
    }
}

/* Lingering close, write side shut: read and drop until EOF. */
static void conn_drain(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    for (unsigned i = 0; i < STREAM_READS_MAX; i++) {
        ssize_t n = conn_read(c, t->rx_scratch, STREAM_RX_SCRATCH);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            stream_conn_close(c, NULL, false);
            return;
        }
    }
}

void stream_conn_crlf_expire(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    /* RFC 5626 §4.4.1 has the client ping; a CRLF alone is still proof of life. */
    if (c->n_crlf >= 2) {
        t->st.pongs_rx++;
        t->cbs.on_alive(t->ctx, c->id, c->ref);
    }
    c->n_crlf = 0;
}

/* ---- open and TLS ------------------------------------------------------------------- */

static void conn_open(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    char peer[STREAM_PEER_ID_MAX];
    const char *peer_id = NULL;
    if (c->is_tls) {
        X509 *cert = SSL_get0_peer_certificate(c->ssl);
        if (cert && SSL_get_verify_result(c->ssl) == X509_V_OK &&
            X509_NAME_oneline(X509_get_subject_name(cert), peer, sizeof(peer)))
            peer_id = peer;
    }
    uint64_t ref = 0;
    int rc = t->cbs.on_open(t->ctx, c->id, c->transport, c->listener, &c->remote.sa, peer_id, &ref);
    if (rc < 0) {
        char abuf[LOG_ADDR_MAX];
        log_debug("stream %s: refused by the owner: %s",
                  log_fmt_addr(&c->remote.sa, abuf, sizeof(abuf)), strerror(-rc));
        stream_conn_close(c, &t->st.refused_by_owner, false);
        return;
    }
    c->ref = ref;
    c->is_open = true;
    c->open_ms = stream_now_ms(t);
    t->n_live++;
    t->st.conns_open++;
}

static void conn_handshake(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    ERR_clear_error();
    int r = SSL_accept(c->ssl);
    if (r == 1) {
        t->st.tls_handshakes_ok++;
        c->is_handshake_done = true;
        c->is_read_wants_write = false;
        conn_open(c);
        if (c->is_closing)
            return;
        if (c->out_len && conn_flush(c) < 0)
            return;
        conn_read_loop(c);
        conn_poll_update(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->is_read_wants_write = e == SSL_ERROR_WANT_WRITE;
        conn_poll_update(c);
        return;
    }
    char abuf[LOG_ADDR_MAX];
    unsigned long err = ERR_peek_last_error();
    const char *reason = err ? ERR_reason_error_string(err) : NULL;
    log_debug("stream %s: TLS handshake failed: %s",
              log_fmt_addr(&c->remote.sa, abuf, sizeof(abuf)), reason ? reason : "connection lost");
    ERR_clear_error();
    stream_conn_close(c, &t->st.tls_handshake_errors, false);
}

void stream_conn_open_core(struct stream_conn *c)
{
    c->is_handshake_done = true;
    c->has_message = true; /* no first-message deadline: a peer's link may idle */
    c->open_ms = stream_now_ms(c->t);
}

void stream_conn_start(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    c->last_rx_ms = c->accept_ms = stream_now_ms(t);
    if (c->is_core) {
        /* Outbound: writable once connected (stream_core_connected). */
        if (!c->is_connecting)
            stream_conn_open_core(c);
        conn_poll_update(c);
        return;
    }
    if (!c->is_tls) {
        c->is_handshake_done = true;
        conn_open(c);
        if (!c->is_closing)
            conn_poll_update(c);
        return;
    }
    c->ssl = SSL_new(tls_server_ctx(t->tls));
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        ERR_clear_error();
        stream_conn_close(c, &t->st.close_no_memory, false);
        return;
    }
    SSL_set_accept_state(c->ssl);
    conn_poll_update(c);
}

static void on_conn_io(uv_poll_t *h, int status, int events)
{
    struct stream_conn *c = container_of(h, struct stream_conn, poll);
    struct transport_stream *t = c->t;
    if (c->is_gone)
        return;
    if (status < 0) {
        stream_conn_close(c, &t->st.close_reset, false);
        return;
    }
    if (c->is_connecting) {
        stream_core_connected(c);
        if (!c->is_gone && !c->is_closing && c->out_len && conn_flush(c) < 0)
            return;
        conn_poll_update(c);
        return;
    }
    if (!c->is_handshake_done) {
        c->last_rx_ms = stream_now_ms(t);
        conn_handshake(c);
        return;
    }
    if (c->is_lingering) {
        if (!c->is_wr_shut && conn_flush(c) < 0)
            return;
        if (c->is_wr_shut && (events & UV_READABLE))
            conn_drain(c);
        conn_poll_update(c);
        return;
    }
    if (c->out_len &&
        ((events & UV_WRITABLE) || (c->is_write_wants_read && (events & UV_READABLE)))) {
        if (conn_flush(c) < 0)
            return;
    }
    if ((events & UV_READABLE) || (c->is_read_wants_write && (events & UV_WRITABLE)))
        conn_read_loop(c);
    conn_poll_update(c);
}
