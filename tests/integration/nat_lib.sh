# shellcheck shell=bash disable=SC2034
# NAT topology for tests/integration/t_nat_*.sh and scripts/bench_nat.sh, on top of lib.sh.
#
#   client ns (NAT_CLI)      NAT ns (NAT_NAT)                         server ns (NAT_SRV)
#   198.18.1.2 ---veth--- 198.18.1.1 | 198.19.0.1 (masquerade) ---veth--- 198.19.0.2 public
#                                                                      lo: 198.19.1.1 core
#                                                                          198.19.1.2 registrar
#                                                                          198.19.1.3 caller
#                                                                          198.19.0.3 plain client
# The NAT namespace masquerades what leaves towards the server, with UDP conntrack
# timeouts of NAT_UDP_TIMEOUT (20) s, so an idle mapping closes after 20 s.
#
# A test calls nat_enter "$0" "$@" right after sourcing this file. The first run (outer)
# creates the three namespaces, runs the same script again inside the server namespace
# (NAT_INNER=1) and removes the namespaces when that run ends, whatever the outcome.
# The inner run uses lib.sh as usual (it_init, start_sipedge, start_kamailio, run_sipp:
# all of them in the server namespace); cli_* helpers run things in the client namespace.
#
# Needs root, ip (iproute2), nft and the nf_conntrack / nf_nat modules; without them the
# test is skipped (77), or fails under CI=true.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAT_UDP_TIMEOUT=${NAT_UDP_TIMEOUT:-20}
NAT_CLI_IP=198.18.1.2
NAT_IN_IP=198.18.1.1
NAT_OUT_IP=198.19.0.1
SRV_PUB=198.19.0.2
SRV_PLAIN=198.19.0.3
SRV_CORE=198.19.1.1
SRV_REG=198.19.1.2
SRV_CALLER=198.19.1.3

NAT_INNER_PID=

nat_ns_delete() {
    local ns pid n
    for ns in "$NAT_CLI" "$NAT_NAT" "$NAT_SRV"; do
        [ -n "$ns" ] || continue
        ip netns list 2>/dev/null | grep -qw "^$ns" || continue
        # Anything still running in our own namespaces was started by this test.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -TERM "$pid" 2>/dev/null
        done
        for ((n = 0; n < 30; n++)); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
            sleep 0.1
        done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
}

nat_outer_cleanup() {
    local rc=$? n
    if [ -n "$NAT_INNER_PID" ] && kill -0 "$NAT_INNER_PID" 2>/dev/null; then
        kill -TERM "$NAT_INNER_PID" 2>/dev/null
        for ((n = 0; n < 100; n++)); do
            kill -0 "$NAT_INNER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NAT_INNER_PID" 2>/dev/null
    fi
    nat_ns_delete
    exit "$rc"
}

nat_need_root() {
    local why=
    [ "$(id -u)" = 0 ] || why="needs root (network namespaces, nftables)"
    [ -z "$why" ] && ! command -v ip >/dev/null 2>&1 && why="needs ip (iproute2)"
    [ -z "$why" ] && ! command -v nft >/dev/null 2>&1 && why="needs nft (nftables)"
    if [ -n "$why" ]; then
        [ "${CI:-}" = true ] && fail "$why (CI=true: nothing is skipped)"
        skip "$why"
    fi
}

# nat_setup: the three namespaces, links, addresses, routes, masquerade and timeouts.
nat_setup() {
    local x=ip
    ip netns add "$NAT_CLI" && ip netns add "$NAT_NAT" && ip netns add "$NAT_SRV" ||
        fail "cannot create network namespaces"
    {
        $x link add c0 netns "$NAT_CLI" type veth peer name n0 netns "$NAT_NAT" &&
            $x link add n1 netns "$NAT_NAT" type veth peer name s0 netns "$NAT_SRV" &&
            $x -n "$NAT_CLI" link set lo up && $x -n "$NAT_NAT" link set lo up &&
            $x -n "$NAT_SRV" link set lo up &&
            $x -n "$NAT_CLI" addr add "$NAT_CLI_IP/24" dev c0 &&
            $x -n "$NAT_CLI" link set c0 up &&
            $x -n "$NAT_CLI" route add default via "$NAT_IN_IP" &&
            $x -n "$NAT_NAT" addr add "$NAT_IN_IP/24" dev n0 &&
            $x -n "$NAT_NAT" addr add "$NAT_OUT_IP/24" dev n1 &&
            $x -n "$NAT_NAT" link set n0 up && $x -n "$NAT_NAT" link set n1 up &&
            $x -n "$NAT_SRV" addr add "$SRV_PUB/24" dev s0 &&
            $x -n "$NAT_SRV" addr add "$SRV_PLAIN/32" dev s0 &&
            $x -n "$NAT_SRV" link set s0 up &&
            $x -n "$NAT_SRV" addr add "$SRV_CORE/24" dev lo &&
            $x -n "$NAT_SRV" addr add "$SRV_REG/32" dev lo &&
            $x -n "$NAT_SRV" addr add "$SRV_CALLER/32" dev lo
    } || fail "cannot set up the veth links"
    ip netns exec "$NAT_NAT" sysctl -qw net.ipv4.ip_forward=1 || fail "ip_forward in the NAT namespace"
    ip netns exec "$NAT_NAT" nft -f - <<EOF || fail "nft masquerade in the NAT namespace"
table ip sipedge_nat {
    chain postrouting_nat {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "n1" masquerade
    }
    chain forward_filter {
        type filter hook forward priority filter; policy drop;
        iifname "n0" oifname "n1" accept
        ct state established,related accept
    }
}
EOF
    # The conntrack sysctls exist once the nat table pulled in nf_conntrack; they are
    # per network namespace.
    ip netns exec "$NAT_NAT" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$NAT_UDP_TIMEOUT" &&
        ip netns exec "$NAT_NAT" sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream="$NAT_UDP_TIMEOUT" ||
        fail "cannot set the UDP conntrack timeouts in the NAT namespace"
}

# nat_enter SCRIPT ARGS...: outer run: namespaces, the inner run, cleanup; never returns.
# Inner run (NAT_INNER=1): returns at once.
nat_enter() {
    [ "${NAT_INNER:-0}" = 1 ] && return 0
    local script=$1
    shift
    nat_need_root
    local tag=$$
    NAT_CLI=snc$tag NAT_NAT=snn$tag NAT_SRV=sns$tag
    export NAT_CLI NAT_NAT NAT_SRV
    trap nat_outer_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    nat_setup
    NAT_INNER=1 ip netns exec "$NAT_SRV" bash "$script" "$@" &
    NAT_INNER_PID=$!
    wait "$NAT_INNER_PID"
    local rc=$?
    NAT_INNER_PID=
    exit "$rc"
}

# ---- the client namespace ---------------------------------------------------------------

# cli_py ARGS...: python3 in the client namespace.
cli_py() { ip netns exec "$NAT_CLI" python3 "$@"; }

# cli_bg_sipp TAG ARGS...: bg_sipp, in the client namespace. Sets BG_PID (timeout's PID).
# SIPP_NO_MSG=1 leaves out the message and log traces (large runs).
cli_bg_sipp() {
    local tag=$1
    shift
    need_cmd sipp
    log "sipp[$tag] (bg, client ns) $*"
    local traces=(-trace_msg -message_file "$IT_TMP/sipp-$tag-msg.log"
        -trace_logs -log_file "$IT_TMP/sipp-$tag-logs.log")
    [ "${SIPP_NO_MSG:-0}" = 1 ] && traces=()
    (cd "$IT_TMP" && exec timeout -k 5 "${SIPP_TIMEOUT:-60}" ip netns exec "$NAT_CLI" sipp -nostdin \
        -trace_err -error_file "$IT_TMP/sipp-$tag-errors.log" "${traces[@]}" \
        -trace_stat -stf "$IT_TMP/sipp-$tag.csv" -fd 1 \
        -trace_screen -screen_file "$IT_TMP/sipp-$tag-screen.log" \
        "$@") >"$IT_TMP/sipp-$tag.out" 2>&1 &
    BG_PID=$!
    IT_PIDS+=("$BG_PID")
}

# cli_run_sipp TAG ARGS...: run_sipp in the client namespace, without the message trace
# (the 1,000-client runs would write hundreds of MB); returns sipp's status.
cli_run_sipp() {
    local tag=$1
    shift
    need_cmd sipp
    log "sipp[$tag] (client ns) $*"
    (cd "$IT_TMP" && timeout -k 5 "${SIPP_TIMEOUT:-60}" ip netns exec "$NAT_CLI" sipp -nostdin \
        -trace_err -error_file "$IT_TMP/sipp-$tag-errors.log" \
        -trace_stat -stf "$IT_TMP/sipp-$tag.csv" -fd 5 \
        -trace_screen -screen_file "$IT_TMP/sipp-$tag-screen.log" \
        "$@") >"$IT_TMP/sipp-$tag.out" 2>&1
}

# child_pid PID: the first child of PID (sipp under `timeout`).
child_pid() {
    local c
    c=$(cat "/proc/$1/task/$1/children" 2>/dev/null)
    printf '%s\n' "${c%% *}"
}

# kam_signal SIG: SIG to Kamailio's main process and every process it forked (the UDP
# receivers, timers, ctl), children first, by PID. SIGSTOP/SIGCONT make an outage.
kam_signal() {
    local sig=$1 all=("$KAM_PID") i=0 c
    while [ "$i" -lt "${#all[@]}" ] && [ "$i" -lt 256 ]; do
        for c in $(cat /proc/"${all[i]}"/task/*/children 2>/dev/null); do all+=("$c"); done
        i=$((i + 1))
    done
    for ((i = ${#all[@]} - 1; i >= 0; i--)); do kill "-$sig" "${all[i]}" 2>/dev/null; done
    KAM_ALL_PIDS=("${all[@]}")
}

# ---- counters ---------------------------------------------------------------------------

# edge_stats, stat_of and edge_stat are in lib.sh.

# kam_stat NAME: one Kamailio statistic, e.g. core:rcv_requests_register.
kam_stat() {
    timeout 10 kamcmd -s "$KAM_CTL" stats.get_statistics all 2>/dev/null |
        sed -n "s/^$1 = \([0-9]*\).*$/\1/p" | head -n 1
}

# kam_bindings FILE [USER...]: the location table (ul.dump, or ul.lookup of each USER:
# kamcmd cannot take a ul.dump of 1,000 bindings) into FILE, then print "AOR EXPIRES"
# per live contact.
kam_bindings() {
    local f=$1 u
    shift
    if [ $# -eq 0 ]; then
        timeout 20 kamcmd -s "$KAM_CTL" ul.dump >"$f" 2>&1 || return 1
    else
        for u in "$@"; do echo "ul.lookup location $u@any"; done |
            timeout 30 kamcmd -s "$KAM_CTL" >"$f" 2>&1
    fi
    python3 - "$f" <<'PY'
import re, sys
aor = None
for line in open(sys.argv[1]):
    m = re.search(r'\bAoR: (\S+)', line)
    if m:
        aor = m.group(1)
        continue
    m = re.search(r'\bExpires: (\S+)', line)
    if m and aor:
        v = m.group(1)
        if v.lstrip('-').isdigit() and int(v) > 0:
            print(aor, v)
PY
}
