/*
 * location: bounded AOR -> bindings table, slot ids with generations, expiry.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "registrar/registrar_internal.h"

static struct location *make(uint32_t max, uint32_t per_aor)
{
    struct location *l = NULL;
    assert_int_equal(location_new(&l, max, per_aor), 0);
    assert_non_null(l);
    return l;
}

static void test_location_new_rejects_zero_bounds(void **state)
{
    (void)state;
    struct location *l = NULL;
    assert_int_equal(location_new(&l, 0, 1), -EINVAL);
    assert_int_equal(location_new(&l, 1, 0), -EINVAL);
    assert_null(l);
}

static void test_location_add_find_remove(void **state)
{
    (void)state;
    struct location *l = make(8, 4);
    struct location_binding *a, *b, *c, *found[4];
    assert_int_equal(location_add(l, "alice@example.com", &a), 0);
    assert_int_equal(location_add(l, "alice@example.com", &b), 0);
    assert_int_equal(location_add(l, "bob@example.com", &c), 0);
    assert_string_equal(a->aor, "alice@example.com");
    assert_int_equal(a->q, LOCATION_Q_NONE);
    assert_int_equal(location_count(l), 3);
    assert_int_equal(location_find(l, "alice@example.com", found, 4), 2);
    assert_true((found[0] == a && found[1] == b) || (found[0] == b && found[1] == a));
    assert_int_equal(location_find(l, "bob@example.com", found, 4), 1);
    assert_ptr_equal(found[0], c);
    assert_int_equal(location_find(l, "carol@example.com", found, 4), 0);

    uint32_t slot = a->slot, gen = a->gen;
    assert_ptr_equal(location_get(l, slot, gen), a);
    location_remove(l, a);
    assert_null(location_get(l, slot, gen));
    assert_int_equal(location_find(l, "alice@example.com", found, 4), 1);
    assert_ptr_equal(found[0], b);
    assert_int_equal(location_count(l), 2);
    /* The freed slot comes back with a new generation. */
    struct location_binding *d;
    assert_int_equal(location_add(l, "dave@example.com", &d), 0);
    assert_int_equal(d->slot, slot);
    assert_int_not_equal(d->gen, gen);
    assert_null(location_get(l, slot, gen));
    assert_null(location_get(l, 99, 0));
    location_free(l);
}

static void test_location_bounds_refuse_without_eviction(void **state)
{
    (void)state;
    struct location *l = make(3, 2);
    struct location_binding *b;
    assert_int_equal(location_add(l, "a@x", &b), 0);
    assert_int_equal(location_add(l, "a@x", &b), 0);
    assert_int_equal(location_add(l, "a@x", &b), -ENOSPC); /* per AOR */
    assert_int_equal(location_add(l, "b@x", &b), 0);
    assert_int_equal(location_add(l, "c@x", &b), -ENOSPC); /* table */
    assert_int_equal(location_count(l), 3);
    assert_int_equal(location_n_free(l), 0);
    char long_aor[LOCATION_AOR_MAX + 8];
    memset(long_aor, 'x', sizeof(long_aor) - 1);
    long_aor[sizeof(long_aor) - 1] = '\0';
    assert_int_equal(location_add(l, long_aor, &b), -EINVAL);
    location_free(l);
}

static void test_location_expire_removes_only_expired(void **state)
{
    (void)state;
    struct location *l = make(4, 4);
    struct location_binding *a, *b;
    assert_int_equal(location_add(l, "a@x", &a), 0);
    assert_int_equal(location_add(l, "a@x", &b), 0);
    a->expires_at_ms = 1000;
    b->expires_at_ms = 2000;
    assert_int_equal(location_expire(l, 999), 0);
    assert_int_equal(location_expire(l, 1000), 1);
    assert_int_equal(location_count(l), 1);
    struct location_binding *found[2];
    assert_int_equal(location_find(l, "a@x", found, 2), 1);
    assert_ptr_equal(found[0], b);
    assert_int_equal(location_expire(l, 5000), 1);
    assert_int_equal(location_count(l), 0);
    location_free(l);
}

static void test_location_many_aors_stay_reachable(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct location *l = make(N, 1);
    char aor[32];
    for (unsigned i = 0; i < N; i++) {
        struct location_binding *b;
        snprintf(aor, sizeof(aor), "%u@example.com", i);
        assert_int_equal(location_add(l, aor, &b), 0);
        b->cseq = i;
    }
    for (unsigned i = 0; i < N; i += 2) {
        struct location_binding *found[1];
        snprintf(aor, sizeof(aor), "%u@example.com", i);
        assert_int_equal(location_find(l, aor, found, 1), 1);
        assert_int_equal(found[0]->cseq, i);
        location_remove(l, found[0]);
    }
    assert_int_equal(location_count(l), N / 2);
    for (unsigned i = 1; i < N; i += 2) {
        struct location_binding *found[1];
        snprintf(aor, sizeof(aor), "%u@example.com", i);
        assert_int_equal(location_find(l, aor, found, 1), 1);
        assert_int_equal(found[0]->cseq, i);
    }
    location_free(l);
}

/* Every slot a change touched is listed once, removals included, and only once tracking
 * is on; a slot freed and taken again between two reads is one entry. */
static void test_location_changes_listed_once(void **state)
{
    (void)state;
    struct location *l = make(4, 4);
    struct location_binding *a, *b;
    size_t n;
    assert_int_equal(location_add(l, "early@example.com", &a), 0);
    assert_int_equal(location_track(l), 0);
    location_changes(l, &n);
    assert_int_equal(n, 0);
    assert_int_equal(location_add(l, "alice@example.com", &b), 0);
    location_touch(l, b);
    location_touch(l, b);
    location_remove(l, a);
    const uint32_t *ch = location_changes(l, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0], b->slot);
    assert_int_equal(ch[1], a->slot);
    assert_false(location_slot(l, ch[1])->is_used);
    location_changes_clear(l);
    location_changes(l, &n);
    assert_int_equal(n, 0);
    uint32_t slot = b->slot;
    location_remove(l, b);
    assert_int_equal(location_add(l, "bob@example.com", &b), 0);
    assert_int_equal(b->slot, slot);
    ch = location_changes(l, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0], slot);
    location_free(l);
}

/* Seeded generations: an id handed out before the seed does not resolve after it. */
static void test_location_seed_gen(void **state)
{
    (void)state;
    struct location *l = make(2, 2);
    location_seed_gen(l, 0x12345678u);
    struct location_binding *b;
    assert_int_equal(location_add(l, "alice@example.com", &b), 0);
    assert_int_equal(b->gen, 0x12345678u);
    assert_null(location_get(l, b->slot, 0));
    assert_ptr_equal(location_get(l, b->slot, 0x12345678u), b);
    assert_int_equal(location_n_slots(l), 2);
    location_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_location_new_rejects_zero_bounds),
        cmocka_unit_test(test_location_add_find_remove),
        cmocka_unit_test(test_location_bounds_refuse_without_eviction),
        cmocka_unit_test(test_location_expire_removes_only_expired),
        cmocka_unit_test(test_location_many_aors_stay_reachable),
        cmocka_unit_test(test_location_changes_listed_once),
        cmocka_unit_test(test_location_seed_gen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
