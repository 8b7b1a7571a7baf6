/* netaddr: address text (netaddr_ip, netaddr_format) and numeric host parsing
 * (netaddr_from_host): IPv4, bracketed and bare IPv6, default port, bad input. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/netaddr.h"

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static void test_ip_without_brackets_and_port(void **state)
{
    (void)state;
    char ip[INET6_ADDRSTRLEN];
    unsigned port = 1;
    struct sockaddr_storage a = v4("192.0.2.1", 5060);
    assert_true(netaddr_ip(SA(a), ip, sizeof(ip), &port));
    assert_string_equal(ip, "192.0.2.1");
    assert_int_equal(port, 5060);
    struct sockaddr_storage b = v6("2001:db8::1", 5061);
    assert_true(netaddr_ip(SA(b), ip, sizeof(ip), &port));
    assert_string_equal(ip, "2001:db8::1");
    assert_int_equal(port, 5061);
    /* Another family: false, empty text, port 0. */
    struct sockaddr_storage u;
    memset(&u, 0, sizeof(u));
    u.ss_family = AF_UNIX;
    assert_false(netaddr_ip(SA(u), ip, sizeof(ip), &port));
    assert_string_equal(ip, "");
    assert_int_equal(port, 0);
    /* Too small a buffer for the text. */
    char tiny[4];
    assert_false(netaddr_ip(SA(a), tiny, sizeof(tiny), &port));
}

static void test_format_ip_port(void **state)
{
    (void)state;
    char out[NETADDR_TEXT_MAX];
    struct sockaddr_storage a = v4("198.51.100.7", 5060);
    assert_int_equal(netaddr_format(SA(a), out, sizeof(out)), strlen("198.51.100.7:5060"));
    assert_string_equal(out, "198.51.100.7:5060");
    struct sockaddr_storage b = v6("::1", 0);
    netaddr_format(SA(b), out, sizeof(out));
    assert_string_equal(out, "[::1]:0");
    struct sockaddr_storage c = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    size_t n = netaddr_format(SA(c), out, sizeof(out));
    assert_string_equal(out, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    assert_int_equal(n, strlen(out));
    /* Cut to the buffer, still NUL-terminated, the length says what was kept. */
    char small[8];
    assert_int_equal(netaddr_format(SA(a), small, sizeof(small)), 7);
    assert_string_equal(small, "198.51.");
    struct sockaddr_storage u;
    memset(&u, 0, sizeof(u));
    u.ss_family = AF_UNIX;
    out[0] = 'x';
    assert_int_equal(netaddr_format(SA(u), out, sizeof(out)), 0);
    assert_string_equal(out, "");
}

static void test_from_host_ipv4_and_default_port(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    assert_int_equal(netaddr_from_host(SLICE_LIT("192.0.2.9"), 5070, 5060, &ss), 0);
    struct sockaddr_storage want = v4("192.0.2.9", 5070);
    assert_true(netaddr_eq(SA(ss), SA(want)));
    assert_int_equal(netaddr_len(SA(ss)), sizeof(struct sockaddr_in));
    assert_int_equal(netaddr_from_host(SLICE_LIT("192.0.2.9"), 0, 5060, &ss), 0);
    want = v4("192.0.2.9", 5060);
    assert_true(netaddr_eq(SA(ss), SA(want)));
}

static void test_from_host_ipv6_bracketed_and_bare(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    struct sockaddr_storage want = v6("2001:db8::5", 5060);
    assert_int_equal(netaddr_from_host(SLICE_LIT("[2001:db8::5]"), 0, 5060, &ss), 0);
    assert_true(netaddr_eq(SA(ss), SA(want)));
    assert_int_equal(netaddr_len(SA(ss)), sizeof(struct sockaddr_in6));
    assert_int_equal(netaddr_from_host(SLICE_LIT("2001:db8::5"), 5060, 0, &ss), 0);
    assert_true(netaddr_eq(SA(ss), SA(want)));
    /* The host part of a longer buffer: only the slice is read. */
    const char text[] = "[::1]:5062";
    assert_int_equal(netaddr_from_host(slice_make(text, 5), 5062, 5060, &ss), 0);
    want = v6("::1", 5062);
    assert_true(netaddr_eq(SA(ss), SA(want)));
}

static void test_from_host_bad_input(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    static const char *const bad[] = {
        "",
        "[]",
        "example.com",
        "192.0.2",
        "192.0.2.256",
        "[192.0.2.1]", /* IPv4 is never bracketed */
        "[::1",
        "::1]",
        "2001:db8::1::2",
        "1.2.3.4 ",
        "0123456789012345678901234567890123456789012345678", /* longer than any address */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(netaddr_from_host(slice_make(bad[i], strlen(bad[i])), 0, 5060, &ss),
                         -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_without_brackets_and_port),
        cmocka_unit_test(test_format_ip_port),
        cmocka_unit_test(test_from_host_ipv4_and_default_port),
        cmocka_unit_test(test_from_host_ipv6_bracketed_and_bare),
        cmocka_unit_test(test_from_host_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
