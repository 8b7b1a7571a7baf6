/*
 * metrics: text exposition rendering. Histogram buckets are cumulative in the exposition
 * format while edge_latency keeps one count per bucket, so they are summed here.
 */
#include "sipedge/metrics.h"

#include <errno.h>
#include <string.h>

#include "sipedge/strbuf.h"

static const char *const metrics_reg_names[METRICS_REG_N] = {"ok", "cached", "rejected",
                                                              "failed"};

const char *metrics_reg_outcome_name(enum metrics_reg_outcome o)
{
    return (unsigned)o < METRICS_REG_N ? metrics_reg_names[o] : "unknown";
}

enum metrics_reg_outcome metrics_reg_outcome_of(uint16_t status, bool is_from_cache)
{
    if (status >= 200 && status < 300)
        return is_from_cache ? METRICS_REG_CACHED : METRICS_REG_OK;
    if (status >= 500 && status < 600)
        return METRICS_REG_FAILED;
    return METRICS_REG_REJECTED;
}

void metrics_reg_note(struct metrics_reg *r, uint16_t status, bool is_from_cache)
{
    r->n[metrics_reg_outcome_of(status, is_from_cache)]++;
}

static void out_family(struct strbuf *o, const char *name, const char *type, const char *help)
{
    strbuf_fmt(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Drop causes: counter name in its struct, label value. */
#define METRICS_EDGE_DROPS(X)                                                                      \
    X(drop_oversize, "oversize")                                                                   \
    X(drop_not_sip, "not_sip")                                                                     \
    X(drop_malformed, "malformed")                                                                 \
    X(drop_stray_response, "stray_response")                                                       \
    X(drop_non_core_peer, "non_core_peer")                                                         \
    X(drop_dead_flow_response, "dead_flow_response")                                               \
    X(tx_overflow, "tx_overflow")                                                                  \
    X(conn_send_failed, "conn_send_failed")

#define METRICS_GUARD_DROPS(X)                                                                     \
    X(drop_banned, "banned")                                                                       \
    X(over_limit_ip, "rate_ip")                                                                    \
    X(over_limit_ip_port, "rate_ip_port")                                                          \
    X(over_limit_overflow, "rate_overflow")                                                        \
    X(over_limit_aor, "rate_aor")                                                                  \
    X(over_limit_registrar, "rate_registrar")                                                      \
    X(scanner, "scanner")                                                                          \
    X(unknown_domain, "unknown_domain")

uint64_t metrics_drops_total(const struct metrics_input *in)
{
    uint64_t n = 0;
#define METRICS_DROP_SUM(field, label) n += src->field;
    if (in->edge) {
        const struct edge_stats *src = in->edge;
        METRICS_EDGE_DROPS(METRICS_DROP_SUM)
    }
    if (in->guard) {
        const struct guard_stats *src = in->guard;
        METRICS_GUARD_DROPS(METRICS_DROP_SUM)
    }
#undef METRICS_DROP_SUM
    return n;
}

int metrics_render(char *buf, size_t cap, const struct metrics_input *in)
{
    if (!buf || cap == 0 || !in)
        return -EINVAL;
    struct strbuf o;
    strbuf_init(&o, buf, cap);

    out_family(&o, "sipedge_register_total", "counter",
               "REGISTER outcomes: ok (registrar 2xx), cached (cache 2xx), rejected (3xx/4xx/6xx, "
               "challenges included), failed (5xx).");
    for (unsigned i = 0; in->reg && i < METRICS_REG_N; i++)
        strbuf_fmt(&o, "sipedge_register_total{outcome=\"%s\"} %llu\n", metrics_reg_names[i],
                   (unsigned long long)in->reg->n[i]);

    out_family(&o, "sipedge_flows", "gauge", "Live flows per transport.");
    for (unsigned t = FLOW_UDP; t < FLOW_N_TRANSPORTS; t++)
        strbuf_fmt(&o, "sipedge_flows{transport=\"%s\"} %u\n", flow_transport_name((uint8_t)t),
                   (unsigned)in->flows[t]);

    out_family(&o, "sipedge_bans_active", "gauge", "Live bans.");
    strbuf_fmt(&o, "sipedge_bans_active %u\n", (unsigned)in->bans_active);

    out_family(&o, "sipedge_drops_total", "counter",
               "Messages dropped or refused, by cause (edge and guard).");
#define METRICS_DROP_LINE(field, label)                                                            \
    strbuf_fmt(&o, "sipedge_drops_total{reason=\"%s\"} %llu\n", label,                             \
               (unsigned long long)src->field);
    if (in->edge) {
        const struct edge_stats *src = in->edge;
        METRICS_EDGE_DROPS(METRICS_DROP_LINE)
    }
    if (in->guard) {
        const struct guard_stats *src = in->guard;
        METRICS_GUARD_DROPS(METRICS_DROP_LINE)
    }
#undef METRICS_DROP_LINE

    out_family(&o, "sipedge_relay_latency_seconds", "histogram",
               "Time from relaying a request to the registrar's answer.");
    if (in->latency) {
        uint64_t cum = 0;
        for (unsigned i = 0; i < EDGE_LATENCY_BUCKETS; i++) {
            cum += in->latency->count[i];
            strbuf_fmt(&o, "sipedge_relay_latency_seconds_bucket{le=\"%.9g\"} %llu\n",
                       edge_latency_bounds_s[i], (unsigned long long)cum);
        }
        cum += in->latency->count[EDGE_LATENCY_BUCKETS];
        strbuf_fmt(&o, "sipedge_relay_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                   (unsigned long long)cum);
        strbuf_fmt(&o, "sipedge_relay_latency_seconds_sum %.9g\n", in->latency->sum_s);
        strbuf_fmt(&o, "sipedge_relay_latency_seconds_count %llu\n", (unsigned long long)cum);
    }

    out_family(&o, "sipedge_registrar_up", "gauge",
               "1 unless a relayed REGISTER has waited 30 s or more for the registrar.");
    strbuf_fmt(&o, "sipedge_registrar_up %d\n", in->is_registrar_up ? 1 : 0);

#define METRICS_EDGE_LINE(name)                                                                    \
    out_family(&o, "sipedge_edge_" #name "_total", "counter", "Edge counter " #name ".");          \
    strbuf_fmt(&o, "sipedge_edge_" #name "_total %llu\n", (unsigned long long)in->edge->name);
    if (in->edge) {
        EDGE_STATS(METRICS_EDGE_LINE)
    }
#undef METRICS_EDGE_LINE
#define METRICS_GUARD_LINE(name)                                                                   \
    out_family(&o, "sipedge_guard_" #name "_total", "counter", "Guard counter " #name ".");        \
    strbuf_fmt(&o, "sipedge_guard_" #name "_total %llu\n", (unsigned long long)in->guard->name);
    if (in->guard) {
        GUARD_STATS(METRICS_GUARD_LINE)
    }
#undef METRICS_GUARD_LINE

    if (in->n_workers) {
        out_family(&o, "sipedge_worker_messages_total", "counter",
                   "Messages each edge worker received, from clients (public) and the core.");
        for (unsigned i = 0; i < in->n_workers; i++) {
            strbuf_fmt(&o, "sipedge_worker_messages_total{worker=\"%u\",side=\"public\"} %llu\n",
                       i, (unsigned long long)in->workers[i].rx_public);
            strbuf_fmt(&o, "sipedge_worker_messages_total{worker=\"%u\",side=\"core\"} %llu\n", i,
                       (unsigned long long)in->workers[i].rx_core);
        }
        out_family(&o, "sipedge_worker_flows", "gauge", "Live flows each edge worker holds.");
        for (unsigned i = 0; i < in->n_workers; i++)
            strbuf_fmt(&o, "sipedge_worker_flows{worker=\"%u\"} %u\n", i,
                       (unsigned)in->workers[i].flows);
        out_family(&o, "sipedge_worker_handoff_total", "counter",
                   "Messages handed to each worker by other threads (in), and messages it "
                   "lost to a full queue towards the control thread (outbox_dropped).");
        for (unsigned i = 0; i < in->n_workers; i++) {
            strbuf_fmt(&o, "sipedge_worker_handoff_total{worker=\"%u\",what=\"in\"} %llu\n", i,
                       (unsigned long long)in->workers[i].handed_in);
            strbuf_fmt(&o,
                       "sipedge_worker_handoff_total{worker=\"%u\",what=\"outbox_dropped\"} %llu\n",
                       i, (unsigned long long)in->workers[i].outbox_dropped);
        }
    }

    if (in->audit) {
        const struct audit_stats *a = in->audit;
        out_family(&o, "sipedge_audit_lines_total", "counter", "Audit log lines written.");
        strbuf_fmt(&o, "sipedge_audit_lines_total %llu\n", (unsigned long long)a->lines_written);
        out_family(&o, "sipedge_audit_write_failed_total", "counter",
                   "Audit log lines that could not be written.");
        strbuf_fmt(&o, "sipedge_audit_write_failed_total %llu\n",
                   (unsigned long long)a->write_failed);
        out_family(&o, "sipedge_audit_lines_dropped_total", "counter",
                   "Audit log lines dropped because the writer's queue was full.");
        strbuf_fmt(&o, "sipedge_audit_lines_dropped_total %llu\n",
                   (unsigned long long)a->lines_dropped);
        out_family(&o, "sipedge_audit_signals_total", "counter",
                   "Security signals flagged in audit lines.");
        for (unsigned i = 0; i < 3; i++)
            strbuf_fmt(&o, "sipedge_audit_signals_total{signal=\"%s\"} %llu\n",
                       audit_signal_name(1u << i), (unsigned long long)a->signals[i]);
        out_family(&o, "sipedge_audit_untracked_total", "counter",
                   "Keys not tracked for signals because a table was full.");
        strbuf_fmt(&o, "sipedge_audit_untracked_total{table=\"aor\"} %llu\n",
                   (unsigned long long)a->aors_full);
        strbuf_fmt(&o, "sipedge_audit_untracked_total{table=\"contact\"} %llu\n",
                   (unsigned long long)a->contacts_full);
    }
    if (strbuf_overflowed(&o))
        return -ENOSPC;
    return (int)strbuf_len(&o);
}
