# shellcheck shell=bash
# Network namespace helpers for guard tests and benchmarks (source this file).
#
#   netns_prefix P          names every namespace P-<name> (default: sg<PID>)
#   netns_add NAME          creates namespace P-NAME with lo up; remembered for cleanup
#   netns_link A IPA B IPB  veth pair between A and B, IPA/IPB with /24 (198.18.0.0/15)
#   netns_exec NAME CMD...  runs CMD inside P-NAME
#   netns_cleanup           kills processes started in our namespaces and deletes them
#
# Only namespaces this shell created are touched (by exact name), never the host's
# ruleset or interfaces. Install a trap: trap netns_cleanup EXIT.

NETNS_PREFIX=${NETNS_PREFIX:-sg$$}
NETNS_LIST=()

netns_prefix() { NETNS_PREFIX=$1; }

netns_name() { printf '%s-%s' "$NETNS_PREFIX" "$1"; }

netns_add() {
    local ns
    ns=$(netns_name "$1")
    ip netns add "$ns" || return 1
    NETNS_LIST+=("$ns")
    ip -n "$ns" link set lo up
}

netns_link() {
    local a b ia ib
    a=$(netns_name "$1") b=$(netns_name "$3")
    ia="v${#NETNS_LIST[@]}a$RANDOM" ib="v${#NETNS_LIST[@]}b$RANDOM"
    ip link add "$ia" netns "$a" type veth peer name "$ib" netns "$b" || return 1
    ip -n "$a" addr add "$2/24" dev "$ia"
    ip -n "$b" addr add "$4/24" dev "$ib"
    ip -n "$a" link set "$ia" up
    ip -n "$b" link set "$ib" up
}

netns_exec() {
    local ns
    ns=$(netns_name "$1")
    shift
    ip netns exec "$ns" "$@"
}

netns_cleanup() {
    local ns pid
    for ns in "${NETNS_LIST[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$pid" 2>/dev/null
        done
    done
    sleep 0.2
    for ns in "${NETNS_LIST[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    NETNS_LIST=()
}
