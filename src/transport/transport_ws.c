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
 */
#define _GNU_SOURCE
#include "transport_ws_internal.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

#include "sipedge/flow_table.h"
#include "sipedge/log.h"
#include "sipedge/lws_uv.h"
#include "ws_out.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/*
 * Per-connection receive chunk (protocol rx_buffer_size). lws allocates it for every
 * connection, so it is the main per-connection memory knob for ws (notes §1: 1 KiB ≈
 * 2.4 KiB/conn, 4 KiB ≈ 5.3 KiB/conn). Larger messages arrive in several callbacks and
 * are reassembled here.
 */
#define WS_RX_CHUNK 2048
#define WS_ACCEPT_BATCH 64          /* accepts per listener wakeup (STYLE §5: bounded) */
#define WS_LISTEN_BACKLOG 1024
#define WS_HANDSHAKE_TIMEOUT_S 10   /* lws timeout for TLS + HTTP upgrade */
#define WS_CLOSE_BACKSTOP_S 3       /* a scheduled close that cannot be written in time */
#define WS_SHUTDOWN_GRACE_MS 500    /* time for 1001 close frames before the context goes */
#define WS_TICK_MS 1000
#define WS_STOP_POLLS_MAX 2000      /* 1 ms polls for lws' handles to finish closing */
#define WS_IP_CAP 16384             /* per-IP entries (handshake bucket + connection count) */
#define WS_IP_HASH 16384            /* power of two */
#define WS_DEFAULT_MAX_CONNS 65536  /* slot table bound when policy max_flows is 0 */
#define WS_ORIGIN_HDR_MAX 256

/* WebSocket close codes (RFC 6455 §7.4.1). */
#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_BAD_DATA 1007
#define WS_CLOSE_POLICY 1008
#define WS_CLOSE_TOO_BIG 1009
#define WS_CLOSE_INTERNAL 1011
#define WS_CLOSE_TRY_AGAIN 1013

/* Per-session data: allocated and zero-filled by lws, freed by lws after CLOSED. */
struct ws_pss {
    struct lws *wsi;
    uint64_t ref;         /* owner's value from on_open */
    uint32_t slot;        /* slot + 1 while in the slot table, 0 otherwise */
    uint32_t ip;          /* ip entry + 1 while counted in n_conns, 0 otherwise */
    bool is_established;  /* CLOSED also fires for refused handshakes (notes §1) */
    bool is_in_msg;       /* between the first and the final chunk of a message */
    bool is_rx_binary;
    bool has_message;     /* a SIP message arrived: the first-message timer is off */
    bool is_closing;      /* a close is scheduled; further input is ignored */
    bool is_close_sent;   /* our close frame is out; waiting for the peer's */
    bool is_peer_closed;
    bool is_ping_due;     /* a server Ping waits for the next writeable callback */
    bool is_ping_out;     /* a Ping is out and nothing has come back since */
    uint16_t close_code;
    /* Loop times in ms, truncated to 32 bits: compared by unsigned difference, which
     * stays right across the wrap for spans under 24 days. */
    uint32_t open_ms;     /* the handshake: first-message timeout */
    uint32_t last_rx_ms;  /* the last frame of any kind from the peer */
    uint32_t ping_ms;     /* the outstanding Ping */
    uint32_t msg_ms;      /* the first chunk of the incomplete message: its deadline */
    char *rx;             /* reassembly buffer, only while a message is incomplete */
    uint32_t rx_len;
    uint32_t rx_cap;
    struct ws_outq out;   /* messages waiting for SERVER_WRITEABLE (ws_out.h) */
    union ws_addr remote;
};

struct ws_slot {
    struct ws_pss *pss; /* NULL when free */
    uint32_t gen;
    uint32_t next_free; /* slot + 1, 0 ends the free list */
};

struct ws_ip {
    union ws_ip_key key;
    uint32_t n_conns;
    uint32_t tokens_milli;
    uint64_t refill_ms;
    uint32_t hnext; /* entry + 1 */
    bool is_used;
};

struct ws_listener {
    uv_poll_t poll;
    struct transport_ws *t;
    struct lws_vhost *vh;
    const struct config_addr *addr;
    int fd;
    uint8_t transport; /* FLOW_WS / FLOW_WSS */
    uint8_t index;     /* index in cfg->listen_ws or cfg->listen_wss */
    bool is_polling;
    char name[24];
};

struct transport_ws {
    uv_loop_t *loop;
    void *foreign_loops[1];
    const struct config *cfg;
    struct policy pol;
    struct transport_ws_cbs cbs;
    void *ctx;
    struct lws_context *lws;
    lws_retry_bo_t retry; /* all zero; must outlive the vhosts that point at it */

    struct ws_listener lst[2 * CONFIG_MAX_LISTEN];
    unsigned n_lst;
    bool is_accept_paused;

    struct ws_origin origins[CONFIG_MAX_ORIGINS];
    unsigned n_origins;

    struct ws_slot *slots;
    uint32_t n_slots;   /* slots ever handed out (high-water mark) */
    uint32_t cap_slots; /* allocated */
    uint32_t max_slots; /* bound */
    uint32_t free_head; /* slot + 1 */
    uint32_t n_live;

    struct ws_ip *ips;
    uint32_t *ip_heads;
    uint32_t ip_free; /* entry + 1 */
    uint32_t n_ips_used;
    uint32_t ip_hwm;

    uv_timer_t tick;
    uv_timer_t stop_timer;
    bool is_closing;
    bool is_lws_destroyed;
    struct lws_uv_teardown teardown;
    unsigned n_handles_open;
    void (*close_cb)(void *ctx);
    void *close_ctx;

    struct ws_arena arena; /* output memory of every connection (ws_out.c) */
    struct transport_ws_stats st;
};

static void ws_maybe_finish(struct transport_ws *t);

/* ---- ids ---------------------------------------------------------------------------- */

static uint32_t ws_now_ms(const struct transport_ws *t)
{
    return (uint32_t)uv_now(t->loop);
}

static uint64_t ws_conn_id(uint32_t slot, uint32_t gen)
{
    return ((uint64_t)gen << 32) | slot;
}

static struct ws_pss *ws_lookup(const struct transport_ws *t, uint64_t conn)
{
    uint32_t slot = (uint32_t)conn;
    uint32_t gen = (uint32_t)(conn >> 32);
    if (slot >= t->n_slots || t->slots[slot].gen != gen)
        return NULL;
    return t->slots[slot].pss;
}

static int ws_slot_alloc(struct transport_ws *t, struct ws_pss *pss, uint64_t *conn)
{
    uint32_t slot;
    if (t->free_head) {
        slot = t->free_head - 1;
        t->free_head = t->slots[slot].next_free;
    } else {
        if (t->n_slots >= t->max_slots)
            return -ENOSPC;
        if (t->n_slots == t->cap_slots) {
            uint32_t cap = t->cap_slots ? t->cap_slots * 2 : 256;
            if (cap > t->max_slots)
                cap = t->max_slots;
            struct ws_slot *s = realloc(t->slots, (size_t)cap * sizeof(*s));
            if (!s)
                return -ENOMEM;
            t->slots = s;
            t->cap_slots = cap;
        }
        slot = t->n_slots++;
        t->slots[slot].gen = 1;
    }
    t->slots[slot].pss = pss;
    t->slots[slot].next_free = 0;
    pss->slot = slot + 1;
    t->n_live++;
    *conn = ws_conn_id(slot, t->slots[slot].gen);
    return 0;
}

static void ws_slot_free(struct transport_ws *t, struct ws_pss *pss)
{
    uint32_t slot = pss->slot - 1;
    t->slots[slot].pss = NULL;
    if (++t->slots[slot].gen == 0)
        t->slots[slot].gen = 1; /* id 0 is never valid */
    t->slots[slot].next_free = t->free_head;
    t->free_head = slot + 1;
    pss->slot = 0;
    t->n_live--;
}

/* ---- per-IP table: handshake token bucket and connection count ---------------------- */

/*
 * IPv6 sources are keyed by their first v6_prefix bits (guard.ipv6_prefix): one host
 * usually holds a whole /64, and keying the full address would let it fill the table
 * and multiply the per-IP caps. An IPv4-mapped address is keyed as the IPv4 one.
 */
void transport_ws_ip_key(const struct sockaddr *sa, unsigned v6_prefix, union ws_ip_key *k)
{
    memset(k, 0, sizeof(*k));
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            k->family = AF_INET;
            memcpy(k->addr, &s6->sin6_addr.s6_addr[12], 4);
            return;
        }
        if (v6_prefix == 0 || v6_prefix > 128)
            v6_prefix = 128;
        k->family = AF_INET6;
        memcpy(k->addr, &s6->sin6_addr, v6_prefix / 8);
        if (v6_prefix % 8)
            k->addr[v6_prefix / 8] =
                (uint8_t)(s6->sin6_addr.s6_addr[v6_prefix / 8] & (0xffu << (8 - v6_prefix % 8)));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        k->family = AF_INET;
        memcpy(k->addr, &s4->sin_addr, 4);
    }
}

static void ws_ip_key(const struct transport_ws *t, const struct sockaddr *sa, union ws_ip_key *k)
{
    transport_ws_ip_key(sa, t->pol.guard_ipv6_prefix, k);
}

static uint32_t ws_ip_hash(const union ws_ip_key *k)
{
    /* FNV-1a; the table is bounded, so a poor spread costs time, never memory. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof(k->bytes); i++)
        h = (h ^ k->bytes[i]) * 16777619u;
    return h & (WS_IP_HASH - 1);
}

static uint32_t ws_bucket_cap_milli(const struct transport_ws *t)
{
    return t->pol.ws_handshakes_per_ip_per_s * 2u * 1000u; /* burst = 2x rate */
}

static void ws_ip_refill(const struct transport_ws *t, struct ws_ip *e, uint64_t now_ms)
{
    uint64_t cap = ws_bucket_cap_milli(t);
    uint64_t add = (now_ms - e->refill_ms) * t->pol.ws_handshakes_per_ip_per_s;
    uint64_t v = e->tokens_milli + add;
    e->tokens_milli = (uint32_t)(v > cap ? cap : v);
    e->refill_ms = now_ms;
}

/* Entry for key, created with a full bucket when absent. NULL when the table is full. */
static struct ws_ip *ws_ip_get(struct transport_ws *t, const union ws_ip_key *k, uint64_t now_ms)
{
    uint32_t h = ws_ip_hash(k);
    for (uint32_t i = t->ip_heads[h]; i; i = t->ips[i - 1].hnext) {
        struct ws_ip *e = &t->ips[i - 1];
        if (memcmp(&e->key, k, sizeof(*k)) == 0)
            return e;
    }
    uint32_t idx;
    if (t->ip_free) {
        idx = t->ip_free - 1;
        t->ip_free = t->ips[idx].hnext;
    } else if (t->ip_hwm < WS_IP_CAP) {
        idx = t->ip_hwm++;
    } else {
        return NULL;
    }
    struct ws_ip *e = &t->ips[idx];
    memset(e, 0, sizeof(*e));
    e->key = *k;
    e->is_used = true;
    e->tokens_milli = ws_bucket_cap_milli(t);
    e->refill_ms = now_ms;
    e->hnext = t->ip_heads[h];
    t->ip_heads[h] = idx + 1;
    t->n_ips_used++;
    return e;
}

/* Forgets entries that hold no connection and whose bucket is full again. */
static void ws_ip_sweep(struct transport_ws *t, uint64_t now_ms)
{
    uint32_t cap = ws_bucket_cap_milli(t);
    for (uint32_t h = 0; h < WS_IP_HASH; h++) {
        uint32_t *link = &t->ip_heads[h];
        while (*link) {
            uint32_t idx = *link - 1;
            struct ws_ip *e = &t->ips[idx];
            ws_ip_refill(t, e, now_ms);
            if (e->n_conns == 0 && e->tokens_milli >= cap) {
                *link = e->hnext;
                e->is_used = false;
                e->hnext = t->ip_free;
                t->ip_free = idx + 1;
                t->n_ips_used--;
            } else {
                link = &e->hnext;
            }
        }
    }
}

/* ---- Origin policy (RFC 6454 §7, RFC 7118 §4.1 leaves it to the server) ------------- */

static uint16_t ws_default_port(const char *scheme)
{
    if (!strcasecmp(scheme, "https") || !strcasecmp(scheme, "wss"))
        return 443;
    if (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "ws"))
        return 80;
    return 0;
}

int transport_ws_origin_parse(const char *s, size_t n, struct ws_origin *out)
{
    struct ws_origin o;
    memset(&o, 0, sizeof(o));
    const char *end = s + n;
    const char *sep = NULL;
    for (const char *p = s; p + 2 < end; p++) {
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            sep = p;
            break;
        }
    }
    if (!sep || sep == s || (size_t)(sep - s) >= sizeof(o.scheme))
        return -EINVAL;
    memcpy(o.scheme, s, (size_t)(sep - s));
    const char *host = sep + 3;
    if (end > host && end[-1] == '/')
        end--; /* tolerate a trailing slash in configuration */
    const char *host_end = end;
    const char *colon = NULL;
    if (host < end && *host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (!rb)
            return -EINVAL;
        host_end = rb + 1;
        if (host_end < end) {
            if (*host_end != ':')
                return -EINVAL;
            colon = host_end;
        }
    } else {
        for (const char *p = host; p < end; p++) {
            if (*p == '/' || *p == '?' || *p == '#' || *p == '@')
                return -EINVAL;
            if (*p == ':') {
                colon = p;
                host_end = p;
                break;
            }
        }
    }
    if (host_end == host || (size_t)(host_end - host) >= sizeof(o.host))
        return -EINVAL;
    memcpy(o.host, host, (size_t)(host_end - host));
    if (colon) {
        unsigned long port = 0;
        const char *p = colon + 1;
        if (p == end)
            return -EINVAL;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            port = port * 10 + (unsigned long)(*p - '0');
            if (port > 65535)
                return -EINVAL;
        }
        if (port == 0)
            return -EINVAL;
        o.port = (uint16_t)port;
        o.has_port = true;
    }
    *out = o;
    return 0;
}

bool transport_ws_origin_allowed(const struct ws_origin *allow, unsigned n_allow,
                                 const char *origin, size_t len)
{
    struct ws_origin o;
    if (n_allow == 0)
        return true;
    if (transport_ws_origin_parse(origin, len, &o) < 0)
        return false; /* "null" and anything malformed */
    uint16_t port = o.has_port ? o.port : ws_default_port(o.scheme);
    for (unsigned i = 0; i < n_allow; i++) {
        const struct ws_origin *a = &allow[i];
        if (strcasecmp(a->scheme, o.scheme) || strcasecmp(a->host, o.host))
            continue;
        if (!a->has_port || a->port == port)
            return true;
    }
    return false;
}

/* ---- helpers ------------------------------------------------------------------------ */

/*
 * RFC 3629 §4 well-formed UTF-8 (no overlongs, no surrogates, max U+10FFFF). SIP is
 * almost all ASCII, so runs of 8 ASCII bytes are skipped a word at a time; every output
 * message is scanned once, at commit, and this keeps that scan a small part of it.
 */
bool transport_ws_is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t w;
        if (n - i >= 8 && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ull) == 0)) {
            i += 8;
            continue;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (i + k >= n)
            return false; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++) {
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return false;
        }
        i += k + 1;
    }
    return true;
}

static void ws_peer(struct lws *wsi, union ws_addr *out)
{
    socklen_t sl = sizeof(*out);
    memset(out, 0, sizeof(*out));
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, &out->sa, &sl) < 0)
        out->sa.sa_family = AF_UNSPEC;
}

static struct transport_ws *ws_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

static void ws_out_free(struct transport_ws *t, struct ws_pss *pss)
{
    ws_outq_free(&t->arena, &pss->out);
    t->st.tx_blocks = t->arena.n_blocks;
}

static void ws_rx_free(struct transport_ws *t, struct ws_pss *pss)
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
static void ws_schedule_close(struct ws_pss *pss, uint16_t code)
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
    bool has_sip = false;
    if (n > 0) {
        char *save = NULL;
        for (char *tok = strtok_r(hdr, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ' || *tok == '\t')
                tok++;
            size_t l = strlen(tok);
            while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
                l--;
            if (l == 3 && !memcmp(tok, "sip", 3))
                has_sip = true;
        }
    }
    if (!has_sip) {
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
        struct ws_ip *e = ws_ip_get(t, &k, uv_now(t->loop));
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

static bool ws_addr_equal(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && (y->sin_addr.s_addr == htonl(INADDR_ANY) ||
                                              x->sin_addr.s_addr == y->sin_addr.s_addr);
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr) ||
            !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)));
}

/*
 * The listener a connection came in on, from its local address. Not from the wsi's
 * vhost: every vhost here has port CONTEXT_PORT_NO_LISTEN_SERVER, and lws rebinds an
 * upgraded connection to the first vhost on that "port" whose name matches the Host
 * header, else to the first vhost created, so a wss connection may end up on "ws0".
 */
static struct ws_listener *ws_listener_of(struct transport_ws *t, struct lws *wsi)
{
    union ws_addr local;
    socklen_t sl = sizeof(local);
    int fd = lws_get_socket_fd(wsi);
    if (fd >= 0 && getsockname(fd, &local.sa, &sl) == 0) {
        for (unsigned i = 0; i < t->n_lst; i++) {
            if (ws_addr_equal(&local.sa, &t->lst[i].addr->ss))
                return &t->lst[i];
        }
    }
    return lws_vhost_user(lws_get_vhost(wsi));
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
        struct ws_ip *e = ws_ip_get(t, &k, uv_now(t->loop));
        if (e) {
            e->n_conns++;
            pss->ip = (uint32_t)(e - t->ips) + 1;
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
                 log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)), t->max_slots);
        ws_schedule_close(pss, WS_CLOSE_TRY_AGAIN);
        return;
    }
    rc = t->cbs.on_open(t->ctx, conn, l->transport, l->index, &pss->remote.sa, &pss->ref);
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

static uint64_t ws_conn_of(const struct transport_ws *t, const struct ws_pss *pss)
{
    uint32_t slot = pss->slot - 1;
    return ws_conn_id(slot, t->slots[slot].gen);
}

/* One complete message (RFC 7118 §5: one SIP message per WebSocket message). */
static void ws_deliver(struct transport_ws *t, struct ws_pss *pss, const char *buf, size_t len,
                       bool is_binary)
{
    uint64_t conn = ws_conn_of(t, pss);
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
    if (!pss->slot || pss->is_closing)
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

static void on_stop_timer(uv_timer_t *h);

static void ws_closed(struct transport_ws *t, struct ws_pss *pss)
{
    if (pss->slot) {
        uint64_t conn = ws_conn_of(t, pss);
        if (pss->is_peer_closed)
            t->st.close_by_peer++;
        else if (!pss->is_closing)
            t->st.close_other++; /* reset, EOF, ping timeout, handshake-less kill */
        ws_slot_free(t, pss);
        t->cbs.on_close(t->ctx, conn, pss->ref);
    }
    if (pss->ip) {
        t->ips[pss->ip - 1].n_conns--;
        pss->ip = 0;
    }
    if (pss->is_established) {
        pss->is_established = false;
        t->st.conns_open--;
    }
    ws_out_free(t, pss);
    ws_rx_free(t, pss);
    if (t->is_closing && t->n_live == 0 && !t->is_lws_destroyed)
        uv_timer_start(&t->stop_timer, on_stop_timer, 0, 0); /* finish outside lws */
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
        if (pss && pss->slot && !pss->is_closing) {
            t->st.pongs_rx++;
            ws_seen(t, pss);
            t->cbs.on_alive(t->ctx, ws_conn_of(t, pss), pss->ref);
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

static const struct lws_protocols ws_protocols[] = {
    /* RFC 7118 §4.1: the registered subprotocol name is "sip". */
    {"sip", on_lws, sizeof(struct ws_pss), WS_RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- listening ---------------------------------------------------------------------- */

static void ws_accept_pause(struct transport_ws *t)
{
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (t->lst[i].is_polling) {
            uv_poll_stop(&t->lst[i].poll);
            t->lst[i].is_polling = false;
        }
    }
    t->is_accept_paused = true;
}

static void on_accept(uv_poll_t *h, int status, int events);

static void ws_accept_resume(struct transport_ws *t)
{
    t->is_accept_paused = false;
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (!t->lst[i].is_polling && t->lst[i].fd >= 0) {
            uv_poll_start(&t->lst[i].poll, UV_READABLE, on_accept);
            t->lst[i].is_polling = true;
        }
    }
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct ws_listener *l = container_of(h, struct ws_listener, poll);
    struct transport_ws *t = l->t;
    (void)events;
    if (status < 0 || t->is_closing)
        return;
    for (int n = 0; n < WS_ACCEPT_BATCH; n++) {
        union ws_addr peer;
        socklen_t sl = sizeof(peer);
        int fd = accept4(l->fd, &peer.sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting until the next tick instead of
                 * spinning on a readable listen socket. */
                t->st.accept_errors++;
                log_warn("ws %s: accept: %s; pausing accepts for %d ms", l->addr->text,
                         strerror(errno), WS_TICK_MS);
                ws_accept_pause(t);
            }
            return;
        }
        t->st.accepted++;
        if (t->pol.ws_handshakes_per_ip_per_s) {
            union ws_ip_key k;
            uint64_t now = uv_now(t->loop);
            ws_ip_key(t, &peer.sa, &k);
            struct ws_ip *e = ws_ip_get(t, &k, now);
            if (!e) {
                t->st.refused_ip_table_full++;
                close(fd);
                continue;
            }
            ws_ip_refill(t, e, now);
            if (e->tokens_milli < 1000) {
                char abuf[LOG_ADDR_MAX];
                t->st.refused_handshake_rate++;
                log_debug("ws %s: connection refused: handshake rate over %u/s",
                          log_fmt_addr(&peer.sa, abuf, sizeof(abuf)),
                          t->pol.ws_handshakes_per_ip_per_s);
                close(fd);
                continue;
            }
            e->tokens_milli -= 1000;
        }
        /* On failure lws closes the fd itself (lws-adopt.h). */
        if (!lws_adopt_socket_vhost(l->vh, fd))
            t->st.adopt_errors++;
    }
}

static int ws_listen(struct transport_ws *t, struct ws_listener *l)
{
    /* SO_REUSEPORT: each worker will listen on the same port with its own socket. */
    int fd = lws_uv_listen(l->addr, WS_LISTEN_BACKLOG, true, t->loop, &l->poll, on_accept);
    if (fd < 0)
        return fd;
    l->fd = fd;
    t->n_handles_open++;
    l->is_polling = true;
    return 0;
}

static int ws_vhost(struct transport_ws *t, struct ws_listener *l)
{
    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof(vi));
    vi.vhost_name = l->name;
    vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    vi.protocols = ws_protocols;
    vi.user = l;
    /* All zero: no lws validity timer (ws_tick_conn does keepalive; see there why). */
    vi.retry_and_idle_policy = &t->retry;
    vi.timeout_secs = WS_HANDSHAKE_TIMEOUT_S;
    vi.keepalive_timeout = WS_HANDSHAKE_TIMEOUT_S;
    if (l->transport == FLOW_WSS) {
        vi.ssl_cert_filepath = t->cfg->tls_cert;
        vi.ssl_private_key_filepath = t->cfg->tls_key;
        /* lws enables TLS on a vhost only when its own options ask for it. */
        vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        vi.alpn = "http/1.1"; /* WebSocket over HTTP/1.1 only (RFC 6455 §4.1) */
    }
    l->vh = lws_create_vhost(t->lws, &vi);
    if (!l->vh)
        return -EINVAL;
    return 0;
}

/* ---- lws logging into ours ---------------------------------------------------------- */

static void on_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        log_error("lws: %.*s", (int)n, line);
    else if (level & LLL_WARN)
        log_warn("lws: %.*s", (int)n, line);
    else
        log_debug("lws: %.*s", (int)n, line);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void ws_apply_policy(struct transport_ws *t, const struct policy *p)
{
    t->pol = *p;
    if (t->pol.ws_max_message_bytes < 65536)
        t->pol.ws_max_message_bytes = 65536; /* RFC 7118 clients may send up to 64 KiB */
}

/*
 * Per-connection timers, run from the transport's one-second tick over the slot table
 * instead of lws' timers. lws 4.1 keeps every scheduled callback of a thread (validity
 * pings, lws_set_timer_usecs) in one sorted list, and re-arming the validity timer on
 * every received frame walks that list: with 10,000+ connections that walk was most of
 * the process' CPU and handshakes started to time out. A linear pass per second costs a
 * few nanoseconds per connection, and there is nothing to re-arm when a frame arrives.
 *
 *  - no SIP message within ws_first_message_timeout_s of the handshake: close 1008
 *    (RFC 6455 §7.4.1, the generic policy code: 1000/1001 would tell the client we are
 *    done or going away, 1002/1003 would blame its framing);
 *  - a message started (its first chunk arrived) but not complete within
 *    ws_message_timeout_s: close 1008. Without this deadline a peer that sends the
 *    start of a message and stalls holds its receive buffer for as long as it
 *    answers pings;
 *  - nothing received for ws_ping_interval_s: a WebSocket Ping (RFC 6455 §5.5.2);
 *  - still nothing ws_pong_timeout_s after the Ping: the peer is gone. No close frame
 *    (it could not answer one either): the connection is dropped and the flow dies.
 */
static void ws_tick_conn(struct transport_ws *t, struct ws_pss *pss, uint32_t now)
{
    char abuf[LOG_ADDR_MAX];
    if (pss->is_closing)
        return;
    if (pss->is_in_msg && t->pol.ws_message_timeout_s &&
        now - pss->msg_ms >= t->pol.ws_message_timeout_s * 1000u) {
        t->st.close_message_timeout++;
        log_debug("ws %s: message incomplete after %u s (%u bytes): closing 1008",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)),
                  t->pol.ws_message_timeout_s, pss->rx_len);
        ws_rx_free(t, pss);
        ws_schedule_close(pss, WS_CLOSE_POLICY);
        return;
    }
    if (!pss->has_message && t->pol.ws_first_message_timeout_s &&
        now - pss->open_ms >= t->pol.ws_first_message_timeout_s * 1000u) {
        t->st.close_first_message_timeout++;
        log_debug("ws %s: no SIP message within %u s: closing 1008",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)),
                  t->pol.ws_first_message_timeout_s);
        ws_schedule_close(pss, WS_CLOSE_POLICY);
        return;
    }
    if (pss->is_ping_out) {
        if (now - pss->ping_ms < t->pol.ws_pong_timeout_s * 1000u)
            return;
        t->st.close_ping_timeout++;
        log_debug("ws %s: no answer within %u s of a ping: dropping the connection",
                  log_fmt_addr(&pss->remote.sa, abuf, sizeof(abuf)), t->pol.ws_pong_timeout_s);
        pss->is_closing = true;
        pss->is_close_sent = true;
        /* Synchronous, as lws' own timeouts close from its timer: an asynchronous kill
         * would wait for lws to next service something (its deadline is only re-armed
         * then), which on an idle server can be never. CLOSED runs now and frees the
         * slot; the caller's loop reads the slot again, not pss. */
        lws_set_timeout(pss->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
        return;
    }
    if (t->pol.ws_ping_interval_s &&
        now - pss->last_rx_ms >= t->pol.ws_ping_interval_s * 1000u) {
        pss->is_ping_out = true;
        pss->is_ping_due = true;
        pss->ping_ms = now;
        lws_callback_on_writable(pss->wsi);
    }
}

static void on_tick(uv_timer_t *h)
{
    struct transport_ws *t = container_of(h, struct transport_ws, tick);
    uint32_t now = ws_now_ms(t);
    if (t->is_accept_paused && !t->is_closing)
        ws_accept_resume(t);
    ws_ip_sweep(t, uv_now(t->loop));
    if (t->is_closing)
        return;
    for (uint32_t i = 0; i < t->n_slots; i++) {
        struct ws_pss *pss = t->slots[i].pss;
        if (pss)
            ws_tick_conn(t, pss, now);
    }
}

int transport_ws_new(struct transport_ws **out, const struct transport_ws_opts *opts,
                     const struct transport_ws_cbs *cbs, void *ctx)
{
    const struct config *cfg = opts->cfg;
    struct transport_ws *t;
    int rc = 0;

    if (!opts->loop || !cfg || !opts->policy || !cbs || !cbs->on_open || !cbs->on_message ||
        !cbs->on_alive || !cbs->on_close || cfg->n_listen_ws + cfg->n_listen_wss == 0)
        return -EINVAL;
    if (cfg->n_listen_wss && (!cfg->tls_cert[0] || !cfg->tls_key[0])) {
        log_error("ws: wss listener configured without tls cert and key");
        return -EINVAL;
    }

    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->loop = opts->loop;
    t->cfg = cfg;
    t->cbs = *cbs;
    t->ctx = ctx;
    t->foreign_loops[0] = opts->loop;
    ws_arena_init(&t->arena, LWS_PRE);
    ws_apply_policy(t, opts->policy);
    t->max_slots = opts->policy->max_flows ? opts->policy->max_flows : WS_DEFAULT_MAX_CONNS;
    for (unsigned i = 0; i < 2 * CONFIG_MAX_LISTEN; i++)
        t->lst[i].fd = -1;

    for (unsigned i = 0; i < cfg->n_ws_origins; i++) {
        const char *o = cfg->ws_origins[i];
        if (transport_ws_origin_parse(o, strlen(o), &t->origins[t->n_origins]) < 0) {
            log_error("ws: origin \"%s\" is not scheme://host[:port]", o);
            free(t);
            return -EINVAL;
        }
        t->n_origins++;
    }
    /* Once per process, not once per worker. */
    static bool is_origin_warned;
    if (t->n_origins == 0 && !__atomic_exchange_n(&is_origin_warned, true, __ATOMIC_RELAXED))
        log_warn("ws: no ws origins configured: handshakes from any Origin are accepted");

    /* lws writes with MSG_NOSIGNAL on most paths, OpenSSL does not: a peer that resets
     * a wss connection must not kill the process. */
    signal(SIGPIPE, SIG_IGN);

    t->ips = calloc(WS_IP_CAP, sizeof(*t->ips));
    t->ip_heads = calloc(WS_IP_HASH, sizeof(*t->ip_heads));
    if (!t->ips || !t->ip_heads) {
        free(t->ips);
        free(t->ip_heads);
        free(t);
        return -ENOMEM;
    }

    int lws_level = LLL_ERR | LLL_WARN;
    if (log_get_level() >= LOG_LEVEL_DEBUG)
        lws_level |= LLL_NOTICE;
    lws_set_log_level(lws_level, on_lws_log);

    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                 LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    ci.foreign_loops = t->foreign_loops;
    ci.port = CONTEXT_PORT_NO_LISTEN;
    ci.user = t;
    ci.count_threads = 1;
    t->lws = lws_create_context(&ci);
    if (!t->lws) {
        /* Most often the evlib-uv plugin (libwebsockets-evlib-uv) is missing. */
        log_error("ws: lws_create_context failed (is libwebsockets-evlib-uv installed?)");
        free(t->ips);
        free(t->ip_heads);
        free(t);
        return -ENOMEM;
    }

    uv_timer_init(t->loop, &t->tick);
    uv_timer_init(t->loop, &t->stop_timer);
    t->n_handles_open = 2;
    uv_timer_start(&t->tick, on_tick, WS_TICK_MS, WS_TICK_MS);

    for (unsigned k = 0; k < 2; k++) {
        unsigned n = k ? cfg->n_listen_wss : cfg->n_listen_ws;
        for (unsigned i = 0; i < n; i++) {
            struct ws_listener *l = &t->lst[t->n_lst++];
            l->t = t;
            l->transport = k ? FLOW_WSS : FLOW_WS;
            l->index = (uint8_t)i;
            l->addr = k ? &cfg->listen_wss[i] : &cfg->listen_ws[i];
            snprintf(l->name, sizeof(l->name), "sipedge/%s%u", k ? "wss" : "ws", i);
            rc = ws_vhost(t, l);
            if (rc < 0) {
                log_error("ws: cannot create %s vhost for %s (tls cert %s, key %s)",
                          k ? "wss" : "ws", l->addr->text, cfg->tls_cert, cfg->tls_key);
                goto fail;
            }
            rc = ws_listen(t, l);
            if (rc < 0) {
                log_error("ws: cannot listen on %s %s: %s", k ? "wss" : "ws", l->addr->text,
                          strerror(-rc));
                goto fail;
            }
            log_info("ws: listening on %s://%s", k ? "wss" : "ws", l->addr->text);
        }
    }
    *out = t;
    return 0;

fail:
    /* The loop has not run yet: tear down synchronously as far as we can; lws' handles
     * and ours close on the caller's next uv_run. The object is leaked on purpose
     * because start-up failure ends the process and close callbacks still point at it. */
    for (unsigned i = 0; i < t->n_lst; i++) {
        if (t->lst[i].fd >= 0) {
            uv_close((uv_handle_t *)&t->lst[i].poll, NULL);
            close(t->lst[i].fd);
            t->lst[i].fd = -1;
        }
    }
    uv_close((uv_handle_t *)&t->tick, NULL);
    uv_close((uv_handle_t *)&t->stop_timer, NULL);
    lws_context_destroy(t->lws);
    return rc;
}

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

void transport_ws_set_policy(struct transport_ws *t, const struct policy *policy)
{
    /* Keepalive timings change in place: lws reads them through the vhost's pointer. */
    ws_apply_policy(t, policy);
}

const struct transport_ws_stats *transport_ws_stats(const struct transport_ws *t)
{
    return &t->st;
}

void transport_ws_stats_format(const struct transport_ws *t, char *buf, size_t cap)
{
    size_t off = 0;
    if (!cap)
        return;
    buf[0] = '\0';
#define WS_STATS_FMT(name)                                                                         \
    if (off < cap) {                                                                               \
        int n_ = snprintf(buf + off, cap - off, "%sws_" #name "=%llu", off ? " " : "",             \
                          (unsigned long long)t->st.name);                                         \
        if (n_ > 0)                                                                                \
            off += (size_t)n_;                                                                     \
    }
    TRANSPORT_WS_STATS(WS_STATS_FMT)
#undef WS_STATS_FMT
}

uint32_t transport_ws_n_conns(const struct transport_ws *t)
{
    return t->n_live;
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct transport_ws *t = h->data;
    t->n_handles_open--;
    ws_maybe_finish(t);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct ws_listener *l = container_of((uv_poll_t *)h, struct ws_listener, poll);
    close(l->fd);
    l->fd = -1;
    on_handle_closed(h);
}

static void ws_maybe_finish(struct transport_ws *t)
{
    if (t->lws || t->n_handles_open)
        return;
    void (*cb)(void *) = t->close_cb;
    void *ctx = t->close_ctx;
    ws_arena_destroy(&t->arena);
    free(t->slots);
    free(t->ips);
    free(t->ip_heads);
    free(t);
    if (cb)
        cb(ctx);
}

/*
 * Shutdown runs in steps on stop_timer, each outside any lws callback:
 *   1. lws_context_destroy: every connection still open is closed (CLOSED, on_close)
 *      and lws starts closing its uv handles.
 *   2. once no handle on the loop is closing any more: lws_context_destroy again. With
 *      a foreign libuv loop this second call frees the vhosts and the context and
 *      unloads the evlib-uv plugin (lws issue #2595). Calling it while lws' close
 *      callbacks are still pending jumps into the unloaded plugin.
 *   3. our own handles close; cb runs from the last close callback.
 */
static void on_stop_timer(uv_timer_t *h)
{
    struct transport_ws *t = container_of(h, struct transport_ws, stop_timer);
    if (!t->is_lws_destroyed) {
        t->is_lws_destroyed = true;
        uv_timer_stop(&t->tick);
        t->teardown = (struct lws_uv_teardown){.ctx = t->lws};
        lws_uv_teardown_step(&t->teardown, t->loop, WS_STOP_POLLS_MAX, "ws");
        uv_timer_start(&t->stop_timer, on_stop_timer, 1, 1);
        return;
    }
    if (!lws_uv_teardown_step(&t->teardown, t->loop, WS_STOP_POLLS_MAX, "ws"))
        return;
    uv_timer_stop(&t->stop_timer);
    t->lws = NULL;
    t->tick.data = t;
    t->stop_timer.data = t;
    uv_close((uv_handle_t *)&t->tick, on_handle_closed);
    uv_close((uv_handle_t *)&t->stop_timer, on_handle_closed);
}

void transport_ws_close(struct transport_ws *t, void (*cb)(void *ctx), void *ctx)
{
    if (t->is_closing)
        return;
    t->is_closing = true;
    t->close_cb = cb;
    t->close_ctx = ctx;
    for (unsigned i = 0; i < t->n_lst; i++) {
        struct ws_listener *l = &t->lst[i];
        if (l->fd < 0)
            continue;
        if (l->is_polling)
            uv_poll_stop(&l->poll);
        l->is_polling = false;
        l->poll.data = t;
        uv_close((uv_handle_t *)&l->poll, on_listener_closed);
    }
    /* RFC 6455 §7.4.1: 1001, the server is going away. */
    for (uint32_t s = 0; s < t->n_slots; s++) {
        if (t->slots[s].pss) {
            t->st.close_shutdown++;
            ws_schedule_close(t->slots[s].pss, WS_CLOSE_GOING_AWAY);
        }
    }
    uv_timer_start(&t->stop_timer, on_stop_timer, t->n_live ? WS_SHUTDOWN_GRACE_MS : 0, 0);
}
