/*
 * registrar: the embedded SIP registrar and location-based stateless proxy.
 *
 * It is a separate SIP element on its own core-side address; the edge talks to it
 * over UDP exactly as it would to Kamailio. It implements RFC 3261 §10.3 (several
 * contacts per AOR, expires, q, Call-ID/CSeq ordering, '*', 423), RFC 3327 (stores
 * the Path of a REGISTER and returns it in the 200 OK), digest authentication
 * (RFC 7616, MD5 and SHA-256, qop=auth, nonce expiry) against a users file, and
 * routes INVITE/MESSAGE/OPTIONS for a registered AOR to its contacts through the
 * stored Path (stateless, RFC 3261 §16.11). A 430 Flow Failed coming back for a
 * binding removes that binding (RFC 5626 §5.3) when it carries the MAC the registrar
 * put in its Via.
 *
 * Trust: requests are sent only to registered bindings and to opts->peers, never to an
 * address a Route or Request-URI merely names; a request from a local user (From in the
 * users file) other than ACK/CANCEL needs that user's Proxy-Authorization (407); a Path
 * is stored only from opts->trusted.
 *
 * The module is pure logic: it receives datagrams through registrar_handle and emits
 * them through the send callback; time comes in as now_ms. Single-threaded.
 */
#ifndef SIPEDGE_REGISTRAR_H
#define SIPEDGE_REGISTRAR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/config.h"
#include "sipedge/transport.h"

struct registrar;

struct registrar_opts {
    const struct config_addr *self;      /* our own address, for Via */
    const char *users_file;              /* "user:password" lines, '#' comments; NULL: no auth */
    const char *realm;
    const struct policy *policy;         /* expires bounds, table bounds, nonce ttl */
    const struct config_addr *trusted;   /* peers whose P-Asserted-Identity de-REGISTER is
                                            accepted without a challenge (the edge) */
    unsigned n_trusted;
    const struct config_addr *peers;     /* the only addresses a Route or Request-URI may
                                            send a request to, besides registered
                                            bindings (e.g. a core proxy); may be empty */
    unsigned n_peers;
    uint32_t nonce_count_slots;          /* entries of the digest replay table; 0: 2^18 */
    const uint8_t *branch_key;           /* REGISTRAR_BRANCH_KEY_LEN bytes keying the MAC on
                                            the binding id in our Via (sb=); NULL: random */
    const char *db_path;                 /* SQLite file the bindings persist in (created
                                            when missing); NULL: in memory only */
    struct tx_out out;                   /* where its datagrams go, each written once
                                            into the memory the transport lends */
    uint8_t sock;                        /* the UDP socket id in tx_dest */
};

#define REGISTRAR_BRANCH_KEY_LEN 32

/* Builds a registrar. Returns 0, -ENOMEM, or -EINVAL with err "file:line: reason"
 * for a bad users file. With db_path the stored bindings are loaded (those already
 * expired are dropped from the file); a file that cannot be opened or holds another
 * schema gives -EIO or -EPROTO with err naming the path and the reason. */
int registrar_new(struct registrar **out, const struct registrar_opts *opts, char *err,
                  size_t errcap);
void registrar_free(struct registrar *r);

/* Handles one received datagram from src. Never fails; bad input is counted. */
void registrar_handle(struct registrar *r, const char *buf, size_t len,
                      const struct sockaddr *src, socklen_t src_len, uint64_t now_ms);

/* Drops expired bindings (nonces need no state: they carry their own time); call about
 * once a second. */
void registrar_tick(struct registrar *r, uint64_t now_ms);

/*
 * Writes the bindings added, refreshed or removed since the last flush to db_path in one
 * transaction. Changes are only queued in memory on the packet path; call this from a
 * timer (the worker does every 250 ms, which bounds what a crash loses) and at stop.
 * Returns 0, or a negative errno with the changes kept for the next call; 0 without a
 * db_path.
 */
int registrar_flush(struct registrar *r);

/* Applies the runtime-changeable policy keys (expires bounds, nonce ttl, digest
 * algorithms, message size). Table sizes (max_bindings, max_contacts_per_aor,
 * max_headers) keep the values registrar_new got: the tables are preallocated. */
void registrar_set_policy(struct registrar *r, const struct policy *pol);

/* Number of live bindings (for tests and stats). */
size_t registrar_n_bindings(const struct registrar *r);

/* Counters since registrar_new; every drop and reject has one. */
struct registrar_stats {
    uint64_t registers_ok;       /* 200 to REGISTER (including queries) */
    uint64_t challenges;         /* 401/407 sent: no credentials, bad or stale nonce */
    uint64_t auth_fail;          /* 401/407 sent for a wrong response (wrong password) */
    uint64_t forbidden;          /* 403: unknown user, or user is not the AOR's (REGISTER)
                                    or the From's (other requests) */
    uint64_t proxy_challenges;   /* 407 sent: a request from a local user (From) without
                                    valid Proxy-Authorization (RFC 3261 §22.3) */
    uint64_t trusted_dereg;      /* de-REGISTERs accepted on P-Asserted-Identity */
    uint64_t rejected;           /* other 4xx/5xx to REGISTER (400, 420, 423, 500) */
    uint64_t table_full;         /* 503: location table or per-AOR bound reached */
    uint64_t not_found;          /* 404 unknown AOR */
    uint64_t unavailable;        /* 480 AOR without a live binding */
    uint64_t too_many_hops;      /* 483 */
    uint64_t routed;             /* requests forwarded */
    uint64_t options_local;      /* OPTIONS answered 200 by the registrar itself */
    uint64_t acks_absorbed;      /* ACKs with nowhere to go (for our own final responses) */
    uint64_t responses_fwd;      /* responses forwarded */
    uint64_t responses_dropped;  /* not our Via, 100 Trying, no next hop */
    uint64_t flow_failed;        /* bindings removed on 430 (RFC 5626 §5.3) */
    uint64_t path_ignored;       /* REGISTERs whose Path was dropped: not from a trusted
                                    peer (RFC 3327 §5.3 trusts only the proxies it knows) */
    uint64_t route_refused;      /* 403: Route or Request-URI naming neither us, a
                                    configured peer nor a registered AOR (no open relay) */
    uint64_t forged_430;         /* 430s naming a binding without a valid sb MAC, or not
                                    from the binding's next hop: nothing removed */
    uint64_t dropped_bad;        /* unparsable input (answered 400 when possible) */
    uint64_t send_errors;        /* replies or forwards that could not be built */
    uint64_t expired;            /* bindings removed by registrar_tick */
    uint64_t digest_uri_mismatch; /* challenged again: digest uri is not the Request-URI */
    uint64_t digest_alg_refused;  /* challenged again: an algorithm the policy did not offer */
    uint64_t replays;            /* valid credentials with a used nonce count (RFC 7616 §5.5) */
    uint64_t nc_table_full;      /* 503 sent: no room in the nonce-count table to check the
                                    credentials for a replay (fail closed) */
};

/* Copies the counters into *out. */
void registrar_stats(const struct registrar *r, struct registrar_stats *out);

#endif
