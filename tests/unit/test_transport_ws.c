/* transport_ws: the pure handshake-policy helpers (Origin allowlist, subprotocol, UTF-8
 * check) and the per-IP admission table. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "transport/transport_ws_internal.h"

static unsigned allow(struct ws_origin *out, const char *const *list, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(transport_ws_origin_parse(list[i], strlen(list[i]), &out[i]), 0);
    return n;
}

static bool allowed(const struct ws_origin *a, unsigned n, const char *origin)
{
    return transport_ws_origin_allowed(a, n, origin, strlen(origin));
}

static void test_transport_ws_origin_without_port_matches_any_port(void **state)
{
    (void)state;
    struct ws_origin a[1];
    unsigned n = allow(a, (const char *const[]){"https://good.example"}, 1);
    assert_true(allowed(a, n, "https://good.example"));
    assert_true(allowed(a, n, "https://good.example:8443"));
    assert_true(allowed(a, n, "HTTPS://Good.Example"));
    assert_false(allowed(a, n, "http://good.example"));
    assert_false(allowed(a, n, "https://evil.example"));
    assert_false(allowed(a, n, "https://good.example.evil.example"));
    assert_false(allowed(a, n, "https://evilgood.example"));
}

static void test_transport_ws_origin_with_port_matches_only_that_port(void **state)
{
    (void)state;
    struct ws_origin a[2];
    unsigned n = allow(a, (const char *const[]){"https://good.example:8443",
                                                "http://[::1]:8080"}, 2);
    assert_true(allowed(a, n, "https://good.example:8443"));
    assert_false(allowed(a, n, "https://good.example"));      /* default 443 */
    assert_false(allowed(a, n, "https://good.example:9443"));
    assert_true(allowed(a, n, "http://[::1]:8080"));
    assert_false(allowed(a, n, "http://[::1]"));
}

static void test_transport_ws_origin_default_port_is_explicit_match(void **state)
{
    (void)state;
    struct ws_origin a[1];
    unsigned n = allow(a, (const char *const[]){"https://good.example:443"}, 1);
    assert_true(allowed(a, n, "https://good.example"));
    assert_true(allowed(a, n, "https://good.example:443"));
}

static void test_transport_ws_origin_empty_list_allows_everything(void **state)
{
    (void)state;
    assert_true(transport_ws_origin_allowed(NULL, 0, "null", 4));
    assert_true(transport_ws_origin_allowed(NULL, 0, "https://x.example", 17));
}

static void test_transport_ws_origin_null_and_malformed_are_refused(void **state)
{
    (void)state;
    struct ws_origin a[1];
    unsigned n = allow(a, (const char *const[]){"https://good.example"}, 1);
    assert_false(allowed(a, n, "null"));
    assert_false(allowed(a, n, ""));
    assert_false(allowed(a, n, "good.example"));
    assert_false(allowed(a, n, "https://"));
    assert_false(allowed(a, n, "https://good.example:"));
    assert_false(allowed(a, n, "https://good.example:99999"));
    assert_false(allowed(a, n, "https://good.example:80x"));
    assert_false(allowed(a, n, "https://user@good.example"));
    assert_false(allowed(a, n, "https://good.example/path"));
}

static void test_transport_ws_origin_parse_rejects_bad_config(void **state)
{
    (void)state;
    struct ws_origin o;
    memset(&o, 0x5a, sizeof(o));
    struct ws_origin before = o;
    assert_int_equal(transport_ws_origin_parse("good.example", 12, &o), -EINVAL);
    assert_int_equal(transport_ws_origin_parse("https://[::1", 12, &o), -EINVAL);
    assert_int_equal(transport_ws_origin_parse("https://h:0", 11, &o), -EINVAL);
    assert_memory_equal(&o, &before, sizeof(o)); /* written only on success */
    assert_int_equal(transport_ws_origin_parse("https://good.example/", 21, &o), 0);
    assert_string_equal(o.host, "good.example");
    assert_false(o.has_port);
}

static void test_transport_ws_utf8_accepts_sip_and_rejects_invalid(void **state)
{
    (void)state;
    const char *sip = "INVITE sip:bob@example.com SIP/2.0\r\nFrom: \"J\xc3\xbcrgen\" <sip:j@x>\r\n";
    assert_true(transport_ws_is_utf8((const unsigned char *)sip, strlen(sip)));
    assert_true(transport_ws_is_utf8((const unsigned char *)"\xf0\x9f\x98\x80", 4));
    assert_false(transport_ws_is_utf8((const unsigned char *)"\xff", 1));
    assert_false(transport_ws_is_utf8((const unsigned char *)"\xc0\xaf", 2));     /* overlong */
    assert_false(transport_ws_is_utf8((const unsigned char *)"\xed\xa0\x80", 3)); /* surrogate */
    assert_false(transport_ws_is_utf8((const unsigned char *)"\xf4\x90\x80\x80", 4));
    assert_false(transport_ws_is_utf8((const unsigned char *)"ok\xe2\x82", 4)); /* truncated */
    assert_true(transport_ws_is_utf8((const unsigned char *)"", 0));
}

static void test_transport_ws_utf8_word_skip_keeps_every_offset(void **state)
{
    (void)state;
    /* The scan skips ASCII 8 bytes at a time: a bad or multi-byte sequence at any offset,
     * also across a word boundary, is still judged. */
    unsigned char buf[40];
    for (size_t at = 0; at + 4 <= sizeof(buf); at++) {
        memset(buf, 'a', sizeof(buf));
        buf[at] = 0xff;
        assert_false(transport_ws_is_utf8(buf, sizeof(buf)));
        memcpy(buf + at, "\xf0\x9f\x98\x80", 4);
        assert_true(transport_ws_is_utf8(buf, sizeof(buf)));
        assert_false(transport_ws_is_utf8(buf, at + 3)); /* cut inside the sequence */
        buf[at + 2] = 'a';
        assert_false(transport_ws_is_utf8(buf, sizeof(buf)));
    }
}

static union ws_ip_key key_of(const char *ip, unsigned prefix)
{
    union ws_addr a;
    union ws_ip_key k;
    memset(&a, 0, sizeof(a));
    if (inet_pton(AF_INET6, ip, &a.in6.sin6_addr) == 1) {
        a.in6.sin6_family = AF_INET6;
    } else {
        assert_int_equal(inet_pton(AF_INET, ip, &a.in.sin_addr), 1);
        a.in.sin_family = AF_INET;
    }
    transport_ws_ip_key(&a.sa, prefix, &k);
    return k;
}

static bool same_key(const char *x, const char *y, unsigned prefix)
{
    union ws_ip_key a = key_of(x, prefix), b = key_of(y, prefix);
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static void test_transport_ws_ip_key_groups_ipv6_by_prefix(void **state)
{
    (void)state;
    /* One /64 is one entry: a host cannot fill the per-IP table or multiply its caps. */
    assert_true(same_key("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", 64));
    assert_false(same_key("2001:db8:1:2::1", "2001:db8:1:3::1", 64));
    /* Prefixes that are not a whole byte. */
    assert_true(same_key("2001:db8:1:2::1", "2001:db8:1:3::1", 63));
    assert_false(same_key("2001:db8:1:2::1", "2001:db8:1:4::1", 63));
    assert_true(same_key("2001:db8:0:1::", "2001:db8:0:1:7fff::", 65));
    assert_false(same_key("2001:db8:0:1::", "2001:db8:0:1:8000::", 65));
    /* 128 (and out-of-range values) key the full address. */
    assert_false(same_key("2001:db8::1", "2001:db8::2", 128));
    assert_false(same_key("2001:db8::1", "2001:db8::2", 0));
    /* IPv4 is keyed by the full address, IPv4-mapped IPv6 the same as IPv4. */
    assert_false(same_key("192.0.2.1", "192.0.2.2", 64));
    assert_true(same_key("192.0.2.1", "::ffff:192.0.2.1", 64));
    assert_false(same_key("192.0.2.1", "::ffff:192.0.2.2", 32));
    /* The masked-off bits are zero: the key does not depend on them. */
    union ws_ip_key k = key_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64);
    for (unsigned i = 8; i < 16; i++)
        assert_int_equal(k.addr[i], 0);
}

static void test_transport_ws_offers_sip_token_only(void **state)
{
    (void)state;
    char a[] = "sip", b[] = "xmpp, sip", c[] = " sip\t,x", d[] = "sips", e[] = "xmpp",
         f[] = "", g[] = "SIP", h[] = "x-sip,sip-x";
    assert_true(transport_ws_offers_sip(a));
    assert_true(transport_ws_offers_sip(b));
    assert_true(transport_ws_offers_sip(c));
    assert_false(transport_ws_offers_sip(d));
    assert_false(transport_ws_offers_sip(e));
    assert_false(transport_ws_offers_sip(f));
    assert_false(transport_ws_offers_sip(g)); /* the registered name is lower case */
    assert_false(transport_ws_offers_sip(h));
}

static void test_transport_ws_ip_table_handshake_rate_and_sweep(void **state)
{
    (void)state;
    struct ws_ip_table tb;
    assert_int_equal(ws_ip_table_init(&tb), 0);
    union ws_ip_key k = key_of("192.0.2.7", 64), k2 = key_of("192.0.2.8", 64);
    uint64_t now = 1000000;
    struct ws_ip *e = ws_ip_get(&tb, &k, 5, now);
    assert_non_null(e);
    assert_ptr_equal(ws_ip_get(&tb, &k, 5, now), e);
    /* Burst of twice the rate, then one handshake per 1/rate seconds. */
    for (int i = 0; i < 10; i++)
        assert_true(ws_ip_allow_handshake(e, 5, now));
    assert_false(ws_ip_allow_handshake(e, 5, now));
    assert_false(ws_ip_allow_handshake(e, 5, now + 199));
    assert_true(ws_ip_allow_handshake(e, 5, now + 200));
    assert_false(ws_ip_allow_handshake(e, 5, now + 200));
    /* An entry stays while its bucket refills or it holds a connection. */
    struct ws_ip *e2 = ws_ip_get(&tb, &k2, 5, now);
    e2->n_conns = 1;
    ws_ip_sweep(&tb, 5, now + 1000);
    assert_int_equal(tb.n_used, 2);
    ws_ip_sweep(&tb, 5, now + 2200);
    assert_int_equal(tb.n_used, 1); /* k is full again and holds nothing */
    assert_ptr_equal(ws_ip_get(&tb, &k2, 5, now + 2200), e2);
    e2->n_conns = 0;
    ws_ip_sweep(&tb, 5, now + 2200);
    assert_int_equal(tb.n_used, 0);
    ws_ip_table_free(&tb);
}

static void test_transport_ws_ip_table_is_bounded(void **state)
{
    (void)state;
    struct ws_ip_table tb;
    assert_int_equal(ws_ip_table_init(&tb), 0);
    union ws_ip_key k;
    memset(&k, 0, sizeof(k));
    k.family = AF_INET;
    for (uint32_t i = 0; i < WS_IP_CAP; i++) {
        memcpy(k.addr, &i, sizeof(i));
        assert_non_null(ws_ip_get(&tb, &k, 1, 0));
    }
    uint32_t i = WS_IP_CAP;
    memcpy(k.addr, &i, sizeof(i));
    assert_null(ws_ip_get(&tb, &k, 1, 0));
    /* Swept entries are reused. */
    ws_ip_sweep(&tb, 1, 10000);
    assert_int_equal(tb.n_used, 0);
    assert_non_null(ws_ip_get(&tb, &k, 1, 10000));
    ws_ip_table_free(&tb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transport_ws_origin_without_port_matches_any_port),
        cmocka_unit_test(test_transport_ws_origin_with_port_matches_only_that_port),
        cmocka_unit_test(test_transport_ws_origin_default_port_is_explicit_match),
        cmocka_unit_test(test_transport_ws_origin_empty_list_allows_everything),
        cmocka_unit_test(test_transport_ws_origin_null_and_malformed_are_refused),
        cmocka_unit_test(test_transport_ws_origin_parse_rejects_bad_config),
        cmocka_unit_test(test_transport_ws_utf8_accepts_sip_and_rejects_invalid),
        cmocka_unit_test(test_transport_ws_utf8_word_skip_keeps_every_offset),
        cmocka_unit_test(test_transport_ws_ip_key_groups_ipv6_by_prefix),
        cmocka_unit_test(test_transport_ws_offers_sip_token_only),
        cmocka_unit_test(test_transport_ws_ip_table_handshake_rate_and_sweep),
        cmocka_unit_test(test_transport_ws_ip_table_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
