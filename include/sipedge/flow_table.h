/*
 * flow_table: one worker's RFC 5626 flows, bounded, with generation-checked ids.
 *
 * A flow is (transport, local socket, remote address). Each flow lives in a fixed
 * slot; a slot's generation changes whenever it is reused, so (slot, generation)
 * from a flow token or a timer never reaches the wrong peer. UDP flows are found by
 * address through a hash index. Flows end when the worker releases them (idle and no
 * live registration, or dead); nothing is ever evicted to make room: a full table
 * makes flow_table_add fail with -ENOSPC and the caller answers 503.
 * Owned and used by one worker thread only; time comes in as now_ms.
 */
#ifndef SIPEDGE_FLOW_TABLE_H
#define SIPEDGE_FLOW_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "sipedge/flow_token.h"

enum flow_transport { FLOW_UDP = 1, FLOW_WS = 2, FLOW_WSS = 3, FLOW_TCP = 4, FLOW_TLS = 5 };
#define FLOW_N_TRANSPORTS (FLOW_TLS + 1) /* arrays indexed by enum flow_transport */

/* "udp", "ws", "wss", "tcp", "tls", or "unknown". */
static inline const char *flow_transport_name(uint8_t t)
{
    static const char *const names[FLOW_N_TRANSPORTS] = {"unknown", "udp", "ws", "wss", "tcp",
                                                         "tls"};
    return t < FLOW_N_TRANSPORTS ? names[t] : "unknown";
}

enum flow_state { FLOW_FREE = 0, FLOW_LIVE, FLOW_DEAD };

struct flow_reg;

struct flow {
    uint32_t gen;
    uint8_t state;     /* enum flow_state */
    uint8_t transport; /* enum flow_transport */
    uint8_t sock;      /* index of the local socket/listener it arrived on */
    bool is_nat;
    bool is_ping_outstanding; /* an OPTIONS ping is waiting for its answer */
    uint8_t missed_pings;
    union flow_addr remote;
    uint64_t last_rx_ms;
    uint64_t reg_until_ms; /* latest registration expiry the registrar granted over it */
    uint64_t conn;         /* connection id of a WS/WSS flow (transport_ws) */
    uint64_t dead_at_ms;   /* when it died; its bindings are de-registered after a grace */
    uint64_t answer_paid_until_ms; /* a REGISTER without credentials paid the registrar
                                      budget for its challenge answer, until then */
    uint64_t challenge_hash; /* hash of the nonce of the last challenge sent to a UDP flow;
                                a request echoing it proves the address receives (0: none) */
    struct flow_reg *regs; /* registrations relayed over this flow (owned by the edge) */
    uint32_t hnext;        /* hash chain, slot + 1; 0 ends the chain */
    uint32_t dnext;        /* dead list, slot + 1 (owned by the edge) */
    uint8_t token_len;
    char token[FLOW_TOKEN_MAX]; /* computed once when the flow is created */
};

struct flow_table;

/* Creates a table of cap slots for worker id. Returns 0, -EINVAL or -ENOMEM. */
int flow_table_new(struct flow_table **out, uint32_t cap, uint8_t worker);
void flow_table_free(struct flow_table *t);

/* Newest flow for (transport, sock, remote) that is not free (it may be dead), or NULL. */
struct flow *flow_table_find(struct flow_table *t, uint8_t transport, uint8_t sock,
                             const struct sockaddr *remote);

/*
 * Adds a live flow and computes its token with keys. Returns 0 and *out,
 * -ENOSPC when the table is full, -EINVAL for an unsupported address.
 */
int flow_table_add(struct flow_table *t, struct flow_token_keys *keys, uint8_t transport,
                   uint8_t sock, const struct sockaddr *remote, uint64_t now_ms,
                   struct flow **out);

/* Flow in slot with generation gen in any state but free, or NULL. */
struct flow *flow_table_get(struct flow_table *t, uint32_t slot, uint32_t gen);

/* Slot by index whatever its state (for owners walking their own lists), or NULL. */
struct flow *flow_table_get_slot(struct flow_table *t, uint32_t slot);

uint32_t flow_table_slot(const struct flow_table *t, const struct flow *f);
uint8_t flow_table_worker(const struct flow_table *t);
/* The epoch written into the tokens of flows added from now on (0 until set). */
void flow_table_set_epoch(struct flow_table *t, uint32_t epoch);
uint32_t flow_table_epoch(const struct flow_table *t);

/* Marks a flow dead (requests for it then get 430); it stays until released. */
void flow_table_mark_dead(struct flow_table *t, struct flow *f);

/* Frees the slot (its generation changes). */
void flow_table_release(struct flow_table *t, struct flow *f);

typedef void (*flow_table_release_cb)(void *ctx, struct flow *f);

/*
 * Releases UDP flows, among the next max_scan slots (resuming where the previous call
 * stopped), that are idle for idle_ms and hold no registration. on_release(ctx, f)
 * runs before each release (may be NULL). Returns the count released. Connection
 * flows (WS) end with their connection, never here.
 */
uint32_t flow_table_sweep(struct flow_table *t, uint64_t now_ms, uint64_t idle_ms,
                          uint32_t max_scan, flow_table_release_cb on_release, void *ctx);

uint32_t flow_table_count(const struct flow_table *t);
uint32_t flow_table_capacity(const struct flow_table *t);

#endif
