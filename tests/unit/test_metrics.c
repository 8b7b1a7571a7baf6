/* metrics: exposition text (HELP/TYPE, cumulative histogram) and outcome bookkeeping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/metrics.h"

static char out[262144];

static void test_metrics_render_has_help_type_and_values(void **state)
{
    (void)state;
    struct edge_stats es = {0};
    struct guard_stats gs = {0};
    struct metrics_reg reg = {0};
    es.drop_malformed = 3;
    es.relayed_register = 9;
    gs.drop_banned = 4;
    reg.n[METRICS_REG_OK] = 5;
    reg.n[METRICS_REG_REJECTED] = 2;
    struct metrics_input in = {.edge = &es, .guard = &gs, .reg = &reg, .flows = {[FLOW_UDP] = 7, [FLOW_WSS] = 1},
                               .bans_active = 2, .is_registrar_up = true};
    int n = metrics_render(out, sizeof(out), &in);
    assert_true(n > 0);
    assert_int_equal(strlen(out), (size_t)n);
    assert_non_null(strstr(out, "# HELP sipedge_register_total "));
    assert_non_null(strstr(out, "# TYPE sipedge_register_total counter\n"));
    assert_non_null(strstr(out, "sipedge_register_total{outcome=\"ok\"} 5\n"));
    assert_non_null(strstr(out, "sipedge_register_total{outcome=\"rejected\"} 2\n"));
    assert_non_null(strstr(out, "sipedge_flows{transport=\"udp\"} 7\n"));
    assert_non_null(strstr(out, "sipedge_flows{transport=\"wss\"} 1\n"));
    assert_non_null(strstr(out, "# TYPE sipedge_bans_active gauge\nsipedge_bans_active 2\n"));
    assert_non_null(strstr(out, "sipedge_drops_total{reason=\"malformed\"} 3\n"));
    assert_non_null(strstr(out, "sipedge_drops_total{reason=\"banned\"} 4\n"));
    assert_non_null(strstr(out, "sipedge_registrar_up 1\n"));
    assert_non_null(strstr(out, "# TYPE sipedge_edge_relayed_register_total counter\n"
                                "sipedge_edge_relayed_register_total 9\n"));
    assert_non_null(strstr(out, "sipedge_guard_drop_banned_total 4\n"));
    assert_int_equal(metrics_drops_total(&in), 7);
    /* Every line is a comment or "name[{labels}] value". */
    for (char *l = out; *l; l = strchr(l, '\n') + 1) {
        assert_true(l[0] == '#' || (l[0] >= 'a' && l[0] <= 'z'));
        assert_non_null(strchr(l, '\n'));
    }
}

static void test_metrics_histogram_is_cumulative(void **state)
{
    (void)state;
    struct edge_latency lat = {0};
    lat.count[0] = 2;
    lat.count[3] = 1;
    lat.count[EDGE_LATENCY_BUCKETS] = 4;
    lat.n = 7;
    lat.sum_s = 12.5;
    struct metrics_input in = {.latency = &lat};
    assert_true(metrics_render(out, sizeof(out), &in) > 0);
    char want[128];
    snprintf(want, sizeof(want), "sipedge_relay_latency_seconds_bucket{le=\"%.9g\"} 2\n",
             edge_latency_bounds_s[0]);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "sipedge_relay_latency_seconds_bucket{le=\"%.9g\"} 3\n",
             edge_latency_bounds_s[EDGE_LATENCY_BUCKETS - 1]);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "sipedge_relay_latency_seconds_bucket{le=\"+Inf\"} 7\n"));
    assert_non_null(strstr(out, "sipedge_relay_latency_seconds_sum 12.5\n"));
    assert_non_null(strstr(out, "sipedge_relay_latency_seconds_count 7\n"));
    assert_non_null(strstr(out, "# TYPE sipedge_relay_latency_seconds histogram\n"));
}

static void test_metrics_per_worker_samples(void **state)
{
    (void)state;
    struct metrics_worker w[2] = {{.rx_public = 10, .rx_core = 3, .handed_in = 1, .flows = 4},
                                  {.rx_public = 7, .outbox_dropped = 2, .flows = 5}};
    struct metrics_input in = {.n_workers = 2, .workers = w};
    assert_true(metrics_render(out, sizeof(out), &in) > 0);
    assert_non_null(strstr(out, "# TYPE sipedge_worker_messages_total counter\n"));
    assert_non_null(strstr(out, "sipedge_worker_messages_total{worker=\"0\",side=\"public\"} 10\n"));
    assert_non_null(strstr(out, "sipedge_worker_messages_total{worker=\"0\",side=\"core\"} 3\n"));
    assert_non_null(strstr(out, "sipedge_worker_messages_total{worker=\"1\",side=\"public\"} 7\n"));
    assert_non_null(strstr(out, "sipedge_worker_flows{worker=\"1\"} 5\n"));
    assert_non_null(strstr(out, "sipedge_worker_handoff_total{worker=\"0\",what=\"in\"} 1\n"));
    assert_non_null(
        strstr(out, "sipedge_worker_handoff_total{worker=\"1\",what=\"outbox_dropped\"} 2\n"));
    /* No workers (registrar only): no per-worker family. */
    in.n_workers = 0;
    assert_true(metrics_render(out, sizeof(out), &in) > 0);
    assert_null(strstr(out, "sipedge_worker_"));
}

static void test_metrics_render_refuses_small_buffer(void **state)
{
    (void)state;
    struct edge_stats es = {0};
    struct metrics_input in = {.edge = &es};
    char small[256];
    assert_int_equal(metrics_render(small, sizeof(small), &in), -ENOSPC);
}

static void test_metrics_outcomes(void **state)
{
    (void)state;
    assert_int_equal(metrics_reg_outcome_of(200, false), METRICS_REG_OK);
    assert_int_equal(metrics_reg_outcome_of(200, true), METRICS_REG_CACHED);
    assert_int_equal(metrics_reg_outcome_of(401, false), METRICS_REG_REJECTED);
    assert_int_equal(metrics_reg_outcome_of(403, false), METRICS_REG_REJECTED);
    assert_int_equal(metrics_reg_outcome_of(503, false), METRICS_REG_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_render_has_help_type_and_values),
        cmocka_unit_test(test_metrics_histogram_is_cumulative),
        cmocka_unit_test(test_metrics_render_refuses_small_buffer),
        cmocka_unit_test(test_metrics_per_worker_samples),
        cmocka_unit_test(test_metrics_outcomes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
