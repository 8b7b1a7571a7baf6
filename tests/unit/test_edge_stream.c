/*
 * TCP and TLS flows in the edge: a REGISTER over a stream connection is relayed with our
 * Path (flow token, ;ob for an outbound client), the registrar's answer goes back over
 * the connection with its Flow-Timer, a request routed by the Path reaches the client
 * over that connection with our Via naming the stream transport and listener (never a
 * new connection to the client's advertised Contact), and a closed connection answers
 * 430 at once and de-registers after the grace. Stream messages may be larger than a
 * datagram's cap (policy stream.max_message_bytes).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/flow_table.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

#include "edge_rec.h"

struct fixture {
    struct config cfg;
    struct policy pol;
    struct edge *e;
    struct sockaddr_in client;    /* 192.0.2.10:40000 */
    struct sockaddr_in registrar; /* 127.0.0.1:5080 */
};

static struct fixture fx_storage;
static char msg[40000];

static int setup(void **state)
{
    struct fixture *fx = &fx_storage;
    memset(fx, 0, sizeof(*fx));
    config_defaults(&fx->cfg);
    if (config_addr_parse("127.0.0.1:5060", &fx->cfg.listen_udp[0]) != 0 ||
        config_addr_parse("127.0.0.1:5060", &fx->cfg.listen_tcp[0]) != 0 ||
        config_addr_parse("127.0.0.1:5061", &fx->cfg.listen_tls[0]) != 0 ||
        config_addr_parse("127.0.0.1:5070", &fx->cfg.core) != 0 ||
        config_addr_parse("127.0.0.1:5080", &fx->cfg.registrar) != 0)
        return -1;
    fx->cfg.n_listen_udp = fx->cfg.n_listen_tcp = fx->cfg.n_listen_tls = 1;
    fx->cfg.has_external_registrar = true;
    for (int i = 0; i < 32; i++)
        fx->cfg.flow_key[i] = (uint8_t)(0x5a ^ i);
    fx->cfg.has_flow_key = true;
    policy_defaults(&fx->pol);
    fx->pol.max_flows = 64;
    fx->pol.regcache = false;
    fx->client = v4("192.0.2.10", 40000);
    fx->registrar = v4("127.0.0.1", 5080);
    struct edge_opts o = {
        .cfg = &fx->cfg,
        .policy = &fx->pol,
        .worker = 0,
        .out = {.reserve = out_reserve, .commit = out_commit},
    };
    sent_reset();
    if (edge_new(&fx->e, &o) != 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(n_overflow, 0);
    edge_free(fx->e);
    return 0;
}

static const struct edge_stats *st(struct fixture *fx) { return edge_stats(fx->e); }

/* A REGISTER as an RFC 5626 client sends it over a stream (one Via, reg-id and
 * +sip.instance, credentials: a dead flow de-registers only what credentials
 * registered), with body_len bytes of body. */
static size_t fmt_register(const char *proto, size_t body_len)
{
    int n = snprintf(msg, sizeof(msg),
                     "REGISTER sip:example.com SIP/2.0\r\n"
                     "Via: SIP/2.0/%s 10.0.0.5:5062;branch=z9hG4bK-s1;rport\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:alice@example.com>;tag=a1\r\n"
                     "To: <sip:alice@example.com>\r\n"
                     "Call-ID: stream-1@10.0.0.5\r\n"
                     "CSeq: 1 REGISTER\r\n"
                     "Contact: <sip:alice@10.0.0.5:5062;transport=%s>;reg-id=1;"
                     "+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"\r\n"
                     "Supported: outbound, path\r\n"
                     "Authorization: Digest username=\"alice\", realm=\"x\", nonce=\"n\", "
                     "uri=\"sip:example.com\", response=\"r\"\r\n"
                     "Expires: 600\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     proto, proto[1] == 'L' ? "tls" : "tcp", body_len);
    assert_true(n > 0 && (size_t)n + body_len < sizeof(msg));
    memset(msg + n, 'x', body_len);
    return (size_t)n + body_len;
}

/* The registrar's 200 for the relayed REGISTER p: its Vias, Path and Contact echoed. */
static size_t fmt_ok(const struct parsed *p)
{
    size_t n = (size_t)snprintf(msg, sizeof(msg), "SIP/2.0 200 OK\r\n");
    for (const struct sip_hdr *h = sip_msg_hdr(&p->m, SIP_HDR_VIA); h;
         h = sip_msg_hdr_next(&p->m, h))
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "Via: %.*s\r\n", SLICE_FMT(h->value));
    const struct sip_hdr *path = sip_msg_hdr(&p->m, SIP_HDR_PATH);
    assert_non_null(path);
    n += (size_t)snprintf(msg + n, sizeof(msg) - n,
                          "Path: %.*s\r\n"
                          "From: <sip:alice@example.com>;tag=a1\r\n"
                          "To: <sip:alice@example.com>;tag=r1\r\n"
                          "Call-ID: stream-1@10.0.0.5\r\n"
                          "CSeq: 1 REGISTER\r\n"
                          "Contact: <sip:alice@10.0.0.5:5062;transport=tls>;expires=600\r\n"
                          "Require: outbound\r\n"
                          "Content-Length: 0\r\n\r\n",
                          SLICE_FMT(path->value));
    return n;
}

/* An INVITE from the registrar routed by the Path URI path_uri. */
static size_t fmt_invite(struct slice path_uri)
{
    return (size_t)snprintf(msg, sizeof(msg),
                            "INVITE sip:alice@10.0.0.5:5062;transport=tls SIP/2.0\r\n"
                            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-r1\r\n"
                            "Route: <%.*s>\r\n"
                            "Max-Forwards: 69\r\n"
                            "From: <sip:bob@example.com>;tag=b1\r\n"
                            "To: <sip:alice@example.com>\r\n"
                            "Call-ID: call-1@127.0.0.1\r\n"
                            "CSeq: 1 INVITE\r\n"
                            "Contact: <sip:bob@127.0.0.1:5080>\r\n"
                            "Content-Length: 0\r\n\r\n",
                            SLICE_FMT(path_uri));
}

/* The client's 180 for the delivered request p: every Via echoed. */
static size_t fmt_180(const struct parsed *p, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "SIP/2.0 180 Ringing\r\n");
    for (const struct sip_hdr *h = sip_msg_hdr(&p->m, SIP_HDR_VIA); h;
         h = sip_msg_hdr_next(&p->m, h))
        n += (size_t)snprintf(out + n, cap - n, "Via: %.*s\r\n", SLICE_FMT(h->value));
    n += (size_t)snprintf(out + n, cap - n,
                          "From: <sip:bob@example.com>;tag=b1\r\n"
                          "To: <sip:alice@example.com>;tag=c1\r\n"
                          "Call-ID: call-1@127.0.0.1\r\n"
                          "CSeq: 1 INVITE\r\n"
                          "Content-Length: 0\r\n\r\n");
    return n;
}

static char path_buf[512];

/* The URI of the Path a relayed REGISTER carries, copied out. */
static struct slice path_uri_of(const struct parsed *p)
{
    const struct sip_hdr *h = sip_msg_hdr(&p->m, SIP_HDR_PATH);
    assert_non_null(h);
    struct sip_nameaddr na;
    struct slice rest;
    assert_int_equal(sip_nameaddr_parse(h->value, &na, &rest), 0);
    assert_true(na.uri.len < sizeof(path_buf));
    memcpy(path_buf, na.uri.p, na.uri.len);
    return slice_make(path_buf, na.uri.len);
}

static void assert_reply_to_registrar(struct fixture *fx, unsigned code)
{
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    struct parsed r;
    parse_sent(0, &r);
    assert_int_equal(r.m.status, code);
}

static void test_tls_flow_register_path_invite_and_dead_flow(void **state)
{
    struct fixture *fx = *state;
    uint64_t ref;
    assert_int_equal(edge_flow_open(fx->e, FLOW_TLS, 0, SA(fx->client), "CN=phone-1", 0x77,
                                    0, &ref),
                     0);
    size_t len = fmt_register("TLS", 0);
    sent_reset();
    edge_rx_flow(fx->e, ref, msg, len, 10);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    assert_false(sent[0].is_core_stream); /* small: a datagram */
    struct parsed fwd;
    parse_sent(0, &fwd);
    /* Our Path, first hop of an outbound client: ;ob, at the core address. */
    struct slice pu = path_uri_of(&fwd);
    assert_non_null(memmem(pu.p, pu.len, "@127.0.0.1:5070", 15));
    const struct sip_hdr *ph = sip_msg_hdr(&fwd.m, SIP_HDR_PATH);
    assert_non_null(memmem(ph->value.p, ph->value.len, ";ob", 3));

    /* The 200 goes back over the connection, with a Flow-Timer (RFC 5626 §5.4). */
    size_t ok = fmt_ok(&fwd);
    sent_reset();
    edge_rx_core(fx->e, msg, ok, SA(fx->registrar), 20);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, SENT_CONN);
    assert_int_equal(sent[0].conn, 0x77);
    assert_non_null(strstr(sent[0].buf, "Flow-Timer:"));

    /* An INVITE routed by the Path: over the same connection, our Via says TLS and names
     * the TLS listener. */
    size_t inv = fmt_invite(pu);
    sent_reset();
    edge_rx_core(fx->e, msg, inv, SA(fx->registrar), 30);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, SENT_CONN);
    assert_int_equal(sent[0].conn, 0x77);
    assert_non_null(strstr(sent[0].buf, "Via: SIP/2.0/TLS 127.0.0.1:5061;"));
    assert_int_equal(st(fx)->inbound_delivered, 1);

    /* The connection goes: 430 at once, and the de-REGISTER after the grace. */
    edge_flow_closed(fx->e, ref, 1000);
    sent_reset();
    edge_rx_core(fx->e, msg, fmt_invite(pu), SA(fx->registrar), 1100);
    assert_reply_to_registrar(fx, 430);
    sent_reset();
    edge_tick_dead(fx->e, 1000 + (uint64_t)fx->pol.dead_flow_grace_s * 1000);
    assert_int_equal(st(fx)->dereg_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    struct parsed d;
    parse_sent(0, &d);
    assert_int_equal(d.m.method_id, SIP_METHOD_REGISTER);
}

static void test_tcp_flow_via_names_the_tcp_listener(void **state)
{
    struct fixture *fx = *state;
    uint64_t ref;
    assert_int_equal(
        edge_flow_open(fx->e, FLOW_TCP, 0, SA(fx->client), NULL, 0x99, 0, &ref), 0);
    sent_reset();
    edge_rx_flow(fx->e, ref, msg, fmt_register("TCP", 0), 10);
    struct parsed fwd;
    parse_sent(0, &fwd);
    struct slice pu = path_uri_of(&fwd);
    sent_reset();
    edge_rx_core(fx->e, msg, fmt_invite(pu), SA(fx->registrar), 30);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].conn, 0x99);
    assert_non_null(strstr(sent[0].buf, "Via: SIP/2.0/TCP 127.0.0.1:5060;"));

    /* The client's 180 goes back to the registrar over UDP: its Via said UDP. */
    struct parsed out;
    parse_sent(0, &out);
    char resp[2048];
    size_t rn = fmt_180(&out, resp, sizeof(resp));
    sent_reset();
    edge_rx_flow(fx->e, ref, resp, rn, 40);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    assert_false(sent[0].is_core_stream);

    /* The same INVITE sent by the registrar over TCP: the 180 is answered over TCP. */
    size_t inv = fmt_invite(pu);
    char *via = strstr(msg, "SIP/2.0/UDP 127.0.0.1:5080");
    memcpy(via + 8, "TCP", 3);
    sent_reset();
    edge_rx_core(fx->e, msg, inv, SA(fx->registrar), 50);
    parse_sent(0, &out);
    rn = fmt_180(&out, resp, sizeof(resp));
    sent_reset();
    edge_rx_flow(fx->e, ref, resp, rn, 60);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    assert_true(sent[0].is_core_stream);
}

/* A message over the datagram cap passes on a stream (up to stream.max_message_bytes)
 * and gets 513 over UDP. */
static void test_stream_messages_have_their_own_size_cap(void **state)
{
    struct fixture *fx = *state;
    fx->pol.max_message_bytes = 4096;
    fx->pol.stream_max_message_bytes = 32768;
    edge_set_policy(fx->e, &fx->pol);
    uint64_t ref;
    assert_int_equal(
        edge_flow_open(fx->e, FLOW_TCP, 0, SA(fx->client), NULL, 0x55, 0, &ref), 0);
    size_t len = fmt_register("TCP", 8192);
    sent_reset();
    edge_rx_flow(fx->e, ref, msg, len, 10);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    assert_true(sent[0].len > 8192);
    assert_int_equal(st(fx)->reply_513_too_large, 0);
    /* Too large for a datagram to the registrar: over TCP, and our Via says so. */
    assert_true(sent[0].is_core_stream);
    assert_non_null(strstr(sent[0].buf, "Via: SIP/2.0/TCP 127.0.0.1:5070;"));
    assert_int_equal(st(fx)->relayed_core_tcp, 1);

    len = fmt_register("UDP", 8192);
    sent_reset();
    edge_rx_public(fx->e, 0, msg, len, SA(fx->client), 20);
    assert_int_equal(st(fx)->reply_513_too_large, 1);
    for (size_t i = 0; i < n_sent; i++)
        assert_false(sent_to(i, SA(fx->registrar)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls_flow_register_path_invite_and_dead_flow, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_flow_via_names_the_tcp_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_messages_have_their_own_size_cap, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
