/*
 * The owner of a ban (src/worker/ban_relay.c) is the worker whose socket the kernel's
 * steering program gives the source's packets: a ban decided, restored or commanded for
 * a source lands in the guard that sees that source.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "sipedge/ban.h"
#include "transport/reuseport_steer.h"
#include "worker/worker_priv.h"

static void test_owner_matches_steering_v4(void **state)
{
    (void)state;
    unsigned seen[3] = {0};
    for (unsigned i = 0; i < 200; i++) {
        char text[32];
        snprintf(text, sizeof(text), "198.18.%u.%u", i / 50, 1 + i % 50);
        struct ban_key k;
        assert_int_equal(ban_key_parse(text, &k), 0);
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000 + i)};
        assert_int_equal(inet_pton(AF_INET, text, &sin.sin_addr), 1);
        for (unsigned n = 1; n <= 3; n++) {
            unsigned o = ban_key_owner(&k, n);
            assert_true(o < n);
            assert_int_equal(o, reuseport_steer_index((const struct sockaddr *)&sin, n));
            if (n == 3)
                seen[o]++;
        }
    }
    /* Every worker owns some of 200 sources. */
    assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
}

static void test_owner_matches_steering_v6_prefix(void **state)
{
    (void)state;
    struct ban_key k;
    assert_int_equal(ban_key_parse("2001:db8:1:2::", &k), 0);
    const char *in_prefix[] = {"2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3"};
    for (unsigned i = 0; i < 2; i++) {
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(5060)};
        assert_int_equal(inet_pton(AF_INET6, in_prefix[i], &s6.sin6_addr), 1);
        for (unsigned n = 2; n <= 5; n++)
            assert_int_equal(ban_key_owner(&k, n),
                             reuseport_steer_index((const struct sockaddr *)&s6, n));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_matches_steering_v4),
        cmocka_unit_test(test_owner_matches_steering_v6_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
