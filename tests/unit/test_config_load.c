/*
 * Unit tests for the config loader: schema, defaults, error positions, path resolution
 * and address parsing.
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
#include <unistd.h>

#include <netinet/in.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "sipedge/config.h"
#include "sipedge/log.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

#define KEY_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B "FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100"

static int load(struct config *cfg, const char *text, char *err, size_t errcap)
{
    config_defaults(cfg);
    return config_load_string(cfg, "t.yaml", text, strlen(text), err, errcap);
}

/* The text must be rejected with exactly this message, and the config left untouched. */
static void assert_config_error(const char *text, const char *expected)
{
    struct config cfg, before;
    char err[CONFIG_ERR_MAX] = "";
    config_defaults(&cfg);
    before = cfg;
    int rc = config_load_string(&cfg, "t.yaml", text, strlen(text), err, sizeof(err));
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(err, expected);
    assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_dir(void **state)
{
    char *dir = strdup("/tmp/sipedge-cfg-XXXXXX");
    if (dir == NULL || mkdtemp(dir) == NULL) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    char *dir = *state;
    int rc = nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(dir);
    return rc;
}

static void test_config_defaults_match_contract(void **state)
{
    (void)state;
    struct config cfg;
    config_defaults(&cfg);
    assert_int_equal(cfg.n_listen_udp, 1);
    assert_string_equal(cfg.listen_udp[0].text, "0.0.0.0:5060");
    assert_string_equal(cfg.core.text, "127.0.0.1:5070");
    assert_string_equal(cfg.embedded_listen.text, "127.0.0.1:5080");
    assert_string_equal(cfg.registrar.text, "127.0.0.1:5080");
    assert_false(cfg.has_external_registrar);
    assert_int_equal(cfg.n_core_peers, 0);
    assert_string_equal(cfg.users_file, "");
    assert_string_equal(cfg.realm, "sipedge");
    assert_int_equal(cfg.n_domains, 0);
    assert_string_equal(cfg.policy_dir, "policies/default");
    assert_false(cfg.has_flow_key);
    assert_false(cfg.has_flow_key_prev);
    assert_int_equal(cfg.log_level, LOG_LEVEL_INFO);
    assert_int_equal(cfg.workers, 0); /* one per CPU */
}

static void test_config_loads_every_field(void **state)
{
    (void)state;
    static const char text[] = "listen:\n"
                               "  udp: [\"192.0.2.1:5060\", \"[2001:db8::1]:5062\"]\n"
                               "core:\n"
                               "  address: 10.0.0.1:5070\n"
                               "  peers:\n"
                               "    - 10.0.0.2:5060\n"
                               "    - \"[::1]:5090\"\n"
                               "registrar:\n"
                               "  address: 10.0.0.9:5080\n"
                               "  embedded:\n"
                               "    listen: 127.0.0.1:5091\n"
                               "    users: /etc/sipedge/users.txt\n"
                               "    realm: example.org\n"
                               "domains: [example.org, example.net]\n"
                               "flow:\n"
                               "  key: " KEY_A "\n"
                               "  previous_key: " KEY_B "\n"
                               "policy: /etc/sipedge/policy\n"
                               "log:\n"
                               "  level: debug\n"
                               "workers: 4\n";
    struct config cfg;
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(load(&cfg, text, err, sizeof(err)), 0);
    assert_string_equal(err, "");

    assert_int_equal(cfg.n_listen_udp, 2);
    assert_string_equal(cfg.listen_udp[0].text, "192.0.2.1:5060");
    assert_string_equal(cfg.listen_udp[1].text, "[2001:db8::1]:5062");
    assert_string_equal(cfg.core.text, "10.0.0.1:5070");
    assert_int_equal(cfg.n_core_peers, 2);
    assert_string_equal(cfg.core_peers[0].text, "10.0.0.2:5060");
    assert_string_equal(cfg.core_peers[1].text, "[::1]:5090");
    assert_true(cfg.has_external_registrar);
    assert_string_equal(cfg.registrar.text, "10.0.0.9:5080");
    assert_string_equal(cfg.embedded_listen.text, "127.0.0.1:5091");
    assert_string_equal(cfg.users_file, "/etc/sipedge/users.txt");
    assert_string_equal(cfg.realm, "example.org");
    assert_int_equal(cfg.n_domains, 2);
    assert_string_equal(cfg.domains[0], "example.org");
    assert_string_equal(cfg.domains[1], "example.net");
    assert_true(cfg.has_flow_key);
    assert_true(cfg.has_flow_key_prev);
    for (unsigned i = 0; i < 32; i++) {
        assert_int_equal(cfg.flow_key[i], i);
        assert_int_equal(cfg.flow_key_prev[i], (uint8_t)(0xff - 0x11 * (i % 16)));
    }
    assert_string_equal(cfg.policy_dir, "/etc/sipedge/policy");
    assert_int_equal(cfg.log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(cfg.workers, 4);
}

static void test_config_without_registrar_address_uses_embedded(void **state)
{
    (void)state;
    struct config cfg;
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(
        load(&cfg, "registrar:\n  embedded:\n    listen: 127.0.0.1:6000\n", err, sizeof(err)), 0);
    assert_false(cfg.has_external_registrar);
    assert_string_equal(cfg.registrar.text, "127.0.0.1:6000");
    assert_string_equal(cfg.embedded_listen.text, "127.0.0.1:6000");
}

static void test_config_listen_accepts_single_scalar(void **state)
{
    (void)state;
    struct config cfg;
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(load(&cfg, "listen:\n  udp: 198.51.100.7:5070\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.n_listen_udp, 1);
    assert_string_equal(cfg.listen_udp[0].text, "198.51.100.7:5070");
}

static void test_config_empty_document_keeps_values(void **state)
{
    (void)state;
    struct config cfg, before;
    char err[CONFIG_ERR_MAX] = "";
    config_defaults(&before);
    assert_int_equal(load(&cfg, "", err, sizeof(err)), 0);
    assert_memory_equal(&cfg, &before, sizeof(cfg));
    assert_int_equal(load(&cfg, "# comments only\n---\n", err, sizeof(err)), 0);
    assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void test_config_syntax_error_has_position(void **state)
{
    (void)state;
    assert_config_error("listen:\n  udp: [\"1.2.3.4:5060\"\ncore:\n  address: 1.2.3.4:1\n",
                        "t.yaml:3:1: did not find expected ',' or ']' (while parsing a flow "
                        "sequence started at 2:8)");
    assert_config_error("workers: 1\n\x01", "t.yaml:2:1: control characters are not allowed");
}

static void test_config_unknown_key(void **state)
{
    (void)state;
    assert_config_error("core:\n  adress: 1.2.3.4:5060\n",
                        "t.yaml:2:3: unknown key 'adress' in 'core'");
    assert_config_error("workers: 2\nfoo: 1\n", "t.yaml:2:1: unknown key 'foo'");
    assert_config_error("registrar:\n  embedded:\n    realms: x\n",
                        "t.yaml:3:5: unknown key 'realms' in 'registrar.embedded'");
}

static void test_config_duplicate_key(void **state)
{
    (void)state;
    assert_config_error("core:\n  address: 1.2.3.4:5\n  address: 1.2.3.4:6\n",
                        "t.yaml:3:3: duplicate key 'address' in 'core' (first at line 2)");
    assert_config_error("workers: 1\nlog: {level: info}\nworkers: 2\n",
                        "t.yaml:3:1: duplicate key 'workers' (first at line 1)");
}

static void test_config_wrong_type(void **state)
{
    (void)state;
    assert_config_error("workers: many\n", "t.yaml:1:10: expected an integer for 'workers'");
    assert_config_error("workers: \"4\"\n", "t.yaml:1:10: expected an integer for 'workers'");
    assert_config_error("workers: -1\n", "t.yaml:1:10: expected an integer for 'workers'");
    assert_config_error("workers: [1]\n", "t.yaml:1:10: expected an integer for 'workers'");
    assert_config_error("core: 1.2.3.4:5\n", "t.yaml:1:7: expected a mapping for 'core'");
    assert_config_error("core:\n  peers: {a: b}\n",
                        "t.yaml:2:10: expected a list for 'core.peers'");
    assert_config_error("domains: [a, [b]]\n",
                        "t.yaml:1:14: expected a string in the list 'domains'");
    assert_config_error("- workers\n", "t.yaml:1:1: the top level must be a mapping of keys");
    assert_config_error("log:\n  level: loud\n",
                        "t.yaml:2:10: 'log.level' must be one of error|warn|info|debug");
    assert_config_error("flow:\n  key: abcd\n",
                        "t.yaml:2:8: 'flow.key' must be 64 hex digits (32 bytes)");
    assert_config_error("flow:\n  previous_key: " KEY_A "0\n",
                        "t.yaml:2:17: 'flow.previous_key' must be 64 hex digits (32 bytes)");
}

static void test_config_out_of_range(void **state)
{
    (void)state;
    assert_config_error("workers: 65\n", "t.yaml:1:10: 'workers' must be 0..64");
    assert_config_error("workers: 99999999999999999999\n", "t.yaml:1:10: 'workers' must be 0..64");
    assert_config_error("listen:\n  udp: []\n", "t.yaml:2:3: 'listen.udp' needs at least 1 entry");
    assert_config_error("listen:\n  udp: [1.1.1.1:1, 1.1.1.1:2, 1.1.1.1:3, 1.1.1.1:4, 1.1.1.1:5,"
                        " 1.1.1.1:6, 1.1.1.1:7, 1.1.1.1:8, 1.1.1.1:9]\n",
                        "t.yaml:2:97: 'listen.udp' has more than 8 entries");
    char text[400];
    snprintf(text, sizeof(text), "registrar:\n  embedded:\n    realm: %0200d\n", 0);
    assert_config_error(text, "t.yaml:3:12: 'registrar.embedded.realm' is too long (at most 127 "
                              "characters)");
}

static void test_config_bad_address(void **state)
{
    (void)state;
    assert_config_error("core:\n  address: 1.2.3.4\n",
                        "t.yaml:2:12: bad address '1.2.3.4' for 'core.address' (expected ip:port "
                        "or [ipv6]:port)");
    assert_config_error("listen:\n  udp: [\"0.0.0.0:5060\", \"sip.example.com:5060\"]\n",
                        "t.yaml:2:25: bad address 'sip.example.com:5060' for 'listen.udp' "
                        "(expected ip:port or [ipv6]:port)");
    assert_config_error("registrar:\n  address: 1.2.3.4:70000\n",
                        "t.yaml:2:12: bad address '1.2.3.4:70000' for 'registrar.address' "
                        "(expected ip:port or [ipv6]:port)");
}

static void test_config_refuses_anchors_aliases_tags_and_documents(void **state)
{
    (void)state;
    assert_config_error("core:\n  address: &a 1.2.3.4:5\nregistrar:\n  address: *a\n",
                        "t.yaml:2:12: anchors are not allowed");
    assert_config_error("registrar:\n  address: *a\n", "t.yaml:2:12: aliases are not allowed");
    assert_config_error("workers: !!int 5\n", "t.yaml:1:10: tags are not allowed");
    assert_config_error("workers: 1\n---\nworkers: 2\n",
                        "t.yaml:2:1: only one YAML document is allowed");
}

static void test_config_error_leaves_loaded_config_untouched(void **state)
{
    (void)state;
    struct config cfg, before;
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(load(&cfg, "workers: 3\ncore:\n  address: 10.1.1.1:5070\n", err, sizeof(err)),
                     0);
    before = cfg;
    /* The first keys are valid and would be stored; the later error must undo them. */
    const char *bad = "workers: 7\ncore:\n  address: 10.2.2.2:5070\nlog:\n  level: x\n";
    assert_int_equal(config_load_string(&cfg, "t.yaml", bad, strlen(bad), err, sizeof(err)),
                     -EINVAL);
    assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void test_config_relative_paths_resolve_against_config_dir(void **state)
{
    (void)state;
    struct config cfg;
    char err[CONFIG_ERR_MAX] = "";
    const char *text = "registrar:\n  embedded:\n    users: users.txt\npolicy: ../policies/x\n";

    config_defaults(&cfg);
    assert_int_equal(
        config_load_string(&cfg, "/opt/se/etc/sipedge.yaml", text, strlen(text), err, sizeof(err)),
        0);
    assert_string_equal(cfg.users_file, "/opt/se/etc/users.txt");
    assert_string_equal(cfg.policy_dir, "/opt/se/etc/../policies/x");

    /* A bare file name has no directory part: paths stay relative to the working dir. */
    config_defaults(&cfg);
    assert_int_equal(config_load_string(&cfg, "sipedge.yaml", text, strlen(text), err, sizeof(err)),
                     0);
    assert_string_equal(cfg.users_file, "users.txt");
    assert_string_equal(cfg.policy_dir, "../policies/x");

    /* Absolute paths are kept as they are. */
    const char *abs = "policy: /srv/policy\n";
    config_defaults(&cfg);
    assert_int_equal(
        config_load_string(&cfg, "/opt/se/etc/sipedge.yaml", abs, strlen(abs), err, sizeof(err)),
        0);
    assert_string_equal(cfg.policy_dir, "/srv/policy");
}

static void test_config_load_file_resolves_and_reports_file_name(void **state)
{
    const char *dir = *state;
    write_file(dir, "good.yaml", "registrar:\n  embedded:\n    users: users.txt\n");
    write_file(dir, "bad.yaml", "workers: 2\n\nlog:\n  levl: info\n");

    char path[256], expected[512], err[CONFIG_ERR_MAX] = "";
    struct config cfg;
    config_defaults(&cfg);
    snprintf(path, sizeof(path), "%s/good.yaml", dir);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), 0);
    snprintf(expected, sizeof(expected), "%s/users.txt", dir);
    assert_string_equal(cfg.users_file, expected);

    snprintf(path, sizeof(path), "%s/bad.yaml", dir);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
    snprintf(expected, sizeof(expected), "%s:4:3: unknown key 'levl' in 'log'", path);
    assert_string_equal(err, expected);

    snprintf(path, sizeof(path), "%s/missing.yaml", dir);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), -ENOENT);
    snprintf(expected, sizeof(expected), "%s: cannot open: %s", path, strerror(ENOENT));
    assert_string_equal(err, expected);

    assert_int_equal(config_load_file(&cfg, dir, err, sizeof(err)), -EINVAL);
}

static void test_config_shipped_example_loads(void **state)
{
    (void)state;
    struct config cfg;
    char err[CONFIG_ERR_MAX] = "";
    config_defaults(&cfg);
    int rc = config_load_file(&cfg, TEST_DATA_DIR "/../../etc/sipedge.yaml", err, sizeof(err));
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.policy_dir, TEST_DATA_DIR "/../../etc/../policies/default");
}

static void test_config_addr_parse_ipv4(void **state)
{
    (void)state;
    struct config_addr a;
    assert_int_equal(config_addr_parse("192.0.2.10:5060", &a), 0);
    assert_string_equal(a.text, "192.0.2.10:5060");
    assert_string_equal(a.host, "192.0.2.10");
    assert_int_equal(a.port, 5060);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 5060);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0xc000020a);

    assert_int_equal(config_addr_parse("0.0.0.0:65535", &a), 0);
    assert_int_equal(a.port, 65535);
}

static void test_config_addr_parse_ipv6(void **state)
{
    (void)state;
    struct config_addr a;
    assert_int_equal(config_addr_parse("[::1]:5060", &a), 0);
    assert_string_equal(a.text, "[::1]:5060");
    assert_string_equal(a.host, "[::1]");
    assert_int_equal(a.port, 5060);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 5060);
    assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

    /* Text is canonical so one address always prints the same way. */
    assert_int_equal(config_addr_parse("[2001:DB8:0:0::7]:1", &a), 0);
    assert_string_equal(a.text, "[2001:db8::7]:1");
    assert_string_equal(a.host, "[2001:db8::7]");
    assert_int_equal(config_addr_parse("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", &a),
                     0);
}

static void test_config_addr_parse_rejects_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:-1",
        "1.2.3.4:+80",
        "1.2.3.4:5060x",
        "1.2.3.4: 5060",
        "1.2.3:5060",
        "1.2.3.4.5:1",
        "256.1.1.1:5060",
        "01.2.3.4:5",
        ":5060",
        "localhost:5060",
        "::1:5060",
        "[::1]",
        "[::1]5060",
        "[::1]:",
        "[]:5060",
        "[::1:5060",
        "[1.2.3.4]:5060",
        "[fe80::1%eth0]:5",
        "garbage",
        "1.2.3.4:123456",
        " 1.2.3.4:5",
    };
    struct config_addr a, before;
    memset(&a, 0x5a, sizeof(a));
    before = a;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_addr_parse(bad[i], &a) != -EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_memory_equal(&a, &before, sizeof(a));
    }
    assert_int_equal(config_addr_parse(NULL, &a), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_match_contract),
        cmocka_unit_test(test_config_loads_every_field),
        cmocka_unit_test(test_config_without_registrar_address_uses_embedded),
        cmocka_unit_test(test_config_listen_accepts_single_scalar),
        cmocka_unit_test(test_config_empty_document_keeps_values),
        cmocka_unit_test(test_config_syntax_error_has_position),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_duplicate_key),
        cmocka_unit_test(test_config_wrong_type),
        cmocka_unit_test(test_config_out_of_range),
        cmocka_unit_test(test_config_bad_address),
        cmocka_unit_test(test_config_refuses_anchors_aliases_tags_and_documents),
        cmocka_unit_test(test_config_error_leaves_loaded_config_untouched),
        cmocka_unit_test(test_config_relative_paths_resolve_against_config_dir),
        cmocka_unit_test_setup_teardown(test_config_load_file_resolves_and_reports_file_name,
                                        setup_dir, teardown_dir),
        cmocka_unit_test(test_config_shipped_example_loads),
        cmocka_unit_test(test_config_addr_parse_ipv4),
        cmocka_unit_test(test_config_addr_parse_ipv6),
        cmocka_unit_test(test_config_addr_parse_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
