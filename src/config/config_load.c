/*
 * config_load: the daemon configuration schema, its defaults and address parsing.
 *
 * Loading is all-or-nothing: the walk runs on a scratch copy and *cfg is replaced only when
 * the whole file was accepted, so a bad reload leaves the running configuration alone.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"
#include "sipedge/config.h"
#include "sipedge/log.h"

#define C struct config

/* Indexed by enum log_level. */
static const char *const config_log_levels[] = {"error", "warn", "info", "debug", NULL};

static const struct yaml_walk_field config_listen_schema[] = {
    YAML_WALK_FIELD_ADDR_LIST(C, "udp", listen_udp, n_listen_udp, 1),
    YAML_WALK_FIELD_ADDR_LIST(C, "ws", listen_ws, n_listen_ws, 0),
    YAML_WALK_FIELD_ADDR_LIST(C, "wss", listen_wss, n_listen_wss, 0),
    YAML_WALK_FIELD_ADDR_LIST(C, "tcp", listen_tcp, n_listen_tcp, 0),
    YAML_WALK_FIELD_ADDR_LIST(C, "tls", listen_tls, n_listen_tls, 0),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_core_schema[] = {
    YAML_WALK_FIELD_ADDR(C, "address", core),
    YAML_WALK_FIELD_ADDR_LIST(C, "peers", core_peers, n_core_peers, 0),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_embedded_schema[] = {
    YAML_WALK_FIELD_ADDR(C, "listen", embedded_listen),
    YAML_WALK_FIELD_PATH(C, "users", users_file),
    YAML_WALK_FIELD_STRING(C, "realm", realm),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_registrar_schema[] = {
    YAML_WALK_FIELD_ADDR_FLAG(C, "address", registrar, has_external_registrar),
    YAML_WALK_FIELD_ADDR_LIST(C, "backups", registrar_backups, n_registrar_backups, 0),
    YAML_WALK_FIELD_MAP("embedded", config_embedded_schema),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_flow_schema[] = {
    YAML_WALK_FIELD_HEX32_FLAG(C, "key", flow_key, has_flow_key),
    YAML_WALK_FIELD_HEX32_FLAG(C, "previous_key", flow_key_prev, has_flow_key_prev),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_tls_schema[] = {
    YAML_WALK_FIELD_PATH(C, "cert", tls_cert),
    YAML_WALK_FIELD_PATH(C, "key", tls_key),
    YAML_WALK_FIELD_PATH(C, "client_ca", tls_client_ca),
    YAML_WALK_FIELD_BOOL(C, "require_client_cert", tls_require_client_cert),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_ws_schema[] = {
    YAML_WALK_FIELD_STR_LIST(C, "origins", ws_origins, n_ws_origins),
    YAML_WALK_FIELD_END,
};

static const char *const config_ban_backends[] = {"userspace", "nftables", NULL};

static const struct yaml_walk_field config_guard_schema[] = {
    YAML_WALK_FIELD_ENUM(C, "backend", ban_backend, config_ban_backends),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_admin_schema[] = {
    YAML_WALK_FIELD_PATH(C, "socket", admin_socket),
    YAML_WALK_FIELD_ADDR_FLAG(C, "listen", admin_listen, has_admin_listen),
    YAML_WALK_FIELD_STRING(C, "token", admin_token),
    YAML_WALK_FIELD_END,
};

/* "-" is stdout; the path is used as written (not joined to the config directory, so that
 * "-" stays stdout): give an absolute path. */
static const struct yaml_walk_field config_audit_schema[] = {
    YAML_WALK_FIELD_STRING(C, "path", audit_path),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_log_schema[] = {
    YAML_WALK_FIELD_ENUM(C, "level", log_level, config_log_levels),
    YAML_WALK_FIELD_END,
};

static const struct yaml_walk_field config_schema[] = {
    YAML_WALK_FIELD_MAP("listen", config_listen_schema),
    YAML_WALK_FIELD_MAP("core", config_core_schema),
    YAML_WALK_FIELD_MAP("registrar", config_registrar_schema),
    YAML_WALK_FIELD_STR_LIST(C, "domains", domains, n_domains),
    YAML_WALK_FIELD_MAP("flow", config_flow_schema),
    YAML_WALK_FIELD_PATH(C, "policy", policy_dir),
    YAML_WALK_FIELD_MAP("tls", config_tls_schema),
    YAML_WALK_FIELD_MAP("guard", config_guard_schema),
    YAML_WALK_FIELD_MAP("admin", config_admin_schema),
    YAML_WALK_FIELD_MAP("audit", config_audit_schema),
    YAML_WALK_FIELD_STRING(C, "user", run_user),
    YAML_WALK_FIELD_PATH(C, "state_dir", state_dir),
    YAML_WALK_FIELD_MAP("ws", config_ws_schema),
    YAML_WALK_FIELD_MAP("log", config_log_schema),
    YAML_WALK_FIELD_U32(C, "workers", workers, 0, 64),
    YAML_WALK_FIELD_END,
};

#undef C

/* Literal defaults always parse; a failure here is a programming error caught by tests. */
static void config_addr_default(struct config_addr *addr, const char *text)
{
    if (config_addr_parse(text, addr) != 0)
        abort();
}

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    config_addr_default(&cfg->listen_udp[0], "0.0.0.0:5060");
    cfg->n_listen_udp = 1;
    config_addr_default(&cfg->core, "127.0.0.1:5070");
    config_addr_default(&cfg->embedded_listen, "127.0.0.1:5080");
    cfg->registrar = cfg->embedded_listen;
    cfg->has_external_registrar = false;
    snprintf(cfg->realm, sizeof(cfg->realm), "sipedge");
    snprintf(cfg->policy_dir, sizeof(cfg->policy_dir), "policies/default");
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->workers = 0; /* one per CPU */
}

int config_load_string(struct config *cfg, const char *name, const char *text, size_t len,
                       char *err, size_t errcap)
{
    if (cfg == NULL || (text == NULL && len > 0))
        return -EINVAL;
    if (name == NULL)
        name = "<config>";

    char dir[CONFIG_PATH_MAX];
    if (yaml_walk_dirname(name, dir, sizeof(dir)) != 0) {
        snprintf(err, errcap, "%s: path too long", name);
        return -ENAMETOOLONG;
    }

    struct config *tmp = malloc(sizeof(*tmp));
    if (tmp == NULL) {
        snprintf(err, errcap, "%s: out of memory", name);
        return -ENOMEM;
    }
    *tmp = *cfg;
    struct yaml_walk_src src = {.name = name, .text = text, .len = len, .base_dir = dir};
    int rc = yaml_walk_run(config_schema, tmp, &src, err, errcap);
    if (rc != 0)
        goto out;
    /* Without an external registrar, REGISTERs go to the embedded one. */
    if (!tmp->has_external_registrar)
        tmp->registrar = tmp->embedded_listen;
    *cfg = *tmp;
out:
    free(tmp);
    return rc;
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errcap)
{
    if (cfg == NULL || path == NULL)
        return -EINVAL;
    char *text = NULL;
    size_t len = 0;
    int rc = yaml_walk_read_file(path, &text, &len, err, errcap);
    if (rc != 0)
        return rc;
    rc = config_load_string(cfg, path, text, len, err, errcap);
    free(text);
    return rc;
}
