#!/usr/bin/env bash
# Full test run, as CI does it (.ci/run):
#   1. install missing Debian test dependencies (scripts/deps-debian.sh test)
#   2. ASan+UBSan build with -Werror into build-asan/, and an optimised -Werror build
#      into build-release/ (-O2 finds warnings -O0 does not: maybe-uninitialized,
#      stringop-truncation)
#   3. ctest: unit, header checks, fuzz corpus replay, integration (real peers)
#   4. ThreadSanitizer build into build-tsan/: the unit tests under it (the writer
#      threads, the handoff queue between workers), then the integration tests that
#      exercise the workers' threads most (label workers2, TSAN_INTEGRATION)
#   5. fuzzers: scripts/fuzz.sh builds them with clang (build-fuzz/) and runs each for
#      FUZZ_SECONDS (60)
# Exits non-zero on any failure. Bounded: ctest has per-test timeouts, fuzzing is timed.
# Env: CI=true (nothing skipped), FUZZ_SECONDS, JOBS, CTEST_PARALLEL (default 2),
#      SKIP_DEPS=1 (do not call apt-get), SKIP_FUZZ=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export FUZZ_SECONDS=${FUZZ_SECONDS:-60}
jobs=${JOBS:-$(nproc)}

step() { printf '\n==== %s (%(%H:%M:%S)T)\n' "$*" -1; }

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    step "dependencies"
    scripts/deps-debian.sh test
fi

step "build (ASan+UBSan, -Werror) in build-asan"
JOBS=$jobs scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug \
    -DSIPEDGE_SANITIZE=address,undefined -DSIPEDGE_WERROR=ON -DSIPEDGE_BUILD_TESTS=ON

step "build (Release, -Werror) in build-release"
JOBS=$jobs scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_WERROR=ON \
    -DSIPEDGE_BUILD_TESTS=ON

step "ctest (all labels)"
(cd build-asan && ctest --output-on-failure --no-tests=error -j"${CTEST_PARALLEL:-2}" \
    --timeout 600)

step "build (TSan, -Werror) in build-tsan, unit tests under it"
JOBS=$jobs scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=Debug -DSIPEDGE_SANITIZE=thread \
    -DSIPEDGE_WERROR=ON -DSIPEDGE_BUILD_TESTS=ON
(cd build-tsan && TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:suppressions=$root/tests/tsan.supp} ctest -L unit \
    --output-on-failure --no-tests=error -j"${CTEST_PARALLEL:-2}" --timeout 600)

# The threads of one process (control thread, two and three workers, handoffs, isolation)
# under TSan with real peers: a ThreadSanitizer report in sipedge's log fails the test.
# Start-up under TSan takes seconds (every table sipedge allocates at start gets its shadow
# memory), more with two tests at once: readiness may take up to 30 s here.
step "integration tests with workers under TSan in build-tsan"
(cd build-tsan && SIPEDGE_READY_SECONDS=${SIPEDGE_READY_SECONDS:-30} TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:suppressions=$root/tests/tsan.supp} ctest \
    -R "^(integration\.t_workers|integration_w2\.(${TSAN_INTEGRATION:-t_register_embedded|t_ops_admin|t_reload|t_sipload|t_ws_jssip|t_guard_nft|t_edge_restart|t_core_tcp|t_stream_tls_certs|t_stream_sipp}))\$" \
    --output-on-failure --no-tests=error -j"${CTEST_PARALLEL:-2}" --timeout 900)

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    if [ -f scripts/fuzz.sh ]; then
        # fuzz.sh builds the clang/libFuzzer targets into build-fuzz/ itself and runs
        # each for FUZZ_SECONDS.
        step "fuzzers, ${FUZZ_SECONDS}s per target"
        bash scripts/fuzz.sh
    elif [ "${CI:-}" = true ]; then
        echo "scripts/fuzz.sh is missing (CI=true: not skipped)" >&2
        exit 1
    else
        echo "scripts/fuzz.sh not present: fuzzing skipped" >&2
    fi
fi

step "all tests passed"
