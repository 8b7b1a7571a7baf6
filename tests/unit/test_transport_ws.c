/* transport_ws: the pure handshake-policy helpers (Origin allowlist, UTF-8 check). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
