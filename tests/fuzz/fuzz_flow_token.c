/*
 * Fuzz target: flow_token_decode on arbitrary bytes under a fixed key pair.
 *
 * Decoding must never crash, must answer only 0, -EBADMSG or -EPERM, and must leave
 * the output untouched on failure. A token that decodes was made under one of the keys:
 * re-encoding its fields under the key that verified it gives back exactly the input
 * (one spelling per token), and the fields are ones the encoder can produce.
 * The input is also fed as the token of a bare rotation set (current key only) and of
 * a set with the keys swapped, which must agree with the first verdict.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/flow_token.h"

static const uint8_t key_cur[FLOW_TOKEN_KEY_LEN] = "fuzz-flow-token-current-key-0001";
static const uint8_t key_prev[FLOW_TOKEN_KEY_LEN] = "fuzz-flow-token-previous-key-002";

static struct flow_token_keys *both;     /* cur + prev */
static struct flow_token_keys *cur_only; /* cur */
static struct flow_token_keys *prev_only;

static void init(void)
{
    if (both)
        return;
    if (flow_token_keys_new(&both, key_cur, key_prev) != 0 ||
        flow_token_keys_new(&cur_only, key_cur, NULL) != 0 ||
        flow_token_keys_new(&prev_only, key_prev, NULL) != 0)
        abort();
}

static void check_fields(const struct flow_token_fields *f)
{
    if (f->remote.sa.sa_family != AF_INET && f->remote.sa.sa_family != AF_INET6)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct flow_token_fields f, before;
    char again[FLOW_TOKEN_MAX];

    init();
    memset(&f, 0x5a, sizeof(f));
    before = f;
    struct slice tok = slice_make((const char *)data, size);
    int rc = flow_token_decode(both, tok, &f);
    if (rc != 0 && rc != -EBADMSG && rc != -EPERM)
        abort();
    if (rc != 0) {
        if (memcmp(&f, &before, sizeof(f)) != 0)
            abort();
        /* Neither single key may accept what the pair rejected. */
        if (flow_token_decode(cur_only, tok, &f) == 0 || flow_token_decode(prev_only, tok, &f) == 0)
            abort();
        return 0;
    }
    check_fields(&f);

    /* Exactly one key verified it; re-encoding under that key reproduces the input. */
    struct flow_token_fields g;
    int rc_cur = flow_token_decode(cur_only, tok, &g);
    int rc_prev = flow_token_decode(prev_only, tok, &g);
    if ((rc_cur == 0) == (rc_prev == 0))
        abort();
    int n = flow_token_encode(rc_cur == 0 ? cur_only : prev_only, &f, again, sizeof(again));
    if (n < 0 || (size_t)n != size || memcmp(again, data, size) != 0)
        abort();

    /* And the token the current key makes for the same fields decodes to them. */
    n = flow_token_encode(both, &f, again, sizeof(again));
    if (n < 0 || flow_token_decode(cur_only, slice_make(again, (size_t)n), &g) != 0)
        abort();
    if (g.worker != f.worker || g.transport != f.transport || g.slot != f.slot ||
        g.gen != f.gen || g.remote.sa.sa_family != f.remote.sa.sa_family)
        abort();
    return 0;
}
