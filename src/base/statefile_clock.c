/*
 * statefile_clock: the default wall clock of state files (CLOCK_REALTIME, ms). It is its own
 * file so the layer check (tests/layers.sh) can name the one clock read left in base: the
 * registrar restores its SQLite bindings against statefile_wall_ms and its tests expect real
 * time without installing a clock. Everything else in base takes time from its caller or
 * through statefile_set_wall_clock.
 */
#include <stdint.h>
#include <time.h>

#include "sipedge/statefile.h"

uint64_t statefile_realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
