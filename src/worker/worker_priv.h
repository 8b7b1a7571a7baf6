/*
 * worker_priv: what control.c (the process: control thread) and worker.c (one edge worker
 * thread) share. Nothing outside src/worker includes it.
 *
 * Threads and ownership:
 *   - a worker owns its loop and everything on it (transports, edge, guard, state files);
 *     other threads reach it only through its inbox (a handoff), or while it is parked
 *     (control_isolate), when the control thread may call into its objects directly;
 *   - the control thread owns the admin surfaces, the signals, the audit log, the ban
 *     backend (nftables netlink socket) and the embedded registrar; workers reach it
 *     through their outboxes (one handoff per worker, so no two workers ever write the same
 *     ring).
 */
#ifndef SIPEDGE_WORKER_PRIV_H
#define SIPEDGE_WORKER_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "sipedge/ban.h"
#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/metrics.h"
#include "sipedge/transport.h"
#include "guard/ban_backend.h"
#include "worker/handoff.h"

#define WORKERS_MAX 64
#define SOCK_REGISTRAR 254
#define INBOX_CAP 1024   /* messages to one worker */
#define OUTBOX_CAP 4096  /* messages from one worker to the control thread */
/* An audit event crosses in one message: the strings it carries are cut to fit. */
#define AUDIT_TEXT_MAX 1800

struct control;

/* To a worker. */
enum inbox_kind {
    INBOX_PARK = 1, /* wait until the control thread releases the isolation */
    INBOX_STOP,     /* stop: final state, close everything */
    INBOX_CORE,     /* a datagram from the core for a flow this worker owns (heap copy) */
};

struct inbox_msg {
    uint8_t kind;
    uint32_t len;
    char *buf; /* INBOX_CORE: malloc'd, freed by the receiver */
    struct sockaddr_storage src;
};

/* From a worker to the control thread. */
enum outbox_kind {
    OUTBOX_BAN_ADD = 1,
    OUTBOX_BAN_DEL,
    OUTBOX_AUDIT_REGISTER,
    OUTBOX_AUDIT_FLOW,
    OUTBOX_EXITED, /* the worker's thread has released everything; the last message */
};

struct outbox_msg {
    uint8_t kind;
    /* bans */
    bool replace;
    uint32_t timeout_s;
    struct ban_key key;
    /* audit */
    uint8_t transport;
    uint8_t flow_kind; /* enum edge_flow_event */
    bool is_from_cache;
    uint16_t status;
    uint32_t expires_s;
    uint64_t flow_ref;
    uint64_t mono_ms;
    struct sockaddr_storage src;
    uint16_t aor_len, contacts_len, ua_len; /* in text, each NUL-terminated */
    char text[AUDIT_TEXT_MAX];
};

struct worker {
    unsigned index;
    struct control *ctl;
    uv_thread_t thread;
    bool has_thread;
    uv_loop_t loop;
    struct config cfg; /* the process's, with this worker's own core address */
    struct policy pol; /* the process's, with this worker's shares of process-wide budgets */
    char state_dir[CONFIG_PATH_MAX + 16];
    struct transport_udp *udp;
    struct transport_ws *ws;
    struct transport_stream *stream;
    struct edge *edge;
    struct guard *guard;
    struct ban_backend *ban_be; /* relays to the control thread's backend */
    struct metrics_reg reg_metrics;
    uv_timer_t tick;
    uint64_t last_second_ms;
    struct edge_persist *persist;
    struct tx_out tx;
    struct handoff inbox;  /* any thread → this worker */
    struct handoff outbox; /* this worker → the control thread (on the control loop) */
    int start_rc;          /* set before the start semaphore is posted */
    bool is_stopping;
    bool is_registrar_up;  /* read by the control thread only while isolated */
};

/* control.c, for worker.c */
struct control *worker_control(struct worker *w);
unsigned control_n_workers(const struct control *c);
struct worker *control_worker(struct control *c, unsigned i);
struct ban_backend *control_ban_backend(struct control *c);
bool control_has_audit(const struct control *c);
/* The process's TLS server context for TLS listeners (NULL without them). */
struct tls_server *control_tls(struct control *c);
/* Any worker thread: another worker's inbox may be written now. */
bool control_handoff_open(const struct control *c);
/* Worker thread: the worker's start finished (w->start_rc says how). */
void control_started(struct control *c);
/* Worker thread, while parked: blocks until the control thread releases. */
void control_park(struct control *c);

/* Sends m to the worker's outbox; false when it is full (counted by the handoff). */
bool worker_to_control(struct worker *w, const struct outbox_msg *m);

/* worker.c, for control.c */
/* Thread body: builds the worker on its loop, posts start, runs until INBOX_STOP. */
void worker_thread_main(void *arg);
/* Any thread: queues m for the worker, retrying while its inbox is full (the control
 * thread's messages are never dropped). */
void worker_send(struct worker *w, const struct inbox_msg *m);
/* Control thread, isolated: applies a new policy to the worker; 0 or -EINVAL. */
int worker_apply_policy(struct worker *w, const struct policy *process_pol, char *err,
                        size_t cap);
/* Control thread, isolated: the certificate context for connections accepted from now
 * on (TLS listeners) and the certificate files re-read (wss). Returns 0 or -errno. */
int worker_apply_tls(struct worker *w, struct tls_server *tls);
/* Control thread, isolated: the worker's counters, for the stats line and /metrics. */
void worker_log_stats(struct worker *w, const char *prefix);
/* The worker's share of the process policy. */
void worker_policy_share(struct policy *out, const struct policy *process_pol, unsigned n);

/* ban_relay.c: the ban backend a worker's guard writes to. */
int ban_relay_new(struct ban_backend **out, struct worker *w);
/* The worker that owns the source of k: the member of the SO_REUSEPORT group its packets
 * are steered to. */
unsigned ban_key_owner(const struct ban_key *k, unsigned n_workers);

#endif
