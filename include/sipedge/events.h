/*
 * events: the guard's decision log, one JSON object per line.
 *
 * Every ban, unban, expiry, refused ban and rate-limit trip is one line:
 *   {"ts":"2024-05-01T12:00:00.123Z","event":"ban","source":"198.18.0.9","port":5060,
 *    "reason":"auth_failure","strikes":10,"duration_s":600,"aor":"sip:alice@example.com"}
 * Every string is escaped: quotes, backslashes and control bytes become JSON escapes and
 * bytes that are not valid UTF-8 become U+FFFD, so attacker-controlled text (AORs,
 * User-Agents) can neither break a line nor the JSON. A line is written with one write(2)
 * on an O_APPEND descriptor, so concurrent writers never interleave inside a line.
 */
#ifndef SIPEDGE_EVENTS_H
#define SIPEDGE_EVENTS_H

#include <stddef.h>
#include <stdint.h>

struct slice;

/* Longest line written; longer string fields are cut (on a character boundary). */
#define EVENTS_LINE_MAX 2048

struct events_rec {
    uint64_t wall_ms;     /* Unix time in ms; 0 = now */
    const char *event;    /* "ban", "unban", "expire", "ban_refused", "rate_limit", ... */
    const char *source;   /* address text, may be NULL */
    unsigned port;        /* 0 = not port specific (omitted) */
    const char *reason;   /* may be NULL */
    const char *detail;   /* free text, may be NULL (user agent, ...) */
    size_t detail_len;
    const char *aor;      /* may be NULL; not NUL-terminated when aor_len is set */
    size_t aor_len;
    int64_t strikes;      /* < 0: omitted */
    int64_t duration_s;   /* < 0: omitted */
};

struct events;

/*
 * Opens the event log: path "-" is stdout, "" gives *out = NULL (events off; every
 * function accepts a NULL log). Returns 0 or -errno (file cannot be opened).
 */
int events_open(struct events **out, const char *path);
void events_close(struct events *ev);
/* Path given to events_open ("" for a NULL log). */
const char *events_path(const struct events *ev);

/* Formats one record as a JSON line ending in '\n' into buf (cap >= 64). Returns the length
 * (always < cap; fields that do not fit are cut, the line stays valid JSON). */
size_t events_format(char *buf, size_t cap, const struct events_rec *r);
/* Formats and writes one record. Returns 0 or -errno; a failed write is counted. */
int events_emit(struct events *ev, const struct events_rec *r);
uint64_t events_n_written(const struct events *ev);
uint64_t events_n_failed(const struct events *ev);

/*
 * Escapes len bytes of s as the inside of a JSON string into dst (cap bytes, NUL-terminated
 * always when cap > 0). Stops before a character that would not fit. Returns the bytes
 * written, without the NUL.
 */
size_t events_json_escape(char *dst, size_t cap, const char *s, size_t len);

#endif
