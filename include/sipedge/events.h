/*
 * events: the guard's decision log, one JSON object per line.
 *
 * Every ban, unban, expiry, refused ban and rate-limit trip is one line:
 *   {"ts":"2024-05-01T12:00:00.123Z","event":"ban","source":"198.18.0.9","port":5060,
 *    "reason":"auth_failure","strikes":10,"duration_s":600,"aor":"sip:alice@example.com"}
 * Every string is escaped: quotes, backslashes and control bytes become JSON escapes and
 * bytes that are not valid UTF-8 become U+FFFD, so attacker-controlled text (AORs,
 * User-Agents) can neither break a line nor the JSON (jsonl_escape). Lines go through a
 * JSON-lines writer (sipedge/jsonl.h): queued on the caller's thread, written whole by the
 * writer's thread on an O_APPEND descriptor, so concurrent writers never interleave inside
 * a line and a slow disk never blocks the loop. Lines the bounded queue has no room for
 * are dropped and counted (events_n_dropped); events_close writes every queued line.
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
/* Formats one record and queues its line. Returns 0, or -ENOBUFS when the queue is full
 * (the line is dropped and counted). */
int events_emit(struct events *ev, const struct events_rec *r);
/* Lines queued and not known to have failed (written, or about to be). */
uint64_t events_n_written(const struct events *ev);
/* Lines a write(2) could not take. */
uint64_t events_n_failed(const struct events *ev);
/* Lines dropped because the queue was full. */
uint64_t events_n_dropped(const struct events *ev);
/* Waits until every line emitted so far is in the file. */
void events_flush(struct events *ev);

/* jsonl_escape under its older name (JSON string escaping, see sipedge/jsonl.h). */
size_t events_json_escape(char *dst, size_t cap, const char *s, size_t len);

#endif
