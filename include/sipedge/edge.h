/*
 * edge: the SIP edge proxy logic of one worker (RFC 3261 §16.11 stateless relay,
 * RFC 3327 Path, or Contact aliases for registrars without Path support, RFC 3581
 * rport, RFC 5626 flow tokens).
 *
 * Every datagram from the public side enters through edge_rx_public, every datagram
 * from the core side through edge_rx_core. The edge parses, decides and writes each
 * outgoing message once, straight into a buffer the transport lends it (tx_out),
 * so the transport can batch the sends. No libuv here; time comes in as now_ms.
 * Single-threaded: one edge per worker.
 */
#ifndef SIPEDGE_EDGE_H
#define SIPEDGE_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/config.h"
#include "sipedge/flow_table.h"
#include "sipedge/flow_token.h"
#include "sipedge/transport.h"

/* Index of the core-side socket in tx_dest; public sockets are 0..n-1. */
#define EDGE_SOCK_CORE 255


#define EDGE_STATS(X)                                                                              \
    X(rx_public)                                                                                   \
    X(rx_core)                                                                                     \
    X(relayed_register)                                                                            \
    X(relayed_request)                                                                             \
    X(relayed_response_to_client)                                                                  \
    X(relayed_response_to_core)                                                                    \
    X(relayed_core_tcp)                                                                            \
    X(inbound_delivered)                                                                           \
    X(inbound_alias_delivered)                                                                     \
    X(contacts_aliased)                                                                            \
    X(contacts_restored)                                                                           \
    X(keepalive_pong)                                                                              \
    X(stun_answered)                                                                               \
    X(ping_sent)                                                                                   \
    X(ping_answered)                                                                               \
    X(regcache_hit)                                                                                \
    X(drop_oversize)                                                                               \
    X(drop_not_sip)                                                                                \
    X(drop_malformed)                                                                              \
    X(drop_stray_response)                                                                         \
    X(drop_forged_response)                                                                        \
    X(route_stripped)                                                                              \
    X(path_stripped)                                                                               \
    X(drop_non_core_peer)                                                                          \
    X(drop_100_trying)                                                                             \
    X(drop_dead_flow_response)                                                                     \
    X(handed_to_owner)                                                                             \
    X(reply_400)                                                                                   \
    X(reply_400_bad_alias)                                                                         \
    X(reply_403_bad_token)                                                                         \
    X(reply_404_not_routable)                                                                      \
    X(reply_430_flow_failed)                                                                       \
    X(reply_483_too_many_hops)                                                                     \
    X(reply_503_flows_full)                                                                        \
    X(reply_513_too_large)                                                                         \
    X(flows_created)                                                                               \
    X(flows_recovered)                                                                             \
    X(flows_dead)                                                                                  \
    X(flow_timer_added)                                                                            \
    X(regs_recorded)                                                                               \
    X(regs_not_recorded)                                                                           \
    X(dereg_sent)                                                                                  \
    X(dereg_answered_ok)                                                                           \
    X(dereg_answered_error)                                                                        \
    X(conn_send_failed)                                                                            \
    X(flows_released)                                                                              \
    X(tx_overflow)                                                                                 \
    X(registrar_marked_down)                                                                       \
    X(registrar_recovered)                                                                         \
    X(health_sent)                                                                                 \
    X(health_answered)                                                                             \
    X(regcache_marked_stale)                                                                       \
    X(resync_sent)                                                                                 \
    X(resync_answered_ok)                                                                          \
    X(resync_answered_error)                                                                       \
    X(guard_dropped)                                                                               \
    X(guard_rejected)

struct edge_stats {
#define EDGE_STATS_FIELD(name) uint64_t name;
    EDGE_STATS(EDGE_STATS_FIELD)
#undef EDGE_STATS_FIELD
};

struct edge;
struct guard;

/* One REGISTER outcome, for the audit log. Slices and strings borrow edge memory for the
 * duration of the callback only. */
struct edge_reg_event {
    const char *aor;             /* To URI */
    const struct sockaddr *src;  /* the client's address */
    uint8_t transport;           /* enum flow_transport */
    const char *contacts;        /* "<uri>, <uri>" as the client registered them ("" if none) */
    uint32_t expires_s;          /* expires granted to the client (0: removal or failure) */
    const char *user_agent;      /* "" when absent */
    uint16_t status;             /* registrar's response code, or the edge's own answer */
    bool is_from_cache;          /* answered by the registration cache */
    uint64_t flow_ref;           /* worker << 56 | slot << 32 | generation */
};

enum edge_flow_event { EDGE_FLOW_OPENED, EDGE_FLOW_CLOSED };

/* Optional observers; any member may be NULL. Called on the loop thread. */
struct edge_hooks {
    void (*on_register)(void *ctx, const struct edge_reg_event *ev);
    void (*on_flow)(void *ctx, enum edge_flow_event kind, uint64_t flow_ref, uint8_t transport,
                    const struct sockaddr *remote, const char *reason);
    /* A message from the core whose valid flow token names another worker of this
     * process: the owner should handle it. Returns true when it took a copy of buf (the
     * edge then does nothing more with it), false when no such worker runs (the edge
     * handles it as a token of an earlier run). NULL: one worker. */
    bool (*on_foreign)(void *ctx, uint8_t worker, const char *buf, size_t len,
                       const struct sockaddr *src);
    /* on_register reads only status, is_from_cache, src, transport, expires_s and flow_ref
     * (no audit log): the edge leaves aor, contacts and user_agent empty, and skips the
     * work of filling them on every answer. */
    bool is_outcome_only;
    void *ctx;
};

/* A registration relayed over a flow, as the inventory shows it. */
struct edge_reg_info {
    const char *aor;
    const char *contacts;
    const char *user_agent;
    uint64_t until_ms; /* registrar-granted expiry (0: not confirmed yet) */
    bool is_authed;
};

/* One flow, as the inventory shows it; borrowed for the duration of the callback. */
struct edge_flow_info {
    uint64_t flow_ref;
    uint8_t transport;
    uint8_t state; /* enum flow_state */
    bool is_nat;
    const struct sockaddr *remote;
    uint64_t last_rx_ms;
    unsigned n_regs;
    struct edge_reg_info regs[8];
};

/* Relay latency (request relayed → response back), registrar round trip as seen here. */
#define EDGE_LATENCY_BUCKETS 12
extern const double edge_latency_bounds_s[EDGE_LATENCY_BUCKETS]; /* upper bounds, seconds */
struct edge_latency {
    uint64_t count[EDGE_LATENCY_BUCKETS + 1]; /* per bucket; the last is +Inf */
    uint64_t n;
    double sum_s;
};

struct edge_opts {
    const struct config *cfg;    /* borrowed for the edge's lifetime */
    const struct policy *policy; /* copied */
    uint8_t worker;
    struct tx_out out;           /* where every message goes (transport.h) */
    struct guard *guard;         /* borrowed; NULL: no admission control */
    struct edge_hooks hooks;
};

/* Returns 0, -ENOMEM or -EINVAL (bad key/capacity). */
int edge_new(struct edge **out, const struct edge_opts *opts);
void edge_free(struct edge *e);

/* Replaces the policy (limits apply to the next message). */
void edge_set_policy(struct edge *e, const struct policy *policy);

void edge_rx_public(struct edge *e, uint8_t sock, const char *buf, size_t len,
                    const struct sockaddr *src, uint64_t now_ms);
void edge_rx_core(struct edge *e, const char *buf, size_t len, const struct sockaddr *src,
                  uint64_t now_ms);

/*
 * Connection flows (WS, WSS, TCP, TLS). edge_flow_open creates a flow for a new
 * connection and returns a reference for the later calls; -ENOSPC when the flow table is
 * full. peer_id (may be NULL): the client certificate's subject, for the audit log.
 * edge_rx_flow handles one complete SIP message received on it. edge_flow_alive notes
 * keepalive traffic. edge_flow_closed marks the flow dead at once (requests routed to
 * it get 430, RFC 5626 §5.3); after the policy's dead_flow_grace_s the edge sends the
 * registrar a de-REGISTER, asserted with P-Asserted-Identity (RFC 3325), for the
 * contacts it relayed over that flow, then forgets the flow.
 */
int edge_flow_open(struct edge *e, uint8_t transport, uint8_t listener,
                   const struct sockaddr *remote, const char *peer_id, uint64_t conn,
                   uint64_t now_ms, uint64_t *ref);
void edge_rx_flow(struct edge *e, uint64_t ref, const char *buf, size_t len, uint64_t now_ms);
void edge_flow_alive(struct edge *e, uint64_t ref, uint64_t now_ms);
void edge_flow_closed(struct edge *e, uint64_t ref, uint64_t now_ms);

/* Housekeeping (pings, idle UDP flows, de-registration of dead flows); call once a second. */
void edge_tick(struct edge *e, uint64_t now_ms);
/* De-registration of dead flows only; call between ticks so it follows the grace closely. */
void edge_tick_dead(struct edge *e, uint64_t now_ms);

const struct edge_stats *edge_stats(const struct edge *e);
const struct edge_latency *edge_latency(const struct edge *e);
/* False while every registrar is marked down (upstream.timeout without an answer). */
bool edge_registrar_up(const struct edge *e);

/*
 * Calls cb for every flow that is not free (live or dead), in slot order, until cb
 * returns false. Returns the number of flows visited.
 */
size_t edge_flows_foreach(struct edge *e, bool (*cb)(void *ctx, const struct edge_flow_info *fi),
                          void *ctx);
/* Live flows per transport, for gauges. */
void edge_flow_counts(const struct edge *e, uint32_t n[FLOW_N_TRANSPORTS]);
/* Writes "name=value ..." for every counter into buf. */
void edge_stats_format(const struct edge *e, char *buf, size_t cap);
/* The same for the sum of n edges (the workers of one process). */
void edge_stats_format_sum(const struct edge *const *es, unsigned n, char *buf, size_t cap);
uint32_t edge_n_flows(const struct edge *e);

/*
 * Persistence across restarts: live UDP flows with their NAT state and registration
 * records (what the cache answers for and what a dead flow de-registers). WebSocket
 * flows end with their connections and are not kept.
 */
#define EDGE_STATE_KIND "flows"
#define EDGE_STATE_VERSION 1
struct statefile_buf;

/* Appends the whole payload to b. Returns the number of flows written, or b's error. */
int edge_state_save(const struct edge *e, uint64_t now_ms, struct statefile_buf *b);

/*
 * The same in slices, so a large table never stalls the loop: each call appends the
 * flows of the next max_slots table slots (0: all) to b. Start with a zeroed cursor and
 * the same b; returns 1 when the payload is complete, 0 when slots remain, or b's error.
 * Each flow record is self-contained, so flows changing between slices are fine.
 */
struct edge_snapshot {
    bool is_started;
    uint32_t next_slot;
    uint32_t n_flows;
    size_t count_at;
};
int edge_state_save_step(const struct edge *e, uint64_t now_ms, struct statefile_buf *b,
                         struct edge_snapshot *cur, uint32_t max_slots);

/*
 * The journal: with it on, every change to a UDP flow's confirmed registrations (a 2xx,
 * a removal, the flow's death or release) appends a record to a buffer in the edge, so
 * the state on disk can follow each REGISTER between snapshots at the cost of one small
 * append. edge_journal_take moves the pending records into *out (the edge starts a new,
 * empty buffer) and returns their length; edge_journal_replay applies the records of one
 * taken buffer on top of a restored snapshot, in order (the last record of a flow wins),
 * after checking the whole buffer: -EBADMSG and nothing applied when malformed.
 */
void edge_journal_enable(struct edge *e, bool on);
size_t edge_journal_take(struct edge *e, struct statefile_buf *out);
struct edge_restore_result;
int edge_journal_replay(struct edge *e, const uint8_t *p, size_t len, uint64_t now_ms,
                        struct edge_restore_result *res);

struct edge_restore_result {
    uint32_t n_flows, n_regs;
    uint32_t n_skipped; /* expired while down, a socket no longer configured, no room */
};
/* Re-creates the flows of a payload (checked by statefile_read). Returns 0, -EBADMSG
 * (malformed: the flows read so far stay, err says where) or -EPROTONOSUPPORT. */
int edge_state_restore(struct edge *e, const uint8_t *p, size_t len, uint32_t version,
                       uint64_t now_ms, struct edge_restore_result *res, char *err, size_t cap);

#endif
