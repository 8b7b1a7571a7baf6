/*
 * The whole per-packet path of the edge: arbitrary bytes as a client datagram, as a
 * WebSocket message on a connection flow, and as a datagram from the registrar. Every
 * message the edge emits must itself parse, and nothing may crash or leak.
 *
 * A fuzzer cannot forge a flow token's MAC, so in a datagram from the registrar every
 * "$T" is replaced by the valid token of the WebSocket flow: Route/Path delivery and
 * Contact aliases ("sip:$T.<base64url>@127.0.0.1:5070") are then reachable. Likewise,
 * in a message on the WebSocket flow "$B" becomes the genuine branch of a request the
 * edge delivered to it, so client responses carry both forged sipedge Vias (anything the
 * fuzzer writes after "z9hG4bKsE") and real ones, and the tag check meets both. Contact
 * aliasing (nat.contact_alias) is on for inputs whose selector has bit 4 set, so flows
 * registered with and without it meet.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/flow_table.h"
#include "sipedge/flow_token.h"
#include "sipedge/sip_msg.h"

static char g_tx[65536];
static char g_last[65536]; /* the last message the edge emitted */
static size_t g_last_len;
static size_t g_n_sent;

static char *out_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    (void)ctx;
    (void)d;
    *cap = sizeof(g_tx);
    return g_tx;
}

static void check_output(const char *buf, size_t len)
{
    g_n_sent++;
    memcpy(g_last, buf, len < sizeof(g_last) ? len : sizeof(g_last));
    g_last_len = len < sizeof(g_last) ? len : sizeof(g_last);
    if (len < 4 || buf[0] == '\r' || (buf[0] & 0xc0) == 0)
        return; /* keepalive answers: CRLF, STUN */
    struct sip_hdr hdrs[256];
    struct sip_msg m;
    struct sip_err err;
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = 256};
    /* What the edge writes is well-formed, whatever it was fed. */
    if (sip_msg_parse(&m, buf, len, hdrs, &lim, &err) < 0 && err.status != 0)
        abort();
}

static int out_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    (void)ctx;
    (void)d;
    if (len)
        check_output(g_tx, len);
    return 0;
}

static struct config g_cfg;
static struct policy g_pol;
static struct edge *g_edge;
static uint64_t g_ws_ref;
static uint64_t g_now = 1000;
static char g_ws_token[FLOW_TOKEN_MAX];
static size_t g_ws_token_len;
static char g_core_msg[65536];
static char g_branch[96];
static size_t g_branch_len;

/* Copies msg with every "$<c>" replaced by rep; returns the length. */
static size_t with_subst(const char *msg, size_t len, char c, const char *rep, size_t rep_len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '$' && i + 1 < len && msg[i + 1] == c && n + rep_len <= sizeof(g_core_msg)) {
            memcpy(g_core_msg + n, rep, rep_len);
            n += rep_len;
            i++;
        } else if (n < sizeof(g_core_msg)) {
            g_core_msg[n++] = msg[i];
        }
    }
    return n;
}

static size_t with_token(const char *msg, size_t len)
{
    return with_subst(msg, len, 'T', g_ws_token, g_ws_token_len);
}

/* Copies the value of the first "name" parameter after "key" in g_last into out. */
static size_t grab(const char *key, const char *stop, char *out, size_t cap)
{
    g_last[g_last_len < sizeof(g_last) ? g_last_len : sizeof(g_last) - 1] = '\0';
    const char *p = strstr(g_last, key);
    if (!p)
        abort();
    p += strlen(key);
    size_t n = strcspn(p, stop);
    if (n == 0 || n >= cap)
        abort();
    memcpy(out, p, n);
    return n;
}

static void setup(void)
{
    config_defaults(&g_cfg);
    config_addr_parse("127.0.0.1:5060", &g_cfg.listen_udp[0]);
    g_cfg.n_listen_udp = 1;
    config_addr_parse("127.0.0.1:8080", &g_cfg.listen_ws[0]);
    g_cfg.n_listen_ws = 1;
    config_addr_parse("127.0.0.1:5070", &g_cfg.core);
    config_addr_parse("127.0.0.1:5080", &g_cfg.registrar);
    memset(g_cfg.flow_key, 7, sizeof(g_cfg.flow_key));
    g_cfg.has_flow_key = true;
    policy_defaults(&g_pol);
    g_pol.max_flows = 256;
    struct edge_opts eo = {
        .cfg = &g_cfg,
        .policy = &g_pol,
        .out = {.reserve = out_reserve, .commit = out_commit},
    };
    if (edge_new(&g_edge, &eo) < 0)
        abort();
    struct sockaddr_in ws = {.sin_family = AF_INET, .sin_port = htons(40000)};
    ws.sin_addr.s_addr = htonl(0xc0000201);
    if (edge_flow_open(g_edge, FLOW_WS, 0, (struct sockaddr *)&ws, NULL, 1, g_now, &g_ws_ref) < 0)
        abort();
    /* The flow's real token, from the Path of a REGISTER relayed over it. */
    static const char reg[] = "REGISTER sip:example.com SIP/2.0\r\n"
                              "Via: SIP/2.0/WS h.invalid;branch=z9hG4bKseed1\r\n"
                              "From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
                              "Call-ID: seed\r\nCSeq: 1 REGISTER\r\n"
                              "Contact: <sip:a@h.invalid;transport=ws>\r\n"
                              "Content-Length: 0\r\n\r\n";
    edge_rx_flow(g_edge, g_ws_ref, reg, sizeof(reg) - 1, g_now);
    g_ws_token_len = grab("Path: <sip:", "@", g_ws_token, sizeof(g_ws_token));
    /* A genuine inbound branch, from an INVITE delivered over the flow. */
    char inv[1024];
    int n = snprintf(inv, sizeof(inv),
                     "INVITE sip:a@h.invalid SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKcore1\r\n"
                     "Route: <sip:%.*s@127.0.0.1:5070;lr>\r\n"
                     "From: <sip:b@example.com>;tag=2\r\nTo: <sip:a@example.com>\r\n"
                     "Call-ID: call1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                     (int)g_ws_token_len, g_ws_token);
    struct sockaddr_in reg_sa = {.sin_family = AF_INET, .sin_port = htons(5080)};
    reg_sa.sin_addr.s_addr = htonl(0x7f000001);
    edge_rx_core(g_edge, inv, (size_t)n, (struct sockaddr *)&reg_sa, g_now);
    g_branch_len = grab(";branch=", "\r;", g_branch, sizeof(g_branch));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_edge)
        setup();
    if (size < 1)
        return 0;
    /* First byte: which door, and which client port (a few flows get reused). */
    uint8_t sel = data[0];
    const char *msg = (const char *)data + 1;
    size_t len = size - 1;
    g_now += 37;
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(5060 + (sel >> 4))};
    src.sin_addr.s_addr = htonl(0xc0000200 + (sel & 3));
    bool alias = (sel & 0x10) != 0;
    if (g_pol.nat_contact_alias != alias) {
        g_pol.nat_contact_alias = alias;
        edge_set_policy(g_edge, &g_pol);
    }
    switch (sel & 0x0c) {
    case 0x00:
        edge_rx_public(g_edge, 0, msg, len, (struct sockaddr *)&src, g_now);
        break;
    case 0x04:
        edge_rx_flow(g_edge, g_ws_ref, g_core_msg, with_subst(msg, len, 'B', g_branch, g_branch_len),
                     g_now);
        break;
    default: {
        struct sockaddr_in reg = {.sin_family = AF_INET, .sin_port = htons(5080)};
        reg.sin_addr.s_addr = htonl(0x7f000001);
        edge_rx_core(g_edge, g_core_msg, with_token(msg, len), (struct sockaddr *)&reg, g_now);
        break;
    }
    }
    if ((sel & 0xf0) == 0xf0)
        edge_tick(g_edge, g_now);
    return 0;
}
