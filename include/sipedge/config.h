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

#define CONFIG_MAX_LISTEN 8
#define CONFIG_MAX_PEERS 16
#define CONFIG_MAX_DOMAINS 16
#define CONFIG_PATH_MAX 512
#define CONFIG_ERR_MAX 512

/* "ip:port" or "[ipv6]:port", parsed and kept as text for logs and URIs. */
struct config_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64];  /* "127.0.0.1:5060" / "[::1]:5060" */
    char host[48];  /* "127.0.0.1" / "[::1]" (brackets for IPv6, as in a SIP URI) */
    uint16_t port;
};

struct config {
    struct config_addr listen_udp[CONFIG_MAX_LISTEN]; /* public side */
    unsigned n_listen_udp;
    struct config_addr core;                          /* our core-side address */
    struct config_addr registrar;                     /* where REGISTERs go */
    bool has_external_registrar;                      /* false: embedded registrar runs */
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
    int log_level;                                    /* enum log_level */
    unsigned workers;                                 /* 0 = one per CPU */
};

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
    /* flows */
    uint32_t flow_idle_timeout_s; /* UDP flow forgotten after this much silence */
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

/* Parses "ip:port" / "[ip6]:port" (port required). Returns 0 or -EINVAL. */
int config_addr_parse(const char *s, struct config_addr *out);

#endif
