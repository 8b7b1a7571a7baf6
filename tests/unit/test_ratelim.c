/* ratelim: token bucket with explicit time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sipedge/ratelim.h"

static void test_ratelim_starts_full_and_allows_burst(void **state)
{
    (void)state;
    struct ratelim rl;
    ratelim_init(&rl, 5, 1000);
    for (int i = 0; i < 5; i++)
        assert_true(ratelim_allow(&rl, 1, 5, 1000));
    assert_false(ratelim_allow(&rl, 1, 5, 1000));
}

static void test_ratelim_refills_after_one_second(void **state)
{
    (void)state;
    struct ratelim rl;
    ratelim_init(&rl, 10, 0);
    for (int i = 0; i < 10; i++)
        assert_true(ratelim_allow(&rl, 10, 10, 0));
    assert_false(ratelim_allow(&rl, 10, 10, 50));   /* half a token */
    assert_true(ratelim_allow(&rl, 10, 10, 100));   /* one token after 100 ms at 10/s */
    assert_false(ratelim_allow(&rl, 10, 10, 100));
    ratelim_refill(&rl, 10, 10, 1100);
    assert_int_equal(ratelim_tokens(&rl), 10);
}

static void test_ratelim_refill_is_capped_at_burst(void **state)
{
    (void)state;
    struct ratelim rl;
    ratelim_init(&rl, 3, 0);
    ratelim_refill(&rl, 1000, 3, 3600 * 1000);
    assert_int_equal(ratelim_tokens(&rl), 3);
}

static void test_ratelim_lowered_burst_applies_at_once(void **state)
{
    (void)state;
    struct ratelim rl;
    ratelim_init(&rl, 100, 0);
    ratelim_refill(&rl, 10, 4, 0);
    assert_int_equal(ratelim_tokens(&rl), 4);
}

static void test_ratelim_time_going_backwards_adds_nothing(void **state)
{
    (void)state;
    struct ratelim rl;
    ratelim_init(&rl, 1, 5000);
    assert_true(ratelim_allow(&rl, 1, 1, 5000));
    assert_false(ratelim_allow(&rl, 1, 1, 1000));
    assert_false(ratelim_allow(&rl, 1, 1, 5999));
    assert_true(ratelim_allow(&rl, 1, 1, 6000));
}

static void test_ratelim_take_is_all_or_nothing(void **state)
{
    (void)state;
    struct ratelim rl;
    ratelim_init(&rl, 2, 0);
    assert_false(ratelim_take(&rl, 3));
    assert_int_equal(ratelim_tokens(&rl), 2);
    assert_true(ratelim_take(&rl, 2));
    assert_int_equal(ratelim_tokens(&rl), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelim_starts_full_and_allows_burst),
        cmocka_unit_test(test_ratelim_refills_after_one_second),
        cmocka_unit_test(test_ratelim_refill_is_capped_at_burst),
        cmocka_unit_test(test_ratelim_lowered_burst_applies_at_once),
        cmocka_unit_test(test_ratelim_time_going_backwards_adds_nothing),
        cmocka_unit_test(test_ratelim_take_is_all_or_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
