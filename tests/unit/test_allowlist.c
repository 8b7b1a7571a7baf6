/* allowlist: CIDR parsing and matching for IPv4 and IPv6. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "guard/guard_internal.h"

static struct ban_key key(const char *text)
{
    struct ban_key k;
    assert_int_equal(ban_key_parse(text, &k), 0);
    return k;
}

static void test_allowlist_parse_accepts_and_rejects(void **state)
{
    (void)state;
    struct cidr c;
    assert_int_equal(cidr_parse("198.18.0.0/15", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 15);
    assert_int_equal(cidr_parse("10.1.2.3", &c), 0);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(cidr_parse("2001:db8::/32", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(cidr_parse("::1", &c), 0);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(cidr_parse("10.0.0.0/33", &c), -EINVAL);
    assert_int_equal(cidr_parse("2001:db8::/129", &c), -EINVAL);
    assert_int_equal(cidr_parse("10.0.0.0/", &c), -EINVAL);
    assert_int_equal(cidr_parse("10.0.0.0/8x", &c), -EINVAL);
    assert_int_equal(cidr_parse("example.com", &c), -EINVAL);
    assert_int_equal(cidr_parse("", &c), -EINVAL);
    assert_int_equal(cidr_parse("192.0.2.0/24", NULL), 0);
}

static void test_allowlist_match_v4(void **state)
{
    (void)state;
    static const char texts[][48] = {"198.18.0.0/15", "203.0.113.7"};
    struct allowlist al;
    assert_int_equal(allowlist_set(&al, texts, 2), 0);
    struct ban_key in = key("198.19.255.254"), out = key("198.20.0.1");
    struct ban_key exact = key("203.0.113.7:5060"), next = key("203.0.113.8");
    assert_true(allowlist_match(&al, &in));
    assert_false(allowlist_match(&al, &out));
    assert_true(allowlist_match(&al, &exact));
    assert_false(allowlist_match(&al, &next));
}

static void test_allowlist_match_v6_and_family_separation(void **state)
{
    (void)state;
    static const char texts[][48] = {"2001:db8:1::/48", "0.0.0.0/0"};
    struct allowlist al;
    assert_int_equal(allowlist_set(&al, texts, 1), 0);
    struct ban_key in = key("2001:db8:1:ffff::1"), out = key("2001:db8:2::1");
    struct ban_key v4 = key("1.2.3.4");
    assert_true(allowlist_match(&al, &in));
    assert_false(allowlist_match(&al, &out));
    assert_false(allowlist_match(&al, &v4));
    assert_int_equal(allowlist_set(&al, texts, 2), 0);
    assert_true(allowlist_match(&al, &v4));
    assert_false(allowlist_match(&al, &out));
}

/* A prefix overlaps the list when it holds a listed address or lies inside a listed CIDR. */
static void test_allowlist_overlaps_prefix(void **state)
{
    (void)state;
    static const char texts[][48] = {"2001:db8:1:2::10/128", "2001:db8:9::/48", "10.0.0.0/8"};
    struct allowlist al;
    assert_int_equal(allowlist_set(&al, texts, 3), 0);
    struct ban_key holds = key("2001:db8:1:2::"), inside = key("2001:db8:9:5::");
    struct ban_key apart = key("2001:db8:1:3::"), v4 = key("10.1.2.3"), v4o = key("11.0.0.1");
    assert_true(allowlist_overlaps(&al, &holds, 64));
    assert_false(allowlist_match(&al, &holds));
    assert_true(allowlist_overlaps(&al, &inside, 64));
    assert_false(allowlist_overlaps(&al, &apart, 64));
    assert_true(allowlist_overlaps(&al, &apart, 32)); /* 2001:db8::/32 holds them all */
    assert_true(allowlist_overlaps(&al, &v4, 32));
    assert_false(allowlist_overlaps(&al, &v4o, 32));
}

static void test_allowlist_host_bits_are_masked(void **state)
{
    (void)state;
    static const char texts[][48] = {"10.1.2.3/8"};
    struct allowlist al;
    assert_int_equal(allowlist_set(&al, texts, 1), 0);
    struct ban_key k = key("10.200.0.1");
    assert_true(allowlist_match(&al, &k));
}

static void test_allowlist_set_bad_entry_leaves_list(void **state)
{
    (void)state;
    static const char good[][48] = {"10.0.0.0/8"};
    static const char bad[][48] = {"192.0.2.0/24", "nope"};
    struct allowlist al;
    assert_int_equal(allowlist_set(&al, good, 1), 0);
    assert_int_equal(allowlist_set(&al, bad, 2), -EINVAL);
    assert_int_equal(al.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowlist_parse_accepts_and_rejects),
        cmocka_unit_test(test_allowlist_match_v4),
        cmocka_unit_test(test_allowlist_match_v6_and_family_separation),
        cmocka_unit_test(test_allowlist_overlaps_prefix),
        cmocka_unit_test(test_allowlist_host_bits_are_masked),
        cmocka_unit_test(test_allowlist_set_bad_entry_leaves_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
