/*
 * statefile: versioned, checksummed snapshot files in the state directory.
 *
 * A state file is a 48-byte header followed by a payload:
 *
 *   magic "SIPEDGE\0" (8) | kind, NUL-padded (8) | version u32 | reserved u32 |
 *   payload length u64 | SHA-256 of the payload, first 16 bytes (16)
 *
 * all integers big-endian. Writing is atomic: the file is written to a temporary name
 * in the same directory, fsync'ed, renamed over the old one, and the directory is
 * fsync'ed, so a crash leaves the previous snapshot or the new one, never a mix.
 * Reading checks magic, kind, version, length and checksum before the payload is
 * handed out, so a corrupt or foreign file is refused whole, never half-loaded.
 *
 * The payload is built and read with statefile_buf / statefile_rd: big-endian
 * integers and length-prefixed byte strings, with sticky errors (a short or malformed
 * payload makes every later read fail, checked once at the end).
 */
#ifndef SIPEDGE_STATEFILE_H
#define SIPEDGE_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATEFILE_HDR_LEN 48
#define STATEFILE_KIND_MAX 8

/* A growable payload buffer. */
struct statefile_buf {
    uint8_t *p;
    size_t len, cap;
    int err; /* sticky: -ENOMEM */
};

void statefile_buf_init(struct statefile_buf *b);
void statefile_buf_free(struct statefile_buf *b);
void statefile_put_u8(struct statefile_buf *b, uint8_t v);
void statefile_put_u16(struct statefile_buf *b, uint16_t v);
void statefile_put_u32(struct statefile_buf *b, uint32_t v);
void statefile_put_u64(struct statefile_buf *b, uint64_t v);
void statefile_put_bytes(struct statefile_buf *b, const void *p, size_t n);
/* u16 length, then the bytes (strings longer than 65535 bytes are an error). */
void statefile_put_str(struct statefile_buf *b, const char *s);

/* A payload reader over borrowed bytes. */
struct statefile_rd {
    const uint8_t *p;
    size_t len, off;
    int err; /* sticky: -EBADMSG */
};

void statefile_rd_init(struct statefile_rd *r, const void *p, size_t len);
uint8_t statefile_get_u8(struct statefile_rd *r);
uint16_t statefile_get_u16(struct statefile_rd *r);
uint32_t statefile_get_u32(struct statefile_rd *r);
uint64_t statefile_get_u64(struct statefile_rd *r);
void statefile_get_bytes(struct statefile_rd *r, void *out, size_t n);
/* Reads a string written by statefile_put_str into out (cap includes the NUL). A string
 * that does not fit or holds a NUL byte is an error. */
void statefile_get_str(struct statefile_rd *r, char *out, size_t cap);
/* True when everything was read and no error occurred. */
bool statefile_rd_done(const struct statefile_rd *r);

/* Wall-clock milliseconds since the epoch (wallclock.h): what state files store times
 * against (and what moved-aside files are named by), so the next run's monotonic clock
 * does not matter and the time spent down counts. */
uint64_t statefile_wall_ms(void);

/* dir/name into out; -ENAMETOOLONG when it does not fit. */
int statefile_path(char *out, size_t cap, const char *dir, const char *name);

/*
 * Writes header + payload to path atomically (temporary file, fsync, rename, fsync of
 * the directory). Blocking: call it off the packet path (a thread-pool job). Returns 0
 * or a negative errno; err (may be NULL) gets a one-line reason.
 */
int statefile_write(const char *path, const char *kind, uint32_t version, const void *payload,
                    size_t len, char *err, size_t err_cap);

/*
 * Reads path into a freshly allocated payload (*out, free() it) after checking the
 * header. Returns 0, -ENOENT (no file: start empty, nothing to say), -EBADMSG (not a
 * sipedge state file of this kind, truncated, or checksum mismatch), -EPROTONOSUPPORT
 * (a version above max_version: written by a newer sipedge), or another negative
 * errno; err gets a one-line reason for every failure but -ENOENT.
 */
int statefile_read(const char *path, const char *kind, uint32_t max_version, uint8_t **out,
                   size_t *out_len, uint32_t *version, char *err, size_t err_cap);

/*
 * Moves a refused file aside to "<path>.bad-<unix seconds>" so the next snapshot does
 * not overwrite the evidence. Writes the new name into moved (may be NULL). Returns 0 or
 * a negative errno.
 */
int statefile_move_aside(const char *path, char *moved, size_t cap);

/*
 * Journals: a file of chunks, each u32 length | first 16 bytes of SHA-256 | payload.
 * statefile_append_chunk appends one and fdatasyncs (blocking: a thread-pool job).
 * statefile_read_chunks calls cb with each verified chunk in order (cb returning < 0
 * stops) and stops at the first short or corrupt one, the tail a crash cut short, setting
 * *is_torn. They return 0 / the number of chunks passed to cb, or a negative errno.
 */
int statefile_append_chunk(const char *path, const void *payload, size_t len);
int statefile_read_chunks(const char *path, int (*cb)(void *ctx, const uint8_t *p, size_t len),
                          void *ctx, bool *is_torn);

/*
 * The usual start-up sequence: read, and on a refusal log it, move the file aside and
 * return the error so the caller starts empty. what names the state in log lines
 * ("edge flows", "bans"). Returns what statefile_read returns.
 */
int statefile_load(const char *path, const char *kind, uint32_t max_version, const char *what,
                   uint8_t **out, size_t *out_len, uint32_t *version);

#endif
