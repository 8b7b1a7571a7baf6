/*
 * config_internal: the schema walker shared by the config and policy loaders.
 *
 * A schema is a table of yaml_walk_field entries, one per key, each naming a type and a
 * destination as a byte offset into one flat destination struct (nested mappings point
 * into the same struct). yaml_walk_run feeds libyaml events through such a table and
 * stores every value it accepts; it rejects syntax errors, anchors and aliases, unknown
 * and duplicate keys, wrong types, out-of-range values and bad addresses with
 * "name:line:col: reason" (1-based). The walker never allocates beyond libyaml's own
 * state and never recurses deeper than the schema, so hostile input cannot run it deep.
 */
#ifndef SIPEDGE_CONFIG_INTERNAL_H
#define SIPEDGE_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/config_addr.h"

/* Files larger than this are refused before parsing. */
#define YAML_WALK_FILE_MAX (1024 * 1024)
/* A schema mapping has at most this many keys (duplicate detection uses a bit mask). */
#define YAML_WALK_MAP_MAX 64

enum yaml_walk_type {
    YAML_WALK_STRING,    /* char[size]; a null scalar stores "" */
    YAML_WALK_PATH,      /* char[size]; relative paths are joined to the base directory */
    YAML_WALK_BOOL,      /* bool; true|false|yes|no|on|off */
    YAML_WALK_U32,       /* unsigned integer of size 1, 2 or 4 bytes, checked against min..max */
    YAML_WALK_ENUM,      /* int; index of the value in names[] */
    YAML_WALK_ADDR,      /* struct config_addr */
    YAML_WALK_ADDR_LIST, /* struct config_addr[max_items], count in an unsigned at count_off */
    YAML_WALK_STR_LIST,  /* char[max_items][size], count in an unsigned at count_off */
    YAML_WALK_HEX32,     /* uint8_t[32] from exactly 64 hex digits */
    YAML_WALK_MAP,       /* nested mapping described by children[] (ends with a NULL key) */
};

struct yaml_walk_field {
    const char *key;
    enum yaml_walk_type type;
    size_t off;       /* destination offset */
    size_t size;      /* destination size (string capacity, integer width, list element) */
    size_t count_off; /* lists: offset of the unsigned element count */
    unsigned min_items;
    unsigned max_items;
    uint32_t min, max; /* U32 range, inclusive */
    bool has_flag;     /* a bool at flag_off is set to true when the key is present */
    size_t flag_off;
    const char *const *names;               /* ENUM: NULL-terminated list of accepted values */
    const struct yaml_walk_field *children; /* MAP */
};

/*
 * Called after a value has been stored, with the position of its key. Loaders use it to
 * remember where a value came from so a later cross-field check can point at it.
 */
typedef void (*yaml_walk_field_cb)(void *arg, const struct yaml_walk_field *field, const char *path,
                                   size_t line, size_t col);

struct yaml_walk_src {
    const char *name; /* used in error messages */
    const char *text; /* need not be NUL-terminated */
    size_t len;
    const char *base_dir;        /* for YAML_WALK_PATH; NULL or "" leaves relative paths alone */
    yaml_walk_field_cb on_field; /* optional */
    void *cb_arg;
};

/*
 * Walks one YAML document against the NULL-key-terminated schema root, storing values
 * into dst. An empty stream or a null document stores nothing. Returns 0, -EINVAL with
 * "name:line:col: reason" in err, or -ENOMEM. On error dst may be partly written: callers
 * walk into a scratch copy and publish it on success.
 */
int yaml_walk_run(const struct yaml_walk_field *root, void *dst, const struct yaml_walk_src *src,
                  char *err, size_t errcap);

/* Formats "name:line:col: reason" (line and col already 1-based) into err. */
void yaml_walk_error(char *err, size_t errcap, const char *name, size_t line, size_t col,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/*
 * Reads a whole regular file of at most YAML_WALK_FILE_MAX bytes. On success returns 0 and
 * a malloc'd buffer (NUL-terminated, caller frees) in *text and its length in *len.
 * Returns -errno on I/O failure, -EFBIG for an oversized file, -EINVAL for a non-regular
 * file, with "path: reason" in err.
 */
int yaml_walk_read_file(const char *path, char **text, size_t *len, char *err, size_t errcap);

/*
 * Writes the directory part of path ("etc" for "etc/sipedge.yaml", "/" for "/x.yaml") into
 * out; "" when path has no slash. Returns 0 or -ENAMETOOLONG.
 */
int yaml_walk_dirname(const char *path, char *out, size_t cap);

/* Schema-building helpers; T is the destination struct type. */
#define YAML_WALK_FIELD_STRING(T, k, m)                                                            \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_STRING, .off = offsetof(T, m), .size = sizeof(((T *)0)->m)   \
    }
#define YAML_WALK_FIELD_PATH(T, k, m)                                                              \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_PATH, .off = offsetof(T, m), .size = sizeof(((T *)0)->m)     \
    }
#define YAML_WALK_FIELD_BOOL(T, k, m)                                                              \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_BOOL, .off = offsetof(T, m), .size = sizeof(((T *)0)->m)     \
    }
#define YAML_WALK_FIELD_U32(T, k, m, lo, hi)                                                       \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_U32, .off = offsetof(T, m), .size = sizeof(((T *)0)->m),     \
        .min = (lo), .max = (hi)                                                                   \
    }
#define YAML_WALK_FIELD_ENUM(T, k, m, n)                                                           \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_ENUM, .off = offsetof(T, m), .size = sizeof(((T *)0)->m),    \
        .names = (n)                                                                               \
    }
#define YAML_WALK_FIELD_ADDR(T, k, m)                                                              \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_ADDR, .off = offsetof(T, m), .size = sizeof(((T *)0)->m)     \
    }
#define YAML_WALK_FIELD_ADDR_FLAG(T, k, m, flag)                                                   \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_ADDR, .off = offsetof(T, m), .size = sizeof(((T *)0)->m),    \
        .has_flag = true, .flag_off = offsetof(T, flag)                                            \
    }
#define YAML_WALK_FIELD_ADDR_LIST(T, k, m, n, lo)                                                  \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_ADDR_LIST, .off = offsetof(T, m),                            \
        .size = sizeof(((T *)0)->m[0]), .count_off = offsetof(T, n), .min_items = (lo),            \
        .max_items = sizeof(((T *)0)->m) / sizeof(((T *)0)->m[0])                                  \
    }
#define YAML_WALK_FIELD_STR_LIST(T, k, m, n)                                                       \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_STR_LIST, .off = offsetof(T, m),                             \
        .size = sizeof(((T *)0)->m[0]), .count_off = offsetof(T, n),                               \
        .max_items = sizeof(((T *)0)->m) / sizeof(((T *)0)->m[0])                                  \
    }
#define YAML_WALK_FIELD_HEX32_FLAG(T, k, m, flag)                                                  \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_HEX32, .off = offsetof(T, m), .size = sizeof(((T *)0)->m),   \
        .has_flag = true, .flag_off = offsetof(T, flag)                                            \
    }
#define YAML_WALK_FIELD_MAP(k, c)                                                                  \
    {                                                                                              \
        .key = (k), .type = YAML_WALK_MAP, .children = (c)                                         \
    }
#define YAML_WALK_FIELD_END                                                                        \
    {                                                                                              \
        .key = NULL                                                                                \
    }

#endif
