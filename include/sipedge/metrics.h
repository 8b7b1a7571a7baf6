/*
 * metrics: Prometheus text exposition (format 0.0.4) of one worker's counters.
 *
 * A pure renderer: the caller gathers a snapshot (struct metrics_input) and metrics_render
 * writes every family with its # HELP and # TYPE lines, in a fixed order:
 *   sipedge_register_total{outcome}   REGISTER outcomes seen by the edge (metrics_reg_note)
 *   sipedge_flows{transport}          live flows
 *   sipedge_bans_active               live bans
 *   sipedge_drops_total{reason}       messages dropped or refused, edge and guard causes
 *   sipedge_relay_latency_seconds     histogram: request relayed → registrar answer
 *   sipedge_registrar_up              0 while every registrar is marked down by the edge
 *                                     (upstream.timeout without an answer), else 1
 *   sipedge_edge_<name>_total         every edge counter (EDGE_STATS)
 *   sipedge_guard_<name>_total        every guard counter (GUARD_STATS)
 *   sipedge_worker_messages_total{worker,side}, sipedge_worker_flows{worker},
 *   sipedge_worker_handoff_total{worker,what}   per edge worker
 *   sipedge_audit_*                   audit log lines, failures, drops (writer queue full),
 *                                     signals, full tables
 * No loop, no I/O.
 */
#ifndef SIPEDGE_METRICS_H
#define SIPEDGE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/audit.h"
#include "sipedge/edge.h"
#include "sipedge/guard.h"

enum metrics_reg_outcome {
    METRICS_REG_OK = 0, /* 2xx from the registrar */
    METRICS_REG_CACHED, /* 2xx from the registration cache */
    METRICS_REG_REJECTED, /* 3xx, 4xx, 6xx (digest challenges 401/407 included) */
    METRICS_REG_FAILED, /* 5xx: registrar failure, timeout or the edge's own 503 */
    METRICS_REG_N,
};

/* Registration outcome counters, kept by the caller. */
struct metrics_reg {
    uint64_t n[METRICS_REG_N];
};

/* Counts one REGISTER outcome. */
void metrics_reg_note(struct metrics_reg *r, uint16_t status, bool is_from_cache);
const char *metrics_reg_outcome_name(enum metrics_reg_outcome o);
enum metrics_reg_outcome metrics_reg_outcome_of(uint16_t status, bool is_from_cache);

struct metrics_worker {
    uint64_t rx_public;      /* messages from clients */
    uint64_t rx_core;        /* messages from the core */
    uint64_t handed_in;      /* messages other threads handed to it */
    uint64_t outbox_dropped; /* messages to the control thread lost to a full queue */
    uint32_t flows;
};

/* A snapshot; NULL members render no samples for their families (HELP/TYPE stay). */
struct metrics_input {
    const struct edge_stats *edge;
    const struct edge_latency *latency;
    const struct guard_stats *guard;
    const struct audit_stats *audit;
    const struct metrics_reg *reg;
    uint32_t flows[FLOW_N_TRANSPORTS]; /* live flows by enum flow_transport */
    uint32_t bans_active;
    bool is_registrar_up;
    /* Per worker (n_workers of them, may be 0): what each received and holds, so an
     * uneven spread of sources over the workers shows. */
    unsigned n_workers;
    const struct metrics_worker *workers;
};

/* Sum of every sipedge_drops_total sample. */
uint64_t metrics_drops_total(const struct metrics_input *in);

/* Renders into buf. Returns the length (< cap, NUL-terminated) or -ENOSPC when it does
 * not fit (buf content unspecified), -EINVAL for bad arguments. */
int metrics_render(char *buf, size_t cap, const struct metrics_input *in);

#endif
