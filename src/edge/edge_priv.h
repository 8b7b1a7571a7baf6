/*
 * edge_priv: what the files of the edge subsystem share, and nothing outside it uses.
 *
 * The edge is split into files by role (see edge.c for the map); this header holds
 * what those files have in common: struct edge itself, the flow records
 * (struct flow_reg), the registrars (struct upstream), the context of a received
 * message (struct rx), the branch prefixes that tell the edge's own messages apart,
 * and the functions one file calls in another. Functions used in one file only stay
 * static there. The pure helpers (b64url, contact aliases) stay in edge_internal.h,
 * which flow_token.c and the unit tests use too.
 */
#ifndef SIPEDGE_EDGE_PRIV_H
#define SIPEDGE_EDGE_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "edge/edge_internal.h"
#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/slice.h"
#include "sipedge/statefile.h"

#define EDGE_MAX_HDRS 256
#define EDGE_TX_MIN 65535
/* Our inbound Via branches start with this, so a client response can be recognised. */
#define EDGE_BRANCH_IN "z9hG4bKsE"
#define EDGE_BRANCH_OUT "z9hG4bKsO"
/* Branch of the edge's OPTIONS pings to NATed clients. */
#define EDGE_BRANCH_PING "z9hG4bKsK"
/* Branch of the edge's own de-REGISTER requests. */
#define EDGE_BRANCH_DEREG "z9hG4bKsD"
/* Branch of the edge's own re-REGISTER requests after a registrar outage. */
#define EDGE_BRANCH_RESYNC "z9hG4bKsR"
/* Branch of the edge's OPTIONS health checks of its registrars. */
#define EDGE_BRANCH_HEALTH "z9hG4bKsH"

/* Contact URIs of a flow record, in the client's order (uri_list.c). */
#define URI_LIST_MAX 8
struct uri_list {
    uint8_t n;
    uint16_t len;                /* bytes of text used */
    uint16_t off[URI_LIST_MAX];  /* where each URI starts in text */
    char text[512];              /* the URIs, each NUL-terminated */
};

void uri_list_clear(struct uri_list *l);
/* Appends uri; false (l unchanged) when it does not fit or is empty. */
bool uri_list_add(struct uri_list *l, struct slice uri);
struct slice uri_list_at(const struct uri_list *l, unsigned i);
bool uri_list_eq(const struct uri_list *a, const struct uri_list *b);
/* "<uri>, <uri>" into out (NUL-terminated; URIs that do not fit are left out). */
size_t uri_list_format(const struct uri_list *l, char *out, size_t cap);
/* The inverse of uri_list_format; 0 or -1 (malformed or too long). */
int uri_list_parse(struct uri_list *l, const char *text);
/* Room for uri_list_format of any list. */
#define URI_LIST_TEXT_MAX (512 + 4 * URI_LIST_MAX)

/*
 * A registration relayed over a flow: what the edge needs to de-register it when the
 * flow dies (RFC 5626 §5.3 leaves that to the edge), bounded and owned by the flow.
 */
struct flow_reg {
    struct flow_reg *next;
    uint64_t until_ms;    /* expiry granted by the registrar; 0 until a 2xx confirms it */
    uint32_t cseq;        /* highest CSeq relayed or answered from the cache */
    bool is_authed;       /* the confirming 2xx answered a request that carried credentials */
    bool is_aliased;      /* relayed with Contact aliases: the registrar holds those */
    uint32_t cache_epoch; /* the edge's regcache_epoch when a 2xx confirmed it */
    char aor[256];        /* To URI */
    char call_id[128];
    struct uri_list contacts; /* as confirmed by the registrar's 2xx */
    char user_agent[96];
    /* The REGISTER relayed last for this AOR, until its own 2xx confirms it: a request
     * changes nothing the edge acts on (cache, de-REGISTER) before the registrar has
     * accepted exactly that request (AOR, Call-ID and CSeq of the response match). */
    bool has_pending;
    bool pend_is_removal;
    bool pend_is_aliased;
    uint32_t pend_cseq;
    char pend_call_id[128];
    struct uri_list pend_contacts;
};

#define FLOW_REGS_MAX 8
#define EDGE_MAX_UPSTREAMS (1 + CONFIG_MAX_PEERS)
/* How long the answer to a challenge stays prepaid: 64*T1, a client transaction's life. */
#define EDGE_CHALLENGE_ANSWER_MS 32000

/* One transport's listen addresses and its name in a Via (RFC 3261 §18, RFC 7118 §5). */
#define EDGE_N_TRANSPORTS FLOW_N_TRANSPORTS
struct edge_listeners {
    const struct config_addr *addr;
    unsigned n;
    const char *via;
};

/* A registrar and what the edge knows of its health. */
struct upstream {
    const struct config_addr *addr;
    uint64_t pending_since_ms; /* first relayed request not followed by any answer; 0: none */
    uint64_t down_until_ms;    /* marked down until then; 0: up */
    uint64_t ping_due_ms;      /* next OPTIONS health check */
    uint64_t ping_since_ms;    /* oldest unanswered health check; 0: none */
    bool answers_options;      /* has answered a health check: silence then means down */
};

struct edge {
    const struct config *cfg;
    struct policy pol;
    struct flow_token_keys *keys;
    struct flow_table *flows;
    struct guard *guard;
    struct tx_out out;
    struct edge_listeners listeners[EDGE_N_TRANSPORTS]; /* by enum flow_transport */
    size_t relay_grows; /* the most a relayed request grows, besides the token twice */
    struct edge_stats st;
    struct edge_latency lat;
    struct edge_hooks hooks;
    uint64_t last_sweep_ms;
    uint32_t dead_head; /* slot + 1 of the first dead flow waiting for de-registration */
    uint64_t dereg_seq;
    uint64_t n_ticks;
    struct upstream ups[EDGE_MAX_UPSTREAMS];
    unsigned n_ups;
    uint64_t loss_since_ms; /* every registrar down since then; 0: one answers */
    /* Bumped when a registrar marked down answers again: records confirmed under an
     * older epoch are stale, the cache no longer answers for them. */
    uint32_t regcache_epoch;
    uint32_t resync_slot; /* regcache.resync assert: next slot to re-register; 0: none */
    bool is_journaling;   /* changes to persisted flows are appended to journal */
    struct statefile_buf journal;
    struct config_addr allow_routes[POLICY_MAX_ROUTES]; /* policy relay.allow_routes */
    unsigned n_allow_routes;
    struct sip_hdr hdrs[EDGE_MAX_HDRS];
    /* The message in hand, parsed once (sip_check_view / sip_view_fill) by ingress and
     * valid while it is handled. */
    struct sip_view view;
    const char *rx_buf; /* edge_rx_core: the datagram in hand, for a handoff to its owner */
    size_t rx_len;
    uint64_t branch_k0, branch_k1;        /* key of derived branches (sip_edit_branch) */
    char pub_host[CONFIG_MAX_LISTEN][64]; /* host:port for our inbound Via per socket */
};

/* Where a message came from and where answers to it go. */
struct rx {
    uint8_t transport; /* enum flow_transport; 0 for the core socket */
    uint8_t sock;      /* UDP socket id, WS listener index, or EDGE_SOCK_CORE */
    const struct sockaddr *src;
    struct flow *f; /* the flow, once known (always for WS) */
};

/* What the Contact hook of a relayed REGISTER or its response does. */
struct contact_edit {
    struct edge *e;
    struct slice alias_token; /* non-empty: every Contact URI becomes an alias */
    uint64_t *n_edits;        /* counts the Contacts aliased or restored */
};

/* What a REGISTER asks for, in the form the flow records keep. */
struct reg_summary {
    bool is_usable;   /* all fields below are set and fit */
    bool has_contact; /* false: a query */
    bool is_removal;  /* '*' or every contact at expires 0 */
    bool has_reg_id;  /* a Contact carries reg-id: the client asks for outbound */
    uint32_t cseq;
    struct slice call_id;
    uint32_t max_expires; /* largest non-zero expires asked, UINT32_MAX: none given */
    char aor[256];
    struct uri_list contacts;
    struct slice user_agent;
};

/* ---- ingress.c: small helpers, output, stateless replies ----------------------------- */

/* True when host:port names the config address a (numeric compare). */
bool edge_hostport_is(struct slice host, uint16_t port, const struct config_addr *a);
bool edge_is_core_peer(const struct edge *e, const struct sockaddr *src);
/* Sends the reserved buffer's first len bytes to a flow over its own transport. */
/* Where a message for flow f goes: its connection, or its UDP address. */
static inline struct tx_dest edge_dest_flow(const struct flow *f)
{
    return f->conn ? tx_dest_conn(f->conn) : tx_dest_udp(f->sock, &f->remote.sa);
}
/* Where an answer to what rx received goes: back the way it came. */
static inline struct tx_dest edge_dest_rx(const struct rx *rx)
{
    return rx->f && rx->f->conn ? tx_dest_conn(rx->f->conn) : tx_dest_udp(rx->sock, rx->src);
}
/* Starts a message to d in the memory the transport lends; false when d takes none now
 * (counted in conn_send_failed). */
bool edge_begin(struct edge *e, const struct tx_dest *d, struct sip_build *b);
/* Sends what b holds to d; an overflow sends nothing and is counted (tx_overflow). */
void edge_send(struct edge *e, const struct tx_dest *d, struct sip_build *b);
/* Sends the first len bytes of the lent memory to d (0: nothing, the loan ends). */
void edge_commit(struct edge *e, const struct tx_dest *d, size_t len);
void edge_reply_ex(struct edge *e, const struct rx *rx, const struct sip_msg *req, int status,
                   const char *reason, const char *extra, bool is_from_cache, uint32_t expires_s);
void edge_reply(struct edge *e, const struct rx *rx, const struct sip_msg *req, int status,
                const char *reason, const char *extra);

/* ---- upstream.c: registrar health and failover -------------------------------------- */

const struct sockaddr *upstream_dst(struct edge *e, uint64_t now_ms, bool expects_answer);
void upstream_answered(struct edge *e, const struct sockaddr *src);
void upstream_check(struct edge *e, uint64_t now_ms);
void upstream_health_pings(struct edge *e, uint64_t now_ms);

/* ---- relay_client.c: client side ------------------------------------------------------ */

bool edge_uri_alias_parts(struct slice uri, const struct config_addr *core, struct slice *tok,
                          struct slice *enc);
bool edge_contact_from_alias(void *ctx, struct sip_build *b, const struct sip_nameaddr *c);
void edge_note_challenge(const struct edge *e, struct flow *f, const struct sip_msg *m);
bool edge_guard_stops(struct edge *e, const struct rx *rx, const struct sip_msg *m,
                      struct guard_verdict v);
bool edge_guard_request(struct edge *e, const struct rx *rx, const struct sip_msg *m,
                        uint64_t now_ms);
void relay_client_request(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms);
void relay_client_response(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms);

/* ---- relay_core.c: core side ---------------------------------------------------------- */

int edge_inbound_tag(struct edge *e, const struct flow *f, const struct sip_via *next,
                     const struct sip_msg *m, char tag[FLOW_TOKEN_TAG_LEN + 1], struct slice check);
void relay_core_response(struct edge *e, const struct sip_msg *m, const struct sockaddr *src,
                         uint64_t now_ms);
const struct config_addr *edge_flow_listener(const struct edge *e, const struct flow *f);
void relay_core_request(struct edge *e, struct rx *rx, const struct sip_msg *m, uint64_t now_ms);

/* ---- flow_reg.c: registrations relayed over a flow, dead flows ------------------------ */

void flow_regs_free(struct flow *f);
uint64_t edge_flow_ref_of(const struct edge *e, const struct flow *f);
void edge_flow_event(struct edge *e, enum edge_flow_event kind, const struct flow *f,
                     const char *reason);
void edge_on_flow_release(void *ctx, struct flow *f);
struct flow_reg *flow_reg_find(struct flow *f, const char *aor);
void edge_reg_summarize(const struct sip_msg *m, const struct sip_view *v, struct reg_summary *sum);
void flow_reg_note(struct edge *e, struct flow *f, const struct reg_summary *sum, bool is_aliased);
uint32_t flow_reg_confirm(struct edge *e, struct flow *f, const struct sip_msg *m,
                          bool had_credentials, uint64_t now_ms);
void flow_reg_refused(struct flow *f, const struct sip_view *v);
void edge_send_asserted_register(struct edge *e, const struct flow *f, const struct flow_reg *r,
                                 uint32_t expires, uint64_t now_ms);
void edge_flow_die(struct edge *e, struct flow *f, uint64_t now_ms, const char *reason);
void edge_dead_flows_process(struct edge *e, uint64_t now_ms);
void edge_audit_register(struct edge *e, const struct sip_msg *req, const struct rx *rx,
                         const struct flow *f, uint16_t status, uint32_t expires_s,
                         bool is_from_cache);
void edge_latency_note(struct edge *e, uint32_t ms);

/* ---- regcache.c: the registration cache ---------------------------------------------- */

uint32_t edge_nat_expires(const struct edge *e, const struct flow *f);
bool regcache_answer(struct edge *e, const struct rx *rx, struct flow *f, const struct sip_msg *m,
                     const struct reg_summary *sum, uint64_t now_ms);
void regcache_resync_step(struct edge *e, uint64_t now_ms);

/* ---- keepalive.c: server pings to NATed UDP clients ----------------------------------- */

void edge_nat_pings(struct edge *e, uint64_t now_ms);

/* ---- edge_state.c: persistence -------------------------------------------------------- */

void edge_journal_flow(struct edge *e, const struct flow *f, uint64_t now_ms);
void edge_journal_drop(struct edge *e, const struct flow *f);

#endif
