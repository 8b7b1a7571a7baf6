/*
 * jsonl: JSON-lines output shared by the logs that write one JSON object per line (the
 * guard's event log, the registration audit log).
 *
 * jsonl_escape makes attacker-controlled text safe inside a JSON string: quotes,
 * backslashes and control bytes become JSON escapes and bytes that are not valid UTF-8
 * become U+FFFD, so such text can neither break a line nor the JSON.
 *
 * A writer (struct jsonl) takes whole lines on the caller's thread and writes them on its
 * own thread, so a slow disk never stalls the event loop: jsonl_put copies the line into
 * a bounded queue and returns; the writer thread takes everything queued at once and
 * writes it with one write(2) on an O_APPEND descriptor, so lines are never split or
 * interleaved and keep the order they were put in. A line the queue has no room for is
 * dropped and counted (jsonl_stats.dropped), never waited for. jsonl_close writes every
 * queued line before the file closes.
 */
#ifndef SIPEDGE_JSONL_H
#define SIPEDGE_JSONL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Escapes len bytes of s as the inside of a JSON string into dst (cap bytes, NUL-terminated
 * always when cap > 0). Stops before a character that would not fit. Returns the bytes
 * written, without the NUL.
 */
size_t jsonl_escape(char *dst, size_t cap, const char *s, size_t len);

/* Bytes a writer's queue holds (when jsonl_open is given 0). */
#define JSONL_QUEUE_DEFAULT (1024u * 1024u)

struct jsonl_stats {
    uint64_t queued;  /* lines accepted by jsonl_put */
    uint64_t written; /* lines a write(2) took */
    uint64_t failed;  /* lines a write(2) could not take */
    uint64_t dropped; /* lines refused: the queue was full (or the line longer than it) */
};

struct jsonl;

/*
 * Opens path for appending (O_APPEND | O_CREAT, mode 0640; "-" is stdout, left open at
 * close) and starts the writer thread. queue_bytes bounds the lines waiting to be written
 * (0: JSONL_QUEUE_DEFAULT). Returns 0, -EINVAL, -ENAMETOOLONG, -ENOMEM, or -errno from
 * open(2) or pthread_create.
 */
int jsonl_open(struct jsonl **out, const char *path, size_t queue_bytes);
/* Writes every queued line, stops the thread, closes the file. NULL is accepted. */
void jsonl_close(struct jsonl *w);
/* The path given to jsonl_open. */
const char *jsonl_path(const struct jsonl *w);

/*
 * Reopens the file at the same path (logrotate moved it away): the new file is created
 * here, and lines put before the call still go to the old one. On failure the old file
 * stays in use and -errno is returned. No-op for stdout.
 */
int jsonl_reopen(struct jsonl *w);

/* Queues one line (len bytes, ending in '\n'). Returns 0, or -ENOBUFS when the
 * queue has no room (the line is dropped and counted). */
int jsonl_put(struct jsonl *w, const char *line, size_t len);

/* Waits until every line queued before the call has been written (or has failed). */
void jsonl_flush(struct jsonl *w);
/* jsonl_flush of every open writer: for a reader that looks at a log right after the
 * action that logs (tests), or a process about to stop without closing its logs. */
void jsonl_flush_all(void);

void jsonl_stats(const struct jsonl *w, struct jsonl_stats *out);

#endif
