/*
 * reg_tx: the registrar's output contract (transport.h) for its tests, recorded through
 * the including file's on_send(ctx, dst, dst_len, buf, len), which must be declared first.
 */
#ifndef SIPEDGE_TEST_REG_TX_H
#define SIPEDGE_TEST_REG_TX_H

#include "sipedge/netaddr.h"
#include "sipedge/registrar.h"

static char reg_tx_mem[65536];

static inline char *reg_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    (void)ctx;
    (void)d;
    *cap = sizeof(reg_tx_mem);
    return reg_tx_mem;
}

static inline int reg_tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    if (len)
        on_send(ctx, d->addr, netaddr_len(d->addr), reg_tx_mem, len);
    return 0;
}

/* registrar_new with o->out recording through on_send(ctx, ...). */
static inline int registrar_new_tx(struct registrar **r, struct registrar_opts *o, void *ctx,
                                   char *err, size_t cap)
{
    o->out = (struct tx_out){.reserve = reg_tx_reserve, .commit = reg_tx_commit, .ctx = ctx};
    return registrar_new(r, o, err, cap);
}

#endif
