/* strikes: weighted sliding window with explicit time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "guard/guard_internal.h"

#define WIN 8000 /* 8 slots of 1 s */

static void test_strikes_sum_within_window(void **state)
{
    (void)state;
    struct strikes s;
    strikes_init(&s);
    assert_int_equal(strikes_add(&s, 2, WIN, 100000), 2);
    assert_int_equal(strikes_add(&s, 3, WIN, 101500), 5);
    assert_int_equal(strikes_add(&s, 1, WIN, 107000), 6);
    assert_int_equal(strikes_sum(&s, WIN, 107999), 6);
}

static void test_strikes_old_slots_slide_out(void **state)
{
    (void)state;
    struct strikes s;
    strikes_init(&s);
    strikes_add(&s, 4, WIN, 100000);  /* slot 100 */
    strikes_add(&s, 1, WIN, 104000);  /* slot 104 */
    assert_int_equal(strikes_sum(&s, WIN, 107999), 5);
    assert_int_equal(strikes_sum(&s, WIN, 108000), 1); /* slot 100 is 8 slots old */
    assert_int_equal(strikes_sum(&s, WIN, 112000), 0);
}

static void test_strikes_recycled_slot_starts_from_zero(void **state)
{
    (void)state;
    struct strikes s;
    strikes_init(&s);
    strikes_add(&s, 9, WIN, 100000);
    /* Same ring position one window later: the old count must not leak in. */
    assert_int_equal(strikes_add(&s, 1, WIN, 108000), 1);
}

static void test_strikes_reset_clears(void **state)
{
    (void)state;
    struct strikes s;
    strikes_init(&s);
    strikes_add(&s, 7, WIN, 5000);
    strikes_reset(&s);
    assert_int_equal(strikes_sum(&s, WIN, 5000), 0);
}

static void test_strikes_saturate(void **state)
{
    (void)state;
    struct strikes s;
    strikes_init(&s);
    strikes_add(&s, UINT32_MAX - 1, WIN, 0);
    assert_int_equal(strikes_add(&s, 10, WIN, 0), UINT32_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strikes_sum_within_window),
        cmocka_unit_test(test_strikes_old_slots_slide_out),
        cmocka_unit_test(test_strikes_recycled_slot_starts_from_zero),
        cmocka_unit_test(test_strikes_reset_clears),
        cmocka_unit_test(test_strikes_saturate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
