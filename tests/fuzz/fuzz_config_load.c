/*
 * Fuzz target: the config and policy loaders on arbitrary bytes.
 *
 * Both loaders must either accept the input and produce a struct that honours every
 * schema bound, or reject it with a NUL-terminated "name:line:col: reason" and leave the
 * struct exactly as it was.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/config.h"

/* Larger inputs only slow the fuzzer down; real configs are a few KiB. */
#define FUZZ_INPUT_MAX (64 * 1024)

static void check_err(const char *err, int rc)
{
    if (rc != 0 && (memchr(err, '\0', CONFIG_ERR_MAX) == NULL || err[0] == '\0'))
        abort();
}

static void fuzz_config(const char *text, size_t len)
{
    struct config cfg, before;
    char err[CONFIG_ERR_MAX];
    memset(err, 0, sizeof(err));
    config_defaults(&cfg);
    before = cfg;
    int rc = config_load_string(&cfg, "fuzz/sipedge.yaml", text, len, err, sizeof(err));
    check_err(err, rc);
    if (rc != 0) {
        if (memcmp(&cfg, &before, sizeof(cfg)) != 0)
            abort();
        return;
    }
    if (cfg.n_listen_udp < 1 || cfg.n_listen_udp > CONFIG_MAX_LISTEN ||
        cfg.n_core_peers > CONFIG_MAX_PEERS || cfg.n_domains > CONFIG_MAX_DOMAINS ||
        cfg.workers > 256 || cfg.log_level < 0 || cfg.log_level > 3)
        abort();
    if (memchr(cfg.users_file, '\0', sizeof(cfg.users_file)) == NULL ||
        memchr(cfg.policy_dir, '\0', sizeof(cfg.policy_dir)) == NULL ||
        memchr(cfg.realm, '\0', sizeof(cfg.realm)) == NULL)
        abort();
    for (unsigned i = 0; i < cfg.n_listen_udp; i++)
        if (cfg.listen_udp[i].port == 0 || cfg.listen_udp[i].len == 0)
            abort();
    if (!cfg.has_external_registrar &&
        memcmp(&cfg.registrar, &cfg.embedded_listen, sizeof(cfg.registrar)) != 0)
        abort();
}

static void fuzz_policy(const char *text, size_t len)
{
    struct policy pol, before;
    char err[CONFIG_ERR_MAX];
    memset(err, 0, sizeof(err));
    policy_defaults(&pol);
    before = pol;
    int rc = policy_load_string(&pol, "fuzz/policy.yaml", text, len, err, sizeof(err));
    check_err(err, rc);
    if (rc != 0) {
        if (memcmp(&pol, &before, sizeof(pol)) != 0)
            abort();
        return;
    }
    if (pol.min_expires_s > pol.default_expires_s || pol.default_expires_s > pol.max_expires_s ||
        pol.max_headers < 8 || pol.max_headers > 256 || pol.max_message_bytes < 1024 ||
        pol.max_message_bytes > 65535 || pol.max_flows < 16)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_INPUT_MAX)
        return 0;
    /* An exact-size copy lets the sanitizer catch any read past the end. */
    char *text = malloc(size ? size : 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    fuzz_config(text, size);
    fuzz_policy(text, size);
    free(text);
    return 0;
}
