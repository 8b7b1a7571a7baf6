/*
 * config: the daemon configuration (YAML, libyaml) and the policy (YAML files in a
 * policy directory), loaded into plain structs.
 *
 * Loading walks the YAML events against a fixed schema and rejects syntax errors,
 * unknown keys, duplicate keys, wrong types and out-of-range values with
 * "file:line:col: reason" (1-based). Nothing here touches the network or a loop.
 */
#ifndef SIPEDGE_CONFIG_H
#define SIPEDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/config_addr.h"

#define CONFIG_MAX_LISTEN 8
#define CONFIG_MAX_PEERS 16
#define CONFIG_MAX_DOMAINS 16
#define CONFIG_MAX_ORIGINS 16
#define CONFIG_PATH_MAX 512
#define CONFIG_ERR_MAX 512

struct config {
    struct config_addr listen_udp[CONFIG_MAX_LISTEN]; /* public side */
    unsigned n_listen_udp;
    struct config_addr core;                          /* our core-side address */
    struct config_addr registrar;                     /* where REGISTERs go */
    bool has_external_registrar;                      /* false: embedded registrar runs */
    struct config_addr registrar_backups[CONFIG_MAX_PEERS]; /* failover order after registrar */
    unsigned n_registrar_backups;
    struct config_addr embedded_listen;               /* embedded registrar's address */
    struct config_addr core_peers[CONFIG_MAX_PEERS];  /* trusted core peers besides the registrar */
    unsigned n_core_peers;
    char users_file[CONFIG_PATH_MAX];                 /* embedded registrar digest users */
    char realm[128];
    char domains[CONFIG_MAX_DOMAINS][128];            /* served domains; none = any */
    unsigned n_domains;
    char policy_dir[CONFIG_PATH_MAX];
    uint8_t flow_key[32];
    bool has_flow_key;
    uint8_t flow_key_prev[32];
    bool has_flow_key_prev;
    /* WebSocket (RFC 7118) */
    struct config_addr listen_ws[CONFIG_MAX_LISTEN];
    unsigned n_listen_ws;
    struct config_addr listen_wss[CONFIG_MAX_LISTEN];
    unsigned n_listen_wss;
    char tls_cert[CONFIG_PATH_MAX];
    char tls_key[CONFIG_PATH_MAX];
    /* SIP over TCP and TLS (RFC 3261 §18.3) */
    struct config_addr listen_tcp[CONFIG_MAX_LISTEN];
    unsigned n_listen_tcp;
    struct config_addr listen_tls[CONFIG_MAX_LISTEN];
    unsigned n_listen_tls;
    char tls_client_ca[CONFIG_PATH_MAX];              /* CA file for client certificates */
    bool tls_require_client_cert;                     /* TLS listeners refuse clients without one */
    char ws_origins[CONFIG_MAX_ORIGINS][128];         /* "scheme://host[:port]"; none = any */
    unsigned n_ws_origins;
    int log_level;                                    /* enum log_level */
    int ban_backend;                                  /* enum guard_backend_kind */
    char admin_socket[CONFIG_PATH_MAX];               /* UNIX admin socket; "" = none */
    unsigned workers;                                 /* 0 = one per CPU */
    /* operations */
    struct config_addr admin_listen;                  /* HTTP admin (metrics, API, page) */
    bool has_admin_listen;                            /* false: no HTTP admin listener */
    char admin_token[128];                            /* bearer token for non-loopback peers */
    char audit_path[CONFIG_PATH_MAX];                 /* audit log; "-" stdout, "" off */
    char run_user[64];                                /* drop privileges to this user */
    char state_dir[CONFIG_PATH_MAX];                  /* persistent state; "" = none */
};

#define POLICY_MAX_BAN_STEPS 8
#define POLICY_MAX_ALLOW 32
#define POLICY_MAX_SCANNERS 32

enum policy_over_limit { POLICY_OVER_LIMIT_REJECT = 0, POLICY_OVER_LIMIT_DROP };
enum policy_ban_scope { POLICY_BAN_SCOPE_PORT = 0, POLICY_BAN_SCOPE_IP };
#define POLICY_MAX_ROUTES 8
enum policy_nft_drop { POLICY_NFT_DROP_LISTEN_PORTS = 0, POLICY_NFT_DROP_ALL };

struct policy {
    /* limits */
    uint32_t max_message_bytes; /* 1024..65535 for UDP */
    uint16_t max_headers;       /* 8..256 */
    uint32_t max_flows;         /* flow table capacity per worker */
    /* embedded registrar */
    uint32_t min_expires_s;     /* below: 423 */
    uint32_t max_expires_s;     /* granted expires is capped here */
    uint32_t default_expires_s;
    uint32_t max_bindings;      /* location table bound: 503 when full */
    uint32_t max_contacts_per_aor;
    uint32_t nonce_ttl_s;
    int digest_challenges;      /* enum: 0 md5, 1 sha256, 2 md5 then sha256, 3 sha256 then md5 */
    /* flows */
    uint32_t flow_idle_timeout_s; /* UDP flow forgotten after this much silence */
    uint32_t dead_flow_grace_s;   /* after a flow dies: de-REGISTER its contacts after this */
    /* WebSocket */
    uint32_t ws_max_message_bytes;  /* reassembled message cap, >= 65536 */
    uint32_t ws_first_message_timeout_s; /* idle after handshake before the first SIP message */
    uint32_t ws_max_conns_per_ip;
    uint32_t ws_handshakes_per_ip_per_s; /* token bucket rate; burst = 2x */
    uint32_t ws_ping_interval_s;    /* server ping after this much idle */
    uint32_t ws_pong_timeout_s;     /* no traffic this long after a ping: close */
    uint32_t ws_out_queue_max_bytes; /* per connection; over it the client is too slow */
    bool ws_require_origin;         /* refuse handshakes without an Origin header */
    uint32_t flow_timer_s;          /* Flow-Timer in 2xx REGISTER (RFC 5626 §5.4) */
    /* NAT keepalive and registration caching */
    bool nat_keepalive;             /* server pings to NATed UDP flows */
    int nat_ping_method;            /* 0 = CRLF, 1 = OPTIONS */
    uint32_t nat_ping_interval_s;   /* half the ~30 s many NATs keep an idle UDP mapping */
    uint32_t nat_max_missed_pings;  /* unanswered OPTIONS pings before the flow is dead */
    uint32_t nat_expires_s;         /* Expires granted to NATed clients */
    uint32_t nat_expires_jitter_s;  /* spread so refreshes do not synchronise */
    bool regcache;                  /* answer unchanged refreshes locally */
    uint32_t regcache_registrar_expires_s; /* Expires asked of the registrar when caching */
    uint32_t regcache_refresh_margin_s;    /* go upstream when less than this is left */
    int regcache_resync;            /* 0 off, 1 assert: re-register after a registrar outage */
    /* Registrar health */
    uint32_t registrar_timeout_s;   /* a relayed request unanswered this long: registrar down */
    uint32_t registrar_retry_s;     /* a down registrar is tried again after this */
    uint32_t registrar_loss_grace_s; /* cache keeps answering this long past the margin */
    uint32_t registrar_ping_interval_s; /* OPTIONS health check of each registrar; 0: off */
    uint32_t stop_timeout_s;        /* SIGTERM: exit at the latest after this */
    /* guard: rate limits (token buckets: rate per second, burst in messages) */
    uint32_t guard_ip_rate, guard_ip_burst;           /* per source address */
    uint32_t guard_ip_port_rate, guard_ip_port_burst; /* per (address, port) */
    uint32_t guard_aor_rate, guard_aor_burst;         /* REGISTERs per address-of-record */
    uint32_t guard_registrar_rate, guard_registrar_burst; /* REGISTERs towards the registrar */
    uint32_t guard_registrar_reserved_pct; /* share only known authenticated flows may use */
    int guard_over_limit_action;           /* enum policy_over_limit */
    uint32_t guard_retry_after_min_s, guard_retry_after_max_s; /* 503 Retry-After range */
    uint32_t guard_max_sources;            /* bucket/strike table bound */
    uint32_t guard_max_aors;               /* per-AOR bucket table bound */
    /* guard: strikes (sliding window per source) */
    uint32_t guard_window_s;
    uint32_t guard_threshold;              /* strikes of one (address, port) or address: ban */
    uint32_t guard_ip_threshold;           /* strikes of a whole address: address ban */
    uint32_t guard_w_malformed, guard_w_auth_failure, guard_w_forbidden, guard_w_not_found;
    uint32_t guard_w_scanner, guard_w_unknown_domain, guard_w_over_limit, guard_w_user_scan;
    uint32_t guard_unknown_users;          /* distinct 404'd users from one address: scan */
    uint32_t guard_auth_memory_s;          /* 2xx after credentials marks (address, port) */
    /* guard: bans */
    char guard_ban_durations_text[POLICY_MAX_BAN_STEPS][16]; /* as written; see below */
    unsigned n_guard_ban_durations_text;
    uint32_t guard_ban_durations_s[POLICY_MAX_BAN_STEPS]; /* ladder, filled by the loader */
    unsigned n_guard_ban_durations;
    int guard_ban_scope;                   /* enum policy_ban_scope */
    uint32_t guard_max_bans;               /* ban table bound */
    uint32_t guard_ban_memory_s;           /* escalation level forgotten after this */
    char guard_allowlist[POLICY_MAX_ALLOW][48]; /* CIDRs, validated by the loader */
    unsigned n_guard_allowlist;
    char guard_scanners[POLICY_MAX_SCANNERS][32]; /* User-Agent substrings, case-insensitive */
    unsigned n_guard_scanners;
    int guard_nft_drop;                    /* enum policy_nft_drop */
    char guard_event_log[CONFIG_PATH_MAX]; /* "-" stdout, "" off */
    /* NAT: Contact aliases instead of Path, for registrars without RFC 3327 support */
    bool nat_contact_alias;
    /* trust boundary */
    uint32_t guard_ipv6_prefix;      /* IPv6 sources are keyed by this prefix (32..128) */
    uint32_t guard_max_flows_per_ip; /* UDP flows one address (IPv6: prefix) may hold */
    uint32_t guard_unproven_ban_s;   /* (address, port) ban for strikes without proof of
                                        return routability (spoofable) */
    uint32_t ws_message_timeout_s;   /* a started WebSocket message must complete within */
    /* SIP over TCP and TLS */
    uint32_t stream_max_message_bytes;   /* header block + body cap per message */
    uint32_t stream_first_message_timeout_s; /* after accept (TLS: after the handshake) */
    uint32_t stream_message_timeout_s;   /* a started message must complete within */
    uint32_t stream_tls_handshake_timeout_s;
    uint32_t stream_max_conns_per_ip;
    uint32_t stream_conns_per_ip_per_s;  /* accept token bucket rate; burst = 2x */
    uint32_t stream_idle_timeout_s;      /* nothing at all received this long: close */
    uint32_t stream_out_queue_max_bytes; /* per connection; over it the client is too slow */
    uint32_t upstream_udp_max_bytes;     /* a REGISTER larger than this goes to the core over TCP */
    char relay_allow_routes[POLICY_MAX_ROUTES][64]; /* "host:port" outbound-proxy Routes a
                                                       client may name; others are stripped */
    unsigned n_relay_allow_routes;
};

/* Fills built-in defaults (embedded registrar on 127.0.0.1:5080, listen 0.0.0.0:5060,
 * core 127.0.0.1:5070, policy dir "policies/default"). */
void config_defaults(struct config *cfg);
void policy_defaults(struct policy *pol);

/*
 * Loads a YAML config file over the values already in *cfg. On error returns
 * -EINVAL (or -errno for I/O) and writes "file:line:col: reason" into err.
 */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errcap);
/* Same from memory; name is used in error messages. */
int config_load_string(struct config *cfg, const char *name, const char *text, size_t len,
                       char *err, size_t errcap);

/*
 * Loads every *.yaml file of a policy directory (sorted by name) over policy_defaults.
 * Writes *pol only on success; on error *pol is untouched and err says file:line:col.
 */
int policy_load_dir(struct policy *pol, const char *dir, char *err, size_t errcap);
int policy_load_string(struct policy *pol, const char *name, const char *text, size_t len,
                       char *err, size_t errcap);

#endif
