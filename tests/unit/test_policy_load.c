/*
 * Unit tests for the policy loader: defaults, the shipped default policy, directory
 * merging in name order, cross-field rules and all-or-nothing loading.
 */
#define _GNU_SOURCE /* nftw */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sipedge/config.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

struct fixture {
    char dir[64];
};

static int setup_dir(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/sipedge-policy-XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown_dir(void **state)
{
    struct fixture *fx = *state;
    int rc = nftw(fx->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return rc;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* The text must be rejected with exactly this message, and *pol left untouched. */
static void assert_policy_error(const char *text, const char *expected)
{
    struct policy pol, before;
    char err[CONFIG_ERR_MAX] = "";
    policy_defaults(&pol);
    before = pol;
    int rc = policy_load_string(&pol, "p.yaml", text, strlen(text), err, sizeof(err));
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(err, expected);
    assert_memory_equal(&pol, &before, sizeof(pol));
}

static void test_policy_defaults_match_contract(void **state)
{
    (void)state;
    struct policy pol;
    policy_defaults(&pol);
    assert_int_equal(pol.max_message_bytes, 65535);
    assert_int_equal(pol.max_headers, 64);
    assert_int_equal(pol.max_flows, 65536);
    assert_int_equal(pol.min_expires_s, 60);
    assert_int_equal(pol.max_expires_s, 3600);
    assert_int_equal(pol.default_expires_s, 3600);
    assert_int_equal(pol.max_bindings, 100000);
    assert_int_equal(pol.max_contacts_per_aor, 10);
    assert_int_equal(pol.nonce_ttl_s, 300);
    assert_int_equal(pol.flow_idle_timeout_s, 300);
}

static void test_policy_shipped_default_equals_builtin(void **state)
{
    (void)state;
    struct policy pol, def;
    char err[CONFIG_ERR_MAX] = "";
    memset(&pol, 0, sizeof(pol));
    policy_defaults(&def);
    int rc = policy_load_dir(&pol, TEST_DATA_DIR "/../../policies/default", err, sizeof(err));
    if (rc != 0)
        fail_msg("%s", err);
    assert_memory_equal(&pol, &def, sizeof(pol));
}

static void test_policy_string_sets_every_key(void **state)
{
    (void)state;
    static const char text[] = "limits:\n"
                               "  max_message_bytes: 4096\n"
                               "  max_headers: 256\n"
                               "  max_flows: 4194304\n"
                               "registrar:\n"
                               "  min_expires: 30\n"
                               "  max_expires: 7200\n"
                               "  default_expires: 600\n"
                               "  max_bindings: 10000000\n"
                               "  max_contacts_per_aor: 1\n"
                               "  nonce_ttl: 10\n"
                               "flows:\n"
                               "  idle_timeout: 86400\n";
    struct policy pol;
    char err[CONFIG_ERR_MAX] = "";
    policy_defaults(&pol);
    assert_int_equal(policy_load_string(&pol, "p.yaml", text, strlen(text), err, sizeof(err)), 0);
    assert_int_equal(pol.max_message_bytes, 4096);
    assert_int_equal(pol.max_headers, 256);
    assert_int_equal(pol.max_flows, 4194304);
    assert_int_equal(pol.min_expires_s, 30);
    assert_int_equal(pol.max_expires_s, 7200);
    assert_int_equal(pol.default_expires_s, 600);
    assert_int_equal(pol.max_bindings, 10000000);
    assert_int_equal(pol.max_contacts_per_aor, 1);
    assert_int_equal(pol.nonce_ttl_s, 10);
    assert_int_equal(pol.flow_idle_timeout_s, 86400);
}

static void test_policy_errors_have_positions(void **state)
{
    (void)state;
    assert_policy_error("limits:\n  max_headers: 300\n",
                        "p.yaml:2:16: 'limits.max_headers' must be 8..256");
    assert_policy_error("limits:\n  max_headers: 7\n",
                        "p.yaml:2:16: 'limits.max_headers' must be 8..256");
    assert_policy_error("limits:\n  max_flows: lots\n",
                        "p.yaml:2:14: expected an integer for 'limits.max_flows'");
    assert_policy_error("flows:\n  idle_timeout: 5s\n",
                        "p.yaml:2:17: expected an integer for 'flows.idle_timeout'");
    assert_policy_error("registrar:\n  max_contacts: 3\n",
                        "p.yaml:2:3: unknown key 'max_contacts' in 'registrar'");
    assert_policy_error("limits:\n  max_flows: 100\nlimits:\n  max_flows: 200\n",
                        "p.yaml:3:1: duplicate key 'limits' (first at line 1)");
    assert_policy_error("relay:\n  allow_routes: [\"proxy.example:5060\"]\n",
                        "p.yaml:2:3: 'relay.allow_routes' item 1 ('proxy.example:5060') is not a "
                        "numeric ip:port or [ip6]:port");
    assert_policy_error("limits: {max_flows: 100\n",
                        "p.yaml:2:1: did not find expected ',' or '}' (while parsing a flow "
                        "mapping started at 1:9)");
}

static void test_policy_expires_order_blames_last_set_key(void **state)
{
    (void)state;
    /* default_expires set below min_expires: the later key is the offending one. */
    assert_policy_error("registrar:\n  min_expires: 100\n  default_expires: 50\n",
                        "p.yaml:3:3: 'registrar.default_expires' (50) must not be less than "
                        "'registrar.min_expires' (100)");
    /* Only default_expires set, above the default max_expires. */
    assert_policy_error("registrar:\n  default_expires: 7200\n",
                        "p.yaml:2:3: 'registrar.default_expires' (7200) must not be greater than "
                        "'registrar.max_expires' (3600)");
    /* Only min_expires set, above the default default_expires. */
    assert_policy_error("registrar:\n  min_expires: 7200\n",
                        "p.yaml:2:3: 'registrar.min_expires' (7200) must not be greater than "
                        "'registrar.default_expires' (3600)");
    /* max_expires lowered below default_expires. */
    assert_policy_error("registrar:\n  max_expires: 600\n",
                        "p.yaml:2:3: 'registrar.max_expires' (600) must not be less than "
                        "'registrar.default_expires' (3600)");
}

static void test_policy_dir_merges_files_in_name_order(void **state)
{
    struct fixture *fx = *state;
    /* Written out of order: 20 must still win over 10. The ordering rule holds only for
     * the merged result (10 alone would have min_expires above default_expires). */
    write_file(fx->dir, "20-site.yaml",
               "limits:\n  max_headers: 32\nregistrar:\n  default_expires: 7200\n"
               "  max_expires: 86400\n");
    write_file(fx->dir, "10-base.yaml",
               "limits:\n  max_headers: 100\n  max_flows: 1024\nregistrar:\n"
               "  min_expires: 7200\n");
    write_file(fx->dir, "README.txt", "not yaml: [\n");
    write_file(fx->dir, ".hidden.yaml", "garbage: [\n");

    struct policy pol;
    char err[CONFIG_ERR_MAX] = "";
    memset(&pol, 0, sizeof(pol));
    int rc = policy_load_dir(&pol, fx->dir, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s", err);
    assert_int_equal(pol.max_headers, 32);
    assert_int_equal(pol.max_flows, 1024);
    assert_int_equal(pol.min_expires_s, 7200);
    assert_int_equal(pol.default_expires_s, 7200);
    assert_int_equal(pol.max_expires_s, 86400);
    assert_int_equal(pol.max_message_bytes, 65535); /* untouched keys keep defaults */
    assert_int_equal(pol.nonce_ttl_s, 300);
}

static void test_policy_dir_broken_file_leaves_policy_untouched(void **state)
{
    struct fixture *fx = *state;
    write_file(fx->dir, "10-base.yaml", "limits:\n  max_headers: 100\n");
    write_file(fx->dir, "20-site.yaml", "limits:\n  max_flows: 1024\n  max_headers: 999\n");

    struct policy pol, before;
    char err[CONFIG_ERR_MAX] = "", expected[CONFIG_ERR_MAX];
    policy_defaults(&pol);
    pol.max_flows = 77;
    pol.max_headers = 9;
    before = pol;
    assert_int_equal(policy_load_dir(&pol, fx->dir, err, sizeof(err)), -EINVAL);
    snprintf(expected, sizeof(expected),
             "%s/20-site.yaml:3:16: 'limits.max_headers' must be 8..256", fx->dir);
    assert_string_equal(err, expected);
    assert_memory_equal(&pol, &before, sizeof(pol));
}

static void test_policy_dir_cross_file_error_points_at_later_file(void **state)
{
    struct fixture *fx = *state;
    write_file(fx->dir, "10-base.yaml", "registrar:\n  default_expires: 600\n");
    write_file(fx->dir, "20-site.yaml", "# tighter\nregistrar:\n  min_expires: 900\n");

    struct policy pol, before;
    char err[CONFIG_ERR_MAX] = "", expected[CONFIG_ERR_MAX];
    policy_defaults(&pol);
    before = pol;
    assert_int_equal(policy_load_dir(&pol, fx->dir, err, sizeof(err)), -EINVAL);
    snprintf(expected, sizeof(expected),
             "%s/20-site.yaml:3:3: 'registrar.min_expires' (900) must not be greater than "
             "'registrar.default_expires' (600)",
             fx->dir);
    assert_string_equal(err, expected);
    assert_memory_equal(&pol, &before, sizeof(pol));
}

static void test_policy_dir_empty_gives_defaults(void **state)
{
    struct fixture *fx = *state;
    struct policy pol, def;
    char err[CONFIG_ERR_MAX] = "";
    memset(&pol, 0xa5, sizeof(pol));
    policy_defaults(&def);
    assert_int_equal(policy_load_dir(&pol, fx->dir, err, sizeof(err)), 0);
    assert_memory_equal(&pol, &def, sizeof(pol));
}

static void test_policy_dir_missing_reports_errno(void **state)
{
    struct fixture *fx = *state;
    char missing[128], err[CONFIG_ERR_MAX] = "", expected[CONFIG_ERR_MAX];
    snprintf(missing, sizeof(missing), "%s/nope", fx->dir);
    struct policy pol, before;
    policy_defaults(&pol);
    before = pol;
    assert_int_equal(policy_load_dir(&pol, missing, err, sizeof(err)), -ENOENT);
    snprintf(expected, sizeof(expected), "%s: cannot open policy directory: %s", missing,
             strerror(ENOENT));
    assert_string_equal(err, expected);
    assert_memory_equal(&pol, &before, sizeof(pol));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_defaults_match_contract),
        cmocka_unit_test(test_policy_shipped_default_equals_builtin),
        cmocka_unit_test(test_policy_string_sets_every_key),
        cmocka_unit_test(test_policy_errors_have_positions),
        cmocka_unit_test(test_policy_expires_order_blames_last_set_key),
        cmocka_unit_test_setup_teardown(test_policy_dir_merges_files_in_name_order, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_policy_dir_broken_file_leaves_policy_untouched,
                                        setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_policy_dir_cross_file_error_points_at_later_file,
                                        setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_policy_dir_empty_gives_defaults, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_policy_dir_missing_reports_errno, setup_dir,
                                        teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
