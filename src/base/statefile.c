#define _GNU_SOURCE /* renameat2 */
#include "sipedge/statefile.h"
#include "sipedge/wallclock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "sipedge/log.h"

static const char statefile_magic[8] = {'S', 'I', 'P', 'E', 'D', 'G', 'E', '\0'};
#define SUM_LEN 16
/* A state file larger than this is refused before it is read (1 GiB). */
#define STATEFILE_MAX_PAYLOAD (1ull << 30)

/* ---- payload buffer ------------------------------------------------------------------- */

void statefile_buf_init(struct statefile_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void statefile_buf_free(struct statefile_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static uint8_t *buf_room(struct statefile_buf *b, size_t n)
{
    if (b->err)
        return NULL;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->err = -ENOMEM;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->len;
    b->len += n;
    return at;
}

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_n(struct statefile_buf *b, uint64_t v, unsigned n)
{
    uint8_t *p = buf_room(b, n);
    if (p)
        put_be(p, v, n);
}

void statefile_put_u8(struct statefile_buf *b, uint8_t v)
{
    put_n(b, v, 1);
}
void statefile_put_u16(struct statefile_buf *b, uint16_t v)
{
    put_n(b, v, 2);
}
void statefile_put_u32(struct statefile_buf *b, uint32_t v)
{
    put_n(b, v, 4);
}
void statefile_put_u64(struct statefile_buf *b, uint64_t v)
{
    put_n(b, v, 8);
}

void statefile_put_bytes(struct statefile_buf *b, const void *p, size_t n)
{
    uint8_t *at = buf_room(b, n);
    if (at && n)
        memcpy(at, p, n);
}

void statefile_put_str(struct statefile_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT16_MAX) {
        b->err = b->err ? b->err : -E2BIG;
        return;
    }
    statefile_put_u16(b, (uint16_t)n);
    statefile_put_bytes(b, s, n);
}

/* ---- payload reader ------------------------------------------------------------------- */

void statefile_rd_init(struct statefile_rd *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->err = 0;
}

static const uint8_t *rd_take(struct statefile_rd *r, size_t n)
{
    if (r->err || r->len - r->off < n) {
        r->err = -EBADMSG;
        return NULL;
    }
    const uint8_t *at = r->p + r->off;
    r->off += n;
    return at;
}

static uint64_t get_n(struct statefile_rd *r, unsigned n)
{
    const uint8_t *p = rd_take(r, n);
    return p ? get_be(p, n) : 0;
}

uint8_t statefile_get_u8(struct statefile_rd *r)
{
    return (uint8_t)get_n(r, 1);
}
uint16_t statefile_get_u16(struct statefile_rd *r)
{
    return (uint16_t)get_n(r, 2);
}
uint32_t statefile_get_u32(struct statefile_rd *r)
{
    return (uint32_t)get_n(r, 4);
}
uint64_t statefile_get_u64(struct statefile_rd *r)
{
    return get_n(r, 8);
}

void statefile_get_bytes(struct statefile_rd *r, void *out, size_t n)
{
    const uint8_t *p = rd_take(r, n);
    if (p && n)
        memcpy(out, p, n);
    else if (!p && n)
        memset(out, 0, n);
}

void statefile_get_str(struct statefile_rd *r, char *out, size_t cap)
{
    size_t n = statefile_get_u16(r);
    const uint8_t *p = rd_take(r, n);
    if (!p || n >= cap || memchr(p, '\0', n)) {
        r->err = -EBADMSG;
        if (cap)
            out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

bool statefile_rd_done(const struct statefile_rd *r)
{
    return !r->err && r->off == r->len;
}

/* ---- files ------------------------------------------------------------------------------ */

uint64_t statefile_wall_ms(void) { return wallclock_ms(); }

int statefile_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static void checksum(const void *p, size_t len, uint8_t out[SUM_LEN])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(p, len, md, &mdlen, EVP_sha256(), NULL))
        memset(md, 0, sizeof(md));
    memcpy(out, md, SUM_LEN);
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if ((size_t)(slash - path) >= sizeof(dir))
        return -ENAMETOOLONG;
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static void header_build(uint8_t h[STATEFILE_HDR_LEN], const char *kind, uint32_t version,
                         const void *payload, size_t len)
{
    memset(h, 0, STATEFILE_HDR_LEN);
    memcpy(h, statefile_magic, 8);
    strncpy((char *)h + 8, kind, STATEFILE_KIND_MAX);
    put_be(h + 16, version, 4);
    put_be(h + 24, len, 8);
    checksum(payload, len, h + 32);
}

int statefile_write(const char *path, const char *kind, uint32_t version, const void *payload,
                    size_t len, char *err, size_t err_cap)
{
    char tmp[4096];
    char dummy[1];
    if (!err) {
        err = dummy;
        err_cap = sizeof(dummy);
    }
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        snprintf(err, err_cap, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    uint8_t h[STATEFILE_HDR_LEN];
    header_build(h, kind, version, payload, len);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = -errno;
        snprintf(err, err_cap, "%s: %s", tmp, strerror(errno));
        return rc;
    }
    int rc = write_all(fd, h, sizeof(h));
    if (rc == 0)
        rc = write_all(fd, payload, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        snprintf(err, err_cap, "%s: %s", path, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    rc = fsync_dir_of(path);
    if (rc < 0)
        snprintf(err, err_cap, "%s: directory fsync: %s", path, strerror(-rc));
    return rc;
}

int statefile_read(const char *path, const char *kind, uint32_t max_version, uint8_t **out,
                   size_t *out_len, uint32_t *version, char *err, size_t err_cap)
{
    char dummy[1];
    if (!err) {
        err = dummy;
        err_cap = sizeof(dummy);
    }
    *out = NULL;
    *out_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        if (rc != -ENOENT)
            snprintf(err, err_cap, "%s: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    uint8_t h[STATEFILE_HDR_LEN];
    int rc = 0;
    ssize_t got = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, err_cap, "%s: %s", path, strerror(errno));
        goto out;
    }
    got = pread(fd, h, sizeof(h), 0);
    if (got != (ssize_t)sizeof(h) || memcmp(h, statefile_magic, 8) != 0) {
        rc = -EBADMSG;
        snprintf(err, err_cap, "%s: not a sipedge state file", path);
        goto out;
    }
    char k[STATEFILE_KIND_MAX + 1] = {0};
    memcpy(k, h + 8, STATEFILE_KIND_MAX);
    if (strcmp(k, kind) != 0) {
        rc = -EBADMSG;
        snprintf(err, err_cap, "%s: holds '%.8s' state, expected '%s'", path, k, kind);
        goto out;
    }
    uint32_t ver = (uint32_t)get_be(h + 16, 4);
    if (ver == 0 || ver > max_version) {
        rc = -EPROTONOSUPPORT;
        snprintf(err, err_cap, "%s: format version %u, this sipedge reads up to %u", path, ver,
                 max_version);
        goto out;
    }
    uint64_t len = get_be(h + 24, 8);
    if (len > STATEFILE_MAX_PAYLOAD || (uint64_t)st.st_size != STATEFILE_HDR_LEN + len) {
        rc = -EBADMSG;
        snprintf(err, err_cap, "%s: truncated or padded (%lld bytes, header says %llu + %d)", path,
                 (long long)st.st_size, (unsigned long long)len, STATEFILE_HDR_LEN);
        goto out;
    }
    uint8_t *p = malloc(len ? len : 1);
    if (!p) {
        rc = -ENOMEM;
        snprintf(err, err_cap, "%s: out of memory", path);
        goto out;
    }
    size_t off = 0;
    while (off < len) {
        got = pread(fd, p + off, len - off, (off_t)(STATEFILE_HDR_LEN + off));
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            rc = got < 0 ? -errno : -EBADMSG;
            snprintf(err, err_cap, "%s: read: %s", path, got < 0 ? strerror(errno) : "short");
            free(p);
            goto out;
        }
        off += (size_t)got;
    }
    uint8_t sum[SUM_LEN];
    checksum(p, len, sum);
    if (memcmp(sum, h + 32, SUM_LEN) != 0) {
        rc = -EBADMSG;
        snprintf(err, err_cap, "%s: checksum mismatch (corrupt)", path);
        free(p);
        goto out;
    }
    *out = p;
    *out_len = len;
    if (version)
        *version = ver;
out:
    close(fd);
    return rc;
}

int statefile_append_chunk(const char *path, const void *payload, size_t len)
{
    if (len > UINT32_MAX)
        return -E2BIG;
    uint8_t hdr[4 + SUM_LEN];
    put_be(hdr, len, 4);
    checksum(payload, len, hdr + 4);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, hdr, sizeof(hdr));
    if (rc == 0)
        rc = write_all(fd, payload, len);
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int statefile_read_chunks(const char *path, int (*cb)(void *ctx, const uint8_t *p, size_t len),
                          void *ctx, bool *is_torn)
{
    *is_torn = false;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    int n = 0;
    for (;;) {
        uint8_t hdr[4 + SUM_LEN];
        size_t got = fread(hdr, 1, sizeof(hdr), f);
        if (got == 0)
            break;
        uint64_t len = get_be(hdr, 4);
        uint8_t *buf = got == sizeof(hdr) && len <= STATEFILE_MAX_PAYLOAD ? malloc(len ? len : 1)
                                                                           : NULL;
        uint8_t sum[SUM_LEN];
        bool ok = buf && fread(buf, 1, len, f) == len;
        if (ok) {
            checksum(buf, len, sum);
            ok = memcmp(sum, hdr + 4, SUM_LEN) == 0 && cb(ctx, buf, len) >= 0;
        }
        if (!ok) {
            free(buf);
            *is_torn = true;
            break;
        }
        free(buf);
        n++;
    }
    fclose(f);
    return n;
}

int statefile_move_aside(const char *path, char *moved, size_t cap)
{
    char to[4096];
    unsigned long long t = (unsigned long long)(statefile_wall_ms() / 1000);
    /* Never over an earlier refused file: a second one in the same second gets .N. */
    for (unsigned n = 0;; n++) {
        int len = n ? snprintf(to, sizeof(to), "%s.bad-%llu.%u", path, t, n)
                    : snprintf(to, sizeof(to), "%s.bad-%llu", path, t);
        if (len < 0 || len >= (int)sizeof(to))
            return -ENAMETOOLONG;
        if (renameat2(AT_FDCWD, path, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
            break;
        if (errno != EEXIST || n == 999)
            return -errno;
    }
    if (moved)
        snprintf(moved, cap, "%s", to);
    return 0;
}

int statefile_load(const char *path, const char *kind, uint32_t max_version, const char *what,
                   uint8_t **out, size_t *out_len, uint32_t *version)
{
    char err[512];
    int rc = statefile_read(path, kind, max_version, out, out_len, version, err, sizeof(err));
    if (rc == 0 || rc == -ENOENT)
        return rc;
    char moved[4096] = "";
    if (rc == -EBADMSG || rc == -EPROTONOSUPPORT) {
        if (statefile_move_aside(path, moved, sizeof(moved)) < 0)
            moved[0] = '\0';
    }
    log_error("%s state refused: %s; starting with no %s state%s%s", what, err, what,
              moved[0] ? ", the file was moved to " : "", moved);
    return rc;
}
