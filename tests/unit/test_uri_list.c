/* uri_list: the bounded Contact list of a flow record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "edge/edge_priv.h"

static void test_add_format_parse_round_trip(void **state)
{
    (void)state;
    struct uri_list a, b;
    uri_list_clear(&a);
    assert_true(uri_list_add(&a, SLICE_LIT("sip:alice@192.0.2.1:5060;transport=udp")));
    assert_true(uri_list_add(&a, SLICE_LIT("sip:alice@[2001:db8::1]")));
    assert_int_equal(a.n, 2);
    assert_true(slice_eq(uri_list_at(&a, 1), SLICE_LIT("sip:alice@[2001:db8::1]")));
    char text[URI_LIST_TEXT_MAX];
    uri_list_format(&a, text, sizeof(text));
    assert_string_equal(text,
                        "<sip:alice@192.0.2.1:5060;transport=udp>, <sip:alice@[2001:db8::1]>");
    assert_int_equal(uri_list_parse(&b, text), 0);
    assert_true(uri_list_eq(&a, &b));
    /* Order matters, as for the client's Contact set. */
    struct uri_list c;
    uri_list_clear(&c);
    uri_list_add(&c, SLICE_LIT("sip:alice@[2001:db8::1]"));
    uri_list_add(&c, SLICE_LIT("sip:alice@192.0.2.1:5060;transport=udp"));
    assert_false(uri_list_eq(&a, &c));
}

static void test_bounds_are_kept(void **state)
{
    (void)state;
    struct uri_list l;
    uri_list_clear(&l);
    for (unsigned i = 0; i < URI_LIST_MAX; i++)
        assert_true(uri_list_add(&l, SLICE_LIT("sip:a@b")));
    assert_false(uri_list_add(&l, SLICE_LIT("sip:a@b"))); /* too many */
    assert_int_equal(l.n, URI_LIST_MAX);
    uri_list_clear(&l);
    char big[400];
    memset(big, 'x', sizeof(big));
    assert_true(uri_list_add(&l, slice_make(big, sizeof(big))));
    assert_false(uri_list_add(&l, slice_make(big, sizeof(big)))); /* too long */
    assert_int_equal(l.n, 1);
    assert_false(uri_list_add(&l, SLICE_NULL));            /* empty */
    assert_false(uri_list_add(&l, slice_make("a\0b", 3))); /* would split */
    assert_int_equal(uri_list_parse(&l, "<sip:a@b>, garbage<"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_format_parse_round_trip),
        cmocka_unit_test(test_bounds_are_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
