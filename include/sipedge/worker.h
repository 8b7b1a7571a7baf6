/*
 * worker: one libuv loop that owns a transport, an edge (or none, for
 * --registrar-only) and optionally the embedded registrar on its own socket.
 *
 * worker_run blocks until SIGTERM/SIGINT, then stops in order: sockets closed, pending
 * sends flushed, counters logged. SIGUSR1 logs the counters; SIGHUP reloads the policy
 * (an invalid policy keeps the old one and logs file:line:col: reason).
 */
#ifndef SIPEDGE_WORKER_H
#define SIPEDGE_WORKER_H

#include <stdbool.h>

#include "sipedge/config.h"

struct worker_opts {
    const struct config *cfg;
    const struct policy *policy;
    bool run_edge;      /* false with --registrar-only */
    bool run_registrar; /* embedded registrar on cfg->embedded_listen */
};

/* Runs until a stop signal. Returns 0, or a negative errno when start-up failed
 * (the reason is logged). */
int worker_run(const struct worker_opts *opts);

#endif
