#!/usr/bin/env bash
# The edge's CPU per relayed REGISTER and 2xx, in process (tools/bench_relay.c), for this
# tree and for a reference commit, built the same way (Release) and run in turn, so the
# figures are compared within one invocation on the same machine.
#
#   scripts/bench_relay.sh [REF]      # REF: a commit (default: HEAD~1)
#
# Env: RUNS (3) alternating runs of each, FLOWS (1000), ROUNDS (200), CPU (0;
# both binaries are pinned to it with taskset).
# The reference tree is a temporary git worktree, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ref=${1:-HEAD~1}
RUNS=${RUNS:-3}
FLOWS=${FLOWS:-1000}
ROUNDS=${ROUNDS:-200}
CPU=${CPU:-0} # both pinned to this CPU
work=$(mktemp -d /tmp/sipedge-bench-relay.XXXXXX)
cleanup() {
    git -C "$root" worktree remove --force "$work/ref" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

JOBS=${JOBS:-2} scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_BUILD_TESTS=OFF \
    >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
cmake --build build --target bench_relay >/dev/null

git worktree add --detach "$work/ref" "$ref" >/dev/null 2>&1
cmake -S "$work/ref" -B "$work/ref/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSIPEDGE_BUILD_TESTS=OFF >"$work/ref-build.log" 2>&1
cmake --build "$work/ref/build" --target sipedge_core -j"${JOBS:-2}" >>"$work/ref-build.log" 2>&1 ||
    { tail -20 "$work/ref-build.log" >&2; exit 1; }
libs="libuv yaml-0.1 libwebsockets sqlite3 openssl"
for opt in libnftnl libmnl libnftables; do
    pkg-config --exists "$opt" && libs="$libs $opt"
done
# shellcheck disable=SC2046 # pkg-config prints several words
cc -O2 -I"$work/ref/include" -o "$work/bench_relay_ref" tools/bench_relay.c \
    "$work/ref/build/libsipedge_core.a" $(pkg-config --libs $libs) -lpthread

echo "bench_relay: $FLOWS flows, best of $ROUNDS rounds; this tree vs $ref ($(git rev-parse --short "$ref"))"
for ((i = 1; i <= RUNS; i++)); do
    printf 'run %d  reference: %s\n' "$i" "$(taskset -c "$CPU" "$work/bench_relay_ref" "$FLOWS" "$ROUNDS")"
    printf 'run %d  this tree: %s\n' "$i" "$(taskset -c "$CPU" build/tools/bench_relay "$FLOWS" "$ROUNDS")"
done
