/*
 * wallclock: the wall clock (Unix time in ms) of the layers below the worker.
 *
 * Nothing below the worker reads a clock itself (tests/layers.sh checks it): monotonic time
 * comes in as now_ms, and the wall clock (what state files, log lines and event records
 * are stamped with) is the function the process installs once at start. Until one is
 * installed wallclock_ms returns 0, so a unit test runs on the time it installs or on none.
 */
#ifndef SIPEDGE_WALLCLOCK_H
#define SIPEDGE_WALLCLOCK_H

#include <stdint.h>

/* Unix time in ms from the installed clock; 0 when none is installed. */
uint64_t wallclock_ms(void);

/* Installs fn (NULL: none). Call before any other thread runs. */
void wallclock_set(uint64_t (*fn)(void));

#endif
