/*
 * yaml_walk: a schema-driven walk over libyaml events (see config_internal.h).
 *
 * The walk follows the schema, not the document: anything the schema does not describe is
 * an error at the first event that shows it, so the walker never has to skip a subtree and
 * never recurses deeper than the schema. Anchors, aliases and explicit tags are refused;
 * a config needs none of them and aliases are the classic way to blow up a YAML reader.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <yaml.h>

#include "config/config_internal.h"

#define WALK_PATH_MAX 256
#define WALK_SHOW_MAX 64

struct walk {
    yaml_parser_t parser;
    const struct yaml_walk_src *src;
    unsigned char *dst;
    char *err;
    size_t errcap;
};

static void verr(char *err, size_t errcap, const char *name, size_t line, size_t col,
                 const char *fmt, va_list ap)
{
    if (err == NULL || errcap == 0)
        return;
    int n = snprintf(err, errcap, "%s:%zu:%zu: ", name ? name : "<config>", line, col);
    if (n < 0 || (size_t)n >= errcap)
        return;
    vsnprintf(err + n, errcap - (size_t)n, fmt, ap);
}

void yaml_walk_error(char *err, size_t errcap, const char *name, size_t line, size_t col,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(err, errcap, name, line, col, fmt, ap);
    va_end(ap);
}

/* libyaml marks are 0-based; messages are 1-based like every editor. */
static void __attribute__((format(printf, 3, 4)))
walk_err(struct walk *w, yaml_mark_t mark, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(w->err, w->errcap, w->src->name, mark.line + 1, mark.column + 1, fmt, ap);
    va_end(ap);
}

/* Copies untrusted text into a message: printable ASCII only, truncated with "...". */
static const char *show(const char *s, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        if (o + 4 >= cap && i + 1 < len) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    buf[o] = '\0';
    return buf;
}

static int syntax_error(struct walk *w)
{
    const yaml_parser_t *p = &w->parser;
    if (p->error == YAML_MEMORY_ERROR) {
        yaml_walk_error(w->err, w->errcap, w->src->name, 1, 1, "out of memory");
        return -ENOMEM;
    }
    size_t line, col;
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors (bad UTF-8, control characters) carry a byte offset only. */
        line = 1;
        col = 1;
        for (size_t i = 0; i < p->problem_offset && i < w->src->len; i++) {
            if (w->src->text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
    } else {
        line = p->problem_mark.line + 1;
        col = p->problem_mark.column + 1;
    }
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->context != NULL && p->error != YAML_READER_ERROR)
        yaml_walk_error(w->err, w->errcap, w->src->name, line, col, "%s (%s started at %zu:%zu)",
                        problem, p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    else
        yaml_walk_error(w->err, w->errcap, w->src->name, line, col, "%s", problem);
    return -EINVAL;
}

/* Next event, with anchors, aliases and tags refused. The caller deletes *ev on success. */
static int walk_next(struct walk *w, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&w->parser, ev))
        return syntax_error(w);

    const yaml_char_t *anchor = NULL, *tag = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        walk_err(w, ev->start_mark, "aliases are not allowed");
        yaml_event_delete(ev);
        return -EINVAL;
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    default:
        break;
    }
    if (anchor != NULL || tag != NULL) {
        walk_err(w, ev->start_mark, "%s are not allowed", anchor ? "anchors" : "tags");
        yaml_event_delete(ev);
        return -EINVAL;
    }
    return 0;
}

static const char *scalar_str(const yaml_event_t *ev)
{
    return (const char *)ev->data.scalar.value;
}

static bool scalar_is_plain(const yaml_event_t *ev)
{
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool scalar_has_nul(const yaml_event_t *ev)
{
    return strlen(scalar_str(ev)) != ev->data.scalar.length;
}

/* YAML 1.2 core schema nulls: empty, "~" and the spellings of "null", unquoted. */
static bool scalar_is_null(const yaml_event_t *ev)
{
    if (!scalar_is_plain(ev))
        return false;
    const char *s = scalar_str(ev);
    return ev->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static const char *type_name(enum yaml_walk_type type)
{
    switch (type) {
    case YAML_WALK_STRING:
    case YAML_WALK_PATH:
    case YAML_WALK_ENUM:
        return "a string";
    case YAML_WALK_BOOL:
        return "a boolean (true/false)";
    case YAML_WALK_U32:
        return "an integer";
    case YAML_WALK_ADDR:
    case YAML_WALK_ADDR_LIST:
        return "an address";
    case YAML_WALK_STR_LIST:
        return "a string";
    case YAML_WALK_HEX32:
        return "a hex key";
    case YAML_WALK_MAP:
        return "a mapping";
    }
    return "a value";
}

static int store_string(struct walk *w, const struct yaml_walk_field *f, char *dest,
                        const char *path, const yaml_event_t *ev)
{
    if (scalar_is_null(ev)) {
        dest[0] = '\0';
        return 0;
    }
    size_t len = ev->data.scalar.length;
    if (scalar_has_nul(ev)) {
        walk_err(w, ev->start_mark, "'%s' must not contain a NUL character", path);
        return -EINVAL;
    }
    if (len >= f->size) {
        walk_err(w, ev->start_mark, "'%s' is too long (at most %zu characters)", path, f->size - 1);
        return -EINVAL;
    }
    if (f->type == YAML_WALK_PATH && scalar_str(ev)[0] != '/' && w->src->base_dir != NULL &&
        w->src->base_dir[0] != '\0') {
        const char *base = w->src->base_dir;
        const char *sep = base[strlen(base) - 1] == '/' ? "" : "/";
        int n = snprintf(dest, f->size, "%s%s%s", base, sep, scalar_str(ev));
        if (n < 0 || (size_t)n >= f->size) {
            walk_err(w, ev->start_mark, "'%s' is too long once joined to '%s' (at most %zu)", path,
                     base, f->size - 1);
            return -EINVAL;
        }
        return 0;
    }
    memcpy(dest, scalar_str(ev), len + 1);
    return 0;
}

static int store_bool(struct walk *w, bool *dest, const char *path, const yaml_event_t *ev)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    if (scalar_is_plain(ev)) {
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
            if (strcmp(scalar_str(ev), yes[i]) == 0) {
                *dest = true;
                return 0;
            }
            if (strcmp(scalar_str(ev), no[i]) == 0) {
                *dest = false;
                return 0;
            }
        }
    }
    walk_err(w, ev->start_mark, "expected a boolean (true/false) for '%s'", path);
    return -EINVAL;
}

static int store_u32(struct walk *w, const struct yaml_walk_field *f, void *dest, const char *path,
                     const yaml_event_t *ev)
{
    const char *s = scalar_str(ev);
    size_t len = ev->data.scalar.length;
    bool is_number = scalar_is_plain(ev) && len > 0;
    uint64_t v = 0;
    for (size_t i = 0; is_number && i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            is_number = false;
            break;
        }
        if (v <= UINT32_MAX)
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (!is_number) {
        walk_err(w, ev->start_mark, "expected an integer for '%s'", path);
        return -EINVAL;
    }
    if (v < f->min || v > f->max) {
        walk_err(w, ev->start_mark, "'%s' must be %" PRIu32 "..%" PRIu32, path, f->min, f->max);
        return -EINVAL;
    }
    switch (f->size) {
    case 1: {
        uint8_t x = (uint8_t)v;
        memcpy(dest, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(dest, &x, 2);
        break;
    }
    default: {
        uint32_t x = (uint32_t)v;
        memcpy(dest, &x, 4);
        break;
    }
    }
    return 0;
}

static int store_enum(struct walk *w, const struct yaml_walk_field *f, int *dest, const char *path,
                      const yaml_event_t *ev)
{
    for (int i = 0; f->names[i] != NULL; i++) {
        if (!scalar_has_nul(ev) && strcmp(scalar_str(ev), f->names[i]) == 0) {
            *dest = i;
            return 0;
        }
    }
    char list[128];
    size_t o = 0;
    list[0] = '\0';
    for (int i = 0; f->names[i] != NULL && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? "|" : "", f->names[i]);
    walk_err(w, ev->start_mark, "'%s' must be one of %s", path, list);
    return -EINVAL;
}

static int store_addr(struct walk *w, struct config_addr *dest, const char *path,
                      const yaml_event_t *ev)
{
    char buf[WALK_SHOW_MAX];
    if (scalar_has_nul(ev) || config_addr_parse(scalar_str(ev), dest) != 0) {
        walk_err(w, ev->start_mark, "bad address '%s' for '%s' (expected ip:port or [ipv6]:port)",
                 show(scalar_str(ev), ev->data.scalar.length, buf, sizeof(buf)), path);
        return -EINVAL;
    }
    return 0;
}

static int store_hex32(struct walk *w, uint8_t *dest, const char *path, const yaml_event_t *ev)
{
    const char *s = scalar_str(ev);
    uint8_t key[32];
    bool ok = ev->data.scalar.length == 2 * sizeof(key);
    for (size_t i = 0; ok && i < sizeof(key); i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)s[2 * i]);
        int lo = OPENSSL_hexchar2int((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            ok = false;
        else
            key[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!ok) {
        walk_err(w, ev->start_mark, "'%s' must be 64 hex digits (32 bytes)", path);
        return -EINVAL;
    }
    memcpy(dest, key, sizeof(key));
    return 0;
}

/* Stores one scalar of the field's (element) type at dest. */
static int store_scalar(struct walk *w, const struct yaml_walk_field *f, void *dest,
                        const char *path, const yaml_event_t *ev)
{
    switch (f->type) {
    case YAML_WALK_STRING:
    case YAML_WALK_PATH:
    case YAML_WALK_STR_LIST:
        return store_string(w, f, dest, path, ev);
    case YAML_WALK_BOOL:
        return store_bool(w, dest, path, ev);
    case YAML_WALK_U32:
        return store_u32(w, f, dest, path, ev);
    case YAML_WALK_ENUM:
        return store_enum(w, f, dest, path, ev);
    case YAML_WALK_ADDR:
    case YAML_WALK_ADDR_LIST:
        return store_addr(w, dest, path, ev);
    case YAML_WALK_HEX32:
        return store_hex32(w, dest, path, ev);
    case YAML_WALK_MAP:
        break;
    }
    walk_err(w, ev->start_mark, "internal schema error for '%s'", path);
    return -EINVAL;
}

static int walk_map(struct walk *w, const struct yaml_walk_field *fields, const char *path);

static int walk_list(struct walk *w, const struct yaml_walk_field *f, const char *path,
                     yaml_mark_t key_mark, yaml_event_t *first)
{
    unsigned char *base = w->dst + f->off;
    unsigned n = 0;
    int rc = 0;

    if (first->type == YAML_SCALAR_EVENT) {
        /* A lone scalar is a one-element list; a null one is an empty list. */
        if (!scalar_is_null(first)) {
            rc = store_scalar(w, f, base, path, first);
            n = 1;
        }
        yaml_event_delete(first);
        if (rc != 0)
            return rc;
    } else if (first->type == YAML_SEQUENCE_START_EVENT) {
        yaml_event_delete(first);
        for (;;) {
            yaml_event_t ev;
            rc = walk_next(w, &ev);
            if (rc != 0)
                return rc;
            if (ev.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&ev);
                break;
            }
            if (ev.type != YAML_SCALAR_EVENT) {
                walk_err(w, ev.start_mark, "expected %s in the list '%s'", type_name(f->type),
                         path);
                rc = -EINVAL;
            } else if (n >= f->max_items) {
                walk_err(w, ev.start_mark, "'%s' has more than %u entries", path, f->max_items);
                rc = -EINVAL;
            } else {
                rc = store_scalar(w, f, base + (size_t)n * f->size, path, &ev);
                n++;
            }
            yaml_event_delete(&ev);
            if (rc != 0)
                return rc;
        }
    } else {
        walk_err(w, first->start_mark, "expected a list for '%s'", path);
        yaml_event_delete(first);
        return -EINVAL;
    }

    if (n < f->min_items) {
        walk_err(w, key_mark, "'%s' needs at least %u entr%s", path, f->min_items,
                 f->min_items == 1 ? "y" : "ies");
        return -EINVAL;
    }
    memcpy(w->dst + f->count_off, &n, sizeof(n));
    return 0;
}

static int walk_value(struct walk *w, const struct yaml_walk_field *f, const char *path,
                      yaml_mark_t key_mark)
{
    yaml_event_t ev;
    int rc = walk_next(w, &ev);
    if (rc != 0)
        return rc;

    switch (f->type) {
    case YAML_WALK_MAP:
        if (ev.type == YAML_MAPPING_START_EVENT) {
            yaml_event_delete(&ev);
            rc = walk_map(w, f->children, path);
        } else if (ev.type == YAML_SCALAR_EVENT && scalar_is_null(&ev)) {
            yaml_event_delete(&ev);
        } else {
            walk_err(w, ev.start_mark, "expected a mapping for '%s'", path);
            yaml_event_delete(&ev);
            rc = -EINVAL;
        }
        break;
    case YAML_WALK_ADDR_LIST:
    case YAML_WALK_STR_LIST:
        rc = walk_list(w, f, path, key_mark, &ev);
        break;
    default:
        if (ev.type != YAML_SCALAR_EVENT) {
            walk_err(w, ev.start_mark, "expected %s for '%s'", type_name(f->type), path);
            rc = -EINVAL;
        } else {
            rc = store_scalar(w, f, w->dst + f->off, path, &ev);
        }
        yaml_event_delete(&ev);
        break;
    }
    if (rc != 0)
        return rc;

    if (f->has_flag) {
        bool yes = true;
        memcpy(w->dst + f->flag_off, &yes, sizeof(yes));
    }
    if (w->src->on_field != NULL && f->type != YAML_WALK_MAP)
        w->src->on_field(w->src->cb_arg, f, path, key_mark.line + 1, key_mark.column + 1);
    return 0;
}

static int walk_map(struct walk *w, const struct yaml_walk_field *fields, const char *path)
{
    uint64_t seen = 0;
    size_t first_line[YAML_WALK_MAP_MAX];

    for (;;) {
        yaml_event_t ev;
        int rc = walk_next(w, &ev);
        if (rc != 0)
            return rc;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            if (path[0] != '\0')
                walk_err(w, ev.start_mark, "keys in '%s' must be plain names", path);
            else
                walk_err(w, ev.start_mark, "keys must be plain names");
            yaml_event_delete(&ev);
            return -EINVAL;
        }

        char shown[WALK_SHOW_MAX];
        show(scalar_str(&ev), ev.data.scalar.length, shown, sizeof(shown));
        yaml_mark_t key_mark = ev.start_mark;
        size_t i = 0;
        while (fields[i].key != NULL &&
               (scalar_has_nul(&ev) || strcmp(fields[i].key, scalar_str(&ev)) != 0))
            i++;
        yaml_event_delete(&ev);

        if (fields[i].key == NULL) {
            if (path[0] != '\0')
                walk_err(w, key_mark, "unknown key '%s' in '%s'", shown, path);
            else
                walk_err(w, key_mark, "unknown key '%s'", shown);
            return -EINVAL;
        }
        assert(i < YAML_WALK_MAP_MAX); /* schema tables are ours, never input */
        if (seen & (UINT64_C(1) << i)) {
            if (path[0] != '\0')
                walk_err(w, key_mark, "duplicate key '%s' in '%s' (first at line %zu)", shown, path,
                         first_line[i]);
            else
                walk_err(w, key_mark, "duplicate key '%s' (first at line %zu)", shown,
                         first_line[i]);
            return -EINVAL;
        }
        seen |= UINT64_C(1) << i;
        first_line[i] = key_mark.line + 1;

        char child[WALK_PATH_MAX];
        snprintf(child, sizeof(child), "%s%s%s", path, path[0] ? "." : "", fields[i].key);
        rc = walk_value(w, &fields[i], child, key_mark);
        if (rc != 0)
            return rc;
    }
}

static int walk_stream(struct walk *w, const struct yaml_walk_field *root)
{
    yaml_event_t ev;
    int rc;

    /* STREAM-START never fails to come first. */
    if ((rc = walk_next(w, &ev)) != 0)
        return rc;
    yaml_event_delete(&ev);

    if ((rc = walk_next(w, &ev)) != 0)
        return rc;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev); /* empty file or comments only */
        return 0;
    }
    yaml_event_delete(&ev); /* DOCUMENT-START */

    if ((rc = walk_next(w, &ev)) != 0)
        return rc;
    if (ev.type == YAML_MAPPING_START_EVENT) {
        yaml_event_delete(&ev);
        if ((rc = walk_map(w, root, "")) != 0)
            return rc;
    } else if (ev.type == YAML_SCALAR_EVENT && scalar_is_null(&ev)) {
        yaml_event_delete(&ev);
    } else {
        walk_err(w, ev.start_mark, "the top level must be a mapping of keys");
        yaml_event_delete(&ev);
        return -EINVAL;
    }

    if ((rc = walk_next(w, &ev)) != 0)
        return rc;
    yaml_event_delete(&ev); /* DOCUMENT-END */

    if ((rc = walk_next(w, &ev)) != 0)
        return rc;
    if (ev.type != YAML_STREAM_END_EVENT) {
        walk_err(w, ev.start_mark, "only one YAML document is allowed");
        rc = -EINVAL;
    }
    yaml_event_delete(&ev);
    return rc;
}

int yaml_walk_run(const struct yaml_walk_field *root, void *dst, const struct yaml_walk_src *src,
                  char *err, size_t errcap)
{
    struct walk w = {.src = src, .dst = dst, .err = err, .errcap = errcap};
    if (!yaml_parser_initialize(&w.parser)) {
        yaml_walk_error(err, errcap, src->name, 1, 1, "out of memory");
        return -ENOMEM;
    }
    static const unsigned char empty[1];
    const unsigned char *text = src->text ? (const unsigned char *)src->text : empty;
    yaml_parser_set_input_string(&w.parser, text, src->text ? src->len : 0);
    int rc = walk_stream(&w, root);
    yaml_parser_delete(&w.parser);
    return rc;
}

int yaml_walk_read_file(const char *path, char **text, size_t *len, char *err, size_t errcap)
{
    int rc = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errcap, "%s: cannot open: %s", path, strerror(-rc));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, errcap, "%s: cannot stat: %s", path, strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errcap, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size > YAML_WALK_FILE_MAX) {
        rc = -EFBIG;
        snprintf(err, errcap, "%s: file too large (limit %d bytes)", path, YAML_WALK_FILE_MAX);
        goto out;
    }
    size_t cap = (size_t)st.st_size, used = 0;
    buf = malloc(cap + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        snprintf(err, errcap, "%s: out of memory", path);
        goto out;
    }
    /* The file may shrink while we read it; never read past what fstat promised. */
    while (used < cap) {
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, errcap, "%s: cannot read: %s", path, strerror(-rc));
            goto out;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    buf[used] = '\0';
    *text = buf;
    *len = used;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

int yaml_walk_dirname(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : (slash == path ? 1 : (size_t)(slash - path));
    if (n >= cap)
        return -ENAMETOOLONG;
    memcpy(out, path, n);
    out[n] = '\0';
    return 0;
}
