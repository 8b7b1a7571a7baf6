/*
 * strbuf: a string builder over a caller-owned fixed buffer.
 *
 * Appends (strings, bytes, printf formats, decimal numbers) go whole or not at all: a
 * piece that does not fit is not appended, the overflow flag is set and stays set, and
 * every later append is ignored. The content is therefore always a prefix of whole
 * pieces, and always NUL-terminated. No allocation, no I/O.
 */
#ifndef SIPEDGE_STRBUF_H
#define SIPEDGE_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf {
    char *p;
    size_t cap; /* bytes at p, the NUL included (>= 1) */
    size_t len; /* bytes before the NUL */
    bool is_overflow;
};

/* Starts an empty string in buf (cap >= 1 bytes). */
void strbuf_init(struct strbuf *b, char *buf, size_t cap);

void strbuf_str(struct strbuf *b, const char *s);
void strbuf_mem(struct strbuf *b, const void *data, size_t n);
void strbuf_char(struct strbuf *b, char c);
void strbuf_u64(struct strbuf *b, uint64_t v);
/* The decimal digits of v, written at the end of tmp; returns where they start. */
#define STRBUF_DIGITS_MAX 20
const char *strbuf_digits(uint64_t v, char tmp[STRBUF_DIGITS_MAX], size_t *len);
/* Returns the length the formatted piece has, appended or not (0 once overflowed), so a
 * caller with a growable buffer knows how much room to make. */
size_t strbuf_fmt(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t strbuf_vfmt(struct strbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* For a writer that fills the free tail in place: *room bytes are free there (the NUL
 * included, 0 once overflowed); write at most *room - 1, then strbuf_commit the count. */
char *strbuf_tail(struct strbuf *b, size_t *room);
void strbuf_commit(struct strbuf *b, size_t n);

/* Cuts the content back to len (a length seen earlier); the overflow flag is kept. */
void strbuf_truncate(struct strbuf *b, size_t len);

static inline size_t strbuf_len(const struct strbuf *b)
{
    return b->len;
}
static inline bool strbuf_overflowed(const struct strbuf *b)
{
    return b->is_overflow;
}
/* Bytes that can still be appended. */
static inline size_t strbuf_room(const struct strbuf *b)
{
    return b->is_overflow ? 0 : b->cap - 1 - b->len;
}

#endif
