/*
 * Registrar health in the edge: an unanswered relay marks a registrar down, REGISTERs
 * fail over to the next one, the primary is retried later, and while no registrar
 * answers the cache keeps answering refreshes past the refresh margin.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/sip_msg.h"

#include "edge_rec.h"


static struct config g_cfg;
static struct policy g_pol;
static struct sockaddr_in g_client;
static uint32_t g_ping_interval_s; /* health checks off unless a test turns them on */
static int g_resync;               /* regcache.resync */

static struct edge *make_edge(unsigned n_backups)
{
    config_defaults(&g_cfg);
    config_addr_parse("127.0.0.1:5060", &g_cfg.listen_udp[0]);
    g_cfg.n_listen_udp = 1;
    config_addr_parse("127.0.0.1:5070", &g_cfg.core);
    config_addr_parse("127.0.0.1:5080", &g_cfg.registrar);
    g_cfg.has_external_registrar = true;
    g_cfg.n_registrar_backups = n_backups;
    if (n_backups)
        config_addr_parse("127.0.0.1:5081", &g_cfg.registrar_backups[0]);
    memset(g_cfg.flow_key, 3, sizeof(g_cfg.flow_key));
    g_cfg.has_flow_key = true;
    policy_defaults(&g_pol);
    g_pol.max_flows = 64;
    g_pol.registrar_timeout_s = 5;
    g_pol.registrar_retry_s = 30;
    g_pol.registrar_loss_grace_s = 600;
    g_pol.regcache_refresh_margin_s = 300;
    g_pol.registrar_ping_interval_s = g_ping_interval_s;
    g_pol.regcache_resync = g_resync;
    struct edge_opts eo = {.cfg = &g_cfg,
                           .policy = &g_pol,
                           .out = {.reserve = out_reserve, .commit = out_commit}};
    struct edge *e = NULL;
    assert_int_equal(edge_new(&e, &eo), 0);
    g_client.sin_family = AF_INET;
    g_client.sin_port = htons(40000);
    inet_pton(AF_INET, "192.0.2.10", &g_client.sin_addr);
    sent_reset();
    return e;
}

static void client_register(struct edge *e, unsigned cseq, bool with_auth, uint64_t now)
{
    char msg[1024];
    int n = snprintf(msg, sizeof(msg),
                     "REGISTER sip:example.com SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKc%u;rport\r\n"
                     "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f1\r\n"
                     "To: <sip:alice@example.com>\r\nCall-ID: reg-1@192.0.2.10\r\n"
                     "CSeq: %u REGISTER\r\nContact: <sip:alice@192.0.2.10:40000>\r\n"
                     "%sExpires: 3600\r\nContent-Length: 0\r\n\r\n",
                     cseq, cseq,
                     with_auth ? "Authorization: Digest username=\"alice\", realm=\"x\", "
                                 "nonce=\"n\", uri=\"sip:example.com\", response=\"r\"\r\n"
                               : "");
    edge_rx_public(e, 0, msg, (size_t)n, (struct sockaddr *)&g_client, now);
}

/* The registrar's 200 for the last relayed REGISTER (our Via copied back), from port. */
static void registrar_ok(struct edge *e, const struct sent *req, uint16_t port, uint64_t now)
{
    struct sip_hdr hdrs[64];
    struct sip_msg m;
    struct sip_err err;
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = 64};
    assert_int_equal(sip_msg_parse(&m, req->buf, req->len, hdrs, &lim, &err), 0);
    char resp[4096];
    size_t n = (size_t)snprintf(resp, sizeof(resp), "SIP/2.0 200 OK\r\n");
    for (uint16_t i = 0; i < m.n_hdrs; i++) {
        const struct sip_hdr *h = &m.hdrs[i];
        if (h->id == SIP_HDR_VIA || h->id == SIP_HDR_FROM || h->id == SIP_HDR_TO ||
            h->id == SIP_HDR_CALL_ID || h->id == SIP_HDR_CSEQ)
            n += (size_t)snprintf(resp + n, sizeof(resp) - n, "%.*s", (int)h->line_len,
                                  req->buf + h->off);
    }
    n += (size_t)snprintf(resp + n, sizeof(resp) - n,
                          "Contact: <sip:alice@192.0.2.10:40000>;expires=3600\r\n"
                          "Content-Length: 0\r\n\r\n");
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &src.sin_addr);
    edge_rx_core(e, resp, n, (struct sockaddr *)&src, now);
}

static uint16_t dst_port(unsigned i)
{
    return ntohs(((const struct sockaddr_in *)&sent[i].dst)->sin_port);
}

static void test_upstream_unanswered_registrar_fails_over_and_is_retried(void **state)
{
    (void)state;
    struct edge *e = make_edge(1);
    client_register(e, 1, false, 0);
    assert_int_equal(n_sent, 1);
    assert_int_equal(dst_port(0), 5080);
    edge_tick(e, 4000);
    client_register(e, 1, false, 4500); /* retransmission, still the primary */
    assert_int_equal(dst_port(1), 5080);
    edge_tick(e, 5100);
    assert_int_equal(edge_stats(e)->registrar_marked_down, 1);
    client_register(e, 1, false, 5500);
    assert_int_equal(dst_port(2), 5081);
    /* The backup answers: the client gets the 200. */
    registrar_ok(e, &sent[2], 5081, 5600);
    assert_int_equal(n_sent, 4);
    assert_int_equal(dst_port(3), 40000);
    assert_true(memcmp(sent[3].buf, "SIP/2.0 200", 11) == 0);
    /* After the retry time the primary gets the next request again. */
    client_register(e, 2, false, 36000);
    assert_int_equal(dst_port(4), 5080);
    edge_free(e);
}

static void test_upstream_loss_keeps_cache_answering_past_the_margin(void **state)
{
    (void)state;
    struct edge *e = make_edge(0);
    client_register(e, 1, true, 0);
    registrar_ok(e, &sent[0], 5080, 100);
    assert_int_equal(n_sent, 2);
    /* Within the margin of the registrar's expiry: a refresh goes upstream... */
    uint64_t t = 3600000 - 200000;
    client_register(e, 2, true, t);
    assert_int_equal(n_sent, 3);
    assert_int_equal(dst_port(2), 5080);
    assert_int_equal(edge_stats(e)->regcache_hit, 0);
    /* ...which nobody answers: the registrar is down, and refreshes are answered here. */
    edge_tick(e, t + 6000);
    assert_int_equal(edge_stats(e)->registrar_marked_down, 1);
    client_register(e, 3, true, t + 7000);
    assert_int_equal(n_sent, 4);
    assert_int_equal(dst_port(3), 40000);
    assert_true(memcmp(sent[3].buf, "SIP/2.0 200", 11) == 0);
    assert_int_equal(edge_stats(e)->regcache_hit, 1);
    /* Past expiry plus loss_grace, nothing is answered locally any more. */
    client_register(e, 4, true, 3600000 + 601000);
    assert_int_equal(edge_stats(e)->regcache_hit, 1);
    edge_free(e);
}

/* Index of the last sent message starting with prefix, or -1. */
static int last_sent(const char *prefix)
{
    for (int i = (int)n_sent - 1; i >= 0; i--)
        if (sent[i].len >= strlen(prefix) && memcmp(sent[i].buf, prefix, strlen(prefix)) == 0)
            return i;
    return -1;
}

static void test_upstream_registrar_back_from_down_gets_every_cached_refresh_again(void **state)
{
    (void)state;
    g_ping_interval_s = 2;
    struct edge *e = make_edge(0);
    g_ping_interval_s = 0;
    client_register(e, 1, true, 0);
    registrar_ok(e, &sent[0], 5080, 100);
    /* Health checks go out and are answered. */
    edge_tick(e, 1000);
    int opt = last_sent("OPTIONS sip:127.0.0.1:5080 SIP/2.0");
    assert_true(opt >= 0);
    assert_non_null(strstr(sent[opt].buf, ";branch=z9hG4bKsH"));
    size_t before = n_sent;
    registrar_ok(e, &sent[opt], 5080, 1100);
    assert_int_equal(n_sent, before); /* absorbed, never relayed */
    assert_int_equal(edge_stats(e)->health_answered, 1);
    /* An unchanged refresh is answered from the cache. */
    client_register(e, 2, true, 2000);
    assert_int_equal(edge_stats(e)->regcache_hit, 1);
    /* The registrar goes silent: its checks go unanswered and it is marked down. */
    for (uint64_t t = 3000; t <= 9000; t += 1000)
        edge_tick(e, t);
    assert_int_equal(edge_stats(e)->registrar_marked_down, 1);
    /* Meanwhile refreshes keep getting 200 from the cache. */
    client_register(e, 3, true, 9500);
    assert_int_equal(edge_stats(e)->regcache_hit, 2);
    assert_true(memcmp(sent[n_sent - 1].buf, "SIP/2.0 200", 11) == 0);
    /* It answers a check again: it may have lost its bindings, so the cache is stale... */
    edge_tick(e, 11000);
    opt = last_sent("OPTIONS ");
    assert_true(opt >= 0);
    registrar_ok(e, &sent[opt], 5080, 11100);
    assert_int_equal(edge_stats(e)->registrar_recovered, 1);
    assert_int_equal(edge_stats(e)->regcache_marked_stale, 1);
    /* ...and the next refresh goes upstream with the client's own credentials. */
    client_register(e, 4, true, 12000);
    assert_int_equal(edge_stats(e)->regcache_hit, 2);
    int reg = last_sent("REGISTER ");
    assert_int_equal(reg, (int)n_sent - 1);
    assert_int_equal(dst_port((unsigned)reg), 5080);
    assert_non_null(strstr(sent[reg].buf, "Authorization: Digest"));
    /* Once the registrar confirmed it, the cache answers again. */
    registrar_ok(e, &sent[reg], 5080, 12100);
    client_register(e, 5, true, 13000);
    assert_int_equal(edge_stats(e)->regcache_hit, 3);
    /* regcache.resync is off: sipedge sent no REGISTER of its own. */
    assert_int_equal(edge_stats(e)->resync_sent, 0);
    edge_free(e);
}

static void test_upstream_resync_assert_reregisters_clients_refreshing_later(void **state)
{
    (void)state;
    g_ping_interval_s = 2;
    g_resync = 1;
    struct edge *e = make_edge(0);
    g_ping_interval_s = 0;
    g_resync = 0;
    client_register(e, 1, true, 0);
    registrar_ok(e, &sent[0], 5080, 100);
    edge_tick(e, 1000);
    registrar_ok(e, &sent[last_sent("OPTIONS ")], 5080, 1100);
    for (uint64_t t = 3000; t <= 9000; t += 1000)
        edge_tick(e, t);
    assert_int_equal(edge_stats(e)->registrar_marked_down, 1);
    assert_int_equal(edge_stats(e)->resync_sent, 0);
    edge_tick(e, 11000);
    registrar_ok(e, &sent[last_sent("OPTIONS ")], 5080, 11100);
    assert_int_equal(edge_stats(e)->regcache_marked_stale, 1);
    /* The next tick re-registers the client (its own refresh is an hour away), asserted,
     * with the flow's Path, for the time the registrar had left. */
    edge_tick(e, 12000);
    assert_int_equal(edge_stats(e)->resync_sent, 1);
    int reg = last_sent("REGISTER ");
    assert_true(reg >= 0);
    assert_int_equal(dst_port((unsigned)reg), 5080);
    const char *m = sent[reg].buf;
    assert_non_null(strstr(m, ";branch=z9hG4bKsR"));
    assert_non_null(strstr(m, "P-Asserted-Identity: <sip:alice@example.com>\r\n"));
    assert_non_null(strstr(m, "Path: <sip:"));
    assert_non_null(strstr(m, "@127.0.0.1:5070;lr>\r\n"));
    assert_non_null(strstr(m, "Contact: <sip:alice@192.0.2.10:40000>\r\n"));
    assert_non_null(strstr(m, "Expires: 3588\r\n"));
    assert_null(strstr(m, "Call-ID: reg-1@192.0.2.10")); /* a Call-ID of its own */
    assert_null(strstr(m, "Authorization"));
    size_t before = n_sent;
    registrar_ok(e, &sent[reg], 5080, 12100);
    assert_int_equal(n_sent, before); /* the answer ends here */
    assert_int_equal(edge_stats(e)->resync_answered_ok, 1);
    /* Once: later ticks send nothing more. */
    for (uint64_t t = 13000; t <= 20000; t += 1000)
        edge_tick(e, t);
    assert_int_equal(edge_stats(e)->resync_sent, 1);
    edge_free(e);
}

static void test_upstream_registrar_that_ignores_options_is_not_marked_down_by_them(void **state)
{
    (void)state;
    g_ping_interval_s = 2;
    struct edge *e = make_edge(0);
    g_ping_interval_s = 0;
    for (uint64_t t = 1000; t <= 60000; t += 1000)
        edge_tick(e, t);
    assert_true(edge_stats(e)->health_sent >= 29);
    assert_int_equal(edge_stats(e)->registrar_marked_down, 0);
    assert_true(edge_registrar_up(e));
    edge_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upstream_unanswered_registrar_fails_over_and_is_retried),
        cmocka_unit_test(test_upstream_loss_keeps_cache_answering_past_the_margin),
        cmocka_unit_test(test_upstream_registrar_back_from_down_gets_every_cached_refresh_again),
        cmocka_unit_test(test_upstream_registrar_that_ignores_options_is_not_marked_down_by_them),
        cmocka_unit_test(test_upstream_resync_assert_reregisters_clients_refreshing_later),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
