/* siphash: reference values (key 00..0f, message 00..n-1) and streaming at every split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sipedge/siphash.h"

static const uint64_t K0 = 0x0706050403020100ULL, K1 = 0x0f0e0d0c0b0a0908ULL;

static void test_reference_values(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        uint64_t h;
    } v[] = {{0, 0xabac0158050fc4dcULL},  {1, 0xc9f49bf37d57ca93ULL},
             {7, 0xd3927d989bb11140ULL},  {8, 0x369095118d299a8eULL},
             {15, 0xd320d86d2a519956ULL}, {16, 0xcc4fdd1a7d908b66ULL},
             {63, 0x9d199062b7bbb3a8ULL}};
    uint8_t msg[64];
    for (unsigned i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_int_equal(siphash13(K0, K1, msg, v[i].n), v[i].h);
}

static void test_stream_equals_one_shot(void **state)
{
    (void)state;
    uint8_t msg[40];
    for (unsigned i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof(msg); n++) {
        uint64_t want = siphash13(K0, K1, msg, n);
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                struct siphash s;
                siphash_init(&s, K0, K1);
                siphash_add(&s, msg, a);
                siphash_add(&s, msg + a, b - a);
                siphash_add(&s, msg + b, n - b);
                assert_int_equal(siphash_final(&s), want);
            }
        }
    }
}

static void test_key_matters(void **state)
{
    (void)state;
    assert_int_not_equal(siphash13(K0, K1, "sip", 3), siphash13(K0 ^ 1, K1, "sip", 3));
    assert_int_not_equal(siphash13(K0, K1, "sip", 3), siphash13(K0, K1 ^ 1, "sip", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_values),
        cmocka_unit_test(test_stream_equals_one_shot),
        cmocka_unit_test(test_key_matters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
