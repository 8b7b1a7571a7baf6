/*
 * fuzz_state: the edge's state payloads as read back from disk. The first byte picks the
 * reader: even, the snapshot payload (edge_state_restore); odd, a journal chunk
 * (edge_journal_replay). A state file is ours, but a disk, a crash or an operator can
 * corrupt it: no input may crash, leak or half-create flows.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/log.h"

static char tx[65535];

static char *out_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    (void)ctx;
    (void)d;
    *cap = sizeof(tx);
    return tx;
}

static int out_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    (void)ctx;
    (void)d;
    (void)len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg;
    static struct policy pol;
    static int init;
    if (!init) {
        log_set_level(LOG_LEVEL_ERROR);
        config_defaults(&cfg);
        config_addr_parse("127.0.0.1:5060", &cfg.listen_udp[0]);
        config_addr_parse("127.0.0.1:5061", &cfg.listen_udp[1]);
        cfg.n_listen_udp = 2;
        config_addr_parse("127.0.0.1:5070", &cfg.core);
        config_addr_parse("127.0.0.1:5080", &cfg.registrar);
        cfg.has_external_registrar = true;
        memset(cfg.flow_key, 9, sizeof(cfg.flow_key));
        cfg.has_flow_key = true;
        policy_defaults(&pol);
        pol.max_flows = 64;
        init = 1;
    }
    if (size < 1)
        return 0;
    struct edge_opts eo = {
        .cfg = &cfg, .policy = &pol, .out = {.reserve = out_reserve, .commit = out_commit}};
    struct edge *e = NULL;
    if (edge_new(&e, &eo) < 0)
        return 0;
    struct edge_restore_result res;
    char err[256];
    if (data[0] & 1) {
        if (edge_journal_replay(e, data + 1, size - 1, 1000, &res) < 0 && edge_n_flows(e) != 0)
            __builtin_trap(); /* a refused chunk must change nothing */
    } else {
        if (edge_state_restore(e, data + 1, size - 1, EDGE_STATE_VERSION, 1000, &res, err,
                               sizeof(err)) < 0 &&
            edge_n_flows(e) != 0)
            __builtin_trap();
        edge_tick(e, 2000);
    }
    edge_free(e);
    return 0;
}
