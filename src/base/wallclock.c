/*
 * wallclock: the installed wall clock (see include/sipedge/wallclock.h). The pointer is
 * written once at start, before any other thread exists, and only read after that.
 */
#include "sipedge/wallclock.h"

#include <stddef.h>

static uint64_t (*installed)(void);

uint64_t wallclock_ms(void)
{
    return installed != NULL ? installed() : 0;
}

void wallclock_set(uint64_t (*fn)(void))
{
    installed = fn;
}
