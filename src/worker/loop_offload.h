/*
 * loop_offload: the guard's offload hook (struct guard_offload) over a libuv loop's thread
 * pool. ctx is the uv_loop_t; work runs in uv_queue_work, done on the loop thread.
 */
#ifndef SIPEDGE_LOOP_OFFLOAD_H
#define SIPEDGE_LOOP_OFFLOAD_H

#include <stdbool.h>

/* Returns 0 when queued, -ENOMEM, or a negative errno from uv_queue_work (nothing queued,
 * done not called). */
int loop_offload_queue(void *loop, void (*work)(void *arg), void (*done)(void *arg, bool ran),
                       void *arg);

#endif
