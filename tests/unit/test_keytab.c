/* keytab: the bounded keyed table (insert, find, remove with backward shift, bound,
 * growth, iteration) and its per-table key. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/keytab.h"
#include "sipedge/siphash.h"

struct ent {
    uint32_t key;
    uint32_t value;
};

static void test_insert_find_remove(void **state)
{
    (void)state;
    struct keytab t;
    assert_int_equal(keytab_init(&t, sizeof(uint32_t), sizeof(struct ent), 100, 7), 0);
    for (uint32_t k = 0; k < 100; k++) {
        assert_null(keytab_find(&t, &k));
        struct ent *e = keytab_insert(&t, &k);
        assert_non_null(e);
        assert_int_equal(e->key, k);
        assert_int_equal(e->value, 0); /* zeroed past the key */
        e->value = k * 3;
    }
    assert_int_equal(t.n, 100);
    uint32_t extra = 1000;
    assert_null(keytab_insert(&t, &extra)); /* full */
    /* Remove every other entry: the rest must stay reachable (no tombstones, the probe
     * runs are shifted back). */
    for (uint32_t k = 0; k < 100; k += 2)
        keytab_remove(&t, keytab_find(&t, &k));
    assert_int_equal(t.n, 50);
    for (uint32_t k = 0; k < 100; k++) {
        struct ent *e = keytab_find(&t, &k);
        if (k % 2) {
            assert_non_null(e);
            assert_int_equal(e->value, k * 3);
        } else {
            assert_null(e);
        }
    }
    assert_non_null(keytab_insert(&t, &extra));
    keytab_deinit(&t);
}

static void test_churn_keeps_every_live_entry(void **state)
{
    (void)state;
    enum { CAP = 512, ROUNDS = 20000 };
    struct keytab t;
    assert_int_equal(keytab_init(&t, sizeof(uint32_t), sizeof(struct ent), CAP, 42), 0);
    static uint8_t live[4096];
    memset(live, 0, sizeof(live));
    uint32_t x = 12345, n = 0;
    for (int r = 0; r < ROUNDS; r++) {
        x = x * 1103515245u + 12345u;
        uint32_t k = (x >> 8) % 4096;
        struct ent *e = keytab_find(&t, &k);
        assert_int_equal(e != NULL, live[k]);
        if (e) {
            keytab_remove(&t, e);
            live[k] = 0;
            n--;
        } else if (keytab_insert(&t, &k)) {
            live[k] = 1;
            n++;
        } else {
            assert_int_equal(n, CAP);
        }
        assert_int_equal(t.n, n);
    }
    for (uint32_t k = 0; k < 4096; k++)
        assert_int_equal(keytab_find(&t, &k) != NULL, live[k]);
    keytab_deinit(&t);
}

static void test_set_cap_grows_and_shrinks(void **state)
{
    (void)state;
    struct keytab t;
    assert_int_equal(keytab_init(&t, sizeof(uint32_t), sizeof(struct ent), 4, 1), 0);
    for (uint32_t k = 0; k < 4; k++)
        assert_non_null(keytab_insert(&t, &k));
    uint32_t k4 = 4;
    assert_null(keytab_insert(&t, &k4));
    assert_int_equal(keytab_set_cap(&t, 64), 0);
    for (uint32_t k = 4; k < 64; k++)
        assert_non_null(keytab_insert(&t, &k));
    for (uint32_t k = 0; k < 64; k++)
        assert_non_null(keytab_find(&t, &k));
    /* Shrinking keeps every entry and refuses inserts until below the bound. */
    assert_int_equal(keytab_set_cap(&t, 8), 0);
    uint32_t k100 = 100;
    assert_null(keytab_insert(&t, &k100));
    for (uint32_t k = 0; k < 64; k++)
        assert_non_null(keytab_find(&t, &k));
    for (uint32_t k = 0; k < 57; k++)
        keytab_remove(&t, keytab_find(&t, &k));
    assert_non_null(keytab_insert(&t, &k100));
    assert_int_equal(keytab_set_cap(&t, 0), -EINVAL);
    keytab_deinit(&t);
}

static void test_iteration_visits_each_entry_once(void **state)
{
    (void)state;
    struct keytab t;
    assert_int_equal(keytab_init(&t, sizeof(uint32_t), sizeof(struct ent), 32, 3), 0);
    for (uint32_t k = 10; k < 30; k++)
        assert_non_null(keytab_insert(&t, &k));
    uint32_t k15 = 15;
    keytab_remove(&t, keytab_find(&t, &k15));
    unsigned seen[40] = {0}, n = 0;
    for (uint32_t i = 0; i < t.n_alloc; i++) {
        struct ent *e = keytab_at(&t, i);
        if (e) {
            seen[e->key]++;
            n++;
        }
    }
    assert_int_equal(n, 19);
    for (uint32_t k = 10; k < 30; k++)
        assert_int_equal(seen[k], k == 15 ? 0 : 1);
    assert_null(keytab_at(&t, t.n_alloc));
    keytab_deinit(&t);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct keytab t;
    assert_int_equal(keytab_init(&t, 0, 8, 4, 1), -EINVAL);
    assert_int_equal(keytab_init(&t, 8, 4, 4, 1), -EINVAL);
    assert_int_equal(keytab_init(&t, 4, 8, 0, 1), -EINVAL);
    assert_int_equal(keytab_init(&t, 4, 8, (1u << 29) + 1, 1), -EINVAL);
}

static void test_key_depends_on_the_seed(void **state)
{
    (void)state;
    struct keytab a, b;
    assert_int_equal(keytab_init(&a, 4, 8, 4, 1), 0);
    assert_int_equal(keytab_init(&b, 4, 8, 4, 2), 0);
    const char msg[] = "sip:alice@example.com";
    assert_int_not_equal(keytab_hash(&a, msg, sizeof(msg)), keytab_hash(&b, msg, sizeof(msg)));
    assert_int_equal(keytab_hash(&a, msg, sizeof(msg)), siphash13(a.k0, a.k1, msg, sizeof(msg)));
    keytab_deinit(&a);
    keytab_deinit(&b);
    uint64_t k0, k1, j0, j1;
    siphash_key_random(&k0, &k1, 1);
    siphash_key_random(&j0, &j1, 1);
    assert_true(k0 != j0 || k1 != j1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find_remove),
        cmocka_unit_test(test_churn_keeps_every_live_entry),
        cmocka_unit_test(test_set_cap_grows_and_shrinks),
        cmocka_unit_test(test_iteration_visits_each_entry_once),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_key_depends_on_the_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
