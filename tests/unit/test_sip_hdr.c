/* sip_hdr: Via, URI, name-addr, params, CSeq, expires, tag lists, auth params. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/sip_hdr.h"

#define S(x) slice_make((x), strlen(x))
#define assert_slice(sl, lit) assert_true(slice_eq((sl), SLICE_LIT(lit)))

static void test_sip_hdr_via_params_branch_rport_received(void **state)
{
    struct sip_via v;
    struct slice rest;

    (void)state;
    assert_int_equal(sip_via_parse(S("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77;rport"), &v,
                                   &rest), 0);
    assert_slice(v.transport, "UDP");
    assert_slice(v.host, "192.0.2.1");
    assert_int_equal(v.port, 5060);
    assert_slice(v.branch, "z9hG4bK77");
    assert_true(v.has_rport);
    assert_int_equal(v.rport.len, 0);
    assert_int_equal(v.received.len, 0);
    assert_int_equal(rest.len, 0);

    assert_int_equal(sip_via_parse(S("SIP/2.0/WSS h.invalid;rport=5062;received=192.0.2.9;"
                                     "branch=z9hG4bKx"), &v, &rest), 0);
    assert_slice(v.rport, "5062");
    assert_slice(v.received, "192.0.2.9");
    assert_int_equal(v.port, 0);

    assert_int_equal(sip_via_parse(S("SIP/2.0/TCP h;branch=z9hG4bKx"), &v, &rest), 0);
    assert_false(v.has_rport);
}

static void test_sip_hdr_via_ipv6_host(void **state)
{
    struct sip_via v;

    (void)state;
    assert_int_equal(sip_via_parse(S("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1"), &v, NULL),
                     0);
    assert_slice(v.host, "[2001:db8::1]");
    assert_int_equal(v.port, 5060);
    assert_int_equal(sip_via_parse(S("SIP/2.0/UDP [2001:db8::1;branch=z9hG4bK1"), &v, NULL),
                     -EBADMSG);
}

static void test_sip_hdr_via_list_and_lws(void **state)
{
    struct sip_via v;
    struct slice rest;
    struct slice s = S("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw ,\r\n"
                       " SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9 ");

    (void)state;
    assert_int_equal(sip_via_parse(s, &v, &rest), 0);
    assert_slice(v.host, "192.0.2.2");
    assert_slice(v.branch, "390skdjuw");
    assert_true(rest.len > 0);
    assert_int_equal(sip_via_parse(rest, &v, &rest), 0);
    assert_slice(v.transport, "TCP");
    assert_slice(v.branch, "z9hG4bK9");
    assert_int_equal(rest.len, 0);
}

static void test_sip_hdr_via_rejects_malformed(void **state)
{
    static const char *bad[] = {
        "SIP/2.0/UDP 192.0.2.15;;,;,,", "SIP/7.0/UDP h", "SIP/2.0/UDP", "SIP/2.0/UDP h:0",
        "SIP/2.0/UDP h:70000", "SIP/2.0 UDP h", "SIP/2.0/UDP h;branch=", "SIP/2.0/UDP h,",
        "SIP/2.0/UDP h x", "", "SIP/2.0/UDPh",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sip_via v;
        if (sip_via_parse(S(bad[i]), &v, NULL) != -EBADMSG)
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_sip_hdr_uri_parts(void **state)
{
    struct sip_uri u;
    bool is_sip = false;
    struct slice v;

    (void)state;
    assert_int_equal(sip_uri_parse(S("sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?X=1"),
                                   &u, &is_sip), 0);
    assert_true(is_sip);
    assert_slice(u.scheme, "sips");
    assert_slice(u.user, "alice");
    assert_slice(u.host, "[2001:db8::1]");
    assert_int_equal(u.port, 5061);
    assert_slice(u.params.raw, ";transport=tls;lr");
    assert_slice(u.headers, "X=1");
    assert_true(sip_params_get(u.params, "transport", &v));
    assert_slice(v, "tls");
    assert_true(sip_params_get(u.params, "LR", &v));
    assert_int_equal(v.len, 0);
    assert_false(sip_params_get(u.params, "maddr", &v));

    assert_int_equal(sip_uri_parse(S("sip:example.com"), &u, &is_sip), 0);
    assert_int_equal(u.user.len, 0);
    assert_int_equal(u.port, 0);

    /* user-unreserved allows ';' '?' ',' '/' before the '@' (RFC 3261 §25.1). */
    assert_int_equal(sip_uri_parse(S("sip:user;par=u%40x?,/@example.com"), &u, &is_sip), 0);
    assert_slice(u.host, "example.com");
    assert_int_equal(u.headers.len, 0);

    assert_int_equal(sip_uri_parse(S("urn:uuid:f81d4fae"), &u, &is_sip), 0);
    assert_false(is_sip);
    assert_slice(u.scheme, "urn");
}

static void test_sip_hdr_uri_rejects_malformed(void **state)
{
    static const char *bad[] = {
        "sip:user@example.com ", "sip:a b@c", "<sip:a@b>", "sip:", "example.com", "sip:@h",
        "sip:a@h:port", "sip:a@h:0", "sip:a@[::1", "sip:a@h;", "1sip:a@h", "sip:a@h;;lr",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sip_uri u;
        bool is_sip;
        if (sip_uri_parse(S(bad[i]), &u, &is_sip) != -EBADMSG)
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_sip_hdr_nameaddr_forms(void **state)
{
    struct sip_nameaddr na;
    struct slice rest, v;

    (void)state;
    assert_int_equal(sip_nameaddr_parse(S("\"A \\\"B\\\" C\" <sip:a@b>;tag=x"), &na, &rest), 0);
    assert_slice(na.display, "\"A \\\"B\\\" C\"");
    assert_slice(na.uri, "sip:a@b");
    assert_true(sip_params_get(na.params, "tag", &v));
    assert_slice(v, "x");

    assert_int_equal(sip_nameaddr_parse(S("Bob Smith<sip:b@c>"), &na, &rest), 0);
    assert_slice(na.display, "Bob Smith");

    /* A bare addr-spec ends at ';': the params belong to the header (RFC 3261 §20.10). */
    assert_int_equal(sip_nameaddr_parse(S("sip:a@b;user=phone ; tag = 9"), &na, &rest), 0);
    assert_slice(na.uri, "sip:a@b");
    assert_true(sip_params_get(na.params, "user", &v));
    assert_true(sip_params_get(na.params, "tag", &v));
    assert_slice(v, "9");
    assert_int_equal(na.display.len, 0);
}

static void test_sip_hdr_nameaddr_rejects_malformed(void **state)
{
    static const char *bad[] = {
        "\"Mr. J. User <sip:j.user@example.com>", "\"Watson, T\" < sip:t@example.org >",
        "Bell, Alexander <sip:a@b>", "sip:user@example.com?Route=x", "<sip:a@b", "Bob",
        "<sip:a@b>;;", "<sip:a@b>;tag=", "Bob@ <sip:a@b>", "<sip:a@b> junk", "<sip:a@b>,",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sip_nameaddr na;
        struct slice rest;
        if (sip_nameaddr_parse(S(bad[i]), &na, &rest) != -EBADMSG)
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_sip_hdr_contact_list_star_expires_q_regid_instance(void **state)
{
    struct slice s = S("<sip:a@[2001:db8::1]:5060;transport=ws>;expires=600;q=0.7;reg-id=1;"
                       "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\","
                       "\r\n  \"B, x\" <sip:b@h2>;q=0.1 , sip:c@h3;expires=0");
    struct sip_nameaddr na;
    struct slice rest, v;
    uint32_t e;

    (void)state;
    assert_int_equal(sip_nameaddr_parse(s, &na, &rest), 0);
    assert_slice(na.uri, "sip:a@[2001:db8::1]:5060;transport=ws");
    assert_true(sip_params_get(na.params, "expires", &v));
    assert_int_equal(sip_expires_parse(v, &e), 0);
    assert_int_equal(e, 600);
    assert_true(sip_params_get(na.params, "q", &v));
    assert_slice(v, "0.7");
    assert_true(sip_params_get(na.params, "reg-id", &v));
    assert_slice(v, "1");
    assert_true(sip_params_get(na.params, "+sip.instance", &v));
    assert_slice(v, "\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"");

    assert_int_equal(sip_nameaddr_parse(rest, &na, &rest), 0);
    assert_slice(na.display, "\"B, x\"");
    assert_slice(na.uri, "sip:b@h2");
    assert_int_equal(sip_nameaddr_parse(rest, &na, &rest), 0);
    assert_slice(na.uri, "sip:c@h3");
    assert_true(sip_params_get(na.params, "expires", &v));
    assert_slice(v, "0");
    assert_int_equal(rest.len, 0);

    assert_int_equal(sip_nameaddr_parse(S(" * "), &na, &rest), 0);
    assert_true(na.is_star);
    assert_int_equal(rest.len, 0);
    assert_int_equal(sip_nameaddr_parse(S("*, <sip:a@b>"), &na, &rest), 0);
    assert_true(na.is_star);
    assert_true(rest.len > 0);
}

static void test_sip_hdr_cseq(void **state)
{
    uint32_t n = 0;
    struct slice m;

    (void)state;
    assert_int_equal(sip_cseq_parse(S("0009\r\n  INVITE"), &n, &m), 0);
    assert_int_equal(n, 9);
    assert_slice(m, "INVITE");
    assert_int_equal(sip_cseq_parse(S("2147483647 REGISTER"), &n, &m), 0);
    assert_int_equal(sip_cseq_parse(S("2147483648 REGISTER"), &n, &m), -EBADMSG);
    assert_int_equal(sip_cseq_parse(S("36893488147419103232 REGISTER"), &n, &m), -EBADMSG);
    assert_int_equal(sip_cseq_parse(S("1REGISTER"), &n, &m), -EBADMSG);
    assert_int_equal(sip_cseq_parse(S("1 REGISTER x"), &n, &m), -EBADMSG);
    assert_int_equal(sip_cseq_parse(S("REGISTER"), &n, &m), -EBADMSG);
}

static void test_sip_hdr_expires_range(void **state)
{
    uint32_t e = 1;

    (void)state;
    assert_int_equal(sip_expires_parse(S("0"), &e), 0);
    assert_int_equal(e, 0);
    assert_int_equal(sip_expires_parse(S("4294967295"), &e), 0);
    assert_int_equal(e, 4294967295u);
    assert_int_equal(sip_expires_parse(S("4294967296"), &e), -EBADMSG);
    assert_int_equal(sip_expires_parse(S("-1"), &e), -EBADMSG);
    assert_int_equal(sip_expires_parse(S("1h"), &e), -EBADMSG);
}

static void test_sip_hdr_tag_list(void **state)
{
    (void)state;
    assert_true(sip_tag_list_has(S("path, Outbound,gruu"), "outbound"));
    assert_true(sip_tag_list_has(S("path"), "path"));
    assert_false(sip_tag_list_has(S("paths, outbound"), "path"));
    assert_false(sip_tag_list_has(SLICE_NULL, "path"));
}

static void test_sip_hdr_auth_params(void **state)
{
    struct slice v = S("Digest username=\"alice\", realm=\"example.com\",\r\n nonce=\"a,b\", "
                       "uri=\"sip:example.com\", algorithm=MD5, response=\"0123\"");
    struct slice out;

    (void)state;
    assert_true(sip_auth_param(v, "username", &out));
    assert_slice(out, "alice");
    assert_true(sip_auth_param(v, "NONCE", &out));
    assert_slice(out, "a,b");
    assert_true(sip_auth_param(v, "algorithm", &out));
    assert_slice(out, "MD5");
    assert_true(sip_auth_param(v, "response", &out));
    assert_slice(out, "0123");
    assert_false(sip_auth_param(v, "opaque", &out));
    assert_false(sip_auth_param(S("Digest"), "realm", &out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_hdr_via_params_branch_rport_received),
        cmocka_unit_test(test_sip_hdr_via_ipv6_host),
        cmocka_unit_test(test_sip_hdr_via_list_and_lws),
        cmocka_unit_test(test_sip_hdr_via_rejects_malformed),
        cmocka_unit_test(test_sip_hdr_uri_parts),
        cmocka_unit_test(test_sip_hdr_uri_rejects_malformed),
        cmocka_unit_test(test_sip_hdr_nameaddr_forms),
        cmocka_unit_test(test_sip_hdr_nameaddr_rejects_malformed),
        cmocka_unit_test(test_sip_hdr_contact_list_star_expires_q_regid_instance),
        cmocka_unit_test(test_sip_hdr_cseq),
        cmocka_unit_test(test_sip_hdr_expires_range),
        cmocka_unit_test(test_sip_hdr_tag_list),
        cmocka_unit_test(test_sip_hdr_auth_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
