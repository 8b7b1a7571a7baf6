/* strbuf: whole pieces or nothing, a sticky overflow flag, always NUL-terminated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/strbuf.h"

static void test_appends_every_kind(void **state)
{
    (void)state;
    char buf[64];
    struct strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    assert_string_equal(buf, "");
    strbuf_str(&b, "a=");
    strbuf_u64(&b, 0);
    strbuf_char(&b, ',');
    strbuf_mem(&b, "b=xyz", 3);
    strbuf_u64(&b, UINT64_MAX);
    assert_int_equal(strbuf_fmt(&b, " %s:%d", "c", -5), 5);
    assert_string_equal(buf, "a=0,b=x18446744073709551615 c:-5");
    assert_int_equal(strbuf_len(&b), strlen(buf));
    assert_false(strbuf_overflowed(&b));
    assert_int_equal(strbuf_room(&b), sizeof(buf) - 1 - strlen(buf));
}

static void test_piece_that_does_not_fit_is_left_out_and_flag_sticks(void **state)
{
    (void)state;
    char buf[8];
    struct strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    strbuf_str(&b, "abcd");
    strbuf_str(&b, "efgh"); /* 4 more would need 9 bytes */
    assert_true(strbuf_overflowed(&b));
    assert_string_equal(buf, "abcd");
    strbuf_str(&b, "x"); /* would fit, but the flag is sticky */
    strbuf_char(&b, 'y');
    strbuf_u64(&b, 1);
    assert_int_equal(strbuf_fmt(&b, "%d", 2), 0);
    assert_string_equal(buf, "abcd");
    assert_int_equal(strbuf_len(&b), 4);
    assert_int_equal(strbuf_room(&b), 0);
}

static void test_fmt_reports_the_length_it_needed(void **state)
{
    (void)state;
    char buf[8];
    struct strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    strbuf_str(&b, "ab");
    assert_int_equal(strbuf_fmt(&b, "%s", "0123456789"), 10);
    assert_true(strbuf_overflowed(&b));
    assert_string_equal(buf, "ab"); /* the cut piece is dropped, not kept in part */
}

static void test_exact_fit(void **state)
{
    (void)state;
    char buf[5];
    struct strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    strbuf_fmt(&b, "%s", "abcd");
    assert_false(strbuf_overflowed(&b));
    assert_string_equal(buf, "abcd");
    strbuf_mem(&b, "", 0);
    assert_false(strbuf_overflowed(&b));
    strbuf_char(&b, 'e');
    assert_true(strbuf_overflowed(&b));
    assert_string_equal(buf, "abcd");
}

static void test_tail_commit_and_truncate(void **state)
{
    (void)state;
    char buf[16];
    struct strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    strbuf_str(&b, "key=");
    size_t mark = strbuf_len(&b);
    size_t room;
    char *t = strbuf_tail(&b, &room);
    assert_int_equal(room, sizeof(buf) - 4);
    memcpy(t, "value", 5);
    strbuf_commit(&b, 5);
    assert_string_equal(buf, "key=value");
    strbuf_truncate(&b, mark);
    assert_string_equal(buf, "key=");
    strbuf_truncate(&b, 100); /* longer than the content: no change */
    assert_string_equal(buf, "key=");
    strbuf_commit(&b, room); /* more than fits: overflow, content kept */
    assert_true(strbuf_overflowed(&b));
    assert_string_equal(buf, "key=");
    strbuf_tail(&b, &room);
    assert_int_equal(room, 0);
}

static void test_one_byte_buffer_holds_the_empty_string(void **state)
{
    (void)state;
    char buf[1] = {'x'};
    struct strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    assert_int_equal(buf[0], '\0');
    strbuf_char(&b, 'a');
    assert_true(strbuf_overflowed(&b));
    assert_int_equal(buf[0], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appends_every_kind),
        cmocka_unit_test(test_piece_that_does_not_fit_is_left_out_and_flag_sticks),
        cmocka_unit_test(test_fmt_reports_the_length_it_needed),
        cmocka_unit_test(test_exact_fit),
        cmocka_unit_test(test_tail_commit_and_truncate),
        cmocka_unit_test(test_one_byte_buffer_holds_the_empty_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
