/* conn_ids: stale ids never reach a newer connection in the same slot, the tag is on
 * every id and is checked, generations wrap inside their mask and skip 0, the bound. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sipedge/conn_ids.h"

#define TAG (UINT64_C(1) << 63)

static void test_ids_are_generation_checked(void **state)
{
    (void)state;
    struct conn_ids t;
    int a, b;
    uint64_t ia, ib;
    conn_ids_init(&t, 4, TAG, 0x7fffffffu);
    assert_int_equal(conn_ids_alloc(&t, &a, &ia), 0);
    assert_true(ia & TAG);
    assert_ptr_equal(conn_ids_get(&t, ia), &a);
    assert_null(conn_ids_get(&t, ia & ~TAG)); /* without the tag: not ours */
    conn_ids_free(&t, ia);
    assert_null(conn_ids_get(&t, ia));
    /* The slot is reused with a new generation: the old id stays dead. */
    assert_int_equal(conn_ids_alloc(&t, &b, &ib), 0);
    assert_int_equal((uint32_t)ib, (uint32_t)ia);
    assert_int_not_equal(ib, ia);
    assert_null(conn_ids_get(&t, ia));
    assert_ptr_equal(conn_ids_get(&t, ib), &b);
    assert_null(conn_ids_get(&t, 0));
    assert_null(conn_ids_get(&t, TAG)); /* generation 0 is never handed out */
    conn_ids_fini(&t);
}

static void test_generation_wraps_inside_its_mask_and_skips_zero(void **state)
{
    (void)state;
    struct conn_ids t;
    int a;
    uint64_t id;
    conn_ids_init(&t, 1, 0, 0x3u); /* generations 1, 2, 3, then 1 again */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(conn_ids_alloc(&t, &a, &id), 0);
        uint32_t gen = (uint32_t)(id >> 32);
        assert_true(gen >= 1 && gen <= 3);
        assert_int_equal(id >> 63, 0);
        conn_ids_free(&t, id);
    }
    conn_ids_fini(&t);
}

static void test_bound_is_kept_and_freed_slots_are_reused(void **state)
{
    (void)state;
    struct conn_ids t;
    int x[3];
    uint64_t id[3];
    conn_ids_init(&t, 2, 0, 0);
    assert_int_equal(conn_ids_alloc(&t, &x[0], &id[0]), 0);
    assert_int_equal(conn_ids_alloc(&t, &x[1], &id[1]), 0);
    assert_int_equal(conn_ids_alloc(&t, &x[2], &id[2]), -ENOSPC);
    conn_ids_free(&t, id[0]);
    assert_int_equal(conn_ids_alloc(&t, &x[2], &id[2]), 0);
    assert_int_equal(t.n, 2); /* no new slot: the freed one */
    assert_ptr_equal(conn_ids_at(&t, (uint32_t)id[2]), &x[2]);
    conn_ids_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_are_generation_checked),
        cmocka_unit_test(test_generation_wraps_inside_its_mask_and_skips_zero),
        cmocka_unit_test(test_bound_is_kept_and_freed_slots_are_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
