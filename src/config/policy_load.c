/*
 * policy_load: the policy schema, its defaults, and loading a policy directory.
 *
 * A policy directory holds any number of *.yaml files applied in name order over the
 * defaults ("10-base.yaml", then "20-site.yaml"). Each file may set any subset of keys.
 * Cross-field rules (min_expires <= default_expires <= max_expires) are checked once, on
 * the merged result, so a value may be split across files; an error points at the key
 * that was set last among those involved, which is the one an operator just edited.
 *
 * To add a knob: add the field to struct policy, a default in policy_defaults, a line in
 * the schema table below, a commented entry in policies/default/policy.yaml and a row in
 * docs/CONFIG.md. Ordering rules between fields go in policy_orders.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"
#include "sipedge/config.h"
#include "sipedge/cidr.h"

#define P struct policy

static const struct yaml_walk_field policy_limits_schema[] = {
    YAML_WALK_FIELD_U32(P, "max_message_bytes", max_message_bytes, 1024, 65535),
    YAML_WALK_FIELD_U32(P, "max_headers", max_headers, 8, 256),
    YAML_WALK_FIELD_U32(P, "max_flows", max_flows, 16, 4194304),
    YAML_WALK_FIELD_END,
};

static const char *const policy_digest_names[] = {"md5", "sha256", "md5-sha256", "sha256-md5",
                                                   NULL};

static const struct yaml_walk_field policy_registrar_schema[] = {
    YAML_WALK_FIELD_U32(P, "min_expires", min_expires_s, 1, 86400),
    YAML_WALK_FIELD_U32(P, "max_expires", max_expires_s, 60, 604800),
    YAML_WALK_FIELD_U32(P, "default_expires", default_expires_s, 1, 604800),
    YAML_WALK_FIELD_U32(P, "max_bindings", max_bindings, 1, 10000000),
    YAML_WALK_FIELD_U32(P, "max_contacts_per_aor", max_contacts_per_aor, 1, 1000),
    YAML_WALK_FIELD_U32(P, "nonce_ttl", nonce_ttl_s, 10, 86400),
    YAML_WALK_FIELD_ENUM(P, "digest", digest_challenges, policy_digest_names),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_flows_schema[] = {
    YAML_WALK_FIELD_U32(P, "idle_timeout", flow_idle_timeout_s, 10, 86400),
    YAML_WALK_FIELD_U32(P, "dead_flow_grace", dead_flow_grace_s, 0, 3600),
    YAML_WALK_FIELD_U32(P, "flow_timer", flow_timer_s, 10, 3600),
    YAML_WALK_FIELD_END,
};

static const char *const policy_ping_methods[] = {"crlf", "options", NULL};

static const struct yaml_walk_field policy_nat_schema[] = {
    YAML_WALK_FIELD_BOOL(P, "keepalive", nat_keepalive),
    YAML_WALK_FIELD_ENUM(P, "ping_method", nat_ping_method, policy_ping_methods),
    YAML_WALK_FIELD_U32(P, "ping_interval", nat_ping_interval_s, 5, 300),
    YAML_WALK_FIELD_U32(P, "max_missed_pings", nat_max_missed_pings, 1, 100),
    YAML_WALK_FIELD_U32(P, "expires", nat_expires_s, 20, 3600),
    YAML_WALK_FIELD_U32(P, "expires_jitter", nat_expires_jitter_s, 0, 600),
    YAML_WALK_FIELD_BOOL(P, "contact_alias", nat_contact_alias),
    YAML_WALK_FIELD_END,
};

static const char *const policy_resync_names[] = {"off", "assert", NULL};

static const struct yaml_walk_field policy_regcache_schema[] = {
    YAML_WALK_FIELD_BOOL(P, "enabled", regcache),
    YAML_WALK_FIELD_U32(P, "registrar_expires", regcache_registrar_expires_s, 60, 86400),
    YAML_WALK_FIELD_U32(P, "refresh_margin", regcache_refresh_margin_s, 10, 3600),
    YAML_WALK_FIELD_ENUM(P, "resync", regcache_resync, policy_resync_names),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_upstream_schema[] = {
    YAML_WALK_FIELD_U32(P, "timeout", registrar_timeout_s, 1, 300),
    YAML_WALK_FIELD_U32(P, "retry", registrar_retry_s, 1, 3600),
    YAML_WALK_FIELD_U32(P, "loss_grace", registrar_loss_grace_s, 0, 86400),
    YAML_WALK_FIELD_U32(P, "ping_interval", registrar_ping_interval_s, 0, 3600),
    YAML_WALK_FIELD_U32(P, "udp_max_bytes", upstream_udp_max_bytes, 576, 65535),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_ws_schema[] = {
    YAML_WALK_FIELD_U32(P, "max_message_bytes", ws_max_message_bytes, 65536, 1048576),
    YAML_WALK_FIELD_U32(P, "first_message_timeout", ws_first_message_timeout_s, 1, 3600),
    YAML_WALK_FIELD_U32(P, "max_connections_per_ip", ws_max_conns_per_ip, 1, 1000000),
    YAML_WALK_FIELD_U32(P, "handshakes_per_ip_per_s", ws_handshakes_per_ip_per_s, 1, 100000),
    YAML_WALK_FIELD_U32(P, "ping_interval", ws_ping_interval_s, 5, 3600),
    YAML_WALK_FIELD_U32(P, "pong_timeout", ws_pong_timeout_s, 1, 600),
    YAML_WALK_FIELD_U32(P, "out_queue_max_bytes", ws_out_queue_max_bytes, 65536, 67108864),
    YAML_WALK_FIELD_BOOL(P, "require_origin", ws_require_origin),
    YAML_WALK_FIELD_U32(P, "message_timeout", ws_message_timeout_s, 1, 600),
    YAML_WALK_FIELD_END,
};

static const char *const policy_over_limit_names[] = {"reject", "drop", NULL};
static const char *const policy_ban_scope_names[] = {"port", "ip", NULL};
static const char *const policy_nft_drop_names[] = {"listen-ports", "all", NULL};

static const struct yaml_walk_field policy_guard_ip_schema[] = {
    YAML_WALK_FIELD_U32(P, "rate", guard_ip_rate, 1, 1000000),
    YAML_WALK_FIELD_U32(P, "burst", guard_ip_burst, 1, 1000000),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_ip_port_schema[] = {
    YAML_WALK_FIELD_U32(P, "rate", guard_ip_port_rate, 1, 1000000),
    YAML_WALK_FIELD_U32(P, "burst", guard_ip_port_burst, 1, 1000000),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_aor_schema[] = {
    YAML_WALK_FIELD_U32(P, "rate", guard_aor_rate, 1, 1000000),
    YAML_WALK_FIELD_U32(P, "burst", guard_aor_burst, 1, 1000000),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_registrar_schema[] = {
    YAML_WALK_FIELD_U32(P, "rate", guard_registrar_rate, 1, 10000000),
    YAML_WALK_FIELD_U32(P, "burst", guard_registrar_burst, 1, 10000000),
    YAML_WALK_FIELD_U32(P, "reserved_percent", guard_registrar_reserved_pct, 0, 90),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_limits_schema[] = {
    YAML_WALK_FIELD_MAP("per_ip", policy_guard_ip_schema),
    YAML_WALK_FIELD_MAP("per_ip_port", policy_guard_ip_port_schema),
    YAML_WALK_FIELD_MAP("per_aor_register", policy_guard_aor_schema),
    YAML_WALK_FIELD_MAP("registrar", policy_guard_registrar_schema),
    YAML_WALK_FIELD_ENUM(P, "over_limit_action", guard_over_limit_action,
                         policy_over_limit_names),
    YAML_WALK_FIELD_U32(P, "retry_after_min", guard_retry_after_min_s, 1, 3600),
    YAML_WALK_FIELD_U32(P, "retry_after_max", guard_retry_after_max_s, 1, 3600),
    YAML_WALK_FIELD_U32(P, "max_sources", guard_max_sources, 16, 4194304),
    YAML_WALK_FIELD_U32(P, "max_aors", guard_max_aors, 16, 4194304),
    YAML_WALK_FIELD_U32(P, "max_flows_per_ip", guard_max_flows_per_ip, 1, 4194304),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_weights_schema[] = {
    YAML_WALK_FIELD_U32(P, "malformed", guard_w_malformed, 0, 1000),
    YAML_WALK_FIELD_U32(P, "auth_failure", guard_w_auth_failure, 0, 1000),
    YAML_WALK_FIELD_U32(P, "forbidden", guard_w_forbidden, 0, 1000),
    YAML_WALK_FIELD_U32(P, "not_found", guard_w_not_found, 0, 1000),
    YAML_WALK_FIELD_U32(P, "scanner", guard_w_scanner, 0, 1000),
    YAML_WALK_FIELD_U32(P, "unknown_domain", guard_w_unknown_domain, 0, 1000),
    YAML_WALK_FIELD_U32(P, "over_limit", guard_w_over_limit, 0, 1000),
    YAML_WALK_FIELD_U32(P, "user_scan", guard_w_user_scan, 0, 1000),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_strikes_schema[] = {
    YAML_WALK_FIELD_U32(P, "window", guard_window_s, 1, 86400),
    YAML_WALK_FIELD_U32(P, "threshold", guard_threshold, 1, 100000),
    YAML_WALK_FIELD_U32(P, "ip_threshold", guard_ip_threshold, 1, 100000),
    YAML_WALK_FIELD_MAP("weights", policy_guard_weights_schema),
    YAML_WALK_FIELD_U32(P, "unknown_users", guard_unknown_users, 2, 16),
    YAML_WALK_FIELD_U32(P, "auth_memory", guard_auth_memory_s, 1, 604800),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_bans_schema[] = {
    YAML_WALK_FIELD_STR_LIST(P, "durations", guard_ban_durations_text,
                             n_guard_ban_durations_text),
    YAML_WALK_FIELD_ENUM(P, "scope", guard_ban_scope, policy_ban_scope_names),
    YAML_WALK_FIELD_U32(P, "max_bans", guard_max_bans, 1, 4194304),
    YAML_WALK_FIELD_U32(P, "memory", guard_ban_memory_s, 1, 31536000),
    YAML_WALK_FIELD_ENUM(P, "nft_drop", guard_nft_drop, policy_nft_drop_names),
    YAML_WALK_FIELD_U32(P, "unproven_duration", guard_unproven_ban_s, 1, 86400),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_guard_schema[] = {
    YAML_WALK_FIELD_MAP("limits", policy_guard_limits_schema),
    YAML_WALK_FIELD_MAP("strikes", policy_guard_strikes_schema),
    YAML_WALK_FIELD_MAP("bans", policy_guard_bans_schema),
    YAML_WALK_FIELD_STR_LIST(P, "allowlist", guard_allowlist, n_guard_allowlist),
    YAML_WALK_FIELD_STR_LIST(P, "scanners", guard_scanners, n_guard_scanners),
    YAML_WALK_FIELD_STRING(P, "event_log", guard_event_log),
    YAML_WALK_FIELD_U32(P, "ipv6_prefix", guard_ipv6_prefix, 32, 128),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_stream_schema[] = {
    YAML_WALK_FIELD_U32(P, "max_message_bytes", stream_max_message_bytes, 4096, 1048576),
    YAML_WALK_FIELD_U32(P, "first_message_timeout", stream_first_message_timeout_s, 1, 3600),
    YAML_WALK_FIELD_U32(P, "message_timeout", stream_message_timeout_s, 1, 600),
    YAML_WALK_FIELD_U32(P, "tls_handshake_timeout", stream_tls_handshake_timeout_s, 1, 120),
    YAML_WALK_FIELD_U32(P, "max_connections_per_ip", stream_max_conns_per_ip, 1, 1000000),
    YAML_WALK_FIELD_U32(P, "connections_per_ip_per_s", stream_conns_per_ip_per_s, 1, 100000),
    YAML_WALK_FIELD_U32(P, "idle_timeout", stream_idle_timeout_s, 10, 86400),
    YAML_WALK_FIELD_U32(P, "out_queue_max_bytes", stream_out_queue_max_bytes, 65536, 67108864),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_relay_schema[] = {
    YAML_WALK_FIELD_STR_LIST(P, "allow_routes", relay_allow_routes, n_relay_allow_routes),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_stop_schema[] = {
    YAML_WALK_FIELD_U32(P, "timeout", stop_timeout_s, 1, 300),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field policy_schema[] = {
    YAML_WALK_FIELD_MAP("limits", policy_limits_schema),
    YAML_WALK_FIELD_MAP("registrar", policy_registrar_schema),
    YAML_WALK_FIELD_MAP("flows", policy_flows_schema),
    YAML_WALK_FIELD_MAP("ws", policy_ws_schema),
    YAML_WALK_FIELD_MAP("stream", policy_stream_schema),
    YAML_WALK_FIELD_MAP("nat", policy_nat_schema),
    YAML_WALK_FIELD_MAP("regcache", policy_regcache_schema),
    YAML_WALK_FIELD_MAP("upstream", policy_upstream_schema),
    YAML_WALK_FIELD_MAP("guard", policy_guard_schema),
    YAML_WALK_FIELD_MAP("relay", policy_relay_schema),
    YAML_WALK_FIELD_MAP("stop", policy_stop_schema),
    YAML_WALK_FIELD_END,
};

/* "lo <= hi" rules between uint32_t fields, checked after all files are merged. */
struct policy_order {
    size_t lo_off, hi_off;
    const char *lo_key, *hi_key;
};

static const struct policy_order policy_orders[] = {
    {offsetof(P, min_expires_s), offsetof(P, default_expires_s), "registrar.min_expires",
     "registrar.default_expires"},
    {offsetof(P, default_expires_s), offsetof(P, max_expires_s), "registrar.default_expires",
     "registrar.max_expires"},
    {offsetof(P, guard_retry_after_min_s), offsetof(P, guard_retry_after_max_s),
     "guard.limits.retry_after_min", "guard.limits.retry_after_max"},
    {offsetof(P, guard_threshold), offsetof(P, guard_ip_threshold), "guard.strikes.threshold",
     "guard.strikes.ip_threshold"},
};

#undef P

#define POLICY_TRACK_MAX 128
#define POLICY_FILES_MAX 256

/* Where a field was last set, so cross-field errors can point at a file position. */
struct policy_origin {
    size_t off;
    char name[CONFIG_PATH_MAX];
    size_t line, col;
    unsigned seq;
};

struct policy_track {
    const char *name; /* file being walked */
    struct policy_origin origin[POLICY_TRACK_MAX];
    unsigned n_origin;
    unsigned seq;
};

static void policy_guard_defaults(struct policy *pol)
{
    static const char *const scanners[] = {
        "sipvicious", "friendly-scanner", "sipcli", "sip-scan", "vaxsipuseragent",
        "sipsak", "sundayddr", "iWar", "smap", "pplsip", "sipptk",
    };
    static const uint32_t ladder[] = {600, 3600, 86400};
    pol->guard_ip_rate = 200;
    pol->guard_ip_burst = 400;
    pol->guard_ip_port_rate = 50;
    pol->guard_ip_port_burst = 100;
    pol->guard_aor_rate = 2;
    pol->guard_aor_burst = 10;
    pol->guard_registrar_rate = 2000;
    pol->guard_registrar_burst = 4000;
    pol->guard_registrar_reserved_pct = 30;
    pol->guard_over_limit_action = POLICY_OVER_LIMIT_REJECT;
    pol->guard_retry_after_min_s = 5;
    pol->guard_retry_after_max_s = 30;
    pol->guard_max_sources = 65536;
    pol->guard_max_aors = 65536;
    pol->guard_window_s = 60;
    pol->guard_threshold = 10;
    pol->guard_ip_threshold = 30;
    pol->guard_w_malformed = 2;
    pol->guard_w_auth_failure = 2;
    pol->guard_w_forbidden = 2;
    pol->guard_w_not_found = 1;
    pol->guard_w_scanner = 10;
    pol->guard_w_unknown_domain = 3;
    pol->guard_w_over_limit = 2;
    pol->guard_w_user_scan = 10;
    pol->guard_unknown_users = 5;
    pol->guard_auth_memory_s = 3600;
    for (size_t i = 0; i < sizeof(ladder) / sizeof(ladder[0]); i++) {
        snprintf(pol->guard_ban_durations_text[i], sizeof(pol->guard_ban_durations_text[i]),
                 "%u", (unsigned)ladder[i]);
        pol->guard_ban_durations_s[i] = ladder[i];
    }
    pol->n_guard_ban_durations_text = sizeof(ladder) / sizeof(ladder[0]);
    pol->n_guard_ban_durations = sizeof(ladder) / sizeof(ladder[0]);
    pol->guard_ban_scope = POLICY_BAN_SCOPE_IP;
    pol->guard_max_bans = 100000;
    pol->guard_ban_memory_s = 7 * 86400;
    snprintf(pol->guard_allowlist[0], sizeof(pol->guard_allowlist[0]), "127.0.0.0/8");
    snprintf(pol->guard_allowlist[1], sizeof(pol->guard_allowlist[1]), "::1/128");
    pol->n_guard_allowlist = 2;
    for (size_t i = 0; i < sizeof(scanners) / sizeof(scanners[0]); i++)
        snprintf(pol->guard_scanners[i], sizeof(pol->guard_scanners[i]), "%s", scanners[i]);
    pol->n_guard_scanners = sizeof(scanners) / sizeof(scanners[0]);
    pol->guard_nft_drop = POLICY_NFT_DROP_LISTEN_PORTS;
    snprintf(pol->guard_event_log, sizeof(pol->guard_event_log), "-");
    pol->guard_ipv6_prefix = 64;
    pol->guard_max_flows_per_ip = 1000;
    pol->guard_unproven_ban_s = 60;
}

void policy_defaults(struct policy *pol)
{
    memset(pol, 0, sizeof(*pol));
    pol->max_message_bytes = 65535;
    pol->max_headers = 64;
    pol->max_flows = 65536;
    pol->min_expires_s = 60;
    pol->max_expires_s = 3600;
    pol->default_expires_s = 3600;
    pol->max_bindings = 100000;
    pol->max_contacts_per_aor = 10;
    pol->nonce_ttl_s = 300;
    pol->flow_idle_timeout_s = 300;
    pol->dead_flow_grace_s = 5;
    pol->flow_timer_s = 30;
    pol->ws_max_message_bytes = 65536;
    pol->ws_first_message_timeout_s = 10;
    pol->ws_max_conns_per_ip = 100;
    pol->ws_handshakes_per_ip_per_s = 10;
    pol->ws_ping_interval_s = 30;
    pol->ws_pong_timeout_s = 10;
    pol->ws_out_queue_max_bytes = 262144;
    pol->ws_require_origin = false;
    pol->ws_message_timeout_s = 5;
    pol->stream_max_message_bytes = 65536;
    pol->stream_first_message_timeout_s = 10;
    pol->stream_message_timeout_s = 5;
    pol->stream_tls_handshake_timeout_s = 5;
    pol->stream_max_conns_per_ip = 100;
    pol->stream_conns_per_ip_per_s = 10;
    pol->stream_idle_timeout_s = 600;
    pol->stream_out_queue_max_bytes = 262144;
    pol->upstream_udp_max_bytes = 1300;
    pol->nat_keepalive = true;
    pol->nat_ping_method = 0;
    pol->nat_ping_interval_s = 15;
    pol->nat_max_missed_pings = 3;
    pol->nat_expires_s = 60;
    pol->nat_expires_jitter_s = 10;
    pol->nat_contact_alias = false;
    pol->regcache = true;
    pol->regcache_registrar_expires_s = 3600;
    pol->regcache_refresh_margin_s = 300;
    pol->registrar_timeout_s = 5;
    pol->registrar_retry_s = 30;
    pol->registrar_loss_grace_s = 600;
    pol->registrar_ping_interval_s = 2;
    pol->stop_timeout_s = 5;
    policy_guard_defaults(pol);
}

static struct policy_origin *policy_origin_find(struct policy_track *t, size_t off)
{
    for (unsigned i = 0; i < t->n_origin; i++)
        if (t->origin[i].off == off)
            return &t->origin[i];
    return NULL;
}

static void on_policy_field(void *arg, const struct yaml_walk_field *field, const char *path,
                            size_t line, size_t col)
{
    (void)path;
    struct policy_track *t = arg;
    struct policy_origin *o = policy_origin_find(t, field->off);
    if (o == NULL) {
        if (t->n_origin == POLICY_TRACK_MAX)
            return;
        o = &t->origin[t->n_origin++];
        o->off = field->off;
    }
    snprintf(o->name, sizeof(o->name), "%s", t->name);
    o->line = line;
    o->col = col;
    o->seq = ++t->seq;
}

static uint32_t policy_u32_at(const struct policy *pol, size_t off)
{
    uint32_t v;
    memcpy(&v, (const unsigned char *)pol + off, sizeof(v));
    return v;
}

static int policy_check(const struct policy *pol, struct policy_track *t, const char *fallback,
                        char *err, size_t errcap)
{
    for (size_t i = 0; i < sizeof(policy_orders) / sizeof(policy_orders[0]); i++) {
        const struct policy_order *r = &policy_orders[i];
        uint32_t lo = policy_u32_at(pol, r->lo_off), hi = policy_u32_at(pol, r->hi_off);
        if (lo <= hi)
            continue;
        const struct policy_origin *olo = policy_origin_find(t, r->lo_off);
        const struct policy_origin *ohi = policy_origin_find(t, r->hi_off);
        bool blame_lo = olo != NULL && (ohi == NULL || olo->seq > ohi->seq);
        const struct policy_origin *o = blame_lo ? olo : ohi;
        const char *name = o ? o->name : fallback;
        size_t line = o ? o->line : 1, col = o ? o->col : 1;
        if (blame_lo)
            yaml_walk_error(err, errcap, name, line, col,
                            "'%s' (%u) must not be greater than '%s' (%u)", r->lo_key, (unsigned)lo,
                            r->hi_key, (unsigned)hi);
        else
            yaml_walk_error(err, errcap, name, line, col,
                            "'%s' (%u) must not be less than '%s' (%u)", r->hi_key, (unsigned)hi,
                            r->lo_key, (unsigned)lo);
        return -EINVAL;
    }
    return 0;
}

/*
 * Guard values the walker keeps as text: the ban ladder becomes seconds, allowlist CIDRs
 * and scanner patterns are checked. Errors point at the list's key.
 */
static int policy_guard_finish(struct policy *pol, struct policy_track *t, const char *fallback,
                               char *err, size_t errcap)
{
    const struct policy_origin *o;
#define GUARD_ERR(field, ...)                                                                      \
    do {                                                                                           \
        o = policy_origin_find(t, offsetof(struct policy, field));                                 \
        yaml_walk_error(err, errcap, o ? o->name : fallback, o ? o->line : 1, o ? o->col : 1,      \
                        __VA_ARGS__);                                                              \
        return -EINVAL;                                                                            \
    } while (0)

    if (pol->n_guard_ban_durations_text == 0)
        GUARD_ERR(guard_ban_durations_text, "'guard.bans.durations' needs at least one duration");
    for (unsigned i = 0; i < pol->n_guard_ban_durations_text; i++) {
        const char *v = pol->guard_ban_durations_text[i];
        char *end = NULL;
        errno = 0;
        unsigned long d = strtoul(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || d < 1 || d > 31536000)
            GUARD_ERR(guard_ban_durations_text,
                      "'guard.bans.durations' item %u ('%s') must be an integer 1..31536000", i + 1,
                      v);
        pol->guard_ban_durations_s[i] = (uint32_t)d;
    }
    pol->n_guard_ban_durations = pol->n_guard_ban_durations_text;
    for (unsigned i = 0; i < pol->n_guard_allowlist; i++)
        if (cidr_parse(pol->guard_allowlist[i], NULL) != 0)
            GUARD_ERR(guard_allowlist,
                      "'guard.allowlist' item %u ('%s') is not an address or CIDR (a.b.c.d/n, x::/n)",
                      i + 1, pol->guard_allowlist[i]);
    for (unsigned i = 0; i < pol->n_guard_scanners; i++)
        if (pol->guard_scanners[i][0] == '\0')
            GUARD_ERR(guard_scanners, "'guard.scanners' item %u is empty", i + 1);
    for (unsigned i = 0; i < pol->n_relay_allow_routes; i++) {
        struct config_addr a;
        if (config_addr_parse(pol->relay_allow_routes[i], &a) != 0)
            GUARD_ERR(relay_allow_routes,
                      "'relay.allow_routes' item %u ('%s') is not a numeric ip:port or [ip6]:port",
                      i + 1, pol->relay_allow_routes[i]);
    }
#undef GUARD_ERR
    return 0;
}

static int policy_walk(struct policy *tmp, struct policy_track *t, const char *name,
                       const char *text, size_t len, char *err, size_t errcap)
{
    char dir[CONFIG_PATH_MAX];
    if (yaml_walk_dirname(name, dir, sizeof(dir)) != 0) {
        snprintf(err, errcap, "%s: path too long", name);
        return -ENAMETOOLONG;
    }
    t->name = name;
    struct yaml_walk_src src = {.name = name,
                                .text = text,
                                .len = len,
                                .base_dir = dir,
                                .on_field = on_policy_field,
                                .cb_arg = t};
    return yaml_walk_run(policy_schema, tmp, &src, err, errcap);
}

int policy_load_string(struct policy *pol, const char *name, const char *text, size_t len,
                       char *err, size_t errcap)
{
    if (pol == NULL || (text == NULL && len > 0))
        return -EINVAL;
    if (name == NULL)
        name = "<policy>";

    struct policy tmp = *pol;
    struct policy_track *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errcap, "%s: out of memory", name);
        return -ENOMEM;
    }
    int rc = policy_walk(&tmp, t, name, text, len, err, errcap);
    if (rc == 0)
        rc = policy_check(&tmp, t, name, err, errcap);
    if (rc == 0)
        rc = policy_guard_finish(&tmp, t, name, err, errcap);
    if (rc == 0)
        *pol = tmp;
    free(t);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_policy_file(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".yaml") == 0;
}

int policy_load_dir(struct policy *pol, const char *dir, char *err, size_t errcap)
{
    if (pol == NULL || dir == NULL)
        return -EINVAL;

    int rc = 0;
    char **names = NULL;
    size_t n_names = 0;
    char *text = NULL;
    struct policy_track *t = NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        rc = -errno;
        snprintf(err, errcap, "%s: cannot open policy directory: %s", dir, strerror(-rc));
        goto out;
    }
    names = calloc(POLICY_FILES_MAX, sizeof(*names));
    t = calloc(1, sizeof(*t));
    if (names == NULL || t == NULL) {
        rc = -ENOMEM;
        snprintf(err, errcap, "%s: out of memory", dir);
        goto out;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!is_policy_file(e->d_name))
            continue;
        if (n_names == POLICY_FILES_MAX) {
            rc = -EINVAL;
            snprintf(err, errcap, "%s: too many policy files (limit %d)", dir, POLICY_FILES_MAX);
            goto out;
        }
        names[n_names] = strdup(e->d_name);
        if (names[n_names] == NULL) {
            rc = -ENOMEM;
            snprintf(err, errcap, "%s: out of memory", dir);
            goto out;
        }
        n_names++;
    }
    qsort(names, n_names, sizeof(*names), cmp_names);

    struct policy tmp;
    policy_defaults(&tmp);
    for (size_t i = 0; i < n_names; i++) {
        char path[CONFIG_PATH_MAX];
        const char *sep = dir[0] != '\0' && dir[strlen(dir) - 1] != '/' ? "/" : "";
        int n = snprintf(path, sizeof(path), "%s%s%s", dir, sep, names[i]);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            rc = -ENAMETOOLONG;
            snprintf(err, errcap, "%s: path too long for '%s'", dir, names[i]);
            goto out;
        }
        size_t len = 0;
        rc = yaml_walk_read_file(path, &text, &len, err, errcap);
        if (rc != 0)
            goto out;
        rc = policy_walk(&tmp, t, path, text, len, err, errcap);
        free(text);
        text = NULL;
        if (rc != 0)
            goto out;
    }
    rc = policy_check(&tmp, t, dir, err, errcap);
    if (rc == 0)
        rc = policy_guard_finish(&tmp, t, dir, err, errcap);
    if (rc == 0)
        *pol = tmp;
out:
    if (d != NULL)
        closedir(d);
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    free(text);
    free(t);
    return rc;
}
