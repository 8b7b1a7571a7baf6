#!/usr/bin/env bash
# Configure and build sipedge.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/. JOBS (default: nproc) sets the parallelism.
# Uses Ninja when it is installed, otherwise the default generator.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
[ $# -gt 0 ] && shift
gen=()
if [ ! -f "$build_dir/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
    gen=(-G Ninja)
fi
cmake -S . -B "$build_dir" "${gen[@]}" "$@"
cmake --build "$build_dir" -j"${JOBS:-$(nproc)}"
