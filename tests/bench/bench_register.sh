#!/usr/bin/env bash
# REGISTER throughput, registrar direct vs through sipedge (and through a Kamailio edge
# doing the same job), in one run. See scripts/bench.sh for the knobs (RATES, STEP_SECONDS,
# USERS, TARGETS).
exec "$(dirname "$0")/../../scripts/bench.sh" "$@"
