/*
 * Contact aliases (policy nat.contact_alias), for registrars that ignore Path: a
 * REGISTER's Contacts become sip:TOKEN.BASE64URL(URI)@core and no Path is added; the
 * registrar's answer shows the client its own Contacts again; a request to an alias is
 * delivered over the flow with the original Request-URI (403 for a bad token, 400 for
 * a malformed alias, 430 for a dead flow); a dead flow's de-REGISTER names the aliases.
 *
 * A fake tx_out records every datagram and connection message; assertions parse the
 * recorded messages with sip_msg_parse and the sip_hdr parsers.
 */
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

#include "edge/edge_internal.h"
#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/flow_table.h"
#include "sipedge/flow_token.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

#include "edge_rec.h"

/* ---- fixture ---------------------------------------------------------------------------- */

struct fixture {
    struct config cfg;
    struct policy pol;
    struct edge *e;
    struct flow_token_keys *keys; /* same key as the edge, to read and forge tokens */
    struct sockaddr_in client;    /* 192.0.2.10:40000 */
    struct sockaddr_in registrar; /* 127.0.0.1:5080 */
};

static struct fixture fx_storage;

static void edge_build(struct fixture *fx)
{
    struct edge_opts o = {
        .cfg = &fx->cfg,
        .policy = &fx->pol,
        .worker = 1,
        .out = {.reserve = out_reserve, .commit = out_commit},
    };
    edge_free(fx->e);
    fx->e = NULL;
    assert_int_equal(edge_new(&fx->e, &o), 0);
}

static int setup(void **state)
{
    struct fixture *fx = &fx_storage;
    memset(fx, 0, sizeof(*fx));
    config_defaults(&fx->cfg);
    if (config_addr_parse("127.0.0.1:5060", &fx->cfg.listen_udp[0]) != 0 ||
        config_addr_parse("127.0.0.1:8080", &fx->cfg.listen_ws[0]) != 0 ||
        config_addr_parse("127.0.0.1:5070", &fx->cfg.core) != 0 ||
        config_addr_parse("127.0.0.1:5080", &fx->cfg.registrar) != 0)
        return -1;
    fx->cfg.n_listen_udp = 1;
    fx->cfg.n_listen_ws = 1;
    fx->cfg.has_external_registrar = true;
    for (int i = 0; i < 32; i++)
        fx->cfg.flow_key[i] = (uint8_t)(0x11 * i);
    fx->cfg.has_flow_key = true;
    policy_defaults(&fx->pol);
    fx->pol.max_flows = 64;
    fx->pol.nat_contact_alias = true;
    /* The client is behind NAT (its Contacts differ from its source): keep the expires
     * values out of the way, so the Contact parameters pass unchanged. */
    fx->pol.regcache = false;
    fx->pol.nat_expires_s = 3600;
    fx->pol.nat_expires_jitter_s = 0;
    if (flow_token_keys_new(&fx->keys, fx->cfg.flow_key, NULL) != 0)
        return -1;
    fx->client = v4("192.0.2.10", 40000);
    fx->registrar = v4("127.0.0.1", 5080);
    sent_reset();
    edge_build(fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(n_overflow, 0); /* every message a test caused was recorded */
    edge_free(fx->e);
    fx->e = NULL;
    flow_token_keys_free(fx->keys);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static size_t count_sent_to(const struct sockaddr_in *a)
{
    size_t n = 0;
    for (size_t i = 0; i < n_sent; i++)
        n += sent_to(i, SA(*a));
    return n;
}

/* Every Contact element of a message, across lines. */
static unsigned contacts_of(const struct sip_msg *m, struct sip_nameaddr *out, unsigned cap)
{
    unsigned n = 0;
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_CONTACT); h; h = sip_msg_hdr_next(m, h)) {
        struct slice rest = h->value;
        while (rest.len && n < cap) {
            assert_int_equal(sip_nameaddr_parse(rest, &out[n], &rest), 0);
            n++;
        }
    }
    return n;
}

/* The flow token of our (top) Via, copied to tok_buf (recorded messages get reused). */
static char tok_buf[FLOW_TOKEN_MAX];

static struct slice via_token(const struct parsed *p)
{
    struct sip_via via;
    struct slice rest, fl;
    assert_int_equal(sip_via_parse(sip_msg_hdr(&p->m, SIP_HDR_VIA)->value, &via, &rest), 0);
    assert_true(sip_params_get(via.params, "fl", &fl));
    assert_true(fl.len < sizeof(tok_buf));
    memcpy(tok_buf, fl.p, fl.len);
    tok_buf[fl.len] = '\0';
    return slice_make(tok_buf, fl.len);
}

/*
 * Checks that uri is an alias at 127.0.0.1:5070 carrying token and the original URI
 * want, decoding it independently of the edge.
 */
static void assert_alias_of(struct slice uri, struct slice token, const char *want)
{
    struct sip_uri u;
    bool is_sip;
    assert_int_equal(sip_uri_parse(uri, &u, &is_sip), 0);
    assert_true(is_sip);
    assert_slice_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 5070);
    assert_int_equal(u.params.raw.len, 0);
    long dot = slice_find(u.user, '.');
    assert_true(dot > 0);
    assert_true(slice_eq(slice_make(u.user.p, (size_t)dot), token));
    char dec[512];
    size_t n;
    assert_int_equal(b64url_decode(u.user.p + dot + 1, u.user.len - (size_t)dot - 1,
                                   (uint8_t *)dec, sizeof(dec) - 1, &n),
                     0);
    dec[n] = '\0';
    assert_string_equal(dec, want);
}

/* ---- messages --------------------------------------------------------------------------- */

#define INSTANCE "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\""
#define CONTACT_1 "sip:alice@192.0.2.10:5060;transport=udp"
#define CONTACT_2 "sip:alice@192.0.2.10:5062"
#define CONTACT_LINES                                                                              \
    "Contact: \"Alice\" <" CONTACT_1 ">;expires=600;q=0.5;" INSTANCE ";reg-id=1\r\n"              \
    "m: " CONTACT_2 ";expires=300\r\n"

static char msg[8192];
static char resp[8192];
static char inv[8192];

static size_t fmt_register(unsigned cseq, const char *contacts, const char *extra)
{
    int n = snprintf(msg, sizeof(msg),
                     "REGISTER sip:example.com SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg%u;rport\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:alice@example.com>;tag=a1\r\n"
                     "To: <sip:alice@example.com>\r\n"
                     "Call-ID: reg-1@192.0.2.10\r\n"
                     "CSeq: %u REGISTER\r\n"
                     "%s%s"
                     "Content-Length: 0\r\n\r\n",
                     cseq, cseq, contacts, extra);
    assert_true(n > 0 && (size_t)n < sizeof(msg));
    return (size_t)n;
}

#define AUTH_LINE                                                                                  \
    "Authorization: Digest username=\"alice\", realm=\"x\", nonce=\"n\", "                       \
    "uri=\"sip:example.com\", response=\"r\"\r\n"

/* Sends a REGISTER from the client and returns the copy relayed to the registrar. */
static void register_client(struct fixture *fx, unsigned cseq, const char *extra,
                            struct parsed *fwd, uint64_t now_ms)
{
    size_t len = fmt_register(cseq, CONTACT_LINES, extra);
    sent_reset();
    edge_rx_public(fx->e, 0, msg, len, (const struct sockaddr *)&fx->client, now_ms);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    parse_sent(0, fwd);
}

/*
 * The registrar's answer to a relayed REGISTER: its Via, From, To, Call-ID and CSeq,
 * then the Contact lines exactly as the registrar got them (a registrar without Path
 * support answers with the aliases it stored), then extra.
 */
static size_t fmt_answer(const struct parsed *req, const char *status, const char *extra)
{
    size_t n = (size_t)snprintf(resp, sizeof(resp), "SIP/2.0 %s\r\n", status);
    for (uint16_t i = 0; i < req->m.n_hdrs; i++) {
        const struct sip_hdr *h = &req->m.hdrs[i];
        if (h->id == SIP_HDR_VIA || h->id == SIP_HDR_FROM || h->id == SIP_HDR_TO ||
            h->id == SIP_HDR_CALL_ID || h->id == SIP_HDR_CSEQ || h->id == SIP_HDR_CONTACT) {
            assert_true(n + h->line_len < sizeof(resp));
            memcpy(resp + n, req->m.buf + h->off, h->line_len);
            n += h->line_len;
        }
    }
    n += (size_t)snprintf(resp + n, sizeof(resp) - n, "%sContent-Length: 0\r\n\r\n", extra);
    assert_true(n < sizeof(resp));
    return n;
}

static void rx_core(struct fixture *fx, const char *buf, size_t len, uint64_t now_ms)
{
    sent_reset();
    edge_rx_core(fx->e, buf, len, (const struct sockaddr *)&fx->registrar, now_ms);
}

/* The URI of the n-th Contact of a parsed message, NUL-terminated into out. */
static void contact_uri(const struct parsed *p, unsigned n, char *out, size_t cap)
{
    struct sip_nameaddr c[4];
    assert_true(contacts_of(&p->m, c, 4) > n);
    assert_true(c[n].uri.len < cap);
    memcpy(out, c[n].uri.p, c[n].uri.len);
    out[c[n].uri.len] = '\0';
}

/* An INVITE from the registrar to ruri, with optional extra header lines. */
static size_t fmt_invite(const char *ruri, const char *extra)
{
    int n = snprintf(inv, sizeof(inv),
                     "INVITE %s SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKkam0001\r\n"
                     "%s"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:bob@example.com>;tag=b1\r\n"
                     "To: <sip:alice@example.com>\r\n"
                     "Call-ID: inv-1@127.0.0.1\r\n"
                     "CSeq: 10 INVITE\r\n"
                     "Contact: <sip:bob@127.0.0.1:5080>\r\n"
                     "Content-Length: 0\r\n\r\n",
                     ruri, extra);
    assert_true(n > 0 && (size_t)n < sizeof(inv));
    return (size_t)n;
}

static void assert_single_reply_to_registrar(const struct fixture *fx, int status)
{
    struct parsed out;
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, EDGE_SOCK_CORE);
    assert_true(sent_to(0, SA(fx->registrar)));
    parse_sent(0, &out);
    assert_false(out.m.is_request);
    assert_int_equal(out.m.status, status);
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_CALL_ID)->value, "inv-1@127.0.0.1");
}

static const struct edge_stats *st(const struct fixture *fx) { return edge_stats(fx->e); }

/* ---- towards the registrar --------------------------------------------------------------- */

static void test_alias_register_contacts_become_aliases_and_no_path_is_added(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_nameaddr c[4];

    register_client(fx, 1, "", &fwd, 0);
    assert_null(sip_msg_hdr(&fwd.m, SIP_HDR_PATH));
    assert_null(sip_msg_hdr(&fwd.m, SIP_HDR_SUPPORTED));
    assert_null(strstr(sent[0].buf, "192.0.2.10:5062"));
    assert_int_equal(contacts_of(&fwd.m, c, 4), 2);
    struct slice tok = via_token(&fwd);
    struct flow_token_fields tf;
    assert_int_equal(flow_token_decode(fx->keys, tok, &tf), 0);
    assert_int_equal(tf.remote.in.sin_port, fx->client.sin_port);
    /* The URIs are aliases; display name and parameters are untouched. */
    assert_alias_of(c[0].uri, tok, CONTACT_1);
    assert_slice_equal(c[0].display, "\"Alice\"");
    assert_slice_equal(c[0].params.raw, ";expires=600;q=0.5;" INSTANCE ";reg-id=1");
    assert_alias_of(c[1].uri, tok, CONTACT_2);
    assert_slice_equal(c[1].params.raw, ";expires=300");
    /* The compact header name of the second line is kept. */
    assert_non_null(strstr(sent[0].buf, "\r\nm: sip:"));
    assert_int_equal(st(fx)->contacts_aliased, 2);
}

static void test_alias_register_star_removal_is_left_alone(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    struct sip_nameaddr c[2];

    size_t len = fmt_register(1, "Contact: *\r\n", "Expires: 0\r\n");
    sent_reset();
    edge_rx_public(fx->e, 0, msg, len, (const struct sockaddr *)&fx->client, 0);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &fwd);
    assert_int_equal(contacts_of(&fwd.m, c, 2), 1);
    assert_true(c[0].is_star);
    assert_null(sip_msg_hdr(&fwd.m, SIP_HDR_PATH));
    assert_int_equal(st(fx)->contacts_aliased, 0);
}

/* ---- responses back to the client ------------------------------------------------------- */

static void test_alias_registrar_2xx_shows_the_client_its_own_contacts(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    struct sip_nameaddr c[5];

    register_client(fx, 1, "", &fwd, 0);
    /* Besides this client's aliases, the registrar lists another device's binding
     * (an alias of another flow, as an addr-spec) and one not made by us. */
    char other[256], tok2[FLOW_TOKEN_MAX], enc[128], extra[512];
    struct flow_token_fields tf;
    assert_int_equal(flow_token_decode(fx->keys, via_token(&fwd), &tf), 0);
    tf.slot += 1;
    assert_true(flow_token_encode(fx->keys, &tf, tok2, sizeof(tok2)) > 0);
    const char *orig3 = "sip:alice@198.51.100.7:5090;transport=udp";
    b64url_encode((const uint8_t *)orig3, strlen(orig3), enc);
    enc[b64url_encoded_len(strlen(orig3))] = '\0';
    snprintf(other, sizeof(other), "sip:%s.%s@127.0.0.1:5070", tok2, enc);
    snprintf(extra, sizeof(extra),
             "Contact: %s;expires=100\r\nContact: <sip:alice@203.0.113.5>;expires=50\r\n", other);
    size_t len = fmt_answer(&fwd, "200 OK", extra);
    rx_core(fx, resp, len, 100);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    parse_sent(0, &out);
    assert_int_equal(out.m.status, 200);
    assert_int_equal(contacts_of(&out.m, c, 5), 4);
    assert_slice_equal(c[0].uri, CONTACT_1);
    assert_slice_equal(c[0].display, "\"Alice\"");
    assert_slice_equal(c[0].params.raw, ";expires=600;q=0.5;" INSTANCE ";reg-id=1");
    assert_slice_equal(c[1].uri, CONTACT_2);
    assert_slice_equal(c[1].params.raw, ";expires=300");
    /* The addr-spec alias comes back in angle brackets: its URI has parameters. */
    assert_slice_equal(c[2].uri, orig3);
    assert_slice_equal(c[2].params.raw, ";expires=100");
    assert_non_null(strstr(sent[0].buf, "Contact: <sip:alice@198.51.100.7:5090;transport=udp>;"));
    assert_slice_equal(c[3].uri, "sip:alice@203.0.113.5");
    assert_null(strstr(sent[0].buf, "127.0.0.1:5070"));
    assert_int_equal(st(fx)->contacts_restored, 3);
}

static void test_alias_cached_refresh_answers_with_the_original_contacts(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    struct sip_nameaddr c[4];

    fx->pol.regcache = true;
    edge_build(fx);
    register_client(fx, 1, AUTH_LINE, &fwd, 0);
    assert_int_equal(st(fx)->contacts_aliased, 2);
    rx_core(fx, resp, fmt_answer(&fwd, "200 OK", ""), 100);
    assert_int_equal(n_sent, 1);

    /* The same Contact set refreshed over the same flow: answered here. */
    size_t len = fmt_register(2, CONTACT_LINES, AUTH_LINE);
    sent_reset();
    edge_rx_public(fx->e, 0, msg, len, (const struct sockaddr *)&fx->client, 1000);
    assert_int_equal(st(fx)->regcache_hit, 1);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    parse_sent(0, &out);
    assert_int_equal(out.m.status, 200);
    assert_int_equal(contacts_of(&out.m, c, 4), 2);
    assert_slice_equal(c[0].uri, CONTACT_1);
    assert_slice_equal(c[1].uri, CONTACT_2);

    /* With aliasing switched off the registrar holds other contacts than the client
     * would register now: the next refresh goes upstream, with Path. */
    fx->pol.nat_contact_alias = false;
    edge_set_policy(fx->e, &fx->pol);
    register_client(fx, 3, AUTH_LINE, &fwd, 2000);
    assert_int_equal(st(fx)->regcache_hit, 1);
    assert_non_null(sip_msg_hdr(&fwd.m, SIP_HDR_PATH));
}

/* ---- requests from the registrar ---------------------------------------------------------- */

static void test_alias_inbound_invite_is_delivered_with_the_original_request_uri(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    char alias[512], alias2[512];

    register_client(fx, 1, "", &fwd, 0);
    contact_uri(&fwd, 0, alias, sizeof(alias));
    contact_uri(&fwd, 1, alias2, sizeof(alias2));
    size_t len = fmt_invite(alias, "");
    rx_core(fx, inv, len, 10);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    assert_int_equal(sent[0].sock, 0);
    parse_sent(0, &out);
    assert_true(out.m.is_request);
    assert_int_equal(out.m.method_id, SIP_METHOD_INVITE);
    assert_slice_equal(out.m.ruri, CONTACT_1);
    assert_true(memcmp(sent[0].buf, "INVITE " CONTACT_1 " SIP/2.0\r\n",
                       strlen("INVITE " CONTACT_1 " SIP/2.0\r\n")) == 0);
    assert_null(strstr(sent[0].buf, "127.0.0.1:5070"));
    /* Delivered like a Path-routed request: our Via on top, Max-Forwards decremented. */
    struct sip_via via;
    struct slice rest;
    assert_int_equal(sip_via_parse(sip_msg_hdr(&out.m, SIP_HDR_VIA)->value, &via, &rest), 0);
    assert_slice_equal(via.host, "127.0.0.1");
    assert_int_equal(via.port, 5060);
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_MAX_FORWARDS)->value, "69");
    assert_int_equal(st(fx)->inbound_delivered, 1);
    assert_int_equal(st(fx)->inbound_alias_delivered, 1);

    /* The second Contact's alias restores its own URI. */
    rx_core(fx, inv, fmt_invite(alias2, "Route: <sip:proxy@198.51.100.9;lr>\r\n"), 20);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    parse_sent(0, &out);
    assert_slice_equal(out.m.ruri, CONTACT_2);
    /* A Route that does not name us is left for the client. */
    assert_slice_equal(sip_msg_hdr(&out.m, SIP_HDR_ROUTE)->value,
                       "<sip:proxy@198.51.100.9;lr>");
}

static void test_alias_inbound_path_route_still_wins(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    char route[256];

    register_client(fx, 1, "", &fwd, 0);
    struct slice tok = via_token(&fwd);
    snprintf(route, sizeof(route), "Route: <sip:%.*s@127.0.0.1:5070;lr>\r\n", SLICE_FMT(tok));
    rx_core(fx, inv, fmt_invite("sip:alice@192.0.2.10:5060", route), 10);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    parse_sent(0, &out);
    assert_slice_equal(out.m.ruri, "sip:alice@192.0.2.10:5060");
    assert_null(sip_msg_hdr(&out.m, SIP_HDR_ROUTE));
    assert_int_equal(st(fx)->inbound_alias_delivered, 0);
}

static void test_alias_inbound_with_a_tampered_token_gets_403(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char alias[512];

    register_client(fx, 1, "", &fwd, 0);
    contact_uri(&fwd, 0, alias, sizeof(alias));
    alias[8] = alias[8] == 'x' ? 'y' : 'x'; /* inside the token ("sip:" + 4) */
    rx_core(fx, inv, fmt_invite(alias, ""), 10);
    assert_single_reply_to_registrar(fx, 403);
    assert_int_equal(st(fx)->reply_403_bad_token, 1);

    /* Not a token at all. */
    rx_core(fx, inv, fmt_invite("sip:alice.c2lwOmFAYg@127.0.0.1:5070", ""), 10);
    assert_single_reply_to_registrar(fx, 403);
    assert_int_equal(st(fx)->reply_403_bad_token, 2);
    assert_int_equal(count_sent_to(&fx->client), 0);
    assert_int_equal(st(fx)->inbound_delivered, 0);
}

static void test_alias_inbound_malformed_alias_gets_400_and_is_never_delivered(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd;
    char uri[512], enc[128];

    register_client(fx, 1, "", &fwd, 0);
    struct slice tok = via_token(&fwd);
    const char *no_uri = "not a uri";
    b64url_encode((const uint8_t *)no_uri, strlen(no_uri), enc);
    enc[b64url_encoded_len(strlen(no_uri))] = '\0';
    /* "c2lwOmFAYg" is "sip:a@b". */
    const char *bad[] = {
        "",            /* nothing after the dot */
        "c2lwOmFAYg!", /* outside the alphabet */
        "c2lwOmFAYg=", /* padding */
        "c2lwOmFAY",   /* 4n + 1 characters */
        "c2lwOmFAYh",  /* non-canonical: unused low bits set */
        "c2lwOmFAYgA", /* "sip:a@b" and a NUL byte */
        enc,           /* decodes, but not to a URI */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(uri, sizeof(uri), "sip:%.*s.%s@127.0.0.1:5070", SLICE_FMT(tok), bad[i]);
        rx_core(fx, inv, fmt_invite(uri, ""), 10);
        if (n_sent != 1 || count_sent_to(&fx->client) != 0)
            fail_msg("alias '%s': %zu messages", bad[i], n_sent);
        assert_single_reply_to_registrar(fx, 400);
        assert_int_equal(st(fx)->reply_400_bad_alias, i + 1);
    }
    assert_int_equal(st(fx)->inbound_delivered, 0);

    /* The well-formed alias of the same token is delivered. */
    snprintf(uri, sizeof(uri), "sip:%.*s.c2lwOmFAYg@127.0.0.1:5070", SLICE_FMT(tok));
    rx_core(fx, inv, fmt_invite(uri, ""), 10);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    struct parsed out;
    parse_sent(0, &out);
    assert_slice_equal(out.m.ruri, "sip:a@b");
}

/* ---- dead flows ----------------------------------------------------------------------- */

static void test_alias_dead_flow_gets_430_and_its_aliases_are_deregistered(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    uint64_t ref;
    char alias1[512], alias2[512];

    struct sockaddr_in ws = v4("192.0.2.30", 50000);
    assert_int_equal(edge_flow_open(fx->e, FLOW_WS, 0, (const struct sockaddr *)&ws, NULL, 77, 0, &ref),
                     0);
    /* Authenticated: only what the user's own credentials registered is asserted away. */
    size_t len = fmt_register(1, CONTACT_LINES, AUTH_LINE);
    sent_reset();
    edge_rx_flow(fx->e, ref, msg, len, 0);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    parse_sent(0, &fwd);
    contact_uri(&fwd, 0, alias1, sizeof(alias1));
    contact_uri(&fwd, 1, alias2, sizeof(alias2));
    assert_alias_of(slice_make(alias1, strlen(alias1)), via_token(&fwd), CONTACT_1);

    /* The registrar's 200 reaches the client over its connection, restored. */
    rx_core(fx, resp, fmt_answer(&fwd, "200 OK", ""), 100);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, SENT_CONN);
    assert_int_equal(sent[0].conn, 77);
    parse_sent(0, &out);
    char uri[512];
    contact_uri(&out, 0, uri, sizeof(uri));
    assert_string_equal(uri, CONTACT_1);

    /* While the connection is up, the alias leads to it. */
    rx_core(fx, inv, fmt_invite(alias2, ""), 200);
    assert_int_equal(n_sent, 1);
    assert_int_equal(sent[0].sock, SENT_CONN);
    parse_sent(0, &out);
    assert_slice_equal(out.m.ruri, CONTACT_2);

    /* The connection closes: 430 at once. */
    edge_flow_closed(fx->e, ref, 1000);
    rx_core(fx, inv, fmt_invite(alias1, ""), 1100);
    assert_single_reply_to_registrar(fx, 430);
    assert_int_equal(st(fx)->reply_430_flow_failed, 1);

    /* After the grace, the de-REGISTER names what the registrar holds: the aliases. */
    sent_reset();
    edge_tick_dead(fx->e, 1000 + (uint64_t)fx->pol.dead_flow_grace_s * 1000);
    assert_int_equal(st(fx)->dereg_sent, 1);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->registrar)));
    parse_sent(0, &out);
    assert_int_equal(out.m.method_id, SIP_METHOD_REGISTER);
    struct sip_nameaddr c[4];
    assert_int_equal(contacts_of(&out.m, c, 4), 2);
    assert_slice_equal(c[0].uri, alias1);
    assert_slice_equal(c[1].uri, alias2);
    struct slice v;
    assert_true(sip_params_get(c[0].params, "expires", &v));
    assert_slice_equal(v, "0");
    assert_true(sip_params_get(c[1].params, "expires", &v));
    assert_slice_equal(v, "0");
    assert_null(strstr(sent[0].buf, "192.0.2.10:506"));
}

/* ---- switched off ----------------------------------------------------------------------- */

static void test_alias_off_relays_with_path_and_leaves_contacts_alone(void **state)
{
    struct fixture *fx = *state;
    struct parsed fwd, out;
    struct sip_nameaddr c[4];
    char want[256];

    fx->pol.nat_contact_alias = false;
    edge_build(fx);
    register_client(fx, 1, "", &fwd, 0);
    struct slice tok = via_token(&fwd);
    snprintf(want, sizeof(want), "<sip:%.*s@127.0.0.1:5070;lr;ob>", SLICE_FMT(tok));
    assert_non_null(sip_msg_hdr(&fwd.m, SIP_HDR_PATH));
    assert_slice_equal(sip_msg_hdr(&fwd.m, SIP_HDR_PATH)->value, want);
    assert_true(sip_tag_list_has(sip_msg_hdr(&fwd.m, SIP_HDR_SUPPORTED)->value, "path"));
    assert_int_equal(contacts_of(&fwd.m, c, 4), 2);
    assert_slice_equal(c[0].uri, CONTACT_1);
    assert_slice_equal(c[1].uri, CONTACT_2);
    assert_non_null(strstr(sent[0].buf, CONTACT_LINES));
    assert_int_equal(st(fx)->contacts_aliased, 0);

    /* A registrar answer passes as it is, whatever its Contacts look like. */
    char alias[256], extra[300];
    snprintf(alias, sizeof(alias), "sip:%.*s.c2lwOmFAYg@127.0.0.1:5070", SLICE_FMT(tok));
    snprintf(extra, sizeof(extra), "Contact: <%s>\r\n", alias);
    size_t len = fmt_answer(&fwd, "200 OK", extra);
    rx_core(fx, resp, len, 10);
    assert_int_equal(n_sent, 1);
    parse_sent(0, &out);
    assert_int_equal(contacts_of(&out.m, c, 4), 3);
    assert_slice_equal(c[2].uri, alias);
    assert_int_equal(st(fx)->contacts_restored, 0);

    /* Path routing as before. */
    char route[256];
    snprintf(route, sizeof(route), "Route: <sip:%.*s@127.0.0.1:5070;lr>\r\n", SLICE_FMT(tok));
    rx_core(fx, inv, fmt_invite("sip:alice@192.0.2.10:5060", route), 20);
    assert_int_equal(n_sent, 1);
    assert_true(sent_to(0, SA(fx->client)));
    parse_sent(0, &out);
    assert_slice_equal(out.m.ruri, "sip:alice@192.0.2.10:5060");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_alias_register_contacts_become_aliases_and_no_path_is_added),
        T(test_alias_register_star_removal_is_left_alone),
        T(test_alias_registrar_2xx_shows_the_client_its_own_contacts),
        T(test_alias_cached_refresh_answers_with_the_original_contacts),
        T(test_alias_inbound_invite_is_delivered_with_the_original_request_uri),
        T(test_alias_inbound_path_route_still_wins),
        T(test_alias_inbound_with_a_tampered_token_gets_403),
        T(test_alias_inbound_malformed_alias_gets_400_and_is_never_delivered),
        T(test_alias_dead_flow_gets_430_and_its_aliases_are_deregistered),
        T(test_alias_off_relays_with_path_and_leaves_contacts_alone),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
