/* slice: borrowed byte views. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sipedge/slice.h"

static void test_slice_eq_is_exact_and_case_eq_ignores_case(void **state)
{
    (void)state;
    assert_true(slice_eq(SLICE_LIT("Via"), SLICE_LIT("Via")));
    assert_false(slice_eq(SLICE_LIT("Via"), SLICE_LIT("via")));
    assert_false(slice_eq(SLICE_LIT("Via"), SLICE_LIT("Vi")));
    assert_true(slice_eq(SLICE_NULL, SLICE_LIT("")));
    assert_true(slice_case_eq(SLICE_LIT("Via"), SLICE_LIT("vIA")));
    assert_false(slice_case_eq(SLICE_LIT("Via"), SLICE_LIT("Vib")));
    assert_true(slice_case_eq_str(SLICE_LIT("CONTACT"), "contact"));
    assert_false(slice_case_eq_str(SLICE_LIT("CONTACT"), "contacts"));
    assert_false(slice_case_eq_str(SLICE_LIT("CONTACTS"), "contact"));
}

static void test_slice_case_prefix_matches_start_only(void **state)
{
    (void)state;
    assert_true(slice_case_prefix(SLICE_LIT("z9hG4bKabc"), "Z9HG4BK"));
    assert_false(slice_case_prefix(SLICE_LIT("z9hG"), "z9hG4bK"));
    assert_true(slice_case_prefix(SLICE_LIT("x"), ""));
}

static void test_slice_trim_removes_lws_and_folds(void **state)
{
    struct slice t = slice_trim(SLICE_LIT(" \t\r\n  value a \r\n\t"));

    (void)state;
    assert_int_equal(t.len, 7);
    assert_memory_equal(t.p, "value a", 7);
    assert_int_equal(slice_trim(SLICE_LIT(" \r\n ")).len, 0);
    assert_int_equal(slice_trim(SLICE_NULL).len, 0);
}

static void test_slice_to_u32_parses_bounds_and_rejects_junk(void **state)
{
    uint32_t v = 7;

    (void)state;
    assert_int_equal(slice_to_u32(SLICE_LIT(" 0068 "), 255, &v), 0);
    assert_int_equal(v, 68);
    assert_int_equal(slice_to_u32(SLICE_LIT("4294967295"), UINT32_MAX, &v), 0);
    assert_int_equal(v, UINT32_MAX);
    v = 7;
    assert_int_equal(slice_to_u32(SLICE_LIT("4294967296"), UINT32_MAX, &v), -ERANGE);
    assert_int_equal(slice_to_u32(SLICE_LIT("256"), 255, &v), -ERANGE);
    assert_int_equal(slice_to_u32(SLICE_LIT("100000000000000000000000"), UINT32_MAX, &v), -ERANGE);
    assert_int_equal(slice_to_u32(SLICE_LIT("-1"), 255, &v), -EBADMSG);
    assert_int_equal(slice_to_u32(SLICE_LIT("1 2"), 255, &v), -EBADMSG);
    assert_int_equal(slice_to_u32(SLICE_LIT(""), 255, &v), -EBADMSG);
    assert_int_equal(v, 7); /* untouched on failure */
}

static void test_slice_find_and_copy_cstr(void **state)
{
    char buf[4];

    (void)state;
    assert_int_equal(slice_find(SLICE_LIT("a;b"), ';'), 1);
    assert_int_equal(slice_find(SLICE_LIT("ab"), ';'), -1);
    assert_int_equal(slice_find(SLICE_NULL, ';'), -1);
    assert_int_equal(slice_copy_cstr(buf, sizeof(buf), SLICE_LIT("abcdef")), 3);
    assert_string_equal(buf, "abc");
    assert_int_equal(slice_copy_cstr(buf, sizeof(buf), SLICE_LIT("x")), 1);
    assert_string_equal(buf, "x");
    assert_int_equal(slice_copy_cstr(buf, 0, SLICE_LIT("x")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slice_eq_is_exact_and_case_eq_ignores_case),
        cmocka_unit_test(test_slice_case_prefix_matches_start_only),
        cmocka_unit_test(test_slice_trim_removes_lws_and_folds),
        cmocka_unit_test(test_slice_to_u32_parses_bounds_and_rejects_junk),
        cmocka_unit_test(test_slice_find_and_copy_cstr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
