/*
 * sipedge: command line → config → policy → worker → orderly stop.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include <openssl/rand.h>

#include "sipedge/config.h"
#include "sipedge/log.h"
#include "sipedge/wallclock.h"
#include "sipedge/statefile.h"
#include "sipedge/worker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sipedge [-c FILE] [options]\n"
            "  -c, --config FILE          YAML configuration file\n"
            "      --listen-udp ADDR:PORT public UDP listener (repeatable; replaces the config's)\n"
            "      --listen-ws ADDR:PORT  public WebSocket listener (repeatable)\n"
            "      --listen-wss ADDR:PORT public secure WebSocket listener (repeatable)\n"
            "      --listen-tcp ADDR:PORT public SIP over TCP listener (repeatable)\n"
            "      --listen-tls ADDR:PORT public SIP over TLS listener (repeatable)\n"
            "      --tls-cert FILE        certificate chain (PEM) for wss and TLS\n"
            "      --tls-key FILE         private key (PEM) for wss and TLS\n"
            "      --ws-origin ORIGIN     allowed Origin, scheme://host[:port] (repeatable)\n"
            "      --core ADDR:PORT       our core-side address (towards registrars)\n"
            "      --registrar ADDR:PORT  external registrar (without it the embedded one runs);\n"
            "                             repeat it to add backups, tried in order on failure\n"
            "      --registrar-listen ADDR:PORT  address of the embedded registrar\n"
            "      --core-peer ADDR:PORT  another trusted core peer (repeatable)\n"
            "      --users FILE           users file of the embedded registrar (user:password)\n"
            "      --realm REALM          digest realm of the embedded registrar\n"
            "      --policy DIR           policy directory\n"
            "      --flow-key HEX         32-byte flow token key as 64 hex characters\n"
            "      --log-level LEVEL      error|warn|info|debug\n"
            "      --ban-backend KIND     nftables|userspace (default userspace)\n"
            "      --admin-socket PATH    UNIX socket for sipedgectl\n"
            "      --admin ADDR:PORT      HTTP admin listener: /metrics, /api/*, status page\n"
            "                             (PORT alone means 127.0.0.1:PORT)\n"
            "      --audit PATH           registration audit log, JSON lines (\"-\" = stdout)\n"
            "      --user NAME            switch to this user once the sockets are bound\n"
            "      --state-dir DIR        keep flows, bans and bindings here across restarts\n"
            "      --workers N            edge worker threads (0: one per CPU, the default)\n"
            "      --registrar-only       run only the embedded registrar\n"
            "      --check-config         validate the configuration and policy, then exit\n"
            "      --version              print the version and exit\n");
}

enum {
    OPT_LISTEN_UDP = 256,
    OPT_CORE,
    OPT_REGISTRAR,
    OPT_REGISTRAR_LISTEN,
    OPT_CORE_PEER,
    OPT_USERS,
    OPT_REALM,
    OPT_POLICY,
    OPT_FLOW_KEY,
    OPT_LOG_LEVEL,
    OPT_REGISTRAR_ONLY,
    OPT_CHECK_CONFIG,
    OPT_VERSION,
    OPT_LISTEN_WS,
    OPT_LISTEN_WSS,
    OPT_LISTEN_TCP,
    OPT_LISTEN_TLS,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_WS_ORIGIN,
    OPT_BAN_BACKEND,
    OPT_ADMIN_SOCKET,
    OPT_ADMIN_HTTP,
    OPT_AUDIT,
    OPT_USER,
    OPT_STATE_DIR,
    OPT_WORKERS,
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"listen-udp", required_argument, NULL, OPT_LISTEN_UDP},
    {"core", required_argument, NULL, OPT_CORE},
    {"registrar", required_argument, NULL, OPT_REGISTRAR},
    {"registrar-listen", required_argument, NULL, OPT_REGISTRAR_LISTEN},
    {"core-peer", required_argument, NULL, OPT_CORE_PEER},
    {"users", required_argument, NULL, OPT_USERS},
    {"realm", required_argument, NULL, OPT_REALM},
    {"policy", required_argument, NULL, OPT_POLICY},
    {"flow-key", required_argument, NULL, OPT_FLOW_KEY},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"registrar-only", no_argument, NULL, OPT_REGISTRAR_ONLY},
    {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
    {"version", no_argument, NULL, OPT_VERSION},
    {"listen-ws", required_argument, NULL, OPT_LISTEN_WS},
    {"listen-wss", required_argument, NULL, OPT_LISTEN_WSS},
    {"listen-tcp", required_argument, NULL, OPT_LISTEN_TCP},
    {"listen-tls", required_argument, NULL, OPT_LISTEN_TLS},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"ws-origin", required_argument, NULL, OPT_WS_ORIGIN},
    {"ban-backend", required_argument, NULL, OPT_BAN_BACKEND},
    {"admin-socket", required_argument, NULL, OPT_ADMIN_SOCKET},
    {"admin", required_argument, NULL, OPT_ADMIN_HTTP},
    {"audit", required_argument, NULL, OPT_AUDIT},
    {"user", required_argument, NULL, OPT_USER},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_hex_key(const char *s, uint8_t out[32])
{
    if (strlen(s) != 64)
        return -EINVAL;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -EINVAL;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static int addr_opt(const char *opt, const char *val, struct config_addr *out)
{
    if (config_addr_parse(val, out) < 0) {
        fprintf(stderr, "sipedge: --%s: '%s' is not a numeric ADDR:PORT\n", opt, val);
        return -EINVAL;
    }
    return 0;
}

static int copy_opt(const char *opt, const char *val, char *dst, size_t cap)
{
    if (strlen(val) >= cap) {
        fprintf(stderr, "sipedge: --%s: value too long\n", opt);
        return -EINVAL;
    }
    memcpy(dst, val, strlen(val) + 1);
    return 0;
}

/* Overrides collected from the command line, applied after the config file. */
struct overrides {
    struct config cli;
    bool has_tcp, has_tls;
    bool has_ws, has_wss, has_cert, has_key, has_origins, has_backend, has_admin;
    bool has_admin_http, has_audit, has_user, has_state_dir, has_workers;
    bool has_listen, has_core, has_registrar, has_reg_listen, has_users, has_realm, has_policy,
        has_flow_key, has_log_level, has_peers;
};

static void apply_overrides(struct config *cfg, const struct overrides *o)
{
    if (o->has_listen) {
        memcpy(cfg->listen_udp, o->cli.listen_udp, sizeof(cfg->listen_udp));
        cfg->n_listen_udp = o->cli.n_listen_udp;
    }
    if (o->has_core)
        cfg->core = o->cli.core;
    if (o->has_backend)
        cfg->ban_backend = o->cli.ban_backend;
    if (o->has_admin)
        memcpy(cfg->admin_socket, o->cli.admin_socket, sizeof(cfg->admin_socket));
    if (o->has_admin_http) {
        cfg->admin_listen = o->cli.admin_listen;
        cfg->has_admin_listen = true;
    }
    if (o->has_audit)
        memcpy(cfg->audit_path, o->cli.audit_path, sizeof(cfg->audit_path));
    if (o->has_user)
        memcpy(cfg->run_user, o->cli.run_user, sizeof(cfg->run_user));
    if (o->has_state_dir)
        memcpy(cfg->state_dir, o->cli.state_dir, sizeof(cfg->state_dir));
    if (o->has_workers)
        cfg->workers = o->cli.workers;
    if (o->has_ws) {
        memcpy(cfg->listen_ws, o->cli.listen_ws, sizeof(cfg->listen_ws));
        cfg->n_listen_ws = o->cli.n_listen_ws;
    }
    if (o->has_wss) {
        memcpy(cfg->listen_wss, o->cli.listen_wss, sizeof(cfg->listen_wss));
        cfg->n_listen_wss = o->cli.n_listen_wss;
    }
    if (o->has_tcp) {
        memcpy(cfg->listen_tcp, o->cli.listen_tcp, sizeof(cfg->listen_tcp));
        cfg->n_listen_tcp = o->cli.n_listen_tcp;
    }
    if (o->has_tls) {
        memcpy(cfg->listen_tls, o->cli.listen_tls, sizeof(cfg->listen_tls));
        cfg->n_listen_tls = o->cli.n_listen_tls;
    }
    if (o->has_cert)
        memcpy(cfg->tls_cert, o->cli.tls_cert, sizeof(cfg->tls_cert));
    if (o->has_key)
        memcpy(cfg->tls_key, o->cli.tls_key, sizeof(cfg->tls_key));
    if (o->has_origins) {
        memcpy(cfg->ws_origins, o->cli.ws_origins, sizeof(cfg->ws_origins));
        cfg->n_ws_origins = o->cli.n_ws_origins;
    }
    if (o->has_reg_listen) {
        cfg->embedded_listen = o->cli.embedded_listen;
        if (!cfg->has_external_registrar)
            cfg->registrar = cfg->embedded_listen;
    }
    if (o->has_registrar) {
        cfg->registrar = o->cli.registrar;
        cfg->has_external_registrar = true;
        memcpy(cfg->registrar_backups, o->cli.registrar_backups, sizeof(cfg->registrar_backups));
        cfg->n_registrar_backups = o->cli.n_registrar_backups;
    }
    if (o->has_peers) {
        memcpy(cfg->core_peers, o->cli.core_peers, sizeof(cfg->core_peers));
        cfg->n_core_peers = o->cli.n_core_peers;
    }
    if (o->has_users)
        memcpy(cfg->users_file, o->cli.users_file, sizeof(cfg->users_file));
    if (o->has_realm)
        memcpy(cfg->realm, o->cli.realm, sizeof(cfg->realm));
    if (o->has_policy)
        memcpy(cfg->policy_dir, o->cli.policy_dir, sizeof(cfg->policy_dir));
    if (o->has_flow_key) {
        memcpy(cfg->flow_key, o->cli.flow_key, sizeof(cfg->flow_key));
        cfg->has_flow_key = true;
    }
    if (o->has_log_level)
        cfg->log_level = o->cli.log_level;
}

/*
 * Without a configured flow.key, a state directory keeps a generated one, so the Paths
 * the registrar stores (and the flows restored from the snapshot) stay valid across
 * restarts. Returns 0 with cfg->flow_key set, or a negative errno (then a random key
 * for this run only).
 */
static int state_flow_key(struct config *cfg)
{
    char path[CONFIG_PATH_MAX + 32];
    if (statefile_path(path, sizeof(path), cfg->state_dir, "flow.key") < 0)
        return -ENAMETOOLONG;
    uint8_t *p;
    size_t len;
    int rc = statefile_load(path, "flowkey", 1, "flow key", &p, &len, NULL);
    if (rc == 0 && len == sizeof(cfg->flow_key)) {
        memcpy(cfg->flow_key, p, len);
        free(p);
        log_info("flow key: the one kept in %s (set flow.key to share it between nodes)", path);
        return 0;
    }
    if (rc == 0)
        free(p);
    if (RAND_bytes(cfg->flow_key, sizeof(cfg->flow_key)) != 1)
        return -EIO;
    char err[256];
    rc = statefile_write(path, "flowkey", 1, cfg->flow_key, sizeof(cfg->flow_key), err,
                         sizeof(err));
    if (rc < 0) {
        log_error("flow key not kept: %s", err);
        return rc;
    }
    log_info("flow key: generated and kept in %s", path);
    return 0;
}

/* The wall clock every layer stamps with (wallclock.h): CLOCK_REALTIME, in ms. */
static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    wallclock_set(realtime_ms);
    static struct config cfg;
    static struct overrides o;
    static struct policy pol;
    const char *config_path = NULL;
    bool check_only = false, registrar_only = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case OPT_LISTEN_UDP:
            if (o.cli.n_listen_udp >= CONFIG_MAX_LISTEN) {
                fprintf(stderr, "sipedge: at most %d --listen-udp\n", CONFIG_MAX_LISTEN);
                return 1;
            }
            rc = addr_opt("listen-udp", optarg, &o.cli.listen_udp[o.cli.n_listen_udp++]);
            o.has_listen = true;
            break;
        case OPT_LISTEN_WS:
        case OPT_LISTEN_WSS: {
            bool is_wss = c == OPT_LISTEN_WSS;
            unsigned *n = is_wss ? &o.cli.n_listen_wss : &o.cli.n_listen_ws;
            if (*n >= CONFIG_MAX_LISTEN) {
                fprintf(stderr, "sipedge: at most %d listeners per transport\n",
                        CONFIG_MAX_LISTEN);
                return 1;
            }
            struct config_addr *a = is_wss ? &o.cli.listen_wss[(*n)++] : &o.cli.listen_ws[(*n)++];
            rc = addr_opt(is_wss ? "listen-wss" : "listen-ws", optarg, a);
            if (is_wss)
                o.has_wss = true;
            else
                o.has_ws = true;
            break;
        }
        case OPT_LISTEN_TCP:
        case OPT_LISTEN_TLS: {
            bool is_tls = c == OPT_LISTEN_TLS;
            unsigned *n = is_tls ? &o.cli.n_listen_tls : &o.cli.n_listen_tcp;
            if (*n >= CONFIG_MAX_LISTEN) {
                fprintf(stderr, "sipedge: at most %d listeners per transport\n",
                        CONFIG_MAX_LISTEN);
                return 1;
            }
            struct config_addr *a = is_tls ? &o.cli.listen_tls[(*n)++] : &o.cli.listen_tcp[(*n)++];
            rc = addr_opt(is_tls ? "listen-tls" : "listen-tcp", optarg, a);
            if (is_tls)
                o.has_tls = true;
            else
                o.has_tcp = true;
            break;
        }
        case OPT_BAN_BACKEND:
            if (strcmp(optarg, "nftables") == 0) {
                o.cli.ban_backend = 1;
            } else if (strcmp(optarg, "userspace") == 0) {
                o.cli.ban_backend = 0;
            } else {
                fprintf(stderr, "sipedge: --ban-backend: expected nftables|userspace\n");
                return 1;
            }
            o.has_backend = true;
            break;
        case OPT_ADMIN_SOCKET:
            rc = copy_opt("admin-socket", optarg, o.cli.admin_socket, sizeof(o.cli.admin_socket));
            o.has_admin = true;
            break;
        case OPT_ADMIN_HTTP: {
            char buf[80];
            const char *v = optarg;
            if (strspn(optarg, "0123456789") == strlen(optarg) && strlen(optarg) <= 5) {
                snprintf(buf, sizeof(buf), "127.0.0.1:%s", optarg);
                v = buf;
            }
            rc = addr_opt("admin", v, &o.cli.admin_listen);
            o.has_admin_http = true;
            break;
        }
        case OPT_AUDIT:
            rc = copy_opt("audit", optarg, o.cli.audit_path, sizeof(o.cli.audit_path));
            o.has_audit = true;
            break;
        case OPT_USER:
            rc = copy_opt("user", optarg, o.cli.run_user, sizeof(o.cli.run_user));
            o.has_user = true;
            break;
        case OPT_STATE_DIR:
            rc = copy_opt("state-dir", optarg, o.cli.state_dir, sizeof(o.cli.state_dir));
            o.has_state_dir = true;
            break;
        case OPT_WORKERS: {
            char *end = NULL;
            unsigned long v = strtoul(optarg, &end, 10);
            if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' || v > 64) {
                fprintf(stderr, "sipedge: --workers: '%s' is not 0..64 (0: one per CPU)\n",
                        optarg);
                rc = -EINVAL;
                break;
            }
            o.cli.workers = (unsigned)v;
            o.has_workers = true;
            break;
        }
        case OPT_TLS_CERT:
            rc = copy_opt("tls-cert", optarg, o.cli.tls_cert, sizeof(o.cli.tls_cert));
            o.has_cert = true;
            break;
        case OPT_TLS_KEY:
            rc = copy_opt("tls-key", optarg, o.cli.tls_key, sizeof(o.cli.tls_key));
            o.has_key = true;
            break;
        case OPT_WS_ORIGIN:
            if (o.cli.n_ws_origins >= CONFIG_MAX_ORIGINS) {
                fprintf(stderr, "sipedge: at most %d --ws-origin\n", CONFIG_MAX_ORIGINS);
                return 1;
            }
            rc = copy_opt("ws-origin", optarg, o.cli.ws_origins[o.cli.n_ws_origins],
                          sizeof(o.cli.ws_origins[0]));
            o.cli.n_ws_origins++;
            o.has_origins = true;
            break;
        case OPT_CORE:
            rc = addr_opt("core", optarg, &o.cli.core);
            o.has_core = true;
            break;
        case OPT_REGISTRAR:
            /* The first is the registrar, the others its backups in failover order. */
            if (!o.has_registrar) {
                rc = addr_opt("registrar", optarg, &o.cli.registrar);
            } else if (o.cli.n_registrar_backups < CONFIG_MAX_PEERS) {
                rc = addr_opt("registrar", optarg,
                              &o.cli.registrar_backups[o.cli.n_registrar_backups++]);
            } else {
                fprintf(stderr, "sipedge: at most %d backup registrars\n", CONFIG_MAX_PEERS);
                return 1;
            }
            o.has_registrar = true;
            break;
        case OPT_REGISTRAR_LISTEN:
            rc = addr_opt("registrar-listen", optarg, &o.cli.embedded_listen);
            o.has_reg_listen = true;
            break;
        case OPT_CORE_PEER:
            if (o.cli.n_core_peers >= CONFIG_MAX_PEERS) {
                fprintf(stderr, "sipedge: at most %d --core-peer\n", CONFIG_MAX_PEERS);
                return 1;
            }
            rc = addr_opt("core-peer", optarg, &o.cli.core_peers[o.cli.n_core_peers++]);
            o.has_peers = true;
            break;
        case OPT_USERS:
            rc = copy_opt("users", optarg, o.cli.users_file, sizeof(o.cli.users_file));
            o.has_users = true;
            break;
        case OPT_REALM:
            rc = copy_opt("realm", optarg, o.cli.realm, sizeof(o.cli.realm));
            o.has_realm = true;
            break;
        case OPT_POLICY:
            rc = copy_opt("policy", optarg, o.cli.policy_dir, sizeof(o.cli.policy_dir));
            o.has_policy = true;
            break;
        case OPT_FLOW_KEY:
            if (parse_hex_key(optarg, o.cli.flow_key) < 0) {
                fprintf(stderr, "sipedge: --flow-key: expected 64 hex characters\n");
                return 1;
            }
            o.has_flow_key = true;
            break;
        case OPT_LOG_LEVEL: {
            enum log_level lvl;
            if (log_level_parse(optarg, &lvl) < 0) {
                fprintf(stderr, "sipedge: --log-level: expected error|warn|info|debug\n");
                return 1;
            }
            o.cli.log_level = (int)lvl;
            o.has_log_level = true;
            break;
        }
        case OPT_REGISTRAR_ONLY:
            registrar_only = true;
            break;
        case OPT_CHECK_CONFIG:
            check_only = true;
            break;
        case OPT_VERSION:
            printf("sipedge %s\n", SIPEDGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (rc < 0)
            return 1;
    }
    if (optind < argc) {
        fprintf(stderr, "sipedge: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    config_defaults(&cfg);
    char err[CONFIG_ERR_MAX];
    if (config_path && config_load_file(&cfg, config_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "sipedge: %s\n", err);
        return 1;
    }
    apply_overrides(&cfg, &o);
    log_set_level((enum log_level)cfg.log_level);
    struct config builtin;
    config_defaults(&builtin);
    struct stat st;
    if (strcmp(cfg.policy_dir, builtin.policy_dir) == 0 && stat(cfg.policy_dir, &st) != 0) {
        /* Not configured and not found next to us: the compiled-in defaults are the same
         * values policies/default ships. */
        policy_defaults(&pol);
        log_info("policy directory %s not found, using built-in defaults", cfg.policy_dir);
    } else if (policy_load_dir(&pol, cfg.policy_dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "sipedge: %s\n", err);
        return 1;
    }
    if ((cfg.n_listen_wss || cfg.n_listen_tls) && (!cfg.tls_cert[0] || !cfg.tls_key[0])) {
        fprintf(stderr, "sipedge: a wss or TLS listener needs tls.cert and tls.key (--tls-cert, "
                        "--tls-key)\n");
        return 1;
    }
    if (cfg.tls_require_client_cert && !cfg.tls_client_ca[0]) {
        fprintf(stderr, "sipedge: tls.require_client_cert needs tls.client_ca\n");
        return 1;
    }
    if (check_only) {
        printf("sipedge: configuration %s and policy %s are valid\n",
               config_path ? config_path : "(defaults)", cfg.policy_dir);
        return 0;
    }
    /* Made once here for every state file (edge, guard, registrar, flow key). */
    if (cfg.state_dir[0] && mkdir(cfg.state_dir, 0700) < 0 && errno != EEXIST)
        log_error("state dir %s: %s", cfg.state_dir, strerror(errno));
    if (!cfg.has_flow_key && cfg.state_dir[0] && state_flow_key(&cfg) == 0)
        cfg.has_flow_key = true;
    if (!cfg.has_flow_key) {
        if (RAND_bytes(cfg.flow_key, sizeof(cfg.flow_key)) != 1) {
            fprintf(stderr, "sipedge: cannot get random bytes for the flow key\n");
            return 1;
        }
        cfg.has_flow_key = true;
        log_warn("no flow.key configured: using a random key; flow tokens (Path) will not "
                 "survive a restart and differ between nodes");
    }
    struct worker_opts wo = {
        .cfg = &cfg,
        .policy = &pol,
        .run_edge = !registrar_only,
        .run_registrar = registrar_only || !cfg.has_external_registrar,
    };
    int rc = worker_run(&wo);
    return rc < 0 ? 1 : 0;
}
