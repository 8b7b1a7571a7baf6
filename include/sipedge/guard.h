/*
 * guard: admission control for the public side. Per-source token buckets (address and
 * address:port), per-AOR REGISTER buckets and a global registrar budget; strikes in a
 * sliding window per source; bans with an escalating ladder through the ban engine (kernel
 * drops with the nftables backend, userspace drops with the mirror); an event line per
 * decision.
 *
 * The edge calls, in this order for a request:
 *   guard_admit            every datagram / WS message, before parsing
 *   guard_check_request    after parsing (scanner User-Agent, served domain)
 *   guard_admit_register   REGISTERs about to be relayed (per-AOR, registrar budget)
 *   guard_on_response      registrar responses relayed back (401/403/404 strikes, 2xx auth)
 *   guard_strike_malformed when a message fails to parse
 * and guard_tick about once a second.
 *
 * Single-threaded: the guard belongs to the loop thread that calls it. Everything takes
 * now_ms (monotonic, the worker's loop time) and nothing here blocks except guard_new and
 * guard_set_policy (nftables setup). Every table is bounded: when the source table is full a
 * new source shares one overflow bucket (per-IP limits) and gets no strikes; both are
 * counted. Allowlisted sources are rate limited like others but never get strikes or bans.
 *
 * Strikes of an (address, port) without proof of return routability (guard_note_proven, or
 * a 2xx after credentials) may come from a forged source address: they ban only that
 * (address, port), for unproven_duration and without climbing the ladder, and never count
 * towards the address. The core side's addresses (registrar, its backups, core peers, the
 * embedded registrar, our core address) are never banned, like allowlisted ones.
 */
#ifndef SIPEDGE_GUARD_H
#define SIPEDGE_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/ban.h"
#include "sipedge/slice.h"

struct sockaddr;
struct config;
struct policy;
struct ban_backend;

enum guard_action {
    GUARD_PASS = 0, /* go on */
    GUARD_REJECT,   /* answer with verdict.status (and Retry-After when retry_after_s > 0) */
    GUARD_DROP,     /* silently discard */
};

enum guard_reason {
    GUARD_REASON_NONE = 0,
    GUARD_REASON_BANNED,
    GUARD_REASON_RATE_IP,
    GUARD_REASON_RATE_IP_PORT,
    GUARD_REASON_RATE_OVERFLOW,  /* source table full, shared overflow bucket empty */
    GUARD_REASON_RATE_AOR,
    GUARD_REASON_RATE_REGISTRAR,
    GUARD_REASON_SCANNER,
    GUARD_REASON_UNKNOWN_DOMAIN,
    GUARD_REASON_MALFORMED,
    GUARD_REASON_AUTH_FAILURE,
    GUARD_REASON_FORBIDDEN,
    GUARD_REASON_NOT_FOUND,
    GUARD_REASON_USER_SCAN,
    GUARD_REASON_OVER_LIMIT,
    GUARD_REASON_ADMIN,
};

struct guard_verdict {
    enum guard_action action;
    uint16_t status;        /* REJECT: 403 or 503; 0 otherwise */
    uint32_t retry_after_s; /* 503: Retry-After value (random in the policy range); else 0 */
    enum guard_reason reason;
};

enum guard_backend_kind {
    GUARD_BACKEND_USERSPACE = 0,
    GUARD_BACKEND_NFTABLES,
};

/*
 * Work the guard hands off its thread (the bans.state write). queue runs work(arg) on
 * another thread and then done(arg, ran) back on the guard's thread; ran is false when the
 * job was cancelled before it ran. It returns 0 when queued, anything else when it cannot
 * queue (the guard then does the work itself, synchronously). queue NULL: always
 * synchronous. The worker provides one over its loop's thread pool.
 */
struct guard_offload {
    int (*queue)(void *ctx, void (*work)(void *arg), void (*done)(void *arg, bool ran),
                 void *arg);
    void *ctx;
};

struct guard_opts {
    const struct config *cfg;     /* borrowed for the guard's lifetime: domains, listen ports */
    const struct policy *policy;  /* copied */
    struct ban_backend *backend;  /* borrowed, outlives the guard; NULL = userspace drops */
    struct guard_offload offload; /* bans.state writes; {0} = on the calling thread */
    uint64_t (*mono_us)(void);    /* monotonic µs to time bans.state builds; NULL: untimed */
    uint64_t seed;                /* hash and Retry-After randomness; 0 = from getrandom */
};

#define GUARD_STATS(X)                                                                             \
    X(admitted)                                                                                    \
    X(drop_banned)                                                                                 \
    X(over_limit_ip)                                                                               \
    X(over_limit_ip_port)                                                                          \
    X(over_limit_overflow)                                                                         \
    X(over_limit_aor)                                                                              \
    X(over_limit_registrar)                                                                        \
    X(rate_trips)                                                                                  \
    X(sources_full)                                                                                \
    X(aors_full)                                                                                   \
    X(strikes)                                                                                     \
    X(strikes_untracked)                                                                           \
    X(strikes_allowlisted)        /* allowlisted or core-side source: not counted */        \
    X(strikes_unproven)           /* counted on (address, port) only: no proof of return */  \
    X(scanner)                                                                                     \
    X(unknown_domain)                                                                              \
    X(auth_failures)                                                                               \
    X(user_scans)                                                                                  \
    X(bans)                                                                                        \
    X(bans_refused_full)                                                                           \
    X(bans_allowlisted_skipped)                                                                    \
    X(bans_unproven)              /* (address, port) bans of unproven_duration */             \
    X(unbans)                                                                                      \
    X(expired)                                                                                     \
    X(registrar_known_served)                                                                      \
    X(registrar_prepaid_served)   /* challenge answers paid by their first REGISTER */        \
    X(flows_per_ip_full)          /* guard_flow_add refused: address holds max_flows */     \
    X(flows_untracked)            /* guard_flow_add admitted uncounted: source table full */  \
    X(event_lines_dropped)        /* event log lines its writer had no room for */

struct guard_stats {
#define GUARD_STATS_FIELD(name) uint64_t name;
    GUARD_STATS(GUARD_STATS_FIELD)
#undef GUARD_STATS_FIELD
};

struct guard;

/*
 * Builds a guard. With a backend that sets up rules (nftables) it runs that setup (table
 * inet sipedge, sets, chain, rules; idempotent, existing elements kept) and reads the live
 * elements back into the mirror. If that fails (lack of privilege, no netlink support), it
 * logs once and falls back to userspace drops without the backend (guard_backend_name tells
 * which one runs). Opens the event log.
 * Returns 0, -EINVAL (bad opts), -ENOMEM, or -errno when the event log cannot be opened.
 */
int guard_new(struct guard **out, const struct guard_opts *opts, uint64_t now_ms);
/* Frees the guard; the backend is the caller's to close afterwards. Kernel bans stay. A
 * bans.state write still queued finishes first and frees its state in its done callback. */
void guard_free(struct guard *g);

/*
 * Applies a new policy (SIGHUP; the caller validated it with policy_load_dir). Buckets keep
 * their state and use the new rates at the next message; table bounds, ladder, allowlist,
 * scanners, event log and nftables drop scope are replaced. Returns 0, or -errno with the
 * old policy still fully in force (event log cannot be opened, nftables setup failed).
 */
int guard_set_policy(struct guard *g, const struct policy *pol, uint64_t now_ms);

/* Every received datagram / WS message from the public side, before parsing. DROP for a
 * banned source; REJECT 503 / DROP (policy) when the per-address or per-(address, port)
 * bucket is empty. A source over its limit gets at most one "over_limit" strike and one
 * rate_limit event per second. */
struct guard_verdict guard_admit(struct guard *g, const struct sockaddr *src, uint64_t now_ms);

/*
 * A parsed request. user_agent, to_user, to_domain may be empty slices; has_credentials is
 * true when the request carries Authorization/Proxy-Authorization. A scanner User-Agent
 * (policy substrings, case-insensitive) gives a scanner strike and DROP; a To domain not in
 * cfg->domains (when the list is not empty) gives an unknown_domain strike and REJECT 403.
 */
struct guard_verdict guard_check_request(struct guard *g, const struct sockaddr *src,
                                         struct slice method, struct slice user_agent,
                                         struct slice to_user, struct slice to_domain,
                                         bool has_credentials, uint64_t now_ms);

/*
 * A REGISTER about to be relayed for aor (To URI, e.g. "sip:alice@example.com").
 * is_known_authenticated_flow: the flow recently had a 2xx to a REGISTER with credentials.
 * cost: the registrar budget it takes, in REGISTERs. The edge passes 2 for a REGISTER
 * without credentials (it pays for the answer to its challenge as well), 1 for one with
 * credentials, and 0 for that prepaid answer, which passes the per-AOR bucket only. So a
 * surge completes the registrations it admits instead of spending the budget on
 * challenges whose answers are then refused.
 * Per-AOR bucket, then the registrar budget, of which reserved_percent is a separate bucket
 * only known flows may use (they take from it first). REJECT 503 with Retry-After when over.
 */
struct guard_verdict guard_admit_register(struct guard *g, const struct sockaddr *src,
                                          struct slice aor, bool is_known_authenticated_flow,
                                          unsigned cost, uint64_t now_ms);

/*
 * A registrar response for a request from flow_src. 401/407 when the request had
 * credentials: auth_failure strike. 403: forbidden strike. 404: not_found strike, and when
 * one address has 404s for unknown_users distinct AORs within the window: user_scan strike.
 * 2xx when the request had credentials: (address, port) counts as authenticated for
 * auth_memory_s, so strikes on another port of that address ban only that port unless the
 * whole address crosses ip_threshold. Other statuses are ignored.
 */
void guard_on_response(struct guard *g, const struct sockaddr *flow_src, unsigned status,
                       bool request_had_credentials, struct slice aor, uint64_t now_ms);

/* A message from src that failed to parse: malformed strike. */
void guard_strike_malformed(struct guard *g, const struct sockaddr *src, uint64_t now_ms);

/* True when (address, port) of src had a 2xx after credentials within auth_memory_s. */
bool guard_is_authenticated(struct guard *g, const struct sockaddr *src, uint64_t now_ms);

/*
 * Proof of return routability: (address, port) of src has shown that it receives what is
 * sent to it (a WebSocket connection completed its handshake; a UDP request carried the
 * nonce of a challenge relayed to that address). Lasts auth_memory_s. Strikes from a
 * source without that proof may be spoofed: they ban only that (address, port), for
 * unproven_duration, and never count towards an address ban.
 */
void guard_note_proven(struct guard *g, const struct sockaddr *src, uint64_t now_ms);

/*
 * A UDP flow for src is about to be created. Returns 0, or -ENOSPC when the address (an
 * IPv6 source: its ipv6_prefix) already holds max_flows_per_ip flows (counted as
 * flows_per_ip_full; the caller answers 503). Every 0 is paired with one guard_flow_remove
 * when the flow is released. Allowlisted sources are capped too. An address holding flows is
 * never forgotten by guard_tick; when the source table is full the flow is admitted
 * uncounted (flows_untracked). A remove never takes a count below zero.
 */
int guard_flow_add(struct guard *g, const struct sockaddr *src, uint64_t now_ms);
void guard_flow_remove(struct guard *g, const struct sockaddr *src);

/* Housekeeping, about once a second: ban expiry (expire events), idle sources forgotten. */
void guard_tick(struct guard *g, uint64_t now_ms);

/*
 * Operator ban of key (port 0 = whole address; an IPv6 address: its ipv6_prefix, the key
 * reported in *out); duration_s 0 = next ladder step.
 * Returns 0 and fills *out (may be NULL), -EPERM for an allowlisted or core-side address
 * (registrar, registrar backups, core peers, embedded registrar, core), -ENOSPC when the
 * ban table is full, -EINVAL.
 */
int guard_ban(struct guard *g, const struct ban_key *key, uint32_t duration_s, uint64_t now_ms,
              struct ban_entry *out);
/* Operator unban of key (port 0 = the address ban; IPv6: of its prefix). Returns 0, -ENOENT
 * or -EINVAL. */
int guard_unban(struct guard *g, const struct ban_key *key, uint64_t now_ms);

/*
 * Ban persistence in "<state_dir>/bans.state" (statefile kind "bans", version 1): live bans
 * with their time left, ladder step and origin, and the history entries that remember the
 * escalation level. Times are stored against the wall clock (CLOCK_REALTIME) of the save,
 * so the time spent down is taken off at the next start: a ban that ran out meanwhile
 * comes back as history. With the nftables backend the kernel set decides which bans are
 * live (and their time left); the file adds origin, step and history.
 *
 * guard_state_open loads the file (call it once, after guard_new) and remembers the path.
 * A missing file starts empty; a corrupt, foreign or newer one is logged, moved aside and
 * ignored. Returns 0, or -ENAMETOOLONG / -ENOMEM (no persistence then).
 * guard_tick then saves about every 5 s when the bans changed: the payload is built on the
 * guard's thread and written through guard_opts.offload (synchronously without one); a
 * save while a write is in flight is skipped.
 * guard_state_save(sync = true) writes now, on the calling thread (at stop).
 */
int guard_state_open(struct guard *g, const char *state_dir, uint64_t now_ms);
/* The same, restoring only the records whose key keep accepts (a worker's share of the
 * process's sources); the file written later holds this guard's bans only. */
struct ban_key;
int guard_state_open_shared(struct guard *g, const char *state_dir,
                            bool (*keep)(void *arg, const struct ban_key *k), void *arg,
                            uint64_t now_ms);
/* After guard_state_open_shared: also restores the records keep accepts from the file of
 * another state directory (the other workers' files, after a change in their number).
 * Returns 0, -ENOENT (no such file) or -EINVAL. */
int guard_state_import(struct guard *g, const char *state_dir,
                       bool (*keep)(void *arg, const struct ban_key *k), void *arg,
                       uint64_t now_ms);
void guard_state_save(struct guard *g, uint64_t now_ms, bool sync);

const struct ban *guard_bans(const struct guard *g);
/* The latest now_ms the guard was given (by any call, guard_tick included). */
uint64_t guard_now_ms(const struct guard *g);
const struct guard_stats *guard_stats(const struct guard *g);
/* to += from, counter by counter (the guards of several workers). */
void guard_stats_add(struct guard_stats *to, const struct guard_stats *from);
/* "nftables" or "userspace": the backend actually running. */
const char *guard_backend_name(const struct guard *g);
/* Lower-case name of a reason ("auth_failure"). */
const char *guard_reason_name(enum guard_reason r);

#endif
