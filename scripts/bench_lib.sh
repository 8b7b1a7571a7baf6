# Sourced by the benchmark scripts that start servers: PIDS holds what they started, and
# the EXIT trap stops each by PID (TERM, then KILL after 3 s) and removes $WORK unless
# BENCH_KEEP=1; stop PID ends one of them early. Set WORK before sourcing.
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    PIDS=()
}
# stop PID: stop one process we started (TERM, then KILL after 5 s) and forget it.
stop() {
    local p=$1 keep=() q
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}
finish() {
    cleanup
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# bench_policy DIR [YAML]: the default policy in DIR with the guard's limits raised for a
# load test from a few addresses (the buckets are still checked), then YAML (more keys,
# in a file of its own that loads after).
bench_policy() {
    mkdir -p "$1"
    cp "$root"/policies/default/*.yaml "$1"/
    cat >"$1/zz-bench.yaml" <<'YAML'
guard:
  limits:
    per_ip: {rate: 1000000, burst: 1000000}
    per_ip_port: {rate: 1000000, burst: 1000000}
    per_aor_register: {rate: 1000, burst: 1000}
    registrar: {rate: 1000000, burst: 1000000}
    max_flows_per_ip: 4194304
YAML
    if [ $# -ge 2 ]; then printf '%s\n' "$2" >"$1/zz-bench-more.yaml"; fi
    return 0
}
