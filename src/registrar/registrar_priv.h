/*
 * registrar_priv: what the files of the registrar share, and nothing outside it uses.
 *
 * The registrar is split into registrar.c (interface, persistence, shared helpers),
 * reg_register.c (REGISTER) and reg_route.c (routing and responses). This header holds
 * struct registrar, the request in hand (struct req), the registrar's limits, and the
 * functions one of those files calls in another; functions used in one file only stay
 * static there. The location table and the digest engine, which the unit tests use
 * directly, stay in registrar_internal.h.
 */
#ifndef SIPEDGE_REGISTRAR_PRIV_H
#define SIPEDGE_REGISTRAR_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "registrar/registrar_internal.h"
#include "sipedge/config.h"
#include "sipedge/flow_token.h"
#include "sipedge/registrar.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_msg.h"
#include "sipedge/slice.h"

struct reg_store;

#define REGISTRAR_MAX_CONTACTS 32 /* Contact elements in one REGISTER */
#define REGISTRAR_EXTRA_MAX 16384
#define REGISTRAR_DEFAULT_HEADERS 64
#define REGISTRAR_RETRY_AFTER_S 30
#define REGISTRAR_DEFAULT_MF 70 /* RFC 3261 §16.6 step 3 */
#define SIP_DEFAULT_PORT 5060
#define BRANCH_COOKIE "z9hG4bK" /* RFC 3261 §8.1.1.7 */
#define BRANCH_TEXT_MAX 32      /* "z9hG4bK" + 16 hex + NUL */

struct registrar {
    struct config_addr self;
    char realm[128];
    struct policy policy;
    struct config_addr *trusted;
    unsigned n_trusted;
    struct config_addr *peers; /* the only non-binding next hops (no open relay) */
    unsigned n_peers;
    struct tx_out out;
    uint8_t sock;
    struct location *loc;
    struct digest *dig;              /* NULL: no authentication */
    struct flow_token_keys *sb_keys; /* key of the MAC in sb= (flow_token_tag) */
    struct registrar_stats stats;
    struct sip_hdr *hdrs;
    uint16_t max_hdrs;
    struct location_binding **found; /* scratch for one AOR's bindings */
    size_t found_cap;
    struct reg_store *store;       /* NULL: bindings live in memory only */
    uint64_t now_ms;               /* of the last registrar_handle / registrar_tick */
    bool is_rebase_pending;        /* restored times are still unix ms, not now_ms */
    bool is_store_failing;         /* the last flush failed (logged once per outage) */
    uint64_t branch_k0, branch_k1; /* key of derived branches and request hashes */
    struct sip_view view;          /* the message in hand, parsed once */
    char extra[REGISTRAR_EXTRA_MAX];
};

/* The request being handled. */
struct req {
    struct registrar *r;
    const struct sip_msg *m;
    const struct sip_view *v; /* what sip_check_view parsed of m */
    const struct sockaddr *src;
    socklen_t src_len;
    uint64_t now_ms;
};

/* ---- registrar.c: shared helpers, sending --------------------------------------------- */

/* "user@host" with the host lower-cased (RFC 3261 §19.1.4: hosts compare without case). */
int reg_aor_make(struct slice user, struct slice host, char *out, size_t cap);
/* True when a should be tried before b: higher q, then the more recent registration. */
bool reg_binding_before(const struct location_binding *a, const struct location_binding *b);
/* Starts a datagram to dst in the memory the transport lends; false when it lends none
 * (counted). reg_send sends what b holds (an overflow is counted, nothing sent). */
bool reg_begin(struct registrar *r, struct tx_dest *d, const struct sockaddr *dst,
               struct sip_build *b);
bool reg_send(struct registrar *r, const struct tx_dest *d, struct sip_build *b);
/* Stateless response to the request's source, received/rport added when asked for. */
void reg_reply(struct req *q, int status, const char *reason, const char *extra);

/* ---- reg_register.c: REGISTER -------------------------------------------------------- */

/* Digest check of the request's credentials for user (407 flavour when is_proxy).
 * Returns true when the request may proceed; otherwise the answer has been sent. */
bool reg_authorize(struct req *q, struct slice aor_user, bool is_proxy);
void reg_handle_register(struct req *q);

/* ---- reg_route.c: routing and responses ------------------------------------------------ */

void reg_handle_request(struct req *q);
void reg_handle_response(struct registrar *r, const struct sip_msg *m, const struct sip_view *v,
                         const struct sockaddr *src);

#endif
