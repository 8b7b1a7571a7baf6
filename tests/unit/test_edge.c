#define _GNU_SOURCE
/*
 * edge: the relay decisions and rewrites, driven with raw SIP and explicit time.
 *
 * A fake tx_out records every datagram (socket, destination, bytes); assertions parse
 * the recorded messages with sip_msg_parse and the sip_hdr parsers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/statefile.h"
#include "sipedge/flow_token.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

#include "edge_rec.h"

#define TORTURE_DIR TEST_DATA_DIR "/sip/torture/"

/* ---- fixture ---------------------------------------------------------------------------- */

struct fixture {
    struct config cfg;
    struct policy pol;
    struct edge *e;
    struct flow_token_keys *keys; /* same key as the edge, to read and forge tokens */
    struct sockaddr_in client;    /* 192.0.2.10:40000 (behind NAT, Via says :5060) */
    struct sockaddr_in client2;   /* 192.0.2.20:40002 */
    struct sockaddr_in stranger;  /* 198.51.100.66:5080, not a core peer */
};

static struct fixture fx_storage;

static const struct sockaddr *registrar(const struct fixture *fx)
{
    return (const struct sockaddr *)&fx->cfg.registrar.ss;
}

static int edge_build(struct fixture *fx)
{
    struct edge_opts o = {.cfg = &fx->cfg,
                          .policy = &fx->pol,
                          .worker = 2,
                          .out = {.reserve = out_reserve, .commit = out_commit, .ctx = fx}};
    edge_free(fx->e);
    fx->e = NULL;
    return edge_new(&fx->e, &o);
}

static int setup(void **state)
{
    struct fixture *fx = &fx_storage;

    memset(fx, 0, sizeof(*fx));
    config_defaults(&fx->cfg);
    if (config_addr_parse("127.0.0.1:5060", &fx->cfg.listen_udp[0]) != 0 ||
        config_addr_parse("127.0.0.1:5062", &fx->cfg.listen_udp[1]) != 0 ||
        config_addr_parse("127.0.0.1:5070", &fx->cfg.core) != 0 ||
        config_addr_parse("127.0.0.1:5080", &fx->cfg.registrar) != 0)
        return -1;
    fx->cfg.n_listen_udp = 1;
    for (int i = 0; i < 32; i++)
        fx->cfg.flow_key[i] = (uint8_t)(0x40 + i);
    fx->cfg.has_flow_key = true;
    policy_defaults(&fx->pol);
    if (flow_token_keys_new(&fx->keys, fx->cfg.flow_key, NULL) != 0)
        return -1;
    fx->client = v4("192.0.2.10", 40000);
    fx->client2 = v4("192.0.2.20", 40002);
    fx->stranger = v4("198.51.100.66", 5080);
    sent_reset();
    if (edge_build(fx) != 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    edge_free(fx->e);
    fx->e = NULL;
    flow_token_keys_free(fx->keys);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static size_t count_sent_to(const struct sockaddr *dst)
{
    size_t n = 0;

    for (size_t i = 0; i < n_sent; i++)
        n += addr_eq(&sent[i].dst, dst);
    return n;
}

static void rx_pub(struct fixture *fx, uint8_t sock, const char *msg, size_t len,
                   const struct sockaddr_in *src, uint64_t now_ms)
{
    edge_rx_public(fx->e, sock, msg, len, (const struct sockaddr *)src, now_ms);
}

static void rx_core(struct fixture *fx, const char *msg, size_t len, const struct sockaddr *src,
                    uint64_t now_ms)
{
    edge_rx_core(fx->e, msg, len, src, now_ms);
}

static const struct sip_hdr *nth_hdr(const struct sip_msg *m, enum sip_hdr_id id, unsigned n)
{
    const struct sip_hdr *h = sip_msg_hdr(m, id);

    while (h && n--)
        h = sip_msg_hdr_next(m, h);
    return h;
}

/* The n-th Via element of a message, counting elements across lines. */
static bool nth_via(const struct sip_msg *m, unsigned n, struct sip_via *via)
{
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_VIA); h; h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;
        while (slice_trim(rest).len) {
            struct slice r = slice_trim(rest);
            if (r.p[0] == ',')
                r = slice_make(r.p + 1, r.len - 1);
            if (sip_via_parse(r, via, &rest) != 0)
                return false;
            if (n-- == 0)
                return true;
        }
    }
    return false;
}

static unsigned n_vias(const struct sip_msg *m)
{
    struct sip_via v;
    unsigned n = 0;

    while (nth_via(m, n, &v))
        n++;
    return n;
}

static bool msg_has_text(size_t i, const char *needle)
{
    return strstr(sent[i].buf, needle) != NULL;
}

static uint32_t max_forwards_of(const struct sip_msg *m)
{
    const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS);
    uint32_t v = 0;

    assert_non_null(h);
    assert_null(sip_msg_hdr_next(m, h));
    assert_int_equal(slice_to_u32(h->value, 255, &v), 0);
    return v;
}

/* ---- messages --------------------------------------------------------------------------- */

#define CLIENT_VIA "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKc1ient1;rport\r\n"
#define OUTBOUND_CONTACT_PARAMS                                                                    \
    ";reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\""
#define IDENTITY_LINES                                                                             \
    "P-Asserted-Identity: <sip:admin@example.com>\r\n"                                             \
    "P-Preferred-Identity: <sip:boss@example.com>\r\n"

static char msg[65536];

static size_t fmt_register(const char *vias, const char *contact_params, const char *extra)
{
    int n = snprintf(msg, sizeof(msg),
                     "REGISTER sip:example.com SIP/2.0\r\n"
                     "%s"
                     "From: <sip:alice@example.com>;tag=a1\r\n"
                     "To: <sip:alice@example.com>\r\n"
                     "Call-ID: reg-1@192.0.2.10\r\n"
                     "CSeq: 1 REGISTER\r\n"
                     "Contact: <sip:alice@192.0.2.10:5060>%s\r\n"
                     "%s"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: 5\r\n"
                     "\r\n"
                     "hello",
                     vias, contact_params, extra);
    assert_true(n > 0 && (size_t)n < sizeof(msg));
    return (size_t)n;
}

static size_t fmt_default_register(void)
{
    return fmt_register(CLIENT_VIA, OUTBOUND_CONTACT_PARAMS,
                        "Max-Forwards: 70\r\n" IDENTITY_LINES "Expires: 600\r\n");
}

/* Sends the default REGISTER from fx->client on sock 0 and returns the relayed copy. */
static void register_client(struct fixture *fx, struct parsed *fwd, uint64_t now_ms)
{
    size_t len = fmt_default_register();

    sent_reset();
    rx_pub(fx, 0, msg, len, &fx->client, now_ms);
    assert_int_equal(n_sent, 1);
    parse_sent(0, fwd);
}

/* The flow token from the first Path of a relayed REGISTER, NUL-terminated. */
static void path_token(const struct parsed *fwd, char tok[FLOW_TOKEN_MAX])
{
    const struct sip_hdr *h = sip_msg_hdr(&fwd->m, SIP_HDR_PATH);
    struct sip_nameaddr na;
    struct sip_uri u;
    struct slice rest;
    bool is_sip;

    assert_non_null(h);
    assert_int_equal(sip_nameaddr_parse(h->value, &na, &rest), 0);
    assert_int_equal(sip_uri_parse(na.uri, &u, &is_sip), 0);
    assert_true(is_sip);
    assert_true(u.user.len > 0 && u.user.len < FLOW_TOKEN_MAX);
    memcpy(tok, u.user.p, u.user.len);
    tok[u.user.len] = '\0';
}

/*
 * A response to a relayed request: the request's Via lines, From, To, Call-ID and CSeq
 * copied as they are, then extra lines. Written into out (not msg: the request may live there).
 */
static size_t fmt_response_to(const struct parsed *req, const char *status_line,
                              const char *extra, char *out, size_t cap)
{
    size_t n = 0;

    n += (size_t)snprintf(out + n, cap - n, "SIP/2.0 %s\r\n", status_line);
    for (uint16_t i = 0; i < req->m.n_hdrs; i++) {
        const struct sip_hdr *h = &req->m.hdrs[i];
        if (h->id == SIP_HDR_VIA || h->id == SIP_HDR_FROM || h->id == SIP_HDR_TO ||
            h->id == SIP_HDR_CALL_ID || h->id == SIP_HDR_CSEQ) {
            assert_true(n + h->line_len < cap);
            memcpy(out + n, req->m.buf + h->off, h->line_len);
            n += h->line_len;
        }
    }
    n += (size_t)snprintf(out + n, cap - n, "%sContent-Length: 0\r\n\r\n", extra);
    assert_true(n < cap);
    return n;
}

/* An INVITE from the registrar routed over a Path token. */
static size_t fmt_inbound_invite(const char *route_line, const char *extra, char *out,
                                 size_t cap)
{
    int n = snprintf(out, cap,
                     "INVITE sip:alice@192.0.2.10:5060 SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKreg0001\r\n"
                     "%s"
                     "%s"
                     "From: <sip:bob@example.com>;tag=b1\r\n"
                     "To: <sip:alice@example.com>\r\n"
                     "Call-ID: inv-1@127.0.0.1\r\n"
                     "CSeq: 10 INVITE\r\n"
                     "Contact: <sip:bob@127.0.0.1:5080>\r\n"
                     "Content-Length: 0\r\n"
                     "\r\n",
                     route_line, extra);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static size_t fmt_route_invite(const char *tok, const char *extra, char *out, size_t cap)
{
    char route[256];

    snprintf(route, sizeof(route), "Route: <sip:%s@127.0.0.1:5070;lr>\r\n", tok);
    return fmt_inbound_invite(route, extra, out, cap);
}

static const struct edge_stats *st(const struct fixture *fx) { return edge_stats(fx->e); }

/* Runs enough ticks at now_ms for the sweep to visit every slot once. */
static void tick_all(struct fixture *fx, uint64_t now_ms)
{
    for (uint32_t i = 0; i < fx->pol.max_flows; i++)
        edge_tick(fx->e, now_ms);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void test_edge_new_rejects_zero_flow_capacity_cleanly(void **state)
{
    struct fixture *fx = *state;

    fx->pol.max_flows = 0;
    assert_int_equal(edge_build(fx), -EINVAL);
    assert_null(fx->e);
    edge_free(NULL);
}

static void test_edge_stats_format_names_every_counter(void **state)
{
    struct fixture *fx = *state;
    char buf[2048];

    rx_pub(fx, 0, "\r\n\r\n", 4, &fx->client, 0);
    edge_stats_format(fx->e, buf, sizeof(buf));
    assert_non_null(strstr(buf, "rx_public=1"));
    assert_non_null(strstr(buf, "keepalive_pong=1"));
    assert_non_null(strstr(buf, "tx_overflow=0"));
    assert_non_null(strstr(buf, "flows=0"));
}

/* ---- REGISTER from a client ------------------------------------------------------------ */

static void test_edge_register_is_relayed_once_to_registrar_over_core_socket(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    register_client(fx, &fwd, 1000);
    assert_int_equal(sent[0].sock, EDGE_SOCK_CORE);
    assert_true(addr_eq(&sent[0].dst, registrar(fx)));
    assert_true(fwd.m.is_request);
    assert_int_equal(fwd.m.method_id, SIP_METHOD_REGISTER);
    assert_slice_equal(fwd.m.ruri, "sip:example.com");
    assert_int_equal(st(fx)->relayed_register, 1);
    assert_int_equal(st(fx)->flows_created, 1);
    assert_int_equal(edge_n_flows(fx->e), 1);
    assert_int_equal(n_overflow, 0);
}

static void test_edge_register_top_via_is_ours_with_flow_token(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_via via;
    struct slice fl;
    struct flow_token_fields tf;

    register_client(fx, &fwd, 1000);
    assert_true(nth_via(&fwd.m, 0, &via));
    assert_slice_equal(via.transport, "UDP");
    assert_slice_equal(via.host, "127.0.0.1");
    assert_int_equal(via.port, 5070);
    assert_true(via.branch.len > 7);
    assert_true(slice_is(slice_make(via.branch.p, 7), "z9hG4bK"));
    assert_false(slice_is(via.branch, "z9hG4bKc1ient1"));
    assert_true(sip_params_get(via.params, "fl", &fl));
    assert_int_equal(flow_token_decode(fx->keys, fl, &tf), 0);
    assert_int_equal(tf.worker, 2);
    assert_int_equal(tf.remote.sa.sa_family, AF_INET);
    assert_int_equal(tf.remote.in.sin_addr.s_addr, fx->client.sin_addr.s_addr);
    assert_int_equal(tf.remote.in.sin_port, fx->client.sin_port);
    /* Ours is the first Via line, before the client's. */
    assert_int_equal(n_vias(&fwd.m), 2);
    assert_int_equal(fwd.m.hdrs[0].id, SIP_HDR_VIA);
}

static void test_edge_register_client_via_gets_received_and_filled_rport(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_via via;

    register_client(fx, &fwd, 0);
    assert_true(nth_via(&fwd.m, 1, &via));
    assert_slice_equal(via.host, "192.0.2.10");
    assert_int_equal(via.port, 5060);
    assert_slice_equal(via.branch, "z9hG4bKc1ient1");
    assert_slice_equal(via.received, "192.0.2.10");
    assert_true(via.has_rport);
    assert_slice_equal(via.rport, "40000");
}

static void test_edge_register_client_via_without_rport_gets_received_only(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_via via;

    size_t len = fmt_register("Via: SIP/2.0/UDP client.example.com;branch=z9hG4bKnorport\r\n",
                              "", "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &fwd);
    assert_true(nth_via(&fwd.m, 1, &via));
    assert_slice_equal(via.host, "client.example.com");
    assert_slice_equal(via.received, "192.0.2.10");
    assert_false(via.has_rport);
}

static void test_edge_register_client_received_and_rport_values_are_replaced(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_via via;

    size_t len = fmt_register(
        "Via: SIP/2.0/UDP 192.0.2.10:5060;received=203.0.113.66;branch=z9hG4bKspoof;rport=1\r\n",
        "", "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &fwd);
    assert_true(nth_via(&fwd.m, 1, &via));
    assert_slice_equal(via.branch, "z9hG4bKspoof");
    assert_slice_equal(via.received, "192.0.2.10");
    assert_slice_equal(via.rport, "40000");
    assert_false(msg_has_text(0, "203.0.113.66"));
}

static void test_edge_register_path_is_ours_alone_and_carries_the_flow_token(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_via via;
    struct slice fl;
    char tok[FLOW_TOKEN_MAX], want[160];

    size_t len = fmt_register(CLIENT_VIA, OUTBOUND_CONTACT_PARAMS,
                              "Path: <sip:other@198.51.100.1;lr>\r\n");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &fwd);
    path_token(&fwd, tok);
    snprintf(want, sizeof(want), "<sip:%s@127.0.0.1:5070;lr;ob>", tok);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);
    /* The Path token and the Via token name the same flow. */
    assert_true(nth_via(&fwd.m, 0, &via));
    assert_true(sip_params_get(via.params, "fl", &fl));
    assert_slice_equal(fl, tok);
    /* A client's own Path would make the registrar route to an address of the client's
     * choosing: it is stripped, ours is the only one. */
    assert_null(nth_hdr(&fwd.m, SIP_HDR_PATH, 1));
    assert_int_equal(fwd.m.count[SIP_HDR_PATH], 1);
    assert_int_equal(st(fx)->path_stripped, 1);
}

static void test_edge_register_ob_only_with_reg_id_and_a_single_via(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX], want[160];
    const char *two_via_lines =
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtwo1;rport\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKtwo2\r\n";
    const char *two_via_elems =
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtwo3;rport, "
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKtwo4\r\n";

    /* reg-id and one Via: ;ob (checked exactly in the Path test above). */
    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    snprintf(want, sizeof(want), "<sip:%s@127.0.0.1:5070;lr;ob>", tok);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);

    /* No reg-id: no ;ob. */
    sent_reset();
    size_t len = fmt_register(CLIENT_VIA, ";expires=600", "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    snprintf(want, sizeof(want), "<sip:%s@127.0.0.1:5070;lr>", tok);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);

    /* reg-id but two Via lines: the client is not the first hop. */
    sent_reset();
    len = fmt_register(two_via_lines, OUTBOUND_CONTACT_PARAMS, "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);

    /* reg-id but two Via elements on one line. */
    sent_reset();
    len = fmt_register(two_via_elems, OUTBOUND_CONTACT_PARAMS, "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);
    assert_int_equal(n_vias(&fwd.m), 3);

    /* reg-id on the second of two Contacts still asks for outbound. */
    sent_reset();
    len = fmt_register(CLIENT_VIA, ", <sip:alice@192.0.2.10:5062>;reg-id=2", "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    snprintf(want, sizeof(want), "<sip:%s@127.0.0.1:5070;lr;ob>", tok);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);
}

static void test_edge_register_adds_supported_path_once(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    unsigned n_path_tags = 0;

    register_client(fx, &fwd, 0);
    assert_int_equal(fwd.m.count[SIP_HDR_SUPPORTED], 1);
    assert_true(sip_tag_list_has(sip_msg_hdr(&fwd.m, SIP_HDR_SUPPORTED)->value, "path"));

    sent_reset();
    size_t len = fmt_register(CLIENT_VIA, "", "Supported: outbound, path\r\n");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    for (const struct sip_hdr *h = sip_msg_hdr(&fwd.m, SIP_HDR_SUPPORTED); h;
         h = sip_msg_hdr_next(&fwd.m, h))
        n_path_tags += sip_tag_list_has(h->value, "path");
    assert_int_equal(n_path_tags, 1);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_SUPPORTED)->value, "outbound, path");
}

static void test_edge_register_max_forwards_decremented_or_inserted(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    register_client(fx, &fwd, 0);
    assert_int_equal(max_forwards_of(&fwd.m), 69);

    sent_reset();
    size_t len = fmt_register(CLIENT_VIA, "", "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    assert_int_equal(max_forwards_of(&fwd.m), 69);

    sent_reset();
    len = fmt_register(CLIENT_VIA, "", "Max-Forwards: 1\r\n");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    parse_sent(0, &fwd);
    assert_int_equal(max_forwards_of(&fwd.m), 0);
}

static void test_edge_register_strips_client_identity_headers(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    register_client(fx, &fwd, 0);
    assert_null(sip_msg_hdr(&fwd.m, SIP_HDR_P_ASSERTED_IDENTITY));
    assert_null(sip_msg_hdr(&fwd.m, SIP_HDR_P_PREFERRED_IDENTITY));
    assert_false(msg_has_text(0, "admin@example.com"));
    assert_false(msg_has_text(0, "boss@example.com"));
    /* Everything else of the client's survives. */
    assert_non_null(sip_msg_hdr(&fwd.m, SIP_HDR_EXPIRES)); /* its value is policy's */
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_CALL_ID)->value, "reg-1@192.0.2.10");
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_FROM)->value, "<sip:alice@example.com>;tag=a1");
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_CONTACT)->value,
                       "<sip:alice@192.0.2.10:5060>" OUTBOUND_CONTACT_PARAMS);
}

static void test_edge_register_keeps_body_and_content_length(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    size_t len = fmt_default_register();
    /* Bytes after the body in the same datagram are not part of the message. */
    memcpy(msg + len, "TRAILING", 9);
    rx_pub(fx, 0, msg, len + 8, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &fwd);
    assert_int_equal(fwd.m.content_length, 5);
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_CONTENT_LENGTH)->value, "5");
    assert_slice_equal(fwd.m.body, "hello");
    assert_int_equal(fwd.m.len, sent[0].len);
    assert_false(msg_has_text(0, "TRAILING"));
    assert_true(sent[0].len >= 9 && memcmp(sent[0].buf + sent[0].len - 9, "\r\n\r\nhello", 9) == 0);
}

/* ---- branches --------------------------------------------------------------------------- */

static void top_branch(size_t i, char *out, size_t cap)
{
    struct parsed p;
    struct sip_via via;

    parse_sent(i, &p);
    assert_true(nth_via(&p.m, 0, &via));
    assert_true(via.branch.len < cap);
    memcpy(out, via.branch.p, via.branch.len);
    out[via.branch.len] = '\0';
}

/* Copies a message without the ";t=<hex>" parameter of the first Via. */
static size_t strip_via_time(const char *in, size_t len, char *out, size_t cap)
{
    const char *t = memmem(in, len, ";t=", 3);
    size_t n = 0;
    if (!t || len > cap) {
        memcpy(out, in, len < cap ? len : cap);
        return len < cap ? len : cap;
    }
    size_t pre = (size_t)(t - in);
    memcpy(out, in, pre);
    n = pre;
    const char *p = t + 3;
    while (p < in + len && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
        p++;
    memcpy(out + n, p, (size_t)(in + len - p));
    return n + (size_t)(in + len - p);
}

static void test_edge_retransmission_keeps_branch_new_transaction_changes_it(void **state)
{
    struct fixture *fx = *state;
    char b0[64], b1[64], b2[64];

    size_t len = fmt_default_register();
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    rx_pub(fx, 0, msg, len, &fx->client, 500);
    assert_int_equal(n_sent, 2);
    /* Identical but for our Via's ;t= relay timestamp (used for the latency histogram). */
    char a[8192], b[8192];
    size_t na = strip_via_time(sent[0].buf, sent[0].len, a, sizeof(a));
    size_t nb = strip_via_time(sent[1].buf, sent[1].len, b, sizeof(b));
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    top_branch(0, b0, sizeof(b0));
    top_branch(1, b1, sizeof(b1));
    assert_string_equal(b0, b1);

    len = fmt_register("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKc1ient2;rport\r\n",
                       OUTBOUND_CONTACT_PARAMS, "");
    rx_pub(fx, 0, msg, len, &fx->client, 1000);
    assert_int_equal(n_sent, 3);
    top_branch(2, b2, sizeof(b2));
    assert_string_not_equal(b0, b2);
    assert_true(strncmp(b2, "z9hG4bK", 7) == 0);
}

static void test_edge_rfc2543_request_without_branch_gets_a_stable_branch(void **state)
{
    struct fixture *fx = *state;
    char b0[64], b1[64], b2[64];

    size_t len = fmt_register("Via: SIP/2.0/UDP 192.0.2.10:5060\r\n", "", "");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    memcpy(strstr(msg, "Call-ID: reg-1"), "Call-ID: reg-2", 14);
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(n_sent, 3);
    top_branch(0, b0, sizeof(b0));
    top_branch(1, b1, sizeof(b1));
    top_branch(2, b2, sizeof(b2));
    assert_true(strncmp(b0, "z9hG4bK", 7) == 0);
    assert_string_equal(b0, b1);
    assert_string_not_equal(b0, b2);
}

static void test_edge_same_branch_from_another_source_port_gets_another_branch(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in same_ip_other_port = v4("192.0.2.10", 40001);
    char b0[64], b1[64];

    size_t len = fmt_default_register();
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    rx_pub(fx, 0, msg, len, &same_ip_other_port, 0);
    assert_int_equal(n_sent, 2);
    top_branch(0, b0, sizeof(b0));
    top_branch(1, b1, sizeof(b1));
    /* Two sources differing only in port are different transactions. */
    assert_string_not_equal(b0, b1);
}

static void test_edge_cancel_gets_the_branch_of_the_invite_it_cancels(void **state)
{
    struct fixture *fx = *state;
    char b_inv[64], b_can[64];
    static const char invite[] = "INVITE sip:bob@example.com SIP/2.0\r\n"
                                 "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport\r\n"
                                 "Max-Forwards: 70\r\n"
                                 "From: <sip:alice@example.com>;tag=a1\r\n"
                                 "To: <sip:bob@example.com>\r\n"
                                 "Call-ID: call-1@192.0.2.10\r\n"
                                 "CSeq: 1 INVITE\r\n"
                                 "Contact: <sip:alice@192.0.2.10:5060>\r\n"
                                 "Content-Length: 0\r\n"
                                 "\r\n";
    static const char cancel[] = "CANCEL sip:bob@example.com SIP/2.0\r\n"
                                 "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport\r\n"
                                 "Max-Forwards: 70\r\n"
                                 "From: <sip:alice@example.com>;tag=a1\r\n"
                                 "To: <sip:bob@example.com>\r\n"
                                 "Call-ID: call-1@192.0.2.10\r\n"
                                 "CSeq: 1 CANCEL\r\n"
                                 "Content-Length: 0\r\n"
                                 "\r\n";

    rx_pub(fx, 0, invite, sizeof(invite) - 1, &fx->client, 0);
    rx_pub(fx, 0, cancel, sizeof(cancel) - 1, &fx->client, 100);
    assert_int_equal(n_sent, 2);
    assert_int_equal(count_sent_to(registrar(fx)), 2);
    assert_int_equal(st(fx)->relayed_request, 2);
    top_branch(0, b_inv, sizeof(b_inv));
    top_branch(1, b_can, sizeof(b_can));
    /* Downstream matches a CANCEL to its INVITE by branch (RFC 3261 §9.2, §16.11). */
    assert_string_equal(b_inv, b_can);
}

/* ---- responses from the registrar -------------------------------------------------------- */

static char resp[8192];

static void test_edge_registrar_response_goes_to_client_without_our_via(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    struct sip_via via;

    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "200 OK", "Contact: <sip:alice@192.0.2.10:5060>;expires=600\r\n",
                                 resp, sizeof(resp));
    sent_reset();
    rx_core(fx, resp, len, registrar(fx), 10);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, 0);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    parse_sent(0, &out);
    assert_false(out.m.is_request);
    assert_int_equal(out.m.status, 200);
    assert_int_equal(n_vias(&out.m), 1);
    assert_true(nth_via(&out.m, 0, &via));
    assert_slice_equal(via.branch, "z9hG4bKc1ient1");
    assert_slice_equal(via.received, "192.0.2.10");
    assert_false(msg_has_text(0, "127.0.0.1:5070"));
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_CALL_ID)->value, "reg-1@192.0.2.10");
    /* The granted expires may be shortened for NATed clients; the binding is the same. */
    assert_true(slice_case_prefix(sip_msg_hdr(&out.m, SIP_HDR_CONTACT)->value,
                                  "<sip:alice@192.0.2.10:5060>;expires="));
    assert_int_equal(st(fx)->relayed_response_to_client, 1);
}

static void test_edge_registrar_response_uses_the_public_socket_of_the_flow(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    fx->cfg.n_listen_udp = 2;
    assert_int_equal(edge_build(fx), 0);
    size_t len = fmt_default_register();
    rx_pub(fx, 1, msg, len, &fx->client, 0);
    rx_pub(fx, 0, msg, len, &fx->client2, 0);
    assert_int_equal(n_sent, 2);
    parse_sent(0, &fwd);
    len = fmt_response_to(&fwd, "200 OK", "", resp, sizeof(resp));
    parse_sent(1, &fwd);
    static char resp2[8192];
    size_t len2 = fmt_response_to(&fwd, "200 OK", "", resp2, sizeof(resp2));
    sent_reset();
    rx_core(fx, resp2, len2, registrar(fx), 0);
    rx_core(fx, resp, len, registrar(fx), 0);
    assert_int_equal(n_sent, 2);
    assert_int_equal(sent[0].sock, 0);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client2)));
    assert_int_equal(sent[1].sock, 1);
    assert_true(addr_eq(&sent[1].dst, SA(fx->client)));
}

static void test_edge_registrar_response_pops_only_our_via_from_a_shared_line(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    struct sip_via ours, theirs;
    char line[512];

    register_client(fx, &fwd, 0);
    assert_true(nth_via(&fwd.m, 0, &ours));
    assert_true(nth_via(&fwd.m, 1, &theirs));
    int n = snprintf(resp, sizeof(resp),
                     "SIP/2.0 401 Unauthorized\r\n"
                     "Via: %.*s , %.*s\r\n"
                     "From: <sip:alice@example.com>;tag=a1\r\n"
                     "To: <sip:alice@example.com>;tag=r1\r\n"
                     "Call-ID: reg-1@192.0.2.10\r\n"
                     "CSeq: 1 REGISTER\r\n"
                     "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n1\"\r\n"
                     "Content-Length: 0\r\n"
                     "\r\n",
                     SLICE_FMT(ours.raw), SLICE_FMT(theirs.raw));
    snprintf(line, sizeof(line), "%.*s", SLICE_FMT(theirs.raw));
    sent_reset();
    rx_core(fx, resp, (size_t)n, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &out);
    assert_int_equal(out.m.status, 401);
    assert_int_equal(out.m.count[SIP_HDR_VIA], 1);
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_VIA)->value, line);
    assert_non_null(sip_msg_hdr(&out.m, SIP_HDR_WWW_AUTHENTICATE));
}

static void test_edge_registrar_100_trying_is_not_forwarded(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "100 Trying", "", resp, sizeof(resp));
    sent_reset();
    rx_core(fx, resp, len, registrar(fx), 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_100_trying, 1);
    /* The same response as a 180 is forwarded (the drop is about 100 only). */
    len = fmt_response_to(&fwd, "180 Ringing", "", resp, sizeof(resp));
    rx_core(fx, resp, len, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
}

static void test_edge_registrar_response_whose_top_via_is_not_ours_is_dropped(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_via ours, theirs;
    struct slice fl;

    register_client(fx, &fwd, 0);
    assert_true(nth_via(&fwd.m, 0, &ours));
    assert_true(nth_via(&fwd.m, 1, &theirs));
    assert_true(sip_params_get(ours.params, "fl", &fl));
    const char *fmt = "SIP/2.0 200 OK\r\n"
                      "Via: %s\r\n"
                      "Via: %.*s\r\n"
                      "From: <sip:alice@example.com>;tag=a1\r\n"
                      "To: <sip:alice@example.com>;tag=r1\r\n"
                      "Call-ID: reg-1@192.0.2.10\r\n"
                      "CSeq: 1 REGISTER\r\n"
                      "Content-Length: 0\r\n"
                      "\r\n";
    char top[512];
    const char *tops[4];
    char t1[256], t2[256], t3[256];
    /* Only the client's Via. */
    snprintf(top, sizeof(top), "%.*s", SLICE_FMT(theirs.raw));
    tops[0] = top;
    /* Our token but another host:port. */
    snprintf(t1, sizeof(t1), "SIP/2.0/UDP 127.0.0.1:5071;branch=%.*s;fl=%.*s",
             SLICE_FMT(ours.branch), SLICE_FMT(fl));
    tops[1] = t1;
    /* Our host and token but a branch we never make. */
    snprintf(t2, sizeof(t2), "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKother;fl=%.*s",
             SLICE_FMT(fl));
    tops[2] = t2;
    /* Our host and branch but no token. */
    snprintf(t3, sizeof(t3), "SIP/2.0/UDP 127.0.0.1:5070;branch=%.*s", SLICE_FMT(ours.branch));
    tops[3] = t3;

    sent_reset();
    for (int i = 0; i < 4; i++) {
        int n = snprintf(resp, sizeof(resp), fmt, tops[i], SLICE_FMT(theirs.raw));
        rx_core(fx, resp, (size_t)n, registrar(fx), 0);
        assert_int_equal(n_sent, 0);
        assert_int_equal(st(fx)->drop_stray_response, (uint64_t)i + 1);
    }
    assert_int_equal(st(fx)->relayed_response_to_client, 0);
}

static void test_edge_registrar_response_with_tampered_token_is_dropped(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "200 OK", "", resp, sizeof(resp));
    char *fl = strstr(resp, ";fl=");
    assert_non_null(fl);
    fl[4 + 5] = fl[4 + 5] == 'A' ? 'B' : 'A';
    sent_reset();
    rx_core(fx, resp, len, registrar(fx), 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_stray_response, 1);
    assert_int_equal(st(fx)->relayed_response_to_client, 0);
}

static void test_edge_response_from_non_core_peer_is_dropped(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "200 OK", "", resp, sizeof(resp));
    sent_reset();
    rx_core(fx, resp, len, SA(fx->stranger), 0);
    /* Right address, wrong port. */
    struct sockaddr_in near = v4("127.0.0.1", 5081);
    rx_core(fx, resp, len, SA(near), 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_non_core_peer, 2);
    /* The very same bytes from the registrar are relayed. */
    rx_core(fx, resp, len, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
}

static void test_edge_configured_core_peer_is_trusted(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    assert_int_equal(config_addr_parse("198.51.100.66:5080", &fx->cfg.core_peers[0]), 0);
    fx->cfg.n_core_peers = 1;
    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "200 OK", "", resp, sizeof(resp));
    sent_reset();
    rx_core(fx, resp, len, SA(fx->stranger), 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(st(fx)->drop_non_core_peer, 0);
}

/* ---- inbound requests (registrar → client over the Path) -------------------------------- */

static char inv[8192];

static void test_edge_inbound_request_follows_path_token_to_client(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    struct sip_via via;
    char tok[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    size_t len = fmt_route_invite(tok, "Max-Forwards: 70\r\n", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 10);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, 0);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    parse_sent(0, &out);
    assert_true(out.m.is_request);
    assert_int_equal(out.m.method_id, SIP_METHOD_INVITE);
    assert_slice_equal(out.m.ruri, "sip:alice@192.0.2.10:5060");
    assert_null(sip_msg_hdr(&out.m, SIP_HDR_ROUTE));
    assert_false(msg_has_text(0, tok));
    assert_int_equal(n_vias(&out.m), 2);
    assert_true(nth_via(&out.m, 0, &via));
    assert_slice_equal(via.host, "127.0.0.1");
    assert_int_equal(via.port, 5060);
    assert_true(via.branch.len > 7 && slice_is(slice_make(via.branch.p, 7), "z9hG4bK"));
    assert_true(nth_via(&out.m, 1, &via));
    assert_slice_equal(via.branch, "z9hG4bKreg0001");
    assert_int_equal(max_forwards_of(&out.m), 69);
    assert_int_equal(st(fx)->inbound_delivered, 1);

    /* Without Max-Forwards one is inserted. */
    len = fmt_route_invite(tok, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 20);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &out);
    assert_int_equal(max_forwards_of(&out.m), 69);
}

static void test_edge_inbound_request_pops_only_our_route(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    char tok[FLOW_TOKEN_MAX], route[512];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    snprintf(route, sizeof(route),
             "Route: <sip:%s@127.0.0.1:5070;lr>, <sip:next@198.51.100.9;lr>\r\n"
             "Route: <sip:last@198.51.100.10;lr>\r\n",
             tok);
    size_t len = fmt_inbound_invite(route, "Max-Forwards: 70\r\n", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &out);
    assert_int_equal(out.m.count[SIP_HDR_ROUTE], 2);
    assert_slice_equal(nth_hdr(&out.m, SIP_HDR_ROUTE, 0)->value, "<sip:next@198.51.100.9;lr>");
    assert_slice_equal(nth_hdr(&out.m, SIP_HDR_ROUTE, 1)->value, "<sip:last@198.51.100.10;lr>");
    assert_false(msg_has_text(0, tok));
}

static void assert_single_reply_to_registrar(const struct fixture *fx, int status)
{
    struct parsed out;

    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, EDGE_SOCK_CORE);
    assert_true(addr_eq(&sent[0].dst, registrar(fx)));
    parse_sent(0, &out);
    assert_false(out.m.is_request);
    assert_int_equal(out.m.status, status);
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_CALL_ID)->value, "inv-1@127.0.0.1");
    struct sip_via via;
    assert_true(nth_via(&out.m, 0, &via));
    assert_slice_equal(via.branch, "z9hG4bKreg0001");
}

static void test_edge_inbound_request_with_tampered_token_gets_403(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    tok[3] = tok[3] == 'x' ? 'y' : 'x';
    size_t len = fmt_route_invite(tok, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_single_reply_to_registrar(fx, 403);
    assert_int_equal(st(fx)->reply_403_bad_token, 1);
    assert_int_equal(st(fx)->inbound_delivered, 0);

    /* Not a token at all. */
    len = fmt_route_invite("alice", "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_single_reply_to_registrar(fx, 403);
}

static void test_edge_stale_udp_token_reaches_the_address_sealed_in_it(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct flow_token_fields tf;
    char tok[FLOW_TOKEN_MAX], stale[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    assert_int_equal(flow_token_decode(fx->keys, slice_make(tok, strlen(tok)), &tf), 0);

    /* Another generation, a slot never used, another worker, another run: each names no
     * flow of this run, and each still reaches the client whose address the MAC seals,
     * over its live flow (no second flow is made for it). */
    struct flow_token_fields variants[4] = {tf, tf, tf, tf};
    variants[0].gen++;
    variants[1].slot += 1000;
    variants[2].worker = 3;
    variants[3].epoch ^= 0x5a5a5a5a;
    for (int i = 0; i < 4; i++) {
        assert_true(flow_token_encode(fx->keys, &variants[i], stale, sizeof(stale)) > 0);
        size_t len = fmt_route_invite(stale, "", inv, sizeof(inv));
        sent_reset();
        rx_core(fx, inv, len, registrar(fx), 0);
        assert_int_equal(n_sent, 1);
        assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    }
    assert_int_equal(st(fx)->reply_430_flow_failed, 0);
    assert_int_equal(st(fx)->flows_recovered, 0);
    assert_int_equal(edge_n_flows(fx->e), 1);

    /* A local socket index we do not have is a token of another configuration: 430. */
    tf.sock = 9;
    assert_true(flow_token_encode(fx->keys, &tf, stale, sizeof(stale)) > 0);
    size_t len = fmt_route_invite(stale, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_single_reply_to_registrar(fx, 430);
}

static void test_edge_udp_flow_is_recreated_from_its_token_after_release(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX];

    fx->pol.max_flows = 4;
    fx->pol.flow_idle_timeout_s = 30;
    assert_int_equal(edge_build(fx), 0);
    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    /* A registrar answer, sent only after the flow is gone. */
    size_t resp_len = fmt_response_to(&fwd, "200 OK", "", resp, sizeof(resp));
    tick_all(fx, 31000);
    assert_int_equal(edge_n_flows(fx->e), 0);
    assert_int_equal(st(fx)->flows_released, 1);

    /* A late registrar response for the gone flow is dropped: a transaction does not
     * outlive its flow. */
    sent_reset();
    rx_core(fx, resp, resp_len, registrar(fx), 31000);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_dead_flow_response, 1);

    /* The registrar still holds the Path: a request reaches the client again. */
    size_t len = fmt_route_invite(tok, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 31000);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, 0);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    assert_int_equal(st(fx)->flows_recovered, 1);
    assert_int_equal(edge_n_flows(fx->e), 1);
    assert_int_equal(st(fx)->reply_430_flow_failed, 0);
}

static void test_edge_inbound_request_with_zero_max_forwards_gets_483(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    size_t len = fmt_route_invite(tok, "Max-Forwards: 0\r\n", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_single_reply_to_registrar(fx, 483);
}

static void test_edge_inbound_request_without_our_route_gets_404(void **state)
{
    struct fixture *fx = *state;

    size_t len = fmt_inbound_invite("Route: <sip:x@198.51.100.9;lr>\r\n", "", inv, sizeof(inv));
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_single_reply_to_registrar(fx, 404);
    sent_reset();
    len = fmt_inbound_invite("", "", inv, sizeof(inv));
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_single_reply_to_registrar(fx, 404);
    assert_int_equal(st(fx)->reply_404_not_routable, 2);
}

static void test_edge_inbound_request_from_non_core_peer_is_dropped(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    size_t len = fmt_route_invite(tok, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, SA(fx->stranger), 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_non_core_peer, 1);
    assert_int_equal(st(fx)->inbound_delivered, 0);
}

/* ---- REGISTER outcomes for the hooks ----------------------------------------------------- */

static struct {
    unsigned n;
    uint16_t status;
    char aor[256];
} outcome;

static void on_register_rec(void *ctx, const struct edge_reg_event *ev)
{
    (void)ctx;
    outcome.n++;
    outcome.status = ev->status;
    snprintf(outcome.aor, sizeof(outcome.aor), "%s", ev->aor);
}

/* With an audit log the hook gets the AOR; without one (is_outcome_only) it gets the
 * status alone and the edge fills no strings. */
static void test_edge_register_outcome_detail_follows_the_hook(void **state)
{
    struct fixture *fx = *state;
    for (int only = 0; only < 2; only++) {
        struct edge *e = NULL;
        struct edge_opts o = {.cfg = &fx->cfg,
                              .policy = &fx->pol,
                              .worker = 2,
                              .hooks = {.on_register = on_register_rec, .is_outcome_only = only},
                              .out = {.reserve = out_reserve, .commit = out_commit, .ctx = fx}};
        assert_int_equal(edge_new(&e, &o), 0);
        memset(&outcome, 0, sizeof(outcome));
        size_t len = fmt_default_register();
        sent_reset();
        edge_rx_public(e, 0, msg, len, SA(fx->client), 0);
        assert_int_equal(n_sent, 1);
        struct parsed fwd;
        parse_sent(0, &fwd);
        char resp_buf[8192];
        size_t rlen = fmt_response_to(&fwd, "200 OK", "Contact: <sip:alice@192.0.2.10:5060>;expires=600\r\n",
                                      resp_buf, sizeof(resp_buf));
        edge_rx_core(e, resp_buf, rlen, registrar(fx), 0);
        assert_int_equal(outcome.n, 1);
        assert_int_equal(outcome.status, 200);
        assert_string_equal(outcome.aor, only ? "" : "sip:alice@example.com");
        edge_free(e);
    }
}

/* ---- a token of another worker ----------------------------------------------------------- */

static struct {
    unsigned n_calls;
    uint8_t worker;
    size_t len;
    bool take;
    char buf[4096];
} foreign;

static bool on_foreign(void *ctx, uint8_t worker, const char *buf, size_t len,
                       const struct sockaddr *src)
{
    (void)ctx;
    (void)src;
    foreign.n_calls++;
    foreign.worker = worker;
    foreign.len = len < sizeof(foreign.buf) ? len : sizeof(foreign.buf);
    memcpy(foreign.buf, buf, foreign.len);
    return foreign.take;
}

/* A core request whose token names another worker of the process goes to that worker
 * (the hook), byte for byte, and this edge sends nothing; when no such worker runs, the
 * edge handles it as a token of an earlier run (UDP: to the address the token seals). */
static void test_edge_core_request_for_another_worker_is_handed_to_it(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0); /* the fixture's edge is worker 2 */
    path_token(&fwd, tok);
    struct edge *other = NULL;
    struct edge_opts o = {.cfg = &fx->cfg,
                          .policy = &fx->pol,
                          .worker = 1,
                          .hooks = {.on_foreign = on_foreign},
                          .out = {.reserve = out_reserve, .commit = out_commit, .ctx = fx}};
    assert_int_equal(edge_new(&other, &o), 0);
    memset(&foreign, 0, sizeof(foreign));
    foreign.take = true;
    size_t len = fmt_route_invite(tok, "Max-Forwards: 70\r\n", inv, sizeof(inv));
    sent_reset();
    edge_rx_core(other, inv, len, registrar(fx), 0);
    assert_int_equal(foreign.n_calls, 1);
    assert_int_equal(foreign.worker, 2);
    assert_int_equal(foreign.len, len);
    assert_memory_equal(foreign.buf, inv, len);
    assert_int_equal(n_sent, 0);
    assert_int_equal(edge_stats(other)->handed_to_owner, 1);
    assert_int_equal(edge_stats(other)->inbound_delivered, 0);

    /* A forged token never reaches the hook: 403 here. */
    char forged[FLOW_TOKEN_MAX];
    memcpy(forged, tok, sizeof(forged));
    forged[3] = forged[3] == 'A' ? 'B' : 'A';
    len = fmt_route_invite(forged, "Max-Forwards: 70\r\n", inv, sizeof(inv));
    sent_reset();
    edge_rx_core(other, inv, len, registrar(fx), 0);
    assert_int_equal(foreign.n_calls, 1);
    assert_int_equal(edge_stats(other)->reply_403_bad_token, 1);

    /* No such worker (the hook declines): delivered here to the sealed address. */
    foreign.take = false;
    len = fmt_route_invite(tok, "Max-Forwards: 70\r\n", inv, sizeof(inv));
    sent_reset();
    edge_rx_core(other, inv, len, registrar(fx), 0);
    assert_int_equal(foreign.n_calls, 2);
    assert_int_equal(n_sent, 1);
    assert_int_equal(edge_stats(other)->handed_to_owner, 1);
    assert_int_equal(edge_stats(other)->inbound_delivered, 1);
    edge_free(other);
}

/* ---- client responses to inbound requests ------------------------------------------------ */

/* Delivers an inbound INVITE to fx->client and returns the delivered copy. */
static void deliver_invite(struct fixture *fx, struct parsed *delivered, uint64_t now_ms)
{
    struct parsed fwd;
    char tok[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, tok);
    size_t len = fmt_route_invite(tok, "Max-Forwards: 70\r\n", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), now_ms);
    assert_int_equal(n_sent, 1);
    parse_sent(0, delivered);
}

static void test_edge_client_response_goes_to_registrar_with_our_via_popped(void **state)
{
    struct fixture *fx = *state;
    struct parsed delivered, out;
    struct sip_via via;

    deliver_invite(fx, &delivered, 0);
    size_t len = fmt_response_to(&delivered, "200 OK",
                                 "Contact: <sip:alice@192.0.2.10:5060>\r\n"
                                 "Content-Type: application/sdp\r\n",
                                 resp, sizeof(resp));
    sent_reset();
    rx_pub(fx, 0, resp, len, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, EDGE_SOCK_CORE);
    assert_true(addr_eq(&sent[0].dst, registrar(fx)));
    parse_sent(0, &out);
    assert_int_equal(out.m.status, 200);
    assert_int_equal(n_vias(&out.m), 1);
    assert_true(nth_via(&out.m, 0, &via));
    assert_slice_equal(via.branch, "z9hG4bKreg0001");
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_CONTACT)->value,
                       "<sip:alice@192.0.2.10:5060>");
    assert_int_equal(st(fx)->relayed_response_to_core, 1);
}

static void test_edge_client_100_trying_is_not_forwarded(void **state)
{
    struct fixture *fx = *state;
    struct parsed delivered;

    deliver_invite(fx, &delivered, 0);
    size_t len = fmt_response_to(&delivered, "100 Trying", "", resp, sizeof(resp));
    sent_reset();
    rx_pub(fx, 0, resp, len, &fx->client, 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_100_trying, 1);
}

static void test_edge_client_stray_response_is_dropped(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    /* A response carrying only the client's own Via (not one we added). */
    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "200 OK", "", resp, sizeof(resp));
    char *second = strstr(resp + 20, "Via: SIP/2.0/UDP 192.0.2.10");
    assert_non_null(second);
    sent_reset();
    static const char head[] = "SIP/2.0 200 OK\r\n";
    memmove(resp + sizeof(head) - 1, second, len - (size_t)(second - resp) + 1);
    len = strlen(resp);
    rx_pub(fx, 0, resp, len, &fx->client, 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_stray_response, 1);

    /* A response whose next hop after our Via is not a core peer. */
    len = (size_t)snprintf(resp, sizeof(resp),
                           "SIP/2.0 200 OK\r\n"
                           "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsE0123456789abcdef\r\n"
                           "Via: SIP/2.0/UDP 198.51.100.66:5080;branch=z9hG4bKx\r\n"
                           "From: <sip:a@example.com>;tag=1\r\n"
                           "To: <sip:b@example.com>;tag=2\r\n"
                           "Call-ID: c\r\n"
                           "CSeq: 1 INVITE\r\n"
                           "Content-Length: 0\r\n"
                           "\r\n");
    rx_pub(fx, 0, resp, len, &fx->client, 0);
    assert_int_equal(n_sent, 0);
    /* Our branch prefix without our tag for it: a forgery. */
    assert_int_equal(st(fx)->drop_stray_response, 1);
    assert_int_equal(st(fx)->drop_forged_response, 1);
    assert_int_equal(st(fx)->relayed_response_to_core, 0);
}

/* ---- flow lifetime ---------------------------------------------------------------------- */

/* ---- trust boundary: what a public client must not make the edge do ----------------- */

/* A client response crafted with our branch prefix and a registrar below it. */
static void test_edge_forged_response_with_our_branch_prefix_is_not_relayed(void **state)
{
    struct fixture *fx = *state;

    /* The attacker has a flow of its own (any request makes one). */
    register_client(fx, &(struct parsed){0}, 0);
    for (unsigned i = 0; i < 4; i++) {
        size_t len = (size_t)snprintf(
            resp, sizeof(resp),
            "SIP/2.0 430 Flow Failed\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsE%016x%016x\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK0123456789abcdef;sb=%u.0\r\n"
            "From: <sip:a@example.com>;tag=1\r\n"
            "To: <sip:alice@example.com>;tag=2\r\n"
            "Call-ID: c%u\r\n"
            "CSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n"
            "\r\n",
            i, i, i, i);
        sent_reset();
        rx_pub(fx, 0, resp, len, &fx->client, 0);
        assert_int_equal(n_sent, 0);
    }
    assert_int_equal(st(fx)->drop_forged_response, 4);
    assert_int_equal(st(fx)->relayed_response_to_core, 0);
}

/* A real delivered request: its response is relayed only unchanged, over its own flow. */
static void test_edge_response_to_a_delivered_request_cannot_be_redirected(void **state)
{
    struct fixture *fx = *state;
    struct parsed delivered;

    deliver_invite(fx, &delivered, 0);
    size_t len = fmt_response_to(&delivered, "200 OK", "", resp, sizeof(resp));

    /* From another client (its own flow): refused. */
    rx_pub(fx, 0, "OPTIONS sip:x@example.com SIP/2.0\r\n" CLIENT_VIA
                  "From: <sip:m@example.com>;tag=m\r\nTo: <sip:x@example.com>\r\n"
                  "Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
           strlen("OPTIONS sip:x@example.com SIP/2.0\r\n" CLIENT_VIA
                  "From: <sip:m@example.com>;tag=m\r\nTo: <sip:x@example.com>\r\n"
                  "Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"),
           &fx->client2, 0);
    sent_reset();
    rx_pub(fx, 0, resp, len, &fx->client2, 0);
    assert_int_equal(n_sent, 0);

    /* The right flow, but the next hop's branch, the Call-ID or the CSeq changed. */
    static const char *const from[] = {"branch=z9hG4bKreg0001", "Call-ID: inv-1@", "CSeq: 10 "};
    static const char *const to[] = {"branch=z9hG4bKreg0002", "Call-ID: inv-2@", "CSeq: 11 "};
    for (size_t i = 0; i < 3; i++) {
        char bad[8192];
        len = fmt_response_to(&delivered, "200 OK", "", bad, sizeof(bad));
        char *p = strstr(bad, from[i]);
        assert_non_null(p);
        memcpy(p, to[i], strlen(to[i]));
        sent_reset();
        rx_pub(fx, 0, bad, len, &fx->client, 0);
        assert_int_equal(n_sent, 0);
    }
    assert_int_equal(st(fx)->drop_forged_response, 4);

    /* Unchanged, from the client it was delivered to: relayed. */
    sent_reset();
    rx_pub(fx, 0, resp, strlen(resp), &fx->client, 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(st(fx)->relayed_response_to_core, 1);
}

static size_t fmt_reg_for(char *out, size_t cap, const char *user, unsigned cseq, bool cred)
{
    int n = snprintf(out, cap,
                     "REGISTER sip:example.com SIP/2.0\r\n" CLIENT_VIA
                     "From: <sip:%s@example.com>;tag=a1\r\n"
                     "To: <sip:%s@example.com>\r\n"
                     "Call-ID: same-call-id\r\n"
                     "CSeq: %u REGISTER\r\n"
                     "Contact: <sip:%s@192.0.2.10:5060>;expires=600\r\n"
                     "%s"
                     "Content-Length: 0\r\n\r\n",
                     user, user, cseq, user,
                     cred ? "Authorization: Digest username=\"bob\", realm=\"x\", nonce=\"n\", "
                            "uri=\"sip:example.com\", response=\"r\"\r\n"
                          : "");
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* The registrar's answer to the request relayed last (sent[0]), with extra lines. */
static void answer_last(struct fixture *fx, const char *status, const char *extra, uint64_t now)
{
    struct parsed fwd;
    parse_sent(0, &fwd);
    size_t len = fmt_response_to(&fwd, status, extra, resp, sizeof(resp));
    sent_reset();
    rx_core(fx, resp, len, registrar(fx), now);
}

/* One flow, one Call-ID: bob's authenticated 2xx must not vouch for alice. */
static void test_edge_2xx_confirms_only_the_aor_of_its_own_request(void **state)
{
    struct fixture *fx = *state;
    char m[2048];

    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 1, false), &fx->client, 0);
    answer_last(fx, "401 Unauthorized", "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n", 1);
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "alice", 2, false), &fx->client, 2);
    answer_last(fx, "401 Unauthorized", "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n", 3);
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 3, true), &fx->client, 4);
    answer_last(fx, "200 OK", "Contact: <sip:bob@192.0.2.10:5060>;expires=600\r\n", 5);

    /* alice's refresh is not answered from the cache: it goes to the registrar. */
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "alice", 4, false), &fx->client, 1000);
    assert_int_equal(st(fx)->regcache_hit, 0);
    assert_int_equal(count_sent_to(registrar(fx)), 1);
    /* bob's own refresh is. */
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 5, false), &fx->client, 2000);
    assert_int_equal(st(fx)->regcache_hit, 1);
}

/* An unauthenticated REGISTER spoofed onto a victim's UDP flow changes nothing the edge
 * acts on: the cache still answers for the victim's confirmed contacts. */
static void test_edge_unconfirmed_register_changes_no_cached_binding(void **state)
{
    struct fixture *fx = *state;
    char m[2048];

    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 1, true), &fx->client, 0);
    answer_last(fx, "200 OK", "Contact: <sip:bob@192.0.2.10:5060>;expires=600\r\n", 1);
    /* The spoofed removal: relayed (the registrar decides), refused there. */
    size_t len = fmt_reg_for(m, sizeof(m), "bob", 2, false);
    char *e0 = strstr(m, "expires=600");
    memcpy(e0, "expires=000", 11);
    sent_reset();
    rx_pub(fx, 0, m, len, &fx->client, 2);
    assert_int_equal(count_sent_to(registrar(fx)), 1);
    answer_last(fx, "401 Unauthorized", "WWW-Authenticate: Digest realm=\"x\", nonce=\"m\"\r\n", 3);
    /* The victim's refresh is still answered here. */
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 3, false), &fx->client, 1000);
    assert_int_equal(st(fx)->regcache_hit, 1);
}

/* A restart keeps the UDP flow, its registration record and the cache's answer. */
static void test_edge_state_survives_a_restart_and_a_bad_payload_creates_nothing(void **state)
{
    struct fixture *fx = *state;
    char m[2048];

    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 1, true), &fx->client, 0);
    answer_last(fx, "200 OK", "Contact: <sip:bob@192.0.2.10:5060>;expires=600\r\n", 1);
    struct statefile_buf b;
    statefile_buf_init(&b);
    assert_int_equal(edge_state_save(fx->e, 1000, &b), 1);

    /* A truncated payload is refused whole. */
    assert_int_equal(edge_build(fx), 0);
    struct edge_restore_result res;
    char err[128];
    assert_int_equal(edge_state_restore(fx->e, b.p, b.len - 3, EDGE_STATE_VERSION, 5000, &res,
                                        err, sizeof(err)),
                     -EBADMSG);
    assert_int_equal(edge_n_flows(fx->e), 0);
    assert_int_equal(edge_state_restore(fx->e, b.p, b.len, EDGE_STATE_VERSION + 1, 5000, &res,
                                        err, sizeof(err)),
                     -EPROTONOSUPPORT);

    assert_int_equal(edge_state_restore(fx->e, b.p, b.len, EDGE_STATE_VERSION, 5000, &res, err,
                                        sizeof(err)),
                     0);
    assert_int_equal(res.n_flows, 1);
    assert_int_equal(res.n_regs, 1);
    assert_int_equal(edge_n_flows(fx->e), 1);
    /* The refresh is answered from the restored cache record, not relayed. */
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 2, false), &fx->client, 6000);
    assert_int_equal(st(fx)->regcache_hit, 1);
    assert_int_equal(count_sent_to(registrar(fx)), 0);
    /* Restoring twice does not duplicate the flow. */
    assert_int_equal(edge_state_restore(fx->e, b.p, b.len, EDGE_STATE_VERSION, 7000, &res, err,
                                        sizeof(err)),
                     0);
    assert_int_equal(res.n_flows, 0);
    assert_int_equal(edge_n_flows(fx->e), 1);
    statefile_buf_free(&b);
}

/* The journal follows each confirmed change; replayed in order, the last record wins. */
static void test_edge_journal_replays_confirmations_and_removals_in_order(void **state)
{
    struct fixture *fx = *state;
    char m[2048];

    edge_journal_enable(fx->e, true);
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 1, true), &fx->client, 0);
    struct statefile_buf j0;
    assert_int_equal(edge_journal_take(fx->e, &j0), 0); /* nothing confirmed yet */
    statefile_buf_free(&j0);
    answer_last(fx, "200 OK", "Contact: <sip:bob@192.0.2.10:5060>;expires=600\r\n", 1);
    struct statefile_buf j1, j2;
    assert_true(edge_journal_take(fx->e, &j1) > 0);
    /* bob removes his binding. */
    size_t len = fmt_reg_for(m, sizeof(m), "bob", 2, true);
    memcpy(strstr(m, "expires=600"), "expires=000", 11);
    sent_reset();
    rx_pub(fx, 0, m, len, &fx->client, 2);
    answer_last(fx, "200 OK", "", 3);
    assert_true(edge_journal_take(fx->e, &j2) > 0);

    assert_int_equal(edge_build(fx), 0);
    struct edge_restore_result res = {0};
    assert_int_equal(edge_journal_replay(fx->e, j1.p, j1.len - 1, 5000, &res), -EBADMSG);
    assert_int_equal(edge_n_flows(fx->e), 0);
    assert_int_equal(edge_journal_replay(fx->e, j1.p, j1.len, 5000, &res), 0);
    assert_int_equal(edge_n_flows(fx->e), 1);
    sent_reset();
    rx_pub(fx, 0, m, fmt_reg_for(m, sizeof(m), "bob", 3, false), &fx->client, 6000);
    assert_int_equal(st(fx)->regcache_hit, 1);
    /* Replaying the removal on top ends the flow's record. */
    assert_int_equal(edge_build(fx), 0);
    memset(&res, 0, sizeof(res));
    assert_int_equal(edge_journal_replay(fx->e, j1.p, j1.len, 5000, &res), 0);
    assert_int_equal(edge_journal_replay(fx->e, j2.p, j2.len, 5000, &res), 0);
    assert_int_equal(edge_n_flows(fx->e), 0);
    statefile_buf_free(&j1);
    statefile_buf_free(&j2);
}

/* Routes a client names are not followed on the core side unless the policy lists them. */
static void test_edge_client_route_to_the_core_is_stripped(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    static const char req[] = "OPTIONS sip:bob@example.com SIP/2.0\r\n" CLIENT_VIA
                              "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5999;lr>\r\n"
                              "Route: <sip:10.0.0.9:5060;lr>\r\n"
                              "From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n"
                              "Call-ID: r1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    rx_pub(fx, 0, req, strlen(req), &fx->client, 0);
    assert_int_equal(n_sent, 1);
    assert_true(addr_eq(&sent[0].dst, registrar(fx)));
    parse_sent(0, &fwd);
    assert_null(sip_msg_hdr(&fwd.m, SIP_HDR_ROUTE));
    assert_int_equal(st(fx)->route_stripped, 2);

    /* An outbound proxy the policy names stays. */
    snprintf(fx->pol.relay_allow_routes[0], sizeof(fx->pol.relay_allow_routes[0]),
             "127.0.0.1:5999");
    fx->pol.n_relay_allow_routes = 1;
    edge_set_policy(fx->e, &fx->pol);
    sent_reset();
    rx_pub(fx, 0, req, strlen(req), &fx->client, 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &fwd);
    assert_non_null(sip_msg_hdr(&fwd.m, SIP_HDR_ROUTE));
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_ROUTE)->value, "<sip:127.0.0.1:5999;lr>");
}

/* A token of an earlier run, or one sealed for another peer, never reaches the client
 * that holds its slot now. */
static void test_edge_token_reaches_only_the_peer_it_was_made_for(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct flow_token_fields tf;
    char old[FLOW_TOKEN_MAX], tok[FLOW_TOKEN_MAX], forged[FLOW_TOKEN_MAX];

    register_client(fx, &fwd, 0);
    path_token(&fwd, old);
    /* Restart with the same key: a new client gets slot 0 generation 1 again. */
    assert_int_equal(edge_build(fx), 0);
    sent_reset();
    rx_pub(fx, 0, msg, fmt_default_register(), &fx->client2, 0);
    parse_sent(0, &fwd);
    path_token(&fwd, tok);
    struct flow_token_fields a, b;
    assert_int_equal(flow_token_decode(fx->keys, slice_make(old, strlen(old)), &a), 0);
    assert_int_equal(flow_token_decode(fx->keys, slice_make(tok, strlen(tok)), &b), 0);
    assert_int_equal(a.slot, b.slot);
    assert_int_equal(a.gen, b.gen);
    /* The earlier run's token reaches the client it was made for, never the slot's
     * holder now. */
    size_t len = fmt_route_invite(old, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    assert_false(addr_eq(&sent[0].dst, SA(fx->client2)));

    /* This run's slot and generation with another peer's address sealed in it goes to
     * that address, not to the slot's holder. */
    tf = b;
    tf.remote.in.sin_port = htons(40999);
    assert_true(flow_token_encode(fx->keys, &tf, forged, sizeof(forged)) > 0);
    len = fmt_route_invite(forged, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
    assert_false(addr_eq(&sent[0].dst, SA(fx->client2)));
    assert_int_equal(ntohs(((const struct sockaddr_in *)&sent[0].dst)->sin_port), 40999);

    /* The real token reaches the new client. */
    len = fmt_route_invite(tok, "", inv, sizeof(inv));
    sent_reset();
    rx_core(fx, inv, len, registrar(fx), 0);
    assert_int_equal(n_sent, 1);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client2)));
}

static void test_edge_registered_flow_outlives_idle_timeout_until_expiry(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    fx->pol.max_flows = 4;
    fx->pol.flow_idle_timeout_s = 30;
    assert_int_equal(edge_build(fx), 0);
    register_client(fx, &fwd, 0);
    size_t len = fmt_response_to(&fwd, "200 OK",
                                 "Contact: <sip:alice@192.0.2.10:5060>;expires=120\r\n", resp,
                                 sizeof(resp));
    rx_core(fx, resp, len, registrar(fx), 1000);
    tick_all(fx, 60000);
    assert_int_equal(edge_n_flows(fx->e), 1);
    tick_all(fx, 120999);
    assert_int_equal(edge_n_flows(fx->e), 1);
    tick_all(fx, 121000);
    assert_int_equal(edge_n_flows(fx->e), 0);
}

static void test_edge_keepalive_and_requests_keep_a_flow_alive(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;

    fx->pol.max_flows = 4;
    fx->pol.flow_idle_timeout_s = 30;
    assert_int_equal(edge_build(fx), 0);
    register_client(fx, &fwd, 0);
    rx_pub(fx, 0, "\r\n\r\n", 4, &fx->client, 20000);
    tick_all(fx, 49999);
    assert_int_equal(edge_n_flows(fx->e), 1);
    size_t len = fmt_default_register();
    rx_pub(fx, 0, msg, len, &fx->client, 45000);
    tick_all(fx, 74999);
    assert_int_equal(edge_n_flows(fx->e), 1);
    tick_all(fx, 75000);
    assert_int_equal(edge_n_flows(fx->e), 0);
}

static void test_edge_client_responses_keep_a_flow_alive(void **state)
{
    struct fixture *fx = *state;
    struct parsed delivered;

    fx->pol.max_flows = 4;
    fx->pol.flow_idle_timeout_s = 30;
    assert_int_equal(edge_build(fx), 0);
    deliver_invite(fx, &delivered, 20000); /* flow created at 0 by the REGISTER */
    size_t len = fmt_response_to(&delivered, "180 Ringing", "", resp, sizeof(resp));
    sent_reset();
    rx_pub(fx, 0, resp, len, &fx->client, 25000);
    assert_int_equal(n_sent, 1);
    /* Idle since the REGISTER at 0, but it answered at 25 s. */
    tick_all(fx, 40000);
    assert_int_equal(edge_n_flows(fx->e), 1);
    tick_all(fx, 55000);
    assert_int_equal(edge_n_flows(fx->e), 0);
}

static void test_edge_full_flow_table_answers_503_and_keeps_existing_flows(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;

    fx->pol.max_flows = 1;
    assert_int_equal(edge_build(fx), 0);
    register_client(fx, &fwd, 0);
    size_t len = fmt_default_register();
    sent_reset();
    rx_pub(fx, 0, msg, len, &fx->client2, 0);
    assert_int_equal(n_sent, 1);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client2)));
    assert_int_equal(sent[0].sock, 0);
    parse_sent(0, &out);
    assert_int_equal(out.m.status, 503);
    assert_int_equal(count_sent_to(registrar(fx)), 0);
    assert_int_equal(st(fx)->reply_503_flows_full, 1);
    /* The first client is still served. */
    sent_reset();
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(count_sent_to(registrar(fx)), 1);
    assert_int_equal(edge_n_flows(fx->e), 1);
}

/* ---- bad input from the public side ------------------------------------------------------ */

static void test_edge_zero_max_forwards_gets_483_and_is_not_forwarded(void **state)
{
    struct fixture *fx = *state;
    struct parsed out;

    size_t len = fmt_register(CLIENT_VIA, "", "Max-Forwards: 0\r\n");
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(count_sent_to(registrar(fx)), 0);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    assert_int_equal(sent[0].sock, 0);
    parse_sent(0, &out);
    assert_false(out.m.is_request);
    assert_int_equal(out.m.status, 483);
    assert_int_equal(st(fx)->reply_483_too_many_hops, 1);
}

static void test_edge_missing_call_id_is_never_forwarded(void **state)
{
    struct fixture *fx = *state;

    size_t len = fmt_default_register();
    char *cid = strstr(msg, "Call-ID: reg-1@192.0.2.10\r\n");
    assert_non_null(cid);
    size_t cut = strlen("Call-ID: reg-1@192.0.2.10\r\n");
    memmove(cid, cid + cut, len - (size_t)(cid - msg) - cut + 1);
    len -= cut;
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(count_sent_to(registrar(fx)), 0);
    /* A reply, if any, is a 400 to the client. */
    for (size_t i = 0; i < n_sent; i++) {
        assert_true(addr_eq(&sent[i].dst, SA(fx->client)));
        assert_true(strncmp(sent[i].buf, "SIP/2.0 400 ", 12) == 0);
    }
    assert_int_equal(st(fx)->relayed_register, 0);
    assert_int_equal(edge_n_flows(fx->e), 0);
}

static void test_edge_binary_garbage_is_dropped_silently(void **state)
{
    struct fixture *fx = *state;
    char junk[512];
    uint32_t x = 12345;

    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (char)(x >> 16);
    }
    junk[0] = (char)0xff;
    rx_pub(fx, 0, junk, sizeof(junk), &fx->client, 0);
    assert_int_equal(n_sent, 0);
    assert_int_equal(st(fx)->drop_not_sip, 1);
    assert_int_equal(edge_n_flows(fx->e), 0);
    rx_pub(fx, 0, junk, 0, &fx->client, 0);
    assert_int_equal(n_sent, 0);
}

static void test_edge_oversized_message_is_not_forwarded(void **state)
{
    struct fixture *fx = *state;
    char pad[1500];

    fx->pol.max_message_bytes = 1024;
    edge_set_policy(fx->e, &fx->pol);
    memset(pad, 'x', sizeof(pad));
    memcpy(pad, "X-Pad: ", 7);
    memcpy(pad + sizeof(pad) - 3, "\r\n", 3);
    size_t len = fmt_register(CLIENT_VIA, "", pad);
    assert_true(len > 1024);
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(count_sent_to(registrar(fx)), 0);
    assert_int_equal(st(fx)->drop_oversize, 1);
    for (size_t i = 0; i < n_sent; i++)
        assert_true(strncmp(sent[i].buf, "SIP/2.0 513 ", 12) == 0);

    /* The same message under the limit again is relayed. */
    fx->pol.max_message_bytes = 65535;
    edge_set_policy(fx->e, &fx->pol);
    sent_reset();
    rx_pub(fx, 0, msg, len, &fx->client, 0);
    assert_int_equal(count_sent_to(registrar(fx)), 1);
}

static void test_edge_double_crlf_gets_crlf_pong(void **state)
{
    struct fixture *fx = *state;

    rx_pub(fx, 0, "\r\n\r\n", 4, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].len, 2);
    assert_memory_equal(sent[0].buf, "\r\n", 2);
    assert_int_equal(sent[0].sock, 0);
    assert_true(addr_eq(&sent[0].dst, SA(fx->client)));
    assert_int_equal(st(fx)->keepalive_pong, 1);
    /* A lone CRLF (the pong itself) is not answered. */
    rx_pub(fx, 0, "\r\n", 2, &fx->client, 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(st(fx)->keepalive_pong, 1);
}

/* ---- RFC 4475 torture messages ------------------------------------------------------------ */

struct torture_row {
    char name[32];
    char cls[16];
    char must_not_forward[8];
};

static size_t load_classes(struct torture_row *rows, size_t cap)
{
    FILE *f = fopen(TORTURE_DIR "classes.tsv", "r");
    char line[512];
    size_t n = 0;

    if (f == NULL)
        fail_msg("cannot open classes.tsv");
    while (fgets(line, sizeof(line), f) && n < cap) {
        char section[32];
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%31s %31s %15s %7s", rows[n].name, section, rows[n].cls,
                   rows[n].must_not_forward) == 4)
            n++;
    }
    fclose(f);
    return n;
}

static size_t read_torture(const char *name, char *buf, size_t cap)
{
    char path[512];

    snprintf(path, sizeof(path), TORTURE_DIR "%s.dat", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void test_edge_torture_must_not_forward_messages_never_reach_registrar(void **state)
{
    struct fixture *fx = *state;
    struct torture_row rows[64];
    static char buf[65536];
    size_t n_rows = load_classes(rows, 64), n_checked = 0;

    assert_true(n_rows >= 49);
    for (size_t i = 0; i < n_rows; i++) {
        if (strcmp(rows[i].must_not_forward, "yes") != 0)
            continue;
        size_t len = read_torture(rows[i].name, buf, sizeof(buf));
        sent_reset();
        rx_pub(fx, 0, buf, len, &fx->client, 0);
        if (count_sent_to(registrar(fx)) != 0)
            fail_msg("%s was forwarded to the registrar:\n%s", rows[i].name, sent[0].buf);
        for (size_t k = 0; k < n_sent; k++) {
            if (sent[k].sock == EDGE_SOCK_CORE)
                fail_msg("%s produced a datagram on the core socket", rows[i].name);
        }
        n_checked++;
    }
    assert_true(n_checked >= 21);
    assert_int_equal(st(fx)->relayed_register + st(fx)->relayed_request, 0);
}

static void test_edge_torture_valid_registers_are_forwarded(void **state)
{
    struct fixture *fx = *state;
    struct torture_row rows[64];
    static char buf[65536];
    size_t n_rows = load_classes(rows, 64), n_checked = 0;

    for (size_t i = 0; i < n_rows; i++) {
        if (strcmp(rows[i].cls, "valid") != 0)
            continue;
        size_t len = read_torture(rows[i].name, buf, sizeof(buf));
        if (len < 9 || memcmp(buf, "REGISTER ", 9) != 0)
            continue;
        sent_reset();
        rx_pub(fx, 0, buf, len, &fx->client, 0);
        if (count_sent_to(registrar(fx)) != 1)
            fail_msg("valid REGISTER %s was not forwarded (%zu datagrams)", rows[i].name,
                     n_sent);
        struct parsed fwd;
        parse_sent(0, &fwd);
        assert_int_equal(fwd.m.method_id, SIP_METHOD_REGISTER);
        assert_non_null(sip_msg_hdr(&fwd.m, SIP_HDR_PATH));
        /* dblreq: only the first request of the datagram goes on. */
        assert_null(strstr(sent[0].buf, "INVITE sip:"));
        n_checked++;
    }
    assert_true(n_checked >= 2);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_edge_new_rejects_zero_flow_capacity_cleanly),
        T(test_edge_core_request_for_another_worker_is_handed_to_it),
        T(test_edge_register_outcome_detail_follows_the_hook),
        T(test_edge_stats_format_names_every_counter),
        T(test_edge_register_is_relayed_once_to_registrar_over_core_socket),
        T(test_edge_register_top_via_is_ours_with_flow_token),
        T(test_edge_register_client_via_gets_received_and_filled_rport),
        T(test_edge_register_client_via_without_rport_gets_received_only),
        T(test_edge_register_client_received_and_rport_values_are_replaced),
        T(test_edge_register_path_is_ours_alone_and_carries_the_flow_token),
        T(test_edge_register_ob_only_with_reg_id_and_a_single_via),
        T(test_edge_register_adds_supported_path_once),
        T(test_edge_register_max_forwards_decremented_or_inserted),
        T(test_edge_register_strips_client_identity_headers),
        T(test_edge_register_keeps_body_and_content_length),
        T(test_edge_retransmission_keeps_branch_new_transaction_changes_it),
        T(test_edge_rfc2543_request_without_branch_gets_a_stable_branch),
        T(test_edge_same_branch_from_another_source_port_gets_another_branch),
        T(test_edge_cancel_gets_the_branch_of_the_invite_it_cancels),
        T(test_edge_registrar_response_goes_to_client_without_our_via),
        T(test_edge_registrar_response_uses_the_public_socket_of_the_flow),
        T(test_edge_registrar_response_pops_only_our_via_from_a_shared_line),
        T(test_edge_registrar_100_trying_is_not_forwarded),
        T(test_edge_registrar_response_whose_top_via_is_not_ours_is_dropped),
        T(test_edge_registrar_response_with_tampered_token_is_dropped),
        T(test_edge_response_from_non_core_peer_is_dropped),
        T(test_edge_configured_core_peer_is_trusted),
        T(test_edge_inbound_request_follows_path_token_to_client),
        T(test_edge_inbound_request_pops_only_our_route),
        T(test_edge_inbound_request_with_tampered_token_gets_403),
        T(test_edge_stale_udp_token_reaches_the_address_sealed_in_it),
        T(test_edge_udp_flow_is_recreated_from_its_token_after_release),
        T(test_edge_inbound_request_with_zero_max_forwards_gets_483),
        T(test_edge_inbound_request_without_our_route_gets_404),
        T(test_edge_inbound_request_from_non_core_peer_is_dropped),
        T(test_edge_client_response_goes_to_registrar_with_our_via_popped),
        T(test_edge_client_100_trying_is_not_forwarded),
        T(test_edge_client_stray_response_is_dropped),
        T(test_edge_forged_response_with_our_branch_prefix_is_not_relayed),
        T(test_edge_response_to_a_delivered_request_cannot_be_redirected),
        T(test_edge_2xx_confirms_only_the_aor_of_its_own_request),
        T(test_edge_unconfirmed_register_changes_no_cached_binding),
        T(test_edge_state_survives_a_restart_and_a_bad_payload_creates_nothing),
        T(test_edge_journal_replays_confirmations_and_removals_in_order),
        T(test_edge_client_route_to_the_core_is_stripped),
        T(test_edge_token_reaches_only_the_peer_it_was_made_for),
        T(test_edge_registered_flow_outlives_idle_timeout_until_expiry),
        T(test_edge_keepalive_and_requests_keep_a_flow_alive),
        T(test_edge_client_responses_keep_a_flow_alive),
        T(test_edge_full_flow_table_answers_503_and_keeps_existing_flows),
        T(test_edge_zero_max_forwards_gets_483_and_is_not_forwarded),
        T(test_edge_missing_call_id_is_never_forwarded),
        T(test_edge_binary_garbage_is_dropped_silently),
        T(test_edge_oversized_message_is_not_forwarded),
        T(test_edge_double_crlf_gets_crlf_pong),
        T(test_edge_torture_must_not_forward_messages_never_reach_registrar),
        T(test_edge_torture_valid_registers_are_forwarded),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
