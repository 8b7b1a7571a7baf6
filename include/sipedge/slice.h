/*
 * slice: a borrowed (pointer, length) view into bytes someone else owns.
 *
 * Slices never own memory. A slice into a received message is valid while the
 * message's buffer is. Helpers here are pure and never allocate.
 */
#ifndef SIPEDGE_SLICE_H
#define SIPEDGE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slice {
    const char *p;
    size_t len;
};

#define SLICE_LIT(s) ((struct slice){(s), sizeof(s) - 1})
#define SLICE_NULL ((struct slice){NULL, 0})
/* printf("%.*s", SLICE_FMT(s)) */
#define SLICE_FMT(s) (int)(s).len, (s).p

static inline struct slice slice_make(const char *p, size_t len)
{
    return (struct slice){p, len};
}

static inline bool slice_is_empty(struct slice s) { return s.len == 0; }

/* Exact byte equality. */
bool slice_eq(struct slice a, struct slice b);
/* ASCII case-insensitive equality. */
bool slice_case_eq(struct slice a, struct slice b);
/* Case-insensitive comparison against a NUL-terminated string. */
bool slice_case_eq_str(struct slice a, const char *s);
/* True when a starts with prefix (case-insensitive). */
bool slice_case_prefix(struct slice a, const char *prefix);
/* Removes leading and trailing SP, HT, CR and LF (LWS, including folded line ends). */
struct slice slice_trim(struct slice s);
/*
 * Parses an unsigned decimal number that fills the whole slice (after trimming).
 * Returns 0 and sets *out, or -EBADMSG (not a number, empty) or -ERANGE (> max).
 */
int slice_to_u32(struct slice s, uint32_t max, uint32_t *out);
/* Index of the first c in s, or -1. */
long slice_find(struct slice s, char c);
/* Copies s into dst (size cap incl. NUL), truncating; returns bytes copied. */
size_t slice_copy_cstr(char *dst, size_t cap, struct slice s);

#endif
