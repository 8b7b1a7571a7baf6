/*
 * ban: the ban engine. It decides durations (an escalating ladder per source), keeps an
 * in-memory mirror of every live ban (so the userspace backend can drop, and `bans` can be
 * listed), bounds the table, and hands each add/delete to a backend (nftables set element
 * with a kernel timeout, or nothing for the userspace backend).
 *
 * A ban key is an address (port 0: the whole address) or an (address, source port) pair.
 * The engine is single-threaded and takes time as now_ms (monotonic). It never evicts a
 * live ban: when the table is full a new ban is refused and counted. Expired bans stay as
 * history (escalation level) until `memory_s` passes; history entries are reclaimed first
 * when space is needed.
 */
#ifndef SIPEDGE_BAN_H
#define SIPEDGE_BAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;
struct ban_backend;

struct ban_key {
    uint8_t family; /* AF_INET or AF_INET6; 0 = unused */
    uint8_t pad;
    uint16_t port;  /* host order; 0 = the whole address */
    uint8_t addr[16]; /* IPv4 in the first 4 bytes, rest zero */
};

enum ban_origin {
    BAN_ORIGIN_STRIKES = 0, /* threshold crossed */
    BAN_ORIGIN_ADMIN,       /* operator command */
    BAN_ORIGIN_RESTORED,    /* read back from the kernel set at start */
};

/* A copy of one live ban. */
struct ban_entry {
    struct ban_key key;
    uint64_t since_ms;
    uint64_t expires_ms;
    uint32_t duration_s;
    uint8_t level;          /* ladder step used, 0-based */
    enum ban_origin origin;
};

struct ban_stats {
    uint64_t n_imposed;
    uint64_t n_escalated;    /* imposed at a ladder step above the first */
    uint64_t n_lifted;       /* removed by an operator */
    uint64_t n_expired;
    uint64_t n_refused_full; /* table full: new ban refused, oldest bans kept */
    uint64_t n_backend_errors;
    uint64_t n_restored;
    uint32_t n_active;
    uint32_t n_history;
};

struct ban;

/*
 * Creates an engine holding at most cap entries (live + history), with the given ladder
 * (n_steps >= 1 durations in seconds; copied) and history memory. be (NULL = no backend) is
 * borrowed: its owner closes it after ban_free. Returns 0, -EINVAL or -ENOMEM.
 */
int ban_new(struct ban **out, uint32_t cap, const uint32_t *ladder_s, unsigned n_steps,
            uint32_t memory_s, struct ban_backend *be);
/* Frees the engine (not its backend). Kernel bans are left in place. */
void ban_free(struct ban *b);

/* Replaces the limits (policy reload). Lowering cap below the live count keeps every live ban
 * and refuses new ones until enough expire. Returns 0, -EINVAL or -ENOMEM (nothing changed). */
int ban_set_limits(struct ban *b, uint32_t cap, const uint32_t *ladder_s, unsigned n_steps,
                   uint32_t memory_s);

/*
 * Bans key. duration_s == 0 takes the next ladder step for this key (first offence: step 0;
 * each new ban within memory_s of the previous one climbs one step, capped at the last).
 * An already live ban is replaced (the backend gets DEL+NEW in one batch when it escalates).
 * Returns 0 and fills *out (may be NULL), -ENOSPC when the table is full of live bans (the
 * new ban is refused and counted), -EINVAL for a bad key. A backend error is counted and
 * logged but the mirror still holds the ban (the userspace path keeps dropping).
 */
int ban_impose(struct ban *b, const struct ban_key *key, uint32_t duration_s,
               enum ban_origin origin, uint64_t now_ms, struct ban_entry *out);

/* Lifts a live ban (operator). Returns 0, or -ENOENT when key is not banned. The escalation
 * history is kept. */
int ban_lift(struct ban *b, const struct ban_key *key, uint64_t now_ms);

/* Re-creates a ban read back from the kernel (remaining_ms left of timeout_ms; the ladder
 * step whose duration equals the timeout becomes its level). No backend call. Returns 0,
 * -ENOSPC or -EINVAL. */
int ban_restore(struct ban *b, const struct ban_key *key, uint64_t remaining_ms,
                uint64_t timeout_ms, uint64_t now_ms);

/* True when exactly this key has a live ban. */
bool ban_is_banned(const struct ban *b, const struct ban_key *key, uint64_t now_ms);
/* Copies the live ban of key into *out; returns 0 or -ENOENT. */
int ban_find(const struct ban *b, const struct ban_key *key, uint64_t now_ms,
             struct ban_entry *out);

typedef void (*ban_expired_cb)(void *arg, const struct ban_entry *e);
typedef bool (*ban_visit_cb)(void *arg, const struct ban_entry *e); /* false stops */

/* Turns bans whose time is up into history (cb per expired ban, may be NULL) and forgets
 * history older than memory_s. The kernel expires its elements by itself. */
void ban_tick(struct ban *b, uint64_t now_ms, ban_expired_cb cb, void *arg);
/* Visits live bans, oldest first is not guaranteed. Returns the number visited. */
size_t ban_foreach(const struct ban *b, uint64_t now_ms, ban_visit_cb cb, void *arg);

/* One entry as it is kept across a restart: a live ban or a history entry, with its times
 * relative to now (now_ms is monotonic and starts over with the process). */
struct ban_record {
    struct ban_key key;
    bool is_live;
    uint8_t level;          /* ladder step, 0-based */
    enum ban_origin origin;
    uint32_t duration_s;
    uint64_t remaining_ms;  /* live: time left; history: 0 */
    uint64_t age_ms;        /* since the latest ban of key started (escalation memory) */
};

typedef bool (*ban_record_cb)(void *arg, const struct ban_record *r); /* false stops */

/* Visits every entry: live bans, then history oldest first. Returns the number visited. */
size_t ban_foreach_record(const struct ban *b, uint64_t now_ms, ban_record_cb cb, void *arg);

/*
 * Re-creates a saved entry; no backend call. When key already has a live ban (read back
 * from the kernel with ban_restore), that ban keeps its time left and takes level, origin
 * and age from a live r. Otherwise a live r (remaining_ms > 0) becomes a live ban and any
 * other r a history entry (appended, so restoring in visiting order keeps the order).
 * The level is capped at the ladder's last step. Returns 0; -ESTALE for history older than
 * memory_s (nothing kept); -ENOSPC when the table is full; -EINVAL.
 */
int ban_restore_record(struct ban *b, const struct ban_record *r, uint64_t now_ms);

const struct ban_stats *ban_stats(const struct ban *b);
/* Name of the backend ("nftables", "userspace"). */
const char *ban_backend_name(const struct ban *b);

/* Fills *out from an AF_INET/AF_INET6 socket address; with_port false gives port 0.
 * Returns 0 or -EAFNOSUPPORT. IPv4-mapped IPv6 addresses become IPv4. */
int ban_key_from_sockaddr(const struct sockaddr *sa, bool with_port, struct ban_key *out);
/* Parses "1.2.3.4", "1.2.3.4:5060", "2001:db8::1", "[2001:db8::1]:5060". 0 or -EINVAL. */
int ban_key_parse(const char *text, struct ban_key *out);
/* Writes the address only ("1.2.3.4" / "2001:db8::1") into buf; returns buf. */
const char *ban_key_format_addr(const struct ban_key *k, char *buf, size_t cap);

#define BAN_ADDR_MAX 48

#endif
