#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang into build-fuzz/ and runs
# each for FUZZ_SECONDS (default 60). Seeds come from tests/fuzz/corpus/<name>/ and are
# copied to a work corpus, so the checked-in corpus only grows by hand.
# Exits non-zero when a target fails to build or finds a crash (artifacts in
# build-fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS=300 scripts/fuzz.sh            # all targets
#   scripts/fuzz.sh fuzz_sip_msg                # selected targets
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
secs=${FUZZ_SECONDS:-60}
jobs=$(nproc 2>/dev/null || echo 2)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for src in "$root"/tests/fuzz/fuzz_*.c; do
        [ -e "$src" ] || continue
        targets+=("$(basename "$src" .c)")
    done
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: no fuzz targets found" >&2
    exit 1
fi

CC=clang cmake -S "$root" -B "$build" -DSIPEDGE_BUILD_FUZZERS=ON -DSIPEDGE_BUILD_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

status=0
for t in "${targets[@]}"; do
    short=${t#fuzz_}
    work="$build/corpus/$short"
    art="$build/artifacts/$t"
    mkdir -p "$work" "$art"
    if [ -d "$root/tests/fuzz/corpus/$short" ]; then
        cp -n "$root/tests/fuzz/corpus/$short"/* "$work"/ 2>/dev/null || true
    fi
    dict=()
    if [ -f "$root/tests/fuzz/$short.dict" ]; then
        dict=(-dict="$root/tests/fuzz/$short.dict")
    elif [[ $short == sip_* ]] && [ -f "$root/tests/fuzz/sip.dict" ]; then
        dict=(-dict="$root/tests/fuzz/sip.dict")
    fi
    echo "fuzz.sh: running $t for ${secs}s"
    if ! "$build/tests/fuzz/$t" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$art/" "${dict[@]}" "$work" >"$build/$t.log" 2>&1; then
        echo "fuzz.sh: $t FAILED, see $build/$t.log and $art/" >&2
        tail -n 40 "$build/$t.log" >&2
        status=1
    else
        grep -E "^stat::number_of_executed_units|^Done" "$build/$t.log" || true
    fi
done
exit "$status"
