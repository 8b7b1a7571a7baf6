/*
 * audit: the registration audit log, one JSON object per line.
 *
 * One line per REGISTER outcome and one per flow opened or closed:
 *   {"ts":"2024-05-01T12:00:00.123Z","event":"register","aor":"sip:alice@example.com",
 *    "source":"198.51.100.7:5060","transport":"udp","contacts":"<sip:alice@10.0.0.2>",
 *    "expires":600,"user_agent":"Phone/1.0","status":200,"from_cache":false,
 *    "flow":"0x0000000300000001","signals":["device_change"]}
 *   {"ts":"...","event":"flow_close","flow":"0x...","transport":"ws",
 *    "source":"198.51.100.7:40000","reason":"closed"}
 * Every string goes through jsonl_escape, so attacker-controlled bytes (AOR, contacts,
 * User-Agent) can break neither the line nor the JSON. Lines are handed to a JSON-lines
 * writer (sipedge/jsonl.h) that writes them off the loop's thread, in order; lines its
 * bounded queue has no room for are dropped and counted (lines_dropped), and audit_free
 * writes every queued line before the file closes.
 *
 * Security signals ("signals" array, omitted when empty), judged on every REGISTER against
 * what earlier successful (2xx) registrations left in two bounded tables:
 *   device_change  the AOR registered from another source address (IP; ports are ignored,
 *                  NATs move them) less than device_window_s after its last success
 *   dup_contact    a contact URI of this request is bound to another AOR
 *   ua_change      the User-Agent differs from the one the AOR last registered with
 * The tables hold at most max_aors AORs and max_contacts contacts; when one is full a new
 * key is not tracked and counted (audit_stats), live entries are never evicted.
 *
 * Lines are budgeted per source address (AUDIT_SOURCE_RATE lines a second, bursts of
 * AUDIT_SOURCE_BURST, in a table of AUDIT_SOURCES_MAX addresses): one sender cannot fill
 * the disk or bury other sources' lines. Dropped lines are counted per source and, when
 * the source is next allowed, announced by one line before its next:
 *   {"ts":"...","event":"suppressed","source":"198.51.100.7","lines":57,
 *    "message":"suppressed 57 lines"}
 * Registrations are judged (signal tables) whether or not their line is written.
 *
 * No loop; time comes in as arguments. Called from one thread (the writer thread is the
 * jsonl module's own).
 */
#ifndef SIPEDGE_AUDIT_H
#define SIPEDGE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/edge.h"

#define AUDIT_LINE_MAX 4096
#define AUDIT_DEFAULT_MAX_AORS 16384
#define AUDIT_DEFAULT_MAX_CONTACTS 32768
#define AUDIT_DEFAULT_DEVICE_WINDOW_S 600
#define AUDIT_SOURCE_RATE 20 /* lines per second per source address */
#define AUDIT_SOURCE_BURST 40
#define AUDIT_SOURCES_MAX 4096 /* power of two */
#define AUDIT_SOURCE_PROBE 8   /* slots looked at per address */

/* Bit set of security signals. */
enum audit_signal {
    AUDIT_SIGNAL_DEVICE_CHANGE = 1u << 0,
    AUDIT_SIGNAL_DUP_CONTACT = 1u << 1,
    AUDIT_SIGNAL_UA_CHANGE = 1u << 2,
};

struct audit_opts {
    const char *path;          /* "-" = stdout; "" or NULL = no file (signals still tracked) */
    uint32_t max_aors;         /* 0 = AUDIT_DEFAULT_MAX_AORS */
    uint32_t max_contacts;     /* 0 = AUDIT_DEFAULT_MAX_CONTACTS */
    uint32_t device_window_s;  /* 0 = AUDIT_DEFAULT_DEVICE_WINDOW_S */
};

struct audit_stats {
    uint64_t lines_written;    /* queued for the file and not known to have failed */
    uint64_t write_failed;     /* lines a write(2) could not take */
    uint64_t lines_dropped;    /* the writer's queue was full */
    uint64_t aors_full;        /* AOR not tracked: table full */
    uint64_t contacts_full;    /* contact not tracked: table full */
    uint64_t reopened;
    uint64_t lines_suppressed;  /* over their source's budget */
    uint64_t sources_untracked; /* source table busy: line written without a budget */
    uint64_t signals[3];       /* per signal, in enum order */
};

struct audit;

/* Opens the log (O_APPEND, mode 0640), starts its writer thread and allocates the tables.
 * Returns 0, -EINVAL, -ENOMEM or -errno from open(2) or pthread_create. */
int audit_new(struct audit **out, const struct audit_opts *opts);
void audit_free(struct audit *a);

/* Closes and reopens the file at the same path (logrotate moved it away): lines queued
 * before go to the old file, later ones to the new. On failure the old descriptor stays in
 * use and -errno is returned. No-op for stdout and no file. */
int audit_reopen(struct audit *a);

/*
 * Judges and records one REGISTER outcome (tables updated on 2xx with expires > 0) and
 * formats its line into buf. wall_ms: Unix time in ms, mono_ms: monotonic time for the
 * device window. Returns the line length (< cap, line ends in '\n'), or 0 (nothing judged)
 * when cap < AUDIT_LINE_MAX; *signals (may be NULL) gets the signal bits. Long fields are
 * cut on a character boundary.
 */
size_t audit_format_register(struct audit *a, char *buf, size_t cap,
                             const struct edge_reg_event *ev, uint64_t wall_ms,
                             uint64_t mono_ms, unsigned *signals);

/* Formats a flow open/close line into buf. Returns the length, 0 when cap < 512. */
size_t audit_format_flow(char *buf, size_t cap, enum edge_flow_event kind, uint64_t flow_ref,
                         uint8_t transport, const struct sockaddr *remote, const char *reason,
                         uint64_t wall_ms);

/* audit_format_* and the line queued for the writer thread (wall clock read here). A
 * failed write or a full queue is counted, never fatal. */
void audit_register(struct audit *a, const struct edge_reg_event *ev, uint64_t mono_ms);
void audit_flow(struct audit *a, enum edge_flow_event kind, uint64_t flow_ref, uint8_t transport,
                const struct sockaddr *remote, const char *reason);

/* The per-source budget behind audit_register/audit_flow: whether a line about src may be
 * written at mono_ms. When it may, *suppressed (may be NULL) gets the number of lines
 * dropped for src since its last allowed one (0 when none). An address-less src is always
 * allowed. */
bool audit_source_allow(struct audit *a, const struct sockaddr *src, uint64_t mono_ms,
                        uint64_t *suppressed);

/* Formats the summary line for n suppressed lines of src. Returns the length, 0 when
 * cap < 512. */
size_t audit_format_suppressed(char *buf, size_t cap, const struct sockaddr *src, uint64_t n,
                               uint64_t wall_ms);

/* The counters, the writer's (lines_written, write_failed, lines_dropped) read now. */
const struct audit_stats *audit_stats(struct audit *a);
/* Waits until every line queued so far is in the file. */
void audit_flush(struct audit *a);
/* Name of one signal bit ("device_change"), NULL for an unknown bit. */
const char *audit_signal_name(unsigned bit);

#endif
